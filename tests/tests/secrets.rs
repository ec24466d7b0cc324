//! Secret rotation on real parts: a hub and two regional kube-apiservers, one real OpenBao server per region
//! (raft storage, audit device from the config, Kubernetes auth checking the operator's ServiceAccount token
//! with a TokenReview against the hub), and the real operator binary.
//!
//! A tenant secret in africa + europe gets its first version written with check-and-set in africa's OpenBao,
//! replicated to europe's, and synced into the target Secret of both regional clusters; a forced rotation
//! moves every region to version 2 with the previous value kept for the grace period only; a version written
//! by hand is detected, reported and not overwritten; a sealed OpenBao holds back only its own region, which
//! catches up after unsealing; the value never appears in the operator's log, Events, status or metrics,
//! and OpenBao's audit log records the operator's requests.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use azora_tests::fleet::Fleet;
use azora_tests::openbao::OpenBao;
use azora_tests::scenario::ar;
use azora_tests::wait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Event, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const PATH: &str = "tenants/acme/db";
const TIMEOUT: Duration = Duration::from_secs(90);

async fn secret_status(fleet: &Fleet) -> Value {
    fleet
        .tenant_object("acme")
        .await
        .unwrap()
        .map(|t| t["status"]["secrets"][0].clone())
        .unwrap_or(Value::Null)
}

/// Whether the hub has an Event with `reason`.
async fn has_event(fleet: &Fleet, reason: &str) -> bool {
    fleet
        .events()
        .await
        .unwrap()
        .iter()
        .any(|e| e.reason.as_deref() == Some(reason))
}

fn region<'a>(st: &'a Value, r: &str) -> &'a Value {
    st["regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|x| x["region"] == r))
        .unwrap_or(&Value::Null)
}

async fn wait_status(fleet: &Fleet, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let r = azora_tests::wait::value(TIMEOUT, || secret_status(fleet), f).await;
    let ok = r.is_ok();
    let (Ok(st) | Err(st)) = r;
    assert!(
        ok,
        "{what}: secret status {st:#}\noperator log tail:\n{}",
        tail(&fleet.log())
    );
    st
}

/// Drops every secret from acme's spec and waits until its status holds neither a secret nor a copy still
/// being retired (`what`: the failure message).
async fn drop_every_secret(fleet: &Fleet, what: &str) {
    patch_acme(fleet, json!({"spec": {"secrets": []}})).await;
    let clean = azora_tests::wait::value(
        TIMEOUT,
        || async { fleet.tenant_object("acme").await.unwrap().unwrap()["status"].clone() },
        |s| {
            ["secrets", "retiringSecrets"]
                .iter()
                .all(|k| s[*k].as_array().is_none_or(Vec::is_empty))
        },
    )
    .await;
    let ok = clean.is_ok();
    let (Ok(status) | Err(status)) = clean;
    assert!(ok, "{what}: {status:#}\n{}", tail(&fleet.log()));
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The `VaultReachable` condition of a Region: (status, reason).
async fn vault_reachable(fleet: &Fleet, r: &str) -> (String, String) {
    let regions: Api<DynamicObject> = Api::all_with(fleet.hub().await.unwrap(), &ar("Region", "regions"));
    let region = regions.get(r).await.unwrap();
    let c = region
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "VaultReachable"))
        .cloned()
        .unwrap_or(Value::Null);
    let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (text("status"), text("reason"))
}

async fn target(fleet: &Fleet, r: &str) -> Option<Secret> {
    let api: Api<Secret> = Api::namespaced(fleet.regional(r).await.unwrap(), "tenant-acme");
    api.get_opt("db-credentials").await.unwrap()
}

fn value_of(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8(b.0.clone()).unwrap())
}

async fn rotate_now(fleet: &Fleet, token: &str) {
    patch_acme(
        fleet,
        json!({"metadata": {"annotations": {"azora.io/rotate-now": token}}}),
    )
    .await;
}

/// A merge patch of the Tenant `acme`.
async fn patch_acme(fleet: &Fleet, patch: Value) {
    let api: Api<DynamicObject> = Api::all_with(fleet.hub().await.unwrap(), &ar("Tenant", "tenants"));
    api.patch("acme", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// The operator's ServiceAccount in the hub, allowed to have tokens reviewed (OpenBao reviews with the
/// caller's own token), and a token for it in a file the operator logs in with.
async fn service_account_token(fleet: &Fleet) -> std::path::PathBuf {
    let hub = fleet.hub().await.unwrap();
    let ns: Api<Namespace> = Api::all(hub.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "azora-system"}})).unwrap(),
    )
    .await
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(hub.clone(), "azora-system");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "azora-operator"}})).unwrap(),
    )
    .await
    .unwrap();
    let crbs: Api<ClusterRoleBinding> = Api::all(hub.clone());
    crbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "azora-operator-tokenreview"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"kind": "ServiceAccount", "name": "azora-operator", "namespace": "azora-system"}]
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let tr = sas
        .create_token_request(
            "azora-operator",
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(3600),
                    ..TokenRequestSpec::default()
                },
                ..TokenRequest::default()
            },
        )
        .await
        .unwrap();
    let token = tr.status.unwrap().token;
    let file = fleet.env.dir.path().join("sa-token");
    std::fs::write(&file, token).unwrap();
    file
}

