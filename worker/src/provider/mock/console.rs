//! A mock sandbox's console log: a bounded ring of the latest lines plus a broadcast
//! channel for followers. Appending never waits on a reader: a follower that falls
//! behind skips lines instead of holding the sandbox back. The broadcast channel
//! exists only while someone follows, so idle sandboxes stay small.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::provider::LogLine;

/// Lines kept per sandbox.
const RING_LINES: usize = 10_000;
/// Lines a follower may fall behind before it skips.
const FOLLOW_BUFFER: usize = 1024;
/// Capacity of the channel handed to a reader.
const READER_BUFFER: usize = 64;

#[derive(Debug)]
pub struct Console {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ring: VecDeque<LogLine>,
    /// Present while someone follows.
    live: Option<broadcast::Sender<LogLine>>,
}

impl Console {
    pub fn new() -> Self {
        Self {
            inner: Mutex::default(),
        }
    }

    pub fn append(&self, line: impl Into<String>) {
        let line = LogLine {
            time_ms: now_ms(),
            line: line.into(),
        };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.ring.len() == RING_LINES {
            inner.ring.pop_front();
        }
        inner.ring.push_back(line.clone());
        // Sent under the lock so a new follower sees each line exactly once: either
        // in its tail snapshot or live.
        if let Some(live) = &inner.live
            && live.send(line).is_err()
        {
            // Every follower has gone.
            inner.live = None;
        }
    }

    /// The last `tail` lines, then with `follow` new lines until `ended` fires or the
    /// receiver is dropped.
    pub fn reader(
        &self,
        tail: usize,
        follow: bool,
        ended: CancellationToken,
        tasks: &TaskTracker,
    ) -> mpsc::Receiver<LogLine> {
        let (history, live) = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let skip = inner.ring.len().saturating_sub(tail);
            let history: Vec<LogLine> = inner.ring.iter().skip(skip).cloned().collect();
            let live = follow.then(|| {
                let sender = inner
                    .live
                    .get_or_insert_with(|| broadcast::channel(FOLLOW_BUFFER).0);
                sender.subscribe()
            });
            (history, live)
        };
        let (tx, rx) = mpsc::channel(READER_BUFFER);
        tasks.spawn(async move {
            for line in history {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            let Some(mut live) = live else { return };
            loop {
                // Biased: lines appended before the sandbox ended are delivered first.
                let line = tokio::select! {
                    biased;
                    received = live.recv() => received,
                    () = ended.cancelled() => return,
                    () = tx.closed() => return,
                };
                match line {
                    Ok(line) => {
                        // A reader that stops reading must not outlive the sandbox.
                        tokio::select! {
                            biased;
                            sent = tx.send(line) => if sent.is_err() { return },
                            () = ended.cancelled() => return,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ring_keeps_the_latest_lines() {
        let console = Console::new();
        for i in 0..RING_LINES + 5 {
            console.append(format!("line {i}"));
        }
        let tasks = TaskTracker::new();
        let mut rx = console.reader(2, false, CancellationToken::new(), &tasks);
        assert_eq!(
            rx.recv().await.unwrap().line,
            format!("line {}", RING_LINES + 3)
        );
        assert_eq!(
            rx.recv().await.unwrap().line,
            format!("line {}", RING_LINES + 4)
        );
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_lagging_follower_skips_but_keeps_following() {
        let console = Console::new();
        let ended = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut rx = console.reader(0, true, ended.clone(), &tasks);
        for i in 0..5000 {
            console.append(format!("line {i}"));
        }
        let mut last = String::new();
        while last != "line 4999" {
            last = rx.recv().await.unwrap().line;
        }
        console.append("after");
        assert_eq!(rx.recv().await.unwrap().line, "after");
        ended.cancel();
        assert!(rx.recv().await.is_none());
    }
}
