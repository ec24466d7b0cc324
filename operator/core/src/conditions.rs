//! Condition bookkeeping shaped like `metav1.Condition`: `lastTransitionTime` moves only when the status
//! changes, comparisons ignore timestamps so unchanged status is never rewritten. Pure, no IO.

use azora_api::{Condition, ConditionStatus, Time};

/// Condition types used across kinds.
pub mod types {
    /// The standard readiness condition GitOps health checks read.
    pub const READY: &str = "Ready";
    /// The spec passed every check the schema cannot express.
    pub const SPEC_VALID: &str = "SpecValid";
    /// Every referenced object exists.
    pub const REFERENCES_RESOLVED: &str = "ReferencesResolved";
}

/// A condition to set, before timestamps are decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Condition type.
    pub type_: &'static str,
    /// Status.
    pub status: ConditionStatus,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Desired {
    /// A `True` condition.
    pub fn ok(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: ConditionStatus::True,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A `False` condition.
    pub fn fail(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: ConditionStatus::False,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// An `Unknown` condition.
    pub fn unknown(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: ConditionStatus::Unknown,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Merges desired conditions into the current ones. A condition keeps its `lastTransitionTime` unless its
/// status changes. Conditions of other types are kept untouched.
pub fn merge(
    current: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = current.to_vec();
    for d in desired {
        let existing = out.iter_mut().find(|c| c.type_ == d.type_);
        match existing {
            Some(c) => {
                if c.status != d.status {
                    c.last_transition_time = now;
                }
                c.status = d.status;
                c.reason.clone_from(&d.reason);
                c.message.clone_from(&d.message);
                c.observed_generation = generation;
            }
            None => out.push(Condition {
                type_: d.type_.to_string(),
                status: d.status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time: now,
            }),
        }
    }
    out
}

/// Whether two condition lists say the same thing, ignoring `lastTransitionTime` and order.
pub fn same_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter().any(|y| {
                x.type_ == y.type_
                    && x.status == y.status
                    && x.reason == y.reason
                    && x.message == y.message
                    && x.observed_generation == y.observed_generation
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = merge(
            &[],
            &[Desired::ok("Ready", "Valid", "ok")],
            Some(1),
            t("2026-01-01T00:00:00Z"),
        );
        let again = merge(
            &first,
            &[Desired::ok("Ready", "Valid", "still ok")],
            Some(2),
            t("2026-01-01T00:05:00Z"),
        );
        assert_eq!(again[0].last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(again[0].observed_generation, Some(2));
        assert_eq!(again[0].message, "still ok");
        let flipped = merge(
            &again,
            &[Desired::fail("Ready", "Bad", "no")],
            Some(3),
            t("2026-01-01T00:09:00Z"),
        );
        assert_eq!(flipped[0].last_transition_time, t("2026-01-01T00:09:00Z"));
        assert_eq!(flipped[0].status, ConditionStatus::False);
    }

    #[test]
    fn other_condition_types_are_kept() {
        let a = merge(
            &[],
            &[Desired::ok("Probed", "Probing", "")],
            Some(1),
            t("2026-01-01T00:00:00Z"),
        );
        let b = merge(
            &a,
            &[Desired::ok("Ready", "Valid", "")],
            Some(1),
            t("2026-01-01T00:01:00Z"),
        );
        assert_eq!(b.len(), 2);
        assert!(b.iter().any(|c| c.type_ == "Probed"));
    }

    #[test]
    fn comparison_ignores_timestamps_but_not_generation() {
        let a = merge(
            &[],
            &[Desired::ok("Ready", "Valid", "")],
            Some(1),
            t("2026-01-01T00:00:00Z"),
        );
        let b = merge(
            &[],
            &[Desired::ok("Ready", "Valid", "")],
            Some(1),
            t("2026-02-01T00:00:00Z"),
        );
        assert!(same_ignoring_time(&a, &b));
        let c = merge(
            &[],
            &[Desired::ok("Ready", "Valid", "")],
            Some(2),
            t("2026-02-01T00:00:00Z"),
        );
        assert!(!same_ignoring_time(&a, &c));
    }
}
