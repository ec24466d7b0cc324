//! Chaos experiments end to end: real simulated region processes, the real region agent (`azora-operator
//! agent`) stopping them with signals, the operator binary with its embedded DNS, a real API server. The
//! fault's effect and its end are read from the processes themselves (`/proc/<pid>/stat`) and from DNS.

use std::time::Duration;

use azora_tests::chaos::{
    attach_s3, best_http_round_trip, experiment, http_round_trip, patch_spec, pid_file, quiet_fault_now,
    run_again, run_now, start_agent, start_agent_with_links, status, steps, stopped, wait_agent,
    wait_injected, wait_process, wait_run,
};
use azora_tests::scenario::Scenario;
use serde_json::{Value, json};

/// Three simulated regions, the policy (short hold-down so failback comes back quickly), one operator and
/// the agent of africa with africa's serving process as its RegionOutage target.
async fn setup(hold_down: &str) -> anyhow::Result<(Scenario, azora_tests::Operator, u32)> {
    let mut s = Scenario::start(3).await?;
    s.policy(hold_down, json!({})).await?;
    s.add_operator(&[])?;
    anyhow::ensure!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some(),
        "DNS never answered africa:\n{}",
        s.log_tail(0, 30)
    );
    anyhow::ensure!(
        s.wait_steady(Duration::from_secs(40)).await,
        "regions never all Healthy with the policy answering"
    );
    let pid = s.regions[0]
        .pid()
        .ok_or_else(|| anyhow::anyhow!("africa has no process"))?;
    let dir = s.env.dir.path().to_path_buf();
    let pidfile = pid_file(&dir, "africa-serving", pid)?;
    let agent = start_agent(
        &s.env.hub().kubeconfig,
        &dir,
        "africa",
        &[("RegionOutage", &pidfile)],
    )?;
    let hub = s.env.hub().client().await?;
    anyhow::ensure!(
        wait_agent(&hub, "africa", Duration::from_secs(20)).await,
        "the agent never came up:\n{}",
        agent.log_text()
    );
    Ok((s, agent, pid))
}

/// Waits until replica `i` answers africa again, every region is Healthy and the failback is verified (a
/// failover still under way would make the next run skip).
async fn back_on_africa(s: &Scenario, i: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        s.wait_answer(i, "127.0.0.11", Duration::from_secs(90))
            .await
            .is_some(),
        "no failback to africa"
    );
    anyhow::ensure!(
        s.wait_steady(Duration::from_secs(40)).await,
        "regions not all Healthy"
    );
    let verified = azora_tests::wait::until(Duration::from_secs(30), || async {
        s.policy_status()
            .await
            .is_ok_and(|p| p["lastFailover"]["verifiedTime"].is_string() && p["activeRegion"] == "africa")
    })
    .await;
    anyhow::ensure!(verified, "the failback to africa was never verified");
    Ok(())
}

fn outage(duration: &str, extra: Value) -> Value {
    let mut spec = json!({"fault": {"type": "RegionOutage", "region": "africa"}, "duration": duration,
                          "schedule": "0 3 1 1 *"});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    spec
}

fn finished(run: &Value) -> bool {
    run["outcome"].is_string() && run["outcome"] != "Running"
}

