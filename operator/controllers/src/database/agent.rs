//! The region agent's database duty (`azora-operator agent --region R --database D [--pg-data DIR]`): it runs
//! next to one member (PostgreSQL or Redis) and does what the hub cannot do from afar.
//!
//! - **Fence on a newer epoch**: a local primary while the recorded primary is elsewhere under a newer epoch
//!   is fenced at once (PostgreSQL: read-only, no commit acknowledged; Redis: every write refused; client
//!   sessions ended), even when the hub cannot reach it.
//! - **Fence on losing the hub**: a local primary that has not seen the hub for `hub_loss_fence` fences
//!   itself (the operator lifts that fence when it reaches the member again and it is still the recorded
//!   primary of the current epoch) — unless the leading operator asserted, within that time, that it keeps
//!   the member as the primary of its epoch (a keeper session name it renews at every pass, in the member
//!   server's own clock): then only the agent's link is cut, and a fence would only stop writes (and be
//!   lifted and set again, over and over).
//! - **Rebuild**: a fenced former primary rejoins as a standby of the recorded primary. PostgreSQL (needs
//!   `--pg-data`): stopped, `pg_rewind` from the primary (a fresh `pg_basebackup` when the rewind fails), its
//!   own configuration files kept, `standby.signal` and `primary_conninfo` written, started. Redis: it
//!   follows the recorded primary — only once that member is a primary holding the recorded epoch — and
//!   resyncs from it; the writes it took as a stale primary are discarded, and the Event says how far it had
//!   got.
//!
//! Credentials are read from the member's Secret on the hub and passed to the PostgreSQL programs in their
//! environment (`PGPASSWORD`), never on a command line or in a log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use azora_adapters::member::{self, Session};
use azora_adapters::postgres::{self, PgObservation, PgTarget};
use azora_adapters::secrets::SecretKeys;
use azora_api::database::{DatabaseSpec, DatabaseStatus, Engine, MemberRole};
use azora_runtime::events::Recorder;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::EventType;
use tracing::{info, warn};

/// Where the local PostgreSQL member lives, for rebuilds (`--pg-data` and friends).
#[derive(Clone, Debug)]
pub struct PgRebuild {
    /// The member's data directory.
    pub data_dir: PathBuf,
    /// Where `pg_ctl`, `pg_rewind` and `pg_basebackup` are.
    pub bin_dir: PathBuf,
    /// Run the PostgreSQL programs as this OS user (`runuser -u`), when the agent itself runs as root.
    pub os_user: Option<String>,
    /// The server log `pg_ctl start` writes to.
    pub log_file: PathBuf,
}

/// Settings of the agent's database duty.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The region the agent runs in.
    pub region: String,
    /// The Database whose member runs here.
    pub database: String,
    /// The local PostgreSQL member's files (`None`: no rebuild of a PostgreSQL member; fences still work;
    /// a Redis member needs none).
    pub rebuild: Option<PgRebuild>,
    /// Namespace of the credentials Secrets (the operator's).
    pub namespace: String,
    /// How long without the hub before a local primary fences itself.
    pub hub_loss_fence: Duration,
    /// How often the agent looks.
    pub interval: Duration,
}

/// The local member as last read from the hub, and a session to it.
struct Local {
    engine: Engine,
    target: PgTarget,
    session: Option<Session>,
}

impl Local {
    async fn session(&mut self) -> Result<&mut Session, String> {
        let reuse = self
            .session
            .as_ref()
            .is_some_and(|s| !s.is_closed() && s.target_is(&self.target));
        if !reuse {
            self.session = None;
            let mut sess = member::connect(self.engine, &self.target)
                .await
                .map_err(|e| e.to_string())?;
            // Named as the agent's: only the operator's own sessions say the hub still reaches the member.
            if let Err(e) = sess.identify(postgres::AGENT_SESSION).await {
                warn!(error = %e, "naming the agent's session failed");
            }
            self.session = Some(sess);
        }
        self.session.as_mut().ok_or_else(|| "no session".to_string())
    }

    /// Observes the member; a failed session is dropped (the next call connects again).
    async fn observe(&mut self) -> Result<PgObservation, String> {
        let r = self.session().await?.observe().await.map_err(|e| e.to_string());
        if r.is_err() {
            self.session = None;
        }
        r
    }

