//! Secret rotation decisions: what makes a secret unusable, when it is due, and what a Vault key's
//! metadata says about a rotation recorded before its write. Pure; the secrets room does the IO.
//!
//! A write to a Vault key is claimed first: the key's custom metadata names the rotation, the home version
//! it carries and the key version the write will produce; then the data is written with check-and-set on
//! the version before. After a crash the claim and the key's newest version tell whether that write
//! happened (never a second write of the same rotation) or someone else wrote (a conflict, reported).

use std::collections::BTreeMap;
use std::time::Duration;

use azora_api::tenant::{GeneratorKind, TenantSecret};

use crate::duration::parse_duration;

/// Reserved key in a version's data naming the rotation that wrote it: the version itself says whose it is
/// (custom metadata is the key's, not the version's). Never synced into target Secrets.
pub const DATA_ROTATION: &str = "azora.io/rotation-id";
/// A version's data: digests of the rotate-now request it carries out (see [`record_in_data`]).
pub const DATA_ROTATE_NOW: &str = "azora.io/rotate-now-handled";
/// A version's data: the version below which every version leaked (see [`record_in_data`]).
pub const DATA_REVOKED_BELOW: &str = "azora.io/revoked-below";

/// Whether a data key is the operator's own (kept in Vault, left out of target Secrets).
pub fn reserved(key: &str) -> bool {
    key.starts_with("azora.io/")
}

/// Custom metadata: the rotation whose write the key holds (or is about to).
pub const META_ROTATION: &str = "azora.io/rotation-id";
/// Custom metadata: the home region's version the claimed write carries.
pub const META_HOME_VERSION: &str = "azora.io/home-version";
/// Custom metadata: the key version the claimed write produces.
pub const META_WRITES: &str = "azora.io/writes-version";

/// Where a tenant's secrets live in every region's KV mount: `tenants/<tenant>/…` (what the shipped policy
/// grants), so one tenant can never name another's secret.
pub fn tenant_prefix(tenant: &str) -> String {
    format!("tenants/{tenant}/")
}

/// Why each of a tenant's secrets cannot be rotated or synced (reason, message), in spec order: its own
/// settings ([`check`]), a path outside `tenants/<tenant>/`, or a path or target Secret another secret of the
/// tenant also uses (their writes would replace each other's keys). Nothing is written for such a secret.
pub fn check_all(
    tenant: &str,
    secrets: &[TenantSecret],
    hosts: &VerifyHosts<'_>,
) -> Vec<Option<(&'static str, String)>> {
    let prefix = tenant_prefix(tenant);
    secrets
        .iter()
        .map(|s| {
            if let Some(p) = check(s) {
                return Some(p);
            }
            if let Some(v) = &s.verify
                && let Ok(host) = verify_host(&v.url)
                && !hosts.allows(tenant, &host)
            {
                return Some((
                    "VerifyHostNotAllowed",
                    format!(
                        "secret {}: verify.url calls {host}, which is neither one of the tenant's hostnames \
                         (or a name under one) nor allowed by the operator's --verify-allowed-hosts{}",
                        s.name,
                        if hosts.patterns.is_empty() {
                            " (none set)".to_string()
                        } else {
                            format!(" ({})", hosts.patterns.join(", "))
                        }
                    ),
                ));
            }
            if !s.vault_path.starts_with(&prefix) {
                return Some((
                    "InvalidVaultPath",
                    format!(
                        "secret {}: vaultPath {} must be under {prefix}",
                        s.name, s.vault_path
                    ),
                ));
            }
            let twin = secrets.iter().find(|o| {
                o.name != s.name && (o.vault_path == s.vault_path || o.target_secret == s.target_secret)
            })?;
            Some((
                "DuplicateSecret",
                format!(
                    "secrets {} and {} share a vaultPath or a targetSecret; each needs its own",
                    s.name, twin.name
                ),
            ))
        })
        .collect()
}

