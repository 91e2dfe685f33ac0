//! Pod networking through containerd's CRI plugin with the handler `vmrun`:
//! the pod's CNI interface (a veth of the fixture's bridge) is the guest's
//! `eth0`, with the same addresses (IPv4 and IPv6: the fixture's network is
//! dual-stack), MAC, MTU and routes; TCP works both ways between the test's
//! network namespace and a pod (over both), between two pods, and over
//! `localhost` between the containers of one pod; the CRI DNS config
//! and the pod hostname reach every container; removing the pods, one of
//! them after its shim was killed, leaves no tap, qdisc, filter or
//! namespace behind.
//!
//! Everything runs in the fixture's own network namespace (containerd, its
//! CNI bridge, the pods' host ends) and in the pods' namespaces that CNI
//! made there: no packet reaches the host's network.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig,
};
use vmrun_tests::cni::CniAttachment;
use vmrun_tests::containerd::{require_shim, Containerd, CNI_MTU, IMAGE, VMRUN_HANDLER};
use vmrun_tests::cri::CriClient;

const EXEC_TIMEOUT: Duration = Duration::from_secs(120);
/// The pod's web server (busybox httpd) port.
const WEB_PORT: u16 = 8080;
const WEB_BODY: &str = "hello from pod a";

fn pod_config(ctrd: &Containerd, name: &str) -> PodSandboxConfig {
    let mut pod = CriClient::pod_config(name, &ctrd.dir().join("pod-logs"));
    pod.dns_config = Some(DnsConfig {
        servers: vec!["192.0.2.53".to_string()],
        searches: vec!["pods.vmrun.test".to_string()],
        options: vec!["ndots:3".to_string()],
    });
    pod
}

/// Runs `script` with `sh -c` in `container`; its stdout, which must come
/// with exit status 0.
async fn sh(cri: &mut CriClient, ctrd: &Containerd, container: &str, script: &str) -> String {
    let reply = cri
        .exec_sync(container, &["sh", "-c", script], EXEC_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("ExecSync {script:?}: {e}\n{}", ctrd.log_tail(60)));
    let stdout = String::from_utf8_lossy(&reply.stdout).into_owned();
    assert_eq!(
        reply.exit_code,
        0,
        "{script:?} in {container}: stdout {stdout:?}, stderr {:?}",
        String::from_utf8_lossy(&reply.stderr)
    );
    stdout
}

/// The body of an HTTP GET of `/` at `host:port` from inside `container`
/// (busybox `nc`: the static busybox's `wget` segfaults in these images),
/// retried while the server may still be starting.
async fn http_get(
    cri: &mut CriClient,
    ctrd: &Containerd,
    container: &str,
    host: &str,
    port: u16,
) -> String {
    let script = format!(
        "for i in $(seq 30); do \
           printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port} > /tmp/reply \
             && grep -q 'HTTP/1' /tmp/reply && exec cat /tmp/reply; \
           sleep 1; \
         done; exit 1"
    );
    let reply = sh(cri, ctrd, container, &script).await;
    match reply.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => panic!("GET http://{host}:{port}/ from {container}: no HTTP reply: {reply:?}"),
    }
}