/// A Deployment `api` in europe's `tenant-acme` that asks to be restarted when `wants` rotates.
async fn consumer(fleet: &Fleet, wants: &str) -> Api<Deployment> {
    let deployments: Api<Deployment> =
        Api::namespaced(fleet.regional("europe").await.unwrap(), "tenant-acme");
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "api", "annotations": {"azora.io/restart-on-rotation": wants}},
                "spec": {"selector": {"matchLabels": {"app": "api"}},
                         "template": {"metadata": {"labels": {"app": "api"}},
                                      "spec": {"containers": [{"name": "api", "image": "api:1"}]}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    deployments
}

fn secret_spec(grace: &str, extra: Value) -> Value {
    let mut s = json!({"name": "db", "vaultPath": PATH, "targetSecret": "db-credentials",
                       "rotateEvery": "30d", "gracePeriod": grace,
                       "generator": {"length": 40, "key": "password"}});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    s
}

/// Two regions with their OpenBao servers (Kubernetes auth against the hub), Regions pointing at them, the
/// tenant `acme` with one secret, and the operator's token file.
async fn setup(grace: &str, extra: Value) -> (Fleet, HashMap<&'static str, OpenBao>, String) {
    let fleet = Fleet::start(&["africa", "europe"]).await.unwrap();
    let policy = std::fs::read_to_string(azora_tests::repo_root().join("regions/vault-policy.hcl")).unwrap();
    let mut baos = HashMap::new();
    for r in ["africa", "europe"] {
        let bao = OpenBao::start(fleet.env.dir.path(), r).await.unwrap();
        bao.kubernetes_auth(
            fleet.env.hub(),
            "azora-operator",
            "azora-system",
            "azora-operator",
            &policy,
            "1h",
        )
        .await
        .unwrap();
        baos.insert(r, bao);
    }
    let jwt = service_account_token(&fleet).await;
    let hub = fleet.hub().await.unwrap();
    let regions: Api<DynamicObject> = Api::all_with(hub.clone(), &ar("Region", "regions"));
    for r in ["africa", "europe"] {
        regions
            .patch(
                r,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"vault": {
                    "address": baos[r].address, "kvMount": "secret",
                    "kubernetesAuth": {"role": "azora-operator"}}}})),
            )
            .await
            .unwrap();
    }
    fleet
        .tenant(
            "acme",
            json!({"homeRegion": "africa", "failoverRegions": ["europe"],
                   "secrets": [secret_spec(grace, extra)]}),
        )
        .await
        .unwrap();
    (fleet, baos, jwt.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_rotate_replicate_and_sync_with_real_openbao() {
    let (mut fleet, baos, jwt_arg) = setup("20s", json!({"restartWorkloads": true})).await;
    let hub = fleet.hub().await.unwrap();
    fleet.start_operator(&["--vault-jwt-file", &jwt_arg]).unwrap();

    // 1. First version: written in africa with check-and-set, replicated to europe, synced in both clusters.
    let st = wait_status(&fleet, "first version everywhere", |st| {
        st["phase"] == "Done" && st["version"] == 1
    })
    .await;
    assert_eq!(region(&st, "africa")["syncedVersion"], 1);
    assert_eq!(region(&st, "europe")["vaultVersion"], 1);
    assert_eq!(region(&st, "europe")["syncedVersion"], 1);
    let (v, custom) = baos["africa"].meta(PATH).await.unwrap();
    assert_eq!(v, 1, "exactly one version in africa");
    assert_eq!(
        custom.get("azora.io/rotation-id"),
        st["rotationId"].as_str().map(String::from).as_ref()
    );
    let first = baos["africa"].read(PATH, 1).await.unwrap()["password"].clone();
    assert_eq!(first.len(), 40);
    assert_eq!(baos["europe"].read(PATH, 1).await.unwrap()["password"], first);
    for r in ["africa", "europe"] {
        let s = target(&fleet, r).await.expect("target Secret");
        assert_eq!(value_of(&s, "password").as_deref(), Some(first.as_str()), "{r}");
        let ann = s.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(ann.get("azora.io/secret-version").map(String::as_str), Some("1"));
        assert!(value_of(&s, "previous-password").is_none());
    }

    // A workload consuming the secret: seen first (recorded, not restarted), restarted once per new version.
    let deployments = consumer(&fleet, "db-credentials").await;
    let recorded = wait::until(TIMEOUT, || async {
        deployments.get("api").await.ok().is_some_and(|d| {
            d.metadata
                .annotations
                .unwrap_or_default()
                .get("azora.io/consumed-db")
                .map(String::as_str)
                == Some("1")
        })
    })
    .await;
    assert!(recorded, "the workload's consumed version was not recorded");
    // (Deployments count metadata changes in their generation too, so the pod template is what says.)
    let template = |d: Deployment| {
        d.spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .unwrap_or_default()
    };
    let d = deployments.get("api").await.unwrap();
    assert!(
        !template(d).contains_key("azora.io/rotated-db"),
        "restarted on first sight"
    );

    // People touch the copies between rotations: europe's target Secret gets an annotation and a key of
    // theirs, europe's replica a version written by hand. The next rotation finds both changed (the
    // operator's record of its own last writes no longer matches), replaces the replica (a mirror of the
    // home Vault) and keeps what people added to the Secret beside its own keys.
    let europe_secrets: Api<Secret> = Api::namespaced(fleet.regional("europe").await.unwrap(), "tenant-acme");
    europe_secrets
        .patch(
            "db-credentials",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"team": "payments"}},
                                            "data": {"extra": "dGhlaXJz"}})),
        )
        .await
        .unwrap();
    let by_hand = baos["europe"]
        .put(
            PATH,
            &HashMap::from([("password".to_string(), "replica-by-hand".to_string())]),
        )
        .await
        .unwrap();
    assert_eq!(by_hand, 2);

    // 2. A forced rotation: every region moves to version 2; the previous value stays for the grace period.
    rotate_now(&fleet, "r1").await;
    let st = wait_status(&fleet, "version 2 everywhere", |st| {
        st["phase"] == "Done" && st["version"] == 2
    })
    .await;
    assert_eq!(st["rotateNowHandled"], "r1");
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        2,
        "one new version, not two"
    );
    let second = baos["africa"].read(PATH, 2).await.unwrap()["password"].clone();
    assert_ne!(second, first);
    assert_eq!(
        baos["europe"].meta(PATH).await.unwrap().0,
        3,
        "europe's replica: version 1, the hand write, the rotation"
    );
    assert_eq!(baos["europe"].read(PATH, 3).await.unwrap()["password"], second);
    let touched = target(&fleet, "europe").await.unwrap();
    assert_eq!(value_of(&touched, "extra").as_deref(), Some("theirs"));
    assert_eq!(
        touched
            .metadata
            .annotations
            .unwrap_or_default()
            .get("team")
            .map(String::as_str),
        Some("payments")
    );
    for r in ["africa", "europe"] {
        let s = target(&fleet, r).await.unwrap();
        assert_eq!(value_of(&s, "password").as_deref(), Some(second.as_str()), "{r}");
        assert_eq!(
            value_of(&s, "previous-password").as_deref(),
            Some(first.as_str()),
            "{r}"
        );
    }
    let restarted = wait::until(TIMEOUT, || async {
        deployments
            .get("api")
            .await
            .ok()
            .is_some_and(|d| template(d).get("azora.io/rotated-db").map(String::as_str) == Some("2"))
    })
    .await;
    assert!(restarted, "the workload was not restarted for version 2");
    let gone = wait::until(TIMEOUT, || async {
        let mut all = true;
        for r in ["africa", "europe"] {
            let s = target(&fleet, r).await.unwrap();
            all &= value_of(&s, "previous-password").is_none()
                && value_of(&s, "password").as_deref() == Some(second.as_str());
        }
        all
    })
    .await;
    assert!(gone, "the previous value outlived the grace period");

    // 3. A version written by hand: detected, reported, not overwritten, replicated as the current one.
    let manual = "written-by-hand-not-by-the-operator";
    let v3 = baos["africa"]
        .put(
            PATH,
            &HashMap::from([("password".to_string(), manual.to_string())]),
        )
        .await
        .unwrap();
    assert_eq!(v3, 3);
    let st = wait_status(&fleet, "hand write reported", |st| {
        st["version"] == 3 && st["reason"] == "CasConflict" && st["phase"] == "Done"
    })
    .await;
    assert!(
        st["message"].as_str().unwrap().contains("not overwritten"),
        "{st:#}"
    );
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        3,
        "the hand-written version was overwritten"
    );
    // (europe's own numbering: version 1, the hand write there, the rotation, then this one.)
    assert_eq!(baos["europe"].read(PATH, 4).await.unwrap()["password"], manual);
    let events: Api<Event> = Api::all(hub.clone());
    let warned = wait::until(TIMEOUT, || async {
        events
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .any(|e| e.reason.as_deref() == Some("SecretChangedOutside"))
            })
            .unwrap_or(false)
    })
    .await;
    assert!(warned, "no SecretChangedOutside event");

    // 4. A sealed OpenBao in europe: africa rotates, status names europe, europe catches up after unsealing.
    baos["europe"].seal().await.unwrap();
    rotate_now(&fleet, "r2").await;
    let st = wait_status(&fleet, "europe held back by its sealed vault", |st| {
        st["version"] == 4
            && st["phase"] == "Replicating"
            && region(st, "europe")["message"]
                .as_str()
                .is_some_and(|m| m.contains("sealed"))
            && region(st, "africa")["syncedVersion"] == 4
    })
    .await;
    assert!(st["message"].as_str().unwrap().contains("europe"), "{st:#}");
    // The Region says so too, for whoever looks at regions first.
    assert_eq!(
        vault_reachable(&fleet, "europe").await,
        ("False".to_string(), "VaultSealed".to_string())
    );
    assert_eq!(vault_reachable(&fleet, "africa").await.0, "True");
    let fourth = baos["africa"].read(PATH, 4).await.unwrap()["password"].clone();
    assert_eq!(
        value_of(&target(&fleet, "africa").await.unwrap(), "password").as_deref(),
        Some(fourth.as_str())
    );
    baos["europe"].unseal().await.unwrap();
    wait_status(&fleet, "europe caught up", |st| {
        st["phase"] == "Done"
            && region(st, "europe")["vaultVersion"] == 4
            && region(st, "europe")["syncedVersion"] == 4
    })
    .await;
    assert_eq!(baos["europe"].read(PATH, 5).await.unwrap()["password"], fourth);
    assert_eq!(
        vault_reachable(&fleet, "europe").await,
        ("True".to_string(), "Answering".to_string())
    );
    assert_eq!(baos["africa"].meta(PATH).await.unwrap().0, 4, "no rotation twice");

    // 4b. One secret rotated with `kubectl azora rotate <tenant>/<secret> --wait`: exit 0 only once every region
    // holds the new version (exactly one more in OpenBao); a secret the tenant does not have is refused.
    let kc = fleet.env.hub().kubeconfig.clone();
    let run = azora_tests::operator::plugin(
        &kc,
        &["rotate", "acme/db", "--wait", "--timeout", "120s"],
        Duration::from_secs(150),
    )
    .await
    .unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    let st = fleet.tenant_object("acme").await.unwrap().unwrap()["status"]["secrets"][0].clone();
    assert_eq!(st["version"], 5, "{st:#}");
    assert_eq!(region(&st, "europe")["vaultVersion"], 5, "{st:#}");
    assert_eq!(region(&st, "europe")["syncedVersion"], 5, "{st:#}");
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        5,
        "exactly one new version"
    );
    let bad = azora_tests::operator::plugin(&kc, &["rotate", "acme/nosuch"], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        bad.code == 1 && bad.stderr.contains("has no secret nosuch"),
        "{bad:?}"
    );
    // Taking the secret's request away again is no new request: nothing rotates.
    patch_acme(
        &fleet,
        json!({"metadata": {"annotations": {"azora.io/rotate-now.db": null}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        5,
        "removing a rotate-now annotation rotated the secret again"
    );

    // 4c. The value leaks: `kubectl azora rotate acme/db --leaked --wait` rotates at once without a grace
    // period (no `previous-` key anywhere, though the grace is 20 s) and destroys every older version in
    // both regions' Vaults — the leaked value is gone everywhere — before it reports done.
    let fifth = baos["africa"].read(PATH, 5).await.unwrap()["password"].clone();
    let run = azora_tests::operator::plugin(
        &kc,
        &["rotate", "acme/db", "--leaked", "--wait", "--timeout", "120s"],
        Duration::from_secs(150),
    )
    .await
    .unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    let st = fleet.tenant_object("acme").await.unwrap().unwrap()["status"]["secrets"][0].clone();
    assert_eq!(st["version"], 6, "{st:#}");
    assert_eq!(st["revocation"]["version"], 6, "{st:#}");
    assert!(st["revocation"]["regions"].is_null(), "{st:#}");
    assert!(
        st["previousUntil"].is_null(),
        "a grace period after a leak: {st:#}"
    );
    assert_eq!(baos["africa"].live_versions(PATH).await.unwrap(), vec![6]);
    let europe_live = baos["europe"].live_versions(PATH).await.unwrap();
    assert_eq!(
        europe_live.len(),
        1,
        "europe keeps older versions: {europe_live:?}"
    );
    let sixth = baos["africa"].read(PATH, 6).await.unwrap()["password"].clone();
    assert_ne!(sixth, fifth);
    assert_eq!(
        baos["europe"].read(PATH, europe_live[0]).await.unwrap()["password"],
        sixth
    );
    for r in ["africa", "europe"] {
        let s = target(&fleet, r).await.unwrap();
        assert_eq!(value_of(&s, "password").as_deref(), Some(sixth.as_str()), "{r}");
        assert!(
            value_of(&s, "previous-password").is_none(),
            "{r}: the leaked value stayed for the grace period"
        );
    }
    assert!(
        has_event(&fleet, "SecretLeakRevoked").await,
        "no SecretLeakRevoked event"
    );

    // 5. No value anywhere but Vault and the target Secrets.
    let metrics = fleet.metrics_text().await.unwrap();
    assert!(
        metrics.contains("azora_secret_rotations_total{result=\"rotated\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("azora_secret_next_rotation_timestamp{secret=\"db\",tenant=\"acme\"}"));
    let tenant = serde_json::to_string(&fleet.tenant_object("acme").await.unwrap()).unwrap();
    let evs = serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items).unwrap();
    let log = fleet.log();
    for (i, v) in [&first, &second, &fourth, &fifth, &sixth].into_iter().enumerate() {
        for (what, text) in [
            ("log", &log),
            ("events", &evs),
            ("status", &tenant),
            ("metrics", &metrics),
        ] {
            assert!(
                !text.contains(v.as_str()),
                "value {i} found in the operator's {what}"
            );
        }
    }

    // 6. OpenBao's audit log records the operator's requests (Kubernetes login, KV writes), values hashed.
    let audit = baos["africa"].audit_log();
    assert!(
        audit.contains("\"path\":\"auth/kubernetes/login\""),
        "no login in the audit log"
    );
    assert!(
        audit.contains("\"path\":\"secret/data/tenants/acme/db\""),
        "no KV write in the audit log"
    );
    assert!(
        audit.contains("kubernetes-azora-system-azora-operator"),
        "requests not by the operator's identity"
    );
    for v in [&first, &second, &fourth, &fifth, &sixth] {
        assert!(!audit.contains(v.as_str()), "a value in clear in the audit log");
    }

    // 7. The secret moves to another Vault path: it starts over there (version 1 in both regions, synced),
    // the old path's replica in europe is destroyed, and africa's Vault (the home) keeps the old path.
    const MOVED: &str = "tenants/acme/db-moved";
    patch_acme(&fleet, json!({"spec": {"secrets": [secret_spec("20s", json!({"vaultPath": MOVED, "restartWorkloads": true}))]}})).await;
    let st = wait_status(&fleet, "the moved secret settled at its new path", |st| {
        st["vaultPath"] == MOVED && st["phase"] == "Done" && st["version"] == 1
    })
    .await;
    let moved = baos["africa"].read(MOVED, 1).await.unwrap()["password"].clone();
    assert_eq!(
        baos["europe"].read(MOVED, 1).await.unwrap()["password"],
        moved,
        "{st:#}"
    );
    let retired_old = wait::until(TIMEOUT, || async {
        let status = fleet.tenant_object("acme").await.unwrap().unwrap()["status"].clone();
        baos["europe"].meta(PATH).await.unwrap().0 == 0
            && status["retiringSecrets"].as_array().is_none_or(Vec::is_empty)
    })
    .await;
    assert!(
        retired_old,
        "europe's copy at the old path stayed, or its retirement was never finished"
    );
    assert_eq!(
        baos["africa"].read(PATH, 6).await.unwrap()["password"],
        sixth,
        "the home's copy at the old path was touched"
    );
    for r in ["africa", "europe"] {
        let s = target(&fleet, r)
            .await
            .expect("the target Secret stays with the secret");
        assert_eq!(value_of(&s, "password").as_deref(), Some(moved.as_str()), "{r}");
    }

    // 8. The secret leaves the spec: its target Secrets leave both clusters and its replica europe's Vault;
    // the home Vault keeps its copy (the source of truth); the status forgets it once all is clean.
    drop_every_secret(&fleet, "the dropped secret was not retired").await;
    for r in ["africa", "europe"] {
        assert!(target(&fleet, r).await.is_none(), "{r}: the target Secret stayed");
    }
    assert_eq!(
        baos["europe"].meta(MOVED).await.unwrap().0,
        0,
        "europe's replica stayed"
    );
    assert_eq!(
        baos["africa"].read(MOVED, 1).await.unwrap()["password"],
        moved,
        "the home's copy was destroyed"
    );
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("SecretRetired"))
        .filter_map(|e| e.message)
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains(MOVED) && n.contains("db-credentials")),
        "no SecretRetired event for the dropped secret: {notes:?}"
    );
}

