//! Connecting each pod interface with the VMM's tap for it, in the pod's
//! namespace, with tc: everything that arrives on one leaves by the other.
//!
//! The CNI plugin's interface stays where and as it is (its veth peer,
//! addresses and routes on the host are the plugin's business), and the
//! guest's interface has its MAC and addresses; the host kernel only has to
//! move frames. Each of the two links gets an `ingress` qdisc with one u32
//! filter matching every frame (`protocol all`, `match u32 0 0`) whose
//! action is `mirred egress redirect` to the other link, as `tc` writes it.
//! This needs no bridge, no MAC learning and no address of the host's in
//! the pod's namespace, and works with whatever kind of interface the CNI
//! plugin made (see [`super::inspect`] for the kinds taken).
//!
//! The VMM creates its taps (`vmtap0`, `vmtap1`… in device order), not
//! persistent, so a tap, with its qdisc and filter, disappears when the VMM
//! exits. What stays is on the CNI interfaces: [`PodNetwork::disconnect`]
//! removes it (and the taps' while they are there), and does nothing for a
//! link that is already gone (a killed VMM, a CNI `DEL` that ran first), so
//! it can run on every stop path, more than once.

use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use rtnetlink::{Handle, LinkUnspec};

use super::error::{is_errno, NetworkError};
use super::inspect::PodNetwork;

/// What the VMM's taps are called, followed by the device's position.
const TAP_PREFIX: &str = "vmtap";

/// The parent handle of filters on an ingress qdisc (`ffff:`).
const INGRESS_PARENT: u32 = 0xffff_0000;

/// The tap of the pod's `position`-th interface (at most
/// `vm_config::MAX_VIRTIO_DEVICES`, so it fits `IFNAMSIZ`).
pub(crate) fn tap_name(position: usize) -> String {
    format!("{TAP_PREFIX}{position}")
}

