//! DNS serving on every replica (IO): watches FailoverPolicies and Regions and keeps the embedded server's
//! zones equal to what the leader decided (status answers at status epoch). Older epochs are refused by
//! the zone store, so a late or replayed status never rolls answers back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use azora_adapters::dns::DnsError;
use azora_adapters::dns::embedded::Zones;
use azora_api::failover::{DnsProviderType, FailoverPolicySpec, FailoverPolicyStatus};
use azora_api::region::RegionSpec;
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::kinds::{FailoverPolicyKind, Kind, RegionKind};
use crate::zone::zone_data;

fn store_of(
    client: &kube::Client,
    ar: &kube::core::ApiResource,
) -> (Store<DynamicObject>, tokio::task::JoinHandle<()>) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let w = reflector::store::Writer::new(ar.clone());
    let store = w.as_reader();
    let h = tokio::spawn(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(w)
            .applied_objects()
            .for_each(|_| async {}),
    );
    (store, h)
}

/// Specs of every object in a store, by name (malformed ones skipped).
pub fn specs<S: serde::de::DeserializeOwned>(store: &Store<DynamicObject>) -> BTreeMap<String, S> {
    store
        .state()
        .iter()
        .filter_map(|o| {
            Some((
                o.metadata.name.clone()?,
                serde_json::from_value(o.data.get("spec")?.clone()).ok()?,
            ))
        })
        .collect()
}

/// Keeps `zones` in line with the policies' decided answers until `shutdown`.
pub async fn run(client: kube::Client, zones: Zones, mut shutdown: watch::Receiver<bool>) {
    let (policies, h1) = store_of(&client, &FailoverPolicyKind::resource());
    let (regions, h2) = store_of(&client, &RegionKind::resource());
    let mut served: BTreeSet<String> = BTreeSet::new();
    loop {
        let region_specs: BTreeMap<String, RegionSpec> = specs(&regions);
        let mut now_served = BTreeSet::new();
        for obj in policies.state() {
            let Some(spec) = obj
                .data
                .get("spec")
                .and_then(|s| serde_json::from_value::<FailoverPolicySpec>(s.clone()).ok())
            else {
                continue;
            };
            if spec.provider.type_ != DnsProviderType::Embedded {
                continue;
            }
            let status: FailoverPolicyStatus = obj
                .data
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default();
            if status.answers.is_empty() {
                continue;
            }
            let data = zone_data(&spec, &status.answers, &region_specs, status.epoch);
            now_served.insert(data.zone.clone());
            match zones.publish(data) {
                Ok(true) => info!(zone = %spec.zone, epoch = status.epoch, "serving new answers"),
                Ok(false) => {}
                Err(DnsError::StaleEpoch { .. }) => {}
                Err(e) => warn!(error = &e as &dyn std::error::Error, "could not publish zone"),
            }
        }
        for gone in served.difference(&now_served) {
            zones.remove(gone);
        }
        served = now_served;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    h1.abort();
    h2.abort();
}
