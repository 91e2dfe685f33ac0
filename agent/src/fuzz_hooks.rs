//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): the checks the
//! server applies to a decoded request before anything happens in the guest,
//! callable without a server, root or child processes. Each runs what the
//! service (and the container or storage manager) does up to the first side
//! effect, and turns its error into the status the host would get. Not part
//! of the agent's API.

use std::path::PathBuf;

use tonic::Status;

use crate::container::exec_process::prepare_exec_process;
use crate::container::resources::parse_resources;
use crate::container::spec::{prepare_spec, validate_container_id, SpecOptions};
use crate::container::{ContainerConfig, StateLayout};
use crate::process::ExecSpec;
use crate::proto::{
    CreateContainerRequest, ExecInContainerRequest, ExecProcessRequest, MountStorageRequest,
    ResizePtyRequest, UnmountStorageRequest, UpdateContainerRequest,
};
use crate::server::exec_request::{terminal_from_proto, terminal_size_from_proto};
use crate::server::AgentError;
use crate::storage::request::checked_mount_point;
use crate::storage::MountSpec;

/// `ExecProcess`: the request checked into the spec the process runtime
/// would spawn.
pub fn exec_process(request: ExecProcessRequest) -> Result<(), Status> {
    ExecSpec::try_from(request)?;
    Ok(())
}

/// `ResizePty`: the size check.
pub fn resize_pty(request: ResizePtyRequest) -> Result<(), Status> {
    const OP: &str = "resize pty";
    let size = request
        .size
        .ok_or_else(|| AgentError::invalid(OP, "size is missing"))?;
    terminal_size_from_proto(OP, &size)?;
    Ok(())
}

/// `CreateContainer`: terminal, id and the `config.json` rewrite, with the
/// guest's container configuration.
pub fn create_container(request: CreateContainerRequest) -> Result<(), Status> {
    const OP: &str = "create container";
    let terminal = terminal_from_proto(OP, request.terminal, request.pty_size)?;
    validate_container_id(OP, &request.container_id).map_err(AgentError::from)?;
    let config = ContainerConfig::guest();
    let overlay_root = StateLayout::new(&config.state_root)
        .bundle(&request.container_id)
        .overlay_rootfs();
    prepare_spec(
        &request.spec_json,
        &SpecOptions {
            id: &request.container_id,
            rootfs: &PathBuf::from(request.rootfs),
            root_override: request.writable_overlay.then_some(overlay_root.as_path()),
            cgroup_parent: &config.cgroup_parent,
            terminal,
        },
    )
    .map_err(AgentError::from)?;
    Ok(())
}

/// `ExecInContainer`: terminal, id and the OCI process check.
pub fn exec_in_container(request: ExecInContainerRequest) -> Result<(), Status> {
    const OP: &str = "exec in container";
    let terminal = terminal_from_proto(OP, request.terminal, request.pty_size)?;
    validate_container_id(OP, &request.container_id).map_err(AgentError::from)?;
    prepare_exec_process(&request.process_json, terminal).map_err(AgentError::from)?;
    Ok(())
}

/// `UpdateContainer`: the `linux.resources` check.
pub fn update_container(request: UpdateContainerRequest) -> Result<(), Status> {
    parse_resources(&request.resources_json).map_err(AgentError::from)?;
    Ok(())
}

/// `MountStorage`: the request checked into a mount.
pub fn mount_storage(request: MountStorageRequest) -> Result<(), Status> {
    MountSpec::try_from(request).map_err(AgentError::from)?;
    Ok(())
}

/// `UnmountStorage`: the mount point check.
pub fn unmount_storage(request: UnmountStorageRequest) -> Result<(), Status> {
    checked_mount_point("unmount storage", &request.mount_point).map_err(AgentError::from)?;
    Ok(())
}
