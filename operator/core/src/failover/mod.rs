//! The failover planner, pure: from region verdicts, the policy and what DNS answers now, decide what DNS
//! should answer per client geography, and whether that is a failover, a failback or no change.
//!
//! Rules, in order: a region serves only if it is Healthy or Degraded, not cordoned, and allowed for the
//! policy's tenant (residency and placement). A region that recently recovered from Down gets *new* traffic
//! only after the failback hold-down (Automatic) or on approval (Manual); a region already answering keeps
//! its traffic while it stays eligible. When nothing is eligible the current answers stay (never answer
//! with nothing because probes are blind); with no current answers, the first non-cordoned allowed region
//! serves. A manual failover answers every geography with its region alone while that region is eligible
//! (and, if it recovered after the request, past its hold-down or approved). No IO.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use azora_api::failover::{FailbackMode, FailoverPolicyStatus, Strategy};
use azora_api::region::Verdict;
use azora_api::{Continent, Time};
use strum::IntoEnumIterator;

use crate::geo::{continent_point, distance_km};

/// Answer key for clients whose continent is unknown.
pub const DEFAULT_GEO: &str = "default";

/// A candidate region as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Region name.
    pub name: String,
    /// Combined verdict.
    pub verdict: Verdict,
    /// Cordoned by spec.
    pub cordoned: bool,
    /// Allowed for the policy's tenant.
    pub allowed: bool,
    /// Location (latitude, longitude).
    pub location: (f64, f64),
    /// Weight for the Weighted strategy.
    pub weight: u32,
    /// When it last came back from Down.
    pub recovered: Option<Time>,
    /// Start of its current failure streak (when it is failing).
    pub failing_since: Option<Time>,
    /// Start of the latest successful probe round.
    pub last_ok: Option<Time>,
    /// Start of the latest failed probe round.
    pub last_failed: Option<Time>,
    /// Its serving verdict is only the recorded one, from before a takeover, not yet judged in this term:
    /// it takes no traffic yet (its `verdict` is `Unknown`), and a failover waits for its judgement
    /// (`Held::Confirming`) instead of calling every region failing.
    pub unjudged: bool,
}

/// Failback settings.
#[derive(Clone, Debug, PartialEq)]
pub struct FailbackRule {
    /// Automatic or Manual.
    pub mode: FailbackMode,
    /// Hold-down of continuous health.
    pub hold_down: Duration,
    /// Approved region: skips the hold-down (Automatic), the only way back (Manual).
    pub approved: Option<String>,
    /// When the approval was given (an approval older than the region's latest recovery does not count).
    pub approved_time: Option<Time>,
}

/// A manual failover as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Manual {
    /// The region every answer goes to.
    pub region: String,
    /// When it was asked.
    pub requested: Option<Time>,
}

/// Everything the planner needs.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// Strategy.
    pub strategy: Strategy,
    /// Candidates in order of preference.
    pub candidates: &'a [Candidate],
    /// Failback rule.
    pub failback: &'a FailbackRule,
    /// What DNS answers now, per geo.
    pub current: &'a BTreeMap<String, Vec<String>>,
    /// Now.
    pub now: Time,
    /// Confirm failover targets by probes made after the failure (`None`: take verdicts as they are).
    pub vetting: Option<Vetting>,
    /// A manual failover in force.
    pub manual: Option<&'a Manual>,
}

/// How failover targets are confirmed before traffic moves to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vetting {
    /// How long to wait for a probe of every candidate made after the failure was detected; after that, a
    /// candidate still without one counts as failed.
    pub confirm_wait: Duration,
}

/// Why the planner holds the current answers instead of moving traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// Waiting (at most the confirm wait) for probes of these candidates made after the failure.
    Confirming(Vec<String>),
    /// Every candidate failed its probes after the failure was detected: more likely the observers lost
    /// the world than every region at once. Answers stay (fail open).
    AllFailing {
        /// The regions whose failure started it.
        failed: Vec<String>,
        /// When it was detected.
        detected: Time,
    },
}

/// Why the answers change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
pub enum Reason {
    /// First answers of the policy.
    Initial,
    /// The serving region went down.
    RegionDown,
    /// The serving region was cordoned.
    Cordoned,
    /// The serving region is no longer allowed (residency or policy change).
    NotAllowed,
    /// A preferred region recovered and its hold-down passed (or it was approved).
    Failback,
    /// A manual failover (`spec.manual`) moved the answers.
    Manual,
    /// Another change (policy edit, weights).
    Rebalanced,
}

