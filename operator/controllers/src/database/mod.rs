//! Database replication (PostgreSQL): one task per `Database` observes every member every few seconds, keeps
//! the topology (the primary's synchronous rule, every standby streaming from the primary), fences a second
//! primary, and fails the primary over in order — intent recorded under the next epoch, old primary fenced,
//! the standby that has every acknowledged commit promoted, the epoch written into it, the others repointed —
//! when the followed FailoverPolicy's active region moves away from it or its region is Down. The
//! FailoverPolicy's DNS step waits for `status.policyEpoch` (see the failover room). Reads the policies'
//! recorded status and the region verdicts; writes `Database` status under manager `azora-operator/database`.

pub mod agent;
mod observe;
mod promote;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use azora_adapters::kube_status::StatusWriter;
use azora_adapters::member::Session;
use azora_adapters::member_tls::MemberTls;
use azora_adapters::postgres::{PgObservation, PgTarget};
use azora_api::common::Time;
use azora_api::database::{Database, DatabaseSpec, DatabaseStatus, TlsMode};
use azora_api::failover::FailoverPolicyStatus;
use azora_core::conditions::{Desired, merge, same_ignoring_time};
use azora_core::validate::{self, Problem};
use azora_runtime::Context;
use azora_runtime::context::Needs;
use azora_runtime::pipeline::resource_of;
use azora_runtime::term::Stop;
use futures::FutureExt;
use futures::future::BoxFuture;
use kube::api::{Api, DynamicObject};
use tracing::{info, warn};

/// Settings of the database room.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// How often every member is observed.
    pub interval: Duration,
    /// How long a planned failover waits for the chosen standby to receive the fenced primary's last
    /// commit before it is abandoned (and the old primary unfenced).
    pub catch_up: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            catch_up: Duration::from_secs(30),
        }
    }
}

/// This capability's work for one leadership term.
pub fn term(ctx: &Context, cfg: DatabaseConfig, stop: &Stop) -> Vec<BoxFuture<'static, ()>> {
    vec![run(ctx.clone(), cfg, stop.clone()).boxed()]
}

/// The Database kind's API resource.
pub fn resource() -> kube::core::ApiResource {
    resource_of::<Database>()
}

/// One task per Database; the metric series of deleted databases are dropped on every change.
async fn run(ctx: Context, cfg: DatabaseConfig, stop: Stop) {
    let spawn_ctx = ctx.clone();
    let round_ctx = ctx.clone();
    azora_runtime::term::per_object(
        ctx.clone(),
        ctx.caches.databases.clone(),
        "database/db",
        stop,
        None,
        move |name| db_loop(spawn_ctx.clone(), cfg.clone(), name),
        move |names| {
            let keep = |l: &BTreeMap<String, String>| l.get("database").is_some_and(|d| names.contains(d));
            azora_runtime::metrics::retain_series(&round_ctx.metrics.db_lag_seconds, keep);
            azora_runtime::metrics::retain_series(&round_ctx.metrics.db_lag_bytes, keep);
            azora_runtime::metrics::retain_series(&round_ctx.metrics.db_primary, keep);
            async {}
        },
    )
    .await;
}

