//! Building a backup (IO): the tenant's namespace read from its active region's cluster, Secrets sealed,
//! the control plane's Tenant and the object-storage listing, into one archive with its manifest.

use std::time::Duration;

use azora_adapters::archive::{self, Builder, SecretKey};
use azora_api::Time;
use azora_api::backup::BackupSpec;
use azora_core::backup::{Entry, Manifest, ObjectId, clean};
use azora_core::tenancy::namespace_of;
use kube::ResourceExt as _;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::export::{Kinds, export};
use super::room::Room;

static KINDS: std::sync::LazyLock<Kinds> = std::sync::LazyLock::new(Kinds::default);

/// Why a build failed: `Transient` (a cluster or store that did not answer: the run waits and tries again)
/// or `Permanent` (the run fails).
pub(super) enum BuildError {
    Transient(String),
    Permanent(String),
}

impl From<String> for BuildError {
    fn from(s: String) -> Self {
        Self::Permanent(s)
    }
}

/// A built archive.
pub(super) struct Built {
    pub(super) bytes: Vec<u8>,
    pub(super) manifest: Manifest,
    pub(super) data_time: Time,
    pub(super) objects: u64,
}

fn entry(path: &str, kind: &str, object: Option<ObjectId>) -> Entry {
    Entry {
        path: path.into(),
        kind: kind.into(),
        object,
        sha256: String::new(),
        size: 0,
    }
}

/// Exports the tenant from `source` and builds the archive (bounded: a tenant whose entries exceed
/// [`archive::MAX_EXPANDED`] fails the run instead of producing a backup no restore could open).
pub(super) async fn build(
    room: &Room,
    spec: &BackupSpec,
    backup: &str,
    source: &str,
    key: Option<&SecretKey>,
) -> Result<Built, BuildError> {
    let ctx = &room.ctx;
    let tenant_name = &spec.tenant;
    let include = &spec.include;
    let namespace = namespace_of(tenant_name);
    let data_time = Time::now();
    let mut b = Builder::new().map_err(|e| e.to_string())?;
    let mut objects = 0u64;
    let mut total = 0u64;
    let mut add = |b: &mut Builder, e: Entry, bytes: &[u8]| -> Result<(), String> {
        total += bytes.len() as u64;
        if total > archive::MAX_EXPANDED {
            return Err(format!(
                "the tenant's objects exceed {} MiB; not backed up",
                archive::MAX_EXPANDED / 1024 / 1024
            ));
        }
        b.add(e, bytes).map_err(|e| e.to_string())
    };
    let mut skipped_secrets = 0u64;
    if include.kubernetes_objects {
        let cluster = ctx.handles.clusters.get(source).map_err(|why| {
            BuildError::Transient(why.unwrap_or_else(|| format!("region {source} has no cluster")))
        })?;
        let client = cluster.client();
        let ns = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        match tokio::time::timeout(Duration::from_secs(20), ns.get_opt(&namespace)).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                return Err(BuildError::Permanent(format!(
                    "namespace {namespace} does not exist in {source}"
                )));
            }
            Ok(Err(e)) => {
                return Err(BuildError::Transient(format!(
                    "reading namespace {namespace} in {source}: {e}"
                )));
            }
            Err(_) => {
                return Err(BuildError::Transient(format!(
                    "the {source} cluster did not answer within 20s"
                )));
            }
        }
        let kinds = KINDS.of(source, &client).await.map_err(BuildError::Transient)?;
        let (items, forbidden) = export(&client, &kinds, &namespace)
            .await
            .map_err(BuildError::Transient)?;
        if !forbidden.is_empty() {
            warn!(tenant = %tenant_name, region = %source, kinds = ?forbidden, "not allowed to list these kinds; left out of the backup");
        }
        for (id, body) in items {
            let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
            if id.kind == "Secret" && id.api_version == "v1" {
                let Some(key) = key else {
                    skipped_secrets += 1;
                    continue;
                };
                let path = format!("secrets/{}.json.sealed", id.name);
                let sealed = key.seal(&bytes, &path).map_err(|e| e.to_string())?;
                add(&mut b, entry(&path, "secret", Some(id)), &sealed)?;
            } else {
                let path = format!(
                    "objects/{}/{}/{}.json",
                    id.api_version.replace('/', "_"),
                    id.kind,
                    id.name
                );
                add(&mut b, entry(&path, "object", Some(id)), &bytes)?;
            }
            objects += 1;
        }
    }
    if include.control_plane
        && let Some(t) = ctx
            .caches
            .tenants
            .store()
            .state()
            .into_iter()
            .find(|t| t.name_any() == *tenant_name)
    {
        let v = serde_json::to_value(t.as_ref()).map_err(|e| e.to_string())?;
        let mut c = clean(&v).unwrap_or(v);
        if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("finalizers");
        }
        add(
            &mut b,
            entry("control-plane/tenant.json", "tenant", None),
            &serde_json::to_vec(&c).unwrap_or_default(),
        )?;
    }
    if include.object_storage {
        let store = room.store(source).await.map_err(BuildError::Transient)?;
        let listing = store
            .list(&format!("tenants/{tenant_name}/"))
            .await
            .map_err(|e| BuildError::Transient(e.to_string()))?;
        let rows: Vec<Value> = listing
            .iter()
            .map(|o| json!({"key": o.key, "etag": o.etag, "size": o.size}))
            .collect();
        add(
            &mut b,
            entry("object-storage/listing.json", "listing", None),
            &serde_json::to_vec(&rows).unwrap_or_default(),
        )?;
    }
    if skipped_secrets > 0 {
        info!(tenant = %tenant_name, skipped_secrets, "no encryption key: Secrets left out of the backup");
    }
    let manifest = Manifest {
        format: azora_core::backup::FORMAT,
        tenant: tenant_name.clone(),
        backup: backup.to_string(),
        namespace,
        source_region: source.to_string(),
        data_time: data_time.0.to_string(),
        secrets_included: key.is_some(),
        key_id: key.map(SecretKey::id),
        entries: Vec::new(),
        archive_sha256: None,
    };
    let (bytes, manifest) = b.finish(manifest).map_err(|e| e.to_string())?;
    Ok(Built {
        bytes,
        manifest,
        data_time,
        objects,
    })
}
