//! Database replication decisions (pure): where the primary should be, which standby may be promoted without
//! losing an acknowledged commit, the synchronous standby rule, and the WAL position format.

use std::collections::BTreeSet;

use azora_api::database::{DatabaseSpec, ReplicationMode};

/// The value of `synchronous_standby_names` (and the marker in it) that fences a primary: no standby has
/// that name, so no commit is acknowledged.
pub const FENCE_MARKER: &str = "azora_fenced";

/// Prefix of the session name by which the leading operator says, on the member it keeps as the primary,
/// "I keep this member as the primary of epoch E, as of server time T": `azora-keeper-<E>-<T>` (T in the
/// member server's own clock, seconds). Renewed at every pass that keeps the primary; a region agent cut off
/// from the hub holds back its hub-loss fence only while such a name is fresh.
pub const KEEPER_PREFIX: &str = "azora-keeper-";

/// The epoch and server time a keeper session name asserts.
pub fn keeper_parse(name: &str) -> Option<(u64, i64)> {
    let (epoch, at) = name.strip_prefix(KEEPER_PREFIX)?.split_once('-')?;
    Some((epoch.parse().ok()?, at.parse().ok()?))
}

/// Whether one of `names` asserts a keeper of at least `epoch` made within `window_s` seconds before
/// `now` (the same server's clock). A time ahead of `now` does not count (a clock stepped back).
pub fn kept<'a>(names: impl IntoIterator<Item = &'a str>, epoch: u64, now: i64, window_s: i64) -> bool {
    names
        .into_iter()
        .filter_map(keeper_parse)
        .any(|(e, at)| e >= epoch && at <= now && now - at <= window_s)
}

/// Parses a PostgreSQL WAL position (`16/B374D848`).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some((hi << 32) | lo)
}

/// Formats a WAL position the way PostgreSQL does.
pub fn format_lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
}

/// Bytes, human readable (`0 B`, `12.0 KiB`, `3.4 MiB`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in UNITS.iter().skip(1) {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `synchronous_standby_names` for a primary in `primary`: `ANY n ("a", "b")` over every other synchronous
/// member (a fenced former primary included: it rejoins as a standby); empty for asynchronous replication.
pub fn sync_standby_names(spec: &DatabaseSpec, primary: &str) -> String {
    if spec.replication.mode == ReplicationMode::Asynchronous {
        return String::new();
    }
    let others: BTreeSet<&str> = spec
        .members
        .iter()
        .filter(|m| m.synchronous)
        .map(|m| m.region.as_str())
        .filter(|r| *r != primary)
        .collect();
    if others.is_empty() {
        return String::new();
    }
    let n = (spec.replication.sync_standbys as usize).clamp(1, others.len());
    let list: Vec<String> = others.iter().map(|r| format!("\"{r}\"")).collect();
    format!("ANY {n} ({})", list.join(", "))
}

/// Whether two `synchronous_standby_names` values name the same rule (PostgreSQL reports the value as set,
/// so spacing and quoting may differ).
pub fn same_sync_rule(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace() && *c != '"')
            .collect::<String>()
            .to_lowercase()
    };
    norm(a) == norm(b)
}

/// Why the primary should move, and where to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The region the primary should go to; `None`: the most advanced eligible standby.
    pub preferred: Option<String>,
    /// `PolicyMoved` or `RegionDown`.
    pub reason: &'static str,
}

/// Whether the primary in `primary` should move: to the followed policy's active region when that region
/// has a member, or — the primary's region being Down — to the best standby.
pub fn wanted_move(
    spec: &DatabaseSpec,
    primary: &str,
    policy_active: Option<&str>,
    primary_region_down: bool,
) -> Option<Move> {
    let member = |r: &str| spec.members.iter().any(|m| m.region == r);
    if spec.follow_policy.is_some()
        && let Some(active) = policy_active
        && active != primary
        && member(active)
    {
        return Some(Move {
            preferred: Some(active.to_string()),
            reason: "PolicyMoved",
        });
    }
    if primary_region_down {
        // A policy that still routes to the primary's region (or to a region without a member) leaves the
        // choice to the standbys' positions.
        return Some(Move {
            preferred: None,
            reason: "RegionDown",
        });
    }
    None
}

