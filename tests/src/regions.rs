//! Simulated regions for tests (IO): real `azora-region-sim` processes on loopback addresses, and outages
//! made for real with signals — SIGSTOP (hung connections), SIGCONT (resume), SIGKILL (refused), restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::operator::operator_bin;

/// One simulated region process.
pub struct SimRegion {
    /// Region name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    deny: Vec<String>,
    child: Option<Child>,
}

fn sim_bin() -> anyhow::Result<PathBuf> {
    let p = operator_bin()?.with_file_name("azora-region-sim");
    anyhow::ensure!(p.exists(), "{} missing: build the workspace", p.display());
    Ok(p)
}

impl SimRegion {
    /// Starts a region on `ip` (e.g. 127.0.0.11) and a free port.
    pub fn start(name: &str, ip: &str, deny: &[&str]) -> anyhow::Result<Self> {
        let port = crate::free_port_on(ip)?;
        let addr: SocketAddr = format!("{ip}:{port}").parse()?;
        let mut r = Self {
            name: name.into(),
            addr,
            deny: deny.iter().map(ToString::to_string).collect(),
            child: None,
        };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(sim_bin()?);
        cmd.args(["--listen", &self.addr.to_string(), "--name", &self.name]);
        for d in &self.deny {
            cmd.args(["--deny-source", d]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("region sim")?;
        self.child = Some(child);
        // Wait until it accepts.
        for _ in 0..100 {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        anyhow::bail!("region sim {} did not start on {}", self.name, self.addr)
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            crate::signal(c, sig);
        }
    }

    /// The serving process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Hangs the process (connections accepted by the kernel, never answered).
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// Resumes a stopped process.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the process (connections refused).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again after a kill.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// A Region object pointing at this simulated region.
    pub fn region(&self, priority: i32, continent: &str, dns_ip: &str) -> Value {
        json!({
            "apiVersion": "azora.io/v1alpha1", "kind": "Region", "metadata": {"name": self.name},
            "spec": {
                "location": {"city": self.name, "country": "ZZ", "continent": continent,
                             "latitude": 0.0, "longitude": 0.0},
                "priority": priority,
                "probes": {"interval": "5s", "timeout": "2s", "failureThreshold": 2, "successThreshold": 3,
                           "endpoints": [{"name": "api", "type": "HTTP",
                                          "url": format!("http://{}/healthz", self.addr)}]},
                "dns": {"ipv4": [dns_ip]}
            }
        })
    }
}

impl Drop for SimRegion {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}
