use super::*;

fn t(s: &str) -> Time {
    Time(s.parse().unwrap())
}

const NOW: &str = "2026-11-22T03:00:00Z";

fn region(name: &str, verdict: Verdict) -> Candidate {
    let location = match name {
        "africa" => (6.52, 3.38),
        "europe" => (50.11, 8.68),
        "asia" => (1.35, 103.82),
        _ => (-23.55, -46.63),
    };
    Candidate {
        name: name.into(),
        verdict,
        cordoned: false,
        allowed: true,
        location,
        weight: 1,
        recovered: None,
        failing_since: None,
        last_ok: None,
        last_failed: None,
        unjudged: false,
    }
}

fn four(verdicts: [Verdict; 4]) -> Vec<Candidate> {
    ["africa", "europe", "asia", "americas"]
        .iter()
        .zip(verdicts)
        .map(|(n, v)| region(n, v))
        .collect()
}

fn auto(hold_s: u64) -> FailbackRule {
    FailbackRule {
        mode: FailbackMode::Automatic,
        hold_down: Duration::from_secs(hold_s),
        approved: None,
        approved_time: None,
    }
}

fn current(region: &str) -> BTreeMap<String, Vec<String>> {
    [(DEFAULT_GEO.to_string(), vec![region.to_string()])].into()
}

fn run(
    strategy: Strategy,
    cands: &[Candidate],
    rule: &FailbackRule,
    cur: &BTreeMap<String, Vec<String>>,
) -> Plan {
    plan(&Input {
        strategy,
        candidates: cands,
        failback: rule,
        current: cur,
        now: t(NOW),
        vetting: None,
        manual: None,
    })
}

use Verdict::{Degraded, Down, Healthy, Unknown};

#[test]
fn all_healthy_answers_the_primary() {
    let p = run(
        Strategy::Failover,
        &four([Healthy; 4]),
        &auto(60),
        &BTreeMap::new(),
    );
    assert_eq!(p.active.as_deref(), Some("africa"));
    assert_eq!(p.change.unwrap().reason, Reason::Initial);
}

#[test]
fn an_outage_of_the_active_region_moves_dns_to_the_next_healthy_one() {
    let p = run(
        Strategy::Failover,
        &four([Down, Healthy, Healthy, Healthy]),
        &auto(60),
        &current("africa"),
    );
    assert_eq!(p.active.as_deref(), Some("europe"));
    let c = p.change.unwrap();
    assert_eq!(
        (c.from.as_deref(), c.to.as_deref(), c.reason),
        (Some("africa"), Some("europe"), Reason::RegionDown)
    );
}

#[test]
fn degraded_regions_keep_serving() {
    let p = run(
        Strategy::Failover,
        &four([Degraded, Healthy, Healthy, Healthy]),
        &auto(60),
        &current("africa"),
    );
    assert_eq!(p.active.as_deref(), Some("africa"));
    assert!(p.change.is_none());
}

#[test]
fn failback_waits_for_the_hold_down() {
    let mut cands = four([Healthy; 4]);
    cands[0].recovered = Some(t("2026-11-22T02:59:30Z"));
    let p = run(Strategy::Failover, &cands, &auto(60), &current("europe"));
    assert_eq!(p.active.as_deref(), Some("europe"), "30 s of health is not 60 s");
    assert!(p.change.is_none());
    assert_eq!(p.pending_failback.as_deref(), Some("africa"));
    cands[0].recovered = Some(t("2026-11-22T02:58:59Z"));
    let p = run(Strategy::Failover, &cands, &auto(60), &current("europe"));
    assert_eq!(p.active.as_deref(), Some("africa"));
    assert_eq!(p.change.unwrap().reason, Reason::Failback);
}

