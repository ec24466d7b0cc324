//! Object-storage replication decisions: which of a tenant's objects under `tenants/<name>/` in the source
//! region's bucket (its active region) must be copied to a replica region, which replica objects are
//! deleted (only objects this replication copied and nobody changed since, only after a safety delay), how
//! far behind the replica is, and — when the active region moves back — which objects written in the
//! region that was active must be brought to the new source first (`catch_up`). The manifest records, per
//! object, the source ETag and size it was copied from, the ETag the replica got and the SHA-256 of the
//! bytes, so a round with nothing to do reads two listings and writes nothing. Pure, no IO.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The key prefix of a tenant's objects.
pub fn tenant_prefix(tenant: &str) -> String {
    format!("tenants/{tenant}/")
}

/// Where the manifest of `tenant`'s replica lives in the replica bucket (outside the tenant's prefix).
pub fn manifest_key(tenant: &str, source_region: &str) -> String {
    format!("azora-replication/{source_region}/{tenant}.json")
}

/// An object in the home region's bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceObject {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag as listed (quotes removed).
    pub etag: String,
    /// Last modification at the source.
    pub last_modified: Timestamp,
}

/// An object in the replica bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetObject {
    /// Size in bytes.
    pub size: u64,
    /// ETag as listed (quotes removed).
    pub etag: String,
}

impl From<&SourceObject> for TargetObject {
    fn from(o: &SourceObject) -> Self {
        Self {
            size: o.size,
            etag: o.etag.clone(),
        }
    }
}

/// What the manifest knows of one replicated object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Source ETag the copy was made from.
    pub source_etag: String,
    /// Source size.
    pub size: u64,
    /// ETag the replica got.
    pub target_etag: String,
    /// SHA-256 of the bytes (hex), verified while copying.
    pub sha256: String,
    /// When the copy completed.
    pub copied_at: Timestamp,
}

/// The replication manifest of one tenant in one replica region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Replicated objects by key.
    #[serde(default)]
    pub entries: BTreeMap<String, Entry>,
    /// Replica objects whose source is gone, with the time that was first seen.
    #[serde(default)]
    pub missing_since: BTreeMap<String, Timestamp>,
}

/// One round's decisions for one tenant and replica region.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Source objects to copy (new, changed, or replica missing/altered).
    pub copy: Vec<SourceObject>,
    /// Replica keys to delete now (source gone for longer than the safety delay; only objects this
    /// replication copied and that nobody changed since).
    pub delete: Vec<String>,
    /// The new `missing_since` map (deletions still waiting for the delay, plus newly seen ones).
    pub missing_since: BTreeMap<String, Timestamp>,
    /// How far the replica is behind: the age of the oldest change not yet copied; zero when in sync.
    pub lag: Duration,
    /// Deletions held back because the source lost too much at once (an emptied or swapped bucket is
    /// far likelier than a tenant deleting most of its data): they wait for a person.
    pub deletions_held: usize,
}

/// Deleting more than this share of what was replicated in one round is held back (with at least
/// `MASS_DELETION_MIN` objects), as is any deletion when the source lists nothing at all.
pub const MASS_DELETION_SHARE: f64 = 0.5;
/// See `MASS_DELETION_SHARE`.
pub const MASS_DELETION_MIN: usize = 10;

impl Plan {
    /// Whether the round changes nothing (no copy, no delete, no new pending deletion).
    pub fn is_noop(&self, manifest: &Manifest) -> bool {
        self.copy.is_empty() && self.delete.is_empty() && self.missing_since == manifest.missing_since
    }
}

/// Plans one round. `source` and `target` hold only keys under the tenant's prefix.
pub fn plan(
    source: &[SourceObject],
    target: &BTreeMap<String, TargetObject>,
    manifest: &Manifest,
    now: Timestamp,
    delete_delay: Duration,
) -> Plan {
    let mut out = Plan::default();
    for s in source {
        let fresh = manifest.entries.get(&s.key).is_some_and(|e| {
            e.source_etag == s.etag
                && e.size == s.size
                && target
                    .get(&s.key)
                    .is_some_and(|t| t.etag == e.target_etag && t.size == s.size)
        });
        if !fresh {
            out.copy.push(s.clone());
            let age = now.duration_since(s.last_modified);
            let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
            out.lag = out.lag.max(age);
        }
    }
    let in_source: std::collections::BTreeSet<&str> = source.iter().map(|s| s.key.as_str()).collect();
    for (key, t) in target {
        if in_source.contains(key.as_str()) {
            continue;
        }
        // Never delete what this replication did not write: the object must be in the manifest, with the
        // ETag it got from our copy (anything else was written there by someone else, e.g. while that
        // region was the tenant's active one).
        if manifest.entries.get(key).is_none_or(|e| e.target_etag != t.etag) {
            continue;
        }
        let since = manifest.missing_since.get(key).copied().unwrap_or(now);
        let waited = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
        if waited >= delete_delay {
            out.delete.push(key.clone());
        } else {
            out.missing_since.insert(key.clone(), since);
        }
    }
    let owned = manifest.entries.len().max(1);
    let mass =
        out.delete.len() >= MASS_DELETION_MIN && out.delete.len() as f64 > MASS_DELETION_SHARE * owned as f64;
    if !out.delete.is_empty() && (source.is_empty() || mass) {
        // Keep them pending: their clock keeps running, and they go once the source looks sane again.
        for key in out.delete.drain(..) {
            let since = manifest.missing_since.get(&key).copied().unwrap_or(now);
            out.missing_since.insert(key, since);
        }
        out.deletions_held = out.missing_since.len();
    }
    out
}

