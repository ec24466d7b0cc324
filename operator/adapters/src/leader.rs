//! Leader election on a `coordination.k8s.io/v1` Lease (IO), and the `Fence` every write goes through.
//!
//! Guarantees: at most one replica believes it leads at any instant, provided clocks tick at the same rate
//! (the holder stops leading `margin` before any standby may take over); a holder that dies is replaced
//! after `duration` plus one retry period; the Lease's `leaseTransitions` is the fencing epoch, and
//! `Fence::check` confirms against the API server that the epoch still holds before a write goes out, so a
//! deposed leader's late write is refused.

use std::time::{Duration, Instant};

use azora_core::lease::{Decision, LeaseRecord, Observed, decide, observe};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

/// Deadline of one election step (read and write of the Lease).
const STEP_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline of the fence's confirmation read.
const FENCE_DEADLINE: Duration = Duration::from_secs(5);

/// How old a fence confirmation may be for writes made in bulk (object copies, a rotation's Vault writes):
/// half the default lease margin (2 s), so a deposed leader stops writing before a successor can start. A
/// confirmation is one quorum read of the Lease; ten thousand writes a second share one a second.
pub const BULK_WRITE_FENCE_AGE: Duration = Duration::from_secs(1);

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
    /// How long a lease lives without renewal.
    pub duration: Duration,
    /// How often the holder renews and standbys retry.
    pub retry_period: Duration,
    /// The holder stops leading this long before a standby could take over.
    pub margin: Duration,
}

impl LeaseConfig {
    /// Defaults: 10 s lease, 2 s retry, 2 s margin — a dead holder is replaced within 12 s.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            margin: Duration::from_secs(2),
        }
    }
}

/// Leadership held by this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// Fencing epoch (`leaseTransitions`).
    pub epoch: u64,
    /// Local instant after which this replica must consider itself deposed unless renewed.
    pub valid_until: Instant,
}

/// Errors of the election loop and the fence.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum LeaderError {
    /// Talking to the API server failed.
    #[error("lease request failed")]
    Api(#[source] kube::Error),
    /// This replica does not lead.
    #[error("not the leader")]
    NotLeader,
    /// The local lease validity ran out before a renewal.
    #[error("lease expired locally before renewal")]
    Expired,
    /// A lease request did not answer within its deadline.
    #[error("lease request timed out")]
    Timeout,
    /// The confirmation read another write was waiting on failed just now (see `Fence::check_recent`).
    #[error("the lease could not be confirmed just now")]
    Unconfirmed,
    /// Another replica holds the lease now: this replica was deposed.
    #[error("deposed: lease now held by {holder:?} at epoch {epoch}, ours was {ours}")]
    Deposed {
        holder: Option<String>,
        epoch: u64,
        ours: u64,
    },
}

impl LeaderError {
    /// Fixed category for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        self.into()
    }
}

fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renew_marker: spec.renew_time.map(|t| t.0.to_string()),
        duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(10).max(1) as u64),
        transitions: spec.lease_transitions.unwrap_or(0).max(0) as u64,
    }
}

