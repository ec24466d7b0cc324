//! Tenancy: placing each tenant in every region it may live in (`placement`: namespaces, quotas, limits,
//! network policies, role bindings, with drift repair and finalizer cleanup), and replicating its objects
//! in object storage from its active region to the others (`replication`). Reads the regional cluster
//! registry and region verdicts from the runtime; the replication state below is this room's own.

mod cleanup;
pub mod kind;
pub mod placement;
mod replicate;
pub mod replication;

use std::sync::Arc;

use azora_adapters::kube_status::StatusWriter;
use azora_runtime::Context;
use azora_runtime::clusters::Wake;
use azora_runtime::pipeline::Kind as _;
use azora_runtime::term::{Stop, custom_controller};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
pub use kind::TenantKind;

/// Settings of tenancy for a term.
#[derive(Clone, Debug)]
pub struct TenancyConfig {
    /// Tenant reconciles in flight.
    pub concurrency: u16,
    /// Replication settings.
    pub replication: replication::ReplicationConfig,
}

/// This capability's work for one leadership term: the Tenant controller (woken by spec changes, by
/// regional drift and by replication progress), the regional cluster registry, and replication.
pub fn term(ctx: &Context, cfg: TenancyConfig, stop: &Stop) -> Vec<BoxFuture<'static, ()>> {
    let state = replication::Replication::default();
    let writer = StatusWriter::new(
        ctx.client.clone(),
        TenantKind::resource(),
        TenantKind::NAME,
        ctx.fence.clone(),
    );
    let tc = Arc::new(placement::TenantCtx::new(ctx.clone(), writer, state.clone()));
    let tenants = ctx.caches.tenants.clone();
    let wakes = ctx.handles.clusters.wakes().flat_map(move |w| {
        let names: Vec<String> = match w {
            Wake::Tenant(name) => vec![name],
            Wake::All => tenants
                .state()
                .iter()
                .filter_map(|o| o.metadata.name.clone())
                .collect(),
        };
        futures::stream::iter(names)
    });
    vec![
        custom_controller::<TenantKind, _, _, _, _>(
            &ctx.caches.tenants,
            tc,
            placement::reconcile,
            placement::error_policy,
            wakes,
            cfg.concurrency,
            stop.clone(),
        ),
        azora_runtime::clusters::run(ctx.clone(), stop.clone()).boxed(),
        replication::run(ctx.clone(), cfg.replication, state, stop.clone()).boxed(),
        sweep_metrics(ctx.clone(), stop.clone()).boxed(),
    ]
}

/// Every minute, drops the replication-lag series of tenants that are gone and of regions a tenant is no
/// longer placed in (a lag alert on them would fire forever).
async fn sweep_metrics(ctx: Context, stop: Stop) {
    azora_runtime::metrics::sweep_every(std::time::Duration::from_secs(60), stop, || {
        let placed: std::collections::BTreeMap<String, Vec<String>> = ctx
            .caches
            .tenants
            .state()
            .iter()
            .filter_map(|o| {
                let status: azora_api::tenant::TenantStatus =
                    serde_json::from_value(o.data.get("status")?.clone()).ok()?;
                Some((o.metadata.name.clone()?, status.placed_regions))
            })
            .collect();
        azora_runtime::metrics::retain_series(&ctx.metrics.tenant_replication_lag, |l| {
            match (l.get("tenant"), l.get("region")) {
                (Some(t), Some(r)) => placed.get(t).is_some_and(|p| p.is_empty() || p.contains(r)),
                _ => true,
            }
        });
    })
    .await;
}
