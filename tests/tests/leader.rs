//! Leader election with real operator processes on a real kube-apiserver: only the Lease holder writes, a
//! killed holder is replaced within 15 s, and a deposed leader's late write is refused by the fence.

use std::time::{Duration, Instant};

use azora_adapters::kube_status::{StatusError, StatusWriter};
use azora_adapters::leader::{Fence, LeaderError, Leadership, LeaseConfig};
use azora_api::Region;
use azora_tests::{Operator, TestEnv, free_port, wait};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::core::ApiResource;
use serde_json::json;

async fn metrics(port: u16) -> anyhow::Result<String> {
    azora_tests::metrics_text(port).await
}

use azora_tests::{metric, metric_if_present};

/// A Lease `name` held by `holder` at epoch `transitions` (10 s duration).
fn lease(name: &str, holder: &str, transitions: i32) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(10),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("azora-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

fn region(name: &str) -> anyhow::Result<Region> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "azora.io/v1alpha1", "kind": "Region", "metadata": {"name": name},
        "spec": {"location": {"city": "Lagos", "country": "NG", "continent": "Africa", "latitude": 6.5, "longitude": 3.4},
                 "probes": {"endpoints": [{"name": "api", "type": "TCP", "address": "127.0.0.11:80"}]},
                 "dns": {"ipv4": ["127.0.0.11"]}}
    }))?)
}

async fn ready(regions: &Api<Region>, name: &str) -> bool {
    let name = name.to_string();
    wait::until(Duration::from_secs(30), || {
        let regions = regions.clone();
        let name = name.clone();
        async move {
            regions
                .get(&name)
                .await
                .ok()
                .and_then(|r| r.status)
                .is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == azora_api::ConditionStatus::True)
                })
        }
    })
    .await
}

#[tokio::test]
async fn only_the_lease_holder_writes_and_a_killed_holder_hands_over_within_15s() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let client = env.hub().client().await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let regions: Api<Region> = Api::all(client.clone());
    let (pa, pb) = (free_port()?, free_port()?);
    let (addr_a, addr_b) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    let kc = &env.hub().kubeconfig;
    let mut a = Operator::start(
        kc,
        env.dir.path().join("a.log"),
        &["--identity", "a", "--metrics-addr", &addr_a],
        &[],
    )?;
    assert!(
        wait::until(Duration::from_secs(30), || async {
            holder(&leases).await.as_deref() == Some("a")
        })
        .await
    );
    let _b = Operator::start(
        kc,
        env.dir.path().join("b.log"),
        &["--identity", "b", "--metrics-addr", &addr_b],
        &[],
    )?;
    assert!(
        wait::until(Duration::from_secs(20), || async {
            // just started: no answer yet is "not yet" here; the scrapes below must answer
            metrics(pb).await.is_ok_and(|m| m.contains("azora_leader 0"))
        })
        .await
    );

    regions.create(&PostParams::default(), &region("first")?).await?;
    assert!(
        ready(&regions, "first").await,
        "leader a did not make the region Ready"
    );
    let (ma, mb) = (metrics(pa).await?, metrics(pb).await?);
    assert_eq!(metric(&ma, "azora_leader ")?, 1.0, "{ma}");
    assert!(
        metric(
            &ma,
            "azora_status_writes_total{controller=\"region\",outcome=\"written\"}"
        )? >= 1.0,
        "{ma}"
    );
    assert_eq!(metric(&mb, "azora_leader ")?, 0.0);
    // b's scrape answered (azora_leader above); these labelled counters only appear once incremented, so
    // for a standby that never wrote nor reconciled they are absent — or 0.
    assert_eq!(
        metric_if_present(&mb, "azora_status_writes_total")?.unwrap_or(0.0),
        0.0,
        "standby b must not write:\n{mb}"
    );
    assert_eq!(
        metric_if_present(&mb, "azora_reconcile_total")?.unwrap_or(0.0),
        0.0,
        "standby b must not reconcile:\n{mb}"
    );

    let killed = Instant::now();
    a.kill();
    let handed = wait::until(Duration::from_secs(30), || async {
        holder(&leases).await.as_deref() == Some("b")
    })
    .await;
    let took = killed.elapsed();
    println!("handover after SIGKILL of the holder: {:.1}s", took.as_secs_f64());
    assert!(handed, "b never took the lease");
    assert!(took < Duration::from_secs(15), "handover took {took:?}");
    let epoch = leases
        .get("azora-operator")
        .await?
        .spec
        .and_then(|s| s.lease_transitions);
    assert_eq!(epoch, Some(2), "the new holder writes under the next epoch");

    regions.create(&PostParams::default(), &region("second")?).await?;
    assert!(ready(&regions, "second").await, "new leader b did not reconcile");
    assert!(
        metric(
            &metrics(pb).await?,
            "azora_status_writes_total{controller=\"region\",outcome=\"written\"}"
        )? >= 1.0
    );
    Ok(())
}