/// One standby as seen for a promotion decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Region.
    pub region: String,
    /// WAL received (PostgreSQL) or replication offset (Redis).
    pub received: u64,
    /// Replay lag seen last, in seconds (asynchronous rule).
    pub lag_seconds: Option<f64>,
    /// Counts in the synchronous rule.
    pub synchronous: bool,
}

/// The inputs of a promotion choice.
#[derive(Clone, Debug)]
pub struct Promotion<'a> {
    /// Replication mode.
    pub mode: ReplicationMode,
    /// `ANY n`.
    pub sync_standbys: u32,
    /// Synchronous standbys the database has besides the old primary (reachable or not).
    pub standby_count: usize,
    /// Reachable standbys in eligible regions (allowed, not Down).
    pub candidates: &'a [Candidate],
    /// Where the primary should go, if somewhere in particular.
    pub preferred: Option<&'a str>,
    /// The old primary's last position, when it was reachable and fenced: every acknowledged commit is at
    /// or below it.
    pub old_final: Option<u64>,
    /// The asynchronous promotion limit, in seconds.
    pub max_lag_seconds: f64,
}

/// The standby to promote, or why none may be promoted now (the caller waits and asks again).
pub fn choose_promotion(p: &Promotion<'_>) -> Result<String, String> {
    if p.candidates.is_empty() {
        return Err("no reachable standby in an allowed region".into());
    }
    let best = p.candidates.iter().map(|c| c.received).max().unwrap_or(0);
    let floor = match p.old_final {
        Some(f) => f,
        None => {
            // The old primary is gone: with `ANY n`, every acknowledged commit is on n standbys, so the most
            // advanced of (standbys - n + 1) reachable ones has them all. Fewer reachable: a commit may
            // exist only on the unreachable ones.
            if p.mode == ReplicationMode::Synchronous {
                let n = (p.sync_standbys as usize).max(1);
                let needed = p.standby_count.saturating_sub(n) + 1;
                let reachable = p.candidates.iter().filter(|c| c.synchronous).count();
                if reachable < needed {
                    return Err(format!(
                        "only {} of {} synchronous standbys reachable: a synchronous commit may be on the others ({} needed)",
                        reachable, p.standby_count, needed
                    ));
                }
            }
            best
        }
    };
    let lag_ok = |c: &Candidate| {
        p.mode == ReplicationMode::Synchronous
            || p.old_final.is_some()
            || c.lag_seconds.is_some_and(|l| l <= p.max_lag_seconds)
    };
    let preferred = p
        .preferred
        .and_then(|r| p.candidates.iter().find(|c| c.region == r));
    if p.old_final.is_some()
        && let Some(r) = p.preferred
        && preferred.is_none()
    {
        // A planned move: only to the region asked for, and only from a streaming standby there.
        return Err(format!("the member in {r} is not a reachable standby"));
    }
    if let Some(c) = preferred {
        if c.received >= floor && lag_ok(c) {
            return Ok(c.region.clone());
        }
        if p.old_final.is_some() && c.received < floor {
            // Still streaming from the fenced primary: it catches up in a moment.
            return Err(format!(
                "waiting for {} to receive up to {} (has {})",
                c.region,
                format_lsn(floor),
                format_lsn(c.received)
            ));
        }
    }
    let mut ahead: Vec<&Candidate> = p.candidates.iter().filter(|c| c.received >= floor).collect();
    ahead.sort_by(|a, b| a.region.cmp(&b.region));
    match ahead.into_iter().find(|c| lag_ok(c)) {
        Some(c) => Ok(c.region.clone()),
        None => Err(match p.mode {
            ReplicationMode::Asynchronous => format!(
                "every standby that has the newest data lags more than maxLagForPromotion ({}s) or its lag is unknown",
                p.max_lag_seconds
            ),
            ReplicationMode::Synchronous => format!("no standby has received up to {}", format_lsn(floor)),
        }),
    }
}

