//! Offline tests of the API: CRD shape, drift against `crds/`, and the CEL rules evaluated client-side with
//! kube-cel against valid and invalid objects.

use super::*;
use serde_json::{Value, json};

fn schema_of(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("kind exists");
    let v = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
    v["openAPIV3Schema"].clone()
}

fn cel_errors(kind: &str, obj: Value) -> Vec<String> {
    let schema = schema_of(kind);
    match kube_cel::Validator::new().validate(&schema, &obj, None) {
        Ok(()) => Vec::new(),
        Err(errs) => errs
            .into_vec()
            .into_iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

fn region(spec: Value) -> Value {
    json!({"apiVersion": "azora.io/v1alpha1", "kind": "Region", "metadata": {"name": "x"}, "spec": spec})
}

fn good_region_spec() -> Value {
    json!({
        "location": {"city": "Lagos", "country": "NG", "continent": "Africa", "latitude": 6.5, "longitude": 3.4},
        "priority": 10, "cordoned": false,
        "probes": {"interval": "5s", "timeout": "2s", "failureThreshold": 2, "successThreshold": 3,
                   "endpoints": [{"name": "api", "type": "HTTP", "url": "http://127.0.0.11:8080/healthz",
                                  "expectedStatus": 200}]},
        "dns": {"ipv4": ["127.0.0.11"], "ipv6": []}
    })
}

#[test]
fn every_kind_has_ready_printer_column_short_name_and_azora_category() {
    let crds = crds();
    assert_eq!(crds.len(), 9);
    for crd in &crds {
        let names = &crd.spec.names;
        assert_eq!(crd.spec.group, "azora.io");
        assert_eq!(crd.spec.scope, "Cluster", "{} must be cluster-scoped", names.kind);
        assert!(
            names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{} short name",
            names.kind
        );
        assert_eq!(
            names.categories.as_deref(),
            Some(&["azora".to_string()][..]),
            "{}",
            names.kind
        );
        let version = &crd.spec.versions[0];
        let cols = version.additional_printer_columns.as_ref().expect("columns");
        assert!(
            cols.iter().any(|c| c.name == "Ready"),
            "{} has a Ready column",
            names.kind
        );
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let schema = serde_json::to_value(&version.schema).expect("schema");
        let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert!(
            status["observedGeneration"].is_object(),
            "{} status.observedGeneration",
            names.kind
        );
        let conds = &status["conditions"];
        assert_eq!(
            conds["x-kubernetes-list-type"], "map",
            "{} conditions are a map-list",
            names.kind
        );
        let cond_props = &conds["items"]["properties"];
        assert!(
            cond_props["observedGeneration"].is_object(),
            "{} per-condition generation",
            names.kind
        );
    }
}

#[test]
fn every_field_is_documented() {
    fn walk(path: &str, v: &Value, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (k, child) in props {
                let p = format!("{path}.{k}");
                let top = matches!(k.as_str(), "apiVersion" | "kind" | "metadata");
                if !top
                    && child
                        .get("description")
                        .is_none_or(|d| d.as_str().is_none_or(str::is_empty))
                {
                    missing.push(p.clone());
                }
                walk(&p, child, missing);
            }
        }
        if let Some(items) = v.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        walk(&crd.spec.names.kind, &schema["openAPIV3Schema"], &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description (kubectl explain): {missing:?}"
    );
}

#[test]
fn crds_directory_and_chart_match_generated_crds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for dir in [root.join("crds"), root.join("charts/azora-operator/crds")] {
        let mut expected: Vec<String> = Vec::new();
        for crd in crds() {
            let name = crd_file_name(&crd);
            let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            assert_eq!(
                on_disk,
                crd_yaml(&crd).expect("yaml"),
                "{}/{name} drifted: run `make crds`",
                dir.display()
            );
            expected.push(name);
        }
        let mut present: Vec<String> = std::fs::read_dir(&dir)
            .expect("directory exists")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        present.sort();
        expected.sort();
        assert_eq!(
            present,
            expected,
            "{} holds exactly one file per kind",
            dir.display()
        );
    }
}

#[test]
fn strip_cel_removes_every_rule_and_keeps_the_rest() {
    for crd in crds() {
        let stripped = serde_json::to_string(&strip_cel(&crd)).expect("json");
        assert!(!stripped.contains("x-kubernetes-validations"));
        assert!(stripped.contains("openAPIV3Schema"));
    }
    let with = serde_json::to_string(&Tenant::crd()).expect("json");
    assert!(with.contains("x-kubernetes-validations"));
}

#[test]
fn valid_region_passes_cel() {
    assert_eq!(
        cel_errors("Region", region(good_region_spec())),
        Vec::<String>::new()
    );
}

#[test]
fn http_probe_without_url_is_rejected_by_cel() {
    let mut spec = good_region_spec();
    spec["probes"]["endpoints"][0] = json!({"name": "api", "type": "HTTP", "expectedStatus": 200});
    let errs = cel_errors("Region", region(spec));
    assert!(errs.iter().any(|e| e.contains("need url")), "{errs:?}");
}

#[test]
fn https_probe_with_plain_http_url_is_rejected_by_cel() {
    let mut spec = good_region_spec();
    spec["probes"]["endpoints"][0]["type"] = json!("HTTPS");
    let errs = cel_errors("Region", region(spec));
    assert!(errs.iter().any(|e| e.contains("https:// url")), "{errs:?}");
}

#[test]
fn region_without_dns_addresses_is_rejected_by_cel() {
    let mut spec = good_region_spec();
    spec["dns"] = json!({"ipv4": [], "ipv6": []});
    let errs = cel_errors("Region", region(spec));
    assert!(
        errs.iter().any(|e| e.contains("at least one ipv4 or ipv6")),
        "{errs:?}"
    );
}

#[test]
fn vault_needs_exactly_one_auth_method() {
    let mut spec = good_region_spec();
    spec["vault"] = json!({"address": "https://vault:8200", "kvMount": "secret"});
    let errs = cel_errors("Region", region(spec.clone()));
    assert!(errs.iter().any(|e| e.contains("exactly one")), "{errs:?}");
    spec["vault"]["tokenSecret"] = json!({"name": "vault", "key": "token"});
    assert!(cel_errors("Region", region(spec)).is_empty());
}

fn tenant(spec: Value) -> Value {
    json!({"apiVersion": "azora.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"}, "spec": spec})
}

