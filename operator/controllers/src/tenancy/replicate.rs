//! One replication job (IO, leader only): copy what a (tenant, replica region) pair's plan says — or, on
//! failback, what was written in the region that was active — verifying every copy, delete only replicas
//! this replication wrote and nobody changed, save the manifest; every write passes the leader fence.
//! Also the removal of replicas from a region a tenant may no longer use.

use std::collections::BTreeMap;
use std::time::Duration;

use azora_adapters::objstore::{self, ObjectStore};
use azora_core::replication::{
    Entry, Manifest, ReplicaState, SourceObject, TargetObject, catch_up, manifest_key, plan,
};
use azora_runtime::Context;
use jiff::Timestamp;
use tracing::{info, warn};

use super::replication::Round;

/// What a job does.
#[derive(Clone, Debug)]
pub(super) enum Mode {
    /// Keep the replica in line with the source.
    Replicate,
    /// Bring what was written in the former source to the new one (copies only, no deletions).
    CatchUp,
}

pub(super) struct Job {
    pub(super) tenant: String,
    /// The region copied from.
    pub(super) source: String,
    pub(super) target: String,
    pub(super) source_objects: Vec<SourceObject>,
    pub(super) target_objects: Vec<SourceObject>,
    pub(super) src: ObjectStore,
    pub(super) dst: ObjectStore,
    pub(super) mode: Mode,
}

pub(super) async fn read_manifest(store: &ObjectStore, key: &str) -> Result<Manifest, String> {
    match store.get_bytes(key).await {
        Ok(Some(b)) => serde_json::from_slice(&b).map_err(|_| format!("manifest {key} is not readable")),
        Ok(None) => Ok(Manifest::default()),
        Err(e) => Err(e.to_string()),
    }
}

/// Removes, from a region the tenant may no longer use, the replicas replication wrote there (per the
/// manifests of every possible source) and nobody changed since; everything else stays.
pub(super) async fn remove_replicas(
    ctx: &Context,
    tenant: &str,
    region: &str,
    store: &ObjectStore,
    objs: &[SourceObject],
    sources: &[String],
    state: &mut Round,
) {
    for source in sources.iter().filter(|s| s.as_str() != region) {
        let key = manifest_key(tenant, source);
        let Ok(Some(bytes)) = store.get_bytes(&key).await else {
            continue;
        };
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
            continue;
        };
        let ours: Vec<&SourceObject> = objs
            .iter()
            .filter(|o| {
                manifest
                    .entries
                    .get(&o.key)
                    .is_some_and(|e| e.target_etag == o.etag)
            })
            .collect();
        let mut failed = false;
        for o in &ours {
            if ctx.fence.check_recent(FENCE_MAX_AGE).await.is_err() {
                return;
            }
            if let Err(e) = store.delete(&o.key).await {
                failed = true;
                warn!(%tenant, %region, error = %e, "removing a replica outside the tenant's placement failed");
            }
        }
        if !failed && ctx.fence.check_recent(FENCE_MAX_AGE).await.is_ok() {
            let _ = store.delete(&key).await;
            state
                .manifests
                .remove(&(tenant.to_string(), source.clone(), region.to_string()));
            info!(%tenant, %region, objects = ours.len(), "replicas removed from a region the tenant is no longer placed in");
        }
    }
}

/// How old a fence confirmation may be for a bulk write (well below the lease's 2 s safety margin).
pub(super) const FENCE_MAX_AGE: Duration = azora_adapters::leader::BULK_WRITE_FENCE_AGE;

/// One (tenant, replica region) pair. Returns the state and the manifest to keep (none when it could not
/// be read, so the next round reads it again).
pub(super) async fn replicate(
    ctx: &Context,
    job: &Job,
    cached: Option<Manifest>,
    delete_delay: Duration,
) -> (ReplicaState, Option<Manifest>) {
    let region = job.target.as_str();
    let failed = |e: String| {
        (
            ReplicaState {
                in_sync: false,
                lag_seconds: 0,
                error: Some(e),
            },
            None,
        )
    };
    let mkey = manifest_key(&job.tenant, &job.source);
    let mut manifest = match cached {
        Some(m) => m,
        None => match read_manifest(&job.dst, &mkey).await {
            Ok(m) => m,
            Err(e) => return failed(e),
        },
    };
    let targets: BTreeMap<String, TargetObject> = job
        .target_objects
        .iter()
        .map(|o| (o.key.clone(), TargetObject::from(o)))
        .collect();
    let now = Timestamp::now();
    let p = match &job.mode {
        Mode::Replicate => plan(&job.source_objects, &targets, &manifest, now, delete_delay),
        Mode::CatchUp => {
            // What the former source holds as replicas copied from the new one: those are not its writes.
            let former_manifest = match read_manifest(&job.src, &manifest_key(&job.tenant, &job.target)).await
            {
                Ok(m) => m,
                Err(e) => return failed(e),
            };
            let copy = catch_up(&job.source_objects, &former_manifest, &job.target_objects);
            let lag = copy
                .iter()
                .map(|o| Duration::try_from(now.duration_since(o.last_modified)).unwrap_or_default())
                .max()
                .unwrap_or_default();
            azora_core::replication::Plan {
                copy,
                delete: Vec::new(),
                missing_since: manifest.missing_since.clone(),
                lag,
                deletions_held: 0,
            }
        }
    };
    let held = (p.deletions_held > 0).then(|| {
        warn!(tenant = %job.tenant, %region, held = p.deletions_held, "replica deletions held: the source lost most of what was replicated at once");
        format!(
            "{} deletions held: the source {} lost most of what was replicated at once (emptied or replaced bucket?); \
             delete the replicas by hand if that was intended",
            p.deletions_held, job.source
        )
    });
    if p.is_noop(&manifest) {
        return (
            ReplicaState {
                in_sync: held.is_none(),
                lag_seconds: 0,
                error: held,
            },
            Some(manifest),
        );
    }
    let mut error = None;
    for o in &p.copy {
        // Only the leader writes: a deposed leader's late copy could overwrite a newer replica.
        if let Err(e) = ctx.fence.check_recent(FENCE_MAX_AGE).await {
            error.get_or_insert_with(|| format!("not writing: {e}"));
            break;
        }
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
                // The next round tries again; a failing store is not hammered object by object.
                break;
            }
        }
    }
    for key in &p.delete {
        if let Err(e) = ctx.fence.check_recent(FENCE_MAX_AGE).await {
            error.get_or_insert_with(|| format!("not writing: {e}"));
            break;
        }
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
    if matches!(job.mode, Mode::Replicate) {
        manifest.missing_since = p.missing_since.clone();
        // Entries whose source and replica are both gone are forgotten.
        manifest.entries.retain(|k, _| {
            job.source_objects.iter().any(|s| &s.key == k) || targets.contains_key(k) && !p.delete.contains(k)
        });
    }
    match ctx.fence.check_recent(FENCE_MAX_AGE).await {
        Ok(_) => {
            if let Ok(bytes) = serde_json::to_vec(&manifest)
                && let Err(e) = job.dst.put_bytes(&mkey, bytes).await
            {
                error.get_or_insert_with(|| e.to_string());
            }
        }
        Err(e) => {
            error.get_or_insert_with(|| format!("not writing: {e}"));
        }
    }
    if let Some(h) = held {
        error.get_or_insert(h);
    }
    let in_sync = error.is_none();
    let state = ReplicaState {
        in_sync,
        lag_seconds: if in_sync { 0 } else { p.lag.as_secs() },
        error,
    };
    (state, Some(manifest))
}
