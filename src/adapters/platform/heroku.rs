//! Heroku, over the Platform API (`https://api.heroku.com`, `Accept:
//! application/vnd.heroku+json; version=3`, a bearer token).
//!
//! - state: `GET /apps/{app}` (the `maintenance` flag) and `GET /apps/{app}/formation`
//!   (the quantity of every process type: the scale targets are the process type names);
//! - maintenance: `PATCH /apps/{app}` `{"maintenance": true|false}`;
//! - scale: `PATCH /apps/{app}/formation/{type}` `{"quantity": n}`;
//! - restart: `DELETE /apps/{app}/dynos`.
//!
//! Rate limits and outages: a 429 or 5xx answer, or a lost connection, is retried here a few
//! times with backoff, waiting as long as `Retry-After` asks; what still fails is reported as
//! transient, so a step's `retries:` tries again. Every answer carries `RateLimit-Remaining`;
//! when it runs low, requests are spaced out to the rate the bucket refills at.
//! Error answers (`{"id": ..., "message": ...}`) become messages naming the app and the
//! operation. The token is only ever sent in the `Authorization` header (marked sensitive)
//! and registered with the redactor; no message contains it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use super::{Platform, PlatformError, PlatformState};
use crate::adapters::build::BuildError;
use crate::adapters::build::Resolve;
use crate::config::deploy_file::Text;
use crate::secret::Secret;

/// Where the Platform API lives unless `api_url` says otherwise.
pub(crate) const DEFAULT_API_URL: &str = "https://api.heroku.com";
/// The media type every request asks for; Heroku answers 406 to anything else.
pub(crate) const ACCEPT: &str = "application/vnd.heroku+json; version=3";
/// The environment variable read when `api_key` is not set.
pub(crate) const API_KEY_ENV: &str = "HEROKU_API_KEY";
/// Heroku stops a release phase (`release:` in the Procfile) after one hour.
pub(crate) const RELEASE_PHASE_LIMIT: Duration = Duration::from_secs(60 * 60);
/// What `cutover release` limits a pipeline without a `timeout:` to: five minutes short
/// of [`RELEASE_PHASE_LIMIT`], so a run that runs out of time still has time to roll back
/// before Heroku kills the release dyno.
pub(crate) const RELEASE_TIMEOUT: Duration = Duration::from_secs(55 * 60);

/// Tries per request (the first and three retries) for 429, 5xx and lost connections.
const ATTEMPTS: u32 = 4;
/// First wait before a retry without `Retry-After`; doubles with every retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest `Retry-After` honoured by waiting; a longer one fails the request as
/// transient (the step's `retries:` decide what happens next).
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Below this many requests left in the account's rate-limit bucket, slow down.
const LOW_REMAINING: u64 = 50;
/// The bucket refills about 75 requests a minute: one every 800ms.
const REFILL_INTERVAL: Duration = Duration::from_millis(800);
/// Most pages read from a list endpoint (`206 Partial Content` + `Next-Range`).
const MAX_PAGES: usize = 50;

pub(crate) struct HerokuPlatform {
    app: String,
    api: Url,
    token: Secret,
    client: reqwest::Client,
    /// `RateLimit-Remaining` of the last answer.
    remaining: Mutex<Option<u64>>,
}

/// One request, named for messages.
struct Call<'a> {
    /// What it does, for people: "turning maintenance on".
    what: String,
    method: Method,
    segments: Vec<&'a str>,
    body: Option<Value>,
}

