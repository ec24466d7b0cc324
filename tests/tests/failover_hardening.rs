//! Failover safety under correlated and partial failures, on real parts (simulated region processes stopped
//! with signals, real observer processes killed, the operator binary): a correlated failure of every region
//! holds the answers instead of cascading; three regions lost together fail over once, straight to the one
//! that answers; a dead observer's last report never counts after a leader change, and its Lease is
//! collected; a policy whose DNS server hangs never delays another policy's failover; a new leader never
//! fails back to a region only the recorded status calls healthy.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use azora_tests::scenario::{Scenario, ar, create};
use azora_tests::wait;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};

fn ip(s: &str) -> std::net::Ipv4Addr {
    s.parse().unwrap()
}

fn region_down_records(st: &Value) -> usize {
    let last = st["lastFailover"]["reason"] == "RegionDown";
    let history = st["history"]
        .as_array()
        .map_or(0, |h| h.iter().filter(|r| r["reason"] == "RegionDown").count());
    usize::from(last) + history
}

fn condition<'a>(st: &'a Value, type_: &str) -> Option<&'a Value> {
    st["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

async fn steady(s: &Scenario) {
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some(),
        "DNS never answered africa:\n{}",
        s.log_tail(0, 30)
    );
    assert!(
        s.wait_all_healthy(Duration::from_secs(40)).await,
        "regions never all Healthy"
    );
}

#[tokio::test]
async fn every_region_failing_at_once_holds_the_answers_and_says_so() -> anyhow::Result<()> {
    let mut s = Scenario::start(4).await?;
    s.policy("20s", json!({})).await?;
    s.add_operator(&[])?;
    steady(&s).await;

    // What the hub sees when its own network goes: every region stops answering within a second.
    for r in &s.regions {
        r.stop();
    }
    let held = wait::until(Duration::from_secs(40), || async {
        s.policy_status()
            .await
            .ok()
            .and_then(|st| condition(&st, "FailoverHeld").map(|c| c["status"] == "True"))
            .unwrap_or(false)
    })
    .await;
    let st = s.policy_status().await?;
    assert!(held, "no FailoverHeld condition: {st}\n{}", s.log_tail(0, 60));
    let c = condition(&st, "FailoverHeld").unwrap();
    assert_eq!(c["reason"], "AllRegionsFailing", "{c}");
    // Give a cascade every chance to happen: each region is judged down one by one meanwhile.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let st = s.policy_status().await?;
    assert_eq!(
        region_down_records(&st),
        0,
        "no failover to a region as dead as the rest: {st}"
    );
    assert_eq!(st["activeRegion"], "africa", "{st}");
    assert_eq!(s.answer(0).await, vec![ip("127.0.0.11")]);
    for r in &s.regions {
        r.resume();
    }
    Ok(())
}

#[tokio::test]
async fn three_regions_lost_together_fail_over_once_straight_to_the_healthy_one() -> anyhow::Result<()> {
    let mut s = Scenario::start(4).await?;
    s.policy("20s", json!({})).await?;
    s.add_operator(&[])?;
    steady(&s).await;

    let onset = Instant::now();
    for r in &s.regions[..3] {
        r.stop();
    }
    let moved = s.wait_answer(0, "127.0.0.14", Duration::from_secs(40)).await;
    assert!(
        moved.is_some(),
        "DNS did not move to americas:\n{}",
        s.log_tail(0, 60)
    );
    println!(
        "africa, europe, asia stopped: DNS answered americas after {:.2}s",
        onset.elapsed().as_secs_f64()
    );
    // Let every stopped region be judged down: nothing moves again.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let st = s.policy_status().await?;
    assert_eq!(st["lastFailover"]["from"], "africa", "{st}");
    assert_eq!(st["lastFailover"]["to"], "americas", "{st}");
    assert_eq!(region_down_records(&st), 1, "exactly one failover: {st}");
    assert_eq!(s.answer(0).await, vec![ip("127.0.0.14")]);
    for r in &s.regions[..3] {
        r.resume();
    }
    Ok(())
}

async fn leader(s: &Scenario) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(s.env.hub().client().await.ok()?, "default");
    leases
        .get_opt("azora-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

fn start_agent(s: &Scenario, name: &str) -> anyhow::Result<std::process::Child> {
    let log = s.env.dir.path().join(format!("{name}.log"));
    Ok(std::process::Command::new(azora_tests::operator::operator_bin()?)
        .args([
            "probe",
            "--observer",
            name,
            "--metrics-addr",
            &format!("127.0.0.1:{}", azora_tests::free_port()?),
        ])
        .env_clear()
        .env("KUBECONFIG", &s.env.hub().kubeconfig)
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(log.with_extension("err"))?)
        .spawn()?)
}

