//! `berth backup FILE` and `berth restore FILE`: the store `berth serve` would open
//! (the same `--config`, `--data-dir` and `--database-url`, and their `BERTH_*`
//! variables) copied out while it runs, or replaced while it is stopped. The work is
//! `berth_controlplane::store::backup`'s; this only finds the store and reports.

use std::path::PathBuf;

use berth_cli::serve_config::ServeConfig;
use berth_controlplane::store::backup::{self, StoreContents};
use clap::Args;

/// Where the store is, found the way `berth serve` finds it.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The YAML config file `berth serve` uses.
    #[arg(long, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// The data dir `berth serve` uses (the store is its berth.db).
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The database url `berth serve` uses (sqlite:…; postgres:// is refused, with the
    /// pg_dump command to use instead).
    #[arg(long, env = "BERTH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl StoreArgs {
    /// The database url in force, as `berth serve` would resolve it.
    fn database_url(self) -> anyhow::Result<String> {
        let mut serve = match &self.config {
            Some(path) => ServeConfig::from_file(path)?,
            None => ServeConfig::default(),
        };
        let config = &mut serve.control_plane;
        if let Some(value) = self.data_dir {
            config.data_dir = value;
        }
        if let Some(value) = self.database_url {
            config.database.url = value;
            config.database.url_file = None;
        }
        Ok(config.database_url()?)
    }
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy.
    file: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file `berth backup` wrote.
    file: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let url = args.store.database_url()?;
    let report = backup::backup(&url, &args.file, args.force).await?;
    println!(
        "backup written to {} ({} bytes): integrity ok",
        report.path.display(),
        report.bytes
    );
    print_contents(&report.contents);
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let url = args.store.database_url()?;
    let report = backup::restore(&url, &args.file).await?;
    println!(
        "store {} restored from {}",
        report.store.display(),
        args.file.display()
    );
    print_contents(&report.contents);
    match &report.previous {
        Some(previous) => println!("the previous store is kept as {}", previous.display()),
        None => println!("there was no previous store"),
    }
    Ok(())
}

fn print_contents(contents: &StoreContents) {
    println!(
        "  schema version {}: {} workers, {} sandboxes, {} api keys, {} audit records",
        contents.schema_version,
        contents.workers,
        contents.sandboxes,
        contents.api_keys,
        contents.audit_records
    );
}
