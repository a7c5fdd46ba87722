//! Azure Container Apps, through Azure Resource Manager (`Microsoft.App/containerApps`).
//!
//! - state: `GET` the app (its maintenance variable) and the jobs app; the replica count of
//!   a target is its `template.scale.maxReplicas` (10 when unset, as Azure defaults it), or
//!   0 while the app is stopped;
//! - maintenance: `GET` the app, set the variable (default `MAINTENANCE_MODE=true|false`)
//!   on every container, and `PATCH` the whole `template.containers` array back (a merge
//!   patch replaces arrays; a `PUT` of what `GET` returned would drop secret values);
//! - scale: `0` PATCHes `template.scale.minReplicas` to 0, keeping `maxReplicas` (Azure
//!   refuses a maximum below 1), then `POST .../stop`s the app; a count `n` first
//!   `POST .../start`s a stopped app, then PATCHes `template.scale` `{minReplicas,
//!   maxReplicas}` to `n`, except that going back to the count a target had before this
//!   run first changed it restores its exact earlier minimum and maximum (and leaves an
//!   app that was stopped before stopped);
//! - restart: `POST .../revisions/{latestReadyRevisionName}/restart`.
//!
//! A Container Apps job (`job:`, `Microsoft.App/jobs`) is scale target `job`. Jobs run to
//! completion and have no replicas: scaling an Event job to 0 PATCHes
//! `eventTriggerConfig.scale.maxExecutions` to 0 (so its trigger starts no executions) and
//! `POST .../stop`s its running executions; scaling it back restores its exact earlier
//! `maxExecutions`. Schedule and Manual jobs only have their running executions stopped:
//! the stable API has no pause for a schedule (`suspend` exists only in preview versions),
//! and the step's note says so. Its replica count is `maxExecutions` (100 when unset) for
//! an Event job, 1 for others.
//!
//! Changing `template` makes Azure create a new revision: after the operation ends, the
//! new revision is polled until it is provisioned (and, for maintenance, running), within
//! [`CHANGE_LIMIT`] or the step's `timeout:`, whichever is shorter. Turning maintenance off
//! after this run turned it on, where the variable was absent before, removes it again.
//!
//! Before each change the exact earlier state (each container's variable value or
//! absence; a target's minimum, maximum and whether it was running; a job's trigger type
//! and `maxExecutions`) is read for the journal (`Platform::prior`),
//! so a rollback or `recover` in another process puts exactly that back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Platform, PlatformError, PlatformState, Subject};
use crate::adapters::azure::arm::{Arm, LazyArm};
use crate::adapters::azure::{Site, setting};
use crate::adapters::build::BuildError;
use crate::adapters::build::Resolve;
use crate::config::deploy_file::ContainerAppsConfig;

pub(crate) const DEFAULT_API_VERSION: &str = "2025-01-01";
pub(crate) const DEFAULT_MAINTENANCE_VARIABLE: &str = "MAINTENANCE_MODE";
/// Longest a change (the operation and the new revision) may take.
pub(crate) const CHANGE_LIMIT: Duration = Duration::from_secs(15 * 60);
/// How often a new revision is looked at while it starts.
const REVISION_POLL: Duration = Duration::from_secs(1);
/// Azure's `maxReplicas` when the template does not set one.
const DEFAULT_MAX_REPLICAS: u32 = 10;
/// Azure's `eventTriggerConfig.scale.maxExecutions` when unset.
const DEFAULT_MAX_EXECUTIONS: u32 = 100;
/// The scale target of a Container Apps job.
const JOB_TARGET: &str = "job";

pub(crate) struct ContainerAppsPlatform {
    subscription: String,
    resource_group: String,
    app: String,
    jobs: Option<String>,
    /// A Container Apps job (`Microsoft.App/jobs`): scale target `job`.
    job: Option<String>,
    variable: String,
    api_version: String,
    arm: LazyArm,
    /// `(minReplicas, maxReplicas, running)` of each target before this process first
    /// scaled it.
    scale_before: Mutex<HashMap<String, Scale>>,
    /// `maxExecutions` of the Event job before this process first scaled it.
    job_before: Mutex<Option<u32>>,
    /// The maintenance variable's value in each container before this process first
    /// changed it (`None`: absent).
    variable_before: Mutex<Option<Vec<Option<String>>>>,
}

