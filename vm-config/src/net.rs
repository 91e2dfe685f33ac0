//! The guest's network interfaces: each a virtio-net device on a host tap.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, RateLimit};

/// Longest Linux interface name (`IFNAMSIZ` less the NUL).
pub const MAX_TAP_NAME_LEN: usize = 15;
/// MTU range a guest interface can have (Linux's `ETH_MIN_MTU` up; the
/// field is 16 bits).
pub const MIN_MTU: u16 = 68;
/// The MTU of an interface nobody chose one for.
pub const DEFAULT_MTU: u16 = 1500;

/// One network interface of the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// The host tap interface it is connected to, in the VMM's network
    /// namespace; whoever starts the VMM makes it.
    pub tap: String,
    /// The guest's MAC address; a random locally administered one if unset.
    pub mac: Option<MacAddr>,
    /// The interface's MTU.
    pub mtu: u16,
    /// The VMM makes the tap (in [`crate::VmConfig::netns`]) rather than
    /// opening one that exists, and it goes away with the VMM: a pod's,
    /// which nothing else holds. Off for a tap the user made.
    pub create: bool,
    /// What the guest may receive per second (tap to guest): bytes of
    /// Ethernet frames and frames. Default: no limit.
    #[serde(skip_serializing_if = "RateLimit::is_unlimited")]
    pub rx_rate_limit: RateLimit,
    /// What the guest may send per second (guest to tap), likewise.
    #[serde(skip_serializing_if = "RateLimit::is_unlimited")]
    pub tx_rate_limit: RateLimit,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            tap: String::new(),
            mac: None,
            mtu: DEFAULT_MTU,
            create: false,
            rx_rate_limit: RateLimit::UNLIMITED,
            tx_rate_limit: RateLimit::UNLIMITED,
        }
    }
}

/// A MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether frames to it go to one interface (not multicast or
    /// broadcast) and it is not all zeros.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("invalid MAC address {s:?}: expected six hex bytes, aa:bb:cc:dd:ee:ff");
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(mac))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<MacAddr> for String {
    fn from(value: MacAddr) -> Self {
        value.to_string()
    }
}

/// What is wrong with a tap name, as Linux judges interface names.
fn tap_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty (the host tap to connect to)")
    } else if name.len() > MAX_TAP_NAME_LEN {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        Some("contains '/', ':', a NUL or whitespace")
    } else {
        None
    }
}

