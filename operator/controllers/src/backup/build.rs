//! Building a backup (IO): the tenant's namespace read from its active region's cluster, Secrets sealed,
//! the control plane's Tenant and the object-storage listing, into one archive with its manifest. The
//! archive is streamed into a scratch file as the export pages come in: memory holds one list page and the
//! manifest's entry list, never the archive.

use std::time::Duration;

use azora_adapters::archive::{self, Builder, SecretKey};
use azora_api::Time;
use azora_api::backup::BackupSpec;
use azora_core::backup::{Entry, Manifest, ObjectId, clean};
use azora_core::tenancy::namespace_of;
use kube::ResourceExt as _;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::export::{Kinds, Occupancy, export};
use super::room::Room;

static KINDS: std::sync::LazyLock<Kinds> = std::sync::LazyLock::new(Kinds::default);
static OCCUPANCY: std::sync::LazyLock<Occupancy> = std::sync::LazyLock::new(Occupancy::default);

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

/// A built archive, in a scratch file removed when this is dropped.
pub(super) struct Built {
    pub(super) file: tempfile::NamedTempFile,
    pub(super) size: u64,
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

/// Rows of the object-storage listing per archive entry (each entry stays far below the entry limit).
const LISTING_ROWS: usize = 10_000;

/// Exports the tenant from `source` and builds the archive (bounded: an entry or a tenant over the
/// archive's limits fails the run instead of producing a backup no restore could open).
pub(super) async fn build(
    room: &Room,
    spec: &BackupSpec,
    backup: &str,
    source: &str,
    key: Option<&SecretKey>,
    not_before: Option<jiff::Timestamp>,
) -> Result<Built, BuildError> {
    let ctx = &room.ctx;
    let tenant_name = &spec.tenant;
    let include = &spec.include;
    let namespace = namespace_of(tenant_name);
    let mut data_time = Time::now();
    let file = archive::scratch(&room.cfg.scratch_dir).map_err(|e| {
        format!(
            "creating a scratch file in {}: {e}",
            room.cfg.scratch_dir.display()
        )
    })?;
    let out = file
        .reopen()
        .map_err(|e| format!("opening the scratch file: {e}"))?;
    let mut b = Builder::new(std::io::BufWriter::new(out)).map_err(|e| e.to_string())?;
    let mut objects = 0u64;
    let add = |b: &mut Builder<_>, e: Entry, bytes: &[u8]| -> Result<(), String> {
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
        // Only the kinds the region's occupancy snapshot saw in this namespace; the data time is the
        // snapshot's when it is older than this run. Without a usable snapshot every kind is listed.
        let kinds: Vec<_> = match OCCUPANCY.of(source, &client, &kinds, not_before).await {
            Some(snapshot) => {
                if snapshot.at < data_time.0 {
                    data_time = Time(snapshot.at);
                }
                kinds
                    .into_iter()
                    .filter(|ar| snapshot.may_hold(ar, &namespace))
                    .collect()
            }
            None => kinds,
        };
        // An archive error (over a limit) is permanent; a cluster that stops answering is transient.
        let mut permanent: Option<String> = None;
        let mut each = |id: ObjectId, body: Value| -> Result<usize, String> {
            let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
            let added = if id.kind == "Secret" && id.api_version == "v1" {
                let Some(key) = key else {
                    skipped_secrets += 1;
                    return Ok(bytes.len());
                };
                let path = format!("secrets/{}.json.sealed", id.name);
                let sealed = key.seal(&bytes, &path).map_err(|e| e.to_string())?;
                add(&mut b, entry(&path, "secret", Some(id)), &sealed)
            } else {
                let path = format!(
                    "objects/{}/{}/{}.json",
                    id.api_version.replace('/', "_"),
                    id.kind,
                    id.name
                );
                add(&mut b, entry(&path, "object", Some(id)), &bytes)
            };
            if let Err(e) = added {
                permanent = Some(e.clone());
                return Err(e);
            }
            objects += 1;
            Ok(bytes.len())
        };
        let exported = export(&client, &kinds, &namespace, &mut each).await;
        if let Some(e) = permanent {
            return Err(BuildError::Permanent(e));
        }
        let forbidden = exported.map_err(BuildError::Transient)?;
        if !forbidden.is_empty() {
            warn!(tenant = %tenant_name, region = %source, kinds = ?forbidden, "not allowed to list these kinds; left out of the backup");
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
        // In entries of `LISTING_ROWS`, so reading one back never needs the whole listing at once. An empty
        // bucket still gets one (empty) entry: the restore then knows the backup looked.
        let chunks: Vec<&[azora_core::replication::SourceObject]> = if listing.is_empty() {
            vec![&[]]
        } else {
            listing.chunks(LISTING_ROWS).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let rows: Vec<Value> = chunk
                .iter()
                .map(|o| json!({"key": o.key, "etag": o.etag, "size": o.size}))
                .collect();
            add(
                &mut b,
                entry(&format!("object-storage/listing-{i:05}.json"), "listing", None),
                &serde_json::to_vec(&rows).unwrap_or_default(),
            )?;
        }
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
    let done = b.finish(manifest).map_err(|e| e.to_string())?;
    done.out
        .into_inner()
        .map_err(|e| format!("writing the scratch file: {}", e.error()))?;
    Ok(Built {
        file,
        size: done.size,
        manifest: done.manifest,
        data_time,
        objects,
    })
}
