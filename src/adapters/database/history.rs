//! The migration history in sqlx's `_sqlx_migrations` table, the same for every dialect:
//! reading it, applying and reverting one migration. Each adapter hands in a connection
//! of its kind. PostgreSQL and SQLite apply a migration and its record as one script and a
//! commit ([`apply_script`]); MySQL, whose DDL commits on its own, goes through sqlx's
//! own migrator. A migration that runs outside a transaction (`-- cutover:no-transaction`)
//! is recorded as unfinished first, its statements run one by one, each committing on its
//! own, and its record is marked done last ([`no_transaction_runners`]): a failure
//! part-way leaves it dirty, never looking applied or never run.
//!
//! Every migration is its own transaction, but only the last one of a step has to wait
//! for the disk ([`Commit`]): the ones before it are flushed by it. On a slow disk that
//! is most of the cost of committing migrations one by one. On PostgreSQL the `COMMIT` of
//! all but the last also rides on the next migration's message instead of taking a round
//! trip of its own, and most migrations go to the server several in one message
//! ([`apply_postgres_batch`]), each still its own transaction with its record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::migrate::{Migrate, MigrateError};
use sqlx::pool::PoolConnection;

use super::{AppliedMigration, BatchError, Commit, DatabaseError, DatabaseState};
use crate::migrate::MigrationFile;

fn history_error(e: MigrateError) -> DatabaseError {
    DatabaseError::Other(format!("cannot read the migration history: {e}"))
}

/// The history of a database whose `_sqlx_migrations` table exists.
pub(crate) async fn read<C: Migrate + Send + ?Sized>(
    conn: &mut C,
) -> Result<DatabaseState, DatabaseError> {
    let dirty = conn.dirty_version().await.map_err(history_error)?;
    let applied = conn
        .list_applied_migrations()
        .await
        .map_err(history_error)?
        .into_iter()
        .map(|m| AppliedMigration {
            version: m.version,
            checksum: m.checksum.into_owned(),
        })
        .collect();
    Ok(DatabaseState {
        exists: true,
        applied,
        dirty,
    })
}

/// Applies one migration and records it; returns how long it took.
pub(crate) async fn apply<C: Migrate + Send + ?Sized>(
    conn: &mut C,
    migration: &MigrationFile,
) -> Result<Duration, DatabaseError> {
    let to_err = |source| DatabaseError::Migration {
        version: migration.version,
        description: migration.description.clone(),
        source,
    };
    conn.ensure_migrations_table().await.map_err(to_err)?;
    let start = Instant::now();
    conn.apply(&migration.up()).await.map_err(to_err)?;
    Ok(start.elapsed())
}

/// Runs a migration's down file and removes its record.
pub(crate) async fn revert<C: Migrate + Send + ?Sized>(
    conn: &mut C,
    migration: &MigrationFile,
) -> Result<(), DatabaseError> {
    let down = migration.down().ok_or_else(|| {
        DatabaseError::Other(format!(
            "migration {} ({}) has no down file",
            migration.version, migration.description
        ))
    })?;
    conn.revert(&down)
        .await
        .map_err(|source| DatabaseError::Migration {
            version: migration.version,
            description: format!("{} (down)", migration.description),
            source,
        })?;
    Ok(())
}

/// The SQL dialect of a one-message migration script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

/// PostgreSQL's statements for a migration's record, prepared once per connection
/// ([`PREPARE_RECORD`]): the server parses and plans them once instead of per migration.
const RECORD_STARTED: &str = "cutover_migration_started";
const RECORD_DONE: &str = "cutover_migration_done";
const RECORD_APPLIED: &str = "cutover_migration_applied";

/// Prepares [`RECORD_STARTED`], [`RECORD_DONE`] and [`RECORD_APPLIED`] on a PostgreSQL
/// connection whose `_sqlx_migrations` exists. The execution time is the server's, from
/// the arrival of the migration's message (`statement_timestamp()`) to the end of its SQL;
/// for the second and later migrations of one message ([`apply_postgres_batch`]), from
/// the previous one's record (`cutover.recorded`, which [`RECORD_APPLIED`] returns with
/// the time).
pub(crate) const PREPARE_RECORD: &str = "PREPARE cutover_migration_started(bigint, text, bytea) AS INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, $2, FALSE, $3, -1);
PREPARE cutover_migration_done(bigint) AS UPDATE _sqlx_migrations SET success = TRUE, execution_time = CAST(EXTRACT(EPOCH FROM clock_timestamp() - statement_timestamp()) * 1000000000 AS BIGINT) WHERE version = $1;
PREPARE cutover_migration_applied(bigint, text, bytea) AS INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, $2, TRUE, $3, CAST(EXTRACT(EPOCH FROM clock_timestamp() - GREATEST(statement_timestamp(), CAST(NULLIF(current_setting('cutover.recorded', TRUE), '') AS timestamptz))) * 1000000000 AS BIGINT)) RETURNING execution_time, set_config('cutover.recorded', CAST(clock_timestamp() AS text), FALSE);";

/// The dollar-quote tag of the record's literals when they follow a migration's SQL, for
/// descriptions of letters, digits, spaces and a few signs (never a quote, `$` or `*/`).
const TAG: &str = "$cutover$";

