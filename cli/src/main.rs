//! `berth`: one binary for the control plane (`serve`), the worker agent (`worker`) and
//! the client commands. This file only parses flags, starts tracing, installs the
//! crypto provider and hands over to the command's module.

mod audit;
mod backup;
mod client;
mod completion;
mod confirm;
mod contexts;
mod copy;
mod exit;
mod ids;
mod images;
mod keys;
mod logging;
mod output;
mod ports;
mod quota;
mod sandbox;
mod secrets;
mod serve;
mod session;
mod ssh_keys;
mod status;
mod stepper;
mod teams;
mod templates;
mod tokens;
mod users;
mod version;
mod watch;
mod websocket;
mod worker;
mod workers;

use clap::{Args, CommandFactory, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit status:
  0    success
  1    an error (the message is on stderr)
  2    bad usage (unknown flag, missing argument)
  N    sandbox exec: the command's own exit status
  124  sandbox exec: the command ran out of its --timeout
  141  stdout was closed early (e.g. piped into head), as for a tool ended by SIGPIPE

Client commands find the control plane from --api-url/--api-key/--ca-file, else
BERTH_API_URL/BERTH_API_KEY/BERTH_CA_FILE, else the current context of the client
config (berth context; $BERTH_CLIENT_CONFIG or ~/.config/berth/config.yaml), else
http://127.0.0.1:7423 with the key in ./berth-data/admin.key.";

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Self-hosted sandbox fleet: control plane, worker and client",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Logging of the long-running commands (`serve`, `worker`).
#[derive(Debug, Args)]
struct LogArgs {
    /// Log output format.
    #[arg(long, env = "BERTH_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane.
    Serve {
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        args: serve::ServeArgs,
    },
    /// Run a worker that enrolls with a control plane.
    Worker {
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        args: worker::WorkerArgs,
    },
    /// Sandboxes: create, list, exec, files, logs, destroy, prune.
    Sandbox {
        #[command(subcommand)]
        command: sandbox::SandboxCommand,
    },
    /// The control plane and its fleet at a glance.
    Status {
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Join tokens for new workers.
    #[command(alias = "tokens")]
    Token {
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// API keys: create (shown once), list, revoke.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// SSH keys for the SSH gateway: add, list, remove (`ssh -p 2222 SANDBOX_ID@host`).
    #[command(name = "ssh-keys")]
    SshKeys {
        #[command(subcommand)]
        command: ssh_keys::SshKeysCommand,
    },
    /// Team secrets, write-only: set, list, delete (templates name them).
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// Images on the docker workers: push one from this machine, through the control
    /// plane (for workers without a registry).
    Images {
        #[command(subcommand)]
        command: images::ImagesCommand,
    },
    /// Templates: named environments sandboxes are made from (apply, list, get,
    /// prebuild, delete).
    Templates {
        #[command(subcommand)]
        command: templates::TemplatesCommand,
    },
    /// Teams: create, list, get, set quotas and pools, delete.
    Teams {
        #[command(subcommand)]
        command: teams::TeamsCommand,
    },
    /// A team's users: add, list, remove.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// A team's quota, its usage and the pools it may use.
    Quota(quota::QuotaArgs),
    /// Inspect and manage the fleet's workers.
    Workers {
        #[command(subcommand)]
        command: workers::WorkersCommand,
    },
    /// Control planes the client knows (the client config's contexts).
    Context {
        #[command(subcommand)]
        command: contexts::ContextCommand,
    },
    /// This client's version and the control plane's.
    Version {
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Print a shell completion script (bash: source <(berth completion bash)).
    Completion(completion::CompletionArgs),
    /// Write man pages for berth and every subcommand.
    Man(completion::ManArgs),
    /// Copy the SQLite store to FILE, consistently, while the control plane runs.
    Backup(backup::BackupArgs),
    /// Replace the SQLite store with a backup; every control plane on it must be
    /// stopped.
    Restore(backup::RestoreArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    berth_pki::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { log, args } => {
                logging::init(&log.log_format);
                serve::run(args).await
            }
            Command::Worker { log, args } => {
                logging::init(&log.log_format);
                worker::run(args).await
            }
            Command::Sandbox { command } => sandbox::run(command).await,
            Command::Token { command } => tokens::run(command).await,
            Command::Audit { command } => audit::run(command).await,
            Command::Status { client } => status::run(client).await,
            Command::Keys { command } => keys::run(command).await,
            Command::SshKeys { command } => ssh_keys::run(command).await,
            Command::Templates { command } => templates::run(command).await,
            Command::Secrets { command } => secrets::run(command).await,
            Command::Images { command } => images::run(command).await,
            Command::Teams { command } => teams::run(command).await,
            Command::Users { command } => users::run(command).await,
            Command::Quota(args) => quota::run(args).await,
            Command::Workers { command } => workers::run(command).await,
            Command::Context { command } => contexts::run(command),
            Command::Version { client } => version::run(client).await,
            Command::Completion(args) => completion::completion(&args, Cli::command()),
            Command::Man(args) => completion::man(&args, Cli::command()),
            Command::Backup(args) => backup::backup(args).await,
            Command::Restore(args) => backup::restore(args).await,
        }
    });
    // an exec's own status (0–255 by then) or one of exit.rs's
    let status = exit::status(result);
    // not waiting for blocking work: a session's stdin reader may sit in a read of
    // the terminal that only the next keystroke would end
    runtime.shutdown_background();
    std::process::ExitCode::from(u8::try_from(status & 0xff).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument and subcommand says what it is for in `--help`.
    #[test]
    fn every_flag_argument_and_subcommand_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(name.clone());
                }
                walk(sub, &name, missing);
            }
        }
        let mut command = Cli::command();
        command.build();
        let mut missing = Vec::new();
        walk(&command, "berth", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }

    /// `serve` and `worker` do not show the client's flags; the client commands do not
    /// show `--log-format`.
    #[test]
    fn client_and_server_flags_stay_apart() {
        let command = Cli::command();
        let flags = |path: &[&str]| -> Vec<String> {
            let mut cmd = &command;
            for name in path {
                cmd = cmd.find_subcommand(name).expect("subcommand");
            }
            cmd.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned))
                .collect()
        };
        for server in [&["serve"][..], &["worker"]] {
            let flags = flags(server);
            assert!(flags.contains(&"log-format".to_owned()), "{server:?}");
            for client in ["api-url", "output", "api-key", "context"] {
                assert!(
                    !flags.contains(&client.to_owned()),
                    "{server:?} has --{client}"
                );
            }
        }
        let list = flags(&["sandbox", "list"]);
        assert!(list.contains(&"api-url".to_owned()));
        assert!(!list.contains(&"log-format".to_owned()));
        Cli::command().debug_assert();
    }
}
