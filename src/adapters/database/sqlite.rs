//! SQLite, the embedded default.
//!
//! Dumps are consistent online copies made with `VACUUM INTO` (SQLite's own way to copy a
//! live database without blocking readers), streamed out and deleted. A restore writes the
//! dump next to the database, checks its integrity, then swaps it in with a rename, so a
//! failed restore never leaves a half-written database.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, SqlitePool};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;

use super::sqlx_shared as shared;
use super::{
    BatchError, BuildError, CheckResult, Commit, Database, DatabaseError, DatabaseState, DumpInfo,
    Scratch,
};
use crate::migrate::MigrationFile;

pub(crate) struct SqliteDatabase {
    url: String,
    path: PathBuf,
    pool: Mutex<Option<SqlitePool>>,
    /// `_sqlx_migrations` is known to exist (until the pool closes).
    history_ready: AtomicBool,
    /// `create: true`: a missing file may be created even where no folder exists yet.
    create: bool,
    /// A snapshot nothing writes to: its dump is the file itself, read without opening it
    /// for writing (no log or shared-memory file is made beside it).
    frozen: bool,
}

impl SqliteDatabase {
    /// `sqlite://relative/or/absolute.db`; relative paths resolve against the config folder.
    pub(crate) fn new(url: &str, base_dir: &Path, create: bool) -> Result<Self, BuildError> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                BuildError::Invalid(format!(
                    "SQLite URL `{url}` must start with `sqlite://`, e.g. `sqlite://.cutover/app.db`"
                ))
            })?;
        let file = rest.split('?').next().unwrap_or_default();
        if file.is_empty() || file == ":memory:" {
            return Err(BuildError::Invalid(format!(
                "SQLite URL `{url}` must name a file; an in-memory database cannot be released to"
            )));
        }
        Ok(Self {
            url: url.to_owned(),
            path: base_dir.join(file),
            pool: Mutex::new(None),
            history_ready: AtomicBool::new(false),
            create,
            frozen: false,
        })
    }

    /// A typo in the path must not become a new, empty database that every migration is
    /// then applied to: a missing file is created only in a folder that exists, or
    /// anywhere with `create: true`.
    fn may_open(&self) -> Result<(), DatabaseError> {
        if self.create || self.path.exists() {
            return Ok(());
        }
        match self.path.parent() {
            Some(folder) if !folder.as_os_str().is_empty() && !folder.is_dir() => {
                Err(DatabaseError::Other(format!(
                    "SQLite database {} does not exist, and neither does its folder {}: is the \
                     URL `{}` right? To start a new database there, set `create: true` on the \
                     database",
                    self.path.display(),
                    folder.display(),
                    self.url
                )))
            }
            _ => Ok(()),
        }
    }

    fn options(path: &Path) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
    }

    async fn pool(&self) -> Result<SqlitePool, DatabaseError> {
        let mut guard = self.pool.lock().await;
        if let Some(pool) = guard.as_ref() {
            return Ok(pool.clone());
        }
        self.may_open()?;
        if let Some(parent) = self.path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|source| DatabaseError::Io {
                    what: format!("cannot create folder {}", parent.display()),
                    source,
                })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(Self::options(&self.path))
            .await
            .map_err(|source| DatabaseError::Connect {
                target: self.describe(),
                source,
            })?;
        *guard = Some(pool.clone());
        Ok(pool)
    }

    async fn close(&self) {
        self.history_ready.store(false, Ordering::Relaxed);
        if let Some(pool) = self.pool.lock().await.take() {
            pool.close().await;
        }
    }

    /// Streams a database file into the dump's sink.
    async fn stream_file(
        path: &Path,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<(), DatabaseError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|source| DatabaseError::Io {
                what: format!("cannot open {}", path.display()),
                source,
            })?;
        tokio::io::copy(&mut file, sink)
            .await
            .map_err(|source| DatabaseError::Io {
                what: "cannot write the dump to the backup store".into(),
                source,
            })?;
        Ok(())
    }

    /// The dump of a snapshot: its file as it is (a consistent copy nothing writes to).
    async fn dump_file(
        &self,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<DumpInfo, DatabaseError> {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = SqliteConnectOptions::new()
            .filename(&self.path)
            .immutable(true)
            .connect()
            .await
            .map_err(super::sql_err(format!(
                "cannot open {}",
                self.path.display()
            )))?;
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut conn)
            .await
            .map_err(super::sql_err("cannot read the SQLite version"))?;
        let _ = conn.close().await;
        Self::stream_file(&self.path, sink).await?;
        Ok(DumpInfo {
            format: "sqlite-database-file".into(),
            server_version: format!("SQLite {version}"),
            tool: "VACUUM INTO".into(),
        })
    }

    /// A file `name` in the database's folder; a name that would leave it is refused.
    fn beside(&self, name: &str) -> Result<PathBuf, DatabaseError> {
        let own = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        if name.is_empty()
            || name.contains('/')
            || name.starts_with('.')
            || own.as_deref() == Some(name)
        {
            return Err(DatabaseError::Other(format!(
                "`{name}` is not a snapshot beside {}",
                self.path.display()
            )));
        }
        Ok(self.path.with_file_name(name))
    }

    fn scratch_path(&self, purpose: &str) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map_or_else(|| "db".into(), |n| n.to_string_lossy().into_owned());
        self.path.with_file_name(format!(
            ".{name}.cutover-{purpose}-{}",
            uuid::Uuid::new_v4()
        ))
    }

    async fn copy_into_file(
        source: &mut (dyn AsyncRead + Unpin + Send),
        path: &Path,
    ) -> Result<(), DatabaseError> {
        let io = |what: String| move |source| DatabaseError::Io { what, source };
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(io(format!("cannot create {}", path.display())))?;
        tokio::io::copy(source, &mut file)
            .await
            .map_err(io(format!("cannot write {}", path.display())))?;
        file.sync_all()
            .await
            .map_err(io(format!("cannot sync {}", path.display())))?;
        Ok(())
    }

    /// Opens a dump file on its own and runs SQLite's integrity check on it.
    async fn check_file(path: &Path) -> Result<(), DatabaseError> {
        let options = SqliteConnectOptions::new().filename(path).read_only(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .map_err(super::sql_err(format!(
                "cannot open dump {}",
                path.display()
            )))?;
        let result: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .map_err(super::sql_err("the dump is not a readable SQLite database"))?;
        conn.close().await.ok();
        if result == "ok" {
            Ok(())
        } else {
            Err(DatabaseError::Other(format!(
                "the dump failed SQLite's integrity check: {result}"
            )))
        }
    }
}

