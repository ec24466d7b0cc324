//! Region health: the probe engine every replica (and every probe-only agent) runs, the observer reports
//! in Leases, and the leader's aggregator that combines fresh reports by quorum into each Region's verdict
//! — published to the other capabilities through the runtime's `Verdicts` handle.

pub mod aggregate;
pub mod engine;
pub mod kind;
pub mod observers;

use azora_runtime::Context;
use azora_runtime::term::{Stop, controller};
use futures::FutureExt;
use futures::future::BoxFuture;
pub use kind::RegionKind;

/// The label selector of observer Leases (for the runtime's observer cache).
pub fn observer_selector() -> String {
    format!("{}=true", observers::OBSERVER_LABEL)
}

/// This capability's work for one leadership term: the Region controller and the aggregator.
pub fn term(
    ctx: &Context,
    cfg: aggregate::AggregateConfig,
    concurrency: u16,
    stop: &Stop,
) -> Vec<BoxFuture<'static, ()>> {
    vec![
        controller::<RegionKind>(ctx, &ctx.caches.regions, concurrency, stop.clone()),
        aggregate::run(ctx.clone(), cfg, stop.clone()).boxed(),
    ]
}