/// Why a secret cannot be rotated or synced: (reason, message). Nothing is written for such a secret.
pub fn check(s: &TenantSecret) -> Option<(&'static str, String)> {
    let g = &s.generator;
    if g.kind != GeneratorKind::External && g.length == 0 {
        return Some((
            "InvalidGenerator",
            format!("secret {}: generator length must be at least 1", s.name),
        ));
    }
    if g.kind == GeneratorKind::Characters && g.characters.is_empty() {
        return Some((
            "InvalidGenerator",
            format!("secret {}: generator characters must not be empty", s.name),
        ));
    }
    if g.key.is_empty() || g.key.starts_with("previous-") {
        return Some((
            "InvalidGenerator",
            format!(
                "secret {}: generator key must be set and must not start with previous-",
                s.name
            ),
        ));
    }
    if let Err(why) = check_path(&s.vault_path) {
        return Some(("InvalidVaultPath", format!("secret {}: vaultPath {why}", s.name)));
    }
    if let Some(v) = &s.verify
        && let Err(why) = check_verify_url(&v.url)
    {
        return Some(("InvalidVerifyUrl", format!("secret {}: verify.url {why}", s.name)));
    }
    for (field, v) in [("rotateEvery", &s.rotate_every), ("gracePeriod", &s.grace_period)] {
        match parse_duration(v) {
            Err(e) => return Some(("InvalidDuration", format!("secret {}: {field}: {e}", s.name))),
            Ok(d) if field == "rotateEvery" && d < Duration::from_secs(60) => {
                return Some((
                    "InvalidDuration",
                    format!("secret {}: rotateEvery must be at least 1m", s.name),
                ));
            }
            Ok(_) => {}
        }
    }
    None
}

/// A `verify` URL the operator may call: `http` or `https` with a host; no credentials in it (the URL is
/// shown in status and Events); never a link-local address (a cloud's instance metadata service, e.g.
/// 169.254.169.254, hands out credentials to whoever asks from the node) nor a metadata host name.
pub fn check_verify_url(url: &str) -> Result<(), String> {
    verify_host(url).map(|_| ())
}

/// Who a tenant's `verify` checks may call (the operator calls them from the hub, so a check is a request
/// on the tenant's behalf from inside the platform): the tenant's own `hostnames` and names under them,
/// plus the operator's `--verify-allowed-hosts` patterns — a name, `*.suffix` (names under it), or `*`
/// (anything); `{tenant}` in a pattern stands for the tenant's name.
#[derive(Clone, Copy, Debug)]
pub struct VerifyHosts<'a> {
    /// The tenant's `spec.hostnames`.
    pub hostnames: &'a [String],
    /// The operator's patterns.
    pub patterns: &'a [String],
}

impl VerifyHosts<'_> {
    /// Whether `host` (as `verify_host` gives it) may be called for `tenant`.
    pub fn allows(&self, tenant: &str, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let under = |name: &str| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            !name.is_empty() && (host == name || host.ends_with(&format!(".{name}")))
        };
        self.hostnames.iter().any(|h| under(h))
            || self.patterns.iter().any(|p| {
                let p = p.replace("{tenant}", tenant).to_ascii_lowercase();
                match p.strip_prefix("*.") {
                    _ if p == "*" => true,
                    Some(suffix) => host.ends_with(&format!(".{suffix}")),
                    None => host == p.trim_end_matches('.'),
                }
            })
    }
}

/// The host a `verify` URL calls, or why the URL is refused (see [`check_verify_url`]).
pub fn verify_host(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| "must start with http:// or https://".to_string())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not carry credentials (user:password@): it is shown in status".into());
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    let link_local = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => (ip.segments()[0] & 0xffc0) == 0xfe80,
        Err(_) => {
            let h = host.trim_end_matches('.').to_ascii_lowercase();
            h == "metadata" || h == "metadata.google.internal"
        }
    };
    if link_local {
        return Err(format!(
            "points at {host}, a link-local or instance-metadata address, which the operator never calls"
        ));
    }
    Ok(host.to_string())
}

/// A path inside the KV mount: relative, no empty, `.` or `..` segment, and not the engine's own
/// `data/`/`metadata/` prefixes (those would address another key than the one named).
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    if path.starts_with('/') || path.ends_with('/') {
        return Err(format!(
            "{path} must be relative to the KV mount, without a leading or trailing /"
        ));
    }
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!("{path} leaves the KV mount (empty, . or .. segment)"));
    }
    let first = path.split('/').next().unwrap_or_default();
    if matches!(
        first,
        "data" | "metadata" | "delete" | "undelete" | "destroy" | "config" | "subkeys"
    ) {
        return Err(format!("{path} starts with the KV engine's own {first}/"));
    }
    Ok(())
}

/// A stable per-secret number (FNV-1a), so the jitter is the same in every process and after restarts.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// When a secret last rotated at `last` is next due: `every` minus a per-secret jitter of up to a tenth
/// of it, so secrets created together do not all rotate in the same second.
pub fn next_rotation(last: jiff::Timestamp, every: Duration, tenant: &str, secret: &str) -> jiff::Timestamp {
    let span = every.as_millis() / 10;
    let jitter = if span == 0 {
        0
    } else {
        u128::from(stable_hash(&[tenant, secret])) % span
    };
    let ms = every.as_millis().saturating_sub(jitter);
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    last.checked_add(jiff::SignedDuration::from_millis(ms))
        .unwrap_or(jiff::Timestamp::MAX)
}

