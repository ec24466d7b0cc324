//! Validation of every kind against the rules the schema cannot express (or that API servers older than 1.25
//! ignore: CEL), and resolution of references against the known world. Each finding is a `Problem` with a
//! fixed reason; `conditions` turns findings into `SpecValid`, `ReferencesResolved` and `Ready`. Pure, no IO.

use std::collections::BTreeSet;
use std::time::Duration;

use azora_api::backup::{BackupScheduleSpec, BackupSpec, RestoreSpec};
use azora_api::chaos::{ChaosExperimentSpec, DrDrillSpec, FaultType};
use azora_api::database::{DatabaseSpec, Engine, ReplicationMode};
use azora_api::failover::{DnsProviderType, FailbackMode, FailoverPolicySpec, Strategy};
use azora_api::region::{ProbeType, RegionSpec};
use azora_api::tenant::TenantSpec;

use crate::conditions::{Desired, types};
use crate::duration::{parse_cron, parse_duration};
use crate::placement::{place, residency_allows};
use crate::world::World;

/// Whether a problem is in the spec itself or in what it refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The spec is wrong; it will not fix itself.
    Invalid,
    /// A referenced object is missing; creating it fixes the problem.
    Unresolved,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Invalid or unresolved.
    pub kind: ProblemKind,
    /// CamelCase reason, used as the condition reason.
    pub reason: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
}

#[derive(Default)]
struct Findings(Vec<Problem>);

impl Findings {
    fn invalid(&mut self, reason: &'static str, message: impl Into<String>) {
        self.0.push(Problem {
            kind: ProblemKind::Invalid,
            reason,
            message: message.into(),
        });
    }
    fn unresolved(&mut self, reason: &'static str, message: impl Into<String>) {
        self.0.push(Problem {
            kind: ProblemKind::Unresolved,
            reason,
            message: message.into(),
        });
    }
    fn duration(&mut self, field: &str, value: &str) -> Option<Duration> {
        match parse_duration(value) {
            Ok(d) => Some(d),
            Err(e) => {
                self.invalid("InvalidDuration", format!("{field}: {e}"));
                None
            }
        }
    }
    fn cron(&mut self, field: &str, value: &str) {
        if let Err(e) = parse_cron(value) {
            self.invalid("InvalidSchedule", format!("{field}: {e}"));
        }
    }
    fn region(&mut self, world: &World, field: &str, name: &str) {
        if !world.regions.contains_key(name) {
            self.unresolved("RegionNotFound", format!("{field}: region {name} does not exist"));
        }
    }
    fn secret_key(&mut self, world: &World, field: &str, name: &str, key: &str) {
        if !world.secrets.contains_key(name) {
            self.unresolved("SecretNotFound", format!("{field}: secret {name} does not exist"));
        } else if !world.has_secret_key(name, key) {
            self.unresolved(
                "SecretKeyNotFound",
                format!("{field}: secret {name} has no key {key}"),
            );
        }
    }
}

fn host_port_ok(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn unique<'a>(items: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = BTreeSet::new();
    items.into_iter().find(|i| !seen.insert(*i))
}

