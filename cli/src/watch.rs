//! `--watch`: show a command's output again every 2 s. On a terminal the screen is
//! cleared and redrawn in place (ANSI clear + home); otherwise (a pipe, a file) the
//! output is printed again only when it changed, so a log of it stays readable. The
//! watch runs until interrupted; a failed refresh is shown in place of the output and
//! the watch goes on (a control plane restarting is worth watching through).

use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use crate::out;

pub const INTERVAL: Duration = Duration::from_secs(2);

/// Calls `render` every [`INTERVAL`] and shows what it returns; the first failure is
/// returned (the arguments are likely wrong), later ones are shown.
pub async fn run<F, Fut>(mut render: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let terminal = std::io::stdout().is_terminal();
    let mut last: Option<String> = None;
    let mut first = true;
    loop {
        let text = match render().await {
            Ok(text) => text,
            Err(err) if first => return Err(err),
            Err(err) => format!("error: {err:#}\n"),
        };
        first = false;
        if terminal {
            out!("\x1b[2J\x1b[H{text}")?;
        } else if last.as_deref() != Some(text.as_str()) {
            out!("{text}")?;
        }
        last = Some(text);
        tokio::time::sleep(INTERVAL).await;
    }
}
