//! `Database`: a PostgreSQL or Redis database with one member per region, replicated across regions and
//! failed over in the same ordered timeline as DNS. Pure data, no IO.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, SecretRef, Time};

/// A replicated database: one member per region, one primary, the others streaming from it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "azora.io",
    version = "v1alpha1",
    kind = "Database",
    status = "DatabaseStatus",
    shortname = "db",
    category = "azora",
    doc = "A PostgreSQL or Redis database with one member per region; its primary follows a FailoverPolicy (or its own region verdicts), failed over in order: fence, promote, repoint, then DNS.",
    printcolumn(name = "Engine", type_ = "string", json_path = ".spec.engine"),
    printcolumn(name = "Primary", type_ = "string", json_path = ".status.primaryRegion"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch"),
    printcolumn(
        name = "Replication",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Replicating\")].reason"
    ),
    printcolumn(name = "Lag", type_ = "string", json_path = ".status.maxLag"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.members.all(m, self.members.exists_one(n, n.region == m.region))",
     "message": "one member per region"},
    {"rule": "!has(self.replication) || !has(self.replication.mode) || self.replication.mode != 'Synchronous' || !has(self.replication.syncStandbys) || self.replication.syncStandbys < size(self.members.filter(m, !has(m.synchronous) || m.synchronous))",
     "message": "syncStandbys must be smaller than the number of synchronous members"},
    {"rule": "self.engine != 'Redis' || (has(self.replication) && has(self.replication.mode) && self.replication.mode == 'Asynchronous')",
     "message": "Redis replication is asynchronous"}
]))]
pub struct DatabaseSpec {
    /// The database engine.
    pub engine: Engine,
    /// The tenant the database belongs to: its residency applies (no member outside it, no promotion
    /// outside it). Unset: platform-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub tenant: Option<String>,
    /// The FailoverPolicy whose active region the primary follows. Unset: the primary moves only when its
    /// own region is Down (the region verdicts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub follow_policy: Option<String>,
    /// One member per region.
    #[schemars(length(min = 1, max = 16))]
    pub members: Vec<DatabaseMember>,
    /// How the members replicate.
    #[serde(default)]
    pub replication: Replication,
    /// The database the operator connects to (PostgreSQL). Default `postgres`.
    #[serde(default = "default_database_name")]
    #[schemars(length(min = 1, max = 63))]
    pub database_name: String,
    /// Failovers kept in `status.history`.
    #[serde(default = "default_history")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
    /// TLS on every connection to the members: the operator's, the region agents' (and their `pg_rewind`/
    /// `pg_basebackup`) and the members' own replication (PostgreSQL `sslmode` in `primary_conninfo`; Redis
    /// `tls-replication`). Unset: plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DatabaseTls>,
}

/// TLS to the members.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTls {
    /// `Require`: encrypted, the server's certificate not checked by the operator and the agents (libpq
    /// `sslmode=require` for the standbys, which libpq still checks against `~/.postgresql/root.crt` when
    /// the server's user has one). `VerifyFull`: the certificate must chain to `ca.crt` in the member's
    /// credentials Secret and name the endpoint's host in a subject alternative name (libpq
    /// `sslmode=verify-full`; Redis replicas check their primary with their own `tls-ca-cert-file`, without a
    /// name check). No client certificate is sent: members must not require one.
    pub mode: TlsMode,
    /// PostgreSQL with `VerifyFull` only: the CA file's path on the members' own hosts, which a standby
    /// checks its upstream with (`sslrootcert` in `primary_conninfo` and the agent's rebuilds). Unset:
    /// libpq's default, `~/.postgresql/root.crt` of the server's user. A standby that cannot use it stops
    /// streaming: the operator repoints one streaming standby at a time, and none while another does not
    /// stream (with a single synchronous standby, commits stall until it is fixed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[A-Za-z0-9._/-]+$"))]
    pub standby_root_cert_file: Option<String>,
}

/// How a member's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum TlsMode {
    /// Encrypted; the certificate is not checked.
    Require,
    /// Encrypted; the certificate is checked against the CA and the host name.
    VerifyFull,
}

fn default_true() -> bool {
    true
}
fn default_database_name() -> String {
    "postgres".into()
}
fn default_history() -> u32 {
    10
}
fn default_sync_standbys() -> u32 {
    1
}
fn default_max_lag() -> String {
    "30s".into()
}

/// Database engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum Engine {
    /// PostgreSQL streaming replication.
    PostgreSQL,
    /// Redis replication.
    Redis,
}

