//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden from the docs and
//! free to change). They reach the parsers that read what a sandbox, a client or the
//! engine controls: sandbox paths and globs, the mock provider's shell, and the docker
//! provider's archive reader and the command output it parses.

use tokio::sync::{mpsc, oneshot};

use crate::provider::ProviderError;

pub use crate::provider::docker::archive::Head;
pub use crate::provider::docker::files::{parse_list, parse_stat, resolve_link};
pub use crate::provider::docker::logs::parse_line;
pub use crate::provider::glob::{Pattern, match_segment, match_segments, split};
pub use crate::provider::mock::shell::{
    Command, Connector, Fd, Item, Part, Redirect, SyntaxError, Target, Word, parse as parse_shell,
};
pub use crate::provider::paths::{WORKSPACE, normalize, normalize_in, parent};
pub use crate::provider::{FileInfo, LogLine};

/// What the docker provider reads from an archive the engine sends: the first entry's
/// kind, and for a regular file its content in the chunks the reader forwarded.
#[derive(Debug)]
pub struct ArchiveRead {
    pub head: Result<Head, ProviderError>,
    pub chunks: Vec<Result<Vec<u8>, ProviderError>>,
}

/// Runs the docker provider's archive reader over `archive` on this thread. The chunk
/// channel is given room for every chunk an archive of this size can yield, so the
/// reader never waits for a consumer.
pub fn read_archive(archive: &[u8]) -> ArchiveRead {
    let (head_tx, mut head_rx) = oneshot::channel();
    // every chunk but an error carries at least one byte of `archive`
    let (tx, mut rx) = mpsc::channel(archive.len() + 2);
    crate::provider::docker::archive::read_first_entry(archive, head_tx, tx);
    let head = head_rx
        .try_recv()
        .unwrap_or_else(|_| Err(ProviderError::Internal("no head was sent".into())));
    let mut chunks = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        chunks.push(chunk);
    }
    ArchiveRead { head, chunks }
}
