//! What a Tenant's status says, planned from what placement and replication observed (pure, no IO): each
//! region's entry, `Placed` (which also decides `Ready`), `Replicated` (relative to the replication source),
//! and the active region. The Tenant controller fetches, applies, and writes what this plans.

use std::collections::BTreeMap;

use azora_api::region::Verdict;
use azora_api::tenant::{RegionSync, SyncState};
use azora_api::{ConditionStatus, Time};

use crate::conditions::{Desired, types};
use crate::placement::Placement;
use crate::replication::ReplicaState;
use crate::tenancy::{RegionOutcome, active_region, excluded, placed_condition};

/// What the status is planned from.
pub struct Observed<'a> {
    /// The object's generation.
    pub generation: Option<i64>,
    /// Now.
    pub now: Time,
    /// The regions' entries as the status shows them.
    pub before: &'a [RegionSync],
    /// Where the tenant is placed and where not (and why).
    pub placement: &'a Placement,
    /// This round's outcome in each placed region.
    pub outcomes: &'a [RegionOutcome],
    /// Regions no longer placed that still hold something, with what is happening there.
    pub removing: &'a [(String, String)],
    /// Replication state by replica region, as this process measured it (empty: not measured yet).
    pub replicas: &'a BTreeMap<String, ReplicaState>,
    /// The region replication copies from.
    pub source: &'a str,
    /// The `Replicated` condition the status shows now (stands until measured).
    pub recorded_replicated: Option<Desired>,
    /// Region verdicts.
    pub verdicts: &'a BTreeMap<String, Verdict>,
    /// Where the tenant's DNS sends traffic, as its FailoverPolicy decided (failback after its hold-down
    /// or approval): the active region whenever it is one of the tenant's regions.
    pub routed_to: Option<&'a str>,
}

/// The planned status.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// Conditions this controller owns, validation first.
    pub conditions: Vec<Desired>,
    /// Region entries: placed regions, then excluded ones.
    pub regions: Vec<RegionSync>,
    /// The region serving the tenant.
    pub active_region: Option<String>,
}

/// Plans the status of a valid tenant. `validation` holds `SpecValid`, `ReferencesResolved` and `Ready`
/// from validation; `Ready` is replaced by `Placed`'s verdict unless every region is placed.
pub fn plan(validation: Vec<Desired>, o: &Observed<'_>) -> Planned {
    let mut conditions = validation;
    let mut regions: Vec<RegionSync> = o
        .outcomes
        .iter()
        .map(|out| {
            let lag = o.replicas.get(&out.region).map(|r| r.lag_seconds);
            region_sync(o.before, out, o.generation, o.now, lag, out.region != o.source)
        })
        .collect();
    regions.extend(
        o.placement
            .excluded
            .iter()
            .map(|e| excluded(&e.region, &e.message)),
    );
    for (region, msg) in o.removing {
        if !regions.iter().any(|r| &r.region == region) {
            regions.push(excluded(region, msg));
        }
    }
    let placed = placed_condition(o.outcomes);
    if placed.status != ConditionStatus::True
        && let Some(ready) = conditions.iter_mut().find(|d| d.type_ == types::READY)
    {
        *ready = Desired {
            type_: types::READY,
            status: if placed.status == ConditionStatus::False {
                ConditionStatus::False
            } else {
                ConditionStatus::Unknown
            },
            reason: placed.reason.clone(),
            message: placed.message.clone(),
        };
    }
    conditions.push(placed);
    let targets: Vec<&String> = o
        .placement
        .placed
        .iter()
        .filter(|r| r.as_str() != o.source)
        .collect();
    let measured = targets
        .iter()
        .filter(|t| o.replicas.contains_key(t.as_str()))
        .count();
    let bad_news = targets
        .iter()
        .filter_map(|t| o.replicas.get(t.as_str()))
        .any(|r| r.error.is_some() || !r.in_sync);
    match replicated_condition(&o.placement.placed, o.source, o.replicas) {
        // Every replica measured by this process, or one measured out of sync: that is the news.
        Some(r) if measured == targets.len() || bad_news => conditions.push(r),
        // Not (yet) every replica measured since this process started, and the measured ones in sync: the
        // recorded condition stands (a restart must not flap it through "catching up").
        Some(r) => conditions.push(o.recorded_replicated.clone().unwrap_or(r)),
        None => {}
    }
    Planned {
        conditions,
        regions,
        active_region: match o.routed_to {
            Some(r) if o.placement.placed.iter().any(|p| p == r) => Some(r.to_string()),
            _ => active_region(&o.placement.placed, |r| o.verdicts.get(r).copied()),
        },
    }
}

