//! Secret rotation: every tenant secret (`Tenant.spec.secrets`) gets a first version, is rotated on its
//! cycle (or on `azora.io/rotate-now`) with check-and-set in the home region's Vault, replicated to the Vault
//! of every other region the tenant is placed in (never elsewhere) and synced into the target Secret of the
//! tenant's namespace in each of those regions' clusters, with the previous value kept for the grace period.
//!
//! Intent first: a rotation is recorded in `Tenant.status.secrets[].pending` before its write, and every
//! Vault write is claimed in the key's custom metadata before it is made, so after a crash the key itself
//! says whether the write happened (see `azora_core::secrets`). Values live only in Vault and the target
//! Secrets: never in status, Events, logs, metrics or error text.
//!
//! See `rotate` (one tenant's secrets) and `sync` (target Secrets in regional clusters).

mod restart;
mod retire;
mod rotate;
mod sync;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azora_adapters::kube_status::StatusWriter;
use azora_adapters::vault::{Auth, Vault, VaultConfig, VaultError};
use azora_api::Tenant;
use azora_api::region::RegionSpec;
use azora_api::tenant::TenantSpec;
use azora_core::validate::{Pending, Problem};
use azora_core::world::World;
use azora_runtime::Context;
use azora_runtime::pipeline::{Kind, ReconcileError, resource_of};
use azora_runtime::term::{Stop, custom_controller};
use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::runtime::controller::Action;

pub use azora_api::tenant::{ROTATE_NOW, rotate_now_token};

/// Every rotate-now request on a tenant, as one string (a change of any wakes the tenant once).
fn rotate_now_requests(annotations: &BTreeMap<String, String>) -> Option<String> {
    let all: Vec<String> = annotations
        .iter()
        .filter(|(k, _)| k.as_str() == ROTATE_NOW || k.starts_with(&format!("{ROTATE_NOW}.")))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    (!all.is_empty()).then(|| all.join(","))
}

/// Settings of the secrets room.
#[derive(Clone, Debug)]
pub struct SecretsConfig {
    /// The operator's ServiceAccount token for Vault's Kubernetes auth (`--vault-jwt-file`), read at each
    /// login.
    pub jwt_file: Option<PathBuf>,
    /// Tenants reconciled at once.
    pub concurrency: u16,
    /// Hosts any tenant's `verify` checks may call besides its own hostnames (`--verify-allowed-hosts`:
    /// a name, `*.suffix`, or `*`; `{tenant}` stands for the tenant's name).
    pub verify_hosts: Vec<String>,
    /// How long the Vault of a home declared lost (`azora.io/home-lost`) must have answered no request
    /// before a move gives it up (`--vault-lost-after`; a timeout or two while it comes back gives nothing
    /// up).
    pub lost_after: Duration,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            jwt_file: Some(PathBuf::from(
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
            )),
            concurrency: 8,
            verify_hosts: Vec::new(),
            lost_after: Duration::from_secs(60),
        }
    }
}

/// How long a region whose Vault refused the operator's login is left alone before trying again (never a
/// login in a hot loop); a Vault that is sealed or does not answer is left alone for a shorter while, so
/// the tenants homed there fail fast instead of filling every worker with 10 s timeouts.
fn backoff(e: &VaultError) -> Option<Duration> {
    match e {
        VaultError::LoginDenied(_) => Some(Duration::from_secs(30)),
        VaultError::Unreachable(_) => Some(Duration::from_secs(10)),
        VaultError::Sealed => Some(Duration::from_secs(5)),
        _ => None,
    }
}
/// How long a region's Vault client (and the token Secret behind it) is reused before its settings are read
/// again.
const CLIENT_TTL: Duration = Duration::from_secs(60);

/// The Region condition this room owns: whether the operator can use the region's Vault (logged in and
/// answering, or why not: `VaultLoginDenied`, `VaultSealed`, `VaultUnreachable`, incomplete settings).
pub const VAULT_REACHABLE: &str = "VaultReachable";

/// This capability's work for one leadership term.
pub fn term(ctx: &Context, cfg: SecretsConfig, stop: &Stop) -> Vec<BoxFuture<'static, ()>> {
    let room = Arc::new(Room::new(ctx.clone(), cfg.clone()));
    // A rotate-now request changes only an annotation: wake the tenant once per new value (not on every
    // later change of a Tenant that still carries it).
    let seen = room.clone();
    let wakes = ctx.caches.tenants.subscribe().filter_map(move |o| {
        let seen = seen.clone();
        async move {
            let name = o.metadata.name.clone()?;
            let token = rotate_now_requests(o.metadata.annotations.as_ref()?)?;
            seen.first_sight(&name, &token).then_some(name)
        }
    });
    vec![
        custom_controller::<TenantSecretsKind, _, _, _, _>(
            &ctx.caches.tenants,
            room,
            rotate::reconcile,
            error_policy,
            wakes,
            cfg.concurrency,
            stop.clone(),
        ),
        sweep_metrics(ctx.clone(), stop.clone()).boxed(),
    ]
}

