//! The pod network's host side against the kernel: namespaces, a veth and
//! a tap made for each test (as root, as CI runs), frames sent through the
//! redirect both ways.

mod fixture;

use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use fixture::{TestNetns, HOST_PEER, MTU, POD_MAC};
use vm_config::{MacAddr, NetConfig};

use super::{NetNs, NetworkError, PodNetwork};
use crate::SandboxError;

/// `(destination/prefix, gateway, device, metric)` of each route.
fn route_list(pod: &PodNetwork) -> Vec<(String, String, String, u32)> {
    pod.routes()
        .iter()
        .map(|r| {
            let d = r.destination.as_ref().unwrap();
            (
                format!("{}/{}", d.address, d.prefix_len),
                r.gateway.clone(),
                r.device.clone(),
                r.metric,
            )
        })
        .collect()
}

#[tokio::test]
async fn the_pod_network_is_read_as_the_cni_plugin_left_it() {
    let pod = fixture::pod();
    // A second veth, down: not part of the pod's network.
    pod.pod.ip("link add eth1 type veth peer name eth1-peer");

    let network = PodNetwork::read(pod.pod.path()).await.unwrap();
    assert_eq!(network.netns().path(), pod.pod.path());
    let [eth0] = network.interfaces() else {
        panic!("{:?}", network.interfaces());
    };
    assert_eq!(eth0.name(), "eth0");
    assert_eq!(eth0.index(), pod.pod.index_of("eth0"));
    assert_eq!(eth0.tap(), "vmtap0");
    assert_eq!(eth0.mac(), MacAddr(POD_MAC));
    assert_eq!(eth0.mtu(), MTU);
    let guest = eth0.guest();
    assert_eq!(
        (guest.name.as_str(), &guest.mac[..], guest.mtu),
        ("eth0", &POD_MAC[..], u32::from(MTU))
    );
    let addresses: Vec<(&str, u32)> = guest
        .addresses
        .iter()
        .map(|a| (a.address.as_str(), a.prefix_len))
        .collect();
    assert_eq!(addresses, [("192.0.2.2", 24), ("2001:db8::2", 64)]);

    let route = |d: &str, g: &str, m| (d.to_string(), g.to_string(), "eth0".to_string(), m);
    assert_eq!(
        route_list(&network),
        [
            route("0.0.0.0/0", "192.0.2.1", 0),
            route("198.51.100.0/24", "192.0.2.1", 50),
            route("2001:db8:1::/48", "2001:db8::1", 1024),
        ]
    );

    let request = network.request();
    assert_eq!(request.interfaces, std::slice::from_ref(guest));
    assert_eq!(request.routes, network.routes());
    assert_eq!(
        network.vm_nets(),
        [NetConfig {
            tap: "vmtap0".into(),
            mac: Some(MacAddr(POD_MAC)),
            mtu: MTU,
            create: true,
            ..NetConfig::default()
        }]
    );
}

#[tokio::test]
async fn a_link_the_guest_cannot_have_is_refused_by_name() {
    let pod = fixture::pod();
    pod.pod.ip("tuntap add dev tapx mode tap");
    pod.pod.ip("link set tapx up");
    let err = PodNetwork::read(pod.pod.path()).await.unwrap_err();
    assert!(matches!(err, NetworkError::UnsupportedLink { ref link, .. } if link == "tapx"));
    let message = err.to_string();
    assert!(
        message.contains(&pod.pod.path().display().to_string())
            && message.contains("link tapx: is a tun link"),
        "{message}"
    );
}

/// Whether link `dev` has an ingress qdisc, and the `to_dev` of each of
/// its ingress filters' mirred actions (redirect, egress, for every
/// protocol).
fn tc_state(netns: &TestNetns, dev: &str) -> (bool, Vec<String>) {
    let qdiscs = netns.tc_json(&format!("qdisc show dev {dev} ingress"));
    let has_ingress = qdiscs
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["kind"] == "ingress");
    let filters = netns.tc_json(&format!("filter show dev {dev} ingress"));
    let mut redirects = Vec::new();
    for filter in filters.as_array().unwrap() {
        for action in filter["options"]["actions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(filter["protocol"], "all", "{filter}");
            assert_eq!(filter["kind"], "u32", "{filter}");
            assert_eq!(action["kind"], "mirred", "{action}");
            assert_eq!(action["mirred_action"], "redirect", "{action}");
            assert_eq!(action["direction"], "egress", "{action}");
            redirects.push(action["to_dev"].as_str().unwrap().to_string());
        }
    }
    (has_ingress, redirects)
}

