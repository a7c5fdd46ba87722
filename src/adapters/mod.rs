//! Adapters: one trait per family (database, platform, backup store, secrets), one module
//! per implementation, picked by the config's `kind`. The engine sees only the traits.

pub mod azure;
pub mod azure_storage;
pub mod database;
pub mod platform;
pub mod secrets;
pub mod store;

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
