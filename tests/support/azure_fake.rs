//! A local fake of the Azure endpoints cutover talks to, on one real TCP port, reached by
//! the real SDK and reqwest code through `CUTOVER_AZURE_REDIRECT` (the https URLs stay as
//! in production; the transport sends them here):
//!
//! - Entra ID: `POST /{tenant}/oauth2/v2.0/token` (client credentials with a secret or a
//!   client assertion; `{"error","error_description","error_codes"}` on refusal);
//! - managed identity, App Service style: `GET /msi/token` with `X-IDENTITY-HEADER`;
//! - Azure Pipelines OIDC: `POST /oidc` with the system access token; GitHub Actions OIDC:
//!   `GET /gh/idtoken?audience=api://AzureADTokenExchange` with the request token;
//! - Key Vault: `GET /secrets/{name}/[{version}]`, with the 401 `WWW-Authenticate`
//!   challenge for a request without a token, 404 `SecretNotFound`, 403 `Forbidden`;
//! - Resource Manager, `Microsoft.App/containerApps`: GET, PATCH as JSON merge patch
//!   (a `template` change makes a new revision that is `Provisioning` until read once),
//!   202 + `Azure-AsyncOperation` + `Location` + `Retry-After: 1` with an operation that is
//!   `InProgress` once, revisions and their restart, `POST .../stop` and `.../start` (the
//!   same kind of operation; `runningStatus` becomes `Stopped` / `Running`). A scale with
//!   `maxReplicas` below 1 is refused (400 `ContainerAppInvalidScaleSpec`, as Azure and
//!   its CLI refuse it). Revisions: list, get, restart, activate and deactivate (refused
//!   while the revision has traffic); a `template` change named by `revisionSuffix` (which
//!   stays in the template, as in Azure) makes `<app>--<suffix>`, refused (400) when that
//!   revision exists or the suffix is invalid; `configuration.ingress.traffic` is checked
//!   (weights add up to 100, each names an existing, active revision or
//!   `latestRevision: true`, labels unique; else 400) and read back by GET and in each
//!   revision's `trafficWeight`; in `activeRevisionsMode: Single` a new revision, once
//!   provisioned, deactivates the others. `Microsoft.App/jobs`: GET, PATCH (merge patch) and `POST .../stop`
//!   (every running execution `Stopped`), each an operation as above. `api-version` is
//!   required (400
//!   `MissingApiVersionParameter`), a bearer token from this fake too (401), GET omits
//!   empty env values as Azure does, and faults (429 + `Retry-After`) can be queued.
//!
//! - Resource Manager, `Microsoft.Web/sites`: GET (with `defaultHostName`), stop, start,
//!   restart, app settings list and PUT (the whole set, a restart); the site configuration
//!   (`GET`/`PATCH .../config/web`, its `linuxFxVersion`) of production and of each
//!   deployment slot (`.../slots/{slot}`, GET, app settings list), `config/slotConfigNames`,
//!   and `POST .../slots/{slot}/slotsswap` (`targetSlot` and `preserveVnet` required, 400
//!   otherwise), an operation (202 + `Location` + `Azure-AsyncOperation` + `Retry-After`,
//!   `InProgress` once) that swaps the images and the app settings that are not slot
//!   settings when it ends, as Azure does; slot settings (`slotConfigNames`) stay put.
//!
//! - Resource Manager, `Microsoft.Sql`: GET a database; `POST .../databases/{db}/export`
//!   and `POST .../servers/{s}/import` answered 202 + `Location` + `Retry-After: 1`, the
//!   operation `202` once and then `200` with an `ImportExportOperationResult` (or a 400
//!   when the export or import is set to fail; a failing export first writes part of a
//!   file); the export writes a
//!   real blob to the `storageUri` (Azurite) with the `storageKey`, the import reads it
//!   back; `POST .../databases/{db}/move` renames (400 `DatabaseNameInUse` when taken; a
//!   new name longer than Azure's 128 characters is refused, for copies too).
//!   A wrong `administratorLoginPassword` is refused as Azure does. `PUT .../databases/{db}`
//!   with `properties.createMode: Copy` copies `sourceDatabaseId` (`location` required, and
//!   the source's; `sku` optional; `properties.elasticPoolId` puts the copy in that pool,
//!   and the `ElasticPool` sku without it is refused): the copy holds the source's content at that moment and
//!   is `Copying` until its operation (202 + `Azure-AsyncOperation` + `Location` +
//!   `Retry-After: 1`, `InProgress` once) ends `Succeeded` and it is `Online`; a copy set
//!   to fail ends `Failed` and leaves the half-made database behind. `DELETE
//!   .../databases/{db}`: 204 when there is none, else the same kind of operation, the
//!   database gone when it ends. `PUT /fake/sql/{db}` with the content as body stands in
//!   for a migrator writing to the database.
//!
//! Every request is recorded: method, path with query, headers, body.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::http;

pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const SUBSCRIPTION: &str = "00000000-1111-2222-3333-444444444444";
pub const CLIENT_ID: &str = "66666666-7777-8888-9999-000000000000";
pub const CLIENT_SECRET: &str = "fake-client-secret-Zq8";
pub const FEDERATED_TOKEN: &str = "eyJfederated.workload.token";
pub const PIPELINES_OIDC_TOKEN: &str = "eyJpipelines.oidc.token";
pub const SYSTEM_ACCESS_TOKEN: &str = "fake-system-access-token";
pub const IDENTITY_HEADER: &str = "fake-identity-header";
pub const GITHUB_REQUEST_TOKEN: &str = "fake-github-request-token";
pub const SQL_ADMIN: &str = "cutover_admin";
pub const SQL_PASSWORD: &str = "fake-Sql-Pa55word";
/// What an exported `.bacpac` starts with in this fake.
pub const BACPAC_HEADER: &str = "BACPAC\n";

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
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

    pub fn line(&self) -> String {
        if self.body.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {} {}", self.method, self.path, self.body)
        }
    }
}

/// A Container Apps revision.
#[derive(Debug, Clone)]
struct Revision {
    /// `Provisioning` (until read once), `Provisioned` or `Failed`.
    state: String,
    reads: u32,
    active: bool,
    /// The app's template when the revision was made.
    template: Value,
    created: u32,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// Key Vault secrets: `name` or `name/version` → value.
    secrets: BTreeMap<String, String>,
    forbidden: BTreeSet<String>,
    apps: BTreeMap<String, Value>,
    /// Container Apps jobs: name → resource.
    jobs: BTreeMap<String, Value>,
    /// Each job's executions: name → statuses (`Running`, `Stopped`).
    executions: BTreeMap<String, Vec<String>>,
    /// `app/revision` → the revision.
    revisions: BTreeMap<String, Revision>,
    /// Revisions made so far (their creation order).
    created: u32,
    restarts: Vec<String>,
    /// `activate REV` / `deactivate REV`, in order.
    activations: Vec<String>,
    /// Operation id → (polls left before `Succeeded`, the app it changes).
    operations: BTreeMap<String, (u32, String)>,
    /// Pending 429s: (method, path prefix, times, retry-after seconds).
    throttles: Vec<(String, String, u32, u32)>,
    tokens_issued: u32,
    /// Answer PATCH with only a `Location` header.
    location_only: bool,
    /// How many of the next new revisions fail to provision.
    failing_revisions: u32,
    /// App Service sites: name → (state, app settings, restarts).
    sites: BTreeMap<String, (String, serde_json::Map<String, Value>, u32)>,
    /// App Service code: site name → production's image, the slots, the slot settings.
    site_code: BTreeMap<String, SiteCode>,
    /// Slot swaps: operation id → (polls left, site, slot, done).
    site_ops: BTreeMap<String, (u32, String, String, bool)>,
    /// Azure SQL databases: name → resource, its data in `content`.
    sql: BTreeMap<String, Value>,
    /// SQL export/import operations: id → (polls left, the request's body, export of / import).
    sql_ops: BTreeMap<String, (u32, Value, Option<String>)>,
    /// Exports fail (after writing part of their file).
    failing_exports: bool,
    /// Imports fail.
    failing_imports: bool,
    /// Database copies fail.
    failing_copies: bool,
    /// Database copies and deletions: operation id → (polls left, what it does).
    sql_changes: BTreeMap<String, (u32, SqlChange)>,
}

/// A `Microsoft.Sql` change that ends when its operation does.
#[derive(Clone)]
enum SqlChange {
    /// The copy `name` becomes `Online` (or fails).
    Copy(String),
    /// Database `name` goes.
    Delete(String),
}

