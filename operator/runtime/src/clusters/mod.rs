//! The regional cluster registry (IO, leader only), a handle every capability may read: one client per Region, built from the kubeconfig in its Secret and
//! rebuilt when the Secret's content changes; a watch per managed kind (label-selected, so only what the
//! operator placed) feeding a local cache and waking the owning Tenant on any change (drift repair); a
//! reachability check every 10 s reported in `Region.status.cluster`; a semaphore bounding the requests
//! in flight per cluster. A slow or lost cluster never holds up the others: every request carries a
//! timeout, and tenants skip an unreachable region (reporting it) instead of waiting on it.

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use azora_adapters::regional::{REQUEST_TIMEOUT, RegionalClients};
use azora_core::tenancy::{MANAGED_SELECTOR, ManagedKind, ObjectKey, TENANT_LABEL, possible_keys};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use strum::IntoEnumIterator as _;
use tokio::sync::{Semaphore, broadcast};
use tracing::warn;

/// Field manager of everything placed in regional clusters.
pub const FIELD_MANAGER: &str = "azora-operator/tenant";
/// Requests in flight per regional cluster.
pub const DEFAULT_CLUSTER_CONCURRENCY: usize = 16;
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(10);
pub(super) const REFRESH_EVERY: Duration = Duration::from_secs(2);
pub(super) const STATUS_HEARTBEAT: Duration = Duration::from_secs(300);

/// What wakes tenants: one by name, or all (a cluster became usable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// One tenant.
    Tenant(String),
    /// Every tenant.
    All,
}

/// The API resource of a managed kind.
pub fn resource(kind: ManagedKind) -> ApiResource {
    match kind {
        ManagedKind::Namespace => ApiResource::erase::<Namespace>(&()),
        ManagedKind::ResourceQuota => ApiResource::erase::<ResourceQuota>(&()),
        ManagedKind::LimitRange => ApiResource::erase::<LimitRange>(&()),
        ManagedKind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
        ManagedKind::RoleBinding => ApiResource::erase::<RoleBinding>(&()),
    }
}

/// Reachability as last checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reachability {
    /// Whether the API server answered.
    pub reachable: bool,
    /// Its version.
    pub version: Option<String>,
    /// Error text when not reachable (no secrets: kube errors carry URLs and reasons only).
    pub message: String,
    /// Fixed reason (`Reachable`, `Unreachable`, `UnsafeKubeconfig`, `InvalidKubeconfig`, `SecretMissing`,
    /// `SecretUnreadable`, `NoCluster`, `WatchNotSynced`).
    pub reason: &'static str,
}

/// How long a regional cluster may stay unsynced (a watch refused, e.g. 403 on one kind) or a kubeconfig
/// Secret unreadable before it is reported as an error instead of "connecting".
pub const SYNC_BOUND: Duration = Duration::from_secs(30);

/// One regional cluster.
pub struct Cluster {
    /// Region name.
    pub region: String,
    clients: RegionalClients,
    fingerprint: u64,
    permits: Arc<Semaphore>,
    stores: BTreeMap<ManagedKind, Store<DynamicObject>>,
    synced: Arc<BTreeMap<ManagedKind, AtomicBool>>,
    reach: Mutex<Option<Reachability>>,
    connected_at: Instant,
    /// The last error of each managed kind's watch, while it fails.
    watch_errors: Arc<Mutex<BTreeMap<ManagedKind, String>>>,
    /// What this process applied and the cache may not show yet: body fingerprint, the resourceVersion the
    /// cache showed before (the cache still showing it means the watch has not caught up), the
    /// resourceVersion the apply produced, and when.
    applied: AppliedMap,
    tasks: Vec<tokio::task::AbortHandle>,
}

/// The longest an applied body counts as in flight while the cache catches up (a stuck watch).
const IN_FLIGHT: Duration = Duration::from_secs(60);

type AppliedMap = Arc<Mutex<std::collections::HashMap<ObjectKey, Applied>>>;

#[derive(Clone, Debug)]
struct Applied {
    fingerprint: u64,
    prior_rv: Option<String>,
    applied_rv: Option<String>,
    at: Instant,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Errors of one request to a regional cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API refused or failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// No answer in time.
    #[error("no answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
}