/// The custom metadata of a claim.
pub fn claim(rotation: &str, home_version: u64, writes: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (META_ROTATION.to_string(), rotation.to_string()),
        (META_HOME_VERSION.to_string(), home_version.to_string()),
        (META_WRITES.to_string(), writes.to_string()),
    ])
}

/// Records in a version's data (beside [`DATA_ROTATION`]; never synced) what a lost status must not forget
/// once that version is the newest: `handled`, the rotate-now request carried out (a digest per `|`-separated
/// part), so it is not carried out a second time; `revoked_below`, the version every older one of which
/// leaked and is still to be destroyed somewhere.
pub fn record_in_data(
    data: &mut BTreeMap<String, String>,
    handled: Option<&str>,
    revoked_below: Option<u64>,
) {
    match handled {
        Some(h) => {
            // (A token has at most two parts; the bound keeps the value small anyway.)
            let digests: Vec<String> = h.split('|').take(16).map(rotate_now_digest).collect();
            data.insert(DATA_ROTATE_NOW.to_string(), digests.join(","));
        }
        None => {
            data.remove(DATA_ROTATE_NOW);
        }
    }
    match revoked_below {
        Some(v) => {
            data.insert(DATA_REVOKED_BELOW.to_string(), v.to_string());
        }
        None => {
            data.remove(DATA_REVOKED_BELOW);
        }
    }
}

/// One rotate-now request part's digest as kept in a version's data (annotation values can be long; Vault
/// limits what a version holds): SHA-256, its first 128 bits in hex.
pub fn rotate_now_digest(part: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::new()
        .chain_update(b"rotate-now\0")
        .chain_update(part.as_bytes())
        .finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest versions written before SHA-256 carry (FNV-1a 64): still recognised, never written.
fn legacy_rotate_now_digest(part: &str) -> String {
    format!("{:016x}", stable_hash(&["rotate-now", part]))
}

/// The parts of the rotate-now request `token` that a version's data says were carried out.
pub fn handled_in_data<'a>(data: &BTreeMap<String, String>, token: &'a str) -> Vec<&'a str> {
    let Some(done) = data.get(DATA_ROTATE_NOW) else {
        return Vec::new();
    };
    let done: Vec<&str> = done.split(',').collect();
    token
        .split('|')
        .filter(|part| {
            done.contains(&rotate_now_digest(part).as_str())
                || done.contains(&legacy_rotate_now_digest(part).as_str())
        })
        .collect()
}

/// The version below which a version's data says every version leaked.
pub fn revoked_below_in_data(data: &BTreeMap<String, String>) -> Option<u64> {
    data.get(DATA_REVOKED_BELOW)?.parse().ok()
}

/// What a key's state says about the claimed write of `rotation` conditioned on `from` (check-and-set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The key's newest version is the claimed write's: it happened (the caller confirms from the version's
    /// data, [`DATA_ROTATION`], that it is not someone else's write made after the claim).
    Done(u64),
    /// The key is still at `from`: the write did not happen; it can be made now.
    NotYet,
    /// Someone else wrote the key since `from`: the newest version is not this rotation's.
    Conflict(u64),
}

/// Judges the claimed write of `rotation` from the key's newest version and custom metadata.
pub fn written(current: u64, custom: &BTreeMap<String, String>, rotation: &str, from: u64) -> Written {
    if current == from {
        return Written::NotYet;
    }
    let ours = custom.get(META_ROTATION).is_some_and(|r| r == rotation)
        && custom
            .get(META_WRITES)
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v == current && v == from + 1);
    if ours {
        Written::Done(current)
    } else {
        Written::Conflict(current)
    }
}