/// What became of a manual failover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManualOutcome {
    /// Every answer is its region.
    Honored,
    /// Its region cannot take the traffic now (not a candidate, not allowed, cordoned, down); the policy's
    /// own rules answer. The request stays in force: it is honoured once the region can serve. The text says
    /// why.
    NotEligible(String),
    /// Its region is waiting for something that passes by itself (its first judgement after a takeover, the
    /// hold-down after a recovery, the confirmation of failover targets); the answers stay as they are.
    Waiting(String),
}

/// The planner's output.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Regions answered per geo (`default` plus one per continent for Geo).
    pub answers: BTreeMap<String, Vec<String>>,
    /// The region answered by default.
    pub active: Option<String>,
    /// Set when answers differ from the current ones.
    pub change: Option<Change>,
    /// A preferred region waiting for its hold-down or approval.
    pub pending_failback: Option<String>,
    /// Set when the answers are held on purpose (targets not confirmed yet, or everything failing).
    pub held: Option<Held>,
    /// Set when a manual failover is requested.
    pub manual: Option<ManualOutcome>,
}

/// A change of answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Region the default answer moves away from.
    pub from: Option<String>,
    /// Region the default answer moves to.
    pub to: Option<String>,
    /// Why.
    pub reason: Reason,
}

fn eligible(c: &Candidate) -> bool {
    c.allowed && !c.cordoned && matches!(c.verdict, Verdict::Healthy | Verdict::Degraded)
}

/// A region already serving keeps its traffic while nothing says it failed: eligible, or not yet judged
/// (right after a start, before the first probe rounds are in).
fn keeps(c: &Candidate) -> bool {
    eligible(c) || (c.allowed && !c.cordoned && c.verdict == Verdict::Unknown)
}

/// An approval of this region that is not older than its latest recovery. Without a time it counts only in
/// `Manual` mode (as before approvals had times); in `Automatic` mode an approval skips the hold-down only for
/// the recovery it was given after.
fn approved(c: &Candidate, rule: &FailbackRule) -> bool {
    rule.approved.as_deref() == Some(c.name.as_str())
        && match (rule.approved_time, c.recovered) {
            // Whole seconds: the API server records writes to the second, recoveries to the millisecond.
            (Some(at), Some(recovered)) => at.0.as_second() >= recovered.0.as_second(),
            (Some(_), None) => true,
            (None, _) => rule.mode == FailbackMode::Manual,
        }
}

fn hold_passed(c: &Candidate, rule: &FailbackRule, now: Time) -> bool {
    let Some(recovered) = c.recovered else { return true };
    if approved(c, rule) {
        return true;
    }
    match rule.mode {
        FailbackMode::Automatic => {
            let since = now.0.duration_since(recovered.0).unsigned_abs();
            since >= rule.hold_down
        }
        FailbackMode::Manual => false,
    }
}

/// Whether a region answers in every geography now.
fn answers_everywhere(current: &BTreeMap<String, Vec<String>>, region: &str) -> bool {
    !current.is_empty() && current.values().all(|v| v.len() == 1 && v[0] == region)
}

/// Whether a manual failover's region may take every answer, or why not. A region that already takes every
/// answer keeps them while nothing says it failed (not yet judged after a takeover, observers blind), like
/// any serving region: a manual failover never flaps on a takeover.
fn manual_outcome(input: &Input<'_>, m: &Manual) -> ManualOutcome {
    let serving = input.current.values().flatten().any(|s| s == &m.region);
    let Some(c) = input.candidates.iter().find(|c| c.name == m.region) else {
        return ManualOutcome::NotEligible(format!(
            "{} is not a candidate region of this policy; the policy's own rules answer",
            m.region
        ));
    };
    let not_eligible = |w: &str| {
        ManualOutcome::NotEligible(format!(
            "{} {w}; the policy's own rules answer until it can serve",
            m.region
        ))
    };
    let waiting = |w: &str| ManualOutcome::Waiting(format!("{} {w}", m.region));
    if !c.allowed {
        not_eligible("is not allowed for the policy's tenant")
    } else if c.cordoned {
        not_eligible("is cordoned")
    } else if answers_everywhere(input.current, &m.region) && keeps(c) {
        ManualOutcome::Honored
    } else if c.unjudged || c.verdict == Verdict::Unknown {
        waiting("is not judged by this term's observers yet")
    } else if !eligible(c) {
        not_eligible(&format!("is {}", c.verdict))
    } else if !serving
        && c.recovered
            .is_some_and(|r| m.requested.is_some_and(|q| r.0.as_second() > q.0.as_second()))
        && !hold_passed(c, input.failback, input.now)
    {
        waiting("recovered after the request and waits for the failback hold-down or an approval")
    } else {
        ManualOutcome::Honored
    }
}