impl Cluster {
    /// A fingerprint of the kubeconfig this cluster's clients were built from: it changes when the Region
    /// is pointed at another cluster (callers key what they remember about its objects by it).
    pub fn identity(&self) -> u64 {
        self.fingerprint
    }

    /// The request client (short deadlines), for kinds the registry does not watch (backups read every
    /// namespaced kind, restores apply them). Callers bound their requests with their own timeouts.
    pub fn client(&self) -> kube::Client {
        self.clients.requests.clone()
    }

    /// Whether the last check found the API server answering.
    pub fn reachable(&self) -> Option<Reachability> {
        self.reach.lock().ok().and_then(|r| r.clone())
    }

    /// Whether every managed kind's cache has completed its first listing.
    pub fn synced(&self) -> bool {
        self.synced.values().all(|b| b.load(Ordering::Relaxed))
    }

    /// Why this cluster cannot be used, once it has failed to sync for longer than `SYNC_BOUND`: the kinds
    /// whose watch never completed, with their last errors. `None` while synced or still within the bound.
    pub fn sync_problem(&self) -> Option<String> {
        if self.synced() || self.connected_at.elapsed() < SYNC_BOUND {
            return None;
        }
        let errors = self.watch_errors.lock().map(|e| e.clone()).unwrap_or_default();
        let stuck: Vec<String> = self
            .synced
            .iter()
            .filter(|(_, b)| !b.load(Ordering::Relaxed))
            .map(|(k, _)| match errors.get(k) {
                Some(e) => format!("{k}: {e}"),
                None => format!("{k}: no answer"),
            })
            .collect();
        Some(format!(
            "watches not synced after {}s: {}",
            SYNC_BOUND.as_secs(),
            stuck.join("; ")
        ))
    }

    /// The cached live objects of `tenant`, by key (a few O(1) lookups).
    pub fn live_of(&self, tenant: &str) -> BTreeMap<ObjectKey, Arc<DynamicObject>> {
        let mut out = BTreeMap::new();
        for key in possible_keys(tenant) {
            let Some(store) = self.stores.get(&key.kind) else {
                continue;
            };
            let mut r = ObjectRef::new_with(&key.name, resource(key.kind));
            if let Some(ns) = &key.namespace {
                r = r.within(ns);
            }
            if let Some(o) = store.get(&r)
                && o.labels().get(TENANT_LABEL).map(String::as_str) == Some(tenant)
            {
                out.insert(key, o);
            }
        }
        out
    }

    fn api(&self, key: &ObjectKey) -> Api<DynamicObject> {
        let ar = resource(key.kind);
        match &key.namespace {
            Some(ns) => Api::namespaced_with(self.clients.requests.clone(), ns, &ar),
            None => Api::all_with(self.clients.requests.clone(), &ar),
        }
    }

    /// Whether exactly `body` was applied to `key` and the cache (showing `live_rv`) has not caught up yet:
    /// it still shows the version from before the apply. Once it shows anything else — our version or a
    /// later edit — the content decides.
    pub fn in_flight(&self, key: &ObjectKey, body: &Value, live_rv: Option<&str>) -> bool {
        let fp = fingerprint(body.to_string().as_bytes());
        let Ok(mut m) = self.applied.lock() else {
            return false;
        };
        let Some(a) = m.get(key) else {
            return false;
        };
        if a.applied_rv.as_deref() == live_rv && live_rv.is_some() {
            m.remove(key);
            return false;
        }
        a.fingerprint == fp && a.prior_rv.as_deref() == live_rv && a.at.elapsed() < IN_FLIGHT
    }

