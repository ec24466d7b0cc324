//! DR drills, the pure part: which tenants a drill covers, whether it may start, how its result is judged
//! against the objectives, and the report it writes. No IO.

use std::collections::BTreeMap;
use std::time::Duration;

use azora_api::chaos::{DrDrillSpec, DrillResult, DrillRun};
use azora_api::region::Verdict;

use crate::duration::parse_duration;

/// Prefix of the sentinel objects a drill writes into a tenant's object storage.
pub fn sentinel_prefix(tenant: &str, run: &str) -> String {
    format!("tenants/{tenant}/azora-drill/{run}/")
}

/// The sentinel key written at `at` (milliseconds since the epoch, zero-padded so keys sort by time).
pub fn sentinel_key(tenant: &str, run: &str, at: jiff::Timestamp) -> String {
    format!("{}{:016}", sentinel_prefix(tenant, run), at.as_millisecond())
}

/// The time a sentinel key was written (from its name).
pub fn sentinel_time(key: &str) -> Option<jiff::Timestamp> {
    let ms: i64 = key.rsplit('/').next()?.parse().ok()?;
    jiff::Timestamp::from_millisecond(ms).ok()
}

/// The drill's tenants: the ones it names, else every tenant routed to the lost region.
pub fn drill_tenants(spec: &DrDrillSpec, routed: &BTreeMap<String, Option<String>>) -> Vec<String> {
    if !spec.tenants.is_empty() {
        return spec.tenants.clone();
    }
    routed
        .iter()
        .filter(|(_, r)| r.as_deref() == Some(spec.scenario.lose_region.as_str()))
        .map(|(t, _)| t.clone())
        .collect()
}

/// What a drill sees before it starts.
#[derive(Clone, Debug, Default)]
pub struct Before {
    /// Region verdicts.
    pub verdicts: BTreeMap<String, Verdict>,
    /// Activities under way that forbid a drill (failovers, experiments, other drills), described.
    pub busy: Vec<String>,
    /// The kill switch of chaos (drills obey it too).
    pub halted: Option<String>,
    /// Each drill tenant with the regions it may be placed in (`None`: the tenant does not exist).
    pub tenants: BTreeMap<String, Option<Vec<String>>>,
    /// Where each drill tenant is active now.
    pub routed: BTreeMap<String, Option<String>>,
    /// Whether some FailoverPolicy answers with the region to lose (else nothing would fail over).
    pub serving_lose: bool,
}

/// Why the drill may not start; `None` when it may.
pub fn start_refusal(spec: &DrDrillSpec, tenants: &[String], b: &Before) -> Option<String> {
    let lose = &spec.scenario.lose_region;
    if let Some(why) = &b.halted {
        return Some(format!("chaos and drills are halted: {why}"));
    }
    if let Some(what) = b.busy.first() {
        return Some(format!("{what} is under way"));
    }
    if let Some((r, _)) = b.verdicts.iter().find(|(_, v)| **v == Verdict::Down) {
        return Some(format!("region {r} is Down: a real outage is under way"));
    }
    match b.verdicts.get(lose) {
        Some(Verdict::Healthy) => {}
        Some(v) => return Some(format!("the region to lose, {lose}, is {v}")),
        None => return Some(format!("the region to lose, {lose}, has no verdict")),
    }
    if let Some(dr) = &spec.scenario.dr_region {
        match b.verdicts.get(dr) {
            Some(Verdict::Healthy) => {}
            Some(v) => return Some(format!("the DR region {dr} is {v}")),
            None => return Some(format!("the DR region {dr} has no verdict")),
        }
    }
    if tenants.is_empty() {
        return Some(format!("no tenant is active in {lose}: nothing to drill"));
    }
    if !b.serving_lose {
        return Some(format!(
            "no FailoverPolicy answers with {lose}: nothing would fail over"
        ));
    }
    for t in tenants {
        match b.tenants.get(t) {
            None | Some(None) => return Some(format!("tenant {t} does not exist")),
            Some(Some(placed)) => {
                let active = b.routed.get(t).cloned().flatten();
                if active.as_deref() != Some(lose.as_str()) {
                    return Some(format!(
                        "tenant {t} is not active in {lose} (active: {})",
                        active.as_deref().unwrap_or("none")
                    ));
                }
                if let Some(dr) = &spec.scenario.dr_region
                    && !placed.contains(dr)
                {
                    return Some(format!(
                        "the DR region {dr} is not allowed for tenant {t} (placed in {})",
                        placed.join(", ")
                    ));
                }
            }
        }
    }
    None
}

