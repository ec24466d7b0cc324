//! The reconcilers: one controller per kind, each a short pipeline — fetch what is referenced (IO),
//! validate (pure), plan status (pure), write status (IO, fenced). Controllers run only while this replica
//! holds the leader Lease.

pub mod aggregate;
pub mod clusters;
pub mod context;
pub mod dns_serve;
pub mod engine;
pub mod events;
pub mod failover;
pub mod kinds;
pub mod metrics;
pub mod reconcile;
pub mod replication;
pub mod runner;
pub mod state;
pub mod tenant;
pub mod zone;

pub use context::Context;
pub use metrics::Metrics;
pub use runner::{Limits, run_controllers};
