//! What every command starts with: the config, the environment, a reporter and the
//! run context.

use std::sync::Arc;

use is_terminal::IsTerminal;
use tokio_util::sync::CancellationToken;

use super::exit::redactor;
use super::{Global, Output};
use crate::config::{self, Config, ConfigError, Located};
use crate::engine::{Context, EngineError, setup};
use crate::report::Reporter;
use crate::report::json::Json;
use crate::report::plain::Plain;
use crate::report::tty::Tty;

pub struct Session {
    pub config: Config,
    pub environment: String,
    pub reporter: Arc<dyn Reporter>,
    pub json: bool,
}

pub fn reporter(global: &Global) -> Result<(Arc<dyn Reporter>, bool), EngineError> {
    let redactor = redactor();
    Ok(match global.output {
        Output::Json => (Arc::new(Json::new(redactor)), true),
        Output::Plain => (Arc::new(Plain::new(redactor, global.quiet)), false),
        Output::Github | Output::Azure => {
            return Err(EngineError::Plan(format!(
                "--output {} is not available yet in this build of cutover; use --output plain or json",
                if global.output == Output::Github {
                    "github"
                } else {
                    "azure"
                }
            )));
        }
        Output::Auto => {
            if std::io::stderr().is_terminal() && !global.quiet && std::env::var_os("CI").is_none()
            {
                (Arc::new(Tty::new(redactor)), false)
            } else {
                (Arc::new(Plain::new(redactor, global.quiet)), false)
            }
        }
    })
}

pub fn load_config(global: &Global) -> Result<Config, EngineError> {
    Ok(config::load(&global.config)?)
}

impl Session {
    pub fn open(global: &Global) -> Result<Self, EngineError> {
        let (reporter, json) = reporter(global)?;
        let config = load_config(global)?;
        let environment = match &global.env {
            Some(e) => {
                config.environment(e)?;
                e.clone()
            }
            None => config.default_environment()?.to_owned(),
        };
        Ok(Self {
            config,
            environment,
            reporter,
            json,
        })
    }

    /// Builds the run context for the session's environment.
    pub fn context(&self, cancel: CancellationToken) -> Result<Context, EngineError> {
        setup::context(
            &self.config,
            &self.environment,
            self.reporter.clone(),
            redactor(),
            cancel,
        )
    }

    pub fn pipeline(
        &self,
        explicit: Option<&std::path::Path>,
    ) -> Result<config::Pipeline, EngineError> {
        let path = self.config.pipeline_path(explicit);
        if !path.exists() {
            let message = format!("pipeline file `{}` does not exist", path.display());
            // Point at the config's `pipeline:` line when that is where the path came from.
            let located = match (&self.config.file.pipeline, explicit) {
                (Some(p), None) => Located::at(&self.config.path, &p.referenced, message),
                _ => Located::file(&self.config.path, message),
            };
            return Err(ConfigError::Invalid(located).into());
        }
        Ok(config::load_pipeline(&path, &self.config.dir)?)
    }

    /// Prints a result: JSON when asked, text otherwise.
    pub fn result(&self, value: &serde_json::Value, text: &str) {
        self.reporter.result(value, text);
    }
}
