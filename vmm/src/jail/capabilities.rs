//! The capabilities the VMM keeps once confined, as data with why. Kept
//! process-wide: device workers are started by vCPU threads (they inherit
//! the vCPU's set), and threads of one address space are no boundary to
//! each other anyway.

use caps::{CapSet, CapsHashSet};

pub use caps::Capability;

use super::JailError;

/// What the in-process virtio-fs passthrough needs: it serves files of
/// every owner and mode, and creates them as the guest's user.
const FS_CAPABILITIES: &[(Capability, &str)] = &[
    (
        Capability::CAP_CHOWN,
        "chown, and creates owned by the guest's user",
    ),
    (
        Capability::CAP_DAC_OVERRIDE,
        "opening files of any owner and mode",
    ),
    (
        Capability::CAP_FOWNER,
        "chmod, utimes and xattrs of files the VMM does not own",
    ),
    (
        Capability::CAP_FSETID,
        "setgid directories stay so when written (and writes that keep it)",
    ),
    (
        Capability::CAP_SETUID,
        "the passthrough acts as the guest's uid for creates (setresuid)",
    ),
    (
        Capability::CAP_SETGID,
        "the passthrough acts as the guest's gid for creates (setresgid, setgroups)",
    ),
    (
        Capability::CAP_MKNOD,
        "device nodes the guest makes (nodev on the host: never opened as devices)",
    ),
];

/// The capabilities a confined VMM keeps: the passthrough's if it serves
/// shares, none otherwise.
pub fn kept(serves_shares: bool) -> &'static [Capability] {
    static FS: [Capability; FS_CAPABILITIES.len()] = {
        let mut caps = [Capability::CAP_CHOWN; FS_CAPABILITIES.len()];
        let mut i = 0;
        while i < caps.len() {
            caps[i] = FS_CAPABILITIES[i].0;
            i += 1;
        }
        caps
    };
    match serves_shares {
        true => &FS,
        false => &[],
    }
}

/// Why each capability of [`kept`] is kept.
pub fn why(cap: Capability) -> Option<&'static str> {
    FS_CAPABILITIES
        .iter()
        .find(|(c, _)| *c == cap)
        .map(|(_, why)| *why)
}

/// Restricts the calling thread (and every thread it starts) to `keep`:
/// bounding, permitted, effective; nothing inheritable or ambient.
pub fn restrict(keep: &[Capability]) -> Result<(), JailError> {
    let fail = |op| move |source| JailError::Capabilities { op, source };
    let keep: CapsHashSet = keep.iter().copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // goes with the effective set below.
    let supported = caps::runtime::thread_all_supported();
    for cap in supported.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(fail("drop from the bounding set"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(fail("clear the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(fail("clear the inheritable set"))?;
    // The effective set must stay within the permitted one at every step.
    caps::set(None, CapSet::Effective, &keep).map_err(fail("set the effective set"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(fail("set the permitted set"))
}

/// Drops every capability of the calling thread (and of those it starts).
pub fn drop_all() -> Result<(), JailError> {
    restrict(&[])
}

/// The `CapEff`-style mask of `caps` (as `/proc/<pid>/status` shows it).
pub fn mask(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |mask, cap| mask | cap.bitmask())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kept_capability_says_why() {
        assert!(kept(false).is_empty());
        for cap in kept(true) {
            assert!(why(*cap).is_some_and(|w| !w.is_empty()), "{cap}");
        }
        assert!(why(Capability::CAP_SYS_ADMIN).is_none());
        assert_eq!(mask(kept(true)).count_ones() as usize, kept(true).len());
    }

    /// In a child process: after `restrict`, the thread has exactly what
    /// it kept, and cannot take the rest back.
    #[test]
    fn restrict_leaves_exactly_the_kept_set() {
        // SAFETY: the child only makes system calls (through `caps`, which
        // allocates: the test binary's other threads hold no allocator lock
        // across fork in practice, and the child exits right after).
        match unsafe { libc::fork() } {
            0 => {
                let keep = kept(true);
                let code = match restrict(keep) {
                    Err(_) => 2,
                    Ok(()) => {
                        let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
                        let bounding = caps::read(None, CapSet::Bounding).unwrap_or_default();
                        let wanted: CapsHashSet = keep.iter().copied().collect();
                        let regained =
                            caps::raise(None, CapSet::Effective, Capability::CAP_SYS_ADMIN);
                        match (effective == wanted, bounding == wanted, regained.is_err()) {
                            (true, true, true) => 0,
                            _ => 3,
                        }
                    }
                };
                // SAFETY: _exit ends the child without running the
                // parent's atexit handlers.
                unsafe { libc::_exit(code) };
            }
            pid => {
                let mut status = 0;
                // SAFETY: waits for our own child.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert!(libc::WIFEXITED(status), "status {status:#x}");
                assert_eq!(libc::WEXITSTATUS(status), 0, "status {status:#x}");
            }
        }
    }
}
