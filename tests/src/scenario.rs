//! A failover scenario for tests and benchmarks (IO): an API server, simulated regions, a FailoverPolicy and
//! the operator with its embedded DNS server on a free port, plus helpers to read what DNS answers.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::{Operator, SimRegion, TestEnv, free_port};

/// Kinds by (kind, plural).
pub fn ar(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("azora.io", "v1alpha1", kind), plural)
}

/// Creates an azora.io object.
pub async fn create(client: &kube::Client, plural: &str, body: Value) -> anyhow::Result<()> {
    let kind = body["kind"].as_str().unwrap_or_default().to_string();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar(&kind, plural));
    api.create(&PostParams::default(), &serde_json::from_value(body)?)
        .await?;
    Ok(())
}

/// A running scenario.
pub struct Scenario {
    /// The API server.
    pub env: TestEnv,
    /// Regions in priority order.
    pub regions: Vec<SimRegion>,
    /// Operator replicas.
    pub operators: Vec<Operator>,
    /// DNS server of each replica.
    pub dns: Vec<SocketAddr>,
    /// Metrics port of each replica.
    pub metrics: Vec<u16>,
}

/// The standard four simulated regions on 127.0.0.11–14.
pub const REGIONS: [(&str, &str, &str); 4] = [
    ("africa", "127.0.0.11", "Africa"),
    ("europe", "127.0.0.12", "Europe"),
    ("asia", "127.0.0.13", "Asia"),
    ("americas", "127.0.0.14", "SouthAmerica"),
];

impl Scenario {
    /// Starts the API server and `n` simulated regions and creates their Region objects.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        let env = TestEnv::start().await?;
        let client = env.hub().client().await?;
        let mut regions = Vec::new();
        for (i, (name, ip, continent)) in REGIONS.iter().take(n).enumerate() {
            let r = SimRegion::start(name, ip, &[])?;
            create(&client, "regions", r.region(10 * (i as i32 + 1), continent, ip)).await?;
            regions.push(r);
        }
        Ok(Self {
            env,
            regions,
            operators: Vec::new(),
            dns: Vec::new(),
            metrics: Vec::new(),
        })
    }

    /// Creates a FailoverPolicy `platform` for `api.test.azora.` over the regions in order.
    pub async fn policy(&self, hold_down: &str, extra: Value) -> anyhow::Result<()> {
        let regions: Vec<Value> = self.regions.iter().map(|r| json!({"name": r.name})).collect();
        let mut spec = json!({"zone": "test.azora.", "hostnames": ["api"], "strategy": "Failover",
                              "regions": regions, "ttl": 5, "failback": {"mode": "Automatic", "holdDown": hold_down}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        let body = json!({"apiVersion": "azora.io/v1alpha1", "kind": "FailoverPolicy",
                          "metadata": {"name": "platform"}, "spec": spec});
        create(&self.env.hub().client().await?, "failoverpolicies", body).await
    }

    /// Starts one more operator replica (identity `replica-<i>`) with its own DNS and metrics ports.
    pub fn add_operator(&mut self, extra_args: &[&str]) -> anyhow::Result<()> {
        let i = self.operators.len();
        let dns: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let metrics = free_port()?;
        let identity = format!("replica-{i}");
        let mut args: Vec<String> = vec![
            "--identity".into(),
            identity.clone(),
            "--dns-addr".into(),
            dns.to_string(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics}"),
        ];
        args.extend(extra_args.iter().map(ToString::to_string));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.env.dir.path().join(format!("{identity}.log"));
        let extra_env = [(
            "RUST_LOG",
            "info,kube=warn,hickory_server=warn,azora_controllers=debug",
        )];
        self.operators.push(Operator::start(
            &self.env.hub().kubeconfig,
            log,
            &argv,
            &extra_env,
        )?);
        self.dns.push(dns);
        self.metrics.push(metrics);
        Ok(())
    }

    /// What replica `i`'s DNS answers for `api.test.azora.` (empty on error).
    pub async fn answer(&self, i: usize) -> Vec<Ipv4Addr> {
        azora_adapters::dns::verify::resolve_a(self.dns[i], "api.test.azora.", Duration::from_millis(500))
            .await
            .unwrap_or_default()
    }

    /// Waits until replica `i` answers exactly `ip`; returns how long it took.
    pub async fn wait_answer(&self, i: usize, ip: &str, timeout: Duration) -> Option<Duration> {
        let want: Vec<Ipv4Addr> = vec![ip.parse().ok()?];
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.answer(i).await == want {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Waits until every region's verdict is `Healthy` (steady state).
    pub async fn wait_all_healthy(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let mut all = true;
            for r in &self.regions {
                if self
                    .region_status(&r.name)
                    .await
                    .map(|s| s["verdict"] == "Healthy")
                    .unwrap_or(false)
                {
                    continue;
                }
                all = false;
            }
            if all {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Waits until every region is `Healthy` and the policy has regions to answer with (the steady state a chaos
    /// experiment checks before it starts: the operator's own view of the policy can trail its regions).
    pub async fn wait_steady(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        if !self.wait_all_healthy(timeout).await {
            return false;
        }
        while start.elapsed() < timeout {
            if self
                .policy_status()
                .await
                .ok()
                .and_then(|s| s["activeRegions"].as_array().map(|a| !a.is_empty()))
                .unwrap_or(false)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// The policy's status.
    pub async fn policy_status(&self) -> anyhow::Result<Value> {
        let api: Api<DynamicObject> = Api::all_with(
            self.env.hub().client().await?,
            &ar("FailoverPolicy", "failoverpolicies"),
        );
        Ok(api
            .get("platform")
            .await?
            .data
            .get("status")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// A region's status.
    pub async fn region_status(&self, name: &str) -> anyhow::Result<Value> {
        let api: Api<DynamicObject> = Api::all_with(self.env.hub().client().await?, &ar("Region", "regions"));
        Ok(api
            .get(name)
            .await?
            .data
            .get("status")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// The tail of replica `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = self.operators.get(i).map(Operator::log_text).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}
