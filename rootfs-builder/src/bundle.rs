//! A small busybox OCI bundle (`config.json` + `rootfs/`) for tests and the
//! demo: what `runc spec` users expect, with a root filesystem to run it in.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::initramfs::APPLETS;

/// Errors building the bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Spec {
        path: PathBuf,
        source: oci_spec::OciSpecError,
    },
    #[error("{0} exists and is not empty: refusing to overwrite it")]
    NotEmpty(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
pub(crate) const GROUP: &str = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n";

/// Writes `dir/rootfs` (busybox, its applets, /etc/passwd and group, the
/// usual mount points) and `dir/config.json` (the runtime-spec defaults
/// that `runc spec` also writes, but with no terminal), running `args`
/// (empty: `sh`).
pub fn build(busybox: &Path, dir: &Path, args: &[String]) -> Result<(), BundleError> {
    if fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        return Err(BundleError::NotEmpty(dir.to_path_buf()));
    }
    let rootfs = dir.join("rootfs");
    for sub in [
        "bin",
        "dev",
        "etc",
        "home/user",
        "proc",
        "root",
        "sys",
        "tmp",
        "var",
    ] {
        let path = rootfs.join(sub);
        fs::create_dir_all(&path).map_err(io(&path))?;
    }
    let bin = rootfs.join("bin/busybox");
    fs::copy(busybox, &bin).map_err(io(busybox))?;
    for applet in APPLETS {
        let link = rootfs.join("bin").join(applet);
        symlink("busybox", &link).map_err(io(&link))?;
    }
    for (name, content) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
        let path = rootfs.join(name);
        fs::write(&path, content).map_err(io(&path))?;
    }
    let config = dir.join("config.json");
    let mut spec = Spec::default();
    if let Some(process) = spec.process_mut().as_mut().filter(|_| !args.is_empty()) {
        process.set_args(Some(args.to_vec()));
    }
    spec.save(&config).map_err(|source| BundleError::Spec {
        path: config.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_has_a_runnable_spec_and_rootfs() {
        let dir = std::env::temp_dir().join(format!("vmrun-bundle-{}", std::process::id()));
        let fake_busybox = std::env::temp_dir().join(format!("vmrun-bb-{}", std::process::id()));
        fs::write(&fake_busybox, b"#!busybox").unwrap();
        build(&fake_busybox, &dir, &[]).unwrap();
        let spec = Spec::load(dir.join("config.json")).unwrap();
        assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("rootfs"));
        let args = spec.process().as_ref().unwrap().args().clone().unwrap();
        assert_eq!(args, vec!["sh".to_string()]);
        assert_eq!(
            fs::read_link(dir.join("rootfs/bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(fs::read_to_string(dir.join("rootfs/etc/passwd"))
            .unwrap()
            .contains(":1000:"));
        // A second build into the same directory refuses to clobber it.
        assert!(matches!(
            build(&fake_busybox, &dir, &[]),
            Err(BundleError::NotEmpty(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_file(&fake_busybox).unwrap();
    }

    #[test]
    fn bundle_runs_the_process_asked_for() {
        let dir = std::env::temp_dir().join(format!("vmrun-bundle-demo-{}", std::process::id()));
        let fake_busybox =
            std::env::temp_dir().join(format!("vmrun-bb-demo-{}", std::process::id()));
        fs::write(&fake_busybox, b"#!busybox").unwrap();
        let args = ["echo".to_string(), "hello".to_string()];
        build(&fake_busybox, &dir, &args).unwrap();
        let spec = Spec::load(dir.join("config.json")).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_deref(), Some(&args[..]));
        assert_ne!(process.terminal(), Some(true));
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_file(&fake_busybox).unwrap();
    }
}
