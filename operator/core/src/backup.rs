//! Backups, planned (pure, no IO): what of a tenant's namespace goes into a backup and how it is cleaned of
//! server-set fields, the manifest format, which regions must hold a copy, when each tenant's next backup
//! is due (spread over the interval, one catch-up run after downtime, never a burst), which backups
//! retention prunes (never the last good one), and the recovery point now.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use azora_api::backup::Phase;
use azora_api::tenant::TenantSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::placement::residency_allows;
use crate::tenancy::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::world::World;

/// Format version of the manifest.
pub const FORMAT: u32 = 1;
/// Name of the manifest inside an archive.
pub const MANIFEST: &str = "manifest.json";
/// Label on a Backup naming its schedule.
pub const SCHEDULE_LABEL: &str = "azora.io/backup-schedule";
/// Label on a Backup naming its tenant.
pub const TENANT_LABEL: &str = "azora.io/tenant";

/// The prefix of a backup's objects in every region's store.
pub fn prefix(tenant: &str, backup: &str) -> String {
    format!("backups/{tenant}/{backup}/")
}

/// The key of a backup's archive: named by its checksum, so a key never holds two different contents (a run
/// that starts over writes a new archive under a new key).
pub fn archive_key(tenant: &str, backup: &str, sha256: &str) -> String {
    format!("{}archive-{}.tar.zst", prefix(tenant, backup), short(sha256))
}

/// The key of the manifest beside an archive.
pub fn manifest_key(tenant: &str, backup: &str, sha256: &str) -> String {
    format!("{}manifest-{}.json", prefix(tenant, backup), short(sha256))
}

fn short(sha256: &str) -> &str {
    sha256.get(..16).unwrap_or(sha256)
}

/// One entry of an archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Path inside the archive.
    pub path: String,
    /// What it is: `object` (a Kubernetes object), `secret` (an encrypted Secret), `tenant` (the control
    /// plane's declaration), `listing` (the tenant's object-store listing).
    pub kind: String,
    /// For Kubernetes objects: apiVersion, kind, name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectId>,
    /// SHA-256 of the entry's bytes as stored in the archive (hex).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Which Kubernetes object an entry holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectId {
    /// apiVersion.
    pub api_version: String,
    /// kind.
    pub kind: String,
    /// name.
    pub name: String,
}

/// A backup's manifest: every entry with its checksum; beside the archive it also carries the archive's
/// own checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// Tenant.
    pub tenant: String,
    /// Backup name.
    pub backup: String,
    /// Namespace the objects were read from.
    pub namespace: String,
    /// Region whose cluster the objects were read from.
    pub source_region: String,
    /// Time of the data (RFC 3339).
    pub data_time: String,
    /// Whether Secrets are in the archive (encrypted).
    pub secrets_included: bool,
    /// Id of the key the Secrets are encrypted with (a hash of it, never the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Entries in archive order.
    pub entries: Vec<Entry>,
    /// SHA-256 of the archive (only in the manifest stored beside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
}

/// Where a kind goes in restore order: what other objects use (ServiceAccounts, Secrets, ConfigMaps,
/// claims) first, Services next, everything else after.
pub fn restore_rank(kind: &str) -> u8 {
    match kind {
        "ServiceAccount" | "Secret" | "ConfigMap" | "PersistentVolumeClaim" => 0,
        "Service" => 1,
        _ => 2,
    }
}

/// Resources never backed up: recreated by the cluster or by their owners, or runtime state.
const SKIPPED_RESOURCES: &[&str] = &[
    "pods",
    "events",
    "endpoints",
    "endpointslices",
    "controllerrevisions",
    "leases",
    "replicasets",
    "jobs",
    "localsubjectaccessreviews",
    "bindings",
    "pods/eviction",
];

/// Whether objects of a namespaced resource (plural, lowercase) go into backups.
pub fn resource_backed_up(plural: &str, verbs_list_get: bool) -> bool {
    verbs_list_get && !plural.contains('/') && !SKIPPED_RESOURCES.contains(&plural)
}

