//! Signing in to Azure: the credential an environment's `azure:` block chooses, built from
//! azure_identity's credentials.
//!
//! The SDK has no default chain, so `credential: auto` is one here: it tries, in order,
//! workload identity (when `AZURE_FEDERATED_TOKEN_FILE` is set, or GitHub Actions offers
//! its OIDC token), a client secret (when one is configured or `AZURE_CLIENT_SECRET` is
//! set), managed identity (when `IDENTITY_ENDPOINT` is set or the instance metadata
//! service answers) and the Azure CLI, and keeps the first that returns a token. When none does, the error names each
//! credential and why it was skipped or failed. Credentials are built once per process
//! and setting, so every Azure client of a run shares one token cache.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::{
    AccessToken, Secret as SdkSecret, TokenCredential, TokenRequestOptions,
};
use azure_core::error::ErrorKind;
use azure_core::http::ClientMethodOptions;
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, AzurePipelinesCredential,
    AzurePipelinesCredentialOptions, ClientAssertion, ClientAssertionCredential,
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use super::transport::{Redirects, client_options};
use crate::adapters::build::BuildError;
use crate::adapters::build::Resolve;
use crate::config::deploy_file::{AzureConfig, AzureCredentialKind};
use crate::secret::Secret;

/// Longest one credential may take to return a token before the chain moves on.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(60);
/// How long `auto` waits for the instance metadata service to answer.
const IMDS_PROBE: Duration = Duration::from_secs(2);
const IMDS_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// An environment's Azure sign-in settings, resolved (references expanded, defaults from
/// the `AZURE_*` environment variables applied when the credential is built).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct AzureAuth {
    pub credential: AzureCredentialKind,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub service_connection: Option<String>,
    pub subscription: Option<String>,
}

