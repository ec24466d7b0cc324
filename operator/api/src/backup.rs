//! `BackupSchedule`, `Backup` and `Restore`: when tenants are backed up, each backup run with its copies per
//! region, and restores into a region or a scratch namespace. Pure data, no IO.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::common::{Condition, LabelSelector, SecretKeyRef, Time};

/// A backup schedule: how often, how long kept, which tenants, what is included, where copied.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "azora.io",
    version = "v1alpha1",
    kind = "BackupSchedule",
    status = "BackupScheduleStatus",
    shortname = "bs",
    category = "azora",
    doc = "When tenants are backed up, how long backups are kept and where they are copied.",
    printcolumn(name = "Every", type_ = "string", json_path = ".spec.every"),
    printcolumn(name = "Keep", type_ = "string", json_path = ".spec.retention.keepFor"),
    printcolumn(
        name = "Last-Success",
        type_ = "date",
        json_path = ".status.lastSuccessfulTime"
    ),
    printcolumn(name = "RPO(s)", type_ = "integer", json_path = ".status.rpoSeconds"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// Time between two backups of each tenant.
    #[serde(default = "default_every")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub every: String,
    /// How long backups are kept.
    #[serde(default)]
    pub retention: Retention,
    /// Tenants backed up. Empty: every tenant with backups enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_selector: Option<LabelSelector>,
    /// What each backup includes.
    #[serde(default)]
    pub include: Include,
    /// Copy each backup to every region the tenant's residency allows, not only its home region.
    #[serde(default = "default_true")]
    pub copy_to_allowed_regions: bool,
    /// Verify every copy (download and compare checksums) after upload.
    #[serde(default = "default_true")]
    pub verify: bool,
    /// Stop creating new backups; existing ones are kept and pruned as usual.
    #[serde(default)]
    pub suspend: bool,
    /// Key that encrypts the Secrets inside each archive (AES-256-GCM): 32 bytes, raw or base64, in a
    /// Secret in the operator's namespace. Without it, Secrets are left out of backups and status says so.
    /// To rotate it, name a new Secret here and keep the old one: each Backup names the key it was sealed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<SecretKeyRef>,
    /// Scheduled test restores: the newest good backup of each tenant is restored into a scratch namespace
    /// of another allowed region, verified, and the scratch namespace deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_restore: Option<TestRestore>,
}

/// Scheduled test restores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestRestore {
    /// How often each tenant's newest good backup is proven to restore.
    #[serde(default = "default_test_every")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub every: String,
    /// Region restored into (it must be allowed for the tenant); default: the first allowed region other
    /// than the tenant's home, else home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

fn default_test_every() -> String {
    "24h".into()
}

/// The result of a scheduled test restore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestRestoreResult {
    /// Tenant.
    pub tenant: String,
    /// Backup restored.
    pub backup: String,
    /// Region restored into.
    pub region: String,
    /// When it finished.
    pub time: Time,
    /// Whether the restore was applied and verified.
    pub succeeded: bool,
    /// What happened.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn default_every() -> String {
    "5m".into()
}
fn default_true() -> bool {
    true
}

/// Retention of backups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Backups older than this are pruned.
    #[serde(default = "default_keep_for")]
    #[schemars(schema_with = "crate::common::duration_schema")]
    pub keep_for: String,
    /// The newest N good backups are kept whatever their age; the last good one is never deleted.
    #[serde(default = "default_keep_last")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep_last_good: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_for: default_keep_for(),
            keep_last_good: default_keep_last(),
        }
    }
}

fn default_keep_for() -> String {
    "30d".into()
}
fn default_keep_last() -> u32 {
    3
}

/// What a backup includes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Include {
    /// The tenant's Kubernetes objects in its active region.
    #[serde(default = "default_true")]
    pub kubernetes_objects: bool,
    /// The tenant's objects in object storage.
    #[serde(default = "default_true")]
    pub object_storage: bool,
    /// The control plane's own custom resources about the tenant.
    #[serde(default = "default_true")]
    pub control_plane: bool,
}

impl Default for Include {
    fn default() -> Self {
        Self {
            kubernetes_objects: true,
            object_storage: true,
            control_plane: true,
        }
    }
}

