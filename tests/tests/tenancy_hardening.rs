//! Tenancy hardening on real parts (a hub and real regional kube-apiservers sharing one etcd, one moto S3
//! server per region, the real operator binary): a regional kubeconfig asking for more than inline
//! credentials (an exec plugin, a token file, certificate files) is refused before anything runs or is read,
//! and a good one is picked up without a restart; a namespace that already exists without our labels is
//! never adopted, changed or deleted; a regional watch refused by RBAC becomes an error instead of
//! "connecting" forever; a failback brings every write made in the failover region home and deletes nothing.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use azora_tests::fleet::Fleet;
use azora_tests::scenario::ar;
use azora_tests::wait;
use k8s_openapi::api::core::v1::{ConfigMap, Event, LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sha2::Digest as _;

/// Replication every 2 s; replicas outlive deleted sources by 6 s.
const FAST: &[&str] = &["--replication-interval", "2s", "--replication-delete-delay", "6s"];
/// The delete delay above.
const DELETE_DELAY: Duration = Duration::from_secs(6);

// --- helpers ----------------------------------------------------------------------------------------------

/// `status.cluster` of a Region on the hub (Null when not reported yet).
async fn region_cluster(fleet: &Fleet, region: &str) -> Value {
    let api: Api<DynamicObject> = Api::all_with(fleet.hub().await.unwrap(), &ar("Region", "regions"));
    api.get(region).await.unwrap().data["status"]["cluster"].clone()
}

/// (state, message) of one region in a Tenant's `status.regions`.
fn region_state(t: &Value, region: &str) -> (String, String) {
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

/// (status, reason, message) of one of a Tenant's conditions.
fn condition(t: &Value, type_: &str) -> (String, String, String) {
    t["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| {
            let s = |f: &str| c[f].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
        .unwrap_or_default()
}

/// A string field of a Tenant's status ("" when absent or the Tenant is gone).
async fn tenant_status_str(fleet: &Fleet, name: &str, field: &str) -> String {
    fleet
        .tenant_object(name)
        .await
        .unwrap()
        .and_then(|t| t["status"][field].as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn ns(fleet: &Fleet, region: &str, name: &str) -> Option<Namespace> {
    let api: Api<Namespace> = Api::all(fleet.regional(region).await.unwrap());
    api.get_opt(name).await.unwrap()
}

async fn ns_gone(fleet: &Fleet, region: &str, name: &str) -> bool {
    let api: Api<Namespace> = Api::all(fleet.regional(region).await.unwrap());
    api.get_opt(name).await.map(|n| n.is_none()).unwrap_or(false)
}

/// A kubeconfig for the regional API server of `region` whose only user is `user` (YAML lines indented by
/// four spaces, as under `user:`).
fn kubeconfig_with_user(fleet: &Fleet, region: &str, user: &str) -> String {
    let url = &fleet.env.server(region).unwrap().url;
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {region}\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\n\
         users:\n- name: intruder\n  user:\n{user}contexts:\n- name: {region}\n  context:\n    cluster: {region}\n    user: intruder\n\
         current-context: {region}\n"
    )
}

fn sha(b: &[u8]) -> String {
    azora_core::replication::hex(&sha2::Sha256::digest(b))
}

/// SHA-256 of every object under `prefix` in `region`'s bucket, by key.
async fn checksums(fleet: &Fleet, region: &str, prefix: &str) -> BTreeMap<String, String> {
    let store = fleet.store(region).unwrap();
    let mut out = BTreeMap::new();
    for o in store.list(prefix).await.unwrap() {
        if let Some(b) = store.get_bytes(&o.key).await.unwrap() {
            out.insert(o.key, sha(&b));
        }
    }
    out
}

// --- hole 8: unsafe regional kubeconfigs -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsafe_regional_kubeconfigs_are_refused_without_running_or_reading_anything_and_a_good_one_is_picked_up()
 {
    let mut fleet = Fleet::start(&["africa", "europe"]).await.unwrap();
    let dir = fleet.env.dir.path().to_path_buf();
    let marker = dir.join("exec-plugin-ran");
    let touch = ["/usr/bin/touch", "/bin/touch"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("touch");
    // (a) an exec plugin that would leave a marker file behind, in place before the operator starts
    let exec_user = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: {touch}\n      args: [\"{}\"]\n",
        marker.display()
    );
    fleet
        .put_kubeconfig_secret(
            "africa",
            Some(&kubeconfig_with_user(&fleet, "africa", &exec_user)),
        )
        .await
        .unwrap();
    fleet
        .tenant(
            "ku",
            json!({"homeRegion": "africa", "failoverRegions": ["europe"]}),
        )
        .await
        .unwrap();
    fleet.start_operator(&[]).unwrap();
    let t0 = Instant::now();

    let refused = |what: &'static str| {
        let fleet = &fleet;
        async move {
            wait::until(Duration::from_secs(60), || async move {
                let c = region_cluster(fleet, "africa").await;
                c["reachable"] == json!(false)
                    && c["reason"] == "UnsafeKubeconfig"
                    && c["message"].as_str().unwrap_or_default().contains(what)
            })
            .await
        }
    };
    assert!(
        refused("exec plugin").await,
        "exec plugin not refused: {}\n{}",
        region_cluster(&fleet, "africa").await,
        fleet.log()
    );
    println!("exec plugin refused after {:.1}s", t0.elapsed().as_secs_f64());
    assert!(!marker.exists(), "the exec plugin's command ran");
    // the tenant reports the region as an error; europe is placed regardless
    let reported = wait::until(Duration::from_secs(60), || async {
        let t = fleet.tenant_object("ku").await.unwrap().unwrap();
        let (state, message) = region_state(&t, "africa");
        state == "Error" && message.contains("UnsafeKubeconfig") && region_state(&t, "europe").0 == "Synced"
    })
    .await;
    assert!(
        reported,
        "africa not reported as Error on the tenant: {}",
        fleet.tenant_object("ku").await.unwrap().unwrap()["status"]
    );
    // a Warning Event names the refusal
    let events: Api<Event> = Api::all(fleet.hub().await.unwrap());
    let evented = wait::until(Duration::from_secs(30), || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("UnsafeKubeconfig")
                    && e.type_.as_deref() == Some("Warning")
                    && e.involved_object.name.as_deref() == Some("africa")
            })
    })
    .await;
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        evented,
        "no UnsafeKubeconfig Warning Event about africa: {reasons:?}"
    );

    // (b) a token file; it holds a token the API server accepts, so reading it would make africa reachable
    let token_file = dir.join("stolen-token");
    std::fs::write(&token_file, azora_tests::env::ADMIN_TOKEN).unwrap();
    let token_user = format!("    tokenFile: {}\n", token_file.display());
    fleet
        .put_kubeconfig_secret(
            "africa",
            Some(&kubeconfig_with_user(&fleet, "africa", &token_user)),
        )
        .await
        .unwrap();
    assert!(
        refused("token file").await,
        "token file not refused: {}\n{}",
        region_cluster(&fleet, "africa").await,
        fleet.log()
    );

    // (c) certificate files; the API server's own key pair (with which /version answers anonymously)
    let certs = dir.join("certs-africa");
    let cert_user = format!(
        "    client-certificate: {}\n    client-key: {}\n",
        certs.join("apiserver.crt").display(),
        certs.join("apiserver.key").display()
    );
    fleet
        .put_kubeconfig_secret(
            "africa",
            Some(&kubeconfig_with_user(&fleet, "africa", &cert_user)),
        )
        .await
        .unwrap();
    assert!(
        refused("certificate files").await,
        "certificate files not refused: {}\n{}",
        region_cluster(&fleet, "africa").await,
        fleet.log()
    );
    let t = fleet.tenant_object("ku").await.unwrap().unwrap();
    assert_eq!(region_state(&t, "africa").0, "Error", "{}", t["status"]);
    assert_eq!(condition(&t, "Ready").0, "False", "{}", t["status"]);
    assert!(!marker.exists(), "the exec plugin's command ran");

    // a good kubeconfig: picked up by the same operator process, the tenant placed in africa
    let operator_log = fleet.operator.as_ref().map(|o| o.log.clone());
    fleet.put_kubeconfig_secret("africa", None).await.unwrap();
    let t1 = Instant::now();
    let reachable = wait::until(Duration::from_secs(60), || async {
        let c = region_cluster(&fleet, "africa").await;
        c["reachable"] == json!(true) && c["reason"] == "Reachable"
    })
    .await;
    assert!(
        reachable,
        "good kubeconfig not picked up: {}\n{}",
        region_cluster(&fleet, "africa").await,
        fleet.log()
    );
    assert!(
        fleet
            .wait_condition("ku", "Ready", "True", Duration::from_secs(60))
            .await,
        "tenant not Ready after the fix: {}",
        fleet.tenant_object("ku").await.unwrap().unwrap()["status"]
    );
    println!(
        "good kubeconfig: region reachable and tenant Ready {:.1}s after the Secret changed",
        t1.elapsed().as_secs_f64()
    );
    assert_eq!(
        operator_log,
        fleet.operator.as_ref().map(|o| o.log.clone()),
        "operator restarted"
    );
    assert!(
        ns(&fleet, "africa", "tenant-ku").await.is_some(),
        "tenant-ku not placed in africa"
    );
    assert!(!marker.exists(), "the exec plugin's command ran");
}

