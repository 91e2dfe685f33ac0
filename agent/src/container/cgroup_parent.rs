//! The cgroup parent of containers whose spec names no cgroup, made ready
//! once per guest instead of by the first container.
//!
//! libcontainer creates every missing level of a container's cgroup path and
//! enables the available controllers in each parent's
//! `cgroup.subtree_control`. For `/vmrun/<id>` that is two new cgroups for
//! the first container, each a few hundred milliseconds of kernel work under
//! a software KVM. The agent makes the parent before its ready line, so a
//! snapshot holds it and every restored sandbox's first container only
//! creates its own level; libcontainer finds the parent there and enabling
//! controllers that are already enabled changes nothing.
//!
//! Plain file operations on any directory, so it is tested on a fake cgroup
//! root.

use std::io;
use std::path::{Component, Path, PathBuf};

/// A step of [`prepare`] that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupParentError {
    #[error("cgroup parent {parent:?} must be a path of plain names below the cgroup root")]
    Parent { parent: String },
    #[error("cannot read the available controllers in {path}: {source}")]
    Controllers { path: PathBuf, source: io::Error },
    #[error("cannot create cgroup {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot enable controllers {controllers:?} in {path}: {source}")]
    Enable {
        path: PathBuf,
        controllers: String,
        source: io::Error,
    },
}

/// Creates `parent` (absolute, below `cgroup_root`) with every controller
/// the root offers enabled for its children, and in every level above it.
pub fn prepare(cgroup_root: &Path, parent: &str) -> Result<(), CgroupParentError> {
    let available = cgroup_root.join("cgroup.controllers");
    let controllers = std::fs::read_to_string(&available)
        .map_err(|source| CgroupParentError::Controllers {
            path: available,
            source,
        })?
        .split_whitespace()
        .map(|name| format!("+{name}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut levels = Vec::new();
    for component in Path::new(parent).components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => levels.push(name),
            _ => {
                return Err(CgroupParentError::Parent {
                    parent: parent.to_owned(),
                })
            }
        }
    }
    let mut level = cgroup_root.to_owned();
    enable(&level, &controllers)?;
    for name in levels {
        level.push(name);
        match std::fs::create_dir(&level) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && level.is_dir() => {}
            Err(source) => {
                return Err(CgroupParentError::Create {
                    path: level,
                    source,
                })
            }
        }
        enable(&level, &controllers)?;
    }
    Ok(())
}

/// One write with all of them. The kernel takes the list all or none: if
/// it refuses one controller, none is enabled here, and the first
/// container's libcontainer enables them one by one as it always does.
fn enable(cgroup: &Path, controllers: &str) -> Result<(), CgroupParentError> {
    if controllers.is_empty() {
        return Ok(());
    }
    std::fs::write(cgroup.join("cgroup.subtree_control"), controllers).map_err(|source| {
        CgroupParentError::Enable {
            path: cgroup.to_owned(),
            controllers: controllers.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir::ScratchDir;

    fn fake_root(test: &str, controllers: &str) -> ScratchDir {
        let root = ScratchDir::new(&format!("cgroup-parent-{test}"));
        std::fs::write(root.path().join("cgroup.controllers"), controllers).unwrap();
        root
    }

    fn enabled(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap()
    }

    #[test]
    fn creates_every_level_with_the_root_controllers_enabled() {
        let root = fake_root("levels", "cpuset cpu io memory pids\n");
        prepare(root.path(), "/vmrun/pods").unwrap();
        let all = "+cpuset +cpu +io +memory +pids";
        assert_eq!(enabled(root.path()), all);
        assert_eq!(enabled(&root.path().join("vmrun")), all);
        assert_eq!(enabled(&root.path().join("vmrun/pods")), all);
    }

    #[test]
    fn an_existing_parent_is_kept() {
        let root = fake_root("existing", "pids");
        let parent = root.path().join("vmrun");
        std::fs::create_dir(&parent).unwrap();
        std::fs::write(parent.join("marker"), "x").unwrap();
        prepare(root.path(), "/vmrun").unwrap();
        assert!(parent.join("marker").exists());
        assert_eq!(enabled(&parent), "+pids");
    }

    #[test]
    fn no_controllers_means_nothing_to_enable() {
        let root = fake_root("none", "");
        prepare(root.path(), "/vmrun").unwrap();
        assert!(root.path().join("vmrun").is_dir());
        assert!(!root.path().join("cgroup.subtree_control").exists());
    }

    #[test]
    fn errors_name_the_path() {
        let root = ScratchDir::new("cgroup-parent-unreadable");
        let error = prepare(root.path(), "/vmrun").unwrap_err().to_string();
        assert!(
            error.contains("cgroup.controllers")
                && error.contains(&root.path().display().to_string()),
            "{error}"
        );

        let root = fake_root("blocked", "pids");
        let blocked = root.path().join("vmrun");
        std::fs::write(&blocked, "a file where the cgroup goes").unwrap();
        let error = prepare(root.path(), "/vmrun/pods").unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("cannot create cgroup {}:", blocked.display())),
            "{error}"
        );
    }

    #[test]
    fn a_parent_that_leaves_the_root_is_refused_before_anything_is_made() {
        let root = fake_root("escape", "pids");
        for parent in ["/vmrun/../../etc", "./vmrun", "vmrun/.."] {
            let error = prepare(root.path(), parent).unwrap_err().to_string();
            assert!(error.starts_with("cgroup parent"), "{parent}: {error}");
        }
        assert!(!root.path().join("cgroup.subtree_control").exists());
        assert!(!root.path().join("vmrun").exists());
    }
}
