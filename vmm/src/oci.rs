//! From an OCI bundle (or a bare rootfs and a command) on the host to what a
//! microVM needs to run it: which host directories to share over virtio-fs,
//! where the guest mounts them, and the runtime spec the agent gets.
//!
//! The host copy of a rootfs is shared read-only; the agent puts a writable
//! overlay on top unless the spec asks for a read-only root, so nothing the
//! container does reaches the host's files.
//!
//! virtio-fs shares directories. A bind mount of a single host file is
//! planned as a [`FileBind`]: the host bind-mounts the file into one
//! private directory, shared as [`FILES_TAG`], so the guest sees that file
//! and not its siblings.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, ProcessBuilder, Spec};

use crate::config::SharedDir;

/// Where the guest mounts a container's rootfs share.
pub const GUEST_ROOTFS_DIR: &str = "/run/vmrun/rootfs";
/// Where the guest mounts shared bind-mount sources.
pub const GUEST_VOLUMES_DIR: &str = "/run/vmrun/volumes";
/// Where the guest mounts the share of single-file bind sources.
pub const GUEST_FILES_DIR: &str = "/run/vmrun/volumes/files";
/// The virtio-fs tag of the single-file bind sources' share.
pub const FILES_TAG: &str = "files";

/// A host file to bind into the files share as `name` (the container's
/// spec already names `<GUEST_FILES_DIR>/<name>` as the mount's source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileBind {
    pub source: PathBuf,
    pub name: String,
    pub read_only: bool,
}

/// A host directory shared into the guest and where the guest mounts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestShare {
    pub share: SharedDir,
    pub mount_point: String,
}

/// Everything needed to run one container in a VM.
#[derive(Clone, Debug)]
pub struct ContainerPlan {
    pub id: String,
    /// The runtime spec for the agent (root.path relative, bind sources
    /// rewritten to their guest mounts).
    pub spec_json: Vec<u8>,
    pub rootfs: GuestShare,
    pub volumes: Vec<GuestShare>,
    /// Single-file bind sources, to be bound into a directory shared as
    /// [`FILES_TAG`] and mounted at [`GUEST_FILES_DIR`].
    pub files: Vec<FileBind>,
    /// A writable overlay over the read-only rootfs share.
    pub writable_overlay: bool,
    pub terminal: bool,
}

impl ContainerPlan {
    /// Every share the VM must have; `files_dir` is the host directory the
    /// [`files`](Self::files) are bound into (unused when there are none).
    pub fn shares(&self, files_dir: &Path) -> Vec<SharedDir> {
        let mut shares: Vec<SharedDir> = std::iter::once(&self.rootfs)
            .chain(&self.volumes)
            .map(|s| s.share.clone())
            .collect();
        if let Some(files) = self.files_share(files_dir) {
            shares.push(files.share);
        }
        shares
    }

    /// The share of the single-file bind sources, if there are any: read-only
    /// unless one of them is writable.
    pub fn files_share(&self, files_dir: &Path) -> Option<GuestShare> {
        (!self.files.is_empty()).then(|| GuestShare {
            share: SharedDir {
                tag: FILES_TAG.to_string(),
                path: files_dir.to_path_buf(),
                read_only: self.files.iter().all(|f| f.read_only),
            },
            mount_point: GUEST_FILES_DIR.to_string(),
        })
    }
}

/// Why a bundle cannot run.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("bundle {bundle}: cannot read config.json: {source}")]
    Read {
        bundle: PathBuf,
        source: std::io::Error,
    },
    #[error("bundle {bundle}: config.json: {source}")]
    Spec {
        bundle: PathBuf,
        source: serde_json::Error,
    },
    #[error("bundle {bundle}: config.json: {field} {problem}")]
    Field {
        bundle: PathBuf,
        field: &'static str,
        problem: String,
    },
    #[error("rootfs {0} is not a directory")]
    Rootfs(PathBuf),
    #[error("mount {destination}: bind source {source_path} must be an existing host directory or regular file")]
    BindSource {
        destination: PathBuf,
        source_path: PathBuf,
    },
    #[error("cannot encode the runtime spec: {0}")]
    Encode(String),
}

fn field(bundle: &Path, field: &'static str, problem: impl Into<String>) -> OciError {
    OciError::Field {
        bundle: bundle.to_path_buf(),
        field,
        problem: problem.into(),
    }
}

/// Plans the bundle in `dir` (its `config.json` and rootfs) as container `id`.
pub fn plan_bundle(dir: &Path, id: &str) -> Result<ContainerPlan, OciError> {
    // serde's message names the field and position; oci-spec's own loader
    // reduces it to "serde failed".
    let bytes = std::fs::read(dir.join("config.json")).map_err(|source| OciError::Read {
        bundle: dir.to_path_buf(),
        source,
    })?;
    let spec: Spec = serde_json::from_slice(&bytes).map_err(|source| OciError::Spec {
        bundle: dir.to_path_buf(),
        source,
    })?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| field(dir, "root", "is missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    plan(spec, dir, &rootfs, id)
}

/// What `vmrun run --rootfs DIR -- CMD` runs: the runtime-spec defaults
/// (as `runc spec` writes them) around `args`.
pub struct RootfsCommand<'a> {
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: Option<&'a str>,
    pub terminal: bool,
}

