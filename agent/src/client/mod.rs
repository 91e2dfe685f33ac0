//! The host side of the agent API: dial the agent through the VMM's hybrid
//! vsock socket and drive it through [`AgentClient`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), vmrun_agent::client::ClientError> {
//! use std::time::{Duration, Instant};
//! use vmrun_agent::client::{dial_hybrid_vsock, ExecCommand};
//!
//! let deadline = Instant::now() + Duration::from_secs(60);
//! let agent = dial_hybrid_vsock("/run/vmrun/vm1/vsock.sock", 1024, deadline).await?;
//! let process = agent.exec(ExecCommand::new(["echo", "hi"])).await?;
//! let stdout = agent.read_stdout(&process.exec_id).await?;
//! let output = stdout.read_to_end().await?;
//! let exit = agent.wait(&process.exec_id).await?;
//! assert_eq!((output.as_slice(), exit.shell_exit_code()), (&b"hi\n"[..], 0));
//! # Ok(()) }
//! ```
//!
//! A container: the host shares its rootfs over virtio-fs (here as tag
//! `rootfs-web`), the agent mounts it and runs the OCI spec on it.
//!
//! ```no_run
//! # async fn demo(agent: vmrun_agent::client::AgentClient, config_json: Vec<u8>)
//! # -> Result<(), vmrun_agent::client::ClientError> {
//! use vmrun_agent::client::{ContainerCreate, StorageMount};
//!
//! let rootfs = "/run/vmrun/rootfs/web";
//! agent.mount_storage(StorageMount::virtiofs("rootfs-web", rootfs).read_only()).await?;
//! // `root.path` "rootfs" (as `runc spec` writes it) means `rootfs`.
//! let init = agent
//!     .create_container(ContainerCreate::new("web", config_json, rootfs).writable_overlay())
//!     .await?;
//! let stdout = agent.read_stdout(&init.exec_id).await?;
//! agent.close_stdin(&init.exec_id).await?;
//! agent.start_container("web").await?;
//! let output = stdout.read_to_end().await?;
//! let exit = agent.wait(&init.exec_id).await?;
//! agent.remove_container("web", false).await?;
//! agent.unmount_storage(rootfs).await?;
//! # let _ = (output, exit); Ok(()) }
//! ```

mod agent_client;
mod call_deadline;
mod container_api;
mod container_requests;
mod error;
mod exec_command;
mod hybrid_vsock;
pub mod network;
mod output_stream;
mod sandbox;

pub use agent_client::{AgentClient, ExecId, ProcessExit, StartedProcess};
pub use call_deadline::{CallLimits, DeadlineMissed};
pub use container_api::ContainerState;
pub use container_requests::{ContainerCreate, StorageMount};
pub use error::ClientError;
pub use exec_command::ExecCommand;
pub use hybrid_vsock::{connect_hybrid_vsock, dial_hybrid_vsock, HandshakeError};
pub use output_stream::OutputStream;
pub use sandbox::{dial_sandbox, SandboxInit};
