//! The decisions of one step: adopt the primary, fail it over in order (intent → fence → choose → promote
//! → epoch → repoint), or keep the topology and report it.

use std::time::{Duration, Instant};

use azora_adapters::postgres::PgObservation;
use azora_api::common::Time;
use azora_api::database::{DatabaseFailover, DatabaseStatus, MemberRole, MemberStatus, ReplicationMode};
use azora_api::region::Verdict;
use azora_core::conditions::{Desired, merge};
use azora_core::database::{
    Candidate, Promotion, choose_promotion, format_lsn, human_bytes, same_sync_rule, sync_standby_names,
    wanted_move,
};
use azora_core::duration::parse_duration;
use tracing::{debug, info, warn};

use super::observe::session;
use super::{Memory, Seen, Step, StepError, event, policy_route, stored, write_status};

/// How often status is written when only positions and lag changed.
const REFRESH: Duration = Duration::from_secs(10);
/// How long a planned move that was abandoned is not tried again (each try fences the primary).
const ABANDON_BACKOFF: Duration = Duration::from_secs(60);
/// How long a database that follows a policy waits for that policy to move away from its primary's Down
/// region before it fails over on the verdict alone (the policy decides on the same verdict, normally within
/// a second; without this wait, a database that saw the verdict first would promote the most advanced
/// standby, and then switch over a second time to the region the policy chose).
const POLICY_DECISION_GRACE: Duration = Duration::from_secs(10);
/// How long after a standby was repointed for its credentials or TLS alone before it counts as streaming
/// again (the primary may list its old stream for a moment) and the next one may be repointed.
const SETTINGS_REPOINT_SETTLE: Duration = Duration::from_secs(5);
/// How long after the leadership check the primary's clock may be read for a keeper name, and how long after
/// that reading (on that clock) the name may still be set: with the check's own age (up to 1 s), a name lands
/// within 3 s of a confirmed lease, or not at all.
const KEEPER_LANDING: Duration = Duration::from_secs(1);

fn down(s: &Step<'_>, region: &str) -> bool {
    s.ctx
        .handles
        .verdicts
        .get(region)
        .is_some_and(|h| h.verdict == Verdict::Down)
}

/// One step's decisions.
pub(super) async fn decide(
    s: &Step<'_>,
    seen: &Seen,
    status: &mut DatabaseStatus,
    memory: &mut Memory,
) -> Result<(), StepError> {
    let Some(primary) = status.primary_region.clone() else {
        let writers: Vec<&String> = seen
            .iter()
            .filter(|(_, o)| o.as_ref().is_ok_and(|o| !o.in_recovery && !o.fenced))
            .map(|(r, _)| r)
            .collect();
        return match writers.as_slice() {
            [one] => adopt(s, seen, one, status, memory).await,
            [] => {
                let why = Desired::fail(
                    "Ready",
                    "NoPrimary",
                    "no reachable member takes writes; the operator adopts the one that does",
                );
                report(s, seen, status, memory, None, vec![why]).await
            }
            many => {
                let names: Vec<&str> = many.iter().map(|r| r.as_str()).collect();
                let why = Desired::fail(
                    "Ready",
                    "SplitBrain",
                    format!(
                        "members in {} all take writes; the operator does not choose between them — fence all but one by hand",
                        names.join(", ")
                    ),
                );
                report(s, seen, status, memory, None, vec![why]).await
            }
        };
    };
    // A member holding a newer epoch than the status (a status restored from an older copy, or lost): the
    // status no longer says who the primary is, so nothing is done on its word — no failover started or
    // resumed (it would fence the real primary), nothing fenced, unfenced or repointed. When exactly one
    // member takes writes and it holds that newest epoch, it is the primary the status lost: adopted. Else
    // people are told and decide.
    if let Some((r, e)) = seen
        .iter()
        .filter_map(|(r, o)| Some((r, o.as_ref().ok()?.epoch?)))
        .filter(|(_, e)| *e > status.epoch)
        .max_by_key(|(_, e)| *e)
    {
        // This view may lag the stored status (a new term's first look, from the cache): read it first, and
        // act only if it is really behind.
        let (_, stored_status) = stored(s.api, s.name).await?;
        if stored_status.epoch != status.epoch || stored_status.primary_region != status.primary_region {
            return Err(StepError::Moved("the cached status lags the stored one".into()));
        }
        let writers: Vec<(&String, Option<u64>)> = seen
            .iter()
            .filter_map(|(r, o)| {
                o.as_ref()
                    .ok()
                    .filter(|o| !o.in_recovery && !o.fenced)
                    .map(|o| (r, o.epoch))
            })
            .collect();
        // "Newest" only means something when every member answered (or its region is Down): an unreachable
        // one could hold a newer epoch still.
        let all_seen = s
            .spec
            .members
            .iter()
            .all(|m| seen.get(&m.region).is_some_and(Result::is_ok) || down(s, &m.region));
        if all_seen
            && let [(w, Some(we))] = writers.as_slice()
            && *we == e
        {
            return readopt(s, status, memory, w, e).await;
        }
        let c = Desired::fail(
            "Ready",
            "StatusBehindMembers",
            format!(
                "the member in {r} holds epoch {e}, newer than the recorded {} (a status restored from an older \
                 copy?), and no single member taking writes holds it: nothing is failed over, fenced, unfenced or \
                 repointed until one does or the status names the real primary",
                status.epoch
            ),
        );
        if condition_changed(status, &c) {
            warn!(database = %s.name, region = %r, member_epoch = e, status_epoch = status.epoch, "{}", c.message);
            event(s, true, "StatusBehindMembers", &c.message).await;
        }
        return report(s, seen, status, memory, None, vec![c]).await;
    }
    let route = policy_route(s.ctx, s.spec);
    let (active, policy_epoch) = match &route {
        Some((a, e)) => (a.clone(), Some(*e)),
        None => (None, None),
    };
    if let Some(f) = status.last_failover.clone().filter(|f| f.outcome.is_none()) {
        info!(database = %s.name, epoch = f.epoch, "resuming an interrupted failover");
        return failover(s, seen, status, memory, f.to.clone(), f.reason.clone(), Some(f)).await;
    }
    let backing_off = memory.abandoned.is_some_and(|t| t.elapsed() < ABANDON_BACKOFF);
    let primary_down = down(s, &primary);
    let follows_still_there = s.spec.follow_policy.is_some() && active.as_deref() == Some(primary.as_str());
    let down_for_us = if primary_down && follows_still_there {
        if memory
            .primary_down_since
            .as_ref()
            .is_none_or(|(r, _)| *r != primary)
        {
            memory.primary_down_since = Some((primary.clone(), Instant::now()));
        }
        let waited = memory
            .primary_down_since
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= POLICY_DECISION_GRACE);
        if !waited {
            debug!(database = %s.name, region = %primary, "the primary's region is Down: waiting for the policy's decision");
        }
        waited
    } else {
        memory.primary_down_since = None;
        primary_down
    };
    if let Some(mv) = wanted_move(s.spec, &primary, active.as_deref(), down_for_us).filter(|mv| {
        !(backing_off && seen.get(&primary).is_some_and(Result::is_ok) && mv.preferred.is_some())
    }) {
        // Only a failover that can finish without losing a commit starts: the old primary is not fenced
        // for a move that cannot happen.
        let old_reachable = seen.get(&primary).is_some_and(Result::is_ok);
        let cands = candidates(s, seen, status, memory, &primary);
        let dry = choose_promotion(&Promotion {
            mode: s.spec.replication.mode,
            sync_standbys: s.spec.replication.sync_standbys,
            standby_count: sync_standbys_besides(s, &primary),
            candidates: &cands,
            preferred: mv.preferred.as_deref(),
            old_final: old_reachable.then_some(0),
            max_lag_seconds: max_lag(s),
        });
        return match dry {
            Ok(_) => {
                failover(
                    s,
                    seen,
                    status,
                    memory,
                    mv.preferred.clone(),
                    mv.reason.into(),
                    None,
                )
                .await
            }
            Err(why) => {
                let c = Desired::fail(
                    "Promotion",
                    "PromotionRefused",
                    format!("the primary should leave {primary} ({}) but: {why}", mv.reason),
                );
                if condition_changed(status, &c) {
                    event(s, true, "PromotionRefused", &c.message).await;
                    s.ctx
                        .metrics
                        .db_failovers
                        .with_label_values(&[s.name, "refused"])
                        .inc();
                }
                if mv.reason == "PolicyMoved" {
                    status.blocked_policy_epoch = policy_epoch;
                }
                let mut extra = vec![c];
                if !old_reachable {
                    extra.push(Desired::fail(
                        "Ready",
                        "PrimaryUnreachable",
                        format!("the primary in {primary} does not answer and no standby may be promoted"),
                    ));
                }
                report(s, seen, status, memory, None, extra).await
            }
        };
    }
    // Placed where the policy wants it (or the policy routes to a region without a member).
    let placed = match (&active, policy_epoch) {
        (Some(a), Some(e)) if *a == primary || !s.spec.members.iter().any(|m| &m.region == a) => Some(e),
        (None, Some(e)) => Some(e),
        _ => None,
    };
    maintain(s, seen, status, memory, &primary).await?;
    let mut extra = Vec::new();
    if status.conditions.iter().any(|c| c.type_ == "Promotion") {
        extra.push(Desired::ok("Promotion", "Possible", "no failover is needed"));
    }
    report(s, seen, status, memory, placed, extra).await
}

