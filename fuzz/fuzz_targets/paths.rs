//! Sandbox path rules (`paths::normalize_in`, used by every file call and by the mock
//! shell for each path a command names) and the docker provider's symlink resolution.
//!
//! Input: `cwd\npath` (a cwd is normalized first, as the shell's is), or just a path
//! taken from `/workspace`.
//!
//! Checks: nothing panics; an accepted path is absolute, has no empty, `.` or `..`
//! segment and no NUL, is a fixed point of normalization, stays under the cwd when it
//! was relative, and names exactly the segments the caller wrote; `parent` is a
//! normalized prefix; a resolved link is absolute and free of `..`.
#![no_main]

use berth_worker::fuzzing::{WORKSPACE, normalize, normalize_in, parent, resolve_link};
use libfuzzer_sys::fuzz_target;

fn assert_normal(path: &str) {
    assert!(path.starts_with('/'), "{path:?}");
    assert!(!path.contains('\0'));
    if path != "/" {
        for segment in path[1..].split('/') {
            assert!(!matches!(segment, "" | "." | ".."), "{path:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (cwd, path) = match text.split_once('\n') {
        Some((cwd, path)) => match normalize(cwd) {
            Ok(cwd) => (cwd, path),
            Err(_) => return,
        },
        None => (WORKSPACE.to_owned(), text),
    };
    assert_normal(&cwd);
    let Ok(normal) = normalize_in(path, &cwd) else {
        return;
    };
    assert_normal(&normal);
    assert_eq!(normalize(&normal).ok().as_deref(), Some(normal.as_str()));
    assert_eq!(
        normalize_in(&normal, "/elsewhere").ok().as_deref(),
        Some(normal.as_str())
    );
    // never above the cwd when relative
    if !path.starts_with('/') {
        let under = cwd == "/" || normal == cwd || normal.starts_with(&format!("{cwd}/"));
        assert!(under, "{path:?} in {cwd:?} left it: {normal:?}");
    }
    // exactly the segments written, nothing dropped but `.` and empties
    let written: Vec<&str> = path
        .split('/')
        .filter(|s| !matches!(*s, "" | "."))
        .collect();
    assert!(
        normal.ends_with(&written.join("/")),
        "{path:?} -> {normal:?}"
    );
    let up = parent(&normal);
    assert_normal(up);
    assert!(normal.starts_with(up));
    assert!(up.len() < normal.len() || normal == "/");

    // a symlink at `normal` pointing to the original text
    let resolved = resolve_link(&normal, path);
    assert_normal(&resolved);
});