/// What one database's task remembers between steps.
#[derive(Default)]
struct Memory {
    uid: Option<String>,
    /// The newest status this task wrote (the cache may lag).
    known: Option<DatabaseStatus>,
    /// The resourceVersion that write left.
    known_version: Option<String>,
    /// The resourceVersion this step's view of the status was read at (or written at since): the
    /// precondition of a status write not made from a fresh read, so a view from a lagging cache (a new
    /// term's first pass) never overwrites a newer epoch or failover record.
    basis: Option<String>,
    /// Open sessions per region.
    sessions: HashMap<String, Session>,
    /// When status was last written.
    written: Option<Instant>,
    /// The primary's region and position when last seen (the loss window of an asynchronous failover).
    last_primary: Option<(String, u64)>,
    /// When members that did not answer last got the full connect deadline.
    full_deadline_at: Option<Instant>,
    /// Members that did not answer the last observation.
    unreachable: BTreeSet<String>,
    /// Each standby's replay lag as the primary last reported it (the asynchronous promotion rule, once the
    /// primary is gone).
    last_lag: HashMap<String, (f64, Instant)>,
    /// When a planned move was last abandoned.
    abandoned: Option<Instant>,
    /// Since when the primary's region has been Down while the policy this database follows still routes
    /// there (the policy's own decision is given a moment first).
    primary_down_since: Option<(String, Instant)>,
    /// The standby last repointed for its credentials or TLS alone, and when: the next waits until it
    /// streams again.
    settings_repoint: Option<(String, Instant)>,
    /// The standby whose such repoint was last reported held back (logged once).
    settings_held: Option<String>,
    /// The epoch and primary this task's view was last confirmed to hold against the stored status.
    confirmed: Option<(u64, String)>,
}

/// Everything one step knows.
struct Step<'a> {
    ctx: &'a Context,
    cfg: &'a DatabaseConfig,
    writer: &'a StatusWriter,
    api: &'a Api<DynamicObject>,
    name: &'a str,
    obj: &'a DynamicObject,
    spec: &'a DatabaseSpec,
    targets: BTreeMap<String, PgTarget>,
}

async fn db_loop(ctx: Context, cfg: DatabaseConfig, name: String) {
    let ar = resource();
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ar);
    let writer = StatusWriter::new(ctx.client.clone(), ar, "database", ctx.fence.clone());
    let mut changes = ctx.caches.databases.changed();
    let mut policies = ctx.caches.policies.changed();
    let mut memory = Memory::default();
    loop {
        let Some(obj) = ctx
            .caches
            .databases
            .state()
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some(name.as_str()))
        else {
            return;
        };
        if memory.uid != obj.metadata.uid {
            memory = Memory {
                uid: obj.metadata.uid.clone(),
                ..Memory::default()
            };
        }
        if let Err(e) = step(&ctx, &cfg, &writer, &api, &obj, &name, &mut memory).await {
            warn!(database = %name, error = %e, "database step failed");
            // Read the stored status again before the next decision.
            memory.known = None;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            r = policies.changed() => if r.is_err() { return },
            () = tokio::time::sleep(cfg.interval) => {}
        }
    }
}

