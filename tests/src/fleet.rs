//! A multi-region fleet for tenancy tests and the tenant benchmark (IO): a hub API server with the CRDs,
//! one real regional API server per region (sharing the etcd under their own prefixes), one S3 server per
//! region with its bucket, the kubeconfig and S3 credential Secrets, and the Region objects pointing at
//! all of it. The operator is the real binary.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use azora_adapters::objstore::ObjectStore;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

use crate::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use crate::scenario::{ar, create};
use crate::{Operator, TestEnv, free_port};

/// Region names and continents of the platform.
pub const CONTINENTS: [(&str, &str); 4] = [
    ("africa", "Africa"),
    ("europe", "Europe"),
    ("asia", "Asia"),
    ("americas", "SouthAmerica"),
];

/// Resources the operator places in regional clusters.
pub const MANAGED: &[&str] = &[
    "namespaces",
    "resourcequotas",
    "limitranges",
    "networkpolicies",
    "rolebindings",
];

/// The running fleet.
pub struct Fleet {
    /// etcd, the hub (first) and the regional API servers (named after their regions).
    pub env: TestEnv,
    /// S3 server per region.
    pub s3: BTreeMap<String, S3Server>,
    /// Region names in order.
    pub regions: Vec<String>,
    /// The operator, once started.
    pub operator: Option<Operator>,
    /// Its metrics port.
    pub metrics_port: u16,
}

/// The bucket of a region.
pub fn bucket(region: &str) -> String {
    format!("azora-{region}")
}

