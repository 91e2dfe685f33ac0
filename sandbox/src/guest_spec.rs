//! The runtime spec containerd wrote for the host, rewritten for the guest:
//! host paths become paths under the sandbox's virtio-fs share, namespaces
//! that name host processes name the sandbox's init in the guest instead,
//! and host-only settings (LSM labels, hooks) are left out.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Mount, MountBuilder, Spec};

use crate::error::{Result, SandboxError};
use crate::layout::guest_bind_source;
/// Size of the tmpfs that replaces a host /dev/shm bind mount.
const SHM_SIZE: &str = "size=65536k";

/// A host path to bind into `shared/<container>/mounts/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareBind {
    pub source: PathBuf,
    pub name: String,
    pub read_only: bool,
}

/// The spec for the agent and the host binds it relies on.
#[derive(Debug)]
pub struct GuestSpec {
    pub spec: Spec,
    pub binds: Vec<ShareBind>,
}

/// Whether `mount` is a bind mount (type "bind", or a bind/rbind option).
pub fn is_bind(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind")
        || mount
            .options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

/// Whether `mount` asks to be read-only ("ro" option).
pub fn is_read_only(mount: &Mount) -> bool {
    mount
        .options()
        .as_ref()
        .is_some_and(|o| o.iter().any(|o| o == "ro"))
}

/// A tmpfs /dev/shm: the host's shm of the pod cannot be shared into the
/// VM, and the guest's own is what its processes can use.
fn guest_shm() -> Result<Mount> {
    MountBuilder::default()
        .destination("/dev/shm")
        .typ("tmpfs")
        .source("shm")
        .options(
            ["nosuid", "noexec", "nodev", "mode=1777", SHM_SIZE]
                .map(String::from)
                .to_vec(),
        )
        .build()
        .map_err(|e| SandboxError::Spec(format!("shm mount: {e}")))
}

/// `/proc/<pid>/ns/<kind>` → `<kind>`, for namespaces a host pid names.
fn proc_namespace(path: &Path) -> Option<&str> {
    let rest = path.strip_prefix("/proc").ok()?;
    let mut parts = rest.iter();
    let pid = parts.next()?.to_str()?;
    let ns = parts.next()?;
    let kind = parts.next()?.to_str()?;
    (pid.parse::<u32>().is_ok() && ns == "ns" && parts.next().is_none()).then_some(kind)
}

/// The network a container's spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkRequest {
    /// No network namespace: the host's own stack (a `hostNetwork` pod,
    /// `ctr run --net-host`), which a VM cannot give.
    Host,
    /// A new namespace of its own: loopback only.
    Own,
    /// The pod's namespace at this host path, set up by CNI (a netns
    /// file): the VM gets its interfaces.
    Pod(PathBuf),
    /// Another process's namespace (`/proc/<pid>/ns/net`): in the guest,
    /// the sandbox's.
    Process(PathBuf),
}

/// What a network namespace entry of a spec asks for.
fn joined_network(ns: &LinuxNamespace) -> NetworkRequest {
    match ns.path() {
        Some(path) if proc_namespace(path).is_some() => NetworkRequest::Process(path.clone()),
        Some(path) => NetworkRequest::Pod(path.clone()),
        None => NetworkRequest::Own,
    }
}

/// What `spec` asks of the network.
pub fn network_request(spec: &Spec) -> NetworkRequest {
    let network = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|n| {
            n.iter()
                .find(|ns| ns.typ() == LinuxNamespaceType::Network)
                .cloned()
        });
    match network {
        None => NetworkRequest::Host,
        Some(ns) => joined_network(&ns),
    }
}

