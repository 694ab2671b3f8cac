//! The mock shell's builtin commands. Each is small but honest: messages and exit
//! codes follow coreutils and bash where it matters (`cat missing` is 1, `ls missing`
//! is 2, an unknown command is 127), and files live in the sandbox's memory.
//! `generate`, the output generator for load tests, has its own module.

use std::fmt::Write as _;
use std::time::Duration;

use super::exec::{self, Ctx, Stop};
use super::generate;
use super::interactive;
use crate::provider::paths::parent;
use crate::provider::{FileInfo, ProviderError};

/// Chunk size of `cat` output and `generate`'s default.
pub const CHUNK: usize = 64 * 1024;

/// What the line does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Next(i32),
    /// `exit`: the whole line ends with this status.
    Exit(i32),
}

impl Flow {
    pub fn code(self) -> i32 {
        match self {
            Flow::Next(code) | Flow::Exit(code) => code,
        }
    }
}

/// Runs builtin `name`; `/bin/` and `/usr/bin/` prefixes are ignored.
pub async fn run(ctx: &mut Ctx, name: &str, args: &[String]) -> Result<Flow, Stop> {
    let builtin = name
        .strip_prefix("/usr/bin/")
        .or_else(|| name.strip_prefix("/bin/"))
        .unwrap_or(name);
    let code = match builtin {
        "echo" => echo(ctx, args).await?,
        "printf" => printf(ctx, args).await?,
        "cat" => cat(ctx, args).await?,
        "ls" => ls(ctx, args).await?,
        "pwd" => {
            let line = format!("{}\n", ctx.cwd);
            ctx.out(line).await?;
            0
        }
        "env" => {
            let mut text = String::new();
            for (key, value) in &ctx.env {
                let _ = writeln!(text, "{key}={value}");
            }
            ctx.out(text).await?;
            0
        }
        "cd" => cd(ctx, args).await?,
        "mkdir" => mkdir(ctx, args).await?,
        "rm" => rm(ctx, args).await?,
        "touch" => touch(ctx, args).await?,
        "sleep" => sleep(ctx, args).await?,
        "true" => 0,
        "false" => 1,
        "exit" => return exit(ctx, args).await,
        "generate" => generate::generate(ctx, args).await?,
        "sh" | "bash" if args.is_empty() => return interactive::shell(ctx).await,
        "sh" | "bash" => sh(ctx, args).await?,
        "read" => interactive::read(ctx, args).await?,
        "stty" => interactive::stty(ctx, args).await?,
        "serve" => super::serve::serve(ctx, args).await?,
        _ => {
            ctx.err(format!("{name}: command not found\n")).await?;
            127
        }
    };
    Ok(Flow::Next(code))
}

/// The `strerror` text of a filesystem error, as coreutils prints it.
pub fn describe(err: &ProviderError) -> String {
    let text = match err {
        ProviderError::FileNotFound(_) => "No such file or directory",
        ProviderError::IsADirectory(_) => "Is a directory",
        ProviderError::NotADirectory(_) => "Not a directory",
        ProviderError::DirectoryNotEmpty(_) => "Directory not empty",
        ProviderError::FileExists(_) => "File exists",
        ProviderError::InvalidPath { reason, .. } => return format!("invalid path: {reason}"),
        other => return other.to_string(),
    };
    text.to_owned()
}

/// Splits leading `-xyz` flags (each letter checked against `known`) from operands.
fn flags<'a>(args: &'a [String], known: &str) -> Result<(String, Vec<&'a str>), char> {
    let mut seen = String::new();
    let mut operands = Vec::new();
    for arg in args {
        match arg.strip_prefix('-') {
            Some(letters) if !letters.is_empty() && operands.is_empty() => {
                if let Some(bad) = letters.chars().find(|c| !known.contains(*c)) {
                    return Err(bad);
                }
                seen.push_str(letters);
            }
            _ => operands.push(arg.as_str()),
        }
    }
    Ok((seen, operands))
}

