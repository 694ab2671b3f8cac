//! Whether a docker engine answers (and what it is, for the report), and whether the
//! section's image is on it (there is no registry).

use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use tokio::process::Command;

use super::cli::docker;

/// Longest the engine may take to answer `docker info`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The engine as the report names it, or why none answers.
pub(super) async fn probe_engine() -> Result<String, String> {
    let format = "{{.ServerVersion}}|{{.Driver}}|{{.DefaultRuntime}}|{{.CgroupVersion}}|{{.NCPU}}";
    let output = tokio::time::timeout(
        PROBE_TIMEOUT,
        Command::new("docker")
            .args(["info", "--format", format])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("`docker info` did not answer within {PROBE_TIMEOUT:?}"))?
    .map_err(|err| format!("cannot run the docker CLI: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match describe_engine(&stdout) {
        Some(engine) if output.status.success() => Ok(engine),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let why = stderr
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("`docker info` gave no server version");
            Err(why.to_owned())
        }
    }
}

/// `20.10.24|overlay2|runc|2|8` -> `docker 20.10.24, storage overlay2, runtime runc,
/// cgroup v2, 8 CPUs`; None without a server version.
fn describe_engine(info: &str) -> Option<String> {
    let fields: Vec<&str> = info.trim().split('|').map(str::trim).collect();
    let [version, driver, runtime, cgroup, cpus] = fields.as_slice() else {
        return None;
    };
    if version.is_empty() {
        return None;
    }
    Some(format!(
        "docker {version}, storage {driver}, runtime {runtime}, cgroup v{cgroup}, {cpus} CPUs"
    ))
}

pub(super) async fn check_image(image: &str) -> anyhow::Result<()> {
    if let Err(err) = docker(&["image", "inspect", "--format", "{{.Id}}", image]).await {
        bail!(
            "image {image} is not on the docker engine (there is no registry): build it with \
             `bash smoke/docker-test-image.sh` ({err:#})"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_info_is_described_or_missing() {
        assert_eq!(
            describe_engine("20.10.24|overlay2|runc|2|8\n").as_deref(),
            Some("docker 20.10.24, storage overlay2, runtime runc, cgroup v2, 8 CPUs")
        );
        assert_eq!(describe_engine("|||| \n"), None);
        assert_eq!(describe_engine(""), None);
    }
}
