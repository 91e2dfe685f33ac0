//! The storage the agent mounted, by mount point.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;

use super::error::StorageError;
use super::request::{checked_mount_point, MountSpec};
use crate::mount_syscalls::{MountCall, MountSyscalls};

/// Mounts and unmounts what the host hands over. Blocking methods: call
/// them from a blocking thread.
#[derive(Debug)]
pub struct StorageManager {
    mounts: Arc<dyn MountSyscalls>,
    mounted: Mutex<HashMap<PathBuf, MountSpec>>,
    /// The host's names for virtio-fs tags, in a guest whose devices carry
    /// slot tags (restored from a snapshot): host name -> device tag.
    share_tags: Mutex<HashMap<String, String>>,
}

/// How long a mount waits for a disk of size 0 to grow.
const CAPACITY_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Waits (a while) until the block device `device` has a nonzero size. A
/// guest restored from a snapshot probed its disk slots empty; the VMM
/// binds them to this sandbox's disks and raises a configuration change,
/// which the kernel handles in a work queue: a mount right after the
/// restore can be ahead of it. Devices the kernel does not list as block
/// devices are not waited for.
fn wait_for_capacity(device: &Path) {
    let Some(name) = device.file_name() else {
        return;
    };
    let size_file = Path::new("/sys/class/block").join(name).join("size");
    let deadline = std::time::Instant::now() + CAPACITY_WAIT;
    while std::fs::read_to_string(&size_file).is_ok_and(|size| size.trim() == "0") {
        if std::time::Instant::now() > deadline {
            tracing::warn!(device = %device.display(), "disk still has size 0");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl StorageManager {
    pub fn new(mounts: Arc<dyn MountSyscalls>) -> Self {
        Self {
            mounts,
            mounted: Mutex::new(HashMap::new()),
            share_tags: Mutex::new(HashMap::new()),
        }
    }

    /// From now on, a virtio-fs mount of `host_tags[i]` mounts the device
    /// tagged [`share_slot_tag(i)`](crate::share_slot_tag).
    pub fn name_share_slots(&self, host_tags: &[String]) {
        let mut tags = self
            .share_tags
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tags.clear();
        for (i, host_tag) in host_tags.iter().enumerate() {
            tags.insert(host_tag.clone(), crate::share_slot_tag(i));
        }
    }

    /// The device tag to mount for a virtio-fs `source`.
    fn device_tag(&self, spec: &MountSpec) -> String {
        let tags = self
            .share_tags
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match tags.get(&spec.source) {
            Some(slot) if spec.fstype == "virtiofs" => slot.clone(),
            _ => spec.source.clone(),
        }
    }

    pub fn mount(&self, spec: MountSpec) -> Result<(), StorageError> {
        let mut mounted = self.lock();
        if mounted.contains_key(&spec.mount_point) {
            return Err(StorageError::AlreadyMounted {
                mount_point: spec.mount_point,
            });
        }
        if spec.source_is_device && !Path::new(&spec.source).exists() {
            return Err(StorageError::NoSource {
                source_path: PathBuf::from(spec.source),
            });
        }
        if spec.source_is_device {
            wait_for_capacity(Path::new(&spec.source));
        }
        std::fs::create_dir_all(&spec.mount_point).map_err(|source| {
            StorageError::MakeMountPoint {
                mount_point: spec.mount_point.clone(),
                source,
            }
        })?;
        let source = self.device_tag(&spec);
        let call = MountCall {
            source: &source,
            target: &spec.mount_point,
            fstype: &spec.fstype,
            flags: spec.flags,
            data: spec.data.as_deref(),
        };
        self.mounts
            .mount(&call)
            .map_err(|errno| StorageError::Mount {
                fstype: spec.fstype.clone(),
                source_name: spec.source.clone(),
                mount_point: spec.mount_point.clone(),
                errno,
            })?;
        tracing::info!(mount = %call, "storage mounted");
        mounted.insert(spec.mount_point.clone(), spec);
        Ok(())
    }

    pub fn unmount(&self, mount_point: &str) -> Result<(), StorageError> {
        let mount_point = checked_mount_point("unmount storage", mount_point)?;
        let mut mounted = self.lock();
        if !mounted.contains_key(&mount_point) {
            return Err(StorageError::NotMounted { mount_point });
        }
        match self.mounts.unmount(&mount_point) {
            // Gone already (unmounted behind our back): forget it too.
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(errno) => return Err(StorageError::Unmount { mount_point, errno }),
        }
        mounted.remove(&mount_point);
        tracing::info!(mount_point = %mount_point.display(), "storage unmounted");
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, MountSpec>> {
        // Whole inserts and removes only.
        self.mounted.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount_syscalls::fake::FakeMounts;
    use crate::proto::MountStorageRequest;
    use crate::scratch_dir::ScratchDir;

    fn spec(source: &str, fstype: &str, mount_point: &Path) -> MountSpec {
        MountSpec::try_from(MountStorageRequest {
            source: source.into(),
            fstype: fstype.into(),
            mount_point: mount_point.display().to_string(),
            options: vec![],
            read_only: true,
        })
        .unwrap()
    }

    #[test]
    fn mount_creates_the_mount_point_and_refuses_a_second_time() {
        let fake = Arc::new(FakeMounts::default());
        let storage = StorageManager::new(fake.clone());
        let scratch = ScratchDir::new("storage-twice");
        let target = scratch.path().join("rootfs");
        storage
            .mount(spec("rootfs-web", "virtiofs", &target))
            .unwrap();
        assert!(target.is_dir());
        assert_eq!(fake.mounted(), std::slice::from_ref(&target));
        let error = storage
            .mount(spec("other", "virtiofs", &target))
            .unwrap_err();
        assert!(
            matches!(error, StorageError::AlreadyMounted { .. }),
            "{error}"
        );

        storage.unmount(target.to_str().unwrap()).unwrap();
        assert!(fake.mounted().is_empty());
        let error = storage.unmount(target.to_str().unwrap()).unwrap_err();
        assert!(matches!(error, StorageError::NotMounted { .. }), "{error}");
    }

    #[test]
    fn host_share_names_mount_their_slot_devices() {
        let fake = Arc::new(FakeMounts::default());
        let storage = StorageManager::new(fake.clone());
        storage.name_share_slots(&["sandbox".to_string(), "data".to_string()]);
        let scratch = ScratchDir::new("storage-slots");
        let target = scratch.path();
        storage
            .mount(spec("data", "virtiofs", &target.join("data")))
            .unwrap();
        storage
            .mount(spec("other", "virtiofs", &target.join("other")))
            .unwrap();
        let calls = fake.calls().join("\n");
        assert!(calls.contains("vmrun-fs1"), "{calls}");
        assert!(calls.contains("other"), "{calls}");
        assert!(
            !calls.contains("data on") && !calls.contains("vmrun-fs0"),
            "{calls}"
        );
    }

    #[test]
    fn a_missing_device_is_reported_before_mounting() {
        let fake = Arc::new(FakeMounts::default());
        let storage = StorageManager::new(fake.clone());
        let scratch = ScratchDir::new("storage-nodev");
        let error = storage
            .mount(spec(
                "/dev/does-not-exist",
                "ext4",
                &scratch.path().join("target"),
            ))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "mount storage: source /dev/does-not-exist does not exist"
        );
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn a_busy_unmount_keeps_the_record() {
        let fake = Arc::new(FakeMounts::default());
        let storage = StorageManager::new(fake.clone());
        let scratch = ScratchDir::new("storage-busy");
        let target = scratch.path().join("target");
        storage.mount(spec("tag", "virtiofs", &target)).unwrap();
        fake.fail_unmount(&target, Errno::EBUSY);
        let error = storage.unmount(target.to_str().unwrap()).unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Unmount {
                    errno: Errno::EBUSY,
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(fake.mounted(), std::slice::from_ref(&target));
    }
}
