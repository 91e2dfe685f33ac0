//! The host side of a pod's network (Kata's "tcfilter" model, Firecracker's
//! tc-redirect-tap): the pod's CNI plugin sets up its interfaces in the
//! pod's network namespace as for any runtime; the VMM opens a tap per
//! interface in that namespace; tc redirects every frame between each
//! interface and its tap; and the guest's virtio-net interfaces take the
//! CNI interfaces' names, MACs, MTUs, addresses and routes (through the
//! agent's `ConfigureNetwork`). The host kernel only relays frames, so
//! whatever the plugin did on the host side (its veth peer, NAT, policy)
//! applies to the guest unchanged.
//!
//! A sandbox uses it in this order:
//! 1. [`PodNetwork::read`] the pod's namespace, before the VMM starts
//!    (its taps are not the pod's);
//! 2. give the VM [`PodNetwork::vm_nets`] (taps `vmtap0`… with the MACs
//!    and MTUs) and start the VMM so that it creates them in the pod's
//!    namespace;
//! 3. [`PodNetwork::connect`] each interface with its tap;
//! 4. send the agent [`PodNetwork::request`];
//! 5. on every stop path, [`PodNetwork::disconnect`] (or
//!    [`PodNetwork::disconnect_blocking`]); the taps go with the VMM.
//!
//! [`netns`] runs the netlink work in the namespace, [`inspect`] reads the
//! pod's network, [`tc_redirect`] connects and disconnects the taps.

pub mod error;
pub mod inspect;
pub mod netns;
pub mod tc_redirect;

pub use error::NetworkError;
pub use inspect::{PodInterface, PodNetwork};
pub use netns::NetNs;

#[cfg(test)]
mod tests;
