//! Choosing the local cluster's private subnet.
//!
//! The subnet exists only inside namespaces we create, but a subnet that overlaps anything
//! the host has (an address, a route, a gateway) could make a mistake send traffic to a real
//! network, and makes `ip` output ambiguous to a human. So we read the host's `ip -4 addr` and
//! `ip -4 route show table all` and take the first candidate that overlaps none of them. The
//! parsing and the choice are pure functions; only [`read_host_networks`] runs `ip`.

use std::fmt;
use std::net::Ipv4Addr;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use crate::cmd::{self, CmdError};

/// An IPv4 network: an address and a prefix length (`10.213.0.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bad IPv4 network `{0}` (want a.b.c.d or a.b.c.d/len)")]
    BadNetwork(String),
    #[error("cannot parse `ip -j` output: {0}")]
    BadIpJson(String),
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("every candidate subnet overlaps the host's addresses or routes ({host:?})")]
    NoFreeSubnet { host: Vec<String> },
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, NetError> {
        if prefix_len > 32 {
            return Err(NetError::BadNetwork(format!("{addr}/{prefix_len}")));
        }
        Ok(Self { addr, prefix_len })
    }

    fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    /// The first address of the network.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The last address of the network.
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Two networks overlap when either contains the other's first address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// The `index`-th address of the network (`index` 0 is the network address), or `None`
    /// past the broadcast address.
    pub fn host(&self, index: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix_len));
        if u64::from(index) >= size.saturating_sub(1) || index == 0 {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network()) + index))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;
    fn from_str(text: &str) -> Result<Self, NetError> {
        let bad = || NetError::BadNetwork(text.to_string());
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, len.parse::<u8>().map_err(|_| bad())?),
            None => (text, 32),
        };
        let addr = addr.parse::<Ipv4Addr>().map_err(|_| bad())?;
        Ipv4Net::new(addr, len).map_err(|_| bad())
    }
}

/// Candidates in private space, tried in order. Several, so one taken by the host (a VPN, a
/// docker bridge) does not stop us.
pub const CANDIDATE_SUBNETS: &[&str] = &[
    "10.213.0.0/24",
    "10.213.77.0/24",
    "10.147.31.0/24",
    "172.29.213.0/24",
    "192.168.213.0/24",
];

/// The networks the host has, from `ip -j -4 addr` and `ip -j -4 route show table all`
/// output: every interface address with its prefix, every route destination except the
/// default route (which would overlap everything and names no range the host owns), and
/// every gateway.
pub fn host_networks_from_json(
    addr_json: &str,
    route_json: &str,
) -> Result<Vec<Ipv4Net>, NetError> {
    let bad = |e: &dyn fmt::Display| NetError::BadIpJson(e.to_string());
    let addrs: serde_json::Value = serde_json::from_str(addr_json).map_err(|e| bad(&e))?;
    let routes: serde_json::Value = serde_json::from_str(route_json).map_err(|e| bad(&e))?;
    let mut networks = Vec::new();
    for link in addrs.as_array().ok_or_else(|| bad(&"addr: not an array"))? {
        let Some(infos) = link.get("addr_info").and_then(|v| v.as_array()) else {
            continue;
        };
        for info in infos {
            if info.get("family").and_then(|v| v.as_str()) != Some("inet") {
                continue;
            }
            let local = info
                .get("local")
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad(&"addr without local"))?;
            let len = info.get("prefixlen").and_then(|v| v.as_u64()).unwrap_or(32);
            networks.push(format!("{local}/{len}").parse()?);
        }
    }
    for route in routes
        .as_array()
        .ok_or_else(|| bad(&"route: not an array"))?
    {
        if let Some(dst) = route.get("dst").and_then(|v| v.as_str()) {
            if dst != "default" && dst != "0.0.0.0/0" {
                networks.push(dst.parse()?);
            }
        }
        if let Some(gateway) = route.get("gateway").and_then(|v| v.as_str()) {
            networks.push(gateway.parse()?);
        }
    }
    Ok(networks)
}