/// Rewrites `spec` (from the bundle at `bundle`) for container
/// `container_id`. `sandbox_pid` is the guest pid of the pod's sandbox
/// container when this one joins its namespaces.
pub fn for_guest(
    mut spec: Spec,
    bundle: &Path,
    container_id: &str,
    sandbox_pid: Option<u32>,
) -> Result<GuestSpec> {
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(PathBuf::from("rootfs"));
    spec.set_root(Some(root));

    let mut binds = Vec::new();
    if let Some(mounts) = spec.mounts().clone() {
        let mut rewritten = Vec::with_capacity(mounts.len());
        for mut mount in mounts {
            if !is_bind(&mount) {
                rewritten.push(mount);
                continue;
            }
            if mount.destination() == Path::new("/dev/shm") {
                rewritten.push(guest_shm()?);
                continue;
            }
            let source = mount.source().clone().ok_or_else(|| {
                SandboxError::Spec(format!(
                    "mount {}: a bind mount needs a source",
                    mount.destination().display()
                ))
            })?;
            let source = if source.is_absolute() {
                source
            } else {
                bundle.join(source)
            };
            let name = binds.len().to_string();
            let read_only = is_read_only(&mount);
            mount.set_source(Some(PathBuf::from(guest_bind_source(container_id, &name))));
            binds.push(ShareBind {
                source,
                name,
                read_only,
            });
            rewritten.push(mount);
        }
        spec.set_mounts(Some(rewritten));
    }

    if let Some(mut linux) = spec.linux().clone() {
        if let Some(namespaces) = linux.namespaces().clone() {
            let namespaces: Vec<LinuxNamespace> = namespaces
                .into_iter()
                // Every container of the VM lives in the guest's own network
                // namespace, as in Kata: the VM is the sandbox, and that
                // namespace holds whatever network the sandbox has (the
                // pod's interfaces, `vmrun run --net`) or only a loopback,
                // which is all a new one would hold. A new namespace would
                // also cost a second or more on a software-KVM host.
                .filter(|ns| ns.typ() != LinuxNamespaceType::Network)
                .map(|mut ns| {
                    let guest_path =
                        match (ns.path().as_deref().and_then(proc_namespace), sandbox_pid) {
                            (Some(kind), Some(pid)) => {
                                Some(PathBuf::from(format!("/proc/{pid}/ns/{kind}")))
                            }
                            // A host process's: the guest makes its own.
                            _ => None,
                        };
                    ns.set_path(guest_path);
                    ns
                })
                .collect();
            linux.set_namespaces(Some(namespaces));
        }
        linux.set_mount_label(None);
        spec.set_linux(Some(linux));
    }
    if let Some(mut process) = spec.process().clone() {
        process.set_apparmor_profile(None);
        process.set_selinux_label(None);
        spec.set_process(Some(process));
    }
    if spec.hooks().is_some() {
        tracing::warn!(
            container_id,
            "OCI hooks run on the host with runc; vmrun ignores them"
        );
        spec.set_hooks(None);
    }
    Ok(GuestSpec { spec, binds })
}

