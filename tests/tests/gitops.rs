//! GitOps: the Argo CD health checks (`gitops/argocd/health/<Kind>.lua`) run by a real Lua interpreter against
//! objects shaped by the API types, the `argocd-cm` patch carrying them verbatim, and the production overlay
//! (`regions/overlays/production`) applied with `kubectl apply -k` to a real API server. A missing Lua
//! interpreter fails the tests (run `tests/scripts/install-lua.sh`), it never skips them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use azora_api::{Condition, ConditionStatus, Region, Time};
use azora_tests::{TestEnv, cache_dir, repo_root, tool};
use serde_json::{Value, json};

const STATUSES: [&str; 5] = ["Healthy", "Progressing", "Degraded", "Suspended", "Missing"];

/// Ready=False reasons the operator uses for a spec no retry fixes (operator/core/src/validate/, the
/// pipeline's `MalformedSpec` and `NotYetSupported`): Degraded.
const DEGRADED_REASONS: [&str; 12] = [
    "InvalidProbes",
    "InvalidDuration",
    "InvalidSchedule",
    "InvalidFault",
    "ResidencyViolation",
    "SecretNotFound",
    "SecretKeyNotFound",
    "RegionNotFound",
    "TenantNotFound",
    "ObjectStoreMissing",
    "MalformedSpec",
    "NotYetSupported",
];

/// Ready=False reasons of work in progress or transient trouble: Progressing.
const PROGRESSING_REASONS: [&str; 4] = ["Running", "ProbesPending", "Unreachable", "ReconcileError"];

fn health_dir() -> PathBuf {
    repo_root().join("gitops/argocd/health")
}

/// The kinds of crds/, with each CRD's OpenAPI schema.
fn crd_kinds() -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(repo_root().join("crds"))? {
        let path = entry?.path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let crd: Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("{}: no spec.names.kind", path.display()))?
            .to_string();
        let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        anyhow::ensure!(schema.is_object(), "{}: no schema", path.display());
        out.insert(kind, schema);
    }
    anyhow::ensure!(
        out.len() == 9,
        "expected the nine azora.io kinds in crds/: {:?}",
        out.keys()
    );
    Ok(out)
}

/// A Lua interpreter: `lua5.4`, `lua5.3` or `lua` on PATH or in `~/.cache/azora/bin`.
fn lua() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(cache_dir().join("bin"));
    for name in ["lua5.4", "lua5.3", "lua"] {
        if let Some(p) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "no Lua interpreter (lua5.4, lua5.3 or lua) on PATH or in {}: run tests/scripts/install-lua.sh (make test-env)",
        cache_dir().join("bin").display()
    )
}

/// A Lua string literal.
fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Lua table literal for a JSON value, as Argo CD hands the object to the script.
fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs `<Kind>.lua` with the global `obj` set: (hs.status, hs.message).
fn health(lua: &Path, kind: &str, obj: &Value) -> anyhow::Result<(String, String)> {
    let script = health_dir().join(format!("{kind}.lua"));
    let code = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message), \"\\n\")",
        lua_literal(obj),
        lua_string(&script.to_string_lossy())
    );
    let out = Command::new(lua).arg("-e").arg(&code).output()?;
    anyhow::ensure!(
        out.status.success() && out.stderr.is_empty(),
        "{kind}.lua failed on {obj}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut lines = text.lines();
    let status = lines.next().unwrap_or_default().to_string();
    let message = lines.collect::<Vec<_>>().join("\n");
    anyhow::ensure!(
        STATUSES.contains(&status.as_str()),
        "{kind}.lua returned status {status:?} for {obj}"
    );
    Ok((status, message))
}

/// A condition exactly as the operator serializes it.
fn condition(type_: &str, status: ConditionStatus, reason: &str, message: &str) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(3),
        last_transition_time: Time::now(),
    })?)
}

fn ready(status: ConditionStatus, reason: &str, message: &str) -> anyhow::Result<Value> {
    condition("Ready", status, reason, message)
}

/// An object of `kind` at `generation`, with `status` when given.
fn object(kind: &str, generation: i64, status: Option<Value>) -> Value {
    let mut obj = json!({
        "apiVersion": "azora.io/v1alpha1",
        "kind": kind,
        "metadata": { "name": "fixture", "generation": generation, "uid": "5c3f4d3e-0000-4000-8000-000000000001" },
        "spec": {},
    });
    if let Some(s) = status {
        obj["status"] = s;
    }
    obj
}

