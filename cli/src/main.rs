//! `vmrun`: boot a microVM on KVM and run things in it.
//!
//! This crate owns the command line: parsing flags into a
//! [`vm_config::VmConfig`] (`boot`, `snapshot`), and `vmrun run`'s session
//! with the user's terminal, signals and exit status. It must not grow its
//! own copy of what `vmrun_sandbox` does (spec rewriting, host mounts,
//! runtime directories, VMM supervision), of the VMM process's run loop
//! (`vmrun_vmm`, whose `vmrun-vmm` binary every sandbox runs) or of the
//! VMM.

mod boot;
mod container;
mod error;
mod run;
mod snapshot;
mod tty;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use virtio_devices::fs::MAX_TAG_LEN;
use vm_config::{CompatMode, Disk, NetConfig, SharedDir, SnapshotUse, TokenBucket, VmConfig};

pub use error::{CliError, Result};

#[derive(Parser)]
#[command(name = "vmrun", version, about = "microVM-isolated containers on KVM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a microVM and stream its console to stdout.
    Boot(boot::BootArgs),
    /// Boot a microVM, run a command in it through the agent, and exit with
    /// the command's status.
    Run(run::RunArgs),
    /// Print the kernel command line `vmrun boot` would give the guest.
    Cmdline(boot::BootArgs),
    /// Make the snapshot that VMs are restored from.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
}

/// How the VM is built; shared by every subcommand.
#[derive(Args, Clone)]
pub struct VmArgs {
    /// Guest kernel (ELF vmlinux with PVH entry, or bzImage).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Guest initramfs.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = VmConfig::default().vcpus)]
    cpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = VmConfig::default().memory_mib)]
    memory: u64,
    /// Host compatibility profile: auto (detect), off, or pvm (software KVM).
    #[arg(long, default_value = "auto")]
    compat: CompatMode,
    /// Extra kernel command-line words.
    #[arg(long = "cmdline", value_name = "WORDS")]
    cmdline: Vec<String>,
    /// Share a host directory over virtio-fs. `vmrun run` mounts it in the
    /// guest at /mnt/TAG (read-only with :ro). A VM restored from a snapshot
    /// knows its shares by slot (`vmrun-fs0`, `vmrun-fs1`, ... in order), a
    /// cold-booted one (--snapshot off) by TAG: `mount -t virtiofs TAG DIR`.
    #[arg(long = "share", value_name = "TAG=DIR[:ro]", value_parser = parse_share)]
    shares: Vec<SharedDir>,
    /// Attach a raw disk image as virtio-blk (/dev/vda, /dev/vdb, ...).
    #[arg(long = "disk", value_name = "PATH[:ro]", value_parser = parse_disk)]
    disks: Vec<Disk>,
    /// Give the guest a network interface (eth0, eth1, ...) on an existing
    /// host tap; MAC (default: random, locally administered) and MTU
    /// (default 1500) as given. LIMIT=N rate-limits it (default: no limit),
    /// with bursts of one second's worth: rx_bytes_per_sec,
    /// rx_frames_per_sec (tap to guest), tx_bytes_per_sec,
    /// tx_frames_per_sec (guest to tap); bytes of Ethernet frames.
    #[arg(
        long = "net",
        value_name = "tap=NAME[,mac=MAC][,mtu=N][,LIMIT=N]",
        value_parser = parse_net
    )]
    nets: Vec<NetConfig>,
    /// Restore from a snapshot instead of booting: auto (the cached one for
    /// this configuration, if any), off, or a snapshot directory (refused
    /// if it does not fit).
    #[arg(long, value_name = "auto|off|DIR", default_value = "auto")]
    snapshot: SnapshotUse,
    /// Run the VMM's threads without their seccomp filters (debugging only:
    /// it is said so in the log).
    #[arg(long)]
    no_seccomp: bool,
    /// Run the VMM outside its jail: host namespaces, every capability, no
    /// resource limits (debugging only: it is said so in the log).
    #[arg(long)]
    no_jail: bool,
}

fn split_ro(value: &str) -> (&str, bool) {
    match value.strip_suffix(":ro") {
        Some(rest) => (rest, true),
        None => (value.strip_suffix(":rw").unwrap_or(value), false),
    }
}

