//! The NDJSON framing of a streamed exec (`POST /sandboxes/{id}/exec` with `stream`):
//! the command's output bytes (whatever the sandbox prints, cut into chunks wherever
//! the worker's reads fell) become text without splitting a character, then one JSON
//! object per line.
//!
//! Input: first byte n, then n chunk sizes (cycled), then the output bytes.
//!
//! Checks: nothing panics; the text sent is exactly the lossy UTF-8 of all the bytes
//! (no byte lost, duplicated or reordered, however they were cut); every line is one
//! JSON object ending in the only newline of the line, and gives the text back.
#![no_main]

use berth_controlplane::fuzzing::{ExecStream, Utf8Carry, output_line};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn frame(stream: ExecStream, label: &str, text: &str) {
    let line = output_line(stream, text);
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
    let value: Value = serde_json::from_slice(&line).expect("each line is JSON");
    assert_eq!(value["stream"], label);
    assert_eq!(value["data"].as_str(), Some(text));
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count).min(rest.len());
    let (sizes, output) = rest.split_at(count);
    let mut carry = Utf8Carry::default();
    let mut sent = String::new();
    let mut at = 0;
    let mut turn = 0;
    while at < output.len() {
        let size = sizes
            .get(turn % sizes.len().max(1))
            .map_or(7, |s| usize::from(*s).max(1));
        let end = (at + size).min(output.len());
        turn += 1;
        let text = carry.push(output[at..end].to_vec());
        at = end;
        if !text.is_empty() {
            frame(ExecStream::Stdout, "stdout", &text);
        }
        sent.push_str(&text);
    }
    // a final newline completes or refuses whatever is still held back
    let last = carry.push(b"\n".to_vec());
    frame(ExecStream::Stderr, "stderr", &last);
    sent.push_str(&last);
    let mut whole = output.to_vec();
    whole.push(b'\n');
    assert_eq!(sent, String::from_utf8_lossy(&whole));
});
