//! Reading a tenant's namespace from a regional cluster (IO): the namespaced resource types come from API
//! discovery (kept for a few minutes per region), every one the operator may list is listed, and each object
//! is cleaned of server-set fields (`azora_core::backup::clean`). Applying restored objects and reading
//! them back for verification lives here too, so both sides resolve kinds the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azora_core::backup::{ObjectId, clean, resource_backed_up, restore_rank};
use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Discovery, Scope, verbs};
use serde_json::Value;

/// Field manager of restored objects.
pub const RESTORE_MANAGER: &str = "azora-operator/restore";
/// How long a region's discovery is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// Deadline of one request.
const REQUEST: Duration = Duration::from_secs(20);
/// Objects per list page, first and at most: memory holds one page. The first page of a kind is small;
/// the next ones are sized from the objects seen so far to stay near [`PAGE_BYTES`] (Kubernetes objects
/// reach ~1.5 MiB: a namespace of large ConfigMaps is read a few at a time, one of small ones 500 at a time).
const PAGE_FIRST: u32 = 10;
const PAGE_MAX: u32 = 500;
const PAGE_MIN: u32 = 2;
/// Bytes a list page should hold.
const PAGE_BYTES: usize = 8 * 1024 * 1024;
/// Objects per metadata list page.
const METADATA_PAGE: u32 = 500;
/// Deadline of a whole discovery.
const DISCOVER: Duration = Duration::from_secs(60);

/// Namespaced resource types per region, as discovered.
#[derive(Default)]
pub struct Kinds {
    by_region: Mutex<BTreeMap<String, (Instant, Vec<ApiResource>)>>,
}

impl Kinds {
    /// The namespaced types of `region` that go into backups.
    pub async fn of(&self, region: &str, client: &kube::Client) -> Result<Vec<ApiResource>, String> {
        if let Ok(m) = self.by_region.lock()
            && let Some((at, ars)) = m.get(region)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(ars.clone());
        }
        let discovery = tokio::time::timeout(DISCOVER, Discovery::new(client.clone()).run())
            .await
            .map_err(|_| {
                format!(
                    "API discovery in {region} did not finish within {}s",
                    DISCOVER.as_secs()
                )
            })?
            .map_err(|e| format!("API discovery in {region}: {e}"))?;
        let mut ars = Vec::new();
        for group in discovery.groups() {
            // `extensions` repeats kinds that live in their own groups (ingresses on 1.20).
            if group.name() == "extensions" {
                continue;
            }
            for (ar, caps) in group.recommended_resources() {
                let listable = caps.supports_operation(verbs::LIST) && caps.supports_operation(verbs::GET);
                if caps.scope == Scope::Namespaced && resource_backed_up(&ar.plural, listable) {
                    ars.push(ar);
                }
            }
        }
        // Restore order: what other objects use first; a backup's entries follow it, so a restore applies
        // them as they come.
        ars.sort_by(|a, b| {
            (restore_rank(&a.kind), &a.group, &a.kind).cmp(&(restore_rank(&b.kind), &b.group, &b.kind))
        });
        if let Ok(mut m) = self.by_region.lock() {
            m.insert(region.to_string(), (Instant::now(), ars.clone()));
        }
        Ok(ars)
    }
}

/// How long a region's occupancy snapshot is shared by the backups that start in that region.
const OCCUPANCY_TTL: Duration = Duration::from_secs(10);
/// The longest a snapshot may take (then it is given up and every kind listed per namespace).
const OCCUPANCY_DEADLINE: Duration = Duration::from_secs(30);
/// Kinds listed at once for a snapshot.
const OCCUPANCY_CONCURRENCY: usize = 4;

/// Which namespaces hold objects of each kind in a region, from one cluster-wide metadata list per kind,
/// taken on demand and shared by every backup starting in that region within [`OCCUPANCY_TTL`]. A backup
/// then lists in its namespace only the kinds that had objects there (a tenant namespace holds a handful of
/// the twenty-odd kinds a cluster serves), which turns most of a round's list requests into a few
/// cluster-wide ones.
#[derive(Default)]
pub struct Occupancy {
    by_region: Mutex<BTreeMap<String, Arc<SnapshotSlot>>>,
}

/// A region's newest snapshot; held while one is taken, so backups arriving meanwhile wait and share it.
type SnapshotSlot = tokio::sync::Mutex<Option<Arc<Snapshot>>>;