/// Runs the election until `shutdown` fires, publishing leadership changes on `tx`. On shutdown a held
/// lease is released so a standby takes over at once.
pub async fn run(
    client: Client,
    cfg: LeaseConfig,
    tx: watch::Sender<Option<Leadership>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut observed: Option<Observed> = None;
    loop {
        let sent_at = Instant::now();
        // Leadership ends on the local expiry even when the renewal hangs: the step races the deadline.
        let held_until = tx.borrow().map(|l| l.valid_until);
        let step = tokio::time::timeout(STEP_DEADLINE, step(&api, &cfg, &mut observed, sent_at));
        let outcome = match held_until {
            Some(until) => tokio::select! {
                r = step => r.unwrap_or(Err(LeaderError::Timeout)),
                () = tokio::time::sleep_until(until.into()) => {
                    warn!(identity = %cfg.identity, "lease renewal did not answer before the local expiry; stepping down");
                    tx.send_replace(None);
                    continue;
                }
            },
            None => step.await.unwrap_or(Err(LeaderError::Timeout)),
        };
        match outcome {
            Ok(Some(epoch)) => {
                let l = Leadership {
                    epoch,
                    valid_until: sent_at + cfg.duration - cfg.margin,
                };
                if tx.borrow().map(|o| o.epoch) != Some(epoch) {
                    info!(identity = %cfg.identity, epoch, "acquired leadership");
                }
                tx.send_replace(Some(l));
            }
            Ok(None) => {
                if tx.borrow().is_some() {
                    warn!(identity = %cfg.identity, "lost leadership");
                }
                tx.send_replace(None);
            }
            Err(e) => {
                warn!(error = &e as &dyn std::error::Error, "lease step failed");
                let expired = tx.borrow().is_some_and(|l| Instant::now() >= l.valid_until);
                if expired {
                    warn!(identity = %cfg.identity, "lease could not be renewed in time; stepping down");
                    tx.send_replace(None);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.retry_period) => {}
            _ = shutdown.changed() => break,
        }
    }
    if tx.borrow().is_some() {
        tx.send_replace(None);
        if let Err(e) = release(&api, &cfg).await {
            warn!(
                error = &e as &dyn std::error::Error,
                "could not release the lease"
            );
        } else {
            info!(identity = %cfg.identity, "released the lease");
        }
    }
}

/// One round: read, decide, write. Returns the epoch when this replica leads afterwards.
async fn step(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Option<Observed>,
    now: Instant,
) -> Result<Option<u64>, LeaderError> {
    let current = api.get_opt(&cfg.name).await.map_err(LeaderError::Api)?;
    if let Some(l) = &current {
        *observed = Some(observe(observed.take(), record_of(l), now));
    }
    let decision = decide(&cfg.identity, observed.as_ref(), now);
    let epoch = match decision {
        Decision::StandBy { .. } => return Ok(None),
        Decision::Renew { epoch } | Decision::Acquire { epoch } => epoch,
    };
    let stamp = MicroTime(jiff::Timestamp::now());
    let acquiring = matches!(decision, Decision::Acquire { .. });
    let mut lease = current.clone().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            ..Default::default()
        },
        spec: Some(LeaseSpec::default()),
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(cfg.identity.clone());
    spec.lease_duration_seconds = Some(cfg.duration.as_secs() as i32);
    spec.renew_time = Some(stamp.clone());
    spec.lease_transitions = Some(epoch as i32);
    if acquiring {
        spec.acquire_time = Some(stamp);
    }
    let written = if current.is_some() {
        // `replace` carries the resourceVersion we read: if anyone wrote in between, we get 409 and lose.
        api.replace(&cfg.name, &PostParams::default(), &lease).await
    } else {
        api.create(&PostParams::default(), &lease).await
    };
    match written {
        Ok(l) => {
            *observed = Some(observe(observed.take(), record_of(&l), now));
            Ok(Some(epoch))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(LeaderError::Api(e)),
    }
}

async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    let Ok(got) = tokio::time::timeout(STEP_DEADLINE, api.get_opt(&cfg.name)).await else {
        return Ok(());
    };
    let Some(mut lease) = got? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    match tokio::time::timeout(
        STEP_DEADLINE,
        api.replace(&cfg.name, &PostParams::default(), &lease),
    )
    .await
    {
        Ok(r) => r.map(|_| ()),
        Err(_) => Ok(()),
    }
}

/// The last fence confirmation (when its read was sent, the epoch) and the last withdrawal.
type Confirmation = (Option<(Instant, u64)>, Option<Instant>);

