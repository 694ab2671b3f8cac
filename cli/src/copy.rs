//! `berth sandbox cp`: files and directory trees between this machine and a sandbox,
//! either way, like `docker cp` and `kubectl cp`.
//!
//! One side is `ID:PATH` (a relative PATH is under `/workspace`), the other a local path
//! or `-`: a tar stream on stdout (from a sandbox) or stdin (into one). Everything goes
//! through the public file API, so it works on every provider: a tree is listed and
//! each file streamed on its own (no whole-tree archive is ever held in memory);
//! directories are made with one `mkdir -p` exec per batch. Like `docker cp`, copying
//! to an existing directory puts the source inside it under its own name; otherwise
//! the destination is the new name. Modes and modification times are kept; symbolic
//! links on the local side are skipped with a warning (the file API writes regular
//! files only).

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::client::{ApiClient, ApiError, ClientArgs};
use crate::sandbox::encode;

/// Directories created per `mkdir -p` exec.
const MKDIR_BATCH: usize = 64;

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// What to copy: ID:PATH (a sandbox), a local path, or - (a tar stream on stdin).
    pub source: String,
    /// Where to: ID:PATH (a sandbox), a local path, or - (a tar stream on stdout).
    pub destination: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Local(PathBuf),
    /// `-`: tar on stdin or stdout.
    Stdio,
    Sandbox {
        id: String,
        path: String,
    },
}

impl Endpoint {
    fn parse(text: &str) -> anyhow::Result<Self> {
        if text == "-" {
            return Ok(Self::Stdio);
        }
        // `ID:PATH` names a sandbox; a local path with a colon can be written ./a:b
        if let Some((id, path)) = text.split_once(':')
            && !id.is_empty()
            && !id.contains('/')
            && !id.starts_with('.')
        {
            if path.is_empty() {
                bail!("{text:?}: the sandbox path is empty (e.g. {id}:/workspace)");
            }
            let path = if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/workspace/{path}")
            };
            return Ok(Self::Sandbox {
                id: id.to_owned(),
                path: normalize_remote(&path),
            });
        }
        Ok(Self::Local(PathBuf::from(text)))
    }
}

/// `/a//b/./c/` as `/a/b/c` (`..` stays for the server to judge).
fn normalize_remote(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn remote_join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn remote_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The file API's FileInfo.
#[derive(Debug, Deserialize)]
struct RemoteFile {
    path: String,
    mode: String,
    is_dir: bool,
    mod_time: String,
}

impl RemoteFile {
    fn mode(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).unwrap_or(0o644)
    }

    fn modified(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.mod_time).ok()
    }
}

pub async fn run(args: CopyArgs) -> anyhow::Result<()> {
    let source = Endpoint::parse(&args.source)?;
    let destination = Endpoint::parse(&args.destination)?;
    let api = ApiClient::new(&args.client)?;
    let (source, destination) = (
        resolve_id(&api, source).await?,
        resolve_id(&api, destination).await?,
    );
    let copier = Copier { api: &api };
    let copied = match (source, destination) {
        (Endpoint::Sandbox { id, path }, Endpoint::Local(local)) => {
            copier.download(&id, &path, &local).await?
        }
        (Endpoint::Sandbox { id, path }, Endpoint::Stdio) => {
            copier.download_tar(&id, &path).await?
        }
        (Endpoint::Local(local), Endpoint::Sandbox { id, path }) => {
            copier.upload(&local, &id, &path).await?
        }
        (Endpoint::Stdio, Endpoint::Sandbox { id, path }) => {
            copier
                .upload_tar(std::io::stdin().lock(), &id, &path)
                .await?
        }
        _ => bail!(
            "one side must be a sandbox path (ID:PATH) and the other a local path or - \
             (e.g. berth sandbox cp ./src sbx-1:/workspace)"
        ),
    };
    eprintln!("copied {} files, {} bytes", copied.files, copied.bytes);
    Ok(())
}