/// Whether a PostgreSQL migration is recorded by one statement after its SQL
/// ([`RECORD_APPLIED`]); only such migrations share a message ([`apply_postgres_batch`]).
fn one_record(migration: &MigrationFile) -> bool {
    !migration.no_transaction
        && !may_end_transaction(&migration.up_sql)
        && !migration.up_sql.contains(TAG)
        && migration
            .description
            .chars()
            .all(|c| c.is_alphanumeric() || " _-.,:()+#@".contains(c))
}

/// Whether a migration's SQL might end the transaction it runs in (`COMMIT`, `END`,
/// `ROLLBACK`, `ABORT`, `PREPARE TRANSACTION`, or a `BEGIN`/`START` after one): a word
/// search, so `CASE ... END` or a `DO` block answer yes too. Never a wrong no: a
/// statement's leading keyword is a word of the text.
fn may_end_transaction(sql: &str) -> bool {
    const WORDS: [&str; 7] = [
        "begin", "start", "commit", "end", "rollback", "abort", "prepare",
    ];
    sql.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|word| WORDS.iter().any(|w| word.eq_ignore_ascii_case(w)))
}

impl Dialect {
    /// `text` as a string literal, whatever `standard_conforming_strings` says.
    fn text(self, text: &str) -> String {
        match self {
            Self::Postgres => format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''")),
            Self::Sqlite => format!("'{}'", text.replace('\'', "''")),
        }
    }

    fn bytes(self, bytes: &[u8]) -> String {
        match self {
            Self::Postgres => format!("decode('{}', 'hex')", hex::encode(bytes)),
            Self::Sqlite => format!("X'{}'", hex::encode(bytes)),
        }
    }

    /// What prepares a connection for [`apply_script`]'s scripts, once.
    fn session_setup(self) -> Option<&'static str> {
        match self {
            Self::Postgres => Some(PREPARE_RECORD),
            Self::Sqlite => None,
        }
    }

    /// Whether a [`Commit::Deferred`] migration's `COMMIT` waits for the next message on
    /// its connection instead of taking a round trip of its own. SQLite runs in-process:
    /// a round trip costs nothing there.
    fn commits_with_next_message(self) -> bool {
        self == Self::Postgres
    }
}

/// Nanoseconds since now, as SQLite's clock will say after the migration. Written without
/// quotes: it follows the migration's own SQL (see [`apply_script`]).
fn sqlite_elapsed_ns() -> String {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let julian_day = unix / 86_400.0 + 2_440_587.5;
    // julianday() counts whole milliseconds: a faster migration may come out a little
    // below zero, which is "under a millisecond".
    format!("MAX(0, CAST((julianday() - {julian_day}) * 86400000000000 AS INTEGER))")
}

/// One migration and its bookkeeping as a single script, sent in one message and then
/// committed by a `COMMIT` of its own: the cost of a migration is two round trips and one
/// commit, close to a statement in one big transaction. The record is inserted first as
/// unfinished (`success = FALSE`) and marked done, with its execution time, after the
/// migration's SQL, all in one transaction, so `_sqlx_migrations` reads exactly as
/// sqlx-cli writes it. A migration that commits part-way itself and then fails stays
/// recorded as dirty. On PostgreSQL the record's statements are prepared
/// ([`PREPARE_RECORD`]), and a migration that cannot end its transaction
/// ([`may_end_transaction`]) is recorded by one `INSERT` after its SQL instead of two
/// statements: the record commits with it or not at all. A [`Commit::Deferred`] commit
/// does not wait for the disk (`synchronous_commit = off` for this transaction; SQLite:
/// `synchronous = NORMAL`, which cannot change inside a transaction, set before it and
/// reset by the runner).
///
/// The `COMMIT` is not part of the script: a server runs a whole message even after its
/// client is gone, so a connection lost mid-migration would otherwise commit a migration
/// the run believes failed (and rolls back around). Waiting for the separate `COMMIT`, the
/// server finds the client gone and rolls back.
///
/// The migration's SQL is framed by text that holds no quote, `]`, backtick or `*/`, and
/// no `$` but a dollar-quote tag ([`TAG`]) the SQL does not contain: a migration that
/// leaves a string, identifier or comment open swallows the closing statements and fails
/// to parse, so nothing is committed. After a failure the runner rolls back.
pub(crate) fn apply_script(dialect: Dialect, migration: &MigrationFile, commit: Commit) -> String {
    let v = migration.version;
    let sql = &migration.up_sql;
    let deferred = commit == Commit::Deferred;
    let defer_pg = if deferred {
        "SET LOCAL synchronous_commit = off;\n"
    } else {
        ""
    };
    match dialect {
        Dialect::Postgres if one_record(migration) => {
            format!(
                "BEGIN;\n{defer_pg}{sql}\n;\nEXECUTE {RECORD_APPLIED}({v}, {TAG}{d}{TAG}, {TAG}\\x{c}{TAG});",
                d = migration.description,
                c = hex::encode(&migration.checksum),
            )
        }
        Dialect::Postgres => format!(
            "BEGIN;\n{defer_pg}EXECUTE {RECORD_STARTED}({v}, {d}, {c});\n{sql}\n;\nEXECUTE {RECORD_DONE}({v});",
            d = dialect.text(&migration.description),
            c = dialect.bytes(&migration.checksum),
        ),
        Dialect::Sqlite => format!(
            "{defer}BEGIN;\nINSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ({v}, {d}, FALSE, {c}, -1);\n{sql}\n;\nUPDATE _sqlx_migrations SET success = TRUE, execution_time = {t} WHERE version = {v};",
            defer = if deferred {
                "PRAGMA synchronous = NORMAL;\n"
            } else {
                ""
            },
            t = sqlite_elapsed_ns(),
            d = dialect.text(&migration.description),
            c = dialect.bytes(&migration.checksum),
        ),
    }
}

