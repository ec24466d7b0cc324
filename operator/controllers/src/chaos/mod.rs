//! Chaos experiments: one task per `ChaosExperiment` runs it on its schedule (or at once on a new
//! `azora.io/run-now` annotation) — interlocks, blocked windows and the steady state checked first (a run
//! that may not start is recorded `Skipped` with the reason), the fault handed to the target region's agent
//! with an expiry (the agent makes it for real and reverts it at expiry by itself), abort conditions watched
//! throughout, the fault withdrawn at the end and its absence confirmed from here (the endpoint answers
//! again), the outcome judged from measured numbers (`core::chaos::judge`). A run an earlier term left
//! `Running` is finished as `Aborted` (the fault withdrawn and confirmed gone). The kill switch (ConfigMap
//! `azora-chaos-halt`) aborts every run and blocks new ones. Writes `ChaosExperiment` status under manager
//! `azora-operator/chaos-runs`; the generic pipeline keeps the conditions.

pub mod agent;
pub mod link;
mod pods;
mod run;

use std::collections::BTreeSet;
use std::time::Duration;

use azora_api::ChaosExperiment;
use azora_api::chaos::ChaosExperimentSpec;
use azora_core::validate::{self, Pending, Problem};
use azora_core::world::World;
use azora_runtime::Context;
use azora_runtime::pipeline::{Kind, resource_of};
use azora_runtime::term::{Stop, controller};
use futures::FutureExt;
use futures::future::BoxFuture;
use kube::core::ApiResource;

/// Settings of the chaos room.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// How long the hub waits for the agent to report a fault applied (or reverted).
    pub agent_wait: Duration,
    /// How long after the revert the fault's absence must be confirmed.
    pub confirm_wait: Duration,
    /// Longest wait for the steady state to return when the experiment names no `recoveryWithin`.
    pub recovery_wait: Duration,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            agent_wait: Duration::from_secs(15),
            confirm_wait: Duration::from_secs(30),
            recovery_wait: Duration::from_secs(120),
        }
    }
}

/// This capability's work for one leadership term.
pub fn term(ctx: &Context, cfg: ChaosConfig, concurrency: u16, stop: &Stop) -> Vec<BoxFuture<'static, ()>> {
    vec![
        controller::<ChaosExperimentKind>(ctx, &ctx.caches.experiments, concurrency, stop.clone()),
        runner(ctx.clone(), cfg, stop.clone()).boxed(),
    ]
}

/// One task per experiment; every change and every 5 s, the metric series of deleted experiments are
/// dropped and orphaned fault orders swept.
async fn runner(ctx: Context, cfg: ChaosConfig, stop: Stop) {
    let spawn_ctx = ctx.clone();
    let round_ctx = ctx.clone();
    azora_runtime::term::per_object(
        ctx.clone(),
        ctx.caches.experiments.clone(),
        "chaos/experiment",
        stop,
        Some(Duration::from_secs(5)),
        move |name| run::experiment_loop(spawn_ctx.clone(), cfg.clone(), name),
        move |names| {
            let ctx = round_ctx.clone();
            async move {
                azora_runtime::metrics::retain_series(&ctx.metrics.chaos_failover_seconds, |l| {
                    l.get("experiment").is_some_and(|e| names.contains(e))
                });
                sweep(&ctx, &names).await;
            }
        },
    )
    .await;
}

/// Withdraws fault orders nobody will finish: those of experiments that no longer exist (deleted mid-run),
/// and every order while the kill switch is set. The agents revert withdrawn orders at once.
async fn sweep(ctx: &Context, names: &BTreeSet<String>) {
    use azora_core::chaos::{AGENT_LABEL, FAULT_ANNOTATION, FaultOrder, HALT_CONFIGMAP};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, ListParams, Patch, PatchParams};
    let deadline = Duration::from_secs(5);
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Ok(Ok(list)) =
        tokio::time::timeout(deadline, leases.list(&ListParams::default().labels(AGENT_LABEL))).await
    else {
        return;
    };
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let halted = matches!(
        tokio::time::timeout(deadline, cms.get_opt(HALT_CONFIGMAP)).await,
        Ok(Ok(Some(_)))
    );
    for l in list.items {
        let Some(order) = l
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FAULT_ANNOTATION))
            .and_then(|o| serde_json::from_str::<FaultOrder>(o).ok())
        else {
            continue;
        };
        let owner = order.owner.strip_prefix("ChaosExperiment/");
        let orphan = owner.is_some_and(|o| !names.contains(o));
        if !(orphan || halted) || ctx.fence.check().await.is_err() {
            continue;
        }
        let Some(name) = l.metadata.name.as_deref() else {
            continue;
        };
        let patch = serde_json::json!({"metadata": {"annotations": {FAULT_ANNOTATION: null}}});
        match tokio::time::timeout(
            deadline,
            leases.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        {
            Ok(Ok(_)) => {
                tracing::info!(lease = name, order = %order.id, orphan, halted, "fault order withdrawn")
            }
            _ => tracing::warn!(lease = name, order = %order.id, "fault order not withdrawn; retried"),
        }
    }
}

/// ChaosExperiment.
pub struct ChaosExperimentKind;
impl Kind for ChaosExperimentKind {
    const NAME: &'static str = "chaosexperiment";
    type Spec = ChaosExperimentSpec;
    fn resource() -> ApiResource {
        resource_of::<ChaosExperiment>()
    }
    fn check(spec: &ChaosExperimentSpec, world: &World) -> Vec<Problem> {
        validate::chaos_experiment(spec, world)
    }
    fn ready_message() -> &'static str {
        "experiments run on schedule"
    }
    fn pending() -> Option<Pending> {
        None
    }
}
