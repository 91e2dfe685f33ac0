//! A private containerd for the shim's tests: its own root, state, socket,
//! CNI network and configuration (the documented `shim/containerd-config.toml`
//! plus what this host needs), the busybox images imported, and everything it
//! made removed again when it is dropped.
//!
//! It never uses the system's containerd (`/run/containerd/containerd.sock`)
//! or its configuration, and runs in a network namespace of its own, where
//! the CNI bridge and the pods' host ends are, so nothing touches the host's
//! network. A few host-wide paths cannot be made private
//! (`/run/containerd/runc/<namespace>` for `ctr run`, `/var/lib/cni`, cgroups
//! `/<namespace>/<id>`); the fixture removes what appeared there while it
//! ran.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::netns::TestNetns;
use crate::{run, target_dir, try_run, workspace_bin, Finished};

/// The documented containerd configuration for vmrun (README): the CRI
/// runtime handler `vmrun` with runtime_type `io.containerd.vmrun.v2`.
pub const CONFIG_SNIPPET: &str = include_str!("../../shim/containerd-config.toml");
/// The documented Kubernetes RuntimeClass (handler `vmrun`).
pub const RUNTIME_CLASS: &str = include_str!("../../shim/runtimeclass.yaml");

/// The shim's runtime type (`ctr run --runtime`).
pub const VMRUN_RUNTIME: &str = "io.containerd.vmrun.v2";
/// The CRI runtime handler for vmrun (RuntimeClass `handler`).
pub const VMRUN_HANDLER: &str = "vmrun";
/// runc's runtime type.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// The shim binary containerd looks for on its PATH.
pub const SHIM_BINARY: &str = "containerd-shim-vmrun-v2";

/// The busybox image running `sh` (`rootfs-builder oci-image`).
pub const IMAGE: &str = "localhost/vmrun/busybox:latest";
/// The same busybox running `sleep 2147483647`: the CRI sandbox image.
pub const PAUSE_IMAGE: &str = "localhost/vmrun/pause:latest";

/// ctr's namespace by default, and the CRI plugin's.
pub const DEFAULT_NAMESPACE: &str = "default";
pub const CRI_NAMESPACE: &str = "k8s.io";

/// How long one `ctr` command may take (a guest boot fits in it).
pub const CTR_DEADLINE: Duration = Duration::from_secs(900);
/// How long containerd may take to answer on its socket.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Where a fixture keeps everything, and what the CRI plugin is told.
#[derive(Clone, Debug)]
pub struct ConfigPaths {
    /// containerd's persistent root.
    pub root: PathBuf,
    /// containerd's state directory (shim bundles, netns mounts).
    pub state: PathBuf,
    /// The CNI configuration directory (one bridge + host-local conflist).
    pub cni_conf_dir: PathBuf,
    /// The CRI sandbox (pause) image, imported into `k8s.io`.
    pub sandbox_image: String,
}

/// The configuration a fixture runs containerd with: the documented snippet
/// ([`CONFIG_SNIPPET`], verbatim, so the README's configuration is the one
/// tested) followed by what a test host needs: a local sandbox image, OOM
/// score restrictions (root here lacks CAP_SYS_RESOURCE), CNI from Debian's
/// plugins with a private configuration, network namespaces under the state
/// directory, and runc (the default handler) keeping its state there too.
pub fn containerd_config(paths: &ConfigPaths) -> String {
    format!(
        r#"{snippet}
# --- test host settings (vmrun-tests) ---
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni}"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "{RUNC_RUNTIME}"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  Root = "{runc_root}"
"#,
        snippet = CONFIG_SNIPPET.trim_end(),
        sandbox_image = paths.sandbox_image,
        cni = paths.cni_conf_dir.display(),
        runc_root = paths.state.join("runc").display(),
    )
}

/// The MTU of the fixture's CNI network (not the default 1500, so that a
/// test sees it reach the guest).
pub const CNI_MTU: u32 = 1400;

