//! `docker run` arguments that make the very container the provider creates: read off
//! the [`container_body`] the provider hands the engine, so the two cannot drift
//! apart. The benchmark compares the provider with the docker CLI through them.

use bollard::models::ContainerCreateBody;

use super::config::DockerConfig;
use super::spawn::container_body;
use crate::provider::SandboxSpec;

const MIB: i64 = 1024 * 1024;

impl DockerConfig {
    /// The arguments of a `docker run` (everything after `run`: options, image,
    /// command) that makes the container [`container_body`] describes for `spec`: the
    /// same limits, hardening, labels, environment, volume and network, read off the
    /// very values the provider hands the engine, so the two cannot drift apart.
    /// For comparing the provider with the docker CLI on the same engine.
    pub fn docker_run_args(
        &self,
        worker_id: &str,
        spec: &SandboxSpec,
        image: &str,
        network_mode: &str,
    ) -> Vec<String> {
        let body = container_body(self, worker_id, spec, image, network_mode);
        run_args_of(body).0
    }
}

/// `docker run` arguments for `body`, and what of it they do not express (the tests
/// check that nothing is left, so a new setting in [`container_body`] needs a flag
/// here).
fn run_args_of(mut body: ContainerCreateBody) -> (Vec<String>, ContainerCreateBody) {
    let mut args: Vec<String> = Vec::new();
    let mut flag = |name: &str, value: String| {
        args.push(name.to_owned());
        args.push(value);
    };
    let mut host = body.host_config.take().unwrap_or_default();
    if let Some(memory) = host.memory.take() {
        flag("--memory", byte_size(memory));
    }
    if let Some(swap) = host.memory_swap.take() {
        flag("--memory-swap", byte_size(swap));
    }
    if let Some(nano_cpus) = host.nano_cpus.take() {
        flag("--cpus", cpus(nano_cpus));
    }
    if let Some(pids) = host.pids_limit.take() {
        flag("--pids-limit", pids.to_string());
    }
    for cap in host.cap_drop.take().unwrap_or_default() {
        flag("--cap-drop", cap);
    }
    for option in host.security_opt.take().unwrap_or_default() {
        flag("--security-opt", option);
    }
    let mut tmpfs: Vec<(String, String)> =
        host.tmpfs.take().unwrap_or_default().into_iter().collect();
    tmpfs.sort();
    for (path, options) in tmpfs {
        flag("--tmpfs", format!("{path}:{options}"));
    }
    if let Some(runtime) = host.runtime.take() {
        flag("--runtime", runtime);
    }
    if let Some(network) = host.network_mode.take() {
        flag("--network", network);
    }
    if let Some(ipc) = host.ipc_mode.take() {
        flag("--ipc", ipc);
    }
    if let Some(log) = host.log_config.take() {
        if let Some(driver) = log.typ {
            flag("--log-driver", driver);
        }
        let mut options: Vec<(String, String)> =
            log.config.unwrap_or_default().into_iter().collect();
        options.sort();
        for (key, value) in options {
            flag("--log-opt", format!("{key}={value}"));
        }
    }
    let mut labels: Vec<(String, String)> =
        body.labels.take().unwrap_or_default().into_iter().collect();
    labels.sort();
    for (key, value) in labels {
        flag("--label", format!("{key}={value}"));
    }
    for variable in body.env.take().unwrap_or_default() {
        flag("-e", variable);
    }
    for volume in body.volumes.take().unwrap_or_default() {
        flag("-v", volume);
    }
    if let Some(dir) = body.working_dir.take() {
        flag("-w", dir);
    }
    if let Some(user) = body.user.take() {
        flag("--user", user);
    }
    for (on, name) in [
        (host.readonly_rootfs.take(), "--read-only"),
        (host.init.take(), "--init"),
        (host.publish_all_ports.take(), "--publish-all"),
        (host.privileged.take(), "--privileged"),
        (host.auto_remove.take(), "--rm"),
        (body.tty.take(), "--tty"),
        (body.open_stdin.take(), "--interactive"),
    ] {
        if on == Some(true) {
            args.push(name.to_owned());
        }
    }
    let mut entrypoint = body.entrypoint.take().unwrap_or_default().into_iter();
    if let Some(program) = entrypoint.next() {
        args.extend(["--entrypoint".to_owned(), program]);
    }
    args.extend(body.image.take());
    args.extend(entrypoint);
    args.extend(body.cmd.take().unwrap_or_default());
    body.host_config = Some(host);
    (args, body)
}

