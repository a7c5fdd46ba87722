//! Heroku, over the Platform API (`https://api.heroku.com`, `Accept:
//! application/vnd.heroku+json; version=3`, a bearer token).
//!
//! - state: `GET /apps/{app}` (the `maintenance` flag) and `GET /apps/{app}/formation`
//!   (the quantity of every process type: the scale targets are the process type names);
//! - maintenance: `PATCH /apps/{app}` `{"maintenance": true|false}`;
//! - scale: `PATCH /apps/{app}/formation/{type}` `{"quantity": n}`;
//! - restart: `DELETE /apps/{app}/dynos`.
//!
//! Code (a `traffic` step) is the app's releases: Heroku builds and releases in one, so
//! there is no release without traffic and no `release` step:
//! - code: the current release, from `GET /apps/{app}/releases` (`Range: version ..;
//!   order=desc`, page by page): `v<version>` gets all the traffic;
//! - route: `v<N>` rolls back to that earlier release (`POST /apps/{app}/releases
//!   {"release": "<its id>"}`), a slug id releases that slug (`{"slug": "<id>"}`); either
//!   makes a new release, `pending` while its release phase runs, polled until it is not;
//!   `failed` means the release phase failed and the code did not go live;
//! - restore: unless the current release runs the earlier one's slug, a rollback to the
//!   earlier release (a new release copying its slug), polled and checked.
//!
//! In the release phase itself (`DYNO=release.N`, `cutover release` in the Procfile), the
//! release that runs it goes live when it succeeds: a `traffic` step is refused there.
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

use super::{CodeActions, CodeState, Platform, PlatformError, PlatformState, Route};
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
/// The environment variable Heroku sets in every dyno: `release.N` in the release phase's.
pub(crate) const DYNO_ENV: &str = "DYNO";
/// Longest wait between two reads of a pending release.
const RELEASE_POLL: Duration = Duration::from_secs(5);

pub(crate) struct HerokuPlatform {
    app: String,
    api: Url,
    token: Secret,
    client: reqwest::Client,
    /// `RateLimit-Remaining` of the last answer.
    remaining: Mutex<Option<u64>>,
    /// `DYNO` when this process is the release phase (`release.N`).
    release_phase: Option<String>,
}

/// What a release says about the code it runs.
#[derive(Debug, Clone)]
struct Release {
    id: String,
    version: u64,
    status: String,
    current: bool,
    /// The slug's id, `None` for a release without one.
    slug: Option<String>,
}

impl Release {
    fn read(value: &Value) -> Option<Self> {
        Some(Self {
            id: value["id"].as_str()?.to_owned(),
            version: value["version"].as_u64()?,
            status: value["status"].as_str().unwrap_or_default().to_owned(),
            current: value["current"].as_bool().unwrap_or(false),
            slug: value["slug"]["id"].as_str().map(str::to_owned),
        })
    }

    /// `v42 (slug 5106a7e0-...)`.
    fn describe(&self) -> String {
        match &self.slug {
            Some(slug) => format!("v{} (slug {slug})", self.version),
            None => format!("v{} (no slug)", self.version),
        }
    }
}

/// What a `traffic` step names: an earlier release or a slug.
enum Target {
    Version(u64),
    Slug(String),
}

impl Target {
    fn parse(version: &str) -> Result<Self, PlatformError> {
        if let Some(n) = version
            .strip_prefix('v')
            .and_then(|n| n.parse::<u64>().ok())
        {
            return Ok(Self::Version(n));
        }
        if is_uuid(version) {
            return Ok(Self::Slug(version.to_ascii_lowercase()));
        }
        Err(PlatformError::Invalid(format!(
            "`{version}` is neither a Heroku release (`v42`: roll back to it) nor a slug id (a uuid, from `heroku builds` or the Platform API: release that slug)"
        )))
    }
}