/// An exec's OCI `process` (JSON, from containerd) for the guest: the
/// same process without host LSM labels, with `terminal` as asked.
pub fn exec_process(process_json: &[u8], terminal: bool) -> Result<Vec<u8>> {
    let bad = |e: String| SandboxError::Spec(format!("exec process spec: {e}"));
    let mut process: serde_json::Value =
        serde_json::from_slice(process_json).map_err(|e| bad(e.to_string()))?;
    let fields = process
        .as_object_mut()
        .ok_or_else(|| bad("not a JSON object".to_string()))?;
    fields.remove("apparmorProfile");
    fields.remove("selinuxLabel");
    fields.insert("terminal".to_string(), serde_json::Value::Bool(terminal));
    serde_json::to_vec(&process).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> Spec {
        let mut base = serde_json::to_value(Spec::default()).unwrap();
        for (key, v) in value.as_object().unwrap() {
            base[key] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn binds_become_share_paths_and_shm_a_guest_tmpfs() {
        let spec = spec(json!({
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/sb/hosts", "options": ["rbind", "ro"]},
                {"destination": "/data", "source": "data", "options": ["rbind", "rw"]},
                {"destination": "/dev/shm", "type": "bind", "source": "/run/containerd/sb/shm", "options": ["rbind"]}
            ]
        }));
        let guest = for_guest(spec, Path::new("/bundle"), "c1", None).unwrap();
        assert_eq!(
            guest.binds,
            vec![
                ShareBind {
                    source: "/var/lib/sb/hosts".into(),
                    name: "0".into(),
                    read_only: true
                },
                ShareBind {
                    source: "/bundle/data".into(),
                    name: "1".into(),
                    read_only: false
                },
            ]
        );
        let mounts = guest.spec.mounts().clone().unwrap();
        assert_eq!(mounts[0].typ().as_deref(), Some("proc"));
        assert_eq!(
            mounts[1].source().as_deref(),
            Some(Path::new("/run/vmrun/shared/c1/mounts/0"))
        );
        assert_eq!(
            mounts[2].source().as_deref(),
            Some(Path::new("/run/vmrun/shared/c1/mounts/1"))
        );
        assert_eq!(mounts[3].typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            guest.spec.root().as_ref().unwrap().path(),
            Path::new("rootfs")
        );
    }

    /// The namespaces of `spec` rewritten for the guest, for container "c".
    fn guest_namespaces(spec: Spec, sandbox_pid: Option<u32>) -> Vec<LinuxNamespace> {
        let guest = for_guest(spec, Path::new("/b"), "c", sandbox_pid).unwrap();
        guest
            .spec
            .linux()
            .clone()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap()
    }

    #[test]
    fn namespaces_of_host_pids_name_the_sandbox_in_the_guest() {
        let spec = spec(json!({
            "linux": {"namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/proc/4242/ns/net"},
                {"type": "ipc", "path": "/proc/4242/ns/ipc"},
                {"type": "uts", "path": "/var/run/netns/cni-1"}
            ]}
        }));
        assert_eq!(
            network_request(&spec),
            NetworkRequest::Process("/proc/4242/ns/net".into())
        );
        let paths: Vec<Option<PathBuf>> = guest_namespaces(spec.clone(), Some(7))
            .iter()
            .map(|ns| ns.path().clone())
            .collect();
        assert_eq!(
            paths,
            vec![None, Some("/proc/7/ns/ipc".into()), None],
            "the network namespace is the guest's own, the others the sandbox's"
        );
        // The sandbox itself gets fresh namespaces in the guest.
        assert!(guest_namespaces(spec, None)
            .iter()
            .all(|ns| ns.path().is_none()));
    }

    #[test]
    fn every_container_lives_in_the_guests_network_namespace() {
        let kinds = |spec: Spec| -> Vec<LinuxNamespaceType> {
            guest_namespaces(spec, None)
                .iter()
                .map(|ns| ns.typ())
                .collect()
        };
        let pod = spec(json!({
            "linux": {"namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/var/run/netns/cni-1"},
                {"type": "uts"}
            ]}
        }));
        assert_eq!(
            network_request(&pod),
            NetworkRequest::Pod("/var/run/netns/cni-1".into())
        );
        assert_eq!(
            kinds(pod),
            [LinuxNamespaceType::Pid, LinuxNamespaceType::Uts]
        );

        let own = spec(json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]}}));
        assert_eq!(network_request(&own), NetworkRequest::Own);
        assert_eq!(kinds(own), [LinuxNamespaceType::Pid]);

        let host = spec(json!({"linux": {"namespaces": [{"type": "pid"}]}}));
        assert_eq!(network_request(&host), NetworkRequest::Host);
        assert_eq!(kinds(host), [LinuxNamespaceType::Pid]);
    }

    #[test]
    fn host_only_settings_are_dropped() {
        let mut spec = spec(json!({"hooks": {"prestart": [{"path": "/usr/bin/true"}]}}));
        let mut process = spec.process().clone().unwrap();
        process.set_apparmor_profile(Some("cri-containerd.apparmor.d".into()));
        spec.set_process(Some(process));
        let guest = for_guest(spec, Path::new("/b"), "c3", None).unwrap();
        assert!(guest.spec.hooks().is_none());
        assert!(guest
            .spec
            .process()
            .clone()
            .unwrap()
            .apparmor_profile()
            .is_none());
    }

    #[test]
    fn exec_processes_lose_lsm_labels_and_get_the_terminal_flag() {
        let process = br#"{"args":["sh"],"cwd":"/","apparmorProfile":"x","terminal":false}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&exec_process(process, true).unwrap()).unwrap();
        assert_eq!(out, json!({"args": ["sh"], "cwd": "/", "terminal": true}));
        let err = exec_process(b"[1]", false).unwrap_err().to_string();
        assert!(err.contains("exec process spec"), "{err}");
    }

    #[test]
    fn a_bind_without_source_is_refused_by_name() {
        let spec = spec(json!({"mounts": [{"destination": "/x", "type": "bind"}]}));
        let err = for_guest(spec, Path::new("/b"), "c", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/x") && err.contains("source"), "{err}");
    }
}
