//! Redis members (IO): a small RESP client (AUTH, commands, replies) with deadlines, and what the database
//! room needs of a member — `INFO replication`, fencing (`min-replicas-to-write` no replica can satisfy, client
//! connections ended), promotion (`REPLICAOF NO ONE`), following a primary (`masterauth` + `REPLICAOF`) and
//! the epoch key. Errors carry the server's text or a fixed one, never a credential.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use crate::postgres::{PgError as Error, PgObservation as Observation, PgTarget as Target, Replica};

/// Deadline of a connection attempt (and AUTH).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// `min-replicas-to-write` value that fences a primary: no deployment has that many replicas.
pub const FENCE_MIN_REPLICAS: i64 = 1000;
/// The key holding the epoch (`<epoch>:<region>`).
pub const EPOCH_KEY: &str = "azora:epoch";

/// A RESP reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`.
    Error(String),
    /// `:1`.
    Int(i64),
    /// `$…` (None: nil).
    Bulk(Option<Vec<u8>>),
    /// `*…` (None: nil).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (simple strings, bulk strings, integers).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// An open connection to one member.
pub struct RedisSession {
    stream: BufStream<Box<dyn Stream>>,
    target: Target,
    broken: bool,
}

/// Opens a connection and authenticates (deadline `CONNECT_TIMEOUT`).
pub async fn connect(t: &Target) -> Result<RedisSession, Error> {
    connect_within(t, CONNECT_TIMEOUT).await
}

/// Opens a connection and authenticates within `deadline`.
pub async fn connect_within(t: &Target, deadline: Duration) -> Result<RedisSession, Error> {
    let addr = format!("{}:{}", t.host, t.port);
    let tls = crate::member_tls::client_config(&t.tls).map_err(Error::Db)?;
    let opened = async {
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| Error::Db(format!("connecting to {addr}: {e}")))?;
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(config) => Box::new(
                crate::member_tls::wrap(config, &t.host, tcp)
                    .await
                    .map_err(|e| Error::Db(format!("TLS to {addr}: {e}")))?,
            ),
        };
        Ok::<_, Error>(stream)
    };
    let stream = match tokio::time::timeout(deadline, opened).await {
        Ok(r) => r?,
        Err(_) => return Err(Error::Timeout(deadline)),
    };
    let mut s = RedisSession {
        stream: BufStream::new(stream),
        target: t.clone(),
        broken: false,
    };
    if !t.password.is_empty() {
        let user = t.user.as_str();
        let reply = if user.is_empty() || user == "default" {
            s.raw(&["AUTH", &t.password], deadline).await
        } else {
            s.raw(&["AUTH", user, &t.password], deadline).await
        };
        match reply {
            Ok(Reply::Error(_)) => return Err(Error::Db("authentication refused".into())),
            Ok(_) => {}
            Err(_) => return Err(Error::Db("authentication failed".into())),
        }
    }
    Ok(s)
}

fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(':')?;
        (k == key).then_some(v)
    })
}

impl RedisSession {
    /// Whether this session was opened to `t`.
    pub fn target_is(&self, t: &Target) -> bool {
        &self.target == t
    }

    /// Whether the connection failed.
    pub fn is_closed(&self) -> bool {
        self.broken
    }

