//! Real OpenBao servers for tests (IO): one `bao server` per region on loopback, from a config file (raft
//! storage, the file audit device declared in the config), initialised and unsealed through the API, with a
//! KV v2 engine at `secret/`. The binary comes from `tests/scripts/install-openbao.sh`; a missing binary is
//! an error, never a skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

/// The KV v2 mount every test server has.
pub const KV_MOUNT: &str = "secret";

/// Path of `bao` (or `AZORA_BAO`).
pub fn bao_bin() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("AZORA_BAO")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::cache_dir().join("openbao/bao"));
    anyhow::ensure!(
        p.exists(),
        "{} missing: run tests/scripts/install-openbao.sh (make test-env)",
        p.display()
    );
    Ok(p)
}

/// One running OpenBao server; killed on drop.
pub struct OpenBao {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// The root token (tests only).
    pub root_token: String,
    unseal_key: String,
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn client(address: &str, token: &str) -> anyhow::Result<VaultClient> {
    // vaultrs' reqwest carries no TLS provider of its own; the process uses ring, as the operator does.
    azora_adapters::vault::install_tls_provider();
    Ok(VaultClient::new(
        VaultClientSettingsBuilder::default()
            .address(address)
            .token(token)
            .timeout(Some(Duration::from_secs(10)))
            .build()?,
    )?)
}

/// The HTTP status of `GET /v1/sys/health` (200: unsealed and active; 429 standby; 503 sealed).
async fn health_status(port: u16) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET /v1/sys/health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Runs a request of the harness again while the server answers with a reset connection or a 5xx (a
/// server just started, unsealed or electing its raft leader), for at most 30 s; then its error, saying
/// `what` was being done.
async fn retrying<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, vaultrs::error::ClientError>>,
{
    use vaultrs::error::ClientError;
    let began = std::time::Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(ClientError::RestClientError { .. }) if began.elapsed() < Duration::from_secs(30) => {}
            Err(ClientError::APIError { code, .. })
                if code >= 500 && began.elapsed() < Duration::from_secs(30) => {}
            Err(e) => return Err(anyhow::Error::new(e).context(what.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl OpenBao {
    /// Starts a server named `name` with its files under `dir`, initialises (one key share), unseals it
    /// and mounts KV v2 at `secret/`.
    pub async fn start(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let dir = dir.join(format!("openbao-{name}"));
        std::fs::create_dir_all(dir.join("raft"))?;
        let port = crate::free_port()?;
        let cluster_port = crate::free_port()?;
        let config = format!(
            r#"storage "raft" {{
  path    = "{raft}"
  node_id = "{name}"
}}
listener "tcp" {{
  address     = "127.0.0.1:{port}"
  tls_disable = true
}}
api_addr      = "http://127.0.0.1:{port}"
cluster_addr  = "http://127.0.0.1:{cluster_port}"
disable_mlock = true
audit "file" "file" {{
  options {{
    file_path = "{audit}"
  }}
}}
"#,
            raft = dir.join("raft").display(),
            audit = dir.join("audit.log").display(),
        );
        std::fs::write(dir.join("config.hcl"), config)?;
        let mut bao = Self {
            child: None,
            dir,
            port,
            address: format!("http://127.0.0.1:{port}"),
            root_token: String::new(),
            unseal_key: String::new(),
        };
        bao.spawn().await?;
        // Listening is not serving yet: the first requests can be reset while the server finishes starting.
        let anon = client(&bao.address, "")?;
        let began = std::time::Instant::now();
        let mut fresh_starts = 0;
        let init = loop {
            match vaultrs::sys::start_initialization(&anon, 1, 1, None).await {
                Ok(i) => break i,
                Err(vaultrs::error::ClientError::RestClientError { .. })
                    if began.elapsed() < Duration::from_secs(30) =>
                {
                    bao.ensure_running()?;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                // A new single-node raft can fail its initialisation after generating the keys ("failed to
                // unlock initialization lock: cannot find peer", answered 400): the keys are lost with the
                // answer, so the server starts over from empty storage.
                Err(vaultrs::error::ClientError::APIError { code: 400, .. }) if fresh_starts < 3 => {
                    fresh_starts += 1;
                    if let Some(mut c) = bao.child.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    std::fs::remove_dir_all(bao.dir.join("raft"))?;
                    std::fs::create_dir_all(bao.dir.join("raft"))?;
                    bao.spawn().await?;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("initialising OpenBao; server log:\n{}", bao.log_tail())));
                }
            }
        };
        bao.root_token = init.root_token;
        bao.unseal_key = init.keys.first().cloned().context("no unseal key")?;
        bao.unseal().await.context("unsealing a new OpenBao")?;
        let root = bao.root()?;
        retrying("mounting KV v2", || async {
            let mut opts = vaultrs::api::sys::requests::EnableEngineRequest::builder();
            opts.options(HashMap::from([("version".to_string(), "2".to_string())]));
            vaultrs::sys::mount::enable(&root, KV_MOUNT, "kv", Some(&mut opts)).await
        })
        .await
        .with_context(|| format!("server log:\n{}", bao.log_tail()))?;
        Ok(bao)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))?;
        let child = Command::new(bao_bin()?)
            .arg("server")
            .arg(format!("-config={}", self.dir.join("config.hcl").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting bao server")?;
        self.child = Some(child);
        let port = self.port;
        let up = crate::wait::until(Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        anyhow::ensure!(up, "OpenBao did not listen on {port} in 30s");
        Ok(())
    }

    /// An error with the server's log when its process has exited.
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(c) = &mut self.child
            && let Ok(Some(status)) = c.try_wait()
        {
            anyhow::bail!("OpenBao exited ({status}); server log:\n{}", self.log_tail());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A client with the root token.
    pub fn root(&self) -> anyhow::Result<VaultClient> {
        client(&self.address, &self.root_token)
    }

    /// Unseals and waits until the server is the active node (raft elected) and answers KV requests.
    pub async fn unseal(&self) -> anyhow::Result<()> {
        let anon = client(&self.address, "")?;
        retrying("unsealing", || {
            vaultrs::sys::unseal(&anon, Some(self.unseal_key.clone()), None, None)
        })
        .await?;
        let port = self.port;
        let up = crate::wait::until(Duration::from_secs(60), || async move {
            health_status(port).await == Some(200)
        })
        .await;
        anyhow::ensure!(up, "OpenBao at {} not active 60s after unsealing", self.address);
        Ok(())
    }

    /// Seals the server (root token).
    pub async fn seal(&self) -> anyhow::Result<()> {
        vaultrs::sys::seal(&self.root()?).await?;
        Ok(())
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Hangs the server (SIGSTOP).
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            crate::signal(c, "-STOP");
        }
    }

    /// Resumes a paused server.
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            crate::signal(c, "-CONT");
        }
    }

    /// The audit log (one JSON object per line).
    pub fn audit_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default()
    }

