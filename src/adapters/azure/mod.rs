//! Shared Azure plumbing: the sign-in ([`identity`]), the HTTP transport every Azure client
//! uses ([`transport`], with its redirect for local emulators), and the Resource Manager
//! client ([`arm`]) that the Azure platforms drive.

pub(crate) mod arm;
pub(crate) mod identity;
pub(crate) mod transport;

use crate::adapters::build::{BuildError, Resolve};
use crate::config::deploy_file::Text;

/// Token scope of Azure Resource Manager.
pub(crate) const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// Where Azure Resource Manager lives.
pub(crate) const ARM_URL: &str = "https://management.azure.com";
/// The environment variable holding the default subscription id.
pub(crate) const SUBSCRIPTION_ENV: &str = "AZURE_SUBSCRIPTION_ID";

/// The subscription an Azure adapter works in: its own setting, else `azure.subscription`,
/// else [`SUBSCRIPTION_ENV`].
fn subscription(own: Option<String>, auth: &identity::AzureAuth) -> Option<String> {
    own.or_else(|| auth.subscription.clone())
        .or_else(|| std::env::var(SUBSCRIPTION_ENV).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Whether `name` can be an Azure subscription id, resource group or resource name as
/// used in a Resource Manager path.
pub(crate) fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

/// Where an Azure adapter's resources are: the sign-in, the subscription and the resource
/// group, read from its settings and checked.
pub(crate) struct Site {
    pub auth: identity::AzureAuth,
    pub subscription: String,
    pub resource_group: String,
    /// The adapter, as errors name it (``platform `azure-app-service` ``).
    adapter: &'static str,
}

impl Site {
    pub(crate) fn read(
        adapter: &'static str,
        resolver: &dyn Resolve,
        subscription_setting: Option<&Text>,
        resource_group: &Text,
    ) -> Result<Self, BuildError> {
        let auth = identity::AzureAuth::from_config(resolver.azure(), resolver)?;
        let own = setting(resolver, subscription_setting)?;
        let subscription = subscription(own, &auth).ok_or_else(|| {
            BuildError::Invalid(format!(
                "{adapter}: no subscription: set `subscription:`, `azure.subscription` or {SUBSCRIPTION_ENV}"
            ))
        })?;
        let resource_group = resolver.text(resource_group)?.trim().to_owned();
        let site = Self {
            auth,
            subscription,
            resource_group,
            adapter,
        };
        site.check_names(&[
            ("subscription", Some(&site.subscription)),
            ("resource_group", Some(&site.resource_group)),
        ])?;
        Ok(site)
    }

    /// Refuses a resource name a Resource Manager path cannot hold.
    pub(crate) fn check_names(&self, names: &[(&str, Option<&String>)]) -> Result<(), BuildError> {
        for (field, value) in names {
            if let Some(v) = value
                && !name_ok(v)
            {
                return Err(self.invalid(&format!("`{field}: {v}` is not a valid Azure name")));
            }
        }
        Ok(())
    }

    /// A setting the adapter refuses, named with the adapter.
    pub(crate) fn invalid(&self, why: &str) -> BuildError {
        BuildError::Invalid(format!("{}: {why}", self.adapter))
    }
}

/// A setting's text, resolved and trimmed, when it is set.
pub(crate) fn setting(
    resolver: &dyn Resolve,
    text: Option<&Text>,
) -> Result<Option<String>, BuildError> {
    Ok(match text {
        Some(t) => Some(resolver.text(t)?.trim().to_owned()),
        None => None,
    })
}
