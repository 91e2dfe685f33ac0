//! The agent API end to end on the host: the real server on a Unix socket,
//! behind a fake hybrid vsock VMM, driven by the real client. What is
//! asserted is what a user of `vmrun run` would see.

#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestAgent;
use tonic::Code;
use vmrun_agent::client::{AgentClient, ClientError, ExecCommand, ExecId, ProcessExit};
use vmrun_agent::process::OUTPUT_LINGER_AFTER_EXIT;
use vmrun_agent::proto::ExecProcessRequest;
use vmrun_agent::server::ServeOutcome;

/// Fails the test instead of hanging CI.
async fn within<T>(limit_secs: u64, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(limit_secs), work)
        .await
        .expect("test took too long")
}

/// Runs a command to completion the way `vmrun run` does: readers attached
/// right away, then wait. Returns stdout, stderr and the exit.
async fn run(agent: &AgentClient, command: ExecCommand) -> (String, String, ProcessExit) {
    let exec_id = agent.exec(command).await.unwrap().exec_id;
    let (stdout, stderr) = read_both(agent, &exec_id).await;
    let exit = agent.wait(&exec_id).await.unwrap();
    (stdout, stderr, exit)
}

async fn read_both(agent: &AgentClient, exec_id: &ExecId) -> (String, String) {
    let stdout = agent.read_stdout(exec_id).await.unwrap();
    let stderr = agent.read_stderr(exec_id).await.unwrap();
    let (stdout, stderr) = tokio::join!(stdout.read_to_end(), stderr.read_to_end());
    (
        String::from_utf8(stdout.unwrap()).unwrap(),
        String::from_utf8(stderr.unwrap()).unwrap(),
    )
}

fn sh(script: &str) -> ExecCommand {
    ExecCommand::new(["sh", "-c", script])
}

fn code_and_message(error: ClientError) -> (Code, String) {
    match error {
        ClientError::Rpc { status, .. } => (status.code(), status.message().to_owned()),
        other => panic!("expected an error status, got {other}"),
    }
}

#[tokio::test]
async fn echo_output_reaches_the_client() {
    within(30, async {
        let agent = TestAgent::start().await;
        let (stdout, stderr, exit) =
            run(&agent.client, ExecCommand::new(["echo", "hello", "world"])).await;
        assert_eq!(stdout, "hello world\n");
        assert_eq!(stderr, "");
        assert_eq!(exit, ProcessExit::Exited(0));
    })
    .await;
}

#[tokio::test]
async fn exit_code_is_reported() {
    within(30, async {
        let agent = TestAgent::start().await;
        let (_, _, exit) = run(&agent.client, sh("exit 42")).await;
        assert_eq!(exit, ProcessExit::Exited(42));
        assert_eq!(exit.shell_exit_code(), 42);
    })
    .await;
}

#[tokio::test]
async fn stderr_is_kept_apart_from_stdout() {
    within(30, async {
        let agent = TestAgent::start().await;
        let (stdout, stderr, exit) = run(
            &agent.client,
            sh("echo to-out; echo to-err >&2; echo more-out; exit 3"),
        )
        .await;
        assert_eq!(stdout, "to-out\nmore-out\n");
        assert_eq!(stderr, "to-err\n");
        assert_eq!(exit, ProcessExit::Exited(3));
    })
    .await;
}

#[tokio::test]
async fn environment_and_working_directory_are_applied() {
    within(30, async {
        let agent = TestAgent::start().await;
        let (stdout, _, exit) = run(
            &agent.client,
            sh("echo \"$GREETING\"; pwd; echo \"$PATH\"")
                .env("GREETING=hi there")
                .cwd("/tmp"),
        )
        .await;
        assert_eq!(
            stdout,
            format!("hi there\n/tmp\n{}\n", vmrun_agent::process::DEFAULT_PATH)
        );
        assert_eq!(exit, ProcessExit::Exited(0));
    })
    .await;
}