    async fn raw(&mut self, args: &[&str], deadline: Duration) -> Result<Reply, Error> {
        // A connection that failed or timed out may still deliver a late reply: never read it as this one's.
        if self.broken {
            return Err(Error::Db("connection: broken by an earlier command".into()));
        }
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        let io = async {
            self.stream.write_all(&buf).await?;
            self.stream.flush().await?;
            read_reply(&mut self.stream).await
        };
        match tokio::time::timeout(deadline, io).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.broken = true;
                Err(Error::Db(format!("connection: {e}")))
            }
            Err(_) => {
                self.broken = true;
                Err(Error::Timeout(deadline))
            }
        }
    }

    /// Sends one command and returns the reply as is (a server error is `Reply::Error`).
    pub async fn command(&mut self, args: &[&str]) -> Result<Reply, Error> {
        self.raw(args, COMMAND_TIMEOUT).await
    }

    /// One command; a server error is an `Err` with the server's text (`what` names the command in it, so
    /// no argument — a password — is ever echoed).
    async fn cmd(&mut self, what: &str, args: &[&str]) -> Result<Reply, Error> {
        match self.raw(args, COMMAND_TIMEOUT).await? {
            Reply::Error(e) => Err(Error::Db(format!("{what}: {e}"))),
            r => Ok(r),
        }
    }

    /// Observes the member (same shape as a PostgreSQL observation: offsets as positions, replicas named
    /// `ip:port`).
    pub async fn observe(&mut self) -> Result<Observation, Error> {
        let info = self
            .cmd("INFO", &["INFO", "replication"])
            .await?
            .text()
            .unwrap_or_default();
        let fence = match self
            .cmd("CONFIG GET", &["CONFIG", "GET", "min-replicas-to-write"])
            .await?
        {
            Reply::Array(Some(items)) => items
                .get(1)
                .and_then(Reply::text)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0),
            _ => 0,
        };
        let epoch = self
            .cmd("GET", &["GET", EPOCH_KEY])
            .await?
            .text()
            .and_then(|v| v.split(':').next().and_then(|e| e.parse::<u64>().ok()));
        let replica = info_field(&info, "role") == Some("slave");
        let num = |k: &str| info_field(&info, k).and_then(|v| v.parse::<u64>().ok());
        let mut o = Observation {
            in_recovery: replica,
            fenced: fence >= FENCE_MIN_REPLICAS,
            read_only: fence >= FENCE_MIN_REPLICAS,
            epoch,
            ..Observation::default()
        };
        if replica {
            o.received = num("slave_repl_offset");
            o.replayed = o.received;
            o.upstream = (
                info_field(&info, "master_host").map(str::to_string),
                info_field(&info, "master_port").map(str::to_string),
                None,
            );
            o.streaming = info_field(&info, "master_link_status") == Some("up");
            // A server built without TLS has no such setting (an empty answer): no TLS.
            let tls = self
                .cmd("CONFIG GET", &["CONFIG", "GET", "tls-replication"])
                .await?;
            if let Reply::Array(Some(items)) = tls
                && items.get(1).and_then(Reply::text).as_deref() == Some("yes")
            {
                o.upstream_tls = "yes".into();
            }
            o.replay_delay_seconds = info_field(&info, "master_last_io_seconds_ago")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| *v >= 0.0);
        } else {
            let own = num("master_repl_offset");
            o.received = own;
            o.replayed = own;
            for l in info.lines() {
                let Some((k, v)) = l.trim().split_once(':') else {
                    continue;
                };
                if !k.starts_with("slave") || k.len() <= 5 || !k[5..].chars().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                let f = |name: &str| {
                    v.split(',').find_map(|kv| {
                        let (a, b) = kv.split_once('=')?;
                        (a == name).then(|| b.to_string())
                    })
                };
                let offset = f("offset").and_then(|x| x.parse::<u64>().ok());
                o.replicas.push(Replica {
                    name: format!(
                        "{}:{}",
                        f("ip").unwrap_or_default(),
                        f("port").unwrap_or_default()
                    ),
                    state: match f("state").as_deref() {
                        Some("online") => "streaming".into(),
                        Some(s) => s.to_string(),
                        None => String::new(),
                    },
                    sync_state: "async".into(),
                    lag_bytes: match (own, offset) {
                        (Some(a), Some(b)) => Some(a.saturating_sub(b)),
                        _ => None,
                    },
                    replay_lag_seconds: f("lag").and_then(|x| x.parse::<f64>().ok()),
                });
            }
        }
        Ok(o)
    }

    /// Fences a primary: every write is refused (`min-replicas-to-write` no deployment can satisfy), client
    /// connections are ended. Returns its replication offset after the fence.
    pub async fn fence(&mut self) -> Result<Option<u64>, Error> {
        let n = FENCE_MIN_REPLICAS.to_string();
        self.cmd("CONFIG SET", &["CONFIG", "SET", "min-replicas-to-write", &n])
            .await?;
        self.cmd(
            "CLIENT KILL",
            &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
        )
        .await?;
        Ok(self.observe().await?.received)
    }

    /// Renames this connection (`CLIENT SETNAME`).
    pub async fn identify(&mut self, name: &str) -> Result<(), Error> {
        self.cmd("CLIENT SETNAME", &["CLIENT", "SETNAME", name]).await?;
        Ok(())
    }

    /// The server's clock, in seconds (`TIME`).
    async fn server_time(&mut self) -> Result<i64, Error> {
        Ok(self.server_clock().await?.0)
    }

    /// The server's clock: seconds and microseconds.
    async fn server_clock(&mut self) -> Result<(i64, i64), Error> {
        let unexpected = || Error::Db("TIME: unexpected reply".into());
        match self.cmd("TIME", &["TIME"]).await? {
            Reply::Array(Some(parts)) => {
                let part = |i: usize| {
                    parts
                        .get(i)
                        .and_then(Reply::text)
                        .and_then(|t| t.parse::<i64>().ok())
                };
                Ok((part(0).ok_or_else(unexpected)?, part(1).unwrap_or(0)))
            }
            _ => Err(unexpected()),
        }
    }

    /// Names this connection the keeper of the member as the primary of `epoch`, as of the server's own clock
    /// (see [`azora_core::database::KEEPER_PREFIX`]).
    pub async fn assert_keeper(
        &mut self,
        epoch: u64,
        confirmed: std::time::Instant,
        window: Duration,
    ) -> Result<(), Error> {
        let (now, _) = self.server_clock().await?;
        // The name carries the time read here, so one that lands later only expires sooner; read too long
        // after the leadership was confirmed, it names no keeper.
        if confirmed.elapsed() > window {
            return Err(Error::Db(
                "not named the keeper: the member's clock answered too long after the leadership check"
                    .into(),
            ));
        }
        let name = format!("{}{epoch}-{now}", azora_core::database::KEEPER_PREFIX);
        self.identify(&name).await
    }

    /// Whether another connection of this user names the operator the keeper of this member as the primary
    /// of `epoch` or newer, within the last `window` (the server's clock).
    pub async fn kept_within(&mut self, epoch: u64, window: Duration) -> Result<bool, Error> {
        let me = match self.cmd("CLIENT ID", &["CLIENT", "ID"]).await? {
            Reply::Int(i) => i.to_string(),
            _ => String::new(),
        };
        let list = self
            .cmd("CLIENT LIST", &["CLIENT", "LIST", "TYPE", "normal"])
            .await?
            .text()
            .unwrap_or_default();
        let now = self.server_time().await?;
        let user = if self.target.user.is_empty() {
            "default".to_string()
        } else {
            self.target.user.clone()
        };
        Ok(azora_core::database::kept(
            keeper_names(&list, &me, &user),
            epoch,
            now,
            window.as_secs() as i64,
        ))
    }

    /// Lifts the fence (a primary takes writes).
    pub async fn unfence(&mut self) -> Result<(), Error> {
        self.cmd("CONFIG SET", &["CONFIG", "SET", "min-replicas-to-write", "0"])
            .await?;
        Ok(())
    }

    /// Promotes a replica.
    pub async fn promote(&mut self) -> Result<bool, Error> {
        self.cmd("REPLICAOF", &["REPLICAOF", "NO", "ONE"]).await?;
        Ok(true)
    }

    /// Writes the epoch key (replicated to the replicas).
    pub async fn write_epoch(&mut self, epoch: u64, region: &str) -> Result<(), Error> {
        let v = format!("{epoch}:{region}");
        self.cmd("SET", &["SET", EPOCH_KEY, &v]).await?;
        Ok(())
    }

    /// Follows `primary` (its credentials set as `masterauth`/`masteruser` first), then lifts any fence.
    pub async fn follow(&mut self, primary: &Target) -> Result<(), Error> {
        if !primary.password.is_empty() {
            self.cmd("CONFIG SET", &["CONFIG", "SET", "masterauth", &primary.password])
                .await
                .map_err(|_| Error::Withheld("masterauth"))?;
            if !primary.user.is_empty() && primary.user != "default" {
                self.cmd("CONFIG SET", &["CONFIG", "SET", "masteruser", &primary.user])
                    .await?;
            }
        }
        // Replication over TLS is the replica's own setting (its `tls-ca-cert-file` checks the primary). A
        // server built without TLS refuses the setting: nothing to turn off there.
        let was = match self
            .cmd("CONFIG GET", &["CONFIG", "GET", "tls-replication"])
            .await?
        {
            Reply::Array(Some(items)) => items.get(1).and_then(Reply::text).unwrap_or_default(),
            _ => String::new(),
        };
        let tls_changed = if primary.tls.on() {
            self.cmd("CONFIG SET", &["CONFIG", "SET", "tls-replication", "yes"])
                .await?;
            was != "yes"
        } else {
            let _ = self
                .cmd("CONFIG SET", &["CONFIG", "SET", "tls-replication", "no"])
                .await;
            was == "yes"
        };
        let port = primary.port.to_string();
        self.cmd("REPLICAOF", &["REPLICAOF", &primary.host, &port])
            .await?;
        // REPLICAOF to the primary it already follows changes nothing: the link to it is dropped so it
        // reconnects (a partial resync) with the new setting.
        if tls_changed {
            let _ = self
                .cmd("CLIENT KILL", &["CLIENT", "KILL", "TYPE", "master"])
                .await;
        }
        // A replica takes no writes, so a fence it carried as a former primary goes now (after REPLICAOF,
        // never before): left in place it would keep the member from ever being promoted again.
        self.unfence().await
    }
}