#[test]
fn manual_failback_needs_approval_of_that_region() {
    let mut cands = four([Healthy; 4]);
    cands[0].recovered = Some(t("2026-11-01T00:00:00Z"));
    let mut rule = FailbackRule {
        mode: FailbackMode::Manual,
        hold_down: Duration::ZERO,
        approved: None,
        approved_time: None,
    };
    assert_eq!(
        run(Strategy::Failover, &cands, &rule, &current("europe"))
            .active
            .as_deref(),
        Some("europe")
    );
    rule.approved = Some("asia".into());
    assert_eq!(
        run(Strategy::Failover, &cands, &rule, &current("europe"))
            .active
            .as_deref(),
        Some("europe")
    );
    rule.approved = Some("africa".into());
    assert_eq!(
        run(Strategy::Failover, &cands, &rule, &current("europe"))
            .active
            .as_deref(),
        Some("africa")
    );
}

#[test]
fn cordoned_regions_get_no_answers_even_when_healthy() {
    let mut cands = four([Healthy; 4]);
    cands[0].cordoned = true;
    let p = run(Strategy::Failover, &cands, &auto(60), &current("africa"));
    assert_eq!(p.active.as_deref(), Some("europe"));
    assert_eq!(p.change.unwrap().reason, Reason::Cordoned);
    let g = run(Strategy::Geo, &cands, &auto(60), &BTreeMap::new());
    assert!(!serving(&g.answers).contains("africa"), "{:?}", g.answers);
}

#[test]
fn failover_skips_regions_outside_tenant_residency() {
    let mut cands = four([Down, Healthy, Healthy, Healthy]);
    cands[1].allowed = false; // europe not allowed for this tenant
    let p = run(Strategy::Failover, &cands, &auto(60), &current("africa"));
    assert_eq!(p.active.as_deref(), Some("asia"));
}

#[test]
fn never_routes_to_a_disallowed_region_even_when_everything_else_is_down() {
    let mut cands = four([Down, Healthy, Down, Down]);
    cands[1].allowed = false;
    let p = run(Strategy::Failover, &cands, &auto(60), &current("africa"));
    assert!(!serving(&p.answers).contains("europe"), "{:?}", p.answers);
    assert_eq!(
        p.active.as_deref(),
        Some("africa"),
        "keeps the current answer rather than a forbidden one"
    );
}

#[test]
fn blind_probes_keep_current_answers() {
    let p = run(
        Strategy::Failover,
        &four([Unknown; 4]),
        &auto(60),
        &current("europe"),
    );
    assert_eq!(p.active.as_deref(), Some("europe"));
    assert!(p.change.is_none());
}

#[test]
fn a_recovered_region_is_used_during_hold_down_if_nothing_else_is_up() {
    let mut cands = four([Healthy, Down, Down, Down]);
    cands[0].recovered = Some(t("2026-11-22T02:59:50Z"));
    let p = run(Strategy::Failover, &cands, &auto(60), &current("europe"));
    assert_eq!(p.active.as_deref(), Some("africa"));
}

#[test]
fn geo_answers_each_continent_with_its_nearest_healthy_region() {
    let p = run(Strategy::Geo, &four([Healthy; 4]), &auto(60), &BTreeMap::new());
    assert_eq!(p.answers["Africa"], vec!["africa"]);
    assert_eq!(p.answers["Europe"], vec!["europe"]);
    assert_eq!(p.answers["Asia"], vec!["asia"]);
    assert_eq!(p.answers["SouthAmerica"], vec!["americas"]);
    assert_eq!(p.answers[DEFAULT_GEO], vec!["africa"]);
    let p = run(
        Strategy::Geo,
        &four([Healthy, Healthy, Down, Healthy]),
        &auto(60),
        &p.answers,
    );
    assert_ne!(p.answers["Asia"], vec!["asia"]);
    assert_eq!(
        p.answers["Europe"],
        vec!["europe"],
        "other geographies are untouched"
    );
}

#[test]
fn weighted_answers_every_usable_region_with_weight() {
    let mut cands = four([Healthy, Healthy, Down, Healthy]);
    cands[3].weight = 0;
    let p = run(Strategy::Weighted, &cands, &auto(60), &BTreeMap::new());
    assert_eq!(p.answers[DEFAULT_GEO], vec!["africa", "europe"]);
}

#[test]
fn unchanged_answers_are_no_change() {
    let cur = current("africa");
    assert!(
        run(Strategy::Failover, &four([Healthy; 4]), &auto(60), &cur)
            .change
            .is_none()
    );
}

