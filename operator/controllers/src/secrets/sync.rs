//! Target Secrets in the regional clusters: `targetSecret` in the tenant's namespace, applied under the
//! field manager `azora-operator/secrets`, labelled as ours, with the version and rotation id in
//! annotations and the values only in `data` (the previous value as `previous-<key>` during the grace
//! period). A Secret of that name that is not ours is never touched.

use std::collections::BTreeMap;
use std::time::Duration;

use azora_adapters::leader::BULK_WRITE_FENCE_AGE;
use azora_adapters::vault::SecretData;
use azora_api::tenant::TenantSecret;
use azora_core::secrets::reserved;
use azora_core::tenancy::{MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL, namespace_of};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

use super::Room;

/// Label naming the tenant secret a target Secret carries.
pub const SECRET_LABEL: &str = "azora.io/secret";
/// Annotation: the home Vault version the Secret carries.
pub const VERSION_ANNOTATION: &str = "azora.io/secret-version";
/// Annotation: the rotation that made it.
pub const ROTATION_ANNOTATION: &str = "azora.io/rotation-id";
const MANAGER: &str = "azora-operator/secrets";
const REQUEST: Duration = Duration::from_secs(10);

fn ours(s: &Secret, tenant: &str) -> bool {
    let labels = s.metadata.labels.as_ref();
    labels.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGED_BY)
        && labels.and_then(|l| l.get(TENANT_LABEL)).map(String::as_str) == Some(tenant)
}

/// A kube error in words, without anything of the request body.
fn said(e: &kube::Error, values: &[&str]) -> String {
    let text = match e {
        kube::Error::Api(s) => format!("HTTP {} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    };
    if values.iter().any(|v| !v.is_empty() && text.contains(v)) {
        // Never let a value through, whatever the server echoed.
        return match e {
            kube::Error::Api(s) => format!("HTTP {} {}", s.code, s.reason),
            _ => "request failed".into(),
        };
    }
    text
}

/// The first placed region whose target Secret exists and is not ours (message), checked in every region
/// whose cluster answers. A region that does not answer is checked again when it is synced.
pub(super) async fn collision(
    room: &Room,
    tenant: &str,
    s: &TenantSecret,
    placed: &[String],
) -> Option<String> {
    let ns = namespace_of(tenant);
    for region in placed {
        let Ok(cluster) = room.cluster(region) else {
            continue;
        };
        let api: Api<Secret> = Api::namespaced(cluster.client(), &ns);
        if let Ok(Ok(Some(live))) = tokio::time::timeout(REQUEST, api.get_opt(&s.target_secret)).await
            && !ours(&live, tenant)
        {
            return Some(format!(
                "Secret {ns}/{} in region {region} exists and is not managed by azora-operator; rename targetSecret or remove that Secret",
                s.target_secret
            ));
        }
    }
    None
}

/// The error of a regional cluster that did not answer in time.
fn silent(region: &str) -> String {
    format!(
        "the {region} cluster did not answer within {}s",
        REQUEST.as_secs()
    )
}

/// Removes the target Secret `target` of secret `name` from `region` (the tenant no longer placed there, or
/// the secret retired): only ours and that secret's, with its UID
/// as precondition. Gone already, or its namespace gone or going (the tenant's removal takes it along):
/// done.
pub(super) async fn remove(
    room: &Room,
    tenant: &str,
    name: &str,
    target: &str,
    region: &str,
) -> Result<(), String> {
    let cluster = room.cluster(region)?;
    let ns = namespace_of(tenant);
    let api: Api<Secret> = Api::namespaced(cluster.client(), &ns);
    let live = match tokio::time::timeout(REQUEST, api.get_opt(target)).await {
        Err(_) => {
            return Err(silent(region));
        }
        Ok(Ok(l)) => l,
        // Without the per-namespace grant (removed with the tenant's namespace) the Secret cannot be read:
        // what the namespace says decides.
        Ok(Err(kube::Error::Api(e))) if e.code == 403 => {
            let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client());
            return match tokio::time::timeout(REQUEST, namespaces.get_opt(&ns)).await {
                Ok(Ok(None)) => Ok(()),
                Ok(Ok(Some(n))) if n.metadata.deletion_timestamp.is_some() => Ok(()),
                Ok(Ok(Some(_))) => Err(format!("reading Secret {ns}/{}: HTTP 403 {}", target, e.reason)),
                Ok(Err(e)) => Err(format!("reading namespace {ns}: {}", said(&e, &[]))),
                Err(_) => Err(silent(region)),
            };
        }
        Ok(Err(e)) => {
            return Err(format!("reading Secret {ns}/{}: {}", target, said(&e, &[])));
        }
    };
    room.set_target(
        &format!("{region}/{:x}/{ns}/{}", cluster.identity(), target),
        None,
    );
    // Ours, and the copy of this secret (not another Secret of the tenant's that took the name).
    let Some(live) = live.filter(|l| {
        ours(l, tenant)
            && l.metadata
                .labels
                .as_ref()
                .and_then(|m| m.get(SECRET_LABEL))
                .map(String::as_str)
                == Some(name)
    }) else {
        return Ok(());
    };
    let dp = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: live.metadata.uid.clone(),
            resource_version: None,
        }),
        ..kube::api::DeleteParams::default()
    };
    match tokio::time::timeout(REQUEST, api.delete(target, &dp)).await {
        Err(_) => Err(silent(region)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(e))) if e.code == 404 || e.code == 409 => Ok(()),
        Ok(Err(e)) => Err(format!("deleting Secret {ns}/{}: {}", target, said(&e, &[]))),
    }
}

