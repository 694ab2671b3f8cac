//! The session registry over the mock provider: stdin, detach and re-attach from an
//! offset, gaps, the grace period, background sessions, one client at a time, bounded
//! memory under a slow client, and many sessions dropped leaving nothing behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::provider::mock::MockProvider;
use crate::provider::{ExecMode, ExecSpec, ProcessInput, SandboxSpec, TermSize};

const SANDBOX: &str = "sbx-1";

async fn setup(limits: SessionLimits) -> (Arc<MockProvider>, Arc<Sessions>) {
    let provider = Arc::new(MockProvider::new());
    provider
        .spawn(SandboxSpec {
            sandbox_id: SANDBOX.into(),
            image: "mock".into(),
            vcpus: 1,
            memory_mb: 64,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            internet: true,
            services: Vec::new(),
        })
        .await
        .unwrap();
    (provider, Arc::new(Sessions::new(limits)))
}

fn limits() -> SessionLimits {
    SessionLimits {
        grace: Duration::from_secs(300),
        buffer_bytes: 64 * 1024,
        max_sessions: 64,
    }
}

fn start(line: &str, tty: Option<TermSize>, background: bool) -> Start {
    Start {
        sandbox_id: SANDBOX.into(),
        spec: ProcessSpec {
            exec: ExecSpec {
                command: line.into(),
                args: Vec::new(),
                mode: ExecMode::Shell,
                env: BTreeMap::new(),
                workdir: None,
                timeout: Duration::from_secs(60),
            },
            tty,
            stdin: true,
        },
        background,
        command: line.into(),
    }
}

/// Everything up to the end: the output bytes (checking offsets run on without a
/// hole), the gaps, and the end.
async fn drain(attachment: &mut Attachment, mut offset: u64) -> (Vec<u8>, u64, End) {
    let mut out = Vec::new();
    let mut gaps = 0;
    while let Some(event) = attachment.next().await {
        match event {
            Event::Output(piece) => {
                assert_eq!(piece.offset, offset, "output resumes where it left off");
                offset += piece.data.len() as u64;
                out.extend_from_slice(&piece.data);
            }
            Event::Gap { bytes, offset: at } => {
                assert_eq!(at, offset);
                gaps += bytes;
                offset += bytes;
            }
            Event::End(end) => return (out, gaps, end),
            Event::Detached(reason) => panic!("detached: {reason}"),
        }
    }
    panic!("no end");
}

fn exit_code(end: &End) -> i32 {
    match end {
        End::Exit { code, .. } => *code,
        End::Failed(err) => panic!("failed: {err}"),
    }
}

#[tokio::test]
async fn cat_echoes_stdin_and_ends_at_eof() {
    let (provider, sessions) = setup(limits()).await;
    let session = sessions
        .start(provider.as_ref(), start("cat", None, false))
        .await
        .unwrap();
    let mut attachment = session.attach(0, false).await.unwrap();
    let input = attachment.input();
    input
        .send(ProcessInput::Stdin(b"hello ".to_vec()))
        .await
        .unwrap();
    input
        .send(ProcessInput::Stdin(b"world\n".to_vec()))
        .await
        .unwrap();
    input.send(ProcessInput::Eof).await.unwrap();
    let (out, gaps, end) = drain(&mut attachment, 0).await;
    assert_eq!(out, b"hello world\n");
    assert_eq!((gaps, exit_code(&end)), (0, 0));
    assert!(matches!(
        input.send(ProcessInput::Stdin(b"late".to_vec())).await,
        Ok(()) | Err(SessionError::StdinClosed)
    ));
}

#[tokio::test]
async fn a_client_that_comes_back_resumes_from_its_offset_without_loss() {
    let (provider, sessions) = setup(limits()).await;
    // 1 MiB through a 64 KiB buffer: held back while nobody reads, nothing dropped
    let line = "generate --bytes 1048576 --chunk 4096";
    let session = sessions
        .start(provider.as_ref(), start(line, None, false))
        .await
        .unwrap();
    let mut first = session.attach(0, false).await.unwrap();
    let mut received = Vec::new();
    while received.len() < 300_000 {
        match first.next().await.unwrap() {
            Event::Output(piece) => received.extend_from_slice(&piece.data),
            other => panic!("{other:?}"),
        }
    }
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let summary = session.summary();
    assert!(summary.end.is_none(), "held back while detached");
    assert!(summary.output_offset - received.len() as u64 <= 64 * 1024);
    let mut second = session.attach(received.len() as u64, false).await.unwrap();
    let (rest, gaps, end) = drain(&mut second, received.len() as u64).await;
    received.extend_from_slice(&rest);
    assert_eq!((gaps, exit_code(&end)), (0, 0));
    assert_eq!(received.len(), 1_048_576);
    let pattern = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n";
    assert!(
        received
            .chunks(64)
            .all(|chunk| chunk == &pattern[..chunk.len()])
    );
}

