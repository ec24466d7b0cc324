//! A real Knot DNS server for tests (IO): authoritative for one zone on a loopback port, accepting RFC 2136
//! updates signed with a TSIG key. Started from Debian's `knotd` (installed by tests/scripts/install-dns.sh).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

/// A running knotd.
pub struct Knot {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    /// TSIG key name.
    pub key_name: String,
    /// TSIG secret, base64.
    pub secret_b64: String,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Knot {
    /// Starts knotd serving `zone` (e.g. `test.azora.`) with a fresh random TSIG key.
    pub fn start(zone: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("azora-knot-").tempdir()?;
        let port = crate::free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let secret: [u8; 32] = rand::random();
        let secret_b64 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(secret)
        };
        let d = dir.path().display().to_string();
        let conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
             log:\n  - target: stderr\n    any: info\n\
             database:\n    storage: \"{d}/db\"\n\
             key:\n  - id: azora\n    algorithm: hmac-sha256\n    secret: {secret_b64}\n\
             acl:\n  - id: update\n    key: azora\n    action: update\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: changes\n\
             zone:\n  - domain: {zone}\n    acl: update\n"
        );
        std::fs::write(dir.path().join("knot.conf"), conf)?;
        std::fs::create_dir_all(dir.path().join("db"))?;
        std::fs::write(
            dir.path().join(format!("{zone}zone")),
            format!(
                "$ORIGIN {zone}\n$TTL 60\n@ SOA ns1 hostmaster 1 60 30 3600 5\n@ NS ns1\nns1 A 127.0.0.1\n"
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("knotd.log"))?;
        let child = Command::new(knotd()?)
            .arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting knotd")?;
        let k = Self {
            addr,
            key_name: "azora".into(),
            secret_b64,
            child: Some(child),
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(k);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("knotd did not start: {}", k.log())
    }

    /// The TSIG key this server accepts updates with.
    pub fn tsig_key(&self) -> anyhow::Result<azora_adapters::dns::rfc2136::TsigKey> {
        use base64::Engine;
        Ok(azora_adapters::dns::rfc2136::TsigKey {
            name: self.key_name.clone(),
            algorithm: "hmac-sha256".into(),
            secret: base64::engine::general_purpose::STANDARD.decode(&self.secret_b64)?,
        })
    }

    /// knotd's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// knotd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("knotd.log")).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            crate::signal(c, sig);
        }
    }

    /// Hangs knotd (SIGSTOP).
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// Resumes knotd (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        self.resume();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn knotd() -> anyhow::Result<std::path::PathBuf> {
    for p in ["/usr/sbin/knotd", "/usr/bin/knotd"] {
        if std::path::Path::new(p).exists() {
            return Ok(p.into());
        }
    }
    anyhow::bail!("knotd missing: run tests/scripts/install-dns.sh (make test-env)")
}