impl ContainerAppsPlatform {
    pub(crate) fn new(c: &ContainerAppsConfig, resolver: &dyn Resolve) -> Result<Self, BuildError> {
        let site = Site::read(
            "platform `azure-container-apps`",
            resolver,
            c.subscription.as_ref(),
            &c.resource_group,
        )?;
        let invalid = |m: String| site.invalid(&m);
        let app = resolver.text(&c.app)?.trim().to_owned();
        let jobs = setting(resolver, c.jobs.as_ref())?;
        let job = setting(resolver, c.job.as_ref())?;
        site.check_names(&[
            ("app", Some(&app)),
            ("jobs", jobs.as_ref()),
            ("job", job.as_ref()),
        ])?;
        let variable = match &c.maintenance_variable {
            Some(t) => resolver.text(t)?.trim().to_owned(),
            None => DEFAULT_MAINTENANCE_VARIABLE.to_owned(),
        };
        if variable.is_empty()
            || !variable
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(format!(
                "`maintenance_variable: {variable}` is not an environment variable name"
            )));
        }
        let api_version = setting(resolver, c.api_version.as_ref())?
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
        Ok(Self {
            subscription: site.subscription,
            resource_group: site.resource_group,
            app,
            jobs,
            job,
            variable,
            api_version,
            arm: LazyArm::new(site.auth),
            scale_before: Mutex::default(),
            job_before: Mutex::default(),
            variable_before: Mutex::default(),
        })
    }

    async fn arm(&self) -> Result<&Arm, PlatformError> {
        Ok(self.arm.get().await?)
    }

    fn path(&self, app: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.App/containerApps/{app}",
            self.subscription, self.resource_group
        )
    }

    /// The Container App behind a scale target.
    fn target_app(&self, target: &str) -> Result<&str, PlatformError> {
        match (target, &self.jobs) {
            ("app", _) => Ok(&self.app),
            ("jobs", Some(jobs)) => Ok(jobs),
            _ => Err(PlatformError::Invalid(format!(
                "Container Apps has no scale target `{target}`: the targets are `app`, `jobs` (with `jobs:` set) and `job` (with `job:` set)"
            ))),
        }
    }

    /// The Container Apps job, when `target` is `job` and one is set.
    fn target_job(&self, target: &str) -> Option<&str> {
        (target == JOB_TARGET)
            .then_some(self.job.as_deref())
            .flatten()
    }

    fn job_path(&self, job: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.App/jobs/{job}",
            self.subscription, self.resource_group
        )
    }

    async fn get_job(&self, job: &str) -> Result<Value, PlatformError> {
        self.arm()
            .await?
            .get(
                &format!("reading Container Apps job `{job}`"),
                &self.job_path(job),
                &self.api_version,
            )
            .await
            .map_err(PlatformError::from)
    }

    /// Sends `method` to `path` and follows the operation to its end.
    async fn follow(
        &self,
        what: String,
        method: Method,
        path: String,
        body: Option<&Value>,
    ) -> Result<String, PlatformError> {
        self.arm()
            .await?
            .send(
                &what,
                method,
                &path,
                &self.api_version,
                body,
                Instant::now() + CHANGE_LIMIT,
            )
            .await
            .map_err(PlatformError::from)?;
        Ok(format!("{what}: done"))
    }

    /// Brings the job's `maxExecutions` to `wanted` (an Event job only; `None` leaves it),
    /// then, scaling to 0, stops its running executions.
    async fn put_job(
        &self,
        job: &str,
        now: &JobScale,
        wanted: Option<u32>,
        stop: bool,
    ) -> Result<String, PlatformError> {
        let mut notes = Vec::new();
        match (now.max_executions, wanted) {
            (Some(n), Some(w)) if n != w => {
                let body = json!({"properties": {"configuration": {"eventTriggerConfig": {"scale": {"maxExecutions": w}}}}});
                notes.push(
                    self.follow(
                        format!("setting maxExecutions to {w} on Container Apps job `{job}`"),
                        Method::PATCH,
                        self.job_path(job),
                        Some(&body),
                    )
                    .await?,
                );
            }
            (Some(n), Some(_)) => notes.push(format!(
                "Container Apps job `{job}` already at maxExecutions {n}"
            )),
            _ => {}
        }
        if stop {
            notes.push(
                self.follow(
                    format!("stopping the running executions of Container Apps job `{job}`"),
                    Method::POST,
                    format!("{}/stop", self.job_path(job)),
                    None,
                )
                .await?,
            );
        }
        if now.max_executions.is_none() && !stop {
            notes.push(format!(
                "Container Apps job `{job}` has trigger type {}: nothing to put back",
                now.trigger
            ));
        }
        if now.max_executions.is_none() && stop {
            notes.push(format!(
                "Container Apps job `{job}` has trigger type {}: new executions still start{} (the stable API has no pause; suspend is preview-only)",
                now.trigger,
                if now.trigger.eq_ignore_ascii_case("schedule") {
                    " on its schedule"
                } else {
                    " when triggered"
                }
            ));
        }
        Ok(notes.join("; "))
    }

    async fn scale_job(&self, job: &str, replicas: u32) -> Result<String, PlatformError> {
        let now = job_scale_of(&self.get_job(job).await?);
        let wanted = now.max_executions.map(|max| {
            let mut before = self.job_before.lock().expect("not poisoned");
            match *before {
                Some(prior) if replicas > 0 && prior == replicas => {
                    *before = None;
                    prior
                }
                found => {
                    if found.is_none() {
                        *before = Some(max);
                    }
                    replicas
                }
            }
        });
        self.put_job(job, &now, wanted, replicas == 0).await
    }

    async fn get_app(&self, app: &str) -> Result<Value, PlatformError> {
        self.arm()
            .await?
            .get(
                &format!("reading Container App `{app}`"),
                &self.path(app),
                &self.api_version,
            )
            .await
            .map_err(PlatformError::from)
    }

    /// PATCHes `body` onto `app` and waits for the operation and the new revision.
    async fn change(
        &self,
        app: &str,
        what: &str,
        body: &Value,
        running: bool,
    ) -> Result<String, PlatformError> {
        let deadline = Instant::now() + CHANGE_LIMIT;
        let arm = self.arm().await?;
        let what = format!("{what} on Container App `{app}`");
        let after = arm
            .send(
                &what,
                Method::PATCH,
                &self.path(app),
                &self.api_version,
                Some(body),
                deadline,
            )
            .await
            .map_err(PlatformError::from)?;
        let after = if after.is_null() {
            self.get_app(app).await?
        } else {
            after
        };
        let Some(revision) = after["properties"]["latestRevisionName"].as_str() else {
            return Ok(format!("{what}: done"));
        };
        self.wait_revision(app, revision, running, deadline).await?;
        Ok(format!("{what}: done (revision {revision})"))
    }

    async fn wait_revision(
        &self,
        app: &str,
        revision: &str,
        running: bool,
        deadline: Instant,
    ) -> Result<(), PlatformError> {
        let arm = self.arm().await?;
        let path = format!("{}/revisions/{revision}", self.path(app));
        loop {
            let r = arm
                .get(
                    &format!("reading revision `{revision}` of `{app}`"),
                    &path,
                    &self.api_version,
                )
                .await
                .map_err(PlatformError::from)?;
            let p = &r["properties"];
            let provisioning = p["provisioningState"].as_str().unwrap_or_default();
            let run_state = p["runningState"].as_str().unwrap_or_default();
            if provisioning.eq_ignore_ascii_case("failed")
                || run_state.eq_ignore_ascii_case("failed")
                || run_state.eq_ignore_ascii_case("degraded")
            {
                let why = p["provisioningError"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("no reason given");
                return Err(api(
                    format!(
                        "revision `{revision}` of Container App `{app}` did not start ({provisioning}, {run_state}): {why}"
                    ),
                    false,
                ));
            }
            let ready = provisioning.eq_ignore_ascii_case("provisioned")
                && (!running || run_state.eq_ignore_ascii_case("running"));
            if ready {
                return Ok(());
            }
            if Instant::now() + REVISION_POLL > deadline {
                return Err(api(
                    format!(
                        "revision `{revision}` of Container App `{app}` is still {provisioning}/{run_state} after {}s; look at it with `az containerapp revision show -n {app} -g {} --revision {revision}`",
                        CHANGE_LIMIT.as_secs(),
                        self.resource_group
                    ),
                    false,
                ));
            }
            tokio::time::sleep(REVISION_POLL).await;
        }
    }

    /// PATCHes the variable to `wanted` (one value per container, `None`: absent), unless
    /// that is how it is `now`.
    async fn put_variable(
        &self,
        variable: &str,
        mut containers: Vec<Value>,
        now: &[Option<String>],
        wanted: &[Option<String>],
        enabled: bool,
    ) -> Result<String, PlatformError> {
        if wanted == now {
            return Ok(format!(
                "{variable}={enabled} already on Container App `{}`",
                self.app
            ));
        }
        for (c, v) in containers.iter_mut().zip(wanted) {
            set_variable(c, variable, v.as_deref());
        }
        let body = json!({"properties": {"template": {"containers": containers}}});
        let what = if wanted.iter().all(Option::is_none) {
            format!("removing {variable}")
        } else {
            format!("setting {variable}={enabled}")
        };
        self.change(&self.app, &what, &body, true).await
    }

    /// Brings `app_name` from `now` to `wanted`: a start before, or a stop after, the
    /// PATCH of `template.scale` (each only where it changes something).
    async fn put_scale(
        &self,
        app_name: &str,
        now: Scale,
        wanted: Scale,
    ) -> Result<String, PlatformError> {
        let mut notes = Vec::new();
        if wanted.running && !now.running {
            notes.push(self.start_stop(app_name, "start").await?);
        }
        if (wanted.min, wanted.max) == (now.min, now.max) {
            notes.push(format!(
                "Container App `{app_name}` already at min {} / max {} replicas",
                now.min, now.max
            ));
        } else {
            let body = json!({"properties": {"template": {"scale": {"minReplicas": wanted.min, "maxReplicas": wanted.max}}}});
            notes.push(
                self.change(
                    app_name,
                    &format!(
                        "scaling to min {} / max {} replicas",
                        wanted.min, wanted.max
                    ),
                    &body,
                    false,
                )
                .await?,
            );
        }
        if !wanted.running && now.running {
            notes.push(self.start_stop(app_name, "stop").await?);
        }
        Ok(notes.join("; "))
    }

    /// `POST .../start` or `.../stop`, followed to its end.
    async fn start_stop(&self, app_name: &str, action: &str) -> Result<String, PlatformError> {
        let what = format!(
            "{} Container App `{app_name}`",
            if action == "stop" {
                "stopping"
            } else {
                "starting"
            }
        );
        self.follow(
            what,
            Method::POST,
            format!("{}/{action}", self.path(app_name)),
            None,
        )
        .await
    }
}

