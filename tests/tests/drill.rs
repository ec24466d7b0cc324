//! DR drills end to end: four regions, each a real API server and a real S3 server; two tenants placed in
//! africa with europe as their failover region; real sealed backups copied to europe; the operator binary
//! with its embedded DNS. A drill drains africa, measures RTO and RPO, restores from europe's own copies
//! into scratch namespaces, fails back and reports into europe's bucket; the same drill with europe's
//! copies gone fails, with the reason.

use std::time::Duration;

use azora_tests::drill;
use azora_tests::scenario::ar;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

fn steps(run: &Value) -> Vec<String> {
    run["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|e| e["step"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[tokio::test]
async fn a_dr_drill_drains_africa_measures_rto_and_rpo_restores_from_europe_fails_back_and_can_fail()
-> anyhow::Result<()> {
    let fleet = drill::start().await?;
    let hub = fleet.hub().await?;
    drill::create_drill(&hub, "monthly").await?;
    drill::run_now(&hub, "monthly", "first").await?;
    let st = drill::wait_run(&hub, "monthly", &Value::Null, Duration::from_secs(600)).await?;
    let run = &st["lastRun"];
    if run["result"] != "Passed" {
        // The failover path's own record and log lines, not only the log's tail (mostly backups).
        let policy = drill::object(&hub, "FailoverPolicy", "failoverpolicies", "platform").await;
        let log = fleet.log();
        let failover: Vec<&str> = log
            .lines()
            .filter(|l| {
                ["failover", "drill", "drain", "leader", "DNS"]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .collect();
        panic!(
            "{run:#}\npolicy: {:#}\nfailover and drill log:\n{}\nlog tail:\n{}",
            policy["status"],
            tail(&failover.join("\n"), 80),
            tail(&log, 30)
        );
    }
    let rto_ms = run["rtoMs"].as_u64().unwrap_or(0);
    assert!(rto_ms > 0, "{run:#}");
    assert!(run["measuredRtoSeconds"].as_u64().is_some());
    assert!(run["measuredRpoSeconds"].as_u64().is_some(), "{run:#}");
    assert!(run["backupRpoMs"].as_u64().is_some_and(|ms| ms > 0), "{run:#}");
    assert!(run["sentinelRpoMs"].as_u64().is_some(), "{run:#}");
    assert!(
        run["failbackMs"].as_u64().is_some_and(|ms| ms >= 5000),
        "failback must wait for the policy's 5 s hold-down from the undrain: {run:#}"
    );
    // The restored backups hold the data from before the drain.
    for t in run["tenants"].as_array().into_iter().flatten() {
        let data: jiff::Timestamp = t["backupDataTime"].as_str().unwrap_or_default().parse()?;
        let drained: jiff::Timestamp = run["timeline"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["step"] == "Drained"))
            .and_then(|e| e["time"].as_str())
            .unwrap_or_default()
            .parse()?;
        assert!(data <= drained, "{t}");
    }
    assert_eq!(run["drRegion"], "europe");
    let got = steps(run);
    for want in [
        "PreChecksOk",
        "SentinelsWritten",
        "Drained",
        "DnsMoved",
        "Recovered",
        "SentinelsChecked",
        "RestoresVerified",
        "Undrained",
        "FailedBack",
        "CleanedUp",
        "Reported",
    ] {
        assert!(got.iter().any(|g| g == want), "timeline lacks {want}: {got:?}");
    }
    for t in run["tenants"].as_array().into_iter().flatten() {
        assert_eq!(t["restoreVerified"], true, "{t}");
        assert!(t["backup"].is_string() && t["recoveredTime"].is_string(), "{t}");
    }
    // The policy really moved to europe during the drill and is back on africa.
    let policy = drill::object(&hub, "FailoverPolicy", "failoverpolicies", "platform").await;
    assert_eq!(policy["status"]["activeRegion"], "africa", "{policy:#}");
    let history: Vec<&Value> = std::iter::once(&policy["status"]["lastFailover"])
        .chain(policy["status"]["history"].as_array().into_iter().flatten())
        .collect();
    // Off africa, and on to europe (directly, or after a first target confirmed sooner).
    assert!(
        history
            .iter()
            .any(|r| r["from"] == "africa" && r["to"].as_str().is_some_and(|to| to != "africa"))
            && history.iter().any(|r| r["to"] == "europe"),
        "no failover africa -> europe recorded: {policy:#}"
    );
    // The report is in europe's bucket, Markdown and JSON.
    let id = run["id"].as_str().unwrap_or_default().to_string();
    let europe = fleet.store("europe")?;
    let md = europe
        .get_bytes(&format!("drills/monthly/{id}.md"))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no Markdown report in europe"))?;
    let md = String::from_utf8_lossy(&md);
    assert!(md.contains("Passed") && md.contains("| RTO |"), "{md}");
    let js: Value = serde_json::from_slice(
        &europe
            .get_bytes(&format!("drills/monthly/{id}.json"))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no JSON report in europe"))?,
    )?;
    assert_eq!(js["run"]["rtoMs"], rto_ms);
    assert_eq!(run["report"], format!("s3://azora-europe/drills/monthly/{id}.md"));
    // Scratch restores and their namespaces are gone.
    let restores: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("Restore", "restores"));
    assert!(
        restores
            .list(&ListParams::default().labels("azora.io/drill=monthly"))
            .await?
            .items
            .is_empty()
    );
    let namespaces: Api<Namespace> = Api::all(fleet.regional("europe").await?);
    let scratch: Vec<String> = namespaces
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter_map(|n| n.metadata.name)
        .filter(|n| n.starts_with("drill-"))
        .collect();
    assert!(
        scratch.is_empty(),
        "scratch namespaces left in europe: {scratch:?}"
    );
    println!(
        "drill: RTO {:.1}s, RPO {}s (backup {} ms, sentinel {} ms), failback {} ms",
        rto_ms as f64 / 1000.0,
        run["measuredRpoSeconds"],
        run["backupRpoMs"],
        run["sentinelRpoMs"],
        run["failbackMs"]
    );
    let m = azora_tests::metrics_text(fleet.metrics_port).await?;
    assert_eq!(
        azora_tests::metric(&m, "azora_drill_runs_total{drill=\"monthly\",result=\"Passed\"}")?,
        1.0
    );

    // A broken recovery: no new backups, and europe's copies deleted. The drill must fail and say why.
    let schedules: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("BackupSchedule", "backupschedules"));
    schedules
        .patch(
            "frequent",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    for o in europe.list("backups/").await? {
        europe.delete(&o.key).await?;
    }
    // Wait until no tenant has a verified copy in europe any more (periodic re-verification notices).
    let gone = azora_tests::wait::until(Duration::from_secs(90), || async {
        let mut any = false;
        for t in drill::TENANTS {
            any |= drill::verified_backup(&hub, t, "europe").await.is_some();
        }
        !any
    })
    .await;
    assert!(gone, "europe's copies still counted verified");
    drill::run_now(&hub, "monthly", "second").await?;
    let st = drill::wait_run(&hub, "monthly", &json!(id), Duration::from_secs(600)).await?;
    let run = &st["lastRun"];
    assert_eq!(run["result"], "Failed", "{run:#}");
    // Only the restore is broken: the failover and the tenants' recovery are measured as before.
    let got = steps(run);
    for want in ["DnsMoved", "Recovered", "FailedBack"] {
        assert!(got.iter().any(|g| g == want), "timeline lacks {want}: {run:#}");
    }
    let msg = run["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("tenant acme") && msg.contains("europe"),
        "the reason must name the tenant and the region: {msg}"
    );
    assert_eq!(
        drill::object(&hub, "FailoverPolicy", "failoverpolicies", "platform").await["status"]["activeRegion"],
        "africa",
        "a failed drill still fails back"
    );
    Ok(())
}
