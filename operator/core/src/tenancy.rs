//! What a tenant needs in each regional cluster, and whether what is there already says it: the desired
//! objects (namespace, quota, limit range, network policies, role binding) as server-side-apply bodies,
//! a comparison that tolerates server defaults and quantity spellings (`0.5` == `500m`), and the plan of
//! one region (apply, delete, nothing). Pure, no IO.

use std::collections::BTreeSet;

use azora_api::tenant::{RegionSync, SyncState, TenantSpec};
use serde_json::{Map, Value, json};

/// Label every managed object carries.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "azora-operator";
/// Label naming the tenant an object belongs to.
pub const TENANT_LABEL: &str = "azora.io/tenant";
/// Label naming the region an object was placed in.
pub const REGION_LABEL: &str = "azora.io/region";
/// Label selector of every object the operator manages in a regional cluster.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=azora-operator";
/// The longest tenant name whose namespace (`tenant-<name>`) is still a valid DNS label.
pub const MAX_TENANT_NAME: usize = 63 - "tenant-".len();

/// The kinds placed in regional clusters, in apply order (the namespace first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, strum::Display, strum::EnumIter)]
pub enum ManagedKind {
    /// v1 Namespace.
    Namespace,
    /// v1 ResourceQuota.
    ResourceQuota,
    /// v1 LimitRange.
    LimitRange,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// rbac.authorization.k8s.io/v1 RoleBinding.
    RoleBinding,
}

impl ManagedKind {
    /// apiVersion of the kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Namespace | Self::ResourceQuota | Self::LimitRange => "v1",
            Self::NetworkPolicy => "networking.k8s.io/v1",
            Self::RoleBinding => "rbac.authorization.k8s.io/v1",
        }
    }
}

/// Identity of a managed object in one cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Kind.
    pub kind: ManagedKind,
    /// Namespace (none for the Namespace itself).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One object the tenant needs, as a server-side-apply body.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObject {
    /// Identity.
    pub key: ObjectKey,
    /// The full apply body (apiVersion, kind, metadata, spec).
    pub body: Value,
}

/// The tenant's namespace in every region.
pub fn namespace_of(tenant: &str) -> String {
    format!("tenant-{tenant}")
}

/// Whether `tenant` can name a namespace: a DNS label of at most [`MAX_TENANT_NAME`] characters.
pub fn tenant_name_problem(tenant: &str) -> Option<String> {
    let label_ok = !tenant.is_empty()
        && tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !tenant.starts_with('-')
        && !tenant.ends_with('-');
    if !label_ok {
        return Some(format!(
            "tenant name {tenant:?} must be a DNS label (lowercase letters, digits, '-') so that namespace tenant-<name> is valid"
        ));
    }
    if tenant.len() > MAX_TENANT_NAME {
        return Some(format!(
            "tenant name is {} characters; at most {MAX_TENANT_NAME} fit in namespace tenant-<name>",
            tenant.len()
        ));
    }
    None
}

fn labels(tenant: &str, region: &str) -> Value {
    json!({ MANAGED_BY_LABEL: MANAGED_BY, TENANT_LABEL: tenant, REGION_LABEL: region })
}

fn object(
    kind: ManagedKind,
    namespace: Option<&str>,
    name: &str,
    tenant: &str,
    region: &str,
    rest: Value,
) -> DesiredObject {
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(name));
    if let Some(ns) = namespace {
        metadata.insert("namespace".into(), json!(ns));
    }
    metadata.insert("labels".into(), labels(tenant, region));
    let mut body = Map::new();
    body.insert("apiVersion".into(), json!(kind.api_version()));
    body.insert("kind".into(), json!(kind.to_string()));
    body.insert("metadata".into(), Value::Object(metadata));
    if let Value::Object(rest) = rest {
        body.extend(rest);
    }
    DesiredObject {
        key: ObjectKey {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        },
        body: Value::Object(body),
    }
}

