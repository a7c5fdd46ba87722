//! A connection to one Azure Blob Storage container, shared by the backup store and the
//! blob deploy lock and journal: where the account is, how requests are signed, and how a
//! service error is told to a person.
//!
//! The account is a name (`mybackups` → `https://mybackups.blob.core.windows.net`), an
//! account URL, or an emulator's path-style URL (`http://127.0.0.1:10000/devstoreaccount1`,
//! where the account is the first path segment). Requests are signed with the account key
//! (Shared Key, which the SDK lacks, so it is a pipeline policy here), carry a SAS in their
//! query, or carry an Entra token from a credential (https only).

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::{Secret as AzureSecret, TokenCredential};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientOptions, Context as HttpContext, Request, Url};
use azure_storage_blob::models::StorageErrorCode;
use azure_storage_blob::{BlobContainerClient, BlobServiceClient, BlobServiceClientOptions};

use crate::secret::Secret;

/// How requests to the account are authorised.
pub enum Auth {
    /// The account key (base64), for Shared Key signing.
    Key(Secret),
    /// A SAS token (`sv=...&sig=...`), added to every request's query.
    Sas(Secret),
    /// Entra ID tokens for `https://storage.azure.com`.
    Token(Arc<dyn TokenCredential>),
}

impl Auth {
    fn describe(&self) -> &'static str {
        match self {
            Self::Key(_) => "account key",
            Self::Sas(_) => "SAS",
            Self::Token(_) => "Entra ID token",
        }
    }
}

/// Where an account is: its blob service URL and its name (Shared Key signs with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub url: Url,
    pub name: String,
}

impl Account {
    /// Reads `account:` from the config: a name, an account URL or a path-style URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.contains("://") {
            if text.len() < 3
                || text.len() > 24
                || !text
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            {
                return Err(format!(
                    "invalid storage account `{text}`: a name is 3 to 24 lowercase letters and digits; or give the blob service URL (`https://<account>.blob.core.windows.net`)"
                ));
            }
            let url = Url::parse(&format!("https://{text}.blob.core.windows.net/"))
                .map_err(|e| format!("invalid storage account `{text}`: {e}"))?;
            return Ok(Self {
                url,
                name: text.to_owned(),
            });
        }
        let mut url =
            Url::parse(text).map_err(|e| format!("invalid storage account URL `{text}`: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(format!(
                "invalid storage account URL `{text}`: expected http(s)://..."
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "invalid storage account URL `{}`: give a SAS in `sas:`, not in the URL",
                url.origin().ascii_serialization()
            ));
        }
        let segments: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let name = match segments.as_slice() {
            // Path-style (emulator): the account is the path. No trailing slash, or the
            // SDK would ask for `/account//container`.
            [account] => {
                url.set_path(&format!("/{account}"));
                account.clone()
            }
            [] => {
                url.set_path("/");
                let host = url.host_str().unwrap_or_default();
                host.split('.').next().unwrap_or_default().to_owned()
            }
            _ => {
                return Err(format!(
                    "invalid storage account URL `{text}`: give the account's blob service URL, without a container or blob path (the container goes in `container:`)"
                ));
            }
        };
        if name.is_empty() {
            return Err(format!(
                "invalid storage account URL `{text}`: no account name in it"
            ));
        }
        Ok(Self { url, name })
    }
}

/// Checks a container name against the service's rules, so a typo fails in the plan.
pub fn validate_container(name: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid container name `{name}`: 3 to 63 lowercase letters, digits and single hyphens"
        ))
    }
}

/// One container, with the client that talks to it.
#[derive(Clone)]
pub struct Container {
    pub client: Arc<BlobContainerClient>,
    pub account: Account,
    pub name: String,
    auth: &'static str,
}

impl Container {
    pub fn connect(account: Account, container: &str, auth: Auth) -> Result<Self, String> {
        validate_container(container)?;
        let auth_name = auth.describe();
        let mut url = account.url.clone();
        let mut options = BlobServiceClientOptions::default();
        let credential = match auth {
            Auth::Key(key) => {
                if azure_core::base64::decode(key.expose().trim()).is_err() {
                    return Err(
                        "the storage account key is not base64; a SAS goes in `sas:` instead of `key:`"
                            .into(),
                    );
                }
                options.client_options = ClientOptions {
                    per_try_policies: vec![Arc::new(SharedKeyPolicy {
                        account: account.name.clone(),
                        key: AzureSecret::new(key.expose().trim().to_owned()),
                    })],
                    ..ClientOptions::default()
                };
                None
            }
            Auth::Sas(sas) => {
                let sas = sas.expose().trim().trim_start_matches('?');
                if !sas.contains("sig=") {
                    return Err(
                        "the SAS has no `sig=`: give the whole SAS token (`sv=...&sig=...`)".into(),
                    );
                }
                url.set_query(Some(sas));
                None
            }
            Auth::Token(credential) => {
                if url.scheme() != "https" {
                    return Err(format!(
                        "an Entra ID token is only sent over https, and the account URL is {url}; use `key:` or `sas:` for an emulator"
                    ));
                }
                Some(credential)
            }
        };
        let service = BlobServiceClient::new(url, credential, Some(options))
            .map_err(|e| format!("cannot connect to storage account: {}", describe(&e)))?;
        Ok(Self {
            client: Arc::new(service.blob_container_client(container)),
            account,
            name: container.to_owned(),
            auth: auth_name,
        })
    }