/// The drill's result from what the run measured (RTO and RPO in the run, restores in its tenants).
pub fn judge(spec: &DrDrillSpec, run: &DrillRun) -> (DrillResult, String) {
    let rto = parse_duration(&spec.objectives.rto).unwrap_or(Duration::from_secs(900));
    let rpo = parse_duration(&spec.objectives.rpo).unwrap_or(Duration::from_secs(300));
    let mut misses = Vec::new();
    match run.rto_ms {
        None => misses.push("the tenants never recovered in the DR region".to_string()),
        Some(ms) if u128::from(ms) > rto.as_millis() => misses.push(format!(
            "RTO {} over the objective {}",
            secs(ms),
            spec.objectives.rto
        )),
        Some(_) => {}
    }
    for t in &run.tenants {
        if !t.message.is_empty() {
            misses.push(format!("tenant {}: {}", t.name, t.message));
        }
    }
    match rpo_ms(run) {
        None => misses.push("no RPO could be measured".to_string()),
        Some(ms) if u128::from(ms) > rpo.as_millis() => misses.push(format!(
            "RPO {} over the objective {}",
            secs(ms),
            spec.objectives.rpo
        )),
        Some(_) => {}
    }
    if misses.is_empty() {
        (DrillResult::Passed, String::new())
    } else {
        (DrillResult::Failed, misses.join("; "))
    }
}

