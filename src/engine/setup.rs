//! Building a run's [`Context`] from the config for one environment: resolve references,
//! construct the adapters, read the migrations.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::context::{Context, HealthTarget};
use super::error::EngineError;
use crate::adapters::database::BuildError;
use crate::adapters::{database, platform, store};
use crate::config::reference::Resolver;
use crate::config::{Config, ConfigError, Located};
use crate::migrate::source;
use crate::report::Reporter;
use crate::secret::Redactor;

pub fn context(
    config: &Config,
    environment: &str,
    reporter: Arc<dyn Reporter>,
    redactor: Redactor,
    cancel: CancellationToken,
) -> Result<Context, EngineError> {
    let env = config.environment(environment)?;
    let resolver = Resolver {
        config_path: &config.path,
        base_dir: &config.dir,
        redactor: &redactor,
    };
    let state_dir = config.state_dir();
    // An adapter this build lacks, or settings it cannot use, are named with the file and
    // environment they come from.
    let located = |e: BuildError| -> EngineError {
        match e {
            BuildError::NotAvailable(_) | BuildError::Invalid(_) => ConfigError::Invalid(
                Located::file(&config.path, format!("environment `{environment}`: {e}")),
            )
            .into(),
            BuildError::Config(c) => c.into(),
        }
    };
    let database = database::build(&env.database, &resolver, &config.dir).map_err(located)?;
    let store = store::build(
        env.backups.as_ref(),
        &resolver,
        &config.dir,
        &state_dir.join("backups"),
    )
    .map_err(located)?;
    let platform =
        platform::build(env.platform.as_ref(), &resolver, &config.dir).map_err(located)?;
    let health = match &env.health {
        Some(h) => {
            let url = resolver.text(&h.url)?;
            if let Err(e) = reqwest::Url::parse(&url) {
                return Err(ConfigError::Invalid(Located::at(
                    &config.path,
                    &h.url.referenced,
                    format!("invalid health URL: {e}"),
                ))
                .into());
            }
            Some(HealthTarget {
                url,
                expect: h.expect.unwrap_or(200),
                body: h.body.clone(),
                timeout: h.timeout.map_or(
                    Duration::from_secs(300),
                    super::super::config::duration::Duration::get,
                ),
            })
        }
        None => None,
    };
    let migrations =
        source::read_dir(&config.migrations_dir()).map_err(|e| EngineError::Plan(e.to_string()))?;
    let lock_lease = env.lock.as_ref().and_then(|l| l.lease).map_or(
        Duration::from_secs(60),
        super::super::config::duration::Duration::get,
    );
    Ok(Context {
        project: config.project().to_owned(),
        environment: environment.to_owned(),
        base_dir: config.dir.clone(),
        state_dir,
        database,
        store,
        platform,
        health,
        migrations,
        lock_lease,
        reporter,
        redactor,
        cancel,
        http: std::sync::OnceLock::new(),
    })
}

/// Where relative paths in a path-valued flag resolve.
pub fn relative_to(base: &Path, path: &Path) -> std::path::PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}