/// Whether `name` is one of the VMM's taps.
pub(crate) fn is_vmrun_tap(name: &str) -> bool {
    name.strip_prefix(TAP_PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One pod interface and its tap, as the namespace thread needs them.
#[derive(Clone, Debug)]
struct Pair {
    name: String,
    index: u32,
    tap: String,
    mtu: u16,
}

impl Pair {
    fn link(&self) -> String {
        format!("{} (index {})", self.name, self.index)
    }
}

impl PodNetwork {
    /// Connects every interface with its tap: sets the tap's MTU to the
    /// interface's and brings it up, and redirects each one's incoming
    /// frames to the other (see the module docs). The VMM must be running:
    /// a missing tap is an error. Ingress qdiscs already on the links are
    /// replaced (a connect run before, say by a restarted shim). On error,
    /// what was done is undone.
    pub async fn connect(&self) -> Result<(), NetworkError> {
        let (netns, pairs) = (self.netns().path().to_path_buf(), self.pairs());
        self.netns()
            .run(move |handle| connect_all(handle, netns, pairs))
            .await
    }

    /// Undoes [`connect`](Self::connect): removes the ingress qdiscs (and
    /// with them the filters) from the interfaces and, while they exist,
    /// their taps. Links that are gone are passed over, and so is an
    /// interface index that now names another link, so this can run on
    /// every stop path and more than once.
    pub async fn disconnect(&self) -> Result<(), NetworkError> {
        let (netns, pairs) = (self.netns().path().to_path_buf(), self.pairs());
        self.netns()
            .run(move |handle| async move { disconnect_all(&handle, &netns, &pairs).await })
            .await
    }

    /// [`disconnect`](Self::disconnect) for synchronous code (a `Drop`),
    /// blocking the calling thread; not for a runtime's worker.
    pub fn disconnect_blocking(&self) -> Result<(), NetworkError> {
        let (netns, pairs) = (self.netns().path().to_path_buf(), self.pairs());
        self.netns().run_blocking(move |handle| async move {
            disconnect_all(&handle, &netns, &pairs).await
        })
    }

    fn pairs(&self) -> Vec<Pair> {
        self.interfaces()
            .iter()
            .map(|i| Pair {
                name: i.name().to_string(),
                index: i.index(),
                tap: i.tap().to_string(),
                mtu: i.mtu(),
            })
            .collect()
    }
}

async fn connect_all(handle: Handle, netns: PathBuf, pairs: Vec<Pair>) -> Result<(), NetworkError> {
    for pair in &pairs {
        if let Err(err) = connect_pair(&handle, &netns, pair).await {
            if let Err(undo) = disconnect_all(&handle, &netns, &pairs).await {
                tracing::warn!("undoing a failed tc redirect: {undo}");
            }
            return Err(err);
        }
    }
    Ok(())
}

async fn connect_pair(handle: &Handle, netns: &Path, pair: &Pair) -> Result<(), NetworkError> {
    let tap =
        index_of(handle, netns, &pair.tap)
            .await?
            .ok_or_else(|| NetworkError::MissingTap {
                netns: netns.to_path_buf(),
                tap: pair.tap.clone(),
                link: pair.name.clone(),
            })?;
    let tap_link = format!("{} (index {tap})", pair.tap);
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(tap)
                .mtu(u32::from(pair.mtu))
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(NetworkError::netlink(
            netns,
            "set the MTU and bring up",
            &tap_link,
        ))?;
    for (index, link) in [(pair.index, pair.link()), (tap, tap_link.clone())] {
        remove_ingress(handle, netns, index, &link).await?;
        handle
            .qdisc()
            .add(tc_index(index))
            .ingress()
            .execute()
            .await
            .map_err(NetworkError::netlink(netns, "add an ingress qdisc", &link))?;
    }
    redirect(handle, netns, (pair.index, &pair.link()), (tap, &tap_link)).await?;
    redirect(handle, netns, (tap, &tap_link), (pair.index, &pair.link())).await?;
    tracing::info!(
        netns = %netns.display(),
        link = %pair.name,
        tap = %pair.tap,
        mtu = pair.mtu,
        "pod interface connected with its tap"
    );
    Ok(())
}

/// Adds the filter on `from`'s ingress qdisc that sends every frame out
/// of `to`.
async fn redirect(
    handle: &Handle,
    netns: &Path,
    (from, from_link): (u32, &str),
    (to, to_link): (u32, &str),
) -> Result<(), NetworkError> {
    let op = "add a redirect filter";
    let object = format!("{from_link} to {to_link}");
    handle
        .traffic_filter(tc_index(from))
        .add()
        .parent(INGRESS_PARENT)
        // tcm_info's protocol is in network byte order, as the frames'
        // EtherType it is compared with.
        .protocol((libc::ETH_P_ALL as u16).to_be())
        .redirect(to)
        .map_err(NetworkError::netlink(netns, op, &object))?
        .execute()
        .await
        .map_err(NetworkError::netlink(netns, op, &object))
}

async fn disconnect_all(handle: &Handle, netns: &Path, pairs: &[Pair]) -> Result<(), NetworkError> {
    let mut result = Ok(());
    for pair in pairs {
        let remove =
            |index, link: String| async move { remove_ingress(handle, netns, index, &link).await };
        match name_of(handle, netns, pair.index).await {
            Ok(Some(name)) if name == pair.name => {
                if let Err(err) = remove(pair.index, pair.link()).await {
                    result = Err(err);
                }
            }
            Ok(Some(other)) => tracing::warn!(
                netns = %netns.display(),
                "interface index {} is {other} now, not {}: left alone",
                pair.index,
                pair.name
            ),
            Ok(None) => {}
            Err(err) => result = Err(err),
        }
        match index_of(handle, netns, &pair.tap).await {
            Ok(Some(tap)) => {
                if let Err(err) = remove(tap, format!("{} (index {tap})", pair.tap)).await {
                    result = Err(err);
                }
            }
            Ok(None) => {}
            Err(err) => result = Err(err),
        }
    }
    if result.is_ok() {
        tracing::debug!(netns = %netns.display(), "pod interfaces disconnected from their taps");
    }
    result
}

/// Deletes the ingress qdisc of link `index`, if it has one; a link that
/// is gone has none.
async fn remove_ingress(
    handle: &Handle,
    netns: &Path,
    index: u32,
    link: &str,
) -> Result<(), NetworkError> {
    // Without strict checking the kernel dumps every link's qdiscs.
    let qdiscs: Vec<TcMessage> = handle
        .qdisc()
        .get()
        .index(tc_index(index))
        .ingress()
        .execute()
        .try_collect()
        .await
        .map_err(NetworkError::netlink(netns, "list qdiscs", link))?;
    let has_ingress = qdiscs.iter().any(|q| {
        q.header.index == tc_index(index)
            && q.header.parent == TcHandle::INGRESS
            && q.attributes
                .contains(&TcAttribute::Kind("ingress".to_string()))
    });
    if !has_ingress {
        return Ok(());
    }
    let mut delete = handle.qdisc().del(tc_index(index));
    delete.message_mut().header.parent = TcHandle::INGRESS;
    delete.message_mut().header.handle = TcHandle::from(INGRESS_PARENT);
    match delete.execute().await {
        Ok(()) => {
            tracing::debug!(netns = %netns.display(), link, "ingress qdisc removed");
            Ok(())
        }
        // Gone meanwhile, with the link or by someone else's hand.
        Err(err) if is_errno(&err, libc::ENODEV) || is_errno(&err, libc::ENOENT) => Ok(()),
        Err(err) => Err(NetworkError::netlink(
            netns,
            "delete the ingress qdisc",
            link,
        )(err)),
    }
}

/// The index of the link called `name`, `None` if there is none.
async fn index_of(handle: &Handle, netns: &Path, name: &str) -> Result<Option<u32>, NetworkError> {
    match handle
        .link()
        .get()
        .match_name(name)
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(err) if is_errno(&err, libc::ENODEV) => Ok(None),
        Err(err) => Err(NetworkError::netlink(netns, "look up", name)(err)),
    }
}

/// The name of link `index`, `None` if there is none.
async fn name_of(
    handle: &Handle,
    netns: &Path,
    index: u32,
) -> Result<Option<String>, NetworkError> {
    match handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link.map(|l| {
            l.attributes
                .into_iter()
                .find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name),
                    _ => None,
                })
                .unwrap_or_default()
        })),
        Err(err) if is_errno(&err, libc::ENODEV) => Ok(None),
        Err(err) => Err(NetworkError::netlink(
            netns,
            "look up",
            format!("index {index}"),
        )(err)),
    }
}

/// An interface index as tc messages carry it (the kernel's `int`).
fn tc_index(index: u32) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_ifnamsiz_and_are_recognised() {
        let last = tap_name(vm_config::MAX_VIRTIO_DEVICES);
        assert!(last.len() <= vm_config::net::MAX_TAP_NAME_LEN, "{last}");
        assert_eq!(tap_name(0), "vmtap0");
        assert!(is_vmrun_tap("vmtap0") && is_vmrun_tap("vmtap18"));
        assert!(!is_vmrun_tap("vmtap") && !is_vmrun_tap("vmtapx") && !is_vmrun_tap("tap0"));
    }
}
