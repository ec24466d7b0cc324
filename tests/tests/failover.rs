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
    Ok(())
}
