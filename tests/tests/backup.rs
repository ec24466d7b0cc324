//! Backups and restore on real parts (a hub and real regional kube-apiservers, one moto S3 server per region,
//! the real operator binary): a scheduled backup of a tenant with objects of several kinds is sealed, copied
//! to every region its residency allows and nowhere else, each copy matching the manifest; a copy corrupted
//! by hand fails re-verification and names its region, and the next run is good again; a restore reads the
//! target region's own copy while the home region's API server and S3 server are stopped, a scratch restore
//! likewise, and a forbidden region is refused; retention never deletes the last good backup while every
//! later run fails, and prunes old ones from every bucket once good runs are back; bad input takes no action.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use azora_tests::fleet::Fleet;
use azora_tests::scenario::{ar, create};
use azora_tests::wait;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const CANARY: &str = "canary-7f3a9c-do-not-leak";

async fn ops(fleet: &Fleet) -> kube::Client {
    fleet.hub().await.unwrap()
}

async fn backups(fleet: &Fleet) -> Vec<DynamicObject> {
    let api: Api<DynamicObject> = Api::all_with(ops(fleet).await, &ar("Backup", "backups"));
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

async fn object(fleet: &Fleet, kind: &str, plural: &str, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> = Api::all_with(ops(fleet).await, &ar(kind, plural));
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .map(|o| serde_json::to_value(o).unwrap())
}

fn phase(o: &Value) -> &str {
    o["status"]["phase"].as_str().unwrap_or("")
}

fn cond(o: &Value, type_: &str) -> (String, String, String) {
    o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| {
            let s = |f: &str| c[f].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
        .unwrap_or_default()
}

/// Waits for a Backup (of `schedule`, not in `except`) in `want` phase; returns it.
async fn wait_backup(
    fleet: &Fleet,
    schedule: &str,
    want: &str,
    except: &[String],
    timeout: Duration,
) -> Option<Value> {
    wait_backup_after(fleet, schedule, want, except, None, timeout).await
}

/// [`wait_backup`] for a Backup created after `after`.
async fn wait_backup_after(
    fleet: &Fleet,
    schedule: &str,
    want: &str,
    except: &[String],
    after: Option<jiff::Timestamp>,
    timeout: Duration,
) -> Option<Value> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        for b in backups(fleet).await {
            let v = serde_json::to_value(&b).unwrap();
            if v["metadata"]["labels"]["azora.io/backup-schedule"] == schedule
                && phase(&v) == want
                && !except.iter().any(|e| v["metadata"]["name"] == e.as_str())
                && after.is_none_or(|a| {
                    v["metadata"]["creationTimestamp"]
                        .as_str()
                        .and_then(|c| c.parse::<jiff::Timestamp>().ok())
                        .is_some_and(|c| c > a)
                })
            {
                return Some(v);
            }
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_phase(
    fleet: &Fleet,
    kind: &str,
    plural: &str,
    name: &str,
    want: &str,
    timeout: Duration,
) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let last = object(fleet, kind, plural, name).await.unwrap_or(Value::Null);
        if phase(&last) == want {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{kind}/{name} never reached {want}: {last}\n{}",
            tail(&fleet.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn key_secret(fleet: &Fleet, name: &str, value: &str) {
    let secrets: Api<Secret> = Api::namespaced(ops(fleet).await, "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"key": value}}))
                .unwrap(),
        )
        .await
        .unwrap();
}

/// Creates a ConfigMap, a Secret holding the canary, a Deployment and a Service in the tenant's namespace.
async fn tenant_objects(fleet: &Fleet, region: &str, ns: &str) {
    let c = fleet.regional(region).await.unwrap();
    let apply = |kind: &str, plural: &str, group_version: &str, body: Value| {
        let c = c.clone();
        let (kind, plural, gv) = (kind.to_string(), plural.to_string(), group_version.to_string());
        async move {
            let (group, version) = gv.split_once('/').unwrap_or(("", gv.as_str()));
            let ar = kube::core::ApiResource::from_gvk_with_plural(
                &kube::core::GroupVersionKind::gvk(group, version, &kind),
                &plural,
            );
            let api: Api<DynamicObject> = Api::namespaced_with(c, ns, &ar);
            let obj: DynamicObject = serde_json::from_value(body).unwrap();
            api.create(&PostParams::default(), &obj).await.unwrap();
        }
    };
    apply("ConfigMap", "configmaps", "v1", json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "labels": {"app": "web"}}, "data": {"mode": "production", "replicas": "3"}}))
    .await;
    apply(
        "Secret",
        "secrets",
        "v1",
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db"}, "stringData": {"password": CANARY}}),
    )
    .await;
    apply("Deployment", "deployments", "apps/v1", json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}))
    .await;
    apply(
        "Service",
        "services",
        "v1",
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    )
    .await;
}

