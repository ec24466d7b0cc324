//! A Restore: the backup must be `Succeeded`; its copy is read from the target region's own store (so a
//! restore works while the home region is down; another verified copy only when the target region has
//! none), checked against the backup's SHA-256 and every entry against the manifest, Secrets opened with
//! the backup's key; then every object is server-side applied into the tenant's namespace (or a scratch
//! namespace this Restore creates and labels), and read back and compared. Applying is idempotent, so a
//! restore interrupted by a crash simply runs again. Residency is enforced by validation: a region the
//! tenant may not use is refused before anything is read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azora_adapters::archive::{self, SecretKey};
use azora_api::Time;
use azora_api::backup::{
    BackupSpec, BackupStatus, ObjectStorageCheck, Phase, RestoreSpec, RestoreStatus, TimelineEntry,
};
use azora_core::backup::{Entry, Manifest, ObjectId, restored_matches};
use azora_core::conditions::{Desired, types};
use azora_core::tenancy::{namespace_of, owned_by};
use azora_runtime::events::publish;
use azora_runtime::pipeline::{
    Kind as _, ReconcileError, add_finalizer, error_policy as generic, remove_finalizer,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams, Preconditions};
use kube::core::ApiResource;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{Map, Value};
use tracing::{info, instrument, warn};

use super::RestoreKind;
use super::export;
use super::room::{Room, check, status_fields};

/// Label on a scratch namespace naming the Restore that created it.
pub const SCRATCH_LABEL: &str = "azora.io/scratch-restore";
/// Finalizer of a scratch restore: its namespace goes with it.
pub const FINALIZER: &str = "azora.io/scratch-namespace";
const COMPLETED: &str = "Completed";
const REQUEST: Duration = Duration::from_secs(20);
const DOWNLOAD: Duration = Duration::from_secs(120);
/// How long a restore waits for a cluster or store that does not answer.
const WAIT_BOUND: Duration = Duration::from_secs(3600);

/// Failures that say nothing about the backup or the target: a cluster or store not answering.
fn transient(reason: &str, msg: &str) -> bool {
    match reason {
        "ClusterUnavailable" | "EncryptionKeyUnreadable" | "NoUsableCopy" => true,
        "ApplyFailed" | "VerificationFailed" => {
            msg.contains("did not answer") || msg.contains("the request failed")
        }
        _ => false,
    }
}

/// Runs of one restore (first plus resumptions) before it gives up.
const MAX_ATTEMPTS: usize = 3;
/// The longest one restore may take before it is started again.
const RUN_DEADLINE: Duration = Duration::from_secs(900);

/// Error policy: the generic one.
pub fn error_policy(obj: Arc<DynamicObject>, err: &ReconcileError, room: Arc<Room>) -> Action {
    generic::<RestoreKind>(obj, err, room.kc_restore.clone())
}

