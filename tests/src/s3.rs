//! S3-compatible servers for tests (IO): one `moto_server` process per region on loopback, installed by
//! `tests/scripts/install-s3.sh`. A missing server is an error, never a skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use azora_adapters::objstore::{ObjectStore, StoreConfig};

/// Access key the tests use (moto accepts any).
pub const ACCESS_KEY: &str = "azora-test-access";
/// Secret key the tests use.
pub const SECRET_KEY: &str = "azora-test-secret-value";

/// Path of `moto_server` (or `AZORA_MOTO_SERVER`).
pub fn moto_bin() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("AZORA_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::cache_dir().join("venv-moto/bin/moto_server"));
    anyhow::ensure!(
        p.exists(),
        "{} missing: run tests/scripts/install-s3.sh (make test-env)",
        p.display()
    );
    Ok(p)
}

/// One running S3 server; killed on drop.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl S3Server {
    /// Starts moto_server on a free port and waits until it answers.
    pub async fn start(log: PathBuf) -> anyhow::Result<Self> {
        let port = crate::free_port()?;
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(moto_bin()?)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .context("starting moto_server")?;
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let up = crate::wait::until(Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        anyhow::ensure!(up, "moto_server did not listen on {port} in 30s");
        Ok(server)
    }

    /// A client for `bucket` on this server.
    pub fn store(&self, bucket: &str) -> ObjectStore {
        ObjectStore::new(&StoreConfig {
            endpoint: self.endpoint.clone(),
            bucket: bucket.into(),
            signing_region: "us-east-1".into(),
            force_path_style: true,
            credentials: (ACCESS_KEY.into(), SECRET_KEY.into()),
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Hangs the server (SIGSTOP): connections accepted, never answered.
    pub fn pause(&self) {
        crate::signal(&self.child, "-STOP");
    }

    /// Resumes a paused server.
    pub fn resume(&self) {
        crate::signal(&self.child, "-CONT");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