    /// Kubernetes auth at `kubernetes/` checking ServiceAccount tokens with a TokenReview against `api`
    /// (its URL and serving certificate), a policy `azora-operator` from `policy_hcl`, and a role `role` for
    /// the ServiceAccount `namespace/sa` with that policy.
    pub async fn kubernetes_auth(
        &self,
        api: &crate::env::ApiServer,
        role: &str,
        namespace: &str,
        sa: &str,
        policy_hcl: &str,
        ttl: &str,
    ) -> anyhow::Result<()> {
        let root = self.root()?;
        vaultrs::sys::auth::enable(&root, "kubernetes", "kubernetes", None).await?;
        let ca =
            std::fs::read_to_string(api.serving_cert()).context("reading the API server's certificate")?;
        let mut cfg = vaultrs::api::auth::kubernetes::requests::ConfigureKubernetesAuthRequest::builder();
        cfg.kubernetes_ca_cert(ca);
        vaultrs::auth::kubernetes::configure(&root, "kubernetes", &api.url, Some(&mut cfg)).await?;
        vaultrs::sys::policy::set(&root, "azora-operator", policy_hcl).await?;
        let mut r = vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest::builder();
        r.bound_service_account_names(vec![sa.to_string()])
            .bound_service_account_namespaces(vec![namespace.to_string()])
            .token_policies(vec!["azora-operator".to_string()])
            .token_ttl(ttl.to_string());
        vaultrs::auth::kubernetes::role::create(&root, "kubernetes", role, Some(&mut r)).await?;
        Ok(())
    }

    /// The newest version of `path` (0: none) and its custom metadata.
    pub async fn meta(&self, path: &str) -> anyhow::Result<(u64, HashMap<String, String>)> {
        match vaultrs::kv2::read_metadata(&self.root()?, KV_MOUNT, path).await {
            Ok(m) => Ok((m.current_version, m.custom_metadata.unwrap_or_default())),
            Err(vaultrs::error::ClientError::APIError { code: 404, .. }) => Ok((0, HashMap::new())),
            Err(e) => Err(e.into()),
        }
    }

    /// The data of `version` of `path`.
    pub async fn read(&self, path: &str, version: u64) -> anyhow::Result<HashMap<String, String>> {
        Ok(vaultrs::kv2::read_version(&self.root()?, KV_MOUNT, path, version).await?)
    }

    /// The versions of `path` whose data is still there (not destroyed), oldest first.
    pub async fn live_versions(&self, path: &str) -> anyhow::Result<Vec<u64>> {
        let m = vaultrs::kv2::read_metadata(&self.root()?, KV_MOUNT, path).await?;
        let mut v: Vec<u64> = m
            .versions
            .iter()
            .filter(|(_, x)| !x.destroyed)
            .filter_map(|(k, _)| k.parse().ok())
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Writes `data` as a new version of `path` by hand (no check-and-set); returns the version.
    pub async fn put(&self, path: &str, data: &HashMap<String, String>) -> anyhow::Result<u64> {
        Ok(vaultrs::kv2::set(&self.root()?, KV_MOUNT, path, data)
            .await?
            .version)
    }
}