fn parse_share(value: &str) -> Result<SharedDir, String> {
    let (spec, read_only) = split_ro(value);
    let (tag, dir) = spec
        .split_once('=')
        .filter(|(tag, dir)| !tag.is_empty() && !dir.is_empty())
        .ok_or_else(|| format!("{value:?}: expected TAG=DIR[:ro]"))?;
    // The tag names the guest's mount point /mnt/TAG, and must fit the
    // virtio-fs device's config space.
    let plain = tag.len() <= MAX_TAG_LEN
        && tag != "."
        && tag != ".."
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !plain {
        return Err(format!(
            "{value:?}: the tag {tag:?} must be 1-{MAX_TAG_LEN} letters, digits, '-', '_' or '.' (not . or ..)"
        ));
    }
    Ok(SharedDir::new(tag, dir, read_only))
}

fn parse_disk(value: &str) -> Result<Disk, String> {
    let (path, read_only) = split_ro(value);
    if path.is_empty() {
        return Err(format!("{value:?}: expected PATH[:ro]"));
    }
    Ok(Disk::new(path, read_only))
}

/// `tap=NAME[,mac=MAC][,mtu=N][,LIMIT=N]`; the values are checked with the
/// rest of the VM's configuration.
fn parse_net(value: &str) -> Result<NetConfig, String> {
    let usage = || format!("{value:?}: expected tap=NAME[,mac=MAC][,mtu=N][,LIMIT=N]");
    let per_second = |key: &str, val: &str| match val.parse() {
        Ok(rate) if rate > 0 => Ok(Some(TokenBucket::per_second(rate))),
        _ => Err(format!(
            "{value:?}: {key} {val:?} is not a whole number of at least 1"
        )),
    };
    let mut net = NetConfig::default();
    let mut seen = Vec::new();
    for item in value.split(',') {
        let (key, val) = item.split_once('=').ok_or_else(usage)?;
        if seen.contains(&key) {
            return Err(format!("{value:?}: {key} is given twice"));
        }
        seen.push(key);
        match key {
            "tap" => net.tap = val.to_string(),
            "mac" => net.mac = Some(val.parse()?),
            "mtu" => {
                net.mtu = val
                    .parse()
                    .map_err(|_| format!("{value:?}: mtu {val:?} is not a number up to 65535"))?;
            }
            "rx_bytes_per_sec" => net.rx_rate_limit.bytes = per_second(key, val)?,
            "rx_frames_per_sec" => net.rx_rate_limit.ops = per_second(key, val)?,
            "tx_bytes_per_sec" => net.tx_rate_limit.bytes = per_second(key, val)?,
            "tx_frames_per_sec" => net.tx_rate_limit.ops = per_second(key, val)?,
            other => {
                return Err(format!(
                    "{value:?}: unknown key {other:?} (tap, mac, mtu, \
                     rx_bytes_per_sec, rx_frames_per_sec, tx_bytes_per_sec, tx_frames_per_sec)"
                ))
            }
        }
    }
    if net.tap.is_empty() {
        return Err(usage());
    }
    Ok(net)
}

impl VmArgs {
    /// Whether no share, disk or network interface was asked for.
    pub fn per_vm_devices_empty(&self) -> bool {
        self.shares.is_empty() && self.disks.is_empty() && self.nets.is_empty()
    }

    /// The VM configuration these flags describe (no vsock yet).
    pub fn config(&self) -> VmConfig {
        let defaults = VmConfig::default();
        VmConfig {
            kernel: self.kernel.clone().unwrap_or(defaults.kernel),
            initrd: self.initrd.clone().or(defaults.initrd),
            vcpus: self.cpus,
            memory_mib: self.memory,
            extra_cmdline: self
                .cmdline
                .iter()
                .flat_map(|w| w.split_whitespace().map(str::to_string))
                .collect(),
            compat: self.compat,
            shares: self.shares.clone(),
            disks: self.disks.clone(),
            nets: self.nets.clone(),
            snapshot: self.snapshot.clone(),
            seccomp: !self.no_seccomp,
            jail: vm_config::JailConfig {
                enabled: !self.no_jail,
                ..defaults.jail.clone()
            },
            ..defaults
        }
    }
}

