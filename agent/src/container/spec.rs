//! Checks an OCI runtime spec from the host and rewrites it for the guest:
//! the rootfs the host gave, a cgroup of the agent's choosing when the spec
//! names none usable, and the terminal the host asked for.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{BoxBuilder, Process, Spec};

use super::error::ContainerError;
use crate::inherited_env;
use crate::process::TerminalSize;

const OP: &str = "create container";

/// Longest container id accepted.
pub const MAX_CONTAINER_ID_LEN: usize = 128;

/// What the host asked for besides the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecOptions<'a> {
    pub id: &'a str,
    /// The rootfs the host gave (empty: `root.path` must be absolute).
    pub rootfs: &'a Path,
    /// Where the container's root really is, when it differs from the
    /// rootfs (the writable overlay's mount point).
    pub root_override: Option<&'a Path>,
    /// Parent of the cgroup picked when the spec names none.
    pub cgroup_parent: &'a str,
    pub terminal: Option<TerminalSize>,
}

/// A spec ready for libcontainer.
#[derive(Debug, Clone)]
pub struct PreparedSpec {
    pub spec: Spec,
    /// The rootfs the container's root is (or is layered over).
    pub rootfs: PathBuf,
    /// `linux.cgroupsPath`: absolute, below the cgroup v2 root.
    pub cgroup_path: String,
}

