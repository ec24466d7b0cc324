//! Building what DNS serves from a FailoverPolicy's decided answers and the Regions' addresses. Pure.

use std::collections::BTreeMap;

use azora_adapters::dns::{Target, ZoneData};
use azora_api::failover::{FailoverPolicySpec, GeoAnswer};
use azora_api::region::RegionSpec;

/// Zone data for a policy at an epoch.
pub fn zone_data(
    spec: &FailoverPolicySpec,
    answers: &[GeoAnswer],
    regions: &BTreeMap<String, RegionSpec>,
    epoch: u64,
) -> ZoneData {
    let weight = |r: &str| spec.regions.iter().find(|p| p.name == r).map_or(1, |p| p.weight);
    let answers = answers
        .iter()
        .map(|a| {
            let targets = a
                .regions
                .iter()
                .filter_map(|r| {
                    regions.get(r).map(|spec_r| Target {
                        region: r.clone(),
                        ipv4: spec_r.dns.ipv4.clone(),
                        ipv6: spec_r.dns.ipv6.clone(),
                        weight: weight(r),
                    })
                })
                .collect();
            (a.geo.clone(), targets)
        })
        .collect();
    ZoneData {
        zone: spec.zone.to_ascii_lowercase(),
        hostnames: spec.hostnames.clone(),
        ttl: spec.ttl,
        epoch,
        answers,
    }
}

/// Answers as a map geo → regions.
pub fn answers_map(answers: &[GeoAnswer]) -> BTreeMap<String, Vec<String>> {
    answers
        .iter()
        .map(|a| (a.geo.clone(), a.regions.clone()))
        .collect()
}

/// A map geo → regions as status answers.
pub fn answers_list(map: &BTreeMap<String, Vec<String>>) -> Vec<GeoAnswer> {
    map.iter()
        .map(|(g, r)| GeoAnswer {
            geo: g.clone(),
            regions: r.clone(),
        })
        .collect()
}
