//! vmrun's host-side sandbox layer: everything between a caller that wants a
//! container run in a microVM (the containerd shim, `vmrun run`) and the VMM
//! process that runs the VM.
//!
//! It owns, once for both callers: the OCI spec rewritten for the guest and
//! its one guest layout ([`guest_spec`], [`bundle`], [`layout`]), the host
//! mounts that put a container's files into the sandbox's one virtio-fs share
//! ([`host_mounts`]), the sandbox's runtime directory ([`sandbox_dir`]), and
//! launching, watching and stopping the VMM process with the guest console's
//! tail for reports ([`vmm_process`], [`console_log`]), and the pod's network
//! on the host ([`network`]); [`Sandbox`] puts them together with the agent
//! connection.
//!
//! It must not know containerd's or the CLI's types (they map their requests
//! onto these), nor link the VMM: it starts `vmrun-vmm --config FILE` with a
//! [`vm_config::VmConfig`] and talks to the guest only through the agent
//! client.

pub mod bundle;
pub mod console_log;
pub mod error;
pub mod guest_spec;
pub mod host_mounts;
pub mod layout;
pub mod mount_api;
pub mod mountinfo;
pub mod network;
pub mod sandbox;
pub mod sandbox_dir;
pub mod vmm_process;

pub use error::{Result, SandboxError};
pub use sandbox::{Sandbox, SandboxConfig};
pub use sandbox_dir::SandboxDir;
