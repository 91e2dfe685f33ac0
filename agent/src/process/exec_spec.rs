//! What a process is started from: a checked [`ExecSpec`] (program, argv,
//! environment, working directory, credentials, terminal). Requests are
//! turned into one by whoever takes them (the `Process` service checks its
//! wire messages); nothing here parses them.

use std::path::PathBuf;

use nix::unistd::{Gid, Uid};

/// The PATH a process gets when its environment names none: the usual one of
/// OCI runtimes, so `sh` or `cat` resolve in any image.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A validated request to start a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// argv[0]: the program, looked up in `env`'s PATH.
    pub program: String,
    /// argv[1..].
    pub args: Vec<String>,
    /// The complete environment, always with a PATH.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Who to run as; `None` keeps the agent's own credentials.
    pub user: Option<UserSpec>,
    /// `Some` when the process runs on a new pseudo-terminal of this size.
    pub terminal: Option<TerminalSize>,
}

/// Credentials to switch to before exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub uid: Uid,
    pub gid: Gid,
    pub additional_gids: Vec<Gid>,
}

/// A terminal window size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub rows: u16,
    pub cols: u16,
}