/// A sandbox side's id prefix as the whole id.
async fn resolve_id(api: &ApiClient, endpoint: Endpoint) -> anyhow::Result<Endpoint> {
    Ok(match endpoint {
        Endpoint::Sandbox { id, path } => Endpoint::Sandbox {
            id: crate::ids::sandbox(api, &id).await?,
            path,
        },
        other => other,
    })
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Copied {
    files: u64,
    bytes: u64,
}

impl Copied {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

struct Copier<'a> {
    api: &'a ApiClient,
}

impl Copier<'_> {
    async fn stat(&self, id: &str, path: &str) -> anyhow::Result<RemoteFile> {
        self.api
            .get(&format!(
                "/api/v1/sandboxes/{id}/files/stat?path={}",
                encode(path)
            ))
            .await
            .with_context(|| format!("{id}:{path}"))
    }

    /// Whether `path` is a directory in the sandbox; `None` when nothing is there.
    async fn remote_kind(&self, id: &str, path: &str) -> anyhow::Result<Option<bool>> {
        match self.stat(id, path).await {
            Ok(file) => Ok(Some(file.is_dir)),
            Err(err)
                if err
                    .downcast_ref::<ApiError>()
                    .is_some_and(|e| e.status == 404) =>
            {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    async fn list(&self, id: &str, path: &str) -> anyhow::Result<Vec<RemoteFile>> {
        self.api
            .get(&format!(
                "/api/v1/sandboxes/{id}/files/list?path={}",
                encode(path)
            ))
            .await
            .with_context(|| format!("listing {id}:{path}"))
    }

    /// Every file and directory below `root` (not `root` itself), parents first.
    async fn walk(&self, id: &str, root: &str) -> anyhow::Result<Vec<RemoteFile>> {
        let mut found = Vec::new();
        let mut pending = vec![root.to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in self.list(id, &dir).await? {
                if entry.is_dir {
                    pending.push(entry.path.clone());
                }
                found.push(entry);
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }

    /// Streams one sandbox file into `writer`; returns its length.
    async fn read_into(
        &self,
        id: &str,
        path: &str,
        writer: &mut impl Write,
    ) -> anyhow::Result<u64> {
        let request = self.api.request(
            reqwest::Method::GET,
            &format!("/api/v1/sandboxes/{id}/files?path={}", encode(path)),
        );
        let mut body = self
            .api
            .raw(request)
            .await
            .with_context(|| format!("{id}:{path}"))?
            .bytes_stream();
        let mut length = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("the download of {path} was cut off"))?;
            writer.write_all(&chunk)?;
            length += chunk.len() as u64;
        }
        Ok(length)
    }

    /// Writes one sandbox file to `target` (through a temporary file beside it, so an
    /// interrupted copy never leaves a half file under the real name).
    async fn download_file(
        &self,
        id: &str,
        file: &RemoteFile,
        target: &Path,
    ) -> anyhow::Result<u64> {
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty());
        let mut temp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))
            .with_context(|| format!("cannot write next to {}", target.display()))?;
        let length = self.read_into(id, &file.path, temp.as_file_mut()).await?;
        set_mode(temp.path(), file.mode())?;
        if let Some(modified) = file.modified() {
            temp.as_file().set_modified(modified)?;
        }
        temp.persist(target)
            .with_context(|| format!("cannot write {}", target.display()))?;
        Ok(length)
    }

    async fn download(&self, id: &str, path: &str, local: &Path) -> anyhow::Result<Copied> {
        let top = self.stat(id, path).await?;
        let target = if local.is_dir() {
            local.join(remote_name(path))
        } else {
            local.to_owned()
        };
        let mut copied = Copied::default();
        if !top.is_dir {
            copied.add(self.download_file(id, &top, &target).await?);
            return Ok(copied);
        }
        std::fs::create_dir_all(&target)
            .with_context(|| format!("cannot create {}", target.display()))?;
        let entries = self.walk(id, &top.path).await?;
        for entry in &entries {
            let relative = relative_to(&top.path, &entry.path)?;
            let local_path = target.join(&relative);
            if entry.is_dir {
                std::fs::create_dir_all(&local_path)
                    .with_context(|| format!("cannot create {}", local_path.display()))?;
            } else {
                copied.add(self.download_file(id, entry, &local_path).await?);
            }
        }
        // directory modes last: a read-only directory would refuse its own files
        for entry in entries.iter().filter(|e| e.is_dir).rev() {
            set_mode(
                &target.join(relative_to(&top.path, &entry.path)?),
                entry.mode(),
            )?;
        }
        set_mode(&target, top.mode())?;
        Ok(copied)
    }

    /// A tar of `path` (its name the archive's top entry) on stdout.
    async fn download_tar(&self, id: &str, path: &str) -> anyhow::Result<Copied> {
        let top = self.stat(id, path).await?;
        let name = match remote_name(&top.path) {
            "" => "root".to_owned(),
            name => name.to_owned(),
        };
        let mut archive = tar::Builder::new(std::io::stdout().lock());
        let mut copied = Copied::default();
        let mut entries = vec![];
        if top.is_dir {
            append_dir(&mut archive, &name, &top)?;
            entries = self.walk(id, &top.path).await?;
        } else {
            copied.add(self.append_file(&mut archive, id, &name, &top).await?);
        }
        for entry in &entries {
            let name = format!("{name}/{}", relative_to(&top.path, &entry.path)?.display());
            if entry.is_dir {
                append_dir(&mut archive, &name, entry)?;
            } else {
                copied.add(self.append_file(&mut archive, id, &name, entry).await?);
            }
        }
        archive.into_inner()?.flush()?;
        Ok(copied)
    }

    /// Spools one file to a temporary file (its size may have changed since it was
    /// listed, and a tar header needs the real one) and appends it.
    async fn append_file(
        &self,
        archive: &mut tar::Builder<impl Write>,
        id: &str,
        name: &str,
        file: &RemoteFile,
    ) -> anyhow::Result<u64> {
        let mut spool = tempfile::tempfile().context("cannot make a temporary file")?;
        let length = self.read_into(id, &file.path, &mut spool).await?;
        spool.flush()?;
        let mut header = header_for(file, tar::EntryType::Regular);
        header.set_size(length);
        use std::io::Seek;
        spool.rewind()?;
        archive.append_data(&mut header, name, spool)?;
        Ok(length)
    }

    async fn upload(&self, local: &Path, id: &str, path: &str) -> anyhow::Result<Copied> {
        let metadata = std::fs::symlink_metadata(local)
            .with_context(|| format!("cannot read {}", local.display()))?;
        let name = local
            .file_name()
            .and_then(|n| n.to_str())
            .context("the local path has no file name")?;
        let target = match self.remote_kind(id, path).await? {
            Some(true) => remote_join(path, name),
            _ => path.to_owned(),
        };
        let mut copied = Copied::default();
        if metadata.is_file() {
            copied.add(self.put(id, &target, local, mode_of(&metadata)).await?);
            return Ok(copied);
        }
        if !metadata.is_dir() {
            bail!("{} is neither a file nor a directory", local.display());
        }
        let mut dirs = vec![target.clone()];
        let mut files = Vec::new();
        walk_local(local, &target, &mut dirs, &mut files)?;
        self.mkdirs(id, &dirs).await?;
        for (local, remote, mode) in files {
            copied.add(self.put(id, &remote, &local, mode).await?);
        }
        Ok(copied)
    }

    /// Unpacks a tar from `input` under the sandbox directory `path` (made if missing).
    async fn upload_tar(&self, input: impl Read, id: &str, path: &str) -> anyhow::Result<Copied> {
        self.mkdirs(id, &[path.to_owned()]).await?;
        let mut archive = tar::Archive::new(input);
        let mut copied = Copied::default();
        let mut made = std::collections::BTreeSet::new();
        for entry in archive.entries().context("not a tar stream")? {
            let mut entry = entry.context("a broken tar entry")?;
            let relative = safe_relative(&entry.path()?)?;
            let Some(relative) = relative else { continue };
            let remote = remote_join(path, &relative);
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            match entry.header().entry_type() {
                tar::EntryType::Directory => {
                    self.mkdirs(id, std::slice::from_ref(&remote)).await?;
                    made.insert(remote);
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let parent = remote.rsplit_once('/').map_or("/", |(p, _)| p).to_owned();
                    if !parent.is_empty() && made.insert(parent.clone()) {
                        self.mkdirs(id, &[parent]).await?;
                    }
                    let mut spool = tempfile::NamedTempFile::new()?;
                    std::io::copy(&mut entry, spool.as_file_mut())?;
                    copied.add(self.put(id, &remote, spool.path(), mode).await?);
                }
                other => eprintln!("skipped {relative}: a tar entry of type {other:?}"),
            }
        }
        Ok(copied)
    }

    /// `mkdir -p` in the sandbox, a batch of directories per exec.
    async fn mkdirs(&self, id: &str, dirs: &[String]) -> anyhow::Result<()> {
        for batch in dirs.chunks(MKDIR_BATCH) {
            let mut args = vec!["-p".to_owned()];
            args.extend(batch.iter().cloned());
            let answer: serde_json::Value = self
                .api
                .post(
                    &format!("/api/v1/sandboxes/{id}/exec"),
                    &json!({"command": "mkdir", "args": args, "mode": "argv"}),
                )
                .await?;
            if answer["exit_code"].as_i64() != Some(0) {
                bail!(
                    "cannot create directories in {id}: {}",
                    answer["stderr"].as_str().unwrap_or("").trim()
                );
            }
        }
        Ok(())
    }

    /// Streams one local file to the sandbox.
    async fn put(&self, id: &str, remote: &str, local: &Path, mode: u32) -> anyhow::Result<u64> {
        let file = tokio::fs::File::open(local)
            .await
            .with_context(|| format!("cannot open {}", local.display()))?;
        let request = self
            .api
            .request(
                reqwest::Method::PUT,
                &format!(
                    "/api/v1/sandboxes/{id}/files?path={}&mode={:04o}",
                    encode(remote),
                    mode
                ),
            )
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::from(file));
        let answer: serde_json::Value = self
            .api
            .raw(request)
            .await
            .with_context(|| format!("{id}:{remote}"))?
            .json()
            .await?;
        Ok(answer["size"].as_u64().unwrap_or(0))
    }
}