/// Bytes of every value, in an order that is not a simple pattern.
fn test_data(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn checksum(data: &[u8]) -> u64 {
    // FNV-1a: enough to tell two large buffers apart in a failure message.
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[tokio::test]
async fn one_mebibyte_round_trips_through_cat() {
    within(60, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;
        let input = test_data(1 << 20);
        let exec_id = client
            .exec(ExecCommand::new(["cat"]))
            .await
            .unwrap()
            .exec_id;

        // Pieces of uneven size, so chunk boundaries do not line up.
        let pieces: Vec<Bytes> = Bytes::from(input.clone())
            .chunks(70_001)
            .map(Bytes::copy_from_slice)
            .collect();
        let writing = client.write_stdin(&exec_id, tokio_stream::iter(pieces));
        let stdout = client.read_stdout(&exec_id).await.unwrap();
        let (written, output) = tokio::join!(writing, stdout.read_to_end());
        let output = output.unwrap();

        assert_eq!(written.unwrap(), input.len() as u64);
        assert_eq!(output.len(), input.len());
        assert_eq!(checksum(&output), checksum(&input));
        assert!(output == input, "output differs from input");
        assert_eq!(client.wait(&exec_id).await.unwrap(), ProcessExit::Exited(0));
    })
    .await;
}

#[tokio::test]
async fn stdin_copied_from_a_reader_ends_with_it() {
    within(30, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;
        let exec_id = client
            .exec(ExecCommand::new(["wc", "-c"]))
            .await
            .unwrap()
            .exec_id;
        let input: &'static [u8] = b"twelve bytes";
        let written = client.copy_stdin(&exec_id, input).await.unwrap();
        assert_eq!(written, 12);
        let (stdout, _) = read_both(client, &exec_id).await;
        assert_eq!(stdout.trim(), "12");
        assert_eq!(client.wait(&exec_id).await.unwrap(), ProcessExit::Exited(0));
    })
    .await;
}

#[tokio::test]
async fn close_stdin_ends_input_and_later_writes_are_refused() {
    within(30, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;
        let exec_id = client
            .exec(ExecCommand::new(["cat"]))
            .await
            .unwrap()
            .exec_id;
        client.close_stdin(&exec_id).await.unwrap();

        let error = client
            .write_stdin(&exec_id, tokio_stream::iter([Bytes::from_static(b"late")]))
            .await
            .unwrap_err();
        assert_eq!(
            code_and_message(error),
            (
                Code::FailedPrecondition,
                format!("stdin of exec id \"{exec_id}\" is already closed")
            )
        );
        assert_eq!(client.wait(&exec_id).await.unwrap(), ProcessExit::Exited(0));
    })
    .await;
}

#[tokio::test]
async fn a_signal_kills_sleep_and_is_reported_as_such() {
    within(30, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;
        let started = Instant::now();
        let exec_id = client
            .exec(ExecCommand::new(["sleep", "30"]))
            .await
            .unwrap()
            .exec_id;
        client.signal(&exec_id, libc::SIGTERM).await.unwrap();
        let exit = client.wait(&exec_id).await.unwrap();
        assert_eq!(exit, ProcessExit::Signaled(libc::SIGTERM));
        assert_eq!(exit.shell_exit_code(), 128 + 15);
        assert!(started.elapsed() < Duration::from_secs(20));
    })
    .await;
}

#[tokio::test]
async fn signalling_an_exited_process_is_harmless() {
    within(30, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;
        // Unread output keeps the process known after the wait.
        let exec_id = client
            .exec(ExecCommand::new(["echo", "kept"]))
            .await
            .unwrap()
            .exec_id;
        assert_eq!(client.wait(&exec_id).await.unwrap(), ProcessExit::Exited(0));
        client.signal(&exec_id, libc::SIGKILL).await.unwrap();
        let (stdout, _) = read_both(client, &exec_id).await;
        assert_eq!(stdout, "kept\n");
    })
    .await;
}

#[tokio::test]
async fn terminal_mode_gives_a_tty_that_can_be_resized() {
    within(30, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;

        let (stdout, stderr, exit) = run(
            client,
            sh("test -t 0 && test -t 1 && test -t 2 && echo on-a-tty").terminal(24, 80),
        )
        .await;
        assert!(stdout.contains("on-a-tty"), "stdout: {stdout:?}");
        assert_eq!(stderr, "", "a terminal's stderr is merged into stdout");
        assert_eq!(exit, ProcessExit::Exited(0));

        // The shell reports its size after a line of input, which is sent
        // only once the resize happened.
        let exec_id = client
            .exec(sh("stty size; read line; stty size").terminal(24, 80))
            .await
            .unwrap()
            .exec_id;
        let mut stdout = client.read_stdout(&exec_id).await.unwrap();
        let mut seen = String::new();
        while !seen.contains("24 80") {
            let chunk = stdout.next_chunk().await.unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        client.resize_pty(&exec_id, 40, 120).await.unwrap();
        client
            .write_stdin(&exec_id, tokio_stream::iter([Bytes::from_static(b"go\n")]))
            .await
            .unwrap();
        let rest = stdout.read_to_end().await.unwrap();
        seen.push_str(&String::from_utf8_lossy(&rest));
        assert!(seen.contains("40 120"), "output: {seen:?}");
        assert_eq!(client.wait(&exec_id).await.unwrap(), ProcessExit::Exited(0));
    })
    .await;
}

