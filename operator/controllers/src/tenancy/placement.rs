//! The Tenant controller: validate (pure) → record intent (finalizer) → place in every allowed region's
//! cluster with server-side apply, repairing drift and removing what is no longer wanted (only when the
//! cache shows a difference, so a resync with nothing to change writes nothing) → status with per-region
//! sync state, active region and conditions. Deletion runs through the finalizer: every region is cleaned
//! independently; an unreachable one is retried and reported without holding up the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azora_adapters::kube_status::StatusWriter;
use azora_api::Time;
use azora_api::common::find_condition;
use azora_api::tenant::{RegionSync, SyncState, TenantSpec};
use azora_core::conditions::{Desired, types};
use azora_core::placement::Placement;
use azora_core::placement::place;
use azora_core::tenancy::{
    self, ManagedKind, NAMESPACE_CONFLICT, ObjectKey, RegionOutcome, desired_objects, namespace_of, owned_by,
    plan_region, tenant_name_problem,
};
use azora_core::tenant_status;
use azora_core::validate::{self, Problem, ProblemKind};
use azora_core::world::World;
use kube::ResourceExt as _;
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tracing::{info, instrument, warn};

use azora_adapters::leader::LeaderError;
use azora_runtime::clusters::Cluster;
use azora_runtime::pipeline::{
    Backoff, Kind, KindCtx, ReconcileError, current_conditions, error_policy as generic_error_policy,
    plan_status, write_if_changed,
};
use azora_runtime::{Context, Needs};

use super::TenantKind;
use super::cleanup::{add_finalizer, cleanup};
use super::replication::Replication;

/// Finalizer that makes deletion clean every region first.
pub const FINALIZER: &str = "azora.io/tenant-cleanup";
const RESYNC: Duration = Duration::from_secs(300);
pub(super) const RETRY: Duration = Duration::from_secs(5);
/// Re-check of an invalid or unresolved tenant (references may appear).
const RETRY_INVALID: Duration = Duration::from_secs(10);

/// The Tenant controller's state.
pub struct TenantCtx {
    /// Shared context.
    pub ctx: Context,
    /// Status writer (manager `azora-operator/tenant`).
    pub writer: StatusWriter,
    /// Replication state (shared with the replication loop of this room).
    pub replication: Replication,
    /// The generic error policy's per-object backoff.
    kc: Arc<KindCtx>,
}

impl TenantCtx {
    /// The controller's state.
    pub fn new(ctx: Context, writer: StatusWriter, replication: Replication) -> Self {
        let kc = Arc::new(KindCtx {
            ctx: ctx.clone(),
            writer: writer.clone(),
            failures: Backoff::default(),
        });
        Self {
            ctx,
            writer,
            replication,
            kc,
        }
    }
}

/// Error policy: the generic one (exponential, jittered backoff per tenant).
pub fn error_policy(obj: Arc<DynamicObject>, err: &ReconcileError, tc: Arc<TenantCtx>) -> Action {
    generic_error_policy::<TenantKind>(obj, err, tc.kc.clone())
}

/// Checks the fence once per reconcile, and only when something is about to be written.
pub(super) struct LazyFence<'a> {
    ctx: &'a Context,
    checked: OnceCell<Result<u64, Arc<LeaderError>>>,
}

impl LazyFence<'_> {
    pub(super) async fn check(&self) -> Result<(), Arc<LeaderError>> {
        self.checked
            .get_or_init(|| async { self.ctx.fence.check().await.map_err(Arc::new) })
            .await
            .clone()
            .map(|_| ())
    }
}

fn current_regions(obj: &DynamicObject) -> Vec<RegionSync> {
    obj.data
        .get("status")
        .and_then(|s| s.get("regions"))
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default()
}

pub(super) fn has_finalizer(obj: &DynamicObject) -> bool {
    obj.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER)
}

/// A fetched Tenant: its spec and the world it is judged in.
struct Fetched {
    spec: TenantSpec,
    world: World,
}

/// A Tenant that passed validation: where it goes, and the validation conditions.
struct Checked {
    spec: TenantSpec,
    placement: Placement,
    validation: Vec<Desired>,
}

/// What applying found in every region.
struct Applied {
    outcomes: Vec<RegionOutcome>,
    removing: Vec<(String, String)>,
    recheck: bool,
}