/// Waits until `f` holds for africa's OpenBao metadata of the secret.
async fn wait_vault(bao: &OpenBao, what: &str, f: impl Fn(u64, &HashMap<String, String>) -> bool) {
    let read = || async { bao.meta(PATH).await.unwrap_or_default() };
    let r = azora_tests::wait::value(TIMEOUT, read, |(v, c)| f(*v, c)).await;
    let ok = r.is_ok();
    let (Ok((v, custom)) | Err((v, custom))) = r;
    assert!(ok, "{what}: version {v}, {custom:?}");
}

/// The operator SIGKILLed at three points of a rotation — recorded but not written (africa's OpenBao refusing
/// the write by policy), written in africa but not replicated (europe's OpenBao hanging), written in both
/// Vaults but not synced (europe's API server hanging) — and restarted once the fault is gone: every time
/// exactly one new version exists in each OpenBao (their version numbers) and every region converges to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_killed_at_any_point_happens_exactly_once() {
    let (mut fleet, baos, jwt_arg) = setup("1h", json!({})).await;
    let restart = |fleet: &mut Fleet| {
        fleet.kill_operator();
        fleet.start_operator(&["--vault-jwt-file", &jwt_arg]).unwrap();
    };
    restart(&mut fleet);
    wait_status(&fleet, "first version everywhere", |st| {
        st["phase"] == "Done" && st["version"] == 1
    })
    .await;
    let synced = |st: &Value, v: u64| {
        st["phase"] == "Done"
            && st["version"] == v
            && ["africa", "europe"]
                .iter()
                .all(|r| region(st, r)["vaultVersion"] == v && region(st, r)["syncedVersion"] == v)
    };

    // 1. Recorded and claimed, not written: africa's policy lets the operator write the key's metadata (the
    //    claim) but not its data.
    let policy = std::fs::read_to_string(azora_tests::repo_root().join("regions/vault-policy.hcl")).unwrap();
    let read_only = "path \"secret/data/tenants/*\" { capabilities = [\"read\"] }\npath \"secret/metadata/tenants/*\" { capabilities = [\"create\", \"update\", \"read\"] }\n";
    vaultrs::sys::policy::set(&baos["africa"].root().unwrap(), "azora-operator", read_only)
        .await
        .unwrap();
    rotate_now(&fleet, "k1").await;
    let st = wait_status(&fleet, "rotation recorded, write refused", |st| {
        st["pending"]["fromVersion"] == 1 && st["reason"] == "VaultPermissionDenied"
    })
    .await;
    let id = st["pending"]["id"].as_str().unwrap().to_string();
    let (v, custom) = baos["africa"].meta(PATH).await.unwrap();
    assert_eq!(v, 1);
    assert_eq!(
        custom.get("azora.io/rotation-id"),
        Some(&id),
        "the write was not claimed before it was tried"
    );
    fleet.kill_operator();
    vaultrs::sys::policy::set(&baos["africa"].root().unwrap(), "azora-operator", &policy)
        .await
        .unwrap();
    restart(&mut fleet);
    let st = wait_status(&fleet, "recorded rotation finished after restart", |st| {
        synced(st, 2)
    })
    .await;
    assert_eq!(
        st["rotationId"],
        id.as_str(),
        "the recorded rotation, not a new one"
    );
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        2,
        "exactly one new version in africa"
    );
    assert_eq!(
        baos["europe"].meta(PATH).await.unwrap().0,
        2,
        "exactly one new version in europe"
    );

    // 2. Written in africa, not replicated: europe's OpenBao hangs; killed once africa holds version 3.
    baos["europe"].pause();
    rotate_now(&fleet, "k2").await;
    wait_vault(&baos["africa"], "africa written", |v, _| v == 3).await;
    fleet.kill_operator();
    let st = secret_status(&fleet).await;
    assert!(
        st["pending"].is_object(),
        "the kill came after the rotation was recorded done: {st:#}"
    );
    baos["europe"].resume();
    restart(&mut fleet);
    wait_status(&fleet, "converged after a kill between the two Vaults", |st| {
        synced(st, 3)
    })
    .await;
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        3,
        "africa rotated twice"
    );
    assert_eq!(
        baos["europe"].meta(PATH).await.unwrap().0,
        3,
        "europe written twice"
    );

    // 3. Written in both Vaults, not synced: europe's API server hangs; killed once europe's Vault holds it.
    fleet.env.server("europe").unwrap().pause();
    rotate_now(&fleet, "k3").await;
    wait_vault(&baos["europe"], "europe written", |v, _| v == 4).await;
    fleet.kill_operator();
    let st = secret_status(&fleet).await;
    assert!(
        st["pending"].is_object(),
        "the kill came after the rotation was recorded done: {st:#}"
    );
    fleet.env.server("europe").unwrap().resume();
    restart(&mut fleet);
    wait_status(&fleet, "converged after a kill between Vault and sync", |st| {
        synced(st, 4)
    })
    .await;
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        4,
        "africa rotated twice"
    );
    assert_eq!(
        baos["europe"].meta(PATH).await.unwrap().0,
        4,
        "europe written twice"
    );
    let value = baos["africa"].read(PATH, 4).await.unwrap()["password"].clone();
    // The rotation id rides in the version's data in Vault, never into the target Secrets.
    assert!(
        baos["africa"]
            .read(PATH, 4)
            .await
            .unwrap()
            .contains_key("azora.io/rotation-id")
    );
    for r in ["africa", "europe"] {
        let s = target(&fleet, r).await.unwrap();
        assert_eq!(value_of(&s, "password").as_deref(), Some(value.as_str()), "{r}");
        assert_eq!(
            s.metadata
                .annotations
                .unwrap_or_default()
                .get("azora.io/secret-version")
                .map(String::as_str),
            Some("4")
        );
    }
    for r in ["africa", "europe"] {
        let s = target(&fleet, r).await.unwrap();
        assert!(
            !s.data.unwrap_or_default().contains_key("azora.io/rotation-id"),
            "{r}"
        );
    }

    // 4. Claimed, not written, and then someone writes the key by hand: the claim alone would say the
    //    operator's write landed; the version's own data says it did not. Reported, kept, not overwritten.
    vaultrs::sys::policy::set(&baos["africa"].root().unwrap(), "azora-operator", read_only)
        .await
        .unwrap();
    rotate_now(&fleet, "k4").await;
    wait_status(&fleet, "rotation claimed, write refused", |st| {
        st["pending"]["fromVersion"] == 4 && st["reason"] == "VaultPermissionDenied"
    })
    .await;
    let v5 = baos["africa"]
        .put(
            PATH,
            &HashMap::from([("password".to_string(), "set-by-hand".to_string())]),
        )
        .await
        .unwrap();
    assert_eq!(v5, 5);
    vaultrs::sys::policy::set(&baos["africa"].root().unwrap(), "azora-operator", &policy)
        .await
        .unwrap();
    let st = wait_status(&fleet, "hand write after the claim reported", |st| {
        st["version"] == 5 && st["reason"] == "CasConflict" && st["pending"].is_null() && synced(st, 5)
    })
    .await;
    assert!(
        st["rotationId"].is_null(),
        "the hand write was taken for the operator's rotation: {st:#}"
    );
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        5,
        "the hand-written version was overwritten"
    );
    assert_eq!(
        value_of(&target(&fleet, "europe").await.unwrap(), "password").as_deref(),
        Some("set-by-hand")
    );

    // 5. A leak is reported while europe's OpenBao hangs: africa rotates and destroys the older versions;
    //    europe's are still there. Then the Tenant's secret status goes back to a copy from before the leak
    //    (an etcd restored from a backup) with the leak report still on the Tenant. The claim in the key's
    //    metadata says what the operator's newest write carried out: version 6 is taken back, nothing is
    //    rotated again, and the revocation is finished in europe once it answers.
    let before_leak = secret_status(&fleet).await;
    assert_eq!(before_leak["version"], 5);
    baos["europe"].pause();
    rotate_now(&fleet, "leaked-k5").await;
    wait_status(&fleet, "the leak answered in africa, europe owed", |st| {
        st["version"] == 6 && st["revocation"]["regions"] == json!(["europe"])
    })
    .await;
    fleet.kill_operator();
    assert_eq!(baos["africa"].live_versions(PATH).await.unwrap(), vec![6]);
    let tenants: Api<DynamicObject> = Api::all_with(fleet.hub().await.unwrap(), &ar("Tenant", "tenants"));
    tenants
        .patch_status(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"secrets": [before_leak]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        secret_status(&fleet).await["version"],
        5,
        "the status was not restored"
    );
    baos["europe"].resume();
    fleet.start_operator(&["--vault-jwt-file", &jwt_arg]).unwrap();
    let st = wait_status(&fleet, "status taken back from Vault, the leak revoked", |st| {
        synced(st, 6) && st["revocation"]["version"] == 6 && st["revocation"]["regions"].is_null()
    })
    .await;
    assert!(
        st["rotateNowHandled"]
            .as_str()
            .is_some_and(|h| h.split('|').any(|p| p == "leaked-k5")),
        "{st:#}"
    );
    let europe_live = baos["europe"].live_versions(PATH).await.unwrap();
    assert_eq!(
        europe_live.len(),
        1,
        "europe keeps the leaked versions: {europe_live:?}"
    );
    // A few more passes: no second rotation.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        6,
        "the restored status carried the leak report out again"
    );
    assert_eq!(secret_status(&fleet).await["version"], 6);
}

