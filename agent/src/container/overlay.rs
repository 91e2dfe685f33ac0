//! The writable layer over a container's rootfs: an overlay whose upper
//! layer lives on a tmpfs of the container's own, so writes never reach the
//! host's copy and vanish with the container.

use std::fs;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::error::ContainerError;
use super::layout::BundleLayout;
use crate::mount_syscalls::{MountCall, MountSyscalls};

const OP: &str = "create container";

/// Mounts the tmpfs and the overlay over `lower` at the bundle's rootfs.
/// Undoes its own steps when one fails.
pub fn mount_overlay(
    mounts: &dyn MountSyscalls,
    id: &str,
    bundle: &BundleLayout,
    lower: &Path,
) -> Result<(), ContainerError> {
    let lower_text = lower
        .to_str()
        .filter(|text| !text.contains([',', ':', '\\']));
    let Some(lower_text) = lower_text else {
        return Err(ContainerError::invalid(
            OP,
            format!(
                "rootfs {:?} cannot be an overlay's lower layer (',', ':' and '\\' are not allowed)",
                lower.display().to_string()
            ),
        ));
    };
    let tmpfs = bundle.overlay_tmpfs();
    make_dir(id, &tmpfs)?;
    mount(
        mounts,
        id,
        &MountCall {
            source: "tmpfs",
            target: &tmpfs,
            fstype: "tmpfs",
            flags: MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            data: Some("mode=0700"),
        },
    )?;
    let layered = (|| {
        make_dir(id, &bundle.overlay_upper())?;
        make_dir(id, &bundle.overlay_work())?;
        make_dir(id, &bundle.overlay_rootfs())?;
        let data = format!(
            "lowerdir={lower_text},upperdir={},workdir={}",
            bundle.overlay_upper().display(),
            bundle.overlay_work().display()
        );
        mount(
            mounts,
            id,
            &MountCall {
                source: "overlay",
                target: &bundle.overlay_rootfs(),
                fstype: "overlay",
                flags: MsFlags::empty(),
                data: Some(&data),
            },
        )
    })();
    if let Err(error) = layered {
        if let Err(errno) = mounts.unmount_detached(&tmpfs) {
            tracing::warn!(%errno, tmpfs = %tmpfs.display(), "cannot undo the overlay's tmpfs");
        }
        return Err(error);
    }
    Ok(())
}

/// Detaches the overlay and its tmpfs (the container's mount namespace may
/// still hold them until its last process is gone). Whatever is not
/// mounted is skipped, so this can follow a half-done setup.
pub fn unmount_overlay(
    mounts: &dyn MountSyscalls,
    id: &str,
    bundle: &BundleLayout,
) -> Result<(), ContainerError> {
    for target in [bundle.overlay_rootfs(), bundle.overlay_tmpfs()] {
        if !target.exists() {
            continue;
        }
        match mounts.unmount_detached(&target) {
            // EINVAL: not a mount point (never mounted, or already gone).
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(errno) => {
                return Err(ContainerError::io(
                    "remove container",
                    id,
                    "cannot unmount",
                    target,
                )(errno.into()))
            }
        }
    }
    Ok(())
}

fn make_dir(id: &str, path: &Path) -> Result<(), ContainerError> {
    fs::create_dir_all(path).map_err(ContainerError::io(OP, id, "cannot create", path))
}

fn mount(mounts: &dyn MountSyscalls, id: &str, call: &MountCall<'_>) -> Result<(), ContainerError> {
    mounts.mount(call).map_err(|errno| ContainerError::Runtime {
        op: OP,
        id: id.to_owned(),
        message: format!("cannot mount {call}: {errno}"),
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::container::layout::StateLayout;
    use crate::mount_syscalls::fake::FakeMounts;
    use crate::scratch_dir::ScratchDir;

    fn temp_state() -> ScratchDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        ScratchDir::new(&format!("overlay-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
    }

    #[test]
    fn tmpfs_then_overlay_and_back() {
        let root = temp_state();
        let bundle = StateLayout::new(root.path()).bundle("web");
        let mounts = FakeMounts::default();
        mount_overlay(&mounts, "web", &bundle, Path::new("/run/storage/web")).unwrap();
        let calls = mounts.calls();
        assert_eq!(calls.len(), 2);
        assert!(calls[0].starts_with(&format!(
            "mount tmpfs tmpfs on {}",
            bundle.overlay_tmpfs().display()
        )));
        assert!(calls[1].contains(&format!(
            "data=lowerdir=/run/storage/web,upperdir={},workdir={}",
            bundle.overlay_upper().display(),
            bundle.overlay_work().display()
        )));
        assert_eq!(mounts.mounted().len(), 2);

        unmount_overlay(&mounts, "web", &bundle).unwrap();
        assert!(mounts.mounted().is_empty());
    }

    #[test]
    fn a_failed_overlay_leaves_no_tmpfs_behind() {
        let root = temp_state();
        let bundle = StateLayout::new(root.path()).bundle("web");
        let mounts = FakeMounts::default();
        mounts.fail_mount("overlay", Errno::EINVAL);
        let error = mount_overlay(&mounts, "web", &bundle, Path::new("/lower")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot mount overlay overlay on"),
            "{error}"
        );
        assert!(mounts.mounted().is_empty());
    }

    #[test]
    fn lower_paths_overlayfs_cannot_take_are_rejected() {
        let root = temp_state();
        let bundle = StateLayout::new(root.path()).bundle("web");
        let mounts = FakeMounts::default();
        let error = mount_overlay(&mounts, "web", &bundle, Path::new("/a,b")).unwrap_err();
        assert!(
            matches!(error, ContainerError::InvalidArgument { .. }),
            "{error}"
        );
        assert!(mounts.calls().is_empty());
    }
}
