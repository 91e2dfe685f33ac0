//! Carrying out a [`NetworkPlan`] over netlink, on links the caller found.
//!
//! The links come in ([`GuestLink`]s, by interface index): the guest passes
//! its virtio-net links, the tests veth links in a namespace of their own.
//! Every request names a link by index, since names change on the way.
//!
//! What can be checked without changing anything is checked first (enough
//! links, IPv6 if needed, no foreign link holding a requested name); after
//! that a failure leaves the guest half configured, as the API says.

use std::collections::HashSet;
use std::fmt;

use futures_util::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::links::GuestLink;
use super::plan::{InterfacePlan, IpPrefix, NetworkPlan, RoutePlan};

/// The guest's loopback link, brought up if it is down.
const LOOPBACK: &str = "lo";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the request has {interfaces} interfaces, the guest only {links} network devices")]
    TooFewLinks { interfaces: usize, links: usize },

    #[error("{field} {prefix} is IPv6, and the guest has no IPv6")]
    NoIpv6 { field: String, prefix: IpPrefix },

    /// A link that is not to be configured holds a requested name.
    #[error("{field}: {name:?} is the name of another link of the guest (index {index})")]
    NameTaken {
        field: String,
        name: String,
        index: u32,
    },

    /// A link passed in is not in the namespace (any more).
    #[error("network device {name} (index {index}) is gone")]
    LinkGone { name: String, index: u32 },

    /// A netlink request failed; `step` says which, on what.
    #[error("{step}: {cause}")]
    Netlink { step: String, cause: NetlinkCause },
}

impl ApplyError {
    /// The kernel's errno, for a failed netlink request.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Netlink {
                cause: NetlinkCause::Errno(errno),
                ..
            } => Some(*errno),
            _ => None,
        }
    }
}

/// Why a netlink request failed.
#[derive(Debug)]
pub enum NetlinkCause {
    /// The kernel said no.
    Errno(Errno),
    /// Anything else (the socket, an unexpected answer).
    Other(String),
}

impl fmt::Display for NetlinkCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Errno(errno) => write!(f, "{errno}"),
            Self::Other(reason) => f.write_str(reason),
        }
    }
}

impl From<rtnetlink::Error> for NetlinkCause {
    fn from(error: rtnetlink::Error) -> Self {
        match error {
            // The kernel's error codes are negative errnos.
            rtnetlink::Error::NetlinkError(message) if message.code.is_some() => {
                Self::Errno(Errno::from_raw(-message.raw_code()))
            }
            other => Self::Other(other.to_string()),
        }
    }
}

/// `map_err` for a failed request: what it was doing, and why it failed.
fn failed<E: Into<NetlinkCause>>(step: impl Into<String>) -> impl FnOnce(E) -> ApplyError {
    let step = step.into();
    move |error| ApplyError::Netlink {
        step,
        cause: error.into(),
    }
}

/// Checks what can be checked without netlink: interface `i` takes
/// `links[i]`, so there must be as many links; and IPv6 is there if the
/// plan needs it. Returns the links to configure.
pub fn check_preconditions<'l>(
    plan: &NetworkPlan,
    links: &'l [GuestLink],
    ipv6: bool,
) -> Result<&'l [GuestLink], ApplyError> {
    let wanted = plan.interfaces().len();
    let chosen = links.get(..wanted).ok_or(ApplyError::TooFewLinks {
        interfaces: wanted,
        links: links.len(),
    })?;
    if !ipv6 {
        if let Some(used) = plan.first_ipv6_use() {
            return Err(ApplyError::NoIpv6 {
                field: used.field,
                prefix: used.prefix,
            });
        }
    }
    Ok(chosen)
}

