//! Describing storage to mount and containers to create.

use bytes::Bytes;

use crate::proto::{CreateContainerRequest, MountStorageRequest, PtySize};

/// A `MountStorage` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageMount {
    request: MountStorageRequest,
}

impl StorageMount {
    /// A virtio-fs share by its tag, e.g. a container's rootfs shared as
    /// `rootfs-<id>`.
    pub fn virtiofs(tag: impl Into<String>, mount_point: impl Into<String>) -> Self {
        Self::new(tag, "virtiofs", mount_point)
    }

    /// A block device, e.g. `("/dev/vdb", "ext4", "/data")`.
    pub fn block_device(
        device: impl Into<String>,
        fstype: impl Into<String>,
        mount_point: impl Into<String>,
    ) -> Self {
        Self::new(device, fstype, mount_point)
    }

    fn new(
        source: impl Into<String>,
        fstype: impl Into<String>,
        mount_point: impl Into<String>,
    ) -> Self {
        Self {
            request: MountStorageRequest {
                source: source.into(),
                fstype: fstype.into(),
                mount_point: mount_point.into(),
                ..Default::default()
            },
        }
    }

    pub fn read_only(mut self) -> Self {
        self.request.read_only = true;
        self
    }

    /// A mount(8)-style option, e.g. "noatime" or "size=64m".
    pub fn option(mut self, option: impl Into<String>) -> Self {
        self.request.options.push(option.into());
        self
    }
}

impl From<StorageMount> for MountStorageRequest {
    fn from(mount: StorageMount) -> Self {
        mount.request
    }
}

/// A `CreateContainer` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerCreate {
    request: CreateContainerRequest,
}

impl ContainerCreate {
    /// `spec_json` is the OCI `config.json`; `rootfs` the guest path of the
    /// container's root (where its share was mounted). A relative
    /// `root.path` in the spec (`runc spec`'s "rootfs") means `rootfs`.
    pub fn new(
        id: impl Into<String>,
        spec_json: impl Into<Bytes>,
        rootfs: impl Into<String>,
    ) -> Self {
        Self {
            request: CreateContainerRequest {
                container_id: id.into(),
                spec_json: spec_json.into(),
                rootfs: rootfs.into(),
                ..Default::default()
            },
        }
    }

    /// Writes go to a tmpfs overlay; the shared rootfs is never changed.
    pub fn writable_overlay(mut self) -> Self {
        self.request.writable_overlay = true;
        self
    }

    /// The init process runs on a pseudo-terminal of `rows` x `cols`.
    pub fn terminal(mut self, rows: u16, cols: u16) -> Self {
        self.request.terminal = true;
        self.request.pty_size = Some(PtySize {
            rows: rows.into(),
            cols: cols.into(),
        });
        self
    }
}

impl From<ContainerCreate> for CreateContainerRequest {
    fn from(create: ContainerCreate) -> Self {
        create.request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_the_wire_requests() {
        let mount = MountStorageRequest::from(
            StorageMount::virtiofs("rootfs-web", "/run/vmrun/rootfs/web")
                .read_only()
                .option("noatime"),
        );
        assert_eq!(mount.fstype, "virtiofs");
        assert_eq!(mount.source, "rootfs-web");
        assert!(mount.read_only);
        assert_eq!(mount.options, ["noatime"]);

        let create = CreateContainerRequest::from(
            ContainerCreate::new("web", &b"{}"[..], "/run/vmrun/rootfs/web")
                .writable_overlay()
                .terminal(24, 80),
        );
        assert_eq!(create.container_id, "web");
        assert!(create.writable_overlay && create.terminal);
        assert_eq!(create.pty_size, Some(PtySize { rows: 24, cols: 80 }));
    }
}
