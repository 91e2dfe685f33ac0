//! The contract between the host and the guest agent that is not in the
//! agent's proto: where the agent listens, and the names a VM booted to be
//! snapshotted gives its devices. The VMM, the agent and the host-side
//! sandbox layer all read these from here, so each is defined once.

/// The guest's vsock context id (2 is the host).
pub const GUEST_CID: u64 = 3;

/// The vsock port the agent serves on inside the guest.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// Kernel flag of a guest booted to be snapshotted.
pub const TEMPLATE_FLAG: &str = "vmrun.template";

/// The virtio-fs tag of share slot `i` in a guest booted to be snapshotted
/// (kernel flag [`TEMPLATE_FLAG`]): its tags cannot be the host's names,
/// which differ per sandbox, so the VMM numbers them and the agent maps the
/// names `InitSandbox` gives onto them.
pub fn share_slot_tag(i: usize) -> String {
    format!("vmrun-fs{i}")
}