#[tokio::test]
async fn a_region_outage_experiment_really_stops_the_region_fails_dns_over_reverts_and_measures_the_failover()
-> anyhow::Result<()> {
    let (s, agent, pid) = setup("5s").await?;
    let hub = s.env.hub().client().await?;
    experiment(&hub, "africa-outage", outage("20s", json!({}))).await?;
    run_now(&hub, "africa-outage", "first").await?;

    // The agent really stops africa's serving process, and DNS moves away from it.
    let took = wait_process(pid, true, Duration::from_secs(40)).await;
    assert!(
        took.is_some(),
        "africa was never stopped: {:#}\n{}\n{}",
        serde_json::to_value(
            kube::Api::<kube::api::DynamicObject>::all_with(
                hub.clone(),
                &azora_tests::scenario::ar("ChaosExperiment", "chaosexperiments")
            )
            .get("africa-outage")
            .await?
        )?,
        agent.log_text(),
        s.operators[0]
            .log_text()
            .lines()
            .filter(|l| l.contains("chaos") || l.contains("ERROR") || l.contains("experiment"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        s.wait_answer(0, "127.0.0.12", Duration::from_secs(40))
            .await
            .is_some(),
        "DNS did not move to europe during the fault:\n{}",
        s.log_tail(0, 40)
    );
    let st = wait_run(&hub, "africa-outage", Duration::from_secs(150), finished).await?;
    let run = &st["lastRun"];
    assert!(!stopped(pid), "africa is still stopped after the run: {run:#}");
    assert_eq!(run["outcome"], "Succeeded", "{run:#}\n{}", s.log_tail(0, 60));
    let failover_ms = run["failoverMs"].as_u64().unwrap_or(0);
    assert!(failover_ms > 0, "no measured failover: {run:#}");
    assert_eq!(run["revertConfirmed"], true, "{run:#}");
    assert!(run["recoveryMs"].as_u64().is_some(), "{run:#}");
    let got = steps(run);
    for want in [
        "Scheduled",
        "SteadyStateOk",
        "FaultInjected",
        "FailoverObserved",
        "FaultReverted",
        "RevertConfirmed",
        "Recovered",
    ] {
        assert!(got.iter().any(|g| g == want), "timeline lacks {want}: {got:?}");
    }
    // The measured number is the policy's own verified failover, counted from the fault.
    let policy = s.policy_status().await?;
    let records: Vec<&Value> = std::iter::once(&policy["lastFailover"])
        .chain(policy["history"].as_array().into_iter().flatten())
        .collect();
    let record = records
        .iter()
        .find(|r| r["from"] == "africa" && r["reason"] == "RegionDown")
        .ok_or_else(|| anyhow::anyhow!("no RegionDown failover from africa: {policy}"))?;
    let verified: jiff::Timestamp = record["verifiedTime"].as_str().unwrap_or_default().parse()?;
    let injected: jiff::Timestamp = run["timeline"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["step"] == "FaultInjected"))
        .and_then(|e| e["time"].as_str())
        .unwrap_or_default()
        .parse()?;
    let expected = verified.duration_since(injected).as_millis();
    assert!(
        (i128::from(failover_ms) - expected).abs() <= 1,
        "failoverMs {failover_ms} is not the policy's verified time minus the injection ({expected} ms)"
    );
    assert_eq!(st["totalRuns"], 1);
    assert_eq!(st["successRate"], "100%");
    println!(
        "RegionOutage run: failover {failover_ms} ms, recovery {} ms",
        run["recoveryMs"]
    );
    let m = azora_tests::metrics_text(s.metrics[0]).await?;
    assert_eq!(
        azora_tests::metric(
            &m,
            "azora_chaos_runs_total{experiment=\"africa-outage\",outcome=\"Succeeded\"}"
        )?,
        1.0
    );
    assert_eq!(
        azora_tests::metric(&m, "azora_chaos_fault_active{experiment=\"africa-outage\"}")?,
        0.0
    );

    // The same experiment expecting a 1 s failover fails, with the measured number in the message.
    back_on_africa(&s, 0).await?;
    patch_spec(&hub, "africa-outage", json!({"expect": {"failoverWithin": "1s"}})).await?;
    // the new spec must be validated before the run
    tokio::time::sleep(Duration::from_secs(2)).await;
    run_now(&hub, "africa-outage", "second").await?;
    let st = wait_run(&hub, "africa-outage", Duration::from_secs(150), |r| {
        finished(r) && r["id"] != st["lastRun"]["id"]
    })
    .await?;
    let run = &st["lastRun"];
    assert_eq!(run["outcome"], "Failed", "{run:#}");
    let ms = run["failoverMs"].as_u64().unwrap_or(0);
    assert!(ms > 1000, "{run:#}");
    let msg = run["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("expected within 1.00s") && msg.contains(&format!("{:.2}s", ms as f64 / 1000.0)),
        "{msg}"
    );
    assert!(!stopped(pid));
    assert_eq!(st["totalRuns"], 2);
    assert_eq!(st["successRate"], "50%");
    assert_eq!(st["runs"].as_array().map(Vec::len), Some(2));
    Ok(())
}

#[tokio::test]
async fn the_agent_reverts_at_expiry_when_the_operator_is_killed_or_the_hub_is_gone_and_the_run_is_never_left_running()
-> anyhow::Result<()> {
    let (mut s, agent, pid) = setup("5s").await?;
    let hub = s.env.hub().client().await?;
    // 15 s fault: the agent's expiry is 25 s after the order.
    experiment(
        &hub,
        "killed",
        outage("15s", json!({"steadyState": {"minHealthyRegions": 2}})),
    )
    .await?;
    run_now(&hub, "killed", "1").await?;
    assert!(
        wait_process(pid, true, Duration::from_secs(40)).await.is_some(),
        "{}",
        agent.log_text()
    );
    let injected = wait_run(&hub, "killed", Duration::from_secs(20), |r| {
        steps(r).contains(&"FaultInjected".into())
    })
    .await?;
    let expires: jiff::Timestamp = injected["lastRun"]["expiresTime"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    // The operator dies mid-experiment; nobody withdraws the order.
    s.operators[0].kill();
    assert!(
        stopped(pid),
        "the fault must outlive the operator until its expiry"
    );
    let resumed = wait_process(pid, false, Duration::from_secs(40)).await;
    assert!(
        resumed.is_some(),
        "the agent never reverted at expiry:\n{}",
        agent.log_text()
    );
    let at = jiff::Timestamp::now();
    assert!(
        at >= expires,
        "reverted at {at}, before the expiry {expires}: someone else reverted it"
    );
    assert_eq!(
        status(&hub, "killed").await?["lastRun"]["outcome"],
        "Running",
        "nobody ran the operator"
    );
    // A new operator finishes the run: Aborted, never left Running.
    s.add_operator(&[])?;
    let st = wait_run(&hub, "killed", Duration::from_secs(90), finished).await?;
    let run = &st["lastRun"];
    assert_eq!(run["outcome"], "Aborted", "{run:#}");
    assert!(
        run["message"]
            .as_str()
            .unwrap_or_default()
            .contains("interrupted"),
        "{run:#}"
    );
    assert_eq!(run["revertConfirmed"], true, "{run:#}");
    assert!(steps(run).contains(&"Interrupted".to_string()));

    // Wait for africa to serve again, then the hub API server itself stops mid-experiment.
    back_on_africa(&s, 1).await?;
    run_now(&hub, "killed", "2").await?;
    assert!(
        wait_process(pid, true, Duration::from_secs(40)).await.is_some(),
        "{}",
        agent.log_text()
    );
    let st = wait_run(&hub, "killed", Duration::from_secs(20), |r| {
        r["outcome"] == "Running" && steps(r).contains(&"FaultInjected".into())
    })
    .await?;
    let expires: jiff::Timestamp = st["lastRun"]["expiresTime"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    s.env.hub().pause();
    let resumed = wait_process(pid, false, Duration::from_secs(40)).await;
    let at = jiff::Timestamp::now();
    s.env.hub().resume();
    assert!(
        resumed.is_some(),
        "the agent did not revert while the hub was gone:\n{}",
        agent.log_text()
    );
    assert!(at >= expires, "reverted at {at}, before the expiry {expires}");
    let st = wait_run(&hub, "killed", Duration::from_secs(120), |r| {
        finished(r) && r["id"] != run["id"]
    })
    .await?;
    let run2 = &st["lastRun"];
    assert!(
        ["Aborted", "Succeeded", "Failed"].contains(&run2["outcome"].as_str().unwrap_or_default()),
        "{run2:#}"
    );
    assert_eq!(run2["revertConfirmed"], true, "{run2:#}");
    assert!(!stopped(pid));
    Ok(())
}

#[tokio::test]
async fn another_region_going_down_aborts_at_once_none_starts_during_a_real_outage_and_the_kill_switch_and_deletion_revert()
-> anyhow::Result<()> {
    let (s, agent, pid) = setup("5s").await?;
    let hub = s.env.hub().client().await?;
    experiment(
        &hub,
        "abortable",
        outage("90s", json!({"steadyState": {"minHealthyRegions": 2}})),
    )
    .await?;
    run_now(&hub, "abortable", "1").await?;
    assert!(
        wait_process(pid, true, Duration::from_secs(40)).await.is_some(),
        "{}",
        agent.log_text()
    );
    wait_run(&hub, "abortable", Duration::from_secs(20), |r| {
        steps(r).contains(&"FaultInjected".into())
    })
    .await?;
    // A real outage of asia while africa is out: the experiment aborts and reverts long before its 90 s.
    s.regions[2].stop();
    let resumed = wait_process(pid, false, Duration::from_secs(45)).await;
    assert!(
        resumed.is_some(),
        "africa not reverted after asia went down:\n{}",
        s.log_tail(0, 40)
    );
    let st = wait_run(&hub, "abortable", Duration::from_secs(60), finished).await?;
    let run = &st["lastRun"];
    assert_eq!(run["outcome"], "Aborted", "{run:#}");
    assert!(
        run["message"].as_str().unwrap_or_default().contains("asia"),
        "{run:#}"
    );
    assert!(steps(run).contains(&"Aborted".to_string()));
    assert_eq!(run["revertConfirmed"], true);
    let m = azora_tests::metrics_text(s.metrics[0]).await?;
    assert_eq!(
        azora_tests::metric(
            &m,
            "azora_chaos_runs_total{experiment=\"abortable\",outcome=\"Aborted\"}"
        )?,
        1.0
    );

    // asia is still down: once africa is back, an experiment asked for now is skipped with the reason, and
    // nothing is stopped.
    let africa_back = azora_tests::wait::until(Duration::from_secs(60), || async {
        s.region_status("africa")
            .await
            .is_ok_and(|r| r["verdict"] == "Healthy")
    })
    .await;
    assert!(africa_back, "africa never Healthy again after the revert");
    run_now(&hub, "abortable", "2").await?;
    let st = wait_run(&hub, "abortable", Duration::from_secs(30), |r| {
        r["outcome"] == "Skipped"
    })
    .await?;
    let why = st["lastRun"]["message"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("asia") && why.contains("real"), "{why}");
    assert!(!stopped(pid));
    assert_eq!(st["skippedRuns"], 1);
    assert_eq!(
        st["totalRuns"], 1,
        "a skipped run is not counted in the success rate"
    );

    // The kill switch: present → every run refused with its reason.
    s.regions[2].resume();
    assert!(s.wait_steady(Duration::from_secs(60)).await);
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(hub.clone(), "default");
    cms.create(
        &Default::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "azora-chaos-halt"}, "data": {"reason": "incident 4711"}}),
        )?,
    )
    .await?;
    run_now(&hub, "abortable", "3").await?;
    let st = wait_run(&hub, "abortable", Duration::from_secs(30), |r| {
        r["outcome"] == "Skipped"
            && r["message"]
                .as_str()
                .unwrap_or_default()
                .contains("incident 4711")
    })
    .await?;
    assert_eq!(st["skippedRuns"], 2);
    assert!(!stopped(pid));

    // The kill switch set during a run aborts it and reverts at once.
    cms.delete("azora-chaos-halt", &Default::default()).await?;
    let before = st["lastRun"]["id"].clone();
    run_now(&hub, "abortable", "4").await?;
    assert!(
        wait_process(pid, true, Duration::from_secs(40)).await.is_some(),
        "{}",
        status(&hub, "abortable").await?["lastRun"]
    );
    cms.create(
        &Default::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "azora-chaos-halt"}, "data": {"reason": "game over"}}),
        )?,
    )
    .await?;
    assert!(
        wait_process(pid, false, Duration::from_secs(30)).await.is_some(),
        "the kill switch did not revert the fault"
    );
    let st = wait_run(&hub, "abortable", Duration::from_secs(60), |r| {
        finished(r) && r["id"] != before
    })
    .await?;
    assert_eq!(st["lastRun"]["outcome"], "Aborted", "{:#}", st["lastRun"]);
    assert!(
        st["lastRun"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("game over"),
        "{:#}",
        st["lastRun"]
    );

    // An experiment deleted mid-run: nobody will finish its run, so its order is withdrawn and the agent
    // reverts long before the 100 s expiry.
    cms.delete("azora-chaos-halt", &Default::default()).await?;
    run_now(&hub, "abortable", "5").await?;
    assert!(
        wait_process(pid, true, Duration::from_secs(40)).await.is_some(),
        "{}",
        status(&hub, "abortable").await?["lastRun"]
    );
    let experiments: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        hub.clone(),
        &azora_tests::scenario::ar("ChaosExperiment", "chaosexperiments"),
    );
    experiments.delete("abortable", &Default::default()).await?;
    assert!(
        wait_process(pid, false, Duration::from_secs(30)).await.is_some(),
        "the deleted experiment's fault was left in place"
    );
    Ok(())
}

