//! vmrun's virtual machine monitor.
//!
//! Boots a Linux guest directly (no firmware) on KVM: guest memory, vCPUs in
//! threads, an MP table, the PVH or 64-bit Linux boot protocol, a 16550 serial
//! console and an i8042 whose reset line ends the VM; wires the virtio-mmio
//! devices of `virtio-devices`; picks the host's compatibility profile; saves
//! and restores whole VMs ([`snapshot`]).
//!
//! It is a library of the VM alone, built from a [`VmConfig`]: it must not
//! parse command lines, run an async runtime, read OCI specs or talk to the
//! guest agent (that is the `vmrun` CLI's and the `vmrun-sandbox` layer's).

pub mod boot;
pub mod compat;
pub mod console;
pub mod cpu;
pub mod devices;
pub mod jail;
pub mod memory;
pub mod seccomp;
pub mod snapshot;
pub mod vm;

/// The VM configuration (its own crate, shared with the host-side layers).
pub use vm_config as config;

pub use config::VmConfig;
pub use vm::{Vm, VmError, VmEvent, VmExit};