fn is_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
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
            release_phase: std::env::var(DYNO_ENV)
                .ok()
                .filter(|d| d.starts_with("release.")),
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

    /// The current release: the newest first, page by page, until one is `current`.
    async fn current_release(&self) -> Result<Release, PlatformError> {
        let call = Call {
            what: "reading the releases".into(),
            method: Method::GET,
            segments: vec!["apps", &self.app, "releases"],
            body: None,
        };
        let mut range = "version ..; max=10, order=desc".to_owned();
        for _ in 0..MAX_PAGES {
            let (status, headers, bytes) = self.send(&call, Some(&range)).await?;
            let page: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| {
                self.fail(&call, &format!("the answer is not a JSON list: {e}"), false)
            })?;
            for value in &page {
                let release = Release::read(value).ok_or_else(|| {
                    self.fail(
                        &call,
                        &format!("a release has no `id` or `version`: {value}"),
                        false,
                    )
                })?;
                if release.current {
                    return Ok(release);
                }
            }
            match headers.get("next-range").and_then(|v| v.to_str().ok()) {
                Some(next) if status == StatusCode::PARTIAL_CONTENT && !page.is_empty() => {
                    next.clone_into(&mut range);
                }
                _ => {
                    return Err(self.fail(
                        &call,
                        "no release is current (an app that was never deployed has none)",
                        false,
                    ));
                }
            }
        }
        Err(self.fail(
            &call,
            &format!("no current release in {MAX_PAGES} pages of releases"),
            false,
        ))
    }

    /// One release, by id or version.
    async fn release(&self, id_or_version: &str) -> Result<Release, PlatformError> {
        let call = Call {
            what: format!("reading release {id_or_version}"),
            method: Method::GET,
            segments: vec!["apps", &self.app, "releases", id_or_version],
            body: None,
        };
        let value = self.object(&call).await?;
        Release::read(&value).ok_or_else(|| {
            self.fail(
                &call,
                &format!("the release has no `id` or `version`: {value}"),
                false,
            )
        })
    }

    /// Makes a release (`{"release": id}` rolls back, `{"slug": id}` releases a slug) and
    /// reads it until its release phase is over; an error unless it succeeded.
    async fn make_release(&self, what: String, body: Value) -> Result<Release, PlatformError> {
        let call = Call {
            what,
            method: Method::POST,
            segments: vec!["apps", &self.app, "releases"],
            body: Some(body),
        };
        let made = self.object(&call).await?;
        let mut release = Release::read(&made).ok_or_else(|| {
            self.fail(
                &call,
                &format!("the new release has no `id` or `version`: {made}"),
                false,
            )
        })?;
        // Heroku ends a release phase after an hour; a little more for the answer.
        let deadline = std::time::Instant::now() + RELEASE_PHASE_LIMIT + Duration::from_secs(60);
        let mut wait = Duration::from_millis(100);
        while release.status == "pending" {
            if std::time::Instant::now() + wait >= deadline {
                return Err(PlatformError::Api {
                    message: format!(
                        "Heroku app `{}`: release v{} is still pending after {}; look at it with `heroku releases:info v{} --app {}`",
                        self.app,
                        release.version,
                        humantime::format_duration(RELEASE_PHASE_LIMIT),
                        release.version,
                        self.app
                    ),
                    transient: false,
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RELEASE_POLL);
            release = self.release(&release.id).await?;
        }
        match release.status.as_str() {
            "succeeded" => Ok(release),
            "failed" => Err(PlatformError::Invalid(format!(
                "Heroku app `{}`: the release phase of v{} failed, so its code did not go live (the release before it keeps serving); its output: `heroku releases:output v{} --app {}`",
                self.app, release.version, release.version, self.app
            ))),
            other => Err(PlatformError::Invalid(format!(
                "Heroku app `{}`: release v{} ended `{other}`, not `succeeded`: its code is not live",
                self.app, release.version
            ))),
        }
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

    fn code_actions(&self) -> CodeActions {
        let traffic = match &self.release_phase {
            Some(dyno) => Err(format!(
                "cutover runs as the release phase of Heroku app `{}` (DYNO={dyno}): Heroku puts this release live when the phase succeeds, and a failed phase never goes live, so no `traffic` step is needed; remove it",
                self.app
            )),
            None => Ok(()),
        };
        CodeActions {
            stage: Err(format!(
                "Heroku builds and releases code in one: a release gets the traffic as soon as it is made, there is no release without traffic; drop the `release` step and use a `traffic` step alone (a slug id, or `v<N>` to go back to an earlier release) on Heroku app `{}`",
                self.app
            )),
            traffic,
            split: false,
        }
    }

    async fn code(&self) -> Result<Option<CodeState>, PlatformError> {
        let current = self.current_release().await?;
        let name = format!("v{}", current.version);
        Ok(Some(CodeState {
            live: Some(name.clone()),
            routes: vec![Route {
                name: name.clone(),
                version: Some(name),
                weight: 100,
            }],
        }))
    }

    async fn code_prior(&self) -> Result<Value, PlatformError> {
        let current = self.current_release().await?;
        Ok(json!({
            "release": current.id,
            "version": current.version,
            "slug": current.slug,
        }))
    }

    async fn route(&self, version: &str, percent: u32) -> Result<String, PlatformError> {
        if percent != 100 {
            return Err(PlatformError::Unsupported(format!(
                "Heroku app `{}` runs one release at a time: use `stages: [100]`",
                self.app
            )));
        }
        if let Err(why) = self.code_actions().traffic {
            return Err(PlatformError::Unsupported(why));
        }
        let target = Target::parse(version)?;
        let current = self.current_release().await?;
        let (what, body, slug) = match &target {
            Target::Version(n) => {
                let earlier = self.release(&n.to_string()).await?;
                if *n == current.version || (earlier.slug.is_some() && earlier.slug == current.slug)
                {
                    return Ok(format!(
                        "{version} is live: the current release {} runs its code",
                        current.describe()
                    ));
                }
                (
                    format!("rolling back to {}", earlier.describe()),
                    json!({ "release": earlier.id }),
                    earlier.slug,
                )
            }
            Target::Slug(id) => {
                if current.slug.as_deref() == Some(id.as_str()) {
                    return Ok(format!(
                        "slug {id} is live: the current release {} runs it",
                        current.describe()
                    ));
                }
                (
                    format!("releasing slug {id}"),
                    json!({ "slug": id }),
                    Some(id.clone()),
                )
            }
        };
        let made = self.make_release(what, body).await?;
        let now = self.current_release().await?;
        if now.id != made.id || now.slug != slug {
            return Err(PlatformError::Invalid(format!(
                "Heroku app `{}`: release v{} succeeded, but the current release is {}",
                self.app,
                made.version,
                now.describe()
            )));
        }
        Ok(format!(
            "{version} live as release {} (was {}; checked: it is the current release)",
            made.describe(),
            current.describe()
        ))
    }

    async fn restore_code(&self, prior: &Value) -> Result<String, PlatformError> {
        let (Some(id), Some(version)) = (prior["release"].as_str(), prior["version"].as_u64())
        else {
            return Err(PlatformError::Invalid(format!(
                "the journal's earlier code state of Heroku app `{}` has no release id and version: {prior}",
                self.app
            )));
        };
        let slug = prior["slug"].as_str().map(str::to_owned);
        let current = self.current_release().await?;
        let runs_it = |r: &Release| r.id == id || (slug.is_some() && r.slug == slug);
        if runs_it(&current) {
            return Ok(format!(
                "the current release {} runs the code of v{version}, as before (checked: read the current release)",
                current.describe()
            ));
        }
        let made = self
            .make_release(
                format!("rolling back to v{version}"),
                json!({ "release": id }),
            )
            .await?;
        let now = self.current_release().await?;
        if now.id != made.id || (slug.is_some() && now.slug != slug) {
            return Err(PlatformError::Invalid(format!(
                "Heroku app `{}`: the rollback to v{version} made release v{}, but the current release is {}",
                self.app,
                made.version,
                now.describe()
            )));
        }
        Ok(format!(
            "rolled back to v{version}: new release v{} (id {}) runs its slug {} again (was {}; checked: v{} is the current release)",
            made.version,
            made.id,
            made.slug.as_deref().unwrap_or("none"),
            current.describe(),
            made.version
        ))
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
    fn a_traffic_version_is_a_release_or_a_slug() {
        assert!(matches!(Target::parse("v42"), Ok(Target::Version(42))));
        assert!(matches!(
            Target::parse("5106A7E0-0000-4000-8000-00000000abcd"),
            Ok(Target::Slug(s)) if s == "5106a7e0-0000-4000-8000-00000000abcd"
        ));
        assert!(Target::parse("42").is_err());
        assert!(Target::parse("vfoo").is_err());
        assert!(Target::parse("5106a7e0-0000-4000-8000").is_err());
    }

    #[test]
    fn process_types_are_checked() {
        assert!(valid_process_type("web"));
        assert!(valid_process_type("worker_2"));
        assert!(!valid_process_type("../apps"));
        assert!(!valid_process_type(""));
    }
}
