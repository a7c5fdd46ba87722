//! Adapters: one trait per family (database, platform, backup store, secrets), one module
//! per implementation, picked by the config's `kind`. The engine sees only the traits.
//! Adapters are built through [`build::Resolve`], which [`reference::Resolver`] implements
//! above them: the families never import the resolver that reads secrets through them.

pub(crate) mod azure;
pub mod azure_storage;
pub(crate) mod build;
pub(crate) mod database;
pub(crate) mod platform;
pub mod reference;
pub(crate) mod secrets;
pub(crate) mod state;
pub(crate) mod store;