#[tokio::test]
async fn an_interface_is_connected_with_its_tap_and_disconnected() {
    let pod = fixture::pod();
    let network = PodNetwork::read(pod.pod.path()).await.unwrap();

    // Before the VMM has made its tap: an error, and nothing left behind.
    let err = network.connect().await.unwrap_err();
    assert!(
        matches!(&err, NetworkError::MissingTap { tap, link, .. } if tap == "vmtap0" && link == "eth0"),
        "{err}"
    );
    assert_eq!(tc_state(&pod.pod, "eth0"), (false, vec![]));

    let mut tap = fixture::open_tap(&pod.pod.path(), "vmtap0");
    network.connect().await.unwrap();
    let link = pod.pod.ip_json("link show dev vmtap0");
    assert_eq!(link[0]["mtu"], u64::from(MTU), "{link}");
    assert!(
        link[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP"),
        "{link}"
    );
    // Twice is as once (a restarted shim).
    network.connect().await.unwrap();
    assert_eq!(tc_state(&pod.pod, "eth0"), (true, vec!["vmtap0".into()]));
    assert_eq!(tc_state(&pod.pod, "vmtap0"), (true, vec!["eth0".into()]));

    // Host to guest: a datagram to the pod's address makes the host peer
    // ask for it by ARP, which eth0 sends on to the tap.
    let udp = fixture::host_udp_socket(&pod);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        // An error (the neighbour given up on) only means: try again.
        let _ = udp.send_to(b"vmrun", (Ipv4Addr::from(fixture::POD_IP), 7777));
        while let Some(frame) = fixture::read_frame(&mut tap, Duration::from_millis(200)) {
            if fixture::is_for_pod_ip(&frame) {
                seen = true;
                break;
            }
        }
    }
    assert!(seen, "nothing for the pod's address reached the tap");

    // Guest to host: a frame written to the tap leaves by eth0 and reaches
    // the host peer.
    let mut peer = fixture::host_packet_socket(&pod);
    let marker: &CStr = c"vmrun tc redirect";
    let frame = fixture::marked_frame(marker);
    fixture::write_frame(&mut tap, &frame);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut arrived = false;
    while !arrived && Instant::now() < deadline {
        match fixture::read_frame(&mut peer, Duration::from_millis(200)) {
            Some(got) => arrived = got.starts_with(&frame[..14 + marker.to_bytes().len()]),
            None => fixture::write_frame(&mut tap, &frame),
        }
    }
    assert!(arrived, "the tap's frame did not reach {HOST_PEER}");

    network.disconnect().await.unwrap();
    assert_eq!(tc_state(&pod.pod, "eth0"), (false, vec![]));
    assert_eq!(tc_state(&pod.pod, "vmtap0"), (false, vec![]));

    // The VMM exits: its tap goes.
    drop(tap);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pod.pod.ip_ok("link show dev vmtap0") {
        assert!(Instant::now() < deadline, "vmtap0 outlived its descriptor");
        std::thread::sleep(Duration::from_millis(20));
    }
    network.disconnect().await.unwrap();
    // A CNI DEL that ran first: the interface is gone too.
    pod.pod.ip("link del eth0");
    network.disconnect().await.unwrap();
    let blocking = network.clone();
    std::thread::spawn(move || blocking.disconnect_blocking())
        .join()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_reused_interface_index_is_left_alone_by_disconnect() {
    let pod = fixture::pod();
    let network = PodNetwork::read(pod.pod.path()).await.unwrap();
    let _tap = fixture::open_tap(&pod.pod.path(), "vmtap0");
    network.connect().await.unwrap();
    // eth0 is renamed: its index no longer names the interface read.
    pod.pod.ip("link set eth0 down");
    pod.pod.ip("link set eth0 name other0");
    network.disconnect().await.unwrap();
    assert!(tc_state(&pod.pod, "other0").0);
    assert_eq!(tc_state(&pod.pod, "vmtap0"), (false, vec![]));
}

/// The inode of the calling thread's network namespace.
fn own_netns() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

#[tokio::test]
async fn work_runs_in_the_namespace_and_leaves_the_callers_alone() {
    let netns = TestNetns::new();
    let inode = std::fs::metadata(netns.path()).unwrap().ino();
    let ours = own_netns();
    let opened = NetNs::open(netns.path()).unwrap();

    let inside = opened
        .run(|_handle| async { Ok(own_netns()) })
        .await
        .unwrap();
    assert_eq!((inside, own_netns()), (inode, ours));
    let blocking = opened.clone();
    let inside = std::thread::spawn(move || blocking.run_blocking(|_| async { Ok(own_netns()) }))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!((inside, own_netns()), (inode, ours));

    // The handle's socket is the namespace's: it sees only its `lo`.
    let links = opened
        .run(|handle| async move {
            use futures_util::TryStreamExt;
            let links: Vec<_> = handle.link().get().execute().try_collect().await.unwrap();
            Ok(links.len())
        })
        .await
        .unwrap();
    assert_eq!(links, 1);

    // The work's own error comes back as it is.
    let err = opened
        .run(|_| async {
            Err::<(), _>(NetworkError::Panicked {
                path: "/marker".into(),
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(err, NetworkError::Panicked { path } if path.as_os_str() == "/marker"));
}

#[tokio::test]
async fn a_path_that_is_not_a_network_namespace_is_named() {
    let missing = "/run/netns/vmrun-nettest-does-not-exist";
    let err = NetNs::open(missing).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOENT));
    assert!(
        err.to_string()
            .starts_with(&format!("network namespace {missing}: ")),
        "{err}"
    );
    let err = PodNetwork::read(missing).await.unwrap_err();
    assert!(matches!(&err, NetworkError::Open { path, .. } if path.as_os_str() == missing));
    let message = SandboxError::from(err).to_string();
    assert!(
        message.starts_with(&format!("pod network: network namespace {missing}: ")),
        "{message}"
    );

    let file = std::env::temp_dir().join(format!("vmrun-nettest-file-{}", std::process::id()));
    std::fs::write(&file, "not a namespace").unwrap();
    let err = NetNs::open(&file).unwrap_err().to_string();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        err,
        format!(
            "{} is not a network namespace: not a namespace file",
            file.display()
        )
    );
    let err = NetNs::open("/proc/self/ns/mnt").unwrap_err().to_string();
    assert_eq!(
        err,
        "/proc/self/ns/mnt is not a network namespace: it is a mount namespace"
    );
}
