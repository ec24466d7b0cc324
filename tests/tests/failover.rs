//! GeoDNS failover end to end: real simulated region processes, outages made with signals, the operator
//! binary with its embedded DNS server, answers read with hickory-resolver.

use std::time::{Duration, Instant};

use azora_tests::scenario::Scenario;

#[tokio::test]
async fn an_outage_of_the_active_region_moves_dns_to_the_next_healthy_one_and_fails_back_after_hold_down()
-> anyhow::Result<()> {
    let mut s = Scenario::start(3).await?;
    s.policy("20s", serde_json::json!({})).await?;
    s.add_operator(&[])?;
    let initial = s.wait_answer(0, "127.0.0.11", Duration::from_secs(60)).await;
    assert!(
        initial.is_some(),
        "DNS never answered africa:\n{}",
        s.log_tail(0, 30)
    );
    assert!(
        s.wait_all_healthy(Duration::from_secs(30)).await,
        "regions never all Healthy"
    );

    let onset = Instant::now();
    s.regions[0].stop(); // SIGSTOP: hung connections
    let moved = s.wait_answer(0, "127.0.0.12", Duration::from_secs(40)).await;
    assert!(
        moved.is_some(),
        "DNS did not move to europe:\n{}",
        s.log_tail(0, 40)
    );
    println!(
        "africa SIGSTOPped: DNS answered europe after {:.2}s",
        onset.elapsed().as_secs_f64()
    );

    let st = s.policy_status().await?;
    let last = &st["lastFailover"];
    assert_eq!(last["from"], "africa", "{st}");
    assert_eq!(last["to"], "europe");
    assert_eq!(last["reason"], "RegionDown");
    for t in ["detectedTime", "decidedTime", "dnsUpdatedTime", "verifiedTime"] {
        assert!(last[t].is_string(), "timeline lacks {t}: {last}");
    }
    assert_eq!(st["activeRegion"], "europe");
    assert!(st["epoch"].as_u64().unwrap_or(0) >= 2, "{st}");
    assert_eq!(s.region_status("africa").await?["verdict"], "Down");
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(s.env.hub().client().await?, "default");
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for r in ["RegionDown", "FailoverDecided", "FailoverVerified"] {
        assert!(reasons.iter().any(|x| x == r), "no {r} Event: {reasons:?}");
    }
    assert_eq!(s.region_status("europe").await?["serving"], true);

    s.regions[0].resume();
    let back = Instant::now();
    let failback = s.wait_answer(0, "127.0.0.11", Duration::from_secs(90)).await;
    assert!(failback.is_some(), "no failback:\n{}", s.log_tail(0, 40));
    let took = back.elapsed();
    println!(
        "africa resumed: failback after {:.1}s (3 good rounds + 20s hold-down)",
        took.as_secs_f64()
    );
    assert!(
        took >= Duration::from_secs(20),
        "failback must wait for the hold-down, took {took:?}"
    );
    let st = s.policy_status().await?;
    assert_eq!(st["lastFailover"]["reason"], "Failback");
    assert_eq!(st["history"][0]["reason"], "RegionDown");
    assert_eq!(st["history"][1]["reason"], "Initial");
    assert_eq!(
        st["history"][1]["to"], "africa",
        "first answers wait for every region's first verdict"
    );
    assert_eq!(
        st["epoch"], 3,
        "initial answer, failover, failback: no churn at startup: {st}"
    );
    // Each decision is its own Event with its own direction (a repeat of one reason within minutes is
    // never shown with the first one's note).
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(s.env.hub().client().await?, "default");
    let notes: Vec<String> = events
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailoverDecided"))
        .filter_map(|e| e.note)
        .collect();
    for want in ["africa -> europe (RegionDown)", "europe -> africa (Failback)"] {
        assert!(
            notes.iter().any(|n| n.starts_with(want)),
            "no FailoverDecided Event saying {want}: {notes:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_region_flapping_every_few_seconds_does_not_make_dns_flap() -> anyhow::Result<()> {
    let mut s = Scenario::start(2).await?;
    s.policy("30s", serde_json::json!({})).await?;
    s.add_operator(&[])?;
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some()
    );
    assert!(s.wait_all_healthy(Duration::from_secs(30)).await);
    // africa is killed for 8 s (refused connections), up 5 s, for 75 s: each outage is long enough to be
    // declared down, no up-time long enough to be trusted again (3 good rounds at 5 s, then a 30 s hold-down).
    let mut answers: Vec<String> = Vec::new();
    let start = Instant::now();
    let mut down = false;
    let mut next_toggle = Instant::now();
    while start.elapsed() < Duration::from_secs(75) {
        if Instant::now() >= next_toggle {
            if down {
                s.regions[0].restart()?;
            } else {
                s.regions[0].kill();
            }
            down = !down;
            next_toggle = Instant::now() + Duration::from_secs(if down { 8 } else { 5 });
        }
        let a = format!("{:?}", s.answer(0).await);
        if answers.last() != Some(&a) {
            answers.push(a);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if down {
        s.regions[0].restart()?;
    }
    println!("answers seen while flapping: {answers:?}");
    assert_eq!(
        answers,
        vec!["[127.0.0.11]", "[127.0.0.12]"],
        "one failover to europe, then no flapping\n{}",
        s.log_tail(0, 80)
    );
    let st = s.policy_status().await?;
    assert_eq!(st["lastFailover"]["reason"], "RegionDown", "{st}");
    assert_eq!(
        st["history"].as_array().map_or(0, Vec::len),
        1,
        "initial answer, then one failover: {st}"
    );
    Ok(())
}

#[tokio::test]
async fn one_observer_cut_off_from_a_healthy_region_causes_no_failover() -> anyhow::Result<()> {
    let mut s = Scenario::start(2).await?;
    // africa refuses connections from 127.0.0.50 only: the probe agent there is cut off from it.
    s.regions[0].kill();
    s.regions[0] = azora_tests::SimRegion::start("africa", "127.0.0.11", &["127.0.0.50"])?;
    // Recreate the Region with the restarted process's port.
    let client = s.env.hub().client().await?;
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(client.clone(), &azora_tests::scenario::ar("Region", "regions"));
    api.delete("africa", &Default::default()).await?;
    azora_tests::wait::until(Duration::from_secs(10), || async {
        api.get_opt("africa").await.ok().flatten().is_none()
    })
    .await;
    azora_tests::scenario::create(
        &client,
        "regions",
        s.regions[0].region(10, "Africa", "127.0.0.11"),
    )
    .await?;
    s.policy("20s", serde_json::json!({})).await?;
    s.add_operator(&[])?;
    let agent_log = s.env.dir.path().join("agent.log");
    let agent_metrics = format!("127.0.0.1:{}", azora_tests::free_port()?);
    let mut agent = std::process::Command::new(azora_tests::operator::operator_bin()?)
        .args([
            "probe",
            "--observer",
            "agent-cut-off",
            "--probe-source",
            "127.0.0.50",
            "--metrics-addr",
            &agent_metrics,
        ])
        .env_clear()
        .env("KUBECONFIG", &s.env.hub().kubeconfig)
        .stdout(std::fs::File::create(&agent_log)?)
        .stderr(std::fs::File::create(agent_log.with_extension("err"))?)
        .spawn()?;
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some()
    );
    // Two observers now: the replica sees africa healthy, the agent sees it down.
    let degraded = azora_tests::wait::until(Duration::from_secs(40), || async {
        s.region_status("africa")
            .await
            .map(|st| st["verdict"] == "Degraded")
            .unwrap_or(false)
    })
    .await;
    let st = s.region_status("africa").await?;
    let _ = agent.kill();
    assert!(
        degraded,
        "africa should be Degraded (one of two observers cut off): {st}"
    );
    let observers = st["observers"].as_array().cloned().unwrap_or_default();
    assert!(
        observers
            .iter()
            .any(|o| o["name"] == "agent-cut-off" && o["verdict"] == "Down"),
        "{st}"
    );
    assert!(
        observers
            .iter()
            .any(|o| o["name"] == "replica-0" && o["verdict"] == "Healthy"),
        "{st}"
    );
    // DNS stays on africa: no failover for a partial view.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        s.answer(0).await,
        vec!["127.0.0.11".parse::<std::net::Ipv4Addr>()?]
    );
    let policy = s.policy_status().await?;
    assert_eq!(policy["activeRegion"], "africa", "{policy}");
    assert!(
        policy["history"].as_array().is_none_or(Vec::is_empty),
        "no failover happened: {policy}"
    );
    Ok(())
}

#[tokio::test]
async fn cordoned_regions_get_no_answers() -> anyhow::Result<()> {
    let mut s = Scenario::start(2).await?;
    s.policy("20s", serde_json::json!({})).await?;
    s.add_operator(&[])?;
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some()
    );
    let client = s.env.hub().client().await?;
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(client, &azora_tests::scenario::ar("Region", "regions"));
    let patch = serde_json::json!({"spec": {"cordoned": true}});
    api.patch(
        "africa",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    let moved = s.wait_answer(0, "127.0.0.12", Duration::from_secs(20)).await;
    assert!(
        moved.is_some(),
        "cordoned africa still answered:\n{}",
        s.log_tail(0, 30)
    );
    let verdict = azora_tests::wait::until(Duration::from_secs(20), || async {
        s.region_status("africa")
            .await
            .map(|st| st["verdict"] == "Cordoned")
            .unwrap_or(false)
    })
    .await;
    assert!(verdict, "{}", s.region_status("africa").await?);
    assert_eq!(s.policy_status().await?["lastFailover"]["reason"], "Cordoned");
    // Healthy or not, a cordoned region never comes back on its own.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        s.answer(0).await,
        vec!["127.0.0.12".parse::<std::net::Ipv4Addr>()?]
    );
    Ok(())
}