impl Fleet {
    /// Starts the hub, `regions` regional clusters and S3 servers, and creates Secrets and Regions.
    pub async fn start(regions: &[&str]) -> anyhow::Result<Self> {
        let mut env = TestEnv::start().await?;
        let mut s3 = BTreeMap::new();
        for r in regions {
            env.add_apiserver(r, false).await?;
            let server = S3Server::start(env.dir.path().join(format!("s3-{r}.log"))).await?;
            server.store(&bucket(r)).ensure_bucket().await?;
            s3.insert(r.to_string(), server);
        }
        let fleet = Self {
            env,
            s3,
            regions: regions.iter().map(ToString::to_string).collect(),
            operator: None,
            metrics_port: 0,
        };
        let hub = fleet.hub().await?;
        for (i, r) in regions.iter().enumerate() {
            fleet.put_kubeconfig_secret(r, None).await?;
            let secrets: Api<Secret> = Api::namespaced(hub.clone(), "default");
            secrets
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({
                        "metadata": {"name": format!("s3-{r}")},
                        "stringData": {"accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET_KEY}
                    }))?,
                )
                .await?;
            create(&hub, "regions", fleet.region_object(r, 10 * (i as i32 + 1))?).await?;
        }
        Ok(fleet)
    }

    fn region_object(&self, region: &str, priority: i32) -> anyhow::Result<Value> {
        let continent = CONTINENTS
            .iter()
            .find(|(n, _)| *n == region)
            .map(|(_, c)| *c)
            .context("unknown region")?;
        let s3 = self.s3.get(region).context("no S3 server")?;
        Ok(json!({
            "apiVersion": "azora.io/v1alpha1", "kind": "Region", "metadata": {"name": region},
            "spec": {
                "location": {"city": region, "country": "ZZ", "continent": continent, "latitude": 0.0, "longitude": 0.0},
                "priority": priority,
                "probes": {"endpoints": [{"name": "s3", "type": "HTTP", "url": format!("{}/", s3.endpoint)}]},
                "dns": {"ipv4": ["192.0.2.1"]},
                "cluster": {"kubeconfigSecret": {"name": format!("kubeconfig-{region}"), "key": "kubeconfig"}},
                "objectStore": {"endpoint": s3.endpoint, "bucket": bucket(region),
                                "credentialsSecret": {"name": format!("s3-{region}")}}
            }
        }))
    }

    /// Makes the operator reach `region`'s cluster as its least-privilege identity: applies
    /// `regions/regional-cluster/rbac.yaml` there and hands the operator a kubeconfig impersonating the
    /// `azora-operator` ServiceAccount it binds.
    pub async fn least_privilege(&self, region: &str) -> anyhow::Result<()> {
        self.least_privilege_with(region, &[]).await
    }

    /// [`Self::least_privilege`], with the roles of `extra` files of `regions/regional-cluster/` bound too
    /// (e.g. `chaos-rbac.yaml`).
    pub async fn least_privilege_with(&self, region: &str, extra: &[&str]) -> anyhow::Result<()> {
        let api = self.env.server(region).context("no such region")?;
        for file in std::iter::once("rbac.yaml").chain(extra.iter().copied()) {
            let out = std::process::Command::new(crate::tool("kubectl")?)
                .arg("--kubeconfig")
                .arg(&api.kubeconfig)
                .args(["apply", "--server-side", "-f"])
                .arg(crate::repo_root().join("regions/regional-cluster").join(file))
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "{file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let groups = [
            "system:serviceaccounts",
            "system:serviceaccounts:azora-system",
            "system:authenticated",
        ];
        let kc = api.kubeconfig_as(
            "system:serviceaccount:azora-system:azora-operator",
            &groups,
            self.env.dir.path(),
        )?;
        self.put_kubeconfig_secret(region, Some(&std::fs::read_to_string(kc)?))
            .await
    }

    /// Creates or replaces the kubeconfig Secret of `region` (with `content`, or the real kubeconfig).
    pub async fn put_kubeconfig_secret(&self, region: &str, content: Option<&str>) -> anyhow::Result<()> {
        let server = self.env.server(region).context("no such regional cluster")?;
        let kubeconfig = match content {
            Some(c) => c.to_string(),
            None => std::fs::read_to_string(&server.kubeconfig)?,
        };
        let secrets: Api<Secret> = Api::namespaced(self.hub().await?, "default");
        let name = format!("kubeconfig-{region}");
        let body: Secret = serde_json::from_value(json!({
            "metadata": {"name": name}, "stringData": {"kubeconfig": kubeconfig}
        }))?;
        secrets
            .patch(
                &name,
                &kube::api::PatchParams::apply("azora-tests").force(),
                &kube::api::Patch::Apply(&json!({
                    "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                    "stringData": body.string_data
                })),
            )
            .await?;
        Ok(())
    }

    /// Starts the operator with `extra` arguments (no DNS server unless `extra` names `--dns-addr`; metrics on a
    /// free port).
    pub fn start_operator(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let port = free_port()?;
        let metrics = format!("127.0.0.1:{port}");
        let mut args = vec!["--metrics-addr", metrics.as_str()];
        if !extra.contains(&"--dns-addr") {
            args.extend(["--dns-addr", "off"]);
        }
        args.extend_from_slice(extra);
        let n = std::fs::read_dir(self.env.dir.path())?.count();
        let log = self.env.dir.path().join(format!("operator-{n}.log"));
        // Status writes log why at debug level: a bench that counts writes can say what changed.
        let env = [("RUST_LOG", "info,azora_runtime::pipeline=debug")];
        self.operator = Some(Operator::start(&self.env.hub().kubeconfig, log, &args, &env)?);
        self.metrics_port = port;
        Ok(())
    }

    /// Stops the operator (SIGKILL).
    pub fn kill_operator(&mut self) {
        self.operator = None;
    }

    /// Write requests every regional API server has served for the managed resources.
    pub async fn regional_writes(&self) -> anyhow::Result<u64> {
        Ok(self.regional_write_counts().await?.took_effect)
    }

    /// Write requests to the managed resources, summed over the regional API servers, by what their
    /// response codes say about their effect.
    pub async fn regional_write_counts(&self) -> anyhow::Result<crate::WriteCounts> {
        let mut n = crate::WriteCounts::default();
        for r in &self.regions {
            let c = self
                .env
                .server(r)
                .context("no such regional cluster")?
                .write_counts(Some(MANAGED))
                .await?;
            n.took_effect += c.took_effect;
            n.uncertain += c.uncertain;
        }
        Ok(n)
    }

    /// Admin client of the hub.
    pub async fn hub(&self) -> anyhow::Result<kube::Client> {
        self.env.hub().client().await
    }

    /// Admin client of a regional cluster.
    pub async fn regional(&self, region: &str) -> anyhow::Result<kube::Client> {
        self.env
            .server(region)
            .context("no such regional cluster")?
            .client()
            .await
    }

    /// The bucket of `region`.
    pub fn store(&self, region: &str) -> anyhow::Result<ObjectStore> {
        Ok(self
            .s3
            .get(region)
            .context("no S3 server")?
            .store(&bucket(region)))
    }

    /// Creates a Tenant.
    pub async fn tenant(&self, name: &str, spec: Value) -> anyhow::Result<()> {
        create(
            &self.hub().await?,
            "tenants",
            json!({"apiVersion": "azora.io/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec}),
        )
        .await
    }

    /// A Tenant as JSON (None when gone).
    /// Every Event in the hub.
    pub async fn events(&self) -> anyhow::Result<Vec<Event>> {
        let api: Api<Event> = Api::all(self.hub().await?);
        Ok(api.list(&ListParams::default()).await?.items)
    }

    pub async fn tenant_object(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let api: Api<DynamicObject> = Api::all_with(self.hub().await?, &ar("Tenant", "tenants"));
        Ok(api
            .get_opt(name)
            .await?
            .map(|o| serde_json::to_value(o).unwrap_or_default()))
    }

    /// A condition's status of a Tenant.
    pub async fn condition(&self, name: &str, type_: &str) -> Option<String> {
        let t = self.tenant_object(name).await.ok()??;
        t["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .and_then(|c| c["status"].as_str().map(str::to_string))
    }

    /// Waits until a Tenant's condition has `status`.
    pub async fn wait_condition(&self, name: &str, type_: &str, status: &str, timeout: Duration) -> bool {
        crate::wait::until(timeout, || async move {
            self.condition(name, type_).await.as_deref() == Some(status)
        })
        .await
    }

    /// The operator's log.
    pub fn log(&self) -> String {
        self.operator
            .as_ref()
            .and_then(|o| std::fs::read_to_string(&o.log).ok())
            .unwrap_or_default()
    }

    /// One metric's value from the operator's /metrics (sum over the lines starting with `prefix`). A
    /// failed scrape (no operator, no answer, not 200) and a missing series are errors, never 0.
    pub async fn metric(&self, prefix: &str) -> anyhow::Result<f64> {
        crate::metric(&self.metrics_text().await?, prefix)
    }

    /// Like [`Fleet::metric`], but `None` when no series starts with `prefix` — for a labelled counter that
    /// may legitimately not exist (yet). A failed scrape is still an error.
    pub async fn metric_if_present(&self, prefix: &str) -> anyhow::Result<Option<f64>> {
        crate::metric_if_present(&self.metrics_text().await?, prefix)
    }

    /// The operator's /metrics text (an error when the operator is not running or does not answer).
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        anyhow::ensure!(
            self.operator.is_some(),
            "no operator running to scrape /metrics from"
        );
        crate::metrics_text(self.metrics_port).await
    }
}