    /// Whether the member is a primary the leading operator keeps, by a keeper name of the member's epoch or
    /// newer asserted within `window` (see `azora_core::database::KEEPER_PREFIX`); a failed session is dropped.
    async fn kept_within(&mut self, window: Duration) -> Result<bool, String> {
        let o = self.observe().await?;
        if o.in_recovery || o.fenced {
            return Ok(false);
        }
        let r = self
            .session()
            .await?
            .kept_within(o.epoch.unwrap_or(0), window)
            .await
            .map_err(|e| e.to_string());
        if r.is_err() {
            self.session = None;
        }
        r
    }

    /// Fences the member; a failed session is dropped.
    async fn fence(&mut self) -> Result<(), String> {
        let r = self
            .session()
            .await?
            .fence()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if r.is_err() {
            self.session = None;
        }
        r
    }
}

/// Runs until the process ends.
pub async fn run(client: kube::Client, cfg: AgentConfig, identity: String) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &super::resource());
    let secrets = SecretKeys::new(client.clone(), &cfg.namespace);
    let recorder = Recorder::new(client, "azora-agent", &identity);
    let mut last_hub = Instant::now();
    let mut local: Option<Local> = None;
    // The hub is gone from here but the operator still reaches the member (logged once per such spell).
    let mut held_by_operator = false;
    info!(region = %cfg.region, database = %cfg.database, "database agent started");
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), api.get(&cfg.database)).await;
        match read {
            Ok(Ok(obj)) => {
                last_hub = Instant::now();
                held_by_operator = false;
                if let Err(e) = with_hub(&cfg, &secrets, &recorder, &obj, &mut local).await {
                    warn!(region = %cfg.region, error = %e, "database agent step failed");
                }
            }
            Ok(Err(kube::Error::Api(e))) if e.code == 404 || e.code == 403 => {
                // The hub answers: the Database is gone (or not ours to read). Not a lost hub.
                last_hub = Instant::now();
                held_by_operator = false;
                warn!(database = %cfg.database, code = e.code, "the Database cannot be read; nothing to do");
            }
            _ => {
                let lost = last_hub.elapsed();
                if lost >= cfg.hub_loss_fence
                    && let Some(l) = local.as_mut()
                {
                    // Only this link is cut while the leading operator still keeps this member as the primary
                    // (it renews its keeper name on the member at every pass, only while it leads, reaches the
                    // member and records it as the primary of the member's epoch): a fence here would only stop
                    // writes — and the operator would lift it, and this agent fence again, over and over.
                    if l.kept_within(cfg.hub_loss_fence).await == Ok(true) {
                        if !held_by_operator {
                            warn!(
                                region = %cfg.region,
                                lost_s = lost.as_secs(),
                                "the hub is gone from here but the operator still keeps the local primary: no fence"
                            );
                        }
                        held_by_operator = true;
                    } else {
                        held_by_operator = false;
                        match fence_if_primary(l).await {
                            Ok(true) => warn!(
                                region = %cfg.region,
                                lost_s = lost.as_secs(),
                                "the hub is gone: the local primary fenced itself"
                            ),
                            Ok(false) => {}
                            Err(e) => {
                                warn!(region = %cfg.region, error = %e, "fencing the local primary failed")
                            }
                        }
                    }
                }
            }
        }
        tokio::time::sleep(cfg.interval).await;
    }
}

/// Fences the local member if it is an unfenced primary. `Ok(true)`: it was fenced now.
async fn fence_if_primary(l: &mut Local) -> Result<bool, String> {
    let o = l.observe().await?;
    if o.in_recovery || o.fenced {
        return Ok(false);
    }
    l.fence().await?;
    Ok(true)
}

