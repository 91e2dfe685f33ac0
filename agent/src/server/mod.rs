//! The agent API server: the `Health`, `Process`, `Container`, `Storage`
//! and `Guest` services over any stream of connections (vsock in the guest,
//! a Unix socket in tests).
//!
//! It owns the gRPC side only: checking wire messages, calling the process
//! runtime ([`crate::process`]), the container manager ([`crate::container`])
//! and storage ([`crate::storage`]), and turning their errors into status
//! codes in one place ([`AgentError`]). Those modules never import it.

mod container_service;
mod error;
pub(crate) mod exec_request;
mod guest_service;
mod health_service;
mod output_reader;
mod process_service;
mod storage_service;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::Server;

pub use error::AgentError;

use crate::container::{
    cgroup_parent, ContainerConfig, ContainerManager, LibcontainerEngine, StateLayout,
};
use crate::mount_syscalls::{MountSyscalls, RealMounts};
use crate::process::{reaper, ProcessTable};
use crate::proto::container_server::ContainerServer;
use crate::proto::guest_server::GuestServer;
use crate::proto::health_server::HealthServer;
use crate::proto::process_server::ProcessServer;
use crate::proto::storage_server::StorageServer;
use crate::storage::StorageManager;
use container_service::ContainerService;
use guest_service::GuestService;
use health_service::HealthService;
use process_service::ProcessService;
use storage_service::StorageService;

/// How long in-flight answers (above all `Shutdown`'s own) get to reach the
/// host once shutdown was requested, before [`serve`] returns regardless of
/// output streams that are still open.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeOutcome {
    /// A client called `Shutdown`: the caller should power off.
    ShutdownRequested,
    /// The stream of connections ended.
    ListenerClosed,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot watch for child process exits: {0}")]
    Reaper(#[source] io::Error),
    #[error("serving the agent API failed: {0}")]
    Transport(#[source] tonic::transport::Error),
}

/// How the server runs containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub containers: ContainerConfig,
    /// Start the container helper at once instead of at the first
    /// container, so that container does not wait for it.
    pub prestart_container_helper: bool,
    /// Create the default cgroup parent at once
    /// ([`crate::container::cgroup_parent`]), not with the first container.
    pub prepare_cgroup_parent: bool,
    /// The guest was booted to be snapshotted ([`crate::TEMPLATE_FLAG`]).
    pub template: bool,
}

impl ServerConfig {
    /// The guest's: the agent binary is its own container helper, started
    /// before the ready line (so a snapshot holds it).
    pub fn guest() -> Self {
        Self {
            containers: ContainerConfig::guest(),
            prestart_container_helper: true,
            prepare_cgroup_parent: true,
            template: false,
        }
    }
}

/// Serves the agent API with the guest's configuration ([`serve_with`]),
/// except that the container helper starts with the first container.
pub async fn serve<I, IO, IE>(incoming: I) -> Result<ServeOutcome, ServeError>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = ServerConfig {
        prestart_container_helper: false,
        prepare_cgroup_parent: false,
        ..ServerConfig::guest()
    };
    serve_with(incoming, config).await
}

/// Serves the agent API on every connection `incoming` yields, until a
/// client asks for shutdown or `incoming` ends ([`AgentServer::start`],
/// then [`AgentServer::serve`]).
pub async fn serve_with<I, IO, IE>(
    incoming: I,
    config: ServerConfig,
) -> Result<ServeOutcome, ServeError>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    AgentServer::start(config).await?.serve(incoming).await
}

/// The agent's services, set up and waiting for connections.
pub struct AgentServer {
    processes: Arc<ProcessTable>,
    containers: Arc<ContainerManager>,
    storage: Arc<StorageManager>,
    template: bool,
}

impl AgentServer {
    /// Sets the services up and reaps all child processes of this process
    /// from now on (the agent is PID 1, so that includes every orphan in
    /// the guest). With [`ServerConfig::prestart_container_helper`] it
    /// returns once the helper serves, so that a snapshot taken after the
    /// ready line holds it; a helper that fails to start is logged and the
    /// first container starts it again.
    pub async fn start(config: ServerConfig) -> Result<Self, ServeError> {
        reaper::start().map_err(ServeError::Reaper)?;

        if config.prepare_cgroup_parent {
            let containers = &config.containers;
            if let Err(error) =
                cgroup_parent::prepare(&containers.cgroup_root, &containers.cgroup_parent)
            {
                tracing::warn!(%error, "the first container creates its cgroup parent itself");
            }
        }
        let processes = Arc::new(ProcessTable::default());
        let mounts: Arc<dyn MountSyscalls> = Arc::new(RealMounts);
        let engine = Arc::new(LibcontainerEngine::new(
            StateLayout::new(&config.containers.state_root),
            config.containers.helper_program.clone(),
            config.containers.helper_timeout,
        ));
        if config.prestart_container_helper {
            let engine = Arc::clone(&engine);
            if let Err(error) = tokio::task::spawn_blocking(move || engine.prestart_helper()).await
            {
                tracing::warn!(%error, "starting the container helper did not finish");
            }
        }
        let containers = Arc::new(ContainerManager::new(
            config.containers,
            engine,
            Arc::clone(&mounts),
            Arc::clone(&processes),
        ));
        Ok(Self {
            processes,
            containers,
            storage: Arc::new(StorageManager::new(mounts)),
            template: config.template,
        })
    }

    /// Serves every connection `incoming` yields, until a client asks for
    /// shutdown or `incoming` ends.
    pub async fn serve<I, IO, IE>(self, incoming: I) -> Result<ServeOutcome, ServeError>
    where
        I: Stream<Item = Result<IO, IE>>,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Self {
            processes,
            containers,
            storage,
            template,
        } = self;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shutdown_tx = Arc::new(shutdown_tx);
        let mut stop_serving = shutdown_rx.clone();
        let mut shutdown_requested = shutdown_rx;

        let serving = Server::builder()
            .add_service(HealthServer::new(HealthService))
            .add_service(ProcessServer::new(ProcessService::new(processes)))
            .add_service(ContainerServer::new(ContainerService::new(containers)))
            .add_service(StorageServer::new(StorageService::new(Arc::clone(
                &storage,
            ))))
            .add_service(GuestServer::new(GuestService::new(
                shutdown_tx,
                storage,
                template,
            )))
            .serve_with_incoming_shutdown(incoming, async move {
                // An error means the flag can no longer change: keep serving.
                if stop_serving.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            });
        tokio::pin!(serving);
        // Only a bool may be held across awaits: the watch guard is not Send.
        let shutdown_requested =
            async move { shutdown_requested.wait_for(|stop| *stop).await.is_ok() };

        tokio::select! {
            served = &mut serving => {
                served.map_err(ServeError::Transport)?;
                Ok(ServeOutcome::ListenerClosed)
            }
            true = shutdown_requested => {
                // Graceful: answers in flight are sent, then connections close.
                // Open output streams could hold that up forever, hence the grace.
                if tokio::time::timeout(SHUTDOWN_GRACE, serving).await.is_err() {
                    tracing::debug!("connections still open at shutdown");
                }
                Ok(ServeOutcome::ShutdownRequested)
            }
        }
    }
}