/// Bytes as the docker CLI writes sizes: `512m` when whole MiB.
fn byte_size(bytes: i64) -> String {
    if bytes % MIB == 0 {
        format!("{}m", bytes / MIB)
    } else {
        format!("{bytes}b")
    }
}

/// Nano CPUs as `--cpus` takes them: `2`, `1.5`.
fn cpus(nano_cpus: i64) -> String {
    const NANO: i64 = 1_000_000_000;
    if nano_cpus % NANO == 0 {
        (nano_cpus / NANO).to_string()
    } else {
        (nano_cpus as f64 / NANO as f64).to_string()
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::HostConfig;

    use super::*;
    use crate::provider::docker::spawn::tests::spec;

    #[test]
    fn the_docker_run_args_express_the_whole_container() {
        let config = DockerConfig {
            read_only_rootfs: true,
            user: "1000:1000".into(),
            ..Default::default()
        };
        let body = container_body(&config, "w1", &spec(256, 2), "img:1", "berth-sb1");
        let (args, rest) = run_args_of(body);
        assert_eq!(
            rest,
            ContainerCreateBody {
                host_config: Some(HostConfig::default()),
                ..Default::default()
            },
            "a setting of the container has no docker run flag"
        );
        let joined = args.join(" ");
        for expected in [
            "--memory 256m --memory-swap 256m",
            "--cpus 2",
            "--pids-limit 512",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--tmpfs /tmp:rw,nosuid,nodev,size=256m,mode=1777",
            "--runtime runc",
            "--network berth-sb1",
            "--ipc private",
            "--log-driver json-file --log-opt max-file=3 --log-opt max-size=10m",
            "--label berth.managed=true --label berth.sandbox=sb1 --label berth.worker=w1",
            "-e HOME=/workspace -e A=1 -e BERTH_SANDBOX_ID=sb1",
            "-v /workspace -w /workspace",
            "--user 1000:1000",
            "--read-only",
            "--init",
        ] {
            assert!(
                joined.contains(expected),
                "{expected} missing from {joined}"
            );
        }
        assert!(!joined.contains("--privileged") && !joined.contains("--rm"));
        let image = args.iter().position(|arg| arg == "img:1").unwrap();
        assert_eq!(args[image - 2..image], ["--entrypoint", "/bin/sh"]);
        assert_eq!(args[image + 1], "-c");
        assert_eq!(args.last().unwrap(), "berth-init-sb1");
    }

    #[test]
    fn the_log_cap_follows_the_config() {
        let config = DockerConfig {
            log_max_size_mb: 1,
            log_max_files: 5,
            ..Default::default()
        };
        let body = container_body(&config, "w1", &spec(0, 0), "img", "none");
        let joined = run_args_of(body).0.join(" ");
        assert!(
            joined.contains("--log-driver json-file --log-opt max-file=5 --log-opt max-size=1m"),
            "{joined}"
        );
    }

    #[test]
    fn fractional_cpus_and_odd_sizes_keep_their_value() {
        assert_eq!(cpus(1_500_000_000), "1.5");
        assert_eq!(cpus(1_000_000_000), "1");
        assert_eq!(byte_size(512 * MIB), "512m");
        assert_eq!(byte_size(1000), "1000b");
    }
}
