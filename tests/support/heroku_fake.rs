//! A local fake of the Heroku Platform API, enough for the `heroku` platform adapter:
//! one app with a maintenance flag and a formation, on a real TCP port.
//!
//! It follows the documented protocol: `Accept: application/vnd.heroku+json; version=3`
//! or 406, `Authorization: Bearer <token>` or 401, JSON error bodies `{"id", "message"}`,
//! a `RateLimit-Remaining` header on every answer (counting down), `Range` /
//! `206 Partial Content` / `Next-Range` on the formation list, and 404 `not_found`
//! "Couldn't find that app." for any other app.
//!
//! Releases: the list (`Range: version ..; max=N, order=desc`, pages of `206` with a
//! `Next-Range`), info by id or version, and create: `{"release": "<id>"}` (a rollback: a
//! new release copying that release's slug) or `{"slug": "<id>"}` (a known slug). A new
//! release is `pending` while its release phase runs: it turns `succeeded` (and current)
//! on the second read of it, or `failed` (the current release stays) when set to fail. Every request is recorded (method, path,
//! headers, body, time) so tests can check exactly what was sent. Faults (a 429 with
//! `Retry-After`, a 503) can be queued for the next matching requests.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use super::http;

pub const ACCEPT: &str = "application/vnd.heroku+json; version=3";
const APP_ID: &str = "01234567-89ab-cdef-0123-456789abcdef";

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
    /// The status the fake answered with.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `PATCH /apps/x {"maintenance":true}`: method, path and body (if any).
    pub fn line(&self) -> String {
        if self.body.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {} {}", self.method, self.path, self.body)
        }
    }
}

/// A canned failure for the next requests that match.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests with this method (any when `None`).
    pub method: Option<String>,
    /// Only requests to this path (any when `None`).
    pub path: Option<String>,
    pub status: u16,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
    /// How many matching requests fail.
    pub times: u32,
}

impl Fault {
    /// The next request, whatever it is, fails with `status`.
    pub fn next(status: u16) -> Self {
        Self {
            method: None,
            path: None,
            status,
            retry_after: None,
            times: 1,
        }
    }

    /// The next `method path` request fails with `status`.
    pub fn on(method: &str, path: &str, status: u16) -> Self {
        Self {
            method: Some(method.into()),
            path: Some(path.into()),
            ..Self::next(status)
        }
    }

    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }
}

struct State {
    app: String,
    token: String,
    maintenance: bool,
    formation: BTreeMap<String, u32>,
    requests: Vec<Request>,
    faults: Vec<Fault>,
    remaining: u64,
    page_size: usize,
    restarts: u32,
    /// Oldest first.
    releases: Vec<Release>,
    /// Slugs built but maybe never released (`POST releases {"slug"}` needs a known one).
    slugs: Vec<String>,
    /// How many of the next new releases fail their release phase.
    failing_releases: u32,
    release_page_size: usize,
}

/// One release as the fake keeps it.
#[derive(Debug, Clone)]
pub struct Release {
    pub id: String,
    pub version: u64,
    pub slug: Option<String>,
    pub status: String,
    pub current: bool,
    pub description: String,
    /// Reads left before a pending release ends.
    reads_left: u32,
    /// How it ends.
    fails: bool,
}

/// The fake; lives until the test process ends.
pub struct HerokuFake {
    /// Base URL, for `api_url`.
    pub url: String,
    pub app: String,
    pub token: String,
    state: Arc<Mutex<State>>,
}

