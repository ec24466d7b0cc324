//! Reading copies back, and what happens to finished backups: every `--backup-verify-every` each copy is
//! read back again (in the background, a few at a time, so re-verification never takes the slots of new
//! backups). Only a copy that is confirmed missing or holds other bytes turns bad — a store that errs or
//! does not answer says nothing about its copy — and a copy that matches again turns good again. Deleting a
//! Backup deletes every copy first (finalizer), only under the backup's own prefix.

use std::sync::Arc;
use std::time::Duration;

use azora_adapters::objstore::ObjectStore;
use azora_api::Time;
use azora_api::backup::{BackupStatus, Phase};
use azora_core::backup::{manifest_key, prefix};
use azora_core::conditions::{Desired, types};
use azora_runtime::events::publish;
use azora_runtime::pipeline::{Kind as _, ReconcileError, remove_finalizer};
use kube::ResourceExt as _;
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::Value;
use tracing::{info, warn};

use super::BackupKind;
use super::room::Room;
use super::run::{COMPLETED, FINALIZER, fields, judge, run_conditions, set_verified, status_of};

/// Deadline of reading one copy back, for a small one; larger ones get more (at least 4 MiB/s).
const READ_BACK: Duration = Duration::from_secs(60);

/// The deadline of reading a copy of `size` bytes (unknown: the base).
pub(super) fn read_deadline(size: Option<u64>) -> Duration {
    READ_BACK + Duration::from_secs(size.unwrap_or(0) / (4 * 1024 * 1024))
}

/// What reading a copy back found.
#[derive(Debug)]
pub enum ReadBack {
    /// The bytes match; their size.
    Good(u64),
    /// Confirmed missing, or other bytes.
    Bad(String),
    /// The store erred or did not answer: nothing is known about the copy.
    Unavailable(String),
}

/// Reads a copy back from `store` (which must be the recorded bucket) and compares its SHA-256.
pub async fn read_back(
    store: &ObjectStore,
    key: &str,
    bucket: &str,
    sha: &str,
    size: Option<u64>,
) -> ReadBack {
    if store.bucket() != bucket {
        return ReadBack::Unavailable(format!(
            "the region's bucket is now {}, the copy is in {bucket}",
            store.bucket()
        ));
    }
    let deadline = read_deadline(size);
    match tokio::time::timeout(deadline, store.sha256_of(key)).await {
        Err(_) => ReadBack::Unavailable(format!(
            "reading the copy back did not finish within {}s",
            deadline.as_secs()
        )),
        Ok(Err(e)) => ReadBack::Unavailable(e.to_string()),
        Ok(Ok(None)) => ReadBack::Bad("the copy is missing".into()),
        Ok(Ok(Some((got, len)))) => {
            if got == sha {
                ReadBack::Good(len)
            } else {
                ReadBack::Bad(format!("the copy's SHA-256 is {got}, the manifest says {sha}"))
            }
        }
    }
}

/// For a finished backup: starts its re-verification in the background when due, and says when to look
/// again.
pub(super) fn schedule_reverify(
    room: &Arc<Room>,
    obj: &Arc<DynamicObject>,
    st: &BackupStatus,
    validation: Vec<Desired>,
) -> Action {
    let every = room.cfg.verify_every;
    let last = st
        .locations
        .iter()
        .filter_map(|l| l.verified_time.map(|t| t.0))
        .chain(st.completion_time.map(|t| t.0))
        .max();
    let Some(last) = last else {
        return Action::await_change();
    };
    if st.sha256.is_none() || st.locations.is_empty() {
        return Action::await_change();
    }
    let age = jiff::Timestamp::now().duration_since(last).unsigned_abs();
    if age < every {
        return Action::requeue((every - age).max(Duration::from_secs(1)));
    }
    let uid = obj.uid().unwrap_or_default();
    let Some(claim) = room.claim(&uid) else {
        return Action::requeue(every);
    };
    let room = room.clone();
    let obj = obj.clone();
    tokio::spawn(async move {
        let _claim = claim;
        let Ok(_permit) = room.verify_permits.acquire().await else {
            return;
        };
        // The object as it is now (the wait for a permit may have been long): only a finished backup that
        // is not being deleted is re-verified, from its current status.
        let Some(latest) = room
            .ctx
            .caches
            .backups
            .store()
            .state()
            .into_iter()
            .find(|b| b.uid() == obj.uid())
        else {
            return;
        };
        let st = status_of(&latest);
        if !st.phase.is_some_and(Phase::is_final) || latest.metadata.deletion_timestamp.is_some() {
            return;
        }
        if let Err(e) = reverify(&room, &latest, st, &validation).await {
            warn!(backup = %obj.name_any(), error = %e, "re-verifying a backup failed; retried next time");
        }
    });
    Action::requeue(every)
}

