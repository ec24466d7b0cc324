//! One Backup run, intent first: the finalizer (so every copy is deleted with the Backup), then `Running`
//! with the source region, then — before any byte is uploaded — the archive's SHA-256, size and every
//! location it goes to; then the upload to the home region's store, the copies to every other region the
//! residency allows, each read back and compared. `Succeeded` only when every required copy is verified;
//! otherwise `PartiallyFailed` (naming the regions) or `Failed`. Keys carry the archive's checksum, so a key
//! never holds two different contents; leftovers of an attempt that never recorded its checksum are removed.
//!
//! A run recorded as going that this process does not hold was interrupted: without a recorded checksum
//! nothing of it counts and it starts again; with one, each copy is read back against it and the missing
//! ones are copied from a verified one (the same bytes). With every copy confirmed absent or wrong it fails
//! cleanly and removes what it wrote; a store that does not answer makes it wait, never fail. Finished
//! backups are re-verified by `verify`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azora_adapters::archive::{self, SecretKey};
use azora_adapters::objstore::ObjectStore;
use azora_api::Time;
use azora_api::backup::{BackupLocation, BackupSpec, BackupStatus, Phase};
use azora_api::tenant::TenantSpec;
use azora_core::backup::{SCHEDULE_LABEL, archive_key, manifest_key, prefix, required_regions};
use azora_core::conditions::{Desired, types};
use azora_runtime::events::publish;
use azora_runtime::pipeline::{Kind as _, ReconcileError, add_finalizer, error_policy as generic};
use kube::ResourceExt as _;
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{Map, Value};
use tracing::{info, instrument, warn};

use super::BackupKind;
use super::build::{BuildError, build};
use super::room::{Room, check, status_fields};
use super::verify::{ReadBack, read_back};

/// Finalizer: the Backup's copies are deleted before the Backup is.
pub const FINALIZER: &str = "azora.io/backup-copies";
/// Condition saying how the run went.
pub(super) const COMPLETED: &str = "Completed";
/// The longest one run may take; past it the run stops and the next reconcile resumes it.
pub(super) const RUN_DEADLINE: Duration = Duration::from_secs(900);
/// A run still not finished this long after it started is ended with what is known.
pub(super) const ABANDON: Duration = Duration::from_secs(3600);

/// Error policy: the generic one.
pub fn error_policy(obj: Arc<DynamicObject>, err: &ReconcileError, room: Arc<Room>) -> Action {
    generic::<BackupKind>(obj, err, room.kc_backup.clone())
}

