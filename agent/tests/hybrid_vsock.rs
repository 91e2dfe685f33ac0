//! The hybrid vsock dialer against fake VMM sockets that accept, refuse or
//! appear late.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{FakeVmm, FakeVmmBehaviour, TempDir};
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use vmrun_agent::client::{connect_hybrid_vsock, dial_hybrid_vsock, ClientError, HandshakeError};
use vmrun_agent::server::serve;

#[tokio::test]
async fn handshake_sends_connect_and_keeps_what_follows_ok() {
    let dir = TempDir::new();
    let vmm = FakeVmm::start(
        dir.path().join("vsock.sock"),
        FakeVmmBehaviour::Answer {
            line: "OK 1073741824",
            after: b"first guest bytes",
        },
    );
    let mut stream = connect_hybrid_vsock(&vmm.uds_path, 1024).await.unwrap();
    assert_eq!(*vmm.connect_lines.lock().unwrap(), ["CONNECT 1024"]);

    let mut after = vec![0u8; b"first guest bytes".len()];
    stream.read_exact(&mut after).await.unwrap();
    assert_eq!(after, b"first guest bytes");
}

#[tokio::test]
async fn an_answer_other_than_ok_is_a_refusal() {
    let dir = TempDir::new();
    let vmm = FakeVmm::start(
        dir.path().join("vsock.sock"),
        FakeVmmBehaviour::Answer {
            line: "ERR no listener",
            after: b"",
        },
    );
    let error = connect_hybrid_vsock(&vmm.uds_path, 1024).await.unwrap_err();
    assert!(
        matches!(&error, HandshakeError::Refused { answer, port: 1024, .. } if answer == "ERR no listener"),
        "{error}"
    );
}

#[tokio::test]
async fn a_vmm_that_hangs_up_is_retried_until_the_deadline() {
    let dir = TempDir::new();
    let vmm = FakeVmm::start(dir.path().join("vsock.sock"), FakeVmmBehaviour::HangUp);

    let direct = connect_hybrid_vsock(&vmm.uds_path, 1024).await.unwrap_err();
    assert!(
        matches!(direct, HandshakeError::Closed { port: 1024, .. }),
        "{direct}"
    );

    let started = Instant::now();
    let error = dial_hybrid_vsock(&vmm.uds_path, 1024, started + Duration::from_secs(1))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "gave up only after {elapsed:?}"
    );
    match error {
        ClientError::Unreachable {
            attempts,
            port,
            last_error,
            ..
        } => {
            assert_eq!(port, 1024);
            assert!(attempts > 1, "only {attempts} attempt(s)");
            assert!(
                last_error.contains("connection closed instead of answering CONNECT 1024"),
                "{last_error}"
            );
        }
        other => panic!("expected Unreachable, got {other}"),
    }
    assert!(vmm.connect_lines.lock().unwrap().len() > 1);
}

#[tokio::test]
async fn a_missing_socket_is_unreachable_with_the_reason() {
    let dir = TempDir::new();
    let missing = dir.path().join("no-vmm.sock");
    let error = dial_hybrid_vsock(&missing, 1024, Instant::now() + Duration::from_millis(300))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("no-vmm.sock"), "{message}");
    assert!(message.contains("cannot connect to"), "{message}");
}

#[tokio::test]
async fn dialing_waits_for_an_agent_that_comes_up_late() {
    let dir = TempDir::new();
    let agent_path = dir.path().join("agent.sock");
    let vsock_path = dir.path().join("vsock.sock");

    // The VMM answers from the start, but the guest agent listens only
    // after a while, as when the guest is still booting.
    let _vmm = FakeVmm::start(
        vsock_path.clone(),
        FakeVmmBehaviour::ProxyTo(agent_path.clone()),
    );
    let late_agent = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let listener = UnixListener::bind(&agent_path).unwrap();
        serve(UnixListenerStream::new(listener)).await
    });

    let started = Instant::now();
    let agent = dial_hybrid_vsock(&vsock_path, 1024, started + Duration::from_secs(10))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(700));
    agent.check().await.unwrap();
    late_agent.abort();
}
