//! A BackupSchedule: per selected tenant, one `Backup` per slot (slots spread the tenants over the
//! interval; the slot's name makes the creation idempotent, and after downtime only the current slot runs:
//! one catch-up, never a burst; never a second run for a tenant while one is going); retention prunes by
//! deleting Backups (their finalizer deletes every copy, so a crash half way resumes); and the figures —
//! RPO per tenant, last good backup, next run — are derived from the recorded Backups, so they are right
//! straight after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azora_api::backup::{
    BackupScheduleSpec, BackupStatus, Phase, RestoreStatus, TestRestore, TestRestoreResult,
};
use azora_api::tenant::{LastBackup, TenantSpec};
use azora_api::{Backup, Restore, Time};
use azora_core::backup::{
    BackupFacts, SCHEDULE_LABEL, TENANT_LABEL, TEST_RESTORE_LABEL, backup_name, prune, required_regions, rpo,
    slot, slot_start, test_restore_names,
};
use azora_core::conditions::{Desired, types};
use azora_core::duration::parse_duration;
use azora_core::world::World;
use azora_runtime::events::publish;
use azora_runtime::pipeline::{Kind as _, ReconcileError, error_policy as generic, resource_of};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{Map, Value, json};
use tracing::{info, instrument, warn};

use super::room::{Room, check};
use super::run::{ABANDON, RUN_DEADLINE};
use super::{BackupScheduleKind, SCHEDULE_TICK};

/// Status `rpoSeconds` is rewritten only when it moved by this much (it changes every second).
const RPO_STEP: u64 = 30;
/// The least time between two new values of a schedule's `nextRunTime`.
const STATUS_EVERY: Duration = Duration::from_secs(30);
/// A test restore not finished this long after it was created is removed and tried again.
const TEST_RESTORE_BOUND: Duration = Duration::from_secs(3600);

/// Error policy: the generic one.
pub fn error_policy(obj: Arc<DynamicObject>, err: &ReconcileError, room: Arc<Room>) -> Action {
    generic::<BackupScheduleKind>(obj, err, room.kc_schedule.clone())
}

fn ms(t: &jiff::Timestamp) -> i64 {
    t.as_millisecond()
}

fn facts(b: &DynamicObject) -> Option<BackupFacts> {
    let tenant = b.data.pointer("/spec/tenant")?.as_str()?.to_string();
    let st: BackupStatus = b
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    Some(BackupFacts {
        name: b.name_any(),
        tenant,
        created_ms: b.creation_timestamp().map_or(0, |t| t.0.as_millisecond()),
        phase: st.phase,
        data_ms: st.data_time.map(|t| ms(&t.0)),
        verified_copies: st.locations.iter().filter(|l| l.verified).count(),
        ever_good: st.last_good_time.is_some() || st.phase == Some(Phase::Succeeded),
        deleting: b.metadata.deletion_timestamp.is_some(),
        size_bytes: st.size_bytes,
    })
}

