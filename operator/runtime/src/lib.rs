//! The shared runtime every capability builds on (IO): the hub client and write fence (`Context`), one
//! watch cache per kind with change notifications (`cache`), the generic reconcile pipeline and status
//! writer (`pipeline`), leadership terms (`term`), Events, metrics, supervised background tasks, and the
//! small read-only handles capabilities publish to each other (`verdicts`, `clusters`, `interlock`).
//! It holds no capability state and knows no capability: capabilities depend on it, never the reverse.

pub mod cache;
pub mod clusters;
pub mod context;
pub mod events;
pub mod interlock;
pub mod metrics;
pub mod pipeline;
pub mod supervise;
pub mod term;
pub mod verdicts;

pub use context::{Context, Handles, Needs};
pub use metrics::Metrics;
