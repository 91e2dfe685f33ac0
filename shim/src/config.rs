//! The shim's configuration: `/etc/vmrun/config.toml`, or the file named by
//! the runtime options containerd passes (`ConfigPath`). Every key is
//! optional; with no file at all the defaults boot what `scripts/setup.sh`
//! installed.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use vmm::compat::CompatMode;

use crate::error::{Result, ShimError};

/// Where the configuration is read from unless containerd names a file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vmrun/config.toml";
const DEFAULT_SHARE_DIR: &str = "/usr/local/share/vmrun";

/// How every sandbox VM of this shim is built.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShimConfig {
    /// The guest kernel (ELF vmlinux with PVH entry, or bzImage).
    pub kernel: PathBuf,
    /// The guest initramfs holding the agent.
    pub initrd: PathBuf,
    /// vCPUs of each sandbox VM.
    pub vcpus: u8,
    /// Memory of each sandbox VM, in MiB.
    pub memory_mib: u64,
    /// `auto`, `off` or `pvm`: see `vmrun boot --compat`.
    pub compat: String,
    /// The `vmrun` binary that runs the VMM; by default the one next to the
    /// shim, else the one on PATH.
    pub vmm_binary: Option<PathBuf>,
    /// Seconds to wait for a new VM's agent to answer.
    pub boot_timeout_secs: u64,
    /// Extra guest kernel command-line words.
    pub kernel_params: Vec<String>,
    /// Log level of the shim: error, warn, info, debug or trace.
    pub log_level: String,
}

impl Default for ShimConfig {
    fn default() -> Self {
        Self {
            kernel: Path::new(DEFAULT_SHARE_DIR).join("vmlinux"),
            initrd: Path::new(DEFAULT_SHARE_DIR).join("initramfs.cpio"),
            // The VMM's defaults: the VMs the default snapshot restores.
            vcpus: vmm::VmConfig::default().vcpus,
            memory_mib: vmm::VmConfig::default().memory_mib,
            compat: "auto".to_string(),
            vmm_binary: None,
            boot_timeout_secs: 600,
            kernel_params: Vec::new(),
            log_level: "info".to_string(),
        }
    }
}

impl ShimConfig {
    /// Parses and checks a configuration file's text; `origin` names it in
    /// errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let config: Self = toml::from_str(text)
            .map_err(|e| ShimError::Config(format!("{}: {e}", origin.display())))?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads `path`; a missing default file means the defaults, a missing
    /// file someone named is an error.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let (path, named) = match path {
            Some(path) => (path, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => Ok(Self::default()),
            Err(e) => Err(ShimError::Config(format!("{}: {e}", path.display()))),
        }
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |what: String| Err(ShimError::Config(format!("{}: {what}", origin.display())));
        if self.compat_mode().is_err() {
            return bad(format!(
                "compat = {:?}: expected \"auto\", \"off\" or \"pvm\"",
                self.compat
            ));
        }
        if !matches!(
            self.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return bad(format!(
                "log_level = {:?}: expected error, warn, info, debug or trace",
                self.log_level
            ));
        }
        if self.boot_timeout_secs == 0 {
            return bad("boot_timeout_secs must be at least 1".to_string());
        }
        let vm = vmm::VmConfig {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            ..vmm::VmConfig::default()
        };
        vm.validate().or_else(|e| bad(e.to_string()))
    }

    /// The compat profile selection.
    pub fn compat_mode(&self) -> Result<CompatMode, String> {
        self.compat.parse()
    }

    /// The `vmrun` binary to run VMs with.
    pub fn vmm_binary(&self) -> PathBuf {
        if let Some(binary) = &self.vmm_binary {
            return binary.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("vmrun")))
            .filter(|candidate| candidate.is_file())
            .unwrap_or_else(|| PathBuf::from("vmrun"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        let config = ShimConfig::parse("", Path::new("c.toml")).unwrap();
        assert_eq!(config, ShimConfig::default());
        assert_eq!(config.kernel, Path::new("/usr/local/share/vmrun/vmlinux"));
    }

    #[test]
    fn keys_override_defaults() {
        let text = "vcpus = 1\nmemory_mib = 256\ncompat = \"off\"\nkernel_params = [\"quiet\"]\n";
        let config = ShimConfig::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!((config.vcpus, config.memory_mib), (1, 256));
        assert_eq!(config.compat_mode().unwrap(), CompatMode::Off);
        assert_eq!(config.kernel_params, vec!["quiet".to_string()]);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let err = ShimConfig::parse("vcpus = 0", Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/x.toml") && err.contains("vcpus"),
            "{err}"
        );
        let err = ShimConfig::parse("cpus = 2", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `cpus`"), "{err}");
        let err = ShimConfig::parse("compat = \"fast\"", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("compat"), "{err}");
    }

    #[test]
    fn missing_default_file_is_fine_but_a_named_one_is_not() {
        let missing = Path::new("/nonexistent/vmrun.toml");
        let err = ShimConfig::load(Some(missing)).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/vmrun.toml"), "{err}");
    }
}
