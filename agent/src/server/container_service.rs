//! The `Container` service: turns requests into container manager calls.

use std::path::PathBuf;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::AgentError;
use super::exec_request::terminal_from_proto;
use crate::container::{
    CgroupStats, ContainerManager, ContainerReport, ContainerStatus, CreateRequest, ExecRequest,
};
use crate::process::ProcessExit;
use crate::proto::container_server::Container;
use crate::proto::{
    container_state_response, ContainerStateRequest, ContainerStateResponse, ContainerStatsRequest,
    ContainerStatsResponse, ContainerStatus as ProtoStatus, CreateContainerRequest,
    CreateContainerResponse, ExecInContainerRequest, ExecInContainerResponse, KillContainerRequest,
    KillContainerResponse, PauseContainerRequest, PauseContainerResponse, RemoveContainerRequest,
    RemoveContainerResponse, ResumeContainerRequest, ResumeContainerResponse,
    StartContainerRequest, StartContainerResponse, UpdateContainerRequest, UpdateContainerResponse,
};

/// Serves `Container` from the shared container manager.
#[derive(Debug, Clone)]
pub struct ContainerService {
    containers: Arc<ContainerManager>,
}

impl ContainerService {
    pub fn new(containers: Arc<ContainerManager>) -> Self {
        Self { containers }
    }
}

fn status_to_proto(status: ContainerStatus) -> ProtoStatus {
    match status {
        ContainerStatus::Creating => ProtoStatus::Creating,
        ContainerStatus::Created => ProtoStatus::Created,
        ContainerStatus::Running => ProtoStatus::Running,
        ContainerStatus::Paused => ProtoStatus::Paused,
        ContainerStatus::Stopped => ProtoStatus::Stopped,
    }
}

fn state_to_proto(report: ContainerReport) -> ContainerStateResponse {
    ContainerStateResponse {
        container_id: report.id,
        status: status_to_proto(report.status).into(),
        pid: report.pid,
        exec_id: report.exec_id,
        exit: report.exit.map(|exit| match exit {
            ProcessExit::Code(code) => container_state_response::Exit::ExitCode(code),
            ProcessExit::Signal(signal) => container_state_response::Exit::Signal(signal),
        }),
        oom_killed: report.oom_killed,
    }
}

fn stats_to_proto(stats: CgroupStats) -> ContainerStatsResponse {
    ContainerStatsResponse {
        memory_usage_bytes: stats.memory_usage_bytes,
        memory_limit_bytes: stats.memory_limit_bytes,
        cpu_usage_usec: stats.cpu_usage_usec,
        pids_current: stats.pids_current,
        pids_limit: stats.pids_limit,
        io_read_bytes: stats.io_read_bytes,
        io_write_bytes: stats.io_write_bytes,
        oom_kills: stats.oom_kills,
    }
}

#[tonic::async_trait]
impl Container for ContainerService {
    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let request = request.into_inner();
        let terminal = terminal_from_proto("create container", request.terminal, request.pty_size)?;
        let init = self
            .containers
            .create(CreateRequest {
                id: request.container_id,
                spec_json: request.spec_json,
                rootfs: PathBuf::from(request.rootfs),
                writable_overlay: request.writable_overlay,
                terminal,
            })
            .await
            .map_err(AgentError::from)?;
        Ok(Response::new(CreateContainerResponse {
            exec_id: init.exec_id().to_owned(),
            pid: init.pid().as_raw().unsigned_abs(),
        }))
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        self.containers.start(&id).await.map_err(AgentError::from)?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn exec_in_container(
        &self,
        request: Request<ExecInContainerRequest>,
    ) -> Result<Response<ExecInContainerResponse>, Status> {
        let request = request.into_inner();
        let terminal =
            terminal_from_proto("exec in container", request.terminal, request.pty_size)?;
        let process = self
            .containers
            .exec(ExecRequest {
                id: request.container_id,
                process_json: request.process_json,
                terminal,
            })
            .await
            .map_err(AgentError::from)?;
        Ok(Response::new(ExecInContainerResponse {
            exec_id: process.exec_id().to_owned(),
            pid: process.pid().as_raw().unsigned_abs(),
        }))
    }

    async fn kill_container(
        &self,
        request: Request<KillContainerRequest>,
    ) -> Result<Response<KillContainerResponse>, Status> {
        let request = request.into_inner();
        self.containers
            .kill(&request.container_id, request.signal, request.all)
            .await
            .map_err(AgentError::from)?;
        Ok(Response::new(KillContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        let request = request.into_inner();
        self.containers
            .remove(&request.container_id, request.force)
            .await
            .map_err(AgentError::from)?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn container_state(
        &self,
        request: Request<ContainerStateRequest>,
    ) -> Result<Response<ContainerStateResponse>, Status> {
        let id = request.into_inner().container_id;
        let report = self.containers.state(&id).await.map_err(AgentError::from)?;
        Ok(Response::new(state_to_proto(report)))
    }

    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let id = request.into_inner().container_id;
        let stats = self.containers.stats(&id).await.map_err(AgentError::from)?;
        Ok(Response::new(stats_to_proto(stats)))
    }

    async fn pause_container(
        &self,
        request: Request<PauseContainerRequest>,
    ) -> Result<Response<PauseContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        self.containers.pause(&id).await.map_err(AgentError::from)?;
        Ok(Response::new(PauseContainerResponse {}))
    }

    async fn resume_container(
        &self,
        request: Request<ResumeContainerRequest>,
    ) -> Result<Response<ResumeContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        self.containers
            .resume(&id)
            .await
            .map_err(AgentError::from)?;
        Ok(Response::new(ResumeContainerResponse {}))
    }

    async fn update_container(
        &self,
        request: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let request = request.into_inner();
        self.containers
            .update(&request.container_id, &request.resources_json)
            .await
            .map_err(AgentError::from)?;
        Ok(Response::new(UpdateContainerResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_state_carries_the_exit() {
        let response = state_to_proto(ContainerReport {
            id: "web".into(),
            status: ContainerStatus::Stopped,
            pid: 42,
            exec_id: "exec-1".into(),
            exit: Some(ProcessExit::Signal(9)),
            oom_killed: true,
        });
        assert_eq!(response.status(), ProtoStatus::Stopped);
        assert_eq!(
            response.exit,
            Some(container_state_response::Exit::Signal(9))
        );
        assert!(response.oom_killed);
    }
}
