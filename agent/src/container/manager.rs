//! The containers of the guest: turns `Container` requests into engine
//! calls, keeps the table, wires the processes into the `Process` service,
//! and undoes a failed creation completely.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use nix::sys::signal::Signal;

use super::cgroup_files::{oom_kills, CgroupStats};
use super::config::ContainerConfig;
use super::engine::ContainerEngine;
use super::error::ContainerError;
use super::exec_process::prepare_exec_process;
use super::layout::{BundleLayout, StateLayout};
use super::overlay::{mount_overlay, unmount_overlay};
use super::process_stdio::prepare_stdio;
use super::resources::parse_resources;
use super::spec::{prepare_spec, validate_container_id, PreparedSpec, SpecOptions};
use super::status::{ContainerReport, ContainerStatus};
use super::table::{ContainerRecord, ContainerTable, Lookup};
use crate::mount_syscalls::MountSyscalls;
use crate::process::{reaper, ManagedProcess, ProcessTable, SpawnedProcess, TerminalSize};

/// `CreateContainer`, checked for form by the service.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub id: String,
    pub spec_json: Bytes,
    pub rootfs: PathBuf,
    pub writable_overlay: bool,
    pub terminal: Option<TerminalSize>,
}

/// `ExecInContainer`, checked for form by the service.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub id: String,
    pub process_json: Bytes,
    pub terminal: Option<TerminalSize>,
}

/// The guest's containers.
#[derive(Debug)]
pub struct ContainerManager {
    shared: Arc<Shared>,
    processes: Arc<ProcessTable>,
    table: ContainerTable,
}

/// What blocking work needs.
#[derive(Debug)]
struct Shared {
    config: ContainerConfig,
    layout: StateLayout,
    engine: Arc<dyn ContainerEngine>,
    mounts: Arc<dyn MountSyscalls>,
    serial: AtomicU64,
}

impl ContainerManager {
    pub fn new(
        config: ContainerConfig,
        engine: Arc<dyn ContainerEngine>,
        mounts: Arc<dyn MountSyscalls>,
        processes: Arc<ProcessTable>,
    ) -> Self {
        let layout = StateLayout::new(&config.state_root);
        Self {
            shared: Arc::new(Shared {
                config,
                layout,
                engine,
                mounts,
                serial: AtomicU64::new(0),
            }),
            processes,
            table: ContainerTable::default(),
        }
    }

    /// Creates the container; its init process is in the process table.
    pub async fn create(
        &self,
        request: CreateRequest,
    ) -> Result<Arc<ManagedProcess>, ContainerError> {
        const OP: &str = "create container";
        validate_container_id(OP, &request.id)?;
        let reservation = self.table.reserve(&request.id)?;
        let id = request.id.clone();
        let bundle = self.shared.layout.bundle(&id);
        let overlay_root = bundle.overlay_rootfs();
        let prepared = prepare_spec(
            &request.spec_json,
            &SpecOptions {
                id: &id,
                rootfs: &request.rootfs,
                root_override: request.writable_overlay.then_some(overlay_root.as_path()),
                cgroup_parent: &self.shared.config.cgroup_parent,
                terminal: request.terminal,
            },
        )?;
        reservation.claim_cgroup(&prepared.cgroup_path)?;
        let cgroup_path = prepared.cgroup_path.clone();

        let shared = Arc::clone(&self.shared);
        let (setup_id, setup_bundle) = (id.clone(), bundle.clone());
        let setup = blocking(OP, &id, move || {
            shared.set_up(
                &setup_id,
                &setup_bundle,
                prepared,
                request.writable_overlay,
                request.terminal,
            )
        })
        .await;
        let (spawned, oom_kills_at_create) = match setup {
            Ok(created) => created,
            Err(error) => {
                self.clean_up(&id, &bundle, &cgroup_path).await;
                return Err(error);
            }
        };
        let pid = spawned.pid;
        let init = match self.processes.insert(spawned) {
            Ok(init) => init,
            Err(error) => {
                self.clean_up(&id, &bundle, &cgroup_path).await;
                return Err(ContainerError::Runtime {
                    op: OP,
                    id,
                    message: format!("cannot track init process {pid}: {error}"),
                });
            }
        };
        tracing::info!(id, %pid, exec_id = init.exec_id(), "container created");
        reservation.commit(Arc::new(ContainerRecord::new(
            id,
            bundle,
            cgroup_path,
            Arc::clone(&init),
            oom_kills_at_create,
        )));
        Ok(init)
    }