/// A down migration and the removal of its record as one script, like [`apply_script`]:
/// the record is marked unfinished first and removed after the down SQL.
pub(crate) fn revert_script(migration: &MigrationFile, down_sql: &str) -> String {
    format!(
        "BEGIN;\nUPDATE _sqlx_migrations SET success = FALSE WHERE version = {v};\n{down_sql}\n;\nDELETE FROM _sqlx_migrations WHERE version = {v};",
        v = migration.version,
    )
}

/// The down files of `group`, newest first, and the removal of their records, as one
/// transaction left open for its `COMMIT`: each record is marked unfinished before its
/// down SQL and removed, returning its version, after it. The rows that come back say how
/// far a failed script got; the transaction makes the group revert whole or not at all.
/// Every down file must run in a transaction and not end it ([`groups_in_one`]).
pub(crate) fn revert_group_script(group: &[(&MigrationFile, String)]) -> String {
    let mut script = String::from("BEGIN;\n");
    for (m, down) in group {
        let v = m.version;
        script.push_str(&format!(
            "UPDATE _sqlx_migrations SET success = FALSE WHERE version = {v};\n{down}\n;\nDELETE FROM _sqlx_migrations WHERE version = {v} RETURNING version;\n"
        ));
    }
    script
}

/// The down file of `migration` when it can share a transaction with others: it runs in
/// one and cannot end it ([`may_end_transaction`]).
fn groups_in_one(migration: &MigrationFile) -> Option<String> {
    migration
        .down()
        .filter(|d| !d.no_tx && !may_end_transaction(&d.sql))
        .map(|d| d.sql.into_owned())
}

/// A migration left waiting for its `COMMIT` (see `pending` of the script runners) that
/// did not get it.
pub(crate) fn not_committed(version: i64, e: &dyn std::fmt::Display) -> DatabaseError {
    DatabaseError::Other(format!("migration {version} could not be committed: {e}"))
}

/// Commits the migration waiting on a connection, if one is. A macro for the same
/// reason as [`script_runners`].
macro_rules! commit_pending {
    ($conn:expr, $pending:expr) => {
        if let Some(version) = $pending.take() {
            sqlx::Executor::execute($conn, "COMMIT")
                .await
                .map_err(|e| not_committed(version, &e))?;
        }
    };
}

