//! Object-storage replication (IO, leader only): every round, list `tenants/` once in each involved
//! region's bucket, plan each (tenant, replica region) pair against its manifest (pure, `azora-core`),
//! copy what changed with verified checksums, delete what the source lost once the safety delay has
//! passed, and save the manifest only when it changed. Copies only ever go to regions the tenant is placed
//! in; replicas left in a region the tenant may no longer use are removed. Lag lands in a histogram, a
//! per-tenant gauge and (on state changes) the Tenant's status.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use azora_adapters::objstore::{self, ObjectStore, StoreConfig};
use azora_api::region::RegionSpec;
use azora_api::tenant::TenantSpec;
use azora_core::placement::place;
use azora_core::replication::{Entry, Manifest, SourceObject, TargetObject, manifest_key, plan};
use azora_core::validate::{self, ProblemKind};
use futures::StreamExt;
use jiff::Timestamp;
use kube::ResourceExt as _;
use tracing::{info, warn};

use azora_runtime::clusters::Wake;
use azora_runtime::{Context, Needs};

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

/// Replication state by tenant and region, shared with the Tenant controller.
#[derive(Clone, Default)]
pub struct Replication {
    inner: Arc<RwLock<BTreeMap<String, BTreeMap<String, ReplicaState>>>>,
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

async fn store_config(ctx: &Context, spec: &RegionSpec) -> Result<Option<StoreConfig>, String> {
    let Some(os) = &spec.object_store else {
        return Ok(None);
    };
    let credentials = match &os.credentials_secret {
        Some(secret) => {
            let get = |key: &'static str| {
                let name = secret.name.clone();
                async move {
                    match ctx.secrets.value(&name, key).await {
                        Ok(Some(v)) => {
                            String::from_utf8(v).map_err(|_| format!("Secret {name} key {key} is not UTF-8"))
                        }
                        Ok(None) => Err(format!("Secret {name} key {key} not found")),
                        Err(e) => Err(format!("reading Secret {name}: {e}")),
                    }
                }
            };
            (get("accessKeyId").await?, get("secretAccessKey").await?)
        }
        None => (
            std::env::var("AWS_ACCESS_KEY_ID")
                .map_err(|_| "no credentialsSecret and no AWS_ACCESS_KEY_ID".to_string())?,
            std::env::var("AWS_SECRET_ACCESS_KEY")
                .map_err(|_| "no credentialsSecret and no AWS_SECRET_ACCESS_KEY".to_string())?,
        ),
    };
    Ok(Some(StoreConfig {
        endpoint: os.endpoint.clone(),
        bucket: os.bucket.clone(),
        signing_region: os.signing_region.clone(),
        force_path_style: os.force_path_style,
        credentials,
    }))
}

/// Per-term state: clients by region (rebuilt when the config changes) and manifests.
#[derive(Default)]
struct Round {
    stores: BTreeMap<String, (StoreConfig, ObjectStore)>,
    manifests: BTreeMap<(String, String), Manifest>,
}

