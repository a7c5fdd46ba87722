//! A small Azure Resource Manager client: bearer token from the environment's credential,
//! `api-version` on every request, ARM error bodies turned into messages, throttling and
//! outages retried, and long-running operations followed to the end.
//!
//! There is no maintained management-plane crate for azure_core 1.x, so requests go
//! through reqwest. Throttling (429) and 5xx answers are retried a few times, waiting as
//! long as `Retry-After` (seconds or an HTTP date) or `retry-after-ms` asks; what still
//! fails is reported as transient so a step's `retries:` applies. A 201/202 answer with an
//! `Azure-AsyncOperation` header is polled there until `Succeeded`, `Failed` or `Canceled`
//! (then the resource is read again); with only `Location`, that URL is polled while it
//! answers 202. A final `provisioningState` of `Failed` is an error. Every wait is bounded
//! by the caller's deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use super::identity::{self, AzureAuth, error_text};
use super::transport::Redirects;
use super::{ARM_SCOPE, ARM_URL};

/// Tries per request (the first and three retries) for 429, 5xx and lost connections.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest `Retry-After` honoured by waiting; longer fails the request as transient.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Poll interval of an operation whose answers carry no `Retry-After`.
const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// An ARM request that failed, worth another try when `transient`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ArmError {
    pub message: String,
    pub transient: bool,
    /// HTTP status of the refusal, if there was an answer.
    pub status: Option<u16>,
}

/// An [`Arm`] client made on first use, so building an adapter never signs in.
pub(crate) struct LazyArm {
    auth: AzureAuth,
    cell: tokio::sync::OnceCell<Arm>,
}

impl LazyArm {
    pub(crate) fn new(auth: AzureAuth) -> Self {
        Self {
            auth,
            cell: tokio::sync::OnceCell::new(),
        }
    }

    pub(crate) async fn get(&self) -> Result<&Arm, ArmError> {
        self.cell
            .get_or_try_init(|| async {
                let fail = |message: String| ArmError {
                    message,
                    transient: false,
                    status: None,
                };
                let credential = identity::credential(&self.auth)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                Arm::new(credential).map_err(fail)
            })
            .await
    }
}

pub(crate) struct Arm {
    http: reqwest::Client,
    base: Url,
    credential: Arc<dyn TokenCredential>,
}