#[tokio::test]
async fn bad_requests_get_invalid_argument_or_not_found() {
    within(30, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;
        let unknown = ExecId::from("x".to_owned());

        let empty_argv = client
            .exec(ExecProcessRequest::default())
            .await
            .unwrap_err();
        assert_eq!(
            code_and_message(empty_argv),
            (Code::InvalidArgument, "exec: argv is empty".to_owned())
        );

        let relative_cwd = client.exec(sh("true").cwd("tmp")).await.unwrap_err();
        assert_eq!(
            code_and_message(relative_cwd),
            (
                Code::InvalidArgument,
                "exec: cwd \"tmp\" is not an absolute path".to_owned()
            )
        );

        let not_found = format!("no process with exec id {:?}", unknown.as_str());
        for error in [
            client.wait(&unknown).await.unwrap_err(),
            client.signal(&unknown, libc::SIGTERM).await.unwrap_err(),
            client.close_stdin(&unknown).await.unwrap_err(),
            client.resize_pty(&unknown, 10, 10).await.unwrap_err(),
            client.read_stdout(&unknown).await.unwrap_err(),
            client.read_stderr(&unknown).await.unwrap_err(),
            client
                .write_stdin(&unknown, tokio_stream::empty::<Bytes>())
                .await
                .unwrap_err(),
        ] {
            assert_eq!(code_and_message(error), (Code::NotFound, not_found.clone()));
        }

        let exec_id = client.exec(sh("sleep 30")).await.unwrap().exec_id;
        let bad_signal = client.signal(&exec_id, 999).await.unwrap_err();
        assert_eq!(
            code_and_message(bad_signal),
            (
                Code::InvalidArgument,
                "signal: 999 is not a signal number".to_owned()
            )
        );
        let no_terminal = client.resize_pty(&exec_id, 10, 10).await.unwrap_err();
        assert_eq!(
            code_and_message(no_terminal),
            (
                Code::FailedPrecondition,
                format!("resize pty: exec id \"{exec_id}\" has no terminal")
            )
        );
        client.signal(&exec_id, libc::SIGKILL).await.unwrap();
        assert_eq!(
            client.wait(&exec_id).await.unwrap(),
            ProcessExit::Signaled(libc::SIGKILL)
        );
    })
    .await;
}

#[tokio::test]
async fn a_missing_program_or_cwd_is_told_apart() {
    within(30, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;

        let missing = client
            .exec(ExecCommand::new(["no-such-program-vmrun"]))
            .await
            .unwrap_err();
        let (code, message) = code_and_message(missing);
        assert_eq!(code, Code::NotFound);
        assert!(
            message.starts_with("exec: cannot start \"no-such-program-vmrun\""),
            "{message}"
        );

        let missing_cwd = client
            .exec(ExecCommand::new(["true"]).cwd("/no/such/dir"))
            .await
            .unwrap_err();
        let (code, message) = code_and_message(missing_cwd);
        assert_eq!(code, Code::FailedPrecondition);
        assert!(
            message.starts_with("exec: cannot use cwd \"/no/such/dir\""),
            "{message}"
        );
    })
    .await;
}

#[tokio::test]
async fn output_of_a_process_that_exited_before_anyone_read_is_complete() {
    within(60, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;
        // More than a pipe holds, one small write per line, so it is only
        // complete if the agent kept reading after the process wrote it;
        // readers attach after the exit.
        let exec_id = client
            .exec(sh(
                "i=1; while [ $i -le 20000 ]; do echo $i; i=$((i+1)); done; echo done >&2",
            ))
            .await
            .unwrap()
            .exec_id;
        assert_eq!(client.wait(&exec_id).await.unwrap(), ProcessExit::Exited(0));
        let (stdout, stderr) = read_both(client, &exec_id).await;
        let expected: String = (1..=20000).map(|n| format!("{n}\n")).collect();
        assert_eq!(stdout.len(), expected.len());
        assert!(stdout == expected, "output is incomplete or reordered");
        assert_eq!(stderr, "done\n");

        // And for many quick ones in a row, readers first or wait first.
        for round in 0..5 {
            let (stdout, _, exit) = run(client, ExecCommand::new(["echo", "fast"])).await;
            assert_eq!(
                (stdout.as_str(), exit),
                ("fast\n", ProcessExit::Exited(0)),
                "round {round}"
            );
            let exec_id = client
                .exec(ExecCommand::new(["true"]))
                .await
                .unwrap()
                .exec_id;
            assert_eq!(client.wait(&exec_id).await.unwrap(), ProcessExit::Exited(0));
            assert_eq!(
                read_both(client, &exec_id).await,
                (String::new(), String::new())
            );
        }
    })
    .await;
}

