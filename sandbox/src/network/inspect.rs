//! What the pod's CNI plugin set up in its network namespace, read back as
//! the guest is to have it.
//!
//! The guest's interfaces take the names, MACs, MTUs and addresses of the
//! pod's interfaces, and the guest gets the pod's routes, so the workload
//! sees the network the CNI plugin made while the host side only relays
//! frames ([`super::tc_redirect`]). The result is kept in the agent API's
//! own messages ([`ConfigureNetworkRequest`] and its parts), so that it is
//! translated once, here.
//!
//! What is taken, and what is left:
//! - Links: every link that is up, in interface index order, except `lo`
//!   and the VMM's own taps (`vmtapN`, should the namespace be read again
//!   while a VM runs). Links that are down are not the pod's network (a
//!   CNI plugin brings its interfaces up; the kernel's fallback tunnel
//!   devices such as `sit0` or `tunl0` stay down) and are skipped. A link
//!   that is up must be an Ethernet link of kind `veth`, `macvlan` or
//!   `ipvlan` (what CNI plugins give a pod; frames of each can be
//!   redirected both ways with tc) with ARP on (`ipvlan` in L3 mode has it
//!   off: the guest could not resolve its neighbours), a unicast MAC and an
//!   MTU of 68..=65535. Anything else that is up (a physical device or VF,
//!   a bridge, a tunnel, someone's tap) is refused with an error naming it,
//!   rather than giving the pod a network that lacks an interface.
//! - Addresses: all IPv4 addresses of those links, and their IPv6
//!   addresses except link-local ones (`fe80::/10`: the guest's kernel
//!   makes its own for each interface).
//! - Routes: the main table's, except those the kernel adds (`proto
//!   kernel`: an address's subnet, the IPv6 link-local prefix) and those to
//!   IPv6 link-local or multicast destinations. Each keeps its destination,
//!   gateway, output interface (by name) and metric; a preferred source
//!   (`src`) is dropped. Routes through a link that is not taken are
//!   skipped with a warning (the guest has no such interface); routes the
//!   API cannot express are refused with an error: non-unicast ones
//!   (blackhole, unreachable…), multipath ones, source-specific ones, and
//!   those with a gateway of another address family (`via inet6`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};
use vm_config::{MacAddr, NetConfig, MAX_VIRTIO_DEVICES};
use vmrun_agent::client::network::{
    ConfigureNetworkRequest, IpNetwork, NetworkInterface, NetworkRoute,
};

use super::error::NetworkError;
use super::netns::NetNs;
use super::tc_redirect::{is_vmrun_tap, tap_name};

/// The pod's network as the guest is to have it: its interfaces (in the
/// VM's network device order) and routes, and the namespace they are in
/// (held open, and so alive, while this lives).
#[derive(Clone, Debug)]
pub struct PodNetwork {
    netns: NetNs,
    interfaces: Vec<PodInterface>,
    routes: Vec<NetworkRoute>,
}

/// One interface of the pod, with what the host needs to connect it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInterface {
    index: u32,
    tap: String,
    mac: MacAddr,
    mtu: u16,
    guest: NetworkInterface,
}

impl PodInterface {
    /// Its name in the pod's namespace and in the guest (`eth0`).
    pub fn name(&self) -> &str {
        &self.guest.name
    }

    /// Its interface index in the pod's namespace (tc names it by this).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The tap the VMM opens for it in the pod's namespace (`vmtap0` for
    /// the first interface, and so on).
    pub fn tap(&self) -> &str {
        &self.tap
    }

    /// Its MAC address, which the guest's interface takes.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Its MTU, which the tap and the guest's interface take.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The guest interface's configuration (name, MAC, MTU, addresses).
    pub fn guest(&self) -> &NetworkInterface {
        &self.guest
    }
}

/// What is read from the namespace, before it is judged.
struct Dump {
    links: Vec<LinkMessage>,
    addresses: Vec<AddressMessage>,
    routes: Vec<RouteMessage>,
}