    /// Lets the container's init process run its program.
    pub async fn start(&self, id: &str) -> Result<(), ContainerError> {
        const OP: &str = "start container";
        let record = self.table.get_ready(OP, id)?;
        let _ops = record.lock().await?;
        self.require(OP, &record, &[ContainerStatus::Created], "")
            .await?;
        let shared = Arc::clone(&self.shared);
        let owned_id = id.to_owned();
        blocking(OP, id, move || shared.engine.start(&owned_id)).await
    }

    /// Starts a process in the running container.
    pub async fn exec(&self, request: ExecRequest) -> Result<Arc<ManagedProcess>, ContainerError> {
        const OP: &str = "exec in container";
        validate_container_id(OP, &request.id)?;
        let process = prepare_exec_process(&request.process_json, request.terminal)?;
        let record = self.table.get_ready(OP, &request.id)?;
        let _ops = record.lock().await?;
        self.require(
            OP,
            &record,
            &[ContainerStatus::Running],
            "; only running containers take execs",
        )
        .await?;

        let shared = Arc::clone(&self.shared);
        let (id, bundle) = (request.id.clone(), record.bundle.clone());
        let terminal = request.terminal;
        let spawned = blocking(OP, &request.id, move || {
            shared.exec(&id, &bundle, &process, terminal)
        })
        .await?;
        let pid = spawned.pid;
        self.processes.insert(spawned).map_err(|error| {
            kill_untracked(pid);
            ContainerError::Runtime {
                op: OP,
                id: request.id.clone(),
                message: format!("cannot track process {pid}: {error}"),
            }
        })
    }

