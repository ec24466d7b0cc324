//! `azora-testenv up --dir DIR [--regions a,b,..]`: starts a real etcd and kube-apiserver (the `hub`) like the
//! tests do, writes `DIR/kubeconfig`, and keeps them running until SIGINT/SIGTERM. With `--regions`, also a
//! real regional kube-apiserver and a moto S3 server (bucket `azora-<region>`) per region, the kubeconfig and
//! S3 credential Secrets on the hub (namespace `default`), and `DIR/regions.json` (per region: S3 endpoint,
//! bucket, regional kubeconfig path) for patching the Regions. With `--vault-regions`, a real OpenBao
//! server for each of those regions too (address in `regions.json`, token in the hub Secret `vault-<region>`).
//! Used by `make demo`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use azora_tests::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "azora-testenv",
    about = "A local Kubernetes control plane for demos and tests"
)]
enum Cli {
    /// Start etcd and a kube-apiserver; write DIR/kubeconfig; run until interrupted.
    Up {
        /// Directory for the kubeconfig and logs.
        #[arg(long)]
        dir: PathBuf,
        /// Regions to give a regional kube-apiserver and an S3 server (comma-separated).
        #[arg(long, value_delimiter = ',')]
        regions: Vec<String>,
        /// Regions (of `--regions`) to give a real OpenBao server too (comma-separated): KV v2 at
        /// `secret/`, a token for the operator in the hub Secret `vault-<region>` (key `token`), its address
        /// in `DIR/regions.json`.
        #[arg(long, value_delimiter = ',')]
        vault_regions: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli::Up {
        dir,
        regions,
        vault_regions,
    } = Cli::parse();
    std::fs::create_dir_all(&dir)?;
    let mut env = azora_tests::TestEnv::start_etcd()?;
    let url = env.add_apiserver("hub", false).await?.url.clone();
    let mut stores = Vec::new();
    let mut facts = BTreeMap::new();
    for r in &regions {
        let server = env.add_apiserver(r, false).await?;
        let kubeconfig = server.kubeconfig.clone();
        let s3 = S3Server::start(env.dir.path().join(format!("s3-{r}.log"))).await?;
        let bucket = format!("azora-{r}");
        s3.store(&bucket).ensure_bucket().await?;
        facts.insert(
            r.clone(),
            json!({"endpoint": s3.endpoint, "bucket": bucket, "kubeconfig": kubeconfig}),
        );
        stores.push(s3);
    }
    let mut vaults = Vec::new();
    for r in vault_regions.iter().filter(|r| regions.contains(r)) {
        let bao = azora_tests::openbao::OpenBao::start(env.dir.path(), r).await?;
        if let Some(f) = facts.get_mut(r) {
            f["vault"] = json!(bao.address);
        }
        vaults.push((r.clone(), bao));
    }
    if !regions.is_empty() {
        let hub = env.hub().client().await?;
        let secrets: Api<Secret> = Api::namespaced(hub, "default");
        for r in &regions {
            let kubeconfig = std::fs::read_to_string(
                &env.server(r)
                    .ok_or_else(|| anyhow::anyhow!("no server {r}"))?
                    .kubeconfig,
            )?;
            for body in [
                json!({"metadata": {"name": format!("kubeconfig-{r}")}, "stringData": {"kubeconfig": kubeconfig}}),
                json!({"metadata": {"name": format!("s3-{r}")},
                       "stringData": {"accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET_KEY}}),
            ] {
                secrets
                    .create(&PostParams::default(), &serde_json::from_value(body)?)
                    .await?;
            }
        }
        for (r, bao) in &vaults {
            // A development setup: the root token stands in for the operator's own (production Regions use
            // Kubernetes auth, regions/vault-policy.hcl).
            let body =
                json!({"metadata": {"name": format!("vault-{r}")}, "stringData": {"token": bao.root_token}});
            secrets
                .create(&PostParams::default(), &serde_json::from_value(body)?)
                .await?;
        }
        std::fs::write(dir.join("regions.json"), serde_json::to_vec_pretty(&facts)?)?;
    }
    std::fs::copy(&env.hub().kubeconfig, dir.join("kubeconfig"))?;
    eprintln!("kube-apiserver {url} ready; logs in {}", env.dir.path().display());
    std::fs::write(dir.join("logs-dir"), env.dir.path().to_string_lossy().as_bytes())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping the control plane");
    drop(vaults);
    drop(stores);
    drop(env);
    Ok(())
}
