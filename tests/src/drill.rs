//! A DR drill environment for tests and `make drill` (IO): four regions (real API server and S3 server
//! each), a platform FailoverPolicy served by the operator's embedded DNS, two tenants homed in africa with
//! europe as failover region and data in their buckets and namespaces, sealed backups every 30 s copied to
//! europe — ready once every tenant has a verified backup copy in europe.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::fleet::Fleet;
use crate::free_port;
use crate::scenario::{ar, create};

/// The drill's tenants.
pub const TENANTS: [&str; 2] = ["acme", "globex"];

/// An object by kind as JSON (null when absent).
pub async fn object(hub: &kube::Client, kind: &str, plural: &str, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::all_with(hub.clone(), &ar(kind, plural));
    api.get(name)
        .await
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
        .unwrap_or(Value::Null)
}

/// The newest Succeeded backup of `tenant` with a verified copy in `region`.
pub async fn verified_backup(hub: &kube::Client, tenant: &str, region: &str) -> Option<Value> {
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

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts the environment and waits until it is ready for a drill.
pub async fn start() -> anyhow::Result<Fleet> {
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
        anyhow::ensure!(
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
        let cms: Api<ConfigMap> = Api::namespaced(fleet.regional("africa").await?, &format!("tenant-{t}"));
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
        let ok = crate::wait::until(Duration::from_secs(180), || async {
            verified_backup(&hub, t, "europe").await.is_some()
        })
        .await;
        anyhow::ensure!(
            ok,
            "no verified backup of {t} in europe:\n{}",
            tail(&fleet.log(), 40)
        );
    }
    Ok(fleet)
}

/// Creates the DrDrill `name`: lose africa, recover in europe, both tenants, RTO 2 minutes (a stuck recovery fails within 4), RPO 5 minutes.
pub async fn create_drill(hub: &kube::Client, name: &str) -> anyhow::Result<()> {
    create(
        hub,
        "drdrills",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "DrDrill", "metadata": {"name": name},
               "spec": {"scenario": {"loseRegion": "africa", "drRegion": "europe"},
                        "tenants": TENANTS, "objectives": {"rto": "2m", "rpo": "5m"}}}),
    )
    .await
}

/// Asks the drill to run now.
pub async fn run_now(hub: &kube::Client, name: &str, token: &str) -> anyhow::Result<()> {
    let drills: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("DrDrill", "drdrills"));
    drills
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"azora.io/run-now": token}}})),
        )
        .await?;
    Ok(())
}

/// Waits for a finished run whose id is not `other_than`; returns the drill's status.
pub async fn wait_run(
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