/// Checks a container id: what libcontainer accepts, and short enough for
/// socket paths below the state root.
pub fn validate_container_id(op: &'static str, id: &str) -> Result<(), ContainerError> {
    if id.is_empty() {
        return Err(ContainerError::invalid(op, "container_id is empty"));
    }
    if id.len() > MAX_CONTAINER_ID_LEN {
        return Err(ContainerError::invalid(
            op,
            format!("container_id is longer than {MAX_CONTAINER_ID_LEN} bytes"),
        ));
    }
    if id == "." || id == ".." {
        return Err(ContainerError::invalid(
            op,
            format!("container_id {id:?} is not a valid name"),
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.')))
    {
        return Err(ContainerError::invalid(
            op,
            format!("container_id {id:?} contains {bad:?} (allowed: A-Z a-z 0-9 _ + - .)"),
        ));
    }
    Ok(())
}

/// Parses, checks and rewrites `config.json`.
pub fn prepare_spec(
    json: &[u8],
    options: &SpecOptions<'_>,
) -> Result<PreparedSpec, ContainerError> {
    let mut spec: Spec = serde_json::from_slice(json).map_err(|error| {
        ContainerError::invalid(OP, format!("spec_json is not an OCI runtime spec: {error}"))
    })?;
    if !spec.version().starts_with("1.") {
        return Err(ContainerError::invalid(
            OP,
            format!("ociVersion {:?} is not supported (1.x is)", spec.version()),
        ));
    }

    let process = spec
        .process_mut()
        .as_mut()
        .ok_or_else(|| ContainerError::invalid(OP, "process is missing"))?;
    check_process(OP, process)?;
    apply_terminal(process, options.terminal);
    inherited_env::add_to_process(process, inherited_env::agent_value());

    let rootfs = resolve_rootfs(&spec, options.rootfs)?;
    let root_path = options.root_override.unwrap_or(&rootfs).to_owned();
    if let Some(root) = spec.root_mut() {
        root.set_path(root_path);
    }

    let linux = spec
        .linux_mut()
        .as_mut()
        .ok_or_else(|| ContainerError::invalid(OP, "linux is missing"))?;
    let cgroup_path = choose_cgroup_path(
        linux.cgroups_path().as_deref(),
        options.cgroup_parent,
        options.id,
    )?;
    linux.set_cgroups_path(Some(PathBuf::from(&cgroup_path)));

    Ok(PreparedSpec {
        spec,
        rootfs,
        cgroup_path,
    })
}

/// Checks what every process needs: a program and an absolute cwd.
pub fn check_process(op: &'static str, process: &Process) -> Result<(), ContainerError> {
    let args = process.args().as_deref().unwrap_or_default();
    match args.first() {
        None => return Err(ContainerError::invalid(op, "process.args is empty")),
        Some(program) if program.is_empty() => {
            return Err(ContainerError::invalid(op, "process.args[0] is empty"))
        }
        Some(_) => {}
    }
    if args.iter().any(|arg| arg.contains('\0')) {
        return Err(ContainerError::invalid(
            op,
            "process.args contains a NUL byte",
        ));
    }
    if !process.cwd().is_absolute() {
        return Err(ContainerError::invalid(
            op,
            format!(
                "process.cwd {:?} is not an absolute path",
                process.cwd().display().to_string()
            ),
        ));
    }
    for entry in process.env().as_deref().unwrap_or_default() {
        let is_key_value = matches!(entry.split_once('='), Some((key, _)) if !key.is_empty());
        if !is_key_value {
            return Err(ContainerError::invalid(
                op,
                format!("process.env entry {entry:?} is not KEY=VALUE"),
            ));
        }
    }
    Ok(())
}

/// The host decides about the terminal; a `runc spec` says `true`.
pub fn apply_terminal(process: &mut Process, terminal: Option<TerminalSize>) {
    process.set_terminal(Some(terminal.is_some()));
    // Building a box of two numbers cannot fail.
    let size = terminal.and_then(|size| {
        BoxBuilder::default()
            .height(u64::from(size.rows))
            .width(u64::from(size.cols))
            .build()
            .ok()
    });
    process.set_console_size(size);
}

fn resolve_rootfs(spec: &Spec, given: &Path) -> Result<PathBuf, ContainerError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| ContainerError::invalid(OP, "root.path is missing"))?;
    let path = root.path();
    if path.as_os_str().is_empty() {
        return Err(ContainerError::invalid(OP, "root.path is empty"));
    }
    if given.as_os_str().is_empty() {
        if path.is_relative() {
            return Err(ContainerError::invalid(
                OP,
                format!(
                    "root.path {:?} is relative, but no rootfs was given to resolve it against",
                    path.display().to_string()
                ),
            ));
        }
        return Ok(path.to_owned());
    }
    if !given.is_absolute() {
        return Err(ContainerError::invalid(
            OP,
            format!(
                "rootfs {:?} is not an absolute path",
                given.display().to_string()
            ),
        ));
    }
    if path.is_absolute() && path != given {
        return Err(ContainerError::invalid(
            OP,
            format!(
                "root.path {:?} is absolute and differs from rootfs {:?}",
                path.display().to_string(),
                given.display().to_string()
            ),
        ));
    }
    Ok(given.to_owned())
}

/// The spec's cgroup when it is a plain path; otherwise (none, or a
/// systemd slice "slice:prefix:name" that needs a systemd the guest lacks)
/// `<parent>/<id>`.
fn choose_cgroup_path(
    requested: Option<&Path>,
    parent: &str,
    id: &str,
) -> Result<String, ContainerError> {
    let requested = requested.map(|p| p.to_string_lossy().into_owned());
    let path = match requested {
        Some(path) if !path.is_empty() && !path.contains(':') => {
            if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            }
        }
        _ => format!("{}/{id}", parent.trim_end_matches('/')),
    };
    if Path::new(&path)
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(ContainerError::invalid(
            OP,
            format!("linux.cgroupsPath {path:?} must not contain '.' or '..'"),
        ));
    }
    if path.trim_matches('/').is_empty() {
        return Err(ContainerError::invalid(
            OP,
            "linux.cgroupsPath must not be the root cgroup",
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn runc_like_spec() -> serde_json::Value {
        json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": true,
                "user": {"uid": 0, "gid": 0},
                "args": ["sh"],
                "env": ["PATH=/bin", "TERM=xterm"],
                "cwd": "/"
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "runc",
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        })
    }

    fn options(rootfs: &str) -> SpecOptions<'_> {
        SpecOptions {
            id: "web",
            rootfs: Path::new(rootfs),
            root_override: None,
            cgroup_parent: "/vmrun",
            terminal: None,
        }
    }

    fn prepare(
        spec: &serde_json::Value,
        options: &SpecOptions<'_>,
    ) -> Result<PreparedSpec, ContainerError> {
        prepare_spec(spec.to_string().as_bytes(), options)
    }

    fn rejection(spec: &serde_json::Value, options: &SpecOptions<'_>) -> String {
        match prepare(spec, options) {
            Ok(prepared) => panic!("accepted {:?}", prepared.spec),
            Err(error @ ContainerError::InvalidArgument { .. }) => error.to_string(),
            Err(other) => panic!("not an invalid argument: {other}"),
        }
    }

    #[test]
    fn relative_root_path_is_the_rootfs_the_host_gave() {
        let prepared = prepare(&runc_like_spec(), &options("/run/storage/web")).unwrap();
        let root = prepared.spec.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("/run/storage/web"));
        assert_eq!(root.readonly(), Some(true));
        assert_eq!(prepared.rootfs, Path::new("/run/storage/web"));
    }

    #[test]
    fn the_overlay_becomes_the_root_over_the_given_rootfs() {
        let mut opts = options("/run/storage/web");
        opts.root_override = Some(Path::new("/run/vmrun-agent/c/web/rootfs"));
        let prepared = prepare(&runc_like_spec(), &opts).unwrap();
        assert_eq!(
            prepared.spec.root().as_ref().unwrap().path(),
            Path::new("/run/vmrun-agent/c/web/rootfs")
        );
        assert_eq!(prepared.rootfs, Path::new("/run/storage/web"));
    }

    #[test]
    fn absolute_root_path_must_match_or_stand_alone() {
        let mut spec = runc_like_spec();
        spec["root"]["path"] = json!("/guest/rootfs");
        let prepared = prepare(&spec, &options("")).unwrap();
        assert_eq!(prepared.rootfs, Path::new("/guest/rootfs"));
        let prepared = prepare(&spec, &options("/guest/rootfs")).unwrap();
        assert_eq!(prepared.rootfs, Path::new("/guest/rootfs"));
        assert_eq!(
            rejection(&spec, &options("/elsewhere")),
            r#"create container: root.path "/guest/rootfs" is absolute and differs from rootfs "/elsewhere""#
        );
        assert_eq!(
            rejection(&runc_like_spec(), &options("")),
            r#"create container: root.path "rootfs" is relative, but no rootfs was given to resolve it against"#
        );
        assert_eq!(
            rejection(&runc_like_spec(), &options("relative/dir")),
            r#"create container: rootfs "relative/dir" is not an absolute path"#
        );
    }

    #[test]
    fn missing_pieces_are_named() {
        let mut spec = runc_like_spec();
        spec["process"]["args"] = json!([]);
        assert_eq!(
            rejection(&spec, &options("/r")),
            "create container: process.args is empty"
        );
        spec["process"]["args"] = json!([""]);
        assert_eq!(
            rejection(&spec, &options("/r")),
            "create container: process.args[0] is empty"
        );

        let mut spec = runc_like_spec();
        spec["process"]["cwd"] = json!("work");
        assert_eq!(
            rejection(&spec, &options("/r")),
            r#"create container: process.cwd "work" is not an absolute path"#
        );

        let mut spec = runc_like_spec();
        spec["process"]["env"] = json!(["PATH=/bin", "oops"]);
        assert_eq!(
            rejection(&spec, &options("/r")),
            r#"create container: process.env entry "oops" is not KEY=VALUE"#
        );

        for (field, message) in [
            ("process", "create container: process is missing"),
            ("root", "create container: root.path is missing"),
            ("linux", "create container: linux is missing"),
        ] {
            let mut spec = runc_like_spec();
            spec.as_object_mut().unwrap().remove(field);
            assert_eq!(rejection(&spec, &options("/r")), message);
        }

        let mut spec = runc_like_spec();
        spec["ociVersion"] = json!("0.9");
        assert_eq!(
            rejection(&spec, &options("/r")),
            r#"create container: ociVersion "0.9" is not supported (1.x is)"#
        );
    }

    #[test]
    fn garbage_is_rejected_with_serdes_reason() {
        let error = prepare_spec(b"{\"process\": 3", &options("/r")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("create container: spec_json is not an OCI runtime spec: "),
            "{error}"
        );
    }

    #[test]
    fn cgroup_path_is_always_set() {
        let prepared = prepare(&runc_like_spec(), &options("/r")).unwrap();
        assert_eq!(prepared.cgroup_path, "/vmrun/web");
        let linux = prepared.spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/vmrun/web"))
        );

        let mut spec = runc_like_spec();
        spec["linux"]["cgroupsPath"] = json!("pods/p1/web");
        assert_eq!(
            prepare(&spec, &options("/r")).unwrap().cgroup_path,
            "/pods/p1/web"
        );

        spec["linux"]["cgroupsPath"] = json!("system.slice:cri-containerd:web");
        assert_eq!(
            prepare(&spec, &options("/r")).unwrap().cgroup_path,
            "/vmrun/web"
        );

        spec["linux"]["cgroupsPath"] = json!("/pods/../escape");
        assert_eq!(
            rejection(&spec, &options("/r")),
            r#"create container: linux.cgroupsPath "/pods/../escape" must not contain '.' or '..'"#
        );
        spec["linux"]["cgroupsPath"] = json!("/");
        assert_eq!(
            rejection(&spec, &options("/r")),
            "create container: linux.cgroupsPath must not be the root cgroup"
        );
    }

    #[test]
    fn terminal_follows_the_request() {
        let prepared = prepare(&runc_like_spec(), &options("/r")).unwrap();
        let process = prepared.spec.process().as_ref().unwrap();
        assert_eq!(process.terminal(), Some(false));
        assert_eq!(process.console_size(), None);

        let mut opts = options("/r");
        opts.terminal = Some(TerminalSize {
            rows: 30,
            cols: 100,
        });
        let prepared = prepare(&runc_like_spec(), &opts).unwrap();
        let process = prepared.spec.process().as_ref().unwrap();
        assert_eq!(process.terminal(), Some(true));
        let size = process.console_size().unwrap();
        assert_eq!((size.height(), size.width()), (30, 100));
    }

    #[test]
    fn container_ids_are_checked() {
        for good in ["web", "a.b_c+d-1", &"x".repeat(128)] {
            validate_container_id("op", good).unwrap();
        }
        for (bad, reason) in [
            ("", "op: container_id is empty"),
            ("..", r#"op: container_id ".." is not a valid name"#),
            (
                "a/b",
                r#"op: container_id "a/b" contains '/' (allowed: A-Z a-z 0-9 _ + - .)"#,
            ),
        ] {
            assert_eq!(
                validate_container_id("op", bad).unwrap_err().to_string(),
                reason
            );
        }
        assert!(validate_container_id("op", &"x".repeat(129)).is_err());
    }
}
