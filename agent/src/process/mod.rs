//! The agent's process runtime: every process the agent starts, whether
//! for the `Process` service or as a container's process.
//!
//! It owns forking and execing from a checked `ExecSpec` (pipes or a
//! pseudo-terminal, session, credentials; `spawn`), capturing output from
//! the first byte and handing it to one reader at a time (`output`),
//! feeding input, resizing terminals, the table of started processes by exec
//! id (`ProcessTable`), and reaping: as PID 1 the agent reaps every child
//! in the guest, and `reaper` hands each exit to whoever started that
//! process.
//!
//! It must not know about gRPC: no tonic types, no proto messages, no status
//! codes, and nothing from `server` (which uses this module, as `container`
//! does). Its errors are [`ProcessError`]; `server::error` alone decides
//! which code each becomes. Requests are checked into an `ExecSpec` before
//! they reach it.

mod error;
mod exec_spec;
mod fd_io;
mod managed;
mod output;
mod pty;
pub(crate) mod reaper;
mod spawn;
mod table;

pub use error::ProcessError;
pub use exec_spec::{TerminalSize, DEFAULT_PATH};
pub use managed::OUTPUT_LINGER_AFTER_EXIT;
pub use output::{OUTPUT_BUFFER_BYTES, OUTPUT_CHUNK_BYTES};
pub use reaper::ProcessExit;
pub use table::FORGET_AFTER_WAIT;

pub(crate) use exec_spec::{ExecSpec, UserSpec};
pub(crate) use managed::{ManagedProcess, OutputStream, StdinWrite};
pub(crate) use pty::set_window_size;
pub(crate) use spawn::{spawn, SpawnedProcess, SpawnedStdio};
pub(crate) use table::ProcessTable;