/// The target of a member: its endpoint, the credentials in its Secret, and the TLS the spec asks for.
async fn target_of(
    secrets: &SecretKeys,
    spec: &DatabaseSpec,
    m: &azora_api::database::DatabaseMember,
) -> Result<PgTarget, String> {
    let (user, pass) = credentials(secrets, &m.credentials.name).await?;
    let verify = spec
        .tls
        .as_ref()
        .is_some_and(|t| t.mode == azora_api::database::TlsMode::VerifyFull);
    let ca = if verify {
        secrets
            .value(&m.credentials.name, "ca.crt")
            .await
            .map_err(|e| format!("reading Secret {}: {e}", m.credentials.name))?
    } else {
        None
    };
    let tls = super::member_tls(spec, ca)
        .map_err(|why| format!("ca.crt of Secret {}: {why}", m.credentials.name))?;
    let file = spec.tls.as_ref().and_then(|t| t.standby_root_cert_file.clone());
    PgTarget::new(&m.endpoint, &user, &pass, &spec.database_name)
        .map(|t| t.with_tls(tls, file))
        .ok_or_else(|| format!("member endpoint {} is not host:port", m.endpoint))
}

async fn credentials(secrets: &SecretKeys, name: &str) -> Result<(String, String), String> {
    let user = secrets
        .value(name, "username")
        .await
        .map_err(|e| format!("reading Secret {name}: {e}"))?
        .ok_or_else(|| format!("Secret {name} has no username"))?;
    let pass = secrets
        .value(name, "password")
        .await
        .map_err(|e| format!("reading Secret {name}: {e}"))?
        .ok_or_else(|| format!("Secret {name} has no password"))?;
    Ok((
        String::from_utf8_lossy(&user).trim().to_string(),
        String::from_utf8_lossy(&pass).to_string(),
    ))
}

async fn with_hub(
    cfg: &AgentConfig,
    secrets: &SecretKeys,
    recorder: &Recorder,
    obj: &DynamicObject,
    local: &mut Option<Local>,
) -> Result<(), String> {
    let spec: DatabaseSpec = obj
        .data
        .get("spec")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .ok_or("the Database's spec does not parse")?;
    let status: DatabaseStatus = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let me = spec
        .members
        .iter()
        .find(|m| m.region == cfg.region)
        .ok_or_else(|| format!("the Database has no member in {}", cfg.region))?;
    let target = target_of(secrets, &spec, me).await?;
    if local
        .as_ref()
        .is_none_or(|l| l.engine != spec.engine || l.target != target)
    {
        *local = Some(Local {
            engine: spec.engine,
            target,
            session: None,
        });
    }
    let Some(l) = local.as_mut() else {
        return Ok(());
    };
    let Some(primary) = status.primary_region.clone() else {
        return Ok(());
    };
    if primary == cfg.region {
        return Ok(());
    }
    // Stopped (e.g. by a rebuild that failed half way)? Not ours to start unless we are rebuilding.
    let o = l.observe().await.map_err(|e| format!("local member: {e}"))?;
    if o.in_recovery {
        return Ok(());
    }
    // A primary here while the recorded one is elsewhere under a newer epoch.
    if status.epoch <= o.epoch.unwrap_or(0) {
        return Ok(());
    }
    // ...unless a failover under way is making this member the primary: between its promotion and the epoch
    // written into it, it is a primary of the epoch just before — the one being made primary, not a stale one
    // (a stale primary carries an older epoch still; a failover that has not fenced the old primary has not
    // chosen, so its `to` is only the preferred region).
    if status.last_failover.as_ref().is_some_and(|f| {
        f.outcome.is_none()
            && f.epoch == status.epoch
            && f.fenced_time.is_some()
            && f.to.as_deref() == Some(cfg.region.as_str())
            && o.epoch.unwrap_or(0) + 1 == status.epoch
    }) {
        return Ok(());
    }
    if !o.fenced {
        l.fence().await?;
        warn!(region = %cfg.region, epoch = status.epoch, %primary, "a stale local primary fenced");
        // PostgreSQL: rebuilt once the hub reports it fenced. Redis: it follows the primary at once.
        if spec.engine == Engine::PostgreSQL {
            return Ok(());
        }
    }
    let source = async {
        let pm = spec
            .members
            .iter()
            .find(|m| m.region == primary)
            .ok_or("the recorded primary is not a member")?;
        target_of(secrets, &spec, pm).await
    };
    let note = match spec.engine {
        Engine::PostgreSQL => {
            let reported_fenced = status
                .members
                .iter()
                .any(|m| m.region == cfg.region && m.role == MemberRole::Fenced);
            if !reported_fenced {
                return Ok(());
            }
            let source = source.await?;
            let Some(files) = &cfg.rebuild else {
                return Err(format!(
                    "{} is a fenced former primary and no --pg-data was given: rebuild it as a standby of \
                     {primary} by hand (pg_rewind or pg_basebackup)",
                    cfg.region
                ));
            };
            // Close our session before stopping the server.
            l.session = None;
            let how = rebuild(files, &cfg.region, &source).await?;
            format!(
                "{} rebuilt as a standby of {primary} ({how}) and started",
                cfg.region
            )
        }
        Engine::Redis => {
            let source = source.await?;
            rejoin_redis(l, &cfg.region, &primary, status.epoch, &o, &source).await?
        }
    };
    info!(database = %cfg.database, %note, "member rebuilt");
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("azora.io/v1alpha1".into()),
        kind: Some("Database".into()),
        name: obj.metadata.name.clone(),
        uid: obj.metadata.uid.clone(),
        namespace: Some(cfg.namespace.clone()),
        ..Default::default()
    };
    if let Err(e) = recorder
        .publish(EventType::Normal, "MemberRebuilt", &note, "Rejoin", &reference)
        .await
    {
        warn!(error = %e, "could not publish the rebuild Event");
    }
    Ok(())
}

