//! Types shared by every kind: conditions, timestamps, secret references, continents. Pure data, no IO.
//!
//! Conditions follow `metav1.Condition` exactly (type, status, reason, message, observedGeneration,
//! lastTransitionTime) so generic tooling (kubectl wait, Argo CD, Flux) reads them.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The API group of every kind.
pub const GROUP: &str = "azora.io";
/// The API version of every kind.
pub const VERSION: &str = "v1alpha1";

/// A point in time: RFC 3339 in UTC with millisecond precision (failover timelines are measured in
/// milliseconds; any RFC 3339 parser, kubectl included, reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub jiff::Timestamp);

impl Time {
    /// The current time, truncated to milliseconds.
    pub fn now() -> Self {
        Self::from_timestamp(jiff::Timestamp::now())
    }

    /// Wraps a timestamp, truncated to milliseconds.
    pub fn from_timestamp(ts: jiff::Timestamp) -> Self {
        Self(jiff::Timestamp::from_millisecond(ts.as_millisecond()).unwrap_or(ts))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse::<jiff::Timestamp>()
            .map(Time)
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Time {
    fn schema_name() -> Cow<'static, str> {
        "Time".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// Status of a condition: `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, strum::Display)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One aspect of an object's state, shaped like `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition in CamelCase, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of the condition: `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable reason for the last transition, in CamelCase.
    pub reason: String,
    /// Human-readable details about the last transition.
    #[serde(default)]
    pub message: String,
    /// The `.metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed.
    pub last_transition_time: Time,
}

/// Reference to one key of a Secret in the operator's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the namespace the operator runs in.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Reference to a whole Secret in the operator's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the namespace the operator runs in.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A continent, used for residency rules and geographic DNS answers.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    strum::Display,
    strum::EnumString,
    strum::EnumIter,
)]
pub enum Continent {
    Africa,
    Europe,
    Asia,
    NorthAmerica,
    SouthAmerica,
    Oceania,
    Antarctica,
}

/// Labels an object must carry to be selected (all of them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Every key/value listed here must be present on the selected object's labels.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub match_labels: std::collections::BTreeMap<String, String>,
}

/// Schema for a duration string such as `5s`, `10m`, `24h` or `30d`.
pub(crate) fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^([0-9]+(ms|s|m|h|d))+$",
        "maxLength": 32
    })
}

/// Schema for an optional duration string.
pub(crate) fn optional_duration_schema(g: &mut SchemaGenerator) -> Schema {
    let mut s = duration_schema(g);
    s.insert("nullable".into(), true.into());
    s
}

/// Schema for a Kubernetes resource quantity such as `500m`, `4`, `8Gi`.
pub(crate) fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "nullable": true,
        "pattern": "^[0-9]+(\\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi)?$",
        "maxLength": 32
    })
}

/// Schema for `conditions`: a map-list keyed by `type`, so several field managers can own one condition each.
pub(crate) fn conditions_schema(g: &mut SchemaGenerator) -> Schema {
    let mut s = g.subschema_for::<Vec<Condition>>();
    s.insert("x-kubernetes-list-type".into(), "map".into());
    s.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    s
}

/// Schema for a DNS-label-like object name (a Region, Tenant, ... name).
pub(crate) fn name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 63,
        "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    })
}

/// Schema for a list of object names.
pub(crate) fn name_list_schema(g: &mut SchemaGenerator) -> Schema {
    let item = name_schema(g);
    json_schema!({ "type": "array", "items": item, "maxItems": 64 })
}

/// Schema for a cron expression (five fields, UTC).
pub(crate) fn cron_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "minLength": 9, "maxLength": 100 })
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
