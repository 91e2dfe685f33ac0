//! OCI containers in one real microVM: the rootfs comes from the host over
//! virtio-fs, the agent runs each spec with libcontainer, and what a user of
//! runc expects inside holds (isolation, limits, security settings), a
//! virtio-blk volume works, and an exec joins a running container.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::Guest;
use oci_spec::runtime::Spec;
use serde_json::{json, Value};
use vmm::config::{Disk, SharedDir};
use vmrun_agent::client::{
    AgentClient, ClientError, ContainerCreate, ExecId, ProcessExit, StorageMount,
};
use vmrun_tests::busybox_bundle;

const ROOTFS_MOUNT: &str = "/run/vmrun/rootfs/shared";
/// Where the agent mounts the ext4 volume (the guest's /dev/vda).
const VOLUME_MOUNT: &str = "/run/vmrun/volumes/data";
const VOLUME_IMAGE: &str = "volume.ext4";
const HOST_TEXT: &str = "written on the host\n";
/// Longest a container step may take on a slow (software KVM) host.
const EXEC_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

async fn boot() -> Guest {
    let dir = common::test_dir("containers");
    busybox_bundle(&dir.join("bundle"));
    make_volume(&dir);
    let rootfs = SharedDir::new("rootfs", dir.join("bundle/rootfs"), true);
    let volume = Disk::new(dir.join(VOLUME_IMAGE), false);
    let guest = common::boot(&dir, vec![rootfs], vec![volume]).await;
    guest
        .agent
        .mount_storage(StorageMount::virtiofs("rootfs", ROOTFS_MOUNT).read_only())
        .await
        .expect("mount the rootfs share");
    guest
        .agent
        .mount_storage(StorageMount::block_device("/dev/vda", "ext4", VOLUME_MOUNT))
        .await
        .expect("mount the ext4 volume");
    guest
}