impl Arm {
    pub(crate) fn new(credential: Arc<dyn TokenCredential>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            // The token must not follow a redirect anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: Url::parse(ARM_URL).expect("valid constant"),
            credential,
        })
    }

    /// `base + path?api-version=..`.
    pub(crate) fn url(&self, path: &str, api_version: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        url
    }

    async fn bearer(&self) -> Result<HeaderValue, ArmError> {
        let token = self
            .credential
            .get_token(&[ARM_SCOPE], None)
            .await
            .map_err(|e| ArmError {
                message: format!("cannot sign in to Azure: {}", error_text(&e)),
                transient: false,
                status: None,
            })?;
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.token.secret()))
            .map_err(|_| ArmError {
                message: "the Azure token is not a valid header value".into(),
                transient: false,
                status: None,
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Sends one request (retrying throttling and outages) and returns the raw answer of a
    /// 2xx. `what` names the operation for messages.
    async fn once(
        &self,
        what: &str,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<(StatusCode, HeaderMap, Value), ArmError> {
        let shown = format!("{method} {}", url.path());
        let fail = |why: String, transient: bool, status: Option<u16>| ArmError {
            message: format!("{what} ({shown}) failed: {why}"),
            transient,
            status,
        };
        let mut sent = url.clone();
        Redirects::current().apply(&mut sent);
        let mut attempt = 1;
        loop {
            let mut request = self
                .http
                .request(method.clone(), sent.clone())
                .header(header::AUTHORIZATION, self.bearer().await?)
                .header(header::ACCEPT, "application/json");
            if let Some(body) = body {
                request = request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(body).expect("JSON values serialize"));
            } else if *method != Method::GET {
                request = request.header(header::CONTENT_LENGTH, "0");
            }
            let (asked, why, status) = match request.send().await {
                Err(e) => (None, error_text(&e), None),
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match response.bytes().await {
                        Err(e) => (
                            None,
                            format!("the answer was cut off: {}", error_text(&e)),
                            None,
                        ),
                        Ok(bytes) if status.is_success() => {
                            let value = if bytes.iter().all(u8::is_ascii_whitespace) {
                                Value::Null
                            } else {
                                serde_json::from_slice(&bytes).map_err(|e| {
                                    fail(
                                        format!("the answer is not JSON: {e}"),
                                        false,
                                        Some(status.as_u16()),
                                    )
                                })?
                            };
                            return Ok((status, headers, value));
                        }
                        Ok(bytes) => {
                            let why = error_text_of(status, &bytes);
                            if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error()
                            {
                                return Err(fail(
                                    with_hint(status, why),
                                    false,
                                    Some(status.as_u16()),
                                ));
                            }
                            (retry_after(&headers), why, Some(status.as_u16()))
                        }
                    }
                }
            };
            if let Some(asked) = asked
                && asked > LONGEST_RETRY_AFTER
            {
                return Err(fail(
                    format!(
                        "{why}; Azure asks to wait {}s before trying again",
                        asked.as_secs()
                    ),
                    true,
                    status,
                ));
            }
            if attempt >= ATTEMPTS {
                return Err(fail(format!("{why} (after {attempt} tries)"), true, status));
            }
            let wait = asked.unwrap_or(FIRST_BACKOFF * 2u32.pow(attempt - 1));
            tracing::warn!(
                "{what} ({shown}): {why}; trying again in {}ms",
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// `GET path`.
    pub(crate) async fn get(
        &self,
        what: &str,
        path: &str,
        api_version: &str,
    ) -> Result<Value, ArmError> {
        let url = self.url(path, api_version);
        Ok(self.once(what, &Method::GET, &url, None).await?.2)
    }

    /// `GET` of a list's `nextLink` (a full URL): only on Resource Manager itself, so the
    /// token goes nowhere else.
    pub(crate) async fn get_next(&self, what: &str, link: &str) -> Result<Value, ArmError> {
        let url = Url::parse(link)
            .ok()
            .filter(|u| u.scheme() == self.base.scheme() && u.host() == self.base.host())
            .ok_or_else(|| ArmError {
                message: format!(
                    "{what}: Azure answered with a next page at `{link}`, which is not on Resource Manager"
                ),
                transient: false,
                status: None,
            })?;
        Ok(self.once(what, &Method::GET, &url, None).await?.2)
    }

    /// A request that may start a long-running operation, followed until it ends or
    /// `deadline` passes. Returns the final resource (PUT/PATCH), the operation's result
    /// (POST), or `Null` (DELETE).
    pub(crate) async fn send(
        &self,
        what: &str,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Value, ArmError> {
        let url = self.url(path, api_version);
        let (status, headers, value) = self.once(what, &method, &url, body).await?;
        let async_op = header_url(&headers, "azure-asyncoperation");
        let location = header_url(&headers, "location");
        if !matches!(status.as_u16(), 201 | 202) || (async_op.is_none() && location.is_none()) {
            return check_provisioning(what, value);
        }
        let mut wait = retry_after(&headers).unwrap_or(DEFAULT_POLL);
        let late = |op: &Url| ArmError {
            message: format!(
                "{what} is still running in Azure after the time allowed (operation {}); it may still finish: look at the resource in the Azure portal before trying again",
                op.path()
            ),
            transient: false,
            status: None,
        };
        if let Some(op) = async_op {
            loop {
                sleep_until_or(deadline, wait)
                    .await
                    .map_err(|()| late(&op))?;
                let (_, headers, status_body) = self
                    .once(
                        &format!("{what}: reading its progress"),
                        &Method::GET,
                        &op,
                        None,
                    )
                    .await?;
                wait = retry_after(&headers).unwrap_or(DEFAULT_POLL);
                let state = status_body["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                match state.as_str() {
                    "succeeded" => break,
                    "failed" | "canceled" | "cancelled" => {
                        return Err(ArmError {
                            message: format!(
                                "{what} {state} in Azure: {}",
                                arm_error_summary(&status_body)
                                    .unwrap_or_else(|| "no reason given".into())
                            ),
                            transient: false,
                            status: None,
                        });
                    }
                    _ => {}
                }
            }
            // A POST's result is at its Location; a deleted resource has nothing to read.
            let final_url = match method {
                Method::POST => location,
                Method::DELETE => None,
                _ => Some(url),
            };
            return match final_url {
                Some(u) => {
                    let v = self
                        .once(
                            &format!("{what}: reading the result"),
                            &Method::GET,
                            &u,
                            None,
                        )
                        .await?
                        .2;
                    check_provisioning(what, v)
                }
                None => Ok(Value::Null),
            };
        }
        let location = location.expect("one of the two monitors is present");
        loop {
            sleep_until_or(deadline, wait)
                .await
                .map_err(|()| late(&location))?;
            let (status, headers, value) = self
                .once(
                    &format!("{what}: reading its progress"),
                    &Method::GET,
                    &location,
                    None,
                )
                .await?;
            if status == StatusCode::ACCEPTED {
                wait = retry_after(&headers).unwrap_or(DEFAULT_POLL);
                continue;
            }
            return check_provisioning(what, value);
        }
    }
}

/// Sleeps `wait`, or fails when that would pass `deadline`.
async fn sleep_until_or(deadline: Instant, wait: Duration) -> Result<(), ()> {
    let now = Instant::now();
    if now >= deadline {
        return Err(());
    }
    tokio::time::sleep(wait.min(deadline - now)).await;
    Ok(())
}

fn check_provisioning(what: &str, value: Value) -> Result<Value, ArmError> {
    let state = value["properties"]["provisioningState"]
        .as_str()
        .unwrap_or_default();
    if state.eq_ignore_ascii_case("failed") {
        return Err(ArmError {
            message: format!("{what}: Azure reports the resource's provisioning as Failed"),
            transient: false,
            status: None,
        });
    }
    Ok(value)
}

fn header_url(headers: &HeaderMap, name: &str) -> Option<Url> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Url::parse(v.trim()).ok())
}

/// `Retry-After` in seconds or as an HTTP date, else `retry-after-ms` /
/// `x-ms-retry-after-ms`.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc2822(v) {
            let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
            return Some(wait.to_std().unwrap_or_default());
        }
    }
    ["retry-after-ms", "x-ms-retry-after-ms"]
        .into_iter()
        .find_map(|n| text(n).and_then(|v| v.parse::<u64>().ok()))
        .map(Duration::from_millis)
}

