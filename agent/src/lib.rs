//! vmrun's guest agent.
//!
//! The agent is PID 1 of every microVM: it mounts the guest's pseudo file
//! systems ([`init`]), then serves the agent API ([`proto`]) over vsock
//! ([`server`]). The host side talks to it through [`client`], which dials the
//! VMM's hybrid vsock Unix socket.
//!
//! The processes it starts, and every orphan it reaps as PID 1, are the
//! process runtime's ([`process`]). `server` holds only the gRPC services
//! and the one error-to-status mapping; it uses `container`, `storage`,
//! `network` and `process`, and none of them uses it (server → container →
//! process).
//!
//! Features: `server` (the agent itself, on by default) and `client` (what the
//! shim and `vmrun run` link, with `default-features = false`).
//!
//! Containers ([`container`]) run with youki's libcontainer; the same binary
//! is also their single-threaded fork helper (`--container-helper`).
//! Storage the host shares (virtio-fs, block devices) is mounted by
//! [`storage`]; the pod's network (interfaces, addresses, routes) is set up
//! over netlink by [`network`].
//!
//! The guest binary is fully static (there is no musl target here), with
//! libseccomp linked in statically (Debian's `libseccomp-dev`); a static
//! agent linked against the shared libseccomp crashes:
//!
//! ```text
//! LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
//! RUSTFLAGS='-C target-feature=+crt-static' \
//!     cargo build --release -p vmrun-agent --features device-cgroup --target x86_64-unknown-linux-gnu
//! # -> target/x86_64-unknown-linux-gnu/release/vmrun-agent, the initramfs's /init
//! ```

pub mod proto;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod container;
#[cfg(feature = "server")]
#[doc(hidden)]
pub mod fuzz_hooks;
#[cfg(feature = "server")]
pub mod inherited_env;
#[cfg(feature = "server")]
pub mod init;
#[cfg(feature = "server")]
pub mod mount_syscalls;
#[cfg(feature = "server")]
pub mod network;
#[cfg(feature = "server")]
pub mod process;
#[cfg(feature = "server")]
pub mod sandbox_init;
#[cfg(all(test, feature = "server"))]
mod scratch_dir;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod storage;

pub use vm_config::guest::{share_slot_tag, AGENT_VSOCK_PORT, TEMPLATE_FLAG};

/// Version of the agent API; bumped on incompatible changes to the proto.
pub const API_VERSION: u32 = 1;

/// Version of this crate, reported by `Version` and `GuestDetails`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
