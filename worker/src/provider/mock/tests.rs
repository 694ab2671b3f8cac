//! Tests of the mock provider through the `Provider` trait.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::MockProvider;
use crate::provider::output::DEFAULT_MAX_EXEC_OUTPUT as LIMIT;
use crate::provider::{
    ByteStream, ExecEvent, ExecMode, ExecResult, ExecSpec, Provider, ProviderError, SandboxSpec,
    SandboxState,
};

fn sandbox_spec(id: &str) -> SandboxSpec {
    SandboxSpec {
        sandbox_id: id.into(),
        image: "alpine:3".into(),
        vcpus: 1,
        memory_mb: 256,
        env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        metadata: BTreeMap::new(),
        internet: true,
        services: Vec::new(),
    }
}

fn shell(line: &str) -> ExecSpec {
    ExecSpec {
        command: line.into(),
        args: Vec::new(),
        mode: ExecMode::Shell,
        env: BTreeMap::new(),
        workdir: None,
        timeout: Duration::from_secs(10),
    }
}

async fn provider_with(id: &str) -> MockProvider {
    let provider = MockProvider::new();
    provider.spawn(sandbox_spec(id)).await.unwrap();
    provider
}

async fn run(provider: &MockProvider, line: &str) -> ExecResult {
    provider.exec("sb", shell(line), LIMIT).await.unwrap()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

/// Asserts `stdout`, `stderr` and the exit code of a shell line.
async fn check(provider: &MockProvider, line: &str, stdout: &str, stderr: &str, code: i32) {
    let result = run(provider, line).await;
    assert_eq!(text(&result.stdout), stdout, "stdout of {line:?}");
    assert_eq!(text(&result.stderr), stderr, "stderr of {line:?}");
    assert_eq!(result.exit_code, code, "exit code of {line:?}");
}

fn bytes(chunks: Vec<Vec<u8>>) -> ByteStream {
    futures::stream::iter(chunks.into_iter().map(Ok)).boxed()
}

async fn read_all(provider: &MockProvider, path: &str) -> Result<Vec<u8>, ProviderError> {
    let mut stream = provider.read_file("sb", path).await?;
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        assert!(chunk.len() <= 64 * 1024);
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

async fn write(provider: &MockProvider, path: &str, data: &[u8]) -> Result<u64, ProviderError> {
    provider
        .write_file("sb", path, 0o644, bytes(vec![data.to_vec()]))
        .await
}

/// Polls `condition` for up to two seconds.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn lifecycle_is_idempotent() {
    let provider = MockProvider::new();
    assert_eq!(provider.name(), "mock");
    assert!(provider.health().await.healthy);
    let info = provider.spawn(sandbox_spec("a")).await.unwrap();
    assert_eq!(info.vm_id, "mock-a");
    assert_eq!(info.state, SandboxState::Running);
    provider.spawn(sandbox_spec("b")).await.unwrap();
    assert_eq!(
        provider.spawn(sandbox_spec("a")).await,
        Err(ProviderError::SandboxExists("a".into()))
    );
    let ids: Vec<String> = provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.sandbox_id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(provider.status("a").await.unwrap(), info);
    provider.destroy("a").await.unwrap();
    provider.destroy("a").await.unwrap();
    assert_eq!(
        provider.status("a").await,
        Err(ProviderError::SandboxNotFound("a".into()))
    );
    assert_eq!(provider.list().await.unwrap().len(), 1);
    assert!(matches!(
        provider.exec_stream("a", shell("true")).await,
        Err(ProviderError::SandboxNotFound(_))
    ));
}

#[tokio::test]
async fn thousands_of_sandboxes_are_cheap() {
    let provider = MockProvider::new();
    for i in 0..2000 {
        provider
            .spawn(sandbox_spec(&format!("sb-{i}")))
            .await
            .unwrap();
    }
    assert_eq!(provider.list().await.unwrap().len(), 2000);
    let result = provider
        .exec("sb-1999", shell("echo $GREETING"), LIMIT)
        .await
        .unwrap();
    assert_eq!(result.stdout, b"hello\n");
}

#[tokio::test]
async fn echo_printf_quotes_and_variables() {
    let provider = provider_with("sb").await;
    check(&provider, "echo hello world", "hello world\n", "", 0).await;
    check(
        &provider,
        "echo -n a; echo -e 'b\\tc\\nd'",
        "ab\tc\nd\n",
        "",
        0,
    )
    .await;
    check(
        &provider,
        r#"echo 'a  $X' "b $GREETING" c\ d"#,
        "a  $X b hello c d\n",
        "",
        0,
    )
    .await;
    check(
        &provider,
        r#"echo "${GREETING}s \"q\" \$x" $NOPE end"#,
        "hellos \"q\" $x end\n",
        "",
        0,
    )
    .await;
    check(&provider, "printf '%s=%d\\n' a 1 b 2", "a=1\nb=2\n", "", 0).await;
    check(&provider, "printf '100%%\\n'", "100%\n", "", 0).await;
    check(
        &provider,
        "printf '%d\\n' x",
        "0\n",
        "printf: 'x': invalid number\n",
        1,
    )
    .await;
    check(
        &provider,
        "echo $HOME $PATH",
        "/workspace /usr/bin:/bin\n",
        "",
        0,
    )
    .await;
}

#[tokio::test]
async fn lists_follow_bash() {
    let provider = provider_with("sb").await;
    check(&provider, "echo a; echo b", "a\nb\n", "", 0).await;
    check(&provider, "true && echo yes", "yes\n", "", 0).await;
    check(&provider, "false && echo yes", "", "", 1).await;
    check(&provider, "false || echo no", "no\n", "", 0).await;
    check(&provider, "true || echo no && echo end", "end\n", "", 0).await;
    check(&provider, "false; echo $?", "1\n", "", 0).await;
    check(&provider, "echo a; exit 3; echo b", "a\n", "", 3).await;
    check(
        &provider,
        "nosuch arg",
        "",
        "nosuch: command not found\n",
        127,
    )
    .await;
    check(
        &provider,
        "nosuch || echo $?",
        "127\n",
        "nosuch: command not found\n",
        0,
    )
    .await;
}

#[tokio::test]
async fn syntax_errors_exit_2() {
    let provider = provider_with("sb").await;
    for line in ["echo 'open", "echo a &&", "; echo a", "echo a | cat"] {
        let result = run(&provider, line).await;
        assert_eq!(result.exit_code, 2, "{line:?}");
        assert!(
            text(&result.stderr).starts_with("sh: syntax error"),
            "{line:?}"
        );
        assert!(result.stdout.is_empty());
    }
}

#[tokio::test]
async fn redirections_write_sandbox_files() {
    let provider = provider_with("sb").await;
    check(
        &provider,
        "echo one > out.txt; echo two >>out.txt",
        "",
        "",
        0,
    )
    .await;
    assert_eq!(
        read_all(&provider, "/workspace/out.txt").await.unwrap(),
        b"one\ntwo\n"
    );
    check(
        &provider,
        "echo three >out.txt; cat out.txt",
        "three\n",
        "",
        0,
    )
    .await;
    check(&provider, "cat missing 2> err.txt", "", "", 1).await;
    check(
        &provider,
        "cat err.txt",
        "cat: missing: No such file or directory\n",
        "",
        0,
    )
    .await;
    check(&provider, "echo oops >&2", "", "oops\n", 0).await;
    check(&provider, "echo oops 1>&2", "", "oops\n", 0).await;
    check(
        &provider,
        "cat missing 2>&1",
        "cat: missing: No such file or directory\n",
        "",
        1,
    )
    .await;
    check(
        &provider,
        "cat nope >both 2>&1; cat both",
        "cat: nope: No such file or directory\n",
        "",
        0,
    )
    .await;
    check(&provider, "echo x 2>>e >&2; cat e", "x\n", "", 0).await;
    check(
        &provider,
        "echo hidden >/dev/null; cat nope 2>/dev/null || echo ok",
        "ok\n",
        "",
        0,
    )
    .await;
    check(
        &provider,
        "echo x > nodir/f",
        "",
        "sh: nodir/f: No such file or directory\n",
        1,
    )
    .await;
}

#[tokio::test]
async fn argv_mode_does_not_interpret() {
    let provider = provider_with("sb").await;
    let spec = ExecSpec {
        command: "echo".into(),
        args: vec!["a;".into(), "'b'".into(), "$HOME".into(), "&&".into()],
        mode: ExecMode::Argv,
        ..shell("")
    };
    let result = provider.exec("sb", spec, LIMIT).await.unwrap();
    assert_eq!(text(&result.stdout), "a; 'b' $HOME &&\n");
    // Shell mode quotes each arg, so they are not interpreted either.
    let spec = ExecSpec {
        command: "echo".into(),
        args: vec!["a; echo b".into(), "$HOME".into()],
        ..shell("")
    };
    let result = provider.exec("sb", spec, LIMIT).await.unwrap();
    assert_eq!(text(&result.stdout), "a; echo b $HOME\n");
    let spec = ExecSpec {
        command: "sh".into(),
        args: vec!["-c".into(), "cd /tmp && pwd; exit 4".into()],
        mode: ExecMode::Argv,
        ..shell("")
    };
    let result = provider.exec("sb", spec, LIMIT).await.unwrap();
    assert_eq!((text(&result.stdout), result.exit_code), ("/tmp\n", 4));
}

#[tokio::test]
async fn workdir_env_and_cd() {
    let provider = provider_with("sb").await;
    check(
        &provider,
        "pwd; cd /tmp; pwd; echo $PWD",
        "/workspace\n/tmp\n/tmp\n",
        "",
        0,
    )
    .await;
    check(
        &provider,
        "cd nowhere",
        "",
        "sh: cd: nowhere: No such file or directory\n",
        1,
    )
    .await;
    let spec = ExecSpec {
        workdir: Some("/tmp".into()),
        env: BTreeMap::from([("GREETING".into(), "hi".into()), ("X".into(), "1".into())]),
        ..shell("pwd; env")
    };
    let result = provider.exec("sb", spec, LIMIT).await.unwrap();
    assert_eq!(
        text(&result.stdout),
        "/tmp\nGREETING=hi\nHOME=/workspace\nPATH=/usr/bin:/bin\nPWD=/tmp\nX=1\n"
    );
    let missing = ExecSpec {
        workdir: Some("/nope".into()),
        ..shell("pwd")
    };
    assert!(matches!(
        provider.exec_stream("sb", missing).await,
        Err(ProviderError::FileNotFound(_))
    ));
}

#[tokio::test]
async fn file_builtins() {
    let provider = provider_with("sb").await;
    check(
        &provider,
        "mkdir -p a/b/c && touch a/f a/.hidden && ls a",
        "b\nf\n",
        "",
        0,
    )
    .await;
    check(&provider, "ls -a a", ".\n..\n.hidden\nb\nf\n", "", 0).await;
    check(
        &provider,
        "echo 12345 > a/f; ls -l a/f",
        "-rw-r--r--        6 a/f\n",
        "",
        0,
    )
    .await;
    check(
        &provider,
        "ls missing",
        "",
        "ls: cannot access 'missing': No such file or directory\n",
        2,
    )
    .await;
    check(
        &provider,
        "mkdir a",
        "",
        "mkdir: cannot create directory 'a': File exists\n",
        1,
    )
    .await;
    check(
        &provider,
        "rm a",
        "",
        "rm: cannot remove 'a': Is a directory\n",
        1,
    )
    .await;
    check(&provider, "rm -rf a missing && ls", "", "", 0).await;
    check(
        &provider,
        "rm missing",
        "",
        "rm: cannot remove 'missing': No such file or directory\n",
        1,
    )
    .await;
    check(&provider, "cat", "", "", 0).await;
}

#[tokio::test]
async fn timeout_is_honored() {
    let provider = provider_with("sb").await;
    let spec = ExecSpec {
        timeout: Duration::from_millis(100),
        ..shell("sleep 10")
    };
    let started = Instant::now();
    let result = provider.exec("sb", spec, LIMIT).await;
    assert_eq!(
        result,
        Err(ProviderError::Timeout(Duration::from_millis(100)))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let check_log = || async {
        let mut rx = provider.logs("sb", 1, false).await.unwrap();
        rx.recv().await.unwrap().line
    };
    assert_eq!(check_log().await, "exec: sleep 10 -> timed out");
    assert!(eventually(|| provider.running_commands() == 0).await);
}

#[tokio::test]
async fn output_streams_as_produced() {
    let provider = provider_with("sb").await;
    let started = Instant::now();
    let mut rx = provider
        .exec_stream("sb", shell("generate --lines 3 --delay-ms 200"))
        .await
        .unwrap();
    let mut arrivals = Vec::new();
    while let Some(event) = rx.recv().await {
        arrivals.push((started.elapsed(), event));
    }
    let outputs: Vec<&ExecEvent> = arrivals.iter().map(|(_, event)| event).collect();
    assert_eq!(outputs[0], &ExecEvent::Stdout(b"line 1\n".to_vec()));
    assert_eq!(outputs[2], &ExecEvent::Stdout(b"line 3\n".to_vec()));
    assert!(matches!(outputs[3], ExecEvent::Exit { code: 0, .. }));
    let (first, last) = (arrivals[0].0, arrivals[3].0);
    assert!(
        first < Duration::from_millis(150),
        "first chunk after {first:?}"
    );
    assert!(last >= Duration::from_millis(390), "exit after {last:?}");
}

#[tokio::test]
async fn dropping_the_receiver_stops_the_command() {
    let provider = provider_with("sb").await;
    let sleeper = provider.exec_stream("sb", shell("sleep 30")).await.unwrap();
    let mut generator = provider
        .exec_stream("sb", shell("generate --bytes 1000000000 --chunk 1000"))
        .await
        .unwrap();
    assert!(matches!(generator.recv().await, Some(ExecEvent::Stdout(_))));
    assert_eq!(provider.running_commands(), 2);
    drop(sleeper);
    drop(generator);
    assert!(eventually(|| provider.running_commands() == 0).await);
    let mut logs = provider.logs("sb", 2, false).await.unwrap();
    while let Some(line) = logs.recv().await {
        assert!(
            line.line.ends_with("-> cancelled: the receiver went away"),
            "{line:?}"
        );
    }
}

#[tokio::test]
async fn destroying_the_sandbox_ends_its_commands() {
    let provider = provider_with("sb").await;
    let mut rx = provider.exec_stream("sb", shell("sleep 30")).await.unwrap();
    provider.destroy("sb").await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .unwrap();
    assert_eq!(
        event,
        Some(ExecEvent::Failed(ProviderError::SandboxNotFound(
            "sb".into()
        )))
    );
    assert!(eventually(|| provider.running_commands() == 0).await);
}

#[tokio::test]
async fn large_generated_output() {
    let provider = provider_with("sb").await;
    let result = run(&provider, "generate --bytes 104857600 > big; ls -l big").await;
    assert_eq!(text(&result.stdout), "-rw-r--r-- 104857600 big\n");
    let data = read_all(&provider, "big").await.unwrap();
    assert_eq!(data.len(), 104_857_600);
    assert_eq!(&data[..10], b"0123456789");
    assert_eq!(&data[64..74], b"0123456789");
    let result = run(&provider, "generate --bytes 100 --chunk 30 --stderr").await;
    assert_eq!(result.stderr.len(), 100);
    check(
        &provider,
        "generate --lines 3 --chunk 1000",
        "line 1\nline 2\nline 3\n",
        "",
        0,
    )
    .await;
    let result = run(&provider, "generate --bytes x").await;
    assert_eq!(result.exit_code, 2);
    assert!(text(&result.stderr).starts_with("generate: invalid number"));
}

#[tokio::test]
async fn a_whole_exec_keeps_at_most_its_limit_and_runs_to_the_end() {
    let provider = provider_with("sb").await;
    // far more than the limit, then a file written after it all: the command is not
    // stopped at the limit, and its exit code is its own
    let line = "generate --bytes 50000000; generate --bytes 3000 --stderr; touch done; exit 7";
    let result = provider.exec("sb", shell(line), 4096).await.unwrap();
    assert!(result.truncated);
    assert_eq!(result.exit_code, 7);
    assert_eq!(result.stdout.len(), 4096);
    assert_eq!(&result.stdout[..10], b"0123456789");
    assert!(result.stderr.is_empty(), "the budget went to stdout first");
    let done = provider.stat("sb", "/workspace/done").await;
    assert_eq!(done.map(|info| info.size), Ok(0));

    // exactly the limit is not truncated
    let result = provider
        .exec("sb", shell("generate --bytes 4096"), 4096)
        .await
        .unwrap();
    assert_eq!((result.stdout.len(), result.truncated), (4096, false));
}

#[tokio::test]
async fn files_round_trip() {
    let provider = provider_with("sb").await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    assert_eq!(write(&provider, "bin.dat", &binary).await, Ok(1000));
    assert_eq!(
        read_all(&provider, "/workspace/bin.dat").await.unwrap(),
        binary
    );

    // 10 MB in odd-sized chunks.
    let big: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Vec<u8>> = big.chunks(100_003).map(<[u8]>::to_vec).collect();
    let size = provider
        .write_file("sb", "/tmp/big", 0o600, bytes(chunks))
        .await
        .unwrap();
    assert_eq!(size, 10_000_000);
    assert_eq!(read_all(&provider, "/tmp/big").await.unwrap(), big);
    let info = provider.stat("sb", "/tmp/big").await.unwrap();
    assert_eq!(
        (info.size, info.mode, info.is_dir),
        (10_000_000, 0o600, false)
    );

    assert_eq!(write(&provider, "empty", b"").await, Ok(0));
    assert_eq!(read_all(&provider, "empty").await.unwrap(), b"");
    assert_eq!(
        write(&provider, "nodir/f", b"x").await,
        Err(ProviderError::FileNotFound("/workspace/nodir".into()))
    );
    assert_eq!(
        write(&provider, "/tmp", b"x").await,
        Err(ProviderError::IsADirectory("/tmp".into()))
    );
    assert!(matches!(
        write(&provider, "../etc/passwd", b"x").await,
        Err(ProviderError::InvalidPath { .. })
    ));
    assert!(matches!(
        provider.stat("sb", "a/../b").await,
        Err(ProviderError::InvalidPath { .. })
    ));
    assert_eq!(
        read_all(&provider, "/tmp").await,
        Err(ProviderError::IsADirectory("/tmp".into()))
    );
    assert_eq!(
        read_all(&provider, "missing").await,
        Err(ProviderError::FileNotFound("/workspace/missing".into()))
    );
}

#[tokio::test]
async fn listing_deleting_moving_chmod() {
    let provider = provider_with("sb").await;
    run(&provider, "mkdir -p d/sub && touch d/b d/a d/sub/x").await;
    let listed: Vec<(String, bool)> = provider
        .list_files("sb", "d")
        .await
        .unwrap()
        .into_iter()
        .map(|info| (info.path, info.is_dir))
        .collect();
    let expected = [
        ("/workspace/d/a", false),
        ("/workspace/d/b", false),
        ("/workspace/d/sub", true),
    ];
    assert_eq!(listed, expected.map(|(path, dir)| (path.to_owned(), dir)));
    assert_eq!(
        provider.list_files("sb", "d/a").await,
        Err(ProviderError::NotADirectory("/workspace/d/a".into()))
    );
    let root: Vec<String> = provider
        .list_files("sb", "/")
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.path)
        .collect();
    assert_eq!(root, ["/tmp", "/workspace"]);

    provider.chmod("sb", "d/a", 0o100755).await.unwrap();
    assert_eq!(provider.stat("sb", "d/a").await.unwrap().mode, 0o755);

    assert_eq!(
        provider
            .move_file("sb", "d", "d/sub/inner")
            .await
            .map_err(|e| matches!(e, ProviderError::InvalidArgument(_))),
        Err(true)
    );
    assert_eq!(
        provider.move_file("sb", "d/a", "/tmp").await,
        Err(ProviderError::FileExists("/tmp".into()))
    );
    provider.move_file("sb", "d/a", "d/b").await.unwrap();
    provider.move_file("sb", "d", "/tmp/moved").await.unwrap();
    check(
        &provider,
        "ls /tmp/moved /tmp/moved/sub",
        "/tmp/moved:\nb\nsub\n\n/tmp/moved/sub:\nx\n",
        "",
        0,
    )
    .await;
    assert_eq!(
        provider.stat("sb", "d").await,
        Err(ProviderError::FileNotFound("/workspace/d".into()))
    );

    assert_eq!(
        provider.delete_file("sb", "/tmp/moved", false).await,
        Err(ProviderError::DirectoryNotEmpty("/tmp/moved".into()))
    );
    provider
        .delete_file("sb", "/tmp/moved/sub/x", false)
        .await
        .unwrap();
    provider
        .delete_file("sb", "/tmp/moved/sub", false)
        .await
        .unwrap();
    provider
        .delete_file("sb", "/tmp/moved", true)
        .await
        .unwrap();
    assert!(provider.list_files("sb", "/tmp").await.unwrap().is_empty());
    assert!(matches!(
        provider.delete_file("sb", "/", true).await,
        Err(ProviderError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn glob_patterns() {
    let provider = provider_with("sb").await;
    run(
        &provider,
        "mkdir -p src/a/b && touch x.rs y.rs xy.txt src/m.rs src/a/n.rs src/a/b/o.rs",
    )
    .await;
    let glob = |pattern: &'static str| {
        let provider = &provider;
        async move { provider.glob("sb", pattern).await.unwrap() }
    };
    assert_eq!(glob("*.rs").await, ["/workspace/x.rs", "/workspace/y.rs"]);
    assert_eq!(glob("?.rs").await, ["/workspace/x.rs", "/workspace/y.rs"]);
    assert_eq!(glob("x?.*").await, ["/workspace/xy.txt"]);
    assert_eq!(
        glob("src/**/*.rs").await,
        [
            "/workspace/src/a/b/o.rs",
            "/workspace/src/a/n.rs",
            "/workspace/src/m.rs"
        ]
    );
    assert_eq!(
        glob("/workspace/src/*").await,
        ["/workspace/src/a", "/workspace/src/m.rs"]
    );
    assert_eq!(glob("**/b").await, ["/workspace/src/a/b"]);
    assert_eq!(glob("/*").await, ["/tmp", "/workspace"]);
    assert!(glob("nothing*").await.is_empty());
    let everything = glob("/**").await;
    assert_eq!(everything[..3], ["/", "/tmp", "/workspace"]);
    assert!(everything.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(everything.len(), 12);
}

#[tokio::test]
async fn logs_tail_and_follow_until_destroyed() {
    let provider = provider_with("sb").await;
    run(&provider, "echo one").await;
    run(&provider, "exit 5").await;
    let mut rx = provider.logs("sb", 10, true).await.unwrap();
    let mut next = async || rx.recv().await.map(|line| line.line);
    assert_eq!(next().await.unwrap(), "sandbox sb created (image alpine:3)");
    assert_eq!(next().await.unwrap(), "exec: echo one -> exit 0");
    assert_eq!(next().await.unwrap(), "exec: exit 5 -> exit 5");
    run(&provider, "true").await;
    assert_eq!(next().await.unwrap(), "exec: true -> exit 0");
    provider.destroy("sb").await.unwrap();
    assert_eq!(next().await.unwrap(), "sandbox destroyed");
    let end = tokio::time::timeout(Duration::from_secs(2), next())
        .await
        .unwrap();
    assert_eq!(end, None);
}
