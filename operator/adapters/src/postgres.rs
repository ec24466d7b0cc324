//! PostgreSQL members (IO): observation (role, WAL positions, `pg_stat_replication`, the wal receiver, the
//! epoch table), fencing, promotion, the synchronous standby rule and a standby's upstream, each with a
//! deadline, over TLS when the target asks for it. Errors carry a fixed category and the server's own message
//! (or the client's, with its causes: I/O, TLS, protocol), never a credential: the one statement that
//! carries a password (a standby's `primary_conninfo`) reports a fixed text only.

use std::time::Duration;

use azora_core::database::{FENCE_MARKER, conninfo_quote, parse_lsn};
use tokio_postgres::{Client, NoTls};

/// Deadline of a connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of one statement.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The name every session opens under (`application_name`; Redis `CLIENT SETNAME`): the operator's. A region
/// agent renames its own sessions [`AGENT_SESSION`], so a member shows whether the operator still reaches it.
pub const OPERATOR_SESSION: &str = "azora-operator";
/// The name a region agent's sessions take.
pub const AGENT_SESSION: &str = "azora-agent";

/// Where and how to reach one member.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Role.
    pub user: String,
    /// Password (never logged; no `Debug`).
    pub password: String,
    /// Database to connect to.
    pub dbname: String,
    /// TLS to the member.
    pub tls: crate::member_tls::MemberTls,
    /// The CA file on the members' own hosts a standby checks this member with (`sslrootcert`).
    pub standby_root_cert_file: Option<String>,
}

impl PgTarget {
    /// From `host:port`.
    pub fn new(endpoint: &str, user: &str, password: &str, dbname: &str) -> Option<Self> {
        let (host, port) = endpoint.rsplit_once(':')?;
        Some(Self {
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port: port.parse().ok()?,
            user: user.into(),
            password: password.into(),
            dbname: dbname.into(),
            tls: crate::member_tls::MemberTls::Off,
            standby_root_cert_file: None,
        })
    }

    /// The same target over TLS.
    pub fn with_tls(
        mut self,
        tls: crate::member_tls::MemberTls,
        standby_root_cert_file: Option<String>,
    ) -> Self {
        self.tls = tls;
        self.standby_root_cert_file = standby_root_cert_file;
        self
    }

    /// The libpq `sslmode` and `sslrootcert` a standby (or `pg_rewind`/`pg_basebackup` next to it)
    /// connects to this member with (`None`: no TLS asked for).
    fn ssl_params(&self) -> Option<(&'static str, Option<&str>)> {
        use crate::member_tls::MemberTls;
        match &self.tls {
            MemberTls::Off => None,
            MemberTls::Encrypted => Some(("require", None)),
            MemberTls::Verified { .. } => Some(("verify-full", self.standby_root_cert_file.as_deref())),
        }
    }

    /// Those settings as connection-string words: empty, or starting with a space.
    pub fn ssl_conninfo(&self) -> String {
        match self.ssl_params() {
            None => String::new(),
            Some((mode, None)) => format!(" sslmode={mode}"),
            Some((mode, Some(file))) => format!(" sslmode={mode} sslrootcert={}", conninfo_quote(file)),
        }
    }

    /// The fingerprint of the credentials a standby streams from this member with (see
    /// `azora_core::database::credentials_fingerprint`).
    pub fn credentials_fingerprint(&self) -> String {
        azora_core::database::credentials_fingerprint(&self.user, &self.password)
    }

    /// The TLS a standby's connection to this member requires (see `azora_core::database::tls_required`).
    pub fn tls_required(&self) -> String {
        self.ssl_params()
            .map(|(mode, root)| azora_core::database::tls_required(Some(mode), root))
            .unwrap_or_default()
    }

    /// A standby's `primary_conninfo` pointing at this member, naming the standby `application_name`.
    pub fn conninfo_for(&self, application_name: &str) -> String {
        format!(
            "host={} port={} user={} password={} application_name={} connect_timeout=3{}",
            conninfo_quote(&self.host),
            self.port,
            conninfo_quote(&self.user),
            conninfo_quote(&self.password),
            conninfo_quote(application_name),
            self.ssl_conninfo(),
        )
    }
}