impl PodNetwork {
    /// Reads the pod's network from the namespace file at `netns_path`
    /// (see the module docs for what is taken), on a thread inside it.
    pub async fn read(netns_path: impl AsRef<Path>) -> Result<PodNetwork, NetworkError> {
        let netns = NetNs::open(netns_path)?;
        let path = netns.path().to_path_buf();
        let dump = netns.run(move |handle| dump(handle, path)).await?;
        let interfaces = interfaces_of(netns.path(), &dump.links, &dump.addresses)?;
        let routes = routes_of(netns.path(), &dump.routes, &interfaces)?;
        tracing::debug!(
            netns = %netns.path().display(),
            interfaces = ?interfaces.iter().map(PodInterface::name).collect::<Vec<_>>(),
            routes = routes.len(),
            "read the pod network"
        );
        Ok(PodNetwork {
            netns,
            interfaces,
            routes,
        })
    }

    /// The namespace it was read from (held open).
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// Its interfaces, in the VM's network device order.
    pub fn interfaces(&self) -> &[PodInterface] {
        &self.interfaces
    }

    /// Its routes, those without a gateway first (so that a gateway is
    /// reachable by the time a route through it is added).
    pub fn routes(&self) -> &[NetworkRoute] {
        &self.routes
    }

    /// The guest agent's `ConfigureNetwork` request that gives the guest
    /// this network.
    pub fn request(&self) -> ConfigureNetworkRequest {
        ConfigureNetworkRequest {
            interfaces: self.interfaces.iter().map(|i| i.guest.clone()).collect(),
            routes: self.routes.clone(),
        }
    }

    /// The VM's network devices for it, in order: each on its interface's
    /// tap, with its MAC and MTU.
    pub fn vm_nets(&self) -> Vec<NetConfig> {
        self.interfaces
            .iter()
            .map(|i| NetConfig {
                tap: i.tap.clone(),
                mac: Some(i.mac),
                mtu: i.mtu,
                // The VMM makes it in the pod's namespace; it goes with
                // the VMM, whatever ends it.
                create: true,
                // No rate limit: nothing a pod is made from asks for one.
                ..NetConfig::default()
            })
            .collect()
    }
}

/// Dumps the links, addresses and routes (both families) of the namespace
/// the handle's socket is in.
async fn dump(handle: Handle, netns: PathBuf) -> Result<Dump, NetworkError> {
    let links = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(NetworkError::netlink(&netns, "dump", "links"))?;
    let addresses = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(NetworkError::netlink(&netns, "dump", "addresses"))?;
    let mut routes: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(NetworkError::netlink(&netns, "dump", "IPv4 routes"))?;
    let routes_v6: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(NetworkError::netlink(&netns, "dump", "IPv6 routes"))?;
    routes.extend(routes_v6);
    Ok(Dump {
        links,
        addresses,
        routes,
    })
}

/// The link's facts the guest needs, if it is one of the pod's.
struct LinkFacts {
    name: String,
    mac: MacAddr,
    mtu: u16,
}

/// The pod's interfaces among `links`, in index order, with their
/// addresses.
fn interfaces_of(
    netns: &Path,
    links: &[LinkMessage],
    addresses: &[AddressMessage],
) -> Result<Vec<PodInterface>, NetworkError> {
    let mut links: Vec<&LinkMessage> = links.iter().collect();
    links.sort_by_key(|link| link.header.index);
    let mut interfaces = Vec::new();
    for link in links {
        let Some(facts) = pod_link(netns, link)? else {
            continue;
        };
        let index = link.header.index;
        interfaces.push(PodInterface {
            index,
            tap: tap_name(interfaces.len()),
            mac: facts.mac,
            mtu: facts.mtu,
            guest: NetworkInterface {
                name: facts.name,
                mac: facts.mac.0.to_vec().into(),
                mtu: u32::from(facts.mtu),
                addresses: addresses_of(index, addresses),
            },
        });
    }
    if interfaces.len() > MAX_VIRTIO_DEVICES {
        let names: Vec<&str> = interfaces.iter().map(PodInterface::name).collect();
        return Err(NetworkError::UnsupportedLink {
            netns: netns.to_path_buf(),
            link: names.join(", "),
            why: format!(
                "{} interfaces, more than a VM can have ({MAX_VIRTIO_DEVICES})",
                names.len()
            ),
        });
    }
    Ok(interfaces)
}

