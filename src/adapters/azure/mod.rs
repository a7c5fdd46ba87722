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

/// The subscription an Azure adapter works in: its own setting, else `azure.subscription`,
/// else [`SUBSCRIPTION_ENV`].
pub fn subscription(own: Option<String>, auth: &identity::AzureAuth) -> Option<String> {
    own.or_else(|| auth.subscription.clone())
        .or_else(|| std::env::var(SUBSCRIPTION_ENV).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Whether `name` can be an Azure subscription id, resource group or resource name as
/// used in a Resource Manager path.
pub fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}
