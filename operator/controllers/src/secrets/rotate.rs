//! One tenant's secrets, one after the other: settings checked, a recorded rotation finished from what
//! Vault says, a due one recorded and written (check-and-set), the version replicated to every other
//! placed region's Vault and synced into every placed region's target Secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azora_adapters::leader::BULK_WRITE_FENCE_AGE;
use azora_adapters::vault::{SecretData, Vault, VaultError};
use azora_api::Time;
use azora_api::region::RegionSpec;
use azora_api::tenant::{
    GeneratorKind, HOME_LOST, PendingRotation, RetiringSecret, SecretGenerator, SecretPhase, SecretRegion,
    SecretRevocation, SecretStatus, TenantSecret, TenantSpec,
};
use azora_core::duration::parse_duration;
use azora_core::placement::place;
use azora_core::secrets::{self as core, Written, claim, holds_home_version, written};
use azora_runtime::Needs;
use azora_runtime::events::publish;
use azora_runtime::pipeline::ReconcileError;
use futures::StreamExt as _;
use kube::ResourceExt as _;
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use rand::Rng as _;
use tracing::{info, warn};

use super::{Room, VaultProblem, restart, retire, sync};

/// How soon a secret that is not done is looked at again.
const BEHIND: Duration = Duration::from_secs(5);
/// How soon a done secret is looked at again at the latest (a hand change in Vault, a region that returns).
const SETTLED: Duration = Duration::from_secs(60);
/// Reason of a secret whose last rotation was rolled back (kept until the next rotation).
const ROLLED_BACK: &str = "RotationRolledBack";
/// Reason of a secret whose last rotation met a version written by someone else (kept likewise).
const CONFLICT: &str = "CasConflict";
/// How often a done secret's replicas and target Secrets are read back and repaired (a deleted Secret, a
/// restored or hand-edited replica), though the status says they hold the version.
const AUDIT_EVERY: Duration = Duration::from_secs(30 * 60);
/// Time between two `verify` checks of a version (the first comes this long after every region has it
/// and its workloads were restarted).
const CHECK_SPACING: Duration = Duration::from_secs(10);
/// Reason of a version whose checks are failing (kept between checks).
const VERIFY_FAILING: &str = "VerificationFailing";
/// Reason of a version 1 that failed its checks: nothing to roll back to.
const VERIFY_FAILED: &str = "VerificationFailed";
/// Secrets of one tenant written, replicated and synced at once.
const SECRETS_AT_ONCE: usize = 8;
/// The spec moved the home region; the new home has not taken over yet.
const HOME_MOVING: &str = "HomeMoving";
/// The reason of a target Secret that exists and is not ours (nothing is written while it stands).
const TARGET_CONFLICT: &str = "TargetSecretConflict";
/// The status reason of a home taken over without the lost home's Vault.
const HOME_MOVE_FORCED: &str = "HomeMoveForced";

type Vaults = BTreeMap<String, Result<Arc<Vault>, VaultProblem>>;

/// One secret after its first look.
enum Prepared {
    /// Nothing more this time; look again after that long.
    Stop(Duration),
    /// Go on: write (a recorded rotation; `true` when recorded just now), replicate, sync.
    Go(Box<Go>),
}

struct Go {
    home: Arc<Vault>,
    vaults: Vaults,
    every: Duration,
    grace: Duration,
    write: Option<(PendingRotation, bool)>,
    /// The home's newest version and its data as this pass read them first (a version's data never
    /// changes): the value synced, or the previous value kept beside a new one, without another read.
    held: Option<(u64, SecretData)>,
}

pub(super) async fn reconcile(obj: Arc<DynamicObject>, room: Arc<Room>) -> Result<Action, ReconcileError> {
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Ok(spec) = serde_json::from_value::<TenantSpec>(obj.data["spec"].clone()) else {
        // Tenancy reports a spec it cannot read.
        return Ok(Action::await_change());
    };
    let before: Vec<SecretStatus> = obj
        .data
        .pointer("/status/secrets")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let retiring_before: Vec<RetiringSecret> = obj
        .data
        .pointer("/status/retiringSecrets")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    // Copies the spec no longer wants where they are (a secret dropped, or moved to another path or
    // target): recorded with the same status write that forgets the secret's old entry.
    let mut retiring = retiring_before.clone();
    let placed_before: Vec<String> = obj
        .data
        .pointer("/status/placedRegions")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    retire::newly_retiring(&spec, &before, &placed_before, &mut retiring);
    let regions: BTreeMap<String, RegionSpec> = room.ctx.caches.regions.specs();
    if spec.secrets.is_empty() {
        if !retiring.is_empty() {
            retire::pass(&room, &obj, &obj.name_any(), &spec, &regions, &[], &mut retiring).await;
        }
        if !before.is_empty() || retiring != retiring_before {
            room.write(&obj, &[], &retiring).await?;
        }
        return Ok(if retiring.is_empty() {
            Action::await_change()
        } else {
            Action::requeue(SETTLED)
        });
    }
    let world = room
        .ctx
        .world(
            Needs {
                tenants: false,
                backups: false,
            },
            &[],
        )
        .await
        .map_err(ReconcileError::Fetch)?;
    let placed = place(&spec, &world).placed;
    let annotations = obj.annotations().clone();
    let mut all: Vec<SecretStatus> = spec
        .secrets
        .iter()
        .map(|s| {
            before
                .iter()
                .find(|b| b.name == s.name)
                .cloned()
                .unwrap_or_else(|| SecretStatus {
                    name: s.name.clone(),
                    ..SecretStatus::default()
                })
        })
        .collect();
    for (st, s) in all.iter_mut().zip(&spec.secrets) {
        if st.vault_path != s.vault_path {
            if !st.vault_path.is_empty() {
                // Moved: the old path's copies are in `retiring`; at the new path the secret starts over
                // (its first version, or what people put there), keeping only the rotate-now request
                // already carried out.
                *st = SecretStatus {
                    name: s.name.clone(),
                    rotate_now_handled: st.rotate_now_handled.take(),
                    ..SecretStatus::default()
                };
            }
            st.vault_path = s.vault_path.clone();
        }
        // The home the copies come from. A home moved in the spec takes over once its Vault holds the
        // recorded version (`Turn::hand_over`); until then the old one stays the source, so no older value
        // (a leaked one) held by the new home is taken as current.
        if st.home_region.is_empty() || (st.version == 0 && st.pending.is_none()) {
            st.home_region = spec.home_region.clone();
        }
        if st.target_secret != s.target_secret {
            if !st.target_secret.is_empty() {
                for r in &mut st.regions {
                    r.synced_version = None;
                }
            }
            st.target_secret = s.target_secret.clone();
        }
    }
    let tenant = obj.name_any();
    let hosts = core::VerifyHosts {
        hostnames: &spec.hostnames,
        patterns: &room.cfg.verify_hosts,
    };
    let problems = core::check_all(&tenant, &spec.secrets, &hosts);
    let rotated = std::sync::Mutex::new(Vec::new());
    let turns: Vec<Turn> = spec
        .secrets
        .iter()
        .zip(problems)
        .zip(&all)
        .map(|((secret, problem), st)| Turn {
            room: &room,
            obj: &obj,
            tenant: tenant.clone(),
            spec: &spec,
            home: st.home_region.clone(),
            secret,
            placed: &placed,
            regions: &regions,
            rotate_now: super::rotate_now_token(&annotations, &secret.name),
            problem,
            rotated: &rotated,
        })
        .collect();
    let mut prepared = Vec::with_capacity(turns.len());
    for (turn, st) in turns.iter().zip(all.iter_mut()) {
        prepared.push(turn.prepare(st).await);
    }
    // Intent first: every rotation recorded in one status write before any of them is written to Vault.
    if prepared
        .iter()
        .any(|p| matches!(p, Prepared::Go(g) if g.write.as_ref().is_some_and(|w| w.1)))
    {
        room.write(&obj, &all, &retiring).await?;
    }
    let mut again = SETTLED;
    let mut work = Vec::with_capacity(turns.len());
    for (i, ((turn, prep), mut st)) in turns.iter().zip(prepared).zip(all.clone()).enumerate() {
        work.push(async move {
            let d = match prep {
                Prepared::Stop(d) => d,
                Prepared::Go(go) => turn.finish(&mut st, *go).await,
            };
            (i, st, d)
        });
    }
    let finished: Vec<(usize, SecretStatus, Duration)> = futures::stream::iter(work)
        .buffer_unordered(SECRETS_AT_ONCE)
        .collect()
        .await;
    for (i, st, d) in finished {
        all[i] = st;
        again = again.min(d);
    }
    let rotated = rotated
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    if !rotated.is_empty() {
        let note = rotated_note(&rotated);
        publish(
            &room.ctx,
            &obj,
            EventType::Normal,
            "SecretRotated",
            &note,
            "Rotate",
        )
        .await;
    }
    // Workloads that asked for it restart once per version their Secrets really changed to, every secret
    // of the tenant batched into one change per workload.
    for region in &placed {
        let versions: BTreeMap<&str, restart::Consumed> = spec
            .secrets
            .iter()
            .zip(all.iter())
            .filter(|(s, st)| {
                s.restart_workloads
                    && st.version > 0
                    && st
                        .regions
                        .iter()
                        .any(|r| &r.region == region && r.synced_version == Some(st.version))
            })
            .flat_map(|(s, st)| {
                let c = restart::Consumed {
                    secret: s.name.as_str(),
                    version: st.version,
                    rotation: st.rotation_id.as_deref(),
                };
                [(s.name.as_str(), c), (s.target_secret.as_str(), c)]
            })
            .collect();
        if versions.is_empty() {
            continue;
        }
        if let Err(e) = restart::roll(&room, &tenant, region, &versions).await {
            warn!(tenant = %tenant, %region, error = %e, "restarting workloads after a rotation");
            again = again.min(BEHIND);
        }
    }
    // Old copies go after this pass brought the secrets' current copies where they belong.
    if !retiring.is_empty() {
        retire::pass(&room, &obj, &tenant, &spec, &regions, &all, &mut retiring).await;
    }
    if all != before || retiring != retiring_before {
        room.write(&obj, &all, &retiring).await?;
    }
    Ok(Action::requeue(again))
}

