//! Leader election decisions on a Kubernetes Lease, as a pure function of what was observed. Expiry is
//! judged by the observer's own clock (how long the holder's record has gone unchanged), never by comparing
//! the holder's timestamps with ours, so clock skew between replicas cannot elect two leaders. Pure, no IO.

use std::time::{Duration, Instant};

/// What the Lease said when last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Current holder, if any.
    pub holder: Option<String>,
    /// The holder's last renew time as written (opaque to us; only compared for change).
    pub renew_marker: Option<String>,
    /// Lease duration the holder declared.
    pub duration: Duration,
    /// Number of times the lease changed hands: the fencing epoch.
    pub transitions: u64,
}

/// Local memory of when the record last changed.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The record.
    pub record: LeaseRecord,
    /// When we first saw this exact record.
    pub since: Instant,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold the lease: renew it, keeping the epoch.
    Renew { epoch: u64 },
    /// The lease is free or expired: take it with the next epoch.
    Acquire { epoch: u64 },
    /// Someone else holds a live lease.
    StandBy { holder: String },
}

/// Decides from the last observation. `None` means the Lease does not exist yet.
pub fn decide(identity: &str, observed: Option<&Observed>, now: Instant) -> Decision {
    let Some(obs) = observed else {
        return Decision::Acquire { epoch: 1 };
    };
    let rec = &obs.record;
    match rec.holder.as_deref() {
        Some(h) if h == identity => Decision::Renew {
            epoch: rec.transitions,
        },
        Some(h) if !h.is_empty() && now.duration_since(obs.since) < rec.duration => Decision::StandBy {
            holder: h.to_string(),
        },
        _ => Decision::Acquire {
            epoch: rec.transitions + 1,
        },
    }
}

/// Updates the local memory with a fresh read: the `since` instant resets only when the record changed.
pub fn observe(previous: Option<Observed>, record: LeaseRecord, now: Instant) -> Observed {
    match previous {
        Some(p) if p.record == record => p,
        _ => Observed { record, since: now },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, marker: &str, transitions: u64) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            renew_marker: Some(marker.into()),
            duration: Duration::from_secs(10),
            transitions,
        }
    }

    #[test]
    fn a_missing_lease_is_acquired_at_epoch_one() {
        assert_eq!(decide("a", None, Instant::now()), Decision::Acquire { epoch: 1 });
    }

    #[test]
    fn a_live_lease_of_another_holder_means_stand_by() {
        let t0 = Instant::now();
        let obs = observe(None, rec("b", "r1", 3), t0);
        assert_eq!(
            decide("a", Some(&obs), t0 + Duration::from_secs(9)),
            Decision::StandBy { holder: "b".into() }
        );
    }

    #[test]
    fn a_lease_unchanged_for_its_duration_is_taken_with_the_next_epoch() {
        let t0 = Instant::now();
        let obs = observe(None, rec("b", "r1", 3), t0);
        let later = observe(Some(obs), rec("b", "r1", 3), t0 + Duration::from_secs(5));
        assert_eq!(
            later.since, t0,
            "an unchanged record keeps its first-seen instant"
        );
        assert_eq!(
            decide("a", Some(&later), t0 + Duration::from_secs(10)),
            Decision::Acquire { epoch: 4 }
        );
    }

    #[test]
    fn a_renewing_holder_is_never_taken_over() {
        let t0 = Instant::now();
        let mut obs = observe(None, rec("b", "r1", 3), t0);
        for i in 1..10u64 {
            let now = t0 + Duration::from_secs(4 * i);
            obs = observe(Some(obs), rec("b", &format!("r{}", i + 1), 3), now);
            assert_eq!(
                decide("a", Some(&obs), now + Duration::from_secs(3)),
                Decision::StandBy { holder: "b".into() }
            );
        }
    }

    #[test]
    fn the_holder_renews_with_its_epoch() {
        let obs = observe(None, rec("a", "r1", 7), Instant::now());
        assert_eq!(
            decide("a", Some(&obs), Instant::now()),
            Decision::Renew { epoch: 7 }
        );
    }

    #[test]
    fn a_released_lease_is_acquired_at_once() {
        let t0 = Instant::now();
        let mut r = rec("b", "r1", 2);
        r.holder = None;
        let obs = observe(None, r, t0);
        assert_eq!(decide("a", Some(&obs), t0), Decision::Acquire { epoch: 3 });
    }
}