/// A 16 MiB ext4 image holding `hello.txt`, made without mounting anything
/// (mkfs.ext4 -d copies a directory in).
fn make_volume(dir: &Path) {
    let content = dir.join("volume-content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("hello.txt"), HOST_TEXT).unwrap();
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(dir.join(VOLUME_IMAGE))
        .arg("16M")
        .output()
        .expect("run mkfs.ext4 (e2fsprogs)");
    assert!(made.status.success(), "mkfs.ext4: {made:?}");
}

/// The content of `path` in the ext4 image, read on the host with debugfs.
fn read_from_image(image: &Path, path: &str) -> String {
    let read = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(image)
        .output()
        .expect("run debugfs (e2fsprogs)");
    assert!(read.status.success(), "debugfs: {read:?}");
    String::from_utf8_lossy(&read.stdout).into_owned()
}

/// `runc spec` defaults, running `args`, not on a terminal, with a writable
/// root (an overlay in the guest).
fn spec(args: &[&str]) -> Value {
    let mut spec = serde_json::to_value(Spec::default()).unwrap();
    spec["root"]["readonly"] = json!(false);
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(args);
    spec
}

struct Ran {
    stdout: String,
    stderr: String,
    exit: ProcessExit,
    oom_killed: bool,
}

fn container_create(id: &str, spec: &Value) -> ContainerCreate {
    let writable = !spec["root"]["readonly"].as_bool().unwrap_or(false);
    let create = ContainerCreate::new(id, serde_json::to_vec(spec).unwrap(), ROOTFS_MOUNT);
    if writable {
        create.writable_overlay()
    } else {
        create
    }
}

/// A process's stdout and stderr, read to the end in the background.
struct Output {
    stdout: tokio::task::JoinHandle<Result<Vec<u8>, ClientError>>,
    stderr: tokio::task::JoinHandle<Result<Vec<u8>, ClientError>>,
}

impl Output {
    async fn capture(agent: &AgentClient, exec_id: &ExecId) -> Self {
        let stdout = agent.read_stdout(exec_id).await.unwrap();
        let stderr = agent.read_stderr(exec_id).await.unwrap();
        Output {
            stdout: tokio::spawn(stdout.read_to_end()),
            stderr: tokio::spawn(stderr.read_to_end()),
        }
    }

    /// (stdout, stderr) once both streams ended.
    async fn text(self) -> (String, String) {
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        (
            text(self.stdout.await.unwrap().unwrap()),
            text(self.stderr.await.unwrap().unwrap()),
        )
    }
}

async fn run(agent: &AgentClient, id: &str, spec: &Value) -> Ran {
    let create = container_create(id, spec);
    let init = agent
        .create_container(create)
        .await
        .expect("create container");
    let output = Output::capture(agent, &init.exec_id).await;
    agent.close_stdin(&init.exec_id).await.unwrap();
    agent.start_container(id).await.expect("start container");
    let exit = agent.wait(&init.exec_id).await.unwrap();
    let state = agent.container_state(id).await.unwrap();
    agent
        .remove_container(id, true)
        .await
        .expect("remove container");
    let (stdout, stderr) = output.text().await;
    Ran {
        stdout,
        stderr,
        exit,
        oom_killed: state.oom_killed,
    }
}

#[test]
fn oci_containers_in_one_guest() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let guest = boot().await;
        let agent = &guest.agent;

        // a virtio-blk volume: the ext4 image made on the host, mounted by
        // the agent and bound into the container, which reads the host's
        // file and writes one the host then finds in the image.
        let mut s = spec(&[
            "sh",
            "-c",
            "cat /data/hello.txt && echo from the guest > /data/guest.txt",
        ]);
        s["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data",
            "type": "bind",
            "source": VOLUME_MOUNT,
            "options": ["rbind", "rw"]
        }));
        let ran = run(agent, "volume", &s).await;
        assert_eq!(ran.stdout, HOST_TEXT, "{:?} {}", ran.exit, ran.stderr);
        assert_eq!(ran.exit, ProcessExit::Exited(0));
        agent
            .unmount_storage(VOLUME_MOUNT)
            .await
            .expect("unmount the volume (flushes it)");
        assert_eq!(
            read_from_image(&guest.dir.join(VOLUME_IMAGE), "/guest.txt"),
            "from the guest\n"
        );

        eprintln!("containers: the volume checks passed");
        cpu_limit_and_exec(agent).await;
        eprintln!("containers: the cpu.max and exec checks passed");

        // hostname, env, cwd, exit status.
        let mut s = spec(&["sh", "-c", "hostname; echo $GREETING; pwd; exit 42"]);
        s["hostname"] = json!("box1");
        s["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("GREETING=hello"));
        s["process"]["cwd"] = json!("/tmp");
        let ran = run(agent, "basics", &s).await;
        assert_eq!(
            ran.stdout, "box1\nhello\n/tmp\n",
            "{:?} {}",
            ran.exit, ran.stderr
        );
        assert_eq!(ran.exit, ProcessExit::Exited(42));

        // another user.
        let mut s = spec(&["id"]);
        s["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        let ran = run(agent, "user", &s).await;
        assert!(
            ran.stdout.starts_with("uid=1000(user) gid=1000(user)"),
            "{} {}",
            ran.stdout,
            ran.stderr
        );

        // read-only root: a write fails; the writable overlay takes one
        // without touching the host's copy.
        let mut s = spec(&["sh", "-c", "touch /x"]);
        s["root"]["readonly"] = json!(true);
        let ran = run(agent, "readonly", &s).await;
        assert_ne!(ran.exit, ProcessExit::Exited(0));
        assert!(
            ran.stderr.contains("Read-only file system"),
            "{}",
            ran.stderr
        );
        let s = spec(&["sh", "-c", "echo data > /written && cat /written"]);
        let ran = run(agent, "overlay", &s).await;
        assert_eq!(ran.stdout, "data\n", "{}", ran.stderr);
        assert!(!guest.dir.join("bundle/rootfs/written").exists());

        // a dropped capability: runc's defaults have no CAP_MKNOD.
        let ran = run(
            agent,
            "nocap",
            &spec(&["mknod", "/tmp/null2", "c", "1", "3"]),
        )
        .await;
        assert_ne!(ran.exit, ProcessExit::Exited(0));
        assert!(
            ran.stderr.contains("Operation not permitted"),
            "{}",
            ran.stderr
        );

        // the device cgroup: runc's "deny all" plus one allowed device.
        // Both nodes are bound in from the guest's /dev, so only the device
        // cgroup stands between the container's root and them: /dev/fuse
        // (10:229, allowed here) opens, /dev/kmsg (1:11, in no default
        // rule) does not.
        let mut s = spec(&[
            "sh",
            "-c",
            ": < /tmp/fuse && echo fuse opened; : < /tmp/kmsg && echo kmsg opened",
        ]);
        for (source, destination) in [("/dev/fuse", "/tmp/fuse"), ("/dev/kmsg", "/tmp/kmsg")] {
            s["mounts"].as_array_mut().unwrap().push(json!({
                "destination": destination,
                "type": "bind",
                "source": source,
                "options": ["bind"]
            }));
        }
        s["linux"]["resources"]["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}
        ]);
        let ran = run(agent, "devices", &s).await;
        assert_eq!(ran.stdout, "fuse opened\n", "{}", ran.stderr);
        assert!(
            ran.stderr.contains("Operation not permitted"),
            "{}",
            ran.stderr
        );

        // seccomp denies mkdir with EPERM.
        let mut s = spec(&["mkdir", "/tmp/d"]);
        s["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
        let ran = run(agent, "seccomp", &s).await;
        assert_ne!(ran.exit, ProcessExit::Exited(0));
        assert!(
            ran.stderr.contains("Operation not permitted"),
            "{}",
            ran.stderr
        );

        // pids.max stops a fork bomb.
        let mut s = spec(&[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & done; wait",
        ]);
        s["linux"]["resources"] = json!({"pids": {"limit": 4}});
        let ran = run(agent, "pids", &s).await;
        assert!(ran.stderr.contains("can't fork"), "{}", ran.stderr);

        // memory.max: a write into tmpfs past the limit is OOM-killed, and
        // reported as such.
        let mut s = spec(&[
            "dd",
            "if=/dev/zero",
            "of=/dev/shm/fill",
            "bs=1M",
            "count=24",
        ]);
        s["linux"]["resources"] = json!({"memory": {"limit": 8 * 1024 * 1024}});
        let ran = run(agent, "oom", &s).await;
        assert_eq!(
            ran.exit,
            ProcessExit::Signaled(libc::SIGKILL),
            "{}",
            ran.stderr
        );
        assert!(ran.oom_killed);
    });
}

