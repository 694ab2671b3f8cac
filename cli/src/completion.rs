//! `berth completion bash|zsh|fish|…` and `berth man --dir DIR`: shell completion
//! scripts and man pages, both generated from the CLI's own clap definition so they
//! never drift from it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::out;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where to write berth.1 and one page per subcommand (berth-sandbox-exec.1, …).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// Prints the completion script for `args.shell`; in bash it defines `_berth`.
pub fn completion(args: &CompletionArgs, mut command: clap::Command) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "berth", &mut script);
    out!("{}", String::from_utf8_lossy(&script))?;
    Ok(())
}

/// Writes the man pages; returns how many.
pub fn man(args: &ManArgs, command: clap::Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut command = command;
    command.build();
    let mut written = Vec::new();
    write_pages(&command, "berth", &args.dir, &mut written)?;
    eprintln!(
        "wrote {} man pages to {} (berth.1 and one per subcommand)",
        written.len(),
        args.dir.display()
    );
    Ok(())
}

fn write_pages(
    command: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let page = command.clone().name(name.to_owned());
    let mut text = Vec::new();
    clap_mangen::Man::new(page).render(&mut text)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
