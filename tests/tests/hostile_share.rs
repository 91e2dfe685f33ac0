//! A hostile guest against the host's mounts into its share (issue 12's
//! mount-point race): a program in the guest, with the guest's view of the
//! sandbox share, keeps replacing the directories the host is about to
//! mount on (`shared/<container>`, its `rootfs`, its `mounts/0`) with
//! symlinks to a host directory, while the host shares container after
//! container through the same code the shim and `vmrun run` use. The
//! share's own levels are read-only to the guest, so every replacement is
//! refused; every container is mounted where the host made it; the host
//! directory is untouched; nothing stays mounted.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::Spec;
use serde_json::{json, Value};
use vmm::VmConfig;
use vmrun_agent::client::ProcessExit;
use vmrun_sandbox::guest_spec::{GuestSpec, ShareBind};
use vmrun_sandbox::host_mounts::HostMounts;
use vmrun_sandbox::layout::{guest_bind_source, GUEST_SHARED_DIR};
use vmrun_sandbox::mountinfo::has_mounts_under;
use vmrun_sandbox::{Sandbox, SandboxConfig, SandboxDir};
use vmrun_tests::{busybox_bundle, vmm_bin, BOOT_DEADLINE};

const ATTACKER: &str = "attacker";
/// Containers the host shares while the guest attacks, named before they
/// exist so the guest can lie in wait for them.
const VICTIMS: usize = 6;
const ROUNDS: usize = 3;
/// How long a container step may take on a slow (software KVM) host.
const STEP_LIMIT: Duration = Duration::from_secs(600);

/// The guest program: probe once (its errors land in /out/refused), say it
/// attacks, then swap every level of every victim's share directory for a
/// symlink to `canary`, over and over, until the host makes `stop`.
fn attack_script(canary: &Path) -> String {
    let canary = canary.display();
    format!(
        "ln -s {canary} /share/probe 2>/out/refused; \
         mkdir /share/{ATTACKER}/extra 2>>/out/refused; \
         echo attacking >/out/state; \
         while [ ! -e /share/stop ]; do \
           for i in $(seq 0 {last}); do \
             v=/share/victim-$i; \
             mv $v $v.away; ln -s {canary} $v; \
             mv $v/rootfs $v/rootfs.away; ln -s {canary} $v/rootfs; \
             mkdir $v/mounts; mv $v/mounts/0 $v/mounts/0.away; ln -s {canary} $v/mounts/0; \
           done 2>/dev/null; \
         done; \
         echo stopped >/out/state",
        last = VICTIMS - 1
    )
}

fn bind(source: &str, destination: &str) -> Value {
    json!({"type": "bind", "source": source, "destination": destination, "options": ["rbind"]})
}

/// The attacker: busybox with the guest's share at /share and a writable
/// host directory at /out (bind `0`, how the test hears from it).
fn attacker_spec(canary: &Path, out: &Path) -> GuestSpec {
    let mut spec = serde_json::to_value(Spec::default()).unwrap();
    spec["root"]["readonly"] = json!(false);
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["sh", "-c", attack_script(canary)]);
    let mounts = spec["mounts"].as_array_mut().unwrap();
    mounts.push(bind(GUEST_SHARED_DIR, "/share"));
    mounts.push(bind(&guest_bind_source(ATTACKER, "0"), "/out"));
    GuestSpec {
        spec: serde_json::from_value(spec).unwrap(),
        binds: vec![ShareBind {
            source: out.to_path_buf(),
            name: "0".into(),
            read_only: false,
        }],
    }
}

/// A victim: a rootfs and one writable volume, as a pod container has.
fn victim_spec(volume: &Path) -> GuestSpec {
    GuestSpec {
        spec: Spec::default(),
        binds: vec![ShareBind {
            source: volume.to_path_buf(),
            name: "0".into(),
            read_only: false,
        }],
    }
}

fn wait_for_state(out: &Path, wanted: &str) {
    let deadline = Instant::now() + STEP_LIMIT;
    while std::fs::read_to_string(out.join("state")).unwrap_or_default() != format!("{wanted}\n") {
        assert!(
            Instant::now() < deadline,
            "the guest program never said {wanted:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
}

#[test]
fn a_guest_swapping_share_directories_for_symlinks_reaches_nothing_on_the_host() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let dir = std::env::temp_dir().join(format!("vmrun-hostile-share-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    busybox_bundle(&dir.join("bundle"));
    let rootfs = dir.join("bundle/rootfs");
    let canary = dir.join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::write(canary.join("passwd"), "host\n").unwrap();
    let out = dir.join("out");
    let volume = dir.join("volume");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&volume).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = SandboxConfig::new(VmConfig::default(), vmm_bin());
    config.boot_timeout = BOOT_DEADLINE;
    let sandbox_dir = SandboxDir::for_this_process();
    let sandbox = runtime
        .block_on(Sandbox::start(
            &config,
            sandbox_dir.clone(),
            "hostile-share",
        ))
        .unwrap();
    let shared = sandbox_dir.shared();

    let mut attacker_mounts = HostMounts::default();
    let create = sandbox
        .share_container(
            ATTACKER,
            &attacker_spec(&canary, &out),
            &rootfs,
            true,
            &mut attacker_mounts,
        )
        .unwrap()
        .writable_overlay();
    let agent = sandbox.agent();
    let init = runtime.block_on(agent.create_container(create)).unwrap();
    runtime.block_on(agent.close_stdin(&init.exec_id)).unwrap();
    runtime.block_on(agent.start_container(ATTACKER)).unwrap();
    wait_for_state(&out, "attacking");

    let refused = std::fs::read_to_string(out.join("refused")).unwrap();
    assert_eq!(
        refused.matches("Read-only file system").count(),
        2,
        "the guest changed the share's own levels: {refused}"
    );

    for round in 0..ROUNDS {
        for i in 0..VICTIMS {
            let id = format!("victim-{i}");
            let mut mounts = HostMounts::default();
            sandbox
                .share_container(&id, &victim_spec(&volume), &rootfs, false, &mut mounts)
                .unwrap_or_else(|e| panic!("round {round}: sharing {id} under attack: {e}"));
            let container = shared.join(&id);
            assert!(
                container.join("rootfs/bin/busybox").exists(),
                "{id}'s rootfs is not where the host made it"
            );
            std::fs::write(container.join("mounts/0/written"), &id).unwrap();
            assert_eq!(
                std::fs::read_to_string(volume.join("written")).unwrap(),
                id,
                "{id}'s volume is not where the host made it"
            );
            mounts.cleanup().unwrap();
            assert!(!container.exists(), "{id} is left in the share");
        }
    }

    // Stop the program and hear that it did.
    std::fs::create_dir(shared.join("stop")).unwrap();
    wait_for_state(&out, "stopped");
    let exit = runtime.block_on(agent.wait(&init.exec_id)).unwrap();
    assert_eq!(exit, ProcessExit::Exited(0));
    runtime
        .block_on(agent.remove_container(ATTACKER, true))
        .unwrap();
    attacker_mounts.cleanup().unwrap();
    runtime.block_on(sandbox.stop());

    assert_eq!(entries(&canary), vec![canary.join("passwd")]);
    assert_eq!(
        std::fs::read_to_string(canary.join("passwd")).unwrap(),
        "host\n"
    );
    assert!(
        !has_mounts_under(&dir).unwrap(),
        "a mount is left under the test's directory"
    );
    assert!(
        !sandbox_dir.path().exists(),
        "the sandbox directory is left"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
