//! `azora-bench db-failover`: N induced outages of the region holding a PostgreSQL primary (its region
//! endpoint SIGSTOPped and its PostgreSQL SIGKILLed or SIGSTOPped, at a random moment) under a write load.
//! Each sample runs from the onset until the new primary accepts a write **and** DNS answers its region; every
//! acknowledged commit is then looked for on the new primary. Between outages the victim comes back, is
//! fenced by the operator, rebuilt as a standby by its region agent, and replication is whole again.
//! Prints `db_failover_p50_s=… db_failover_p99_s=… n=… acked_commits_lost=…`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azora_tests::Operator;
use azora_tests::postgres::PgFleet;
use azora_tests::scenario::{Scenario, ar, create};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use rand::Rng;
use serde_json::{Value, json};

const REGIONS: [&str; 4] = ["africa", "europe", "asia", "americas"];
const IPS: [&str; 4] = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];

async fn status(s: &Scenario) -> Value {
    let Ok(client) = s.env.hub().client().await else {
        return Value::Null;
    };
    let api: Api<DynamicObject> = Api::all_with(client, &ar("Database", "databases"));
    match api.get("bench").await {
        Ok(o) => o.data.get("status").cloned().unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

fn whole(st: &Value) -> bool {
    let members = st["members"].as_array().cloned().unwrap_or_default();
    members.len() == REGIONS.len()
        && members
            .iter()
            .all(|m| m["role"] == "Primary" || (m["role"] == "Standby" && m["syncState"] != "disconnected"))
        && st["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Replicating" && c["status"] == "True")
        })
}