impl AzureAuth {
    /// Resolves an `azure:` block (none: `credential: auto` and the environment variables).
    pub(crate) fn from_config(
        config: Option<&AzureConfig>,
        resolver: &dyn Resolve,
    ) -> Result<Self, BuildError> {
        let Some(c) = config else {
            return Ok(Self::default());
        };
        let text =
            |t: &Option<crate::config::deploy_file::Text>| -> Result<Option<String>, BuildError> {
                Ok(match t {
                    Some(t) => Some(resolver.text(t)?.trim().to_owned()).filter(|s| !s.is_empty()),
                    None => None,
                })
            };
        Ok(Self {
            credential: c.credential,
            tenant: text(&c.tenant)?,
            client_id: text(&c.client_id)?,
            client_secret: match &c.client_secret {
                Some(t) => Some(resolver.credential(t)?),
                None => None,
            },
            service_connection: text(&c.service_connection)?,
            subscription: text(&c.subscription)?,
        })
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The token credential for these settings, shared by every client of the process.
pub(crate) async fn credential(
    auth: &AzureAuth,
) -> Result<Arc<dyn TokenCredential>, IdentityError> {
    Ok(chain(auth).await?)
}

/// Like [`credential`], as the chain itself, which can say which credential it used.
pub(crate) async fn chain(auth: &AzureAuth) -> Result<Arc<Chain>, IdentityError> {
    static CACHE: OnceLock<Mutex<HashMap<AzureAuth, Arc<Chain>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(found) = cache.lock().expect("not poisoned").get(auth) {
        return Ok(found.clone());
    }
    let built = Arc::new(build(auth).await?);
    Ok(cache
        .lock()
        .expect("not poisoned")
        .entry(auth.clone())
        .or_insert(built)
        .clone())
}

/// The credential for `auth`, built on first use: for adapters made in synchronous setup
/// code (the blob store and lock) that must not sign in unless they are used.
pub(crate) fn lazy(auth: AzureAuth) -> Arc<dyn TokenCredential> {
    Arc::new(Lazy {
        auth,
        chain: tokio::sync::OnceCell::new(),
    })
}

#[derive(Debug)]
struct Lazy {
    auth: AzureAuth,
    chain: tokio::sync::OnceCell<Arc<Chain>>,
}

#[async_trait]
impl TokenCredential for Lazy {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chain = self
            .chain
            .get_or_try_init(|| chain(&self.auth))
            .await
            .map_err(|e| failure(&e.to_string()))?;
        chain.get_token(scopes, options).await
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityError {
    /// The settings cannot make the chosen credential.
    #[error("Azure credential `{kind}`: {message}")]
    Invalid { kind: &'static str, message: String },
}

/// One link of the chain: a built credential, or why it was left out.
enum Link {
    Ready(&'static str, Arc<dyn TokenCredential>),
    Skipped(&'static str, String),
}

/// The credentials to try, in order; the first to return a token is kept.
pub(crate) struct Chain {
    setting: &'static str,
    links: Vec<Link>,
    chosen: Mutex<Option<usize>>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("setting", &self.setting)
            .field("chosen", &self.chosen())
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// The credential that returned the last token, if any did yet.
    pub(crate) fn chosen(&self) -> Option<&'static str> {
        let index = (*self.chosen.lock().expect("not poisoned"))?;
        match &self.links[index] {
            Link::Ready(name, _) => Some(name),
            Link::Skipped(..) => None,
        }
    }

    /// The configured setting: `auto`, `managed-identity`...
    pub(crate) fn setting(&self) -> &'static str {
        self.setting
    }
}

#[async_trait]
impl TokenCredential for Chain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = *self.chosen.lock().expect("not poisoned");
        if let Some(i) = chosen
            && let Link::Ready(name, credential) = &self.links[i]
        {
            return credential.get_token(scopes, options).await.map_err(|e| {
                failure(&format!(
                    "Azure credential `{name}` failed: {}",
                    error_text(&e)
                ))
            });
        }
        let mut tried = Vec::new();
        for (i, link) in self.links.iter().enumerate() {
            match link {
                Link::Skipped(name, why) => tried.push(format!("{name}: skipped, {why}")),
                Link::Ready(name, credential) => {
                    let attempt = tokio::time::timeout(
                        ATTEMPT_LIMIT,
                        credential.get_token(scopes, options.clone()),
                    )
                    .await;
                    match attempt {
                        Ok(Ok(token)) => {
                            *self.chosen.lock().expect("not poisoned") = Some(i);
                            tracing::debug!("Azure credential: {name}");
                            return Ok(token);
                        }
                        Ok(Err(e)) => tried.push(format!("{name}: {}", error_text(&e))),
                        Err(_) => tried.push(format!(
                            "{name}: no token after {}s",
                            ATTEMPT_LIMIT.as_secs()
                        )),
                    }
                }
            }
        }
        Err(failure(&format!(
            "no Azure credential returned a token (credential: {}); tried:\n  - {}",
            self.setting,
            tried.join("\n  - ")
        )))
    }
}

fn failure(message: &str) -> azure_core::Error {
    azure_core::Error::with_message(ErrorKind::Credential, message.to_owned())
}

/// An SDK error as one readable text: its message and its causes, without repeats.
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        let text = text.trim();
        // The pipeline's wrapper says nothing a person can act on.
        let text = text
            .strip_prefix("non-transport error occurred which will not be retried")
            .map_or(text, |rest| rest.trim_start_matches([':', ' ']));
        if !text.is_empty() && !parts.iter().any(|p| p.contains(text)) {
            parts.push(text.to_owned());
        }
        next = err.source();
    }
    parts.join(": ")
}

fn name_of(kind: AzureCredentialKind) -> &'static str {
    match kind {
        AzureCredentialKind::Auto => "auto",
        AzureCredentialKind::WorkloadIdentity => "workload-identity",
        AzureCredentialKind::ManagedIdentity => "managed-identity",
        AzureCredentialKind::ClientSecret => "client-secret",
        AzureCredentialKind::AzureCli => "azure-cli",
        AzureCredentialKind::AzurePipelines => "azure-pipelines",
    }
}

