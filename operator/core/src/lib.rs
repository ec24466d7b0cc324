//! The decision core of Azora: validation, conditions, placement, leader-election decisions, durations and
//! schedules. Every function here is pure — observed state in, next step out — and unit-tested without a
//! cluster. Reconcilers fetch, call into this crate, apply and write status.

pub mod backup;
pub mod chaos;
pub mod conditions;
pub mod database;
pub mod drill;
pub mod duration;
pub mod failover;
pub mod geo;
pub mod health;
pub mod lease;
pub mod placement;
pub mod replication;
pub mod secrets;
pub mod tenancy;
pub mod tenant_status;
pub mod validate;
pub mod world;

#[cfg(test)]
pub(crate) mod testing;