/// `\n`, `\t`, `\r`, `\\`; other backslashes stay as they are.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

async fn echo(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    let (mut newline, mut escapes) = (true, false);
    let mut rest = args;
    while let Some((first, tail)) = rest.split_first() {
        let Some(letters) = first.strip_prefix('-') else {
            break;
        };
        if letters.is_empty() || !letters.chars().all(|c| matches!(c, 'n' | 'e' | 'E')) {
            break;
        }
        for letter in letters.chars() {
            match letter {
                'n' => newline = false,
                'e' => escapes = true,
                _ => escapes = false,
            }
        }
        rest = tail;
    }
    let mut text = rest.join(" ");
    if escapes {
        text = unescape(&text);
    }
    if newline {
        text.push('\n');
    }
    ctx.out(text).await?;
    Ok(0)
}

async fn printf(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    let Some((format, mut rest)) = args.split_first() else {
        ctx.err("printf: missing operand\n").await?;
        return Ok(1);
    };
    let format = unescape(format);
    let (mut out, mut errors, mut status) = (String::new(), String::new(), 0);
    // The format is reused while arguments remain, as long as it consumes some.
    loop {
        let mut consumed = false;
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let conversion = chars.next();
            if conversion == Some('%') {
                out.push('%');
                continue;
            }
            let arg = match rest.split_first() {
                Some((arg, tail)) => {
                    rest = tail;
                    consumed = true;
                    arg.as_str()
                }
                None => "",
            };
            match conversion {
                Some('s') => out.push_str(arg),
                Some('d' | 'i') => match arg.trim() {
                    "" => out.push('0'),
                    number => match number.parse::<i64>() {
                        Ok(value) => {
                            let _ = write!(out, "{value}");
                        }
                        Err(_) => {
                            let _ = writeln!(errors, "printf: '{arg}': invalid number");
                            out.push('0');
                            status = 1;
                        }
                    },
                },
                other => {
                    let spec = other.map(String::from).unwrap_or_default();
                    let message = format!("printf: %{spec}: invalid conversion specification\n");
                    ctx.out(out).await?;
                    ctx.err(message).await?;
                    return Ok(1);
                }
            }
        }
        if !consumed || rest.is_empty() {
            break;
        }
    }
    ctx.out(out).await?;
    ctx.err(errors).await?;
    Ok(status)
}

async fn cat(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    let mut status = 0;
    let stdin_only = ["-".to_owned()];
    let names = if args.is_empty() {
        &stdin_only[..]
    } else {
        args
    };
    for name in names {
        if name == "-" {
            // stdin until end-of-file (a plain exec's is empty)
            while let Some(data) = match ctx.io.stdin.as_mut() {
                Some(stdin) => stdin.read().await,
                None => None,
            } {
                ctx.out(data).await?;
            }
            continue;
        }
        let content = ctx
            .resolve(name)
            .and_then(|path| ctx.sandbox.fs().read(&path));
        match content {
            Ok(data) => {
                for chunk in data.chunks(CHUNK) {
                    ctx.out(chunk.to_vec()).await?;
                }
            }
            Err(err) => {
                ctx.err(format!("cat: {name}: {}\n", describe(&err)))
                    .await?;
                status = 1;
            }
        }
    }
    Ok(status)
}

