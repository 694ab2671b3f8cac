//! The docker provider against the real engine, through the `Provider` trait: the
//! lifecycle, exec (streams, exit codes, timeouts that kill inside the container,
//! backpressure), files through the archive API, logs in the order written, states
//! after outside interference, and health that follows the engine. Skipped visibly
//! without an engine (failed with BERTH_REQUIRE_DOCKER=1).

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::Docker;
use futures::StreamExt;

use berth_testkit::docker::{DockerCleanup, EngineProxy, docker_or_skip, unique_worker_id};
use berth_testkit::{eventually, shell};
use berth_worker::provider::docker::DockerProvider;
use berth_worker::provider::output::DEFAULT_MAX_EXEC_OUTPUT as LIMIT;
use berth_worker::provider::{
    ByteStream, ExecEvent, ExecMode, Provider, ProviderError, SandboxSpec, SandboxState,
};

const WAIT: Duration = Duration::from_secs(20);

fn spec(id: &str) -> SandboxSpec {
    SandboxSpec {
        env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        ..berth_testkit::spec(id)
    }
}

fn engine() -> Docker {
    Docker::connect_with_unix_defaults().expect("engine")
}

fn bytes(data: Vec<u8>) -> ByteStream {
    futures::stream::iter(
        data.chunks(64 * 1024)
            .map(|chunk| Ok(chunk.to_vec()))
            .collect::<Vec<_>>(),
    )
    .boxed()
}

async fn read_all(
    provider: &DockerProvider,
    id: &str,
    path: &str,
) -> Result<Vec<u8>, ProviderError> {
    let mut stream = provider.read_file(id, path).await?;
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk?);
    }
    Ok(data)
}

