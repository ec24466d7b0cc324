//! Prometheus metrics of the reconcilers and the leader election, registered once on a shared registry.
//! No IO; `/metrics` serving lives in the binary. Labels are fixed categories, never error text.

use std::time::Instant;

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Metrics shared by every controller.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    status_writes: IntCounterVec,
    /// 1 while this replica leads.
    pub leader: IntGauge,
    /// Fencing epoch of the current leadership (0 when standing by).
    pub leader_epoch: IntGauge,
    /// Probe latency per region and observer.
    pub probe_latency: HistogramVec,
    /// Probe rounds per region, observer and result.
    pub probe_rounds: IntCounterVec,
    /// How late probe rounds start against their schedule (scheduling jitter of the engine).
    pub probe_schedule_lag: prometheus::Histogram,
    /// 1 when a region's combined verdict is Healthy or Degraded, 0 when Down.
    pub region_up: IntGaugeVec,
    /// Verdict transitions per region and new verdict.
    pub region_transitions: IntCounterVec,
    /// Failover phases: detect_to_decide, decide_to_dns, dns_to_verified, total.
    pub failover_phase: HistogramVec,
    /// Failovers per policy and reason.
    pub failovers: IntCounterVec,
    /// 1 for the region a policy answers by default.
    pub active_region: IntGaugeVec,
    /// Seconds since the decision of a policy's last failover while its DNS change is not verified; 0 once
    /// verified. Set by the leader every second.
    pub failover_unverified: IntGaugeVec,
    /// Detection to decision of a policy's last failover, in seconds (leader).
    pub failover_last_decision: GaugeVec,
    /// When a policy's last failover was decided, as a Unix time (leader).
    pub failover_last_decided: GaugeVec,
    /// A policy's `spec.decisionDeadline`, in seconds (leader).
    pub failover_deadline: GaugeVec,
    /// Requests to regional clusters by region and verb (apply, delete), counted when sent.
    pub regional_writes: IntCounterVec,
    /// Tenant syncs per region by result (noop, applied, error, unavailable).
    pub tenant_syncs: IntCounterVec,
    /// 1 while a region's cluster answers.
    pub cluster_up: IntGaugeVec,
    /// Replication lag of each copied object (source modification to verified replica), by target region.
    pub replication_lag: HistogramVec,
    /// Current replication lag per tenant and target region (0 when in sync).
    pub tenant_replication_lag: prometheus::GaugeVec,
    /// Replicated objects by target region and result (copied, deleted, failed).
    pub replication_objects: IntCounterVec,
    /// Bytes copied by target region.
    pub replication_bytes: IntCounterVec,
    /// Recovery point now per tenant: age of the data in its newest backup verified in every required
    /// region (derived from the recorded Backups, so right after a restart too).
    pub backup_rpo: prometheus::GaugeVec,
    /// Duration of backup runs by result (succeeded, partially_failed, failed).
    pub backup_duration: HistogramVec,
    /// Archive size of each tenant's newest backup.
    pub backup_size: IntGaugeVec,
    /// Finished backup runs by result.
    pub backups: IntCounterVec,
    /// Finished restores by result.
    pub restores: IntCounterVec,
    /// Secret rotations by result (rotated, conflict, failed).
    pub secret_rotations: IntCounterVec,
    /// Age of each tenant secret's current version.
    pub secret_age: prometheus::GaugeVec,
    /// When each tenant secret is next rotated (Unix seconds).
    pub secret_next_rotation: prometheus::GaugeVec,
    /// Replay lag of each database standby, in seconds (leader).
    pub db_lag_seconds: prometheus::GaugeVec,
    /// WAL bytes each database standby is behind its primary (leader).
    pub db_lag_bytes: prometheus::GaugeVec,
    /// 1 for the region of each database's primary (leader).
    pub db_primary: prometheus::GaugeVec,
    /// Database failovers by database and result (promoted, refused, failed).
    pub db_failovers: IntCounterVec,
    /// `azora_chaos_runs_total{experiment,outcome}`.
    pub chaos_runs: IntCounterVec,
    /// `azora_chaos_fault_active{experiment}`: 1 while a fault of the experiment may be in place (stays 1
    /// when its revert could not be confirmed).
    pub chaos_fault_active: prometheus::GaugeVec,
    /// `azora_chaos_last_failover_seconds{experiment}`: the last run's measured failover time.
    pub chaos_failover_seconds: prometheus::GaugeVec,
    /// `azora_chaos_fault_expires_timestamp_seconds{experiment}`: when the last fault handed to an agent
    /// expires (the agent reverts by then by itself); with `chaos_fault_active` still 1 long after it, the
    /// fault may be left behind.
    pub chaos_fault_expires: prometheus::GaugeVec,
    /// `azora_drill_runs_total{drill,result}`.
    pub drill_runs: IntCounterVec,
    /// `azora_drill_rto_seconds{drill}`: the last drill run's measured RTO.
    pub drill_rto_seconds: prometheus::GaugeVec,
    /// `azora_drill_rpo_seconds{drill}`: the last drill run's measured RPO.
    pub drill_rpo_seconds: prometheus::GaugeVec,
    /// `azora_drill_last_success_timestamp_seconds{drill}`: when the drill last passed.
    pub drill_last_success: prometheus::GaugeVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("azora".into()), None)?;
        let reconciles = IntCounterVec::new(
            Opts::new("reconcile_total", "Reconciles by controller and result"),
            &["controller", "result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Reconcile errors by controller and fixed category",
            ),
            &["controller", "category"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Reconcile duration")
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["controller"],
        )?;
        let status_writes = IntCounterVec::new(
            Opts::new(
                "status_writes_total",
                "Status writes by controller (skipped when nothing changed)",
            ),
            &["controller", "outcome"],
        )?;
        let leader = IntGauge::new("leader", "1 while this replica holds the leader Lease")?;
        let leader_epoch = IntGauge::new("leader_epoch", "Fencing epoch of the current leadership")?;
        let probe_latency = HistogramVec::new(
            HistogramOpts::new("probe_latency_seconds", "Probe latency by region and observer").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
                ],
            ),
            &["region", "observer"],
        )?;
        let probe_rounds = IntCounterVec::new(
            Opts::new(
                "probe_rounds_total",
                "Probe rounds by region, observer and result",
            ),
            &["region", "observer", "result"],
        )?;
        let region_up = IntGaugeVec::new(
            Opts::new("region_up", "1 when the region serves (Healthy/Degraded)"),
            &["region"],
        )?;
        let region_transitions = IntCounterVec::new(
            Opts::new("region_transitions_total", "Region verdict transitions"),
            &["region", "verdict"],
        )?;
        let failover_phase = HistogramVec::new(
            HistogramOpts::new("failover_phase_seconds", "Duration of each failover phase")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0]),
            &["phase"],
        )?;
        let failovers = IntCounterVec::new(
            Opts::new("failovers_total", "Failovers by policy and reason"),
            &["policy", "reason"],
        )?;
        let active_region = IntGaugeVec::new(
            Opts::new("active_region", "1 for the region a policy answers by default"),
            &["policy", "region"],
        )?;
        let failover_unverified = IntGaugeVec::new(
            Opts::new(
                "failover_unverified_seconds",
                "Seconds since a policy's last failover was decided while its DNS change is not verified (0: verified)",
            ),
            &["policy"],
        )?;
        let failover_last_decision = GaugeVec::new(
            Opts::new(
                "failover_last_decision_seconds",
                "Detection to decision of a policy's last failover, in seconds",
            ),
            &["policy"],
        )?;
        let failover_last_decided = GaugeVec::new(
            Opts::new(
                "failover_last_decided_timestamp_seconds",
                "When a policy's last failover was decided (Unix time)",
            ),
            &["policy"],
        )?;
        let failover_deadline = GaugeVec::new(
            Opts::new(
                "failover_decision_deadline_seconds",
                "A policy's decision deadline (spec.decisionDeadline), in seconds",
            ),
            &["policy"],
        )?;
        let probe_schedule_lag = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "probe_schedule_lag_seconds",
                "Delay of probe rounds behind their schedule",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )?;
        let regional_writes = IntCounterVec::new(
            Opts::new(
                "regional_writes_total",
                "Write requests sent to regional clusters",
            ),
            &["region", "verb"],
        )?;
        let tenant_syncs = IntCounterVec::new(
            Opts::new("tenant_syncs_total", "Tenant syncs per region by result"),
            &["region", "result"],
        )?;
        let cluster_up = IntGaugeVec::new(
            Opts::new("region_cluster_up", "1 while the region's cluster answers"),
            &["region"],
        )?;
        let replication_lag = HistogramVec::new(
            HistogramOpts::new(
                "replication_lag_seconds",
                "Time from an object's change at the source to its verified replica",
            )
            .buckets(vec![
                0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0,
            ]),
            &["region"],
        )?;
        let tenant_replication_lag = prometheus::GaugeVec::new(
            Opts::new(
                "tenant_replication_lag_seconds",
                "Age of the oldest change not yet replicated, per tenant and region",
            ),
            &["tenant", "region"],
        )?;
        let replication_objects = IntCounterVec::new(
            Opts::new("replication_objects_total", "Replicated objects by result"),
            &["region", "result"],
        )?;
        let replication_bytes = IntCounterVec::new(
            Opts::new("replication_bytes_total", "Bytes replicated"),
            &["region"],
        )?;
        let backup_rpo = prometheus::GaugeVec::new(
            Opts::new(
                "backup_rpo_seconds",
                "Age of the data in each tenant's newest backup verified in every required region",
            ),
            &["tenant"],
        )?;
        let backup_duration = HistogramVec::new(
            HistogramOpts::new("backup_duration_seconds", "Duration of backup runs")
                .buckets(vec![0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0]),
            &["result"],
        )?;
        let backup_size = IntGaugeVec::new(
            Opts::new("backup_size_bytes", "Archive size of each tenant's newest backup"),
            &["tenant"],
        )?;
        let backups = IntCounterVec::new(
            Opts::new("backups_total", "Finished backup runs by result"),
            &["result"],
        )?;
        let restores = IntCounterVec::new(
            Opts::new("restores_total", "Finished restores by result"),
            &["result"],
        )?;
        registry.register(Box::new(backup_rpo.clone()))?;
        registry.register(Box::new(backup_duration.clone()))?;
        registry.register(Box::new(backup_size.clone()))?;
        registry.register(Box::new(backups.clone()))?;
        registry.register(Box::new(restores.clone()))?;
        let secret_rotations = IntCounterVec::new(
            Opts::new("secret_rotations_total", "Secret rotations by result"),
            &["result"],
        )?;
        let secret_age = prometheus::GaugeVec::new(
            Opts::new(
                "secret_age_seconds",
                "Age of each tenant secret's current version",
            ),
            &["tenant", "secret"],
        )?;
        let secret_next_rotation = prometheus::GaugeVec::new(
            Opts::new(
                "secret_next_rotation_timestamp",
                "When each tenant secret is next rotated (Unix seconds)",
            ),
            &["tenant", "secret"],
        )?;
        registry.register(Box::new(secret_rotations.clone()))?;
        registry.register(Box::new(secret_age.clone()))?;
        registry.register(Box::new(secret_next_rotation.clone()))?;
        let db_lag_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "db_replication_lag_seconds",
                "Replay lag of each database standby, in seconds",
            ),
            &["database", "region"],
        )?;
        let db_lag_bytes = prometheus::GaugeVec::new(
            Opts::new(
                "db_replication_lag_bytes",
                "WAL bytes each database standby is behind its primary",
            ),
            &["database", "region"],
        )?;
        let db_primary = prometheus::GaugeVec::new(
            Opts::new("db_primary", "1 for the region of each database's primary"),
            &["database", "region"],
        )?;
        let db_failovers = IntCounterVec::new(
            Opts::new("db_failovers_total", "Database failovers by database and result"),
            &["database", "result"],
        )?;
        registry.register(Box::new(db_lag_seconds.clone()))?;
        registry.register(Box::new(db_lag_bytes.clone()))?;
        registry.register(Box::new(db_primary.clone()))?;
        registry.register(Box::new(db_failovers.clone()))?;
        let chaos_runs = IntCounterVec::new(
            Opts::new(
                "chaos_runs_total",
                "Chaos experiment runs by experiment and outcome",
            ),
            &["experiment", "outcome"],
        )?;
        let chaos_fault_active = prometheus::GaugeVec::new(
            Opts::new(
                "chaos_fault_active",
                "1 while an experiment's fault may be in place (stays 1 when its revert is unconfirmed)",
            ),
            &["experiment"],
        )?;
        let chaos_failover_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "chaos_last_failover_seconds",
                "Failover time measured by each experiment's last run that saw one",
            ),
            &["experiment"],
        )?;
        registry.register(Box::new(chaos_runs.clone()))?;
        registry.register(Box::new(chaos_fault_active.clone()))?;
        let chaos_fault_expires = prometheus::GaugeVec::new(
            Opts::new(
                "chaos_fault_expires_timestamp_seconds",
                "When each experiment's last fault expires at its agent (Unix seconds)",
            ),
            &["experiment"],
        )?;
        registry.register(Box::new(chaos_fault_expires.clone()))?;
        registry.register(Box::new(chaos_failover_seconds.clone()))?;
        let drill_runs = IntCounterVec::new(
            Opts::new("drill_runs_total", "DR drill runs by drill and result"),
            &["drill", "result"],
        )?;
        let drill_rto_seconds = prometheus::GaugeVec::new(
            Opts::new("drill_rto_seconds", "RTO measured by each drill's last run"),
            &["drill"],
        )?;
        let drill_rpo_seconds = prometheus::GaugeVec::new(
            Opts::new("drill_rpo_seconds", "RPO measured by each drill's last run"),
            &["drill"],
        )?;
        let drill_last_success = prometheus::GaugeVec::new(
            Opts::new(
                "drill_last_success_timestamp_seconds",
                "When each drill last passed (Unix seconds)",
            ),
            &["drill"],
        )?;
        registry.register(Box::new(drill_runs.clone()))?;
        registry.register(Box::new(drill_rto_seconds.clone()))?;
        registry.register(Box::new(drill_rpo_seconds.clone()))?;
        registry.register(Box::new(drill_last_success.clone()))?;
        for c in [
            &regional_writes,
            &tenant_syncs,
            &replication_objects,
            &replication_bytes,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(cluster_up.clone()))?;
        registry.register(Box::new(replication_lag.clone()))?;
        registry.register(Box::new(tenant_replication_lag.clone()))?;
        registry.register(Box::new(probe_schedule_lag.clone()))?;
        for c in [&probe_rounds, &region_transitions, &failovers] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(probe_latency.clone()))?;
        registry.register(Box::new(failover_phase.clone()))?;
        registry.register(Box::new(region_up.clone()))?;
        registry.register(Box::new(active_region.clone()))?;
        registry.register(Box::new(failover_unverified.clone()))?;
        registry.register(Box::new(failover_last_decision.clone()))?;
        registry.register(Box::new(failover_last_decided.clone()))?;
        registry.register(Box::new(failover_deadline.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(leader_epoch.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            status_writes,
            leader,
            leader_epoch,
            probe_latency,
            probe_rounds,
            probe_schedule_lag,
            region_up,
            region_transitions,
            failover_phase,
            failovers,
            active_region,
            failover_unverified,
            failover_last_decision,
            failover_last_decided,
            failover_deadline,
            regional_writes,
            tenant_syncs,
            cluster_up,
            replication_lag,
            tenant_replication_lag,
            replication_objects,
            replication_bytes,
            backup_rpo,
            backup_duration,
            backup_size,
            backups,
            restores,
            secret_rotations,
            secret_age,
            secret_next_rotation,
            db_lag_seconds,
            db_lag_bytes,
            db_primary,
            db_failovers,
            chaos_runs,
            chaos_fault_active,
            chaos_failover_seconds,
            chaos_fault_expires,
            drill_runs,
            drill_rto_seconds,
            drill_rpo_seconds,
            drill_last_success,
        })
    }

    /// Starts a timer that records the reconcile duration when dropped.
    pub fn timer(&self, controller: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            hist: self.duration.clone(),
            controller,
            start: Instant::now(),
        }
    }

    /// Counts one reconcile.
    pub fn reconciled(&self, controller: &str, result: &str) {
        self.reconciles.with_label_values(&[controller, result]).inc();
    }

    /// Counts one error by category.
    pub fn error(&self, controller: &str, category: &str) {
        self.errors.with_label_values(&[controller, category]).inc();
    }

    /// Counts a status write or a skipped one.
    pub fn status_write(&self, controller: &str, outcome: &str) {
        self.status_writes.with_label_values(&[controller, outcome]).inc();
    }
}

