//! A container of the pod: where it runs (its sandbox), its processes, and
//! the host mounts that share its files with the guest.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use containerd_shim::api::Status;
use oci_spec::runtime::Spec;
use vmrun_sandbox::host_mounts::HostMounts;
use vmrun_sandbox::Sandbox;

use crate::error::{Result, ShimError};
use crate::process::Process;

/// Annotations that say which pod a container belongs to.
const CONTAINER_TYPE: [&str; 2] = [
    "io.kubernetes.cri.container-type",
    "io.kubernetes.cri-o.ContainerType",
];
const SANDBOX_ID: [&str; 2] = [
    "io.kubernetes.cri.sandbox-id",
    "io.kubernetes.cri-o.SandboxID",
];

/// Whether a container brings its own VM or joins a pod's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxRole {
    /// A pod sandbox, or a container outside any pod (`ctr run`): it owns
    /// a new VM.
    Owner,
    /// A container of the pod whose sandbox has this id.
    Member(String),
}

impl SandboxRole {
    pub fn of(spec: &Spec) -> Result<Self> {
        let annotations = spec.annotations().clone().unwrap_or_default();
        let find = |keys: [&str; 2]| keys.iter().find_map(|k| annotations.get(*k).cloned());
        match find(CONTAINER_TYPE).as_deref() {
            Some("container") => find(SANDBOX_ID).map(Self::Member).ok_or_else(|| {
                ShimError::InvalidArgument(
                    "a pod container without a sandbox id annotation".to_string(),
                )
            }),
            _ => Ok(Self::Owner),
        }
    }

    /// The sandbox (and so the shim) this container is grouped under.
    pub fn grouping(spec: &Spec, id: &str) -> String {
        match Self::of(spec) {
            Ok(Self::Member(sandbox)) => sandbox,
            _ => id.to_string(),
        }
    }
}

/// A container created through this shim.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub sandbox: Arc<Sandbox>,
    /// The VM goes away with this container.
    pub owns_sandbox: bool,
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    mounts: Mutex<HostMounts>,
    paused: AtomicBool,
}

impl Container {
    pub fn new(
        id: &str,
        bundle: PathBuf,
        sandbox: Arc<Sandbox>,
        owns_sandbox: bool,
        init: Arc<Process>,
        mounts: HostMounts,
    ) -> Self {
        Self {
            id: id.to_string(),
            bundle,
            sandbox,
            owns_sandbox,
            init,
            execs: Mutex::new(HashMap::new()),
            mounts: Mutex::new(mounts),
            paused: AtomicBool::new(false),
        }
    }

    /// The init process (`exec_id` empty) or an exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(Arc::clone(&self.init));
        }
        self.execs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("exec {exec_id} of container {}", self.id)))
    }

    pub fn add_exec(&self, process: Arc<Process>) -> Result<()> {
        let mut execs = self.execs.lock().unwrap_or_else(PoisonError::into_inner);
        if execs.contains_key(&process.exec_id) {
            return Err(ShimError::AlreadyExists(format!(
                "exec {} of container {}",
                process.exec_id, self.id
            )));
        }
        execs.insert(process.exec_id.clone(), process);
        Ok(())
    }

    pub fn remove_exec(&self, exec_id: &str) {
        self.execs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(exec_id);
    }

    pub fn execs(&self) -> Vec<Arc<Process>> {
        self.execs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// A process's status, PAUSED while the container is frozen.
    pub fn status_of(&self, process: &Process) -> Status {
        match process.status() {
            Status::RUNNING if self.paused.load(Ordering::SeqCst) => Status::PAUSED,
            status => status,
        }
    }

    /// Removes the container's host mounts (after it is gone from the
    /// guest).
    pub fn release_mounts(&self) -> Result<()> {
        self.mounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cleanup()
            .map_err(ShimError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(annotations: &[(&str, &str)]) -> Spec {
        let mut spec = Spec::default();
        spec.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        spec
    }

    #[test]
    fn pod_annotations_decide_the_role() {
        assert_eq!(
            SandboxRole::of(&Spec::default()).unwrap(),
            SandboxRole::Owner
        );
        let sandbox = spec_with(&[
            ("io.kubernetes.cri.container-type", "sandbox"),
            ("io.kubernetes.cri.sandbox-id", "sb1"),
        ]);
        assert_eq!(SandboxRole::of(&sandbox).unwrap(), SandboxRole::Owner);
        assert_eq!(SandboxRole::grouping(&sandbox, "sb1"), "sb1");
        let member = spec_with(&[
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.sandbox-id", "sb1"),
        ]);
        assert_eq!(
            SandboxRole::of(&member).unwrap(),
            SandboxRole::Member("sb1".into())
        );
        assert_eq!(SandboxRole::grouping(&member, "c1"), "sb1");
        let crio = spec_with(&[
            ("io.kubernetes.cri-o.ContainerType", "container"),
            ("io.kubernetes.cri-o.SandboxID", "pod9"),
        ]);
        assert_eq!(
            SandboxRole::of(&crio).unwrap(),
            SandboxRole::Member("pod9".into())
        );
        let orphan = spec_with(&[("io.kubernetes.cri.container-type", "container")]);
        assert!(SandboxRole::of(&orphan).is_err());
    }
}
