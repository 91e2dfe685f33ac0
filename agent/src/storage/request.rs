//! Checks a `MountStorage` request and turns its options into mount(2)
//! flags and data.

use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;

use super::error::StorageError;
use crate::proto::MountStorageRequest;

const OP: &str = "mount storage";

/// File system types whose source is not a block device.
const VIRTIOFS: &str = "virtiofs";
const TMPFS: &str = "tmpfs";

/// A checked mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The tag, device path, or "tmpfs".
    pub source: String,
    pub fstype: String,
    pub mount_point: PathBuf,
    pub flags: MsFlags,
    /// Options the file system parses itself, comma-separated.
    pub data: Option<String>,
    /// Whether `source` is a block device that must exist.
    pub source_is_device: bool,
}

impl TryFrom<MountStorageRequest> for MountSpec {
    type Error = StorageError;

    fn try_from(request: MountStorageRequest) -> Result<Self, Self::Error> {
        let fstype = request.fstype;
        if fstype.is_empty() {
            return Err(StorageError::invalid(OP, "fstype is empty"));
        }
        if !fstype
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(StorageError::invalid(
                OP,
                format!("fstype {fstype:?} is not a file system type"),
            ));
        }
        let mount_point = checked_mount_point(OP, &request.mount_point)?;
        let (source, source_is_device) = match fstype.as_str() {
            VIRTIOFS => {
                if request.source.is_empty() || request.source.contains(['/', '\0', ',']) {
                    return Err(StorageError::invalid(
                        OP,
                        format!("source {:?} is not a virtio-fs tag", request.source),
                    ));
                }
                (request.source, false)
            }
            TMPFS => (TMPFS.to_owned(), false),
            _ => {
                if !request.source.starts_with('/') || request.source.contains('\0') {
                    return Err(StorageError::invalid(
                        OP,
                        format!(
                            "source {:?} is not a block device path (fstype {fstype})",
                            request.source
                        ),
                    ));
                }
                (request.source, true)
            }
        };
        let (mut flags, data) = parse_options(&request.options)?;
        if request.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        Ok(Self {
            source,
            fstype,
            mount_point,
            flags,
            data,
            source_is_device,
        })
    }
}

/// An absolute, normalized path other than `/`.
pub fn checked_mount_point(op: &'static str, path: &str) -> Result<PathBuf, StorageError> {
    if path.is_empty() {
        return Err(StorageError::invalid(op, "mount_point is empty"));
    }
    let candidate = Path::new(path);
    let normal = candidate.is_absolute()
        && !path.contains('\0')
        && candidate
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !normal {
        return Err(StorageError::invalid(
            op,
            format!("mount_point {path:?} is not an absolute path without '.' and '..'"),
        ));
    }
    if candidate.parent().is_none() {
        return Err(StorageError::invalid(op, "mount_point must not be /"));
    }
    Ok(candidate.components().collect())
}

/// mount(8)-style options: known flags become mount flags, the rest is
/// data for the file system.
pub fn parse_options(options: &[String]) -> Result<(MsFlags, Option<String>), StorageError> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        let flag = match option.as_str() {
            "ro" => MsFlags::MS_RDONLY,
            "rw" | "defaults" => MsFlags::empty(),
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "sync" => MsFlags::MS_SYNCHRONOUS,
            "dirsync" => MsFlags::MS_DIRSYNC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            "" => return Err(StorageError::invalid(OP, "an option is empty")),
            other if other.contains([',', '\0']) => {
                return Err(StorageError::invalid(
                    OP,
                    format!("option {other:?} contains ',' (give each option separately)"),
                ))
            }
            other => {
                data.push(other);
                continue;
            }
        };
        flags |= flag;
    }
    let data = (!data.is_empty()).then(|| data.join(","));
    Ok((flags, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        source: &str,
        fstype: &str,
        mount_point: &str,
        options: &[&str],
    ) -> MountStorageRequest {
        MountStorageRequest {
            source: source.into(),
            fstype: fstype.into(),
            mount_point: mount_point.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            read_only: false,
        }
    }

    fn rejection(request: MountStorageRequest) -> String {
        MountSpec::try_from(request).unwrap_err().to_string()
    }

    #[test]
    fn virtiofs_share_read_only() {
        let mut req = request(
            "rootfs-web",
            "virtiofs",
            "/run/vmrun/rootfs/web",
            &["noatime"],
        );
        req.read_only = true;
        let spec = MountSpec::try_from(req).unwrap();
        assert_eq!(spec.source, "rootfs-web");
        assert_eq!(spec.mount_point, Path::new("/run/vmrun/rootfs/web"));
        assert_eq!(spec.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOATIME);
        assert_eq!(spec.data, None);
        assert!(!spec.source_is_device);
    }

    #[test]
    fn block_device_with_flags_and_data() {
        let spec = MountSpec::try_from(request(
            "/dev/vdb",
            "ext4",
            "/data/",
            &["nodev", "nosuid", "errors=remount-ro", "commit=30"],
        ))
        .unwrap();
        assert!(spec.source_is_device);
        assert_eq!(spec.mount_point, Path::new("/data"));
        assert_eq!(spec.flags, MsFlags::MS_NODEV | MsFlags::MS_NOSUID);
        assert_eq!(spec.data.as_deref(), Some("errors=remount-ro,commit=30"));
    }

    #[test]
    fn bad_requests_name_the_field() {
        assert_eq!(
            rejection(request("a/b", "virtiofs", "/m", &[])),
            r#"mount storage: source "a/b" is not a virtio-fs tag"#
        );
        assert_eq!(
            rejection(request("vdb", "ext4", "/m", &[])),
            r#"mount storage: source "vdb" is not a block device path (fstype ext4)"#
        );
        assert_eq!(
            rejection(request("t", "", "/m", &[])),
            "mount storage: fstype is empty"
        );
        assert_eq!(
            rejection(request("t", "virtiofs", "rel/dir", &[])),
            r#"mount storage: mount_point "rel/dir" is not an absolute path without '.' and '..'"#
        );
        assert_eq!(
            rejection(request("t", "virtiofs", "/a/../etc", &[])),
            r#"mount storage: mount_point "/a/../etc" is not an absolute path without '.' and '..'"#
        );
        assert_eq!(
            rejection(request("t", "virtiofs", "/", &[])),
            "mount storage: mount_point must not be /"
        );
        assert_eq!(
            rejection(request("t", "virtiofs", "/m", &["size=1,mode=2"])),
            r#"mount storage: option "size=1,mode=2" contains ',' (give each option separately)"#
        );
    }

    #[test]
    fn tmpfs_needs_no_source() {
        let spec = MountSpec::try_from(request("", "tmpfs", "/scratch", &["size=64m"])).unwrap();
        assert_eq!(spec.source, "tmpfs");
        assert_eq!(spec.data.as_deref(), Some("size=64m"));
    }
}
