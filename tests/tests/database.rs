//! Database replication end to end: real PostgreSQL 15 members (a primary and streaming standbys on loopback),
//! the operator binary following a real FailoverPolicy over simulated regions, outages made with signals.
//! Shows: the topology kept (synchronous rule, epoch in the primary), a region outage failing the primary
//! over before DNS moves with every acknowledged commit on the new primary, a returning old primary fenced,
//! a planned move (manual failover) that fences, waits and loses nothing, and bad input touching nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azora_adapters::member::Session;
use azora_tests::postgres::PgFleet;
use azora_tests::scenario::{Scenario, ar, create};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

async fn secret(s: &Scenario, pg: &PgFleet) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(s.env.hub().client().await?, "default");
    let body: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pg-credentials"},
        "stringData": {"username": "postgres", "password": pg.password}
    }))?;
    secrets.create(&PostParams::default(), &body).await?;
    Ok(())
}

fn database(name: &str, pg: &PgFleet, regions: &[&str], extra: Value) -> Value {
    let members: Vec<Value> = regions
        .iter()
        .map(|r| json!({"region": r, "endpoint": pg.endpoint(r), "credentials": {"name": "pg-credentials"}}))
        .collect();
    let mut spec = json!({"engine": "PostgreSQL", "followPolicy": "platform", "members": members,
                          "replication": {"mode": "Synchronous", "syncStandbys": 1}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "azora.io/v1alpha1", "kind": "Database", "metadata": {"name": name}, "spec": spec})
}

async fn db_status(s: &Scenario, name: &str) -> anyhow::Result<Value> {
    let api: Api<DynamicObject> = Api::all_with(s.env.hub().client().await?, &ar("Database", "databases"));
    Ok(api
        .get(name)
        .await?
        .data
        .get("status")
        .cloned()
        .unwrap_or(Value::Null))
}

fn condition(st: &Value, type_: &str) -> (String, String) {
    st["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

async fn wait_status(
    s: &Scenario,
    name: &str,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < timeout {
        last = db_status(s, name).await.unwrap_or(Value::Null);
        if ok(&last) {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "{what} not reached in {timeout:?}: {last:#}\n{}",
        s.log_tail(0, 40)
    )
}

/// `kubectl azora status -o json`, parsed.
async fn azora_status(s: &Scenario) -> anyhow::Result<Value> {
    let run = azora_tests::operator::plugin(
        &s.env.hub().kubeconfig,
        &["status", "-o", "json"],
        Duration::from_secs(60),
    )
    .await?;
    anyhow::ensure!(run.code == 0, "kubectl azora status: {run:?}");
    Ok(serde_json::from_str(&run.stdout)?)
}

fn member<'a>(st: &'a Value, region: &str) -> &'a Value {
    st["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["region"] == region))
        .unwrap_or(&Value::Null)
}

async fn event_reasons(s: &Scenario) -> anyhow::Result<Vec<String>> {
    let events: Api<Event> = Api::namespaced(s.env.hub().client().await?, "default");
    Ok(events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect())
}

/// Inserts rows one by one (each its own synchronous commit) until stopped or the connection fails; the
/// ids whose commit was acknowledged are recorded.
fn writer(client: tokio_postgres::Client, acked: Arc<Mutex<Vec<i64>>>) -> tokio::task::JoinHandle<()> {
    writer_from(client, acked, 1)
}

/// [`writer`] with ids from `first` on.
fn writer_from(
    client: tokio_postgres::Client,
    acked: Arc<Mutex<Vec<i64>>>,
    first: i64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for id in first.. {
            let r = tokio::time::timeout(
                Duration::from_secs(3),
                client.execute("insert into orders (id) values ($1)", &[&id]),
            )
            .await;
            match r {
                Ok(Ok(_)) => {
                    if let Ok(mut a) = acked.lock() {
                        a.push(id);
                    }
                }
                _ => return,
            }
        }
    })
}

/// The operator (database interval 1 s) following policy `platform`, and Database `ledger` over PostgreSQL
/// members in africa (primary) and europe.
async fn ledger_in_africa_and_europe() -> anyhow::Result<(Scenario, PgFleet)> {
    let mut s = Scenario::start(2).await?;
    s.policy("5s", json!({})).await?;
    s.add_operator(&["--database-interval", "1s"])?;
    let pg = PgFleet::start(&["africa", "europe"])?;
    secret(&s, &pg).await?;
    create(
        &s.env.hub().client().await?,
        "databases",
        database("ledger", &pg, &["africa", "europe"], json!({})),
    )
    .await?;
    Ok((s, pg))
}

/// Waits until Database `name` streams from africa, creates table `orders` there and returns the session.
async fn streaming_with_orders(
    s: &Scenario,
    pg: &PgFleet,
    name: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    wait_status(s, name, Duration::from_secs(60), "streaming", |st| {
        st["primaryRegion"] == "africa" && condition(st, "Replicating").0 == "True"
    })
    .await?;
    let primary = pg.client("africa").await?;
    primary
        .batch_execute("create table orders (id bigint primary key)")
        .await?;
    Ok(primary)
}

/// A region agent for `ledger` next to `region`'s member (the same binary), looking every second and running
/// the PostgreSQL programs as `postgres`; `extra` arguments after those.
fn start_agent(
    s: &Scenario,
    pg: &PgFleet,
    region: &str,
    extra: &[&str],
) -> anyhow::Result<azora_tests::Operator> {
    start_pg_agent_via(s, pg, &s.env.hub().kubeconfig, region, extra)
}

/// [`start_agent`] reaching the hub through `kubeconfig`.
fn start_pg_agent_via(
    s: &Scenario,
    pg: &PgFleet,
    kubeconfig: &std::path::Path,
    region: &str,
    extra: &[&str],
) -> anyhow::Result<azora_tests::Operator> {
    let m = pg
        .members
        .iter()
        .find(|m| m.region == region)
        .ok_or_else(|| anyhow::anyhow!("no {region} member"))?;
    let data = m.data.to_string_lossy().to_string();
    let pg_log = pg.dir.join(format!("{region}.log")).to_string_lossy().to_string();
    let mut args = vec![
        "--pg-data",
        &data,
        "--pg-os-user",
        "postgres",
        "--pg-log",
        &pg_log,
    ];
    args.extend_from_slice(extra);
    start_agent_via(s, kubeconfig, region, "ledger", &args)
}

/// A region agent for `database` next to `region`'s member, looking every second; `extra` arguments after
/// those.
fn start_agent_for(
    s: &Scenario,
    region: &str,
    database: &str,
    extra: &[&str],
) -> anyhow::Result<azora_tests::Operator> {
    start_agent_via(s, &s.env.hub().kubeconfig, region, database, extra)
}

/// [`start_agent_for`] reaching the hub through `kubeconfig`.
fn start_agent_via(
    s: &Scenario,
    kubeconfig: &std::path::Path,
    region: &str,
    database: &str,
    extra: &[&str],
) -> anyhow::Result<azora_tests::Operator> {
    let mut args = vec!["--region", region, "--database", database, "--interval", "1s"];
    args.extend_from_slice(extra);
    azora_tests::Operator::start_command(
        kubeconfig,
        s.env.dir.path().join(format!("agent-{region}.log")),
        "agent",
        &args,
        &[
            ("RUST_LOG", "info"),
            ("PATH", &std::env::var("PATH").unwrap_or_default()),
        ],
    )
}

async fn ids_on(pg: &PgFleet, region: &str) -> anyhow::Result<BTreeSet<i64>> {
    let c = pg.client(region).await?;
    Ok(c.query("select id from orders", &[])
        .await?
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect())
}

async fn show(pg: &PgFleet, region: &str, setting: &str) -> anyhow::Result<String> {
    let c = pg.client(region).await?;
    Ok(c.query_one(&format!("show {setting}"), &[]).await?.get(0))
}

#[tokio::test]
async fn a_sigkilled_primary_fails_over_before_dns_with_every_acknowledged_commit_and_comes_back_fenced()
-> anyhow::Result<()> {
    outage("-KILL").await
}

#[tokio::test]
async fn a_sigstopped_primary_fails_over_before_dns_with_every_acknowledged_commit_and_resumes_fenced()
-> anyhow::Result<()> {
    outage("-STOP").await
}

