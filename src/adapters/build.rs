//! What building an adapter from its config needs and how it fails: the [`Resolve`]
//! trait through which config strings are expanded (references, secrets), and
//! [`BuildError`]. Every family imports this file; it imports no family.

use crate::config::ConfigError;
use crate::config::deploy_file::{AzureConfig, Text};
use crate::secret::{Redactor, Secret};

/// Expands the references inside config strings for the chosen environment, registering
/// every secret it reads with the redactor.
pub(crate) trait Resolve: Sync {
    /// An ordinary field: secrets inside it are masked, the rest may be shown.
    fn text(&self, text: &Text) -> Result<String, ConfigError>;
    /// A credential field: the whole value is a secret.
    fn credential(&self, text: &Text) -> Result<Secret, ConfigError>;
    /// A connection URL: its password is a secret, the rest may be shown.
    fn url(&self, text: &Text) -> Result<Secret, ConfigError>;
    /// The environment's `azure:` block.
    fn azure(&self) -> Option<&AzureConfig>;
    fn redactor(&self) -> &Redactor;
}

/// Why an adapter could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    NotAvailable(#[from] NotAvailable),
    #[error("{0}")]
    Invalid(String),
}

/// Raised when the config names an adapter this build does not have yet.
#[derive(Debug, thiserror::Error)]
#[error(
    "{family} adapter `{kind}` is not available yet in this build of cutover; use {alternative} for now"
)]
pub struct NotAvailable {
    pub family: &'static str,
    pub kind: &'static str,
    pub alternative: &'static str,
}
