//! The database family: migrations, SQL, validation queries, dump and restore.

pub(crate) mod azure_sql;
pub(crate) mod fingerprint;
pub(crate) mod history;
pub(crate) mod mysql;
pub(crate) mod postgres;
pub(crate) mod sqlite;
pub(crate) mod sqlx_shared;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::deploy_file::{DatabaseConfig, LintLevel, StoreConfig};
use crate::migrate::MigrationFile;
use crate::secret::mask_url_password;

use super::build::{BuildError, Resolve};

/// A row of the history table, as `migrate status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub version: i64,
    /// As the history table holds it (its type and zone vary by database).
    pub on: Option<String>,
    /// How long it ran, when the history knows (not for a baseline, nor while it runs).
    pub took: Option<Duration>,
}

/// A migration the database says is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub checksum: Vec<u8>,
}

/// What the database looks like now, as far as releases care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseState {
    /// False when the database does not exist yet (it is created by the first deploy).
    pub exists: bool,
    pub applied: Vec<AppliedMigration>,
    /// A migration recorded as started but not finished.
    pub dirty: Option<i64>,
}

impl DatabaseState {
    pub fn version(&self) -> Option<i64> {
        self.applied.iter().map(|m| m.version).max()
    }
}

/// What a validation query found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckResult {
    pub issues: i64,
    /// Column names of the offending rows (empty for a count).
    pub columns: Vec<String>,
    /// The first offending rows, as text.
    pub rows: Vec<Vec<String>>,
}

/// How many offending rows a check shows.
pub(crate) const SAMPLE_ROWS: usize = 10;

/// The words of a column name that say it holds a count of issues.
const COUNT_WORDS: &[&str] = &[
    "issues",
    "issue",
    "count",
    "cnt",
    "total",
    "num",
    "violations",
    "problems",
    "errors",
];

/// Words that also say "count" at the end of a longer word: PostgreSQL folds an unquoted
/// `AS IssueCount` to `issuecount`, which has no boundary left to split at.
const COUNT_ENDINGS: &[&str] = &["count", "cnt", "issues", "errors", "violations", "problems"];

/// Words that end like a count and are not one.
const NOT_COUNTS: &[&str] = &["account", "discount", "viscount"];

/// Whether a validation query's column name says it is a count. Its words (split at every
/// character that is not a letter or digit, between a lower-case letter or digit and an
/// upper-case letter, and before the last capital of a run of capitals followed by a
/// lower-case letter), compared case-insensitively: one of them is in [`COUNT_WORDS`], or
/// ends in one of [`COUNT_ENDINGS`] after at least one more letter and is not in
/// [`NOT_COUNTS`]. `IssueCount` (and PostgreSQL's `issuecount`), `issue_count`,
/// `orphan_count`, `cnt`, `num_orphans`, `XMLErrors`, and `count`, `COUNT(*)` or
/// `count(id)` as drivers name an unaliased count, all say so; `account`, `counter`, `id`
/// do not.
pub(crate) fn names_a_count(name: &str) -> bool {
    words(name).iter().any(|w| {
        let w = w.to_lowercase();
        COUNT_WORDS.contains(&w.as_str())
            || (COUNT_ENDINGS
                .iter()
                .any(|end| w.len() > end.len() && w.ends_with(end))
                && !NOT_COUNTS.contains(&w.as_str()))
    })
}

/// `name` split into words at punctuation and camelCase boundaries.
fn words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut out = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1).copied();
        let boundary = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_uppercase() && next.is_some_and(char::is_lowercase))
            });
        if boundary && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        word.push(c);
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Turns a validation query's rows into a [`CheckResult`], the same way for every dialect:
/// exactly one row of exactly one integer column whose name [says it is a
/// count](names_a_count) is that many issues; any other result is the offending rows, each
/// an issue.
pub(crate) fn check_result<R>(rows: &[R]) -> CheckResult
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i16: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use sqlx::{Column, ValueRef};
    if let [row] = rows
        && row.columns().len() == 1
        && names_a_count(row.columns()[0].name())
        // Only an integer is a count: a text, decimal or NULL value is a row like any other.
        && let Ok(issues) = row
            .try_get::<i64, _>(0)
            .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))
            .or_else(|_| row.try_get::<i16, _>(0).map(i64::from))
    {
        return CheckResult {
            issues,
            ..CheckResult::default()
        };
    }
    let columns = rows.first().map_or_else(Vec::new, |r| {
        r.columns().iter().map(|c| c.name().to_owned()).collect()
    });
    let sample = rows
        .iter()
        .take(SAMPLE_ROWS)
        .map(|row| {
            (0..row.columns().len())
                .map(|i| {
                    if row.try_get_raw(i).is_ok_and(|v| v.is_null()) {
                        return "NULL".to_owned();
                    }
                    row.try_get::<String, _>(i)
                        .or_else(|_| row.try_get::<i64, _>(i).map(|v| v.to_string()))
                        .or_else(|_| row.try_get::<i32, _>(i).map(|v| v.to_string()))
                        .or_else(|_| row.try_get::<f64, _>(i).map(|v| v.to_string()))
                        .or_else(|_| row.try_get::<bool, _>(i).map(|v| v.to_string()))
                        .unwrap_or_else(|_| "?".to_owned())
                })
                .collect()
        })
        .collect();
    CheckResult {
        issues: rows.len() as i64,
        columns,
        rows: sample,
    }
}

