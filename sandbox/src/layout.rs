//! Where things are, on the host and in the guest: the one guest layout the
//! shim and the CLI share, and the constants every part of the host side
//! takes from here.
//!
//! Host: `<runtime root>/sb/<hash>/` (a pod) or `<runtime root>/vm-<pid>/`
//! (a `vmrun run`), holding the VM's vsock socket, its console log, its
//! configuration and `shared/`, the one host directory the guest sees.
//! Guest: the agent mounts `shared/` at [`GUEST_SHARED_DIR`]; container `c`
//! has `rootfs` and `mounts/<n>` (its bind sources) under
//! [`guest_container_dir`]`(c)`.

use std::path::PathBuf;
use std::time::Duration;

pub use vm_config::guest::AGENT_VSOCK_PORT;

/// Parent of every sandbox directory unless `VMRUN_RUNTIME_DIR` says otherwise.
pub const DEFAULT_RUNTIME_ROOT: &str = "/run/vmrun";
/// The virtio-fs tag of a sandbox's shared directory.
pub const SHARE_TAG: &str = "sandbox";
/// Where the agent mounts the sandbox's share in the guest.
pub const GUEST_SHARED_DIR: &str = "/run/vmrun/shared";
/// How long a new VM's agent gets to answer by default.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long an agent call that answers at once (kill, state, stats,
/// pause, ...) may take by default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a call that sets up a container or process (create, start,
/// exec, remove) may take by default: ~1 min on a software-KVM host, ~3 min
/// on the slowest seen.
pub const DEFAULT_SETUP_TIMEOUT: Duration = Duration::from_secs(600);

/// The runtime root: `VMRUN_RUNTIME_DIR`, else [`DEFAULT_RUNTIME_ROOT`].
pub fn runtime_root() -> PathBuf {
    std::env::var_os("VMRUN_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_ROOT))
}

/// Guest path of a container's directory in the share.
pub fn guest_container_dir(container_id: &str) -> String {
    format!("{GUEST_SHARED_DIR}/{container_id}")
}

/// Guest path of a container's root file system.
pub fn guest_rootfs(container_id: &str) -> String {
    format!("{}/rootfs", guest_container_dir(container_id))
}

/// Guest path of a container's `n`-th bind source.
pub fn guest_bind_source(container_id: &str, name: &str) -> String {
    format!("{}/mounts/{name}", guest_container_dir(container_id))
}