/// Runs `ip` to read the host's networks (see [`host_networks_from_json`]).
pub fn read_host_networks() -> Result<Vec<Ipv4Net>, NetError> {
    let timeout = Duration::from_secs(10);
    let addrs = cmd::run_ok(Command::new("ip").args(["-j", "-4", "addr"]), timeout)?;
    let routes = cmd::run_ok(
        Command::new("ip").args(["-j", "-4", "route", "show", "table", "all"]),
        timeout,
    )?;
    host_networks_from_json(&addrs.stdout, &routes.stdout)
}

/// The first candidate that overlaps none of `taken`.
pub fn choose_subnet(candidates: &[Ipv4Net], taken: &[Ipv4Net]) -> Result<Ipv4Net, NetError> {
    candidates
        .iter()
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
        .copied()
        .ok_or_else(|| NetError::NoFreeSubnet {
            host: taken.iter().map(|t| t.to_string()).collect(),
        })
}

/// Parses [`CANDIDATE_SUBNETS`].
pub fn default_candidates() -> Vec<Ipv4Net> {
    CANDIDATE_SUBNETS
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        assert!(net("10.0.0.0/8").overlaps(&net("10.213.0.0/24")));
        assert!(net("10.213.0.0/24").overlaps(&net("10.0.0.0/8")));
        assert!(net("10.213.0.5").overlaps(&net("10.213.0.0/24")));
        assert!(!net("10.213.1.0/24").overlaps(&net("10.213.0.0/24")));
        assert!(!net("10.213.0.0/24").overlaps(&net("10.213.1.0/24")));
        assert!(net("0.0.0.0/0").overlaps(&net("1.2.3.4")));
    }

    #[test]
    fn hosts_skip_network_and_broadcast() {
        let n = net("10.213.0.0/24");
        assert_eq!(n.host(0), None);
        assert_eq!(n.host(1), Some(Ipv4Addr::new(10, 213, 0, 1)));
        assert_eq!(n.host(254), Some(Ipv4Addr::new(10, 213, 0, 254)));
        assert_eq!(n.host(255), None);
        assert_eq!(n.last(), Ipv4Addr::new(10, 213, 0, 255));
    }

    #[test]
    fn bad_networks_are_refused() {
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.0.0/8".parse::<Ipv4Net>().is_err());
        assert!("x".parse::<Ipv4Net>().is_err());
    }

    const ADDRS: &str = r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
        {"ifname":"eth0","addr_info":[{"family":"inet","local":"10.213.0.7","prefixlen":16}]}]"#;
    const ROUTES: &str = r#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"},
        {"dst":"172.29.0.0/16","dev":"docker0"},{"type":"local","dst":"127.0.0.1","table":"local"}]"#;

    #[test]
    fn host_parse_takes_addresses_routes_and_gateways_but_not_default() {
        let got = host_networks_from_json(ADDRS, ROUTES).unwrap();
        assert!(got.contains(&net("127.0.0.1/8")));
        assert!(got.contains(&net("10.213.0.7/16")));
        assert!(got.contains(&net("172.29.0.0/16")));
        assert!(got.contains(&net("192.0.2.1")));
        assert!(!got.iter().any(|n| n.prefix_len == 0));
    }

    #[test]
    fn choice_skips_every_overlapping_candidate() {
        let taken = host_networks_from_json(ADDRS, ROUTES).unwrap();
        let chosen = choose_subnet(&default_candidates(), &taken).unwrap();
        // 10.213.x is inside the host's 10.213.0.0/16, 172.29.213/24 inside a docker route.
        assert_eq!(chosen, net("10.147.31.0/24"));
        let everything = vec![
            net("10.0.0.0/8"),
            net("172.16.0.0/12"),
            net("192.168.0.0/16"),
        ];
        assert!(matches!(
            choose_subnet(&default_candidates(), &everything),
            Err(NetError::NoFreeSubnet { .. })
        ));
    }
}
