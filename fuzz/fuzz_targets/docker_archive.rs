//! The docker provider's archive reader: the tar stream the engine answers a file read
//! with (its content is whatever the sandbox put in the file, its headers what the
//! engine wrote).
//!
//! Input: first byte 0: the rest is a file's name and content (split at the first
//! NUL), packed into a tar here, which must read back whole; otherwise the rest is the
//! archive as the engine would send it.
//!
//! Checks: nothing panics or blocks; the reader forwards only a regular file's
//! content, in non-empty chunks of at most 64 KiB, never more bytes than the archive
//! holds, with an error (if any) only as the last chunk.
#![no_main]

use berth_worker::fuzzing::{Head, read_archive};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode == 0 {
        let (name, content) = match rest.iter().position(|b| *b == 0) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &[][..]),
        };
        let name = String::from_utf8_lossy(name);
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        // names tar cannot store (empty, absolute, `..`) are not what the engine sends
        if builder
            .append_data(&mut header, name.as_ref(), content)
            .is_err()
        {
            return;
        }
        let archive = builder.into_inner().expect("an in-memory tar");
        let read = read_archive(&archive);
        assert_eq!(read.head.as_ref().ok(), Some(&Head::File));
        let mut back = Vec::new();
        for chunk in read.chunks {
            back.extend_from_slice(&chunk.expect("a whole archive reads without error"));
        }
        assert_eq!(back, content);
        return;
    }
    let read = read_archive(rest);
    let is_file = matches!(read.head, Ok(Head::File));
    if !is_file {
        assert!(
            read.chunks.is_empty(),
            "content forwarded for {:?}",
            read.head
        );
    }
    let mut total = 0;
    let count = read.chunks.len();
    for (i, chunk) in read.chunks.iter().enumerate() {
        match chunk {
            Ok(bytes) => {
                assert!(!bytes.is_empty() && bytes.len() <= 64 * 1024);
                total += bytes.len();
            }
            Err(_) => assert_eq!(i + 1, count, "chunks after an error"),
        }
    }
    assert!(total <= rest.len());
});
