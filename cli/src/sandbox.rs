//! `berth sandbox …`: create, list, get, exec (whole or streamed), logs, files and
//! destroy, over the public HTTP API.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::client::{ApiClient, ApiError, ClientArgs};
use crate::confirm::confirm;
use crate::exit::{self, Exit};
use crate::output::{self, Format, ListArgs, Table, TableStyle};
use crate::{ids, out, outln, ports, session, watch};

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox; prints its id.
    Create {
        /// Image to start (default: the template's, else the control plane's default).
        #[arg(long)]
        image: Option<String>,
        /// Make it from this template of your team (`berth templates list`).
        #[arg(long)]
        template: Option<String>,
        /// Provider to run it with (e.g. mock, docker).
        #[arg(long)]
        provider: Option<String>,
        /// Memory limit in MiB.
        #[arg(long)]
        memory_mb: Option<u64>,
        /// Number of virtual CPUs.
        #[arg(long)]
        vcpus: Option<u32>,
        /// Lifetime, e.g. 30m.
        #[arg(long)]
        ttl: Option<String>,
        /// Stop it after this long with no exec, file, session or port traffic, e.g.
        /// 15m (files are kept; `berth sandbox start` brings it back); 0s: never.
        /// Without it, its template's `auto_stop` applies.
        #[arg(long)]
        auto_stop: Option<String>,
        /// Owner id to record (admin keys only).
        #[arg(long)]
        owner: Option<String>,
        /// Metadata entry KEY=VALUE (repeatable).
        #[arg(long = "meta", value_parser = key_value)]
        metadata: Vec<(String, String)>,
        /// Cut the sandbox off from every address outside its own network (the
        /// internet, the LAN); without it the control plane's default applies.
        #[arg(long)]
        no_internet: bool,
        /// Place it only on a worker whose labels meet KEY=VALUE or KEY!=VALUE
        /// (repeatable; all must hold).
        #[arg(long = "constraint", value_name = "KEY=VALUE|KEY!=VALUE")]
        constraints: Vec<String>,
        /// Show its startup phases live as they run (scheduled, building image,
        /// starting services, creating, on_start, ready), ✓ or ✗ each with its time,
        /// on stderr; the id still goes to stdout once it is ready.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List sandboxes that are not destroyed.
    List {
        /// Only sandboxes in these states (comma list or repeated: running,lost,…).
        #[arg(long, value_delimiter = ',')]
        state: Vec<String>,
        /// Only sandboxes on this worker (id or unique prefix).
        #[arg(long)]
        worker: Option<String>,
        /// Only sandboxes of this owner.
        #[arg(long)]
        owner: Option<String>,
        /// Only sandboxes whose metadata has KEY=VALUE (repeatable; all must match).
        #[arg(long = "label", value_parser = key_value)]
        labels: Vec<(String, String)>,
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one sandbox.
    Get {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// Redraw every 2 s (on a terminal), or print again whenever it changes.
        #[arg(short, long)]
        watch: bool,
        /// Print the table without its header line.
        #[arg(long)]
        no_headers: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a command; exits with the command's exit code (124 when it timed out).
    Exec {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// Print output as it is produced.
        #[arg(long)]
        stream: bool,
        /// Send the local stdin to the command (end-of-file closes its stdin), as an
        /// interactive session; with a terminal on both ends add -t.
        #[arg(short = 'i', long, conflicts_with = "stream")]
        interactive: bool,
        /// With -i: run the command in a terminal (local raw mode, size followed).
        #[arg(short = 't', long, requires = "interactive")]
        tty: bool,
        /// Run the words as argv instead of through the shell.
        #[arg(long)]
        argv: bool,
        /// How long the command may run, e.g. 30s (default: the worker's, 5m).
        #[arg(long)]
        timeout: Option<String>,
        /// Environment entry KEY=VALUE (repeatable).
        #[arg(long = "env", value_parser = key_value)]
        env: Vec<(String, String)>,
        /// Working directory inside the sandbox.
        #[arg(long)]
        workdir: Option<String>,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A terminal in the sandbox: a shell (or the command after `--`) in a PTY of
    /// the local window's size. Type `~.` after a newline to detach; the command keeps
    /// running for the worker's session grace and `sandbox attach` goes back in.
    /// Ends with the remote command's exit status.
    Shell {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// Environment entry KEY=VALUE (repeatable).
        #[arg(long = "env", value_parser = key_value)]
        env: Vec<(String, String)>,
        /// Working directory inside the sandbox.
        #[arg(long)]
        workdir: Option<String>,
        /// The command and its arguments (after `--`; default: the sandbox's shell,
        /// its template's `shell`, else sh).
        #[arg(last = true)]
        command: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Back into a running session (`sandbox sessions` lists them), its output
    /// resumed from an offset; a terminal session takes over the local terminal.
    Attach {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// The session's id.
        session: String,
        /// Resume output from this byte offset (0: all the session still keeps).
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Detach another client that is attached now.
        #[arg(long)]
        takeover: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The sandbox's sessions: running, or ended and kept for a client to come back.
    Sessions {
        /// Sandbox id or a unique prefix of one.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Forward local TCP ports to ports inside the sandbox, as kubectl does:
    /// `8080:80` (local 8080), `80` (the same port), `:80` (any free local port).
    /// Each local connection gets its own stream; runs until Ctrl-C.
    #[command(name = "port-forward")]
    PortForward {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// [LOCAL:]REMOTE, one or more.
        #[arg(required = true, value_parser = ports::parse_forward)]
        ports: Vec<ports::Forward>,
        /// The local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        address: std::net::IpAddr,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a signed, expiring link to the preview URL of a port; its first use
    /// sets a cookie for that preview host, so a browser can follow links from it.
    #[command(name = "preview-url")]
    PreviewUrl {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// The port inside the sandbox.
        port: u16,
        /// How long the link works, e.g. 30m (default 1h, at most 7 days).
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A one-time SSH token, printed once: `ssh -p 2222 TOKEN@host` logs in (one
    /// login, no key needed) before it expires.
    #[command(name = "ssh-token")]
    SshToken {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// How long the token waits for its login, e.g. 10m (default 5m, at most 24h).
        #[arg(long)]
        ttl: Option<String>,
        /// Also write the gateway's host key to this known_hosts file (replacing an
        /// older entry for the gateway), for `ssh -o UserKnownHostsFile=FILE`.
        #[arg(long, value_name = "FILE")]
        known_hosts: Option<std::path::PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The sandbox's preview domain and public ports; `--public PORT` lets anyone
    /// reach a port through its preview URL, `--private PORT` takes that back.
    Ports {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// Make this port public (repeatable).
        #[arg(long = "public", value_name = "PORT")]
        public: Vec<u16>,
        /// Make this port private again (repeatable).
        #[arg(long = "private", value_name = "PORT")]
        private: Vec<u16>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Console log of a sandbox.
    Logs {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// Keep printing new lines as they come.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(long, default_value_t = 100)]
        lines: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a directory.
    Ls {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// Directory inside the sandbox.
        #[arg(default_value = "/workspace")]
        path: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a file's bytes.
    Cat {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// File inside the sandbox.
        path: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Upload a local file (streamed, any size).
    Put {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// Local file to upload.
        local: PathBuf,
        /// Where to write it inside the sandbox.
        remote: String,
        /// Octal mode, e.g. 0755.
        #[arg(long, default_value = "0644")]
        mode: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a file or directory.
    Rm {
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// File or directory inside the sandbox.
        path: String,
        /// Delete a directory and everything in it.
        #[arg(short = 'r', long)]
        recursive: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Destroy a sandbox.
    Destroy {
        /// Sandbox id or a unique prefix of one.
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
        /// Sandbox id or a unique prefix of one.
        id: String,
        /// The new lifetime from now, e.g. 1h.
        #[arg(long, default_value = "30m")]
        ttl: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a sandbox: its processes end, its files stay; start it again later.
    Stop {
        /// Sandbox id or a unique prefix of one.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a stopped sandbox again (its template's on_start runs again).
    Start {
        /// Sandbox id or a unique prefix of one.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove the records of expired, lost and failed sandboxes; prints how many.
    Prune {
        /// Only these states (comma list or repeated: expired, lost, error) [default: all three].
        #[arg(long, value_delimiter = ',', value_parser = ["expired", "lost", "error"])]
        state: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// Ends with a remote command's exit status.
fn exit_with(code: i32) -> anyhow::Result<()> {
    if code == 0 {
        return Ok(());
    }
    Err(Exit {
        code,
        message: None,
    }
    .into())
}

pub async fn run(command: SandboxCommand) -> anyhow::Result<()> {
    match command {
        SandboxCommand::Create {
            image,
            template,
            provider,
            memory_mb,
            vcpus,
            ttl,
            auto_stop,
            owner,
            metadata,
            no_internet,
            constraints,
            wait,
            client,
        } => {
            let body = json!({
                "image": image, "provider": provider, "memory_mb": memory_mb, "vcpus": vcpus,
                "ttl": ttl, "auto_stop": auto_stop, "owner_id": owner, "template": template,
                "metadata": metadata.into_iter().collect::<BTreeMap<_, _>>(),
                "internet": no_internet.then_some(false),
                "constraints": constraints,
            });
            let api = ApiClient::new(&client)?;
            let created = if wait {
                crate::stepper::create_and_follow(&api, &body).await
            } else {
                api.post::<Value>("/api/v1/sandboxes", &body).await
            };
            let sandbox = match created {
                Ok(sandbox) => sandbox,
                Err(err) => return Err(create_failure(err)),
            };
            if client.structured() {
                return output::structured(client.output, &sandbox);
            }
            outln!("{}", output::text(&sandbox["id"]))?;
            Ok(())
        }
        SandboxCommand::List {
            state,
            worker,
            owner,
            labels,
            list,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let worker = match worker {
                Some(worker) => Some(ids::worker(&api, &worker).await?),
                None => None,
            };
            let filter = Filter {
                states: state,
                worker,
                owner,
                labels,
            };
            let render = || async {
                let all: Vec<Value> = api.get("/api/v1/sandboxes").await?;
                let shown: Vec<Value> = all.into_iter().filter(|s| filter.matches(s)).collect();
                render_list(&shown, &client, &list)
            };
            if list.watch {
                return watch::run(render).await;
            }
            out!("{}", render().await?)?;
            Ok(())
        }
        SandboxCommand::Get {
            id,
            watch,
            no_headers,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let list = ListArgs {
                no_headers,
                ..ListArgs::default()
            };
            let render = || async {
                let sandbox: Value = api.get(&format!("/api/v1/sandboxes/{id}")).await?;
                if client.structured() {
                    return output::structured_text(client.output, &sandbox);
                }
                render_list(&[sandbox], &client, &list)
            };
            if watch {
                return watch::run(render).await;
            }
            out!("{}", render().await?)?;
            Ok(())
        }
        SandboxCommand::Exec {
            id,
            stream,
            interactive: true,
            tty,
            argv,
            timeout,
            env,
            workdir,
            command,
            client,
        } => {
            let _ = stream;
            let request = session::start_request(&command, argv, tty, env, workdir, timeout)?;
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let local = if tty {
                session::Local::Terminal
            } else {
                session::Local::Stdin
            };
            exit_with(session::run(&api, &id, request, local).await?)
        }
        SandboxCommand::Shell {
            id,
            env,
            workdir,
            command,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let command = if command.is_empty() {
                // the sandbox's own shell (its template's `shell`), else sh
                let sandbox: Value = api.get(&format!("/api/v1/sandboxes/{id}")).await?;
                let shell = sandbox["shell"].as_str().filter(|s| !s.is_empty());
                vec![shell.unwrap_or("sh").to_owned()]
            } else {
                command
            };
            let request = session::start_request(&command, false, true, env, workdir, None)?;
            exit_with(session::run(&api, &id, request, session::Local::Terminal).await?)
        }
        SandboxCommand::Attach {
            id,
            session: session_id,
            offset,
            takeover,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let request = session::attach_request(&session_id, offset, takeover);
            exit_with(session::run(&api, &id, request, session::Local::Terminal).await?)
        }
        SandboxCommand::PortForward {
            id,
            ports: forwards,
            address,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            ports::port_forward(&api, &id, &forwards, address).await
        }
        SandboxCommand::PreviewUrl {
            id,
            port,
            ttl,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let format = client.structured().then_some(client.output);
            ports::preview_url(&api, &id, port, ttl.as_deref(), format).await
        }
        SandboxCommand::SshToken {
            id,
            ttl,
            known_hosts,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let format = client.structured().then_some(client.output);
            let known_hosts = known_hosts.as_deref();
            crate::ssh_keys::ssh_token(&api, &id, ttl.as_deref(), known_hosts, format).await
        }
        SandboxCommand::Ports {
            id,
            public,
            private,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let format = client.structured().then_some(client.output);
            ports::ports(&api, &id, &public, &private, format).await
        }
        SandboxCommand::Sessions { id, client } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            session::list(&api, &id, client.structured().then_some(client.output)).await
        }
        SandboxCommand::Exec {
            id,
            stream,
            interactive: false,
            tty: _,
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
            let id = ids::sandbox(&api, &id).await?;
            let path = format!("/api/v1/sandboxes/{id}/exec");
            let code = if stream {
                exec_streamed(&api, &path, &body).await?
            } else {
                let result: Value = match api.post_long(&path, &body).await {
                    Ok(result) => result,
                    Err(err) => return Err(exec_failure(err)),
                };
                if client.structured() {
                    output::structured(client.output, &result)?;
                } else {
                    out!("{}", result["stdout"].as_str().unwrap_or(""))?;
                    eprint!("{}", result["stderr"].as_str().unwrap_or(""));
                }
                result["exit_code"].as_i64().unwrap_or(1)
            };
            if code == 0 {
                return Ok(());
            }
            Err(Exit {
                code: i32::try_from(code).unwrap_or(1),
                message: None,
            }
            .into())
        }
        SandboxCommand::Logs {
            id,
            follow,
            lines,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let path = format!("/api/v1/sandboxes/{id}/logs?lines={lines}&follow={follow}");
            if !follow {
                let lines: Vec<String> = api.get(&path).await?;
                for line in lines {
                    outln!("{line}")?;
                }
                return Ok(());
            }
            let response = api.raw(api.request(reqwest::Method::GET, &path)).await?;
            for_each_line(response, |line| {
                let value: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                outln!(
                    "{} {}",
                    output::text(&value["time"]),
                    output::text(&value["line"])
                )?;
                Ok(None::<()>)
            })
            .await?;
            Ok(())
        }
        SandboxCommand::Ls { id, path, client } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let files: Vec<Value> = api
                .get(&format!(
                    "/api/v1/sandboxes/{id}/files/list?path={}",
                    encode(&path)
                ))
                .await?;
            if client.structured() {
                return output::structured(client.output, &Value::Array(files));
            }
            let mut table = Table::new(&["MODE", "SIZE", "MODIFIED", "PATH"]);
            for f in &files {
                let slash = if f["is_dir"].as_bool() == Some(true) {
                    "/"
                } else {
                    ""
                };
                table.row(vec![
                    output::text(&f["mode"]),
                    output::text(&f["size"]),
                    output::text(&f["mod_time"]),
                    format!("{}{slash}", output::text(&f["path"])),
                ]);
            }
            table.print(&TableStyle::default())
        }
        SandboxCommand::Cat { id, path, client } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
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
            let id = ids::sandbox(&api, &id).await?;
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
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let _: Value = api
                .delete(&format!(
                    "/api/v1/sandboxes/{id}/files?path={}&recursive={recursive}",
                    encode(&path)
                ))
                .await?;
            Ok(())
        }
        SandboxCommand::Destroy { id, client } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let _: Value = api.delete(&format!("/api/v1/sandboxes/{id}")).await?;
            eprintln!("destroyed {id}");
            Ok(())
        }
        SandboxCommand::Cp(args) => crate::copy::run(args).await,
        SandboxCommand::Extend { id, ttl, client } => {
            let api = ApiClient::new(&client)?;
            let id = ids::sandbox(&api, &id).await?;
            let sandbox: Value = api
                .post(
                    &format!("/api/v1/sandboxes/{id}/extend"),
                    &json!({"ttl": ttl}),
                )
                .await?;
            if client.structured() {
                return output::structured(client.output, &sandbox);
            }
            outln!("{} expires at {}", id, output::text(&sandbox["expires_at"]))?;
            Ok(())
        }
        SandboxCommand::Stop { id, client } => power(&id, "stop", &client).await,
        SandboxCommand::Start { id, client } => power(&id, "start", &client).await,
        SandboxCommand::Prune { state, yes, client } => {
            let which = if state.is_empty() {
                "expired, lost and error".to_owned()
            } else {
                state.join(", ")
            };
            confirm(&format!("remove every {which} sandbox record"), yes)?;
            let path = if state.is_empty() {
                "/api/v1/sandboxes".to_owned()
            } else {
                format!("/api/v1/sandboxes?state={}", encode(&state.join(",")))
            };
            let answer: Value = ApiClient::new(&client)?.delete(&path).await?;
            if client.structured() {
                return output::structured(client.output, &answer);
            }
            outln!("pruned {} sandboxes", output::text(&answer["pruned"]))?;
            Ok(())
        }
    }
}

/// A failed create: when the control plane made a record before failing, the error
/// names it (`sandbox sbx-… failed: …`), so the operator can look at or destroy it.
fn create_failure(err: anyhow::Error) -> anyhow::Error {
    let Some(api) = err.downcast_ref::<ApiError>() else {
        return err;
    };
    match &api.sandbox_id {
        Some(id) => Exit {
            code: 1,
            message: Some(format!("sandbox {id} failed: {}", api.message)),
        }
        .into(),
        None => err,
    }
}

/// A failed whole exec: a timeout ends with 124.
fn exec_failure(err: anyhow::Error) -> anyhow::Error {
    match err.downcast_ref::<ApiError>() {
        Some(api) if api.is_timeout() => Exit {
            code: exit::TIMEOUT,
            message: Some(api.to_string()),
        }
        .into(),
        _ => err,
    }
}

/// What `sandbox list` keeps.
struct Filter {
    states: Vec<String>,
    worker: Option<String>,
    owner: Option<String>,
    labels: Vec<(String, String)>,
}

impl Filter {
    fn matches(&self, sandbox: &Value) -> bool {
        let field = |name: &str| sandbox[name].as_str().unwrap_or("");
        (self.states.is_empty() || self.states.iter().any(|s| s == field("state")))
            && self
                .worker
                .as_deref()
                .is_none_or(|w| w == field("worker_id"))
            && self.owner.as_deref().is_none_or(|o| o == field("owner_id"))
            && self
                .labels
                .iter()
                .all(|(k, v)| sandbox["metadata"][k].as_str() == Some(v.as_str()))
    }
}

/// Sandboxes as the output flags ask, as text.
fn render_list(
    sandboxes: &[Value],
    client: &ClientArgs,
    list: &ListArgs,
) -> anyhow::Result<String> {
    let structured = client.structured().then_some(client.output);
    if let Some(text) = output::list_instead_of_table(sandboxes, "id", list.quiet, structured)? {
        return Ok(text);
    }
    let wide = client.output == Format::Wide;
    let now = output::now_secs();
    let mut headers = vec![
        "ID", "STATE", "PROVIDER", "IMAGE", "WORKER", "AGE", "EXPIRES",
    ];
    if wide {
        headers.extend([
            "OWNER",
            "MEMORY",
            "VCPUS",
            "GENERATION",
            "INTERNET",
            "IDLE",
            "AUTO-STOP",
        ]);
    }
    let mut table = Table::new(&headers);
    for sandbox in sandboxes {
        let mut row = vec![
            output::text(&sandbox["id"]),
            output::text(&sandbox["state"]),
            output::text(&sandbox["provider"]),
            output::text(&sandbox["image"]),
            output::text(&sandbox["worker_id"]),
            output::age(&sandbox["created_at"], now),
            output::relative(&sandbox["expires_at"], now),
        ];
        if wide {
            row.extend([
                output::text(&sandbox["owner_id"]),
                format!("{}Mi", output::text(&sandbox["memory_mb"])),
                output::text(&sandbox["vcpus"]),
                output::text(&sandbox["generation"]),
                output::text(&sandbox["internet"]),
                // how long since it was last used
                output::age(&sandbox["last_active_at"], now),
                output::text(&sandbox["auto_stop"]),
            ]);
        }
        table.row(row);
    }
    Ok(table.render(&TableStyle::for_list(list)))
}

/// Streams an exec's NDJSON, printing output as it comes; returns the exit code. An
/// `error` line ends the command with 1, or 124 when its code is TIMEOUT.
async fn exec_streamed(api: &ApiClient, path: &str, body: &Value) -> anyhow::Result<i64> {
    let response = match api
        .raw(api.request(reqwest::Method::POST, path).json(body))
        .await
    {
        Ok(response) => response,
        Err(err) => return Err(exec_failure(err)),
    };
    let mut failure = None;
    let code = for_each_line(response, |line| {
        let event: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        Ok(match event["stream"].as_str() {
            Some("stdout") => {
                out!("{}", event["data"].as_str().unwrap_or(""))?;
                std::io::stdout().flush()?;
                None
            }
            Some("stderr") => {
                eprint!("{}", event["data"].as_str().unwrap_or(""));
                None
            }
            Some("exit") => Some(event["exit_code"].as_i64().unwrap_or(1)),
            Some("error") => {
                let code = output::text(&event["code"]);
                let status = if code == "TIMEOUT" { exit::TIMEOUT } else { 1 };
                failure = Some(Exit {
                    code: status,
                    message: Some(format!("{code}: {}", output::text(&event["message"]))),
                });
                Some(1)
            }
            _ => None,
        })
    })
    .await?;
    if let Some(failure) = failure {
        return Err(failure.into());
    }
    code.context("the stream ended without an exit status")
}

/// Calls `handle` with each line of a streamed body until it returns `Some`.
pub(crate) async fn for_each_line<T>(
    response: reqwest::Response,
    mut handle: impl FnMut(&str) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<Option<T>> {
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk.context("the stream was cut off")?);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(done) = handle(line.trim_end())? {
                return Ok(Some(done));
            }
        }
    }
    Ok(None)
}

/// Percent-encodes a query value.
pub(crate) fn encode(value: &str) -> String {
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

/// `sandbox stop` and `sandbox start`: the call, then the state it left.
async fn power(id: &str, action: &str, client: &ClientArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(client)?;
    let id = ids::sandbox(&api, id).await?;
    let sandbox: Value = api
        .post(&format!("/api/v1/sandboxes/{id}/{action}"), &json!({}))
        .await?;
    if client.structured() {
        return output::structured(client.output, &sandbox);
    }
    outln!("{id} {}", output::text(&sandbox["state"]))?;
    Ok(())
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

    #[test]
    fn list_filters_match_state_worker_owner_and_labels() {
        let sandbox = json!({"id": "sbx-1", "state": "running", "worker_id": "w1",
            "owner_id": "alice", "metadata": {"team": "a", "env": "dev"}});
        let filter = |states: &[&str], labels: &[(&str, &str)]| Filter {
            states: states.iter().map(|s| (*s).to_owned()).collect(),
            worker: Some("w1".into()),
            owner: None,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        assert!(filter(&[], &[]).matches(&sandbox));
        assert!(filter(&["lost", "running"], &[("team", "a")]).matches(&sandbox));
        assert!(!filter(&["lost"], &[]).matches(&sandbox));
        assert!(!filter(&[], &[("team", "a"), ("env", "prod")]).matches(&sandbox));
    }

    #[test]
    fn create_failures_name_the_sandbox() {
        let err = anyhow::Error::new(ApiError::for_test(503, "UNAVAILABLE", Some("sbx-9")));
        assert_eq!(
            create_failure(err).to_string(),
            "sandbox sbx-9 failed: boom"
        );
        let err = anyhow::Error::new(ApiError::for_test(408, "TIMEOUT", None));
        let Some(exit) = exec_failure(err).downcast_ref::<Exit>().map(|e| e.code) else {
            panic!("a timeout is an Exit");
        };
        assert_eq!(exit, exit::TIMEOUT);
    }
}
