//! DNS serving on every replica (IO): watches FailoverPolicies and Regions and keeps the embedded server's
//! zones equal to what the leader decided (status answers at status epoch). Older epochs are refused by
//! the zone store, so a late or replayed status never rolls answers back.

use std::collections::{BTreeMap, BTreeSet};

use azora_adapters::dns::DnsError;
use azora_adapters::dns::embedded::Zones;
use azora_api::failover::{DnsProviderType, FailoverPolicySpec, FailoverPolicyStatus};
use azora_api::region::RegionSpec;
use azora_runtime::cache::KindCache;
use tokio::sync::watch;
use tracing::{info, warn};

use super::zone::zone_data;

/// Keeps `zones` in line with the policies' decided answers until `shutdown`.
pub async fn run(zones: Zones, policies: KindCache, regions: KindCache, mut shutdown: watch::Receiver<bool>) {
    let mut served: BTreeSet<String> = BTreeSet::new();
    let mut policy_changes = policies.changed();
    let mut region_changes = regions.changed();
    loop {
        let region_specs: BTreeMap<String, RegionSpec> = regions.specs();
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
        // React to the leader's decisions as the watch delivers them, not on a poll.
        tokio::select! {
            r = policy_changes.changed() => if r.is_err() { break },
            r = region_changes.changed() => if r.is_err() { break },
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
}
