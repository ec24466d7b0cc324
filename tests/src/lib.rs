//! Test environment: a real etcd and one or more real kube-apiservers (1.20, built from Debian's source by
//! `tests/scripts/install-kube.sh`), started the way envtest does — token auth, RBAC on — plus helpers to
//! run the operator binary and tools. Each `TestEnv` owns its processes and kills them when dropped.
//! Missing binaries are an error, never a skip: a test that needs an API server must run against one.

pub mod chaos;
pub mod drill;
pub mod env;
pub mod fleet;
pub mod knot;
pub mod link;
pub mod openbao;
pub mod operator;
pub mod postgres;
pub mod redis;
pub mod regions;
pub mod s3;
pub mod scenario;
pub mod tls;
pub mod wait;

pub use env::{ApiServer, TestEnv, WriteCounts};
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

/// Sends `sig` to a process by id (e.g. an operator replica); nothing when there is none.
pub fn signal_pid(pid: Option<u32>, sig: &str) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status();
    }
}

/// A free port on 127.0.0.1 (TCP and UDP both free), reserved for this test process.
///
/// Binding port 0 and handing the number to a child races twice over: the kernel hands the same ephemeral
/// range to every outgoing connection on the machine, and the parallel test processes each pick from it too
/// (CI saw `Address already in use` for a port picked this way). So ports come from below the ephemeral range
/// and each is reserved with a lock file naming the owning pid (`$TMPDIR/azora-ports/<port>`); a reservation
/// whose owner is gone is taken over.
pub fn free_port() -> anyhow::Result<u16> {
    free_port_on("127.0.0.1")
}

/// [`free_port`] for another loopback address (the simulated regions listen on 127.0.0.1x).
pub fn free_port_on(ip: &str) -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000; // 20000..32000: below Linux's default ephemeral range (32768..60999)
    let dir = std::env::temp_dir().join("azora-ports");
    std::fs::create_dir_all(&dir)?;
    let me = std::process::id();
    let start = (me.wrapping_mul(7919)) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n.wrapping_mul(13)) % SPAN) as u16;
        let lock = dir.join(port.to_string());
        if !reserve(&lock, me) {
            continue;
        }
        let free =
            std::net::TcpListener::bind((ip, port)).is_ok() && std::net::UdpSocket::bind((ip, port)).is_ok();
        if free {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port on {ip} in {LOW}..{}", LOW + SPAN)
}

fn recently_written(p: &std::path::Path) -> bool {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().unwrap_or_default() < std::time::Duration::from_secs(10))
        .unwrap_or(false)
}

/// Takes the lock file for a port: new, or held by a process that no longer exists.
fn reserve(lock: &std::path::Path, me: u32) -> bool {
    use std::io::Write as _;
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(lock)
    };
    if let Ok(mut f) = create() {
        return f.write_all(me.to_string().as_bytes()).is_ok();
    }
    let owner: Option<u32> = std::fs::read_to_string(lock)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    match owner {
        Some(pid) if pid == me => false, // ours already, handed out earlier in this process
        Some(pid) if std::path::Path::new(&format!("/proc/{pid}")).exists() => false,
        None if recently_written(lock) => false, // a racer between create and write
        _ => {
            // The owner is gone (or the file is half-written by a racer): remove and race to create again.
            let _ = std::fs::remove_file(lock);
            match create() {
                Ok(mut f) => f.write_all(me.to_string().as_bytes()).is_ok(),
                Err(_) => false,
            }
        }
    }
}

/// The text of an operator's `/metrics` on 127.0.0.1:`port`. A replica that does not answer (in 10 s), or
/// answers anything but `200`, is an error: a failed scrape must never read as zeros.
pub async fn metrics_text(port: u16) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let scrape = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), scrape)
        .await
        .with_context(|| format!("scraping 127.0.0.1:{port}/metrics: no answer within 10s"))?
        .with_context(|| format!("scraping 127.0.0.1:{port}/metrics"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("127.0.0.1:{port}/metrics: not an HTTP response: {response:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "127.0.0.1:{port}/metrics answered {status:?}: {body}"
    );
    Ok(body.to_string())
}

/// Sum of the samples of the metric lines starting with `name`. No such line is an error, and so is a
/// sample that does not parse: a series that is not there is not a zero.
pub fn metric(text: &str, name: &str) -> anyhow::Result<f64> {
    metric_if_present(text, name)?.ok_or_else(|| {
        let series: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .filter(|n| !n.is_empty())
            .collect();
        anyhow::anyhow!("no series starting with {name:?} in the scrape; it has {series:?}")
    })
}

/// Like [`metric`], but `None` when no line starts with `name`: for the call sites that expect a series
/// which may legitimately not exist (yet) — a labelled counter appears only once it is first incremented.
/// A sample that does not parse is still an error.
pub fn metric_if_present(text: &str, name: &str) -> anyhow::Result<Option<f64>> {
    let mut sum = None;
    for line in text.lines().filter(|l| l.starts_with(name)) {
        let v: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("unparsable sample line {line:?}"))?;
        *sum.get_or_insert(0.0) += v;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP azora_leader 1 while leading\n# TYPE azora_leader gauge\nazora_leader 0\n\
                        azora_tenant_syncs_total{region=\"africa\",result=\"noop\"} 2\n\
                        azora_tenant_syncs_total{region=\"europe\",result=\"noop\"} 3\n";

    #[test]
    fn a_missing_series_is_an_error_not_a_zero() {
        assert_eq!(metric(TEXT, "azora_leader ").unwrap(), 0.0);
        assert_eq!(metric(TEXT, "azora_tenant_syncs_total").unwrap(), 5.0);
        let err = metric(TEXT, "azora_regional_writes_total")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("azora_regional_writes_total") && err.contains("azora_leader"),
            "{err}"
        );
        assert!(
            metric("", "azora_leader ").is_err(),
            "an empty scrape reads as nothing, not 0"
        );
        assert_eq!(
            metric_if_present(TEXT, "azora_regional_writes_total").unwrap(),
            None
        );
        assert!(metric_if_present("azora_leader x\n", "azora_leader ").is_err());
    }

    #[tokio::test]
    async fn a_failed_scrape_is_an_error() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // nothing listening
        let port = free_port().unwrap();
        assert!(metrics_text(port).await.is_err());
        // answering, but not 200; then 200
        for (answer, ok) in [
            ("HTTP/1.0 500 Internal Server Error\r\n\r\nbroken", false),
            (
                "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nazora_leader 1\n",
                true,
            ),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            });
            let got = metrics_text(port).await;
            server.await.unwrap();
            assert_eq!(got.is_ok(), ok, "{answer:?}: {got:?}");
            if ok {
                assert_eq!(metric(&got.unwrap(), "azora_leader ").unwrap(), 1.0);
            }
        }
    }
}
