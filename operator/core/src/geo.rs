//! Geography, pure: continent reference points and great-circle distance (to rank regions for a client
//! continent), and the GeoIP table (CIDR → continent) read from a simple text format. No IO.

use std::net::IpAddr;
use std::str::FromStr;

use azora_api::Continent;
use ipnet::IpNet;

/// A representative point (latitude, longitude) for each continent's population.
pub fn continent_point(c: Continent) -> (f64, f64) {
    match c {
        Continent::Africa => (2.0, 17.0),
        Continent::Europe => (50.0, 10.0),
        Continent::Asia => (25.0, 95.0),
        Continent::NorthAmerica => (40.0, -95.0),
        Continent::SouthAmerica => (-15.0, -55.0),
        Continent::Oceania => (-25.0, 135.0),
        Continent::Antarctica => (-80.0, 0.0),
    }
}

/// Great-circle distance in kilometres.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h =
        ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// CIDR → continent, longest prefix wins.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GeoIpTable {
    entries: Vec<(IpNet, Continent)>,
}

/// A line of a GeoIP table that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("geoip line {line}: {reason}")]
pub struct GeoIpError {
    /// 1-based line number.
    pub line: usize,
    /// Why.
    pub reason: String,
}

impl GeoIpTable {
    /// Parses lines `CIDR CONTINENT` (e.g. `41.0.0.0/8 Africa`); `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, GeoIpError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let err = |reason: String| GeoIpError { line: i + 1, reason };
            let mut parts = line.split_whitespace();
            let (Some(cidr), Some(cont), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(err("expected `CIDR CONTINENT`".into()));
            };
            let net = IpNet::from_str(cidr).map_err(|e| err(format!("{cidr}: {e}")))?;
            let c = Continent::from_str(cont).map_err(|_| err(format!("unknown continent {cont}")))?;
            entries.push((net, c));
        }
        entries.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        Ok(Self { entries })
    }

    /// The continent of an address, if the table knows it.
    pub fn lookup(&self, ip: IpAddr) -> Option<Continent> {
        self.entries
            .iter()
            .find(|(n, _)| n.contains(&ip))
            .map(|(_, c)| *c)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagos_is_nearer_africa_than_frankfurt_is() {
        let africa = continent_point(Continent::Africa);
        assert!(distance_km(africa, (6.52, 3.38)) < distance_km(africa, (50.11, 8.68)));
        let sa = continent_point(Continent::SouthAmerica);
        assert!(distance_km(sa, (-23.55, -46.63)) < distance_km(sa, (6.52, 3.38)));
    }

    #[test]
    fn longest_prefix_wins() {
        let t = GeoIpTable::parse("10.0.0.0/8 Europe\n10.1.0.0/16 Asia # office\n\n2001:db8::/32 Oceania")
            .unwrap();
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(Continent::Asia));
        assert_eq!(t.lookup("10.9.2.3".parse().unwrap()), Some(Continent::Europe));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), Some(Continent::Oceania));
        assert_eq!(t.lookup("192.0.2.1".parse().unwrap()), None);
    }

    #[test]
    fn bad_lines_name_their_line() {
        assert_eq!(GeoIpTable::parse("10.0.0.0/8 Atlantis").unwrap_err().line, 1);
        assert_eq!(GeoIpTable::parse("# c\n10.0.0.0/33 Europe").unwrap_err().line, 2);
    }
}