#[test]
fn an_unjudged_serving_region_keeps_its_traffic_at_startup() {
    // Right after a (re)start europe has a verdict and africa not yet: no failover for lack of news.
    let p = run(
        Strategy::Failover,
        &four([Unknown, Healthy, Healthy, Healthy]),
        &auto(60),
        &current("africa"),
    );
    assert_eq!(p.active.as_deref(), Some("africa"));
    assert!(p.change.is_none());
    // An unjudged region is never chosen for new traffic: from asia, traffic goes to europe, not africa.
    let p = run(
        Strategy::Failover,
        &four([Unknown, Healthy, Healthy, Healthy]),
        &auto(60),
        &current("asia"),
    );
    assert_eq!(p.active.as_deref(), Some("europe"));
}

fn status(epoch: u64, verified: bool) -> FailoverPolicyStatus {
    FailoverPolicyStatus {
        epoch,
        last_failover: Some(azora_api::failover::FailoverRecord {
            epoch,
            from: Some("africa".into()),
            to: Some("europe".into()),
            reason: "RegionDown".into(),
            requested_by: None,
            detected_time: Some(t(NOW)),
            decided_time: Some(t(NOW)),
            dns_updated_time: None,
            verified_time: verified.then(|| t(NOW)),
            total_ms: None,
        }),
        ..FailoverPolicyStatus::default()
    }
}

#[test]
fn a_stale_cache_never_hides_our_own_decision() {
    // We decided epoch 4; the watch still shows epoch 3: plan from epoch 4, so nothing is decided twice.
    let ours = status(4, false);
    assert_eq!(freshest(status(3, true), Some(&ours)).epoch, 4);
    // Our verification write is newer than the cache's copy of the same epoch.
    let verified = status(4, true);
    assert!(
        freshest(status(4, false), Some(&verified))
            .last_failover
            .and_then(|r| r.verified_time)
            .is_some()
    );
    // The cache caught up or moved on (another writer): the cache wins.
    assert_eq!(freshest(status(5, false), Some(&ours)).epoch, 5);
    assert_eq!(freshest(status(4, true), Some(&verified)).epoch, 4);
    assert_eq!(freshest(status(2, false), None).epoch, 2);
}

#[test]
fn a_decision_planned_from_an_old_epoch_is_refused() {
    assert!(cas_allows(3, 3));
    // Our own earlier write already moved the epoch: a second decision from the stale view is refused.
    assert!(!cas_allows(4, 3));
    assert!(!cas_allows(2, 3));
}

fn at(secs_before_now: i64) -> Time {
    Time(t(NOW).0 - jiff::SignedDuration::from_secs(secs_before_now))
}

fn vetted_plan(cands: &[Candidate], current: &str, wait_s: u64) -> Plan {
    let rule = FailbackRule {
        mode: FailbackMode::Automatic,
        hold_down: Duration::from_secs(60),
        approved: None,
        approved_time: None,
    };
    let cur = BTreeMap::from([(DEFAULT_GEO.to_string(), vec![current.to_string()])]);
    plan(&Input {
        strategy: Strategy::Failover,
        candidates: cands,
        failback: &rule,
        current: &cur,
        now: t(NOW),
        vetting: Some(Vetting {
            confirm_wait: Duration::from_secs(wait_s),
        }),
        manual: None,
    })
}

/// africa failed 3 s ago; the others as given: (verdict, seconds ago of last ok, of last failure).
fn after_outage(others: [(Verdict, Option<i64>, Option<i64>); 3]) -> Vec<Candidate> {
    let mut africa = region("africa", Verdict::Down);
    africa.failing_since = Some(at(3));
    let mut out = vec![africa];
    for (name, (v, ok, failed)) in ["europe", "asia", "americas"].into_iter().zip(others) {
        let mut c = region(name, v);
        c.last_ok = ok.map(at);
        c.last_failed = failed.map(at);
        out.push(c);
    }
    out
}