async fn keys(fleet: &Fleet, region: &str, prefix: &str) -> Vec<String> {
    fleet
        .store(region)
        .unwrap()
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[tokio::test]
async fn backups_are_sealed_copied_where_allowed_verified_and_restored_with_the_home_region_down() {
    let mut fleet = Fleet::start(&["africa", "europe", "asia", "americas"])
        .await
        .unwrap();
    fleet
        .start_operator(&["--backup-verify-every", "3s", "--replication-interval", "2s"])
        .unwrap();
    let key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    };
    key_secret(&fleet, "backup-key", &key).await;
    fleet
        .tenant(
            "acme",
            json!({"homeRegion": "africa", "failoverRegions": ["europe"],
                   "residency": {"allowedContinents": ["Africa", "Europe"]}}),
        )
        .await
        .unwrap();
    assert!(
        fleet
            .wait_condition("acme", "Ready", "True", Duration::from_secs(90))
            .await,
        "tenant never Ready: {}",
        tail(&fleet.log(), 30)
    );
    tenant_objects(&fleet, "africa", "tenant-acme").await;
    // Two objects in the tenant's bucket: the backup lists them, replication copies them to europe, and a
    // restore there checks europe's bucket against the listing.
    let africa_store = fleet.store("africa").unwrap();
    for k in ["tenants/acme/data/a.txt", "tenants/acme/data/b.txt"] {
        africa_store.put_bytes(k, k.as_bytes().to_vec()).await.unwrap();
    }
    let hub = ops(&fleet).await;
    create(
        &hub,
        "backupschedules",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "BackupSchedule", "metadata": {"name": "frequent"},
               "spec": {"every": "30s", "retention": {"keepFor": "1h", "keepLastGood": 3},
                        "encryptionKey": {"name": "backup-key", "key": "key"},
                        "testRestore": {"every": "1h"}}}),
    )
    .await
    .unwrap();

    // 1. A scheduled backup, verified in every allowed region.
    let b1 = wait_backup(&fleet, "frequent", "Succeeded", &[], Duration::from_secs(150))
        .await
        .unwrap_or_else(|| panic!("no backup succeeded\n{}", tail(&fleet.log(), 40)));
    let b1_name = b1["metadata"]["name"].as_str().unwrap().to_string();
    let sha = b1["status"]["sha256"].as_str().unwrap().to_string();
    let archive_key = b1["status"]["locations"][0]["key"].as_str().unwrap().to_string();
    let manifest_key = archive_key
        .replace("/archive-", "/manifest-")
        .replace(".tar.zst", ".json");
    assert!(
        archive_key.starts_with(&format!("backups/acme/{b1_name}/")),
        "{archive_key}"
    );
    let regions: Vec<&str> = b1["status"]["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, vec!["africa", "europe"], "{b1}");
    assert_eq!(b1["status"]["secretsIncluded"], true);
    for r in ["africa", "europe"] {
        let store = fleet.store(r).unwrap();
        let bytes = store
            .get_bytes(&archive_key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no archive in {r}"));
        assert_eq!(azora_adapters::archive::sha256_hex(&bytes), sha, "copy in {r}");
        // The manifest beside it names the same checksum.
        let m: Value =
            serde_json::from_slice(&store.get_bytes(&manifest_key).await.unwrap().unwrap()).unwrap();
        assert_eq!(m["archiveSha256"], sha.as_str());
        // Every entry checks out against the manifest inside; the Secret is in it, sealed.
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        let manifest = azora_adapters::archive::check_file(file.path(), &sha).unwrap();
        let mut entries = Vec::new();
        azora_adapters::archive::read_entries(file.path(), &manifest, |e, b| {
            entries.push((e.clone(), b));
            true
        })
        .unwrap();
        let kinds: Vec<String> = entries
            .iter()
            .filter_map(|(e, _)| e.object.as_ref().map(|o| o.kind.clone()))
            .collect();
        for k in ["ConfigMap", "Secret", "Deployment", "Service"] {
            assert!(
                kinds.iter().any(|x| x == k),
                "{k} missing from the archive: {kinds:?}"
            );
        }
        for (e, body) in &entries {
            assert!(
                !String::from_utf8_lossy(body).contains(CANARY),
                "{} holds the canary in clear",
                e.path
            );
        }
        assert!(!String::from_utf8_lossy(&bytes).contains(CANARY));
    }
    for r in ["asia", "americas"] {
        assert!(
            keys(&fleet, r, "backups/").await.is_empty(),
            "a copy landed in {r}, which residency forbids"
        );
    }

    // The scheduled test restore proves the backup into a scratch namespace of the other allowed region,
    // records it on the backup and the schedule, and cleans up after itself.
    let mut schedule = Value::Null;
    let mut proven = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while std::time::Instant::now() < deadline {
        schedule = object(&fleet, "BackupSchedule", "backupschedules", "frequent")
            .await
            .unwrap_or(Value::Null);
        if schedule["status"]["lastTestRestore"]["succeeded"] == true {
            proven = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        proven,
        "no successful test restore: {schedule}\n{}",
        tail(&fleet.log(), 40)
    );
    let test = &schedule["status"]["lastTestRestore"];
    assert_eq!(test["region"], "europe", "{test}");
    assert!(
        schedule["status"]["testRestoreFailures"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "a successful test restore listed as a failure: {schedule}"
    );
    let tested = test["backup"].as_str().unwrap().to_string();
    let tested_backup = object(&fleet, "Backup", "backups", &tested).await.unwrap();
    assert!(
        tested_backup["status"]["restoreVerifiedTime"].is_string(),
        "{tested_backup}"
    );
    let eu_admin = fleet.regional("europe").await.unwrap();
    let scratch_left = wait::until(Duration::from_secs(60), || {
        let c = eu_admin.clone();
        async move {
            let nss: Api<Namespace> = Api::all(c);
            nss.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .all(|n| {
                    !n.metadata
                        .name
                        .as_deref()
                        .unwrap_or("")
                        .starts_with("azora-test-restore-")
                        || n.metadata.deletion_timestamp.is_some()
                })
        }
    })
    .await;
    assert!(
        scratch_left,
        "the test restore's scratch namespace was not deleted"
    );

    // 2. A copy corrupted by hand fails re-verification, naming its region; the next run is good again.
    let corrupted_at = jiff::Timestamp::now();
    fleet
        .store("europe")
        .unwrap()
        .put_bytes(&archive_key, b"not the archive".to_vec())
        .await
        .unwrap();
    let corrupt = wait_phase(
        &fleet,
        "Backup",
        "backups",
        &b1_name,
        "PartiallyFailed",
        Duration::from_secs(60),
    )
    .await;
    let europe = corrupt["status"]["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["region"] == "europe")
        .unwrap()
        .clone();
    assert_eq!(europe["verified"], false, "{corrupt}");
    let (ready, _, msg) = cond(&corrupt, "Ready");
    assert_eq!(ready, "False");
    assert!(msg.contains("europe"), "{msg}");
    let b2 = wait_backup_after(
        &fleet,
        "frequent",
        "Succeeded",
        std::slice::from_ref(&b1_name),
        Some(corrupted_at),
        Duration::from_secs(90),
    )
    .await
    .unwrap_or_else(|| panic!("no later good backup\n{}", tail(&fleet.log(), 40)));
    let b2_name = b2["metadata"]["name"].as_str().unwrap().to_string();
    // The tenant and the schedule say so, from the recorded Backups.
    assert!(
        wait::until(Duration::from_secs(30), || async {
            fleet.tenant_object("acme").await.unwrap().unwrap()["status"]["lastBackup"]["name"]
                .as_str()
                .is_some()
        })
        .await
    );
    // The schedule says the RPO too (derived from the recorded Backups).
    let rpo_recorded = wait::until(Duration::from_secs(30), || async {
        object(&fleet, "BackupSchedule", "backupschedules", "frequent")
            .await
            .is_some_and(|s| s["status"]["rpoSeconds"].as_u64().is_some_and(|r| r < 120))
    })
    .await;
    assert!(rpo_recorded, "BackupSchedule.status.rpoSeconds never set");
    let rpo = fleet
        .metric("azora_backup_rpo_seconds{tenant=\"acme\"}")
        .await
        .unwrap();
    assert!(rpo < 120.0, "rpo {rpo}");

    // 3. Restore into europe with africa's API server and S3 server stopped.
    fleet.env.server("africa").unwrap().pause();
    fleet.s3.get("africa").unwrap().pause();
    let restore = |name: &str, extra: Value| {
        let mut spec = json!({"backup": b2_name, "targetRegion": "europe"});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "Restore", "metadata": {"name": name}, "spec": spec})
    };
    create(&hub, "restores", restore("to-europe", json!({})))
        .await
        .unwrap();
    create(
        &hub,
        "restores",
        restore("scratch", json!({"targetNamespace": "acme-scratch"})),
    )
    .await
    .unwrap();
    create(
        &hub,
        "restores",
        restore("forbidden", json!({"targetRegion": "asia"})),
    )
    .await
    .unwrap();
    let r = wait_phase(
        &fleet,
        "Restore",
        "restores",
        "to-europe",
        "Succeeded",
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(r["status"]["verified"], true, "{r}");
    assert_eq!(
        r["status"]["sourceRegion"], "europe",
        "read the target region's own copy: {r}"
    );
    assert!(r["status"]["objectsRestored"].as_u64().unwrap() >= 4, "{r}");
    // Object storage: europe's bucket holds both objects the backup listed, as they were.
    let os = &r["status"]["objectStorage"];
    assert_eq!(os["recorded"], 2, "{r}");
    assert_eq!(os["present"], 2, "{r}");
    assert_eq!(os["missing"], 0, "{r}");
    let eu = fleet.regional("europe").await.unwrap();
    for ns in ["tenant-acme", "acme-scratch"] {
        if ns == "acme-scratch" {
            wait_phase(
                &fleet,
                "Restore",
                "restores",
                "scratch",
                "Succeeded",
                Duration::from_secs(60),
            )
            .await;
        }
        let cm: Api<ConfigMap> = Api::namespaced(eu.clone(), ns);
        let got = cm.get("settings").await.unwrap();
        assert_eq!(got.data.unwrap()["mode"], "production");
        let secrets: Api<Secret> = Api::namespaced(eu.clone(), ns);
        let s = secrets.get("db").await.unwrap();
        assert_eq!(
            s.data.unwrap()["password"].0,
            CANARY.as_bytes(),
            "the Secret was opened and restored in {ns}"
        );
    }
    let forbidden = object(&fleet, "Restore", "restores", "forbidden").await.unwrap();
    assert!(
        wait::until(Duration::from_secs(30), || async {
            let f = object(&fleet, "Restore", "restores", "forbidden").await.unwrap();
            cond(&f, "Ready").1 == "ResidencyViolation"
        })
        .await,
        "{forbidden}"
    );
    let f = object(&fleet, "Restore", "restores", "forbidden").await.unwrap();
    assert!(
        f["status"]["phase"].is_null(),
        "a forbidden restore must not start: {f}"
    );

    // Deleting the scratch restore deletes its namespace.
    let restores: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("Restore", "restores"));
    restores
        .delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    let nss: Api<Namespace> = Api::all(eu.clone());
    assert!(
        wait::until(Duration::from_secs(60), || async {
            match nss.get_opt("acme-scratch").await.unwrap() {
                None => true,
                Some(n) => n.metadata.deletion_timestamp.is_some(),
            }
        })
        .await
    );
    fleet.env.server("africa").unwrap().resume();
    fleet.s3.get("africa").unwrap().resume();

    // 4. The canary is in no log, Event or status.
    assert!(!fleet.log().contains(CANARY), "the operator log holds the canary");
    let all = serde_json::to_string(&fleet.events().await.unwrap()).unwrap();
    assert!(!all.contains(CANARY), "an Event holds the canary");
    for b in backups(&fleet).await {
        assert!(!serde_json::to_string(&b).unwrap().contains(CANARY));
    }
    let all_restores =
        serde_json::to_string(&restores.list(&ListParams::default()).await.unwrap().items).unwrap();
    assert!(!all_restores.contains(CANARY));
}

#[tokio::test]
async fn retention_keeps_the_last_good_backup_through_failing_runs_and_prunes_old_ones_from_every_bucket() {
    let mut fleet = Fleet::start(&["africa", "europe"]).await.unwrap();
    // Finished backups are re-verified every 5 s: a hanging store must never turn a good one bad.
    fleet.start_operator(&["--backup-verify-every", "5s"]).unwrap();
    fleet
        .tenant(
            "acme",
            json!({"homeRegion": "africa", "failoverRegions": ["europe"]}),
        )
        .await
        .unwrap();
    assert!(
        fleet
            .wait_condition("acme", "Ready", "True", Duration::from_secs(90))
            .await
    );
    let hub = ops(&fleet).await;

    // Bad input first: nothing selected, a malformed key. Each says why; nothing is uploaded.
    key_secret(&fleet, "short-key", "too-short").await;
    create(
        &hub,
        "backupschedules",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "BackupSchedule", "metadata": {"name": "nobody"},
               "spec": {"every": "30s", "tenantSelector": {"matchLabels": {"tier": "none"}}}}),
    )
    .await
    .unwrap();
    create(
        &hub,
        "backups",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "Backup", "metadata": {"name": "bad-key"},
               "spec": {"tenant": "acme", "encryptionKey": {"name": "short-key", "key": "key"}}}),
    )
    .await
    .unwrap();
    let bad = wait_phase(
        &fleet,
        "Backup",
        "backups",
        "bad-key",
        "Failed",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(cond(&bad, "Ready").1, "InvalidEncryptionKey", "{bad}");
    assert!(!serde_json::to_string(&bad).unwrap().contains("too-short"));
    assert!(keys(&fleet, "africa", "backups/acme/bad-key/").await.is_empty());
    assert!(
        wait::until(Duration::from_secs(30), || async {
            let s = object(&fleet, "BackupSchedule", "backupschedules", "nobody")
                .await
                .unwrap();
            cond(&s, "Scheduling").1 == "NoTenantsSelected" && cond(&s, "Ready").0 == "False"
        })
        .await
    );

    create(
        &hub,
        "backupschedules",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "BackupSchedule", "metadata": {"name": "short"},
               "spec": {"every": "30s", "retention": {"keepFor": "45s", "keepLastGood": 1}}}),
    )
    .await
    .unwrap();
    let good = wait_backup(&fleet, "short", "Succeeded", &[], Duration::from_secs(120))
        .await
        .unwrap_or_else(|| panic!("no good backup\n{}", tail(&fleet.log(), 40)));
    let good_name = good["metadata"]["name"].as_str().unwrap().to_string();
    let created = good["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();

    // Every later run fails: the home store hangs.
    fleet.s3.get("africa").unwrap().pause();
    // Well past keepFor, with failed runs pruned around it, the last good one is still there.
    let failed_seen = wait_backup(&fleet, "short", "PartiallyFailed", &[], Duration::from_secs(150)).await;
    assert!(
        failed_seen.is_some(),
        "runs should fail while the home store hangs\n{}",
        tail(&fleet.log(), 30)
    );
    assert!(
        wait::until(Duration::from_secs(120), || async {
            jiff::Timestamp::now().duration_since(created) > jiff::SignedDuration::from_secs(100)
        })
        .await
    );
    let still = object(&fleet, "Backup", "backups", &good_name).await;
    assert!(still.is_some(), "the last good backup was pruned");
    assert_eq!(
        phase(&still.unwrap()),
        "Succeeded",
        "re-verification against a hanging store changed nothing"
    );
    // Failed runs older than keepFor were pruned around it (the newest restorable one may stay).
    let old_failures: Vec<String> = backups(&fleet)
        .await
        .iter()
        .map(|b| serde_json::to_value(b).unwrap())
        .filter(|v| v["metadata"]["labels"]["azora.io/backup-schedule"] == "short")
        .filter(|v| {
            v["metadata"]["name"] != good_name.as_str() && v["metadata"]["deletionTimestamp"].is_null()
        })
        .filter(|v| matches!(phase(v), "Failed" | "PartiallyFailed"))
        .filter(|v| {
            let c: jiff::Timestamp = v["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            jiff::Timestamp::now().duration_since(c) > jiff::SignedDuration::from_secs(55)
        })
        .map(|v| format!("{} {}", v["metadata"]["name"], phase(&v)))
        .collect();
    assert!(
        old_failures.len() <= 1,
        "failed runs past keepFor were not pruned: {old_failures:?}"
    );

    // Good runs again: the old good backup goes, from every bucket.
    fleet.s3.get("africa").unwrap().resume();
    wait_backup(
        &fleet,
        "short",
        "Succeeded",
        std::slice::from_ref(&good_name),
        Duration::from_secs(150),
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "no good backup after the store came back\n{}",
            tail(&fleet.log(), 40)
        )
    });
    assert!(
        wait::until(Duration::from_secs(120), || async {
            object(&fleet, "Backup", "backups", &good_name).await.is_none()
        })
        .await,
        "the old backup was never pruned\n{}",
        tail(&fleet.log(), 30)
    );
    for r in ["africa", "europe"] {
        assert!(
            keys(&fleet, r, &format!("backups/acme/{good_name}/"))
                .await
                .is_empty(),
            "pruned backup left objects in {r}"
        );
    }
}