/// Four members: africa primary, `ANY 1` over europe and asia, americas asynchronous. africa's region and
/// its PostgreSQL go down for real (`sig`) under a write load.
async fn outage(sig: &str) -> anyhow::Result<()> {
    let mut s = Scenario::start(4).await?;
    s.policy("1h", json!({})).await?;
    s.add_operator(&["--database-interval", "1s"])?;
    let pg = PgFleet::start(&["africa", "europe", "asia", "americas"])?;
    secret(&s, &pg).await?;
    let mut body = database(
        "orders",
        &pg,
        &["africa", "europe", "asia", "americas"],
        json!({}),
    );
    body["spec"]["members"][3]["synchronous"] = json!(false);
    create(&s.env.hub().client().await?, "databases", body).await?;
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some(),
        "DNS never answered africa:\n{}",
        s.log_tail(0, 30)
    );

    // The topology: africa adopted as primary under epoch 1, every standby streaming, the synchronous rule
    // (europe and asia only) set by the operator, the epoch written into the primary.
    let st = wait_status(
        &s,
        "orders",
        Duration::from_secs(60),
        "primary adopted and streaming",
        |st| {
            st["primaryRegion"] == "africa"
                && condition(st, "Replicating").0 == "True"
                && condition(st, "Ready").0 == "True"
                && member(st, "americas")["syncState"] == "async"
                && member(st, "europe")["syncState"] == "quorum"
        },
    )
    .await?;
    let epoch = st["epoch"].as_u64().unwrap_or(0);
    assert!(epoch >= 1, "{st:#}");
    for r in ["europe", "asia", "americas"] {
        let m = member(&st, r);
        assert_eq!(m["role"], "Standby", "{st:#}");
        assert_eq!(m["upstream"], "africa", "{st:#}");
        assert!(m["position"].as_str().is_some_and(|p| p.contains('/')), "{m}");
        // PostgreSQL reports no replay lag (NULL) for a standby with nothing recent to replay.
        assert!(
            m["lagBytes"].is_u64() && (m["lagSeconds"].is_number() || m["lagSeconds"].is_null()),
            "{m}"
        );
    }
    for r in ["europe", "asia"] {
        assert_eq!(member(&st, r)["syncState"], "quorum", "{st:#}");
    }
    assert_eq!(member(&st, "africa")["role"], "Primary");
    // What on-call sees: `kubectl azora status` lists the database, its primary and members.
    let doc = azora_status(&s).await?;
    let db = &doc["databases"][0];
    assert_eq!(db["name"], "orders", "{doc:#}");
    assert_eq!(db["engine"], "PostgreSQL", "{doc:#}");
    assert_eq!(db["primaryRegion"], "africa", "{doc:#}");
    assert_eq!(db["replicating"], true, "{doc:#}");
    let roles: Vec<(String, String)> = db["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["region"].as_str().unwrap_or("").to_string(),
                m["role"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("africa", "Primary"),
            ("americas", "Standby"),
            ("asia", "Standby"),
            ("europe", "Standby")
        ]
        .map(|(r, o)| (r.to_string(), o.to_string()))
        .to_vec(),
        "{doc:#}"
    );
    let screen =
        azora_tests::operator::plugin(&s.env.hub().kubeconfig, &["status"], Duration::from_secs(60)).await?;
    assert!(
        screen.stdout.contains("DATABASES") && screen.stdout.contains("europe:standby(quorum)"),
        "{}",
        screen.stdout
    );
    let rule = show(&pg, "africa", "synchronous_standby_names").await?;
    assert!(
        rule.contains("ANY 1")
            && rule.contains("asia")
            && rule.contains("europe")
            && !rule.contains("americas"),
        "{rule}"
    );
    let primary = pg.client("africa").await?;
    let written: i64 = primary
        .query_one("select epoch from azora.epoch where id = 1", &[])
        .await?
        .get(0);
    assert_eq!(written as u64, epoch);
    primary
        .batch_execute("create table orders (id bigint primary key)")
        .await?;

    // Writes run while africa goes down for real: its region endpoint SIGSTOPped, its PostgreSQL signalled.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let w = writer(primary, acked.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.regions[0].stop();
    if sig == "-KILL" {
        pg.kill("africa");
    } else {
        pg.signal("africa", sig);
    }
    let _ = w.await;
    let acked: Vec<i64> = acked.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(
        acked.len() > 10,
        "the writer made too few commits: {}",
        acked.len()
    );

    let st = wait_status(
        &s,
        "orders",
        Duration::from_secs(90),
        "a standby promoted",
        |st| st["lastFailover"]["outcome"] == "Promoted" && st["primaryRegion"] != "africa",
    )
    .await?;
    // The plugin shows the failover (the policy may already be moving on: a later epoch is fine).
    let doc = azora_status(&s).await?;
    let db = &doc["databases"][0];
    let last = &db["lastFailover"];
    assert!(
        last["epoch"].as_u64() >= st["lastFailover"]["epoch"].as_u64()
            && last["from"].is_string()
            && last["to"].is_string()
            && ["Promoted", "InProgress", "Abandoned"].contains(&last["outcome"].as_str().unwrap_or("")),
        "{doc:#}"
    );
    assert_ne!(db["primaryRegion"], "africa", "{doc:#}");
    let new = st["primaryRegion"].as_str().unwrap_or_default().to_string();
    assert!(
        new == "europe" || new == "asia",
        "a synchronous standby is promoted: {st:#}"
    );
    let last = &st["lastFailover"];
    assert_eq!(last["from"], "africa", "{st:#}");
    assert_eq!(last["to"], new.as_str());
    assert!(
        last["fence"].as_str().unwrap_or_default().contains("unreachable"),
        "{last}"
    );
    let new_epoch = st["epoch"].as_u64().unwrap_or(0);
    assert_eq!(new_epoch, epoch + 1, "{st:#}");

    // Every acknowledged commit is on the new primary, which takes writes and carries the new epoch.
    let have = ids_on(&pg, &new).await?;
    let lost: Vec<&i64> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged commits lost: {lost:?} (of {})",
        acked.len()
    );
    let c = pg.client(&new).await?;
    let in_recovery: bool = c.query_one("select pg_is_in_recovery()", &[]).await?.get(0);
    assert!(!in_recovery, "{new} is still a standby");
    let e: i64 = c
        .query_one("select epoch from azora.epoch where id = 1", &[])
        .await?
        .get(0);
    assert_eq!(e as u64, new_epoch);

    // One timeline: fence → promote → repoint → DNS → verified, in that order (DNS waited for the database).
    let st = wait_status(
        &s,
        "orders",
        Duration::from_secs(60),
        "the whole timeline",
        |st| {
            let f = &st["lastFailover"];
            [
                "fencedTime",
                "promotedTime",
                "repointedTime",
                "dnsUpdatedTime",
                "verifiedTime",
            ]
            .iter()
            .all(|t| f[*t].is_string())
        },
    )
    .await?;
    let last = &st["lastFailover"];
    let ts = |k: &str| last[k].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let order = [
        "detectedTime",
        "fencedTime",
        "promotedTime",
        "repointedTime",
        "dnsUpdatedTime",
        "verifiedTime",
    ];
    for pair in order.windows(2) {
        let (a, b) = (ts(pair[0]), ts(pair[1]));
        assert!(
            a.is_some() && b.is_some(),
            "{} or {} missing: {last:#}",
            pair[0],
            pair[1]
        );
        assert!(a <= b, "{} after {}: {last:#}", pair[0], pair[1]);
    }
    let policy = s.policy_status().await?;
    if std::env::var_os("AZORA_DB_DEBUG").is_some() {
        for l in s
            .log_tail(0, 100_000)
            .lines()
            .filter(|l| l.contains("database") || l.contains("failover"))
        {
            println!("LOG {l}");
        }
        println!("PGLOG {}", pg.log(&new));
    }
    println!(
        "{sig}: {} acknowledged commits, none lost; database failover {last}; policy failover {}",
        acked.len(),
        policy["lastFailover"]
    );

    // Every other standby streams from the new primary; the new primary takes writes.
    let others: Vec<&str> = ["europe", "asia", "americas"]
        .into_iter()
        .filter(|r| *r != new)
        .collect();
    let st = wait_status(
        &s,
        "orders",
        Duration::from_secs(60),
        "the others repointed",
        |st| {
            others.iter().all(|r| member(st, r)["upstream"] == new.as_str())
                && condition(st, "Replicating").1 == "StandbyDisconnected"
        },
    )
    .await?;
    for r in &others {
        assert_eq!(member(&st, r)["role"], "Standby", "{st:#}");
    }
    c.batch_execute("insert into orders (id) values (-1)").await?;

    // The old primary comes back as a primary: it is fenced, never a second writer.
    s.regions[0].resume();
    if sig == "-KILL" {
        pg.start_again("africa")?;
    } else {
        pg.signal("africa", "-CONT");
    }
    let st = wait_status(
        &s,
        "orders",
        Duration::from_secs(60),
        "the returning primary fenced",
        |st| member(st, "africa")["role"] == "Fenced",
    )
    .await?;
    assert_eq!(st["primaryRegion"], new.as_str());
    let old = pg.client("africa").await?;
    let ro: String = old
        .query_one("show default_transaction_read_only", &[])
        .await?
        .get(0);
    assert_eq!(ro, "on");
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        old.execute("insert into orders (id) values (-2)", &[]),
    )
    .await;
    assert!(
        !matches!(r, Ok(Ok(_))),
        "the fenced old primary acknowledged a commit"
    );
    // Even a session asking for a read-write transaction gets no synchronous acknowledgement there.
    let old2 = pg.client("africa").await?;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        old2.batch_execute("begin read write; insert into orders (id) values (-3); commit"),
    )
    .await;
    assert!(
        !matches!(r, Ok(Ok(_))),
        "the fenced old primary acknowledged a read-write commit"
    );
    let reasons = event_reasons(&s).await?;
    for r in [
        "PrimaryAdopted",
        "DatabaseFailover",
        "DatabasePromoted",
        "SecondPrimaryFenced",
    ] {
        assert!(reasons.iter().any(|x| x == r), "no {r} Event: {reasons:?}");
    }
    // Lag is exported per standby; no credential anywhere.
    let metrics = azora_tests::metrics_text(s.metrics[0]).await?;
    assert!(
        metrics.contains(&format!(
            "azora_db_replication_lag_seconds{{database=\"orders\",region=\"{}\"}}",
            others[0]
        )),
        "{metrics}"
    );
    assert!(!metrics.contains(&pg.password), "a credential reached /metrics");
    assert!(
        !s.log_tail(0, 100_000).contains(&pg.password),
        "a credential reached the log"
    );
    let all_status = db_status(&s, "orders").await?.to_string();
    assert!(!all_status.contains(&pg.password), "a credential reached status");
    Ok(())
}

