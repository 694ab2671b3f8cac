//! `berth ssh-keys add|list|remove`: public keys registered to the caller's team (and
//! user) for the SSH gateway; such a key logs in as `ssh -p 2222 SANDBOX_ID@host` to
//! that owner's sandboxes. And `berth sandbox ssh-token`: a one-time token instead.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{ApiClient, ClientArgs};
use crate::confirm::confirm;
use crate::output::{self, ListArgs, Table, TableStyle};
use crate::{out, outln, watch};

#[derive(Debug, Subcommand)]
pub enum SshKeysCommand {
    /// Register a public key (ed25519 or ECDSA): a .pub file, or `-` for stdin.
    Add {
        /// The public key file, e.g. ~/.ssh/id_ed25519.pub (`-`: stdin).
        file: PathBuf,
        /// A name to recognise it by (default: the key's comment).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the keys of your team (and user); `--removed` shows removed ones too.
    List {
        /// Removed keys too.
        #[arg(long)]
        removed: bool,
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a key: logins with it are refused from then on.
    Remove {
        /// The key's id (`sshk-…`).
        id: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: SshKeysCommand) -> anyhow::Result<()> {
    match command {
        SshKeysCommand::Add { file, name, client } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let api = ApiClient::new(&client)?;
            let key: Value = api
                .post(
                    "/api/v1/ssh-keys",
                    &json!({"public_key": text.trim(), "name": name}),
                )
                .await?;
            if client.structured() {
                return output::structured(client.output, &key);
            }
            outln!(
                "added {} ({}) {}",
                output::text(&key["id"]),
                output::text(&key["name"]),
                output::text(&key["fingerprint"])
            )?;
            Ok(())
        }
        SshKeysCommand::List {
            removed,
            list,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let path = if removed {
                "/api/v1/ssh-keys?removed=true"
            } else {
                "/api/v1/ssh-keys"
            };
            let render = || async {
                let answer: Value = api.get(path).await?;
                let keys = answer["keys"].as_array().cloned().unwrap_or_default();
                render(&keys, &client, &list)
            };
            if list.watch {
                return watch::run(render).await;
            }
            out!("{}", render().await?)?;
            Ok(())
        }
        SshKeysCommand::Remove { id, yes, client } => {
            let api = ApiClient::new(&client)?;
            confirm(
                &format!("remove SSH key {id} (logins with it are refused)"),
                yes,
            )?;
            let key: Value = api.delete(&format!("/api/v1/ssh-keys/{id}")).await?;
            if client.structured() {
                return output::structured(client.output, &key);
            }
            outln!(
                "removed {id} ({}) {}",
                output::text(&key["name"]),
                output::text(&key["fingerprint"])
            )?;
            Ok(())
        }
    }
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
        "FINGERPRINT",
        "TEAM",
        "USER",
        "AGE",
        "REMOVED",
    ]);
    for key in keys {
        let removed = &key["removed_at"];
        table.row(vec![
            output::text(&key["id"]),
            output::text(&key["name"]),
            output::text(&key["fingerprint"]),
            output::text(&key["team_id"]),
            output::text(&key["user_id"]),
            output::age(&key["created_at"], now),
            if removed.is_null() {
                "-".to_owned()
            } else {
                output::relative(removed, now)
            },
        ]);
    }
    Ok(table.render(&TableStyle::for_list(list)))
}

/// `berth sandbox ssh-token ID [--ttl 5m]`: the token alone on stdout (it is shown
/// once), how to use it on stderr.
pub async fn ssh_token(
    api: &ApiClient,
    sandbox_id: &str,
    ttl: Option<&str>,
    known_hosts: Option<&Path>,
    format: Option<output::Format>,
) -> anyhow::Result<()> {
    let body = match ttl {
        Some(ttl) => json!({ "ttl": ttl }),
        None => json!({}),
    };
    let token: Value = api
        .post(&format!("/api/v1/sandboxes/{sandbox_id}/ssh-token"), &body)
        .await?;
    if let Some(file) = known_hosts {
        let address = token["ssh_address"].as_str().unwrap_or_default();
        let host_key = token["host_key"].as_str().unwrap_or_default();
        if address.is_empty() || host_key.is_empty() {
            anyhow::bail!("the control plane's SSH gateway is off: no host key to write");
        }
        let name = known_host_name(address, api.base());
        write_known_host(file, &name, host_key)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    if let Some(format) = format {
        return output::structured(format, &token);
    }
    outln!("{}", output::text(&token["token"]))?;
    let command = token["ssh_command"].as_str().unwrap_or_default();
    if command.is_empty() {
        eprintln!("the control plane's SSH gateway is off (berth serve --ssh-listen ADDR)");
    } else {
        eprintln!(
            "one login, before {}: {command}",
            output::text(&token["expires_at"])
        );
        eprintln!("host key {}", output::text(&token["host_key_fingerprint"]));
    }
    Ok(())
}

/// How `known_hosts` names the gateway at `address` (`host:port`): `[host]:port`, or
/// the bare host on port 22. A gateway on every interface (`HOST`) is named by the
/// API's host.
fn known_host_name(address: &str, api_base: &str) -> String {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "22"));
    let host = if host == "HOST" {
        reqwest::Url::parse(api_base)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_else(|| host.to_owned())
    } else {
        host.to_owned()
    };
    if port == "22" {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Puts `name host_key` in `file` in place of any entry for `name` (made with its
/// directory when missing).
fn write_known_host(file: &Path, name: &str, host_key: &str) -> std::io::Result<()> {
    let old = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err),
    };
    let mut lines: Vec<&str> = old
        .lines()
        .filter(|line| {
            let names = line.split_whitespace().next().unwrap_or_default();
            !names.split(',').any(|entry| entry == name)
        })
        .collect();
    let entry = format!("{name} {host_key}");
    lines.push(&entry);
    if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(file, lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_named_as_known_hosts_names_it() {
        assert_eq!(
            known_host_name("127.0.0.1:2222", "http://127.0.0.1:7423"),
            "[127.0.0.1]:2222"
        );
        assert_eq!(
            known_host_name("HOST:2222", "https://cp.example:7423"),
            "[cp.example]:2222"
        );
        assert_eq!(known_host_name("10.0.0.5:22", "http://x"), "10.0.0.5");
    }

    #[test]
    fn an_entry_replaces_the_old_one_for_its_host_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_hosts");
        write_known_host(&file, "[127.0.0.1]:2222", "ssh-ed25519 OLD").unwrap();
        std::fs::write(
            &file,
            std::fs::read_to_string(&file).unwrap() + "other.example ssh-ed25519 KEEP\n",
        )
        .unwrap();
        write_known_host(&file, "[127.0.0.1]:2222", "ssh-ed25519 NEW").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("OLD"), "{text}");
        assert!(text.contains("other.example ssh-ed25519 KEEP"), "{text}");
        assert!(text.contains("[127.0.0.1]:2222 ssh-ed25519 NEW"), "{text}");
    }
}
