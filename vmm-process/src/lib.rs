//! The VMM process: one microVM run from its [`vm_config::VmConfig`] to its
//! end, jailed behind a supervisor (see [`vmm::jail`]), its events relayed
//! to stderr. `vmrun-vmm --config FILE` is this process for a sandbox (what
//! the sandbox layer starts for the shim and `vmrun run`); `vmrun boot`
//! runs the same loop from its flags.
//!
//! It is a binary of its own, not a subcommand of `vmrun`, because every
//! sandbox runs one: what it links is relocated, and so copied, in each of
//! them, and is code within reach of the process the guest talks to.

mod config_file;
mod error;
mod heap;
mod logging;
mod run;
mod supervisor;

pub use config_file::read_config;
pub use error::{Result, VmmProcessError};
pub use logging::log_to_stderr;
pub use run::{run, Cleanup, RunOptions};

/// Exit code of a VMM process that failed itself (not its guest); `vmrun`
/// ends with it too when it fails itself (as `docker run` does).
pub const VMM_FAILURE: u8 = 125;
