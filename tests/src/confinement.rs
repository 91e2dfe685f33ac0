//! What a test sees of a running VMM's confinement, from `/proc` (see
//! `vmm::jail` and `vmm::seccomp`).

use std::path::{Path, PathBuf};

/// A VMM process's supervisor (`vmrun-vmm`, or `vmrun boot`) and the
/// jailed VMM it forked.
pub struct JailedVmm {
    pub supervisor: i32,
    pub vmm: i32,
}

/// Asserts that the supervisor process `supervisor` runs the VMM jailed:
/// the supervisor with no capabilities under seccomp; its one child (the
/// VMM) in mount, PID, network, IPC and UTS namespaces of its own, every
/// thread under seccomp with exactly `capabilities` (a `CapEff` mask),
/// no core dumps, and a root holding nothing but `sandbox_dir`.
pub fn assert_jailed(supervisor: i32, capabilities: u64, sandbox_dir: &Path) -> JailedVmm {
    for status in thread_statuses(supervisor) {
        assert_status(&status, "Seccomp", 2);
        assert_status(&status, "CapEff", 0);
        assert_status(&status, "CapBnd", 0);
    }
    let children = read(&format!("/proc/{supervisor}/task/{supervisor}/children"));
    let vmm: i32 = match children.split_whitespace().collect::<Vec<_>>()[..] {
        [one] => one.parse().expect("a pid"),
        _ => panic!("the supervisor {supervisor} has children {children:?}, not one VMM"),
    };
    let mut threads = 0;
    for status in thread_statuses(vmm) {
        assert_status(&status, "Seccomp", 2);
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert_status(&status, set, capabilities);
        }
        threads += 1;
    }
    assert!(threads >= 3, "main, vCPU and worker threads: {threads}");
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("our namespace");
        let its = std::fs::read_link(format!("/proc/{vmm}/ns/{ns}")).expect("its namespace");
        assert_ne!(ours, its, "the VMM shares our {ns} namespace");
    }
    let limits = read(&format!("/proc/{vmm}/limits"));
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core limit");
    assert!(
        core.split_whitespace().nth(4) == Some("0"),
        "core dumps allowed: {core}"
    );
    let root = PathBuf::from(format!("/proc/{vmm}/root"));
    let mut seen = Vec::new();
    list_outside(&root, &root, sandbox_dir, &mut seen);
    let wanted: Vec<PathBuf> = sandbox_dir
        .ancestors()
        .filter(|a| a.parent().is_some())
        .map(Path::to_path_buf)
        .collect();
    seen.sort();
    let mut wanted_sorted = wanted.clone();
    wanted_sorted.sort();
    assert_eq!(
        seen, wanted_sorted,
        "the VMM's root holds more than its sandbox directory"
    );
    JailedVmm { supervisor, vmm }
}

/// Every path under `dir` (seen through `root`) that is not beneath
/// `keep` (which is listed but not entered).
fn list_outside(root: &Path, dir: &Path, keep: &Path, seen: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("an entry").path();
        let inside = Path::new("/").join(path.strip_prefix(root).expect("beneath the root"));
        seen.push(inside.clone());
        if inside != keep && path.is_dir() {
            list_outside(root, &path, keep, seen);
        }
    }
}

fn thread_statuses(pid: i32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    tasks
        .map(|task| {
            read(
                &task
                    .expect("a thread")
                    .path()
                    .join("status")
                    .to_string_lossy(),
            )
        })
        // KVM's own kernel worker, listed among them, is no user thread.
        .filter(|status| !status.lines().next().unwrap_or_default().contains("kvm-"))
        .collect()
}

fn assert_status(status: &str, field: &str, wanted: u64) {
    let name = status.lines().next().unwrap_or_default();
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:\t")))
        .unwrap_or_else(|| panic!("no {field} in the status of {name}"));
    let got = match field {
        "Seccomp" => value.parse().expect("a number"),
        _ => u64::from_str_radix(value, 16).expect("a hex mask"),
    };
    assert_eq!(got, wanted, "{field} of {name}:\n{status}");
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The sandbox directory of the VMM process `supervisor` started as
/// `vmrun-vmm --config DIR/vm.json`.
pub fn sandbox_dir_of(supervisor: i32) -> PathBuf {
    let cmdline = std::fs::read(format!("/proc/{supervisor}/cmdline")).expect("its command line");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let config = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("{supervisor} is no `vmrun-vmm --config`: {args:?}"));
    Path::new(config)
        .parent()
        .expect("a directory")
        .to_path_buf()
}

/// The `vmrun-vmm` process (a VMM's supervisor) that process `pid` (a
/// `vmrun run`, a shim) started; children are listed per thread.
pub fn vmm_supervisor_of(pid: i32) -> i32 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("its threads");
    let children: Vec<i32> = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    let booted: Vec<i32> = children
        .into_iter()
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|comm| comm.trim() == "vmrun-vmm")
        })
        .collect();
    match booted[..] {
        [one] => one,
        _ => panic!("{pid} has VMM processes {booted:?}, not one"),
    }
}