/// A primary cut off from the control plane must not keep acknowledging commits on its own say: the region
/// agent next to it fences it once it has not reached the hub for `--hub-loss-fence` (the hub's API server
/// hung with SIGSTOP, so nothing on the hub can act), and the operator lifts that fence once the hub is back
/// and the member is still the recorded primary of the current epoch.
#[tokio::test]
async fn a_primary_whose_agent_loses_the_hub_fences_itself_and_is_unfenced_when_the_hub_returns()
-> anyhow::Result<()> {
    let (s, pg) = ledger_in_africa_and_europe().await?;
    let agent = start_agent(&s, &pg, "africa", &["--hub-loss-fence", "5s"])?;
    wait_status(&s, "ledger", Duration::from_secs(60), "streaming", |st| {
        st["primaryRegion"] == "africa" && condition(st, "Replicating").0 == "True"
    })
    .await?;
    pg.client("africa")
        .await?
        .batch_execute("create table orders (id bigint primary key); insert into orders values (1)")
        .await?;
    assert_eq!(show(&pg, "africa", "default_transaction_read_only").await?, "off");
    // (The agent has looked at the member a few times: it knows it is there.)
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The hub hangs: only the agent can act, and it fences africa.
    s.env.hub().pause();
    let fenced = until_africa_fenced(&pg, Duration::from_secs(40)).await;
    let refused = if fenced {
        match pg.client("africa").await {
            Ok(c) => c.batch_execute("insert into orders values (2)").await.is_err(),
            Err(_) => false,
        }
    } else {
        false
    };
    s.env.hub().resume();
    assert!(
        fenced,
        "africa kept taking writes with the hub gone\nagent:\n{}",
        agent.log_text()
    );
    assert!(refused, "a fenced primary accepted a write");

    // The hub is back and africa is still the recorded primary: the operator lifts the fence.
    africa_unfenced(&s, &pg, 3).await?;
    let st = db_status(&s, "ledger").await?;
    assert_eq!(st["primaryRegion"], "africa", "{st:#}");
    assert_eq!(ids_on(&pg, "africa").await?, BTreeSet::from([1, 3]));

    // The password is rotated (in the database, then in the credentials Secret): the operator brings the
    // standby's primary_conninfo to the new one, so its next reconnect — forced here by ending its WAL
    // sender — streams again instead of failing authentication.
    let rotated = format!("{}-rotated", pg.password);
    pg.client("africa")
        .await?
        .batch_execute(&format!("alter user postgres password '{rotated}'"))
        .await?;
    let secrets: Api<Secret> = Api::namespaced(s.env.hub().client().await?, "default");
    secrets
        .patch(
            "pg-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": rotated}})),
        )
        .await?;
    let started = Instant::now();
    let mut repointed = false;
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(c) = pg.client_with("europe", &rotated).await
            && let Ok(row) = c.query_one("show primary_conninfo", &[]).await
            && row.get::<_, String>(0).contains(&rotated)
        {
            repointed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        repointed,
        "europe still streams with the old password\n{}",
        s.log_tail(0, 30)
    );
    let africa = pg.client_with("africa", &rotated).await?;
    let senders = || async {
        anyhow::Ok(
            africa
                .query(
                    "select pid from pg_stat_replication where state = 'streaming'",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get::<_, i32>(0))
                .collect::<Vec<i32>>(),
        )
    };
    // Streaming with the new password first (the repoint restarted its receiver), then cut once more.
    let started = Instant::now();
    while senders().await?.is_empty() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let before = senders().await?;
    africa
        .batch_execute("select pg_terminate_backend(pid) from pg_stat_replication")
        .await?;
    let started = Instant::now();
    let mut streaming = false;
    while started.elapsed() < Duration::from_secs(30) {
        // A new WAL sender (not the one just ended) streaming: the standby logged in again.
        if senders().await?.iter().any(|p| !before.contains(p)) {
            streaming = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(streaming, "europe did not reconnect with the rotated password");
    drop(agent);
    Ok(())
}

/// Whether africa's member is fenced (read-only, and a synchronous rule no standby matches).
async fn africa_fenced(pg: &PgFleet) -> bool {
    show(pg, "africa", "default_transaction_read_only")
        .await
        .ok()
        .as_deref()
        == Some("on")
        && show(pg, "africa", "synchronous_standby_names")
            .await
            .is_ok_and(|n| n.contains("azora_fenced"))
}

/// Polls until africa's member is fenced; whether it was within `within`.
async fn until_africa_fenced(pg: &PgFleet, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if africa_fenced(pg).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// Waits (90 s at most) until africa's member takes a write again (row `id`, a fresh session each time): the
/// operator lifted its fence.
async fn africa_unfenced(s: &Scenario, pg: &PgFleet, id: i64) -> anyhow::Result<()> {
    let insert = format!("insert into orders values ({id}) on conflict do nothing");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(90) {
        if let Ok(c) = pg.client("africa").await
            && tokio::time::timeout(Duration::from_secs(5), c.batch_execute(&insert))
                .await
                .is_ok_and(|r| r.is_ok())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!(
        "the fence was never lifted: {}\n{}",
        db_status(s, "ledger").await.unwrap_or(Value::Null),
        s.log_tail(0, 30)
    )
}

/// After a stale promotion was refused: `stale` (the member it would have promoted) takes no write, `primary`
/// is the one primary.
async fn one_writer(pg: &PgFleet, stale: &str, primary: &str) -> anyhow::Result<()> {
    let r = pg
        .client(stale)
        .await?
        .query_one(
            "select pg_is_in_recovery(), current_setting('default_transaction_read_only')",
            &[],
        )
        .await?;
    let (in_recovery, ro): (bool, String) = (r.get(0), r.get(1));
    anyhow::ensure!(in_recovery || ro == "on", "{stale} takes writes beside {primary}");
    let standby: bool = pg
        .client(primary)
        .await?
        .query_one("select pg_is_in_recovery()", &[])
        .await?
        .get(0);
    anyhow::ensure!(!standby, "{primary} is not the primary");
    Ok(())
}

/// An asymmetric partition: only the link between africa's agent and the hub is cut, the operator still
/// reaches africa's primary. The agent must not fence it (the operator would lift the fence and the agent set
/// it again, over and over, stopping writes each time); once the operator itself falls silent (SIGSTOP), the
/// agent does fence.
#[tokio::test]
async fn an_agent_cut_off_from_the_hub_leaves_alone_a_primary_the_operator_still_reaches()
-> anyhow::Result<()> {
    let (s, pg) = ledger_in_africa_and_europe().await?;
    // The agent reaches the hub through a link the test can cut (traffic dropped); nothing else uses it.
    let hub = s.env.hub();
    let upstream: std::net::SocketAddr = hub.url.trim_start_matches("https://").parse()?;
    let link = azora_tests::link::CuttableLink::start(upstream).await?;
    let kubeconfig = s.env.dir.path().join("kubeconfig-agent-africa");
    std::fs::write(
        &kubeconfig,
        std::fs::read_to_string(&hub.kubeconfig)?
            .replace(&hub.url, &format!("https://127.0.0.1:{}", link.port)),
    )?;
    let agent = start_pg_agent_via(&s, &pg, &kubeconfig, "africa", &["--hub-loss-fence", "5s"])?;
    let primary = streaming_with_orders(&s, &pg, "ledger").await?;
    // (The agent has looked at the member a few times: it knows it is there.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let w = writer(primary, acked.clone());
    let count = || acked.lock().map(|a| a.len()).unwrap_or(0);

    // 1. The agent's link is cut for four times its hub-loss-fence: writes go on all along.
    link.cut();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = count();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = count();
    let log = agent.log_text();
    assert!(
        !w.is_finished() && after > before,
        "writes stopped while the operator still reached africa ({before} → {after} commits)\nagent:\n{log}"
    );
    assert!(!africa_fenced(&pg).await, "africa was fenced\nagent:\n{log}");
    assert!(
        log.contains("the operator still keeps the local primary: no fence"),
        "the agent did not say why it held back:\n{log}"
    );
    assert!(!log.contains("fenced itself"), "{log}");

    // 2. The operator falls silent too (SIGSTOP): nothing on the hub side acts for africa now, and its agent
    // fences it.
    azora_tests::signal_pid(s.operators[0].pid(), "-STOP");
    let fenced = until_africa_fenced(&pg, Duration::from_secs(40)).await;
    azora_tests::signal_pid(s.operators[0].pid(), "-CONT");
    link.mend();
    assert!(
        fenced,
        "africa kept taking writes with neither the hub nor the operator in reach\nagent:\n{}",
        agent.log_text()
    );
    // (The agent logs once its fence is done, a moment after the settings show.)
    let started = Instant::now();
    while !agent.log_text().contains("the local primary fenced itself")
        && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        agent.log_text().contains("the local primary fenced itself"),
        "africa was fenced, but not by its agent:\n{}",
        agent.log_text()
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), w).await;

    // 3. Both back: the operator lifts the fence of the recorded primary.
    africa_unfenced(&s, &pg, -1).await?;
    // Every acknowledged commit is there.
    let have = ids_on(&pg, "africa").await?;
    let acked: Vec<i64> = acked.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(
        acked.iter().all(|id| have.contains(id)),
        "an acknowledged commit is missing"
    );
    drop(agent);
    Ok(())
}

#[tokio::test]
async fn a_planned_move_and_the_move_back_lose_nothing_and_the_agent_rebuilds_the_old_primary()
-> anyhow::Result<()> {
    let (s, pg) = ledger_in_africa_and_europe().await?;
    // A region agent next to each member (the same binary), running the PostgreSQL programs as `postgres`.
    let mut agents = Vec::new();
    for m in &pg.members {
        agents.push(start_agent(&s, &pg, &m.region, &[])?);
    }
    let primary = streaming_with_orders(&s, &pg, "ledger").await?;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let w = writer(primary, acked.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A planned move: the policy is pinned to europe by hand.
    manual_failover(&s, Some("europe")).await?;
    let st = wait_status(&s, "ledger", Duration::from_secs(60), "switched over", |st| {
        st["lastFailover"]["outcome"] == "Promoted" && st["primaryRegion"] == "europe"
    })
    .await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    let acked: Vec<i64> = acked.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(!acked.is_empty());
    let last = &st["lastFailover"];
    assert_eq!(last["reason"], "PolicyMoved", "{last}");
    assert!(
        last["fence"]
            .as_str()
            .unwrap_or_default()
            .starts_with("read-only"),
        "the reachable old primary was not fenced: {last}"
    );
    let have = ids_on(&pg, "europe").await?;
    let lost: Vec<&i64> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged commits lost in the move: {lost:?}");
    assert!(
        s.wait_answer(0, "127.0.0.12", Duration::from_secs(30))
            .await
            .is_some(),
        "DNS did not move to europe"
    );

    // The agent rebuilds the fenced old primary as a standby of europe; it rejoins.
    let st = wait_status(
        &s,
        "ledger",
        Duration::from_secs(120),
        "africa rebuilt and streaming",
        |st| {
            member(st, "africa")["role"] == "Standby"
                && member(st, "africa")["upstream"] == "europe"
                && condition(st, "Replicating").0 == "True"
        },
    )
    .await
    .map_err(|e| {
        let logs: Vec<String> = agents.iter().map(azora_tests::Operator::log_text).collect();
        anyhow::anyhow!(
            "{e}\nagents:\n{}\nafrica's server log:\n{}",
            logs.join("\n"),
            pg.log("africa")
        )
    })?;
    assert_eq!(st["primaryRegion"], "europe");
    let in_recovery: bool = pg
        .client("africa")
        .await?
        .query_one("select pg_is_in_recovery()", &[])
        .await?
        .get(0);
    assert!(in_recovery, "africa is not a standby");
    assert!(event_reasons(&s).await?.iter().any(|r| r == "MemberRebuilt"));
    // What europe took while africa was out is on africa too once it streams.
    let rejoined = ids_on(&pg, "africa").await?;
    assert!(acked.iter().all(|id| rejoined.contains(id)));

    // Writes on europe, then the manual failover is withdrawn: traffic and the primary go back to africa
    // as a planned switchover (fence europe, wait for africa, promote) — nothing acknowledged is lost.
    let acked2 = Arc::new(Mutex::new(Vec::new()));
    let europe = pg.client("europe").await?;
    let w = writer_from(europe, acked2.clone(), 1_000_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    manual_failover(&s, None).await?;
    let st = wait_status(&s, "ledger", Duration::from_secs(90), "switched back", |st| {
        st["lastFailover"]["outcome"] == "Promoted" && st["primaryRegion"] == "africa"
    })
    .await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    let acked2: Vec<i64> = acked2.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(!acked2.is_empty(), "nothing was written on europe");
    let have = ids_on(&pg, "africa").await?;
    let lost: Vec<&i64> = acked2.iter().filter(|id| !have.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged commits lost in the move back: {lost:?}"
    );
    assert_eq!(st["lastFailover"]["from"], "europe");
    assert!(st["epoch"].as_u64().unwrap_or(0) >= 3, "{st:#}");
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(30))
            .await
            .is_some(),
        "DNS did not return to africa"
    );
    // And europe is rebuilt in turn: both members replicate again.
    wait_status(&s, "ledger", Duration::from_secs(120), "europe rebuilt", |st| {
        member(st, "europe")["role"] == "Standby" && condition(st, "Replicating").0 == "True"
    })
    .await?;
    drop(agents);
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_reason_and_touches_no_database() -> anyhow::Result<()> {
    let mut s = Scenario::start(2).await?;
    s.add_operator(&["--database-interval", "1s"])?;
    let pg = PgFleet::start(&["africa"])?;
    secret(&s, &pg).await?;
    let client = s.env.hub().client().await?;
    // A tenant that may live in Europe only, and a database of it with a member in Africa.
    create(
        &client,
        "tenants",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "eu-only"},
               "spec": {"homeRegion": "europe", "residency": {"allowedContinents": ["Europe"]}}}),
    )
    .await?;
    let mut body = database("resident", &pg, &["africa"], json!({"tenant": "eu-only"}));
    body["spec"]["replication"] = json!({"mode": "Asynchronous"});
    body["spec"].as_object_mut().map(|o| o.remove("followPolicy"));
    create(&client, "databases", body).await?;
    let st = wait_status(
        &s,
        "resident",
        Duration::from_secs(60),
        "residency refused",
        |st| condition(st, "Ready").1 == "ResidencyViolation",
    )
    .await?;
    assert!(st["primaryRegion"].is_null(), "{st:#}");
    // A policy that does not exist, and a missing credentials Secret.
    let mut body = database("dangling", &pg, &["africa"], json!({"followPolicy": "nowhere"}));
    body["spec"]["replication"] = json!({"mode": "Asynchronous"});
    body["spec"]["members"][0]["credentials"]["name"] = json!("missing");
    create(&client, "databases", body).await?;
    let st = wait_status(&s, "dangling", Duration::from_secs(60), "unresolved", |st| {
        condition(st, "ReferencesResolved").0 == "False"
    })
    .await?;
    let msg = st.to_string();
    assert!(msg.contains("nowhere") && msg.contains("missing"), "{st:#}");
    // Nothing was done to the member: no epoch table, the synchronous rule untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = pg.client("africa").await?;
    let has: bool = c
        .query_one("select to_regclass('azora.epoch') is not null", &[])
        .await?
        .get(0);
    assert!(!has, "the operator wrote into a database whose spec is wrong");
    assert_eq!(show(&pg, "africa", "synchronous_standby_names").await?, "");
    // The schema rejects what it can.
    let mut body = database("bad-engine", &pg, &["africa"], json!({}));
    body["spec"]["engine"] = json!("MySQL");
    let err = create(&client, "databases", body).await;
    assert!(err.is_err(), "an unknown engine was accepted");
    Ok(())
}