#[async_trait]
impl Database for SqliteDatabase {
    // The restored file is staged beside the database and renamed in only when whole.
    fn restore_is_all_or_nothing(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn describe(&self) -> String {
        super::display_url(&self.url)
    }

    /// As configured: a relative path is relative to the config folder, where an external
    /// migrator runs.
    fn connection_url(&self) -> crate::secret::Secret {
        crate::secret::Secret::new(self.url.clone())
    }

    async fn disconnect(&self) {
        self.close().await;
    }

    fn missing_file(&self) -> Option<PathBuf> {
        (!self.create && !self.path.exists()).then(|| self.path.clone())
    }

    async fn state(&self) -> Result<DatabaseState, DatabaseError> {
        // Planning must not create the database file.
        self.may_open()?;
        if self.pool.lock().await.is_none() && !self.path.exists() {
            return Ok(DatabaseState::default());
        }
        shared::state(
            &self.pool().await?,
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .await
    }

    async fn apply(
        &self,
        migration: &MigrationFile,
        commit: Commit,
    ) -> Result<Duration, DatabaseError> {
        let mut conn = shared::connection(&self.pool().await?).await?;
        super::history::apply_sqlite(
            &mut conn,
            migration,
            commit,
            &self.history_ready,
            &mut true,
            &mut None,
        )
        .await
    }

    async fn revert(&self, migration: &MigrationFile) -> Result<(), DatabaseError> {
        let mut conn = shared::connection(&self.pool().await?).await?;
        super::history::revert_sqlite(&mut conn, migration, &mut None).await
    }

    fn batch_size(&self) -> usize {
        super::history::BATCH
    }

    async fn revert_batch(&self, batch: &[&MigrationFile]) -> Result<(), BatchError> {
        let pool = self.pool().await.map_err(|error| BatchError {
            took: Vec::new(),
            error,
        })?;
        let mut conn = shared::connection(&pool)
            .await
            .map_err(|error| BatchError {
                took: Vec::new(),
                error,
            })?;
        super::history::revert_sqlite_batch(&mut conn, batch, &mut None).await
    }

    async fn execute(&self, sql: &str) -> Result<u64, DatabaseError> {
        // The SQLite driver runs every statement of a multi-statement string.
        shared::execute_in_transaction(&self.pool().await?, sql).await
    }

    async fn issues(&self, sql: &str) -> Result<CheckResult, DatabaseError> {
        shared::issues(&self.pool().await?, sql, None).await
    }

    async fn issues_read_only(&self, sql: &str) -> Result<CheckResult, DatabaseError> {
        // A connection of its own, opened read-only: SQLite has no read-only transaction,
        // and the driver runs every statement of a string, so a `PRAGMA query_only = OFF`
        // inside the query could undo a pragma; the open flag cannot be undone. A missing
        // file is an error, not a new empty database.
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let mut conn = shared::open(&options, self.describe()).await?;
        let rows = sqlx::query(sql)
            .fetch_all(&mut conn)
            .await
            .map_err(super::sql_err("validation query failed"));
        let _ = conn.close().await;
        Ok(super::check_result(&rows?))
    }

    async fn dump(
        &self,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<DumpInfo, DatabaseError> {
        if self.frozen {
            return self.dump_file(sink).await;
        }
        let pool = self.pool().await?;
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&pool)
            .await
            .map_err(super::sql_err("cannot read the SQLite version"))?;
        let copy = self.scratch_path("dump");
        let result = async {
            sqlx::query("VACUUM INTO ?")
                .bind(copy.to_string_lossy().into_owned())
                .execute(&pool)
                .await
                .map_err(super::sql_err("cannot copy the database (VACUUM INTO)"))?;
            Self::stream_file(&copy, sink).await
        }
        .await;
        tokio::fs::remove_file(&copy).await.ok();
        result?;
        Ok(DumpInfo {
            format: "sqlite-database-file".into(),
            server_version: format!("SQLite {version}"),
            tool: "VACUUM INTO".into(),
        })
    }

    async fn restore(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), DatabaseError> {
        let incoming = self.scratch_path("restore");
        let staged = async {
            Self::copy_into_file(source, &incoming).await?;
            Self::check_file(&incoming).await
        }
        .await;
        if let Err(e) = staged {
            tokio::fs::remove_file(&incoming).await.ok();
            return Err(e);
        }
        // Every connection must be closed before the file is swapped under it.
        self.close().await;
        for suffix in ["-wal", "-shm"] {
            let mut side = self.path.clone().into_os_string();
            side.push(suffix);
            tokio::fs::remove_file(PathBuf::from(side)).await.ok();
        }
        tokio::fs::rename(&incoming, &self.path)
            .await
            .map_err(|source| DatabaseError::Io {
                what: format!(
                    "cannot move the restored database into {}",
                    self.path.display()
                ),
                source,
            })?;
        Ok(())
    }

    fn snapshot_support(&self) -> Result<(), String> {
        Ok(())
    }

    fn snapshot_names(&self, token: &str) -> super::SnapshotNames {
        let name = self
            .path
            .file_name()
            .map_or_else(|| "db".into(), |n| n.to_string_lossy().into_owned());
        super::SnapshotNames {
            snapshot: format!("{name}.cutover-{token}"),
            replaced: format!("{name}.replaced-{token}"),
        }
    }

    async fn snapshot(&self, name: &str) -> Result<(), DatabaseError> {
        let path = self.beside(name)?;
        // VACUUM INTO writes a consistent copy through SQLite itself, whatever the
        // journal mode and whoever else has the file open.
        let copied = sqlx::query("VACUUM INTO ?")
            .bind(path.to_string_lossy().into_owned())
            .execute(&self.pool().await?)
            .await
            .map_err(super::sql_err(format!(
                "cannot copy the database to {}",
                path.display()
            )));
        if copied.is_err() {
            tokio::fs::remove_file(&path).await.ok();
        }
        copied.map(|_| ())
    }

    fn snapshot_database(&self, name: &str) -> Result<Box<dyn Database>, DatabaseError> {
        let path = self.beside(name)?;
        Ok(Box::new(Self {
            url: format!("sqlite://{}", path.display()),
            path,
            pool: Mutex::new(None),
            history_ready: AtomicBool::new(false),
            create: false,
            frozen: true,
        }))
    }

    async fn swap_in(&self, name: &str, replaced: &str) -> Result<super::Swap, DatabaseError> {
        let snapshot = self.beside(name)?;
        let kept = self.beside(replaced)?;
        let exists = |p: &Path| p.try_exists().unwrap_or(false);
        let note = || super::Swap::Done {
            note: format!(
                "snapshot {} swapped in; the database it replaced is kept as {}: `cutover backup prune` removes it",
                snapshot.display(),
                kept.display()
            ),
        };
        let rename = |from: PathBuf, to: PathBuf| async move {
            tokio::fs::rename(&from, &to)
                .await
                .map_err(|source| DatabaseError::Io {
                    what: format!("cannot rename {} to {}", from.display(), to.display()),
                    source,
                })
        };
        match (exists(&self.path), exists(&snapshot), exists(&kept)) {
            (true, false, true) => return Ok(note()),
            (true, false, false) => return Ok(super::Swap::Gone),
            (true, true, false) => {
                // Every connection closed first: the last one checkpoints and removes
                // the write-ahead log, so the file renamed is the whole database.
                self.close().await;
                for suffix in ["-wal", "-shm"] {
                    let mut side = self.path.clone().into_os_string();
                    side.push(suffix);
                    let side = PathBuf::from(side);
                    if exists(&side) {
                        let mut to = kept.clone().into_os_string();
                        to.push(suffix);
                        rename(side, PathBuf::from(to)).await?;
                    }
                }
                rename(self.path.clone(), kept.clone()).await?;
                super::swap_crash_point();
                rename(snapshot.clone(), self.path.clone()).await?;
            }
            (false, true, true) => rename(snapshot.clone(), self.path.clone()).await?,
            (live, snap, old) => {
                return Err(DatabaseError::Other(format!(
                    "cannot tell where the swap of {} for {} stands: the database {}, the snapshot {}, the replaced copy {}",
                    snapshot.display(),
                    self.path.display(),
                    if live { "exists" } else { "is missing" },
                    if snap { "exists" } else { "is missing" },
                    if old { "exists" } else { "is missing" },
                )));
            }
        }
        self.history_ready.store(false, Ordering::Relaxed);
        Ok(note())
    }

    async fn drop_snapshot(&self, name: &str) -> Result<bool, DatabaseError> {
        let path = self.beside(name)?;
        let mut existed = false;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            match tokio::fs::remove_file(PathBuf::from(p)).await {
                Ok(()) => existed |= suffix.is_empty(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(DatabaseError::Io {
                        what: format!("cannot remove {}", path.display()),
                        source,
                    });
                }
            }
        }
        Ok(existed)
    }

    async fn baseline(&self, migrations: &[&MigrationFile]) -> Result<(), DatabaseError> {
        super::history::baseline_sqlite(&self.pool().await?, migrations).await
    }

    async fn installed(&self) -> Result<Vec<super::Installed>, DatabaseError> {
        super::history::installed_sqlite(&self.pool().await?).await
    }

    async fn accept_checksum(&self, version: i64, checksum: &[u8]) -> Result<bool, DatabaseError> {
        super::history::accept_checksum_sqlite(&self.pool().await?, version, checksum).await
    }

    async fn resolve_dirty(&self, version: i64, applied: bool) -> Result<bool, DatabaseError> {
        let sql = if applied {
            "UPDATE _sqlx_migrations SET success = TRUE WHERE version = ? AND success = FALSE"
        } else {
            "DELETE FROM _sqlx_migrations WHERE version = ? AND success = FALSE"
        };
        let done = sqlx::query(sql)
            .bind(version)
            .execute(&self.pool().await?)
            .await
            .map_err(super::sql_err("cannot update the migration history"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn schema(&self) -> Result<String, DatabaseError> {
        // Reading the schema must not create the database file.
        if self.pool.lock().await.is_none() && !self.path.exists() {
            return Ok(String::new());
        }
        let pool = self.pool().await?;
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT type, name, sql FROM sqlite_master
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND tbl_name <> '_sqlx_migrations'
             ORDER BY type, name",
        )
        .fetch_all(&pool)
        .await
        .map_err(super::sql_err("cannot read the schema"))?;
        Ok(rows
            .into_iter()
            .map(|(_, _, sql)| format!("{};", sql.trim_end()))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    async fn fingerprint(
        &self,
        scope: &crate::fingerprint::Scope,
        budget: u64,
    ) -> Result<crate::fingerprint::Fingerprint, DatabaseError> {
        // Looking must not create the database file.
        if self.pool.lock().await.is_none() && !self.path.exists() {
            return Ok(crate::fingerprint::Fingerprint::default());
        }
        super::fingerprint::sqlite(&self.pool().await?, scope, budget).await
    }

    async fn scratch(&self) -> Result<Scratch, DatabaseError> {
        let name = format!(
            "cutover_roundtrip_{}.db",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let path = std::env::temp_dir().join(name);
        let database = Self {
            url: format!("sqlite://{}", path.display()),
            path: path.clone(),
            pool: Mutex::new(None),
            history_ready: AtomicBool::new(false),
            create: true,
            frozen: false,
        };
        let shown = path.display().to_string();
        Ok(Scratch::new(
            Box::new(database),
            shown,
            Box::new(move || {
                Box::pin(async move {
                    for suffix in ["", "-wal", "-shm", "-journal"] {
                        let mut file = path.clone().into_os_string();
                        file.push(suffix);
                        tokio::fs::remove_file(PathBuf::from(file)).await.ok();
                    }
                    Ok(())
                })
            }),
        ))
    }

    async fn drop_scratch(&self, name: &str) -> Result<(), DatabaseError> {
        // A scratch file is a temp file named by `scratch`, nothing else.
        let path = PathBuf::from(name);
        let ours = path.parent() == Some(std::env::temp_dir().as_path())
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".db"))
                .is_some_and(super::is_scratch_name);
        if !ours {
            return Err(super::not_scratch(name));
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            match tokio::fs::remove_file(PathBuf::from(file)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(DatabaseError::Io {
                        what: format!("cannot remove the scratch database {name}"),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), DatabaseError> {
        self.may_open()?;
        if !self.path.exists() {
            return Ok(());
        }
        let pool = self.pool().await?;
        sqlx::query("SELECT 1")
            .execute(&pool)
            .await
            .map_err(super::sql_err("the database does not answer"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::SqliteDatabase;
    use crate::adapters::database::{Commit, Database};
    use crate::migrate::MigrationFile;

    /// A migration dropped half-way (Ctrl-C, a timeout) leaves no transaction open on the
    /// adapter: the undo that follows runs, and nothing of the migration stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_migration_leaves_no_transaction_for_the_undo() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDatabase::new("sqlite://app.db", dir.path(), false).unwrap();
        db.execute("CREATE TABLE kept (x INTEGER)").await.unwrap();
        // Seconds of work after the table, so it is still running when dropped.
        let up = "CREATE TABLE half (x INTEGER);\n\
            WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4000000)\n\
            SELECT count(*) FROM c;\n";
        let slow = MigrationFile {
            version: 2,
            description: "slow".into(),
            up_path: "2_slow.up.sql".into(),
            up_sql: up.into(),
            down_path: None,
            down_sql: None,
            no_transaction: false,
            contract: false,
            checksum: vec![2],
        };
        let dropped =
            tokio::time::timeout(Duration::from_millis(300), db.apply(&slow, Commit::Durable))
                .await;
        assert!(
            dropped.is_err(),
            "the migration ended before it was dropped"
        );
        assert_eq!(db.execute("INSERT INTO kept VALUES (1)").await.unwrap(), 1);
        let half = db
            .issues("SELECT COUNT(*) AS issues FROM sqlite_master WHERE name = 'half'")
            .await
            .unwrap();
        assert_eq!(half.issues, 0, "the dropped migration's table stayed");
        let state = db.state().await.unwrap();
        assert!(state.applied.iter().all(|m| m.version != 2));
        db.disconnect().await;
    }
}
