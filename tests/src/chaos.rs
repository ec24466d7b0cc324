//! Chaos experiments in tests (IO): region agents as real `azora-operator agent` processes next to the
//! simulated regions, pid files for the processes a fault stops, experiments created and asked to run, and
//! what a process's state really is (`/proc/<pid>/stat`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::Operator;
use crate::scenario::{ar, create};

/// Writes `pid` into `dir/<name>.pid` and returns the path.
pub fn pid_file(dir: &Path, name: &str, pid: u32) -> anyhow::Result<PathBuf> {
    let p = dir.join(format!("{name}.pid"));
    std::fs::write(&p, format!("{pid}\n"))?;
    Ok(p)
}

/// Starts the region agent of `region` against the hub `kubeconfig`, with its fault targets
/// (`("RegionOutage", pidfile)`), its state in `dir/agent-<region>`.
pub fn start_agent(
    kubeconfig: &Path,
    dir: &Path,
    region: &str,
    targets: &[(&str, &Path)],
) -> anyhow::Result<Operator> {
    start_agent_with_links(kubeconfig, dir, region, targets, &[])
}

/// [`start_agent`] with link proxies (`PEER=LISTEN->UPSTREAM`).
pub fn start_agent_with_links(
    kubeconfig: &Path,
    dir: &Path,
    region: &str,
    targets: &[(&str, &Path)],
    links: &[String],
) -> anyhow::Result<Operator> {
    let state = dir.join(format!("agent-{region}"));
    let mut args: Vec<String> = vec![
        "--region".into(),
        region.into(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    for (t, f) in targets {
        args.push("--fault-target".into());
        args.push(format!("{t}={}", f.display()));
    }
    for l in links {
        args.push("--link".into());
        args.push(l.clone());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    Operator::start_command(
        kubeconfig,
        dir.join(format!("agent-{region}.log")),
        "agent",
        &argv,
        &[("RUST_LOG", "info,kube=warn")],
    )
}

/// Whether a process is stopped (SIGSTOP): state `T` in `/proc/<pid>/stat`. A process that is gone is not.
pub fn stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // pid (comm) STATE ...: comm may hold spaces, so read after the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|s| s == "T" || s == "t")
}

/// Waits until `pred(pid)` holds; how long it took.
pub async fn wait_process(pid: u32, want_stopped: bool, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if stopped(pid) == want_stopped {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Creates a ChaosExperiment.
pub async fn experiment(client: &kube::Client, name: &str, spec: Value) -> anyhow::Result<()> {
    create(
        client,
        "chaosexperiments",
        json!({"apiVersion": "azora.io/v1alpha1", "kind": "ChaosExperiment",
               "metadata": {"name": name}, "spec": spec}),
    )
    .await
}

/// Creates a ChaosExperiment whose `fault` (on a far-off schedule, `noFailover` expected) runs for
/// `duration`, and asks for a run at once.
pub async fn quiet_fault_now(
    client: &kube::Client,
    name: &str,
    fault: Value,
    duration: &str,
) -> anyhow::Result<()> {
    experiment(
        client,
        name,
        json!({"fault": fault, "duration": duration, "schedule": "0 3 1 1 *",
               "expect": {"noFailover": true}}),
    )
    .await?;
    run_now(client, name, "1").await
}

fn api(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &ar("ChaosExperiment", "chaosexperiments"))
}

/// Asks for a run now (`azora.io/run-now: <token>`).
pub async fn run_now(client: &kube::Client, name: &str, token: &str) -> anyhow::Result<()> {
    api(client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"azora.io/run-now": token}}})),
        )
        .await?;
    Ok(())
}

