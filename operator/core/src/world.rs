//! What validation needs to know about the rest of the world, gathered by the controllers (IO) and handed to
//! the pure checks: which Regions, Tenants, Backups and Secret keys exist. Pure data, no IO.

use std::collections::{BTreeMap, BTreeSet};

use azora_api::Continent;
use azora_api::region::RegionSpec;
use azora_api::tenant::TenantSpec;

/// Facts about one Region.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionFacts {
    /// Continent of the region.
    pub continent: Continent,
    /// Whether it is cordoned.
    pub cordoned: bool,
    /// Failover priority.
    pub priority: i32,
    /// Whether it names an object store.
    pub has_object_store: bool,
}

impl From<&RegionSpec> for RegionFacts {
    fn from(spec: &RegionSpec) -> Self {
        Self {
            continent: spec.location.continent,
            cordoned: spec.cordoned,
            priority: spec.priority,
            has_object_store: spec.object_store.is_some(),
        }
    }
}

/// The world as seen by validation.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Regions by name.
    pub regions: BTreeMap<String, RegionFacts>,
    /// Tenants by name.
    pub tenants: BTreeMap<String, TenantSpec>,
    /// Backups by name, with the tenant each belongs to.
    pub backups: BTreeMap<String, String>,
    /// Secrets in the operator namespace that were looked up, with their keys. A referenced Secret missing
    /// from this map does not exist.
    pub secrets: BTreeMap<String, BTreeSet<String>>,
}

impl World {
    /// Whether `secret` exists and holds `key`.
    pub fn has_secret_key(&self, secret: &str, key: &str) -> bool {
        self.secrets.get(secret).is_some_and(|keys| keys.contains(key))
    }
}