/// Reconciles one BackupSchedule.
#[instrument(skip(obj, room), fields(controller = "backupschedule", object = obj.metadata.name.as_deref().unwrap_or("")))]
pub async fn reconcile(obj: Arc<DynamicObject>, room: Arc<Room>) -> Result<Action, ReconcileError> {
    let ctx = &room.ctx;
    let _timer = ctx.metrics.timer(BackupScheduleKind::NAME);
    if obj.metadata.deletion_timestamp.is_some() {
        // Backups outlive their schedule (no owner reference): deleting a schedule never deletes backups.
        return Ok(Action::await_change());
    }
    let checked = match check::<BackupScheduleKind>(ctx, &obj, BackupScheduleKind::ready_message()).await? {
        Err(desired) => {
            room.write(&room.schedules, &obj, Map::new(), &desired).await?;
            return Ok(Action::await_change());
        }
        Ok(c) => c,
    };
    if !checked.ok {
        room.write(&room.schedules, &obj, Map::new(), &checked.validation)
            .await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let spec = &checked.spec;
    let name = obj.name_any();
    let (Ok(every), Ok(keep_for)) = (
        parse_duration(&spec.every),
        parse_duration(&spec.retention.keep_for),
    ) else {
        return Ok(Action::await_change());
    };
    let selected = selected_tenants(&room, spec, &checked.world);
    // Creation times of the tenants, read once per reconcile (not a cache scan per tenant).
    let tenant_objs = ctx.caches.tenants.store().state();
    let tenant_since: BTreeMap<String, i64> = tenant_objs
        .iter()
        .map(|t| {
            (
                t.name_any(),
                t.creation_timestamp().map_or(0, |c| c.0.as_millisecond()),
            )
        })
        .collect();
    let mine: Vec<Arc<DynamicObject>> = ctx
        .caches
        .backups
        .store()
        .state()
        .into_iter()
        .filter(|b| b.labels().get(SCHEDULE_LABEL) == Some(&name))
        .collect();
    let all_facts: Vec<BackupFacts> = mine.iter().filter_map(|b| facts(b)).collect();
    // The largest archive of each tenant over every Backup (any schedule, manual ones too), as runs see it.
    let mut tenant_sizes: BTreeMap<String, u64> = BTreeMap::new();
    for b in ctx.caches.backups.store().state() {
        if let (Some(t), Some(n)) = (
            b.data.pointer("/spec/tenant").and_then(Value::as_str),
            b.data.pointer("/status/sizeBytes").and_then(Value::as_u64),
        ) {
            let e = tenant_sizes.entry(t.to_string()).or_default();
            *e = (*e).max(n);
        }
    }
    let now = jiff::Timestamp::now();
    let now_ms = ms(&now);

    // Runs due: one per tenant per slot, none while the tenant's previous run is still going.
    let mut created = 0;
    let schedule_ms = obj.creation_timestamp().map_or(0, |t| t.0.as_millisecond());
    if !spec.suspend {
        for (tenant, _) in &selected {
            let k = slot(now_ms, tenant, every);
            let start = slot_start(k, tenant, every);
            let bname = backup_name(&name, tenant, k);
            let of_tenant = || all_facts.iter().filter(|f| &f.tenant == tenant && !f.deleting);
            // A run is going (a Backup not yet started counts for one interval, so one stuck on bad input
            // never stops the tenant's backups for good).
            // A run counts as going for a bounded time only: one stuck for any reason never stops the
            // tenant's backups for good (it is ended as abandoned by its own reconcile).
            // (Its bound grows with the tenant's archives, as the run's own does.)
            // (The size the run itself budgets with: the largest of every Backup of the tenant.)
            let size = tenant_sizes.get(tenant.as_str()).copied().unwrap_or(0);
            let abandon = azora_core::backup::abandon_after(
                ABANDON,
                azora_core::backup::run_deadline(RUN_DEADLINE, size, checked.world.regions.len()),
            );
            let bound = 2 * (every.as_millis() as i64 + abandon.as_millis() as i64);
            let going = of_tenant().any(|f| match f.phase {
                Some(p) => !p.is_final() && now_ms - f.created_ms < bound,
                None => now_ms - f.created_ms < every.as_millis() as i64,
            });
            // This slot ran already (also after `every` changed: slots are renumbered, runs are not).
            let ran =
                of_tenant().any(|f| f.created_ms >= start) || mine.iter().any(|b| b.name_any() == bname);
            // A tenant's first run waits for its own slot to start after the schedule (or the tenant) came:
            // a new schedule spreads its tenants over the interval instead of starting them all at once.
            let first = !of_tenant().any(|_| true);
            let tenant_ms = tenant_since.get(tenant.as_str()).copied().unwrap_or(0);
            if going || ran || (first && start < schedule_ms.max(tenant_ms)) {
                continue;
            }
            // One tenant whose Backup cannot be created (a webhook, a quota) never starves the others.
            match create_backup(&room, &name, spec, tenant, &bname).await {
                Ok(()) => created += 1,
                Err(e @ ReconcileError::Fenced(_)) => return Err(e),
                Err(e) => {
                    warn!(schedule = %name, %tenant, error = %e, "creating a backup failed; retried next tick")
                }
            }
        }
    }
    // Retention.
    let doomed = prune(&all_facts, now_ms, keep_for, spec.retention.keep_last_good);
    if !doomed.is_empty() {
        ctx.fence
            .check()
            .await
            .map_err(|e| ReconcileError::Fenced(Arc::new(e)))?;
        let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource_of::<Backup>());
        for d in &doomed {
            match api.delete(d, &DeleteParams::background()).await {
                Ok(_) => info!(schedule = %name, backup = %d, "pruned by retention (its copies go with it)"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    warn!(schedule = %name, backup = %d, error = &e as &dyn std::error::Error, "pruning failed; retried next time")
                }
            }
        }
    }

    // Scheduled test restores.
    let results = match &spec.test_restore {
        Some(t) if !spec.suspend => {
            test_restores(&room, &name, t, &selected, &mine, &checked.world, now_ms).await?
        }
        _ => Vec::new(),
    };
    let tested = results.iter().max_by_key(|r| ms(&r.time.0)).cloned();

    // Figures, from the recorded Backups.
    let tenant_names: Vec<String> = selected.iter().map(|(t, _)| t.clone()).collect();
    let rpos = rpo(&all_facts, &tenant_names, now_ms);
    for (t, r) in &rpos {
        match r {
            Some(s) => ctx.metrics.backup_rpo.with_label_values(&[t]).set(*s as f64),
            None => {
                let _ = ctx.metrics.backup_rpo.remove_label_values(&[t]);
            }
        }
    }
    record_last_backups(&room, &ctx.caches.backups.store().state(), &tenant_names).await;
    let newest_good = mine
        .iter()
        .filter_map(|b| {
            let st: BackupStatus = b
                .data
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok())?;
            (st.phase == Some(Phase::Succeeded)).then(|| (st.completion_time, b.name_any()))
        })
        .max_by_key(|(t, _)| t.map(|t| ms(&t.0)));
    let without: Vec<&str> = rpos
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(t, _)| t.as_str())
        .collect();
    let worst = rpos.values().flatten().max().copied();
    let recorded_rpo = obj.data.pointer("/status/rpoSeconds").and_then(Value::as_u64);
    let rpo_field = match (worst, recorded_rpo) {
        (Some(w), Some(r)) if w.abs_diff(r) < RPO_STEP => Some(r),
        (w, _) => w,
    };
    let next = (!spec.suspend)
        .then(|| {
            selected
                .iter()
                .map(|(t, _)| slot_start(slot(now_ms, t, every) + 1, t, every))
                .min()
        })
        .flatten()
        .and_then(|m| jiff::Timestamp::from_millisecond(m).ok());
    let mut fields = Map::new();
    if let Some((t, n)) = &newest_good {
        fields.insert("lastSuccessfulBackup".into(), json!(n));
        fields.insert("lastSuccessfulTime".into(), json!(t));
    }
    fields.insert("nextRunTime".into(), json!(next.map(Time::from_timestamp)));
    let restored = mine
        .iter()
        .filter_map(|b| {
            let t = b.data.pointer("/status/restoreVerifiedTime")?;
            let t: Time = serde_json::from_value(t.clone()).ok()?;
            Some((ms(&t.0), b.name_any()))
        })
        .max();
    if let Some((_, n)) = restored {
        fields.insert("lastRestoredBackup".into(), json!(n));
    }
    let recorded_test = obj
        .data
        .pointer("/status/lastTestRestore")
        .and_then(|v| serde_json::from_value::<TestRestoreResult>(v.clone()).ok());
    match (tested, recorded_test) {
        (Some(t), Some(r)) if ms(&r.time.0) > ms(&t.time.0) => {
            fields.insert("lastTestRestore".into(), json!(r));
        }
        (Some(t), _) => {
            fields.insert("lastTestRestore".into(), json!(t));
        }
        (None, Some(r)) => {
            fields.insert("lastTestRestore".into(), json!(r));
        }
        (None, None) => {}
    }
    // Failures per tenant: a newer result of the tenant replaces its entry (a success removes it); tenants
    // no longer selected leave.
    let recorded_failures: Vec<TestRestoreResult> = obj
        .data
        .pointer("/status/testRestoreFailures")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let failures = merge_failures(&recorded_failures, &results, &tenant_names);
    for f in failures.iter().filter(|f| !recorded_failures.contains(f)) {
        publish(
            ctx,
            &obj,
            EventType::Warning,
            "TestRestoreFailed",
            &format!(
                "the test restore of tenant {}'s backup {} into {} failed: {}",
                f.tenant, f.backup, f.region, f.message
            ),
            "TestRestore",
        )
        .await;
    }
    fields.insert("testRestoreFailures".into(), json!(failures));
    fields.insert("rpoSeconds".into(), json!(rpo_field));
    let mut desired: Vec<Desired> = checked.validation.clone();
    let scheduling = if selected.is_empty() {
        Desired::fail(
            "Scheduling",
            "NoTenantsSelected",
            "no tenant with backups enabled matches tenantSelector; nothing is backed up",
        )
    } else if spec.suspend {
        Desired::fail(
            "Scheduling",
            "Suspended",
            "suspended: no new backups; retention still prunes",
        )
    } else {
        Desired::ok(
            "Scheduling",
            "Scheduled",
            format!("{} tenants, every {}", selected.len(), spec.every),
        )
    };
    if scheduling.status != azora_api::ConditionStatus::True
        && let Some(r) = desired.iter_mut().find(|d| d.type_ == types::READY)
    {
        *r = Desired::fail(
            types::READY,
            scheduling.reason.clone(),
            scheduling.message.clone(),
        );
    }
    desired.push(scheduling);
    desired.push(if without.is_empty() {
        Desired::ok(
            "Protected",
            "GoodBackups",
            "every selected tenant has a verified backup",
        )
    } else {
        let shown: Vec<&str> = without.iter().take(10).copied().collect();
        Desired::fail(
            "Protected",
            "NoGoodBackup",
            format!(
                "{} tenants without a verified backup yet: {}",
                without.len(),
                shown.join(", ")
            ),
        )
    });
    // `nextRunTime` moves with every tenant's slot (every few seconds with many tenants): a new value is
    // written at most every STATUS_EVERY per schedule (`rpoSeconds` moves in RPO_STEP steps, above).
    let recorded_next = obj
        .data
        .pointer("/status/nextRunTime")
        .filter(|v| !v.is_null())
        .cloned();
    if let Some(r) = &recorded_next
        && room.recently_written(&name, STATUS_EVERY)
    {
        fields.insert("nextRunTime".into(), r.clone());
    }
    let next_moved = fields.get("nextRunTime") != recorded_next.as_ref();
    if room.write(&room.schedules, &obj, fields, &desired).await? && next_moved {
        room.mark_written(&name);
    }
    if created > 0 {
        info!(schedule = %name, created, "backups started");
    }
    Ok(Action::requeue(SCHEDULE_TICK))
}

