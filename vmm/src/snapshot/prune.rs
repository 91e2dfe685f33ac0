//! Keeping the snapshot cache small: a new default snapshot replaces the
//! ones it makes useless.
//!
//! Every rebuild of the kernel, the initramfs or the VMM gives the default
//! snapshot a new cache key, and each snapshot holds its guest's memory
//! (tens of MiB): without pruning, the cache grows by one such directory
//! per rebuild. So once a snapshot is saved in the cache, the others made
//! for the same VM shape (vCPUs, memory, command line, host profile) from
//! other inputs go, as do those no VMM of this version can read and what an
//! interrupted `snapshot create` left. Snapshots of other shapes stay: a
//! host may use several.
//!
//! A VMM already restored from a removed snapshot keeps running: its memory
//! file stays mapped, and the kernel frees it when the last mapping goes.

use std::path::{Path, PathBuf};

use super::state::SnapshotInputs;
use super::{file, BUILDING_PID, BUILDING_PREFIX};

/// Whether a snapshot made from `old` (`None`: unreadable by this VMM) is
/// useless once one made from `new` is in the cache.
pub fn replaced_by(new: &SnapshotInputs, old: Option<&SnapshotInputs>) -> bool {
    let Some(old) = old else {
        return true;
    };
    let shape = |i: &SnapshotInputs| {
        (
            i.vcpus,
            i.memory_mib,
            i.extra_cmdline.clone(),
            i.compat_profile,
        )
    };
    old != new && shape(old) == shape(new)
}

/// Removes from `cache` (the directory of cached snapshots) every snapshot
/// that the one in `kept`, made from `inputs`, replaces, and the building
/// directories of `snapshot create` runs that are gone. Returns what it
/// removed; what it cannot remove is logged and left.
pub fn prune(cache: &Path, kept: &Path, inputs: &SnapshotInputs) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path == kept || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = if name.starts_with(BUILDING_PREFIX) {
            builder_is_gone(&name)
        } else {
            let (state, _) = file::paths(&path);
            let old = file::read_state(&state).ok().map(|s| s.meta.inputs);
            replaced_by(inputs, old.as_ref())
        };
        if !stale {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed a snapshot the new one replaces");
                removed.push(path);
            }
            Err(e) => tracing::warn!(dir = %path.display(), "cannot remove an old snapshot: {e}"),
        }
    }
    removed
}

/// Whether the `snapshot create` that builds in directory `name` has ended
/// (its process is gone): then nothing will rename it into place.
fn builder_is_gone(name: &str) -> bool {
    let Some((_, pid)) = name.rsplit_once(BUILDING_PID) else {
        // Not ours: leave it.
        return false;
    };
    match pid.parse::<u32>() {
        Ok(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::inputs;
    use super::*;

    #[test]
    fn an_older_build_of_the_same_shape_is_replaced() {
        let new = inputs();
        for old in [
            SnapshotInputs {
                initrd_digest: Some("i0".into()),
                ..inputs()
            },
            SnapshotInputs {
                kernel_digest: "k0".into(),
                ..inputs()
            },
            SnapshotInputs {
                vmm_version: "0.0.9".into(),
                ..inputs()
            },
        ] {
            assert!(replaced_by(&new, Some(&old)), "{old:?}");
        }
        assert!(replaced_by(&new, None), "unreadable");
    }

    #[test]
    fn other_shapes_and_the_same_snapshot_are_kept() {
        let new = inputs();
        assert!(!replaced_by(&new, Some(&inputs())));
        for old in [
            SnapshotInputs {
                vcpus: 1,
                initrd_digest: Some("i0".into()),
                ..inputs()
            },
            SnapshotInputs {
                memory_mib: 512,
                ..inputs()
            },
            SnapshotInputs {
                extra_cmdline: vec!["quiet".into()],
                ..inputs()
            },
            SnapshotInputs {
                compat_profile: false,
                ..inputs()
            },
        ] {
            assert!(!replaced_by(&new, Some(&old)), "{old:?}");
        }
    }

    #[test]
    fn prune_removes_unreadable_and_abandoned_dirs_only() {
        let cache = std::env::temp_dir().join(format!("vmrun-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let dir = |name: &str| {
            let path = cache.join(name);
            std::fs::create_dir_all(&path).unwrap();
            path
        };
        let kept = dir("0123456789abcdef");
        let unreadable = dir("fedcba9876543210");
        std::fs::write(unreadable.join("state"), b"not a state file").unwrap();
        let abandoned = dir(".0123456789abcdef.new-4294967295");
        let building = dir(&format!(".0123456789abcdef.new-{}", std::process::id()));
        let foreign = dir(".something-else");
        std::fs::write(cache.join("a-file"), b"").unwrap();

        let mut removed = prune(&cache, &kept, &inputs());
        removed.sort();
        let mut expected = vec![abandoned, unreadable];
        expected.sort();
        assert_eq!(removed, expected);
        for left in [&kept, &building, &foreign] {
            assert!(left.is_dir(), "{} was removed", left.display());
        }
        assert!(cache.join("a-file").is_file());
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