/// Everything the tenant needs in `region`, the namespace first; with `secrets_access`, the operator's
/// access to the namespace's Secrets (a tenant with secrets, or with copies of secrets still to remove).
pub fn desired_objects(
    tenant: &str,
    spec: &TenantSpec,
    region: &str,
    secrets_access: bool,
) -> Vec<DesiredObject> {
    let ns = namespace_of(tenant);
    let mut out = vec![object(
        ManagedKind::Namespace,
        None,
        &ns,
        tenant,
        region,
        json!({}),
    )];
    if let Some(q) = &spec.quotas {
        let mut hard = Map::new();
        if let Some(v) = &q.cpu {
            hard.insert("requests.cpu".into(), json!(v));
        }
        if let Some(v) = &q.memory {
            hard.insert("requests.memory".into(), json!(v));
        }
        if let Some(v) = &q.storage {
            hard.insert("requests.storage".into(), json!(v));
        }
        if let Some(v) = q.pods {
            hard.insert("pods".into(), json!(v.to_string()));
        }
        if !hard.is_empty() {
            out.push(object(
                ManagedKind::ResourceQuota,
                Some(&ns),
                "tenant-quota",
                tenant,
                region,
                json!({ "spec": { "hard": hard } }),
            ));
        }
    }
    if let Some(l) = &spec.limits {
        let mut default = Map::new();
        if let Some(v) = &l.cpu {
            default.insert("cpu".into(), json!(v));
        }
        if let Some(v) = &l.memory {
            default.insert("memory".into(), json!(v));
        }
        if !default.is_empty() {
            out.push(object(
                ManagedKind::LimitRange,
                Some(&ns),
                "tenant-limits",
                tenant,
                region,
                json!({ "spec": { "limits": [ { "type": "Container", "default": default } ] } }),
            ));
        }
    }
    if spec.network.default_deny {
        out.push(object(
            ManagedKind::NetworkPolicy,
            Some(&ns),
            "default-deny",
            tenant,
            region,
            json!({ "spec": { "podSelector": {}, "policyTypes": ["Ingress"] } }),
        ));
        let mut from = vec![json!({ "namespaceSelector": { "matchLabels": { TENANT_LABEL: tenant } } })];
        from.extend(spec.network.allow_from_namespaces.iter().map(
            |n| json!({ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": n } } }),
        ));
        out.push(object(
            ManagedKind::NetworkPolicy,
            Some(&ns),
            "allow-within-tenant",
            tenant,
            region,
            json!({ "spec": { "podSelector": {}, "policyTypes": ["Ingress"], "ingress": [ { "from": from } ] } }),
        ));
    }
    if !spec.admin_groups.is_empty() {
        let subjects: Vec<Value> = spec
            .admin_groups
            .iter()
            .map(|g| json!({ "kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g }))
            .collect();
        out.push(object(
            ManagedKind::RoleBinding,
            Some(&ns),
            "tenant-admins",
            tenant,
            region,
            json!({
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin" },
                "subjects": subjects
            }),
        ));
    }
    if secrets_access {
        // The operator's own access to the tenant's Secrets and workloads (secret sync, restarts after a
        // rotation), granted in this namespace only: the ClusterRole it may bind, never a cluster-wide grant
        // (`regions/regional-cluster/rbac.yaml`).
        out.push(object(
            ManagedKind::RoleBinding,
            Some(&ns),
            SECRETS_BINDING,
            tenant,
            region,
            json!({
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SECRETS_ROLE },
                "subjects": [ { "kind": "ServiceAccount", "name": "azora-operator", "namespace": "azora-system" } ]
            }),
        ));
    }
    out
}

/// The RoleBinding giving the operator's regional identity (ServiceAccount `azora-system/azora-operator`)
/// the secrets role in a tenant namespace.
pub const SECRETS_BINDING: &str = "azora-operator-secrets";
/// The ClusterRole it binds (Secrets read and written, Deployments and StatefulSets listed and patched).
pub const SECRETS_ROLE: &str = "azora-operator-tenant-secrets";

/// Every object the operator may ever place for `tenant` (desired objects are always a subset), so the
/// live state of a tenant is a handful of key lookups.
pub fn possible_keys(tenant: &str) -> Vec<ObjectKey> {
    let ns = namespace_of(tenant);
    let key = |kind, name: &str| ObjectKey {
        kind,
        namespace: Some(ns.clone()),
        name: name.to_string(),
    };
    vec![
        ObjectKey {
            kind: ManagedKind::Namespace,
            namespace: None,
            name: ns.clone(),
        },
        key(ManagedKind::ResourceQuota, "tenant-quota"),
        key(ManagedKind::LimitRange, "tenant-limits"),
        key(ManagedKind::NetworkPolicy, "default-deny"),
        key(ManagedKind::NetworkPolicy, "allow-within-tenant"),
        key(ManagedKind::RoleBinding, "tenant-admins"),
        key(ManagedKind::RoleBinding, SECRETS_BINDING),
    ]
}

/// What to do in one region.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionPlan {
    /// Objects missing or drifted, in apply order.
    pub apply: Vec<DesiredObject>,
    /// Managed objects of the tenant that are no longer wanted.
    pub delete: Vec<ObjectKey>,
}

impl RegionPlan {
    /// Whether the region is already as desired.
    pub fn is_noop(&self) -> bool {
        self.apply.is_empty() && self.delete.is_empty()
    }
}

/// Plans one region: every desired object absent from `live` or differing from it is applied; every live
/// object of the tenant that is not desired is deleted. When the tenant is no longer placed in the
/// region, pass no desired objects: deleting the namespace takes everything in it, so only objects
/// outside it are listed besides.
pub fn plan_region<'a>(
    desired: &[DesiredObject],
    live: impl Fn(&ObjectKey) -> Option<&'a Value>,
    live_keys: &BTreeSet<ObjectKey>,
) -> RegionPlan {
    let apply = desired
        .iter()
        .filter(|d| live(&d.key).is_none_or(|l| !object_in_sync(&d.body, l)))
        .cloned()
        .collect();
    let wanted: BTreeSet<&ObjectKey> = desired.iter().map(|d| &d.key).collect();
    let doomed_ns: BTreeSet<&str> = live_keys
        .iter()
        .filter(|k| k.kind == ManagedKind::Namespace && !wanted.contains(k))
        .map(|k| k.name.as_str())
        .collect();
    let delete = live_keys
        .iter()
        .filter(|k| !wanted.contains(k))
        .filter(|k| {
            k.kind == ManagedKind::Namespace || !k.namespace.as_deref().is_some_and(|n| doomed_ns.contains(n))
        })
        .cloned()
        .collect();
    RegionPlan { apply, delete }
}

/// Whether a live object says everything the desired one does. apiVersion and kind are not compared:
/// objects read from a list carry neither.
pub fn object_in_sync(desired: &Value, live: &Value) -> bool {
    match desired {
        Value::Object(d) => d
            .iter()
            .filter(|(k, _)| *k != "apiVersion" && *k != "kind")
            .all(|(k, v)| live.get(k).map_or_else(|| is_empty(v), |l| in_sync(v, l))),
        _ => in_sync(desired, live),
    }
}

/// Whether `live` already says everything `desired` says. Fields the server adds (defaults, status,
/// other managers' fields) are ignored; quantities compare by value.
pub fn in_sync(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => in_sync(dv, lv),
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| in_sync(a, b))
        }
        (Value::String(d), Value::String(l)) => d == l || quantities_equal(d, l),
        (Value::Array(d), Value::Null) => d.is_empty(),
        (d, l) => d == l,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// Whether two strings are the same Kubernetes quantity (`1Gi` == `1024Mi`, `0.5` == `500m`).
pub fn quantities_equal(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()) * 4.0,
        _ => false,
    }
}

