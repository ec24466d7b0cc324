//! Test fixtures that read like the domain: `tenant("europe", &["africa"]).continents(&[Europe])`, and a
//! world holding the four platform regions. Compiled only for tests.

use azora_api::Continent;
use azora_api::tenant::{Residency, TenantSpec};

use crate::world::{RegionFacts, World};

/// A tenant spec under construction.
pub struct TenantFixture {
    /// The spec built so far.
    pub spec: TenantSpec,
}

/// A tenant living in `home`, failing over to `failover` in order.
pub fn tenant(home: &str, failover: &[&str]) -> TenantFixture {
    let spec: TenantSpec = serde_json::from_value(serde_json::json!({
        "homeRegion": home,
        "failoverRegions": failover,
    }))
    .expect("fixture spec");
    TenantFixture { spec }
}

impl TenantFixture {
    /// Restricts residency to these continents.
    pub fn continents(mut self, c: &[Continent]) -> Self {
        self.spec
            .residency
            .get_or_insert_with(Residency::default)
            .allowed_continents = c.to_vec();
        self
    }

    /// Restricts residency to these regions.
    pub fn regions(mut self, r: &[&str]) -> Self {
        self.spec
            .residency
            .get_or_insert_with(Residency::default)
            .allowed_regions = r.iter().map(ToString::to_string).collect();
        self
    }
}

/// The four platform regions: africa (10), europe (20), asia (30), americas (40).
pub fn world() -> World {
    let mut w = World::default();
    for (name, continent, priority) in [
        ("africa", Continent::Africa, 10),
        ("europe", Continent::Europe, 20),
        ("asia", Continent::Asia, 30),
        ("americas", Continent::SouthAmerica, 40),
    ] {
        w.regions.insert(
            name.to_string(),
            RegionFacts {
                continent,
                cordoned: false,
                priority,
                has_object_store: true,
            },
        );
    }
    w
}
