//! PostgreSQL.
//!
//! Migrations go through sqlx's own PostgreSQL migrator, so the `_sqlx_migrations` table is
//! exactly what `sqlx migrate` reads and writes. Every session sets `lock_timeout` (and
//! optionally `statement_timeout`) so DDL fails fast instead of queueing behind a long
//! transaction with the whole app queued behind it.
//!
//! Backups stream `pg_dump --format=custom` from its stdout into the store; restores stream
//! `pg_restore`'s SQL into one `psql --single-transaction` that first drops and recreates
//! the schemas, so objects created after the backup disappear too and a failed restore
//! changes nothing. The password reaches the tools through `PGPASSWORD`, never argv.
//!
//! With `restore: swap` ([`PgRestore::Swap`]) a restore goes into a new database instead,
//! which is checked and then renamed into place, the old one kept under another name; the
//! trade-offs are described on [`PgRestore`].

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;

use super::sqlx_shared as shared;
use super::{
    BatchError, BuildError, CheckResult, Commit, Database, DatabaseError, DatabaseState, DbLock,
    DumpInfo, Scratch, Swap,
};
pub(crate) use crate::config::deploy_file::PgRestore;
use crate::migrate::MigrationFile;
use crate::secret::Secret;

mod migrations;
mod restore;
mod snapshot;
mod tools;

use migrations::{MIGRATION_SESSIONS, MigrationConnection, SETTLE_LIMIT, migration_session_name};
use restore::reset_schemas;
use tools::missing_tool;

/// The database a `restore: swap` connects to for the renames (and takes the deploy lock
/// in): every PostgreSQL server has it.
const MAINTENANCE_DB: &str = "postgres";

/// The longest name PostgreSQL keeps (NAMEDATALEN - 1 bytes).
const MAX_NAME: usize = 63;

/// Session settings applied to every connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub lock_timeout: Duration,
    pub statement_timeout: Option<Duration>,
    /// `lint:`: what migration lint findings do to a plan.
    pub lint: crate::config::deploy_file::LintLevel,
    /// How a backup is restored over the database.
    pub restore: PgRestore,
}

pub(crate) struct PostgresDatabase {
    url: Secret,
    options: PgConnectOptions,
    settings: Settings,
    /// Opened on first use; closed and reopened around a `restore: swap`.
    pool: Mutex<Option<PgPool>>,
    /// `_sqlx_migrations` is known to exist (until the pool closes or a restore runs).
    history_ready: AtomicBool,
    /// The server's version and pg_dump's, once [`Self::check_tools`] passed.
    tools: tokio::sync::OnceCell<(String, String)>,
    /// The connection the last migration ran on.
    migrating: Mutex<Option<MigrationConnection>>,
    /// The server process of a batch of migrations that did not come back (0: none). Its
    /// message may still be running, and committing, on the server: nothing reads the
    /// history until it has ended ([`PostgresDatabase::settle`]).
    unsettled: AtomicI32,
}