#[test]
fn a_failover_goes_only_to_a_region_confirmed_after_the_failure() {
    // europe's last good probe predates the failure and it failed since; asia likewise; americas answered
    // after the failure: straight to americas, one failover.
    let c = after_outage([
        (Verdict::Healthy, Some(10), Some(1)),
        (Verdict::Healthy, Some(10), Some(2)),
        (Verdict::Healthy, Some(1), None),
    ]);
    let p = vetted_plan(&c, "africa", 5);
    assert_eq!(p.held, None);
    let change = p.change.expect("a failover");
    assert_eq!(change.to.as_deref(), Some("americas"));
    assert_eq!(change.reason, Reason::RegionDown);
}

#[test]
fn a_failover_waits_for_targets_to_be_probed_after_the_failure() {
    // europe not probed since the failure yet: wait (bounded), even though americas is confirmed.
    let c = after_outage([
        (Verdict::Healthy, Some(10), None),
        (Verdict::Healthy, Some(1), None),
        (Verdict::Healthy, Some(1), None),
    ]);
    let p = vetted_plan(&c, "africa", 5);
    assert_eq!(p.held, Some(Held::Confirming(vec!["europe".into()])));
    assert!(p.change.is_none());
    // Past the wait, an unconfirmed candidate counts as failed.
    let p = vetted_plan(&c, "africa", 2);
    assert_eq!(p.change.and_then(|c| c.to).as_deref(), Some("asia"));
    // Once europe answers after the failure, it gets the traffic (order kept).
    let c = after_outage([
        (Verdict::Healthy, Some(1), None),
        (Verdict::Healthy, Some(1), None),
        (Verdict::Healthy, Some(1), None),
    ]);
    assert_eq!(
        vetted_plan(&c, "africa", 5).change.and_then(|c| c.to).as_deref(),
        Some("europe")
    );
}

#[test]
fn when_every_region_fails_together_the_answers_hold() {
    let c = after_outage([
        (Verdict::Healthy, Some(10), Some(1)),
        (Verdict::Healthy, Some(10), Some(2)),
        (Verdict::Down, Some(10), Some(1)),
    ]);
    let p = vetted_plan(&c, "africa", 5);
    assert!(p.change.is_none(), "no failover to a region as dead as the rest");
    assert_eq!(p.answers[DEFAULT_GEO], ["africa"]);
    assert!(matches!(p.held, Some(Held::AllFailing { ref failed, .. }) if failed == &["africa".to_string()]));
}

#[test]
fn vetting_does_not_delay_failback_or_first_answers() {
    let c = four([
        Verdict::Healthy,
        Verdict::Healthy,
        Verdict::Healthy,
        Verdict::Healthy,
    ]);
    let p = vetted_plan(&c, "africa", 5);
    assert_eq!(p.held, None);
    assert!(p.change.is_none());
}

#[test]
fn a_weighted_policy_holds_when_every_region_fails_together() {
    // All four serve (weighted); africa fails, the others fail their probes since: hold, do not shrink.
    let mut c = after_outage([
        (Verdict::Healthy, Some(10), Some(1)),
        (Verdict::Healthy, Some(10), Some(2)),
        (Verdict::Healthy, Some(10), Some(1)),
    ]);
    c[0].weight = 1;
    let rule = FailbackRule {
        mode: FailbackMode::Automatic,
        hold_down: Duration::from_secs(60),
        approved: None,
        approved_time: None,
    };
    let all = vec![
        "africa".to_string(),
        "europe".into(),
        "asia".into(),
        "americas".into(),
    ];
    let cur = BTreeMap::from([(DEFAULT_GEO.to_string(), all.clone())]);
    let p = plan(&Input {
        strategy: Strategy::Weighted,
        candidates: &c,
        failback: &rule,
        current: &cur,
        now: t(NOW),
        vetting: Some(Vetting {
            confirm_wait: Duration::from_secs(5),
        }),
        manual: None,
    });
    assert!(matches!(p.held, Some(Held::AllFailing { .. })), "{:?}", p.held);
    assert_eq!(p.answers[DEFAULT_GEO], all);
}