/// Errors talking to a member.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum PgError {
    /// No connection within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting or a statement failed.
    #[error("{0}")]
    Db(String),
    /// A setting that carries a credential could not be changed (the server's text is withheld).
    #[error("could not change {0} (the server's message is withheld: the value carries a credential)")]
    Withheld(&'static str),
}

impl PgError {
    /// Fixed category for metrics and reasons.
    pub fn category(&self) -> &'static str {
        self.into()
    }
}

fn db(e: tokio_postgres::Error) -> PgError {
    // The server's message (`as_db_error`) or the client's own; neither carries the password.
    match e.as_db_error() {
        Some(d) => PgError::Db(d.message().to_string()),
        None => {
            // With its causes (e.g. why a TLS handshake failed: the certificate's issuer unknown).
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            PgError::Db(text)
        }
    }
}

async fn within<T>(
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PgError> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, f).await {
        Ok(r) => r.map_err(db),
        Err(_) => Err(PgError::Timeout(STATEMENT_TIMEOUT)),
    }
}

/// An open session with one member; the connection task ends when this is dropped.
pub struct PgSession {
    client: Client,
    task: tokio::task::JoinHandle<()>,
    target: PgTarget,
}

impl Drop for PgSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A standby as the primary reports it (`pg_stat_replication`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replica {
    /// Its `application_name` (our member's region).
    pub name: String,
    /// `streaming`, `catchup`, …
    pub state: String,
    /// `sync`, `quorum`, `potential`, `async`.
    pub sync_state: String,
    /// Bytes between the primary's WAL and what it replayed.
    pub lag_bytes: Option<u64>,
    /// Its replay lag, in seconds.
    pub replay_lag_seconds: Option<f64>,
}

/// One observation of a member.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PgObservation {
    /// In recovery: a standby.
    pub in_recovery: bool,
    /// Primary: the current WAL position. Standby: the last position received (or replayed).
    pub received: Option<u64>,
    /// Standby: the last position replayed. Primary: as `received`.
    pub replayed: Option<u64>,
    /// `synchronous_standby_names`.
    pub sync_names: String,
    /// `default_transaction_read_only`.
    pub read_only: bool,
    /// Carries our fence (the fenced rule and read-only).
    pub fenced: bool,
    /// The epoch written into this member's data (`azora.epoch`), if any.
    pub epoch: Option<u64>,
    /// Standby: the host, port and application name its `primary_conninfo` names.
    pub upstream: (Option<String>, Option<String>, Option<String>),
    /// Standby: a fingerprint of the user and password its `primary_conninfo` carries (`None`: no password
    /// in it), never the password.
    pub upstream_credentials: Option<String>,
    /// Standby: the TLS its connection to the primary requires (PostgreSQL: see
    /// `azora_core::database::tls_required`; Redis: `yes` when `tls-replication` is on), else empty.
    pub upstream_tls: String,
    /// Standby: whether its wal receiver is streaming now.
    pub streaming: bool,
    /// Standby: seconds since the last replayed transaction's commit on the primary (0 when caught up).
    pub replay_delay_seconds: Option<f64>,
    /// Primary: its standbys.
    pub replicas: Vec<Replica>,
}

/// Opens a session (deadline `CONNECT_TIMEOUT`).
pub async fn connect(t: &PgTarget) -> Result<PgSession, PgError> {
    connect_within(t, CONNECT_TIMEOUT).await
}

/// Opens a session within `deadline` (short for a member that did not answer last time: a hung server is
/// not waited for again at every round).
pub async fn connect_within(t: &PgTarget, deadline: Duration) -> Result<PgSession, PgError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&t.host)
        .port(t.port)
        .user(&t.user)
        .password(&t.password)
        .dbname(&t.dbname)
        .application_name(OPERATOR_SESSION)
        .connect_timeout(deadline);
    let tls = crate::member_tls::client_config(&t.tls).map_err(PgError::Db)?;
    let (client, task) = match tls {
        None => open(cfg, NoTls, deadline).await?,
        Some(config) => {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
            open(cfg, crate::member_tls::PgTls(config), deadline).await?
        }
    };
    Ok(PgSession {
        client,
        task,
        target: t.clone(),
    })
}

