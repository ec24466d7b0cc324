//! The actions: each is one declarative change of a custom resource (a JSON merge patch of its spec or
//! annotations) that the operator carries out; `--wait` then reads the operator's status until it reports
//! the action done or impossible. Bad input is refused before anything is written.

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use azora_api::backup::{Backup, BackupSchedule, BackupSpec, Phase, Restore, RestoreSpec};
use azora_api::failover::FailoverPolicy;
use azora_api::region::{Region, Verdict};
use azora_api::tenant::{LEAKED, ROTATE_NOW, SecretPhase, Tenant, rotate_now_token};
use azora_api::{ConditionStatus, Time};
use serde_json::json;

use crate::client::{self, Hub};
use crate::{EXIT_REFUSED, Wait};

/// How often `--wait` reads the status.
const POLL: Duration = Duration::from_millis(500);

/// What a status read says of an action.
enum Progress {
    /// Done, with a line saying so.
    Done(String),
    /// The operator reports it cannot be done, and why.
    Refused(String),
    /// Not yet, and what is still awaited.
    Pending(String),
}

/// Reads `probe` until it says done or refused, or the timeout passes.
async fn wait_until<F, Fut>(wait: Wait, what: &str, mut probe: F) -> anyhow::Result<ExitCode>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Progress>>,
{
    let start = Instant::now();
    loop {
        // A failed read (API server briefly away) is retried until the deadline, and named if it is the last;
        // no read outlives the deadline.
        let remaining = wait
            .timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_secs(1));
        let read = tokio::time::timeout(remaining, probe())
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the API server did not answer in time")));
        let last = match read {
            Ok(Progress::Done(line)) => {
                println!("{line} ({:.1}s)", start.elapsed().as_secs_f64());
                return Ok(ExitCode::SUCCESS);
            }
            Ok(Progress::Refused(why)) => {
                eprintln!("error: {what}: the operator reports it cannot be done: {why}");
                return Ok(ExitCode::from(EXIT_REFUSED));
            }
            Ok(Progress::Pending(why)) => why,
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() >= wait.timeout {
            eprintln!(
                "error: {what}: not done after {}s: {last}",
                wait.timeout.as_secs()
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `cordon` / `uncordon`.
pub async fn cordon(hub: &Hub, region: &str, on: bool, wait: Wait) -> anyhow::Result<ExitCode> {
    let _: Region = client::get(hub, region).await?;
    let r: Region = client::merge(hub, region, json!({ "spec": { "cordoned": on } })).await?;
    let generation = r.metadata.generation;
    let word = if on { "cordoned" } else { "uncordoned" };
    println!("region.azora.io/{region} {word}");
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let what = format!("{} {region}", if on { "cordon" } else { "uncordon" });
    wait_until(wait, &what, || async {
        let r: Region = client::get(hub, region).await?;
        if r.spec.cordoned != on {
            return Ok(Progress::Refused(format!(
                "spec.cordoned was changed back to {} by someone else",
                r.spec.cordoned
            )));
        }
        let s = r.status.unwrap_or_default();
        if s.observed_generation < generation {
            return Ok(Progress::Pending("the operator has not seen the change yet".into()));
        }
        let verdict = s.verdict.unwrap_or(Verdict::Unknown);
        let serving = s.serving.unwrap_or(false);
        if on {
            if verdict != Verdict::Cordoned {
                return Ok(Progress::Pending(format!("verdict is still {verdict:?}")));
            }
            if serving {
                let policies = serving_policies(hub, region).await.unwrap_or_default();
                return Ok(Progress::Pending(format!(
                    "DNS still answers with {region} (policies: {}); no other eligible region may be able to take its traffic",
                    policies.join(", ")
                )));
            }
            Ok(Progress::Done(format!("{region} is cordoned and receives no traffic")))
        } else if verdict == Verdict::Cordoned {
            Ok(Progress::Pending("verdict is still Cordoned".into()))
        } else {
            Ok(Progress::Done(format!(
                "{region} is back in rotation (verdict {verdict:?}; it takes traffic when its policies choose it)"
            )))
        }
    })
    .await
}

/// Policies whose answers include `region`.
async fn serving_policies(hub: &Hub, region: &str) -> anyhow::Result<Vec<String>> {
    let all: Vec<FailoverPolicy> = client::list(hub).await?;
    Ok(all
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.active_regions.iter().any(|r| r == region))
        })
        .filter_map(|p| p.metadata.name)
        .collect())
}

/// `failover <policy> --to <region>` and `failover <policy> --clear`.
pub async fn failover(
    hub: &Hub,
    policy: &str,
    to: Option<&str>,
    reason: Option<String>,
    wait: Wait,
) -> anyhow::Result<ExitCode> {
    let before: FailoverPolicy = client::get(hub, policy).await?;
    let patch = match to {
        Some(region) => {
            let r: Region = client::get(hub, region)
                .await
                .map_err(|e| anyhow::anyhow!("{e:#}: nothing was changed"))?;
            if !before.spec.regions.is_empty() && !before.spec.regions.iter().any(|c| c.name == region) {
                anyhow::bail!(
                    "{region} is not one of policy {policy}'s regions ({}): nothing was changed",
                    before
                        .spec
                        .regions
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if r.spec.cordoned {
                anyhow::bail!("{region} is cordoned: uncordon it first; nothing was changed");
            }
            let by = client::who(hub).await;
            json!({ "spec": { "manual": {
                "region": region,
                "requestedBy": by,
                "requestedTime": Time::now(),
                "reason": reason,
            } } })
        }
        None => json!({ "spec": { "manual": null } }),
    };
    let p: FailoverPolicy = client::merge(hub, policy, patch).await?;
    let generation = p.metadata.generation;
    match to {
        Some(region) => println!("failoverpolicy.azora.io/{policy} manual failover to {region} requested"),
        None => println!("failoverpolicy.azora.io/{policy} manual failover cleared"),
    }
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    if to.is_none() && before.spec.manual.is_none() {
        println!("no manual failover was in force");
        return Ok(ExitCode::SUCCESS);
    }
    let what = match to {
        Some(r) => format!("failover {policy} --to {r}"),
        None => format!("failover {policy} --clear"),
    };
    wait_until(wait, &what, || async {
        let p: FailoverPolicy = client::get(hub, policy).await?;
        let s = p.status.unwrap_or_default();
        let cond = s
            .conditions
            .iter()
            .find(|c| c.type_ == "ManualFailover" && c.observed_generation >= generation);
        let verified = s.last_failover.as_ref().is_none_or(|f| f.verified_time.is_some());
        // A clear of a request the operator never judged: done once it has seen the change.
        if to.is_none()
            && s.observed_generation >= generation
            && verified
            && !s.conditions.iter().any(|c| c.type_ == "ManualFailover")
        {
            return Ok(Progress::Done(format!(
                "{policy} follows its rules: DNS answers {}, epoch {}",
                s.active_regions.join(","),
                s.epoch
            )));
        }
        let Some(cond) = cond else {
            return Ok(Progress::Pending(
                "the operator has not judged the request yet".into(),
            ));
        };
        match to {
            Some(region) => {
                if p.spec.manual.as_ref().is_none_or(|m| m.region != region) {
                    return Ok(Progress::Refused(format!(
                        "the request was replaced or withdrawn by someone else (manual: {})",
                        p.spec.manual.as_ref().map_or("none", |m| m.region.as_str())
                    )));
                }
                if cond.status != ConditionStatus::True {
                    return Ok(if cond.reason == "TargetNotEligible" {
                        Progress::Refused(format!(
                            "{}. The request stays in force and is honoured once {region} can serve; \
                             `kubectl azora failover {policy} --clear` withdraws it",
                            cond.message
                        ))
                    } else {
                        Progress::Pending(cond.message.clone())
                    });
                }
                let only = !s.active_regions.is_empty() && s.active_regions.iter().all(|r| r == region);
                if !only || !verified {
                    return Ok(Progress::Pending(format!(
                        "DNS answers {} (epoch {}), not verified yet",
                        s.active_regions.join(","),
                        s.epoch
                    )));
                }
                Ok(Progress::Done(format!(
                    "every answer of {policy} is {region}, verified at epoch {}",
                    s.epoch
                )))
            }
            None => {
                if cond.reason != "NotRequested" || !verified {
                    return Ok(Progress::Pending(format!(
                        "the manual failover is still in force or DNS is not verified yet ({})",
                        cond.message
                    )));
                }
                Ok(Progress::Done(format!(
                    "{policy} follows its rules again: DNS answers {}, epoch {}",
                    s.active_regions.join(","),
                    s.epoch
                )))
            }
        }
    })
    .await
}

/// `approve-failback <policy> <region>`.
pub async fn approve_failback(hub: &Hub, policy: &str, region: &str, wait: Wait) -> anyhow::Result<ExitCode> {
    let before: FailoverPolicy = client::get(hub, policy).await?;
    let r: Region = client::get(hub, region)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}: nothing was changed"))?;
    if !before.spec.regions.is_empty() && !before.spec.regions.iter().any(|c| c.name == region) {
        anyhow::bail!("{region} is not one of policy {policy}'s regions: nothing was changed");
    }
    if r.spec.cordoned {
        anyhow::bail!("{region} is cordoned: uncordon it first; nothing was changed");
    }
    // An approval counts for a recovery it was given after: approving a region still down approves nothing.
    if r.status.as_ref().and_then(|s| s.verdict) == Some(Verdict::Down) {
        anyhow::bail!(
            "{region} is Down: an approval counts only for a recovery it is given after; approve once it is \
             Healthy again; nothing was changed"
        );
    }
    let _: FailoverPolicy = client::merge(
        hub,
        policy,
        json!({ "spec": { "failback": { "approvedRegion": region, "approvedTime": Time::now() } } }),
    )
    .await?;
    println!("failoverpolicy.azora.io/{policy} failback to {region} approved");
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_until(wait, &format!("approve-failback {policy} {region}"), || async {
        let p: FailoverPolicy = client::get(hub, policy).await?;
        let s = p.status.unwrap_or_default();
        if let Some(m) = p.spec.manual.as_ref().filter(|m| m.region != region) {
            return Ok(Progress::Pending(format!(
                "a manual failover to {} is in force: traffic follows it until `kubectl azora failover {policy} --clear`",
                m.region
            )));
        }
        let verified = s.last_failover.as_ref().is_none_or(|f| f.verified_time.is_some());
        if s.active_region.as_deref() == Some(region) && verified {
            return Ok(Progress::Done(format!(
                "traffic of {policy} is back in {region}, verified at epoch {}",
                s.epoch
            )));
        }
        let r: Region = client::get(hub, region).await?;
        let verdict = r.status.and_then(|s| s.verdict).unwrap_or(Verdict::Unknown);
        if verdict == Verdict::Cordoned {
            return Ok(Progress::Refused(format!("{region} was cordoned")));
        }
        Ok(Progress::Pending(format!(
            "{region} is {verdict:?}; DNS answers {} (epoch {})",
            s.active_regions.join(","),
            s.epoch
        )))
    })
    .await
}

/// `rotate <tenant>` (every secret) or `rotate <tenant>/<secret>` (one).
/// With `leaked`, the request says the current value leaked (see `azora_api::tenant::LEAKED`).
pub async fn rotate(hub: &Hub, target: &str, leaked: bool, wait: Wait) -> anyhow::Result<ExitCode> {
    let (tenant, only) = match target.split_once('/') {
        Some((t, s)) => (t, Some(s)),
        None => (target, None),
    };
    let t: Tenant = client::get(hub, tenant).await?;
    if t.spec.secrets.is_empty() {
        anyhow::bail!("tenant {tenant} declares no secrets: nothing was changed");
    }
    if let Some(s) = only
        && !t.spec.secrets.iter().any(|x| x.name == s)
    {
        anyhow::bail!(
            "tenant {tenant} has no secret {s} (it has {}): nothing was changed",
            t.spec
                .secrets
                .iter()
                .map(|x| x.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if leaked
        && let Some(x) = t.spec.secrets.iter().find(|x| {
            only.is_none_or(|o| o == x.name) && x.generator.kind == azora_api::tenant::GeneratorKind::External
        })
    {
        anyhow::bail!(
            "secret {} is External: the operator does not make its values, so it cannot replace a leaked one; \
             write the new value at {} in the home region {}'s Vault and destroy the leaked versions there \
             (bao kv destroy -versions=<n> {}); nothing was changed",
            x.name,
            x.vault_path,
            t.spec.home_region,
            x.vault_path
        );
    }
    let token = if leaked {
        format!("{LEAKED}-{}", Time::now())
    } else {
        Time::now().to_string()
    };
    let key = match only {
        Some(s) => format!("{ROTATE_NOW}.{s}"),
        None => ROTATE_NOW.to_string(),
    };
    if key.len() - "azora.io/".len() > 63 {
        anyhow::bail!(
            "the secret's name is too long for its own rotate-now annotation; rotate the whole tenant"
        );
    }
    let after: Tenant = client::merge(
        hub,
        tenant,
        json!({ "metadata": { "annotations": { key: token } } }),
    )
    .await?;
    let names: Vec<String> = t
        .spec
        .secrets
        .iter()
        .map(|s| s.name.clone())
        .filter(|n| only.is_none_or(|o| o == n))
        .collect();
    println!(
        "tenant.azora.io/{tenant} rotation of {} requested",
        names.join(", ")
    );
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    // The request each secret's status will name once carried out (the operator joins the tenant-wide and
    // the secret's own request).
    let annotations = after.metadata.annotations.unwrap_or_default();
    let expected = |secret: &str| rotate_now_token(&annotations, secret);
    wait_until(wait, &format!("rotate {target}"), || async {
        let t: Tenant = client::get(hub, tenant).await?;
        let s = t.status.unwrap_or_default();
        let mut waiting = Vec::new();
        for name in &names {
            let Some(x) = s.secrets.iter().find(|x| &x.name == name) else {
                waiting.push(format!("{name}: not started"));
                continue;
            };
            if x.rotate_now_handled != expected(name) {
                waiting.push(format!("{name}: not started"));
                continue;
            }
            match x.phase {
                Some(SecretPhase::Done)
                    if leaked && x.revocation.as_ref().is_none_or(|r| r.version != x.version) =>
                {
                    waiting.push(format!("{name}: the leaked versions not revoked yet"));
                }
                Some(SecretPhase::Done) => {}
                Some(SecretPhase::Failed | SecretPhase::RolledBack) => {
                    return Ok(Progress::Refused(format!("{name}: {}", x.message)));
                }
                phase => waiting.push(format!(
                    "{name}: {}",
                    phase.map_or("-".into(), |p| format!("{p:?}"))
                )),
            }
        }
        if waiting.is_empty() {
            Ok(Progress::Done(format!(
                "{} of {tenant} rotated and held by every region",
                names.join(", ")
            )))
        } else {
            Ok(Progress::Pending(waiting.join("; ")))
        }
    })
    .await
}

/// A name for an object the plugin creates: `<base>-<UTC time>`, at most 63 characters (it is also used as
/// a label value and in object-store keys).
fn stamped(base: &str) -> String {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
    let keep = 63 - stamp.len() - 1;
    let base: String = base.chars().take(keep).collect();
    format!("{}-{stamp}", base.trim_end_matches('-'))
}

/// The last condition `Ready` of an object's status for this generation, when it is False.
fn refused(conds: &[azora_api::Condition], generation: Option<i64>) -> Option<String> {
    conds
        .iter()
        .find(|c| {
            c.type_ == "Ready" && c.status == ConditionStatus::False && c.observed_generation >= generation
        })
        .filter(|c| c.reason != "Running" && c.reason != "Pending")
        .map(|c| format!("{}: {}", c.reason, c.message))
}

/// `backup <tenant>`: a Backup now, with the include and encryption key of the tenant's schedule.
pub async fn backup(hub: &Hub, tenant: &str, schedule: Option<&str>, wait: Wait) -> anyhow::Result<ExitCode> {
    let t: Tenant = client::get(hub, tenant).await?;
    let labels = t.metadata.labels.clone().unwrap_or_default();
    let chosen: Option<BackupSchedule> = match schedule {
        Some(name) => Some(
            client::get(hub, name)
                .await
                .map_err(|e| anyhow::anyhow!("{e:#}: nothing was changed"))?,
        ),
        None => {
            // Only schedules that select this tenant: another's key and kinds are not this tenant's.
            let all: Vec<BackupSchedule> = client::list::<BackupSchedule>(hub)
                .await?
                .into_iter()
                .filter(|b| azora_api::tenant::selects(b.spec.tenant_selector.as_ref(), &labels))
                .collect();
            match all.len() {
                0 => None,
                1 => all.into_iter().next(),
                _ => anyhow::bail!(
                    "several BackupSchedules select tenant {tenant} ({}): name the one whose settings (included kinds, encryption \
                     key) this backup takes with --schedule; nothing was changed",
                    all.iter()
                        .filter_map(|b| b.metadata.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let spec = BackupSpec {
        tenant: tenant.to_string(),
        schedule: None,
        include: chosen
            .as_ref()
            .map(|b| b.spec.include.clone())
            .unwrap_or_default(),
        copy_to_allowed_regions: chosen.as_ref().is_none_or(|b| b.spec.copy_to_allowed_regions),
        encryption_key: chosen.as_ref().and_then(|b| b.spec.encryption_key.clone()),
    };
    if spec.encryption_key.is_none() {
        eprintln!("note: no encryption key: the tenant's Secrets are left out of this backup");
    }
    let mut b = Backup::new(&stamped(&format!("{tenant}-manual")), spec);
    b.metadata.labels = Some(
        [(
            "azora.io/requested-by".to_string(),
            label_value(&client::who(hub).await),
        )]
        .into(),
    );
    let b = client::create(hub, &b).await?;
    let name = b.metadata.name.clone().unwrap_or_default();
    println!("backup.azora.io/{name} created");
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_until(wait, &format!("backup {tenant}"), || async {
        let b: Backup = client::get(hub, &name).await?;
        let s = b.status.unwrap_or_default();
        match s.phase {
            Some(Phase::Succeeded) => Ok(Progress::Done(format!(
                "{name} succeeded: {} objects, {} bytes, copies verified in {}",
                s.object_count.unwrap_or_default(),
                s.size_bytes.unwrap_or_default(),
                s.locations
                    .iter()
                    .filter(|l| l.verified)
                    .map(|l| l.region.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Some(p @ (Phase::PartiallyFailed | Phase::Failed)) => Ok(Progress::Refused(format!(
                "{name} {p}: {}",
                s.locations
                    .iter()
                    .filter(|l| !l.verified)
                    .map(|l| format!("{}: {}", l.region, l.message))
                    .chain(refused(&s.conditions, b.metadata.generation))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
            phase => match refused(&s.conditions, b.metadata.generation).filter(|_| phase.is_none()) {
                Some(why) => Ok(Progress::Refused(why)),
                None => Ok(Progress::Pending(format!(
                    "{name} is {}",
                    phase.map_or("not started".to_string(), |p| p.to_string())
                ))),
            },
        }
    })
    .await
}

/// `restore <backup> --to <region> [--namespace <ns>]`.
pub async fn restore(
    hub: &Hub,
    backup: &str,
    region: &str,
    namespace: Option<&str>,
    wait: Wait,
) -> anyhow::Result<ExitCode> {
    let b: Backup = client::get(hub, backup)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}: nothing was changed"))?;
    let _: Region = client::get(hub, region)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}: nothing was changed"))?;
    let phase = b.status.as_ref().and_then(|s| s.phase);
    if !matches!(phase, Some(Phase::Succeeded | Phase::PartiallyFailed)) {
        anyhow::bail!(
            "backup {backup} is {}: only a finished backup with a verified copy can be restored; nothing was changed",
            phase.map_or("not started".to_string(), |p| p.to_string())
        );
    }
    let base = match namespace {
        Some(ns) => format!("{backup}-to-{region}-{ns}"),
        None => format!("{backup}-to-{region}"),
    };
    let mut r = Restore::new(
        &stamped(&base),
        RestoreSpec {
            backup: backup.to_string(),
            target_region: region.to_string(),
            target_namespace: namespace.map(str::to_string),
            verify: true,
        },
    );
    r.metadata.labels = Some(
        [(
            "azora.io/requested-by".to_string(),
            label_value(&client::who(hub).await),
        )]
        .into(),
    );
    let r = client::create(hub, &r).await?;
    let name = r.metadata.name.clone().unwrap_or_default();
    println!("restore.azora.io/{name} created");
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_until(wait, &format!("restore {backup}"), || async {
        let r: Restore = client::get(hub, &name).await?;
        let s = r.status.unwrap_or_default();
        match s.phase {
            Some(Phase::Succeeded) => Ok(Progress::Done(format!(
                "{name} succeeded: {} objects restored into {} in {} from the {} copy, verified={}",
                s.objects_restored.unwrap_or_default(),
                s.target_namespace.as_deref().unwrap_or("the tenant's namespace"),
                region,
                s.source_region.as_deref().unwrap_or("-"),
                s.verified.unwrap_or(false)
            ))),
            Some(p @ (Phase::PartiallyFailed | Phase::Failed)) => Ok(Progress::Refused(format!(
                "{name} {p}: {}",
                refused(&s.conditions, r.metadata.generation)
                    .or_else(|| s.timeline.last().map(|t| format!("{}: {}", t.step, t.message)))
                    .unwrap_or_default()
            ))),
            phase => match refused(&s.conditions, r.metadata.generation).filter(|_| phase.is_none()) {
                Some(why) => Ok(Progress::Refused(why)),
                None => Ok(Progress::Pending(format!(
                    "{name} is {}",
                    phase.map_or("not started".to_string(), |p| p.to_string())
                ))),
            },
        }
    })
    .await
}

/// A label value from free text: at most 63 of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
fn label_value(s: &str) -> String {
    let v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    let v = v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    if v.is_empty() { "unknown".into() } else { v }
}

/// `drill run`: asks for a run now (a new `azora.io/run-now` value) and, with --wait, reports its result.
pub async fn drill_run(hub: &Hub, name: &str, wait: Wait) -> anyhow::Result<ExitCode> {
    use azora_api::chaos::{DrDrill, DrillResult};
    let _: DrDrill = client::get(hub, name).await?;
    let token = Time::now().to_string();
    let _: DrDrill = client::merge(
        hub,
        name,
        json!({ "metadata": { "annotations": { "azora.io/run-now": token } } }),
    )
    .await?;
    println!("drdrill.azora.io/{name} run requested");
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_until(wait, &format!("drill run {name}"), || async {
        let d: DrDrill = client::get(hub, name).await?;
        let s = d.status.unwrap_or_default();
        if s.run_now_handled.as_deref() != Some(token.as_str()) {
            return Ok(Progress::Pending("not started".into()));
        }
        let Some(run) = s.last_run else {
            return Ok(Progress::Pending("not started".into()));
        };
        let secs =
            |ms: Option<u64>| ms.map_or_else(|| "-".to_string(), |m| format!("{:.1}", m as f64 / 1000.0));
        Ok(match run.result {
            DrillResult::Running => Progress::Pending(format!(
                "run {} at {}",
                run.id,
                run.timeline.last().map_or("-", |e| e.step.as_str())
            )),
            DrillResult::Passed => Progress::Done(format!(
                "drill={name} result=Passed rto_s={} rpo_s={} failback_s={}",
                secs(run.rto_ms),
                secs(azora_core_rpo(&run)),
                secs(run.failback_ms)
            )),
            r => Progress::Refused(format!("run {} {r}: {}", run.id, run.message)),
        })
    })
    .await
}

fn azora_core_rpo(run: &azora_api::chaos::DrillRun) -> Option<u64> {
    match (run.backup_rpo_ms, run.sentinel_rpo_ms) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
    }
}

/// `chaos run`: asks for a run now and, with --wait, reports its outcome.
pub async fn chaos_run(hub: &Hub, name: &str, wait: Wait) -> anyhow::Result<ExitCode> {
    use azora_api::chaos::{ChaosExperiment, Outcome};
    let _: ChaosExperiment = client::get(hub, name).await?;
    let token = Time::now().to_string();
    let _: ChaosExperiment = client::merge(
        hub,
        name,
        json!({ "metadata": { "annotations": { "azora.io/run-now": token } } }),
    )
    .await?;
    println!("chaosexperiment.azora.io/{name} run requested");
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_until(wait, &format!("chaos run {name}"), || async {
        let c: ChaosExperiment = client::get(hub, name).await?;
        let s = c.status.unwrap_or_default();
        if s.run_now_handled.as_deref() != Some(token.as_str()) {
            return Ok(Progress::Pending("not started".into()));
        }
        let Some(run) = s.last_run else {
            return Ok(Progress::Pending("not started".into()));
        };
        Ok(match run.outcome {
            Outcome::Running => Progress::Pending(format!(
                "run {} at {}",
                run.id,
                run.timeline.last().map_or("-", |e| e.step.as_str())
            )),
            Outcome::Succeeded => Progress::Done(format!(
                "experiment={name} outcome=Succeeded failover_ms={} recovery_ms={}",
                run.failover_ms.map_or_else(|| "-".into(), |v| v.to_string()),
                run.recovery_ms.map_or_else(|| "-".into(), |v| v.to_string())
            )),
            o => Progress::Refused(format!("run {} {o}: {}", run.id, run.message)),
        })
    })
    .await
}

/// The kill switch's ConfigMap API in the operator's namespace.
fn halt_api(hub: &Hub, namespace: Option<&str>) -> kube::Api<k8s_openapi::api::core::v1::ConfigMap> {
    kube::Api::namespaced(hub.client.clone(), namespace.unwrap_or(&hub.namespace))
}

/// `chaos pause`: creates (or updates) the kill switch.
pub async fn chaos_pause(hub: &Hub, namespace: Option<&str>, reason: &str) -> anyhow::Result<ExitCode> {
    if reason.trim().is_empty() {
        anyhow::bail!("--reason must say why: nothing was changed");
    }
    let api = halt_api(hub, namespace);
    let who = client::who(hub).await;
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "azora-chaos-halt"},
        "data": {"reason": reason, "requestedBy": who}
    });
    let params = kube::api::PatchParams::apply("kubectl-azora").force();
    tokio::time::timeout(
        Duration::from_secs(15),
        api.patch("azora-chaos-halt", &params, &kube::api::Patch::Apply(&body)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the API server did not answer in time"))??;
    println!("chaos halted: running faults are reverted and no experiment or drill starts ({reason})");
    Ok(ExitCode::SUCCESS)
}

/// `chaos resume`: removes the kill switch.
pub async fn chaos_resume(hub: &Hub, namespace: Option<&str>) -> anyhow::Result<ExitCode> {
    let api = halt_api(hub, namespace);
    match tokio::time::timeout(
        Duration::from_secs(15),
        api.delete("azora-chaos-halt", &Default::default()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the API server did not answer in time"))?
    {
        Ok(_) => println!("chaos resumed"),
        Err(kube::Error::Api(s)) if s.code == 404 => println!("chaos was not halted"),
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}