/// Merge-patches the experiment's spec.
pub async fn patch_spec(client: &kube::Client, name: &str, spec: Value) -> anyhow::Result<()> {
    api(client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await?;
    Ok(())
}

/// The experiment's status (null when none).
pub async fn status(client: &kube::Client, name: &str) -> anyhow::Result<Value> {
    Ok(api(client)
        .get(name)
        .await?
        .data
        .get("status")
        .cloned()
        .unwrap_or(Value::Null))
}

/// Waits until the experiment's `lastRun` satisfies `pred`; returns the status (the last one seen on timeout,
/// as an error).
pub async fn wait_run(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < timeout {
        if let Ok(st) = status(client, name).await {
            if pred(&st["lastRun"]) {
                return Ok(st);
            }
            last = st;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!(
        "experiment {name}: run never reached the wanted state within {timeout:?}; status: {last:#}"
    )
}

/// Steps of a run's timeline, in order.
pub fn steps(run: &Value) -> Vec<String> {
    run["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|e| e["step"].as_str().map(ToString::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the agent of `region` has its Lease on the hub (it is live); false on timeout.
pub async fn wait_agent(client: &kube::Client, region: &str, timeout: Duration) -> bool {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "default");
    let name = format!("azora-agent-{region}");
    crate::wait::until(timeout, || async {
        matches!(leases.get_opt(&name).await, Ok(Some(_)))
    })
    .await
}

/// Starts an S3 server for `region` of a scenario, with its bucket `azora-<region>` and credentials Secret,
/// and points the Region's `objectStore` at it.
pub async fn attach_s3(s: &crate::scenario::Scenario, region: &str) -> anyhow::Result<crate::s3::S3Server> {
    let hub = s.env.hub().client().await?;
    let server = crate::s3::S3Server::start(s.env.dir.path().join(format!("s3-{region}.log"))).await?;
    let bucket = format!("azora-{region}");
    server.store(&bucket).ensure_bucket().await?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(hub.clone(), "default");
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": format!("s3-{region}")},
                "stringData": {"accessKeyId": crate::s3::ACCESS_KEY, "secretAccessKey": crate::s3::SECRET_KEY}}))?,
        )
        .await?;
    let regions: Api<DynamicObject> = Api::all_with(hub, &ar("Region", "regions"));
    regions
        .patch(
            region,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"objectStore": {
                "endpoint": server.endpoint, "bucket": bucket,
                "credentialsSecret": {"name": format!("s3-{region}")}}}})),
        )
        .await?;
    Ok(server)
}

/// One HTTP request to `addr` (the simulated region's server), answered in full: how long it took, `None`
/// when no whole answer came within `timeout`.
pub async fn http_round_trip(addr: std::net::SocketAddr, timeout: Duration) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = Instant::now();
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: region\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok()?;
        answer.starts_with(b"HTTP/").then(|| start.elapsed())
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

/// The fastest of `n` [`http_round_trip`]s.
pub async fn best_http_round_trip(
    addr: std::net::SocketAddr,
    n: usize,
    timeout: Duration,
) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    for _ in 0..n {
        if let Some(d) = http_round_trip(addr, timeout).await {
            best = Some(best.map_or(d, |b| b.min(d)));
        }
    }
    best
}

/// Waits until the run in progress has made its fault (a `FaultInjected` step); the run.
pub async fn wait_injected(client: &kube::Client, name: &str, timeout: Duration) -> anyhow::Result<Value> {
    let st = wait_run(client, name, timeout, |r| {
        steps(r).iter().any(|s| s == "FaultInjected")
            || (r["outcome"].is_string() && r["outcome"] != "Running")
    })
    .await?;
    let run = st["lastRun"].clone();
    anyhow::ensure!(
        run["outcome"] == "Running",
        "the run ended before the check: {run:#}"
    );
    Ok(run)
}

/// Changes the experiment's spec, asks for a run (`token`) and waits for it to finish (a run other than
/// `previous`, the last run's id); the finished run. Its outcome must be `outcome` and its message must hold
/// `says`.
pub async fn run_again(
    client: &kube::Client,
    name: &str,
    spec: Value,
    token: &str,
    previous: &Value,
    outcome: &str,
    says: &str,
) -> anyhow::Result<Value> {
    patch_spec(client, name, spec).await?;
    // The operator's cache sees the new spec before the run is asked for.
    tokio::time::sleep(Duration::from_secs(2)).await;
    run_now(client, name, token).await?;
    let st = wait_run(client, name, Duration::from_secs(60), |r| {
        r["id"] != *previous && r["outcome"].is_string() && r["outcome"] != "Running"
    })
    .await?;
    let run = st["lastRun"].clone();
    anyhow::ensure!(run["outcome"] == outcome, "expected {outcome}: {run:#}");
    anyhow::ensure!(
        run["message"].as_str().unwrap_or_default().contains(says),
        "the message does not say {says:?}: {run:#}"
    );
    Ok(run)
}
