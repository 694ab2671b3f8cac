//! `berth images push`, as an operator runs it against a docker worker whose engine
//! cannot pull: an image saved (`docker save`) and then removed from the worker's
//! engine is pushed back through the control plane from the archive, and a sandbox
//! runs it; pushing straight from the local engine works the same; a broken archive
//! fails by worker and loads nothing; a fleet without docker workers is told so.
//! Skipped visibly without a docker engine.

use std::path::Path;

use berth_testkit::docker::{DockerCleanup, TEST_IMAGE, docker_or_skip, unique_worker_id};
use berth_testkit::{TestFleet, id_of};
use bollard::Docker;
use bollard::query_parameters::{RemoveImageOptions, TagImageOptions};
use futures::StreamExt;
use serde_json::json;
use tokio::process::Command;

fn berth(fleet: &TestFleet, dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .current_dir(dir)
        .env("BERTH_API_URL", fleet.cp.api_url())
        .env("BERTH_API_KEY", &fleet.api.key)
        .env("BERTH_CLIENT_CONFIG", dir.join("client.yaml"))
        .env("NO_COLOR", "1")
        .env_remove("BERTH_CONTEXT")
        .kill_on_drop(true);
    command
}

async fn run(fleet: &TestFleet, dir: &Path, args: &[&str]) -> (String, String, i32) {
    let out = berth(fleet, dir).args(args).output().await.unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

async fn remove(engine: &Docker, image: &str) {
    let options = RemoveImageOptions {
        force: true,
        ..Default::default()
    };
    let _ = engine.remove_image(image, Some(options), None).await;
}

#[tokio::test]
async fn a_pushed_image_is_restored_on_a_worker_that_lost_it() {
    let Some(docker) = docker_or_skip("images_cli").await else {
        return;
    };
    let worker_id = unique_worker_id("push");
    let _cleanup = DockerCleanup::new(&docker, &[&worker_id]);
    let fleet = TestFleet::builder()
        .docker(docker)
        .worker_ids(&[&worker_id])
        .start()
        .await;
    let engine = Docker::connect_with_unix_defaults().expect("docker client");
    let dir = tempfile::tempdir().unwrap();
    // an image of this test's own, saved as `docker save` would
    let (repo, tag) = ("berth-push-test", worker_id.as_str());
    let image = format!("{repo}:{tag}");
    engine
        .tag_image(
            TEST_IMAGE,
            Some(TagImageOptions {
                repo: Some(repo.to_owned()),
                tag: Some(tag.to_owned()),
            }),
        )
        .await
        .unwrap();
    let archive = dir.path().join("image.tar");
    let mut saved = Vec::new();
    let mut export = engine.export_image(&image);
    while let Some(chunk) = export.next().await {
        saved.extend_from_slice(&chunk.unwrap());
    }
    std::fs::write(&archive, &saved).unwrap();

    // removed from the worker's engine: a create naming it fails
    remove(&engine, &image).await;
    assert!(engine.inspect_image(&image).await.is_err());
    let (status, err) = fleet
        .api
        .post("/sandboxes", json!({"image": image, "ttl": "5m"}))
        .await;
    assert_ne!(status, 201, "{err}");

    // pushed back from the archive, through the control plane and the mesh
    let (out, err, code) = run(
        &fleet,
        dir.path(),
        &["images", "push", "--from-file", archive.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("{worker_id}  loaded  {image} (")),
        "{out}"
    );
    engine
        .inspect_image(&image)
        .await
        .expect("the image is on the worker's engine again");
    let sandbox = fleet
        .api
        .create_sandbox(json!({"image": image, "ttl": "5m"}))
        .await;
    let (status, out) = fleet
        .api
        .exec(&id_of(&sandbox), json!({"command": "echo pushed"}))
        .await;
    assert_eq!((status, out["stdout"].as_str()), (200, Some("pushed\n")));
    let (status, _) = fleet
        .api
        .delete(&format!("/sandboxes/{}", id_of(&sandbox)))
        .await;
    assert_eq!(status, 200);

    // straight from the local engine, to the named worker, as JSON lines
    let (out, err, code) = run(
        &fleet,
        dir.path(),
        &[
            "images",
            "push",
            &image,
            "--workers",
            &worker_id,
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "loaded", "{out}");
    assert_eq!(last["images"], json!([image]), "{out}");
    assert_eq!(last["bytes"].as_u64(), Some(saved.len() as u64), "{out}");

    // a broken archive fails on the worker and loads nothing
    let broken = dir.path().join("broken.tar");
    std::fs::write(&broken, &saved[..saved.len() / 3]).unwrap();
    remove(&engine, &image).await;
    let (out, err, code) = run(
        &fleet,
        dir.path(),
        &["images", "push", "--from-file", broken.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&format!("{worker_id}  failed  ")), "{out}");
    assert!(err.contains("the push failed on 1 of 1 workers"), "{err}");
    assert!(
        engine.inspect_image(&image).await.is_err(),
        "nothing loaded"
    );

    // an unknown worker, an image the local engine lacks
    let (out, err, code) = run(
        &fleet,
        dir.path(),
        &[
            "images",
            "push",
            "--from-file",
            archive.to_str().unwrap(),
            "--workers",
            "no-such-worker",
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("no-such-worker"), "{code} {out} {err}");
    let (_, err, code) = run(&fleet, dir.path(), &["images", "push", &image]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("is not on this machine's docker engine"),
        "{err}"
    );
}

#[tokio::test]
async fn a_fleet_without_docker_workers_is_told_so() {
    let fleet = TestFleet::builder().workers(1).start().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    std::fs::write(&archive, b"not an archive").unwrap();
    let (_, err, code) = run(
        &fleet,
        dir.path(),
        &["images", "push", "--from-file", archive.to_str().unwrap()],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("no ready docker worker"), "{err}");
}