/// Facts about a dump, for the backup manifest.
#[derive(Debug, Clone)]
pub struct DumpInfo {
    pub format: String,
    pub server_version: String,
    pub tool: String,
}

/// What to run when the server says the database itself does not exist: cutover never
/// creates a PostgreSQL or MySQL database (a typo in its name must not become a new one).
fn missing_database_hint(error: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = error else {
        return String::new();
    };
    let message = db.message();
    let quoted = |open: char, close: char| {
        let start = message.find(open)? + open.len_utf8();
        let end = start + message[start..].find(close)?;
        Some(message[start..end].to_owned())
    };
    if message.starts_with("database \"")
        && message.ends_with("does not exist")
        && let Some(name) = quoted('"', '"')
    {
        return format!(
            "; cutover does not create databases: if the name is right, create it with `createdb {name}` (or `CREATE DATABASE \"{name}\";`)"
        );
    }
    if message.starts_with("Unknown database '")
        && let Some(name) = quoted('\'', '\'')
    {
        return format!(
            "; cutover does not create databases: if the name is right, create it with the statement CREATE DATABASE `{name}`;"
        );
    }
    String::new()
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot connect to {target}: {source}{}", missing_database_hint(.source))]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration {version} ({description}) failed: {source}")]
    Migration {
        version: i64,
        description: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Another runner holds the database-side deploy lock.
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Other(String),
}

/// Wraps a driver error with what was being done, for `map_err`.
pub(crate) fn sql_err(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> DatabaseError {
    let what = what.into();
    move |source| DatabaseError::Sql { what, source }
}

/// A database-side lock, released when dropped.
pub(crate) type DbLock = Box<dyn std::any::Any + Send + Sync>;

/// Removes a scratch database.
pub(crate) type Discard = Box<
    dyn FnOnce() -> futures::future::BoxFuture<'static, Result<(), DatabaseError>> + Send + Sync,
>;

/// A throwaway database beside the real one (a database on the same server, or a temp
/// file for SQLite), made by [`Database::scratch`]. Call [`Scratch::discard`] when done.
pub struct Scratch {
    /// An adapter for the scratch database.
    pub database: Box<dyn Database>,
    /// Its name, for messages.
    pub name: String,
    discard: Discard,
}

impl Scratch {
    pub fn new(database: Box<dyn Database>, name: String, discard: Discard) -> Self {
        Self {
            database,
            name,
            discard,
        }
    }

    /// Closes the adapter and removes the scratch database.
    pub async fn discard(self) -> Result<(), DatabaseError> {
        // Closed first: dropping the database under open connections makes the server
        // terminate them, which the driver reports as a warning.
        self.database.disconnect().await;
        drop(self.database);
        (self.discard)().await
    }
}

/// Runs cleanup from a `Drop` (a scratch database a step made, when the step is dropped
/// half-way by Ctrl-C or a timeout): to its end, for at most 30 seconds, on the
/// multi-threaded runtime, so the process cannot exit first; otherwise as a task.
pub(crate) fn finish_on_drop(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| {
            let _ = handle.block_on(tokio::time::timeout(Duration::from_secs(30), cleanup));
        });
    } else {
        handle.spawn(cleanup);
    }
}

