//! Everything `vmrun` can fail with; `main` prints it and exits 125.

use vmrun_agent::client::ClientError;

/// Why a `vmrun` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line asks for something that cannot work.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Vm(#[from] vmm::VmError),
    #[error("cannot make the snapshot: {0}")]
    SnapshotCreate(#[from] vmm::snapshot::CreateError),
    #[error(transparent)]
    Snapshot(#[from] vmm::snapshot::SnapshotError),
    #[error(transparent)]
    Sandbox(#[from] vmrun_sandbox::SandboxError),
    #[error(transparent)]
    VmmProcess(#[from] vmrun_vmm::VmmProcessError),
    /// A call to the guest agent failed.
    #[error("{what}: {source}")]
    Agent {
        what: &'static str,
        source: ClientError,
    },
    /// A host-side operation failed.
    #[error("{what}: {source}")]
    Host {
        what: &'static str,
        source: std::io::Error,
    },
    /// The guest ended before what was asked of it.
    #[error("{0}")]
    Guest(String),
    /// A termination signal stopped the run before the command started.
    #[error("{0} before the command started: stopping the microVM")]
    Interrupted(&'static str),
}

impl CliError {
    /// A failed agent call, saying what was being done.
    pub fn agent(what: &'static str) -> impl FnOnce(ClientError) -> Self {
        move |source| Self::Agent { what, source }
    }

    /// A failed host operation, saying what was being done.
    pub fn host(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Host { what, source }
    }
}

/// The CLI's result type.
pub type Result<T, E = CliError> = std::result::Result<T, E>;
