//! What the numbers were measured on: CPU model and cores, memory, kernel, the git
//! commit of the tree and the build profile of the binaries.

use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub git_commit: String,
    pub profile: &'static str,
    pub open_files_limit: u64,
}

impl Machine {
    /// Reads /proc and asks git (in `repo`) for the commit; unknown values stay visible
    /// as "unknown" rather than failing the run.
    pub fn detect(repo: &Path, open_files_limit: u64) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_owned()),
            cores: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(0),
            memory_gib: mem_total_kib(&meminfo).unwrap_or(0) as f64 / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
            git_commit: git_commit(repo),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            open_files_limit,
        }
    }

    /// One line for the head of every table.
    pub fn one_line(&self) -> String {
        format!(
            "{} ({} cores), {:.1} GiB RAM, Linux {}, commit {}, {} build",
            self.cpu_model, self.cores, self.memory_gib, self.kernel, self.git_commit, self.profile
        )
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

/// The short commit, with `-dirty` when the tree has uncommitted changes.
fn git_commit(repo: &Path) -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(repo)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let Some(commit) = run(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_come_from_proc_text() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        let meminfo = "MemTotal:       24555060 kB\nMemFree:        22000000 kB\n";
        assert_eq!(mem_total_kib(meminfo), Some(24_555_060));
        assert_eq!(mem_total_kib(""), None);
    }

    #[test]
    fn this_machine_is_described() {
        let machine = Machine::detect(Path::new(env!("CARGO_MANIFEST_DIR")), 1024);
        assert!(machine.cores >= 1);
        let line = machine.one_line();
        assert!(line.contains("cores"), "{line}");
        assert!(line.contains(machine.profile), "{line}");
    }
}