async fn ls(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    let (letters, mut operands) = match flags(args, "la") {
        Ok(parsed) => parsed,
        Err(bad) => {
            ctx.err(format!("ls: invalid option -- '{bad}'\n")).await?;
            return Ok(2);
        }
    };
    let (long, all) = (letters.contains('l'), letters.contains('a'));
    if operands.is_empty() {
        operands.push(".");
    }
    let (mut out, mut errors, mut status) = (String::new(), String::new(), 0);
    {
        let fs = ctx.sandbox.fs();
        // Files first, then each directory's entries, as ls does.
        let mut dirs = Vec::new();
        for name in &operands {
            match ctx.resolve(name).and_then(|path| fs.stat(&path)) {
                Ok(info) if info.is_dir => dirs.push((*name, info)),
                Ok(info) => out.push_str(&ls_entry(&info, name, long)),
                Err(err) => {
                    let _ = writeln!(errors, "ls: cannot access '{name}': {}", describe(&err));
                    status = 2;
                }
            }
        }
        for (index, (name, dir)) in dirs.iter().enumerate() {
            if operands.len() > 1 {
                if !out.is_empty() || index > 0 {
                    out.push('\n');
                }
                let _ = writeln!(out, "{name}:");
            }
            if all {
                out.push_str(&ls_entry(dir, ".", long));
                if let Ok(up) = fs.stat(parent(&dir.path)) {
                    out.push_str(&ls_entry(&up, "..", long));
                }
            }
            for child in fs.list(&dir.path).unwrap_or_default() {
                let base = child.path.rsplit('/').next().unwrap_or_default();
                if all || !base.starts_with('.') {
                    out.push_str(&ls_entry(&child, base, long));
                }
            }
        }
    }
    ctx.out(out).await?;
    ctx.err(errors).await?;
    Ok(status)
}

fn ls_entry(info: &FileInfo, name: &str, long: bool) -> String {
    if !long {
        return format!("{name}\n");
    }
    let mut mode = String::from(if info.is_dir { "d" } else { "-" });
    for (shift, letters) in [(6, "rwx"), (3, "rwx"), (0, "rwx")] {
        for (bit, letter) in letters.chars().enumerate() {
            let set = info.mode >> (shift + 2 - bit) & 1 == 1;
            mode.push(if set { letter } else { '-' });
        }
    }
    if info.mode & 0o1000 != 0 {
        let x = mode.pop() == Some('x');
        mode.push(if x { 't' } else { 'T' });
    }
    format!("{mode} {:>8} {name}\n", info.size)
}

async fn cd(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    if args.len() > 1 {
        ctx.err("sh: cd: too many arguments\n").await?;
        return Ok(1);
    }
    let home = ctx.env.get("HOME").cloned().unwrap_or_else(|| "/".into());
    let target = args.first().cloned().unwrap_or(home);
    let found = ctx.resolve(&target).and_then(|path| {
        if ctx.sandbox.fs().stat(&path)?.is_dir {
            Ok(path)
        } else {
            Err(ProviderError::NotADirectory(path))
        }
    });
    match found {
        Ok(path) => {
            ctx.env.insert("PWD".into(), path.clone());
            ctx.cwd = path;
            Ok(0)
        }
        Err(err) => {
            ctx.err(format!("sh: cd: {target}: {}\n", describe(&err)))
                .await?;
            Ok(1)
        }
    }
}

async fn mkdir(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    let (letters, operands) = match flags(args, "p") {
        Ok(parsed) => parsed,
        Err(bad) => {
            ctx.err(format!("mkdir: invalid option -- '{bad}'\n"))
                .await?;
            return Ok(1);
        }
    };
    if operands.is_empty() {
        ctx.err("mkdir: missing operand\n").await?;
        return Ok(1);
    }
    let (mut errors, mut status) = (String::new(), 0);
    for name in operands {
        let made = ctx.resolve(name).and_then(|path| {
            let mut fs = ctx.sandbox.fs();
            if letters.contains('p') {
                fs.mkdir_all(&path)
            } else {
                fs.mkdir(&path)
            }
        });
        if let Err(err) = made {
            let reason = describe(&err);
            let _ = writeln!(errors, "mkdir: cannot create directory '{name}': {reason}");
            status = 1;
        }
    }
    ctx.err(errors).await?;
    Ok(status)
}

