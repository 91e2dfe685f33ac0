//! One real microVM, many processes through the agent channel (hybrid
//! vsock and gRPC): what `vmrun run` and the shim build on. Guests are slow on
//! software-KVM hosts, so the cases share one VM and run in order.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::Guest;
use vmm::VmConfig;
use vmrun_agent::client::{AgentClient, ExecCommand, ProcessExit};

async fn boot() -> Guest {
    common::boot(&common::test_dir("agent-channel"), Vec::new(), Vec::new()).await
}

async fn run(
    agent: &AgentClient,
    cmd: ExecCommand,
    stdin: &[u8],
) -> (Vec<u8>, Vec<u8>, ProcessExit) {
    let started = agent.exec(cmd).await.expect("exec");
    let id = started.exec_id;
    let stdout = agent.read_stdout(&id).await.expect("stdout");
    let stderr = agent.read_stderr(&id).await.expect("stderr");
    let out = tokio::spawn(stdout.read_to_end());
    let err = tokio::spawn(stderr.read_to_end());
    let chunks: Vec<Bytes> = stdin
        .chunks(64 * 1024)
        .map(Bytes::copy_from_slice)
        .collect();
    agent
        .write_stdin(&id, tokio_stream::iter(chunks))
        .await
        .expect("stdin");
    let exit = agent.wait(&id).await.expect("wait");
    (
        out.await.unwrap().expect("read stdout"),
        err.await.unwrap().expect("read stderr"),
        exit,
    )
}

fn sh(script: &str) -> ExecCommand {
    ExecCommand::new(["sh", "-c", script])
}

#[test]
fn processes_in_one_guest() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let guest = boot().await;
        let agent = &guest.agent;

        // echo: output reaches the host.
        let (out, err, exit) = run(agent, ExecCommand::new(["echo", "hello", "guest"]), b"").await;
        assert_eq!(out, b"hello guest\n");
        assert!(err.is_empty());
        assert_eq!(exit, ProcessExit::Exited(0));

        // exit status and stderr kept apart from stdout.
        let (out, err, exit) = run(agent, sh("echo out; echo err >&2; exit 42"), b"").await;
        assert_eq!(
            (out.as_slice(), err.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );
        assert_eq!(exit.shell_exit_code(), 42);

        // 1 MiB of binary stdin through cat comes back identical.
        let input: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (out, _, exit) = run(agent, ExecCommand::new(["cat"]), &input).await;
        assert_eq!(exit, ProcessExit::Exited(0));
        assert_eq!(out.len(), input.len());
        assert!(out == input, "cat returned different bytes");

        // env and cwd.
        let (out, _, _) = run(
            agent,
            sh("echo $GREETING; pwd")
                .env("GREETING=hi there")
                .cwd("/tmp"),
            b"",
        )
        .await;
        assert_eq!(out, b"hi there\n/tmp\n");

        // a signal kills a sleep and is reported as such.
        let started = agent
            .exec(ExecCommand::new(["sleep", "1000"]))
            .await
            .unwrap();
        agent.signal(&started.exec_id, libc::SIGTERM).await.unwrap();
        let exit = agent.wait(&started.exec_id).await.unwrap();
        assert_eq!(exit, ProcessExit::Signaled(libc::SIGTERM));
        assert_eq!(exit.shell_exit_code(), 128 + libc::SIGTERM);

        // tty mode: the process has a terminal of the size asked for.
        let started = agent
            .exec(sh("test -t 0 && test -t 1 && echo is-a-tty; stty size").terminal(33, 101))
            .await
            .unwrap();
        let out = agent.read_stdout(&started.exec_id).await.unwrap();
        agent.close_stdin(&started.exec_id).await.unwrap();
        let exit = agent.wait(&started.exec_id).await.unwrap();
        let text = String::from_utf8_lossy(&out.read_to_end().await.unwrap()).into_owned();
        assert_eq!(exit, ProcessExit::Exited(0), "{text}");
        assert!(text.contains("is-a-tty"), "{text}");
        assert!(text.contains("33 101"), "{text}");

        // bad requests are refused with a reason, and the agent keeps serving.
        let err = agent
            .exec(ExecCommand::new(Vec::<String>::new()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
        let err = agent
            .exec(ExecCommand::new(["/no/such/program"]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");

        // what the guest says about itself matches the VM we built.
        let details = agent.guest_details().await.unwrap();
        assert_eq!(
            details.cpus,
            u32::from(VmConfig::default().vcpus),
            "{details:?}"
        );
        assert!(details.kernel_release.starts_with("6.1"), "{details:?}");
    });
}
