//! One observation round: every member, concurrently, through sessions kept between rounds (a failed one is
//! dropped and opened again next round).

use std::collections::HashMap;

use azora_adapters::member::{self, Session};
use futures::future::join_all;

use super::{Memory, Seen, Step};

/// Observes every member with credentials. A member without them is unreachable with that reason.
pub(super) async fn all(s: &Step<'_>, memory: &mut Memory) -> Seen {
    some(s, memory, None).await
}

/// How often a member that did not answer gets the full connect deadline again.
const FULL_DEADLINE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Observes every member but `skip` (reported with the message given: a member found unreachable moments
/// ago in this step is not waited for again).
pub(super) async fn some(s: &Step<'_>, memory: &mut Memory, skip: Option<(&str, &str)>) -> Seen {
    let mut sessions: HashMap<String, Session> = std::mem::take(&mut memory.sessions);
    // A session to an address that changed is not reused.
    sessions.retain(|region, _| s.targets.contains_key(region));
    let full_round = memory
        .full_deadline_at
        .is_none_or(|t| t.elapsed() >= FULL_DEADLINE_EVERY);
    if full_round {
        memory.full_deadline_at = Some(std::time::Instant::now());
    }
    let rounds = s.spec.members.iter().map(|m| {
        let session = sessions.remove(&m.region);
        let target = s.targets.get(&m.region).cloned();
        let region = m.region.clone();
        let engine = s.spec.engine;
        // A member that did not answer last round gets a short deadline: a hung server is not waited for
        // again at every round (a failover would wait behind it).
        // Every `FULL_DEADLINE_EVERY` it gets the full one: a far member whose connect (TLS takes more round
        // trips) does not fit the short deadline still comes back.
        let tls = s.spec.tls.is_some();
        let deadline = if memory.unreachable.contains(&m.region) && !full_round {
            std::time::Duration::from_millis(if tls { 1500 } else { 500 })
        } else {
            std::time::Duration::from_secs(2)
        };
        let skipped = skip
            .filter(|(r, _)| *r == m.region)
            .map(|(_, why)| why.to_string());
        async move {
            if let Some(why) = skipped {
                return (region, Err(why), session);
            }
            let Some(target) = target else {
                return (region, Err("credentials missing".to_string()), None);
            };
            let mut session = match session {
                Some(sess) if !sess.is_closed() && sess.target_is(&target) => sess,
                _ => match member::connect_within(engine, &target, deadline).await {
                    Ok(sess) => sess,
                    Err(e) => return (region, Err(format!("connecting: {e}")), None),
                },
            };
            match session.observe().await {
                Ok(o) => (region, Ok(o), Some(session)),
                Err(e) => (region, Err(format!("observing: {e}")), None),
            }
        }
    });
    let mut seen = Seen::new();
    for (region, result, session) in join_all(rounds).await {
        if let Some(sess) = session {
            memory.sessions.insert(region.clone(), sess);
        }
        if result.is_ok() {
            memory.unreachable.remove(&region);
        } else {
            memory.unreachable.insert(region.clone());
        }
        seen.insert(region, result);
    }
    seen
}

/// The session of `region`, opened if there is none.
pub(super) async fn session<'m>(
    s: &Step<'_>,
    memory: &'m mut Memory,
    region: &str,
) -> Result<&'m mut Session, String> {
    let target = s
        .targets
        .get(region)
        .ok_or_else(|| format!("{region}: credentials missing"))?;
    let reuse = memory
        .sessions
        .get(region)
        .is_some_and(|sess| !sess.is_closed() && sess.target_is(target));
    if !reuse {
        let sess = member::connect(s.spec.engine, target)
            .await
            .map_err(|e| format!("{region}: connecting: {e}"))?;
        memory.sessions.insert(region.to_string(), sess);
    }
    memory
        .sessions
        .get_mut(region)
        .ok_or_else(|| format!("{region}: no session"))
}
