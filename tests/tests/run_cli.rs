//! `vmrun run -- CMD` as a user sees it: stdio, exit status, signals, tty.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmrun_tests::confinement::{assert_jailed, sandbox_dir_of, vmm_supervisor_of};
use vmrun_tests::{run, vmrun_bin, BOOT_DEADLINE};

#[test]
fn stdin_stdout_stderr_and_exit_status_pass_through() {
    let mut child = Command::new(vmrun_bin())
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; cat; exit 7",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let started = Instant::now();
    let output = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        assert!(
            started.elapsed() < BOOT_DEADLINE,
            "vmrun run did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(7),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(stdout, "hi\nabc\n", "stderr: {stderr}");
    assert!(stderr.contains("oops"), "{stderr}");
}

/// SIGTERM while the guest still boots stops the VM, says so, and leaves no
/// runtime directory behind; the next vmrun removes the directory of one
/// that was SIGKILLed.
#[test]
fn sigterm_during_boot_stops_the_vm_and_cleans_up() {
    let root = std::env::temp_dir().join(format!("vmrun-run-cli-rt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let start = || {
        Command::new(vmrun_bin())
            .args(["run", "--", "true"])
            .env("VMRUN_RUNTIME_DIR", &root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_for_dir = |pid: u32| {
        let dir = root.join(format!("vm-{pid}"));
        let started = Instant::now();
        while !dir.join("agent.vsock").exists() {
            assert!(started.elapsed() < Duration::from_secs(60), "no {dir:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        dir
    };

    let mut killed = start();
    let killed_dir = wait_for_dir(killed.id());
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(killed_dir.exists(), "SIGKILL leaves the directory");

    let child = start();
    let dir = wait_for_dir(child.id());
    assert!(!killed_dir.exists(), "the stale directory was not removed");
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("SIGTERM before the command started"),
        "{stderr}"
    );
    assert!(!dir.exists(), "{dir:?} left behind");
    std::fs::remove_dir_all(&root).unwrap();
}

/// SIGTERM reaches the command in the guest; meanwhile its VMM is seen
/// jailed.
#[test]
fn sigterm_to_vmrun_reaches_the_command() {
    let mut child = Command::new(vmrun_bin())
        .args(["run", "--", "sh", "-c", "echo started; exec sleep 1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").unwrap();
    assert_eq!(first, "started");
    // Its VMM runs jailed; a command without a rootfs needs no share, so
    // the VMM keeps no capability at all.
    let supervisor = vmm_supervisor_of(child.id() as i32);
    let capabilities = vmm::jail::capabilities::mask(vmm::jail::capabilities::kept(false));
    assert_jailed(supervisor, capabilities, &sandbox_dir_of(supervisor));
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "sleep was not killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn tty_mode_gives_the_command_a_terminal() {
    let done = run(
        Command::new(vmrun_bin()).args([
            "run",
            "-t",
            "--",
            "sh",
            "-c",
            "test -t 0 && echo is-a-tty",
        ]),
        BOOT_DEADLINE,
    );
    assert!(done.status.success(), "{done:?}");
    assert!(done.stdout.contains("is-a-tty"), "{done:?}");
}

#[test]
fn unknown_command_exits_127_like_a_shell() {
    let done = run(
        Command::new(vmrun_bin()).args(["run", "--", "/no/such/program"]),
        BOOT_DEADLINE,
    );
    assert_eq!(done.status.code(), Some(127), "{done:?}");
    assert!(done.stderr.contains("/no/such/program"), "{done:?}");
}

/// `--share TAG=DIR` is mounted in the guest at /mnt/TAG (the VM is
/// restored from the snapshot, whose virtio-fs devices are slots): the
/// command reads the host's files there, and with `:ro` cannot write them.
#[test]
fn shares_are_mounted_at_mnt_tag() {
    let dir = std::env::temp_dir().join(format!("vmrun-run-cli-share-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello"), "from the host\n").unwrap();
    let share = format!("data={}:ro", dir.display());
    let done = run(
        Command::new(vmrun_bin()).args([
            "run",
            "--share",
            &share,
            "--",
            "sh",
            "-c",
            "cat /mnt/data/hello; echo x > /mnt/data/new || echo refused",
        ]),
        BOOT_DEADLINE,
    );
    assert_eq!(done.status.code(), Some(0), "{done:?}");
    assert_eq!(done.stdout, "from the host\nrefused\n", "{done:?}");
    assert!(!dir.join("new").exists(), "a read-only share was written");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A tag that cannot name a guest directory is refused before any VM starts.
#[test]
fn a_share_tag_with_a_slash_is_refused() {
    let done = run(
        Command::new(vmrun_bin()).args(["run", "--share", "a/b=/tmp", "--", "true"]),
        Duration::from_secs(30),
    );
    assert_eq!(done.status.code(), Some(2), "{done:?}");
    assert!(done.stderr.contains("\"a/b\""), "{done:?}");
}

/// The console log cap the flood test sets: small, since the serial port
/// moves only ~10 KB/s under a software KVM.
const CONSOLE_LOG_CAP: u64 = 64 << 10;

/// A guest that floods its console: the console log on the host stops at
/// its cap (plus the line saying so), and `vmrun` does not grow with what
/// the guest writes.
#[test]
fn a_guest_flooding_its_console_is_bounded_on_the_host() {
    let root = std::env::temp_dir().join(format!("vmrun-flood-rt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let flood = 2 * CONSOLE_LOG_CAP;
    let script = format!(
        "echo flooding; head -c {flood} /dev/zero | tr '\\0' x > /dev/console; echo flooded"
    );
    let mut child = Command::new(vmrun_bin())
        .args(["run", "--console-log-cap", &CONSOLE_LOG_CAP.to_string()])
        .args(["--", "sh", "-c", &script])
        .env("VMRUN_RUNTIME_DIR", &root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().expect("a line").unwrap(), "flooding");
    let log = root.join(format!("vm-{}", child.id())).join("console.log");
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    };
    let rss_before = rss(child.id());
    let (mut largest_log, mut largest_rss) = (0, 0);
    let started = Instant::now();
    let status = loop {
        if let Ok(meta) = std::fs::metadata(&log) {
            largest_log = largest_log.max(meta.len());
        }
        largest_rss = largest_rss.max(rss(child.id()));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < BOOT_DEADLINE, "the flood did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "{status}: {rest:?}");
    assert_eq!(rest, ["flooded"]);
    // The whole flood reached the host, and the log kept only its cap.
    assert!(
        largest_log > CONSOLE_LOG_CAP && largest_log <= CONSOLE_LOG_CAP + 100,
        "console.log reached {largest_log} bytes (cap {CONSOLE_LOG_CAP})"
    );
    assert!(
        largest_rss < rss_before + 16 * 1024,
        "vmrun grew from {rss_before} KiB to {largest_rss} KiB"
    );
    assert!(!root.join(format!("vm-{}", child.id())).exists());
    let _ = std::fs::remove_dir_all(&root);
}