/// Checks a Database: members (one per region, existing regions, inside the tenant's residency, reachable
/// addresses, credentials Secrets with `username` and `password`, and `ca.crt` under `tls.mode: VerifyFull`),
/// the replication rule and the followed policy (`policies`: the FailoverPolicies that exist).
pub fn database(
    spec: &DatabaseSpec,
    world: &World,
    policies: &std::collections::BTreeMap<String, FailoverPolicySpec>,
) -> Vec<Problem> {
    let mut f = Findings::default();
    if let Some(dup) = unique(spec.members.iter().map(|m| m.region.as_str())) {
        f.invalid("InvalidMembers", format!("members: region {dup} has two members"));
    }
    if spec.members.is_empty() {
        f.invalid("InvalidMembers", "members: at least one member is needed");
    }
    if spec.engine == Engine::Redis && spec.replication.mode == ReplicationMode::Synchronous {
        f.invalid(
            "InvalidReplication",
            "replication.mode: Redis replicates asynchronously; set Asynchronous",
        );
    }
    let synchronous = spec.members.iter().filter(|m| m.synchronous).count();
    if spec.replication.mode == ReplicationMode::Synchronous
        && spec.replication.sync_standbys as usize >= synchronous
    {
        f.invalid(
            "InvalidReplication",
            format!(
                "replication.syncStandbys ({}) must be smaller than the number of synchronous members ({synchronous})",
                spec.replication.sync_standbys,
            ),
        );
    }
    f.duration(
        "replication.maxLagForPromotion",
        &spec.replication.max_lag_for_promotion,
    );
    let tenant = match &spec.tenant {
        Some(t) => match world.tenants.get(t) {
            Some(ts) => Some(ts),
            None => {
                f.unresolved("TenantNotFound", format!("tenant: tenant {t} does not exist"));
                None
            }
        },
        None => None,
    };
    for (i, m) in spec.members.iter().enumerate() {
        let field = format!("members[{i}]");
        if !host_port_ok(&m.endpoint) {
            f.invalid(
                "InvalidMembers",
                format!("{field}.endpoint: {} is not host:port", m.endpoint),
            );
        }
        if !world.regions.contains_key(&m.region) {
            f.unresolved(
                "RegionNotFound",
                format!("{field}.region: region {} does not exist", m.region),
            );
        } else if let Some(ts) = tenant
            && let Err(why) = residency_allows(ts, world, &m.region)
        {
            f.invalid(
                "ResidencyViolation",
                format!(
                    "{field}: region {} is outside the tenant's residency: {why}",
                    m.region
                ),
            );
        }
        f.secret_key(
            world,
            &format!("{field}.credentials"),
            &m.credentials.name,
            "username",
        );
        if world.secrets.contains_key(&m.credentials.name) {
            f.secret_key(
                world,
                &format!("{field}.credentials"),
                &m.credentials.name,
                "password",
            );
            // VerifyFull checks every member's certificate against the CA kept beside its credentials.
            if spec
                .tls
                .as_ref()
                .is_some_and(|t| t.mode == azora_api::database::TlsMode::VerifyFull)
            {
                f.secret_key(
                    world,
                    &format!("{field}.credentials"),
                    &m.credentials.name,
                    "ca.crt",
                );
            }
        }
    }
    if let Some(p) = &spec.follow_policy {
        match policies.get(p) {
            None => f.unresolved(
                "PolicyNotFound",
                format!("followPolicy: FailoverPolicy {p} does not exist"),
            ),
            // A policy that lists its regions must list a member's: the primary could never follow it.
            Some(ps) if !ps.regions.is_empty() => {
                let listed: BTreeSet<&str> = ps.regions.iter().map(|r| r.name.as_str()).collect();
                if !spec.members.iter().any(|m| listed.contains(m.region.as_str())) {
                    f.invalid(
                        "PolicyMismatch",
                        format!("followPolicy: FailoverPolicy {p} lists none of the members' regions"),
                    );
                }
            }
            Some(_) => {}
        }
    }
    f.0
}

