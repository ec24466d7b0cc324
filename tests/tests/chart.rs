//! The Helm chart: `helm lint --strict`, its values schema, what renders by default and on which
//! capabilities, `helm template | kubectl apply --dry-run=server` against a real kube-apiserver (1.20), and
//! the operator running under the chart's own RBAC (impersonating its ServiceAccount) still reconciles —
//! proof the RBAC is sufficient, with no wildcards.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use azora_api::{ConditionStatus, Region};
use azora_tests::{Operator, TestEnv, repo_root, tool, wait};
use kube::Api;
use kube::api::ListParams;
use serde::Deserialize;
use serde_json::{Value, json};

fn run(cmd: &mut Command, stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin
        && let Some(mut s) = child.stdin.take()
    {
        s.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd`, which must fail; returns its stdout and stderr.
fn fails(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(!out.status.success(), "{cmd:?} must fail, got: {text}");
    Ok(text)
}

/// The objects of a multi-document YAML stream (empty documents dropped).
fn objects(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The rendered objects of `kind` (with their apiVersion).
fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

/// `helm template azora CHART --namespace azora-system ARGS...`
fn template(helm: &Path, chart: &Path, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let rendered = run(
        Command::new(helm)
            .args(["template", "azora"])
            .arg(chart)
            .args(["--namespace", "azora-system"])
            .args(args),
        None,
    )?;
    objects(&rendered)
}

/// The Deployment's pod spec.
fn pod_spec(objs: &[Value]) -> anyhow::Result<&Value> {
    let deployments = of_kind(objs, "Deployment");
    anyhow::ensure!(deployments.len() == 1, "one Deployment: {deployments:?}");
    Ok(&deployments[0]["spec"]["template"]["spec"])
}

/// Without a cluster: `helm lint --strict`, the values schema refusing bad values by name, the PDB,
/// NetworkPolicy and topology spread rendered by default, the PDB API by Kubernetes version, the
/// ServiceMonitor only where its CRD is served.
#[test]
fn chart_schema_and_defaults() -> anyhow::Result<()> {
    let chart = repo_root().join("charts/azora-operator");
    let helm = tool("helm")?;
    run(Command::new(&helm).args(["lint", "--strict"]).arg(&chart), None)?;

    // Defaults (client-only: Kubernetes version helm's default, i.e. current).
    let objs = template(&helm, &chart, &[])?;
    let selector = json!({"app.kubernetes.io/name": "azora-operator", "app.kubernetes.io/instance": "azora"});
    let pdbs = of_kind(&objs, "PodDisruptionBudget");
    assert!(pdbs.len() == 1, "one PDB by default (2 replicas): {pdbs:?}");
    assert!(pdbs[0]["apiVersion"] == "policy/v1", "{:?}", pdbs[0]);
    assert!(
        pdbs[0]["spec"] == json!({"minAvailable": 1, "selector": {"matchLabels": selector}}),
        "{:?}",
        pdbs[0]
    );
    let spread = &pod_spec(&objs)?["topologySpreadConstraints"];
    for key in ["topology.kubernetes.io/zone", "kubernetes.io/hostname"] {
        assert!(
            spread
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["topologyKey"] == key
                    && c["whenUnsatisfiable"] == "ScheduleAnyway"
                    && c["maxSkew"] == 1
                    && c["labelSelector"]["matchLabels"] == selector)),
            "spread over {key} (ScheduleAnyway): {spread}"
        );
    }
    let nps = of_kind(&objs, "NetworkPolicy");
    assert!(nps.len() == 1, "one NetworkPolicy by default: {nps:?}");
    let np = &nps[0]["spec"];
    assert!(np["podSelector"]["matchLabels"] == selector, "{np}");
    assert!(np["policyTypes"] == json!(["Ingress", "Egress"]), "{np}");
    // Ingress: the metrics port (metrics and probes) and the DNS port over UDP and TCP, from anywhere.
    assert!(
        np["ingress"]
            == json!([
                {"ports": [{"port": "metrics", "protocol": "TCP"}]},
                {"ports": [{"port": "dns-udp", "protocol": "UDP"}, {"port": "dns-tcp", "protocol": "TCP"}]}
            ]),
        "{np}"
    );
    // Egress: everywhere by default (probes go to arbitrary region endpoints).
    assert!(np["egress"] == json!([{}]), "{np}");
    assert!(
        of_kind(&objs, "ServiceMonitor").is_empty(),
        "no ServiceMonitor without its CRD"
    );

    // 1.20 serves PodDisruptionBudget as policy/v1beta1 only.
    let objs = template(&helm, &chart, &["--kube-version", "1.20.2"])?;
    let pdbs = of_kind(&objs, "PodDisruptionBudget");
    assert!(
        pdbs.len() == 1 && pdbs[0]["apiVersion"] == "policy/v1beta1",
        "{pdbs:?}"
    );
    // One replica: no PDB (it would block every drain).
    let objs = template(&helm, &chart, &["--set", "replicaCount=1"])?;
    assert!(of_kind(&objs, "PodDisruptionBudget").is_empty());
    let objs = template(&helm, &chart, &["--set", "podDisruptionBudget.maxUnavailable=1"])?;
    let pdbs = of_kind(&objs, "PodDisruptionBudget");
    assert!(
        pdbs.len() == 1
            && pdbs[0]["spec"]["maxUnavailable"] == 1
            && pdbs[0]["spec"].get("minAvailable").is_none(),
        "{pdbs:?}"
    );
    let objs = template(&helm, &chart, &["--set", "networkPolicy.enabled=false"])?;
    assert!(of_kind(&objs, "NetworkPolicy").is_empty());

    // The ServiceMonitor: only where the Prometheus Operator's CRD is served (and it is enabled).
    let sm_api = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"];
    let objs = template(&helm, &chart, &sm_api)?;
    let sms = of_kind(&objs, "ServiceMonitor");
    assert!(sms.len() == 1, "{sms:?}");
    let sm = &sms[0]["spec"];
    assert!(
        sm["endpoints"] == json!([{"port": "metrics", "path": "/metrics", "interval": "30s"}]),
        "{sm}"
    );
    // It selects the metrics Service (and only it), by the Service's labels.
    let metrics_svc = of_kind(&objs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "azora-azora-operator-metrics")
        .ok_or_else(|| anyhow::anyhow!("no metrics Service"))?;
    let svc_labels = metrics_svc["metadata"]["labels"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("metrics Service without labels"))?;
    let sm_selector = sm["selector"]["matchLabels"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("ServiceMonitor without a selector: {sm}"))?;
    assert!(
        sm_selector.iter().all(|(k, v)| svc_labels.get(k) == Some(v)),
        "{sm_selector:?} must select the metrics Service {svc_labels:?}"
    );
    let dns_svc = of_kind(&objs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "azora-azora-dns")
        .ok_or_else(|| anyhow::anyhow!("no DNS Service"))?;
    assert!(
        !sm_selector
            .iter()
            .all(|(k, v)| dns_svc["metadata"]["labels"].get(k) == Some(v)),
        "the ServiceMonitor must not select the DNS Service"
    );
    let objs = template(
        &helm,
        &chart,
        &[sm_api[0], sm_api[1], "--set", "serviceMonitor.enabled=false"],
    )?;
    assert!(of_kind(&objs, "ServiceMonitor").is_empty());

    // NOTES.txt: what was installed and how to check it (a client-side install renders it, no cluster).
    let install = run(
        Command::new(&helm).args(["install", "azora"]).arg(&chart).args([
            "--namespace",
            "azora-system",
            "--dry-run=client",
        ]),
        None,
    )?;
    let notes = install
        .split_once("\nNOTES:\n")
        .map(|(_, n)| n)
        .ok_or_else(|| anyhow::anyhow!("no NOTES: {install}"))?;
    for expected in [
        "PodDisruptionBudget azora-azora-operator (policy/v1)",
        "NetworkPolicy azora-azora-operator",
        "kubectl get regions",
        "kubectl azora status",
        "kubectl -n azora-system get lease azora-operator",
        "http://azora-azora-operator-metrics.azora-system.svc:9090/metrics",
        "Service azora-azora-dns (ClusterIP) port 53 -> pod port 5353",
    ] {
        assert!(notes.contains(expected), "NOTES lack {expected:?}:\n{notes}");
    }

    // Bad values fail `helm template` and `helm lint --strict`, naming the key.
    let bad: [(&str, &[&str]); 7] = [
        ("replicaCount=-1", &["/replicaCount", "minimum"]),
        ("nosuchkey=1", &["additional properties 'nosuchkey' not allowed"]),
        ("replicas=-1", &["additional properties 'replicas' not allowed"]),
        ("logFormat=xml", &["/logFormat"]),
        ("metricsPort=70000", &["/metricsPort", "maximum"]),
        (
            "topologySpread.zone.whenUnsatisfiable=Maybe",
            &["/topologySpread/zone/whenUnsatisfiable"],
        ),
        (
            "networkPolicy.enabeld=false",
            &["/networkPolicy", "additional properties 'enabeld' not allowed"],
        ),
    ];
    for (set, expected) in bad {
        let rendered = fails(
            Command::new(&helm)
                .args(["template", "azora"])
                .arg(&chart)
                .args(["--set", set]),
        )?;
        let linted = fails(
            Command::new(&helm)
                .args(["lint", "--strict"])
                .arg(&chart)
                .args(["--set", set]),
        )?;
        for out in [rendered, linted] {
            assert!(
                out.contains("values don't meet the specifications of the schema")
                    && expected.iter().all(|e| out.contains(e)),
                "--set {set} must be refused naming {expected:?}: {out}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn chart_lints_applies_and_its_rbac_is_enough_for_the_operator() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let chart = repo_root().join("charts/azora-operator");
    let helm = tool("helm")?;
    let kubectl = tool("kubectl")?;
    let kc = env.hub().kubeconfig.clone();
    run(Command::new(&helm).args(["lint", "--strict"]).arg(&chart), None)?;
    run(
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["create", "namespace", "azora-system"]),
        None,
    )?;
    // Rendered with the API server's own capabilities (what `helm install` sees): 1.20 serves
    // PodDisruptionBudget as policy/v1beta1 only.
    let render = |extra: &[&str]| {
        run(
            Command::new(&helm)
                .args(["template", "azora"])
                .arg(&chart)
                .args(["--namespace", "azora-system", "--dry-run=server", "--kubeconfig"])
                .arg(&kc)
                .args(extra),
            None,
        )
    };
    let rendered = render(&[])?;
    assert!(
        !rendered.contains("\"*\"") && !rendered.contains("- '*'") && !rendered.contains("[*]"),
        "no wildcards in RBAC"
    );
    assert!(rendered.contains("replicas: 2"));
    let objs = objects(&rendered)?;
    let pdbs = of_kind(&objs, "PodDisruptionBudget");
    assert!(
        pdbs.len() == 1 && pdbs[0]["apiVersion"] == "policy/v1beta1",
        "the 1.20 API server serves policy/v1beta1 only: {pdbs:?}"
    );
    assert!(of_kind(&objs, "NetworkPolicy").len() == 1);
    assert!(
        pod_spec(&objs)?["topologySpreadConstraints"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
    );
    let dry_run = |manifests: &str| {
        run(
            Command::new(&kubectl).arg("--kubeconfig").arg(&kc).args([
                "apply",
                "--dry-run=server",
                "-f",
                "-",
            ]),
            Some(manifests),
        )
    };
    let dry = dry_run(&rendered)?;
    for created in [
        "deployment.apps/azora-azora-operator",
        "poddisruptionbudget.policy/azora-azora-operator",
        "networkpolicy.networking.k8s.io/azora-azora-operator",
        "service/azora-azora-operator-metrics",
        "service/azora-azora-dns",
    ] {
        assert!(
            dry.contains(&format!("{created} created (server dry run)")),
            "{created}: {dry}"
        );
    }
    // Every non-default branch of the templates, accepted by the API server too.
    let values = env.dir.path().join("chart-values.yaml");
    std::fs::write(
        &values,
        r#"
podDisruptionBudget: {maxUnavailable: "50%"}
networkPolicy:
  ingress:
    metrics: {from: [{namespaceSelector: {matchLabels: {name: monitoring}}}]}
    probes: {from: [{ipBlock: {cidr: 10.0.0.0/8}}]}
  egress:
    allowAll: false
    apiServer: {cidrs: [10.96.0.1/32]}
    regions: {cidrs: [203.0.113.0/24], ports: [443, 9000]}
    extra: [{to: [{ipBlock: {cidr: 198.51.100.0/24}}]}]
topologySpread:
  zone: {whenUnsatisfiable: DoNotSchedule}
  hostname: {enabled: false}
  extraConstraints:
    - {topologyKey: topology.kubernetes.io/region, maxSkew: 2, whenUnsatisfiable: ScheduleAnyway,
       labelSelector: {matchLabels: {app.kubernetes.io/name: azora-operator}}}
# NodePort: a LoadBalancer Service with UDP and TCP needs Kubernetes 1.24+ (MixedProtocolLBService).
dns: {geoip: "10.0.0.0/8 EU\n", service: {type: NodePort, port: 53}}
"#,
    )?;
    let custom = render(&["-f", &values.to_string_lossy()])?;
    let objs = objects(&custom)?;
    let np = &of_kind(&objs, "NetworkPolicy")
        .first()
        .ok_or_else(|| anyhow::anyhow!("no NetworkPolicy"))?["spec"];
    assert!(
        np["ingress"].as_array().is_some_and(|r| r.len() == 3)
            && np["egress"].as_array().is_some_and(|r| r.len() == 4),
        "metrics, probes, DNS in; API server, DNS, regions, extra out: {np}"
    );
    let dry = dry_run(&custom)?;
    assert!(
        dry.contains("networkpolicy.networking.k8s.io/azora-azora-operator created (server dry run)")
            && dry.contains("poddisruptionbudget.policy/azora-azora-operator created (server dry run)")
            && dry.contains("configmap/azora-azora-geoip created (server dry run)"),
        "{dry}"
    );
    // Apply for real: ServiceAccount and RBAC take effect (the Deployment just waits: no kubelet here).
    run(
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["apply", "-f", "-"]),
        Some(&rendered),
    )?;

    let sa = "system:serviceaccount:azora-system:azora-operator";
    let groups = [
        "system:serviceaccounts",
        "system:serviceaccounts:azora-system",
        "system:authenticated",
    ];
    let sa_kubeconfig = env.hub().kubeconfig_as(sa, &groups, env.dir.path())?;
    // The ServiceAccount may not touch Secrets outside its namespace (nor, below, write specs): refused by RBAC
    // (403 Forbidden) — not any failure (a wrong kubeconfig, an unreachable server, a missing resource).
    let forbidden = |args: &[&str], what: &str| -> anyhow::Result<()> {
        let out = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&sa_kubeconfig)
            .args(args)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains("Error from server (Forbidden)")
                && stderr.contains(what),
            "kubectl {args:?} must be forbidden ({what}), got {}: {}{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(())
    };
    forbidden(
        &["get", "secrets", "-n", "default"],
        &format!(
            "User \"{sa}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
        ),
    )?;
    // the same through the API: kube's error is the API's 403
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.hub().client_as(sa, &groups).await?, "default");
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) if s.code == 403 && s.reason == "Forbidden" => {}
        other => panic!("listing Secrets in default as {sa} must be 403 Forbidden: {other:?}"),
    }

    let _op = Operator::start(
        &sa_kubeconfig,
        env.dir.path().join("operator.log"),
        &[],
        &[("POD_NAMESPACE", "azora-system")],
    )?;
    run(
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["apply", "--server-side", "-k"])
            .arg(repo_root().join("regions")),
        None,
    )?;
    let regions: Api<Region> = Api::all(env.hub().client().await?);
    let ok = wait::until(Duration::from_secs(60), || {
        let regions = regions.clone();
        async move {
            regions.list(&ListParams::default()).await.is_ok_and(|l| {
                l.items.len() == 4
                    && l.items.iter().all(|r| {
                        r.status.as_ref().is_some_and(|s| {
                            s.conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
                        })
                    })
            })
        }
    })
    .await;
    // Specs are not the operator's to write (once the Region exists, so the refusal is not a NotFound).
    forbidden(
        &[
            "patch",
            "region",
            "africa",
            "--type=merge",
            "-p",
            r#"{"spec":{"priority":1}}"#,
        ],
        &format!("User \"{sa}\" cannot patch resource \"regions\" in API group \"azora.io\""),
    )?;
    // A Tenant: the finalizer and the status go through under the chart's RBAC (no regional cluster is
    // configured here, so it reports SyncFailed — honestly not Ready).
    let tenants: Api<azora_api::Tenant> = Api::all(env.hub().client().await?);
    tenants
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "azora.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"},
                "spec": {"homeRegion": "africa"}
            }))?,
        )
        .await?;
    let placed = wait::until(Duration::from_secs(30), || {
        let tenants = tenants.clone();
        async move {
            tenants.get("acme").await.is_ok_and(|t| {
                t.metadata
                    .finalizers
                    .unwrap_or_default()
                    .contains(&"azora.io/tenant-cleanup".to_string())
                    && t.status.is_some_and(|s| s.placed_regions == ["africa"])
            })
        }
    })
    .await;
    assert!(placed, "tenant not handled under the chart's RBAC");
    let log = std::fs::read_to_string(env.dir.path().join("operator.log")).unwrap_or_default();
    assert!(
        ok,
        "operator under the chart's RBAC did not reconcile:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(
        !log.contains("forbidden"),
        "RBAC denials in the operator log:\n{log}"
    );
    Ok(())
}
