//! Tar archives for the engine's archive API, streamed both ways on blocking threads
//! (tar is synchronous work): an upload is one file written from a spool file into a
//! bounded channel; a download is parsed as it arrives, its first entry's content
//! forwarded in 64 KiB chunks into a bounded channel, so neither direction holds a
//! whole file in memory.

use std::io::{Read, Write};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::provider::ProviderError;

/// Size of the chunks sent either way.
const CHUNK: usize = 64 * 1024;
/// Chunks buffered between a blocking tar thread and its async side.
const BUFFER: usize = 8;

/// A tar of one regular file `name` (no directories) with `mode`, its content read
/// from `content` (`size` bytes), as a stream of chunks.
pub fn single_file(
    name: String,
    mode: u32,
    size: u64,
    mtime: u64,
    content: std::fs::File,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter {
            tx: tx.clone(),
            pending: Vec::with_capacity(CHUNK),
        };
        let written = (|| {
            let mut builder = tar::Builder::new(writer);
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
            header.set_mode(mode & 0o7777);
            header.set_mtime(mtime);
            header.set_uid(0);
            header.set_gid(0);
            builder.append_data(&mut header, &name, content.take(size))?;
            builder.into_inner()?.flush()
        })();
        if let Err(err) = written {
            let _ = tx.blocking_send(Err(err));
        }
    });
    ReceiverStream::new(rx)
}

/// Sends what is written in chunks of [`CHUNK`] bytes.
struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    pending: Vec<u8>,
}

impl ChunkWriter {
    fn send_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload abandoned"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.pending.len();
        let taken = data.len().min(room);
        self.pending.extend_from_slice(&data[..taken]);
        if self.pending.len() == CHUNK {
            self.send_pending()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_pending()
    }
}

/// What the first entry of a downloaded archive is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// A regular file: its content follows on the chunk channel.
    File,
    Directory,
    /// A symbolic link to this target.
    Symlink(String),
    /// Anything else (device, fifo, ...).
    Other,
}

pub type Chunks = mpsc::Receiver<Result<Vec<u8>, ProviderError>>;

/// Parses a downloaded archive: what its first entry is, and for a regular file its
/// content as chunks.
pub async fn first_entry<S>(archive: S) -> Result<(Head, Chunks), ProviderError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    let (head_tx, head_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::task::spawn_blocking(move || {
        let reader = SyncIoBridge::new(StreamReader::new(archive));
        read_first_entry(reader, head_tx, tx);
    });
    let head = head_rx
        .await
        .map_err(|_| ProviderError::Internal("the archive reader stopped".into()))??;
    Ok((head, rx))
}

pub fn read_first_entry(
    reader: impl Read,
    head_tx: oneshot::Sender<Result<Head, ProviderError>>,
    tx: mpsc::Sender<Result<Vec<u8>, ProviderError>>,
) {
    let broken = |err: std::io::Error| {
        ProviderError::Unavailable(format!("reading the archive from the engine failed: {err}"))
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = match archive.entries() {
        Ok(entries) => entries,
        Err(err) => {
            let _ = head_tx.send(Err(broken(err)));
            return;
        }
    };
    let mut entry = match entries.next() {
        Some(Ok(entry)) => entry,
        Some(Err(err)) => {
            let _ = head_tx.send(Err(broken(err)));
            return;
        }
        None => {
            let _ = head_tx.send(Err(ProviderError::Internal(
                "the engine sent an empty archive".into(),
            )));
            return;
        }
    };
    let kind = entry.header().entry_type();
    let head = if kind.is_file() {
        Head::File
    } else if kind.is_dir() {
        Head::Directory
    } else if kind.is_symlink() {
        match entry.link_name() {
            Ok(Some(target)) => Head::Symlink(target.to_string_lossy().into_owned()),
            _ => Head::Other,
        }
    } else {
        Head::Other
    };
    let is_file = head == Head::File;
    if head_tx.send(Ok(head)).is_err() || !is_file {
        return;
    }
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match entry.read(&mut buffer) {
            Ok(0) => return,
            Ok(read) => {
                if tx.blocking_send(Ok(buffer[..read].to_vec())).is_err() {
                    // the reader went away: stop downloading
                    return;
                }
            }
            Err(err) => {
                let _ = tx.blocking_send(Err(broken(err)));
                return;
            }
        }
    }
}

/// An engine byte stream as an `io::Error` stream, for [`first_entry`].
pub fn io_stream(
    stream: impl Stream<Item = Result<Bytes, bollard::errors::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static {
    Box::pin(stream.map(|item| item.map_err(std::io::Error::other)))
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom};

    use super::*;

    #[tokio::test]
    async fn a_file_goes_into_a_tar_and_comes_back_whole() {
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut spool = tempfile::tempfile().unwrap();
        spool.write_all(&content).unwrap();
        spool.seek(SeekFrom::Start(0)).unwrap();
        let name = "a-rather-long-name-".repeat(8) + ".bin";
        let tar = single_file(name, 0o640, content.len() as u64, 0, spool);
        let chunks: Vec<Bytes> = tar.map(Result::unwrap).collect().await;
        assert!(chunks.iter().all(|chunk| chunk.len() <= CHUNK));
        let archive = futures::stream::iter(chunks.into_iter().map(Ok));
        let (head, mut rx) = first_entry(archive).await.unwrap();
        assert_eq!(head, Head::File);
        let mut back = Vec::new();
        while let Some(chunk) = rx.recv().await {
            back.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(back, content);
    }

    #[tokio::test]
    async fn directories_and_links_are_told_apart() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "link", "../target")
            .unwrap();
        let bytes = builder.into_inner().unwrap();
        let archive = futures::stream::iter([Ok(Bytes::from(bytes))]);
        let (head, _) = first_entry(archive).await.unwrap();
        assert_eq!(head, Head::Symlink("../target".into()));

        let broken = futures::stream::iter([Ok(Bytes::from_static(b"not a tar at all"))]);
        assert!(first_entry(broken).await.is_err());
    }
}