// --- hole 9: a pre-existing namespace ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pre_existing_namespace_is_never_adopted_changed_or_deleted() {
    let mut fleet = Fleet::start(&["africa", "europe"]).await.unwrap();
    // someone else's namespace with the tenant's namespace name, with something in it
    let eur = fleet.regional("europe").await.unwrap();
    let namespaces: Api<Namespace> = Api::all(eur.clone());
    let theirs = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "tenant-t9", "labels": {"owner": "someone-else"}}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(eur.clone(), "tenant-t9");
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "precious"}, "data": {"k": "v"}})).unwrap(),
        )
        .await
        .unwrap();
    let labels_before = theirs.metadata.labels.clone().unwrap_or_default();

    fleet.start_operator(&[]).unwrap();
    fleet
        .tenant(
            "t9",
            json!({"homeRegion": "africa", "failoverRegions": ["europe"],
                   "quotas": {"cpu": "2", "pods": 5}, "limits": {"cpu": "100m"},
                   "adminGroups": ["t9:admins"], "network": {"defaultDeny": true}}),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    let conflict = wait::until(Duration::from_secs(90), || async {
        let t = fleet.tenant_object("t9").await.unwrap().unwrap();
        let (status, reason, _) = condition(&t, "Placed");
        let (state, message) = region_state(&t, "europe");
        status == "False"
            && reason == "NamespaceConflict"
            && state == "Error"
            && message.contains("tenant-t9")
            && region_state(&t, "africa").0 == "Synced"
    })
    .await;
    assert!(
        conflict,
        "namespace conflict not reported: {}\n{}",
        fleet.tenant_object("t9").await.unwrap().unwrap()["status"],
        fleet.log()
    );
    println!("conflict reported after {:.1}s", t0.elapsed().as_secs_f64());
    let t = fleet.tenant_object("t9").await.unwrap().unwrap();
    assert_eq!(condition(&t, "Ready").0, "False", "{}", t["status"]);
    // a few more reconciles (retries every 5 s) change nothing in the foreign namespace
    tokio::time::sleep(Duration::from_secs(12)).await;
    let now = ns(&fleet, "europe", "tenant-t9").await.expect("namespace exists");
    assert_eq!(now.metadata.uid, theirs.metadata.uid, "namespace replaced");
    assert_eq!(
        now.metadata.labels.clone().unwrap_or_default(),
        labels_before,
        "labels of the foreign namespace changed"
    );
    assert!(now.metadata.deletion_timestamp.is_none());
    assert_eq!(configmaps.get("precious").await.unwrap().data.unwrap()["k"], "v");
    let q: Api<ResourceQuota> = Api::namespaced(eur.clone(), "tenant-t9");
    let lr: Api<LimitRange> = Api::namespaced(eur.clone(), "tenant-t9");
    let np: Api<NetworkPolicy> = Api::namespaced(eur.clone(), "tenant-t9");
    let rb: Api<RoleBinding> = Api::namespaced(eur.clone(), "tenant-t9");
    let lp = ListParams::default();
    assert!(
        q.list(&lp).await.unwrap().items.is_empty(),
        "quota placed in a foreign namespace"
    );
    assert!(
        lr.list(&lp).await.unwrap().items.is_empty(),
        "limits placed in a foreign namespace"
    );
    assert!(
        np.list(&lp).await.unwrap().items.is_empty(),
        "policies placed in a foreign namespace"
    );
    assert!(
        rb.list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .all(|b| b.metadata.name.as_deref() != Some("tenant-admins")),
        "admin binding placed in a foreign namespace"
    );
    // africa got everything
    assert!(ns(&fleet, "africa", "tenant-t9").await.is_some());
    let aq: Api<ResourceQuota> = Api::namespaced(fleet.regional("africa").await.unwrap(), "tenant-t9");
    assert!(aq.get_opt("tenant-quota").await.unwrap().is_some());

    // deleting the tenant: africa cleaned, the foreign namespace left alone, the finalizer released
    let tenants: Api<DynamicObject> = Api::all_with(fleet.hub().await.unwrap(), &ar("Tenant", "tenants"));
    assert!(
        t["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "azora.io/tenant-cleanup")
    );
    tenants.delete("t9", &DeleteParams::default()).await.unwrap();
    let t1 = Instant::now();
    let gone = wait::until(Duration::from_secs(90), || async {
        fleet.tenant_object("t9").await.unwrap().is_none() && ns_gone(&fleet, "africa", "tenant-t9").await
    })
    .await;
    assert!(
        gone,
        "tenant or its africa namespace not gone: {:?}\n{}",
        fleet
            .tenant_object("t9")
            .await
            .unwrap()
            .map(|t| t["status"].clone()),
        fleet.log()
    );
    println!(
        "tenant deleted and africa cleaned after {:.1}s",
        t1.elapsed().as_secs_f64()
    );
    let still = ns(&fleet, "europe", "tenant-t9")
        .await
        .expect("foreign namespace deleted");
    assert_eq!(still.metadata.uid, theirs.metadata.uid);
    assert!(
        still.metadata.deletion_timestamp.is_none(),
        "foreign namespace being deleted"
    );
    assert_eq!(still.metadata.labels.unwrap_or_default(), labels_before);
    assert_eq!(configmaps.get("precious").await.unwrap().data.unwrap()["k"], "v");
}

// --- hole 7: a regional watch that never syncs -------------------------------------------------------------

/// The least-privilege regional role (regions/regional-cluster/rbac.yaml), with or without list/watch on
/// limitranges.
fn regional_rules(limitranges_listable: bool) -> Value {
    let lr_verbs = if limitranges_listable {
        json!(["get", "list", "watch", "create", "update", "patch", "delete"])
    } else {
        json!(["get", "create", "update", "patch", "delete"])
    };
    json!([
        {"apiGroups": [""], "resources": ["namespaces", "resourcequotas"],
         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["limitranges"], "verbs": lr_verbs},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"],
         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
         "resourceNames": ["admin"], "verbs": ["bind"]}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_regional_watch_that_never_syncs_becomes_an_error_instead_of_connecting_forever() {
    let mut fleet = Fleet::start(&["africa", "europe"]).await.unwrap();
    let user = "azora-no-limitrange-list";
    let eur = fleet.regional("europe").await.unwrap();
    let roles: Api<ClusterRole> = Api::all(eur.clone());
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "azora-regional-partial"},
                                           "rules": regional_rules(false)}))
            .unwrap(),
        )
        .await
        .unwrap();
    let bindings: Api<ClusterRoleBinding> = Api::all(eur.clone());
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "azora-regional-partial"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "azora-regional-partial"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // the identity really cannot list limitranges, and can list namespaces
    let as_user = fleet
        .env
        .server("europe")
        .unwrap()
        .client_as(user, &[])
        .await
        .unwrap();
    let denied = Api::<LimitRange>::all(as_user.clone())
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(&denied, Err(kube::Error::Api(s)) if s.code == 403),
        "{denied:?}"
    );
    Api::<Namespace>::all(as_user)
        .list(&ListParams::default())
        .await
        .unwrap();
    let kc = fleet
        .env
        .server("europe")
        .unwrap()
        .kubeconfig_as(user, &[], fleet.env.dir.path())
        .unwrap();
    fleet
        .put_kubeconfig_secret("europe", Some(&std::fs::read_to_string(kc).unwrap()))
        .await
        .unwrap();
    fleet
        .tenant(
            "w7",
            json!({"homeRegion": "africa", "failoverRegions": ["europe"], "limits": {"cpu": "100m"}}),
        )
        .await
        .unwrap();
    fleet.start_operator(&[]).unwrap();
    let t0 = Instant::now();

    let not_synced = wait::until(Duration::from_secs(90), || async {
        let c = region_cluster(&fleet, "europe").await;
        let m = c["message"].as_str().unwrap_or_default();
        c["reason"] == "WatchNotSynced" && m.contains("LimitRange") && m.contains("limitranges")
    })
    .await;
    assert!(
        not_synced,
        "unsynced watch not reported on the Region: {}\n{}",
        region_cluster(&fleet, "europe").await,
        fleet.log()
    );
    println!(
        "WatchNotSynced on the Region after {:.1}s: {}",
        t0.elapsed().as_secs_f64(),
        region_cluster(&fleet, "europe").await["message"]
    );
    let errored = wait::until(Duration::from_secs(60), || async {
        let t = fleet.tenant_object("w7").await.unwrap().unwrap();
        let (state, message) = region_state(&t, "europe");
        state == "Error" && message.contains("LimitRange") && region_state(&t, "africa").0 == "Synced"
    })
    .await;
    let t = fleet.tenant_object("w7").await.unwrap().unwrap();
    assert!(
        errored,
        "tenant does not report europe as Error: {}\n{}",
        t["status"],
        fleet.log()
    );
    println!(
        "tenant reports europe Error after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let (placed, _, placed_msg) = condition(&t, "Placed");
    assert_eq!(placed, "False", "{placed_msg}");
    assert_eq!(condition(&t, "Ready").0, "False");

    // the role fixed: the watch retries and syncs, the region becomes usable without a restart
    roles
        .patch(
            "azora-regional-partial",
            &PatchParams::default(),
            &Patch::Merge(json!({"rules": regional_rules(true)})),
        )
        .await
        .unwrap();
    let t1 = Instant::now();
    let fixed = wait::until(Duration::from_secs(120), || async {
        region_cluster(&fleet, "europe").await["reason"] == "Reachable"
            && fleet.condition("w7", "Ready").await.as_deref() == Some("True")
    })
    .await;
    assert!(
        fixed,
        "europe not usable after the role was fixed: {} {}\n{}",
        region_cluster(&fleet, "europe").await,
        fleet.tenant_object("w7").await.unwrap().unwrap()["status"],
        fleet.log()
    );
    println!(
        "role fixed: europe usable and tenant Ready after {:.1}s",
        t1.elapsed().as_secs_f64()
    );
    let lrs: Api<LimitRange> = Api::namespaced(eur, "tenant-w7");
    assert!(
        lrs.get_opt("tenant-limits").await.unwrap().is_some(),
        "LimitRange not placed in europe after the fix"
    );
}

