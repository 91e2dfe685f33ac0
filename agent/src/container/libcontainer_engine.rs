//! The real engine: youki's libcontainer with the cgroup v2 manager.
//! Creation and exec go through the container helper (they fork); the
//! rest runs here on libcontainer's state files and the cgroup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager, ControllerOpt};
use libcontainer::container::{Container, ContainerStatus as LibcontainerStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::signal::Signal;
use oci_spec::runtime::LinuxResources;

use super::engine::{ContainerEngine, EngineProcess, EngineStdio};
use super::error::{error_chain, ContainerError};
use super::helper::{HelperClient, HelperOp, HelperRequest};
use super::layout::StateLayout;
use super::status::ContainerStatus;

/// libcontainer on this machine.
#[derive(Debug)]
pub struct LibcontainerEngine {
    layout: StateLayout,
    helper: HelperClient,
}

impl LibcontainerEngine {
    pub fn new(layout: StateLayout, helper_program: PathBuf, helper_timeout: Duration) -> Self {
        Self {
            layout,
            helper: HelperClient::new(helper_program, helper_timeout),
        }
    }

    /// Starts the helper ahead of the first container. Blocking.
    pub fn prestart_helper(&self) {
        if let Err(reason) = self.helper.prestart() {
            tracing::warn!(%reason, "cannot start the container helper yet");
        }
    }

    fn run_in_helper(
        &self,
        op: &'static str,
        id: &str,
        helper_op: HelperOp,
        stdio: EngineStdio,
    ) -> Result<EngineProcess, ContainerError> {
        let (console_socket, pipes) = match stdio {
            EngineStdio::Pipes(pipes) => (None, Some(pipes)),
            EngineStdio::Terminal { console_socket } => (Some(console_socket), None),
        };
        let request = HelperRequest {
            container_id: id.to_owned(),
            state_root: self.layout.libcontainer_root(),
            op: helper_op,
            console_socket,
            pipes: pipes.is_some(),
        };
        let started = self.helper.run(op, &request, pipes)?;
        Ok(EngineProcess {
            pid: started.pid,
            exit: started.exit,
        })
    }

    fn load(&self, op: &'static str, id: &str) -> Result<Container, ContainerError> {
        let state = self.layout.libcontainer_state(id);
        if !state.exists() {
            return Err(ContainerError::NotFound { id: id.to_owned() });
        }
        Container::load(state).map_err(|error| failure(op, id, error))
    }
}

impl ContainerEngine for LibcontainerEngine {
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: EngineStdio,
    ) -> Result<EngineProcess, ContainerError> {
        let op = HelperOp::Create {
            bundle: bundle.to_owned(),
        };
        self.run_in_helper("create container", id, op, stdio)
    }

    fn exec(
        &self,
        id: &str,
        process_file: &Path,
        stdio: EngineStdio,
    ) -> Result<EngineProcess, ContainerError> {
        let op = HelperOp::Exec {
            process: process_file.to_owned(),
        };
        self.run_in_helper("exec in container", id, op, stdio)
    }

    fn start(&self, id: &str) -> Result<(), ContainerError> {
        const OP: &str = "start container";
        self.load(OP, id)?
            .start()
            .map_err(|error| failure(OP, id, error))
    }

    fn status(&self, id: &str) -> Result<ContainerStatus, ContainerError> {
        Ok(status_of(self.load("container state", id)?.status()))
    }

    fn kill_all(&self, id: &str, signal: i32) -> Result<(), ContainerError> {
        const OP: &str = "kill container";
        let signal = Signal::try_from(signal)
            .map_err(|error| ContainerError::invalid(OP, error.to_string()))?;
        self.load(OP, id)?
            .kill(signal, true)
            .map_err(|error| failure(OP, id, error))
    }

    fn pause(&self, id: &str) -> Result<(), ContainerError> {
        const OP: &str = "pause container";
        self.load(OP, id)?
            .pause()
            .map_err(|error| failure(OP, id, error))
    }

    fn resume(&self, id: &str) -> Result<(), ContainerError> {
        const OP: &str = "resume container";
        self.load(OP, id)?
            .resume()
            .map_err(|error| failure(OP, id, error))
    }

    fn update(
        &self,
        id: &str,
        cgroup_path: &str,
        resources: &LinuxResources,
    ) -> Result<(), ContainerError> {
        const OP: &str = "update container";
        let runtime = |message: String| ContainerError::Runtime {
            op: OP,
            id: id.to_owned(),
            message,
        };
        let manager = create_cgroup_manager(cgroup_config(id, cgroup_path))
            .map_err(|error| runtime(error_chain(&error)))?;
        manager
            .apply(&ControllerOpt {
                resources,
                freezer_state: None,
                oom_score_adj: None,
                disable_oom_killer: false,
            })
            .map_err(|error| runtime(format!("cgroup {cgroup_path}: {}", error_chain(&error))))
    }

    fn delete(&self, id: &str, cgroup_path: &str) -> Result<(), ContainerError> {
        const OP: &str = "remove container";
        if self.layout.libcontainer_state(id).exists() {
            self.load(OP, id)?
                .delete(true)
                .map_err(|error| failure(OP, id, error))?;
        }
        // Left over when creation failed half-way; kills what is in it.
        let manager = create_cgroup_manager(cgroup_config(id, cgroup_path)).map_err(|error| {
            ContainerError::Runtime {
                op: OP,
                id: id.to_owned(),
                message: error_chain(&error),
            }
        })?;
        manager.remove().map_err(|error| ContainerError::Runtime {
            op: OP,
            id: id.to_owned(),
            message: format!(
                "cannot remove cgroup {cgroup_path}: {}",
                error_chain(&error)
            ),
        })
    }
}

fn cgroup_config(id: &str, cgroup_path: &str) -> CgroupConfig {
    CgroupConfig {
        cgroup_path: PathBuf::from(cgroup_path),
        systemd_cgroup: false,
        container_name: id.to_owned(),
    }
}

fn status_of(status: LibcontainerStatus) -> ContainerStatus {
    match status {
        LibcontainerStatus::Creating => ContainerStatus::Creating,
        LibcontainerStatus::Created => ContainerStatus::Created,
        LibcontainerStatus::Running => ContainerStatus::Running,
        LibcontainerStatus::Paused => ContainerStatus::Paused,
        LibcontainerStatus::Stopped => ContainerStatus::Stopped,
    }
}

fn failure(op: &'static str, id: &str, error: LibcontainerError) -> ContainerError {
    match error {
        LibcontainerError::IncorrectStatus(status) => ContainerError::WrongState {
            op,
            id: id.to_owned(),
            status: status_of(status),
            hint: "",
        },
        LibcontainerError::NoDirectory => ContainerError::NotFound { id: id.to_owned() },
        other => ContainerError::Runtime {
            op,
            id: id.to_owned(),
            message: error_chain(&other),
        },
    }
}