#[tokio::test]
async fn an_offset_older_than_the_buffer_is_reported_as_a_gap() {
    let (provider, sessions) = setup(limits()).await;
    let line = "generate --bytes 200000 --chunk 10000";
    let session = sessions
        .start(provider.as_ref(), start(line, None, false))
        .await
        .unwrap();
    let mut reader = session.attach(0, false).await.unwrap();
    let (out, _, _) = drain(&mut reader, 0).await;
    assert_eq!(out.len(), 200_000);
    drop(reader);
    // a second client from the very start: the first 200000 - 65536 bytes are gone
    let mut late = session.attach(0, false).await.unwrap();
    let (out, gaps, end) = drain(&mut late, 0).await;
    assert_eq!(gaps, 200_000 - 64 * 1024);
    assert_eq!(out.len(), 64 * 1024);
    assert_eq!(exit_code(&end), 0);
    assert!(matches!(
        session.attach(200_001, false).await,
        Err(SessionError::OffsetBeyondEnd {
            offset: 200_001,
            end: 200_000
        })
    ));
}

#[tokio::test]
async fn a_second_client_is_refused_unless_it_takes_over() {
    let (provider, sessions) = setup(limits()).await;
    let session = sessions
        .start(provider.as_ref(), start("cat", None, false))
        .await
        .unwrap();
    let mut first = session.attach(0, false).await.unwrap();
    assert!(matches!(
        session.attach(0, false).await,
        Err(SessionError::Attached(_))
    ));
    let second = session.attach(0, true).await.unwrap();
    assert_eq!(first.next().await, Some(Event::Detached("takeover")));
    assert!(matches!(
        first.input().send(ProcessInput::Stdin(b"x".to_vec())).await,
        Err(SessionError::NotAttached)
    ));
    second
        .input()
        .send(ProcessInput::Stdin(b"y".to_vec()))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_grace_period_ends_a_command_nobody_came_back_to() {
    let (provider, sessions) = setup(SessionLimits {
        grace: Duration::from_millis(200),
        ..limits()
    })
    .await;
    let session = sessions
        .start(provider.as_ref(), start("sleep 100", None, false))
        .await
        .unwrap();
    let attachment = session.attach(0, false).await.unwrap();
    let id = session.id.clone();
    drop(attachment);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // killed, and kept a while so a client coming back learns what happened
    let kept = sessions.get(SANDBOX, &id).unwrap().summary();
    assert!(matches!(
        kept.end,
        Some(End::Exit {
            code: 137,
            signal: Some(Signal::KILL),
            ..
        })
    ));
    assert_eq!(provider.running_commands(), 0);
}

#[tokio::test]
async fn a_background_session_keeps_its_whole_output_for_a_later_client() {
    let (provider, sessions) = setup(SessionLimits {
        grace: Duration::ZERO,
        ..limits()
    })
    .await;
    let line = "echo one; sleep 0.2; echo two; exit 3";
    let session = sessions
        .start(provider.as_ref(), start(line, None, true))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed = sessions.list(SANDBOX);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].end.as_ref().map(exit_code), Some(3));
    let mut attachment = session.attach(0, false).await.unwrap();
    let (out, gaps, end) = drain(&mut attachment, 0).await;
    assert_eq!(
        (out.as_slice(), gaps, exit_code(&end)),
        (&b"one\ntwo\n"[..], 0, 3)
    );
    drop(attachment);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sessions.count(), 0, "collected once a client saw the end");
}

