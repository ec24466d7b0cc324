//! What the generic pipeline knows of Regions (pure): referenced Secrets, the checks, the Ready message.

use azora_api::Region;
use azora_api::region::RegionSpec;
use azora_core::validate::{self, Pending, Problem};
use azora_core::world::World;
use azora_runtime::pipeline::{Kind, resource_of};
use kube::core::ApiResource;

/// Region.
pub struct RegionKind;
impl Kind for RegionKind {
    const NAME: &'static str = "region";
    type Spec = RegionSpec;
    fn resource() -> ApiResource {
        resource_of::<Region>()
    }
    fn secret_refs(spec: &RegionSpec) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = &spec.cluster {
            out.push(c.kubeconfig_secret.name.clone());
        }
        if let Some(s) = spec
            .object_store
            .as_ref()
            .and_then(|s| s.credentials_secret.as_ref())
        {
            out.push(s.name.clone());
        }
        if let Some(t) = spec.vault.as_ref().and_then(|v| v.token_secret.as_ref()) {
            out.push(t.name.clone());
        }
        out
    }
    fn check(spec: &RegionSpec, world: &World) -> Vec<Problem> {
        validate::region(spec, world)
    }
    fn ready_message() -> &'static str {
        "spec valid and every referenced Secret present; the verdict comes from the probes"
    }
    fn pending() -> Option<Pending> {
        None
    }
}
