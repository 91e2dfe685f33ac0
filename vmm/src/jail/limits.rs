//! Resource limits of the confined VMM.

use std::io;

use super::JailError;

/// Sets `RLIMIT_NOFILE` to `open_files` and `RLIMIT_FSIZE` to `file_size`
/// bytes (soft and hard: no raising them back; lower ones inherited stay),
/// and `RLIMIT_CORE` to 0: a
/// core dump of the VMM would write guest memory to the host's disk.
/// `SIGXFSZ` is ignored, so that a write past the file size limit fails
/// (EFBIG, which the guest sees) instead of killing the VMM.
pub(super) fn apply(open_files: u64, file_size: u64) -> Result<(), JailError> {
    set(libc::RLIMIT_NOFILE, open_files, "RLIMIT_NOFILE")?;
    set(libc::RLIMIT_FSIZE, file_size, "RLIMIT_FSIZE")?;
    set(libc::RLIMIT_CORE, 0, "RLIMIT_CORE")?;
    // SAFETY: SIG_IGN for SIGXFSZ installs no handler code.
    if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(JailError::sys("ignore SIGXFSZ")(io::Error::last_os_error()));
    }
    Ok(())
}

/// Sets `resource` to `value`, or to its current hard limit if that is
/// lower: the jail only ever lowers limits.
fn set(resource: libc::__rlimit_resource_t, value: u64, name: &str) -> Result<(), JailError> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and keeps no pointer.
    if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
        return Err(JailError::sys(format!("read {name}"))(
            io::Error::last_os_error(),
        ));
    }
    let value = value.min(current.rlim_max);
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct we pass and keeps no pointer.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(JailError::sys(format!("set {name} to {value}"))(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}
