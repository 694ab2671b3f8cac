//! Interactive processes of the docker provider against the real engine, through the
//! `Provider` trait: stdin and its end, a terminal's size and resizes, Ctrl-C as a
//! byte, signals to the whole command, and a dropped receiver that leaves nothing
//! behind. Skipped visibly without an engine (failed with BERTH_REQUIRE_DOCKER=1).

use std::time::Duration;

use tokio::sync::mpsc::Receiver;

use berth_testkit::docker::{DockerCleanup, docker_or_skip, unique_worker_id};
use berth_testkit::{eventually, shell};
use berth_worker::DockerConfig;
use berth_worker::provider::docker::DockerProvider;
use berth_worker::provider::output::DEFAULT_MAX_EXEC_OUTPUT as LIMIT;
use berth_worker::provider::{
    ExecEvent, ExecMode, Process, ProcessInput, ProcessSpec, Provider, Signal, TermSize,
};

const WAIT: Duration = Duration::from_secs(20);

/// A provider for a fresh worker id, one sandbox in it, and the cleanup guard.
async fn sandbox(test: &str) -> Option<(DockerProvider, String, DockerCleanup)> {
    let config = docker_or_skip(test).await?;
    let worker_id = unique_worker_id("dq");
    let cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let provider = DockerProvider::new(config, &worker_id);
    let id = unique_worker_id("sb");
    provider.spawn(berth_testkit::spec(&id)).await.unwrap();
    Some((provider, id, cleanup))
}

fn process(line: &str, tty: Option<TermSize>, stdin: bool) -> ProcessSpec {
    ProcessSpec {
        exec: shell(line),
        tty,
        stdin,
    }
}

const SIZE: TermSize = TermSize {
    cols: 100,
    rows: 30,
};

