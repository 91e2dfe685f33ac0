//! Runs a command and measures it: wall time to a marker line on stdout,
//! wall time to exit, and peak RSS of the process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// One measured run.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    pub to_marker: Option<Duration>,
    pub to_exit: Duration,
    pub peak_rss_kib: u64,
    pub success: bool,
}

/// Spawns `cmd`, notes when a stdout line contains `marker`, waits for it
/// with `wait4` to get its resource usage.
pub fn measure(cmd: &mut Command, marker: &str, limit: Duration) -> anyhow::Result<Measurement> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    // A stuck guest must not stall the benchmark: kill it at the limit.
    let pid = child.id() as libc::pid_t;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            // SAFETY: kill(2) of our own child: it is reaped only after this
            // thread has been stopped and joined.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut to_marker = None;
    for line in BufReader::new(stdout).split(b'\n') {
        let line = line.context("reading stdout")?;
        if to_marker.is_none() && String::from_utf8_lossy(&line).contains(marker) {
            to_marker = Some(started.elapsed());
        }
    }
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unwaited child; the pointers are to live locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        bail!("wait4({pid}): {}", std::io::Error::last_os_error());
    }
    // The child is reaped; make sure std does not try to wait for it again.
    std::mem::forget(child);
    Ok(Measurement {
        to_marker,
        to_exit: started.elapsed(),
        peak_rss_kib: usage.ru_maxrss as u64,
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    })
}
