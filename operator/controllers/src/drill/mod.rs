//! DR drills: one task per `DrDrill` runs it on its schedule (monthly by default) or at once on a new
//! `azora.io/run-now` annotation. A run checks the interlocks and that the DR region is healthy and allowed
//! for every drill tenant (else `Skipped` with the reason, nothing drained); writes timestamped sentinel
//! objects into each tenant's object storage in the lost region; **drains** the lost region at the control
//! plane (the failover path treats it as down — `Interlock::drain`, held in the leader's memory so it never
//! outlives the process); measures the RTO (drain → DNS verified on the DR region and every drill tenant
//! active and Ready there); restores each tenant's newest verified backup from the DR region's own copy into
//! a scratch namespace there (a `Restore` object, carried out by the backup room) and measures the RPO
//! (drain − data time of the backup, and independently last sentinel written − newest sentinel found in the
//! DR region); fails back (undrain) and measures it; writes a Markdown and JSON report into the DR region's
//! bucket; removes the scratch restores (their namespaces go with them); judges against the objectives.
//! A real outage of another region aborts the drill (undrain at once). A run an earlier term left `Running`
//! is finished as `Aborted`. Writes `DrDrill` status under manager `azora-operator/drill-runs`.

mod run;

use azora_api::DrDrill;
use azora_api::chaos::DrDrillSpec;
use azora_core::validate::{self, Pending, Problem};
use azora_core::world::World;
use azora_runtime::pipeline::{Kind, resource_of};
use azora_runtime::term::{Stop, controller};
use azora_runtime::{Context, Needs};
use futures::FutureExt;
use futures::future::BoxFuture;
use kube::core::ApiResource;

/// This capability's work for one leadership term.
pub fn term(ctx: &Context, concurrency: u16, stop: &Stop) -> Vec<BoxFuture<'static, ()>> {
    vec![
        controller::<DrDrillKind>(ctx, &ctx.caches.drills, concurrency, stop.clone()),
        runner(ctx.clone(), stop.clone()).boxed(),
    ]
}

/// One task per drill.
async fn runner(ctx: Context, stop: Stop) {
    let spawn_ctx = ctx.clone();
    azora_runtime::term::per_object(
        ctx.clone(),
        ctx.caches.drills.clone(),
        "drill/drill",
        stop,
        None,
        move |name| run::drill_loop(spawn_ctx.clone(), name),
        |_| async {},
    )
    .await;
}

/// DrDrill.
pub struct DrDrillKind;
impl Kind for DrDrillKind {
    const NAME: &'static str = "drdrill";
    type Spec = DrDrillSpec;
    fn resource() -> ApiResource {
        resource_of::<DrDrill>()
    }
    fn needs() -> Needs {
        Needs {
            tenants: true,
            backups: false,
        }
    }
    fn check(spec: &DrDrillSpec, world: &World) -> Vec<Problem> {
        validate::dr_drill(spec, world)
    }
    fn ready_message() -> &'static str {
        "drills run on schedule"
    }
    fn pending() -> Option<Pending> {
        None
    }
}
