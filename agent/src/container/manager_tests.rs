//! The container manager's bookkeeping with a fake engine and fake mounts:
//! ids, spec rewriting into the bundle, cleanup after failures, state and
//! OOM detection from a fake cgroup directory. No root needed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Spec};
use serde_json::json;
use tokio::sync::oneshot;

use crate::scratch_dir::ScratchDir;

use super::config::ContainerConfig;
use super::engine::{ContainerEngine, EngineProcess, EngineStdio};
use super::error::ContainerError;
use super::layout::StateLayout;
use super::manager::{ContainerManager, CreateRequest, ExecRequest};
use super::status::ContainerStatus;
use crate::mount_syscalls::fake::FakeMounts;
use crate::process::{ProcessExit, ProcessTable};

/// Pids far above Linux's maximum, so nothing real is ever signalled.
static NEXT_FAKE_PID: AtomicI32 = AtomicI32::new(10_000_000);

#[derive(Debug, Default)]
struct FakeEngine {
    calls: Mutex<Vec<String>>,
    fail_create: Mutex<Option<String>>,
    status: Mutex<HashMap<String, ContainerStatus>>,
    exits: Mutex<HashMap<String, oneshot::Sender<ProcessExit>>>,
}

impl FakeEngine {
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn set_status(&self, id: &str, status: ContainerStatus) {
        self.status.lock().unwrap().insert(id.to_owned(), status);
    }

    /// Makes the init process of `id` exit.
    fn exit_init(&self, id: &str, exit: ProcessExit) {
        let sender = self.exits.lock().unwrap().remove(id).unwrap();
        sender.send(exit).unwrap();
    }

    fn process(&self, key: String) -> EngineProcess {
        let (exit_tx, exit) = oneshot::channel();
        self.exits.lock().unwrap().insert(key, exit_tx);
        EngineProcess {
            pid: Pid::from_raw(NEXT_FAKE_PID.fetch_add(1, Ordering::Relaxed)),
            exit,
        }
    }
}

impl ContainerEngine for FakeEngine {
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: EngineStdio,
    ) -> Result<EngineProcess, ContainerError> {
        self.record(format!("create {id} {}", bundle.display()));
        // The child's ends close here: the init's output ends at once.
        drop(stdio);
        if let Some(message) = self.fail_create.lock().unwrap().clone() {
            return Err(ContainerError::Runtime {
                op: "create container",
                id: id.to_owned(),
                message,
            });
        }
        self.set_status(id, ContainerStatus::Created);
        Ok(self.process(id.to_owned()))
    }

    fn exec(
        &self,
        id: &str,
        process_file: &Path,
        stdio: EngineStdio,
    ) -> Result<EngineProcess, ContainerError> {
        let process: serde_json::Value =
            serde_json::from_slice(&std::fs::read(process_file).unwrap()).unwrap();
        self.record(format!("exec {id} {}", process["args"]));
        drop(stdio);
        Ok(self.process(format!("{id}/exec")))
    }

    fn start(&self, id: &str) -> Result<(), ContainerError> {
        self.record(format!("start {id}"));
        self.set_status(id, ContainerStatus::Running);
        Ok(())
    }

    fn status(&self, id: &str) -> Result<ContainerStatus, ContainerError> {
        self.status
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .ok_or_else(|| ContainerError::NotFound { id: id.to_owned() })
    }

    fn kill_all(&self, id: &str, signal: i32) -> Result<(), ContainerError> {
        self.record(format!("kill_all {id} {signal}"));
        Ok(())
    }

    fn pause(&self, id: &str) -> Result<(), ContainerError> {
        self.record(format!("pause {id}"));
        self.set_status(id, ContainerStatus::Paused);
        Ok(())
    }

    fn resume(&self, id: &str) -> Result<(), ContainerError> {
        self.record(format!("resume {id}"));
        self.set_status(id, ContainerStatus::Running);
        Ok(())
    }

    fn update(
        &self,
        id: &str,
        cgroup_path: &str,
        resources: &LinuxResources,
    ) -> Result<(), ContainerError> {
        let limit = resources.pids().as_ref().map(|p| p.limit());
        self.record(format!("update {id} {cgroup_path} pids={limit:?}"));
        Ok(())
    }

    fn delete(&self, id: &str, cgroup_path: &str) -> Result<(), ContainerError> {
        self.record(format!("delete {id} {cgroup_path}"));
        self.status.lock().unwrap().remove(id);
        Ok(())
    }
}