/// Reads `host`, `port` and `application_name` out of a libpq connection string (what a standby streams
/// from), never anything else (it carries a password).
pub fn conninfo_target(conninfo: &str) -> (Option<String>, Option<String>, Option<String>) {
    let mut host = None;
    let mut port = None;
    let mut app = None;
    conninfo_each(conninfo, |key, value| match key {
        "host" | "hostaddr" => host = Some(value),
        "port" => port = Some(value),
        "application_name" => app = Some(value),
        _ => {}
    });
    (host, port, app)
}

/// A fingerprint of the credentials a libpq connection string carries (`user` and `password`), or `None`
/// when it names no password (a passfile, or no password auth): so a standby still streaming with a
/// password that was rotated since is found, without the password itself being kept anywhere.
pub fn conninfo_credentials(conninfo: &str) -> Option<String> {
    let mut user = String::new();
    let mut password = None;
    conninfo_each(conninfo, |key, value| match key {
        "user" => user = value,
        "password" => password = Some(value),
        _ => {}
    });
    password.map(|p| credentials_fingerprint(&user, &p))
}

/// The TLS a libpq connection string requires (see [`tls_required`]).
pub fn conninfo_tls(conninfo: &str) -> String {
    let mut sslmode = None;
    let mut root = None;
    conninfo_each(conninfo, |key, value| match key {
        "sslmode" => sslmode = Some(value),
        "sslrootcert" => root = Some(value),
        _ => {}
    });
    tls_required(sslmode.as_deref(), root.as_deref())
}

/// What a connection string's TLS settings require: empty when they require nothing (`prefer`, `allow`,
/// `disable` or no `sslmode`), else the mode and the root certificate file.
pub fn tls_required(sslmode: Option<&str>, sslrootcert: Option<&str>) -> String {
    match sslmode {
        Some(m @ ("require" | "verify-ca" | "verify-full")) => format!("{m} {}", sslrootcert.unwrap_or("")),
        _ => String::new(),
    }
}

/// The fingerprint `conninfo_credentials` gives for `user` and `password`: a hash keyed with a random key of
/// this process (both sides of a comparison are made here), so it says nothing about the password outside it.
pub fn credentials_fingerprint(user: &str, password: &str) -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    let mut h = KEY
        .get_or_init(std::collections::hash_map::RandomState::new)
        .build_hasher();
    h.write(user.as_bytes());
    h.write_u8(0);
    h.write(password.as_bytes());
    format!("{:016x}", h.finish())
}

/// Calls `each` with every key and value of a libpq connection string, in order.
fn conninfo_each(conninfo: &str, mut each: impl FnMut(&str, String)) {
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            break;
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '\'' => break,
                    _ => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        each(key.as_str(), value);
    }
}

