//! Sandbox files. Content moves through the engine's archive API, binary-safe and
//! streamed: a read parses the archive as it arrives (following symbolic links inside
//! the container); a write spools the upload to an unnamed temp file first (its size
//! goes in the tar header before the content, and an interrupted upload never reaches
//! the container), then streams it in. Listing, stat, glob, delete, move and chmod run
//! `scripts::FS` inside the container as the sandbox's user.

use std::io::SeekFrom;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures::StreamExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::TaskTracker;

use super::archive::{self, Head};
use super::engine::{engine_error, message_of, status_of};
use super::exec::{self, Command, Output};
use super::scripts;
use crate::clock::now_secs;
use crate::provider::glob::Pattern;
use crate::provider::paths::parent;
use crate::provider::{ByteStream, FileInfo, ProviderError};

/// How long a file helper may run (a glob over a large tree walks it all).
const HELPER_TIMEOUT: Duration = Duration::from_secs(120);
/// Symbolic links followed by one read.
const MAX_LINKS: usize = 8;

/// One sandbox's container, as file calls need it.
pub struct Files<'a> {
    pub docker: &'a Docker,
    pub container: &'a str,
    pub sandbox_id: &'a str,
    pub tasks: &'a TaskTracker,
    /// Uploads are owned by the container's user (set when the sandbox runs as one).
    pub chown_to_user: bool,
    /// Where uploads are spooled (`None`: the system's temp dir), and the most bytes
    /// one may bring.
    pub spool_dir: Option<&'a std::path::Path>,
    pub max_upload: u64,
}