/// Observed state of a BackupSchedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// The generation last processed by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The newest successful Backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// When the newest successful backup completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When the next backup is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
    /// Worst recovery point over the selected tenants now: age of their newest good backup, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<u64>,
    /// The newest backup of this schedule known to restore (a restore of it was applied and verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restored_backup: Option<String>,
    /// The newest scheduled test restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_test_restore: Option<TestRestoreResult>,
    /// Tenants whose newest scheduled test restore failed, one entry each, kept until a test restore of
    /// theirs succeeds (another tenant's success never hides it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_restore_failures: Vec<TestRestoreResult>,
    /// Conditions: `Ready`, `SpecValid`, `Scheduling`.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// One backup run of one tenant.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "azora.io",
    version = "v1alpha1",
    kind = "Backup",
    status = "BackupStatus",
    shortname = "bk",
    category = "azora",
    doc = "One backup of one tenant, with a copy per allowed region.",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenant"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.sizeBytes"),
    printcolumn(name = "Data-Time", type_ = "date", json_path = ".status.dataTime"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Tenant backed up.
    #[schemars(schema_with = "crate::common::name_schema")]
    pub tenant: String,
    /// The schedule that created this backup, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// What the backup includes.
    #[serde(default)]
    pub include: Include,
    /// Copy to every region the tenant's residency allows.
    #[serde(default = "default_true")]
    pub copy_to_allowed_regions: bool,
    /// Key that encrypts the Secrets inside the archive (see `BackupSchedule.spec.encryptionKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<SecretKeyRef>,
}

/// Phase of a backup or restore. `Succeeded` only when every required copy (or restored object) is
/// verified; `PartiallyFailed` names what is missing; both, and `Failed`, are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum Phase {
    Pending,
    Running,
    Verifying,
    Succeeded,
    PartiallyFailed,
    Failed,
}

impl Phase {
    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::PartiallyFailed | Self::Failed)
    }
}

/// One copy of a backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupLocation {
    /// Region holding the copy.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Object key of the archive (its manifest sits beside it as `manifest.json`).
    pub key: String,
    /// Size of the copy in bytes, as read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Whether the copy was downloaded and its checksum matched.
    pub verified: bool,
    /// When it was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_time: Option<Time>,
    /// Error, if the copy failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Observed state of a Backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The generation last processed by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Point in time of the data in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_time: Option<Time>,
    /// Archive size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// SHA-256 of the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Objects in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_count: Option<u64>,
    /// Region whose cluster the objects were read from (where the tenant was active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_region: Option<String>,
    /// Whether the tenant's Secrets are in the archive (encrypted); false without an encryption key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_included: Option<bool>,
    /// When every required copy was last seen verified. Kept when copies fail later: retention never deletes
    /// the newest backup that was ever good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_time: Option<Time>,
    /// When a restore of this backup (scratch restores included) was last verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_verified_time: Option<Time>,
    /// One copy per region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<BackupLocation>,
    /// Conditions: `Ready`, `SpecValid`, `ReferencesResolved`, `Completed`.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A restore of a Backup into a region or a scratch namespace.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "azora.io",
    version = "v1alpha1",
    kind = "Restore",
    status = "RestoreStatus",
    shortname = "rst",
    category = "azora",
    doc = "Restores a Backup into a region, or into a scratch namespace for drills.",
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backup"),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.targetRegion"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Restored", type_ = "integer", json_path = ".status.objectsRestored"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// Backup to restore.
    #[schemars(length(min = 1, max = 253))]
    pub backup: String,
    /// Region to restore into. It must be allowed by the tenant's residency.
    #[schemars(schema_with = "crate::common::name_schema")]
    pub target_region: String,
    /// Restore into this scratch namespace instead of the tenant's own (drills, inspection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub target_namespace: Option<String>,
    /// Verify restored objects against the backup manifest.
    #[serde(default = "default_true")]
    pub verify: bool,
}

/// Observed state of a Restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The generation last processed by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// When the restore started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the restore finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Objects restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects_restored: Option<u64>,
    /// Whether every restored object matched the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Region whose copy of the backup was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_region: Option<String>,
    /// Namespace restored into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Objects restored, by kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<String, u64>,
    /// The tenant's objects in the target region's bucket, checked against the listing the backup
    /// recorded (object bytes are replicated across regions, not archived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_storage: Option<ObjectStorageCheck>,
    /// What happened when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    /// Conditions: `Ready`, `SpecValid`, `ReferencesResolved`, `Completed`.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A restore's check of the tenant's object storage against the backup's listing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStorageCheck {
    /// Objects the backup recorded.
    pub recorded: u64,
    /// Present in the target region's bucket with the recorded ETag and size.
    pub present: u64,
    /// Not in the target region's bucket.
    pub missing: u64,
    /// In the bucket with another ETag or size (written again since the backup).
    pub changed: u64,
    /// Up to ten of the keys missing or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// One step of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// When.
    pub time: Time,
    /// Step.
    pub step: String,
    /// What happened.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
