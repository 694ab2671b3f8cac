//! `templates`: each team's named environments, kept as their JSON document with a
//! version that moves only when the content does.

use super::{Store, StoreError};

/// A template as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TemplateRow {
    pub team_id: String,
    pub name: String,
    /// 1 for a new template; one more for each change of content.
    pub version: i64,
    /// SHA-256 (hex) of the canonical JSON document.
    pub content_hash: String,
    /// The document, as JSON.
    pub spec: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "team_id, name, version, content_hash, spec, created_at, updated_at";

/// What a save did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSave {
    /// No template had the name: this is version 1.
    Created(TemplateRow),
    /// The content changed: a new version.
    Updated(TemplateRow),
    /// The same content was saved already: nothing changed.
    Unchanged(TemplateRow),
}

impl Store {
    /// Saves `team`'s template `name` with `spec` (whose hash is `content_hash`) in one
    /// statement: a new row, or a new version when the content differs, or nothing.
    pub async fn save_template(
        &self,
        team: &str,
        name: &str,
        content_hash: &str,
        spec: &str,
        now: i64,
    ) -> Result<TemplateSave, StoreError> {
        let changed = with_write_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO templates (team_id, name, version, content_hash, spec, created_at, \
                 updated_at) VALUES ($1, $2, 1, $3, $4, $5, $5) \
                 ON CONFLICT (team_id, name) DO UPDATE SET version = templates.version + 1, \
                 content_hash = excluded.content_hash, spec = excluded.spec, \
                 updated_at = excluded.updated_at \
                 WHERE templates.content_hash <> excluded.content_hash",
            )
            .bind(team)
            .bind(name)
            .bind(content_hash)
            .bind(spec)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        let row = self
            .get_template(team, name)
            .await?
            // deleted between the two statements: as good as not found
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
        Ok(match changed {
            0 => TemplateSave::Unchanged(row),
            _ if row.version == 1 => TemplateSave::Created(row),
            _ => TemplateSave::Updated(row),
        })
    }

    pub async fn get_template(
        &self,
        team: &str,
        name: &str,
    ) -> Result<Option<TemplateRow>, StoreError> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM templates WHERE team_id = $1 AND name = $2"
            ))
            .bind(team)
            .bind(name)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// `team`'s templates by name.
    pub async fn list_templates(&self, team: &str) -> Result<Vec<TemplateRow>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM templates WHERE team_id = $1 ORDER BY name"
            ))
            .bind(team)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Deletes `team`'s template `name`; false when there was none.
    pub async fn delete_template(&self, team: &str, name: &str) -> Result<bool, StoreError> {
        let deleted = with_write_pool!(self, |pool| {
            sqlx::query("DELETE FROM templates WHERE team_id = $1 AND name = $2")
                .bind(team)
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted == 1)
    }
}