/// A one-connection-at-a-time HTTP server in the fixture's namespace on the
/// bridge's address; answers `body` to every request.
fn serve_from_test_namespace(ctrd: &Containerd, host: &str, body: &'static str) -> SocketAddr {
    let host = host.to_string();
    let listener = ctrd.netns().run(move || {
        TcpListener::bind((host.as_str(), 0))
            .unwrap_or_else(|e| panic!("listen on the bridge address {host}: {e}"))
    });
    let addr = listener.local_addr().expect("listener address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// An HTTP GET of `/` at `addr` from the fixture's namespace, retried while
/// the pod's server may still be starting.
fn get_from_test_namespace(ctrd: &Containerd, addr: SocketAddr) -> String {
    ctrd.netns().run(move || {
        let started = Instant::now();
        loop {
            let attempt = (|| -> std::io::Result<String> {
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                stream.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")?;
                let mut reply = String::new();
                stream.read_to_string(&mut reply)?;
                Ok(reply)
            })();
            match attempt {
                Ok(reply) => return reply,
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    panic!("GET http://{addr}/ from the test's namespace: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    })
}

async fn start(
    cri: &mut CriClient,
    ctrd: &Containerd,
    pod_id: &str,
    pod: &PodSandboxConfig,
    name: &str,
    command: &[&str],
) -> String {
    let config = CriClient::container_config(name, IMAGE, command);
    let id = cri
        .create_container(pod_id, config, pod)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", ctrd.log_tail(80)));
    cri.start_container(&id)
        .await
        .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", ctrd.log_tail(80)));
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_have_their_cni_network_inside_the_vm() {
    require_shim();
    let ctrd = Containerd::start();
    let mut cri = CriClient::connect(ctrd.socket())
        .await
        .expect("connect to the CRI plugin");

    // Pod A: a web server and a client container.
    let pod_a = pod_config(&ctrd, "net-a");
    let a = cri
        .run_pod_sandbox(&pod_a, VMRUN_HANDLER)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox net-a: {e}\n{}", ctrd.log_tail(80)));
    let cni_a = CniAttachment::read(&ctrd, &a);
    let web_script = format!(
        "mkdir -p /www && echo '{WEB_BODY}' > /www/index.html && exec httpd -f -p {WEB_PORT} -h /www"
    );
    let web = start(
        &mut cri,
        &ctrd,
        &a,
        &pod_a,
        "web",
        &["sh", "-c", &web_script],
    )
    .await;
    let client = start(
        &mut cri,
        &ctrd,
        &a,
        &pod_a,
        "client",
        &["sleep", "2147483647"],
    )
    .await;

    // The guest's eth0 is the CNI interface: address, MAC, MTU, routes.
    let links = sh(
        &mut cri,
        &ctrd,
        &web,
        "cat /sys/class/net/eth0/address /sys/class/net/eth0/mtu; \
         ip -4 -o addr show dev eth0; ip route; \
         ip -6 -o addr show dev eth0 scope global; ip -6 route",
    )
    .await;
    let lines: Vec<&str> = links.lines().collect();
    assert_eq!(lines[0], cni_a.mac, "eth0's MAC is the CNI one: {links}");
    assert_eq!(lines[1], CNI_MTU.to_string(), "eth0's MTU: {links}");
    assert!(
        lines[2].contains(&format!("inet {}", cni_a.cidr)),
        "eth0 has the CNI address {}: {links}",
        cni_a.cidr
    );
    assert!(
        links.contains(&format!("default via {} dev eth0", cni_a.gateway)),
        "the default route goes via the bridge {}: {links}",
        cni_a.gateway
    );
    // The fixture's network is dual-stack: IPv6 too.
    let v6 = cni_a
        .ipv6
        .as_ref()
        .expect("an IPv6 address from the dual-stack network");
    assert!(
        links.contains(&format!("inet6 {}", v6.cidr)),
        "eth0 has the CNI IPv6 address {}: {links}",
        v6.cidr
    );
    assert!(
        links.contains(&format!("default via {} dev eth0", v6.gateway)),
        "the IPv6 default route goes via the bridge {}: {links}",
        v6.gateway
    );

    // localhost between two containers of the pod.
    let body = http_get(&mut cri, &ctrd, &client, "127.0.0.1", WEB_PORT).await;
    assert_eq!(body.trim(), WEB_BODY, "web reached over localhost");

    // The test's namespace reaches the pod at its CNI address...
    let reply = get_from_test_namespace(&ctrd, SocketAddr::from((cni_a.ip, WEB_PORT)));
    assert!(
        reply.starts_with("HTTP/1.") && reply.trim_end().ends_with(WEB_BODY),
        "GET from the test's namespace: {reply:?}"
    );
    // ...and the pod reaches a server on the bridge's address; both over
    // IPv4 and over IPv6.
    let reply = get_from_test_namespace(&ctrd, SocketAddr::from((v6.ip, WEB_PORT)));
    assert!(
        reply.starts_with("HTTP/1.") && reply.trim_end().ends_with(WEB_BODY),
        "GET over IPv6 from the test's namespace: {reply:?}"
    );
    for bridge in [ctrd.gateway(), ctrd.gateway6()] {
        let test_server = serve_from_test_namespace(&ctrd, bridge, "hello from the test");
        let body = http_get(
            &mut cri,
            &ctrd,
            &client,
            &test_server.ip().to_string(),
            test_server.port(),
        )
        .await;
        assert_eq!(body, "hello from the test", "from the server on {bridge}");
    }

    // DNS config and hostname, in every container.
    for container in [&web, &client] {
        // One exec each: a process start in the guest is slow here.
        let out = sh(&mut cri, &ctrd, container, "hostname; cat /etc/resolv.conf").await;
        let (hostname, resolv) = out.split_once('\n').unwrap_or((&out, ""));
        assert_eq!(hostname.trim(), "net-a", "hostname: {out:?}");
        for want in [
            "nameserver 192.0.2.53",
            "search pods.vmrun.test",
            "options ndots:3",
        ] {
            assert!(
                resolv.lines().any(|l| l.trim() == want),
                "{want:?} in /etc/resolv.conf: {resolv:?}"
            );
        }
    }

    // Pod B reaches pod A.
    let pod_b = pod_config(&ctrd, "net-b");
    let b = cri
        .run_pod_sandbox(&pod_b, VMRUN_HANDLER)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox net-b: {e}\n{}", ctrd.log_tail(80)));
    let cni_b = CniAttachment::read(&ctrd, &b);
    assert_ne!(cni_a.ip, cni_b.ip);
    let probe = start(
        &mut cri,
        &ctrd,
        &b,
        &pod_b,
        "probe",
        &["sleep", "2147483647"],
    )
    .await;
    let body = http_get(&mut cri, &ctrd, &probe, &cni_a.ip.to_string(), WEB_PORT).await;
    assert_eq!(body.trim(), WEB_BODY, "pod b reaches pod a");

    // Pod B's shim dies (SIGKILL); the pod is then removed as kubelet
    // would. Pod A goes the normal way.
    let shim_b = ctrd
        .processes()
        .into_iter()
        .find(|(_, cmdline)| cmdline.contains("containerd-shim-vmrun-v2") && cmdline.contains(&b))
        .unwrap_or_else(|| panic!("pod b's shim among {:?}", ctrd.processes()));
    // SAFETY: kill(2) on the pid of the shim just found in /proc.
    unsafe {
        libc::kill(shim_b.0, libc::SIGKILL);
    }
    for pod_id in [&b, &a] {
        cri.stop_pod_sandbox(pod_id)
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox {pod_id}: {e}\n{}", ctrd.log_tail(60)));
        cri.remove_pod_sandbox(pod_id)
            .await
            .unwrap_or_else(|e| panic!("RemovePodSandbox {pod_id}: {e}"));
    }

    // Nothing left: no process, mount, sandbox directory, pod namespace,
    // veth, tap or ingress qdisc (and so no filter) in the fixture's
    // namespace.
    let started = Instant::now();
    loop {
        let procs = ctrd.processes();
        let mounts = ctrd.mounts();
        let sandboxes = ctrd.vmrun_sandboxes();
        let namespaces: Vec<&PathBuf> = [&cni_a.netns, &cni_b.netns]
            .into_iter()
            .filter(|p| p.exists())
            .collect();
        let links: Vec<String> = ctrd
            .netns()
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
            .filter(|name| name != "lo" && name != ctrd.bridge())
            .collect();
        let qdiscs = String::from_utf8_lossy(
            &ctrd
                .netns()
                .command("tc")
                .args(["qdisc", "show"])
                .output()
                .expect("tc qdisc show")
                .stdout,
        )
        .into_owned();
        if procs.is_empty()
            && mounts.is_empty()
            && sandboxes.is_empty()
            && namespaces.is_empty()
            && links.is_empty()
            && !qdiscs.contains("ingress")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "30 s after RemovePodSandbox: processes {procs:?}, mounts {mounts:?}, \
             sandbox directories {sandboxes:?}, pod namespaces {namespaces:?}, \
             links {links:?}, qdiscs {qdiscs}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A `hostNetwork` pod is refused with an error that says why; no VM, no
/// sandbox directory is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pods_are_refused() {
    require_shim();
    let ctrd = Containerd::start();
    let mut cri = CriClient::connect(ctrd.socket())
        .await
        .expect("connect to the CRI plugin");
    let mut pod = CriClient::pod_config("host-net", &ctrd.dir().join("pod-logs"));
    pod.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = cri
        .run_pod_sandbox(&pod, VMRUN_HANDLER)
        .await
        .expect_err("a hostNetwork pod under vmrun");
    assert!(
        err.to_string().contains("host's network"),
        "the error says why: {err}"
    );
    let started = Instant::now();
    while !(ctrd.processes().is_empty() && ctrd.vmrun_sandboxes().is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "left after the refusal: {:?} {:?}",
            ctrd.processes(),
            ctrd.vmrun_sandboxes()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