/// The script runners of one driver. Written once as a macro: generic over the driver,
/// the futures cannot be proven `Send` for the adapters' `async_trait` methods.
macro_rules! script_runners {
    ($apply:ident, $revert:ident, $revert_batch:ident, $run:ident, $apply_alone:ident, $revert_alone:ident, $db:ty, $dialect:expr) => {
        /// Applies one migration as one script ([`apply_script`]), creating the history
        /// table first when `ready` says it may be missing and preparing the connection
        /// unless `prepared` says it is; a migration that runs outside a transaction goes
        /// through sqlx's migrator instead. Returns how long it took.
        ///
        /// `pending` is the migration on this connection whose transaction still waits
        /// for its `COMMIT`: the script starts with it, so a deferred migration costs one
        /// round trip. Committing it is decided once its script succeeded; only whether it
        /// committed is learned with the next message. A migration this leaves pending
        /// (deferred, on PostgreSQL) is the caller's to commit ([`commit_pending`]) before
        /// the connection is used for anything else or given up.
        pub(crate) async fn $apply(
            conn: &mut PoolConnection<$db>,
            migration: &MigrationFile,
            commit: Commit,
            ready: &AtomicBool,
            prepared: &mut bool,
            pending: &mut Option<i64>,
        ) -> Result<Duration, DatabaseError> {
            if migration.no_transaction {
                commit_pending!(&mut **conn, pending);
                return $apply_alone(conn, migration).await;
            }
            let to_err = |source| DatabaseError::Migration {
                version: migration.version,
                description: migration.description.clone(),
                source,
            };
            if !ready.load(Ordering::Relaxed) {
                commit_pending!(&mut **conn, pending);
                conn.ensure_migrations_table().await.map_err(to_err)?;
                ready.store(true, Ordering::Relaxed);
            }
            if let Some(setup) = $dialect.session_setup()
                && !*prepared
            {
                sqlx::Executor::execute(&mut **conn, setup)
                    .await
                    .map_err(|e| to_err(MigrateError::Execute(e)))?;
                // Never back to the pool with statements of ours on it: whoever takes it
                // next would prepare them a second time, which fails.
                conn.close_on_drop();
                *prepared = true;
            }
            let start = Instant::now();
            let later = commit == Commit::Deferred && $dialect.commits_with_next_message();
            let committing = pending.take();
            let script = apply_script($dialect, migration, commit);
            let ran = match committing {
                Some(_) => $run(conn, &format!("COMMIT;\n{script}"), !later).await,
                None => $run(conn, &script, !later).await,
            };
            if let (Err(sqlx::Error::Database(_)), Some(earlier)) = (&ran, committing) {
                // The server refused something: the earlier migration's COMMIT, or this
                // migration. The history says which.
                let recorded = sqlx::Executor::fetch_optional(
                    &mut **conn,
                    format!(
                        "SELECT version FROM _sqlx_migrations WHERE version = {earlier} AND success"
                    )
                    .as_str(),
                )
                .await;
                if !recorded.is_ok_and(|row| row.is_some()) {
                    if let Err(e) = &ran {
                        return Err(not_committed(earlier, e));
                    }
                }
            }
            if ran.is_ok() && later {
                *pending = Some(migration.version);
            }
            if $dialect == Dialect::Sqlite && commit == Commit::Deferred {
                // The next commit on this connection waits for the disk again, and
                // flushes this one with it.
                if sqlx::Executor::execute(&mut **conn, "PRAGMA synchronous = FULL")
                    .await
                    .is_err()
                {
                    conn.close_on_drop();
                }
            }
            ran.map_err(|e| to_err(MigrateError::ExecuteMigration(e, migration.version)))?;
            Ok(start.elapsed())
        }

        /// Reverts one migration as one script ([`revert_script`]), after committing the
        /// one `pending` on the connection; a down migration that runs outside a
        /// transaction goes through sqlx's migrator instead.
        pub(crate) async fn $revert(
            conn: &mut PoolConnection<$db>,
            migration: &MigrationFile,
            pending: &mut Option<i64>,
        ) -> Result<(), DatabaseError> {
            commit_pending!(&mut **conn, pending);
            match migration.down() {
                Some(down) if !down.no_tx => $run(conn, &revert_script(migration, &down.sql), true)
                    .await
                    .map_err(|e| DatabaseError::Migration {
                        version: migration.version,
                        description: format!("{} (down)", migration.description),
                        source: MigrateError::ExecuteMigration(e, migration.version),
                    }),
                Some(down) => $revert_alone(conn, migration, &down.sql).await,
                None => revert(&mut **conn, migration).await,
            }
        }

        /// Reverts migrations in order. Runs of two or more whose down files can share a
        /// transaction ([`groups_in_one`]) are reverted in one transaction each
        /// ([`revert_group_script`]), sent as one message and committed by a message of
        /// its own: one commit for the run instead of one per migration (a commit that
        /// dropped a table waits for the disk whatever `synchronous_commit` says). The
        /// others go one by one through the single revert. A failure rolls the whole run
        /// back and names the migration whose down file failed. On failure `took` holds
        /// one (unmeasured, zero) entry per migration reverted.
        pub(crate) async fn $revert_batch(
            conn: &mut PoolConnection<$db>,
            batch: &[&MigrationFile],
            pending: &mut Option<i64>,
        ) -> Result<(), BatchError> {
            use futures::StreamExt;
            let fail = |reverted: usize, error| BatchError {
                took: vec![Duration::ZERO; reverted],
                error,
            };
            let mut done = 0;
            while done < batch.len() {
                let group: Vec<(&MigrationFile, String)> = batch[done..]
                    .iter()
                    .map_while(|m| groups_in_one(m).map(|down| (*m, down)))
                    .collect();
                if group.len() < 2 {
                    $revert(conn, batch[done], pending)
                        .await
                        .map_err(|e| fail(done, e))?;
                    done += 1;
                    continue;
                }
                let committed: Result<(), DatabaseError> = async {
                    commit_pending!(&mut **conn, pending);
                    Ok(())
                }
                .await;
                committed.map_err(|e| fail(done, e))?;
                let script = revert_group_script(&group);
                let mut in_flight = InFlight {
                    conn,
                    landed: false,
                };
                let c = &mut *in_flight.conn;
                let mut removed = 0;
                let mut failed = None;
                {
                    let mut results = sqlx::Executor::fetch_many(&mut **c, script.as_str());
                    while let Some(result) = results.next().await {
                        match result {
                            Ok(sqlx::Either::Right(_)) => removed += 1,
                            Ok(sqlx::Either::Left(_)) => {}
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                }
                let commit = match failed {
                    None => sqlx::Executor::execute(&mut **c, "COMMIT").await.err(),
                    Some(_) => None,
                };
                if failed.is_some() || commit.is_some() {
                    if sqlx::Executor::execute(&mut **c, "ROLLBACK").await.is_err() {
                        c.close_on_drop();
                    }
                }
                in_flight.landed = true;
                if let Some(e) = commit {
                    let (first, last) = (group[0].0.version, group[group.len() - 1].0.version);
                    return Err(fail(
                        done,
                        DatabaseError::Other(format!(
                            "the reverts of migrations {first} to {last}, one transaction, could not be committed: {e}"
                        )),
                    ));
                }
                if let Some(e) = failed {
                    let m = group[removed.min(group.len() - 1)].0;
                    return Err(fail(
                        done,
                        DatabaseError::Migration {
                            version: m.version,
                            description: format!("{} (down)", m.description),
                            source: MigrateError::ExecuteMigration(e, m.version),
                        },
                    ));
                }
                done += group.len();
            }
            Ok(())
        }

        /// Runs a script, then, when `commit`, commits it in a message of its own (see
        /// [`apply_script`]). After a failure it rolls back what the script left open;
        /// when even that fails the connection is closed instead of going back to the
        /// pool mid-transaction.
        async fn $run(
            conn: &mut PoolConnection<$db>,
            script: &str,
            commit: bool,
        ) -> Result<(), sqlx::Error> {
            let mut in_flight = InFlight {
                conn,
                landed: false,
            };
            let conn = &mut *in_flight.conn;
            // A string with no arguments: PostgreSQL gets it as one simple-protocol message.
            let done = match sqlx::Executor::execute(&mut **conn, script).await {
                Ok(_) if commit => sqlx::Executor::execute(&mut **conn, "COMMIT").await,
                done => done,
            };
            let result = match done {
                Ok(_) => Ok(()),
                Err(failed) => {
                    if sqlx::Executor::execute(&mut **conn, "ROLLBACK")
                        .await
                        .is_err()
                    {
                        conn.close_on_drop();
                    }
                    Err(failed)
                }
            };
            in_flight.landed = true;
            result
        }
    };
}

/// A script on its way: when the future running it is dropped half-way (Ctrl-C, a
/// timeout), the connection may hold the script's open transaction, so it is closed
/// (which rolls the transaction back) instead of going back to the pool, where the undo
/// would find it mid-transaction.
struct InFlight<'c, DB: sqlx::Database> {
    conn: &'c mut PoolConnection<DB>,
    landed: bool,
}

impl<DB: sqlx::Database> Drop for InFlight<'_, DB> {
    fn drop(&mut self) {
        if !self.landed {
            self.conn.close_on_drop();
        }
    }
}

