//! Alert rules, runbooks and the Grafana dashboard of the chart, checked with the real tools: `promtool check
//! rules` and `promtool test rules` (Debian's `prometheus` package, `tests/scripts/install-prometheus.sh`),
//! `helm template`, and one end-to-end run where a real Prometheus server scrapes the real operator, a region
//! is stopped for real and the region-down alert fires through Prometheus's own API. A missing promtool,
//! prometheus or helm fails these tests; nothing is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use azora_tests::scenario::Scenario;
use azora_tests::{free_port, repo_root, tool};
use serde_yaml::Value;

/// The runbook_url form: this prefix, then the runbook's path in the repository (`runbooks/<file>.md`).
const RUNBOOK_URL_PREFIX: &str = "https://github.com/azora-io/azora/blob/main/";

fn rules_path() -> PathBuf {
    repo_root().join("charts/azora-operator/files/azora-rules.yaml")
}

fn dashboard_path() -> PathBuf {
    repo_root().join("charts/azora-operator/files/azora-dashboard.json")
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `promtool` from `~/.cache/azora/tools/bin` (`make test-env`); missing is an error.
fn promtool() -> anyhow::Result<PathBuf> {
    tool("promtool").context("run tests/scripts/install-prometheus.sh (make test-env)")
}

fn load_yaml(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// One alerting rule of the rules file.
struct Alert {
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn rules_of(doc: &Value) -> anyhow::Result<Vec<&Value>> {
    let groups = doc["groups"].as_sequence().context("no groups")?;
    let mut rules = Vec::new();
    for g in groups {
        rules.extend(g["rules"].as_sequence().context("a group without rules")?);
    }
    Ok(rules)
}

fn alerts() -> anyhow::Result<Vec<Alert>> {
    let doc = load_yaml(&rules_path())?;
    let alerts: Vec<Alert> = rules_of(&doc)?
        .into_iter()
        .filter_map(|r| {
            Some(Alert {
                name: r["alert"].as_str()?.to_string(),
                labels: string_map(&r["labels"]),
                annotations: string_map(&r["annotations"]),
            })
        })
        .collect();
    anyhow::ensure!(!alerts.is_empty(), "no alerts in {}", rules_path().display());
    Ok(alerts)
}

fn alert_tests() -> anyhow::Result<Vec<PathBuf>> {
    let dir = repo_root().join("tests/alerts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".test.yaml"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no *.test.yaml in {}", dir.display());
    Ok(files)
}

/// Every panel query of the dashboard (rows' nested panels included), as (panel title, expr).
fn dashboard_queries() -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(dashboard_path())?;
    let dash: serde_json::Value = serde_json::from_str(&text)?;
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    for p in dash["panels"].as_array().context("dashboard without panels")? {
        panels.push(p);
        if let Some(nested) = p["panels"].as_array() {
            panels.extend(nested);
        }
    }
    let mut out = Vec::new();
    for p in panels {
        let kind = p["type"].as_str().unwrap_or_default();
        if kind == "row" || kind == "text" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or_default().to_string();
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        anyhow::ensure!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            anyhow::ensure!(!expr.trim().is_empty(), "panel {title:?} has an empty query");
            out.push((title.clone(), expr.to_string()));
        }
    }
    Ok(out)
}

/// The `azora_*` metric names a PromQL text uses (recorded `azora:...` series are not metrics).
fn azora_metrics(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("azora_") && !word.contains(':') {
                out.insert(word.clone());
            }
            word.clear();
        }
    }
    out
}

/// Whether the operator registers `metric` (with its histogram suffixes), read from its metrics module.
fn operator_exports(metrics_rs: &str, metric: &str) -> bool {
    let Some(base) = metric.strip_prefix("azora_") else {
        return false;
    };
    let registered = |n: &str| metrics_rs.contains(&format!("\"{n}\""));
    registered(base)
        || ["_bucket", "_count", "_sum"]
            .iter()
            .any(|s| base.strip_suffix(s).is_some_and(registered))
}

