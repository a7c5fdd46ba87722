//! The platform family: maintenance mode, replica counts and restarts of the running app.

pub(crate) mod azure_app_service;
pub(crate) mod azure_container_apps;
pub(crate) mod command;
pub(crate) mod heroku;
pub(crate) mod none;

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::build::BuildError;
use crate::adapters::build::Resolve;
use crate::config::deploy_file::PlatformConfig;

/// The platform's current state, as read before a release and restored by a rollback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformState {
    /// `None` when the platform has no maintenance flag to read.
    pub maintenance: Option<bool>,
    /// Replica counts by target name.
    pub replicas: BTreeMap<String, u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("platform command `{name}` failed ({status}): {output}")]
    Command {
        name: String,
        status: String,
        output: String,
    },
    #[error("cannot run platform command `{name}`: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
    /// The platform's API refused a request or could not be reached. `transient` errors
    /// (rate limits, 5xx, lost connections) are worth another try: a step's `retries:`
    /// applies to them.
    #[error("{message}")]
    Api { message: String, transient: bool },
}

impl PlatformError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Api {
                transient: true,
                ..
            }
        )
    }
}

#[async_trait]
pub trait Platform: Send + Sync {
    fn kind(&self) -> &'static str;
    fn describe(&self) -> String;
    /// Reads the current state without changing it.
    async fn state(&self) -> Result<PlatformState, PlatformError>;
    /// Returns a note of what was done, shown to the user.
    async fn set_maintenance(&self, enabled: bool) -> Result<String, PlatformError>;
    async fn scale(&self, target: &str, replicas: u32) -> Result<String, PlatformError>;
    async fn restart(&self) -> Result<String, PlatformError>;

    /// The exact state a change to `subject` is about to alter, where [`PlatformState`]
    /// says less than it takes to put it back (Container Apps' minimum and maximum replicas,
    /// a maintenance variable's earlier value or absence). Read before the change and
    /// carried by the compensation into the journal, so a rollback, or `recover` in another
    /// process, hands it back to [`Platform::restore`]. Adapter-specific JSON, never a
    /// secret; `None` (the default) when [`PlatformState`] says it all.
    async fn prior(&self, subject: Subject<'_>) -> Result<Option<Value>, PlatformError> {
        let _ = subject;
        Ok(None)
    }

    /// Puts maintenance back: exactly as `prior` (from [`Platform::prior`]) describes, or,
    /// with no `prior` (a platform that needs none, a journal written before there was
    /// one), to the plain flag.
    async fn restore_maintenance(
        &self,
        enabled: bool,
        prior: Option<&Value>,
    ) -> Result<String, PlatformError> {
        let _ = prior;
        self.set_maintenance(enabled).await
    }

    /// Puts a target back: exactly as `prior` describes, or else to the plain count.
    async fn restore_scale(
        &self,
        target: &str,
        replicas: u32,
        prior: Option<&Value>,
    ) -> Result<String, PlatformError> {
        let _ = prior;
        self.scale(target, replicas).await
    }
}

/// What a change alters: the maintenance flag or one scale target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    Maintenance,
    Target(&'a str),
}

pub(crate) fn build(
    config: Option<&PlatformConfig>,
    resolver: &dyn Resolve,
    base_dir: &Path,
) -> Result<Box<dyn Platform>, BuildError> {
    match config {
        None | Some(PlatformConfig::None) => Ok(Box::new(none::NoPlatform)),
        Some(PlatformConfig::Command(c)) => Ok(Box::new(command::CommandPlatform::new(
            c, resolver, base_dir,
        )?)),
        Some(PlatformConfig::AzureContainerApps(c)) => Ok(Box::new(
            azure_container_apps::ContainerAppsPlatform::new(c, resolver)?,
        )),
        Some(PlatformConfig::AzureAppService(c)) => Ok(Box::new(
            azure_app_service::AppServicePlatform::new(c, resolver)?,
        )),
        Some(PlatformConfig::Heroku {
            app,
            api_key,
            api_url,
        }) => Ok(Box::new(heroku::HerokuPlatform::new(
            app,
            api_key.as_ref(),
            api_url.as_ref(),
            resolver,
        )?)),
    }
}

impl From<crate::adapters::azure::arm::ArmError> for PlatformError {
    fn from(e: crate::adapters::azure::arm::ArmError) -> Self {
        Self::Api {
            message: e.message,
            transient: e.transient,
        }
    }
}
