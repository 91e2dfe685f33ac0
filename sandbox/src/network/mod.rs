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
//! [`netns`] runs the netlink work in the namespace.

pub mod error;
pub mod netns;

pub use error::NetworkError;
pub use netns::NetNs;
