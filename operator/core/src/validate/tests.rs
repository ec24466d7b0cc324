use super::*;
use crate::testing::{tenant, world};
use azora_api::Continent;
use serde_json::json;

fn region_spec(patch: serde_json::Value) -> RegionSpec {
    let mut v = json!({
        "location": {"city": "Lagos", "country": "NG", "continent": "Africa", "latitude": 6.5, "longitude": 3.4},
        "probes": {"endpoints": [{"name": "api", "type": "HTTP", "url": "http://127.0.0.11:8080/healthz"}]},
        "dns": {"ipv4": ["127.0.0.11"]}
    });
    json_patch(&mut v, patch);
    serde_json::from_value(v).expect("region spec")
}

fn json_patch(base: &mut serde_json::Value, patch: serde_json::Value) {
    if let (Some(b), serde_json::Value::Object(p)) = (base.as_object_mut(), patch) {
        for (k, v) in p {
            b.insert(k, v);
        }
    }
}

fn reasons(problems: &[Problem]) -> Vec<&'static str> {
    problems.iter().map(|p| p.reason).collect()
}

#[test]
fn a_plain_region_is_valid() {
    assert_eq!(region(&region_spec(json!({})), &world()), vec![]);
}

#[test]
fn probe_timeout_must_be_below_interval() {
    let spec = region_spec(json!({"probes": {"interval": "2s", "timeout": "2s",
        "endpoints": [{"name": "api", "type": "TCP", "address": "127.0.0.11:80"}]}}));
    let p = region(&spec, &world());
    assert_eq!(reasons(&p), vec!["InvalidProbes"]);
    assert!(p[0].message.contains("below probes.interval"));
}

#[test]
fn tcp_probe_needs_host_and_port() {
    let spec =
        region_spec(json!({"probes": {"endpoints": [{"name": "t", "type": "TCP", "address": "nohost"}]}}));
    assert_eq!(reasons(&region(&spec, &world())), vec!["InvalidProbes"]);
}

#[test]
fn missing_kubeconfig_secret_is_unresolved_not_invalid() {
    let spec =
        region_spec(json!({"cluster": {"kubeconfigSecret": {"name": "africa-kubeconfig", "key": "value"}}}));
    let p = region(&spec, &world());
    assert_eq!(p[0].kind, ProblemKind::Unresolved);
    assert_eq!(p[0].reason, "SecretNotFound");
    let mut w = world();
    w.secrets
        .insert("africa-kubeconfig".into(), ["other".to_string()].into());
    assert_eq!(reasons(&region(&spec, &w)), vec!["SecretKeyNotFound"]);
    w.secrets
        .insert("africa-kubeconfig".into(), ["value".to_string()].into());
    assert!(region(&spec, &w).is_empty());
}

#[test]
fn tenant_home_outside_residency_continent_is_a_residency_violation() {
    let t = tenant("asia", &["europe"]).continents(&[Continent::Europe]);
    let p = super::tenant(&t.spec, &world());
    assert_eq!(reasons(&p), vec!["ResidencyViolation"]);
    assert_eq!(p[0].kind, ProblemKind::Invalid);
}

#[test]
fn tenant_with_unknown_failover_region_is_unresolved() {
    let t = tenant("europe", &["mars"]);
    let p = super::tenant(&t.spec, &world());
    assert_eq!(reasons(&p), vec!["RegionNotFound"]);
}

#[test]
fn tenant_rotation_must_outlast_grace_period() {
    let mut t = tenant("europe", &[]);
    t.spec.secrets = serde_json::from_value(json!([
        {"name": "db", "vaultPath": "t/db", "targetSecret": "db", "rotateEvery": "12h", "gracePeriod": "24h"}
    ]))
    .unwrap();
    assert_eq!(reasons(&super::tenant(&t.spec, &world())), vec!["InvalidSecrets"]);
}

#[test]
fn policy_for_a_tenant_with_no_allowed_candidate_is_invalid() {
    let mut w = world();
    w.tenants.insert(
        "acme".into(),
        tenant("europe", &[]).continents(&[Continent::Europe]).spec,
    );
    let spec: FailoverPolicySpec = serde_json::from_value(json!({
        "zone": "azora.example.", "hostnames": ["api"], "tenant": "acme",
        "regions": [{"name": "asia"}, {"name": "americas"}]
    }))
    .unwrap();
    assert_eq!(reasons(&failover_policy(&spec, &w)), vec!["ResidencyViolation"]);
}

#[test]
fn rfc2136_policy_needs_its_tsig_secret() {
    let spec: FailoverPolicySpec = serde_json::from_value(json!({
        "zone": "azora.example.", "hostnames": ["api"],
        "provider": {"type": "RFC2136", "rfc2136": {"servers": ["127.0.0.1:5353"], "tsigKeyName": "azora",
                     "tsigSecret": {"name": "tsig", "key": "secret"}}}
    }))
    .unwrap();
    assert_eq!(reasons(&failover_policy(&spec, &world())), vec!["SecretNotFound"]);
}

