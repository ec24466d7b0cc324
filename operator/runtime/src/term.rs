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

/// One supervised task per object of `cache` for the term: started for a new name (or when its task has
/// finished), aborted when the object is gone. After every change of the cache, and every `tick` when given,
/// `round` runs with the current names (housekeeping: metric series of deleted objects, orphaned work).
pub async fn per_object<S, Fut, R, RFut>(
    ctx: Context,
    cache: KindCache,
    what: &'static str,
    stop: Stop,
    tick: Option<std::time::Duration>,
    mut spawn: S,
    mut round: R,
) where
    S: FnMut(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    R: FnMut(std::collections::BTreeSet<String>) -> RFut,
    RFut: Future<Output = ()>,
{
    let mut changed = cache.changed();
    let mut tasks: std::collections::HashMap<String, tokio::task::AbortHandle> = Default::default();
    let mut stop = stop;
    tokio::select! {
        () = cache.ready() => {}
        () = &mut stop => return,
    }
    loop {
        let names: std::collections::BTreeSet<String> = cache
            .state()
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        for name in &names {
            if tasks.get(name).is_none_or(tokio::task::AbortHandle::is_finished) {
                let task = spawn(name.clone());
                tasks.insert(name.clone(), ctx.supervisor.spawn_term(what, task));
            }
        }
        tasks.retain(|name, t| {
            let keep = names.contains(name);
            if !keep {
                t.abort();
            }
            keep
        });
        round(names).await;
        let wait = tick.unwrap_or(std::time::Duration::from_secs(3600));
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            () = tokio::time::sleep(wait) => {}
            () = &mut stop => break,
        }
    }
    for t in tasks.values() {
        t.abort();
    }
}
