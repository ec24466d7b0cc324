//! `azora-testenv up --dir DIR`: starts a real etcd and kube-apiserver (the `hub`) like the tests do, writes
//! `DIR/kubeconfig`, and keeps them running until SIGINT/SIGTERM. Used by `make demo`.

use std::path::PathBuf;

use clap::Parser;

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
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli::Up { dir } = Cli::parse();
    std::fs::create_dir_all(&dir)?;
    let mut env = azora_tests::TestEnv::start_etcd()?;
    let url = env.add_apiserver("hub", false).await?.url.clone();
    std::fs::copy(&env.hub().kubeconfig, dir.join("kubeconfig"))?;
    eprintln!("kube-apiserver {url} ready; logs in {}", env.dir.path().display());
    std::fs::write(dir.join("logs-dir"), env.dir.path().to_string_lossy().as_bytes())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping the control plane");
    drop(env);
    Ok(())
}
