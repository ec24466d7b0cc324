//! Health verdicts, pure: each observer turns probe rounds into its own up/down view with hysteresis
//! (`failureThreshold` bad rounds to go down, `successThreshold` good rounds to come back), and a Region's
//! verdict combines fresh observer views by quorum — a region is `Down` only when a quorum of fresh
//! observers agrees, so one observer cut off from a healthy region makes it `Degraded`, never `Down`.
//! Stale views (an observer that stopped reporting) are ignored. No IO.

use std::time::Duration;

use azora_api::region::Verdict;

/// Hysteresis thresholds of one region's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive failed rounds before an observer calls the region down.
    pub failure: u32,
    /// Consecutive good rounds before a down region counts as up again.
    pub success: u32,
}

/// One observer's running view of one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObserverView {
    /// `Healthy`, `Down` or `Unknown` (no verdict yet).
    pub verdict: Verdict,
    /// Consecutive failed rounds.
    pub consecutive_failures: u32,
    /// Consecutive good rounds.
    pub consecutive_successes: u32,
}

impl Default for ObserverView {
    fn default() -> Self {
        Self {
            verdict: Verdict::Unknown,
            consecutive_failures: 0,
            consecutive_successes: 0,
        }
    }
}

/// Folds one probe round (all endpoints answered, or not) into the observer's view.
pub fn observe_round(view: ObserverView, round_ok: bool, t: Thresholds) -> ObserverView {
    let mut v = view;
    if round_ok {
        v.consecutive_successes = v.consecutive_successes.saturating_add(1);
        v.consecutive_failures = 0;
        let needed = if v.verdict == Verdict::Down {
            t.success.max(1)
        } else {
            1
        };
        if v.consecutive_successes >= needed {
            v.verdict = Verdict::Healthy;
        }
    } else {
        v.consecutive_failures = v.consecutive_failures.saturating_add(1);
        v.consecutive_successes = 0;
        if v.consecutive_failures >= t.failure.max(1) {
            v.verdict = Verdict::Down;
        }
    }
    v
}

/// Whether a failed round should be confirmed by a quick re-check before the next interval: the view is
/// failing but not yet down, so confirming fast shortens detection without lowering the threshold.
pub fn needs_quick_recheck(view: &ObserverView, t: Thresholds) -> bool {
    view.consecutive_failures > 0 && view.verdict != Verdict::Down && view.consecutive_failures < t.failure
}

/// One observer's reported view and how old it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Observer name.
    pub observer: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Time since the report was made.
    pub age: Duration,
}

/// The combined verdict, with the numbers behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Combined {
    /// The region's verdict.
    pub verdict: Verdict,
    /// Fresh observers that see it down.
    pub down: usize,
    /// Fresh observers counted.
    pub fresh: usize,
    /// Observers needed to declare it down.
    pub quorum: usize,
}

/// Combines observer reports into the region's verdict. `quorum` defaults to a majority of fresh observers.
pub fn combine(reports: &[Report], stale_after: Duration, quorum: Option<u32>, cordoned: bool) -> Combined {
    // Observers alive but without a verdict on this region yet (Unknown) count toward the quorum, so a lone
    // early vote cannot meet a quorum of one right after a start.
    let fresh: Vec<&Report> = reports.iter().filter(|r| r.age <= stale_after).collect();
    let q = quorum.map_or(fresh.len() / 2 + 1, |q| q.max(1) as usize);
    let down = fresh.iter().filter(|r| r.verdict == Verdict::Down).count();
    let judged = fresh.iter().filter(|r| r.verdict != Verdict::Unknown).count();
    let verdict = if cordoned {
        Verdict::Cordoned
    } else if judged == 0 {
        Verdict::Unknown
    } else if down >= q {
        Verdict::Down
    } else if down > 0 {
        Verdict::Degraded
    } else {
        Verdict::Healthy
    };
    Combined {
        verdict,
        down,
        fresh: fresh.len(),
        quorum: q,
    }
}

/// Where in each interval an observer probes a region: the region's own offset (a stable hash, so many
/// regions do not probe in lockstep) plus the observer's share of the interval (`index` of `observers`), so
/// the observers of a region probe it evenly spread — with two observers and 5 s, some observer probes every
/// 2.5 s and an outage is seen by the first of them sooner.
pub fn round_offset(region: &str, index: usize, observers: usize, interval: Duration) -> Duration {
    let ms = interval.as_millis().max(1) as u64;
    // FNV-1a: stable across processes and versions.
    let hash = region.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let share = ms * index as u64 / observers.max(1) as u64;
    Duration::from_millis((hash % ms + share) % ms)
}