/// A status observed at generation 3 with these conditions (SpecValid alongside, as the operator writes).
fn status(conditions: Vec<Value>) -> anyhow::Result<Value> {
    let mut all = vec![condition(
        "SpecValid",
        ConditionStatus::True,
        "Valid",
        "spec passed validation",
    )?];
    all.extend(conditions);
    Ok(json!({ "observedGeneration": 3, "conditions": all }))
}

fn expect(lua: &Path, kind: &str, obj: &Value, want: &str, message_has: &str) -> anyhow::Result<()> {
    let (got, message) = health(lua, kind, obj)?;
    assert!(
        got == want && message.contains(message_has),
        "{kind}: expected {want} with a message containing {message_has:?}, got {got}: {message:?}\nfor {obj}"
    );
    Ok(())
}

#[test]
fn every_kind_has_a_health_check_in_the_argocd_cm_patch_identical_to_its_script() -> anyhow::Result<()> {
    let kinds: BTreeSet<String> = crd_kinds()?.into_keys().collect();
    let mut scripts = BTreeMap::new();
    for entry in std::fs::read_dir(health_dir())? {
        let path = entry?.path();
        if let Some(kind) = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(".lua"))
        {
            scripts.insert(kind.to_string(), std::fs::read_to_string(&path)?);
        }
    }
    assert_eq!(
        scripts.keys().cloned().collect::<BTreeSet<_>>(),
        kinds,
        "one gitops/argocd/health/<Kind>.lua per kind of crds/"
    );

    let patch: Value = serde_yaml::from_str(&std::fs::read_to_string(
        repo_root().join("gitops/argocd/argocd-cm-patch.yaml"),
    )?)?;
    assert_eq!(patch["apiVersion"], "v1");
    assert_eq!(patch["kind"], "ConfigMap");
    assert_eq!(patch["metadata"]["name"], "argocd-cm");
    assert_eq!(patch["metadata"]["namespace"], "argocd");
    let data = patch["data"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("argocd-cm-patch.yaml has no data"))?;
    let want: BTreeSet<String> = kinds
        .iter()
        .map(|k| format!("resource.customizations.health.azora.io_{k}"))
        .collect();
    assert_eq!(data.keys().cloned().collect::<BTreeSet<_>>(), want);
    for (kind, script) in &scripts {
        let key = format!("resource.customizations.health.azora.io_{kind}");
        assert!(
            data.get(&key).and_then(Value::as_str) == Some(script.as_str()),
            "{key} differs from gitops/argocd/health/{kind}.lua: run gitops/argocd/generate-cm-patch.sh"
        );
        // Argo CD runs gopher-lua (Lua 5.1): nothing newer than 5.1 may appear.
        for newer in [
            "goto ",
            "//",
            "<const>",
            "<close>",
            "utf8.",
            "table.move",
            "math.tointeger",
        ] {
            assert!(!script.contains(newer), "{kind}.lua uses {newer:?}, not Lua 5.1");
        }
    }
    Ok(())
}