/// The home version a key holds according to its custom metadata (a replica's, or the home key's own).
pub fn holds_home_version(current: u64, custom: &BTreeMap<String, String>) -> Option<u64> {
    let writes = custom.get(META_WRITES)?.parse::<u64>().ok()?;
    if writes != current {
        // The claimed write never landed (or someone wrote after it): the key holds no known version.
        return None;
    }
    custom.get(META_HOME_VERSION)?.parse::<u64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_HOSTS: VerifyHosts<'static> = VerifyHosts {
        hostnames: &[],
        patterns: &[],
    };

    fn secret(path: &str) -> TenantSecret {
        serde_json::from_value(serde_json::json!({"name": "db", "vaultPath": path, "targetSecret": "db"}))
            .expect("secret")
    }

    #[test]
    fn verify_urls_must_be_http_without_credentials_and_never_link_local() {
        for good in [
            "http://127.0.0.1:8080/healthz",
            "https://api.acme.example/ready?deep=1",
            "http://[::1]:9000/",
            "http://checker.tenant-acme.svc",
        ] {
            assert_eq!(check_verify_url(good), Ok(()), "{good}");
        }
        for bad in [
            "ftp://x/",
            "api.acme.example/ready",
            "http://user:pw@api.acme.example/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://:80/",
        ] {
            assert!(check_verify_url(bad).is_err(), "{bad} accepted");
        }
        let mut s = secret("tenants/acme/db");
        s.verify = serde_json::from_value(serde_json::json!({"url": "http://169.254.169.254/"})).ok();
        assert_eq!(check(&s).map(|c| c.0), Some("InvalidVerifyUrl"));
    }

    #[test]
    fn verify_calls_only_the_tenants_own_hostnames_and_the_operators_allowed_hosts() {
        let hostnames = vec!["acme.example".to_string()];
        let none: Vec<String> = Vec::new();
        let own = VerifyHosts {
            hostnames: &hostnames,
            patterns: &none,
        };
        assert!(own.allows("acme", "acme.example"));
        assert!(own.allows("acme", "api.ACME.example."));
        assert!(!own.allows("acme", "evilacme.example"));
        assert!(!own.allows("acme", "127.0.0.1"));
        assert!(!own.allows("acme", "vault.internal"));
        let patterns = vec!["*.tenant-{tenant}.svc".to_string(), "127.0.0.1".to_string()];
        let ops = VerifyHosts {
            hostnames: &none,
            patterns: &patterns,
        };
        assert!(ops.allows("acme", "checker.tenant-acme.svc"));
        assert!(!ops.allows("acme", "checker.tenant-other.svc"));
        assert!(!ops.allows("acme", "tenant-acme.svc"));
        assert!(ops.allows("acme", "127.0.0.1"));
        assert!(!ops.allows("acme", "127.0.0.2"));
        let any = vec!["*".to_string()];
        assert!(
            VerifyHosts {
                hostnames: &none,
                patterns: &any
            }
            .allows("acme", "anything.example")
        );
        // Through check_all: refused with its reason, the host named, nothing else of the secret checked.
        let mut s = secret("tenants/acme/db");
        s.verify =
            serde_json::from_value(serde_json::json!({"url": "http://vault.internal:8200/v1/sys"})).ok();
        let r = check_all("acme", std::slice::from_ref(&s), &own);
        let (reason, msg) = r[0].clone().unwrap_or_default();
        assert_eq!(reason, "VerifyHostNotAllowed");
        assert!(msg.contains("vault.internal"), "{msg}");
        s.verify = serde_json::from_value(serde_json::json!({"url": "https://status.acme.example/ok"})).ok();
        assert_eq!(check_all("acme", &[s], &own)[0], None);
    }

    #[test]
    fn paths_outside_the_mount_are_refused() {
        assert!(check_path("tenants/acme/db").is_ok());
        for bad in [
            "",
            "/tenants/x",
            "tenants/../sys",
            "a//b",
            "data/x",
            "metadata/x",
            "x/",
            "./x",
        ] {
            assert!(check_path(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(check(&secret("../x")).map(|c| c.0), Some("InvalidVaultPath"));
        assert_eq!(check(&secret("tenants/acme/db")), None);
    }

    #[test]
    fn a_tenant_names_only_its_own_paths_and_each_once() {
        let mut a = secret("tenants/acme/db");
        let b = {
            let mut b = secret("tenants/acme/db");
            b.name = "api".into();
            b.target_secret = "api".into();
            b
        };
        let r = check_all("acme", &[a.clone(), b], &NO_HOSTS);
        assert_eq!(r[0].as_ref().map(|c| c.0), Some("DuplicateSecret"));
        assert_eq!(r[1].as_ref().map(|c| c.0), Some("DuplicateSecret"));
        assert_eq!(
            check_all("evil", std::slice::from_ref(&a), &NO_HOSTS)[0]
                .as_ref()
                .map(|c| c.0),
            Some("InvalidVaultPath")
        );
        assert_eq!(check_all("acme", std::slice::from_ref(&a), &NO_HOSTS)[0], None);
        a.vault_path = "tenants/acmeco/db".into();
        assert_eq!(
            check_all("acme", &[a], &NO_HOSTS)[0].as_ref().map(|c| c.0),
            Some("InvalidVaultPath")
        );
    }

    #[test]
    fn generators_that_cannot_make_a_value_are_refused() {
        let mut s = secret("t/a");
        s.generator.length = 0;
        assert_eq!(check(&s).map(|c| c.0), Some("InvalidGenerator"));
        let mut s = secret("t/a");
        s.generator.characters.clear();
        assert_eq!(check(&s).map(|c| c.0), Some("InvalidGenerator"));
        s.generator.kind = GeneratorKind::Bytes;
        assert_eq!(check(&s), None);
        let mut s = secret("t/a");
        s.rotate_every = "10s".into();
        assert_eq!(check(&s).map(|c| c.0), Some("InvalidDuration"));
    }

    #[test]
    fn jitter_spreads_and_is_stable() {
        let t = jiff::Timestamp::from_second(1_800_000_000).expect("ts");
        let every = Duration::from_secs(30 * 86400);
        let a = next_rotation(t, every, "acme", "db");
        assert_eq!(a, next_rotation(t, every, "acme", "db"));
        let lo = t + jiff::SignedDuration::from_secs(27 * 86400);
        let hi = t + jiff::SignedDuration::from_secs(30 * 86400);
        let all: std::collections::BTreeSet<i64> = (0..1000)
            .map(|i| next_rotation(t, every, &format!("t{i}"), "db").as_second())
            .collect();
        assert!(all.len() > 990, "only {} distinct seconds", all.len());
        for i in 0..1000 {
            let n = next_rotation(t, every, &format!("t{i}"), "db");
            assert!(n > lo && n <= hi);
        }
    }

    #[test]
    fn a_version_remembers_the_rotate_now_request_it_carries_out() {
        let mut d = BTreeMap::from([("password".to_string(), "x".to_string())]);
        record_in_data(&mut d, Some("leaked-1"), Some(6));
        assert_eq!(handled_in_data(&d, "leaked-1"), vec!["leaked-1"]);
        assert_eq!(revoked_below_in_data(&d), Some(6));
        // A newer request is not the one carried out; of two parts, only the one carried out counts.
        assert!(handled_in_data(&d, "leaked-2").is_empty());
        assert_eq!(handled_in_data(&d, "k2|leaked-1"), vec!["leaked-1"]);
        // A rollback writes an older version's data again: what it recorded is replaced.
        record_in_data(&mut d, Some("t1|leaked-1"), None);
        assert_eq!(handled_in_data(&d, "leaked-1"), vec!["leaked-1"]);
        assert_eq!(handled_in_data(&d, "t1|leaked-1"), vec!["t1", "leaked-1"]);
        assert_eq!(revoked_below_in_data(&d), None);
        record_in_data(&mut d, None, None);
        assert!(handled_in_data(&d, "leaked-1").is_empty());
        assert_eq!(d.len(), 1);
        assert!(d.keys().filter(|k| *k != "password").all(|k| reserved(k)));
        assert_eq!(rotate_now_digest("x"), rotate_now_digest("x"));
        assert_ne!(rotate_now_digest("x"), rotate_now_digest("y"));
        assert_eq!(rotate_now_digest(&"y".repeat(10_000)).len(), 32);
        // A version written before the digest was SHA-256 is still read right.
        let old = BTreeMap::from([(DATA_ROTATE_NOW.to_string(), legacy_rotate_now_digest("leaked-1"))]);
        assert_eq!(handled_in_data(&old, "t2|leaked-1"), vec!["leaked-1"]);
        assert_ne!(
            legacy_rotate_now_digest("leaked-1"),
            rotate_now_digest("leaked-1")
        );
    }

    #[test]
    fn a_claimed_write_is_judged_from_the_key() {
        let c = claim("r1", 5, 5);
        assert_eq!(written(4, &c, "r1", 4), Written::NotYet);
        assert_eq!(written(5, &c, "r1", 4), Written::Done(5));
        // Someone wrote after the claim, or another rotation's claim: a conflict.
        assert_eq!(written(6, &c, "r1", 4), Written::Conflict(6));
        assert_eq!(written(5, &claim("r2", 5, 5), "r1", 4), Written::Conflict(5));
        assert_eq!(written(5, &BTreeMap::new(), "r1", 4), Written::Conflict(5));
        assert_eq!(holds_home_version(3, &claim("r1", 7, 3)), Some(7));
        assert_eq!(holds_home_version(2, &claim("r1", 7, 3)), None);
    }
}
