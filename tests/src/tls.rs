//! A throwaway certificate authority for TLS tests (IO): made with the `openssl` command line (Debian's
//! `openssl`, installed by `tests/scripts/install-postgres.sh`), one CA and one server certificate for
//! `127.0.0.1` (a subject alternative name, so name checks pass), EC P-256 keys.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// A CA and a server certificate signed by it, in a directory of their own.
pub struct TestCa {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("openssl missing: run tests/scripts/install-postgres.sh (make test-env)")?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl TestCa {
    /// Makes the CA (`ca.crt`) and the server's certificate and key (`server.crt`, `server.key`).
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("azora-test-ca-").tempdir()?;
        let p = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3",
            "-subj",
            "/CN=azora test CA",
        ]);
        openssl(p, &ca)?;
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(p, &req)?;
        std::fs::write(p.join("san.ext"), "subjectAltName = IP:127.0.0.1\n")?;
        openssl(
            p,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "3",
                "-extfile",
                "san.ext",
            ],
        )?;
        Ok(Self { dir })
    }

    /// A file of this CA's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> anyhow::Result<Vec<u8>> {
        Ok(std::fs::read(self.file("ca.crt"))?)
    }
}
