//! Finding the guest's virtio-net links: the links `ConfigureNetwork`
//! configures, in the VM's network device order.
//!
//! By driver, not by name or MAC: a guest restored from a snapshot keeps
//! the names and MACs it probed at the template boot (`eth0`,
//! 02:76:6d:72:00:01, ...), and after a first `ConfigureNetwork` they are
//! the pod's. The interface index is the probe order, which is the order of
//! the VM's virtio-net devices.

use std::io;
use std::path::{Path, PathBuf};

/// Where the kernel lists the network interfaces.
pub const SYS_CLASS_NET: &str = "/sys/class/net";
/// The kernel's name for the virtio-net driver.
const VIRTIO_NET_DRIVER: &str = "virtio_net";

/// A link the guest has now, which a plan's interface may configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLink {
    /// The kernel's interface index: what netlink requests name it by,
    /// since the name changes on the way.
    pub index: u32,
    /// Its name now.
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    #[error("cannot list the guest's network interfaces in {}: {source}", .path.display())]
    List { path: PathBuf, source: io::Error },
    #[error("cannot read the interface index of {name} ({}): {reason}", .path.display())]
    Index {
        name: String,
        path: PathBuf,
        reason: String,
    },
}

/// The links under `sys_class_net` (a sysfs `class/net`) whose device is
/// bound to the virtio-net driver, by interface index.
pub fn virtio_net_links(sys_class_net: &Path) -> Result<Vec<GuestLink>, LinksError> {
    let list_error = |source| LinksError::List {
        path: sys_class_net.to_owned(),
        source,
    };
    let mut links = Vec::new();
    for entry in std::fs::read_dir(sys_class_net).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            // Not a name netlink could have given it; not one of ours.
            continue;
        };
        let dir = entry.path();
        // Virtual links (lo, veth, ...) have no `device`; a link that went
        // away since the listing has nothing at all: neither is ours.
        let Ok(driver) = std::fs::read_link(dir.join("device/driver")) else {
            continue;
        };
        if driver.file_name().and_then(|d| d.to_str()) != Some(VIRTIO_NET_DRIVER) {
            continue;
        }
        let index = read_index(&name, &dir.join("ifindex"))?;
        links.push(GuestLink { index, name });
    }
    links.sort_by_key(|link| link.index);
    Ok(links)
}

fn read_index(name: &str, path: &Path) -> Result<u32, LinksError> {
    let index_error = |reason: String| LinksError::Index {
        name: name.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| index_error(e.to_string()))?;
    text.trim()
        .parse()
        .map_err(|_| index_error(format!("{:?} is not a number", text.trim())))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::scratch_dir::ScratchDir;

    /// A sysfs-like tree: `class/net/<name>` with `ifindex` and, for
    /// devices, `device` → `devices/<dev>` whose `driver` → `drivers/<driver>`.
    struct FakeSysfs {
        root: ScratchDir,
    }

    impl FakeSysfs {
        fn new(test: &str) -> Self {
            let root = ScratchDir::new(&format!("netlinks-{test}"));
            std::fs::create_dir_all(root.path().join("class/net")).unwrap();
            Self { root }
        }

        fn class_net(&self) -> PathBuf {
            self.root.path().join("class/net")
        }

        fn link(&self, name: &str, index: &str, driver: Option<&str>) {
            let dir = self.class_net().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("ifindex"), format!("{index}\n")).unwrap();
            if let Some(driver) = driver {
                let device = self.root.path().join("devices").join(name);
                let drivers = self.root.path().join("drivers").join(driver);
                std::fs::create_dir_all(&device).unwrap();
                std::fs::create_dir_all(&drivers).unwrap();
                // Relative, as sysfs's are.
                symlink(format!("../../drivers/{driver}"), device.join("driver")).unwrap();
                symlink(&device, dir.join("device")).unwrap();
            }
        }
    }

    #[test]
    fn virtio_net_links_come_by_index_and_others_are_left_out() {
        let sysfs = FakeSysfs::new("order");
        sysfs.link("lo", "1", None);
        // Renamed by an earlier ConfigureNetwork: the index still orders.
        sysfs.link("net1", "3", Some("virtio_net"));
        sysfs.link("eth0", "12", Some("virtio_net"));
        sysfs.link("ens4", "2", Some("e1000"));
        sysfs.link("veth0", "4", None);
        sysfs.link("eth1", "10", Some("virtio_net"));

        let links = virtio_net_links(&sysfs.class_net()).unwrap();
        assert_eq!(
            links,
            [
                GuestLink {
                    index: 3,
                    name: "net1".into()
                },
                GuestLink {
                    index: 10,
                    name: "eth1".into()
                },
                GuestLink {
                    index: 12,
                    name: "eth0".into()
                },
            ]
        );
    }

    #[test]
    fn no_virtio_net_device_is_no_link() {
        let sysfs = FakeSysfs::new("none");
        sysfs.link("lo", "1", None);
        assert_eq!(virtio_net_links(&sysfs.class_net()).unwrap(), []);
    }

    #[test]
    fn a_bad_index_names_the_link() {
        let sysfs = FakeSysfs::new("badindex");
        sysfs.link("eth0", "x", Some("virtio_net"));
        let error = virtio_net_links(&sysfs.class_net())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("cannot read the interface index of eth0 (")
                && error.ends_with(r#"ifindex): "x" is not a number"#),
            "{error}"
        );
    }

    #[test]
    fn a_missing_sysfs_is_an_error() {
        let error = virtio_net_links(Path::new("/nonexistent/class/net")).unwrap_err();
        assert!(matches!(error, LinksError::List { .. }), "{error}");
    }

    #[test]
    fn this_hosts_sysfs_can_be_read() {
        // Whatever the host has; its veths and bridges are never listed.
        let links = virtio_net_links(Path::new(SYS_CLASS_NET)).unwrap();
        assert!(links.windows(2).all(|w| w[0].index < w[1].index));
        assert!(links.iter().all(|l| l.name != "lo"));
    }
}
