//! One Backup run, intent first: the finalizer (so every copy is deleted with the Backup), then `Running`
//! with the source region, then — before any byte is uploaded — the archive's SHA-256, size and every
//! location it goes to; then the upload to the home region's store, the copies to every other region the
//! residency allows, each read back and compared. `Succeeded` only when every required copy is verified;
//! otherwise `PartiallyFailed` (naming the regions) or `Failed`.
//!
//! A run recorded as going that this process does not hold was interrupted: if no checksum was recorded
//! nothing was uploaded and it starts again; otherwise each copy is read back against the recorded
//! checksum and the missing ones are copied from a verified one (the same bytes: a key never gets other
//! content); with no verified copy anywhere it fails cleanly and removes what it wrote. Finished backups
//! are read back again every `--backup-verify-every`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azora_adapters::archive::{Builder, SecretKey, sha256_hex};
use azora_api::Time;
use azora_api::backup::{BackupLocation, BackupSpec, BackupStatus, Phase};
use azora_api::tenant::TenantSpec;
use azora_core::backup::{ARCHIVE, Entry, MANIFEST, Manifest, ObjectId, clean, prefix, required_regions};
use azora_core::conditions::{Desired, types};
use azora_core::tenancy::namespace_of;
use azora_runtime::events::publish;
use azora_runtime::pipeline::{
    Kind as _, ReconcileError, add_finalizer, error_policy as generic, remove_finalizer,
};
use kube::ResourceExt as _;
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{Map, Value, json};
use tracing::{info, instrument, warn};

use super::BackupKind;
use super::export::{Kinds, export};
use super::room::{Room, check};

/// Finalizer: the Backup's copies are deleted before the Backup is.
pub const FINALIZER: &str = "azora.io/backup-copies";
/// Condition saying how the run went.
const COMPLETED: &str = "Completed";
/// Deadline of reading one copy back.
const READ_BACK: Duration = Duration::from_secs(60);

/// Error policy: the generic one.
pub fn error_policy(obj: Arc<DynamicObject>, err: &ReconcileError, room: Arc<Room>) -> Action {
    generic::<BackupKind>(obj, err, room.kc_backup.clone())
}

