//! Copies that must go: a live secret's copies in a region the tenant is no longer placed in (see
//! `rotate::Turn::retire`), and every copy of a secret dropped from `spec.secrets` or moved to another
//! `vaultPath` or `targetSecret` (`Tenant.status.retiringSecrets`).
//!
//! Nothing that might be the only copy of a value is destroyed: a region's Vault copy goes only when it
//! holds the home Vault's current or previous value at that path, and the home Vault's own copy always
//! stays (removing the source of truth is a person's decision). A target Secret goes only when it carries
//! this secret's label, with its UID as precondition. Every destructive call is made by the leader only.

use std::collections::BTreeMap;

use azora_adapters::vault::{SecretData, Vault, VaultError};
use azora_api::Time;
use azora_api::region::RegionSpec;
use azora_api::tenant::{RetiringSecret, SecretStatus, TenantSpec};
use azora_core::secrets as core;
use kube::api::DynamicObject;
use kube::runtime::events::EventType;
use tracing::info;

use super::{Room, sync};

/// The copies of one secret in one region that go.
pub(super) struct Copies<'a> {
    pub tenant: &'a str,
    /// The secret's name (its target Secrets carry it as a label).
    pub name: &'a str,
    /// The Vault path whose copy goes (`None`: the Vault copy stays).
    pub path: Option<&'a str>,
    /// The target Secret that goes (`None`: it stays).
    pub target: Option<&'a str>,
    /// The tenant's home region: its Vault copy never goes.
    pub home: &'a str,
    /// Another region whose Vault copy never goes (the home the copies were made from, when it changed).
    pub former_home: Option<&'a str>,
    /// The value at the path leaked: the copy goes whatever it holds (an older, leaked value included).
    pub revoked: bool,
}

/// What the home Vault holds at the path: its current version and that version's data (`None`: nothing
/// there, so no copy elsewhere counts as the home's).
pub(super) struct HomeValue<'a> {
    pub vault: &'a Vault,
    pub version: u64,
    pub data: Option<&'a SecretData>,
}