#[tokio::test]
async fn an_output_stream_has_one_reader_at_a_time_and_resumes() {
    within(30, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;
        let exec_id = client
            .exec(sh("echo first; read x; echo second"))
            .await
            .unwrap()
            .exec_id;
        let mut first_reader = client.read_stdout(&exec_id).await.unwrap();
        assert_eq!(
            first_reader.next_chunk().await.unwrap().unwrap(),
            Bytes::from_static(b"first\n")
        );

        let busy = client.read_stdout(&exec_id).await.unwrap_err();
        assert_eq!(
            code_and_message(busy),
            (
                Code::FailedPrecondition,
                format!("stdout of exec id \"{exec_id}\" already has a reader")
            )
        );

        // A reader that goes away hands over to the next one.
        drop(first_reader);
        let mut second_reader = None;
        for _ in 0..50 {
            match client.read_stdout(&exec_id).await {
                Ok(reader) => {
                    second_reader = Some(reader);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let second_reader = second_reader.expect("stdout was never handed over");
        client
            .write_stdin(&exec_id, tokio_stream::iter([Bytes::from_static(b"\n")]))
            .await
            .unwrap();
        assert_eq!(second_reader.read_to_end().await.unwrap(), b"second\n");
        assert_eq!(client.wait(&exec_id).await.unwrap(), ProcessExit::Exited(0));
    })
    .await;
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_block_the_exit() {
    within(30, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;
        let started = Instant::now();
        let (stdout, _, exit) = run(client, sh("sleep 8 & echo started")).await;
        assert_eq!(stdout, "started\n");
        assert_eq!(exit, ProcessExit::Exited(0));
        assert!(started.elapsed() < OUTPUT_LINGER_AFTER_EXIT + Duration::from_secs(4));
    })
    .await;
}

#[tokio::test]
async fn a_process_is_forgotten_once_waited_for_and_read() {
    within(30, async {
        let agent = TestAgent::start().await;
        let client = &agent.client;
        let (_, _, _) = run(client, ExecCommand::new(["true"])).await;
        let exec_id = client
            .exec(ExecCommand::new(["true"]))
            .await
            .unwrap()
            .exec_id;
        read_both(client, &exec_id).await;
        client.wait(&exec_id).await.unwrap();
        // The server lets go of finished output streams just after the
        // client saw their end, so allow it a moment.
        let mut forgotten = false;
        for _ in 0..50 {
            match client.wait(&exec_id).await {
                Err(error) if error.code() == Some(Code::NotFound) => {
                    forgotten = true;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert!(forgotten, "exec id {exec_id} is still known");
    })
    .await;
}

#[tokio::test]
async fn runs_as_the_requested_user() {
    within(30, async {
        let agent = TestAgent::start().await;
        let result = agent
            .client
            .exec(sh("id -u; id -g; id -G").user(1000, 1000, vec![1000, 1001]))
            .await;
        if nix::unistd::geteuid().is_root() {
            let exec_id = result.unwrap().exec_id;
            let (stdout, _) = read_both(&agent.client, &exec_id).await;
            assert_eq!(stdout, "1000\n1000\n1000 1001\n");
        } else {
            // Without root, switching users must fail visibly, not silently
            // run as the agent's user.
            let (code, _) = code_and_message(result.unwrap_err());
            assert_eq!(code, Code::PermissionDenied);
        }
    })
    .await;
}

#[tokio::test]
async fn version_and_guest_details_describe_the_agent() {
    within(30, async {
        let agent = TestAgent::start().await;
        let version = agent.client.version().await.unwrap();
        assert_eq!(version.agent_version, vmrun_agent::AGENT_VERSION);
        assert_eq!(version.api_version, vmrun_agent::API_VERSION);

        let details = agent.client.guest_details().await.unwrap();
        let release = nix::sys::utsname::uname().unwrap();
        assert_eq!(details.kernel_release, release.release().to_string_lossy());
        assert!(details.memory_total_bytes > 0);
        assert!(details.cpus >= 1);
    })
    .await;
}

#[tokio::test]
async fn shutdown_answers_then_stops_the_server() {
    within(30, async {
        let agent = TestAgent::start().await;
        agent.client.shutdown().await.unwrap();
        let outcome = agent.server.await.unwrap().unwrap();
        assert_eq!(outcome, ServeOutcome::ShutdownRequested);
    })
    .await;
}
