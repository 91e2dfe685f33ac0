//! containerd's own client (`ctr`) runs containers with the vmrun shim
//! (`--runtime io.containerd.vmrun.v2`): one microVM per task, with output,
//! exit codes, exec, pause/resume, metrics, signals and terminals passed
//! through. Each test boots one VM; they take turns (guests boot slowly on
//! a software-KVM host and two cores are all there is).
//!
//! These need `containerd-shim-vmrun-v2` and containerd; they fail at once,
//! saying so, when the shim is not built.

use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vmrun_tests::confinement::{assert_jailed, sandbox_dir_of};
use vmrun_tests::containerd::{require_shim, Containerd, IMAGE, VMRUN_RUNTIME};
use vmrun_tests::{run, Finished};

/// One VM boot at a time in this file.
static VM: Mutex<()> = Mutex::new(());

fn one_vm_at_a_time() -> MutexGuard<'static, ()> {
    VM.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Asserts `done` succeeded, showing its output and containerd's log.
#[track_caller]
fn ok(ctrd: &Containerd, what: &str, done: &Finished) {
    assert!(
        done.status.success(),
        "{what}: {done:?}\n--- containerd log (tail) ---\n{}",
        ctrd.log_tail(60)
    );
}

/// The STATUS column of `ctr task ls` for `task`, if listed.
fn task_status(ctrd: &Containerd, task: &str) -> Option<String> {
    let listed = ctrd.ctr(&["task", "ls"]);
    ok(ctrd, "ctr task ls", &listed);
    listed.stdout.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.first() == Some(&task)).then(|| cols.last().unwrap_or(&"").to_string())
    })
}

/// Waits until nothing of the fixture's tasks is left running: no shim, no
/// VMM (processes with the fixture's socket in their command line or
/// environment).
#[track_caller]
fn assert_nothing_left(ctrd: &Containerd) {
    let started = Instant::now();
    loop {
        let procs = ctrd.processes();
        if procs.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still running 30 s after the last task was removed: {procs:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let containers = ctrd.ctr(&["containers", "ls", "--quiet"]);
    ok(ctrd, "ctr containers ls", &containers);
    assert_eq!(containers.stdout.trim(), "", "containers left");
    assert_eq!(
        ctrd.mounts(),
        Vec::<std::path::PathBuf>::new(),
        "mounts left"
    );
    assert_eq!(
        ctrd.vmrun_sandboxes(),
        Vec::<std::path::PathBuf>::new(),
        "vmrun sandbox directories left"
    );
}

#[test]
fn ctr_run_rm_prints_output_and_propagates_the_exit_code() {
    require_shim();
    let _vm = one_vm_at_a_time();
    let ctrd = Containerd::start();
    let done = ctrd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        VMRUN_RUNTIME,
        IMAGE,
        "t1",
        "sh",
        "-c",
        "echo hello; exit 3",
    ]);
    assert_eq!(
        done.stdout.trim(),
        "hello",
        "ctr run --rm: {done:?}\n--- containerd log (tail) ---\n{}",
        ctrd.log_tail(60)
    );
    assert_eq!(
        done.status.code(),
        Some(3),
        "the task's exit code is ctr's: {done:?}"
    );
    assert_nothing_left(&ctrd);
}

