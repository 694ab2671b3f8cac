//! `berth`: one binary for the control plane (`serve`), the worker agent (`worker`) and
//! the client commands. This file only parses flags, starts tracing, installs the
//! crypto provider and hands over to the command's module.

mod audit;
mod backup;
mod client;
mod copy;
mod logging;
mod output;
mod sandbox;
mod serve;
mod status;
mod tokens;
mod worker;
mod workers;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Self-hosted sandbox fleet: control plane, worker and client"
)]
struct Cli {
    /// Log output format.
    #[arg(long, global = true, env = "BERTH_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane.
    Serve(serve::ServeArgs),
    /// Run a worker that enrolls with a control plane.
    Worker(worker::WorkerArgs),
    /// Sandboxes: create, exec, files, logs, destroy.
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
    Token {
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// Inspect the fleet's workers.
    Workers {
        #[command(subcommand)]
        command: workers::WorkersCommand,
    },
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
            Command::Serve(args) => {
                logging::init(&cli.log_format);
                serve::run(args).await
            }
            Command::Worker(args) => {
                logging::init(&cli.log_format);
                worker::run(args).await
            }
            Command::Sandbox { command } => sandbox::run(command).await,
            Command::Token { command } => tokens::run(command).await,
            Command::Audit { command } => audit::run(command).await,
            Command::Status { client } => status::run(client).await,
            Command::Workers { command } => workers::run(command).await,
            Command::Backup(args) => backup::backup(args).await,
            Command::Restore(args) => backup::restore(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
