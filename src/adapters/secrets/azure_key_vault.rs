//! `${secret:keyvault://<vault>/<name>[/<version>]}`: a secret read from Azure Key Vault
//! with azure_security_keyvault_secrets, signed in with the environment's Azure credential.
//!
//! `<vault>` is a vault name (`kv-prod` → `https://kv-prod.vault.azure.net/`) or a full
//! host name for other clouds (`kv-prod.vault.azure.cn`). Values are read while the plan is
//! made, once per process (a second reference to the same secret is served from memory),
//! and registered with the redactor by the resolver like every other secret. Errors name
//! the vault and the secret, and never hold a value.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

use super::SecretError;
use crate::adapters::azure::identity::{self, AzureAuth, error_text};
use crate::adapters::azure::transport::client_options;
use crate::adapters::build::BuildError;
use crate::secret::Secret;

/// Longest a read may take, sign-in and retries included, unless `azure.timeout` says.
pub(crate) const READ_LIMIT: Duration = Duration::from_secs(20);

/// A parsed `keyvault://` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct KeyVaultRef {
    /// The vault's host name.
    pub host: String,
    pub name: String,
    pub version: Option<String>,
}

impl KeyVaultRef {
    pub(crate) fn parse(reference: &str) -> Result<Self, SecretError> {
        let invalid = |why: &str| {
            SecretError::InvalidReference(format!(
                "`${{secret:{reference}}}` {why}: expected `keyvault://<vault>/<name>` or `keyvault://<vault>/<name>/<version>`"
            ))
        };
        let rest = reference
            .strip_prefix("keyvault://")
            .ok_or_else(|| invalid("is not a Key Vault reference"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (vault, name, version) = match parts.as_slice() {
            [v, n] => (*v, *n, None),
            [v, n, ver] => (*v, *n, Some((*ver).to_owned())),
            _ => return Err(invalid("has the wrong number of parts")),
        };
        let ok =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok(name) || version.as_deref().is_some_and(|v| !ok(v)) {
            return Err(invalid(
                "has an invalid secret name or version (letters, digits and dashes)",
            ));
        }
        if vault.is_empty()
            || !vault
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid("has an invalid vault name"));
        }
        let host = if vault.contains('.') {
            vault.to_ascii_lowercase()
        } else {
            format!("{}.vault.azure.net", vault.to_ascii_lowercase())
        };
        Ok(Self {
            host,
            name: name.to_owned(),
            version,
        })
    }

    fn vault(&self) -> &str {
        self.host
            .strip_suffix(".vault.azure.net")
            .unwrap_or(&self.host)
    }

    fn error(&self, message: String) -> SecretError {
        SecretError::KeyVault {
            vault: self.vault().to_owned(),
            name: match &self.version {
                Some(v) => format!("{}/{v}", self.name),
                None => self.name.clone(),
            },
            message,
        }
    }
}

/// Resolves a reference: signs in with `auth` (the environment's `azure:` settings, built
/// only on a cache miss) and reads the secret (or takes it from this run's cache).
pub(crate) fn resolve(
    auth: impl FnOnce() -> Result<AzureAuth, BuildError>,
    reference: &str,
    limit: Duration,
) -> Result<Secret, SecretError> {
    let r = KeyVaultRef::parse(reference)?;
    if let Some(hit) = cache().lock().expect("not poisoned").get(&r) {
        return Ok(hit.clone());
    }
    let auth = auth().map_err(|e| r.error(format!("cannot read the `azure:` settings: {e}")))?;
    let handle = tokio::runtime::Handle::try_current()
        .ok()
        .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        .ok_or_else(|| r.error("Key Vault can only be read while cutover runs a command".into()))?;
    // A read can take seconds (sign-in, a slow network): a terminal shows that cutover is
    // waiting, and on what.
    let waiting = crate::waiting::spinner(format!(
        "reading secret `{}` from Key Vault `{}`",
        r.name,
        r.vault()
    ));
    let value = tokio::task::block_in_place(|| {
        handle.block_on(async {
            tokio::time::timeout(limit, fetch(&auth, &r, limit))
                .await
                .unwrap_or_else(|_| {
                    Err(r.error(format!(
                        "no answer within {} (set `azure: {{ timeout: ... }}` to wait longer)",
                        humantime::format_duration(limit)
                    )))
                })
        })
    });
    waiting.finish_and_clear();
    let value = value?;
    cache()
        .lock()
        .expect("not poisoned")
        .insert(r, value.clone());
    Ok(value)
}