/// Every object under a backup's prefix in a region's bucket.
async fn under(fleet: &Fleet, region: &str, tenant: &str, backup: &str) -> Vec<String> {
    keys(fleet, region, &format!("backups/{tenant}/{backup}/")).await
}

/// Polls an object until `at` holds for it (20 ms apart); returns it.
async fn wait_for(fleet: &Fleet, kind: &str, plural: &str, name: &str, at: fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = object(fleet, kind, plural, name).await.unwrap_or(Value::Null);
        if at(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{kind}/{name} never got there: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts what a backup that ended `Succeeded` after a kill must be: every copy there with the recorded
/// checksum, nothing else under its prefix but its manifest.
async fn assert_complete(fleet: &Fleet, b: &Value, point: &str) {
    assert_eq!(
        phase(b),
        "Succeeded",
        "killed {point}: {b}\n{}",
        tail(&fleet.log(), 30)
    );
    let name = b["metadata"]["name"].as_str().unwrap();
    let sha = b["status"]["sha256"].as_str().unwrap();
    for l in b["status"]["locations"].as_array().unwrap() {
        assert_eq!(l["verified"], true, "{b}");
        let region = l["region"].as_str().unwrap();
        let bytes = fleet
            .store(region)
            .unwrap()
            .get_bytes(l["key"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            azora_adapters::archive::sha256_hex(&bytes),
            sha,
            "killed {point}: {region}"
        );
        let left = under(fleet, region, "acme", name).await;
        assert_eq!(left.len(), 2, "killed {point}: {region} holds {left:?}");
    }
}

/// africa and europe with the operator running and the tenant `acme` (home africa, failover europe) Ready.
async fn acme_in_africa_and_europe() -> Fleet {
    let mut fleet = Fleet::start(&["africa", "europe"]).await.unwrap();
    fleet.start_operator(&[]).unwrap();
    fleet
        .tenant(
            "acme",
            json!({"homeRegion": "africa", "failoverRegions": ["europe"]}),
        )
        .await
        .unwrap();
    assert!(
        fleet
            .wait_condition("acme", "Ready", "True", Duration::from_secs(90))
            .await,
        "tenant never Ready: {}",
        tail(&fleet.log(), 30)
    );
    fleet
}

/// The operator SIGKILLed and started again (the new one leads once the old lease expires).
fn restart(fleet: &mut Fleet) {
    fleet.kill_operator();
    fleet.start_operator(&[]).unwrap();
}

#[tokio::test]
async fn a_backup_and_a_restore_killed_mid_run_converge_and_nothing_incomplete_counts() {
    let mut fleet = acme_in_africa_and_europe().await;
    let c = fleet.regional("africa").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c, "tenant-acme");
    for i in 0..40 {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")},
            "data": {"blob": "x".repeat(4000), "i": i.to_string()}}))
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let hub = ops(&fleet).await;
    let backup = |name: &str| {
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "Backup", "metadata": {"name": name},
               "spec": {"tenant": "acme"}})
    };

    // 1. Killed while exporting (africa's API server holds the export), before any checksum is recorded.
    fleet.env.server("africa").unwrap().pause();
    create(&hub, "backups", backup("killed-exporting")).await.unwrap();
    let v = wait_for(&fleet, "Backup", "backups", "killed-exporting", |v| {
        phase(v) == "Running"
    })
    .await;
    assert!(v["status"]["sha256"].is_null(), "{v}");
    // Its export had been going for two hours when the operator died (past the hour after which a run that
    // keeps failing is abandoned; a large tenant's first export may take that long): started again, not
    // ended for having been interrupted.
    fleet.kill_operator();
    let api: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("Backup", "backups"));
    let two_hours_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
    api.patch_status(
        "killed-exporting",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"startTime": two_hours_ago.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}}),
        ),
    )
    .await
    .unwrap();
    fleet.start_operator(&[]).unwrap();
    fleet.env.server("africa").unwrap().resume();
    let b = wait_phase(
        &fleet,
        "Backup",
        "backups",
        "killed-exporting",
        "Succeeded",
        Duration::from_secs(120),
    )
    .await;
    assert_complete(&fleet, &b, "while exporting").await;

    // 2. Killed while uploading (europe's store holds the copy) after the checksum was recorded: resumed
    //    from the verified home copy, the same bytes under the same key.
    fleet.s3.get("europe").unwrap().pause();
    create(&hub, "backups", backup("killed-uploading")).await.unwrap();
    let v = wait_for(&fleet, "Backup", "backups", "killed-uploading", |v| {
        v["status"]["sha256"].is_string()
    })
    .await;
    let recorded = v["status"]["sha256"].as_str().unwrap().to_string();
    // The home copy is stored (and europe's is held): killed mid-upload.
    let home_key = v["status"]["locations"][0]["key"].as_str().unwrap().to_string();
    assert!(
        wait::until(Duration::from_secs(30), || async {
            fleet
                .store("africa")
                .unwrap()
                .get_bytes(&home_key)
                .await
                .ok()
                .flatten()
                .is_some()
        })
        .await
    );
    let v = object(&fleet, "Backup", "backups", "killed-uploading")
        .await
        .unwrap();
    assert_eq!(phase(&v), "Running", "{v}");
    restart(&mut fleet);
    fleet.s3.get("europe").unwrap().resume();
    let b = wait_phase(
        &fleet,
        "Backup",
        "backups",
        "killed-uploading",
        "Succeeded",
        Duration::from_secs(150),
    )
    .await;
    assert_eq!(
        b["status"]["sha256"],
        recorded.as_str(),
        "resumed, not started over"
    );
    assert_complete(&fleet, &b, "while uploading").await;

    // 3. A restore killed while applying (europe's API server holds it) runs again to the same result.
    fleet.env.server("europe").unwrap().pause();
    create(
        &hub,
        "restores",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "Restore", "metadata": {"name": "killed"},
               "spec": {"backup": "killed-uploading", "targetRegion": "europe"}}),
    )
    .await
    .unwrap();
    wait_for(&fleet, "Restore", "restores", "killed", |v| phase(v) == "Running").await;
    restart(&mut fleet);
    fleet.env.server("europe").unwrap().resume();
    let r = wait_phase(
        &fleet,
        "Restore",
        "restores",
        "killed",
        "Succeeded",
        Duration::from_secs(150),
    )
    .await;
    assert_eq!(r["status"]["verified"], true, "{r}");
    let steps: Vec<&str> = r["status"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert!(
        steps.contains(&"Resumed"),
        "the restore was interrupted and run again: {steps:?}"
    );
    let eu = fleet.regional("europe").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(eu, "tenant-acme");
    for i in [0, 20, 39] {
        let cm = cms.get(&format!("cm-{i}")).await.unwrap();
        assert_eq!(cm.data.unwrap()["i"], i.to_string());
    }
}

