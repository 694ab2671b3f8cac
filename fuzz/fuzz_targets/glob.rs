//! Glob patterns (`?pattern=` of the files/glob route) matched against sandbox paths
//! (which the sandbox itself controls under the docker provider).
//!
//! Input: `pattern\npath`, both normalized first as the providers do.
//!
//! Checks: nothing panics or hangs; the matcher agrees with a plain reference matcher
//! (segment-wise, `**` over whole segments); a match lies under the pattern's base at
//! most `max_depth` segments down, which is what lets the providers walk only there.
#![no_main]

use berth_worker::fuzzing::{Pattern, match_segment, normalize, split};
use libfuzzer_sys::fuzz_target;

/// `*` and `?` within one segment, by the textbook table.
fn reference_segment(pattern: &[char], name: &[char]) -> bool {
    let mut table = vec![vec![false; name.len() + 1]; pattern.len() + 1];
    table[pattern.len()][name.len()] = true;
    for p in (0..pattern.len()).rev() {
        for n in (0..=name.len()).rev() {
            table[p][n] = match pattern[p] {
                '*' => table[p + 1][n] || (n < name.len() && table[p][n + 1]),
                '?' => n < name.len() && table[p + 1][n + 1],
                c => n < name.len() && name[n] == c && table[p + 1][n + 1],
            };
        }
    }
    table[0][0]
}

/// Whole paths: `**` swallows zero or more segments.
fn reference_path(pattern: &[&str], path: &[&str]) -> bool {
    let mut table = vec![vec![false; path.len() + 1]; pattern.len() + 1];
    table[pattern.len()][path.len()] = true;
    for p in (0..pattern.len()).rev() {
        for n in (0..=path.len()).rev() {
            table[p][n] = if pattern[p] == "**" {
                table[p + 1][n] || (n < path.len() && table[p][n + 1])
            } else {
                n < path.len() && {
                    let segment: Vec<char> = pattern[p].chars().collect();
                    let name: Vec<char> = path[n].chars().collect();
                    reference_segment(&segment, &name) && table[p + 1][n + 1]
                }
            };
        }
    }
    table[0][0]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, path) = text.split_once('\n').unwrap_or((text, ""));
    // segment matching on the raw text too
    let pattern_chars: Vec<char> = pattern.chars().collect();
    let path_chars: Vec<char> = path.chars().collect();
    assert_eq!(
        match_segment(pattern, path),
        reference_segment(&pattern_chars, &path_chars),
        "segment {pattern:?} against {path:?}"
    );
    let (Ok(pattern), Ok(path)) = (normalize(pattern), normalize(path)) else {
        return;
    };
    let compiled = Pattern::new(&pattern);
    let matched = compiled.matches(&path);
    assert_eq!(
        matched,
        reference_path(&split(&pattern), &split(&path)),
        "{pattern:?} against {path:?}"
    );
    if matched {
        let base = compiled.base();
        let below = if base == "/" {
            Some(path.as_str())
        } else if path == base {
            Some("")
        } else {
            path.strip_prefix(&format!("{base}/"))
        };
        let below = below.unwrap_or_else(|| panic!("{path:?} matched but is not under {base:?}"));
        if let Some(depth) = compiled.max_depth() {
            assert!(
                split(below).len() <= depth,
                "{path:?} is deeper than {depth}"
            );
        }
    }
});
