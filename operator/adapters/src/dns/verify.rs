//! Verification (IO): resolve the policy's hostnames directly against each authoritative server with
//! hickory-resolver (no recursion, no cache) and compare with what was published.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::RData;
use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::DnsError;

/// A resolver asking exactly one server: one UDP attempt, no recursion, no cache.
fn resolver_for(server: SocketAddr, timeout: Duration) -> Result<Resolver<TokioRuntimeProvider>, DnsError> {
    let mut config = ResolverConfig::default();
    let mut conn = ConnectionConfig::udp();
    conn.port = server.port();
    config.add_name_server(NameServerConfig::new(server.ip(), true, vec![conn]));
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.cache_size = 0;
    opts.recursion_desired = false;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| DnsError::Config(format!("resolver: {e}")))
}

/// Resolves `host` (A) against exactly one server.
pub async fn resolve_a(server: SocketAddr, host: &str, timeout: Duration) -> Result<Vec<Ipv4Addr>, DnsError> {
    let resolver = resolver_for(server, timeout)?;
    let lookup = resolver
        .lookup(host, hickory_proto::rr::RecordType::A)
        .await
        .map_err(|e| DnsError::Transport(format!("{server}: {e}")))?;
    let mut ips: Vec<Ipv4Addr> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    Ok(ips)
}

/// Polls every server until each answers `host` with exactly `expected`, or `deadline` passes.
pub async fn until_answers(
    servers: &[SocketAddr],
    host: &str,
    expected: &[Ipv4Addr],
    deadline: Duration,
) -> Result<Duration, DnsError> {
    let start = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let mut all = true;
        for s in servers {
            match resolve_a(*s, host, Duration::from_millis(500)).await {
                Ok(ips) if ips == expected => {}
                Ok(ips) => {
                    all = false;
                    last = format!("{s} answered {ips:?}");
                }
                Err(e) => {
                    all = false;
                    last = e.to_string();
                }
            }
        }
        if all {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= deadline {
            return Err(DnsError::Transport(format!(
                "not verified within {deadline:?}: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fencing epoch a server holds for `zone` (its `_azora-epoch` TXT), if any.
pub async fn epoch_of(server: SocketAddr, zone: &str, timeout: Duration) -> Result<Option<u64>, DnsError> {
    let resolver = resolver_for(server, timeout)?;
    let name = format!("_azora-epoch.{zone}");
    match resolver
        .lookup(name.as_str(), hickory_proto::rr::RecordType::TXT)
        .await
    {
        Ok(l) => Ok(l.answers().iter().find_map(|r| match &r.data {
            RData::TXT(t) => t.to_string().trim_matches('"').parse().ok(),
            _ => None,
        })),
        Err(e) if e.is_no_records_found() => Ok(None),
        Err(e) => Err(DnsError::Transport(format!("{server}: {e}"))),
    }
}