    /// Server-side applies `body` under the operator's field manager (bounded, with a timeout). `prior_rv`
    /// is the resourceVersion the cache showed when the apply was decided.
    pub async fn apply(
        &self,
        key: &ObjectKey,
        body: &Value,
        prior_rv: Option<&str>,
    ) -> Result<(), ClusterError> {
        let _permit = self.permits.acquire().await;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let api = self.api(key);
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            api.patch(&key.name, &params, &Patch::Apply(body)),
        )
        .await
        {
            Ok(Ok(obj)) => {
                if let Ok(mut m) = self.applied.lock() {
                    m.retain(|_, a| a.at.elapsed() < IN_FLIGHT);
                    m.insert(
                        key.clone(),
                        Applied {
                            fingerprint: fingerprint(body.to_string().as_bytes()),
                            prior_rv: prior_rv.map(str::to_string),
                            applied_rv: obj.metadata.resource_version,
                            at: Instant::now(),
                        },
                    );
                }
                Ok(())
            }
            Ok(Err(e)) => Err(ClusterError::Api(e)),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// Deletes an object (absent is fine). Returns whether it is gone (a Namespace may still be
    /// terminating).
    pub async fn delete(&self, key: &ObjectKey) -> Result<bool, ClusterError> {
        let _permit = self.permits.acquire().await;
        let api = self.api(key);
        let dp = DeleteParams::background();
        let fut = api.delete(&key.name, &dp);
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(Ok(either)) => Ok(either.is_right()),
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => Ok(true),
            Ok(Err(e)) => Err(ClusterError::Api(e)),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// An object as the server has it (not the cache; objects we do not manage are not cached).
    pub async fn get(&self, key: &ObjectKey) -> Result<Option<DynamicObject>, ClusterError> {
        let _permit = self.permits.acquire().await;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.api(key).get_opt(&key.name)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// Creates an object (POST: never touches an existing one). Returns false when one already exists.
    pub async fn create(&self, key: &ObjectKey, body: &Value) -> Result<bool, ClusterError> {
        let _permit = self.permits.acquire().await;
        let obj: DynamicObject = serde_json::from_value(body.clone())
            .map_err(|e| ClusterError::Api(kube::Error::SerdeError(e)))?;
        let pp = kube::api::PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, self.api(key).create(&pp, &obj)).await {
            Ok(Ok(created)) => {
                // In flight like an apply, until the watch shows it.
                if let Ok(mut m) = self.applied.lock() {
                    m.insert(
                        key.clone(),
                        Applied {
                            fingerprint: fingerprint(body.to_string().as_bytes()),
                            prior_rv: None,
                            applied_rv: created.metadata.resource_version,
                            at: Instant::now(),
                        },
                    );
                }
                Ok(true)
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Ok(false),
            Ok(Err(e)) => Err(ClusterError::Api(e)),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// Deletes an object only if it is still the one with `uid` (a same-named object created since is
    /// left alone). Returns whether it is gone.
    pub async fn delete_exact(&self, key: &ObjectKey, uid: &str) -> Result<bool, ClusterError> {
        let _permit = self.permits.acquire().await;
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, self.api(key).delete(&key.name, &dp)).await {
            Ok(Ok(either)) => Ok(either.is_right()),
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => Ok(true),
            Ok(Err(e)) => Err(ClusterError::Api(e)),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// Whether an object exists, asked of the server (not the cache).
    pub async fn exists(&self, key: &ObjectKey) -> Result<bool, ClusterError> {
        let _permit = self.permits.acquire().await;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.api(key).get_opt(&key.name)).await {
            Ok(r) => Ok(r?.is_some()),
            Err(_) => Err(ClusterError::Timeout),
        }
    }
}

/// Every regional cluster known, by region.
#[derive(Clone)]
pub struct Clusters {
    inner: Arc<RwLock<BTreeMap<String, Arc<Cluster>>>>,
    /// Per region, why it has no cluster (Secret missing, kubeconfig invalid or unsafe, no cluster
    /// configured): reason and message.
    problems: Arc<RwLock<BTreeMap<String, (&'static str, String)>>>,
    /// Per region, since when its kubeconfig Secret could not be read.
    unreadable_since: Arc<Mutex<BTreeMap<String, Instant>>>,
    wake: broadcast::Sender<Wake>,
    concurrency: usize,
}

impl Clusters {
    /// An empty registry.
    pub fn new(concurrency: usize) -> Self {
        Self {
            inner: Arc::default(),
            problems: Arc::default(),
            unreadable_since: Arc::default(),
            wake: broadcast::channel(4096).0,
            concurrency: concurrency.max(1),
        }
    }

    /// Tenant wake-ups from now on (a subscriber that falls behind gets `Wake::All`).
    pub fn wakes(&self) -> impl futures::Stream<Item = Wake> + Send + 'static {
        futures::stream::unfold(self.wake.subscribe(), |mut rx| async move {
            match rx.recv().await {
                Ok(w) => Some((w, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((Wake::All, rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }

    /// The cluster of `region`; otherwise why there is none, or `None` when it is simply not connected yet
    /// (just started).
    pub fn get(&self, region: &str) -> Result<Arc<Cluster>, Option<String>> {
        if let Some(c) = self.inner.read().ok().and_then(|m| m.get(region).cloned()) {
            return Ok(c);
        }
        Err(self
            .problems
            .read()
            .ok()
            .and_then(|p| p.get(region).map(|(reason, msg)| format!("{reason}: {msg}"))))
    }

    /// Every connected cluster.
    pub fn all(&self) -> Vec<Arc<Cluster>> {
        self.inner
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Wakes tenants.
    pub fn wake(&self, w: Wake) {
        let _ = self.wake.send(w);
    }

    fn set_problem(&self, region: &str, problem: Option<(&'static str, String)>) {
        if let Ok(mut p) = self.problems.write() {
            match problem {
                Some(m) => p.insert(region.to_string(), m),
                None => p.remove(region),
            };
        }
    }

    fn connect(&self, region: &str, clients: RegionalClients, fingerprint: u64) -> Arc<Cluster> {
        let mut stores = BTreeMap::new();
        let mut tasks = Vec::new();
        let synced: Arc<BTreeMap<ManagedKind, AtomicBool>> =
            Arc::new(ManagedKind::iter().map(|k| (k, AtomicBool::new(false))).collect());
        let applied: AppliedMap = Arc::default();
        let watch_errors: Arc<Mutex<BTreeMap<ManagedKind, String>>> = Arc::default();
        for kind in ManagedKind::iter() {
            let watch_errors = watch_errors.clone();
            let applied = applied.clone();
            let ar = resource(kind);
            let api: Api<DynamicObject> = Api::all_with(clients.watches.clone(), &ar);
            let writer = reflector::store::Writer::new(ar);
            stores.insert(kind, writer.as_reader());
            let wake = self.wake.clone();
            let synced = synced.clone();
            let region_name = region.to_string();
            let stream = watcher(api, watcher::Config::default().labels(MANAGED_SELECTOR))
                .default_backoff()
                .reflect(writer);
            let task = tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                let mut failing = false;
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(
                            ev @ (watcher::Event::Apply(_)
                            | watcher::Event::InitApply(_)
                            | watcher::Event::Delete(_)),
                        ) => {
                            let (o, deleted, relisted) = match ev {
                                watcher::Event::Apply(o) => (o, false, false),
                                watcher::Event::InitApply(o) => (o, false, true),
                                watcher::Event::Delete(o) => (o, true, false),
                                _ => continue,
                            };
                            // The cache caught up with our apply (or the object is gone): not in flight.
                            let key = ObjectKey {
                                kind,
                                namespace: o.namespace(),
                                name: o.name_any(),
                            };
                            if let Ok(mut m) = applied.lock()
                                && m.get(&key).is_some_and(|a| {
                                    deleted
                                        || a.applied_rv.is_some()
                                            && a.applied_rv == o.metadata.resource_version
                                })
                            {
                                m.remove(&key);
                            }
                            // A (re)listing wakes every tenant once it is done (below), not one by one.
                            if !relisted && let Some(t) = o.labels().get(TENANT_LABEL) {
                                let _ = wake.send(Wake::Tenant(t.clone()));
                            }
                        }
                        Ok(watcher::Event::InitDone) => {
                            failing = false;
                            if let Ok(mut e) = watch_errors.lock() {
                                e.remove(&kind);
                            }
                            // First sync, or a relist after a gap (objects may have drifted meanwhile).
                            if let Some(flag) = synced.get(&kind) {
                                flag.store(true, Ordering::Relaxed);
                            }
                            let _ = wake.send(Wake::All);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if !failing {
                                warn!(region = %region_name, %kind, error = %e, "regional watch failing; retrying with backoff");
                            }
                            if let Ok(mut m) = watch_errors.lock() {
                                m.insert(kind, e.to_string());
                            }
                            failing = true;
                        }
                    }
                }
            });
            tasks.push(task.abort_handle());
        }
        Arc::new(Cluster {
            region: region.to_string(),
            clients,
            fingerprint,
            permits: Arc::new(Semaphore::new(self.concurrency)),
            stores,
            synced,
            reach: Mutex::new(None),
            connected_at: Instant::now(),
            watch_errors,
            applied,
            tasks,
        })
    }
}

pub(super) fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

mod maintain;

pub use maintain::run;