/// How many migrations [`apply_postgres_batch`] sends in one message, and a revert batch
/// undoes in one transaction, at most: few enough that a cancelled run stops soon and a
/// transaction holds few locks, enough that round trips and commits stop mattering.
pub(crate) const BATCH: usize = 25;

/// Applies migrations on PostgreSQL, sending each run of migrations recorded by one
/// statement ([`one_record`]) as one message: every migration still its own transaction
/// with its record, the ones before the last committed inside the message (deferred), the
/// last as [`apply_postgres`] commits a migration (`commit`, or left `pending` when
/// deferred). Others go one by one through [`apply_postgres`], as does the first on a
/// connection not yet prepared.
///
/// The server runs a message in order and skips the rest of it after an error, so a
/// failed migration stops the batch and nothing after it runs. It also runs a whole
/// message after its client is gone: the caller must not trust the history after a batch
/// that did not come back until the session that ran it has ended (the PostgreSQL
/// adapter ends it and waits, see `PostgresDatabase::settle`).
pub(crate) async fn apply_postgres_batch(
    conn: &mut PoolConnection<sqlx::Postgres>,
    batch: &[&MigrationFile],
    commit: Commit,
    ready: &AtomicBool,
    prepared: &mut bool,
    pending: &mut Option<i64>,
) -> Result<Vec<Duration>, BatchError> {
    let mut took = Vec::with_capacity(batch.len());
    let mut i = 0;
    while i < batch.len() {
        let commit_of = |j: usize| {
            if j + 1 == batch.len() {
                commit
            } else {
                Commit::Deferred
            }
        };
        let run = if ready.load(Ordering::Relaxed) && *prepared {
            batch[i..].iter().take_while(|m| one_record(m)).count()
        } else {
            0
        };
        if run < 2 {
            match apply_postgres(conn, batch[i], commit_of(i), ready, prepared, pending).await {
                Ok(t) => took.push(t),
                Err(error) => return Err(BatchError { took, error }),
            }
            i += 1;
            continue;
        }
        let group = &batch[i..i + run];
        let last = commit_of(i + run - 1);
        match run_group(conn, group, last, pending).await {
            Ok(times) => took.extend(times),
            Err(BatchError { took: times, error }) => {
                took.extend(times);
                return Err(BatchError { took, error });
            }
        }
        i += run;
    }
    Ok(took)
}