/// A job's trigger type and, for an Event job, its `maxExecutions`.
struct JobScale {
    trigger: String,
    max_executions: Option<u32>,
}

fn job_scale_of(job: &Value) -> JobScale {
    let c = &job["properties"]["configuration"];
    let trigger = c["triggerType"].as_str().unwrap_or("Manual").to_owned();
    let max_executions = trigger.eq_ignore_ascii_case("event").then(|| {
        c["eventTriggerConfig"]["scale"]["maxExecutions"]
            .as_u64()
            .map_or(DEFAULT_MAX_EXECUTIONS, |n| n as u32)
    });
    JobScale {
        trigger,
        max_executions,
    }
}

/// A target's scale: `template.scale` and whether the app runs (`runningStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scale {
    min: u32,
    max: u32,
    running: bool,
}

fn api(message: String, transient: bool) -> PlatformError {
    PlatformError::Api { message, transient }
}

/// The scale of an app, with Azure's defaults.
fn scale_of(app: &Value) -> Scale {
    let scale = &app["properties"]["template"]["scale"];
    let n = |v: &Value, d: u32| v.as_u64().map_or(d, |n| n as u32);
    Scale {
        min: n(&scale["minReplicas"], 0),
        max: n(&scale["maxReplicas"], DEFAULT_MAX_REPLICAS),
        running: !app["properties"]["runningStatus"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("stopped")),
    }
}

