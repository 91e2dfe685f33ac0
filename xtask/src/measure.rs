//! Runs a command and measures it: wall time to a marker line on stdout,
//! wall time to exit, CPU time and peak RSS of the process.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// One measured run.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    pub to_marker: Option<Duration>,
    pub to_exit: Duration,
    pub peak_rss_kib: u64,
    /// User plus system CPU time of the process (its vCPU threads included):
    /// much less inflated than wall time when other work shares the host.
    pub cpu: Duration,
    /// The host's 1-minute load average when the run started.
    pub load_at_start: Option<f64>,
    pub success: bool,
    /// Killed at the time limit.
    pub timed_out: bool,
}

/// Spawns `cmd`, notes when a stdout line contains `marker`, waits for it
/// with `wait4` to get its resource usage. Its stdout and stderr (the guest
/// console and the VMM's own messages) are kept in `log`, so a boot that
/// fails or hangs can be looked at afterwards.
pub fn measure(
    cmd: &mut Command,
    marker: &str,
    limit: Duration,
    log: &Path,
) -> anyhow::Result<Measurement> {
    let mut log_file =
        File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let stderr = log_file.try_clone().context("cannot share the log")?;
    let load_at_start = load_average();
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
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
            true
        } else {
            false
        }
    });
    let mut to_marker = None;
    for line in BufReader::new(stdout).split(b'\n') {
        let line = line.context("reading stdout")?;
        if to_marker.is_none() && String::from_utf8_lossy(&line).contains(marker) {
            to_marker = Some(started.elapsed());
        }
        // The log is for reading afterwards; losing it must not end the run.
        let _ = log_file
            .write_all(&line)
            .and_then(|()| log_file.write_all(b"\n"));
    }
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
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
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        load_at_start,
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        timed_out,
    })
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

/// The first field of /proc/loadavg.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