#[test]
fn a_detection_ahead_of_the_leaders_clock_has_waited_nothing() {
    let mut c = after_outage([
        (Verdict::Healthy, Some(10), None),
        (Verdict::Healthy, Some(10), None),
        (Verdict::Healthy, Some(10), None),
    ]);
    // The observer's clock runs 30 s ahead: its failure starts "in the future".
    c[0].failing_since = Some(Time(t(NOW).0 + jiff::SignedDuration::from_secs(30)));
    let p = vetted_plan(&c, "africa", 5);
    assert!(matches!(p.held, Some(Held::Confirming(_))), "{:?}", p.held);
}

#[test]
fn after_a_takeover_a_failover_waits_for_the_new_terms_judgement_instead_of_calling_every_region_failing() {
    // africa (serving) recorded Down; the others' Healthy is only the record (unjudged, so Unknown), long
    // past the confirmation wait: held as Confirming (no FailoverHeld alarm), no traffic to a recorded
    // verdict.
    let mut c = after_outage([
        (Verdict::Unknown, Some(1), None),
        (Verdict::Unknown, Some(1), None),
        (Verdict::Unknown, Some(1), None),
    ]);
    for x in &mut c[1..] {
        x.unjudged = true;
    }
    let p = vetted_plan(&c, "africa", 0);
    assert!(p.change.is_none(), "{p:?}");
    assert!(
        matches!(&p.held, Some(Held::Confirming(r)) if r.len() == 3),
        "{:?}",
        p.held
    );
    // Judged in this term (and confirmed after the failure): the failover goes ahead.
    for x in &mut c[1..] {
        x.unjudged = false;
        x.verdict = Verdict::Healthy;
    }
    let p = vetted_plan(&c, "africa", 0);
    assert_eq!(p.change.expect("a failover").to.as_deref(), Some("europe"));
}

fn pinned(
    strategy: Strategy,
    cands: &[Candidate],
    rule: &FailbackRule,
    cur: &BTreeMap<String, Vec<String>>,
    m: &Manual,
) -> Plan {
    plan(&Input {
        strategy,
        candidates: cands,
        failback: rule,
        current: cur,
        now: t(NOW),
        vetting: Some(Vetting {
            confirm_wait: Duration::from_secs(5),
        }),
        manual: Some(m),
    })
}

fn manual(region: &str, at: &str) -> Manual {
    Manual {
        region: region.into(),
        requested: Some(t(at)),
    }
}

#[test]
fn a_manual_failover_answers_every_geo_with_its_region_and_says_so() {
    let cands = four([Healthy; 4]);
    let m = manual("asia", "2026-11-22T02:59:00Z");
    let p = pinned(Strategy::Failover, &cands, &auto(60), &current("africa"), &m);
    assert_eq!(p.active.as_deref(), Some("asia"));
    assert_eq!(p.manual, Some(ManualOutcome::Honored));
    let c = p.change.unwrap();
    assert_eq!((c.from.as_deref(), c.reason), (Some("africa"), Reason::Manual));
    // Geo: every continent gets the pinned region, not its nearest.
    let mut geo_cur = current("africa");
    geo_cur.insert("europe".into(), vec!["europe".into()]);
    let p = pinned(Strategy::Geo, &cands, &auto(60), &geo_cur, &m);
    assert!(
        p.answers.values().all(|v| v == &vec!["asia".to_string()]),
        "{:?}",
        p.answers
    );
    // Once in force, nothing changes.
    let p = pinned(Strategy::Failover, &cands, &auto(60), &current("asia"), &m);
    assert!(p.change.is_none());
    // Cleared: traffic returns to the policy's first region, as a failback.
    let p = run(Strategy::Failover, &cands, &auto(60), &current("asia"));
    assert_eq!(p.active.as_deref(), Some("africa"));
    assert_eq!(p.change.unwrap().reason, Reason::Failback);
}

