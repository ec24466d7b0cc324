//! What the generic pipeline knows of Tenants (pure): the checks and the initial status fields of a valid
//! tenant (placed regions pending, excluded regions with the reason).

use azora_api::Tenant;
use azora_api::tenant::{RegionSync, SyncState, TenantSpec};
use azora_core::placement::place;
use azora_core::tenancy::excluded;
use azora_core::validate::{self, Pending, Problem};
use azora_core::world::World;
use azora_runtime::pipeline::{Kind, resource_of};
use kube::core::ApiResource;
use serde_json::{Map, Value, json};

/// Tenant.
pub struct TenantKind;
impl Kind for TenantKind {
    const NAME: &'static str = "tenant";
    type Spec = TenantSpec;
    fn resource() -> ApiResource {
        resource_of::<Tenant>()
    }
    fn check(spec: &TenantSpec, world: &World) -> Vec<Problem> {
        validate::tenant(spec, world)
    }
    fn ready_message() -> &'static str {
        "placed and in sync in every region it may live in"
    }
    /// Placement is delivered by the Tenant controller (`crate::tenancy::placement`), which reports `Placed` itself.
    fn pending() -> Option<Pending> {
        None
    }
    fn status_fields(spec: &TenantSpec, world: &World, valid: bool) -> Map<String, Value> {
        let mut m = Map::new();
        if !valid {
            return m;
        }
        let p = place(spec, world);
        let mut regions: Vec<RegionSync> = p
            .placed
            .iter()
            .map(|r| RegionSync {
                region: r.clone(),
                state: SyncState::Pending,
                observed_generation: None,
                last_sync_time: None,
                replication_lag_seconds: None,
                message: String::new(),
            })
            .collect();
        regions.extend(p.excluded.iter().map(|e| excluded(&e.region, &e.message)));
        m.insert("placedRegions".into(), json!(p.placed));
        m.insert("regions".into(), json!(regions));
        m
    }
}