async fn run(provider: &DockerProvider, id: &str, line: &str) -> (i32, String, String) {
    let result = provider.exec(id, shell(line), LIMIT).await.unwrap();
    (
        result.exit_code,
        String::from_utf8_lossy(&result.stdout).into_owned(),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

/// A provider for a fresh worker id, one sandbox `sb` in it, and the cleanup guard.
async fn sandbox(test: &str) -> Option<(DockerProvider, String, DockerCleanup)> {
    let config = docker_or_skip(test).await?;
    let worker_id = unique_worker_id("dp");
    let cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let provider = DockerProvider::new(config, &worker_id);
    let id = unique_worker_id("sb");
    provider.spawn(spec(&id)).await.unwrap();
    Some((provider, id, cleanup))
}

#[tokio::test]
async fn lifecycle_labels_and_idempotent_destroy() {
    let Some(config) = docker_or_skip("lifecycle_labels_and_idempotent_destroy").await else {
        return;
    };
    let worker_id = unique_worker_id("dp");
    let _cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let provider = DockerProvider::new(config, &worker_id);
    let health = provider.health().await;
    assert!(health.healthy, "{}", health.message);
    let id = unique_worker_id("sb");
    let info = provider.spawn(spec(&id)).await.unwrap();
    assert_eq!(info.state, SandboxState::Running);
    assert_eq!(
        provider.spawn(spec(&id)).await,
        Err(ProviderError::SandboxExists(id.clone()))
    );
    let listed = provider.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sandbox_id, id);
    let docker = engine();
    let container = docker
        .inspect_container(&format!("berth-{id}"), None)
        .await
        .unwrap();
    let labels = container.config.unwrap().labels.unwrap();
    assert_eq!(labels["berth.managed"], "true");
    assert_eq!(labels["berth.sandbox"], id);
    assert_eq!(labels["berth.worker"], worker_id);
    docker
        .inspect_network(&format!("berth-{id}"), None)
        .await
        .expect("the sandbox has its own network");

    provider.destroy(&id).await.unwrap();
    provider.destroy(&id).await.unwrap();
    assert_eq!(
        provider.status(&id).await,
        Err(ProviderError::SandboxNotFound(id.clone()))
    );
    assert!(provider.list().await.unwrap().is_empty());
    assert!(
        docker
            .inspect_container(&format!("berth-{id}"), None)
            .await
            .is_err()
    );
    assert!(
        docker
            .inspect_network(&format!("berth-{id}"), None)
            .await
            .is_err()
    );
    assert!(matches!(
        provider.exec_stream(&id, shell("true")).await,
        Err(ProviderError::SandboxNotFound(_))
    ));
}

#[tokio::test]
async fn exec_keeps_streams_apart_with_exit_codes_env_and_workdir() {
    let Some((provider, id, _cleanup)) = sandbox("exec_keeps_streams_apart").await else {
        return;
    };
    assert_eq!(
        run(&provider, &id, "echo out; echo err >&2; exit 3").await,
        (3, "out\n".into(), "err\n".into())
    );
    assert_eq!(
        run(&provider, &id, "pwd; echo $GREETING $HOME").await.1,
        "/workspace\nhello /workspace\n"
    );
    let (code, _, stderr) = run(&provider, &id, "no-such-tool").await;
    assert_eq!(code, 127);
    assert!(stderr.contains("not found"), "{stderr}");

    let mut argv = shell("echo");
    argv.mode = ExecMode::Argv;
    argv.args = vec!["a;".into(), "$HOME".into()];
    let result = provider.exec(&id, argv, LIMIT).await.unwrap();
    assert_eq!(result.stdout, b"a; $HOME\n");
    let mut missing = shell("no-such-binary");
    missing.mode = ExecMode::Argv;
    assert_eq!(
        provider.exec(&id, missing, LIMIT).await.unwrap().exit_code,
        127
    );

    let mut with_env = shell("echo $X; pwd");
    with_env.env = BTreeMap::from([("X".into(), "1".into())]);
    with_env.workdir = Some("/tmp".into());
    assert_eq!(
        provider.exec(&id, with_env, LIMIT).await.unwrap().stdout,
        b"1\n/tmp\n"
    );
    let mut nowhere = shell("true");
    nowhere.workdir = Some("/nope".into());
    assert_eq!(
        provider.exec(&id, nowhere, LIMIT).await,
        Err(ProviderError::FileNotFound("/nope".into()))
    );
}

async fn processes(provider: &DockerProvider, id: &str) -> Vec<String> {
    run(provider, id, "ps -o args")
        .await
        .1
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_timeout_or_a_dropped_receiver_kills_the_command_inside_the_container() {
    let Some((provider, id, _cleanup)) = sandbox("a_timeout_kills_inside").await else {
        return;
    };
    let mut slow = shell("sleep 30 & sleep 31; touch /workspace/finished");
    slow.timeout = Duration::from_millis(800);
    assert_eq!(
        provider.exec(&id, slow, LIMIT).await,
        Err(ProviderError::Timeout(Duration::from_millis(800)))
    );
    let left = processes(&provider, &id).await;
    assert!(
        !left.iter().any(|p| p == "sleep 30" || p == "sleep 31"),
        "still running: {left:?}"
    );

    let mut events = provider
        .exec_stream(
            &id,
            shell("echo started; sleep 32; touch /workspace/finished"),
        )
        .await
        .unwrap();
    assert_eq!(
        events.recv().await,
        Some(ExecEvent::Stdout(b"started\n".to_vec()))
    );
    drop(events);
    eventually("the dropped command is killed", WAIT, || async {
        let left = processes(&provider, &id).await;
        (!left.iter().any(|p| p == "sleep 32")).then_some(())
    })
    .await;
    assert_eq!(
        provider.stat(&id, "finished").await,
        Err(ProviderError::FileNotFound("/workspace/finished".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_holds_the_command_back() {
    let Some((provider, id, _cleanup)) = sandbox("a_reader_that_stops_reading").await else {
        return;
    };
    // 4096 writes of 64 KiB (256 MiB) with a progress counter after each
    let mut producer = shell(
        "i=0; while [ $i -lt 4096 ]; do head -c 65536 /dev/zero; i=$((i+1)); echo $i > /tmp/progress; done",
    );
    producer.timeout = Duration::from_secs(120);
    let mut events = provider.exec_stream(&id, producer).await.unwrap();
    events.recv().await.expect("output starts");
    // not reading: the producer must stall far below the end
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut previous = String::new();
    let stalled = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = run(&provider, &id, "cat /tmp/progress").await.1;
        if !now.is_empty() && now == previous {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the producer never stalled (at {now})"
        );
        previous = now;
    };
    let stalled: u32 = stalled.trim().parse().unwrap();
    assert!(
        stalled < 1024,
        "the producer ran on to {stalled} x 64 KiB unread"
    );
    // reading again lets it finish
    let mut total = 0usize;
    let mut exit = None;
    while let Some(event) = events.recv().await {
        match event {
            ExecEvent::Stdout(data) => total += data.len(),
            ExecEvent::Exit { code, .. } => exit = Some(code),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(exit, Some(0));
    assert!(total >= 255 * 65536, "{total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_move_through_the_archive_api_and_the_helpers() {
    let Some((provider, id, _cleanup)) = sandbox("files_move_through_the_archive_api").await else {
        return;
    };
    let binary: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let size = provider
        .write_file(&id, "data/blob.bin", 0o640, bytes(binary.clone()))
        .await;
    assert_eq!(
        size,
        Err(ProviderError::FileNotFound("/workspace/data".into()))
    );
    run(&provider, &id, "mkdir data").await;
    let size = provider
        .write_file(&id, "data/blob.bin", 0o640, bytes(binary.clone()))
        .await
        .unwrap();
    assert_eq!(size, binary.len() as u64);
    assert_eq!(
        read_all(&provider, &id, "/workspace/data/blob.bin")
            .await
            .unwrap(),
        binary
    );
    let stat = provider.stat(&id, "data/blob.bin").await.unwrap();
    assert_eq!(
        (stat.size, stat.mode, stat.is_dir),
        (binary.len() as u64, 0o640, false)
    );
    // what the sandbox's own commands see
    assert_eq!(
        run(&provider, &id, "wc -c < data/blob.bin").await.1.trim(),
        "5000000"
    );
    // replacing keeps nothing of the old content
    provider
        .write_file(&id, "data/blob.bin", 0o600, bytes(b"short".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        read_all(&provider, &id, "data/blob.bin").await.unwrap(),
        b"short"
    );
    assert_eq!(
        provider.stat(&id, "data/blob.bin").await.unwrap().mode,
        0o600
    );
    // links are followed inside the container
    run(
        &provider,
        &id,
        "ln -s data/blob.bin link; printf x > 'odd name'",
    )
    .await;
    assert_eq!(read_all(&provider, &id, "link").await.unwrap(), b"short");

    let listed: Vec<String> = provider
        .list_files(&id, "/workspace")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(
        listed,
        ["/workspace/data", "/workspace/link", "/workspace/odd name"]
    );
    assert_eq!(
        provider.glob(&id, "**/*.bin").await.unwrap(),
        ["/workspace/data/blob.bin"]
    );
    provider.move_file(&id, "data", "moved").await.unwrap();
    provider.chmod(&id, "moved/blob.bin", 0o755).await.unwrap();
    assert_eq!(
        provider.stat(&id, "moved/blob.bin").await.unwrap().mode,
        0o755
    );
    assert_eq!(
        provider.delete_file(&id, "moved", false).await,
        Err(ProviderError::DirectoryNotEmpty("/workspace/moved".into()))
    );
    provider.delete_file(&id, "moved", true).await.unwrap();
    for (result, expected) in [
        (
            provider.stat(&id, "moved").await.map(drop),
            ProviderError::FileNotFound("/workspace/moved".into()),
        ),
        (
            read_all(&provider, &id, "/workspace").await.map(drop),
            ProviderError::IsADirectory("/workspace".into()),
        ),
        (
            read_all(&provider, &id, "nope").await.map(drop),
            ProviderError::FileNotFound("/workspace/nope".into()),
        ),
        (
            provider.list_files(&id, "odd name").await.map(drop),
            ProviderError::NotADirectory("/workspace/odd name".into()),
        ),
        (
            provider.move_file(&id, "nope", "x").await,
            ProviderError::FileNotFound("/workspace/nope".into()),
        ),
        (
            provider.chmod(&id, "nope", 0o600).await,
            ProviderError::FileNotFound("/workspace/nope".into()),
        ),
    ] {
        assert_eq!(result, Err(expected));
    }
    assert!(matches!(
        provider.stat(&id, "../etc").await,
        Err(ProviderError::InvalidPath { .. })
    ));
    assert!(matches!(
        provider.delete_file(&id, "/", true).await,
        Err(ProviderError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn logs_keep_the_order_written_and_can_be_followed() {
    let Some((provider, id, _cleanup)) = sandbox("logs_keep_the_order_written").await else {
        return;
    };
    // the engine copies the two pipes apart: lines a moment apart keep their order
    run(&provider, &id, "echo one > /proc/1/fd/1; sleep 0.2; echo two > /proc/1/fd/2; sleep 0.2; echo three > /proc/1/fd/1").await;
    let mut lines = Vec::new();
    let mut reader = provider.logs(&id, 10, false).await.unwrap();
    while let Some(line) = reader.recv().await {
        lines.push(line.line);
    }
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].contains("started"), "{lines:?}");
    assert_eq!(lines[1..], ["one", "two", "three"]);
    let mut tail = provider.logs(&id, 1, false).await.unwrap();
    assert_eq!(tail.recv().await.unwrap().line, "three");
    assert!(tail.recv().await.is_none());

    let mut follower = provider.logs(&id, 0, true).await.unwrap();
    run(&provider, &id, "echo later > /proc/1/fd/2").await;
    let line = tokio::time::timeout(WAIT, follower.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.line, "later");
    assert!(line.time_ms > 0);
    provider.destroy(&id).await.unwrap();
    let ended = tokio::time::timeout(WAIT, follower.recv()).await.unwrap();
    assert!(ended.is_none(), "following ends with the sandbox");
}

#[tokio::test]
async fn containers_killed_or_removed_from_outside_show_up_as_such() {
    let Some((provider, id, _cleanup)) = sandbox("containers_killed_from_outside").await else {
        return;
    };
    let docker = engine();
    docker
        .kill_container(
            &format!("berth-{id}"),
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    eventually("the killed sandbox is stopped", WAIT, || async {
        (provider.status(&id).await.ok()?.state == SandboxState::Stopped).then_some(())
    })
    .await;
    assert_eq!(
        provider.list().await.unwrap()[0].state,
        SandboxState::Stopped
    );
    // a container that is not running is a stopped sandbox: `start` brings it back
    assert!(matches!(
        provider.exec(&id, shell("true"), LIMIT).await,
        Err(ProviderError::Stopped(_))
    ));
    docker
        .remove_container(
            &format!("berth-{id}"),
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        provider.status(&id).await,
        Err(ProviderError::SandboxNotFound(id.clone()))
    );
    assert!(provider.list().await.unwrap().is_empty());
    // destroy still removes the network it left
    provider.destroy(&id).await.unwrap();
    assert!(
        docker
            .inspect_network(&format!("berth-{id}"), None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn images_follow_the_pull_policy() {
    let Some(config) = docker_or_skip("images_follow_the_pull_policy").await else {
        return;
    };
    let worker_id = unique_worker_id("dp");
    let _cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let provider = DockerProvider::new(config, &worker_id);
    let mut missing = spec(&unique_worker_id("sb"));
    missing.image = "berth-no-such-image:never".into();
    let err = provider.spawn(missing).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::ImageUnavailable { image, reason, .. }
            if image == "berth-no-such-image:never" && reason.contains("pull policy is never")),
        "{err:?}"
    );
    assert!(
        provider.list().await.unwrap().is_empty(),
        "a refused spawn leaves nothing"
    );
}

#[tokio::test]
async fn health_follows_the_engine_and_recovers() {
    let Some(mut config) = docker_or_skip("health_follows_the_engine").await else {
        return;
    };
    let proxy = EngineProxy::start(&config.host).await;
    config.host = proxy.host();
    let provider = DockerProvider::new(config, unique_worker_id("dp"));
    assert!(provider.health().await.healthy);
    proxy.cut();
    let health = provider.health().await;
    assert!(!health.healthy);
    assert!(health.message.contains("unreachable"), "{}", health.message);
    assert!(matches!(
        provider.spawn(spec("never")).await,
        Err(ProviderError::Unavailable(_))
    ));
    proxy.restore();
    let health = provider.health().await;
    assert!(health.healthy, "{}", health.message);
}

#[tokio::test]
async fn uploads_are_spooled_in_the_spool_dir_and_capped() {
    let Some(mut config) = docker_or_skip("uploads_are_spooled_in_the_spool_dir_and_capped").await
    else {
        return;
    };
    let spool = tempfile::tempdir().unwrap();
    config.max_upload_mb = 1;
    config.spool_dir = Some(spool.path().join("spool"));
    let worker_id = unique_worker_id("upload");
    let _cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let provider = DockerProvider::new(config.clone(), &worker_id);
    let id = unique_worker_id("sb");
    provider.spawn(spec(&id)).await.unwrap();

    // at the cap: stored, through the spool dir (made on first use)
    let exactly = vec![7u8; 1 << 20];
    provider
        .write_file(&id, "fits.bin", 0o600, bytes(exactly.clone()))
        .await
        .unwrap();
    assert_eq!(read_all(&provider, &id, "fits.bin").await.unwrap(), exactly);
    assert!(spool.path().join("spool").is_dir());
    // nothing left in it: spool files have no name
    assert_eq!(
        std::fs::read_dir(spool.path().join("spool"))
            .unwrap()
            .count(),
        0
    );

    // one byte past it: refused, and nothing reaches the sandbox
    let refused = provider
        .write_file(&id, "big.bin", 0o600, bytes(vec![7u8; (1 << 20) + 1]))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ProviderError::InvalidArgument(m) if m.contains("max_upload_mb")),
        "{refused:?}"
    );
    assert!(matches!(
        read_all(&provider, &id, "big.bin").await,
        Err(ProviderError::FileNotFound(_))
    ));

    // a spool dir that cannot be made fails the upload, not the worker
    let blocker = spool.path().join("file");
    std::fs::write(&blocker, b"not a dir").unwrap();
    let provider = DockerProvider::new(
        berth_worker::DockerConfig {
            spool_dir: Some(blocker.join("spool")),
            ..config
        },
        &worker_id,
    );
    let failed = provider
        .write_file(&id, "x.bin", 0o600, bytes(b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(format!("{failed}").contains("spool"), "{failed}");
}

#[tokio::test]
async fn a_sandbox_whose_workspace_outgrows_the_limit_is_stopped() {
    let Some(mut config) = docker_or_skip("a_sandbox_whose_workspace_outgrows_the_limit").await
    else {
        return;
    };
    config.workspace_max_mb = 1;
    config.workspace_check_interval = Duration::from_millis(100);
    let worker_id = unique_worker_id("wsw");
    let _cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let provider = DockerProvider::new(config, &worker_id);
    let (big, small) = (unique_worker_id("big"), unique_worker_id("small"));
    provider.spawn(spec(&big)).await.unwrap();
    provider.spawn(spec(&small)).await.unwrap();
    let wrote = provider
        .exec(
            &big,
            shell("dd if=/dev/zero of=/workspace/fill bs=1024 count=3072 2>/dev/null; echo kept > /workspace/note"),
            LIMIT,
        )
        .await
        .unwrap();
    assert_eq!(wrote.exit_code, 0);
    provider
        .exec(&small, shell("echo small > /workspace/note"), LIMIT)
        .await
        .unwrap();

    // the heartbeat's inventory pass measures and stops the one over the limit
    eventually(
        "the sandbox over its /workspace limit stops",
        WAIT,
        || async {
            let listed = provider.list().await.ok()?;
            listed
                .iter()
                .any(|s| s.sandbox_id == big && s.state == SandboxState::Stopped)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        provider.status(&small).await.unwrap().state,
        SandboxState::Running,
        "a sandbox under the limit is left alone"
    );
    // its console log says why, and its files are still there to take away
    let mut reader = provider.logs(&big, 10, false).await.unwrap();
    let mut lines = Vec::new();
    while let Some(line) = reader.recv().await {
        lines.push(line.line);
    }
    assert!(
        lines.iter().any(|l| l.contains("docker.workspace_max_mb")),
        "{lines:?}"
    );
    assert_eq!(
        read_all(&provider, &big, "/workspace/note").await.unwrap(),
        b"kept\n"
    );
}
