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

mod agent_client;
mod error;
mod exec_command;
mod hybrid_vsock;
mod output_stream;

pub use agent_client::{AgentClient, ExecId, ProcessExit, StartedProcess};
pub use error::ClientError;
pub use exec_command::ExecCommand;
pub use hybrid_vsock::{connect_hybrid_vsock, dial_hybrid_vsock, HandshakeError};
pub use output_stream::OutputStream;