/// Tenants the schedule selects: backups enabled, labels matching the selector.
fn selected_tenants(room: &Room, spec: &BackupScheduleSpec, world: &World) -> Vec<(String, TenantSpec)> {
    room.ctx
        .caches
        .tenants
        .store()
        .state()
        .into_iter()
        .filter(|t| t.metadata.deletion_timestamp.is_none())
        .filter(|t| azora_api::tenant::selects(spec.tenant_selector.as_ref(), t.labels()))
        .filter_map(|t| {
            let s: TenantSpec = serde_json::from_value(t.data.get("spec").cloned()?).ok()?;
            // A tenant whose home region has no object store cannot be backed up: not selected (the
            // Backup would only wait on it).
            let store = world
                .regions
                .get(&s.home_region)
                .is_some_and(|r| r.has_object_store);
            (s.backup.enabled && store).then(|| (t.name_any(), s))
        })
        .collect()
}

async fn create_backup(
    room: &Room,
    schedule: &str,
    spec: &BackupScheduleSpec,
    tenant: &str,
    name: &str,
) -> Result<(), ReconcileError> {
    let ctx = &room.ctx;
    ctx.fence
        .check()
        .await
        .map_err(|e| ReconcileError::Fenced(Arc::new(e)))?;
    let mut body = json!({
        "apiVersion": "azora.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name, "labels": {SCHEDULE_LABEL: schedule, TENANT_LABEL: tenant}},
        "spec": {"tenant": tenant, "schedule": schedule, "include": spec.include,
                 "copyToAllowedRegions": spec.copy_to_allowed_regions},
    });
    if let Some(k) = &spec.encryption_key {
        body["spec"]["encryptionKey"] = json!(k);
    }
    let obj: DynamicObject =
        serde_json::from_value(body).map_err(|e| ReconcileError::Remote(e.to_string()))?;
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource_of::<Backup>());
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(ReconcileError::Fetch(e)),
    }
}