impl DatabaseError {
    /// Errors worth retrying: the server was briefly unreachable or busy.
    pub fn is_transient(&self) -> bool {
        let sqlx_transient = |e: &sqlx::Error| match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
            sqlx::Error::Database(db) => {
                let msg = db.message();
                msg.contains("database is locked") || msg.contains("busy")
            }
            _ => false,
        };
        match self {
            Self::Connect { source, .. } | Self::Sql { source, .. } => sqlx_transient(source),
            _ => false,
        }
    }
}

/// Whether a migration's commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// On disk before `apply` returns.
    Durable,
    /// More migrations of the same step follow. Committed no later than the adapter's
    /// next use (PostgreSQL sends the `COMMIT` with the next migration's script, saving a
    /// round trip), and on disk with the next durable commit, which flushes the log up to
    /// it. The log is written in order, so a server crash before then loses whole
    /// migrations from the end, each with its record, never part of one; the history
    /// says which.
    Deferred,
}

/// A batch of migrations that stopped at a failure: the first ones are applied and
/// recorded (`took`: how long each took), the next one failed with `error`, the rest
/// never ran.
#[derive(Debug)]
pub struct BatchError {
    pub took: Vec<Duration>,
    pub error: DatabaseError,
}

/// A database the release runs against.
#[async_trait]
pub trait Database: Send + Sync {
    /// The kind, e.g. `sqlite`.
    fn kind(&self) -> &'static str;
    /// Where it is, with any password masked.
    fn describe(&self) -> String;
    /// A database that is a file the adapter would create on first use (SQLite), when that
    /// file does not exist yet and `create: true` does not ask for it.
    fn missing_file(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// The connection URL as configured, references resolved, for a migrator cutover runs
    /// (`migrate` with `tool: command` exports it as `DATABASE_URL`). Whoever takes it
    /// registers it with the redactor: it is never printed.
    fn connection_url(&self) -> crate::secret::Secret;
    /// Closes its connections cleanly, before the database goes away (a scratch copy is
    /// dropped); the next use reconnects.
    async fn disconnect(&self) {}
    /// Reads the migration history without changing anything.
    async fn state(&self) -> Result<DatabaseState, DatabaseError>;
    /// Applies one migration and records it in one transaction of its own; returns how
    /// long it took. `commit` says whether that transaction must be on disk before this
    /// returns.
    async fn apply(
        &self,
        migration: &MigrationFile,
        commit: Commit,
    ) -> Result<Duration, DatabaseError>;
    /// Applies migrations in order, each in a transaction of its own with its record as
    /// [`Self::apply`] does: the last one's commit is `commit`, the others' deferred.
    /// Returns how long each took. An adapter that can sends several in one message
    /// ([`Self::batch_size`]); this one applies them one by one.
    async fn apply_batch(
        &self,
        batch: &[&MigrationFile],
        commit: Commit,
    ) -> Result<Vec<Duration>, BatchError> {
        let mut took = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            let c = if i + 1 == batch.len() {
                commit
            } else {
                Commit::Deferred
            };
            match self.apply(m, c).await {
                Ok(t) => took.push(t),
                Err(error) => return Err(BatchError { took, error }),
            }
        }
        Ok(took)
    }
    /// Reverts migrations in order, each as [`Self::revert`] does. An adapter that can
    /// sends several in one message; this one reverts them one by one. On failure,
    /// `took` has one entry (zero: not measured) per migration reverted.
    async fn revert_batch(&self, batch: &[&MigrationFile]) -> Result<(), BatchError> {
        for (i, m) in batch.iter().enumerate() {
            if let Err(error) = self.revert(m).await {
                return Err(BatchError {
                    took: vec![Duration::ZERO; i],
                    error,
                });
            }
        }
        Ok(())
    }
    /// How many migrations [`Self::apply_batch`] and [`Self::revert_batch`] are given at
    /// once.
    fn batch_size(&self) -> usize {
        1
    }
    /// Runs a migration's down file and removes its record.
    async fn revert(&self, migration: &MigrationFile) -> Result<(), DatabaseError>;
    /// Runs SQL in one transaction; returns how many rows its statements changed.
    async fn execute(&self, sql: &str) -> Result<u64, DatabaseError>;
    /// Runs a validation query: one row with one integer column named as a count is a
    /// count; any other result is the offending rows, each an issue (see [`check_result`]).
    async fn issues(&self, sql: &str) -> Result<CheckResult, DatabaseError>;
    /// Runs a validation query as [`Database::issues`] does, inside a read-only transaction
    /// (a read-only connection on SQLite) that is rolled back: a query that tries to write
    /// fails and changes nothing.
    async fn issues_read_only(&self, _sql: &str) -> Result<CheckResult, DatabaseError> {
        Err(DatabaseError::Other(format!(
            "read-only validation queries are not supported on {}",
            self.kind()
        )))
    }
    /// Writes a consistent dump of the whole database to `sink`.
    async fn dump(
        &self,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<DumpInfo, DatabaseError>;
    /// Replaces the database's contents with a dump.
    async fn restore(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), DatabaseError>;
    /// Restores like [`Database::restore`] and returns what a person should know about it:
    /// PostgreSQL with `restore: swap` keeps the replaced database and says how to drop it.
    async fn restore_with_note(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<Option<String>, DatabaseError> {
        self.restore(source).await.map(|()| None)
    }
    /// Settles a migration recorded as failed part-way (dirty): `applied` marks it done
    /// (someone finished it by hand), otherwise its record is removed (someone undid it).
    /// Returns false when that version was not dirty.
    async fn resolve_dirty(&self, version: i64, applied: bool) -> Result<bool, DatabaseError>;
    /// Records `migrations` as applied without running them, into an empty history
    /// (`migrate baseline`: the schema is already there).
    async fn baseline(&self, _migrations: &[&MigrationFile]) -> Result<(), DatabaseError> {
        Err(DatabaseError::Other(format!(
            "a `{}` database keeps no migration history of cutover's to record a baseline in",
            self.kind()
        )))
    }
    /// When each migration of the history table was installed and how long it took.
    async fn installed(&self) -> Result<Vec<Installed>, DatabaseError> {
        Ok(Vec::new())
    }
    /// Replaces the checksum recorded for applied migration `version` (`migrate repair`).
    /// Returns false when that version is not recorded as applied.
    async fn accept_checksum(
        &self,
        _version: i64,
        _checksum: &[u8],
    ) -> Result<bool, DatabaseError> {
        Err(DatabaseError::Other(format!(
            "a `{}` database keeps no migration history of cutover's to repair",
            self.kind()
        )))
    }
    /// Checks that the database answers and its tools are usable (creating nothing).
    async fn ping(&self) -> Result<(), DatabaseError>;
    /// Takes a lock inside the database, held until the guard drops, so runners on other
    /// machines that share the database but not the state folder exclude each other.
    /// `Ok(None)`: this database needs none (an SQLite file is local to the state folder).
    async fn lock(&self, _name: &str) -> Result<Option<DbLock>, DatabaseError> {
        Ok(None)
    }
    /// The schema as normalized text, without the migration history table: equal texts
    /// mean equal schemas. PostgreSQL: `pg_dump --schema-only` less comments; SQLite: the
    /// `sqlite_master` SQL by type and name; MySQL: `SHOW CREATE TABLE` of every table by
    /// name, less `AUTO_INCREMENT=N`. An SQLite file that does not exist is not created.
    async fn schema(&self) -> Result<String, DatabaseError>;
    /// The database's fingerprint: every schema object's digest, and the content digest of
    /// each table in `scope` no bigger than `budget` bytes (bigger ones are named as
    /// skipped). A database that does not exist yet has the empty fingerprint.
    async fn fingerprint(
        &self,
        _scope: &crate::fingerprint::Scope,
        _budget: u64,
    ) -> Result<crate::fingerprint::Fingerprint, DatabaseError> {
        Err(DatabaseError::Other(format!(
            "not available yet for `{}` databases: cutover cannot fingerprint it",
            self.kind()
        )))
    }
    /// Creates an empty scratch database beside this one (same server and credentials, or
    /// a temp file for SQLite) and an adapter for it; the real database is not changed.
    async fn scratch(&self) -> Result<Scratch, DatabaseError>;
    /// Removes a scratch database a killed process left behind, named as
    /// [`Scratch::name`] named it. Refuses any name [`Database::scratch`] would not make,
    /// so a damaged record can never point it at a real database.
    async fn drop_scratch(&self, name: &str) -> Result<(), DatabaseError> {
        Err(DatabaseError::Other(format!(
            "cannot remove the scratch database {name}: not available yet for {} databases",
            self.kind()
        )))
    }
    /// What the migration linter's findings do to a plan (`lint:`), for the databases
    /// that have lint rules (PostgreSQL, MySQL/MariaDB).
    fn lint_level(&self) -> LintLevel {
        LintLevel::Warning
    }

    /// Whether a restore changes nothing unless its source reads to its end without error.
    /// A backup's checksum is then checked as it streams into the restore, not in a read
    /// of its own before it.
    fn restore_is_all_or_nothing(&self) -> bool {
        false
    }

    /// Why a snapshot (a copy beside the database, made at the storage's speed, swapped
    /// in on rollback) cannot be taken here, if it cannot.
    fn snapshot_support(&self) -> Result<(), String> {
        Err(format!(
            "not available yet for `{}` databases: no cheap copy is built for them (the dump runs in the window)",
            self.kind()
        ))
    }

    /// The names a snapshot taken under `token` (a run's short id) and the database a swap
    /// replaces get: beside the database, recognisable as cutover's.
    fn snapshot_names(&self, token: &str) -> SnapshotNames {
        SnapshotNames {
            snapshot: format!("cutover_{token}"),
            replaced: format!("replaced_{token}"),
        }
    }

    /// The other sessions on the database that taking a snapshot ends, for the plan:
    /// `pid 123 app@10.0.0.5 (puma)`.
    async fn other_sessions(&self) -> Result<Vec<String>, DatabaseError> {
        Ok(Vec::new())
    }

    /// Copies the database to `name` beside it, consistently, ending the other sessions
    /// on it first where the copy needs that. A copy that fails is removed: nothing is
    /// left behind.
    async fn snapshot(&self, name: &str) -> Result<(), DatabaseError> {
        let _ = name;
        Err(DatabaseError::Other(
            self.snapshot_support().err().unwrap_or_default(),
        ))
    }

    /// An adapter for snapshot `name`, to dump it.
    fn snapshot_database(&self, name: &str) -> Result<Box<dyn Database>, DatabaseError> {
        let _ = name;
        Err(DatabaseError::Other(
            self.snapshot_support().err().unwrap_or_default(),
        ))
    }

    /// Puts snapshot `name` in the database's place, keeping the database as `replaced`.
    /// Finds where an earlier attempt stopped from the names that exist, so running it
    /// again (after a kill -9) finishes a half-done swap and changes nothing after a
    /// whole one. [`Swap::Gone`] when the snapshot is gone and was never swapped in.
    async fn swap_in(&self, name: &str, replaced: &str) -> Result<Swap, DatabaseError> {
        let _ = (name, replaced);
        Err(DatabaseError::Other(
            self.snapshot_support().err().unwrap_or_default(),
        ))
    }

    /// Restores a backup over the database itself, whatever `restore:` says: the way back
    /// when a snapshot could not be swapped in (a session on it would not end, say).
    async fn restore_in_place(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), DatabaseError> {
        self.restore(source).await
    }

    /// Removes snapshot `name` (or a database a swap replaced) if it exists; whether it
    /// did.
    async fn drop_snapshot(&self, name: &str) -> Result<bool, DatabaseError> {
        let _ = name;
        Err(DatabaseError::Other(
            self.snapshot_support().err().unwrap_or_default(),
        ))
    }
}

/// Test hook: `CUTOVER_TEST_CRASH_IN_SWAP=1` aborts the process in the middle of a swap
/// (like kill -9), to show that `recover` finishes it.
pub(crate) fn swap_crash_point() {
    if std::env::var_os("CUTOVER_TEST_CRASH_IN_SWAP").is_some() {
        std::process::abort();
    }
}

/// Where a snapshot and the database it would replace go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotNames {
    pub snapshot: String,
    pub replaced: String,
}

/// What [`Database::swap_in`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The snapshot is in place now (or was already): `note` says where the replaced
    /// database is kept and how to drop it.
    Done { note: String },
    /// The snapshot is gone and the database was never replaced by it.
    Gone,
}

