//! What `vmrun run` is given, as a runtime spec: an OCI bundle on the host
//! (its `config.json`, read once, and its rootfs), or a bare rootfs and a
//! command around which the runtime-spec defaults go. From here it takes the
//! same way as the shim's containers ([`crate::guest_spec::for_guest`]).
//!
//! The host copy of a rootfs is shared read-only; the agent puts a writable
//! overlay on top unless the spec asks for a read-only root, so nothing the
//! container does reaches the host's files.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{ProcessBuilder, Spec};

use crate::error::{Result, SandboxError};

/// A runtime spec and where its files are.
#[derive(Clone, Debug)]
pub struct BundleSpec {
    pub spec: Spec,
    /// What relative paths of the spec (bind sources) are relative to.
    pub dir: PathBuf,
    /// The container's root file system on the host.
    pub rootfs: PathBuf,
    /// The spec asks for a read-only root (no overlay in the guest).
    pub read_only_root: bool,
    /// The container's init gets a terminal.
    pub terminal: bool,
}

fn problem(bundle: &Path, problem: impl Into<String>) -> SandboxError {
    SandboxError::Bundle {
        bundle: bundle.to_path_buf(),
        problem: problem.into(),
    }
}

/// Reads the bundle in `dir`.
pub fn load(dir: &Path) -> Result<BundleSpec> {
    // serde's message names the field and position; oci-spec's own loader
    // reduces it to "serde failed".
    let bytes = std::fs::read(dir.join("config.json"))
        .map_err(|e| problem(dir, format!("cannot read config.json: {e}")))?;
    let spec: Spec =
        serde_json::from_slice(&bytes).map_err(|e| problem(dir, format!("config.json: {e}")))?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| problem(dir, "config.json: root is missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    checked(spec, dir, rootfs)
}

/// What `vmrun run --rootfs DIR -- CMD` runs: the runtime-spec defaults
/// (as `runc spec` writes them) around `args`.
pub struct RootfsCommand<'a> {
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: Option<&'a str>,
    pub terminal: bool,
}

/// The spec of `command` run in the host directory `rootfs`.
pub fn from_rootfs(rootfs: &Path, command: &RootfsCommand<'_>) -> Result<BundleSpec> {
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
        .map_err(|e| problem(rootfs, format!("process: {e}")))?;
    spec.set_process(Some(process));
    // `runc spec` makes the root read-only; a container started from a bare
    // rootfs gets a writable overlay instead, as `docker run` would.
    if let Some(mut root) = spec.root().clone() {
        root.set_readonly(Some(false));
        spec.set_root(Some(root));
    }
    checked(spec, rootfs, rootfs.to_path_buf())
}