/// A dual-stack bridge + host-local CNI network list named `name`.
fn cni_conflist(name: &str, bridge: &str, subnet: &str, subnet6: &str) -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "{name}",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{bridge}",
      "isGateway": true,
      "ipMasq": false,
      "mtu": {CNI_MTU},
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{ "subnet": "{subnet}" }}], [{{ "subnet": "{subnet6}" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}, {{ "dst": "::/0" }}]
      }}
    }}
  ]
}}
"#
    )
}

/// Host-wide directories the fixture may leave entries in, with what they
/// held when it started.
struct HostDir {
    path: PathBuf,
    existed: bool,
    before: BTreeSet<PathBuf>,
}

impl HostDir {
    fn snapshot(path: PathBuf) -> Self {
        Self {
            existed: path.exists(),
            before: entries(&path),
            path,
        }
    }

    /// Removes entries that appeared since the snapshot (directories must
    /// be empty: cgroups), then the directory itself if the fixture made it.
    fn clean(&self, recursive: bool) {
        for entry in entries(&self.path).difference(&self.before) {
            let _ = if recursive && !entry.starts_with("/sys") {
                fs::remove_dir_all(entry).or_else(|_| fs::remove_file(entry))
            } else {
                fs::remove_dir(entry)
            };
        }
        if !self.existed {
            let _ = fs::remove_dir(&self.path);
        }
    }
}

