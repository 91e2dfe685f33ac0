//! The pod's network in the guest (`Guest.ConfigureNetwork`).

pub mod plan;

pub use plan::{NetworkPlan, PlanError};