/// Collects the directories (parents first) and files below `local`, mapped under
/// the sandbox directory `remote`.
fn walk_local(
    local: &Path,
    remote: &str,
    dirs: &mut Vec<String>,
    files: &mut Vec<(PathBuf, String, u32)>,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(local)
        .with_context(|| format!("cannot read {}", local.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            eprintln!("skipped {}: not a UTF-8 name", path.display());
            continue;
        };
        let metadata = entry.metadata()?;
        let target = remote_join(remote, &name);
        if metadata.is_dir() {
            dirs.push(target.clone());
            walk_local(&path, &target, dirs, files)?;
        } else if metadata.is_file() {
            files.push((path, target, mode_of(&metadata)));
        } else {
            eprintln!(
                "skipped {}: not a regular file or directory",
                path.display()
            );
        }
    }
    Ok(())
}

/// A tar entry's path as a relative sandbox path; `None` for the archive's `.`.
/// Absolute paths and `..` are refused: an archive must not write outside its target.
fn safe_relative(path: &Path) -> anyhow::Result<Option<String>> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(
                part.to_str()
                    .with_context(|| format!("{}: not a UTF-8 name", path.display()))?
                    .to_owned(),
            ),
            Component::CurDir => {}
            _ => bail!(
                "the tar entry {} leaves its directory (absolute or ..)",
                path.display()
            ),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// `path` relative to the directory `root`, both sandbox paths.
