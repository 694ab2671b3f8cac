//! The `sftp` subsystem, on the sandbox's file calls (so it works for every provider
//! and every worker, and modern `scp` works through it).
//!
//! SFTP reads and writes at offsets; the file calls move whole files. So an open
//! file is spooled in a private temporary file on the control plane: opened for
//! reading, the sandbox's file is fetched into it first; opened for writing, writes
//! land in it (after the old contents unless truncated), and the close uploads it in
//! one streamed call. A failed upload fails the close, which the client reports. A
//! spool holds at most [`MAX_SPOOL`] bytes. Paths are taken as the sandbox takes
//! them: absolute, or relative to `/workspace`, which is where a client starts.

mod names;
use std::collections::HashMap;
use std::io::SeekFrom;
use std::time::Duration;

use axum::body::Bytes;
use futures::StreamExt;
use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use self::names::{attributes, base_name, resolve};
use super::Context;
use crate::error::ApiError;
use crate::sandboxes::{ExecCall, FileInfo, SandboxError};

/// The most one open file may hold (bytes).
const MAX_SPOOL: u64 = 4 * 1024 * 1024 * 1024;
/// Open handles per channel, at most.
const MAX_HANDLES: usize = 256;
/// The largest read answered at once (what OpenSSH asks for).
const MAX_READ: u32 = 256 * 1024;
/// Upload chunks (bytes).
const CHUNK: usize = 256 * 1024;
/// The pipe between the channel and the SFTP server (bytes).
const PIPE: usize = 256 * 1024;
/// How long a `mkdir` may take.
const MKDIR_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves SFTP on `channel` until the client is done; then, as sshd does, the
/// channel ends with exit status 0 (scp counts a missing status as a failure).
pub(super) async fn serve(context: Context, channel: Channel<Msg>) {
    context
        .record("ssh sftp", "sftp subsystem".into(), "ok")
        .await;
    let server = SftpServer {
        context,
        handles: HashMap::new(),
        next_handle: 0,
    };
    // the protocol runs in a task of its own, on one end of a pipe; this relays the
    // channel to the other end, so it sees when the server is done
    let (ours, theirs) = tokio::io::duplex(PIPE);
    russh_sftp::server::run(theirs, server).await;
    let (mut from_server, mut to_server) = tokio::io::split(ours);
    let (mut read, write) = channel.split();
    let client = tokio::spawn(async move {
        while let Some(message) = read.wait().await {
            match message {
                ChannelMsg::Data { data } if to_server.write_all(&data).await.is_err() => break,
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => {}
            }
        }
        // end of input: the server finishes what it has, then stops
        let _ = to_server.shutdown().await;
    });
    let mut buf = vec![0u8; PIPE];
    loop {
        match from_server.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                let chunk = Bytes::copy_from_slice(&buf[..read]);
                if write.data_bytes(chunk).await.is_err() {
                    break;
                }
            }
        }
    }
    client.abort();
    let _ = write.exit_status(0).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

struct SftpServer {
    context: Context,
    handles: HashMap<String, Open>,
    next_handle: u64,
}

enum Open {
    File(Spool),
    /// A directory's entries, handed out by the first `readdir`.
    Dir(Option<Vec<FileInfo>>),
}

/// An open file's contents, kept on the control plane's disk.
struct Spool {
    path: String,
    file: tokio::fs::File,
    size: u64,
    /// Written to: uploaded at close.
    writable: bool,
    dirty: bool,
    mode: u32,
}

/// An SFTP error reply.
#[derive(Debug)]
struct Refusal(StatusReply);

impl From<Refusal> for StatusReply {
    fn from(refusal: Refusal) -> Self {
        refusal.0
    }
}

impl From<SandboxError> for Refusal {
    fn from(err: SandboxError) -> Self {
        let code = match &err {
            SandboxError::NotFound(_) | SandboxError::Destroyed(_) => StatusCode::Failure,
            SandboxError::BadRequest(_) => StatusCode::BadMessage,
            SandboxError::Remote(remote) if remote.code == berth_proto::ErrorCode::NotFound => {
                StatusCode::NoSuchFile
            }
            SandboxError::Remote(remote) if remote.code == berth_proto::ErrorCode::Forbidden => {
                StatusCode::PermissionDenied
            }
            _ => StatusCode::Failure,
        };
        Refusal(code.with_message(ApiError::from(err).message))
    }
}

fn failure(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::Failure.with_message(message))
}

