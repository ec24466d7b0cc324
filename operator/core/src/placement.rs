//! Tenant placement: the regions a tenant lives in — its home region and failover regions, in order, minus
//! those its residency forbids or that do not exist. Pure, no IO.

use azora_api::tenant::TenantSpec;

use crate::world::World;

/// Why a listed region is not placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excluded {
    /// The region.
    pub region: String,
    /// Why.
    pub message: String,
}

/// Placement of one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Home region first, then failover regions in order.
    pub placed: Vec<String>,
    /// Listed regions left out, with the reason.
    pub excluded: Vec<Excluded>,
}

/// Whether the tenant's residency allows `region` (whose continent comes from the world).
pub fn residency_allows(spec: &TenantSpec, world: &World, region: &str) -> Result<(), String> {
    let Some(facts) = world.regions.get(region) else {
        return Err(format!("region {region} does not exist"));
    };
    if let Some(res) = &spec.residency {
        if !res.allowed_regions.is_empty() && !res.allowed_regions.iter().any(|r| r == region) {
            return Err(format!(
                "residency allows only regions {}",
                res.allowed_regions.join(", ")
            ));
        }
        if !res.allowed_continents.is_empty() && !res.allowed_continents.contains(&facts.continent) {
            let allowed: Vec<String> = res.allowed_continents.iter().map(ToString::to_string).collect();
            return Err(format!(
                "region {region} is in {}; residency allows only {}",
                facts.continent,
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

/// Computes where a tenant lives. The home region comes first when allowed; callers treat a home region
/// that is not placed as an invalid tenant.
pub fn place(spec: &TenantSpec, world: &World) -> Placement {
    let mut out = Placement::default();
    let listed = std::iter::once(&spec.home_region).chain(spec.failover_regions.iter());
    for region in listed {
        if out.placed.contains(region) {
            continue;
        }
        match residency_allows(spec, world, region) {
            Ok(()) => out.placed.push(region.clone()),
            Err(message) => out.excluded.push(Excluded {
                region: region.clone(),
                message,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{tenant, world};
    use azora_api::Continent;

    #[test]
    fn failover_skips_regions_outside_tenant_residency() {
        let w = world();
        let t = tenant("europe", &["asia", "africa", "americas"])
            .continents(&[Continent::Europe, Continent::Africa]);
        let p = place(&t.spec, &w);
        assert_eq!(p.placed, vec!["europe", "africa"]);
        let excluded: Vec<&str> = p.excluded.iter().map(|e| e.region.as_str()).collect();
        assert_eq!(excluded, vec!["asia", "americas"]);
        assert!(
            p.excluded[0].message.contains("Asia"),
            "{}",
            p.excluded[0].message
        );
    }

    #[test]
    fn allowed_region_list_restricts_by_name() {
        let w = world();
        let t = tenant("europe", &["africa", "asia"]).regions(&["europe", "asia"]);
        assert_eq!(place(&t.spec, &w).placed, vec!["europe", "asia"]);
    }

    #[test]
    fn unknown_regions_are_excluded_not_placed() {
        let w = world();
        let t = tenant("europe", &["atlantis"]);
        let p = place(&t.spec, &w);
        assert_eq!(p.placed, vec!["europe"]);
        assert_eq!(p.excluded[0].message, "region atlantis does not exist");
    }

    #[test]
    fn home_region_forbidden_by_residency_is_not_placed() {
        let w = world();
        let t = tenant("asia", &["europe"]).continents(&[Continent::Europe]);
        let p = place(&t.spec, &w);
        assert_eq!(p.placed, vec!["europe"]);
        assert_eq!(p.excluded[0].region, "asia");
    }
}
