//! OCI containers in one real microVM: the rootfs comes from the host over
//! virtio-fs, the agent runs each spec with libcontainer, and what a user of
//! runc expects inside holds (isolation, limits, security settings).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::Guest;
use oci_spec::runtime::Spec;
use serde_json::{json, Value};
use vmm::config::SharedDir;
use vmrun_agent::client::{AgentClient, ContainerCreate, ProcessExit, StorageMount};
use vmrun_tests::busybox_bundle;

const ROOTFS_MOUNT: &str = "/run/vmrun/rootfs/shared";

async fn boot() -> Guest {
    let dir = common::test_dir("containers");
    busybox_bundle(&dir.join("bundle"));
    let rootfs = SharedDir {
        tag: "rootfs".into(),
        path: dir.join("bundle/rootfs"),
        read_only: true,
    };
    let guest = common::boot(&dir, vec![rootfs]).await;
    guest
        .agent
        .mount_storage(StorageMount::virtiofs("rootfs", ROOTFS_MOUNT).read_only())
        .await
        .expect("mount the rootfs share");
    guest
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

async fn run(agent: &AgentClient, id: &str, spec: &Value) -> Ran {
    let writable = !spec["root"]["readonly"].as_bool().unwrap_or(false);
    let mut create = ContainerCreate::new(id, serde_json::to_vec(spec).unwrap(), ROOTFS_MOUNT);
    if writable {
        create = create.writable_overlay();
    }
    let init = agent
        .create_container(create)
        .await
        .expect("create container");
    let stdout = agent.read_stdout(&init.exec_id).await.unwrap();
    let stderr = agent.read_stderr(&init.exec_id).await.unwrap();
    let out = tokio::spawn(stdout.read_to_end());
    let err = tokio::spawn(stderr.read_to_end());
    agent.close_stdin(&init.exec_id).await.unwrap();
    agent.start_container(id).await.expect("start container");
    let exit = agent.wait(&init.exec_id).await.unwrap();
    let state = agent.container_state(id).await.unwrap();
    agent
        .remove_container(id, true)
        .await
        .expect("remove container");
    Ran {
        stdout: String::from_utf8_lossy(&out.await.unwrap().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.await.unwrap().unwrap()).into_owned(),
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