/// One message of [`apply_postgres_batch`], and the durable `COMMIT` after it when `last`
/// says so.
async fn run_group(
    conn: &mut PoolConnection<sqlx::Postgres>,
    group: &[&MigrationFile],
    last: Commit,
    pending: &mut Option<i64>,
) -> Result<Vec<Duration>, BatchError> {
    let earlier = pending.take();
    let mut script = String::from(if earlier.is_some() { "COMMIT;\n" } else { "" });
    for (k, m) in group.iter().enumerate() {
        if k + 1 < group.len() {
            script.push_str(&apply_script(Dialect::Postgres, m, Commit::Deferred));
            script.push_str("\nCOMMIT;\n");
        } else {
            script.push_str(&apply_script(Dialect::Postgres, m, last));
        }
    }
    let (rows, mut failed) = send(conn, &script).await;
    let mut times: Vec<Duration> = rows
        .into_iter()
        .map(|ns| Duration::from_nanos(u64::try_from(ns).unwrap_or(0)))
        .collect();
    if failed.is_none() && last == Commit::Durable {
        failed = sqlx::Executor::execute(&mut **conn, "COMMIT").await.err();
    }
    let Some(e) = failed else {
        if last == Commit::Deferred {
            *pending = group.last().map(|m| m.version);
        }
        return Ok(times);
    };
    roll_back_or_close(conn).await;
    // Records came back for the first `r`; each one's COMMIT comes before the next one's
    // BEGIN. The last of them may or may not have committed (a refused COMMIT): the
    // history says. A lost connection cannot tell: only what surely committed counts.
    let r = times.len();
    let committed = |version: i64| {
        let sql =
            format!("SELECT version FROM _sqlx_migrations WHERE version = {version} AND success");
        async move { sqlx::Executor::fetch_optional(&mut **conn, sql.as_str()).await }
    };
    let (applied, refused_commit) = match (r, earlier) {
        (0, Some(earlier)) => match committed(earlier).await {
            Ok(None) => (0, Some(earlier)),
            _ => (0, None),
        },
        (0, None) => (0, None),
        (r, _) => match committed(group[r - 1].version).await {
            Ok(Some(_)) => (r, None),
            Ok(None) => (r - 1, Some(group[r - 1].version)),
            Err(_) => (r - 1, None),
        },
    };
    times.truncate(applied);
    let error = if let Some(version) = refused_commit {
        not_committed(version, &e)
    } else {
        let m = group[applied.min(group.len() - 1)];
        DatabaseError::Migration {
            version: m.version,
            description: m.description.clone(),
            source: MigrateError::ExecuteMigration(e, m.version),
        }
    };
    Err(BatchError { took: times, error })
}

/// Rolls back what a failed message left open; when even that fails, the connection is
/// closed instead of going back to the pool mid-transaction.
async fn roll_back_or_close(conn: &mut PoolConnection<sqlx::Postgres>) {
    if sqlx::Executor::execute(&mut **conn, "ROLLBACK")
        .await
        .is_err()
    {
        conn.close_on_drop();
    }
}

/// Sends one message and collects the first column of every row it returns, up to the
/// first error.
async fn send(
    conn: &mut PoolConnection<sqlx::Postgres>,
    script: &str,
) -> (Vec<i64>, Option<sqlx::Error>) {
    use futures::StreamExt;
    use sqlx::Row;
    let mut rows = Vec::new();
    let mut results = sqlx::Executor::fetch_many(&mut **conn, script);
    while let Some(result) = results.next().await {
        match result {
            Ok(sqlx::Either::Right(row)) => rows.push(row.try_get(0).unwrap_or(0)),
            Ok(sqlx::Either::Left(_)) => {}
            Err(e) => return (rows, Some(e)),
        }
    }
    (rows, None)
}

/// The statements of a migration that runs outside a transaction, to run one by one:
/// PostgreSQL makes one implicit transaction of a message with several statements, so
/// they are sent apart; SQLite's driver runs each statement of a string on its own.
fn alone(dialect: Dialect, sql: &str) -> Vec<&str> {
    match dialect {
        Dialect::Postgres => crate::migrate::statements::split(sql),
        Dialect::Sqlite => vec![sql],
    }
}

/// A migration's record, in `dialect`'s placeholders: inserted unfinished, then marked
/// done with its execution time.
fn record_alone(dialect: Dialect) -> (&'static str, &'static str) {
    match dialect {
        Dialect::Postgres => (
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, $2, FALSE, $3, -1)",
            "UPDATE _sqlx_migrations SET success = TRUE, execution_time = $1 WHERE version = $2",
        ),
        Dialect::Sqlite => (
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (?, ?, FALSE, ?, -1)",
            "UPDATE _sqlx_migrations SET success = TRUE, execution_time = ? WHERE version = ?",
        ),
    }
}

/// Applying and reverting a migration outside a transaction, per driver (a macro for the
/// same reason as [`script_runners`]). The record goes in unfinished before the first
/// statement and is marked done after the last; a down marks it unfinished first and
/// deletes it last. Whatever fails in between leaves the migration dirty (the plan
/// refuses until it is settled) with what the earlier statements did: a run's undo runs
/// its down file, which should therefore cope with a half-done up (`IF EXISTS`).
macro_rules! no_transaction_runners {
    ($apply_alone:ident, $revert_alone:ident, $db:ty, $dialect:expr) => {
        async fn $apply_alone(
            conn: &mut PoolConnection<$db>,
            migration: &MigrationFile,
        ) -> Result<Duration, DatabaseError> {
            let to_err = |source| DatabaseError::Migration {
                version: migration.version,
                description: migration.description.clone(),
                source,
            };
            conn.ensure_migrations_table().await.map_err(to_err)?;
            let (started, done) = record_alone($dialect);
            sqlx::query(started)
                .bind(migration.version)
                .bind(&migration.description)
                .bind(&migration.checksum)
                .execute(&mut **conn)
                .await
                .map_err(|e| to_err(MigrateError::Execute(e)))?;
            let start = Instant::now();
            for statement in alone($dialect, &migration.up_sql) {
                sqlx::Executor::execute(&mut **conn, statement)
                    .await
                    .map_err(|e| to_err(MigrateError::ExecuteMigration(e, migration.version)))?;
            }
            let took = start.elapsed();
            sqlx::query(done)
                .bind(i64::try_from(took.as_nanos()).unwrap_or(i64::MAX))
                .bind(migration.version)
                .execute(&mut **conn)
                .await
                .map_err(|e| to_err(MigrateError::Execute(e)))?;
            Ok(took)
        }

        async fn $revert_alone(
            conn: &mut PoolConnection<$db>,
            migration: &MigrationFile,
            down_sql: &str,
        ) -> Result<(), DatabaseError> {
            let to_err = |source| DatabaseError::Migration {
                version: migration.version,
                description: format!("{} (down)", migration.description),
                source,
            };
            let v = migration.version;
            let mut script = vec![format!(
                "UPDATE _sqlx_migrations SET success = FALSE WHERE version = {v}"
            )];
            script.extend(alone($dialect, down_sql).into_iter().map(str::to_owned));
            script.push(format!("DELETE FROM _sqlx_migrations WHERE version = {v}"));
            for statement in &script {
                sqlx::Executor::execute(&mut **conn, statement.as_str())
                    .await
                    .map_err(|e| to_err(MigrateError::ExecuteMigration(e, v)))?;
            }
            Ok(())
        }
    };
}