/// An HTTP endpoint answering every request with the status in `code` (the "service" a rotation is checked
/// against); returns its URL.
async fn checked_service(code: std::sync::Arc<std::sync::atomic::AtomicU16>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let code = code.load(std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(
                        format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    )
                    .await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/healthz")
}

/// The operator reaches `region`'s cluster as the least-privilege identity of
/// `regions/regional-cluster/rbac.yaml` (applied there): Secrets only through the RoleBinding it places in
/// each tenant namespace.
/// A rotation whose check keeps failing is rolled back in every region: the previous value is written back
/// as a new version (check-and-set) and synced everywhere; status, Events and metrics say so. The regional
/// clusters are reached as the least-privilege identity (Secrets only through the per-tenant RoleBinding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_failing_its_check_is_rolled_back_everywhere() {
    let code = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
    let url = checked_service(code.clone()).await;
    let (mut fleet, baos, jwt_arg) = setup("1h", json!({"verify": {"url": url, "attempts": 2}})).await;
    for r in ["africa", "europe"] {
        fleet.least_privilege(r).await.unwrap();
    }
    // The check calls 127.0.0.1, which is neither one of the tenant's hostnames nor allowed by the
    // operator: refused as bad input, and nothing is written anywhere.
    fleet.start_operator(&["--vault-jwt-file", &jwt_arg]).unwrap();
    let st = wait_status(&fleet, "a verify host not allowed is refused", |st| {
        st["phase"] == "Failed" && st["reason"] == "VerifyHostNotAllowed"
    })
    .await;
    assert!(st["message"].as_str().unwrap().contains("127.0.0.1"), "{st:#}");
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        0,
        "written though refused"
    );
    assert!(target(&fleet, "africa").await.is_none(), "synced though refused");
    fleet.kill_operator();
    fleet
        .start_operator(&[
            "--vault-jwt-file",
            &jwt_arg,
            "--verify-allowed-hosts",
            "*.tenant-{tenant}.svc,127.0.0.1",
        ])
        .unwrap();
    let st = wait_status(&fleet, "version 1 verified", |st| {
        st["phase"] == "Done" && st["verifiedVersion"] == 1
    })
    .await;
    assert_eq!(st["version"], 1);
    let first = baos["africa"].read(PATH, 1).await.unwrap()["password"].clone();

    // The service breaks with the new value: two failed checks, then the rollback.
    code.store(503, std::sync::atomic::Ordering::SeqCst);
    rotate_now(&fleet, "bad").await;
    let st = wait_status(&fleet, "rolled back everywhere", |st| {
        st["phase"] == "RolledBack"
            && st["version"] == 3
            && ["africa", "europe"]
                .iter()
                .all(|r| region(st, r)["vaultVersion"] == 3 && region(st, r)["syncedVersion"] == 3)
    })
    .await;
    assert_eq!(st["reason"], "RotationRolledBack");
    let msg = st["message"].as_str().unwrap();
    assert!(msg.contains("restores version 1") && msg.contains("503"), "{msg}");
    assert_eq!(baos["africa"].meta(PATH).await.unwrap().0, 3);
    let second = baos["africa"].read(PATH, 2).await.unwrap()["password"].clone();
    assert_ne!(second, first);
    assert_eq!(
        baos["africa"].read(PATH, 3).await.unwrap()["password"],
        first,
        "not the previous value"
    );
    assert_eq!(baos["europe"].read(PATH, 3).await.unwrap()["password"], first);
    for r in ["africa", "europe"] {
        let s = target(&fleet, r).await.unwrap();
        assert_eq!(value_of(&s, "password").as_deref(), Some(first.as_str()), "{r}");
    }
    assert!(
        has_event(&fleet, "RotationRolledBack").await,
        "no RotationRolledBack event"
    );
    let metrics = fleet.metrics_text().await.unwrap();
    assert!(
        metrics.contains("azora_secret_rotations_total{result=\"rolled_back\"} 1"),
        "{metrics}"
    );
    // Rolled back once: it stays there, not rolled back again or re-rotated.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(baos["africa"].meta(PATH).await.unwrap().0, 3);
    assert_eq!(secret_status(&fleet).await["phase"], "RolledBack");

    // europe leaves the tenant's placement: the copy in its Vault (every version) and its target Secret are
    // removed — the secret must not stay in a region the tenant no longer uses — and africa keeps its own.
    // But a value there that the home does not hold (written by hand here; a former home alike) is never
    // destroyed: kept and reported until it is a copy again.
    assert_eq!(baos["europe"].meta(PATH).await.unwrap().0, 3);
    let by_hand = HashMap::from([("password".to_string(), "written-by-hand".to_string())]);
    assert_eq!(baos["europe"].put(PATH, &by_hand).await.unwrap(), 4);
    patch_acme(&fleet, json!({"spec": {"failoverRegions": []}})).await;
    let st = wait_status(&fleet, "europe's own value kept and reported", |st| {
        region(st, "europe")["message"]
            .as_str()
            .is_some_and(|m| m.contains("holds a value the home region africa does not"))
    })
    .await;
    assert_eq!(
        baos["europe"].meta(PATH).await.unwrap().0,
        4,
        "europe's own value was destroyed: {st:#}"
    );
    assert_eq!(
        st["phase"], "RolledBack",
        "a region being retired held the phase back: {st:#}"
    );
    // Made a copy of the home's value again: now it goes.
    let home_value = HashMap::from([("password".to_string(), first.clone())]);
    baos["europe"].put(PATH, &home_value).await.unwrap();
    let st = wait_status(&fleet, "europe's copies removed", |st| {
        region(st, "europe").is_null() && !region(st, "africa").is_null()
    })
    .await;
    assert_eq!(
        baos["europe"].meta(PATH).await.unwrap().0,
        0,
        "europe's Vault still holds the secret: {st:#}"
    );
    assert!(
        target(&fleet, "europe").await.is_none(),
        "europe's target Secret stayed"
    );
    assert_eq!(baos["africa"].meta(PATH).await.unwrap().0, 3);
    assert_eq!(
        value_of(&target(&fleet, "africa").await.unwrap(), "password").as_deref(),
        Some(first.as_str())
    );
    assert!(has_event(&fleet, "SecretRetired").await, "no SecretRetired event");

    // The secret leaves the spec (the tenant's last one): its target Secret leaves africa's cluster, reached
    // as the least-privilege identity — through the per-namespace grant, which stays until nothing is left
    // to remove — and africa's Vault (the home) keeps its copy.
    drop_every_secret(&fleet, "the dropped secret was not retired under least privilege").await;
    assert!(
        target(&fleet, "africa").await.is_none(),
        "africa's target Secret stayed"
    );
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        3,
        "the home's copy was touched"
    );
}

