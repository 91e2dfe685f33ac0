//! `vmrun run --bundle` with what a runc user has: a bundle whose
//! config.json comes straight from `runc spec` (plus a bind mount of a
//! single host file, and a writable host directory).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use vmrun_tests::{busybox_bundle, run, vmrun_bin, BOOT_DEADLINE};

#[test]
fn runc_spec_bundle_runs_unchanged_apart_from_its_command() {
    let dir = std::env::temp_dir().join(format!("vmrun-run-bundle-{}", std::process::id()));
    busybox_bundle(&dir);
    // Replace rootfs-builder's config.json by runc's own.
    std::fs::remove_file(dir.join("config.json")).expect("remove config.json");
    let spec = Command::new("runc")
        .arg("spec")
        .current_dir(&dir)
        .status()
        .expect("run `runc spec` (setup.sh installs runc)");
    assert!(spec.success());
    let config = std::fs::read_to_string(dir.join("config.json")).expect("read config.json");
    let config = config.replacen(
        "\"sh\"",
        "\"sh\", \"-c\", \"hostname; cat /etc/greeting; touch /x || echo read-only; \
         echo x > /data/suid && chmod 4755 /data/suid && echo made-setuid; exit 3\"",
        1,
    );
    // And a single host file bound in (read-only root: its mount point must
    // exist in the rootfs).
    let mut config: serde_json::Value = serde_json::from_str(&config).expect("parse config.json");
    config["mounts"]
        .as_array_mut()
        .expect("runc spec has mounts")
        .push(serde_json::json!({
            "destination": "/etc/greeting",
            "type": "bind",
            "source": dir.join("greeting.txt"),
            "options": ["rbind", "ro"]
        }));
    // A writable volume, where the guest's root tries to leave a setuid
    // file for the host.
    config["mounts"]
        .as_array_mut()
        .expect("runc spec has mounts")
        .push(serde_json::json!({
            "destination": "/data",
            "type": "bind",
            "source": dir.join("data"),
            "options": ["rbind", "rw"]
        }));
    std::fs::create_dir(dir.join("data")).expect("create the volume");
    std::fs::create_dir(dir.join("rootfs/data")).expect("create its mount point");
    std::fs::write(dir.join("greeting.txt"), "a file from the host\n").expect("write greeting");
    std::fs::write(dir.join("rootfs/etc/greeting"), "").expect("write mount point");
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config.json");

    let done = run(
        Command::new(vmrun_bin())
            .args(["run", "--bundle"])
            .arg(&dir),
        BOOT_DEADLINE,
    );
    let made = std::fs::metadata(dir.join("data/suid")).map(|m| m.permissions().mode());
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(done.status.code(), Some(3), "{done:?}");
    // The file the guest made setuid is on the host, but not setuid.
    assert!(done.stdout.contains("made-setuid"), "{done:?}");
    let mode = made.expect("the guest's file on the host");
    assert_eq!(mode & 0o7777, 0o755, "mode {mode:o} on the host");
    // runc's defaults: hostname "runc", a read-only root, a terminal.
    assert!(done.stdout.contains("runc"), "{done:?}");
    assert!(done.stdout.contains("read-only"), "{done:?}");
    assert!(done.stdout.contains("a file from the host"), "{done:?}");
}

#[test]
fn invalid_config_is_refused_naming_the_field_before_any_vm_starts() {
    let dir = std::env::temp_dir().join(format!("vmrun-bad-bundle-{}", std::process::id()));
    busybox_bundle(&dir);
    std::fs::write(
        dir.join("config.json"),
        r#"{"ociVersion": "1.0.2", "process": {"cwd": "/", "args": [], "user": {"uid": 0, "gid": 0}}, "root": {"path": "rootfs"}}"#,
    )
    .expect("write config.json");
    let done = run(
        Command::new(vmrun_bin())
            .args(["run", "--bundle"])
            .arg(&dir),
        std::time::Duration::from_secs(30),
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(done.status.code(), Some(125), "{done:?}");
    assert!(done.stderr.contains("process.args is empty"), "{done:?}");
}
