//! DR drills end to end: four regions, each a real API server and a real S3 server; two tenants placed in
//! africa with europe as their failover region; real sealed backups copied to europe; the operator binary
//! with its embedded DNS. A drill drains africa, measures RTO and RPO, restores from europe's own copies
//! into scratch namespaces, fails back and reports into europe's bucket; the same drill with europe's
//! copies gone fails, with the reason.

use std::time::Duration;

use azora_tests::fleet::Fleet;
use azora_tests::free_port;
use azora_tests::scenario::{ar, create};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const TENANTS: [&str; 2] = ["acme", "globex"];

async fn object(hub: &kube::Client, kind: &str, plural: &str, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::all_with(hub.clone(), &ar(kind, plural));
    api.get(name)
        .await
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
        .unwrap_or(Value::Null)
}

/// The newest Succeeded backup of `tenant` with a verified copy in `region`.
async fn verified_backup(hub: &kube::Client, tenant: &str, region: &str) -> Option<Value> {
    let api: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("Backup", "backups"));
    let list = api.list(&ListParams::default()).await.ok()?;
    list.items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .filter(|b| b["spec"]["tenant"] == tenant && b["status"]["phase"] == "Succeeded")
        .filter(|b| {
            b["status"]["locations"]
                .as_array()
                .is_some_and(|l| l.iter().any(|l| l["region"] == region && l["verified"] == true))
        })
        .max_by_key(|b| b["status"]["dataTime"].as_str().unwrap_or_default().to_string())
}

async fn wait_run(
    hub: &kube::Client,
    name: &str,
    other_than: &Value,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let start = std::time::Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < timeout {
        let d = object(hub, "DrDrill", "drdrills", name).await;
        let run = &d["status"]["lastRun"];
        if run["result"].is_string() && run["result"] != "Running" && run["id"] != *other_than {
            return Ok(d["status"].clone());
        }
        last = d["status"].clone();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("drill {name} did not finish within {timeout:?}: {last:#}")
}

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
    let regions = ["africa", "europe", "asia", "americas"];
    let mut fleet = Fleet::start(&regions).await?;
    let dns = format!("127.0.0.1:{}", free_port()?);
    fleet.start_operator(&[
        "--dns-addr",
        &dns,
        "--backup-verify-every",
        "3s",
        "--replication-interval",
        "2s",
    ])?;
    let hub = fleet.hub().await?;
    let region_list: Vec<Value> = regions.iter().map(|r| json!({"name": r})).collect();
    create(
        &hub,
        "failoverpolicies",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "FailoverPolicy", "metadata": {"name": "platform"},
               "spec": {"zone": "drill.azora.", "hostnames": ["api"], "strategy": "Failover",
                        "regions": region_list, "ttl": 5,
                        "failback": {"mode": "Automatic", "holdDown": "5s"}}}),
    )
    .await?;
    let key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    };
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "backup-key"}, "stringData": {"key": key}}))?,
        )
        .await?;
    for t in TENANTS {
        fleet
            .tenant(
                t,
                json!({"homeRegion": "africa", "failoverRegions": ["europe"],
                       "residency": {"allowedContinents": ["Africa", "Europe"]}}),
            )
            .await?;
    }
    for t in TENANTS {
        assert!(
            fleet
                .wait_condition(t, "Ready", "True", Duration::from_secs(120))
                .await,
            "tenant {t} never Ready:\n{}",
            tail(&fleet.log(), 40)
        );
    }
    // Data in each tenant's bucket in africa (replicated to europe) and a ConfigMap in its namespace.
    let africa = fleet.store("africa")?;
    for t in TENANTS {
        africa
            .put_bytes(
                &format!("tenants/{t}/data/orders.csv"),
                b"id,total\n1,42\n".to_vec(),
            )
            .await?;
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(fleet.regional("africa").await?, &format!("tenant-{t}"));
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"plan": "gold"}}))?,
        )
        .await?;
    }
    create(
        &hub,
        "backupschedules",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "BackupSchedule", "metadata": {"name": "frequent"},
               "spec": {"every": "30s", "retention": {"keepFor": "1h", "keepLastGood": 3},
                        "encryptionKey": {"name": "backup-key", "key": "key"}}}),
    )
    .await?;
    for t in TENANTS {
        let ok = azora_tests::wait::until(Duration::from_secs(180), || async {
            verified_backup(&hub, t, "europe").await.is_some()
        })
        .await;
        assert!(
            ok,
            "no verified backup of {t} in europe:\n{}",
            tail(&fleet.log(), 40)
        );
    }

    create(
        &hub,
        "drdrills",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "DrDrill", "metadata": {"name": "monthly"},
               "spec": {"scenario": {"loseRegion": "africa", "drRegion": "europe"},
                        "tenants": TENANTS, "objectives": {"rto": "5m", "rpo": "5m"}}}),
    )
    .await?;
    let drills: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("DrDrill", "drdrills"));
    let run_now = |token: &'static str| {
        let drills = drills.clone();
        async move {
            drills
                .patch(
                    "monthly",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {"azora.io/run-now": token}}})),
                )
                .await
        }
    };
    run_now("first").await?;
    let st = wait_run(&hub, "monthly", &Value::Null, Duration::from_secs(400)).await?;
    let run = &st["lastRun"];
    assert_eq!(run["result"], "Passed", "{run:#}\n{}", tail(&fleet.log(), 60));
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
    let policy = object(&hub, "FailoverPolicy", "failoverpolicies", "platform").await;
    assert_eq!(policy["status"]["activeRegion"], "africa", "{policy:#}");
    let history: Vec<&Value> = std::iter::once(&policy["status"]["lastFailover"])
        .chain(policy["status"]["history"].as_array().into_iter().flatten())
        .collect();
    assert!(
        history
            .iter()
            .any(|r| r["from"] == "africa" && r["to"] == "europe"),
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
        for t in TENANTS {
            any |= verified_backup(&hub, t, "europe").await.is_some();
        }
        !any
    })
    .await;
    assert!(gone, "europe's copies still counted verified");
    run_now("second").await?;
    let st = wait_run(&hub, "monthly", &json!(id), Duration::from_secs(400)).await?;
    let run = &st["lastRun"];
    assert_eq!(run["result"], "Failed", "{run:#}");
    let msg = run["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("tenant acme") && msg.contains("europe"),
        "the reason must name the tenant and the region: {msg}"
    );
    assert_eq!(
        object(&hub, "FailoverPolicy", "failoverpolicies", "platform").await["status"]["activeRegion"],
        "africa",
        "a failed drill still fails back"
    );
    Ok(())
}
