//! A sandbox: one microVM (its VMM process), the agent connection, and the
//! shared directory through which its containers' files reach the guest.
//! The shim runs one per pod; `vmrun run` one per run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_config::{SharedDir, VmConfig};
use vmrun_agent::client::{
    dial_sandbox, AgentClient, CallLimits, ContainerCreate, DeadlineMissed, SandboxInit,
    StorageMount,
};

use crate::console_log::ConsoleConfig;
use crate::error::{Result, SandboxError};
use crate::guest_spec::GuestSpec;
use crate::host_mounts::{HostDir, HostMounts};
use crate::layout::{self, AGENT_VSOCK_PORT, GUEST_SHARED_DIR, SHARE_TAG};
use crate::network::PodNetwork;
use crate::sandbox_dir::SandboxDir;
use crate::vmm_process::{ExitWatch, VmmProcess};

/// How a sandbox is started.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The VM; its vsock socket (and, with [`share`](Self::share), the
    /// sandbox share) are added here.
    pub vm: VmConfig,
    /// The VMM binary (`vmrun-vmm`; see
    /// [`default_vmm_binary`](crate::vmm_process::default_vmm_binary)).
    pub vmm_binary: PathBuf,
    /// How long the agent gets to answer.
    pub boot_timeout: Duration,
    /// Share the sandbox directory's `shared/` (containers need it).
    pub share: bool,
    /// Where the guest console goes (stderr too?) and how much of it the
    /// sandbox's console log keeps.
    pub console: ConsoleConfig,
    /// The guest's hostname (empty: the guest's default).
    pub hostname: String,
    /// How long agent calls may take before the VM is taken for hung and
    /// stopped.
    pub call_limits: CallLimits,
    /// The pod's network namespace on the host (CNI's): the VM gets its
    /// interfaces (see [`crate::network`]). None: loopback only, or the
    /// taps of `vm.nets` as they are.
    pub network: Option<PathBuf>,
}

impl SandboxConfig {
    /// A sandbox of `vm` run by `vmm_binary`, with the sandbox share.
    pub fn new(vm: VmConfig, vmm_binary: PathBuf) -> Self {
        Self {
            vm,
            vmm_binary,
            boot_timeout: layout::DEFAULT_BOOT_TIMEOUT,
            share: true,
            console: ConsoleConfig::default(),
            hostname: String::new(),
            call_limits: CallLimits {
                quick: layout::DEFAULT_CALL_TIMEOUT,
                setup: layout::DEFAULT_SETUP_TIMEOUT,
            },
            network: None,
        }
    }
}

/// When the phases of a start ended, from its beginning.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartTimes {
    pub vmm_spawned: Duration,
    pub agent_ready: Duration,
}

/// One running microVM.
pub struct Sandbox {
    label: String,
    dir: SandboxDir,
    agent: AgentClient,
    vmm: tokio::sync::Mutex<VmmProcess>,
    vmm_pid: u32,
    exit: ExitWatch,
    times: StartTimes,
    /// The pod's network, connected to the VM's taps.
    network: Option<PodNetwork>,
}

/// Removes the directory of a start that did not finish (an error, or the
/// caller dropped the future), after the VMM it holds is gone.
struct DirGuard<'a>(Option<&'a SandboxDir>);

impl DirGuard<'_> {
    /// The start finished: the directory stays.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for DirGuard<'_> {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            remove_dir(dir);
        }
    }
}

/// Disconnects the pod's interfaces from the VM's taps if a start does not
/// finish (the taps themselves go with the VMM).
struct NetworkGuard<'a>(Option<&'a PodNetwork>);

impl NetworkGuard<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for NetworkGuard<'_> {
    fn drop(&mut self) {
        if let Some(network) = self.0.take() {
            if let Err(e) = network.disconnect_blocking() {
                tracing::warn!("after a failed start: {e}");
            }
        }
    }
}