impl PostgresDatabase {
    pub(crate) fn new(url: Secret, settings: Settings) -> Result<Self, BuildError> {
        let text = url.expose();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(BuildError::Invalid(format!(
                "PostgreSQL URL `{}` must start with `postgres://` or `postgresql://`",
                super::display_url(text)
            )));
        }
        let options: PgConnectOptions = text.parse().map_err(|e| {
            BuildError::Invalid(format!(
                "invalid PostgreSQL URL `{}`: {e}",
                super::display_url(text)
            ))
        })?;
        Ok(Self {
            url,
            options: options.disable_statement_logging(),
            settings,
            pool: Mutex::new(None),
            history_ready: AtomicBool::new(false),
            tools: tokio::sync::OnceCell::new(),
            migrating: Mutex::new(None),
            unsettled: AtomicI32::new(0),
        })
    }

    fn session_sql(&self) -> String {
        let ms = |d: Duration| d.as_millis();
        let mut sql = format!("SET lock_timeout = {};", ms(self.settings.lock_timeout));
        if let Some(t) = self.settings.statement_timeout {
            sql.push_str(&format!(" SET statement_timeout = {};", ms(t)));
        }
        sql
    }

    async fn pool(&self) -> Result<PgPool, DatabaseError> {
        self.commit_pending().await?;
        let mut guard = self.pool.lock().await;
        if let Some(pool) = &*guard {
            return Ok(pool.clone());
        }
        let pool = shared::connect(&self.options, self.session_sql(), self.describe()).await?;
        *guard = Some(pool.clone());
        Ok(pool)
    }

    /// Closes the pool's connections; the next query opens a new pool.
    async fn close(&self) {
        // What cannot be committed now is rolled back by the server when the connection
        // closes; the history says which.
        let _ = self.commit_pending().await;
        self.migrating.lock().await.take();
        self.history_ready.store(false, Ordering::Relaxed);
        if let Some(pool) = self.pool.lock().await.take() {
            pool.close().await;
        }
    }

    /// The database this adapter works on.
    fn database_name(&self) -> String {
        self.options
            .get_database()
            .unwrap_or_else(|| self.options.get_username())
            .to_owned()
    }

    /// An adapter for another database on the same server, as the same role, restoring
    /// in place.
    fn sibling(&self, database: &str) -> Result<Self, DatabaseError> {
        let mut url = url::Url::parse(self.url.expose()).map_err(|e| {
            DatabaseError::Other(format!("cannot make a URL for database {database}: {e}"))
        })?;
        url.set_path(&format!("/{database}"));
        let settings = Settings {
            restore: PgRestore::InPlace,
            ..self.settings
        };
        Self::new(Secret::new(url.to_string()), settings)
            .map_err(|e| DatabaseError::Other(e.to_string()))
    }

    /// One connection to the maintenance database, for what cannot run connected to the
    /// database it acts on (renaming it).
    async fn maintenance(&self) -> Result<sqlx::PgConnection, DatabaseError> {
        let target = format!(
            "the `{MAINTENANCE_DB}` database on the server of {} (`restore: swap` renames databases from there)",
            self.describe()
        );
        shared::open(&self.options.clone().database(MAINTENANCE_DB), target).await
    }
}

type ShapeRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    bool,
    String,
    i32,
    bool,
    Option<String>,
);

