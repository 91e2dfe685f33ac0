//! The `Storage` and `Container` services, typed. Container processes are
//! driven through the process methods ([`AgentClient::read_stdout`],
//! [`AgentClient::wait`], ...) with the exec ids returned here.

use bytes::Bytes;

use super::agent_client::{AgentClient, ExecId, ProcessExit, StartedProcess};
use super::error::ClientError;
use crate::proto::{
    container_state_response, ContainerStateRequest, ContainerStatsRequest, ContainerStatsResponse,
    ContainerStatus, CreateContainerRequest, ExecInContainerRequest, KillContainerRequest,
    MountStorageRequest, PauseContainerRequest, PtySize, RemoveContainerRequest,
    ResumeContainerRequest, StartContainerRequest, UnmountStorageRequest, UpdateContainerRequest,
};

/// What `ContainerState` says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub status: ContainerStatus,
    /// The init process's pid in the guest.
    pub pid: u32,
    /// The init process, for `Process` calls.
    pub init: ExecId,
    /// How the init process ended, once stopped.
    pub exit: Option<ProcessExit>,
    /// The OOM killer killed a process of the container.
    pub oom_killed: bool,
}

impl AgentClient {
    /// Mounts storage (takes a [`StorageMount`](super::StorageMount)).
    pub async fn mount_storage(
        &self,
        mount: impl Into<MountStorageRequest>,
    ) -> Result<(), ClientError> {
        self.within_setup(
            "mount storage",
            self.storage.clone().mount_storage(mount.into()),
        )
        .await
        .map_err(ClientError::rpc("mount storage"))?;
        Ok(())
    }

    pub async fn unmount_storage(&self, mount_point: &str) -> Result<(), ClientError> {
        self.within_setup(
            "unmount storage",
            self.storage.clone().unmount_storage(UnmountStorageRequest {
                mount_point: mount_point.to_owned(),
            }),
        )
        .await
        .map_err(ClientError::rpc("unmount storage"))?;
        Ok(())
    }

    /// Creates a container (takes a
    /// [`ContainerCreate`](super::ContainerCreate)); returns its init
    /// process, which runs once [`start_container`](Self::start_container)
    /// is called. Its output is captured from the start.
    pub async fn create_container(
        &self,
        create: impl Into<CreateContainerRequest>,
    ) -> Result<StartedProcess, ClientError> {
        let answer = self
            .within_setup(
                "create container",
                self.container.clone().create_container(create.into()),
            )
            .await
            .map_err(ClientError::rpc("create container"))?
            .into_inner();
        Ok(StartedProcess {
            exec_id: ExecId::from(answer.exec_id),
            pid: answer.pid,
        })
    }

    pub async fn start_container(&self, id: &str) -> Result<(), ClientError> {
        self.within_setup(
            "start container",
            self.container
                .clone()
                .start_container(StartContainerRequest {
                    container_id: id.to_owned(),
                }),
        )
        .await
        .map_err(ClientError::rpc("start container"))?;
        Ok(())
    }

    /// Runs an OCI `process` (JSON) in the running container, on a terminal
    /// of `(rows, cols)` if given.
    pub async fn exec_in_container(
        &self,
        id: &str,
        process_json: impl Into<Bytes>,
        terminal: Option<(u16, u16)>,
    ) -> Result<StartedProcess, ClientError> {
        let answer = self
            .within_setup(
                "exec in container",
                self.container
                    .clone()
                    .exec_in_container(ExecInContainerRequest {
                        container_id: id.to_owned(),
                        process_json: process_json.into(),
                        terminal: terminal.is_some(),
                        pty_size: terminal.map(|(rows, cols)| PtySize {
                            rows: rows.into(),
                            cols: cols.into(),
                        }),
                    }),
            )
            .await
            .map_err(ClientError::rpc("exec in container"))?
            .into_inner();
        Ok(StartedProcess {
            exec_id: ExecId::from(answer.exec_id),
            pid: answer.pid,
        })
    }

    /// Signals the init process, or with `all` every process of the
    /// container.
    pub async fn kill_container(
        &self,
        id: &str,
        signal: i32,
        all: bool,
    ) -> Result<(), ClientError> {
        self.within(
            "kill container",
            self.container.clone().kill_container(KillContainerRequest {
                container_id: id.to_owned(),
                signal,
                all,
            }),
        )
        .await
        .map_err(ClientError::rpc("kill container"))?;
        Ok(())
    }

    /// Removes the container; `force` also kills a running one.
    pub async fn remove_container(&self, id: &str, force: bool) -> Result<(), ClientError> {
        self.within_setup(
            "remove container",
            self.container
                .clone()
                .remove_container(RemoveContainerRequest {
                    container_id: id.to_owned(),
                    force,
                }),
        )
        .await
        .map_err(ClientError::rpc("remove container"))?;
        Ok(())
    }

    pub async fn container_state(&self, id: &str) -> Result<ContainerState, ClientError> {
        let answer = self
            .within(
                "container state",
                self.container
                    .clone()
                    .container_state(ContainerStateRequest {
                        container_id: id.to_owned(),
                    }),
            )
            .await
            .map_err(ClientError::rpc("container state"))?
            .into_inner();
        let status = answer.status();
        Ok(ContainerState {
            id: answer.container_id,
            status,
            pid: answer.pid,
            init: ExecId::from(answer.exec_id),
            exit: answer.exit.map(|exit| match exit {
                container_state_response::Exit::ExitCode(code) => ProcessExit::Exited(code),
                container_state_response::Exit::Signal(signal) => ProcessExit::Signaled(signal),
            }),
            oom_killed: answer.oom_killed,
        })
    }

    pub async fn container_stats(&self, id: &str) -> Result<ContainerStatsResponse, ClientError> {
        Ok(self
            .within(
                "container stats",
                self.container
                    .clone()
                    .container_stats(ContainerStatsRequest {
                        container_id: id.to_owned(),
                    }),
            )
            .await
            .map_err(ClientError::rpc("container stats"))?
            .into_inner())
    }

    pub async fn pause_container(&self, id: &str) -> Result<(), ClientError> {
        self.within(
            "pause container",
            self.container
                .clone()
                .pause_container(PauseContainerRequest {
                    container_id: id.to_owned(),
                }),
        )
        .await
        .map_err(ClientError::rpc("pause container"))?;
        Ok(())
    }

    pub async fn resume_container(&self, id: &str) -> Result<(), ClientError> {
        self.within(
            "resume container",
            self.container
                .clone()
                .resume_container(ResumeContainerRequest {
                    container_id: id.to_owned(),
                }),
        )
        .await
        .map_err(ClientError::rpc("resume container"))?;
        Ok(())
    }

    /// Applies an OCI `linux.resources` object (JSON) to the container's
    /// cgroup.
    pub async fn update_container(
        &self,
        id: &str,
        resources_json: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        self.within(
            "update container",
            self.container
                .clone()
                .update_container(UpdateContainerRequest {
                    container_id: id.to_owned(),
                    resources_json: resources_json.into(),
                }),
        )
        .await
        .map_err(ClientError::rpc("update container"))?;
        Ok(())
    }
}