/// Time from `now` (since the Unix epoch) to the next start at `offset` within the interval, aligned to
/// the wall clock so observers on different machines share the schedule.
pub fn until_next_round(now: Duration, interval: Duration, offset: Duration) -> Duration {
    let ms = interval.as_millis().max(1);
    let now_ms = now.as_millis();
    let off = offset.as_millis() % ms;
    let into = (now_ms + ms - off) % ms;
    let wait = if into == 0 { 0 } else { ms - into };
    Duration::from_millis(wait as u64)
}

/// How long a round may go unanswered before it counts as suspect: a quarter of the timeout, within
/// 200 ms and 1 s (healthy endpoints answer in milliseconds).
pub fn suspect_after(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(1))
}

/// When each report (an observer Lease) was last seen to change, by the judge's own clock. A report
/// counts as fresh only once it has been seen to change: one that was already there when the judge
/// started (a dead observer's last words) never does until it changes again.
#[derive(Clone, Debug, Default)]
pub struct Freshness {
    seen: std::collections::HashMap<String, Seen>,
}

#[derive(Clone, Debug)]
struct Seen {
    version: String,
    first_seen: std::time::Instant,
    changed: Option<std::time::Instant>,
}

impl Freshness {
    /// Records the version of `name` seen at `now`.
    pub fn observe(&mut self, name: &str, version: &str, now: std::time::Instant) {
        match self.seen.get_mut(name) {
            Some(s) if s.version == version => {}
            Some(s) => {
                s.version = version.to_string();
                s.changed = Some(now);
            }
            None => {
                self.seen.insert(
                    name.to_string(),
                    Seen {
                        version: version.to_string(),
                        first_seen: now,
                        changed: None,
                    },
                );
            }
        }
    }

    /// Age of the report: time since it was last seen to change; `None` if never seen to change.
    pub fn age(&self, name: &str, now: std::time::Instant) -> Option<Duration> {
        let s = self.seen.get(name)?;
        s.changed.map(|c| now.saturating_duration_since(c))
    }

    /// How long the report has gone without a change (since first seen, if it never changed).
    pub fn unchanged_for(&self, name: &str, now: std::time::Instant) -> Option<Duration> {
        let s = self.seen.get(name)?;
        Some(now.saturating_duration_since(s.changed.unwrap_or(s.first_seen)))
    }