#[tokio::test]
async fn an_object_store_outage_really_hangs_the_regions_s3_server_and_its_end_is_confirmed()
-> anyhow::Result<()> {
    let mut s = Scenario::start(3).await?;
    s.policy("5s", json!({})).await?;
    let hub = s.env.hub().client().await?;
    let dir = s.env.dir.path().to_path_buf();
    let s3 = attach_s3(&s, "europe").await?;
    s.add_operator(&[])?;
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some()
    );
    assert!(s.wait_steady(Duration::from_secs(40)).await);
    let pidfile = pid_file(&dir, "s3-europe", s3.pid())?;
    let agent = start_agent(
        &s.env.hub().kubeconfig,
        &dir,
        "europe",
        &[("ObjectStoreOutage", &pidfile)],
    )?;
    assert!(
        wait_agent(&hub, "europe", Duration::from_secs(20)).await,
        "{}",
        agent.log_text()
    );
    quiet_fault_now(
        &hub,
        "europe-s3",
        json!({"type": "ObjectStoreOutage", "region": "europe"}),
        "10s",
    )
    .await?;
    assert!(
        wait_process(s3.pid(), true, Duration::from_secs(40))
            .await
            .is_some(),
        "the S3 server was never stopped: {}\n{}",
        status(&hub, "europe-s3").await?["lastRun"],
        agent.log_text()
    );
    // Really gone for a client: a listing does not answer.
    let listed = tokio::time::timeout(Duration::from_secs(2), s3.store("azora-europe").list("")).await;
    assert!(
        !matches!(listed, Ok(Ok(_))),
        "the bucket still lists during the outage"
    );
    let st = wait_run(&hub, "europe-s3", Duration::from_secs(90), finished).await?;
    let run = &st["lastRun"];
    assert_eq!(run["outcome"], "Succeeded", "{run:#}");
    assert_eq!(run["revertConfirmed"], true, "{run:#}");
    assert!(run["failoverMs"].is_null(), "{run:#}");
    assert!(!stopped(s3.pid()));
    let listed = tokio::time::timeout(Duration::from_secs(5), s3.store("azora-europe").list("")).await;
    assert!(
        matches!(listed, Ok(Ok(_))),
        "the bucket does not list after the revert"
    );
    // The agent cannot make what it has no target for: refused, nothing changed, the run says why.
    run_again(
        &hub,
        "europe-s3",
        json!({"fault": {"type": "VaultOutage", "region": "europe"}}),
        "2",
        &run["id"],
        "Aborted",
        "no target for VaultOutage",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_drain_outage_moves_dns_without_harming_the_region_and_ends_with_the_run() -> anyhow::Result<()> {
    let (s, _agent, pid) = setup("5s").await?;
    let hub = s.env.hub().client().await?;
    experiment(
        &hub,
        "africa-drain",
        outage(
            "12s",
            json!({"fault": {"type": "RegionOutage", "region": "africa", "mode": "Drain"},
                             "expect": {"failoverWithin": "30s"}}),
        ),
    )
    .await?;
    run_now(&hub, "africa-drain", "1").await?;
    assert!(
        s.wait_answer(0, "127.0.0.12", Duration::from_secs(40))
            .await
            .is_some(),
        "DNS did not move to europe during the drain: {}",
        status(&hub, "africa-drain").await?["lastRun"]
    );
    // Nothing was harmed: africa's process runs and its verdict stays Healthy.
    assert!(!stopped(pid));
    assert_eq!(s.region_status("africa").await?["verdict"], "Healthy");
    let st = wait_run(&hub, "africa-drain", Duration::from_secs(120), finished).await?;
    let run = &st["lastRun"];
    assert_eq!(run["outcome"], "Succeeded", "{run:#}");
    assert!(run["failoverMs"].as_u64().is_some_and(|ms| ms > 0), "{run:#}");
    assert_eq!(run["revertConfirmed"], true);
    // The policy's own record dates the failure from the drain, not from an older verdict change.
    let injected: jiff::Timestamp = run["timeline"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["step"] == "FaultInjected"))
        .and_then(|e| e["time"].as_str())
        .unwrap_or_default()
        .parse()?;
    let policy = s.policy_status().await?;
    let record = std::iter::once(&policy["lastFailover"])
        .chain(policy["history"].as_array().into_iter().flatten())
        .find(|r| r["from"] == "africa" && r["reason"] == "RegionDown")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no failover from africa: {policy}"))?;
    let detected: jiff::Timestamp = record["detectedTime"].as_str().unwrap_or_default().parse()?;
    assert!(
        detected >= injected.checked_sub(jiff::SignedDuration::from_secs(1))?,
        "detected {detected} before the drain {injected}: {record}"
    );
    // The drain ended with the run: traffic returns after the policy's hold-down.
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some(),
        "no failback after the drain ended"
    );
    Ok(())
}

