//! The shim's configuration: `/etc/vmrun/config.toml`, or the file named by
//! the runtime options containerd passes (`ConfigPath`). Every key is
//! optional; with no file at all the defaults boot what `scripts/setup.sh`
//! installed. The VM of every sandbox is the `[vm]` table, a
//! [`VmConfig`] with the VMM's own defaults (so the shim's pods restore from
//! the default snapshot). Shares, disks and the vsock socket are each
//! sandbox's and refused there; the rate limits are not:
//! `[vm.rng_rate_limit]` replaces the virtio-rng default (1 MiB/s, 4096
//! requests/s; `{}` for none) and `[vm.disk_rate_limit]` is what every
//! disk of a sandbox gets unless it has a limit of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vm_config::VmConfig;
use vmrun_agent::client::CallLimits;
use vmrun_sandbox::SandboxConfig;

use crate::error::{Result, ShimError};

/// Where the configuration is read from unless containerd names a file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vmrun/config.toml";

/// How every sandbox VM of this shim is built.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShimConfig {
    /// The VM of each sandbox (its vsock and share are the shim's).
    pub vm: VmConfig,
    /// The VMM binary (`vmrun-vmm`); by default the one next to the shim,
    /// else the one on PATH.
    pub vmm_binary: Option<PathBuf>,
    /// Seconds to wait for a new VM's agent to answer.
    pub boot_timeout_secs: u64,
    /// Seconds an agent call that answers at once (kill, state, stats,
    /// pause, ...) may take; past that the VM is taken for hung, stopped and
    /// cleaned up.
    pub agent_timeout_secs: u64,
    /// The same for calls that set up containers and processes (create,
    /// start, exec, delete).
    pub setup_timeout_secs: u64,
    /// Log level of the shim: error, warn, info, debug or trace.
    pub log_level: String,
}

impl Default for ShimConfig {
    fn default() -> Self {
        Self {
            vm: VmConfig::default(),
            vmm_binary: None,
            boot_timeout_secs: vmrun_sandbox::layout::DEFAULT_BOOT_TIMEOUT.as_secs(),
            agent_timeout_secs: vmrun_sandbox::layout::DEFAULT_CALL_TIMEOUT.as_secs(),
            setup_timeout_secs: vmrun_sandbox::layout::DEFAULT_SETUP_TIMEOUT.as_secs(),
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
        if self.agent_timeout_secs == 0 || self.setup_timeout_secs == 0 {
            return bad("agent_timeout_secs and setup_timeout_secs must be at least 1".to_string());
        }
        // Per sandbox, the shim's to give.
        if !self.vm.shares.is_empty()
            || !self.vm.disks.is_empty()
            || !self.vm.nets.is_empty()
            || self.vm.vsock_uds.is_some()
        {
            return bad(
                "[vm] shares, disks, nets and vsock_uds are set per sandbox by the shim".into(),
            );
        }
        if self.vm.template {
            return bad("[vm] template is for `vmrun snapshot create`".into());
        }
        self.vm.validate().or_else(|e| bad(format!("[vm] {e}")))
    }

    /// How the shim's sandboxes are started.
    pub fn sandbox_config(&self) -> SandboxConfig {
        SandboxConfig {
            boot_timeout: Duration::from_secs(self.boot_timeout_secs),
            call_limits: CallLimits {
                quick: Duration::from_secs(self.agent_timeout_secs),
                setup: Duration::from_secs(self.setup_timeout_secs),
            },
            ..SandboxConfig::new(self.vm.clone(), self.vmm_binary())
        }
    }

    /// The VMM binary to run VMs with.
    pub fn vmm_binary(&self) -> PathBuf {
        self.vmm_binary
            .clone()
            .unwrap_or_else(vmrun_sandbox::vmm_process::default_vmm_binary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_config::CompatMode;

    #[test]
    fn empty_file_means_defaults() {
        let config = ShimConfig::parse("", Path::new("c.toml")).unwrap();
        assert_eq!(config, ShimConfig::default());
        assert_eq!(config.vm, VmConfig::default());
        assert_eq!(
            config.vm.kernel,
            Path::new("/usr/local/share/vmrun/vmlinux")
        );
    }

    #[test]
    fn keys_override_defaults() {
        let text = "boot_timeout_secs = 60\n[vm]\nvcpus = 1\nmemory_mib = 512\ncompat = \"off\"\nextra_cmdline = [\"quiet\"]\n";
        let config = ShimConfig::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!((config.vm.vcpus, config.vm.memory_mib), (1, 512));
        assert_eq!(config.vm.compat, CompatMode::Off);
        assert_eq!(config.vm.extra_cmdline, vec!["quiet".to_string()]);
        let sandbox = config.sandbox_config();
        assert_eq!(sandbox.boot_timeout, Duration::from_secs(60));
        assert_eq!(sandbox.vm, config.vm);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let err = ShimConfig::parse("[vm]\nvcpus = 0", Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/x.toml") && err.contains("vcpus"),
            "{err}"
        );
        let err = ShimConfig::parse("[vm]\ncpus = 2", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `cpus`"), "{err}");
        // The keys of the old flat layout are named, not ignored.
        let err = ShimConfig::parse("vcpus = 2", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `vcpus`"), "{err}");
        let err = ShimConfig::parse("[vm]\ncompat = \"fast\"", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fast"), "{err}");
        let err = ShimConfig::parse(
            "[vm]\nshares = [{tag = \"x\", path = \"/etc\"}]",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("per sandbox"), "{err}");
        let err = ShimConfig::parse("[vm]\nnets = [{tap = \"tap0\"}]", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nets"), "{err}");
    }

    #[test]
    fn rate_limits_come_from_the_vm_table() {
        use vm_config::{RateLimit, TokenBucket};
        let config = ShimConfig::parse("", Path::new("c.toml")).unwrap();
        assert_eq!(config.vm.rng_rate_limit, RateLimit::default_rng());
        let text = "[vm.rng_rate_limit]\nbytes = { rate = 65536, burst = 131072 }\n\
                    [vm.disk_rate_limit]\nops = { rate = 500 }\n";
        let config = ShimConfig::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(
            config.vm.rng_rate_limit,
            RateLimit {
                bytes: Some(TokenBucket {
                    rate: 65536,
                    burst: Some(131072)
                }),
                ops: None,
            }
        );
        assert_eq!(
            config.vm.disk_rate_limit.ops,
            Some(TokenBucket::per_second(500))
        );
        // Handed to every sandbox's VMM as it is.
        assert_eq!(config.sandbox_config().vm, config.vm);
        let none = ShimConfig::parse("[vm]\nrng_rate_limit = {}\n", Path::new("c.toml")).unwrap();
        assert!(none.vm.rng_rate_limit.is_unlimited());
        let err = ShimConfig::parse(
            "[vm]\nrng_rate_limit = { ops = { rate = 0 } }\n",
            Path::new("/etc/vmrun/config.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "/etc/vmrun/config.toml: [vm] rng_rate_limit: ops.rate must be at least 1"
            ),
            "{err}"
        );
        let err = ShimConfig::parse(
            "[vm]\ndisks = [{path = \"/img\", rate_limit = {}}]\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("per sandbox"), "{err}");
    }

    #[test]
    fn missing_default_file_is_fine_but_a_named_one_is_not() {
        let missing = Path::new("/nonexistent/vmrun.toml");
        let err = ShimConfig::load(Some(missing)).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/vmrun.toml"), "{err}");
    }
}
