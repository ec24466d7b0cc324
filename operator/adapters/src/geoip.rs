//! GeoIP sources (IO): the `CIDR CONTINENT` text table (`azora_core::geo::GeoIpTable`) or the format operators
//! already have, a MaxMind/DB-IP `.mmdb` database (GeoLite2/GeoIP2 Country or City, DB-IP's lite databases):
//! the continent comes from the record's `continent.code`. Loaded from a file (format told by content, not
//! name) and reloaded when the file changes; a file that cannot be read keeps the source in use.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azora_api::Continent;
use azora_core::geo::GeoIpTable;
use maxminddb::{PathElement, Reader};
use tracing::{info, warn};

/// The marker that starts an `.mmdb` file's metadata section (MaxMind DB spec).
const MMDB_METADATA: &[u8] = b"\xab\xcd\xefMaxMind.com";

/// Where client continents come from.
#[derive(Clone, Default)]
pub enum GeoIp {
    /// A `CIDR CONTINENT` table (possibly empty: no geography).
    #[default]
    Empty,
    /// A text table.
    Table(Arc<GeoIpTable>),
    /// An `.mmdb` database.
    Mmdb(Arc<Reader<Vec<u8>>>),
}

impl From<GeoIpTable> for GeoIp {
    fn from(t: GeoIpTable) -> Self {
        if t.is_empty() {
            Self::Empty
        } else {
            Self::Table(Arc::new(t))
        }
    }
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Why a GeoIP file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpLoadError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An `.mmdb` file that does not open.
    #[error("{path}: not a usable MaxMind DB: {reason}")]
    Mmdb {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A text table with a bad line.
    #[error("{path}: {source}")]
    Table {
        /// The file.
        path: String,
        /// Which line and why.
        source: azora_core::geo::GeoIpError,
    },
}

/// A MaxMind continent code as a continent.
pub fn continent_of_code(code: &str) -> Option<Continent> {
    Some(match code {
        "AF" => Continent::Africa,
        "EU" => Continent::Europe,
        "AS" => Continent::Asia,
        "NA" => Continent::NorthAmerica,
        "SA" => Continent::SouthAmerica,
        "OC" => Continent::Oceania,
        "AN" => Continent::Antarctica,
        _ => return None,
    })
}

impl GeoIp {
    /// Reads a GeoIP file: an `.mmdb` database when it carries the MaxMind metadata marker, else a text table.
    pub fn load(path: &Path) -> Result<Self, GeoIpLoadError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| GeoIpLoadError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_bytes(&shown, bytes)
    }

    /// Parses the bytes of a GeoIP file named `name` (for messages).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self, GeoIpLoadError> {
        // The metadata section sits in the last 128 KiB of the file.
        let tail = &bytes[bytes.len().saturating_sub(128 * 1024)..];
        if tail.windows(MMDB_METADATA.len()).any(|w| w == MMDB_METADATA) {
            let reader = Reader::from_source(bytes).map_err(|e| GeoIpLoadError::Mmdb {
                path: name.to_string(),
                reason: e.to_string(),
            })?;
            return Ok(Self::Mmdb(Arc::new(reader)));
        }
        let text = String::from_utf8(bytes).map_err(|_| GeoIpLoadError::Mmdb {
            path: name.to_string(),
            reason: "neither a MaxMind DB (no metadata marker) nor a UTF-8 `CIDR CONTINENT` table".into(),
        })?;
        GeoIpTable::parse(&text)
            .map(Self::from)
            .map_err(|source| GeoIpLoadError::Table {
                path: name.to_string(),
                source,
            })
    }

    /// The continent of an address, if the source knows it.
    pub fn lookup(&self, ip: IpAddr) -> Option<Continent> {
        match self {
            Self::Empty => None,
            Self::Table(t) => t.lookup(ip.to_canonical()),
            Self::Mmdb(r) => {
                // An IPv4 client seen on an IPv6 socket (`::ffff:a.b.c.d`) is looked up as IPv4.
                let found = r.lookup(ip.to_canonical()).ok()?;
                let code: Option<String> = found
                    .decode_path(&[PathElement::Key("continent"), PathElement::Key("code")])
                    .ok()?;
                continent_of_code(code.as_deref()?)
            }
        }
    }

    /// Whether it knows no address at all.
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    /// What it is, for logs: kind, size, database type and build date.
    pub fn describe(&self) -> String {
        match self {
            Self::Empty => "no GeoIP data".into(),
            Self::Table(t) => format!("GeoIP table, {} entries", t.len()),
            Self::Mmdb(r) => {
                let m = r.metadata();
                let built = jiff::Timestamp::from_second(i64::try_from(m.build_epoch).unwrap_or(0))
                    .map(|t| t.strftime("%Y-%m-%d").to_string())
                    .unwrap_or_default();
                format!(
                    "MaxMind DB {} built {built}, {} nodes, IPv{}",
                    m.database_type, m.node_count, m.ip_version
                )
            }
        }
    }
}

