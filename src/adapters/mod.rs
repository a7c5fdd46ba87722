//! Adapters: one trait per family (database, platform, backup store, secrets), one module
//! per implementation, picked by the config's `kind`. The engine sees only the traits.
//! Adapters are built through [`build::Resolve`], which [`reference::Resolver`] implements
//! above them: the families never import the resolver that reads secrets through them.

pub mod azure;
pub mod azure_storage;
pub mod build;
pub mod database;
pub mod platform;
pub mod reference;
pub mod secrets;
pub mod state;
pub mod store;