/// Redis members in africa, europe and asia, their credentials Secret, and Database `sessions` over them
/// (asynchronous, following policy `platform`).
async fn sessions_on_redis(s: &Scenario) -> anyhow::Result<azora_tests::redis::RedisFleet> {
    let rd = azora_tests::redis::RedisFleet::start(&["africa", "europe", "asia"])?;
    let secrets: Api<Secret> = Api::namespaced(s.env.hub().client().await?, "default");
    let body: Secret = serde_json::from_value(json!({
        "metadata": {"name": "redis-credentials"},
        "stringData": {"username": "default", "password": rd.password}
    }))?;
    secrets.create(&PostParams::default(), &body).await?;
    sessions_database(s, &rd, json!({})).await?;
    Ok(rd)
}

/// Database `sessions` over the fleet's three members (africa, europe, asia), credentials Secret
/// `redis-credentials`, following policy `platform`; `extra` spec fields on top.
async fn sessions_database(
    s: &Scenario,
    rd: &azora_tests::redis::RedisFleet,
    extra: Value,
) -> anyhow::Result<()> {
    let members: Vec<Value> = ["africa", "europe", "asia"]
        .iter()
        .map(|r| json!({"region": r, "endpoint": rd.endpoint(r), "credentials": {"name": "redis-credentials"}}))
        .collect();
    let mut spec = json!({"engine": "Redis", "followPolicy": "platform", "members": members,
                          "replication": {"mode": "Asynchronous", "maxLagForPromotion": "30s"}});
    if let (Some(sp), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        sp.extend(e.clone());
    }
    create(
        &s.env.hub().client().await?,
        "databases",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "Database", "metadata": {"name": "sessions"},
               "spec": spec}),
    )
    .await
}