fn recorded(obj: &DynamicObject) -> DatabaseStatus {
    obj.data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

/// The newer of the cached status and the one this task wrote: by epoch, then by the failover record.
fn freshest(cached: DatabaseStatus, known: Option<&DatabaseStatus>) -> DatabaseStatus {
    match known {
        Some(k) if k.epoch > cached.epoch => k.clone(),
        Some(k) if k.epoch == cached.epoch && k.last_failover != cached.last_failover => k.clone(),
        Some(k) if k.epoch == cached.epoch => {
            // Same failover state: the members and conditions this task saw last are newer.
            let mut s = cached;
            s.members.clone_from(&k.members);
            s.conditions.clone_from(&k.conditions);
            s.primary_region.clone_from(&k.primary_region);
            s.policy_epoch = s.policy_epoch.max(k.policy_epoch);
            s.blocked_policy_epoch = s.blocked_policy_epoch.max(k.blocked_policy_epoch);
            s
        }
        _ => cached,
    }
}

/// Errors of a step (all retried on the next one).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A status write failed.
    #[error("status write: {0}")]
    Status(#[from] azora_adapters::kube_status::StatusError),
    /// Reading the hub failed.
    #[error("hub: {0}")]
    Hub(#[from] kube::Error),
    /// The stored status moved under us (another writer, or our own view was stale).
    #[error("{0}")]
    Moved(String),
}

async fn step(
    ctx: &Context,
    cfg: &DatabaseConfig,
    writer: &StatusWriter,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    name: &str,
    memory: &mut Memory,
) -> Result<(), StepError> {
    let generation = obj.metadata.generation;
    let cached = recorded(obj);
    // The cache holding what this task wrote (or more, e.g. a spec edit since): its own version.
    memory.basis = match &memory.known {
        Some(k) if k.epoch >= cached.epoch && *k != cached => memory.known_version.clone(),
        _ => obj.metadata.resource_version.clone(),
    };
    let mut status = freshest(cached, memory.known.as_ref());
    let spec: DatabaseSpec = match obj
        .data
        .get("spec")
        .map(|s| serde_json::from_value::<DatabaseSpec>(s.clone()))
    {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            let problems = [Problem {
                kind: validate::ProblemKind::Invalid,
                reason: "InvalidSpec",
                message: format!("spec: {e}"),
            }];
            return write_problems(ctx, writer, name, generation, &mut status, &problems, memory).await;
        }
        None => return Ok(()),
    };
    let policies: BTreeMap<String, azora_api::failover::FailoverPolicySpec> = ctx.caches.policies.specs();
    let secret_names: Vec<String> = spec
        .members
        .iter()
        .map(|m| m.credentials.name.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let world = ctx
        .world(
            Needs {
                tenants: true,
                ..Needs::default()
            },
            &secret_names,
        )
        .await?;
    let problems = validate::database(&spec, &world, &policies);
    if !problems.is_empty() {
        // Nothing is touched while the spec is wrong.
        return write_problems(ctx, writer, name, generation, &mut status, &problems, memory).await;
    }
    let mut targets = BTreeMap::new();
    let mut tls_problems = Vec::new();
    for (i, m) in spec.members.iter().enumerate() {
        let user = ctx.secrets.value(&m.credentials.name, "username").await?;
        let pass = ctx.secrets.value(&m.credentials.name, "password").await?;
        let (Some(user), Some(pass)) = (user, pass) else {
            continue;
        };
        let user = String::from_utf8_lossy(&user).trim().to_string();
        let pass = String::from_utf8_lossy(&pass).to_string();
        let verify = spec.tls.as_ref().is_some_and(|t| t.mode == TlsMode::VerifyFull);
        let ca = if verify {
            ctx.secrets.value(&m.credentials.name, "ca.crt").await?
        } else {
            None
        };
        let tls = match member_tls(&spec, ca) {
            Ok(t) => t,
            Err(why) => {
                tls_problems.push(Problem {
                    kind: validate::ProblemKind::Invalid,
                    reason: "InvalidCaCertificate",
                    message: format!(
                        "members[{i}].credentials: ca.crt of Secret {}: {why}",
                        m.credentials.name
                    ),
                });
                continue;
            }
        };
        if let Some(t) = PgTarget::new(&m.endpoint, &user, &pass, &spec.database_name) {
            let file = spec.tls.as_ref().and_then(|t| t.standby_root_cert_file.clone());
            targets.insert(m.region.clone(), t.with_tls(tls, file));
        }
    }
    if !tls_problems.is_empty() {
        // Nothing is touched with a CA that cannot check anything.
        return write_problems(ctx, writer, name, generation, &mut status, &tls_problems, memory).await;
    }
    let s = Step {
        ctx,
        cfg,
        writer,
        api,
        name,
        obj,
        spec: &spec,
        targets,
    };
    let seen = observe::all(&s, memory).await;
    promote::decide(&s, &seen, &mut status, memory).await
}

/// How a member is reached: the spec's TLS mode, with the `ca.crt` of the member's credentials Secret under
/// `VerifyFull` (checked: PEM certificates).
pub(crate) fn member_tls(spec: &DatabaseSpec, ca: Option<Vec<u8>>) -> Result<MemberTls, String> {
    match spec.tls.as_ref().map(|t| t.mode) {
        None => Ok(MemberTls::Off),
        Some(TlsMode::Require) => Ok(MemberTls::Encrypted),
        Some(TlsMode::VerifyFull) => {
            let ca = ca.ok_or("missing (tls.mode VerifyFull checks the member's certificate against it)")?;
            azora_adapters::member_tls::check_ca(&ca)?;
            Ok(MemberTls::Verified { ca_pem: ca })
        }
    }
}

/// What every member showed in one round (`Err`: unreachable, with a message that names no credential).
type Seen = BTreeMap<String, Result<PgObservation, String>>;

async fn write_problems(
    ctx: &Context,
    writer: &StatusWriter,
    name: &str,
    generation: Option<i64>,
    status: &mut DatabaseStatus,
    problems: &[Problem],
    memory: &mut Memory,
) -> Result<(), StepError> {
    let desired = validate::conditions(problems, "", None);
    write_conditions(ctx, writer, name, generation, status, &desired, memory).await
}

async fn write_conditions(
    ctx: &Context,
    writer: &StatusWriter,
    name: &str,
    generation: Option<i64>,
    status: &mut DatabaseStatus,
    desired: &[Desired],
    memory: &mut Memory,
) -> Result<(), StepError> {
    let merged = merge(&status.conditions, desired, generation, Time::now());
    if same_ignoring_time(&merged, &status.conditions) && status.observed_generation == generation {
        return Ok(());
    }
    status.conditions = merged;
    status.observed_generation = generation;
    write_status(ctx, writer, name, None, status, memory).await
}

/// Writes the whole status (fenced), with `resource_version` as the precondition, or else the version this
/// step's view was read at: a view that lost a race is refused (409) and read again on the next step.
async fn write_status(
    ctx: &Context,
    writer: &StatusWriter,
    name: &str,
    resource_version: Option<&str>,
    status: &DatabaseStatus,
    memory: &mut Memory,
) -> Result<(), StepError> {
    let value = serde_json::to_value(status).unwrap_or_default();
    let basis = resource_version
        .map(str::to_string)
        .or_else(|| memory.basis.clone());
    let written = writer.apply_versioned(name, basis.as_deref(), value).await?;
    ctx.metrics.status_write("database", "written");
    memory.known = Some(status.clone());
    memory.known_version = Some(written.clone());
    memory.basis = Some(written);
    memory.written = Some(Instant::now());
    Ok(())
}

/// Reads the stored status (not the cache) for a compare-and-swap: its resourceVersion and status.
async fn stored(api: &Api<DynamicObject>, name: &str) -> Result<(String, DatabaseStatus), StepError> {
    let fresh = tokio::time::timeout(Duration::from_secs(10), api.get(name))
        .await
        .map_err(|_| StepError::Moved("reading the Database timed out".into()))??;
    let rv = fresh.metadata.resource_version.clone().unwrap_or_default();
    Ok((rv, recorded(&fresh)))
}

/// The followed policy's recorded active region and epoch.
fn policy_route(ctx: &Context, spec: &DatabaseSpec) -> Option<(Option<String>, u64)> {
    policy_status(ctx, spec).map(|st| (st.active_region, st.epoch))
}

/// The followed policy's recorded status.
fn policy_status(ctx: &Context, spec: &DatabaseSpec) -> Option<FailoverPolicyStatus> {
    let name = spec.follow_policy.as_ref()?;
    let obj = ctx
        .caches
        .policies
        .state()
        .into_iter()
        .find(|o| o.metadata.name.as_deref() == Some(name.as_str()))?;
    Some(
        obj.data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default(),
    )
}

/// Publishes an Event about the Database.
async fn event(s: &Step<'_>, warning: bool, reason: &str, note: &str) {
    let kind = if warning {
        kube::runtime::events::EventType::Warning
    } else {
        kube::runtime::events::EventType::Normal
    };
    info!(database = %s.name, reason, note, "database event");
    azora_runtime::events::publish(s.ctx, s.obj, kind, reason, note, "Replication").await;
}