#[tokio::test]
async fn a_dead_observers_last_report_never_counts_after_a_leader_change_and_its_lease_is_collected()
-> anyhow::Result<()> {
    let mut s = Scenario::start(2).await?;
    s.policy("5s", json!({})).await?;
    let gc = ["--observer-gc-after", "40s"];
    s.add_operator(&gc)?;
    s.add_operator(&gc)?;
    let mut agents = Vec::new();
    for name in ["agent-1", "agent-2", "agent-3"] {
        agents.push(start_agent(&s, name)?);
    }
    steady(&s).await;
    let leases: Api<Lease> = Api::namespaced(s.env.hub().client().await?, "default");
    let observer_leases = || async {
        let mut names: Vec<String> = leases
            .list(&kube::api::ListParams::default().labels("azora.io/observer=true"))
            .await
            .map(|l| l.items.into_iter().filter_map(|x| x.metadata.name).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    assert!(
        wait::until(Duration::from_secs(30), || async {
            observer_leases().await.len() == 5
        })
        .await,
        "five observers: {:?}",
        observer_leases().await
    );

    // A real outage of africa, seen by all five observers: failover to europe.
    s.regions[0].stop();
    assert!(
        s.wait_answer(0, "127.0.0.12", Duration::from_secs(40))
            .await
            .is_some(),
        "no failover to europe:\n{}",
        s.log_tail(0, 40)
    );
    // The three agents die while their last reports say africa is down.
    let agent_leases_say_down = wait::until(Duration::from_secs(20), || async {
        let mut down = 0;
        for n in ["agent-1", "agent-2", "agent-3"] {
            let l = leases
                .get_opt(&format!("azora-observer-{n}"))
                .await
                .ok()
                .flatten();
            let report = l
                .and_then(|l| l.metadata.annotations)
                .and_then(|a| a.get("azora.io/observations").cloned())
                .unwrap_or_default();
            if report.contains("\"africa\":{\"verdict\":\"Down\"") {
                down += 1;
            }
        }
        down == 3
    })
    .await;
    assert!(agent_leases_say_down, "agents never reported africa Down");
    for a in &mut agents {
        let _ = a.kill();
        let _ = a.wait();
    }
    // africa comes back: the two replicas see it healthy, traffic fails back after the 5 s hold-down.
    s.regions[0].resume();
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some(),
        "no failback to africa:\n{}",
        s.log_tail(0, 40)
    );
    let before = region_down_records(&s.policy_status().await?);

    // The leader dies: the new one meets three dead agents whose Leases still say africa is down (with
    // the surviving replica, a majority of five). Seen-not-assumed freshness: they never count.
    let old = leader(&s).await.expect("a leader");
    let i: usize = old.trim_start_matches("replica-").parse()?;
    s.operators[i].kill();
    let other = 1 - i;
    let took_over = wait::until(Duration::from_secs(30), || async {
        leader(&s).await.is_some_and(|l| l != old)
    })
    .await;
    assert!(took_over, "no new leader:\n{}", s.log_tail(other, 40));
    let new_leader_at = Instant::now();
    while new_leader_at.elapsed() < Duration::from_secs(25) {
        let answer = s.answer(other).await;
        assert_eq!(
            answer,
            vec![ip("127.0.0.11")],
            "a dead observer's report moved DNS:\n{}",
            s.log_tail(other, 60)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let st = s.policy_status().await?;
    assert_eq!(
        region_down_records(&st),
        before,
        "no failover after the leader change: {st}"
    );
    let africa = s.region_status("africa").await?;
    assert_eq!(africa["verdict"], "Healthy", "{africa}");

    // The dead observers' Leases (three agents and the dead replica) are collected; the live one stays.
    let collected = wait::until(Duration::from_secs(90), || async {
        observer_leases().await == vec![format!("azora-observer-replica-{other}")]
    })
    .await;
    assert!(
        collected,
        "stale observer Leases left: {:?}",
        observer_leases().await
    );
    Ok(())
}

#[tokio::test]
async fn a_policy_whose_dns_server_hangs_never_delays_another_policys_failover() -> anyhow::Result<()> {
    let mut s = Scenario::start(2).await?;
    // A DNS "server" that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0")?;
    let hung_addr = hung.local_addr()?;
    let client = s.env.hub().client().await?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "hung-tsig"},
                "stringData": {"secret": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}}))?,
        )
        .await?;
    // Four of them, named to sort first: a loop that handles policies one after the other would wait out
    // each one's DNS deadline (3 s per update) before deciding for the healthy policy.
    for i in 0..4 {
        let body = json!({"apiVersion": "azora.io/v1alpha1", "kind": "FailoverPolicy",
            "metadata": {"name": format!("aaa-hung-{i}")},
            "spec": {"zone": format!("hung{i}.azora."), "hostnames": ["api"], "strategy": "Failover", "ttl": 5,
                     "regions": [{"name": "africa"}, {"name": "europe"}],
                     "failback": {"mode": "Automatic", "holdDown": "20s"},
                     "provider": {"type": "RFC2136", "rfc2136": {"servers": [hung_addr.to_string()],
                         "tsigKeyName": "azora-key", "tsigAlgorithm": "hmac-sha256",
                         "tsigSecret": {"name": "hung-tsig", "key": "secret"}}}}});
        create(&client, "failoverpolicies", body).await?;
    }
    s.policy("20s", json!({})).await?;
    s.add_operator(&[])?;
    steady(&s).await;
    // The hung policy is stuck in its DNS calls by now.
    let policies: Api<DynamicObject> =
        Api::all_with(client.clone(), &ar("FailoverPolicy", "failoverpolicies"));
    let stuck = wait::until(Duration::from_secs(30), || async {
        policies
            .get("aaa-hung-0")
            .await
            .ok()
            .and_then(|p| p.data.get("status").cloned())
            .and_then(|st| condition(&st, "DnsPublished").map(|c| c["status"] == "False"))
            .unwrap_or(false)
    })
    .await;
    assert!(
        stuck,
        "the hung policy never reported its DNS failure:\n{}",
        s.log_tail(0, 40)
    );

    s.regions[0].stop();
    assert!(
        s.wait_answer(0, "127.0.0.12", Duration::from_secs(40))
            .await
            .is_some(),
        "no failover:\n{}",
        s.log_tail(0, 40)
    );
    // From the operator's own records: how long after africa was judged Down did the healthy policy
    // decide? A sequential loop would first wait out the hung server's deadlines (3 s per update, 5 s per
    // verification); a policy of its own decides at once.
    let st = s.policy_status().await?;
    let decided: jiff::Timestamp = st["lastFailover"]["decidedTime"].as_str().unwrap().parse()?;
    let down: jiff::Timestamp = s.region_status("africa").await?["lastTransitionTime"]
        .as_str()
        .unwrap()
        .parse()?;
    let lag = decided.duration_since(down).as_secs_f64();
    println!(
        "africa judged Down → platform decided: {lag:.3}s (the hung policy's DNS calls take 3-8 s each)"
    );
    assert!(
        lag < 2.5,
        "the healthy policy waited on the hung one: {lag:.3}s\n{}",
        s.log_tail(0, 60)
    );
    drop(hung);
    Ok(())
}

