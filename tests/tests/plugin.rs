//! `kubectl azora` end to end: the real plugin binary against a real API server, the real operator and
//! simulated region processes; outages made with signals; DNS read from the operator's embedded server.
//! Also the plugin as a person sees it, in a real terminal (tmux), and every runbook command it names.

use std::path::Path;
use std::time::Duration;

use azora_tests::operator::{PluginRun, plugin};
use azora_tests::scenario::Scenario;
use serde_json::Value;

const RUN: Duration = Duration::from_secs(150);

async fn azora(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<PluginRun> {
    plugin(kubeconfig, args, RUN).await
}

fn ip(s: &str) -> anyhow::Result<std::net::Ipv4Addr> {
    Ok(s.parse()?)
}

/// The FailoverPolicy's generation, spec, labels and annotations (what a user's write changes; status writes
/// do not).
async fn policy_spec(s: &Scenario) -> anyhow::Result<(Option<i64>, Value, Value, Value)> {
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        s.env.hub().client().await?,
        &azora_tests::scenario::ar("FailoverPolicy", "failoverpolicies"),
    );
    let p = api.get("platform").await?;
    Ok((
        p.metadata.generation,
        p.data["spec"].clone(),
        serde_json::to_value(&p.metadata.labels)?,
        serde_json::to_value(&p.metadata.annotations)?,
    ))
}

fn json(run: &PluginRun) -> anyhow::Result<Value> {
    assert_eq!(run.code, 0, "{run:?}");
    Ok(serde_json::from_str(&run.stdout)?)
}