/// What a site runs: production's `linuxFxVersion`, its deployment slots, and the app
/// setting names that stay with their slot in a swap (`slotConfigNames`).
#[derive(Default, Clone)]
struct SiteCode {
    image: String,
    slots: BTreeMap<String, Slot>,
    sticky: Vec<String>,
}

#[derive(Default, Clone)]
struct Slot {
    image: String,
    settings: serde_json::Map<String, Value>,
}

pub struct AzureFake {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl AzureFake {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Azure fake");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Self { url, state }
    }

    /// `CUTOVER_AZURE_REDIRECT` for a process that should reach this fake (and find no
    /// instance metadata service).
    pub fn redirect(&self) -> String {
        format!(
            "login.microsoftonline.com={u},vault.azure.net={u},management.azure.com={u},actions.githubusercontent.com={u},169.254.169.254=http://127.0.0.1:9",
            u = self.url
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn add_secret(&self, name: &str, value: &str) {
        self.lock().secrets.insert(name.into(), value.into());
    }

    pub fn forbid_secret(&self, name: &str) {
        self.lock().forbidden.insert(name.into());
    }

    /// A Container App with these containers (`template.containers`) and scale.
    pub fn add_app(&self, name: &str, containers: Value, min: u32, max: u32) {
        let rev = format!("{name}--r1");
        let app = json!({
            "id": format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.App/containerApps/{name}"),
            "name": name,
            "type": "Microsoft.App/containerApps",
            "location": "westeurope",
            "properties": {
                "provisioningState": "Succeeded",
                "runningStatus": "Running",
                "latestRevisionName": rev,
                "latestReadyRevisionName": rev,
                "configuration": {"activeRevisionsMode": "Single", "secrets": [{"name": "db"}]},
                "template": {"containers": containers, "scale": {"minReplicas": min, "maxReplicas": max}}
            }
        });
        let mut s = self.lock();
        s.created += 1;
        let revision = Revision {
            state: "Provisioned".into(),
            reads: 0,
            active: true,
            template: app["properties"]["template"].clone(),
            created: s.created,
        };
        s.apps.insert(name.into(), app);
        s.revisions.insert(format!("{name}/{rev}"), revision);
    }

    /// Puts app `name` in multiple-revision mode with external ingress and `traffic`
    /// (`configuration.ingress.traffic`, as stored).
    pub fn set_multiple(&self, name: &str, traffic: Value) {
        let mut s = self.lock();
        let c = &mut s.apps.get_mut(name).expect("known app")["properties"]["configuration"];
        c["activeRevisionsMode"] = json!("Multiple");
        c["ingress"] =
            json!({"external": true, "targetPort": 8080, "transport": "auto", "traffic": traffic});
    }

    /// A new revision `rev` of app `name`, as a deploy outside cutover makes it: the app's
    /// template with the first container's image set to `image`, provisioned, active, and
    /// now the app's latest revision.
    pub fn add_revision(&self, name: &str, rev: &str, image: &str) {
        let mut s = self.lock();
        let app = s.apps.get_mut(name).expect("known app");
        app["properties"]["template"]["containers"][0]["image"] = json!(image);
        app["properties"]["latestRevisionName"] = json!(rev);
        app["properties"]["latestReadyRevisionName"] = json!(rev);
        let template = app["properties"]["template"].clone();
        s.created += 1;
        let revision = Revision {
            state: "Provisioned".into(),
            reads: 0,
            active: true,
            template,
            created: s.created,
        };
        s.revisions.insert(format!("{name}/{rev}"), revision);
    }

    /// `configuration.ingress.traffic` of an app, as stored.
    pub fn traffic(&self, name: &str) -> Value {
        self.lock().apps[name]["properties"]["configuration"]["ingress"]["traffic"].clone()
    }

    /// Each revision's share of the app's traffic (`latestRevision` resolved), without
    /// the revisions at 0.
    pub fn weights(&self, name: &str) -> BTreeMap<String, u64> {
        let mut w = weights(&self.lock().apps[name]);
        w.retain(|_, v| *v > 0);
        w
    }

    /// The names of the app's active revisions, oldest first.
    pub fn active_revisions(&self, name: &str) -> Vec<String> {
        let s = self.lock();
        let mut active: Vec<(&String, &Revision)> = s
            .revisions
            .iter()
            .filter(|(k, r)| k.starts_with(&format!("{name}/")) && r.active)
            .collect();
        active.sort_by_key(|(_, r)| r.created);
        active
            .into_iter()
            .map(|(k, _)| k[name.len() + 1..].to_owned())
            .collect()
    }

    /// The template a revision was made with (`None`: no such revision).
    pub fn revision_template(&self, name: &str, rev: &str) -> Option<Value> {
        self.lock()
            .revisions
            .get(&format!("{name}/{rev}"))
            .map(|r| r.template.clone())
    }

    /// `activate REV` / `deactivate REV` requests that were carried out, in order.
    pub fn activations(&self) -> Vec<String> {
        self.lock().activations.clone()
    }

    /// A Container Apps job with this trigger type (`Event` with `maxExecutions`) and one
    /// running execution.
    pub fn add_job(&self, name: &str, trigger: &str, max_executions: Option<u32>) {
        let mut configuration = json!({"triggerType": trigger, "replicaTimeout": 1800});
        match trigger {
            "Event" => {
                configuration["eventTriggerConfig"] = json!({"parallelism": 1, "scale": {"minExecutions": 0, "pollingInterval": 30, "rules": [{"name": "queue", "type": "azure-queue"}]}});
                if let Some(n) = max_executions {
                    configuration["eventTriggerConfig"]["scale"]["maxExecutions"] = json!(n);
                }
            }
            "Schedule" => {
                configuration["scheduleTriggerConfig"] = json!({"cronExpression": "*/5 * * * *"});
            }
            _ => {}
        }
        let job = json!({
            "id": format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.App/jobs/{name}"),
            "name": name,
            "type": "Microsoft.App/jobs",
            "location": "westeurope",
            "properties": {"provisioningState": "Succeeded", "configuration": configuration,
                "template": {"containers": [{"name": "worker", "image": "mealprep.azurecr.io/jobs:41"}]}}
        });
        let mut s = self.lock();
        s.jobs.insert(name.into(), job);
        s.executions.insert(name.into(), vec!["Running".into()]);
    }

    /// A job as stored.
    pub fn job(&self, name: &str) -> Value {
        self.lock().jobs[name].clone()
    }

    /// The statuses of a job's executions.
    pub fn executions(&self, name: &str) -> Vec<String> {
        self.lock().executions[name].clone()
    }

    /// `runningStatus` of an app: `Running`, or `Stopped` after `POST .../stop`.
    pub fn running_status(&self, name: &str) -> String {
        self.lock().apps[name]["properties"]["runningStatus"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The app as stored (empty env values kept).
    pub fn app(&self, name: &str) -> Value {
        self.lock().apps[name].clone()
    }

    /// An App Service site, running, with these app settings.
    pub fn add_site(&self, name: &str, settings: Value) {
        let settings = settings.as_object().cloned().unwrap_or_default();
        self.lock()
            .sites
            .insert(name.into(), ("Running".into(), settings, 0));
    }

    /// Production of site `name` runs this `linuxFxVersion` (`DOCKER|repo:tag`).
    pub fn set_site_image(&self, name: &str, image: &str) {
        self.lock().site_code.entry(name.into()).or_default().image = image.into();
    }

    /// A deployment slot of site `name` running `image`, with these app settings.
    pub fn add_slot(&self, name: &str, slot: &str, image: &str, settings: Value) {
        self.lock()
            .site_code
            .entry(name.into())
            .or_default()
            .slots
            .insert(
                slot.into(),
                Slot {
                    image: image.into(),
                    settings: settings.as_object().cloned().unwrap_or_default(),
                },
            );
    }

    /// The app settings of site `name` that stay with their slot in a swap.
    pub fn set_slot_settings(&self, name: &str, names: &[&str]) {
        self.lock().site_code.entry(name.into()).or_default().sticky =
            names.iter().map(|n| (*n).to_owned()).collect();
    }

    /// The image production of site `name` runs.
    pub fn site_image(&self, name: &str) -> String {
        self.lock().site_code[name].image.clone()
    }

    /// A slot's `(image, app settings)`.
    pub fn slot(&self, name: &str, slot: &str) -> (String, Value) {
        let s = self.lock();
        let slot = &s.site_code[name].slots[slot];
        (slot.image.clone(), Value::Object(slot.settings.clone()))
    }

    /// A site's `(state, app settings, restarts)`.
    pub fn site(&self, name: &str) -> (String, Value, u32) {
        let (state, settings, restarts) = self.lock().sites[name].clone();
        (state, Value::Object(settings), restarts)
    }

    /// An Azure SQL database on server `sql-prod` holding `content`.
    pub fn add_database(&self, name: &str, content: &str) {
        let db = json!({
            "id": sql_path(name),
            "name": name,
            "type": "Microsoft.Sql/servers/databases",
            "location": "westeurope",
            "sku": {"name": "GP_S_Gen5_2", "tier": "GeneralPurpose"},
            "properties": {"status": "Online", "maxSizeBytes": 34_359_738_368_u64},
            "content": content,
        });
        self.lock().sql.insert(name.into(), db);
    }

    /// Puts database `name` into elastic pool `pool` of server `sql-prod`, as Azure shows a
    /// pooled database: the pool's id and the `ElasticPool` sku.
    pub fn pool_database(&self, name: &str, pool: &str) {
        let mut state = self.lock();
        let db = state.sql.get_mut(name).expect("the database exists");
        db["sku"] = json!({"name": "ElasticPool", "tier": "GeneralPurpose", "capacity": 0});
        db["properties"]["elasticPoolId"] = json!(format!(
            "{}/elasticPools/{pool}",
            sql_path("").trim_end_matches("/databases/")
        ));
    }

    /// A SQL database's resource as the fake holds it.
    pub fn database(&self, name: &str) -> Value {
        self.lock().sql[name].clone()
    }

    /// Names and contents of the SQL databases.
    pub fn databases(&self) -> BTreeMap<String, String> {
        self.lock()
            .sql
            .iter()
            .map(|(n, d)| {
                (
                    n.clone(),
                    d["content"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    pub fn set_database_content(&self, name: &str, content: &str) {
        self.lock().sql.get_mut(name).expect("known database")["content"] = json!(content);
    }

    pub fn fail_exports(&self) {
        self.lock().failing_exports = true;
    }

    pub fn fail_imports(&self) {
        self.lock().failing_imports = true;
    }

    pub fn fail_copies(&self) {
        self.lock().failing_copies = true;
    }

    pub fn restarts(&self) -> Vec<String> {
        self.lock().restarts.clone()
    }

    pub fn throttle(&self, method: &str, path_prefix: &str, times: u32, retry_after: u32) {
        self.lock()
            .throttles
            .push((method.into(), path_prefix.into(), times, retry_after));
    }

    /// The next `n` new revisions fail to provision (`provisioningError` set).
    pub fn fail_revisions(&self, n: u32) {
        self.lock().failing_revisions = n;
    }

    pub fn location_only(&self) {
        self.lock().location_only = true;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Resource Manager requests that change something, as `METHOD /path?query body`.
    pub fn arm_changes(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.method != "GET" && r.path.starts_with("/subscriptions/"))
            .map(Request::line)
            .collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }
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
        status: 0,
    };
    let (status, extra, body) = {
        let mut s = state.lock().unwrap();
        let answer = handle(&mut s, &request);
        request.status = answer.0;
        s.requests.push(request);
        answer
    };
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    http::respond(reader, status, &[], &extra, &text);
}

type Answer = (u16, Vec<(String, String)>, Value);

fn arm_error(status: u16, code: &str, message: &str) -> Answer {
    (
        status,
        Vec::new(),
        json!({"error": {"code": code, "message": message}}),
    )
}

fn query(path: &str, name: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(s: &mut State, kind: &str) -> String {
    s.tokens_issued += 1;
    format!("tok-{kind}-{}", s.tokens_issued)
}

fn handle(s: &mut State, r: &Request) -> Answer {
    let path = r.path.split('?').next().unwrap_or_default().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Entra token endpoint.
    if r.method == "POST" && segs.len() == 4 && segs[1..] == ["oauth2", "v2.0", "token"] {
        let f = form(&r.body);
        let ok_client =
            f.get("client_id").map(String::as_str) == Some(CLIENT_ID) && segs[0] == TENANT;
        let by_secret = f.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
        let assertion = f.get("client_assertion").map(String::as_str);
        let by_assertion = f.get("client_assertion_type").map(String::as_str)
            == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            && matches!(assertion, Some(FEDERATED_TOKEN | PIPELINES_OIDC_TOKEN));
        if f.get("grant_type").map(String::as_str) != Some("client_credentials")
            || !ok_client
            || !(by_secret || by_assertion)
        {
            let (code, text) = if f.contains_key("client_assertion") {
                (
                    70021,
                    "AADSTS70021: No matching federated identity record found for presented assertion.",
                )
            } else {
                (
                    7_000_215,
                    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.",
                )
            };
            return (
                401,
                Vec::new(),
                json!({"error": "invalid_client", "error_description": text, "error_codes": [code]}),
            );
        }
        let kind = if by_secret {
            "secret"
        } else if assertion == Some(FEDERATED_TOKEN) {
            "workload"
        } else {
            "pipelines"
        };
        let t = token(s, kind);
        return (
            200,
            Vec::new(),
            json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": t}),
        );
    }
    // Managed identity (App Service flavour).
    if r.method == "GET" && path == "/msi/token" {
        if r.header("x-identity-header") != Some(IDENTITY_HEADER) {
            return (
                401,
                Vec::new(),
                json!({"statusCode": 401, "message": "Unauthorized request"}),
            );
        }
        let resource = query(&r.path, "resource").unwrap_or_default();
        let t = token(s, "msi");
        return (
            200,
            Vec::new(),
            json!({"access_token": t, "expires_on": (now() + 3600).to_string(), "resource": resource, "token_type": "Bearer", "client_id": CLIENT_ID}),
        );
    }
    // Azure Pipelines OIDC.
    if r.method == "POST" && path == "/oidc" {
        if r.header("authorization") != Some(&format!("Bearer {SYSTEM_ACCESS_TOKEN}"))
            || query(&r.path, "serviceConnectionId").is_none()
        {
            return (401, Vec::new(), json!({"message": "unauthorized"}));
        }
        return (200, Vec::new(), json!({"oidcToken": PIPELINES_OIDC_TOKEN}));
    }
    // GitHub Actions OIDC (`ACTIONS_ID_TOKEN_REQUEST_URL`).
    if r.method == "GET" && path == "/gh/idtoken" {
        if r.header("authorization") != Some(&format!("Bearer {GITHUB_REQUEST_TOKEN}"))
            || query(&r.path, "audience").as_deref() != Some("api://AzureADTokenExchange")
        {
            return (401, Vec::new(), json!({"message": "unauthorized"}));
        }
        return (
            200,
            Vec::new(),
            json!({"count": 1, "value": FEDERATED_TOKEN}),
        );
    }
    let bearer = r
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| t.starts_with("tok-"));
    // Key Vault.
    if segs.first() == Some(&"secrets") && r.method == "GET" {
        if query(&r.path, "api-version").is_none() {
            return arm_error(
                400,
                "BadParameter",
                "The 'api-version' query parameter is missing.",
            );
        }
        if !bearer {
            return (
                401,
                vec![(
                    "WWW-Authenticate".into(),
                    format!(
                        "Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", resource=\"https://vault.azure.net\""
                    ),
                )],
                json!({"error": {"code": "Unauthorized", "message": "Request is missing a Bearer or PoP token."}}),
            );
        }
        let name = segs.get(1).copied().unwrap_or_default();
        let version = segs.get(2).copied().filter(|v| !v.is_empty());
        if s.forbidden.contains(name) {
            return (
                403,
                Vec::new(),
                json!({"error": {"code": "Forbidden", "message": format!("The user, group or application does not have secrets get permission on key vault. Caller: appid={CLIENT_ID}"), "innererror": {"code": "ForbiddenByRbac"}}}),
            );
        }
        let key = match version {
            Some(v) => format!("{name}/{v}"),
            None => name.to_owned(),
        };
        return match s.secrets.get(&key) {
            Some(v) => (
                200,
                Vec::new(),
                json!({"value": v, "id": format!("https://kv.vault.azure.net/secrets/{name}/{}", version.unwrap_or("0123456789abcdef")), "attributes": {"enabled": true, "created": 1_700_000_000, "updated": 1_700_000_000}, "tags": {}}),
            ),
            None => (
                404,
                Vec::new(),
                json!({"error": {"code": "SecretNotFound", "message": format!("A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command.")}}),
            ),
        };
    }
    // A migrator's write to an Azure SQL database.
    if r.method == "PUT"
        && let ["fake", "sql", name] = segs.as_slice()
    {
        return match s.sql.get_mut(*name) {
            Some(db) => {
                db["content"] = json!(r.body);
                (200, Vec::new(), Value::Null)
            }
            None => arm_error(404, "NotFound", "no such database"),
        };
    }
    if segs.first() != Some(&"subscriptions") {
        return arm_error(404, "NotFound", "no such endpoint in the fake");
    }
    // Resource Manager.
    if query(&r.path, "api-version").is_none() {
        return arm_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    }
    if !bearer {
        return (
            401,
            vec![(
                "WWW-Authenticate".into(),
                "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\""
                    .into(),
            )],
            json!({"error": {"code": "AuthenticationFailed", "message": "Authentication failed. The 'Authorization' header is missing."}}),
        );
    }
    if let Some(i) = s
        .throttles
        .iter()
        .position(|(m, p, n, _)| *n > 0 && *m == r.method && path.starts_with(p.as_str()))
    {
        s.throttles[i].2 -= 1;
        let secs = s.throttles[i].3;
        return (
            429,
            vec![("Retry-After".into(), secs.to_string())],
            json!({"error": {"code": "TooManyRequests", "message": "The request is being throttled."}}),
        );
    }
    // Operation monitors.
    if let Some(kind @ ("containerappOperationStatuses" | "containerappOperationResults")) =
        segs.get(6).copied()
    {
        let id = segs.get(7).copied().unwrap_or_default().to_owned();
        let Some((left, app)) = s.operations.get(&id).cloned() else {
            return arm_error(404, "NotFound", "operation not found");
        };
        if left > 0 {
            s.operations.insert(id.clone(), (left - 1, app));
            return if kind == "containerappOperationStatuses" {
                (
                    200,
                    vec![("Retry-After".into(), "1".into())],
                    json!({"id": id, "name": id, "status": "InProgress"}),
                )
            } else {
                (202, vec![("Retry-After".into(), "1".into())], Value::Null)
            };
        }
        let resource = match app.strip_prefix("jobs/") {
            Some(job) => s.jobs.get_mut(job).expect("operations change known jobs"),
            None => s.apps.get_mut(&app).expect("operations change known apps"),
        };
        resource["properties"]["provisioningState"] = json!("Succeeded");
        let resource = resource.clone();
        return if kind == "containerappOperationStatuses" {
            (
                200,
                Vec::new(),
                json!({"id": id, "name": id, "status": "Succeeded"}),
            )
        } else {
            (200, Vec::new(), shown(&resource))
        };
    }
    if let [_, _, "providers", "Microsoft.Sql", "locations", _, kind, id] = segs.as_slice() {
        return sql_change(s, kind, id);
    }
    if segs.len() >= 8 && segs[5] == "Microsoft.Sql" {
        return sql(s, r, &segs);
    }
    if segs.len() >= 8 && segs[5] == "Microsoft.App" && segs[6] == "jobs" {
        return job(s, r, &segs);
    }
    if segs.len() >= 8 && segs[5] == "Microsoft.Web" && segs[6] == "sites" {
        return site(s, r, &segs);
    }
    // /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.App/containerApps/{app}[/...]
    if segs.len() < 8
        || segs[1] != SUBSCRIPTION
        || segs[5] != "Microsoft.App"
        || segs[6] != "containerApps"
    {
        return arm_error(404, "ResourceNotFound", "The resource was not found.");
    }
    let name = segs[7].to_owned();
    let Some(app) = s.apps.get(&name).cloned() else {
        return arm_error(
            404,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.App/containerApps/{name}' under resource group '{}' was not found.",
                segs[3]
            ),
        );
    };
    container_app(s, r, &name, app, &segs[8..])
}

fn invalid_field(field: &str, details: &str) -> Answer {
    arm_error(
        400,
        "WebhookInvalidParameterValue",
        &format!(
            "The following field(s) are either invalid or missing. Field '{field}' is invalid with details: 'Invalid value: {details}';."
        ),
    )
}

/// A revision suffix as Azure accepts it: lowercase letters, digits and `-`, starting
/// with a letter, ending with a letter or digit, no `--`, the revision name at most 63
/// characters.
fn suffix_problem(app: &str, suffix: &str) -> Option<String> {
    let ok = suffix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && suffix.starts_with(|c: char| c.is_ascii_lowercase())
        && !suffix.ends_with('-')
        && !suffix.contains("--")
        && app.len() + 2 + suffix.len() <= 63;
    (!ok).then(|| format!(
        "\"{suffix}\": a revision suffix must consist of lower case alphanumeric characters or '-', start with an alphabetic character, end with an alphanumeric character, not contain '--', and the revision name must be at most 63 characters"
    ))
}

/// Checks `configuration.ingress.traffic` as Azure does: each entry names an existing,
/// active revision (or is `latestRevision: true`), labels are unique and the weights add
/// up to 100. `new`: the revision the same request creates.
fn traffic_problem(s: &State, app: &str, traffic: &Value, new: Option<&str>) -> Option<Answer> {
    let Some(entries) = traffic.as_array() else {
        return Some(invalid_field(
            "configuration.ingress.traffic",
            "traffic must be a list",
        ));
    };
    let mut total = 0;
    let mut labels = BTreeSet::new();
    for e in entries {
        let latest = e["latestRevision"].as_bool() == Some(true);
        let named = e["revisionName"].as_str();
        match (latest, named) {
            (true, Some(_)) | (false, None) => {
                return Some(invalid_field(
                    "configuration.ingress.traffic",
                    "each traffic entry names exactly one of revisionName and latestRevision: true",
                ));
            }
            (false, Some(rev)) if Some(rev) != new => {
                match s.revisions.get(&format!("{app}/{rev}")) {
                    None => {
                        return Some(invalid_field(
                            "configuration.ingress.traffic",
                            &format!("revision '{rev}' not found"),
                        ));
                    }
                    Some(r) if !r.active => {
                        return Some(invalid_field(
                            "configuration.ingress.traffic",
                            &format!(
                                "revision '{rev}' is not active; activate it before sending it traffic"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            _ => {}
        }
        if let Some(label) = e["label"].as_str()
            && !labels.insert(label.to_owned())
        {
            return Some(invalid_field(
                "configuration.ingress.traffic",
                &format!("label '{label}' is used more than once"),
            ));
        }
        let Some(weight) = e["weight"].as_u64().filter(|w| *w <= 100) else {
            return Some(invalid_field(
                "configuration.ingress.traffic",
                "each weight must be a whole number from 0 to 100",
            ));
        };
        total += weight;
    }
    (total != 100).then(|| {
        invalid_field(
            "configuration.ingress.traffic",
            &format!("traffic weights must add up to 100, not {total}"),
        )
    })
}

/// Each revision's share of the traffic: `configuration.ingress.traffic` with
/// `latestRevision: true` read as `latestRevisionName`; without traffic rules, all of it
/// to the latest ready revision.
pub fn weights(app: &Value) -> BTreeMap<String, u64> {
    let p = &app["properties"];
    let mut weights = BTreeMap::new();
    match p["configuration"]["ingress"]["traffic"].as_array() {
        Some(entries) => {
            for e in entries {
                let rev = if e["latestRevision"].as_bool() == Some(true) {
                    p["latestRevisionName"].as_str()
                } else {
                    e["revisionName"].as_str()
                };
                if let Some(rev) = rev {
                    *weights.entry(rev.to_owned()).or_insert(0) +=
                        e["weight"].as_u64().unwrap_or(0);
                }
            }
        }
        None => {
            if let Some(rev) = p["latestReadyRevisionName"].as_str() {
                weights.insert(rev.to_owned(), 100);
            }
        }
    }
    weights
}

fn revision_json(s: &State, app: &str, name: &str, rev: &Revision) -> Value {
    let weight = weights(&s.apps[app]).get(name).copied().unwrap_or(0);
    let running = match rev.state.as_str() {
        "Provisioned" if rev.active => "Running",
        "Provisioned" => "Stopped",
        "Failed" => "Failed",
        _ => "Processing",
    };
    let mut v = json!({
        "id": format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.App/containerApps/{app}/revisions/{name}"),
        "name": name,
        "type": "Microsoft.App/containerApps/revisions",
        "properties": {
            "createdTime": format!("2026-01-01T00:{:02}:00Z", rev.created % 60),
            "provisioningState": rev.state,
            "runningState": running,
            "active": rev.active,
            "trafficWeight": weight,
            "healthState": if rev.state == "Failed" { "Unhealthy" } else { "Healthy" },
            "template": rev.template,
        }
    });
    if rev.state == "Failed" {
        v["properties"]["provisioningError"] =
            json!("Container 'web' failed to start: exit code 1");
    }
    shown_template(&mut v);
    v
}

/// `Microsoft.App/containerApps/{name}[/...]`: GET, PATCH (a merge patch; a `template`
/// change makes a new revision, named by `template.revisionSuffix` when set; traffic
/// checked as Azure does), start/stop, and the revisions: list, get, restart, activate,
/// deactivate.
fn container_app(s: &mut State, r: &Request, name: &str, app: Value, rest: &[&str]) -> Answer {
    let name = name.to_owned();
    match (r.method.as_str(), rest) {
        ("GET", []) => (200, Vec::new(), shown(&app)),
        ("PATCH", []) => {
            let Ok(patch) = serde_json::from_str::<Value>(&r.body) else {
                return arm_error(
                    400,
                    "InvalidRequestContent",
                    "The request content was invalid and could not be deserialized.",
                );
            };
            if r.header("content-type") != Some("application/json") {
                return arm_error(
                    415,
                    "UnsupportedMediaType",
                    "Content-Type must be application/json.",
                );
            }
            let mut updated = app.clone();
            merge(&mut updated, &patch);
            if updated["properties"]["template"]["scale"]["maxReplicas"]
                .as_u64()
                .is_some_and(|n| n < 1)
            {
                return arm_error(
                    400,
                    "ContainerAppInvalidScaleSpec",
                    "Container App's scale setting is invalid: maxReplicas must be between 1 and 1000.",
                );
            }
            let mut new_revision = None;
            if patch["properties"].get("template").is_some() {
                // The suffix stays in the template: the next change with it fails, as in Azure.
                let rev = if let Some(suffix) =
                    updated["properties"]["template"]["revisionSuffix"].as_str()
                {
                    if let Some(why) = suffix_problem(&name, suffix) {
                        return invalid_field("template.revisionsuffix", &why);
                    }
                    let rev = format!("{name}--{suffix}");
                    if s.revisions.contains_key(&format!("{name}/{rev}")) {
                        return invalid_field(
                            "template.revisionsuffix",
                            &format!("\"{suffix}\": revision with suffix {suffix} already exists"),
                        );
                    }
                    rev
                } else {
                    let mut n = s
                        .revisions
                        .keys()
                        .filter(|k| k.starts_with(&format!("{name}/")))
                        .count()
                        + 1;
                    while s.revisions.contains_key(&format!("{name}/{name}--r{n}")) {
                        n += 1;
                    }
                    format!("{name}--r{n}")
                };
                new_revision = Some(rev);
            }
            if let Some(traffic) = patch["properties"]["configuration"]["ingress"].get("traffic")
                && let Some(refused) = traffic_problem(s, &name, traffic, new_revision.as_deref())
            {
                return refused;
            }
            if let Some(rev) = new_revision {
                updated["properties"]["latestRevisionName"] = json!(rev);
                let state = if s.failing_revisions > 0 {
                    s.failing_revisions -= 1;
                    "Failed"
                } else {
                    "Provisioning"
                };
                s.created += 1;
                let revision = Revision {
                    state: state.into(),
                    reads: 0,
                    active: state != "Failed",
                    template: updated["properties"]["template"].clone(),
                    created: s.created,
                };
                s.revisions.insert(format!("{name}/{rev}"), revision);
            }
            updated["properties"]["provisioningState"] = json!("InProgress");
            s.apps.insert(name.clone(), updated);
            operation(s, r, &name)
        }
        ("POST", [action @ ("stop" | "start")]) => {
            let status = if *action == "stop" {
                "Stopped"
            } else {
                "Running"
            };
            let app = s.apps.get_mut(&name).unwrap();
            app["properties"]["runningStatus"] = json!(status);
            app["properties"]["provisioningState"] = json!("InProgress");
            operation(s, r, &name)
        }
        ("GET", ["revisions"]) => {
            let mut listed: Vec<(&String, &Revision)> = s
                .revisions
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{name}/")))
                .collect();
            listed.sort_by_key(|(_, r)| r.created);
            let value: Vec<Value> = listed
                .into_iter()
                .map(|(k, rev)| revision_json(s, &name, &k[name.len() + 1..], rev))
                .collect();
            (200, Vec::new(), json!({"value": value}))
        }
        ("GET", ["revisions", rev]) => {
            let key = format!("{name}/{rev}");
            let Some(revision) = s.revisions.get_mut(&key) else {
                return revision_not_found(rev);
            };
            if revision.state == "Provisioning" && revision.reads >= 1 {
                revision.state = "Provisioned".into();
            }
            revision.reads += 1;
            let provisioned = revision.state == "Provisioned";
            if provisioned {
                let app = s.apps.get_mut(&name).unwrap();
                app["properties"]["latestReadyRevisionName"] = json!(rev);
                // One active revision in single-revision mode: the new one replaces the rest.
                if app["properties"]["configuration"]["activeRevisionsMode"] != "Multiple"
                    && app["properties"]["latestRevisionName"] == json!(rev)
                {
                    for (k, other) in &mut s.revisions {
                        if k.starts_with(&format!("{name}/")) && *k != key {
                            other.active = false;
                        }
                    }
                }
            }
            let revision = s.revisions[&key].clone();
            (200, Vec::new(), revision_json(s, &name, rev, &revision))
        }
        ("POST", ["revisions", rev, "restart"]) => {
            if !s.revisions.contains_key(&format!("{name}/{rev}")) {
                return revision_not_found(rev);
            }
            s.restarts.push(format!("{name}/{rev}"));
            (200, Vec::new(), Value::Null)
        }
        ("POST", ["revisions", rev, action @ ("activate" | "deactivate")]) => {
            let key = format!("{name}/{rev}");
            if !s.revisions.contains_key(&key) {
                return revision_not_found(rev);
            }
            if *action == "deactivate" && weights(&app).get(*rev).is_some_and(|w| *w > 0) {
                return arm_error(
                    400,
                    "ContainerAppRevisionInvalidOperation",
                    &format!(
                        "Revision '{rev}' has traffic weight; move its traffic before deactivating it."
                    ),
                );
            }
            s.revisions.get_mut(&key).unwrap().active = *action == "activate";
            s.activations.push(format!("{action} {rev}"));
            (200, Vec::new(), Value::Null)
        }
        _ => arm_error(404, "NotFound", "no such operation in the fake"),
    }
}

fn revision_not_found(rev: &str) -> Answer {
    arm_error(
        404,
        "ContainerAppRevisionNotFound",
        &format!("Revision '{rev}' not found."),
    )
}

/// Starts a long-running operation on `app` that ends after one poll: 202 with `Location`
/// (and `Azure-AsyncOperation`, unless `location_only`) and `Retry-After`.
fn operation(s: &mut State, r: &Request, app: &str) -> Answer {
    let op = format!("op-{}", s.operations.len() + 1);
    s.operations.insert(op.clone(), (1, app.to_owned()));
    let base = format!(
        "https://management.azure.com/subscriptions/{SUBSCRIPTION}/providers/Microsoft.App/locations/westeurope"
    );
    let api = query(&r.path, "api-version").unwrap_or_default();
    let mut headers = vec![
        (
            "Location".to_owned(),
            format!("{base}/containerappOperationResults/{op}?api-version={api}"),
        ),
        ("Retry-After".to_owned(), "1".to_owned()),
    ];
    if !s.location_only {
        headers.push((
            "Azure-AsyncOperation".into(),
            format!("{base}/containerappOperationStatuses/{op}?api-version={api}"),
        ));
    }
    (202, headers, Value::Null)
}

/// `Microsoft.App/jobs/{name}`: GET, PATCH as a merge patch (an operation), and
/// `POST .../stop`, which stops every running execution (an operation).
fn job(s: &mut State, r: &Request, segs: &[&str]) -> Answer {
    let name = segs[7].to_owned();
    let Some(job) = s.jobs.get(&name).cloned() else {
        return arm_error(
            404,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.App/jobs/{name}' under resource group '{}' was not found.",
                segs[3]
            ),
        );
    };
    match (r.method.as_str(), &segs[8..]) {
        ("GET", []) => (200, Vec::new(), job),
        ("PATCH", []) => {
            let Ok(patch) = serde_json::from_str::<Value>(&r.body) else {
                return arm_error(
                    400,
                    "InvalidRequestContent",
                    "The request content was invalid and could not be deserialized.",
                );
            };
            let mut updated = job;
            merge(&mut updated, &patch);
            updated["properties"]["provisioningState"] = json!("InProgress");
            s.jobs.insert(name.clone(), updated);
            operation(s, r, &format!("jobs/{name}"))
        }
        ("POST", ["stop"]) => {
            for e in s.executions.entry(name.clone()).or_default() {
                *e = "Stopped".into();
            }
            operation(s, r, &format!("jobs/{name}"))
        }
        _ => arm_error(404, "NotFound", "no such operation in the fake"),
    }
}

/// The app as `GET` shows it: env entries with an empty value lose their `value`.
fn shown(app: &Value) -> Value {
    let mut app = app.clone();
    shown_template(&mut app);
    app
}

/// Drops empty env values from `properties.template`, as `GET` does.
fn shown_template(resource: &mut Value) {
    if let Some(cs) = resource["properties"]["template"]["containers"].as_array_mut() {
        for c in cs {
            if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
                for e in env {
                    if e["value"] == json!("") {
                        e.as_object_mut().unwrap().remove("value");
                    }
                }
            }
        }
    }
}

/// JSON merge patch (RFC 7386): objects merge, anything else replaces, `null` deletes.
fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Swaps slot `slot` of site `name` with production: the images, and the app settings
/// that are not slot settings (those stay where they are).
fn swap(s: &mut State, name: &str, slot: &str) {
    let code = s.site_code.get_mut(name).expect("swaps change known sites");
    let sticky = code.sticky.clone();
    let staged = code.slots.get_mut(slot).expect("swaps change known slots");
    std::mem::swap(&mut code.image, &mut staged.image);
    let production = &mut s.sites.get_mut(name).expect("a known site").1;
    let moving = |m: &serde_json::Map<String, Value>| -> serde_json::Map<String, Value> {
        m.iter()
            .filter(|(k, _)| !sticky.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (from_production, from_slot) = (moving(production), moving(&staged.settings));
    production.retain(|k, _| sticky.contains(k));
    production.extend(from_slot);
    staged.settings.retain(|k, _| sticky.contains(k));
    staged.settings.extend(from_production);
}

/// A `config/web` resource.
fn web_config(id: &str, image: &str) -> Value {
    json!({"id": format!("{id}/config/web"), "name": "web", "type": "Microsoft.Web/sites/config",
        "properties": {"linuxFxVersion": image, "alwaysOn": true, "http20Enabled": true}})
}

/// `PATCH .../config/web`: the new `linuxFxVersion`, if the body is a valid one.
fn patched_image(r: &Request) -> Result<Option<String>, Answer> {
    let Ok(body) = serde_json::from_str::<Value>(&r.body) else {
        return Err(arm_error(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        ));
    };
    let Some(props) = body["properties"].as_object() else {
        return Err(arm_error(400, "BadRequest", "properties is required."));
    };
    match props.get("linuxFxVersion") {
        None => Ok(None),
        Some(Value::String(fx)) => Ok(Some(fx.clone())),
        Some(_) => Err(arm_error(
            400,
            "BadRequest",
            "linuxFxVersion must be a string.",
        )),
    }
}

/// The code parts of a site: production's and the slots' `config/web`, the slots, their
/// app settings, `slotConfigNames`, `slotsswap` and its operation. `None`: not one of them.
fn site_code(s: &mut State, r: &Request, segs: &[&str], name: &str, id: &str) -> Option<Answer> {
    let api = query(&r.path, "api-version").unwrap_or_default();
    let code = s.site_code.entry(name.to_owned()).or_default();
    let answer = match (r.method.as_str(), &segs[8..]) {
        ("GET", ["config", "web"]) => (200, Vec::new(), web_config(id, &code.image)),
        ("PATCH", ["config", "web"]) => match patched_image(r) {
            Err(refused) => refused,
            Ok(image) => {
                if let Some(image) = image {
                    code.image = image;
                }
                (200, Vec::new(), web_config(id, &code.image))
            }
        },
        ("GET", ["config", "slotConfigNames"]) => (
            200,
            Vec::new(),
            json!({"id": format!("{id}/config/slotConfigNames"), "name": "slotConfigNames",
                "properties": {"appSettingNames": code.sticky, "connectionStringNames": [], "azureStorageConfigNames": []}}),
        ),
        (method, ["slots", slot, rest @ ..]) => {
            let slot = (*slot).to_owned();
            let slot_id = format!("{id}/slots/{slot}");
            let Some(staged) = code.slots.get_mut(&slot) else {
                return Some(arm_error(
                    404,
                    "ResourceNotFound",
                    &format!(
                        "The Resource 'Microsoft.Web/sites/{name}/slots/{slot}' under resource group '{}' was not found.",
                        segs[3]
                    ),
                ));
            };
            match (method, rest) {
                ("GET", []) => (
                    200,
                    Vec::new(),
                    json!({"id": slot_id, "name": format!("{name}/{slot}"), "type": "Microsoft.Web/sites/slots",
                        "properties": {"state": "Running", "enabled": true, "defaultHostName": format!("{name}-{slot}.azurewebsites.net")}}),
                ),
                ("GET", ["config", "web"]) => {
                    (200, Vec::new(), web_config(&slot_id, &staged.image))
                }
                ("PATCH", ["config", "web"]) => match patched_image(r) {
                    Err(refused) => refused,
                    Ok(image) => {
                        if let Some(image) = image {
                            staged.image = image;
                        }
                        (200, Vec::new(), web_config(&slot_id, &staged.image))
                    }
                },
                ("POST", ["config", "appsettings", "list"]) => (
                    200,
                    Vec::new(),
                    json!({"id": format!("{slot_id}/config/appsettings"), "name": "appsettings", "properties": staged.settings}),
                ),
                ("POST", ["slotsswap"]) => {
                    let Ok(body) = serde_json::from_str::<Value>(&r.body) else {
                        return Some(arm_error(
                            400,
                            "InvalidRequestContent",
                            "The request content was invalid and could not be deserialized.",
                        ));
                    };
                    let (Some(target), Some(_)) =
                        (body["targetSlot"].as_str(), body["preserveVnet"].as_bool())
                    else {
                        return Some(arm_error(
                            400,
                            "BadRequest",
                            "targetSlot and preserveVnet are required.",
                        ));
                    };
                    if target != "production" {
                        return Some(arm_error(
                            400,
                            "BadRequest",
                            "This fake swaps a slot with production only.",
                        ));
                    }
                    let op = format!("swap-{}", s.site_ops.len() + 1);
                    s.site_ops
                        .insert(op.clone(), (1, name.to_owned(), slot.clone(), false));
                    let base = format!("https://management.azure.com{slot_id}");
                    (
                        202,
                        vec![
                            (
                                "Location".to_owned(),
                                format!("{base}/operationresults/{op}?api-version={api}"),
                            ),
                            (
                                "Azure-AsyncOperation".to_owned(),
                                format!("{base}/operationstatuses/{op}?api-version={api}"),
                            ),
                            ("Retry-After".to_owned(), "1".to_owned()),
                        ],
                        Value::Null,
                    )
                }
                ("GET", [kind @ ("operationresults" | "operationstatuses"), op]) => {
                    let Some((left, site, slot, done)) = s.site_ops.get(*op).cloned() else {
                        return Some(arm_error(404, "NotFound", "operation not found"));
                    };
                    let statuses = *kind == "operationstatuses";
                    if left > 0 {
                        s.site_ops
                            .insert((*op).to_owned(), (left - 1, site, slot, done));
                        return Some(if statuses {
                            (
                                200,
                                vec![("Retry-After".into(), "1".into())],
                                json!({"id": op, "name": op, "status": "InProgress"}),
                            )
                        } else {
                            (202, vec![("Retry-After".into(), "1".into())], Value::Null)
                        });
                    }
                    if !done {
                        swap(s, &site, &slot);
                        s.site_ops.insert((*op).to_owned(), (0, site, slot, true));
                    }
                    if statuses {
                        (
                            200,
                            Vec::new(),
                            json!({"id": op, "name": op, "status": "Succeeded"}),
                        )
                    } else {
                        (200, Vec::new(), Value::Null)
                    }
                }
                _ => arm_error(404, "NotFound", "no such operation in the fake"),
            }
        }
        _ => return None,
    };
    Some(answer)
}

/// `Microsoft.Web/sites/{name}`: GET, stop/start/restart, app settings list and PUT (which
/// replaces the whole set and restarts the app, as Azure does), and the code parts
/// (`site_code`).
fn site(s: &mut State, r: &Request, segs: &[&str]) -> Answer {
    let name = segs[7].to_owned();
    if segs[1] != SUBSCRIPTION {
        return arm_error(
            404,
            "SubscriptionNotFound",
            "The subscription could not be found.",
        );
    }
    if s.sites.contains_key(&name) {
        let id = format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/{}/providers/Microsoft.Web/sites/{name}",
            segs[3]
        );
        if let Some(answer) = site_code(s, r, segs, &name, &id) {
            return answer;
        }
    }
    let Some((state, settings, restarts)) = s.sites.get_mut(&name) else {
        return arm_error(
            404,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.Web/sites/{name}' under resource group '{}' was not found.",
                segs[3]
            ),
        );
    };
    let id = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{}/providers/Microsoft.Web/sites/{name}",
        segs[3]
    );
    match (r.method.as_str(), &segs[8..]) {
        ("GET", []) => (
            200,
            Vec::new(),
            json!({"id": id, "name": name, "type": "Microsoft.Web/sites", "properties": {"state": state, "enabled": true, "defaultHostName": format!("{name}.azurewebsites.net")}}),
        ),
        ("POST", ["stop"]) => {
            *state = "Stopped".into();
            (200, Vec::new(), Value::Null)
        }
        ("POST", ["start"]) => {
            *state = "Running".into();
            (200, Vec::new(), Value::Null)
        }
        ("POST", ["restart"]) => {
            *restarts += 1;
            (200, Vec::new(), Value::Null)
        }
        ("POST", ["config", "appsettings", "list"]) => (
            200,
            Vec::new(),
            json!({"id": format!("{id}/config/appsettings"), "name": "appsettings", "type": "Microsoft.Web/sites/config", "properties": settings}),
        ),
        ("PUT", ["config", "appsettings"]) => {
            let Ok(body) = serde_json::from_str::<Value>(&r.body) else {
                return arm_error(
                    400,
                    "InvalidRequestContent",
                    "The request content was invalid and could not be deserialized.",
                );
            };
            let Some(props) = body["properties"].as_object() else {
                return arm_error(400, "BadRequest", "properties is required.");
            };
            if props.values().any(|v| !v.is_string()) {
                return arm_error(400, "BadRequest", "app setting values must be strings.");
            }
            settings.clone_from(props);
            *restarts += 1;
            (
                200,
                Vec::new(),
                json!({"id": format!("{id}/config/appsettings"), "name": "appsettings", "properties": settings}),
            )
        }
        _ => arm_error(404, "NotFound", "no such operation in the fake"),
    }
}

/// `/subscriptions/.../servers/sql-prod/databases/{name}`.
pub fn sql_path(name: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Sql/servers/sql-prod/databases/{name}"
    )
}

/// The container and blob a `storageUri` names, signed with `key` (Azurite's path-style
/// URL: `http://host:port/account/container/blob`).
fn blob_at(
    uri: &str,
    key: &str,
) -> Result<(cutover::adapters::azure_storage::Container, String), String> {
    use cutover::adapters::azure_storage::{Account, Auth, Container};
    let parts: Vec<&str> = uri.splitn(6, '/').collect();
    let [scheme, "", host, account, container, blob] = parts.as_slice() else {
        return Err(format!("storageUri {uri} is not a blob URL"));
    };
    let account = Account::parse(&format!("{scheme}//{host}/{account}"))?;
    let container = Container::connect(
        account,
        container,
        Auth::Key(cutover::secret::Secret::new(key)),
    )?;
    Ok((container, (*blob).to_owned()))
}

fn write_blob(uri: &str, key: &str, bytes: Vec<u8>) -> Result<(), String> {
    let (container, blob) = blob_at(uri, key)?;
    super::rt().block_on(async {
        container
            .client
            .blob_client(&blob)
            .upload(azure_core::http::RequestContent::from(bytes), None)
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot write {uri}: {e}"))
    })
}

fn read_blob(uri: &str, key: &str) -> Result<Vec<u8>, String> {
    let (container, blob) = blob_at(uri, key)?;
    super::rt().block_on(async {
        let response = container
            .client
            .blob_client(&blob)
            .download(None)
            .await
            .map_err(|e| format!("cannot read {uri}: {e}"))?;
        response
            .body
            .collect()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("cannot read {uri}: {e}"))
    })
}

/// The fields an export or import must carry, checked as Azure does.
fn check_import_export(body: &Value) -> Option<Answer> {
    for field in [
        "storageKeyType",
        "storageKey",
        "storageUri",
        "administratorLogin",
        "administratorLoginPassword",
        "authenticationType",
    ] {
        if body[field].as_str().is_none_or(str::is_empty) {
            return Some(arm_error(
                400,
                "InvalidParameterValue",
                &format!("Invalid value given for parameter {field}."),
            ));
        }
    }
    if body["storageKeyType"] != "StorageAccessKey" && body["storageKeyType"] != "SharedAccessKey" {
        return Some(arm_error(
            400,
            "InvalidParameterValue",
            "Invalid value given for parameter storageKeyType.",
        ));
    }
    if !body["authenticationType"]
        .as_str()
        .unwrap_or_default()
        .eq_ignore_ascii_case("sql")
    {
        return Some(arm_error(
            400,
            "InvalidParameterValue",
            "Invalid value given for parameter authenticationType.",
        ));
    }
    if body["administratorLogin"] != SQL_ADMIN || body["administratorLoginPassword"] != SQL_PASSWORD
    {
        return Some(arm_error(
            400,
            "ImportExportJobError",
            "The ImportExport operation failed because of invalid credentials: Login failed for user.",
        ));
    }
    None
}

fn sql(s: &mut State, r: &Request, segs: &[&str]) -> Answer {
    let api = query(&r.path, "api-version").unwrap_or_default();
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    let start = |s: &mut State, body: Value, export_of: Option<String>| -> Answer {
        let id = format!("op-{}", s.sql_ops.len() + 1);
        s.sql_ops.insert(id.clone(), (1, body, export_of));
        (
            202,
            vec![
                (
                    "Location".into(),
                    format!(
                        "https://management.azure.com/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Sql/locations/westeurope/importExportOperationResults/{id}?api-version={api}"
                    ),
                ),
                ("Retry-After".into(), "1".into()),
            ],
            Value::Null,
        )
    };
    match (r.method.as_str(), &segs[6..]) {
        ("GET", ["locations", _, "importExportOperationResults", id]) => {
            let Some((left, body, export_of)) = s.sql_ops.get(*id).cloned() else {
                return arm_error(404, "ResourceNotFound", "operation not found");
            };
            if left > 0 {
                s.sql_ops
                    .insert((*id).to_owned(), (left - 1, body, export_of));
                return (202, vec![("Retry-After".into(), "1".into())], Value::Null);
            }
            let uri = body["storageUri"].as_str().unwrap_or_default();
            let key = body["storageKey"].as_str().unwrap_or_default();
            let (kind, name) = if let Some(db) = export_of {
                if s.failing_exports {
                    let _ = write_blob(uri, key, format!("{BACPAC_HEADER}partial").into_bytes());
                    return arm_error(
                        400,
                        "ImportExportJobError",
                        "The ImportExport operation with Request Id 'x' failed due to 'Could not export schema and data from database.'.",
                    );
                }
                let content = s.sql[&db]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if let Err(e) =
                    write_blob(uri, key, format!("{BACPAC_HEADER}{content}").into_bytes())
                {
                    return arm_error(400, "ImportExportJobError", &e);
                }
                ("Export", db)
            } else {
                let name = body["databaseName"].as_str().unwrap_or_default().to_owned();
                if s.failing_imports {
                    return arm_error(
                        400,
                        "ImportExportJobError",
                        "The ImportExport operation with Request Id 'y' failed due to 'Could not import package.'.",
                    );
                }
                let bytes = match read_blob(uri, key) {
                    Ok(b) => b,
                    Err(e) => return arm_error(400, "ImportExportJobError", &e),
                };
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let Some(content) = text.strip_prefix(BACPAC_HEADER) else {
                    return arm_error(
                        400,
                        "ImportExportJobError",
                        "The file is not a valid bacpac.",
                    );
                };
                let db = json!({
                    "id": sql_path(&name),
                    "name": name,
                    "type": "Microsoft.Sql/servers/databases",
                    "location": "westeurope",
                    "sku": {"name": body["serviceObjectiveName"], "tier": body["edition"]},
                    "properties": {"status": "Online", "maxSizeBytes": body["maxSizeBytes"].as_str().and_then(|m| m.parse::<u64>().ok())},
                    "content": content,
                });
                s.sql.insert(name.clone(), db);
                ("Import", name)
            };
            s.sql_ops.remove(*id);
            (
                200,
                Vec::new(),
                json!({"id": id, "name": id, "type": "Microsoft.Sql/servers/importExportOperationResults",
                    "properties": {"requestId": id, "requestType": kind, "status": "Completed",
                        "serverName": "sql-prod", "databaseName": name, "blobUri": uri}}),
            )
        }
        (_, ["servers", "sql-prod", rest @ ..]) => match (r.method.as_str(), rest) {
            ("GET", ["databases", name]) => match s.sql.get(*name) {
                Some(db) => {
                    let mut db = db.clone();
                    db.as_object_mut().unwrap().remove("content");
                    (200, Vec::new(), db)
                }
                None => arm_error(
                    404,
                    "ResourceNotFound",
                    &format!(
                        "The Resource 'Microsoft.Sql/servers/sql-prod/databases/{name}' under resource group 'rg' was not found."
                    ),
                ),
            },
            ("POST", ["databases", name, "export"]) => {
                if !s.sql.contains_key(*name) {
                    return arm_error(404, "ResourceNotFound", "database not found");
                }
                if let Some(refused) = check_import_export(&body) {
                    return refused;
                }
                start(s, body, Some((*name).to_owned()))
            }
            ("POST", ["import"]) => {
                if let Some(refused) = check_import_export(&body) {
                    return refused;
                }
                for field in [
                    "databaseName",
                    "edition",
                    "serviceObjectiveName",
                    "maxSizeBytes",
                ] {
                    if body[field].as_str().is_none_or(str::is_empty) {
                        return arm_error(
                            400,
                            "InvalidParameterValue",
                            &format!("Invalid value given for parameter {field}."),
                        );
                    }
                }
                if s.sql.contains_key(body["databaseName"].as_str().unwrap()) {
                    return arm_error(409, "DatabaseAlreadyExists", "The database already exists.");
                }
                start(s, body, None)
            }
            ("POST", ["databases", name, "move"]) => {
                let target = body["id"].as_str().unwrap_or_default();
                let Some(new) = target.strip_prefix(&sql_path("")) else {
                    return arm_error(
                        400,
                        "InvalidMoveTargetResourceId",
                        "The target resource id is invalid.",
                    );
                };
                if let Some(refused) = name_problem(new) {
                    return refused;
                }
                if s.sql.contains_key(new) {
                    return arm_error(
                        400,
                        "DatabaseNameInUse",
                        &format!(
                            "Database '{new}' already exists. Choose a different database name."
                        ),
                    );
                }
                let Some(mut db) = s.sql.remove(*name) else {
                    return arm_error(404, "ResourceNotFound", "database not found");
                };
                db["name"] = json!(new);
                db["id"] = json!(sql_path(new));
                s.sql.insert(new.to_owned(), db);
                (200, Vec::new(), Value::Null)
            }
            ("PUT", ["databases", name]) => copy(s, &body, name, &api),
            ("DELETE", ["databases", name]) => {
                if !s.sql.contains_key(*name) {
                    return (204, Vec::new(), Value::Null);
                }
                start_change(s, SqlChange::Delete((*name).to_owned()), &api)
            }
            _ => arm_error(404, "ResourceNotFound", "The resource was not found."),
        },
        _ => arm_error(404, "ResourceNotFound", "The resource was not found."),
    }
}

/// `PUT .../databases/{name}` with `createMode: Copy`, checked as Azure does.
fn copy(s: &mut State, body: &Value, name: &str, api: &str) -> Answer {
    if let Some(refused) = name_problem(name) {
        return refused;
    }
    let props = &body["properties"];
    if props["createMode"] != "Copy" {
        return arm_error(
            400,
            "InvalidParameterValue",
            "The fake only creates databases with createMode Copy.",
        );
    }
    let Some(location) = body["location"].as_str().filter(|l| !l.is_empty()) else {
        return arm_error(
            400,
            "LocationRequired",
            "The location property is required for this definition.",
        );
    };
    let Some(source) = props["sourceDatabaseId"]
        .as_str()
        .and_then(|id| id.strip_prefix(&sql_path("")))
    else {
        return arm_error(
            400,
            "InvalidParameterValue",
            "Invalid value given for parameter sourceDatabaseId.",
        );
    };
    let Some(from) = s.sql.get(source).cloned() else {
        return arm_error(
            404,
            "SourceDatabaseNotFound",
            &format!("The source database '{source}' does not exist."),
        );
    };
    if from["location"] != location {
        return arm_error(
            400,
            "InvalidParameterValue",
            "A copy on the same server must be in the server's location.",
        );
    }
    if s.sql.contains_key(name) {
        return arm_error(
            409,
            "DatabaseAlreadyExists",
            &format!("The database '{name}' already exists."),
        );
    }
    let pool = props["elasticPoolId"].as_str().filter(|p| !p.is_empty());
    if pool.is_none() && body["sku"]["name"] == "ElasticPool" {
        return arm_error(
            400,
            "InvalidParameterValue",
            "The sku 'ElasticPool' is only valid with properties.elasticPoolId.",
        );
    }
    let sku = match pool {
        Some(_) => json!({"name": "ElasticPool", "tier": from["sku"]["tier"], "capacity": 0}),
        None if body["sku"].is_object() => body["sku"].clone(),
        None => from["sku"].clone(),
    };
    let db = json!({
        "id": sql_path(name),
        "name": name,
        "type": "Microsoft.Sql/servers/databases",
        "location": location,
        "sku": sku,
        "properties": {
            "status": "Copying",
            "maxSizeBytes": from["properties"]["maxSizeBytes"],
            "sourceDatabaseId": props["sourceDatabaseId"],
        },
        "content": from["content"],
    });
    let mut db = db;
    if let Some(pool) = pool {
        db["properties"]["elasticPoolId"] = json!(pool);
    }
    s.sql.insert(name.to_owned(), db);
    start_change(s, SqlChange::Copy(name.to_owned()), api)
}

/// Starts a copy or deletion: 202 and the two monitors Azure SQL answers with.
fn start_change(s: &mut State, change: SqlChange, api: &str) -> Answer {
    let id = format!("change-{}", s.sql_changes.len() + 1);
    s.sql_changes.insert(id.clone(), (1, change));
    let base = format!(
        "https://management.azure.com/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Sql/locations/westeurope"
    );
    (
        202,
        vec![
            (
                "Azure-AsyncOperation".into(),
                format!("{base}/databaseAzureAsyncOperation/{id}?api-version={api}"),
            ),
            (
                "Location".into(),
                format!("{base}/databaseOperationResults/{id}?api-version={api}"),
            ),
            ("Retry-After".into(), "1".into()),
        ],
        Value::Null,
    )
}

/// The monitors of a copy or deletion: `InProgress` once, then the change is made.
fn sql_change(s: &mut State, kind: &str, id: &str) -> Answer {
    let Some((left, change)) = s.sql_changes.get(id).cloned() else {
        return arm_error(404, "ResourceNotFound", "operation not found");
    };
    let status_only = kind == "databaseAzureAsyncOperation";
    if !status_only && kind != "databaseOperationResults" {
        return arm_error(404, "ResourceNotFound", "The resource was not found.");
    }
    if left > 0 {
        s.sql_changes.insert(id.to_owned(), (left - 1, change));
        return if status_only {
            (
                200,
                vec![("Retry-After".into(), "1".into())],
                json!({"name": id, "status": "InProgress", "startTime": "2026-01-01T00:00:00Z"}),
            )
        } else {
            (202, vec![("Retry-After".into(), "1".into())], Value::Null)
        };
    }
    let failed = match &change {
        SqlChange::Copy(name) => {
            let failed = s.failing_copies;
            if let Some(db) = s.sql.get_mut(name) {
                db["properties"]["status"] = json!(if failed { "Offline" } else { "Online" });
            }
            failed
        }
        SqlChange::Delete(name) => {
            s.sql.remove(name);
            false
        }
    };
    if failed {
        return (
            200,
            Vec::new(),
            json!({"name": id, "status": "Failed", "error": {"code": "DatabaseCopyFailed", "message": "The database copy failed: the source database could not be read."}}),
        );
    }
    if status_only {
        (200, Vec::new(), json!({"name": id, "status": "Succeeded"}))
    } else {
        (200, Vec::new(), Value::Null)
    }
}

/// Azure SQL's limit on a database name's length.
fn name_problem(name: &str) -> Option<Answer> {
    (name.chars().count() > 128).then(|| {
        arm_error(
            400,
            "InvalidIdentifier",
            &format!("The identifier '{name}' is longer than 128 characters."),
        )
    })
}

/// Environment variables a developer machine or CI may have that would change the chain.
pub const AZURE_VARS: &[&str] = &[
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "SYSTEM_OIDCREQUESTURI",
    "SYSTEM_ACCESSTOKEN",
    "CUTOVER_CODE_VERSION",
];
