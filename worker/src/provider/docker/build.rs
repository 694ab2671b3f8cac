//! Images built on the worker for templates with `packages` or `on_create`: a
//! container from the base image installs the packages with the image's own package
//! manager (apk, apt-get, dnf, yum or microdnf), runs the script as root, and is
//! committed as `berth/built:<content hash>` ([`ImageBuild::tag`]). A build happens
//! once per engine: a tag that is there is reused, and concurrent builds of one tag on
//! this worker wait for the first. The build runs in a task of its own, so a caller
//! that goes away (a timed-out create) does not leave its container behind; one a
//! worker crash left is removed at the next start (`sweep_build_containers`).
//!
//! Built images are labelled `berth.built`; after each build the oldest beyond
//! [`KEEP_BUILT`] that no container uses are removed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerConfig, ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, ListContainersOptions, ListImagesOptions,
    LogsOptions, RemoveContainerOptions, RemoveImageOptions, WaitContainerOptions,
};
use futures::StreamExt;

use super::engine::{engine_error, message_of, status_of};
use super::inventory::{LABEL_MANAGED, LABEL_WORKER};
use super::spawn::Spawn;
use crate::provider::{BUILT_REPOSITORY, BuiltImage, ImageBuild, ProviderError};

/// The label of a built image (its tag) and of a build's container.
pub const LABEL_BUILT: &str = "berth.built";
/// The longest a build may run before it is killed.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Built images kept on an engine (the newest); older ones no container uses go.
pub const KEEP_BUILT: usize = 16;
/// How much of a failed build's output its error quotes.
const FAILED_TAIL_LINES: &str = "40";
const FAILED_TAIL_BYTES: usize = 4096;

/// Builds in flight on this worker, by tag: a second build of a tag waits for the
/// first instead of running again.
#[derive(Debug, Default)]
pub struct Builds(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Builds {
    fn lock_for(&self, tag: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut builds = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        builds.retain(|_, lock| Arc::strong_count(lock) > 1);
        builds.entry(tag.to_owned()).or_default().clone()
    }
}

/// A package name as package managers spell them: nothing a shell would read.
pub fn check_package(name: &str) -> Result<(), ProviderError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._:=~@/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ProviderError::InvalidArgument(format!(
            "package name {name:?} is not valid (letters, digits and + - . _ : = ~ @ /)"
        )))
    }
}

/// The script a build's container runs: packages by whichever manager the image has,
/// then `on_create` (as `$1`, in a shell of its own so its own `set` options hold).
pub fn build_script(build: &ImageBuild) -> String {
    let mut script = String::from("set -e\n");
    if !build.packages.is_empty() {
        let packages = build.packages.join(" ");
        script.push_str(&format!(
            "if command -v apk >/dev/null 2>&1; then apk add --no-cache {packages}\n\
             elif command -v apt-get >/dev/null 2>&1; then export DEBIAN_FRONTEND=noninteractive; \
             apt-get update && apt-get install -y --no-install-recommends {packages} \
             && rm -rf /var/lib/apt/lists/*\n\
             elif command -v dnf >/dev/null 2>&1; then dnf install -y {packages} && dnf clean all\n\
             elif command -v microdnf >/dev/null 2>&1; then microdnf install -y {packages}\n\
             elif command -v yum >/dev/null 2>&1; then yum install -y {packages}\n\
             else echo 'berth: the image has no apk, apt-get, dnf, microdnf or yum to install packages with' >&2; exit 127\n\
             fi\n"
        ));
    }
    script.push_str("exec /bin/sh -c \"$1\"\n");
    script
}

impl Spawn<'_> {
    /// Builds `build` (see the module docs), or answers at once with the image that is
    /// there.
    pub async fn build_image(
        &self,
        builds: &Builds,
        tasks: &tokio_util::task::TaskTracker,
        build: &ImageBuild,
    ) -> Result<BuiltImage, ProviderError> {
        for package in &build.packages {
            check_package(package)?;
        }
        if build.base.is_empty() {
            return Err(ProviderError::InvalidArgument(
                "a build needs a base image".into(),
            ));
        }
        let tag = build.tag();
        if image_exists(self.docker, &tag).await? {
            return Ok(reused(tag));
        }
        let lock = builds.lock_for(&tag);
        let _held = lock.lock().await;
        if image_exists(self.docker, &tag).await? {
            return Ok(reused(tag));
        }
        self.ensure_image(&build.base).await?;
        let began = Instant::now();
        // the build runs to its end (or its timeout) even if this call is dropped
        let job = BuildJob {
            docker: self.docker.clone(),
            worker_id: self.worker_id.to_owned(),
            build: build.clone(),
            tag: tag.clone(),
        };
        tasks
            .spawn(async move { job.run().await })
            .await
            .map_err(|err| ProviderError::Internal(format!("the build task failed: {err}")))??;
        let build_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(worker_id = %self.worker_id, image = %tag, build_ms, "image built");
        if let Err(err) = collect_built(self.docker, KEEP_BUILT).await {
            tracing::warn!(error = %err, "cannot remove old built images");
        }
        Ok(BuiltImage {
            image: tag,
            built: true,
            build_ms,
        })
    }
}

