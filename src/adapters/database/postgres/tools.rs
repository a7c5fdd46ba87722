//! `pg_dump`, `pg_restore` and `psql`: finding them, checking their versions against the
//! server's, running them with the password in `PGPASSWORD`, never argv.

use std::process::Stdio;

use sqlx::Row;
use tokio::process::Command;

use super::super::DatabaseError;
use super::PostgresDatabase;

impl PostgresDatabase {
    /// The URL without its password, and the password, for the command-line tools.
    pub(super) fn tool_target(&self, database: Option<&str>) -> (String, Option<String>) {
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

    pub(super) fn tool(&self, program: &str, database: Option<&str>) -> (Command, String) {
        let (target, password) = self.tool_target(database);
        let mut cmd = Command::new(program);
        cmd.kill_on_drop(true).stdin(Stdio::null());
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        (cmd, target)
    }

    pub(super) async fn tool_version(program: &str) -> Result<String, DatabaseError> {
        let out = Command::new(program)
            .arg("--version")
            .output()
            .await
            .map_err(|e| missing_tool(program, &e))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub(super) async fn server_version_num(&self) -> Result<(i64, String), DatabaseError> {
        let pool = &self.pool().await?;
        let row = sqlx::query("SELECT current_setting('server_version_num')::bigint, current_setting('server_version')")
            .fetch_one(pool)
            .await
            .map_err(super::super::sql_err("cannot read the server version"))?;
        Ok((row.get(0), row.get(1)))
    }

    /// Checks that the dump tools exist and are not older than the server: found in the plan,
    /// not halfway through a deploy. Returns the server's version and pg_dump's. Checked
    /// once per process (the tools are often wrappers that take tens of milliseconds to
    /// answer `--version`); a failed check is tried again.
    pub(crate) async fn check_tools(&self) -> Result<(String, String), DatabaseError> {
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
}

pub(super) fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

pub(super) fn missing_tool(program: &str, e: &std::io::Error) -> DatabaseError {
    if e.kind() == std::io::ErrorKind::NotFound {
        DatabaseError::Other(format!(
            "`{program}` is not installed (it comes with the PostgreSQL client tools, e.g. `apt install postgresql-client`)"
        ))
    } else {
        DatabaseError::Other(format!("cannot run `{program}`: {e}"))
    }
}