fn io_failure(err: std::io::Error) -> Refusal {
    tracing::warn!(error = %err, "SFTP spool");
    failure("the gateway could not buffer the file")
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

impl SftpServer {
    fn add(&mut self, open: Open) -> Result<String, Refusal> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(failure(format!("at most {MAX_HANDLES} open handles")));
        }
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), open);
        Ok(handle)
    }

    fn spool_of(&mut self, handle: &str) -> Result<&mut Spool, Refusal> {
        match self.handles.get_mut(handle) {
            Some(Open::File(spool)) => Ok(spool),
            _ => Err(failure("no such file handle")),
        }
    }

    async fn stat_path(&self, path: &str) -> Result<FileInfo, Refusal> {
        let login = &self.context.login;
        Ok(self
            .context
            .state
            .sandboxes
            .stat_file(&login.access, &login.sandbox_id, path)
            .await?)
    }

    /// The sandbox's file `path`, copied into `file`.
    async fn fetch(&self, path: &str, file: &mut tokio::fs::File) -> Result<u64, Refusal> {
        let login = &self.context.login;
        let mut chunks = self
            .context
            .state
            .sandboxes
            .read_file(&login.access, &login.sandbox_id, path)
            .await?;
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|err| Refusal::from(SandboxError::Remote(err)))?;
            size += chunk.len() as u64;
            if size > MAX_SPOOL {
                return Err(failure(format!(
                    "{path} is larger than the gateway's {MAX_SPOOL}-byte limit"
                )));
            }
            file.write_all(&chunk).await.map_err(io_failure)?;
        }
        file.flush().await.map_err(io_failure)?;
        Ok(size)
    }

    /// Uploads a written spool to its path.
    async fn upload(&self, spool: &mut Spool) -> Result<u64, Refusal> {
        spool
            .file
            .seek(SeekFrom::Start(0))
            .await
            .map_err(io_failure)?;
        let reader = spool.file.try_clone().await.map_err(io_failure)?;
        let size = spool.size;
        let data = futures::stream::unfold((reader, size), |(mut reader, left)| async move {
            if left == 0 {
                return None;
            }
            let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            let mut buf = vec![0; want];
            match reader.read_exact(&mut buf).await {
                Ok(_) => Some((Ok(buf), (reader, left - want as u64))),
                Err(err) => Some((Err(err.to_string()), (reader, 0))),
            }
        });
        let login = &self.context.login;
        Ok(self
            .context
            .state
            .sandboxes
            .write_file(
                &login.access,
                &login.sandbox_id,
                &spool.path,
                spool.mode,
                data,
            )
            .await?)
    }
}

impl russh_sftp::server::Handler for SftpServer {
    type Error = Refusal;

