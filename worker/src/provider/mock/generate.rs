//! The `generate` builtin: the mock's own output generator for load tests:
//! `generate (--bytes N | --lines N) [--chunk BYTES] [--delay-ms MS] [--stderr]`.
//! Bytes are a repeating printable 64-byte pattern cut into chunks of `--chunk` bytes
//! (default 64 KiB, at most 16 MiB). Lines are `line 1\n`, `line 2\n`, ... one line
//! per chunk, or with `--chunk` packed into chunks of at least that many bytes (lines
//! are never split). `--delay-ms` sleeps between chunks.

use std::fmt::Write as _;
use std::time::Duration;

use super::commands::CHUNK;
use super::exec::{Ctx, Stop};
use super::shell::Fd;

const MAX_CHUNK: u64 = 16 * 1024 * 1024;
const PATTERN: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n";

struct Generate {
    bytes: Option<u64>,
    lines: Option<u64>,
    chunk: Option<u64>,
    delay: Duration,
    fd: Fd,
}

fn parse(args: &[String]) -> Result<Generate, String> {
    let mut options = Generate {
        bytes: None,
        lines: None,
        chunk: None,
        delay: Duration::ZERO,
        fd: Fd::Stdout,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--stderr" {
            options.fd = Fd::Stderr;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg.as_str(), None),
        };
        let value = inline
            .or_else(|| rest.next().map(String::as_str))
            .ok_or_else(|| format!("option {name} needs a value"))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("invalid number {value:?} for {name}"))?;
        match name {
            "--bytes" => options.bytes = Some(number),
            "--lines" => options.lines = Some(number),
            "--chunk" if number > 0 => options.chunk = Some(number.min(MAX_CHUNK)),
            "--chunk" => return Err("--chunk must be positive".into()),
            "--delay-ms" => options.delay = Duration::from_millis(number),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.bytes.is_some() == options.lines.is_some() {
        return Err("give exactly one of --bytes N and --lines N".into());
    }
    Ok(options)
}

pub async fn generate(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    let options = match parse(args) {
        Ok(options) => options,
        Err(message) => {
            let usage = "usage: generate (--bytes N | --lines N) [--chunk BYTES] [--delay-ms MS] [--stderr]";
            ctx.err(format!("generate: {message}\n{usage}\n")).await?;
            return Ok(2);
        }
    };
    let mut first = true;
    if let Some(total) = options.bytes {
        let chunk = options.chunk.unwrap_or(CHUNK as u64).min(total.max(1)) as usize;
        // Any chunk is a slice of this, starting at the pattern offset.
        let pattern: Vec<u8> = PATTERN
            .iter()
            .cycle()
            .take(chunk + PATTERN.len())
            .copied()
            .collect();
        let mut sent = 0u64;
        while sent < total {
            if !first && !options.delay.is_zero() {
                tokio::time::sleep(options.delay).await;
            }
            first = false;
            let len = chunk.min((total - sent) as usize);
            let offset = (sent % PATTERN.len() as u64) as usize;
            ctx.write(options.fd, pattern[offset..offset + len].to_vec())
                .await?;
            sent += len as u64;
        }
    } else if let Some(total) = options.lines {
        let mut pending = String::new();
        for number in 1..=total {
            let _ = writeln!(pending, "line {number}");
            let full = options
                .chunk
                .is_none_or(|chunk| pending.len() as u64 >= chunk);
            if full || number == total {
                if !first && !options.delay.is_zero() {
                    tokio::time::sleep(options.delay).await;
                }
                first = false;
                ctx.write(options.fd, std::mem::take(&mut pending).into_bytes())
                    .await?;
            }
        }
    }
    Ok(0)
}
