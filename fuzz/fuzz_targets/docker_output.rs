//! What the docker provider parses from a sandbox's commands and the engine: `stat`
//! lines, the helper's `list` records (names and stat output come from inside the
//! sandbox) and timestamped log lines; and the control plane's RFC 3339 rendering of
//! the times those carry, which is where a worker's file info ends up.
//!
//! Input: first byte picks the parser, the rest is the output.
//!
//! Checks: nothing panics; modes are permission bits only; directories have no size;
//! listed paths are under the listed directory; log lines lose only their line end;
//! any reported time renders as RFC 3339.
#![no_main]

use berth_controlplane::fuzzing::rfc3339;
use berth_worker::fuzzing::{FileInfo, parse_line, parse_list, parse_stat};
use libfuzzer_sys::fuzz_target;

fn check_info(info: &FileInfo) {
    assert!(info.mode <= 0o7777);
    if info.is_dir {
        assert_eq!(info.size, 0);
    }
    // the control plane shows every file's mtime
    let shown = rfc3339(info.mod_time);
    assert!(humantime::parse_rfc3339(&shown).is_ok(), "{shown:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(line) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(info) = parse_stat("/workspace/f", line) {
                assert_eq!(info.path, "/workspace/f");
                check_info(&info);
            }
        }
        1 => {
            for dir in ["/", "/workspace"] {
                let Ok(files) = parse_list(dir, rest) else {
                    continue;
                };
                // each record takes one NUL and one newline
                assert!(files.len() <= rest.iter().filter(|b| **b == b'\n').count());
                assert!(files.len() <= rest.iter().filter(|b| **b == 0).count());
                for info in &files {
                    let prefix = if dir == "/" {
                        "/".to_owned()
                    } else {
                        format!("{dir}/")
                    };
                    assert!(info.path.starts_with(&prefix));
                    check_info(info);
                }
            }
        }
        _ => {
            let line = parse_line(rest);
            assert!(!line.line.ends_with(['\n', '\r']));
            assert!(line.time_ms >= 0);
            let shown = rfc3339(line.time_ms / 1000);
            assert!(humantime::parse_rfc3339(&shown).is_ok());
        }
    }
});