#[test]
fn backup_schedule_keep_for_must_exceed_interval() {
    let spec: BackupScheduleSpec =
        serde_json::from_value(json!({"every": "1h", "retention": {"keepFor": "30m"}})).unwrap();
    assert_eq!(
        reasons(&backup_schedule(&spec, &World::default())),
        vec!["InvalidRetention"]
    );
    let spec: BackupScheduleSpec = serde_json::from_value(json!({"every": "5 minutes"})).unwrap();
    assert_eq!(
        reasons(&backup_schedule(&spec, &World::default())),
        vec!["InvalidDuration"]
    );
}

#[test]
fn restore_into_a_region_outside_residency_is_refused() {
    let mut w = world();
    w.tenants.insert(
        "acme".into(),
        tenant("europe", &["africa"])
            .continents(&[Continent::Europe, Continent::Africa])
            .spec,
    );
    w.backups.insert("acme-1".into(), "acme".into());
    let spec: RestoreSpec =
        serde_json::from_value(json!({"backup": "acme-1", "targetRegion": "asia"})).unwrap();
    assert_eq!(reasons(&restore(&spec, &w)), vec!["ResidencyViolation"]);
    let ok: RestoreSpec =
        serde_json::from_value(json!({"backup": "acme-1", "targetRegion": "africa"})).unwrap();
    assert!(restore(&ok, &w).is_empty());
}

#[test]
fn chaos_experiment_checks_fault_fields_and_schedule() {
    let spec: ChaosExperimentSpec = serde_json::from_value(json!({
        "fault": {"type": "NetworkLatency", "region": "africa", "peerRegion": "africa"},
        "schedule": "daily"
    }))
    .unwrap();
    let r = reasons(&chaos_experiment(&spec, &world()));
    assert!(
        r.contains(&"InvalidSchedule") && r.contains(&"InvalidFault"),
        "{r:?}"
    );
}

#[test]
fn pod_kill_needs_pods_with_a_selector_and_pods_belong_to_pod_kill_only() {
    let check = |fault: serde_json::Value| {
        let spec: ChaosExperimentSpec = serde_json::from_value(json!({"fault": fault})).unwrap();
        chaos_experiment(&spec, &world())
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("; ")
    };
    assert!(check(json!({"type": "PodKill", "region": "africa"})).contains("needs pods"));
    assert!(
        check(json!({"type": "PodKill", "region": "africa", "pods": {"namespace": "web", "selector": " "}}))
            .contains("match every pod")
    );
    assert!(
        check(json!({"type": "VaultOutage", "region": "africa", "pods": {"namespace": "web", "selector": "a=b"}}))
            .contains("PodKill only")
    );
    assert_eq!(
        check(
            json!({"type": "PodKill", "region": "africa", "pods": {"namespace": "web", "selector": "app=web"}})
        ),
        ""
    );
    assert!(check(json!({"type": "DnsFailure"})).contains("needs region"));
    assert!(
        check(
            json!({"type": "PodKill", "region": "africa", "pods": {"namespace": "kube-system", "selector": "k8s-app=kube-dns"}})
        )
        .contains("system namespace")
    );
}

#[test]
fn network_latency_is_capped_and_never_zero() {
    let check = |latency: &str| {
        let spec: ChaosExperimentSpec = serde_json::from_value(json!({"fault": {
            "type": "NetworkLatency", "region": "africa", "peerRegion": "europe", "latency": latency}}))
        .unwrap();
        chaos_experiment(&spec, &world())
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("; ")
    };
    assert_eq!(check("250ms"), "");
    assert_eq!(check("5s"), "");
    assert!(check("6s").contains("out of range"), "{}", check("6s"));
    assert!(check("0s").contains("out of range"));
    assert!(check("30ms").contains("at least 50ms"));
    assert_eq!(check("50ms"), "");
}

#[test]
fn drill_of_an_unknown_region_is_unresolved() {
    let spec: DrDrillSpec = serde_json::from_value(json!({"scenario": {"loseRegion": "atlantis"}})).unwrap();
    let p = dr_drill(&spec, &world());
    assert_eq!(reasons(&p), vec!["RegionNotFound"]);
}

#[test]
fn ready_is_false_with_the_first_reason_when_anything_is_wrong() {
    let problems = vec![
        Problem {
            kind: ProblemKind::Unresolved,
            reason: "SecretNotFound",
            message: "a".into(),
        },
        Problem {
            kind: ProblemKind::Invalid,
            reason: "InvalidProbes",
            message: "b".into(),
        },
    ];
    let c = conditions(&problems, "ok", None);
    let ready = c.iter().find(|d| d.type_ == "Ready").unwrap();
    assert_eq!(ready.status, azora_api::ConditionStatus::False);
    assert_eq!(
        ready.reason, "InvalidProbes",
        "invalid spec wins over missing references"
    );
}