#[test]
fn health_checks_read_ready_and_observed_generation_for_every_kind() -> anyhow::Result<()> {
    let lua = lua()?;
    for (kind, schema) in crd_kinds()? {
        let props = &schema["properties"]["status"]["properties"];
        for field in ["observedGeneration", "conditions"] {
            assert!(
                props[field].is_object(),
                "{kind}: status.{field} missing from the CRD"
            );
        }
        let k = kind.as_str();

        // Ready=True at the current generation: Healthy, with the condition's message.
        let ok = object(
            k,
            3,
            Some(status(vec![ready(
                ConditionStatus::True,
                "Ready",
                "all good here",
            )?])?),
        );
        expect(&lua, k, &ok, "Healthy", "all good here")?;

        // The spec changed since the operator last looked: Progressing, even though Ready is still True.
        let stale = object(
            k,
            4,
            Some(status(vec![ready(ConditionStatus::True, "Ready", "old")?])?),
        );
        expect(
            &lua,
            k,
            &stale,
            "Progressing",
            "waiting for the operator to observe generation 4",
        )?;

        // Not looked at yet: no status, or a status without observedGeneration.
        expect(
            &lua,
            k,
            &object(k, 1, None),
            "Progressing",
            "observe generation 1",
        )?;
        let bare = object(k, 1, Some(json!({ "conditions": [] })));
        expect(&lua, k, &bare, "Progressing", "observe generation 1")?;

        // Observed, but no Ready condition yet.
        let no_ready = object(k, 3, Some(status(vec![])?));
        expect(&lua, k, &no_ready, "Progressing", "Ready")?;

        // Ready=Unknown: Progressing.
        let unknown = object(
            k,
            3,
            Some(status(vec![ready(
                ConditionStatus::Unknown,
                "Probing",
                "first round running",
            )?])?),
        );
        expect(&lua, k, &unknown, "Progressing", "first round running")?;

        // Ready=False because the spec is invalid or a reference is missing: Degraded, with the message.
        for reason in DEGRADED_REASONS {
            let msg = format!("{reason} details for {k}");
            let bad = object(
                k,
                3,
                Some(status(vec![ready(ConditionStatus::False, reason, &msg)?])?),
            );
            expect(&lua, k, &bad, "Degraded", &msg)?;
            // Invalid wins over a later spec.suspend too.
            let mut suspended = bad.clone();
            suspended["spec"]["suspend"] = json!(true);
            expect(&lua, k, &suspended, "Degraded", &msg)?;
        }

        // Ready=False for anything else (work in progress, transient trouble): Progressing.
        // (Backup and Restore too, before they have a phase.)
        for reason in PROGRESSING_REASONS {
            let msg = format!("{reason} details");
            let busy = object(
                k,
                3,
                Some(status(vec![ready(ConditionStatus::False, reason, &msg)?])?),
            );
            expect(&lua, k, &busy, "Progressing", &msg)?;
        }

        // Kinds with spec.suspend: Suspended while it is set.
        if schema["properties"]["spec"]["properties"]["suspend"].is_object() {
            let mut suspended = ok.clone();
            suspended["spec"]["suspend"] = json!(true);
            expect(&lua, k, &suspended, "Suspended", "suspend")?;
            suspended["spec"]["suspend"] = json!(false);
            expect(&lua, k, &suspended, "Healthy", "all good here")?;
        }
    }
    Ok(())
}

#[test]
fn backup_and_restore_health_follows_the_phase() -> anyhow::Result<()> {
    let lua = lua()?;
    let kinds = crd_kinds()?;
    let phased: Vec<(&String, &Value)> = kinds
        .iter()
        .filter(|(_, s)| s["properties"]["status"]["properties"]["phase"].is_object())
        .collect();
    assert_eq!(
        phased.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["Backup", "Restore"],
        "the kinds with status.phase"
    );
    for (kind, schema) in phased {
        let k = kind.as_str();
        let phases = schema["properties"]["status"]["properties"]["phase"]["enum"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("{k}: status.phase has no enum"))?;
        assert!(phases.len() >= 5, "{k}: {phases:?}");
        for phase in phases {
            let phase = phase
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("{k}: phase {phase}"))?;
            // Ready as the operator sets it in that phase: True only when Succeeded.
            let (want, ready_cond) = match phase {
                "Pending" | "Running" | "Verifying" => (
                    "Progressing",
                    ready(ConditionStatus::False, "Running", "copying to 2 regions")?,
                ),
                "Succeeded" => (
                    "Healthy",
                    ready(ConditionStatus::True, "Succeeded", "copying to 2 regions done")?,
                ),
                "Failed" | "PartiallyFailed" => (
                    "Degraded",
                    ready(
                        ConditionStatus::False,
                        "CopyFailed",
                        "copying to 2 regions failed",
                    )?,
                ),
                other => anyhow::bail!("{k}: phase {other} is new: map it in the health check and here"),
            };
            let mut st = status(vec![ready_cond])?;
            st["phase"] = json!(phase);
            let obj = object(k, 3, Some(st));
            expect(&lua, k, &obj, want, phase)?;
            expect(&lua, k, &obj, want, "copying to 2 regions")?;
            // A phase without any condition yet.
            let obj = object(k, 3, Some(json!({ "observedGeneration": 3, "phase": phase })));
            expect(&lua, k, &obj, want, phase)?;
            // A new generation not yet observed beats the phase.
            let mut st = status(vec![])?;
            st["phase"] = json!(phase);
            expect(&lua, k, &object(k, 5, Some(st)), "Progressing", "generation 5")?;
        }
        // Before any phase: Ready decides, as for the other kinds.
        let invalid = object(
            k,
            3,
            Some(status(vec![ready(
                ConditionStatus::False,
                "BackupNotFound",
                "backup nightly-1 not found",
            )?])?),
        );
        expect(&lua, k, &invalid, "Degraded", "backup nightly-1 not found")?;
        let waiting = object(k, 3, Some(status(vec![])?));
        expect(&lua, k, &waiting, "Progressing", "Ready")?;
    }
    Ok(())
}

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

