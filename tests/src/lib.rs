//! Test environment: a real etcd and one or more real kube-apiservers (1.20, built from Debian's source by
//! `tests/scripts/install-kube.sh`), started the way envtest does — token auth, RBAC on — plus helpers to
//! run the operator binary and tools. Each `TestEnv` owns its processes and kills them when dropped.
//! Missing binaries are an error, never a skip: a test that needs an API server must run against one.

pub mod env;
pub mod fleet;
pub mod knot;
pub mod operator;
pub mod regions;
pub mod s3;
pub mod scenario;
pub mod wait;

pub use env::{ApiServer, TestEnv};
pub use operator::Operator;
pub use regions::SimRegion;

use std::path::PathBuf;

/// The cache directory shared by the scripts (`~/.cache/azora`, or `AZORA_CACHE`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("AZORA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/azora")
        })
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of a tool (`kubectl`, `helm`) installed by `tests/scripts/install-tools.sh`.
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("AZORA_TOOLS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("tools/bin"));
    let p = dir.join(name);
    anyhow::ensure!(
        p.exists(),
        "{} missing: run tests/scripts/install-tools.sh (make test-env)",
        p.display()
    );
    Ok(p)
}

/// Sends `sig` (e.g. `-STOP`, `-CONT`) to a child process: outages are made real, never faked.
pub fn signal(child: &std::process::Child, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The text of an operator's `/metrics` on 127.0.0.1:`port` (empty when it does not answer).
pub async fn metrics_text(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    buf
}

/// Sum of the samples of the metric lines starting with `name`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