/// Judges one link (see the module docs): `None` if it is not the pod's,
/// an error if it is but the guest cannot have it.
fn pod_link(netns: &Path, link: &LinkMessage) -> Result<Option<LinkFacts>, NetworkError> {
    let mut name = None;
    let mut kind = None;
    let mut mac = None;
    let mut mtu = None;
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(a) => mac = Some(a.clone()),
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.iter().find_map(|info| match info {
                    LinkInfo::Kind(k) => Some(k.clone()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    let name = name.unwrap_or_else(|| format!("#{}", link.header.index));
    let flags = link.header.flags;
    let skip = |why: &str| {
        tracing::debug!(netns = %netns.display(), link = %name, "not a pod interface: {why}");
        Ok(None)
    };
    if flags.contains(LinkFlags::Loopback) {
        return skip("loopback");
    }
    if kind == Some(InfoKind::Tun) && is_vmrun_tap(&name) {
        return skip("a VMM's tap");
    }
    if !flags.contains(LinkFlags::Up) {
        return skip("down");
    }
    let refuse = |why: String| {
        Err(NetworkError::UnsupportedLink {
            netns: netns.to_path_buf(),
            link: name.clone(),
            why,
        })
    };
    match &kind {
        Some(InfoKind::Veth | InfoKind::MacVlan | InfoKind::IpVlan) => {}
        Some(other) => {
            return refuse(format!(
                "is a {other} link; a pod's interfaces must be veth, macvlan or ipvlan"
            ))
        }
        None => {
            return refuse(
                "has no link kind (a physical device?); a pod's interfaces must be \
                 veth, macvlan or ipvlan"
                    .to_string(),
            )
        }
    }
    if link.header.link_layer_type != LinkLayerType::Ether {
        return refuse(format!(
            "is not an Ethernet link ({:?})",
            link.header.link_layer_type
        ));
    }
    if flags.contains(LinkFlags::Noarp) {
        return refuse(
            "has ARP off (ipvlan in L3 mode?); the guest must resolve its neighbours".into(),
        );
    }
    let mac = match mac.as_deref().map(<[u8; 6]>::try_from) {
        Some(Ok(bytes)) if MacAddr(bytes).is_unicast() => MacAddr(bytes),
        Some(Ok(bytes)) => return refuse(format!("MAC {} is not unicast", MacAddr(bytes))),
        _ => return refuse(format!("has no 6-byte MAC address ({mac:?})")),
    };
    let mtu = match mtu {
        Some(mtu) => match u16::try_from(mtu) {
            Ok(mtu) if mtu >= vm_config::net::MIN_MTU => mtu,
            _ => return refuse(format!("MTU {mtu} is not in 68..=65535")),
        },
        None => return refuse("has no MTU".to_string()),
    };
    Ok(Some(LinkFacts { name, mac, mtu }))
}

/// The addresses of the link `index` the guest gets: all IPv4 ones, the
/// IPv6 ones but link-local.
fn addresses_of(index: u32, addresses: &[AddressMessage]) -> Vec<IpNetwork> {
    addresses
        .iter()
        .filter(|a| a.header.index == index)
        .filter_map(|a| {
            let (mut address, mut local) = (None, None);
            for attribute in &a.attributes {
                match attribute {
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    _ => {}
                }
            }
            // IFA_LOCAL is an IPv4 interface's own address (IFA_ADDRESS
            // its peer's, on a point-to-point link); IPv6 has only
            // IFA_ADDRESS.
            let ip = local.or(address)?;
            match ip {
                IpAddr::V6(v6) if is_link_local_v6(&v6) => None,
                _ => Some(IpNetwork {
                    address: ip.to_string(),
                    prefix_len: u32::from(a.header.prefix_len),
                }),
            }
        })
        .collect()
}

fn is_link_local_v6(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// The routes of the main table the guest gets (see the module docs),
/// those without a gateway first.
fn routes_of(
    netns: &Path,
    routes: &[RouteMessage],
    interfaces: &[PodInterface],
) -> Result<Vec<NetworkRoute>, NetworkError> {
    let mut taken = Vec::new();
    for route in routes {
        if let Some(route) = guest_route(netns, route, interfaces)? {
            taken.push(route);
        }
    }
    taken.sort_by_key(|route| !route.gateway.is_empty());
    Ok(taken)
}

/// Judges one route: `None` if the guest does not need it, an error if it
/// cannot be given.
fn guest_route(
    netns: &Path,
    route: &RouteMessage,
    interfaces: &[PodInterface],
) -> Result<Option<NetworkRoute>, NetworkError> {
    let header = &route.header;
    let mut table = u32::from(header.table);
    let (mut destination, mut gateway, mut oif, mut metric) = (None, None, None, 0);
    let mut other_family_gateway = false;
    let mut multipath = false;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => destination = ip_of(d),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::Via(_) => other_family_gateway = true,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::MultiPath(_) => multipath = true,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || header.protocol == RouteProtocol::Kernel {
        return Ok(None);
    }
    let destination = match (destination, header.address_family) {
        (Some(ip), _) => ip,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (None, _) => return Ok(None),
    };
    if let IpAddr::V6(v6) = destination {
        if is_link_local_v6(&v6) || v6.is_multicast() {
            return Ok(None);
        }
    }
    let device = oif.and_then(|index| interfaces.iter().find(|i| i.index == index));
    let text = route_text(
        destination,
        header.destination_prefix_length,
        gateway,
        device.map(PodInterface::name),
    );
    let refuse = |why: &str| {
        Err(NetworkError::UnsupportedRoute {
            netns: netns.to_path_buf(),
            route: text.clone(),
            why: why.to_string(),
        })
    };
    if header.kind != RouteType::Unicast {
        return refuse(&format!(
            "is of type {:?}; only unicast routes can be given to the guest",
            header.kind
        ));
    }
    if multipath {
        return refuse("is a multipath route; the guest gets single-path routes only");
    }
    if header.source_prefix_length != 0 {
        return refuse("is source-specific (from …); the guest cannot be given that");
    }
    if other_family_gateway {
        return refuse("has a gateway of another address family; the guest cannot be given that");
    }
    let Some(device) = device else {
        if oif.is_none() {
            return refuse("has no output interface");
        }
        tracing::warn!(
            netns = %netns.display(),
            route = %text,
            "route skipped: its interface is not one of the pod's"
        );
        return Ok(None);
    };
    Ok(Some(NetworkRoute {
        destination: Some(IpNetwork {
            address: destination.to_string(),
            prefix_len: u32::from(header.destination_prefix_length),
        }),
        gateway: gateway.map(|g| g.to_string()).unwrap_or_default(),
        device: device.name().to_string(),
        metric,
    }))
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A route as `ip route` would show it, for errors and logs.
fn route_text(
    destination: IpAddr,
    prefix_len: u8,
    gateway: Option<IpAddr>,
    device: Option<&str>,
) -> String {
    let mut text = if prefix_len == 0 && destination.is_unspecified() {
        "default".to_string()
    } else {
        format!("{destination}/{prefix_len}")
    };
    if let Some(gateway) = gateway {
        text += &format!(" via {gateway}");
    }
    if let Some(device) = device {
        text += &format!(" dev {device}");
    }
    text
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::route::RouteNextHop;

    use super::*;

    const NETNS: &str = "/run/netns/test";

    fn link(index: u32, name: &str, kind: Option<InfoKind>, flags: LinkFlags) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = flags;
        link.header.link_layer_type = LinkLayerType::Ether;
        link.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, index as u8]),
            LinkAttribute::Mtu(1500),
        ];
        if let Some(kind) = kind {
            link.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
        }
        link
    }

    fn up() -> LinkFlags {
        LinkFlags::Up | LinkFlags::Broadcast | LinkFlags::Multicast
    }

    fn address(index: u32, ip: &str, prefix_len: u8) -> AddressMessage {
        let ip: IpAddr = ip.parse().unwrap();
        let mut address = AddressMessage::default();
        address.header.index = index;
        address.header.prefix_len = prefix_len;
        address.header.family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        address.attributes = vec![AddressAttribute::Address(ip)];
        if ip.is_ipv4() {
            address.attributes.push(AddressAttribute::Local(ip));
        }
        address
    }

    fn read(links: &[LinkMessage], addresses: &[AddressMessage]) -> Vec<PodInterface> {
        interfaces_of(Path::new(NETNS), links, addresses).unwrap()
    }

    #[test]
    fn links_are_taken_in_index_order_and_lo_down_and_taps_are_skipped() {
        let mut lo = link(1, "lo", None, up() | LinkFlags::Loopback);
        lo.header.link_layer_type = LinkLayerType::Loopback;
        let links = [
            link(7, "net1", Some(InfoKind::MacVlan), up()),
            lo,
            link(3, "sit0", Some(InfoKind::SitTun), LinkFlags::empty()),
            link(5, "eth0", Some(InfoKind::Veth), up()),
            link(9, "vmtap0", Some(InfoKind::Tun), up()),
            link(11, "net2", Some(InfoKind::IpVlan), up()),
        ];
        let addresses = [
            address(5, "10.1.0.5", 16),
            address(5, "fe80::1", 64),
            address(5, "fd00::5", 64),
            address(7, "192.0.2.7", 24),
        ];
        let interfaces = read(&links, &addresses);
        let names: Vec<&str> = interfaces.iter().map(PodInterface::name).collect();
        assert_eq!(names, ["eth0", "net1", "net2"]);
        let taps: Vec<&str> = interfaces.iter().map(PodInterface::tap).collect();
        assert_eq!(taps, ["vmtap0", "vmtap1", "vmtap2"]);
        let eth0 = &interfaces[0];
        assert_eq!(eth0.index(), 5);
        assert_eq!(eth0.mac(), MacAddr([2, 0, 0, 0, 0, 5]));
        assert_eq!(eth0.guest().mac[..], [2, 0, 0, 0, 0, 5]);
        assert_eq!((eth0.mtu(), eth0.guest().mtu), (1500, 1500));
        let ips: Vec<(&str, u32)> = eth0
            .guest()
            .addresses
            .iter()
            .map(|a| (a.address.as_str(), a.prefix_len))
            .collect();
        assert_eq!(ips, [("10.1.0.5", 16), ("fd00::5", 64)]);
        assert!(interfaces[2].guest().addresses.is_empty());
    }

    #[test]
    fn links_the_guest_cannot_have_are_refused_by_name() {
        let noarp = link(4, "ipvl3", Some(InfoKind::IpVlan), up() | LinkFlags::Noarp);
        let mut multicast_mac = link(4, "eth0", Some(InfoKind::Veth), up());
        multicast_mac.attributes[1] = LinkAttribute::Address(vec![1, 0, 0, 0, 0, 1]);
        let mut jumbo = link(4, "eth0", Some(InfoKind::Veth), up());
        jumbo.attributes[2] = LinkAttribute::Mtu(65536);
        let cases = [
            (
                link(4, "br0", Some(InfoKind::Bridge), up()),
                "link br0: is a bridge link",
            ),
            (link(4, "ens5", None, up()), "link ens5: has no link kind"),
            (noarp, "link ipvl3: has ARP off"),
            (multicast_mac, "MAC 01:00:00:00:00:01 is not unicast"),
            (jumbo, "link eth0: MTU 65536 is not in 68..=65535"),
        ];
        for (link, message) in cases {
            let err = interfaces_of(Path::new(NETNS), &[link], &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("network namespace /run/netns/test: ") && err.contains(message),
                "{err:?} lacks {message:?}"
            );
        }
    }

    fn route(destination: Option<(&str, u8)>, gateway: Option<&str>, oif: u32) -> RouteMessage {
        let mut route = RouteMessageBuilder::<IpAddr>::new().build();
        route.header.table = RouteHeader::RT_TABLE_MAIN;
        route.header.kind = RouteType::Unicast;
        route.header.protocol = RouteProtocol::Boot;
        route.header.address_family = AddressFamily::Inet;
        if let Some((ip, len)) = destination {
            let ip: IpAddr = ip.parse().unwrap();
            if ip.is_ipv6() {
                route.header.address_family = AddressFamily::Inet6;
            }
            route.header.destination_prefix_length = len;
            route
                .attributes
                .push(RouteAttribute::Destination(ip.into()));
        }
        if let Some(ip) = gateway {
            let ip: IpAddr = ip.parse().unwrap();
            if ip.is_ipv6() {
                route.header.address_family = AddressFamily::Inet6;
            }
            route.attributes.push(RouteAttribute::Gateway(ip.into()));
        }
        route.attributes.push(RouteAttribute::Oif(oif));
        route
    }

    #[test]
    fn routes_keep_gateway_device_and_metric_and_drop_the_kernels() {
        let interfaces = read(&[link(5, "eth0", Some(InfoKind::Veth), up())], &[]);
        let mut kernel = route(Some(("10.1.0.0", 16)), None, 5);
        kernel.header.protocol = RouteProtocol::Kernel;
        let mut metric = route(Some(("fd01::", 48)), Some("fd00::1"), 5);
        metric.attributes.push(RouteAttribute::Priority(1024));
        let mut local_table = route(Some(("10.9.0.0", 16)), None, 5);
        local_table.attributes.push(RouteAttribute::Table(255));
        let routes = [
            route(None, Some("169.254.1.1"), 5),
            kernel,
            route(Some(("169.254.1.1", 32)), None, 5),
            metric,
            route(Some(("fe80::", 64)), None, 5),
            route(Some(("ff02::", 16)), None, 5),
            local_table,
            route(Some(("10.8.0.0", 16)), None, 99),
        ];
        let taken = routes_of(Path::new(NETNS), &routes, &interfaces).unwrap();
        let text: Vec<String> = taken
            .iter()
            .map(|r| {
                let d = r.destination.as_ref().unwrap();
                format!(
                    "{}/{} {} {} {}",
                    d.address, d.prefix_len, r.gateway, r.device, r.metric
                )
            })
            .collect();
        assert_eq!(
            text,
            [
                "169.254.1.1/32  eth0 0",
                "0.0.0.0/0 169.254.1.1 eth0 0",
                "fd01::/48 fd00::1 eth0 1024",
            ]
        );
    }

    #[test]
    fn routes_the_api_cannot_express_are_refused() {
        let interfaces = read(&[link(5, "eth0", Some(InfoKind::Veth), up())], &[]);
        let mut blackhole = route(Some(("10.7.0.0", 16)), None, 5);
        blackhole.header.kind = RouteType::BlackHole;
        let mut multipath = route(None, None, 5);
        multipath.attributes = vec![RouteAttribute::MultiPath(vec![RouteNextHop::default()])];
        let mut source = route(Some(("fd02::", 64)), Some("fd00::1"), 5);
        source.header.source_prefix_length = 64;
        let cases = [
            (
                blackhole,
                "route 10.7.0.0/16 dev eth0: is of type BlackHole",
            ),
            (multipath, "route default: is a multipath route"),
            (
                source,
                "route fd02::/64 via fd00::1 dev eth0: is source-specific",
            ),
        ];
        for (route, message) in cases {
            let err = routes_of(Path::new(NETNS), &[route], &interfaces)
                .unwrap_err()
                .to_string();
            assert!(err.contains(message), "{err:?} lacks {message:?}");
        }
    }
}