/// The last leader can die after deciding a failover but before its Region status says the region is down
/// (the verdict is acted on in memory before the status write lands). Its successor starts from the
/// recorded status: a recorded `Healthy` is a record, not evidence, and must never draw traffic back to a
/// dead region before this term's observers have judged it.
#[tokio::test]
async fn a_takeover_never_fails_back_to_a_region_only_the_recorded_status_calls_healthy() -> anyhow::Result<()>
{
    let mut s = Scenario::start(2).await?;
    // A short hold-down: a failback would follow at once if the new leader believed the record.
    s.policy("1s", json!({})).await?;
    s.add_operator(&[])?;
    steady(&s).await;
    s.regions[0].kill();
    assert!(
        s.wait_answer(0, "127.0.0.12", Duration::from_secs(40))
            .await
            .is_some(),
        "no failover to europe:\n{}",
        s.log_tail(0, 40)
    );
    let verified = wait::until(Duration::from_secs(20), || async {
        s.policy_status()
            .await
            .map(|st| st["lastFailover"]["to"] == "europe" && !st["lastFailover"]["verifiedTime"].is_null())
            .unwrap_or(false)
    })
    .await;
    assert!(verified, "{}", s.policy_status().await?);
    let epoch = s.policy_status().await?["epoch"].as_u64();
    s.operators[0].kill();
    // What a leader killed before its status write leaves behind: africa recorded Healthy, never recovered.
    let regions: Api<DynamicObject> = Api::all_with(s.env.hub().client().await?, &ar("Region", "regions"));
    let now = jiff::Timestamp::now().to_string();
    regions
        .patch_status(
            "africa",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"verdict": "Healthy", "lastTransitionTime": now,
                                                       "recoveredTime": null}})),
        )
        .await?;
    s.add_operator(&[])?;
    // The new leader judges africa from its own observer's probes: Down again.
    let judged = wait::until(Duration::from_secs(60), || async {
        s.region_status("africa")
            .await
            .map(|st| st["verdict"] == "Down")
            .unwrap_or(false)
    })
    .await;
    assert!(
        judged,
        "{}\n{}",
        s.region_status("africa").await?,
        s.log_tail(1, 40)
    );
    // Give a wrong failback every chance to show.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = s.policy_status().await?;
    assert_eq!(
        st["epoch"].as_u64(),
        epoch,
        "no failback to a dead region after the takeover: {st}\n{}",
        s.log_tail(1, 60)
    );
    assert_eq!(st["activeRegion"], "europe", "{st}");
    assert_eq!(s.answer(1).await, vec![ip("127.0.0.12")]);
    Ok(())
}
