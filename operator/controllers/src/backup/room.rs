//! What the backup room's three controllers share: settings, status writers, object-store clients per
//! region, and the runs this process has under way (a run recorded as going that is not among them was
//! interrupted: by a crash, a restart or a leader change).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azora_adapters::kube_status::StatusWriter;
use azora_adapters::objstore::{ObjectStore, StoreConfig};
use azora_api::region::RegionSpec;
use azora_api::{Backup, BackupSchedule, Restore, Tenant};
use azora_core::conditions::Desired;
use azora_core::validate::{self, Problem, ProblemKind};
use azora_core::world::World;
use azora_runtime::Context;
use azora_runtime::pipeline::{
    Backoff, Kind, KindCtx, ReconcileError, current_conditions, plan_status, resource_of,
};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use kube::ResourceExt as _;
use kube::api::DynamicObject;
use serde_json::Value;

/// Settings of the backup room.
#[derive(Clone, Debug)]
pub struct BackupConfig {
    /// Backups run at once (`--backup-concurrency`); one slow tenant holds up only its own slot.
    pub concurrency: u16,
    /// How often the copies of a finished backup are read back and checked again
    /// (`--backup-verify-every`); a copy that no longer matches turns the backup `PartiallyFailed`.
    pub verify_every: Duration,
    /// Where archives are written while they are built, uploaded and read for a restore
    /// (`--backup-scratch-dir`); one file per run in flight, removed when the run ends.
    pub scratch_dir: std::path::PathBuf,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            verify_every: Duration::from_secs(3600),
            scratch_dir: std::env::temp_dir(),
        }
    }
}

/// Shared by the schedule, backup and restore controllers of one term.
pub struct Room {
    pub(super) ctx: Context,
    pub(super) cfg: BackupConfig,
    pub(super) backups: StatusWriter,
    pub(super) restores: StatusWriter,
    pub(super) schedules: StatusWriter,
    /// Writes `Tenant.status.lastBackup` (manager `azora-operator/backup`).
    pub(super) tenants: StatusWriter,
    /// Writes `Backup.status.restoreVerifiedTime` (manager `azora-operator/restore-verified`).
    pub(super) restore_marks: StatusWriter,
    pub(super) kc_backup: Arc<KindCtx>,
    pub(super) kc_restore: Arc<KindCtx>,
    pub(super) kc_schedule: Arc<KindCtx>,
    stores: Mutex<BTreeMap<String, (StoreConfig, ObjectStore)>>,
    /// Uids of the Backups and Restores this process is running (or re-verifying) now.
    pub(super) running: Mutex<BTreeSet<String>>,
    /// Uids of the Backups whose run this term has attempted, with when (see [`Room::tried_before`]).
    tried: Mutex<BTreeMap<String, std::time::Instant>>,
    /// Re-verifications at once (their own budget: they never take the slots of new backups).
    pub(super) verify_permits: tokio::sync::Semaphore,
    /// When each schedule's status was last written.
    written: Mutex<BTreeMap<String, std::time::Instant>>,
}

impl Room {
    pub(super) fn new(ctx: Context, cfg: BackupConfig) -> Self {
        let writer = |ar, name: &str| StatusWriter::new(ctx.client.clone(), ar, name, ctx.fence.clone());
        let backups = writer(resource_of::<Backup>(), "backup");
        let restores = writer(resource_of::<Restore>(), "restore");
        let schedules = writer(resource_of::<BackupSchedule>(), "backupschedule");
        let kc = |w: &StatusWriter| {
            Arc::new(KindCtx {
                ctx: ctx.clone(),
                writer: w.clone(),
                failures: Backoff::default(),
            })
        };
        Self {
            kc_backup: kc(&backups),
            kc_restore: kc(&restores),
            kc_schedule: kc(&schedules),
            tenants: writer(resource_of::<Tenant>(), "backup"),
            restore_marks: writer(resource_of::<Backup>(), "restore-verified"),
            backups,
            restores,
            schedules,
            stores: Mutex::new(BTreeMap::new()),
            running: Mutex::new(BTreeSet::new()),
            tried: Mutex::new(BTreeMap::new()),
            verify_permits: tokio::sync::Semaphore::new(2),
            written: Mutex::new(BTreeMap::new()),
            cfg,
            ctx,
        }
    }

