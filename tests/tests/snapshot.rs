//! Sandboxes restored from the default snapshot (made by setup): each is
//! its own machine, sized as asked; a snapshot that does not fit is refused
//! with a clear error and nothing left behind.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::Guest;
use vmm::config::SharedDir;
use vmm::VmConfig;
use vmrun_agent::client::{AgentClient, ExecCommand, ProcessExit, StorageMount};
use vmrun_tests::{run, vmrun_bin};

/// The snapshot every default VM restores from; setup.sh makes it.
fn default_snapshot() -> PathBuf {
    let config = VmConfig::default();
    let inputs =
        vmm::snapshot::inputs_for(&config).expect("read the installed kernel and initramfs");
    let dir = vmm::snapshot::cache_dir(&inputs);
    assert!(
        dir.join("state").is_file(),
        "no default snapshot in {} (scripts/setup.sh makes it: `vmrun snapshot create`)",
        dir.display()
    );
    dir
}

async fn sh(agent: &AgentClient, script: &str) -> String {
    let started = agent
        .exec(ExecCommand::new(["sh", "-c", script]))
        .await
        .expect("exec");
    let id = started.exec_id;
    let stdout = agent.read_stdout(&id).await.expect("stdout");
    let out = tokio::spawn(stdout.read_to_end());
    agent
        .write_stdin(&id, tokio_stream::iter(Vec::<Bytes>::new()))
        .await
        .expect("stdin");
    let exit = agent.wait(&id).await.expect("wait");
    assert_eq!(exit, ProcessExit::Exited(0), "{script}");
    String::from_utf8(out.await.unwrap().expect("read stdout")).unwrap()
}

/// A sandbox restored with a share of its own holding a file named `name`.
async fn restored(name: &str) -> Guest {
    let dir = common::test_dir(&format!("snapshot-{name}"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(name), name).unwrap();
    let share = SharedDir::new("data", data, true);
    let guest = common::boot(&dir, vec![share], Vec::new()).await;
    assert!(guest.vm.restored(), "the VM booted instead of restoring");
    guest
        .agent
        .mount_storage(StorageMount::virtiofs("data", "/run/data").read_only())
        .await
        .expect("mount the share");
    guest
}

fn host_unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn two_sandboxes_restored_at_once_are_their_own_machines() {
    default_snapshot();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (a, b) = tokio::join!(restored("a"), restored("b"));
        for (guest, name) in [(&a, "a"), (&b, "b")] {
            // Only its own share.
            assert_eq!(sh(&guest.agent, "ls /run/data").await, format!("{name}\n"));
            // The clock is the host's, not the snapshot's.
            // (Read between two host readings: an exec takes seconds here.)
            let before = host_unix_secs();
            let guest_secs: i64 = sh(&guest.agent, "date +%s").await.trim().parse().unwrap();
            let after = host_unix_secs();
            assert!(
                (before - 1..=after + 1).contains(&guest_secs),
                "guest clock {guest_secs}, host {before}..{after}"
            );
            // The vCPUs and memory a default VM asks for.
            let config = VmConfig::default();
            let cpus = sh(&guest.agent, "grep -c ^processor /proc/cpuinfo").await;
            assert_eq!(cpus.trim(), config.vcpus.to_string());
            let online = sh(&guest.agent, "cat /sys/devices/system/cpu/online").await;
            assert_eq!(online.trim(), format!("0-{}", config.vcpus - 1));
            let details = guest.agent.guest_details().await.unwrap();
            let asked = config.memory_mib << 20;
            assert!(
                details.memory_total_bytes <= asked && details.memory_total_bytes > asked * 3 / 4,
                "guest has {} bytes of RAM, {asked} asked",
                details.memory_total_bytes
            );
        }
        // Random streams differ although both guests resumed one memory image.
        let read = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
        let (ra, rb) = tokio::join!(sh(&a.agent, read), sh(&b.agent, read));
        assert_eq!(ra.len(), 64, "{ra:?}");
        assert_ne!(ra, rb, "two restored sandboxes read the same random bytes");
    });
}