/// The names of the connections in `CLIENT LIST` output other than `me`, logged in as `user`.
fn keeper_names<'a>(list: &'a str, me: &str, user: &str) -> Vec<&'a str> {
    list.lines()
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
            };
            (field("id") != Some(me) && field("user") == Some(user)).then(|| field("name"))?
        })
        .collect()
}

async fn read_line(s: &mut BufStream<Box<dyn Stream>>) -> std::io::Result<String> {
    let mut line = String::new();
    let n = s.read_line(&mut line).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

async fn read_reply(s: &mut BufStream<Box<dyn Stream>>) -> std::io::Result<Reply> {
    // Iterative for arrays (INFO and CONFIG GET replies are flat): a stack of (items, remaining).
    let mut stack: Vec<(Vec<Reply>, usize)> = Vec::new();
    loop {
        let line = read_line(s).await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let value = match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad("integer"))?),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| bad("bulk length"))?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let n = usize::try_from(n).map_err(|_| bad("bulk length"))?;
                    if n > 64 * 1024 * 1024 {
                        return Err(bad("bulk reply too large"));
                    }
                    let mut buf = vec![0u8; n + 2];
                    s.read_exact(&mut buf).await?;
                    buf.truncate(n);
                    Reply::Bulk(Some(buf))
                }
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| bad("array length"))?;
                if n < 0 {
                    Reply::Array(None)
                } else if n == 0 {
                    Reply::Array(Some(Vec::new()))
                } else {
                    let n = usize::try_from(n).map_err(|_| bad("array length"))?;
                    stack.push((Vec::with_capacity(n.min(1024)), n));
                    continue;
                }
            }
            _ => return Err(bad("unknown reply type")),
        };
        let mut value = value;
        loop {
            match stack.last_mut() {
                None => return Ok(value),
                Some((items, remaining)) => {
                    items.push(value);
                    *remaining -= 1;
                    if *remaining > 0 {
                        break;
                    }
                    let (items, _) = stack.pop().unwrap_or_default();
                    value = Reply::Array(Some(items));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::keeper_names;

    #[test]
    fn keeper_names_are_other_connections_of_the_same_user() {
        let list = "id=3 addr=127.0.0.1:5000 fd=8 name=azora-agent age=9 idle=0 flags=N user=default\n\
                    id=7 addr=127.0.0.1:5001 fd=9 name=azora-keeper-2-100 age=30 idle=4 flags=N user=default\n\
                    id=8 addr=127.0.0.1:5002 fd=10 name=azora-keeper-9-100 age=30 idle=4 flags=N user=app\n";
        assert_eq!(keeper_names(list, "3", "default"), vec!["azora-keeper-2-100"]);
        assert_eq!(keeper_names(list, "7", "default"), vec!["azora-agent"]);
        assert_eq!(keeper_names(list, "3", "app"), vec!["azora-keeper-9-100"]);
        assert!(keeper_names("", "3", "default").is_empty());
    }
}
