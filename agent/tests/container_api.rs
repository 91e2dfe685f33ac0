//! Real busybox containers on the host through the agent API: the real
//! server and client, libcontainer in the container helper (the built agent
//! binary), a private cgroup2 per test (see `container_support`). What is
//! asserted is what a user of the containers sees.

#![allow(clippy::unwrap_used)]

mod common;
mod container_support;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use common::TestAgent;
use container_support::{mount_table, runc_spec, spec_running, ContainerHost};
use serde_json::json;
use tonic::Code;
use vmrun_agent::client::{AgentClient, ClientError, ContainerCreate, ExecId, ProcessExit};
use vmrun_agent::proto::ContainerStatus;

/// Fails the test instead of hanging CI.
async fn within<T>(limit_secs: u64, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(limit_secs), work)
        .await
        .expect("test took too long")
}

async fn start_agent(host: &ContainerHost) -> TestAgent {
    TestAgent::start_with(Some(host.server_config())).await
}

fn create(host: &ContainerHost, id: &str, spec: &serde_json::Value) -> ContainerCreate {
    ContainerCreate::new(id, spec.to_string(), host.rootfs.display().to_string())
}

async fn read_both(agent: &AgentClient, exec_id: &ExecId) -> (String, String) {
    let stdout = agent.read_stdout(exec_id).await.unwrap();
    let stderr = agent.read_stderr(exec_id).await.unwrap();
    let (stdout, stderr) = tokio::join!(stdout.read_to_end(), stderr.read_to_end());
    (
        String::from_utf8(stdout.unwrap()).unwrap(),
        String::from_utf8(stderr.unwrap()).unwrap(),
    )
}

/// Creates, starts and runs a container to its end, then removes it.
async fn run(
    agent: &AgentClient,
    create: ContainerCreate,
    id: &str,
) -> (String, String, ProcessExit) {
    let init = agent.create_container(create).await.unwrap();
    agent.close_stdin(&init.exec_id).await.unwrap();
    agent.start_container(id).await.unwrap();
    let (stdout, stderr) = read_both(agent, &init.exec_id).await;
    let exit = agent.wait(&init.exec_id).await.unwrap();
    agent.remove_container(id, false).await.unwrap();
    (stdout, stderr, exit)
}

fn code_and_message(error: ClientError) -> (Code, String) {
    match error {
        ClientError::Rpc { status, .. } => (status.code(), status.message().to_owned()),
        other => panic!("expected an error status, got {other}"),
    }
}

