//! DR drills. This version validates DrDrills and reports `Ready=False, NotYetSupported`; running drills is
//! the drill issue's work and lands here.

use azora_api::DrDrill;
use azora_api::chaos::DrDrillSpec;
use azora_core::validate::{self, Pending, Problem};
use azora_core::world::World;
use azora_runtime::pipeline::{Kind, not_yet_supported, resource_of};
use azora_runtime::term::{Stop, controller};
use azora_runtime::{Context, Needs};
use futures::future::BoxFuture;
use kube::core::ApiResource;

/// This capability's work for one leadership term.
pub fn term(ctx: &Context, concurrency: u16, stop: &Stop) -> Vec<BoxFuture<'static, ()>> {
    vec![controller::<DrDrillKind>(
        ctx,
        &ctx.caches.drills,
        concurrency,
        stop.clone(),
    )]
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
        not_yet_supported(
            "Scheduled",
            "spec valid and scenario resolved; drills are not run in this version",
        )
    }
}
