//! A real microVM with its agent dialled, shared by the integration tests
//! that drive the agent API directly.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm::config::{Disk, SharedDir};
use vmm::{Vm, VmConfig};
use vmrun_agent::client::{dial_sandbox, AgentClient, SandboxInit};

/// A booted guest; dropping it stops the VM and removes its directory.
pub struct Guest {
    pub vm: Vm,
    pub dir: PathBuf,
    pub agent: AgentClient,
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.vm.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The per-test directory `name` (socket, bundles), created empty.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmrun-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// Boots the installed kernel and initramfs with `shares` and virtio-blk
/// `disks` (/dev/vda, /dev/vdb, ... in order), the guest console on stderr
/// (shown when the test fails), and waits for the agent.
pub async fn boot(dir: &Path, shares: Vec<SharedDir>, disks: Vec<Disk>) -> Guest {
    // VMM logs (VMRUN_LOG=debug for more) land in the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMRUN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let socket = dir.join("vsock.sock");
    let init = SandboxInit {
        share_tags: shares.iter().map(|s| s.tag.clone()).collect(),
        hostname: String::new(),
    };
    let config = VmConfig {
        vsock_uds: Some(socket.clone()),
        shares,
        disks,
        ..VmConfig::default()
    };
    let vm = Vm::start(&config, std::io::stderr()).expect("start VM");
    // As long as `vmrun run` waits by default: a loaded host boots slowly.
    let deadline = Instant::now() + Duration::from_secs(600);
    let agent = dial_sandbox(&socket, vmrun_agent::AGENT_VSOCK_PORT, deadline, &init)
        .await
        .expect("agent answers");
    Guest {
        vm,
        dir: dir.to_path_buf(),
        agent,
    }
}