/// Plans `command` in the host directory `rootfs` as container `id`.
pub fn plan_rootfs(
    rootfs: &Path,
    id: &str,
    command: &RootfsCommand<'_>,
) -> Result<ContainerPlan, OciError> {
    let mut spec = Spec::default();
    let defaults = spec.process().clone().unwrap_or_default();
    let mut env = defaults.env().clone().unwrap_or_default();
    for var in command.env {
        let key = var.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(var.clone());
    }
    let process = ProcessBuilder::default()
        .terminal(command.terminal)
        .user(defaults.user().clone())
        .args(command.args.to_vec())
        .env(env)
        .cwd(command.cwd.unwrap_or("/"))
        .capabilities(defaults.capabilities().clone().unwrap_or_default())
        .rlimits(defaults.rlimits().clone().unwrap_or_default())
        .no_new_privileges(defaults.no_new_privileges().unwrap_or(true))
        .build()
        .map_err(|e| field(rootfs, "process", e.to_string()))?;
    spec.set_process(Some(process));
    // `runc spec` makes the root read-only; a container started from a bare
    // rootfs gets a writable overlay instead, as `docker run` would.
    if let Some(root) = spec.root().clone() {
        let mut root = root;
        root.set_readonly(Some(false));
        spec.set_root(Some(root));
    }
    plan(spec, rootfs, rootfs, id)
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

fn plan(mut spec: Spec, bundle: &Path, rootfs: &Path, id: &str) -> Result<ContainerPlan, OciError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| field(bundle, "process", "is missing"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(field(bundle, "process.args", "is empty"));
    }
    let terminal = process.terminal().unwrap_or(false);
    if !rootfs.is_dir() {
        return Err(OciError::Rootfs(rootfs.to_path_buf()));
    }
    let mut root = spec.root().clone().unwrap_or_default();
    let read_only_root = root.readonly().unwrap_or(false);
    root.set_path(PathBuf::from("rootfs"));
    spec.set_root(Some(root));

    let mut volumes = Vec::new();
    let mut files = Vec::new();
    if let Some(mounts) = spec.mounts().clone() {
        let mut rewritten = Vec::with_capacity(mounts.len());
        for mut mount in mounts {
            if is_bind(&mount) {
                let source = mount.source().clone().unwrap_or_default();
                let source = if source.is_absolute() {
                    source
                } else {
                    bundle.join(source)
                };
                let read_only = is_read_only(&mount);
                if source.is_dir() {
                    let n = volumes.len();
                    let mount_point = format!("{GUEST_VOLUMES_DIR}/{n}");
                    mount.set_source(Some(PathBuf::from(&mount_point)));
                    volumes.push(GuestShare {
                        share: SharedDir {
                            tag: format!("vol{n}"),
                            path: source,
                            read_only,
                        },
                        mount_point,
                    });
                } else if source.is_file() {
                    // Regular files only: a device node or socket shared over
                    // virtio-fs would be opened on the host.
                    let name = files.len().to_string();
                    mount.set_source(Some(Path::new(GUEST_FILES_DIR).join(&name)));
                    files.push(FileBind {
                        source,
                        name,
                        read_only,
                    });
                } else {
                    return Err(OciError::BindSource {
                        destination: mount.destination().clone(),
                        source_path: source,
                    });
                }
            }
            rewritten.push(mount);
        }
        spec.set_mounts(Some(rewritten));
    }

    let spec_json = serde_json::to_vec(&spec).map_err(|e| OciError::Encode(e.to_string()))?;
    Ok(ContainerPlan {
        id: id.to_string(),
        spec_json,
        rootfs: GuestShare {
            share: SharedDir {
                tag: "rootfs".to_string(),
                path: rootfs.to_path_buf(),
                read_only: true,
            },
            mount_point: format!("{GUEST_ROOTFS_DIR}/{id}"),
        },
        volumes,
        files,
        writable_overlay: !read_only_root,
        terminal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(name: &str, config: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmrun-oci-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        dir
    }

    fn default_config() -> serde_json::Value {
        serde_json::to_value(Spec::default()).unwrap()
    }

    #[test]
    fn runc_spec_defaults_plan_a_read_only_root_without_overlay() {
        let dir = bundle("defaults", &default_config().to_string());
        let plan = plan_bundle(&dir, "c1").unwrap();
        assert!(!plan.writable_overlay, "runc spec sets root.readonly");
        assert!(plan.rootfs.share.read_only);
        assert_eq!(plan.rootfs.share.path, dir.join("rootfs"));
        assert_eq!(plan.rootfs.mount_point, "/run/vmrun/rootfs/c1");
        let spec: serde_json::Value = serde_json::from_slice(&plan.spec_json).unwrap();
        assert_eq!(spec["root"]["path"], "rootfs");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bind_mounts_become_shares_with_guest_sources() {
        let mut config = default_config();
        let data = std::env::temp_dir().join(format!("vmrun-oci-bind-{}", std::process::id()));
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro"]
            }));
        let dir = bundle("bind", &config.to_string());
        let plan = plan_bundle(&dir, "c2").unwrap();
        assert_eq!(plan.volumes.len(), 1);
        assert_eq!(plan.volumes[0].share.path, dir.join("data"));
        assert!(plan.volumes[0].share.read_only);
        let spec: serde_json::Value = serde_json::from_slice(&plan.spec_json).unwrap();
        let mount = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert_eq!(mount["source"], "/run/vmrun/volumes/0");
        assert_eq!(plan.shares(Path::new("/unused")).len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
        let _ = std::fs::remove_dir_all(data);
    }

    #[test]
    fn file_bind_sources_go_to_the_files_share() {
        let mut config = default_config();
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .extend([
                serde_json::json!({
                    "destination": "/etc/greeting", "type": "bind", "source": "greeting", "options": ["rbind", "ro"]
                }),
                serde_json::json!({
                    "destination": "/log", "type": "bind", "source": "log", "options": ["rbind", "rw"]
                }),
            ]);
        let dir = bundle("filebind", &config.to_string());
        std::fs::write(dir.join("greeting"), "hi\n").unwrap();
        std::fs::write(dir.join("log"), "").unwrap();
        let plan = plan_bundle(&dir, "c4").unwrap();
        assert!(plan.volumes.is_empty());
        assert_eq!(
            plan.files,
            [
                FileBind {
                    source: dir.join("greeting"),
                    name: "0".into(),
                    read_only: true
                },
                FileBind {
                    source: dir.join("log"),
                    name: "1".into(),
                    read_only: false
                }
            ]
        );
        let spec: serde_json::Value = serde_json::from_slice(&plan.spec_json).unwrap();
        let source = |destination: &str| {
            spec["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == destination)
                .unwrap()["source"]
                .clone()
        };
        assert_eq!(source("/etc/greeting"), "/run/vmrun/volumes/files/0");
        assert_eq!(source("/log"), "/run/vmrun/volumes/files/1");
        // One share for both, writable because one of them is.
        let files = plan
            .files_share(Path::new("/run/vmrun/vm-1/files"))
            .unwrap();
        assert_eq!(files.share.tag, FILES_TAG);
        assert_eq!(files.share.path, Path::new("/run/vmrun/vm-1/files"));
        assert!(!files.share.read_only);
        assert_eq!(plan.shares(Path::new("/run/vmrun/vm-1/files")).len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let mut config = default_config();
        config["process"]["args"] = serde_json::json!([]);
        let dir = bundle("noargs", &config.to_string());
        let err = plan_bundle(&dir, "c").unwrap_err().to_string();
        assert!(err.contains("process.args is empty"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();

        let dir = bundle("badjson", r#"{"ociVersion": "1.0.2", "process": 7}"#);
        let err = plan_bundle(&dir, "c").unwrap_err().to_string();
        assert!(err.contains("expected struct Process"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();

        let mut config = default_config();
        config["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/x", "type": "bind", "source": "/nonexistent/dir", "options": ["bind"]
        }));
        let dir = bundle("badbind", &config.to_string());
        let err = plan_bundle(&dir, "c").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/dir"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();

        // Not a directory nor a regular file: never shared.
        let mut config = default_config();
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "destination": "/null", "type": "bind", "source": "/dev/null", "options": ["bind"]
            }));
        let dir = bundle("devbind", &config.to_string());
        let err = plan_bundle(&dir, "c").unwrap_err().to_string();
        assert!(
            err.contains("/dev/null") && err.contains("regular file"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();

        let missing = std::env::temp_dir().join("vmrun-oci-no-such-bundle");
        let err = plan_bundle(&missing, "c").unwrap_err().to_string();
        assert!(err.contains("vmrun-oci-no-such-bundle"), "{err}");
    }

    #[test]
    fn rootfs_command_gets_defaults_env_and_a_writable_overlay() {
        let dir = bundle("rootfs", "{}");
        let args = vec!["echo".to_string(), "hi".to_string()];
        let env = vec!["FOO=bar".to_string(), "TERM=dumb".to_string()];
        let plan = plan_rootfs(
            &dir.join("rootfs"),
            "c3",
            &RootfsCommand {
                args: &args,
                env: &env,
                cwd: Some("/tmp"),
                terminal: false,
            },
        )
        .unwrap();
        assert!(plan.writable_overlay);
        let spec: serde_json::Value = serde_json::from_slice(&plan.spec_json).unwrap();
        assert_eq!(spec["process"]["args"], serde_json::json!(["echo", "hi"]));
        assert_eq!(spec["process"]["cwd"], "/tmp");
        let env = spec["process"]["env"].as_array().unwrap();
        assert!(env.contains(&serde_json::json!("FOO=bar")));
        assert!(env.contains(&serde_json::json!("TERM=dumb")));
        assert!(!env.contains(&serde_json::json!("TERM=xterm")));
        assert!(env.iter().any(|e| e.as_str().unwrap().starts_with("PATH=")));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