    /// Schedules to look at again when one of their Backups changes.
    pub(super) fn schedule_wakes(&self) -> BoxStream<'static, String> {
        self.ctx
            .caches
            .backups
            .subscribe()
            .filter_map(|b| async move { b.labels().get(azora_core::backup::SCHEDULE_LABEL).cloned() })
            .boxed()
    }

    /// The object store of `region` (clients are kept while the region's store settings stay the same).
    pub(super) async fn store(&self, region: &str) -> Result<ObjectStore, String> {
        let specs: BTreeMap<String, RegionSpec> = self.ctx.caches.regions.specs();
        let spec = specs
            .get(region)
            .ok_or_else(|| format!("region {region} does not exist"))?;
        let cfg = self
            .ctx
            .store_config(spec)
            .await?
            .ok_or_else(|| format!("region {region} has no object store"))?;
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| "store cache poisoned".to_string())?;
        if let Some((c, s)) = stores.get(region)
            && *c == cfg
        {
            return Ok(s.clone());
        }
        let s = ObjectStore::new(&cfg);
        stores.insert(region.to_string(), (cfg, s.clone()));
        Ok(s)
    }

    /// Whether the schedule `name`'s status was written less than `within` ago.
    pub(super) fn recently_written(&self, name: &str, within: Duration) -> bool {
        self.written
            .lock()
            .is_ok_and(|w| w.get(name).is_some_and(|t| t.elapsed() < within))
    }

    /// Notes a status write of the schedule `name`.
    pub(super) fn mark_written(&self, name: &str) {
        if let Ok(mut w) = self.written.lock() {
            w.insert(name.to_string(), std::time::Instant::now());
        }
    }

    /// Marks a run as this process's; `None` if it already is (a second worker never runs it twice).
    /// Whether this term attempted the run of Backup `uid` before; records that it does now. A run found
    /// over its time that this term never tried was cut short by a restart or a change of leader, not by
    /// failing: it gets one attempt before it is abandoned.
    pub(super) fn tried_before(&self, uid: &str) -> bool {
        let Ok(mut t) = self.tried.lock() else {
            return true;
        };
        // (A run that ended is forgotten by `ended`; one deleted while running is forgotten after a day.)
        if t.len() >= 4096 {
            t.retain(|_, at| at.elapsed() < std::time::Duration::from_secs(86_400));
        }
        t.insert(uid.to_string(), std::time::Instant::now()).is_some()
    }

    /// Forgets the attempts of a run that ended.
    pub(super) fn ended(&self, uid: &str) {
        if let Ok(mut t) = self.tried.lock() {
            t.remove(uid);
        }
    }

    pub(super) fn claim(self: &Arc<Self>, uid: &str) -> Option<Claim> {
        let mut r = self.running.lock().ok()?;
        if !r.insert(uid.to_string()) {
            return None;
        }
        Some(Claim {
            room: self.clone(),
            uid: uid.to_string(),
        })
    }

    /// Writes a status (returns whether anything changed): `fields` plus the conditions in `desired` (merged with the object's, so transition
    /// times hold), through `writer`. No resourceVersion precondition: a run is one worker's, and its
    /// steps follow each other.
    pub(super) async fn write(
        &self,
        writer: &StatusWriter,
        obj: &DynamicObject,
        fields: serde_json::Map<String, Value>,
        desired: &[Desired],
    ) -> Result<bool, ReconcileError> {
        let current = current_conditions(obj);
        let plan = plan_status(
            &current,
            desired,
            fields,
            obj.metadata.generation,
            azora_api::Time::now(),
            false,
        );
        if azora_runtime::pipeline::status_unchanged(obj, &plan.status) {
            return Ok(false);
        }
        writer
            .apply(&obj.name_any(), None, plan.status)
            .await
            .map_err(ReconcileError::Status)?;
        Ok(true)
    }
}

/// A status as the fields a writer applies: without `conditions` and `observedGeneration` (the writer
/// merges those) and without `restoreVerifiedTime` (owned by the restore side's own field manager).
pub(super) fn status_fields<T: serde::Serialize>(st: &T) -> serde_json::Map<String, Value> {
    let mut v = serde_json::to_value(st)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    v.remove("conditions");
    v.remove("observedGeneration");
    v.remove("restoreVerifiedTime");
    v
}

/// A run this process holds; released when dropped (also on panic or cancellation).
pub struct Claim {
    room: Arc<Room>,
    uid: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut r) = self.room.running.lock() {
            r.remove(&self.uid);
        }
    }
}

/// A spec parsed and checked: the validation conditions, or why nothing may be done.
pub(super) struct Checked<S> {
    pub(super) spec: S,
    pub(super) world: World,
    pub(super) validation: Vec<Desired>,
    pub(super) ok: bool,
}

/// Parses and validates an object of kind `K`; a spec that does not parse is reported as invalid.
pub(super) async fn check<K: Kind>(
    ctx: &Context,
    obj: &DynamicObject,
    ready_message: &str,
) -> Result<Result<Checked<K::Spec>, Vec<Desired>>, ReconcileError> {
    let spec: K::Spec = match serde_json::from_value(obj.data.get("spec").cloned().unwrap_or(Value::Null)) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("spec does not match the schema: {e}");
            return Ok(Err(vec![
                Desired::fail(
                    azora_core::conditions::types::SPEC_VALID,
                    "MalformedSpec",
                    msg.clone(),
                ),
                Desired::fail(azora_core::conditions::types::READY, "MalformedSpec", msg),
            ]));
        }
    };
    let world = ctx
        .world(K::needs(), &K::secret_refs(&spec))
        .await
        .map_err(ReconcileError::Fetch)?;
    let problems: Vec<Problem> = K::check(&spec, &world);
    let ok = !problems
        .iter()
        .any(|p| matches!(p.kind, ProblemKind::Invalid | ProblemKind::Unresolved));
    let validation = validate::conditions(&problems, ready_message, None);
    Ok(Ok(Checked {
        spec,
        world,
        validation,
        ok,
    }))
}
