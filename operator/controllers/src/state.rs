//! In-process state shared between the leader's loops (no IO): the combined health of each region, as the
//! aggregator last judged it, and which regions DNS currently serves. Changes wake the failover loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use azora_api::Time;
use azora_api::region::Verdict;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Combined health of one region.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionHealth {
    /// Combined verdict.
    pub verdict: Verdict,
    /// When the verdict last changed.
    pub since: Time,
    /// When it last came back from Down.
    pub recovered: Option<Time>,
    /// Earliest start of the current failure streak among observers that see it down.
    pub failing_since: Option<Time>,
}

/// Shared health state.
#[derive(Clone, Default)]
pub struct HealthState {
    regions: Arc<RwLock<BTreeMap<String, RegionHealth>>>,
    serving: Arc<RwLock<BTreeSet<String>>>,
    /// Notified whenever a verdict changes.
    pub changed: Arc<Notify>,
}

impl HealthState {
    /// The health of a region, if judged.
    pub fn get(&self, region: &str) -> Option<RegionHealth> {
        self.regions.read().ok()?.get(region).cloned()
    }

    /// Records a region's health; wakes the failover loop when the verdict changed.
    pub fn set(&self, region: &str, health: RegionHealth) {
        let changed = match self.regions.write() {
            Ok(mut m) => m
                .insert(region.to_string(), health.clone())
                .is_none_or(|old| old.verdict != health.verdict),
            Err(_) => false,
        };
        if changed {
            self.changed.notify_waiters();
            self.changed.notify_one();
        }
    }

    /// Forgets a deleted region.
    pub fn remove(&self, region: &str) {
        if let Ok(mut m) = self.regions.write() {
            m.remove(region);
        }
    }

    /// Regions DNS serves (any policy, any geography).
    pub fn serving(&self) -> BTreeSet<String> {
        self.serving.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Replaces the served set of one policy's contribution (the union is kept by the caller).
    pub fn set_serving(&self, regions: BTreeSet<String>) {
        if let Ok(mut s) = self.serving.write() {
            *s = regions;
        }
    }
}

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
