//! The Helm chart: `helm lint`, `helm template | kubectl apply --dry-run=server` against a real
//! kube-apiserver, and the operator running under the chart's own RBAC (impersonating its ServiceAccount)
//! still reconciles — proof the RBAC is sufficient, with no wildcards.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use azora_api::{ConditionStatus, Region};
use azora_tests::{Operator, TestEnv, repo_root, tool, wait};
use kube::Api;
use kube::api::ListParams;

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

#[tokio::test]
async fn chart_lints_applies_and_its_rbac_is_enough_for_the_operator() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let chart = repo_root().join("charts/azora-operator");
    let helm = tool("helm")?;
    let kubectl = tool("kubectl")?;
    let kc = env.hub().kubeconfig.clone();
    run(Command::new(&helm).arg("lint").arg(&chart), None)?;
    let rendered = run(
        Command::new(&helm)
            .args(["template", "azora"])
            .arg(&chart)
            .args(["--namespace", "azora-system"]),
        None,
    )?;
    assert!(
        !rendered.contains("\"*\"") && !rendered.contains("- '*'") && !rendered.contains("[*]"),
        "no wildcards in RBAC"
    );
    assert!(rendered.contains("replicas: 2"));
    run(
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["create", "namespace", "azora-system"]),
        None,
    )?;
    let dry = run(
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["apply", "--dry-run=server", "-f", "-"]),
        Some(&rendered),
    )?;
    assert!(
        dry.contains("deployment.apps/azora-azora-operator created (server dry run)"),
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
