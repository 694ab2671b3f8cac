//! The mock sandbox's in-memory filesystem: a sorted map of normalized absolute paths
//! to files and directories. Callers normalize paths first (`paths::normalize_in`);
//! every method here takes normalized paths and answers with `ProviderError`s.
//!
//! File contents are `Arc`ed so a reader streams a snapshot without holding the lock
//! or copying the whole file.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::clock::now_secs;
use crate::provider::glob::Pattern;
use crate::provider::paths::parent;
use crate::provider::{FileInfo, ProviderError};

/// Mode of files created by shell redirections and `touch`.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
pub const DEFAULT_DIR_MODE: u32 = 0o755;

#[derive(Debug, Clone)]
enum Node {
    File {
        data: Arc<Vec<u8>>,
        mode: u32,
        mtime: i64,
    },
    Dir {
        mode: u32,
        mtime: i64,
    },
}

impl Node {
    fn is_dir(&self) -> bool {
        matches!(self, Node::Dir { .. })
    }

    fn info(&self, path: &str) -> FileInfo {
        match self {
            Node::File { data, mode, mtime } => FileInfo {
                path: path.to_owned(),
                size: data.len() as u64,
                mode: *mode,
                is_dir: false,
                mod_time: *mtime,
            },
            Node::Dir { mode, mtime } => FileInfo {
                path: path.to_owned(),
                size: 0,
                mode: *mode,
                is_dir: true,
                mod_time: *mtime,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct MemFs {
    nodes: BTreeMap<String, Node>,
}

impl MemFs {
    /// `/`, `/workspace` and `/tmp`.
    pub fn new() -> Self {
        let now = now_secs();
        let mut nodes = BTreeMap::new();
        for (path, mode) in [
            ("/", DEFAULT_DIR_MODE),
            ("/tmp", 0o1777),
            ("/workspace", DEFAULT_DIR_MODE),
        ] {
            nodes.insert(path.to_owned(), Node::Dir { mode, mtime: now });
        }
        Self { nodes }
    }

    pub fn stat(&self, path: &str) -> Result<FileInfo, ProviderError> {
        self.node(path).map(|node| node.info(path))
    }

    pub fn is_dir(&self, path: &str) -> bool {
        self.nodes.get(path).is_some_and(Node::is_dir)
    }

    /// A snapshot of a file's content.
    pub fn read(&self, path: &str) -> Result<Arc<Vec<u8>>, ProviderError> {
        match self.node(path)? {
            Node::File { data, .. } => Ok(Arc::clone(data)),
            Node::Dir { .. } => Err(ProviderError::IsADirectory(path.to_owned())),
        }
    }

    /// Whether a file could be created or replaced at `path`.
    pub fn check_writable(&self, path: &str) -> Result<(), ProviderError> {
        self.require_dir(parent(path))?;
        if self.is_dir(path) {
            return Err(ProviderError::IsADirectory(path.to_owned()));
        }
        Ok(())
    }

    /// Creates or replaces a file; returns its size.
    pub fn write(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<u64, ProviderError> {
        self.check_writable(path)?;
        let size = data.len() as u64;
        let node = Node::File {
            data: Arc::new(data),
            mode: mode & 0o7777,
            mtime: now_secs(),
        };
        self.nodes.insert(path.to_owned(), node);
        Ok(size)
    }

    /// Empties a file (keeping its mode), creating it if needed: the `>` of a shell.
    pub fn truncate(&mut self, path: &str) -> Result<(), ProviderError> {
        self.check_writable(path)?;
        match self.nodes.get_mut(path) {
            Some(Node::File { data, mtime, .. }) => {
                *data = Arc::new(Vec::new());
                *mtime = now_secs();
                Ok(())
            }
            _ => self.write(path, Vec::new(), DEFAULT_FILE_MODE).map(drop),
        }
    }

    /// Appends to a file, creating it if needed: the `>>` of a shell.
    pub fn append(&mut self, path: &str, bytes: &[u8]) -> Result<(), ProviderError> {
        self.check_writable(path)?;
        match self.nodes.get_mut(path) {
            Some(Node::File { data, mtime, .. }) => {
                Arc::make_mut(data).extend_from_slice(bytes);
                *mtime = now_secs();
                Ok(())
            }
            _ => self
                .write(path, bytes.to_vec(), DEFAULT_FILE_MODE)
                .map(drop),
        }
    }

    /// Creates an empty file or updates the mtime of an existing entry.
    pub fn touch(&mut self, path: &str) -> Result<(), ProviderError> {
        match self.nodes.get_mut(path) {
            Some(Node::File { mtime, .. } | Node::Dir { mtime, .. }) => {
                *mtime = now_secs();
                Ok(())
            }
            None => self.write(path, Vec::new(), DEFAULT_FILE_MODE).map(drop),
        }
    }

    /// Creates one directory; its parent must exist.
    pub fn mkdir(&mut self, path: &str) -> Result<(), ProviderError> {
        if self.nodes.contains_key(path) {
            return Err(ProviderError::FileExists(path.to_owned()));
        }
        self.require_dir(parent(path))?;
        let node = Node::Dir {
            mode: DEFAULT_DIR_MODE,
            mtime: now_secs(),
        };
        self.nodes.insert(path.to_owned(), node);
        Ok(())
    }

    /// Creates a directory and its missing ancestors; existing directories are fine.
    pub fn mkdir_all(&mut self, path: &str) -> Result<(), ProviderError> {
        if path == "/" {
            return Ok(());
        }
        let mut current = String::new();
        for segment in path.split('/').filter(|segment| !segment.is_empty()) {
            current.push('/');
            current.push_str(segment);
            match self.nodes.get(&current) {
                Some(Node::Dir { .. }) => {}
                Some(Node::File { .. }) => {
                    return Err(ProviderError::NotADirectory(current));
                }
                None => self.mkdir(&current)?,
            }
        }
        Ok(())
    }

    /// The direct children of a directory, sorted by path.
    pub fn list(&self, path: &str) -> Result<Vec<FileInfo>, ProviderError> {
        self.require_dir(path)?;
        let prefix = dir_prefix(path);
        let children = self
            .descendants(&prefix)
            .filter(|(child, _)| !child[prefix.len()..].contains('/'))
            .map(|(child, node)| node.info(child))
            .collect();
        Ok(children)
    }

    /// Deletes a file, an empty directory, or with `recursive` a directory tree.
    pub fn delete(&mut self, path: &str, recursive: bool) -> Result<(), ProviderError> {
        if path == "/" {
            return Err(ProviderError::InvalidArgument(
                "refusing to delete /".into(),
            ));
        }
        if self.node(path)?.is_dir() {
            let prefix = dir_prefix(path);
            let below: Vec<String> = self
                .descendants(&prefix)
                .map(|(child, _)| child.to_owned())
                .collect();
            if !below.is_empty() && !recursive {
                return Err(ProviderError::DirectoryNotEmpty(path.to_owned()));
            }
            for child in below {
                self.nodes.remove(&child);
            }
        }
        self.nodes.remove(path);
        Ok(())
    }

    /// Moves a file or a directory tree. An existing file at `to` is replaced; an
    /// existing directory is not.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), ProviderError> {
        if from == "/" || to == "/" {
            return Err(ProviderError::InvalidArgument("cannot move /".into()));
        }
        let source_is_dir = self.node(from)?.is_dir();
        self.require_dir(parent(to))?;
        if from == to {
            return Ok(());
        }
        if to.starts_with(&dir_prefix(from)) {
            return Err(ProviderError::InvalidArgument(format!(
                "cannot move {from} into itself"
            )));
        }
        match self.nodes.get(to) {
            Some(Node::Dir { .. }) => return Err(ProviderError::FileExists(to.to_owned())),
            Some(Node::File { .. }) if source_is_dir => {
                return Err(ProviderError::NotADirectory(to.to_owned()));
            }
            _ => {}
        }
        let prefix = dir_prefix(from);
        let moved: Vec<String> = self
            .descendants(&prefix)
            .map(|(child, _)| child.to_owned())
            .collect();
        if let Some(node) = self.nodes.remove(from) {
            self.nodes.insert(to.to_owned(), node);
        }
        for old in moved {
            if let Some(node) = self.nodes.remove(&old) {
                self.nodes
                    .insert(format!("{to}{}", &old[from.len()..]), node);
            }
        }
        Ok(())
    }

    pub fn chmod(&mut self, path: &str, new_mode: u32) -> Result<(), ProviderError> {
        match self.nodes.get_mut(path) {
            Some(Node::File { mode, .. } | Node::Dir { mode, .. }) => {
                *mode = new_mode & 0o7777;
                Ok(())
            }
            None => Err(ProviderError::FileNotFound(path.to_owned())),
        }
    }

    /// Paths of files and directories matching a normalized absolute pattern, sorted.
    pub fn glob(&self, pattern: &str) -> Vec<String> {
        let pattern = Pattern::new(pattern);
        // Only the subtree under the pattern's literal prefix can match.
        let base = pattern.base();
        let prefix = dir_prefix(&base);
        let candidates = self
            .nodes
            .get_key_value(&base)
            .into_iter()
            .chain(self.descendants(&prefix));
        candidates
            .filter(|(path, _)| pattern.matches(path))
            .map(|(path, _)| path.clone())
            .collect()
    }

    fn node(&self, path: &str) -> Result<&Node, ProviderError> {
        self.nodes
            .get(path)
            .ok_or_else(|| ProviderError::FileNotFound(path.to_owned()))
    }

    fn require_dir(&self, path: &str) -> Result<(), ProviderError> {
        if self.node(path)?.is_dir() {
            Ok(())
        } else {
            Err(ProviderError::NotADirectory(path.to_owned()))
        }
    }

    /// Every entry whose path starts with `prefix` (a directory path ending in `/`),
    /// except `/` itself.
    fn descendants<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        self.nodes
            .range::<str, _>((Bound::Excluded(prefix), Bound::Unbounded))
            .take_while(move |(path, _)| path.starts_with(prefix))
    }
}

/// `path` with a trailing `/`, so it prefixes exactly the entries below it.
fn dir_prefix(path: &str) -> String {
    if path == "/" {
        "/".to_owned()
    } else {
        format!("{path}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdir_all_stops_at_files() {
        let mut fs = MemFs::new();
        fs.mkdir_all("/workspace/a/b").unwrap();
        assert!(fs.is_dir("/workspace/a/b"));
        fs.write("/workspace/f", vec![1], 0o600).unwrap();
        assert_eq!(
            fs.mkdir_all("/workspace/f/g"),
            Err(ProviderError::NotADirectory("/workspace/f".into()))
        );
    }
}
