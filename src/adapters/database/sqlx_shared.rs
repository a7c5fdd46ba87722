//! What the sqlx dialects (PostgreSQL, MySQL/MariaDB, SQLite) do the same way, written
//! once over sqlx's `Database`: the pool with its session settings, reading the migration
//! history, validation queries, SQL in one transaction, and waiting for a client tool.

use std::time::Duration;

use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{ConnectOptions, Connection, Database, Executor, IntoArguments, Pool};

use super::{
    CheckResult, DatabaseError, DatabaseState, SCRATCH_PREFIX, Scratch, check_result, history,
    sql_err,
};

/// A pool of two connections, each running `session` (lock timeouts) as it opens. One
/// direct connection first: a refused or unknown host fails at once with the driver's
/// own reason, not a pool timeout.
pub(crate) async fn connect<DB>(
    options: &<DB::Connection as Connection>::Options,
    session: String,
    target: String,
) -> Result<Pool<DB>, DatabaseError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let probe = open(options, target.clone()).await?;
    let _ = probe.close().await;
    PoolOptions::<DB>::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(15))
        .after_connect(move |conn, _| {
            let session = session.clone();
            Box::pin(async move {
                if !session.is_empty() {
                    conn.execute(session.as_str()).await?;
                }
                Ok(())
            })
        })
        .connect_with(options.clone())
        .await
        .map_err(|source| DatabaseError::Connect { target, source })
}

/// One connection of its own, outside the pool; `target` names it in the error.
pub(crate) async fn open<O>(options: &O, target: String) -> Result<O::Connection, DatabaseError>
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    options
        .connect()
        .await
        .map_err(|source| DatabaseError::Connect { target, source })
}

/// A connection of the pool, for a migration.
pub(crate) async fn connection<DB: Database>(
    pool: &Pool<DB>,
) -> Result<PoolConnection<DB>, DatabaseError> {
    pool.acquire().await.map_err(sql_err("cannot connect"))
}

/// The migration history; `has_history` counts the `_sqlx_migrations` tables the
/// database has (0 or 1), in the dialect's catalog.
pub(crate) async fn state<DB>(
    pool: &Pool<DB>,
    has_history: &str,
) -> Result<DatabaseState, DatabaseError>
where
    DB: Database,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let tables: i64 = sqlx::query_scalar(has_history)
        .fetch_one(pool)
        .await
        .map_err(sql_err("cannot read the migration history"))?;
    if tables == 0 {
        return Ok(DatabaseState {
            exists: true,
            ..DatabaseState::default()
        });
    }
    let mut conn = pool
        .acquire()
        .await
        .map_err(sql_err("cannot read the migration history"))?;
    history::read(&mut *conn).await
}

/// Runs `sql` (one or more statements) in one transaction; the rows it changed.
pub(crate) async fn execute_in_transaction<DB>(
    pool: &Pool<DB>,
    sql: &str,
) -> Result<u64, DatabaseError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::QueryResult: RowsAffected,
{
    let mut tx = pool.begin().await.map_err(sql_err("cannot begin"))?;
    let done = (&mut *tx)
        .execute(sql)
        .await
        .map_err(sql_err("SQL failed"))?;
    tx.commit().await.map_err(sql_err("cannot commit"))?;
    Ok(done.rows_affected())
}

/// A validation query's result; in a read-only transaction opened by `begin` when given.
pub(crate) async fn issues<DB>(
    pool: &Pool<DB>,
    sql: &str,
    begin: Option<&str>,
) -> Result<CheckResult, DatabaseError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    for<'r> i64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> i32: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> i16: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> f64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> String: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> bool: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
{
    let read = |rows: Result<Vec<DB::Row>, sqlx::Error>| {
        Ok(check_result(
            &rows.map_err(sql_err("validation query failed"))?,
        ))
    };
    let Some(begin) = begin else {
        return read(sqlx::query(sql).fetch_all(pool).await);
    };
    let mut tx = pool
        .begin_with(begin.to_owned())
        .await
        .map_err(sql_err("cannot begin a read-only transaction"))?;
    let result = read(sqlx::query(sql).fetch_all(&mut *tx).await);
    // Nothing to keep: a read-only transaction has nothing to commit.
    tx.rollback()
        .await
        .map_err(sql_err("cannot end the read-only transaction"))?;
    result
}

/// A new scratch database's name, after its source (`keep` characters of it, for the
/// dialect's name limit), so one left by a killed run says whose it is.
pub(crate) fn scratch_name(source: &str, keep: usize) -> String {
    let source: String = source
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(keep)
        .collect();
    format!(
        "{SCRATCH_PREFIX}{source}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Creates the scratch database `name` with the dialect's `create` statement (`needs`: the
/// privilege that takes, for the error); discarding the scratch runs `drop`. `database`
/// is the adapter connected to it.
pub(crate) async fn create_scratch<DB>(
    pool: Pool<DB>,
    database: Box<dyn super::Database>,
    name: String,
    (create, drop): (String, String),
    needs: &str,
) -> Result<Scratch, DatabaseError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    sqlx::raw_sql(&create)
        .execute(&pool)
        .await
        .map_err(sql_err(format!(
            "cannot create the scratch database {name} ({needs})"
        )))?;
    let dropped = name.clone();
    Ok(Scratch::new(
        database,
        name,
        Box::new(move || Box::pin(async move { drop_scratch(&pool, &drop, &dropped).await })),
    ))
}

/// Drops a scratch database (a rehearsal's copy) with the dialect's `statement`.
pub(crate) async fn drop_scratch<DB>(
    pool: &Pool<DB>,
    statement: &str,
    name: &str,
) -> Result<(), DatabaseError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    sqlx::raw_sql(statement)
        .execute(pool)
        .await
        .map_err(sql_err(format!("cannot drop the scratch database {name}")))?;
    Ok(())
}

/// The rows a statement changed, whatever the driver.
pub(crate) trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::mysql::MySqlQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// Waits for a client tool (`pg_dump`, `mysql`...); when it fails, the error carries the
/// last lines it wrote to stderr.
pub(crate) async fn wait_tool(
    mut child: tokio::process::Child,
    program: &str,
) -> Result<(), DatabaseError> {
    use tokio::io::AsyncReadExt;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr).await;
    }
    let status = child.wait().await.map_err(|source| DatabaseError::Io {
        what: format!("{program} did not finish"),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    let lines: Vec<&str> = stderr.trim().lines().collect();
    let last = &lines[lines.len().saturating_sub(8)..];
    Err(DatabaseError::Other(format!(
        "{program} failed ({status}): {}",
        last.join("\n")
    )))
}
