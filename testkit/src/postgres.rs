//! A throwaway Postgres for tests, made from the system's own binaries: `initdb` on a
//! temp dir, `pg_ctl start` of `postgres` on a free loopback port (its socket in that
//! dir, fsync off), one fresh database per test, and a watchdog that stops the server
//! and removes the dir when the test process exits, however it exits. One server per
//! test process, started on first use.
//!
//! `initdb` refuses to run as root: as root, every server command runs as the
//! `postgres` user (or `nobody`) through `runuser`, in a dir that user made.
//!
//! Without the binaries a Postgres test prints `SKIPPED …` and passes, unless
//! `BERTH_REQUIRE_POSTGRES=1` (CI sets it), which makes it fail instead.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Makes a missing Postgres a failure instead of a skip.
pub const REQUIRE_ENV: &str = "BERTH_REQUIRE_POSTGRES";

/// The binaries a throwaway server needs.
const BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// A running throwaway server.
#[derive(Debug)]
pub struct PostgresServer {
    port: u16,
    dir: PathBuf,
    databases: AtomicU32,
}

impl PostgresServer {
    /// The superuser's url of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://berth@127.0.0.1:{}/{name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The dir holding the data dir, the socket and the server log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates an empty database and returns its url.
    pub async fn create_database(&self) -> String {
        use sqlx::Connection;
        let name = format!(
            "berth_test_{}_{}",
            std::process::id(),
            self.databases.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the throwaway postgres");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let _ = admin.close().await;
        self.url(&name)
    }
}

/// The process's throwaway server, started on first use; `None` when the binaries are
/// not installed (a panic instead when [`REQUIRE_ENV`] is set).
pub fn server() -> Option<&'static PostgresServer> {
    static SERVER: OnceLock<Option<PostgresServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let bin = find_binaries()?;
            Some(start(&bin).unwrap_or_else(|err| panic!("throwaway postgres: {err}")))
        })
        .as_ref()
}

/// Whether Postgres tests can run here; when they cannot, says so for `test` (or
/// panics when [`REQUIRE_ENV`] is set).
pub fn available(test: &str) -> bool {
    if find_binaries().is_some() {
        return true;
    }
    let looked = search_dirs()
        .iter()
        .map(|dir| dir.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let message = format!(
        "{test}: no postgres binaries ({}) in {looked}; install Debian's postgresql package",
        BINARIES.join(", ")
    );
    if std::env::var(REQUIRE_ENV).is_ok_and(|value| value == "1") {
        panic!("{message} ({REQUIRE_ENV}=1)");
    }
    eprintln!("SKIPPED {message}");
    false
}

/// A fresh database on the throwaway server, or `None` (after saying so) when Postgres
/// is not installed.
pub async fn fresh_database(test: &str) -> Option<String> {
    if !available(test) {
        return None;
    }
    let server = server().expect("postgres binaries were found");
    Some(server.create_database().await)
}

/// The first directory holding all of `initdb`, `pg_ctl` and `postgres`.
pub fn find_binaries() -> Option<PathBuf> {
    search_dirs()
        .into_iter()
        .find(|dir| BINARIES.iter().all(|name| dir.join(name).is_file()))
}

/// PATH, then Debian's versioned dirs (newest first), then the usual prefixes.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    debian.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.extend(debian.into_iter().map(|(_, dir)| dir));
    dirs.push(PathBuf::from("/usr/local/bin"));
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs
}

/// A server of its own (not the shared one) that also speaks TLS with `cert_pem` and
/// `key_pem`; `None` when the binaries are not installed.
pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Option<PostgresServer> {
    let bin = find_binaries()?;
    let tls = Tls {
        cert_pem: cert_pem.to_owned(),
        key_pem: key_pem.to_owned(),
    };
    Some(start_server(&bin, Some(&tls)).unwrap_or_else(|err| panic!("throwaway postgres: {err}")))
}

/// The server's TLS certificate chain and key.
struct Tls {
    cert_pem: String,
    key_pem: String,
}

fn start(bin: &Path) -> Result<PostgresServer, String> {
    start_server(bin, None)
}

fn start_server(bin: &Path, tls: Option<&Tls>) -> Result<PostgresServer, String> {
    let user = server_user()?;
    let dir = make_dir(user.as_deref())?;
    let data = dir.join("data");
    run(
        as_user(user.as_deref(), &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "berth", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync"),
        "initdb",
    )?;
    let port = free_port()?;
    let mut options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=400",
        dir.display()
    );
    if let Some(tls) = tls {
        // the server reads its key only from a file its own user owns, mode 0600
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        write_as(user.as_deref(), &cert, &tls.cert_pem)?;
        write_as(user.as_deref(), &key, &tls.key_pem)?;
        options.push_str(&format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        ));
    }
    let started = run(
        as_user(user.as_deref(), &bin.join("pg_ctl"))
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .arg("-o")
            .arg(&options),
        "pg_ctl start",
    );
    if let Err(err) = started {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        return Err(format!("{err}\nserver log:\n{log}"));
    }
    watch(bin, user.as_deref(), &dir)?;
    Ok(PostgresServer {
        port,
        dir,
        databases: AtomicU32::new(0),
    })
}

/// Who runs the server: ourselves, or, as root (which `initdb` refuses), `postgres`
/// or `nobody` through `runuser`.
fn server_user() -> Result<Option<String>, String> {
    let uid = output(Command::new("id").arg("-u"), "id -u")?;
    if uid.trim() != "0" {
        return Ok(None);
    }
    for candidate in ["postgres", "nobody"] {
        if Command::new("id")
            .arg("-u")
            .arg(candidate)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
        {
            return Ok(Some(candidate.to_owned()));
        }
    }
    Err("running as root and neither a postgres nor a nobody user exists".into())
}

fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        None => Command::new(program),
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", user, "--"]).arg(program);
            command
        }
    }
}

/// A fresh dir the server's user owns.
fn make_dir(user: Option<&str>) -> Result<PathBuf, String> {
    let made = output(
        as_user(user, Path::new("mktemp")).args(["-d", "/tmp/berth-pg.XXXXXX"]),
        "mktemp",
    )?;
    Ok(PathBuf::from(made.trim()))
}

/// Writes `contents` to `path` as `user`, readable by that user only.
fn write_as(user: Option<&str>, path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = as_user(user, Path::new("sh"))
        .args(["-c", "umask 077 && cat > \"$0\""])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(contents.as_bytes())
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    }
    let status = child
        .wait()
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    if !status.success() {
        return Err(format!("cannot write {}: {status}", path.display()));
    }
    Ok(())
}

/// Stops the server (immediate mode: nothing to keep) and removes its dir once this
/// process is gone, whether it ended or was killed.
fn watch(bin: &Path, user: Option<&str>, dir: &Path) -> Result<(), String> {
    let stop = match user {
        Some(user) => format!("runuser -u {user} -- "),
        None => String::new(),
    };
    let script = format!(
        "while [ -e /proc/{pid} ]; do sleep 1; done; \
         {stop}'{pg_ctl}' stop -D '{data}' -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = dir.join("data").display(),
        dir = dir.display(),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|err| format!("cannot start the watchdog: {err}"))
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|err| format!("no free port: {err}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|err| format!("no free port: {err}"))
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    output(command, what).map(drop)
}

fn output(command: &mut Command, what: &str) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {what}: {err}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