    /// Signals the init process, or every process of the container.
    pub async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), ContainerError> {
        const OP: &str = "kill container";
        let parsed = Signal::try_from(signal)
            .map_err(|_| ContainerError::invalid(OP, format!("{signal} is not a signal number")))?;
        let record = self.table.get_ready(OP, id)?;
        if !all {
            // The reaper refuses pids it reaped: a stopped init is a no-op.
            return reaper::signal_if_alive(record.init.pid(), parsed)
                .await
                .map(drop)
                .map_err(|errno| ContainerError::Runtime {
                    op: OP,
                    id: id.to_owned(),
                    message: format!("cannot signal the init process: {errno}"),
                });
        }
        let _ops = record.lock().await?;
        let shared = Arc::clone(&self.shared);
        let owned_id = id.to_owned();
        blocking(OP, id, move || shared.engine.kill_all(&owned_id, signal)).await
    }

    /// Removes the container and everything that was set up for it.
    pub async fn remove(&self, id: &str, force: bool) -> Result<(), ContainerError> {
        const OP: &str = "remove container";
        let record = self.table.get_ready(OP, id)?;
        let mut ops = record.lock().await?;
        if !force {
            self.require(
                OP,
                &record,
                &[ContainerStatus::Created, ContainerStatus::Stopped],
                "; kill it first or remove with force",
            )
            .await?;
        }
        let shared = Arc::clone(&self.shared);
        let (owned_id, bundle, cgroup) = (
            id.to_owned(),
            record.bundle.clone(),
            record.cgroup_path.clone(),
        );
        blocking(OP, id, move || {
            shared.tear_down(&owned_id, &bundle, &cgroup)
        })
        .await?;
        ops.mark_removed();
        self.table.remove(id);
        tracing::info!(id, "container removed");
        Ok(())
    }

    pub async fn state(&self, id: &str) -> Result<ContainerReport, ContainerError> {
        let record = match self.table.get(id)? {
            Lookup::Creating => {
                return Ok(ContainerReport {
                    id: id.to_owned(),
                    status: ContainerStatus::Creating,
                    pid: 0,
                    exec_id: String::new(),
                    exit: None,
                    oom_killed: false,
                })
            }
            Lookup::Ready(record) => record,
        };
        let status = self.current_status(&record).await?;
        let cgroup_dir = self.cgroup_dir(&record.cgroup_path);
        let oom_now = blocking("container state", id, move || {
            Ok(oom_kills(&cgroup_dir).ok().flatten().unwrap_or(0))
        })
        .await?;
        Ok(ContainerReport {
            id: id.to_owned(),
            status,
            pid: record.init.pid().as_raw().unsigned_abs(),
            exec_id: record.init.exec_id().to_owned(),
            exit: record.init.exit_if_reaped(),
            oom_killed: oom_now > record.oom_kills_at_create,
        })
    }

    pub async fn stats(&self, id: &str) -> Result<CgroupStats, ContainerError> {
        const OP: &str = "container stats";
        let record = self.table.get_ready(OP, id)?;
        let cgroup_dir = self.cgroup_dir(&record.cgroup_path);
        let owned_id = id.to_owned();
        blocking(OP, id, move || {
            CgroupStats::read(&cgroup_dir).map_err(|error| ContainerError::Runtime {
                op: OP,
                id: owned_id,
                message: error.to_string(),
            })
        })
        .await
    }

    pub async fn pause(&self, id: &str) -> Result<(), ContainerError> {
        const OP: &str = "pause container";
        let record = self.table.get_ready(OP, id)?;
        let _ops = record.lock().await?;
        self.require(OP, &record, &[ContainerStatus::Running], "")
            .await?;
        let shared = Arc::clone(&self.shared);
        let owned_id = id.to_owned();
        blocking(OP, id, move || shared.engine.pause(&owned_id)).await
    }

    pub async fn resume(&self, id: &str) -> Result<(), ContainerError> {
        const OP: &str = "resume container";
        let record = self.table.get_ready(OP, id)?;
        let _ops = record.lock().await?;
        self.require(OP, &record, &[ContainerStatus::Paused], "")
            .await?;
        let shared = Arc::clone(&self.shared);
        let owned_id = id.to_owned();
        blocking(OP, id, move || shared.engine.resume(&owned_id)).await
    }

    /// Applies new cgroup limits (OCI `linux.resources` JSON).
    pub async fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), ContainerError> {
        const OP: &str = "update container";
        let resources = parse_resources(resources_json)?;
        let record = self.table.get_ready(OP, id)?;
        let _ops = record.lock().await?;
        let shared = Arc::clone(&self.shared);
        let (owned_id, cgroup) = (id.to_owned(), record.cgroup_path.clone());
        blocking(OP, id, move || {
            shared.engine.update(&owned_id, &cgroup, &resources)
        })
        .await
    }

    /// The status, with the agent's knowledge of the init's exit first.
    async fn current_status(
        &self,
        record: &ContainerRecord,
    ) -> Result<ContainerStatus, ContainerError> {
        if let Some(exit) = record.init.exit_if_reaped() {
            return Ok(ContainerStatus::reconcile(
                ContainerStatus::Stopped,
                Some(exit),
            ));
        }
        let shared = Arc::clone(&self.shared);
        let id = record.id.clone();
        let engine_status = blocking("container state", &record.id, move || {
            shared.engine.status(&id)
        })
        .await?;
        Ok(ContainerStatus::reconcile(
            engine_status,
            record.init.exit_if_reaped(),
        ))
    }

    async fn require(
        &self,
        op: &'static str,
        record: &ContainerRecord,
        allowed: &[ContainerStatus],
        hint: &'static str,
    ) -> Result<(), ContainerError> {
        let status = self.current_status(record).await?;
        if allowed.contains(&status) {
            return Ok(());
        }
        Err(ContainerError::WrongState {
            op,
            id: record.id.clone(),
            status,
            hint,
        })
    }

    fn cgroup_dir(&self, cgroup_path: &str) -> PathBuf {
        self.shared
            .config
            .cgroup_root
            .join(cgroup_path.trim_start_matches('/'))
    }

    /// Undoes a failed creation; failures are logged, the caller reports
    /// the creation's own error.
    async fn clean_up(&self, id: &str, bundle: &BundleLayout, cgroup_path: &str) {
        let shared = Arc::clone(&self.shared);
        let (owned_id, bundle, cgroup) = (id.to_owned(), bundle.clone(), cgroup_path.to_owned());
        let cleaned = blocking("create container", id, move || {
            shared.tear_down(&owned_id, &bundle, &cgroup)
        })
        .await;
        if let Err(error) = cleaned {
            tracing::warn!(id, %error, "cleaning up after a failed create");
        }
    }
}