#[tokio::test]
async fn redis_fails_over_asynchronously_and_reports_the_window_of_lost_writes() -> anyhow::Result<()> {
    let mut s = Scenario::start(3).await?;
    s.policy("1h", json!({})).await?;
    s.add_operator(&["--database-interval", "1s"])?;
    let mut rd = sessions_on_redis(&s).await?;
    let st = wait_status(
        &s,
        "sessions",
        Duration::from_secs(60),
        "redis replicating",
        |st| st["primaryRegion"] == "africa" && condition(st, "Replicating").0 == "True",
    )
    .await?;
    for r in ["europe", "asia"] {
        assert_eq!(member(&st, r)["role"], "Standby", "{st:#}");
        assert_eq!(member(&st, r)["upstream"], "africa", "{st:#}");
        assert_eq!(member(&st, r)["syncState"], "async", "{st:#}");
    }
    assert!(
        rd.text("africa", &["GET", "azora:epoch"])
            .await?
            .starts_with("1:africa")
    );

    // Writes while africa goes down for real.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut c = rd.client("africa").await?;
    let a2 = acked.clone();
    let w = tokio::spawn(async move {
        for i in 0_u64.. {
            let key = format!("k:{i}");
            match c.command(&["SET", &key, "v"]).await {
                Ok(azora_adapters::redis::Reply::Simple(ok)) if ok == "OK" => {
                    if let Ok(mut a) = a2.lock() {
                        a.push(key);
                    }
                }
                _ => return,
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.regions[0].stop();
    rd.kill("africa");
    let _ = w.await;
    let acked: Vec<String> = acked.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(acked.len() > 100, "too few writes: {}", acked.len());

    let (st, new) = sessions_promoted_away_from_africa(&s).await?;
    let other = if new == "europe" { "asia" } else { "europe" };
    let last = &st["lastFailover"];
    // The lost-write window is measured and reported, not hidden.
    let keys = rd.text(&new, &["DBSIZE"]).await?;
    let mut have = std::collections::HashSet::new();
    let mut nc = rd.client(&new).await?;
    for chunk in acked.chunks(500) {
        let mut args = vec!["MGET"];
        args.extend(chunk.iter().map(String::as_str));
        if let azora_adapters::redis::Reply::Array(Some(items)) = nc.command(&args).await? {
            for (k, v) in chunk.iter().zip(items) {
                if v != azora_adapters::redis::Reply::Bulk(None) {
                    have.insert(k.clone());
                }
            }
        }
    }
    let lost = acked.iter().filter(|k| !have.contains(*k)).count();
    let reported = last["possibleLossBytes"].as_u64();
    println!(
        "redis: {} acknowledged writes, {lost} lost in the failover (dbsize {keys}); reported window: {:?} bytes, {} s",
        acked.len(),
        reported,
        last["possibleLossSeconds"]
    );
    assert!(reported.is_some(), "no loss window reported: {last}");
    if lost > 0 {
        assert!(
            reported.unwrap_or(0) > 0,
            "{lost} writes lost but a window of 0 reported: {last}"
        );
    }
    assert!(
        rd.text(&new, &["GET", "azora:epoch"])
            .await?
            .starts_with(&format!("2:{new}"))
    );
    assert_eq!(rd.text(&new, &["SET", "after", "1"]).await?, "OK");
    // The other replica follows the new primary.
    let port = rd
        .endpoint(&new)
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let st = wait_status(
        &s,
        "sessions",
        Duration::from_secs(60),
        "the other replica repointed",
        |st| member(st, other)["upstream"] == new.as_str(),
    )
    .await?;
    assert_eq!(member(&st, other)["role"], "Standby");
    let info = rd.text(other, &["INFO", "replication"]).await?;
    assert!(info.contains(&format!("master_port:{port}")), "{info}");

    // The old primary comes back (empty, as a primary): fenced, then made a replica of the new one.
    s.regions[0].resume();
    rd.start_again("africa")?;
    sessions_member_follows(
        &s,
        "africa",
        &new,
        Duration::from_secs(60),
        "africa rejoined as a replica",
    )
    .await?;
    let start = Instant::now();
    while rd.text("africa", &["GET", "after"]).await? != "1" && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        rd.text("africa", &["GET", "after"]).await?,
        "1",
        "africa did not resync from {new}"
    );
    assert!(
        !s.log_tail(0, 100_000).contains(&rd.password),
        "a credential reached the log"
    );
    Ok(())
}

/// Waits until Database `sessions` has promoted a member outside africa; its status and the new primary.
async fn sessions_promoted_away_from_africa(s: &Scenario) -> anyhow::Result<(Value, String)> {
    let st = wait_status(
        s,
        "sessions",
        Duration::from_secs(90),
        "a replica promoted",
        |st| st["lastFailover"]["outcome"] == "Promoted" && st["primaryRegion"] != "africa",
    )
    .await?;
    let new = st["primaryRegion"].as_str().unwrap_or_default().to_string();
    Ok((st, new))
}

/// Waits until Database `sessions` reports `region`'s member a standby streaming from `upstream`.
async fn sessions_member_follows(
    s: &Scenario,
    region: &str,
    upstream: &str,
    within: Duration,
    what: &str,
) -> anyhow::Result<Value> {
    wait_status(s, "sessions", within, what, |st| {
        member(st, region)["role"] == "Standby" && member(st, region)["upstream"] == upstream
    })
    .await
}

/// Pins policy `platform` to `region` by hand (a manual failover); `None` withdraws the pin.
async fn manual_failover(s: &Scenario, region: Option<&str>) -> anyhow::Result<()> {
    let policies: Api<DynamicObject> = Api::all_with(
        s.env.hub().client().await?,
        &ar("FailoverPolicy", "failoverpolicies"),
    );
    policies
        .patch(
            "platform",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"manual": region.map(|r| json!({"region": r, "requestedBy": "test"}))}}),
            ),
        )
        .await?;
    Ok(())
}

/// Polls one Redis command on a member until its reply satisfies `ok` (replies of an unreachable member
/// count as not yet); the last reply either way.
async fn redis_until(
    rd: &azora_tests::redis::RedisFleet,
    region: &str,
    args: &[&str],
    within: Duration,
    ok: impl Fn(&str) -> bool,
) -> (bool, String) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < within {
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(5), rd.text(region, args)).await {
            if ok(&reply) {
                return (true, reply);
            }
            last = reply;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (false, last)
}

#[tokio::test]
async fn a_redis_agent_fences_its_cut_off_primary_and_rejoins_a_stale_one_on_its_own() -> anyhow::Result<()> {
    let mut s = Scenario::start(3).await?;
    s.policy("1h", json!({})).await?;
    s.add_operator(&["--database-interval", "1s"])?;
    let rd = sessions_on_redis(&s).await?;
    // The same agent binary next to africa's Redis: no --pg-data, nothing to rebuild by hand.
    let agent = start_agent_for(&s, "africa", "sessions", &["--hub-loss-fence", "5s"])?;
    wait_status(
        &s,
        "sessions",
        Duration::from_secs(60),
        "redis replicating",
        |st| st["primaryRegion"] == "africa" && condition(st, "Replicating").0 == "True",
    )
    .await?;
    assert_eq!(rd.text("africa", &["SET", "a", "1"]).await?, "OK");
    // (The agent has looked at the member a few times: it knows it is there.)
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. The hub hangs: only the agent can act, and it fences africa — every write refused.
    s.env.hub().pause();
    let (fenced, reply) = redis_until(&rd, "africa", &["SET", "b", "1"], Duration::from_secs(40), |r| {
        r.starts_with("NOREPLICAS")
    })
    .await;
    s.env.hub().resume();
    assert!(
        fenced,
        "africa kept taking writes with the hub gone (last reply {reply:?})\nagent:\n{}",
        agent.log_text()
    );
    // The hub is back and africa is still the recorded primary: the operator lifts the fence.
    let (writable, reply) = redis_until(&rd, "africa", &["SET", "c", "1"], Duration::from_secs(90), |r| {
        r == "OK"
    })
    .await;
    assert!(
        writable,
        "the fence was never lifted (last reply {reply:?}): {}\n{}",
        db_status(&s, "sessions").await.unwrap_or(Value::Null),
        s.log_tail(0, 30)
    );
    assert_eq!(db_status(&s, "sessions").await?["primaryRegion"], "africa");

    // 2. africa's region and its Redis stop: the operator promotes another member under epoch 2, unable to
    // fence africa (it does not answer).
    s.regions[0].stop();
    rd.signal("africa", "-STOP");
    let (st, new) = sessions_promoted_away_from_africa(&s).await?;
    assert_eq!(st["epoch"], 2, "{st:#}");
    assert_eq!(rd.text(&new, &["SET", "after", "1"]).await?, "OK");
    // The operator goes away too; then africa's Redis resumes: a primary of epoch 1, unfenced, that only its
    // agent can see.
    s.operators[0].kill();
    rd.signal("africa", "-CONT");
    let port = rd
        .endpoint(&new)
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let (rejoined, info) = redis_until(
        &rd,
        "africa",
        &["INFO", "replication"],
        Duration::from_secs(60),
        |r| r.contains("role:slave") && r.contains(&format!("master_port:{port}")),
    )
    .await;
    assert!(
        rejoined,
        "africa's agent did not make it follow {new}: {info}\nagent:\n{}",
        agent.log_text()
    );
    let (synced, got) = redis_until(&rd, "africa", &["GET", "after"], Duration::from_secs(30), |r| {
        r == "1"
    })
    .await;
    assert!(synced, "africa did not resync from {new} (GET after: {got:?})");
    let refused = rd.text("africa", &["SET", "late", "1"]).await?;
    assert!(
        refused.starts_with("READONLY"),
        "the stale primary took a write: {refused:?}"
    );
    assert!(
        event_reasons(&s).await?.iter().any(|r| r == "MemberRebuilt"),
        "no MemberRebuilt Event from the agent"
    );

    // 3. The operator returns and africa's region with it: africa is a plain standby (no fence left), so the
    // planned switchover back to it works and loses nothing.
    s.regions[0].resume();
    s.add_operator(&["--database-interval", "1s"])?;
    sessions_member_follows(
        &s,
        "africa",
        &new,
        Duration::from_secs(90),
        "africa a standby of the new primary",
    )
    .await?;
    // (A region that recovers after a manual request waits for the failback hold-down: ask once it is back.)
    anyhow::ensure!(
        s.wait_all_healthy(Duration::from_secs(90)).await,
        "africa's region never healthy again"
    );
    manual_failover(&s, Some("africa")).await?;
    let st = wait_status(
        &s,
        "sessions",
        Duration::from_secs(120),
        "switched back to africa",
        |st| {
            st["primaryRegion"] == "africa" && st["epoch"] == 3 && st["lastFailover"]["outcome"] == "Promoted"
        },
    )
    .await?;
    assert_eq!(rd.text("africa", &["SET", "final", "1"]).await?, "OK", "{st:#}");
    assert_eq!(rd.text("africa", &["GET", "after"]).await?, "1");
    // The primary it switched from was fenced by the operator; the operator makes it follow africa (no agent
    // runs next to it) and it can be promoted again: a plain standby, not a fenced lone primary.
    sessions_member_follows(
        &s,
        &new,
        "africa",
        Duration::from_secs(60),
        "the former primary a standby of africa",
    )
    .await?;
    let (resynced, got) = redis_until(&rd, &new, &["GET", "final"], Duration::from_secs(30), |r| {
        r == "1"
    })
    .await;
    assert!(resynced, "{new} did not resync from africa (GET final: {got:?})");
    assert!(
        !agent.log_text().contains(&rd.password),
        "a credential reached the agent's log"
    );
    Ok(())
}

