//! What the sandbox layer can fail with. Each caller maps these onto its own
//! surface once: the shim onto ttrpc codes, the CLI onto its messages.

use std::path::PathBuf;

use vmrun_agent::client::ClientError;

use crate::network::NetworkError;

/// Errors of the sandbox layer, each naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A runtime spec (or an exec's process) cannot run in a guest.
    #[error("{0}")]
    Spec(String),
    /// An OCI bundle the CLI was given cannot be used.
    #[error("bundle {}: {problem}", bundle.display())]
    Bundle { bundle: PathBuf, problem: String },
    /// Something of this name exists already (a sandbox directory).
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A host-side operation (mount, file, process) failed.
    #[error("{what}: {source}")]
    Host {
        what: String,
        source: std::io::Error,
    },
    /// Host state is not as the operation needs it (mounts left in place).
    #[error("{0}")]
    Busy(String),
    /// The microVM could not be started, or it has stopped.
    #[error("microVM: {0}")]
    Vm(String),
    /// The guest agent refused or failed a call.
    #[error("guest agent: {0}")]
    Agent(#[from] ClientError),
    /// The pod's network could not be read, connected or disconnected.
    #[error("pod network: {0}")]
    Network(#[from] NetworkError),
}

/// The sandbox layer's result type.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

impl SandboxError {
    /// A host I/O failure, saying what was being done.
    pub fn host(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Host { what, source }
    }

    /// An errno from a nix call, saying what was being done.
    pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let what = what.into();
        move |errno| Self::Host {
            what,
            source: std::io::Error::from(errno),
        }
    }
}