/// One member: the database server of one region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseMember {
    /// The region the member runs in.
    #[schemars(length(min = 1, max = 63))]
    pub region: String,
    /// `host:port` the operator and the other members reach it on.
    #[schemars(
        length(min = 3, max = 253),
        regex(pattern = r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")
    )]
    pub endpoint: String,
    /// Counts in the synchronous rule (`ANY n` over the synchronous members). `false`: an asynchronous
    /// standby (e.g. a far region): never needed for a commit, promoted only when it has everything the
    /// synchronous standbys have.
    #[serde(default = "default_true")]
    pub synchronous: bool,
    /// Secret (in the operator's namespace) with `username` and `password`: a role allowed to replicate,
    /// promote and change settings (PostgreSQL: a superuser — `ALTER SYSTEM`, `pg_promote()`, reading
    /// `primary_conninfo`, ending sessions; the standbys stream with the same role, so its password is kept
    /// in their `postgresql.auto.conf` as `pg_basebackup -R` does; Redis: the `requirepass`/ACL user).
    pub credentials: SecretRef,
}

/// Replication mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum ReplicationMode {
    /// A commit is acknowledged only once `syncStandbys` standbys have it (PostgreSQL `ANY n (...)`).
    #[default]
    Synchronous,
    /// Standbys follow behind; a standby lagging more than `maxLagForPromotion` is never promoted.
    Asynchronous,
}

/// How members replicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    /// Synchronous (PostgreSQL only) or asynchronous.
    #[serde(default)]
    pub mode: ReplicationMode,
    /// Synchronous: how many standbys must confirm each commit (`ANY n`).
    #[serde(default = "default_sync_standbys")]
    #[schemars(range(min = 1, max = 15))]
    pub sync_standbys: u32,
    /// Asynchronous: a standby further behind than this (replay lag) is not promoted.
    #[serde(default = "default_max_lag")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub max_lag_for_promotion: String,
}

impl Default for Replication {
    fn default() -> Self {
        Self {
            mode: ReplicationMode::default(),
            sync_standbys: default_sync_standbys(),
            max_lag_for_promotion: default_max_lag(),
        }
    }
}

/// The role a member plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum MemberRole {
    /// Takes writes.
    Primary,
    /// Streams from the primary.
    Standby,
    /// A former primary kept from taking writes (read-only, no commit acknowledged) until it is rebuilt
    /// as a standby.
    Fenced,
    /// Not reachable, or not yet seen.
    #[default]
    Unknown,
}

/// What the operator last saw of one member.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The member's region.
    pub region: String,
    /// Its role.
    pub role: MemberRole,
    /// Whether it answered the last observation.
    pub reachable: bool,
    /// PostgreSQL: the WAL position (primary: written; standby: replayed). Redis: the replication offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// Bytes behind the primary (standbys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Seconds behind the primary (standbys; PostgreSQL replay lag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// PostgreSQL `sync_state` as the primary reports it (`quorum`, `sync`, `async`, `potential`), or
    /// `disconnected` for a standby the primary does not see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_state: Option<String>,
    /// The region it streams from (standbys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The failover epoch written into it (the primary it belongs to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// What is wrong, if anything (never a credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One failover of the primary, step by step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseFailover {
    /// Epoch of the new primary.
    pub epoch: u64,
    /// Former primary region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// New primary region (once chosen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `Promoted`, `Abandoned` (the old primary was unfenced again), or `Superseded` (left unfinished in a
    /// status restored from an older copy; the members held a newer epoch); unset while in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why (`PolicyMoved`, `RegionDown`, `Switchover`).
    pub reason: String,
    /// The FailoverPolicy epoch this failover follows, if it follows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_epoch: Option<u64>,
    /// When the need was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_time: Option<Time>,
    /// When the old primary was fenced (or found unreachable: the synchronous rule fences it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced_time: Option<Time>,
    /// How it was fenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<String>,
    /// When the new primary took writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_time: Option<Time>,
    /// When every reachable standby streamed from the new primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repointed_time: Option<Time>,
    /// When the followed policy's DNS answered the new region (from the policy's timeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_updated_time: Option<Time>,
    /// When the policy verified its DNS change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_time: Option<Time>,
    /// Asynchronous replication: how far (bytes of WAL or of the Redis replication stream) the old primary
    /// was last seen ahead of the promoted member. Writes it acknowledged in that window are lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possible_loss_bytes: Option<u64>,
    /// Asynchronous replication: how long the promoted member had not heard from the old primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possible_loss_seconds: Option<f64>,
    /// Detected to promoted, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
    /// The new primary's position at promotion, and the most advanced position seen among the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Observed state of a Database.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// Generation of the spec last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The region of the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_region: Option<String>,
    /// Failover epoch: recorded before each failover step, written into the primary, checked before
    /// every later step.
    #[serde(default)]
    pub epoch: u64,
    /// The FailoverPolicy epoch the primary is placed for (the DNS step of that failover waits for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_epoch: Option<u64>,
    /// The FailoverPolicy epoch whose move the primary could not follow (no standby could be promoted
    /// without losing a commit); that failover's DNS step does not wait for this database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_policy_epoch: Option<u64>,
    /// The largest standby lag, human readable (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag: Option<String>,
    /// Per member.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// The failover in progress or last done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<DatabaseFailover>,
    /// Earlier failovers, newest first.
    #[serde(default)]
    pub history: Vec<DatabaseFailover>,
    /// `Ready`, `Replicating`, `SpecValid`, `ReferencesResolved`, `Promotion`.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}