impl Files<'_> {
    async fn helper(&self, args: &[&str]) -> Result<Output, ProviderError> {
        let mut argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            scripts::FS.to_owned(),
            "berth-fs".to_owned(),
        ];
        argv.extend(args.iter().map(|arg| (*arg).to_owned()));
        let command = Command {
            argv,
            env: Vec::new(),
            workdir: "/".to_owned(),
            timeout: HELPER_TIMEOUT,
        };
        exec::run(
            self.docker,
            self.container,
            self.sandbox_id,
            command,
            self.tasks,
        )
        .await
    }

    /// Runs a helper that must succeed.
    async fn checked(&self, args: &[&str]) -> Result<Output, ProviderError> {
        let output = self.helper(args).await?;
        if output.code == 0 {
            Ok(output)
        } else {
            Err(helper_error(args[0], &output))
        }
    }

    pub async fn stat(&self, path: &str) -> Result<FileInfo, ProviderError> {
        let output = self.checked(&["stat", path]).await?;
        parse_stat(path, output.stdout_text().trim())
    }

    /// Fails unless `path` is an existing directory (an exec's working directory).
    pub async fn require_dir(&self, path: &str) -> Result<(), ProviderError> {
        self.checked(&["dir", path]).await.map(drop)
    }

    pub async fn list(&self, path: &str) -> Result<Vec<FileInfo>, ProviderError> {
        let output = self.checked(&["list", path]).await?;
        let mut files = parse_list(path, &output.stdout)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    pub async fn glob(&self, pattern: &str) -> Result<Vec<String>, ProviderError> {
        let compiled = Pattern::new(pattern);
        let depth = compiled
            .max_depth()
            .map_or_else(|| "all".to_owned(), |depth| depth.to_string());
        let output = self.checked(&["walk", &compiled.base(), &depth]).await?;
        let mut paths: Vec<String> = output
            .stdout
            .split(|byte| *byte == 0)
            .filter(|path| !path.is_empty())
            .map(|path| String::from_utf8_lossy(path).into_owned())
            .filter(|path| compiled.matches(path))
            .collect();
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    pub async fn delete(&self, path: &str, recursive: bool) -> Result<(), ProviderError> {
        if path == "/" {
            return Err(ProviderError::InvalidArgument(
                "refusing to delete /".into(),
            ));
        }
        let mode = if recursive { "recursive" } else { "single" };
        self.checked(&["rm", path, mode]).await.map(drop)
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<(), ProviderError> {
        if from == "/" || to == "/" {
            return Err(ProviderError::InvalidArgument("cannot move /".into()));
        }
        self.checked(&["mv", from, to]).await.map(drop)
    }

    pub async fn chmod(&self, path: &str, mode: u32) -> Result<(), ProviderError> {
        let mode = format!("{:o}", mode & 0o7777);
        self.checked(&["chmod", &mode, path]).await.map(drop)
    }

    /// The file's content, following symbolic links (within the container).
    pub async fn read(&self, path: &str) -> Result<ByteStream, ProviderError> {
        let mut current = path.to_owned();
        for _ in 0..=MAX_LINKS {
            let (head, chunks) = self.download(&current).await?;
            match head {
                Head::File => return Ok(ReceiverStream::new(chunks).boxed()),
                Head::Directory => return Err(ProviderError::IsADirectory(path.to_owned())),
                Head::Symlink(target) => current = resolve_link(&current, &target),
                Head::Other => {
                    return Err(ProviderError::InvalidArgument(format!(
                        "{path} is not a regular file"
                    )));
                }
            }
        }
        Err(ProviderError::InvalidArgument(format!(
            "{path}: too many levels of symbolic links"
        )))
    }

    async fn download(&self, path: &str) -> Result<(Head, archive::Chunks), ProviderError> {
        let options = DownloadFromContainerOptions {
            path: path.to_owned(),
        };
        let mut stream = self
            .docker
            .download_from_container(self.container, Some(options))
            .boxed();
        // the first item carries the engine's verdict on the path
        let first = match stream.next().await {
            Some(Ok(bytes)) => bytes,
            Some(Err(err)) => return Err(self.archive_error(path, err).await),
            None => {
                return Err(ProviderError::Internal(format!(
                    "the engine sent nothing for {path}"
                )));
            }
        };
        let whole = futures::stream::iter([Ok(first)]).chain(stream);
        archive::first_entry(archive::io_stream(whole)).await
    }

    /// Creates or replaces `path` with `mode` from `data`; returns its size.
    pub async fn write(
        &self,
        path: &str,
        mode: u32,
        mut data: ByteStream,
    ) -> Result<u64, ProviderError> {
        // fail before reading a large upload that could not be stored anyway
        self.checked(&["writable", path]).await?;
        // unnamed (O_TMPFILE): nothing is left behind whatever happens to the worker
        let spool = match self.spool_dir {
            Some(dir) => std::fs::create_dir_all(dir).and_then(|()| tempfile::tempfile_in(dir)),
            None => tempfile::tempfile(),
        }
        .map_err(|err| ProviderError::Internal(format!("cannot make a spool file: {err}")))?;
        let mut spool = tokio::fs::File::from_std(spool);
        let mut size = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > self.max_upload {
                return Err(ProviderError::InvalidArgument(format!(
                    "{path}: the upload is larger than this worker takes (docker.max_upload_mb: {} MiB)",
                    self.max_upload >> 20
                )));
            }
            spool.write_all(&chunk).await.map_err(spool_error)?;
        }
        spool.flush().await.map_err(spool_error)?;
        spool.seek(SeekFrom::Start(0)).await.map_err(spool_error)?;
        let spool = spool.into_std().await;
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        let mtime = now_secs().max(0) as u64;
        let tar = archive::single_file(name, mode, size, mtime, spool);
        let options = UploadToContainerOptions {
            path: parent(path).to_owned(),
            no_overwrite_dir_non_dir: Some("true".to_owned()),
            copy_uidgid: self.chown_to_user.then(|| "true".to_owned()),
        };
        let uploaded = self
            .docker
            .upload_to_container(self.container, Some(options), bollard::body_try_stream(tar))
            .await;
        match uploaded {
            Ok(()) => Ok(size),
            Err(err) if status_of(&err) == Some(404) => {
                Err(self.archive_error(parent(path), err).await)
            }
            Err(err) => Err(upload_error(path, err)),
        }
    }

    /// A failed archive call: the container gone is the sandbox not found; a path the
    /// engine cannot find is the file not found.
    async fn archive_error(&self, path: &str, err: bollard::errors::Error) -> ProviderError {
        match status_of(&err) {
            Some(404) => match self.docker.inspect_container(self.container, None).await {
                Err(gone) if status_of(&gone) == Some(404) => {
                    ProviderError::SandboxNotFound(self.sandbox_id.to_owned())
                }
                _ => ProviderError::FileNotFound(path.to_owned()),
            },
            Some(400 | 403 | 409) => {
                ProviderError::InvalidArgument(format!("{path}: {}", message_of(&err)))
            }
            _ => engine_error("archive", err),
        }
    }
}

fn upload_error(path: &str, err: bollard::errors::Error) -> ProviderError {
    match status_of(&err) {
        Some(400 | 403 | 409 | 500) => {
            ProviderError::InvalidArgument(format!("cannot write {path}: {}", message_of(&err)))
        }
        _ => engine_error("upload", err),
    }
}

fn spool_error(err: std::io::Error) -> ProviderError {
    ProviderError::Internal(format!("spooling an upload failed: {err}"))
}

/// The error a file helper's exit status stands for.
fn helper_error(op: &str, output: &Output) -> ProviderError {
    let subject = output.stdout_text();
    match output.code {
        scripts::NOT_FOUND => ProviderError::FileNotFound(subject),
        scripts::NOT_A_DIRECTORY => ProviderError::NotADirectory(subject),
        scripts::DIRECTORY_NOT_EMPTY => ProviderError::DirectoryNotEmpty(subject),
        scripts::IS_A_DIRECTORY => ProviderError::IsADirectory(subject),
        scripts::EXISTS => ProviderError::FileExists(subject),
        scripts::INVALID => ProviderError::InvalidArgument(subject),
        126 | 127 => ProviderError::InvalidArgument(format!(
            "file calls need /bin/sh and basic utilities in the sandbox image: {}",
            output.stderr_text()
        )),
        code => ProviderError::InvalidArgument(format!(
            "{op} failed (exit {code}): {}",
            output.stderr_text()
        )),
    }
}

/// `SIZE HEXMODE MTIME` as `stat -c '%s %f %Y'` prints it.
pub fn parse_stat(path: &str, line: &str) -> Result<FileInfo, ProviderError> {
    let bad = || ProviderError::Internal(format!("unexpected stat output for {path}: {line:?}"));
    let mut fields = line.split_whitespace();
    let size: u64 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
    let raw = fields
        .next()
        .and_then(|f| u32::from_str_radix(f, 16).ok())
        .ok_or_else(bad)?;
    let mod_time: i64 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
    let is_dir = raw & 0o170000 == 0o040000;
    Ok(FileInfo {
        path: path.to_owned(),
        size: if is_dir { 0 } else { size },
        mode: raw & 0o7777,
        is_dir,
        mod_time,
    })
}

/// `NAME\0STAT\n` records of the helper's `list`.
pub fn parse_list(dir: &str, output: &[u8]) -> Result<Vec<FileInfo>, ProviderError> {
    let mut files = Vec::new();
    let mut rest = output;
    while !rest.is_empty() {
        let bad = || ProviderError::Internal(format!("unexpected listing output for {dir}"));
        let name_end = rest.iter().position(|b| *b == 0).ok_or_else(bad)?;
        let name = String::from_utf8_lossy(&rest[..name_end]).into_owned();
        rest = &rest[name_end + 1..];
        let line_end = rest.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
        let line = String::from_utf8_lossy(&rest[..line_end]).into_owned();
        rest = &rest[line_end + 1..];
        let path = if dir == "/" {
            format!("/{name}")
        } else {
            format!("{dir}/{name}")
        };
        files.push(parse_stat(&path, &line)?);
    }
    Ok(files)
}

/// Where a symbolic link at `link` pointing to `target` leads, `..` resolved.
pub fn resolve_link(link: &str, target: &str) -> String {
    let joined = if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("{}/{target}", parent(link))
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_become_file_infos() {
        let file = parse_stat("/workspace/a", "7 8180 1700000000").unwrap();
        assert_eq!(
            file,
            FileInfo {
                path: "/workspace/a".into(),
                size: 7,
                mode: 0o600,
                is_dir: false,
                mod_time: 1_700_000_000,
            }
        );
        let dir = parse_stat("/workspace", "4096 41ed 1").unwrap();
        assert!(dir.is_dir);
        assert_eq!(dir.mode, 0o755);
        assert_eq!(dir.size, 0);
        assert!(parse_stat("/x", "garbage").is_err());
    }

    #[test]
    fn listings_keep_odd_names_whole() {
        let output = b"-rf\x000 81a4 5\nwe ird\nname\x004096 41ed 6\n";
        let files = parse_list("/workspace", output).unwrap();
        assert_eq!(files[0].path, "/workspace/-rf");
        assert_eq!(files[1].path, "/workspace/we ird\nname");
        assert!(files[1].is_dir);
        assert!(parse_list("/w", b"name-without-stat\x00").is_err());
    }

    #[test]
    fn links_resolve_inside_the_container() {
        assert_eq!(resolve_link("/workspace/l", "target"), "/workspace/target");
        assert_eq!(resolve_link("/workspace/l", "/etc/hosts"), "/etc/hosts");
        assert_eq!(resolve_link("/workspace/a/l", "../../../../etc"), "/etc");
    }

    #[test]
    fn helper_statuses_map_to_errors() {
        let output = |code| Output {
            code,
            stdout: b"/workspace/x".to_vec(),
            stderr: b"boom".to_vec(),
        };
        assert_eq!(
            helper_error("stat", &output(10)),
            ProviderError::FileNotFound("/workspace/x".into())
        );
        assert_eq!(
            helper_error("rm", &output(12)),
            ProviderError::DirectoryNotEmpty("/workspace/x".into())
        );
        assert!(matches!(
            helper_error("rm", &output(1)),
            ProviderError::InvalidArgument(m) if m.contains("boom")
        ));
    }
}
