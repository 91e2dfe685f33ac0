//! The `Health` service: answers as soon as the agent serves, which is what
//! the host's dialer waits for.

use tonic::{Request, Response, Status};

use crate::proto::check_response::ServingStatus;
use crate::proto::health_server::Health;
use crate::proto::{CheckRequest, CheckResponse, VersionRequest, VersionResponse};
use crate::{AGENT_VERSION, API_VERSION};

#[derive(Debug, Clone, Default)]
pub struct HealthService;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: ServingStatus::Serving.into(),
        }))
    }

    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            agent_version: AGENT_VERSION.to_owned(),
            api_version: API_VERSION,
        }))
    }
}