#[test]
fn pending_capability_keeps_one_shot_runs_unready() {
    let pending = Pending {
        condition: "Completed",
        message: "later".into(),
        ready_anyway: false,
    };
    let c = conditions(&[], "ok", Some(&pending));
    let ready = c.iter().find(|d| d.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "NotYetSupported");
    let pending = Pending {
        ready_anyway: true,
        ..pending
    };
    let c = conditions(&[], "ok", Some(&pending));
    assert_eq!(
        c.iter().find(|d| d.type_ == "Ready").unwrap().status,
        azora_api::ConditionStatus::True
    );
    assert!(
        c.iter()
            .any(|d| d.type_ == "Completed" && d.status == azora_api::ConditionStatus::Unknown)
    );
}

fn database_spec(patch: serde_json::Value) -> DatabaseSpec {
    let mut base = json!({"engine": "PostgreSQL", "members": [
        {"region": "africa", "endpoint": "127.0.0.1:5432", "credentials": {"name": "pg"}},
        {"region": "europe", "endpoint": "127.0.0.1:5433", "credentials": {"name": "pg"}}]});
    json_patch(&mut base, patch);
    serde_json::from_value(base).unwrap()
}

fn database_world() -> World {
    let mut w = world();
    w.secrets.insert(
        "pg".into(),
        ["username".to_string(), "password".to_string()].into(),
    );
    w
}

#[test]
fn a_plain_database_is_valid() {
    assert!(database(&database_spec(json!({})), &database_world(), &Default::default()).is_empty());
}

#[test]
fn a_verified_tls_database_needs_a_ca_beside_each_members_credentials() {
    let verify = database_spec(json!({"tls": {"mode": "VerifyFull"}}));
    let p = database(&verify, &database_world(), &Default::default());
    assert_eq!(
        reasons(&p),
        vec!["SecretKeyNotFound", "SecretKeyNotFound"],
        "{p:?}"
    );
    assert!(p[0].message.contains("ca.crt"), "{p:?}");
    let mut w = database_world();
    w.secrets.get_mut("pg").unwrap().insert("ca.crt".into());
    assert!(database(&verify, &w, &Default::default()).is_empty());
    let encrypted = database_spec(json!({"tls": {"mode": "Require"}}));
    assert!(database(&encrypted, &database_world(), &Default::default()).is_empty());
}

#[test]
fn database_members_must_be_one_per_region_inside_the_residency() {
    let spec = database_spec(json!({"members": [
        {"region": "europe", "endpoint": "127.0.0.1:5432", "credentials": {"name": "pg"}},
        {"region": "europe", "endpoint": "127.0.0.1:5433", "credentials": {"name": "pg"}}]}));
    assert!(reasons(&database(&spec, &database_world(), &Default::default())).contains(&"InvalidMembers"));
    let mut w = database_world();
    w.tenants.insert(
        "acme".into(),
        tenant("europe", &[]).continents(&[Continent::Europe]).spec,
    );
    let spec = database_spec(json!({"tenant": "acme"}));
    let p = database(&spec, &w, &Default::default());
    assert_eq!(reasons(&p), vec!["ResidencyViolation"], "{p:?}");
    assert!(p[0].message.contains("africa"));
}

#[test]
fn database_references_and_rules_are_checked() {
    // A missing Secret (named once), an unknown policy, a synchronous rule that cannot be met, sync Redis.
    let spec = database_spec(
        json!({"followPolicy": "nowhere", "replication": {"syncStandbys": 2},
        "members": [
            {"region": "africa", "endpoint": "127.0.0.1:5432", "credentials": {"name": "gone"}},
            {"region": "europe", "endpoint": "127.0.0.1:5433", "credentials": {"name": "pg"}}]}),
    );
    let p = database(&spec, &database_world(), &Default::default());
    let r = reasons(&p);
    assert!(
        r.contains(&"PolicyNotFound") && r.contains(&"InvalidReplication"),
        "{p:?}"
    );
    assert_eq!(r.iter().filter(|x| **x == "SecretNotFound").count(), 1, "{p:?}");
    let redis = database_spec(json!({"engine": "Redis"}));
    assert!(
        reasons(&database(&redis, &database_world(), &Default::default())).contains(&"InvalidReplication")
    );
    // A policy that lists none of the members' regions.
    let policy: FailoverPolicySpec = serde_json::from_value(json!({
        "zone": "azora.example.", "hostnames": ["api"], "regions": [{"name": "asia"}, {"name": "americas"}]
    }))
    .unwrap();
    let spec = database_spec(json!({"followPolicy": "far"}));
    let policies = [("far".to_string(), policy)].into_iter().collect();
    assert_eq!(
        reasons(&database(&spec, &database_world(), &policies)),
        vec!["PolicyMismatch"]
    );
}