/// Objects to bring from `former` (the region replication copied from until now, where the tenant was
/// active) to `next` (the new source) before switching: those written in `former` — not an unchanged
/// replica of `next`'s data per `former_manifest` (what `former` holds as replicas copied from `next`) —
/// that `next` lacks, or holds only in an older version. Same content (equal ETags) needs nothing.
pub fn catch_up(
    former: &[SourceObject],
    former_manifest: &Manifest,
    next: &[SourceObject],
) -> Vec<SourceObject> {
    let at_next: BTreeMap<&str, &SourceObject> = next.iter().map(|o| (o.key.as_str(), o)).collect();
    former
        .iter()
        .filter(|o| {
            let unchanged_replica = former_manifest
                .entries
                .get(&o.key)
                .is_some_and(|e| e.target_etag == o.etag);
            if unchanged_replica {
                return false;
            }
            match at_next.get(o.key.as_str()) {
                None => true,
                Some(n) => n.etag != o.etag && o.last_modified > n.last_modified,
            }
        })
        .cloned()
        .collect()
}

/// Where replication copies from, and which regions must first bring their own writes to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sourcing {
    /// The region replication copies from: the tenant's active region.
    pub source: String,
    /// Regions that were the source before (or might hold writes the source lacks): what was written there
    /// is brought to the source (newer wins, nothing deleted) before anything is copied into them.
    pub catch_up: Vec<String>,
}

/// The sourcing for this round. `recorded` is what the Tenant status holds (`None` before the first round:
/// the home region), `active` where the tenant's traffic goes, `placed` its regions. A source change is
/// immediate — the region it moves away from joins `catch_up`, so its writes (made while it was active, or
/// not yet replicated when it failed) come to the new source before the new source's copies overwrite
/// anything there. Regions no longer placed leave `catch_up`.
pub fn sourcing(
    home: &str,
    recorded: Option<&Sourcing>,
    active: Option<&str>,
    placed: &[String],
) -> Sourcing {
    let wanted = active
        .filter(|a| placed.iter().any(|p| p == a))
        .unwrap_or(home)
        .to_string();
    let mut catch_up: Vec<String> = recorded.map(|r| r.catch_up.clone()).unwrap_or_default();
    if let Some(r) = recorded
        && r.source != wanted
        && !catch_up.contains(&r.source)
    {
        catch_up.push(r.source.clone());
    }
    catch_up.retain(|c| *c != wanted && placed.iter().any(|p| p == c));
    Sourcing {
        source: wanted,
        catch_up,
    }
}

/// Replication of one tenant to one region, as last measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    /// Every source object has a verified replica.
    pub in_sync: bool,
    /// Age of the oldest change not yet replicated, in seconds (0 when in sync).
    pub lag_seconds: u64,
    /// The last round's error, if any (store and key names only).
    pub error: Option<String>,
}