#[test]
fn ctr_task_exec_pause_resume_metrics_kill_vm_death_and_remove() {
    require_shim();
    let _vm = one_vm_at_a_time();
    let ctrd = Containerd::start();
    let started = ctrd.ctr(&[
        "run",
        "--detach",
        "--runtime",
        VMRUN_RUNTIME,
        IMAGE,
        "t2",
        "sleep",
        "2147483647",
    ]);
    ok(&ctrd, "ctr run --detach", &started);
    assert_eq!(task_status(&ctrd, "t2").as_deref(), Some("RUNNING"));

    let exec = ctrd.ctr(&["task", "exec", "--exec-id", "e1", "t2", "echo", "hi"]);
    ok(&ctrd, "ctr task exec echo hi", &exec);
    assert_eq!(exec.stdout.trim(), "hi");
    let exec = ctrd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "t2",
        "sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(exec.status.code(), Some(5), "exec exit code: {exec:?}");

    ok(&ctrd, "ctr task pause", &ctrd.ctr(&["task", "pause", "t2"]));
    assert_eq!(task_status(&ctrd, "t2").as_deref(), Some("PAUSED"));
    ok(
        &ctrd,
        "ctr task resume",
        &ctrd.ctr(&["task", "resume", "t2"]),
    );
    assert_eq!(task_status(&ctrd, "t2").as_deref(), Some("RUNNING"));
    // Still answering after the round trip.
    let exec = ctrd.ctr(&["task", "exec", "--exec-id", "e3", "t2", "echo", "back"]);
    ok(&ctrd, "ctr task exec after resume", &exec);
    assert_eq!(exec.stdout.trim(), "back");

    let metrics = ctrd.ctr(&["task", "metrics", "t2"]);
    ok(&ctrd, "ctr task metrics", &metrics);
    assert!(
        metrics.stdout.contains("t2") && metrics.stdout.lines().count() > 2,
        "metrics name the task and hold values: {metrics:?}"
    );

    // `ctr task kill` of an exec: a detached `sleep` goes away.
    let detached = ctrd.ctr(&[
        "task",
        "exec",
        "--detach",
        "--exec-id",
        "e4",
        "t2",
        "sleep",
        "1000",
    ]);
    ok(&ctrd, "ctr task exec --detach", &detached);
    let guest_pids = |ctrd: &Containerd| -> Vec<String> {
        let ps = ctrd.ctr(&["task", "ps", "t2"]);
        ok(ctrd, "ctr task ps", &ps);
        ps.stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    assert_eq!(guest_pids(&ctrd).len(), 2, "init and the detached exec");
    ok(
        &ctrd,
        "ctr task kill --exec-id",
        &ctrd.ctr(&[
            "task",
            "kill",
            "--exec-id",
            "e4",
            "--signal",
            "SIGKILL",
            "t2",
        ]),
    );
    let since = Instant::now();
    while guest_pids(&ctrd).len() != 1 {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "exec e4 still listed 60 s after SIGKILL\n{}",
            ctrd.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The VM dies under the task (its VMM is the pid ctr shows): the task
    // is reported stopped, and removing it leaves nothing behind.
    let listed = ctrd.ctr(&["task", "ls"]);
    let vmm_pid: i32 = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("t2 "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid for t2: {listed:?}"));
    let comm = std::fs::read_to_string(format!("/proc/{vmm_pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "vmrun-vmm", "the task's pid is its VMM");
    // SAFETY: kill(2) of a process id we just read; no memory involved.
    assert_eq!(unsafe { libc::kill(vmm_pid, libc::SIGKILL) }, 0);
    let since = Instant::now();
    while task_status(&ctrd, "t2").as_deref() != Some("STOPPED") {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "t2 not STOPPED 60 s after its VMM was killed: {:?}\n{}",
            task_status(&ctrd, "t2"),
            ctrd.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        ctrd.log().contains("the microVM stopped"),
        "the shim log says why the task ended:\n{}",
        ctrd.log_tail(60)
    );
    ok(&ctrd, "ctr task rm", &ctrd.ctr(&["task", "rm", "t2"]));
    assert_eq!(task_status(&ctrd, "t2"), None, "task removed");
    ok(
        &ctrd,
        "ctr containers rm",
        &ctrd.ctr(&["containers", "rm", "t2"]),
    );
    assert_nothing_left(&ctrd);
}

#[test]
fn ctr_run_with_a_terminal() {
    require_shim();
    let _vm = one_vm_at_a_time();
    let ctrd = Containerd::start();
    // `ctr run -t` puts its own stdin in raw mode: give it a terminal.
    let line = ctrd.ctr_line(
        "default",
        &[
            "run",
            "--rm",
            "--tty",
            "--runtime",
            VMRUN_RUNTIME,
            IMAGE,
            "t3",
            "sh",
            "-c",
            "tty; test -t 0 && echo stdin-is-a-tty; exit 4",
        ],
    );
    let done = run(
        Command::new("script").args(["-qec", &line, "/dev/null"]),
        vmrun_tests::containerd::CTR_DEADLINE,
    );
    assert!(
        done.stdout.contains("/dev/pts/") && done.stdout.contains("stdin-is-a-tty"),
        "the task has a terminal: {done:?}\n--- containerd log (tail) ---\n{}",
        ctrd.log_tail(60)
    );
    assert_eq!(
        done.status.code(),
        Some(4),
        "exit code through -t: {done:?}"
    );
    assert_nothing_left(&ctrd);
}

/// A guest whose agent stops answering (here: its VMM is frozen with
/// SIGSTOP) does not hang containerd: the call fails at the configured
/// deadline saying so, the VM is stopped, and removing the task leaves
/// nothing behind.
#[test]
fn a_hung_agent_fails_calls_at_the_deadline_and_is_cleaned_up() {
    require_shim();
    let _vm = one_vm_at_a_time();
    let ctrd = Containerd::start();
    let config = ctrd.dir().join("vmrun-short-deadline.toml");
    std::fs::write(&config, "agent_timeout_secs = 20\n").unwrap();
    let config = config.to_str().unwrap();
    ok(
        &ctrd,
        "ctr run --detach",
        &ctrd.ctr(&[
            "run",
            "--detach",
            "--runtime",
            VMRUN_RUNTIME,
            "--runtime-config-path",
            config,
            IMAGE,
            "t4",
            "sleep",
            "1000",
        ]),
    );
    let listed = ctrd.ctr(&["task", "ls"]);
    let vmm_pid: i32 = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("t4 "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid for t4: {listed:?}"));
    // The VMM runs jailed, with the capabilities the virtio-fs
    // passthrough needs and no others (see vmm::jail).
    let capabilities = vmm::jail::capabilities::mask(vmm::jail::capabilities::kept(true));
    let jailed = assert_jailed(vmm_pid, capabilities, &sandbox_dir_of(vmm_pid));
    let vmm_pid = jailed.vmm;
    // SAFETY: kill(2) of a process id we just read; no memory involved.
    assert_eq!(unsafe { libc::kill(vmm_pid, libc::SIGSTOP) }, 0);

    let started = Instant::now();
    let kill = ctrd.ctr(&["task", "kill", "--signal", "SIGTERM", "t4"]);
    assert!(!kill.status.success(), "a kill nobody answered: {kill:?}");
    assert!(
        kill.stderr
            .contains("did not answer kill container within 20 s"),
        "{kill:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "ctr task kill took {:?}",
        started.elapsed()
    );
    let since = Instant::now();
    while task_status(&ctrd, "t4").as_deref() != Some("STOPPED") {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "t4 not STOPPED 60 s after its deadline: {:?}\n{}",
            task_status(&ctrd, "t4"),
            ctrd.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{vmm_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{vmm_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the frozen VMM was not killed"
    );
    ok(&ctrd, "ctr task rm", &ctrd.ctr(&["task", "rm", "t4"]));
    ok(
        &ctrd,
        "ctr containers rm",
        &ctrd.ctr(&["containers", "rm", "t4"]),
    );
    assert_nothing_left(&ctrd);
}
