//! `ConfigureNetwork` over real netlink, on veth links standing in for the
//! guest's virtio-net links (the `dummy` module may be missing on a CI
//! host; veth is built in everywhere we run).
//!
//! Each test runs in a thread of its own that unshares its network
//! namespace: nothing reaches the host's links, and the namespace goes away
//! with the thread. Needs root (CI runs as root). What was configured is
//! read back with plain rtnetlink dumps, not with the code under test.

use std::future::Future;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteScope};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tonic::Code;

use super::{configure_links, ApplyError, GuestLink, NetworkError};
use crate::proto::{ConfigureNetworkRequest, IpNetwork, NetworkInterface, NetworkRoute};
use crate::server::AgentError;

/// Runs `test` on a current-thread runtime in a thread with a network
/// namespace of its own, with a netlink handle opened in it.
fn in_own_netns<F, Fut>(test: F)
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): the network tests need root");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            // Opened here, so bound to this thread's namespace.
            let (connection, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(connection);
            test(handle).await;
        });
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A veth pair with its peer up (so `name` gets a carrier, like a NIC
/// with a cable); returns `name` as a link to configure.
async fn veth(handle: &Handle, name: &str, peer: &str) -> GuestLink {
    handle
        .link()
        .add(LinkVeth::new(name, peer).build())
        .execute()
        .await
        .unwrap();
    let peer = link_by_name(handle, peer).await.unwrap();
    handle
        .link()
        .set(LinkUnspec::new_with_index(peer.index).up().build())
        .execute()
        .await
        .unwrap();
    GuestLink {
        index: link_by_name(handle, name).await.unwrap().index,
        name: name.into(),
    }
}

/// A link as netlink reports it.
#[derive(Debug)]
struct Link {
    index: u32,
    name: String,
    mac: Vec<u8>,
    mtu: u32,
    up: bool,
}

async fn links(handle: &Handle) -> Vec<Link> {
    let messages: Vec<_> = handle.link().get().execute().try_collect().await.unwrap();
    messages
        .into_iter()
        .map(|message| {
            let mut link = Link {
                index: message.header.index,
                name: String::new(),
                mac: Vec::new(),
                mtu: 0,
                up: message.header.flags.contains(LinkFlags::Up),
            };
            for attribute in message.attributes {
                match attribute {
                    LinkAttribute::IfName(name) => link.name = name,
                    LinkAttribute::Address(mac) => link.mac = mac,
                    LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                    _ => {}
                }
            }
            link
        })
        .collect()
}

async fn link_by_name(handle: &Handle, name: &str) -> Option<Link> {
    links(handle).await.into_iter().find(|l| l.name == name)
}

async fn link_by_index(handle: &Handle, index: u32) -> Link {
    links(handle)
        .await
        .into_iter()
        .find(|l| l.index == index)
        .unwrap()
}

/// `address/prefix` of the link, with whether the kernel still holds it
/// back (tentative, in duplicate address detection); link-local IPv6
/// addresses left out.
async fn addresses(handle: &Handle, index: u32) -> Vec<(String, bool)> {
    let messages: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .unwrap();
    let mut found = Vec::new();
    for message in messages {
        let mut local = None;
        let mut address = None;
        let mut tentative = false;
        for attribute in &message.attributes {
            match attribute {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Flags(flags) => {
                    tentative = flags.contains(AddressFlags::Tentative);
                }
                _ => {}
            }
        }
        let ip = local.or(address).unwrap();
        if matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
            continue;
        }
        found.push((format!("{ip}/{}", message.header.prefix_len), tentative));
    }
    found.sort();
    found
}

/// A route of the main table, `ip route` style.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    destination: String,
    gateway: Option<IpAddr>,
    device: u32,
    metric: Option<u32>,
    link_scope: bool,
}