/// The replica count a target reports: 0 while stopped.
fn replicas_of(app: &Value) -> u32 {
    let s = scale_of(app);
    if s.running { s.max } else { 0 }
}

/// The containers of an app as sent back: env entries whose empty value `GET` left out get
/// it back (`""`), so the PATCH does not change them.
fn containers_of(app: &Value) -> Vec<Value> {
    let mut containers = app["properties"]["template"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in &mut containers {
        if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
            for e in env {
                if e.get("value").is_none() && e.get("secretRef").is_none() {
                    e["value"] = json!("");
                }
            }
        }
    }
    containers
}

fn variable_in(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .map(|e| e["value"].as_str().unwrap_or_default().to_owned())
}

/// Sets (or, with `None`, removes) one env entry; a container left with no entries loses
/// its `env` list, as it was before the entry was added.
fn set_variable(container: &mut Value, name: &str, value: Option<&str>) {
    let Some(value) = value else {
        if let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) {
            env.retain(|e| e["name"].as_str() != Some(name));
            if env.is_empty()
                && let Some(c) = container.as_object_mut()
            {
                c.remove("env");
            }
        }
        return;
    };
    if !container["env"].is_array() {
        container["env"] = json!([]);
    }
    let env = container["env"].as_array_mut().expect("just made an array");
    match env.iter_mut().find(|e| e["name"].as_str() == Some(name)) {
        Some(e) => *e = json!({"name": name, "value": value}),
        None => env.push(json!({"name": name, "value": value})),
    }
}

