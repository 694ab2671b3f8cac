//! CPU time and memory of another process, read from `/proc/<pid>/stat` and
//! `/proc/<pid>/status`: how the bench sees the control plane's own cost.

use std::time::Instant;

use anyhow::Context;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    /// Peak RSS so far.
    pub hwm_kib: u64,
}

/// Reads `pid` now.
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    Ok(ProcSample {
        at: Instant::now(),
        cpu_ticks: cpu_ticks(&stat).context("unexpected /proc/<pid>/stat format")?,
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// CPU used between two samples as a share of one core (1.0 = one core busy).
pub fn cpu_cores_used(before: &ProcSample, after: &ProcSample, ticks_per_second: u64) -> f64 {
    let wall = after.at.saturating_duration_since(before.at).as_secs_f64();
    if wall <= 0.0 || ticks_per_second == 0 {
        return 0.0;
    }
    let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
    ticks / ticks_per_second as f64 / wall
}

/// The whole machine's CPU time so far, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineCpu {
    /// Every state's ticks (user, nice, system, idle, iowait, irq, softirq, steal).
    pub total_ticks: u64,
    /// Ticks the hypervisor gave to someone else while this machine wanted to run.
    pub steal_ticks: u64,
}

impl MachineCpu {
    pub fn sample() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        Self::parse(&stat).context("unexpected /proc/stat format")
    }

    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|line| line.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        Some(Self {
            total_ticks: fields.iter().sum(),
            steal_ticks: fields.get(7).copied().unwrap_or(0),
        })
    }

    /// The share of the machine's CPU time between `before` and `self` that was
    /// stolen, in percent.
    pub fn steal_percent_since(&self, before: &MachineCpu) -> f64 {
        let total = self.total_ticks.saturating_sub(before.total_ticks);
        if total == 0 {
            return 0.0;
        }
        100.0 * self.steal_ticks.saturating_sub(before.steal_ticks) as f64 / total as f64
    }
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux when asking
/// fails, which is what every mainstream kernel uses).
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may contain spaces, so fields are counted after the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after the name: state is field 3, so utime (14) and stime (15) are at 11 and 12
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|line| line.starts_with(key))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_name_with_spaces() {
        let stat = "4242 (berth serve) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1500 250 0 0 20 0 9 0 123 456 789";
        assert_eq!(cpu_ticks(stat), Some(1750));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn steal_is_read_from_the_machine_line() {
        let before =
            MachineCpu::parse("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n")
                .unwrap();
        assert_eq!(before.total_ticks, 1_000);
        assert_eq!(before.steal_ticks, 35);
        let after = MachineCpu {
            total_ticks: 2_000,
            steal_ticks: 135,
        };
        assert!((after.steal_percent_since(&before) - 10.0).abs() < 1e-9);
        assert_eq!(MachineCpu::parse("intr 1 2 3"), None);
        assert!(MachineCpu::sample().is_ok());
    }

    #[test]
    fn memory_lines_are_found_by_key() {
        let status = "Name:\tberth\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10_240));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20_480));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        assert_eq!(mib(10_240), "10.0");
    }

    #[test]
    fn this_process_can_be_sampled() {
        let first = sample(std::process::id()).unwrap();
        let mut spin = 0u64;
        for i in 0..2_000_000u64 {
            spin = spin.wrapping_add(i * i);
        }
        assert!(spin > 0);
        let second = sample(std::process::id()).unwrap();
        assert!(first.rss_kib > 0);
        assert!(second.cpu_ticks >= first.cpu_ticks);
        assert!(cpu_cores_used(&first, &second, ticks_per_second()) >= 0.0);
    }
}
