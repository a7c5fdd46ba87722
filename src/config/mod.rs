//! `deploy.yaml` and pipeline files: the raw models, loading with located errors,
//! reference resolution and validation.

pub mod deploy_file;
pub mod duration;
pub mod error;
pub mod pipeline;
pub mod reference;
pub mod rehearse;

mod load;

pub use deploy_file::{ConfirmMode, DeployFile, Environment};
pub use error::{ConfigError, Located};
pub use load::{Config, Pipeline, Step, check_when_environments, load, load_pipeline};
