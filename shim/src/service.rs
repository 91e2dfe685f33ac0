//! What the containerd Task API (shim v2) does, on top of sandboxes and the
//! guest agent. The RPCs themselves (`task_api.rs`) are thin wrappers over
//! these methods, which return our own `Result`; errors become ttrpc
//! statuses in `error.rs` only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use containerd_shim::api;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::ExitSignal;
use oci_spec::runtime::Spec;
use vmrun_sandbox::guest_spec::{self, NetworkRequest};
use vmrun_sandbox::host_mounts::HostMounts;
use vmrun_sandbox::{Sandbox, SandboxConfig, SandboxDir, SandboxError};

use crate::config::ShimConfig;
use crate::container::{Container, SandboxRole};
use crate::error::{Result, ShimError};
use crate::events::{timestamp, Events};
use crate::metrics;
use crate::process::{Attach, Exit, Process, ProcessIo};

/// A new terminal's size until containerd resizes it.
const INITIAL_PTY: (u16, u16) = (24, 80);

/// The Task service of one shim: one sandbox VM and its containers.
#[derive(Clone)]
pub struct TaskService {
    namespace: String,
    events: Events,
    exit: Arc<ExitSignal>,
    sandbox: Arc<tokio::sync::Mutex<Option<Arc<Sandbox>>>>,
    containers: Arc<Mutex<HashMap<String, Arc<Container>>>>,
}