#[tokio::test]
async fn the_production_overlay_applies_with_kubectl_apply_k_and_its_patches_land() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let overlay = repo_root().join("regions/overlays/production");
    let out = kubectl(
        &env,
        &["apply", "--server-side", "-k", &overlay.to_string_lossy()],
    )?;
    for region in ["africa", "europe", "asia", "americas"] {
        assert!(
            out.contains(&format!("region.azora.io/{region} serverside-applied")),
            "{out}"
        );
    }
    assert_eq!(out.lines().count(), 4, "only the four Regions: {out}");

    let list: Value = serde_json::from_str(&kubectl(&env, &["get", "regions", "-o", "json"])?)?;
    let items = list["items"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("not a list: {list}"))?;
    assert_eq!(items.len(), 4);
    let base = repo_root().join("regions/base");
    for (name, role, ip) in [
        ("africa", "primary", "203.0.113.11"),
        ("europe", "secondary", "203.0.113.12"),
        ("asia", "tertiary", "203.0.113.13"),
        ("americas", "backup", "203.0.113.14"),
    ] {
        let r = items
            .iter()
            .find(|r| r["metadata"]["name"] == name)
            .ok_or_else(|| anyhow::anyhow!("region {name} missing"))?;
        let labels = &r["metadata"]["labels"];
        assert_eq!(labels["environment"], "production", "{name}: {labels}");
        assert_eq!(labels["azora.io/role"], role, "{name}: base labels kept");
        let spec = &r["spec"];
        let probes = &spec["probes"];
        assert_eq!(probes["interval"], "10s", "{name}: {probes}");
        assert_eq!(probes["timeout"], "5s", "{name}: {probes}");
        assert_eq!(probes["failureThreshold"], 3, "{name}: {probes}");
        assert_eq!(probes["successThreshold"], 3, "{name}: unpatched fields kept");
        assert_eq!(probes["quorum"], 2, "{name}: {probes}");
        let api = &probes["endpoints"][0];
        assert_eq!(api["name"], "api");
        assert_eq!(api["type"], "HTTPS");
        assert_eq!(
            api["url"],
            format!("https://api.{name}.azora.example.com/healthz")
        );
        let ingress = &probes["endpoints"][1];
        assert_eq!(ingress["name"], "ingress");
        assert_eq!(ingress["address"], format!("{ip}:443"));
        assert_eq!(spec["dns"]["ipv4"], json!([ip]), "{name}");
        assert_eq!(
            spec["objectStore"]["endpoint"],
            format!("https://s3.{name}.azora.example.com")
        );
        assert_eq!(spec["objectStore"]["forcePathStyle"], false);
        assert_eq!(spec["objectStore"]["bucket"], format!("azora-{name}"));
        assert!(
            spec["cordoned"].as_bool() != Some(true),
            "{name}: the cordon patch is an example, commented out"
        );
        // Everything else comes from regions/ unchanged.
        let original: Value =
            serde_yaml::from_str(&std::fs::read_to_string(base.join(format!("{name}.yaml")))?)?;
        assert_eq!(spec["location"], original["spec"]["location"], "{name}");
        assert_eq!(spec["priority"], original["spec"]["priority"], "{name}");

        // The patched spec still passes the operator's own validation (timeout below interval, ...).
        let region: Region = serde_json::from_value(r.clone())?;
        let problems = azora_core::validate::region(&region.spec, &azora_core::world::World::default());
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }

    // Applying the overlay again changes nothing (GitOps): same resourceVersions.
    let versions = |list: &Value| -> BTreeMap<String, String> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                    r["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    };
    kubectl(
        &env,
        &["apply", "--server-side", "-k", &overlay.to_string_lossy()],
    )?;
    let again: Value = serde_json::from_str(&kubectl(&env, &["get", "regions", "-o", "json"])?)?;
    assert_eq!(
        versions(&again),
        versions(&list),
        "a second apply changed the Regions"
    );
    Ok(())
}