    /// Forgets reports that are gone.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.seen.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        failure: 2,
        success: 3,
    };

    fn run(rounds: &[bool]) -> ObserverView {
        rounds
            .iter()
            .fold(ObserverView::default(), |v, ok| observe_round(v, *ok, T))
    }

    fn report(observer: &str, verdict: Verdict, age_s: u64) -> Report {
        Report {
            observer: observer.into(),
            verdict,
            age: Duration::from_secs(age_s),
        }
    }

    #[test]
    fn observers_of_a_region_are_spread_evenly_over_the_interval() {
        let i = Duration::from_secs(5);
        let a = round_offset("africa", 0, 2, i);
        let b = round_offset("africa", 1, 2, i);
        let gap = (b.as_millis() + 5000 - a.as_millis()) % 5000;
        assert_eq!(gap, 2500);
        assert!(a < i && b < i);
        // Different regions get different offsets.
        assert_ne!(round_offset("africa", 0, 2, i), round_offset("europe", 0, 2, i));
        // Stable: the same inputs give the same offset.
        assert_eq!(round_offset("asia", 3, 4, i), round_offset("asia", 3, 4, i));
    }

    #[test]
    fn rounds_are_aligned_to_the_wall_clock() {
        let i = Duration::from_secs(5);
        let off = Duration::from_millis(1200);
        assert_eq!(
            until_next_round(Duration::from_millis(10_000), i, off),
            Duration::from_millis(1200)
        );
        assert_eq!(
            until_next_round(Duration::from_millis(11_200), i, off),
            Duration::ZERO
        );
        assert_eq!(
            until_next_round(Duration::from_millis(11_300), i, off),
            Duration::from_millis(4900)
        );
        assert_eq!(suspect_after(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(
            suspect_after(Duration::from_millis(100)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn a_report_counts_only_after_it_was_seen_to_change() {
        let t0 = std::time::Instant::now();
        let mut f = Freshness::default();
        f.observe("dead", "7", t0);
        f.observe("alive", "3", t0);
        // Already there when the judge started: not fresh, however new it looks.
        assert_eq!(f.age("dead", t0), None);
        let t1 = t0 + Duration::from_secs(5);
        f.observe("dead", "7", t1);
        f.observe("alive", "4", t1);
        assert_eq!(f.age("dead", t1), None);
        assert_eq!(
            f.age("alive", t1 + Duration::from_secs(2)),
            Some(Duration::from_secs(2))
        );
        // Garbage collection looks at how long nothing changed.
        assert_eq!(f.unchanged_for("dead", t1), Some(Duration::from_secs(5)));
        assert_eq!(f.unchanged_for("alive", t1), Some(Duration::ZERO));
        f.retain(|n| n == "alive");
        assert_eq!(f.unchanged_for("dead", t1), None);
    }

    #[test]
    fn first_good_round_makes_a_new_region_healthy() {
        assert_eq!(run(&[true]).verdict, Verdict::Healthy);
    }

    #[test]
    fn one_failed_round_is_not_an_outage() {
        let v = run(&[true, true, false]);
        assert_eq!(v.verdict, Verdict::Healthy);
        assert!(needs_quick_recheck(&v, T), "a first failure is confirmed quickly");
    }

    #[test]
    fn failure_threshold_consecutive_failures_mean_down() {
        let v = run(&[true, false, false]);
        assert_eq!(v.verdict, Verdict::Down);
        assert!(!needs_quick_recheck(&v, T));
    }

    #[test]
    fn interleaved_failures_never_reach_down() {
        assert_eq!(
            run(&[true, false, true, false, true, false]).verdict,
            Verdict::Healthy
        );
    }

    #[test]
    fn a_down_region_needs_success_threshold_good_rounds_to_come_back() {
        let down = run(&[true, false, false]);
        let one = observe_round(down, true, T);
        let two = observe_round(one, true, T);
        assert_eq!((one.verdict, two.verdict), (Verdict::Down, Verdict::Down));
        assert_eq!(observe_round(two, true, T).verdict, Verdict::Healthy);
    }

    #[test]
    fn a_region_flapping_every_round_stays_down_once_down() {
        let mut v = run(&[true, false, false]);
        for ok in [true, false, true, true, false, true, true, false] {
            v = observe_round(v, ok, T);
            assert_eq!(v.verdict, Verdict::Down, "flapping must not flip the verdict");
        }
    }

    #[test]
    fn one_observer_cut_off_from_a_healthy_region_only_degrades_it() {
        let reports = [
            report("replica-a", Verdict::Down, 1),
            report("replica-b", Verdict::Healthy, 1),
            report("agent-asia", Verdict::Healthy, 2),
        ];
        let c = combine(&reports, Duration::from_secs(15), None, false);
        assert_eq!((c.verdict, c.down, c.quorum), (Verdict::Degraded, 1, 2));
    }

    #[test]
    fn a_quorum_of_fresh_observers_declares_the_region_down() {
        let reports = [
            report("replica-a", Verdict::Down, 1),
            report("replica-b", Verdict::Down, 3),
            report("agent-asia", Verdict::Healthy, 2),
        ];
        assert_eq!(
            combine(&reports, Duration::from_secs(15), None, false).verdict,
            Verdict::Down
        );
    }

    #[test]
    fn stale_reports_do_not_count() {
        let reports = [
            report("replica-a", Verdict::Down, 1),
            report("replica-b", Verdict::Down, 60),
        ];
        let c = combine(&reports, Duration::from_secs(15), Some(2), false);
        assert_eq!(
            (c.verdict, c.fresh),
            (Verdict::Degraded, 1),
            "one fresh vote cannot meet a quorum of 2"
        );
        let none = combine(
            &[report("a", Verdict::Healthy, 60)],
            Duration::from_secs(15),
            None,
            false,
        );
        assert_eq!(none.verdict, Verdict::Unknown);
    }

    #[test]
    fn a_single_observer_is_its_own_majority() {
        let c = combine(
            &[report("only", Verdict::Down, 0)],
            Duration::from_secs(15),
            None,
            false,
        );
        assert_eq!(c.verdict, Verdict::Down);
    }

    #[test]
    fn cordoned_wins_over_any_probe_result() {
        let c = combine(
            &[report("a", Verdict::Down, 0)],
            Duration::from_secs(15),
            None,
            true,
        );
        assert_eq!(c.verdict, Verdict::Cordoned);
    }

    #[test]
    fn observers_without_a_verdict_yet_count_toward_the_quorum() {
        let reports = [report("a", Verdict::Unknown, 0), report("b", Verdict::Healthy, 0)];
        let c = combine(&reports, Duration::from_secs(15), None, false);
        assert_eq!((c.verdict, c.fresh), (Verdict::Healthy, 2));
        // Right after a start: the cut-off agent votes Down before the replica has judged the region.
        let early = [
            report("agent", Verdict::Down, 0),
            report("replica", Verdict::Unknown, 0),
        ];
        let c = combine(&early, Duration::from_secs(15), None, false);
        assert_eq!(
            (c.verdict, c.quorum),
            (Verdict::Degraded, 2),
            "one early vote is not a quorum"
        );
        let none = [report("a", Verdict::Unknown, 0)];
        assert_eq!(
            combine(&none, Duration::from_secs(15), None, false).verdict,
            Verdict::Unknown
        );
    }
}
