//! The generic reconcile pipeline every kind runs: fetch (parse the object, build the world) → validate →
//! plan status → write status (skipped when nothing changed) → Events on transitions. Invalid specs become
//! conditions and wait for a change; only API trouble is an error, requeued with exponential, capped,
//! jittered backoff per object. The `Kind` trait is what a capability tells the pipeline about its kind.

use std::sync::Arc;
use std::time::Duration;

use azora_adapters::kube_status::{StatusError, StatusWriter};
use azora_api::common::find_condition;
use azora_api::{Condition, ConditionStatus, Time};
use azora_core::conditions::{self, Desired, types};
use azora_core::validate::{self, ProblemKind};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use rand::Rng;
use serde_json::{Map, Value, json};
use tracing::{info, instrument, warn};

use azora_core::validate::{Pending, Problem};
use azora_core::world::World;
use kube::CustomResourceExt;
use kube::core::ApiResource;
use serde::de::DeserializeOwned;

use crate::context::{Context, Needs};

/// What the generic reconcile pipeline needs to know about a kind.
pub trait Kind: Send + Sync + 'static {
    /// Controller name (metrics label, field manager suffix).
    const NAME: &'static str;
    /// The spec type.
    type Spec: DeserializeOwned + Send + Sync;
    /// The API resource.
    fn resource() -> ApiResource;
    /// Parts of the world validation needs.
    fn needs() -> Needs {
        Needs::default()
    }
    /// Secrets (in the operator namespace) the spec refers to.
    fn secret_refs(_spec: &Self::Spec) -> Vec<String> {
        Vec::new()
    }
    /// The checks.
    fn check(spec: &Self::Spec, world: &World) -> Vec<Problem>;
    /// Message of `Ready=True`.
    fn ready_message() -> &'static str;
    /// The capability a later part of the operator delivers, reported until then.
    fn pending() -> Option<Pending>;
    /// Kind-specific status fields, computed when the spec is valid.
    fn status_fields(_spec: &Self::Spec, _world: &World, _valid: bool) -> Map<String, Value> {
        Map::new()
    }
}

/// Whether the spec of `obj` as the caller sees it was judged by this pipeline (`None`: not yet — the
/// recorded `observedGeneration` is older, or there is no `Ready` yet) and found ready (`Err` with the
/// condition's reason and message otherwise). For loops that must act only on a valid spec.
pub fn judged(obj: &DynamicObject) -> Option<Result<(), String>> {
    let status = obj.data.get("status");
    let observed = status
        .and_then(|s| s.get("observedGeneration"))
        .and_then(Value::as_i64);
    if observed != obj.metadata.generation {
        return None;
    }
    let conditions: Vec<Condition> = status
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    match find_condition(&conditions, types::READY) {
        Some(c) if c.status == ConditionStatus::True => Some(Ok(())),
        Some(c) => Some(Err(format!("not Ready ({}): {}", c.reason, c.message))),
        None => None,
    }
}

/// The API resource of one of our kinds.
pub fn resource_of<K: CustomResourceExt + kube::Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

/// A capability this version does not deliver yet: `Ready=False` with reason `NotYetSupported` (GitOps
/// tools read `Ready`; it never says True for something that does not run).
pub fn not_yet_supported(condition: &'static str, message: &str) -> Option<Pending> {
    Some(Pending {
        condition,
        message: message.to_string(),
        ready_anyway: false,
    })
}

/// Re-check interval of a healthy object (references may disappear).
const RESYNC: Duration = Duration::from_secs(300);
/// Re-check interval while a reference is missing.
const RETRY_UNRESOLVED: Duration = Duration::from_secs(10);

/// Errors of a reconcile: all transient.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum ReconcileError {
    /// Reading referenced objects failed.
    #[error("fetching references failed")]
    Fetch(#[source] kube::Error),
    /// Writing status failed.
    #[error("writing status failed")]
    Status(#[source] StatusError),
    /// A regional cluster or object store failed (the text names it, never a secret).
    #[error("{0}")]
    Remote(String),
    /// The write fence refused: this replica does not (or no longer) lead.
    #[error("not writing")]
    Fenced(#[source] std::sync::Arc<azora_adapters::leader::LeaderError>),
}

impl ReconcileError {
    /// Fixed category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Fetch(_) => "Fetch",
            Self::Remote(_) => "Remote",
            Self::Fenced(_) => "Fenced",
            Self::Status(e) => e.category(),
        }
    }
}

