//! `berth templates apply|list|get|delete|prebuild`: a team's templates, the
//! environments sandboxes are made from (`berth sandbox create --template NAME`).
//! `apply` takes a Podfile-style YAML or JSON document; `prebuild` builds a template's
//! image on the workers before any create needs it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;

use crate::client::{ApiClient, ClientArgs};
use crate::confirm::confirm;
use crate::output::{self, Format, ListArgs, Table, TableStyle};
use crate::{out, outln, watch};

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Save a template from a YAML or JSON file (`-`: stdin): made, or a new version
    /// when its content changed.
    Apply {
        /// The document, e.g. podfile.yaml.
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
        /// The template's name, whatever the document says (a Podfile has none).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List your team's templates.
    List {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one template's document and version (YAML unless `-o json`).
    Get {
        /// The template's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Build a template's image (its packages and on_create) on every worker its
    /// sandboxes could run on, now, so no create waits for it; a line per worker as
    /// its build ends. Exits 1 when a build failed.
    Prebuild {
        /// The template's name.
        name: String,
        /// Only these workers (ids, comma list or repeated).
        #[arg(long, value_delimiter = ',')]
        workers: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a template; sandboxes made from it run on.
    Delete {
        /// The template's name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: TemplatesCommand) -> anyhow::Result<()> {
    match command {
        TemplatesCommand::Apply { file, name, client } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let mut document = parse_document(&text)
                .with_context(|| format!("{} is not a template", file.display()))?;
            let api = ApiClient::new(&client)?;
            let name = match name {
                Some(name) => name,
                None => document
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .context("the document names no template: add `name:` or pass --name")?,
            };
            if let Value::Object(fields) = &mut document {
                fields.remove("name");
            }
            let before: Option<Value> = api.get(&format!("/api/v1/templates/{name}")).await.ok();
            let saved: Value = api
                .put(&format!("/api/v1/templates/{name}"), &document)
                .await?;
            if client.structured() {
                return output::structured(client.output, &saved);
            }
            let how = match before {
                None => "created",
                Some(old) if old["version"] == saved["version"] => "unchanged",
                Some(_) => "updated",
            };
            outln!(
                "template {} {how} (version {})",
                output::text(&saved["name"]),
                output::text(&saved["version"])
            )?;
            Ok(())
        }
        TemplatesCommand::List { list, client } => {
            let api = ApiClient::new(&client)?;
            let render = || async {
                let templates: Vec<Value> = api.get("/api/v1/templates").await?;
                render(&templates, &client, &list)
            };
            if list.watch {
                return watch::run(render).await;
            }
            out!("{}", render().await?)?;
            Ok(())
        }
        TemplatesCommand::Get { name, client } => {
            let api = ApiClient::new(&client)?;
            let template: Value = api.get(&format!("/api/v1/templates/{name}")).await?;
            let format = if client.output == Format::Json {
                Format::Json
            } else {
                Format::Yaml
            };
            output::structured(format, &template)
        }
        TemplatesCommand::Prebuild {
            name,
            workers,
            client,
        } => prebuild(&name, &workers, &client).await,
        TemplatesCommand::Delete { name, yes, client } => {
            let api = ApiClient::new(&client)?;
            confirm(
                &format!("delete template {name} (sandboxes made from it run on)"),
                yes,
            )?;
            let answer: Value = api.delete(&format!("/api/v1/templates/{name}")).await?;
            if client.structured() {
                return output::structured(client.output, &answer);
            }
            outln!("deleted template {name}")?;
            Ok(())
        }
    }
}

/// `templates prebuild`: each worker's line as its build ends (`-o json`: the
/// events as they come, one object a line).
async fn prebuild(name: &str, workers: &[String], client: &ClientArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(client)?;
    let request = api
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/templates/{name}/prebuild"),
        )
        .json(&serde_json::json!({ "workers": workers }));
    let response = api.raw(request).await?;
    let (mut failed, mut done) = (0usize, 0usize);
    crate::sandbox::for_each_line(response, |line| {
        if line.is_empty() {
            return Ok(None::<()>);
        }
        let event: Value = serde_json::from_str(line)
            .with_context(|| format!("a line of the prebuild is not JSON: {line}"))?;
        if client.structured() {
            outln!("{line}")?;
        }
        let text = |key: &str| output::text(&event[key]);
        let status = text("status");
        if status == "building" {
            return Ok(None);
        }
        done += 1;
        if status == "failed" {
            failed += 1;
        }
        if !client.structured() {
            let detail = match status.as_str() {
                "built" => format!(
                    "{} in {:.1}s",
                    text("image"),
                    event["build_ms"].as_u64().unwrap_or(0) as f64 / 1e3
                ),
                "reused" => text("image"),
                _ => text("error"),
            };
            outln!("{}  {status}  {detail}", text("worker_id"))?;
        }
        Ok(None)
    })
    .await?;
    if failed > 0 {
        return Err(crate::exit::Exit {
            code: 1,
            message: Some(format!("the build failed on {failed} of {done} workers")),
        }
        .into());
    }
    Ok(())
}

/// A YAML or JSON document (JSON is YAML too, but its errors read better as JSON's).
fn parse_document(text: &str) -> anyhow::Result<Value> {
    if text.trim_start().starts_with('{') {
        return Ok(serde_json::from_str(text)?);
    }
    Ok(serde_yaml_ng::from_str(text)?)
}

fn render(templates: &[Value], client: &ClientArgs, list: &ListArgs) -> anyhow::Result<String> {
    let structured = client.structured().then_some(client.output);
    if let Some(text) = output::list_instead_of_table(templates, "name", list.quiet, structured)? {
        return Ok(text);
    }
    let now = output::now_secs();
    let mut table = Table::new(&[
        "NAME", "VERSION", "IMAGE", "MEMORY", "VCPUS", "TTL", "UPDATED",
    ]);
    let or_default = |value: &Value| match output::text(value).as_str() {
        "" | "0" => "default".to_owned(),
        text => text.to_owned(),
    };
    for template in templates {
        table.row(vec![
            output::text(&template["name"]),
            output::text(&template["version"]),
            or_default(&template["image"]),
            or_default(&template["memory_mb"]),
            or_default(&template["vcpus"]),
            or_default(&template["ttl"]),
            output::age(&template["updated_at"], now),
        ]);
    }
    Ok(table.render(&TableStyle::for_list(list)))
}

#[cfg(test)]
mod tests {
    use super::parse_document;

    #[test]
    fn a_podfile_in_yaml_and_a_json_document_read_alike() {
        let yaml =
            parse_document("base: alpine:3.20\nenv:\n  PORT: 8080\non_start: |\n  echo hi\n")
                .unwrap();
        assert_eq!(yaml["base"], "alpine:3.20");
        assert_eq!(yaml["env"]["PORT"], 8080);
        assert_eq!(yaml["on_start"], "echo hi\n");
        let json = parse_document(r#"{"name": "x", "vcpus": 2}"#).unwrap();
        assert_eq!(json["vcpus"], 2);
        assert!(parse_document("{not json").is_err());
    }
}
