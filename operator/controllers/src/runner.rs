//! Starts every controller for one leadership term and stops them when the term ends (IO). Each controller
//! watches its kind as `DynamicObject` — the deserialize guard: a malformed object is reported on its own
//! status instead of breaking the watch for everyone — and wakes only on spec changes (generation), so its
//! own status writes do not trigger reconciles.

use std::future::Future;
use std::sync::Arc;

use azora_adapters::kube_status::StatusWriter;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use tracing::info;

use crate::clusters::{Clusters, Wake};
use crate::context::{Context, Stores};
use crate::kinds::{
    BackupKind, BackupScheduleKind, ChaosExperimentKind, DrDrillKind, FailoverPolicyKind, Kind, RegionKind,
    RestoreKind, TenantKind,
};
use crate::reconcile::{KindCtx, error_policy, reconcile};
use crate::replication::Replication;
use crate::tenant::TenantCtx;

/// Concurrency limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Reconciles in flight per controller.
    pub concurrency: u16,
    /// Tenant reconciles in flight (each talks to several regional clusters).
    pub tenant_concurrency: u16,
    /// Requests in flight per regional cluster.
    pub cluster_concurrency: usize,
}

/// A shared future that resolves when the leadership term ends.
pub type Stop = Shared<BoxFuture<'static, ()>>;

/// A watch of one kind, reflected into a store, ready to drive its controller.
struct Reflected {
    store: Store<DynamicObject>,
    stream: futures::stream::BoxStream<'static, Result<DynamicObject, watcher::Error>>,
}

fn reflect(client: &kube::Client, ar: &ApiResource) -> Reflected {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let writer = reflector::store::Writer::new(ar.clone());
    let store = writer.as_reader();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default())
        .boxed();
    Reflected { store, stream }
}

fn controller<K: Kind>(
    ctx: &Context,
    reflected: Reflected,
    concurrency: u16,
    stop: Stop,
) -> BoxFuture<'static, ()> {
    let ar = K::resource();
    let writer = StatusWriter::new(ctx.client.clone(), ar.clone(), K::NAME, ctx.fence.clone());
    let kc = Arc::new(KindCtx {
        ctx: ctx.clone(),
        writer,
    });
    Controller::for_stream_with(reflected.stream, reflected.store, ar)
        .with_config(Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(reconcile::<K>, error_policy::<K>, kc)
        .for_each(|_| async {})
        .boxed()
}

/// The Tenant controller: woken by spec changes, and by the regional clusters and replication (drift,
/// a cluster coming back, a replica catching up).
fn tenant_controller(
    ctx: &Context,
    reflected: Reflected,
    wake: tokio::sync::mpsc::UnboundedReceiver<Wake>,
    concurrency: u16,
    stop: Stop,
) -> BoxFuture<'static, ()> {
    let ar = TenantKind::resource();
    let writer = StatusWriter::new(
        ctx.client.clone(),
        ar.clone(),
        TenantKind::NAME,
        ctx.fence.clone(),
    );
    let tc = Arc::new(TenantCtx {
        ctx: ctx.clone(),
        writer,
    });
    let store = reflected.store.clone();
    let ar2 = ar.clone();
    let wakes = futures::stream::unfold(wake, |mut rx| async move { rx.recv().await.map(|w| (w, rx)) })
        .flat_map(move |w| {
            let refs: Vec<ObjectRef<DynamicObject>> = match w {
                Wake::Tenant(name) => vec![ObjectRef::new_with(&name, ar2.clone())],
                Wake::All => store
                    .state()
                    .iter()
                    .filter_map(|o| {
                        o.metadata
                            .name
                            .as_deref()
                            .map(|n| ObjectRef::new_with(n, ar2.clone()))
                    })
                    .collect(),
            };
            futures::stream::iter(refs)
        });
    Controller::for_stream_with(reflected.stream, reflected.store, ar)
        .reconcile_on(wakes)
        .with_config(Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(crate::tenant::reconcile, tenant_error_policy, tc)
        .for_each(|_| async {})
        .boxed()
}

fn tenant_error_policy(
    obj: Arc<DynamicObject>,
    err: &crate::reconcile::ReconcileError,
    tc: Arc<TenantCtx>,
) -> kube::runtime::controller::Action {
    let kc = KindCtx {
        ctx: tc.ctx.clone(),
        writer: tc.writer.clone(),
    };
    error_policy::<TenantKind>(obj, err, Arc::new(kc))
}

/// Runs every controller, plus the leader loops `extra` builds, until `term_end` resolves. `make_ctx`
/// receives the lookup stores.
pub async fn run_controllers(
    client: kube::Client,
    make_ctx: impl FnOnce(Stores) -> Context,
    limits: Limits,
    term_end: impl Future<Output = ()> + Send + 'static,
    extra: impl FnOnce(&Context, Stop) -> Vec<BoxFuture<'static, ()>>,
) {
    let stop: Stop = term_end.boxed().shared();
    let regions = reflect(&client, &RegionKind::resource());
    let tenants = reflect(&client, &TenantKind::resource());
    let backups = reflect(&client, &BackupKind::resource());
    let (clusters, wake) = Clusters::new(limits.cluster_concurrency);
    let stores = Stores {
        regions: regions.store.clone(),
        tenants: tenants.store.clone(),
        backups: backups.store.clone(),
        clusters,
        replication: Replication::default(),
    };
    let ctx = make_ctx(stores);
    let c = limits.concurrency;
    let all = vec![
        controller::<RegionKind>(&ctx, regions, c, stop.clone()),
        tenant_controller(&ctx, tenants, wake, limits.tenant_concurrency, stop.clone()),
        crate::clusters::run(ctx.clone(), stop.clone()).boxed(),
        controller::<BackupKind>(&ctx, backups, c, stop.clone()),
        controller::<FailoverPolicyKind>(
            &ctx,
            reflect(&client, &FailoverPolicyKind::resource()),
            c,
            stop.clone(),
        ),
        controller::<BackupScheduleKind>(
            &ctx,
            reflect(&client, &BackupScheduleKind::resource()),
            c,
            stop.clone(),
        ),
        controller::<RestoreKind>(&ctx, reflect(&client, &RestoreKind::resource()), c, stop.clone()),
        controller::<ChaosExperimentKind>(
            &ctx,
            reflect(&client, &ChaosExperimentKind::resource()),
            c,
            stop.clone(),
        ),
        controller::<DrDrillKind>(&ctx, reflect(&client, &DrDrillKind::resource()), c, stop.clone()),
    ];
    let mut all = all;
    all.extend(extra(&ctx, stop.clone()));
    info!(tasks = all.len(), "controllers and leader loops started");
    futures::future::join_all(all).await;
    info!("controllers stopped");
}
