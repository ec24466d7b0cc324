//! Keeping the regional cluster registry in step (IO, leader only): connect new clusters from their
//! kubeconfig Secrets (parsed narrowly), rebuild those whose Secret changed, drop those no longer
//! configured; check reachability (and watch sync) every 10 s and report it in `Region.status.cluster`
//! (manager `azora-operator/cluster`) with Events on changes of reason.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azora_adapters::kube_status::StatusWriter;
use azora_adapters::regional::{RegionalError, clients_from_kubeconfig};
use azora_api::Time;
use azora_api::region::{ClusterStatus, RegionSpec};
use kube::Resource as _;
use kube::ResourceExt as _;
use tracing::{info, warn};

use super::{
    CHECK_EVERY, Cluster, Clusters, REFRESH_EVERY, Reachability, STATUS_HEARTBEAT, SYNC_BOUND, Wake,
    fingerprint,
};
use crate::context::Context;
use crate::pipeline::resource_of;

async fn check(c: &Cluster) -> Reachability {
    match tokio::time::timeout(Duration::from_secs(5), c.clients.requests.apiserver_version()).await {
        Ok(Ok(v)) => match c.sync_problem() {
            // Answers, but what the operator needs to watch there is refused: not usable.
            Some(problem) => Reachability {
                reachable: true,
                version: Some(v.git_version),
                message: problem,
                reason: "WatchNotSynced",
            },
            None => Reachability {
                reachable: true,
                version: Some(v.git_version),
                message: String::new(),
                reason: "Reachable",
            },
        },
        Ok(Err(e)) => Reachability {
            reachable: false,
            version: None,
            message: format!("{}: {e}", c.clients.server),
            reason: "Unreachable",
        },
        Err(_) => Reachability {
            reachable: false,
            version: None,
            message: format!("{}: no answer within 5s", c.clients.server),
            reason: "Unreachable",
        },
    }
}