/// The run's RPO: the larger of the backup and sentinel RPOs measured.
pub fn rpo_ms(run: &DrillRun) -> Option<u64> {
    match (run.backup_rpo_ms, run.sentinel_rpo_ms) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The Markdown report of a finished run.
pub fn report_markdown(drill: &str, spec: &DrDrillSpec, run: &DrillRun) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), secs);
    let mut md = format!(
        "# DR drill {drill}: {}\n\n- run: `{}`\n- lost region: {}\n- DR region: {}\n- started: {}\n- ended: {}\n\n",
        run.result,
        run.id,
        run.lose_region.as_deref().unwrap_or("-"),
        run.dr_region.as_deref().unwrap_or("-"),
        run.start_time.0,
        run.end_time
            .as_ref()
            .map_or_else(|| "-".to_string(), |t| t.0.to_string()),
    );
    md.push_str("| measure | value | objective |\n|---|---|---|\n");
    md.push_str(&format!(
        "| RTO | {} | {} |\n",
        opt(run.rto_ms),
        spec.objectives.rto
    ));
    md.push_str(&format!(
        "| RPO | {} | {} |\n",
        opt(rpo_ms(run)),
        spec.objectives.rpo
    ));
    md.push_str(&format!("| RPO (backup) | {} | |\n", opt(run.backup_rpo_ms)));
    md.push_str(&format!("| RPO (sentinel) | {} | |\n", opt(run.sentinel_rpo_ms)));
    md.push_str(&format!("| failback | {} | |\n\n", opt(run.failback_ms)));
    if !run.message.is_empty() {
        md.push_str(&format!("**Why:** {}\n\n", run.message));
    }
    md.push_str("## Tenants\n\n| tenant | backup | restore verified | note |\n|---|---|---|---|\n");
    for t in &run.tenants {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            t.name,
            t.backup.as_deref().unwrap_or("-"),
            t.restore_verified.map_or("-", |v| if v { "yes" } else { "no" }),
            t.message
        ));
    }
    md.push_str("\n## Timeline\n\n");
    for e in &run.timeline {
        md.push_str(&format!("- {} **{}** {}\n", e.time.0, e.step, e.message));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use azora_api::chaos::DrillTenant;
    use azora_api::common::Time;

    fn spec() -> DrDrillSpec {
        serde_json::from_value(serde_json::json!({
            "scenario": {"loseRegion": "africa", "drRegion": "europe"},
            "objectives": {"rto": "60s", "rpo": "5m"}
        }))
        .unwrap()
    }

    fn run() -> DrillRun {
        serde_json::from_value(serde_json::json!({
            "id": "r", "result": "Running", "startTime": "2026-01-01T00:00:00Z",
            "rtoMs": 12_000, "backupRpoMs": 40_000, "sentinelRpoMs": 2_000
        }))
        .unwrap()
    }

    #[test]
    fn sentinel_keys_sort_by_time_and_read_back() {
        let at: jiff::Timestamp = "2026-01-01T00:00:01.5Z".parse().unwrap();
        let k = sentinel_key("acme", "r1", at);
        assert!(k.starts_with("tenants/acme/azora-drill/r1/"));
        assert_eq!(sentinel_time(&k), Some(at));
        let later = sentinel_key(
            "acme",
            "r1",
            at.checked_add(jiff::SignedDuration::from_secs(9)).unwrap(),
        );
        assert!(later > k);
    }

    #[test]
    fn tenants_default_to_those_routed_to_the_lost_region() {
        let routed: BTreeMap<String, Option<String>> = [
            ("a".to_string(), Some("africa".to_string())),
            ("b".to_string(), Some("europe".to_string())),
            ("c".to_string(), None),
        ]
        .into();
        assert_eq!(drill_tenants(&spec(), &routed), vec!["a".to_string()]);
        let mut s = spec();
        s.tenants = vec!["b".into()];
        assert_eq!(drill_tenants(&s, &routed), vec!["b".to_string()]);
    }

    #[test]
    fn drills_do_not_start_when_busy_down_or_not_allowed() {
        let healthy: BTreeMap<String, Verdict> = ["africa", "europe"]
            .iter()
            .map(|r| (r.to_string(), Verdict::Healthy))
            .collect();
        let ok = Before {
            verdicts: healthy.clone(),
            tenants: [(
                "a".to_string(),
                Some(vec!["africa".to_string(), "europe".to_string()]),
            )]
            .into(),
            routed: [("a".to_string(), Some("africa".to_string()))].into(),
            serving_lose: true,
            ..Before::default()
        };
        let t = vec!["a".to_string()];
        assert_eq!(start_refusal(&spec(), &t, &ok), None);
        let mut b = ok.clone();
        b.busy.push("ChaosExperiment x".into());
        assert!(
            start_refusal(&spec(), &t, &b)
                .unwrap()
                .contains("ChaosExperiment x")
        );
        let mut b = ok.clone();
        b.verdicts.insert("europe".into(), Verdict::Down);
        assert!(start_refusal(&spec(), &t, &b).unwrap().contains("europe is Down"));
        let mut b = ok.clone();
        b.tenants.insert("a".into(), Some(vec!["africa".into()]));
        assert!(
            start_refusal(&spec(), &t, &b)
                .unwrap()
                .contains("not allowed for tenant a")
        );
        assert!(
            start_refusal(&spec(), &[], &ok)
                .unwrap()
                .contains("nothing to drill")
        );
        let mut b = ok.clone();
        b.serving_lose = false;
        assert!(
            start_refusal(&spec(), &t, &b)
                .unwrap()
                .contains("nothing would fail over")
        );
        let mut b = ok.clone();
        b.routed.insert("a".into(), Some("europe".into()));
        assert!(
            start_refusal(&spec(), &t, &b)
                .unwrap()
                .contains("not active in africa")
        );
        assert!(
            start_refusal(&spec(), &["zz".to_string()], &ok)
                .unwrap()
                .contains("zz does not exist")
        );
    }

    #[test]
    fn a_drill_passes_within_objectives_and_fails_with_the_numbers() {
        let s = spec();
        assert_eq!(judge(&s, &run()).0, DrillResult::Passed);
        let mut slow = run();
        slow.rto_ms = Some(75_000);
        let (r, why) = judge(&s, &slow);
        assert_eq!(r, DrillResult::Failed);
        assert!(why.contains("RTO 75.0s over the objective 60s"), "{why}");
        let mut stale = run();
        stale.backup_rpo_ms = Some(400_000);
        assert!(judge(&s, &stale).1.contains("RPO 400.0s"));
        let mut broken = run();
        broken.tenants.push(DrillTenant {
            name: "a".into(),
            message: "no verified backup copy in europe".into(),
            ..DrillTenant::default()
        });
        let (r, why) = judge(&s, &broken);
        assert_eq!(r, DrillResult::Failed);
        assert!(why.contains("tenant a: no verified backup copy in europe"));
        let mut never = run();
        never.rto_ms = None;
        assert_eq!(judge(&s, &never).0, DrillResult::Failed);
        let mut done = run();
        done.result = DrillResult::Passed;
        done.end_time = Some(Time(jiff::Timestamp::now()));
        let md = report_markdown("monthly", &s, &done);
        assert!(
            md.contains("| RTO | 12.0s | 60s |") && md.contains("| RPO | 40.0s | 5m |"),
            "{md}"
        );
    }
}
