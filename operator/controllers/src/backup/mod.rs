//! Backups and restore: `BackupSchedule` creates a `Backup` per selected tenant every interval (spread over
//! it) and prunes by retention; a `Backup` exports the tenant's namespace from the region where it is
//! active into an archive (Secrets sealed), uploads it to the home region's store and copies it to every
//! region the residency allows, verifying each copy by reading it back; a `Restore` reads the copy in the
//! target region's own store, checks it, applies it and verifies every object. See `run`, `restore`,
//! `schedule`, `verify`.

mod build;
mod export;
mod restore;
mod room;
mod run;
mod schedule;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use azora_api::backup::{BackupScheduleSpec, BackupSpec, RestoreSpec};
use azora_api::{Backup, BackupSchedule, Restore};
use azora_core::validate::{self, Pending, Problem};
use azora_core::world::World;
use azora_runtime::pipeline::{Kind, resource_of};
use azora_runtime::term::{Stop, custom_controller};
use azora_runtime::{Context, Needs};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use kube::core::ApiResource;

pub use room::BackupConfig;
use room::Room;

/// This capability's work for one leadership term.
pub fn term(ctx: &Context, cfg: BackupConfig, concurrency: u16, stop: &Stop) -> Vec<BoxFuture<'static, ()>> {
    let swept = azora_adapters::archive::sweep_scratch(&cfg.scratch_dir);
    if swept > 0 {
        tracing::info!(swept, dir = %cfg.scratch_dir.display(), "removed backup scratch files left by a stopped process");
    }
    let room = Arc::new(Room::new(ctx.clone(), cfg.clone()));
    // A Backup wakes its schedule (status: last good, RPO) and its Restores wait on it.
    let schedule_wakes = room.schedule_wakes();
    vec![
        custom_controller::<BackupScheduleKind, _, _, _, _>(
            &ctx.caches.schedules,
            room.clone(),
            schedule::reconcile,
            schedule::error_policy,
            schedule_wakes,
            concurrency,
            stop.clone(),
        ),
        custom_controller::<BackupKind, _, _, _, _>(
            &ctx.caches.backups,
            room.clone(),
            run::reconcile,
            run::error_policy,
            futures::stream::pending::<String>().boxed(),
            cfg.concurrency,
            stop.clone(),
        ),
        custom_controller::<RestoreKind, _, _, _, _>(
            &ctx.caches.restores,
            room,
            restore::reconcile,
            restore::error_policy,
            futures::stream::pending::<String>().boxed(),
            concurrency,
            stop.clone(),
        ),
    ]
}

/// How often a schedule is looked at when nothing changes (runs due, retention, RPO figures).
pub(crate) const SCHEDULE_TICK: Duration = Duration::from_secs(5);

/// BackupSchedule.
pub struct BackupScheduleKind;
impl Kind for BackupScheduleKind {
    const NAME: &'static str = "backupschedule";
    type Spec = BackupScheduleSpec;
    fn resource() -> ApiResource {
        resource_of::<BackupSchedule>()
    }
    fn needs() -> Needs {
        Needs {
            tenants: true,
            backups: false,
        }
    }
    fn secret_refs(spec: &BackupScheduleSpec) -> Vec<String> {
        spec.encryption_key.iter().map(|k| k.name.clone()).collect()
    }
    fn check(spec: &BackupScheduleSpec, world: &World) -> Vec<Problem> {
        validate::backup_schedule(spec, world)
    }
    fn ready_message() -> &'static str {
        "backups taken on schedule"
    }
    fn pending() -> Option<Pending> {
        None
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
    fn secret_refs(spec: &BackupSpec) -> Vec<String> {
        spec.encryption_key.iter().map(|k| k.name.clone()).collect()
    }
    fn check(spec: &BackupSpec, world: &World) -> Vec<Problem> {
        validate::backup(spec, world)
    }
    fn ready_message() -> &'static str {
        "backup verified in every required region"
    }
    fn pending() -> Option<Pending> {
        None
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
        "restore applied and verified"
    }
    fn pending() -> Option<Pending> {
        None
    }
}