#[test]
fn promtool_accepts_the_rules_file() -> anyhow::Result<()> {
    let out = run(Command::new(promtool()?)
        .args(["check", "rules"])
        .arg(rules_path()))?;
    assert!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

#[test]
fn promtool_unit_tests_of_every_alert_pass() -> anyhow::Result<()> {
    let out = run(Command::new(promtool()?)
        .args(["test", "rules"])
        .args(alert_tests()?))?;
    assert!(!out.contains("FAILED"), "{out}");
    Ok(())
}

#[test]
fn every_alert_has_severity_summary_description_and_an_existing_runbook_naming_it() -> anyhow::Result<()> {
    for a in alerts()? {
        let severity = a.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{}: severity {severity:?}",
            a.name
        );
        for k in ["summary", "description", "runbook_url"] {
            assert!(
                a.annotations.get(k).is_some_and(|v| !v.trim().is_empty()),
                "{}: no annotation {k}",
                a.name
            );
        }
        let url = a.annotations.get("runbook_url").cloned().unwrap_or_default();
        let path = url.strip_prefix(RUNBOOK_URL_PREFIX).with_context(|| {
            format!(
                "{}: runbook_url {url:?} is not {RUNBOOK_URL_PREFIX}runbooks/…",
                a.name
            )
        })?;
        assert!(
            path.starts_with("runbooks/") && path.ends_with(".md"),
            "{}: {url}",
            a.name
        );
        let file = repo_root().join(path);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("{}: runbook {} does not exist", a.name, file.display()))?;
        assert!(
            text.contains(&a.name),
            "{}: runbook {path} does not mention the alert",
            a.name
        );
    }
    Ok(())
}

/// The commands in the alerts' runbooks (one per line in ```sh blocks, no continuations or heredocs) are
/// kubectl reads, the plugin's commands, or — for the restore check of backup-stale.md — applying and deleting
/// a manifest. Commands outside Kubernetes (a cloud CLI) are in ```text blocks.
#[test]
fn runbook_commands_are_kubectl_reads_or_kubectl_azora_commands() -> anyhow::Result<()> {
    let allowed = [
        "kubectl get ",
        "kubectl describe ",
        "kubectl logs ",
        "kubectl apply -f ",
        "kubectl delete ",
        "kubectl azora status",
        "kubectl azora timeline ",
        "kubectl azora cordon ",
        "kubectl azora uncordon ",
        "kubectl azora failover ",
        "kubectl azora approve-failback ",
        "kubectl azora rotate ",
        "kubectl azora backup ",
        "kubectl azora restore ",
        "kubectl azora drill run ",
        "kubectl azora chaos run ",
        "kubectl azora chaos pause ",
        "kubectl azora chaos resume",
    ];
    let files: BTreeSet<String> = alerts()?
        .iter()
        .filter_map(|a| {
            a.annotations
                .get("runbook_url")?
                .strip_prefix(RUNBOOK_URL_PREFIX)
                .map(String::from)
        })
        .collect();
    for f in files {
        let text = std::fs::read_to_string(repo_root().join(&f))?;
        let mut in_sh = false;
        let mut commands = 0;
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with("```") {
                in_sh = !in_sh && t == "```sh";
                continue;
            }
            if in_sh && !t.is_empty() {
                commands += 1;
                assert!(
                    allowed.iter().any(|a| t.starts_with(a)) && !t.ends_with('\\') && !t.contains("<<"),
                    "{f}: command {t:?} is not one line of one of {allowed:?}"
                );
            }
        }
        assert!(!in_sh, "{f}: unclosed ```sh block");
        assert!(commands > 0, "{f}: no ```sh commands");
    }
    Ok(())
}

#[test]
fn every_alert_is_expected_to_fire_by_some_promtool_test() -> anyhow::Result<()> {
    let names: BTreeSet<String> = alerts()?.into_iter().map(|a| a.name).collect();
    let mut fired = BTreeSet::new();
    for f in alert_tests()? {
        let doc = load_yaml(&f)?;
        for t in doc["tests"].as_sequence().context("no tests")? {
            for c in t["alert_rule_test"]
                .as_sequence()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let name = c["alertname"].as_str().unwrap_or_default().to_string();
                assert!(
                    names.contains(&name),
                    "{}: alertname {name:?} is not in the rules file",
                    f.display()
                );
                if c["exp_alerts"].as_sequence().is_some_and(|s| !s.is_empty()) {
                    fired.insert(name);
                }
            }
        }
    }
    let untested: Vec<&String> = names.difference(&fired).collect();
    assert!(
        untested.is_empty(),
        "alerts no promtool test expects to fire: {untested:?}"
    );
    Ok(())
}

