//! One typed watch cache per kind, shared by everything in the process (IO: one watch per kind on the
//! hub). Each cache is a reflector store plus change notifications: a coalescing version counter for loops
//! that re-plan from the whole store (`changed`), and a per-subscriber stream of changed objects for
//! controllers (`subscribe`). A subscriber never slows the watch: a lagging one is handed every object
//! again instead of blocking the reflector. Caches live as long as the process; leadership terms come and
//! go on top of them. Malformed objects stay in the store as `DynamicObject`s; each consumer parses
//! narrowly and reports on the object itself (the deserialize guard).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tracing::warn;

use crate::supervise::Supervisor;

/// How many changes a subscriber may fall behind before it is handed the whole store again.
const SUBSCRIBER_BUFFER: usize = 4096;

/// A shared, typed watch cache.
pub struct Cache<K: Lookup + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    version: watch::Receiver<u64>,
    changes: broadcast::Sender<Arc<K>>,
}

impl<K: Lookup + Clone + 'static> Clone for Cache<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            version: self.version.clone(),
            changes: self.changes.clone(),
        }
    }
}

impl<K> Cache<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    <K as Resource>::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// Starts the watch of `api` (with `config`) as a supervised task named `name`.
    pub fn start(
        supervisor: &Supervisor,
        name: &'static str,
        api: Api<K>,
        config: watcher::Config,
        dyntype: <K as Resource>::DynamicType,
    ) -> Self {
        let writer = reflector::store::Writer::new(dyntype);
        let store = writer.as_reader();
        let (version_tx, version) = watch::channel(0u64);
        let (changes, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let tx = changes.clone();
        let store_for_task = store.clone();
        let stream = watcher(api, config).default_backoff().reflect(writer);
        supervisor.spawn(name, async move {
            let mut stream = std::pin::pin!(stream);
            let mut failing = false;
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => {
                        let _ = tx.send(Arc::new(o));
                        version_tx.send_modify(|v| *v += 1);
                    }
                    // A (re)listing lands in the store only when it is complete: then every object counts
                    // as changed, so a subscriber that joined before the first listing, or missed changes
                    // during a watch gap, sees them (and finds them in the store).
                    Ok(watcher::Event::InitDone) => {
                        failing = false;
                        for o in store_for_task.state() {
                            let _ = tx.send(o);
                        }
                        version_tx.send_modify(|v| *v += 1);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if !failing {
                            warn!(
                                cache = name,
                                error = &e as &dyn std::error::Error,
                                "watch failing; retrying with backoff"
                            );
                        }
                        failing = true;
                    }
                }
            }
            // The watcher stream never ends on its own: reaching here is a failure the supervisor reports.
            warn!(cache = name, "watch stream ended");
        });
        Self {
            store,
            version,
            changes,
        }
    }
}

impl<K: Lookup + Clone + Send + Sync + 'static> Cache<K>
where
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// The store (read-only).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Every cached object.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// Waits for the first complete listing.
    pub async fn ready(&self) {
        let _ = self.store.wait_until_ready().await;
    }

    /// A coalescing change signal: `changed().await` returns after any change since the last look.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.version.clone()
    }

    /// Every current object, then every changed object as it arrives. Falling more than the buffer behind
    /// hands the subscriber every object again (nothing is missed, nothing blocks the watch).
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let store = self.store.clone();
        let rx = self.changes.subscribe();
        let initial = futures::stream::iter(self.store.state());
        let changes = futures::stream::unfold((rx, store), |(mut rx, store)| async move {
            match rx.recv().await {
                Ok(o) => Some((vec![o], (rx, store))),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let all = store.state();
                    Some((all, (rx, store)))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .flat_map(futures::stream::iter);
        initial.chain(changes)
    }
}

impl Cache<DynamicObject> {
    /// The specs of every object, by name (a malformed object is skipped here; its own controller reports
    /// it).
    pub fn specs<S: DeserializeOwned>(&self) -> BTreeMap<String, S> {
        specs(&self.store)
    }
}

/// The specs of every object in a store, by name (malformed ones skipped).
pub fn specs<S: DeserializeOwned>(store: &Store<DynamicObject>) -> BTreeMap<String, S> {
    store
        .state()
        .iter()
        .filter_map(|o| {
            Some((
                o.metadata.name.clone()?,
                serde_json::from_value(o.data.get("spec")?.clone()).ok()?,
            ))
        })
        .collect()
}

/// A cache of one of our kinds.
pub type KindCache = Cache<DynamicObject>;

/// Every shared cache of the hub.
#[derive(Clone)]
pub struct Caches {
    /// Regions.
    pub regions: KindCache,
    /// Tenants.
    pub tenants: KindCache,
    /// FailoverPolicies.
    pub policies: KindCache,
    /// BackupSchedules.
    pub schedules: KindCache,
    /// Backups.
    pub backups: KindCache,
    /// Restores.
    pub restores: KindCache,
    /// ChaosExperiments.
    pub experiments: KindCache,
    /// DrDrills.
    pub drills: KindCache,
    /// Databases.
    pub databases: KindCache,
    /// Observer Leases (label-selected) in the operator's namespace.
    pub observers: Cache<Lease>,
}

impl Caches {
    /// Starts one watch per kind on the hub (`client` should be the watch client: long reads), supervised.
    /// `resources` are, in order: regions, tenants, policies, schedules, backups, restores, experiments,
    /// drills, databases.
    pub fn start(
        supervisor: &Supervisor,
        client: &Client,
        namespace: &str,
        resources: [ApiResource; 9],
        observer_selector: &str,
    ) -> Self {
        let [
            regions,
            tenants,
            policies,
            schedules,
            backups,
            restores,
            experiments,
            drills,
            databases,
        ] = resources;
        let kind = |name: &'static str, ar: ApiResource| {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            Cache::start(supervisor, name, api, watcher::Config::default(), ar)
        };
        Self {
            regions: kind("cache/regions", regions),
            tenants: kind("cache/tenants", tenants),
            policies: kind("cache/failoverpolicies", policies),
            schedules: kind("cache/backupschedules", schedules),
            backups: kind("cache/backups", backups),
            restores: kind("cache/restores", restores),
            experiments: kind("cache/chaosexperiments", experiments),
            drills: kind("cache/drdrills", drills),
            databases: kind("cache/databases", databases),
            observers: Cache::start(
                supervisor,
                "cache/observers",
                Api::namespaced(client.clone(), namespace),
                watcher::Config::default().labels(observer_selector),
                (),
            ),
        }
    }
}
