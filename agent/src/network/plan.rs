//! Checking a `ConfigureNetworkRequest` and turning it into a typed plan.
//!
//! Pure: nothing here touches the guest. Every rule of the API's contract
//! is checked before the first netlink request, so a malformed request
//! leaves the guest as it was, and the error names the field
//! (`interfaces[0].mac: 5 bytes, want 6`) so the host side can tell which of
//! its CNI results was wrong.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;

use crate::proto::{ConfigureNetworkRequest, IpNetwork, NetworkInterface, NetworkRoute};

/// The longest interface name the kernel takes (`IFNAMSIZ` less the NUL).
pub const MAX_NAME_BYTES: usize = 15;
/// The MTUs the API accepts (IPv4's minimum to the largest a `u16` holds).
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// A request that breaks the API's contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `field` is the request's path to the bad value, e.g.
    /// `interfaces[1].addresses[0].prefix_len`.
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PlanError {
    PlanError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An address with its prefix length, checked against its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    address: IpAddr,
    prefix_len: u8,
}

impl IpPrefix {
    /// `None` if `prefix_len` is too long for the address's family.
    pub fn new(address: IpAddr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= max_prefix_len(address)).then_some(Self {
            address,
            prefix_len,
        })
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The network this prefix covers: the address with its host bits
    /// cleared.
    pub fn network(&self) -> IpAddr {
        match self.address {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

fn max_prefix_len(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn family(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// One guest interface as it is to end up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfacePlan {
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u32,
    pub addresses: Vec<IpPrefix>,
}

/// One route to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// The network it leads to (host bits clear).
    pub destination: IpPrefix,
    /// The next hop, of the destination's family; `None`: on-link.
    pub gateway: Option<IpAddr>,
    /// Its interface: a position in [`NetworkPlan::interfaces`].
    pub interface: usize,
    /// `None`: the kernel's default priority.
    pub metric: Option<NonZeroU32>,
}

/// A checked request: what the netlink side carries out, and all it reads.
///
/// Only [`NetworkPlan::from_request`] makes one, so every route's
/// `interface` is a valid position and every name is unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    interfaces: Vec<InterfacePlan>,
    routes: Vec<RoutePlan>,
}

/// Something in a plan that needs IPv6 in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Use {
    /// The request's field, e.g. `interfaces[0].addresses[1]`.
    pub field: String,
    /// The address or route destination there.
    pub prefix: IpPrefix,
}

impl NetworkPlan {
    /// Checks every field of `request` against the API's contract.
    pub fn from_request(request: &ConfigureNetworkRequest) -> Result<Self, PlanError> {
        let mut names = HashSet::new();
        let mut interfaces = Vec::with_capacity(request.interfaces.len());
        for (i, interface) in request.interfaces.iter().enumerate() {
            let field = format!("interfaces[{i}]");
            let plan = interface_plan(&field, interface)?;
            if !names.insert(plan.name.clone()) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("{:?} is also the name of an earlier interface", plan.name),
                ));
            }
            interfaces.push(plan);
        }
        let mut routes: Vec<RoutePlan> = Vec::with_capacity(request.routes.len());
        for (i, route) in request.routes.iter().enumerate() {
            let field = format!("routes[{i}]");
            let plan = route_plan(&field, route, &interfaces)?;
            // The kernel keys a route by destination and metric: a second
            // one would fail (or silently replace the first).
            if let Some(earlier) = routes
                .iter()
                .position(|r| r.destination == plan.destination && r.metric == plan.metric)
            {
                return Err(invalid(
                    field,
                    format!(
                        "same destination ({}) and metric as routes[{earlier}]",
                        plan.destination
                    ),
                ));
            }
            routes.push(plan);
        }
        Ok(Self { interfaces, routes })
    }

    /// In the request's order, which is the guest's link order.
    pub fn interfaces(&self) -> &[InterfacePlan] {
        &self.interfaces
    }

    /// In the request's order.
    pub fn routes(&self) -> &[RoutePlan] {
        &self.routes
    }

    /// The routes in the order they can be added: on-link routes first,
    /// since a gateway must be reachable when its route is added and an
    /// on-link route may be what makes it so (a /32 to a gateway outside
    /// every subnet, as some CNI plugins do); otherwise the request's order.
    pub fn routes_in_order(&self) -> impl Iterator<Item = &RoutePlan> {
        let on_link = self.routes.iter().filter(|r| r.gateway.is_none());
        let via_gateway = self.routes.iter().filter(|r| r.gateway.is_some());
        on_link.chain(via_gateway)
    }

    /// The first address or route that needs IPv6, to name it when the
    /// guest has none.
    pub fn first_ipv6_use(&self) -> Option<Ipv6Use> {
        let addresses = self
            .interfaces
            .iter()
            .enumerate()
            .flat_map(|(i, interface)| {
                interface
                    .addresses
                    .iter()
                    .enumerate()
                    .map(move |(j, prefix)| (format!("interfaces[{i}].addresses[{j}]"), *prefix))
            });
        let routes = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| (format!("routes[{i}].destination"), route.destination));
        addresses
            .chain(routes)
            .find(|(_, prefix)| prefix.address().is_ipv6())
            .map(|(field, prefix)| Ipv6Use { field, prefix })
    }

    /// How a route reads in a log or error, `ip route` style.
    pub fn describe_route(&self, route: &RoutePlan) -> String {
        let mut text = route.destination.to_string();
        if let Some(gateway) = route.gateway {
            text.push_str(&format!(" via {gateway}"));
        }
        if let Some(interface) = self.interfaces.get(route.interface) {
            text.push_str(&format!(" dev {}", interface.name));
        }
        if let Some(metric) = route.metric {
            text.push_str(&format!(" metric {metric}"));
        }
        text
    }
}

