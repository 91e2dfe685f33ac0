//! Where the container engine keeps its files and finds its helper.

use std::path::PathBuf;
use std::time::Duration;

/// The agent's directory for container bookkeeping in the guest. Short,
/// since Unix socket paths below it are limited to 107 bytes.
pub const GUEST_STATE_ROOT: &str = "/run/vmrun-agent";

/// Where the guest mounts cgroup v2 (and where libcontainer looks).
pub const GUEST_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Parent of the cgroups the agent picks for specs that name none.
pub const DEFAULT_CGROUP_PARENT: &str = "/vmrun";

/// How long one container creation or exec may take in the helper before
/// the helper is killed. Generous: an emulated guest forks slowly and
/// hooks may run.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(300);

/// Configuration of the container engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Bundles, libcontainer state, overlays and console sockets.
    pub state_root: PathBuf,
    /// Where cgroup v2 is mounted; stats and OOM kills are read below it.
    /// (libcontainer itself always uses /sys/fs/cgroup.)
    pub cgroup_root: PathBuf,
    /// Cgroup parent for specs without `linux.cgroupsPath`, absolute.
    pub cgroup_parent: String,
    /// The program run as the container helper: the agent binary itself
    /// (it becomes the helper when its first argument is
    /// [`HELPER_ARG`](super::HELPER_ARG)).
    pub helper_program: PathBuf,
    pub helper_timeout: Duration,
}

impl ContainerConfig {
    /// The guest's configuration: the running agent binary is the helper.
    pub fn guest() -> Self {
        Self {
            state_root: PathBuf::from(GUEST_STATE_ROOT),
            cgroup_root: PathBuf::from(GUEST_CGROUP_ROOT),
            cgroup_parent: DEFAULT_CGROUP_PARENT.to_owned(),
            helper_program: PathBuf::from("/proc/self/exe"),
            helper_timeout: HELPER_TIMEOUT,
        }
    }
}
