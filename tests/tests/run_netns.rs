//! `vmrun run --netns PATH`: the VM gets the network of a namespace the
//! test made (a veth whose peer is in a second namespace standing in for
//! the host side), as a pod gets its CNI network, and leaves no tap or
//! qdisc there when it ends. Every packet stays in the two namespaces.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use vmrun_tests::netns::TestNetns;
use vmrun_tests::{run, vmrun_bin, BOOT_DEADLINE};

#[test]
fn the_vm_takes_the_namespaces_interface_and_reaches_its_peer() {
    let pod = TestNetns::create("run-pod");
    let peer = TestNetns::create("run-peer");
    pod.ip(&[
        "link",
        "add",
        "eth0",
        "mtu",
        "1450",
        "type",
        "veth",
        "peer",
        "name",
        "peer0",
        "mtu",
        "1450",
        "netns",
        peer.name(),
    ]);
    pod.ip(&["addr", "add", "10.77.0.2/24", "dev", "eth0"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    pod.ip(&["route", "add", "default", "via", "10.77.0.1"]);
    peer.ip(&["addr", "add", "10.77.0.1/24", "dev", "peer0"]);
    peer.ip(&["link", "set", "peer0", "up"]);
    let link = pod.ip(&["-o", "link", "show", "eth0"]);
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .to_string();

    // A line server on the peer's address: answers every connection that
    // sends a line (an attempt the stalled guest gave up on may still have
    // been accepted here).
    let listener = peer.run(|| TcpListener::bind("10.77.0.1:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let (got_tx, got) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_ok() && !line.is_empty() {
                let _ = (&stream).write_all(b"hello from the peer\n");
                let _ = got_tx.send(line);
            }
        }
    });

    // Retried: right after a restore the guest may stall for a while under
    // a software KVM (its second vCPU coming online), past one connect's
    // timeout.
    let script = format!(
        "cat /sys/class/net/eth0/address /sys/class/net/eth0/mtu; \
         ip -4 -o addr show dev eth0; ip route; \
         for i in $(seq 20); do \
           echo hello from the vm | nc -w 10 10.77.0.1 {port} && exit 0; sleep 1; \
         done; exit 1"
    );
    let netns = pod.path();
    let done = run(
        Command::new(vmrun_bin())
            .args(["run", "--netns"])
            .arg(&netns)
            .args(["--", "sh", "-c", &script]),
        BOOT_DEADLINE,
    );
    assert!(done.status.success(), "{done:?}");
    let lines: Vec<&str> = done.stdout.lines().collect();
    assert_eq!(lines[0], mac, "the guest's eth0 has the MAC: {done:?}");
    assert_eq!(lines[1], "1450", "and the MTU: {done:?}");
    assert!(
        lines[2].contains("inet 10.77.0.2/24"),
        "and the address: {done:?}"
    );
    assert!(
        done.stdout.contains("default via 10.77.0.1 dev eth0"),
        "and the default route: {done:?}"
    );
    assert!(
        done.stdout.contains("hello from the peer"),
        "the peer answered: {done:?}"
    );
    assert_eq!(
        got.recv_timeout(Duration::from_secs(10)).unwrap(),
        "hello from the vm\n"
    );

    // The tap went with the VMM, the qdiscs with the run.
    let links = pod.ip(&["-o", "link", "show"]);
    assert!(!links.contains("vmtap"), "a tap is left: {links}");
    let qdiscs = run(
        pod.command("tc").args(["qdisc", "show", "dev", "eth0"]),
        Duration::from_secs(30),
    );
    assert!(!qdiscs.stdout.contains("ingress"), "{qdiscs:?}");
}

/// A namespace path that is no network namespace is refused by name
/// before any VM starts.
#[test]
fn a_path_that_is_no_network_namespace_is_refused_by_name() {
    let done = run(
        Command::new(vmrun_bin()).args(["run", "--netns", "/proc/self/status", "--", "true"]),
        Duration::from_secs(60),
    );
    assert_eq!(done.status.code(), Some(125), "{done:?}");
    assert!(done.stderr.contains("/proc/self/status"), "{done:?}");
}
