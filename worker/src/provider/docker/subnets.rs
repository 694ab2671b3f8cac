//! Addresses for per-sandbox networks. Each network gets a small IPv4 subnet
//! (`docker.subnet_prefix`, a /28 by default: a gateway and 13 addresses) carved from
//! `docker.subnet_pool` (10.213.0.0/16 by default), instead of one of the engine's
//! default address pools, which hand every network a /16 or a /20 and run out after
//! a few dozen networks. A /16 pool holds 4096 sandbox networks of /28.
//!
//! The picker is given every subnet the engine holds, whoever's network it is (other
//! workers', the operator's, the default bridge), and takes the first subnet of the
//! pool that overlaps none of them. Spawns of one worker pick and create one at a
//! time (the provider's lock); workers sharing an engine may still pick the same
//! subnet at once: the engine refuses the second network ("pool overlaps"), and that
//! spawn picks again without it, a bounded number of times. A pool with no free
//! subnet left answers `Unavailable` naming the settings to change.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::query_parameters::ListNetworksOptions;
use serde::{Deserialize, Deserializer};

use super::engine::{engine_error, message_of};
use crate::provider::ProviderError;

/// An IPv4 network: an address with every host bit zero, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    network: u32,
    prefix: u8,
}

impl Ipv4Net {
    /// `address/prefix`; refused if the address has host bits set.
    pub fn new(address: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if prefix > 32 {
            return Err(format!("/{prefix} is not an IPv4 prefix length"));
        }
        let net = Self::covering(address, prefix);
        if net.network != u32::from(address) {
            return Err(format!(
                "{address}/{prefix} has host bits set (the network is {net})"
            ));
        }
        Ok(net)
    }

    /// `a.b.c.d/prefix` for constants; panics (at compile time) with host bits set.
    pub const fn from_octets(octets: [u8; 4], prefix: u8) -> Self {
        let network = u32::from_be_bytes(octets);
        assert!(prefix <= 32 && network & !mask(prefix) == 0);
        Self { network, prefix }
    }

    /// The network of `prefix` bits that `address` is in.
    fn covering(address: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        Self {
            network: u32::from(address) & mask(prefix),
            prefix,
        }
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }

    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    fn first(self) -> u64 {
        u64::from(self.network)
    }

    fn last(self) -> u64 {
        u64::from(self.network | !mask(self.prefix))
    }

    /// The first host address: the gateway of a sandbox network.
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(self.network.wrapping_add(1))
    }

    pub fn overlaps(self, other: Self) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    /// How many subnets of `prefix` bits this network holds (0 if `prefix` is wider).
    pub fn subnets(self, prefix: u8) -> u64 {
        if prefix < self.prefix || prefix > 32 {
            0
        } else {
            1 << (prefix - self.prefix)
        }
    }
}

const fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        1..=31 => u32::MAX << (32 - prefix as u32),
        _ => u32::MAX,
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = value
            .split_once('/')
            .ok_or_else(|| format!("{value:?} is not an IPv4 CIDR (like 10.213.0.0/16)"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{value:?} is not an IPv4 CIDR (like 10.213.0.0/16)"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{value:?} is not an IPv4 CIDR (like 10.213.0.0/16)"))?;
        Self::new(address, prefix)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The first subnet of `prefix` bits in `pool` that overlaps nothing in `taken`.
pub fn pick(pool: Ipv4Net, prefix: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    if pool.subnets(prefix) == 0 {
        return None;
    }
    let size = 1u64 << (32 - u32::from(prefix));
    let mut start = pool.first();
    while start + size - 1 <= pool.last() {
        let candidate = Ipv4Net {
            network: u32::try_from(start).ok()?,
            prefix,
        };
        let blocking = taken
            .iter()
            .filter(|net| net.overlaps(candidate))
            .map(|net| net.last())
            .max();
        match blocking {
            None => return Some(candidate),
            // past the end of what is in the way, on a subnet boundary
            Some(last) => start = (last + 1).div_ceil(size) * size,
        }
    }
    None
}

/// Every IPv4 subnet of every network on the engine, whoever made it.
pub async fn in_use(docker: &Docker) -> Result<Vec<Ipv4Net>, ProviderError> {
    let networks = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(|err| engine_error("list networks", err))?;
    Ok(networks
        .into_iter()
        .filter_map(|network| network.ipam?.config)
        .flatten()
        .filter_map(|config| parse_engine_subnet(config.subnet.as_deref()?))
        .collect())
}