#[test]
fn rules_and_dashboard_use_only_metrics_the_operator_exports() -> anyhow::Result<()> {
    let metrics_rs = std::fs::read_to_string(repo_root().join("operator/runtime/src/metrics.rs"))?;
    let mut used = azora_metrics(&std::fs::read_to_string(rules_path())?);
    for (_, expr) in dashboard_queries()? {
        used.extend(azora_metrics(&expr));
    }
    assert!(
        used.contains("azora_region_up") && used.contains("azora_probe_rounds_total"),
        "{used:?}"
    );
    let unknown: Vec<&String> = used
        .iter()
        .filter(|m| !operator_exports(&metrics_rs, m))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics the operator does not export: {unknown:?}"
    );
    Ok(())
}

fn helm_template(api_versions: &[&str]) -> anyhow::Result<Vec<serde_yaml::Value>> {
    let mut cmd = Command::new(tool("helm")?);
    cmd.args(["template", "azora"])
        .arg(repo_root().join("charts/azora-operator"))
        .args(["--namespace", "azora-system"]);
    for v in api_versions {
        cmd.args(["--api-versions", v]);
    }
    let out = run(&mut cmd)?;
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(&out) {
        let v = <Value as serde::Deserialize>::deserialize(d)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

#[test]
fn chart_renders_the_prometheus_rule_from_the_rules_file_only_when_the_crd_is_served() -> anyhow::Result<()> {
    let kind = |d: &Value| d["kind"].as_str().unwrap_or_default().to_string();
    let with = helm_template(&["monitoring.coreos.com/v1/PrometheusRule"])?;
    let rules: Vec<&Value> = with.iter().filter(|d| kind(d) == "PrometheusRule").collect();
    assert_eq!(rules.len(), 1, "one PrometheusRule with the CRD served");
    let rule = rules[0];
    assert_eq!(rule["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    let source = load_yaml(&rules_path())?;
    assert_eq!(
        rule["spec"]["groups"], source["groups"],
        "the PrometheusRule's groups differ from the rules file"
    );

    let without = helm_template(&[])?;
    assert!(
        !without.iter().any(|d| kind(d) == "PrometheusRule"),
        "PrometheusRule rendered although the cluster does not serve its CRD"
    );

    // The dashboard ConfigMap: labelled for the Grafana sidecar, the JSON unchanged.
    let cms: Vec<&Value> = without
        .iter()
        .filter(|d| {
            kind(d) == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1")
        })
        .collect();
    assert_eq!(
        cms.len(),
        1,
        "one dashboard ConfigMap labelled grafana_dashboard: \"1\""
    );
    let embedded = cms[0]["data"]["azora-control-plane.json"]
        .as_str()
        .context("no dashboard JSON")?;
    let embedded: serde_json::Value = serde_json::from_str(embedded)?;
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dashboard_path())?)?;
    assert_eq!(embedded, file);
    Ok(())
}

#[test]
fn every_dashboard_query_parses_with_promtool() -> anyhow::Result<()> {
    let queries = dashboard_queries()?;
    assert!(queries.len() >= 10, "{} queries", queries.len());
    // promtool has no offline query parser: the queries become recording rules, which `check rules` parses.
    let rules: Vec<serde_json::Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({"record": format!("azora_dashboard:query_{i}"), "expr": expr}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("dashboard-queries.yaml");
    std::fs::write(&path, serde_yaml::to_string(&file)?)?;
    let out = run(Command::new(promtool()?).args(["check", "rules"]).arg(&path))?;
    assert!(out.contains(&format!("{} rules found", queries.len())), "{out}");
    Ok(())
}

/// A real Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes the operator replicas' metrics every second and evaluates the rules file every second.
    fn start(dir: &Path, metrics_ports: &[u16]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let targets: Vec<String> = metrics_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [rules_path()],
            "scrape_configs": [{"job_name": "azora-operator", "static_configs": [{"targets": targets}]}],
        });
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, serde_yaml::to_string(&config)?)?;
        let log = dir.join("prometheus.log");
        let child = Command::new(tool("prometheus").context("run tests/scripts/install-prometheus.sh")?)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Self { child, port, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// GET on Prometheus's HTTP API; the JSON answer, which must say `"status": "success"`.
    async fn api(&self, path_and_query: &str) -> anyhow::Result<serde_json::Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let get = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            s.write_all(format!("GET {path_and_query} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
                .await?;
            let mut buf = String::new();
            s.read_to_string(&mut buf).await?;
            anyhow::Ok(buf)
        };
        let response = tokio::time::timeout(Duration::from_secs(10), get)
            .await
            .context("Prometheus did not answer within 10s")??;
        let (head, body) = response.split_once("\r\n\r\n").context("not an HTTP response")?;
        let v: serde_json::Value =
            serde_json::from_str(body).with_context(|| format!("{path_and_query}: {head}\n{body}"))?;
        anyhow::ensure!(v["status"] == "success", "{path_and_query}: {v}");
        Ok(v)
    }

    async fn query(&self, expr: &str) -> anyhow::Result<serde_json::Value> {
        self.api(&format!("/api/v1/query?query={}", encode(expr))).await
    }
}

/// Percent-encoding of a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Metrics with no series in the end-to-end scenario, and why: it has regions, a policy and one replica, but
/// no tenants, regional clusters, backups or secrets, and no reconcile errors. A dashboard query may return no
/// data only if it reads one of these; every other query must return data.
const KNOWN_EMPTY: &[(&str, &str)] = &[
    ("azora_region_cluster_up", "no Region names a cluster"),
    ("azora_tenant_syncs_total", "no tenants"),
    ("azora_regional_writes_total", "no tenants, no clusters"),
    (
        "azora_reconcile_errors_total",
        "appears with the first reconcile error",
    ),
    ("azora_tenant_replication_lag_seconds", "no tenants"),
    ("azora_replication_lag_seconds_bucket", "no tenants"),
    ("azora_replication_objects_total", "no tenants"),
    ("azora_replication_bytes_total", "no tenants"),
    ("azora_backup_rpo_seconds", "no backups"),
    ("azora_chaos_runs_total", "no chaos experiments"),
    ("azora_chaos_fault_active", "no chaos experiments"),
    ("azora_chaos_last_failover_seconds", "no chaos experiments"),
    (
        "azora_chaos_fault_expires_timestamp_seconds",
        "no chaos experiments",
    ),
    ("azora_drill_runs_total", "no DR drills"),
    ("azora_drill_rto_seconds", "no DR drills"),
    ("azora_drill_rpo_seconds", "no DR drills"),
    ("azora_drill_last_success_timestamp_seconds", "no DR drills"),
    ("azora_db_replication_lag_seconds", "no databases"),
    ("azora_db_replication_lag_bytes", "no databases"),
    ("azora_db_primary", "no databases"),
    ("azora_db_failovers_total", "no databases"),
    ("azora_backups_total", "no backups"),
    ("azora_restores_total", "no restores"),
    ("azora_backup_duration_seconds_bucket", "no backups"),
    ("azora_backup_size_bytes", "no backups"),
    ("azora_secret_rotations_total", "no secrets"),
    ("azora_secret_age_seconds", "no secrets"),
    ("azora_secret_next_rotation_timestamp", "no secrets"),
];

#[tokio::test]
async fn real_prometheus_fires_region_down_for_a_stopped_region_and_answers_every_dashboard_query()
-> anyhow::Result<()> {
    let mut s = Scenario::start(3).await?;
    s.policy("20s", serde_json::json!({})).await?;
    s.add_operator(&[])?;
    anyhow::ensure!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some(),
        "DNS never answered africa:\n{}",
        s.log_tail(0, 30)
    );
    anyhow::ensure!(
        s.wait_all_healthy(Duration::from_secs(30)).await,
        "regions never all Healthy"
    );
    let dir = tempfile::tempdir()?;
    let prom = Prometheus::start(dir.path(), &s.metrics)?;

    // Prometheus is up and scrapes the operator (up == 1), and the rules are loaded.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = prom.query("up{job=\"azora-operator\"} == 1").await;
        if up
            .as_ref()
            .is_ok_and(|v| v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()))
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Prometheus never scraped the operator: {up:?}\n{}",
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rules = prom.api("/api/v1/rules").await?;
    let loaded = rules["data"]["groups"].as_array().map_or(0, Vec::len);
    assert!(loaded >= 5, "rule groups loaded: {rules}");
    // Let healthy probe rounds fill the 1m windows, then stop africa for real (SIGSTOP: hung connections).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let firing_before = prom.api("/api/v1/alerts").await?;
    assert!(
        !firing_before.to_string().contains("AzoraRegionDown"),
        "AzoraRegionDown before any outage: {firing_before}"
    );

    let onset = Instant::now();
    s.regions[0].stop();
    let deadline = onset + Duration::from_secs(180);
    loop {
        let alerts = prom.api("/api/v1/alerts").await?;
        let firing = alerts["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|a| {
                a["labels"]["alertname"] == "AzoraRegionDown"
                    && a["labels"]["region"] == "africa"
                    && a["state"] == "firing"
            })
        });
        if firing {
            println!(
                "africa SIGSTOPped: AzoraRegionDown firing in Prometheus after {:.1}s",
                onset.elapsed().as_secs_f64()
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "AzoraRegionDown never fired for africa: {alerts}\n{}\n{}",
            prom.log_tail(),
            s.log_tail(0, 30)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::ensure!(
        s.wait_answer(0, "127.0.0.12", Duration::from_secs(30))
            .await
            .is_some(),
        "DNS did not move to europe"
    );
    // Let the failover's series be scraped.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The failover alerts' bookkeeping on real series: the decision counted, its DNS verification counted too
    // (else AzoraFailoverDnsNotVerified would go pending), the first failover since start included.
    let sum = |v: &serde_json::Value| -> f64 {
        v["data"]["result"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let decided = sum(&prom.query("azora:failover_decisions:increase15m").await?);
        let verified = sum(&prom.query("azora:failover_verifications:increase15m").await?);
        if decided >= 1.0 && verified == decided {
            let slow = sum(&prom
                .query("azora:failover_decisions_over_deadline:increase15m")
                .await?);
            println!(
                "failovers in Prometheus: {decided} decided, {verified} verified, {slow} over the deadline"
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "failovers decided {decided}, verified {verified}: {}",
            prom.api("/api/v1/alerts").await?
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Every dashboard query is answered; only queries reading a known-empty metric may return no data.
    let known: BTreeSet<&str> = KNOWN_EMPTY.iter().map(|(m, _)| *m).collect();
    let queries = dashboard_queries()?;
    let (mut answered, mut known_empty) = (0, 0);
    for (title, expr) in &queries {
        let v = prom
            .query(expr)
            .await
            .with_context(|| format!("panel {title:?}"))?;
        if v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
            answered += 1;
            continue;
        }
        let metrics = azora_metrics(expr);
        assert!(
            metrics.iter().any(|m| known.contains(m.as_str())),
            "panel {title:?}: no data for {expr:?} (reads {metrics:?}, none known to be empty here)"
        );
        known_empty += 1;
    }
    println!(
        "{} dashboard queries: {answered} with data, {known_empty} known empty",
        queries.len()
    );

    // Only africa is down.
    let alerts = prom.api("/api/v1/alerts").await?;
    let down: BTreeSet<String> = alerts["data"]["alerts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|a| a["labels"]["alertname"] == "AzoraRegionDown")
        .filter_map(|a| a["labels"]["region"].as_str().map(String::from))
        .collect();
    assert_eq!(down, BTreeSet::from(["africa".to_string()]), "{alerts}");
    Ok(())
}
