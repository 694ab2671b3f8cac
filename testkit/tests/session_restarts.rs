//! A session lives on the worker, not on the control plane that carried its client:
//! the control plane restarted while a session runs and prints, the client attaches
//! again from its last offset and gets the rest, nothing lost and nothing twice (for
//! a worker that listens and one that dials out); a worker that restarts has lost its
//! sessions and says so (`NOT_FOUND`), it does not hang.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::sandboxes_client::SandboxesClient;
use berth_testkit::{TestFleet, api_channel, eventually, id_of, keyed};
use pb::session_event::Event;
use pb::session_request::Message;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(30);

/// One attached client over the public gRPC API.
struct Client {
    input: mpsc::Sender<pb::SessionRequest>,
    events: tonic::Streaming<pb::SessionEvent>,
    session_id: String,
    offset: u64,
    output: Vec<u8>,
    exit: Option<i32>,
}

impl Client {
    async fn open(api_url: &str, key: &str, open: pb::SessionOpen) -> Result<Self, tonic::Status> {
        let mut sandboxes = SandboxesClient::new(api_channel(api_url).await);
        let (input, requests) = mpsc::channel(16);
        let offset = open.offset;
        input
            .send(pb::SessionRequest {
                message: Some(Message::Open(open)),
            })
            .await
            .unwrap();
        let events = sandboxes
            .session(keyed(ReceiverStream::new(requests), key))
            .await?
            .into_inner();
        let mut client = Self {
            input,
            events,
            session_id: String::new(),
            offset,
            output: Vec::new(),
            exit: None,
        };
        match client.next().await? {
            Some(Event::Started(started)) => client.session_id = started.session_id,
            other => panic!("started first, not {other:?}"),
        }
        Ok(client)
    }

    async fn next(&mut self) -> Result<Option<Event>, tonic::Status> {
        let Some(event) = self.events.message().await? else {
            return Ok(None);
        };
        let event = event.event.expect("an event");
        match &event {
            Event::Output(output) => {
                assert_eq!(output.offset, self.offset, "offsets run on without a hole");
                self.offset += output.data.len() as u64;
                self.output.extend_from_slice(&output.data);
            }
            Event::Gap(gap) => panic!("nothing may be lost: {gap:?}"),
            Event::Exit(exit) => self.exit = Some(exit.exit_code),
            _ => {}
        }
        Ok(Some(event))
    }

    async fn stdin(&self, text: &str) {
        self.input
            .send(pb::SessionRequest {
                message: Some(Message::Stdin(text.as_bytes().to_vec())),
            })
            .await
            .unwrap();
    }

    /// Reads until the output holds `text`; `Err` when the stream broke first.
    async fn read_until(&mut self, text: &str) -> Result<(), tonic::Status> {
        while !String::from_utf8_lossy(&self.output).contains(text) {
            if self.next().await?.is_none() {
                return Err(tonic::Status::unavailable("the stream ended"));
            }
        }
        Ok(())
    }
}

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
    let mut client = Client::open(&fleet.cp.api_url(), &key, shell(&id))
        .await
        .unwrap();
    client.stdin("echo before\n").await;
    client.read_until("before\n").await.unwrap();
    // output that goes on while the control plane is away
    client
        .stdin("generate --lines 150 --delay-ms 20; echo generated\n")
        .await;
    client.read_until("line 3\n").await.unwrap();

    let mesh = fleet.cp.mesh_addr;
    let fleet = fleet
        .restart_control_plane_after(Duration::from_millis(500), move |config| {
            config.mesh_listen = mesh;
        })
        .await;
    // the old stream broke with the control plane that carried it
    let broke = tokio::time::timeout(WAIT, client.read_until("never printed")).await;
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
        Client::open(&api_url, &key, open).await.ok()
    })
    .await;
    again.read_until("generated\n").await.unwrap();
    again.stdin("exit 4\n").await;
    while again.next().await.unwrap().is_some() {}
    assert_eq!(again.exit, Some(4));
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
    let client = Client::open(&fleet.cp.api_url(), &key, shell(&id))
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
    let refused = tokio::time::timeout(WAIT, Client::open(&fleet.cp.api_url(), &key, open))
        .await
        .expect("an answer, not a hang");
    let status = refused.err().expect("the session is gone");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    fleet.stop().await;
}