#[tokio::test]
async fn network_partition_and_latency_are_made_on_the_agents_link_measured_and_really_end()
-> anyhow::Result<()> {
    let mut s = Scenario::start(3).await?;
    s.policy("5s", json!({})).await?;
    s.add_operator(&[])?;
    anyhow::ensure!(
        s.wait_steady(Duration::from_secs(60)).await,
        "regions never all Healthy with the policy answering"
    );
    let hub = s.env.hub().client().await?;
    let dir = s.env.dir.path().to_path_buf();
    // europe reaches africa's service through africa's agent; the direct path stays as it is.
    let africa = s.regions[0].addr;
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", azora_tests::free_port()?).parse()?;
    let agent = start_agent_with_links(
        &s.env.hub().kubeconfig,
        &dir,
        "africa",
        &[],
        &[format!("europe={listen}->{africa}")],
    )?;
    anyhow::ensure!(
        wait_agent(&hub, "africa", Duration::from_secs(20)).await,
        "the agent never came up:\n{}",
        agent.log_text()
    );
    let before = best_http_round_trip(listen, 3, Duration::from_secs(5))
        .await
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no answer through the link before any fault:\n{}",
                agent.log_text()
            )
        })?;

    // Latency: measured here through the link, and by the agent.
    experiment(
        &hub,
        "europe-africa",
        json!({"fault": {"type": "NetworkLatency", "region": "africa", "peerRegion": "europe", "latency": "400ms"},
               "duration": "12s", "schedule": "0 3 1 1 *", "expect": {"noFailover": true}}),
    )
    .await?;
    run_now(&hub, "europe-africa", "1").await?;
    let run = wait_injected(&hub, "europe-africa", Duration::from_secs(60)).await?;
    let slow = best_http_round_trip(listen, 3, Duration::from_secs(5)).await;
    let direct = best_http_round_trip(africa, 3, Duration::from_secs(5)).await;
    let added = slow.map(|d| d.saturating_sub(before));
    assert!(
        added.is_some_and(|a| a >= Duration::from_millis(300)),
        "added round trip through the link {added:?} (before {before:?}, during {slow:?}): {run:#}"
    );
    assert!(
        direct.is_some_and(|d| slow.is_some_and(|s| d + Duration::from_millis(250) < s)),
        "the direct path got slower too: direct {direct:?}, through the link {slow:?}"
    );
    let st = wait_run(&hub, "europe-africa", Duration::from_secs(90), finished).await?;
    let run = &st["lastRun"];
    assert_eq!(run["outcome"], "Succeeded", "{run:#}\n{}", agent.log_text());
    assert_eq!(run["revertConfirmed"], true, "{run:#}");
    let injected = run["timeline"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["step"] == "FaultInjected"))
        .and_then(|e| e["message"].as_str())
        .unwrap_or_default()
        .to_string();
    let measured: u64 = injected
        .split("measured +")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("the agent measured nothing: {injected}"))?;
    assert!((300..3000).contains(&measured), "{injected}");
    let after = best_http_round_trip(listen, 3, Duration::from_secs(5)).await;
    assert!(
        after.is_some_and(|d| d < before + Duration::from_millis(200)),
        "the link is still slow after the revert: {after:?} (before {before:?})"
    );

    // Partition: nothing crosses the link, the direct path answers, the link passes again after.
    patch_spec(
        &hub,
        "europe-africa",
        json!({"fault": {"type": "NetworkPartition", "latency": null}}),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    run_now(&hub, "europe-africa", "2").await?;
    let first = run["id"].clone();
    let run = wait_run(&hub, "europe-africa", Duration::from_secs(60), |r| {
        r["id"] != first && (steps(r).iter().any(|s| s == "FaultInjected") || finished(r))
    })
    .await?["lastRun"]
        .clone();
    assert_eq!(run["outcome"], "Running", "{run:#}");
    assert_eq!(
        http_round_trip(listen, Duration::from_secs(2)).await,
        None,
        "an answer crossed the partition"
    );
    assert!(http_round_trip(africa, Duration::from_secs(2)).await.is_some());
    let st = wait_run(&hub, "europe-africa", Duration::from_secs(90), |r| {
        r["id"] == run["id"] && finished(r)
    })
    .await?;
    let run = &st["lastRun"];
    assert_eq!(run["outcome"], "Succeeded", "{run:#}\n{}", agent.log_text());
    assert_eq!(run["revertConfirmed"], true, "{run:#}");
    assert!(
        http_round_trip(listen, Duration::from_secs(5)).await.is_some(),
        "the link does not pass after the partition healed"
    );

    // A peer the agent has no link from: refused, the run says why, nothing changed.
    run_again(
        &hub,
        "europe-africa",
        json!({"fault": {"peerRegion": "asia"}}),
        "3",
        &run["id"],
        "Aborted",
        "no link from asia",
    )
    .await?;
    assert!(http_round_trip(listen, Duration::from_secs(5)).await.is_some());
    Ok(())
}