/// Edits of the history that run no migration, per driver: `$baseline` records migrations
/// as applied (adopting a database whose schema is already there), in one transaction and
/// only into an empty history; `$accept` replaces an applied migration's checksum.
macro_rules! history_edits {
    ($baseline:ident, $accept:ident, $installed:ident, $db:ty, $insert:expr, $update:expr, $details:expr) => {
        pub(crate) async fn $installed(
            pool: &sqlx::Pool<$db>,
        ) -> Result<Vec<super::Installed>, DatabaseError> {
            let rows: Vec<(i64, Option<String>, i64)> = sqlx::query_as($details)
                .fetch_all(pool)
                .await
                .map_err(super::sql_err("cannot read the migration history"))?;
            Ok(rows
                .into_iter()
                .map(|(version, on, nanos)| super::Installed {
                    version,
                    on,
                            // sqlx writes -1 until it knows, and so does a baseline.
                    took: u64::try_from(nanos).ok().map(Duration::from_nanos),
                })
                .collect())
        }

        pub(crate) async fn $baseline(
            pool: &sqlx::Pool<$db>,
            migrations: &[&MigrationFile],
        ) -> Result<(), DatabaseError> {
            let err = |e| super::sql_err("cannot record the baseline in the migration history")(e);
            let mut conn = pool.acquire().await.map_err(&err)?;
            conn.ensure_migrations_table().await.map_err(history_error)?;
            let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(&err)?;
            let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
                .fetch_one(&mut *tx)
                .await
                .map_err(&err)?;
            if count > 0 {
                return Err(DatabaseError::Other(format!(
                    "the migration history already holds {count} migration(s); a baseline adopts a database with none (`cutover migrate status` shows them)"
                )));
            }
            for m in migrations {
                sqlx::query($insert)
                    .bind(m.version)
                    .bind(&m.description)
                    .bind(&m.checksum)
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            tx.commit().await.map_err(&err)
        }

        pub(crate) async fn $accept(
            pool: &sqlx::Pool<$db>,
            version: i64,
            checksum: &[u8],
        ) -> Result<bool, DatabaseError> {
            let done = sqlx::query($update)
                .bind(checksum)
                .bind(version)
                .execute(pool)
                .await
                .map_err(super::sql_err("cannot update the migration history"))?;
            Ok(done.rows_affected() == 1)
        }
    };
}

history_edits!(
    baseline_postgres,
    accept_checksum_postgres,
    installed_postgres,
    sqlx::Postgres,
    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, $2, TRUE, $3, -1)",
    "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND success",
    "SELECT version, CAST(installed_on AS TEXT), execution_time FROM _sqlx_migrations ORDER BY version"
);
history_edits!(
    baseline_sqlite,
    accept_checksum_sqlite,
    installed_sqlite,
    sqlx::Sqlite,
    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (?, ?, TRUE, ?, -1)",
    "UPDATE _sqlx_migrations SET checksum = ? WHERE version = ? AND success",
    "SELECT version, CAST(installed_on AS TEXT), execution_time FROM _sqlx_migrations ORDER BY version"
);
history_edits!(
    baseline_mysql,
    accept_checksum_mysql,
    installed_mysql,
    sqlx::MySql,
    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (?, ?, TRUE, ?, -1)",
    "UPDATE _sqlx_migrations SET checksum = ? WHERE version = ? AND success",
    "SELECT version, CAST(installed_on AS CHAR), execution_time FROM _sqlx_migrations ORDER BY version"
);