/// Runs replication rounds until `stop`.
pub async fn run(
    ctx: Context,
    cfg: ReplicationConfig,
    shared: Replication,
    stop: impl std::future::Future<Output = ()>,
) {
    let work = async {
        let mut state = Round::default();
        loop {
            let started = std::time::Instant::now();
            round(&ctx, &cfg, &shared, &mut state).await;
            let spent = started.elapsed();
            tokio::time::sleep(cfg.interval.saturating_sub(spent).max(Duration::from_millis(500))).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = stop => {}
    }
}

struct Job {
    tenant: String,
    home: String,
    target: String,
    source: Vec<SourceObject>,
    targets: BTreeMap<String, TargetObject>,
    src: ObjectStore,
    dst: ObjectStore,
}

async fn round(ctx: &Context, cfg: &ReplicationConfig, shared: &Replication, state: &mut Round) {
    let Ok(world) = ctx.world(Needs::default(), &[]).await else {
        return;
    };
    let regions: BTreeMap<String, RegionSpec> = ctx.caches.regions.specs();
    // Valid, live tenants and where they are placed.
    let tenants: BTreeMap<String, (TenantSpec, Vec<String>)> = ctx
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
            Some((o.name_any(), (spec, placed)))
        })
        .collect();
    shared.retain(|t| tenants.contains_key(t));

    // Clients for every region with a store.
    let mut store_errors: BTreeMap<String, String> = BTreeMap::new();
    for (name, spec) in &regions {
        match store_config(ctx, spec).await {
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

    let mut jobs = Vec::new();
    let mut residency_cleanup = Vec::new();
    for (tenant, (spec, placed)) in &tenants {
        let home = &spec.home_region;
        for target in placed.iter().filter(|r| *r != home) {
            let prepared = (|| {
                let src = state.stores.get(home).map(|(_, s)| s.clone()).ok_or_else(|| {
                    format!(
                        "source {home}: {}",
                        store_errors.get(home).cloned().unwrap_or_default()
                    )
                })?;
                let dst = state.stores.get(target).map(|(_, s)| s.clone()).ok_or_else(|| {
                    format!(
                        "replica {target}: {}",
                        store_errors.get(target).cloned().unwrap_or_default()
                    )
                })?;
                let source = match listings.get(home) {
                    Some(Ok(l)) => l.get(tenant).cloned().unwrap_or_default(),
                    Some(Err(e)) => return Err(format!("listing source {home}: {e}")),
                    None => return Err(format!("source {home}: not listed")),
                };
                let targets = match listings.get(target) {
                    Some(Ok(l)) => l
                        .get(tenant)
                        .map(|v| {
                            v.iter()
                                .map(|o| {
                                    (
                                        o.key.clone(),
                                        TargetObject {
                                            size: o.size,
                                            etag: o.etag.clone(),
                                        },
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    Some(Err(e)) => return Err(format!("listing replica {target}: {e}")),
                    None => return Err(format!("replica {target}: not listed")),
                };
                Ok(Job {
                    tenant: tenant.clone(),
                    home: home.clone(),
                    target: target.clone(),
                    source,
                    targets,
                    src,
                    dst,
                })
            })();
            match prepared {
                Ok(j) => jobs.push(j),
                Err(msg) => record(
                    ctx,
                    shared,
                    tenant,
                    target,
                    ReplicaState {
                        in_sync: false,
                        lag_seconds: 0,
                        error: Some(msg),
                    },
                ),
            }
        }
        // Replicas in regions the tenant is no longer placed in (residency tightened, region dropped).
        for (region, listing) in &listings {
            if region == home || placed.contains(region) {
                continue;
            }
            if let Ok(l) = listing
                && let Some(objs) = l.get(tenant)
                && let Some((_, store)) = state.stores.get(region)
            {
                residency_cleanup.push((
                    tenant.clone(),
                    home.clone(),
                    region.clone(),
                    store.clone(),
                    objs.clone(),
                ));
            }
        }
    }

    for (tenant, home, region, store, objs) in residency_cleanup {
        // Only replicas this operator made (a manifest exists) are removed.
        let key = manifest_key(&tenant, &home);
        if matches!(store.get_bytes(&key).await, Ok(Some(_))) {
            for o in &objs {
                if let Err(e) = store.delete(&o.key).await {
                    warn!(%tenant, %region, error = %e, "removing a replica outside the tenant's placement failed");
                }
            }
            let _ = store.delete(&key).await;
            state.manifests.remove(&(tenant.clone(), region.clone()));
            info!(%tenant, %region, objects = objs.len(), "replicas removed from a region the tenant is no longer placed in");
        }
    }

    // Work the pairs with bounded concurrency; manifests move into the jobs and back.
    let delete_delay = cfg.delete_delay;
    let mut inputs = Vec::new();
    for job in jobs {
        let cached = state.manifests.remove(&(job.tenant.clone(), job.target.clone()));
        inputs.push((job, cached));
    }
    let results: Vec<(String, String, Option<Manifest>)> = futures::stream::iter(inputs)
        .map(|(job, cached)| async move {
            let (state_, manifest) = replicate(ctx, &job, cached, delete_delay).await;
            record(ctx, shared, &job.tenant, &job.target, state_);
            (job.tenant, job.target, manifest)
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    for (tenant, target, manifest) in results {
        if let Some(m) = manifest {
            state.manifests.insert((tenant, target), m);
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

/// One (tenant, replica region) pair. Returns the state and the manifest to keep (none when it could not
/// be read, so the next round reads it again).
async fn replicate(
    ctx: &Context,
    job: &Job,
    cached: Option<Manifest>,
    delete_delay: Duration,
) -> (ReplicaState, Option<Manifest>) {
    let region = job.target.as_str();
    let mkey = manifest_key(&job.tenant, &job.home);
    let mut manifest = match cached {
        Some(m) => m,
        None => match job.dst.get_bytes(&mkey).await {
            Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_default(),
            Ok(None) => Manifest::default(),
            Err(e) => {
                return (
                    ReplicaState {
                        in_sync: false,
                        lag_seconds: 0,
                        error: Some(e.to_string()),
                    },
                    None,
                );
            }
        },
    };
    let now = Timestamp::now();
    let p = plan(&job.source, &job.targets, &manifest, now, delete_delay);
    if p.is_noop(&manifest) {
        return (
            ReplicaState {
                in_sync: true,
                lag_seconds: 0,
                error: None,
            },
            Some(manifest),
        );
    }
    let mut error = None;
    for o in &p.copy {
        match objstore::copy(&job.src, &job.dst, o).await {
            Ok(c) => {
                let done = Timestamp::now();
                let lag = done.duration_since(o.last_modified).as_secs_f64().max(0.0);
                ctx.metrics
                    .replication_lag
                    .with_label_values(&[region])
                    .observe(lag);
                ctx.metrics
                    .replication_objects
                    .with_label_values(&[region, "copied"])
                    .inc();
                ctx.metrics
                    .replication_bytes
                    .with_label_values(&[region])
                    .inc_by(c.size);
                manifest.entries.insert(
                    o.key.clone(),
                    Entry {
                        source_etag: o.etag.clone(),
                        size: c.size,
                        target_etag: c.target_etag,
                        sha256: c.sha256,
                        copied_at: done,
                    },
                );
            }
            Err(e) => {
                ctx.metrics
                    .replication_objects
                    .with_label_values(&[region, "failed"])
                    .inc();
                warn!(tenant = %job.tenant, %region, error = %e, "copying a replica failed");
                error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    for key in &p.delete {
        match job.dst.delete(key).await {
            Ok(()) => {
                ctx.metrics
                    .replication_objects
                    .with_label_values(&[region, "deleted"])
                    .inc();
                manifest.entries.remove(key);
            }
            Err(e) => {
                error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    manifest.missing_since = p.missing_since.clone();
    // Entries whose source and replica are both gone are forgotten.
    manifest.entries.retain(|k, _| {
        job.source.iter().any(|s| &s.key == k) || job.targets.contains_key(k) && !p.delete.contains(k)
    });
    if let Ok(bytes) = serde_json::to_vec(&manifest)
        && let Err(e) = job.dst.put_bytes(&mkey, bytes).await
    {
        error.get_or_insert_with(|| e.to_string());
    }
    let in_sync = error.is_none();
    let state = ReplicaState {
        in_sync,
        lag_seconds: if in_sync { 0 } else { p.lag.as_secs() },
        error,
    };
    (state, Some(manifest))
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
            last_modified: Timestamp::UNIX_EPOCH,
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