/// Reads the pod's network from the namespace at `path`, which must not be
/// this process's own: its interfaces would be taken from the host.
async fn read_pod_network(path: &Path, vm: &VmConfig) -> Result<PodNetwork> {
    use std::os::unix::fs::MetadataExt;
    if !vm.nets.is_empty() {
        return Err(SandboxError::Spec(format!(
            "the VM has taps of its own ({}) and a pod network namespace {}: give one of them",
            vm.nets.len(),
            path.display()
        )));
    }
    let same =
        |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    if let (Ok(pod), Ok(own)) = (
        std::fs::metadata(path),
        std::fs::metadata("/proc/self/ns/net"),
    ) {
        if same(&pod, &own) {
            return Err(SandboxError::Spec(format!(
                "the pod network namespace {} is the host's own (this process's): its \
                 interfaces cannot be given to a VM",
                path.display()
            )));
        }
    }
    Ok(PodNetwork::read(path).await?)
}

impl Sandbox {
    /// Creates `dir`, starts the VM in it and waits for its agent. On
    /// failure (or when the returned future is dropped) nothing is left: no
    /// VMM process, no directory.
    pub async fn start(config: &SandboxConfig, dir: SandboxDir, label: &str) -> Result<Arc<Self>> {
        let started = Instant::now();
        dir.create(label)?;
        let guard = DirGuard(Some(&dir));
        if config.share {
            dir.mount_share_root()?;
        }
        let mut vm = config.vm.clone();
        let network = match &config.network {
            Some(path) => {
                let network = read_pod_network(path, &vm).await?;
                vm.nets = network.vm_nets();
                vm.netns = Some(path.clone());
                Some(network)
            }
            None => None,
        };
        let network_guard = NetworkGuard(network.as_ref());
        vm.vsock_uds = Some(dir.vsock());
        if config.share {
            // Its own levels are the host's: the guest writes only in what
            // the host mounts beneath them.
            vm.shares
                .push(SharedDir::new(SHARE_TAG, dir.shared(), false).with_read_only_top());
        }
        let mut vmm = VmmProcess::spawn(&config.vmm_binary, &vm, &dir, config.console)?;
        let vmm_spawned = started.elapsed();
        let connected = Self::connect(config, &vm, &dir, &vmm).await;
        let agent = match connected {
            Ok(agent) => agent,
            Err(err) => {
                vmm.stop().await;
                return Err(err);
            }
        };
        if let Some(network) = &network {
            if let Err(err) = Self::configure_network(network, &agent).await {
                vmm.stop().await;
                return Err(err);
            }
        }
        network_guard.disarm();
        guard.disarm();
        let times = StartTimes {
            vmm_spawned,
            agent_ready: started.elapsed(),
        };
        tracing::info!(
            sandbox = label,
            secs = times.agent_ready.as_secs_f64(),
            "microVM ready"
        );
        let vmm_pid = vmm.pid();
        let exit = vmm.exit_watch();
        Ok(Arc::new(Self {
            label: label.to_string(),
            dir,
            agent,
            vmm: tokio::sync::Mutex::new(vmm),
            vmm_pid,
            exit,
            times,
            network,
        }))
    }

    /// Connects the pod's interfaces to the VM's taps and has the agent
    /// give the guest their names, addresses and routes.
    async fn configure_network(network: &PodNetwork, agent: &AgentClient) -> Result<()> {
        let started = Instant::now();
        network.connect().await?;
        agent.configure_network(network.request()).await?;
        tracing::info!(
            interfaces = network.interfaces().len(),
            secs = started.elapsed().as_secs_f64(),
            "pod network configured"
        );
        Ok(())
    }