/// A subnet as the engine reports it; IPv6 and anything unreadable is left out
/// (sandbox networks are IPv4).
fn parse_engine_subnet(value: &str) -> Option<Ipv4Net> {
    let (address, prefix) = value.split_once('/')?;
    Some(Ipv4Net::covering(
        address.parse().ok()?,
        prefix.parse().ok()?,
    ))
}

/// Whether the engine refused a network because its subnet overlaps another's.
pub fn is_overlap(err: &EngineError) -> bool {
    message_of(err).to_lowercase().contains("overlaps")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(value: &str) -> Ipv4Net {
        value.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_print() {
        assert_eq!(net("10.213.0.0/16").to_string(), "10.213.0.0/16");
        assert_eq!(
            net("10.213.0.16/28").gateway(),
            Ipv4Addr::new(10, 213, 0, 17)
        );
        assert_eq!(net("0.0.0.0/0").subnets(2), 4);
        assert_eq!(net("10.213.0.0/16").subnets(28), 4096);
        assert_eq!(net("10.213.0.0/16").subnets(8), 0);
        for bad in [
            "10.213.0.1/16",
            "10.213.0.0",
            "10.213.0.0/33",
            "10.213.0/16",
            "fd00::/64",
            "",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
        assert_eq!(
            parse_engine_subnet("172.17.0.1/16"),
            Some(net("172.17.0.0/16"))
        );
        assert_eq!(parse_engine_subnet("fd00::/64"), None);
    }

    #[test]
    fn the_picker_takes_the_first_free_subnet_around_taken_ones() {
        let pool = net("10.213.0.0/16");
        assert_eq!(pick(pool, 28, &[]), Some(net("10.213.0.0/28")));
        // networks outside the pool are no obstacle
        let outside = [net("172.17.0.0/16"), net("192.168.0.0/20")];
        assert_eq!(pick(pool, 28, &outside), Some(net("10.213.0.0/28")));
        let taken = [
            net("10.213.0.0/28"),
            net("10.213.0.16/28"),
            net("10.213.0.48/28"),
        ];
        assert_eq!(pick(pool, 28, &taken), Some(net("10.213.0.32/28")));
        // a network bigger than a subnet blocks every subnet it covers
        let wide = [net("10.213.0.0/24")];
        assert_eq!(pick(pool, 28, &wide), Some(net("10.213.1.0/28")));
        // a smaller one blocks the subnet it is in
        let narrow = [net("10.213.0.4/30")];
        assert_eq!(pick(pool, 28, &narrow), Some(net("10.213.0.16/28")));
        // a network covering the whole pool, or more, leaves nothing
        assert_eq!(pick(pool, 28, &[net("10.0.0.0/8")]), None);
        // other prefix lengths
        assert_eq!(
            pick(pool, 24, &[net("10.213.0.16/28")]),
            Some(net("10.213.1.0/24"))
        );
        assert_eq!(pick(pool, 16, &[]), Some(pool));
        assert_eq!(pick(pool, 15, &[]), None, "wider than the pool");
    }

    #[test]
    fn a_full_pool_has_nothing_to_pick_until_a_subnet_is_freed() {
        let pool = net("10.213.7.0/26");
        let mut taken = Vec::new();
        while let Some(subnet) = pick(pool, 28, &taken) {
            assert!(!taken.iter().any(|t: &Ipv4Net| t.overlaps(subnet)));
            taken.push(subnet);
        }
        assert_eq!(taken.len(), 4);
        assert_eq!(taken[3], net("10.213.7.48/28"));
        taken.remove(1);
        assert_eq!(pick(pool, 28, &taken), Some(net("10.213.7.16/28")));
        // the top of the address space does not overflow
        let top = net("255.255.255.0/24");
        assert_eq!(pick(top, 28, &[]), Some(net("255.255.255.0/28")));
        assert_eq!(
            pick(
                top,
                28,
                &[net("255.255.255.0/25"), net("255.255.255.128/26")]
            ),
            Some(net("255.255.255.192/28"))
        );
        assert_eq!(pick(top, 28, &[net("255.255.255.0/24")]), None);
    }
}