fn reused(image: String) -> BuiltImage {
    BuiltImage {
        image,
        built: false,
        build_ms: 0,
    }
}

async fn image_exists(docker: &Docker, image: &str) -> Result<bool, ProviderError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(err) if status_of(&err) == Some(404) => Ok(false),
        Err(err) => Err(engine_error("inspect the image", err)),
    }
}

/// The name of the container that builds `tag`.
fn container_name(tag: &str) -> String {
    let hash = tag.rsplit(':').next().unwrap_or(tag);
    format!("berth-build-{hash}")
}

struct BuildJob {
    docker: Docker,
    worker_id: String,
    build: ImageBuild,
    tag: String,
}

impl BuildJob {
    async fn run(&self) -> Result<(), ProviderError> {
        let name = container_name(&self.tag);
        // a build a crash cut off left its container under this name
        remove_container(&self.docker, &name).await;
        let outcome = self.build_in(&name).await;
        remove_container(&self.docker, &name).await;
        outcome
    }

    async fn build_in(&self, name: &str) -> Result<(), ProviderError> {
        let labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_WORKER.to_owned(), self.worker_id.clone()),
            (LABEL_BUILT.to_owned(), self.tag.clone()),
        ]);
        let body = ContainerCreateBody {
            image: Some(self.build.base.clone()),
            entrypoint: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                build_script(&self.build),
                "berth-build".into(),
                self.build.on_create.clone(),
            ]),
            user: Some("0".into()),
            working_dir: Some("/".into()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                // the engine's default bridge: package managers reach their mirrors
                security_opt: Some(vec!["no-new-privileges".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|err| engine_error("create the build's container", err))?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|err| {
                ProviderError::BuildFailed(format!(
                    "the build of {} did not start: {}",
                    self.tag,
                    message_of(&err)
                ))
            })?;
        let code = match tokio::time::timeout(BUILD_TIMEOUT, self.wait(&created.id)).await {
            Ok(code) => code?,
            Err(_) => {
                return Err(ProviderError::BuildFailed(format!(
                    "the build of {} ran longer than {BUILD_TIMEOUT:?}",
                    self.tag
                )));
            }
        };
        if code != 0 {
            let tail = self.tail(&created.id).await;
            return Err(ProviderError::BuildFailed(format!(
                "building the image failed: packages or on_create exited with {code}{}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            )));
        }
        let committed = CommitContainerOptions {
            container: Some(created.id.clone()),
            repo: Some(BUILT_REPOSITORY.to_owned()),
            tag: Some(self.tag.rsplit(':').next().unwrap_or_default().to_owned()),
            pause: false,
            ..Default::default()
        };
        // the base's own entrypoint and command, not the build's: an empty list (not
        // an absent one) is kept as empty by the engine's commit
        let (entrypoint, cmd) = self.base_command().await?;
        let config = ContainerConfig {
            entrypoint: Some(entrypoint),
            cmd: Some(cmd),
            labels: Some(HashMap::from([
                (LABEL_BUILT.to_owned(), self.tag.clone()),
                ("berth.base".to_owned(), self.build.base.clone()),
            ])),
            ..Default::default()
        };
        self.docker
            .commit_container(committed, config)
            .await
            .map_err(|err| engine_error("commit the built image", err))?;
        Ok(())
    }

    /// The base image's entrypoint and command.
    async fn base_command(&self) -> Result<(Vec<String>, Vec<String>), ProviderError> {
        let base = self
            .docker
            .inspect_image(&self.build.base)
            .await
            .map_err(|err| engine_error("inspect the base image", err))?;
        let config = base.config.unwrap_or_default();
        Ok((
            config.entrypoint.unwrap_or_default(),
            config.cmd.unwrap_or_default(),
        ))
    }

    async fn wait(&self, container: &str) -> Result<i64, ProviderError> {
        let mut waits = self
            .docker
            .wait_container(container, None::<WaitContainerOptions>);
        match waits.next().await {
            Some(Ok(answer)) => Ok(answer.status_code),
            // a non-zero exit comes back as an error that carries the code
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(err)) => Err(engine_error("wait for the build", err)),
            None => Err(ProviderError::Internal(
                "the engine ended the build's wait without an answer".into(),
            )),
        }
    }

    /// The end of what the build printed, bounded.
    async fn tail(&self, container: &str) -> String {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: FAILED_TAIL_LINES.to_owned(),
            ..Default::default()
        };
        let mut logs = self.docker.logs(container, Some(options));
        let mut text = Vec::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.extend_from_slice(&chunk.into_bytes());
        }
        let start = text.len().saturating_sub(FAILED_TAIL_BYTES);
        String::from_utf8_lossy(&text[start..]).trim().to_owned()
    }
}