impl Room {
    /// Writes the whole `secrets` list of the tenant's status (fenced).
    pub(super) async fn write(
        &self,
        obj: &DynamicObject,
        all: &[SecretStatus],
        retiring: &[RetiringSecret],
    ) -> Result<(), ReconcileError> {
        self.tenants
            .apply(
                &obj.name_any(),
                None,
                serde_json::json!({ "secrets": all, "retiringSecrets": retiring }),
            )
            .await
            .map_err(ReconcileError::Status)
    }
}

struct Turn<'a> {
    room: &'a Arc<Room>,
    obj: &'a DynamicObject,
    tenant: String,
    spec: &'a TenantSpec,
    /// The home region this pass reads from and writes to: the spec's, or while a move to it is not done,
    /// the one before it.
    home: String,
    secret: &'a TenantSecret,
    placed: &'a [String],
    regions: &'a BTreeMap<String, RegionSpec>,
    rotate_now: Option<String>,
    /// Bad input found across the tenant's secrets (`core::check_all`).
    problem: Option<(&'static str, String)>,
    /// The rotations written in this pass (the home Vault each was written in, what), for the tenant's one
    /// `SecretRotated` Event.
    rotated: &'a std::sync::Mutex<Vec<(String, String)>>,
}

/// Room an Event's note has (the Events API refuses notes over 1 KiB).
const NOTE_ROOM: usize = 900;

/// The note of a tenant's `SecretRotated` Event: every rotation of the pass, as many as fit, then how
/// many more (status names them all). Ten thousand secrets rotating together make one Event per tenant,
/// not ten thousand.
fn rotated_note(rotated: &[(String, String)]) -> String {
    // Each written in its secret's home Vault of the pass: the spec's, or while a move is not done, the
    // one before it.
    let homes: std::collections::BTreeSet<&str> = rotated.iter().map(|(h, _)| h.as_str()).collect();
    let one = (homes.len() == 1).then(|| homes.iter().next().copied()).flatten();
    let mut note = match (rotated, one) {
        ([(home, r)], _) => return format!("secret {r} written in region {home}; replicating"),
        (_, Some(home)) => format!("{} secrets rotated in region {home}; replicating:", rotated.len()),
        _ => format!("{} secrets rotated; replicating:", rotated.len()),
    };
    for (i, (home, r)) in rotated.iter().enumerate() {
        let r = if one.is_some() {
            r.clone()
        } else {
            format!("{r} in region {home}")
        };
        if note.len() + r.len() + 2 > NOTE_ROOM {
            note.push_str(&format!(" and {} more (status.secrets)", rotated.len() - i));
            break;
        }
        note.push_str(if i == 0 { " " } else { ", " });
        note.push_str(&r);
    }
    note
}

fn fail(st: &mut SecretStatus, reason: &str, message: String) {
    st.phase = Some(SecretPhase::Failed);
    st.reason = reason.to_string();
    st.message = message;
}

/// A reason that stays after the secret is done again (what happened to its last rotation).
fn sticky(reason: &str) -> bool {
    [CONFLICT, ROLLED_BACK, VERIFY_FAILED, VERIFY_FAILING].contains(&reason)
}

/// Records that every version below `version` leaked: destroyed in the Vault of every placed region (and of
/// every region an earlier revocation has not finished with).
fn revoke_below(st: &mut SecretStatus, version: u64, placed: &[String]) {
    let mut regions = placed.to_vec();
    for r in st.revocation.iter().flat_map(|r| r.regions.iter()) {
        if !regions.contains(r) {
            regions.push(r.clone());
        }
    }
    st.revocation = Some(SecretRevocation {
        version,
        time: now(),
        regions,
    });
}

/// Whether the current version replaced a leaked value (the one before it must never come back).
fn revoked(st: &SecretStatus) -> bool {
    st.revocation.as_ref().is_some_and(|r| r.version == st.version)
}