#[test]
fn a_manual_failover_to_a_region_that_cannot_serve_changes_nothing_and_says_why() {
    let mut cands = four([Healthy, Healthy, Down, Healthy]);
    let m = manual("asia", "2026-11-22T02:59:00Z");
    let p = pinned(Strategy::Failover, &cands, &auto(60), &current("africa"), &m);
    assert_eq!(p.active.as_deref(), Some("africa"));
    assert!(p.change.is_none());
    assert!(
        matches!(&p.manual, Some(ManualOutcome::NotEligible(w)) if w.contains("asia is Down")),
        "{:?}",
        p.manual
    );
    cands[2].verdict = Healthy;
    cands[2].cordoned = true;
    let p = pinned(Strategy::Failover, &cands, &auto(60), &current("africa"), &m);
    assert!(matches!(&p.manual, Some(ManualOutcome::NotEligible(w)) if w.contains("cordoned")));
    let p = pinned(
        Strategy::Failover,
        &cands,
        &auto(60),
        &current("africa"),
        &manual("mars", NOW),
    );
    assert!(matches!(&p.manual, Some(ManualOutcome::NotEligible(w)) if w.contains("not a candidate")));
    assert_eq!(p.active.as_deref(), Some("africa"));
}

#[test]
fn the_pinned_region_failing_hands_traffic_to_the_policy_and_its_recovery_waits_for_the_hold_down() {
    // asia pinned and serving goes down: the policy's rules pick the next region.
    let mut cands = four([Healthy, Healthy, Down, Healthy]);
    cands[2].failing_since = Some(t("2026-11-22T02:59:50Z"));
    cands[0].last_ok = Some(t("2026-11-22T02:59:55Z"));
    cands[1].last_ok = Some(t("2026-11-22T02:59:55Z"));
    cands[3].last_ok = Some(t("2026-11-22T02:59:55Z"));
    let m = manual("asia", "2026-11-22T02:00:00Z");
    let p = pinned(Strategy::Failover, &cands, &auto(60), &current("asia"), &m);
    assert_eq!(p.active.as_deref(), Some("africa"));
    assert_eq!(p.change.unwrap().reason, Reason::RegionDown);
    // It recovered 30 s ago, after the request: the hold-down applies to the pin too.
    let mut cands = four([Healthy; 4]);
    cands[2].recovered = Some(t("2026-11-22T02:59:30Z"));
    let p = pinned(Strategy::Failover, &cands, &auto(60), &current("africa"), &m);
    assert_eq!(p.active.as_deref(), Some("africa"));
    assert!(
        matches!(&p.manual, Some(ManualOutcome::Waiting(w)) if w.contains("hold-down")),
        "{:?}",
        p.manual
    );
    // A request made after the recovery is itself the approval.
    let p = pinned(
        Strategy::Failover,
        &cands,
        &auto(60),
        &current("africa"),
        &manual("asia", NOW),
    );
    assert_eq!(p.active.as_deref(), Some("asia"));
}

#[test]
fn an_approval_skips_the_hold_down_but_only_for_the_recovery_it_approved() {
    let mut cands = four([Healthy; 4]);
    cands[0].recovered = Some(t("2026-11-22T02:59:30Z"));
    let mut rule = auto(600);
    rule.approved = Some("africa".into());
    rule.approved_time = Some(t("2026-11-22T02:59:40Z"));
    let p = run(Strategy::Failover, &cands, &rule, &current("europe"));
    assert_eq!(
        p.active.as_deref(),
        Some("africa"),
        "approved after the recovery: no hold-down"
    );
    // An approval from before the latest recovery approved an earlier one.
    rule.approved_time = Some(t("2026-11-22T02:00:00Z"));
    let p = run(Strategy::Failover, &cands, &rule, &current("europe"));
    assert_eq!(p.active.as_deref(), Some("europe"));
    rule.mode = FailbackMode::Manual;
    let p = run(Strategy::Failover, &cands, &rule, &current("europe"));
    assert_eq!(
        p.active.as_deref(),
        Some("europe"),
        "a stale approval does not open a manual failback"
    );
    rule.approved_time = Some(t(NOW));
    let p = run(Strategy::Failover, &cands, &rule, &current("europe"));
    assert_eq!(p.active.as_deref(), Some("africa"));
}