#[test]
fn tenant_home_region_listed_as_failover_is_rejected_by_cel() {
    let errs = cel_errors(
        "Tenant",
        tenant(json!({"homeRegion": "europe", "failoverRegions": ["europe"]})),
    );
    assert!(
        errs.iter().any(|e| e.contains("must not also be listed")),
        "{errs:?}"
    );
}

#[test]
fn tenant_repeated_failover_region_is_rejected_by_cel() {
    let errs = cel_errors(
        "Tenant",
        tenant(json!({"homeRegion": "europe", "failoverRegions": ["asia", "asia"]})),
    );
    assert!(errs.iter().any(|e| e.contains("must not repeat")), "{errs:?}");
}

#[test]
fn tenant_home_outside_allowed_regions_is_rejected_by_cel() {
    let spec = json!({"homeRegion": "asia", "failoverRegions": ["europe"],
                      "residency": {"allowedRegions": ["europe", "africa"], "allowedContinents": []}});
    let errs = cel_errors("Tenant", tenant(spec));
    assert!(
        errs.iter().any(|e| e.contains("residency.allowedRegions")),
        "{errs:?}"
    );
}

#[test]
fn valid_tenant_passes_cel() {
    let spec = json!({"homeRegion": "europe", "failoverRegions": ["africa"],
                      "residency": {"allowedRegions": ["europe", "africa"], "allowedContinents": ["Europe"]},
                      "secrets": [{"name": "db", "vaultPath": "tenants/acme/db", "targetSecret": "db"}]});
    assert_eq!(cel_errors("Tenant", tenant(spec)), Vec::<String>::new());
}

#[test]
fn tenant_duplicate_secret_names_are_rejected_by_cel() {
    let s = json!({"name": "db", "vaultPath": "a", "targetSecret": "db"});
    let errs = cel_errors(
        "Tenant",
        tenant(json!({"homeRegion": "europe", "secrets": [s.clone(), s]})),
    );
    assert!(
        errs.iter().any(|e| e.contains("secret names must be unique")),
        "{errs:?}"
    );
}

