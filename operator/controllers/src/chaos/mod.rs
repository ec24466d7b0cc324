//! Chaos experiments. This version validates ChaosExperiments and reports `Ready=False, NotYetSupported`;
//! injecting faults is the chaos issue's work and lands here. Reads the interlock handle from the runtime.

use azora_api::ChaosExperiment;
use azora_api::chaos::ChaosExperimentSpec;
use azora_core::validate::{self, Pending, Problem};
use azora_core::world::World;
use azora_runtime::Context;
use azora_runtime::pipeline::{Kind, not_yet_supported, resource_of};
use azora_runtime::term::{Stop, controller};
use futures::future::BoxFuture;
use kube::core::ApiResource;

/// This capability's work for one leadership term.
pub fn term(ctx: &Context, concurrency: u16, stop: &Stop) -> Vec<BoxFuture<'static, ()>> {
    vec![controller::<ChaosExperimentKind>(
        ctx,
        &ctx.caches.experiments,
        concurrency,
        stop.clone(),
    )]
}

/// ChaosExperiment.
pub struct ChaosExperimentKind;
impl Kind for ChaosExperimentKind {
    const NAME: &'static str = "chaosexperiment";
    type Spec = ChaosExperimentSpec;
    fn resource() -> ApiResource {
        resource_of::<ChaosExperiment>()
    }
    fn check(spec: &ChaosExperimentSpec, world: &World) -> Vec<Problem> {
        validate::chaos_experiment(spec, world)
    }
    fn ready_message() -> &'static str {
        "experiments run on schedule"
    }
    fn pending() -> Option<Pending> {
        not_yet_supported(
            "Scheduled",
            "spec valid and target resolved; experiments are not run in this version",
        )
    }
}
