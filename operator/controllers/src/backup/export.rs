//! Reading a tenant's namespace from a regional cluster (IO): the namespaced resource types come from API
//! discovery (kept for a few minutes per region), every one the operator may list is listed, and each object
//! is cleaned of server-set fields (`azora_core::backup::clean`). Applying restored objects and reading
//! them back for verification lives here too, so both sides resolve kinds the same way.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use azora_core::backup::{ObjectId, clean, resource_backed_up};
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
/// Objects per list page.
const PAGE: u32 = 500;
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
        ars.sort_by(|a, b| (&a.group, &a.kind).cmp(&(&b.group, &b.kind)));
        if let Ok(mut m) = self.by_region.lock() {
            m.insert(region.to_string(), (Instant::now(), ars.clone()));
        }
        Ok(ars)
    }
}

/// Every object of `namespace` that goes into a backup, cleaned, in a stable order. A type the operator
/// may not list (403) is skipped and named in the second value; any other failure fails the export (a
/// backup missing a kind silently is worse than a failed one).
pub async fn export(
    client: &kube::Client,
    kinds: &[ApiResource],
    namespace: &str,
) -> Result<(Vec<(ObjectId, Value)>, Vec<String>), String> {
    let mut out = Vec::new();
    let mut forbidden = Vec::new();
    for ar in kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
        // Paged, so a namespace with many objects is never one giant response.
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        let mut skip = false;
        loop {
            let mut lp = ListParams::default().limit(PAGE);
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
                    skip = true;
                    break;
                }
                Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 405 => {
                    skip = true;
                    break;
                }
                Ok(Err(e)) => return Err(format!("listing {}: {e}", ar.plural)),
                Ok(Ok(l)) => l,
            };
            token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
            items.extend(page.items);
            if token.is_none() {
                break;
            }
        }
        if skip {
            continue;
        }
        for mut o in items {
            o.types = Some(kube::core::TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            });
            let v = serde_json::to_value(&o).map_err(|e| format!("encoding {}: {e}", ar.kind))?;
            if let Some(c) = clean(&v) {
                let name = o.metadata.name.clone().unwrap_or_default();
                out.push((
                    ObjectId {
                        api_version: ar.api_version.clone(),
                        kind: ar.kind.clone(),
                        name,
                    },
                    c,
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, forbidden))
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
