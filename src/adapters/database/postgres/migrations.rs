//! Migrations on PostgreSQL: the connection kept between back-to-back migrations, the
//! sessions that run batches of them, and settling a batch that did not come back.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Connection, Postgres};

use super::super::{BatchError, Database, DatabaseError};
use super::{PostgresDatabase, end_sessions};

impl PostgresDatabase {
    /// The connection for the next migration: the previous migration's when it finished
    /// just now (taking one from the pool costs a round trip: the pool tests it first),
    /// else one from the pool.
    pub(super) async fn migration_connection(&self) -> Result<MigrationConnection, DatabaseError> {
        self.settle().await?;
        if let Some(kept) = self.migrating.lock().await.take()
            && (kept.pending.is_some() || kept.at.elapsed() < REUSE_MIGRATION_CONNECTION)
        {
            return Ok(kept);
        }
        let conn = self
            .pool()
            .await?
            .acquire()
            .await
            .map_err(super::super::sql_err("cannot connect"))?;
        Ok(MigrationConnection {
            conn,
            at: std::time::Instant::now(),
            prepared: false,
            pending: None,
            pid: None,
        })
    }

    /// The migration connection for a batch, named as this process's
    /// ([`migration_session_name`]) and marked [`Self::unsettled`] until the batch is back:
    /// until then its session may commit more than this process knows.
    pub(super) async fn batch_session(&self) -> Result<MigrationConnection, BatchError> {
        let error = |error| BatchError {
            took: Vec::new(),
            error,
        };
        let mut kept = self.migration_connection().await.map_err(error)?;
        let pid = if let Some(pid) = kept.pid {
            pid
        } else {
            let named = format!(
                "SET application_name = '{}'; SELECT pg_backend_pid()",
                migration_session_name()
            );
            // One simple-protocol message; the name holds no quote.
            let pid = sqlx::Executor::fetch_one(&mut *kept.conn, named.as_str())
                .await
                .and_then(|row| sqlx::Row::try_get::<i32, _>(&row, 0))
                .map_err(|e| {
                    error(super::super::sql_err("cannot name the migration session")(
                        e,
                    ))
                })?;
            // Named as ours: it never goes back to the pool.
            kept.conn.close_on_drop();
            kept.pid = Some(pid);
            pid
        };
        self.unsettled.store(pid, Ordering::Release);
        Ok(kept)
    }

    /// A batch came back whole: nothing of it is left running, and its connection serves
    /// the next one.
    pub(super) async fn batch_back(&self, kept: MigrationConnection) {
        self.unsettled.store(0, Ordering::Release);
        self.keep_migration_connection(kept).await;
    }

    /// Ends the session of a batch that did not come back ([`Self::unsettled`]) and waits
    /// until the server has let it go: then the history says exactly which of its
    /// migrations committed.
    pub(super) async fn settle(&self) -> Result<(), DatabaseError> {
        let pid = self.unsettled.load(Ordering::Acquire);
        if pid == 0 {
            return Ok(());
        }
        let mut conn = super::shared::open(&self.options, self.describe()).await?;
        let ended = end_sessions(
            &mut conn,
            "SELECT pid FROM pg_stat_activity WHERE pid = CAST($1 AS integer)",
            &pid.to_string(),
        )
        .await;
        let _ = conn.close().await;
        ended?;
        self.unsettled.store(0, Ordering::Release);
        Ok(())
    }

    /// Commits the migration left waiting on the migration connection, if any, before
    /// anything else reads or changes the database.
    pub(super) async fn commit_pending(&self) -> Result<(), DatabaseError> {
        self.settle().await?;
        let mut slot = self.migrating.lock().await;
        if let Some(kept) = slot.as_mut()
            && let Some(version) = kept.pending.take()
            && let Err(e) = sqlx::Executor::execute(&mut *kept.conn, "COMMIT").await
        {
            // Its transaction is gone either way; the connection may be too.
            slot.take();
            return Err(super::super::history::not_committed(version, &e));
        }
        Ok(())
    }

    pub(super) async fn keep_migration_connection(&self, mut kept: MigrationConnection) {
        kept.at = std::time::Instant::now();
        *self.migrating.lock().await = Some(kept);
    }
}

/// A connection kept between back-to-back migrations.
pub(super) struct MigrationConnection {
    pub(super) conn: PoolConnection<Postgres>,
    /// When its last migration finished.
    pub(super) at: std::time::Instant,
    /// The history's statements are prepared on it (see [`super::super::history::PREPARE_RECORD`]).
    pub(super) prepared: bool,
    /// The migration whose transaction waits on it for its `COMMIT`, sent with the next
    /// migration ([`Commit::Deferred`]). Anything else done with this adapter commits it
    /// first ([`PostgresDatabase::commit_pending`]).
    pub(super) pending: Option<i64>,
    /// Its server process, once named [`migration_session_name`] for batches.
    pub(super) pid: Option<i32>,
}

/// The `application_name` of the sessions that run batches of migrations, unique to this
/// process: a later run can find and end what a run that died left running.
pub(super) fn migration_session_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        format!("{MIGRATION_SESSIONS}{:x}-{nanos:x}", std::process::id())
    })
}

/// What every [`migration_session_name`] starts with.
pub(super) const MIGRATION_SESSIONS: &str = "cutover migrations ";

/// How long a migration session that lost its client may take to end once told to.
pub(super) const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// How long a migration's connection is reused for the next one without the pool's test:
/// back-to-back migrations, not a rollback minutes later on a connection that may be gone.
pub(super) const REUSE_MIGRATION_CONNECTION: Duration = Duration::from_secs(1);