    async fn connect(
        config: &SandboxConfig,
        vm: &VmConfig,
        dir: &SandboxDir,
        vmm: &VmmProcess,
    ) -> Result<AgentClient> {
        let deadline = Instant::now() + config.boot_timeout;
        let init = SandboxInit {
            share_tags: vm.shares.iter().map(|s| s.tag.clone()).collect(),
            hostname: config.hostname.clone(),
        };
        let no_answer = |why: String| {
            SandboxError::Vm(format!(
                "the guest agent did not answer within {} s: {why}; \
                 last guest console lines:\n{}",
                config.boot_timeout.as_secs(),
                vmm.console_tail()
            ))
        };
        let dial = dial_sandbox(dir.vsock(), AGENT_VSOCK_PORT, deadline, &init);
        let agent = tokio::select! {
            agent = tokio::time::timeout_at(deadline.into(), dial) => match agent {
                Ok(agent) => agent.map_err(|e| no_answer(e.to_string()))?,
                Err(_) => return Err(no_answer("InitSandbox is unanswered".into())),
            },
            reason = vmm.exit_watch().wait() => {
                return Err(SandboxError::Vm(format!("the VM stopped while booting: {reason}")))
            }
        };
        let (agent, missed) = agent.with_call_deadline(config.call_limits);
        watch_deadline(missed, vmm);
        if config.share {
            agent
                .mount_storage(StorageMount::virtiofs(SHARE_TAG, GUEST_SHARED_DIR))
                .await?;
        }
        Ok(agent)
    }

    /// What the sandbox was created as (`namespace/id` for a pod).
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    /// The VMM's host pid.
    pub fn pid(&self) -> u32 {
        self.vmm_pid
    }

    /// When the VMM was spawned and the agent answered.
    pub fn start_times(&self) -> StartTimes {
        self.times
    }

    /// Resolves (with the reason) once the VM is gone.
    pub fn stopped(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        self.exit.clone().wait()
    }

    /// Why the VM is gone, if it is.
    pub fn stop_reason(&self) -> Option<String> {
        self.exit.reason()
    }

    /// Puts a container's rootfs (read-only to the guest if asked) and the
    /// bind sources of its guest spec into the share, recording the mounts
    /// in `mounts`; returns the agent's create request for it (spec and
    /// guest root), for the caller to add its terminal and overlay choice.
    pub fn share_container(
        &self,
        container_id: &str,
        guest: &GuestSpec,
        rootfs: &Path,
        rootfs_read_only: bool,
        mounts: &mut HostMounts,
    ) -> Result<ContainerCreate> {
        let spec_json = serde_json::to_vec(&guest.spec)
            .map_err(|e| SandboxError::Spec(format!("cannot encode the runtime spec: {e}")))?;
        let shared = HostDir::open(&self.dir.shared())?;
        let container = mounts.create_dir(&shared, container_id)?;
        mounts.bind(rootfs, &container, "rootfs", rootfs_read_only)?;
        if !guest.binds.is_empty() {
            let sources = mounts.create_dir(&container, "mounts")?;
            for bind in &guest.binds {
                mounts.bind(&bind.source, &sources, &bind.name, bind.read_only)?;
            }
        }
        Ok(ContainerCreate::new(
            container_id,
            spec_json,
            layout::guest_rootfs(container_id),
        ))
    }

    /// Stops the VM and removes the sandbox directory.
    pub async fn stop(&self) {
        self.vmm.lock().await.stop().await;
        if let Some(network) = &self.network {
            if let Err(e) = network.disconnect().await {
                tracing::warn!(sandbox = self.label, "{e}");
            }
        }
        remove_dir(&self.dir);
        tracing::info!(sandbox = self.label, "microVM stopped");
    }
}

/// When an agent call misses its deadline the guest is taken for hung and
/// the VM is stopped, which fails everything waiting on it (and frees it).
fn watch_deadline(mut missed: DeadlineMissed, vmm: &VmmProcess) {
    let killer = vmm.killer();
    let vm_gone = vmm.exit_watch().wait();
    tokio::spawn(async move {
        tokio::select! {
            changed = missed.changed() => {
                if changed.is_ok() {
                    let why = missed.borrow().clone();
                    if let Some(why) = &why {
                        tracing::warn!("{why}: stopping the microVM");
                    }
                    killer.kill(why);
                }
            }
            _ = vm_gone => {}
        }
    });
}

fn remove_dir(dir: &SandboxDir) {
    if let Err(e) = dir.remove() {
        tracing::warn!("cannot remove {}: {e}", dir.path().display());
    }
}