/// Parses a Kubernetes quantity into its value (`100m` → 0.1, `2Gi` → 2147483648).
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// The outcome of syncing one placed region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionOutcome {
    /// Region.
    pub region: String,
    /// Sync state.
    pub state: SyncState,
    /// Why, when not synced.
    pub message: String,
    /// A fixed reason for a failure that has its own name (e.g. `NamespaceConflict`).
    pub reason: Option<&'static str>,
}

/// Reason of a region where `tenant-<name>` exists but is not ours for this tenant.
pub const NAMESPACE_CONFLICT: &str = "NamespaceConflict";

/// Whether an object with these labels was placed by this operator for `tenant` (we never adopt, change or
/// delete anything else).
pub fn owned_by(labels: &std::collections::BTreeMap<String, String>, tenant: &str) -> bool {
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        && labels.get(TENANT_LABEL).map(String::as_str) == Some(tenant)
}

/// `Placed` from the outcomes of the placed regions: True when every one is synced, False when any failed,
/// Unknown while some are still pending.
pub fn placed_condition(outcomes: &[RegionOutcome]) -> crate::conditions::Desired {
    use crate::conditions::Desired;
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.state == SyncState::Error)
        .map(|o| format!("{}: {}", o.region, o.message))
        .collect();
    let pending: Vec<String> = outcomes
        .iter()
        .filter(|o| o.state == SyncState::Pending)
        .map(|o| format!("{}: {}", o.region, o.message))
        .collect();
    if !failed.is_empty() {
        let reason = outcomes
            .iter()
            .filter(|o| o.state == SyncState::Error)
            .find_map(|o| o.reason)
            .unwrap_or("SyncFailed");
        Desired::fail("Placed", reason, failed.join("; "))
    } else if !pending.is_empty() {
        Desired::unknown("Placed", "Syncing", pending.join("; "))
    } else {
        let names: Vec<&str> = outcomes.iter().map(|o| o.region.as_str()).collect();
        Desired::ok(
            "Placed",
            "Placed",
            format!(
                "namespace, quota, limits, network policies and role bindings in sync in {}",
                names.join(", ")
            ),
        )
    }
}

