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

use std::collections::{BTreeSet, HashMap};

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

/// Starts one task per drill and stops those of deleted ones.
async fn runner(ctx: Context, stop: Stop) {
    let cache = ctx.caches.drills.clone();
    let mut changed = cache.changed();
    let mut tasks: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let mut stop = stop;
    tokio::select! {
        () = cache.ready() => {}
        () = &mut stop => return,
    }
    loop {
        let names: BTreeSet<String> = cache
            .state()
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        for name in &names {
            if tasks.get(name).is_none_or(|t| t.is_finished()) {
                let task = run::drill_loop(ctx.clone(), name.clone());
                tasks.insert(name.clone(), ctx.supervisor.spawn_term("drill/drill", task));
            }
        }
        tasks.retain(|name, t| {
            let keep = names.contains(name);
            if !keep {
                t.abort();
            }
            keep
        });
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            () = &mut stop => break,
        }
    }
    for t in tasks.values() {
        t.abort();
    }
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