impl TaskService {
    pub fn new(namespace: &str, events: Events, exit: Arc<ExitSignal>) -> Self {
        Self {
            namespace: namespace.to_string(),
            events,
            exit,
            sandbox: Arc::default(),
            containers: Arc::default(),
        }
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("container {id}")))
    }

    pub(crate) async fn create(
        &self,
        req: api::CreateTaskRequest,
    ) -> Result<api::CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unsupported("restoring from a checkpoint"));
        }
        if self.container(&req.id).is_ok() {
            return Err(ShimError::AlreadyExists(format!("container {}", req.id)));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = read_spec(&bundle)?;
        let mut mounts = HostMounts::default();
        let container = match self
            .create_container(&req, spec, &bundle, &mut mounts)
            .await
        {
            Ok(container) => container,
            Err(err) => {
                if let Err(e) = mounts.cleanup() {
                    tracing::warn!(container = req.id, "cleanup after a failed create: {e}");
                }
                return Err(err);
            }
        };
        let pid = container.sandbox.pid();
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(req.id.clone(), container);
        self.events.publish(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            pid,
            ..Default::default()
        });
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    /// Mounts the rootfs, finds or boots the VM, and creates the container
    /// in it. Host mounts made are left in `mounts` for the caller to undo
    /// on failure; a VM booted here is stopped on failure.
    async fn create_container(
        &self,
        req: &api::CreateTaskRequest,
        spec: Spec,
        bundle: &Path,
        mounts: &mut HostMounts,
    ) -> Result<Arc<Container>> {
        let rootfs = bundle.join("rootfs");
        for mount in &req.rootfs {
            containerd_shim::util::mount_rootfs(mount, &rootfs)
                .await
                .map_err(|e| {
                    SandboxError::host(format!(
                        "mount the {} rootfs {} on {}",
                        mount.type_,
                        mount.source,
                        rootfs.display()
                    ))(std::io::Error::other(e.to_string()))
                })?;
            mounts.record_mount(&rootfs);
        }
        match SandboxRole::of(&spec)? {
            SandboxRole::Owner => {
                let network = pod_network(&req.id, &spec)?;
                let sandbox = self.start_sandbox(req, network).await?;
                let created = self
                    .create_in(&sandbox, true, None, req, spec, bundle, mounts)
                    .await;
                if created.is_err() {
                    sandbox.stop().await;
                    *self.sandbox.lock().await = None;
                }
                created
            }
            SandboxRole::Member(sandbox_id) => {
                let pod = self.container(&sandbox_id).map_err(|_| {
                    ShimError::NotFound(format!(
                        "sandbox {sandbox_id} (of container {}) in this shim",
                        req.id
                    ))
                })?;
                let sandbox = Arc::clone(&pod.sandbox);
                let pod_pid = Some(pod.init.guest_pid());
                self.create_in(&sandbox, false, pod_pid, req, spec, bundle, mounts)
                    .await
            }
        }
    }

    async fn start_sandbox(
        &self,
        req: &api::CreateTaskRequest,
        network: Option<PathBuf>,
    ) -> Result<Arc<Sandbox>> {
        let mut slot = self.sandbox.lock().await;
        if let Some(running) = slot.as_ref() {
            return Err(ShimError::FailedPrecondition(format!(
                "this shim already runs sandbox {}; container {} is not part of it",
                running.label(),
                req.id
            )));
        }
        let config_path = crate::options::config_path(req.options.as_ref())?;
        let config = ShimConfig::load(config_path.as_deref())?;
        let dir = SandboxDir::for_pod(&self.namespace, &req.id);
        let label = format!("{}/{}", self.namespace, req.id);
        let sandbox_config = SandboxConfig {
            network,
            ..config.sandbox_config()
        };
        let sandbox = Sandbox::start(&sandbox_config, dir, &label).await?;
        *slot = Some(Arc::clone(&sandbox));
        Ok(sandbox)
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_in(
        &self,
        sandbox: &Arc<Sandbox>,
        owns_sandbox: bool,
        pod_pid: Option<u32>,
        req: &api::CreateTaskRequest,
        spec: Spec,
        bundle: &Path,
        mounts: &mut HostMounts,
    ) -> Result<Arc<Container>> {
        let id = req.id.as_str();
        let guest = guest_spec::for_guest(spec, bundle, id, pod_pid)?;
        let mut create =
            sandbox.share_container(id, &guest, &bundle.join("rootfs"), false, mounts)?;
        if req.terminal {
            create = create.terminal(INITIAL_PTY.0, INITIAL_PTY.1);
        }
        let io = ProcessIo {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let init = Process::new("", io, None)?;
        let agent = sandbox.agent();
        let started = agent.create_container(create).await?;
        let attached = init
            .attach(
                self.attach_args(sandbox, id, started.exec_id, started.pid),
                self.on_exit(sandbox, id, "", true),
            )
            .await;
        if let Err(err) = attached {
            if let Err(e) = agent.remove_container(id, true).await {
                tracing::warn!(container = id, "cannot remove the half-made container: {e}");
            }
            return Err(err);
        }
        let taken = std::mem::take(mounts);
        Ok(Arc::new(Container::new(
            id,
            bundle.to_path_buf(),
            Arc::clone(sandbox),
            owns_sandbox,
            init,
            taken,
        )))
    }

    fn attach_args(
        &self,
        sandbox: &Sandbox,
        container_id: &str,
        exec: vmrun_agent::client::ExecId,
        guest_pid: u32,
    ) -> Attach<impl std::future::Future<Output = String> + Send + 'static> {
        Attach {
            agent: sandbox.agent().clone(),
            exec,
            guest_pid,
            container_id: container_id.to_string(),
            namespace: self.namespace.clone(),
            vm_stopped: sandbox.stopped(),
        }
    }

    /// What happens when a process ends: OOM (for an init killed by it)
    /// and exit events.
    fn on_exit(
        &self,
        sandbox: &Sandbox,
        container_id: &str,
        exec_id: &str,
        is_init: bool,
    ) -> impl FnOnce(Exit) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
           + Send
           + 'static {
        let events = self.events.clone();
        let agent = sandbox.agent().clone();
        let pid = sandbox.pid();
        let container_id = container_id.to_string();
        let id = if is_init {
            container_id.clone()
        } else {
            exec_id.to_string()
        };
        move |exit: Exit| {
            Box::pin(async move {
                if is_init {
                    if let Ok(state) = agent.container_state(&container_id).await {
                        if state.oom_killed {
                            events.publish(TaskOOM {
                                container_id: container_id.clone(),
                                ..Default::default()
                            });
                        }
                    }
                }
                events.publish(TaskExit {
                    container_id,
                    id,
                    pid,
                    exit_status: exit.status,
                    exited_at: MessageField::some(timestamp(exit.at)),
                    ..Default::default()
                });
            })
        }
    }

    pub(crate) async fn start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let container = self.container(&req.id)?;
        let pid = container.sandbox.pid();
        if req.exec_id.is_empty() {
            container.sandbox.agent().start_container(&req.id).await?;
            container.init.mark_started();
            self.events.publish(TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            });
        } else {
            let process = container.process(&req.exec_id)?;
            if process.agent_id().is_ok() {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {} has already been started",
                    req.exec_id
                )));
            }
            let spec = process.spec.clone().unwrap_or_default();
            let terminal = process.io.terminal.then_some(INITIAL_PTY);
            let sandbox = &container.sandbox;
            let started = sandbox
                .agent()
                .exec_in_container(&req.id, spec, terminal)
                .await?;
            process
                .attach(
                    self.attach_args(sandbox, &req.id, started.exec_id, started.pid),
                    self.on_exit(sandbox, &req.id, &req.exec_id, false),
                )
                .await?;
            process.mark_started();
            self.events.publish(TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid,
                ..Default::default()
            });
        }
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    pub(crate) async fn delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let container = self.container(&req.id)?;
        let pid = container.sandbox.pid();
        if !req.exec_id.is_empty() {
            let process = container.process(&req.exec_id)?;
            let exit = match process.exit() {
                Some(exit) => exit,
                None if process.agent_id().is_err() => {
                    process.record_exit(0);
                    process.wait().await
                }
                None => {
                    return Err(ShimError::FailedPrecondition(format!(
                        "exec {} is still running",
                        req.exec_id
                    )))
                }
            };
            container.remove_exec(&req.exec_id);
            return Ok(delete_response(pid, exit));
        }
        let exit = match container.init.exit() {
            Some(exit) => exit,
            None if container.init.status() == api::Status::CREATED => {
                // Never started: containerd deletes such a task directly.
                container.init.record_exit(0);
                container.init.wait().await
            }
            None => {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {} is still running: kill it first",
                    req.id
                )))
            }
        };
        self.remove_container(&container).await;
        self.events.publish(TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        });
        Ok(delete_response(pid, exit))
    }

    /// Removes the container from the guest and the host; stops the VM if
    /// the container owned it.
    async fn remove_container(&self, container: &Container) {
        let sandbox = &container.sandbox;
        if sandbox.stop_reason().is_none() {
            if let Err(e) = sandbox.agent().remove_container(&container.id, true).await {
                tracing::warn!(container = container.id, "guest remove: {e}");
            }
        }
        if container.owns_sandbox {
            sandbox.stop().await;
            *self.sandbox.lock().await = None;
        }
        if let Err(e) = container.release_mounts() {
            tracing::warn!(container = container.id, "host mounts: {e}");
        }
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&container.id);
    }

    pub(crate) async fn exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        if req.exec_id.is_empty() {
            return Err(ShimError::InvalidArgument(
                "an exec needs an exec id".into(),
            ));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|any| guest_spec::exec_process(&any.value, req.terminal))
            .transpose()?
            .ok_or_else(|| {
                ShimError::InvalidArgument(format!("exec {}: no process spec", req.exec_id))
            })?;
        let io = ProcessIo {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        container.add_exec(Process::new(&req.exec_id, io, Some(spec))?)?;
        self.events.publish(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    pub(crate) async fn kill(&self, req: api::KillRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        if process.exit().is_some() {
            return Err(ShimError::NotFound(format!(
                "process {} of container {}: it has already finished",
                if req.exec_id.is_empty() {
                    "init"
                } else {
                    &req.exec_id
                },
                req.id
            )));
        }
        let signal = i32::try_from(req.signal)
            .map_err(|_| ShimError::InvalidArgument(format!("signal {}", req.signal)))?;
        let agent = container.sandbox.agent();
        if req.exec_id.is_empty() {
            agent.kill_container(&req.id, signal, req.all).await?;
        } else {
            agent.signal(process.agent_id()?, signal).await?;
        }
        Ok(())
    }

    pub(crate) async fn state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        let exit = process.exit();
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: container.bundle.display().to_string(),
            pid: container.sandbox.pid(),
            status: container.status_of(&process).into(),
            stdin: process.io.stdin.clone(),
            stdout: process.io.stdout.clone(),
            stderr: process.io.stderr.clone(),
            terminal: process.io.terminal,
            exit_status: exit.map_or(0, |e| e.status),
            exited_at: exit.map_or(MessageField::none(), |e| {
                MessageField::some(timestamp(e.at))
            }),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    pub(crate) async fn wait(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let process = self.container(&req.id)?.process(&req.exec_id)?;
        let exit = process.wait().await;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    pub(crate) async fn pids(&self, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let container = self.container(&req.id)?;
        // Guest pids: the processes live in the VM.
        let processes = std::iter::once(Arc::clone(&container.init))
            .chain(container.execs())
            .filter(|p| p.exit().is_none() && p.guest_pid() != 0)
            .map(|p| ProcessInfo {
                pid: p.guest_pid(),
                ..Default::default()
            })
            .collect();
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    pub(crate) async fn pause(&self, req: api::PauseRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        container.sandbox.agent().pause_container(&req.id).await?;
        container.set_paused(true);
        self.events.publish(TaskPaused {
            container_id: req.id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    pub(crate) async fn resume(&self, req: api::ResumeRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        container.sandbox.agent().resume_container(&req.id).await?;
        container.set_paused(false);
        self.events.publish(TaskResumed {
            container_id: req.id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    pub(crate) async fn stats(&self, req: api::StatsRequest) -> Result<api::StatsResponse> {
        let container = self.container(&req.id)?;
        let stats = container.sandbox.agent().container_stats(&req.id).await?;
        Ok(api::StatsResponse {
            stats: MessageField::some(metrics::cgroup_v2_any(&stats)?),
            ..Default::default()
        })
    }

    pub(crate) async fn update(&self, req: api::UpdateTaskRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        let resources = req
            .resources
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("update without resources".into()))?;
        container
            .sandbox
            .agent()
            .update_container(&req.id, resources.value.clone())
            .await?;
        Ok(())
    }

    pub(crate) async fn close_io(&self, req: api::CloseIORequest) -> Result<()> {
        let process = self.container(&req.id)?.process(&req.exec_id)?;
        if req.stdin {
            process.close_stdin();
        }
        Ok(())
    }

    pub(crate) async fn resize_pty(&self, req: api::ResizePtyRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        let size = |v: u32| {
            u16::try_from(v).map_err(|_| ShimError::InvalidArgument(format!("terminal size {v}")))
        };
        container
            .sandbox
            .agent()
            .resize_pty(process.agent_id()?, size(req.height)?, size(req.width)?)
            .await?;
        Ok(())
    }

    pub(crate) fn connect(&self) -> api::ConnectResponse {
        // The slot is locked while a VM boots (minutes on a slow host): do
        // not wait for it.
        let task_pid = self
            .sandbox
            .try_lock()
            .ok()
            .and_then(|slot| slot.as_ref().map(|s| s.pid()))
            .unwrap_or_default();
        api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }
    }

    pub(crate) fn shutdown(&self) {
        let empty = self
            .containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        if empty {
            self.exit.signal();
        }
    }
}

/// The network namespace whose interfaces the VM of sandbox `id` gets:
/// the pod's, which CNI set up (a namespace file). A spec without a network
/// namespace asks for the host's stack (`hostNetwork`), which a VM cannot
/// share: refused.
fn pod_network(id: &str, spec: &Spec) -> Result<Option<PathBuf>> {
    match guest_spec::network_request(spec) {
        NetworkRequest::Host => Err(ShimError::InvalidArgument(format!(
            "sandbox {id} asks for the host's network (hostNetwork: true, or \
             --net-host): a microVM has its own network stack and cannot share the \
             host's; run it with runc, or give it a pod network"
        ))),
        NetworkRequest::Pod(path) => Ok(Some(path)),
        NetworkRequest::Process(_) | NetworkRequest::Own => Ok(None),
    }
}

fn read_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let bad = |problem: String| ShimError::Bundle {
        bundle: bundle.display().to_string(),
        problem,
    };
    let bytes = std::fs::read(&path).map_err(|e| bad(format!("cannot read config.json: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("config.json: {e}")))
}

fn delete_response(pid: u32, exit: Exit) -> api::DeleteResponse {
    api::DeleteResponse {
        pid,
        exit_status: exit.status,
        exited_at: MessageField::some(timestamp(exit.at)),
        ..Default::default()
    }
}