#[test]
fn a_takeover_never_moves_traffic_off_a_pinned_region_that_is_not_judged_yet() {
    // New term: every verdict is unjudged (Unknown); asia is pinned and answers everywhere.
    let mut cands = four([Unknown; 4]);
    for c in &mut cands {
        c.unjudged = true;
    }
    let m = manual("asia", "2026-11-22T02:00:00Z");
    let p = pinned(Strategy::Failover, &cands, &auto(60), &current("asia"), &m);
    assert!(p.change.is_none(), "{:?}", p.change);
    assert_eq!(p.manual, Some(ManualOutcome::Honored));
    // africa (preferred) is judged first: still no change, the pin holds.
    cands[0].unjudged = false;
    cands[0].verdict = Healthy;
    let p = pinned(Strategy::Failover, &cands, &auto(60), &current("asia"), &m);
    assert!(p.change.is_none(), "{:?}", p.change);
    assert_eq!(p.active.as_deref(), Some("asia"));
    // A pinned region not yet judged and not serving: waiting, nothing moves.
    let p = pinned(Strategy::Failover, &cands, &auto(60), &current("africa"), &m);
    assert!(p.change.is_none());
    assert!(
        matches!(&p.manual, Some(ManualOutcome::Waiting(w)) if w.contains("not judged")),
        "{:?}",
        p.manual
    );
}

#[test]
fn held_answers_are_never_reported_as_the_manual_failover() {
    // africa (serving) fails; europe is pinned and healthy by verdict but not probed since the failure.
    let mut cands = four([Down, Healthy, Healthy, Healthy]);
    cands[0].failing_since = Some(t("2026-11-22T02:59:59Z"));
    let m = manual("europe", "2026-11-22T02:00:00Z");
    let p = pinned(Strategy::Failover, &cands, &auto(60), &current("africa"), &m);
    assert!(matches!(p.held, Some(Held::Confirming(_))), "{:?}", p.held);
    assert!(
        matches!(&p.manual, Some(ManualOutcome::Waiting(_))),
        "{:?}",
        p.manual
    );
    // Confirmed: europe takes every answer, as the pin says.
    cands[1].last_ok = Some(t(NOW));
    cands[2].last_ok = Some(t(NOW));
    cands[3].last_ok = Some(t(NOW));
    let p = pinned(Strategy::Failover, &cands, &auto(60), &current("africa"), &m);
    assert_eq!(p.active.as_deref(), Some("europe"));
    assert_eq!(p.manual, Some(ManualOutcome::Honored));
}

#[test]
fn a_manual_failover_never_leaves_residency_and_weighted_answers_only_the_pin() {
    let mut cands = four([Healthy; 4]);
    cands[2].allowed = false;
    let p = pinned(
        Strategy::Failover,
        &cands,
        &auto(60),
        &current("africa"),
        &manual("asia", NOW),
    );
    assert_eq!(p.active.as_deref(), Some("africa"));
    assert!(matches!(&p.manual, Some(ManualOutcome::NotEligible(w)) if w.contains("not allowed")));
    let cands = four([Healthy; 4]);
    let mut cur = current("africa");
    cur.insert(
        DEFAULT_GEO.into(),
        vec!["africa".into(), "europe".into(), "asia".into()],
    );
    let p = pinned(
        Strategy::Weighted,
        &cands,
        &auto(60),
        &cur,
        &manual("europe", NOW),
    );
    assert_eq!(p.answers.get(DEFAULT_GEO), Some(&vec!["europe".to_string()]));
}

#[test]
fn a_request_without_a_time_is_its_own_approval_and_an_untimed_approval_skips_no_automatic_hold_down() {
    let mut cands = four([Healthy; 4]);
    cands[2].recovered = Some(t("2026-11-22T02:59:30Z"));
    let untimed = Manual {
        region: "asia".into(),
        requested: None,
    };
    let mut manual_mode = auto(60);
    manual_mode.mode = FailbackMode::Manual;
    let p = pinned(
        Strategy::Failover,
        &cands,
        &manual_mode,
        &current("africa"),
        &untimed,
    );
    assert_eq!(p.active.as_deref(), Some("asia"));
    // Automatic mode: an approval without a time does not skip the hold-down of a later recovery.
    let mut cands = four([Healthy; 4]);
    cands[0].recovered = Some(t("2026-11-22T02:59:30Z"));
    let mut rule = auto(600);
    rule.approved = Some("africa".into());
    let p = run(Strategy::Failover, &cands, &rule, &current("europe"));
    assert_eq!(p.active.as_deref(), Some("europe"));
}
