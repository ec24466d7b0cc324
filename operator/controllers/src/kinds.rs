//! Per-kind knowledge for the generic pipeline: which Secrets a spec refers to, which checks apply, which
//! capability is still pending, and the kind-specific status fields. Pure, no IO.

use azora_api::backup::{BackupScheduleSpec, BackupSpec, RestoreSpec};
use azora_api::chaos::{ChaosExperimentSpec, DrDrillSpec};
use azora_api::failover::FailoverPolicySpec;
use azora_api::region::RegionSpec;
use azora_api::tenant::{RegionSync, SyncState, TenantSpec};
use azora_api::{Backup, BackupSchedule, ChaosExperiment, DrDrill, FailoverPolicy, Region, Restore, Tenant};
use azora_core::placement::place;
use azora_core::validate::{self, Pending, Problem};
use azora_core::world::World;
use kube::CustomResourceExt;
use kube::core::ApiResource;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::context::Needs;

/// What the generic reconcile pipeline needs to know about a kind.
pub trait Kind: Send + Sync + 'static {
    /// Controller name (metrics label, field manager suffix).
    const NAME: &'static str;
    /// The spec type.
    type Spec: DeserializeOwned + Send + Sync;
    /// The API resource.
    fn resource() -> ApiResource;
    /// Parts of the world validation needs.
    fn needs() -> Needs {
        Needs::default()
    }
    /// Secrets (in the operator namespace) the spec refers to.
    fn secret_refs(_spec: &Self::Spec) -> Vec<String> {
        Vec::new()
    }
    /// The checks.
    fn check(spec: &Self::Spec, world: &World) -> Vec<Problem>;
    /// Message of `Ready=True`.
    fn ready_message() -> &'static str;
    /// The capability a later part of the operator delivers, reported as Unknown until then.
    fn pending() -> Option<Pending>;
    /// Kind-specific status fields, computed when the spec is valid.
    fn status_fields(_spec: &Self::Spec, _world: &World, _valid: bool) -> Map<String, Value> {
        Map::new()
    }
}

fn resource_of<K: CustomResourceExt + kube::Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

fn pending(condition: &'static str, message: &str, ready_anyway: bool) -> Option<Pending> {
    Some(Pending {
        condition,
        message: message.to_string(),
        ready_anyway,
    })
}

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
    /// Placement is delivered by the Tenant controller (`crate::tenant`), which reports `Placed` itself.
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

/// A region the tenant does not live in, and why.
pub(crate) fn excluded(region: &str, message: &str) -> RegionSync {
    RegionSync {
        region: region.to_string(),
        state: SyncState::Excluded,
        observed_generation: None,
        last_sync_time: None,
        replication_lag_seconds: None,
        message: message.to_string(),
    }
}

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

/// BackupSchedule.
pub struct BackupScheduleKind;
impl Kind for BackupScheduleKind {
    const NAME: &'static str = "backupschedule";
    type Spec = BackupScheduleSpec;
    fn resource() -> ApiResource {
        resource_of::<BackupSchedule>()
    }
    fn check(spec: &BackupScheduleSpec, _world: &World) -> Vec<Problem> {
        validate::backup_schedule(spec)
    }
    fn ready_message() -> &'static str {
        "spec valid; scheduled backups are not taken in this version"
    }
    fn pending() -> Option<Pending> {
        pending("Scheduling", "backups are not taken in this version", true)
    }
}

/// Backup: a one-shot run, so not Ready until it has run.
pub struct BackupKind;
impl Kind for BackupKind {
    const NAME: &'static str = "backup";
    type Spec = BackupSpec;
    fn resource() -> ApiResource {
        resource_of::<Backup>()
    }
    fn needs() -> Needs {
        Needs {
            tenants: true,
            backups: false,
        }
    }
    fn check(spec: &BackupSpec, world: &World) -> Vec<Problem> {
        validate::backup(spec, world)
    }
    fn ready_message() -> &'static str {
        "backup completed"
    }
    fn pending() -> Option<Pending> {
        pending(
            "Completed",
            "spec valid; backups are not executed in this version",
            false,
        )
    }
}

/// Restore: a one-shot run, so not Ready until it has run.
pub struct RestoreKind;
impl Kind for RestoreKind {
    const NAME: &'static str = "restore";
    type Spec = RestoreSpec;
    fn resource() -> ApiResource {
        resource_of::<Restore>()
    }
    fn needs() -> Needs {
        Needs {
            tenants: true,
            backups: true,
        }
    }
    fn check(spec: &RestoreSpec, world: &World) -> Vec<Problem> {
        validate::restore(spec, world)
    }
    fn ready_message() -> &'static str {
        "restore completed"
    }
    fn pending() -> Option<Pending> {
        pending(
            "Completed",
            "spec valid; restores are not executed in this version",
            false,
        )
    }
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
        "spec valid and target resolved; experiments are not run in this version"
    }
    fn pending() -> Option<Pending> {
        pending("Scheduled", "experiments are not run in this version", true)
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
        "spec valid and scenario resolved; drills are not run in this version"
    }
    fn pending() -> Option<Pending> {
        pending("Scheduled", "drills are not run in this version", true)
    }
}
