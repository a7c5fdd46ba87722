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
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, Row};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Mutex;

use super::{
    BatchError, BuildError, CheckResult, Commit, Database, DatabaseError, DatabaseState, DbLock,
    DumpInfo, Scratch,
};
pub use crate::config::deploy_file::PgRestore;
use crate::migrate::MigrationFile;
use crate::secret::Secret;

/// The database a `restore: swap` connects to for the renames (and takes the deploy lock
/// in): every PostgreSQL server has it.
const MAINTENANCE_DB: &str = "postgres";

/// The longest name PostgreSQL keeps (NAMEDATALEN - 1 bytes).
const MAX_NAME: usize = 63;

/// Session settings applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub lock_timeout: Duration,
    pub statement_timeout: Option<Duration>,
    /// `lint: error`: migration lint findings are plan errors.
    pub lint_errors: bool,
    /// How a backup is restored over the database.
    pub restore: PgRestore,
}

pub struct PostgresDatabase {
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

/// A connection kept between back-to-back migrations.
struct MigrationConnection {
    conn: PoolConnection<Postgres>,
    /// When its last migration finished.
    at: std::time::Instant,
    /// The history's statements are prepared on it (see [`super::history::PREPARE_RECORD`]).
    prepared: bool,
    /// The migration whose transaction waits on it for its `COMMIT`, sent with the next
    /// migration ([`Commit::Deferred`]). Anything else done with this adapter commits it
    /// first ([`PostgresDatabase::commit_pending`]).
    pending: Option<i64>,
    /// Its server process, once named [`migration_session_name`] for batches.
    pid: Option<i32>,
}

/// The `application_name` of the sessions that run batches of migrations, unique to this
/// process: a later run can find and end what a run that died left running.
fn migration_session_name() -> &'static str {
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
const MIGRATION_SESSIONS: &str = "cutover migrations ";

/// How long a migration session that lost its client may take to end once told to.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// How long a migration's connection is reused for the next one without the pool's test:
/// back-to-back migrations, not a rollback minutes later on a connection that may be gone.
const REUSE_MIGRATION_CONNECTION: Duration = Duration::from_secs(1);

impl PostgresDatabase {
    pub fn new(url: Secret, settings: Settings) -> Result<Self, BuildError> {
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
        // One direct connection first: a refused or unknown host fails at once with the
        // driver's own reason, not a pool timeout.
        let probe = self
            .options
            .connect()
            .await
            .map_err(|source| DatabaseError::Connect {
                target: self.describe(),
                source,
            })?;
        let _ = probe.close().await;
        let session = self.session_sql();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(15))
            .after_connect(move |conn, _| {
                let session = session.clone();
                Box::pin(async move {
                    sqlx::Executor::execute(conn, session.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(self.options.clone())
            .await
            .map_err(|source| DatabaseError::Connect {
                target: self.describe(),
                source,
            })?;
        *guard = Some(pool.clone());
        Ok(pool)
    }

    /// The connection for the next migration: the previous migration's when it finished
    /// just now (taking one from the pool costs a round trip: the pool tests it first),
    /// else one from the pool.
    async fn migration_connection(&self) -> Result<MigrationConnection, DatabaseError> {
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
            .map_err(super::sql_err("cannot connect"))?;
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
    async fn batch_session(&self) -> Result<MigrationConnection, BatchError> {
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
                .map_err(|e| error(super::sql_err("cannot name the migration session")(e)))?;
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
    async fn batch_back(&self, kept: MigrationConnection) {
        self.unsettled.store(0, Ordering::Release);
        self.keep_migration_connection(kept).await;
    }

    /// Ends the session of a batch that did not come back ([`Self::unsettled`]) and waits
    /// until the server has let it go: then the history says exactly which of its
    /// migrations committed.
    async fn settle(&self) -> Result<(), DatabaseError> {
        let pid = self.unsettled.load(Ordering::Acquire);
        if pid == 0 {
            return Ok(());
        }
        let mut conn = self
            .options
            .connect()
            .await
            .map_err(|source| DatabaseError::Connect {
                target: self.describe(),
                source,
            })?;
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
    async fn commit_pending(&self) -> Result<(), DatabaseError> {
        self.settle().await?;
        let mut slot = self.migrating.lock().await;
        if let Some(kept) = slot.as_mut()
            && let Some(version) = kept.pending.take()
            && let Err(e) = sqlx::Executor::execute(&mut *kept.conn, "COMMIT").await
        {
            // Its transaction is gone either way; the connection may be too.
            slot.take();
            return Err(super::history::not_committed(version, &e));
        }
        Ok(())
    }

    async fn keep_migration_connection(&self, mut kept: MigrationConnection) {
        kept.at = std::time::Instant::now();
        *self.migrating.lock().await = Some(kept);
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
        self.options
            .clone()
            .database(MAINTENANCE_DB)
            .connect()
            .await
            .map_err(|source| DatabaseError::Connect {
                target: format!(
                    "the `{MAINTENANCE_DB}` database on the server of {} (`restore: swap` renames databases from there)",
                    self.describe()
                ),
                source,
            })
    }

    /// The URL without its password, and the password, for the command-line tools.
    fn tool_target(&self, database: Option<&str>) -> (String, Option<String>) {
        match url::Url::parse(self.url.expose()) {
            Ok(mut u) => {
                let password = u.password().map(percent_decode);
                let _ = u.set_password(None);
                if let Some(db) = database {
                    u.set_path(&format!("/{db}"));
                }
                (u.to_string(), password)
            }
            Err(_) => (self.url.expose().to_owned(), None),
        }
    }

    fn tool(&self, program: &str, database: Option<&str>) -> (Command, String) {
        let (target, password) = self.tool_target(database);
        let mut cmd = Command::new(program);
        cmd.kill_on_drop(true).stdin(Stdio::null());
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        (cmd, target)
    }

    async fn tool_version(program: &str) -> Result<String, DatabaseError> {
        let out = Command::new(program)
            .arg("--version")
            .output()
            .await
            .map_err(|e| missing_tool(program, &e))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    async fn server_version_num(&self) -> Result<(i64, String), DatabaseError> {
        let pool = &self.pool().await?;
        let row = sqlx::query("SELECT current_setting('server_version_num')::bigint, current_setting('server_version')")
            .fetch_one(pool)
            .await
            .map_err(super::sql_err("cannot read the server version"))?;
        Ok((row.get(0), row.get(1)))
    }

    /// Checks that the dump tools exist and are not older than the server: found in the plan,
    /// not halfway through a deploy. Returns the server's version and pg_dump's. Checked
    /// once per process (the tools are often wrappers that take tens of milliseconds to
    /// answer `--version`); a failed check is tried again.
    pub async fn check_tools(&self) -> Result<(String, String), DatabaseError> {
        self.tools
            .get_or_try_init(|| async {
                let (server_num, server) = self.server_version_num().await?;
                let (dump, restore, psql) = tokio::join!(
                    Self::tool_version("pg_dump"),
                    Self::tool_version("pg_restore"),
                    Self::tool_version("psql")
                );
                let (dump, _, _) = (dump?, restore?, psql?);
                let major: i64 = dump
                    .split_whitespace()
                    .find_map(|w| w.split('.').next()?.parse().ok())
                    .unwrap_or(0);
                if major < server_num / 10000 {
                    return Err(DatabaseError::Other(format!(
                        "{dump} is older than the server (PostgreSQL {server}); pg_dump refuses to dump a newer server. Install the PostgreSQL {} client tools",
                        server_num / 10000
                    )));
                }
                Ok((server, dump))
            })
            .await
            .cloned()
    }

    async fn wait_tool(
        mut child: tokio::process::Child,
        program: &str,
    ) -> Result<(), DatabaseError> {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = e.read_to_string(&mut stderr).await;
        }
        let status = child.wait().await.map_err(|source| DatabaseError::Io {
            what: format!("{program} did not finish"),
            source,
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(DatabaseError::Other(format!(
                "{program} failed ({status}): {}",
                stderr
                    .trim()
                    .lines()
                    .rev()
                    .take(8)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            )))
        }
    }

    /// Streams `pg_restore` of `source` into `psql -1` on `database`, after SQL that
    /// drops what is there.
    async fn restore_into(
        &self,
        database: Option<&str>,
        source: &mut (dyn AsyncRead + Unpin + Send),
        prelude: &str,
    ) -> Result<(), DatabaseError> {
        let (mut restore, _) = self.tool("pg_restore", database);
        let mut restore = restore
            .args([
                "--no-owner",
                "--no-acl",
                "--clean",
                "--if-exists",
                "--file=-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| missing_tool("pg_restore", &e))?;
        let (mut psql, target) = self.tool("psql", database);
        let mut psql = psql
            .args([
                "--no-psqlrc",
                "--quiet",
                "--single-transaction",
                "-v",
                "ON_ERROR_STOP=1",
                "--dbname",
            ])
            .arg(&target)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| missing_tool("psql", &e))?;
        let mut to_restore = restore.stdin.take().expect("piped");
        let mut from_restore = restore.stdout.take().expect("piped");
        let mut to_psql = psql.stdin.take().expect("piped");
        let feed = async {
            let r = tokio::io::copy(source, &mut to_restore).await;
            drop(to_restore);
            r
        };
        // Owns both ends it copies between: when psql dies (its connection dropped), the
        // copy fails and pg_restore's stdout closes too, so pg_restore exits and `feed`
        // ends instead of both waiting on each other forever.
        let pipe = async move {
            to_psql.write_all(prelude.as_bytes()).await?;
            let r = tokio::io::copy(&mut from_restore, &mut to_psql).await;
            drop(to_psql);
            drop(from_restore);
            r
        };
        let (fed, piped) = tokio::join!(feed, pipe);
        let restored = Self::wait_tool(restore, "pg_restore").await;
        let applied = Self::wait_tool(psql, "psql").await;
        applied?;
        restored?;
        fed.map_err(|source| DatabaseError::Io {
            what: "cannot read the backup".into(),
            source,
        })?;
        piped.map_err(|source| DatabaseError::Io {
            what: "cannot stream the restore into psql".into(),
            source,
        })?;
        Ok(())
    }

    /// `restore: swap`: restores into a new database beside this one, checks it, then ends
    /// the sessions on this database and swaps the two by renaming, keeping the replaced
    /// one. Anything failing before the renames drops the new database and leaves this one
    /// as it was. Returns where the replaced database is and how to drop it.
    async fn restore_swap(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<String, DatabaseError> {
        let target = self.database_name();
        if target == MAINTENANCE_DB {
            return Err(DatabaseError::Other(format!(
                "`restore: swap` cannot swap the `{MAINTENANCE_DB}` database, which it renames databases from; use `restore: in-place`"
            )));
        }
        let mut admin = self.maintenance().await?;
        let like = Shape::read(&mut admin, &target).await?;
        let public = self.public_schema().await?;
        let new = with_suffix(
            &target,
            &format!(
                "_restore_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        );
        run_sql(&mut admin, &like.create_sql(&new))
            .await
            .map_err(super::sql_err(format!(
                "cannot create database {new} to restore into (`restore: swap` needs CREATEDB)"
            )))?;
        let mut guard = SwapGuard {
            options: self.options.clone().database(MAINTENANCE_DB),
            new: Some(new.clone()),
            reopen: None,
        };
        let prepared = async {
            let copy = like.copy_sql(&new);
            if !copy.is_empty() {
                run_sql(&mut admin, &copy)
                    .await
                    .map_err(super::sql_err(format!(
                        "cannot give {new} the grants, comment and settings of {target}"
                    )))?;
            }
            self.restore_into(Some(&new), source, &reset_schemas(Some(&public)))
                .await?;
            // The restored database answers and its migration history reads.
            let restored = self.sibling(&new)?;
            let state = restored.state().await;
            restored.close().await;
            state.map_err(|e| {
                DatabaseError::Other(format!("the restored database {new} does not read: {e}"))
            })
        }
        .await;
        if let Err(e) = prepared {
            return Err(guard.cleanup_now(&mut admin, e).await);
        }
        // Every session on the target must be gone for the rename: ours first.
        self.close().await;
        let swapped = self.swap(&mut admin, &target, &new, &mut guard).await;
        let replaced = match swapped {
            Ok(replaced) => replaced,
            Err(e) => return Err(guard.cleanup_now(&mut admin, e).await),
        };
        guard.disarm();
        // The swap is done: nothing below may fail the restore (a retry would swap again).
        let mut note = format!(
            "restored into a new database and swapped it in; the database it replaced is kept as {replaced}: once it is no longer needed, drop it with `DROP DATABASE {};` (connected to another database, e.g. `{MAINTENANCE_DB}`)",
            ident(&replaced)
        );
        if let Err(e) = run_sql(
            &mut admin,
            &format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
                ident(&replaced)
            ),
        )
        .await
        {
            note.push_str(&format!(
                "; it does not accept connections ({e}): `ALTER DATABASE {} WITH ALLOW_CONNECTIONS true` to look inside",
                ident(&replaced)
            ));
        }
        if !like.role_settings.is_empty() {
            note.push_str(&format!(
                "; per-role settings of the old database were not carried over: {} (set them again with `ALTER ROLE .. IN DATABASE {} SET ..`)",
                like.role_settings.join(", "),
                ident(&target)
            ));
        }
        let _ = admin.close().await;
        if let Err(e) = self.pool().await {
            tracing::warn!("cannot reconnect to the restored database yet: {e}");
        }
        Ok(note)
    }

    /// The `public` schema's grants, comment and owner in this database.
    async fn public_schema(&self) -> Result<PublicSchema, DatabaseError> {
        let row: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT n.nspacl::text, obj_description(n.oid, 'pg_namespace'), pg_get_userbyid(n.nspowner)::text
             FROM pg_namespace n WHERE n.nspname = 'public'",
        )
        .fetch_optional(&self.pool().await?)
        .await
        .map_err(super::sql_err("cannot read the public schema's grants"))?;
        Ok(
            row.map_or_else(PublicSchema::default, |(acl, note, owner)| PublicSchema {
                acl,
                note,
                owner,
            }),
        )
    }

    /// Bars new sessions from `target`, ends the others and renames `target` to
    /// `<target>_replaced_<timestamp>` and `new` to `target`, in one transaction. On an
    /// error `target` is as it was, except that it may still refuse connections until
    /// `guard` lets them in again.
    async fn swap(
        &self,
        admin: &mut sqlx::PgConnection,
        target: &str,
        new: &str,
        guard: &mut SwapGuard,
    ) -> Result<String, DatabaseError> {
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
        let mut replaced = with_suffix(target, &format!("_replaced_{stamp}"));
        let mut n = 1;
        loop {
            let taken: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&replaced)
                    .fetch_one(&mut *admin)
                    .await
                    .map_err(super::sql_err("cannot list the databases"))?;
            if !taken {
                break;
            }
            n += 1;
            replaced = with_suffix(target, &format!("_replaced_{stamp}_{n}"));
        }
        guard.reopen = Some(target.to_owned());
        run_sql(
            admin,
            &format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
                ident(target)
            ),
        )
        .await
        .map_err(super::sql_err(format!(
            "cannot stop new sessions on {target} for the swap (the role must own it)"
        )))?;
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(target)
        .execute(&mut *admin)
        .await
        .map_err(super::sql_err(format!(
            "cannot end the sessions on {target} for the swap (the role needs to be theirs, `pg_signal_backend` or superuser)"
        )))?;
        // The rename waits up to 5 seconds for the ended sessions to go.
        let mut tx = admin
            .begin()
            .await
            .map_err(super::sql_err("cannot begin the swap"))?;
        run_sql(
            &mut tx,
            &format!(
                "ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {}",
                ident(target),
                ident(&replaced),
                ident(new),
                ident(target)
            ),
        )
        .await
        .map_err(super::sql_err(format!("cannot swap {new} in for {target}")))?;
        tx.commit()
            .await
            .map_err(super::sql_err(format!("cannot swap {new} in for {target}")))?;
        Ok(replaced)
    }
}

/// What a database made by `restore: swap` copies from the one it replaces: encoding,
/// locale, tablespace, connection limit, owner, grants, comment and settings.
struct Shape {
    encoding: String,
    collate: String,
    ctype: String,
    provider: Option<String>,
    locale: Option<String>,
    icu_rules: Option<String>,
    owner: String,
    tablespace: String,
    connection_limit: i32,
    /// `None`: the default privileges.
    grants: Option<Vec<(String, String, bool)>>,
    comment: Option<String>,
    /// Database-wide settings, `name=value`.
    settings: Vec<String>,
    /// Settings for one role in this database, `role: name=value` (not carried over).
    role_settings: Vec<String>,
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

impl Shape {
    async fn read(admin: &mut sqlx::PgConnection, target: &str) -> Result<Self, DatabaseError> {
        let err = || super::sql_err(format!("cannot read the properties of {target}"));
        // Through to_jsonb: the locale columns differ between server versions.
        let row: Option<ShapeRow> = sqlx::query_as(
            "SELECT pg_encoding_to_char(d.encoding)::text, d.datcollate::text, d.datctype::text,
                    to_jsonb(d) ->> 'datlocprovider',
                    COALESCE(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale'),
                    to_jsonb(d) ->> 'daticurules',
                    pg_get_userbyid(d.datdba)::text, pg_has_role(d.datdba, 'MEMBER'),
                    t.spcname::text, d.datconnlimit, d.datacl IS NULL,
                    shobj_description(d.oid, 'pg_database')
             FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace
             WHERE d.datname = $1",
        )
        .bind(target)
        .fetch_optional(&mut *admin)
        .await
        .map_err(err())?;
        let Some((
            encoding,
            collate,
            ctype,
            provider,
            locale,
            icu_rules,
            owner,
            owned,
            tablespace,
            connection_limit,
            default_acl,
            comment,
        )) = row
        else {
            return Err(DatabaseError::Other(format!(
                "database {target} is not on the server"
            )));
        };
        if !owned {
            return Err(DatabaseError::Other(format!(
                "`restore: swap` renames {target}, which only its owner can do: the role must be (a member of) {owner}"
            )));
        }
        let grants = if default_acl {
            None
        } else {
            Some(
                sqlx::query_as(
                    "SELECT a.privilege_type,
                            CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                            a.is_grantable
                     FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1",
                )
                .bind(target)
                .fetch_all(&mut *admin)
                .await
                .map_err(err())?,
            )
        };
        let configured: Vec<(Option<String>, String)> = sqlx::query_as(
            "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole)::text END,
                    unnest(s.setconfig)
             FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
             WHERE d.datname = $1",
        )
        .bind(target)
        .fetch_all(&mut *admin)
        .await
        .map_err(err())?;
        let mut settings = Vec::new();
        let mut role_settings = Vec::new();
        for (role, setting) in configured {
            match role {
                None => settings.push(setting),
                Some(role) => role_settings.push(format!("{role}: {setting}")),
            }
        }
        Ok(Self {
            encoding,
            collate,
            ctype,
            provider,
            locale,
            icu_rules,
            owner,
            tablespace,
            connection_limit,
            grants,
            comment,
            settings,
            role_settings,
        })
    }

    /// `CREATE DATABASE new` like the target.
    fn create_sql(&self, new: &str) -> String {
        let mut sql = format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            ident(new),
            literal(&self.encoding),
            literal(&self.collate),
            literal(&self.ctype)
        );
        match (self.provider.as_deref(), &self.locale) {
            (Some("i"), Some(locale)) => {
                sql.push_str(&format!(
                    " LOCALE_PROVIDER icu ICU_LOCALE {}",
                    literal(locale)
                ));
                if let Some(rules) = &self.icu_rules {
                    sql.push_str(&format!(" ICU_RULES {}", literal(rules)));
                }
            }
            (Some("b"), Some(locale)) => {
                sql.push_str(&format!(
                    " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
                    literal(locale)
                ));
            }
            _ => {}
        }
        if self.tablespace != "pg_default" {
            sql.push_str(&format!(" TABLESPACE {}", ident(&self.tablespace)));
        }
        if self.connection_limit != -1 {
            sql.push_str(&format!(" CONNECTION LIMIT {}", self.connection_limit));
        }
        sql.push_str(&format!(" OWNER {}", ident(&self.owner)));
        sql
    }

    /// Grants, comment and settings of the target, for `new`: one implicit transaction
    /// (empty when there is nothing to copy).
    fn copy_sql(&self, new: &str) -> String {
        let new = ident(new);
        let mut sql = String::new();
        if let Some(grants) = &self.grants {
            sql.push_str(&format!("REVOKE ALL ON DATABASE {new} FROM PUBLIC;\n"));
            for (privilege, grantee, grantable) in grants {
                sql.push_str(&format!(
                    "GRANT {privilege} ON DATABASE {new} TO {grantee}{};\n",
                    if *grantable { " WITH GRANT OPTION" } else { "" }
                ));
            }
        }
        if let Some(comment) = &self.comment {
            sql.push_str(&format!(
                "COMMENT ON DATABASE {new} IS {};\n",
                literal(comment)
            ));
        }
        // `FROM CURRENT` stores the value as the server parsed it, lists included; the
        // local `set_config` ends with the transaction.
        for setting in &self.settings {
            let (name, value) = setting.split_once('=').unwrap_or((setting, ""));
            sql.push_str(&format!(
                "SELECT set_config({}, {}, true);\nALTER DATABASE {new} SET {} FROM CURRENT;\n",
                literal(name),
                literal(value),
                ident(name)
            ));
        }
        sql
    }
}

/// Puts things back after a swap that did not finish: drops the new database and lets
/// sessions into the target again. From `Drop` when the restore is dropped half-way
/// (Ctrl-C, a timeout).
struct SwapGuard {
    options: PgConnectOptions,
    new: Option<String>,
    /// The target, once it was barred from new sessions.
    reopen: Option<String>,
}

impl SwapGuard {
    fn disarm(&mut self) {
        self.new = None;
        self.reopen = None;
    }

    fn statements(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(target) = self.reopen.take() {
            out.push(format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
                ident(&target)
            ));
        }
        if let Some(new) = self.new.take() {
            out.push(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                ident(&new)
            ));
        }
        out
    }

    /// Cleans up on `admin` after `error`; returns `error`, with what could not be cleaned
    /// up for a person to do.
    async fn cleanup_now(
        &mut self,
        admin: &mut sqlx::PgConnection,
        error: DatabaseError,
    ) -> DatabaseError {
        let mut left = Vec::new();
        for sql in self.statements() {
            if let Err(e) = run_sql(admin, &sql).await {
                left.push(format!("`{sql};` ({e})"));
            }
        }
        if left.is_empty() {
            error
        } else {
            DatabaseError::Other(format!(
                "{error}; cleaning up failed too, run by hand: {}",
                left.join(", ")
            ))
        }
    }
}

impl Drop for SwapGuard {
    fn drop(&mut self) {
        let statements = self.statements();
        if statements.is_empty() {
            return;
        }
        let options = self.options.clone();
        super::finish_on_drop(async move {
            let Ok(mut admin) = options.connect().await else {
                tracing::warn!(
                    "cannot clean up after the interrupted swap: run {statements:?} by hand"
                );
                return;
            };
            for sql in &statements {
                if let Err(e) = run_sql(&mut admin, sql).await {
                    tracing::warn!(
                        "after the interrupted swap, `{sql}` failed: {e}; run it by hand"
                    );
                }
            }
            let _ = admin.close().await;
        });
    }
}

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

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn missing_tool(program: &str, e: &std::io::Error) -> DatabaseError {
    if e.kind() == std::io::ErrorKind::NotFound {
        DatabaseError::Other(format!(
            "`{program}` is not installed (it comes with the PostgreSQL client tools, e.g. `apt install postgresql-client`)"
        ))
    } else {
        DatabaseError::Other(format!("cannot run `{program}`: {e}"))
    }
}

/// The `public` schema's grants, comment and owner, as read from a database.
#[derive(Debug, Default)]
struct PublicSchema {
    acl: Option<String>,
    note: Option<String>,
    owner: Option<String>,
}

/// Drops every schema the application owns so a restore leaves nothing from after the
/// backup. pg_dump leaves the default `public` schema out of the dump, so it is recreated
/// here with the owner, grants and comment it had (app roles keep their USAGE): those of
/// the database restored into, or of `like` (the database a swap replaces). The dump,
/// restored with `--clean --if-exists`, recreates everything else.
fn reset_schemas(like: Option<&PublicSchema>) -> String {
    let read = match like {
        None => {
            "SELECT n.nspacl, obj_description(n.oid, 'pg_namespace'), pg_get_userbyid(n.nspowner)
    INTO acl, note, owner FROM pg_namespace n WHERE n.nspname = 'public';"
                .to_owned()
        }
        Some(p) => {
            let value = |v: &Option<String>| {
                v.as_deref()
                    .filter(|v| !v.contains("$cutover$"))
                    .map_or_else(|| "NULL".to_owned(), literal)
            };
            format!(
                "acl := {}::aclitem[]; note := {}; owner := {};",
                value(&p.acl),
                value(&p.note),
                value(&p.owner)
            )
        }
    };
    format!(
        "DO $cutover$ DECLARE
  s text; g record; acl aclitem[]; note text; owner name;
BEGIN
  {read}
{RESET_SCHEMAS_BODY}"
    )
}

const RESET_SCHEMAS_BODY: &str = "  FOR s IN SELECT nspname FROM pg_namespace
    WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
  CREATE SCHEMA public;
  BEGIN
    IF owner IS NOT NULL THEN EXECUTE format('ALTER SCHEMA public OWNER TO %I', owner); END IF;
  EXCEPTION WHEN insufficient_privilege THEN NULL;
  END;
  IF acl IS NOT NULL THEN
    EXECUTE 'REVOKE ALL ON SCHEMA public FROM PUBLIC';
    FOR g IN SELECT a.grantee, a.privilege_type FROM aclexplode(acl) a LOOP
      EXECUTE format('GRANT %s ON SCHEMA public TO %s', g.privilege_type,
        CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END);
    END LOOP;
  END IF;
  IF note IS NOT NULL THEN EXECUTE format('COMMENT ON SCHEMA public IS %L', note); END IF;
END $cutover$;
";

/// `name` quoted as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` quoted as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `<base><suffix>`, with `base` shortened so the whole fits PostgreSQL's 63-byte names.
fn with_suffix(base: &str, suffix: &str) -> String {
    let mut end = base.len().min(MAX_NAME.saturating_sub(suffix.len()));
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &base[..end])
}

/// An advisory lock held on its own connection; closing it releases the lock.
struct AdvisoryLock(#[allow(dead_code)] sqlx::PgConnection);

#[async_trait]
impl Database for PostgresDatabase {
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

    fn lint_errors(&self) -> bool {
        self.settings.lint_errors
    }

    async fn state(&self) -> Result<DatabaseState, DatabaseError> {
        let pool = &self.pool().await?;
        let has_table: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(pool)
                .await
                .map_err(super::sql_err("cannot read the migration history"))?;
        if !has_table {
            return Ok(DatabaseState {
                exists: true,
                ..DatabaseState::default()
            });
        }
        let mut conn = pool
            .acquire()
            .await
            .map_err(super::sql_err("cannot read the migration history"))?;
        super::history::read(&mut *conn).await
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
        super::history::POSTGRES_BATCH
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
        let rows = sqlx::query(sql)
            .fetch_all(&self.pool().await?)
            .await
            .map_err(super::sql_err("validation query failed"))?;
        super::check_result(&rows).map_err(super::sql_err("cannot read the validation result"))
    }

    async fn issues_read_only(&self, sql: &str) -> Result<CheckResult, DatabaseError> {
        let pool = self.pool().await?;
        let mut tx = pool
            .begin_with("BEGIN READ ONLY")
            .await
            .map_err(super::sql_err("cannot begin a read-only transaction"))?;
        let rows = sqlx::query(sql)
            .fetch_all(&mut *tx)
            .await
            .map_err(super::sql_err("validation query failed"))?;
        let result =
            super::check_result(&rows).map_err(super::sql_err("cannot read the validation result"));
        // Nothing to keep: a read-only transaction has nothing to commit.
        tx.rollback()
            .await
            .map_err(super::sql_err("cannot end the read-only transaction"))?;
        result
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
        let waited = Self::wait_tool(child, "pg_dump").await;
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
        // Named after its source, so a scratch copy left by a killed run says whose it is
        // (PostgreSQL names are at most 63 bytes).
        let source: String = self
            .database_name()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(31)
            .collect();
        let name = format!(
            "cutover_roundtrip_{source}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        // A scratch database is restored in place, whatever this database does.
        let database = self.sibling(&name)?;
        let pool = self.pool().await?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&pool)
            .await
            .map_err(super::sql_err(format!(
                "cannot create the scratch database {name} (the role needs CREATEDB)"
            )))?;
        let dropped = name.clone();
        Ok(Scratch::new(
            Box::new(database),
            name,
            Box::new(move || {
                Box::pin(async move {
                    sqlx::raw_sql(&format!(
                        "DROP DATABASE IF EXISTS \"{dropped}\" WITH (FORCE)"
                    ))
                    .execute(&pool)
                    .await
                    .map_err(super::sql_err(format!(
                        "cannot drop the scratch database {dropped}"
                    )))?;
                    Ok(())
                })
            }),
        ))
    }

    async fn drop_scratch(&self, name: &str) -> Result<(), DatabaseError> {
        if !super::is_scratch_name(name) {
            return Err(super::not_scratch(name));
        }
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&self.pool().await?)
            .await
            .map_err(super::sql_err(format!(
                "cannot drop the scratch database {name}"
            )))?;
        Ok(())
    }

    async fn lock(&self, name: &str) -> Result<Option<DbLock>, DatabaseError> {
        // Advisory locks belong to the database they are taken in. A swap must rename the
        // database with no session left on it, so with `restore: swap` the lock is taken
        // in the maintenance database, under a key that names this database.
        let (key, mut conn) = match self.settings.restore {
            PgRestore::InPlace => (
                lock_key(name),
                self.options
                    .connect()
                    .await
                    .map_err(|source| DatabaseError::Connect {
                        target: self.describe(),
                        source,
                    })?,
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