/// Builds the adapter with `url` in place of the configured one (a fleet target).
pub(crate) fn build_at(
    config: &DatabaseConfig,
    resolver: &dyn Resolve,
    base_dir: &Path,
    url: Option<&crate::secret::Secret>,
    backups: Option<&StoreConfig>,
) -> Result<Box<dyn Database>, BuildError> {
    let resolve = |configured| -> Result<crate::secret::Secret, BuildError> {
        match url {
            Some(url) => Ok(url.clone()),
            None => Ok(resolver.url(configured)?),
        }
    };
    match config {
        DatabaseConfig::Sqlite { url, create } => {
            let url = resolve(url)?;
            Ok(Box::new(sqlite::SqliteDatabase::new(
                url.expose(),
                base_dir,
                *create,
            )?))
        }
        DatabaseConfig::Postgres {
            url,
            lock_timeout,
            statement_timeout,
            lint,
            restore,
        } => {
            let url = resolve(url)?;
            Ok(Box::new(postgres::PostgresDatabase::new(
                url,
                postgres::Settings {
                    lock_timeout: lock_timeout.map_or(
                        Duration::from_secs(5),
                        crate::config::duration::Duration::get,
                    ),
                    statement_timeout: statement_timeout
                        .map(crate::config::duration::Duration::get),
                    lint: lint.unwrap_or_default(),
                    restore: restore.unwrap_or_default(),
                },
            )?))
        }
        DatabaseConfig::Mysql {
            url,
            lock_wait_timeout,
            lint,
        } => {
            let url = resolve(url)?;
            Ok(Box::new(
                mysql::MysqlDatabase::new(
                    url,
                    lock_wait_timeout.map_or(
                        Duration::from_secs(5),
                        crate::config::duration::Duration::get,
                    ),
                )?
                .with_lint(lint.unwrap_or_default()),
            ))
        }
        DatabaseConfig::AzureSql(c) => {
            if url.is_some() {
                return Err(BuildError::Invalid(
                    "database `azure-sql`: fleet targets need a database URL; `azure-sql` has none"
                        .into(),
                ));
            }
            let Some(StoreConfig::AzureBlob(blob)) = backups else {
                return Err(BuildError::Invalid(
                    "database `azure-sql` needs `backups: { kind: azure-blob, ... }`: its backups are `.bacpac` exports that Azure writes into that container".into(),
                ));
            };
            let key = match (&blob.key, &blob.sas) {
                (Some(key), None) => azure_sql::StorageKey::AccountKey(resolver.credential(key)?),
                (None, Some(sas)) => azure_sql::StorageKey::Sas(resolver.credential(sas)?),
                _ => {
                    return Err(BuildError::Invalid(
                        "database `azure-sql` needs the `azure-blob` backups to have `key:` or `sas:`: Azure's export and import are handed that storage key".into(),
                    ));
                }
            };
            let container = crate::adapters::store::azure_container(resolver, blob, &|| {
                Err(BuildError::Invalid(
                    "`azure-blob` with `key:` or `sas:` needs no Azure sign-in".into(),
                ))
            })?;
            Ok(Box::new(azure_sql::AzureSqlDatabase::new(
                c, resolver, container, key,
            )?))
        }
    }
}