/// cpu.max from `linux.resources.cpu` is in force (the container sees it,
/// and its busy loop, seconds of CPU at half a CPU, was throttled), and an
/// exec into the running container shares its hostname, its root file
/// system (a file the init process wrote in the overlay) and its cgroup.
/// The exec runs after the loop, so that it is not throttled itself.
async fn cpu_limit_and_exec(agent: &AgentClient) {
    let id = "busy";
    let mut s = spec(&[
        "sh",
        "-c",
        "echo in the overlay > /marker; cat /sys/fs/cgroup/cpu.max; \
         i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo ready; exec sleep 1000",
    ]);
    s["hostname"] = json!("busybox-exec");
    s["linux"]["resources"] = json!({"cpu": {"quota": 50000, "period": 100000}});
    let init = agent
        .create_container(container_create(id, &s))
        .await
        .expect("create container");
    let mut stdout = agent.read_stdout(&init.exec_id).await.unwrap();
    let stderr = agent.read_stderr(&init.exec_id).await.unwrap();
    let init_err = tokio::spawn(stderr.read_to_end());
    agent.close_stdin(&init.exec_id).await.unwrap();
    agent.start_container(id).await.expect("start container");
    let mut seen = Vec::new();
    while !seen.ends_with(b"ready\n") {
        let chunk = tokio::time::timeout(EXEC_LIMIT, stdout.next_chunk())
            .await
            .unwrap_or_else(|_| panic!("no ready line: {:?}", String::from_utf8_lossy(&seen)));
        match chunk.unwrap() {
            Some(chunk) => seen.extend_from_slice(&chunk),
            None => panic!(
                "init ended early: {:?} {:?}",
                String::from_utf8_lossy(&seen),
                init_err.await
            ),
        }
    }
    assert_eq!(String::from_utf8_lossy(&seen), "50000 100000\nready\n");
    eprintln!("containers: the busy loop ended; exec");

    // The exec's process: the container's own, with other arguments.
    let mut process = s["process"].clone();
    process["args"] = json!([
        "sh",
        "-c",
        "hostname; cat /marker; cat /sys/fs/cgroup/cpu.max; \
         grep -qx $$ /sys/fs/cgroup/cgroup.procs && echo in the cgroup; \
         grep nr_throttled /sys/fs/cgroup/cpu.stat"
    ]);
    let exec = agent
        .exec_in_container(id, serde_json::to_vec(&process).unwrap(), None)
        .await
        .expect("exec in container");
    let output = Output::capture(agent, &exec.exec_id).await;
    agent.close_stdin(&exec.exec_id).await.unwrap();
    let exit = tokio::time::timeout(EXEC_LIMIT, agent.wait(&exec.exec_id))
        .await
        .expect("the exec ends in time")
        .unwrap();
    let (out, err) = output.text().await;
    assert_eq!(exit, ProcessExit::Exited(0), "{out} {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "busybox-exec",
            "in the overlay",
            "50000 100000",
            "in the cgroup"
        ],
        "{out} {err}"
    );
    let throttled: u64 = lines[4]
        .strip_prefix("nr_throttled ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cpu.stat: {out}"));
    assert!(throttled > 0, "the busy loop was never throttled: {out}");

    agent
        .kill_container(id, libc::SIGKILL, true)
        .await
        .expect("kill container");
    assert_eq!(
        agent.wait(&init.exec_id).await.unwrap(),
        ProcessExit::Signaled(libc::SIGKILL)
    );
    agent
        .remove_container(id, true)
        .await
        .expect("remove container");
}
