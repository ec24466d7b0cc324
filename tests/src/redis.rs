//! Real Redis 7 members for tests (IO): one `redis-server` per simulated region on a loopback port, the first
//! a primary, the others its replicas (`--replicaof`), all with a password and without persistence. Outages
//! are real: SIGKILL or SIGSTOP of the process. Processes are killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use azora_adapters::postgres::PgTarget;
use azora_adapters::redis::{RedisSession, Reply};

use crate::free_port;

/// One member.
pub struct RedisMember {
    /// Its region.
    pub region: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
}

/// The members of one Redis database.
pub struct RedisFleet {
    /// Members, the first the initial primary.
    pub members: Vec<RedisMember>,
    /// The password (`requirepass` and `masterauth`).
    pub password: String,
    /// TLS the members take connections with (only), when started with [`RedisFleet::start_tls`].
    pub tls: azora_adapters::member_tls::MemberTls,
    dir: tempfile::TempDir,
}

impl RedisFleet {
    /// Starts one member per region: `regions[0]` the primary, the others replicating from it.
    pub fn start(regions: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(regions, None)
    }

    /// The same over TLS only (no plain port; replicas replicate over TLS; clients are not asked for a
    /// certificate), with `ca`'s server certificate.
    pub fn start_tls(regions: &[&str], ca: &crate::tls::TestCa) -> anyhow::Result<Self> {
        Self::start_with(regions, Some(ca))
    }

    fn start_with(regions: &[&str], ca: Option<&crate::tls::TestCa>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("azora-test-redis-").tempdir()?;
        let password = format!("redis-pw-{}", std::process::id());
        let tls = match ca {
            Some(ca) => azora_adapters::member_tls::MemberTls::Verified { ca_pem: ca.ca_pem()? },
            None => azora_adapters::member_tls::MemberTls::Off,
        };
        let mut fleet = Self {
            members: Vec::new(),
            password,
            tls,
            dir,
        };
        let mut primary_port = None;
        for region in regions {
            let port = free_port()?;
            let listen: Vec<String> = match ca {
                None => vec!["--port".into(), port.to_string()],
                Some(ca) => [
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--tls-cert-file",
                    &ca.file("server.crt").to_string_lossy(),
                    "--tls-key-file",
                    &ca.file("server.key").to_string_lossy(),
                    "--tls-ca-cert-file",
                    &ca.file("ca.crt").to_string_lossy(),
                    "--tls-auth-clients",
                    "no",
                    "--tls-replication",
                    "yes",
                ]
                .iter()
                .map(ToString::to_string)
                .collect(),
            };
            let mut args: Vec<String> = listen;
            args.extend(
                [
                    "--bind",
                    "127.0.0.1",
                    "--requirepass",
                    &fleet.password,
                    "--masterauth",
                    &fleet.password,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &fleet.dir.path().to_string_lossy(),
                    "--repl-ping-replica-period",
                    "1",
                ]
                .iter()
                .map(ToString::to_string),
            );
            if let Some(p) = primary_port {
                args.extend(["--replicaof".to_string(), "127.0.0.1".to_string(), format!("{p}")]);
            } else {
                primary_port = Some(port);
            }
            let mut m = RedisMember {
                region: (*region).to_string(),
                port,
                child: None,
                args,
            };
            fleet.spawn(&mut m)?;
            fleet.members.push(m);
        }
        Ok(fleet)
    }

    fn spawn(&self, m: &mut RedisMember) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.region)))?;
        let child = Command::new("redis-server")
            .args(&m.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("redis-server missing: run tests/scripts/install-redis.sh (make test-env)")?;
        m.child = Some(child);
        Ok(())
    }

    fn member(&self, region: &str) -> anyhow::Result<&RedisMember> {
        self.members
            .iter()
            .find(|m| m.region == region)
            .with_context(|| format!("no member in {region}"))
    }

    /// `host:port` of a member.
    pub fn endpoint(&self, region: &str) -> String {
        self.member(region)
            .map(|m| format!("127.0.0.1:{}", m.port))
            .unwrap_or_default()
    }

    /// Sends `sig` to a member's process (a real outage).
    pub fn signal(&self, region: &str, sig: &str) {
        if let Ok(m) = self.member(region)
            && let Some(c) = &m.child
        {
            crate::signal(c, sig);
        }
    }

    /// Kills a member's process.
    pub fn kill(&mut self, region: &str) {
        if let Some(m) = self.members.iter_mut().find(|m| m.region == region)
            && let Some(mut c) = m.child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed member again with its first arguments (a former primary comes back as a primary, empty:
    /// no persistence).
    pub fn start_again(&mut self, region: &str) -> anyhow::Result<()> {
        let i = self
            .members
            .iter()
            .position(|m| m.region == region)
            .with_context(|| format!("no member in {region}"))?;
        let mut m = std::mem::replace(
            &mut self.members[i],
            RedisMember {
                region: String::new(),
                port: 0,
                child: None,
                args: Vec::new(),
            },
        );
        let r = self.spawn(&mut m);
        self.members[i] = m;
        r
    }

    /// An authenticated session to a member (retried for up to 10 s while it starts).
    pub async fn client(&self, region: &str) -> anyhow::Result<RedisSession> {
        let m = self.member(region)?;
        let t = PgTarget::new(&format!("127.0.0.1:{}", m.port), "default", &self.password, "")
            .context("target")?
            .with_tls(self.tls.clone(), None);
        let mut last = None;
        for _ in 0..50 {
            match azora_adapters::redis::connect(&t).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("redis in {region} unreachable: {last:?}")
    }

    /// One command's reply as text (errors as `ERR …` text).
    pub async fn text(&self, region: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut c = self.client(region).await?;
        Ok(match c.command(args).await? {
            Reply::Error(e) => e,
            r => r.text().unwrap_or_default(),
        })
    }
}

impl Drop for RedisFleet {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