/// The check every write passes through: this replica leads, its lease is locally valid, and the API
/// server confirms that the lease still carries its identity and epoch.
#[derive(Clone)]
pub struct Fence {
    api: Api<Lease>,
    name: String,
    identity: String,
    rx: watch::Receiver<Option<Leadership>>,
    /// The last confirmation (when its read was sent, the epoch) and the last withdrawal: a confirmation
    /// sent before a withdrawal never counts.
    confirmed: std::sync::Arc<std::sync::Mutex<Confirmation>>,
    /// Held by the one `check_recent` whose confirmation read is in flight: the others wait for its answer
    /// instead of each sending their own read.
    refresh: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Fence {
    /// A fence over the given Lease and leadership channel.
    pub fn new(client: Client, cfg: &LeaseConfig, rx: watch::Receiver<Option<Leadership>>) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            name: cfg.name.clone(),
            identity: cfg.identity.clone(),
            rx,
            confirmed: Default::default(),
            refresh: Default::default(),
        }
    }

    /// The leadership this replica currently believes it has.
    pub fn leadership(&self) -> Option<Leadership> {
        *self.rx.borrow()
    }

    /// Checks the fence; returns the epoch to write under.
    pub async fn check(&self) -> Result<u64, LeaderError> {
        let Some(l) = self.leadership() else {
            return Err(LeaderError::NotLeader);
        };
        if Instant::now() >= l.valid_until {
            return Err(LeaderError::Expired);
        }
        // A confirmation counts from when the read was sent (what it confirms may be older than its answer),
        // and a failed check withdraws the last one: no bulk write rides on it after a deposition was seen.
        let sent = Instant::now();
        let read = tokio::time::timeout(FENCE_DEADLINE, self.api.get(&self.name)).await;
        let lease = match read {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                self.withdraw();
                return Err(LeaderError::Api(e));
            }
            Err(_) => {
                self.withdraw();
                return Err(LeaderError::Timeout);
            }
        };
        let rec = record_of(&lease);
        if rec.holder.as_deref() != Some(self.identity.as_str()) || rec.transitions != l.epoch {
            self.withdraw();
            return Err(LeaderError::Deposed {
                holder: rec.holder,
                epoch: rec.transitions,
                ours: l.epoch,
            });
        }
        if let Ok(mut c) = self.confirmed.lock()
            && c.1.is_none_or(|w| w < sent)
        {
            c.0 = Some((sent, l.epoch));
        }
        Ok(l.epoch)
    }

    fn withdraw(&self) {
        if let Ok(mut c) = self.confirmed.lock() {
            *c = (None, Some(Instant::now()));
        }
    }

    /// Like `check`, but a confirmation by the API server younger than `max_age` (under the same epoch,
    /// with the lease still locally valid) stands in for a new read. For bulk writes (object copies):
    /// `max_age` must stay below the lease's safety margin, so a deposed leader stops before a successor
    /// can start.
    ///
    /// Callers that find no recent confirmation share one read: one sends it while the others wait for its
    /// answer (a thousand writers whose confirmation aged out at once would otherwise send a thousand
    /// reads). A read sent after a waiter began waiting confirms for it as its own `check` would have,
    /// however long its answer took. A waiter whose read failed meanwhile gets `Unconfirmed` at once:
    /// nobody queues behind a string of timeouts.
    pub async fn check_recent(&self, max_age: Duration) -> Result<u64, LeaderError> {
        // The epoch, when a confirmation under it was sent within `max_age` (or after `since`) and the
        // lease is locally valid.
        let recent = |since: Option<Instant>| -> Option<u64> {
            let l = self.leadership().filter(|l| Instant::now() < l.valid_until)?;
            self.confirmed
                .lock()
                .ok()
                .and_then(|c| c.0)
                .filter(|(at, epoch)| {
                    *epoch == l.epoch && (at.elapsed() < max_age || since.is_some_and(|s| *at >= s))
                })
                .map(|_| l.epoch)
        };
        let Some(l) = self.leadership() else {
            return Err(LeaderError::NotLeader);
        };
        if Instant::now() >= l.valid_until {
            return Err(LeaderError::Expired);
        }
        if let Some(epoch) = recent(None) {
            return Ok(epoch);
        }
        let waited_from = Instant::now();
        let _turn = self.refresh.lock().await;
        if let Some(epoch) = recent(Some(waited_from)) {
            return Ok(epoch);
        }
        if self.leadership().is_none() {
            return Err(LeaderError::NotLeader);
        }
        let failed_meanwhile = self
            .confirmed
            .lock()
            .ok()
            .and_then(|c| c.1)
            .is_some_and(|w| w >= waited_from);
        if failed_meanwhile {
            return Err(LeaderError::Unconfirmed);
        }
        self.check().await
    }
}