/// What identifies a file's content without reading it: size, modification time and inode (a ConfigMap
/// volume swaps a symlink; `metadata` follows it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn signature(path: &Path) -> Option<Signature> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Signature {
        len: m.len(),
        modified: m.modified().ok(),
        inode,
    })
}

/// Loads a GeoIP file for `watch`: the signature is taken before the read, so a change made while it is read
/// is seen by the watch.
pub fn load_watched(path: &Path) -> Result<(GeoIp, Option<Signature>), GeoIpLoadError> {
    let seen = signature(path);
    Ok((GeoIp::load(path)?, seen))
}

/// Watches a GeoIP file: every `every`, when its size, time or inode changed and then stayed the same for one
/// more interval (a file being written in place is not read half way), reads it again and hands the new
/// source to `apply`. A file that is missing or does not parse keeps the source in use (one warning per change
/// seen). `seen` is the signature of what was loaded. Runs until `stop` resolves.
pub async fn watch(
    path: PathBuf,
    seen: Option<Signature>,
    every: Duration,
    apply: impl Fn(GeoIp) + Send,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut seen = seen;
    let mut settling: Option<Option<Signature>> = None;
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = signature(&path);
        if now == seen {
            settling = None;
            continue;
        }
        if settling.as_ref() != Some(&now) {
            // Changed since the last look: read it once it has stayed the same for an interval.
            settling = Some(now);
            continue;
        }
        settling = None;
        seen = now;
        if seen.is_none() {
            warn!(path = %path.display(), "GeoIP file is gone: keeping the data in use");
            continue;
        }
        let p = path.clone();
        match tokio::task::spawn_blocking(move || GeoIp::load(&p)).await {
            Ok(Ok(g)) => {
                info!(path = %path.display(), source = %g.describe(), "GeoIP data reloaded");
                apply(g);
            }
            Ok(Err(e)) => {
                warn!(
                    error = &e as &dyn std::error::Error,
                    "GeoIP file changed but cannot be used: keeping the data in use"
                )
            }
            Err(e) => warn!(error = %e, "GeoIP reload task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_table_is_told_from_its_content() {
        let g = GeoIp::from_bytes("t", b"198.51.100.0/24 Europe\n".to_vec()).unwrap();
        assert!(matches!(g, GeoIp::Table(_)));
        assert_eq!(g.lookup("198.51.100.7".parse().unwrap()), Some(Continent::Europe));
        assert_eq!(g.lookup("192.0.2.1".parse().unwrap()), None);
        assert!(
            GeoIp::from_bytes("t", b"# nothing\n".to_vec())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        let e = GeoIp::from_bytes("x.mmdb", vec![0xff, 0xfe, 0x00, 0x01]).unwrap_err();
        assert!(e.to_string().contains("neither a MaxMind DB"), "{e}");
        let mut fake = vec![0u8; 64];
        fake.extend_from_slice(MMDB_METADATA);
        fake.extend_from_slice(b"garbage");
        let e = GeoIp::from_bytes("x.mmdb", fake).unwrap_err();
        assert!(matches!(e, GeoIpLoadError::Mmdb { .. }), "{e}");
        let e = GeoIp::from_bytes("t", b"10.0.0.0/8 Atlantis\n".to_vec()).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn maxmind_continent_codes_map_to_continents() {
        assert_eq!(continent_of_code("AF"), Some(Continent::Africa));
        assert_eq!(continent_of_code("SA"), Some(Continent::SouthAmerica));
        assert_eq!(continent_of_code("AN"), Some(Continent::Antarctica));
        assert_eq!(continent_of_code("XX"), None);
    }
}
