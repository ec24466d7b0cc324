//! The CRDs and the repository's manifests against a real kube-apiserver: server-side apply of the CRDs,
//! `kubectl apply -k` of regions/, policies/ and chaos/, printer columns, the `azora` category, and the
//! operator (started with only KUBECONFIG) putting Ready on all four Regions.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use azora_api::{ConditionStatus, Region};
use azora_tests::{Operator, TestEnv, repo_root, tool, wait};
use kube::Api;
use kube::api::ListParams;

fn kubectl(env: &TestEnv, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(tool("kubectl")?)
        .arg("--kubeconfig")
        .arg(&env.hub().kubeconfig)
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `resourceVersion` and `generation` of every object of the kustomizations in `dirs`, by the name
/// `kubectl apply -o name` prints for it (`region.azora.io/africa`; namespaced objects also by namespace).
fn versions(env: &TestEnv, dirs: &[&str]) -> anyhow::Result<BTreeMap<String, (String, Option<i64>)>> {
    let mut out = BTreeMap::new();
    for dir in dirs {
        let json = kubectl(
            env,
            &[
                "get",
                "-k",
                &repo_root().join(dir).to_string_lossy(),
                "-o",
                "json",
            ],
        )?;
        let list: serde_json::Value = serde_json::from_str(&json)?;
        let items = list["items"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("{dir}: not a list: {json}"))?;
        for o in items {
            let kind = o["kind"].as_str().unwrap_or_default().to_lowercase();
            let api_version = o["apiVersion"].as_str().unwrap_or_default();
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            let key = match api_version.split_once('/') {
                Some((group, _)) => format!("{kind}.{group}/{name}"),
                None => format!("{kind}/{name}"),
            };
            let key = match o["metadata"]["namespace"].as_str() {
                Some(ns) => format!("{key} -n {ns}"),
                None => key,
            };
            let rv = o["metadata"]["resourceVersion"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("{key} has no resourceVersion"))?
                .to_string();
            out.insert(key, (rv, o["metadata"]["generation"].as_i64()));
        }
    }
    Ok(out)
}

/// The names `kubectl apply -o name` printed (namespace-less, as kubectl prints them).
fn applied_names(out: &str) -> BTreeSet<String> {
    out.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test]
async fn manifests_apply_and_the_operator_makes_every_region_ready_within_90s() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let root = repo_root();
    let dirs = ["regions", "policies", "chaos"];
    let mut applied = BTreeSet::new();
    for dir in dirs {
        let out = kubectl(
            &env,
            &["apply", "--server-side", "-k", &root.join(dir).to_string_lossy()],
        )?;
        assert!(out.contains("serverside-applied"), "{dir}: {out}");
        applied.extend(
            out.lines()
                .filter_map(|l| l.strip_suffix(" serverside-applied"))
                .map(str::to_string),
        );
    }
    // Applying the same manifests twice changes nothing (GitOps): no object applied gets a new
    // resourceVersion or generation (kubectl prints "serverside-applied" either way). No controller runs
    // yet, so nothing else writes to them in between.
    let before = versions(&env, &dirs)?;
    let names = |v: &BTreeMap<String, _>| -> BTreeSet<String> {
        v.keys()
            .map(|k| k.split(" -n ").next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(names(&before), applied, "every applied object is compared");
    assert!(
        applied.contains("region.azora.io/africa")
            && applied.contains("drdrill.azora.io/monthly-lose-africa"),
        "{applied:?}"
    );
    let mut again = BTreeSet::new();
    for dir in dirs {
        let out = kubectl(
            &env,
            &[
                "apply",
                "--server-side",
                "-k",
                &root.join(dir).to_string_lossy(),
                "-o",
                "name",
            ],
        )?;
        again.extend(applied_names(&out));
    }
    assert_eq!(again, applied, "the second apply applied the same objects");
    let after = versions(&env, &dirs)?;
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", before.get(k), after.get(k)))
        .collect();
    assert!(
        changed.is_empty(),
        "the second apply changed objects (resourceVersion, generation):\n{}",
        changed.join("\n")
    );

    let header = kubectl(&env, &["get", "regions"])?;
    let first = header.lines().next().unwrap_or_default().to_string();
    for col in [
        "NAME", "CITY", "PRIORITY", "VERDICT", "SERVING", "SINCE", "READY", "AGE",
    ] {
        assert!(first.contains(col), "kubectl get regions lacks {col}: {first}");
    }
    for region in ["africa", "europe", "asia", "americas"] {
        assert!(header.contains(region), "{header}");
    }
    assert!(
        header.contains("Lagos") && header.contains("São Paulo"),
        "{header}"
    );
    let short = kubectl(&env, &["get", "rg", "-o", "name"])?;
    assert_eq!(short.lines().count(), 4, "{short}");
    let all = kubectl(&env, &["get", "azora"])?;
    for kind in [
        "region.azora.io/africa",
        "failoverpolicy.azora.io/platform",
        "backupschedule.azora.io/platform",
        "chaosexperiment.azora.io/daily-africa-outage",
        "drdrill.azora.io/monthly-lose-africa",
    ] {
        assert!(all.contains(kind), "kubectl get azora lacks {kind}:\n{all}");
    }
    let explain = kubectl(&env, &["explain", "region.spec.probes.interval"])?;
    assert!(explain.contains("Time between two probes"), "{explain}");

    let started = Instant::now();
    let _op = Operator::start_exactly(
        &env.hub().kubeconfig,
        env.dir.path().join("operator.log"),
        &[],
        &[],
    )?;
    let regions: Api<Region> = Api::all(env.hub().client().await?);
    let ready = wait::until(Duration::from_secs(90), || {
        let regions = regions.clone();
        async move {
            let Ok(list) = regions.list(&ListParams::default()).await else {
                return false;
            };
            list.items.len() == 4 && list.items.iter().all(region_ready_at_generation)
        }
    })
    .await;
    let list = regions.list(&ListParams::default()).await?;
    assert!(
        ready,
        "regions not Ready within 90s: {:#?}",
        list.items.iter().map(|r| &r.status).collect::<Vec<_>>()
    );
    println!(
        "all four regions Ready after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let table = kubectl(&env, &["get", "regions"])?;
    println!("{table}");
    assert_eq!(
        table.lines().skip(1).filter(|l| l.contains("True")).count(),
        4,
        "{table}"
    );
    Ok(())
}

fn region_ready_at_generation(r: &Region) -> bool {
    let generation = r.metadata.generation;
    r.status.as_ref().is_some_and(|s| {
        s.observed_generation == generation
            && s.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.status == ConditionStatus::True && c.observed_generation == generation
            })
    })
}