#[tokio::test]
async fn an_unchanged_runc_spec_runs_sh_on_a_terminal() {
    let host = ContainerHost::new();
    within(60, async {
        let agent = start_agent(&host).await;
        let client = &agent.client;
        let init = client
            .create_container(create(&host, "term", &runc_spec()).terminal(24, 80))
            .await
            .unwrap();
        let state = client.container_state("term").await.unwrap();
        assert_eq!(state.status, ContainerStatus::Created);
        assert_eq!(state.init, init.exec_id);

        client.start_container("term").await.unwrap();
        let input = "echo hello from $(hostname) on $(cat /proc/1/comm)\nexit 3\n";
        client
            .write_stdin(&init.exec_id, tokio_stream::once(Bytes::from(input)))
            .await
            .unwrap();
        let output = client.read_stdout(&init.exec_id).await.unwrap();
        let output = String::from_utf8(output.read_to_end().await.unwrap()).unwrap();
        assert!(output.contains("hello from runc on sh"), "{output:?}");
        assert_eq!(
            client.wait(&init.exec_id).await.unwrap(),
            ProcessExit::Exited(3)
        );

        let state = client.container_state("term").await.unwrap();
        assert_eq!(state.status, ContainerStatus::Stopped);
        assert_eq!(state.exit, Some(ProcessExit::Exited(3)));
        assert!(!state.oom_killed);
        client.remove_container("term", false).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn hostname_env_cwd_user_and_bind_mounts_come_from_the_spec() {
    let host = ContainerHost::new();
    within(60, async {
        let agent = start_agent(&host).await;
        let mut spec = spec_running(&[
            "sh",
            "-c",
            "hostname; echo \"$GREETING\"; pwd; id -u; id -g; id -G; cat /data/hello",
        ]);
        let shared = host.dir.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::write(shared.join("hello"), "bound\n").unwrap();
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data",
            "type": "bind",
            "source": shared,
            "options": ["rbind", "ro"]
        }));
        spec["hostname"] = json!("box");
        spec["process"]["env"] = json!(["PATH=/bin", "GREETING=hi there"]);
        spec["process"]["cwd"] = json!("/tmp");
        spec["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20]});
        let (stdout, stderr, exit) = run(&agent.client, create(&host, "user", &spec), "user").await;
        assert_eq!(
            stdout, "box\nhi there\n/tmp\n1000\n1000\n1000 10 20\nbound\n",
            "stderr: {stderr}"
        );
        assert_eq!(exit, ProcessExit::Exited(0));
    })
    .await;
}

#[tokio::test]
async fn rlimits_seccomp_capabilities_and_no_new_privileges_apply() {
    let host = ContainerHost::new();
    within(60, async {
        let agent = start_agent(&host).await;
        let mut spec = spec_running(&[
            "sh",
            "-c",
            "ulimit -n; touch /tmp/f && echo touched; mkdir /tmp/d || echo mkdir-refused; \
             chown 1 /tmp/f || echo chown-refused; grep NoNewPrivs /proc/self/status; \
             wc -c < /proc/timer_list; grep ' /proc/sys ' /proc/self/mounts | grep -c ' ro,'",
        ]);
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
        spec["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
        let (stdout, stderr, exit) = run(&agent.client, create(&host, "sec", &spec), "sec").await;
        // runc spec: RLIMIT_NOFILE 1024, no CAP_CHOWN, noNewPrivileges,
        // /proc/timer_list masked, /proc/sys read-only.
        assert_eq!(
            stdout, "1024\ntouched\nmkdir-refused\nchown-refused\nNoNewPrivs:\t1\n0\n1\n",
            "stderr: {stderr}"
        );
        assert!(stderr.contains("Operation not permitted"), "{stderr:?}");
        assert_eq!(exit, ProcessExit::Exited(0));
    })
    .await;
}

#[tokio::test]
async fn a_readonly_root_refuses_writes_and_exit_codes_come_through() {
    let host = ContainerHost::new();
    within(60, async {
        let agent = start_agent(&host).await;
        let spec = spec_running(&["sh", "-c", "touch /new-file; echo touch=$?; exit 7"]);
        let (stdout, stderr, exit) = run(&agent.client, create(&host, "ro", &spec), "ro").await;
        assert_eq!(stdout, "touch=1\n");
        assert!(stderr.contains("Read-only file system"), "{stderr:?}");
        assert_eq!(exit, ProcessExit::Exited(7));
        assert!(!host.rootfs.join("new-file").exists());
    })
    .await;
}

#[tokio::test]
async fn a_writable_overlay_never_touches_the_shared_rootfs() {
    let host = ContainerHost::new();
    within(60, async {
        let agent = start_agent(&host).await;
        let mut spec = spec_running(&["sh", "-c", "echo data > /written && cat /written"]);
        spec["root"]["readonly"] = json!(false);
        let client = &agent.client;
        let init = client
            .create_container(create(&host, "rw", &spec).writable_overlay())
            .await
            .unwrap();
        let bundle = host.state_root().join("c/rw");
        assert!(mount_table().contains(&bundle.display().to_string()));
        client.start_container("rw").await.unwrap();
        let (stdout, stderr) = read_both(client, &init.exec_id).await;
        let exit = client.wait(&init.exec_id).await.unwrap();
        assert_eq!(
            (stdout.as_str(), exit),
            ("data\n", ProcessExit::Exited(0)),
            "{stderr}"
        );
        assert!(!host.rootfs.join("written").exists());

        client.remove_container("rw", false).await.unwrap();

        assert!(!mount_table().contains(&bundle.display().to_string()));
        assert!(!bundle.exists());
    })
    .await;
}

#[tokio::test]
async fn exec_joins_a_running_container_until_it_is_killed() {
    let host = ContainerHost::new();
    within(90, async {
        let agent = start_agent(&host).await;
        let client = &agent.client;
        let mut spec = spec_running(&["sleep", "1000"]);
        spec["hostname"] = json!("inside");
        let init = client
            .create_container(create(&host, "svc", &spec))
            .await
            .unwrap();
        client.start_container("svc").await.unwrap();
        assert_eq!(
            client.container_state("svc").await.unwrap().status,
            ContainerStatus::Running
        );

        let process = json!({
            "args": ["sh", "-c", "hostname; cat /proc/1/comm; id -u; echo err >&2; exit 4"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "user": {"uid": 1000, "gid": 1000}
        });
        let exec = client
            .exec_in_container("svc", process.to_string(), None)
            .await
            .unwrap();
        client.close_stdin(&exec.exec_id).await.unwrap();
        let (stdout, stderr) = read_both(client, &exec.exec_id).await;
        assert_eq!(stdout, "inside\nsleep\n1000\n");
        assert_eq!(stderr, "err\n");
        assert_eq!(
            client.wait(&exec.exec_id).await.unwrap(),
            ProcessExit::Exited(4)
        );

        let on_terminal = json!({
            "args": ["sh", "-c", "tty; echo on-a-terminal"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0}
        });
        let exec = client
            .exec_in_container("svc", on_terminal.to_string(), Some((24, 80)))
            .await
            .unwrap();
        let output = client.read_stdout(&exec.exec_id).await.unwrap();
        let output = String::from_utf8(output.read_to_end().await.unwrap()).unwrap();
        assert!(output.contains("/dev/pts/"), "{output:?}");
        assert!(output.contains("on-a-terminal\r\n"), "{output:?}");
        assert_eq!(
            client.wait(&exec.exec_id).await.unwrap(),
            ProcessExit::Exited(0)
        );

        let cgroup = host.cgroup_dir("svc");
        assert!(cgroup.is_dir());
        let stats = client.container_stats("svc").await.unwrap();
        assert!(stats.cpu_usage_usec.is_some(), "{stats:?}");

        client.pause_container("svc").await.unwrap();
        assert_eq!(
            client.container_state("svc").await.unwrap().status,
            ContainerStatus::Paused
        );
        client.resume_container("svc").await.unwrap();

        client.kill_container("svc", 9, false).await.unwrap();
        assert_eq!(
            client.wait(&init.exec_id).await.unwrap(),
            ProcessExit::Signaled(9)
        );
        let state = client.container_state("svc").await.unwrap();
        assert_eq!(state.status, ContainerStatus::Stopped);
        assert_eq!(state.exit, Some(ProcessExit::Signaled(9)));
        let error = client
            .exec_in_container("svc", process.to_string(), None)
            .await
            .unwrap_err();
        assert_eq!(code_and_message(error).0, Code::FailedPrecondition);

        client.remove_container("svc", false).await.unwrap();
        assert!(!cgroup.exists());
        assert!(!host.state_root().join("lc/svc").exists());
        let (code, _) = code_and_message(client.container_state("svc").await.unwrap_err());
        assert_eq!(code, Code::NotFound);
    })
    .await;
}

#[tokio::test]
async fn force_remove_kills_a_running_container() {
    let host = ContainerHost::new();
    within(60, async {
        let agent = start_agent(&host).await;
        let client = &agent.client;
        let init = client
            .create_container(create(&host, "busy", &spec_running(&["sleep", "1000"])))
            .await
            .unwrap();
        client.start_container("busy").await.unwrap();
        let (code, message) =
            code_and_message(client.remove_container("busy", false).await.unwrap_err());
        assert_eq!(code, Code::FailedPrecondition);
        assert!(message.contains("it is running"), "{message}");
        client.remove_container("busy", true).await.unwrap();
        assert_eq!(
            client.wait(&init.exec_id).await.unwrap(),
            ProcessExit::Signaled(9)
        );
        assert!(!host.cgroup_dir("busy").exists());
    })
    .await;
}

#[tokio::test]
async fn bad_requests_and_failed_creates_leave_nothing_behind() {
    let host = ContainerHost::new();
    within(60, async {
        let agent = start_agent(&host).await;
        let client = &agent.client;

        let error = client
            .create_container(create(&host, "bad", &spec_running(&[])))
            .await
            .unwrap_err();
        assert_eq!(
            code_and_message(error),
            (
                Code::InvalidArgument,
                "create container: process.args is empty".to_owned()
            )
        );

        // libcontainer gets this far: the program is missing in the rootfs.
        let missing = spec_running(&["/bin/no-such-program"]);
        let error = client
            .create_container(create(&host, "broken", &missing).writable_overlay())
            .await
            .unwrap_err();
        let (code, message) = code_and_message(error);
        assert_eq!(code, Code::FailedPrecondition, "{message}");
        assert!(
            message.starts_with(r#"create container "broken": "#),
            "{message}"
        );
        assert!(!host.cgroup_dir("broken").exists());
        assert!(!host.state_root().join("lc/broken").exists());
        assert!(!host.state_root().join("c/broken").exists());
        assert!(!mount_table().contains(&host.state_root().display().to_string()));

        // The id is free again, and a duplicate is refused.
        client
            .create_container(create(&host, "broken", &spec_running(&["true"])))
            .await
            .unwrap();
        let (code, _) = code_and_message(
            client
                .create_container(create(&host, "broken", &spec_running(&["true"])))
                .await
                .unwrap_err(),
        );
        assert_eq!(code, Code::AlreadyExists);
        client.remove_container("broken", false).await.unwrap();

        let (code, message) = code_and_message(client.start_container("ghost").await.unwrap_err());
        assert_eq!(
            (code, message.as_str()),
            (Code::NotFound, r#"no container with id "ghost""#)
        );
    })
    .await;
}

#[tokio::test]
async fn a_helper_that_dies_fails_the_create_without_hanging() {
    let host = ContainerHost::new();
    within(60, async {
        let mut config = host.server_config();
        // Exits at once without reading its requests.
        config.containers.helper_program = "/bin/true".into();
        let agent = TestAgent::start_with(Some(config)).await;
        let error = agent
            .client
            .create_container(create(&host, "orphan", &spec_running(&["true"])))
            .await
            .unwrap_err();
        let (code, message) = code_and_message(error);
        assert_eq!(code, Code::Internal, "{message}");
        assert!(
            message.starts_with(r#"create container "orphan": container helper: "#),
            "{message}"
        );
        assert!(!host.state_root().join("c/orphan").exists());
        assert!(!host.cgroup_dir("orphan").exists());
    })
    .await;
}
