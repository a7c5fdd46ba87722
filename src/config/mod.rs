//! `deploy.yaml` and pipeline files: the raw models, loading with located errors,
//! and validation (references are resolved on the adapters' side, `adapters::reference`).

pub mod compression;
pub mod deploy_file;
pub mod duration;
pub mod error;
pub mod pipeline;
pub mod rehearse;
pub mod window;

mod load;

pub use deploy_file::{ConfirmMode, DeployFile, Environment};
pub use error::{ConfigError, Located};
pub use load::{Config, Pipeline, Step, check_when_environments, load, load_pipeline};