/// Configures `links` (in order: interface `i` of the plan takes
/// `links[i]`) and adds the plan's routes, over `handle`'s namespace.
/// `ipv6`: whether the kernel has IPv6.
pub async fn apply(
    handle: &Handle,
    plan: &NetworkPlan,
    links: &[GuestLink],
    ipv6: bool,
) -> Result<(), ApplyError> {
    let links = check_preconditions(plan, links, ipv6)?;
    let mut present = present_links(handle).await?;
    check_names(plan, links, &present)?;

    bring_up_loopback(handle, &present).await?;
    move_names_aside(handle, plan, links, &mut present).await?;
    for (i, (interface, link)) in plan.interfaces().iter().zip(links).enumerate() {
        let current = present
            .iter()
            .find(|p| p.index == link.index)
            .map_or(link.name.as_str(), |p| p.name.as_str());
        configure_interface(handle, i, interface, link.index, current).await?;
    }
    for route in plan.routes_in_order() {
        add_route(handle, plan, links, route).await?;
    }
    tracing::info!(
        interfaces = plan.interfaces().len(),
        routes = plan.routes().len(),
        "pod network configured"
    );
    Ok(())
}

/// A link of the namespace as netlink lists it.
#[derive(Debug)]
struct PresentLink {
    index: u32,
    name: String,
    up: bool,
}

async fn present_links(handle: &Handle) -> Result<Vec<PresentLink>, ApplyError> {
    let mut dump = handle.link().get().execute();
    let mut present = Vec::new();
    while let Some(message) = dump.try_next().await.map_err(failed("list links"))? {
        let name = message.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        });
        present.push(PresentLink {
            index: message.header.index,
            name: name.unwrap_or_default(),
            up: message.header.flags.contains(LinkFlags::Up),
        });
    }
    Ok(present)
}

/// Every link passed in must be there, and a requested name may only be
/// held by a link that is to be configured (it gets renamed away).
fn check_names(
    plan: &NetworkPlan,
    links: &[GuestLink],
    present: &[PresentLink],
) -> Result<(), ApplyError> {
    for link in links {
        if !present.iter().any(|p| p.index == link.index) {
            return Err(ApplyError::LinkGone {
                name: link.name.clone(),
                index: link.index,
            });
        }
    }
    for (i, interface) in plan.interfaces().iter().enumerate() {
        let holder = present.iter().find(|p| p.name == interface.name);
        if let Some(holder) = holder {
            if !links.iter().any(|l| l.index == holder.index) {
                return Err(ApplyError::NameTaken {
                    field: format!("interfaces[{i}].name"),
                    name: interface.name.clone(),
                    index: holder.index,
                });
            }
        }
    }
    Ok(())
}

async fn bring_up_loopback(handle: &Handle, present: &[PresentLink]) -> Result<(), ApplyError> {
    // Containers talk to each other over it; the guest's init may have
    // left it down.
    match present.iter().find(|p| p.name == LOOPBACK) {
        Some(lo) if !lo.up => {
            set_link(
                handle,
                LinkUnspec::new_with_index(lo.index).up(),
                "bring up lo",
            )
            .await?;
            tracing::debug!("lo up");
        }
        Some(_) => {}
        None => tracing::warn!("the guest has no loopback link"),
    }
    Ok(())
}

/// Gives temporary names to links whose name another link is to take,
/// so that renames cannot collide (e.g. `eth1` and `eth0` swapping names).
/// Updates `present` to the new names.
async fn move_names_aside(
    handle: &Handle,
    plan: &NetworkPlan,
    links: &[GuestLink],
    present: &mut [PresentLink],
) -> Result<(), ApplyError> {
    let targets: Vec<&str> = plan.interfaces().iter().map(|i| i.name.as_str()).collect();
    let mut taken: HashSet<String> = present.iter().map(|p| p.name.clone()).collect();
    taken.extend(targets.iter().map(|t| (*t).to_owned()));
    for (j, link) in links.iter().enumerate() {
        let Some(current) = present.iter_mut().find(|p| p.index == link.index) else {
            continue;
        };
        let wanted_by_another = targets
            .iter()
            .enumerate()
            .any(|(i, target)| i != j && *target == current.name);
        if !wanted_by_another {
            continue;
        }
        let Some(aside) = (0u32..)
            .map(|n| format!("vmrun{n}"))
            .find(|name| !taken.contains(name))
        else {
            continue;
        };
        let from = current.name.clone();
        let step = |what: &str| format!("link index {} ({from}): {what}", link.index);
        // The kernel renames only links that are down.
        set_link(
            handle,
            LinkUnspec::new_with_index(link.index).down(),
            step("set down"),
        )
        .await?;
        set_link(
            handle,
            LinkUnspec::new_with_index(link.index).name(aside.as_str()),
            step(&format!("rename to {aside}")),
        )
        .await?;
        tracing::debug!(index = link.index, %from, to = %aside, "name moved aside");
        taken.insert(aside.clone());
        current.name = aside;
    }
    Ok(())
}

