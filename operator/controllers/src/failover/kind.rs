//! What the generic pipeline knows of FailoverPolicies (pure): the TSIG Secret, the checks, the Ready
//! message. The answers themselves are the failover loop's (`decide`).

use azora_api::FailoverPolicy;
use azora_api::failover::FailoverPolicySpec;
use azora_core::validate::{self, Pending, Problem};
use azora_core::world::World;
use azora_runtime::Needs;
use azora_runtime::pipeline::{Kind, resource_of};
use kube::core::ApiResource;

/// FailoverPolicy.
pub struct FailoverPolicyKind;
impl Kind for FailoverPolicyKind {
    const NAME: &'static str = "failoverpolicy";
    type Spec = FailoverPolicySpec;
    fn resource() -> ApiResource {
        resource_of::<FailoverPolicy>()
    }
    fn needs() -> Needs {
        Needs {
            tenants: true,
            backups: false,
        }
    }
    fn secret_refs(spec: &FailoverPolicySpec) -> Vec<String> {
        spec.provider
            .rfc2136
            .iter()
            .map(|r| r.tsig_secret.name.clone())
            .collect()
    }
    fn check(spec: &FailoverPolicySpec, world: &World) -> Vec<Problem> {
        validate::failover_policy(spec, world)
    }
    fn ready_message() -> &'static str {
        "spec valid and references resolved; see DnsPublished for the answers served"
    }
    fn pending() -> Option<Pending> {
        None
    }
}