#[tokio::test]
async fn status_timeline_and_every_action_do_what_they_say_with_wait() -> anyhow::Result<()> {
    let mut s = Scenario::start(3).await?;
    // A long hold-down: traffic returns to a recovered region only when approved.
    s.policy("10m", serde_json::json!({})).await?;
    s.add_operator(&[])?;
    let kc = s.env.hub().kubeconfig.clone();
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some(),
        "DNS never answered africa:\n{}",
        s.log_tail(0, 30)
    );
    assert!(
        s.wait_all_healthy(Duration::from_secs(30)).await,
        "regions never all Healthy"
    );

    // status -o json: a stable document that parses.
    let st = json(&azora(&kc, &["status", "-o", "json"]).await?)?;
    assert_eq!(st["kind"], "Status");
    let names: Vec<&str> = st["regions"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["africa", "europe", "asia"], "{st}");
    assert_eq!(st["regions"][0]["verdict"], "Healthy");
    assert_eq!(st["regions"][0]["serving"], true);
    assert_eq!(st["regions"][1]["serving"], false);
    assert_eq!(st["policies"][0]["name"], "platform");
    assert_eq!(st["policies"][0]["activeRegion"], "africa");
    // YAML carries the same document.
    let yaml = azora(&kc, &["status", "-o", "yaml"]).await?;
    assert_eq!(yaml.code, 0, "{yaml:?}");
    assert!(
        yaml.stdout.contains("kind: Status") && yaml.stdout.contains("activeRegion: africa"),
        "{yaml:?}"
    );

    // Bad input: refused with a clear error, nothing written (the policy's generation and spec do not move).
    let spec_before = policy_spec(&s).await?;
    let bad = azora(&kc, &["failover", "platform", "--to", "mars", "--wait"]).await?;
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr.contains("mars does not exist") && bad.stderr.contains("nothing was changed"),
        "{bad:?}"
    );
    let bad = azora(&kc, &["approve-failback", "platform", "mars"]).await?;
    assert!(
        bad.code == 1 && bad.stderr.contains("nothing was changed"),
        "{bad:?}"
    );
    let bad = azora(&kc, &["timeline", "nosuchpolicy"]).await?;
    assert!(bad.code == 1 && bad.stderr.contains("does not exist"), "{bad:?}");
    assert_eq!(
        policy_spec(&s).await?,
        spec_before,
        "bad input changed the policy"
    );

    // A manual failover, with --wait: exit 0 only once DNS answers asia, recorded with who asked.
    let to_asia = [
        "failover",
        "platform",
        "--to",
        "asia",
        "--reason",
        "INC-1",
        "--wait",
        "--timeout",
        "60s",
    ];
    let run = azora(&kc, &to_asia).await?;
    assert_eq!(run.code, 0, "{run:?}\n{}", s.log_tail(0, 30));
    assert_eq!(
        s.answer(0).await,
        vec![ip("127.0.0.13")?],
        "--wait returned before DNS moved"
    );
    let tl = json(&azora(&kc, &["timeline", "platform", "-o", "json"]).await?)?;
    let newest = &tl["failovers"][0];
    assert_eq!(newest["reason"], "Manual", "{tl}");
    assert_eq!(
        (newest["from"].as_str(), newest["to"].as_str()),
        (Some("africa"), Some("asia"))
    );
    assert_eq!(newest["requestedBy"], "admin", "who asked is recorded: {tl}");
    assert!(newest["verifiedTime"].is_string(), "{tl}");
    let st = json(&azora(&kc, &["status", "-o", "json"]).await?)?;
    assert_eq!(st["policies"][0]["manual"]["honored"], true, "{st}");
    assert_eq!(st["policies"][0]["manual"]["reason"], "INC-1");

    // Cleared while it is in force: --wait returns once traffic is back with the policy's first region.
    let run = azora(
        &kc,
        &["failover", "platform", "--clear", "--wait", "--timeout", "60s"],
    )
    .await?;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        s.answer(0).await,
        vec![ip("127.0.0.11")?],
        "--clear --wait returned before DNS moved back"
    );
    let tl = json(&azora(&kc, &["timeline", "platform", "-o", "json"]).await?)?;
    assert_eq!(tl["failovers"][0]["reason"], "ManualCleared", "{tl}");
    let st = json(&azora(&kc, &["status", "-o", "json"]).await?)?;
    assert!(st["policies"][0]["manual"].is_null(), "{st}");

    // Pinned again, the region fails: the policy's own rules take over (no traffic to a dead region), and
    // asking again for asia is refused by the operator with its reason (exit 2); the request stays armed.
    let run = azora(&kc, &to_asia).await?;
    assert_eq!(run.code, 0, "{run:?}");
    s.regions[2].stop();
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some(),
        "DNS stayed on a stopped, pinned asia:\n{}",
        s.log_tail(0, 40)
    );
    let run = azora(&kc, &to_asia).await?;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("asia is Down") && run.stderr.contains("--clear"),
        "the reason is named, and how to withdraw: {run:?}"
    );
    s.regions[2].resume();
    let run = azora(
        &kc,
        &["failover", "platform", "--clear", "--wait", "--timeout", "60s"],
    )
    .await?;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(s.answer(0).await, vec![ip("127.0.0.11")?]);

    // Cordon: exit 0 only once nothing is sent to africa.
    let run = azora(&kc, &["cordon", "africa", "--wait", "--timeout", "60s"]).await?;
    assert_eq!(run.code, 0, "{run:?}\n{}", s.log_tail(0, 30));
    assert_eq!(
        s.answer(0).await,
        vec!["127.0.0.12".parse::<std::net::Ipv4Addr>()?],
        "cordoned africa still answered"
    );
    assert_eq!(s.region_status("africa").await?["verdict"], "Cordoned");
    // A manual failover to a cordoned region is refused before anything is written.
    let run = azora(&kc, &["failover", "platform", "--to", "africa"]).await?;
    assert!(run.code == 1 && run.stderr.contains("cordoned"), "{run:?}");
    let run = azora(&kc, &["uncordon", "africa", "--wait", "--timeout", "60s"]).await?;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(30))
            .await
            .is_some(),
        "an uncordoned africa (never down) did not take its traffic back"
    );

    // approve-failback: africa goes down and recovers; the 10-minute hold-down keeps traffic in europe until
    // the approval, and --wait returns once DNS answers africa again.
    s.regions[0].stop();
    assert!(
        s.wait_answer(0, "127.0.0.12", Duration::from_secs(60))
            .await
            .is_some(),
        "no failover to europe"
    );
    assert!(
        azora_tests::wait::until(Duration::from_secs(30), || async {
            s.region_status("africa")
                .await
                .is_ok_and(|st| st["verdict"] == "Down")
        })
        .await,
        "africa never recorded Down"
    );
    let early = azora(&kc, &["approve-failback", "platform", "africa", "--wait"]).await?;
    assert!(
        early.code == 1 && early.stderr.contains("is Down") && early.stderr.contains("nothing was changed"),
        "approving a region still down must be refused: {early:?}"
    );
    s.regions[0].resume();
    assert!(
        azora_tests::wait::until(Duration::from_secs(60), || async {
            s.region_status("africa")
                .await
                .is_ok_and(|st| st["verdict"] == "Healthy")
        })
        .await,
        "africa never recovered"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        s.answer(0).await,
        vec!["127.0.0.12".parse::<std::net::Ipv4Addr>()?],
        "failback before the hold-down"
    );
    let run = azora(
        &kc,
        &[
            "approve-failback",
            "platform",
            "africa",
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await?;
    assert_eq!(run.code, 0, "{run:?}\n{}", s.log_tail(0, 30));
    assert_eq!(
        s.answer(0).await,
        vec!["127.0.0.11".parse::<std::net::Ipv4Addr>()?]
    );

    // The timeline as a table shows the whole story, newest first.
    let table = azora(&kc, &["timeline", "platform"]).await?;
    assert_eq!(table.code, 0, "{table:?}");
    let reasons: Vec<&str> = table
        .stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(
        reasons.first().copied(),
        Some("Failback"),
        "newest first:\n{}",
        table.stdout
    );
    for r in ["Manual", "RegionDown", "Cordoned"] {
        assert!(
            reasons.contains(&r),
            "{r} missing from the timeline:\n{}",
            table.stdout
        );
    }
    assert!(
        !table.stdout.contains('\x1b'),
        "piped output carries colour codes"
    );

    // What a person sees: the status screen in a real terminal, in colour.
    let screen = in_terminal(&kc, "status").await?;
    assert!(
        screen.contains("REGIONS") && screen.contains("FAILOVER POLICIES") && screen.contains("TENANTS"),
        "{screen}"
    );
    assert!(
        screen.contains("\x1b[32mHealthy"),
        "no colour on a terminal:\n{screen}"
    );
    let plain = strip_colour(&screen);
    let line = plain
        .lines()
        .find(|l| l.starts_with("platform"))
        .unwrap_or_default();
    assert!(line.contains("africa") && line.contains("Failback"), "{plain}");
    Ok(())
}

/// The screen without its SGR escape sequences.
fn strip_colour(s: &str) -> String {
    let mut out = String::new();
    let mut escape = false;
    for c in s.chars() {
        match (escape, c) {
            (false, '\x1b') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// Runs `kubectl azora <args>` in a detached tmux session and returns the screen with its colours.
async fn in_terminal(kubeconfig: &Path, args: &str) -> anyhow::Result<String> {
    let bin = azora_tests::operator::workspace_bin("kubectl-azora")?;
    let socket = kubeconfig.with_extension("tmux");
    let tmux = |a: &[&str]| {
        std::process::Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(a)
            .output()
    };
    // The test runner may ask its children for no colour (NO_COLOR); a person's terminal does not.
    let command = format!(
        "env -u NO_COLOR {} --kubeconfig {} {args}; sleep 30",
        bin.display(),
        kubeconfig.display()
    );
    let out = tmux(&[
        "new-session",
        "-d",
        "-x",
        "200",
        "-y",
        "50",
        "-s",
        "azora",
        &command,
    ])?;
    assert!(
        out.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut screen = String::new();
    for _ in 0..240 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let out = tmux(&["capture-pane", "-p", "-e", "-t", "azora"])?;
        screen = String::from_utf8_lossy(&out.stdout).into_owned();
        if screen.contains("CHAOS AND DRILLS") {
            break;
        }
    }
    let _ = tmux(&["kill-server"]);
    anyhow::ensure!(
        screen.contains("CHAOS AND DRILLS"),
        "the status screen never finished drawing within 60 s:\n{screen}"
    );
    Ok(screen)
}

/// Every `kubectl azora ...` command a runbook names on a line of its own parses: its `--help` exits 0 with the
/// same arguments (a misspelt command or flag fails).
#[tokio::test]
async fn every_runbook_command_exists() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = azora_tests::operator::workspace_bin("kubectl-azora")?;
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("runbooks"))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("kubectl azora ") else {
                continue;
            };
            let rest = rest.split(" |").next().unwrap_or(rest);
            let args: Vec<String> = rest
                .split_whitespace()
                .map(|a| a.trim_matches(|c| c == '\'' || c == '"').to_string())
                .collect();
            let out = std::process::Command::new(&bin)
                .args(&args)
                .arg("--help")
                .output()?;
            assert!(
                out.status.success(),
                "{}: `{line}` does not parse: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "the runbooks name only {checked} kubectl azora commands"
    );
    Ok(())
}

/// `kubectl azora backup` and `restore` against regional clusters and S3 stores: a backup now with the
/// schedule's key (Secrets sealed in), every copy verified; a restore into a scratch namespace in europe from
/// europe's own copy; a restore into a region outside the tenant's residency refused by the operator (exit 2);
/// bad input refused before anything is created.
#[tokio::test]
async fn backup_and_restore_with_wait() -> anyhow::Result<()> {
    use azora_tests::fleet::Fleet;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::api::{Api, DynamicObject, ListParams, PostParams};

    let mut fleet = Fleet::start(&["africa", "europe", "asia"]).await?;
    fleet.start_operator(&[])?;
    let kc = fleet.env.hub().kubeconfig.clone();
    let hub = fleet.hub().await?;
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "backup-key"},
                "stringData": {"key": "0123456789abcdef0123456789abcdef"}}))?,
        )
        .await?;
    fleet
        .tenant(
            "acme",
            serde_json::json!({"homeRegion": "africa", "failoverRegions": ["europe"],
                               "residency": {"allowedContinents": ["Africa", "Europe"]}}),
        )
        .await?;
    assert!(
        fleet
            .wait_condition("acme", "Ready", "True", Duration::from_secs(90))
            .await,
        "tenant never Ready"
    );
    let cms: Api<ConfigMap> = Api::namespaced(fleet.regional("africa").await?, "tenant-acme");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            serde_json::json!({"metadata": {"name": "checkout"}, "data": {"currency": "NGN"}}),
        )?,
    )
    .await?;
    azora_tests::scenario::create(
        &hub,
        "backupschedules",
        serde_json::json!({"apiVersion": "azora.io/v1alpha1", "kind": "BackupSchedule", "metadata": {"name": "daily"},
               "spec": {"every": "24h", "encryptionKey": {"name": "backup-key", "key": "key"}}}),
    )
    .await?;
    let backups: Api<DynamicObject> =
        Api::all_with(hub.clone(), &azora_tests::scenario::ar("Backup", "backups"));
    let restores: Api<DynamicObject> =
        Api::all_with(hub.clone(), &azora_tests::scenario::ar("Restore", "restores"));

    // Bad input: nothing created.
    let bad = azora(&kc, &["backup", "nobody", "--wait"]).await?;
    assert!(bad.code == 1 && bad.stderr.contains("does not exist"), "{bad:?}");
    let bad = azora(&kc, &["restore", "nosuchbackup", "--to", "europe", "--wait"]).await?;
    assert!(
        bad.code == 1 && bad.stderr.contains("nothing was changed"),
        "{bad:?}"
    );
    assert!(restores.list(&ListParams::default()).await?.items.is_empty());

    // A backup now: exit 0 only once every copy is verified; the schedule's key seals the Secrets in.
    let run = azora(&kc, &["backup", "acme", "--wait", "--timeout", "120s"]).await?;
    assert_eq!(
        run.code,
        0,
        "{run:?}\n{}",
        fleet.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    let name = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("backup.azora.io/")?.strip_suffix(" created"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(name.starts_with("acme-manual-"), "{run:?}");
    let b = backups.get(&name).await?;
    let st = &b.data["status"];
    assert_eq!(st["phase"], "Succeeded", "{st}");
    assert_eq!(
        st["secretsIncluded"], true,
        "the schedule's key was not used: {st}"
    );
    let mut regions: Vec<&str> = st["locations"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|x| x["verified"] == true)
                .filter_map(|x| x["region"].as_str())
                .collect()
        })
        .unwrap_or_default();
    regions.sort_unstable();
    assert_eq!(regions, ["africa", "europe"], "{st}");
    assert!(
        b.metadata
            .labels
            .unwrap_or_default()
            .contains_key("azora.io/requested-by")
    );

    // Restored into a scratch namespace in europe, verified: exit 0 only once it is done.
    let run = azora(
        &kc,
        &[
            "restore",
            &name,
            "--to",
            "europe",
            "--namespace",
            "acme-check",
            "--wait",
            "--timeout",
            "120s",
        ],
    )
    .await?;
    assert_eq!(
        run.code,
        0,
        "{run:?}\n{:?}\n{}",
        restores
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|r| (
                r.data["status"]["phase"].clone(),
                r.data["status"]["timeline"].clone()
            ))
            .collect::<Vec<_>>(),
        fleet
            .log()
            .lines()
            .filter(|l| l.contains("estore"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let restored: Api<ConfigMap> = Api::namespaced(fleet.regional("europe").await?, "acme-check");
    let cm = restored.get("checkout").await?;
    assert_eq!(
        cm.data.unwrap_or_default().get("currency").map(String::as_str),
        Some("NGN")
    );

    // Into asia, outside the tenant's residency: the operator refuses, and --wait says why (exit 2).
    let run = azora(
        &kc,
        &["restore", &name, "--to", "asia", "--wait", "--timeout", "60s"],
    )
    .await?;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("ResidencyViolation"), "{run:?}");
    Ok(())
}

