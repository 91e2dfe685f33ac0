//! Boots real microVMs with `vmrun boot` and checks what a user sees.

use std::process::Command;

use vmrun_tests::{run, vmrun_bin, BOOT_DEADLINE};

#[test]
fn boot_reaches_the_agent_and_shuts_down_cleanly() {
    let done = run(
        Command::new(vmrun_bin()).args(["boot", "--exit-when-ready", "--timeout", "400"]),
        BOOT_DEADLINE,
    );
    assert!(done.status.success(), "{done:?}");
    assert!(done.stdout.contains("vmrun-agent ready"), "{done:?}");
    assert!(done.stderr.contains("vmrun: agent ready after"), "{done:?}");
    assert!(
        done.stderr.contains("vmrun: guest shut down after"),
        "{done:?}"
    );
}

#[test]
fn guest_without_init_is_reported_as_a_kernel_panic() {
    // An initramfs with nothing to run: the guest kernel panics and resets.
    let dir = std::env::temp_dir().join(format!("vmrun-noinit-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("root/dev")).expect("make root");
    let cpio = dir.join("empty.cpio");
    let packed = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {}/root && echo dev | cpio --quiet -o -H newc > {}",
            dir.display(),
            cpio.display()
        ))
        .status()
        .expect("run cpio");
    assert!(packed.success());

    let done = run(
        Command::new(vmrun_bin()).args([
            "boot",
            "--exit-when-ready",
            "--timeout",
            "400",
            "--initrd",
            cpio.to_str().expect("utf-8 path"),
        ]),
        BOOT_DEADLINE,
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert!(!done.status.success(), "{done:?}");
    assert!(
        done.stderr
            .contains("vmrun: guest kernel panicked: Kernel panic - not syncing"),
        "{done:?}"
    );
}

#[test]
fn missing_kernel_is_named_in_the_error() {
    let done = run(
        Command::new(vmrun_bin()).args(["boot", "--kernel", "/nonexistent/vmlinux"]),
        BOOT_DEADLINE,
    );
    assert!(!done.status.success(), "{done:?}");
    assert!(
        done.stderr
            .contains("cannot open kernel /nonexistent/vmlinux"),
        "{done:?}"
    );
}

#[test]
fn invalid_sizes_are_refused_before_booting() {
    let done = run(
        Command::new(vmrun_bin()).args(["boot", "--cpus", "0"]),
        BOOT_DEADLINE,
    );
    assert!(!done.status.success(), "{done:?}");
    assert!(
        done.stderr
            .contains("vcpus must be between 1 and 16, got 0"),
        "{done:?}"
    );
}

/// `vmrun boot` stopped by SIGTERM exits 143 like any program killed by it,
/// and takes its private runtime directory with it.
#[test]
fn sigterm_stops_boot_and_removes_its_runtime_directory() {
    let root = std::env::temp_dir().join(format!("vmrun-boot-rt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let child = Command::new(vmrun_bin())
        .arg("boot")
        .env("VMRUN_RUNTIME_DIR", &root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run vmrun boot");
    let dir = root.join(format!("vm-{}", child.id()));
    let started = std::time::Instant::now();
    while !dir.join("agent.vsock").exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no {dir:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let done = child.wait_with_output().expect("wait for vmrun boot");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(!dir.exists(), "{dir:?} left behind");
    std::fs::remove_dir_all(&root).expect("clean up");
}