impl HerokuPlatform {
    pub(crate) fn new(
        app: &Text,
        api_key: Option<&Text>,
        api_url: Option<&Text>,
        resolver: &dyn Resolve,
    ) -> Result<Self, BuildError> {
        let app_name = resolver.text(app)?.trim().to_owned();
        if app_name.is_empty()
            || !app_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(BuildError::Invalid(format!(
                "platform `heroku`: `app: {app_name}` is not a Heroku app name or id (letters, digits and dashes)"
            )));
        }
        let token = match api_key {
            Some(text) => resolver.credential(text)?,
            None => match crate::adapters::secrets::env::read(API_KEY_ENV) {
                Ok(value) => {
                    resolver.redactor().register(value.expose());
                    value
                }
                Err(_) => {
                    return Err(BuildError::Invalid(format!(
                        "platform `heroku` needs an API key: set `api_key:` (for example `${{secret:env:MY_TOKEN}}`) or the {API_KEY_ENV} environment variable (`heroku authorizations:create` makes a long-lived token)"
                    )));
                }
            },
        };
        let token = Secret::new(token.expose().trim());
        if token.expose().is_empty() {
            return Err(BuildError::Invalid(
                "platform `heroku`: the API key is empty".into(),
            ));
        }
        if token.expose().chars().any(char::is_control) {
            return Err(BuildError::Invalid(
                "platform `heroku`: the API key contains control characters".into(),
            ));
        }
        let raw_url = match api_url {
            Some(text) => resolver.text(text)?,
            None => DEFAULT_API_URL.to_owned(),
        };
        let api = parse_api_url(raw_url.trim()).map_err(BuildError::Invalid)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            // The token must not follow a redirect anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                BuildError::Invalid(format!(
                    "platform `heroku`: cannot start the HTTP client: {e}"
                ))
            })?;
        Ok(Self {
            app: app_name,
            api,
            token,
            client,
            remaining: Mutex::new(None),
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        url.path_segments_mut()
            .expect("checked when built: an http(s) URL has path segments")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// `GET /apps/x` for messages: the path as sent, never the host or token.
    fn shown(&self, call: &Call<'_>) -> String {
        format!("{} {}", call.method, self.url(&call.segments).path())
    }

    fn fail(&self, call: &Call<'_>, why: &str, transient: bool) -> PlatformError {
        PlatformError::Api {
            message: format!(
                "Heroku app `{}`: {} ({}) failed: {why}",
                self.app,
                call.what,
                self.shown(call)
            ),
            transient,
        }
    }

    /// Waits before a request while the rate-limit bucket is low.
    async fn pace(&self) {
        let remaining = *self.remaining.lock().expect("not poisoned");
        if let Some(wait) = pacing(remaining) {
            tracing::debug!(
                "Heroku rate limit low ({} requests left); waiting {}ms",
                remaining.unwrap_or(0),
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
        }
    }

    fn note_remaining(&self, headers: &HeaderMap) {
        if let Some(n) = headers
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            *self.remaining.lock().expect("not poisoned") = Some(n);
        }
    }

    /// Sends one request, retrying 429, 5xx and lost connections; returns the status,
    /// headers and body of a 2xx answer.
    async fn send(
        &self,
        call: &Call<'_>,
        range: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), PlatformError> {
        let url = self.url(&call.segments);
        let body = call
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).expect("JSON values serialize"));
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.token.expose()))
            .map_err(|_| self.fail(call, "the API key is not a valid header value", false))?;
        auth.set_sensitive(true);
        let mut attempt = 1;
        loop {
            self.pace().await;
            let mut request = self
                .client
                .request(call.method.clone(), url.clone())
                .header(header::ACCEPT, ACCEPT)
                .header(header::AUTHORIZATION, auth.clone());
            if let Some(body) = &body {
                request = request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            if let Some(range) = range {
                request = request.header(header::RANGE, range);
            }
            let (asked, why) = match request.send().await {
                Err(e) => (None, describe(&e)),
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    self.note_remaining(&headers);
                    let bytes = match response.bytes().await {
                        Ok(b) => b.to_vec(),
                        Err(e) => {
                            let why = format!("the answer was cut off: {}", describe(&e));
                            if attempt < ATTEMPTS {
                                self.wait_to_retry(call, attempt, None, &why).await;
                                attempt += 1;
                                continue;
                            }
                            return Err(self.fail(
                                call,
                                &format!("{why} (after {attempt} tries)"),
                                true,
                            ));
                        }
                    };
                    if status.is_success() {
                        return Ok((status, headers, bytes));
                    }
                    let why = error_text(status, &bytes);
                    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
                        return Err(self.fail(call, &with_hint(status, why), false));
                    }
                    (retry_after(&headers), why)
                }
            };
            if let Some(asked) = asked
                && asked > LONGEST_RETRY_AFTER
            {
                return Err(self.fail(
                    call,
                    &format!(
                        "{why}; Heroku asks to wait {}s before trying again",
                        asked.as_secs()
                    ),
                    true,
                ));
            }
            if attempt >= ATTEMPTS {
                return Err(self.fail(call, &format!("{why} (after {attempt} tries)"), true));
            }
            self.wait_to_retry(call, attempt, asked, &why).await;
            attempt += 1;
        }
    }

    async fn wait_to_retry(
        &self,
        call: &Call<'_>,
        attempt: u32,
        retry_after: Option<Duration>,
        why: &str,
    ) {
        let wait = retry_after.unwrap_or(FIRST_BACKOFF * 2u32.pow(attempt - 1));
        tracing::warn!(
            "Heroku app `{}`: {} ({}): {why}; trying again in {}ms",
            self.app,
            call.what,
            self.shown(call),
            wait.as_millis()
        );
        tokio::time::sleep(wait).await;
    }

    /// One request whose 2xx answer is a JSON object.
    async fn object(&self, call: &Call<'_>) -> Result<Value, PlatformError> {
        let (_, _, bytes) = self.send(call, None).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| self.fail(call, &format!("the answer is not JSON: {e}"), false))
    }

    /// A list endpoint, every page of it.
    async fn list(&self, call: &Call<'_>) -> Result<Vec<Value>, PlatformError> {
        let mut items = Vec::new();
        let mut range: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let (status, headers, bytes) = self.send(call, range.as_deref()).await?;
            let page: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| {
                self.fail(call, &format!("the answer is not a JSON list: {e}"), false)
            })?;
            items.extend(page);
            let next = headers
                .get("next-range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match next {
                Some(next) if status == StatusCode::PARTIAL_CONTENT => range = Some(next),
                _ => return Ok(items),
            }
        }
        Err(self.fail(
            call,
            &format!("more than {MAX_PAGES} pages of results"),
            false,
        ))
    }

    fn app_call(&self, what: String, method: Method, body: Option<Value>) -> Call<'_> {
        Call {
            what,
            method,
            segments: vec!["apps", &self.app],
            body,
        }
    }
}