struct Fixture {
    manager: ContainerManager,
    engine: Arc<FakeEngine>,
    mounts: Arc<FakeMounts>,
    /// Removed when the fixture is dropped.
    root: ScratchDir,
    rootfs: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = ScratchDir::new(&format!("manager-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let rootfs = root.path().join("shared-rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let engine = Arc::new(FakeEngine::default());
        let mounts = Arc::new(FakeMounts::default());
        let config = ContainerConfig {
            state_root: root.path().join("state"),
            cgroup_root: root.path().join("cgroup"),
            cgroup_parent: "/vmrun".into(),
            helper_program: PathBuf::from("/nonexistent"),
            helper_timeout: Duration::from_secs(1),
        };
        let manager = ContainerManager::new(
            config,
            engine.clone(),
            mounts.clone(),
            Arc::new(ProcessTable::default()),
        );
        Self {
            manager,
            engine,
            mounts,
            root,
            rootfs,
        }
    }

    fn request(&self, id: &str, spec: serde_json::Value) -> CreateRequest {
        CreateRequest {
            id: id.into(),
            spec_json: Bytes::from(spec.to_string()),
            rootfs: self.rootfs.clone(),
            writable_overlay: false,
            terminal: None,
        }
    }

    fn bundle(&self, id: &str) -> PathBuf {
        StateLayout::new(self.root.path().join("state"))
            .bundle(id)
            .dir()
            .to_owned()
    }

    fn cgroup_dir(&self, id: &str) -> PathBuf {
        let dir = self.root.path().join("cgroup/vmrun").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

fn spec() -> serde_json::Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "linux": {}
    })
}

