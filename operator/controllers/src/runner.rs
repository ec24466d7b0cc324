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
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use tracing::info;

use crate::context::{Context, Stores};
use crate::kinds::{
    BackupKind, BackupScheduleKind, ChaosExperimentKind, DrDrillKind, FailoverPolicyKind, Kind, RegionKind,
    RestoreKind, TenantKind,
};
use crate::reconcile::{KindCtx, error_policy, reconcile};

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

/// Runs every controller, plus the leader loops `extra` builds, until `term_end` resolves. `make_ctx`
/// receives the lookup stores.
pub async fn run_controllers(
    client: kube::Client,
    make_ctx: impl FnOnce(Stores) -> Context,
    concurrency: u16,
    term_end: impl Future<Output = ()> + Send + 'static,
    extra: impl FnOnce(&Context, Stop) -> Vec<BoxFuture<'static, ()>>,
) {
    let stop: Stop = term_end.boxed().shared();
    let regions = reflect(&client, &RegionKind::resource());
    let tenants = reflect(&client, &TenantKind::resource());
    let backups = reflect(&client, &BackupKind::resource());
    let stores = Stores {
        regions: regions.store.clone(),
        tenants: tenants.store.clone(),
        backups: backups.store.clone(),
    };
    let ctx = make_ctx(stores);
    let c = concurrency;
    let all = vec![
        controller::<RegionKind>(&ctx, regions, c, stop.clone()),
        controller::<TenantKind>(&ctx, tenants, c, stop.clone()),
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
