//! RFC 2136 with TSIG against a real Knot DNS: the operator's updates reach Knot and are verified; a
//! deposed leader's late update is refused by Knot itself (epoch prerequisite); an operator killed in the
//! middle of a failover converges to the right answer after restart, without a second failover.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use azora_adapters::dns::rfc2136::{TsigKey, send_update};
use azora_adapters::dns::{DnsError, Target, ZoneData, verify};
use azora_tests::knot::Knot;
use azora_tests::scenario::Scenario;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;

fn zone(epoch: u64, ip: &str) -> ZoneData {
    let mut answers = BTreeMap::new();
    answers.insert(
        "default".to_string(),
        vec![Target {
            region: "r".into(),
            ipv4: vec![ip.parse().unwrap()],
            ipv6: vec![],
            weight: 1,
        }],
    );
    ZoneData {
        zone: "test.azora.".into(),
        hostnames: vec!["api".into()],
        ttl: 5,
        epoch,
        answers,
    }
}

fn key(k: &Knot) -> TsigKey {
    k.tsig_key().unwrap()
}

/// Waits until the policy's last failover has been verified.
async fn verified(s: &azora_tests::scenario::Scenario, timeout: Duration) -> bool {
    azora_tests::wait::until(timeout, || async {
        s.policy_status()
            .await
            .map(|st| st["lastFailover"]["verifiedTime"].is_string())
            .unwrap_or(false)
    })
    .await
}

async fn knot_answer(k: &Knot) -> Vec<std::net::Ipv4Addr> {
    verify::resolve_a(k.addr, "api.test.azora.", Duration::from_millis(500))
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn a_deposed_leaders_late_update_is_refused_by_knot() -> anyhow::Result<()> {
    let knot = Knot::start("test.azora.")?;
    let t = Duration::from_secs(3);
    if let Err(e) = send_update(knot.addr, &key(&knot), &zone(1, "127.0.0.11"), None, t).await {
        panic!("first update failed: {e}\n{}", knot.log());
    }
    send_update(knot.addr, &key(&knot), &zone(2, "127.0.0.12"), Some(1), t).await?;
    assert_eq!(
        knot_answer(&knot).await,
        vec!["127.0.0.12".parse::<std::net::Ipv4Addr>()?]
    );
    // The old leader still believes epoch 1 is current and tries to move traffic to asia.
    match send_update(knot.addr, &key(&knot), &zone(2, "127.0.0.13"), Some(1), t).await {
        Err(DnsError::StaleEpoch { .. }) => {}
        other => panic!("late update was not refused: {other:?}\n{}", knot.log()),
    }
    assert_eq!(
        knot_answer(&knot).await,
        vec!["127.0.0.12".parse::<std::net::Ipv4Addr>()?]
    );
    assert_eq!(verify::epoch_of(knot.addr, "test.azora.", t).await?, Some(2));
    // A wrong key is refused too.
    let mut bad = key(&knot);
    bad.secret = vec![0; 32];
    assert!(
        send_update(knot.addr, &bad, &zone(3, "127.0.0.13"), Some(2), t)
            .await
            .is_err()
    );
    assert_eq!(
        knot_answer(&knot).await,
        vec!["127.0.0.12".parse::<std::net::Ipv4Addr>()?]
    );
    Ok(())
}

async fn rfc2136_scenario(knot: &Knot) -> anyhow::Result<Scenario> {
    let s = Scenario::start(2).await?;
    let client = s.env.hub().client().await?;
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "azora-tsig"}, "stringData": {"secret": knot.secret_b64}
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    s.policy(
        "20s",
        json!({"provider": {"type": "RFC2136", "rfc2136": {
            "servers": [knot.addr.to_string()], "tsigKeyName": knot.key_name,
            "tsigAlgorithm": "hmac-sha256", "tsigSecret": {"name": "azora-tsig", "key": "secret"}}}}),
    )
    .await?;
    Ok(s)
}