/// Quotes a value for a libpq connection string.
pub fn conninfo_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conninfos_credentials_are_fingerprinted_never_kept() {
        let ours = "host='10.0.0.1' port=5432 user='repl' password='s3cr\\'et' application_name='europe'";
        let fp = conninfo_credentials(ours).unwrap_or_default();
        assert_eq!(fp, credentials_fingerprint("repl", "s3cr'et"));
        assert!(!fp.contains("s3cr"));
        assert_ne!(fp, credentials_fingerprint("repl", "rotated"));
        assert_eq!(conninfo_credentials("host=x user=repl passfile=/p"), None);
        // TLS that requires nothing (pg_basebackup -R writes `sslmode=prefer`) is no TLS; a required one counts.
        assert_eq!(
            conninfo_tls("user=repl password=pw sslmode=prefer sslrootcert=/x"),
            ""
        );
        assert_eq!(conninfo_tls("user=repl password=pw"), "");
        assert_eq!(
            conninfo_tls("user=repl sslmode=verify-full sslrootcert='/ca.crt'"),
            tls_required(Some("verify-full"), Some("/ca.crt"))
        );
        assert_ne!(
            conninfo_tls("sslmode=require"),
            conninfo_tls("sslmode=verify-full")
        );
        assert_eq!(
            conninfo_target(ours),
            (
                Some("10.0.0.1".into()),
                Some("5432".into()),
                Some("europe".into())
            )
        );
    }
    use azora_api::common::SecretRef;
    use azora_api::database::{DatabaseMember, Engine, Replication};

    fn spec(regions: &[&str], mode: ReplicationMode, n: u32) -> DatabaseSpec {
        DatabaseSpec {
            engine: Engine::PostgreSQL,
            tenant: None,
            follow_policy: Some("platform".into()),
            members: regions
                .iter()
                .map(|r| DatabaseMember {
                    region: (*r).into(),
                    synchronous: *r != "americas",
                    endpoint: "127.0.0.1:5432".into(),
                    credentials: SecretRef { name: "pg".into() },
                })
                .collect(),
            replication: Replication {
                mode,
                sync_standbys: n,
                max_lag_for_promotion: "30s".into(),
            },
            database_name: "postgres".into(),
            history_limit: 10,
            tls: None,
        }
    }

    fn c(region: &str, received: u64) -> Candidate {
        Candidate {
            region: region.into(),
            received,
            lag_seconds: Some(0.5),
            synchronous: true,
        }
    }

    #[test]
    fn lsn_round_trips() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("nonsense"), None);
        assert_eq!(parse_lsn("1FFFFFFFF/0"), None);
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 + 1), "3.0 MiB");
    }

    #[test]
    fn the_sync_rule_names_every_other_member() {
        let s = spec(&["africa", "europe", "asia"], ReplicationMode::Synchronous, 1);
        assert_eq!(sync_standby_names(&s, "africa"), "ANY 1 (\"asia\", \"europe\")");
        assert_eq!(sync_standby_names(&s, "europe"), "ANY 1 (\"africa\", \"asia\")");
        assert!(same_sync_rule(
            "ANY 1 (asia,europe)",
            "ANY 1 (\"asia\", \"europe\")"
        ));
        assert!(!same_sync_rule("ANY 2 (asia, europe)", "ANY 1 (asia, europe)"));
        let four = spec(
            &["africa", "europe", "asia", "americas"],
            ReplicationMode::Synchronous,
            1,
        );
        assert_eq!(
            sync_standby_names(&four, "africa"),
            "ANY 1 (\"asia\", \"europe\")"
        );
        let a = spec(&["africa", "europe"], ReplicationMode::Asynchronous, 1);
        assert_eq!(sync_standby_names(&a, "africa"), "");
    }

    #[test]
    fn the_primary_follows_the_policy_or_leaves_a_down_region() {
        let s = spec(&["africa", "europe", "asia"], ReplicationMode::Synchronous, 1);
        assert_eq!(wanted_move(&s, "africa", Some("africa"), false), None);
        assert_eq!(
            wanted_move(&s, "africa", Some("europe"), false),
            Some(Move {
                preferred: Some("europe".into()),
                reason: "PolicyMoved"
            })
        );
        // A policy routing to a region without a member does not move the primary while it lives.
        assert_eq!(wanted_move(&s, "africa", Some("americas"), false), None);
        assert_eq!(
            wanted_move(&s, "africa", Some("americas"), true),
            Some(Move {
                preferred: None,
                reason: "RegionDown"
            })
        );
    }

    #[test]
    fn a_fenced_primary_is_waited_for_and_the_preferred_region_wins() {
        let cands = [c("europe", 100), c("asia", 120)];
        let p = Promotion {
            mode: ReplicationMode::Synchronous,
            sync_standbys: 1,
            standby_count: 2,
            candidates: &cands,
            preferred: Some("europe"),
            old_final: Some(120),
            max_lag_seconds: 30.0,
        };
        assert!(choose_promotion(&p).unwrap_err().contains("waiting for europe"));
        let caught_up = [c("europe", 120), c("asia", 120)];
        let p = Promotion {
            candidates: &caught_up,
            ..p
        };
        assert_eq!(choose_promotion(&p).unwrap(), "europe");
    }

    #[test]
    fn with_the_primary_gone_the_most_advanced_standby_is_promoted_never_a_behind_one() {
        let cands = [c("europe", 100), c("asia", 120)];
        let p = Promotion {
            mode: ReplicationMode::Synchronous,
            sync_standbys: 1,
            standby_count: 2,
            candidates: &cands,
            preferred: Some("europe"),
            old_final: None,
            max_lag_seconds: 30.0,
        };
        // europe may miss a commit only asia confirmed: asia is promoted instead.
        assert_eq!(choose_promotion(&p).unwrap(), "asia");
        // With one of two standbys unreachable under ANY 1, a commit may be only on the missing one.
        let one = [c("europe", 100)];
        let p = Promotion {
            candidates: &one,
            ..p
        };
        assert!(choose_promotion(&p).unwrap_err().contains("only 1 of 2"));
        // An asynchronous standby does not make up the quorum, and is promoted only when it is ahead.
        let mut far = c("americas", 100);
        far.synchronous = false;
        let with_far = [c("europe", 90), far];
        let p2 = Promotion {
            candidates: &with_far,
            ..p.clone()
        };
        assert!(choose_promotion(&p2).unwrap_err().contains("only 1 of 2"));
        // ANY 2 of 2: every commit is on both, one reachable standby is enough.
        let p = Promotion {
            sync_standbys: 2,
            ..p
        };
        assert_eq!(choose_promotion(&p).unwrap(), "europe");
        let none: [Candidate; 0] = [];
        let p = Promotion {
            candidates: &none,
            ..p
        };
        assert!(choose_promotion(&p).is_err());
    }

    #[test]
    fn asynchronous_promotion_refuses_a_standby_lagging_too_far() {
        let mut far = c("europe", 100);
        far.lag_seconds = Some(90.0);
        let cands = [far];
        let p = Promotion {
            mode: ReplicationMode::Asynchronous,
            sync_standbys: 1,
            standby_count: 1,
            candidates: &cands,
            preferred: Some("europe"),
            old_final: None,
            max_lag_seconds: 30.0,
        };
        assert!(choose_promotion(&p).unwrap_err().contains("maxLagForPromotion"));
        let near = [c("europe", 100)];
        let p = Promotion {
            candidates: &near,
            ..p
        };
        assert_eq!(choose_promotion(&p).unwrap(), "europe");
    }

    #[test]
    fn conninfo_yields_only_where_it_points() {
        let ci = "user=postgres password='se cr\\'et' host=127.0.0.1 port=5433 application_name=europe sslmode=prefer";
        let (h, p, a) = conninfo_target(ci);
        assert_eq!(h.as_deref(), Some("127.0.0.1"));
        assert_eq!(p.as_deref(), Some("5433"));
        assert_eq!(a.as_deref(), Some("europe"));
        assert_eq!(conninfo_quote("a'b\\c"), "'a\\'b\\\\c'");
        let (h, _, _) = conninfo_target(&format!("host={}", conninfo_quote("x y")));
        assert_eq!(h.as_deref(), Some("x y"));
    }

    #[test]
    fn a_keeper_counts_only_fresh_for_the_members_epoch_or_newer() {
        let names = [
            "azora-keeper-3-1000",
            "azora-operator",
            "azora-keeper-x-1",
            "psql",
        ];
        assert_eq!(keeper_parse("azora-keeper-3-1000"), Some((3, 1000)));
        assert_eq!(keeper_parse("azora-operator"), None);
        assert!(kept(names, 3, 1004, 5));
        assert!(
            kept(names, 2, 1005, 5),
            "a newer epoch's keeper counts for an older member epoch"
        );
        assert!(!kept(names, 4, 1001, 5), "an older epoch's keeper does not count");
        assert!(!kept(names, 3, 1006, 5), "stale");
        assert!(!kept(names, 3, 999, 5), "from the future (a clock stepped back)");
        assert!(!kept(["azora-operator"], 1, 1, 5));
    }
}
