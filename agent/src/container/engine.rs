//! The container engine behind a small trait, youki style: the manager's
//! bookkeeping (ids, cleanup, state) is tested with a fake, the real one
//! drives libcontainer ([`LibcontainerEngine`](super::LibcontainerEngine)).
//!
//! Every method blocks (forks, cgroup files, libcontainer's state files):
//! call them from a blocking thread.

use std::fmt::Debug;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use tokio::sync::oneshot;

use super::error::ContainerError;
use super::status::ContainerStatus;
use crate::process::ProcessExit;

/// How a new container process's stdio is wired.
#[derive(Debug)]
pub enum EngineStdio {
    /// The child's ends of three pipes: stdin, stdout, stderr.
    Pipes([OwnedFd; 3]),
    /// A new pseudo-terminal; its master is sent to this console socket.
    Terminal { console_socket: PathBuf },
}

/// A process the engine started. It becomes (or is) a child of the agent,
/// registered with the reaper: its exit arrives on `exit`.
#[derive(Debug)]
pub struct EngineProcess {
    pub pid: Pid,
    pub exit: oneshot::Receiver<ProcessExit>,
}

pub trait ContainerEngine: Send + Sync + Debug + 'static {
    /// Creates a container from the bundle (`config.json` inside). Its init
    /// process waits for [`start`](Self::start).
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: EngineStdio,
    ) -> Result<EngineProcess, ContainerError>;

    /// Starts the process (OCI `process` JSON in `process_file`) in the
    /// running container: its namespaces and cgroup.
    fn exec(
        &self,
        id: &str,
        process_file: &Path,
        stdio: EngineStdio,
    ) -> Result<EngineProcess, ContainerError>;

    /// Lets the init process exec the container's program.
    fn start(&self, id: &str) -> Result<(), ContainerError>;

    /// The status as libcontainer sees it (from its state and /proc).
    fn status(&self, id: &str) -> Result<ContainerStatus, ContainerError>;

    /// Signals every process in the container's cgroup.
    fn kill_all(&self, id: &str, signal: i32) -> Result<(), ContainerError>;

    fn pause(&self, id: &str) -> Result<(), ContainerError>;

    fn resume(&self, id: &str) -> Result<(), ContainerError>;

    /// Applies new cgroup limits.
    fn update(
        &self,
        id: &str,
        cgroup_path: &str,
        resources: &LinuxResources,
    ) -> Result<(), ContainerError>;

    /// Kills what is left, removes libcontainer's state and the cgroup.
    /// Fine for a container libcontainer never (fully) created, so it
    /// cleans up after a failed create too.
    fn delete(&self, id: &str, cgroup_path: &str) -> Result<(), ContainerError>;
}
