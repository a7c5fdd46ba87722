//! MySQL and MariaDB.
//!
//! Migrations go through sqlx's MySQL migrator. MySQL commits DDL implicitly, so sqlx
//! records each migration as unfinished (`success = FALSE`) before running it; a migration
//! that fails part-way stays recorded that way, the plan refuses to go on, and
//! `cutover migrate resolve` is how a human says what state the schema is really in.
//!
//! Backups stream `mariadb-dump` (or `mysqldump`) with `--single-transaction` from its
//! stdout into the store. A restore drops the database's tables first (including ones
//! created after the backup), then streams the dump into the `mariadb`/`mysql` client.
//! MySQL cannot do that atomically; the journal records it so `recover` can run it again.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection, MySqlPool, Row};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::OnceCell;

use super::sqlx_shared as shared;
use super::{
    BuildError, CheckResult, Commit, Database, DatabaseError, DatabaseState, DbLock, DumpInfo,
    Scratch,
};
use crate::config::deploy_file::LintLevel;
use crate::migrate::MigrationFile;
use crate::secret::Secret;

pub(crate) struct MysqlDatabase {
    url: Secret,
    options: MySqlConnectOptions,
    lock_wait_timeout: Duration,
    /// `lint:`: what migration lint findings do to a plan.
    lint: LintLevel,
    pool: OnceCell<MySqlPool>,
    /// Host, port, user, password and database for the command-line tools.
    tool: ToolTarget,
}

struct ToolTarget {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    database: String,
}

impl MysqlDatabase {
    pub(crate) fn new(url: Secret, lock_wait_timeout: Duration) -> Result<Self, BuildError> {
        let text = url.expose();
        let normalized = text
            .strip_prefix("mariadb://")
            .map_or_else(|| text.to_owned(), |rest| format!("mysql://{rest}"));
        let bad = |why: String| {
            BuildError::Invalid(format!(
                "invalid MySQL URL `{}`: {why}",
                super::display_url(text)
            ))
        };
        if !normalized.starts_with("mysql://") {
            return Err(bad("it must start with `mysql://` or `mariadb://`".into()));
        }
        let parsed = url::Url::parse(&normalized).map_err(|e| bad(e.to_string()))?;
        let database = parsed.path().trim_start_matches('/').to_owned();
        if database.is_empty() {
            return Err(bad(
                "it must name a database, e.g. `mysql://user@host/app`".into()
            ));
        }
        let tool = ToolTarget {
            host: parsed.host_str().unwrap_or("localhost").to_owned(),
            port: parsed.port().unwrap_or(3306),
            user: percent_decode(parsed.username()),
            password: parsed.password().map(percent_decode),
            database: percent_decode(&database),
        };
        let options: MySqlConnectOptions = normalized
            .parse()
            .map_err(|e: sqlx::Error| bad(e.to_string()))?;
        Ok(Self {
            url,
            options: options.disable_statement_logging(),
            lock_wait_timeout,
            lint: LintLevel::default(),
            pool: OnceCell::new(),
            tool,
        })
    }

    pub(crate) fn with_lint(self, lint: LintLevel) -> Self {
        Self { lint, ..self }
    }

    async fn pool(&self) -> Result<&MySqlPool, DatabaseError> {
        self.pool
            .get_or_try_init(|| {
                let session = format!(
                    "SET SESSION lock_wait_timeout = {}",
                    self.lock_wait_timeout.as_secs().max(1)
                );
                shared::connect(&self.options, session, self.describe())
            })
            .await
    }

    /// The first of the given programs that is installed.
    async fn find_tool(candidates: &[&str]) -> Result<(String, String), DatabaseError> {
        for program in candidates {
            if let Ok(out) = Command::new(program).arg("--version").output().await {
                return Ok((
                    (*program).to_owned(),
                    String::from_utf8_lossy(&out.stdout).trim().to_owned(),
                ));
            }
        }
        Err(DatabaseError::Other(format!(
            "none of {} is installed (they come with the MariaDB or MySQL client, e.g. `apt install mariadb-client`)",
            candidates.join(", ")
        )))
    }

    /// A client-tool command with connection flags; the password goes in `MYSQL_PWD`.
    fn command(&self, program: &str, database: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.kill_on_drop(true)
            .arg("--no-defaults")
            .arg(format!("--host={}", self.tool.host))
            .arg(format!("--port={}", self.tool.port))
            .arg(format!("--user={}", self.tool.user))
            .arg("--protocol=TCP");
        if let Some(p) = &self.tool.password {
            cmd.env("MYSQL_PWD", p);
        }
        cmd.env_remove("MYSQL_HOST");
        let _ = database;
        cmd
    }