#[tokio::test]
async fn a_dns_failure_and_a_vault_outage_really_silence_the_regions_servers_and_their_end_is_confirmed()
-> anyhow::Result<()> {
    let mut s = Scenario::start(3).await?;
    s.policy("5s", json!({})).await?;
    let hub = s.env.hub().client().await?;
    let dir = s.env.dir.path().to_path_buf();
    // europe's authoritative DNS server (Knot) and its Vault (OpenBao).
    let knot = azora_tests::knot::Knot::start("europe.azora.")?;
    let bao = azora_tests::openbao::OpenBao::start(&dir, "europe").await?;
    let regions: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(hub.clone(), &azora_tests::scenario::ar("Region", "regions"));
    regions
        .patch(
            "europe",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"vault": {"address": bao.address, "kvMount": "secret"}}}),
            ),
        )
        .await?;
    s.add_operator(&[])?;
    anyhow::ensure!(
        s.wait_steady(Duration::from_secs(60)).await,
        "regions never all Healthy with the policy answering"
    );
    let knot_pid = knot.pid().ok_or_else(|| anyhow::anyhow!("knot has no process"))?;
    let bao_pid = bao
        .pid()
        .ok_or_else(|| anyhow::anyhow!("OpenBao has no process"))?;
    let dns_pidfile = pid_file(&dir, "knot-europe", knot_pid)?;
    let vault_pidfile = pid_file(&dir, "openbao-europe", bao_pid)?;
    let agent = start_agent(
        &s.env.hub().kubeconfig,
        &dir,
        "europe",
        &[("DnsFailure", &dns_pidfile), ("VaultOutage", &vault_pidfile)],
    )?;
    anyhow::ensure!(
        wait_agent(&hub, "europe", Duration::from_secs(20)).await,
        "the agent never came up:\n{}",
        agent.log_text()
    );
    let soa = || async {
        azora_adapters::dns::verify::epoch_of(knot.addr, "europe.azora.", Duration::from_secs(1))
            .await
            .is_ok()
    };
    let vault_addr: std::net::SocketAddr = bao.address.trim_start_matches("http://").parse()?;
    let vault_health = || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ask = async {
            let mut c = tokio::net::TcpStream::connect(vault_addr).await.ok()?;
            c.write_all(b"GET /v1/sys/health HTTP/1.0\r\n\r\n").await.ok()?;
            let mut answer = Vec::new();
            c.read_to_end(&mut answer).await.ok()?;
            let text = String::from_utf8_lossy(&answer).to_string();
            Some(text.lines().next().is_some_and(|l| l.contains(" 200 ")))
        };
        tokio::time::timeout(Duration::from_secs(2), ask)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    };
    assert!(
        soa().await && vault_health().await,
        "not serving before the faults"
    );

    for (fault, pid) in [("DnsFailure", knot_pid), ("VaultOutage", bao_pid)] {
        let name = fault.to_lowercase();
        experiment(
            &hub,
            &name,
            json!({"fault": {"type": fault, "region": "europe"}, "duration": "5s",
                   "schedule": "0 3 1 1 *", "expect": {"noFailover": true}}),
        )
        .await?;
        run_now(&hub, &name, "1").await?;
        let run = wait_injected(&hub, &name, Duration::from_secs(60)).await?;
        assert!(stopped(pid), "{fault}: the server is not stopped: {run:#}");
        // Really silent for a client.
        if fault == "DnsFailure" {
            assert!(!soa().await, "the DNS server still answers");
        } else {
            assert!(!vault_health().await, "Vault still answers");
        }
        let st = wait_run(&hub, &name, Duration::from_secs(90), finished).await?;
        let run = &st["lastRun"];
        assert_eq!(
            run["outcome"],
            "Succeeded",
            "{fault}: {run:#}\n{}",
            agent.log_text()
        );
        assert_eq!(run["revertConfirmed"], true, "{fault}: {run:#}");
        assert!(!stopped(pid), "{fault}: still stopped after the run");
        assert!(
            steps(run).iter().any(|s| s == "RevertConfirmed"),
            "{fault}: {run:#}"
        );
    }
    assert!(soa().await, "DNS does not answer after the revert");
    assert!(vault_health().await, "Vault does not answer after the revert");
    // The agent SIGKILLed mid-fault with its state file lost: the next instance finds the server stopped under
    // the live order and adopts it — it stays stopped while the order lives and is resumed when the run ends.
    quiet_fault_now(
        &hub,
        "dns-adopt",
        json!({"type": "DnsFailure", "region": "europe"}),
        "15s",
    )
    .await?;
    wait_injected(&hub, "dns-adopt", Duration::from_secs(60)).await?;
    drop(agent);
    std::fs::remove_dir_all(dir.join("agent-europe"))?;
    let agent = start_agent(
        &s.env.hub().kubeconfig,
        &dir,
        "europe",
        &[("DnsFailure", &dns_pidfile), ("VaultOutage", &vault_pidfile)],
    )?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        stopped(knot_pid),
        "the new agent resumed a target a live order holds:\n{}",
        agent.log_text()
    );
    let st = wait_run(&hub, "dns-adopt", Duration::from_secs(90), finished).await?;
    let run = &st["lastRun"];
    assert_eq!(run["outcome"], "Succeeded", "{run:#}\n{}", agent.log_text());
    assert_eq!(run["revertConfirmed"], true, "{run:#}");
    assert!(!stopped(knot_pid), "the adopted fault was never reverted");
    assert!(soa().await);
    // The agent's state file lost while a target is stopped: the next agent resumes what nothing holds.
    drop(agent);
    knot.stop();
    assert!(
        wait_process(knot_pid, true, Duration::from_secs(5))
            .await
            .is_some()
    );
    std::fs::remove_dir_all(dir.join("agent-europe"))?;
    let agent = start_agent(
        &s.env.hub().kubeconfig,
        &dir,
        "europe",
        &[("DnsFailure", &dns_pidfile), ("VaultOutage", &vault_pidfile)],
    )?;
    assert!(
        wait_process(knot_pid, false, Duration::from_secs(20))
            .await
            .is_some(),
        "a stopped target with no fault on record stayed stopped:\n{}",
        agent.log_text()
    );
    assert!(soa().await);
    Ok(())
}

