//! What a VM is made of, as plain data with defaults.

use std::path::PathBuf;
use std::time::Duration;

use crate::compat::CompatMode;

/// Where the set-up installs the guest kernel and initramfs.
pub const DEFAULT_SHARE_DIR: &str = "/usr/local/share/vmrun";

/// Configuration of one microVM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Uncompressed ELF `vmlinux` (PVH entry preferred) or a bzImage.
    pub kernel: PathBuf,
    /// Uncompressed or compressed initramfs, optional.
    pub initrd: Option<PathBuf>,
    /// Number of vCPUs (1..=MAX_VCPUS).
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Extra kernel command-line words appended after vmrun's own.
    pub extra_cmdline: Vec<String>,
    /// Host compatibility profile selection.
    pub compat: CompatMode,
    /// Give up and stop the VM after this long, if set.
    pub timeout: Option<Duration>,
    /// Host side of the guest's vsock (Firecracker-style hybrid vsock): a
    /// Unix socket the VMM listens on. No vsock device if unset.
    pub vsock_uds: Option<PathBuf>,
}

/// The guest's vsock context id (2 is the host).
pub const GUEST_CID: u64 = 3;

/// Upper bound on vCPUs: the MP table and CPUID topology are built for this.
pub const MAX_VCPUS: u8 = 16;

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            kernel: PathBuf::from(DEFAULT_SHARE_DIR).join("vmlinux"),
            initrd: Some(PathBuf::from(DEFAULT_SHARE_DIR).join("initramfs.cpio")),
            vcpus: 2,
            memory_mib: 256,
            extra_cmdline: Vec::new(),
            compat: CompatMode::Auto,
            timeout: None,
            vsock_uds: None,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("vcpus must be between 1 and {MAX_VCPUS}, got {0}")]
    Vcpus(u8),
    #[error("memory must be between 64 MiB and 64 GiB, got {0} MiB")]
    Memory(u64),
}

impl VmConfig {
    /// Checks the values that do not need the host to judge.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if !(64..=64 * 1024).contains(&self.memory_mib) {
            return Err(ConfigError::Memory(self.memory_mib));
        }
        Ok(())
    }

    /// Guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(VmConfig::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_bad_sizes() {
        let cfg = VmConfig {
            vcpus: 0,
            ..VmConfig::default()
        };
        assert_eq!(cfg.validate(), Err(ConfigError::Vcpus(0)));
        let cfg = VmConfig {
            memory_mib: 16,
            ..VmConfig::default()
        };
        assert_eq!(cfg.validate(), Err(ConfigError::Memory(16)));
        assert!(ConfigError::Memory(16).to_string().contains("16 MiB"));
    }
}