/// Runs SQL (several statements: one implicit transaction) on one connection.
/// Ends the sessions `which` selects (`$1`: `arg`, as text) and waits until they are gone,
/// at most [`SETTLE_LIMIT`]. Ending another role's session needs a privilege this role
/// may not have; then it only waits.
async fn end_sessions(
    conn: &mut sqlx::PgConnection,
    which: &str,
    arg: &str,
) -> Result<(), DatabaseError> {
    let gone = |e| DatabaseError::Other(format!("cannot end an earlier migration session: {e}"));
    let pids: Vec<i32> = sqlx::query_scalar(which)
        .bind(arg)
        .fetch_all(&mut *conn)
        .await
        .map_err(gone)?;
    if pids.is_empty() {
        return Ok(());
    }
    for pid in &pids {
        let _ = sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut *conn)
            .await;
    }
    let deadline = std::time::Instant::now() + SETTLE_LIMIT;
    let mut pause = Duration::from_millis(2);
    loop {
        let left: Vec<i32> =
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&pids)
                .fetch_all(&mut *conn)
                .await
                .map_err(gone)?;
        let Some(pid) = left.first() else {
            return Ok(());
        };
        if std::time::Instant::now() >= deadline {
            return Err(DatabaseError::Other(format!(
                "an earlier migration session (server process {pid}) is still running after {}s; \
                 its migrations may still commit. End it (`SELECT pg_terminate_backend({pid})`) and run again",
                SETTLE_LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

async fn run_sql(conn: &mut sqlx::PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::Executor::execute(conn, sql).await.map(|_| ())
}

/// `name` quoted as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` quoted as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// An advisory lock held on its own connection; closing it releases the lock.
struct AdvisoryLock(#[allow(dead_code)] sqlx::PgConnection);

#[async_trait]
impl Database for PostgresDatabase {
    // In place, psql commits only once the whole backup was read and matched; a swap
    // drops its new database on any error.
    fn restore_is_all_or_nothing(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn describe(&self) -> String {
        super::display_url(self.url.expose())
    }

    fn connection_url(&self) -> crate::secret::Secret {
        self.url.clone()
    }

    async fn disconnect(&self) {
        self.close().await;
    }

    fn lint_level(&self) -> crate::config::deploy_file::LintLevel {
        self.settings.lint
    }

    async fn state(&self) -> Result<DatabaseState, DatabaseError> {
        shared::state(
            &self.pool().await?,
            "SELECT COUNT(to_regclass('_sqlx_migrations'))",
        )
        .await
    }

    async fn apply(
        &self,
        migration: &MigrationFile,
        commit: Commit,
    ) -> Result<Duration, DatabaseError> {
        let mut kept = self.migration_connection().await?;
        let applied = super::history::apply_postgres(
            &mut kept.conn,
            migration,
            commit,
            &self.history_ready,
            &mut kept.prepared,
            &mut kept.pending,
        )
        .await;
        if applied.is_ok() {
            self.keep_migration_connection(kept).await;
        }
        applied
    }

    fn batch_size(&self) -> usize {
        super::history::BATCH
    }

    async fn apply_batch(
        &self,
        batch: &[&MigrationFile],
        commit: Commit,
    ) -> Result<Vec<Duration>, BatchError> {
        let mut kept = self.batch_session().await?;
        let applied = super::history::apply_postgres_batch(
            &mut kept.conn,
            batch,
            commit,
            &self.history_ready,
            &mut kept.prepared,
            &mut kept.pending,
        )
        .await;
        if applied.is_ok() {
            self.batch_back(kept).await;
        }
        applied
    }

    async fn revert_batch(&self, batch: &[&MigrationFile]) -> Result<(), BatchError> {
        let mut kept = self.batch_session().await?;
        let reverted =
            super::history::revert_postgres_batch(&mut kept.conn, batch, &mut kept.pending).await;
        if reverted.is_ok() {
            self.batch_back(kept).await;
        }
        reverted
    }

    async fn revert(&self, migration: &MigrationFile) -> Result<(), DatabaseError> {
        let mut kept = self.migration_connection().await?;
        let reverted =
            super::history::revert_postgres(&mut kept.conn, migration, &mut kept.pending).await;
        if reverted.is_ok() {
            self.keep_migration_connection(kept).await;
        }
        reverted
    }

    async fn execute(&self, sql: &str) -> Result<u64, DatabaseError> {
        // One simple-protocol message: PostgreSQL runs all its statements as one transaction.
        let done = sqlx::raw_sql(sql)
            .execute(&self.pool().await?)
            .await
            .map_err(super::sql_err("SQL failed"))?;
        Ok(done.rows_affected())
    }

    async fn fingerprint(
        &self,
        scope: &crate::fingerprint::Scope,
        budget: u64,
    ) -> Result<crate::fingerprint::Fingerprint, DatabaseError> {
        super::fingerprint::postgres(&self.pool().await?, scope, budget).await
    }

    async fn issues(&self, sql: &str) -> Result<CheckResult, DatabaseError> {
        shared::issues(&self.pool().await?, sql, None).await
    }

    async fn issues_read_only(&self, sql: &str) -> Result<CheckResult, DatabaseError> {
        shared::issues(&self.pool().await?, sql, Some("BEGIN READ ONLY")).await
    }

    async fn dump(
        &self,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<DumpInfo, DatabaseError> {
        // pg_dump has a session of its own: it sees only what is committed.
        self.commit_pending().await?;
        let (server, tool) = self.check_tools().await?;
        let (mut cmd, target) = self.tool("pg_dump", None);
        let mut child = cmd
            // Uncompressed: cutover compresses on another core (see the store's
            // `compression`), faster than pg_dump compressing in its one thread.
            .args(["--format=custom", "--compress=0", "--no-owner", "--no-acl"])
            // Fail fast, as migrations do, instead of queueing behind a long transaction.
            .arg(format!(
                "--lock-wait-timeout={}",
                self.settings.lock_timeout.as_millis()
            ))
            .arg("--dbname")
            .arg(&target)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| missing_tool("pg_dump", &e))?;
        let mut out =
            tokio::io::BufReader::with_capacity(1 << 18, child.stdout.take().expect("piped"));
        let copied = tokio::io::copy_buf(&mut out, sink).await;
        // Close the pipe before waiting: when the store failed, the dump tool is still
        // writing into it and would wait for a reader forever.
        drop(out);
        let waited = shared::wait_tool(child, "pg_dump").await;
        copied.map_err(|source| DatabaseError::Io {
            what: "cannot stream the dump to the backup store".into(),
            source,
        })?;
        waited?;
        Ok(DumpInfo {
            format: "pg_dump-custom".into(),
            server_version: format!("PostgreSQL {server}"),
            tool,
        })
    }

    async fn restore(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), DatabaseError> {
        self.restore_with_note(source).await.map(|_| ())
    }

    async fn restore_with_note(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<Option<String>, DatabaseError> {
        self.commit_pending().await?;
        // The restored database may predate the history table.
        self.history_ready.store(false, Ordering::Relaxed);
        match self.settings.restore {
            PgRestore::InPlace => self
                .restore_into(None, source, &reset_schemas(None))
                .await
                .map(|()| None),
            PgRestore::Swap => self.restore_swap(source).await.map(Some),
        }
    }

    async fn baseline(&self, migrations: &[&MigrationFile]) -> Result<(), DatabaseError> {
        super::history::baseline_postgres(&self.pool().await?, migrations).await
    }

    async fn installed(&self) -> Result<Vec<super::Installed>, DatabaseError> {
        super::history::installed_postgres(&self.pool().await?).await
    }

    async fn accept_checksum(&self, version: i64, checksum: &[u8]) -> Result<bool, DatabaseError> {
        super::history::accept_checksum_postgres(&self.pool().await?, version, checksum).await
    }

    async fn resolve_dirty(&self, version: i64, applied: bool) -> Result<bool, DatabaseError> {
        let sql = if applied {
            "UPDATE _sqlx_migrations SET success = TRUE WHERE version = $1 AND success = FALSE"
        } else {
            "DELETE FROM _sqlx_migrations WHERE version = $1 AND success = FALSE"
        };
        let done = sqlx::query(sql)
            .bind(version)
            .execute(&self.pool().await?)
            .await
            .map_err(super::sql_err("cannot update the migration history"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), DatabaseError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool().await?)
            .await
            .map_err(super::sql_err("the database does not answer"))?;
        self.check_tools()
            .await
            .map(|_| ())
            .map_err(|e| DatabaseError::Other(format!("the backup tools are not usable: {e}")))
    }

    async fn schema(&self) -> Result<String, DatabaseError> {
        self.commit_pending().await?;
        let (mut cmd, target) = self.tool("pg_dump", None);
        let out = cmd
            .args([
                "--schema-only",
                "--no-owner",
                "--no-acl",
                "--exclude-table=_sqlx_migrations",
                "--dbname",
            ])
            .arg(&target)
            .output()
            .await
            .map_err(|e| missing_tool("pg_dump", &e))?;
        if !out.status.success() {
            return Err(DatabaseError::Other(format!(
                "pg_dump --schema-only failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // Comments carry no schema (and name the dump's time); `\restrict` lines carry a
        // random key that differs on every run.
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                !l.trim().is_empty()
                    && !l.starts_with("--")
                    && !l.starts_with("\\restrict")
                    && !l.starts_with("\\unrestrict")
            })
            .collect::<Vec<_>>()
            .join("\n"))
    }

    async fn scratch(&self) -> Result<Scratch, DatabaseError> {
        // PostgreSQL names are at most 63 bytes.
        let name = shared::scratch_name(&self.database_name(), 31);
        // A scratch database is restored in place, whatever this database does.
        let database = self.sibling(&name)?;
        let statements = (
            format!("CREATE DATABASE \"{name}\""),
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        );
        shared::create_scratch(
            self.pool().await?,
            Box::new(database),
            name,
            statements,
            "the role needs CREATEDB",
        )
        .await
    }

    async fn drop_scratch(&self, name: &str) -> Result<(), DatabaseError> {
        if !super::is_scratch_name(name) {
            return Err(super::not_scratch(name));
        }
        let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        shared::drop_scratch(&self.pool().await?, &statement, name).await
    }

    fn snapshot_support(&self) -> Result<(), String> {
        self.snapshot_support_pg()
    }

    async fn other_sessions(&self) -> Result<Vec<String>, DatabaseError> {
        let mut admin = self.maintenance().await?;
        let pool = self.pool().await?;
        // Our own pool's sessions are ours to close, not the app's.
        let ours: Vec<i32> = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
        let all = Self::sessions_on(&mut admin, &self.database_name()).await?;
        let _ = admin.close().await;
        Ok(all
            .into_iter()
            .filter(|s| !ours.iter().any(|p| s.starts_with(&format!("pid {p} "))))
            .collect())
    }

    fn snapshot_names(&self, token: &str) -> super::SnapshotNames {
        let base = self.database_name();
        super::SnapshotNames {
            snapshot: restore::with_suffix(&base, &format!("_cutover_{token}")),
            replaced: restore::with_suffix(&base, &format!("_replaced_{token}")),
        }
    }

    async fn snapshot(&self, name: &str) -> Result<(), DatabaseError> {
        self.snapshot_pg(name).await
    }

    fn snapshot_database(&self, name: &str) -> Result<Box<dyn Database>, DatabaseError> {
        Ok(Box::new(self.sibling(name)?))
    }

    async fn swap_in(&self, name: &str, replaced: &str) -> Result<Swap, DatabaseError> {
        self.commit_pending().await?;
        self.history_ready.store(false, Ordering::Relaxed);
        self.swap_in_pg(name, replaced).await
    }

    async fn drop_snapshot(&self, name: &str) -> Result<bool, DatabaseError> {
        self.drop_snapshot_pg(name).await
    }

    async fn restore_in_place(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), DatabaseError> {
        self.commit_pending().await?;
        self.history_ready.store(false, Ordering::Relaxed);
        self.restore_into(None, source, &reset_schemas(None)).await
    }

    async fn lock(&self, name: &str) -> Result<Option<DbLock>, DatabaseError> {
        // Advisory locks belong to the database they are taken in. A swap must rename the
        // database with no session left on it, so with `restore: swap` the lock is taken
        // in the maintenance database, under a key that names this database.
        let (key, mut conn) = match self.settings.restore {
            PgRestore::InPlace => (
                lock_key(name),
                shared::open(&self.options, self.describe()).await?,
            ),
            PgRestore::Swap => (
                lock_key(&format!("{name}@{}", self.database_name())),
                self.maintenance().await?,
            ),
        };
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(super::sql_err("cannot take the advisory lock"))?;
        if got {
            // A run that died may have left a batch of migrations running on the server:
            // it ends before this run reads the history.
            let leftovers = format!(
                "SELECT pid FROM pg_stat_activity WHERE datname = {} AND application_name LIKE '{MIGRATION_SESSIONS}%' AND application_name <> $1",
                literal(&self.database_name())
            );
            end_sessions(&mut conn, &leftovers, migration_session_name()).await?;
            Ok(Some(Box::new(AdvisoryLock(conn))))
        } else {
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT format('pid %s, %s@%s, since %s', a.pid, a.usename, COALESCE(a.client_addr::text, 'local'), a.backend_start)
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = $1 LIMIT 1",
            )
            .bind(key)
            .fetch_optional(&mut conn)
            .await
            .ok()
            .flatten();
            let _ = conn.close().await;
            Err(DatabaseError::Locked(format!(
                "another runner holds the deploy lock in the database ({})",
                holder.unwrap_or_else(|| "holder unknown".into())
            )))
        }
    }
}

/// A stable 64-bit advisory lock key for a name.
fn lock_key(name: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("cutover:{name}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}
