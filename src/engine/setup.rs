//! Building a run's [`Context`] from the config for one environment: resolve references,
//! construct the adapters, read the migrations.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::context::{Context, HealthTarget};
use super::error::EngineError;
use super::shared_state::SharedState;
use crate::adapters::database::BuildError;
use crate::adapters::{database, platform, store};
use crate::config::deploy_file::LockKind;
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
        &|| azure_credential(config, environment),
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
    let shared = match env.lock.as_ref() {
        Some(lock) if lock.kind == Some(LockKind::AzureBlob) => {
            let invalid = |message: String| -> EngineError {
                ConfigError::Invalid(Located::file(
                    &config.path,
                    format!("environment `{environment}`: lock: {message}"),
                ))
                .into()
            };
            let (Some(account), Some(container)) = (&lock.account, &lock.container) else {
                return Err(invalid(
                    "`kind: azure-blob` needs `account:` and `container:`".into(),
                ));
            };
            if !(15..=60).contains(&lock_lease.as_secs()) {
                return Err(invalid(format!(
                    "a blob lease lasts 15s to 60s, not {}",
                    humantime::format_duration(lock_lease)
                )));
            }
            let container = store::azure_container_of(
                &resolver,
                account,
                container,
                lock.key.as_ref(),
                lock.sas.as_ref(),
                &|| azure_credential(config, environment),
            )
            .map_err(located)?;
            Some(Arc::new(SharedState::new(
                container,
                config.project(),
                environment,
                lock_lease,
            )))
        }
        Some(lock)
            if lock.account.is_some()
                || lock.container.is_some()
                || lock.key.is_some()
                || lock.sas.is_some() =>
        {
            return Err(ConfigError::Invalid(Located::file(
                &config.path,
                format!(
                    "environment `{environment}`: lock: `account`, `container`, `key` and `sas` need `kind: azure-blob`"
                ),
            ))
            .into());
        }
        _ => None,
    };
    let http = reqwest::Client::builder()
        .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| EngineError::Plan(format!("cannot start the HTTP client: {e}")))?;
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
        shared,
        reporter,
        redactor,
        cancel,
        http,
    })
}

/// The Azure credential for adapters that authenticate with Entra ID (a blob store or lock
/// without `key:` or `sas:`). Called only when one needs it.
pub fn azure_credential(
    _config: &Config,
    _environment: &str,
) -> Result<Arc<dyn azure_core::credentials::TokenCredential>, BuildError> {
    Err(crate::adapters::NotAvailable {
        family: "Azure credential",
        kind: "Entra ID",
        alternative: "`key:` (account key) or `sas:` (SAS token) in the `azure-blob` section",
    }
    .into())
}

/// Where relative paths in a path-valued flag resolve.
pub fn relative_to(base: &Path, path: &Path) -> std::path::PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}
