//! One database member, whatever its engine (IO): the operations the database room performs, forwarded to
//! PostgreSQL or Redis. Redis has no synchronous rule (its "primary rule" is only the fence lifted) and no
//! checkpoint.

use azora_api::database::Engine;

use crate::postgres::{self, PgError, PgObservation, PgSession, PgTarget};
use crate::redis::{self, RedisSession};

/// An open session with one member.
pub enum Session {
    /// PostgreSQL.
    Pg(PgSession),
    /// Redis.
    Redis(RedisSession),
}

/// Opens a session to a member of `engine`.
pub async fn connect(engine: Engine, t: &PgTarget) -> Result<Session, PgError> {
    connect_within(engine, t, std::time::Duration::from_secs(2)).await
}

/// Opens a session within `deadline`.
pub async fn connect_within(
    engine: Engine,
    t: &PgTarget,
    deadline: std::time::Duration,
) -> Result<Session, PgError> {
    Ok(match engine {
        Engine::PostgreSQL => Session::Pg(postgres::connect_within(t, deadline).await?),
        Engine::Redis => Session::Redis(redis::connect_within(t, deadline).await?),
    })
}

impl Session {
    /// Whether it was opened to `t`.
    pub fn target_is(&self, t: &PgTarget) -> bool {
        match self {
            Session::Pg(s) => s.target_is(t),
            Session::Redis(s) => s.target_is(t),
        }
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        match self {
            Session::Pg(s) => s.is_closed(),
            Session::Redis(s) => s.is_closed(),
        }
    }

    /// Observes the member.
    pub async fn observe(&mut self) -> Result<PgObservation, PgError> {
        match self {
            Session::Pg(s) => s.observe().await,
            Session::Redis(s) => s.observe().await,
        }
    }

    /// Fences it; returns its position after the fence.
    pub async fn fence(&mut self) -> Result<Option<u64>, PgError> {
        match self {
            Session::Pg(s) => s.fence().await,
            Session::Redis(s) => s.fence().await,
        }
    }

    /// Makes it take writes under `sync_names` (PostgreSQL) with the fence lifted.
    pub async fn set_primary_rule(&mut self, sync_names: &str) -> Result<(), PgError> {
        match self {
            Session::Pg(s) => s.set_primary_rule(sync_names).await,
            Session::Redis(s) => s.unfence().await,
        }
    }

    /// Sets the synchronous rule only (PostgreSQL; nothing for Redis).
    pub async fn set_sync_rule(&mut self, sync_names: &str) -> Result<(), PgError> {
        match self {
            Session::Pg(s) => s.set_sync_rule(sync_names).await,
            Session::Redis(_) => Ok(()),
        }
    }

    /// Renames this session (a region agent's: [`crate::postgres::AGENT_SESSION`]).
    pub async fn identify(&mut self, name: &str) -> Result<(), PgError> {
        match self {
            Session::Pg(s) => s.identify(name).await,
            Session::Redis(s) => s.identify(name).await,
        }
    }

    /// Names this session the keeper of the member as the primary of `epoch` (the leading operator, at every
    /// pass that keeps it as the primary).
    /// Only within `window` of `confirmed` (the leadership check), on the member's own clock.
    pub async fn assert_keeper(
        &mut self,
        epoch: u64,
        confirmed: std::time::Instant,
        window: std::time::Duration,
    ) -> Result<(), PgError> {
        match self {
            Session::Pg(s) => s.assert_keeper(epoch, confirmed, window).await,
            Session::Redis(s) => s.assert_keeper(epoch, confirmed, window).await,
        }
    }

    /// Whether another session names the operator the keeper of this member as the primary of `epoch` or
    /// newer within the last `window`.
    pub async fn kept_within(&mut self, epoch: u64, window: std::time::Duration) -> Result<bool, PgError> {
        match self {
            Session::Pg(s) => s.kept_within(epoch, window).await,
            Session::Redis(s) => s.kept_within(epoch, window).await,
        }
    }

    /// Promotes a standby.
    pub async fn promote(&mut self) -> Result<bool, PgError> {
        match self {
            Session::Pg(s) => s.promote().await,
            Session::Redis(s) => s.promote().await,
        }
    }

    /// Writes the epoch into its data.
    pub async fn write_epoch(&mut self, epoch: u64, region: &str) -> Result<(), PgError> {
        match self {
            Session::Pg(s) => s.write_epoch(epoch, region).await,
            Session::Redis(s) => s.write_epoch(epoch, region).await,
        }
    }

    /// Stops a standby streaming (PostgreSQL; nothing for Redis).
    pub async fn detach(&mut self) -> Result<(), PgError> {
        match self {
            Session::Pg(s) => s.detach().await,
            Session::Redis(_) => Ok(()),
        }
    }

    /// Follows `primary`, as `name` (PostgreSQL's `application_name`).
    pub async fn follow(&mut self, primary: &PgTarget, name: &str) -> Result<(), PgError> {
        match self {
            Session::Pg(s) => s.follow(primary, name).await,
            Session::Redis(s) => s.follow(primary).await,
        }
    }
}