async fn build(auth: &AzureAuth) -> Result<Chain, IdentityError> {
    use AzureCredentialKind as K;
    let kinds: Vec<K> = match auth.credential {
        K::Auto => vec![
            K::WorkloadIdentity,
            K::ClientSecret,
            K::ManagedIdentity,
            K::AzureCli,
        ],
        one => vec![one],
    };
    let auto = auth.credential == K::Auto;
    let mut links = Vec::new();
    for kind in kinds {
        let name = name_of(kind);
        let link = match one(kind, auth, auto).await {
            Ok(credential) => Link::Ready(name, credential),
            Err(why) if auto => Link::Skipped(name, why),
            Err(message) => {
                return Err(IdentityError::Invalid {
                    kind: name,
                    message,
                });
            }
        };
        links.push(link);
    }
    Ok(Chain {
        setting: name_of(auth.credential),
        links,
        chosen: Mutex::new(None),
    })
}

/// Builds one credential, or says why it does not apply. In `auto`, a credential whose
/// marker (token file, secret, endpoint) is absent is skipped rather than tried.
async fn one(
    kind: AzureCredentialKind,
    auth: &AzureAuth,
    auto: bool,
) -> Result<Arc<dyn TokenCredential>, String> {
    use AzureCredentialKind as K;
    let tenant = auth.tenant.clone().or_else(|| env("AZURE_TENANT_ID"));
    let client_id = auth.client_id.clone().or_else(|| env("AZURE_CLIENT_ID"));
    let sdk = |e: azure_core::Error| error_text(&e);
    match kind {
        K::Auto => unreachable!("auto is expanded into its links"),
        K::WorkloadIdentity => {
            let Some(file) = env("AZURE_FEDERATED_TOKEN_FILE") else {
                if let (Some(url), Some(token)) = (
                    env("ACTIONS_ID_TOKEN_REQUEST_URL"),
                    env("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
                ) {
                    let tenant =
                        tenant.ok_or("no tenant: set `azure.tenant` or AZURE_TENANT_ID")?;
                    let client_id = client_id
                        .ok_or("no client id: set `azure.client_id` or AZURE_CLIENT_ID")?;
                    let assertion = GitHubOidc {
                        url,
                        token: Secret::new(token),
                    };
                    let credential = ClientAssertionCredential::new(
                        tenant,
                        client_id,
                        assertion,
                        Some(ClientAssertionCredentialOptions {
                            client_options: client_options(),
                        }),
                    )
                    .map_err(sdk)?;
                    return Ok(credential);
                }
                return Err("AZURE_FEDERATED_TOKEN_FILE is not set (nor GitHub Actions' ACTIONS_ID_TOKEN_REQUEST_URL: `permissions: id-token: write`)".into());
            };
            let tenant = tenant.ok_or("no tenant: set `azure.tenant` or AZURE_TENANT_ID")?;
            let client_id =
                client_id.ok_or("no client id: set `azure.client_id` or AZURE_CLIENT_ID")?;
            let credential =
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions {
                        client_options: client_options(),
                    },
                    client_id: Some(client_id),
                    tenant_id: Some(tenant),
                    token_file_path: Some(PathBuf::from(file)),
                }))
                .map_err(sdk)?;
            Ok(credential)
        }
        K::ClientSecret => {
            let secret = auth
                .client_secret
                .clone()
                .or_else(|| env("AZURE_CLIENT_SECRET").map(Secret::new));
            let Some(secret) = secret else {
                return Err(
                    "no client secret: set `azure.client_secret` or AZURE_CLIENT_SECRET".into(),
                );
            };
            let tenant = tenant.ok_or("no tenant: set `azure.tenant` or AZURE_TENANT_ID")?;
            let client_id =
                client_id.ok_or("no client id: set `azure.client_id` or AZURE_CLIENT_ID")?;
            let credential = ClientSecretCredential::new(
                &tenant,
                client_id,
                SdkSecret::new(secret.expose().to_owned()),
                Some(ClientSecretCredentialOptions {
                    client_options: client_options(),
                }),
            )
            .map_err(sdk)?;
            Ok(credential)
        }
        K::ManagedIdentity => {
            if auto && env("IDENTITY_ENDPOINT").is_none() && !imds_answers().await {
                return Err(format!(
                    "IDENTITY_ENDPOINT is not set and the instance metadata service ({IMDS_URL}) did not answer within {}s",
                    IMDS_PROBE.as_secs()
                ));
            }
            let credential =
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: auth.client_id.clone().map(UserAssignedId::ClientId),
                    client_options: client_options(),
                }))
                .map_err(sdk)?;
            Ok(credential)
        }
        K::AzureCli => {
            let credential = AzureCliCredential::new(Some(AzureCliCredentialOptions {
                tenant_id: auth.tenant.clone(),
                ..Default::default()
            }))
            .map_err(sdk)?;
            Ok(credential)
        }
        K::AzurePipelines => {
            let tenant = tenant.ok_or("no tenant: set `azure.tenant` or AZURE_TENANT_ID")?;
            let client_id =
                client_id.ok_or("no client id: set `azure.client_id` or AZURE_CLIENT_ID")?;
            let connection = auth
                .service_connection
                .clone()
                .or_else(|| env("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID"))
                .ok_or("no service connection: set `azure.service_connection` or AZURESUBSCRIPTION_SERVICE_CONNECTION_ID")?;
            let token = env("SYSTEM_ACCESSTOKEN")
                .ok_or("SYSTEM_ACCESSTOKEN is not set (map it into the step: `env: { SYSTEM_ACCESSTOKEN: $(System.AccessToken) }`)")?;
            let credential = AzurePipelinesCredential::new(
                tenant,
                client_id,
                &connection,
                SdkSecret::new(token),
                Some(AzurePipelinesCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions {
                        client_options: client_options(),
                    },
                }),
            )
            .map_err(sdk)?;
            Ok(credential)
        }
    }
}