async fn routes(handle: &Handle) -> Vec<Route> {
    let mut messages: Vec<_> = handle
        .route()
        .get(RouteMessageBuilder::<std::net::Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .unwrap();
    let v6: Vec<_> = handle
        .route()
        .get(RouteMessageBuilder::<std::net::Ipv6Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .unwrap();
    messages.extend(v6);
    let ip = |address: &RouteAddress| match address {
        RouteAddress::Inet(v4) => IpAddr::V4(*v4),
        RouteAddress::Inet6(v6) => IpAddr::V6(*v6),
        other => panic!("not an IP route address: {other:?}"),
    };
    let mut routes: Vec<Route> = messages
        .into_iter()
        .filter(|m| m.header.table == RouteHeader::RT_TABLE_MAIN)
        .map(|message| {
            let unspecified: IpAddr =
                if message.header.address_family == rtnetlink::packet_route::AddressFamily::Inet {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                };
            let mut route = Route {
                destination: format!("{unspecified}/{}", message.header.destination_prefix_length),
                gateway: None,
                device: 0,
                metric: None,
                link_scope: message.header.scope == RouteScope::Link,
            };
            for attribute in &message.attributes {
                match attribute {
                    RouteAttribute::Destination(d) => {
                        route.destination =
                            format!("{}/{}", ip(d), message.header.destination_prefix_length);
                    }
                    RouteAttribute::Gateway(g) => route.gateway = Some(ip(g)),
                    RouteAttribute::Oif(index) => route.device = *index,
                    RouteAttribute::Priority(metric) => route.metric = Some(*metric),
                    _ => {}
                }
            }
            route
        })
        .collect();
    routes.sort();
    routes
}

fn net(address: &str, prefix_len: u32) -> IpNetwork {
    IpNetwork {
        address: address.into(),
        prefix_len,
    }
}

fn interface(name: &str, mac: [u8; 6], mtu: u32, addresses: Vec<IpNetwork>) -> NetworkInterface {
    NetworkInterface {
        name: name.into(),
        mac: mac.to_vec().into(),
        mtu,
        addresses,
    }
}

fn route(destination: IpNetwork, gateway: &str, device: &str, metric: u32) -> NetworkRoute {
    NetworkRoute {
        destination: Some(destination),
        gateway: gateway.into(),
        device: device.into(),
        metric,
    }
}

/// What the client of `ConfigureNetwork` would see for `error`.
fn status(error: NetworkError) -> tonic::Status {
    AgentError::from(error).into()
}

const MAC0: [u8; 6] = [0x0a, 0x58, 0xc0, 0x00, 0x02, 0x05];
const MAC1: [u8; 6] = [0x0a, 0x58, 0xc6, 0x33, 0x64, 0x07];

#[test]
fn two_pod_interfaces_get_their_names_macs_mtus_addresses_and_routes() {
    in_own_netns(|handle| async move {
        let first = veth(&handle, "veth-a", "peer-a").await;
        let second = veth(&handle, "veth-b", "peer-b").await;
        assert!(!link_by_name(&handle, "lo").await.unwrap().up);
        let request = ConfigureNetworkRequest {
            interfaces: vec![
                interface(
                    "eth0",
                    MAC0,
                    1450,
                    vec![net("192.0.2.5", 24), net("2001:db8:1::5", 64)],
                ),
                interface("net1", MAC1, 9000, vec![net("198.51.100.7", 24)]),
            ],
            routes: vec![
                route(net("0.0.0.0", 0), "192.0.2.1", "eth0", 0),
                route(net("::", 0), "2001:db8:1::1", "eth0", 50),
                // Via a gateway only the on-link route after it reaches
                // (as Calico does): on-link routes must go in first.
                route(net("203.0.113.0", 24), "169.254.1.1", "net1", 100),
                route(net("169.254.1.1", 32), "", "net1", 0),
            ],
        };

        configure_links(&request, &[first.clone(), second.clone()], true)
            .await
            .unwrap();

        let eth0 = link_by_index(&handle, first.index).await;
        assert_eq!(eth0.name, "eth0");
        assert_eq!(eth0.mac, MAC0);
        assert_eq!(eth0.mtu, 1450);
        assert!(eth0.up);
        let net1 = link_by_index(&handle, second.index).await;
        assert_eq!(net1.name, "net1");
        assert_eq!(net1.mac, MAC1);
        assert_eq!(net1.mtu, 9000);
        assert!(net1.up);
        assert!(link_by_name(&handle, "lo").await.unwrap().up, "lo is up");
        assert!(link_by_name(&handle, "veth-a").await.is_none());

        // IPv6 usable at once: not tentative (no DAD).
        assert_eq!(
            addresses(&handle, first.index).await,
            [
                ("192.0.2.5/24".to_owned(), false),
                ("2001:db8:1::5/64".to_owned(), false),
            ]
        );
        assert_eq!(
            addresses(&handle, second.index).await,
            [("198.51.100.7/24".to_owned(), false)]
        );

        let routes = routes(&handle).await;
        let expected = [
            Route {
                destination: "0.0.0.0/0".into(),
                gateway: Some("192.0.2.1".parse().unwrap()),
                device: first.index,
                metric: None,
                link_scope: false,
            },
            Route {
                destination: "203.0.113.0/24".into(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                device: second.index,
                metric: Some(100),
                link_scope: false,
            },
            Route {
                destination: "169.254.1.1/32".into(),
                gateway: None,
                device: second.index,
                metric: None,
                link_scope: true,
            },
            Route {
                destination: "::/0".into(),
                gateway: Some("2001:db8:1::1".parse().unwrap()),
                device: first.index,
                metric: Some(50),
                link_scope: false,
            },
        ];
        for route in &expected {
            assert!(routes.contains(route), "{route:?} not in {routes:#?}");
        }
        // The subnets the addresses imply, from the kernel.
        for (subnet, device) in [
            ("192.0.2.0/24", first.index),
            ("198.51.100.0/24", second.index),
            ("2001:db8:1::/64", first.index),
        ] {
            assert!(
                routes
                    .iter()
                    .any(|r| r.destination == subnet && r.device == device && r.gateway.is_none()),
                "no {subnet} route on link {device} in {routes:#?}"
            );
        }
    });
}

#[test]
fn fewer_links_than_interfaces_is_a_failed_precondition_and_renames_nothing() {
    in_own_netns(|handle| async move {
        let only = veth(&handle, "veth-a", "peer-a").await;
        let request = ConfigureNetworkRequest {
            interfaces: vec![
                interface("eth0", MAC0, 1450, vec![net("192.0.2.5", 24)]),
                interface("eth1", MAC1, 1450, vec![net("198.51.100.7", 24)]),
            ],
            routes: vec![],
        };

        let error = configure_links(&request, std::slice::from_ref(&only), true)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                NetworkError::Apply(ApplyError::TooFewLinks {
                    interfaces: 2,
                    links: 1
                })
            ),
            "{error:?}"
        );
        let status = status(error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "configure network: the request has 2 interfaces, the guest only 1 network devices"
        );

        let link = link_by_index(&handle, only.index).await;
        assert_eq!(link.name, "veth-a");
        assert_ne!(link.mac, MAC0);
        assert_eq!(link.mtu, 1500);
        assert!(!link.up);
        assert_eq!(addresses(&handle, only.index).await, []);
        assert!(link_by_name(&handle, "eth0").await.is_none());
        assert!(
            !link_by_name(&handle, "lo").await.unwrap().up,
            "lo untouched"
        );
    });
}

#[test]
fn ipv6_in_a_guest_without_it_is_a_failed_precondition_naming_the_address() {
    in_own_netns(|handle| async move {
        let link = veth(&handle, "veth-a", "peer-a").await;
        let request = ConfigureNetworkRequest {
            interfaces: vec![interface(
                "eth0",
                MAC0,
                1450,
                vec![net("192.0.2.5", 24), net("2001:db8:1::5", 64)],
            )],
            routes: vec![],
        };

        // As in a guest kernel built without IPv6 (no /proc/sys/net/ipv6).
        let status = status(
            configure_links(&request, std::slice::from_ref(&link), false)
                .await
                .unwrap_err(),
        );
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "configure network: interfaces[0].addresses[1] 2001:db8:1::5/64 is IPv6, \
             and the guest has no IPv6"
        );
        assert_eq!(link_by_index(&handle, link.index).await.name, "veth-a");
        assert_eq!(addresses(&handle, link.index).await, []);
    });
}

