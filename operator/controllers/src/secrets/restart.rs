//! Rolling restarts of the workloads that consume a rotated secret: Deployments and StatefulSets in the
//! tenant's namespace annotated `azora.io/restart-on-rotation: <secret>[,<secret>…]` (a tenant secret's
//! name or its `targetSecret`) get a pod-template annotation with the new version — only when the version
//! they consume really changed. The version a workload consumes is recorded in its own metadata
//! (`azora.io/consumed-<secret>`, and the rotation that made it in `azora.io/consumed-rotation-<secret>`;
//! neither restarts it): the first time a workload is seen it is only
//! recorded, an operator restart finds nothing changed, and several secrets rotated together make one
//! change per workload.

use std::collections::BTreeMap;
use std::time::Duration;

use azora_core::tenancy::namespace_of;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::Room;

/// Annotation a workload carries to be restarted when these secrets rotate.
pub const RESTART_ON_ROTATION: &str = "azora.io/restart-on-rotation";
const REQUEST: Duration = Duration::from_secs(10);

fn kinds() -> [ApiResource; 2] {
    let ar = |kind: &str, plural: &str| ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    [ar("Deployment", "deployments"), ar("StatefulSet", "statefulsets")]
}

/// The version of a secret its workloads should consume.
#[derive(Clone, Copy)]
pub(super) struct Consumed<'a> {
    pub secret: &'a str,
    pub version: u64,
    /// The rotation that made it: a workload that consumes this rotation under another version number (the
    /// home region moved, and numbers versions its own way) is not restarted.
    pub rotation: Option<&'a str>,
}

/// Restarts in `region` the workloads whose consumed version of a secret in `versions` (keyed by secret name
/// and by target Secret name) differs; returns how many were restarted.
pub(super) async fn roll(
    room: &Room,
    tenant: &str,
    region: &str,
    versions: &BTreeMap<&str, Consumed<'_>>,
) -> Result<usize, String> {
    let cluster = room.cluster(region)?;
    let ns = namespace_of(tenant);
    let mut restarted = 0;
    for ar in kinds() {
        let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), &ns, &ar);
        let list = match tokio::time::timeout(REQUEST, api.list(&ListParams::default())).await {
            Err(_) => return Err(format!("listing {} did not answer in time", ar.plural)),
            Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 403 => continue,
            Ok(Err(e)) => return Err(format!("listing {}: {e}", ar.plural)),
            Ok(Ok(l)) => l,
        };
        for w in list.items {
            let annotations = w.metadata.annotations.clone().unwrap_or_default();
            let Some(wanted) = annotations.get(RESTART_ON_ROTATION) else {
                continue;
            };
            let mut record = Map::new();
            let mut template = Map::new();
            for name in wanted.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let Some(c) = versions.get(name) else {
                    continue;
                };
                let secret = c.secret;
                let key = format!("azora.io/consumed-{secret}");
                let rkey = format!("azora.io/consumed-rotation-{secret}");
                let v = c.version.to_string();
                // With both rotations known, they decide (a home move renumbers the same value, and a new
                // number can equal an old one's); else the version numbers do.
                let changed = match (annotations.get(&rkey), c.rotation) {
                    (Some(seen), Some(now)) => Some(seen != now),
                    _ => None,
                };
                match annotations.get(&key) {
                    // First seen: it runs with what the Secret holds now.
                    None => {
                        record.insert(key, json!(v));
                    }
                    Some(seen) => {
                        if *seen != v {
                            record.insert(key, json!(v));
                        }
                        if changed.unwrap_or(*seen != v) {
                            template.insert(format!("azora.io/rotated-{secret}"), json!(v));
                            // (The pod template changes even when the new number is one it had.)
                            if let Some(r) = c.rotation {
                                template.insert(format!("azora.io/rotation-{secret}"), json!(r));
                            }
                        }
                    }
                }
                if let Some(r) = c.rotation
                    && annotations.get(&rkey).map(String::as_str) != Some(r)
                {
                    record.insert(rkey, json!(r));
                }
            }
            if record.is_empty() {
                continue;
            }
            let name = w.metadata.name.clone().unwrap_or_default();
            let mut patch = json!({"metadata": {"annotations": Value::Object(record)}});
            if !template.is_empty() {
                patch["spec"] = json!({"template": {"metadata": {"annotations": Value::Object(template)}}});
            }
            room.ctx
                .fence
                .check()
                .await
                .map_err(|e| format!("not writing: {e}"))?;
            match tokio::time::timeout(
                REQUEST,
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
            {
                Err(_) => return Err(format!("patching {} {name} did not answer in time", ar.kind)),
                Ok(Err(e)) => return Err(format!("patching {} {name}: {e}", ar.kind)),
                Ok(Ok(_)) => {
                    if patch.get("spec").is_some() {
                        restarted += 1;
                        tracing::info!(%tenant, %region, kind = %ar.kind, workload = %name, "restarted after a secret rotation");
                    }
                }
            }
        }
    }
    Ok(restarted)
}
