//! How SFTP names and describes the sandbox's files: paths taken as the sandbox takes
//! them (absolute, or relative to `/workspace`, where a client starts), and a file
//! call's [`FileInfo`] as SFTP attributes.

use russh_sftp::protocol::FileAttributes;

use crate::sandboxes::FileInfo;

/// Where a client starts, and what relative paths are relative to.
const HOME: &str = "/workspace";

/// `path` made absolute from [`HOME`], with `.`, `..` and repeated slashes resolved.
pub(super) fn resolve(path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{HOME}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

pub(super) fn attributes(info: &FileInfo) -> FileAttributes {
    let kind = if info.is_dir { 0o040000 } else { 0o100000 };
    let mtime = u32::try_from(info.mod_time).unwrap_or(0);
    FileAttributes {
        size: Some(info.size),
        uid: Some(0),
        user: None,
        gid: Some(0),
        group: None,
        permissions: Some(kind | (info.mode & 0o7777)),
        atime: Some(mtime),
        mtime: Some(mtime),
    }
}

pub(super) fn base_name(path: &str) -> &str {
    path.rsplit('/')
        .next()
        .filter(|name| !name.is_empty())
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_absolute_from_the_workspace() {
        assert_eq!(resolve("."), "/workspace");
        assert_eq!(resolve(""), "/workspace");
        assert_eq!(resolve("a/b"), "/workspace/a/b");
        assert_eq!(resolve("../etc//passwd"), "/etc/passwd");
        assert_eq!(resolve("/tmp/./x/../y"), "/tmp/y");
        assert_eq!(resolve("/../.."), "/");
    }

    #[test]
    fn attributes_carry_the_file_type() {
        let dir = FileInfo {
            path: "/workspace/d".into(),
            size: 0,
            mode: 0o755,
            is_dir: true,
            mod_time: 1,
        };
        let attrs = attributes(&dir);
        assert!(attrs.is_dir());
        assert_eq!(base_name(&dir.path), "d");
    }
}
