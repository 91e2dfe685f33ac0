//! The shim binary's life cycle as containerd drives it: `start` (find or
//! spawn the pod's shim), the server, and `delete` (clean up after a shim
//! that died).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{spawn, Config, Error, ExitSignal, Flags, Shim, StartOpts};
use oci_spec::runtime::Spec;
use vmrun_sandbox::SandboxDir;

use crate::container::SandboxRole;
use crate::events::{timestamp, Events};
use crate::service::TaskService;

/// Exit status containerd reports for a task whose shim died (SIGKILL).
const KILLED_STATUS: u32 = 128 + 9;

pub struct VmrunShim {
    exit: Arc<ExitSignal>,
    namespace: String,
    id: String,
    bundle: PathBuf,
}

/// The bundle's spec, if it can be read (containerd runs the shim in the
/// bundle directory).
fn bundle_spec(bundle: &std::path::Path) -> Option<Spec> {
    let bytes = std::fs::read(bundle.join("config.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[async_trait]
impl Shim for VmrunShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        Self {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle,
        }
    }

    /// One shim (and so one VM) per pod: a pod's containers are grouped
    /// under the sandbox's id, and `spawn` hands back the address of the
    /// shim already serving it.
    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        let grouping = bundle_spec(&self.bundle)
            .map(|spec| SandboxRole::grouping(&spec, &opts.id))
            .unwrap_or_else(|| opts.id.clone());
        spawn(opts, &grouping, Vec::new()).await
    }

    /// containerd runs `delete` when the shim serving `id` is gone. Its VMM
    /// died with it (parent-death signal); what may be left is host
    /// mounts and the sandbox directory.
    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        let rootfs = self.bundle.join("rootfs");
        if let Err(e) = containerd_shim::mount::umount_recursive(
            Some(&rootfs.to_string_lossy()),
            libc::MNT_DETACH,
        ) {
            tracing::warn!("unmount {}: {e}", rootfs.display());
        }
        let sandbox_id = bundle_spec(&self.bundle)
            .map(|spec| SandboxRole::grouping(&spec, &self.id))
            .unwrap_or_else(|| self.id.clone());
        let dir = SandboxDir::for_pod(&self.namespace, &sandbox_id);
        let result = if sandbox_id == self.id {
            dir.remove()
        } else {
            // A pod member: only its own part of the pod's share.
            dir.remove_container(&self.id)
        };
        if let Err(e) = result {
            tracing::warn!("cleanup of {}: {e}", self.id);
        }
        Ok(DeleteResponse {
            exit_status: KILLED_STATUS,
            exited_at: MessageField::some(timestamp(std::time::SystemTime::now())),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let events = Events::new(publisher, &self.namespace);
        TaskService::new(&self.namespace, events, Arc::clone(&self.exit))
    }
}