/// One region's occupancy at a moment.
pub struct Snapshot {
    /// When it was taken (before any list was sent). A backup that relies on it takes this as its data
    /// time: an object that existed then, and still exists when the backup lists its namespace, was seen
    /// by the snapshot, so its kind is listed.
    pub at: jiff::Timestamp,
    finished: Instant,
    /// Per kind (`group/plural`), the namespaces holding objects of it. A kind absent here could not be
    /// listed cluster-wide; it is listed in the namespace.
    occupied: BTreeMap<String, BTreeSet<String>>,
}

fn kind_key(ar: &ApiResource) -> String {
    format!("{}/{}", ar.group, ar.plural)
}

impl Snapshot {
    /// Whether `namespace` may hold objects of `ar` (unknown: it may).
    pub fn may_hold(&self, ar: &ApiResource, namespace: &str) -> bool {
        self.occupied
            .get(&kind_key(ar))
            .is_none_or(|nss| nss.contains(namespace))
    }
}

impl Occupancy {
    /// The region's snapshot for a backup: the newest one if it finished less than [`OCCUPANCY_TTL`] ago,
    /// otherwise a new one (one at a time per region: backups arriving meanwhile wait and share it). A
    /// Backup someone asked for (`not_before`: its creation) must hold data at least as new as the request:
    /// it uses only a snapshot taken since. If the region's snapshot is older it waits for the one being
    /// taken, if any, and takes a new one when that is older too — so a burst of manual Backups shares a
    /// few snapshots (each one serves every Backup created before it began) and no Backup waits for more
    /// than two. A snapshot that takes longer than [`OCCUPANCY_DEADLINE`] is given up: every kind is then
    /// listed, as without one.
    pub async fn of(
        &self,
        region: &str,
        client: &kube::Client,
        kinds: &[ApiResource],
        not_before: Option<jiff::Timestamp>,
    ) -> Option<Arc<Snapshot>> {
        let cell = match self.by_region.lock() {
            Ok(mut m) => m.entry(region.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let mut slot = cell.lock().await;
        if let Some(s) = slot.as_ref()
            && s.finished.elapsed() < OCCUPANCY_TTL
            && not_before.is_none_or(|t| s.at >= t)
        {
            return Some(s.clone());
        }
        let at = jiff::Timestamp::now();
        let listing = futures::stream::iter(kinds.to_vec())
            .map(|ar| {
                let client = client.clone();
                async move { (kind_key(&ar), namespaces_holding(&client, &ar).await) }
            })
            .buffer_unordered(OCCUPANCY_CONCURRENCY)
            .collect::<Vec<(String, Option<BTreeSet<String>>)>>();
        let occupied = match tokio::time::timeout(OCCUPANCY_DEADLINE, listing).await {
            Ok(listed) => listed
                .into_iter()
                .filter_map(|(k, r)| r.map(|nss| (k, nss)))
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        let s = Arc::new(Snapshot {
            at,
            finished: Instant::now(),
            occupied,
        });
        *slot = Some(s.clone());
        Some(s)
    }
}

/// The namespaces holding objects of `ar`, from a paged cluster-wide metadata list; `None` when it cannot
/// be listed (then the kind is listed in each namespace instead).
async fn namespaces_holding(client: &kube::Client, ar: &ApiResource) -> Option<BTreeSet<String>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let mut out = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(METADATA_PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = tokio::time::timeout(REQUEST, api.list_metadata(&lp))
            .await
            .ok()?
            .ok()?;
        out.extend(page.items.into_iter().filter_map(|o| o.metadata.namespace));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Some(out);
        }
    }
}

/// Every object of `namespace` that goes into a backup, cleaned, handed to `each` one page at a time (kinds
/// in restore order, then by name), so memory holds one page. A type the operator may not list (403) is
/// skipped and returned by name; any other failure fails the export (a backup missing a kind silently is
/// worse than a failed one).
pub async fn export(
    client: &kube::Client,
    kinds: &[ApiResource],
    namespace: &str,
    each: &mut (dyn FnMut(ObjectId, Value) -> Result<usize, String> + Send),
) -> Result<Vec<String>, String> {
    let mut forbidden = Vec::new();
    for ar in kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
        let mut token: Option<String> = None;
        let mut limit = PAGE_FIRST;
        loop {
            let mut lp = ListParams::default().limit(limit);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = match tokio::time::timeout(REQUEST, api.list(&lp)).await {
                Err(_) => {
                    return Err(format!(
                        "listing {} did not answer within {}s",
                        ar.plural,
                        REQUEST.as_secs()
                    ));
                }
                Ok(Err(kube::Error::Api(s))) if s.code == 403 => {
                    forbidden.push(ar.plural.clone());
                    break;
                }
                Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 405 => break,
                Ok(Err(e)) => return Err(format!("listing {}: {e}", ar.plural)),
                Ok(Ok(l)) => l,
            };
            token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
            // Compressing, sealing and writing the scratch file block: this worker says so, and the
            // runtime moves its other tasks (DNS, leases, probes) elsewhere meanwhile.
            let n = page.items.len();
            let bytes = tokio::task::block_in_place(|| add_page(ar, page.items, each))?;
            if let Some(per_object) = bytes.checked_div(n) {
                let per_object = per_object.max(1);
                limit = u32::try_from(PAGE_BYTES / per_object)
                    .unwrap_or(PAGE_MAX)
                    .clamp(PAGE_MIN, PAGE_MAX);
            }
            if token.is_none() {
                break;
            }
        }
    }
    Ok(forbidden)
}