    /// Drops every table and view of `database`, then loads the dump into it.
    async fn load(
        &self,
        database: &str,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), DatabaseError> {
        let (client, _) = Self::find_tool(&["mariadb", "mysql"]).await?;
        let pool = self.pool().await?;
        let objects: Vec<(String, String)> = sqlx::query_as(
            "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
        )
        .bind(database)
        .fetch_all(pool)
        .await
        .map_err(super::sql_err("cannot list the tables to replace"))?;
        let mut prelude = String::from("SET FOREIGN_KEY_CHECKS = 0;\n");
        for (name, kind) in &objects {
            let what = if kind == "VIEW" { "VIEW" } else { "TABLE" };
            prelude.push_str(&format!(
                "DROP {what} IF EXISTS `{}`;\n",
                name.replace('`', "``")
            ));
        }
        let mut child = self
            .command(&client, database)
            .arg(format!("--database={database}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| DatabaseError::Other(format!("cannot run `{client}`: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let fed = async {
            stdin.write_all(prelude.as_bytes()).await?;
            tokio::io::copy(source, &mut stdin).await?;
            stdin.write_all(b"\nSET FOREIGN_KEY_CHECKS = 1;\n").await?;
            drop(stdin);
            Ok::<_, std::io::Error>(())
        }
        .await;
        shared::wait_tool(child, &client).await?;
        fed.map_err(|source| DatabaseError::Io {
            what: format!("cannot stream the backup into {client}"),
            source,
        })
    }
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A `GET_LOCK` held on its own connection; closing it releases the lock.
struct NamedLock(#[allow(dead_code)] sqlx::MySqlConnection);

#[async_trait]
impl Database for MysqlDatabase {
    fn lint_level(&self) -> LintLevel {
        self.lint
    }

    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn snapshot_support(&self) -> Result<(), String> {
        Err(
            "MySQL and MariaDB have no cheap copy on the same server (no file-level template copy): the backup is a dump inside the window"
                .into(),
        )
    }

    fn describe(&self) -> String {
        super::display_url(self.url.expose())
    }

    fn connection_url(&self) -> crate::secret::Secret {
        self.url.clone()
    }

    async fn state(&self) -> Result<DatabaseState, DatabaseError> {
        shared::state(
            self.pool().await?,
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '_sqlx_migrations'",
        )
        .await
    }

    /// Every commit waits for the disk: MySQL's DDL commits on its own.
    async fn apply(
        &self,
        migration: &MigrationFile,
        _commit: Commit,
    ) -> Result<Duration, DatabaseError> {
        let mut conn = shared::connection(self.pool().await?).await?;
        super::history::apply(&mut *conn, migration).await
    }

    async fn revert(&self, migration: &MigrationFile) -> Result<(), DatabaseError> {
        let mut conn = shared::connection(self.pool().await?).await?;
        super::history::revert(&mut *conn, migration).await
    }

    async fn execute(&self, sql: &str) -> Result<u64, DatabaseError> {
        shared::execute_in_transaction(self.pool().await?, sql).await
    }

    async fn fingerprint(
        &self,
        scope: &crate::fingerprint::Scope,
        budget: u64,
    ) -> Result<crate::fingerprint::Fingerprint, DatabaseError> {
        super::fingerprint::mysql(self.pool().await?, scope, budget).await
    }

    async fn issues(&self, sql: &str) -> Result<CheckResult, DatabaseError> {
        shared::issues(self.pool().await?, sql, None).await
    }

    async fn issues_read_only(&self, sql: &str) -> Result<CheckResult, DatabaseError> {
        shared::issues(self.pool().await?, sql, Some("START TRANSACTION READ ONLY")).await
    }

    async fn dump(
        &self,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<DumpInfo, DatabaseError> {
        let (program, tool) = Self::find_tool(&["mariadb-dump", "mysqldump"]).await?;
        let server: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(self.pool().await?)
            .await
            .map_err(super::sql_err("cannot read the server version"))?;
        let mut child = self
            .command(&program, &self.tool.database)
            .args([
                "--single-transaction",
                "--routines",
                "--triggers",
                "--hex-blob",
                "--skip-comments",
            ])
            .arg(&self.tool.database)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| DatabaseError::Other(format!("cannot run `{program}`: {e}")))?;
        let mut out = child.stdout.take().expect("piped");
        let copied = tokio::io::copy(&mut out, sink).await;
        // Close the pipe before waiting: when the store failed, the dump tool is still
        // writing into it and would wait for a reader forever.
        drop(out);
        let waited = shared::wait_tool(child, &program).await;
        copied.map_err(|source| DatabaseError::Io {
            what: "cannot stream the dump to the backup store".into(),
            source,
        })?;
        waited?;
        Ok(DumpInfo {
            format: "mysql-sql".into(),
            server_version: server,
            tool,
        })
    }

    async fn restore(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), DatabaseError> {
        self.load(&self.tool.database.clone(), source).await
    }

    async fn baseline(&self, migrations: &[&MigrationFile]) -> Result<(), DatabaseError> {
        super::history::baseline_mysql(self.pool().await?, migrations).await
    }

    async fn installed(&self) -> Result<Vec<super::Installed>, DatabaseError> {
        super::history::installed_mysql(self.pool().await?).await
    }

    async fn accept_checksum(&self, version: i64, checksum: &[u8]) -> Result<bool, DatabaseError> {
        super::history::accept_checksum_mysql(self.pool().await?, version, checksum).await
    }

    async fn resolve_dirty(&self, version: i64, applied: bool) -> Result<bool, DatabaseError> {
        let sql = if applied {
            "UPDATE _sqlx_migrations SET success = TRUE WHERE version = ? AND success = FALSE"
        } else {
            "DELETE FROM _sqlx_migrations WHERE version = ? AND success = FALSE"
        };
        let done = sqlx::query(sql)
            .bind(version)
            .execute(self.pool().await?)
            .await
            .map_err(super::sql_err("cannot update the migration history"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), DatabaseError> {
        sqlx::query("SELECT 1")
            .execute(self.pool().await?)
            .await
            .map_err(super::sql_err("the database does not answer"))?;
        Self::find_tool(&["mariadb-dump", "mysqldump"]).await?;
        Self::find_tool(&["mariadb", "mysql"]).await.map(|_| ())
    }

    async fn schema(&self) -> Result<String, DatabaseError> {
        let pool = self.pool().await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> '_sqlx_migrations' ORDER BY TABLE_NAME",
        )
        .fetch_all(pool)
        .await
        .map_err(super::sql_err("cannot list the tables"))?;
        let mut out = Vec::with_capacity(tables.len());
        for table in tables {
            let row = sqlx::query(&format!("SHOW CREATE TABLE `{}`", table.replace('`', "``")))
                .fetch_one(pool)
                .await
                .map_err(super::sql_err(format!(
                    "cannot read the definition of {table}"
                )))?;
            let ddl = row
                .try_get::<String, _>(1)
                .or_else(|_| {
                    row.try_get::<Vec<u8>, _>(1)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                })
                .map_err(super::sql_err(format!(
                    "cannot read the definition of {table}"
                )))?;
            // The AUTO_INCREMENT counter is data, not schema.
            let ddl = ddl
                .split(' ')
                .filter(|w| !w.starts_with("AUTO_INCREMENT="))
                .collect::<Vec<_>>()
                .join(" ");
            out.push(format!("{ddl};"));
        }
        Ok(out.join("\n"))
    }

    async fn scratch(&self) -> Result<Scratch, DatabaseError> {
        let mut url = url::Url::parse(self.url.expose()).map_err(|e| {
            DatabaseError::Other(format!("cannot make a URL for the scratch database: {e}"))
        })?;
        // MySQL names are at most 64 characters.
        let name = shared::scratch_name(url.path().trim_start_matches('/'), 32);
        url.set_path(&format!("/{name}"));
        let database = Self::new(Secret::new(url.to_string()), self.lock_wait_timeout)
            .map_err(|e| DatabaseError::Other(e.to_string()))?;
        let statements = (
            format!("CREATE DATABASE `{name}`"),
            format!("DROP DATABASE IF EXISTS `{name}`"),
        );
        shared::create_scratch(
            self.pool().await?.clone(),
            Box::new(database),
            name,
            statements,
            "the user needs CREATE",
        )
        .await
    }

    async fn drop_scratch(&self, name: &str) -> Result<(), DatabaseError> {
        if !super::is_scratch_name(name) {
            return Err(super::not_scratch(name));
        }
        let statement = format!("DROP DATABASE IF EXISTS `{name}`");
        shared::drop_scratch(self.pool().await?, &statement, name).await
    }

    async fn lock(&self, name: &str) -> Result<Option<DbLock>, DatabaseError> {
        use sha2::Digest;
        // GET_LOCK names are server-wide (so the database is part of the name) and limited
        // to 64 characters.
        let full = format!("{}/{name}", self.tool.database);
        let key = format!(
            "cutover:{}",
            &hex::encode(sha2::Sha256::digest(full.as_bytes()))[..40]
        );
        let mut conn = super::sqlx_shared::open(&self.options, self.describe()).await?;
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
            .bind(&key)
            .fetch_one(&mut conn)
            .await
            .map_err(super::sql_err("cannot take the named lock"))?;
        if got == Some(1) {
            Ok(Some(Box::new(NamedLock(conn))))
        } else {
            let holder: Option<i64> = sqlx::query_scalar("SELECT IS_USED_LOCK(?)")
                .bind(&key)
                .fetch_one(&mut conn)
                .await
                .ok()
                .flatten();
            let _ = conn.close().await;
            Err(DatabaseError::Locked(format!(
                "another runner holds the deploy lock in the database (connection {})",
                holder.map_or_else(|| "unknown".into(), |h| h.to_string())
            )))
        }
    }
}
