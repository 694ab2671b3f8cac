//! `berth keys create|list|revoke`: the public API's keys (admin scope: a cluster admin,
//! or a team's admin within its team), each bound to a team and a user or to none.

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{ApiClient, ClientArgs};
use crate::confirm::confirm;
use crate::output::{self, ListArgs, Table, TableStyle};
use crate::{ids, out, outln, watch};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once, alone on stdout (`KEY=$(berth keys create …)`).
    Create {
        /// What it may do: read, write, exec, admin (comma list or repeated).
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// How long it is valid, e.g. 30d, 720h (default: it never expires).
        #[arg(long)]
        expires: Option<String>,
        /// A name to recognise it by (default: its id).
        #[arg(long)]
        name: Option<String>,
        /// The team it acts for (default: none, a cluster key; a team admin must name
        /// its own team).
        #[arg(long)]
        team: Option<String>,
        /// The user of --team it belongs to.
        #[arg(long, requires = "team")]
        user: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List keys, revoked and expired ones included (never their secrets).
    List {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a key: refused at once here, within 5 s on other control planes.
    Revoke {
        /// Key id or a unique prefix of one.
        id: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            scopes,
            expires,
            name,
            team,
            user,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let mut body = json!({"name": name, "scopes": scopes, "expires": expires});
            // only when given, so a control plane without teams still takes the body
            if let Some(team) = team {
                body["team"] = json!(team);
            }
            if let Some(user) = user {
                body["user"] = json!(user);
            }
            let created: Value = api.post("/api/v1/keys", &body).await?;
            if client.structured() {
                return output::structured(client.output, &created);
            }
            // the key alone on stdout, so `$(berth keys create …)` works; details on stderr
            outln!("{}", output::text(&created["key"]))?;
            eprintln!(
                "key {} ({}){} · scopes {} · expires {}",
                output::text(&created["id"]),
                output::text(&created["name"]),
                binding_text(&created),
                scopes_text(&created["scopes"]),
                created["expires_at"].as_str().unwrap_or("never"),
            );
            eprintln!("it is shown this once; keep it somewhere safe");
            Ok(())
        }
        KeysCommand::List { list, client } => {
            let api = ApiClient::new(&client)?;
            let render = || async {
                let keys: Vec<Value> = api.get("/api/v1/keys").await?;
                render(&keys, &client, &list)
            };
            if list.watch {
                return watch::run(render).await;
            }
            out!("{}", render().await?)?;
            Ok(())
        }
        KeysCommand::Revoke { id, yes, client } => {
            let api = ApiClient::new(&client)?;
            let id = ids::api_key(&api, &id).await?;
            confirm(
                &format!("revoke API key {id} (every call with it is refused)"),
                yes,
            )?;
            let revoked: Value = api.delete(&format!("/api/v1/keys/{id}")).await?;
            if client.structured() {
                return output::structured(client.output, &revoked);
            }
            outln!(
                "revoked {id} ({}) at {}",
                output::text(&revoked["name"]),
                output::text(&revoked["revoked_at"])
            )?;
            Ok(())
        }
    }
}

fn scopes_text(scopes: &Value) -> String {
    let names: Vec<String> = scopes
        .as_array()
        .map(|list| list.iter().map(output::text).collect())
        .unwrap_or_default();
    if names.is_empty() {
        return "-".to_owned();
    }
    names.join(",")
}

/// ` · team a · user alice · role member`, each part only when the answer has it.
fn binding_text(key: &Value) -> String {
    let mut text = String::new();
    for field in ["team", "user", "role"] {
        if let Some(value) = key[field].as_str() {
            text.push_str(&format!(" · {field} {value}"));
        }
    }
    text
}

fn render(keys: &[Value], client: &ClientArgs, list: &ListArgs) -> anyhow::Result<String> {
    let structured = client.structured().then_some(client.output);
    if let Some(text) = output::list_instead_of_table(keys, "id", list.quiet, structured)? {
        return Ok(text);
    }
    let now = output::now_secs();
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "TEAM",
        "USER",
        "ROLE",
        "SCOPES",
        "AGE",
        "EXPIRES",
        "LAST USED",
        "REVOKED",
    ]);
    for key in keys {
        table.row(vec![
            output::text(&key["id"]),
            output::text(&key["name"]),
            output::text(&key["team"]),
            output::text(&key["user"]),
            output::text(&key["role"]),
            scopes_text(&key["scopes"]),
            output::age(&key["created_at"], now),
            expires_text(&key["expires_at"], now),
            output::relative(&key["last_used_at"], now),
            revoked_text(&key["revoked_at"], now),
        ]);
    }
    Ok(table.render(&TableStyle::for_list(list)))
}

/// `in 29d`, `expired 3h ago`, or `never`.
fn expires_text(expires_at: &Value, now: i64) -> String {
    match output::unix_secs(expires_at) {
        Some(at) if at <= now => format!("expired {}", output::relative(expires_at, now)),
        Some(_) => output::relative(expires_at, now),
        None => "never".to_owned(),
    }
}

/// `2m ago`, or `-` while the key is valid.
fn revoked_text(revoked_at: &Value, now: i64) -> String {
    if revoked_at.is_null() {
        return "-".to_owned();
    }
    output::relative(revoked_at, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_revocation_read_as_words() {
        let now = 1_000_000;
        assert_eq!(expires_text(&Value::Null, now), "never");
        assert_eq!(expires_text(&json!(now + 3 * 86_400), now), "in 3d");
        assert_eq!(expires_text(&json!(now - 60), now), "expired 60s ago");
        assert_eq!(revoked_text(&Value::Null, now), "-");
        assert_eq!(revoked_text(&json!(now - 300), now), "5m ago");
        assert_eq!(scopes_text(&json!(["read", "exec"])), "read,exec");
        assert_eq!(scopes_text(&json!([])), "-");
        assert_eq!(
            binding_text(&json!({"team": "a", "user": null, "role": "team-admin"})),
            " · team a · role team-admin"
        );
        assert_eq!(binding_text(&json!({})), "");
    }
}
