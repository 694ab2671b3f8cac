//! Printing results: aligned tables for people (`-o table`, `-o wide`), JSON or YAML for
//! scripts (`-o json|yaml`), ids alone for `-q`; colour only on a terminal without
//! `NO_COLOR`; and the `outln!`/`out!` macros every client command prints through, which
//! return the write's error instead of panicking, so a closed pipe (`| head`) ends the
//! command quietly in `main` (see `exit.rs`).

use std::io::{IsTerminal, Write};

use clap::{Args, ValueEnum};
use serde_json::Value;

/// `println!` that returns the write's `io::Result` instead of panicking on a closed
/// stdout.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that returns the write's `io::Result` instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

pub fn write_stdout(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    std::io::stdout().lock().write_fmt(args)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table.
    Table,
    /// A table with more columns.
    Wide,
    /// JSON, as the API answered it.
    Json,
    /// YAML, as the API answered it.
    Yaml,
}

/// How list-like commands print, besides `-o`.
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    /// Print tables without their header line.
    #[arg(long)]
    pub no_headers: bool,
    /// Print only the ids, one a line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Redraw every 2 s (on a terminal), or print again whenever the output changes.
    #[arg(short, long)]
    pub watch: bool,
}

/// How a table is drawn.
#[derive(Debug, Clone, Copy)]
pub struct TableStyle {
    pub headers: bool,
    pub colour: bool,
}

impl Default for TableStyle {
    fn default() -> Self {
        Self {
            headers: true,
            colour: colour_enabled(),
        }
    }
}

impl TableStyle {
    pub fn for_list(list: &ListArgs) -> Self {
        Self {
            headers: !list.no_headers,
            ..Self::default()
        }
    }
}

/// Colour on stdout: only on a terminal, and never with `NO_COLOR` set (non-empty).
pub fn colour_enabled() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// Rows under headers, columns padded to their widest cell; STATE and STATUS cells
/// coloured when the style allows.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self, style: &TableStyle) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let coloured: Vec<bool> = self
            .headers
            .iter()
            .map(|h| style.colour && (h == "STATE" || h == "STATUS"))
            .collect();
        let mut text = String::new();
        let mut line = |cells: &[String], paint: bool| {
            let mut out = String::new();
            for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                if index > 0 {
                    out.push_str("  ");
                }
                let padding = width.saturating_sub(cell.chars().count());
                if paint && coloured[index] {
                    out.push_str(&paint_state(cell));
                } else {
                    out.push_str(cell);
                }
                out.push_str(&" ".repeat(padding));
            }
            text.push_str(out.trim_end());
            text.push('\n');
        };
        if style.headers {
            line(&self.headers, false);
        }
        for row in &self.rows {
            line(row, true);
        }
        text
    }

    pub fn print(&self, style: &TableStyle) -> anyhow::Result<()> {
        crate::out!("{}", self.render(style))?;
        Ok(())
    }
}