/// Records the elapsed time into the reconcile histogram when dropped.
pub struct ReconcileTimer {
    hist: HistogramVec,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.hist
            .with_label_values(&[self.controller])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// Drops the series of a labelled gauge whose labels `keep` refuses (the object they describe is gone):
/// an alert on a stale series would fire for something that no longer exists.
pub fn retain_series(vec: &GaugeVec, keep: impl Fn(&std::collections::BTreeMap<String, String>) -> bool) {
    use prometheus::core::Collector as _;
    let stale: Vec<std::collections::BTreeMap<String, String>> = vec
        .collect()
        .iter()
        .flat_map(|mf| mf.get_metric().iter())
        .map(|m| {
            m.get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect()
        })
        .filter(|labels| !keep(labels))
        .collect();
    for labels in stale {
        let refs: std::collections::HashMap<&str, &str> =
            labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let _ = vec.remove(&refs);
    }
}

/// Runs `sweep` every `period` until `stop` resolves (for `retain_series` passes of a capability's gauges).
pub async fn sweep_every(
    period: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
    sweep: impl Fn(),
) {
    let work = async {
        loop {
            tokio::time::sleep(period).await;
            sweep();
        }
    };
    tokio::select! {
        () = work => {}
        () = stop => {}
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn series_of_objects_that_are_gone_are_dropped() {
        let g = GaugeVec::new(Opts::new("t", "t"), &["tenant", "secret"]).unwrap();
        g.with_label_values(&["acme", "db"]).set(1.0);
        g.with_label_values(&["gone", "db"]).set(1.0);
        retain_series(&g, |l| l.get("tenant").is_some_and(|t| t == "acme"));
        let names: Vec<String> = prometheus::core::Collector::collect(&g)[0]
            .get_metric()
            .iter()
            .map(|m| {
                m.get_label()
                    .iter()
                    .map(|l| l.value().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        assert_eq!(
            names,
            vec!["db/acme".to_string()],
            "labels come sorted by name: secret, tenant"
        );
    }
}
