//! One leadership term (IO): the generic controller for a kind, driven by its shared cache and woken only
//! on spec changes (generation), so its own status writes do not trigger reconciles; and `run_term`, which
//! runs every capability's controllers and loops until the term ends. Each capability hands its futures in;
//! nothing here knows a capability.

use std::future::Future;
use std::sync::Arc;

use azora_adapters::kube_status::StatusWriter;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, Stream, StreamExt};
use kube::api::DynamicObject;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use tracing::info;

use crate::cache::KindCache;
use crate::context::Context;
use crate::pipeline::{Kind, KindCtx, ReconcileError, error_policy, reconcile};

/// A shared future that resolves when the leadership term ends.
pub type Stop = Shared<BoxFuture<'static, ()>>;

/// The objects of `cache` as a controller trigger: every object at first, then those whose spec changed.
pub fn spec_changes(
    cache: &KindCache,
) -> impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static {
    cache
        .subscribe()
        .map(|o| Ok((*o).clone()))
        .predicate_filter(predicates::generation, Default::default())
}

/// The generic pipeline controller of kind `K`.
pub fn controller<K: Kind>(
    ctx: &Context,
    cache: &KindCache,
    concurrency: u16,
    stop: Stop,
) -> BoxFuture<'static, ()> {
    let ar = K::resource();
    let writer = StatusWriter::new(ctx.client.clone(), ar.clone(), K::NAME, ctx.fence.clone());
    let kc = Arc::new(KindCtx::new(ctx.clone(), writer));
    Controller::for_stream_with(spec_changes(cache), cache.store().clone(), ar)
        .with_config(Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(reconcile::<K>, error_policy::<K>, kc)
        .for_each(|_| async {})
        .boxed()
}

/// A controller of kind `K` with its own reconcile, also woken by `wakes` (names of objects).
#[allow(clippy::too_many_arguments)]
pub fn custom_controller<K, C, F, Fut, W>(
    cache: &KindCache,
    state: Arc<C>,
    reconcile: F,
    error_policy: fn(Arc<DynamicObject>, &ReconcileError, Arc<C>) -> Action,
    wakes: W,
    concurrency: u16,
    stop: Stop,
) -> BoxFuture<'static, ()>
where
    K: Kind,
    C: Send + Sync + 'static,
    F: FnMut(Arc<DynamicObject>, Arc<C>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action, ReconcileError>> + Send + 'static,
    W: Stream<Item = String> + Send + 'static,
{
    let ar = K::resource();
    let ar2 = ar.clone();
    let refs = wakes.map(move |name| ObjectRef::new_with(&name, ar2.clone()));
    Controller::for_stream_with(spec_changes(cache), cache.store().clone(), ar)
        .reconcile_on(refs)
        .with_config(Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

/// Runs `tasks` (every capability's controllers and leader loops for this term) until `term_end`.
pub async fn run_term(
    term_end: impl Future<Output = ()> + Send + 'static,
    tasks: impl FnOnce(Stop) -> Vec<BoxFuture<'static, ()>>,
) {
    let stop: Stop = term_end.boxed().shared();
    let all = tasks(stop.clone());
    info!(tasks = all.len(), "controllers and leader loops started");
    let work = futures::future::join_all(all);
    tokio::pin!(work);
    tokio::select! {
        _ = &mut work => {}
        () = stop => {
            // Controllers finish the reconciles in flight (their writes are fenced); loops stop at once.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), work).await;
        }
    }
    info!("controllers stopped");
}