#[tokio::test]
async fn pod_kill_deletes_the_oldest_matching_pods_in_the_regional_cluster_and_measures_their_return()
-> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, PostParams};
    let mut fleet = azora_tests::fleet::Fleet::start(&["africa", "europe"]).await?;
    // The operator reaches africa as the least-privilege identity of regions/regional-cluster/ with the
    // PodKill role (chaos-rbac.yaml): pods get, list and delete, nothing more.
    fleet.least_privilege_with("africa", &["chaos-rbac.yaml"]).await?;
    fleet.start_operator(&[])?;
    let hub = fleet.hub().await?;
    let africa = fleet.regional("africa").await?;
    // The example agent Deployment of regions/regional-cluster/ is a valid object for a real API server.
    let server = fleet
        .env
        .server("africa")
        .ok_or_else(|| anyhow::anyhow!("no africa"))?;
    let out = std::process::Command::new(azora_tests::tool("kubectl")?)
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .args(["apply", "--server-side", "--dry-run=server", "-f"])
        .arg(azora_tests::repo_root().join("regions/regional-cluster/agent.yaml"))
        .output()?;
    assert!(
        out.status.success(),
        "agent.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods: Api<Pod> = Api::namespaced(africa.clone(), "default");
    let pod = |name: &str, app: &str| -> anyhow::Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "registry.invalid/web:1"}]}
        }))?)
    };
    // No kubelet here: the test sets what one would report.
    let set_status = |name: &'static str, status: serde_json::Value| {
        let pods = pods.clone();
        async move {
            pods.patch_status(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"status": status})),
            )
            .await
            .map(|_| ())
        }
    };
    let ready = || {
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
                          "lastTransitionTime": jiff::Timestamp::now().to_string()}]})
    };
    // web-0 has ended (Succeeded): the oldest, but not a living replica, so never a target.
    for name in ["web-0", "web-1", "web-2", "web-3"] {
        pods.create(&PostParams::default(), &pod(name, "web")?).await?;
        // Creation times are whole seconds: the oldest are the first.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    set_status("web-0", json!({"phase": "Succeeded"})).await?;
    for name in ["web-1", "web-2", "web-3"] {
        set_status(name, ready()).await?;
    }
    pods.create(&PostParams::default(), &pod("db-1", "db")?).await?;
    let healthy = azora_tests::wait::until(Duration::from_secs(60), || async {
        let regions: Api<kube::api::DynamicObject> =
            Api::all_with(hub.clone(), &azora_tests::scenario::ar("Region", "regions"));
        regions.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items.len() == 2 && l.items.iter().all(|r| r.data["status"]["verdict"] == "Healthy")
        })
    })
    .await;
    anyhow::ensure!(healthy, "regions never Healthy:\n{}", fleet.log());
    experiment(
        &hub,
        "web-kill",
        json!({"fault": {"type": "PodKill", "region": "africa",
                         "pods": {"namespace": "default", "selector": "app=web", "maxPods": 2,
                                  "gracePeriodSeconds": 0}},
               "duration": "5s", "schedule": "0 3 1 1 *", "expect": {"recoveryWithin": "1m"},
               "steadyState": {"minHealthyRegions": 2, "tenantsReady": false}}),
    )
    .await?;
    run_now(&hub, "web-kill", "1").await?;
    let run = wait_injected(&hub, "web-kill", Duration::from_secs(60)).await?;
    let left: Vec<String> = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(left, vec!["db-1", "web-0", "web-3"], "{run:#}");
    // Their controller brings them back (here: the test, as a ReplicaSet would), not Ready at first: the
    // run is not recovered while fewer pods are Ready than before.
    for name in ["web-1b", "web-2b"] {
        pods.create(&PostParams::default(), &pod(name, "web")?).await?;
    }
    let confirmed = wait_run(&hub, "web-kill", Duration::from_secs(60), |run| {
        steps(run).iter().any(|s| s == "RevertConfirmed")
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = status(&hub, "web-kill").await?;
    assert!(
        !steps(&st["lastRun"]).iter().any(|s| s == "Recovered"),
        "recovered with the replacements not Ready: {:#}\n(at revert: {:#})",
        st["lastRun"],
        confirmed["lastRun"]
    );
    for name in ["web-1b", "web-2b"] {
        set_status(name, ready()).await?;
    }
    let st = wait_run(&hub, "web-kill", Duration::from_secs(90), finished).await?;
    let run = &st["lastRun"];
    assert_eq!(run["outcome"], "Succeeded", "{run:#}\n{}", fleet.log());
    assert_eq!(run["revertConfirmed"], true, "{run:#}");
    // Recovery counts until the replacements turned Ready (at least the 3 s held back above).
    assert!(run["recoveryMs"].as_u64().is_some_and(|ms| ms >= 3000), "{run:#}");
    let injected = steps(run);
    assert!(injected.iter().any(|s| s == "Recovered"), "{run:#}");
    // A selector nothing matches: skipped with the reason, nothing deleted.
    run_again(
        &hub,
        "web-kill",
        json!({"fault": {"pods": {"namespace": "default", "selector": "app=nothing"}}}),
        "2",
        &run["id"],
        "Skipped",
        "matches app=nothing",
    )
    .await?;
    assert_eq!(pods.list(&ListParams::default()).await?.items.len(), 5);
    Ok(())
}