/// Checks a Region.
pub fn region(spec: &RegionSpec, world: &World) -> Vec<Problem> {
    let mut f = Findings::default();
    let interval = f.duration("probes.interval", &spec.probes.interval);
    let timeout = f.duration("probes.timeout", &spec.probes.timeout);
    if let (Some(i), Some(t)) = (interval, timeout) {
        if i < Duration::from_secs(1) {
            f.invalid("InvalidProbes", "probes.interval must be at least 1s");
        }
        if t.is_zero() || t >= i {
            f.invalid(
                "InvalidProbes",
                "probes.timeout must be above 0 and below probes.interval",
            );
        }
    }
    if let Some(dup) = unique(spec.probes.endpoints.iter().map(|e| e.name.as_str())) {
        f.invalid(
            "InvalidProbes",
            format!("probes.endpoints: name {dup} is used twice"),
        );
    }
    for (i, e) in spec.probes.endpoints.iter().enumerate() {
        let field = format!("probes.endpoints[{i}]");
        match e.type_ {
            ProbeType::HTTP | ProbeType::HTTPS => {
                let scheme = if e.type_ == ProbeType::HTTP {
                    "http://"
                } else {
                    "https://"
                };
                if !e
                    .url
                    .as_deref()
                    .is_some_and(|u| u.starts_with(scheme) && u.len() > scheme.len())
                {
                    f.invalid(
                        "InvalidProbes",
                        format!("{field}: a {} probe needs a {scheme} url", e.type_),
                    );
                }
            }
            ProbeType::TCP | ProbeType::DNS => {
                if !e.address.as_deref().is_some_and(host_port_ok) {
                    f.invalid(
                        "InvalidProbes",
                        format!("{field}: a {} probe needs address host:port", e.type_),
                    );
                }
                if e.type_ == ProbeType::DNS && e.query.as_deref().is_none_or(str::is_empty) {
                    f.invalid("InvalidProbes", format!("{field}: a DNS probe needs query"));
                }
            }
        }
    }
    if spec.dns.ipv4.is_empty() && spec.dns.ipv6.is_empty() {
        f.invalid("InvalidDns", "dns needs at least one ipv4 or ipv6 address");
    }
    if let Some(c) = &spec.cluster {
        f.secret_key(
            world,
            "cluster.kubeconfigSecret",
            &c.kubeconfig_secret.name,
            &c.kubeconfig_secret.key,
        );
    }
    if let Some(s) = &spec.object_store
        && let Some(creds) = &s.credentials_secret
    {
        f.secret_key(world, "objectStore.credentialsSecret", &creds.name, "accessKeyId");
        f.secret_key(
            world,
            "objectStore.credentialsSecret",
            &creds.name,
            "secretAccessKey",
        );
    }
    if let Some(v) = &spec.vault {
        match (&v.kubernetes_auth, &v.token_secret) {
            (Some(_), None) => {}
            (None, Some(t)) => f.secret_key(world, "vault.tokenSecret", &t.name, &t.key),
            _ => f.invalid(
                "InvalidVault",
                "vault: set exactly one of kubernetesAuth and tokenSecret",
            ),
        }
    }
    f.0
}

/// Checks a Tenant.
pub fn tenant(spec: &TenantSpec, world: &World) -> Vec<Problem> {
    let mut f = Findings::default();
    if spec.failover_regions.contains(&spec.home_region) {
        f.invalid(
            "InvalidPlacement",
            "homeRegion must not also be listed in failoverRegions",
        );
    }
    if let Some(dup) = unique(spec.failover_regions.iter().map(String::as_str)) {
        f.invalid(
            "InvalidPlacement",
            format!("failoverRegions: region {dup} is listed twice"),
        );
    }
    if let Some(dup) = unique(spec.secrets.iter().map(|s| s.name.as_str())) {
        f.invalid("InvalidSecrets", format!("secrets: name {dup} is used twice"));
    }
    for s in &spec.secrets {
        let every = f.duration(&format!("secrets[{}].rotateEvery", s.name), &s.rotate_every);
        let grace = f.duration(&format!("secrets[{}].gracePeriod", s.name), &s.grace_period);
        if let (Some(e), Some(g)) = (every, grace)
            && (e < Duration::from_secs(3600) || g >= e)
        {
            f.invalid(
                "InvalidSecrets",
                format!(
                    "secrets[{}]: rotateEvery must be at least 1h and above gracePeriod",
                    s.name
                ),
            );
        }
    }
    if !world.regions.contains_key(&spec.home_region) {
        f.unresolved(
            "RegionNotFound",
            format!("homeRegion: region {} does not exist", spec.home_region),
        );
    } else if let Err(why) = residency_allows(spec, world, &spec.home_region) {
        f.invalid(
            "ResidencyViolation",
            format!(
                "homeRegion {} breaks the tenant's residency: {why}",
                spec.home_region
            ),
        );
    }
    for r in &spec.failover_regions {
        f.region(world, "failoverRegions", r);
    }
    f.0
}

