//! What `InitSandbox` does to the guest: the steps that make a guest
//! restored from a shared snapshot its own machine.
//!
//! Restored sandboxes share the snapshot's memory image: the kernel's and
//! the agent's address-space layout (KASLR is off in our kernel anyway, and
//! the agent's heap and stack addresses were fixed at boot), the kernel's
//! random pool as it was, and the boot time. Of these, the random state is
//! what must not be shared: it is reseeded here from host entropy before any
//! container runs. The address-space layout stays shared: containers start
//! as new processes after the restore and get fresh ASLR from the reseeded
//! kernel; only PID 1 and the kernel keep the layout of the snapshot.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Fewest bytes of host entropy accepted.
pub const MIN_ENTROPY_BYTES: usize = 32;
/// Most bytes of host entropy accepted (the kernel's pool is 256 bits).
pub const MAX_ENTROPY_BYTES: usize = 512;

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Why a step of sandbox initialisation failed.
#[derive(Debug, thiserror::Error)]
pub enum InitSandboxError {
    #[error("entropy must be {MIN_ENTROPY_BYTES} to {MAX_ENTROPY_BYTES} bytes, got {0}")]
    EntropySize(usize),
    #[error("cannot reseed the kernel's random pool ({op}): {source}")]
    Reseed {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("cannot set the clock to {ns} ns since the epoch: {source}")]
    Clock { ns: i64, source: std::io::Error },
    #[error("cannot set the hostname {name:?}: {source}")]
    Hostname { name: String, source: nix::Error },
}

/// Mixes `entropy` into the kernel's pool, credited, and reseeds the
/// kernel's CRNG from it at once (otherwise the restored CRNG would run on
/// the snapshot's key until its next scheduled reseed).
pub fn reseed_random(entropy: &[u8]) -> Result<(), InitSandboxError> {
    if !(MIN_ENTROPY_BYTES..=MAX_ENTROPY_BYTES).contains(&entropy.len()) {
        return Err(InitSandboxError::EntropySize(entropy.len()));
    }
    let reseed_err = |op| move |source| InitSandboxError::Reseed { op, source };
    let random = OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(reseed_err("open /dev/urandom"))?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&((entropy.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(entropy.len() as i32).to_ne_bytes());
    info.extend_from_slice(entropy);
    // Keep the u32 array whole.
    info.resize(8 + entropy.len().div_ceil(4) * 4, 0);
    ioctl(&random, RNDADDENTROPY, info.as_ptr().cast()).map_err(reseed_err("RNDADDENTROPY"))?;
    ioctl(&random, RNDRESEEDCRNG, std::ptr::null()).map_err(reseed_err("RNDRESEEDCRNG"))?;
    Ok(())
}

fn ioctl(file: &File, request: libc::c_ulong, arg: *const u8) -> std::io::Result<()> {
    // SAFETY: `file` is open; both requests take either no argument or a
    // pointer to a `rand_pool_info` whose `buf_size` bytes follow its two
    // ints in the buffer `arg` points to, which lives across the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, arg) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the wall clock (the restored guest's is the snapshot's).
pub fn set_clock(unix_time_ns: i64) -> Result<(), InitSandboxError> {
    let ts = libc::timespec {
        tv_sec: unix_time_ns.div_euclid(1_000_000_000),
        tv_nsec: unix_time_ns.rem_euclid(1_000_000_000),
    };
    // SAFETY: `ts` is a valid timespec living across the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(InitSandboxError::Clock {
            ns: unix_time_ns,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Sets the hostname, if one is given.
pub fn set_hostname(name: &str) -> Result<(), InitSandboxError> {
    if name.is_empty() {
        return Ok(());
    }
    nix::unistd::sethostname(name).map_err(|source| InitSandboxError::Hostname {
        name: name.to_string(),
        source,
    })
}

/// Where the kernel lists CPUs.
pub const SYS_CPU: &str = "/sys/devices/system/cpu";

/// Brings every present but offline CPU online (on a software-KVM host the
/// guest boots with one vCPU online, see the VMM's kernel command line) and
/// returns how many are online. A CPU that will not come up is logged and
/// left offline: the sandbox still works, with fewer CPUs.
pub fn online_cpus(sys_cpu: &Path) -> u32 {
    let present = std::fs::read_to_string(sys_cpu.join("present")).unwrap_or_default();
    let mut online = 0;
    for cpu in parse_cpu_list(present.trim()) {
        let control = sys_cpu.join(format!("cpu{cpu}/online"));
        // CPU 0 has no `online` file: it is always online.
        let state = std::fs::read_to_string(&control).unwrap_or_else(|_| "1".into());
        if state.trim() == "1" {
            online += 1;
            continue;
        }
        match std::fs::write(&control, "1") {
            Ok(()) => online += 1,
            Err(e) => tracing::warn!("cannot bring CPU {cpu} online: {e}"),
        }
    }
    online
}

/// Parses a kernel CPU list such as `0-3,5`.
fn parse_cpu_list(list: &str) -> Vec<u32> {
    list.split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (first, last) = part.split_once('-').unwrap_or((part, part));
            match (first.parse::<u32>(), last.parse::<u32>()) {
                // A kernel list never spans more than its CPU limit.
                (Ok(first), Ok(last)) if last >= first && last - first < 4096 => {
                    (first..=last).collect()
                }
                _ => Vec::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0"), vec![0]);
        assert_eq!(parse_cpu_list("0-3,5"), vec![0, 1, 2, 3, 5]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
        assert_eq!(parse_cpu_list("3-1,x,0-9999999"), Vec::<u32>::new());
    }

    #[test]
    fn entropy_size_is_checked() {
        assert!(matches!(
            reseed_random(&[0; 8]),
            Err(InitSandboxError::EntropySize(8))
        ));
        assert!(matches!(
            reseed_random(&vec![0; MAX_ENTROPY_BYTES + 1]),
            Err(InitSandboxError::EntropySize(_))
        ));
    }

    #[test]
    fn offline_cpus_are_brought_online() {
        let scratch = crate::scratch_dir::ScratchDir::new("cpus");
        let dir = scratch.path();
        for cpu in ["cpu1", "cpu2"] {
            std::fs::create_dir_all(dir.join(cpu)).unwrap();
        }
        std::fs::write(dir.join("present"), "0-2\n").unwrap();
        std::fs::write(dir.join("cpu1/online"), "0\n").unwrap();
        std::fs::write(dir.join("cpu2/online"), "1\n").unwrap();
        assert_eq!(online_cpus(dir), 3);
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu1/online")).unwrap(),
            "1"
        );
    }
}
