//! Object-storage replication (IO, leader only): every round, list `tenants/` once in each involved
//! region's bucket, and copy each tenant's objects from its *source* — its active region, where its
//! FailoverPolicy sends traffic — to the other regions it is placed in, planned per (tenant, replica
//! region) pair against that pair's manifest (pure, `azora-core`): copy what changed with checksums
//! verified before a replica is replaced, delete only replicas this replication wrote and nobody changed
//! since (after the safety delay; a source that lost most of its objects at once deletes nothing), and save
//! the manifest only when it changed. When the source moves, the region it moves away from joins the
//! catch-up list: what was written there is brought to the new source (newer wins, nothing deleted) before
//! anything is copied into it, and copies elsewhere wait while a catch-up that can run has not finished.
//! Source and catch-up list are recorded in the Tenant's status (`replicationSource`,
//! `replicationCatchUp`) before they are acted on, so a restart resumes them. Every copy, delete and
//! manifest write passes the leader fence. Work is grouped per replica region, each with its own bounded
//! concurrency, and a region whose store fails waits for the next round. Copies only go to regions the
//! tenant is placed in; replicas this replication left in a region the tenant may no longer use are
//! removed. Lag lands in a histogram, a per-tenant gauge and (on state changes) the Tenant's status.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use azora_adapters::kube_status::StatusWriter;
use azora_adapters::objstore::{ObjectStore, StoreConfig};
use azora_api::region::RegionSpec;
use azora_api::tenant::TenantSpec;
use azora_core::placement::place;
use azora_core::replication::{Manifest, SourceObject, Sourcing, sourcing};
use azora_runtime::pipeline::Kind as _;
use kube::api::DynamicObject;
use serde_json::Value;

use super::TenantKind;
use super::replicate::{Job, Mode, remove_replicas, replicate};
use azora_core::validate::{self, ProblemKind};
use futures::StreamExt;
use kube::ResourceExt as _;
use tracing::{info, warn};

use azora_runtime::clusters::Wake;
use azora_runtime::{Context, Needs};

pub use azora_core::replication::ReplicaState;

/// Replication state by tenant and region, and each tenant's source, shared with the Tenant controller.
#[derive(Clone, Default)]
pub struct Replication {
    inner: Arc<RwLock<BTreeMap<String, BTreeMap<String, ReplicaState>>>>,
    sources: Arc<RwLock<BTreeMap<String, String>>>,
}

impl Replication {
    /// The states of one tenant, by region.
    pub fn of(&self, tenant: &str) -> BTreeMap<String, ReplicaState> {
        self.inner
            .read()
            .ok()
            .and_then(|m| m.get(tenant).cloned())
            .unwrap_or_default()
    }

    /// Records a state; returns whether what the Tenant's status shows changed (sync flag or error).
    pub(super) fn set(&self, tenant: &str, region: &str, state: ReplicaState) -> bool {
        let Ok(mut m) = self.inner.write() else {
            return false;
        };
        let slot = m.entry(tenant.to_string()).or_default();
        let before = slot.insert(region.to_string(), state.clone());
        before.is_none_or(|b| b.in_sync != state.in_sync || b.error != state.error)
    }

    pub(super) fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut m) = self.inner.write() {
            m.retain(|t, _| keep(t));
        }
        if let Ok(mut m) = self.sources.write() {
            m.retain(|t, _| keep(t));
        }
    }

    /// The region a tenant's replicas are copied from, as this process last worked.
    pub fn source_of(&self, tenant: &str) -> Option<String> {
        self.sources.read().ok()?.get(tenant).cloned()
    }

    fn set_source(&self, tenant: &str, source: &str) {
        if let Ok(mut m) = self.sources.write() {
            m.insert(tenant.to_string(), source.to_string());
        }
    }
}

/// Tuning of the replication loop.
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// How long a replica object outlives its deleted source.
    pub delete_delay: Duration,
    /// (tenant, region) pairs worked on at once.
    pub concurrency: usize,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            delete_delay: Duration::from_secs(600),
            concurrency: 16,
        }
    }
}

type Listing = Result<BTreeMap<String, Vec<SourceObject>>, String>;

/// Longest a region's listing may take before the round goes on without it.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

fn group_by_tenant(objects: Vec<SourceObject>) -> BTreeMap<String, Vec<SourceObject>> {
    let mut out: BTreeMap<String, Vec<SourceObject>> = BTreeMap::new();
    for o in objects {
        let Some(rest) = o.key.strip_prefix("tenants/") else {
            continue;
        };
        let Some((tenant, _)) = rest.split_once('/') else {
            continue;
        };
        out.entry(tenant.to_string()).or_default().push(o);
    }
    out
}

