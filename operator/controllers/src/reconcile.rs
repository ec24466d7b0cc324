//! The generic reconcile pipeline every kind runs: fetch (parse the object, build the world) → validate →
//! plan status → write status (skipped when nothing changed) → Events on transitions. Invalid specs become
//! conditions and wait for a change; only API trouble is an error, requeued with capped jittered backoff.

use std::sync::Arc;
use std::time::Duration;

use azora_adapters::kube_status::{StatusError, StatusWriter};
use azora_api::common::find_condition;
use azora_api::{Condition, ConditionStatus, Time};
use azora_core::conditions::{self, Desired, types};
use azora_core::validate::{self, ProblemKind};
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use rand::Rng;
use serde_json::{Map, Value, json};
use tracing::{info, instrument, warn};

use crate::context::Context;
use crate::kinds::Kind;

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
    /// A regional action could not be taken (e.g. the fence refused).
    #[error("{0}")]
    Regional(String),
}

impl ReconcileError {
    /// Fixed category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Fetch(_) => "Fetch",
            Self::Regional(_) => "Regional",
            Self::Status(e) => e.category(),
        }
    }
}

/// Per-controller state: the context plus this kind's status writer.
pub struct KindCtx {
    /// Shared context.
    pub ctx: Context,
    /// Status writer for this kind.
    pub writer: StatusWriter,
}

/// The planned status of one object.
pub(crate) struct Plan {
    pub(crate) status: Value,
    pub(crate) ready: Condition,
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
    ctx.metrics.reconciled(K::NAME, "ok");
    Ok(Action::requeue(if plan.unresolved {
        RETRY_UNRESOLVED
    } else {
        RESYNC
    }))
}

/// Writes the planned status unless the object already says it; publishes an Event when Ready changes.
pub(crate) async fn write_if_changed(
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

pub(crate) fn current_conditions(obj: &DynamicObject) -> Vec<Condition> {
    obj.data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

pub(crate) fn plan_status(
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
pub(crate) fn status_unchanged(obj: &DynamicObject, planned: &Value) -> bool {
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

pub(crate) async fn publish_transition(
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

/// Error policy: everything reaching here is transient; retry with capped, jittered backoff.
pub fn error_policy<K: Kind>(obj: Arc<DynamicObject>, err: &ReconcileError, kc: Arc<KindCtx>) -> Action {
    let category = err.category();
    kc.ctx.metrics.error(K::NAME, category);
    kc.ctx.metrics.reconciled(K::NAME, "error");
    let base = match err {
        ReconcileError::Status(StatusError::Conflict(_)) => 1,
        ReconcileError::Status(StatusError::Fenced(_)) => 5,
        _ => 10,
    };
    let jitter = rand::rng().random_range(0..=base * 500);
    warn!(
        controller = K::NAME,
        object = obj.metadata.name.as_deref().unwrap_or(""),
        category,
        error = err as &dyn std::error::Error,
        "reconcile failed"
    );
    Action::requeue(Duration::from_millis((base * 1000 + jitter).min(30_000)))
}
