//! The region-verdict handle (no IO): the combined health of each region as the health aggregator last
//! judged it (written only by health), and which regions DNS currently serves (written only by failover).
//! Every other capability reads it. A verdict change notifies subscribers at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use azora_api::Time;
use azora_api::region::Verdict;
use tokio::sync::watch;

/// Combined health of one region.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionHealth {
    /// Combined verdict.
    pub verdict: Verdict,
    /// When the verdict last changed.
    pub since: Time,
    /// When it last came back from Down.
    pub recovered: Option<Time>,
    /// Earliest start of the current failure streak among observers that see it down (the outage's
    /// start, for timelines).
    pub failing_since: Option<Time>,
    /// Latest start of a current failure streak among observers that see it down: failover targets must
    /// have been probed after it.
    pub detected_at: Option<Time>,
    /// Start of the latest successful round among fresh observers.
    pub last_ok: Option<Time>,
    /// Start of the latest failed round among fresh observers.
    pub last_failed: Option<Time>,
    /// Taken from the Region's recorded status at a takeover and not yet judged from fresh reports in
    /// this term: a record of what the last leader saw, not evidence that the region answers now.
    pub seeded: bool,
}

/// Shared verdicts.
#[derive(Clone)]
pub struct Verdicts {
    regions: Arc<RwLock<BTreeMap<String, RegionHealth>>>,
    serving: Arc<RwLock<BTreeMap<String, BTreeSet<String>>>>,
    changed: watch::Sender<u64>,
    serving_changed: watch::Sender<u64>,
}

impl Default for Verdicts {
    fn default() -> Self {
        Self {
            regions: Arc::default(),
            serving: Arc::default(),
            changed: watch::channel(0).0,
            serving_changed: watch::channel(0).0,
        }
    }
}

impl Verdicts {
    /// The health of a region, if judged.
    pub fn get(&self, region: &str) -> Option<RegionHealth> {
        self.regions.read().ok()?.get(region).cloned()
    }

    /// Every judged region.
    pub fn all(&self) -> BTreeMap<String, RegionHealth> {
        self.regions.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Records a region's health; notifies subscribers when the verdict (or the evidence the failover
    /// planner uses) changed.
    pub fn set(&self, region: &str, health: RegionHealth) {
        let changed = match self.regions.write() {
            Ok(mut m) => m
                .insert(region.to_string(), health.clone())
                .is_none_or(|old| old != health),
            Err(_) => false,
        };
        if changed {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Forgets a deleted region.
    pub fn remove(&self, region: &str) {
        if let Ok(mut m) = self.regions.write() {
            m.remove(region);
        }
    }

    /// A receiver notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Regions DNS serves (any policy, any geography).
    pub fn serving(&self) -> BTreeSet<String> {
        self.serving
            .read()
            .map(|s| s.values().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// Replaces the regions one policy serves; notifies `subscribe_serving` when that changed.
    pub fn set_serving(&self, policy: &str, regions: BTreeSet<String>) {
        let changed = match self.serving.write() {
            Ok(mut s) if regions.is_empty() => s.remove(policy).is_some(),
            Ok(mut s) => s.insert(policy.to_string(), regions.clone()).as_ref() != Some(&regions),
            Err(_) => false,
        };
        if changed {
            self.serving_changed.send_modify(|v| *v += 1);
        }
    }

    /// A receiver notified when the served regions change.
    pub fn subscribe_serving(&self) -> watch::Receiver<u64> {
        self.serving_changed.subscribe()
    }
}
