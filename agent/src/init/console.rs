//! What the agent says on the console (the serial port): the ready line
//! the VMM and tests wait for, and fatal errors.

use std::fmt::Display;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::Mode;

/// Printed once the agent serves; the host waits for exactly this line.
pub const READY_LINE: &str = "vmrun-agent ready";

/// Makes sure stdin, stdout and stderr are the console.
///
/// The kernel opens /dev/console for init only if the initramfs has that
/// node; otherwise PID 1 starts without fds 0-2, and the first file it opens
/// would become "stdout". Once devtmpfs is mounted the node exists.
pub fn attach_console() -> nix::Result<()> {
    match fcntl(io::stdout().as_fd(), FcntlArg::F_GETFD) {
        Ok(_) => return Ok(()),
        Err(Errno::EBADF) => {}
        Err(errno) => return Err(errno),
    }
    // Not close-on-exec: children without their own stdio inherit it.
    let console = open(
        "/dev/console",
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        Mode::empty(),
    )?;
    nix::unistd::dup2_stdin(&console)?;
    nix::unistd::dup2_stdout(&console)?;
    nix::unistd::dup2_stderr(&console)?;
    // With no fds open, open() returned fd 0 itself: closing it would undo
    // the work, so hand it over to stdin for good.
    if console.as_raw_fd() <= libc::STDERR_FILENO {
        let _stdin = console.into_raw_fd();
    }
    Ok(())
}

/// Tells the host the agent is ready to serve.
pub fn announce_ready() -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{READY_LINE}")?;
    stdout.flush()
}

/// Reports an error the agent cannot go on from.
pub fn report_fatal(reason: &dyn Display) {
    // Nothing to be done if even the console fails.
    let _ = writeln!(io::stderr().lock(), "{}", fatal_line(reason));
}

fn fatal_line(reason: &dyn Display) -> String {
    format!("vmrun-agent: fatal: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_line_has_the_agreed_prefix() {
        assert_eq!(
            fatal_line(&"cannot mount proc on /proc: EPERM"),
            "vmrun-agent: fatal: cannot mount proc on /proc: EPERM"
        );
    }
}