/// `Tenant.status.lastBackup`: the newest good backup of each tenant, whichever schedule (or person)
/// made it (its own field and manager).
async fn record_last_backups(room: &Room, all: &[Arc<DynamicObject>], tenants: &[String]) {
    let mut newest: BTreeMap<&str, (i64, String, Time)> = BTreeMap::new();
    for b in all {
        let Some(f) = facts(b) else { continue };
        if !f.good() {
            continue;
        }
        let Some(t) = tenants.iter().find(|t| **t == f.tenant) else {
            continue;
        };
        let Some(dt) = b
            .data
            .pointer("/status/dataTime")
            .and_then(|v| serde_json::from_value::<Time>(v.clone()).ok())
        else {
            continue;
        };
        let e = newest.entry(t.as_str()).or_insert((i64::MIN, String::new(), dt));
        if ms(&dt.0) > e.0 {
            *e = (ms(&dt.0), f.name.clone(), dt);
        }
    }
    let tenant_objs = room.ctx.caches.tenants.store().state();
    for (t, (_, name, dt)) in newest {
        let want = LastBackup {
            name: name.clone(),
            data_time: dt,
        };
        let have: Option<LastBackup> = tenant_objs
            .iter()
            .find(|o| o.name_any() == t)
            .and_then(|o| o.data.pointer("/status/lastBackup"))
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        if have.as_ref() == Some(&want) {
            continue;
        }
        if let Err(e) = room.tenants.apply(t, None, json!({ "lastBackup": want })).await {
            warn!(tenant = %t, error = &e as &dyn std::error::Error, "recording the last backup failed");
        }
    }
}

