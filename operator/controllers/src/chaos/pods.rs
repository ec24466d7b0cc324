//! PodKill (IO): the pods matching a selector in the region's cluster deleted through its API, the oldest
//! first, each with its UID as precondition (a pod recreated under the same name in between is not
//! touched) and the grace period the target names (else the pod's own). Nothing is reverted: the fault's end is confirmed by those UIDs being gone, the recovery by
//! as many matching pods as before being back, and as many of them Ready as were Ready before (their
//! controllers recreate them). Pods in a system namespace are never targets (validation refuses them), nor
//! pods that have ended (`Succeeded`/`Failed`).

use std::time::Duration;

use azora_api::chaos::PodTarget;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};

/// Pods deleted by a run.
#[derive(Clone, Debug, Default)]
pub(super) struct Killed {
    /// Matching pods before.
    pub before: usize,
    /// Of those, the Ready ones.
    pub ready_before: usize,
    /// Name and UID of each pod deleted.
    pub pods: Vec<(String, String)>,
    /// The longest grace period they were given to stop.
    pub grace: Duration,
}

const CALL: Duration = Duration::from_secs(10);

/// The matching pods not already going, oldest first.
pub(super) async fn matching(client: &kube::Client, target: &PodTarget) -> Result<Vec<Pod>, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let list = tokio::time::timeout(CALL, api.list(&ListParams::default().labels(&target.selector)))
        .await
        .map_err(|_| "listing pods timed out".to_string())?
        .map_err(|e| format!("listing pods in {}: {e}", target.namespace))?;
    // A pod that is going, or whose containers have ended for good, is not a living replica.
    let mut pods: Vec<Pod> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect();
    pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    Ok(pods)
}

/// Whether a pod reports the condition `Ready=True`.
pub(super) fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod `name` with `uid` is deleted or being deleted (after a delete call whose answer was lost).
async fn deleted(api: &Api<Pod>, name: &str, uid: &str) -> bool {
    match tokio::time::timeout(CALL, api.get_opt(name)).await {
        Ok(Ok(None)) => true,
        Ok(Ok(Some(p))) => p.metadata.uid.as_deref() != Some(uid) || p.metadata.deletion_timestamp.is_some(),
        _ => false,
    }
}

/// Deletes up to `max_pods` matching pods; an error only when none could be deleted.
pub(super) async fn kill(client: &kube::Client, target: &PodTarget) -> Result<Killed, String> {
    if azora_core::chaos::SYSTEM_NAMESPACES.contains(&target.namespace.as_str()) {
        return Err(format!("{} is a system namespace", target.namespace));
    }
    let pods = matching(client, target).await?;
    if pods.is_empty() {
        return Err(format!(
            "no pod in {} matches {}",
            target.namespace, target.selector
        ));
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let mut killed = Killed {
        before: pods.len(),
        ready_before: pods.iter().filter(|p| ready(p)).count(),
        ..Killed::default()
    };
    let mut last = String::new();
    for p in pods.iter().take(target.max_pods as usize) {
        let (Some(name), Some(uid)) = (p.metadata.name.clone(), p.metadata.uid.clone()) else {
            continue;
        };
        let grace = target
            .grace_period_seconds
            .map(i64::from)
            .or_else(|| p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds));
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            grace_period_seconds: target.grace_period_seconds,
            ..DeleteParams::default()
        };
        let done = match tokio::time::timeout(CALL, api.delete(&name, &dp)).await {
            Ok(Ok(_)) => true,
            // Gone already, or replaced under the same name: not ours to delete.
            Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => false,
            Ok(Err(e)) => {
                last = format!("deleting pod {name}: {e}");
                false
            }
            // The server may have deleted it and the answer been lost: what is there says.
            Err(_) => {
                let gone = deleted(&api, &name, &uid).await;
                if !gone {
                    last = format!("deleting pod {name} timed out");
                }
                gone
            }
        };
        if done {
            // Kubernetes' default grace period is 30 s.
            let g = Duration::from_secs(u64::try_from(grace.unwrap_or(30)).unwrap_or(0));
            killed.grace = killed.grace.max(g);
            killed.pods.push((name, uid));
        }
    }
    if killed.pods.is_empty() {
        return Err(if last.is_empty() {
            "every matching pod went before it could be deleted".into()
        } else {
            last
        });
    }
    Ok(killed)
}

/// Whether every deleted pod is really gone (its UID no longer exists).
pub(super) async fn gone(client: &kube::Client, target: &PodTarget, killed: &Killed) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    for (name, uid) in &killed.pods {
        let p = tokio::time::timeout(CALL, api.get_opt(name))
            .await
            .map_err(|_| format!("reading pod {name} timed out"))?
            .map_err(|e| format!("reading pod {name}: {e}"))?;
        if p.and_then(|p| p.metadata.uid).as_deref() == Some(uid.as_str()) {
            return Err(format!("pod {name} still exists"));
        }
    }
    Ok(())
}
