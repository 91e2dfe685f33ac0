//! A pod's microVM: the VMM process, the agent connection, and the shared
//! directory through which its containers' files reach the guest.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmrun_agent::client::{dial_sandbox, AgentClient, SandboxInit, StorageMount};

use crate::config::ShimConfig;
use crate::error::{Result, ShimError};
use crate::guest_spec::{guest_container_dir, ShareBind, GUEST_SHARED_DIR};
use crate::host_mounts::HostMounts;
use crate::sandbox_dir::SandboxDir;
use crate::vmm_process::{ExitWatch, VmmProcess, SHARE_TAG};

/// One running microVM.
pub struct Sandbox {
    id: String,
    dir: SandboxDir,
    agent: AgentClient,
    vmm: tokio::sync::Mutex<VmmProcess>,
    vmm_pid: u32,
    exit: ExitWatch,
}

impl Sandbox {
    /// Boots the VM of sandbox `id` and waits for its agent. On failure
    /// nothing is left: no VMM process, no directory.
    pub async fn start(config: &ShimConfig, namespace: &str, id: &str) -> Result<Arc<Self>> {
        let started = Instant::now();
        let dir = SandboxDir::of(namespace, id);
        dir.create(namespace, id)?;
        let mut vmm = match VmmProcess::spawn(config, &dir) {
            Ok(vmm) => vmm,
            Err(err) => {
                remove_dir(&dir);
                return Err(err);
            }
        };
        match Self::connect(config, &dir, &vmm).await {
            Ok(agent) => {
                tracing::info!(
                    sandbox = id,
                    secs = started.elapsed().as_secs_f64(),
                    "microVM ready"
                );
                let vmm_pid = vmm.pid();
                let exit = vmm.exit_watch();
                Ok(Arc::new(Self {
                    id: id.to_string(),
                    dir,
                    agent,
                    vmm: tokio::sync::Mutex::new(vmm),
                    vmm_pid,
                    exit,
                }))
            }
            Err(err) => {
                vmm.stop().await;
                remove_dir(&dir);
                Err(err)
            }
        }
    }

    async fn connect(
        config: &ShimConfig,
        dir: &SandboxDir,
        vmm: &VmmProcess,
    ) -> Result<AgentClient> {
        let deadline = Instant::now() + Duration::from_secs(config.boot_timeout_secs);
        let init = SandboxInit {
            share_tags: vec![SHARE_TAG.to_string()],
            hostname: String::new(),
        };
        let agent = tokio::select! {
            agent = dial_sandbox(dir.vsock(), vmrun_agent::AGENT_VSOCK_PORT, deadline, &init) => agent.map_err(|e| {
                ShimError::Vm(format!(
                    "the guest agent did not answer within {} s: {e}; \
                     last guest console lines:\n{}",
                    config.boot_timeout_secs,
                    vmm.console_tail()
                ))
            })?,
            reason = vmm.exited() => {
                return Err(ShimError::Vm(format!("the VM stopped while booting: {reason}")))
            }
        };
        agent
            .mount_storage(StorageMount::virtiofs(SHARE_TAG, GUEST_SHARED_DIR))
            .await?;
        Ok(agent)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    /// The VMM's host pid.
    pub fn pid(&self) -> u32 {
        self.vmm_pid
    }

    /// Resolves (with the reason) once the VM is gone.
    pub fn stopped(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        self.exit.clone().wait()
    }

    /// Why the VM is gone, if it is.
    pub fn stop_reason(&self) -> Option<String> {
        self.exit.reason()
    }

    /// Puts a container's rootfs and bind sources into the share; returns
    /// the guest path of its root.
    pub fn share_container(
        &self,
        container_id: &str,
        rootfs: &Path,
        binds: &[ShareBind],
        mounts: &mut HostMounts,
    ) -> Result<String> {
        let dir = self.dir.shared().join(container_id);
        mounts.create_dir(&dir)?;
        mounts.bind(rootfs, &dir.join("rootfs"), false)?;
        if !binds.is_empty() {
            mounts.create_dir(&dir.join("mounts"))?;
            for bind in binds {
                mounts.bind(
                    &bind.source,
                    &dir.join("mounts").join(&bind.name),
                    bind.read_only,
                )?;
            }
        }
        Ok(format!("{}/rootfs", guest_container_dir(container_id)))
    }

    /// Stops the VM and removes the sandbox directory.
    pub async fn stop(&self) {
        self.vmm.lock().await.stop().await;
        remove_dir(&self.dir);
        tracing::info!(sandbox = self.id, "microVM stopped");
    }
}

fn remove_dir(dir: &SandboxDir) {
    if let Err(e) = dir.remove() {
        tracing::warn!("cannot remove {}: {e}", dir.path().display());
    }
}