fn entries(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A running private containerd. Dropping it stops containerd, every task
/// and shim it started, and removes what it created.
pub struct Containerd {
    dir: PathBuf,
    socket: PathBuf,
    paths: ConfigPaths,
    child: Option<Child>,
    cni_network: String,
    bridge: String,
    gateway: String,
    gateway6: String,
    host_dirs: Vec<HostDir>,
    /// Dropped after everything else: containerd, its bridge and the pods'
    /// host ends live in it.
    netns: TestNetns,
}

static FIXTURES: AtomicU32 = AtomicU32::new(0);

impl Containerd {
    /// Starts containerd under `/tmp/vmrun-ctrd-<pid>-<n>`, waits until it
    /// answers, and imports [`IMAGE`] and [`PAUSE_IMAGE`] into the `default`
    /// and `k8s.io` namespaces. The workspace's target directory comes first
    /// on containerd's PATH, so a built `containerd-shim-vmrun-v2` is found.
    pub fn start() -> Self {
        let n = FIXTURES.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("vmrun-ctrd-{pid}-{n}"));
        let _ = fs::remove_dir_all(&dir);
        let paths = ConfigPaths {
            root: dir.join("root"),
            state: dir.join("state"),
            cni_conf_dir: dir.join("cni"),
            sandbox_image: PAUSE_IMAGE.to_string(),
        };
        for d in [&paths.root, &paths.state, &paths.cni_conf_dir] {
            fs::create_dir_all(d).expect("create the containerd directories");
        }
        let cni_network = format!("vmrun-test-{pid}-{n}");
        let bridge = format!("vmr{}-{n}", pid % 10_000_000);
        let subnet_prefix = format!("10.{}.{}", 200 + n % 50, pid % 250);
        let subnet = format!("{subnet_prefix}.0/24");
        // A unique local prefix (fd76:6d72 is "vmr"), as unique as the IPv4 one.
        let subnet6_prefix = format!("fd76:6d72:{:x}:{:x}", 200 + n % 50, pid % 250);
        let subnet6 = format!("{subnet6_prefix}::/64");
        fs::write(
            paths.cni_conf_dir.join("10-vmrun-test.conflist"),
            cni_conflist(&cni_network, &bridge, &subnet, &subnet6),
        )
        .expect("write the CNI configuration");
        let config = dir.join("config.toml");
        fs::write(&config, containerd_config(&paths)).expect("write the containerd config");

        // Deepest first: they are cleaned in this order.
        let mut host_dirs: Vec<HostDir> = [
            "/run/containerd/runc/default",
            "/run/containerd/runc/k8s.io",
            "/run/containerd/runc",
            "/run/containerd/fifo",
            "/run/containerd/s",
            "/run/containerd",
            "/var/lib/cni/networks",
            "/var/lib/cni/results",
            "/var/lib/cni",
        ]
        .into_iter()
        .map(|p| HostDir::snapshot(PathBuf::from(p)))
        .collect();
        for controller in entries(Path::new("/sys/fs/cgroup")) {
            for ns in [DEFAULT_NAMESPACE, CRI_NAMESPACE] {
                host_dirs.push(HostDir::snapshot(controller.join(ns)));
            }
        }

        let socket = dir.join("containerd.sock");
        let log = fs::File::create(dir.join("containerd.log")).expect("create containerd.log");
        let log_err = log.try_clone().expect("clone the log file");
        let mut path = std::ffi::OsString::from(target_dir().join(profile()));
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        let netns = TestNetns::create("ctrd");
        let netns_file =
            fs::File::open(netns.path()).expect("open the fixture's network namespace");
        let mut command = Command::new("containerd");
        // SAFETY: the closure runs in the child before exec and only calls
        // setns(2), which is async-signal-safe, on a descriptor it inherited.
        unsafe {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = netns_file.as_raw_fd();
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&paths.root)
            .arg("--state")
            .arg(&paths.state)
            .arg("--address")
            .arg(&socket)
            .arg("--log-level")
            .arg("debug")
            .env("PATH", path)
            // The shims it starts keep their sandbox directories here.
            .env("VMRUN_RUNTIME_DIR", dir.join("vmrun"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("start containerd (apt-get install containerd; scripts/setup.sh does)");
        drop(netns_file);
        let mut fixture = Self {
            dir,
            socket,
            paths,
            child: Some(child),
            cni_network,
            bridge,
            gateway: format!("{subnet_prefix}.1"),
            gateway6: format!("{subnet6_prefix}::1"),
            host_dirs,
            netns,
        };
        fixture.wait_ready();
        fixture.import_images();
        fixture
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("containerd exited ({status}):\n{}", self.log());
                }
            }
            if self.socket.exists() {
                let version = try_run(
                    Command::new("ctr")
                        .arg("--address")
                        .arg(&self.socket)
                        .arg("version"),
                    Duration::from_secs(10),
                );
                if matches!(&version, Ok(done) if done.status.success()) {
                    return;
                }
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "containerd did not answer on {} within {START_DEADLINE:?}:\n{}",
                self.socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn import_images(&self) {
        let tarball = self.dir.join("busybox-oci.tar");
        let built = run(
            Command::new(workspace_bin("rootfs-builder"))
                .arg("oci-image")
                .arg("--name")
                .arg(IMAGE)
                .arg("--pause-name")
                .arg(PAUSE_IMAGE)
                .arg("--output")
                .arg(&tarball),
            Duration::from_secs(60),
        );
        assert!(
            built.status.success(),
            "rootfs-builder oci-image: {built:?}"
        );
        let tarball = tarball.to_string_lossy().into_owned();
        for ns in [DEFAULT_NAMESPACE, CRI_NAMESPACE] {
            let done = self.ctr_ns(
                ns,
                &["images", "import", &tarball],
                Duration::from_secs(120),
            );
            assert!(done.status.success(), "ctr -n {ns} images import: {done:?}");
        }
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The fixture's directory (config, log, root, state, CNI config).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The network namespace containerd (and its CNI bridge) runs in.
    pub fn netns(&self) -> &TestNetns {
        &self.netns
    }

    /// The CNI bridge's name (in [`netns`](Self::netns)).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The bridge's address: the pods' gateway, where a test's server
    /// in [`netns`](Self::netns) is reached from a pod.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// The bridge's IPv6 address: the pods' IPv6 gateway.
    pub fn gateway6(&self) -> &str {
        &self.gateway6
    }

    /// The CNI network's name (`/var/lib/cni/results/<name>-<id>-<ifname>`).
    pub fn cni_network(&self) -> &str {
        &self.cni_network
    }

    pub fn paths(&self) -> &ConfigPaths {
        &self.paths
    }

    /// What containerd logged so far (debug level).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// The last `lines` lines of containerd's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `ctr -a SOCK -n NAMESPACE args…` as a command, to run it another way
    /// (with a terminal, say).
    pub fn ctr_command(&self, namespace: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(namespace)
            .args(args);
        cmd
    }

    /// The same as one shell-quoted line (for `script -qec LINE`).
    pub fn ctr_line(&self, namespace: &str, args: &[&str]) -> String {
        let mut words = vec![
            "ctr".to_string(),
            "--address".to_string(),
            self.socket.to_string_lossy().into_owned(),
            "--namespace".to_string(),
            namespace.to_string(),
        ];
        words.extend(args.iter().map(|a| a.to_string()));
        words
            .iter()
            .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `ctr` in the `default` namespace, within [`CTR_DEADLINE`].
    pub fn ctr(&self, args: &[&str]) -> Finished {
        self.ctr_ns(DEFAULT_NAMESPACE, args, CTR_DEADLINE)
    }

    /// `ctr` in `namespace`, killed (and the test failed) after `deadline`.
    pub fn ctr_ns(&self, namespace: &str, args: &[&str], deadline: Duration) -> Finished {
        run(&mut self.ctr_command(namespace, args), deadline)
    }

    /// Mount points under the fixture's directory (snapshots, shim bundles,
    /// network namespaces), deepest first.
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(&self.dir)
    }

    /// The vmrun sandbox directories (one per live microVM) the shims
    /// started by this containerd have.
    pub fn vmrun_sandboxes(&self) -> Vec<PathBuf> {
        fs::read_dir(self.dir.join("vmrun").join("sb"))
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// Processes other than containerd that belong to this fixture: with
    /// its directory on their command line (shims: `-address SOCK`) or in
    /// their environment (containerd hands shims `TTRPC_ADDRESS=SOCK.ttrpc`,
    /// which what they start inherits: VMMs), or working in it (shims run in
    /// their bundle under the state directory), as `(pid, command line)`.
    pub fn processes(&self) -> Vec<(i32, String)> {
        let own = self.child.as_ref().map(|c| c.id() as i32);
        let me = std::process::id() as i32;
        let dir = self.dir.as_os_str().as_bytes();
        let mut found = Vec::new();
        for entry in entries(Path::new("/proc")) {
            let Some(pid) = entry
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if Some(pid) == own || pid == me {
                continue;
            }
            let cmdline = fs::read(entry.join("cmdline")).unwrap_or_default();
            let cwd = fs::read_link(entry.join("cwd")).unwrap_or_default();
            let environ = fs::read(entry.join("environ")).unwrap_or_default();
            let mentions = |bytes: &[u8]| bytes.windows(dir.len()).any(|w| w == dir);
            if mentions(&cmdline) || mentions(&environ) || cwd.starts_with(&self.dir) {
                let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                found.push((pid, line.trim_end().to_string()));
            }
        }
        found
    }

    /// Best effort: kills and deletes every task and container left in the
    /// fixture's namespaces (a test that failed half-way).
    fn remove_tasks(&self) {
        let deadline = Duration::from_secs(60);
        for ns in [DEFAULT_NAMESPACE, CRI_NAMESPACE] {
            let list = |args: &[&str]| -> Vec<String> {
                try_run(&mut self.ctr_command(ns, args), deadline)
                    .map(|d| d.stdout.lines().map(str::to_string).collect())
                    .unwrap_or_default()
            };
            for task in list(&["tasks", "ls", "--quiet"]) {
                let _ = try_run(
                    &mut self.ctr_command(ns, &["tasks", "rm", "--force", &task]),
                    deadline,
                );
            }
            for container in list(&["containers", "ls", "--quiet"]) {
                let _ = try_run(
                    &mut self.ctr_command(ns, &["containers", "rm", &container]),
                    deadline,
                );
            }
        }
    }
}

/// Where containerd will find `containerd-shim-vmrun-v2`: the workspace's
/// build first (the fixture puts it first on containerd's PATH), then PATH.
pub fn shim_binary() -> Option<PathBuf> {
    let built = target_dir().join(profile()).join(SHIM_BINARY);
    if built.is_file() {
        return Some(built);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(SHIM_BINARY))
            .find(|bin| bin.is_file())
    })
}

/// Fails the test at once, saying why, when the vmrun shim is not built:
/// containerd would otherwise answer every request with "binary not
/// installed" after the test had set everything up.
pub fn require_shim() -> PathBuf {
    shim_binary().unwrap_or_else(|| {
        panic!(
            "{SHIM_BINARY} is not built: {} does not exist and it is not on PATH. \
             These tests drive containerd's `{VMRUN_RUNTIME}` runtime and CRI handler \
             `{VMRUN_HANDLER}` through that shim; build it with `cargo build -p {SHIM_BINARY}` \
             (scripts/test.sh builds every binary).",
            target_dir().join(profile()).join(SHIM_BINARY).display()
        )
    })
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Mount points at or under `dir` (from /proc/self/mountinfo), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

fn unmount_detached(path: &Path) {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the
    // call; umount2 only reads it.
    unsafe {
        libc::umount2(c_path.as_ptr(), libc::MNT_DETACH);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.remove_tasks();
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of our own, not yet reaped child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let started = Instant::now();
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if started.elapsed() > Duration::from_secs(15) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Shims (and what they run) outlive containerd by design.
        for (pid, _) in self.processes() {
            // SAFETY: kill(2) with a pid read from /proc just now, of a
            // process that runs with this fixture's socket or directory.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        for mount in self.mounts() {
            unmount_detached(&mount);
        }
        let _ = fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(&self.cni_network));
        for result in entries(Path::new("/var/lib/cni/results")) {
            let name = result.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.starts_with(&format!("{}-", self.cni_network))) {
                let _ = fs::remove_file(result);
            }
        }
        for host_dir in &self.host_dirs {
            host_dir.clean(!host_dir.path.starts_with("/sys"));
        }
        if std::env::var_os("VMRUN_KEEP_CONTAINERD").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_holds_the_documented_snippet_and_the_host_settings() {
        let paths = ConfigPaths {
            root: "/r".into(),
            state: "/s".into(),
            cni_conf_dir: "/c".into(),
            sandbox_image: PAUSE_IMAGE.into(),
        };
        let config = containerd_config(&paths);
        assert!(config.starts_with(CONFIG_SNIPPET.trim_end()));
        assert!(CONFIG_SNIPPET.contains(r#"runtime_type = "io.containerd.vmrun.v2""#));
        assert!(CONFIG_SNIPPET
            .contains(r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vmrun]"#));
        assert!(config.contains(r#"sandbox_image = "localhost/vmrun/pause:latest""#));
        assert!(config.contains("restrict_oom_score_adj = true"));
        assert!(config.contains(r#"conf_dir = "/c""#));
        assert!(config.contains(r#"Root = "/s/runc""#));
        assert_eq!(config.matches("version = 2").count(), 1);
        assert!(RUNTIME_CLASS.contains("handler: vmrun"));
        assert!(RUNTIME_CLASS.contains("kind: RuntimeClass"));
    }

    #[test]
    fn readme_shows_the_tested_snippets() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(CONFIG_SNIPPET),
            "README lacks shim/containerd-config.toml"
        );
        assert!(
            readme.contains(RUNTIME_CLASS),
            "README lacks shim/runtimeclass.yaml"
        );
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape_mount_path(r"/tmp/a\040b\134c"),
            PathBuf::from("/tmp/a b\\c")
        );
        assert_eq!(unescape_mount_path("/x"), PathBuf::from("/x"));
    }
}
