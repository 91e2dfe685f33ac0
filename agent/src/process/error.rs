//! What can go wrong starting, tracking and talking to a process. Which
//! gRPC code each variant becomes is decided in one place, `server::error`.

use std::io;
use std::path::PathBuf;

/// An error of the process runtime. Messages name the operation and the
/// exec id or program, since they reach the user of `vmrun run` unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// No process was ever started with this exec id, or it was forgotten
    /// after it was waited for and its output read.
    #[error("no process with exec id {exec_id:?}")]
    UnknownExec { exec_id: String },

    /// A resize of a process started without a terminal.
    #[error("resize pty: exec id {exec_id:?} has no terminal")]
    NoTerminal { exec_id: String },

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
    Io {
        op: &'static str,
        exec_id: String,
        source: io::Error,
    },

    /// The runtime itself is in a state it should never be in.
    #[error("{op}: {reason}")]
    Internal { op: &'static str, reason: String },
}
