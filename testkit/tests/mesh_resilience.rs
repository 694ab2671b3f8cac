//! The control plane's connection to a worker survives what a busy relay does to it:
//! thousands of streams cancelled on behalf of clients that went away (execs left
//! half read, uploads dropped mid-way) do not make either end close the connection.
//! A worker draining itself while the control plane is down can still be stopped.

use berth_proto::v1 as pb;
use berth_proto::v1::worker_service_client::WorkerServiceClient;
use std::time::Duration;

use berth_testkit::{Api, TestControlPlane, TestFleet, TestWorker, eventually, id_of};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Streams of each kind abandoned on the one connection: well past h2's default budget
/// of 1024 local error resets per connection.
const ABANDONED: usize = 2000;
/// How many are abandoned at once.
const PARALLEL: usize = 16;

fn exec(sandbox_id: &str, command: &str) -> pb::WorkerExecRequest {
    pb::WorkerExecRequest {
        sandbox_id: sandbox_id.to_owned(),
        generation: 1,
        command: command.to_owned(),
        timeout_ms: 60_000,
        ..Default::default()
    }
}

/// Starts a stream of plenty of output, reads its first event and walks away.
async fn abandon_exec_stream(client: &mut WorkerServiceClient<Channel>, sandbox_id: &str) {
    let mut events = client
        .exec_stream(exec(sandbox_id, "generate --bytes 10000000 --chunk 8192"))
        .await
        .expect("exec stream starts")
        .into_inner();
    let first = events
        .next()
        .await
        .expect("an event")
        .expect("not an error");
    assert!(matches!(
        first.event,
        Some(pb::exec_event::Event::Stdout(_))
    ));
}

/// Sends an upload's header and some data, then drops the call (the end message never
/// sent): the file must not land.
async fn abandon_upload(client: &mut WorkerServiceClient<Channel>, sandbox_id: &str, n: usize) {
    use pb::write_file_chunk::Part;
    let header = pb::WriteFileChunk {
        part: Some(Part::Header(pb::WriteFileHeader {
            sandbox_id: sandbox_id.to_owned(),
            generation: 1,
            path: format!("upload-{n}"),
            mode: 0o644,
        })),
    };
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let data = futures::stream::iter((0..4).map(|_| pb::WriteFileChunk {
        part: Some(Part::Data(vec![7u8; 16 * 1024])),
    }));
    let body = futures::stream::iter([header])
        .chain(data)
        .chain(futures::stream::once(async move {
            let _ = sent_tx.send(());
            // never ends: the client is gone before the upload finished
            std::future::pending::<pb::WriteFileChunk>().await
        }));
    let call = client.write_file(tonic::Request::new(body));
    tokio::select! {
        answer = call => panic!("an unfinished upload was answered: {answer:?}"),
        _ = sent_rx => {}
    }
}

/// An upload the worker refuses on its header (no lease generation) while the rest of
/// the body is still on its way: the worker answers and closes the stream early.
async fn refused_upload(client: &mut WorkerServiceClient<Channel>, sandbox_id: &str) {
    use pb::write_file_chunk::Part;
    let header = pb::WriteFileChunk {
        part: Some(Part::Header(pb::WriteFileHeader {
            sandbox_id: sandbox_id.to_owned(),
            generation: 0,
            path: "refused".into(),
            mode: 0o644,
        })),
    };
    let data = futures::stream::iter((0..16).map(|_| pb::WriteFileChunk {
        part: Some(Part::Data(vec![7u8; 16 * 1024])),
    }));
    let refused = client
        .write_file(tonic::Request::new(
            futures::stream::iter([header]).chain(data),
        ))
        .await
        .expect_err("a write without a generation is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_streams_do_not_exhaust_the_connection() {
    let fleet = TestFleet::start().await;
    let sandbox = fleet.api.create_sandbox(json!({})).await;
    let id = id_of(&sandbox);
    // one channel: one connection from the control plane's identity to the worker
    let client = fleet.cp.worker_client(fleet.worker(0));

    // a long stream opened first: a connection closed by either end would end it
    let mut canary = client
        .clone()
        .exec_stream(exec(&id, "generate --lines 1000000 --delay-ms 20"))
        .await
        .expect("canary starts")
        .into_inner();
    assert!(canary.next().await.expect("a first line").is_ok());

    futures::stream::iter(0..ABANDONED)
        .for_each_concurrent(PARALLEL, |n| {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                abandon_exec_stream(&mut client, &id).await;
                abandon_upload(&mut client, &id, n).await;
                refused_upload(&mut client, &id).await;
            }
        })
        .await;

    // the canary still streams: the connection it rides on was never closed
    for _ in 0..3 {
        let event = canary
            .next()
            .await
            .expect("the canary goes on")
            .expect("the canary's connection is still open");
        assert!(matches!(
            event.event,
            Some(pb::exec_event::Event::Stdout(_))
        ));
    }
    drop(canary);
    // and new calls are answered, while no abandoned upload left a file behind
    let listed = client
        .clone()
        .list_files(tonic::Request::new(pb::WorkerFileRequest {
            sandbox_id: id.clone(),
            generation: 1,
            path: "/workspace".into(),
        }))
        .await
        .expect("list files")
        .into_inner();
    assert!(
        listed
            .files
            .iter()
            .all(|file| !file.path.contains("upload-")),
        "{:?}",
        listed.files
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_self_drain_with_the_control_plane_down_stops_when_told() {
    let cp = TestControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cp.worker_config(dir.path(), Some(cp.join_token(None).await));
    let worker = TestWorker::start(config).await.expect("worker starts");
    let api = Api::new(&cp);
    api.wait_ready().await;
    // a sandbox the drain would wait an hour for
    api.create_sandbox(json!({})).await;
    cp.stop().await;

    let stop = CancellationToken::new();
    let drain = tokio::spawn({
        let stop = stop.clone();
        async move {
            let destroyed = worker.drain_or_stop(Duration::from_secs(3600), &stop).await;
            (worker, destroyed)
        }
    });
    // the second SIGINT/SIGTERM
    stop.cancel();
    eventually("the drain to stop", Duration::from_secs(20), || async {
        drain.is_finished().then_some(())
    })
    .await;
    let (worker, destroyed) = drain.await.unwrap();
    assert_eq!(destroyed, 0, "cut short, nothing was destroyed");
    worker.stop().await;
}