/// Database `orders` (PostgreSQL in africa, europe and asia, africa primary) run by replica A (`extra`
/// arguments), which is held for `pause_s` seconds between choosing a standby and recording the choice (a test
/// failpoint that widens the race; nothing is faked).
async fn orders_led_by_replica_a(
    extra: &[&str],
    pause_s: u64,
) -> anyhow::Result<(Scenario, azora_tests::Operator, PgFleet)> {
    let s = Scenario::start(3).await?;
    s.policy("1h", json!({})).await?;
    let mut args = vec!["--identity", "replica-a", "--database-interval", "1s"];
    args.extend_from_slice(extra);
    let pause = (pause_s * 1000).to_string();
    let a = azora_tests::Operator::start(
        &s.env.hub().kubeconfig,
        s.env.dir.path().join("replica-a.log"),
        &args,
        &[
            ("AZORA_TEST_PAUSE_BEFORE_PROMOTION_MS", &pause),
            ("RUST_LOG", "info,kube=warn,hickory_server=warn"),
        ],
    )?;
    let pg = PgFleet::start(&["africa", "europe", "asia"])?;
    secret(&s, &pg).await?;
    create(
        &s.env.hub().client().await?,
        "databases",
        database("orders", &pg, &["africa", "europe", "asia"], json!({})),
    )
    .await?;
    wait_status(&s, "orders", Duration::from_secs(60), "streaming", |st| {
        st["primaryRegion"] == "africa" && condition(st, "Replicating").0 == "True"
    })
    .await?;
    Ok((s, a, pg))
}