/// Hex encoding (lowercase).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The ETag S3 gives a multipart upload: MD5 of the concatenated part MD5s, a dash, the part count.
pub fn multipart_etag(part_md5s: &[[u8; 16]], md5: impl Fn(&[u8]) -> [u8; 16]) -> String {
    let joined: Vec<u8> = part_md5s.iter().flatten().copied().collect();
    format!("{}-{}", hex(&md5(&joined)), part_md5s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn src(key: &str, etag: &str, modified: i64) -> SourceObject {
        SourceObject {
            key: key.into(),
            size: 10,
            etag: etag.into(),
            last_modified: t(modified),
        }
    }

    fn entry(etag: &str) -> Entry {
        Entry {
            source_etag: etag.into(),
            size: 10,
            target_etag: format!("t-{etag}"),
            sha256: "00".into(),
            copied_at: t(0),
        }
    }

    fn tgt(etag: &str) -> TargetObject {
        TargetObject {
            size: 10,
            etag: format!("t-{etag}"),
        }
    }

    const DELAY: Duration = Duration::from_secs(60);

    #[test]
    fn in_sync_round_is_a_noop_with_zero_lag() {
        let source = vec![src("tenants/a/x", "e1", 0)];
        let target = BTreeMap::from([("tenants/a/x".to_string(), tgt("e1"))]);
        let manifest = Manifest {
            entries: BTreeMap::from([("tenants/a/x".to_string(), entry("e1"))]),
            ..Manifest::default()
        };
        let p = plan(&source, &target, &manifest, t(100), DELAY);
        assert!(p.is_noop(&manifest));
        assert_eq!(p.lag, Duration::ZERO);
    }

    #[test]
    fn new_changed_and_tampered_objects_are_copied_and_lag_is_the_oldest_change() {
        let source = vec![
            src("tenants/a/new", "n", 90),
            src("tenants/a/changed", "e2", 40),
            src("tenants/a/tampered", "e3", 0),
            src("tenants/a/gone-from-replica", "e4", 0),
        ];
        let mut bad = tgt("e3");
        bad.etag = "someone-else".into();
        let target = BTreeMap::from([
            ("tenants/a/changed".to_string(), tgt("e1")),
            ("tenants/a/tampered".to_string(), bad),
        ]);
        let manifest = Manifest {
            entries: BTreeMap::from([
                ("tenants/a/changed".to_string(), entry("e1")),
                ("tenants/a/tampered".to_string(), entry("e3")),
                ("tenants/a/gone-from-replica".to_string(), entry("e4")),
            ]),
            ..Manifest::default()
        };
        let p = plan(&source, &target, &manifest, t(100), DELAY);
        let keys: Vec<&str> = p.copy.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "tenants/a/new",
                "tenants/a/changed",
                "tenants/a/tampered",
                "tenants/a/gone-from-replica"
            ]
        );
        assert_eq!(p.lag, Duration::from_secs(100));
    }

    #[test]
    fn deletions_wait_for_the_safety_delay() {
        // One object stays at the source (a source listing nothing at all deletes nothing).
        let kept = [src("tenants/a/kept", "k", 0)];
        let target = BTreeMap::from([
            ("tenants/a/old".to_string(), tgt("e1")),
            ("tenants/a/kept".to_string(), tgt("k")),
        ]);
        let manifest = Manifest {
            entries: BTreeMap::from([
                ("tenants/a/old".to_string(), entry("e1")),
                ("tenants/a/kept".to_string(), entry("k")),
            ]),
            ..Manifest::default()
        };
        let first = plan(&kept, &target, &manifest, t(100), DELAY);
        assert!(first.delete.is_empty());
        assert_eq!(first.missing_since.get("tenants/a/old"), Some(&t(100)));
        assert!(!first.is_noop(&manifest));
        let m2 = Manifest {
            missing_since: first.missing_since.clone(),
            ..manifest.clone()
        };
        let still = plan(&kept, &target, &m2, t(159), DELAY);
        assert!(still.delete.is_empty());
        assert!(still.is_noop(&m2));
        let due = plan(&kept, &target, &m2, t(160), DELAY);
        assert_eq!(due.delete, ["tenants/a/old"]);
        assert_eq!(due.deletions_held, 0);
        assert!(due.missing_since.is_empty());
    }

    #[test]
    fn an_object_that_comes_back_is_no_longer_pending_deletion() {
        let target = BTreeMap::from([("tenants/a/x".to_string(), tgt("e1"))]);
        let manifest = Manifest {
            entries: BTreeMap::from([("tenants/a/x".to_string(), entry("e1"))]),
            missing_since: BTreeMap::from([("tenants/a/x".to_string(), t(0))]),
        };
        let p = plan(&[src("tenants/a/x", "e1", 0)], &target, &manifest, t(10), DELAY);
        assert!(p.missing_since.is_empty());
        assert!(p.copy.is_empty());
    }

    #[test]
    fn replica_objects_not_written_by_replication_are_never_deleted() {
        // Written in the replica region while it was active (not in the manifest), and one of ours that
        // someone overwrote since: neither is ours to delete, whatever the delay.
        let target = BTreeMap::from([
            ("tenants/a/written-there".to_string(), tgt("w")),
            (
                "tenants/a/ours-changed".to_string(),
                TargetObject {
                    size: 10,
                    etag: "someone".into(),
                },
            ),
            ("tenants/a/ours".to_string(), tgt("e1")),
            ("tenants/a/kept".to_string(), tgt("k")),
        ]);
        let manifest = Manifest {
            entries: BTreeMap::from([
                ("tenants/a/ours-changed".to_string(), entry("e2")),
                ("tenants/a/ours".to_string(), entry("e1")),
                ("tenants/a/kept".to_string(), entry("k")),
            ]),
            missing_since: BTreeMap::from([
                ("tenants/a/written-there".to_string(), t(0)),
                ("tenants/a/ours-changed".to_string(), t(0)),
                ("tenants/a/ours".to_string(), t(0)),
            ]),
        };
        let p = plan(
            &[src("tenants/a/kept", "k", 0)],
            &target,
            &manifest,
            t(10_000),
            DELAY,
        );
        assert_eq!(p.delete, ["tenants/a/ours"]);
        assert!(p.missing_since.is_empty(), "nothing else is pending deletion");
    }

    #[test]
    fn failback_brings_home_what_was_written_in_the_failover_region() {
        // europe was active; africa (home) is back. europe holds: an unchanged replica of africa's object,
        // a new object, an object changed in europe after africa's version, and one africa changed later.
        let europe = vec![
            src("tenants/a/replica", "r", 0),
            src("tenants/a/new-in-europe", "n", 50),
            src("tenants/a/changed-in-europe", "c2", 60),
            src("tenants/a/older-in-europe", "o1", 10),
        ];
        let europe_manifest = Manifest {
            entries: BTreeMap::from([(
                "tenants/a/replica".to_string(),
                Entry {
                    target_etag: "r".into(),
                    ..entry("r")
                },
            )]),
            ..Manifest::default()
        };
        let africa = vec![
            src("tenants/a/replica", "r", 0),
            src("tenants/a/changed-in-europe", "c1", 20),
            src("tenants/a/older-in-europe", "o2", 70),
        ];
        let keys: Vec<String> = catch_up(&europe, &europe_manifest, &africa)
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["tenants/a/new-in-europe", "tenants/a/changed-in-europe"]);
    }

    #[test]
    fn the_source_follows_the_active_region_and_the_former_one_catches_up_first() {
        let placed: Vec<String> = ["africa", "europe", "asia"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let first = sourcing("africa", None, None, &placed);
        assert_eq!(
            first,
            Sourcing {
                source: "africa".into(),
                catch_up: vec![]
            }
        );
        // africa fails, traffic goes to europe: europe is the source at once; africa (down, maybe holding
        // writes that never replicated) must bring them over before europe's copies go into it.
        let failed_over = sourcing("africa", Some(&first), Some("europe"), &placed);
        assert_eq!(
            failed_over,
            Sourcing {
                source: "europe".into(),
                catch_up: vec!["africa".into()]
            }
        );
        // Traffic back to africa before africa caught up: europe joins the catch-up, africa leaves it.
        let back = sourcing("africa", Some(&failed_over), Some("africa"), &placed);
        assert_eq!(
            back,
            Sourcing {
                source: "africa".into(),
                catch_up: vec!["europe".into()]
            }
        );
        // A region the tenant no longer lives in leaves the catch-up; an active region outside the placement
        // is ignored.
        let narrowed = sourcing("africa", Some(&back), Some("americas"), &placed[..1]);
        assert_eq!(
            narrowed,
            Sourcing {
                source: "africa".into(),
                catch_up: vec![]
            }
        );
    }

    #[test]
    fn a_source_that_lost_everything_or_most_of_it_deletes_nothing() {
        let keys: Vec<String> = (0..20).map(|i| format!("tenants/a/o{i}")).collect();
        let target: BTreeMap<String, TargetObject> = keys.iter().map(|k| (k.clone(), tgt("e"))).collect();
        let manifest = Manifest {
            entries: keys.iter().map(|k| (k.clone(), entry("e"))).collect(),
            missing_since: keys.iter().map(|k| (k.clone(), t(0))).collect(),
        };
        // Emptied bucket: nothing is deleted, all held, still pending.
        let p = plan(&[], &target, &manifest, t(10_000), DELAY);
        assert!(p.delete.is_empty());
        assert_eq!(p.deletions_held, 20);
        assert_eq!(p.missing_since.len(), 20);
        // 15 of 20 gone at once: held too.
        let five: Vec<SourceObject> = keys[..5].iter().map(|k| src(k, "e", 0)).collect();
        let p = plan(&five, &target, &manifest, t(10_000), DELAY);
        assert!(p.delete.is_empty());
        assert_eq!(p.deletions_held, 15);
        // A few deletions (below the share) go through.
        let most: Vec<SourceObject> = keys[..17].iter().map(|k| src(k, "e", 0)).collect();
        let p = plan(&most, &target, &manifest, t(10_000), DELAY);
        assert_eq!(p.delete.len(), 3);
        assert_eq!(p.deletions_held, 0);
    }

    #[test]
    fn multipart_etag_format() {
        let e = multipart_etag(&[[0u8; 16], [1u8; 16]], |_| [0xab; 16]);
        assert_eq!(e, format!("{}-2", "ab".repeat(16)));
    }
}
