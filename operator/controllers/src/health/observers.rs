//! What observers report (no IO): the per-region entry each observer keeps in its own Lease, the label
//! and annotation that carry it, and the Lease name of an observer.

use azora_api::Time;
use azora_api::region::Verdict;
use serde::{Deserialize, Serialize};

/// What one observer reports about one region (stored in its observer Lease).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// The observer's own verdict (with hysteresis).
    pub verdict: Verdict,
    /// Consecutive failed rounds.
    pub failures: u32,
    /// Latency of the last round, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u32>,
    /// Start of the current failure streak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,
    /// Reason of the last failure.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A round is taking suspiciously long (no answer yet after a fraction of the timeout): other observers
    /// re-check this region at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspect: bool,
    /// Start of the last round that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok: Option<Time>,
    /// Start of the last round that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed: Option<Time>,
}

impl Observed {
    /// Whether this report asks other observers to re-check the region now (a failure or a slow round).
    pub fn alarming(&self) -> bool {
        self.suspect || self.failures > 0
    }
}

impl Observed {
    /// An observer alive but without a verdict on a region yet.
    pub fn unknown() -> Self {
        Self {
            verdict: Verdict::Unknown,
            failures: 0,
            latency_ms: None,
            failing_since: None,
            reason: String::new(),
            suspect: false,
            last_ok: None,
            last_failed: None,
        }
    }
}

/// Label on observer Leases.
pub const OBSERVER_LABEL: &str = "azora.io/observer";
/// Annotation holding an observer's report (JSON map region → `Observed`).
pub const OBSERVATIONS_ANNOTATION: &str = "azora.io/observations";

/// Name of an observer's Lease.
pub fn observer_lease_name(observer: &str) -> String {
    let clean: String = observer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("azora-observer-{}", clean.trim_matches('-'))
}