/// A live object cleaned for a backup: server-set fields stripped so a restore recreates it. `None` for
/// objects that are not backed up: owned by another object (their owner recreates them), placed by the
/// control plane itself, and what every namespace gets by itself (the `default` ServiceAccount, `kube-root-ca.crt`, service-account tokens).
pub fn clean(obj: &Value) -> Option<Value> {
    let meta = obj.get("metadata")?;
    if meta
        .get("ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|o| !o.is_empty())
    {
        return None;
    }
    // What placement puts in every region (quota, limits, network policy, role binding) is placed again by
    // the control plane, with the region's own labels: not backed up.
    if meta
        .pointer(&format!("/labels/{}", MANAGED_BY_LABEL.replace('/', "~1")))
        .and_then(Value::as_str)
        == Some(MANAGED_BY)
    {
        return None;
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    let generated = match kind {
        "ServiceAccount" => name == "default",
        "ConfigMap" => name == "kube-root-ca.crt",
        "Secret" => obj.get("type").and_then(Value::as_str) == Some("kubernetes.io/service-account-token"),
        _ => false,
    };
    if generated {
        return None;
    }
    let mut out = obj.clone();
    let o = out.as_object_mut()?;
    o.remove("status");
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "uid",
            "resourceVersion",
            "managedFields",
            "creationTimestamp",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generateName",
            "namespace",
        ] {
            m.remove(f);
        }
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            a.remove("deployment.kubernetes.io/revision");
            if a.is_empty() {
                m.remove("annotations");
            }
        }
    }
    match kind {
        "Service" => {
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                for f in ["clusterIP", "clusterIPs"] {
                    spec.remove(f);
                }
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut)
                    && spec_type_is_cluster_ip(spec_type(&obj["spec"]))
                {
                    for p in ports {
                        if let Some(p) = p.as_object_mut() {
                            p.remove("nodePort");
                        }
                    }
                }
            }
        }
        "PersistentVolumeClaim" => {
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("volumeName");
            }
            if let Some(a) = o
                .get_mut("metadata")
                .and_then(|m| m.get_mut("annotations"))
                .and_then(Value::as_object_mut)
            {
                a.retain(|k, _| {
                    !k.starts_with("pv.kubernetes.io/") && !k.starts_with("volume.beta.kubernetes.io/")
                });
            }
        }
        _ => {}
    }
    Some(out)
}

fn spec_type(spec: &Value) -> &str {
    spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP")
}

fn spec_type_is_cluster_ip(t: &str) -> bool {
    t == "ClusterIP"
}

/// Whether `live` holds everything `backed_up` says (labels, annotations, and every other top-level field
/// but metadata), compared as a subset: defaults the server added do not count as a difference.
pub fn restored_matches(backed_up: &Value, live: &Value) -> Result<(), String> {
    let Some(b) = backed_up.as_object() else {
        return Err("backed-up object is not an object".into());
    };
    for (k, v) in b {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for f in ["labels", "annotations"] {
                    if let Some(want) = v.get(f)
                        && let Err(path) = subset(want, live.get("metadata").and_then(|m| m.get(f)), f)
                    {
                        return Err(format!("metadata.{path} differs"));
                    }
                }
            }
            _ => {
                if let Err(path) = subset(v, live.get(k), k) {
                    return Err(format!("{path} differs"));
                }
            }
        }
    }
    Ok(())
}

