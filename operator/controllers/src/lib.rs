//! The capabilities, one room each: `health`, `failover`, `tenancy`, `backup`, `chaos`, `drill`, `secrets` and `database`. Each room owns its controllers and loops and hands the
//! runtime its work for a leadership term (`term`). Rooms never import each other; they share only the
//! read-only handles the runtime publishes (region verdicts, the regional cluster registry, the interlock).
//! See `operator/ARCHITECTURE.md`.

pub mod backup;
pub mod chaos;
pub mod database;
pub mod drill;
pub mod failover;
pub mod health;
pub mod secrets;
pub mod tenancy;

use azora_runtime::Context;
use azora_runtime::term::Stop;
use futures::future::BoxFuture;

/// Settings of every capability for a term.
#[derive(Clone)]
pub struct TermConfig {
    /// Reconciles in flight per generic controller.
    pub concurrency: u16,
    /// Health aggregation.
    pub health: health::aggregate::AggregateConfig,
    /// Failover.
    pub failover: failover::decide::FailoverConfig,
    /// Tenancy.
    pub tenancy: tenancy::TenancyConfig,
    /// Backups and restore.
    pub backup: backup::BackupConfig,
    /// Secret rotation.
    pub secrets: secrets::SecretsConfig,
    /// Database replication.
    pub database: database::DatabaseConfig,
    /// Chaos experiments.
    pub chaos: chaos::ChaosConfig,
}

/// Every capability's work for one leadership term.
pub fn term(ctx: &Context, cfg: TermConfig, stop: Stop) -> Vec<BoxFuture<'static, ()>> {
    let c = cfg.concurrency;
    let mut all = Vec::new();
    all.extend(health::term(ctx, cfg.health, c, &stop));
    all.extend(failover::term(ctx, cfg.failover, c, &stop));
    all.extend(tenancy::term(ctx, cfg.tenancy, &stop));
    all.extend(backup::term(ctx, cfg.backup, c, &stop));
    all.extend(secrets::term(ctx, cfg.secrets, &stop));
    all.extend(database::term(ctx, cfg.database, &stop));
    all.extend(chaos::term(ctx, cfg.chaos, c, &stop));
    all.extend(drill::term(ctx, c, &stop));
    all
}