/// The failures to show: `recorded`, with each tenant's entry replaced by its newer result in `seen` (gone
/// when that succeeded), and only `selected` tenants kept.
fn merge_failures(
    recorded: &[TestRestoreResult],
    seen: &[TestRestoreResult],
    selected: &[String],
) -> Vec<TestRestoreResult> {
    let mut by_tenant: BTreeMap<String, TestRestoreResult> =
        recorded.iter().map(|r| (r.tenant.clone(), r.clone())).collect();
    for r in seen {
        let newer = by_tenant
            .get(&r.tenant)
            .is_none_or(|old| ms(&old.time.0) <= ms(&r.time.0));
        if !newer {
            continue;
        }
        if r.succeeded {
            by_tenant.remove(&r.tenant);
        } else {
            by_tenant.insert(r.tenant.clone(), r.clone());
        }
    }
    by_tenant
        .into_values()
        .filter(|r| selected.contains(&r.tenant))
        .collect()
}

/// Scheduled test restores, per tenant: when no backup of the tenant was proven to restore within
/// `testRestore.every`, its newest good backup is restored into a scratch namespace of another allowed region
/// (one Restore per test slot). A Restore that succeeded is deleted once recorded (its scratch namespace goes
/// with it); one that failed stays for inspection until the next slot. Returns each tenant's newest result
/// seen.
async fn test_restores(
    room: &Room,
    schedule: &str,
    t: &TestRestore,
    selected: &[(String, TenantSpec)],
    mine: &[Arc<DynamicObject>],
    world: &World,
    now_ms: i64,
) -> Result<Vec<TestRestoreResult>, ReconcileError> {
    let ctx = &room.ctx;
    let Ok(every) = parse_duration(&t.every) else {
        return Ok(Vec::new());
    };
    let restores: Vec<Arc<DynamicObject>> = ctx
        .caches
        .restores
        .store()
        .state()
        .into_iter()
        .filter(|r| r.labels().get(TEST_RESTORE_LABEL).map(String::as_str) == Some(schedule))
        .collect();
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource_of::<Restore>());
    let mut seen: Vec<TestRestoreResult> = Vec::new();
    for (tenant, tspec) in selected {
        let mut newest: Option<TestRestoreResult> = None;
        let k = slot(now_ms, tenant, every);
        let (rname, namespace) = test_restore_names(schedule, tenant, k);
        let of_tenant: Vec<&Arc<DynamicObject>> = restores
            .iter()
            .filter(|r| r.labels().get(TENANT_LABEL) == Some(tenant))
            .collect();
        let mut in_flight = false;
        for r in &of_tenant {
            let st: RestoreStatus = r
                .data
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default();
            let age = now_ms - r.creation_timestamp().map_or(now_ms, |t| t.0.as_millisecond());
            let spec_text = |field: &str| {
                r.data
                    .pointer(&format!("/spec/{field}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let backup_name = spec_text("backup");
            let target_region = spec_text("targetRegion");
            // A large backup's restore gets the time its archive needs (as the restore itself does).
            let size = mine
                .iter()
                .find(|b| b.name_any() == backup_name)
                .and_then(|b| b.data.pointer("/status/sizeBytes").and_then(Value::as_u64))
                .unwrap_or(0);
            let bound = TEST_RESTORE_BOUND.max(2 * azora_core::backup::run_deadline(RUN_DEADLINE, size, 1));
            let Some(phase) = st.phase.filter(|p| p.is_final()) else {
                if age < bound.as_millis() as i64 {
                    in_flight |= r.metadata.deletion_timestamp.is_none();
                } else if r.metadata.deletion_timestamp.is_none() {
                    // Never started or never finished (its backup went away): removed, tried again — and
                    // recorded as a failure, so an overdue test restore is never silent.
                    let _ = api.delete(&r.name_any(), &DeleteParams::background()).await;
                    let overdue = TestRestoreResult {
                        tenant: tenant.clone(),
                        backup: backup_name.clone(),
                        region: target_region.clone(),
                        time: Time::now(),
                        succeeded: false,
                        message: format!(
                            "not finished within {}s of its creation; removed and tried again",
                            bound.as_secs()
                        ),
                    };
                    if newest
                        .as_ref()
                        .is_none_or(|n| ms(&n.time.0) < ms(&overdue.time.0))
                    {
                        newest = Some(overdue);
                    }
                }
                continue;
            };
            let ok = phase == Phase::Succeeded;
            let result = TestRestoreResult {
                tenant: tenant.clone(),
                backup: backup_name.clone(),
                region: target_region.clone(),
                time: st.completion_time.unwrap_or_else(Time::now),
                succeeded: ok,
                message: st.timeline.last().map(|e| e.message.clone()).unwrap_or_default(),
            };
            if newest.as_ref().is_none_or(|n| ms(&n.time.0) < ms(&result.time.0)) {
                newest = Some(result.clone());
            }
            // A success is cleaned up once its mark is visible on the backup (else the same slot would test
            // again); a failure stays for inspection until the next slot.
            let marked = mine.iter().any(|b| {
                b.name_any() == result.backup
                    && b.data
                        .pointer("/status/restoreVerifiedTime")
                        .and_then(|v| serde_json::from_value::<Time>(v.clone()).ok())
                        .zip(st.completion_time)
                        .is_some_and(|(m, c)| ms(&m.0) >= ms(&c.0) - 5_000)
            });
            if ((ok && marked) || r.name_any() != rname) && r.metadata.deletion_timestamp.is_none() {
                ctx.fence
                    .check()
                    .await
                    .map_err(|e| ReconcileError::Fenced(Arc::new(e)))?;
                match api.delete(&r.name_any(), &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        warn!(restore = %r.name_any(), error = &e as &dyn std::error::Error, "deleting a test restore failed")
                    }
                }
            }
        }
        seen.extend(newest);
        if in_flight || of_tenant.iter().any(|r| r.name_any() == rname) {
            continue;
        }
        // Proven recently (any backup of the tenant restored within the interval): nothing to do.
        let proven = mine
            .iter()
            .filter(|b| b.labels().get(TENANT_LABEL) == Some(tenant))
            .any(|b| {
                b.data
                    .pointer("/status/restoreVerifiedTime")
                    .and_then(|v| serde_json::from_value::<Time>(v.clone()).ok())
                    .is_some_and(|t| now_ms - ms(&t.0) < every.as_millis() as i64)
            });
        if proven {
            continue;
        }
        let newest_good = mine
            .iter()
            .filter(|b| b.labels().get(TENANT_LABEL) == Some(tenant))
            .filter_map(|b| facts(b).filter(BackupFacts::good).map(|f| (f.data_ms, f.name)))
            .max();
        let Some((_, backup)) = newest_good else { continue };
        let allowed = required_regions(tspec, world, true);
        let region = match &t.region {
            Some(r) if allowed.contains(r) => r.clone(),
            _ => allowed
                .iter()
                .find(|r| **r != tspec.home_region)
                .or(allowed.first())
                .cloned()
                .unwrap_or_else(|| tspec.home_region.clone()),
        };
        ctx.fence
            .check()
            .await
            .map_err(|e| ReconcileError::Fenced(Arc::new(e)))?;
        let body = json!({
            "apiVersion": "azora.io/v1alpha1", "kind": "Restore",
            "metadata": {"name": rname, "labels": {TEST_RESTORE_LABEL: schedule, TENANT_LABEL: tenant}},
            "spec": {"backup": backup, "targetRegion": region, "targetNamespace": namespace, "verify": true},
        });
        let obj: DynamicObject =
            serde_json::from_value(body).map_err(|e| ReconcileError::Remote(e.to_string()))?;
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => info!(%schedule, %tenant, %backup, %region, "test restore started"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(ReconcileError::Fetch(e)),
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(tenant: &str, at: i64, ok: bool) -> TestRestoreResult {
        TestRestoreResult {
            tenant: tenant.into(),
            backup: format!("b-{at}"),
            region: "europe".into(),
            time: Time(jiff::Timestamp::from_second(at).unwrap_or_default()),
            succeeded: ok,
            message: String::new(),
        }
    }

    #[test]
    fn a_tenants_failed_test_restore_stays_until_one_of_its_own_succeeds() {
        let selected = vec!["a".to_string(), "b".to_string()];
        let failed = merge_failures(&[], &[result("a", 10, false), result("b", 11, true)], &selected);
        assert_eq!(failed, vec![result("a", 10, false)]);
        // Another tenant's newer success does not hide it; an older result of its own does not replace it.
        let still = merge_failures(&failed, &[result("b", 20, true), result("a", 5, true)], &selected);
        assert_eq!(still, failed);
        // Its own newer success removes it; a tenant no longer selected leaves.
        assert!(merge_failures(&failed, &[result("a", 30, true)], &selected).is_empty());
        assert!(merge_failures(&failed, &[], &["b".to_string()]).is_empty());
    }
}