/// Waits (60 s at most) until replica A is held at its failpoint.
async fn until_failpoint(a: &azora_tests::Operator) -> anyhow::Result<()> {
    let start = Instant::now();
    while !a.log_text().contains("test failpoint: pausing") {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "A never reached the failpoint:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Replica B finishes the epoch-2 failover A was held in, then moves on: a manual failover to the third
/// region (epoch 3), a planned switchover. Returns the region promoted under epoch 2 and the third one.
async fn b_finishes_epoch_2_and_moves_on(s: &Scenario) -> anyhow::Result<(String, String)> {
    let st = wait_status(
        s,
        "orders",
        Duration::from_secs(90),
        "B promoted under epoch 2",
        |st| st["lastFailover"]["outcome"] == "Promoted" && st["epoch"] == 2,
    )
    .await?;
    let promoted = st["primaryRegion"].as_str().unwrap_or_default().to_string();
    let third = if promoted == "europe" { "asia" } else { "europe" };
    manual_failover(s, Some(third)).await?;
    wait_status(
        s,
        "orders",
        Duration::from_secs(60),
        "B switched over under epoch 3",
        |st| st["lastFailover"]["outcome"] == "Promoted" && st["epoch"] == 3 && st["primaryRegion"] == third,
    )
    .await?;
    Ok((promoted, third.to_string()))
}

#[tokio::test]
async fn a_deposed_leaders_late_promotion_never_happens() -> anyhow::Result<()> {
    // Replica A pauses for 25 s between choosing a standby and recording the choice (a test failpoint that
    // widens the race); replica B has no pause.
    let (mut s, mut a, pg) = orders_led_by_replica_a(&[], 25).await?;
    s.add_operator(&["--database-interval", "1s"])?;

    // africa goes down; A records the intent (epoch 2) and pauses before the promotion.
    s.regions[0].stop();
    pg.kill("africa");
    until_failpoint(&a).await?;
    // A is deposed: frozen, its lease runs out, B takes over and finishes epoch 2.
    azora_tests::signal_pid(a.pid(), "-STOP");
    let (promoted, third) = b_finishes_epoch_2_and_moves_on(&s).await?;
    let third = third.as_str();
    // A wakes and goes on with its epoch 2 failover. Its own lease ran out while it was frozen, so its term
    // may end first (the fence); when its database task runs first, the epoch check refuses: the stored
    // status is at epoch 3. Either way nothing is promoted, and the log says which guard held.
    azora_tests::signal_pid(a.pid(), "-CONT");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let log = a.log_text();
    let by_epoch = log.contains("is not this failover's 2");
    let by_fence = [
        "not leading",
        "lost leadership",
        "stepping down",
        "controllers stopped",
    ]
    .iter()
    .any(|m| log.contains(m));
    println!("A's late promotion refused: by the epoch check: {by_epoch}, by the fence/term end: {by_fence}");
    assert!(by_epoch || by_fence, "no guard stopped A:\n{log}");
    let st = db_status(&s, "orders").await?;
    assert_eq!(st["epoch"], 3, "{st:#}");
    assert_eq!(st["primaryRegion"], third);
    // The member A would have promoted is still fenced: one writer only.
    one_writer(&pg, &promoted, third).await?;
    a.kill();
    Ok(())
}

/// The epoch alone stops a stale promotion: replica A leads under a lease of its own (`--lease-name`), so no
/// lost term ever stops it — two leaders at once, as a broken election would make. A chooses a standby
/// under epoch 2 and is held before promoting it; B (the usual lease) finishes epoch 2 and switches over to
/// a third region under epoch 3; when A goes on, only the epoch checks (the stored status' epoch, the epoch in
/// the member's own data) stand between it and a second primary. Then the status is restored from a copy older
/// than both failovers: the operator says so (`StatusBehindMembers`), acts on nothing on its word, and adopts
/// the real primary once it is the one member taking writes with the newest epoch.
#[tokio::test]
async fn a_second_leaders_stale_promotion_is_refused_by_the_epoch_alone() -> anyhow::Result<()> {
    let (mut s, mut a, pg) = orders_led_by_replica_a(&["--lease-name", "azora-operator-split"], 30).await?;

    // africa goes down; A records epoch 2 and its fence, chooses, and is held before the promotion.
    s.regions[0].stop();
    pg.kill("africa");
    until_failpoint(&a).await?;
    // (`start`: about when A's hold began.)
    let start = Instant::now();
    // B leads beside A (the usual lease, free): it finishes epoch 2, then switches over under epoch 3.
    s.add_operator(&["--database-interval", "1s"])?;
    let (promoted, third) = b_finishes_epoch_2_and_moves_on(&s).await?;
    let third = third.as_str();
    // (A is held for 30 s from the failpoint on: it must still be held here, or the test proves nothing.)
    let b_took = start.elapsed();
    anyhow::ensure!(
        b_took < Duration::from_secs(25),
        "B took {b_took:?}: A's hold may have ended before B finished"
    );

    // A goes on with its epoch-2 choice once its hold ends: refused by an epoch check.
    let refusals = ["is not this failover's 2", "newer than this failover's 2"];
    let start = Instant::now();
    while !refusals.iter().any(|r| a.log_text().contains(r)) {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "A's late promotion was never refused:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = a.log_text();
    println!(
        "B finished epoch 3 within {b_took:?} of A's hold; A refused by: {:?}",
        refusals.iter().filter(|r| log.contains(*r)).collect::<Vec<_>>()
    );
    // Nothing but the epoch stopped it: A led all along.
    for m in [
        "not leading",
        "lost leadership",
        "stepping down",
        "controllers stopped",
    ] {
        assert!(
            !log.contains(m),
            "A's term ended ({m}): the fence, not the epoch, stopped it\n{log}"
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = db_status(&s, "orders").await?;
    assert_eq!(st["epoch"], 3, "{st:#}");
    assert_eq!(st["primaryRegion"], third);
    // One writer: the member A chose is not one, the third region is.
    one_writer(&pg, &promoted, third).await?;
    a.kill();

    // The status is then restored from a copy taken early in the first failover (epoch 1, africa primary, the
    // failover to `promoted` recorded and unfinished), with every operator stopped and the real primary
    // (epoch 3) stopped too (SIGSTOP); a fresh operator starts. The one member it reaches holds epoch 2: it
    // takes the status for behind, says so, and does nothing on its word — the old failover is not resumed
    // (it would record a fence and try to promote), nothing unfenced.
    s.operators[0].kill();
    let dbs: Api<DynamicObject> = Api::all_with(s.env.hub().client().await?, &ar("Database", "databases"));
    // (Two merge patches: the first drops the current record, so none of its fields survive into the old one.)
    for status in [
        json!({"lastFailover": null, "history": []}),
        json!({"epoch": 1, "primaryRegion": "africa",
               "lastFailover": {"epoch": 1, "from": "africa", "to": promoted, "reason": "RegionDown"}}),
    ] {
        dbs.patch_status(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    pg.signal(third, "-STOP");
    s.add_operator(&["--database-interval", "1s"])?;
    let behind = wait_status(
        &s,
        "orders",
        Duration::from_secs(60),
        "status behind the members",
        |st| condition(st, "Ready").1 == "StatusBehindMembers",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = db_status(&s, "orders").await;
    pg.signal(third, "-CONT");
    behind?;
    let st = st?;
    assert_eq!(st["epoch"], 1, "a failover was started on a stale status: {st:#}");
    let last = &st["lastFailover"];
    assert!(
        last["fencedTime"].is_null() && last["message"].is_null() && last["outcome"].is_null(),
        "the restored failover was resumed: {st:#}"
    );
    // Back, the real primary is the one member taking writes and holds the newest epoch: adopted, as it is.
    let st = wait_status(
        &s,
        "orders",
        Duration::from_secs(60),
        "the real primary adopted",
        |st| {
            st["primaryRegion"] == third && st["epoch"] == 3 && condition(st, "Ready").1 == "PrimaryWritable"
        },
    )
    .await?;
    // The restored, unfinished failover is closed, not resumed.
    assert_eq!(st["lastFailover"]["outcome"], "Superseded", "{st:#}");
    assert_eq!(st["lastFailover"]["epoch"], 1, "{st:#}");
    assert!(st["lastFailover"]["fencedTime"].is_null(), "{st:#}");
    one_writer(&pg, &promoted, third).await?;
    assert_eq!(
        pg.client(third)
            .await?
            .query_one("show default_transaction_read_only", &[])
            .await?
            .get::<_, String>(0),
        "off",
        "the real primary {third} was fenced on a stale status"
    );
    let reasons = event_reasons(&s).await?;
    for r in ["StatusBehindMembers", "PrimaryAdopted"] {
        assert!(reasons.iter().any(|x| x == r), "no {r} Event: {reasons:?}");
    }
    Ok(())
}

#[tokio::test]
async fn an_operator_killed_mid_failover_finishes_it_after_restart_with_one_promotion() -> anyhow::Result<()>
{
    // Two kills: after the intent and the fence (before the choice is recorded), then — in the next
    // operator — after the promotion, before it is recorded. A third operator finishes the failover.
    let s = Scenario::start(3).await?;
    s.policy("1h", json!({})).await?;
    let kubeconfig = s.env.hub().kubeconfig.clone();
    let start_with = |name: &str, env: &[(&str, &str)]| -> anyhow::Result<azora_tests::Operator> {
        let mut all: Vec<(&str, &str)> = vec![("RUST_LOG", "info,kube=warn,hickory_server=warn")];
        all.extend_from_slice(env);
        azora_tests::Operator::start(
            &kubeconfig,
            s.env.dir.path().join(format!("{name}.log")),
            &["--identity", name, "--database-interval", "1s"],
            &all,
        )
    };
    let mut first = start_with("first", &[("AZORA_TEST_PAUSE_BEFORE_PROMOTION_MS", "60000")])?;
    let pg = PgFleet::start(&["africa", "europe", "asia"])?;
    secret(&s, &pg).await?;
    create(
        &s.env.hub().client().await?,
        "databases",
        database("orders", &pg, &["africa", "europe", "asia"], json!({})),
    )
    .await?;
    let primary = streaming_with_orders(&s, &pg, "orders").await?;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let w = writer(primary, acked.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.regions[0].stop();
    pg.kill("africa");
    let _ = w.await;
    let acked: Vec<i64> = acked.lock().map(|a| a.clone()).unwrap_or_default();

    let wait_log = |op: &azora_tests::Operator, what: &str| {
        let text = op.log_text();
        text.contains(what)
    };
    let t = Instant::now();
    while !wait_log(&first, "test failpoint: pausing") {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(60),
            "no failover started:\n{}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill();
    let st = db_status(&s, "orders").await?;
    assert_eq!(st["epoch"], 2, "the intent is recorded: {st:#}");
    assert!(st["lastFailover"]["outcome"].is_null(), "{st:#}");

    // The second operator resumes epoch 2, promotes, and is killed before recording it.
    let mut second = start_with("second", &[("AZORA_TEST_PAUSE_AFTER_PROMOTION_MS", "60000")])?;
    let t = Instant::now();
    while !wait_log(&second, "test failpoint: pausing") {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(90),
            "the second operator never promoted:\n{}",
            second.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.kill();
    let promoted: Vec<String> = {
        let mut out = Vec::new();
        for r in ["europe", "asia"] {
            let c = pg.client(r).await?;
            let standby: bool = c.query_one("select pg_is_in_recovery()", &[]).await?.get(0);
            if !standby {
                out.push(r.to_string());
            }
        }
        out
    };
    assert_eq!(
        promoted.len(),
        1,
        "one member promoted before the kill: {promoted:?}"
    );
    let st = db_status(&s, "orders").await?;
    assert!(
        st["lastFailover"]["outcome"].is_null(),
        "the promotion was not recorded yet: {st:#}"
    );

    // The third operator finishes: the member already promoted, no other, same epoch.
    let _third = start_with("third", &[])?;
    let st = wait_status(
        &s,
        "orders",
        Duration::from_secs(90),
        "the failover finished",
        |st| st["lastFailover"]["outcome"] == "Promoted",
    )
    .await?;
    assert_eq!(st["epoch"], 2, "nothing done twice: {st:#}");
    assert_eq!(st["primaryRegion"], promoted[0].as_str(), "{st:#}");
    let other = if promoted[0] == "europe" { "asia" } else { "europe" };
    let st = wait_status(
        &s,
        "orders",
        Duration::from_secs(60),
        "the other standby follows",
        |st| member(st, other)["upstream"] == promoted[0].as_str(),
    )
    .await?;
    assert_eq!(member(&st, other)["role"], "Standby", "{st:#}");
    let c = pg.client(other).await?;
    let standby: bool = c.query_one("select pg_is_in_recovery()", &[]).await?.get(0);
    assert!(standby, "{other} was promoted too");
    let have = ids_on(&pg, &promoted[0]).await?;
    let lost: Vec<&i64> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    Ok(())
}

/// The operator's session names a keeper too long after its leadership check (refused, not seen by the agent's
/// session), then in time.
async fn keeper_name_deadline(
    engine: &str,
    (mut operator, mut agent): (Session, Session),
) -> anyhow::Result<()> {
    let window = Duration::from_secs(30);
    let second = Duration::from_secs(1);
    let long_ago = Instant::now()
        .checked_sub(Duration::from_secs(5))
        .ok_or_else(|| anyhow::anyhow!("no instant 5 s ago"))?;
    let late = operator.assert_keeper(3, long_ago, second).await;
    assert!(
        late.as_ref()
            .is_err_and(|e| e.to_string().contains("too long after the leadership check")),
        "{engine}: a late keeper name was set: {late:?}"
    );
    assert!(
        !agent.kept_within(3, window).await?,
        "{engine}: a late keeper name counts"
    );
    operator.assert_keeper(3, Instant::now(), second).await?;
    assert!(
        agent.kept_within(3, window).await?,
        "{engine}: a keeper name in time is not seen"
    );
    assert!(
        !agent.kept_within(4, window).await?,
        "{engine}: a name for epoch 3 keeps epoch 4"
    );
    Ok(())
}

#[tokio::test]
async fn a_keeper_name_lands_only_before_its_deadline_on_both_engines() -> anyhow::Result<()> {
    // A deposed leader's statement held up past its deadline must leave no fresh keeper name (the agent would
    // hold back its hub-loss fence on it); one in time must be seen by the agent's own session.
    let pg = PgFleet::start(&["africa"])?;
    let target =
        azora_adapters::postgres::PgTarget::new(&pg.endpoint("africa"), "postgres", &pg.password, "postgres")
            .ok_or_else(|| anyhow::anyhow!("target"))?;
    let operator = azora_adapters::postgres::connect(&target).await?;
    let agent = azora_adapters::postgres::connect(&target).await?;
    // Checked where the statement runs: a limit already past on the member's clock names no keeper.
    let late = operator.name_keeper_until(3, 0.0).await;
    assert!(
        late.as_ref()
            .is_err_and(|e| e.to_string().contains("ran too long")),
        "PostgreSQL: a statement past its limit named the keeper: {late:?}"
    );
    assert!(
        !agent.kept_within(3, Duration::from_secs(30)).await?,
        "PostgreSQL: a keeper name past its limit counts"
    );
    keeper_name_deadline("PostgreSQL", (Session::Pg(operator), Session::Pg(agent))).await?;
    let redis = azora_tests::redis::RedisFleet::start(&["africa"])?;
    let pair = (
        Session::Redis(redis.client("africa").await?),
        Session::Redis(redis.client("africa").await?),
    );
    keeper_name_deadline("Redis", pair).await?;
    Ok(())
}

/// Credentials Secret `name` with `ca.crt`.
async fn secret_with_ca(
    s: &Scenario,
    name: &str,
    user: &str,
    password: &str,
    ca: &[u8],
) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(s.env.hub().client().await?, "default");
    let body: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"username": user, "password": password, "ca.crt": String::from_utf8_lossy(ca)}
    }))?;
    secrets.create(&PostParams::default(), &body).await?;
    Ok(())
}

/// Replaces `ca.crt` of Secret `name`.
async fn set_ca(s: &Scenario, name: &str, ca: &[u8]) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(s.env.hub().client().await?, "default");
    secrets
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"ca.crt": String::from_utf8_lossy(ca)}})),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn postgresql_members_that_take_tls_only_are_kept_with_their_certificates_checked() -> anyhow::Result<()>
{
    let ca = azora_tests::tls::TestCa::new()?;
    let stranger = azora_tests::tls::TestCa::new()?;
    let mut s = Scenario::start(2).await?;
    s.policy("5s", json!({})).await?;
    s.add_operator(&["--database-interval", "1s"])?;
    let pg = PgFleet::start(&["africa", "europe"])?;
    let ca_file = pg.require_tls(&ca)?;
    let local = pg.socket_client("africa").await?;
    let tcp = pg
        .client("africa")
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:#}"));
    assert!(
        tcp.as_ref().is_err_and(|e| e.contains("pg_hba.conf")),
        "a plain TCP session was not refused by hostssl: {tcp:?}"
    );
    // A ca.crt that is no certificate: a reason, nothing reached.
    secret_with_ca(
        &s,
        "pg-credentials",
        "postgres",
        &pg.password,
        b"not a certificate",
    )
    .await?;
    let tls = json!({"tls": {"mode": "VerifyFull", "standbyRootCertFile": ca_file.to_string_lossy()}});
    let client = s.env.hub().client().await?;
    create(
        &client,
        "databases",
        database("ledger", &pg, &["africa", "europe"], tls),
    )
    .await?;
    wait_status(&s, "ledger", Duration::from_secs(60), "a CA refused", |st| {
        condition(st, "Ready").1 == "InvalidCaCertificate"
            && st["members"].as_array().is_none_or(Vec::is_empty)
    })
    .await?;
    // A CA that did not sign the members' certificates: nothing is reached, and the status says why.
    set_ca(&s, "pg-credentials", &stranger.ca_pem()?).await?;
    let refused = wait_status(&s, "ledger", Duration::from_secs(60), "members refused", |st| {
        member(st, "africa")["message"]
            .as_str()
            .is_some_and(|m| m.contains("certificate"))
    })
    .await?;
    assert_eq!(member(&refused, "africa")["reachable"], false, "{refused:#}");
    // The members' own CA: observed, kept (the synchronous rule), the standby repointed with TLS checked.
    set_ca(&s, "pg-credentials", &ca.ca_pem()?).await?;
    let st = wait_status(
        &s,
        "ledger",
        Duration::from_secs(60),
        "streaming over TLS",
        |st| {
            st["primaryRegion"] == "africa"
                && condition(st, "Replicating").0 == "True"
                && member(st, "europe")["role"] == "Standby"
        },
    )
    .await?;
    let sync: String = local
        .query_one("show synchronous_standby_names", &[])
        .await?
        .get(0);
    assert!(sync.contains("europe"), "synchronous rule {sync} ({st:#})");
    let europe = pg.socket_client("europe").await?;
    let root = ca_file.to_string_lossy().to_string();
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(30) {
        let conninfo: String = europe.query_one("show primary_conninfo", &[]).await?.get(0);
        let verified = conninfo.contains("sslmode=verify-full") && conninfo.contains(&root);
        // Every session of the operator and the stream to europe encrypted.
        let rows = local
            .query(
                "select coalesce(a.application_name, ''), s.ssl, a.backend_type from pg_stat_activity a \
                 join pg_stat_ssl s using (pid) where a.client_addr is not null",
                &[],
            )
            .await?;
        let sessions: Vec<(String, bool, String)> =
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let operator = sessions.iter().any(|(app, _, _)| app.starts_with("azora"));
        let walsender = sessions.iter().any(|(_, _, kind)| kind == "walsender");
        if verified && operator && walsender && sessions.iter().all(|(_, ssl, _)| *ssl) {
            last.clear();
            break;
        }
        last = format!("verify-full conninfo: {verified}; sessions: {sessions:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(last.is_empty(), "not every session over checked TLS: {last}");
    // A commit needs europe: acknowledged, and there.
    tokio::time::timeout(
        Duration::from_secs(20),
        local.batch_execute("create table t (id int); insert into t values (1)"),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the commit was not acknowledged: europe does not confirm it"))??;
    // Flushed there before it was acknowledged; replayed a moment later.
    let mut seen = 0;
    for _ in 0..50 {
        if let Ok(r) = europe.query_one("select count(*) from t", &[]).await {
            seen = r.get::<_, i64>(0);
            if seen == 1 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, 1, "the commit is not on europe");
    Ok(())
}

/// The standbys' `primary_conninfo`, per region.
async fn conninfos(pg: &PgFleet, regions: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for r in regions {
        out.push(
            pg.socket_client(r)
                .await?
                .query_one("show primary_conninfo", &[])
                .await?
                .get(0),
        );
    }
    Ok(out)
}

/// The regions `africa` reports streaming to it.
async fn streaming_to_africa(local: &tokio_postgres::Client) -> anyhow::Result<Vec<String>> {
    let rows = local
        .query(
            "select application_name from pg_stat_replication where state = 'streaming'",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[tokio::test]
async fn a_tls_change_repoints_one_standby_at_a_time_and_never_one_while_another_cannot_stream()
-> anyhow::Result<()> {
    let ca = azora_tests::tls::TestCa::new()?;
    let mut s = Scenario::start(3).await?;
    s.policy("5s", json!({})).await?;
    s.add_operator(&["--database-interval", "1s"])?;
    let pg = PgFleet::start(&["africa", "europe", "asia"])?;
    let ca_file = pg.require_tls(&ca)?;
    let local = pg.socket_client("africa").await?;
    // The operator reaches every member over checked TLS, but the standbys are told to check their
    // upstream with a CA file their hosts do not have: the first one repointed cannot stream.
    secret_with_ca(&s, "pg-credentials", "postgres", &pg.password, &ca.ca_pem()?).await?;
    let missing = "/nonexistent/azora/ca.crt";
    let tls = json!({"tls": {"mode": "VerifyFull", "standbyRootCertFile": missing}});
    let client = s.env.hub().client().await?;
    create(
        &client,
        "databases",
        database("ledger", &pg, &["africa", "europe", "asia"], tls),
    )
    .await?;
    let start = Instant::now();
    let mut broken = Vec::new();
    while start.elapsed() < Duration::from_secs(60) {
        broken = conninfos(&pg, &["europe", "asia"])
            .await?
            .into_iter()
            .zip(["europe", "asia"])
            .filter(|(c, _)| c.contains(missing))
            .map(|(_, r)| r.to_string())
            .collect();
        if !broken.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(broken.len(), 1, "not one standby repointed first: {broken:?}");
    let other = if broken[0] == "europe" { "asia" } else { "europe" };
    // For 15 s: the other one is left as it is and keeps streaming, so commits go on.
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(15) {
        let now = conninfos(&pg, &[other]).await?;
        assert!(
            !now[0].contains(missing),
            "{other} was repointed while {} could not stream",
            broken[0]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let streaming = streaming_to_africa(&local).await?;
    assert!(
        streaming.iter().any(|r| r == other) && !streaming.contains(&broken[0]),
        "streaming to africa: {streaming:?}"
    );
    tokio::time::timeout(
        Duration::from_secs(20),
        local.batch_execute("create table t (id int); insert into t values (1)"),
    )
    .await
    .map_err(|_| anyhow::anyhow!("commits stalled"))??;
    // A step back to `Require` (no file to check with): the standby that cannot stream is repointed at once
    // (it loses nothing) and streams again; then the other.
    let dbs: Api<DynamicObject> = Api::all_with(client.clone(), &ar("Database", "databases"));
    dbs.patch(
        "ledger",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tls": {"mode": "Require", "standbyRootCertFile": null}}})),
    )
    .await?;
    let start = Instant::now();
    loop {
        let now = streaming_to_africa(&local).await?;
        let infos = conninfos(&pg, &["europe", "asia"]).await?;
        if now.len() == 2 && infos.iter().all(|c| c.contains("sslmode=require")) {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the step back did not bring {} back: streaming {now:?}, conninfos with {missing}: {:?}",
            broken[0],
            infos.iter().map(|c| c.contains(missing)).collect::<Vec<_>>(),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The file fixed in the spec: both repointed, both stream.
    dbs.patch(
        "ledger",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"tls": {"mode": "VerifyFull", "standbyRootCertFile": ca_file.to_string_lossy()}}}),
        ),
    )
    .await?;
    let start = Instant::now();
    let mut now = Vec::new();
    while start.elapsed() < Duration::from_secs(60) {
        now = streaming_to_africa(&local).await?;
        let infos = conninfos(&pg, &["europe", "asia"]).await?;
        if now.len() == 2 && infos.iter().all(|c| c.contains(&*ca_file.to_string_lossy())) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("not both streaming with the fixed CA file: {now:?}")
}

#[tokio::test]
async fn redis_members_that_take_tls_only_fail_over_and_replicate_over_tls() -> anyhow::Result<()> {
    let ca = azora_tests::tls::TestCa::new()?;
    let mut s = Scenario::start(3).await?;
    s.policy("5s", json!({})).await?;
    s.add_operator(&["--database-interval", "1s"])?;
    let rd = azora_tests::redis::RedisFleet::start_tls(&["africa", "europe", "asia"], &ca)?;
    // `Require`: encrypted, the certificate not checked by the operator (a ca.crt is not even needed).
    secret_with_ca(&s, "redis-credentials", "default", &rd.password, b"").await?;
    sessions_database(&s, &rd, json!({"tls": {"mode": "Require"}})).await?;
    wait_status(
        &s,
        "sessions",
        Duration::from_secs(60),
        "replicating over TLS",
        |st| {
            st["primaryRegion"] == "africa"
                && member(st, "europe")["role"] == "Standby"
                && member(st, "asia")["role"] == "Standby"
        },
    )
    .await?;
    anyhow::ensure!(
        rd.text("africa", &["SET", "k", "1"]).await? == "OK",
        "africa takes no write"
    );
    // africa would replicate in clear (its plain port is closed: it could not) unless the operator turns
    // TLS replication on when it makes africa follow.
    let off = rd
        .text("africa", &["CONFIG", "SET", "tls-replication", "no"])
        .await?;
    anyhow::ensure!(off == "OK", "{off}");
    // A planned move to europe: promoted over TLS, africa and asia follow it over TLS.
    manual_failover(&s, Some("europe")).await?;
    let st = wait_status(&s, "sessions", Duration::from_secs(90), "europe primary", |st| {
        st["primaryRegion"] == "europe" && member(st, "africa")["role"] == "Standby"
    })
    .await?;
    assert_eq!(st["epoch"], 2, "{st:#}");
    let (up, info) = redis_until(
        &rd,
        "africa",
        &["INFO", "replication"],
        Duration::from_secs(30),
        |r| r.contains(&format!("master_port:{}", rd.members[1].port)) && r.contains("master_link_status:up"),
    )
    .await;
    assert!(up, "africa does not replicate from europe: {info}");
    anyhow::ensure!(
        rd.text("europe", &["SET", "k", "2"]).await? == "OK",
        "europe takes no write"
    );
    let (reached, k) = redis_until(&rd, "africa", &["GET", "k"], Duration::from_secs(30), |r| {
        r == "2"
    })
    .await;
    assert!(reached, "the write on europe did not reach africa: {k}");
    Ok(())
}
