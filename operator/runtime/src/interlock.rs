//! The chaos/drill interlock (no IO): one shared record of what disruptive activity is under way — a real
//! failover, a DR drill, a chaos experiment — so that no experiment starts during a real failover or a
//! drill, and a real failover can ask running experiments to abort. Each owner sets and clears its own
//! entry; everyone reads.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

/// What is under way.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Activity {
    /// A real failover of a policy (by policy name).
    Failover(String),
    /// A DR drill (by drill name).
    Drill(String),
    /// A chaos experiment (by experiment name).
    Experiment(String),
}

/// The shared interlock.
#[derive(Clone)]
pub struct Interlock {
    active: Arc<RwLock<BTreeMap<Activity, String>>>,
    changed: watch::Sender<u64>,
    drains: Arc<RwLock<BTreeMap<String, Drain>>>,
    undrained: Arc<RwLock<BTreeMap<String, jiff::Timestamp>>>,
    drains_changed: watch::Sender<u64>,
}

/// A region taken out at the control plane (a drill's drain): the failover path treats it as down. Held in
/// the leader's memory only, so a drain never outlives the process or term that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drain {
    /// Who drained it (e.g. `DrDrill/monthly`).
    pub by: String,
    /// Since when.
    pub since: jiff::Timestamp,
}

impl Default for Interlock {
    fn default() -> Self {
        Self {
            active: Arc::default(),
            changed: watch::channel(0).0,
            drains: Arc::default(),
            undrained: Arc::default(),
            drains_changed: watch::channel(0).0,
        }
    }
}

impl Interlock {
    /// Drains `region` (the failover path treats it as down until [`Interlock::undrain`]).
    pub fn drain(&self, region: &str, by: &str) {
        if let Ok(mut m) = self.drains.write() {
            m.insert(
                region.to_string(),
                Drain {
                    by: by.to_string(),
                    since: jiff::Timestamp::now(),
                },
            );
        }
        self.drains_changed.send_modify(|v| *v += 1);
    }

    /// Ends the drain of `region` made by `by` (another owner's drain is left alone).
    pub fn undrain(&self, region: &str, by: &str) {
        let removed = self
            .drains
            .write()
            .map(|mut m| {
                if m.get(region).is_some_and(|d| d.by == by) {
                    m.remove(region);
                    true
                } else {
                    false
                }
            })
            .unwrap_or(false);
        if removed {
            if let Ok(mut m) = self.undrained.write() {
                m.insert(region.to_string(), jiff::Timestamp::now());
            }
            self.drains_changed.send_modify(|v| *v += 1);
        }
    }

    /// When each region's last drain ended: for the failover path the region recovered then (failback
    /// waits for the policy's hold-down or approval from that moment, as after a real outage).
    pub fn undrained(&self) -> BTreeMap<String, jiff::Timestamp> {
        self.undrained.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Drained regions.
    pub fn drained(&self) -> BTreeMap<String, Drain> {
        self.drains.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Notified when a drain begins or ends.
    pub fn subscribe_drains(&self) -> watch::Receiver<u64> {
        self.drains_changed.subscribe()
    }

    /// Marks an activity as under way, with a short description.
    pub fn begin(&self, activity: Activity, what: impl Into<String>) {
        if let Ok(mut m) = self.active.write() {
            m.insert(activity, what.into());
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Marks an activity as under way only if `conflict` (judging everything else under way, and the drains)
    /// finds nothing against it — checked and claimed under one lock, so two starts cannot both pass.
    pub fn begin_unless(
        &self,
        activity: Activity,
        what: impl Into<String>,
        conflict: impl Fn(&BTreeMap<Activity, String>, &BTreeMap<String, Drain>) -> Option<String>,
    ) -> Result<(), String> {
        let drains = self.drained();
        {
            let Ok(mut m) = self.active.write() else {
                return Err("interlock unavailable".into());
            };
            let others: BTreeMap<Activity, String> = m
                .iter()
                .filter(|(a, _)| **a != activity)
                .map(|(a, w)| (a.clone(), w.clone()))
                .collect();
            if let Some(why) = conflict(&others, &drains) {
                return Err(why);
            }
            m.insert(activity, what.into());
        }
        self.changed.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Marks an activity as over.
    pub fn end(&self, activity: &Activity) {
        let removed = self
            .active
            .write()
            .map(|mut m| m.remove(activity).is_some())
            .unwrap_or(false);
        if removed {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Everything under way.
    pub fn active(&self) -> BTreeMap<Activity, String> {
        self.active.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Whether a real failover is under way (experiments must not start, and running ones abort).
    pub fn failover_under_way(&self) -> bool {
        self.active().keys().any(|a| matches!(a, Activity::Failover(_)))
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failover_is_seen_until_it_ends() {
        let i = Interlock::default();
        assert!(!i.failover_under_way());
        i.begin(Activity::Experiment("x".into()), "region outage");
        assert!(!i.failover_under_way());
        i.begin(Activity::Failover("global".into()), "africa -> europe");
        assert!(i.failover_under_way());
        i.end(&Activity::Failover("global".into()));
        assert!(!i.failover_under_way());
        assert_eq!(i.active().len(), 1);
    }

    #[test]
    fn a_conditional_claim_sees_what_is_already_claimed() {
        let i = Interlock::default();
        let busy = |m: &BTreeMap<Activity, String>, _: &BTreeMap<String, Drain>| {
            m.keys().next().map(|a| format!("{a:?} under way"))
        };
        assert!(
            i.begin_unless(Activity::Experiment("a".into()), "africa", busy)
                .is_ok()
        );
        let second = i.begin_unless(Activity::Experiment("b".into()), "europe", busy);
        assert!(second.is_err_and(|w| w.contains("\"a\"")));
        // the same activity again is not its own conflict
        assert!(
            i.begin_unless(Activity::Experiment("a".into()), "africa", busy)
                .is_ok()
        );
    }

    #[test]
    fn a_drain_is_ended_only_by_its_owner() {
        let i = Interlock::default();
        i.drain("africa", "DrDrill/a");
        i.undrain("africa", "DrDrill/b");
        assert!(i.drained().contains_key("africa"));
        assert!(i.undrained().is_empty());
        i.undrain("africa", "DrDrill/a");
        assert!(i.drained().is_empty());
        assert!(i.undrained().contains_key("africa"));
    }
}
