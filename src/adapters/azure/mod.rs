//! Shared Azure plumbing: the sign-in ([`identity`]), the HTTP transport every Azure client
//! uses ([`transport`], with its redirect for local emulators), and the Resource Manager
//! client ([`arm`]) that the Azure platforms drive.

pub mod arm;
pub mod identity;
pub mod transport;

/// Token scope of Azure Resource Manager.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// Where Azure Resource Manager lives.
pub const ARM_URL: &str = "https://management.azure.com";
/// The environment variable holding the default subscription id.
pub const SUBSCRIPTION_ENV: &str = "AZURE_SUBSCRIPTION_ID";