fn is_on(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[async_trait]
impl Platform for ContainerAppsPlatform {
    fn kind(&self) -> &'static str {
        "azure-container-apps"
    }

    fn describe(&self) -> String {
        let described = match &self.jobs {
            Some(jobs) => format!(
                "Azure Container Apps `{}` (jobs: `{jobs}`) in `{}`",
                self.app, self.resource_group
            ),
            None => format!(
                "Azure Container Apps `{}` in `{}`",
                self.app, self.resource_group
            ),
        };
        match &self.job {
            Some(job) => format!("{described} (job: `{job}`)"),
            None => described,
        }
    }

    async fn state(&self) -> Result<PlatformState, PlatformError> {
        let app = self.get_app(&self.app).await?;
        let containers = containers_of(&app);
        let maintenance = containers
            .iter()
            .any(|c| is_on(variable_in(c, &self.variable).as_deref()));
        let mut replicas = std::collections::BTreeMap::new();
        replicas.insert("app".to_owned(), replicas_of(&app));
        if let Some(jobs) = &self.jobs {
            replicas.insert("jobs".to_owned(), replicas_of(&self.get_app(jobs).await?));
        }
        if let Some(job) = &self.job {
            let s = job_scale_of(&self.get_job(job).await?);
            replicas.insert(JOB_TARGET.to_owned(), s.max_executions.unwrap_or(1));
        }
        Ok(PlatformState {
            maintenance: Some(maintenance),
            replicas,
            code: None,
        })
    }

    async fn set_maintenance(&self, enabled: bool) -> Result<String, PlatformError> {
        let app = self.get_app(&self.app).await?;
        let containers = containers_of(&app);
        if containers.is_empty() {
            return Err(api(
                format!(
                    "Container App `{}` has no containers to set {} on",
                    self.app, self.variable
                ),
                false,
            ));
        }
        let now: Vec<Option<String>> = containers
            .iter()
            .map(|c| variable_in(c, &self.variable))
            .collect();
        let wanted: Vec<Option<String>> = {
            let mut before = self.variable_before.lock().expect("not poisoned");
            match before.as_ref() {
                // Back to the state before this run: the exact earlier values.
                Some(prior)
                    if prior.len() == now.len()
                        && prior.iter().any(|v| is_on(v.as_deref())) == enabled =>
                {
                    let prior = prior.clone();
                    *before = None;
                    prior
                }
                _ => {
                    if before.is_none() {
                        *before = Some(now.clone());
                    }
                    vec![Some(enabled.to_string()); now.len()]
                }
            }
        };
        self.put_variable(&self.variable, containers, &now, &wanted, enabled)
            .await
    }

    async fn scale(&self, target: &str, replicas: u32) -> Result<String, PlatformError> {
        if let Some(job) = self.target_job(target) {
            return self.scale_job(job, replicas).await;
        }
        let app_name = self.target_app(target)?.to_owned();
        let app = self.get_app(&app_name).await?;
        let now = scale_of(&app);
        let wanted = {
            let mut before = self.scale_before.lock().expect("not poisoned");
            match before.get(target).copied() {
                Some(prior) if replicas > 0 && prior.max == replicas => {
                    before.remove(target);
                    prior
                }
                found => {
                    if found.is_none() {
                        before.insert(target.to_owned(), now);
                    }
                    if replicas == 0 {
                        // Azure refuses a maximum below 1: the stop halts the app.
                        Scale {
                            min: 0,
                            max: now.max,
                            running: false,
                        }
                    } else {
                        Scale {
                            min: replicas,
                            max: replicas,
                            running: true,
                        }
                    }
                }
            }
        };
        self.put_scale(&app_name, now, wanted).await
    }

    async fn prior(&self, subject: Subject<'_>) -> Result<Option<Value>, PlatformError> {
        Ok(Some(match subject {
            Subject::Maintenance => {
                let app = self.get_app(&self.app).await?;
                let values: Map<String, Value> = containers_of(&app)
                    .iter()
                    .map(|c| {
                        let name = c["name"].as_str().unwrap_or_default().to_owned();
                        (name, json!(variable_in(c, &self.variable)))
                    })
                    .collect();
                json!({"variable": self.variable, "containers": values})
            }
            Subject::Target(target) if self.target_job(target).is_some() => {
                let job = self.target_job(target).expect("just matched");
                let s = job_scale_of(&self.get_job(job).await?);
                match s.max_executions {
                    Some(max) => json!({"triggerType": s.trigger, "maxExecutions": max}),
                    None => json!({"triggerType": s.trigger}),
                }
            }
            Subject::Target(target) => {
                let s = scale_of(&self.get_app(self.target_app(target)?).await?);
                json!({"minReplicas": s.min, "maxReplicas": s.max, "running": s.running})
            }
        }))
    }

    async fn restore_maintenance(
        &self,
        enabled: bool,
        prior: Option<&Value>,
    ) -> Result<String, PlatformError> {
        let (Some(variable), Some(values)) = (
            prior.and_then(|p| p["variable"].as_str()),
            prior.and_then(|p| p["containers"].as_object()),
        ) else {
            return self.set_maintenance(enabled).await;
        };
        let app = self.get_app(&self.app).await?;
        let containers = containers_of(&app);
        let now: Vec<Option<String>> = containers
            .iter()
            .map(|c| variable_in(c, variable))
            .collect();
        // Each container as it was; one added since gets the plain flag.
        let wanted: Vec<Option<String>> = containers
            .iter()
            .map(
                |c| match values.get(c["name"].as_str().unwrap_or_default()) {
                    Some(v) => v.as_str().map(str::to_owned),
                    None => Some(enabled.to_string()),
                },
            )
            .collect();
        *self.variable_before.lock().expect("not poisoned") = None;
        self.put_variable(variable, containers, &now, &wanted, enabled)
            .await
    }

    async fn restore_scale(
        &self,
        target: &str,
        replicas: u32,
        prior: Option<&Value>,
    ) -> Result<String, PlatformError> {
        let count = |key: &str| {
            prior
                .and_then(|p| p[key].as_u64())
                .and_then(|n| u32::try_from(n).ok())
        };
        if let Some(job) = self.target_job(target) {
            let now = job_scale_of(&self.get_job(job).await?);
            *self.job_before.lock().expect("not poisoned") = None;
            let wanted = count("maxExecutions").or(Some(replicas));
            return self.put_job(job, &now, wanted, replicas == 0).await;
        }
        let (Some(min), Some(max)) = (count("minReplicas"), count("maxReplicas")) else {
            return self.scale(target, replicas).await;
        };
        // Journals written before `running` was recorded: an app then scaled was running.
        let running = prior.and_then(|p| p["running"].as_bool()).unwrap_or(true);
        let app_name = self.target_app(target)?.to_owned();
        let now = scale_of(&self.get_app(&app_name).await?);
        self.scale_before
            .lock()
            .expect("not poisoned")
            .remove(target);
        self.put_scale(&app_name, now, Scale { min, max, running })
            .await
    }

    async fn restart(&self) -> Result<String, PlatformError> {
        let app = self.get_app(&self.app).await?;
        let p = &app["properties"];
        let Some(revision) = p["latestReadyRevisionName"]
            .as_str()
            .or(p["latestRevisionName"].as_str())
        else {
            return Err(api(
                format!("Container App `{}` has no revision to restart", self.app),
                false,
            ));
        };
        let path = format!("{}/revisions/{revision}/restart", self.path(&self.app));
        self.arm()
            .await?
            .send(
                &format!(
                    "restarting revision `{revision}` of Container App `{}`",
                    self.app
                ),
                Method::POST,
                &path,
                &self.api_version,
                None,
                Instant::now() + CHANGE_LIMIT,
            )
            .await
            .map_err(PlatformError::from)?;
        Ok(format!(
            "revision `{revision}` of Container App `{}` restarted",
            self.app
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_the_variable_keeps_every_other_entry() {
        let app = json!({"properties": {"template": {"containers": [
            {"name": "web", "image": "x", "env": [{"name": "A", "value": "1"}, {"name": "EMPTY"}, {"name": "S", "secretRef": "s"}]}
        ]}}});
        let mut cs = containers_of(&app);
        set_variable(&mut cs[0], "MAINTENANCE_MODE", Some("true"));
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "EMPTY", "value": ""}, {"name": "S", "secretRef": "s"}, {"name": "MAINTENANCE_MODE", "value": "true"}])
        );
        set_variable(&mut cs[0], "MAINTENANCE_MODE", None);
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 3);
    }
}
