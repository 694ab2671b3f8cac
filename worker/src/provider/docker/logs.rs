//! A sandbox's console: its container's stdout and stderr as the engine logged them,
//! interleaved in the order written, with the engine's timestamps; the last `tail`
//! lines, then with `follow` new ones until the container goes or the receiver is
//! dropped. A slow reader holds the follower back (the engine keeps the log on disk).

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::now_secs;
use crate::provider::LogLine;

/// Capacity of the channel handed to a reader.
const READER_BUFFER: usize = 64;

pub fn read(
    docker: &Docker,
    container: &str,
    tail: usize,
    follow: bool,
    tasks: &TaskTracker,
) -> mpsc::Receiver<LogLine> {
    let options = LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        timestamps: true,
        tail: tail.to_string(),
        ..Default::default()
    };
    let mut stream = docker.logs(container, Some(options)).boxed();
    let (tx, rx) = mpsc::channel(READER_BUFFER);
    tasks.spawn(
        async move {
            loop {
                let item = tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    item = stream.next() => item,
                };
                let message = match item {
                    Some(Ok(
                        LogOutput::StdOut { message }
                        | LogOutput::StdErr { message }
                        | LogOutput::Console { message },
                    )) => message,
                    Some(Ok(LogOutput::StdIn { .. })) => continue,
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, "a log stream ended early");
                        return;
                    }
                    None => return,
                };
                if tx.send(parse_line(&message)).await.is_err() {
                    return;
                }
            }
        }
        .in_current_span(),
    );
    rx
}

/// `2026-01-02T03:04:05.123456789Z text\n` as the engine sends a timestamped line.
pub fn parse_line(raw: &[u8]) -> LogLine {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\n', '\r']);
    if let Some((stamp, line)) = text.split_once(' ')
        && let Ok(time) = humantime::parse_rfc3339(stamp)
    {
        let time_ms = time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
            });
        return LogLine {
            time_ms,
            line: line.to_owned(),
        };
    }
    LogLine {
        time_ms: now_secs() * 1000,
        line: text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_split_off() {
        let line = parse_line(b"2026-01-02T03:04:05.123456789Z hello world\n");
        assert_eq!(line.line, "hello world");
        assert_eq!(line.time_ms, 1_767_323_045_123);
        let bare = parse_line(b"no stamp here\r\n");
        assert_eq!(bare.line, "no stamp here");
    }
}
