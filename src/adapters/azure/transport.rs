//! The HTTP transport of every Azure client, with one seam: `CUTOVER_AZURE_REDIRECT`.
//!
//! Everything that carries an Azure bearer token insists on `https` (the identity
//! authority, Key Vault, Blob Storage with Entra), so local emulators and test fakes
//! cannot simply be given an `http://127.0.0.1` address. Instead the real `https` URLs are
//! kept and the transport sends requests for chosen hosts to a local address:
//! `CUTOVER_AZURE_REDIRECT="login.microsoftonline.com=http://127.0.0.1:8400,vault.azure.net=http://127.0.0.1:8400"`.
//! A host matches itself and its subdomains. Only loopback targets are accepted, so the
//! variable cannot send tokens off the machine.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use azure_core::http::{AsyncRawResponse, ClientOptions, HttpClient, Request, Transport};
use url::Url;

/// The environment variable read for redirects.
pub(crate) const REDIRECT_ENV: &str = "CUTOVER_AZURE_REDIRECT";

/// Host → local base URL pairs from [`REDIRECT_ENV`].
#[derive(Debug, Default, Clone)]
pub(crate) struct Redirects(Vec<(String, Url)>);

impl Redirects {
    /// Parses `host=http://127.0.0.1:port,...`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (host, target) = item.split_once('=').ok_or_else(|| {
                format!("{REDIRECT_ENV}: `{item}` is not `host=http://127.0.0.1:PORT`")
            })?;
            let target = Url::parse(target.trim())
                .map_err(|e| format!("{REDIRECT_ENV}: `{target}` is not a URL: {e}"))?;
            let loopback = matches!(target.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
            if !loopback || !matches!(target.scheme(), "http" | "https") {
                return Err(format!(
                    "{REDIRECT_ENV}: `{target}` must be an http(s) address on this machine (127.0.0.1, localhost or [::1])"
                ));
            }
            pairs.push((host.trim().to_ascii_lowercase(), target));
        }
        Ok(Self(pairs))
    }

    /// The redirects of this process, read once.
    pub(crate) fn current() -> &'static Self {
        static CURRENT: OnceLock<Redirects> = OnceLock::new();
        CURRENT.get_or_init(|| match std::env::var(REDIRECT_ENV) {
            Ok(text) => Self::parse(&text).unwrap_or_else(|e| {
                tracing::error!("{e}; ignoring it");
                Self::default()
            }),
            Err(_) => Self::default(),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Rewrites `url` in place when its host is redirected.
    pub(crate) fn apply(&self, url: &mut Url) {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let Some((_, base)) = self
            .0
            .iter()
            .find(|(h, _)| host == *h || host.ends_with(&format!(".{h}")))
        else {
            return;
        };
        // Both are special schemes, and the host is a loopback name or address: these
        // setters cannot fail.
        let _ = url.set_scheme(base.scheme());
        let _ = url.set_host(base.host_str());
        let _ = url.set_port(base.port_or_known_default());
    }
}

/// An SDK transport that applies [`Redirects`] before sending.
#[derive(Debug)]
struct RedirectingClient {
    inner: reqwest::Client,
    redirects: Redirects,
}

#[async_trait]
impl HttpClient for RedirectingClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let mut request = request.clone();
        self.redirects.apply(request.url_mut());
        self.inner.execute_request(&request).await
    }
}

/// Client options for every Azure SDK client: the SDK's own transport, or the redirecting
/// one when [`REDIRECT_ENV`] is set.
pub(crate) fn client_options() -> ClientOptions {
    static CLIENT: OnceLock<Arc<RedirectingClient>> = OnceLock::new();
    let redirects = Redirects::current();
    if redirects.is_empty() {
        return ClientOptions::default();
    }
    let client = CLIENT.get_or_init(|| {
        tracing::warn!(
            "{REDIRECT_ENV} is set: Azure requests for some hosts go to local addresses"
        );
        Arc::new(RedirectingClient {
            inner: reqwest::Client::builder()
                .no_gzip()
                .no_deflate()
                .build()
                .unwrap_or_default(),
            redirects: redirects.clone(),
        })
    });
    ClientOptions {
        transport: Some(Transport::new(client.clone())),
        ..ClientOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_a_host_and_its_subdomains_to_loopback_only() {
        let r = Redirects::parse("vault.azure.net=http://127.0.0.1:9000").unwrap();
        let mut u = Url::parse("https://kv1.vault.azure.net/secrets/a/?api-version=1").unwrap();
        r.apply(&mut u);
        assert_eq!(u.as_str(), "http://127.0.0.1:9000/secrets/a/?api-version=1");
        let mut other = Url::parse("https://management.azure.com/x").unwrap();
        r.apply(&mut other);
        assert_eq!(other.as_str(), "https://management.azure.com/x");
        assert!(Redirects::parse("vault.azure.net=http://10.0.0.1:9000").is_err());
        assert!(Redirects::parse("vault.azure.net").is_err());
    }
}
