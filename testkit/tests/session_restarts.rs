//! A session lives on the worker, not on the control plane that carried its client:
//! the control plane restarted while a session runs and prints, the client attaches
//! again from its last offset and gets the rest, nothing lost and nothing twice (for
//! a worker that listens and one that dials out); a worker that restarts has lost its
//! sessions and says so (`NOT_FOUND`), it does not hang.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_testkit::{GrpcSession, TestFleet, eventually, id_of};
use pb::session_request::Message;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn shell(sandbox_id: &str) -> pb::SessionOpen {
    pb::SessionOpen {
        sandbox_id: sandbox_id.to_owned(),
        command: "sh".into(),
        ..Default::default()
    }
}

async fn restart_loses_nothing(fleet: TestFleet) {
    let id = id_of(&fleet.api.create_sandbox(json!({"ttl": "10m"})).await);
    let key = fleet.cp.admin_key.clone();
    let mut client = GrpcSession::open(&fleet.cp.api_url(), &key, shell(&id))
        .await
        .unwrap();
    client.send(Message::Stdin(b"echo before\n".to_vec())).await;
    client.try_read_until("before\n").await.unwrap();
    // output that goes on while the control plane is away
    client
        .send(Message::Stdin(
            b"generate --lines 150 --delay-ms 20; echo generated\n".to_vec(),
        ))
        .await;
    client.try_read_until("line 3\n").await.unwrap();

    let mesh = fleet.cp.mesh_addr;
    let fleet = fleet
        .restart_control_plane_after(Duration::from_millis(500), move |config| {
            config.mesh_listen = mesh;
        })
        .await;
    // the old stream broke with the control plane that carried it
    let broke = tokio::time::timeout(WAIT, client.try_read_until("never printed")).await;
    assert!(matches!(broke, Ok(Err(_))), "the old stream ended");
    fleet.wait_online().await;

    let (session_id, offset, mut output) =
        (client.session_id.clone(), client.offset, client.output);
    let api_url = fleet.cp.api_url();
    let mut again = eventually("the session can be attached again", WAIT, || async {
        let open = pb::SessionOpen {
            sandbox_id: id.clone(),
            session_id: session_id.clone(),
            offset,
            ..Default::default()
        };
        GrpcSession::open(&api_url, &key, open).await.ok()
    })
    .await;
    again.try_read_until("generated\n").await.unwrap();
    again.send(Message::Stdin(b"exit 4\n".to_vec())).await;
    while again.next().await.unwrap().is_some() {}
    assert_eq!(again.exit.map(|exit| exit.exit_code), Some(4));
    output.extend_from_slice(&again.output);
    let text = String::from_utf8(output).unwrap();
    let expected: String = std::iter::once("before\n".to_owned())
        .chain((1..=150).map(|i| format!("line {i}\n")))
        .chain(std::iter::once("generated\n".to_owned()))
        .collect();
    assert_eq!(text, expected, "every byte once, in order");
    fleet.stop().await;
}

#[tokio::test]
async fn a_control_plane_restart_loses_nothing_of_a_session_on_a_listening_worker() {
    restart_loses_nothing(TestFleet::start().await).await;
}

#[tokio::test]
async fn a_control_plane_restart_loses_nothing_of_a_session_on_a_dial_out_worker() {
    let fleet = TestFleet::builder()
        .worker(|config| config.listen = None)
        .start()
        .await;
    restart_loses_nothing(fleet).await;
}

#[tokio::test]
async fn a_restarted_worker_has_lost_its_sessions_and_says_so() {
    let mut fleet = TestFleet::start().await;
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);
    let key = fleet.cp.admin_key.clone();
    let client = GrpcSession::open(&fleet.cp.api_url(), &key, shell(&id))
        .await
        .unwrap();
    let session_id = client.session_id.clone();
    drop(client);
    fleet.stop_worker(0).await;
    fleet.restart_worker(0).await;
    fleet.wait_online().await;
    let open = pb::SessionOpen {
        sandbox_id: id.clone(),
        session_id,
        ..Default::default()
    };
    let refused = tokio::time::timeout(WAIT, GrpcSession::open(&fleet.cp.api_url(), &key, open))
        .await
        .expect("an answer, not a hang");
    let status = refused.err().expect("the session is gone");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    fleet.stop().await;
}