fn status_of(obj: &DynamicObject) -> BackupStatus {
    obj.data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

fn fields(st: &BackupStatus) -> Map<String, Value> {
    let mut v = serde_json::to_value(st)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    v.remove("conditions");
    v.remove("observedGeneration");
    v
}

/// Reconciles one Backup.
#[instrument(skip(obj, room), fields(controller = "backup", object = obj.metadata.name.as_deref().unwrap_or("")))]
pub async fn reconcile(obj: Arc<DynamicObject>, room: Arc<Room>) -> Result<Action, ReconcileError> {
    let ctx = &room.ctx;
    let _timer = ctx.metrics.timer(BackupKind::NAME);
    let st = status_of(&obj);
    if obj.metadata.deletion_timestamp.is_some() {
        return delete_copies(&room, &obj, &st).await;
    }
    let checked = match check::<BackupKind>(ctx, &obj, BackupKind::ready_message()).await? {
        Err(desired) => {
            room.write(&room.backups, &obj, Map::new(), &desired).await?;
            return Ok(Action::await_change());
        }
        Ok(c) => c,
    };
    if let Some(p) = st.phase
        && p.is_final()
    {
        return reverify(&room, &obj, st, &checked.validation).await;
    }
    if !checked.ok {
        // Nothing is exported or uploaded for a backup that does not check out; the conditions say why.
        room.write(&room.backups, &obj, fields(&st), &checked.validation)
            .await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let uid = obj.uid().unwrap_or_default();
    let Some(_claim) = room.claim(&uid) else {
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    let Some(tenant) = checked.world.tenants.get(&checked.spec.tenant).cloned() else {
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    let required = required_regions(&tenant, &checked.world, checked.spec.copy_to_allowed_regions);
    ctx.fence
        .check()
        .await
        .map_err(|e| ReconcileError::Fenced(Arc::new(e)))?;
    add_finalizer(ctx, &BackupKind::resource(), &obj, FINALIZER).await?;
    let run = Run {
        room: &room,
        obj: &obj,
        spec: &checked.spec,
        tenant: &tenant,
        validation: checked.validation,
        required,
        started: Instant::now(),
    };
    match (st.phase, &st.sha256) {
        // Interrupted after the checksum was recorded: something may be uploaded; resume from the copies.
        (Some(Phase::Running | Phase::Verifying), Some(_)) => run.resume(st).await,
        // New, or interrupted before anything was uploaded: (re)start.
        _ => run.fresh(st).await,
    }
}

struct Run<'a> {
    room: &'a Arc<Room>,
    obj: &'a DynamicObject,
    spec: &'a BackupSpec,
    tenant: &'a TenantSpec,
    validation: Vec<Desired>,
    required: Vec<String>,
    started: Instant,
}

/// Conditions of a run: validation, with `Ready` and `Completed` from the run.
fn run_conditions(validation: &[Desired], ready: Desired, completed: Desired) -> Vec<Desired> {
    let mut out: Vec<Desired> = validation
        .iter()
        .filter(|d| d.type_ != types::READY)
        .cloned()
        .collect();
    out.push(ready);
    out.push(completed);
    out
}

impl Run<'_> {
    fn name(&self) -> String {
        self.obj.name_any()
    }

    async fn write(
        &self,
        st: &BackupStatus,
        ready: Desired,
        completed: Desired,
    ) -> Result<(), ReconcileError> {
        let desired = run_conditions(&self.validation, ready, completed);
        self.room
            .write(&self.room.backups, self.obj, fields(st), &desired)
            .await
    }

    async fn write_running(&self, st: &BackupStatus, msg: &str) -> Result<(), ReconcileError> {
        self.write(
            st,
            Desired::fail(types::READY, "Running", msg),
            Desired::unknown(COMPLETED, "Running", msg),
        )
        .await
    }

    /// Fails the run before anything was uploaded (bad input or an unreadable source): nothing to undo.
    async fn fail(&self, mut st: BackupStatus, reason: &str, msg: String) -> Result<Action, ReconcileError> {
        st.phase = Some(Phase::Failed);
        st.completion_time = Some(Time::now());
        self.write(
            &st,
            Desired::fail(types::READY, reason, msg.clone()),
            Desired::fail(COMPLETED, reason, msg.clone()),
        )
        .await?;
        self.finished(&st, reason, &msg).await;
        Ok(Action::await_change())
    }

    async fn fresh(&self, mut st: BackupStatus) -> Result<Action, ReconcileError> {
        let ctx = &self.room.ctx;
        let tenant_name = &self.spec.tenant;
        // The key is read before anything else happens: a bad key fails the run with nothing uploaded.
        let key = match &self.spec.encryption_key {
            None => None,
            Some(k) => match ctx.secrets.value(&k.name, &k.key).await {
                Ok(Some(v)) => match SecretKey::from_secret_value(&v) {
                    Ok(key) => Some(key),
                    Err(e) => {
                        return self
                            .fail(
                                st,
                                "InvalidEncryptionKey",
                                format!("Secret {} key {}: {e}", k.name, k.key),
                            )
                            .await;
                    }
                },
                Ok(None) => {
                    return self
                        .fail(
                            st,
                            "EncryptionKeyMissing",
                            format!("Secret {} has no key {}", k.name, k.key),
                        )
                        .await;
                }
                Err(e) => return Err(ReconcileError::Fetch(e)),
            },
        };
        let source = source_region(self.room, self.obj, tenant_name, self.tenant);
        st.phase = Some(Phase::Running);
        st.start_time = Some(Time::now());
        st.source_region = Some(source.clone());
        st.sha256 = None;
        st.locations.clear();
        self.write_running(&st, &format!("exporting tenant {tenant_name} from {source}"))
            .await?;

        let built = match self.build(&source, key.as_ref()).await {
            Ok(b) => b,
            Err(msg) => return self.fail(st, "ExportFailed", msg).await,
        };
        st.data_time = Some(built.data_time);
        st.sha256 = built.manifest.archive_sha256.clone();
        st.size_bytes = Some(built.bytes.len() as u64);
        st.object_count = Some(built.objects);
        st.secrets_included = Some(key.is_some());
        st.locations = self.locations(None).await;
        // Intent: the checksum and every key are recorded before the first byte is uploaded.
        self.write_running(&st, "uploading and verifying copies").await?;
        info!(tenant = %tenant_name, backup = %self.name(), size = built.bytes.len(), objects = built.objects, "backup archived; uploading");
        let manifest_bytes = serde_json::to_vec_pretty(&built.manifest).unwrap_or_default();
        self.upload_all(&mut st, &built.bytes, &manifest_bytes).await;
        self.finish(st).await
    }

    /// The required locations, keeping what `before` says about each.
    async fn locations(&self, before: Option<&[BackupLocation]>) -> Vec<BackupLocation> {
        let key = format!("{}{ARCHIVE}", prefix(&self.spec.tenant, &self.name()));
        let mut out = Vec::new();
        for region in &self.required {
            if let Some(b) = before.and_then(|b| b.iter().find(|l| &l.region == region)) {
                out.push(b.clone());
                continue;
            }
            let bucket = self
                .room
                .store(region)
                .await
                .map(|s| s.bucket().to_string())
                .unwrap_or_default();
            out.push(BackupLocation {
                region: region.clone(),
                bucket,
                key: key.clone(),
                size_bytes: None,
                verified: false,
                verified_time: None,
                message: "not uploaded yet".into(),
            });
        }
        out
    }

    /// Uploads to the home region first, then to every other required region at once; each copy is read
    /// back and compared.
    async fn upload_all(&self, st: &mut BackupStatus, bytes: &[u8], manifest: &[u8]) {
        let sha = st.sha256.clone().unwrap_or_default();
        let home = &self.tenant.home_region;
        let (first, rest): (Vec<_>, Vec<_>) = st.locations.iter_mut().partition(|l| &l.region == home);
        for l in first {
            self.upload_one(l, bytes, manifest, &sha).await;
        }
        futures::future::join_all(
            rest.into_iter()
                .filter(|l| !l.verified)
                .map(|l| self.upload_one(l, bytes, manifest, &sha)),
        )
        .await;
    }

    async fn upload_one(&self, l: &mut BackupLocation, bytes: &[u8], manifest: &[u8], sha: &str) {
        let mkey = format!("{}{MANIFEST}", prefix(&self.spec.tenant, &self.name()));
        let result = async {
            let store = self.room.store(&l.region).await?;
            store
                .put_bytes(&l.key, bytes.to_vec())
                .await
                .map_err(|e| e.to_string())?;
            store
                .put_bytes(&mkey, manifest.to_vec())
                .await
                .map_err(|e| e.to_string())?;
            anyhow_free_read_back(&store, &l.key, sha).await
        }
        .await;
        set_verified(l, result);
    }

    /// Resumes an interrupted run from its copies.
    async fn resume(&self, mut st: BackupStatus) -> Result<Action, ReconcileError> {
        let sha = st.sha256.clone().unwrap_or_default();
        info!(backup = %self.name(), "resuming an interrupted backup from its copies");
        st.locations = self.locations(Some(&st.locations)).await;
        for l in st.locations.iter_mut() {
            let r = match self.room.store(&l.region).await {
                Ok(store) => anyhow_free_read_back(&store, &l.key, &sha).await,
                Err(e) => Err(e),
            };
            set_verified(l, r);
        }
        let Some(good) = st.locations.iter().find(|l| l.verified).cloned() else {
            // Nothing stored verified: the archive cannot be rebuilt with the same content, so the run fails
            // and removes whatever it wrote; the next scheduled run takes a new backup.
            self.remove_objects(&st).await;
            let msg = "interrupted before any copy was stored and verified; the next run takes a new backup";
            return self.fail(st, "Interrupted", msg.to_string()).await;
        };
        let store = self
            .room
            .store(&good.region)
            .await
            .map_err(ReconcileError::Remote)?;
        let bytes = match store.get_bytes(&good.key).await {
            Ok(Some(b)) if sha256_hex(&b) == sha => b,
            _ => return Ok(Action::requeue(Duration::from_secs(5))),
        };
        let mkey = format!("{}{MANIFEST}", prefix(&self.spec.tenant, &self.name()));
        let manifest = store.get_bytes(&mkey).await.ok().flatten().unwrap_or_default();
        self.write_running(&st, "resumed: copying to the regions still missing")
            .await?;
        self.upload_all(&mut st, &bytes, &manifest).await;
        self.finish(st).await
    }

    /// Deletes the run's objects in every required region (they are this run's: the prefix names it).
    async fn remove_objects(&self, st: &BackupStatus) {
        for l in &st.locations {
            if let Ok(store) = self.room.store(&l.region).await {
                let _ = store.delete(&l.key).await;
                let _ = store
                    .delete(&format!("{}{MANIFEST}", prefix(&self.spec.tenant, &self.name())))
                    .await;
            }
        }
    }

    /// The final phase from the copies: every one verified, some, or none.
    async fn finish(&self, mut st: BackupStatus) -> Result<Action, ReconcileError> {
        let bad: Vec<String> = st
            .locations
            .iter()
            .filter(|l| !l.verified)
            .map(|l| format!("{}: {}", l.region, l.message))
            .collect();
        let verified = st.locations.len() - bad.len();
        st.completion_time = Some(Time::now());
        let (phase, reason, msg) = if bad.is_empty() {
            let regions: Vec<&str> = st.locations.iter().map(|l| l.region.as_str()).collect();
            (
                Phase::Succeeded,
                "Verified",
                format!("verified in {}", regions.join(", ")),
            )
        } else if verified > 0 {
            (
                Phase::PartiallyFailed,
                "CopiesFailed",
                format!("not verified in {}", bad.join("; ")),
            )
        } else {
            (
                Phase::Failed,
                "CopiesFailed",
                format!("no copy verified: {}", bad.join("; ")),
            )
        };
        st.phase = Some(phase);
        let (ready, completed) = if phase == Phase::Succeeded {
            (
                Desired::ok(types::READY, reason, msg.clone()),
                Desired::ok(COMPLETED, reason, msg.clone()),
            )
        } else {
            (
                Desired::fail(types::READY, reason, msg.clone()),
                Desired::fail(COMPLETED, reason, msg.clone()),
            )
        };
        self.write(&st, ready, completed).await?;
        self.finished(&st, reason, &msg).await;
        Ok(Action::requeue(self.room.cfg.verify_every))
    }

    /// Event, metrics and log of a finished run.
    async fn finished(&self, st: &BackupStatus, reason: &str, msg: &str) {
        let ctx = &self.room.ctx;
        let phase = st.phase.unwrap_or(Phase::Failed);
        let result = match phase {
            Phase::Succeeded => "succeeded",
            Phase::PartiallyFailed => "partially_failed",
            _ => "failed",
        };
        ctx.metrics.backups.with_label_values(&[result]).inc();
        ctx.metrics
            .backup_duration
            .with_label_values(&[result])
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(size) = st.size_bytes
            && phase == Phase::Succeeded
        {
            ctx.metrics
                .backup_size
                .with_label_values(&[&self.spec.tenant])
                .set(size as i64);
        }
        let type_ = if phase == Phase::Succeeded {
            EventType::Normal
        } else {
            EventType::Warning
        };
        publish(
            ctx,
            self.obj,
            type_,
            &format!("Backup{phase}"),
            &format!("{reason}: {msg}"),
            "Backup",
        )
        .await;
        if phase == Phase::Succeeded {
            info!(tenant = %self.spec.tenant, backup = %self.name(), "backup verified in every required region");
        } else {
            warn!(tenant = %self.spec.tenant, backup = %self.name(), %reason, message = %msg, "backup not good");
        }
    }

    /// Exports the tenant and builds the archive.
    async fn build(&self, source: &str, key: Option<&SecretKey>) -> Result<Built, String> {
        let ctx = &self.room.ctx;
        let tenant_name = &self.spec.tenant;
        let include = &self.spec.include;
        let namespace = namespace_of(tenant_name);
        let data_time = Time::now();
        let mut b = Builder::new().map_err(|e| e.to_string())?;
        let mut objects = 0u64;
        let mut skipped_secrets = 0u64;
        if include.kubernetes_objects {
            let cluster = ctx
                .handles
                .clusters
                .get(source)
                .map_err(|why| why.unwrap_or_else(|| format!("region {source} has no cluster")))?;
            let client = cluster.client();
            let ns = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
            match tokio::time::timeout(Duration::from_secs(20), ns.get_opt(&namespace)).await {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return Err(format!("namespace {namespace} does not exist in {source}")),
                Ok(Err(e)) => return Err(format!("reading namespace {namespace} in {source}: {e}")),
                Err(_) => return Err(format!("the {source} cluster did not answer within 20s")),
            }
            let kinds = KINDS.of(source, &client).await?;
            let (items, forbidden) = export(&client, &kinds, &namespace).await?;
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
                    b.add(entry(&path, "secret", Some(id)), &sealed)
                        .map_err(|e| e.to_string())?;
                } else {
                    let path = format!(
                        "objects/{}/{}/{}.json",
                        id.api_version.replace('/', "_"),
                        id.kind,
                        id.name
                    );
                    b.add(entry(&path, "object", Some(id)), &bytes)
                        .map_err(|e| e.to_string())?;
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
            b.add(
                entry("control-plane/tenant.json", "tenant", None),
                &serde_json::to_vec(&c).unwrap_or_default(),
            )
            .map_err(|e| e.to_string())?;
        }
        if include.object_storage {
            let store = self.room.store(source).await?;
            let listing = store
                .list(&format!("tenants/{tenant_name}/"))
                .await
                .map_err(|e| e.to_string())?;
            let rows: Vec<Value> = listing
                .iter()
                .map(|o| json!({"key": o.key, "etag": o.etag, "size": o.size}))
                .collect();
            b.add(
                entry("object-storage/listing.json", "listing", None),
                &serde_json::to_vec(&rows).unwrap_or_default(),
            )
            .map_err(|e| e.to_string())?;
        }
        if skipped_secrets > 0 {
            info!(tenant = %tenant_name, skipped_secrets, "no encryption key: Secrets left out of the backup");
        }
        let manifest = Manifest {
            format: azora_core::backup::FORMAT,
            tenant: tenant_name.clone(),
            backup: self.name(),
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
}

static KINDS: std::sync::LazyLock<Kinds> = std::sync::LazyLock::new(Kinds::default);

struct Built {
    bytes: Vec<u8>,
    manifest: Manifest,
    data_time: Time,
    objects: u64,
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

/// Where the tenant is active: where its FailoverPolicy sends traffic, else its recorded active region,
/// else home.
fn source_region(room: &Room, _obj: &DynamicObject, tenant: &str, spec: &TenantSpec) -> String {
    if let Some(r) = room.ctx.routed_to(tenant) {
        return r;
    }
    room.ctx
        .caches
        .tenants
        .store()
        .state()
        .iter()
        .find(|t| t.name_any() == tenant)
        .and_then(|t| {
            t.data
                .pointer("/status/activeRegion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| spec.home_region.clone())
}

/// Reads a copy back and compares its SHA-256: `Ok(size)` when it matches.
async fn anyhow_free_read_back(
    store: &azora_adapters::objstore::ObjectStore,
    key: &str,
    sha: &str,
) -> Result<u64, String> {
    match tokio::time::timeout(READ_BACK, store.get_bytes(key)).await {
        Err(_) => Err(format!(
            "reading the copy back did not finish within {}s",
            READ_BACK.as_secs()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(None)) => Err("the copy is missing".into()),
        Ok(Ok(Some(b))) => {
            let got = sha256_hex(&b);
            if got == sha {
                Ok(b.len() as u64)
            } else {
                Err(format!("the copy's SHA-256 is {got}, the manifest says {sha}"))
            }
        }
    }
}

fn set_verified(l: &mut BackupLocation, r: Result<u64, String>) {
    match r {
        Ok(size) => {
            l.verified = true;
            l.verified_time = Some(Time::now());
            l.size_bytes = Some(size);
            l.message.clear();
        }
        Err(e) => {
            l.verified = false;
            l.message = e;
        }
    }
}

/// A finished backup's copies read back again (every `--backup-verify-every`): a copy that no longer
/// matches turns the backup `PartiallyFailed` (or `Failed`) with the region named.
async fn reverify(
    room: &Arc<Room>,
    obj: &DynamicObject,
    mut st: BackupStatus,
    validation: &[Desired],
) -> Result<Action, ReconcileError> {
    let every = room.cfg.verify_every;
    let oldest = st
        .locations
        .iter()
        .filter(|l| l.verified)
        .filter_map(|l| l.verified_time)
        .map(|t| t.0)
        .min();
    let Some(oldest) = oldest else {
        return Ok(Action::await_change());
    };
    let age = jiff::Timestamp::now().duration_since(oldest);
    let due = jiff::SignedDuration::try_from(every).unwrap_or(jiff::SignedDuration::MAX);
    if age < due {
        let wait = (due - age).unsigned_abs().max(Duration::from_secs(1));
        return Ok(Action::requeue(wait));
    }
    let sha = st.sha256.clone().unwrap_or_default();
    let mut newly_bad = Vec::new();
    for l in st.locations.iter_mut().filter(|l| l.verified) {
        let r = match room.store(&l.region).await {
            Ok(store) => anyhow_free_read_back(&store, &l.key, &sha).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(_) => l.verified_time = Some(Time::now()),
            // An unreachable store says nothing about the copy: it stays verified and is read next time.
            Err(e) if e.contains("did not finish") || e.contains("dispatch") || e.contains("timeout") => {}
            Err(e) => {
                newly_bad.push(format!("{}: {e}", l.region));
                set_verified(l, Err(format!("re-verification failed: {e}")));
            }
        }
    }
    let verified = st.locations.iter().filter(|l| l.verified).count();
    let all = verified == st.locations.len();
    if !newly_bad.is_empty() {
        st.phase = Some(if verified > 0 {
            Phase::PartiallyFailed
        } else {
            Phase::Failed
        });
        let msg = format!("copies no longer match: {}", newly_bad.join("; "));
        publish(
            &room.ctx,
            obj,
            EventType::Warning,
            "BackupCopyCorrupt",
            &msg,
            "Verify",
        )
        .await;
        warn!(backup = %obj.name_any(), message = %msg, "backup copy failed re-verification");
    }
    let (ready, completed) = if all && st.phase == Some(Phase::Succeeded) {
        (
            Desired::ok(types::READY, "Verified", "every copy verified"),
            Desired::ok(COMPLETED, "Verified", "every copy verified"),
        )
    } else {
        let bad: Vec<String> = st
            .locations
            .iter()
            .filter(|l| !l.verified)
            .map(|l| format!("{}: {}", l.region, l.message))
            .collect();
        let msg = format!("not verified in {}", bad.join("; "));
        (
            Desired::fail(types::READY, "CopiesFailed", msg.clone()),
            Desired::fail(COMPLETED, "CopiesFailed", msg),
        )
    };
    let desired = run_conditions(validation, ready, completed);
    room.write(&room.backups, obj, fields(&st), &desired).await?;
    Ok(Action::requeue(every))
}

/// Deletion: every copy (archive and manifest) in every recorded location, then the finalizer. A store
/// that fails keeps the finalizer (retried with backoff); a region that no longer exists is skipped.
async fn delete_copies(
    room: &Arc<Room>,
    obj: &DynamicObject,
    st: &BackupStatus,
) -> Result<Action, ReconcileError> {
    let ctx = &room.ctx;
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let tenant = obj
        .data
        .pointer("/spec/tenant")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let pre = prefix(&tenant, &obj.name_any());
    let mut failed = Vec::new();
    for l in &st.locations {
        let store = match room.store(&l.region).await {
            Ok(s) => s,
            Err(e) if e.contains("does not exist") => {
                warn!(backup = %obj.name_any(), region = %l.region, "region is gone; its copy cannot be deleted");
                continue;
            }
            Err(e) => {
                failed.push(format!("{}: {e}", l.region));
                continue;
            }
        };
        // Only keys under this backup's own prefix: never anything the backup did not write.
        for key in [l.key.clone(), format!("{pre}{MANIFEST}")] {
            if !key.starts_with(&pre) {
                continue;
            }
            if let Err(e) = store.delete(&key).await {
                failed.push(format!("{}: {e}", l.region));
            }
        }
    }
    if !failed.is_empty() {
        warn!(backup = %obj.name_any(), errors = ?failed, "deleting backup copies failed; retrying");
        return Err(ReconcileError::Remote(format!(
            "deleting copies failed in {}",
            failed.join("; ")
        )));
    }
    ctx.fence
        .check()
        .await
        .map_err(|e| ReconcileError::Fenced(Arc::new(e)))?;
    remove_finalizer(ctx, &BackupKind::resource(), obj, FINALIZER).await?;
    info!(backup = %obj.name_any(), %tenant, copies = st.locations.len(), "backup and its copies deleted");
    Ok(Action::await_change())
}