/// Reconciles one Tenant: fetch → validate → record intent → apply → status, each a step below.
#[instrument(skip(obj, tc), fields(controller = "tenant", object = obj.metadata.name.as_deref().unwrap_or("")))]
pub async fn reconcile(obj: Arc<DynamicObject>, tc: Arc<TenantCtx>) -> Result<Action, ReconcileError> {
    let ctx = &tc.ctx;
    let _timer = ctx.metrics.timer(TenantKind::NAME);
    let name = obj.metadata.name.clone().unwrap_or_default();
    let fence = LazyFence {
        ctx,
        checked: OnceCell::new(),
    };
    if obj.metadata.deletion_timestamp.is_some() {
        return cleanup(&obj, &name, &tc, &fence).await;
    }
    let fetched = match fetch(ctx, &obj).await? {
        Ok(f) => f,
        Err(malformed) => return report_only(&tc, &obj, malformed, Action::await_change()).await,
    };
    let checked = match validate_tenant(&name, fetched) {
        Ok(c) => c,
        // Nothing is created or removed for a tenant the operator cannot trust; the status says why.
        Err(invalid) => return report_only(&tc, &obj, invalid, Action::requeue(RETRY_INVALID)).await,
    };
    record_intent(ctx, &fence, &obj).await?;
    // The operator's access to the tenant's Secrets stays while any copy of a secret is still to be synced
    // or removed (a secret dropped from the spec is retired through it).
    let secrets_access = !checked.spec.secrets.is_empty()
        || ["/status/secrets", "/status/retiringSecrets"].iter().any(|p| {
            obj.data
                .pointer(p)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        });
    let applied = apply(ctx, &fence, &name, &checked, secrets_access).await;
    // Right after a start the regional caches are still filling: do not overwrite a known state with
    // "connecting" (that would be a write per tenant on every restart); the caches wake every tenant.
    if !current_regions(&obj).is_empty() && applied.outcomes.iter().any(|o| o.message == NOT_KNOWN_YET) {
        ctx.metrics.reconciled(TenantKind::NAME, "deferred");
        return Ok(Action::requeue(RETRY));
    }
    let (desired, fields) = plan_tenant_status(&tc, &obj, &name, checked, &applied);
    write_status(&tc, &obj, &desired, fields, obj.metadata.generation, Time::now()).await?;
    ctx.metrics.reconciled(TenantKind::NAME, "ok");
    let settled = applied.outcomes.iter().all(|o| o.state == SyncState::Synced)
        && applied.removing.is_empty()
        && !applied.recheck;
    Ok(Action::requeue(if settled { RESYNC } else { RETRY }))
}

/// What a Tenant's status says when nothing is done for it (malformed or invalid spec).
struct ReportOnly {
    desired: Vec<Desired>,
    fields: serde_json::Map<String, Value>,
}

/// Fetch (IO): the spec, and the world from the caches. A spec that does not parse is reported, not an
/// error.
async fn fetch(ctx: &Context, obj: &DynamicObject) -> Result<Result<Fetched, ReportOnly>, ReconcileError> {
    let spec =
        match serde_json::from_value::<TenantSpec>(obj.data.get("spec").cloned().unwrap_or(Value::Null)) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("spec does not match the schema: {e}");
                return Ok(Err(ReportOnly {
                    desired: vec![
                        Desired::fail(types::SPEC_VALID, "MalformedSpec", msg.clone()),
                        Desired::fail(types::READY, "MalformedSpec", msg),
                    ],
                    fields: serde_json::Map::new(),
                }));
            }
        };
    let world = ctx
        .world(Needs::default(), &[])
        .await
        .map_err(ReconcileError::Fetch)?;
    Ok(Ok(Fetched { spec, world }))
}

/// Validate (pure): the checks plus a name that fits a namespace; where it is placed.
fn validate_tenant(name: &str, f: Fetched) -> Result<Checked, ReportOnly> {
    let mut problems: Vec<Problem> = TenantKind::check(&f.spec, &f.world);
    if let Some(msg) = tenant_name_problem(name) {
        problems.push(Problem {
            kind: ProblemKind::Invalid,
            reason: "InvalidName",
            message: msg,
        });
    }
    let valid = !problems.iter().any(|p| p.kind == ProblemKind::Invalid);
    let resolved = !problems.iter().any(|p| p.kind == ProblemKind::Unresolved);
    let validation = validate::conditions(
        &problems,
        "placed and in sync in every region it may live in",
        None,
    );
    if !valid || !resolved {
        return Err(ReportOnly {
            desired: validation,
            fields: TenantKind::status_fields(&f.spec, &f.world, valid),
        });
    }
    Ok(Checked {
        placement: place(&f.spec, &f.world),
        spec: f.spec,
        validation,
    })
}

