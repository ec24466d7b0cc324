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

/// Whether kubectl, given `kubeconfig`, gets an answer to `args` (proof that a kubeconfig would work if
/// the operator honoured it).
fn kubectl_succeeds(fleet: &Fleet, kubeconfig: &str, args: &[&str]) -> bool {
    let path = fleet.env.dir.path().join("kubectl-premise-kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    std::process::Command::new(azora_tests::tool("kubectl").unwrap())
        .arg("--kubeconfig")
        .arg(&path)
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
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
async fn unsafe_regional_kubeconfigs_are_refused_and_a_good_one_is_picked_up_without_a_restart() {
    let mut fleet = Fleet::start(&["africa", "europe"]).await.unwrap();
    let dir = fleet.env.dir.path().to_path_buf();
    let marker = dir.join("exec-plugin-ran");
    let touch = ["/usr/bin/touch", "/bin/touch"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap();
    // (a) an exec plugin that would leave a marker file behind, in place before the operator starts
    let exec_user = |marker: &std::path::Path| {
        format!(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: {touch}\n      args: [\"{}\"]\n",
            marker.display()
        )
    };
    // (kubectl runs such a plugin: the marker would appear if the operator did)
    let premise = dir.join("exec-plugin-ran-for-kubectl");
    kubectl_succeeds(
        &fleet,
        &kubeconfig_with_user(&fleet, "africa", &exec_user(&premise)),
        &["get", "--raw", "/version"],
    );
    assert!(premise.exists(), "premise: kubectl did not run the exec plugin");
    let exec_user = exec_user(&marker);
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
    assert!(
        kubectl_succeeds(
            &fleet,
            &kubeconfig_with_user(&fleet, "africa", &token_user),
            &["get", "namespace", "default"],
        ),
        "premise: the token file does not grant access"
    );
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
    assert!(
        kubectl_succeeds(
            &fleet,
            &kubeconfig_with_user(&fleet, "africa", &cert_user),
            &["get", "--raw", "/version"],
        ),
        "premise: the API server does not answer with these certificate files"
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
    let now = ns(&fleet, "europe", "tenant-t9").await.unwrap();
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
    let still = ns(&fleet, "europe", "tenant-t9").await;
    assert!(still.is_some(), "the foreign namespace was deleted");
    let still = still.unwrap();
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

const TENANT_PREFIX: &str = "tenants/fb/";
const CHANGED: &str = "tenants/fb/changed.txt";
const CHANGED_IN_EUROPE: &[u8] = b"second version, written in europe";

fn blob(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

/// Objects written in africa before the outage.
fn originals() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        (
            "tenants/fb/keep-1.txt".to_string(),
            b"written in africa, kept".to_vec(),
        ),
        ("tenants/fb/keep-2.bin".to_string(), blob(7, 300_000)),
        (CHANGED.to_string(), b"first version, written in africa".to_vec()),
    ])
}

/// Objects written in europe while it is the active region: two new ones and a new version of one.
fn written_in_europe() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        (
            "tenants/fb/during-outage-1.txt".to_string(),
            b"written in europe during the outage".to_vec(),
        ),
        ("tenants/fb/during-outage-2.bin".to_string(), blob(11, 200_000)),
        (CHANGED.to_string(), CHANGED_IN_EUROPE.to_vec()),
    ])
}

fn sums(objects: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    objects.iter().map(|(k, v)| (k.clone(), sha(v))).collect()
}

/// A replication counter of the operator (`result`: copied, deleted, failed) for objects written to `region`
/// (0 while the series does not exist; a failed scrape fails the test).
async fn replication_count(fleet: &Fleet, region: &str, result: &str) -> f64 {
    fleet
        .metric_if_present(&format!(
            "azora_replication_objects_total{{region=\"{region}\",result=\"{result}\"}}"
        ))
        .await
        .unwrap()
        .unwrap_or(0.0)
}

/// Starts a fleet and the operator (fast replication), creates tenant `fb` (home africa, failover europe),
/// writes the originals in africa and waits until europe holds them.
async fn failback_fleet() -> Fleet {
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
    for (k, v) in originals() {
        africa.put_bytes(&k, v).await.unwrap();
    }
    let want = sums(&originals());
    let replicated = wait::until(Duration::from_secs(60), || async {
        checksums(&fleet, "europe", TENANT_PREFIX).await == want
    })
    .await;
    assert!(replicated, "originals not replicated to europe\n{}", fleet.log());
    // no source recorded means the home region (nothing is written for a tenant that never moved)
    assert!(
        ["", "africa"].contains(
            &tenant_status_str(&fleet, "fb", "replicationSource")
                .await
                .as_str()
        ),
        "replication copies from home before the outage"
    );
    assert_eq!(tenant_status_str(&fleet, "fb", "activeRegion").await, "africa");
    fleet
}

/// Waits until a status field of `fb` has `value` (fails with the status and the operator's log).
async fn await_status(fleet: &Fleet, field: &str, value: &str) {
    let ok = wait::until(Duration::from_secs(120), || async {
        tenant_status_str(fleet, "fb", field).await == value
    })
    .await;
    assert!(
        ok,
        "{field} never became {value}: {}\n{}",
        fleet.tenant_object("fb").await.unwrap().unwrap()["status"],
        fleet.log()
    );
}

/// After the failback: replication from africa again for longer than the delete delay, then both buckets
/// hold exactly the originals with europe's writes on top, byte for byte, and nothing was ever deleted.
async fn assert_nothing_lost(fleet: &Fleet) {
    assert!(
        fleet
            .wait_condition("fb", "Replicated", "True", Duration::from_secs(60))
            .await,
        "not Replicated after failback: {}",
        fleet.tenant_object("fb").await.unwrap().unwrap()["status"]
    );
    tokio::time::sleep(DELETE_DELAY + Duration::from_secs(8)).await;
    let mut expected = originals();
    expected.extend(written_in_europe());
    let want = sums(&expected);
    for region in ["africa", "europe"] {
        let got = checksums(fleet, region, TENANT_PREFIX).await;
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "objects in {region}'s bucket\n{}",
            fleet.log()
        );
        for (k, sum) in &want {
            assert_eq!(got.get(k), Some(sum), "{k} in {region}: wrong content");
        }
        assert_eq!(
            fleet
                .store(region)
                .unwrap()
                .get_bytes(CHANGED)
                .await
                .unwrap()
                .as_deref(),
            Some(CHANGED_IN_EUROPE),
            "{CHANGED} in {region} is not europe's version"
        );
    }
    let copied = replication_count(fleet, "africa", "copied").await
        + replication_count(fleet, "europe", "copied").await;
    assert!(copied >= 3.0, "copied = {copied}");
    let deleted = replication_count(fleet, "africa", "deleted").await
        + replication_count(fleet, "europe", "deleted").await;
    assert_eq!(deleted, 0.0, "replication deleted objects\n{}", fleet.log());
    println!("objects copied: {copied}, deleted: {deleted}");
}

