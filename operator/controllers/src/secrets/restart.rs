//! Rolling restarts of the workloads that consume a rotated secret: Deployments and StatefulSets in the
//! tenant's namespace annotated `azora.io/restart-on-rotation: <secret>[,<secret>…]` (a tenant secret's
//! name or its `targetSecret`) get a pod-template annotation with the new version — only when the version
//! they consume really changed. The version a workload consumes is recorded in its own metadata
//! (`azora.io/consumed-<secret>`, which does not restart it): the first time a workload is seen it is only
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

/// Restarts in `region` the workloads whose consumed version of a secret in `versions` (keyed by secret name
/// and by target Secret name → (secret name, version)) differs; returns how many were restarted.
pub(super) async fn roll(
    room: &Room,
    tenant: &str,
    region: &str,
    versions: &BTreeMap<&str, (&str, u64)>,
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
                let Some((secret, version)) = versions.get(name) else {
                    continue;
                };
                let key = format!("azora.io/consumed-{secret}");
                let v = version.to_string();
                match annotations.get(&key) {
                    Some(seen) if *seen == v => {}
                    Some(_) => {
                        record.insert(key, json!(v));
                        template.insert(format!("azora.io/rotated-{secret}"), json!(v));
                    }
                    // First seen: it runs with what the Secret holds now.
                    None => {
                        record.insert(key, json!(v));
                    }
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