fn subset(want: &Value, got: Option<&Value>, path: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Some(Value::Object(g))) => {
            for (k, v) in w {
                subset(v, g.get(k), &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(w), Some(Value::Array(g))) if w.len() == g.len() => {
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                subset(a, Some(b), &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Null, None) => Ok(()),
        (w, Some(g)) if w == g => Ok(()),
        _ => Err(path.to_string()),
    }
}

/// The regions that must hold a copy of a tenant's backup: its home region first, then (when copies go to
/// every allowed region) every other region its residency allows that has an object store. Never a region
/// the residency forbids.
pub fn required_regions(spec: &TenantSpec, world: &World, copy_to_allowed: bool) -> Vec<String> {
    let mut out = vec![spec.home_region.clone()];
    if copy_to_allowed {
        for (name, facts) in &world.regions {
            if name != &spec.home_region
                && facts.has_object_store
                && residency_allows(spec, world, name).is_ok()
            {
                out.push(name.clone());
            }
        }
    }
    out.retain(|r| residency_allows(spec, world, r).is_ok());
    out
}

/// A stable offset of a tenant inside the interval, so a schedule's tenants are spread over it.
pub fn offset(tenant: &str, every: Duration) -> Duration {
    // FNV-1a: stable across processes and versions (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let every_ms = every.as_millis().max(1) as u64;
    Duration::from_millis(h % every_ms)
}

/// The slot a moment falls in for a tenant: slots start at `offset + k * every` (Unix time), so the name
/// of a slot's backup is the same whoever computes it, and a run is created at most once per slot.
pub fn slot(now_unix_ms: i64, tenant: &str, every: Duration) -> i64 {
    let every_ms = every.as_millis().max(1) as i64;
    let off = offset(tenant, every).as_millis() as i64;
    (now_unix_ms - off).div_euclid(every_ms)
}

/// When slot `k` starts (Unix milliseconds).
pub fn slot_start(k: i64, tenant: &str, every: Duration) -> i64 {
    let every_ms = every.as_millis().max(1) as i64;
    k * every_ms + offset(tenant, every).as_millis() as i64
}

/// The name of the Backup a schedule creates for a tenant in a slot (at most 253 characters: the schedule
/// and tenant names are each at most 63 in practice; longer ones are cut and hashed).
pub fn backup_name(schedule: &str, tenant: &str, slot: i64) -> String {
    let name = format!("{schedule}-{tenant}-{slot}");
    if name.len() <= 253 {
        return name;
    }
    let cut: String = name.chars().take(200).collect();
    format!("{}-{:x}", cut.trim_end_matches('-'), fnv(&name))
}

/// Label on a scheduled test Restore naming its schedule.
pub const TEST_RESTORE_LABEL: &str = "azora.io/test-restore";

/// The Restore a schedule creates to prove a tenant's backup in a test-restore slot, and the scratch
/// namespace it restores into (its own per slot, so a namespace still terminating never collides).
pub fn test_restore_names(schedule: &str, tenant: &str, slot: i64) -> (String, String) {
    let name = backup_name(schedule, tenant, slot);
    let name = format!("{}-test", name.get(..247).unwrap_or(&name));
    (
        name,
        format!(
            "azora-test-restore-{:016x}",
            fnv(&format!("{schedule}/{tenant}/{slot}"))
        ),
    )
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The largest archive a backup makes (what the archive writer refuses beyond).
pub const MAX_ARCHIVE_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// The least throughput a run's steps are budgeted at (the floor a copy is read back at, too).
pub const FLOOR_BYTES_PER_SEC: u64 = 4 * 1024 * 1024;

/// How long one attempt of a backup run may take: `base`, plus `size` bytes at the floor throughput for
/// every pass over them (export and upload, then per copy: the copy and its read-back). A large tenant's
/// run gets the time its bytes need instead of starting over every `base` and never finishing.
pub fn run_deadline(base: std::time::Duration, size: u64, copies: usize) -> std::time::Duration {
    // Never more than the largest archive there can be (a bogus recorded size gives no endless deadline).
    let size = size.min(MAX_ARCHIVE_BYTES);
    let passes = 2 + 2 * copies.min(16) as u64;
    base + std::time::Duration::from_secs((size / FLOOR_BYTES_PER_SEC).saturating_mul(passes))
}

/// How long a run may go on over its attempts before it is ended as abandoned: four attempts' worth, at
/// least `base`.
pub fn abandon_after(base: std::time::Duration, deadline: std::time::Duration) -> std::time::Duration {
    base.max(deadline.saturating_mul(4))
}

/// What retention and RPO need to know about one Backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFacts {
    /// Name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Creation time (Unix ms).
    pub created_ms: i64,
    /// Phase (`None`: not started).
    pub phase: Option<Phase>,
    /// Time of the data (Unix ms), once exported.
    pub data_ms: Option<i64>,
    /// Copies verified.
    pub verified_copies: usize,
    /// Whether it was ever verified in every required region.
    pub ever_good: bool,
    /// Whether it is being deleted already.
    pub deleting: bool,
    /// Archive size, once built.
    pub size_bytes: Option<u64>,
}

impl BackupFacts {
    /// Verified in every required region.
    pub fn good(&self) -> bool {
        self.phase == Some(Phase::Succeeded)
    }
    /// Has at least one verified copy (restorable, even if not everywhere).
    pub fn restorable(&self) -> bool {
        self.verified_copies > 0 && self.phase.is_some_and(Phase::is_final)
    }
}

/// The backups retention prunes: per tenant, those created more than `keep_for` ago — except the newest
/// `keep_last_good` good ones, the newest restorable one, the newest one that was ever good (so the last good
/// backup survives every later run failing, and its own copies being reported missing by a misconfigured
/// store), and runs still going. A Backup that never started (no phase) is pruned by age like a failed one.
pub fn prune(backups: &[BackupFacts], now_ms: i64, keep_for: Duration, keep_last_good: u32) -> Vec<String> {
    let mut by_tenant: BTreeMap<&str, Vec<&BackupFacts>> = BTreeMap::new();
    for b in backups.iter().filter(|b| !b.deleting) {
        by_tenant.entry(&b.tenant).or_default().push(b);
    }
    let keep_ms = keep_for.as_millis() as i64;
    let mut out = Vec::new();
    for (_, mut list) in by_tenant {
        // newest first (name breaks ties so the plan is stable)
        list.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.name.cmp(&a.name)));
        let mut protected: BTreeSet<&str> = list
            .iter()
            .filter(|b| b.good())
            .take(keep_last_good.max(1) as usize)
            .map(|b| b.name.as_str())
            .collect();
        if let Some(r) = list.iter().find(|b| b.restorable()) {
            protected.insert(&r.name);
        }
        if let Some(r) = list.iter().find(|b| b.ever_good) {
            protected.insert(&r.name);
        }
        for b in list {
            let running = b.phase.is_some_and(|p| !p.is_final());
            if running || protected.contains(b.name.as_str()) {
                continue;
            }
            if now_ms - b.created_ms > keep_ms {
                out.push(b.name.clone());
            }
        }
    }
    out
}