    /// "container `backups` in storage account `acct` (URL)".
    pub fn describe(&self) -> String {
        let mut url = self.account.url.clone();
        url.set_query(None);
        format!(
            "container `{}` in storage account `{}` ({url})",
            self.name, self.account.name
        )
    }

    /// An error of a request about `what`, with a hint for the errors people make.
    pub fn error(&self, what: &str, e: &azure_core::Error) -> String {
        let hint = match error_code(e).as_deref() {
            Some("AuthenticationFailed" | "AuthorizationFailure" | "InvalidAuthenticationInfo")
            | None
                if e.http_status().is_some_and(|s| u16::from(s) == 403) =>
            {
                format!(
                    "; the {} was refused: check it belongs to account `{}`, is current and (for a SAS) allows read, add, create, write, delete and list on this container",
                    self.auth, self.account.name
                )
            }
            Some("ContainerNotFound") => format!(
                "; create container `{}` in account `{}` first",
                self.name, self.account.name
            ),
            _ => String::new(),
        };
        format!("{what} in {}: {}{hint}", self.describe(), describe(e))
    }
}

/// The storage error code of a failed request (`BlobNotFound`, `LeaseAlreadyPresent`, ...).
pub fn error_code(e: &azure_core::Error) -> Option<String> {
    match e.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
        _ => None,
    }
}

pub fn is_code(e: &azure_core::Error, code: &StorageErrorCode) -> bool {
    error_code(e).as_deref() == Some(code.as_ref())
}

/// A one-line account of an SDK error: status and code for a response, the chain of
/// causes otherwise. A SAS signature never appears in it.
pub fn describe(e: &azure_core::Error) -> String {
    let text = if let azure_core::error::ErrorKind::HttpResponse {
        status, error_code, ..
    } = e.kind()
    {
        format!(
            "{} {}",
            u16::from(*status),
            error_code.as_deref().unwrap_or("(no error code)")
        )
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        text
    };
    hide_sas(&text)
}

fn hide_sas(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("***");
        rest = &rest[i + 4..];
        let end = rest
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c == ')' || c.is_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Signs each try of a request with the account key (Shared Key), after the retry
/// policy so every retry carries a fresh date and signature.
#[derive(Debug)]
struct SharedKeyPolicy {
    account: String,
    key: AzureSecret,
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &HttpContext,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        request.insert_header(
            "x-ms-date",
            azure_core::time::to_rfc7231(&azure_core::time::OffsetDateTime::now_utc()),
        );
        let signature =
            azure_core::hmac::hmac_sha256(&string_to_sign(&self.account, request), &self.key)?;
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{signature}", self.account),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The Shared Key string to sign (service versions 2015-02-21 and later).
fn string_to_sign(account: &str, request: &Request) -> String {
    let headers = request.headers();
    let header = |name: &'static str| {
        headers
            .get_optional_str(&name.into())
            .unwrap_or_default()
            .to_owned()
    };
    let length = match headers.get_optional_str(&"content-length".into()) {
        Some(l) => l.to_owned(),
        None => request
            .body()
            .len()
            .map(|l| l.to_string())
            .unwrap_or_default(),
    };
    let length = if length == "0" { String::new() } else { length };
    let mut out = format!(
        "{}\n{}\n{}\n{length}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n",
        request.method().as_ref(),
        header("content-encoding"),
        header("content-language"),
        header("content-md5"),
        header("content-type"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    );
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-ms-"))
        .map(|(k, v)| (k.as_str().to_owned(), v.as_str().trim().to_owned()))
        .collect();
    ms.sort();
    for (k, v) in ms {
        out.push_str(&format!("{k}:{v}\n"));
    }
    out.push_str(&format!("/{account}{}", request.url().path()));
    let mut query: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for (k, v) in request.url().query_pairs() {
        query
            .entry(k.to_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    for (k, mut values) in query {
        values.sort();
        out.push_str(&format!("\n{k}:{}", values.join(",")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_by_name_url_and_path_style() {
        let a = Account::parse("mybackups").unwrap();
        assert_eq!(a.url.as_str(), "https://mybackups.blob.core.windows.net/");
        assert_eq!(a.name, "mybackups");
        let a = Account::parse("https://other.blob.core.windows.net/").unwrap();
        assert_eq!(a.name, "other");
        let a = Account::parse("http://127.0.0.1:10000/devstoreaccount1/").unwrap();
        assert_eq!(a.url.as_str(), "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(a.name, "devstoreaccount1");
        assert!(Account::parse("My_Backups").is_err());
        assert!(Account::parse("https://a.blob.core.windows.net/c/d").is_err());
        assert!(Account::parse("https://a.blob.core.windows.net/?sv=1&sig=x").is_err());
    }

    #[test]
    fn container_names() {
        assert!(validate_container("backups").is_ok());
        assert!(validate_container("Backups").is_err());
        assert!(validate_container("a--b").is_err());
        assert!(validate_container("ab").is_err());
    }

    #[test]
    fn sas_signatures_are_hidden() {
        assert_eq!(
            hide_sas("GET http://h/c?sv=1&sig=abc%2B&sp=r failed"),
            "GET http://h/c?sv=1&sig=***&sp=r failed"
        );
    }
}
