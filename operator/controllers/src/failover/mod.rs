//! GeoDNS failover: the leader's per-policy decision loops (`decide`: plan answers from region verdicts,
//! record the intent under the next epoch, publish to the DNS provider, verify, record the timeline), the
//! zone data built from a policy's answers (`zone`), and DNS serving on every replica (`serve`). Reads
//! region verdicts from the runtime's `Verdicts` handle and publishes the regions it serves there.

pub mod decide;
pub mod kind;
mod publish;
pub mod serve;
pub mod zone;

use azora_runtime::Context;
use azora_runtime::term::{Stop, controller};
use futures::FutureExt;
use futures::future::BoxFuture;
pub use kind::FailoverPolicyKind;

/// This capability's work for one leadership term: the FailoverPolicy controller and the decision loops.
pub fn term(
    ctx: &Context,
    cfg: decide::FailoverConfig,
    concurrency: u16,
    stop: &Stop,
) -> Vec<BoxFuture<'static, ()>> {
    vec![
        controller::<FailoverPolicyKind>(ctx, &ctx.caches.policies, concurrency, stop.clone()),
        decide::run(ctx.clone(), cfg, stop.clone()).boxed(),
    ]
}