#[tokio::test]
async fn destroying_below_a_version_never_destroys_the_current_one() {
    // A threshold from another Vault's numbering (a home that changed during a leak revocation) must not
    // destroy the value a key holds now.
    let dir = tempfile::tempdir().unwrap();
    let bao = OpenBao::start(dir.path(), "alone").await.unwrap();
    let path = "tenants/acme/db";
    for v in ["one", "two", "three"] {
        bao.put(path, &HashMap::from([("password".to_string(), v.to_string())]))
            .await
            .unwrap();
    }
    let vault = azora_adapters::vault::Vault::new(azora_adapters::vault::VaultConfig {
        address: bao.address.clone(),
        kv_mount: azora_tests::openbao::KV_MOUNT.into(),
        auth: azora_adapters::vault::Auth::Token(bao.root_token.clone()),
    });
    let destroyed = vault.destroy_below(path, 10).await.unwrap();
    assert_eq!(destroyed, 2, "versions 1 and 2 only");
    assert_eq!(bao.live_versions(path).await.unwrap(), vec![3]);
    assert_eq!(bao.read(path, 3).await.unwrap()["password"], "three");
    // Below a version in its own numbering: only what is older.
    bao.put(
        path,
        &HashMap::from([("password".to_string(), "four".to_string())]),
    )
    .await
    .unwrap();
    assert_eq!(vault.destroy_below(path, 4).await.unwrap(), 1);
    assert_eq!(bao.live_versions(path).await.unwrap(), vec![4]);
}

