//! OCI containers in the guest, run by youki's libcontainer.
//!
//! The host shares a container's rootfs (virtio-fs, mounted through the
//! `Storage` service) and sends its `config.json`; [`ContainerManager`]
//! checks and rewrites the spec ([`spec`]), lays out a bundle below the
//! state root ([`layout`]), optionally puts a writable overlay over the
//! rootfs ([`overlay`]), and has the engine create the container. The
//! container's processes are ordinary processes of the process runtime
//! ([`crate::process`]): their stdio (pipes, or a terminal from a console
//! socket) and exits are served by exec id through the `Process` service.
//! This module does not know the gRPC side (`server`) that calls it.
//!
//! The engine is a trait ([`ContainerEngine`]); the real one
//! ([`LibcontainerEngine`]) forks containers in a single-threaded helper
//! process ([`helper`]), never in the multi-threaded agent.

mod cgroup_files;
pub mod cgroup_parent;
mod config;
mod console_socket;
mod engine;
mod error;
pub(crate) mod exec_process;
pub mod helper;
mod layout;
mod libcontainer_engine;
mod manager;
#[cfg(test)]
mod manager_tests;
mod overlay;
mod process_stdio;
pub(crate) mod resources;
pub(crate) mod spec;
mod status;
mod table;

pub use cgroup_files::{CgroupFileError, CgroupStats};
pub use config::{ContainerConfig, DEFAULT_CGROUP_PARENT, GUEST_CGROUP_ROOT, GUEST_STATE_ROOT};
pub use engine::{ContainerEngine, EngineProcess, EngineStdio};
pub use error::ContainerError;
pub use helper::{run_helper, HELPER_ARG};
pub use layout::{BundleLayout, StateLayout};
pub use libcontainer_engine::LibcontainerEngine;
pub(crate) use manager::{ContainerManager, CreateRequest, ExecRequest};
pub use spec::MAX_CONTAINER_ID_LEN;
pub use status::{ContainerReport, ContainerStatus};