impl Shared {
    /// Bundle, overlay, stdio and the container itself. Blocking.
    fn set_up(
        &self,
        id: &str,
        bundle: &BundleLayout,
        prepared: PreparedSpec,
        writable_overlay: bool,
        terminal: Option<TerminalSize>,
    ) -> Result<(SpawnedProcess, u64), ContainerError> {
        const OP: &str = "create container";
        if !prepared.rootfs.is_dir() {
            return Err(ContainerError::invalid(
                OP,
                format!(
                    "rootfs {:?} is not a directory (is its storage mounted?)",
                    prepared.rootfs.display().to_string()
                ),
            ));
        }
        for dir in [
            bundle.dir().to_owned(),
            self.layout.libcontainer_root(),
            self.layout.consoles(),
        ] {
            std::fs::create_dir_all(&dir).map_err(ContainerError::io(
                OP,
                id,
                "cannot create",
                &dir,
            ))?;
        }
        let config = bundle.config();
        let json = serde_json::to_vec(&prepared.spec).map_err(|error| ContainerError::Runtime {
            op: OP,
            id: id.to_owned(),
            message: format!("cannot serialize the spec: {error}"),
        })?;
        std::fs::write(&config, json).map_err(ContainerError::io(
            OP,
            id,
            "cannot write",
            &config,
        ))?;
        if writable_overlay {
            mount_overlay(self.mounts.as_ref(), id, bundle, &prepared.rootfs)?;
        }

        let console = self.layout.console_socket(self.next_serial());
        let (pending, engine_stdio) = prepare_stdio(terminal, console.clone()).map_err(
            ContainerError::io(OP, id, "cannot set up stdio at", &console),
        )?;
        let process = self.engine.create(id, bundle.dir(), engine_stdio)?;
        let stdio =
            pending
                .finish()
                .map_err(ContainerError::io(OP, id, "no terminal on", &console))?;
        let cgroup_dir = self
            .config
            .cgroup_root
            .join(prepared.cgroup_path.trim_start_matches('/'));
        let oom_kills_at_create = oom_kills(&cgroup_dir).ok().flatten().unwrap_or(0);
        Ok((
            SpawnedProcess {
                pid: process.pid,
                stdio,
                exit: process.exit,
            },
            oom_kills_at_create,
        ))
    }

    /// One process in the container. Blocking.
    fn exec(
        &self,
        id: &str,
        bundle: &BundleLayout,
        process: &oci_spec::runtime::Process,
        terminal: Option<TerminalSize>,
    ) -> Result<SpawnedProcess, ContainerError> {
        const OP: &str = "exec in container";
        let serial = self.next_serial();
        let process_file = bundle.exec_process(serial);
        let json = serde_json::to_vec(process).map_err(|error| ContainerError::Runtime {
            op: OP,
            id: id.to_owned(),
            message: format!("cannot serialize the process: {error}"),
        })?;
        std::fs::write(&process_file, json).map_err(ContainerError::io(
            OP,
            id,
            "cannot write",
            &process_file,
        ))?;
        let console = self.layout.console_socket(serial);
        let started = prepare_stdio(terminal, console.clone())
            .map_err(ContainerError::io(
                OP,
                id,
                "cannot set up stdio at",
                &console,
            ))
            .and_then(|(pending, engine_stdio)| {
                let process = self.engine.exec(id, &process_file, engine_stdio)?;
                Ok((pending, process))
            });
        remove_file_quietly(&process_file);
        let (pending, process) = started?;
        match pending.finish() {
            Ok(stdio) => Ok(SpawnedProcess {
                pid: process.pid,
                stdio,
                exit: process.exit,
            }),
            Err(error) => {
                kill_untracked(process.pid);
                Err(ContainerError::io(OP, id, "no terminal on", &console)(
                    error,
                ))
            }
        }
    }

    /// Processes, cgroup, libcontainer state, overlay, bundle. Blocking.
    fn tear_down(
        &self,
        id: &str,
        bundle: &BundleLayout,
        cgroup_path: &str,
    ) -> Result<(), ContainerError> {
        self.engine.delete(id, cgroup_path)?;
        unmount_overlay(self.mounts.as_ref(), id, bundle)?;
        match std::fs::remove_dir_all(bundle.dir()) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(ContainerError::io(
                "remove container",
                id,
                "cannot remove",
                bundle.dir(),
            )(error)),
        }
    }

    fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Runs blocking work off the async runtime.
async fn blocking<T, F>(op: &'static str, id: &str, work: F) -> Result<T, ContainerError>
where
    F: FnOnce() -> Result<T, ContainerError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join_error| ContainerError::Runtime {
            op,
            id: id.to_owned(),
            message: format!("worker thread failed: {join_error}"),
        })?
}

/// Kills a container process nobody can serve. Its pid is registered with
/// the reaper until reaped, so it cannot have been reused.
fn kill_untracked(pid: nix::unistd::Pid) {
    if let Err(errno) = nix::sys::signal::kill(pid, Signal::SIGKILL) {
        tracing::warn!(%pid, %errno, "cannot kill untracked container process");
    }
}

fn remove_file_quietly(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        tracing::debug!(%error, path = %path.display(), "not removed");
    }
}
