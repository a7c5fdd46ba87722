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
    /// The code the platform serves and where its traffic goes, read by the plan of a
    /// pipeline with `release` or `traffic` steps (so the plan a person confirmed binds it
    /// too); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeState>,
}

/// The code versions a platform runs and their share of the traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeState {
    /// The version with the most traffic, when the platform can tell.
    pub live: Option<String>,
    /// Where traffic goes: every revision, slot or release that is running, with its
    /// share (0 for one staged without traffic).
    pub routes: Vec<Route>,
}

impl CodeState {
    /// The route running `version`, if any.
    pub fn route(&self, version: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.version.as_deref() == Some(version))
    }

    /// `v41 100%` or `rev-a 90%, rev-b 10%`, for plans and notes.
    pub fn describe(&self) -> String {
        if self.routes.is_empty() {
            return self.live.clone().unwrap_or_else(|| "unknown".into());
        }
        self.routes
            .iter()
            .map(|r| match &r.version {
                Some(v) if *v != r.name => format!("{} ({v}) {}%", r.name, r.weight),
                _ => format!("{} {}%", r.name, r.weight),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One place code runs: a Container Apps revision, an App Service slot, a Heroku release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The platform's name for it (`api--v42`, `staging`, `v12`).
    pub name: String,
    /// The code version it runs, when known.
    pub version: Option<String>,
    /// Percent of the traffic it gets.
    pub weight: u32,
}

/// What a platform can do with code: why it cannot, for each action, so the plan refuses
/// a `release` or `traffic` step it could not carry out and says why.
#[derive(Debug, Clone)]
pub struct CodeActions {
    /// Put a new version beside the live one without traffic (`release`).
    pub stage: Result<(), String>,
    /// Send traffic to a version (`traffic`).
    pub traffic: Result<(), String>,
    /// Whether traffic can be split between versions (stages below 100 %).
    pub split: bool,
}

impl CodeActions {
    /// A platform that does not release code.
    pub fn none(kind: &str) -> Self {
        let why = format!(
            "the `{kind}` platform does not release code (`release` and `traffic` steps run on azure-container-apps, azure-app-service, heroku and command platforms)"
        );
        Self {
            stage: Err(why.clone()),
            traffic: Err(why),
            split: false,
        }
    }
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

    /// What this platform can do with code versions.
    fn code_actions(&self) -> CodeActions {
        CodeActions::none(self.kind())
    }

    /// The code it runs and where the traffic goes; `None` on a platform that does not
    /// release code.
    async fn code(&self) -> Result<Option<CodeState>, PlatformError> {
        Ok(None)
    }

    /// The exact code state a `release` or `traffic` step is about to change, for the
    /// journal: what [`Platform::restore_code`] needs to put it back (each revision's
    /// weight and whether it was active, the slots' images, the release id).
    async fn code_prior(&self) -> Result<Value, PlatformError> {
        Err(PlatformError::Unsupported(
            self.code_actions().traffic.err().unwrap_or_default(),
        ))
    }

    /// Puts `version` beside the live code without traffic: a new revision at 0 %, a
    /// staging slot, warmed. Idempotent: staging a version already staged changes nothing.
    async fn stage(&self, version: &str) -> Result<String, PlatformError> {
        let _ = version;
        Err(PlatformError::Unsupported(
            self.code_actions().stage.err().unwrap_or_default(),
        ))
    }

    /// Sends `percent` of the traffic to `version` and the rest to the version live
    /// before. Idempotent.
    async fn route(&self, version: &str, percent: u32) -> Result<String, PlatformError> {
        let _ = (version, percent);
        Err(PlatformError::Unsupported(
            self.code_actions().traffic.err().unwrap_or_default(),
        ))
    }

    /// Puts the code and its traffic back exactly as `prior` (from
    /// [`Platform::code_prior`]) describes. Idempotent: run again, or where the step never
    /// got to act, it changes nothing.
    async fn restore_code(&self, prior: &Value) -> Result<String, PlatformError> {
        let _ = prior;
        Err(PlatformError::Unsupported(
            self.code_actions().traffic.err().unwrap_or_default(),
        ))
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
    health_url: Option<&str>,
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
            azure_app_service::AppServicePlatform::new(c, resolver, health_url)?,
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