/// Checks a FailoverPolicy.
pub fn failover_policy(spec: &FailoverPolicySpec, world: &World) -> Vec<Problem> {
    let mut f = Findings::default();
    f.duration("decisionDeadline", &spec.decision_deadline);
    f.duration("failback.holdDown", &spec.failback.hold_down);
    if let Some(dup) = unique(spec.regions.iter().map(|r| r.name.as_str())) {
        f.invalid("InvalidRegions", format!("regions: region {dup} is listed twice"));
    }
    if let Some(dup) = unique(spec.hostnames.iter().map(String::as_str)) {
        f.invalid("InvalidHostnames", format!("hostnames: {dup} is listed twice"));
    }
    if spec.strategy == Strategy::Weighted && !spec.regions.iter().any(|r| r.weight > 0) {
        f.invalid(
            "InvalidRegions",
            "the Weighted strategy needs regions with a weight above 0",
        );
    }
    match (spec.provider.type_, &spec.provider.rfc2136) {
        (DnsProviderType::RFC2136, None) => {
            f.invalid("InvalidProvider", "provider.type RFC2136 needs provider.rfc2136");
        }
        (DnsProviderType::RFC2136, Some(r)) => {
            for s in &r.servers {
                if !host_port_ok(s) {
                    f.invalid(
                        "InvalidProvider",
                        format!("provider.rfc2136.servers: {s} is not host:port"),
                    );
                }
            }
            f.secret_key(
                world,
                "provider.rfc2136.tsigSecret",
                &r.tsig_secret.name,
                &r.tsig_secret.key,
            );
        }
        (DnsProviderType::Embedded, _) => {}
    }
    for r in &spec.regions {
        f.region(world, "regions", &r.name);
    }
    if spec.failback.mode == FailbackMode::Manual
        && let Some(a) = &spec.failback.approved_region
    {
        f.region(world, "failback.approvedRegion", a);
    }
    if let Some(t) = &spec.tenant {
        match world.tenants.get(t) {
            None => f.unresolved("TenantNotFound", format!("tenant: tenant {t} does not exist")),
            Some(tenant) => {
                let placed = place(tenant, world).placed;
                let candidates: Vec<&str> = if spec.regions.is_empty() {
                    world.regions.keys().map(String::as_str).collect()
                } else {
                    spec.regions.iter().map(|r| r.name.as_str()).collect()
                };
                if !candidates.iter().any(|c| placed.iter().any(|p| p == c)) {
                    f.invalid(
                        "ResidencyViolation",
                        format!(
                            "no candidate region is allowed for tenant {t} (placed in {})",
                            placed.join(", ")
                        ),
                    );
                }
            }
        }
    }
    f.0
}

/// Checks a BackupSchedule.
pub fn backup_schedule(spec: &BackupScheduleSpec, world: &World) -> Vec<Problem> {
    let mut f = Findings::default();
    if let Some(k) = &spec.encryption_key {
        f.secret_key(world, "encryptionKey", &k.name, &k.key);
    }
    let every = f.duration("every", &spec.every);
    let keep = f.duration("retention.keepFor", &spec.retention.keep_for);
    if let Some(e) = every
        && e < Duration::from_secs(30)
    {
        f.invalid("InvalidSchedule", "every must be at least 30s");
    }
    if let (Some(e), Some(k)) = (every, keep)
        && k <= e
    {
        f.invalid("InvalidRetention", "retention.keepFor must be longer than every");
    }
    if let Some(t) = &spec.test_restore {
        if let Some(e) = f.duration("testRestore.every", &t.every)
            && e < Duration::from_secs(30)
        {
            f.invalid("InvalidSchedule", "testRestore.every must be at least 30s");
        }
        if let Some(r) = &t.region {
            f.region(world, "testRestore.region", r);
        }
    }
    f.0
}

/// Checks a Backup.
pub fn backup(spec: &BackupSpec, world: &World) -> Vec<Problem> {
    let mut f = Findings::default();
    if let Some(k) = &spec.encryption_key {
        f.secret_key(world, "encryptionKey", &k.name, &k.key);
    }
    match world.tenants.get(&spec.tenant) {
        None => f.unresolved(
            "TenantNotFound",
            format!("tenant: tenant {} does not exist", spec.tenant),
        ),
        Some(t) => match world.regions.get(&t.home_region) {
            Some(home) if !home.has_object_store => f.unresolved(
                "ObjectStoreMissing",
                format!(
                    "tenant {}'s home region {} has no objectStore",
                    spec.tenant, t.home_region
                ),
            ),
            Some(_) => {}
            None => f.region(world, "tenant homeRegion", &t.home_region),
        },
    }
    f.0
}