fn condition_changed(status: &DatabaseStatus, d: &Desired) -> bool {
    !status
        .conditions
        .iter()
        .any(|c| c.type_ == d.type_ && c.status == d.status && c.reason == d.reason && c.message == d.message)
}

/// Synchronous members other than `old`.
fn sync_standbys_besides(s: &Step<'_>, old: &str) -> usize {
    s.spec
        .members
        .iter()
        .filter(|m| m.synchronous && m.region != old)
        .count()
}

fn max_lag(s: &Step<'_>) -> f64 {
    parse_duration(&s.spec.replication.max_lag_for_promotion)
        .map(|d| d.as_secs_f64())
        .unwrap_or(30.0)
}

/// Reachable standbys outside `old`, in regions that are not Down (members are inside the residency); their
/// lag is the one the primary last reported (this term), else the one recorded in status.
fn candidates(
    s: &Step<'_>,
    seen: &Seen,
    status: &DatabaseStatus,
    memory: &Memory,
    old: &str,
) -> Vec<Candidate> {
    seen.iter()
        .filter(|(r, _)| r.as_str() != old && !down(s, r))
        .filter_map(|(r, o)| {
            let o = o.as_ref().ok()?;
            (o.in_recovery && !o.fenced).then(|| Candidate {
                region: r.clone(),
                synchronous: s.spec.members.iter().any(|m| &m.region == r && m.synchronous),
                received: o.received.unwrap_or(0),
                // The lag the primary last reported, plus the time since (an upper bound once it is gone).
                lag_seconds: memory
                    .last_lag
                    .get(r.as_str())
                    .map(|(l, at)| l + at.elapsed().as_secs_f64())
                    .or_else(|| {
                        status
                            .members
                            .iter()
                            .find(|m| &m.region == r)
                            .and_then(|m| m.lag_seconds)
                    }),
            })
        })
        .collect()
}

/// First sight: the one member that takes writes becomes the recorded primary, under epoch ≥ 1 (and at
/// least the one written into it), which is then written into it.
async fn adopt(
    s: &Step<'_>,
    seen: &Seen,
    region: &str,
    status: &mut DatabaseStatus,
    memory: &mut Memory,
) -> Result<(), StepError> {
    let (rv, stored_status) = stored(s.api, s.name).await?;
    if stored_status.primary_region.is_some() {
        return Err(StepError::Moved("the primary was recorded meanwhile".into()));
    }
    let had = seen
        .get(region)
        .and_then(|o| o.as_ref().ok())
        .and_then(|o| o.epoch)
        .unwrap_or(0);
    let epoch = stored_status.epoch.max(had).max(1);
    status.primary_region = Some(region.to_string());
    status.epoch = epoch;
    write_status(s.ctx, s.writer, s.name, Some(&rv), status, memory).await?;
    fence_check(s).await?;
    let sess = session(s, memory, region).await.map_err(StepError::Moved)?;
    sess.write_epoch(epoch, region)
        .await
        .map_err(|e| StepError::Moved(format!("{region}: writing the epoch: {e}")))?;
    event(
        s,
        false,
        "PrimaryAdopted",
        &format!("primary in {region}, epoch {epoch}"),
    )
    .await;
    Ok(())
}

