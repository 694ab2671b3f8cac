//! Collecting a whole exec's output within a bound. Stdout and stderr share one budget
//! of bytes, spent in the order the output arrives, so an answer never carries more
//! than the budget whichever stream the command writes to. Past it the rest is read
//! and dropped: the command is never held back, runs to its real end and exit code,
//! and the result says it was truncated. A stream that lost bytes ends at its last
//! whole UTF-8 character, so cut text does not end in half a character (at most three
//! bytes fewer than the budget).

/// The limit a worker applies unless configured otherwise.
pub const DEFAULT_MAX_EXEC_OUTPUT: usize = 16 << 20;

/// The output of one command, collected up to `limit` bytes.
#[derive(Debug)]
pub struct Capture {
    limit: usize,
    stdout: Kept,
    stderr: Kept,
}

#[derive(Debug, Default)]
struct Kept {
    bytes: Vec<u8>,
    /// Bytes of this stream were dropped.
    cut: bool,
}

impl Kept {
    fn take(&mut self, data: &[u8], room: usize) {
        let len = data.len().min(room);
        self.bytes.extend_from_slice(&data[..len]);
        self.cut |= len < data.len();
    }

    fn finish(mut self) -> Vec<u8> {
        if self.cut {
            let end = incomplete_tail(&self.bytes);
            self.bytes.truncate(end);
        }
        self.bytes
    }
}

/// What was kept: stdout, stderr, and whether anything was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

impl Capture {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            stdout: Kept::default(),
            stderr: Kept::default(),
        }
    }

    pub fn stdout(&mut self, data: &[u8]) {
        let room = self.room();
        self.stdout.take(data, room);
    }

    pub fn stderr(&mut self, data: &[u8]) {
        let room = self.room();
        self.stderr.take(data, room);
    }

    fn room(&self) -> usize {
        self.limit
            .saturating_sub(self.stdout.bytes.len() + self.stderr.bytes.len())
    }

    pub fn finish(self) -> Captured {
        let truncated = self.stdout.cut || self.stderr.cut;
        Captured {
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
            truncated,
        }
    }
}

/// Where a character cut off by the end of `bytes` starts (`bytes.len()` when none is).
fn incomplete_tail(bytes: &[u8]) -> usize {
    let earliest = bytes.len().saturating_sub(3);
    for start in (earliest..bytes.len()).rev() {
        // the lead byte of a multi-byte character
        if bytes[start] >= 0xc0 {
            return match std::str::from_utf8(&bytes[start..]) {
                Err(err) if err.valid_up_to() == 0 && err.error_len().is_none() => start,
                _ => bytes.len(),
            };
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_within_the_limit_is_kept_whole() {
        let mut capture = Capture::new(10);
        capture.stdout(b"hello");
        capture.stderr(b"world");
        assert_eq!(
            capture.finish(),
            Captured {
                stdout: b"hello".to_vec(),
                stderr: b"world".to_vec(),
                truncated: false,
            }
        );
    }

    #[test]
    fn stdout_and_stderr_share_one_budget_in_arrival_order() {
        let mut capture = Capture::new(8);
        capture.stdout(b"abc");
        capture.stderr(b"defg");
        capture.stdout(b"hijk");
        capture.stderr(b"lmn");
        assert_eq!(
            capture.finish(),
            Captured {
                stdout: b"abch".to_vec(),
                stderr: b"defg".to_vec(),
                truncated: true,
            }
        );
    }

    #[test]
    fn a_cut_stream_ends_at_a_whole_character() {
        // "é" is two bytes: the budget ends in its middle
        let mut capture = Capture::new(4);
        capture.stdout("abcé".as_bytes());
        let captured = capture.finish();
        assert_eq!(captured.stdout, b"abc");
        assert!(captured.truncated);

        // a stream that was not cut keeps its bytes as they came, even half a character
        let mut capture = Capture::new(4);
        capture.stderr(&"é".as_bytes()[..1]);
        capture.stdout(b"xyz!");
        let captured = capture.finish();
        assert_eq!(captured.stderr, &"é".as_bytes()[..1]);
        assert_eq!(captured.stdout, b"xyz");
        assert!(captured.truncated);
    }

    #[test]
    fn binary_output_is_cut_at_the_limit() {
        let mut capture = Capture::new(5);
        capture.stdout(&[0xff; 3]);
        capture.stdout(&[0x00; 3]);
        let captured = capture.finish();
        assert_eq!(captured.stdout, [0xff, 0xff, 0xff, 0x00, 0x00]);
        assert!(captured.truncated);
    }
}