no_transaction_runners!(
    apply_postgres_alone,
    revert_postgres_alone,
    sqlx::Postgres,
    Dialect::Postgres
);
no_transaction_runners!(
    apply_sqlite_alone,
    revert_sqlite_alone,
    sqlx::Sqlite,
    Dialect::Sqlite
);
script_runners!(
    apply_postgres,
    revert_postgres,
    revert_postgres_batch,
    run_postgres,
    apply_postgres_alone,
    revert_postgres_alone,
    sqlx::Postgres,
    Dialect::Postgres
);
script_runners!(
    apply_sqlite,
    revert_sqlite,
    revert_sqlite_batch,
    run_sqlite,
    apply_sqlite_alone,
    revert_sqlite_alone,
    sqlx::Sqlite,
    Dialect::Sqlite
);

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(sql: &str, description: &str) -> MigrationFile {
        MigrationFile {
            version: 20_240_101_000_000,
            description: description.to_owned(),
            up_path: "m.up.sql".into(),
            up_sql: sql.to_owned(),
            down_path: None,
            down_sql: None,
            no_transaction: false,
            contract: false,
            checksum: vec![0xab, 0x01],
        }
    }

    /// What follows the migration's SQL must not be able to close a string, identifier or
    /// comment the migration left open.
    #[test]
    fn the_closing_statements_cannot_close_what_a_migration_left_open() {
        for (dialect, commit) in [
            (Dialect::Postgres, Commit::Durable),
            (Dialect::Postgres, Commit::Deferred),
            (Dialect::Sqlite, Commit::Durable),
            (Dialect::Sqlite, Commit::Deferred),
        ] {
            for (sql, description) in [("SELECT 1", "it's"), ("SELECT 1 -- a comment", "m")] {
                let m = migration(sql, description);
                let script = apply_script(dialect, &m, commit);
                let tail = &script[script.find(sql).expect("sql") + sql.len()..];
                // The one `$` allowed is the tag, which the SQL does not contain.
                let tail = tail.replace(TAG, "");
                assert!(!sql.contains(TAG));
                for closer in ["'", "\"", "$", "]", "`", "*/"] {
                    assert!(
                        !tail.contains(closer),
                        "{dialect:?} tail contains {closer}: {tail}"
                    );
                }
            }
            let down = revert_script(&migration("SELECT 1", "m"), "SELECT 2");
            let tail = &down[down.find("SELECT 2").expect("sql") + 8..];
            for closer in ["'", "\"", "$", "]", "`", "*/"] {
                assert!(
                    !tail.contains(closer),
                    "down tail contains {closer}: {tail}"
                );
            }
        }
    }

    /// A migration that cannot end its transaction is recorded by one statement after its
    /// SQL, its literals dollar-quoted; any other keeps the record that can stay dirty.
    #[test]
    fn one_record_statement_only_where_the_transaction_cannot_end_early() {
        let one = format!("EXECUTE {RECORD_APPLIED}(");
        let m = migration("CREATE TABLE t (id INT)", "add t (v2.1)");
        let pg = apply_script(Dialect::Postgres, &m, Commit::Durable);
        assert!(
            pg.ends_with(&format!(
                "{one}20240101000000, $cutover$add t (v2.1)$cutover$, $cutover$\\xab01$cutover$);"
            )),
            "{pg}"
        );
        assert!(!pg.contains(RECORD_STARTED), "{pg}");
        for sql in [
            "CREATE TABLE t (id INT); COMMIT; CREATE TABLE u (id INT)",
            "END; VACUUM t",
            "Rollback",
            "UPDATE t SET a = CASE WHEN b THEN 1 END",
            "PREPARE TRANSACTION 'x'",
            "DO $$ BEGIN PERFORM 1; END $$",
            "SELECT '$cutover$'",
        ] {
            let pg = apply_script(Dialect::Postgres, &migration(sql, "m"), Commit::Durable);
            assert!(
                pg.contains(RECORD_STARTED) && !pg.contains(&one),
                "{sql}: {pg}"
            );
        }
        for description in ["costs $5", "it's", "a \"b\"", "a */ b", "a \\ b"] {
            let pg = apply_script(
                Dialect::Postgres,
                &migration("SELECT 1", description),
                Commit::Durable,
            );
            assert!(pg.contains(RECORD_STARTED), "{pg}");
        }
        assert!(!may_end_transaction("CREATE TABLE started_at_end (id INT)"));
    }

    #[test]
    fn literals_are_escaped_for_each_dialect() {
        let m = migration("SELECT 1; COMMIT", "it's a \\ path");
        let pg = apply_script(Dialect::Postgres, &m, Commit::Durable);
        assert!(pg.contains("E'it''s a \\\\ path'"), "{pg}");
        assert!(pg.contains("decode('ab01', 'hex')"), "{pg}");
        let lite = apply_script(Dialect::Sqlite, &m, Commit::Durable);
        assert!(lite.contains("'it''s a \\ path'"), "{lite}");
        assert!(lite.contains("X'ab01'"), "{lite}");
    }

    /// Only a deferred commit skips the wait for the disk; SQLite's setting goes before
    /// the transaction, where SQLite accepts it.
    #[test]
    fn only_a_deferred_commit_skips_the_flush() {
        let m = migration("SELECT 1", "m");
        let pg = apply_script(Dialect::Postgres, &m, Commit::Deferred);
        assert!(
            pg.starts_with("BEGIN;\nSET LOCAL synchronous_commit = off;\n"),
            "{pg}"
        );
        assert!(pg.contains(&format!("EXECUTE {RECORD_APPLIED}(")), "{pg}");
        let pg = apply_script(Dialect::Postgres, &m, Commit::Durable);
        assert!(!pg.contains("synchronous"), "{pg}");
        let lite = apply_script(Dialect::Sqlite, &m, Commit::Deferred);
        assert!(
            lite.starts_with("PRAGMA synchronous = NORMAL;\nBEGIN;"),
            "{lite}"
        );
        let lite = apply_script(Dialect::Sqlite, &m, Commit::Durable);
        assert!(!lite.contains("synchronous"), "{lite}");
    }
}