/// Removes `c` from `region`: the Vault copy (not in the home region; only a copy of the home's current or
/// previous value) and the target Secret. `Ok` once both are gone (or the region has neither); otherwise
/// why not, and nothing is claimed removed.
pub(super) async fn clean(
    room: &Room,
    c: &Copies<'_>,
    region: &str,
    spec: &RegionSpec,
    home: Option<&HomeValue<'_>>,
) -> Result<(), String> {
    if let Some(path) = c.path
        && region != c.home
        && Some(region) != c.former_home
        && spec.vault.is_some()
    {
        let v = room
            .vault(region, Some(spec))
            .await
            .map_err(|p| format!("vault: {}", p.message))?;
        let vault = |e: VaultError| format!("vault: {e}");
        // A Region pointed at the home's own Vault (same address and mount) holds no copy: that is the
        // home's key itself.
        let shared = home.is_some_and(|h| h.vault.address() == v.address() && h.vault.mount() == v.mount());
        let held = match v.meta(path).await.map_err(vault)? {
            None => None,
            Some(m) => v.read(path, m.current_version).await.map_err(vault)?,
        };
        if let Some(held) = held.filter(|_| !shared) {
            let strip = |d: &SecretData| {
                d.0.iter()
                    .filter(|(k, _)| !core::reserved(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<BTreeMap<String, String>>()
            };
            let same = |d: &SecretData| strip(d) == strip(&held);
            let known = match home {
                _ if c.revoked => true,
                None => {
                    return Err(format!(
                        "vault: the home region {}'s Vault cannot be read",
                        c.home
                    ));
                }
                Some(h) => {
                    h.data.is_some_and(same)
                        || (h.version > 1
                            && h.vault
                                .read(path, h.version - 1)
                                .await
                                .map_err(vault)?
                                .is_some_and(|p| same(&p)))
                }
            };
            drop(held);
            if !known {
                return Err(format!(
                    "its Vault holds a value the home region {} does not (a former home, or written \
                     there by hand): kept; remove {path} there by hand once it is not needed",
                    c.home
                ));
            }
            if room.ctx.fence.check().await.is_err() {
                return Err("not the leader: not removing".into());
            }
            if let Err(e) = v.destroy(path).await {
                room.note(region, &e).await;
                return Err(vault(e));
            }
        }
        if !shared {
            room.set_replica(&format!("{region}/{}/{}/{path}", v.address(), v.mount()), None);
        }
    }
    if let Some(target) = c.target
        && spec.cluster.is_some()
    {
        if room.ctx.fence.check().await.is_err() {
            return Err("not the leader: not removing".into());
        }
        sync::remove(room, c.tenant, c.name, target, region)
            .await
            .map_err(|e| format!("secret: {e}"))?;
    }
    Ok(())
}

/// The copies the spec stopped wanting since `before` was recorded: a secret gone from `spec.secrets`
/// (every copy), or moved to another `vaultPath` (the old path's copies) or `targetSecret` (the old
/// target Secrets), merged into `retiring`. The regions looked in are those recorded holding a copy and
/// those the tenant is placed in (`placed`: a copy written just before a crash may not be recorded yet).
/// A status recorded before paths were (no `vaultPath`) names nothing to find: left alone.
pub(super) fn newly_retiring(
    spec: &TenantSpec,
    before: &[SecretStatus],
    placed: &[String],
    retiring: &mut Vec<RetiringSecret>,
) {
    for b in before {
        if (b.regions.is_empty() && placed.is_empty())
            || (b.vault_path.is_empty() && b.target_secret.is_empty())
        {
            continue;
        }
        let now = spec.secrets.iter().find(|s| s.name == b.name);
        let moved =
            |old: &str, new: Option<&str>| (!old.is_empty() && new != Some(old)).then(|| old.to_string());
        let vault_path = moved(&b.vault_path, now.map(|s| s.vault_path.as_str()));
        let target_secret = moved(&b.target_secret, now.map(|s| s.target_secret.as_str()));
        // A leak not yet answered everywhere goes along with the old path's copies.
        let revoked = vault_path.is_some() && b.revocation.as_ref().is_some_and(|r| !r.regions.is_empty());
        if vault_path.is_none() && target_secret.is_none() {
            continue;
        }
        let mut regions: Vec<String> = b.regions.iter().map(|r| r.region.clone()).collect();
        for p in placed {
            if !regions.contains(p) {
                regions.push(p.clone());
            }
        }
        match retiring
            .iter_mut()
            .find(|e| e.name == b.name && e.vault_path == vault_path && e.target_secret == target_secret)
        {
            Some(e) => {
                for r in regions {
                    if !e.regions.contains(&r) {
                        e.regions.push(r);
                    }
                }
                e.revoked |= revoked;
            }
            None => retiring.push(RetiringSecret {
                name: b.name.clone(),
                vault_path,
                target_secret,
                regions,
                home_region: b.home_region.clone(),
                revoked,
                since: Time(jiff::Timestamp::now()),
                message: String::new(),
            }),
        }
    }
}

/// One pass over the retiring copies: each region cleaned is dropped from its entry, an entry with no
/// region left is dropped (Event `SecretRetired`); what holds a region back is in the entry's message.
/// A path or target that a secret of the spec uses (again) is not touched.
pub(super) async fn pass(
    room: &Room,
    obj: &DynamicObject,
    tenant: &str,
    spec: &TenantSpec,
    regions: &BTreeMap<String, RegionSpec>,
    live: &[SecretStatus],
    retiring: &mut Vec<RetiringSecret>,
) {
    let home = spec.home_region.as_str();
    let mut left = Vec::with_capacity(retiring.len());
    for mut e in std::mem::take(retiring) {
        let path = e
            .vault_path
            .as_deref()
            .filter(|p| !spec.secrets.iter().any(|s| s.vault_path == *p));
        let target = e
            .target_secret
            .as_deref()
            .filter(|t| !spec.secrets.iter().any(|s| s.target_secret == *t));
        if path.is_none() && target.is_none() {
            // Back in the spec (same path and target): nothing of it goes.
            info!(tenant = %tenant, secret = %e.name, "a retiring secret is wanted again: its copies stay");
            continue;
        }
        let former_home = Some(e.home_region.as_str()).filter(|h| !h.is_empty() && *h != home);
        let c = Copies {
            tenant,
            name: &e.name,
            path,
            target,
            home,
            former_home,
            revoked: e.revoked,
        };
        // A target Secret renamed: the old one goes from a region only once the new one holds the secret's
        // version there (its consumers are not left without either).
        let successor = live.iter().find(|l| l.name == e.name && l.version > 0);
        // The home's value at the path, read once for every region (only when a region's Vault copy may go).
        let needs_home = path.is_some() && e.regions.iter().any(|r| r != home);
        let mut home_problem = None;
        let mut home_vault = None;
        let mut home_data = None;
        let mut home_version = 0;
        if let Some(p) = path.filter(|_| needs_home) {
            match room.vault(home, regions.get(home)).await {
                Err(problem) => home_problem = Some(problem.message),
                Ok(v) => {
                    let read = async {
                        let Some(m) = v.meta(p).await? else {
                            return Ok::<_, VaultError>((0, None));
                        };
                        Ok((m.current_version, v.read(p, m.current_version).await?))
                    };
                    match read.await {
                        Ok((version, data)) => {
                            home_version = version;
                            home_data = data;
                            home_vault = Some(v);
                        }
                        Err(err) => {
                            room.note(home, &err).await;
                            home_problem = Some(err.to_string());
                        }
                    }
                }
            }
        }
        let home_value = home_vault.as_deref().map(|vault| HomeValue {
            vault,
            version: home_version,
            data: home_data.as_ref(),
        });
        let mut problems = Vec::new();
        let mut cleaned = Vec::new();
        for region in &e.regions {
            if target.is_some()
                && let Some(l) = successor
                && l.regions
                    .iter()
                    .any(|r| &r.region == region && r.synced_version != Some(l.version))
            {
                problems.push(format!(
                    "{region}: waiting for the target Secret {} to hold the secret there first",
                    l.target_secret
                ));
                continue;
            }
            // A leak not answered in a home Vault: only its newest version stays there.
            if e.revoked
                && let Some(p) = path
                && (region == home || Some(region.as_str()) == former_home)
                && let Some(rspec) = regions.get(region)
                && rspec.vault.is_some()
            {
                let revoked = async {
                    let v = room.vault(region, Some(rspec)).await.map_err(|p| p.message)?;
                    let current = v
                        .meta(p)
                        .await
                        .map_err(|e| e.to_string())?
                        .map_or(0, |m| m.current_version);
                    v.destroy_below(p, current).await.map_err(|e| e.to_string())
                };
                if let Err(why) = revoked.await {
                    problems.push(format!("{region}: vault: revoking the leaked versions: {why}"));
                    continue;
                }
            }
            let outcome = match regions.get(region) {
                // A region that no longer exists cannot be reached: nothing to remove there.
                None => Ok(()),
                Some(_) if region != home && path.is_some() && home_value.is_none() => Err(format!(
                    "vault: the home region {home}'s Vault: {}",
                    home_problem.as_deref().unwrap_or("not read")
                )),
                Some(rspec) => clean(room, &c, region, rspec, home_value.as_ref()).await,
            };
            match outcome {
                Ok(()) => cleaned.push(region.clone()),
                Err(why) => problems.push(format!("{region}: {why}")),
            }
        }
        drop(home_data);
        e.regions.retain(|r| !cleaned.contains(r));
        e.message = problems.join("; ");
        if e.regions.is_empty() {
            let what = describe(&e.name, path, target, home);
            info!(tenant = %tenant, secret = %e.name, "copies of a secret the spec no longer wants removed");
            azora_runtime::events::publish(
                &room.ctx,
                obj,
                EventType::Normal,
                "SecretRetired",
                &what,
                "Rotate",
            )
            .await;
        } else {
            left.push(e);
        }
    }
    *retiring = left;
}

/// The note of an entry's `SecretRetired` Event.
fn describe(name: &str, path: Option<&str>, target: Option<&str>, home: &str) -> String {
    let mut parts = Vec::new();
    if let Some(p) = path {
        parts.push(format!(
            "the Vault copies at {p} removed from every region but the home region {home}, whose Vault keeps \
             its copy (remove it there by hand once it is not needed)"
        ));
    }
    if let Some(t) = target {
        parts.push(format!("the target Secret {t} removed from every region"));
    }
    format!(
        "secret {name} is no longer wanted there by the spec: {}",
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use azora_api::tenant::SecretRegion;

    fn status(name: &str, path: &str, target: &str, regions: &[&str]) -> SecretStatus {
        SecretStatus {
            name: name.into(),
            vault_path: path.into(),
            target_secret: target.into(),
            regions: regions
                .iter()
                .map(|r| SecretRegion {
                    region: (*r).into(),
                    vault_version: Some(1),
                    synced_version: Some(1),
                    message: String::new(),
                })
                .collect(),
            ..SecretStatus::default()
        }
    }

    fn spec_with(secrets: &[(&str, &str, &str)]) -> TenantSpec {
        serde_json::from_value(serde_json::json!({
            "homeRegion": "africa",
            "secrets": secrets.iter().map(|(n, p, t)| serde_json::json!({
                "name": n, "vaultPath": p, "targetSecret": t,
                "generator": { "kind": "Characters", "length": 16 }
            })).collect::<Vec<_>>()
        }))
        .unwrap_or_else(|e| panic!("spec: {e}"))
    }

    #[test]
    fn a_secret_dropped_from_the_spec_retires_its_path_and_target_everywhere() {
        let before = [status("db", "tenants/acme/db", "db-creds", &["africa", "europe"])];
        let mut retiring = Vec::new();
        newly_retiring(&spec_with(&[]), &before, &["asia".into()], &mut retiring);
        assert_eq!(retiring.len(), 1);
        assert_eq!(retiring[0].vault_path.as_deref(), Some("tenants/acme/db"));
        assert_eq!(retiring[0].target_secret.as_deref(), Some("db-creds"));
        assert_eq!(retiring[0].regions, vec!["africa", "europe", "asia"]);
        // Seen again (the status write was lost): merged, not doubled.
        newly_retiring(&spec_with(&[]), &before, &["asia".into()], &mut retiring);
        assert_eq!(retiring.len(), 1);
    }

    #[test]
    fn a_moved_path_retires_only_the_old_path_and_an_unchanged_secret_nothing() {
        let before = [status("db", "tenants/acme/db", "db-creds", &["africa", "europe"])];
        let mut retiring = Vec::new();
        newly_retiring(
            &spec_with(&[("db", "tenants/acme/db2", "db-creds")]),
            &before,
            &[],
            &mut retiring,
        );
        assert_eq!(retiring.len(), 1);
        assert_eq!(retiring[0].vault_path.as_deref(), Some("tenants/acme/db"));
        assert_eq!(retiring[0].target_secret, None);
        let mut none = Vec::new();
        newly_retiring(
            &spec_with(&[("db", "tenants/acme/db", "db-creds")]),
            &before,
            &[],
            &mut none,
        );
        assert!(none.is_empty());
        // Copies written just before a crash, not yet recorded: the placed regions are looked in.
        let unrecorded = [status("db", "tenants/acme/db", "db-creds", &[])];
        newly_retiring(&spec_with(&[]), &unrecorded, &["africa".into()], &mut none);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].regions, vec!["africa"]);
        none.clear();
        // A status written before paths were recorded names nothing to find.
        newly_retiring(
            &spec_with(&[]),
            &[status("db", "", "", &["africa"])],
            &[],
            &mut none,
        );
        assert!(none.is_empty());
    }
}