fn policy(spec: Value) -> Value {
    json!({"apiVersion": "azora.io/v1alpha1", "kind": "FailoverPolicy", "metadata": {"name": "p"}, "spec": spec})
}

#[test]
fn rfc2136_provider_without_settings_is_rejected_by_cel() {
    let spec = json!({"zone": "azora.example.", "hostnames": ["api"], "strategy": "Failover",
                      "provider": {"type": "RFC2136"}});
    let errs = cel_errors("FailoverPolicy", policy(spec));
    assert!(
        errs.iter().any(|e| e.contains("needs provider.rfc2136")),
        "{errs:?}"
    );
}

#[test]
fn weighted_strategy_without_weights_is_rejected_by_cel() {
    let spec = json!({"zone": "azora.example.", "hostnames": ["api"], "strategy": "Weighted",
                      "regions": [{"name": "europe", "weight": 0}], "provider": {"type": "Embedded"}});
    let errs = cel_errors("FailoverPolicy", policy(spec));
    assert!(errs.iter().any(|e| e.contains("weight above 0")), "{errs:?}");
}

#[test]
fn network_partition_without_peer_is_rejected_by_cel() {
    let obj = json!({"apiVersion": "azora.io/v1alpha1", "kind": "ChaosExperiment", "metadata": {"name": "c"},
                     "spec": {"fault": {"type": "NetworkPartition", "region": "africa"}}});
    let errs = cel_errors("ChaosExperiment", obj);
    assert!(errs.iter().any(|e| e.contains("need peerRegion")), "{errs:?}");
}

#[test]
fn drill_recovering_into_the_lost_region_is_rejected_by_cel() {
    let obj = json!({"apiVersion": "azora.io/v1alpha1", "kind": "DrDrill", "metadata": {"name": "d"},
                     "spec": {"scenario": {"loseRegion": "africa", "drRegion": "africa"}}});
    let errs = cel_errors("DrDrill", obj);
    assert!(
        errs.iter().any(|e| e.contains("must differ from loseRegion")),
        "{errs:?}"
    );
}

fn database(spec: Value) -> Value {
    json!({"apiVersion": "azora.io/v1alpha1", "kind": "Database", "metadata": {"name": "db"}, "spec": spec})
}

fn member(region: &str, port: u16) -> Value {
    json!({"region": region, "endpoint": format!("127.0.0.1:{port}"), "credentials": {"name": "pg"}})
}

#[test]
fn a_valid_database_passes_cel() {
    let spec = json!({"engine": "PostgreSQL", "followPolicy": "platform",
                      "members": [member("africa", 5432), member("europe", 5433)],
                      "replication": {"mode": "Synchronous", "syncStandbys": 1, "maxLagForPromotion": "30s"}});
    assert_eq!(cel_errors("Database", database(spec)), Vec::<String>::new());
}

#[test]
fn a_database_with_two_members_in_one_region_is_rejected_by_cel() {
    let spec = json!({"engine": "PostgreSQL", "members": [member("africa", 5432), member("africa", 5433)],
                      "replication": {"mode": "Asynchronous", "syncStandbys": 1, "maxLagForPromotion": "30s"}});
    let errs = cel_errors("Database", database(spec));
    assert!(
        errs.iter().any(|e| e.contains("one member per region")),
        "{errs:?}"
    );
}

#[test]
fn a_synchronous_rule_needing_more_standbys_than_exist_is_rejected_by_cel() {
    let spec = json!({"engine": "PostgreSQL", "members": [member("africa", 5432), member("europe", 5433)],
                      "replication": {"mode": "Synchronous", "syncStandbys": 2, "maxLagForPromotion": "30s"}});
    let errs = cel_errors("Database", database(spec));
    assert!(errs.iter().any(|e| e.contains("syncStandbys")), "{errs:?}");
}

#[test]
fn synchronous_redis_is_rejected_by_cel() {
    let spec = json!({"engine": "Redis", "members": [member("africa", 6379), member("europe", 6380)],
                      "replication": {"mode": "Synchronous", "syncStandbys": 1, "maxLagForPromotion": "30s"}});
    let errs = cel_errors("Database", database(spec));
    assert!(
        errs.iter()
            .any(|e| e.contains("Redis replication is asynchronous")),
        "{errs:?}"
    );
}