/// The region serving the tenant: the first placed region (home first) not judged Down or Cordoned.
pub fn active_region(
    placed: &[String],
    verdict: impl Fn(&str) -> Option<azora_api::region::Verdict>,
) -> Option<String> {
    use azora_api::region::Verdict;
    placed
        .iter()
        .find(|r| !matches!(verdict(r), Some(Verdict::Down | Verdict::Cordoned)))
        .or_else(|| placed.first())
        .cloned()
}

/// A region the tenant does not live in, and why.
pub fn excluded(region: &str, message: &str) -> RegionSync {
    RegionSync {
        region: region.to_string(),
        state: SyncState::Excluded,
        observed_generation: None,
        last_sync_time: None,
        replication_lag_seconds: None,
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use azora_api::tenant::{DefaultLimits, Quotas};

    use super::*;
    use crate::testing::tenant;

    fn full_spec() -> TenantSpec {
        let mut spec = tenant("europe", &["africa"]).spec;
        spec.quotas = Some(Quotas {
            cpu: Some("8".into()),
            memory: Some("16Gi".into()),
            storage: None,
            pods: Some(50),
        });
        spec.limits = Some(DefaultLimits {
            cpu: Some("0.5".into()),
            memory: None,
        });
        spec.admin_groups = vec!["acme:admins".into()];
        spec.network.allow_from_namespaces = vec!["ingress".into()];
        spec
    }

    fn live_map(objs: &[DesiredObject]) -> BTreeMap<ObjectKey, Value> {
        objs.iter().map(|o| (o.key.clone(), o.body.clone())).collect()
    }

    #[test]
    fn desired_objects_cover_namespace_quota_limits_policies_and_admins() {
        let objs = desired_objects("acme", &full_spec(), "europe", !full_spec().secrets.is_empty());
        let kinds: Vec<String> = objs.iter().map(|o| o.key.to_string()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace tenant-acme",
                "ResourceQuota tenant-acme/tenant-quota",
                "LimitRange tenant-acme/tenant-limits",
                "NetworkPolicy tenant-acme/default-deny",
                "NetworkPolicy tenant-acme/allow-within-tenant",
                "RoleBinding tenant-acme/tenant-admins"
            ]
        );
        let possible = possible_keys("acme");
        for o in &objs {
            assert!(possible.contains(&o.key), "{} not among the possible keys", o.key);
            assert_eq!(o.body["metadata"]["labels"][TENANT_LABEL], "acme");
            assert_eq!(o.body["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
            assert_eq!(o.body["metadata"]["labels"][REGION_LABEL], "europe");
        }
        assert_eq!(objs[1].body["spec"]["hard"]["pods"], "50");
        assert_eq!(objs[1].body["spec"]["hard"]["requests.memory"], "16Gi");
        assert_eq!(objs[5].body["subjects"][0]["name"], "acme:admins");
        assert_eq!(
            objs[4].body["spec"]["ingress"][0]["from"][1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "ingress"
        );
    }

    #[test]
    fn without_quotas_limits_isolation_or_admins_only_the_namespace() {
        let mut spec = tenant("europe", &[]).spec;
        spec.network.default_deny = false;
        let objs = desired_objects("acme", &spec, "europe", !spec.secrets.is_empty());
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].key.kind, ManagedKind::Namespace);
    }

    #[test]
    fn a_synced_region_plans_nothing_even_with_server_defaults_and_respelled_quantities() {
        let objs = desired_objects("acme", &full_spec(), "europe", !full_spec().secrets.is_empty());
        let mut live = live_map(&objs);
        // what the server returns: defaults added, quantities normalised
        for v in live.values_mut() {
            v["metadata"]["resourceVersion"] = json!("42");
            v["metadata"]["uid"] = json!("u");
            // items of a list carry no apiVersion/kind
            if let Some(m) = v.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
        }
        let lr = ObjectKey {
            kind: ManagedKind::LimitRange,
            namespace: Some("tenant-acme".into()),
            name: "tenant-limits".into(),
        };
        if let Some(v) = live.get_mut(&lr) {
            v["spec"]["limits"][0]["default"]["cpu"] = json!("500m");
            v["spec"]["limits"][0]["defaultRequest"] = json!({"cpu": "500m"});
        }
        let keys: BTreeSet<ObjectKey> = live.keys().cloned().collect();
        let plan = plan_region(&objs, |k| live.get(k), &keys);
        assert!(plan.is_noop(), "{plan:?}");
    }

    #[test]
    fn drift_and_missing_objects_are_applied_unwanted_ones_deleted() {
        let spec = full_spec();
        let objs = desired_objects("acme", &spec, "europe", !spec.secrets.is_empty());
        let mut live = live_map(&objs);
        let quota = objs[1].key.clone();
        let netpol = objs[3].key.clone();
        if let Some(v) = live.get_mut(&quota) {
            v["spec"]["hard"]["requests.cpu"] = json!("100");
        }
        live.remove(&netpol);
        // admin groups removed from the spec: the binding must go
        let mut spec2 = spec.clone();
        spec2.admin_groups.clear();
        let objs2 = desired_objects("acme", &spec2, "europe", !spec2.secrets.is_empty());
        let keys: BTreeSet<ObjectKey> = live.keys().cloned().collect();
        let plan = plan_region(&objs2, |k| live.get(k), &keys);
        let applied: Vec<&ObjectKey> = plan.apply.iter().map(|d| &d.key).collect();
        assert_eq!(applied, [&quota, &netpol]);
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.delete[0].kind, ManagedKind::RoleBinding);
    }

    #[test]
    fn a_region_no_longer_placed_deletes_only_the_namespace() {
        let objs = desired_objects("acme", &full_spec(), "asia", !full_spec().secrets.is_empty());
        let live = live_map(&objs);
        let keys: BTreeSet<ObjectKey> = live.keys().cloned().collect();
        let plan = plan_region(&[], |k| live.get(k), &keys);
        assert!(plan.apply.is_empty());
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.delete[0].kind, ManagedKind::Namespace);
    }

    #[test]
    fn only_objects_labelled_for_this_tenant_are_ours() {
        let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(owned_by(
            &labels(&[(MANAGED_BY_LABEL, MANAGED_BY), (TENANT_LABEL, "acme")]),
            "acme"
        ));
        assert!(
            !owned_by(&labels(&[]), "acme"),
            "a namespace someone made before the tenant"
        );
        assert!(
            !owned_by(&labels(&[(TENANT_LABEL, "acme")]), "acme"),
            "not managed by us"
        );
        assert!(!owned_by(
            &labels(&[(MANAGED_BY_LABEL, MANAGED_BY), (TENANT_LABEL, "other")]),
            "acme"
        ));
    }

    #[test]
    fn a_namespace_conflict_names_itself_in_placed() {
        let outcomes = [
            RegionOutcome {
                region: "europe".into(),
                state: SyncState::Error,
                message: "taken".into(),
                reason: Some(NAMESPACE_CONFLICT),
            },
            RegionOutcome {
                region: "africa".into(),
                state: SyncState::Synced,
                message: String::new(),
                reason: None,
            },
        ];
        assert_eq!(placed_condition(&outcomes).reason, NAMESPACE_CONFLICT);
    }

    #[test]
    fn placed_is_true_only_when_every_region_is_synced() {
        use azora_api::ConditionStatus;
        let o = |r: &str, state| RegionOutcome {
            region: r.into(),
            state,
            message: "m".into(),
            reason: None,
        };
        let all = placed_condition(&[o("europe", SyncState::Synced), o("africa", SyncState::Synced)]);
        assert_eq!(all.status, ConditionStatus::True);
        let pending = placed_condition(&[o("europe", SyncState::Synced), o("africa", SyncState::Pending)]);
        assert_eq!(pending.status, ConditionStatus::Unknown);
        let failed = placed_condition(&[o("europe", SyncState::Error), o("africa", SyncState::Pending)]);
        assert_eq!(failed.status, ConditionStatus::False);
        assert_eq!(failed.reason, "SyncFailed");
        assert!(failed.message.contains("europe: m"));
    }

    #[test]
    fn active_region_skips_down_and_cordoned() {
        use azora_api::region::Verdict;
        let placed = vec!["africa".to_string(), "europe".to_string(), "asia".to_string()];
        let v = |r: &str| match r {
            "africa" => Some(Verdict::Down),
            "europe" => Some(Verdict::Cordoned),
            _ => None,
        };
        assert_eq!(active_region(&placed, v).as_deref(), Some("asia"));
        assert_eq!(
            active_region(&placed, |_| Some(Verdict::Down)).as_deref(),
            Some("africa")
        );
        assert_eq!(active_region(&placed, |_| None).as_deref(), Some("africa"));
    }

    #[test]
    fn quantities() {
        assert!(quantities_equal("0.5", "500m"));
        assert!(quantities_equal("1Gi", "1024Mi"));
        assert!(quantities_equal("1k", "1000"));
        assert!(quantities_equal("1e3", "1k"));
        assert!(!quantities_equal("1G", "1Gi"));
        assert!(!quantities_equal("abc", "abc"));
        assert_eq!(parse_quantity("100m"), Some(0.1));
    }

    #[test]
    fn tenant_names_must_fit_a_namespace() {
        assert!(tenant_name_problem("acme-1").is_none());
        assert!(tenant_name_problem("acme.corp").is_some());
        assert!(tenant_name_problem(&"a".repeat(57)).is_some());
        assert!(tenant_name_problem(&"a".repeat(56)).is_none());
    }
}