/// Whether `name` is one [`Database::scratch`] makes on a server: the prefix, then only
/// letters, digits and `_` (so it needs no quoting and cannot name another database).
pub(crate) fn is_scratch_name(name: &str) -> bool {
    name.strip_prefix(SCRATCH_PREFIX).is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// How every scratch database's name begins.
pub(crate) const SCRATCH_PREFIX: &str = "cutover_roundtrip_";

fn not_scratch(name: &str) -> DatabaseError {
    DatabaseError::Other(format!(
        "`{name}` is not a scratch database name; nothing was removed"
    ))
}

/// Shows a URL safely.
pub(crate) fn display_url(url: &str) -> String {
    mask_url_password(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_names() {
        for name in [
            "issues",
            "Issues",
            "IssueCount",
            "issue_count",
            "orphan_count",
            "ORPHAN_COUNT",
            "cnt",
            "count",
            "COUNT(*)",
            "count(*)",
            "count(id)",
            "total",
            "num_orphans",
            "violations",
            "bad-problems",
            "XMLErrors",
            "issuecount",
            "orphancount",
            "rowcount",
            "fkviolations",
        ] {
            assert!(names_a_count(name), "{name} names a count");
        }
        for name in [
            "id",
            "account",
            "counter",
            "discount",
            "Discount",
            "viscount",
            "subtotal",
            "number",
            "email",
            "accountId",
            "",
            "?column?",
        ] {
            assert!(!names_a_count(name), "{name} does not name a count");
        }
    }

    #[test]
    fn words_split_at_case_and_punctuation() {
        assert_eq!(words("IssueCount"), ["Issue", "Count"]);
        assert_eq!(words("XMLErrors"), ["XML", "Errors"]);
        assert_eq!(words("issue_count"), ["issue", "count"]);
        assert_eq!(words("COUNT(*)"), ["COUNT"]);
        assert_eq!(words("row2Count"), ["row2", "Count"]);
    }
}
