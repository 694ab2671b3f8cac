//! The host firewall for sandbox networks: a sandbox must not reach the host's own
//! services (the control plane's API and mesh ports, the worker's port, the metrics
//! port, anything else listening on the host), whichever host address it dials: its
//! gateway, the host's LAN address, another bridge's address.
//!
//! Packets from a sandbox to the host itself traverse the `INPUT` chain (traffic on to
//! other hosts is forwarded and never does), so one jump there covers every host
//! address at once:
//!
//! ```text
//! -A INPUT -s <docker.subnet_pool> -j BERTH-SANDBOX-INPUT
//! -A BERTH-SANDBOX-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
//! -A BERTH-SANDBOX-INPUT -p tcp -j REJECT --reject-with tcp-reset
//! -A BERTH-SANDBOX-INPUT -j REJECT --reject-with icmp-port-unreachable
//! ```
//!
//! Replies to connections the host opened stay allowed; everything a sandbox starts
//! towards the host is refused at once (a reset, not a silent drop, so a program
//! inside fails fast). The engine's DNS for user-defined networks answers inside the
//! container's own namespace, so name resolution is not affected.
//!
//! The rules are reconciled like containers and networks: checked (`iptables -C`)
//! before a spawn and on the inventory pass of every heartbeat, at most once per
//! `docker.host_firewall_check_interval`, and repaired when something (a firewall
//! reload, an operator) removed them. A spawn is refused while they cannot be
//! installed. IPv4 only: sandbox networks have no IPv6 addresses.

use std::process::Output;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::Mutex;

use super::subnets::Ipv4Net;

/// The chain the sandbox pool's traffic to the host jumps to.
pub const CHAIN: &str = "BERTH-SANDBOX-INPUT";

/// Longest one `iptables` call may take (it waits up to 5 s for the xtables lock).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Serialises installs between the providers of one process (in-process workers
/// sharing a host), so two of them never flush and refill the chain at once.
static INSTALLS: Mutex<()> = Mutex::const_new(());

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run iptables: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("`iptables {command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("`iptables {0}` did not finish within {CALL_TIMEOUT:?}")]
    Timeout(String),
}

/// What an install had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Every rule was in place.
    Nothing,
    /// Some were missing and are back.
    Reinstalled,
}

/// The rules of [`CHAIN`], in order.
fn chain_rules() -> [&'static [&'static str]; 3] {
    [
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "RETURN",
        ],
        &["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
        &["-j", "REJECT", "--reject-with", "icmp-port-unreachable"],
    ]
}

/// The `INPUT` rule sending the pool's traffic to [`CHAIN`].
fn jump_rule(pool: Ipv4Net) -> Vec<String> {
    vec!["-s".into(), pool.to_string(), "-j".into(), CHAIN.into()]
}

/// The firewall of one provider's sandbox pool.
#[derive(Debug)]
pub struct HostFirewall {
    pool: Ipv4Net,
    enabled: bool,
    check_interval: Duration,
    /// When the rules were last seen in place.
    checked: Mutex<Option<Instant>>,
    /// Why the last install failed, for the provider's health.
    failure: StdMutex<Option<String>>,
}

impl HostFirewall {
    pub fn new(pool: Ipv4Net, enabled: bool, check_interval: Duration) -> Self {
        Self {
            pool,
            enabled,
            check_interval,
            checked: Mutex::new(None),
            failure: StdMutex::new(None),
        }
    }

    /// Makes sure the rules are in place, checking at most once per interval.
    pub async fn ensure(&self) -> Result<(), FirewallError> {
        if !self.enabled {
            return Ok(());
        }
        let mut checked = self.checked.lock().await;
        if checked.is_some_and(|at| at.elapsed() < self.check_interval) {
            return Ok(());
        }
        let outcome = {
            let _install = INSTALLS.lock().await;
            install(self.pool).await
        };
        let mut failure = self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match outcome {
            Ok(repair) => {
                if repair == Repair::Reinstalled {
                    if checked.is_some() {
                        tracing::warn!(pool = %self.pool, chain = CHAIN, "host firewall rules for sandbox networks were missing; reinstalled");
                    } else {
                        tracing::info!(pool = %self.pool, chain = CHAIN, "host firewall rules for sandbox networks installed");
                    }
                }
                *failure = None;
                *checked = Some(Instant::now());
                Ok(())
            }
            Err(err) => {
                if failure.is_none() {
                    tracing::error!(pool = %self.pool, error = %err, "cannot install the host firewall for sandbox networks; spawns are refused until it is in place");
                }
                *failure = Some(err.to_string());
                *checked = None;
                Err(err)
            }
        }
    }