#[test]
fn links_can_swap_names() {
    in_own_netns(|handle| async move {
        // The first device is called eth1 now, the second eth0.
        let first = veth(&handle, "eth1", "peer-a").await;
        let second = veth(&handle, "eth0", "peer-b").await;
        let request = ConfigureNetworkRequest {
            interfaces: vec![
                interface("eth0", MAC0, 1500, vec![net("192.0.2.5", 24)]),
                interface("eth1", MAC1, 1500, vec![net("198.51.100.7", 24)]),
            ],
            routes: vec![],
        };

        configure_links(&request, &[first.clone(), second.clone()], true)
            .await
            .unwrap();

        assert_eq!(link_by_index(&handle, first.index).await.name, "eth0");
        assert_eq!(link_by_index(&handle, second.index).await.name, "eth1");
        assert_eq!(link_by_index(&handle, first.index).await.mac, MAC0);
        assert_eq!(
            addresses(&handle, second.index).await,
            [("198.51.100.7/24".to_owned(), false)]
        );
    });
}

#[test]
fn a_name_another_link_holds_is_refused_before_anything_changes() {
    in_own_netns(|handle| async move {
        let link = veth(&handle, "veth-a", "peer-a").await;
        let peer = link_by_name(&handle, "peer-a").await.unwrap();
        let request = ConfigureNetworkRequest {
            interfaces: vec![interface("peer-a", MAC0, 1450, vec![])],
            routes: vec![],
        };

        let status = status(
            configure_links(&request, std::slice::from_ref(&link), true)
                .await
                .unwrap_err(),
        );
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            format!(
                "configure network: interfaces[0].name: \"peer-a\" is the name of another \
                 link of the guest (index {})",
                peer.index
            )
        );
        assert_eq!(link_by_index(&handle, link.index).await.name, "veth-a");
        assert_eq!(link_by_index(&handle, link.index).await.mtu, 1500);
    });
}

#[test]
fn an_unreachable_gateway_names_the_route_and_the_kernels_answer() {
    in_own_netns(|handle| async move {
        let link = veth(&handle, "veth-a", "peer-a").await;
        let request = ConfigureNetworkRequest {
            interfaces: vec![interface("eth0", MAC0, 1450, vec![net("192.0.2.5", 24)])],
            routes: vec![route(net("0.0.0.0", 0), "203.0.113.1", "eth0", 0)],
        };

        let status = status(configure_links(&request, &[link], true).await.unwrap_err());
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "configure network: add route 0.0.0.0/0 via 203.0.113.1 dev eth0: \
             ENETUNREACH: Network is unreachable"
        );
    });
}