/// Reads output (stdout and stderr together) until it contains `needle`; returns it.
async fn read_until(events: &mut Receiver<ExecEvent>, needle: &str) -> String {
    let mut seen = Vec::new();
    let read = async {
        loop {
            match events.recv().await {
                Some(ExecEvent::Stdout(data) | ExecEvent::Stderr(data)) => {
                    seen.extend_from_slice(&data);
                    if String::from_utf8_lossy(&seen).contains(needle) {
                        return;
                    }
                }
                other => panic!(
                    "waiting for {needle:?} after {:?}: {other:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
    };
    if tokio::time::timeout(WAIT, read).await.is_err() {
        panic!(
            "no {needle:?} in {:?}",
            String::from_utf8_lossy(&seen).into_owned()
        );
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// The exit code, after any output.
async fn exit_code(events: &mut Receiver<ExecEvent>) -> i32 {
    let wait = async {
        loop {
            match events.recv().await {
                Some(ExecEvent::Stdout(_) | ExecEvent::Stderr(_)) => {}
                Some(ExecEvent::Exit { code, .. }) => return code,
                other => panic!("expected an exit, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("the process ends")
}

async fn send(process: &Process, input: ProcessInput) {
    process
        .input
        .send(input)
        .await
        .expect("the process takes input");
}

async fn type_line(process: &Process, line: &str) {
    send(
        process,
        ProcessInput::Stdin(format!("{line}\n").into_bytes()),
    )
    .await;
}

async fn processes(provider: &DockerProvider, id: &str) -> Vec<String> {
    let result = provider.exec(id, shell("ps -o args"), LIMIT).await.unwrap();
    String::from_utf8_lossy(&result.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn wait_for_process(provider: &DockerProvider, id: &str, args: &str) {
    eventually(&format!("{args} runs"), WAIT, || async {
        processes(provider, id)
            .await
            .iter()
            .any(|p| p == args)
            .then_some(())
    })
    .await;
}

async fn wait_for_no_process(provider: &DockerProvider, id: &str, args: &str) {
    eventually(&format!("{args} is gone"), WAIT, || async {
        let left = processes(provider, id).await;
        (!left.iter().any(|p| p == args)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn cat_echoes_stdin_and_exits_after_eof() {
    let Some((provider, id, _cleanup)) = sandbox("cat_echoes_stdin_and_exits_after_eof").await
    else {
        return;
    };
    let mut cat = provider
        .start_process(&id, process("cat", None, true))
        .await
        .unwrap();
    send(&cat, ProcessInput::Stdin(b"hello\n".to_vec())).await;
    read_until(&mut cat.events, "hello\n").await;
    send(&cat, ProcessInput::Stdin(b"again\n".to_vec())).await;
    read_until(&mut cat.events, "again\n").await;
    send(&cat, ProcessInput::Eof).await;
    assert_eq!(exit_code(&mut cat.events).await, 0);

    // dropping the input sender closes stdin too
    let mut spec = process("wc", None, true);
    spec.exec.command = "wc".into();
    spec.exec.args = vec!["-c".into()];
    spec.exec.mode = ExecMode::Argv;
    let Process { mut events, input } = provider.start_process(&id, spec).await.unwrap();
    input
        .send(ProcessInput::Stdin(b"12345".to_vec()))
        .await
        .unwrap();
    drop(input);
    assert_eq!(read_until(&mut events, "\n").await.trim(), "5");
    assert_eq!(exit_code(&mut events).await, 0);

    // without stdin the command reads end-of-file at once
    let mut closed = provider
        .start_process(&id, process("cat; echo done", None, false))
        .await
        .unwrap();
    read_until(&mut closed.events, "done\n").await;
    assert_eq!(exit_code(&mut closed.events).await, 0);
}

#[tokio::test]
async fn a_terminal_has_the_size_asked_and_follows_resizes() {
    let Some((provider, id, _cleanup)) =
        sandbox("a_terminal_has_the_size_asked_and_follows_resizes").await
    else {
        return;
    };
    let mut sh = provider
        .start_process(&id, process("sh", Some(SIZE), true))
        .await
        .unwrap();
    type_line(&sh, "stty size; echo TERM=$TERM").await;
    let out = read_until(&mut sh.events, "TERM=xterm-256color").await;
    assert!(out.contains("30 100\r\n"), "{out:?}");
    send(
        &sh,
        ProcessInput::Resize(TermSize {
            cols: 120,
            rows: 40,
        }),
    )
    .await;
    type_line(&sh, "stty size").await;
    read_until(&mut sh.events, "40 120\r\n").await;
    type_line(&sh, "exit 7").await;
    assert_eq!(exit_code(&mut sh.events).await, 7);

    // without stdin too (engines before API 1.42 size a terminal only once the
    // command has started: a command that asks at once may see 0x0 there)
    let mut stty = provider
        .start_process(&id, process("sleep 0.5; stty size", Some(SIZE), false))
        .await
        .unwrap();
    read_until(&mut stty.events, "30 100").await;
    assert_eq!(exit_code(&mut stty.events).await, 0);
}

#[tokio::test]
async fn ctrl_c_interrupts_the_foreground_command_and_the_shell_goes_on() {
    let Some((provider, id, _cleanup)) = sandbox("ctrl_c_interrupts_the_foreground").await else {
        return;
    };
    let mut sh = provider
        .start_process(&id, process("sh", Some(SIZE), true))
        .await
        .unwrap();
    type_line(&sh, "sleep 100").await;
    wait_for_process(&provider, &id, "sleep 100").await;
    send(&sh, ProcessInput::Stdin(vec![0x03])).await;
    wait_for_no_process(&provider, &id, "sleep 100").await;
    type_line(&sh, "echo back $?").await;
    read_until(&mut sh.events, "back 130").await;
    type_line(&sh, "exit 3").await;
    assert_eq!(exit_code(&mut sh.events).await, 3);
}

#[tokio::test]
async fn a_signal_reaches_every_process_of_the_command() {
    let Some((provider, id, _cleanup)) = sandbox("a_signal_reaches_every_process").await else {
        return;
    };
    let mut sleep = provider
        .start_process(&id, process("sleep 100", None, false))
        .await
        .unwrap();
    wait_for_process(&provider, &id, "sleep 100").await;
    send(&sleep, ProcessInput::Signal(Signal::TERM)).await;
    assert_eq!(exit_code(&mut sleep.events).await, 143);

    // in a terminal, a shell that waits for a child: both get it
    let mut sh = provider
        .start_process(&id, process("sleep 101; echo after", Some(SIZE), true))
        .await
        .unwrap();
    wait_for_process(&provider, &id, "sleep 101").await;
    send(&sh, ProcessInput::Signal(Signal::TERM)).await;
    assert_eq!(exit_code(&mut sh.events).await, 143);
    wait_for_no_process(&provider, &id, "sleep 101").await;
}

#[tokio::test]
async fn dropping_the_receiver_leaves_no_process_behind() {
    let Some((provider, id, _cleanup)) = sandbox("dropping_the_receiver_leaves_no_process").await
    else {
        return;
    };
    // a shell in a terminal with a child, and a plain command with stdin open
    let sh = provider
        .start_process(&id, process("sh", Some(SIZE), true))
        .await
        .unwrap();
    type_line(&sh, "sleep 102").await;
    let sleep = provider
        .start_process(&id, process("sleep 103", None, true))
        .await
        .unwrap();
    wait_for_process(&provider, &id, "sleep 102").await;
    wait_for_process(&provider, &id, "sleep 103").await;
    drop(sh.events);
    drop(sleep.events);
    wait_for_no_process(&provider, &id, "sleep 102").await;
    wait_for_no_process(&provider, &id, "sleep 103").await;
    let left = processes(&provider, &id).await;
    assert!(!left.iter().any(|p| p == "sh"), "{left:?}");
    // the input senders outlived their processes: sending fails, nothing hangs
    eventually("the input side is closed", WAIT, || async {
        (sh.input.is_closed() && sleep.input.is_closed()).then_some(())
    })
    .await;
    assert!(sleep.input.send(ProcessInput::Eof).await.is_err());
}

#[tokio::test]
async fn a_timeout_kills_an_interactive_command() {
    let Some((provider, id, _cleanup)) = sandbox("a_timeout_kills_an_interactive_command").await
    else {
        return;
    };
    let mut spec = process("sleep 104", Some(SIZE), true);
    spec.exec.timeout = Duration::from_millis(800);
    let mut sleep = provider.start_process(&id, spec).await.unwrap();
    let event = tokio::time::timeout(WAIT, sleep.events.recv())
        .await
        .unwrap();
    assert!(
        matches!(
            event,
            Some(ExecEvent::Failed(
                berth_worker::provider::ProviderError::Timeout(_)
            ))
        ),
        "{event:?}"
    );
    wait_for_no_process(&provider, &id, "sleep 104").await;
}

#[tokio::test]
async fn a_terminal_passes_every_byte_and_ends_input_with_ctrl_d() {
    let Some((provider, id, _cleanup)) = sandbox("a_terminal_passes_every_byte").await else {
        return;
    };
    // bytes a framed stream would take for a header (stdout, 2 GiB long), then
    // `cat` until end-of-file
    let mut cat = provider
        .start_process(
            &id,
            process(
                r"printf '\001\000\000\000\177\177\177\177hello'; cat; echo cat-ended",
                Some(SIZE),
                true,
            ),
        )
        .await
        .unwrap();
    let out = read_until(&mut cat.events, "hello").await;
    assert!(
        out.as_bytes()
            .starts_with(b"\x01\x00\x00\x00\x7f\x7f\x7f\x7fhello"),
        "{out:?}"
    );
    type_line(&cat, "typed").await;
    read_until(&mut cat.events, "typed\r\ntyped\r\n").await;
    send(&cat, ProcessInput::Eof).await;
    read_until(&mut cat.events, "cat-ended\r\n").await;
    assert_eq!(exit_code(&mut cat.events).await, 0);
}

/// Forwards a local TCP port to the engine's unix socket; returns `tcp://...`.
async fn tcp_engine(socket: &str) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("tcp://{}", listener.local_addr().unwrap());
    let socket = socket.trim_start_matches("unix://").to_owned();
    let serving = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Ok(mut engine) = tokio::net::UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                }
            });
        }
    });
    (host, serving)
}

#[tokio::test]
async fn a_terminal_works_over_a_tcp_engine_too() {
    let Some(config) = docker_or_skip("a_terminal_works_over_a_tcp_engine_too").await else {
        return;
    };
    let (host, serving) = tcp_engine(&config.host).await;
    let worker_id = unique_worker_id("dq");
    let _cleanup = DockerCleanup::new(&config, &[&worker_id]);
    let provider = DockerProvider::new(DockerConfig { host, ..config }, &worker_id);
    let id = unique_worker_id("sb");
    provider.spawn(berth_testkit::spec(&id)).await.unwrap();
    let mut sh = provider
        .start_process(&id, process("sh", Some(SIZE), true))
        .await
        .unwrap();
    type_line(&sh, "PS1=R'EADY> '; stty size").await;
    // Ctrl-D ends the shell once it reads a line again (typed ahead, its line editor
    // would read a NUL for it)
    let out = read_until(&mut sh.events, "READY> ").await;
    assert!(out.contains("30 100\r\n"), "{out:?}");
    send(&sh, ProcessInput::Eof).await;
    assert_eq!(exit_code(&mut sh.events).await, 0);
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_reader_that_stops_reading_holds_the_command_back() {
    let Some((provider, id, _cleanup)) = sandbox("a_terminal_reader_that_stops_reading").await
    else {
        return;
    };
    // 4096 writes of 64 KiB (256 MiB) to the terminal, a progress counter after each
    let mut spec = process(
        "i=0; while [ $i -lt 4096 ]; do head -c 65536 /dev/zero; i=$((i+1)); echo $i > /tmp/progress; done",
        Some(SIZE),
        false,
    );
    spec.exec.timeout = Duration::from_secs(120);
    let mut producer = provider.start_process(&id, spec).await.unwrap();
    producer.events.recv().await.expect("output starts");
    let progress = || async {
        let result = provider
            .exec(&id, shell("cat /tmp/progress"), LIMIT)
            .await
            .unwrap();
        String::from_utf8_lossy(&result.stdout).trim().to_owned()
    };
    // not reading: the producer must stall far below the end
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut previous = String::new();
    let stalled = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = progress().await;
        if !now.is_empty() && now == previous {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the producer never stalled (at {now})"
        );
        previous = now;
    };
    let stalled: u32 = stalled.parse().unwrap();
    assert!(
        stalled < 1024,
        "the producer ran on to {stalled} x 64 KiB unread"
    );
    // reading again lets it finish
    let mut total = 0usize;
    let code = loop {
        match producer.events.recv().await {
            Some(ExecEvent::Stdout(data)) => {
                assert!(data.len() <= 64 * 1024, "a chunk of {}", data.len());
                total += data.len();
            }
            Some(ExecEvent::Exit { code, .. }) => break code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, 0);
    assert!(total >= 255 * 65536, "{total}");
}