/// A fenced stale Redis primary follows the recorded primary (a full resync), but only once that member is a
/// primary holding the recorded epoch: following a member that is not (yet) promoted would leave no primary
/// at all. Returns the Event's note.
async fn rejoin_redis(
    l: &mut Local,
    region: &str,
    primary: &str,
    epoch: u64,
    stale: &PgObservation,
    source: &PgTarget,
) -> Result<String, String> {
    let mut upstream = member::connect(Engine::Redis, source)
        .await
        .map_err(|e| format!("the recorded primary {primary}: {e}"))?;
    if let Err(e) = upstream.identify(postgres::AGENT_SESSION).await {
        warn!(error = %e, "naming the agent's session failed");
    }
    let p = upstream
        .observe()
        .await
        .map_err(|e| format!("the recorded primary {primary}: {e}"))?;
    if p.in_recovery || p.fenced || p.epoch.unwrap_or(0) < epoch {
        return Err(format!(
            "the recorded primary {primary} is not yet a writable primary of epoch {epoch}: {region} stays \
             fenced and does not follow it"
        ));
    }
    let r = l
        .session()
        .await?
        .follow(source, region)
        .await
        .map_err(|e| e.to_string());
    if r.is_err() {
        l.session = None;
    }
    r?;
    Ok(format!(
        "{region} (a stale primary of epoch {} at offset {}) now follows {primary} (epoch {epoch}) and \
         resyncs from it: what it took after the failover is discarded",
        stale.epoch.unwrap_or(0),
        stale
            .received
            .map_or_else(|| "unknown".to_string(), |x| x.to_string()),
    ))
}