/// Runs the benchmark.
pub async fn run(outages: usize) -> anyhow::Result<()> {
    let mut s = Scenario::start(4).await?;
    s.policy("1h", json!({})).await?;
    s.add_operator(&["--database-interval", "1s"])?;
    s.add_operator(&["--database-interval", "1s"])?;
    let pg = PgFleet::start(&REGIONS)?;
    let client = s.env.hub().client().await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let body: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pg-credentials"},
        "stringData": {"username": "postgres", "password": pg.password}
    }))?;
    secrets.create(&PostParams::default(), &body).await?;
    let members: Vec<Value> = REGIONS
        .iter()
        .map(|r| json!({"region": r, "endpoint": pg.endpoint(r), "credentials": {"name": "pg-credentials"}}))
        .collect();
    create(
        &client,
        "databases",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "Database", "metadata": {"name": "bench"},
               "spec": {"engine": "PostgreSQL", "followPolicy": "platform", "members": members,
                        "replication": {"mode": "Synchronous", "syncStandbys": 1}}}),
    )
    .await?;
    let mut agents = Vec::new();
    for m in &pg.members {
        let data = m.data.to_string_lossy().to_string();
        let pg_log = pg
            .dir
            .join(format!("{}.log", m.region))
            .to_string_lossy()
            .to_string();
        agents.push(Operator::start_command(
            &s.env.hub().kubeconfig,
            s.env.dir.path().join(format!("agent-{}.log", m.region)),
            "agent",
            &[
                "--region",
                &m.region,
                "--database",
                "bench",
                "--pg-data",
                &data,
                "--pg-os-user",
                "postgres",
                "--pg-log",
                &pg_log,
                "--interval",
                "1s",
            ],
            &[
                ("RUST_LOG", "info"),
                ("PATH", &std::env::var("PATH").unwrap_or_default()),
            ],
        )?);
    }
    anyhow::ensure!(
        s.wait_answer(0, IPS[0], Duration::from_secs(60)).await.is_some(),
        "no initial answer"
    );
    anyhow::ensure!(
        s.wait_all_healthy(Duration::from_secs(60)).await,
        "regions not healthy"
    );
    let start = Instant::now();
    while !whole(&status(&s).await) {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(90),
            "replication never whole"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pg.client("africa")
        .await?
        .batch_execute("create table orders (id bigint primary key)")
        .await?;
    // The leader's takeover warm-up passes first (see the DNS failover benchmark).
    tokio::time::sleep(Duration::from_secs(20)).await;

    let mut samples = Vec::new();
    let mut lost_total = 0usize;
    let mut next_id = 1_i64;
    let mut rng = rand::rng();
    while samples.len() < outages {
        let st = status(&s).await;
        let Some(primary) = st["primaryRegion"].as_str().map(str::to_string) else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let Some(victim) = REGIONS.iter().position(|r| *r == primary) else {
            anyhow::bail!("unknown primary {primary}");
        };
        // Writes on the primary, each its own synchronous commit; acknowledged ids recorded.
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writer_client = pg.client(&primary).await?;
        let a2 = acked.clone();
        let first = next_id;
        let w = tokio::spawn(async move {
            for id in first.. {
                let r = tokio::time::timeout(
                    Duration::from_secs(3),
                    writer_client.execute("insert into orders (id) values ($1)", &[&id]),
                )
                .await;
                match r {
                    Ok(Ok(_)) => {
                        if let Ok(mut a) = a2.lock() {
                            a.push(id);
                        }
                    }
                    _ => return,
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..5000))).await;
        let hang = rng.random_bool(0.5);
        let onset = Instant::now();
        s.regions[victim].stop();
        if hang {
            pg.signal(&primary, "-STOP");
        } else {
            pg.kill(&primary);
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        let acked: Vec<i64> = acked.lock().map(|a| a.clone()).unwrap_or_default();
        next_id = acked.iter().max().copied().unwrap_or(first) + 1_000;
        // Until a new primary takes a write and DNS answers its region.
        let mut done = None;
        let mut probe_id = -(samples.len() as i64) - 1;
        while onset.elapsed() < Duration::from_secs(120) {
            let st = status(&s).await;
            if let Some(p) = st["primaryRegion"].as_str().filter(|p| *p != primary)
                && let Some(i) = REGIONS.iter().position(|r| r == &p)
                && s.answer(0).await.first().map(ToString::to_string).as_deref() == Some(IPS[i])
            {
                let took = async {
                    let c = pg.client(p).await?;
                    tokio::time::timeout(
                        Duration::from_secs(2),
                        c.execute("insert into orders (id) values ($1)", &[&probe_id]),
                    )
                    .await??;
                    anyhow::Ok(())
                }
                .await;
                if took.is_ok() {
                    done = Some((p.to_string(), onset.elapsed()));
                    break;
                }
                probe_id -= 1000;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some((new, took)) = done else {
            anyhow::bail!(
                "outage {} never completed: {:#}\n{}",
                samples.len() + 1,
                status(&s).await,
                s.log_tail(0, 40)
            );
        };
        let have: BTreeSet<i64> = pg
            .client(&new)
            .await?
            .query("select id from orders", &[])
            .await?
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect();
        let lost = acked.iter().filter(|id| !have.contains(id)).count();
        lost_total += lost;
        samples.push(took.as_secs_f64());
        eprintln!(
            "outage {:>2}: {primary} {} ({} commits acknowledged) -> {new} writable and in DNS after {:.2}s, {lost} lost",
            samples.len(),
            if hang { "SIGSTOP" } else { "SIGKILL" },
            acked.len(),
            took.as_secs_f64()
        );
        // Recovery: the region and its member come back; the member is fenced, then rebuilt by its agent.
        s.regions[victim].resume();
        if hang {
            pg.signal(&primary, "-CONT");
        } else if let Err(e) = pg.start_again(&primary) {
            eprintln!("could not start {primary} again: {e}");
        }
        let start = Instant::now();
        while !whole(&status(&s).await) && start.elapsed() < Duration::from_secs(180) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !s.wait_all_healthy(Duration::from_secs(60)).await {
            eprintln!("regions did not all recover within 60s");
        }
    }
    drop(agents);
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1]
    };
    println!(
        "db_failover_p50_s={:.2} db_failover_p99_s={:.2} n={} acked_commits_lost={lost_total}",
        pct(50.0),
        pct(99.0),
        samples.len()
    );
    Ok(())
}
