//! `berth sandbox cp` as an operator runs it: the real binary against an in-process
//! control plane and mock worker, a tree copied in, out, and through tar streams.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use berth_testkit::docker::{docker_or_skip, unique_worker_id};
use berth_testkit::{TestFleet, id_of};
use serde_json::json;

/// Runs `berth sandbox cp` off the runtime's threads, with `stdin` fed to it.
async fn cp(fleet: &TestFleet, args: &[&str], stdin: Vec<u8>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(["sandbox", "cp"])
        .args(args)
        .args([
            "--api-url",
            &fleet.cp.api_url(),
            "--api-key",
            &fleet.api.key,
        ])
        .env_remove("BERTH_API_URL")
        .env_remove("BERTH_API_KEY")
        .env_remove("BERTH_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("run berth");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(&stdin).expect("feed stdin");
        drop(input);
        child.wait_with_output().expect("the berth process")
    })
    .await
    .expect("the berth process")
}

fn succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn write(path: &Path, data: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn trees_go_in_and_out_with_their_modes() {
    round_trip(TestFleet::start().await).await;
}

/// The same on a docker worker: the file API goes through the engine's archive calls
/// and `mkdir -p` is the image's own.
#[tokio::test]
async fn trees_go_in_and_out_of_a_docker_sandbox() {
    let Some(docker) = docker_or_skip("trees_go_in_and_out_of_a_docker_sandbox").await else {
        return;
    };
    let fleet = TestFleet::builder()
        .docker(docker)
        .worker_ids(&[&unique_worker_id("cp")])
        .start()
        .await;
    round_trip(fleet).await;
}

async fn round_trip(fleet: TestFleet) {
    let id = id_of(&fleet.api.create_sandbox(json!({"ttl": "10m"})).await);
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("project");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    write(&src.join("run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write(&src.join("data/big.bin"), &big, 0o600);
    write(&src.join("data/deeper/note.txt"), b"note\n", 0o644);
    std::fs::create_dir_all(src.join("empty")).unwrap();

    // into an existing directory: lands under its own name, like docker cp
    let out = cp(
        &fleet,
        &[src.to_str().unwrap(), &format!("{id}:/workspace")],
        vec![],
    )
    .await;
    succeeded(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("copied 3 files"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, stat) = fleet
        .api
        .get(&format!(
            "/sandboxes/{id}/files/stat?path=/workspace/project/run.sh"
        ))
        .await;
    assert_eq!(status, 200, "{stat}");
    assert_eq!(stat["mode"], "0755");
    let (status, _) = fleet
        .api
        .get(&format!(
            "/sandboxes/{id}/files/stat?path=/workspace/project/empty"
        ))
        .await;
    assert_eq!(status, 200, "the empty directory was not made");

    // and back out under a new name
    let back = local.path().join("back");
    let out = cp(
        &fleet,
        &[&format!("{id}:project"), back.to_str().unwrap()],
        vec![],
    )
    .await;
    succeeded(&out);
    assert_eq!(std::fs::read(back.join("data/big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read(back.join("data/deeper/note.txt")).unwrap(),
        b"note\n"
    );
    assert_eq!(mode(&back.join("run.sh")), 0o755);
    assert_eq!(mode(&back.join("data/big.bin")), 0o600);
    assert!(back.join("empty").is_dir());

    // one file into an existing local directory
    let out = cp(
        &fleet,
        &[
            &format!("{id}:/workspace/project/run.sh"),
            local.path().to_str().unwrap(),
        ],
        vec![],
    )
    .await;
    succeeded(&out);
    assert_eq!(
        std::fs::read(local.path().join("run.sh")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );

    // out as a tar stream, and that tar back in elsewhere
    let out = cp(&fleet, &[&format!("{id}:/workspace/project"), "-"], vec![]).await;
    succeeded(&out);
    let mut names: Vec<String> = tar::Archive::new(&out.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "project/",
            "project/data/",
            "project/data/big.bin",
            "project/data/deeper/",
            "project/data/deeper/note.txt",
            "project/empty/",
            "project/run.sh"
        ]
    );
    let out = cp(&fleet, &["-", &format!("{id}:/workspace/copy")], out.stdout).await;
    succeeded(&out);
    let (status, stat) = fleet
        .api
        .get(&format!(
            "/sandboxes/{id}/files/stat?path=/workspace/copy/project/data/big.bin"
        ))
        .await;
    assert_eq!(status, 200, "{stat}");
    assert_eq!(stat["size"], big.len());
    assert_eq!(stat["mode"], "0600");
    fleet.stop().await;
}

#[tokio::test]
async fn bad_copies_say_why_and_write_nothing() {
    let fleet = TestFleet::start().await;
    let id = id_of(&fleet.api.create_sandbox(json!({"ttl": "10m"})).await);
    let local = tempfile::tempdir().unwrap();

    // a tar that climbs out of its target is refused before anything is written
    let mut evil = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    // `append_data` refuses `..`; write the name into the header as a hostile tool would
    let name = b"../escaped";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_cksum();
    evil.append(&header, &b"evil"[..]).unwrap();
    let out = cp(
        &fleet,
        &["-", &format!("{id}:/workspace/in")],
        evil.into_inner().unwrap(),
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("leaves its directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = fleet
        .api
        .get(&format!(
            "/sandboxes/{id}/files/stat?path=/workspace/escaped"
        ))
        .await;
    assert_eq!(status, 404);

    // a missing sandbox path names it
    let out = cp(
        &fleet,
        &[&format!("{id}:/nope"), local.path().to_str().unwrap()],
        vec![],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // two local sides
    let out = cp(&fleet, &["a", "b"], vec![]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ID:PATH"));
    fleet.stop().await;
}
