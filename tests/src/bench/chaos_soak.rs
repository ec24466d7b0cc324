//! `azora-bench chaos-soak`: N short experiments of mixed types back to back against three simulated
//! regions — asia's serving process hung by its agent (RegionOutage Hang), asia drained at the control plane
//! (RegionOutage Drain), europe's S3 server hung by its agent (ObjectStoreOutage), and the traffic from asia
//! into europe delayed by 100 ms and partitioned on europe's agent link (NetworkLatency, NetworkPartition) —
//! each run asked for with `azora.io/run-now` and awaited. Afterwards every target process is read from
//! `/proc`, the link must pass without the delay, and the operator's `azora_chaos_fault_active` is summed: a
//! fault left behind is counted. Prints
//! `chaos_runs=<N> succeeded=<k> failed=<x> aborted=<a> skipped=<s> faults_left_active=<f>`.

use std::time::Duration;

use azora_tests::chaos::{
    attach_s3, best_http_round_trip, experiment, pid_file, run_now, start_agent, start_agent_with_links,
    status, stopped, wait_agent,
};
use azora_tests::scenario::Scenario;
use serde_json::json;

pub async fn run(count: usize) -> anyhow::Result<()> {
    let mut s = Scenario::start(3).await?;
    s.policy("5s", json!({})).await?;
    let hub = s.env.hub().client().await?;
    let dir = s.env.dir.path().to_path_buf();
    let s3 = attach_s3(&s, "europe").await?;
    s.add_operator(&[])?;
    anyhow::ensure!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some()
    );
    anyhow::ensure!(s.wait_all_healthy(Duration::from_secs(60)).await);
    let asia_pid = s.regions[2]
        .pid()
        .ok_or_else(|| anyhow::anyhow!("asia has no process"))?;
    let asia_file = pid_file(&dir, "asia", asia_pid)?;
    let s3_file = pid_file(&dir, "s3-europe", s3.pid())?;
    let _asia = start_agent(
        &s.env.hub().kubeconfig,
        &dir,
        "asia",
        &[("RegionOutage", &asia_file)],
    )?;
    let europe_addr = s.regions[1].addr;
    let link: std::net::SocketAddr = format!("127.0.0.1:{}", azora_tests::free_port()?).parse()?;
    let _europe = start_agent_with_links(
        &s.env.hub().kubeconfig,
        &dir,
        "europe",
        &[("ObjectStoreOutage", &s3_file)],
        &[format!("asia={link}->{europe_addr}")],
    )?;
    anyhow::ensure!(wait_agent(&hub, "asia", Duration::from_secs(20)).await);
    anyhow::ensure!(wait_agent(&hub, "europe", Duration::from_secs(20)).await);
    let kinds = [
        ("hang-asia", json!({"type": "RegionOutage", "region": "asia"})),
        (
            "drain-asia",
            json!({"type": "RegionOutage", "region": "asia", "mode": "Drain"}),
        ),
        (
            "s3-europe",
            json!({"type": "ObjectStoreOutage", "region": "europe"}),
        ),
        (
            "latency-asia-europe",
            json!({"type": "NetworkLatency", "region": "europe", "peerRegion": "asia", "latency": "100ms"}),
        ),
        (
            "partition-asia-europe",
            json!({"type": "NetworkPartition", "region": "europe", "peerRegion": "asia"}),
        ),
    ];
    let link_before = best_http_round_trip(link, 3, Duration::from_secs(5))
        .await
        .ok_or_else(|| anyhow::anyhow!("europe's link does not answer"))?;
    for (name, fault) in &kinds {
        experiment(
            &hub,
            name,
            json!({"fault": fault, "duration": "3s", "schedule": "0 3 1 1 *",
                   "steadyState": {"minHealthyRegions": 2}, "expect": {"recoveryWithin": "30s"}}),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut succeeded, mut failed, mut aborted, mut skipped) = (0, 0, 0, 0);
    for i in 0..count {
        let (name, _) = &kinds[i % kinds.len()];
        let token = format!("soak-{i}");
        run_now(&hub, name, &token).await?;
        let start = std::time::Instant::now();
        let outcome = loop {
            let st = status(&hub, name).await.unwrap_or_default();
            let run = &st["lastRun"];
            if st["runNowHandled"] == token.as_str()
                && run["outcome"].is_string()
                && run["outcome"] != "Running"
            {
                break run["outcome"].as_str().unwrap_or("-").to_string();
            }
            if start.elapsed() > Duration::from_secs(180) {
                break "Timeout".to_string();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        match outcome.as_str() {
            "Succeeded" => succeeded += 1,
            "Failed" => failed += 1,
            "Aborted" => aborted += 1,
            "Skipped" => skipped += 1,
            _ => failed += 1,
        }
        eprintln!(
            "run {i}: {name} {outcome} ({:.1}s)",
            start.elapsed().as_secs_f64()
        );
    }
    // What is left: stopped processes, and faults the operator still counts active.
    let mut left = usize::from(stopped(asia_pid)) + usize::from(stopped(s3.pid()));
    // A link still cut or slow is a fault left behind too.
    let link_after = best_http_round_trip(link, 3, Duration::from_secs(5)).await;
    left += usize::from(link_after.is_none_or(|d| d > link_before + Duration::from_millis(50)));
    let m = azora_tests::metrics_text(s.metrics[0]).await?;
    left += azora_tests::metric_if_present(&m, "azora_chaos_fault_active")?.unwrap_or(0.0) as usize;
    println!(
        "chaos_runs={count} succeeded={succeeded} failed={failed} aborted={aborted} skipped={skipped} faults_left_active={left}"
    );
    Ok(())
}