/// `Replicated` from the replicas' states: False with the errors, Unknown while catching up, True when
/// every replica region is in sync with `source`; `None` when the tenant has no replica region.
pub fn replicated_condition(
    placed: &[String],
    home: &str,
    replicas: &BTreeMap<String, ReplicaState>,
) -> Option<Desired> {
    let targets: Vec<&String> = placed.iter().filter(|r| r.as_str() != home).collect();
    if targets.is_empty() {
        return None;
    }
    let errors: Vec<String> = targets
        .iter()
        .filter_map(|t| {
            replicas
                .get(t.as_str())
                .and_then(|r| r.error.as_ref().map(|e| format!("{t}: {e}")))
        })
        .collect();
    if !errors.is_empty() {
        return Some(Desired::fail(
            "Replicated",
            "ReplicationFailed",
            errors.join("; "),
        ));
    }
    let waiting: Vec<&str> = targets
        .iter()
        .filter(|t| replicas.get(t.as_str()).is_none_or(|r| !r.in_sync))
        .map(|t| t.as_str())
        .collect();
    if waiting.is_empty() {
        let names: Vec<&str> = targets.iter().map(|t| t.as_str()).collect();
        Some(Desired::ok(
            "Replicated",
            "InSync",
            format!(
                "objects under tenants/<name>/ replicated from {home} to {}",
                names.join(", ")
            ),
        ))
    } else {
        Some(Desired::unknown(
            "Replicated",
            "Replicating",
            format!("replicas catching up in {}", waiting.join(", ")),
        ))
    }
}

