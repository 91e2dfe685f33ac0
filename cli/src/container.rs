//! `vmrun run --bundle/--rootfs`: the container half of a run. The spec
//! takes the shim's way into the guest (`vmrun_sandbox::guest_spec`): its
//! rootfs (read-only) and bind sources go into the sandbox's share, the
//! agent creates the container, whose init then gets the host's stdio like
//! any process.

use vmrun_agent::client::AgentClient;
use vmrun_sandbox::bundle::BundleSpec;
use vmrun_sandbox::guest_spec;
use vmrun_sandbox::host_mounts::HostMounts;
use vmrun_sandbox::Sandbox;

use crate::run::{terminal_size, Launched};
use crate::{CliError, Result};

/// Shares the bundle's files (recording the mounts in `mounts`) and creates
/// container `id` (not started yet).
pub async fn create(
    sandbox: &Sandbox,
    id: &str,
    bundle: &BundleSpec,
    mounts: &mut HostMounts,
) -> Result<Launched> {
    let guest = guest_spec::for_guest(bundle.spec.clone(), &bundle.dir, id, None)?;
    // The host's copy is never written: the guest's overlay takes the writes.
    let mut create = sandbox.share_container(id, &guest, &bundle.rootfs, true, mounts)?;
    if !bundle.read_only_root {
        create = create.writable_overlay();
    }
    if bundle.terminal {
        let (rows, cols) = terminal_size();
        create = create.terminal(rows, cols);
    }
    let init = sandbox
        .agent()
        .create_container(create)
        .await
        .map_err(CliError::agent("cannot create the container"))?;
    Ok(Launched {
        exec_id: init.exec_id,
        terminal: bundle.terminal,
        container: Some(id.to_string()),
    })
}

/// After the container's init exited: say so if the OOM killer ended it.
/// The container itself goes away with the VM.
pub async fn finish(agent: &AgentClient, id: &str) {
    match agent.container_state(id).await {
        Ok(state) if state.oom_killed => {
            eprintln!("vmrun: container {id} was killed by the OOM killer (memory limit reached)")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("container state: {e}"),
    }
}
