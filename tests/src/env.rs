//! Starting etcd and kube-apiservers (IO: processes, files, ports). Several apiservers share one etcd under
//! distinct `--etcd-prefix`es, so a hub and regional clusters cost one etcd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::{cache_dir, free_port};

/// Bearer token of the admin user (group system:masters) in every test apiserver.
pub const ADMIN_TOKEN: &str = "azora-test-admin-token";

struct Proc {
    name: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.name;
    }
}

/// One kube-apiserver.
pub struct ApiServer {
    /// Name (also the etcd prefix).
    pub name: String,
    /// https://127.0.0.1:PORT
    pub url: String,
    /// Kubeconfig file for the admin user.
    pub kubeconfig: PathBuf,
    _proc: Proc,
    _kcm: Option<Proc>,
}

impl ApiServer {
    /// The API server's serving certificate with the CA that signed it (what a TokenReview caller such as
    /// OpenBao's Kubernetes auth trusts).
    pub fn serving_cert(&self) -> PathBuf {
        self.kubeconfig
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(format!("certs-{}/apiserver.crt", self.name))
    }

    /// A client for the admin user.
    pub async fn client(&self) -> anyhow::Result<Client> {
        client_from(&self.kubeconfig, None).await
    }

    /// A client impersonating `user` (e.g. a ServiceAccount) with `groups`.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> anyhow::Result<Client> {
        client_from(&self.kubeconfig, Some((user, groups))).await
    }

    /// Hangs the API server (SIGSTOP): connections are accepted by the kernel and never answered, the
    /// way a partitioned or overloaded cluster looks from outside.
    pub fn pause(&self) {
        crate::signal(&self._proc.child, "-STOP");
    }

    /// Resumes a paused API server.
    pub fn resume(&self) {
        crate::signal(&self._proc.child, "-CONT");
    }

    /// Mutating requests this API server has served successfully (`apiserver_request_total`, 2xx, with a
    /// verb other than GET/LIST/WATCH), optionally only for the given resources.
    pub async fn write_requests(&self, resources: Option<&[&str]>) -> anyhow::Result<u64> {
        Ok(self.write_counts(resources).await?.took_effect)
    }

    /// Mutating requests by what their response code says about their effect (see [`WriteCounts`]),
    /// optionally only for the given resources. A scrape without `apiserver_request_total` is an error.
    pub async fn write_counts(&self, resources: Option<&[&str]>) -> anyhow::Result<WriteCounts> {
        let client = self.client().await?;
        let req = http::Request::get("/metrics").body(Vec::new())?;
        let text = client.request_text(req).await?;
        count_writes(&text, resources)
    }

    /// Writes a kubeconfig that impersonates `user` and returns its path.
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str], dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("kubeconfig-{}-{}", self.name, user.replace(':', "_")));
        std::fs::write(
            &path,
            kubeconfig_yaml(&self.name, &self.url, Some((user, groups))),
        )?;
        Ok(path)
    }
}

async fn client_from(path: &Path, impersonate: Option<(&str, &[&str])>) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(path)?;
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    if let Some((user, groups)) = impersonate {
        cfg.auth_info.impersonate = Some(user.to_string());
        cfg.auth_info.impersonate_groups = Some(groups.iter().map(ToString::to_string).collect());
    }
    Ok(Client::try_from(cfg)?)
}

fn kubeconfig_yaml(name: &str, url: &str, impersonate: Option<(&str, &[&str])>) -> String {
    let mut user = format!("    token: {ADMIN_TOKEN}\n");
    if let Some((u, groups)) = impersonate {
        user.push_str(&format!("    as: \"{u}\"\n"));
        if !groups.is_empty() {
            user.push_str("    as-groups:\n");
            for g in groups {
                user.push_str(&format!("    - \"{g}\"\n"));
            }
        }
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\n\
         users:\n- name: admin\n  user:\n{user}contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: admin\n\
         current-context: {name}\n"
    )
}

/// Mutating requests an API server counted (`apiserver_request_total`), by what the response code says
/// about their effect. Attempts are what the operator's own `azora_regional_writes_total` counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// 2xx: the write took effect (a server-side apply that changed nothing included).
    pub took_effect: u64,
    /// 5xx: the outcome is unknown. Some are refusals that changed nothing (e.g. quota admission timing
    /// out, retried), but a write whose request context ends while etcd commits it (its client killed or
    /// timed out mid-request) is stored and still answered with a 5xx. 4xx (refused) are in neither count.
    pub uncertain: u64,
}

