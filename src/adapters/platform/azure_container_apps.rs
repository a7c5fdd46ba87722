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
//! Code releases (multiple-revision mode with ingress; the plan refuses an app in
//! single-revision mode): `release` makes the version a revision `<app>--<suffix>` at 0 %
//! with one PATCH that sets `template.revisionSuffix`, the serving revision's containers
//! with the first one's image for the version, and `configuration.ingress.traffic` pinned
//! to revision names (a `latestRevision: true` entry would give the new revision all the
//! traffic); `traffic` PATCHes `configuration.ingress.traffic` alone; their undo puts the
//! exact traffic rules back, then the set of active revisions, and reads both back. In
//! multiple-revision mode maintenance and scale change the revision that serves, and the
//! revision they make takes over its traffic.
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

use super::{CodeActions, CodeState, Platform, PlatformError, PlatformState, Route, Subject};
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
    /// `image:`: the image a release gives the first container, `{version}` in it.
    image: Option<String>,
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
        let image = setting(resolver, c.image.as_ref())?;
        if let Some(i) = &image
            && (i.matches("{version}").count() != 1 || i.chars().any(char::is_whitespace))
        {
            return Err(invalid(format!(
                "`image: {i}` must contain `{{version}}` once, where the code version goes, and no spaces (`myregistry.azurecr.io/api:{{version}}`)"
            )));
        }
        Ok(Self {
            subscription: site.subscription,
            resource_group: site.resource_group,
            app,
            jobs,
            job,
            variable,
            api_version,
            image,
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

    /// PATCHes `body` (a `template` change) onto `app` and waits for the operation and
    /// the new revision.
    ///
    /// In multiple-revision mode a new revision gets traffic by itself only through a
    /// `latestRevision: true` entry. So there the change is made to the revision that
    /// serves (the one with the most traffic): its containers are sent unless `body`
    /// has its own, and the new revision then takes over the traffic entries that name
    /// it. A revision suffix a release left in the template is cleared, so that Azure
    /// names the new revision itself (a suffix already used is refused).
    async fn change(
        &self,
        app: &str,
        what: &str,
        body: &Value,
        running: bool,
    ) -> Result<String, PlatformError> {
        let current = self.get_app(app).await?;
        let mut body = body.clone();
        if current["properties"]["template"]["revisionSuffix"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
        {
            body["properties"]["template"]["revisionSuffix"] = Value::Null;
        }
        let serving = if is_multiple(&current) {
            Some(self.serving(app, &current).await?)
        } else {
            None
        };
        if let Some(s) = &serving
            && body["properties"]["template"].get("containers").is_none()
            && !s.containers.is_empty()
        {
            body["properties"]["template"]["containers"] = json!(s.containers);
        }
        let (note, revision) = self.patch_and_wait(app, what, &body, running).await?;
        let before = current["properties"]["latestRevisionName"].as_str();
        let (
            Some(Serving {
                revision: Some(from),
                ..
            }),
            Some(new),
        ) = (serving, revision.filter(|r| Some(r.as_str()) != before))
        else {
            return Ok(note);
        };
        let traffic = traffic_of(&current);
        if !traffic
            .iter()
            .any(|e| e["revisionName"].as_str() == Some(from.as_str()))
        {
            return Ok(note);
        }
        let moved: Vec<Value> = traffic
            .iter()
            .map(|e| {
                let mut e = e.clone();
                if e["revisionName"].as_str() == Some(from.as_str()) {
                    e["revisionName"] = json!(new);
                }
                e
            })
            .collect();
        self.patch_traffic(
            app,
            &format!("moving the traffic of revision `{from}` to its successor `{new}`"),
            &moved,
        )
        .await?;
        Ok(format!(
            "{note}; revision `{new}` took over the traffic of `{from}`"
        ))
    }

    /// PATCHes `body` onto `app`, follows the operation, and waits for the app's latest
    /// revision to be provisioned (and running, with `running`); returns a note and that
    /// revision's name.
    async fn patch_and_wait(
        &self,
        app: &str,
        what: &str,
        body: &Value,
        running: bool,
    ) -> Result<(String, Option<String>), PlatformError> {
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
            return Ok((format!("{what}: done"), None));
        };
        self.wait_revision(app, revision, running, deadline).await?;
        Ok((
            format!("{what}: done (revision {revision})"),
            Some(revision.to_owned()),
        ))
    }

    /// PATCHes `configuration.ingress.traffic` of `app` (no new revision) and follows
    /// the operation.
    async fn patch_traffic(
        &self,
        app: &str,
        what: &str,
        traffic: &[Value],
    ) -> Result<(), PlatformError> {
        let body = json!({"properties": {"configuration": {"ingress": {"traffic": traffic}}}});
        self.follow(
            format!("{what} on Container App `{app}`"),
            Method::PATCH,
            self.path(app),
            Some(&body),
        )
        .await?;
        Ok(())
    }

    /// Every revision of `app` (active or not), as Azure lists them, following
    /// `nextLink`.
    async fn revisions(&self, app: &str) -> Result<Vec<Value>, PlatformError> {
        let arm = self.arm().await?;
        let what = format!("listing the revisions of Container App `{app}`");
        let mut page = arm
            .get(
                &what,
                &format!("{}/revisions", self.path(app)),
                &self.api_version,
            )
            .await?;
        let mut all = Vec::new();
        loop {
            all.extend(page["value"].as_array().cloned().unwrap_or_default());
            let next = page["nextLink"]
                .as_str()
                .filter(|l| !l.is_empty())
                .map(str::to_owned);
            match next {
                Some(link) => page = arm.get_next(&what, &link).await?,
                None => return Ok(all),
            }
        }
    }

    /// The revision of `app` that serves (the most traffic; without traffic rules, the
    /// latest ready one) and its containers.
    async fn serving(&self, app_name: &str, app: &Value) -> Result<Serving, PlatformError> {
        let revisions = self.revisions(app_name).await?;
        let revision = live_revision(app, &revisions);
        let containers = revision
            .as_ref()
            .and_then(|name| revisions.iter().find(|r| r["name"].as_str() == Some(name)))
            .map(|r| containers_in(&r["properties"]["template"]))
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| containers_of(app));
        Ok(Serving {
            revision,
            containers,
        })
    }

    /// The containers maintenance reads and changes: the app's, or in multiple-revision
    /// mode those of the revision that serves.
    async fn maintenance_containers(&self, app: &Value) -> Result<Vec<Value>, PlatformError> {
        if is_multiple(app) {
            Ok(self.serving(&self.app, app).await?.containers)
        } else {
            Ok(containers_of(app))
        }
    }

    /// `POST .../revisions/{revision}/activate` or `/deactivate`.
    async fn revision_action(&self, revision: &str, action: &str) -> Result<(), PlatformError> {
        let what = format!(
            "{}ing revision `{revision}` of Container App `{}`",
            action.trim_end_matches('e'),
            self.app
        );
        self.follow(
            what,
            Method::POST,
            format!("{}/revisions/{revision}/{action}", self.path(&self.app)),
            None,
        )
        .await?;
        Ok(())
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

    /// The app and all its revisions.
    async fn read_code(&self) -> Result<(Value, Vec<Value>), PlatformError> {
        let app = self.get_app(&self.app).await?;
        let revisions = self.revisions(&self.app).await?;
        Ok((app, revisions))
    }

    /// Releasing beside the live code needs multiple-revision mode and ingress.
    fn check_releasable(&self, app: &Value) -> Result<(), PlatformError> {
        if !is_multiple(app) {
            return Err(PlatformError::Invalid(format!(
                "Container App `{app_name}` runs in single-revision mode (`activeRevisionsMode: {mode}`): a new revision replaces the live one as soon as it starts, so it cannot wait beside it at 0 % or take the traffic in stages. Switch the app to multiple-revision mode first (`az containerapp revision set-mode -n {app_name} -g {rg} --mode multiple`, or `activeRevisionsMode: Multiple` in its template), then plan again",
                app_name = self.app,
                mode = app["properties"]["configuration"]["activeRevisionsMode"]
                    .as_str()
                    .unwrap_or("Single"),
                rg = self.resource_group,
            )));
        }
        if app["properties"]["configuration"]["ingress"].is_null() {
            return Err(PlatformError::Invalid(format!(
                "Container App `{}` has no ingress (`configuration.ingress`): there is no traffic to move between revisions; enable ingress (`az containerapp ingress enable -n {} -g {} ...`) or release it without `release` and `traffic` steps",
                self.app, self.app, self.resource_group
            )));
        }
        Ok(())
    }

    /// The code version in an image: what stands for `{version}` in `image:`, else its
    /// tag.
    fn image_version(&self, image: &str) -> Option<String> {
        match &self.image {
            Some(template) => {
                let (before, after) = template.split_once("{version}")?;
                image
                    .strip_prefix(before)?
                    .strip_suffix(after)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            }
            None => tag_of(image).map(str::to_owned),
        }
    }

    /// The version a revision runs: from its first container's image, else the suffix
    /// of its name.
    fn version_of(&self, revision: &Value) -> Option<String> {
        first_image(revision)
            .and_then(|i| self.image_version(i))
            .or_else(|| {
                revision_name(revision)
                    .strip_prefix(&format!("{}--", self.app))
                    .map(str::to_owned)
            })
    }

    /// The image the release of `version` gives the first container, which runs
    /// `current` now.
    fn release_image(&self, current: &str, version: &str) -> String {
        match &self.image {
            Some(template) => template.replace("{version}", version),
            None => with_tag(current, version),
        }
    }

    /// The revision that runs `version`: an active one (the most traffic first), else
    /// the one cutover named for it, else the newest inactive one.
    fn find_revision<'a>(
        &self,
        app: &Value,
        revisions: &'a [Value],
        version: &str,
    ) -> Option<&'a Value> {
        let weights = weights(app);
        let weight = |r: &Value| {
            weights
                .iter()
                .find(|(n, _)| n == revision_name(r))
                .map_or(0, |(_, w)| *w)
        };
        let runs = |r: &&Value| self.version_of(r).as_deref() == Some(version);
        let named = revision_suffix(&self.app, version)
            .ok()
            .map(|s| format!("{}--{s}", self.app));
        revisions
            .iter()
            .filter(|r| is_active(r))
            .filter(runs)
            .max_by_key(|r| weight(r))
            .or_else(|| {
                revisions
                    .iter()
                    .find(|r| Some(revision_name(r)) == named.as_deref())
            })
            .or_else(|| revisions.iter().rev().find(runs))
    }

    /// Activates `revision` and waits until it runs.
    async fn activate(&self, revision: &str) -> Result<(), PlatformError> {
        self.revision_action(revision, "activate").await?;
        self.wait_revision(&self.app, revision, true, Instant::now() + CHANGE_LIMIT)
            .await
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

/// The revision that serves and its containers.
struct Serving {
    revision: Option<String>,
    containers: Vec<Value>,
}

fn is_multiple(app: &Value) -> bool {
    app["properties"]["configuration"]["activeRevisionsMode"]
        .as_str()
        .is_some_and(|m| m.eq_ignore_ascii_case("multiple"))
}

/// `configuration.ingress.traffic` as read.
fn traffic_of(app: &Value) -> Vec<Value> {
    app["properties"]["configuration"]["ingress"]["traffic"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// One traffic entry with only the fields that say where traffic goes: `revisionName`
/// or `latestRevision: true`, `weight`, `label`.
fn entry(e: &Value) -> Value {
    let mut out = Map::new();
    if e["latestRevision"].as_bool() == Some(true) {
        out.insert("latestRevision".into(), json!(true));
    } else if let Some(name) = e["revisionName"].as_str() {
        out.insert("revisionName".into(), json!(name));
    }
    out.insert("weight".into(), json!(e["weight"].as_u64().unwrap_or(0)));
    if let Some(label) = e["label"].as_str().filter(|l| !l.is_empty()) {
        out.insert("label".into(), json!(label));
    }
    Value::Object(out)
}

/// Traffic entries, `latestRevision: true` ones given the name `latest`.
fn pinned(traffic: &[Value], latest: Option<&str>) -> Vec<Value> {
    traffic
        .iter()
        .map(|e| {
            let mut e = entry(e);
            if let (Some(true), Some(latest)) = (e["latestRevision"].as_bool(), latest) {
                let o = e.as_object_mut().expect("an object");
                o.remove("latestRevision");
                o.insert("revisionName".into(), json!(latest));
            }
            e
        })
        .collect()
}

/// Traffic entries in a stable order, for comparing.
fn sorted(traffic: &[Value]) -> Vec<String> {
    let mut all: Vec<String> = traffic.iter().map(|e| entry(e).to_string()).collect();
    all.sort();
    all
}

/// Each revision's share of the traffic, in the order the rules name them
/// (`latestRevision: true` read as the latest revision; without rules, all of it to the
/// latest ready revision).
fn weights(app: &Value) -> Vec<(String, u32)> {
    let p = &app["properties"];
    let traffic = traffic_of(app);
    let mut weights: Vec<(String, u32)> = Vec::new();
    if traffic.is_empty() {
        if let Some(r) = p["latestReadyRevisionName"].as_str() {
            weights.push((r.to_owned(), 100));
        }
        return weights;
    }
    for e in pinned(&traffic, p["latestRevisionName"].as_str()) {
        let Some(name) = e["revisionName"].as_str() else {
            continue;
        };
        let w = u32::try_from(e["weight"].as_u64().unwrap_or(0)).unwrap_or(0);
        match weights.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total += w,
            None => weights.push((name.to_owned(), w)),
        }
    }
    weights
}

/// The revision with the most traffic (the first named, on a tie).
fn live_revision(app: &Value, revisions: &[Value]) -> Option<String> {
    let weights = weights(app);
    let top = weights.iter().map(|(_, w)| *w).max().unwrap_or(0);
    weights
        .into_iter()
        .find(|(_, w)| *w == top && top > 0)
        .map(|(n, _)| n)
        .or_else(|| {
            app["properties"]["latestReadyRevisionName"]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|n| revisions.iter().any(|r| r["name"].as_str() == Some(n)))
}

fn revision_name(r: &Value) -> &str {
    r["name"].as_str().unwrap_or_default()
}

fn is_active(r: &Value) -> bool {
    r["properties"]["active"].as_bool() == Some(true)
}

fn first_image(r: &Value) -> Option<&str> {
    r["properties"]["template"]["containers"][0]["image"].as_str()
}

/// The tag of an image reference (`acr.io/api:v41` → `v41`), if it has one.
fn tag_of(image: &str) -> Option<&str> {
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':')
        .map(|(_, tag)| tag)
        .filter(|t| !t.is_empty())
}

/// `image` with tag `version` in place of its tag or digest.
fn with_tag(image: &str, version: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let base = match tag_of(name) {
        Some(tag) => &name[..name.len() - tag.len() - 1],
        None => name,
    };
    format!("{base}:{version}")
}

/// The revision suffix cutover gives the revision of a code version: lowercase letters,
/// digits and `-` (anything else becomes `-`, runs of `-` one), starting with a letter
/// (`v` put before a leading digit) and ending with a letter or digit, as Azure requires;
/// `<app>--<suffix>` must fit a DNS label (63 characters).
pub(crate) fn revision_suffix(app: &str, version: &str) -> Result<String, String> {
    let mut suffix = String::new();
    for c in version.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (suffix.is_empty() || suffix.ends_with('-'))) {
            suffix.push(c);
        }
    }
    let mut suffix = suffix.trim_end_matches('-').to_owned();
    if suffix.is_empty() {
        return Err(format!(
            "code version `{version}` has no letter or digit to name a revision with"
        ));
    }
    if !suffix.starts_with(|c: char| c.is_ascii_lowercase()) {
        suffix.insert(0, 'v');
    }
    if app.len() + 2 + suffix.len() > 63 {
        return Err(format!(
            "code version `{version}` makes revision name `{app}--{suffix}`, longer than the 63 characters Azure allows; use a shorter version"
        ));
    }
    Ok(suffix)
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
    containers_in(&app["properties"]["template"])
}