fn status_of(obj: &DynamicObject) -> RestoreStatus {
    obj.data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

fn fields(st: &RestoreStatus) -> Map<String, Value> {
    status_fields(st)
}

fn step(st: &mut RestoreStatus, step: &str, message: impl Into<String>) {
    st.timeline.push(TimelineEntry {
        time: Time::now(),
        step: step.into(),
        message: message.into(),
    });
}

fn conditions(validation: &[Desired], ok: bool, reason: &str, msg: &str) -> Vec<Desired> {
    let mut out: Vec<Desired> = validation
        .iter()
        .filter(|d| d.type_ != types::READY)
        .cloned()
        .collect();
    if ok {
        out.push(Desired::ok(types::READY, reason, msg));
        out.push(Desired::ok(COMPLETED, reason, msg));
    } else {
        out.push(Desired::fail(types::READY, reason, msg));
        out.push(Desired::fail(COMPLETED, reason, msg));
    }
    out
}

/// Reconciles one Restore.
#[instrument(skip(obj, room), fields(controller = "restore", object = obj.metadata.name.as_deref().unwrap_or("")))]
pub async fn reconcile(obj: Arc<DynamicObject>, room: Arc<Room>) -> Result<Action, ReconcileError> {
    let ctx = &room.ctx;
    let _timer = ctx.metrics.timer(RestoreKind::NAME);
    let mut st = status_of(&obj);
    if obj.metadata.deletion_timestamp.is_some() {
        return remove_scratch(&room, &obj).await;
    }
    let checked = match check::<RestoreKind>(ctx, &obj, RestoreKind::ready_message()).await? {
        Err(desired) => {
            room.write(&room.restores, &obj, Map::new(), &desired).await?;
            return Ok(Action::await_change());
        }
        Ok(c) => c,
    };
    if st.phase.is_some_and(Phase::is_final) {
        return Ok(Action::await_change());
    }
    if !checked.ok {
        room.write(&room.restores, &obj, fields(&st), &checked.validation)
            .await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let spec = &checked.spec;
    let Some(backup) = ctx
        .caches
        .backups
        .store()
        .state()
        .into_iter()
        .find(|b| b.name_any() == spec.backup)
    else {
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    let bst: BackupStatus = backup
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let bspec: BackupSpec =
        match serde_json::from_value(backup.data.get("spec").cloned().unwrap_or(Value::Null)) {
            Ok(s) => s,
            Err(_) => return Ok(Action::requeue(Duration::from_secs(10))),
        };
    // A finished backup with a verified copy is restorable: `Succeeded`, or `PartiallyFailed` (a copy
    // elsewhere failed or went bad — the DR case: the copy that is left must restore). Nothing is read or
    // applied from a backup still running, failed, or without a verified copy.
    let restorable = matches!(bst.phase, Some(Phase::Succeeded | Phase::PartiallyFailed))
        && bst.locations.iter().any(|l| l.verified);
    if !restorable {
        let msg = format!(
            "backup {} is {} with no verified copy: only a finished backup with a verified copy is restored",
            spec.backup,
            bst.phase.map_or("not started".to_string(), |p| p.to_string())
        );
        let desired = conditions(&checked.validation, false, "BackupNotRestorable", &msg);
        room.write(&room.restores, &obj, fields(&st), &desired).await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    // A restore that keeps being interrupted (or keeps running out of time) ends instead of applying old
    // data into the namespace again and again.
    let attempts = st
        .timeline
        .iter()
        .filter(|e| e.step == "Started" || e.step == "Resumed")
        .count();
    if st.phase == Some(Phase::Running) && attempts >= MAX_ATTEMPTS {
        st.phase = Some(Phase::Failed);
        st.completion_time = Some(Time::now());
        let msg = format!("interrupted {attempts} times; not started again");
        step(&mut st, "Failed", msg.clone());
        let desired = conditions(&checked.validation, false, "TooManyAttempts", &msg);
        room.write(&room.restores, &obj, fields(&st), &desired).await?;
        return Ok(Action::await_change());
    }
    let uid = obj.uid().unwrap_or_default();
    let Some(_claim) = room.claim(&uid) else {
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    let started = Instant::now();
    let namespace = spec
        .target_namespace
        .clone()
        .unwrap_or_else(|| namespace_of(&bspec.tenant));
    if st.phase == Some(Phase::Running) {
        if st.timeline.last().is_some_and(|e| e.step == "Waiting") {
            step(&mut st, "Retried", "trying again");
        } else {
            step(
                &mut st,
                "Resumed",
                "interrupted run started again (applying is idempotent)",
            );
        }
    } else {
        st.timeline.clear();
        step(
            &mut st,
            "Started",
            format!(
                "restoring {} into {} / {namespace}",
                spec.backup, spec.target_region
            ),
        );
    }
    st.phase = Some(Phase::Running);
    st.start_time.get_or_insert_with(Time::now);
    st.target_namespace = Some(namespace.clone());
    if spec.target_namespace.is_some() {
        ctx.fence
            .check()
            .await
            .map_err(|e| ReconcileError::Fenced(Arc::new(e)))?;
        add_finalizer(ctx, &RestoreKind::resource(), &obj, FINALIZER).await?;
    }
    let running = conditions(&checked.validation, false, "Running", "restoring");
    room.write(&room.restores, &obj, fields(&st), &running).await?;

    // The time a restore gets scales with the archive (download, checks, apply).
    let deadline = azora_core::backup::run_deadline(RUN_DEADLINE, bst.size_bytes.unwrap_or(0), 1);
    let outcome = match tokio::time::timeout(
        deadline,
        restore(&room, &obj, spec, &bspec, &bst, &namespace, &mut st),
    )
    .await
    {
        Ok(o) => o,
        // Applying is idempotent: the next reconcile runs it again.
        Err(_) => {
            return Err(ReconcileError::Remote(format!(
                "the restore did not finish within {}s; it runs again",
                deadline.as_secs()
            )));
        }
    };
    let (ok, reason, msg) = match outcome {
        Ok(msg) => (true, "Verified", msg),
        Err((reason, msg)) => (false, reason, msg),
    };
    // A cluster or store that does not answer is waited for (not an attempt), up to WAIT_BOUND from the
    // start; anything else ends the restore.
    let started_at = st.start_time.map(|t| t.0).unwrap_or_else(jiff::Timestamp::now);
    let waited = jiff::Timestamp::now().duration_since(started_at).unsigned_abs();
    if !ok && transient(reason, &msg) && waited < WAIT_BOUND.max(deadline * 2) {
        step(&mut st, "Waiting", format!("{reason}: {msg}"));
        let desired = conditions(&checked.validation, false, reason, &msg);
        room.write(&room.restores, &obj, fields(&st), &desired).await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    st.completion_time = Some(Time::now());
    st.phase = Some(if ok { Phase::Succeeded } else { Phase::Failed });
    step(&mut st, if ok { "Succeeded" } else { "Failed" }, msg.clone());
    room.write(
        &room.restores,
        &obj,
        fields(&st),
        &conditions(&checked.validation, ok, reason, &msg),
    )
    .await?;
    ctx.metrics
        .restores
        .with_label_values(&[if ok { "succeeded" } else { "failed" }])
        .inc();
    let type_ = if ok { EventType::Normal } else { EventType::Warning };
    publish(
        ctx,
        &obj,
        type_,
        if ok { "RestoreSucceeded" } else { "RestoreFailed" },
        &format!("{reason}: {msg}"),
        "Restore",
    )
    .await;
    if ok && st.verified == Some(true) {
        // The backup is known to restore: say so on it (its own field, its own manager).
        let body = serde_json::json!({ "restoreVerifiedTime": Time::now() });
        if let Err(e) = room.restore_marks.apply(&spec.backup, None, body).await {
            warn!(backup = %spec.backup, error = &e as &dyn std::error::Error, "marking the backup as restored failed");
        }
    }
    info!(restore = %obj.name_any(), ok, %reason, seconds = started.elapsed().as_secs_f64(), "restore finished");
    Ok(Action::await_change())
}

type Failure = (&'static str, String);

/// The restore itself; `Ok` with a summary, or the reason and message it failed with.
async fn restore(
    room: &Room,
    obj: &DynamicObject,
    spec: &RestoreSpec,
    bspec: &BackupSpec,
    bst: &BackupStatus,
    namespace: &str,
    st: &mut RestoreStatus,
) -> Result<String, Failure> {
    let ctx = &room.ctx;
    let sha = bst.sha256.clone().unwrap_or_default();
    // The target region's own copy first; others only if it has none that opens.
    let mut candidates: Vec<_> = bst.locations.iter().filter(|l| l.verified).collect();
    candidates.sort_by_key(|l| l.region != spec.target_region);
    let mut checked = None;
    for l in candidates {
        let got = async {
            let store = room.store(&l.region).await?;
            // Streamed into a scratch file, then checked there: memory never holds the archive.
            let file = archive::scratch(&room.cfg.scratch_dir).map_err(|e| {
                format!(
                    "creating a scratch file in {}: {e}",
                    room.cfg.scratch_dir.display()
                )
            })?;
            let deadline = DOWNLOAD + Duration::from_secs(bst.size_bytes.unwrap_or(0) / (4 * 1024 * 1024));
            tokio::time::timeout(deadline, store.get_to_file(&l.key, file.path()))
                .await
                .map_err(|_| format!("reading {} did not finish within {}s", l.key, deadline.as_secs()))?
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "the copy is missing".to_string())?;
            let path = file.path().to_path_buf();
            let want = sha.clone();
            let manifest = tokio::task::spawn_blocking(move || archive::check_file(&path, &want))
                .await
                .map_err(|e| format!("checking the archive: {e}"))?
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((file, manifest))
        }
        .await;
        match got {
            Ok(o) => {
                step(
                    st,
                    "Read",
                    format!("archive read from {} and checked against the manifest", l.region),
                );
                st.source_region = Some(l.region.clone());
                checked = Some(o);
                break;
            }
            Err(e) => step(st, "ReadFailed", format!("{}: {e}", l.region)),
        }
    }
    let Some((file, manifest)) = checked else {
        return Err((
            "NoUsableCopy",
            "no copy of the backup could be read and checked".into(),
        ));
    };
    let key = if manifest.secrets_included {
        let k = bspec.encryption_key.as_ref().ok_or((
            "EncryptionKeyMissing",
            "the backup holds Secrets but names no key".to_string(),
        ))?;
        let v = ctx
            .secrets
            .value(&k.name, &k.key)
            .await
            .map_err(|e| {
                (
                    "EncryptionKeyUnreadable",
                    format!("reading Secret {}: {e}", k.name),
                )
            })?
            .ok_or((
                "EncryptionKeyMissing",
                format!("Secret {} has no key {}", k.name, k.key),
            ))?;
        let key = SecretKey::from_secret_value(&v).map_err(|e| ("InvalidEncryptionKey", e.to_string()))?;
        if manifest.key_id.as_deref() != Some(key.id().as_str()) {
            return Err((
                "WrongEncryptionKey",
                format!(
                    "Secret {} key {} is not the key the backup was sealed with",
                    k.name, k.key
                ),
            ));
        }
        Some(key)
    } else {
        None
    };
    let cluster = ctx.handles.clusters.get(&spec.target_region).map_err(|why| {
        (
            "ClusterUnavailable",
            why.unwrap_or_else(|| format!("region {} has no cluster", spec.target_region)),
        )
    })?;
    let client = cluster.client();
    prepare_namespace(&client, obj, spec, &bspec.tenant, namespace).await?;
    step(
        st,
        "Namespace",
        format!("{namespace} ready in {}", spec.target_region),
    );

    // Apply: the entries come one at a time in archive order, which is restore order (what other objects
    // use first).
    let mut ars: BTreeMap<(String, String), ApiResource> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut applied = 0u64;
    let mut total = 0u64;
    let mut listing: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut listed = false;
    let mut declared: Option<Value> = None;
    let mut entries = stream_entries(file.path(), &manifest);
    let mut received = 0usize;
    while let Some(item) = entries.recv().await {
        let (entry, bytes) = item.map_err(|e| ("ArchiveCorrupt", e))?;
        received += 1;
        match entry.kind.as_str() {
            "listing" => {
                listed = true;
                let rows: Vec<Value> = serde_json::from_slice(&bytes)
                    .map_err(|_| ("ArchiveCorrupt", format!("{} does not parse", entry.path)))?;
                for r in rows {
                    if let (Some(k), Some(e), Some(n)) = (
                        r.get("key").and_then(Value::as_str),
                        r.get("etag").and_then(Value::as_str),
                        r.get("size").and_then(Value::as_u64),
                    ) {
                        listing.insert(k.to_string(), (e.to_string(), n));
                    }
                }
                continue;
            }
            "tenant" => {
                declared = serde_json::from_slice(&bytes).ok();
                continue;
            }
            _ => {}
        }
        let Some((id, body)) = decode(&entry, bytes, key.as_ref())? else {
            continue;
        };
        total += 1;
        let ar = match resolve(&client, &mut ars, &id).await {
            Ok(a) => a,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match export::apply(&client, &ar, namespace, &body).await {
            Ok(()) => {
                applied += 1;
                *kinds.entry(id.kind.clone()).or_default() += 1;
            }
            Err(e) => errors.push(e),
        }
    }
    all_read(received, &manifest)?;
    st.objects_restored = Some(applied);
    st.kinds = kinds;
    step(st, "Applied", format!("{applied} of {total} objects applied"));
    if !errors.is_empty() {
        let shown: Vec<&String> = errors.iter().take(5).collect();
        return Err((
            "ApplyFailed",
            format!(
                "{} objects not applied: {}",
                errors.len(),
                shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
            ),
        ));
    }
    if let Some(declared) = declared {
        step(
            st,
            "ControlPlane",
            declaration_vs_hub(room, &bspec.tenant, &declared),
        );
    }
    if listed {
        let (check, message) = object_storage_check(room, &spec.target_region, &bspec.tenant, &listing).await;
        if let Some(check) = check {
            st.object_storage = Some(check);
        }
        step(st, "ObjectStorage", message);
    }
    if !spec.verify {
        st.verified = None;
        return Ok(format!(
            "{applied} objects applied (not verified: spec.verify is false)"
        ));
    }
    // Verify: the entries again, each compared with what the server has now.
    let mut mismatches = Vec::new();
    let mut entries = stream_entries(file.path(), &manifest);
    let mut received = 0usize;
    while let Some(item) = entries.recv().await {
        let (entry, bytes) = item.map_err(|e| ("ArchiveCorrupt", e))?;
        received += 1;
        let Some((id, body)) = decode(&entry, bytes, key.as_ref())? else {
            continue;
        };
        let Some(ar) = ars.get(&(id.api_version.clone(), id.kind.clone())) else {
            continue;
        };
        match export::get(&client, ar, namespace, &id.name).await {
            Ok(Some(live)) => {
                if let Err(what) = restored_matches(&body, &live) {
                    mismatches.push(format!("{} {}: {what}", id.kind, id.name));
                }
            }
            Ok(None) => mismatches.push(format!("{} {} is missing", id.kind, id.name)),
            Err(e) => mismatches.push(e),
        }
    }
    all_read(received, &manifest)?;
    st.verified = Some(mismatches.is_empty());
    if !mismatches.is_empty() {
        let shown: Vec<&str> = mismatches.iter().take(5).map(String::as_str).collect();
        return Err((
            "VerificationFailed",
            format!("{} objects differ: {}", mismatches.len(), shown.join("; ")),
        ));
    }
    step(st, "Verified", format!("{applied} objects match the backup"));
    Ok(format!(
        "{applied} objects restored into {namespace} in {} and verified",
        spec.target_region
    ))
}

/// The entries of a checked archive, read on a blocking thread and handed over a few at a time (memory
/// holds the channel's few entries, never the archive).
fn stream_entries(
    path: &std::path::Path,
    manifest: &Manifest,
) -> tokio::sync::mpsc::Receiver<Result<(Entry, Vec<u8>), String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let path = path.to_path_buf();
    let manifest = manifest.clone();
    tokio::task::spawn_blocking(move || {
        let read = archive::read_entries(&path, &manifest, |e, b| {
            tx.blocking_send(Ok((e.clone(), b))).is_ok()
        });
        if let Err(e) = read {
            let _ = tx.blocking_send(Err(e.to_string()));
        }
    });
    rx
}

/// Every entry of the manifest came through (a reader that stopped early must not look like the end).
fn all_read(received: usize, manifest: &Manifest) -> Result<(), Failure> {
    if received == manifest.entries.len() {
        return Ok(());
    }
    Err((
        "ArchiveCorrupt",
        format!(
            "reading the archive stopped after {received} of {} entries",
            manifest.entries.len()
        ),
    ))
}

/// An object entry decoded (a Secret opened with the key); `None` for entries that are not objects.
fn decode(
    entry: &Entry,
    bytes: Vec<u8>,
    key: Option<&SecretKey>,
) -> Result<Option<(ObjectId, Value)>, Failure> {
    let Some(id) = entry.object.clone() else {
        return Ok(None);
    };
    let plain = match entry.kind.as_str() {
        "secret" => {
            let key = key.ok_or(("EncryptionKeyMissing", "no key for the Secrets".to_string()))?;
            key.open(&bytes, &entry.path)
                .map_err(|e| ("DecryptFailed", e.to_string()))?
        }
        "object" => bytes,
        _ => return Ok(None),
    };
    let v: Value = serde_json::from_slice(&plain)
        .map_err(|_| ("ArchiveCorrupt", format!("{} does not parse", entry.path)))?;
    Ok(Some((id, v)))
}

/// How the Tenant declared in the backup compares with the hub's (the restore reports it; the hub's
/// declaration belongs to whoever applies it, e.g. GitOps, and is never overwritten by a restore).
fn declaration_vs_hub(room: &Room, tenant: &str, declared: &Value) -> String {
    let hub = room
        .ctx
        .caches
        .tenants
        .store()
        .state()
        .into_iter()
        .find(|t| t.name_any() == tenant);
    match hub {
        None => format!(
            "Tenant {tenant} is not declared in the hub; its declaration at backup time is in the archive \
             (control-plane/tenant.json)"
        ),
        Some(t) if t.data.get("spec") == declared.get("spec") => {
            format!("Tenant {tenant}'s declaration is the same as at backup time")
        }
        Some(_) => {
            format!("Tenant {tenant}'s spec has changed since the backup; the hub's declaration stands")
        }
    }
}

/// The tenant's objects in the target region's bucket against the listing the backup recorded (the bytes
/// are replicated, not backed up): how many are there with the recorded ETag and size, missing, or changed.
async fn object_storage_check(
    room: &Room,
    region: &str,
    tenant: &str,
    listing: &BTreeMap<String, (String, u64)>,
) -> (Option<ObjectStorageCheck>, String) {
    let store = match room.store(region).await {
        Ok(s) => s,
        Err(e) => return (None, format!("not checked: {e}")),
    };
    let now = match tokio::time::timeout(DOWNLOAD, store.list(&format!("tenants/{tenant}/"))).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return (None, format!("not checked: {e}")),
        Err(_) => return (None, "not checked: listing the bucket did not answer".into()),
    };
    let now: BTreeMap<&str, (&str, u64)> = now
        .iter()
        .map(|o| (o.key.as_str(), (o.etag.as_str(), o.size)))
        .collect();
    let mut c = ObjectStorageCheck {
        recorded: listing.len() as u64,
        ..Default::default()
    };
    for (k, (etag, size)) in listing {
        match now.get(k.as_str()) {
            // A multipart ETag depends on the part size, which replication may choose differently: for
            // those, the size decides.
            Some((e, n)) if n == size && (e == etag || e.contains('-') || etag.contains('-')) => {
                c.present += 1
            }
            Some(_) => {
                c.changed += 1;
                if c.examples.len() < 10 {
                    c.examples.push(format!("{k} (changed)"));
                }
            }
            None => {
                c.missing += 1;
                if c.examples.len() < 10 {
                    c.examples.push(format!("{k} (missing)"));
                }
            }
        }
    }
    let msg = format!(
        "{} of {} objects recorded by the backup are in {region}'s bucket as they were; {} missing, {} changed since",
        c.present, c.recorded, c.missing, c.changed
    );
    (Some(c), msg)
}

async fn resolve(
    client: &kube::Client,
    ars: &mut BTreeMap<(String, String), ApiResource>,
    id: &ObjectId,
) -> Result<ApiResource, String> {
    let k = (id.api_version.clone(), id.kind.clone());
    if let Some(a) = ars.get(&k) {
        return Ok(a.clone());
    }
    let a = export::resource(client, id).await?;
    ars.insert(k, a.clone());
    Ok(a)
}

/// The tenant's own namespace must exist (placement creates it); a scratch namespace is created by this
/// Restore (POST, labelled) and an existing one is used only if this Restore created it.
async fn prepare_namespace(
    client: &kube::Client,
    obj: &DynamicObject,
    spec: &RestoreSpec,
    tenant: &str,
    namespace: &str,
) -> Result<(), Failure> {
    let api: Api<Namespace> = Api::all(client.clone());
    let existing = tokio::time::timeout(REQUEST, api.get_opt(namespace))
        .await
        .map_err(|_| {
            (
                "ClusterUnavailable",
                format!("the {} cluster did not answer", spec.target_region),
            )
        })?
        .map_err(|e| {
            (
                "ClusterUnavailable",
                format!("reading namespace {namespace}: {e}"),
            )
        })?;
    let me = scratch_label(&obj.name_any());
    match (&spec.target_namespace, existing) {
        // The tenant's own namespace only if placement made it for this tenant: a namespace someone else
        // owns is never written into.
        (None, Some(ns)) => {
            if owned_by(ns.labels(), tenant) {
                Ok(())
            } else {
                Err((
                    "NamespaceConflict",
                    format!(
                        "namespace {namespace} in {} is not the tenant's (not placed by the operator); nothing was applied",
                        spec.target_region
                    ),
                ))
            }
        }
        (None, None) => Err((
            "NamespaceMissing",
            format!(
                "namespace {namespace} does not exist in {}: the tenant is not placed there",
                spec.target_region
            ),
        )),
        (Some(_), Some(ns)) => {
            if ns.labels().get(SCRATCH_LABEL) == Some(&me) {
                Ok(())
            } else {
                Err((
                    "NamespaceConflict",
                    format!(
                        "namespace {namespace} exists and was not created by this restore; nothing was applied"
                    ),
                ))
            }
        }
        (Some(_), None) => {
            let ns: Namespace = serde_json::from_value(serde_json::json!({
                "metadata": {"name": namespace, "labels": {
                    SCRATCH_LABEL: me, azora_core::tenancy::MANAGED_BY_LABEL: azora_core::tenancy::MANAGED_BY}}
            }))
            .map_err(|e| ("Internal", e.to_string()))?;
            match tokio::time::timeout(REQUEST, api.create(&PostParams::default(), &ns)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(kube::Error::Api(s))) if s.code == 409 => Err((
                    "NamespaceConflict",
                    format!("namespace {namespace} appeared meanwhile; nothing was applied"),
                )),
                Ok(Err(e)) => Err((
                    "ClusterUnavailable",
                    format!("creating namespace {namespace}: {e}"),
                )),
                Err(_) => Err((
                    "ClusterUnavailable",
                    format!("the {} cluster did not answer", spec.target_region),
                )),
            }
        }
    }
}

/// The scratch label's value for a restore: its name, or for a name longer than a label value may be (63
/// characters; a Restore's name may have 253) a prefix of it and a hash of the whole.
fn scratch_label(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let hash = archive::sha256_hex(name.as_bytes());
    let prefix: String = name.chars().take(46).collect();
    format!("{}-{}", prefix.trim_end_matches(['-', '.']), &hash[..16])
}

/// Deleting a scratch restore deletes the namespace it created (only if still labelled with its name,
/// by uid).
async fn remove_scratch(room: &Room, obj: &DynamicObject) -> Result<Action, ReconcileError> {
    let ctx = &room.ctx;
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let ns_name = obj
        .data
        .pointer("/spec/targetNamespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    let region = obj
        .data
        .pointer("/spec/targetRegion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(ns_name) = ns_name {
        match ctx.handles.clusters.get(region) {
            Ok(cluster) => {
                let api: Api<Namespace> = Api::all(cluster.client());
                let got = tokio::time::timeout(REQUEST, api.get_opt(&ns_name))
                    .await
                    .map_err(|_| ReconcileError::Remote(format!("the {region} cluster did not answer")))?
                    .map_err(|e| ReconcileError::Remote(format!("reading namespace {ns_name}: {e}")))?;
                if let Some(ns) = got
                    && ns.labels().get(SCRATCH_LABEL) == Some(&scratch_label(&obj.name_any()))
                {
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: ns.uid(),
                            resource_version: None,
                        }),
                        ..DeleteParams::background()
                    };
                    match tokio::time::timeout(REQUEST, api.delete(&ns_name, &dp)).await {
                        Ok(Ok(_)) => {
                            info!(namespace = %ns_name, %region, "scratch namespace deleted with its restore")
                        }
                        Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
                        Ok(Err(e)) => {
                            return Err(ReconcileError::Remote(format!(
                                "deleting namespace {ns_name}: {e}"
                            )));
                        }
                        Err(_) => {
                            return Err(ReconcileError::Remote(format!(
                                "the {region} cluster did not answer"
                            )));
                        }
                    }
                }
            }
            // Known but not usable now (unreachable, bad kubeconfig): retried.
            Err(Some(why)) => return Err(ReconcileError::Remote(format!("region {region}: {why}"))),
            // A region without a cluster any more: nothing can be deleted there.
            Err(None) => {
                warn!(namespace = %ns_name, %region, "region has no cluster; scratch namespace left")
            }
        }
    }
    ctx.fence
        .check()
        .await
        .map_err(|e| ReconcileError::Fenced(Arc::new(e)))?;
    remove_finalizer(ctx, &RestoreKind::resource(), obj, FINALIZER).await?;
    Ok(Action::await_change())
}
