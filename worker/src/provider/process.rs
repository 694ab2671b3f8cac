//! Interactive processes: a command with stdin, an optional terminal, resizes and
//! signals, as a provider runs it for a session (`crate::sessions`). The provider
//! knows nothing of sessions, buffers or clients: it starts the command, takes
//! [`ProcessInput`]s and reports [`ExecEvent`]s, exactly one `Exit` or `Failed` last.
//! Dropping the event receiver ends the command, as for `exec_stream`.

use std::fmt;

use tokio::sync::mpsc;

use super::{ExecEvent, ExecSpec};

/// Capacity of a process's input channel: a client typing faster than the command
/// reads waits, it does not queue without bound.
pub const INPUT_BUFFER: usize = 16;

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

impl TermSize {
    pub const DEFAULT: Self = Self { cols: 80, rows: 24 };

    /// `0` in either field takes the default's.
    pub fn or_default(cols: u32, rows: u32) -> Self {
        let pick = |value: u32, default: u16| match value {
            0 => default,
            value => u16::try_from(value).unwrap_or(u16::MAX),
        };
        Self {
            cols: pick(cols, Self::DEFAULT.cols),
            rows: pick(rows, Self::DEFAULT.rows),
        }
    }
}

impl fmt::Display for TermSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.cols, self.rows)
    }
}

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub exec: ExecSpec,
    /// A terminal of this size (stdout and stderr merge into stdout), or none.
    pub tty: Option<TermSize>,
    /// Whether stdin is open; closed, the command reads end-of-file at once.
    pub stdin: bool,
}

/// A signal by its POSIX number (Linux numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("WINCH", 28),
];

impl Signal {
    pub const INT: Self = Self(2);
    pub const KILL: Self = Self(9);
    pub const TERM: Self = Self(15);

    /// `SIGINT`, `INT`, `int` or `2`; only the signals a client has reason to send.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(number) = text.parse::<i32>() {
            return SIGNALS
                .iter()
                .find(|(_, n)| *n == number)
                .map(|(_, n)| Self(*n))
                .ok_or_else(|| format!("unknown signal {text:?}"));
        }
        let upper = text.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        SIGNALS
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, n)| Self(*n))
            .ok_or_else(|| {
                format!(
                    "unknown signal {text:?}: one of {}",
                    SIGNALS
                        .iter()
                        .map(|(name, _)| format!("SIG{name}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// The signal whose death shows as this exit status (128 + n), if it is one.
    pub fn from_exit_code(code: i32) -> Option<Self> {
        let number = code.checked_sub(128)?;
        SIGNALS
            .iter()
            .find(|(_, n)| *n == number)
            .map(|(_, n)| Self(*n))
    }

    pub fn number(self) -> i32 {
        self.0
    }

    /// `SIGINT`, ...
    pub fn name(self) -> String {
        SIGNALS.iter().find(|(_, n)| *n == self.0).map_or_else(
            || format!("SIG{}", self.0),
            |(name, _)| format!("SIG{name}"),
        )
    }

    /// The exit status of a command this signal ended.
    pub fn exit_code(self) -> i32 {
        128 + self.0
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// What a session sends to its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessInput {
    Stdin(Vec<u8>),
    /// Close stdin.
    Eof,
    Resize(TermSize),
    /// To every process of the command.
    Signal(Signal),
}

/// A started process: its events, and where its input goes. Dropping `input` closes
/// stdin; dropping `events` ends the command.
#[derive(Debug)]
pub struct Process {
    pub events: mpsc::Receiver<ExecEvent>,
    pub input: mpsc::Sender<ProcessInput>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(Signal::parse("SIGINT"), Ok(Signal::INT));
        assert_eq!(Signal::parse("int"), Ok(Signal::INT));
        assert_eq!(Signal::parse("15"), Ok(Signal::TERM));
        assert!(Signal::parse("SIGFOO").unwrap_err().contains("SIGTERM"));
        assert!(Signal::parse("99").is_err());
        assert_eq!(Signal::KILL.name(), "SIGKILL");
        assert_eq!(Signal::from_exit_code(130), Some(Signal::INT));
        assert_eq!(Signal::from_exit_code(7), None);
    }

    #[test]
    fn zero_sizes_take_the_default() {
        assert_eq!(TermSize::or_default(0, 0), TermSize::DEFAULT);
        assert_eq!(
            TermSize::or_default(120, 0),
            TermSize {
                cols: 120,
                rows: 24
            }
        );
    }
}