/// Checks a Restore.
pub fn restore(spec: &RestoreSpec, world: &World) -> Vec<Problem> {
    let mut f = Findings::default();
    if let Some(ns) = &spec.target_namespace
        && ns.starts_with("tenant-")
    {
        f.invalid(
            "InvalidTargetNamespace",
            format!("targetNamespace {ns}: tenant-* namespaces belong to tenants; leave it out to restore into the tenant's own"),
        );
    }
    f.region(world, "targetRegion", &spec.target_region);
    match world.backups.get(&spec.backup) {
        None => f.unresolved(
            "BackupNotFound",
            format!("backup: backup {} does not exist", spec.backup),
        ),
        Some(tenant_name) => match world.tenants.get(tenant_name) {
            None => f.unresolved(
                "TenantNotFound",
                format!("backup's tenant {tenant_name} does not exist"),
            ),
            Some(t) => {
                if world.regions.contains_key(&spec.target_region)
                    && let Err(why) = residency_allows(t, world, &spec.target_region)
                {
                    f.invalid(
                        "ResidencyViolation",
                        format!(
                            "targetRegion {} is not allowed for tenant {tenant_name}: {why}",
                            spec.target_region
                        ),
                    );
                }
            }
        },
    }
    f.0
}

/// Checks a ChaosExperiment.
pub fn chaos_experiment(spec: &ChaosExperimentSpec, world: &World) -> Vec<Problem> {
    let mut f = Findings::default();
    f.cron("schedule", &spec.schedule);
    let fault = &spec.fault;
    match (&fault.pods, fault.type_ == FaultType::PodKill) {
        (None, true) => f.invalid(
            "InvalidFault",
            "fault: PodKill needs pods (namespace and selector)",
        ),
        (Some(_), false) => f.invalid("InvalidFault", "fault.pods applies to PodKill only"),
        (Some(p), true) if p.selector.trim().is_empty() => {
            f.invalid(
                "InvalidFault",
                "fault.pods.selector is empty: it would match every pod",
            );
        }
        (Some(p), true) if crate::chaos::SYSTEM_NAMESPACES.contains(&p.namespace.as_str()) => {
            f.invalid(
                "InvalidFault",
                format!(
                    "fault.pods.namespace {} is a system namespace: chaos never kills its pods",
                    p.namespace
                ),
            );
        }
        _ => {}
    }
    let needs_peer = matches!(
        fault.type_,
        FaultType::NetworkPartition | FaultType::NetworkLatency
    );
    match &fault.region {
        Some(r) => f.region(world, "fault.region", r),
        None => f.invalid("InvalidFault", format!("fault: {} needs region", fault.type_)),
    }
    match &fault.peer_region {
        Some(p) if Some(p) == fault.region.as_ref() => {
            f.invalid("InvalidFault", "fault.peerRegion must differ from fault.region");
        }
        Some(p) => f.region(world, "fault.peerRegion", p),
        None if needs_peer => f.invalid("InvalidFault", format!("fault: {} needs peerRegion", fault.type_)),
        None => {}
    }
    match &fault.latency {
        Some(l) => {
            if let Some(d) = f.duration("fault.latency", l)
                && (d < crate::chaos::MIN_LATENCY || d > crate::chaos::MAX_LATENCY)
            {
                f.invalid(
                    "InvalidFault",
                    format!(
                        "fault.latency {l} is out of range: at least {}ms and at most {}s",
                        crate::chaos::MIN_LATENCY.as_millis(),
                        crate::chaos::MAX_LATENCY.as_secs()
                    ),
                );
            }
        }
        None if fault.type_ == FaultType::NetworkLatency => {
            f.invalid("InvalidFault", "fault: NetworkLatency needs latency");
        }
        None => {}
    }
    if let Some(d) = &spec.expect.failover_within {
        f.duration("expect.failoverWithin", d);
    }
    if let Some(d) = &spec.expect.recovery_within {
        f.duration("expect.recoveryWithin", d);
    }
    if let Some(d) = f.duration("duration", &spec.duration)
        && d > crate::chaos::MAX_FAULT
        && !spec.allow_long_fault
    {
        f.invalid(
            "FaultTooLong",
            format!(
                "duration: {} is longer than one hour; set allowLongFault to run it",
                spec.duration
            ),
        );
    }
    if fault.mode.is_some() && fault.type_ != FaultType::RegionOutage {
        f.invalid("InvalidFault", "fault.mode applies to RegionOutage only");
    }
    for (i, w) in spec.blocked_windows.iter().enumerate() {
        f.cron(&format!("blockedWindows[{i}].start"), &w.start);
        f.duration(&format!("blockedWindows[{i}].duration"), &w.duration);
    }
    if spec.expect.no_failover && spec.expect.failover_within.is_some() {
        f.invalid(
            "InvalidExpectation",
            "expect: noFailover and failoverWithin contradict each other",
        );
    }
    f.0
}