fn main() -> ExitCode {
    vmrun_vmm::log_to_stderr();
    let result = match Cli::parse().command {
        Command::Boot(args) => boot::boot(args).map(|()| ExitCode::SUCCESS),
        Command::Cmdline(args) => boot::print_cmdline(&args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run::run(args).map(|code| ExitCode::from(code as u8)),
        Command::Snapshot(command) => snapshot::run(command).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("vmrun: {message}");
            ExitCode::from(run::VMRUN_FAILURE as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shares_and_disks() {
        let share = parse_share("rootfs=/srv/root:ro").unwrap();
        assert_eq!(
            (share.tag.as_str(), share.path.as_path(), share.read_only),
            ("rootfs", std::path::Path::new("/srv/root"), true)
        );
        assert!(!parse_share("data=/srv").unwrap().read_only);
        assert!(parse_share("/srv").unwrap_err().contains("TAG=DIR"));
        assert!(parse_share("a/b=/srv").unwrap_err().contains("\"a/b\""));
        assert!(parse_share("..=/srv").is_err());
        assert!(parse_share(&format!("{}=/srv", "t".repeat(MAX_TAG_LEN + 1))).is_err());
        assert!(parse_share("=/srv").is_err());
        let disk = parse_disk("/img.raw:ro").unwrap();
        assert!(disk.read_only);
        assert!(!parse_disk("/img.raw").unwrap().read_only);
        assert!(parse_disk(":ro").is_err());
    }

    #[test]
    fn parses_network_interfaces() {
        let net = parse_net("tap=tap0").unwrap();
        assert_eq!((net.tap.as_str(), net.mac, net.mtu), ("tap0", None, 1500));
        assert!(net.rx_rate_limit.is_unlimited() && net.tx_rate_limit.is_unlimited());
        let net = parse_net("tap=vm1,mac=02:00:00:00:00:09,mtu=1400").unwrap();
        assert_eq!(net.mac.unwrap().to_string(), "02:00:00:00:00:09");
        assert_eq!(net.mtu, 1400);
        let net = parse_net(
            "tap=t,tx_bytes_per_sec=12500000,tx_frames_per_sec=10000,rx_bytes_per_sec=125000",
        )
        .unwrap();
        assert_eq!(
            (net.tx_rate_limit.bytes, net.tx_rate_limit.ops),
            (
                Some(TokenBucket::per_second(12_500_000)),
                Some(TokenBucket::per_second(10_000))
            )
        );
        assert_eq!(
            (net.rx_rate_limit.bytes, net.rx_rate_limit.ops),
            (Some(TokenBucket::per_second(125_000)), None)
        );
        let net = parse_net("tap=t,rx_frames_per_sec=5").unwrap();
        assert_eq!(net.rx_rate_limit.ops, Some(TokenBucket::per_second(5)));
        for (bad, message) in [
            ("tap0", "expected tap=NAME"),
            ("mac=02:00:00:00:00:01", "expected tap=NAME"),
            ("tap=", "expected tap=NAME"),
            ("tap=a,tap=b", "tap is given twice"),
            ("tap=a,mtu=big", "not a number"),
            ("tap=a,mac=1:2", "invalid MAC"),
            ("tap=a,ip=10.0.0.1", "unknown key \"ip\""),
            (
                "tap=a,tx_bytes_per_sec=0",
                "tx_bytes_per_sec \"0\" is not a whole number of at least 1",
            ),
            (
                "tap=a,rx_frames_per_sec=-1",
                "rx_frames_per_sec \"-1\" is not",
            ),
            ("tap=a,rx_bytes_per_sec=1,rx_bytes_per_sec=2", "given twice"),
        ] {
            let err = parse_net(bad).unwrap_err();
            assert!(err.contains(message), "{bad}: {err}");
        }
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            vm: VmArgs,
        }
        let flags = Flags::try_parse_from(["vmrun", "--net", "tap=t0", "--net", "tap=t1,mtu=9000"])
            .unwrap();
        let config = flags.vm.config();
        assert_eq!(config.nets.len(), 2);
        assert_eq!(config.nets[1].mtu, 9000);
        assert!(!flags.vm.per_vm_devices_empty());
    }
}