/// Per-term state: clients by region (rebuilt when the config changes), manifests, and the source each
/// tenant's replication uses (what this process last recorded; the Tenant status may lag behind it).
#[derive(Default)]
pub(super) struct Round {
    pub(super) stores: BTreeMap<String, (StoreConfig, ObjectStore)>,
    pub(super) manifests: BTreeMap<(String, String, String), Manifest>,
    pub(super) sources: BTreeMap<String, Sourcing>,
}

/// Runs replication rounds until `stop`.
pub async fn run(
    ctx: Context,
    cfg: ReplicationConfig,
    shared: Replication,
    stop: impl std::future::Future<Output = ()>,
) {
    let writer = StatusWriter::new(
        ctx.client.clone(),
        TenantKind::resource(),
        "replication",
        ctx.fence.clone(),
    );
    let work = async {
        let mut state = Round::default();
        loop {
            let started = std::time::Instant::now();
            round(&ctx, &cfg, &shared, &writer, &mut state).await;
            let spent = started.elapsed();
            tokio::time::sleep(cfg.interval.saturating_sub(spent).max(Duration::from_millis(500))).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = stop => {}
    }
}

/// A tenant replication works on this round.
struct Live {
    spec: TenantSpec,
    placed: Vec<String>,
    active: Option<String>,
    recorded: Option<Sourcing>,
}

fn status_str(o: &DynamicObject, field: &str) -> Option<String> {
    o.data
        .get("status")
        .and_then(|s| s.get(field))
        .and_then(Value::as_str)
        .map(str::to_string)
}

async fn round(
    ctx: &Context,
    cfg: &ReplicationConfig,
    shared: &Replication,
    writer: &StatusWriter,
    state: &mut Round,
) {
    let Ok(world) = ctx.world(Needs::default(), &[]).await else {
        return;
    };
    let regions: BTreeMap<String, RegionSpec> = ctx.caches.regions.specs();
    // Valid, live tenants and where they are placed.
    let tenants: BTreeMap<String, Live> = ctx
        .caches
        .tenants
        .state()
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter_map(|o| {
            let spec: TenantSpec = serde_json::from_value(o.data.get("spec")?.clone()).ok()?;
            let problems = validate::tenant(&spec, &world);
            if problems
                .iter()
                .any(|p| matches!(p.kind, ProblemKind::Invalid | ProblemKind::Unresolved))
            {
                return None;
            }
            let placed = place(&spec, &world).placed;
            let live = Live {
                active: status_str(o, "activeRegion").filter(|a| placed.contains(a)),
                recorded: status_str(o, "replicationSource").map(|source| Sourcing {
                    source,
                    catch_up: o
                        .data
                        .get("status")
                        .and_then(|s| s.get("replicationCatchUp"))
                        .and_then(|c| serde_json::from_value(c.clone()).ok())
                        .unwrap_or_default(),
                }),
                spec,
                placed,
            };
            Some((o.name_any(), live))
        })
        .collect();
    shared.retain(|t| tenants.contains_key(t));
    state.sources.retain(|t, _| tenants.contains_key(t));

    // Clients for every region with a store.
    let mut store_errors: BTreeMap<String, String> = BTreeMap::new();
    for (name, spec) in &regions {
        match ctx.store_config(spec).await {
            Ok(Some(c)) => {
                if state.stores.get(name).is_none_or(|(old, _)| *old != c) {
                    let client = ObjectStore::new(&c);
                    state.stores.insert(name.clone(), (c, client));
                }
            }
            Ok(None) => {
                state.stores.remove(name);
                store_errors.insert(name.clone(), format!("region {name} has no object store"));
            }
            Err(e) => {
                state.stores.remove(name);
                store_errors.insert(name.clone(), e);
            }
        }
    }
    // One listing of tenants/ per region.
    let listings: BTreeMap<String, Listing> =
        futures::future::join_all(state.stores.iter().map(|(name, (_, s))| async move {
            // A hung store must not hold up the round for the others.
            let l = match tokio::time::timeout(LIST_TIMEOUT, s.list("tenants/")).await {
                Ok(r) => r.map(group_by_tenant).map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "listing {} did not finish within {}s",
                    s.bucket(),
                    LIST_TIMEOUT.as_secs()
                )),
            };
            (name.clone(), l)
        }))
        .await
        .into_iter()
        .collect();
    let stores: BTreeMap<String, ObjectStore> = state
        .stores
        .iter()
        .map(|(k, (_, s))| (k.clone(), s.clone()))
        .collect();
    let prepare = |tenant: &str, from: &str, to: &str, mode: Mode| -> Result<Job, String> {
        let store = |r: &str, what: &str| {
            stores
                .get(r)
                .cloned()
                .ok_or_else(|| format!("{what} {r}: {}", store_errors.get(r).cloned().unwrap_or_default()))
        };
        let listed = |r: &str, what: &str| match listings.get(r) {
            Some(Ok(l)) => Ok(l.get(tenant).cloned().unwrap_or_default()),
            Some(Err(e)) => Err(format!("listing {what} {r}: {e}")),
            None => Err(format!("{what} {r}: not listed")),
        };
        Ok(Job {
            tenant: tenant.to_string(),
            source: from.to_string(),
            target: to.to_string(),
            src: store(from, "source")?,
            dst: store(to, "replica")?,
            source_objects: listed(from, "source")?,
            target_objects: listed(to, "replica")?,
            mode,
        })
    };

    let mut jobs = Vec::new();
    let mut residency_cleanup = Vec::new();
    for (tenant, live) in &tenants {
        let home = live.spec.home_region.as_str();
        let recorded = state
            .sources
            .get(tenant)
            .cloned()
            .or_else(|| live.recorded.clone());
        let next = sourcing(home, recorded.as_ref(), live.active.as_deref(), &live.placed);
        // Nothing recorded means "home, nothing to catch up": that needs no write.
        let trivial = recorded.is_none() && next.source == home && next.catch_up.is_empty();
        if !trivial && recorded.as_ref() != Some(&next) {
            if let Some(r) = &recorded
                && r.source != next.source
            {
                info!(%tenant, from = %r.source, to = %next.source, catch_up = ?next.catch_up, "replication source follows the active region");
            }
            // Recorded before acting on it, so a restart resumes it; not recorded, not acted on.
            if !record_sourcing(ctx, writer, tenant, &next, &mut state.sources).await {
                continue;
            }
        }
        let from = next.source.clone();
        shared.set_source(tenant, &from);
        // What was written in a region that was the source must come to the source before anything is
        // copied into that region (newer wins, nothing deleted).
        for former in &next.catch_up {
            match prepare(tenant, former, &from, Mode::CatchUp) {
                Ok(j) => jobs.push(j),
                Err(msg) => pending(
                    ctx,
                    shared,
                    tenant,
                    former,
                    format!("catching up from {former}: {msg}"),
                ),
            }
        }
        // Copies from the source wait while a catch-up that can run has not finished (the source may still
        // lack newer writes); a former source that cannot be read at all does not stop replication.
        let waiting = next
            .catch_up
            .iter()
            .any(|r| matches!(listings.get(r), Some(Ok(_))) && stores.contains_key(r));
        if waiting {
            for target in live
                .placed
                .iter()
                .filter(|r| **r != from && !next.catch_up.contains(r))
            {
                pending(
                    ctx,
                    shared,
                    tenant,
                    target,
                    format!("waiting for the catch-up from {}", next.catch_up.join(", ")),
                );
            }
        }
        for target in live
            .placed
            .iter()
            .filter(|r| !waiting && **r != from && !next.catch_up.contains(r))
        {
            match prepare(tenant, &from, target, Mode::Replicate) {
                Ok(j) => jobs.push(j),
                Err(msg) => pending(ctx, shared, tenant, target, msg),
            }
        }
        // Replicas in regions the tenant is no longer placed in (residency tightened, region dropped).
        for (region, listing) in &listings {
            if live.placed.contains(region) {
                continue;
            }
            if let Ok(l) = listing
                && let Some(objs) = l.get(tenant)
                && let Some(store) = stores.get(region)
            {
                residency_cleanup.push((tenant.clone(), region.clone(), store.clone(), objs.clone()));
            }
        }
    }

    let all_regions: Vec<String> = regions.keys().cloned().collect();
    for (tenant, region, store, objs) in residency_cleanup {
        remove_replicas(ctx, &tenant, &region, &store, &objs, &all_regions, state).await;
    }

    // Work the pairs grouped by replica region, each group with its own bounded concurrency: a hung store
    // holds up only the pairs that write to it.
    let delete_delay = cfg.delete_delay;
    let mut groups: BTreeMap<String, Vec<(Job, Option<Manifest>)>> = BTreeMap::new();
    for job in jobs {
        let cached = state
            .manifests
            .remove(&(job.tenant.clone(), job.source.clone(), job.target.clone()));
        groups.entry(job.target.clone()).or_default().push((job, cached));
    }
    let per_region = cfg.concurrency.max(1);
    let results: Vec<Vec<Outcome>> = futures::future::join_all(groups.into_iter().map(|(region, group)| {
        // Once a copy into this region fails, the rest of its jobs wait for the next round: a hung or full
        // store costs one operation deadline per round, not one per object.
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        futures::stream::iter(group)
            .map(move |(job, cached)| {
                let failing = failing.clone();
                let region = region.clone();
                async move {
                    // Skipped this round: the pair's recorded state stands (no flapping condition).
                    if failing.load(std::sync::atomic::Ordering::Relaxed) {
                        return Outcome {
                            tenant: job.tenant,
                            source: job.source,
                            target: job.target,
                            manifest: cached,
                            caught_up: false,
                        };
                    }
                    let (state_, manifest) = replicate(ctx, &job, cached, delete_delay).await;
                    if state_.error.as_deref().is_some_and(|e| !e.starts_with("not writing")) {
                        warn!(%region, tenant = %job.tenant, "a copy into this region failed: its other pairs wait for the next round");
                        failing.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    let caught_up = matches!(job.mode, Mode::CatchUp) && state_.error.is_none();
                    record(ctx, shared, &job.tenant, &job.target, state_);
                    Outcome {
                        tenant: job.tenant,
                        source: job.source,
                        target: job.target,
                        manifest,
                        caught_up,
                    }
                }
            })
            .buffer_unordered(per_region)
            .collect::<Vec<_>>()
    }))
    .await;
    for o in results.into_iter().flatten() {
        if let Some(m) = o.manifest {
            state
                .manifests
                .insert((o.tenant.clone(), o.source.clone(), o.target.clone()), m);
        }
        if o.caught_up
            && let Some(current) = state.sources.get(&o.tenant).cloned()
            && current.source == o.target
        {
            info!(tenant = %o.tenant, from = %o.source, to = %o.target, "caught up: what was written there is at the source now");
            let mut next = current;
            next.catch_up.retain(|r| *r != o.source);
            record_sourcing(ctx, writer, &o.tenant, &next, &mut state.sources).await;
        }
    }
}

