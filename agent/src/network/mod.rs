//! The pod's network in the guest (`Guest.ConfigureNetwork`).

pub mod links;
pub mod plan;

pub use links::{virtio_net_links, GuestLink, LinksError, SYS_CLASS_NET};
pub use plan::{NetworkPlan, PlanError};