/// Checks a DrDrill.
pub fn dr_drill(spec: &DrDrillSpec, world: &World) -> Vec<Problem> {
    let mut f = Findings::default();
    f.cron("schedule", &spec.schedule);
    f.duration("objectives.rto", &spec.objectives.rto);
    f.duration("objectives.rpo", &spec.objectives.rpo);
    f.region(world, "scenario.loseRegion", &spec.scenario.lose_region);
    if let Some(dr) = &spec.scenario.dr_region {
        if dr == &spec.scenario.lose_region {
            f.invalid(
                "InvalidScenario",
                "scenario.drRegion must differ from scenario.loseRegion",
            );
        } else {
            f.region(world, "scenario.drRegion", dr);
        }
    }
    for t in &spec.tenants {
        if !world.tenants.contains_key(t) {
            f.unresolved("TenantNotFound", format!("tenants: tenant {t} does not exist"));
        }
    }
    f.0
}

/// What to report when the spec is valid and resolved but a capability is not active yet.
#[derive(Clone, Debug)]
pub struct Pending {
    /// Condition type of the capability, e.g. `Probed`.
    pub condition: &'static str,
    /// Message saying what is not yet done.
    pub message: String,
    /// Whether the object is Ready anyway (declarations are; one-shot runs such as a Backup are not).
    pub ready_anyway: bool,
}

/// Turns findings into `SpecValid`, `ReferencesResolved` and `Ready` (plus the pending capability).
pub fn conditions(problems: &[Problem], ready_message: &str, pending: Option<&Pending>) -> Vec<Desired> {
    let join = |kind: ProblemKind| -> Option<(&'static str, String)> {
        let of: Vec<&Problem> = problems.iter().filter(|p| p.kind == kind).collect();
        let first = of.first()?;
        Some((
            first.reason,
            of.iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ))
    };
    let invalid = join(ProblemKind::Invalid);
    let unresolved = join(ProblemKind::Unresolved);
    let mut out = vec![
        match &invalid {
            Some((reason, msg)) => Desired::fail(types::SPEC_VALID, *reason, msg.clone()),
            None => Desired::ok(types::SPEC_VALID, "Valid", "spec passed validation"),
        },
        match &unresolved {
            Some((reason, msg)) => Desired::fail(types::REFERENCES_RESOLVED, *reason, msg.clone()),
            None => Desired::ok(types::REFERENCES_RESOLVED, "Resolved", "every reference exists"),
        },
    ];
    let ready = match (invalid, unresolved) {
        (Some((reason, msg)), _) | (None, Some((reason, msg))) => Desired::fail(types::READY, reason, msg),
        (None, None) => match pending {
            Some(p) if !p.ready_anyway => Desired::fail(types::READY, "NotYetSupported", p.message.clone()),
            _ => Desired::ok(types::READY, "Ready", ready_message),
        },
    };
    out.push(ready);
    if let Some(p) = pending {
        out.push(Desired::unknown(
            p.condition,
            "NotYetSupported",
            p.message.clone(),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