/// Every minute, drops the secret series of tenants and secrets that are gone (an overdue-rotation alert on
/// a deleted secret would fire forever).
async fn sweep_metrics(ctx: Context, stop: Stop) {
    azora_runtime::metrics::sweep_every(Duration::from_secs(60), stop, || {
        let live: std::collections::BTreeSet<(String, String)> = ctx
            .caches
            .tenants
            .specs::<TenantSpec>()
            .into_iter()
            .flat_map(|(t, s)| s.secrets.into_iter().map(move |x| (t.clone(), x.name)))
            .collect();
        for vec in [&ctx.metrics.secret_age, &ctx.metrics.secret_next_rotation] {
            azora_runtime::metrics::retain_series(vec, |l| match (l.get("tenant"), l.get("secret")) {
                (Some(t), Some(s)) => live.contains(&(t.clone(), s.clone())),
                _ => true,
            });
        }
    })
    .await;
}

fn error_policy(_obj: Arc<DynamicObject>, err: &ReconcileError, _room: Arc<Room>) -> Action {
    match err {
        ReconcileError::Fenced(_) => Action::requeue(Duration::from_secs(30)),
        _ => Action::requeue(Duration::from_secs(10)),
    }
}

/// The Tenant, seen by the secrets room (its own reconcile; the Tenant's generic pipeline is tenancy's).
pub struct TenantSecretsKind;
impl Kind for TenantSecretsKind {
    const NAME: &'static str = "secrets";
    type Spec = TenantSpec;
    fn resource() -> ApiResource {
        resource_of::<Tenant>()
    }
    fn check(_spec: &TenantSpec, _world: &World) -> Vec<Problem> {
        Vec::new()
    }
    fn ready_message() -> &'static str {
        "secrets rotated and synced"
    }
    fn pending() -> Option<Pending> {
        None
    }
}

/// Why a region's Vault cannot be used.
#[derive(Clone, Debug)]
pub(crate) struct VaultProblem {
    pub reason: &'static str,
    pub message: String,
    /// Bad or incomplete settings (nothing is written anywhere for the secret) rather than a Vault that is
    /// refusing or down now.
    pub settings: bool,
}

/// Shared by the reconciles of one term.
pub struct Room {
    pub(crate) ctx: Context,
    cfg: SecretsConfig,
    /// Writes `Tenant.status.secrets` (manager `azora-operator/secrets`).
    pub(crate) tenants: StatusWriter,
    /// Writes the Region condition `VaultReachable` (manager `azora-operator/vault`).
    regions: StatusWriter,
    /// The `VaultReachable` (status, reason) last written or found per region.
    reachable: Mutex<BTreeMap<String, (bool, String)>>,
    vaults: Mutex<BTreeMap<String, (Instant, Arc<Vault>)>>,
    denied: Mutex<BTreeMap<String, (Instant, VaultError)>>,
    /// Since when each region's Vault has answered no request (refused logins, sealed, silent), for a home
    /// declared lost (`azora.io/home-lost`): given up only after a minute of it.
    silent_since: Mutex<BTreeMap<String, Instant>>,
    /// Runs the `verify` checks.
    pub(crate) prober: azora_adapters::probe::Prober,
    woken: Mutex<BTreeMap<String, String>>,
    audited: Mutex<std::collections::HashMap<String, Instant>>,
    checked: Mutex<std::collections::HashMap<String, Instant>>,
    /// What each replica key (`region/path`) held when this term last wrote or read it: its own version
    /// number (the check-and-set for the next write) and a keyed hash of the data (never the data). Saves
    /// a metadata read per replica write; forgotten on any error, so a write whose answer was lost is
    /// re-read, never repeated.
    replicas: Mutex<std::collections::HashMap<String, (u64, u64)>>,
    /// Each target Secret (`region/namespace/name`) as this term last wrote it: its resourceVersion. The
    /// next write is an apply conditioned on it (no read first); a Secret changed by anyone since is read
    /// and judged again.
    targets: Mutex<std::collections::HashMap<String, String>>,
    fingerprint: std::collections::hash_map::RandomState,
}

