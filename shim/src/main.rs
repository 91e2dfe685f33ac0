//! `containerd-shim-vmrun-v2`: containerd's runtime `io.containerd.vmrun.v2`.
//! Every pod (or `ctr run` container) gets its own microVM, run by a
//! `vmrun` VMM process; containers are created in it through the guest
//! agent.
//!
//! The shim owns the mapping of containerd's Task API onto sandboxes: which
//! container owns or joins a pod's VM, stdio FIFOs and log URIs, events,
//! metrics, and the one place errors become ttrpc codes (`error.rs`). The
//! VM's configuration, the guest spec, host mounts, the sandbox directory and
//! the VMM process are `vmrun-sandbox`'s; the shim must not keep copies of
//! them, nor link the VMM.

mod config;
mod container;
mod error;
mod events;
mod metrics;
mod options;
mod process;
mod service;
mod shim;
mod stdio;
mod task_api;

use containerd_shim::Config;

const RUNTIME_ID: &str = "io.containerd.vmrun.v2";

#[tokio::main]
async fn main() {
    // The log level comes from the default configuration file; a broken
    // file is reported when a sandbox is created.
    let log_level = config::ShimConfig::load(None)
        .map(|c| c.log_level)
        .unwrap_or_else(|_| "info".to_string());
    let config = Config {
        default_log_level: log_level,
        // The shim's only children are VMMs and loggers, which it waits
        // for itself (tokio); a catch-all reaper would steal their exits.
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<shim::VmrunShim>(RUNTIME_ID, Some(config)).await;
}