/// One placed region's entry in the Tenant status, from this round's outcome and the entry before it
/// (`lastSyncTime` and `observedGeneration` move only when the region is synced anew; the replication lag
/// shows only for replica regions, and the recorded one stands until this process measures it).
pub fn region_sync(
    before: &[RegionSync],
    o: &RegionOutcome,
    generation: Option<i64>,
    now: Time,
    lag: Option<u64>,
    replica: bool,
) -> RegionSync {
    let prev = before.iter().find(|b| b.region == o.region);
    // Until this process has measured replication, the last recorded lag stands.
    let lag = if replica {
        lag.or_else(|| prev.and_then(|p| p.replication_lag_seconds))
    } else {
        None
    };
    let unchanged = prev
        .is_some_and(|p| p.state == o.state && p.message == o.message && p.observed_generation == generation);
    let last_sync_time = match (o.state, prev) {
        (SyncState::Synced, Some(p)) if unchanged => p.last_sync_time,
        (SyncState::Synced, _) => Some(now),
        (_, Some(p)) => p.last_sync_time,
        (_, None) => None,
    };
    RegionSync {
        region: o.region.clone(),
        state: o.state,
        observed_generation: if o.state == SyncState::Synced {
            generation
        } else {
            prev.and_then(|p| p.observed_generation)
        },
        last_sync_time,
        replication_lag_seconds: lag,
        message: o.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::Excluded;

    fn t(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000 + s).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
    }

    fn out(region: &str, state: SyncState) -> RegionOutcome {
        RegionOutcome {
            region: region.into(),
            state,
            message: String::new(),
            reason: None,
        }
    }

    fn validation() -> Vec<Desired> {
        vec![Desired::ok(types::READY, "Ready", "placed")]
    }

    struct Fixture {
        placement: Placement,
        outcomes: Vec<RegionOutcome>,
        replicas: BTreeMap<String, ReplicaState>,
        verdicts: BTreeMap<String, Verdict>,
        before: Vec<RegionSync>,
        routed_to: Option<String>,
    }

    impl Fixture {
        fn tenant() -> Self {
            Self {
                placement: Placement {
                    placed: vec!["africa".into(), "europe".into()],
                    excluded: vec![Excluded {
                        region: "asia".into(),
                        message: "residency".into(),
                    }],
                },
                outcomes: vec![out("africa", SyncState::Synced), out("europe", SyncState::Synced)],
                replicas: BTreeMap::new(),
                verdicts: BTreeMap::new(),
                before: Vec::new(),
                routed_to: None,
            }
        }

        fn plan(&self, source: &str, recorded: Option<Desired>) -> Planned {
            plan(
                validation(),
                &Observed {
                    generation: Some(3),
                    now: t(100),
                    before: &self.before,
                    placement: &self.placement,
                    outcomes: &self.outcomes,
                    removing: &[(
                        "americas".into(),
                        "no longer placed; namespace being removed".into(),
                    )],
                    replicas: &self.replicas,
                    source,
                    recorded_replicated: recorded,
                    verdicts: &self.verdicts,
                    routed_to: self.routed_to.as_deref(),
                },
            )
        }
    }

    fn cond<'a>(p: &'a Planned, type_: &str) -> &'a Desired {
        p.conditions.iter().find(|c| c.type_ == type_).expect("condition")
    }

    #[test]
    fn ready_follows_placed_and_excluded_regions_say_why() {
        let mut f = Fixture::tenant();
        let p = f.plan("africa", None);
        assert_eq!(cond(&p, types::READY).status, ConditionStatus::True);
        let states: Vec<(&str, SyncState)> = p.regions.iter().map(|r| (r.region.as_str(), r.state)).collect();
        assert_eq!(
            states,
            [
                ("africa", SyncState::Synced),
                ("europe", SyncState::Synced),
                ("asia", SyncState::Excluded),
                ("americas", SyncState::Excluded)
            ]
        );
        f.outcomes[1] = RegionOutcome {
            reason: Some(crate::tenancy::NAMESPACE_CONFLICT),
            ..out("europe", SyncState::Error)
        };
        let p = f.plan("africa", None);
        assert_eq!(cond(&p, types::READY).status, ConditionStatus::False);
        assert_eq!(cond(&p, types::READY).reason, crate::tenancy::NAMESPACE_CONFLICT);
        f.outcomes[1] = out("europe", SyncState::Pending);
        assert_eq!(
            cond(&f.plan("africa", None), types::READY).status,
            ConditionStatus::Unknown
        );
    }

    #[test]
    fn replication_is_judged_against_the_source_and_lag_shows_only_on_replicas() {
        let mut f = Fixture::tenant();
        f.replicas.insert(
            "africa".into(),
            ReplicaState {
                in_sync: false,
                lag_seconds: 42,
                error: None,
            },
        );
        // europe is the source (africa failed over): africa is the replica, catching up.
        let p = f.plan("europe", None);
        let replicated = cond(&p, "Replicated");
        assert_eq!(replicated.status, ConditionStatus::Unknown);
        assert!(replicated.message.contains("africa"), "{}", replicated.message);
        let lag = |r: &str| {
            p.regions
                .iter()
                .find(|x| x.region == r)
                .and_then(|x| x.replication_lag_seconds)
        };
        assert_eq!(lag("africa"), Some(42));
        assert_eq!(lag("europe"), None, "the source has no lag");
    }

    #[test]
    fn a_recorded_replicated_condition_stands_until_measured() {
        let f = Fixture::tenant();
        let recorded = Desired::fail("Replicated", "ReplicationFailed", "europe: store down");
        let p = f.plan("africa", Some(recorded.clone()));
        assert_eq!(cond(&p, "Replicated"), &recorded);
    }

    #[test]
    fn a_restart_measuring_replicas_one_by_one_does_not_flap_replicated() {
        let mut f = Fixture::tenant();
        f.placement.placed.push("asia".into());
        let recorded = Desired::ok("Replicated", "InSync", "objects under tenants/<name>/ replicated");
        let in_sync = ReplicaState {
            in_sync: true,
            lag_seconds: 0,
            error: None,
        };
        // europe measured in sync, asia not yet: the recorded condition stands (no "catching up" write).
        f.replicas.insert("europe".into(), in_sync.clone());
        assert_eq!(
            cond(&f.plan("africa", Some(recorded.clone())), "Replicated"),
            &recorded
        );
        // Both measured: the measurement speaks.
        f.replicas.insert("asia".into(), in_sync);
        assert_eq!(
            cond(&f.plan("africa", Some(recorded.clone())), "Replicated").reason,
            "InSync"
        );
        // One measured out of sync is news at once, even before the other is measured.
        f.replicas.remove("asia");
        f.replicas.insert(
            "europe".into(),
            ReplicaState {
                in_sync: false,
                lag_seconds: 0,
                error: Some("store down".into()),
            },
        );
        assert_eq!(
            cond(&f.plan("africa", Some(recorded)), "Replicated").status,
            ConditionStatus::False
        );
    }

    #[test]
    fn the_active_region_follows_the_dns_decision_through_a_hold_down() {
        // africa is healthy again, but DNS still sends traffic to europe (hold-down): europe is active.
        let mut f = Fixture::tenant();
        f.routed_to = Some("europe".into());
        assert_eq!(f.plan("europe", None).active_region.as_deref(), Some("europe"));
        // A policy answering a region the tenant does not live in says nothing about the tenant.
        f.routed_to = Some("asia".into());
        assert_eq!(f.plan("africa", None).active_region.as_deref(), Some("africa"));
    }

    #[test]
    fn the_active_region_skips_down_regions_and_sync_times_move_only_on_a_new_sync() {
        let mut f = Fixture::tenant();
        f.verdicts.insert("africa".into(), Verdict::Down);
        f.before = vec![RegionSync {
            region: "europe".into(),
            state: SyncState::Synced,
            observed_generation: Some(3),
            last_sync_time: Some(t(5)),
            replication_lag_seconds: None,
            message: String::new(),
        }];
        let p = f.plan("africa", None);
        assert_eq!(p.active_region.as_deref(), Some("europe"));
        let europe = p.regions.iter().find(|r| r.region == "europe").expect("europe");
        assert_eq!(
            europe.last_sync_time,
            Some(t(5)),
            "unchanged: the recorded time stands"
        );
        let africa = p.regions.iter().find(|r| r.region == "africa").expect("africa");
        assert_eq!(africa.last_sync_time, Some(t(100)), "newly synced: now");
    }
}