/// The recovery point of each tenant now: age in seconds of the data in its newest good backup (`None`:
/// no good backup).
pub fn rpo(backups: &[BackupFacts], tenants: &[String], now_ms: i64) -> BTreeMap<String, Option<u64>> {
    tenants
        .iter()
        .map(|t| {
            let newest = backups
                .iter()
                .filter(|b| &b.tenant == t && b.good())
                .filter_map(|b| b.data_ms)
                .max();
            (t.clone(), newest.map(|d| ((now_ms - d).max(0) / 1000) as u64))
        })
        .collect()
}

#[cfg(test)]
mod budget_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_run_gets_the_time_its_bytes_need() {
        let base = Duration::from_secs(900);
        assert_eq!(run_deadline(base, 0, 3), base);
        // 10 GiB at 4 MiB/s is 2,560 s per pass; export+upload and 3 copies read back are 8 passes.
        let big = run_deadline(base, 10 * 1024 * 1024 * 1024, 3);
        assert_eq!(big, base + Duration::from_secs(2560 * 8));
        assert_eq!(
            abandon_after(Duration::from_secs(3600), base),
            Duration::from_secs(3600)
        );
        assert_eq!(abandon_after(Duration::from_secs(3600), big), big * 4);
        // A bogus size is capped at the largest archive there can be.
        assert_eq!(
            run_deadline(base, u64::MAX, 3),
            run_deadline(base, MAX_ARCHIVE_BYTES, 3)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(name: &str, created_s: i64, phase: Option<Phase>, copies: usize) -> BackupFacts {
        BackupFacts {
            name: name.into(),
            tenant: "acme".into(),
            created_ms: created_s * 1000,
            phase,
            data_ms: Some(created_s * 1000),
            verified_copies: copies,
            ever_good: phase == Some(Phase::Succeeded),
            deleting: false,
            size_bytes: None,
        }
    }

    #[test]
    fn the_last_good_backup_survives_when_every_later_run_failed() {
        let bs = vec![
            facts("b1", 0, Some(Phase::Succeeded), 2),
            facts("b2", 100, Some(Phase::Failed), 0),
            facts("b3", 200, Some(Phase::Failed), 0),
        ];
        let pruned = prune(&bs, 10_000_000, Duration::from_secs(60), 1);
        assert_eq!(pruned, vec!["b3".to_string(), "b2".to_string()]);
    }

    #[test]
    fn old_good_backups_go_once_newer_good_ones_exist_and_running_ones_stay() {
        let bs = vec![
            facts("b1", 0, Some(Phase::Succeeded), 2),
            facts("b2", 100, Some(Phase::Succeeded), 2),
            facts("b3", 200, Some(Phase::Running), 0),
            facts("b4", 300, Some(Phase::Succeeded), 2),
        ];
        let pruned = prune(&bs, 1_000_000, Duration::from_secs(60), 1);
        assert_eq!(pruned, vec!["b2".to_string(), "b1".to_string()]);
        let pruned = prune(&bs, 1_000_000, Duration::from_secs(60), 2);
        assert_eq!(pruned, vec!["b1".to_string()]);
        // nothing is older than keepFor
        assert!(prune(&bs, 301_000, Duration::from_secs(3600), 1).is_empty());
    }

    #[test]
    fn a_partially_failed_backup_is_kept_while_it_is_the_newest_restorable_one() {
        let bs = vec![
            facts("b1", 0, Some(Phase::PartiallyFailed), 1),
            facts("b2", 100, Some(Phase::Failed), 0),
        ];
        assert_eq!(
            prune(&bs, 1_000_000, Duration::from_secs(60), 1),
            vec!["b2".to_string()]
        );
    }

    #[test]
    fn a_backup_that_was_good_once_survives_its_copies_vanishing_and_unstarted_ones_age_out() {
        let mut was_good = facts("b1", 0, Some(Phase::Failed), 0);
        was_good.ever_good = true;
        let bs = vec![
            was_good,
            facts("b2", 100, None, 0),
            facts("b3", 200, Some(Phase::Failed), 0),
        ];
        assert_eq!(
            prune(&bs, 1_000_000, Duration::from_secs(60), 1),
            vec!["b3".to_string(), "b2".to_string()]
        );
    }

    #[test]
    fn slots_spread_tenants_and_name_each_run_once() {
        let every = Duration::from_secs(300);
        let offsets: BTreeSet<u128> = (0..50)
            .map(|i| offset(&format!("t{i}"), every).as_millis())
            .collect();
        assert!(offsets.len() > 40, "tenants should not share a second");
        let now = 1_800_000_000_000;
        let k = slot(now, "acme", every);
        assert!(slot_start(k, "acme", every) <= now && now < slot_start(k + 1, "acme", every));
        // after a long downtime the current slot is one name: one catch-up run, never a burst
        assert_eq!(
            backup_name("s", "acme", k),
            backup_name("s", "acme", slot(now + 1, "acme", every))
        );
        assert!(backup_name(&"x".repeat(200), &"y".repeat(63), k).len() <= 253);
    }

    #[test]
    fn rpo_is_the_age_of_the_newest_good_data() {
        let bs = vec![
            facts("b1", 0, Some(Phase::Succeeded), 2),
            facts("b2", 100, Some(Phase::PartiallyFailed), 1),
        ];
        let r = rpo(&bs, &["acme".into(), "other".into()], 130_000);
        assert_eq!(r["acme"], Some(130));
        assert_eq!(r["other"], None);
    }

    #[test]
    fn cleaning_strips_server_fields_and_skips_generated_objects() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "tenant-a",
            "uid": "u", "resourceVersion": "5", "creationTimestamp": "x", "managedFields": [], "labels": {"app": "web"}},
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]}, "status": {}});
        let c = clean(&svc).unwrap();
        assert_eq!(
            c,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"ports": [{"port": 80}]}})
        );
        let owned =
            json!({"kind": "ReplicaSet", "metadata": {"name": "r", "ownerReferences": [{"uid": "x"}]}});
        assert!(clean(&owned).is_none());
        let placed = json!({"kind": "ResourceQuota", "metadata": {"name": "q",
            "labels": {"app.kubernetes.io/managed-by": "azora-operator"}}});
        assert!(clean(&placed).is_none());
        let sa = json!({"kind": "ServiceAccount", "metadata": {"name": "default"}});
        assert!(clean(&sa).is_none());
        let token = json!({"kind": "Secret", "type": "kubernetes.io/service-account-token", "metadata": {"name": "t"}});
        assert!(clean(&token).is_none());
    }

    #[test]
    fn a_restored_object_matches_when_it_holds_everything_backed_up() {
        let want = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}},
            "data": {"k": "v"}});
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "uid": "z",
            "labels": {"a": "1", "extra": "x"}}, "data": {"k": "v"}});
        assert!(restored_matches(&want, &live).is_ok());
        let changed = json!({"metadata": {"labels": {"a": "1"}}, "data": {"k": "other"}});
        assert_eq!(restored_matches(&want, &changed), Err("data.k differs".into()));
    }

    #[test]
    fn copies_go_to_home_and_every_allowed_region_with_a_store_only() {
        let w = crate::testing::world();
        let t = crate::testing::tenant("europe", &["africa"])
            .continents(&[azora_api::Continent::Europe, azora_api::Continent::Africa])
            .spec;
        let r = required_regions(&t, &w, true);
        assert_eq!(r[0], "europe");
        assert!(r.contains(&"africa".to_string()));
        assert!(!r.contains(&"asia".to_string()) && !r.contains(&"americas".to_string()));
        assert_eq!(required_regions(&t, &w, false), vec!["europe".to_string()]);
    }
}
