//! Where a fleet's targets come from: a list in `deploy.yaml`, a file, or a query against
//! a catalog database. Every URL's password is registered as a secret before anything
//! else happens; names must be unique and usable as folder names.

use std::collections::HashSet;

use sqlx::Connection;

use super::Target;
use crate::adapters::reference::Resolver;
use crate::config::deploy_file::TargetsConfig;
use crate::config::{Config, ConfigError, Located};
use crate::engine::EngineError;

/// All targets of an environment, in the order they were given (list, file, query).
pub(crate) async fn resolve(
    config: &Config,
    environment: &str,
    resolver: &Resolver<'_>,
) -> Result<Vec<Target>, EngineError> {
    let env = config.environment(environment)?;
    let Some(spec) = &env.targets else {
        return Err(ConfigError::Invalid(Located::file(
            &config.path,
            format!("environment `{environment}` has no `targets:`; `deploy --fleet` needs them"),
        ))
        .into());
    };
    let bad = |message: String| -> EngineError {
        ConfigError::Invalid(Located::file(
            &config.path,
            format!("environment `{environment}` targets: {message}"),
        ))
        .into()
    };
    let mut targets = Vec::new();
    for entry in &spec.list {
        targets.push(Target {
            name: entry.name.clone(),
            url: resolver.url(&entry.url)?,
        });
    }
    if let Some(file) = &spec.file {
        let path = config.dir.join(&file.value);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            EngineError::Config(ConfigError::Invalid(Located::at(
                &config.path,
                &file.referenced,
                format!("cannot read targets file `{}`: {e}", path.display()),
            )))
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, url) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad(format!("{}:{}: expected `NAME URL`", path.display(), n + 1)))?;
            targets.push(Target {
                name: name.to_owned(),
                url: resolver.plain_url(url.trim()),
            });
        }
    }
    if let Some(query) = &spec.query {
        let catalog = resolver.url(&query.catalog)?;
        let rows = catalog_rows(catalog.expose(), &query.sql, &config.dir)
            .await
            .map_err(|e| {
                bad(format!(
                    "the catalog query failed: {}",
                    resolver.redactor.redact(&e)
                ))
            })?;
        for (name, url) in rows {
            targets.push(Target {
                name,
                url: resolver.plain_url(&url),
            });
        }
    }
    check(&targets, spec).map_err(bad)?;
    Ok(targets)
}

fn check(targets: &[Target], spec: &TargetsConfig) -> Result<(), String> {
    let mut seen = HashSet::new();
    for t in targets {
        if t.name.is_empty()
            || !t
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || t.name.starts_with('.')
        {
            return Err(format!(
                "invalid target name `{}`: use letters, digits, `-`, `_` and `.`",
                t.name
            ));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(format!("target `{}` is listed twice", t.name));
        }
    }
    if spec.concurrency == Some(0) {
        return Err("`concurrency` must be at least 1".into());
    }
    Ok(())
}

/// Rows of `name, url` from the catalog database.
async fn catalog_rows(
    url: &str,
    sql: &str,
    base_dir: &std::path::Path,
) -> Result<Vec<(String, String)>, String> {
    let text = |e: sqlx::Error| e.to_string();
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let file = base_dir.join(rest.split('?').next().unwrap_or_default());
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&file)
            .read_only(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .map_err(text)?;
        let rows = sqlx::query_as::<_, (String, String)>(sql)
            .fetch_all(&mut conn)
            .await
            .map_err(text)?;
        let _ = conn.close().await;
        Ok(rows)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut conn = sqlx::PgConnection::connect(url).await.map_err(text)?;
        let rows = sqlx::query_as::<_, (String, String)>(sql)
            .fetch_all(&mut conn)
            .await
            .map_err(text)?;
        let _ = conn.close().await;
        Ok(rows)
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        let url = url.replacen("mariadb://", "mysql://", 1);
        let mut conn = sqlx::MySqlConnection::connect(&url).await.map_err(text)?;
        let rows = sqlx::query_as::<_, (String, String)>(sql)
            .fetch_all(&mut conn)
            .await
            .map_err(text)?;
        let _ = conn.close().await;
        Ok(rows)
    } else {
        Err("the catalog URL must start with sqlite://, postgres:// or mysql://".into())
    }
}