/// A copy of the default snapshot in `dir`, changed by `damage`.
fn damaged_snapshot(dir: &Path, damage: impl FnOnce(&Path)) -> PathBuf {
    let original = default_snapshot();
    let copy = dir.join("snapshot");
    std::fs::create_dir_all(copy.join("empty")).unwrap();
    std::fs::copy(original.join("state"), copy.join("state")).unwrap();
    std::fs::copy(original.join("empty.img"), copy.join("empty.img")).unwrap();
    // Sparse, so that a copy of a 256 MiB guest costs little.
    let copied = Command::new("cp")
        .arg("--sparse=always")
        .arg(original.join("memory"))
        .arg(copy.join("memory"))
        .status()
        .unwrap();
    assert!(copied.success());
    damage(&copy);
    copy
}

/// `vmrun run --snapshot DIR -- true` fails with `message`, and leaves no
/// runtime directory (or VMM, which lives in that process) behind.
fn refused(snapshot: &Path, runtime_dir: &Path, extra: &[&str], message: &str) {
    let mut cmd = Command::new(vmrun_bin());
    cmd.arg("run")
        .arg("--snapshot")
        .arg(snapshot)
        .args(extra)
        .args(["--", "true"])
        .env("VMRUN_RUNTIME_DIR", runtime_dir);
    let done = run(&mut cmd, Duration::from_secs(120));
    assert_eq!(done.status.code(), Some(125), "{done:?}");
    assert!(done.stderr.contains(message), "{done:?}");
    let left: Vec<_> = std::fs::read_dir(runtime_dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn snapshots_that_do_not_fit_are_refused() {
    let dir = common::test_dir("snapshot-refused");
    let truncated = damaged_snapshot(&dir.join("truncated"), |s| {
        let memory = std::fs::OpenOptions::new()
            .write(true)
            .open(s.join("memory"))
            .unwrap();
        let len = memory.metadata().unwrap().len();
        memory.set_len(len - 4096).unwrap();
    });
    let runtime = dir.join("runtime");
    refused(&truncated, &runtime, &[], "memory file is");

    let corrupt = damaged_snapshot(&dir.join("corrupt"), |s| {
        let path = s.join("state");
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    });
    refused(&corrupt, &runtime, &[], "checksum mismatch");

    let cut = damaged_snapshot(&dir.join("cut"), |s| {
        let path = s.join("state");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    });
    refused(&cut, &runtime, &[], "truncated");

    let default = default_snapshot();
    refused(
        &default,
        &runtime,
        &["--memory", "512"],
        "memory size is 256 MiB, this VM's is 512 MiB",
    );
    refused(
        &default,
        &runtime,
        &["--cpus", "1"],
        "vCPU count is 2, this VM's is 1",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snapshot_files_are_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = default_snapshot();
    for (entry, mode) in [("", 0o700), ("state", 0o600), ("memory", 0o600)] {
        let meta = std::fs::metadata(dir.join(entry)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{entry:?}");
    }
}

/// A VMM restores the snapshot whichever host CPU it runs on: the CPUID a
/// snapshot is checked against must not carry the host CPU's own ids (on
/// Intel hosts KVM passes leaf 0x1F through with the x2APIC id of the CPU
/// that asked).
#[test]
fn the_snapshot_restores_on_every_host_cpu() {
    let snapshot = default_snapshot();
    let cpus = std::thread::available_parallelism().unwrap().get();
    for cpu in 0..cpus {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &cpu.to_string()])
            .arg(vmrun_bin())
            .arg("run")
            .arg("--snapshot")
            .arg(&snapshot)
            .args(["--", "echo", "restored"]);
        let done = run(&mut cmd, Duration::from_secs(300));
        assert!(done.status.success(), "on host CPU {cpu}: {done:?}");
        assert_eq!(done.stdout, "restored\n", "on host CPU {cpu}");
    }
}
