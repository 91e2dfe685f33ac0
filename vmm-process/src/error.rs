//! Everything the VMM process can fail with.

use std::path::PathBuf;

/// Why a VM could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum VmmProcessError {
    /// The configuration file cannot be used.
    #[error("{}: {problem}", path.display())]
    Config { path: PathBuf, problem: String },
    #[error(transparent)]
    Vm(#[from] vmm::VmError),
    #[error(transparent)]
    Seccomp(#[from] vmm::seccomp::SeccompError),
    #[error(transparent)]
    Jail(#[from] vmm::jail::JailError),
    /// A host-side operation failed.
    #[error("{what}: {source}")]
    Host {
        what: &'static str,
        source: std::io::Error,
    },
    /// The guest ended before what was asked of it.
    #[error("{0}")]
    Guest(String),
}

impl VmmProcessError {
    /// A failed host operation, saying what was being done.
    pub fn host(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Host { what, source }
    }
}

/// The VMM process's result type.
pub type Result<T, E = VmmProcessError> = std::result::Result<T, E>;
