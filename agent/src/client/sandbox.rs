//! The host's first request to a new sandbox (`InitSandbox`), and dialling
//! a sandbox's agent with it: what every host-side user of a VM calls.

use std::io::Read;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{dial_hybrid_vsock, AgentClient, ClientError};
use crate::proto::{InitSandboxRequest, InitSandboxResponse};

/// Bytes of host entropy each sandbox gets.
const ENTROPY_BYTES: usize = 64;

/// What the host tells a new sandbox about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxInit {
    /// The VM's virtio-fs share tags as the host named them, in device
    /// order (the order of the VM configuration's shares).
    pub share_tags: Vec<String>,
    /// The guest's hostname; empty keeps it.
    pub hostname: String,
}

fn host_entropy() -> Result<Vec<u8>, ClientError> {
    let mut entropy = vec![0u8; ENTROPY_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut entropy))
        .map_err(|source| ClientError::Host {
            what: "read host entropy from /dev/urandom",
            source,
        })?;
    Ok(entropy)
}

fn unix_time_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl AgentClient {
    /// Makes the sandbox's guest its own: fresh entropy and the host's
    /// clock (a guest restored from a snapshot has the snapshot's), its
    /// hostname and share names, its vCPUs online.
    pub async fn init_sandbox(
        &self,
        init: &SandboxInit,
    ) -> Result<InitSandboxResponse, ClientError> {
        let request = InitSandboxRequest {
            entropy: host_entropy()?.into(),
            unix_time_ns: unix_time_ns(),
            hostname: init.hostname.clone(),
            share_tags: init.share_tags.clone(),
        };
        Ok(self
            .within_setup("init sandbox", self.guest_client().init_sandbox(request))
            .await
            .map_err(ClientError::rpc("init sandbox"))?
            .into_inner())
    }
}

/// Dials the agent of a new sandbox (see [`dial_hybrid_vsock`]) and sends
/// it [`AgentClient::init_sandbox`] before anything else.
pub async fn dial_sandbox(
    uds_path: impl AsRef<Path>,
    port: u32,
    deadline: Instant,
    init: &SandboxInit,
) -> Result<AgentClient, ClientError> {
    let started = Instant::now();
    let agent = dial_hybrid_vsock(uds_path, port, deadline).await?;
    let answered = started.elapsed();
    let answer = agent.init_sandbox(init).await?;
    tracing::debug!(
        from_snapshot = answer.from_snapshot,
        cpus = answer.cpus_online,
        "agent answered after {:.3} s, sandbox initialised after {:.3} s",
        answered.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(agent)
}
