//! The ttrpc Task service: each RPC logs and delegates to `TaskService`;
//! `?` turns our errors into ttrpc statuses (see `error.rs`).

use async_trait::async_trait;
use containerd_shim::api::{self, Empty};
use containerd_shim::{Task, TtrpcContext, TtrpcResult};

use crate::error::ShimError;
use crate::service::TaskService;

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        tracing::info!(container = req.id, bundle = req.bundle, "create");
        Ok(TaskService::create(self, req).await?)
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        tracing::info!(container = req.id, exec = req.exec_id, "start");
        Ok(TaskService::start(self, req).await?)
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        tracing::info!(container = req.id, exec = req.exec_id, "delete");
        Ok(TaskService::delete(self, req).await?)
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        tracing::info!(container = req.id, exec = req.exec_id, "exec");
        TaskService::exec(self, req).await?;
        Ok(Empty::new())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        tracing::info!(
            container = req.id,
            exec = req.exec_id,
            signal = req.signal,
            "kill"
        );
        TaskService::kill(self, req).await?;
        Ok(Empty::new())
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        Ok(TaskService::state(self, req).await?)
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        tracing::debug!(container = req.id, exec = req.exec_id, "wait");
        Ok(TaskService::wait(self, req).await?)
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        Ok(TaskService::pids(self, req).await?)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        tracing::info!(container = req.id, "pause");
        TaskService::pause(self, req).await?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        tracing::info!(container = req.id, "resume");
        TaskService::resume(self, req).await?;
        Ok(Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        Err(ShimError::Unsupported("checkpoint").into())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        Ok(TaskService::stats(self, req).await?)
    }

    async fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        TaskService::update(self, req).await?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        tracing::debug!(container = req.id, exec = req.exec_id, "close io");
        TaskService::close_io(self, req).await?;
        Ok(Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<Empty> {
        TaskService::resize_pty(self, req).await?;
        Ok(Empty::new())
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(TaskService::connect(self))
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<Empty> {
        TaskService::shutdown(self);
        Ok(Empty::new())
    }
}