/// Record intent before acting (IO, fenced): the finalizer guarantees cleanup of whatever gets placed.
async fn record_intent(
    ctx: &Context,
    fence: &LazyFence<'_>,
    obj: &DynamicObject,
) -> Result<(), ReconcileError> {
    if has_finalizer(obj) {
        return Ok(());
    }
    fence.check().await.map_err(fenced)?;
    add_finalizer(ctx, obj).await
}

/// Apply (IO): every placed region synced concurrently, and regions no longer placed emptied.
async fn apply(
    ctx: &Context,
    fence: &LazyFence<'_>,
    name: &str,
    c: &Checked,
    secrets_access: bool,
) -> Applied {
    let recheck = std::sync::atomic::AtomicBool::new(false);
    let syncs = c
        .placement
        .placed
        .iter()
        .map(|region| sync_region(ctx, fence, name, &c.spec, secrets_access, region, &recheck));
    let outcomes = futures::future::join_all(syncs).await;
    let mut removing = Vec::new();
    for cluster in ctx.handles.clusters.all() {
        if c.placement.placed.contains(&cluster.region) {
            continue;
        }
        if let Some(msg) = unplace(ctx, fence, name, &cluster).await {
            removing.push((cluster.region.clone(), msg));
        }
    }
    Applied {
        outcomes,
        removing,
        recheck: recheck.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// Plan status (pure, `azora_core::tenant_status`) from what applying found and replication measured.
fn plan_tenant_status(
    tc: &TenantCtx,
    obj: &DynamicObject,
    name: &str,
    c: Checked,
    applied: &Applied,
) -> (Vec<Desired>, serde_json::Map<String, Value>) {
    let replicas = tc.replication.of(name);
    let source = tc
        .replication
        .source_of(name)
        .unwrap_or_else(|| c.spec.home_region.clone());
    let before = current_regions(obj);
    let verdicts = tc.ctx.recorded_verdicts();
    let routed_to = tc.ctx.routed_to(name);
    let recorded_replicated = find_condition(&current_conditions(obj), "Replicated").map(|c| Desired {
        type_: "Replicated",
        status: c.status,
        reason: c.reason.clone(),
        message: c.message.clone(),
    });
    let planned = tenant_status::plan(
        c.validation,
        &tenant_status::Observed {
            generation: obj.metadata.generation,
            now: Time::now(),
            before: &before,
            placement: &c.placement,
            outcomes: &applied.outcomes,
            removing: &applied.removing,
            replicas: &replicas,
            source: &source,
            recorded_replicated,
            verdicts: &verdicts,
            routed_to: routed_to.as_deref(),
        },
    );
    let mut fields = serde_json::Map::new();
    fields.insert("placedRegions".into(), json!(c.placement.placed));
    fields.insert("regions".into(), json!(planned.regions));
    fields.insert("activeRegion".into(), json!(planned.active_region));
    (planned.conditions, fields)
}

/// Writes what an untrusted tenant's status says, and nothing else.
async fn report_only(
    tc: &TenantCtx,
    obj: &DynamicObject,
    r: ReportOnly,
    next: Action,
) -> Result<Action, ReconcileError> {
    write_status(
        tc,
        obj,
        &r.desired,
        r.fields,
        obj.metadata.generation,
        Time::now(),
    )
    .await?;
    tc.ctx.metrics.reconciled(TenantKind::NAME, "ok");
    Ok(next)
}

pub(super) fn fenced(e: Arc<LeaderError>) -> ReconcileError {
    ReconcileError::Fenced(e)
}

pub(super) fn outcome(region: &str, state: SyncState, message: impl Into<String>) -> RegionOutcome {
    RegionOutcome {
        region: region.to_string(),
        state,
        message: message.into(),
        reason: None,
    }
}

/// Message of a region whose cluster this process has not finished connecting to (just started).
pub(super) const NOT_KNOWN_YET: &str = "connecting to the regional cluster";

/// A cluster that can take requests now, or the outcome explaining why not.
fn usable(ctx: &Context, region: &str) -> Result<Arc<Cluster>, RegionOutcome> {
    let cluster = match ctx.handles.clusters.get(region) {
        Ok(c) => c,
        Err(Some(why)) => return Err(outcome(region, SyncState::Error, why)),
        Err(None) => return Err(outcome(region, SyncState::Pending, NOT_KNOWN_YET)),
    };
    match cluster.reachable() {
        None => Err(outcome(region, SyncState::Pending, NOT_KNOWN_YET)),
        Some(r) if !r.reachable => Err(outcome(
            region,
            SyncState::Error,
            format!("regional cluster unreachable: {}", r.message),
        )),
        Some(_) if !cluster.synced() => match cluster.sync_problem() {
            // Not "connecting" forever: past the bound, a watch that never syncs is an error.
            Some(problem) => Err(outcome(region, SyncState::Error, problem)),
            None => Err(outcome(region, SyncState::Pending, NOT_KNOWN_YET)),
        },
        Some(_) => Ok(cluster),
    }
}

async fn sync_region(
    ctx: &Context,
    fence: &LazyFence<'_>,
    tenant: &str,
    spec: &TenantSpec,
    secrets_access: bool,
    region: &str,
    recheck: &std::sync::atomic::AtomicBool,
) -> RegionOutcome {
    let cluster = match usable(ctx, region) {
        Ok(c) => c,
        Err(o) => {
            ctx.metrics
                .tenant_syncs
                .with_label_values(&[region, "unavailable"])
                .inc();
            return o;
        }
    };
    let desired = desired_objects(tenant, spec, region, secrets_access);
    let live = cluster.live_of(tenant);
    let live_json: BTreeMap<ObjectKey, Value> = live
        .iter()
        .filter_map(|(k, o)| Some((k.clone(), serde_json::to_value(&**o).ok()?)))
        .collect();
    let keys = live_json.keys().cloned().collect();
    let mut plan = plan_region(&desired, |k| live_json.get(k), &keys);
    // Applied moments ago and not yet seen by the watch: not drift; the requeue re-checks it.
    let before = plan.apply.len();
    let rv_of = |k: &ObjectKey| {
        live_json
            .get(k)
            .and_then(|v| v["metadata"]["resourceVersion"].as_str())
            .map(str::to_string)
    };
    plan.apply
        .retain(|d| !cluster.in_flight(&d.key, &d.body, rv_of(&d.key).as_deref()));
    // The namespace is not ours yet: never adopt one that exists without our labels for this tenant.
    let ns_key = ObjectKey {
        kind: ManagedKind::Namespace,
        namespace: None,
        name: namespace_of(tenant),
    };
    if !live.contains_key(&ns_key)
        && let Some(ns_body) = plan
            .apply
            .iter()
            .find(|d| d.key == ns_key)
            .map(|d| d.body.clone())
    {
        let conflict = |what: &str| RegionOutcome {
            reason: Some(NAMESPACE_CONFLICT),
            ..outcome(
                region,
                SyncState::Error,
                format!(
                    "namespace {} {what} and is not managed by azora for tenant {tenant}; not adopting it",
                    ns_key.name
                ),
            )
        };
        let ours = |ns: &DynamicObject| owned_by(ns.labels(), tenant);
        match cluster.get(&ns_key).await {
            Ok(Some(ns)) if !ours(&ns) => {
                ctx.metrics
                    .tenant_syncs
                    .with_label_values(&[region, "conflict"])
                    .inc();
                return conflict("exists");
            }
            Ok(Some(_)) => {}
            // Absent: create it (POST), so a namespace someone creates at the same moment is never adopted
            // by the apply below.
            Ok(None) => {
                if let Err(e) = fence.check().await {
                    return outcome(region, SyncState::Pending, format!("not writing: {e}"));
                }
                match cluster.create(&ns_key, &ns_body).await {
                    // Created exactly as desired: nothing more to apply to it.
                    Ok(true) => {
                        ctx.metrics
                            .regional_writes
                            .with_label_values(&[region, "apply"])
                            .inc();
                        plan.apply.retain(|d| d.key != ns_key);
                    }
                    Ok(false) => match cluster.get(&ns_key).await {
                        Ok(Some(ns)) if ours(&ns) => {}
                        Ok(_) => {
                            ctx.metrics
                                .tenant_syncs
                                .with_label_values(&[region, "conflict"])
                                .inc();
                            return conflict("was just created by someone else");
                        }
                        Err(e) => {
                            return outcome(
                                region,
                                SyncState::Error,
                                format!("reading namespace {}: {e}", ns_key.name),
                            );
                        }
                    },
                    Err(e) => {
                        return outcome(
                            region,
                            SyncState::Error,
                            format!("creating namespace {}: {e}", ns_key.name),
                        );
                    }
                }
            }
            Err(e) => {
                return outcome(
                    region,
                    SyncState::Error,
                    format!("reading namespace {}: {e}", ns_key.name),
                );
            }
        }
    }
    let prior: BTreeMap<ObjectKey, String> = plan
        .apply
        .iter()
        .filter_map(|d| Some((d.key.clone(), rv_of(&d.key)?)))
        .collect();
    if plan.apply.len() != before {
        recheck.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if plan.is_noop() {
        ctx.metrics
            .tenant_syncs
            .with_label_values(&[region, "noop"])
            .inc();
        return outcome(region, SyncState::Synced, "");
    }
    if let Err(e) = fence.check().await {
        return outcome(region, SyncState::Pending, format!("not writing: {e}"));
    }
    let result = apply_plan(ctx, &cluster, &plan, &prior).await;
    match result {
        Ok(()) => {
            ctx.metrics
                .tenant_syncs
                .with_label_values(&[region, "applied"])
                .inc();
            let what: Vec<String> = plan.apply.iter().map(|d| d.key.to_string()).collect();
            info!(%region, applied = ?what, deleted = plan.delete.len(), "tenant objects brought in sync");
            outcome(region, SyncState::Synced, "")
        }
        Err(e) => {
            ctx.metrics
                .tenant_syncs
                .with_label_values(&[region, "error"])
                .inc();
            warn!(%region, error = %e, "tenant sync failed");
            outcome(region, SyncState::Error, e)
        }
    }
}

async fn apply_plan(
    ctx: &Context,
    cluster: &Cluster,
    plan: &tenancy::RegionPlan,
    prior: &BTreeMap<ObjectKey, String>,
) -> Result<(), String> {
    let region = cluster.region.as_str();
    let (ns, rest): (Vec<_>, Vec<_>) = plan
        .apply
        .iter()
        .partition(|d| d.key.kind == ManagedKind::Namespace);
    let apply = |d: &tenancy::DesiredObject| {
        ctx.metrics
            .regional_writes
            .with_label_values(&[region, "apply"])
            .inc();
        let (key, body) = (d.key.clone(), d.body.clone());
        let prior_rv = prior.get(&key).cloned();
        async move {
            cluster
                .apply(&key, &body, prior_rv.as_deref())
                .await
                .map_err(|e| format!("applying {key}: {e}"))
        }
    };
    // The namespace first: everything else lives in it.
    for d in ns {
        apply(d).await?;
    }
    let applies = rest.iter().map(|d| apply(d));
    let deletes = plan.delete.iter().map(|k| async move {
        ctx.metrics
            .regional_writes
            .with_label_values(&[region, "delete"])
            .inc();
        cluster
            .delete(k)
            .await
            .map(|_| ())
            .map_err(|e| format!("deleting {k}: {e}"))
    });
    let mut errors: Vec<String> = futures::future::join_all(applies)
        .await
        .into_iter()
        .chain(futures::future::join_all(deletes).await)
        .filter_map(Result::err)
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        errors.truncate(3);
        Err(errors.join("; "))
    }
}

/// Removes the tenant from a region it is no longer placed in. Returns a message while something remains.
async fn unplace(ctx: &Context, fence: &LazyFence<'_>, tenant: &str, cluster: &Cluster) -> Option<String> {
    let live = cluster.live_of(tenant);
    if live.is_empty() {
        return None;
    }
    let region = cluster.region.as_str();
    if let Err(o) = usable(ctx, region) {
        return Some(format!("no longer placed; removal waiting: {}", o.message));
    }
    if let Err(e) = fence.check().await {
        return Some(format!("no longer placed; not removing: {e}"));
    }
    let keys = live.keys().cloned().collect();
    let plan = plan_region(&[], |_| None, &keys);
    for k in &plan.delete {
        ctx.metrics
            .regional_writes
            .with_label_values(&[region, "delete"])
            .inc();
        if let Err(e) = cluster.delete(k).await {
            return Some(format!("no longer placed; removing {k} failed: {e}"));
        }
    }
    info!(%region, "tenant removed from a region it is no longer placed in");
    Some("no longer placed; namespace being removed".into())
}

pub(super) async fn write_status(
    tc: &TenantCtx,
    obj: &DynamicObject,
    desired: &[Desired],
    fields: serde_json::Map<String, Value>,
    generation: Option<i64>,
    now: Time,
) -> Result<(), ReconcileError> {
    let current = current_conditions(obj);
    let plan = plan_status(&current, desired, fields, generation, now, false);
    write_if_changed(&tc.ctx, &tc.writer, TenantKind::NAME, obj, &current, &plan).await
}
