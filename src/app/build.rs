//! Building a run's [`Context`] from the config for one environment: resolve references,
//! construct the adapters, read the migrations.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::adapters::build::BuildError;
use crate::adapters::reference::Resolver;
use crate::adapters::state::azure_blob::SharedState;
use crate::adapters::{database, platform, store};
use crate::config::deploy_file::LockKind;
use crate::config::deploy_file::NotifyEvent;
use crate::config::{Config, ConfigError, Located};
use crate::engine::error::EngineError;
use crate::migrate::source;
use crate::notify;
use crate::run::context::{Context, HealthTarget};
use crate::run::event::Reporter;
use crate::secret::Redactor;

pub(crate) fn context(
    config: &Config,
    environment: &str,
    reporter: Arc<dyn Reporter>,
    redactor: Redactor,
    cancel: CancellationToken,
) -> Result<Context, EngineError> {
    build(config, environment, reporter, redactor, cancel, None)
}

/// A fleet target's context: the environment's with the target's database URL, its own
/// state folder (journal and lock), and no notifications (the fleet run notifies once).
pub(crate) fn target_context(
    config: &Config,
    environment: &str,
    target: &crate::app::fleet::Target,
    reporter: Arc<dyn Reporter>,
    redactor: Redactor,
    cancel: CancellationToken,
) -> Result<Context, EngineError> {
    build(
        config,
        environment,
        reporter,
        redactor,
        cancel,
        Some(target),
    )
}