async fn remove_container(docker: &Docker, name: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => {}
        Err(err) if status_of(&err) == Some(404) => {}
        Err(err) => {
            tracing::warn!(container = name, error = %message_of(&err), "cannot remove a build's container")
        }
    }
}

/// Removes the build containers of `worker_id` (a build a crash cut off).
pub async fn sweep_build_containers(
    docker: &Docker,
    worker_id: &str,
) -> Result<usize, ProviderError> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![
                LABEL_BUILT.to_owned(),
                format!("{LABEL_WORKER}={worker_id}"),
            ],
        )])),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|err| engine_error("list build containers", err))?;
    for container in &containers {
        if let Some(id) = &container.id {
            remove_container(docker, id).await;
        }
    }
    Ok(containers.len())
}

/// Removes built images beyond the newest `keep` that no container uses (the engine
/// refuses to remove one in use, and that refusal is the check).
pub async fn collect_built(docker: &Docker, keep: usize) -> Result<usize, ProviderError> {
    let options = ListImagesOptions {
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![LABEL_BUILT.to_owned()],
        )])),
        ..Default::default()
    };
    let mut images = docker
        .list_images(Some(options))
        .await
        .map_err(|err| engine_error("list built images", err))?;
    images.sort_by_key(|image| std::cmp::Reverse(image.created));
    let mut removed = 0;
    for image in images.iter().skip(keep) {
        let options = RemoveImageOptions {
            noprune: false,
            force: false,
            ..Default::default()
        };
        match docker.remove_image(&image.id, Some(options), None).await {
            Ok(_) => removed += 1,
            // in use by a container, or gone meanwhile
            Err(err) if matches!(status_of(&err), Some(404 | 409)) => {}
            Err(err) => return Err(engine_error("remove a built image", err)),
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed old built images");
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_are_what_package_managers_take_and_nothing_a_shell_reads() {
        for ok in [
            "curl",
            "python3-pip",
            "g++",
            "libssl1.1",
            "nodejs=18.19.0-r0",
            "pkg@edge",
        ] {
            check_package(ok).unwrap();
        }
        for bad in [
            "",
            "-rf",
            "a b",
            "curl;reboot",
            "$(id)",
            "a`b`",
            "x|y",
            "a\nb",
        ] {
            assert!(check_package(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_script_installs_with_the_images_manager_then_runs_on_create_as_its_own_shell() {
        let build = ImageBuild {
            base: "alpine:3".into(),
            packages: vec!["curl".into(), "git".into()],
            on_create: "echo hi".into(),
        };
        let script = build_script(&build);
        assert!(script.contains("apk add --no-cache curl git"));
        assert!(script.contains("apt-get install -y --no-install-recommends curl git"));
        assert!(script.ends_with("exec /bin/sh -c \"$1\"\n"));
        // the script itself is never in it: it comes as $1
        assert!(!script.contains("echo hi"));
        let bare = build_script(&ImageBuild {
            packages: Vec::new(),
            ..build
        });
        assert!(!bare.contains("apk"));
    }

    #[test]
    fn a_build_container_is_named_by_the_tags_hash() {
        let tag = ImageBuild {
            base: "alpine".into(),
            ..Default::default()
        }
        .tag();
        let hash = tag.strip_prefix("berth/built:").unwrap();
        assert_eq!(container_name(&tag), format!("berth-build-{hash}"));
    }
}
