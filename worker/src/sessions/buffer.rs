//! A session's output: the last `capacity` bytes of stdout and stderr, in the order
//! they came, each byte at its offset in the whole output (one offset space for both
//! streams). Bytes leave only from the front, and only once every byte after them has
//! room; the session decides when (see `session`), this type only keeps the books.

use std::collections::VecDeque;

use bytes::Bytes;

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

#[derive(Debug)]
struct Chunk {
    stream: Stream,
    /// Offset of its first byte.
    offset: u64,
    data: Bytes,
}

/// What a reader gets from [`OutputBuffer::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub stream: Stream,
    pub offset: u64,
    pub data: Bytes,
}

#[derive(Debug)]
pub struct OutputBuffer {
    chunks: VecDeque<Chunk>,
    capacity: usize,
    /// Offset of the first byte held.
    start: u64,
    /// Offset one past the last byte ever written.
    end: u64,
}

impl OutputBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            capacity: capacity.max(1),
            start: 0,
            end: 0,
        }
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes held now.
    pub fn len(&self) -> usize {
        usize::try_from(self.end - self.start).unwrap_or(usize::MAX)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends `data` and drops what no longer fits from the front. The caller has
    /// made sure the dropped bytes may go.
    pub fn push(&mut self, stream: Stream, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let len = data.len() as u64;
        match self.chunks.back_mut() {
            // a small chunk right after one of the same stream grows it, so a terminal
            // that prints a byte at a time does not make a chunk per byte
            Some(last) if last.stream == stream && last.data.len() + data.len() <= 4096 => {
                let mut joined = Vec::with_capacity(last.data.len() + data.len());
                joined.extend_from_slice(&last.data);
                joined.extend_from_slice(&data);
                last.data = Bytes::from(joined);
            }
            _ => self.chunks.push_back(Chunk {
                stream,
                offset: self.end,
                data,
            }),
        }
        self.end += len;
        self.trim();
    }

    fn trim(&mut self) {
        while self.len() > self.capacity {
            let excess = self.len() - self.capacity;
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.data.len() <= excess {
                self.start += front.data.len() as u64;
                self.chunks.pop_front();
            } else {
                front.data = front.data.slice(excess..);
                front.offset += excess as u64;
                self.start += excess as u64;
            }
        }
    }

    /// Up to `max` bytes of one stream from `offset` (which must lie in
    /// `start..end`), or `None` when there is nothing there.
    pub fn read(&self, offset: u64, max: usize) -> Option<Piece> {
        if offset < self.start || offset >= self.end {
            return None;
        }
        // the last chunk starting at or before `offset`
        let index = self
            .chunks
            .partition_point(|chunk| chunk.offset <= offset)
            .checked_sub(1)?;
        let chunk = &self.chunks[index];
        let from = usize::try_from(offset - chunk.offset).ok()?;
        let to = chunk.data.len().min(from.saturating_add(max.max(1)));
        Some(Piece {
            stream: chunk.stream,
            offset,
            data: chunk.data.slice(from..to),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(buffer: &OutputBuffer, mut offset: u64, max: usize) -> Vec<(Stream, Vec<u8>)> {
        let mut pieces = Vec::new();
        while let Some(piece) = buffer.read(offset, max) {
            offset += piece.data.len() as u64;
            pieces.push((piece.stream, piece.data.to_vec()));
        }
        pieces
    }

    #[test]
    fn reads_resume_at_any_offset_in_order() {
        let mut buffer = OutputBuffer::new(1024);
        buffer.push(Stream::Stdout, Bytes::from_static(b"hello "));
        buffer.push(Stream::Stderr, Bytes::from_static(b"oops"));
        buffer.push(Stream::Stdout, Bytes::from_static(b"world"));
        assert_eq!(buffer.end(), 15);
        assert_eq!(
            collect(&buffer, 0, 100),
            vec![
                (Stream::Stdout, b"hello ".to_vec()),
                (Stream::Stderr, b"oops".to_vec()),
                (Stream::Stdout, b"world".to_vec()),
            ]
        );
        assert_eq!(
            collect(&buffer, 8, 100),
            vec![
                (Stream::Stderr, b"ps".to_vec()),
                (Stream::Stdout, b"world".to_vec())
            ]
        );
        assert_eq!(buffer.read(15, 100), None);
        assert_eq!(
            collect(&buffer, 0, 4)[0],
            (Stream::Stdout, b"hell".to_vec())
        );
    }

    #[test]
    fn the_front_goes_when_full_and_offsets_keep_counting() {
        let mut buffer = OutputBuffer::new(10);
        buffer.push(Stream::Stdout, Bytes::from(vec![b'a'; 8]));
        buffer.push(Stream::Stderr, Bytes::from(vec![b'b'; 5]));
        assert_eq!((buffer.start(), buffer.end(), buffer.len()), (3, 13, 10));
        assert_eq!(buffer.read(2, 100), None, "dropped bytes are not readable");
        let pieces = collect(&buffer, 3, 100);
        assert_eq!(
            pieces,
            vec![
                (Stream::Stdout, vec![b'a'; 5]),
                (Stream::Stderr, vec![b'b'; 5])
            ]
        );
        buffer.push(Stream::Stderr, Bytes::from(vec![b'c'; 20]));
        assert_eq!((buffer.start(), buffer.end()), (23, 33));
        assert_eq!(
            collect(&buffer, 23, 100),
            vec![(Stream::Stderr, vec![b'c'; 10])]
        );
    }

    #[test]
    fn small_writes_of_one_stream_share_a_chunk() {
        let mut buffer = OutputBuffer::new(1 << 20);
        for _ in 0..1000 {
            buffer.push(Stream::Stdout, Bytes::from_static(b"x"));
        }
        assert_eq!(buffer.chunks.len(), 1);
        assert_eq!(buffer.read(500, 1 << 20).unwrap().data.len(), 500);
    }
}