/// The status is behind the members: `region`, the one member taking writes, holds `epoch`, the newest any
/// member holds. Recorded as the primary under that epoch (compare-and-swap on the status as read); an
/// unfinished failover of the old copy is closed as `Superseded` where it is (resumed, it would fence the
/// real primary).
async fn readopt(
    s: &Step<'_>,
    status: &mut DatabaseStatus,
    memory: &mut Memory,
    region: &str,
    epoch: u64,
) -> Result<(), StepError> {
    let (rv, stored_status) = stored(s.api, s.name).await?;
    if stored_status.epoch != status.epoch || stored_status.primary_region != status.primary_region {
        return Err(StepError::Moved("the status changed meanwhile".into()));
    }
    fence_check(s).await?;
    // Built from the stored status (this task's view may lag it in details), members and conditions kept.
    let members = std::mem::take(&mut status.members);
    let conditions = std::mem::take(&mut status.conditions);
    *status = stored_status;
    status.members = members;
    status.conditions = conditions;
    let note = format!(
        "the status was behind the members (epoch {}, primary {}): {region} is the one member taking writes and \
         holds epoch {epoch}, the newest any member holds — recorded as the primary",
        status.epoch,
        status.primary_region.as_deref().unwrap_or("none")
    );
    if let Some(f) = status.last_failover.as_mut()
        && f.outcome.is_none()
    {
        f.outcome = Some("Superseded".into());
        f.message = Some(format!("superseded: the members hold epoch {epoch}"));
    }
    status.primary_region = Some(region.to_string());
    status.epoch = epoch;
    write_status(s.ctx, s.writer, s.name, Some(&rv), status, memory).await?;
    warn!(database = %s.name, %region, epoch, "{note}");
    event(s, true, "PrimaryAdopted", &note).await;
    Ok(())
}

async fn fence_check(s: &Step<'_>) -> Result<(), StepError> {
    s.ctx
        .fence
        .check()
        .await
        .map(|_| ())
        .map_err(|e| StepError::Moved(format!("not leading: {e}")))
}

