//! Pseudo-terminals for processes started with `terminal = true`.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

use super::exec_spec::TerminalSize;

nix::ioctl_write_ptr_bad!(ioctl_set_window_size, libc::TIOCSWINSZ, libc::winsize);
nix::ioctl_write_int_bad!(ioctl_set_controlling_terminal, libc::TIOCSCTTY);

/// Both ends of a new pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    /// The agent's end: the process's output is read and input written here.
    pub master: OwnedFd,
    /// The process's end: becomes its stdin, stdout and stderr.
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal of the given size.
///
/// Both fds are close-on-exec, so a process forked concurrently for another
/// exec never inherits them: a stray slave fd would keep this terminal open
/// and its output stream from ever ending.
pub fn open_pty(size: TerminalSize) -> nix::Result<Pty> {
    let no_inherit = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = posix_openpt(no_inherit)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let slave_path = ptsname_r(&master)?;
    let slave = nix::fcntl::open(slave_path.as_str(), no_inherit, Mode::empty())?;
    let master = OwnedFd::from(master);
    set_window_size(&master, size)?;
    Ok(Pty { master, slave })
}

/// Sets the window size; the kernel sends SIGWINCH to the terminal's
/// foreground process group.
pub fn set_window_size(master: &OwnedFd, size: TerminalSize) -> nix::Result<()> {
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ only reads a `winsize` through the pointer, which
    // points to a live local of exactly that type; `master` is an open fd.
    unsafe { ioctl_set_window_size(master.as_raw_fd(), &winsize) }.map(drop)
}

/// Makes the terminal on stdin the controlling terminal of the calling
/// process, which must be a session leader. Async-signal-safe: called
/// between fork and exec.
pub fn make_stdin_controlling_terminal() -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal the
    // terminal from another session); no memory is passed.
    unsafe { ioctl_set_controlling_terminal(libc::STDIN_FILENO, 0) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    nix::ioctl_read_bad!(ioctl_get_window_size, libc::TIOCGWINSZ, libc::winsize);

    fn window_size(fd: &OwnedFd) -> (u16, u16) {
        let mut winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the live local.
        unsafe { ioctl_get_window_size(fd.as_raw_fd(), &mut winsize) }.unwrap();
        (winsize.ws_row, winsize.ws_col)
    }

    #[test]
    fn new_pty_has_the_requested_size_and_resizes() {
        let pty = open_pty(TerminalSize {
            rows: 30,
            cols: 100,
        })
        .unwrap();
        assert_eq!(window_size(&pty.slave), (30, 100));
        set_window_size(
            &pty.master,
            TerminalSize {
                rows: 40,
                cols: 120,
            },
        )
        .unwrap();
        assert_eq!(window_size(&pty.slave), (40, 120));
    }

    #[test]
    fn slave_is_a_terminal() {
        let pty = open_pty(TerminalSize { rows: 24, cols: 80 }).unwrap();
        assert!(nix::unistd::isatty(&pty.slave).unwrap());
    }
}
