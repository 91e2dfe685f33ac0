//! Giving a sandbox's guest the pod's network (`ConfigureNetwork`).

use super::{AgentClient, ClientError};
pub use crate::proto::{ConfigureNetworkRequest, IpNetwork, NetworkInterface, NetworkRoute};

impl AgentClient {
    /// Configures the guest's interfaces and routes as `request` says (see
    /// the API's `ConfigureNetwork`).
    pub async fn configure_network(
        &self,
        request: ConfigureNetworkRequest,
    ) -> Result<(), ClientError> {
        self.within_setup(
            "configure network",
            self.guest_client().configure_network(request),
        )
        .await
        .map_err(ClientError::rpc("configure network"))?;
        Ok(())
    }
}