/// The failback as the outage really goes: africa's S3 endpoint (which its Region probes) hangs and comes
/// back; whichever way the operator brings europe's writes home, none is lost, reverted or deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failback_brings_writes_made_in_the_failover_region_home_and_deletes_nothing() {
    let fleet = failback_fleet().await;
    let africa_s3 = fleet.s3.get("africa").unwrap();

    // africa goes down for real: its S3 endpoint (what the Region probes) hangs
    africa_s3.pause();
    let outage = Instant::now();
    await_status(&fleet, "activeRegion", "europe").await;
    println!(
        "africa paused: activeRegion europe after {:.1}s",
        outage.elapsed().as_secs_f64()
    );
    let europe = fleet.store("europe").unwrap();
    for (k, v) in written_in_europe() {
        europe.put_bytes(&k, v).await.unwrap();
    }
    await_status(&fleet, "replicationSource", "europe").await;
    println!(
        "replicationSource europe after {:.1}s of outage",
        outage.elapsed().as_secs_f64()
    );
    // longer than the delete delay, several replication rounds
    tokio::time::sleep(DELETE_DELAY + Duration::from_secs(8)).await;
    africa_s3.resume();
    let resumed = Instant::now();
    println!(
        "africa resumed after {:.1}s of outage",
        outage.elapsed().as_secs_f64()
    );

    await_status(&fleet, "activeRegion", "africa").await;
    println!(
        "activeRegion africa {:.1}s after the resume",
        resumed.elapsed().as_secs_f64()
    );
    await_status(&fleet, "replicationSource", "africa").await;
    println!(
        "replicationSource africa {:.1}s after the resume",
        resumed.elapsed().as_secs_f64()
    );
    // replication switched back only once africa held every write made in europe
    let at_switch = checksums(&fleet, "africa", TENANT_PREFIX).await;
    for (k, sum) in sums(&written_in_europe()) {
        assert_eq!(
            at_switch.get(&k),
            Some(&sum),
            "{k}: written in europe, not in africa when replication switched back\n{}",
            fleet.log()
        );
    }
    assert_nothing_lost(&fleet).await;
}