/// The home region moved to europe while europe's OpenBao was sealed and missed two rotations: africa stays the
/// source (europe's older value is never taken as current, and nothing is reported as written by hand), and
/// europe takes over once its Vault holds the current value — renumbered to europe's own version, with the
/// workload that consumes it not restarted for the new number. The next rotation is written in europe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_move_waits_until_the_new_home_holds_the_current_value() {
    let (mut fleet, baos, jwt_arg) = setup("1s", json!({"restartWorkloads": true})).await;
    fleet.start_operator(&["--vault-jwt-file", &jwt_arg]).unwrap();
    wait_status(&fleet, "first version everywhere", |st| {
        st["phase"] == "Done" && st["version"] == 1
    })
    .await;
    let first = baos["africa"].read(PATH, 1).await.unwrap()["password"].clone();
    let deployments = consumer(&fleet, "db").await;
    let annotation = |d: &Deployment, template: bool, key: &str| {
        let m = if template {
            d.spec.as_ref().and_then(|s| s.template.metadata.clone())
        } else {
            Some(d.metadata.clone())
        };
        m.and_then(|m| m.annotations).and_then(|a| a.get(key).cloned())
    };
    let consumed =
        |want: &'static str| {
            let deployments = deployments.clone();
            async move {
                wait::until(TIMEOUT, || async {
                    deployments.get("api").await.ok().is_some_and(|d| {
                        annotation(&d, false, "azora.io/consumed-db").as_deref() == Some(want)
                    })
                })
                .await
            }
        };
    assert!(consumed("1").await, "the workload was not recorded");

    // Two rotations europe's sealed OpenBao misses (its cluster gets them, and the workload restarts). (Sealed,
    // not stopped: a stopped server could still take a write sent before it stopped once it runs again.)
    baos["europe"].seal().await.unwrap();
    rotate_now(&fleet, "m1").await;
    wait_vault(&baos["africa"], "africa written", |v, _| v == 2).await;
    rotate_now(&fleet, "m2").await;
    wait_vault(&baos["africa"], "africa written again", |v, _| v == 3).await;
    let third = baos["africa"].read(PATH, 3).await.unwrap()["password"].clone();
    assert!(consumed("3").await, "the workload did not consume version 3");
    let d = deployments.get("api").await.unwrap();
    assert_eq!(annotation(&d, true, "azora.io/rotated-db").as_deref(), Some("3"));

    // The home moves while europe's Vault is still sealed: africa's version 3 stays current, the move is named.
    patch_acme(
        &fleet,
        json!({"spec": {"homeRegion": "europe", "failoverRegions": ["africa"]}}),
    )
    .await;
    let st = wait_status(&fleet, "the move named", |st| {
        st["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("home moving from africa to europe"))
    })
    .await;
    assert_eq!(st["version"], 3, "{st:#}");
    assert_eq!(st["homeRegion"], "africa", "{st:#}");
    assert_eq!(st["reason"], "RegionsBehind", "{st:#}");

    // europe's Vault answers again, holding only the first value: it gets the current one from africa, then
    // takes over with it as its own version 2.
    assert_eq!(baos["africa"].meta(PATH).await.unwrap().0, 3);
    baos["europe"].unseal().await.unwrap();
    let st = wait_status(&fleet, "europe took over", |st| {
        st["homeRegion"] == "europe" && st["phase"] == "Done"
    })
    .await;
    assert_eq!(
        baos["europe"].meta(PATH).await.unwrap().0,
        2,
        "europe holds the current value once, as its version 2"
    );
    assert_eq!(baos["europe"].read(PATH, 2).await.unwrap()["password"], third);
    assert_eq!(st["version"], 2, "{st:#}");
    assert_eq!(region(&st, "africa")["vaultVersion"], 2, "{st:#}");
    assert_eq!(
        baos["africa"].meta(PATH).await.unwrap().0,
        3,
        "africa written again"
    );
    assert!(
        !has_event(&fleet, "SecretChangedOutside").await,
        "the move was reported as a write by hand"
    );
    assert!(has_event(&fleet, "SecretHomeMoved").await);
    for r in ["africa", "europe"] {
        let resynced = wait::until(TIMEOUT, || async {
            target(&fleet, r).await.is_some_and(|s| {
                s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("azora.io/secret-version"))
                    .map(String::as_str)
                    == Some("2")
            })
        })
        .await;
        assert!(resynced, "{r}: the target Secret does not name version 2");
        let s = target(&fleet, r).await.unwrap();
        assert_eq!(value_of(&s, "password").as_deref(), Some(third.as_str()), "{r}");
        assert_ne!(third, first);
    }
    assert!(consumed("2").await, "the workload's record was not renumbered");
    let d = deployments.get("api").await.unwrap();
    assert_eq!(
        annotation(&d, true, "azora.io/rotated-db").as_deref(),
        Some("3"),
        "restarted for a new number of the same value"
    );

    // The next rotation is written in europe (check-and-set on its version 2) and replicated to africa.
    rotate_now(&fleet, "m3").await;
    let st = wait_status(&fleet, "rotated in the new home", |st| {
        st["phase"] == "Done" && st["version"] == 3 && st["homeRegion"] == "europe"
    })
    .await;
    let (v, custom) = baos["europe"].meta(PATH).await.unwrap();
    assert_eq!(v, 3);
    assert_eq!(
        custom.get("azora.io/rotation-id"),
        st["rotationId"].as_str().map(String::from).as_ref()
    );
    let fourth = baos["europe"].read(PATH, 3).await.unwrap()["password"].clone();
    assert_ne!(fourth, third);
    assert_eq!(baos["africa"].meta(PATH).await.unwrap().0, 4);
    assert_eq!(baos["africa"].read(PATH, 4).await.unwrap()["password"], fourth);

    // The home moves back to africa and europe leaves the placement: africa (holding the value) takes over,
    // and europe's key — a former home's, with every version written there — is kept, not destroyed as a
    // leaving replica's copy would be.
    patch_acme(
        &fleet,
        json!({"spec": {"homeRegion": "africa", "failoverRegions": []}}),
    )
    .await;
    let st = wait_status(&fleet, "africa took over again", |st| {
        st["homeRegion"] == "africa" && st["phase"] == "Done"
    })
    .await;
    assert_eq!(st["version"], 4, "{st:#}");
    assert!(region(&st, "europe").is_null(), "{st:#}");
    assert_eq!(
        baos["europe"].live_versions(PATH).await.unwrap(),
        vec![1, 2, 3],
        "the former home's key was touched"
    );
    assert_eq!(baos["europe"].read(PATH, 3).await.unwrap()["password"], fourth);
    fleet.kill_operator();
}