#[tokio::test]
async fn create_writes_the_rewritten_spec_and_tracks_the_init() {
    let fixture = Fixture::new();
    let init = fixture
        .manager
        .create(fixture.request("web", spec()))
        .await
        .unwrap();
    assert!(init.exec_id().starts_with("exec-"));

    let written: Spec =
        serde_json::from_slice(&std::fs::read(fixture.bundle("web").join("config.json")).unwrap())
            .unwrap();
    assert_eq!(written.root().as_ref().unwrap().path(), &fixture.rootfs);
    assert_eq!(
        written.linux().as_ref().unwrap().cgroups_path().as_deref(),
        Some(Path::new("/vmrun/web"))
    );
    assert_eq!(
        fixture.engine.calls(),
        [format!("create web {}", fixture.bundle("web").display())]
    );

    let state = fixture.manager.state("web").await.unwrap();
    assert_eq!(state.status, ContainerStatus::Created);
    assert_eq!(state.exec_id, init.exec_id());
    assert_eq!(state.exit, None);

    let error = fixture
        .manager
        .create(fixture.request("web", spec()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ContainerError::AlreadyExists { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn a_failed_create_leaves_nothing_behind() {
    let fixture = Fixture::new();
    *fixture.engine.fail_create.lock().unwrap() = Some("exec failed: no such file".into());
    let mut request = fixture.request("web", spec());
    request.writable_overlay = true;
    let error = fixture.manager.create(request.clone()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"create container "web": exec failed: no such file"#
    );
    assert!(fixture
        .engine
        .calls()
        .contains(&"delete web /vmrun/web".to_owned()));
    assert!(
        fixture.mounts.mounted().is_empty(),
        "{:?}",
        fixture.mounts.calls()
    );
    assert!(!fixture.bundle("web").exists());
    assert!(matches!(
        fixture.manager.state("web").await,
        Err(ContainerError::NotFound { .. })
    ));

    *fixture.engine.fail_create.lock().unwrap() = None;
    fixture.manager.create(request).await.unwrap();
    assert_eq!(fixture.mounts.mounted().len(), 2, "tmpfs and overlay");
}

#[tokio::test]
async fn a_bad_spec_is_rejected_before_anything_happens() {
    let fixture = Fixture::new();
    let mut bad = spec();
    bad["process"]["args"] = json!([]);
    let error = fixture
        .manager
        .create(fixture.request("web", bad))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "create container: process.args is empty");
    assert!(fixture.engine.calls().is_empty());
    assert!(!fixture.bundle("web").exists());

    let mut missing_rootfs = fixture.request("web", spec());
    missing_rootfs.rootfs = fixture.root.path().join("not-mounted");
    let error = fixture.manager.create(missing_rootfs).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is not a directory (is its storage mounted?)"),
        "{error}"
    );
    assert!(!fixture.bundle("web").exists());
}

#[tokio::test]
async fn two_containers_cannot_share_a_cgroup() {
    let fixture = Fixture::new();
    let mut shared = spec();
    shared["linux"]["cgroupsPath"] = json!("/pod/shared");
    fixture
        .manager
        .create(fixture.request("a", shared.clone()))
        .await
        .unwrap();
    let error = fixture
        .manager
        .create(fixture.request("b", shared))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ContainerError::CgroupInUse { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn unknown_ids_are_not_found_everywhere() {
    let fixture = Fixture::new();
    let manager = &fixture.manager;
    let results = [
        manager.start("ghost").await,
        manager.kill("ghost", 15, false).await,
        manager.remove("ghost", true).await,
        manager.pause("ghost").await,
        manager.resume("ghost").await,
        manager.update("ghost", b"{}").await,
        manager.state("ghost").await.map(drop),
        manager.stats("ghost").await.map(drop),
        manager
            .exec(ExecRequest {
                id: "ghost".into(),
                process_json: Bytes::from_static(
                    br#"{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}}"#,
                ),
                terminal: None,
            })
            .await
            .map(drop),
    ];
    for result in results {
        assert!(
            matches!(result, Err(ContainerError::NotFound { .. })),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn life_cycle_follows_the_init_process() {
    let fixture = Fixture::new();
    let cgroup = fixture.cgroup_dir("web");
    std::fs::write(cgroup.join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
    fixture
        .manager
        .create(fixture.request("web", spec()))
        .await
        .unwrap();

    let error = fixture.manager.pause("web").await.unwrap_err();
    assert_eq!(error.to_string(), r#"pause container "web": it is created"#);
    fixture.manager.start("web").await.unwrap();
    assert_eq!(
        fixture.manager.state("web").await.unwrap().status,
        ContainerStatus::Running
    );
    fixture.manager.pause("web").await.unwrap();
    assert_eq!(
        fixture.manager.state("web").await.unwrap().status,
        ContainerStatus::Paused
    );
    fixture.manager.resume("web").await.unwrap();

    let error = fixture.manager.remove("web", false).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"remove container "web": it is running; kill it first or remove with force"#
    );

    // The OOM killer strikes and the init dies of SIGKILL.
    std::fs::write(cgroup.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
    fixture.engine.exit_init("web", ProcessExit::Signal(9));
    let state = loop {
        let state = fixture.manager.state("web").await.unwrap();
        if state.status == ContainerStatus::Stopped {
            break state;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(state.exit, Some(ProcessExit::Signal(9)));
    assert!(state.oom_killed);
    // libcontainer still thinks it runs (the pid could be reused): the
    // agent's knowledge wins, and start is refused.
    let error = fixture.manager.start("web").await.unwrap_err();
    assert_eq!(error.to_string(), r#"start container "web": it is stopped"#);

    fixture.manager.remove("web", false).await.unwrap();
    assert!(fixture
        .engine
        .calls()
        .contains(&"delete web /vmrun/web".to_owned()));
    assert!(!fixture.bundle("web").exists());
    assert!(matches!(
        fixture.manager.state("web").await,
        Err(ContainerError::NotFound { .. })
    ));
}

#[tokio::test]
async fn no_oom_without_a_rising_count() {
    let fixture = Fixture::new();
    let cgroup = fixture.cgroup_dir("web");
    // Kills from before the container existed do not count.
    std::fs::write(cgroup.join("memory.events"), "oom_kill 4\n").unwrap();
    fixture
        .manager
        .create(fixture.request("web", spec()))
        .await
        .unwrap();
    assert!(!fixture.manager.state("web").await.unwrap().oom_killed);
    std::fs::write(cgroup.join("pids.current"), "2\n").unwrap();
    let stats = fixture.manager.stats("web").await.unwrap();
    assert_eq!(stats.pids_current, Some(2));
    assert_eq!(stats.oom_kills, Some(4));
}

#[tokio::test]
async fn exec_needs_a_running_container_and_a_valid_process() {
    let fixture = Fixture::new();
    fixture
        .manager
        .create(fixture.request("web", spec()))
        .await
        .unwrap();
    let exec = |json: &'static [u8]| ExecRequest {
        id: "web".into(),
        process_json: Bytes::from_static(json),
        terminal: None,
    };
    let error = fixture
        .manager
        .exec(exec(
            br#"{"args":["id"],"cwd":"/","user":{"uid":0,"gid":0}}"#,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"exec in container "web": it is created; only running containers take execs"#
    );
    let error = fixture
        .manager
        .exec(exec(br#"{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}"#))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "exec in container: process.args is empty"
    );

    fixture.manager.start("web").await.unwrap();
    let process = fixture
        .manager
        .exec(exec(
            br#"{"args":["id","-u"],"cwd":"/","user":{"uid":0,"gid":0}}"#,
        ))
        .await
        .unwrap();
    assert!(process.exec_id().starts_with("exec-"));
    assert!(fixture
        .engine
        .calls()
        .contains(&r#"exec web ["id","-u"]"#.to_owned()));
    let leftovers: Vec<_> = std::fs::read_dir(fixture.bundle("web"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().starts_with("exec-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn kill_and_update_reach_the_engine_checked() {
    let fixture = Fixture::new();
    fixture
        .manager
        .create(fixture.request("web", spec()))
        .await
        .unwrap();
    fixture.manager.kill("web", 15, true).await.unwrap();
    // A single signal goes to the init through the reaper (a no-op here).
    fixture.manager.kill("web", 15, false).await.unwrap();
    let error = fixture.manager.kill("web", 0, true).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "kill container: 0 is not a signal number"
    );
    fixture
        .manager
        .update("web", br#"{"pids":{"limit":32}}"#)
        .await
        .unwrap();
    assert_eq!(
        fixture.engine.calls()[1..],
        ["kill_all web 15", "update web /vmrun/web pids=Some(32)"]
    );
}
