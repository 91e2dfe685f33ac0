//! Test scaffolding: the agent server on a Unix socket, and a fake VMM that
//! speaks the hybrid vsock handshake in front of it, as Firecracker does.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use vmrun_agent::client::{dial_hybrid_vsock, AgentClient};
use vmrun_agent::server::{serve, serve_with, ServeError, ServeOutcome, ServerConfig};
use vmrun_agent::AGENT_VSOCK_PORT;

/// A directory of its own for each test, removed at the end.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "vmrun-agent-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the fake VMM does with a `CONNECT <port>` line.
#[derive(Debug, Clone)]
pub enum FakeVmmBehaviour {
    /// Answers OK and splices the connection to the agent's Unix socket.
    ProxyTo(PathBuf),
    /// Answers this line and then sends `after` (to see that the client
    /// leaves bytes after the answer in the stream).
    Answer {
        line: &'static str,
        after: &'static [u8],
    },
    /// Hangs up without answering, as when nothing listens on the port.
    HangUp,
}

/// A Unix socket speaking the hybrid vsock handshake.
pub struct FakeVmm {
    pub uds_path: PathBuf,
    /// Every CONNECT line received, without the newline.
    pub connect_lines: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl FakeVmm {
    pub fn start(uds_path: PathBuf, behaviour: FakeVmmBehaviour) -> Self {
        let listener = UnixListener::bind(&uds_path).unwrap();
        let connect_lines = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&connect_lines);
        let task = tokio::spawn(async move {
            loop {
                let Ok((connection, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(handle_connection(
                    connection,
                    behaviour.clone(),
                    Arc::clone(&lines),
                ));
            }
        });
        Self {
            uds_path,
            connect_lines,
            task,
        }
    }
}

impl Drop for FakeVmm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle_connection(
    mut host: UnixStream,
    behaviour: FakeVmmBehaviour,
    lines: Arc<Mutex<Vec<String>>>,
) {
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        if host.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    lines
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&line).into_owned());
    match behaviour {
        FakeVmmBehaviour::ProxyTo(agent_path) => {
            let Ok(mut guest) = UnixStream::connect(&agent_path).await else {
                return;
            };
            if host.write_all(b"OK 1073741824\n").await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut host, &mut guest).await;
        }
        FakeVmmBehaviour::Answer { line, after } => {
            let _ = host.write_all(format!("{line}\n").as_bytes()).await;
            let _ = host.write_all(after).await;
            // Keep the connection open until the client is done with it.
            let mut rest = Vec::new();
            let _ = host.read_to_end(&mut rest).await;
        }
        FakeVmmBehaviour::HangUp => {}
    }
}

/// The agent server on a Unix socket behind a fake VMM, and a client that
/// dialed it the way `vmrun` does.
pub struct TestAgent {
    pub client: AgentClient,
    pub server: JoinHandle<Result<ServeOutcome, ServeError>>,
    _vmm: FakeVmm,
    _dir: TempDir,
}

impl TestAgent {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// With `config`, or the guest's when `None`.
    pub async fn start_with(config: Option<ServerConfig>) -> Self {
        let dir = TempDir::new();
        let agent_path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&agent_path).unwrap();
        let incoming = UnixListenerStream::new(listener);
        let server = match config {
            Some(config) => tokio::spawn(serve_with(incoming, config)),
            None => tokio::spawn(serve(incoming)),
        };
        let vmm = FakeVmm::start(
            dir.path().join("vsock.sock"),
            FakeVmmBehaviour::ProxyTo(agent_path),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = dial_hybrid_vsock(&vmm.uds_path, AGENT_VSOCK_PORT, deadline)
            .await
            .unwrap();
        Self {
            client,
            server,
            _vmm: vmm,
            _dir: dir,
        }
    }
}