/// A state or status word in its colour: green when well, yellow in between, red when
/// something is wrong.
fn paint_state(word: &str) -> String {
    let code = match word {
        "online" | "running" => "32",
        "cordoned" | "draining" | "creating" | "stopped" | "paused" | "destroying" => "33",
        "unhealthy" | "offline" | "revoked" | "lost" | "error" | "failed" => "31",
        "drained" | "expired" | "destroyed" => "2",
        _ => return word.to_owned(),
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

/// Prints `value` as JSON or YAML.
pub fn structured(format: Format, value: &Value) -> anyhow::Result<()> {
    match format {
        Format::Yaml => crate::out!("{}", serde_yaml_ng::to_string(value)?)?,
        _ => crate::outln!("{}", serde_json::to_string_pretty(value)?)?,
    }
    Ok(())
}

/// `value` as JSON or YAML text, as [`structured`] prints it.
pub fn structured_text(format: Format, value: &Value) -> anyhow::Result<String> {
    Ok(match format {
        Format::Yaml => serde_yaml_ng::to_string(value)?,
        _ => serde_json::to_string_pretty(value)? + "\n",
    })
}

/// What a list command prints instead of its table, if anything: with `-q` each
/// item's `field`, one a line; with `-o json|yaml` (`structured`) the items as one
/// document.
pub fn list_instead_of_table(
    items: &[Value],
    field: &str,
    quiet: bool,
    structured: Option<Format>,
) -> anyhow::Result<Option<String>> {
    if quiet {
        let lines: Vec<String> = items.iter().map(|item| text(&item[field]) + "\n").collect();
        return Ok(Some(lines.concat()));
    }
    match structured {
        Some(format) => Ok(Some(structured_text(
            format,
            &Value::Array(items.to_vec()),
        )?)),
        None => Ok(None),
    }
}

/// A JSON field as table text.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// A time the API answered, as unix seconds: an RFC 3339 string (what the API answers
/// now) or a number, which older control planes answered for worker times, some in
/// milliseconds (`last_heartbeat`) and some in seconds (`enrolled_at`): numbers below
/// 10^11 are taken as seconds (10^11 s is the year 5138; 10^11 ms is 1973).
pub fn unix_secs(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => {
            let time = humantime::parse_rfc3339_weak(text.trim()).ok()?;
            let secs = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
            i64::try_from(secs).ok()
        }
        Value::Number(number) => number.as_i64().map(|n| {
            if n.abs() < 100_000_000_000 {
                n
            } else {
                n.div_euclid(1000)
            }
        }),
        _ => None,
    }
}

/// A time as `6m ago` or `in 23h` from `now` (unix seconds); `never` when absent.
pub fn relative(value: &Value, now: i64) -> String {
    match unix_secs(value) {
        Some(time) if time <= now => format!("{} ago", span(now - time)),
        Some(time) => format!("in {}", span(time - now)),
        None if value.is_null() => "never".to_owned(),
        None => text(value),
    }
}

/// How long ago a time was, as an age column shows it (`6m`); `-` when absent.
pub fn age(value: &Value, now: i64) -> String {
    unix_secs(value).map_or("-".to_owned(), |time| span((now - time).max(0)))
}

/// Seconds in one unit, kubectl-like: `45s`, `6m`, `23h`, `12d`.
pub fn span(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 120 {
        format!("{secs}s")
    } else if secs < 120 * 60 {
        format!("{}m", secs / 60)
    } else if secs < 48 * 3600 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}d", secs / 86400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_renders_json_values_for_tables() {
        assert_eq!(text(&Value::Null), "-");
        assert_eq!(text(&json!("a")), "a");
        assert_eq!(text(&json!("")), "-");
        assert_eq!(text(&json!(3)), "3");
    }

    #[test]
    fn times_are_read_in_both_forms_and_shown_relative() {
        let now = unix_secs(&json!("2026-12-04T17:40:00Z")).unwrap();
        assert_eq!(unix_secs(&json!(now * 1000 + 999)), Some(now));
        assert_eq!(unix_secs(&json!(now)), Some(now));
        assert_eq!(relative(&json!("2026-12-04T17:34:00Z"), now), "6m ago");
        assert_eq!(relative(&json!("2026-12-05T16:40:00Z"), now), "in 23h");
        assert_eq!(relative(&json!((now - 10) * 1000), now), "10s ago");
        assert_eq!(relative(&Value::Null, now), "never");
        assert_eq!(age(&json!("2026-11-30T17:40:00Z"), now), "4d");
        assert_eq!(age(&Value::Null, now), "-");
        assert_eq!(span(119), "119s");
        assert_eq!(span(7199), "119m");
    }

    #[test]
    fn tables_align_and_colour_only_when_asked() {
        let mut table = Table::new(&["ID", "STATUS", "X"]);
        table.row(vec!["w1".into(), "online".into(), "".into()]);
        table.row(vec!["worker-2".into(), "revoked".into(), "1".into()]);
        let plain = TableStyle {
            headers: true,
            colour: false,
        };
        assert_eq!(
            table.render(&plain),
            "ID        STATUS   X\nw1        online\nworker-2  revoked  1\n"
        );
        let bare = TableStyle {
            headers: false,
            colour: true,
        };
        let text = table.render(&bare);
        assert!(!text.contains("ID"));
        assert!(
            text.starts_with("w1        \x1b[32monline\x1b[0m"),
            "{text:?}"
        );
    }
}
