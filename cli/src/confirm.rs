//! Confirmation before destructive commands (`workers revoke`, `workers rm --force`,
//! `sandbox prune`): `--yes` skips it; on a terminal the question is asked on stderr;
//! without a terminal on stdin and without `--yes` the command refuses.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;

/// Returns when the operator agreed to `action` (or passed `--yes`).
pub fn confirm(action: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {action} without confirmation: stdin is not a terminal; pass --yes");
    }
    eprint!("{action}? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if is_yes(&answer) {
        return Ok(());
    }
    bail!("cancelled: did not {action}")
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_agrees() {
        assert!(is_yes("y\n") && is_yes(" YES ") && is_yes("yes"));
        assert!(!is_yes("") && !is_yes("n") && !is_yes("yess"));
        assert!(confirm("do it", true).is_ok());
    }
}