/// Checks `api_url` and makes it a base that segments can be appended to.
fn parse_api_url(raw: &str) -> Result<Url, String> {
    let bad = |why: String| format!("platform `heroku`: `api_url: {raw}` {why}");
    let url = Url::parse(raw).map_err(|e| bad(format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL".into()));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(bad("must name a host".into()));
    }
    // The token goes with every request: never in clear text beyond this machine.
    let local = matches!(url.host(), Some(url::Host::Domain("localhost")))
        || matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
    if url.scheme() == "http" && !local {
        return Err(bad(
            "must be https:// (http:// is only for a local test server)".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(bad(
            "must be a plain base URL, without a query, fragment or credentials".into(),
        ));
    }
    Ok(url)
}

/// How long to wait before the next request, given the last `RateLimit-Remaining`.
fn pacing(remaining: Option<u64>) -> Option<Duration> {
    match remaining {
        Some(0) => Some(REFILL_INTERVAL * 2),
        Some(n) if n < LOW_REMAINING => Some(REFILL_INTERVAL),
        _ => None,
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// The text of an error answer: Heroku's `message` and `id`, else the start of the body.
fn error_text(status: StatusCode, body: &[u8]) -> String {
    let code = status.as_u16();
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["message"].is_string() || v["id"].is_string() => {
            // One line: Heroku's messages sometimes hold line breaks.
            let message = v["message"]
                .as_str()
                .unwrap_or("no message")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            match v["id"].as_str() {
                Some(id) => format!("{message} (HTTP {code} `{id}`)"),
                None => format!("{message} (HTTP {code})"),
            }
        }
        _ => {
            let text: String = String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(200)
                .collect();
            if text.is_empty() {
                format!("HTTP {code}")
            } else {
                format!("HTTP {code}: {text}")
            }
        }
    }
}

/// What to do about the errors people can fix.
fn with_hint(status: StatusCode, why: String) -> String {
    match status.as_u16() {
        401 => format!(
            "{why}; the API key was refused: check `api_key` (or {API_KEY_ENV}) is a current token"
        ),
        403 => format!("{why}; the API key's account may not change this app"),
        406 => format!("{why}; this API URL does not speak Platform API version 3"),
        _ => why,
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connect() {
        "cannot connect to the Platform API".to_owned()
    } else {
        e.to_string()
    };
    // Never the URL: it is shown as the path already.
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

fn word(enabled: bool) -> &'static str {
    if enabled { "on" } else { "off" }
}

fn valid_process_type(target: &str) -> bool {
    !target.is_empty()
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

#[async_trait]
impl Platform for HerokuPlatform {
    fn kind(&self) -> &'static str {
        "heroku"
    }

    fn describe(&self) -> String {
        let api = self.api.as_str().trim_end_matches('/');
        if api == DEFAULT_API_URL {
            format!("Heroku app `{}`", self.app)
        } else {
            format!("Heroku app `{}` via {api}", self.app)
        }
    }

    async fn state(&self) -> Result<PlatformState, PlatformError> {
        let app_call = self.app_call("reading the app".into(), Method::GET, None);
        let app = self.object(&app_call).await?;
        let maintenance = app["maintenance"]
            .as_bool()
            .ok_or_else(|| self.fail(&app_call, "the app has no `maintenance` flag", false))?;
        let formation_call = Call {
            what: "reading the formation".into(),
            method: Method::GET,
            segments: vec!["apps", &self.app, "formation"],
            body: None,
        };
        let mut replicas = BTreeMap::new();
        for process in self.list(&formation_call).await? {
            let (Some(kind), Some(quantity)) =
                (process["type"].as_str(), process["quantity"].as_u64())
            else {
                return Err(self.fail(
                    &formation_call,
                    &format!("a formation entry has no `type` or `quantity`: {process}"),
                    false,
                ));
            };
            let quantity = u32::try_from(quantity).map_err(|_| {
                self.fail(
                    &formation_call,
                    &format!("`{kind}` has {quantity} dynos"),
                    false,
                )
            })?;
            replicas.insert(kind.to_owned(), quantity);
        }
        Ok(PlatformState {
            maintenance: Some(maintenance),
            replicas,
            code: None,
        })
    }

    async fn set_maintenance(&self, enabled: bool) -> Result<String, PlatformError> {
        let call = self.app_call(
            format!("turning maintenance {}", word(enabled)),
            Method::PATCH,
            Some(json!({ "maintenance": enabled })),
        );
        let app = self.object(&call).await?;
        if let Some(now) = app["maintenance"].as_bool()
            && now != enabled
        {
            return Err(self.fail(
                &call,
                &format!(
                    "maintenance is still {} (apps of the Fir generation have no maintenance mode)",
                    word(now)
                ),
                false,
            ));
        }
        Ok(format!(
            "maintenance {} (Heroku app `{}`)",
            word(enabled),
            self.app
        ))
    }

    async fn scale(&self, target: &str, replicas: u32) -> Result<String, PlatformError> {
        if !valid_process_type(target) {
            return Err(PlatformError::Invalid(format!(
                "`{target}` is not a Heroku process type (letters, digits, `-` and `_`)"
            )));
        }
        let call = Call {
            what: format!("scaling `{target}` to {replicas}"),
            method: Method::PATCH,
            segments: vec!["apps", &self.app, "formation", target],
            body: Some(json!({ "quantity": replicas })),
        };
        let formation = self.object(&call).await?;
        if let Some(now) = formation["quantity"].as_u64()
            && now != u64::from(replicas)
        {
            return Err(self.fail(
                &call,
                &format!("the formation says {now} dynos afterwards"),
                false,
            ));
        }
        Ok(format!(
            "{target} scaled to {replicas} (Heroku app `{}`)",
            self.app
        ))
    }

    async fn restart(&self) -> Result<String, PlatformError> {
        let call = Call {
            what: "restarting all dynos".into(),
            method: Method::DELETE,
            segments: vec!["apps", &self.app, "dynos"],
            body: None,
        };
        self.object(&call).await?;
        Ok(format!("all dynos of Heroku app `{}` restarted", self.app))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_slows_down_only_when_the_bucket_is_low() {
        assert_eq!(pacing(None), None);
        assert_eq!(pacing(Some(4500)), None);
        assert_eq!(pacing(Some(LOW_REMAINING)), None);
        assert_eq!(pacing(Some(LOW_REMAINING - 1)), Some(REFILL_INTERVAL));
        assert_eq!(pacing(Some(0)), Some(REFILL_INTERVAL * 2));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn error_bodies_become_messages() {
        assert_eq!(
            error_text(
                StatusCode::NOT_FOUND,
                br#"{"id":"not_found","message":"Couldn't find that app."}"#
            ),
            "Couldn't find that app. (HTTP 404 `not_found`)"
        );
        assert_eq!(
            error_text(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>"),
            "HTTP 502: <html>bad gateway</html>"
        );
        assert_eq!(error_text(StatusCode::BAD_GATEWAY, b""), "HTTP 502");
        assert_eq!(
            error_text(
                StatusCode::TOO_MANY_REQUESTS,
                br#"{"id":"rate_limit","message":"Your account reached the API rate limit\nPlease wait"}"#
            ),
            "Your account reached the API rate limit Please wait (HTTP 429 `rate_limit`)"
        );
    }

    #[test]
    fn api_urls_are_checked() {
        assert!(parse_api_url("https://api.heroku.com").is_ok());
        assert!(parse_api_url("http://127.0.0.1:9/prefix/").is_ok());
        assert!(parse_api_url("http://localhost:8080").is_ok());
        assert!(parse_api_url("http://[::1]:8080").is_ok());
        assert!(parse_api_url("http://api.heroku.com").is_err());
        assert!(parse_api_url("ftp://api.heroku.com").is_err());
        assert!(parse_api_url("https://u:p@api.heroku.com").is_err());
        assert!(parse_api_url("not a url").is_err());
    }

    #[test]
    fn process_types_are_checked() {
        assert!(valid_process_type("web"));
        assert!(valid_process_type("worker_2"));
        assert!(!valid_process_type("../apps"));
        assert!(!valid_process_type(""));
    }
}