impl Room {
    /// The regional cluster of `region`, or why there is none.
    pub(crate) fn cluster(
        &self,
        region: &str,
    ) -> Result<std::sync::Arc<azora_runtime::clusters::Cluster>, String> {
        self.ctx
            .handles
            .clusters
            .get(region)
            .map_err(|why| why.unwrap_or_else(|| format!("no cluster for region {region}")))
    }

    fn new(ctx: Context, cfg: SecretsConfig) -> Self {
        let tenants = StatusWriter::new(
            ctx.client.clone(),
            resource_of::<Tenant>(),
            "secrets",
            ctx.fence.clone(),
        );
        let regions = StatusWriter::new(
            ctx.client.clone(),
            resource_of::<azora_api::Region>(),
            "vault",
            ctx.fence.clone(),
        );
        Self {
            regions,
            reachable: Mutex::default(),
            ctx,
            cfg,
            tenants,
            vaults: Mutex::default(),
            denied: Mutex::default(),
            silent_since: Mutex::default(),
            prober: azora_adapters::probe::Prober::new(None),
            woken: Mutex::default(),
            audited: Mutex::default(),
            checked: Mutex::default(),
            replicas: Mutex::default(),
            targets: Mutex::default(),
            fingerprint: std::collections::hash_map::RandomState::new(),
        }
    }

    /// A keyed hash of `data` (the key is this process's own, random: nothing about a value can be learnt
    /// from it, and it never leaves memory).
    pub(crate) fn fingerprint(&self, data: &azora_adapters::vault::SecretData) -> u64 {
        use std::hash::BuildHasher as _;
        self.fingerprint.hash_one(&data.0)
    }

    /// What this term knows a replica key holds: (its version, the fingerprint of its data).
    pub(crate) fn replica(&self, key: &str) -> Option<(u64, u64)> {
        self.replicas.lock().ok()?.get(key).copied()
    }

    /// The resourceVersion of this term's last write to a target Secret.
    pub(crate) fn target(&self, key: &str) -> Option<String> {
        self.targets.lock().ok()?.get(key).cloned()
    }

    /// Records what this term wrote to a target Secret, or forgets it (`None`).
    pub(crate) fn set_target(&self, key: &str, written: Option<String>) {
        if let Ok(mut m) = self.targets.lock() {
            match written {
                Some(w) => m.insert(key.to_string(), w),
                None => m.remove(key),
            };
        }
    }

    /// Records what a replica key holds, or forgets it (`None`).
    pub(crate) fn set_replica(&self, key: &str, held: Option<(u64, u64)>) {
        if let Ok(mut m) = self.replicas.lock() {
            match held {
                Some(h) => m.insert(key.to_string(), h),
                None => m.remove(key),
            };
        }
    }

    /// A region's Vault client, from its Region spec; an error for missing or incomplete settings, and
    /// for a region whose Vault refused us less than [`DENIED_BACKOFF`] ago (no login in a hot loop).
    pub(crate) async fn vault(
        &self,
        region: &str,
        spec: Option<&RegionSpec>,
    ) -> Result<Arc<Vault>, VaultProblem> {
        let v = self.client(region, spec).await;
        if let Err(p) = &v
            && p.settings
            && spec.is_some_and(|s| s.vault.is_some())
        {
            self.report_vault(region, false, p.reason, &p.message).await;
        }
        v
    }