async fn wait_knot(knot: &Knot, ip: &str, timeout: Duration) -> bool {
    let want = vec![ip.parse::<std::net::Ipv4Addr>().unwrap()];
    let start = Instant::now();
    while start.elapsed() < timeout {
        if knot_answer(knot).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn rfc2136_updates_reach_knot_and_are_verified() -> anyhow::Result<()> {
    let knot = Knot::start("test.azora.")?;
    let mut s = rfc2136_scenario(&knot).await?;
    s.add_operator(&[])?;
    assert!(
        wait_knot(&knot, "127.0.0.11", Duration::from_secs(60)).await,
        "{}\n{}",
        s.log_tail(0, 30),
        knot.log()
    );
    assert!(s.wait_all_healthy(Duration::from_secs(30)).await);
    let onset = Instant::now();
    s.regions[0].kill();
    assert!(
        wait_knot(&knot, "127.0.0.12", Duration::from_secs(30)).await,
        "{}",
        s.log_tail(0, 30)
    );
    println!(
        "africa killed: Knot answered europe after {:.2}s",
        onset.elapsed().as_secs_f64()
    );
    let ok = verified(&s, Duration::from_secs(10)).await;
    let st = s.policy_status().await?;
    assert!(ok, "{st}");
    let published = st["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "DnsPublished").cloned());
    assert_eq!(
        published.as_ref().map(|c| c["status"].clone()),
        Some(json!("True")),
        "{st}"
    );
    let epoch = st["epoch"].as_u64().unwrap_or(0);
    assert_eq!(
        verify::epoch_of(knot.addr, "test.azora.", Duration::from_secs(1)).await?,
        Some(epoch)
    );
    Ok(())
}

#[tokio::test]
async fn the_operator_killed_mid_failover_converges_to_the_right_answer_after_restart() -> anyhow::Result<()>
{
    let knot = Knot::start("test.azora.")?;
    let mut s = rfc2136_scenario(&knot).await?;
    s.add_operator(&[])?;
    assert!(
        wait_knot(&knot, "127.0.0.11", Duration::from_secs(60)).await,
        "{}",
        s.log_tail(0, 30)
    );
    assert!(s.wait_all_healthy(Duration::from_secs(30)).await);
    let before = s.policy_status().await?["epoch"].as_u64().unwrap_or(0);
    // Knot hangs: the failover is decided and recorded, but the DNS update cannot complete.
    knot.stop();
    s.regions[0].kill();
    let recorded = azora_tests::wait::until(Duration::from_secs(30), || async {
        s.policy_status()
            .await
            .map(|st| st["lastFailover"]["to"] == "europe" && st["lastFailover"]["verifiedTime"].is_null())
            .unwrap_or(false)
    })
    .await;
    assert!(recorded, "intent not recorded: {}", s.policy_status().await?);
    s.operators[0].kill(); // SIGKILL mid-failover
    knot.resume();
    let mid = s.policy_status().await?;
    let epoch = mid["epoch"].as_u64().unwrap_or(0);
    assert_eq!(epoch, before + 1, "{mid}");
    // Either Knot never saw the update (it hung before reading it), or it applies the one already in its
    // socket buffer on resume: the new replica must converge from both, under the same epoch.
    println!("right after the kill Knot answers {:?}", knot_answer(&knot).await);
    // A new replica takes over once the dead one's lease expires, and finishes the same failover.
    s.add_operator(&[])?;
    assert!(
        wait_knot(&knot, "127.0.0.12", Duration::from_secs(60)).await,
        "{}",
        s.log_tail(1, 40)
    );
    let done = verified(&s, Duration::from_secs(20)).await;
    let st = s.policy_status().await?;
    assert!(done, "{st}");
    assert_eq!(
        st["epoch"].as_u64(),
        Some(epoch),
        "resumed under the same epoch, no second failover: {st}\nkilled replica:\n{}\nnew replica:\n{}",
        s.log_tail(0, 60),
        s.log_tail(1, 80)
    );
    assert_eq!(st["lastFailover"]["to"], "europe");
    assert_eq!(
        verify::epoch_of(knot.addr, "test.azora.", Duration::from_secs(1)).await?,
        Some(epoch)
    );
    Ok(())
}