/// GitHub Actions' OIDC token as the federated client assertion (a job with
/// `permissions: id-token: write`), asked for the Entra audience each time a token is
/// needed, since it expires after minutes.
#[derive(Debug)]
struct GitHubOidc {
    url: String,
    token: Secret,
}

#[async_trait]
impl ClientAssertion for GitHubOidc {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        #[derive(serde::Deserialize)]
        struct Answer {
            value: String,
        }
        let fail = |why: String| failure(&format!("GitHub Actions OIDC token: {why}"));
        let mut url = url::Url::parse(&self.url)
            .map_err(|e| fail(format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("audience", "api://AzureADTokenExchange");
        Redirects::current().apply(&mut url);
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(self.token.expose())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| fail(error_text(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("GitHub answered {status}")));
        }
        let bytes = response.bytes().await.map_err(|e| fail(error_text(&e)))?;
        let answer: Answer =
            serde_json::from_slice(&bytes).map_err(|e| fail(format!("unreadable answer: {e}")))?;
        Ok(answer.value)
    }
}

/// Whether the instance metadata service answers at all (any HTTP answer counts: a 400
/// means it is there but no identity is assigned, which the credential then reports).
async fn imds_answers() -> bool {
    let Ok(mut url) = url::Url::parse(&format!("{IMDS_URL}?api-version=2018-02-01")) else {
        return false;
    };
    Redirects::current().apply(&mut url);
    let Ok(client) = reqwest::Client::builder().timeout(IMDS_PROBE).build() else {
        return false;
    };
    client
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .is_ok()
}

/// For `cutover check`: when the environment uses Azure (an `azure:` block or an Azure
/// platform), signs in for Resource Manager and names the credential that returned a
/// token. Never shows the token.
pub(crate) async fn check_environment(
    config: &crate::config::Config,
    environment: &str,
    resolver: &dyn Resolve,
) -> Result<Option<String>, String> {
    use crate::config::deploy_file::PlatformConfig;
    let Ok(env) = config.environment(environment) else {
        return Ok(None);
    };
    let azure_platform = matches!(
        env.platform,
        Some(PlatformConfig::AzureContainerApps(_) | PlatformConfig::AzureAppService(_))
    );
    if env.azure.is_none() && !azure_platform {
        return Ok(None);
    }
    let auth = AzureAuth::from_config(env.azure.as_ref(), resolver).map_err(|e| e.to_string())?;
    let chain = chain(&auth).await.map_err(|e| e.to_string())?;
    chain
        .get_token(&[super::ARM_SCOPE], None)
        .await
        .map_err(|e| error_text(&e))?;
    Ok(chain.chosen().map(|name| {
        if chain.setting() == name {
            name.to_owned()
        } else {
            format!("{name} (credential: {})", chain.setting())
        }
    }))
}
