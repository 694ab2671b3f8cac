//! Tracing for the long-running commands: `RUST_LOG`-style filtering (default `info`),
//! plain or JSON lines on stderr; plain lines are coloured only on a terminal and
//! without `NO_COLOR`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,h2=warn,hyper=warn,tower=warn,sqlx=warn"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(no_color, std::io::stderr().is_terminal()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// ANSI colour only for a person at a terminal who did not ask for none
/// (<https://no-color.org>: any non-empty `NO_COLOR`).
fn colour(no_color: bool, terminal: bool) -> bool {
    terminal && !no_color
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(colour(false, true));
        assert!(!colour(true, true));
        assert!(!colour(false, false));
        assert!(!colour(true, false));
    }
}
