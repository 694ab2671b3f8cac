//! `berth secrets set|list|delete`: your team's secrets, write-only. A template's
//! `secrets:` names the ones its sandboxes get as environment variables. The value is
//! read from a file or stdin, never from the command line (where `ps` would show it).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{ApiClient, ClientArgs};
use crate::confirm::confirm;
use crate::output::{self, ListArgs, Table, TableStyle};
use crate::{out, outln, watch};

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set a secret: its value from --from-file, else stdin (one trailing newline is
    /// dropped).
    Set {
        /// The secret's name, also the environment variable's (e.g. DATABASE_PASSWORD).
        name: String,
        /// Read the value from this file (`-`: stdin), kept byte for byte.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List your team's secrets (names and times; values are never shown).
    List {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a secret; sandboxes that have it keep it.
    Delete {
        /// The secret's name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: SecretsCommand) -> anyhow::Result<()> {
    match command {
        SecretsCommand::Set {
            name,
            from_file,
            client,
        } => {
            let value = match from_file {
                Some(path) if path.as_os_str() != "-" => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                Some(_) => read_stdin(false)?,
                None => read_stdin(true)?,
            };
            let api = ApiClient::new(&client)?;
            let secret: Value = api
                .put(
                    &format!("/api/v1/secrets/{name}"),
                    &json!({ "value": value }),
                )
                .await?;
            if client.structured() {
                return output::structured(client.output, &secret);
            }
            outln!("secret {} set", output::text(&secret["name"]))?;
            Ok(())
        }
        SecretsCommand::List { list, client } => {
            let api = ApiClient::new(&client)?;
            let render = || async {
                let secrets: Vec<Value> = api.get("/api/v1/secrets").await?;
                render(&secrets, &client, &list)
            };
            if list.watch {
                return watch::run(render).await;
            }
            out!("{}", render().await?)?;
            Ok(())
        }
        SecretsCommand::Delete { name, yes, client } => {
            let api = ApiClient::new(&client)?;
            confirm(
                &format!("delete secret {name} (sandboxes that have it keep it)"),
                yes,
            )?;
            let answer: Value = api.delete(&format!("/api/v1/secrets/{name}")).await?;
            if client.structured() {
                return output::structured(client.output, &answer);
            }
            outln!("deleted secret {name}")?;
            Ok(())
        }
    }
}

/// The value from stdin; `line`: drop one trailing newline (what `echo` or typing
/// adds).
fn read_stdin(line: bool) -> anyhow::Result<String> {
    if line && std::io::stdin().is_terminal() {
        eprintln!("value (end with Enter, then Ctrl-D):");
    }
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .context("cannot read the value from stdin")?;
    if line && value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

fn render(secrets: &[Value], client: &ClientArgs, list: &ListArgs) -> anyhow::Result<String> {
    let structured = client.structured().then_some(client.output);
    if let Some(text) = output::list_instead_of_table(secrets, "name", list.quiet, structured)? {
        return Ok(text);
    }
    let now = output::now_secs();
    let mut table = Table::new(&["NAME", "CREATED", "UPDATED"]);
    for secret in secrets {
        table.row(vec![
            output::text(&secret["name"]),
            output::age(&secret["created_at"], now),
            output::age(&secret["updated_at"], now),
        ]);
    }
    Ok(table.render(&TableStyle::for_list(list)))
}