fn interface_plan(field: &str, interface: &NetworkInterface) -> Result<InterfacePlan, PlanError> {
    check_name(&format!("{field}.name"), &interface.name)?;
    let mac = mac_addr(&format!("{field}.mac"), &interface.mac)?;
    if !MTU_RANGE.contains(&interface.mtu) {
        return Err(invalid(
            format!("{field}.mtu"),
            format!(
                "{} is outside {}..={}",
                interface.mtu,
                MTU_RANGE.start(),
                MTU_RANGE.end()
            ),
        ));
    }
    let mut addresses: Vec<IpPrefix> = Vec::with_capacity(interface.addresses.len());
    for (j, address) in interface.addresses.iter().enumerate() {
        let field = format!("{field}.addresses[{j}]");
        let prefix = ip_prefix(&field, address)?;
        let host = prefix.address();
        if host.is_unspecified() || host.is_multicast() {
            return Err(invalid(
                format!("{field}.address"),
                format!("{host} cannot be an interface's address"),
            ));
        }
        // The kernel keys addresses by address alone (not prefix).
        if let Some(earlier) = addresses.iter().position(|a| a.address() == host) {
            return Err(invalid(
                format!("{field}.address"),
                format!("{host} is also addresses[{earlier}]"),
            ));
        }
        addresses.push(prefix);
    }
    Ok(InterfacePlan {
        name: interface.name.clone(),
        mac,
        mtu: interface.mtu,
        addresses,
    })
}

/// The kernel's rules for a new interface name (`dev_valid_name`), plus
/// "not lo": the loopback link is the guest's own, not a pod interface.
fn check_name(field: &str, name: &str) -> Result<(), PlanError> {
    let reason = if name.is_empty() {
        "empty".to_owned()
    } else if name.len() > MAX_NAME_BYTES {
        format!("{name:?} is {} bytes, at most {MAX_NAME_BYTES}", name.len())
    } else if name == "." || name == ".." {
        format!("{name:?} is not a valid interface name")
    } else if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        format!("{name:?} contains {c:?}")
    } else if name == "lo" {
        "\"lo\" is the guest's loopback interface".to_owned()
    } else {
        return Ok(());
    };
    Err(invalid(field, reason))
}

fn mac_addr(field: &str, bytes: &[u8]) -> Result<MacAddr, PlanError> {
    let mac: [u8; 6] = bytes
        .try_into()
        .map_err(|_| invalid(field, format!("{} bytes, want 6", bytes.len())))?;
    let mac = MacAddr(mac);
    if mac.0 == [0; 6] {
        return Err(invalid(field, "all zero"));
    }
    // The I/G bit: set means a group (multicast) address.
    if mac.0[0] & 1 != 0 {
        return Err(invalid(field, format!("{mac} is not unicast")));
    }
    Ok(mac)
}