/// Checks every interface, naming the first bad field (`nets[1].mtu`).
pub(crate) fn validate(nets: &[NetConfig]) -> Result<(), ConfigError> {
    let bad = |index, field, why: String| ConfigError::Net { index, field, why };
    for (index, net) in nets.iter().enumerate() {
        if let Some(why) = tap_name_problem(&net.tap) {
            return Err(bad(index, "tap", format!("{:?} {why}", net.tap)));
        }
        if let Some(mac) = net.mac.filter(|mac| !mac.is_unicast()) {
            return Err(bad(index, "mac", format!("{mac} is not a unicast address")));
        }
        if net.mtu < MIN_MTU {
            return Err(bad(
                index,
                "mtu",
                format!("{} is below the minimum of {MIN_MTU}", net.mtu),
            ));
        }
        net.rx_rate_limit
            .validate(|| format!("nets[{index}].rx_rate_limit"))?;
        net.tx_rate_limit
            .validate(|| format!("nets[{index}].tx_rate_limit"))?;
        let earlier = &nets[..index];
        if let Some(other) = earlier.iter().position(|n| n.tap == net.tap) {
            return Err(bad(
                index,
                "tap",
                format!("{:?} is nets[{other}]'s tap too", net.tap),
            ));
        }
        if let Some(mac) = net.mac {
            if let Some(other) = earlier.iter().position(|n| n.mac == Some(mac)) {
                return Err(bad(
                    index,
                    "mac",
                    format!("{mac} is nets[{other}]'s MAC too"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{TokenBucket, VmConfig};

    fn net(tap: &str) -> NetConfig {
        NetConfig {
            tap: tap.into(),
            ..NetConfig::default()
        }
    }

    fn error_of(nets: Vec<NetConfig>) -> String {
        VmConfig {
            nets,
            ..VmConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn mac_addresses_parse_and_print() {
        let mac: MacAddr = "02:AB:cd:00:00:01".parse().unwrap();
        assert_eq!(mac, MacAddr([2, 0xab, 0xcd, 0, 0, 1]));
        assert_eq!(mac.to_string(), "02:ab:cd:00:00:01");
        assert!(mac.is_unicast());
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "2:0:0:0:0:1",
            "zz:00:00:00:00:00",
            "02-00-00-00-00-01",
        ] {
            assert!(
                bad.parse::<MacAddr>().unwrap_err().contains("invalid MAC"),
                "{bad:?}"
            );
        }
        assert!(!MacAddr([1, 0, 0, 0, 0, 0]).is_unicast());
        assert!(!MacAddr([0; 6]).is_unicast());
    }

    #[test]
    fn each_bad_field_is_named() {
        assert!(VmConfig {
            nets: vec![net("tap0"), net("fifteen-bytes-x")],
            ..VmConfig::default()
        }
        .validate()
        .is_ok());
        let cases = [
            (vec![net("")], "nets[0].tap: \"\" is empty"),
            (
                vec![net("sixteen-bytes-xx")],
                "nets[0].tap: \"sixteen-bytes-xx\" is longer than 15 bytes",
            ),
            (vec![net("a/b")], "nets[0].tap: \"a/b\" contains"),
            (vec![net(".")], "nets[0].tap: \".\" is . or .."),
            (
                vec![net("t0"), net("t0")],
                "nets[1].tap: \"t0\" is nets[0]'s tap too",
            ),
            (
                vec![NetConfig {
                    mac: Some(MacAddr([0xff; 6])),
                    ..net("t0")
                }],
                "nets[0].mac: ff:ff:ff:ff:ff:ff is not a unicast address",
            ),
            (
                vec![
                    NetConfig {
                        mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
                        ..net("t0")
                    },
                    NetConfig {
                        mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
                        ..net("t1")
                    },
                ],
                "nets[1].mac: 02:00:00:00:00:01 is nets[0]'s MAC too",
            ),
            (
                vec![NetConfig {
                    mtu: 67,
                    ..net("t0")
                }],
                "nets[0].mtu: 67 is below the minimum of 68",
            ),
        ];
        for (nets, message) in cases {
            let err = error_of(nets);
            assert!(err.contains(message), "{err:?} lacks {message:?}");
        }
    }

    #[test]
    fn interfaces_round_trip_as_json() {
        let config = VmConfig {
            nets: vec![NetConfig {
                tap: "tap0".into(),
                mac: Some(MacAddr([2, 0, 0, 0, 0, 7])),
                mtu: 9000,
                create: true,
                rx_rate_limit: RateLimit::UNLIMITED,
                tx_rate_limit: RateLimit {
                    bytes: Some(TokenBucket {
                        rate: 1 << 20,
                        burst: Some(1 << 21),
                    }),
                    ops: None,
                },
            }],
            ..VmConfig::default()
        };
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains(r#""mac":"02:00:00:00:00:07""#), "{json}");
        assert!(
            json.contains(r#""tx_rate_limit":{"bytes":{"rate":1048576,"burst":2097152}}"#),
            "{json}"
        );
        assert!(
            !json.contains("rx_rate_limit"),
            "unlimited is left out: {json}"
        );
        assert_eq!(serde_json::from_str::<VmConfig>(&json).unwrap(), config);
        let partial: VmConfig = serde_json::from_str(r#"{"nets": [{"tap": "t0"}]}"#).unwrap();
        assert_eq!(partial.nets, [net("t0")]);
        let err = serde_json::from_str::<VmConfig>(r#"{"nets": [{"tap": "t0", "ip": "x"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `ip`"), "{err}");
        let err = serde_json::from_str::<VmConfig>(r#"{"nets": [{"tap": "t0", "mac": "x"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid MAC address"), "{err}");
    }

    /// Both limits default to none, parse as the other limits do, and a
    /// bucket that passes nothing is refused with its field named.
    #[test]
    fn rate_limits_default_to_none_parse_and_name_the_bad_field() {
        let parsed: VmConfig = serde_json::from_str(
            r#"{"nets": [{"tap": "t0"}, {"tap": "t1",
                "rx_rate_limit": {"ops": {"rate": 1000}},
                "tx_rate_limit": {"bytes": {"rate": 125000000, "burst": 250000000}}}]}"#,
        )
        .unwrap();
        assert!(parsed.nets[0].rx_rate_limit.is_unlimited());
        assert!(parsed.nets[0].tx_rate_limit.is_unlimited());
        assert_eq!(
            parsed.nets[1].rx_rate_limit,
            RateLimit {
                ops: Some(TokenBucket::per_second(1000)),
                bytes: None,
            }
        );
        let tx = parsed.nets[1].tx_rate_limit.bytes.unwrap();
        assert_eq!((tx.rate, tx.burst()), (125_000_000, 250_000_000));
        assert_eq!(parsed.validate(), Ok(()));

        let zero_rate = TokenBucket::per_second(0);
        let zero_burst = TokenBucket {
            rate: 10,
            burst: Some(0),
        };
        let cases = [
            (
                vec![NetConfig {
                    tx_rate_limit: RateLimit {
                        bytes: Some(zero_rate),
                        ops: None,
                    },
                    ..net("t0")
                }],
                "nets[0].tx_rate_limit: bytes.rate must be at least 1",
            ),
            (
                vec![
                    net("t0"),
                    NetConfig {
                        rx_rate_limit: RateLimit {
                            bytes: None,
                            ops: Some(zero_burst),
                        },
                        ..net("t1")
                    },
                ],
                "nets[1].rx_rate_limit: ops.burst must be at least 1",
            ),
        ];
        for (nets, message) in cases {
            let err = error_of(nets);
            assert!(err.contains(message), "{err:?} lacks {message:?}");
        }
        let err = serde_json::from_str::<VmConfig>(
            r#"{"nets": [{"tap": "t0", "tx_rate_limit": {"frames": {"rate": 1}}}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `frames`"), "{err}");
    }
}
