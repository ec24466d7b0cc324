//! What every reconcile shares: the client, the fence, the lookup stores of Regions, Tenants and Backups,
//! Secret key lookups, the Event recorder and metrics. Building the `World` for validation happens here
//! (reads from the local caches plus Secret GETs; no writes).

use std::collections::BTreeMap;

use azora_adapters::leader::Fence;
use azora_adapters::secrets::SecretKeys;
use azora_api::backup::BackupSpec;
use azora_api::region::RegionSpec;
use azora_api::tenant::TenantSpec;
use azora_core::world::{RegionFacts, World};
use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use serde::de::DeserializeOwned;

use crate::metrics::Metrics;

/// Lookup caches of the kinds others refer to.
#[derive(Clone)]
pub struct Stores {
    /// Regions.
    pub regions: Store<DynamicObject>,
    /// Tenants.
    pub tenants: Store<DynamicObject>,
    /// Backups.
    pub backups: Store<DynamicObject>,
    /// Regional clusters: clients, caches of what is placed there, reachability.
    pub clusters: crate::clusters::Clusters,
    /// Object-storage replication state by tenant and region.
    pub replication: crate::replication::Replication,
}

/// Shared by every reconcile.
#[derive(Clone)]
pub struct Context {
    /// Client for the hub cluster.
    pub client: Client,
    /// Namespace the operator runs in (where referenced Secrets live).
    pub namespace: String,
    /// Write fence.
    pub fence: Fence,
    /// Secret key lookups.
    pub secrets: SecretKeys,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Lookup caches.
    pub stores: Stores,
}

fn specs<S: DeserializeOwned>(store: &Store<DynamicObject>) -> BTreeMap<String, S> {
    // A malformed object is skipped here; its own controller reports it.
    store
        .state()
        .iter()
        .filter_map(|o| {
            let name = o.metadata.name.clone()?;
            let spec = serde_json::from_value::<S>(o.data.get("spec")?.clone()).ok()?;
            Some((name, spec))
        })
        .collect()
}

/// What part of the world a kind's validation needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// Tenant specs.
    pub tenants: bool,
    /// Backup to tenant mapping.
    pub backups: bool,
}

impl Context {
    /// Builds the world from the caches, and looks up the given Secrets' key names.
    pub async fn world(&self, needs: Needs, secret_names: &[String]) -> Result<World, kube::Error> {
        let regions: BTreeMap<String, RegionSpec> = specs(&self.stores.regions);
        let mut world = World {
            regions: regions
                .iter()
                .map(|(k, v)| (k.clone(), RegionFacts::from(v)))
                .collect(),
            ..World::default()
        };
        if needs.tenants || needs.backups {
            world.tenants = specs::<TenantSpec>(&self.stores.tenants);
        }
        if needs.backups {
            world.backups = specs::<BackupSpec>(&self.stores.backups)
                .into_iter()
                .map(|(k, v)| (k, v.tenant))
                .collect();
        }
        for name in secret_names {
            if !world.secrets.contains_key(name)
                && let Some(keys) = self.secrets.keys(name).await?
            {
                world.secrets.insert(name.clone(), keys);
            }
        }
        Ok(world)
    }
}