    fn unimplemented(&self) -> Self::Error {
        Refusal(StatusCode::OpUnsupported.into())
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = resolve(&filename);
        let writable = pflags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        );
        let existing = match self.stat_path(&path).await {
            Ok(info) => Some(info),
            Err(Refusal(reply)) if reply.status_code == StatusCode::NoSuchFile => None,
            Err(err) => return Err(err),
        };
        if existing.as_ref().is_some_and(|info| info.is_dir) {
            return Err(failure(format!("{path} is a directory")));
        }
        if writable && pflags.contains(OpenFlags::EXCLUDE) && existing.is_some() {
            return Err(failure(format!("{path} exists")));
        }
        if existing.is_none() && !(writable && pflags.contains(OpenFlags::CREATE)) {
            return Err(Refusal(
                StatusCode::NoSuchFile.with_message(format!("{path}: no such file")),
            ));
        }
        let mut file = tokio::fs::File::from_std(tempfile::tempfile().map_err(io_failure)?);
        let keep_contents =
            existing.is_some() && !(writable && pflags.contains(OpenFlags::TRUNCATE));
        let size = if keep_contents {
            self.fetch(&path, &mut file).await?
        } else {
            0
        };
        let mode = match (&existing, attrs.permissions) {
            (_, Some(mode)) => mode & 0o7777,
            (Some(info), None) => info.mode & 0o7777,
            (None, None) => 0o644,
        };
        let handle = self.add(Open::File(Spool {
            path,
            file,
            size,
            writable,
            // a file created or truncated exists once closed, written to or not
            dirty: writable && !keep_contents,
            mode,
        }))?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::File(mut spool)) if spool.writable && spool.dirty => {
                let path = spool.path.clone();
                match self.upload(&mut spool).await {
                    Ok(size) => {
                        self.context
                            .record("ssh sftp", format!("wrote {path} ({size} bytes)"), "ok")
                            .await;
                        Ok(ok(id))
                    }
                    Err(err) => {
                        let message = err.0.error_message.clone().unwrap_or_default();
                        self.context
                            .record("ssh sftp", format!("write {path}: {message}"), "refused")
                            .await;
                        Err(err)
                    }
                }
            }
            Some(_) => Ok(ok(id)),
            None => Err(failure("no such handle")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let spool = self.spool_of(&handle)?;
        if offset >= spool.size {
            return Err(Refusal(StatusCode::Eof.into()));
        }
        let want = u64::from(len.min(MAX_READ)).min(spool.size - offset);
        let mut data = vec![0; usize::try_from(want).unwrap_or(0)];
        spool
            .file
            .seek(SeekFrom::Start(offset))
            .await
            .map_err(io_failure)?;
        spool.file.read_exact(&mut data).await.map_err(io_failure)?;
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let spool = self.spool_of(&handle)?;
        if !spool.writable {
            return Err(Refusal(
                StatusCode::PermissionDenied.with_message("the file was opened for reading"),
            ));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > MAX_SPOOL {
            return Err(failure(format!(
                "files larger than {MAX_SPOOL} bytes cannot be written through the gateway"
            )));
        }
        spool
            .file
            .seek(SeekFrom::Start(offset))
            .await
            .map_err(io_failure)?;
        spool.file.write_all(&data).await.map_err(io_failure)?;
        spool.size = spool.size.max(end);
        spool.dirty = true;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        russh_sftp::server::Handler::stat(self, id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let spool = self.spool_of(&handle)?;
        let mut attrs = FileAttributes::empty();
        attrs.size = Some(spool.size);
        attrs.permissions = Some(0o100000 | spool.mode);
        Ok(Attrs { id, attrs })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        // times and owners are not the sandbox's to set through file calls; a mode is
        if let Some(mode) = attrs.permissions {
            let login = &self.context.login;
            self.context
                .state
                .sandboxes
                .chmod(
                    &login.access,
                    &login.sandbox_id,
                    &resolve(&path),
                    mode & 0o7777,
                )
                .await?;
        }
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let spool = self.spool_of(&handle)?;
        if let Some(mode) = attrs.permissions {
            spool.mode = mode & 0o7777;
            if !spool.writable {
                let path = spool.path.clone();
                return self.setstat(id, path, attrs).await;
            }
            spool.dirty = true;
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let path = resolve(&path);
        let login = &self.context.login;
        let entries = self
            .context
            .state
            .sandboxes
            .list_files(&login.access, &login.sandbox_id, &path)
            .await?;
        let handle = self.add(Open::Dir(Some(entries)))?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Dir(entries)) => match entries.take() {
                Some(entries) if !entries.is_empty() => Ok(Name {
                    id,
                    files: entries
                        .iter()
                        .map(|info| File::new(base_name(&info.path), attributes(info)))
                        .collect(),
                }),
                _ => Err(Refusal(StatusCode::Eof.into())),
            },
            _ => Err(failure("no such directory handle")),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let path = resolve(&filename);
        let login = &self.context.login;
        self.context
            .state
            .sandboxes
            .delete_file(&login.access, &login.sandbox_id, &path, false)
            .await?;
        self.context
            .record("ssh sftp", format!("removed {path}"), "ok")
            .await;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = resolve(&path);
        let login = &self.context.login;
        let call = ExecCall {
            command: "mkdir".into(),
            args: vec![path.clone()],
            argv: true,
            env: Default::default(),
            workdir: String::new(),
            timeout: Some(MKDIR_TIMEOUT),
        };
        let outcome = self
            .context
            .state
            .sandboxes
            .exec(&login.access, &login.sandbox_id, call)
            .await?;
        if outcome.exit_code != 0 {
            let why = String::from_utf8_lossy(&outcome.stderr).trim().to_owned();
            return Err(failure(format!("cannot make {path}: {why}")));
        }
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        self.remove(id, path).await
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        Ok(Name {
            id,
            files: vec![File::dummy(resolve(&path))],
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let info = self.stat_path(&resolve(&path)).await?;
        Ok(Attrs {
            id,
            attrs: attributes(&info),
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let (old, new) = (resolve(&oldpath), resolve(&newpath));
        let login = &self.context.login;
        self.context
            .state
            .sandboxes
            .move_file(&login.access, &login.sandbox_id, &old, &new)
            .await?;
        Ok(ok(id))
    }
}