/// Per-controller state: the context, this kind's status writer, and the backoff of failing objects.
pub struct KindCtx {
    /// Shared context.
    pub ctx: Context,
    /// Status writer for this kind.
    pub writer: StatusWriter,
    /// Consecutive failures per object (reset on success).
    pub failures: Backoff,
}

impl KindCtx {
    /// A controller's state.
    pub fn new(ctx: Context, writer: StatusWriter) -> Self {
        Self {
            ctx,
            writer,
            failures: Backoff::default(),
        }
    }
}

/// Exponential backoff per object: 1 s, 2 s, 4 s … capped at 5 min, each with up to 50 % jitter.
#[derive(Default)]
pub struct Backoff(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl Backoff {
    /// Records a failure of `object`; returns how long to wait before the next try.
    pub fn failed(&self, object: &str, base: Duration) -> Duration {
        let n = self
            .0
            .lock()
            .map(|mut m| {
                let n = m.entry(object.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        backoff_delay(n, base, rand::rng().random_range(0.0..=0.5))
    }

    /// Records a success of `object`.
    pub fn succeeded(&self, object: &str) {
        if let Ok(mut m) = self.0.lock()
            && !m.is_empty()
        {
            m.remove(object);
        }
    }
}

/// Cap of the error backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The delay after the `n`th consecutive failure (n ≥ 1): `base · 2^(n-1)` plus `jitter` (0–0.5) of it,
/// capped at `MAX_BACKOFF`.
pub fn backoff_delay(n: u32, base: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << n.saturating_sub(1).min(16));
    let with_jitter = exp.mul_f64(1.0 + jitter.clamp(0.0, 0.5));
    with_jitter.min(MAX_BACKOFF)
}

/// The planned status of one object.
pub struct Plan {
    /// The status body.
    pub status: Value,
    /// The Ready condition it carries.
    pub ready: Condition,
    unresolved: bool,
}

/// Reconciles one object of kind `K`.
#[instrument(skip(obj, kc), fields(controller = K::NAME, object = obj.metadata.name.as_deref().unwrap_or("")))]
pub async fn reconcile<K: Kind>(obj: Arc<DynamicObject>, kc: Arc<KindCtx>) -> Result<Action, ReconcileError> {
    let ctx = &kc.ctx;
    let _timer = ctx.metrics.timer(K::NAME);
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let generation = obj.metadata.generation;
    let current = current_conditions(&obj);
    let now = Time::now();

    // fetch + validate + plan
    let plan = match serde_json::from_value::<K::Spec>(obj.data.get("spec").cloned().unwrap_or(Value::Null)) {
        Err(e) => {
            let msg = format!("spec does not match the schema: {e}");
            let desired = vec![
                Desired::fail(types::SPEC_VALID, "MalformedSpec", msg.clone()),
                Desired::fail(types::READY, "MalformedSpec", msg),
            ];
            plan_status(&current, &desired, Map::new(), generation, now, false)
        }
        Ok(spec) => {
            let world = ctx
                .world(K::needs(), &K::secret_refs(&spec))
                .await
                .map_err(ReconcileError::Fetch)?;
            let problems = K::check(&spec, &world);
            let valid = !problems.iter().any(|p| p.kind == ProblemKind::Invalid);
            let unresolved = problems.iter().any(|p| p.kind == ProblemKind::Unresolved);
            let desired = validate::conditions(&problems, K::ready_message(), K::pending().as_ref());
            let fields = K::status_fields(&spec, &world, valid);
            plan_status(&current, &desired, fields, generation, now, unresolved)
        }
    };

    write_if_changed(ctx, &kc.writer, K::NAME, &obj, &current, &plan).await?;
    kc.failures
        .succeeded(obj.metadata.name.as_deref().unwrap_or_default());
    ctx.metrics.reconciled(K::NAME, "ok");
    Ok(Action::requeue(if plan.unresolved {
        RETRY_UNRESOLVED
    } else {
        RESYNC
    }))
}

/// Writes the planned status unless the object already says it; publishes an Event when Ready changes.
pub async fn write_if_changed(
    ctx: &Context,
    writer: &StatusWriter,
    controller: &'static str,
    obj: &DynamicObject,
    current: &[Condition],
    plan: &Plan,
) -> Result<(), ReconcileError> {
    if status_unchanged(obj, &plan.status) {
        ctx.metrics.status_write(controller, "skipped");
        return Ok(());
    }
    // Why a write happens, for whoever counts writes (a resync that changes nothing must write nothing).
    tracing::debug!(
        controller,
        object = obj.metadata.name.as_deref().unwrap_or(""),
        changed = ?changed_fields(obj, &plan.status),
        "status write"
    );
    writer
        .apply(
            obj.metadata.name.as_deref().unwrap_or_default(),
            obj.metadata.resource_version.as_deref(),
            plan.status.clone(),
        )
        .await
        .map_err(ReconcileError::Status)?;
    ctx.metrics.status_write(controller, "written");
    publish_transition(ctx, obj, find_condition(current, types::READY), &plan.ready).await;
    Ok(())
}

/// The conditions in an object's status.
pub fn current_conditions(obj: &DynamicObject) -> Vec<Condition> {
    obj.data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

/// Plans the status: merged conditions (only the ones this controller owns), fields, observed generation.
pub fn plan_status(
    current: &[Condition],
    desired: &[Desired],
    mut fields: Map<String, Value>,
    generation: Option<i64>,
    now: Time,
    unresolved: bool,
) -> Plan {
    let merged = conditions::merge(current, desired, generation, now);
    let ready = find_condition(&merged, types::READY)
        .cloned()
        .unwrap_or(Condition {
            type_: types::READY.into(),
            status: ConditionStatus::Unknown,
            reason: "Unknown".into(),
            message: String::new(),
            observed_generation: generation,
            last_transition_time: now,
        });
    // Only the conditions this controller owns go into its apply: other managers own theirs.
    let owned: Vec<&Condition> = merged
        .iter()
        .filter(|c| desired.iter().any(|d| d.type_ == c.type_))
        .collect();
    fields.insert("observedGeneration".into(), json!(generation));
    fields.insert("conditions".into(), json!(owned));
    Plan {
        status: Value::Object(fields),
        ready,
        unresolved,
    }
}

/// Whether the object's status already says everything in `planned` (timestamps aside).
/// The planned status fields that differ from the object's (conditions by type, times ignored).
fn changed_fields(obj: &DynamicObject, planned: &Value) -> Vec<String> {
    let current = obj.data.get("status");
    let have = current_conditions(obj);
    let mut out = Vec::new();
    for (k, v) in planned.as_object().into_iter().flatten() {
        if k == "conditions" {
            let want: Vec<Condition> = serde_json::from_value(v.clone()).unwrap_or_default();
            for w in want {
                let same = have.iter().any(|h| {
                    conditions::same_ignoring_time(std::slice::from_ref(&w), std::slice::from_ref(h))
                });
                if !same {
                    out.push(format!("conditions.{}={}/{}", w.type_, w.status, w.reason));
                }
            }
        } else if current.and_then(|c| c.get(k.as_str())) != Some(v) {
            out.push(k.clone());
        }
    }
    out
}

pub fn status_unchanged(obj: &DynamicObject, planned: &Value) -> bool {
    let Some(current) = obj.data.get("status") else {
        return false;
    };
    let Some(planned) = planned.as_object() else {
        return false;
    };
    planned.iter().all(|(k, v)| {
        if k == "conditions" {
            let want: Vec<Condition> = serde_json::from_value(v.clone()).unwrap_or_default();
            let have: Vec<Condition> = current_conditions(obj);
            want.iter().all(|w| {
                have.iter()
                    .any(|h| conditions::same_ignoring_time(std::slice::from_ref(w), std::slice::from_ref(h)))
            })
        } else {
            current.get(k) == Some(v)
        }
    })
}

/// Publishes an Event when Ready changed status or reason.
pub async fn publish_transition(
    ctx: &Context,
    obj: &DynamicObject,
    before: Option<&Condition>,
    after: &Condition,
) {
    let changed = before.is_none_or(|b| b.status != after.status || b.reason != after.reason);
    if !changed {
        return;
    }
    let (type_, reason) = match after.status {
        ConditionStatus::True => (EventType::Normal, "Ready".to_string()),
        _ => (EventType::Warning, after.reason.clone()),
    };
    crate::events::publish(ctx, obj, type_, &reason, &after.message, "Validate").await;
    info!(status = %after.status, reason = %after.reason, "Ready changed");
}

/// Error policy: everything reaching here is transient; retry with exponential, capped, jittered backoff
/// per object (a fence refusal or a write conflict starts lower: they clear quickly).
pub fn error_policy<K: Kind>(obj: Arc<DynamicObject>, err: &ReconcileError, kc: Arc<KindCtx>) -> Action {
    let category = err.category();
    kc.ctx.metrics.error(K::NAME, category);
    kc.ctx.metrics.reconciled(K::NAME, "error");
    let base = match err {
        ReconcileError::Status(StatusError::Conflict(_)) => Duration::from_millis(500),
        ReconcileError::Status(StatusError::Fenced(_)) | ReconcileError::Fenced(_) => Duration::from_secs(2),
        _ => Duration::from_secs(1),
    };
    let name = obj.metadata.name.as_deref().unwrap_or("");
    let delay = kc.failures.failed(name, base);
    warn!(
        controller = K::NAME,
        object = name,
        category,
        retry_in_ms = delay.as_millis() as u64,
        error = err as &dyn std::error::Error,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Adds `finalizer` to a cluster-scoped object of `resource` (merge patch guarded by the resourceVersion
/// read, so a concurrent edit is not overwritten). Callers check the fence first.
pub async fn add_finalizer(
    ctx: &Context,
    resource: &ApiResource,
    obj: &DynamicObject,
    finalizer: &str,
) -> Result<(), ReconcileError> {
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), resource);
    let mut finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
    if finalizers.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    finalizers.push(finalizer.into());
    let patch =
        json!({ "metadata": { "finalizers": finalizers, "resourceVersion": obj.metadata.resource_version } });
    api.patch(
        obj.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
    .map_err(ReconcileError::Fetch)
}

/// Removes `finalizer` (an object already gone is fine).
pub async fn remove_finalizer(
    ctx: &Context,
    resource: &ApiResource,
    obj: &DynamicObject,
    finalizer: &str,
) -> Result<(), ReconcileError> {
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), resource);
    let finalizers: Vec<String> = obj
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    let patch =
        json!({ "metadata": { "finalizers": finalizers, "resourceVersion": obj.metadata.resource_version } });
    match api
        .patch(
            obj.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(ReconcileError::Fetch(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_and_is_capped() {
        let b = Duration::from_secs(1);
        assert_eq!(backoff_delay(1, b, 0.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(2, b, 0.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(5, b, 0.0), Duration::from_secs(16));
        assert_eq!(backoff_delay(5, b, 0.5), Duration::from_secs(24));
        assert_eq!(backoff_delay(30, b, 0.5), MAX_BACKOFF);
        assert_eq!(backoff_delay(u32::MAX, b, 9.0), MAX_BACKOFF);
    }

    #[test]
    fn a_success_resets_the_backoff() {
        let b = Backoff::default();
        let base = Duration::from_secs(1);
        let _ = b.failed("a", base);
        let _ = b.failed("a", base);
        assert!(b.failed("a", base) >= Duration::from_secs(4));
        b.succeeded("a");
        assert!(b.failed("a", base) < Duration::from_secs(2));
    }
}