fn build(
    config: &Config,
    environment: &str,
    reporter: Arc<dyn Reporter>,
    redactor: Redactor,
    cancel: CancellationToken,
    target: Option<&crate::app::fleet::Target>,
) -> Result<Context, EngineError> {
    let env = config.environment(environment)?;
    let resolver = Resolver {
        config_path: &config.path,
        base_dir: &config.dir,
        redactor: &redactor,
        azure: env.azure.as_ref(),
    };
    let state_dir = match target {
        Some(t) => crate::app::fleet::target_state_dir(&config.state_dir(), environment, &t.name),
        None => config.state_dir(),
    };
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
    let database = database::build_at(
        &env.database,
        &resolver,
        &config.dir,
        target.map(|t| &t.url),
        env.backups.as_ref(),
    )
    .map_err(|e| match (&e, env.database.url(), target) {
        // A URL the adapter cannot use is shown at the line that gives it.
        (BuildError::Invalid(_), Some(url), None) => ConfigError::Invalid(Located::at(
            &config.path,
            &url.referenced,
            format!("environment `{environment}`: {e}"),
        ))
        .into(),
        _ => located(e),
    })?;
    let store = store::build_within(
        env.backups.as_ref(),
        &resolver,
        &config.dir,
        &state_dir.join("backups"),
        target.map(|t| t.name.as_str()),
        &|| azure_credential(&resolver),
    )
    .map_err(located)?;
    // The URL is resolved now, but an unresolved reference only fails a step that polls it:
    // `migrate status` needs no health URL.
    let health = match &env.health {
        Some(h) => Some(match resolver.text(&h.url) {
            Ok(url) => {
                let why = match reqwest::Url::parse(&url) {
                    Err(e) => Some(e.to_string()),
                    Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                        Some(format!("`{}:` is not http or https", u.scheme()))
                    }
                    Ok(_) => None,
                };
                if let Some(why) = why {
                    return Err(ConfigError::Invalid(Located::at(
                        &config.path,
                        &h.url.referenced,
                        format!("invalid health URL: {why}"),
                    ))
                    .into());
                }
                Ok(HealthTarget {
                    url,
                    expect: h.expect.unwrap_or(200),
                    body: h.body.clone(),
                    timeout: h.timeout.map_or(
                        Duration::from_secs(300),
                        super::super::config::duration::Duration::get,
                    ),
                    healthy_for: h.healthy_for.map_or(
                        crate::steps::health::DEFAULT_HEALTHY_FOR,
                        super::super::config::duration::Duration::get,
                    ),
                    successes: h
                        .successes
                        .unwrap_or(crate::steps::health::DEFAULT_SUCCESSES),
                })
            }
            Err(e) => Err(e.to_string()),
        }),
        None => None,
    };
    // After the health URL: App Service warms a staged slot on its path.
    let platform = platform::build(
        env.platform.as_ref(),
        &resolver,
        &config.dir,
        health
            .as_ref()
            .and_then(|h| h.as_ref().ok())
            .map(|h| h.url.as_str()),
    )
    .map_err(located)?;
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
                &|| azure_credential(&resolver),
            )
            .map_err(located)?;
            // A fleet target has a lease and journal of its own, beside the fleet's.
            let scope = match target {
                Some(t) => format!("{environment}/targets/{}", t.name),
                None => environment.to_owned(),
            };
            Some(Arc::new(SharedState::new(
                container,
                config.project(),
                &scope,
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
    let reporter = notifying(config, env, &resolver, reporter, &redactor, environment)?;
    Ok(Context {
        project: config.project().to_owned(),
        environment: environment.to_owned(),
        base_dir: config.dir.clone(),
        state_dir,
        database,
        store: store.into(),
        platform,
        health,
        migrations,
        lock_lease,
        shared,
        reporter,
        redactor,
        cancel,
        outside_window: None,
        http: std::sync::OnceLock::new(),
        out_of_order: env.out_of_order,
        drift: env.drift,
        fingerprint_budget: env
            .fingerprint
            .as_ref()
            .and_then(|f| f.max_table_mb)
            .unwrap_or(1024)
            .saturating_mul(1 << 20),
        facts: std::sync::Mutex::default(),
        rehearsal: crate::rehearsal_record::Standing::None,
        confirmed: None,
        approved: None,
        code_version: None,
        background: tokio::sync::Mutex::default(),
    })
}

/// Wraps `reporter` so the run's events also go to the environment's notify targets (the
/// top-level ones, then its own); unchanged when there are none.
fn notifying(
    config: &Config,
    env: &crate::config::Environment,
    resolver: &Resolver,
    reporter: Arc<dyn Reporter>,
    redactor: &Redactor,
    environment: &str,
) -> Result<Arc<dyn Reporter>, EngineError> {
    let configured: Vec<_> = config.file.notify.iter().chain(&env.notify).collect();
    if configured.is_empty() {
        return Ok(reporter);
    }
    let mut targets = Vec::new();
    for target in configured {
        let url = resolver.credential(&target.url)?;
        if let Err(e) = reqwest::Url::parse(url.expose()) {
            return Err(ConfigError::Invalid(Located::at(
                &config.path,
                &target.url.referenced,
                format!("invalid notify URL: {e}"),
            ))
            .into());
        }
        targets.push(notify::Target {
            kind: target.kind,
            url,
            events: target
                .events
                .clone()
                .unwrap_or_else(|| NotifyEvent::ALL.to_vec()),
            timeout: target.timeout.map_or(
                notify::DEFAULT_TIMEOUT,
                crate::config::duration::Duration::get,
            ),
        });
    }
    // Built only when there is something to notify: loading the TLS roots costs tens of
    // milliseconds.
    let http = reqwest::Client::builder()
        .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| EngineError::Plan(format!("cannot start the HTTP client: {e}")))?;
    let notifier = notify::Notifier::start(targets, http, reporter.clone(), redactor.clone());
    Ok(Arc::new(notify::Notifying::new(
        reporter,
        notifier,
        config.project(),
        environment,
    )))
}

/// The Azure credential for adapters that authenticate with Entra ID (a blob store or lock
/// without `key:` or `sas:`): the environment's sign-in chain, built on first use.
pub(crate) fn azure_credential(
    resolver: &Resolver,
) -> Result<Arc<dyn azure_core::credentials::TokenCredential>, BuildError> {
    let auth = crate::adapters::azure::identity::AzureAuth::from_config(resolver.azure, resolver)?;
    Ok(crate::adapters::azure::identity::lazy(auth))
}
