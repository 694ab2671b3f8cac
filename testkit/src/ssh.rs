//! The OpenSSH client (`ssh`, `sftp`, `scp`) against a control plane's SSH gateway, as
//! people run it: no config file, host keys neither checked nor kept (each test's
//! gateway has a new one), no agent, no prompts. Without OpenSSH the caller skips
//! visibly, unless `BERTH_REQUIRE_SSH=1` (CI sets it and installs openssh-client).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

/// How long one client run may take.
const RUN_WITHIN: Duration = Duration::from_secs(120);

/// An OpenSSH client aimed at one gateway, with a temp dir for keys and files.
pub struct OpenSsh {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl OpenSsh {
    /// The client for the gateway at `addr`, or `None` (after saying so) when
    /// OpenSSH is not installed.
    pub fn for_gateway(test: &str, addr: SocketAddr) -> Option<Self> {
        let found = std::process::Command::new("ssh")
            .arg("-V")
            .output()
            .is_ok_and(|out| out.status.success());
        if !found {
            if std::env::var("BERTH_REQUIRE_SSH").as_deref() == Ok("1") {
                panic!("{test}: BERTH_REQUIRE_SSH=1 but OpenSSH's client is not installed");
            }
            eprintln!("SKIPPED {test}: OpenSSH's client is not installed");
            return None;
        }
        Some(Self {
            addr,
            dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    /// A directory of the test's own for files to copy.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new ed25519 key pair named `name`; answers the private key's path (the
    /// public one is beside it, `.pub`).
    pub fn keygen(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("{name}@test"))
            .arg("-f")
            .arg(&path)
            .output()
            .expect("ssh-keygen");
        assert!(out.status.success(), "ssh-keygen: {out:?}");
        path
    }

    /// The options every client run takes.
    fn options(&self, key: Option<&Path>) -> Vec<String> {
        let mut options: Vec<String> = [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=30",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
        ]
        .map(str::to_owned)
        .to_vec();
        match key {
            Some(key) => options.extend(["-i".to_owned(), key.display().to_string()]),
            // no key at all: a token's login needs none
            None => options.extend(["-o".to_owned(), "IdentityFile=/dev/null".to_owned()]),
        }
        options
    }

    /// `ssh -p PORT [OPTIONS] USER@127.0.0.1 COMMAND`.
    pub async fn ssh(
        &self,
        user: &str,
        key: Option<&Path>,
        extra: &[&str],
        command: &str,
    ) -> Output {
        let mut cmd = Command::new("ssh");
        cmd.arg("-p")
            .arg(self.addr.port().to_string())
            .args(self.options(key))
            .args(extra)
            .arg(format!("{user}@{}", self.addr.ip()));
        if !command.is_empty() {
            cmd.arg(command);
        }
        run(cmd).await
    }

    /// The `ssh` command line (for a terminal in tmux).
    pub fn ssh_line(&self, user: &str, key: Option<&Path>, extra: &str) -> String {
        format!(
            "ssh -p {} {} {extra} {user}@{}",
            self.addr.port(),
            self.options(key).join(" "),
            self.addr.ip()
        )
    }

    /// `sftp -b BATCH` as `user`.
    pub async fn sftp(&self, user: &str, key: Option<&Path>, batch: &str) -> Output {
        let file = self.dir.path().join("sftp-batch");
        std::fs::write(&file, batch).expect("write the sftp batch");
        let mut cmd = Command::new("sftp");
        cmd.arg("-P")
            .arg(self.addr.port().to_string())
            .args(self.options(key))
            .arg("-b")
            .arg(&file)
            .arg(format!("{user}@{}", self.addr.ip()));
        run(cmd).await
    }

    /// `scp FROM TO`, where a remote side is written `REMOTE:path` (replaced by
    /// `user@host:path`).
    pub async fn scp(&self, user: &str, key: Option<&Path>, from: &str, to: &str) -> Output {
        let remote = format!("{user}@{}:", self.addr.ip());
        let mut cmd = Command::new("scp");
        cmd.arg("-P")
            .arg(self.addr.port().to_string())
            .args(self.options(key))
            .arg(from.replace("REMOTE:", &remote))
            .arg(to.replace("REMOTE:", &remote));
        run(cmd).await
    }

    /// Starts `ssh -N -L LOCAL:localhost:REMOTE USER@host` and answers once the local
    /// port takes connections; the forward ends when the child is dropped.
    pub async fn forward(
        &self,
        user: &str,
        key: Option<&Path>,
        local: u16,
        remote: u16,
    ) -> tokio::process::Child {
        let mut cmd = Command::new("ssh");
        cmd.arg("-p")
            .arg(self.addr.port().to_string())
            .args(self.options(key))
            .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
            .arg(format!("127.0.0.1:{local}:localhost:{remote}"))
            .arg(format!("{user}@{}", self.addr.ip()))
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null())
            // its goodbye when the test's control plane stops is not the test's output
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn ssh -L");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", local))
                .await
                .is_ok()
            {
                return child;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("ssh -L exited with {status}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ssh -L never listened on {local}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn run(mut cmd: Command) -> Output {
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let shown = format!("{cmd:?}");
    match tokio::time::timeout(RUN_WITHIN, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(err)) => panic!("cannot run {shown}: {err}"),
        Err(_) => panic!("{shown} did not finish within {RUN_WITHIN:?}"),
    }
}

/// A free local port (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
