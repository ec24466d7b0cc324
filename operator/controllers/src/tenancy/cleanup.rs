//! Tenant deletion (IO, leader only, fenced): the finalizer that records intent before anything is placed,
//! and the cleanup it guards — every region cleaned on its own (only a namespace labelled ours for this
//! tenant, deleted by uid; a namespace that is not ours is left in place), an unreachable region retried
//! and reported while the others are done; the finalizer goes once every region is clean.

use azora_api::Time;
use azora_api::tenant::{RegionSync, SyncState};
use azora_core::conditions::{Desired, types};
use azora_core::tenancy::{ManagedKind, ObjectKey, namespace_of, owned_by};
use azora_runtime::Context;
use azora_runtime::pipeline::{self, Kind, ReconcileError};
use kube::ResourceExt as _;
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::info;

use super::TenantKind;
use super::placement::{
    FINALIZER, LazyFence, NOT_KNOWN_YET, RETRY, TenantCtx, fenced, has_finalizer, outcome, write_status,
};

/// Adds the cleanup finalizer.
pub(super) async fn add_finalizer(ctx: &Context, obj: &DynamicObject) -> Result<(), ReconcileError> {
    pipeline::add_finalizer(ctx, &TenantKind::resource(), obj, FINALIZER).await
}

async fn remove_finalizer(ctx: &Context, obj: &DynamicObject) -> Result<(), ReconcileError> {
    pipeline::remove_finalizer(ctx, &TenantKind::resource(), obj, FINALIZER).await
}

/// Cleans every region, each on its own; the finalizer goes once all are clean.
pub(super) async fn cleanup(
    obj: &DynamicObject,
    name: &str,
    tc: &TenantCtx,
    fence: &LazyFence<'_>,
) -> Result<Action, ReconcileError> {
    let ctx = &tc.ctx;
    if !has_finalizer(obj) {
        return Ok(Action::await_change());
    }
    fence.check().await.map_err(fenced)?;
    let configured: Vec<String> = ctx
        .caches
        .regions
        .specs::<azora_api::region::RegionSpec>()
        .into_iter()
        .filter(|(_, s)| s.cluster.is_some())
        .map(|(n, _)| n)
        .collect();
    let ns_key = ObjectKey {
        kind: ManagedKind::Namespace,
        namespace: None,
        name: namespace_of(name),
    };
    let jobs = configured.iter().map(|region| {
        let ns_key = &ns_key;
        async move {
            let cluster = match ctx.handles.clusters.get(region) {
                Ok(c) => c,
                Err(why) => {
                    let why = why.unwrap_or_else(|| NOT_KNOWN_YET.into());
                    return outcome(region, SyncState::Error, format!("cleanup waiting: {why}"));
                }
            };
            if let Some(r) = cluster.reachable()
                && !r.reachable
            {
                return outcome(
                    region,
                    SyncState::Error,
                    format!("cleanup waiting: regional cluster unreachable: {}", r.message),
                );
            }
            // Only a namespace labelled ours for this tenant is deleted, and only that very object (uid).
            let ns = match cluster.get(ns_key).await {
                Ok(None) => return outcome(region, SyncState::Synced, "cleaned up"),
                Ok(Some(ns)) => ns,
                Err(e) => return outcome(region, SyncState::Error, format!("cleanup failed: {e}")),
            };
            if !owned_by(ns.labels(), name) {
                return outcome(region, SyncState::Synced, "namespace is not ours; left in place");
            }
            if ns.metadata.deletion_timestamp.is_some() {
                return outcome(region, SyncState::Pending, "namespace terminating");
            }
            let Some(uid) = ns.metadata.uid.as_deref() else {
                return outcome(region, SyncState::Error, "cleanup failed: namespace has no uid");
            };
            ctx.metrics
                .regional_writes
                .with_label_values(&[region.as_str(), "delete"])
                .inc();
            match cluster.delete_exact(ns_key, uid).await {
                Ok(true) => outcome(region, SyncState::Synced, "cleaned up"),
                Ok(false) => outcome(region, SyncState::Pending, "namespace terminating"),
                Err(e) => outcome(region, SyncState::Error, format!("cleanup failed: {e}")),
            }
        }
    });
    let outcomes = futures::future::join_all(jobs).await;
    let done = outcomes.iter().all(|o| o.state == SyncState::Synced);
    if done {
        remove_finalizer(ctx, obj).await?;
        info!(tenant = %name, regions = outcomes.len(), "tenant cleaned up in every region");
        azora_runtime::events::publish(
            ctx,
            obj,
            EventType::Normal,
            "CleanedUp",
            &format!(
                "namespace {} removed from every regional cluster",
                namespace_of(name)
            ),
            "Cleanup",
        )
        .await;
        ctx.metrics.reconciled(TenantKind::NAME, "ok");
        return Ok(Action::await_change());
    }
    let regions: Vec<RegionSync> = outcomes
        .iter()
        .map(|o| RegionSync {
            region: o.region.clone(),
            state: o.state,
            observed_generation: obj.metadata.generation,
            last_sync_time: None,
            replication_lag_seconds: None,
            message: o.message.clone(),
        })
        .collect();
    let pending: Vec<String> = outcomes
        .iter()
        .filter(|o| o.state != SyncState::Synced)
        .map(|o| format!("{}: {}", o.region, o.message))
        .collect();
    let desired = vec![Desired::fail(
        types::READY,
        "CleaningUp",
        format!("deleting; waiting for {}", pending.join("; ")),
    )];
    let mut fields = serde_json::Map::new();
    fields.insert("regions".into(), json!(regions));
    write_status(tc, obj, &desired, fields, obj.metadata.generation, Time::now()).await?;
    ctx.metrics.reconciled(TenantKind::NAME, "ok");
    Ok(Action::requeue(RETRY))
}
