//! The pod's network in the guest (`Guest.ConfigureNetwork`).
//!
//! The host runs the pod's CNI plugins in a network namespace of its own and
//! gives the VM one virtio-net device per CNI interface; this module gives
//! the guest's links what those interfaces have on the host (name, MAC,
//! MTU, addresses) and adds the pod's routes, in the agent's network
//! namespace, which every container of the pod shares. So a container sees
//! the network a runc container of the same pod would.
//!
//! The device-order contract: interface `i` of the request configures the
//! guest's `i`-th virtio-net link by interface index, which is the order the
//! kernel probed the VM's devices in, which is the VMM's device order
//! ([`links`]). Names and MACs cannot be matched: a guest restored from a
//! snapshot has those of the template boot.
//!
//! Three steps, one file each: [`plan`] checks the request and types it
//! (nothing touched yet), [`links`] finds the guest's virtio-net links,
//! [`apply`] carries the plan out over netlink on the links it is given, so
//! the tests can hand it veth links in a namespace of their own.

pub mod apply;
pub mod links;
pub mod plan;

#[cfg(test)]
mod apply_tests;

use std::io;
use std::path::Path;

pub use apply::{apply, ApplyError, NetlinkCause};
pub use links::{virtio_net_links, GuestLink, LinksError, SYS_CLASS_NET};
pub use plan::{NetworkPlan, PlanError};

use crate::proto::ConfigureNetworkRequest;

/// There only if the kernel has IPv6 (ours is built without it).
const PROC_IPV6: &str = "/proc/sys/net/ipv6";

/// Why `ConfigureNetwork` failed; `server::error` decides the codes.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Links(#[from] LinksError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("cannot open a netlink socket: {0}")]
    Netlink(#[source] io::Error),
}

/// `ConfigureNetwork` in the guest: checks `request`, then configures the
/// guest's virtio-net links and routes as it says.
pub async fn configure(request: &ConfigureNetworkRequest) -> Result<(), NetworkError> {
    // Checked before anything else, to report a bad request as such.
    let plan = NetworkPlan::from_request(request)?;
    let links = virtio_net_links(Path::new(SYS_CLASS_NET))?;
    let ipv6 = Path::new(PROC_IPV6).exists();
    tracing::debug!(?links, ipv6, "guest network devices");
    apply_plan(&plan, &links, ipv6).await
}

/// `ConfigureNetwork` on the given links (interface `i` of `request` takes
/// `links[i]`) in the calling thread's network namespace; `ipv6`: whether
/// the kernel has IPv6.
pub async fn configure_links(
    request: &ConfigureNetworkRequest,
    links: &[GuestLink],
    ipv6: bool,
) -> Result<(), NetworkError> {
    let plan = NetworkPlan::from_request(request)?;
    apply_plan(&plan, links, ipv6).await
}

async fn apply_plan(
    plan: &NetworkPlan,
    links: &[GuestLink],
    ipv6: bool,
) -> Result<(), NetworkError> {
    // Fail before opening a socket when the guest cannot do it anyway.
    apply::check_preconditions(plan, links, ipv6)?;
    // The socket is bound to the namespace of the thread that opens it:
    // this one's (tokio's workers share the agent's).
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Netlink)?;
    let connection = tokio::spawn(connection);
    let applied = apply(&handle, plan, links, ipv6).await;
    connection.abort();
    Ok(applied?)
}
