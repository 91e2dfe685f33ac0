//! Reaching the agent through a Firecracker-style *hybrid vsock*: the VMM
//! exposes the guest's vsock as a Unix socket; a host client connects, writes
//! `CONNECT <port>\n`, and gets `OK <host port>\n` once the guest accepted.
//! From then on the socket is a byte stream to the guest's listener.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;
use tonic::transport::{Endpoint, Uri};

use super::agent_client::AgentClient;
use super::error::ClientError;

/// Longest acceptable answer line; anything longer is not `OK <port>`.
const MAX_ANSWER_LEN: usize = 64;

/// Pause after the first failed attempt; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often to look for a socket the VMM has not created yet: a VM
/// restored from a snapshot answers within a fraction of a second of its
/// socket appearing, so backing off there would only add delay.
const SOCKET_POLL: Duration = Duration::from_millis(10);

/// Cap on one attempt, so a connection the VMM accepted but never answers
/// cannot use up the whole deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// A failed `CONNECT` handshake.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("cannot connect to {}: {source}", .uds_path.display())]
    Connect {
        uds_path: PathBuf,
        source: io::Error,
    },
    #[error("{}: sending CONNECT {port}: {source}", .uds_path.display())]
    Send {
        uds_path: PathBuf,
        port: u32,
        source: io::Error,
    },
    #[error("{}: reading the answer to CONNECT {port}: {source}", .uds_path.display())]
    Receive {
        uds_path: PathBuf,
        port: u32,
        source: io::Error,
    },
    #[error(
        "{}: connection closed instead of answering CONNECT {port} (nothing listening on that port yet?)",
        .uds_path.display()
    )]
    Closed { uds_path: PathBuf, port: u32 },
    #[error("{}: CONNECT {port} answered {answer:?}, expected \"OK <port>\"", .uds_path.display())]
    Refused {
        uds_path: PathBuf,
        port: u32,
        answer: String,
    },
}

/// Opens one stream to guest vsock `port` through the hybrid vsock socket
/// at `uds_path`.
pub async fn connect_hybrid_vsock(
    uds_path: &Path,
    port: u32,
) -> Result<UnixStream, HandshakeError> {
    let mut stream =
        UnixStream::connect(uds_path)
            .await
            .map_err(|source| HandshakeError::Connect {
                uds_path: uds_path.to_owned(),
                source,
            })?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|source| HandshakeError::Send {
            uds_path: uds_path.to_owned(),
            port,
            source,
        })?;
    let answer = read_answer_line(&mut stream)
        .await
        .map_err(|source| HandshakeError::Receive {
            uds_path: uds_path.to_owned(),
            port,
            source,
        })?;
    match answer {
        None => Err(HandshakeError::Closed {
            uds_path: uds_path.to_owned(),
            port,
        }),
        Some(line) if is_ok_answer(&line) => Ok(stream),
        Some(line) => Err(HandshakeError::Refused {
            uds_path: uds_path.to_owned(),
            port,
            answer: line,
        }),
    }
}

/// Connects to the agent and waits until it answers `Check`, retrying until
/// `deadline` (a guest takes a while to boot, longer under emulation).
///
/// The returned client reconnects through the same socket, with a fresh
/// handshake, should the connection drop later.
pub async fn dial_hybrid_vsock(
    uds_path: impl AsRef<Path>,
    port: u32,
    deadline: std::time::Instant,
) -> Result<AgentClient, ClientError> {
    let uds_path = uds_path.as_ref();
    let started = Instant::now();
    let deadline = Instant::from_std(deadline);
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        if !uds_path.exists() && Instant::now() + SOCKET_POLL < deadline {
            tokio::time::sleep(SOCKET_POLL).await;
            continue;
        }
        attempts += 1;
        let attempt_deadline = deadline.min(Instant::now() + ATTEMPT_TIMEOUT);
        let last_error =
            match tokio::time::timeout_at(attempt_deadline, dial_once(uds_path, port)).await {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(error)) => error.to_string(),
                Err(_elapsed) => "attempt timed out".to_owned(),
            };
        tracing::debug!(attempts, %last_error, "agent not reachable yet");
        if Instant::now() + backoff >= deadline {
            return Err(ClientError::Unreachable {
                uds_path: uds_path.to_owned(),
                port,
                attempts,
                waited: started.elapsed(),
                last_error,
            });
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn dial_once(uds_path: &Path, port: u32) -> Result<AgentClient, ClientError> {
    let uds_path = uds_path.to_owned();
    let connector = tower::service_fn(move |_: Uri| {
        let uds_path = uds_path.clone();
        async move {
            connect_hybrid_vsock(&uds_path, port)
                .await
                .map(TokioIo::new)
        }
    });
    // The URI only fills the HTTP/2 :authority; the connector ignores it.
    let channel = Endpoint::from_static("http://vmrun-agent")
        .connect_with_connector(connector)
        .await
        .map_err(ClientError::Channel)?;
    let client = AgentClient::new(channel);
    client.check().await?;
    Ok(client)
}

/// Reads up to and without the `\n`, one byte at a time: the agent may
/// send right after the answer (HTTP/2 SETTINGS), and those bytes belong
/// to the stream. `None` if the peer closed before a whole line.
async fn read_answer_line(stream: &mut UnixStream) -> io::Result<Option<String>> {
    let mut line = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        if byte[0] == b'\n' {
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
        if line.len() == MAX_ANSWER_LEN {
            return Ok(Some(String::from_utf8_lossy(&line).into_owned() + "..."));
        }
        line.push(byte[0]);
    }
}

fn is_ok_answer(line: &str) -> bool {
    line.strip_prefix("OK ")
        .is_some_and(|port| port.trim_end().parse::<u32>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ok_with_a_port_is_accepted() {
        assert!(is_ok_answer("OK 1073741824"));
        assert!(is_ok_answer("OK 52\r"));
        assert!(!is_ok_answer("OK"));
        assert!(!is_ok_answer("OK port"));
        assert!(!is_ok_answer("ERR connection refused"));
    }
}