    async fn client(&self, region: &str, spec: Option<&RegionSpec>) -> Result<Arc<Vault>, VaultProblem> {
        let settings = |reason: &'static str, message: String| VaultProblem {
            reason,
            message,
            settings: true,
        };
        if let Some((at, e)) = self.denied.lock().ok().and_then(|d| d.get(region).cloned())
            && let Some(wait) = backoff(&e)
            && at.elapsed() < wait
        {
            return Err(VaultProblem {
                reason: e.reason(),
                message: format!(
                    "region {region}'s Vault: {e} (tried again {}s after)",
                    wait.as_secs()
                ),
                settings: false,
            });
        }
        if let Some((at, v)) = self.vaults.lock().ok().and_then(|m| m.get(region).cloned())
            && at.elapsed() < CLIENT_TTL
        {
            return Ok(v);
        }
        let Some(spec) = spec else {
            return Err(settings(
                "RegionNotFound",
                format!("region {region} does not exist"),
            ));
        };
        let Some(v) = &spec.vault else {
            return Err(settings(
                "VaultNotConfigured",
                format!("region {region} has no vault"),
            ));
        };
        if v.kv_mount.trim_matches('/').is_empty() {
            return Err(settings(
                "VaultAuthIncomplete",
                format!("region {region}: vault.kvMount is empty"),
            ));
        }
        let auth = match (&v.kubernetes_auth, &v.token_secret) {
            (Some(k), None) => match &self.cfg.jwt_file {
                Some(f) if f.exists() => Auth::Kubernetes {
                    role: k.role.clone(),
                    mount: k.mount_path.trim_matches('/').to_string(),
                    jwt_file: f.clone(),
                },
                Some(f) => {
                    return Err(settings(
                        "VaultAuthIncomplete",
                        format!(
                            "region {region}: vault.kubernetesAuth needs the operator's ServiceAccount token, and {} does not exist (--vault-jwt-file)",
                            f.display()
                        ),
                    ));
                }
                None => {
                    return Err(settings(
                        "VaultAuthIncomplete",
                        format!("region {region}: vault.kubernetesAuth needs --vault-jwt-file"),
                    ));
                }
            },
            (None, Some(t)) => match self.ctx.secrets.value(&t.name, &t.key).await {
                Ok(Some(bytes)) => match String::from_utf8(bytes) {
                    Ok(s) if !s.trim().is_empty() => Auth::Token(s.trim().to_string()),
                    _ => {
                        return Err(settings(
                            "VaultAuthIncomplete",
                            format!(
                                "region {region}: Secret {} key {} is empty or not text",
                                t.name, t.key
                            ),
                        ));
                    }
                },
                Ok(None) => {
                    return Err(settings(
                        "VaultAuthIncomplete",
                        format!("region {region}: Secret {} has no key {}", t.name, t.key),
                    ));
                }
                Err(e) => {
                    return Err(VaultProblem {
                        reason: "VaultAuthUnreadable",
                        message: format!("region {region}: reading Secret {}: {e}", t.name),
                        settings: false,
                    });
                }
            },
            _ => {
                return Err(settings(
                    "VaultAuthIncomplete",
                    format!("region {region}: vault needs exactly one of kubernetesAuth and tokenSecret"),
                ));
            }
        };
        let cfg = VaultConfig {
            address: v.address.trim_end_matches('/').to_string(),
            kv_mount: v.kv_mount.trim_matches('/').to_string(),
            auth,
        };
        let mut m = self
            .vaults
            .lock()
            .map_err(|_| settings("Internal", "vault clients lock poisoned".into()))?;
        let client = match m.get(region) {
            // Same settings: keep the client (and its logged-in token); only the check time moves.
            Some((_, old)) if old.is_for(&cfg) => old.clone(),
            _ => Arc::new(Vault::new(cfg)),
        };
        m.insert(region.to_string(), (Instant::now(), client.clone()));
        Ok(client)
    }

    /// Notes a refused login, or a sealed or silent Vault, in `region`: it is left alone for a while
    /// ([`backoff`]) and its Region says so (`VaultReachable=False`). A request refused by policy for one
    /// path holds back only that secret.
    pub(crate) async fn note(&self, region: &str, e: &VaultError) {
        if backoff(e).is_some() {
            if let Ok(mut d) = self.denied.lock() {
                d.insert(region.to_string(), (Instant::now(), e.clone()));
            }
            self.silent(region);
            let message = match e {
                VaultError::LoginDenied(_) => {
                    "the operator's login was refused (check the auth role and policy)"
                }
                VaultError::Sealed => "the Vault is sealed",
                _ => "the Vault did not answer in time",
            };
            self.report_vault(region, false, e.reason(), message).await;
        }
    }

    /// Notes that `region`'s Vault answered a request of the operator's: `VaultReachable=True`.
    pub(crate) async fn answered(&self, region: &str) {
        if let Ok(mut s) = self.silent_since.lock() {
            s.remove(region);
        }
        self.report_vault(region, true, "Answering", "logged in; requests answered")
            .await;
    }

    /// Starts the region's clock of silence, unless it runs already.
    pub(crate) fn silent(&self, region: &str) {
        if let Ok(mut s) = self.silent_since.lock() {
            s.entry(region.to_string()).or_insert_with(Instant::now);
        }
    }

    /// How long the region's Vault has answered no request of this term (none: it answered last, or was
    /// never tried).
    pub(crate) fn silent_for(&self, region: &str) -> Option<Duration> {
        self.silent_since
            .lock()
            .ok()
            .and_then(|s| s.get(region).map(Instant::elapsed))
    }

    /// Sets the Region's `VaultReachable` condition when its status or reason changes (compared with what
    /// the Region already says too, so steady work and restarts make no writes). The message carries only
    /// what the error kinds say, never a request or a value.
    pub(crate) async fn report_vault(&self, region: &str, ok: bool, reason: &str, message: &str) {
        let key = (ok, reason.to_string());
        if self
            .reachable
            .lock()
            .ok()
            .and_then(|m| m.get(region).cloned())
            .as_ref()
            == Some(&key)
        {
            return;
        }
        let status = if ok { "True" } else { "False" };
        let obj = self
            .ctx
            .caches
            .regions
            .state()
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some(region));
        let Some(obj) = obj else { return };
        let already = obj
            .data
            .pointer("/status/conditions")
            .and_then(serde_json::Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == VAULT_REACHABLE))
            .is_some_and(|c| c["status"] == status && c["reason"] == reason);
        if !already {
            let condition = serde_json::json!({
                "type": VAULT_REACHABLE,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": azora_api::Time(jiff::Timestamp::now()),
                "observedGeneration": obj.metadata.generation,
            });
            if let Err(e) = self
                .regions
                .apply(region, None, serde_json::json!({ "conditions": [condition] }))
                .await
            {
                tracing::warn!(%region, error = &e as &dyn std::error::Error, "could not write VaultReachable");
                return;
            }
            tracing::info!(%region, status, reason, "VaultReachable changed");
        }
        if let Ok(mut m) = self.reachable.lock() {
            m.insert(region.to_string(), key);
        }
    }

    /// Whether a `rotate-now` value on `tenant` is new to this process (each value wakes the tenant once).
    fn first_sight(&self, tenant: &str, token: &str) -> bool {
        self.woken.lock().is_ok_and(|mut w| {
            if w.get(tenant).is_some_and(|t| t == token) {
                return false;
            }
            w.insert(tenant.to_string(), token.to_string());
            true
        })
    }

    /// Whether `key` is due for an audit (every replica and target Secret read back and repaired): not
    /// audited within `every`; records now when it is.
    pub(crate) fn audit_due(&self, key: &str, every: Duration) -> bool {
        self.audited.lock().is_ok_and(|mut a| {
            if a.get(key).is_some_and(|t| t.elapsed() < every) {
                return false;
            }
            a.insert(key.to_string(), Instant::now());
            true
        })
    }

    /// Whether a `verify` check of `key` may run now (checks are spaced); records now when it may.
    pub(crate) fn check_due(&self, key: &str, spacing: Duration) -> bool {
        self.checked.lock().is_ok_and(|mut c| {
            if c.get(key).is_some_and(|t| t.elapsed() < spacing) {
                return false;
            }
            c.insert(key.to_string(), Instant::now());
            true
        })
    }
}

