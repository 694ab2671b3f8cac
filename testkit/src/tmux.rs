//! A tmux server of a test's own, to drive terminal programs as a person would
//! (`send-keys`) and read what they show (`capture-pane`): `berth sandbox shell`, and
//! OpenSSH's `ssh -t`. Without tmux the caller skips visibly, unless CI's
//! `BERTH_REQUIRE_DOCKER=1` says it must be there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A tmux server of the test's own, its socket in a temp dir.
pub struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    pub fn start() -> Option<Self> {
        let found = std::process::Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok();
        if !found {
            if std::env::var("BERTH_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!("BERTH_REQUIRE_DOCKER=1 but tmux is not installed");
            }
            eprintln!("SKIPPED: tmux is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        Some(Self {
            socket: dir.path().join("tmux.sock"),
            _dir: dir,
        })
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A window running `line` in a terminal of `cols`x`rows`; its exit status goes to
    /// `status_file`.
    pub fn open(&self, name: &str, cols: u16, rows: u16, line: &str, status_file: &Path) {
        let script = format!("{line}; echo $? > {}; sleep 600", status_file.display());
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            "sh",
            "-c",
            &script,
        ]);
    }

    pub fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", name];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    pub fn screen(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", name])
    }

    /// Waits until the screen shows `text` (after `after`, when given).
    pub async fn wait_for(&self, name: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen(name);
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never showed:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

pub async fn status_of(tmux: &Tmux, name: &str, file: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(code) = text.trim().parse()
        {
            return code;
        }
        assert!(
            Instant::now() < deadline,
            "the command never ended:\n{}",
            tmux.screen(name)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