async fn configure_interface(
    handle: &Handle,
    i: usize,
    interface: &InterfacePlan,
    index: u32,
    current_name: &str,
) -> Result<(), ApplyError> {
    let step = |what: String| {
        format!(
            "interfaces[{i}] ({}, link index {index}): {what}",
            interface.name
        )
    };
    let unspec = || LinkUnspec::new_with_index(index);

    // Down first: the kernel renames only links that are down, and the
    // MAC and MTU change while no traffic flows.
    set_link(handle, unspec().down(), step("set down".into())).await?;
    if current_name != interface.name {
        set_link(
            handle,
            unspec().name(interface.name.as_str()),
            step(format!("rename from {current_name}")),
        )
        .await?;
    }
    set_link(
        handle,
        unspec().address(interface.mac.0.to_vec()),
        step(format!("set MAC {}", interface.mac)),
    )
    .await?;
    set_link(
        handle,
        unspec().mtu(interface.mtu),
        step(format!("set MTU {}", interface.mtu)),
    )
    .await?;
    // Up before the addresses: a link going down drops its IPv6 addresses.
    set_link(handle, unspec().up(), step("set up".into())).await?;

    for address in &interface.addresses {
        let mut request = handle
            .address()
            .add(index, address.address(), address.prefix_len());
        if address.address().is_ipv6() {
            // No duplicate address detection: the address is the pod's
            // (CNI's IPAM handed it out), and it must be usable at once,
            // not seconds later when DAD would be done.
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request
            .execute()
            .await
            .map_err(failed(step(format!("add address {address}"))))?;
    }
    tracing::info!(
        name = %interface.name,
        index,
        mac = %interface.mac,
        mtu = interface.mtu,
        addresses = ?interface.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "interface configured"
    );
    Ok(())
}

async fn set_link(
    handle: &Handle,
    message: rtnetlink::LinkMessageBuilder<LinkUnspec>,
    step: impl Into<String>,
) -> Result<(), ApplyError> {
    handle
        .link()
        .set(message.build())
        .execute()
        .await
        .map_err(failed(step))
}

async fn add_route(
    handle: &Handle,
    plan: &NetworkPlan,
    links: &[GuestLink],
    route: &RoutePlan,
) -> Result<(), ApplyError> {
    let described = plan.describe_route(route);
    let step = format!("add route {described}");
    let index = links
        .get(route.interface)
        .map(|link| link.index)
        .ok_or_else(|| ApplyError::Netlink {
            step: step.clone(),
            cause: NetlinkCause::Other("its interface has no link".into()),
        })?;
    let destination = route.destination;
    let mut builder = RouteMessageBuilder::<std::net::IpAddr>::new()
        .destination_prefix(destination.address(), destination.prefix_len())
        .map_err(failed_build(&step))?
        .output_interface(index);
    match route.gateway {
        Some(gateway) => builder = builder.gateway(gateway).map_err(failed_build(&step))?,
        // What `ip route add` does for a route without a next hop: IPv4
        // reaches its destination on the link; IPv6 has no such scope.
        None if destination.address().is_ipv4() => builder = builder.scope(RouteScope::Link),
        None => {}
    }
    if let Some(metric) = route.metric {
        builder = builder.priority(metric.get());
    }
    // Replace, not add: a route the request repeats from an address's own
    // prefix route (same destination and metric) is what the host meant,
    // not a conflict. Routes the request repeats itself were refused by
    // the plan.
    handle
        .route()
        .add(builder.build())
        .replace()
        .execute()
        .await
        .map_err(failed(step))?;
    tracing::info!(route = %described, "route added");
    Ok(())
}

/// `map_err` for a route the builder refuses (the plan rules that out).
fn failed_build<E: fmt::Display>(step: &str) -> impl FnOnce(E) -> ApplyError + '_ {
    move |error| ApplyError::Netlink {
        step: step.to_owned(),
        cause: NetlinkCause::Other(error.to_string()),
    }
}