#[cfg(test)]
mod rotate_now_tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_secret_follows_the_tenant_wide_request_its_own_or_both() {
        assert_eq!(rotate_now_token(&ann(&[]), "db"), None);
        assert_eq!(
            rotate_now_token(&ann(&[("azora.io/rotate-now", "t1")]), "db").as_deref(),
            Some("t1")
        );
        let both = ann(&[("azora.io/rotate-now", "t1"), ("azora.io/rotate-now.db", "s1")]);
        assert_eq!(rotate_now_token(&both, "db").as_deref(), Some("t1|s1"));
        // Another secret of the tenant is not asked by db's own request.
        assert_eq!(rotate_now_token(&both, "api").as_deref(), Some("t1"));
        assert_eq!(
            rotate_now_token(&ann(&[("azora.io/rotate-now.db", "s1")]), "db").as_deref(),
            Some("s1")
        );
        assert_eq!(
            rotate_now_requests(&both).as_deref(),
            Some("azora.io/rotate-now=t1,azora.io/rotate-now.db=s1")
        );
        assert_eq!(rotate_now_requests(&ann(&[("other", "x")])), None);
    }

    #[test]
    fn removing_a_request_is_no_new_request() {
        use azora_api::tenant::rotate_now_pending;
        assert!(rotate_now_pending("t1", None));
        assert!(!rotate_now_pending("t1", Some("t1")));
        // db's own request joins the tenant-wide one: new.
        assert!(rotate_now_pending("t1|s1", Some("t1")));
        // Either annotation removed afterwards: nothing new, no rotation.
        assert!(!rotate_now_pending("s1", Some("t1|s1")));
        assert!(!rotate_now_pending("t1", Some("t1|s1")));
        // A new value of either: new.
        assert!(rotate_now_pending("t2|s1", Some("t1|s1")));
        assert!(rotate_now_pending("t1|s2", Some("t1|s1")));
    }
}
