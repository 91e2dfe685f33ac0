//! `vmrun run --bundle/--rootfs`: the container half of a run. The VM
//! already shares the rootfs and bind sources (see `vmm::oci`); here the
//! agent mounts them and creates the container, whose init then gets the
//! host's stdio like any process.

use std::path::Path;

use vmm::oci::{ContainerPlan, GuestShare};
use vmrun_agent::client::{AgentClient, ContainerCreate, StorageMount};

use crate::run::{terminal_size, Launched};

async fn mount(agent: &AgentClient, share: &GuestShare) -> Result<(), String> {
    let mut mount = StorageMount::virtiofs(&share.share.tag, &share.mount_point);
    if share.share.read_only {
        mount = mount.read_only();
    }
    agent.mount_storage(mount).await.map_err(|e| {
        format!(
            "cannot mount {} in the guest: {e}",
            share.share.path.display()
        )
    })
}

/// Mounts the shares (single-file bind sources are in `files_dir`) and
/// creates the container (not started yet).
pub async fn create(
    agent: &AgentClient,
    plan: &ContainerPlan,
    files_dir: &Path,
) -> Result<Launched, String> {
    mount(agent, &plan.rootfs).await?;
    for volume in plan.volumes.iter().chain(&plan.files_share(files_dir)) {
        mount(agent, volume).await?;
    }
    let mut create = ContainerCreate::new(
        plan.id.clone(),
        plan.spec_json.clone(),
        plan.rootfs.mount_point.clone(),
    );
    if plan.writable_overlay {
        create = create.writable_overlay();
    }
    if plan.terminal {
        let (rows, cols) = terminal_size();
        create = create.terminal(rows, cols);
    }
    let init = agent
        .create_container(create)
        .await
        .map_err(|e| format!("cannot create the container: {e}"))?;
    Ok(Launched {
        exec_id: init.exec_id,
        terminal: plan.terminal,
        container: Some(plan.id.clone()),
    })
}

/// After the container's init exited: say so if the OOM killer ended it.
/// The container itself goes away with the VM.
pub async fn finish(agent: &AgentClient, plan: &ContainerPlan) {
    match agent.container_state(&plan.id).await {
        Ok(state) if state.oom_killed => eprintln!(
            "vmrun: container {} was killed by the OOM killer (memory limit reached)",
            plan.id
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("container state: {e}"),
    }
}