/// The ordered failover. `resumed`: the record of one already started (its epoch is kept).
#[allow(clippy::too_many_lines)]
async fn failover(
    s: &Step<'_>,
    seen: &Seen,
    status: &mut DatabaseStatus,
    memory: &mut Memory,
    preferred: Option<String>,
    reason: String,
    resumed: Option<DatabaseFailover>,
) -> Result<(), StepError> {
    let mode = s.spec.replication.mode;
    // 1. Intent under the next epoch, compare-and-swap on the stored status.
    let mut rec = match resumed {
        Some(f) => f,
        None => {
            let (rv, stored_status) = stored(s.api, s.name).await?;
            if stored_status.epoch != status.epoch || stored_status.primary_region != status.primary_region {
                return Err(StepError::Moved(format!(
                    "stored epoch {} differs from the planned {}",
                    stored_status.epoch, status.epoch
                )));
            }
            let from = status.primary_region.clone();
            let detected = from
                .as_deref()
                .and_then(|f| s.ctx.handles.verdicts.get(f))
                .filter(|h| h.verdict == Verdict::Down)
                .and_then(|h| h.detected_at.or(Some(h.since)))
                .unwrap_or_else(Time::now);
            let rec = DatabaseFailover {
                epoch: status.epoch + 1,
                from,
                to: preferred.clone(),
                reason: reason.clone(),
                policy_epoch: policy_route(s.ctx, s.spec).map(|(_, e)| e),
                detected_time: Some(detected),
                ..DatabaseFailover::default()
            };
            if let Some(prev) = status.last_failover.take() {
                status.history.insert(0, prev);
                status.history.truncate(s.spec.history_limit as usize);
            }
            status.epoch = rec.epoch;
            status.last_failover = Some(rec.clone());
            write_status(s.ctx, s.writer, s.name, Some(&rv), status, memory).await?;
            let note = format!(
                "epoch {}: primary leaves {} ({reason}){}",
                rec.epoch,
                rec.from.as_deref().unwrap_or("none"),
                preferred
                    .as_deref()
                    .map(|p| format!(" for {p}"))
                    .unwrap_or_default()
            );
            event(s, true, "DatabaseFailover", &note).await;
            rec
        }
    };
    let epoch = rec.epoch;
    let old = rec.from.clone().unwrap_or_default();

    // 2. Fence the old primary (or record why it cannot accept a commit on its own).
    let mut old_final = None;
    let old_reachable = seen.get(&old).is_some_and(Result::is_ok);
    if old_reachable {
        fence_check(s).await?;
        let fenced = match session(s, memory, &old).await {
            Ok(sess) => sess.fence().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match fenced {
            Ok(lsn) => {
                old_final = lsn.or(Some(0));
                if rec.fenced_time.is_none() {
                    rec.fenced_time = Some(Time::now());
                }
                rec.fence = Some(
                    "read-only, client sessions ended, no commit acknowledged (its synchronous rule names no standby)"
                        .into(),
                );
            }
            Err(e) => {
                // Answered a moment ago, not now: treat it as gone (the synchronous rule still holds it).
                warn!(database = %s.name, region = %old, error = %e, "fencing the old primary failed");
            }
        }
    }
    if old_final.is_none() && rec.fenced_time.is_none() {
        rec.fenced_time = Some(Time::now());
        rec.fence = Some(match mode {
            ReplicationMode::Synchronous => {
                "unreachable: it cannot acknowledge a commit without a standby's confirmation (synchronous rule)".into()
            }
            ReplicationMode::Asynchronous => {
                "unreachable and not fenced: commits it takes now reach no standby (asynchronous replication)".into()
            }
        });
    }
    status.last_failover = Some(rec.clone());
    cas_write(s, status, memory, epoch).await?;

    // 3. Choose the standby that has every acknowledged commit (a planned move waits for it to catch up).
    let mut view = seen.clone();
    // A member that already takes writes (other than the old primary) is this failover's own promotion, made
    // before an interruption (a crash, a promotion that outlived its wait, a lost status write): it is
    // finished, never a second one made.
    let already = view
        .iter()
        .find(|(r, o)| {
            **r != old
                && o.as_ref().is_ok_and(|o| {
                    // Promoted by this failover: holding its epoch, or the one just before (not written yet);
                    // a stale primary of an older epoch is not it.
                    !o.in_recovery && !o.fenced && o.epoch.unwrap_or(0) + 1 >= epoch
                })
                && rec.to.as_deref() == Some(r.as_str())
        })
        .map(|(r, _)| r.clone());
    if old_final.is_none() && already.is_none() && s.spec.engine == azora_api::database::Engine::PostgreSQL {
        // The old primary does not answer us but may still stream to some standbys, which would go on
        // confirming its commits after the choice: every reachable standby stops streaming first (it is
        // repointed to the new primary after the promotion), then positions are read again.
        fence_check(s).await?;
        for m in &s.spec.members {
            if m.region == old {
                continue;
            }
            if view
                .get(&m.region)
                .is_some_and(|o| o.as_ref().is_ok_and(|o| o.in_recovery))
            {
                let r = match session(s, memory, &m.region).await {
                    Ok(sess) => sess.detach().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    warn!(database = %s.name, standby = %m.region, error = %e, "detaching a standby failed");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let gone = format!("{old}: unreachable at the failover");
        view = super::observe::some(s, memory, Some((old.as_str(), gone.as_str()))).await;
    }
    let deadline = Instant::now() + s.cfg.catch_up;
    let chosen = loop {
        if let Some(a) = &already {
            break Ok(a.clone());
        }
        let cands = candidates(s, &view, status, memory, &old);
        let pick = choose_promotion(&Promotion {
            mode,
            sync_standbys: s.spec.replication.sync_standbys,
            standby_count: sync_standbys_besides(s, &old),
            candidates: &cands,
            preferred: preferred.as_deref(),
            old_final,
            max_lag_seconds: max_lag(s),
        });
        match pick {
            Ok(c) => break Ok(c),
            // The fenced old primary still streams to the standbys: they catch up, so wait (bounded).
            Err(_) if old_final.is_some() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                view = super::observe::some(s, memory, None).await;
            }
            Err(why) => break Err(why),
        }
    };
    let chosen = match chosen {
        Ok(c) => c,
        Err(why) => {
            if old_final.is_some() {
                // A planned move that cannot finish: the old primary takes writes again.
                fence_check(s).await?;
                let rule = sync_standby_names(s.spec, &old);
                let back = match session(s, memory, &old).await {
                    Ok(sess) => match sess.set_primary_rule(&rule).await {
                        Ok(()) => sess.write_epoch(epoch, &old).await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e),
                };
                if let Err(e) = back {
                    // Stays in progress: the next step unfences or promotes.
                    rec.message = Some(format!("abandoning: {why}; unfencing {old} failed: {e}"));
                    status.last_failover = Some(rec);
                    return cas_write(s, status, memory, epoch).await;
                }
                rec.outcome = Some("Abandoned".into());
                rec.message = Some(format!("abandoned, {old} takes writes again: {why}"));
                // Not tried again for a while (each try fences the primary), and DNS does not wait for it.
                memory.abandoned = Some(Instant::now());
                status.blocked_policy_epoch = status.blocked_policy_epoch.max(rec.policy_epoch);
                status.last_failover = Some(rec.clone());
                cas_write(s, status, memory, epoch).await?;
                s.ctx
                    .metrics
                    .db_failovers
                    .with_label_values(&[s.name, "abandoned"])
                    .inc();
                event(
                    s,
                    true,
                    "FailoverAbandoned",
                    rec.message.as_deref().unwrap_or_default(),
                )
                .await;
                return Ok(());
            }
            rec.message = Some(format!("waiting: {why}"));
            status.last_failover = Some(rec.clone());
            // The policy's DNS step does not wait for a promotion that cannot happen yet.
            status.blocked_policy_epoch = status.blocked_policy_epoch.max(rec.policy_epoch);
            let c = Desired::fail("Promotion", "PromotionWaiting", format!("epoch {epoch}: {why}"));
            if condition_changed(status, &c) {
                event(s, true, "PromotionWaiting", &c.message).await;
            }
            status.conditions = merge(&status.conditions, &[c], s.obj.metadata.generation, Time::now());
            return cas_write(s, status, memory, epoch).await;
        }
    };

    // 4. Record the choice, then promote (the epoch is checked against the stored status first).
    let best = view
        .iter()
        .filter(|(r, _)| **r != old)
        .filter_map(|(_, o)| o.as_ref().ok()?.received)
        .max();
    let at = view
        .get(&chosen)
        .and_then(|o| o.as_ref().ok())
        .and_then(|o| o.received);
    if mode == ReplicationMode::Asynchronous {
        let old_pos = old_final.filter(|f| *f > 0).or_else(|| {
            memory
                .last_primary
                .as_ref()
                .filter(|(r, _)| *r == old)
                .map(|(_, p)| *p)
        });
        rec.possible_loss_bytes = match (old_pos, at) {
            (Some(o), Some(a)) => Some(o.saturating_sub(a)),
            _ => None,
        };
        rec.possible_loss_seconds = view
            .get(&chosen)
            .and_then(|o| o.as_ref().ok())
            .and_then(|o| o.replay_delay_seconds)
            .or_else(|| {
                memory
                    .last_lag
                    .get(&chosen)
                    .map(|(l, at)| l + at.elapsed().as_secs_f64())
            });
    }
    rec.to = Some(chosen.clone());
    rec.message = Some(format!(
        "{chosen} promoted at {}; most advanced other member at {}{}",
        at.map_or("unknown".into(), format_lsn),
        best.map_or("unknown".into(), format_lsn),
        old_final
            .filter(|f| *f > 0)
            .map(|f| format!("; fenced primary at {}", format_lsn(f)))
            .unwrap_or_default()
    ));
    status.last_failover = Some(rec.clone());
    test_pause(s, "BEFORE_PROMOTION", epoch).await;
    // The choice is recorded only if the stored status is still this failover's (compare-and-swap): a
    // leader deposed meanwhile, whose successor moved on, stops here and promotes nothing.
    cas_write(s, status, memory, epoch).await?;
    fence_check(s).await?;
    let rule = sync_standby_names(s.spec, &chosen);
    let promoted = match session(s, memory, &chosen).await {
        Ok(sess) => {
            // The member itself is asked again, just before it is touched: the epoch in its data is the last
            // word (a newer primary's epoch reaches its standbys), and a fenced former primary is never
            // made a writer again by a failover.
            let now = sess
                .observe()
                .await
                .map_err(|e| format!("observing {chosen}: {e}"));
            let refusal = match &now {
                Err(e) => Some(e.clone()),
                Ok(o) if o.epoch.unwrap_or(0) > epoch => Some(format!(
                    "{chosen} carries epoch {} — newer than this failover's {epoch}: refusing to promote it",
                    o.epoch.unwrap_or(0)
                )),
                Ok(o)
                    if !o.in_recovery
                        && (o.fenced
                            || (o.epoch != Some(epoch) && already.as_deref() != Some(chosen.as_str()))) =>
                {
                    Some(format!(
                        "{chosen} is a primary of epoch {:?}, not this failover's {epoch}{}: refusing to make it a writer",
                        o.epoch,
                        if o.fenced { " (fenced)" } else { "" }
                    ))
                }
                Ok(_) => None,
            };
            let still_standby = now.as_ref().is_ok_and(|o| o.in_recovery);
            match refusal {
                Some(why) => Err(why),
                None => match sess.set_primary_rule(&rule).await {
                    Err(e) => Err(format!("setting the synchronous rule: {e}")),
                    Ok(()) if still_standby => match sess.promote().await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err("promotion did not finish within 30 s".into()),
                        Err(e) => Err(format!("promoting: {e}")),
                    },
                    Ok(()) => Ok(()),
                },
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = promoted {
        s.ctx
            .metrics
            .db_failovers
            .with_label_values(&[s.name, "failed"])
            .inc();
        rec.message = Some(format!("promoting {chosen}: {e}"));
        status.last_failover = Some(rec);
        cas_write(s, status, memory, epoch).await?;
        return Err(StepError::Moved(format!("promoting {chosen}: {e}")));
    }
    test_pause(s, "AFTER_PROMOTION", epoch).await;
    let epoch_written = match session(s, memory, &chosen).await {
        Ok(sess) => sess.write_epoch(epoch, &chosen).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = epoch_written {
        // The primary is promoted; the epoch is written again by the next steps.
        warn!(database = %s.name, region = %chosen, error = %e, "writing the epoch failed");
    }
    let now = Time::now();
    rec.promoted_time = Some(now);
    rec.outcome = Some("Promoted".into());
    rec.total_ms = rec
        .detected_time
        .map(|d| now.0.duration_since(d.0).as_millis().max(0) as u64);
    status.primary_region = Some(chosen.clone());
    status.last_failover = Some(rec.clone());
    let c = Desired::ok(
        "Promotion",
        "Promoted",
        format!("epoch {epoch}: {chosen} promoted"),
    );
    status.conditions = merge(&status.conditions, &[c], s.obj.metadata.generation, now);
    cas_write(s, status, memory, epoch).await?;
    s.ctx
        .metrics
        .db_failovers
        .with_label_values(&[s.name, "promoted"])
        .inc();
    event(
        s,
        false,
        "DatabasePromoted",
        &format!(
            "epoch {epoch}: {} -> {chosen} ({}); old primary {}{}",
            if old.is_empty() { "none" } else { old.as_str() },
            rec.reason,
            rec.fence.as_deref().unwrap_or("not fenced"),
            rec.possible_loss_bytes
                .map(|b| format!(
                    "; asynchronous: up to {b} bytes the old primary had may be lost ({} without contact)",
                    rec.possible_loss_seconds
                        .map_or("unknown time".to_string(), |t| format!("{t:.1}s"))
                ))
                .unwrap_or_default()
        ),
    )
    .await;

    // 5. Repoint the other standbys (the steady state finishes what fails here), and give them a moment
    // to stream from the new primary before DNS is told the database is ready.
    let gone = format!("{old}: unreachable at the failover");
    let skip = (old_final.is_none() && !old.is_empty()).then_some((old.as_str(), gone.as_str()));
    let fresh = super::observe::some(s, memory, skip).await;
    maintain(s, &fresh, status, memory, &chosen).await?;
    let settle = Instant::now() + Duration::from_secs(5);
    let mut fresh = super::observe::some(s, memory, skip).await;
    while Instant::now() < settle && !all_streaming(s, &fresh, &chosen, &old) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fresh = super::observe::some(s, memory, skip).await;
    }
    // The policy's failover this one follows is served (a more advanced standby elsewhere may have been
    // chosen over the policy's region: no commit is lost; a planned move follows on the next step).
    report(s, &fresh, status, memory, rec.policy_epoch, Vec::new()).await
}

/// Whether the primary's replica entry `r` is member `m` (PostgreSQL names it by region through
/// `application_name`; Redis by the address it announces).
fn is_member(r: &azora_adapters::postgres::Replica, m: &azora_api::database::DatabaseMember) -> bool {
    r.name == m.region || r.name == m.endpoint
}

/// Whether the primary `p` reports `m` streaming from it.
fn streams(p: &PgObservation, m: &azora_api::database::DatabaseMember) -> bool {
    p.replicas
        .iter()
        .any(|r| is_member(r, m) && r.state == "streaming")
}

/// Whether `region`'s member answers as a standby that streams neither in its own view nor in the primary
/// `p`'s (a primary, a fenced former primary, an unreachable or unknown member: not such a standby).
fn standby_not_streaming(s: &Step<'_>, seen: &Seen, p: &PgObservation, region: &str) -> bool {
    s.spec
        .members
        .iter()
        .find(|m| m.region == region)
        .is_some_and(|m| {
            seen.get(region)
                .and_then(|o| o.as_ref().ok())
                .is_some_and(|o| o.in_recovery && !o.streaming && !streams(p, m))
        })
}

/// Whether every reachable standby (the old primary aside) streams from `primary`, as `primary` reports.
fn all_streaming(s: &Step<'_>, seen: &Seen, primary: &str, old: &str) -> bool {
    let Some(p) = seen.get(primary).and_then(|o| o.as_ref().ok()) else {
        return false;
    };
    s.spec
        .members
        .iter()
        .filter(|m| m.region != primary && m.region != old)
        .filter(|m| {
            seen.get(&m.region)
                .is_some_and(|o| o.as_ref().is_ok_and(|o| o.in_recovery))
        })
        .all(|m| {
            p.replicas
                .iter()
                .any(|r| r.name == m.region && r.state == "streaming")
        })
}

/// Writes `status` only if the stored status is still at failover `epoch` and that failover is unfinished
/// (read, compare, write with the read's resourceVersion as precondition).
async fn cas_write(
    s: &Step<'_>,
    status: &DatabaseStatus,
    memory: &mut Memory,
    epoch: u64,
) -> Result<(), StepError> {
    let (rv, stored_status) = stored(s.api, s.name).await?;
    let current = stored_status.last_failover.as_ref();
    if stored_status.epoch != epoch
        || current.map(|f| f.epoch) != Some(epoch)
        || current.is_some_and(|f| f.outcome.is_some())
    {
        return Err(StepError::Moved(format!(
            "stored epoch {} is not this failover's {epoch} (or it is finished): refusing to go on",
            stored_status.epoch
        )));
    }
    write_status(s.ctx, s.writer, s.name, Some(&rv), status, memory).await
}

/// Test failpoints, unset in production: `AZORA_TEST_PAUSE_BEFORE_PROMOTION_MS` (before the choice is
/// recorded: a deposed leader's late promotion) and `AZORA_TEST_PAUSE_AFTER_PROMOTION_MS` (after the
/// promotion, before it is recorded: an operator killed there). They only widen a window; nothing is faked.
async fn test_pause(s: &Step<'_>, point: &str, epoch: u64) {
    let Some(pause) = std::env::var(format!("AZORA_TEST_PAUSE_{point}_MS"))
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
    else {
        return;
    };
    warn!(
        database = %s.name,
        epoch,
        point,
        pause_ms = pause.as_millis() as u64,
        "test failpoint: pausing"
    );
    tokio::time::sleep(pause).await;
}

/// Makes `region`'s member follow `primary` (as `region`).
async fn follow(
    s: &Step<'_>,
    memory: &mut Memory,
    region: &str,
    primary: &azora_adapters::postgres::PgTarget,
) -> Result<(), String> {
    session(s, memory, region)
        .await?
        .follow(primary, region)
        .await
        .map_err(|e| e.to_string())
}

/// Keeps the topology: the primary's synchronous rule and epoch, a second primary fenced, every standby
/// streaming from the primary. Never promotes.
async fn maintain(
    s: &Step<'_>,
    seen: &Seen,
    status: &mut DatabaseStatus,
    memory: &mut Memory,
    primary: &str,
) -> Result<(), StepError> {
    let Some(p) = seen.get(primary).and_then(|o| o.as_ref().ok()) else {
        return Ok(());
    };
    if p.in_recovery {
        return Ok(());
    }
    // A member holding a newer epoch than the status (a status restored from an old copy): the recorded
    // primary may be a stale one. Nothing is unfenced, fenced or repointed on its word.
    if let Some((r, e)) = seen
        .iter()
        .filter_map(|(r, o)| o.as_ref().ok().and_then(|o| o.epoch).map(|e| (r, e)))
        .find(|(_, e)| *e > status.epoch)
    {
        warn!(
            database = %s.name,
            region = %r,
            member_epoch = e,
            status_epoch = status.epoch,
            "a member holds a newer epoch than the status: the topology is left as it is"
        );
        return Ok(());
    }
    let rule = sync_standby_names(s.spec, primary);
    // The primary's region is Down (the followed policy is given a moment to move first): a failover is
    // near, so the primary is neither declared kept nor unfenced meanwhile.
    let region_down = down(s, primary);
    // "The leader keeps this member as the primary of this epoch", renewed at every pass in the member's
    // session name, in its own clock: a region agent cut off from the hub holds back its hub-loss fence only
    // while this is fresh. Only while leading (confirmed by the API server within a second).
    // What this view says is confirmed against the stored status once per epoch and primary (a new term's
    // first view comes from the cache, which may lag).
    let confirmed = if memory.confirmed.as_ref() == Some(&(status.epoch, primary.to_string())) {
        true
    } else {
        match stored(s.api, s.name).await {
            Ok((_, st)) if st.epoch == status.epoch && st.primary_region.as_deref() == Some(primary) => {
                memory.confirmed = Some((status.epoch, primary.to_string()));
                true
            }
            _ => false,
        }
    };
    if !confirmed {
        return Ok(());
    }
    if !region_down {
        // The name must land soon after the leadership check (well inside the lease), so a deposed
        // leader's held-up connect or statement leaves no fresh name behind; the session is opened first,
        // so a reconnect does not use up that time.
        let kept = match session(s, memory, primary).await {
            Ok(sess) => match s.ctx.fence.check_recent(Duration::from_secs(1)).await {
                Ok(_) => sess
                    .assert_keeper(status.epoch, Instant::now(), KEEPER_LANDING)
                    .await
                    .map_err(|e| e.to_string()),
                Err(_) => Ok(()),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = kept {
            warn!(database = %s.name, region = %primary, error = %e, "renewing the keeper name failed");
        }
    }
    // Our fence (PostgreSQL: read-only with the marker as the synchronous rule; Redis: the
    // `min-replicas-to-write` no deployment sets), e.g. the agent's when it lost the hub: lifted here.
    let ours_fence = p.fenced;
    if !(ours_fence && region_down)
        && (ours_fence || !same_sync_rule(&p.sync_names, &rule) || p.epoch.unwrap_or(0) < status.epoch)
    {
        fence_check(s).await?;
        let r = match session(s, memory, primary).await {
            Ok(sess) => {
                let set = if ours_fence {
                    sess.set_primary_rule(&rule).await
                } else if !same_sync_rule(&p.sync_names, &rule) {
                    sess.set_sync_rule(&rule).await
                } else {
                    Ok(())
                };
                match set {
                    Ok(()) if p.epoch.unwrap_or(0) < status.epoch => sess
                        .write_epoch(status.epoch, primary)
                        .await
                        .map_err(|e| e.to_string()),
                    Ok(()) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            warn!(database = %s.name, region = %primary, error = %e, "keeping the primary's rule failed");
        }
    }
    let Some(primary_target) = s.targets.get(primary).cloned() else {
        return Ok(());
    };
    let mut credentials_repointed = false;
    for m in &s.spec.members {
        if m.region == primary {
            continue;
        }
        let Some(o) = seen.get(&m.region).and_then(|o| o.as_ref().ok()) else {
            continue;
        };
        if !o.in_recovery {
            if !o.fenced {
                // A second primary (a former one that came back): it takes no commit from now on.
                fence_check(s).await?;
                let r = match session(s, memory, &m.region).await {
                    Ok(sess) => sess.fence().await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                let r = match (r, s.spec.engine) {
                    // A Redis member is rebuilt by following the primary (a full resync): its writes since
                    // the failover are the loss window already reported.
                    (Ok(()), azora_api::database::Engine::Redis) => {
                        follow(s, memory, &m.region, &primary_target).await
                    }
                    (r, _) => r,
                };
                match r {
                    Ok(()) => {
                        event(
                            s,
                            true,
                            "SecondPrimaryFenced",
                            &format!(
                                "{} takes writes outside epoch {} (primary {primary}): fenced until rebuilt as a standby",
                                m.region, status.epoch
                            ),
                        )
                        .await;
                    }
                    Err(e) => {
                        warn!(database = %s.name, region = %m.region, error = %e, "fencing a second primary failed")
                    }
                }
            } else if s.spec.engine == azora_api::database::Engine::Redis
                && o.epoch.unwrap_or(0) < status.epoch
                && !p.fenced
                && p.epoch.unwrap_or(0) >= status.epoch
            {
                // A fenced former Redis primary (fenced at a switchover, by the agent, or above) rejoins by
                // following the primary — only once that is a writable primary holding the current epoch.
                // What it took after the failover is the loss window already reported.
                fence_check(s).await?;
                let r = follow(s, memory, &m.region, &primary_target).await;
                match r {
                    Ok(()) => {
                        event(
                            s,
                            false,
                            "MemberRebuilt",
                            &format!(
                                "{} (a fenced former primary of epoch {}) now follows {primary} (epoch {}) and \
                                 resyncs from it",
                                m.region,
                                o.epoch.unwrap_or(0),
                                status.epoch
                            ),
                        )
                        .await;
                    }
                    Err(e) => {
                        warn!(database = %s.name, region = %m.region, error = %e, "rejoining a former primary failed")
                    }
                }
            }
            continue;
        }
        let (host, port, app) = &o.upstream;
        let aimed = host.as_deref() == Some(primary_target.host.as_str())
            && port.as_deref() == Some(primary_target.port.to_string().as_str())
            && app.as_deref().is_none_or(|a| a == m.region);
        // With the primary's current credentials too: a standby left with a password rotated since (the
        // credentials Secret changed) would fail at its next reconnect. And with the TLS the spec asks for
        // (left alone while the spec asks for none: a person's own TLS is kept).
        let stale_credentials = o
            .upstream_credentials
            .as_ref()
            .is_some_and(|c| *c != primary_target.credentials_fingerprint());
        let wanted_tls = match s.spec.engine {
            azora_api::database::Engine::PostgreSQL => primary_target.tls_required(),
            azora_api::database::Engine::Redis if primary_target.tls.on() => "yes".into(),
            azora_api::database::Engine::Redis => String::new(),
        };
        let streaming = o.streaming || streams(p, m);
        // Compared only while the spec asks for TLS: otherwise a person's own TLS is left as it is.
        let stale_tls = s.spec.tls.is_some() && o.upstream_tls != wanted_tls;
        // A Redis replica still carrying a fence (its unfence after REPLICAOF failed) could never be
        // promoted: following again lifts it.
        let fenced_replica = o.fenced && s.spec.engine == azora_api::database::Engine::Redis;
        // Repointing a streaming standby for these settings alone restarts its WAL receiver: one such
        // standby per pass, only while every other standby streams, and only once the last one so
        // repointed streams again (seen a few seconds on: right after the repoint the primary may still
        // list its old stream) — settings the standbys cannot use (a CA file missing on their hosts) stop
        // at one standby instead of taking every synchronous standby away in turn. A standby that does not
        // stream loses nothing by it.
        let settings_only = aimed && !fenced_replica && (stale_credentials || stale_tls);
        if settings_only && streaming {
            let held_by = memory
                .settings_repoint
                .as_ref()
                .filter(|(r, at)| {
                    *r != m.region
                        && (at.elapsed() < SETTINGS_REPOINT_SETTLE || standby_not_streaming(s, seen, p, r))
                })
                .map(|(r, _)| r.clone())
                .or_else(|| {
                    s.spec
                        .members
                        .iter()
                        .find(|o| o.region != m.region && standby_not_streaming(s, seen, p, &o.region))
                        .map(|o| o.region.clone())
                });
            if let Some(r) = held_by {
                if memory.settings_held.as_deref() != Some(m.region.as_str()) {
                    info!(database = %s.name, standby = %m.region, waiting_for = %r,
                          "repointing a streaming standby for new credentials or TLS held back until the other streams");
                    memory.settings_held = Some(m.region.clone());
                }
                continue;
            }
            if credentials_repointed {
                continue;
            }
        }
        if settings_only {
            memory.settings_repoint = Some((m.region.clone(), Instant::now()));
            memory.settings_held = None;
        }
        let stale_credentials = stale_credentials || stale_tls;
        if !aimed || stale_credentials || fenced_replica {
            credentials_repointed |= aimed;
            fence_check(s).await?;
            let r = follow(s, memory, &m.region, &primary_target).await;
            match r {
                Ok(()) => info!(database = %s.name, standby = %m.region, %primary, "standby repointed"),
                Err(e) => warn!(database = %s.name, standby = %m.region, error = %e, "repointing failed"),
            }
        }
    }
    Ok(())
}

/// Member status, conditions, metrics and Events from one observation; written when something other than
/// positions changed, or every `REFRESH`.
async fn report(
    s: &Step<'_>,
    seen: &Seen,
    status: &mut DatabaseStatus,
    memory: &mut Memory,
    placed_for: Option<u64>,
    extra: Vec<Desired>,
) -> Result<(), StepError> {
    let primary = status.primary_region.clone();
    let p = primary
        .as_deref()
        .and_then(|r| seen.get(r))
        .and_then(|o| o.as_ref().ok())
        .filter(|o| !o.in_recovery);
    if let (Some(pr), Some(o)) = (primary.as_ref(), p)
        && let Some(pos) = o.received
    {
        memory.last_primary = Some((pr.clone(), pos));
    }
    let mut members = Vec::new();
    let mut not_streaming = Vec::new();
    let mut lagging = Vec::new();
    let mut max_bytes = 0u64;
    let limit = max_lag(s);
    for m in &s.spec.members {
        let mut ms = MemberStatus {
            region: m.region.clone(),
            ..MemberStatus::default()
        };
        match seen.get(&m.region) {
            Some(Ok(o)) => {
                ms.reachable = true;
                ms.epoch = o.epoch;
                ms.position = o.received.map(format_lsn);
                if Some(m.region.as_str()) == primary.as_deref() && !o.in_recovery {
                    ms.role = MemberRole::Primary;
                } else if !o.in_recovery && o.fenced {
                    ms.role = MemberRole::Fenced;
                    ms.message = Some(format!(
                        "a former primary: fenced (read-only, no commit acknowledged) until rebuilt as a standby of {}",
                        primary.as_deref().unwrap_or("the primary")
                    ));
                } else if !o.in_recovery {
                    // Not fenced (yet): never reported as fenced before it is.
                    ms.role = MemberRole::Unknown;
                    ms.message = Some(format!(
                        "takes writes outside the recorded primary {}: being fenced",
                        primary.as_deref().unwrap_or("")
                    ));
                } else {
                    ms.role = MemberRole::Standby;
                    ms.upstream = primary.clone().filter(|pr| {
                        s.targets.get(pr).is_some_and(|t| {
                            o.upstream.0.as_deref() == Some(t.host.as_str())
                                && o.upstream.1.as_deref() == Some(t.port.to_string().as_str())
                        })
                    });
                    let rep = p.and_then(|p| p.replicas.iter().find(|r| is_member(r, m)));
                    match rep {
                        Some(r) => {
                            ms.sync_state = Some(r.sync_state.clone());
                            ms.lag_bytes = r.lag_bytes;
                            // No replay lag reported (catching up, or idle) counts as 0 only when nothing
                            // is outstanding.
                            ms.lag_seconds = r
                                .replay_lag_seconds
                                .or_else(|| (r.lag_bytes == Some(0)).then_some(0.0));
                            match ms.lag_seconds {
                                Some(l) if r.state == "streaming" => {
                                    memory.last_lag.insert(m.region.clone(), (l, Instant::now()));
                                }
                                _ => {
                                    memory.last_lag.remove(&m.region);
                                }
                            }
                            if r.state != "streaming" {
                                not_streaming.push(format!("{} ({})", m.region, r.state));
                            }
                        }
                        None => {
                            ms.sync_state = Some("disconnected".into());
                            // The lag last known stays (the asynchronous promotion rule reads it, aged).
                            ms.lag_seconds = status
                                .members
                                .iter()
                                .find(|x| x.region == m.region)
                                .and_then(|x| x.lag_seconds);
                            not_streaming.push(format!("{} (not connected to the primary)", m.region));
                        }
                    }
                    if ms.lag_seconds.is_some_and(|l| l > limit) {
                        lagging.push(format!("{} ({:.0}s)", m.region, ms.lag_seconds.unwrap_or(0.0)));
                    }
                    max_bytes = max_bytes.max(ms.lag_bytes.unwrap_or(0));
                    let labels = [s.name, m.region.as_str()];
                    if let Some(l) = ms.lag_seconds {
                        s.ctx.metrics.db_lag_seconds.with_label_values(&labels).set(l);
                    }
                    if let Some(b) = ms.lag_bytes {
                        s.ctx
                            .metrics
                            .db_lag_bytes
                            .with_label_values(&labels)
                            .set(b as f64);
                    }
                }
            }
            Some(Err(e)) => {
                ms.message = Some(e.clone());
                if Some(m.region.as_str()) != primary.as_deref() {
                    not_streaming.push(format!("{} (unreachable)", m.region));
                }
            }
            None => {}
        }
        s.ctx
            .metrics
            .db_primary
            .with_label_values(&[s.name, m.region.as_str()])
            .set(if ms.role == MemberRole::Primary { 1.0 } else { 0.0 });
        if ms.role != MemberRole::Standby {
            // Lag is a standby's: a promoted, fenced or unseen member exports none.
            let _ = s
                .ctx
                .metrics
                .db_lag_seconds
                .remove_label_values(&[s.name, m.region.as_str()]);
            let _ = s
                .ctx
                .metrics
                .db_lag_bytes
                .remove_label_values(&[s.name, m.region.as_str()]);
        }
        members.push(ms);
    }
    if let Some(f) = status.last_failover.as_mut()
        && f.outcome.as_deref() == Some("Promoted")
        && f.repointed_time.is_none()
        && p.is_some()
        && members
            .iter()
            .filter(|m| m.role == MemberRole::Standby)
            .all(|m| m.upstream.is_some() && m.sync_state.as_deref() != Some("disconnected"))
    {
        f.repointed_time = Some(Time::now());
    }
    // The DNS half of the failover, from the followed policy's timeline (same policy epoch).
    if let Some(f) = status.last_failover.as_mut()
        && f.outcome.as_deref() == Some("Promoted")
        && (f.dns_updated_time.is_none() || f.verified_time.is_none())
        && let Some(pe) = f.policy_epoch
        && let Some(pol) = super::policy_status(s.ctx, s.spec)
    {
        let rec = pol
            .last_failover
            .iter()
            .chain(pol.history.iter())
            .find(|r| r.epoch == pe);
        if let Some(r) = rec {
            f.dns_updated_time = f.dns_updated_time.or(r.dns_updated_time);
            f.verified_time = f.verified_time.or(r.verified_time);
        }
    }
    let mut desired = vec![
        Desired::ok("SpecValid", "Valid", "spec passed validation"),
        Desired::ok("ReferencesResolved", "Resolved", "every reference exists"),
    ];
    let standbys = s.spec.members.len().saturating_sub(1);
    desired.push(if !not_streaming.is_empty() {
        Desired::fail(
            "Replicating",
            "StandbyDisconnected",
            format!("not streaming from the primary: {}", not_streaming.join(", ")),
        )
    } else if !lagging.is_empty() {
        Desired::fail(
            "Replicating",
            "StandbyLagging",
            format!("behind by more than {limit:.0}s: {}", lagging.join(", ")),
        )
    } else {
        Desired::ok(
            "Replicating",
            "Streaming",
            format!(
                "{standbys} standby(s) streaming from {}",
                primary.as_deref().unwrap_or("the primary")
            ),
        )
    });
    if !extra.iter().any(|d| d.type_ == "Ready") {
        desired.push(match (&primary, p) {
            (Some(pr), Some(_)) => Desired::ok(
                "Ready",
                "PrimaryWritable",
                format!("the primary in {pr} takes writes (epoch {})", status.epoch),
            ),
            (Some(pr), None) => Desired::fail(
                "Ready",
                "PrimaryUnreachable",
                format!("the primary in {pr} does not answer as a primary"),
            ),
            (None, _) => Desired::fail("Ready", "NoPrimary", "no primary recorded yet"),
        });
    }
    desired.extend(extra);
    // Events on transitions of Replicating.
    if let Some(rep) = desired.iter().find(|d| d.type_ == "Replicating")
        && condition_changed(status, rep)
        && status.conditions.iter().any(|c| c.type_ == "Replicating")
    {
        let warn = rep.status != azora_api::common::ConditionStatus::True;
        event(s, warn, &rep.reason, &rep.message).await;
    }
    let mut next = status.clone();
    next.members = members;
    next.conditions = merge(
        &status.conditions,
        &desired,
        s.obj.metadata.generation,
        Time::now(),
    );
    next.observed_generation = s.obj.metadata.generation;
    next.max_lag = Some(human_bytes(max_bytes));
    if let Some(e) = placed_for {
        next.policy_epoch = Some(next.policy_epoch.unwrap_or(0).max(e));
    }
    let strip = |st: &DatabaseStatus| {
        let mut st = st.clone();
        for m in &mut st.members {
            m.position = None;
            m.lag_bytes = None;
            m.lag_seconds = None;
        }
        st.max_lag = None;
        st.conditions = Vec::new();
        st
    };
    let due = memory.written.is_none_or(|w| w.elapsed() >= REFRESH);
    let changed = strip(&next) != strip(status)
        || !azora_core::conditions::same_ignoring_time(&next.conditions, &status.conditions);
    *status = next;
    if changed || due {
        write_status(s.ctx, s.writer, s.name, None, status, memory).await?;
    }
    Ok(())
}