impl HerokuFake {
    /// An app named `app` accepting `token`, maintenance off, with this formation.
    pub fn start(app: &str, token: &str, formation: &[(&str, u32)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Heroku fake");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            app: app.into(),
            token: token.into(),
            maintenance: false,
            formation: formation
                .iter()
                .map(|(t, q)| ((*t).to_owned(), *q))
                .collect(),
            requests: Vec::new(),
            faults: Vec::new(),
            remaining: 4500,
            page_size: 1000,
            restarts: 0,
            releases: Vec::new(),
            slugs: Vec::new(),
            failing_releases: 0,
            release_page_size: 1000,
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Self {
            url,
            app: app.into(),
            token: token.into(),
            state,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn fail(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Sets the `RateLimit-Remaining` the next answer reports (it counts down from there).
    pub fn set_remaining(&self, remaining: u64) {
        self.lock().remaining = remaining;
    }

    /// How many formation entries a page of `GET /apps/{app}/formation` holds.
    pub fn set_page_size(&self, size: usize) {
        self.lock().page_size = size.max(1);
    }

    pub fn set_maintenance(&self, on: bool) {
        self.lock().maintenance = on;
    }

    pub fn maintenance(&self) -> bool {
        self.lock().maintenance
    }

    pub fn formation(&self) -> BTreeMap<String, u32> {
        self.lock().formation.clone()
    }

    pub fn restarts(&self) -> u32 {
        self.lock().restarts
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Every request as `METHOD /path [body]`, in order.
    pub fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Request::line).collect()
    }

    /// The requests that change something (not GET), as `METHOD /path [body]`.
    pub fn changes(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.method != "GET")
            .map(Request::line)
            .collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Releases v1..vN, each of its own slug (`slug_id(n)`), all succeeded, the last
    /// current.
    pub fn add_releases(&self, n: u64) {
        let mut s = self.lock();
        for version in 1..=n {
            let slug = slug_id(version);
            s.slugs.push(slug.clone());
            s.releases.push(Release {
                id: release_id(version),
                version,
                slug: Some(slug),
                status: "succeeded".into(),
                current: version == n,
                description: format!("Deploy {version}"),
                reads_left: 0,
                fails: false,
            });
        }
    }

    /// A slug built and not released yet.
    pub fn add_slug(&self, id: &str) {
        self.lock().slugs.push(id.into());
    }

    /// The next `n` new releases fail their release phase.
    pub fn fail_releases(&self, n: u32) {
        self.lock().failing_releases = n;
    }

    /// How many releases a page of `GET /apps/{app}/releases` holds at most.
    pub fn set_release_page_size(&self, size: usize) {
        self.lock().release_page_size = size.max(1);
    }

    pub fn releases(&self) -> Vec<Release> {
        self.lock().releases.clone()
    }

    pub fn current_release(&self) -> Option<Release> {
        self.lock().releases.iter().find(|r| r.current).cloned()
    }
}

/// The id of release `version` in this fake (a uuid).
pub fn release_id(version: u64) -> String {
    format!("7e1ea5e0-0000-4000-8000-{version:012}")
}

/// The slug of the release `add_releases` made as `version` (a uuid).
pub fn slug_id(version: u64) -> String {
    format!("5106a7e0-0000-4000-8000-{version:012}")
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream);
    let Some(incoming) = http::read(&mut reader) else {
        return;
    };
    let mut request = Request {
        method: incoming.method,
        path: incoming.path,
        headers: incoming.headers,
        body: incoming.body,
        at: Instant::now(),
        status: 0,
    };
    let (status, extra, body) = {
        let mut s = state.lock().unwrap();
        let answer = handle(&mut s, &request);
        request.status = answer.0;
        s.requests.push(request);
        let remaining = s.remaining;
        s.remaining = s.remaining.saturating_sub(1);
        let mut extra = answer.1;
        extra.push(("RateLimit-Remaining".into(), remaining.to_string()));
        (answer.0, extra, answer.2)
    };
    let request_id = format!("fake-{}", uuid_like());
    http::respond(
        reader,
        status,
        &[("request-id", request_id)],
        &extra,
        &body.to_string(),
    );
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{:012}", N.fetch_add(1, Ordering::SeqCst))
}

fn error(status: u16, id: &str, message: &str) -> (u16, Vec<(String, String)>, Value) {
    (status, Vec::new(), json!({ "id": id, "message": message }))
}

fn app_json(s: &State) -> Value {
    json!({
        "id": APP_ID,
        "name": s.app,
        "maintenance": s.maintenance,
        "generation": "cedar",
        "stack": { "name": "heroku-24" },
        "web_url": format!("https://{}.herokuapp.com/", s.app),
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
    })
}

fn formation_json(s: &State, kind: &str, quantity: u32) -> Value {
    json!({
        "id": format!("f0000000-0000-0000-0000-{:0>12}", kind.len()),
        "type": kind,
        "quantity": quantity,
        "size": "Standard-1X",
        "dyno_size": { "id": "d0000000-0000-0000-0000-000000000001", "name": "Standard-1X" },
        "command": format!("bin/{kind}"),
        "app": { "id": APP_ID, "name": s.app },
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
    })
}

fn release_json(s: &State, r: &Release) -> Value {
    json!({
        "id": r.id,
        "version": r.version,
        "description": r.description,
        "status": r.status,
        "current": r.current,
        "eligible_for_rollback": true,
        "output_stream_url": null,
        "slug": r.slug.as_ref().map(|id| json!({ "id": id })),
        "app": { "id": APP_ID, "name": s.app },
        "user": { "id": "u0000000-0000-4000-8000-000000000001", "email": "release@example.com" },
        "addon_plan_names": [],
        "artifacts": [],
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
    })
}

/// `GET /apps/{app}/releases` with `Range: version [start]..; max=N[, order=desc]`: a
/// `]` before the start leaves it out; a partial page answers 206 with `Next-Range`.
fn release_list(s: &State, range: Option<&str>) -> (u16, Vec<(String, String)>, Value) {
    let (mut start, mut max, mut desc) = (None::<(u64, bool)>, 200usize, false);
    if let Some(range) = range {
        let Some(rest) = range.trim().strip_prefix("version ") else {
            return error(
                416,
                "requested_range_not_satisfiable",
                "Range field must be `version`.",
            );
        };
        let (bounds, options) = rest.split_once(';').unwrap_or((rest, ""));
        let from = bounds.trim().split("..").next().unwrap_or_default();
        let (exclusive, from) = match from.strip_prefix(']') {
            Some(f) => (true, f),
            None => (false, from),
        };
        if !from.is_empty() {
            let Ok(n) = from.parse::<u64>() else {
                return error(416, "requested_range_not_satisfiable", "Invalid range.");
            };
            start = Some((n, exclusive));
        }
        for option in options.split(',') {
            match option.trim().split_once('=') {
                Some(("max", n)) => {
                    let Ok(n) = n.trim().parse::<usize>() else {
                        return error(416, "requested_range_not_satisfiable", "Invalid max.");
                    };
                    max = n.clamp(1, 1000);
                }
                Some(("order", o)) => desc = o.trim() == "desc",
                _ => {}
            }
        }
    }
    let mut all: Vec<&Release> = s.releases.iter().collect();
    if desc {
        all.reverse();
    }
    let all: Vec<&Release> = all
        .into_iter()
        .filter(|r| match start {
            None => true,
            Some((n, exclusive)) if desc => r.version < n || (!exclusive && r.version == n),
            Some((n, exclusive)) => r.version > n || (!exclusive && r.version == n),
        })
        .collect();
    let size = max.min(s.release_page_size);
    let page: Vec<Value> = all.iter().take(size).map(|r| release_json(s, r)).collect();
    if all.len() > size {
        let last = all[size - 1].version;
        let order = if desc { ", order=desc" } else { "" };
        let next = format!("version ]{last}..; max={max}{order}");
        (206, vec![("Next-Range".into(), next)], Value::Array(page))
    } else {
        (200, Vec::new(), Value::Array(page))
    }
}

/// `POST /apps/{app}/releases`: a rollback (`release`) or a slug's release (`slug`).
fn create_release(s: &mut State, body: Option<&Value>) -> (u16, Vec<(String, String)>, Value) {
    let Some(body) = body else {
        return error(422, "invalid_params", "Request body is required.");
    };
    let (slug, description) = match (body.get("release"), body.get("slug")) {
        (Some(release), None) => {
            let Some(id) = release.as_str() else {
                return error(422, "invalid_params", "release must be a string.");
            };
            let Some(target) = s.releases.iter().find(|r| r.id == id) else {
                return error(404, "not_found", "Couldn't find that release.");
            };
            (
                target.slug.clone(),
                format!("Rollback to v{}", target.version),
            )
        }
        (None, Some(slug)) => {
            let Some(id) = slug.as_str() else {
                return error(422, "invalid_params", "slug must be a string.");
            };
            if !s.slugs.iter().any(|k| k == id) {
                return error(404, "not_found", "Couldn't find that slug.");
            }
            (
                Some(id.to_owned()),
                format!("Deploy {}", &id[..8.min(id.len())]),
            )
        }
        _ => {
            return error(
                422,
                "invalid_params",
                "Exactly one of release (a rollback) or slug is required.",
            );
        }
    };
    let version = s.releases.last().map_or(1, |r| r.version + 1);
    let fails = s.failing_releases > 0;
    if fails {
        s.failing_releases -= 1;
    }
    let release = Release {
        id: release_id(version),
        version,
        slug,
        status: "pending".into(),
        current: false,
        description,
        reads_left: 1,
        fails,
    };
    let shown = release_json(s, &release);
    s.releases.push(release);
    (201, Vec::new(), shown)
}

/// `GET /apps/{app}/releases/{id_or_version}`; a pending release's release phase ends on
/// its second read.
fn release_info(s: &mut State, key: &str) -> (u16, Vec<(String, String)>, Value) {
    let Some(i) = s
        .releases
        .iter()
        .position(|r| r.id == key || r.version.to_string() == key)
    else {
        return error(404, "not_found", "Couldn't find that release.");
    };
    if s.releases[i].status == "pending" {
        if s.releases[i].reads_left > 0 {
            s.releases[i].reads_left -= 1;
        } else if s.releases[i].fails {
            s.releases[i].status = "failed".into();
        } else {
            s.releases[i].status = "succeeded".into();
            for r in &mut s.releases {
                r.current = false;
            }
            s.releases[i].current = true;
        }
    }
    (200, Vec::new(), release_json(s, &s.releases[i]))
}

fn handle(s: &mut State, r: &Request) -> (u16, Vec<(String, String)>, Value) {
    // Queued faults first, as a rate limiter or load balancer in front would.
    if let Some(i) = s.faults.iter().position(|f| {
        f.times > 0
            && f.method.as_deref().is_none_or(|m| m == r.method)
            && f.path.as_deref().is_none_or(|p| p == r.path)
    }) {
        let fault = s.faults[i].clone();
        s.faults[i].times -= 1;
        let mut extra = Vec::new();
        if let Some(secs) = fault.retry_after {
            extra.push(("Retry-After".into(), secs.to_string()));
        }
        let (id, message) = match fault.status {
            429 => (
                "rate_limit",
                "Your account reached the API rate limit\nPlease wait a few minutes before making new requests",
            ),
            503 => (
                "unavailable",
                "Heroku is temporarily unavailable. Please try again in a few moments.",
            ),
            _ => ("internal_server_error", "Internal server error."),
        };
        return (fault.status, extra, json!({ "id": id, "message": message }));
    }
    if r.header("accept") != Some(ACCEPT) {
        return error(
            406,
            "not_acceptable",
            "Accept header must be application/vnd.heroku+json; version=3.",
        );
    }
    if r.header("authorization") != Some(&format!("Bearer {}", s.token)) {
        return error(401, "unauthorized", "Invalid credentials provided.");
    }
    let path = r.path.split('?').next().unwrap_or_default().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segments == ["account", "rate-limits"] && r.method == "GET" {
        return (200, Vec::new(), json!({ "remaining": s.remaining }));
    }
    if segments.first() != Some(&"apps") || segments.len() < 2 {
        return error(
            404,
            "not_found",
            "The requested API endpoint was not found. Are you using the right HTTP verb (i.e. `GET` vs. `POST`), and did you specify your intended version with the `Accept` header?",
        );
    }
    if segments[1] != s.app && segments[1] != APP_ID {
        return error(404, "not_found", "Couldn't find that app.");
    }
    let body: Option<Value> = if r.body.is_empty() {
        None
    } else {
        match serde_json::from_str(&r.body) {
            Ok(v) => Some(v),
            Err(_) => return error(400, "bad_request", "Invalid JSON in request body."),
        }
    };
    if !r.body.is_empty() && r.header("content-type") != Some("application/json") {
        return error(400, "bad_request", "Content-Type must be application/json.");
    }
    match (r.method.as_str(), &segments[2..]) {
        ("GET", []) => (200, Vec::new(), app_json(s)),
        ("PATCH", []) => {
            let Some(body) = body else {
                return error(422, "invalid_params", "Request body is required.");
            };
            if let Some(m) = body.get("maintenance") {
                let Some(m) = m.as_bool() else {
                    return error(422, "invalid_params", "maintenance must be a boolean.");
                };
                s.maintenance = m;
            }
            (200, Vec::new(), app_json(s))
        }
        ("GET", ["formation"]) => {
            let after = r
                .header("range")
                .and_then(|range| range.strip_prefix("type ]"))
                .and_then(|rest| rest.split("..").next())
                .map(str::to_owned);
            let all: Vec<(String, u32)> = s
                .formation
                .iter()
                .filter(|(t, _)| after.as_ref().is_none_or(|a| *t > a))
                .map(|(t, q)| (t.clone(), *q))
                .collect();
            let page: Vec<Value> = all
                .iter()
                .take(s.page_size)
                .map(|(t, q)| formation_json(s, t, *q))
                .collect();
            if all.len() > s.page_size {
                let last = &all[s.page_size - 1].0;
                let next = format!("type ]{last}..; max={}", s.page_size);
                (206, vec![("Next-Range".into(), next)], Value::Array(page))
            } else {
                (200, Vec::new(), Value::Array(page))
            }
        }
        ("GET", ["formation", kind]) => match s.formation.get(*kind) {
            Some(q) => (200, Vec::new(), formation_json(s, kind, *q)),
            None => error(404, "not_found", "Couldn't find that formation."),
        },
        ("PATCH", ["formation", kind]) => {
            let Some(quantity) = body
                .as_ref()
                .and_then(|b| b.get("quantity"))
                .and_then(Value::as_u64)
            else {
                return error(422, "invalid_params", "quantity must be an integer.");
            };
            if !s.formation.contains_key(*kind) {
                return error(404, "not_found", "Couldn't find that formation.");
            }
            s.formation.insert((*kind).to_owned(), quantity as u32);
            (200, Vec::new(), formation_json(s, kind, quantity as u32))
        }
        ("PATCH", ["formation"]) => {
            let Some(updates) = body
                .as_ref()
                .and_then(|b| b.get("updates"))
                .and_then(Value::as_array)
            else {
                return error(422, "invalid_params", "updates must be an array.");
            };
            let mut changed = Vec::new();
            for u in updates {
                let (Some(kind), Some(q)) = (u["type"].as_str(), u["quantity"].as_u64()) else {
                    return error(
                        422,
                        "invalid_params",
                        "each update needs type and quantity.",
                    );
                };
                if !s.formation.contains_key(kind) {
                    return error(404, "not_found", "Couldn't find that formation.");
                }
                changed.push((kind.to_owned(), q as u32));
            }
            for (k, q) in &changed {
                s.formation.insert(k.clone(), *q);
            }
            let out = changed
                .iter()
                .map(|(k, q)| formation_json(s, k, *q))
                .collect();
            (200, Vec::new(), Value::Array(out))
        }
        ("GET", ["releases"]) => release_list(s, r.header("range")),
        ("GET", ["releases", key]) => release_info(s, key),
        ("POST", ["releases"]) => create_release(s, body.as_ref()),
        ("DELETE", ["dynos"]) => {
            s.restarts += 1;
            (202, Vec::new(), json!({}))
        }
        ("DELETE", ["formations", kind]) => {
            if !s.formation.contains_key(*kind) {
                return error(404, "not_found", "Couldn't find that formation.");
            }
            s.restarts += 1;
            (202, Vec::new(), json!({}))
        }
        _ => error(
            404,
            "not_found",
            "The requested API endpoint was not found.",
        ),
    }
}