#[tokio::test]
async fn a_deposed_leaders_late_write_is_refused() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let client = env.hub().client().await?;
    let regions: Api<Region> = Api::all(client.clone());
    regions.create(&PostParams::default(), &region("fenced")?).await?;
    // b holds the lease at epoch 2: a was the leader at epoch 1 and was deposed.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    leases
        .create(&PostParams::default(), &lease("fence-test", "b", 2))
        .await?;
    // a still believes it leads (its local clock has not run out yet): exactly the late-write case.
    let believes = Leadership {
        epoch: 1,
        valid_until: Instant::now() + Duration::from_secs(60),
    };
    let (_tx_a, rx_a) = tokio::sync::watch::channel(Some(believes));
    let fence_a = Fence::new(
        client.clone(),
        &LeaseConfig::new("default", "fence-test", "a"),
        rx_a,
    );
    let ar = ApiResource::erase::<Region>(&());
    let writer_a = StatusWriter::new(client.clone(), ar.clone(), "region", fence_a);
    let late = json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Stale", "message": "late",
                                      "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    match writer_a.apply("fenced", None, late).await {
        Err(StatusError::Fenced(LeaderError::Deposed { holder, epoch, ours })) => {
            assert_eq!((holder.as_deref(), epoch, ours), (Some("b"), 2, 1));
        }
        other => panic!("late write was not refused: {other:?}"),
    }
    assert!(
        regions.get("fenced").await?.status.is_none(),
        "nothing was written"
    );
    // The real holder at the current epoch passes the same fence.
    let (_tx_b, rx_b) = tokio::sync::watch::channel(Some(Leadership { epoch: 2, ..believes }));
    let fence_b = Fence::new(
        client.clone(),
        &LeaseConfig::new("default", "fence-test", "b"),
        rx_b,
    );
    let writer_b = StatusWriter::new(client.clone(), ar, "region", fence_b);
    let ok = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "ok",
                                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    writer_b.apply("fenced", None, ok).await?;
    assert!(
        regions
            .get("fenced")
            .await?
            .status
            .is_some_and(|s| s.conditions[0].reason == "Ready")
    );
    Ok(())
}

/// GET requests for Leases the API server has answered so far (its own `apiserver_request_total`).
async fn lease_reads(client: &kube::Client) -> anyhow::Result<f64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains("resource=\"leases\"")
                && l.contains("verb=\"GET\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[tokio::test]
async fn bulk_writers_share_one_lease_read_and_all_stop_once_deposed() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let client = env.hub().client().await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    leases
        .create(&PostParams::default(), &lease("bulk-test", "a", 1))
        .await?;
    let (_tx, rx) = tokio::sync::watch::channel(Some(Leadership {
        epoch: 1,
        valid_until: Instant::now() + Duration::from_secs(120),
    }));
    let fence = Fence::new(client.clone(), &LeaseConfig::new("default", "bulk-test", "a"), rx);
    let age = azora_adapters::leader::BULK_WRITE_FENCE_AGE;
    let all = |fence: Fence| async move {
        futures::future::join_all((0..200).map(|_| {
            let f = fence.clone();
            async move { f.check_recent(age).await }
        }))
        .await
    };
    // 200 writers with no confirmation yet: one read answers for all of them.
    let before = lease_reads(&client).await?;
    let answers = all(fence.clone()).await;
    let reads = lease_reads(&client).await? - before;
    assert!(answers.iter().all(|a| matches!(a, Ok(1))), "{answers:?}");
    assert!(
        (1.0..=3.0).contains(&reads),
        "200 concurrent writers sent {reads} Lease reads"
    );
    // Deposed meanwhile (b took over at epoch 2) and the confirmation aged out: every writer is refused, and
    // they share the read that found out.
    let mut l = leases.get("bulk-test").await?;
    if let Some(s) = l.spec.as_mut() {
        s.holder_identity = Some("b".into());
        s.lease_transitions = Some(2);
    }
    leases.replace("bulk-test", &PostParams::default(), &l).await?;
    tokio::time::sleep(age + Duration::from_millis(200)).await;
    let before = lease_reads(&client).await?;
    let answers = all(fence.clone()).await;
    let reads = lease_reads(&client).await? - before;
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Err(LeaderError::Deposed { .. } | LeaderError::Unconfirmed))),
        "a deposed writer was let through: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .any(|a| matches!(a, Err(LeaderError::Deposed { epoch: 2, .. }))),
        "{answers:?}"
    );
    assert!(
        (1.0..=3.0).contains(&reads),
        "200 deposed writers sent {reads} Lease reads"
    );
    // Nothing confirms for a deposed writer later either.
    assert!(matches!(
        fence.check_recent(age).await,
        Err(LeaderError::Deposed { .. })
    ));
    Ok(())
}
