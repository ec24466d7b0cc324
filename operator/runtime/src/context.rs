//! What every reconcile and leader loop shares: the hub clients, the fence, the shared caches, Secret key
//! lookups, the Event recorder, metrics, and the small read-only handles capabilities publish to each other
//! (region verdicts, the regional cluster registry, the chaos/drill interlock). Building the `World` for
//! validation happens here (reads from the caches plus Secret GETs; no writes). No capability state.

use std::collections::BTreeMap;

use crate::events::Recorder;
use azora_adapters::leader::Fence;
use azora_adapters::objstore::StoreConfig;
use azora_adapters::secrets::SecretKeys;
use azora_api::backup::BackupSpec;
use azora_api::region::{RegionSpec, Verdict};
use azora_api::tenant::TenantSpec;
use azora_core::world::{RegionFacts, World};
use kube::Client;

use crate::cache::Caches;
use crate::clusters::Clusters;
use crate::interlock::Interlock;
use crate::metrics::Metrics;
use crate::supervise::Supervisor;
use crate::verdicts::Verdicts;

/// Read-only handles shared between capabilities (each written by exactly one owner).
#[derive(Clone)]
pub struct Handles {
    /// Combined region verdicts (owner: health) and the regions DNS serves (owner: failover).
    pub verdicts: Verdicts,
    /// Regional cluster clients and caches (owner: the registry loop in this crate).
    pub clusters: Clusters,
    /// Which chaos experiment, drill or real failover is under way.
    pub interlock: Interlock,
}

/// Shared by every reconcile.
#[derive(Clone)]
pub struct Context {
    /// Client for the hub cluster (requests: short deadlines).
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
    /// Shared watch caches of the hub.
    pub caches: Caches,
    /// Handles published between capabilities.
    pub handles: Handles,
    /// Supervisor of background tasks.
    pub supervisor: Supervisor,
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
    /// A region's object store: where it is and the credentials (from its Secret, or the operator's
    /// environment). `None`: the region names no store. Errors name the Secret and key, never a value.
    pub async fn store_config(&self, spec: &RegionSpec) -> Result<Option<StoreConfig>, String> {
        let Some(os) = &spec.object_store else {
            return Ok(None);
        };
        let credentials = match &os.credentials_secret {
            Some(secret) => {
                let get = |key: &'static str| {
                    let name = secret.name.clone();
                    async move {
                        match self.secrets.value(&name, key).await {
                            Ok(Some(v)) => String::from_utf8(v)
                                .map_err(|_| format!("Secret {name} key {key} is not UTF-8")),
                            Ok(None) => Err(format!("Secret {name} key {key} not found")),
                            Err(e) => Err(format!("reading Secret {name}: {e}")),
                        }
                    }
                };
                (get("accessKeyId").await?, get("secretAccessKey").await?)
            }
            None => (
                std::env::var("AWS_ACCESS_KEY_ID")
                    .map_err(|_| "no credentialsSecret and no AWS_ACCESS_KEY_ID".to_string())?,
                std::env::var("AWS_SECRET_ACCESS_KEY")
                    .map_err(|_| "no credentialsSecret and no AWS_SECRET_ACCESS_KEY".to_string())?,
            ),
        };
        Ok(Some(StoreConfig {
            endpoint: os.endpoint.clone(),
            bucket: os.bucket.clone(),
            signing_region: os.signing_region.clone(),
            force_path_style: os.force_path_style,
            credentials,
        }))
    }

    /// Builds the world from the caches, and looks up the given Secrets' key names.
    pub async fn world(&self, needs: Needs, secret_names: &[String]) -> Result<World, kube::Error> {
        let regions: BTreeMap<String, RegionSpec> = self.caches.regions.specs();
        let mut world = World {
            regions: regions
                .iter()
                .map(|(k, v)| (k.clone(), RegionFacts::from(v)))
                .collect(),
            ..World::default()
        };
        if needs.tenants || needs.backups {
            world.tenants = self.caches.tenants.specs::<TenantSpec>();
        }
        if needs.backups {
            world.backups = self
                .caches
                .backups
                .specs::<BackupSpec>()
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

    /// Where DNS sends a tenant's traffic: the `activeRegion` a FailoverPolicy recorded — the policy for
    /// this tenant (`spec.tenant`) first, else a platform-wide one (by name). `None` without a policy.
    pub fn routed_to(&self, tenant: &str) -> Option<String> {
        let mut own = None;
        let mut platform = None;
        let mut policies = self.caches.policies.state();
        policies.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for p in policies {
            let Some(active) = p
                .data
                .get("status")
                .and_then(|s| s.get("activeRegion"))
                .and_then(serde_json::Value::as_str)
            else {
                continue;
            };
            match p
                .data
                .get("spec")
                .and_then(|s| s.get("tenant"))
                .and_then(serde_json::Value::as_str)
            {
                Some(t) if t == tenant => {
                    own.get_or_insert_with(|| active.to_string());
                }
                None => {
                    platform.get_or_insert_with(|| active.to_string());
                }
                Some(_) => {}
            }
        }
        own.or(platform)
    }

    /// The chaos kill switch (ConfigMap `azora-chaos-halt` in the operator's namespace), with its reason.
    /// `strict`: a switch that cannot be read counts as set (never start blind); otherwise only a switch
    /// really there does (a run under way keeps its own checks and expiry).
    pub async fn chaos_halt(&self, strict: bool) -> Option<String> {
        let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(self.client.clone(), &self.namespace);
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            cms.get_opt(azora_core::chaos::HALT_CONFIGMAP),
        )
        .await;
        match read {
            Ok(Ok(Some(cm))) => Some(
                cm.data
                    .and_then(|d| d.get("reason").cloned())
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| "no reason given".into()),
            ),
            Ok(Ok(None)) => None,
            Ok(Err(e)) if strict => Some(format!("kill switch unreadable: {e}")),
            Err(_) if strict => Some("kill switch unreadable: timed out".into()),
            _ => None,
        }
    }

    /// Every policy's recorded active region (to notice routing changes).
    pub fn recorded_routing(&self) -> BTreeMap<String, String> {
        self.caches
            .policies
            .state()
            .iter()
            .filter_map(|p| {
                let a = p.data.get("status")?.get("activeRegion")?.as_str()?;
                Some((p.metadata.name.clone()?, a.to_string()))
            })
            .collect()
    }

    /// The verdict of every Region, as recorded in its status.
    pub fn recorded_verdicts(&self) -> BTreeMap<String, Verdict> {
        self.caches
            .regions
            .state()
            .iter()
            .filter_map(|o| {
                let v = o.data.get("status")?.get("verdict")?;
                Some((o.metadata.name.clone()?, serde_json::from_value(v.clone()).ok()?))
            })
            .collect()
    }
}