/// Applies the target Secret in `region` with `data` (and `previous` as `previous-` keys).
#[allow(clippy::too_many_arguments)]
pub(super) async fn apply(
    room: &Room,
    tenant: &str,
    s: &TenantSecret,
    region: &str,
    data: &SecretData,
    previous: Option<&SecretData>,
    version: u64,
    rotation: &str,
    audit: bool,
) -> Result<(), String> {
    let cluster = room.cluster(region)?;
    let ns = namespace_of(tenant);
    let api: Api<Secret> = Api::namespaced(cluster.client(), &ns);
    let values: Vec<String> = data
        .0
        .values()
        .chain(previous.iter().flat_map(|p| p.0.values()))
        .flat_map(|v| {
            use base64::Engine as _;
            [
                v.clone(),
                base64::engine::general_purpose::STANDARD.encode(v.as_bytes()),
            ]
        })
        .collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    // The operator's own keys (the rotation id) stay in Vault.
    let mut d: BTreeMap<String, ByteString> = data
        .0
        .iter()
        .filter(|(k, _)| !reserved(k))
        .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
        .collect();
    if let Some(p) = previous {
        for (k, v) in p.0.iter().filter(|(k, _)| !reserved(k)) {
            d.insert(format!("previous-{k}"), ByteString(v.as_bytes().to_vec()));
        }
    }
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (TENANT_LABEL.to_string(), tenant.to_string()),
        (SECRET_LABEL.to_string(), s.name.clone()),
    ]);
    let annotations = BTreeMap::from([
        (VERSION_ANNOTATION.to_string(), version.to_string()),
        (ROTATION_ANNOTATION.to_string(), rotation.to_string()),
    ]);
    let cached = format!("{region}/{:x}/{ns}/{}", cluster.identity(), s.target_secret);
    let body = |resource_version: Option<String>| Secret {
        metadata: ObjectMeta {
            name: Some(s.target_secret.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(d.clone()),
        ..Secret::default()
    };
    // Written by this term and, if its resourceVersion still matches, changed by nobody since: the same
    // server-side apply with that resourceVersion as its precondition, no read first (one field owner,
    // so keys no longer wanted — the previous value after the grace period — go). An audit always reads.
    // One fenced apply (conditioned on `rv` when given); records the resourceVersion it produced. The
    // outer error is the cluster not answering or this replica no longer leading; the inner one the API's.
    // (A rotation round applies a Secret per secret and region: they share a confirmation under a second
    // old instead of one quorum read of the Lease each. Each apply is conditioned on the resourceVersion
    // it was built from — this term's last write, or the read just before — so a late write of a deposed
    // leader cannot replace a successor's; only a create has nothing to be conditioned on.)
    let apply = async |rv: Option<String>| -> Result<Result<(), kube::Error>, String> {
        room.ctx
            .fence
            .check_recent(BULK_WRITE_FENCE_AGE)
            .await
            .map_err(|e| format!("not writing: {e}"))?;
        let params = PatchParams::apply(MANAGER).force();
        let patch = Patch::Apply(body(rv));
        let sent = api.patch(&s.target_secret, &params, &patch);
        match tokio::time::timeout(REQUEST, sent).await {
            Err(_) => Err(silent(region)),
            Ok(Err(e)) => Ok(Err(e)),
            Ok(Ok(live)) => {
                if let Some(rv) = live.metadata.resource_version {
                    room.set_target(&cached, Some(rv));
                }
                Ok(Ok(()))
            }
        }
    };
    let failed = |e: &kube::Error| format!("applying Secret {ns}/{}: {}", s.target_secret, said(e, &values));
    if let Some(rv) = room.target(&cached).filter(|_| !audit) {
        room.set_target(&cached, None);
        match apply(Some(rv)).await? {
            Ok(()) => return Ok(()),
            // Changed or deleted since this term wrote it: read and judged below.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
            Err(e) => return Err(failed(&e)),
        }
    }
    let live = match tokio::time::timeout(REQUEST, api.get_opt(&s.target_secret)).await {
        Err(_) => {
            return Err(silent(region));
        }
        Ok(Err(e)) => {
            return Err(format!(
                "reading Secret {ns}/{}: {}",
                s.target_secret,
                said(&e, &values)
            ));
        }
        Ok(Ok(Some(live))) if !ours(&live, tenant) => {
            return Err(format!(
                "TargetSecretConflict: Secret {ns}/{} exists and is not managed by azora-operator",
                s.target_secret
            ));
        }
        Ok(Ok(live)) => live,
    };
    // Already as wanted (an audit, a restart): nothing is written.
    if let Some(live) = &live {
        let meta = |m: &Option<BTreeMap<String, String>>, k: &str| m.as_ref().and_then(|m| m.get(k)).cloned();
        if live.data.as_ref() == Some(&d)
            && meta(&live.metadata.labels, SECRET_LABEL).as_deref() == Some(s.name.as_str())
            && meta(&live.metadata.annotations, VERSION_ANNOTATION) == Some(version.to_string())
            && meta(&live.metadata.annotations, ROTATION_ANNOTATION).as_deref() == Some(rotation)
        {
            if let Some(rv) = live.metadata.resource_version.clone() {
                room.set_target(&cached, Some(rv));
            }
            return Ok(());
        }
    }
    // (Changed by someone since that read: a conflict, judged again with the next pass.)
    let read_at = live.and_then(|l| l.metadata.resource_version);
    apply(read_at).await?.map_err(|e| failed(&e))
}