/// The failback with africa's verdict back before its bucket answers (its probe endpoint is a separate
/// server): no replication from europe can run in between, so what europe's writes reach africa through is
/// the catch-up — exactly the objects written in europe, before replication copies from africa again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failback_catches_up_writes_from_the_failover_region_before_replicating_from_home_again() {
    // africa is probed on a server of its own, so its verdict and its bucket can come back separately
    let mut fleet = Fleet::start(&["africa", "europe"]).await.unwrap();
    let probe = azora_tests::s3::S3Server::start(fleet.env.dir.path().join("probe-africa.log"))
        .await
        .unwrap();
    let regions: Api<DynamicObject> = Api::all_with(fleet.hub().await.unwrap(), &ar("Region", "regions"));
    regions
        .patch(
            "africa",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"probes": {"endpoints": [
                {"name": "s3", "type": "HTTP", "url": format!("{}/", probe.endpoint)}
            ]}}})),
        )
        .await
        .unwrap();
    let fleet = {
        // the same steps as failback_fleet, on this fleet
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
        for (k, v) in originals() {
            africa.put_bytes(&k, v).await.unwrap();
        }
        let want = sums(&originals());
        let replicated = wait::until(Duration::from_secs(60), || async {
            checksums(&fleet, "europe", TENANT_PREFIX).await == want
        })
        .await;
        assert!(replicated, "originals not replicated to europe\n{}", fleet.log());
        // no source recorded means the home region
        assert!(
            ["", "africa"].contains(
                &tenant_status_str(&fleet, "fb", "replicationSource")
                    .await
                    .as_str()
            ),
            "replication copies from home before the outage"
        );
        fleet
    };
    let africa_s3 = fleet.s3.get("africa").unwrap();
    assert_eq!(replication_count(&fleet, "africa", "copied").await, 0.0);

    // africa down: its probe endpoint and its bucket hang
    probe.pause();
    africa_s3.pause();
    let outage = Instant::now();
    await_status(&fleet, "activeRegion", "europe").await;
    let europe = fleet.store("europe").unwrap();
    for (k, v) in written_in_europe() {
        europe.put_bytes(&k, v).await.unwrap();
    }
    await_status(&fleet, "replicationSource", "europe").await;
    println!(
        "activeRegion and replicationSource europe after {:.1}s of outage",
        outage.elapsed().as_secs_f64()
    );

    // africa's verdict comes back while its bucket still hangs: the tenant is active there again, the source
    // moves to africa at once, and europe (the former source) must catch up first: nothing is copied into
    // europe, and nothing can have been copied to africa yet
    probe.resume();
    let back = Instant::now();
    await_status(&fleet, "activeRegion", "africa").await;
    println!(
        "activeRegion africa {:.1}s after the verdict's endpoint resumed",
        back.elapsed().as_secs_f64()
    );
    let catch_up = |t: &serde_json::Value| -> Vec<String> {
        t["status"]["replicationCatchUp"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let waiting = wait::until(Duration::from_secs(120), || async {
        let t = fleet.tenant_object("fb").await.unwrap().unwrap();
        let (status, _, message) = condition(&t, "Replicated");
        t["status"]["replicationSource"] == "africa"
            && catch_up(&t) == ["europe"]
            && status == "False"
            && message.contains("catching up from europe")
    })
    .await;
    assert!(
        waiting,
        "replication not waiting to catch up from europe: {}\n{}",
        fleet.tenant_object("fb").await.unwrap().unwrap()["status"],
        fleet.log()
    );
    assert_eq!(
        replication_count(&fleet, "africa", "copied").await,
        0.0,
        "copied to africa while its bucket hung"
    );

    // the bucket answers again: the catch-up copies europe's writes, then replication copies from africa
    africa_s3.resume();
    let resumed = Instant::now();
    let caught_up = wait::until(Duration::from_secs(120), || async {
        let t = fleet.tenant_object("fb").await.unwrap().unwrap();
        catch_up(&t).is_empty()
    })
    .await;
    assert!(caught_up, "catch-up from europe never finished\n{}", fleet.log());
    println!(
        "caught up from europe {:.1}s after the bucket resumed",
        resumed.elapsed().as_secs_f64()
    );
    let at_switch = checksums(&fleet, "africa", TENANT_PREFIX).await;
    for (k, sum) in sums(&written_in_europe()) {
        assert_eq!(
            at_switch.get(&k),
            Some(&sum),
            "{k}: written in europe, not in africa when replication switched back\n{}",
            fleet.log()
        );
    }
    // only what was written in europe came to africa; the unchanged replicas of africa's own data did not
    assert_eq!(
        replication_count(&fleet, "africa", "copied").await,
        written_in_europe().len() as f64,
        "catch-up copied more or less than europe's writes\n{}",
        fleet.log()
    );
    assert!(
        fleet
            .log()
            .contains("caught up: what was written there is at the source now"),
        "{}",
        fleet.log()
    );
    assert_nothing_lost(&fleet).await;
}