/// The home moves away from africa after a rotation only africa's Vault holds, and africa's Vault goes silent:
/// the move waits (the current value is only there) until people declare africa's Vault lost
/// (`azora.io/home-lost`); then europe takes over, and since its newest version is older than the value
/// given up, a new value is written there at once (exactly one version), every cluster gets it, and africa's
/// Vault gets it as a new version once it answers (nothing there destroyed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_lost_with_its_vault_is_given_up_only_when_people_declare_it_lost() {
    // (A grace period longer than the test: a previous value kept would show.)
    let (mut fleet, baos, jwt_arg) = setup("1h", json!({})).await;
    // (A lost home given up after 15 s of silence instead of the default minute.)
    fleet
        .start_operator(&["--vault-jwt-file", &jwt_arg, "--vault-lost-after", "15s"])
        .unwrap();
    wait_status(&fleet, "first version everywhere", |st| {
        st["phase"] == "Done" && st["version"] == 1
    })
    .await;
    let first = baos["africa"].read(PATH, 1).await.unwrap()["password"].clone();

    // A rotation europe's sealed Vault misses; then africa's Vault goes silent and europe's answers again.
    baos["europe"].seal().await.unwrap();
    rotate_now(&fleet, "l1").await;
    wait_status(&fleet, "version 2 in africa's cluster", |st| {
        st["version"] == 2 && region(st, "africa")["syncedVersion"] == 2
    })
    .await;
    let second = baos["africa"].read(PATH, 2).await.unwrap()["password"].clone();
    assert_ne!(second, first);
    baos["africa"].seal().await.unwrap();
    // (Once the operator saw it sealed: no pass that read africa's version 2 before is still writing.)
    let sealed = wait::until(TIMEOUT, || async {
        vault_reachable(&fleet, "africa").await.1 == "VaultSealed"
    })
    .await;
    assert!(sealed, "africa's Vault was never reported sealed");
    tokio::time::sleep(Duration::from_secs(3)).await;
    baos["europe"].unseal().await.unwrap();

    patch_acme(
        &fleet,
        json!({"spec": {"homeRegion": "europe", "failoverRegions": ["africa"]}}),
    )
    .await;
    wait_status(&fleet, "the move waits for africa", |st| {
        st["message"].as_str().is_some_and(|m| {
            m.starts_with("home moving from africa to europe: waiting for europe's Vault to hold version 2")
        })
    })
    .await;
    // Undeclared, a silent home is waited for — past the silence after which a home declared lost would be
    // given up: europe's older value never becomes current on its own.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let st = secret_status(&fleet).await;
    assert_eq!(st["homeRegion"], "africa", "{st:#}");
    assert_eq!(st["version"], 2, "{st:#}");
    assert!(!has_event(&fleet, "SecretHomeMoveForced").await);

    // Declared lost: europe takes over; its newest version is older than africa's, so a new value is written
    // there at once (recorded first, check-and-set on europe's version 1) and synced everywhere.
    patch_acme(
        &fleet,
        json!({"metadata": {"annotations": {"azora.io/home-lost": "asia, africa"}}}),
    )
    .await;
    let r = azora_tests::wait::value(
        TIMEOUT,
        || secret_status(&fleet),
        |st| {
            st["homeRegion"] == "europe"
                && st["version"] == 2
                && region(st, "europe")["syncedVersion"] == 2
                && region(st, "africa")["syncedVersion"] == 2
        },
    )
    .await;
    let ok = r.is_ok();
    let (Ok(st) | Err(st)) = r;
    assert!(ok, "europe never took over: {st:#}\n{}", tail(&fleet.log()));
    assert!(st["pending"].is_null(), "{st:#}");
    let (v, custom) = baos["europe"].meta(PATH).await.unwrap();
    assert_eq!(v, 2, "one new version in europe");
    assert_eq!(
        custom.get("azora.io/rotation-id"),
        st["rotationId"].as_str().map(String::from).as_ref()
    );
    let third = baos["europe"].read(PATH, 2).await.unwrap()["password"].clone();
    assert!(third != first && third != second);
    let events = fleet.events().await.unwrap();
    let forced = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("SecretHomeMoveForced"))
        .and_then(|e| e.message.clone())
        .unwrap_or_default();
    assert!(
        forced.contains("europe's version 1 is not the value recorded as version 2 in africa")
            && forced.contains("a new value is written in europe as version 2 with no previous value kept"),
        "{forced}"
    );
    for r in ["africa", "europe"] {
        let synced = wait::until(TIMEOUT, || async {
            target(&fleet, r)
                .await
                .is_some_and(|s| value_of(&s, "password").as_deref() == Some(third.as_str()))
        })
        .await;
        assert!(synced, "{r}: the target Secret does not hold europe's new value");
        let s = target(&fleet, r).await.unwrap();
        assert_eq!(
            value_of(&s, "previous-password"),
            None,
            "{r}: a previous value handed out beside a value that replaced one given up"
        );
    }

    // africa's Vault answers again: it gets europe's value as a new version; the one given up stays there.
    baos["africa"].unseal().await.unwrap();
    let st = wait_status(&fleet, "africa caught up", |st| {
        st["phase"] == "Done" && region(st, "africa")["vaultVersion"] == 2
    })
    .await;
    assert_eq!(st["homeRegion"], "europe", "{st:#}");
    assert_eq!(st["version"], 2, "{st:#}");
    assert_eq!(baos["africa"].meta(PATH).await.unwrap().0, 3);
    assert_eq!(baos["africa"].read(PATH, 3).await.unwrap()["password"], third);
    assert_eq!(baos["africa"].read(PATH, 2).await.unwrap()["password"], second);
    assert_eq!(
        baos["europe"].meta(PATH).await.unwrap().0,
        2,
        "rotated once in europe"
    );
}
