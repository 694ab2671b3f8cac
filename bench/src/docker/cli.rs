//! The docker CLI side: running `docker …` with a timeout, `docker run` of a plain
//! container or of one with Berth's options (derived from the worker's own container
//! settings), and the per-sandbox network Berth makes.

use std::collections::BTreeMap;
use std::process::Stdio;

use anyhow::{Context, ensure};
use tokio::process::Command;

use berth_worker::DockerConfig;
use berth_worker::provider::SandboxSpec;

use super::measure::Target;
use super::{CLI_TIMEOUT, MEMORY_MB, OWNER_LABEL, PREFIX, VCPUS};

/// `docker run --name NAME --label OWNER OPTIONS… IMAGE COMMAND…` (`options` holds
/// `-d`); the container keeps running until removed.
pub(super) async fn cli_run(
    target: &Target<'_>,
    name: &str,
    options: &[&str],
    command: &[&str],
) -> anyhow::Result<()> {
    let mut args = options.to_vec();
    args.push(target.image);
    args.extend_from_slice(command);
    run_container(target, name, &args).await
}

/// `docker run --name NAME --label OWNER ARGS…` (`args` holds `-d`, the image and the
/// command); the container keeps running until removed.
pub(super) async fn run_container<S: AsRef<str>>(
    target: &Target<'_>,
    name: &str,
    args: &[S],
) -> anyhow::Result<()> {
    let owner = format!("{OWNER_LABEL}={}", target.pid);
    let mut all = vec!["run", "--name", name, "--label", &owner];
    all.extend(args.iter().map(AsRef::as_ref));
    let id = docker(&all).await?;
    ensure!(!id.trim().is_empty(), "docker run printed no container id");
    Ok(())
}

/// The network Berth makes per sandbox: a bridge with inter-container traffic off.
pub(super) fn network_create_args(name: &str, pid: u32) -> Vec<String> {
    [
        "network",
        "create",
        "--driver",
        "bridge",
        "--opt",
        "com.docker.network.bridge.enable_icc=false",
        "--label",
        &format!("{OWNER_LABEL}={pid}"),
        name,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The arguments of a `docker run` (after `-d`) making the container the docker
/// provider makes for a sandbox `name` on network `name` with `docker` (the bench
/// worker's config), `image` and
/// Berth's default request, as the worker itself derives them
/// ([`DockerConfig::docker_run_args`]); labelled as sandboxes of a worker
/// `berth-bench-<pid>-cli` that never runs, so no worker adopts or removes them.
pub(super) fn like_berth_args(
    docker: &DockerConfig,
    image: &str,
    name: &str,
    pid: u32,
) -> Vec<String> {
    let spec = SandboxSpec {
        sandbox_id: name.to_owned(),
        image: image.to_owned(),
        vcpus: VCPUS,
        memory_mb: MEMORY_MB,
        env: BTreeMap::new(),
        metadata: BTreeMap::new(),
        internet: true,
        services: Vec::new(),
    };
    let worker_id = format!("{PREFIX}{pid}-cli");
    let mut args = vec!["-d".to_owned()];
    args.extend(docker.docker_run_args(&worker_id, &spec, image, name));
    args
}

/// Runs `docker ARGS…` and returns its stdout; an error with its stderr when it fails.
pub(super) async fn docker<S: AsRef<str>>(args: &[S]) -> anyhow::Result<String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let output = tokio::time::timeout(
        CLI_TIMEOUT,
        Command::new("docker")
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| {
        format!(
            "`docker {}` took longer than {CLI_TIMEOUT:?}",
            args.join(" ")
        )
    })?
    .with_context(|| format!("cannot run `docker {}`", args.join(" ")))?;
    ensure!(
        output.status.success(),
        "`docker {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_equivalent_run_copies_the_providers_options() {
        let options = like_berth_args(&DockerConfig::default(), "img", "berth-bench-1-like-0", 1);
        let joined = options.join(" ");
        for expected in [
            "--network berth-bench-1-like-0",
            "--memory 512m --memory-swap 512m",
            "--cpus 1",
            "--pids-limit 512",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--init",
            "--ipc private",
            "-v /workspace",
            "--entrypoint /bin/sh",
        ] {
            assert!(
                joined.contains(expected),
                "{expected} missing from {joined}"
            );
        }
        let network = network_create_args("n", 7).join(" ");
        assert!(network.contains("com.docker.network.bridge.enable_icc=false"));
        assert!(network.contains("--label berth-bench.owner=7"));
    }
}