/// Picks the regions for one geo from candidates ranked for it.
fn pick<'c>(
    ranked: &[&'c Candidate],
    current: &[String],
    input: &Input<'_>,
    pending: &mut Option<String>,
) -> Vec<&'c Candidate> {
    let serving = |c: &Candidate| current.iter().any(|s| s == &c.name);
    let usable: Vec<&Candidate> = ranked
        .iter()
        .copied()
        .filter(|c| {
            (serving(c) && keeps(c))
                || (eligible(c) && (serving(c) || hold_passed(c, input.failback, input.now)))
        })
        .collect();
    // A preferred eligible region still held back is reported as a pending failback.
    if let (Some(first_eligible), Some(first_usable)) = (ranked.iter().find(|c| eligible(c)), usable.first())
        && first_eligible.name != first_usable.name
        && pending.is_none()
    {
        *pending = Some(first_eligible.name.clone());
    }
    let chosen: Vec<&Candidate> = match input.strategy {
        Strategy::Weighted => usable.iter().copied().filter(|c| c.weight > 0).collect(),
        Strategy::Failover | Strategy::Geo => usable.first().copied().into_iter().collect(),
    };
    if !chosen.is_empty() {
        return chosen;
    }
    // Nothing usable: held-back but eligible regions beat nothing at all.
    if let Some(c) = ranked.iter().find(|c| eligible(c)) {
        return vec![*c];
    }
    // Nothing eligible: keep what is answered now, or fail open to the first allowed, uncordoned region.
    let kept: Vec<&Candidate> = ranked
        .iter()
        .copied()
        .filter(|c| serving(c) && c.allowed && !c.cordoned)
        .collect();
    if !kept.is_empty() {
        return kept;
    }
    ranked
        .iter()
        .copied()
        .find(|c| c.allowed && !c.cordoned)
        .into_iter()
        .collect()
}

/// What the evidence says of a candidate since a failure was detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Since {
    /// A probe round started after the detection succeeded.
    Confirmed,
    /// No round after the detection succeeded, and one failed.
    Failed,
    /// No round after the detection yet.
    Unconfirmed,
}

fn since(c: &Candidate, detected: Time) -> Since {
    if c.last_ok.is_some_and(|t| t >= detected) {
        Since::Confirmed
    } else if c.last_failed.is_some_and(|t| t >= detected) {
        Since::Failed
    } else {
        Since::Unconfirmed
    }
}

/// Vets the candidates when traffic must move off failed regions: a candidate takes traffic only if a
/// probe made *after* the failure was detected succeeded. Returns the candidates with those that failed
/// since (or stayed unconfirmed past the wait) marked Down, or why the answers are held.
fn vet(input: &Input<'_>, vetting: Vetting) -> Result<Vec<Candidate>, Held> {
    let serving: BTreeSet<&str> = input.current.values().flatten().map(String::as_str).collect();
    let failed: Vec<&Candidate> = input
        .candidates
        .iter()
        .filter(|c| {
            serving.contains(c.name.as_str()) && c.allowed && !c.cordoned && c.verdict == Verdict::Down
        })
        .collect();
    let Some(detected) = failed.iter().filter_map(|c| c.failing_since).min() else {
        return Ok(input.candidates.to_vec());
    };
    // Clocks differ between observers and the leader: a detection "in the future" has waited nothing.
    let waited = Duration::try_from(input.now.0.duration_since(detected.0)).unwrap_or(Duration::ZERO);
    let is_failed = |c: &Candidate| failed.iter().any(|f| f.name == c.name);
    // Every region that would keep or take traffic must have answered since (with Geo and Weighted,
    // regions already serving too: a correlated failure must not shrink the answers one by one).
    let others = || input.candidates.iter().filter(|c| !is_failed(c) && eligible(c));
    let mut unconfirmed: Vec<String> = others()
        .filter(|c| since(c, detected) == Since::Unconfirmed)
        .map(|c| c.name.clone())
        .collect();
    // Regions still to be judged after a takeover are waited for, however long the failure is known.
    let unjudged: Vec<String> = input
        .candidates
        .iter()
        .filter(|c| c.unjudged && c.allowed && !c.cordoned && !is_failed(c))
        .map(|c| c.name.clone())
        .collect();
    if !unconfirmed.is_empty() && waited < vetting.confirm_wait || !unjudged.is_empty() {
        unconfirmed.extend(unjudged);
        return Err(Held::Confirming(unconfirmed));
    }
    let vetted: Vec<Candidate> = input
        .candidates
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if !is_failed(&c) && eligible(&c) && since(&c, detected) != Since::Confirmed {
                c.verdict = Verdict::Down;
            }
            c
        })
        .collect();
    let any_target = vetted.iter().any(|c| eligible(c) && !is_failed(c));
    if !any_target {
        return Err(Held::AllFailing {
            failed: failed.iter().map(|c| c.name.clone()).collect(),
            detected,
        });
    }
    Ok(vetted)
}