/// The containers of a template (an app's or a revision's), as [`containers_of`].
fn containers_in(template: &Value) -> Vec<Value> {
    let mut containers = template["containers"]
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
        let containers = self.maintenance_containers(&app).await?;
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
        let containers = self.maintenance_containers(&app).await?;
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
                let values: Map<String, Value> = self
                    .maintenance_containers(&app)
                    .await?
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
        let containers = self.maintenance_containers(&app).await?;
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

    fn code_actions(&self) -> CodeActions {
        CodeActions {
            stage: Ok(()),
            traffic: Ok(()),
            split: true,
        }
    }

    async fn code(&self) -> Result<Option<CodeState>, PlatformError> {
        let (app, revisions) = self.read_code().await?;
        self.check_releasable(&app)?;
        let weights = weights(&app);
        let routes: Vec<Route> = revisions
            .iter()
            .filter(|r| is_active(r))
            .map(|r| Route {
                name: revision_name(r).to_owned(),
                version: self.version_of(r),
                weight: weights
                    .iter()
                    .find(|(n, _)| n == revision_name(r))
                    .map_or(0, |(_, w)| *w),
            })
            .collect();
        let top = routes.iter().map(|r| r.weight).max().unwrap_or(0);
        let live = routes
            .iter()
            .find(|r| r.weight == top && top > 0)
            .map(|r| r.version.clone().unwrap_or_else(|| r.name.clone()));
        Ok(Some(CodeState { live, routes }))
    }

    async fn code_prior(&self) -> Result<Value, PlatformError> {
        let (app, revisions) = self.read_code().await?;
        self.check_releasable(&app)?;
        let active: Vec<&str> = revisions
            .iter()
            .filter(|r| is_active(r))
            .map(revision_name)
            .collect();
        Ok(json!({
            "app": self.app,
            "traffic": traffic_of(&app),
            "latestRevisionName": app["properties"]["latestRevisionName"],
            "active": active,
        }))
    }

    async fn stage(&self, version: &str) -> Result<String, PlatformError> {
        let suffix = revision_suffix(&self.app, version).map_err(PlatformError::Invalid)?;
        let name = format!("{}--{suffix}", self.app);
        let (app, revisions) = self.read_code().await?;
        self.check_releasable(&app)?;
        if let Some(existing) = revisions.iter().find(|r| revision_name(r) == name) {
            if is_active(existing) {
                return Ok(format!(
                    "revision `{name}` of Container App `{}` already runs {version}; nothing changed",
                    self.app
                ));
            }
            self.activate(&name).await?;
            return Ok(format!(
                "revision `{name}` of Container App `{}` runs {version}: it was inactive and is active again, without traffic",
                self.app
            ));
        }
        let mut containers = self.serving(&self.app, &app).await?.containers;
        let Some(first) = containers.first_mut() else {
            return Err(api(
                format!(
                    "Container App `{}` has no container to release {version} in",
                    self.app
                ),
                false,
            ));
        };
        let image = self.release_image(first["image"].as_str().unwrap_or_default(), version);
        first["image"] = json!(image);
        // Every latestRevision entry pinned to the revision it means now: the new
        // revision becomes the latest and would otherwise take that traffic at once.
        let traffic = pinned(
            &traffic_of(&app),
            app["properties"]["latestRevisionName"].as_str(),
        );
        let body = json!({"properties": {
            "configuration": {"ingress": {"traffic": traffic}},
            "template": {"revisionSuffix": suffix, "containers": containers},
        }});
        let (_, made) = self
            .patch_and_wait(
                &self.app,
                &format!("releasing {version} as revision `{name}`"),
                &body,
                true,
            )
            .await?;
        if made.as_deref() != Some(name.as_str()) {
            return Err(api(
                format!(
                    "Container App `{}` was changed, but its latest revision is `{}`, not `{name}`; look at its revisions before trying again",
                    self.app,
                    made.unwrap_or_default()
                ),
                false,
            ));
        }
        let now = self.get_app(&self.app).await?;
        let weight = weights(&now)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, w)| w);
        if weight > 0 {
            return Err(api(
                format!(
                    "revision `{name}` of Container App `{}` got {weight}% of the traffic when it should have none; the undo of this step puts the traffic back",
                    self.app
                ),
                false,
            ));
        }
        Ok(format!(
            "revision `{name}` of Container App `{}` runs {image}, without traffic (checked); the traffic stays where it was, now by revision name",
            self.app
        ))
    }

    async fn route(&self, version: &str, percent: u32) -> Result<String, PlatformError> {
        if !(1..=100).contains(&percent) {
            return Err(PlatformError::Invalid(format!(
                "cannot send {percent}% of the traffic: a stage is from 1 to 100"
            )));
        }
        let (app, revisions) = self.read_code().await?;
        self.check_releasable(&app)?;
        let Some(target) = self.find_revision(&app, &revisions, version) else {
            return Err(PlatformError::Invalid(format!(
                "no revision of Container App `{}` runs {version}: release it first (a `release` step before `traffic`)",
                self.app
            )));
        };
        let target_name = revision_name(target).to_owned();
        let mut notes = Vec::new();
        if !is_active(target) {
            self.activate(&target_name).await?;
            notes.push(format!("revision `{target_name}` activated"));
        }
        let current = weights(&app);
        let other = current
            .iter()
            .filter(|(n, w)| *n != target_name && *w > 0)
            .max_by_key(|(_, w)| *w)
            .map(|(n, _)| n.clone());
        let rest = 100 - percent;
        if rest > 0 && other.is_none() {
            return Err(PlatformError::Invalid(format!(
                "cannot send {percent}% to {version} (`{target_name}`) and the rest elsewhere: no other revision of Container App `{}` has traffic",
                self.app
            )));
        }
        // Labelled entries stay (at 0 unless they are one of the two); the rest is new.
        let mut wanted: Vec<Value> = pinned(
            &traffic_of(&app),
            app["properties"]["latestRevisionName"].as_str(),
        )
        .into_iter()
        .filter(|e| e.get("label").is_some())
        .map(|mut e| {
            e["weight"] = json!(0);
            e
        })
        .collect();
        let mut give = |name: &str, weight: u32| match wanted
            .iter_mut()
            .find(|e| e["revisionName"].as_str() == Some(name))
        {
            Some(e) => e["weight"] = json!(weight),
            None => wanted.push(json!({"revisionName": name, "weight": weight})),
        };
        give(&target_name, percent);
        if let (Some(other), true) = (&other, rest > 0) {
            give(other, rest);
        }
        let shares = match (&other, rest) {
            (Some(o), r) if r > 0 => format!("{version} (`{target_name}`) {percent}%, `{o}` {r}%"),
            _ => format!("{version} (`{target_name}`) 100%"),
        };
        if sorted(&wanted) == sorted(&traffic_of(&app)) {
            notes.push(format!("traffic already {shares}"));
            return Ok(notes.join("; "));
        }
        self.patch_traffic(
            &self.app,
            &format!("sending {percent}% of the traffic to {version}"),
            &wanted,
        )
        .await?;
        let after = weights(&self.get_app(&self.app).await?);
        let got = after
            .iter()
            .find(|(n, _)| *n == target_name)
            .map_or(0, |(_, w)| *w);
        if got != percent {
            return Err(api(
                format!(
                    "sent {percent}% of the traffic of Container App `{}` to `{target_name}`, but it reads back {got}%",
                    self.app
                ),
                false,
            ));
        }
        notes.push(format!("traffic {shares} (checked)"));
        Ok(notes.join("; "))
    }

    async fn restore_code(&self, prior: &Value) -> Result<String, PlatformError> {
        let (Some(traffic), Some(active)) =
            (prior["traffic"].as_array(), prior["active"].as_array())
        else {
            return Err(PlatformError::Invalid(format!(
                "the journal's earlier code state of Container App `{}` has no traffic or active revisions: {prior}",
                self.app
            )));
        };
        let active: Vec<&str> = active.iter().filter_map(Value::as_str).collect();
        let prior_latest = prior["latestRevisionName"].as_str();
        let (app, revisions) = self.read_code().await?;
        let latest_now = app["properties"]["latestRevisionName"].as_str();
        // `latestRevision: true` meant the latest revision of then; a release has made a
        // newer one, so those entries name the revision they meant.
        let repinned = latest_now != prior_latest
            && traffic
                .iter()
                .any(|e| e["latestRevision"].as_bool() == Some(true));
        let wanted: Vec<Value> = if repinned {
            pinned(traffic, prior_latest)
        } else {
            traffic.iter().map(entry).collect()
        };
        let mut done = Vec::new();
        let is_active_now = |name: &str| {
            revisions
                .iter()
                .any(|r| revision_name(r) == name && is_active(r))
        };
        for name in &active {
            if !is_active_now(name) {
                self.activate(name).await?;
                done.push(format!("activated `{name}`"));
            }
        }
        if sorted(&wanted) != sorted(&traffic_of(&app)) {
            self.patch_traffic(&self.app, "putting the earlier traffic back", &wanted)
                .await?;
            done.push("traffic put back".to_owned());
        }
        for r in revisions.iter().filter(|r| is_active(r)) {
            let name = revision_name(r);
            if !active.contains(&name) {
                self.revision_action(name, "deactivate").await?;
                done.push(format!("deactivated `{name}`"));
            }
        }
        // Read back and compare.
        let (app, revisions) = self.read_code().await?;
        let mut now_active: Vec<&str> = revisions
            .iter()
            .filter(|r| is_active(r))
            .map(revision_name)
            .collect();
        now_active.sort_unstable();
        let mut want_active = active.clone();
        want_active.sort_unstable();
        let traffic_now = traffic_of(&app);
        if sorted(&traffic_now) != sorted(&wanted) || now_active != want_active {
            return Err(api(
                format!(
                    "put the code of Container App `{}` back, but it reads back traffic {} and active revisions {} instead of traffic {} and active revisions {}",
                    self.app,
                    Value::Array(traffic_now),
                    now_active.join(", "),
                    Value::Array(wanted),
                    want_active.join(", ")
                ),
                false,
            ));
        }
        let shares = weights(&app)
            .iter()
            .map(|(n, w)| format!("`{n}` {w}%"))
            .collect::<Vec<_>>()
            .join(", ");
        let checked = "checked: ingress.traffic and the active revisions read back";
        let how = if repinned {
            format!(
                " (its `latestRevision` entries now name `{}`, the latest revision then)",
                prior_latest.unwrap_or_default()
            )
        } else {
            String::new()
        };
        Ok(if done.is_empty() {
            format!(
                "traffic {shares}{how} and active revisions {}, as before ({checked})",
                want_active.join(", ")
            )
        } else {
            format!(
                "{}: traffic {shares}{how} and active revisions {}, as before ({checked})",
                done.join(", "),
                want_active.join(", ")
            )
        })
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
    fn a_version_becomes_a_revision_suffix_azure_accepts() {
        let s = |v| revision_suffix("api", v);
        assert_eq!(s("v42").unwrap(), "v42");
        assert_eq!(s("1.4.0").unwrap(), "v1-4-0");
        assert_eq!(
            s("Release_2026.01+build.7").unwrap(),
            "release-2026-01-build-7"
        );
        assert_eq!(s("v42-").unwrap(), "v42");
        assert!(s("...").is_err());
        assert!(s(&"a".repeat(60)).unwrap_err().contains("63 characters"));
    }

    #[test]
    fn an_image_gets_the_version_as_its_tag() {
        assert_eq!(tag_of("acr.io/api:v41"), Some("v41"));
        assert_eq!(tag_of("localhost:5000/api"), None);
        assert_eq!(tag_of("acr.io/api@sha256:abc"), None);
        assert_eq!(with_tag("acr.io/api:v41", "v42"), "acr.io/api:v42");
        assert_eq!(
            with_tag("localhost:5000/api", "v42"),
            "localhost:5000/api:v42"
        );
        assert_eq!(with_tag("acr.io/api@sha256:abc", "v42"), "acr.io/api:v42");
    }

    #[test]
    fn latest_revision_entries_are_pinned_and_weights_summed() {
        let app = json!({"properties": {"latestRevisionName": "api--b", "configuration": {"ingress": {"traffic": [
            {"latestRevision": true, "weight": 30, "label": "next"},
            {"revisionName": "api--a", "weight": 70},
            {"revisionName": "api--b", "weight": 0, "label": "b"}
        ]}}}});
        assert_eq!(
            pinned(&traffic_of(&app), Some("api--b")),
            vec![
                json!({"revisionName": "api--b", "weight": 30, "label": "next"}),
                json!({"revisionName": "api--a", "weight": 70}),
                json!({"revisionName": "api--b", "weight": 0, "label": "b"}),
            ]
        );
        assert_eq!(
            weights(&app),
            vec![("api--b".to_owned(), 30), ("api--a".to_owned(), 70)]
        );
        let revisions = [json!({"name": "api--a"}), json!({"name": "api--b"})];
        assert_eq!(live_revision(&app, &revisions).as_deref(), Some("api--a"));
    }

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