/// Connects within `deadline` and drives the connection in a task of its own.
async fn open<T>(
    cfg: tokio_postgres::Config,
    tls: T,
    deadline: Duration,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), PgError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = match tokio::time::timeout(deadline, cfg.connect(tls)).await {
        Ok(r) => r.map_err(db)?,
        Err(_) => return Err(PgError::Timeout(deadline)),
    };
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

fn opt_lsn(v: Option<String>) -> Option<u64> {
    v.as_deref().and_then(parse_lsn)
}

impl PgSession {
    /// Whether this session was opened to `t` (same address and credentials).
    pub fn target_is(&self, t: &PgTarget) -> bool {
        &self.target == t
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Observes the member.
    pub async fn observe(&self) -> Result<PgObservation, PgError> {
        let c = &self.client;
        let row = within(c.query_one(
            "select pg_is_in_recovery(), \
                    case when pg_is_in_recovery() then coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text \
                         else pg_current_wal_lsn()::text end, \
                    case when pg_is_in_recovery() then pg_last_wal_replay_lsn()::text \
                         else pg_current_wal_lsn()::text end, \
                    current_setting('synchronous_standby_names'), \
                    current_setting('default_transaction_read_only'), \
                    current_setting('primary_conninfo'), \
                    case when pg_is_in_recovery() then \
                         case when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0::float8 \
                              else extract(epoch from now() - pg_last_xact_replay_timestamp())::float8 end \
                    end, \
                    (select count(*) from pg_stat_wal_receiver where status = 'streaming'), \
                    to_regclass('azora.epoch') is not null",
            &[],
        ))
        .await?;
        let in_recovery: bool = row.get(0);
        let sync_names: String = row.get(3);
        let read_only = row.get::<_, String>(4) == "on";
        let conninfo: String = row.get(5);
        let has_epoch: bool = row.get(8);
        let mut o = PgObservation {
            in_recovery,
            received: opt_lsn(row.get(1)),
            replayed: opt_lsn(row.get(2)),
            fenced: sync_names.contains(FENCE_MARKER) && read_only,
            sync_names,
            read_only,
            epoch: None,
            upstream: if in_recovery {
                azora_core::database::conninfo_target(&conninfo)
            } else {
                (None, None, None)
            },
            upstream_credentials: if in_recovery {
                azora_core::database::conninfo_credentials(&conninfo)
            } else {
                None
            },
            upstream_tls: if in_recovery {
                azora_core::database::conninfo_tls(&conninfo)
            } else {
                String::new()
            },
            streaming: row.get::<_, i64>(7) > 0,
            replay_delay_seconds: row.get(6),
            replicas: Vec::new(),
        };
        if has_epoch {
            let e = within(c.query_opt("select epoch from azora.epoch where id = 1", &[])).await?;
            o.epoch = e.map(|r| r.get::<_, i64>(0).max(0) as u64);
        }
        if !in_recovery {
            let rows = within(c.query(
                "select coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''), \
                        pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8, \
                        extract(epoch from replay_lag)::float8 \
                 from pg_stat_replication",
                &[],
            ))
            .await?;
            o.replicas = rows
                .iter()
                .map(|r| Replica {
                    name: r.get(0),
                    state: r.get(1),
                    sync_state: r.get(2),
                    lag_bytes: r.get::<_, Option<f64>>(3).map(|v| v.max(0.0) as u64),
                    replay_lag_seconds: r.get(4),
                })
                .collect();
        }
        Ok(o)
    }

    async fn set(&self, name: &str, value: &str) -> Result<(), PgError> {
        // Setting names are ours (fixed); values are quoted as SQL literals.
        let sql = format!("alter system set {name} = '{}'", value.replace('\'', "''"));
        within(self.client.batch_execute(&sql)).await?;
        Ok(())
    }

    async fn reload(&self) -> Result<(), PgError> {
        within(self.client.batch_execute("select pg_reload_conf()")).await
    }

    /// Renames this session (`application_name`).
    pub async fn identify(&self, name: &str) -> Result<(), PgError> {
        within(
            self.client
                .execute("select set_config('application_name', $1, false)", &[&name]),
        )
        .await?;
        Ok(())
    }

    /// Names this session the keeper of the member as the primary of `epoch`, as of the server's own clock
    /// (see [`azora_core::database::KEEPER_PREFIX`]).
    pub async fn assert_keeper(
        &self,
        epoch: u64,
        confirmed: std::time::Instant,
        window: Duration,
    ) -> Result<(), PgError> {
        // The member's own clock first, read within `window` of the leadership check; the name is then set
        // only within `window` of that reading, on the same clock (no comparison across machines): a
        // statement held up past it (a deposed leader's, late) names no keeper.
        let t0: f64 = within(
            self.client
                .query_one("select extract(epoch from clock_timestamp())::float8", &[]),
        )
        .await?
        .get(0);
        if confirmed.elapsed() > window {
            return Err(PgError::Db(
                "not named the keeper: the member's clock answered too long after the leadership check"
                    .into(),
            ));
        }
        self.name_keeper_until(epoch, t0 + window.as_secs_f64()).await
    }

    /// Names this session the keeper of the member as the primary of `epoch` only while the member's clock
    /// reads no later than `limit` (Unix seconds, that clock): checked where the statement runs.
    pub async fn name_keeper_until(&self, epoch: u64, limit: f64) -> Result<(), PgError> {
        let prefix = format!("{}{epoch}-", azora_core::database::KEEPER_PREFIX);
        let set = within(self.client.execute(
            "select set_config('application_name', $1::text || floor(extract(epoch from clock_timestamp()))::bigint::text, false) \
             where extract(epoch from clock_timestamp()) <= $2::float8",
            &[&prefix, &limit],
        ))
        .await?;
        if set == 0 {
            return Err(PgError::Db(
                "not named the keeper: the statement ran too long after the member's clock was read".into(),
            ));
        }
        Ok(())
    }

    /// Whether another session of this user names the operator the keeper of this member as the primary of
    /// `epoch` or newer, within the last `window` (the server's clock).
    pub async fn kept_within(&self, epoch: u64, window: Duration) -> Result<bool, PgError> {
        let rows = within(self.client.query(
            "select application_name, floor(extract(epoch from clock_timestamp()))::bigint from pg_stat_activity \
             where pid <> pg_backend_pid() and usename = current_user and datname = current_database() \
               and application_name like $1",
            &[&format!("{}%", azora_core::database::KEEPER_PREFIX)],
        ))
        .await?;
        let now = rows.first().map_or(0, |r| r.get::<_, i64>(1));
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        Ok(azora_core::database::kept(
            names.iter().map(String::as_str),
            epoch,
            now,
            window.as_secs() as i64,
        ))
    }

    /// Fences the member: no commit is acknowledged (`synchronous_standby_names` names no standby), new
    /// transactions are read-only, client sessions are ended (replication connections stay, so standbys
    /// receive everything it has). Returns its WAL position after the fence.
    pub async fn fence(&self) -> Result<Option<u64>, PgError> {
        self.set("synchronous_standby_names", FENCE_MARKER).await?;
        self.set("default_transaction_read_only", "on").await?;
        self.reload().await?;
        // The reload is asynchronous: give every backend and walsender a moment to take the new rule
        // before the sessions end and the position is read.
        tokio::time::sleep(Duration::from_millis(300)).await;
        within(self.client.batch_execute(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where pid <> pg_backend_pid() and backend_type = 'client backend'",
        ))
        .await?;
        // Give the terminated sessions' last WAL a moment to be written.
        let row = within(self.client.query_one(
            "select case when pg_is_in_recovery() then null else pg_current_wal_lsn()::text end",
            &[],
        ))
        .await?;
        Ok(opt_lsn(row.get(0)))
    }

    /// Sets the synchronous rule of a primary (or of a standby about to be promoted) and lifts our
    /// read-only fence, in one reload.
    pub async fn set_primary_rule(&self, sync_names: &str) -> Result<(), PgError> {
        self.set("synchronous_standby_names", sync_names).await?;
        self.set("default_transaction_read_only", "off").await?;
        self.reload().await
    }

    /// Sets only the synchronous rule (reload, no restart).
    pub async fn set_sync_rule(&self, sync_names: &str) -> Result<(), PgError> {
        self.set("synchronous_standby_names", sync_names).await?;
        self.reload().await
    }

    /// Promotes a standby and waits (up to 30 s) for it to take writes. A standby whose primary is gone
    /// sleeps `wal_retrieve_retry_interval` (5 s by default) between attempts and notices the promotion only
    /// after that sleep: the interval is shortened (a reload wakes it) for the promotion and reset after.
    pub async fn promote(&self) -> Result<bool, PgError> {
        self.set("wal_retrieve_retry_interval", "100ms").await?;
        self.reload().await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let promoted = self.promote_now().await;
        let reset = within(
            self.client
                .batch_execute("alter system reset wal_retrieve_retry_interval"),
        )
        .await;
        if promoted.is_ok() && reset.is_ok() {
            let _ = self.reload().await;
        }
        promoted
    }

    async fn promote_now(&self) -> Result<bool, PgError> {
        let row = match tokio::time::timeout(
            Duration::from_secs(35),
            self.client.query_one("select pg_promote(true, 30)", &[]),
        )
        .await
        {
            Ok(r) => r.map_err(db)?,
            Err(_) => return Err(PgError::Timeout(Duration::from_secs(35))),
        };
        Ok(row.get(0))
    }

    /// Writes `epoch` (and the region it belongs to) into the primary's data. The commit is local: it
    /// must not wait for standbys being repointed.
    pub async fn write_epoch(&self, epoch: u64, region: &str) -> Result<(), PgError> {
        let e = i64::try_from(epoch).unwrap_or(i64::MAX);
        let r = within(self.client.batch_execute(
            "begin read write; set local synchronous_commit = local; \
             create schema if not exists azora; \
             create table if not exists azora.epoch (id int primary key check (id = 1), epoch bigint not null, \
                 region text not null, written timestamptz not null default now())",
        ))
        .await;
        if let Err(e) = r {
            let _ = within(self.client.batch_execute("rollback")).await;
            return Err(e);
        }
        let r = within(self.client.execute(
            "insert into azora.epoch (id, epoch, region) values (1, $1, $2) \
             on conflict (id) do update set epoch = excluded.epoch, region = excluded.region, written = now() \
             where azora.epoch.epoch <= excluded.epoch",
            &[&e, &region],
        ))
        .await;
        match r {
            Ok(_) => within(self.client.batch_execute("commit")).await,
            Err(e) => {
                let _ = within(self.client.batch_execute("rollback")).await;
                Err(e)
            }
        }
    }

    /// Runs a checkpoint (after a promotion it records the new timeline in the control file, which
    /// `pg_rewind` reads from its source). Deadline 2 min.
    pub async fn checkpoint(&self) -> Result<(), PgError> {
        match tokio::time::timeout(Duration::from_secs(120), self.client.batch_execute("checkpoint")).await {
            Ok(r) => r.map_err(db),
            Err(_) => Err(PgError::Timeout(Duration::from_secs(120))),
        }
    }

    /// Stops a standby streaming (its `primary_conninfo` emptied, reload): it no longer confirms an old
    /// primary's commits. It is pointed at the new primary after the promotion.
    pub async fn detach(&self) -> Result<(), PgError> {
        self.set("primary_conninfo", "").await?;
        self.reload().await
    }

    /// Points a standby at `primary` (reload, no restart).
    pub async fn follow(&self, primary: &PgTarget, application_name: &str) -> Result<(), PgError> {
        let value = primary.conninfo_for(application_name);
        self.set("primary_conninfo", &value)
            .await
            .map_err(|_| PgError::Withheld("primary_conninfo"))?;
        self.reload().await
    }
}
