//! Publishing a policy's decided answers (IO): push to the DNS provider (the embedded zones, or an RFC 2136
//! update carrying the epoch as prerequisite), verify by resolving against the authoritative servers, and
//! record the timeline with a compare-and-swap on the epoch. Every call has a deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use azora_adapters::dns::rfc2136::{TsigKey, send_update};
use azora_adapters::dns::{DnsError, ZoneData, verify};
use azora_adapters::kube_status::StatusWriter;
use azora_api::failover::{DnsProviderType, FailoverPolicySpec, FailoverPolicyStatus, FailoverRecord};
use azora_api::region::RegionSpec;
use azora_api::{Condition, Time};
use azora_core::conditions::{self, Desired};
use azora_core::failover::cas_allows;
use azora_runtime::Context;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::EventType;
use serde_json::{Value, json};
use tracing::warn;

use super::decide::{API_DEADLINE, FailoverConfig, LOOKUP_DEADLINE, Owned, StepError};
use super::zone::zone_data;

pub(super) fn published_condition(status: &FailoverPolicyStatus) -> Desired {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "DnsPublished")
        .map(|c| Desired {
            type_: "DnsPublished",
            status: c.status,
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .unwrap_or_else(|| Desired::unknown("DnsPublished", "Pending", "no answers decided yet"))
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn publish_and_verify(
    ctx: &Context,
    cfg: &FailoverConfig,
    writer: &StatusWriter,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    name: &str,
    spec: &FailoverPolicySpec,
    regions: &BTreeMap<String, RegionSpec>,
    tsig: Option<&TsigKey>,
    owned: &mut Owned,
    previous_epoch: Option<u64>,
) -> Result<(), StepError> {
    let epoch = owned.status.epoch;
    let data = zone_data(spec, &owned.status.answers, regions, epoch);
    let published = push(cfg, spec, &data, tsig, previous_epoch).await;
    let dns_updated = Time::now();
    let outcome = match published {
        Ok(servers) => {
            let host = data.fqdns().into_iter().next().unwrap_or_default();
            verify::until_answers(&servers, &host, &data.default_ipv4(), Duration::from_secs(5))
                .await
                .map(|_| servers)
        }
        Err(e) => Err(e),
    };
    let verified = Time::now();
    match outcome {
        Ok(servers) => {
            // The timeline is measured once: a resync (RFC 2136 re-asserts its answers every 30 s) or a
            // resumed write of an already verified epoch keeps its times, phases and Event.
            let first = owned
                .status
                .last_failover
                .as_ref()
                .is_some_and(|r| r.epoch == epoch && r.verified_time.is_none());
            if let Some(r) = owned
                .status
                .last_failover
                .as_mut()
                .filter(|r| first && r.epoch == epoch)
            {
                r.dns_updated_time.get_or_insert(dns_updated);
                r.verified_time = Some(verified);
                let start = r.detected_time.or(r.decided_time).unwrap_or(verified);
                let total = verified.0.duration_since(start.0).unsigned_abs();
                r.total_ms = Some(u64::try_from(total.as_millis()).unwrap_or(u64::MAX));
                observe_phases(ctx, r, total);
            }
            owned.published = Desired::ok(
                "DnsPublished",
                "Verified",
                format!(
                    "epoch {epoch} answered by {}",
                    servers
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            write(writer, api, obj, name, epoch, owned).await?;
            if let Some(r) = owned.status.last_failover.as_ref().filter(|_| first) {
                let note = format!(
                    "epoch {epoch}: {} answered; total {} ms",
                    r.to.as_deref().unwrap_or("none"),
                    r.total_ms.unwrap_or_default()
                );
                azora_runtime::events::publish(
                    ctx,
                    obj,
                    EventType::Normal,
                    "FailoverVerified",
                    &note,
                    "Failover",
                )
                .await;
            }
            Ok(())
        }
        Err(e) => {
            let reason = match e {
                DnsError::StaleEpoch { .. } => "StaleEpoch",
                DnsError::Refused(_) => "UpdateRefused",
                DnsError::Transport(_) => "NotVerified",
                DnsError::Config(_) => "ProviderMisconfigured",
            };
            warn!(policy = %name, epoch, error = &e as &dyn std::error::Error, "DNS publish or verify failed");
            owned.published = Desired::fail("DnsPublished", reason, e.to_string());
            write(writer, api, obj, name, epoch, owned).await?;
            azora_runtime::events::publish(ctx, obj, EventType::Warning, reason, &e.to_string(), "Failover")
                .await;
            Ok(())
        }
    }
}

/// Publishes to the provider; returns the servers to verify against.
async fn push(
    cfg: &FailoverConfig,
    spec: &FailoverPolicySpec,
    data: &ZoneData,
    tsig: Option<&TsigKey>,
    previous_epoch: Option<u64>,
) -> Result<Vec<SocketAddr>, DnsError> {
    match (spec.provider.type_, &spec.provider.rfc2136, tsig) {
        (DnsProviderType::RFC2136, Some(r), Some(key)) => {
            let mut servers = Vec::new();
            for s in &r.servers {
                let addr = tokio::time::timeout(LOOKUP_DEADLINE, tokio::net::lookup_host(s))
                    .await
                    .map_err(|_| DnsError::Transport(format!("server {s}: name lookup timed out")))?
                    .map_err(|e| DnsError::Config(format!("server {s}: {e}")))?
                    .next()
                    .ok_or_else(|| DnsError::Config(format!("server {s}: no address")))?;
                servers.push(addr);
            }
            let primary = *servers
                .first()
                .ok_or_else(|| DnsError::Config("no RFC 2136 server".into()))?;
            match send_update(primary, key, data, previous_epoch, Duration::from_secs(3)).await {
                Ok(()) => {}
                // Already applied before an interruption: the server holds exactly our epoch.
                Err(DnsError::StaleEpoch { .. })
                    if verify::epoch_of(primary, &data.zone, Duration::from_secs(1)).await?
                        == Some(data.epoch) => {}
                Err(e) => return Err(e),
            }
            Ok(servers)
        }
        (DnsProviderType::RFC2136, _, _) => {
            Err(DnsError::Config("RFC2136 settings or TSIG key missing".into()))
        }
        (DnsProviderType::Embedded, _, _) => {
            match cfg.zones.publish(data.clone()) {
                Ok(_) | Err(DnsError::StaleEpoch { .. }) => {}
                Err(e) => return Err(e),
            }
            Ok(cfg.verify_servers.clone())
        }
    }
}

fn observe_phases(ctx: &Context, r: &FailoverRecord, total: Duration) {
    let secs = |a: Option<Time>, b: Option<Time>| match (a, b) {
        (Some(a), Some(b)) => Some(b.0.duration_since(a.0).as_secs_f64().max(0.0)),
        _ => None,
    };
    for (phase, v) in [
        ("detect_to_decide", secs(r.detected_time, r.decided_time)),
        ("decide_to_dns", secs(r.decided_time, r.dns_updated_time)),
        ("dns_to_verified", secs(r.dns_updated_time, r.verified_time)),
        ("total", Some(total.as_secs_f64())),
    ] {
        if let Some(v) = v {
            ctx.metrics.failover_phase.with_label_values(&[phase]).observe(v);
        }
    }
}

/// Compare-and-swap write: refused unless the stored epoch is exactly `expected` (the epoch a decision was
/// planned from, or the epoch whose progress is being recorded).
pub(super) async fn write(
    writer: &StatusWriter,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    name: &str,
    expected: u64,
    owned: &Owned,
) -> Result<(), StepError> {
    let fresh = tokio::time::timeout(API_DEADLINE, api.get(name))
        .await
        .map_err(|_| StepError::Deadline)??;
    let found = fresh
        .data
        .get("status")
        .and_then(|s| s.get("epoch"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if !cas_allows(found, expected) {
        return Err(StepError::EpochMoved { expected, found });
    }
    let current: Vec<Condition> = fresh
        .data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let merged = conditions::merge(
        &current,
        std::slice::from_ref(&owned.published),
        obj.metadata.generation,
        Time::now(),
    );
    let cond: Vec<&Condition> = merged.iter().filter(|c| c.type_ == "DnsPublished").collect();
    let s = &owned.status;
    let mut body = json!({
        "epoch": s.epoch,
        "activeRegions": s.active_regions,
        "answers": s.answers,
        "history": s.history,
        "conditions": cond,
    });
    if let Some(a) = &s.active_region {
        body["activeRegion"] = json!(a);
    }
    if let Some(l) = &s.last_failover {
        body["lastFailover"] = json!(l);
    }
    writer
        .apply(name, fresh.metadata.resource_version.as_deref(), body)
        .await?;
    Ok(())
}