pub(super) fn status_of(obj: &DynamicObject) -> BackupStatus {
    obj.data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

pub(super) fn fields(st: &BackupStatus) -> Map<String, Value> {
    status_fields(st)
}

/// Conditions of a run: validation, with `Ready` and `Completed` from the run.
pub(super) fn run_conditions(validation: &[Desired], ready: Desired, completed: Desired) -> Vec<Desired> {
    let mut out: Vec<Desired> = validation
        .iter()
        .filter(|d| d.type_ != types::READY)
        .cloned()
        .collect();
    out.push(ready);
    out.push(completed);
    out
}

/// Reconciles one Backup.
#[instrument(skip(obj, room), fields(controller = "backup", object = obj.metadata.name.as_deref().unwrap_or("")))]
pub async fn reconcile(obj: Arc<DynamicObject>, room: Arc<Room>) -> Result<Action, ReconcileError> {
    let ctx = &room.ctx;
    let _timer = ctx.metrics.timer(BackupKind::NAME);
    let st = status_of(&obj);
    if obj.metadata.deletion_timestamp.is_some() {
        return super::verify::delete_copies(&room, &obj, &st).await;
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
        return Ok(super::verify::schedule_reverify(
            &room,
            &obj,
            &st,
            checked.validation,
        ));
    }
    if !checked.ok {
        // Nothing is exported or uploaded for a backup that does not check out; the conditions say why. A
        // run that was going when its spec stopped checking out ends Failed (its recorded copies stay
        // listed, so deleting the Backup deletes them).
        let mut st = st;
        let ready = checked
            .validation
            .iter()
            .find(|d| d.type_ == types::READY)
            .cloned();
        if st.phase.is_some()
            && let Some(ready) = ready
        {
            st.phase = Some(Phase::Failed);
            st.completion_time = Some(Time::now());
            let completed = Desired::fail(COMPLETED, ready.reason.clone(), ready.message.clone());
            let desired = run_conditions(&checked.validation, ready, completed);
            room.write(&room.backups, &obj, fields(&st), &desired).await?;
            return Ok(Action::await_change());
        }
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
    // A run already under way has its finalizer; a new one adds it together with its first status write
    // (both before anything is uploaded).
    if st.phase.is_some() {
        add_finalizer(ctx, &BackupKind::resource(), &obj, FINALIZER).await?;
    }
    // The time a run gets scales with its archive: its own size once built, else the largest of the
    // tenant's earlier archives.
    let size = st.size_bytes.or_else(|| {
        ctx.caches
            .backups
            .store()
            .state()
            .iter()
            .filter(|b| {
                b.data.pointer("/spec/tenant").and_then(|t| t.as_str()) == Some(checked.spec.tenant.as_str())
            })
            .filter_map(|b| b.data.pointer("/status/sizeBytes").and_then(|v| v.as_u64()))
            .max()
    });
    let deadline = azora_core::backup::run_deadline(RUN_DEADLINE, size.unwrap_or(0), required.len());
    let abandon = azora_core::backup::abandon_after(ABANDON, deadline);
    let run = Run {
        room: &room,
        obj: &obj,
        spec: &checked.spec,
        tenant: &tenant,
        validation: checked.validation,
        required,
        started: Instant::now(),
        abandon,
    };
    // (Over its time, a run is abandoned only after an attempt of this term's own: an export or upload that
    // a restart or a change of leader cut short — a large tenant's first export may take longer than
    // `abandon` — is tried once more, not ended for having been interrupted.)
    let over_time = st.phase.is_some()
        && st
            .start_time
            .is_some_and(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs() > abandon);
    let tried = room.tried_before(&uid);
    let abandoned = over_time && tried;
    let resuming = matches!(
        (st.phase, &st.sha256),
        (Some(Phase::Running | Phase::Verifying), Some(_))
    );
    if !abandoned && !resuming {
        // New, or interrupted before its checksum was recorded (nothing of it counts): (re)start. Its
        // export has no deadline of its own — a tenant's first archive has no size to scale one with, and
        // every request in it has its own (a hung cluster or store ends it) — so a large tenant's export
        // is never cut and started over for ever; its uploads get the time its archive's size calls for.
        return run.fresh(st).await;
    }
    let work = async {
        if abandoned {
            // Resumed for too long (a store never answers, or the export never fits the deadline): judged
            // with what is known, so the tenant's next backups are not held up behind it.
            run.abandon(st).await
        } else {
            // Interrupted after the checksum was recorded: something may be uploaded; resume from the copies.
            run.resume(st).await
        }
    };
    within(deadline, "the run", work).await
}

/// `work`, or once `deadline` passed an error the next reconcile resumes from (what the run recorded).
async fn within(
    deadline: Duration,
    what: &str,
    work: impl std::future::Future<Output = Result<Action, ReconcileError>>,
) -> Result<Action, ReconcileError> {
    tokio::time::timeout(deadline, work).await.unwrap_or_else(|_| {
        Err(ReconcileError::Remote(format!(
            "{what} did not finish within {}s; the run resumes from what it recorded",
            deadline.as_secs()
        )))
    })
}

struct Run<'a> {
    room: &'a Arc<Room>,
    obj: &'a DynamicObject,
    spec: &'a BackupSpec,
    tenant: &'a TenantSpec,
    validation: Vec<Desired>,
    required: Vec<String>,
    started: Instant,
    /// How long the run may go on over its attempts (see `abandon_after`).
    abandon: Duration,
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
            .map(|_| ())
    }

    async fn write_running(&self, st: &BackupStatus, msg: &str) -> Result<(), ReconcileError> {
        self.write(
            st,
            Desired::fail(types::READY, "Running", msg),
            Desired::unknown(COMPLETED, "Running", msg),
        )
        .await
    }

    /// Fails the run with nothing of it kept (bad input, an unreadable source, nothing stored).
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

    async fn key(&self) -> Result<Result<Option<SecretKey>, (&'static str, String)>, ReconcileError> {
        let Some(k) = &self.spec.encryption_key else {
            return Ok(Ok(None));
        };
        match self.room.ctx.secrets.value(&k.name, &k.key).await {
            Ok(Some(v)) => Ok(SecretKey::from_secret_value(&v).map(Some).map_err(|e| {
                (
                    "InvalidEncryptionKey",
                    format!("Secret {} key {}: {e}", k.name, k.key),
                )
            })),
            Ok(None) => Ok(Err((
                "EncryptionKeyMissing",
                format!("Secret {} has no key {}", k.name, k.key),
            ))),
            Err(e) => Err(ReconcileError::Fetch(e)),
        }
    }

    async fn fresh(&self, mut st: BackupStatus) -> Result<Action, ReconcileError> {
        let tenant_name = &self.spec.tenant;
        // The key is read before anything else happens: a bad key fails the run with nothing uploaded.
        let key = match self.key().await? {
            Ok(k) => k,
            Err((reason, msg)) => return self.fail(st, reason, msg).await,
        };
        let source = source_region(self.room, tenant_name, self.tenant);
        let interrupted = st.phase.is_some();
        st.phase = Some(Phase::Running);
        // A run started again keeps its start: `ABANDON` counts from the first attempt.
        st.start_time.get_or_insert_with(Time::now);
        st.source_region = Some(source.clone());
        st.sha256 = None;
        st.locations.clear();
        let msg = format!("exporting tenant {tenant_name} from {source}");
        let resource = BackupKind::resource();
        tokio::try_join!(
            self.write_running(&st, &msg),
            add_finalizer(&self.room.ctx, &resource, self.obj, FINALIZER)
        )?;

        // A Backup someone asked for (not a schedule's) holds data at least as new as the request.
        let not_before = (!self.obj.labels().contains_key(SCHEDULE_LABEL))
            .then(|| self.obj.creation_timestamp().map(|t| t.0))
            .flatten();
        let built = match build(
            self.room,
            self.spec,
            &self.name(),
            &source,
            key.as_ref(),
            not_before,
        )
        .await
        {
            Ok(b) => b,
            Err(BuildError::Permanent(msg)) => return self.fail(st, "ExportFailed", msg).await,
            // The source cluster or store did not answer: nothing was uploaded; the run starts again
            // (ended as abandoned if it never can).
            Err(BuildError::Transient(msg)) => {
                return Err(ReconcileError::Remote(format!("exporting from {source}: {msg}")));
            }
        };
        let sha = built.manifest.archive_sha256.clone().unwrap_or_default();
        st.data_time = Some(built.data_time);
        st.sha256 = Some(sha.clone());
        st.size_bytes = Some(built.size);
        st.object_count = Some(built.objects);
        st.secrets_included = Some(key.is_some());
        st.locations = self.locations(&[], &sha).await;
        // An earlier attempt may have left objects: they are this backup's (its prefix names it) and never
        // count; remove them.
        if interrupted {
            // (The export may have taken long: leadership is checked again right before deleting.)
            self.room
                .ctx
                .fence
                .check()
                .await
                .map_err(|e| ReconcileError::Fenced(Arc::new(e)))?;
            self.remove_leftovers(&sha).await;
        }
        // Intent: the checksum and every key are recorded before the first byte is uploaded.
        self.write_running(&st, "uploading and verifying copies").await?;
        info!(tenant = %tenant_name, backup = %self.name(), size = built.size, objects = built.objects, "backup archived; uploading");
        let manifest = serde_json::to_vec_pretty(&built.manifest).unwrap_or_default();
        let deadline = azora_core::backup::run_deadline(RUN_DEADLINE, built.size, self.required.len());
        let rest = async {
            self.upload_all(&mut st, built.file.path(), &manifest).await;
            self.finish(st).await
        };
        within(deadline, "the uploads", rest).await
    }

    /// The required locations for the archive with `sha`, keeping what `before` says about each.
    async fn locations(&self, before: &[BackupLocation], sha: &str) -> Vec<BackupLocation> {
        let key = archive_key(&self.spec.tenant, &self.name(), sha);
        let mut out = Vec::new();
        for region in &self.required {
            if let Some(b) = before.iter().find(|l| &l.region == region) {
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

    async fn remove_leftovers(&self, sha: &str) {
        let pre = prefix(&self.spec.tenant, &self.name());
        let keep = [
            archive_key(&self.spec.tenant, &self.name(), sha),
            manifest_key(&self.spec.tenant, &self.name(), sha),
        ];
        for region in &self.required {
            let Ok(store) = self.room.store(region).await else {
                continue;
            };
            let Ok(Ok(listed)) = tokio::time::timeout(Duration::from_secs(30), store.list(&pre)).await else {
                continue;
            };
            for o in listed.into_iter().filter(|o| !keep.contains(&o.key)) {
                if o.key.starts_with(&pre) {
                    let _ = tokio::time::timeout(Duration::from_secs(30), store.delete(&o.key)).await;
                }
            }
        }
    }

    /// Uploads to the home region first, then to every other required region at once; each copy is read
    /// back and compared.
    async fn upload_all(&self, st: &mut BackupStatus, archive: &Path, manifest: &[u8]) {
        let sha = st.sha256.clone().unwrap_or_default();
        let size = st.size_bytes;
        let home = &self.tenant.home_region;
        let (first, rest): (Vec<_>, Vec<_>) = st.locations.iter_mut().partition(|l| &l.region == home);
        for l in first.into_iter().filter(|l| !l.verified) {
            self.upload_one(l, archive, manifest, &sha, size).await;
        }
        futures::future::join_all(
            rest.into_iter()
                .filter(|l| !l.verified)
                .map(|l| self.upload_one(l, archive, manifest, &sha, size)),
        )
        .await;
    }

    /// One region's copy: uploaded and read back, tried again (up to three times, 1 s then 2 s apart) when
    /// the store or its credentials could not be reached and said so quickly — a moment's unavailability
    /// (a refused connection, a hub hiccup) does not cost the copy. A store that hangs has had its full
    /// deadline and is not waited for again in this run.
    async fn upload_one(
        &self,
        l: &mut BackupLocation,
        archive: &Path,
        manifest: &[u8],
        sha: &str,
        size: Option<u64>,
    ) {
        for attempt in 1..=3u32 {
            let began = Instant::now();
            let r = self.upload_attempt(l, archive, manifest, sha, size).await;
            let retry = matches!(r, ReadBack::Unavailable(_))
                && attempt < 3
                && began.elapsed() < Duration::from_secs(10);
            set_verified(l, r);
            if !retry {
                return;
            }
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
    }

    async fn upload_attempt(
        &self,
        l: &BackupLocation,
        archive: &Path,
        manifest: &[u8],
        sha: &str,
        size: Option<u64>,
    ) -> ReadBack {
        let mkey = manifest_key(&self.spec.tenant, &self.name(), sha);
        let put = async {
            let store = self.room.store(&l.region).await?;
            // The archive and the manifest beside it go up together.
            let (archive_put, manifest_put) =
                tokio::join!(store.put_file(&l.key, archive), store.put_bytes(&mkey, manifest.to_vec()));
            let (sent, _) = archive_put.map_err(|e| e.to_string())?;
            if sent != sha {
                // The scratch file changed under us: what was sent is not this backup (the manifest beside
                // it names the checksum it should have). The read-back below finds the copy bad.
                warn!(backup = %self.name(), region = %l.region, "the archive read for upload is not the one recorded");
                return Ok(store);
            }
            manifest_put.map_err(|e| e.to_string())?;
            Ok::<ObjectStore, String>(store)
        }
        .await;
        match put {
            Ok(store) => read_back(&store, &l.key, &l.bucket, sha, size).await,
            Err(e) => ReadBack::Unavailable(e),
        }
    }

    /// Resumes an interrupted run from its copies.
    async fn resume(&self, mut st: BackupStatus) -> Result<Action, ReconcileError> {
        let sha = st.sha256.clone().unwrap_or_default();
        info!(backup = %self.name(), "resuming an interrupted backup from its copies");
        // Copies in regions no longer required (residency changed meanwhile) are removed, not kept.
        for l in st.locations.iter().filter(|l| !self.required.contains(&l.region)) {
            if let Ok(store) = self.room.store(&l.region).await {
                let _ = store.delete(&l.key).await;
                let _ = store
                    .delete(&manifest_key(&self.spec.tenant, &self.name(), &sha))
                    .await;
            }
        }
        st.locations = self.locations(&st.locations, &sha).await;
        let mut unavailable = false;
        for l in st.locations.iter_mut() {
            let r = match self.room.store(&l.region).await {
                Ok(store) => read_back(&store, &l.key, &l.bucket, &sha, st.size_bytes).await,
                Err(e) => ReadBack::Unavailable(e),
            };
            unavailable |= matches!(r, ReadBack::Unavailable(_));
            set_verified(l, r);
        }
        let Some(good) = st.locations.iter().find(|l| l.verified).cloned() else {
            if unavailable {
                // A store that does not answer says nothing about its copy: wait for it.
                return Err(ReconcileError::Remote(
                    "resuming a backup: no copy could be read yet".into(),
                ));
            }
            // Every copy confirmed absent or wrong: nothing of this attempt counts. It starts over (a new
            // archive under new keys: a key never gets other content).
            info!(backup = %self.name(), "interrupted before any copy was stored; starting over");
            return self.fresh(st).await;
        };
        let store = self
            .room
            .store(&good.region)
            .await
            .map_err(ReconcileError::Remote)?;
        // The good copy is streamed into a scratch file and checked there; the missing copies are uploaded
        // from it.
        let file = archive::scratch(&self.room.cfg.scratch_dir).map_err(|e| {
            ReconcileError::Remote(format!(
                "creating a scratch file in {}: {e}",
                self.room.cfg.scratch_dir.display()
            ))
        })?;
        let deadline = super::verify::read_deadline(st.size_bytes);
        match tokio::time::timeout(deadline, store.get_to_file(&good.key, file.path())).await {
            Ok(Ok(Some((got, _)))) if got == sha => {}
            _ => {
                return Err(ReconcileError::Remote(format!(
                    "resuming a backup: reading the copy in {} failed",
                    good.region
                )));
            }
        }
        // The manifest beside the archive is rebuilt from the one inside it (never uploaded empty).
        let path = file.path().to_path_buf();
        let want = sha.clone();
        let mut manifest = tokio::task::spawn_blocking(move || archive::check_file(&path, &want))
            .await
            .map_err(|e| ReconcileError::Remote(format!("checking the archive: {e}")))?
            .map_err(|e| ReconcileError::Remote(e.to_string()))?;
        manifest.archive_sha256 = Some(sha.clone());
        let manifest = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        self.write_running(&st, "resumed: copying to the regions still missing")
            .await?;
        // A copy found verified may lack its manifest (killed between the two PUTs, or the archive PUT
        // landed after the kill): the manifest is the same bytes, put again.
        let mkey = manifest_key(&self.spec.tenant, &self.name(), &sha);
        for l in st.locations.iter_mut().filter(|l| l.verified) {
            let put = async {
                let store = self.room.store(&l.region).await?;
                store
                    .put_bytes(&mkey, manifest.clone())
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = put.await {
                set_verified(l, ReadBack::Unavailable(format!("manifest: {e}")));
            }
        }
        self.upload_all(&mut st, file.path(), &manifest).await;
        self.finish(st).await
    }

    /// Ends a run that has gone on too long: the copies verified so far decide; none means Failed.
    async fn abandon(&self, st: BackupStatus) -> Result<Action, ReconcileError> {
        if st.locations.iter().any(|l| l.verified) {
            return self.finish(st).await;
        }
        let msg = format!(
            "not finished {}s after it started; the next run takes a new backup",
            self.abandon.as_secs()
        );
        self.fail(st, "Abandoned", msg).await
    }

    /// The final phase from the copies: every one verified, some, or none.
    async fn finish(&self, mut st: BackupStatus) -> Result<Action, ReconcileError> {
        st.completion_time = Some(Time::now());
        let (phase, reason, msg) = judge(&st.locations);
        st.phase = Some(phase);
        if phase == Phase::Succeeded {
            st.last_good_time = Some(Time::now());
        }
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
        self.room.ended(&self.obj.uid().unwrap_or_default());
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
}

/// Phase, reason and message from the copies: every one verified, some, or none.
pub(super) fn judge(locations: &[BackupLocation]) -> (Phase, &'static str, String) {
    let bad: Vec<String> = locations
        .iter()
        .filter(|l| !l.verified)
        .map(|l| format!("{}: {}", l.region, l.message))
        .collect();
    let verified = locations.len() - bad.len();
    if bad.is_empty() && verified > 0 {
        let regions: Vec<&str> = locations.iter().map(|l| l.region.as_str()).collect();
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
    }
}

/// Where the tenant is active: where its FailoverPolicy sends traffic, else its recorded active region,
/// else home.
fn source_region(room: &Room, tenant: &str, spec: &TenantSpec) -> String {
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

pub(super) fn set_verified(l: &mut BackupLocation, r: ReadBack) {
    match r {
        ReadBack::Good(size) => {
            l.verified = true;
            l.verified_time = Some(Time::now());
            l.size_bytes = Some(size);
            l.message.clear();
        }
        ReadBack::Bad(e) | ReadBack::Unavailable(e) => {
            l.verified = false;
            l.message = e;
        }
    }
}
