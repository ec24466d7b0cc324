//! Backups and restore. This version validates BackupSchedules, Backups and Restores and reports
//! `Ready=False, NotYetSupported` (GitOps health checks read `Ready`); taking and restoring backups is the
//! backup issue's work and lands here.

use azora_api::backup::{BackupScheduleSpec, BackupSpec, RestoreSpec};
use azora_api::{Backup, BackupSchedule, Restore};
use azora_core::validate::{self, Pending, Problem};
use azora_core::world::World;
use azora_runtime::pipeline::{Kind, not_yet_supported, resource_of};
use azora_runtime::term::{Stop, controller};
use azora_runtime::{Context, Needs};
use futures::future::BoxFuture;
use kube::core::ApiResource;

/// This capability's work for one leadership term.
pub fn term(ctx: &Context, concurrency: u16, stop: &Stop) -> Vec<BoxFuture<'static, ()>> {
    vec![
        controller::<BackupScheduleKind>(ctx, &ctx.caches.schedules, concurrency, stop.clone()),
        controller::<BackupKind>(ctx, &ctx.caches.backups, concurrency, stop.clone()),
        controller::<RestoreKind>(ctx, &ctx.caches.restores, concurrency, stop.clone()),
    ]
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
        "backups taken on schedule"
    }
    fn pending() -> Option<Pending> {
        not_yet_supported("Scheduling", "backups are not taken in this version")
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
        not_yet_supported(
            "Completed",
            "spec valid; backups are not executed in this version",
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
        not_yet_supported(
            "Completed",
            "spec valid; restores are not executed in this version",
        )
    }
}