fn count_writes(metrics: &str, resources: Option<&[&str]>) -> anyhow::Result<WriteCounts> {
    let label = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_string())
    };
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .collect();
    // the family always has series (the API server's own bootstrap writes): none means a broken scrape
    anyhow::ensure!(
        !lines.is_empty(),
        "no apiserver_request_total in the API server's /metrics: {} bytes scraped",
        metrics.len()
    );
    let mut counts = WriteCounts::default();
    for l in lines {
        let verb = label(l, "verb").unwrap_or_default();
        if matches!(verb.as_str(), "GET" | "LIST" | "WATCH" | "CONNECT") {
            continue;
        }
        if !resources.is_none_or(|rs| rs.contains(&label(l, "resource").unwrap_or_default().as_str())) {
            continue;
        }
        let n = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| anyhow::anyhow!("unparsable sample line {l:?}"))? as u64;
        match label(l, "code").unwrap_or_default().chars().next() {
            Some('2') => counts.took_effect += n,
            Some('5') => counts.uncertain += n,
            _ => {}
        }
    }
    Ok(counts)
}

/// Where the kube binaries are.
pub fn kube_bin_dir() -> PathBuf {
    std::env::var_os("AZORA_KUBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("kube-1.20.2/bin"))
}

/// An etcd plus apiservers.
pub struct TestEnv {
    /// Scratch directory (kubeconfigs, certs, logs, etcd data).
    pub dir: tempfile::TempDir,
    etcd_url: String,
    _etcd: Proc,
    servers: Vec<ApiServer>,
}

fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Proc {
        name: name.into(),
        child,
    })
}

impl TestEnv {
    /// Starts etcd and one apiserver named `hub` with the CRDs installed (CEL removed: 1.20).
    pub async fn start() -> anyhow::Result<Self> {
        let mut env = Self::start_etcd()?;
        env.add_apiserver("hub", true).await?;
        Ok(env)
    }