fn add_page(
    ar: &ApiResource,
    items: Vec<DynamicObject>,
    each: &mut (dyn FnMut(ObjectId, Value) -> Result<usize, String> + Send),
) -> Result<usize, String> {
    let mut bytes = 0;
    for mut o in items {
        o.types = Some(kube::core::TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        });
        let v = serde_json::to_value(&o).map_err(|e| format!("encoding {}: {e}", ar.kind))?;
        if let Some(c) = clean(&v) {
            let id = ObjectId {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
                name: o.metadata.name.clone().unwrap_or_default(),
            };
            bytes += each(id, c)?;
        }
    }
    Ok(bytes)
}

/// The API resource of an object id in a cluster (pinned by discovery of that one kind).
pub async fn resource(client: &kube::Client, id: &ObjectId) -> Result<ApiResource, String> {
    let (group, version) = match id.api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), id.api_version.clone()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &id.kind);
    let pinned = tokio::time::timeout(REQUEST, kube::discovery::pinned_kind(client, &gvk))
        .await
        .map_err(|_| format!("discovering {} did not answer in time", id.kind))?
        .map_err(|e| format!("{} {} is not served here: {e}", id.api_version, id.kind))?;
    Ok(pinned.0)
}

/// Server-side applies one object into `namespace` under the restore field manager (forced: a restore puts
/// back what the backup holds).
pub async fn apply(
    client: &kube::Client,
    ar: &ApiResource,
    namespace: &str,
    body: &Value,
) -> Result<(), String> {
    let name = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or("object without a name")?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let mut body = body.clone();
    if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("namespace".into(), Value::String(namespace.into()));
    }
    let pp = PatchParams::apply(RESTORE_MANAGER).force();
    match tokio::time::timeout(REQUEST, api.patch(name, &pp, &Patch::Apply(&body))).await {
        Err(_) => Err(format!("applying {} {name} did not answer in time", ar.kind)),
        // A refusal of a Secret may echo its data (admission webhooks do): only the code and reason.
        Ok(Err(kube::Error::Api(s))) if ar.kind == "Secret" => {
            Err(format!("applying Secret {name}: {} {}", s.code, s.reason))
        }
        Ok(Err(kube::Error::Api(s))) => Err(format!(
            "applying {} {name}: {} {}: {}",
            ar.kind, s.code, s.reason, s.message
        )),
        Ok(Err(_)) => Err(format!("applying {} {name}: the request failed", ar.kind)),
        Ok(Ok(_)) => Ok(()),
    }
}

/// An object as the server has it now.
pub async fn get(
    client: &kube::Client,
    ar: &ApiResource,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    match tokio::time::timeout(REQUEST, api.get_opt(name)).await {
        Err(_) => Err(format!("reading {} {name} did not answer in time", ar.kind)),
        Ok(Err(e)) => Err(format!("reading {} {name}: {e}", ar.kind)),
        Ok(Ok(o)) => Ok(o
            .map(|o| serde_json::to_value(o).map_err(|e| e.to_string()))
            .transpose()?),
    }
}
