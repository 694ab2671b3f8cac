//! Sandbox paths: absolute, or relative to `/workspace`; `.` and repeated slashes are
//! folded; `..` is refused outright rather than resolved, so no caller can climb out of
//! what it named.

use super::ProviderError;

pub const WORKSPACE: &str = "/workspace";

/// The normalized absolute form of `path`.
pub fn normalize(path: &str) -> Result<String, ProviderError> {
    normalize_in(path, WORKSPACE)
}

/// Like [`normalize`], with relative paths taken from `cwd` (itself absolute).
pub fn normalize_in(path: &str, cwd: &str) -> Result<String, ProviderError> {
    let invalid = |reason: &str| ProviderError::InvalidPath {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if path.is_empty() {
        return Err(invalid("empty path"));
    }
    if path.contains('\0') {
        return Err(invalid("NUL byte in path"));
    }
    if path.len() > 4096 {
        return Err(invalid("longer than 4096 bytes"));
    }
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{cwd}/{path}")
    };
    let mut parts = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid("'..' is not allowed")),
            other => parts.push(other),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The parent of a normalized path (`/` for top-level entries and for `/` itself).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(index) => &path[..index],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_live_in_the_workspace() {
        assert_eq!(normalize("a.txt").unwrap(), "/workspace/a.txt");
        assert_eq!(normalize("./x//y/").unwrap(), "/workspace/x/y");
        assert_eq!(normalize("/etc/./hosts").unwrap(), "/etc/hosts");
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize_in("b", "/tmp").unwrap(), "/tmp/b");
    }

    #[test]
    fn climbing_and_garbage_are_refused() {
        for bad in [
            "",
            "../etc/passwd",
            "/workspace/../etc",
            "a/../../b",
            "x\0y",
        ] {
            assert!(
                matches!(normalize(bad), Err(ProviderError::InvalidPath { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parents() {
        assert_eq!(parent("/workspace/a"), "/workspace");
        assert_eq!(parent("/workspace"), "/");
        assert_eq!(parent("/"), "/");
    }
}