    /// Starts etcd only.
    pub fn start_etcd() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("azora-test-").tempdir()?;
        let etcd =
            which("etcd").context("etcd missing: run tests/scripts/install-kube.sh (make test-env)")?;
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let proc = spawn(
            "etcd",
            Command::new(etcd)
                .arg("--data-dir")
                .arg(dir.path().join("etcd"))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
                ))
                .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"))
                .arg("--unsafe-no-fsync")
                .env("ETCD_UNSUPPORTED_ARCH", "arm64"),
            &dir.path().join("etcd.log"),
        )?;
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,\"system:masters\"\n"),
        )?;
        let key = dir.path().join("sa.key");
        let st = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .context("openssl")?;
        anyhow::ensure!(st.success(), "openssl genrsa failed");
        Ok(Self {
            dir,
            etcd_url,
            _etcd: proc,
            servers: Vec::new(),
        })
    }

    /// Adds an apiserver under `--etcd-prefix=/<name>`; with `crds`, installs the Azora CRDs.
    pub async fn add_apiserver(&mut self, name: &str, crds: bool) -> anyhow::Result<&ApiServer> {
        let bin = kube_bin_dir();
        let apiserver = bin.join("kube-apiserver");
        anyhow::ensure!(
            apiserver.exists(),
            "{} missing: run tests/scripts/install-kube.sh (make test-env)",
            apiserver.display()
        );
        let port = free_port()?;
        let d = self.dir.path();
        let certs = d.join(format!("certs-{name}"));
        std::fs::create_dir_all(&certs)?;
        let key = d.join("sa.key");
        let url = format!("https://127.0.0.1:{port}");
        let proc = spawn(
            &format!("kube-apiserver-{name}"),
            Command::new(&apiserver)
                .arg(format!("--etcd-servers={}", self.etcd_url))
                .arg(format!("--etcd-prefix=/{name}"))
                .arg(format!("--secure-port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg("--insecure-port=0")
                .arg(format!("--cert-dir={}", certs.display()))
                .arg(format!("--token-auth-file={}", d.join("tokens.csv").display()))
                .arg("--authorization-mode=RBAC")
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", key.display()))
                .arg(format!("--service-account-signing-key-file={}", key.display()))
                .arg("--disable-admission-plugins=ServiceAccount")
                .arg("--service-cluster-ip-range=10.96.0.0/16")
                .arg("--allow-privileged=true"),
            &d.join(format!("apiserver-{name}.log")),
        )?;
        let kubeconfig = d.join(format!("kubeconfig-{name}"));
        std::fs::write(&kubeconfig, kubeconfig_yaml(name, &url, None))?;
        // Ready when /readyz answers and the default namespace exists.
        let client = client_from(&kubeconfig, None).await?;
        let ready = crate::wait::until(Duration::from_secs(90), || {
            let c = client.clone();
            async move {
                let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c);
                ns.get_opt("default").await.ok().flatten().is_some()
            }
        })
        .await;
        if !ready {
            let log = std::fs::read_to_string(d.join(format!("apiserver-{name}.log"))).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("kube-apiserver {name} did not become ready in 90s:\n{tail}");
        }
        let kcm = if bin.join("kube-controller-manager").exists() {
            Some(spawn(
                &format!("kcm-{name}"),
                Command::new(bin.join("kube-controller-manager"))
                    .arg(format!("--kubeconfig={}", kubeconfig.display()))
                    .arg("--controllers=namespace,garbagecollector")
                    .arg("--port=0")
                    .arg("--secure-port=0")
                    .arg("--leader-elect=false"),
                &d.join(format!("kcm-{name}.log")),
            )?)
        } else {
            None
        };
        let server = ApiServer {
            name: name.into(),
            url,
            kubeconfig,
            _proc: proc,
            _kcm: kcm,
        };
        if crds {
            install_crds(&server.client().await?).await?;
        }
        self.servers.push(server);
        self.servers.last().context("just pushed")
    }

    /// The hub apiserver (the first one).
    pub fn hub(&self) -> &ApiServer {
        &self.servers[0]
    }

    /// An apiserver by name.
    pub fn server(&self, name: &str) -> Option<&ApiServer> {
        self.servers.iter().find(|s| s.name == name)
    }
}

/// Installs every Azora CRD with server-side apply (CEL removed for 1.20) and waits until established.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("azora-tests").force();
    for crd in azora_api::crds() {
        let crd = azora_api::strip_cel(&crd);
        let name = crd.metadata.name.clone().context("crd name")?;
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
    }
    for crd in azora_api::crds() {
        let name = crd.metadata.name.clone().context("crd name")?;
        let ok = crate::wait::until(Duration::from_secs(30), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                api.get(&name)
                    .await
                    .ok()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
            }
        })
        .await;
        anyhow::ensure!(ok, "CRD {name} not established");
    }
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_counted_by_effect_and_a_scrape_without_the_family_is_an_error() {
        let text = "# TYPE apiserver_request_total counter\n\
            apiserver_request_total{code=\"201\",component=\"apiserver\",resource=\"namespaces\",verb=\"APPLY\"} 7\n\
            apiserver_request_total{code=\"200\",component=\"apiserver\",resource=\"namespaces\",verb=\"APPLY\"} 2\n\
            apiserver_request_total{code=\"200\",component=\"apiserver\",resource=\"namespaces\",verb=\"LIST\"} 50\n\
            apiserver_request_total{code=\"500\",component=\"apiserver\",resource=\"rolebindings\",verb=\"APPLY\"} 1\n\
            apiserver_request_total{code=\"409\",component=\"apiserver\",resource=\"rolebindings\",verb=\"POST\"} 3\n\
            apiserver_request_total{code=\"201\",component=\"apiserver\",resource=\"configmaps\",verb=\"POST\"} 4\n";
        let all = count_writes(text, None).unwrap();
        assert_eq!(
            all,
            WriteCounts {
                took_effect: 13,
                uncertain: 1
            }
        );
        let managed = count_writes(text, Some(&["namespaces", "rolebindings"])).unwrap();
        assert_eq!(
            managed,
            WriteCounts {
                took_effect: 9,
                uncertain: 1
            }
        );
        assert!(count_writes("", None).is_err());
        assert!(count_writes("# nothing here\n", Some(&["namespaces"])).is_err());
    }
}