#[tokio::test]
async fn a_terminal_session_sizes_resizes_and_takes_ctrl_c() {
    let (provider, sessions) = setup(limits()).await;
    let size = TermSize {
        cols: 100,
        rows: 30,
    };
    let session = sessions
        .start(provider.as_ref(), start("sh", Some(size), false))
        .await
        .unwrap();
    let mut attachment = session.attach(0, false).await.unwrap();
    let input = attachment.input();
    let mut seen = Vec::new();
    let mut expect = async |attachment: &mut Attachment, needle: &str| {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match attachment.next().await.unwrap() {
                Event::Output(piece) => seen.extend_from_slice(&piece.data),
                other => panic!("{other:?} before {needle:?}"),
            }
        }
        seen.clear();
    };
    input
        .send(ProcessInput::Stdin(b"stty size\n".to_vec()))
        .await
        .unwrap();
    expect(&mut attachment, "30 100\n").await;
    input
        .send(ProcessInput::Resize(TermSize {
            cols: 120,
            rows: 40,
        }))
        .await
        .unwrap();
    input
        .send(ProcessInput::Stdin(b"stty size\n".to_vec()))
        .await
        .unwrap();
    expect(&mut attachment, "40 120\n").await;
    input
        .send(ProcessInput::Stdin(b"sleep 100\n".to_vec()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    input.send(ProcessInput::Stdin(vec![3])).await.unwrap();
    input
        .send(ProcessInput::Stdin(b"echo back $?\n".to_vec()))
        .await
        .unwrap();
    expect(&mut attachment, "back 130").await;
    input
        .send(ProcessInput::Stdin(b"exit 7\n".to_vec()))
        .await
        .unwrap();
    let (_, _, end) = drain(&mut attachment, session.summary().output_offset).await;
    assert_eq!(exit_code(&end), 7);
}

#[tokio::test]
async fn a_signal_ends_a_command_and_names_itself() {
    let (provider, sessions) = setup(limits()).await;
    let session = sessions
        .start(provider.as_ref(), start("sleep 100", None, false))
        .await
        .unwrap();
    let mut attachment = session.attach(0, false).await.unwrap();
    attachment
        .input()
        .send(ProcessInput::Signal(Signal::TERM))
        .await
        .unwrap();
    let (_, _, end) = drain(&mut attachment, 0).await;
    assert!(matches!(
        end,
        End::Exit {
            code: 143,
            signal: Some(Signal::TERM),
            ..
        }
    ));
    let killed = sessions
        .start(provider.as_ref(), start("sleep 100", None, true))
        .await
        .unwrap();
    let summary = sessions
        .kill(SANDBOX, &killed.id, Signal::KILL)
        .await
        .unwrap();
    assert_eq!(summary.session_id, killed.id);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        killed.summary().end,
        Some(End::Exit {
            code: 137,
            signal: Some(Signal::KILL),
            ..
        })
    ));
}

#[tokio::test]
async fn ten_thousand_dropped_sessions_leave_nothing_behind() {
    let (provider, sessions) = setup(SessionLimits {
        grace: Duration::ZERO,
        ..limits()
    })
    .await;
    for index in 0..10_000 {
        let line = if index % 2 == 0 { "cat" } else { "echo hi" };
        let session = sessions
            .start(provider.as_ref(), start(line, None, false))
            .await
            .unwrap();
        let attachment = session.attach(0, false).await.unwrap();
        drop(attachment);
    }
    // every command ended; what is kept is bounded by the registry's limit
    tokio::time::timeout(Duration::from_secs(10), async {
        while provider.running_commands() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every command ended");
    assert!(sessions.count() <= limits().max_sessions);
}

#[tokio::test]
async fn the_registry_refuses_past_its_limit_but_makes_room_from_ended_sessions() {
    let (provider, sessions) = setup(SessionLimits {
        max_sessions: 2,
        ..limits()
    })
    .await;
    let a = sessions
        .start(provider.as_ref(), start("sleep 100", None, true))
        .await
        .unwrap();
    let _b = sessions
        .start(provider.as_ref(), start("echo done", None, true))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // b ended and nobody is attached: it makes room
    let c = sessions
        .start(provider.as_ref(), start("sleep 100", None, true))
        .await
        .unwrap();
    assert!(matches!(
        sessions
            .start(provider.as_ref(), start("true", None, true))
            .await,
        Err(SessionError::TooMany(2))
    ));
    sessions.forget_sandbox(SANDBOX);
    assert_eq!(sessions.count(), 0);
    assert!(a.summary().end.is_some() || !a.is_collectable(Duration::from_secs(300)));
    drop(c);
}