fn relative_to(root: &str, path: &str) -> anyhow::Result<PathBuf> {
    let prefix = if root == "/" {
        "/".to_owned()
    } else {
        format!("{root}/")
    };
    let relative = path
        .strip_prefix(&prefix)
        .with_context(|| format!("the sandbox listed {path} under {root}"))?;
    Ok(safe_relative(Path::new(relative))?
        .map(PathBuf::from)
        .unwrap_or_default())
}

fn header_for(file: &RemoteFile, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(file.mode());
    let mtime = file
        .modified()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or(Duration::ZERO);
    header.set_mtime(mtime.as_secs());
    header.set_size(0);
    header
}

fn append_dir(
    archive: &mut tar::Builder<impl Write>,
    name: &str,
    dir: &RemoteFile,
) -> anyhow::Result<()> {
    let mut header = header_for(dir, tar::EntryType::Directory);
    archive.append_data(&mut header, format!("{name}/"), std::io::empty())?;
    Ok(())
}

fn mode_of(metadata: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_like_docker_cp() {
        assert_eq!(Endpoint::parse("-").unwrap(), Endpoint::Stdio);
        assert_eq!(
            Endpoint::parse("sbx-1:/workspace/a//b/").unwrap(),
            Endpoint::Sandbox {
                id: "sbx-1".into(),
                path: "/workspace/a/b".into()
            }
        );
        assert_eq!(
            Endpoint::parse("sbx-1:notes").unwrap(),
            Endpoint::Sandbox {
                id: "sbx-1".into(),
                path: "/workspace/notes".into()
            }
        );
        assert_eq!(
            Endpoint::parse("./a:b").unwrap(),
            Endpoint::Local("./a:b".into())
        );
        assert_eq!(
            Endpoint::parse("dir/a:b").unwrap(),
            Endpoint::Local("dir/a:b".into())
        );
        assert!(Endpoint::parse("sbx-1:").is_err());
    }

    #[test]
    fn tar_entries_stay_inside_their_target() {
        assert_eq!(
            safe_relative(Path::new("./a/b")).unwrap(),
            Some("a/b".into())
        );
        assert_eq!(safe_relative(Path::new(".")).unwrap(), None);
        assert!(safe_relative(Path::new("../etc/passwd")).is_err());
        assert!(safe_relative(Path::new("a/../../x")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn sandbox_paths_relative_to_a_root() {
        assert_eq!(
            relative_to("/workspace", "/workspace/a/b").unwrap(),
            PathBuf::from("a/b")
        );
        assert_eq!(relative_to("/", "/etc").unwrap(), PathBuf::from("etc"));
        assert!(relative_to("/workspace", "/etc/passwd").is_err());
        assert!(relative_to("/workspace", "/workspace/../x").is_err());
        assert_eq!(remote_join("/", "a"), "/a");
        assert_eq!(remote_name("/workspace/a"), "a");
    }
}
