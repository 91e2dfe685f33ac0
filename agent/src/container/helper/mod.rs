//! The container helper: where libcontainer forks containers.
//!
//! libcontainer clones processes that run a lot of Rust (allocations,
//! logging) before they exec the container's program. Doing that from the
//! multi-threaded agent risks a child that inherits a lock held by another
//! thread and hangs forever. So the agent starts itself once more as a
//! single-threaded helper ([`run_helper`]), which has a short-lived worker
//! per request (forked ahead of it, see `spare`); the worker builds the
//! container with libcontainer, reports the pid and exits, and the
//! container's processes are reparented to the agent (PID 1 in the guest,
//! a subreaper elsewhere), which reaps them and serves their stdio like any
//! other process.
//!
//! Only creating containers and exec'ing into them fork; the other
//! operations (start, kill, pause, delete...) run in the agent.

mod client;
mod executor;
mod protocol;
mod server;
mod spare;
mod worker;

pub use client::{HelperClient, HelperProcess};
pub(crate) use protocol::receive as protocol_receive;
pub use protocol::{HelperOp, HelperRequest};
pub use server::run_helper;

/// The first argument that makes the agent binary the container helper.
pub const HELPER_ARG: &str = "--container-helper";
