//! Real PostgreSQL 15 members for tests (IO): one instance per simulated region on a loopback port, the first
//! a primary made by `initdb`, the others standbys made by `pg_basebackup -R` streaming from it. PostgreSQL
//! refuses to run as root, so every program runs as the `postgres` user (`runuser`). Outages are real:
//! SIGKILL or SIGSTOP of the member's processes. Everything is stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use tokio_postgres::NoTls;

use crate::free_port;

/// Where Debian's PostgreSQL 15 lives (`tests/scripts/install-postgres.sh`).
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// One member.
pub struct PgMember {
    /// Its region.
    pub region: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data directory.
    pub data: PathBuf,
}

/// The members of one database.
pub struct PgFleet {
    /// The fleet's directory (owned by `postgres`).
    pub dir: PathBuf,
    /// Members, the first the initial primary.
    pub members: Vec<PgMember>,
    /// The `postgres` role's password.
    pub password: String,
}

fn run_as_postgres(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(Path::new(BIN).join(program))
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn chown_postgres(path: &Path) -> anyhow::Result<()> {
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()?;
    anyhow::ensure!(st.success(), "chown {}", path.display());
    Ok(())
}

impl PgFleet {
    /// Starts one member per region: `regions[0]` the primary, the others its streaming standbys (each
    /// named after its region: `cluster_name`, hence its `application_name`).
    pub fn start(regions: &[&str]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(BIN).join("postgres").exists(),
            "PostgreSQL 15 missing: run tests/scripts/install-postgres.sh (make test-env)"
        );
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("azora-test-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let password: String = format!("pw-{}-{n}-{}", std::process::id(), rand_suffix());
        std::fs::write(dir.join("pwfile"), &password)?;
        chown_postgres(&dir)?;
        let mut fleet = Self {
            dir: dir.clone(),
            members: Vec::new(),
            password,
        };
        let Some((first, rest)) = regions.split_first() else {
            return Ok(fleet);
        };
        // The primary.
        let data = dir.join(first);
        let pwfile = format!("--pwfile={}", dir.join("pwfile").display());
        run_as_postgres(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                &pwfile,
                "-A",
                "scram-sha-256",
                "--no-sync",
            ],
        )?;
        let port = free_port()?;
        fleet.configure(&data, first, port)?;
        fleet.members.push(PgMember {
            region: (*first).to_string(),
            port,
            data,
        });
        fleet.pg_ctl_start(0)?;
        // Standbys, streaming from it.
        for region in rest {
            let data = dir.join(region);
            let conn = format!(
                "host=127.0.0.1 port={} user=postgres password={}",
                fleet.members[0].port, fleet.password
            );
            run_as_postgres(
                "pg_basebackup",
                &[
                    "-d",
                    &conn,
                    "-D",
                    &data.to_string_lossy(),
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "--no-sync",
                ],
            )?;
            let port = free_port()?;
            fleet.configure(&data, region, port)?;
            fleet.members.push(PgMember {
                region: (*region).to_string(),
                port,
                data,
            });
            let i = fleet.members.len() - 1;
            fleet.pg_ctl_start(i)?;
        }
        Ok(fleet)
    }

    fn configure(&self, data: &Path, region: &str, port: u16) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(
            f,
            "\n# azora tests\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 10\nhot_standby = on\nwal_log_hints = on\nfsync = off\n\
             full_page_writes = on\nwal_keep_size = '256MB'\nshared_buffers = '16MB'\nmax_connections = 40\n\
             wal_receiver_status_interval = '1s'\ncluster_name = '{region}'\n",
            self.dir.display()
        )?;
        chown_postgres(data)?;
        Ok(())
    }

    fn index(&self, region: &str) -> anyhow::Result<usize> {
        self.members
            .iter()
            .position(|m| m.region == region)
            .with_context(|| format!("no member in {region}"))
    }

    fn pg_ctl_start(&self, i: usize) -> anyhow::Result<()> {
        let m = &self.members[i];
        let log = self.dir.join(format!("{}.log", m.region));
        run_as_postgres(
            "pg_ctl",
            &[
                "-D",
                &m.data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        Ok(())
    }

    /// Starts a stopped or killed member again (crash recovery included).
    pub fn start_again(&self, region: &str) -> anyhow::Result<()> {
        self.pg_ctl_start(self.index(region)?)
    }

    /// `host:port` of a member.
    pub fn endpoint(&self, region: &str) -> String {
        self.members
            .iter()
            .find(|m| m.region == region)
            .map(|m| format!("127.0.0.1:{}", m.port))
            .unwrap_or_default()
    }

    /// The member's processes: the postmaster and its children.
    fn pids(&self, region: &str) -> Vec<u32> {
        let Ok(i) = self.index(region) else {
            return Vec::new();
        };
        let Ok(text) = std::fs::read_to_string(self.members[i].data.join("postmaster.pid")) else {
            return Vec::new();
        };
        let Some(pm) = text.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) else {
            return Vec::new();
        };
        let mut out = vec![pm];
        if let Ok(o) = Command::new("pgrep").args(["-P", &pm.to_string()]).output() {
            out.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok()),
            );
        }
        out
    }

    /// Sends `sig` (`-KILL`, `-STOP`, `-CONT`) to every process of the member: a real outage.
    pub fn signal(&self, region: &str, sig: &str) {
        for pid in self.pids(region) {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    /// SIGKILLs the member's processes and waits until they are gone.
    pub fn kill(&self, region: &str) {
        let pids = self.pids(region);
        for pid in &pids {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        for _ in 0..100 {
            if pids.iter().all(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A session to a member as `postgres`.
    pub async fn client(&self, region: &str) -> anyhow::Result<tokio_postgres::Client> {
        self.client_with(region, &self.password).await
    }

    /// A session to a member as `postgres` with `password` (after it was changed).
    pub async fn client_with(&self, region: &str, password: &str) -> anyhow::Result<tokio_postgres::Client> {
        let i = self.index(region)?;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(self.members[i].port)
            .user("postgres")
            .password(password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(3));
        connect(&cfg).await
    }

    /// Makes every member take TCP connections over TLS only (`hostssl` in `pg_hba.conf`, `ssl = on` with
    /// `ca`'s server certificate), applied by a reload; local socket connections stay as they are. Returns
    /// the path of the CA file the members' own user can read (a standby's `sslrootcert`).
    pub fn require_tls(&self, ca: &crate::tls::TestCa) -> anyhow::Result<PathBuf> {
        use std::io::Write as _;
        let ca_file = self.dir.join("ca.crt");
        std::fs::copy(ca.file("ca.crt"), &ca_file)?;
        for m in &self.members {
            std::fs::copy(ca.file("server.crt"), m.data.join("server.crt"))?;
            let key = m.data.join("server.key");
            std::fs::copy(ca.file("server.key"), &key)?;
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            let hba = m.data.join("pg_hba.conf");
            let text = std::fs::read_to_string(&hba)?;
            let only_tls: String = text
                .lines()
                .map(|l| match l.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&hba, only_tls)?;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(m.data.join("postgresql.conf"))?;
            writeln!(
                f,
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
            )?;
        }
        chown_postgres(&self.dir)?;
        for m in &self.members {
            run_as_postgres("pg_ctl", &["-D", &m.data.to_string_lossy(), "reload"])?;
        }
        Ok(ca_file)
    }

    /// A session to a member as `postgres` over its local socket (not subject to `hostssl`).
    pub async fn socket_client(&self, region: &str) -> anyhow::Result<tokio_postgres::Client> {
        let i = self.index(region)?;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(&self.dir)
            .port(self.members[i].port)
            .user("postgres")
            .password(&self.password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(3));
        connect(&cfg).await
    }

    /// The member's log (for failure messages).
    pub fn log(&self, region: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{region}.log"))).unwrap_or_default()
    }
}

/// A session (no TLS) driven in a task of its own.
async fn connect(cfg: &tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio::time::timeout(Duration::from_secs(5), cfg.connect(NoTls))
        .await
        .context("connect timed out")??;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

impl Drop for PgFleet {
    fn drop(&mut self) {
        for m in &self.members {
            self.signal(&m.region, "-CONT");
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(Path::new(BIN).join("pg_ctl"))
                .args([
                    "-D",
                    &m.data.to_string_lossy(),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "10",
                    "stop",
                ])
                .output();
        }
        for m in &self.members {
            self.signal(&m.region, "-KILL");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