fn cache() -> &'static Mutex<HashMap<KeyVaultRef, Secret>> {
    static CACHE: OnceLock<Mutex<HashMap<KeyVaultRef, Secret>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// Reads one secret.
pub(crate) async fn fetch(
    auth: &AzureAuth,
    r: &KeyVaultRef,
    limit: Duration,
) -> Result<Secret, SecretError> {
    let credential = identity::credential(auth)
        .await
        .map_err(|e| r.error(e.to_string()))?;
    let client = SecretClient::new(
        &format!("https://{}/", r.host),
        credential,
        Some(SecretClientOptions {
            client_options: azure_core::http::ClientOptions {
                // A few quick retries inside the read's limit, instead of the SDK's eight
                // over a minute: a vault that cannot be reached is reported in seconds.
                retry: azure_core::http::RetryOptions::exponential(
                    azure_core::http::ExponentialRetryOptions {
                        max_retries: 3,
                        max_total_elapsed: azure_core::time::Duration::try_from(limit / 2)
                            .unwrap_or(azure_core::time::Duration::seconds(10)),
                        ..Default::default()
                    },
                ),
                ..client_options()
            },
            ..Default::default()
        }),
    )
    .map_err(|e| r.error(error_text(&e)))?;
    let options = SecretClientGetSecretOptions {
        secret_version: r.version.clone(),
        ..Default::default()
    };
    let response = client
        .get_secret(&r.name, Some(options))
        .await
        .map_err(|e| r.error(describe(&e)))?;
    let secret = response
        .into_model()
        .map_err(|e| r.error(format!("unreadable answer: {}", error_text(&e))))?;
    let value = secret
        .value
        .ok_or_else(|| r.error("the answer holds no value".into()))?;
    Ok(Secret::new(value))
}

/// What went wrong, for people: the status and Key Vault's error code, with a hint.
fn describe(e: &azure_core::Error) -> String {
    let code = match e.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
        _ => None,
    };
    match e.http_status().map(u16::from) {
        Some(404) => format!(
            "not found ({}); check the name, and `az keyvault secret list --vault-name <vault>`",
            code.as_deref().unwrap_or("404")
        ),
        Some(403) => format!(
            "access denied ({}): the signed-in identity needs the `Key Vault Secrets User` role (or a `get` access policy) on the vault",
            code.as_deref().unwrap_or("403")
        ),
        Some(401) => format!(
            "not signed in ({}): {}",
            code.as_deref().unwrap_or("401"),
            error_text(e)
        ),
        Some(status) => format!("Key Vault answered {status} {}", code.unwrap_or_default()),
        None => {
            let text = error_text(e);
            if text.contains("dns error") || text.contains("failed to lookup address") {
                // The chain of wrappers says nothing the last cause does not.
                let cause = text.rsplit(": ").next().unwrap_or(&text);
                format!(
                    "the vault's address cannot be found ({cause}): check the vault's name and this machine's network"
                )
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_hosts_and_versions() {
        let r = KeyVaultRef::parse("keyvault://kv-prod/db-password").unwrap();
        assert_eq!(r.host, "kv-prod.vault.azure.net");
        assert_eq!((r.name.as_str(), r.version), ("db-password", None));
        let r = KeyVaultRef::parse("keyvault://kv.vault.azure.cn/a/0123abc").unwrap();
        assert_eq!(r.host, "kv.vault.azure.cn");
        assert_eq!(r.version.as_deref(), Some("0123abc"));
        for bad in [
            "keyvault://kv",
            "keyvault://kv/",
            "keyvault://kv/a/b/c",
            "keyvault:///a",
            "keyvault://kv/a b",
        ] {
            assert!(KeyVaultRef::parse(bad).is_err(), "{bad}");
        }
    }
}
