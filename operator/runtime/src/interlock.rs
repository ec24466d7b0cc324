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
}

impl Default for Interlock {
    fn default() -> Self {
        Self {
            active: Arc::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Interlock {
    /// Marks an activity as under way, with a short description.
    pub fn begin(&self, activity: Activity, what: impl Into<String>) {
        if let Ok(mut m) = self.active.write() {
            m.insert(activity, what.into());
        }
        self.changed.send_modify(|v| *v += 1);
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
}