// --- hole 1: failback never loses writes -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failback_brings_writes_made_in_the_failover_region_home_and_deletes_nothing() {
    let mut fleet = Fleet::start(&["africa", "europe"]).await.unwrap();
    fleet.start_operator(FAST).unwrap();
    fleet
        .tenant(
            "fb",
            json!({"homeRegion": "africa", "failoverRegions": ["europe"],
                   "residency": {"allowedContinents": ["Africa", "Europe"]}}),
        )
        .await
        .unwrap();
    assert!(
        fleet
            .wait_condition("fb", "Ready", "True", Duration::from_secs(90))
            .await,
        "fb not Ready\n{}",
        fleet.log()
    );
    let africa = fleet.store("africa").unwrap();
    let europe = fleet.store("europe").unwrap();
    let blob = |seed: u32, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(31).wrapping_add(seed) % 251) as u8)
            .collect()
    };
    // written in africa before the outage
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    expected.insert(
        "tenants/fb/keep-1.txt".into(),
        b"written in africa, kept".to_vec(),
    );
    expected.insert("tenants/fb/keep-2.bin".into(), blob(7, 300_000));
    expected.insert("tenants/fb/changed.txt".into(), b"first version, africa".to_vec());
    for (k, v) in &expected {
        africa.put_bytes(k, v.clone()).await.unwrap();
    }
    let want: BTreeMap<String, String> = expected.iter().map(|(k, v)| (k.clone(), sha(v))).collect();
    let replicated = wait::until(Duration::from_secs(60), || async {
        checksums(&fleet, "europe", "tenants/fb/").await == want
    })
    .await;
    assert!(replicated, "originals not replicated to europe\n{}", fleet.log());
    assert_eq!(
        tenant_status_str(&fleet, "fb", "replicationSource").await,
        "africa"
    );
    assert_eq!(tenant_status_str(&fleet, "fb", "activeRegion").await, "africa");

    // africa goes down for real: its S3 endpoint (what the Region probes) hangs
    fleet.s3.get("africa").unwrap().pause();
    let outage = Instant::now();
    let moved = wait::until(Duration::from_secs(120), || async {
        tenant_status_str(&fleet, "fb", "activeRegion").await == "europe"
    })
    .await;
    if !moved {
        fleet.s3.get("africa").unwrap().resume();
    }
    assert!(moved, "activeRegion did not move to europe\n{}", fleet.log());
    println!(
        "africa paused: activeRegion europe after {:.1}s",
        outage.elapsed().as_secs_f64()
    );
    // the tenant writes in europe while it is active there: new objects, and a new version of one
    let during: BTreeMap<String, Vec<u8>> = BTreeMap::from([
        (
            "tenants/fb/during-outage-1.txt".to_string(),
            b"written in europe during the outage".to_vec(),
        ),
        ("tenants/fb/during-outage-2.bin".to_string(), blob(11, 200_000)),
        (
            "tenants/fb/changed.txt".to_string(),
            b"second version, written in europe".to_vec(),
        ),
    ]);
    for (k, v) in &during {
        europe.put_bytes(k, v.clone()).await.unwrap();
        expected.insert(k.clone(), v.clone());
    }
    let switched = wait::until(Duration::from_secs(120), || async {
        tenant_status_str(&fleet, "fb", "replicationSource").await == "europe"
    })
    .await;
    if !switched {
        fleet.s3.get("africa").unwrap().resume();
    }
    assert!(
        switched,
        "replicationSource did not switch to europe: {}\n{}",
        fleet.tenant_object("fb").await.unwrap().unwrap()["status"],
        fleet.log()
    );
    println!(
        "replicationSource europe after {:.1}s of outage",
        outage.elapsed().as_secs_f64()
    );
    // longer than the delete delay, several replication rounds
    tokio::time::sleep(DELETE_DELAY + Duration::from_secs(8)).await;
    fleet.s3.get("africa").unwrap().resume();
    let resumed = Instant::now();
    println!(
        "africa resumed after {:.1}s of outage",
        outage.elapsed().as_secs_f64()
    );

    let back = wait::until(Duration::from_secs(120), || async {
        tenant_status_str(&fleet, "fb", "activeRegion").await == "africa"
    })
    .await;
    assert!(back, "activeRegion did not return to africa\n{}", fleet.log());
    println!(
        "activeRegion africa {:.1}s after the resume",
        resumed.elapsed().as_secs_f64()
    );
    let source_back = wait::until(Duration::from_secs(120), || async {
        tenant_status_str(&fleet, "fb", "replicationSource").await == "africa"
    })
    .await;
    assert!(
        source_back,
        "replicationSource did not return to africa: {}\n{}",
        fleet.tenant_object("fb").await.unwrap().unwrap()["status"],
        fleet.log()
    );
    println!(
        "replicationSource africa {:.1}s after the resume",
        resumed.elapsed().as_secs_f64()
    );
    // the source switched back only after the catch-up: africa already holds every write made in europe
    let at_switch = checksums(&fleet, "africa", "tenants/fb/").await;
    for (k, v) in &during {
        assert_eq!(
            at_switch.get(k),
            Some(&sha(v)),
            "{k}: written in europe, not in africa when replication switched back\n{}",
            fleet.log()
        );
    }

    // replication from africa again, for longer than the delete delay: nothing is lost or reverted
    assert!(
        fleet
            .wait_condition("fb", "Replicated", "True", Duration::from_secs(60))
            .await,
        "not Replicated after failback: {}",
        fleet.tenant_object("fb").await.unwrap().unwrap()["status"]
    );
    tokio::time::sleep(DELETE_DELAY + Duration::from_secs(8)).await;
    let want: BTreeMap<String, String> = expected.iter().map(|(k, v)| (k.clone(), sha(v))).collect();
    for region in ["africa", "europe"] {
        let got = checksums(&fleet, region, "tenants/fb/").await;
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "objects in {region}'s bucket\n{}",
            fleet.log()
        );
        for (k, sum) in &want {
            assert_eq!(got.get(k), Some(sum), "{k} in {region}: wrong content");
        }
    }
    assert_eq!(
        europe
            .get_bytes("tenants/fb/changed.txt")
            .await
            .unwrap()
            .as_deref(),
        Some(b"second version, written in europe".as_slice())
    );
    assert_eq!(
        africa
            .get_bytes("tenants/fb/changed.txt")
            .await
            .unwrap()
            .as_deref(),
        Some(b"second version, written in europe".as_slice())
    );
    // A failed scrape is an error; a labelled counter appears only once incremented, so a region that
    // copied (or deleted) nothing has no series: absent counts as none here.
    let count = |result: &'static str| {
        let fleet = &fleet;
        async move {
            let mut n = 0.0;
            for region in ["africa", "europe"] {
                n += fleet
                    .metric_if_present(&format!(
                        "azora_replication_objects_total{{region=\"{region}\",result=\"{result}\"}}"
                    ))
                    .await
                    .unwrap()
                    .unwrap_or(0.0);
            }
            n
        }
    };
    let copied = count("copied").await;
    assert!(copied >= 3.0, "metrics not read (copied = {copied})");
    let deleted = count("deleted").await;
    assert_eq!(deleted, 0.0, "replication deleted objects\n{}", fleet.log());
    println!("copies: {copied}, deletions: {deleted}");
    std::fs::write("/tmp/th-failback-operator.log", fleet.log()).unwrap(); // TEMP
}