fn ip_prefix(field: &str, network: &IpNetwork) -> Result<IpPrefix, PlanError> {
    let address: IpAddr = network.address.parse().map_err(|_| {
        invalid(
            format!("{field}.address"),
            format!("{:?} is not an IP address", network.address),
        )
    })?;
    let out_of_bounds = || {
        invalid(
            format!("{field}.prefix_len"),
            format!(
                "{} is beyond {} for an {} address",
                network.prefix_len,
                max_prefix_len(address),
                family(address)
            ),
        )
    };
    let prefix_len = u8::try_from(network.prefix_len).map_err(|_| out_of_bounds())?;
    IpPrefix::new(address, prefix_len).ok_or_else(out_of_bounds)
}

fn route_plan(
    field: &str,
    route: &NetworkRoute,
    interfaces: &[InterfacePlan],
) -> Result<RoutePlan, PlanError> {
    let destination_field = format!("{field}.destination");
    let destination = route
        .destination
        .as_ref()
        .ok_or_else(|| invalid(&destination_field, "missing"))?;
    let destination = ip_prefix(&destination_field, destination)?;
    let network = destination.network();
    if network != destination.address() {
        return Err(invalid(
            destination_field,
            format!(
                "{destination} has host bits set beyond the /{}: the network is {network}/{}",
                destination.prefix_len(),
                destination.prefix_len()
            ),
        ));
    }
    let gateway = if route.gateway.is_empty() {
        None
    } else {
        let gateway_field = format!("{field}.gateway");
        let gateway: IpAddr = route.gateway.parse().map_err(|_| {
            invalid(
                &gateway_field,
                format!("{:?} is not an IP address", route.gateway),
            )
        })?;
        if gateway.is_ipv4() != destination.address().is_ipv4() {
            return Err(invalid(
                gateway_field,
                format!(
                    "{gateway} is {}, the destination {destination} is {}",
                    family(gateway),
                    family(destination.address())
                ),
            ));
        }
        if gateway.is_unspecified() || gateway.is_multicast() {
            return Err(invalid(
                gateway_field,
                format!("{gateway} cannot be a next hop (leave it empty for an on-link route)"),
            ));
        }
        Some(gateway)
    };
    let device_field = format!("{field}.device");
    if route.device.is_empty() {
        return Err(invalid(device_field, "empty"));
    }
    let interface = interfaces
        .iter()
        .position(|i| i.name == route.device)
        .ok_or_else(|| {
            invalid(
                device_field,
                format!("{:?} is not one of the request's interfaces", route.device),
            )
        })?;
    Ok(RoutePlan {
        destination,
        gateway,
        interface,
        metric: NonZeroU32::new(route.metric),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(address: &str, prefix_len: u32) -> IpNetwork {
        IpNetwork {
            address: address.into(),
            prefix_len,
        }
    }

    fn eth(name: &str) -> NetworkInterface {
        NetworkInterface {
            name: name.into(),
            mac: vec![0x0a, 0x58, 0x0a, 0x58, 0x00, 0x05].into(),
            mtu: 1500,
            addresses: vec![net("192.0.2.5", 24)],
        }
    }

    fn route(destination: &str, prefix_len: u32, gateway: &str, device: &str) -> NetworkRoute {
        NetworkRoute {
            destination: Some(net(destination, prefix_len)),
            gateway: gateway.into(),
            device: device.into(),
            metric: 0,
        }
    }

    fn request(
        interfaces: Vec<NetworkInterface>,
        routes: Vec<NetworkRoute>,
    ) -> ConfigureNetworkRequest {
        ConfigureNetworkRequest { interfaces, routes }
    }

    /// The message a client sees for a request with one interface changed
    /// by `edit`.
    fn interface_error(edit: impl FnOnce(&mut NetworkInterface)) -> String {
        let mut interface = eth("eth0");
        edit(&mut interface);
        NetworkPlan::from_request(&request(vec![interface], vec![]))
            .unwrap_err()
            .to_string()
    }

    fn route_error(route: NetworkRoute) -> String {
        NetworkPlan::from_request(&request(vec![eth("eth0")], vec![route]))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_pod_network_becomes_a_typed_plan() {
        let mut eth1 = eth("eth1");
        eth1.mac = vec![0x02, 0, 0, 0, 0, 0x10].into();
        eth1.mtu = 9000;
        eth1.addresses = vec![net("2001:db8::5", 64), net("198.51.100.7", 25)];
        let mut default = route("0.0.0.0", 0, "192.0.2.1", "eth0");
        default.metric = 100;
        let plan = NetworkPlan::from_request(&request(
            vec![eth("eth0"), eth1],
            vec![default, route("203.0.113.0", 24, "", "eth1")],
        ))
        .unwrap();

        let eth1 = &plan.interfaces()[1];
        assert_eq!(eth1.name, "eth1");
        assert_eq!(eth1.mac.to_string(), "02:00:00:00:00:10");
        assert_eq!(eth1.mtu, 9000);
        assert_eq!(
            eth1.addresses,
            [
                IpPrefix::new("2001:db8::5".parse().unwrap(), 64).unwrap(),
                IpPrefix::new("198.51.100.7".parse().unwrap(), 25).unwrap(),
            ]
        );
        let default = &plan.routes()[0];
        assert_eq!(default.gateway, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(default.interface, 0);
        assert_eq!(default.metric, NonZeroU32::new(100));
        assert_eq!(
            plan.describe_route(default),
            "0.0.0.0/0 via 192.0.2.1 dev eth0 metric 100"
        );
        assert_eq!(plan.routes()[1].metric, None);
        assert_eq!(plan.routes()[1].interface, 1);
    }

    #[test]
    fn an_empty_request_is_a_plan_with_nothing_to_do() {
        let plan = NetworkPlan::from_request(&request(vec![], vec![])).unwrap();
        assert!(plan.interfaces().is_empty());
        assert!(plan.routes().is_empty());
    }

    #[test]
    fn names_follow_the_kernels_rules() {
        let name_error = |name: &str| interface_error(|i| i.name = name.into());
        assert_eq!(name_error(""), "interfaces[0].name: empty");
        assert_eq!(
            name_error("a-very-long-name"),
            r#"interfaces[0].name: "a-very-long-name" is 16 bytes, at most 15"#
        );
        assert_eq!(
            name_error("eth/0"),
            r#"interfaces[0].name: "eth/0" contains '/'"#
        );
        assert_eq!(
            name_error("eth0:1"),
            r#"interfaces[0].name: "eth0:1" contains ':'"#
        );
        assert_eq!(
            name_error("eth 0"),
            r#"interfaces[0].name: "eth 0" contains ' '"#
        );
        assert_eq!(
            name_error("eth\t0"),
            r#"interfaces[0].name: "eth\t0" contains '\t'"#
        );
        assert_eq!(
            name_error(".."),
            r#"interfaces[0].name: ".." is not a valid interface name"#
        );
        assert_eq!(
            name_error("lo"),
            r#"interfaces[0].name: "lo" is the guest's loopback interface"#
        );
        // 15 bytes is the limit, not 15 characters.
        assert_eq!(
            name_error("ethé01234567890"),
            r#"interfaces[0].name: "ethé01234567890" is 16 bytes, at most 15"#
        );
        let mut longest = eth("eth012345678901");
        longest.name.truncate(MAX_NAME_BYTES);
        assert!(NetworkPlan::from_request(&request(vec![longest], vec![])).is_ok());
    }

    #[test]
    fn names_are_unique() {
        let error = NetworkPlan::from_request(&request(vec![eth("eth0"), eth("eth0")], vec![]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"interfaces[1].name: "eth0" is also the name of an earlier interface"#
        );
    }

    #[test]
    fn macs_are_six_bytes_unicast_and_not_zero() {
        assert_eq!(
            interface_error(|i| i.mac = vec![2, 0, 0, 0, 1].into()),
            "interfaces[0].mac: 5 bytes, want 6"
        );
        assert_eq!(
            interface_error(|i| i.mac = vec![].into()),
            "interfaces[0].mac: 0 bytes, want 6"
        );
        assert_eq!(
            interface_error(|i| i.mac = vec![0; 6].into()),
            "interfaces[0].mac: all zero"
        );
        assert_eq!(
            interface_error(|i| i.mac = vec![0x01, 0, 0x5e, 0, 0, 1].into()),
            "interfaces[0].mac: 01:00:5e:00:00:01 is not unicast"
        );
    }

    #[test]
    fn mtus_are_68_to_65535() {
        assert_eq!(
            interface_error(|i| i.mtu = 67),
            "interfaces[0].mtu: 67 is outside 68..=65535"
        );
        assert_eq!(
            interface_error(|i| i.mtu = 65536),
            "interfaces[0].mtu: 65536 is outside 68..=65535"
        );
        assert_eq!(
            interface_error(|i| i.mtu = 0),
            "interfaces[0].mtu: 0 is outside 68..=65535"
        );
        for mtu in [68, 65535] {
            let mut interface = eth("eth0");
            interface.mtu = mtu;
            assert!(NetworkPlan::from_request(&request(vec![interface], vec![])).is_ok());
        }
    }

    #[test]
    fn addresses_parse_with_prefixes_of_their_family() {
        let address_error = |address: &str, prefix_len| {
            interface_error(|i| i.addresses.push(net(address, prefix_len)))
        };
        assert_eq!(
            address_error("10.88.0.300", 16),
            r#"interfaces[0].addresses[1].address: "10.88.0.300" is not an IP address"#
        );
        assert_eq!(
            address_error("", 16),
            r#"interfaces[0].addresses[1].address: "" is not an IP address"#
        );
        assert_eq!(
            address_error("198.51.100.7", 33),
            "interfaces[0].addresses[1].prefix_len: 33 is beyond 32 for an IPv4 address"
        );
        assert_eq!(
            address_error("2001:db8::5", 129),
            "interfaces[0].addresses[1].prefix_len: 129 is beyond 128 for an IPv6 address"
        );
        assert_eq!(
            address_error("2001:db8::5", 4096),
            "interfaces[0].addresses[1].prefix_len: 4096 is beyond 128 for an IPv6 address"
        );
        assert_eq!(
            address_error("0.0.0.0", 8),
            "interfaces[0].addresses[1].address: 0.0.0.0 cannot be an interface's address"
        );
        assert_eq!(
            address_error("ff02::1", 64),
            "interfaces[0].addresses[1].address: ff02::1 cannot be an interface's address"
        );
        assert_eq!(
            address_error("192.0.2.5", 25),
            "interfaces[0].addresses[1].address: 192.0.2.5 is also addresses[0]"
        );
        // An interface address keeps its host bits: they are the host.
        let plan = NetworkPlan::from_request(&request(vec![eth("eth0")], vec![])).unwrap();
        assert_eq!(
            plan.interfaces()[0].addresses[0].to_string(),
            "192.0.2.5/24"
        );
    }

    #[test]
    fn route_destinations_parse_and_have_no_host_bits() {
        assert_eq!(
            route_error(NetworkRoute {
                destination: None,
                ..route("0.0.0.0", 0, "", "eth0")
            }),
            "routes[0].destination: missing"
        );
        assert_eq!(
            route_error(route("default", 0, "", "eth0")),
            r#"routes[0].destination.address: "default" is not an IP address"#
        );
        assert_eq!(
            route_error(route("203.0.113.0", 40, "", "eth0")),
            "routes[0].destination.prefix_len: 40 is beyond 32 for an IPv4 address"
        );
        assert_eq!(
            route_error(route("203.0.113.9", 24, "", "eth0")),
            "routes[0].destination: 203.0.113.9/24 has host bits set beyond the /24: \
             the network is 203.0.113.0/24"
        );
        assert_eq!(
            route_error(route("2001:db8:1::1", 48, "", "eth0")),
            "routes[0].destination: 2001:db8:1::1/48 has host bits set beyond the /48: \
             the network is 2001:db8:1::/48"
        );
        // A host route has no host bits.
        let plan = NetworkPlan::from_request(&request(
            vec![eth("eth0")],
            vec![route("203.0.113.9", 32, "", "eth0")],
        ))
        .unwrap();
        assert_eq!(plan.routes()[0].destination.to_string(), "203.0.113.9/32");
    }

    #[test]
    fn gateways_parse_and_match_the_destination_family() {
        assert_eq!(
            route_error(route("0.0.0.0", 0, "gw", "eth0")),
            r#"routes[0].gateway: "gw" is not an IP address"#
        );
        assert_eq!(
            route_error(route("0.0.0.0", 0, "2001:db8::1", "eth0")),
            "routes[0].gateway: 2001:db8::1 is IPv6, the destination 0.0.0.0/0 is IPv4"
        );
        assert_eq!(
            route_error(route("::", 0, "192.0.2.1", "eth0")),
            "routes[0].gateway: 192.0.2.1 is IPv4, the destination ::/0 is IPv6"
        );
        assert_eq!(
            route_error(route("0.0.0.0", 0, "0.0.0.0", "eth0")),
            "routes[0].gateway: 0.0.0.0 cannot be a next hop (leave it empty for an on-link route)"
        );
    }

    #[test]
    fn route_devices_are_interfaces_of_the_request() {
        assert_eq!(
            route_error(route("0.0.0.0", 0, "192.0.2.1", "")),
            "routes[0].device: empty"
        );
        assert_eq!(
            route_error(route("0.0.0.0", 0, "192.0.2.1", "eth1")),
            r#"routes[0].device: "eth1" is not one of the request's interfaces"#
        );
        assert_eq!(
            route_error(route("0.0.0.0", 0, "192.0.2.1", "lo")),
            r#"routes[0].device: "lo" is not one of the request's interfaces"#
        );
    }

    #[test]
    fn routes_with_the_same_destination_need_different_metrics() {
        let mut second = route("0.0.0.0", 0, "192.0.2.2", "eth0");
        let routes = |second: &NetworkRoute| {
            NetworkPlan::from_request(&request(
                vec![eth("eth0")],
                vec![route("0.0.0.0", 0, "192.0.2.1", "eth0"), second.clone()],
            ))
        };
        assert_eq!(
            routes(&second).unwrap_err().to_string(),
            "routes[1]: same destination (0.0.0.0/0) and metric as routes[0]"
        );
        second.metric = 200;
        assert!(routes(&second).is_ok());
    }

    #[test]
    fn on_link_routes_come_before_gateway_routes() {
        let plan = NetworkPlan::from_request(&request(
            vec![eth("eth0")],
            vec![
                route("0.0.0.0", 0, "169.254.1.1", "eth0"),
                route("169.254.1.1", 32, "", "eth0"),
                route("203.0.113.0", 24, "169.254.1.1", "eth0"),
                route("198.51.100.0", 24, "", "eth0"),
            ],
        ))
        .unwrap();
        let order: Vec<String> = plan
            .routes_in_order()
            .map(|r| plan.describe_route(r))
            .collect();
        assert_eq!(
            order,
            [
                "169.254.1.1/32 dev eth0",
                "198.51.100.0/24 dev eth0",
                "0.0.0.0/0 via 169.254.1.1 dev eth0",
                "203.0.113.0/24 via 169.254.1.1 dev eth0",
            ]
        );
    }

    #[test]
    fn the_first_ipv6_use_is_named() {
        let v4_only = NetworkPlan::from_request(&request(vec![eth("eth0")], vec![])).unwrap();
        assert_eq!(v4_only.first_ipv6_use(), None);

        let mut eth0 = eth("eth0");
        eth0.addresses.push(net("2001:db8::5", 64));
        let plan = NetworkPlan::from_request(&request(vec![eth0], vec![])).unwrap();
        let used = plan.first_ipv6_use().unwrap();
        assert_eq!(used.field, "interfaces[0].addresses[1]");
        assert_eq!(used.prefix.to_string(), "2001:db8::5/64");

        let plan = NetworkPlan::from_request(&request(
            vec![eth("eth0")],
            vec![route("2001:db8::", 32, "", "eth0")],
        ))
        .unwrap();
        assert_eq!(
            plan.first_ipv6_use().unwrap().field,
            "routes[0].destination"
        );
    }

    #[test]
    fn prefixes_know_their_network() {
        let prefix = |a: &str, len| IpPrefix::new(a.parse().unwrap(), len).unwrap();
        assert_eq!(prefix("10.88.7.5", 16).network().to_string(), "10.88.0.0");
        assert_eq!(prefix("10.88.7.5", 0).network().to_string(), "0.0.0.0");
        assert_eq!(prefix("10.88.7.5", 32).network().to_string(), "10.88.7.5");
        assert_eq!(prefix("2001:db8::5", 0).network().to_string(), "::");
        assert_eq!(
            prefix("2001:db8::5", 128).network().to_string(),
            "2001:db8::5"
        );
        assert!(IpPrefix::new("::1".parse().unwrap(), 129).is_none());
    }
}