impl BundleSpec {
    /// Refuses bind mounts whose source is outside the bundle directory
    /// (an absolute path elsewhere, `..`, or a symlink out of it): a bundle
    /// from somewhere else must not share the host's files by naming them.
    /// `vmrun run --allow-host-mounts` skips this for bundles the user wrote.
    pub fn check_sources_inside(&self) -> Result<()> {
        let Some(mounts) = self.spec.mounts() else {
            return Ok(());
        };
        let bundle = self.dir.canonicalize().map_err(|e| {
            problem(
                &self.dir,
                format!("cannot resolve the bundle directory: {e}"),
            )
        })?;
        for mount in mounts.iter().filter(|m| crate::guest_spec::is_bind(m)) {
            let Some(source) = mount.source() else {
                continue;
            };
            let path = self.dir.join(source);
            let resolved = path.canonicalize().map_err(|e| {
                problem(
                    &self.dir,
                    format!(
                        "mount {}: bind source {}: {e}",
                        mount.destination().display(),
                        path.display()
                    ),
                )
            })?;
            if !resolved.starts_with(&bundle) {
                return Err(problem(
                    &self.dir,
                    format!(
                        "mount {}: bind source {} is outside the bundle (give --allow-host-mounts to share host paths)",
                        mount.destination().display(),
                        resolved.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn checked(spec: Spec, dir: &Path, rootfs: PathBuf) -> Result<BundleSpec> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| problem(dir, "config.json: process is missing"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(problem(dir, "config.json: process.args is empty"));
    }
    if !rootfs.is_dir() {
        return Err(problem(
            dir,
            format!("rootfs {} is not a directory", rootfs.display()),
        ));
    }
    Ok(BundleSpec {
        terminal: process.terminal().unwrap_or(false),
        read_only_root: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        dir: dir.to_path_buf(),
        rootfs,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(name: &str, config: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmrun-bundle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        dir
    }

    fn default_config() -> serde_json::Value {
        serde_json::to_value(Spec::default()).unwrap()
    }

    #[test]
    fn runc_spec_defaults_ask_for_a_read_only_root() {
        let dir = bundle("defaults", &default_config().to_string());
        let bundle = load(&dir).unwrap();
        assert!(bundle.read_only_root, "runc spec sets root.readonly");
        assert_eq!(bundle.rootfs, dir.join("rootfs"));
        assert_eq!(bundle.dir, dir);
        assert!(!bundle.terminal);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn errors_name_the_bundle_and_what_is_wrong() {
        let mut config = default_config();
        config["process"]["args"] = serde_json::json!([]);
        let dir = bundle("noargs", &config.to_string());
        let err = load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("process.args is empty") && err.contains("vmrun-bundle-noargs"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();

        let dir = bundle("badjson", r#"{"ociVersion": "1.0.2", "process": 7}"#);
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("expected struct Process"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();

        let mut config = default_config();
        config["root"]["path"] = serde_json::json!("nothere");
        let dir = bundle("norootfs", &config.to_string());
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("nothere is not a directory"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();

        let missing = std::env::temp_dir().join("vmrun-no-such-bundle");
        let err = load(&missing).unwrap_err().to_string();
        assert!(
            err.contains("vmrun-no-such-bundle") && err.contains("config.json"),
            "{err}"
        );
    }

    #[test]
    fn bind_sources_outside_the_bundle_are_refused_unless_allowed() {
        let outside = std::env::temp_dir().join(format!("vmrun-outside-{}", std::process::id()));
        std::fs::create_dir_all(&outside).unwrap();
        let with_source =
            |name: &str, source: &str| {
                let mut config = default_config();
                config["mounts"].as_array_mut().unwrap().push(serde_json::json!({
                "destination": "/data", "type": "bind", "source": source, "options": ["rbind"]
            }));
                let dir = bundle(name, &config.to_string());
                std::fs::create_dir_all(dir.join("data")).unwrap();
                std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
                dir
            };
        let inside = with_source("inside", "data");
        load(&inside).unwrap().check_sources_inside().unwrap();
        let own_data = std::env::temp_dir()
            .join(format!("vmrun-bundle-absinside-{}", std::process::id()))
            .join("data");
        let absolute_inside = with_source("absinside", own_data.to_str().unwrap());
        load(&absolute_inside)
            .unwrap()
            .check_sources_inside()
            .unwrap();
        for (name, source) in [
            ("abs", outside.to_str().unwrap()),
            ("dotdot", "../"),
            ("symlink", "link"),
        ] {
            let dir = with_source(name, source);
            let err = load(&dir)
                .unwrap()
                .check_sources_inside()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("outside the bundle") && err.contains("--allow-host-mounts"),
                "{name}: {err}"
            );
            std::fs::remove_dir_all(dir).unwrap();
        }
        std::fs::remove_dir_all(inside).unwrap();
        std::fs::remove_dir_all(absolute_inside).unwrap();
        std::fs::remove_dir_all(outside).unwrap();
    }

    #[test]
    fn rootfs_command_gets_defaults_env_and_a_writable_root() {
        let dir = bundle("rootfs", "{}");
        let args = vec!["echo".to_string(), "hi".to_string()];
        let env = vec!["FOO=bar".to_string(), "TERM=dumb".to_string()];
        let command = RootfsCommand {
            args: &args,
            env: &env,
            cwd: Some("/tmp"),
            terminal: false,
        };
        let bundle = from_rootfs(&dir.join("rootfs"), &command).unwrap();
        assert!(!bundle.read_only_root);
        let spec = serde_json::to_value(&bundle.spec).unwrap();
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
