//! Printing results: aligned tables for people, JSON for scripts (`-o json`).

use serde_json::Value;

/// Prints `rows` under `headers`, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A JSON field as table text.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Unix milliseconds as "12s ago".
pub fn ago_ms(value: &Value, now_ms: i64) -> String {
    match value.as_i64() {
        Some(ms) => {
            let secs = (now_ms - ms).max(0) / 1000;
            format!("{secs}s ago")
        }
        None => "never".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_renders_json_values_for_tables() {
        assert_eq!(text(&Value::Null), "-");
        assert_eq!(text(&serde_json::json!("a")), "a");
        assert_eq!(text(&serde_json::json!(3)), "3");
        assert_eq!(ago_ms(&serde_json::json!(1_000), 11_000), "10s ago");
        assert_eq!(ago_ms(&Value::Null, 11_000), "never");
    }
}