/// A PostgreSQL program, as the configured OS user, with the source's password in its environment only.
async fn pg(cfg: &PgRebuild, program: &str, args: &[&str], password: Option<&str>) -> Result<(), String> {
    let bin = cfg.bin_dir.join(program);
    let mut cmd = match &cfg.os_user {
        Some(u) => {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", u, "--"]).arg(&bin);
            c
        }
        None => tokio::process::Command::new(&bin),
    };
    cmd.args(args).kill_on_drop(true);
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .map_err(|_| format!("{program} did not finish within 10 min"))?
        .map_err(|e| match &cfg.os_user {
            Some(u) => format!("{program} (through runuser -u {u}): {e}"),
            None => format!("{program}: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        // The programs' own messages name hosts and files, never the password (it is not an argument).
        let text = String::from_utf8_lossy(&out.stderr);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        Err(format!("{program} failed: {last}"))
    }
}

const KEPT: [&str; 3] = ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"];

/// Rebuilds the local member as a standby of `source`: stop, rewind (or a fresh base backup), own
/// configuration back, standby settings, start. Returns how.
async fn rebuild(cfg: &PgRebuild, region: &str, source: &PgTarget) -> Result<&'static str, String> {
    let data = cfg.data_dir.to_string_lossy().to_string();
    let log = cfg.log_file.to_string_lossy().to_string();
    // The member's own settings: pg_rewind and pg_basebackup bring the source's.
    let mut kept = Vec::new();
    for f in KEPT {
        if let Ok(text) = tokio::fs::read(cfg.data_dir.join(f)).await {
            kept.push((f, text));
        }
    }
    let auto = tokio::fs::read_to_string(cfg.data_dir.join("postgresql.auto.conf"))
        .await
        .unwrap_or_default();
    // A source promoted moments ago has not recorded its new timeline in its control file yet, and
    // pg_rewind would find "no rewind required": a checkpoint there first.
    postgres::connect(source)
        .await
        .map_err(|e| format!("connecting to the primary: {e}"))?
        .checkpoint()
        .await
        .map_err(|e| format!("checkpoint on the primary: {e}"))?;
    pg(
        cfg,
        "pg_ctl",
        &["-D", &data, "-m", "fast", "-w", "-t", "120", "stop"],
        None,
    )
    .await?;
    let conn = format!(
        "host={} port={} user={} dbname={}{}",
        azora_core::database::conninfo_quote(&source.host),
        source.port,
        azora_core::database::conninfo_quote(&source.user),
        azora_core::database::conninfo_quote(&source.dbname),
        source.ssl_conninfo()
    );
    let rewound = pg(
        cfg,
        "pg_rewind",
        &[
            &format!("--target-pgdata={data}"),
            &format!("--source-server={conn}"),
        ],
        Some(&source.password),
    )
    .await;
    let how = match rewound {
        Ok(()) => "pg_rewind",
        Err(e) => {
            warn!(%region, error = %e, "pg_rewind failed: taking a fresh base backup");
            // Kept, never deleted: an earlier rebuild's copy (or anything else there) is not ours to remove.
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let aside = PathBuf::from(format!("{data}.before-rebuild-{stamp}"));
            if tokio::fs::try_exists(&aside).await.unwrap_or(true) {
                return Err(format!("{} exists: not overwriting it", aside.display()));
            }
            tokio::fs::rename(&cfg.data_dir, &aside)
                .await
                .map_err(|e| format!("moving {data} aside: {e}"))?;
            pg(
                cfg,
                "pg_basebackup",
                &["-d", &conn, "-D", &data, "-X", "stream", "-c", "fast"],
                Some(&source.password),
            )
            .await?;
            "pg_basebackup"
        }
    };
    for (f, text) in kept {
        write_owned(cfg, &cfg.data_dir.join(f), &text).await?;
    }
    // Our fence and any old upstream go; the member streams from the primary under its region's name.
    let mut lines: Vec<String> = auto
        .lines()
        .filter(|l| {
            let k = l.trim_start();
            !(k.starts_with("synchronous_standby_names")
                || k.starts_with("default_transaction_read_only")
                || k.starts_with("primary_conninfo")
                || k.starts_with("wal_retrieve_retry_interval"))
        })
        .map(str::to_string)
        .collect();
    let conninfo = source.conninfo_for(region);
    // The configuration file's own quoting: backslashes and quotes escaped again.
    lines.push(format!(
        "primary_conninfo = '{}'",
        conninfo.replace('\\', "\\\\").replace('\'', "''")
    ));
    write_owned(
        cfg,
        &cfg.data_dir.join("postgresql.auto.conf"),
        format!("{}\n", lines.join("\n")).as_bytes(),
    )
    .await?;
    write_owned(cfg, &cfg.data_dir.join("standby.signal"), b"").await?;
    pg(
        cfg,
        "pg_ctl",
        &["-D", &data, "-l", &log, "-w", "-t", "120", "start"],
        None,
    )
    .await?;
    Ok(how)
}

/// Writes a file the database server reads: mode 0600, owned by the OS user when one is configured.
async fn write_owned(cfg: &PgRebuild, path: &Path, content: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    tokio::fs::write(path, content)
        .await
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    let _ = tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).await;
    if let Some(u) = &cfg.os_user {
        let st = tokio::process::Command::new("chown")
            .arg(format!("{u}:{u}"))
            .arg(path)
            .status()
            .await
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
        if !st.success() {
            return Err(format!("chown {} failed", path.display()));
        }
    }
    Ok(())
}