/// Keeps `clusters` in step with the Regions and their kubeconfig Secrets, checks reachability, and
/// reports it in Region status (manager `azora-operator/cluster`), until `stop`.
pub async fn run(ctx: Context, stop: impl std::future::Future<Output = ()>) {
    let clusters = ctx.handles.clusters.clone();
    let writer = StatusWriter::new(
        ctx.client.clone(),
        resource_of::<azora_api::Region>(),
        "cluster",
        ctx.fence.clone(),
    );
    let mut reported: BTreeMap<String, (Reachability, Instant)> = BTreeMap::new();
    let mut last_check: BTreeMap<String, Instant> = BTreeMap::new();
    let mut routing: Option<(
        BTreeMap<String, azora_api::region::Verdict>,
        BTreeMap<String, String>,
    )> = None;
    let work = async {
        ctx.caches.regions.ready().await;
        ctx.caches.tenants.ready().await;
        loop {
            // A region's verdict changing (failover) moves tenants' active region: wake them.
            // A verdict or a policy's routing changing moves tenants' active region: wake them.
            let now = (ctx.recorded_verdicts(), ctx.recorded_routing());
            if routing.as_ref() != Some(&now) {
                if routing.is_some() {
                    clusters.wake(Wake::All);
                }
                routing = Some(now);
            }
            refresh(&ctx, &clusters).await;
            // A region deleted (or no longer naming a cluster) leaves no reachability series behind: an alert on
            // it would fire for a region that does not exist.
            let with_cluster: BTreeSet<String> = ctx
                .caches
                .regions
                .specs::<RegionSpec>()
                .into_iter()
                .filter(|(_, s)| s.cluster.is_some())
                .map(|(n, _)| n)
                .collect();
            reported.retain(|region, _| {
                let keep = with_cluster.contains(region);
                if !keep {
                    let _ = ctx.metrics.cluster_up.remove_label_values(&[region.as_str()]);
                }
                keep
            });
            // New clusters are checked at once, the others every CHECK_EVERY.
            let all: Vec<Arc<Cluster>> = clusters
                .all()
                .into_iter()
                .filter(|c| {
                    c.reachable().is_none()
                        || last_check
                            .get(&c.region)
                            .is_none_or(|t| t.elapsed() >= CHECK_EVERY)
                })
                .collect();
            for c in &all {
                last_check.insert(c.region.clone(), Instant::now());
            }
            if all.is_empty() {
                tokio::time::sleep(REFRESH_EVERY).await;
                continue;
            }
            let checks =
                futures::future::join_all(all.iter().map(|c| async move { (c.clone(), check(c).await) }))
                    .await;
            let mut results: Vec<(String, Reachability)> = Vec::new();
            for (c, r) in checks {
                let before = c.reachable();
                if let Ok(mut g) = c.reach.lock() {
                    *g = Some(r.clone());
                }
                if before.as_ref().map(|b| b.reachable) != Some(r.reachable) {
                    if r.reachable {
                        info!(region = %c.region, version = ?r.version, "regional cluster reachable");
                        clusters.wake(Wake::All);
                    } else {
                        warn!(region = %c.region, message = %r.message, "regional cluster unreachable");
                    }
                }
                results.push((c.region.clone(), r));
            }
            // Regions configured with a cluster that could not be connected (Secret missing, bad kubeconfig).
            let configured = &with_cluster;
            let problems: BTreeMap<String, (&'static str, String)> =
                clusters.problems.read().map(|p| p.clone()).unwrap_or_default();
            for (region, (reason, message)) in problems {
                if configured.contains(&region) {
                    results.push((
                        region,
                        Reachability {
                            reachable: false,
                            version: None,
                            message,
                            reason,
                        },
                    ));
                }
            }
            for (region, r) in results {
                ctx.metrics
                    .cluster_up
                    .with_label_values(&[region.as_str()])
                    .set(i64::from(r.reachable));
                let due = reported
                    .get(&region)
                    .is_none_or(|(last, at)| *last != r || at.elapsed() >= STATUS_HEARTBEAT);
                if due {
                    let status = ClusterStatus {
                        reachable: r.reachable,
                        version: r.version.clone(),
                        last_check_time: Time::now(),
                        reason: Some(r.reason.to_string()),
                        message: r.message.clone(),
                    };
                    let body = serde_json::json!({ "cluster": status });
                    match writer.apply(&region, None, body).await {
                        Ok(()) => {
                            let changed = reported
                                .get(&region)
                                .is_none_or(|(last, _)| last.reason != r.reason);
                            reported.insert(region.clone(), (r.clone(), Instant::now()));
                            if changed {
                                publish(&ctx, &region, &r).await;
                            }
                        }
                        Err(e) => warn!(region = %region, error = %e, "writing cluster status failed"),
                    }
                }
            }
            tokio::time::sleep(REFRESH_EVERY).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = stop => {}
    }
}

async fn publish(ctx: &Context, region: &str, r: &Reachability) {
    let Some(obj) = ctx
        .caches
        .regions
        .state()
        .into_iter()
        .find(|o| o.name_any() == region)
    else {
        return;
    };
    let mut obj = (*obj).clone();
    obj.types = Some(kube::api::TypeMeta {
        api_version: azora_api::Region::api_version(&()).into(),
        kind: azora_api::Region::kind(&()).into(),
    });
    let (type_, reason, note) = match r.reason {
        "Reachable" => (
            kube::runtime::events::EventType::Normal,
            "ClusterReachable",
            format!(
                "regional cluster answers (version {})",
                r.version.clone().unwrap_or_default()
            ),
        ),
        "Unreachable" => (
            kube::runtime::events::EventType::Warning,
            "ClusterUnreachable",
            format!("regional cluster does not answer: {}", r.message),
        ),
        other => (
            kube::runtime::events::EventType::Warning,
            other,
            format!("regional cluster not usable: {}", r.message),
        ),
    };
    crate::events::publish(ctx, &obj, type_, reason, &note, "CheckCluster").await;
}

/// Connects new clusters, rebuilds those whose kubeconfig changed, drops those no longer configured.
async fn refresh(ctx: &Context, clusters: &Clusters) {
    let specs: BTreeMap<String, RegionSpec> = ctx.caches.regions.specs();
    let current: BTreeMap<String, Arc<Cluster>> =
        clusters.inner.read().map(|m| m.clone()).unwrap_or_default();
    for (name, spec) in &specs {
        let Some(cref) = &spec.cluster else {
            clusters.set_problem(
                name,
                Some((
                    "NoCluster",
                    format!("region {name} has no regional cluster configured (spec.cluster)"),
                )),
            );
            drop_cluster(clusters, name);
            continue;
        };
        let secret = &cref.kubeconfig_secret;
        let read = ctx.secrets.value(&secret.name, &secret.key).await;
        if read.is_ok()
            && let Ok(mut u) = clusters.unreadable_since.lock()
        {
            u.remove(name);
        }
        let bytes = match read {
            Ok(Some(b)) => b,
            Ok(None) => {
                clusters.set_problem(
                    name,
                    Some((
                        "SecretMissing",
                        format!(
                            "kubeconfig Secret {}/{} key {} not found",
                            ctx.namespace, secret.name, secret.key
                        ),
                    )),
                );
                drop_cluster(clusters, name);
                continue;
            }
            Err(e) => {
                warn!(region = %name, error = %e, "reading the kubeconfig Secret failed");
                // A passing hiccup keeps the cluster; a Secret unreadable for longer is an error.
                let since = clusters
                    .unreadable_since
                    .lock()
                    .map(|mut u| *u.entry(name.clone()).or_insert_with(Instant::now))
                    .unwrap_or_else(|_| Instant::now());
                if since.elapsed() >= SYNC_BOUND {
                    clusters.set_problem(
                        name,
                        Some((
                            "SecretUnreadable",
                            format!(
                                "kubeconfig Secret {}/{} unreadable for {}s: {e}",
                                ctx.namespace,
                                secret.name,
                                since.elapsed().as_secs()
                            ),
                        )),
                    );
                    drop_cluster(clusters, name);
                }
                continue;
            }
        };
        let fp = fingerprint(&bytes);
        if current.get(name).is_some_and(|c| c.fingerprint == fp) {
            continue;
        }
        match clients_from_kubeconfig(&bytes).await {
            Ok(clients) => {
                if clients.insecure {
                    warn!(region = %name, server = %clients.server, "regional kubeconfig skips TLS verification (insecure-skip-tls-verify)");
                }
                info!(region = %name, server = %clients.server, rebuilt = current.contains_key(name), "regional cluster client built");
                let c = clusters.connect(name, clients, fp);
                if let Ok(mut m) = clusters.inner.write() {
                    m.insert(name.clone(), c);
                }
                clusters.set_problem(name, None);
            }
            Err(e) => {
                if matches!(e, RegionalError::Unsafe(_)) {
                    warn!(region = %name, error = %e, "regional kubeconfig refused");
                }
                clusters.set_problem(
                    name,
                    Some((
                        e.reason(),
                        format!("kubeconfig Secret {}/{}: {e}", ctx.namespace, secret.name),
                    )),
                );
                drop_cluster(clusters, name);
            }
        }
    }
    for name in current.keys() {
        if !specs.contains_key(name) {
            drop_cluster(clusters, name);
        }
    }
}

fn drop_cluster(clusters: &Clusters, name: &str) {
    if let Ok(mut m) = clusters.inner.write() {
        m.remove(name);
    }
}