/// The version whose value is written back when the current one failed its checks `attempts` times in a
/// row: the one before it, while it is still the previous value kept beside the current one (its grace
/// period). Never a value that leaked, nor one the current version was not a rotation from: a version
/// taken over by a forced home move (the new home's older versions were never handed out, or are the
/// value given up), one that replaced a value set by hand, or one whose grace period is over.
fn rollback_target(st: &SecretStatus, attempts: u32) -> Option<u64> {
    (st.phase == Some(SecretPhase::Verifying)
        && st.verify_failures >= attempts
        && st.verified_version != Some(st.version)
        && st.version > 1
        && st.previous_until.is_some()
        && !revoked(st))
    .then(|| st.version - 1)
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// A new value from the generator: only ever held in memory and sent to Vault.
pub(crate) fn generate(g: &SecretGenerator) -> SecretData {
    let mut rng = rand::rng();
    let len = g.length as usize;
    let value = match g.kind {
        GeneratorKind::Bytes => {
            use base64::Engine as _;
            let mut b = vec![0u8; len];
            rng.fill(&mut b[..]);
            base64::engine::general_purpose::STANDARD.encode(b)
        }
        _ => {
            let chars: Vec<char> = g.characters.chars().collect();
            (0..len)
                .map(|_| chars[rng.random_range(0..chars.len())])
                .collect()
        }
    };
    SecretData(BTreeMap::from([(g.key.clone(), value)]))
}

fn rotation_id() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

impl Turn<'_> {
    fn home(&self) -> &str {
        &self.home
    }

    /// Whether the spec moved the home away from the region the copies come from.
    fn moving(&self) -> bool {
        self.home != self.spec.home_region
    }

    fn path(&self) -> &str {
        &self.secret.vault_path
    }

    async fn event(&self, type_: EventType, reason: &str, note: &str) {
        publish(&self.room.ctx, self.obj, type_, reason, note, "Rotate").await;
    }

    /// Settings checked, the home key read, a recorded rotation judged, a hand change taken, a due rotation
    /// recorded in `st` (its intent is written to status by the caller, for every secret of the tenant at
    /// once, before any of them is written to Vault).
    async fn prepare(&self, st: &mut SecretStatus) -> Prepared {
        let s = self.secret;
        // Bad input: a condition, nothing written anywhere.
        if let Some((reason, msg)) = self.problem.clone() {
            fail(st, reason, msg);
            return Prepared::Stop(SETTLED);
        }
        if !self.placed.contains(&self.spec.home_region) {
            fail(
                st,
                "HomeRegionNotPlaced",
                format!("home region {} is not placed", self.spec.home_region),
            );
            return Prepared::Stop(SETTLED);
        }
        let every = parse_duration(&s.rotate_every).unwrap_or(Duration::from_secs(30 * 86400));
        let grace = parse_duration(&s.grace_period).unwrap_or(Duration::from_secs(86400));
        // Every placed region's Vault settings must be complete before anything is written anywhere; a Vault
        // that refuses or is down now only holds its own region back.
        let mut vaults: Vaults = BTreeMap::new();
        for r in self.placed {
            let v = self.room.vault(r, self.regions.get(r)).await;
            if let Err(p) = &v
                && p.settings
            {
                fail(st, p.reason, p.message.clone());
                return Prepared::Stop(SETTLED);
            }
            vaults.insert(r.clone(), v);
        }
        // (A home being moved away from may have left the placement.)
        let home = match vaults.get(self.home()) {
            Some(v) => v.clone(),
            None => self.room.vault(self.home(), self.regions.get(self.home())).await,
        };
        if self.moving() && self.hand_over(st, &vaults, home.as_deref().ok()).await {
            return Prepared::Stop(Duration::from_secs(1));
        }
        if self.moving() && azora_api::tenant::home_lost(self.obj.annotations(), &self.home) {
            // (A lost home that answers with a key is handed over as usual.)
            // Some(held): it answered, holding a key or not; None: it did not (its clock of silence runs).
            let said = match home.as_deref() {
                Ok(o) => match o.meta(self.path()).await {
                    Ok(m) => {
                        self.room.answered(&self.home).await;
                        Some(m.is_some_and(|m| m.current_version > 0))
                    }
                    Err(e) => {
                        self.room.note(&self.home, &e).await;
                        None
                    }
                },
                Err(_) => None,
            };
            if said.is_none() {
                self.room.silent(&self.home);
            }
            let lost = said == Some(false)
                || (said.is_none()
                    && self
                        .room
                        .silent_for(&self.home)
                        .is_some_and(|d| d >= self.room.cfg.lost_after));
            if lost {
                if self.force_over(st, &vaults).await {
                    return Prepared::Stop(Duration::from_secs(1));
                }
                // Not taken over yet (the new home did not answer, or a target Secret is not ours): nothing
                // is written in, or judged from, the home given up.
                if st.reason != TARGET_CONFLICT {
                    st.reason = HOME_MOVING.into();
                    st.message = format!(
                        "{}: region {} is declared lost ({HOME_LOST}) and given up; {} takes over once its Vault answers",
                        self.move_note(st.version),
                        self.home,
                        self.spec.home_region
                    );
                }
                return Prepared::Stop(BEHIND);
            } else if said.is_none() {
                st.reason = HOME_MOVING.into();
                st.message = format!(
                    "{}: region {} is declared lost ({HOME_LOST}) and given up once its Vault holds no key at {} or has answered nothing for {}s",
                    self.move_note(st.version),
                    self.home,
                    self.path(),
                    self.room.cfg.lost_after.as_secs()
                );
                return Prepared::Stop(BEHIND);
            }
        }
        let home = match home {
            Ok(v) => v,
            Err(p) => {
                st.reason = p.reason.to_string();
                st.message = format!("home region {}: {}", self.home(), p.message);
                if self.moving() {
                    st.message = format!("{}; {}", self.move_note(st.version), st.message);
                }
                return Prepared::Stop(BEHIND);
            }
        };
        // (One read gives the newest version with its data and the claim; an `External` key carries no
        // claim, and a read without custom metadata is followed by a metadata read: it is read as before.)
        let first = if s.generator.kind == GeneratorKind::External {
            home.meta(self.path())
                .await
                .map(|m| m.map(|m| (m, None::<SecretData>)))
        } else {
            home.newest(self.path()).await
        };
        let (meta, held) = match first {
            Ok(Some((m, d))) => {
                self.room.answered(self.home()).await;
                let held = d.map(|d| (m.current_version, d));
                (Some(m), held)
            }
            Ok(None) => {
                self.room.answered(self.home()).await;
                (None, None)
            }
            Err(e) => {
                self.room.note(self.home(), &e).await;
                st.reason = e.reason().to_string();
                st.message = format!("home region {}: {e}", self.home());
                if self.moving() {
                    st.message = format!("{}; {}", self.move_note(st.version), st.message);
                }
                return Prepared::Stop(BEHIND);
            }
        };
        let (current, custom) = meta.map(|m| (m.current_version, m.custom)).unwrap_or_default();
        let mut go = Go {
            home,
            vaults,
            every,
            grace,
            write: None,
            held,
        };
        if current == 0
            && self.moving()
            && (st.version > 0 || st.pending.as_ref().is_some_and(|p| p.from_version > 0))
        {
            // The home being left holds nothing (rebuilt, or the key deleted): nothing is generated there,
            // and a rotation recorded for it is not judged against an empty key; the new home takes over
            // once it holds the recorded rotation (or the old home is declared lost).
            st.reason = HOME_MOVING.into();
            st.message = format!(
                "{}: region {}'s Vault holds no version at {}",
                self.move_note(st.version),
                self.home(),
                self.path()
            );
            return Prepared::Stop(BEHIND);
        }
        if let Some(p) = st.pending.clone() {
            // A rotation recorded earlier: the key says whether its write happened.
            if s.generator.kind == GeneratorKind::External && p.restores.is_none() {
                // Switched to External meanwhile: nothing is generated for it any more.
                st.pending = None;
            } else {
                match self.judge(&go.home, current, &custom, &p).await {
                    Ok(Written::NotYet) => go.write = Some((p, false)),
                    Ok(Written::Done(v)) => self.commit(st, &p, v, grace).await,
                    Ok(Written::Conflict(v)) => {
                        // The operator's own later rotation (a status restored from a copy that still held
                        // an older one): taken back as its own, not reported as someone else's write.
                        let later = custom.get(core::META_ROTATION).is_some_and(|id| *id != p.id)
                            && holds_home_version(v, &custom) == Some(v);
                        let own = if later {
                            match self.claim_confirmed(&go.home, v, &custom).await {
                                Ok(d) => d,
                                Err(e) => {
                                    st.reason = e.reason().to_string();
                                    st.message = format!("home region {}: {e}", self.home());
                                    return Prepared::Stop(BEHIND);
                                }
                            }
                        } else {
                            None
                        };
                        match own {
                            Some(d) => {
                                st.pending = None;
                                st.version = v;
                                st.rotation_id = custom.get(core::META_ROTATION).cloned();
                                st.last_rotation_time.get_or_insert_with(now);
                                st.phase = Some(SecretPhase::Replicating);
                                self.restore_from_data(st, v, &d);
                            }
                            None => self.conflict(st, &p, v).await,
                        }
                    }
                    Err(e) => {
                        st.reason = e.reason().to_string();
                        st.message = format!("home region {}: {e}", self.home());
                        return Prepared::Stop(BEHIND);
                    }
                }
            }
        } else if current == 0 {
            if s.generator.kind == GeneratorKind::External {
                fail(
                    st,
                    "ExternalValueMissing",
                    format!(
                        "secret {}: the value is set by people: write it at {} in region {}'s Vault",
                        s.name,
                        self.path(),
                        self.home()
                    ),
                );
                return Prepared::Stop(BEHIND);
            }
            match self.record(st, 0, None).await {
                Some(p) => go.write = Some((p, true)),
                None => return Prepared::Stop(SETTLED),
            }
        } else if current != st.version {
            // The operator's own write: claimed, and the version's data carries the claimed rotation (a
            // write by hand after a claim is not).
            let own = if holds_home_version(current, &custom) == Some(current) {
                match self.claim_confirmed(&go.home, current, &custom).await {
                    Ok(d) => d,
                    Err(e) => {
                        self.room.note(self.home(), &e).await;
                        st.reason = e.reason().to_string();
                        st.message = format!("home region {}: {e}", self.home());
                        return Prepared::Stop(BEHIND);
                    }
                }
            } else {
                None
            };
            let ours = own.is_some();
            if st.version > 0 && !ours && s.generator.kind != GeneratorKind::External {
                // Written by someone else since the operator's last version: kept, never overwritten.
                self.changed_outside(st, current).await;
            } else {
                // An external value changed, or the status was lost: take Vault's newest version.
                st.version = current;
                st.rotation_id = custom.get(core::META_ROTATION).cloned().filter(|_| ours);
                if let Some(d) = &own {
                    self.restore_from_data(st, current, d);
                }
                st.last_rotation_time.get_or_insert_with(now);
                st.phase = Some(SecretPhase::Replicating);
                if s.generator.kind == GeneratorKind::External {
                    st.last_rotation_time = Some(now());
                    self.event(
                        EventType::Normal,
                        "SecretChanged",
                        &format!(
                            "secret {}: version {current} set in region {}'s Vault; replicating",
                            s.name,
                            self.home()
                        ),
                    )
                    .await;
                }
            }
        } else if let Some(restore) = self.rollback_due(st) {
            match self.record(st, current, Some(restore)).await {
                Some(p) => go.write = Some((p, true)),
                None => return Prepared::Stop(SETTLED),
            }
        } else if s.generator.kind != GeneratorKind::External
            && self.due(st, every)
            && (!self.moving() || self.placed.contains(&self.home))
        {
            // (A home being left that the tenant may no longer use gets no new value: the rotation waits
            // for the new home to take over.)
            match self.record(st, current, None).await {
                Some(p) => go.write = Some((p, true)),
                None => return Prepared::Stop(SETTLED),
            }
        }
        Prepared::Go(Box::new(go))
    }

    fn move_note(&self, version: u64) -> String {
        format!(
            "home moving from {} to {}: waiting for {}'s Vault to hold version {version}",
            self.home, self.spec.home_region, self.spec.home_region
        )
    }

    /// The spec moved the home: the new home takes over when its Vault's newest version is the recorded one
    /// — the same data as the old home's version, which must still be the old home's newest (a newer one,
    /// written by hand or by the operator under a status restored from before, is judged there first), or,
    /// while the old home does not answer or holds no key, the rotation the status names (a value with no
    /// rotation id needs the old home to answer), in a region the status records holding it. Until then the
    /// old home stays the source and replicates to the new one, so a new home that missed the last rotation
    /// (a leak's answer among them) never makes an older value current. Nothing is handed over while a
    /// rotation is pending, the previous value is kept for its grace period, a check is due or a rollback
    /// is owed (the new home numbers its older versions its own way). On taking over, the new home's key is
    /// claimed for the rotation (a status lost later takes it back as the operator's own) and the status is
    /// renumbered to the new home's version; the target Secrets are synced again for their version
    /// annotation. Returns whether it took over.
    async fn hand_over(&self, st: &mut SecretStatus, vaults: &Vaults, old: Option<&Vault>) -> bool {
        let to = self.spec.home_region.as_str();
        let path = self.path();
        let from = st.version;
        let grace = st
            .previous_until
            .as_ref()
            .is_some_and(|u| jiff::Timestamp::now() < u.0);
        if st.pending.is_some() || grace || self.needs_check(st) || self.rollback_due(st).is_some() {
            return false;
        }
        let Some(Ok(new)) = vaults.get(to) else {
            return false;
        };
        let held = newest(new, path).await;
        let (current, data) = match held {
            Ok(Some(h)) => h,
            Ok(None) => return false,
            Err(e) => {
                self.room.note(to, &e).await;
                return false;
            }
        };
        // What the old home says: `Some(same)` when it answers with a key, `None` when it does not answer
        // or holds nothing at the path (gone, or rebuilt empty).
        let recorded = match old {
            Some(o) => {
                let said = async {
                    let newest = o.meta(path).await?.map_or(0, |m| m.current_version);
                    if newest == 0 {
                        return Ok(None);
                    }
                    if newest != from {
                        // A newer version there: the normal pass judges it (taken back, or reported).
                        return Ok(Some(false));
                    }
                    Ok(o.read(path, from).await?.map(|d| d == data))
                }
                .await;
                match said {
                    Ok(r) => {
                        self.room.answered(&self.home).await;
                        r
                    }
                    Err(e) => {
                        self.room.note(&self.home, &e).await;
                        None
                    }
                }
            }
            None => None,
        };
        let same = recorded.unwrap_or_else(|| {
            let rotation = data.0.get(core::DATA_ROTATION);
            st.regions
                .iter()
                .any(|r| r.region == to && r.vault_version == Some(from))
                && st.rotation_id.as_ref().is_some_and(|id| rotation == Some(id))
        });
        if !same {
            if recorded == Some(false) {
                // Written there by hand since, or never: replicated again (not skipped on the record).
                for r in st.regions.iter_mut().filter(|r| r.region == to) {
                    r.vault_version = None;
                }
                self.room
                    .set_replica(&format!("{to}/{}/{}/{path}", new.address(), new.mount()), None);
            }
            return false;
        }
        if let Some(id) = &st.rotation_id {
            if self.room.ctx.fence.check().await.is_err() {
                return false;
            }
            if let Err(e) = new.set_custom(path, &claim(id, current, current)).await {
                self.room.note(to, &e).await;
                return false;
            }
        }
        for r in &mut st.regions {
            r.vault_version = (r.vault_version == Some(from)).then_some(current);
            r.synced_version = None;
        }
        if let Some(r) = st.revocation.as_mut() {
            // (Never above the version it answered: the new home holds nothing newer than `current`.)
            r.version = current;
        }
        st.verified_version = st.verified_version.filter(|v| *v == from).map(|_| current);
        st.version = current;
        let before = std::mem::replace(&mut st.home_region, to.to_string());
        st.phase = Some(SecretPhase::Syncing);
        let mut msg = format!(
            "secret {}: home moved from region {before} to {to}; version {from} there is version {current} here",
            self.secret.name
        );
        if !self.placed.contains(&before) {
            // A former home is a source of truth, not a copy: its key (every version people or the operator
            // wrote there) is never destroyed as a leaving region's copy would be. Its target Secret goes
            // with the tenant's namespace there.
            st.regions.retain(|r| r.region != before);
            msg.push_str(&format!(
                "; region {before} is no longer placed: its Vault keeps its key at {path} (remove it by hand once it is not needed)"
            ));
        }
        info!(tenant = %self.tenant, secret = %self.secret.name, from = %before, %to, "home region handed over");
        self.event(EventType::Normal, "SecretHomeMoved", &msg).await;
        if !sticky(&st.reason) {
            st.reason.clear();
            st.message = msg;
        }
        true
    }

    /// The home moved away from a region declared lost (`azora.io/home-lost`) and given up: the new home takes
    /// over with what it holds. Its newest version stays current when it is the recorded value (the rotation
    /// status names, a pending rotation's own write that was replicated before status said so, or — with no
    /// rotation id — the version status records it holding); otherwise, and when a rotation was pending, a
    /// new rotation is recorded for the new home (written there on the next pass, intent first, check-and-set
    /// on its newest version), keeping no previous value beside it (the version before it was never handed
    /// out); for an `External` secret people set the new value. The previous value's grace period ends. The
    /// regions are replicated from the new home again: a lost home still placed gets the new home's value as
    /// a new version once it answers, one no longer placed keeps its key. Nothing is written to Vault but the
    /// new home's claim. Returns whether it took over.
    async fn force_over(&self, st: &mut SecretStatus, vaults: &Vaults) -> bool {
        let to = self.spec.home_region.as_str();
        let path = self.path();
        let Some(Ok(new)) = vaults.get(to) else {
            return false;
        };
        // A rollback owed (the current value failed its check) names a version by the lost home's
        // numbering: it is answered with a new value in the new home instead.
        let rollback = self.rollback_due(st).is_some();
        let held = async {
            let current = new.meta(path).await?.map_or(0, |m| m.current_version);
            let data = if current > 0 {
                new.read(path, current).await?
            } else {
                None
            };
            Ok::<_, VaultError>((current, data))
        }
        .await;
        let (current, data) = match held {
            Ok(h) => h,
            Err(e) => {
                self.room.note(to, &e).await;
                return false;
            }
        };
        let before = self.home.clone();
        let recorded = st.version;
        let rotation = data.as_ref().and_then(|d| d.0.get(core::DATA_ROTATION).cloned());
        let pending = st.pending.clone();
        let pending_written = pending
            .as_ref()
            .is_some_and(|p| rotation.as_deref() == Some(p.id.as_str()));
        let same = data.is_some()
            && (pending_written
                || (rotation.is_some() && rotation == st.rotation_id)
                || (rotation.is_none()
                    && st.rotation_id.is_none()
                    && st
                        .regions
                        .iter()
                        .any(|r| r.region == to && r.vault_version == Some(recorded))));
        let generated = self.secret.generator.kind != GeneratorKind::External;
        let asked = pending
            .as_ref()
            .is_some_and(|p| p.restores.is_none() && !pending_written);
        let rotate = generated && (!same || asked || rollback);
        if rotate {
            // A target Secret that is not ours stops the take-over before anything changes (the new value
            // could not be synced there, and the value the new home holds must not be synced instead).
            if let Some(msg) = sync::collision(self.room, &self.tenant, self.secret, self.placed).await {
                fail(st, TARGET_CONFLICT, msg);
                return false;
            }
        }
        if let Some(id) = rotation.as_ref().filter(|_| same) {
            if self.room.ctx.fence.check().await.is_err() {
                return false;
            }
            // Claimed for the rotation its data names, so a status lost later takes it back as the
            // operator's own (only the recorded value: one given up is not taken back).
            if let Err(e) = new.set_custom(path, &claim(id, current, current)).await {
                self.room.note(to, &e).await;
                return false;
            }
        }
        let placed_before = self.placed.contains(&before);
        st.pending = None;
        st.version = current;
        st.rotation_id = rotation.clone();
        st.home_region = to.to_string();
        st.previous_until = None;
        st.verified_version = st
            .verified_version
            .filter(|v| same && !pending_written && *v == recorded)
            .map(|_| current);
        st.verify_failures = 0;
        let owed = st.revocation.as_ref().filter(|r| !r.regions.is_empty()).cloned();
        if let Some(r) = st.revocation.as_mut() {
            r.version = current;
        }
        st.regions.retain(|r| r.region != before || placed_before);
        for r in &mut st.regions {
            r.vault_version = (r.region == to && current > 0).then_some(current);
            r.synced_version = None;
        }
        if let Some(p) = pending.as_ref().filter(|_| pending_written) {
            // The pending rotation was written (and replicated here) before status said so: it is this
            // version, committed now — a leak's answer with its revocation.
            st.last_rotation_time = Some(now());
            if p.revokes {
                revoke_below(st, current, self.placed);
            }
        }
        for r in self.placed {
            if let Some(v) = vaults.get(r).and_then(|v| v.as_ref().ok()) {
                self.room
                    .set_replica(&format!("{r}/{}/{}/{path}", v.address(), v.mount()), None);
            }
        }
        st.phase = Some(SecretPhase::Syncing);
        st.reason = HOME_MOVE_FORCED.into();
        let mut note = format!(
            "secret {}: home moved from region {before} to {to} without {before}'s Vault ({HOME_LOST}={before})",
            self.secret.name
        );
        if current == 0 {
            note.push_str(&format!("; {to}'s Vault holds nothing at {path}"));
        } else if same {
            note.push_str(&format!(
                "; {to}'s version {current} is the current value (version {recorded} in {before})"
            ));
        } else {
            note.push_str(&format!(
                "; {to}'s version {current} is not the value recorded as version {recorded} in {before}, which is given up"
            ));
        }
        if pending.is_some() && !pending_written {
            note.push_str(&format!(
                "; the rotation pending in {before} is dropped (whatever it wrote there stays there)"
            ));
        }
        if rotate {
            let leaked = pending.as_ref().is_some_and(|p| p.revokes)
                || owed.is_some()
                || self.rotate_now.as_deref().is_some_and(|t| {
                    azora_api::tenant::rotate_now_leaked(t, st.rotate_now_handled.as_deref())
                });
            match self.record(st, current, None).await {
                Some(_) => {
                    if let Some(p) = st.pending.as_mut() {
                        p.revokes |= leaked;
                        // The value the target Secrets hand out is not the new home's newest: nothing is
                        // kept beside the new one.
                        p.without_previous = !same;
                    }
                    st.phase = Some(SecretPhase::Rotating);
                    st.reason = HOME_MOVE_FORCED.into();
                    note.push_str(&format!(
                        "; a new value is written in {to} as version {}{}",
                        current + 1,
                        if leaked {
                            " (a leak was being answered: every older version is destroyed)"
                        } else if same {
                            ""
                        } else {
                            " with no previous value kept"
                        }
                    ));
                }
                None => note.push_str("; no new value written: see the secret's status"),
            }
        } else if !same {
            note.push_str(&format!(
                "; it is synced as it is: set the right value in {to}'s Vault"
            ));
        } else {
            note.push_str("; the previous value's grace period ends");
        }
        if !placed_before {
            note.push_str(&format!(
                "; region {before} is no longer placed: its Vault keeps its key at {path}"
            ));
            if owed.is_some_and(|r| r.regions.contains(&before)) {
                note.push_str(&format!(
                    " and the leaked versions there (destroy every version below {recorded} by hand)"
                ));
            }
        }
        warn!(tenant = %self.tenant, secret = %self.secret.name, from = %before, %to, "home taken over without the lost home's Vault");
        let mut event = note.clone();
        if event.len() > NOTE_ROOM {
            let mut cut = NOTE_ROOM;
            while !event.is_char_boundary(cut) {
                cut -= 1;
            }
            event.truncate(cut);
        }
        self.event(EventType::Warning, "SecretHomeMoveForced", &event)
            .await;
        if st.reason == HOME_MOVE_FORCED {
            st.message = note;
        }
        true
    }

    /// The recorded write made, then the version replicated and synced; returns how soon to look again.
    async fn finish(&self, st: &mut SecretStatus, go: Go) -> Duration {
        let s = self.secret;
        // Checks start on the pass after the one that synced (and restarted) everywhere.
        let was_verifying = st.phase == Some(SecretPhase::Verifying);
        let mut written = None;
        if let Some((p, _)) = &go.write {
            match self.write_home(&go.home, p, st, go.grace).await {
                Ok(data) => written = data,
                Err(d) => return d,
            }
        }
        if st.version == 0 {
            return BEHIND;
        }
        self.spread(st, &go.home, &go.vaults, written, go.held).await;
        if st.phase == Some(SecretPhase::Done) && self.needs_check(st) {
            let key = format!("{}/{}", self.tenant, s.name);
            if !was_verifying {
                // The first check comes a spacing after this (restarted workloads get their moment).
                self.room.check_due(&key, Duration::ZERO);
                st.phase = Some(SecretPhase::Verifying);
                st.message = format!("version {} everywhere; checking {}", st.version, self.check_url());
                return BEHIND;
            }
            if !self.room.check_due(&key, CHECK_SPACING) {
                st.phase = Some(SecretPhase::Verifying);
                return BEHIND;
            }
            self.check(st).await;
            if st.phase == Some(SecretPhase::Verifying) {
                return BEHIND;
            }
        }

        let t = jiff::Timestamp::now();
        st.next_rotation_time = (s.generator.kind != GeneratorKind::External).then(|| {
            Time(core::next_rotation(
                st.last_rotation_time.as_ref().map_or(t, |l| l.0),
                go.every,
                &self.tenant,
                &s.name,
            ))
        });
        let labels = [self.tenant.as_str(), s.name.as_str()];
        if let Some(l) = &st.last_rotation_time {
            let age = t.duration_since(l.0).as_secs_f64().max(0.0);
            self.room
                .ctx
                .metrics
                .secret_age
                .with_label_values(&labels)
                .set(age);
        }
        if let Some(n) = &st.next_rotation_time {
            self.room
                .ctx
                .metrics
                .secret_next_rotation
                .with_label_values(&labels)
                .set(n.0.as_second() as f64);
        }
        if self.moving() {
            // Not done while the copies come from a home the spec has left (checks and rollbacks go on).
            let note = self.move_note(st.version);
            if !st.message.starts_with("home moving") {
                st.message = if st.message.is_empty() {
                    note
                } else {
                    format!("{note}; {}", st.message)
                };
            }
            if st.phase == Some(SecretPhase::Done) {
                st.phase = Some(SecretPhase::Replicating);
            }
            if st.reason.is_empty() {
                st.reason = HOME_MOVING.into();
            }
            return BEHIND;
        }
        if !matches!(st.phase, Some(SecretPhase::Done | SecretPhase::RolledBack)) {
            return BEHIND;
        }
        // (A region still holding copies it should not is tried again with the next pass, within a minute.)
        let mut d = SETTLED;
        for at in [st.next_rotation_time.as_ref(), st.previous_until.as_ref()]
            .into_iter()
            .flatten()
        {
            let left = at.0.duration_since(t).as_secs_f64().max(1.0);
            d = d.min(Duration::from_secs_f64(left));
        }
        d
    }

    fn due(&self, st: &SecretStatus, every: Duration) -> bool {
        if let Some(token) = self.rotate_now.as_deref()
            && azora_api::tenant::rotate_now_pending(token, st.rotate_now_handled.as_deref())
        {
            return true;
        }
        let Some(last) = &st.last_rotation_time else {
            return false;
        };
        jiff::Timestamp::now() >= core::next_rotation(last.0, every, &self.tenant, &self.secret.name)
    }

    /// What the home key says about the recorded rotation `p`: the claim in its custom metadata, confirmed
    /// by the rotation id inside the version's own data (a write by someone else after the claim is theirs).
    async fn judge(
        &self,
        home: &Vault,
        current: u64,
        custom: &BTreeMap<String, String>,
        p: &PendingRotation,
    ) -> Result<Written, VaultError> {
        match written(current, custom, &p.id, p.from_version) {
            Written::Done(v) => {
                let data = home.read(self.path(), v).await?;
                let ours = data
                    .as_ref()
                    .and_then(|d| d.0.get(core::DATA_ROTATION))
                    .is_some_and(|id| *id == p.id);
                Ok(if ours {
                    Written::Done(v)
                } else {
                    Written::Conflict(v)
                })
            }
            w => Ok(w),
        }
    }

    /// Whether version `current` of the home key is the claimed rotation's own write (its data carries the
    /// claim's rotation id); returns that version's data when it is.
    async fn claim_confirmed(
        &self,
        home: &Vault,
        current: u64,
        custom: &BTreeMap<String, String>,
    ) -> Result<Option<SecretData>, VaultError> {
        let Some(id) = custom.get(core::META_ROTATION) else {
            return Ok(None);
        };
        let data = home.read(self.path(), current).await?;
        Ok(data.filter(|d| d.0.get(core::DATA_ROTATION).is_some_and(|x| x == id)))
    }

    /// What a status taken back from Vault (it was lost, or restored from before) must not forget, from the
    /// data of the operator's own newest version: the rotate-now request parts it carried out (else a lost
    /// status rotates again — for a leak, once more with no grace period) and the leak revocation it owes
    /// (else leaked versions stay readable in a Vault that was down when the status went).
    fn restore_from_data(&self, st: &mut SecretStatus, current: u64, data: &SecretData) {
        if let Some(t) = self.rotate_now.as_deref() {
            let mut done: Vec<&str> = st
                .rotate_now_handled
                .as_deref()
                .map(|h| h.split('|').collect())
                .unwrap_or_default();
            let before = done.len();
            for part in core::handled_in_data(&data.0, t) {
                if !done.contains(&part) {
                    done.push(part);
                }
            }
            if done.len() != before {
                st.rotate_now_handled = Some(done.join("|"));
            }
        }
        if let Some(v) = core::revoked_below_in_data(&data.0).filter(|v| *v <= current)
            && st.revocation.as_ref().is_none_or(|r| r.version < v)
        {
            revoke_below(st, v, self.placed);
            if v == current {
                // The value before it leaked: never handed out as the previous one.
                st.previous_until = None;
            }
        }
    }

    fn check_url(&self) -> &str {
        self.secret.verify.as_ref().map_or("", |v| v.url.as_str())
    }

    /// Whether the current version is the operator's own rotation and still has to pass `verify`.
    fn needs_check(&self, st: &SecretStatus) -> bool {
        self.secret
            .verify
            .as_ref()
            .is_some_and(|v| st.verify_failures < v.attempts)
            && st.verified_version != Some(st.version)
            && st.rotation_id.is_some()
            && st.reason != ROLLED_BACK
    }

    /// One `verify` check of the current version.
    async fn check(&self, st: &mut SecretStatus) {
        let Some(v) = &self.secret.verify else {
            return;
        };
        let endpoint: Option<azora_api::region::ProbeEndpoint> = serde_json::from_value(serde_json::json!({
            "name": "verify",
            "type": if v.url.starts_with("https://") { "HTTPS" } else { "HTTP" },
            "url": v.url,
            "expectedStatus": 200,
        }))
        .ok();
        let result = match endpoint {
            Some(e) => self.room.prober.probe(&e, Duration::from_secs(5)).await,
            None => return,
        };
        if result.ok {
            st.verified_version = Some(st.version);
            st.verify_failures = 0;
            st.phase = Some(SecretPhase::Done);
            if st.reason == VERIFY_FAILING {
                st.reason.clear();
            }
            st.message.clear();
            return;
        }
        st.verify_failures += 1;
        st.phase = Some(SecretPhase::Verifying);
        st.reason = VERIFY_FAILING.into();
        st.message = format!(
            "check {}/{} of version {} failed: GET {}: {}",
            st.verify_failures, v.attempts, st.version, v.url, result.reason
        );
        if st.verify_failures >= v.attempts && st.version <= 1 {
            fail(
                st,
                VERIFY_FAILED,
                format!(
                    "version 1 failed {} checks of {} ({}); there is no earlier version to roll back to",
                    v.attempts, v.url, result.reason
                ),
            );
        } else if st.verify_failures >= v.attempts && revoked(st) {
            let version = st.version;
            fail(
                st,
                VERIFY_FAILED,
                format!(
                    "version {version} failed {} checks of {} ({}); the value before it leaked and is never \
                     rolled back to: fix the consumers, or rotate again",
                    v.attempts, v.url, result.reason
                ),
            );
        } else if st.verify_failures >= v.attempts && rollback_target(st, v.attempts).is_none() {
            let version = st.version;
            fail(
                st,
                VERIFY_FAILED,
                format!(
                    "version {version} failed {} checks of {} ({}); no previous value is kept to roll back to \
                     (its grace period is over, or version {version} was taken over or written by a forced \
                     home move): fix the consumers, or rotate again",
                    v.attempts, v.url, result.reason
                ),
            );
        }
    }

    /// The version to write back when the current one failed its checks `attempts` times in a row.
    fn rollback_due(&self, st: &SecretStatus) -> Option<u64> {
        rollback_target(st, self.secret.verify.as_ref()?.attempts)
    }

    /// Records a rotation from `from` in `st` (the caller writes it to status before the Vault write).
    /// `None`: a target Secret that is not ours stops it before anything is written.
    async fn record(
        &self,
        st: &mut SecretStatus,
        from: u64,
        restores: Option<u64>,
    ) -> Option<PendingRotation> {
        // Regions whose target Secret the operator has synced before hold its own; the others are checked.
        let unchecked: Vec<String> = self
            .placed
            .iter()
            .filter(|r| {
                !st.regions
                    .iter()
                    .any(|e| &e.region == *r && e.synced_version.is_some())
            })
            .cloned()
            .collect();
        if let Some(msg) = sync::collision(self.room, &self.tenant, self.secret, &unchecked).await {
            fail(st, TARGET_CONFLICT, msg);
            return None;
        }
        // A leak reported with the request: the value being replaced must not outlive this rotation.
        let revokes = restores.is_none()
            && self
                .rotate_now
                .as_deref()
                .is_some_and(|t| azora_api::tenant::rotate_now_leaked(t, st.rotate_now_handled.as_deref()));
        let p = PendingRotation {
            id: rotation_id(),
            from_version: from,
            time: now(),
            restores,
            revokes,
            without_previous: false,
        };
        st.pending = Some(p.clone());
        st.phase = Some(SecretPhase::Rotating);
        if let Some(token) = self.rotate_now.as_deref()
            && restores.is_none()
        {
            st.rotate_now_handled = Some(token.to_string());
        }
        if let Some(r) = restores {
            // The verification failure stays the message: it is why this rollback happens.
            st.reason = VERIFY_FAILED.into();
            st.message = format!(
                "rolling back: writing version {r}'s value as version {} in region {}; {}",
                from + 1,
                self.home(),
                st.message
            );
        } else if revokes {
            st.message = format!(
                "the value of version {from} leaked: writing version {} in region {} (no grace period; \
                 older versions destroyed in every region's Vault)",
                from + 1,
                self.home()
            );
            st.reason.clear();
        } else {
            st.message = format!("writing version {} in region {}", from + 1, self.home());
            st.reason.clear();
        }
        Some(p)
    }

    /// The recorded rotation's write: the claim, then the data with check-and-set; returns the data written
    /// (the new current version), or nothing when someone else's version turned out current. `Err`: it did
    /// not happen now (Vault refused or is down); the rotation stays recorded and is tried again after that
    /// long.
    async fn write_home(
        &self,
        home: &Vault,
        p: &PendingRotation,
        st: &mut SecretStatus,
        grace: Duration,
    ) -> Result<Option<SecretData>, Duration> {
        let path = self.path();
        let to = p.from_version + 1;
        let data = match p.restores {
            None => generate(&self.secret.generator),
            Some(rv) => match home.read(path, rv).await {
                Ok(Some(d)) => d,
                Ok(None) => {
                    st.pending = None;
                    fail(
                        st,
                        "VersionMissing",
                        format!(
                            "cannot roll back: version {rv} at {path} in region {} is deleted or destroyed",
                            self.home()
                        ),
                    );
                    return Err(SETTLED);
                }
                Err(e) => {
                    self.room.note(self.home(), &e).await;
                    st.message = format!(
                        "rolling back: reading version {rv} in region {}: {e}",
                        self.home()
                    );
                    return Err(BEHIND);
                }
            },
        };
        let mut data = data;
        data.0.insert(core::DATA_ROTATION.to_string(), p.id.clone());
        // What a lost status must not forget once this version is the newest (see `restore_from_data`); an
        // unfinished revocation only: a finished one replayed would destroy copies that never leaked.
        let revoked_below = if p.revokes {
            Some(to)
        } else {
            st.revocation
                .as_ref()
                .filter(|r| !r.regions.is_empty())
                .map(|r| r.version)
        };
        core::record_in_data(&mut data.0, st.rotate_now_handled.as_deref(), revoked_below);
        // (A confirmation under a second old: CAS keeps two writers of this version apart; the fence keeps a
        // deposed leader from writing after its successor started.)
        if self
            .room
            .ctx
            .fence
            .check_recent(BULK_WRITE_FENCE_AGE)
            .await
            .is_err()
        {
            // No longer the leader: the rotation stays recorded for whoever leads.
            return Err(SETTLED);
        }
        let r = async {
            home.set_custom(path, &claim(&p.id, to, to)).await?;
            home.write(path, &data, p.from_version).await
        }
        .await;
        match r {
            Ok(v) => {
                self.commit(st, p, v, grace).await;
                Ok(Some(data))
            }
            Err(VaultError::CasConflict(_)) => {
                // Someone else's version — or this rotation's own earlier attempt that landed late.
                let (current, custom) = match home.meta(path).await {
                    Ok(Some(m)) => (m.current_version, m.custom),
                    _ => return Err(BEHIND),
                };
                match self.judge(home, current, &custom, p).await {
                    Ok(Written::Done(v)) => {
                        self.commit(st, p, v, grace).await;
                        Ok(None)
                    }
                    Ok(_) => {
                        self.conflict(st, p, current).await;
                        Ok(None)
                    }
                    Err(_) => Err(BEHIND),
                }
            }
            Err(e) => {
                self.room.note(self.home(), &e).await;
                self.room
                    .ctx
                    .metrics
                    .secret_rotations
                    .with_label_values(&["failed"])
                    .inc();
                st.reason = e.reason().to_string();
                st.message = format!(
                    "rotation {} to version {to} not written in region {} yet: {e}",
                    p.id,
                    self.home()
                );
                Err(BEHIND)
            }
        }
    }

    async fn commit(&self, st: &mut SecretStatus, p: &PendingRotation, v: u64, grace: Duration) {
        let t = jiff::Timestamp::now();
        st.version = v;
        st.rotation_id = Some(p.id.clone());
        st.pending = None;
        st.last_rotation_time = Some(Time(t));
        st.previous_until = (p.from_version > 0).then(|| {
            Time(
                t.checked_add(jiff::SignedDuration::try_from(grace).unwrap_or_default())
                    .unwrap_or(t),
            )
        });
        if p.without_previous {
            st.previous_until = None;
        }
        st.phase = Some(SecretPhase::Replicating);
        st.verify_failures = 0;
        // A revocation is forgotten only once done (a Vault that was sealed still has leaked versions).
        if st.revocation.as_ref().is_some_and(|r| r.regions.is_empty()) {
            st.revocation = None;
        }
        // Every region is behind the new version until it is written there.
        for r in &mut st.regions {
            r.message.clear();
        }
        if let Some(rv) = p.restores {
            st.previous_until = None;
            // The value written back is the one that held before: not checked again.
            st.verified_version = Some(v);
            let why = std::mem::take(&mut st.message);
            let why = why.split("; ").skip(1).collect::<Vec<_>>().join("; ");
            st.reason = ROLLED_BACK.into();
            st.message = format!(
                "version {v} restores version {rv}'s value after the new value failed verification: {why}"
            );
            self.room
                .ctx
                .metrics
                .secret_rotations
                .with_label_values(&["rolled_back"])
                .inc();
            warn!(tenant = %self.tenant, secret = %self.secret.name, version = v, restores = rv, "rotation rolled back");
            self.event(
                EventType::Warning,
                "RotationRolledBack",
                &format!("secret {}: {}", self.secret.name, st.message),
            )
            .await;
            return;
        }
        st.reason.clear();
        st.message.clear();
        if p.revokes {
            // The leaked value leaves the target Secrets with this version and every Vault after it.
            st.previous_until = None;
            revoke_below(st, v, self.placed);
            warn!(tenant = %self.tenant, secret = %self.secret.name, version = v, "secret rotated after a leak");
            self.event(
                EventType::Warning,
                "SecretLeakRevoked",
                &format!(
                    "secret {}: version {v} replaces a value reported leaked; no grace period, every older \
                     version is being destroyed in the Vault of {}",
                    self.secret.name,
                    self.placed.join(", ")
                ),
            )
            .await;
        }
        self.room
            .ctx
            .metrics
            .secret_rotations
            .with_label_values(&["rotated"])
            .inc();
        info!(tenant = %self.tenant, secret = %self.secret.name, version = v, rotation = %p.id, "secret rotated");
        // One Event per tenant and pass, naming every secret rotated in it (see `rotated_note`).
        if let Ok(mut r) = self.rotated.lock() {
            r.push((
                self.home().to_string(),
                format!("{} to version {v} (rotation {})", self.secret.name, p.id),
            ));
        }
    }

    async fn conflict(&self, st: &mut SecretStatus, p: &PendingRotation, current: u64) {
        let id = &p.id;
        st.pending = None;
        self.room
            .ctx
            .metrics
            .secret_rotations
            .with_label_values(&["conflict"])
            .inc();
        let msg = format!(
            "rotation {id} of secret {}: version {current} at {} in region {} was written by someone else in between; it was not overwritten and is replicated as the current version",
            self.secret.name,
            self.path(),
            self.home()
        );
        warn!(tenant = %self.tenant, secret = %self.secret.name, version = current, rotation = %id, "rotation conflict: the secret was written by someone else");
        self.adopt(st, current, CONFLICT, msg.clone());
        if p.revokes {
            // The leak is answered all the same: the version written in between replaces the leaked value,
            // and every version before it goes.
            revoke_below(st, current, self.placed);
        }
        self.event(EventType::Warning, "RotationConflict", &msg).await;
    }

    async fn changed_outside(&self, st: &mut SecretStatus, current: u64) {
        let msg = format!(
            "secret {}: version {current} at {} in region {} was written outside the operator (it had version {}); it was not overwritten and is replicated as the current version",
            self.secret.name,
            self.path(),
            self.home(),
            st.version
        );
        warn!(tenant = %self.tenant, secret = %self.secret.name, version = current, "secret written outside the operator");
        self.adopt(st, current, CONFLICT, msg.clone());
        self.event(EventType::Warning, "SecretChangedOutside", &msg).await;
    }

    fn adopt(&self, st: &mut SecretStatus, current: u64, reason: &str, msg: String) {
        st.version = current;
        st.rotation_id = None;
        // The next rotation counts from now: the value just set by hand is not replaced at once.
        st.last_rotation_time = Some(now());
        st.previous_until = None;
        st.phase = Some(SecretPhase::Replicating);
        st.reason = reason.to_string();
        st.message = msg;
    }

    /// Writes the home version to every other placed region's Vault and every placed region's target
    /// Secret; sets the phase from what holds it.
    async fn spread(
        &self,
        st: &mut SecretStatus,
        home: &Vault,
        vaults: &BTreeMap<String, Result<Arc<Vault>, VaultProblem>>,
        written: Option<SecretData>,
        held: Option<(u64, SecretData)>,
    ) {
        let path = self.path();
        let version = st.version;
        let t = jiff::Timestamp::now();
        let drop_previous = st.previous_until.as_ref().is_some_and(|u| t >= u.0);
        let in_step = |r: &String| {
            st.regions.iter().any(|e| {
                &e.region == r && e.vault_version == Some(version) && e.synced_version == Some(version)
            })
        };
        let audit = self
            .room
            .audit_due(&format!("{}/{}", self.tenant, self.secret.name), AUDIT_EVERY);
        let revoking = st
            .revocation
            .as_ref()
            .is_some_and(|r| r.version <= version && !r.regions.is_empty());
        if !audit
            && !drop_previous
            && !revoking
            && self.placed.iter().all(in_step)
            && st.regions.len() == self.placed.len()
        {
            // Every region is recorded holding the version: nothing to read or write.
            self.settle(st, version, false);
            return;
        }
        let held_at = |v: u64| held.as_ref().filter(|(h, _)| *h == v).map(|(_, d)| d.clone());
        let known = written
            .filter(|_| st.pending.is_none())
            .or_else(|| held_at(version));
        let read = match known {
            Some(d) => Ok(Some(d)),
            None => home.read(path, version).await,
        };
        let data = match read {
            Ok(Some(d)) => d,
            Ok(None) => {
                fail(
                    st,
                    "VersionMissing",
                    format!(
                        "version {version} at {path} in region {} is deleted or destroyed",
                        self.home()
                    ),
                );
                return;
            }
            Err(e) => {
                self.room.note(self.home(), &e).await;
                st.reason = e.reason().to_string();
                st.message = format!("reading version {version} in region {}: {e}", self.home());
                return;
            }
        };
        let keep_previous = st.previous_until.as_ref().is_some_and(|u| t < u.0);
        let previous = if keep_previous && version > 1 {
            let held = held_at(version - 1).map(Some);
            let read = match held {
                Some(d) => Ok(d),
                None => home.read(path, version - 1).await,
            };
            match read {
                Ok(p) => p,
                Err(e) => {
                    // Without it the consumers of the previous value would lose it before the grace ends.
                    self.room.note(self.home(), &e).await;
                    st.reason = e.reason().to_string();
                    st.message = format!("reading version {} in region {}: {e}", version - 1, self.home());
                    return;
                }
            }
        } else {
            None
        };
        let id = st
            .rotation_id
            .clone()
            .unwrap_or_else(|| format!("adopted-{version}"));
        self.retire(st, home, &data).await;
        for region in self.placed {
            let idx = match st.regions.iter().position(|r| &r.region == region) {
                Some(i) => i,
                None => {
                    st.regions.push(SecretRegion {
                        region: region.clone(),
                        vault_version: None,
                        synced_version: None,
                        message: String::new(),
                    });
                    st.regions.len() - 1
                }
            };
            let entry = &mut st.regions[idx];
            let mut problems = Vec::new();
            if region == self.home() {
                entry.vault_version = Some(version);
            } else if entry.vault_version != Some(version) || audit {
                match vaults.get(region) {
                    Some(Ok(v)) => match replicate(self.room, v, region, path, &data, audit).await {
                        Ok(()) => {
                            self.room.answered(region).await;
                            entry.vault_version = Some(version);
                        }
                        Err(e) => {
                            self.room.note(region, &e).await;
                            problems.push(format!("vault: {e}"));
                        }
                    },
                    Some(Err(p)) => problems.push(format!("vault: {}", p.message)),
                    None => problems.push("vault: not configured".into()),
                }
            }
            if entry.synced_version != Some(version) || drop_previous || audit {
                match sync::apply(
                    self.room,
                    &self.tenant,
                    self.secret,
                    region,
                    &data,
                    previous.as_ref(),
                    version,
                    &id,
                    audit,
                )
                .await
                {
                    Ok(()) => entry.synced_version = Some(version),
                    Err(e) => {
                        if drop_previous {
                            // Still carries the previous value: synced again next time.
                            entry.synced_version = None;
                        }
                        problems.push(format!("secret: {e}"));
                    }
                }
            }
            entry.message = problems.join("; ");
        }
        drop(data);
        drop(previous);
        if revoking {
            self.revoke(st, home, vaults).await;
        }
        self.settle(st, version, drop_previous);
    }

    /// After a leak: every version older than the current one destroyed in each placed region's Vault (in a
    /// replica, below the version that holds the new value, once it holds it). A region leaves
    /// `revocation.regions` once done; what holds one back is in its entry's message.
    async fn revoke(&self, st: &mut SecretStatus, home: &Vault, vaults: &Vaults) {
        let path = self.path();
        let version = st.version;
        let Some((below, mut left)) = st.revocation.as_ref().map(|r| (r.version, r.regions.clone())) else {
            return;
        };
        if self.room.ctx.fence.check().await.is_err() {
            return;
        }
        let mut done = Vec::new();
        for region in &left {
            let entry = st.regions.iter_mut().find(|e| &e.region == region);
            let outcome = if !self.placed.contains(region) {
                // Left the placement: retirement destroys every version there (whatever it holds); done
                // once it has.
                if entry.is_some() {
                    continue;
                }
                Ok(())
            } else if region == self.home() {
                home.destroy_below(path, below).await.map(|_| ())
            } else if entry.as_ref().is_some_and(|e| e.vault_version == Some(version)) {
                match vaults.get(region) {
                    Some(Ok(v)) => {
                        async {
                            let current = v.meta(path).await?.map_or(0, |m| m.current_version);
                            v.destroy_below(path, current).await.map(|_| ())
                        }
                        .await
                    }
                    // Not usable now: the region's own message says why; tried again next pass.
                    _ => continue,
                }
            } else {
                // The new value is not there yet: its older versions go once it is.
                continue;
            };
            match outcome {
                Ok(()) => done.push(region.clone()),
                Err(e) => {
                    self.room.note(region, &e).await;
                    if let Some(entry) = entry {
                        let m = format!("revoking the leaked versions: {e}");
                        entry.message = if entry.message.is_empty() {
                            m
                        } else {
                            format!("{}; {m}", entry.message)
                        };
                    }
                }
            }
        }
        left.retain(|r| !done.contains(r));
        if let Some(r) = st.revocation.as_mut() {
            r.regions = left;
        }
    }

    /// Regions that held a copy and are no longer placed (residency tightened, failover region dropped):
    /// the copy in their Vault is destroyed (every version) and the target Secret in their cluster removed;
    /// the region leaves the status only once both are gone (else its entry says why, and it is tried
    /// again). A region that no longer exists cannot be reached: it just leaves the status.
    async fn retire(&self, st: &mut SecretStatus, home: &Vault, data: &SecretData) {
        let leaving: Vec<String> = st
            .regions
            .iter()
            .map(|r| r.region.clone())
            .filter(|r| !self.placed.contains(r) && r.as_str() != self.home())
            .collect();
        for region in leaving {
            let copies = retire::Copies {
                tenant: &self.tenant,
                name: &self.secret.name,
                path: Some(self.path()),
                target: Some(&self.secret.target_secret),
                home: self.home(),
                former_home: None,
                // A region a leak was not answered in yet: its copy goes whatever it holds.
                revoked: st
                    .revocation
                    .as_ref()
                    .is_some_and(|r| r.regions.contains(&region)),
            };
            let value = retire::HomeValue {
                vault: home,
                version: st.version,
                data: Some(data),
            };
            let outcome = match self.regions.get(&region) {
                None => Ok(()),
                Some(spec) => retire::clean(self.room, &copies, &region, spec, Some(&value)).await,
            };
            match outcome {
                Ok(()) => {
                    st.regions.retain(|r| r.region != region);
                    info!(tenant = %self.tenant, secret = %self.secret.name, %region,
                          "copies removed from a region the tenant is no longer placed in");
                    self.event(
                        EventType::Normal,
                        "SecretRetired",
                        &format!(
                            "secret {}: the copies in region {region} (no longer placed) are removed",
                            self.secret.name
                        ),
                    )
                    .await;
                }
                Err(why) => {
                    if let Some(e) = st.regions.iter_mut().find(|r| r.region == region) {
                        e.message = format!("no longer placed; removing its copies: {why}");
                    }
                }
            }
        }
    }

    /// The phase, reason and message from what every region holds.
    fn settle(&self, st: &mut SecretStatus, version: u64, drop_previous: bool) {
        // Regions no longer placed (their copies being removed) hold nothing back.
        let placed = |r: &&SecretRegion| self.placed.contains(&r.region);
        let behind_vault: Vec<&SecretRegion> = st
            .regions
            .iter()
            .filter(placed)
            .filter(|r| r.vault_version != Some(version))
            .collect();
        let behind_sync: Vec<&SecretRegion> = st
            .regions
            .iter()
            .filter(placed)
            .filter(|r| r.synced_version != Some(version))
            .collect();
        let describe = |rs: &[&SecretRegion]| {
            rs.iter()
                .map(|r| {
                    if r.message.is_empty() {
                        r.region.clone()
                    } else {
                        format!("{} ({})", r.region, r.message)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let behind = if behind_vault.is_empty() {
            (!behind_sync.is_empty()).then(|| (SecretPhase::Syncing, "target Secret", describe(&behind_sync)))
        } else {
            Some((SecretPhase::Replicating, "Vault", describe(&behind_vault)))
        };
        let revoking: Vec<&String> = st
            .revocation
            .iter()
            .filter(|r| r.version <= version)
            .flat_map(|r| r.regions.iter())
            .collect();
        if let Some((phase, what, regions)) = behind {
            st.phase = Some(phase);
            if !sticky(&st.reason) {
                st.reason = "RegionsBehind".into();
                st.message = format!("version {version} not yet in the {what} of {regions}");
            }
        } else if !revoking.is_empty() {
            // A leak is answered only once no Vault holds the leaked value.
            let regions = revoking.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
            st.phase = Some(SecretPhase::Replicating);
            if !sticky(&st.reason) {
                st.reason = "RevokingLeakedVersions".into();
                st.message = format!(
                    "version {version} everywhere; the versions before it (leaked) are still in the Vault of {regions}"
                );
            }
        } else {
            if drop_previous {
                st.previous_until = None;
            }
            // A conflict stays reported until the next rotation of the operator's own.
            if !sticky(&st.reason) {
                st.reason.clear();
                st.message.clear();
            }
            st.phase = Some(match st.reason.as_str() {
                ROLLED_BACK => SecretPhase::RolledBack,
                VERIFY_FAILED => SecretPhase::Failed,
                _ => SecretPhase::Done,
            });
        }
    }
}

/// A key's newest version and its data (none when the key holds nothing).
async fn newest(v: &Vault, path: &str) -> Result<Option<(u64, SecretData)>, VaultError> {
    let Some(m) = v.meta(path).await? else {
        return Ok(None);
    };
    if m.current_version == 0 {
        return Ok(None);
    }
    Ok(v.read(path, m.current_version)
        .await?
        .map(|d| (m.current_version, d)))
}

/// Writes `data` (the home version, with its rotation id inside) to a replica's key with check-and-set;
/// nothing when the key already holds that data. What the key holds comes from this term's own record of
/// its last write, or (the first time, after any error, and on an `audit`) from reading the key: a write
/// that landed before a crash or a lost answer is found and never made twice. A replica mirrors the home
/// Vault: a version written there by hand is replaced (check-and-set on what was read).
async fn replicate(
    room: &Room,
    v: &Vault,
    region: &str,
    path: &str,
    data: &SecretData,
    audit: bool,
) -> Result<(), VaultError> {
    // Keyed by the Vault's address and mount too: a Region pointed at another Vault starts from a read.
    let key = format!("{region}/{}/{}/{path}", v.address(), v.mount());
    let print = room.fingerprint(data);
    let mut known = room.replica(&key).filter(|_| !audit);
    let mut cas = 0;
    for _ in 0..2 {
        cas = match known {
            Some((_, held)) if held == print => return Ok(()),
            Some((version, _)) => version,
            None => {
                let current = v.meta(path).await?.map_or(0, |m| m.current_version);
                if current > 0 && v.read(path, current).await?.as_ref() == Some(data) {
                    room.set_replica(&key, Some((current, print)));
                    return Ok(());
                }
                current
            }
        };
        if room.ctx.fence.check_recent(BULK_WRITE_FENCE_AGE).await.is_err() {
            return Err(VaultError::Refused("not the leader: not writing".into()));
        }
        match v.write(path, data, cas).await {
            Ok(version) => {
                room.set_replica(&key, Some((version, print)));
                return Ok(());
            }
            // Written meanwhile (by hand, or this term's record is behind): read the key and judge again.
            Err(VaultError::CasConflict(_)) if known.is_some() => {
                room.set_replica(&key, None);
                known = None;
            }
            Err(e) => {
                room.set_replica(&key, None);
                return Err(e);
            }
        }
    }
    Err(VaultError::CasConflict(cas))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_previous_value_still_kept_is_rolled_back_to() {
        let later = Time(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600));
        let failing = SecretStatus {
            name: "db".into(),
            version: 4,
            phase: Some(SecretPhase::Verifying),
            verify_failures: 2,
            previous_until: Some(later),
            rotation_id: Some("ab".into()),
            ..SecretStatus::default()
        };
        assert_eq!(rollback_target(&failing, 2), Some(3));
        // Checks left: not yet.
        assert_eq!(rollback_target(&failing, 3), None);
        // No previous value kept: a forced home move's version, its grace period over, one set by hand.
        let without = SecretStatus {
            previous_until: None,
            ..failing.clone()
        };
        assert_eq!(rollback_target(&without, 2), None);
        // The value before it leaked.
        let leaked = SecretStatus {
            revocation: Some(SecretRevocation {
                version: 4,
                time: now(),
                regions: vec![],
            }),
            ..failing.clone()
        };
        assert_eq!(rollback_target(&leaked, 2), None);
        // Verified already, or version 1.
        let verified = SecretStatus {
            verified_version: Some(4),
            ..failing.clone()
        };
        assert_eq!(rollback_target(&verified, 2), None);
        let first = SecretStatus {
            version: 1,
            ..failing
        };
        assert_eq!(rollback_target(&first, 2), None);
    }

    #[test]
    fn one_rotation_is_named_in_full() {
        let note = rotated_note(&[("africa".into(), "db to version 2 (rotation ab)".into())]);
        assert_eq!(
            note,
            "secret db to version 2 (rotation ab) written in region africa; replicating"
        );
    }

    #[test]
    fn rotations_written_in_different_homes_name_each_home() {
        // (A secret whose home move is not done is written in the home before it.)
        let note = rotated_note(&[
            ("africa".into(), "db to version 3 (rotation ab)".into()),
            ("europe".into(), "api to version 2 (rotation cd)".into()),
        ]);
        assert_eq!(
            note,
            "2 secrets rotated; replicating: db to version 3 (rotation ab) in region africa, \
             api to version 2 (rotation cd) in region europe"
        );
    }

    #[test]
    fn many_rotations_fit_one_event_note_and_say_how_many_are_left_out() {
        let rotated: Vec<(String, String)> = (0..500)
            .map(|i| ("europe".into(), format!("s{i} to version 2 (rotation {i:016x})")))
            .collect();
        let note = rotated_note(&rotated);
        assert!(note.len() <= 1024, "{}", note.len());
        assert!(note.starts_with("500 secrets rotated in region europe; replicating: s0 to version 2"));
        let named = note.matches(" to version 2").count();
        assert!(
            note.ends_with(&format!("and {} more (status.secrets)", 500 - named)),
            "{note}"
        );
        let two = rotated_note(&rotated[..2]);
        assert!(
            two.ends_with(&format!(
                "s0 to version 2 (rotation {:016x}), s1 to version 2 (rotation {:016x})",
                0, 1
            )),
            "{two}"
        );
    }
}
