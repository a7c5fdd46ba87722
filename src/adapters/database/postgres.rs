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

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, Row};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::OnceCell;

use super::{
    BuildError, CheckResult, Database, DatabaseError, DatabaseState, DbLock, DumpInfo, Scratch,
};
use crate::migrate::MigrationFile;
use crate::secret::Secret;

/// Session settings applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub lock_timeout: Duration,
    pub statement_timeout: Option<Duration>,
    /// `lint: error`: migration lint findings are plan errors.
    pub lint_errors: bool,
}

pub struct PostgresDatabase {
    url: Secret,
    options: PgConnectOptions,
    settings: Settings,
    pool: OnceCell<PgPool>,
}

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
            pool: OnceCell::new(),
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

    async fn pool(&self) -> Result<&PgPool, DatabaseError> {
        self.pool
            .get_or_try_init(|| async {
                // One direct connection first: a refused or unknown host fails at once with
                // the driver's own reason, not a pool timeout.
                let probe =
                    self.options
                        .connect()
                        .await
                        .map_err(|source| DatabaseError::Connect {
                            target: self.describe(),
                            source,
                        })?;
                let _ = probe.close().await;
                let session = self.session_sql();
                PgPoolOptions::new()
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
                    })
            })
            .await
    }

    fn sql_err(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> DatabaseError {
        let what = what.into();
        move |source| DatabaseError::Sql { what, source }
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
        let pool = self.pool().await?;
        let row = sqlx::query("SELECT current_setting('server_version_num')::bigint, current_setting('server_version')")
            .fetch_one(pool)
            .await
            .map_err(Self::sql_err("cannot read the server version"))?;
        Ok((row.get(0), row.get(1)))
    }

    /// Checks that the dump tools exist and are not older than the server: found in the plan,
    /// not halfway through a deploy.
    pub async fn check_tools(&self) -> Result<String, DatabaseError> {
        let (server_num, server) = self.server_version_num().await?;
        for tool in ["pg_dump", "pg_restore", "psql"] {
            let version = Self::tool_version(tool).await?;
            let major: i64 = version
                .split_whitespace()
                .find_map(|w| w.split('.').next()?.parse().ok())
                .unwrap_or(0);
            if tool == "pg_dump" && major < server_num / 10000 {
                return Err(DatabaseError::Other(format!(
                    "{version} is older than the server (PostgreSQL {server}); pg_dump refuses to dump a newer server. Install the PostgreSQL {} client tools",
                    server_num / 10000
                )));
            }
        }
        Ok(server)
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
        let pipe = async {
            to_psql.write_all(prelude.as_bytes()).await?;
            let r = tokio::io::copy(&mut from_restore, &mut to_psql).await;
            drop(to_psql);
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

/// Drops every schema the application owns so a restore leaves nothing from after the
/// backup. pg_dump leaves the default `public` schema out of the dump, so it is recreated
/// here with the owner, grants and comment it had (app roles keep their USAGE); the dump,
/// restored with `--clean --if-exists`, recreates everything else.
const RESET_SCHEMAS: &str = "DO $$ DECLARE
  s text; g record; acl aclitem[]; note text; owner name;
BEGIN
  SELECT n.nspacl, obj_description(n.oid, 'pg_namespace'), pg_get_userbyid(n.nspowner)
    INTO acl, note, owner FROM pg_namespace n WHERE n.nspname = 'public';
  FOR s IN SELECT nspname FROM pg_namespace
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
END $$;
";

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

    fn lint_errors(&self) -> bool {
        self.settings.lint_errors
    }

    async fn state(&self) -> Result<DatabaseState, DatabaseError> {
        let pool = self.pool().await?;
        let has_table: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(pool)
                .await
                .map_err(Self::sql_err("cannot read the migration history"))?;
        if !has_table {
            return Ok(DatabaseState {
                exists: true,
                ..DatabaseState::default()
            });
        }
        let mut conn = pool
            .acquire()
            .await
            .map_err(Self::sql_err("cannot read the migration history"))?;
        super::history::read(&mut *conn).await
    }

    async fn apply(&self, migration: &MigrationFile) -> Result<Duration, DatabaseError> {
        let pool = self.pool().await?;
        let mut conn = pool
            .acquire()
            .await
            .map_err(Self::sql_err("cannot connect"))?;
        super::history::apply(&mut *conn, migration).await
    }

    async fn revert(&self, migration: &MigrationFile) -> Result<(), DatabaseError> {
        let pool = self.pool().await?;
        let mut conn = pool
            .acquire()
            .await
            .map_err(Self::sql_err("cannot connect"))?;
        super::history::revert(&mut *conn, migration).await
    }

    async fn execute(&self, sql: &str) -> Result<(), DatabaseError> {
        // One simple-protocol message: PostgreSQL runs all its statements as one transaction.
        sqlx::raw_sql(sql)
            .execute(self.pool().await?)
            .await
            .map_err(Self::sql_err("SQL failed"))?;
        Ok(())
    }

    async fn issues(&self, sql: &str) -> Result<CheckResult, DatabaseError> {
        let rows = sqlx::query(sql)
            .fetch_all(self.pool().await?)
            .await
            .map_err(Self::sql_err("validation query failed"))?;
        super::check_result(&rows).map_err(Self::sql_err("cannot read the validation result"))
    }

    async fn dump(
        &self,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<DumpInfo, DatabaseError> {
        let server = self.check_tools().await?;
        let tool = Self::tool_version("pg_dump").await?;
        let (mut cmd, target) = self.tool("pg_dump", None);
        let mut child = cmd
            .args(["--format=custom", "--no-owner", "--no-acl"])
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
        let mut out = child.stdout.take().expect("piped");
        let copied = tokio::io::copy(&mut out, sink).await;
        Self::wait_tool(child, "pg_dump").await?;
        copied.map_err(|source| DatabaseError::Io {
            what: "cannot stream the dump to the backup store".into(),
            source,
        })?;
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
        self.restore_into(None, source, RESET_SCHEMAS).await
    }

    async fn verify_dump(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), DatabaseError> {
        let scratch = format!(
            "cutover_verify_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let pool = self.pool().await?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{scratch}\""))
            .execute(pool)
            .await
            .map_err(Self::sql_err(format!(
                "cannot create the scratch database {scratch} to verify the backup (the role needs CREATEDB)"
            )))?;
        let result = self
            .restore_into(Some(&scratch), source, RESET_SCHEMAS)
            .await;
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS \"{scratch}\" WITH (FORCE)"
        ))
        .execute(pool)
        .await
        .map_err(Self::sql_err(format!(
            "cannot drop the scratch database {scratch}"
        )))?;
        result
    }

    async fn resolve_dirty(&self, version: i64, applied: bool) -> Result<bool, DatabaseError> {
        let sql = if applied {
            "UPDATE _sqlx_migrations SET success = TRUE WHERE version = $1 AND success = FALSE"
        } else {
            "DELETE FROM _sqlx_migrations WHERE version = $1 AND success = FALSE"
        };
        let done = sqlx::query(sql)
            .bind(version)
            .execute(self.pool().await?)
            .await
            .map_err(Self::sql_err("cannot update the migration history"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), DatabaseError> {
        sqlx::query("SELECT 1")
            .execute(self.pool().await?)
            .await
            .map_err(Self::sql_err("the database does not answer"))?;
        self.check_tools()
            .await
            .map(|_| ())
            .map_err(|e| DatabaseError::Other(format!("the backup tools are not usable: {e}")))
    }

    async fn schema(&self) -> Result<String, DatabaseError> {
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
        let name = format!(
            "cutover_roundtrip_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut url = url::Url::parse(self.url.expose()).map_err(|e| {
            DatabaseError::Other(format!("cannot make a URL for the scratch database: {e}"))
        })?;
        url.set_path(&format!("/{name}"));
        let database = Self::new(Secret::new(url.to_string()), self.settings)
            .map_err(|e| DatabaseError::Other(e.to_string()))?;
        let pool = self.pool().await?.clone();
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&pool)
            .await
            .map_err(Self::sql_err(format!(
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
                    .map_err(Self::sql_err(format!(
                        "cannot drop the scratch database {dropped}"
                    )))?;
                    Ok(())
                })
            }),
        ))
    }

    async fn lock(&self, name: &str) -> Result<Option<DbLock>, DatabaseError> {
        let key = lock_key(name);
        let mut conn = self
            .options
            .connect()
            .await
            .map_err(|source| DatabaseError::Connect {
                target: self.describe(),
                source,
            })?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(Self::sql_err("cannot take the advisory lock"))?;
        if got {
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
