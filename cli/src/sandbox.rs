//! `berth sandbox …`: create, list, get, exec (whole or streamed), logs, files and
//! destroy, over the public HTTP API.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::client::{ApiClient, ClientArgs};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox.
    Create {
        #[arg(long)]
        image: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        memory_mb: Option<u64>,
        #[arg(long)]
        vcpus: Option<u32>,
        /// Lifetime, e.g. 30m.
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// Metadata entry KEY=VALUE (repeatable).
        #[arg(long = "meta", value_parser = key_value)]
        metadata: Vec<(String, String)>,
        /// Cut the sandbox off from every address outside its own network (the
        /// internet, the LAN); without it the control plane's default applies.
        #[arg(long)]
        no_internet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List sandboxes that are not destroyed.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one sandbox.
    Get {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a command; exits with the command's exit code.
    Exec {
        id: String,
        /// Print output as it is produced.
        #[arg(long)]
        stream: bool,
        /// Run the words as argv instead of through the shell.
        #[arg(long)]
        argv: bool,
        /// e.g. 30s
        #[arg(long)]
        timeout: Option<String>,
        /// Environment entry KEY=VALUE (repeatable).
        #[arg(long = "env", value_parser = key_value)]
        env: Vec<(String, String)>,
        #[arg(long)]
        workdir: Option<String>,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Console log of a sandbox.
    Logs {
        id: String,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long, default_value_t = 100)]
        lines: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a directory.
    Ls {
        id: String,
        #[arg(default_value = "/workspace")]
        path: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a file's bytes.
    Cat {
        id: String,
        path: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Upload a local file (streamed, any size).
    Put {
        id: String,
        local: PathBuf,
        remote: String,
        /// Octal mode, e.g. 0755.
        #[arg(long, default_value = "0644")]
        mode: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a file or directory.
    Rm {
        id: String,
        path: String,
        #[arg(short = 'r', long)]
        recursive: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Destroy a sandbox.
    Destroy {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Copy files or directory trees between this machine and a sandbox, either way
    /// (`berth sandbox cp ./src sbx-1:/workspace`, `berth sandbox cp sbx-1:out .`; `-`
    /// is a tar stream on stdin or stdout).
    Cp(crate::copy::CopyArgs),
    /// Set a sandbox's expiry to now + ttl.
    Extend {
        id: String,
        #[arg(long, default_value = "30m")]
        ttl: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

pub async fn run(command: SandboxCommand) -> anyhow::Result<()> {
    match command {
        SandboxCommand::Create {
            image,
            provider,
            memory_mb,
            vcpus,
            ttl,
            owner,
            metadata,
            no_internet,
            client,
        } => {
            let body = json!({
                "image": image, "provider": provider, "memory_mb": memory_mb, "vcpus": vcpus,
                "ttl": ttl, "owner_id": owner,
                "metadata": metadata.into_iter().collect::<BTreeMap<_, _>>(),
                "internet": no_internet.then_some(false),
            });
            let sandbox: Value = ApiClient::new(&client)?
                .post("/api/v1/sandboxes", &body)
                .await?;
            if client.json() {
                return output::json(&sandbox);
            }
            println!("{}", output::text(&sandbox["id"]));
            Ok(())
        }
        SandboxCommand::List { client } => {
            let list: Vec<Value> = ApiClient::new(&client)?.get("/api/v1/sandboxes").await?;
            if client.json() {
                return output::json(&Value::Array(list));
            }
            let rows: Vec<Vec<String>> = list.iter().map(row).collect();
            output::table(&HEADERS, &rows);
            Ok(())
        }
        SandboxCommand::Get { id, client } => {
            let sandbox: Value = ApiClient::new(&client)?
                .get(&format!("/api/v1/sandboxes/{id}"))
                .await?;
            if client.json() {
                return output::json(&sandbox);
            }
            output::table(&HEADERS, &[row(&sandbox)]);
            Ok(())
        }
        SandboxCommand::Exec {
            id,
            stream,
            argv,
            timeout,
            env,
            workdir,
            command,
            client,
        } => {
            let (program, args) = command.split_first().context("a command is required")?;
            let body = json!({
                "command": program, "args": args, "mode": if argv { "argv" } else { "shell" },
                "env": env.into_iter().collect::<BTreeMap<_, _>>(), "workdir": workdir,
                "timeout": timeout, "stream": stream,
            });
            let api = ApiClient::new(&client)?;
            let path = format!("/api/v1/sandboxes/{id}/exec");
            let code = if stream {
                exec_streamed(&api, &path, &body).await?
            } else {
                let result: Value = api.post(&path, &body).await?;
                if client.json() {
                    output::json(&result)?;
                } else {
                    print!("{}", result["stdout"].as_str().unwrap_or(""));
                    eprint!("{}", result["stderr"].as_str().unwrap_or(""));
                }
                result["exit_code"].as_i64().unwrap_or(1)
            };
            std::io::stdout().flush()?;
            std::process::exit(i32::try_from(code).unwrap_or(1));
        }
        SandboxCommand::Logs {
            id,
            follow,
            lines,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let path = format!("/api/v1/sandboxes/{id}/logs?lines={lines}&follow={follow}");
            if !follow {
                let lines: Vec<String> = api.get(&path).await?;
                for line in lines {
                    println!("{line}");
                }
                return Ok(());
            }
            let response = api.raw(api.request(reqwest::Method::GET, &path)).await?;
            for_each_line(response, |line| {
                let value: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                println!(
                    "{} {}",
                    output::text(&value["time"]),
                    output::text(&value["line"])
                );
                None::<()>
            })
            .await?;
            Ok(())
        }
        SandboxCommand::Ls { id, path, client } => {
            let files: Vec<Value> = ApiClient::new(&client)?
                .get(&format!(
                    "/api/v1/sandboxes/{id}/files/list?path={}",
                    encode(&path)
                ))
                .await?;
            if client.json() {
                return output::json(&Value::Array(files));
            }
            let rows: Vec<Vec<String>> = files
                .iter()
                .map(|f| {
                    vec![
                        output::text(&f["mode"]),
                        output::text(&f["size"]),
                        output::text(&f["mod_time"]),
                        format!(
                            "{}{}",
                            output::text(&f["path"]),
                            if f["is_dir"].as_bool() == Some(true) {
                                "/"
                            } else {
                                ""
                            }
                        ),
                    ]
                })
                .collect();
            output::table(&["MODE", "SIZE", "MODIFIED", "PATH"], &rows);
            Ok(())
        }
        SandboxCommand::Cat { id, path, client } => {
            let api = ApiClient::new(&client)?;
            let request = api.request(
                reqwest::Method::GET,
                &format!("/api/v1/sandboxes/{id}/files?path={}", encode(&path)),
            );
            let mut body = api.raw(request).await?.bytes_stream();
            let mut stdout = std::io::stdout().lock();
            while let Some(chunk) = body.next().await {
                stdout.write_all(&chunk.context("the download was cut off")?)?;
            }
            stdout.flush()?;
            Ok(())
        }
        SandboxCommand::Put {
            id,
            local,
            remote,
            mode,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let file = tokio::fs::File::open(&local)
                .await
                .with_context(|| format!("cannot open {}", local.display()))?;
            let request = api
                .request(
                    reqwest::Method::PUT,
                    &format!(
                        "/api/v1/sandboxes/{id}/files?path={}&mode={}",
                        encode(&remote),
                        encode(&mode)
                    ),
                )
                .header("content-type", "application/octet-stream")
                .body(reqwest::Body::from(file));
            let answer: Value = api.raw(request).await?.json().await?;
            eprintln!("wrote {} bytes to {remote}", output::text(&answer["size"]));
            Ok(())
        }
        SandboxCommand::Rm {
            id,
            path,
            recursive,
            client,
        } => {
            let _: Value = ApiClient::new(&client)?
                .delete(&format!(
                    "/api/v1/sandboxes/{id}/files?path={}&recursive={recursive}",
                    encode(&path)
                ))
                .await?;
            Ok(())
        }
        SandboxCommand::Destroy { id, client } => {
            let _: Value = ApiClient::new(&client)?
                .delete(&format!("/api/v1/sandboxes/{id}"))
                .await?;
            eprintln!("destroyed {id}");
            Ok(())
        }
        SandboxCommand::Cp(args) => crate::copy::run(args).await,
        SandboxCommand::Extend { id, ttl, client } => {
            let sandbox: Value = ApiClient::new(&client)?
                .post(
                    &format!("/api/v1/sandboxes/{id}/extend"),
                    &json!({"ttl": ttl}),
                )
                .await?;
            if client.json() {
                return output::json(&sandbox);
            }
            println!("{} expires at {}", id, output::text(&sandbox["expires_at"]));
            Ok(())
        }
    }
}

/// Streams an exec's NDJSON, printing output as it comes; returns the exit code.
async fn exec_streamed(api: &ApiClient, path: &str, body: &Value) -> anyhow::Result<i64> {
    let response = api
        .raw(api.request(reqwest::Method::POST, path).json(body))
        .await?;
    let mut failure = None;
    let code = for_each_line(response, |line| {
        let event: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        match event["stream"].as_str() {
            Some("stdout") => {
                print!("{}", event["data"].as_str().unwrap_or(""));
                let _ = std::io::stdout().flush();
                None
            }
            Some("stderr") => {
                eprint!("{}", event["data"].as_str().unwrap_or(""));
                None
            }
            Some("exit") => Some(event["exit_code"].as_i64().unwrap_or(1)),
            Some("error") => {
                failure = Some(format!(
                    "{}: {}",
                    output::text(&event["code"]),
                    output::text(&event["message"])
                ));
                Some(1)
            }
            _ => None,
        }
    })
    .await?;
    if let Some(failure) = failure {
        bail!("{failure}");
    }
    code.context("the stream ended without an exit status")
}

/// Calls `handle` with each line of a streamed body until it returns `Some`.
async fn for_each_line<T>(
    response: reqwest::Response,
    mut handle: impl FnMut(&str) -> Option<T>,
) -> anyhow::Result<Option<T>> {
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk.context("the stream was cut off")?);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(done) = handle(line.trim_end()) {
                return Ok(Some(done));
            }
        }
    }
    Ok(None)
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

const HEADERS: [&str; 6] = ["ID", "STATE", "PROVIDER", "IMAGE", "WORKER", "EXPIRES"];

fn row(sandbox: &Value) -> Vec<String> {
    vec![
        output::text(&sandbox["id"]),
        output::text(&sandbox["state"]),
        output::text(&sandbox["provider"]),
        output::text(&sandbox["image"]),
        output::text(&sandbox["worker_id"]),
        output::text(&sandbox["expires_at"]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("/workspace/a b&c"), "/workspace/a%20b%26c");
        assert_eq!(key_value("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(key_value("nothing").is_err());
    }
}