struct Outcome {
    tenant: String,
    source: String,
    target: String,
    manifest: Option<Manifest>,
    caught_up: bool,
}

fn pending(ctx: &Context, shared: &Replication, tenant: &str, region: &str, msg: String) {
    record(
        ctx,
        shared,
        tenant,
        region,
        ReplicaState {
            in_sync: false,
            lag_seconds: 0,
            error: Some(msg),
        },
    );
}

/// Records the sourcing in the Tenant's status (`replicationSource`, `replicationCatchUp`; fenced, manager
/// `azora-operator/replication`), so a restart resumes it. Returns whether it is recorded.
async fn record_sourcing(
    ctx: &Context,
    writer: &StatusWriter,
    tenant: &str,
    next: &Sourcing,
    sources: &mut BTreeMap<String, Sourcing>,
) -> bool {
    if sources.get(tenant) == Some(next) {
        return true;
    }
    let body = serde_json::json!({ "replicationSource": next.source, "replicationCatchUp": next.catch_up });
    match writer.apply(tenant, None, body).await {
        Ok(()) => {
            sources.insert(tenant.to_string(), next.clone());
            ctx.handles.clusters.wake(Wake::Tenant(tenant.to_string()));
            true
        }
        Err(e) => {
            warn!(%tenant, source = %next.source, error = &e as &dyn std::error::Error, "recording the replication source failed");
            false
        }
    }
}

fn record(ctx: &Context, shared: &Replication, tenant: &str, region: &str, state: ReplicaState) {
    ctx.metrics
        .tenant_replication_lag
        .with_label_values(&[tenant, region])
        .set(state.lag_seconds as f64);
    if shared.set(tenant, region, state) {
        ctx.handles.clusters.wake(Wake::Tenant(tenant.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_groups_by_tenant() {
        let o = |k: &str| SourceObject {
            key: k.into(),
            size: 1,
            etag: "e".into(),
            last_modified: jiff::Timestamp::UNIX_EPOCH,
        };
        let g = group_by_tenant(vec![
            o("tenants/a/x"),
            o("tenants/a/y/z"),
            o("tenants/b/x"),
            o("other/x"),
            o("tenants/c"),
        ]);
        assert_eq!(g.len(), 2);
        assert_eq!(g["a"].len(), 2);
        assert_eq!(g["b"].len(), 1);
    }
}
