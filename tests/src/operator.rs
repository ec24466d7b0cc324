//! Running the real `azora-operator` binary as a child process, the way a user would (IO).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

/// Path of the operator binary built next to the test binaries (or `AZORA_OPERATOR_BIN`).
pub fn operator_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("AZORA_OPERATOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    workspace_bin("azora-operator")
}

/// Path of a workspace binary built next to the test binaries (`make build` builds them all).
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    // Next to this executable (a binary in target/<profile>/), or one level up (a test in target/<profile>/deps/).
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("executable location")?;
    for dir in [Some(here), here.parent()].into_iter().flatten() {
        let p = dir.join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "{name} missing next to {}: build the workspace first (cargo build --workspace)",
        exe.display()
    )
}

/// What one run of `kubectl-azora` did.
#[derive(Debug)]
pub struct PluginRun {
    /// Exit code (-1: killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `kubectl-azora --kubeconfig <kubeconfig> <args>` with a clean environment, as a user would; killed
/// after `deadline`.
pub async fn plugin(
    kubeconfig: &Path,
    args: &[&str],
    deadline: std::time::Duration,
) -> anyhow::Result<PluginRun> {
    let mut cmd = tokio::process::Command::new(workspace_bin("kubectl-azora")?);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .kill_on_drop(true);
    let out = tokio::time::timeout(deadline, cmd.output())
        .await
        .with_context(|| format!("kubectl-azora {} did not end within {deadline:?}", args.join(" ")))??;
    Ok(PluginRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A running operator process; killed on drop.
pub struct Operator {
    child: Option<Child>,
    /// Its log file.
    pub log: PathBuf,
}

impl Operator {
    /// Starts `azora-operator run` with a clean environment: only `KUBECONFIG` plus `extra` variables. Unless
    /// `args` choose them, the DNS server and metrics get free loopback ports so parallel tests never clash.
    pub fn start(
        kubeconfig: &Path,
        log: PathBuf,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut all: Vec<String> = args.iter().map(ToString::to_string).collect();
        if !args.contains(&"--dns-addr") {
            all.extend([
                "--dns-addr".to_string(),
                format!("127.0.0.1:{}", crate::free_port()?),
            ]);
        }
        if !args.contains(&"--metrics-addr") {
            all.extend([
                "--metrics-addr".to_string(),
                format!("127.0.0.1:{}", crate::free_port()?),
            ]);
        }
        let argv: Vec<&str> = all.iter().map(String::as_str).collect();
        Self::start_exactly(kubeconfig, log, &argv, extra)
    }

    /// Starts `azora-operator run` with exactly `args` (all defaults when empty) and only `KUBECONFIG` plus
    /// `extra` in the environment.
    pub fn start_exactly(
        kubeconfig: &Path,
        log: PathBuf,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_command(kubeconfig, log, "run", args, extra)
    }

    /// Starts `azora-operator <command> <args>` (e.g. `agent`) with only `KUBECONFIG` plus `extra` in the
    /// environment.
    pub fn start_command(
        kubeconfig: &Path,
        log: PathBuf,
        command: &str,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(operator_bin()?);
        cmd.arg(command)
            .args(args)
            .env_clear()
            .env("KUBECONFIG", kubeconfig);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()?;
        Ok(Self {
            child: Some(child),
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process at once (SIGKILL): no lease release, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
