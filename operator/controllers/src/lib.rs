//! The reconcilers: one controller per kind, each a short pipeline — fetch what is referenced (IO),
//! validate (pure), plan status (pure), write status (IO, fenced). Controllers run only while this replica
//! holds the leader Lease.

pub mod context;
pub mod kinds;
pub mod metrics;
pub mod reconcile;
pub mod runner;

pub use context::Context;
pub use metrics::Metrics;
pub use runner::run_controllers;
