//! What CNI gave a pod, read back from the ADD result that containerd's CNI
//! library caches for it (`/var/lib/cni/results/<network>-<pod id>-eth0`):
//! the pod's addresses (IPv4, and IPv6 on a dual-stack network), gateways,
//! MAC and network namespace. Tests check the
//! guest against it and benchmarks dial the pod at its address; reading the
//! cache needs no exec in the pod, which under vmrun would cost a round
//! trip through the guest agent.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::containerd::Containerd;

/// Where libcni keeps the results of the ADDs it ran.
const RESULTS_DIR: &str = "/var/lib/cni/results";

/// A pod's CNI result could not be read.
#[derive(Debug, thiserror::Error)]
#[error("CNI result {}: {what}", path.display())]
pub struct CniError {
    pub path: PathBuf,
    pub what: String,
}

/// What CNI gave a pod's `eth0`: its cached ADD result.
#[derive(Debug)]
pub struct CniAttachment {
    /// The pod's address, without the prefix.
    pub ip: Ipv4Addr,
    /// With the prefix, as `ip addr` shows it ("10.200.7.2/24").
    pub cidr: String,
    pub gateway: String,
    /// The pod's IPv6 address, prefix and gateway, on a dual-stack network.
    pub ipv6: Option<CniIpv6>,
    /// The MAC of the pod's `eth0` on the host.
    pub mac: String,
    /// The pod's network namespace on the host.
    pub netns: PathBuf,
}

/// The IPv6 part of a dual-stack attachment.
#[derive(Debug)]
pub struct CniIpv6 {
    pub ip: Ipv6Addr,
    /// With the prefix ("fd76:6d72:7::2/64").
    pub cidr: String,
    pub gateway: String,
}

impl CniAttachment {
    /// The attachment of pod `pod_id` of `ctrd`'s network; panics (failing
    /// the test) when there is none.
    pub fn read(ctrd: &Containerd, pod_id: &str) -> Self {
        Self::try_read(ctrd, pod_id).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`read`](Self::read) that reports a missing or unexpected result as
    /// an error: for benchmarks, which end with context instead of a panic.
    pub fn try_read(ctrd: &Containerd, pod_id: &str) -> Result<Self, CniError> {
        let path = Path::new(RESULTS_DIR).join(format!("{}-{pod_id}-eth0", ctrd.cni_network()));
        let failed = |what: String| CniError {
            path: path.clone(),
            what,
        };
        let text = fs::read_to_string(&path).map_err(|e| failed(e.to_string()))?;
        Self::parse(&text).map_err(failed)
    }

    /// Parses libcni's cache entry (`{"kind": "cniCacheV1", ..., "result":
    /// {...}}`); the result is the CNI spec's ADD result.
    fn parse(text: &str) -> Result<Self, String> {
        let cache: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))?;
        let result = &cache["result"];
        let eth0 = result["interfaces"]
            .as_array()
            .and_then(|i| i.iter().find(|i| i["name"] == "eth0"))
            .ok_or_else(|| format!("no eth0 in the CNI result {text}"))?;
        let field = |value: &serde_json::Value, name: &str| {
            value
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("no {name} in the CNI result {text}"))
        };
        let ips = result["ips"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let address = |ip: &serde_json::Value| field(&ip["address"], "ips[].address");
        let is_v6 = |ip: &serde_json::Value| address(ip).is_ok_and(|a| a.contains(':'));
        let ip = ips
            .iter()
            .find(|ip| !is_v6(ip))
            .ok_or_else(|| format!("no IPv4 address in the CNI result {text}"))?;
        let cidr = address(ip)?;
        let ipv6 = match ips.iter().find(|ip| is_v6(ip)) {
            None => None,
            Some(ip6) => {
                let cidr = address(ip6)?;
                Some(CniIpv6 {
                    ip: host_part(&cidr, "IPv6")?,
                    gateway: field(&ip6["gateway"], "ips[].gateway")?,
                    cidr,
                })
            }
        };
        Ok(Self {
            ip: host_part(&cidr, "IPv4")?,
            gateway: field(&ip["gateway"], "ips[].gateway")?,
            ipv6,
            mac: field(&eth0["mac"], "eth0.mac")?.to_lowercase(),
            netns: PathBuf::from(field(&eth0["sandbox"], "eth0.sandbox")?),
            cidr,
        })
    }
}

/// The address of `cidr` ("10.200.7.2/24"), of the `family` it must be.
fn host_part<A: std::str::FromStr>(cidr: &str, family: &str) -> Result<A, String> {
    cidr.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{cidr:?} is not an {family} pod address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of what containerd 1.6's libcni writes for a bridge
    /// network (the config and args cut short).
    const CACHED: &str = r#"{
        "kind": "cniCacheV1",
        "containerId": "abc",
        "ifName": "eth0",
        "networkName": "vmrun-test-1-0",
        "result": {
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "vmr1-0", "mac": "5e:00:00:00:00:01"},
                {"name": "veth1234", "mac": "5e:00:00:00:00:02"},
                {"name": "eth0", "mac": "0A:58:0A:C8:07:02", "sandbox": "/run/netns/cni-1"}
            ],
            "ips": [{"interface": 2, "address": "10.200.7.2/24", "gateway": "10.200.7.1"}],
            "routes": [{"dst": "0.0.0.0/0"}]
        }
    }"#;

    #[test]
    fn a_cached_result_gives_eth0s_attachment() {
        let a = CniAttachment::parse(CACHED).unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 200, 7, 2));
        assert_eq!(a.cidr, "10.200.7.2/24");
        assert_eq!(a.gateway, "10.200.7.1");
        assert_eq!(a.mac, "0a:58:0a:c8:07:02");
        assert_eq!(a.netns, PathBuf::from("/run/netns/cni-1"));
        assert!(a.ipv6.is_none());
    }

    #[test]
    fn a_dual_stack_result_gives_both_families_whatever_their_order() {
        let dual = CACHED.replace(
            r#""ips": [{"interface": 2, "address": "10.200.7.2/24", "gateway": "10.200.7.1"}]"#,
            r#""ips": [
                {"interface": 2, "address": "fd76:6d72:7::2/64", "gateway": "fd76:6d72:7::1"},
                {"interface": 2, "address": "10.200.7.2/24", "gateway": "10.200.7.1"}
            ]"#,
        );
        let a = CniAttachment::parse(&dual).unwrap();
        assert_eq!(a.cidr, "10.200.7.2/24");
        assert_eq!(a.gateway, "10.200.7.1");
        let v6 = a.ipv6.expect("the IPv6 address");
        assert_eq!(v6.ip, "fd76:6d72:7::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6.cidr, "fd76:6d72:7::2/64");
        assert_eq!(v6.gateway, "fd76:6d72:7::1");
    }

    #[test]
    fn a_result_without_eth0_is_an_error_that_shows_it() {
        let err = CniAttachment::parse(r#"{"result": {"interfaces": []}}"#).unwrap_err();
        assert!(err.contains("no eth0"), "{err}");
        assert!(CniAttachment::parse("{").is_err());
    }
}
