//! Tenant placement and replication on real parts: a hub and three regional kube-apiservers (one etcd,
//! distinct prefixes), one moto S3 server per region, the real operator binary. Residency holds in clusters
//! and buckets; drift is repaired; replicas are verified by checksum; deletions propagate after the safety
//! delay; a lost regional cluster is reported without holding up the others; deletion cleans every region,
//! including one that was unreachable and came back; a restart with nothing to change writes nothing.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use azora_core::replication::{Manifest, manifest_key};
use azora_tests::fleet::Fleet;
use azora_tests::wait;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use sha2::Digest as _;

/// Replication every 2 s; replicas outlive deleted sources by 6 s.
const FAST: &[&str] = &["--replication-interval", "2s", "--replication-delete-delay", "6s"];

async fn ns_exists(fleet: &Fleet, region: &str, ns: &str) -> bool {
    let api: Api<Namespace> = Api::all(fleet.regional(region).await.unwrap());
    api.get_opt(ns)
        .await
        .unwrap()
        .is_some_and(|n| n.metadata.deletion_timestamp.is_none())
}

async fn ns_gone(fleet: &Fleet, region: &str, ns: &str) -> bool {
    let api: Api<Namespace> = Api::all(fleet.regional(region).await.unwrap());
    api.get_opt(ns).await.map(|n| n.is_none()).unwrap_or(false)
}

async fn keys(fleet: &Fleet, region: &str, prefix: &str) -> Vec<String> {
    let mut k: Vec<String> = fleet
        .store(region)
        .unwrap()
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    k.sort();
    k
}