    /// Why the rules are not in place, if the last attempt failed.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Creates the chain and fills it (flushing a chain whose rules are not all there),
/// then adds the jump from `INPUT` if it is missing.
async fn install(pool: Ipv4Net) -> Result<Repair, FirewallError> {
    let mut repair = Repair::Nothing;
    let created = iptables(&["-N", CHAIN]).await?;
    if !created.status.success() && !stderr_of(&created).contains("exists") {
        return Err(failed(&["-N", CHAIN], &created));
    }
    let mut complete = true;
    for rule in chain_rules() {
        if !check(CHAIN, rule).await? {
            complete = false;
            break;
        }
    }
    if !complete {
        run(&["-F", CHAIN]).await?;
        for rule in chain_rules() {
            let mut args = vec!["-A", CHAIN];
            args.extend_from_slice(rule);
            run(&args).await?;
        }
        repair = Repair::Reinstalled;
    }
    let jump = jump_rule(pool);
    let jump: Vec<&str> = jump.iter().map(String::as_str).collect();
    if !check("INPUT", &jump).await? {
        let mut args = vec!["-I", "INPUT", "1"];
        args.extend_from_slice(&jump);
        run(&args).await?;
        repair = Repair::Reinstalled;
    }
    Ok(repair)
}

/// Whether `rule` is in `chain` (`iptables -C`).
async fn check(chain: &str, rule: &[&str]) -> Result<bool, FirewallError> {
    let mut args = vec!["-C", chain];
    args.extend_from_slice(rule);
    let output = iptables(&args).await?;
    if output.status.success() {
        return Ok(true);
    }
    // exit code 1: no such rule; anything else (2: bad arguments, 4: resource
    // problem such as a missing chain or no permission) is an error
    match output.status.code() {
        Some(1) => Ok(false),
        _ if stderr_of(&output).contains("does a matching rule exist") => Ok(false),
        _ => Err(failed(&args, &output)),
    }
}

async fn run(args: &[&str]) -> Result<(), FirewallError> {
    let output = iptables(args).await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(args, &output))
    }
}

async fn iptables(args: &[&str]) -> Result<Output, FirewallError> {
    let mut command = Command::new("iptables");
    command.arg("-w").arg("5").args(args).kill_on_drop(true);
    match tokio::time::timeout(CALL_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(err)) => Err(FirewallError::Spawn(err)),
        Err(_) => Err(FirewallError::Timeout(args.join(" "))),
    }
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

fn failed(args: &[&str], output: &Output) -> FirewallError {
    FirewallError::Failed {
        command: args.join(" "),
        stderr: stderr_of(output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jump_covers_the_whole_pool() {
        let pool: Ipv4Net = "10.213.0.0/16".parse().unwrap();
        assert_eq!(
            jump_rule(pool),
            ["-s", "10.213.0.0/16", "-j", "BERTH-SANDBOX-INPUT"]
        );
    }

    #[test]
    fn replies_pass_before_anything_is_refused() {
        let rules = chain_rules();
        assert_eq!(rules[0].last(), Some(&"RETURN"));
        assert!(rules[1..].iter().all(|rule| rule.contains(&"REJECT")));
        // the last rule refuses every protocol
        assert_eq!(rules[2][0], "-j");
    }

    #[tokio::test]
    async fn a_disabled_firewall_runs_nothing() {
        let firewall = HostFirewall::new(
            "10.213.0.0/16".parse().unwrap(),
            false,
            Duration::from_secs(30),
        );
        firewall.ensure().await.unwrap();
        assert_eq!(firewall.failure(), None);
    }
}
