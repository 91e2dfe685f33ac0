//! The `Guest` service: facts about the guest, its sandbox setup (clock,
//! entropy, network), and shutting it down.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::error::AgentError;
use crate::network;
use crate::proto::guest_server::Guest;
use crate::proto::{
    ConfigureNetworkRequest, ConfigureNetworkResponse, GuestDetailsRequest, GuestDetailsResponse,
    InitSandboxRequest, InitSandboxResponse, ShutdownRequest, ShutdownResponse,
};
use crate::sandbox_init;
use crate::storage::StorageManager;
use crate::AGENT_VERSION;

/// Serves `Guest`. `Shutdown` only raises the flag; whoever runs the server
/// powers off once the answer is out (see [`super::serve`]).
#[derive(Debug, Clone)]
pub struct GuestService {
    shutdown_requested: Arc<watch::Sender<bool>>,
    storage: Arc<StorageManager>,
    /// Booted to be snapshotted: virtio-fs devices carry slot tags.
    template: bool,
    /// One `ConfigureNetwork` at a time: two at once would rename the same
    /// links under each other.
    network: Arc<tokio::sync::Mutex<()>>,
}

impl GuestService {
    pub fn new(
        shutdown_requested: Arc<watch::Sender<bool>>,
        storage: Arc<StorageManager>,
        template: bool,
    ) -> Self {
        Self {
            shutdown_requested,
            storage,
            template,
            network: Arc::default(),
        }
    }
}

/// Runs `InitSandbox`'s steps; the clock first, so that what follows is
/// logged with the right time.
fn init_sandbox(
    request: InitSandboxRequest,
    storage: &StorageManager,
    template: bool,
) -> Result<InitSandboxResponse, AgentError> {
    sandbox_init::set_clock(request.unix_time_ns)?;
    sandbox_init::reseed_random(&request.entropy)?;
    sandbox_init::set_hostname(&request.hostname)?;
    if template {
        storage.name_share_slots(&request.share_tags);
    }
    // The agent brought every vCPU online before its ready line (see
    // `init::run`); this finds them online and only counts them.
    let cpus_online = sandbox_init::online_cpus(std::path::Path::new(sandbox_init::SYS_CPU));
    tracing::info!(cpus_online, from_snapshot = template, "sandbox initialised");
    Ok(InitSandboxResponse {
        from_snapshot: template,
        cpus_online,
    })
}

/// Reads what `GuestDetails` reports from the running kernel.
pub fn guest_details() -> Result<GuestDetailsResponse, AgentError> {
    let internal = |what: &str, errno: nix::Error| AgentError::Internal {
        op: "guest details",
        reason: format!("{what}: {errno}"),
    };
    let uname = nix::sys::utsname::uname().map_err(|e| internal("uname", e))?;
    let sysinfo = nix::sys::sysinfo::sysinfo().map_err(|e| internal("sysinfo", e))?;
    let cpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .map_err(|source| AgentError::Internal {
            op: "guest details",
            reason: format!("counting cpus: {source}"),
        })?;
    Ok(GuestDetailsResponse {
        kernel_release: uname.release().to_string_lossy().into_owned(),
        kernel_version: uname.version().to_string_lossy().into_owned(),
        memory_total_bytes: sysinfo.ram_total(),
        cpus,
        agent_version: AGENT_VERSION.to_owned(),
    })
}

#[tonic::async_trait]
impl Guest for GuestService {
    async fn guest_details(
        &self,
        _: Request<GuestDetailsRequest>,
    ) -> Result<Response<GuestDetailsResponse>, Status> {
        Ok(Response::new(guest_details()?))
    }

    async fn init_sandbox(
        &self,
        request: Request<InitSandboxRequest>,
    ) -> Result<Response<InitSandboxResponse>, Status> {
        let request = request.into_inner();
        let storage = Arc::clone(&self.storage);
        let template = self.template;
        // Bringing CPUs online blocks until they are up.
        let response =
            tokio::task::spawn_blocking(move || init_sandbox(request, &storage, template))
                .await
                .map_err(|e| AgentError::Internal {
                    op: "init sandbox",
                    reason: format!("worker thread failed: {e}"),
                })??;
        Ok(Response::new(response))
    }

    async fn configure_network(
        &self,
        request: Request<ConfigureNetworkRequest>,
    ) -> Result<Response<ConfigureNetworkResponse>, Status> {
        let request = request.into_inner();
        let _one_at_a_time = self.network.lock().await;
        network::configure(&request)
            .await
            .map_err(AgentError::from)?;
        Ok(Response::new(ConfigureNetworkResponse {}))
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        tracing::info!("shutdown requested");
        self.shutdown_requested.send_replace(true);
        Ok(Response::new(ShutdownResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_describe_this_machine() {
        let details = guest_details().unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(details.kernel_release, release.trim());
        assert!(details.memory_total_bytes > 0);
        assert!(details.cpus >= 1);
        assert_eq!(details.agent_version, AGENT_VERSION);
    }

    #[tokio::test]
    async fn a_malformed_network_request_is_refused_before_anything_changes() {
        // Safe on any host: validation fails before the guest's links are
        // looked for.
        let (shutdown, _) = watch::channel(false);
        let service = GuestService::new(
            Arc::new(shutdown),
            Arc::new(StorageManager::new(Arc::new(
                crate::mount_syscalls::RealMounts,
            ))),
            false,
        );
        let request = ConfigureNetworkRequest {
            interfaces: vec![crate::proto::NetworkInterface {
                name: "eth0".into(),
                mac: vec![2, 0, 0, 0, 1].into(),
                mtu: 1500,
                addresses: vec![],
            }],
            routes: vec![],
        };
        let status = service
            .configure_network(Request::new(request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "configure network: interfaces[0].mac: 5 bytes, want 6"
        );
    }
}