/// Reads every copy back again.
async fn reverify(
    room: &Room,
    obj: &DynamicObject,
    mut st: BackupStatus,
    validation: &[Desired],
) -> Result<(), ReconcileError> {
    let sha = st.sha256.clone().unwrap_or_default();
    let size = st.size_bytes;
    let before = st.phase;
    let mut newly_bad = Vec::new();
    let mut any_checked = false;
    for l in st.locations.iter_mut() {
        let r = match room.store(&l.region).await {
            Ok(store) => read_back(&store, &l.key, &l.bucket, &sha, size).await,
            Err(e) => ReadBack::Unavailable(e),
        };
        match r {
            ReadBack::Unavailable(e) => {
                // Nothing known: the copy keeps its state, and says the last attempt failed.
                if !l.verified {
                    l.message = e;
                }
            }
            r @ ReadBack::Bad(_) => {
                any_checked = true;
                if l.verified {
                    newly_bad.push(l.region.clone());
                }
                set_verified(l, r);
                l.message = format!("re-verification: {}", l.message);
            }
            r @ ReadBack::Good(_) => {
                any_checked = true;
                set_verified(l, r);
            }
        }
    }
    if !any_checked && newly_bad.is_empty() {
        return Ok(());
    }
    let (phase, reason, msg) = judge(&st.locations);
    // A run that failed before anything was stored stays Failed; otherwise the copies decide.
    st.phase = Some(phase);
    if !newly_bad.is_empty() {
        let note = format!("copies no longer match in {}: {msg}", newly_bad.join(", "));
        publish(
            &room.ctx,
            obj,
            EventType::Warning,
            "BackupCopyCorrupt",
            &note,
            "Verify",
        )
        .await;
        warn!(backup = %obj.name_any(), message = %note, "backup copy failed re-verification");
    } else if before != Some(Phase::Succeeded) && phase == Phase::Succeeded {
        info!(backup = %obj.name_any(), "every copy verified again");
    }
    let (ready, completed) = if phase == Phase::Succeeded {
        (
            Desired::ok(types::READY, reason, msg.clone()),
            Desired::ok(COMPLETED, reason, msg),
        )
    } else {
        (
            Desired::fail(types::READY, reason, msg.clone()),
            Desired::fail(COMPLETED, reason, msg),
        )
    };
    let desired = run_conditions(validation, ready, completed);
    if phase == Phase::Succeeded {
        st.last_good_time = Some(Time::now());
    }
    room.write(&room.backups, obj, fields(&st), &desired)
        .await
        .map(|_| ())
}

/// Deletion: every copy (archive and manifest) in every recorded location, then the finalizer. A store
/// that fails keeps the finalizer (retried with backoff); a region that no longer exists, or names no
/// store or another bucket now, is skipped with a warning.
pub(super) async fn delete_copies(
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
    let name = obj.name_any();
    let pre = prefix(&tenant, &name);
    let sha = st.sha256.clone().unwrap_or_default();
    let mut failed = Vec::new();
    for l in &st.locations {
        let store = match room.store(&l.region).await {
            Ok(s) if s.bucket() == l.bucket => s,
            Ok(_) => {
                warn!(backup = %name, region = %l.region, bucket = %l.bucket, "the region names another bucket now; its copy is left");
                continue;
            }
            Err(e) if e.contains("does not exist") || e.contains("has no object store") => {
                warn!(backup = %name, region = %l.region, reason = %e, "the copy cannot be deleted there");
                continue;
            }
            Err(e) => {
                failed.push(format!("{}: {e}", l.region));
                continue;
            }
        };
        // Only keys under this backup's own prefix: never anything the backup did not write.
        for key in [l.key.clone(), manifest_key(&tenant, &name, &sha)] {
            if !key.starts_with(&pre) {
                continue;
            }
            match tokio::time::timeout(READ_BACK, store.delete(&key)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.push(format!("{}: {e}", l.region)),
                Err(_) => failed.push(format!("{}: no answer", l.region)),
            }
        }
    }
    if !failed.is_empty() {
        warn!(backup = %name, errors = ?failed, "deleting backup copies failed; retrying");
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
    info!(backup = %name, %tenant, copies = st.locations.len(), at = %Time::now().0, "backup and its copies deleted");
    Ok(Action::await_change())
}