/// Plans the answers.
pub fn plan(input: &Input<'_>) -> Plan {
    let vetted;
    let input = match input.vetting {
        None => input,
        Some(v) => match vet(input, v) {
            Ok(c) => {
                vetted = Input {
                    candidates: &c,
                    ..input.clone()
                };
                return plan_vetted(&vetted);
            }
            Err(held) => {
                return Plan {
                    answers: input.current.clone(),
                    active: input.current.get(DEFAULT_GEO).and_then(|v| v.first().cloned()),
                    change: None,
                    pending_failback: None,
                    held: Some(held),
                    // Held answers are not the manual failover's, unless they already were.
                    manual: input.manual.map(|m| match manual_outcome(input, m) {
                        ManualOutcome::Honored if !answers_everywhere(input.current, &m.region) => {
                            ManualOutcome::Waiting(format!(
                                "{} waits: the answers are held while failover targets are confirmed",
                                m.region
                            ))
                        }
                        o => o,
                    }),
                };
            }
        },
    };
    plan_vetted(input)
}

fn plan_vetted(input: &Input<'_>) -> Plan {
    let preference: Vec<&Candidate> = input.candidates.iter().collect();
    let mut answers = BTreeMap::new();
    let mut pending = None;
    let empty = Vec::new();
    let cur = |geo: &str| input.current.get(geo).unwrap_or(&empty);
    let names = |v: Vec<&Candidate>| v.into_iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let manual = input.manual.map(|m| (m, manual_outcome(input, m)));
    let pinned = manual
        .as_ref()
        .filter(|(_, o)| *o == ManualOutcome::Honored)
        .map(|(m, _)| m.region.clone());
    answers.insert(
        DEFAULT_GEO.to_string(),
        match &pinned {
            Some(r) => vec![r.clone()],
            None => names(pick(&preference, cur(DEFAULT_GEO), input, &mut pending)),
        },
    );
    if let Some(r) = &pinned {
        if input.strategy == Strategy::Geo {
            for continent in Continent::iter() {
                answers.insert(continent.to_string(), vec![r.clone()]);
            }
        }
    } else if input.strategy == Strategy::Geo {
        for continent in Continent::iter() {
            let point = continent_point(continent);
            let mut ranked = preference.clone();
            ranked.sort_by(|a, b| distance_km(point, a.location).total_cmp(&distance_km(point, b.location)));
            let key = continent.to_string();
            let mut ignore = None;
            answers.insert(key.clone(), names(pick(&ranked, cur(&key), input, &mut ignore)));
        }
    }
    let active = answers.get(DEFAULT_GEO).and_then(|v| v.first().cloned());
    let change = if &answers == input.current {
        None
    } else {
        let from = input.current.get(DEFAULT_GEO).and_then(|v| v.first().cloned());
        let reason = match from
            .as_deref()
            .and_then(|f| input.candidates.iter().find(|c| c.name == f))
        {
            None if from.is_none() => Reason::Initial,
            None => Reason::NotAllowed,
            Some(c) if c.cordoned => Reason::Cordoned,
            Some(c) if !c.allowed => Reason::NotAllowed,
            Some(c) if !keeps(c) => Reason::RegionDown,
            Some(_) if pinned.is_some() => Reason::Manual,
            Some(_) if from != active => Reason::Failback,
            Some(_) => Reason::Rebalanced,
        };
        Some(Change {
            from,
            to: active.clone(),
            reason,
        })
    };
    Plan {
        answers,
        active,
        change,
        pending_failback: pending,
        held: None,
        manual: manual.map(|(_, o)| o),
    }
}

/// Regions answered anywhere in a plan.
pub fn serving(answers: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    answers.values().flatten().cloned().collect()
}

/// The status to plan from: the cached one, unless this writer knows a newer one (its own write that the
/// watch has not delivered yet, or a fresh read). Newer means a higher epoch, or the same epoch further
/// along (verified where the cache is not). Planning from a stale cache would decide the same change twice.
pub fn freshest(cached: FailoverPolicyStatus, known: Option<&FailoverPolicyStatus>) -> FailoverPolicyStatus {
    let Some(known) = known else {
        return cached;
    };
    let verified = |s: &FailoverPolicyStatus| {
        s.last_failover
            .as_ref()
            .is_some_and(|r| r.verified_time.is_some())
    };
    if known.epoch > cached.epoch || known.epoch == cached.epoch && verified(known) && !verified(&cached) {
        known.clone()
    } else {
        cached
    }
}

/// The compare-and-swap rule of failover status writes: the stored epoch must be exactly the one the
/// write was planned from.
pub fn cas_allows(found: u64, expected: u64) -> bool {
    found == expected
}

#[cfg(test)]
mod tests;