/// `Code: message` of an ARM error body (`{"error": {"code", "message"}}`).
fn arm_error_summary(body: &Value) -> Option<String> {
    let error = body.get("error")?;
    let code = error["code"].as_str().unwrap_or_default();
    let message = error["message"].as_str().unwrap_or_default();
    match (code.is_empty(), message.is_empty()) {
        (true, true) => None,
        (false, true) => Some(code.to_owned()),
        (true, false) => Some(message.to_owned()),
        (false, false) => Some(format!("{code}: {message}")),
    }
}

fn error_text_of(status: StatusCode, bytes: &[u8]) -> String {
    let parsed = serde_json::from_slice::<Value>(bytes).ok();
    if let Some(summary) = parsed.as_ref().and_then(arm_error_summary) {
        return format!("{status}: {summary}");
    }
    let text = String::from_utf8_lossy(bytes);
    let text: String = text.trim().chars().take(300).collect();
    if text.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {text}")
    }
}

fn with_hint(status: StatusCode, why: String) -> String {
    match status.as_u16() {
        401 => format!("{why} (the token was refused: check `azure.tenant` and the credential)"),
        403 => format!(
            "{why} (the signed-in identity lacks a role on this resource, e.g. Contributor)"
        ),
        404 => format!("{why} (check the subscription, resource group and name)"),
        _ => why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        let mut h = HeaderMap::new();
        h.insert("x-ms-retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }

    #[test]
    fn arm_errors_are_code_and_message() {
        let body = br#"{"error":{"code":"ContainerAppNotFound","message":"The app was not found.","innererror":"x"}}"#;
        assert_eq!(
            error_text_of(StatusCode::NOT_FOUND, body),
            "404 Not Found: ContainerAppNotFound: The app was not found."
        );
    }
}