async fn rm(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    let (letters, operands) = match flags(args, "rRf") {
        Ok(parsed) => parsed,
        Err(bad) => {
            ctx.err(format!("rm: invalid option -- '{bad}'\n")).await?;
            return Ok(1);
        }
    };
    let recursive = letters.contains(['r', 'R']);
    let force = letters.contains('f');
    if operands.is_empty() && !force {
        ctx.err("rm: missing operand\n").await?;
        return Ok(1);
    }
    let (mut errors, mut status) = (String::new(), 0);
    for name in operands {
        let removed = ctx.resolve(name).and_then(|path| {
            let mut fs = ctx.sandbox.fs();
            if path == "/" {
                return Err(ProviderError::InvalidArgument(
                    "it is dangerous to operate recursively on '/'".into(),
                ));
            }
            if fs.stat(&path)?.is_dir && !recursive {
                return Err(ProviderError::IsADirectory(path));
            }
            fs.delete(&path, recursive)
        });
        match removed {
            Ok(()) => {}
            Err(ProviderError::FileNotFound(_)) if force => {}
            Err(err) => {
                let _ = writeln!(errors, "rm: cannot remove '{name}': {}", describe(&err));
                status = 1;
            }
        }
    }
    ctx.err(errors).await?;
    Ok(status)
}

async fn touch(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    if args.is_empty() {
        ctx.err("touch: missing file operand\n").await?;
        return Ok(1);
    }
    let (mut errors, mut status) = (String::new(), 0);
    for name in args {
        let touched = ctx
            .resolve(name)
            .and_then(|path| ctx.sandbox.fs().touch(&path));
        if let Err(err) = touched {
            let _ = writeln!(errors, "touch: cannot touch '{name}': {}", describe(&err));
            status = 1;
        }
    }
    ctx.err(errors).await?;
    Ok(status)
}

async fn sleep(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    if args.is_empty() {
        ctx.err("sleep: missing operand\n").await?;
        return Ok(1);
    }
    // GNU sleep adds up its operands; `s`, `m`, `h` and `d` suffixes are allowed.
    let mut total = Duration::ZERO;
    for arg in args {
        let (number, unit) = match arg.char_indices().last() {
            Some((index, 's')) => (&arg[..index], 1.0),
            Some((index, 'm')) => (&arg[..index], 60.0),
            Some((index, 'h')) => (&arg[..index], 3600.0),
            Some((index, 'd')) => (&arg[..index], 86400.0),
            _ => (arg.as_str(), 1.0),
        };
        let seconds = number
            .parse::<f64>()
            .ok()
            .and_then(|value| Duration::try_from_secs_f64(value * unit).ok());
        match seconds {
            Some(seconds) => total = total.saturating_add(seconds),
            None => {
                ctx.err(format!("sleep: invalid time interval '{arg}'\n"))
                    .await?;
                return Ok(1);
            }
        }
    }
    // Interrupted by dropping this future (timeout, receiver gone, sandbox destroyed).
    tokio::time::sleep(total).await;
    Ok(0)
}

async fn exit(ctx: &mut Ctx, args: &[String]) -> Result<Flow, Stop> {
    let Some(arg) = args.first() else {
        return Ok(Flow::Exit(ctx.last_status));
    };
    match arg.trim().parse::<i64>() {
        Ok(code) => Ok(Flow::Exit(code.rem_euclid(256) as i32)),
        Err(_) => {
            let message = format!("sh: exit: {arg}: numeric argument required\n");
            ctx.err(message).await?;
            Ok(Flow::Exit(2))
        }
    }
}

/// `sh -c LINE` / `bash -c LINE`: the line runs with its own cwd and environment.
async fn sh(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    let [flag, line, ..] = args else {
        ctx.err("sh: only `sh -c LINE` is supported\n").await?;
        return Ok(2);
    };
    if flag != "-c" {
        ctx.err("sh: only `sh -c LINE` is supported\n").await?;
        return Ok(2);
    }
    let saved = (
        ctx.cwd.clone(),
        ctx.env.clone(),
        ctx.last_status,
        ctx.exited,
    );
    let code = exec::run_line(ctx, line).await;
    (ctx.cwd, ctx.env, ctx.last_status, ctx.exited) = saved;
    code
}