fn region_state(t: &serde_json::Value, region: &str) -> (String, String) {
    t["status"]["regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["region"] == region))
        .map(|r| {
            (
                r["state"].as_str().unwrap_or_default().to_string(),
                r["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_residency_drift_replication_outage_and_cleanup() {
    let mut fleet = Fleet::start(&["africa", "europe", "asia"]).await.unwrap();
    // africa's kubeconfig Secret starts out broken (and holds something secret-looking)
    fleet
        .put_kubeconfig_secret("africa", Some("users: [token: s3cr3t-token-value\n"))
        .await
        .unwrap();
    fleet.start_operator(FAST).unwrap();
    let hub = fleet.hub().await.unwrap();
    let regions_api: Api<kube::api::DynamicObject> =
        Api::all_with(hub.clone(), &azora_tests::scenario::ar("Region", "regions"));

    // --- placement and residency -------------------------------------------------------------------------
    fleet
        .tenant(
            "acme",
            json!({"homeRegion": "africa", "failoverRegions": ["europe"],
                   "quotas": {"cpu": "8", "memory": "16Gi", "pods": 50},
                   "limits": {"cpu": "500m", "memory": "512Mi"},
                   "adminGroups": ["acme:admins"],
                   "network": {"defaultDeny": true, "allowFromNamespaces": ["ingress"]}}),
        )
        .await
        .unwrap();
    fleet
        .tenant(
            "eu",
            json!({"homeRegion": "europe", "failoverRegions": ["africa", "asia"],
                   "residency": {"allowedContinents": ["Europe"]}}),
        )
        .await
        .unwrap();
    // the broken Secret is reported on the Region and on the tenant; europe is placed regardless
    let reported = wait::until(Duration::from_secs(30), || async {
        let r = regions_api.get("africa").await.unwrap();
        let t = fleet.tenant_object("acme").await.unwrap().unwrap();
        r.data["status"]["cluster"]["reachable"] == json!(false)
            && r.data["status"]["cluster"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("kubeconfig")
            && region_state(&t, "africa").0 == "Error"
            && region_state(&t, "europe").0 == "Synced"
    })
    .await;
    assert!(reported, "broken kubeconfig not reported\n{}", fleet.log());
    assert_eq!(fleet.condition("acme", "Ready").await.as_deref(), Some("False"));
    // fixed: a least-privilege identity (regions/regional-cluster/rbac.yaml) in a new kubeconfig; the
    // operator rebuilds the client from the changed Secret
    fleet.least_privilege("africa").await.unwrap();
    let t0 = Instant::now();
    assert!(
        fleet
            .wait_condition("acme", "Ready", "True", Duration::from_secs(60))
            .await,
        "acme not Ready: {:?}\n{}",
        fleet.tenant_object("acme").await.unwrap(),
        fleet.log()
    );
    assert!(
        fleet
            .wait_condition("eu", "Ready", "True", Duration::from_secs(30))
            .await
    );
    println!("two tenants Ready in {:.1}s", t0.elapsed().as_secs_f64());
    for r in ["africa", "europe"] {
        assert!(
            ns_exists(&fleet, r, "tenant-acme").await,
            "tenant-acme missing in {r}"
        );
        let c = fleet.regional(r).await.unwrap();
        let q: Api<ResourceQuota> = Api::namespaced(c.clone(), "tenant-acme");
        let hard = q.get("tenant-quota").await.unwrap().spec.unwrap().hard.unwrap();
        assert_eq!(hard["requests.cpu"].0, "8");
        assert_eq!(hard["pods"].0, "50");
        let np: Api<NetworkPolicy> = Api::namespaced(c.clone(), "tenant-acme");
        assert!(np.get_opt("default-deny").await.unwrap().is_some());
        assert!(np.get_opt("allow-within-tenant").await.unwrap().is_some());
        let rb: Api<RoleBinding> = Api::namespaced(c, "tenant-acme");
        let b = rb.get("tenant-admins").await.unwrap();
        assert_eq!(b.role_ref.name, "admin");
        assert_eq!(b.subjects.unwrap()[0].name, "acme:admins");
    }
    assert!(!ns_exists(&fleet, "asia", "tenant-acme").await);
    assert!(ns_exists(&fleet, "europe", "tenant-eu").await);
    assert!(
        !ns_exists(&fleet, "asia", "tenant-eu").await,
        "residency: tenant-eu in asia"
    );
    assert!(
        !ns_exists(&fleet, "africa", "tenant-eu").await,
        "residency: tenant-eu in africa"
    );
    let eu = fleet.tenant_object("eu").await.unwrap().unwrap();
    assert_eq!(eu["status"]["placedRegions"], json!(["europe"]));
    assert_eq!(region_state(&eu, "asia").0, "Excluded");
    let acme = fleet.tenant_object("acme").await.unwrap().unwrap();
    assert_eq!(acme["status"]["activeRegion"], "africa");
    let africa_region = regions_api.get("africa").await.unwrap();
    assert_eq!(africa_region.data["status"]["cluster"]["reachable"], json!(true));
    assert!(
        !fleet.log().contains("s3cr3t-token-value"),
        "kubeconfig content leaked into the log"
    );
    assert!(!africa_region.data.to_string().contains("s3cr3t-token-value"));
    assert!(
        acme["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "azora.io/tenant-cleanup")
    );

    // --- replication, checksums, residency in buckets ------------------------------------------------------
    let africa = fleet.store("africa").unwrap();
    let big: Vec<u8> = (0..9 * 1024 * 1024 + 123).map(|i| (i * 31 % 251) as u8).collect();
    africa
        .put_bytes("tenants/acme/small.txt", b"hello lagos".to_vec())
        .await
        .unwrap();
    upload_multipart(&fleet, "africa", "tenants/acme/big.bin", &big).await;
    let europe_store = fleet.store("europe").unwrap();
    europe_store
        .put_bytes("tenants/eu/data.json", b"{\"eu\":true}".to_vec())
        .await
        .unwrap();
    let replicated = wait::until(Duration::from_secs(60), || async {
        keys(&fleet, "europe", "tenants/acme/").await == ["tenants/acme/big.bin", "tenants/acme/small.txt"]
    })
    .await;
    assert!(
        replicated,
        "acme objects not replicated to europe\n{}",
        fleet.log()
    );
    let got_big = europe_store
        .get_bytes("tenants/acme/big.bin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sha(&got_big), sha(&big), "replica bytes differ");
    let manifest: Manifest = serde_json::from_slice(
        &europe_store
            .get_bytes(&manifest_key("acme", "africa"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest.entries["tenants/acme/big.bin"].sha256, sha(&big));
    assert_eq!(
        manifest.entries["tenants/acme/small.txt"].sha256,
        sha(b"hello lagos")
    );
    assert!(
        manifest.entries["tenants/acme/big.bin"]
            .target_etag
            .ends_with("-2"),
        "multipart copy"
    );
    assert!(
        fleet
            .wait_condition("acme", "Replicated", "True", Duration::from_secs(30))
            .await
    );
    // the Europe-only tenant's data never leaves Europe; acme's never reaches asia
    assert!(keys(&fleet, "asia", "tenants/").await.is_empty());
    assert!(keys(&fleet, "africa", "tenants/eu/").await.is_empty());
    assert!(fleet.metric("azora_replication_lag_seconds_count").await.unwrap() >= 2.0);

    // a changed object is copied again; a tampered replica is repaired
    africa
        .put_bytes("tenants/acme/small.txt", b"hello again".to_vec())
        .await
        .unwrap();
    europe_store
        .put_bytes("tenants/acme/big.bin", b"tampered".to_vec())
        .await
        .unwrap();
    let repaired = wait::until(Duration::from_secs(30), || async {
        europe_store
            .get_bytes("tenants/acme/small.txt")
            .await
            .unwrap()
            .as_deref()
            == Some(b"hello again".as_slice())
            && europe_store
                .get_bytes("tenants/acme/big.bin")
                .await
                .unwrap()
                .map(|b| sha(&b))
                == Some(sha(&big))
    })
    .await;
    assert!(repaired, "changed/tampered replicas not repaired");

    // deletions propagate, but only after the safety delay (6 s here)
    africa.delete("tenants/acme/small.txt").await.unwrap();
    let deleted_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        keys(&fleet, "europe", "tenants/acme/")
            .await
            .contains(&"tenants/acme/small.txt".to_string()),
        "replica deleted before the safety delay"
    );
    assert!(
        wait::until(Duration::from_secs(30), || async {
            !keys(&fleet, "europe", "tenants/acme/")
                .await
                .contains(&"tenants/acme/small.txt".to_string())
        })
        .await
    );
    assert!(deleted_at.elapsed() >= Duration::from_secs(6));

    // --- drift repair ----------------------------------------------------------------------------------------
    let eur = fleet.regional("europe").await.unwrap();
    let q: Api<ResourceQuota> = Api::namespaced(eur.clone(), "tenant-acme");
    q.delete("tenant-quota", &DeleteParams::default()).await.unwrap();
    let np: Api<NetworkPolicy> = Api::namespaced(eur.clone(), "tenant-acme");
    np.patch(
        "allow-within-tenant",
        &PatchParams::apply("someone-else").force(),
        &Patch::Apply(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
        ),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let back = wait::until(Duration::from_secs(20), || async {
        let quota = q.get_opt("tenant-quota").await.unwrap().is_some();
        let types = np
            .get("allow-within-tenant")
            .await
            .unwrap()
            .spec
            .unwrap()
            .policy_types;
        quota && types == Some(vec!["Ingress".to_string()])
    })
    .await;
    assert!(back, "drift not repaired\n{}", fleet.log());
    println!("drift repaired in {:.1}s", t.elapsed().as_secs_f64());

    // --- a restart with nothing to change writes nothing ---------------------------------------------------
    // (settled first: placement and replication both in sync and recorded)
    assert!(
        fleet
            .wait_condition("acme", "Replicated", "True", Duration::from_secs(30))
            .await
    );
    assert!(
        fleet
            .wait_condition("acme", "Ready", "True", Duration::from_secs(20))
            .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let statuses_before = (
        fleet.tenant_object("acme").await.unwrap().unwrap()["status"].clone(),
        fleet.tenant_object("eu").await.unwrap().unwrap()["status"].clone(),
    );
    fleet.kill_operator();
    let before = fleet.regional_writes().await.unwrap();
    fleet.start_operator(FAST).unwrap();
    // every (tenant, region) pair re-read and found in sync: acme×2, eu×1
    const NOOP_AFRICA: &str = "azora_tenant_syncs_total{region=\"africa\",result=\"noop\"}";
    const NOOP_EUROPE: &str = "azora_tenant_syncs_total{region=\"europe\",result=\"noop\"}";
    let resynced = wait::until(Duration::from_secs(60), || async {
        // just restarted: a /metrics that does not answer yet, or a series not counted yet, is "not yet"
        matches!(fleet.metric_if_present(NOOP_AFRICA).await, Ok(Some(n)) if n >= 1.0)
            && matches!(fleet.metric_if_present(NOOP_EUROPE).await, Ok(Some(n)) if n >= 2.0)
    })
    .await;
    assert!(
        resynced,
        "no resync after restart: {:?} {:?}\n{}",
        fleet.metric_if_present(NOOP_AFRICA).await,
        fleet.metric_if_present(NOOP_EUROPE).await,
        fleet.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = fleet.regional_writes().await.unwrap();
    assert_eq!(
        after - before,
        0,
        "a resync with nothing to change wrote to regional clusters"
    );
    // replication after a restart reads its manifests back and copies nothing again
    tokio::time::sleep(Duration::from_secs(5)).await;
    // the restarted operator's /metrics answers (the noop syncs above); this labelled counter appears only
    // with a first copy (or failure, or deletion): absent means none
    assert_eq!(
        fleet
            .metric_if_present("azora_replication_objects_total")
            .await
            .unwrap()
            .unwrap_or(0.0),
        0.0,
        "objects copied again after a restart"
    );
    let statuses_after = (
        fleet.tenant_object("acme").await.unwrap().unwrap()["status"].clone(),
        fleet.tenant_object("eu").await.unwrap().unwrap()["status"].clone(),
    );
    // The hub side: what Tenant status says is unchanged (the bench counts hub writes across 1,000 tenants).
    let summary = |s: &serde_json::Value| {
        let conds: Vec<(String, String)> = s["conditions"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| (c["type"].to_string(), c["status"].to_string()))
                    .collect()
            })
            .unwrap_or_default();
        (
            s["placedRegions"].clone(),
            s["regions"].clone(),
            s["activeRegion"].clone(),
            conds,
        )
    };
    assert_eq!(
        summary(&statuses_after.0),
        summary(&statuses_before.0),
        "acme status changed by a restart"
    );
    assert_eq!(
        summary(&statuses_after.1),
        summary(&statuses_before.1),
        "eu status changed by a restart"
    );
    println!(
        "tenant status writes after the restart: {}",
        fleet
            .metric_if_present("azora_status_writes_total{controller=\"tenant\",outcome=\"written\"}")
            .await
            .unwrap()
            .unwrap_or(0.0)
    );
    // this labelled counter appears with the first write attempt: absent means none since the restart
    assert_eq!(
        fleet
            .metric_if_present("azora_regional_writes_total")
            .await
            .unwrap()
            .unwrap_or(0.0),
        0.0,
        "the restarted operator sent write requests to regional clusters"
    );

    // --- one regional cluster lost: reported, the others unaffected ----------------------------------------
    fleet
        .tenant(
            "multi",
            json!({"homeRegion": "africa", "failoverRegions": ["europe", "asia"]}),
        )
        .await
        .unwrap();
    assert!(
        fleet
            .wait_condition("multi", "Ready", "True", Duration::from_secs(60))
            .await
    );
    fleet.env.server("asia").unwrap().pause();
    let unreachable = wait::until(Duration::from_secs(40), || async {
        let r = regions_api.get("asia").await.unwrap();
        r.data["status"]["cluster"]["reachable"] == json!(false)
    })
    .await;
    assert!(unreachable, "asia's lost cluster not reported in Region status");
    let t = Instant::now();
    fleet
        .tenant(
            "newco",
            json!({"homeRegion": "europe", "failoverRegions": ["africa"]}),
        )
        .await
        .unwrap();
    assert!(
        fleet
            .wait_condition("newco", "Ready", "True", Duration::from_secs(30))
            .await,
        "a tenant in healthy regions was held up by the lost one"
    );
    println!(
        "tenant Ready in {:.1}s while asia is unreachable",
        t.elapsed().as_secs_f64()
    );
    // a spec change to multi syncs africa and europe and reports asia
    let tenants: Api<kube::api::DynamicObject> =
        Api::all_with(hub.clone(), &azora_tests::scenario::ar("Tenant", "tenants"));
    tenants
        .patch(
            "multi",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"quotas": {"pods": 7}}})),
        )
        .await
        .unwrap();
    let reported = wait::until(Duration::from_secs(30), || async {
        let t = fleet.tenant_object("multi").await.unwrap().unwrap();
        region_state(&t, "asia").0 == "Error" && region_state(&t, "europe").0 == "Synced"
    })
    .await;
    assert!(reported, "asia not reported as Error for multi");
    let c = fleet.regional("europe").await.unwrap();
    let q: Api<ResourceQuota> = Api::namespaced(c, "tenant-multi");
    assert_eq!(
        q.get("tenant-quota").await.unwrap().spec.unwrap().hard.unwrap()["pods"].0,
        "7"
    );

    // --- deletion cleans every region, including the unreachable one once it is back -------------------------
    tenants.delete("multi", &DeleteParams::default()).await.unwrap();
    let cleaned = wait::until(Duration::from_secs(30), || async {
        ns_gone(&fleet, "africa", "tenant-multi").await && ns_gone(&fleet, "europe", "tenant-multi").await
    })
    .await;
    assert!(cleaned, "reachable regions not cleaned while asia is down");
    let t = fleet
        .tenant_object("multi")
        .await
        .unwrap()
        .expect("finalizer holds the tenant while asia is down");
    assert_eq!(region_state(&t, "asia").0, "Error", "{t}");
    fleet.env.server("asia").unwrap().resume();
    let gone = wait::until(Duration::from_secs(60), || async {
        fleet.tenant_object("multi").await.unwrap().is_none() && ns_gone(&fleet, "asia", "tenant-multi").await
    })
    .await;
    assert!(gone, "asia not cleaned after it came back\n{}", fleet.log());

    // --- the home region goes down (its S3 endpoint, which the Region probes, hangs): the active region moves
    fleet.s3.get("africa").unwrap().pause();
    let moved = wait::until(Duration::from_secs(60), || async {
        fleet.tenant_object("acme").await.unwrap().unwrap()["status"]["activeRegion"] == "europe"
    })
    .await;
    fleet.s3.get("africa").unwrap().resume();
    assert!(
        moved,
        "acme's active region did not move off a Down africa\n{}",
        fleet.log()
    );
    let back = wait::until(Duration::from_secs(60), || async {
        fleet.tenant_object("acme").await.unwrap().unwrap()["status"]["activeRegion"] == "africa"
    })
    .await;
    assert!(back, "acme's active region did not return to africa");

    // --- residency tightened: the tenant leaves europe, in the cluster and the bucket -----------------------
    tenants
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"residency": {"allowedContinents": ["Africa"]}}})),
        )
        .await
        .unwrap();
    let left = wait::until(Duration::from_secs(60), || async {
        ns_gone(&fleet, "europe", "tenant-acme").await
            && keys(&fleet, "europe", "tenants/acme/").await.is_empty()
    })
    .await;
    assert!(
        left,
        "acme still in europe after residency excluded it\n{}",
        fleet.log()
    );
    assert!(ns_exists(&fleet, "africa", "tenant-acme").await);
}

fn sha(b: &[u8]) -> String {
    azora_core::replication::hex(&sha2::Sha256::digest(b))
}

/// Uploads through the operator's own copy path from a scratch bucket, so the source itself is a
/// multipart object (ETag `md5-N`).
async fn upload_multipart(fleet: &Fleet, region: &str, key: &str, bytes: &[u8]) {
    let s3 = fleet.s3.get(region).unwrap();
    let scratch = s3.store("scratch");
    scratch.ensure_bucket().await.unwrap();
    scratch.put_bytes(key, bytes.to_vec()).await.unwrap();
    let listed = scratch.list(key).await.unwrap().remove(0);
    let copied = azora_adapters::objstore::copy(&scratch, &fleet.store(region).unwrap(), &listed)
        .await
        .unwrap();
    assert!(copied.target_etag.ends_with("-2"));
}

/// Kill the operator in the middle of placing tenants: after a restart every tenant converges, and what was
/// already placed is not written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_placement_converges_after_restart() {
    let mut fleet = Fleet::start(&["africa", "europe"]).await.unwrap();
    let n = 60;
    for i in 0..n {
        let (home, other) = if i % 2 == 0 {
            ("africa", "europe")
        } else {
            ("europe", "africa")
        };
        fleet
            .tenant(
                &format!("t{i:02}"),
                json!({"homeRegion": home, "failoverRegions": [other], "quotas": {"pods": 10}, "adminGroups": ["g"]}),
            )
            .await
            .unwrap();
    }
    // the API servers' own bootstrap writes (default namespaces, RBAC) are not ours
    let base = fleet.regional_write_counts().await.unwrap();
    fleet.start_operator(FAST).unwrap();
    // kill as soon as the first objects land, well before all 60 × 2 × 5 are placed (just started: a
    // /metrics that does not answer yet, or no write counted yet, is "not yet")
    let started = wait::until(Duration::from_secs(60), || async {
        matches!(fleet.metric_if_present("azora_regional_writes_total").await, Ok(Some(n)) if n >= 20.0)
    })
    .await;
    assert!(started, "placement never started\n{}", fleet.log());
    fleet.kill_operator();
    let first = fleet.regional_writes().await.unwrap() - base.took_effect;
    fleet.start_operator(FAST).unwrap();
    let all_ready = wait::until(Duration::from_secs(90), || async {
        let mut ready = 0;
        for i in 0..n {
            if fleet.condition(&format!("t{i:02}"), "Ready").await.as_deref() == Some("True") {
                ready += 1;
            }
        }
        ready == n
    })
    .await;
    assert!(
        all_ready,
        "not every tenant converged after the restart\n{}",
        fleet.log()
    );
    for i in 0..n {
        for r in ["africa", "europe"] {
            assert!(ns_exists(&fleet, r, &format!("tenant-t{i:02}")).await);
        }
    }
    // 5 objects per tenant and region; the second run writes only what the first did not. Counted by the
    // regional API servers: writes that took effect (2xx), and writes answered 5xx, whose effect is unknown.
    let end = fleet.regional_write_counts().await.unwrap();
    let total = end.took_effect - base.took_effect;
    let uncertain = end.uncertain - base.uncertain;
    let objects = (n * 2 * 5) as u64;
    println!(
        "first run wrote {first}, second {} of {objects} objects ({uncertain} writes answered 5xx)",
        total - first
    );
    assert!(first < objects, "the kill came too late to test anything");
    // Exact upward: no object is written twice, so at most one write that took effect per object.
    assert!(
        total <= objects,
        "objects written twice: {total} writes that took effect for {objects} objects\n{}",
        fleet.log()
    );
    // Downward, the count cannot be exact: the SIGKILL cancels the writes in flight (often dozens, at full
    // placement speed), each is answered 500, and those etcd was already committing are stored all the same
    // (then not written again, rightly). Every object missing from the 2xx count is one of those 5xx; with
    // no 5xx at all this is exact.
    assert!(
        total + uncertain >= objects,
        "objects never written: {total} writes that took effect and {uncertain} answered 5xx for {objects} \
         objects\n{}",
        fleet.log()
    );
}
