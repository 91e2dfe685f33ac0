//! Everything that can go wrong while serving a request, and the one place
//! where it becomes a gRPC status code.

use std::io;
use std::path::PathBuf;

use tonic::{Code, Status};

/// An error answering an agent API request.
///
/// Messages name the operation and what was wrong, since they reach the user
/// of `vmrun run` unchanged (prefixed with the status code).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A request field is missing or malformed.
    #[error("{op}: {reason}")]
    InvalidArgument { op: &'static str, reason: String },

    /// No process was ever started with this exec id, or it was forgotten
    /// after it was waited for and its output read.
    #[error("no process with exec id {exec_id:?}")]
    UnknownExec { exec_id: String },

    /// `ResizePty` on a process started without a terminal.
    #[error("resize pty: exec id {exec_id:?} has no terminal")]
    NoTerminal { exec_id: String },

    /// A second reader for an output stream while the first is attached.
    #[error("{stream} of exec id {exec_id:?} already has a reader")]
    OutputBusy {
        stream: &'static str,
        exec_id: String,
    },

    /// Writing to standard input after it was closed.
    #[error("stdin of exec id {exec_id:?} is already closed")]
    StdinClosed { exec_id: String },

    /// The program could not be started (not found, not executable, ...).
    #[error("exec: cannot start {program:?}: {source}")]
    Spawn { program: String, source: io::Error },

    /// The working directory does not exist or is not usable.
    #[error("exec: cannot use cwd {cwd:?}: {source}")]
    Cwd { cwd: PathBuf, source: io::Error },

    /// An I/O failure on a process's stdio, terminal or bookkeeping.
    #[error("{op} exec id {exec_id:?}: {source}")]
    ProcessIo {
        op: &'static str,
        exec_id: String,
        source: io::Error,
    },

    /// The agent itself is in a state it should never be in.
    #[error("{op}: {reason}")]
    Internal { op: &'static str, reason: String },
}

impl AgentError {
    /// Shorthand for [`AgentError::InvalidArgument`].
    pub fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }

    /// The gRPC code a client sees for this error.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::UnknownExec { .. } => Code::NotFound,
            Self::NoTerminal { .. } | Self::OutputBusy { .. } | Self::StdinClosed { .. } => {
                Code::FailedPrecondition
            }
            // Callers map these like a shell does: NOT_FOUND is "command not
            // found" (127), PERMISSION_DENIED is "not executable" (126).
            Self::Spawn { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => Code::NotFound,
                io::ErrorKind::PermissionDenied => Code::PermissionDenied,
                _ => Code::FailedPrecondition,
            },
            Self::Cwd { .. } => Code::FailedPrecondition,
            Self::ProcessIo { .. } | Self::Internal { .. } => Code::Internal,
        }
    }
}

impl From<AgentError> for Status {
    fn from(error: AgentError) -> Self {
        let code = error.code();
        if code == Code::Internal {
            tracing::warn!(%error, "request failed");
        }
        Status::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_keeps_operation_and_reason() {
        let status = Status::from(AgentError::invalid("exec", "argv is empty"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "exec: argv is empty");
    }

    #[test]
    fn unknown_exec_is_not_found_and_quotes_the_id() {
        let status = Status::from(AgentError::UnknownExec {
            exec_id: "x".into(),
        });
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), r#"no process with exec id "x""#);
    }

    #[test]
    fn spawn_errors_map_like_a_shell() {
        let spawn = |kind| AgentError::Spawn {
            program: "prog".into(),
            source: io::Error::from(kind),
        };
        assert_eq!(spawn(io::ErrorKind::NotFound).code(), Code::NotFound);
        assert_eq!(
            spawn(io::ErrorKind::PermissionDenied).code(),
            Code::PermissionDenied
        );
        assert_eq!(
            spawn(io::ErrorKind::InvalidData).code(),
            Code::FailedPrecondition
        );
    }
}
