//! The `Storage` service: mounts on a blocking thread.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::AgentError;
use crate::proto::storage_server::Storage;
use crate::proto::{
    MountStorageRequest, MountStorageResponse, UnmountStorageRequest, UnmountStorageResponse,
};
use crate::storage::{MountSpec, StorageError, StorageManager};

#[derive(Debug, Clone)]
pub struct StorageService {
    storage: Arc<StorageManager>,
}

impl StorageService {
    pub fn new(storage: Arc<StorageManager>) -> Self {
        Self { storage }
    }

    async fn blocking(
        &self,
        op: &'static str,
        work: impl FnOnce(&StorageManager) -> Result<(), StorageError> + Send + 'static,
    ) -> Result<(), AgentError> {
        let storage = Arc::clone(&self.storage);
        tokio::task::spawn_blocking(move || work(&storage))
            .await
            .map_err(|join_error| AgentError::Internal {
                op,
                reason: format!("mount thread failed: {join_error}"),
            })?
            .map_err(AgentError::from)
    }
}

#[tonic::async_trait]
impl Storage for StorageService {
    async fn mount_storage(
        &self,
        request: Request<MountStorageRequest>,
    ) -> Result<Response<MountStorageResponse>, Status> {
        let spec = MountSpec::try_from(request.into_inner()).map_err(AgentError::from)?;
        self.blocking("mount storage", move |storage| storage.mount(spec))
            .await?;
        Ok(Response::new(MountStorageResponse {}))
    }

    async fn unmount_storage(
        &self,
        request: Request<UnmountStorageRequest>,
    ) -> Result<Response<UnmountStorageResponse>, Status> {
        let mount_point = request.into_inner().mount_point;
        self.blocking("unmount storage", move |storage| {
            storage.unmount(&mount_point)
        })
        .await?;
        Ok(Response::new(UnmountStorageResponse {}))
    }
}
