//! DNS (IO): what the zones answer (`ZoneData`, published with a fencing epoch), the embedded authoritative
//! GeoDNS server every replica runs, RFC 2136 updates signed with TSIG for external servers, and
//! verification by resolving against the authoritative servers.

pub mod embedded;
pub mod rfc2136;
pub mod verify;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// One region's addresses in an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Region name.
    pub region: String,
    /// A records.
    pub ipv4: Vec<Ipv4Addr>,
    /// AAAA records.
    pub ipv6: Vec<Ipv6Addr>,
    /// Weight (Weighted strategy; 1 otherwise).
    pub weight: u32,
}

/// Everything a zone answers, as decided by the leader at one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneData {
    /// Zone apex, fully qualified and lower case (`azora.example.`).
    pub zone: String,
    /// Names inside the zone that follow the policy (`api`, `@`).
    pub hostnames: Vec<String>,
    /// TTL of the answers.
    pub ttl: u32,
    /// Fencing epoch: a zone is only ever replaced by data with an equal or newer epoch.
    pub epoch: u64,
    /// Targets per client geography (`default`, `Africa`, ...).
    pub answers: BTreeMap<String, Vec<Target>>,
}

impl ZoneData {
    /// Fully qualified host names (`api.azora.example.`; `@` is the apex).
    pub fn fqdns(&self) -> Vec<String> {
        self.hostnames
            .iter()
            .map(|h| {
                if h == "@" {
                    self.zone.clone()
                } else {
                    format!("{}.{}", h.trim_end_matches('.'), self.zone)
                }
            })
            .collect()
    }

    /// The default answer's IPv4 addresses, sorted (what a verifier expects to see).
    pub fn default_ipv4(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .answers
            .get("default")
            .into_iter()
            .flatten()
            .flat_map(|t| t.ipv4.iter().copied())
            .collect();
        v.sort();
        v
    }
}

/// Errors of publishing DNS data.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum DnsError {
    /// Data carrying an older epoch than what is served: a deposed leader's late write.
    #[error("stale epoch {offered} for zone {zone}: serving epoch {serving}")]
    StaleEpoch {
        zone: String,
        offered: u64,
        serving: u64,
    },
    /// The update was refused by the server.
    #[error("update refused: {0}")]
    Refused(String),
    /// Network or protocol trouble.
    #[error("dns transport: {0}")]
    Transport(String),
    /// Bad configuration (names, keys).
    #[error("dns configuration: {0}")]
    Config(String),
}

impl DnsError {
    /// Fixed category for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        self.into()
    }
}