/// `kubectl azora chaos run|pause|resume` and `drill run` against the real operator: a drain experiment run
/// and awaited (exit 0 with the measured failover), the kill switch set and lifted (a run asked for while
/// halted ends with exit 2 and the reason), a drill that cannot start reported with exit 2 and why.
#[tokio::test]
async fn chaos_and_drill_commands_act_through_the_operator() -> anyhow::Result<()> {
    let mut s = Scenario::start(3).await?;
    s.policy("5s", serde_json::json!({})).await?;
    s.add_operator(&[])?;
    assert!(
        s.wait_answer(0, "127.0.0.11", Duration::from_secs(60))
            .await
            .is_some()
    );
    assert!(s.wait_all_healthy(Duration::from_secs(40)).await);
    let hub = s.env.hub().client().await?;
    azora_tests::chaos::experiment(
        &hub,
        "africa-drain",
        serde_json::json!({"fault": {"type": "RegionOutage", "region": "africa", "mode": "Drain"},
                           "duration": "8s", "schedule": "0 3 1 1 *"}),
    )
    .await?;
    let kc = s.env.hub().kubeconfig.clone();
    let run = azora(
        &kc,
        &["chaos", "run", "africa-drain", "--wait", "--timeout", "2m"],
    )
    .await?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("experiment=africa-drain outcome=Succeeded failover_ms="),
        "{}",
        run.stdout
    );

    let pause = azora(&kc, &["chaos", "pause", "--reason", "INC-4711"]).await?;
    assert_eq!(pause.code, 0, "{}", pause.stderr);
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(hub.clone(), "default");
    let cm = cms.get("azora-chaos-halt").await?;
    assert_eq!(
        cm.data.unwrap_or_default().get("reason").map(String::as_str),
        Some("INC-4711")
    );
    let refused = azora(
        &kc,
        &["chaos", "run", "africa-drain", "--wait", "--timeout", "1m"],
    )
    .await?;
    assert_eq!(refused.code, 2, "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("INC-4711"), "{}", refused.stderr);
    let resume = azora(&kc, &["chaos", "resume"]).await?;
    assert_eq!(resume.code, 0, "{}", resume.stderr);
    assert!(cms.get_opt("azora-chaos-halt").await?.is_none());
    let empty = azora(&kc, &["chaos", "pause", "--reason", " "]).await?;
    assert_eq!(empty.code, 1, "a pause without a reason is refused");
    assert!(
        cms.get_opt("azora-chaos-halt").await?.is_none(),
        "nothing was changed"
    );

    // A drill with no tenant in the lost region cannot start: exit 2 with the operator's reason.
    azora_tests::scenario::create(
        &hub,
        "drdrills",
        serde_json::json!({"apiVersion": "azora.io/v1alpha1", "kind": "DrDrill", "metadata": {"name": "empty"},
                           "spec": {"scenario": {"loseRegion": "africa"}}}),
    )
    .await?;
    let drill = azora(&kc, &["drill", "run", "empty", "--wait", "--timeout", "1m"]).await?;
    assert_eq!(drill.code, 2, "{}{}", drill.stdout, drill.stderr);
    assert!(drill.stderr.contains("nothing to drill"), "{}", drill.stderr);
    let missing = azora(&kc, &["drill", "run", "nosuch"]).await?;
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    Ok(())
}