/// Installs a namespaced `Widget` kind (`widgets.proof.azora.io`) in `region`'s cluster and waits until it
/// serves.
async fn widget_kind(fleet: &Fleet, region: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let c = fleet.regional(region).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "widgets.proof.azora.io"},
            "spec": {"group": "proof.azora.io", "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                       "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let widgets = widget_api(c, "default");
    let served = wait::until(Duration::from_secs(60), || async {
        widgets.list(&ListParams::default()).await.is_ok()
    })
    .await;
    assert!(served, "the Widget kind is not served in {region}");
}

fn widget_api(c: kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("proof.azora.io", "v1", "Widget"),
        "widgets",
    );
    Api::namespaced_with(c, ns, &ar)
}

/// A scheduled test restore that cannot restore — the tenant uses a custom resource whose kind the test
/// region's cluster does not have — is recorded as failed (`testRestoreFailures`, Event `TestRestoreFailed`,
/// the failed Restore kept with its reason), the backup is not marked as known to restore; once the kind is
/// installed there, the next slot's test restore proves a backup (its check finds every object of the
/// manifest, the custom resource among them) and clears the failure.
#[tokio::test]
async fn a_failing_test_restore_is_reported_and_proves_nothing_until_one_succeeds() {
    let fleet = acme_in_africa_and_europe().await;
    widget_kind(&fleet, "africa").await;
    widget_api(fleet.regional("africa").await.unwrap(), "tenant-acme")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "proof.azora.io/v1", "kind": "Widget",
                "metadata": {"name": "gear"}, "spec": {"teeth": 12}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let hub = ops(&fleet).await;
    create(
        &hub,
        "backupschedules",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "BackupSchedule", "metadata": {"name": "proof"},
               "spec": {"every": "1m", "retention": {"keepFor": "1h", "keepLastGood": 3},
                        "testRestore": {"every": "2m"}}}),
    )
    .await
    .unwrap();

    let schedule_where = |what: &'static str, f: fn(&Value) -> bool| {
        let fleet = &fleet;
        async move {
            let r = wait::value(
                Duration::from_secs(240),
                || async {
                    object(fleet, "BackupSchedule", "backupschedules", "proof")
                        .await
                        .unwrap_or(Value::Null)
                },
                f,
            )
            .await;
            let ok = r.is_ok();
            let (Ok(s) | Err(s)) = r;
            assert!(ok, "{what}: {s:#}\n{}", tail(&fleet.log(), 40));
            s
        }
    };
    let s = schedule_where("no failed test restore recorded", |s| {
        s["status"]["testRestoreFailures"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    })
    .await;
    let failure = &s["status"]["testRestoreFailures"][0];
    assert_eq!(failure["tenant"], "acme", "{s:#}");
    assert_eq!(failure["region"], "europe", "{s:#}");
    assert_eq!(failure["succeeded"], false, "{s:#}");
    assert!(
        failure["message"].as_str().unwrap_or_default().contains("Widget"),
        "the failure does not name what could not be restored: {failure}"
    );
    assert!(s["status"]["lastRestoredBackup"].is_null(), "{s:#}");
    let tested = failure["backup"].as_str().unwrap().to_string();
    let b = object(&fleet, "Backup", "backups", &tested).await.unwrap();
    assert_eq!(phase(&b), "Succeeded", "{b:#}");
    assert!(
        b["status"]["restoreVerifiedTime"].is_null(),
        "a backup whose test restore failed is marked as restoring: {b:#}"
    );
    let reported = fleet.events().await.unwrap().iter().any(|e| {
        e.reason.as_deref() == Some("TestRestoreFailed")
            && e.message.as_deref().is_some_and(|m| m.contains(&tested))
    });
    assert!(reported, "no TestRestoreFailed Event for {tested}");
    // A failed test Restore stays for inspection (until its slot ends), with the reason. (Polled: one that
    // failed as its slot ended is removed as the next slot's is created, which fails the same way.)
    let restores: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("Restore", "restores"));
    let kept = wait::value(
        Duration::from_secs(150),
        || async {
            restores
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|r| serde_json::to_value(r).unwrap())
                .find(|r| phase(r) == "Failed" && r["spec"]["targetRegion"] == "europe")
                .unwrap_or(Value::Null)
        },
        |r| !r.is_null(),
    )
    .await;
    let ok = kept.is_ok();
    let (Ok(failed) | Err(failed)) = kept;
    assert!(ok, "no failed test restore kept\n{}", tail(&fleet.log(), 40));
    let (_, reason, message) = cond(&failed, "Ready");
    assert!(
        reason == "ApplyFailed" && message.contains("Widget"),
        "{failed:#}"
    );

    // The kind installed in europe: the next slot proves a backup and the failure leaves.
    widget_kind(&fleet, "europe").await;
    let s = schedule_where("no test restore succeeded after the fix", |s| {
        s["status"]["lastTestRestore"]["succeeded"] == true
            && s["status"]["testRestoreFailures"]
                .as_array()
                .is_none_or(Vec::is_empty)
            && s["status"]["lastRestoredBackup"] == s["status"]["lastTestRestore"]["backup"]
    })
    .await;
    let proven = s["status"]["lastTestRestore"]["backup"]
        .as_str()
        .unwrap()
        .to_string();
    let b = object(&fleet, "Backup", "backups", &proven).await.unwrap();
    assert!(b["status"]["restoreVerifiedTime"].is_string(), "{b:#}");
    assert_eq!(s["status"]["lastRestoredBackup"], proven.as_str(), "{s:#}");
}
