//! Azure App Service, through Azure Resource Manager (`Microsoft.Web/sites`, or a slot
//! under `/slots/{slot}`).
//!
//! - state: `POST /config/appsettings/list` (the maintenance setting) and `GET` the site
//!   (`properties.state`: the `app` target counts 1 when `Running`, else 0);
//! - maintenance: list the app settings, set the one setting (default
//!   `MAINTENANCE_MODE=true|false`) and `PUT /config/appsettings` with the whole set, since
//!   that `PUT` replaces every setting. Turning maintenance back to how it was before this
//!   run restores the exact earlier value, including removing a setting that was absent.
//!   The earlier value (or absence) is also journaled before the change
//!   (`Platform::prior`), so `recover` in another process restores it exactly.
//!   Azure restarts the app when its settings change;
//! - scale: target `app` to 0 is `POST /stop`, to 1 is `POST /start` (instance counts
//!   belong to the App Service plan, not the app);
//! - restart: `POST /restart`.
//!
//! Code (`release` and `traffic` steps) goes through a deployment slot, `staging_slot`
//! (default `staging`), and a swap, on the production site (not with `slot:` set):
//! - code: `GET /config/web` and `GET /slots/{slot}/config/web`, the images each runs
//!   (`linuxFxVersion`, `DOCKER|repo:tag`: the tag is the version); production has all the
//!   traffic, the slot none;
//! - stage: `PATCH /slots/{slot}/config/web` with the new `linuxFxVersion` (the `image:`
//!   template, else production's image with the tag replaced), read back, then the slot is
//!   warmed: `warm_url` (default: the slot's host name with the path of the environment's
//!   health URL) is polled until it answers 2xx;
//! - route: `POST /slots/{slot}/slotsswap` `{"targetSlot": "production", "preserveVnet":
//!   true}`, a long-running operation followed to its end, and the images read back. A
//!   swap moves all the traffic: there is no split;
//! - restore: the swap again when production no longer runs its earlier image and the slot
//!   does, then the slot's earlier image set back, and both read back and compared.

use std::collections::BTreeMap;
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
use crate::config::deploy_file::AppServiceConfig;

pub(crate) const DEFAULT_API_VERSION: &str = "2024-04-01";
pub(crate) const DEFAULT_MAINTENANCE_SETTING: &str = "MAINTENANCE_MODE";
/// Longest one request (and any operation it starts) may take.
const CHANGE_LIMIT: Duration = Duration::from_secs(10 * 60);
/// Longest a slot swap may take: Azure warms the slot with production's settings first.
const SWAP_LIMIT: Duration = Duration::from_secs(30 * 60);
/// The slot `release` stages code in unless `staging_slot:` says otherwise.
pub(crate) const DEFAULT_STAGING_SLOT: &str = "staging";
/// How long a staged slot may take to answer 2xx on its warm URL.
const WARM_LIMIT: Duration = Duration::from_secs(5 * 60);
/// Longest wait between two polls of the warm URL.
const WARM_POLL: Duration = Duration::from_secs(5);

pub(crate) struct AppServicePlatform {
    /// `/subscriptions/../sites/{app}[/slots/{slot}]`.
    path: String,
    shown: String,
    setting: String,
    api_version: String,
    arm: LazyArm,
    /// The setting before this process first changed it.
    setting_before: Mutex<Option<Earlier>>,
    /// Code releases: the production site, its staging slot, how images are named and
    /// where the staged code is warmed.
    code: CodeConfig,
}

struct CodeConfig {
    /// `/subscriptions/../sites/{app}`, the production site.
    site: String,
    /// `slot:`, when the platform acts on a slot: code releases are then refused.
    acting_on: Option<String>,
    slot: String,
    /// `image:`, with `{version}`.
    image: Option<String>,
    /// `warm_url:`.
    warm_url: Option<String>,
    /// The path (and query) of the environment's health URL, for the default warm URL.
    health_path: Option<String>,
    http: reqwest::Client,
}

/// The images production and the staging slot run (`linuxFxVersion`, `""` for none).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Images {
    production: String,
    slot: String,
}

impl AppServicePlatform {
    pub(crate) fn new(
        c: &AppServiceConfig,
        resolver: &dyn Resolve,
        health_url: Option<&str>,
    ) -> Result<Self, BuildError> {
        let site = Site::read(
            "platform `azure-app-service`",
            resolver,
            c.subscription.as_ref(),
            &c.resource_group,
        )?;
        let invalid = |m: String| site.invalid(&m);
        let text = |t: &Option<crate::config::deploy_file::Text>| setting(resolver, t.as_ref());
        let app = resolver.text(&c.app)?.trim().to_owned();
        let slot = text(&c.slot)?;
        site.check_names(&[("app", Some(&app)), ("slot", slot.as_ref())])?;
        let setting =
            text(&c.maintenance_setting)?.unwrap_or_else(|| DEFAULT_MAINTENANCE_SETTING.to_owned());
        if setting.is_empty()
            || !setting
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(invalid(format!(
                "`maintenance_setting: {setting}` is not an app setting name"
            )));
        }
        let staging_slot =
            text(&c.staging_slot)?.unwrap_or_else(|| DEFAULT_STAGING_SLOT.to_owned());
        site.check_names(&[("staging_slot", Some(&staging_slot))])?;
        if staging_slot.eq_ignore_ascii_case("production") {
            return Err(invalid(
                "`staging_slot: production`: the staging slot is the one swapped into production"
                    .into(),
            ));
        }
        let image = text(&c.image)?;
        if let Some(image) = &image
            && (!image.contains("{version}") || image.chars().any(char::is_whitespace))
        {
            return Err(invalid(format!(
                "`image: {image}` must be an image name with `{{version}}` for the tag, like `myregistry.azurecr.io/web:{{version}}`"
            )));
        }
        let warm_url = text(&c.warm_url)?;
        if let Some(url) = &warm_url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return Err(invalid(format!("`warm_url: {url}` is not an http(s) URL")));
                }
            }
        }
        let health_path = health_url
            .and_then(|u| reqwest::Url::parse(u).ok())
            .map(|u| u.path().to_owned());
        let http = reqwest::Client::builder()
            .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| invalid(format!("cannot start the HTTP client: {e}")))?;
        let mut path = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{app}",
            site.subscription, site.resource_group
        );
        let code = CodeConfig {
            site: path.clone(),
            acting_on: slot.clone(),
            slot: staging_slot,
            image,
            warm_url,
            health_path,
            http,
        };
        let shown = match &slot {
            Some(slot) => {
                path.push_str(&format!("/slots/{slot}"));
                format!("App Service `{app}` (slot `{slot}`)")
            }
            None => format!("App Service `{app}`"),
        };
        Ok(Self {
            path,
            shown,
            setting,
            api_version: text(&c.api_version)?.unwrap_or_else(|| DEFAULT_API_VERSION.to_owned()),
            arm: LazyArm::new(site.auth),
            setting_before: Mutex::default(),
            code,
        })
    }

    async fn arm(&self) -> Result<&Arm, PlatformError> {
        Ok(self.arm.get().await?)
    }

    async fn post(&self, what: &str, action: &str) -> Result<Value, PlatformError> {
        Ok(self
            .arm()
            .await?
            .send(
                &format!("{what} {}", self.shown),
                Method::POST,
                &format!("{}/{action}", self.path),
                &self.api_version,
                None,
                Instant::now() + CHANGE_LIMIT,
            )
            .await?)
    }

    async fn settings(&self) -> Result<Map<String, Value>, PlatformError> {
        let listed = self
            .post("reading the app settings of", "config/appsettings/list")
            .await?;
        Ok(listed["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default())
    }

    async fn running(&self) -> Result<bool, PlatformError> {
        let site = self
            .arm()
            .await?
            .get(
                &format!("reading {}", self.shown),
                &self.path,
                &self.api_version,
            )
            .await?;
        Ok(site["properties"]["state"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("running")))
    }

    /// `PUT`s the whole set with `setting` at `wanted` (`None`: removed), unless it is that
    /// `now`.
    async fn put_setting(
        &self,
        setting: &str,
        mut settings: Map<String, Value>,
        now: Option<String>,
        wanted: Option<String>,
    ) -> Result<String, PlatformError> {
        if wanted == now {
            return Ok(format!(
                "{setting} already {} on {}",
                now.as_deref()
                    .map_or("absent".to_owned(), |v| format!("`{v}`")),
                self.shown
            ));
        }
        match &wanted {
            Some(v) => settings.insert(setting.to_owned(), json!(v)),
            None => settings.remove(setting),
        };
        let body = json!({ "properties": settings });
        let what = match &wanted {
            Some(v) => format!("setting {setting}={v} on {}", self.shown),
            None => format!("removing {setting} from {}", self.shown),
        };
        self.arm()
            .await?
            .send(
                &what,
                Method::PUT,
                &format!("{}/config/appsettings", self.path),
                &self.api_version,
                Some(&body),
                Instant::now() + CHANGE_LIMIT,
            )
            .await?;
        Ok(format!("{what}: done (Azure restarts the app to apply it)"))
    }
}

/// Code releases: the staging slot and the swap.
impl AppServicePlatform {
    fn slot_path(&self, slot: &str) -> String {
        format!("{}/slots/{slot}", self.code.site)
    }

    fn slot_shown(&self, slot: &str) -> String {
        format!("slot `{slot}` of {}", self.shown)
    }

    /// The `linuxFxVersion` of production (`slot: None`) or a slot.
    async fn image_of(&self, slot: Option<&str>) -> Result<String, PlatformError> {
        let (path, shown) = match slot {
            Some(slot) => (self.slot_path(slot), self.slot_shown(slot)),
            None => (
                self.code.site.clone(),
                format!("production of {}", self.shown),
            ),
        };
        let config = self
            .arm()
            .await?
            .get(
                &format!("reading the site configuration of {shown}"),
                &format!("{path}/config/web"),
                &self.api_version,
            )
            .await
            .map_err(|e| match (e.status, slot) {
                (Some(404), Some(slot)) => PlatformError::Invalid(format!(
                    "{e}; {} has no deployment slot `{slot}`: create it (`az webapp deployment slot create --slot {slot}`) or name another with `staging_slot:`",
                    self.shown
                )),
                _ => e.into(),
            })?;
        Ok(config["properties"]["linuxFxVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    async fn images(&self, slot: &str) -> Result<Images, PlatformError> {
        Ok(Images {
            production: self.image_of(None).await?,
            slot: self.image_of(Some(slot)).await?,
        })
    }

    /// Sets the slot's image and reads it back.
    async fn set_slot_image(&self, slot: &str, image: &str) -> Result<(), PlatformError> {
        let what = format!(
            "setting the image of {} to {}",
            self.slot_shown(slot),
            shown_image(image)
        );
        self.arm()
            .await?
            .send(
                &what,
                Method::PATCH,
                &format!("{}/config/web", self.slot_path(slot)),
                &self.api_version,
                Some(&json!({ "properties": { "linuxFxVersion": image } })),
                Instant::now() + CHANGE_LIMIT,
            )
            .await?;
        let now = self.image_of(Some(slot)).await?;
        if now != image {
            return Err(PlatformError::Invalid(format!(
                "{what}: Azure accepted it, but the slot reads back {}",
                shown_image(&now)
            )));
        }
        Ok(())
    }

    /// Swaps `slot` with production and follows the operation to its end.
    async fn swap(&self, slot: &str) -> Result<(), PlatformError> {
        self.arm()
            .await?
            .send(
                &format!("swapping {} into production", self.slot_shown(slot)),
                Method::POST,
                &format!("{}/slotsswap", self.slot_path(slot)),
                &self.api_version,
                Some(&json!({ "targetSlot": "production", "preserveVnet": true })),
                Instant::now() + SWAP_LIMIT,
            )
            .await?;
        Ok(())
    }

    /// The image `version` is: the `image:` template, else production's with the tag
    /// replaced.
    fn image_for(&self, version: &str, production: &str) -> Result<String, PlatformError> {
        if let Some(template) = &self.code.image {
            let image = template.replace("{version}", version);
            return Ok(if image.contains('|') {
                image
            } else {
                format!("DOCKER|{image}")
            });
        }
        let Some((repo, _)) = docker_image(production) else {
            return Err(PlatformError::Invalid(format!(
                "production of {} runs {}, not a container image with a tag (`DOCKER|repo:tag`): set `image:` under `platform:` (like `myregistry.azurecr.io/web:{{version}}`)",
                self.shown,
                shown_image(production)
            )));
        };
        Ok(format!("DOCKER|{repo}:{version}"))
    }

    /// Polls the warm URL until it answers 2xx, up to [`WARM_LIMIT`].
    async fn warm(&self, slot: &str) -> Result<String, PlatformError> {
        let url = if let Some(url) = &self.code.warm_url {
            url.clone()
        } else {
            let Some(path) = &self.code.health_path else {
                return Err(PlatformError::Invalid(
                        "no URL to warm the staged code on: set `warm_url:` under `platform:` or the environment's `health.url`".into(),
                    ));
            };
            let found = self
                .arm()
                .await?
                .get(
                    &format!("reading {}", self.slot_shown(slot)),
                    &self.slot_path(slot),
                    &self.api_version,
                )
                .await?;
            let Some(host) = found["properties"]["defaultHostName"].as_str() else {
                return Err(PlatformError::Invalid(format!(
                    "{} has no `defaultHostName` to warm it on: set `warm_url:` under `platform:`",
                    self.slot_shown(slot)
                )));
            };
            format!("https://{host}{path}")
        };
        let started = Instant::now();
        let deadline = started + WARM_LIMIT;
        let mut wait = Duration::from_millis(100);
        loop {
            let last = match self.code.http.get(&url).send().await {
                Ok(answer) if answer.status().is_success() => {
                    return Ok(format!(
                        "warm: {url} answered {} after {}s",
                        answer.status().as_u16(),
                        started.elapsed().as_secs()
                    ));
                }
                Ok(answer) => {
                    let status = answer.status();
                    let body: String = answer
                        .text()
                        .await
                        .unwrap_or_default()
                        .trim()
                        .chars()
                        .take(200)
                        .collect();
                    if body.is_empty() {
                        format!("HTTP {}", status.as_u16())
                    } else {
                        format!("HTTP {}: {body}", status.as_u16())
                    }
                }
                Err(e) if e.is_timeout() => "no answer in time".to_owned(),
                Err(e) if e.is_connect() => "cannot connect".to_owned(),
                Err(e) => e.to_string(),
            };
            if Instant::now() + wait >= deadline {
                return Err(PlatformError::Invalid(format!(
                    "the code staged in {} did not answer 2xx at {url} within {}; the last answer: {last}",
                    self.slot_shown(slot),
                    humantime::format_duration(WARM_LIMIT)
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(WARM_POLL);
        }
    }

    /// Refuses code actions on a platform that acts on a slot.
    fn code_refused(&self) -> Option<String> {
        self.code.acting_on.as_ref().map(|slot| {
            format!(
                "this platform acts on slot `{slot}` (`slot:`); code releases stage in `staging_slot:` and swap it into production: configure the production app without `slot:` for `release` and `traffic` steps"
            )
        })
    }

    fn refuse_code(&self) -> Result<(), PlatformError> {
        match self.code_refused() {
            Some(why) => Err(PlatformError::Unsupported(why)),
            None => Ok(()),
        }
    }
}

/// `DOCKER|repo:tag` → (`repo`, `tag`); `None` for anything else (a built-in stack, a
/// digest, no tag).
fn docker_image(fx: &str) -> Option<(&str, &str)> {
    let image = fx
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("DOCKER|"))
        .map(|_| &fx[7..])?;
    let (repo, tag) = image.rsplit_once(':')?;
    (!repo.is_empty() && !tag.is_empty() && !tag.contains('/') && !image.contains('@'))
        .then_some((repo, tag))
}

/// The code version an image runs: its tag.
fn version_of(fx: &str) -> Option<String> {
    docker_image(fx).map(|(_, tag)| tag.to_owned())
}

/// `repo:tag`, or the stack (`NODE|20-lts`), or `no image`, for messages.
fn shown_image(fx: &str) -> String {
    if fx.is_empty() {
        return "no image".into();
    }
    match docker_image(fx) {
        Some((repo, tag)) => format!("`{repo}:{tag}`"),
        None => format!("`{fx}`"),
    }
}

/// A setting's earlier value (`None`: it was absent).
#[derive(Clone)]
struct Earlier(Option<String>);

fn value_of(settings: &Map<String, Value>, setting: &str) -> Option<String> {
    settings
        .get(setting)
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
}

fn is_on(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[async_trait]
impl Platform for AppServicePlatform {
    fn kind(&self) -> &'static str {
        "azure-app-service"
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    async fn state(&self) -> Result<PlatformState, PlatformError> {
        let settings = self.settings().await?;
        let maintenance = is_on(settings.get(&self.setting).and_then(Value::as_str));
        let replicas = BTreeMap::from([("app".to_owned(), u32::from(self.running().await?))]);
        Ok(PlatformState {
            maintenance: Some(maintenance),
            replicas,
            code: None,
        })
    }

    async fn set_maintenance(&self, enabled: bool) -> Result<String, PlatformError> {
        let settings = self.settings().await?;
        let now = value_of(&settings, &self.setting);
        let wanted = {
            let mut before = self.setting_before.lock().expect("not poisoned");
            match before.clone() {
                // Back to the state before this run: the exact earlier value.
                Some(Earlier(prior)) if is_on(prior.as_deref()) == enabled => {
                    *before = None;
                    prior
                }
                found => {
                    if found.is_none() {
                        *before = Some(Earlier(now.clone()));
                    }
                    Some(enabled.to_string())
                }
            }
        };
        self.put_setting(&self.setting, settings, now, wanted).await
    }

    async fn scale(&self, target: &str, replicas: u32) -> Result<String, PlatformError> {
        if target != "app" {
            return Err(PlatformError::Invalid(format!(
                "App Service has one scale target, `app`, not `{target}`"
            )));
        }
        match replicas {
            0 => {
                self.post("stopping", "stop").await?;
                Ok(format!("{} stopped", self.shown))
            }
            1 => {
                self.post("starting", "start").await?;
                Ok(format!("{} started", self.shown))
            }
            n => Err(PlatformError::Unsupported(format!(
                "App Service target `app` is 0 (stopped) or 1 (running), not {n}: instance counts belong to the App Service plan"
            ))),
        }
    }

    async fn prior(&self, subject: Subject<'_>) -> Result<Option<Value>, PlatformError> {
        Ok(match subject {
            Subject::Maintenance => Some(json!({
                "setting": self.setting,
                "value": value_of(&self.settings().await?, &self.setting),
            })),
            // Running or stopped is all there is to a target.
            Subject::Target(_) => None,
        })
    }

    async fn restore_maintenance(
        &self,
        enabled: bool,
        prior: Option<&Value>,
    ) -> Result<String, PlatformError> {
        let Some((setting, value)) =
            prior.and_then(|p| Some((p["setting"].as_str()?, &p["value"])))
        else {
            return self.set_maintenance(enabled).await;
        };
        let settings = self.settings().await?;
        let now = value_of(&settings, setting);
        *self.setting_before.lock().expect("not poisoned") = None;
        self.put_setting(setting, settings, now, value.as_str().map(str::to_owned))
            .await
    }

    async fn restart(&self) -> Result<String, PlatformError> {
        self.post("restarting", "restart").await?;
        Ok(format!("{} restarted", self.shown))
    }

    fn code_actions(&self) -> CodeActions {
        if let Some(why) = self.code_refused() {
            return CodeActions {
                stage: Err(why.clone()),
                traffic: Err(why),
                split: false,
            };
        }
        let stage = if self.code.warm_url.is_none() && self.code.health_path.is_none() {
            Err("a `release` step warms the staging slot on a URL: set `warm_url:` under `platform:` or the environment's `health.url`".to_owned())
        } else {
            Ok(())
        };
        CodeActions {
            stage,
            traffic: Ok(()),
            // A swap moves all the traffic at once.
            split: false,
        }
    }

    async fn code(&self) -> Result<Option<CodeState>, PlatformError> {
        if self.code_refused().is_some() {
            return Ok(None);
        }
        let images = self.images(&self.code.slot).await?;
        let live = version_of(&images.production);
        Ok(Some(CodeState {
            live: live.clone(),
            routes: vec![
                Route {
                    name: "production".into(),
                    version: live,
                    weight: 100,
                },
                Route {
                    name: self.code.slot.clone(),
                    version: version_of(&images.slot),
                    weight: 0,
                },
            ],
        }))
    }

    async fn code_prior(&self) -> Result<Value, PlatformError> {
        self.refuse_code()?;
        let images = self.images(&self.code.slot).await?;
        Ok(json!({
            "slot": self.code.slot,
            "production_image": images.production,
            "slot_image": images.slot,
        }))
    }

    async fn stage(&self, version: &str) -> Result<String, PlatformError> {
        self.refuse_code()?;
        let slot = self.code.slot.clone();
        let images = self.images(&slot).await?;
        let wanted = self.image_for(version, &images.production)?;
        let set = if images.slot == wanted {
            format!(
                "{} already runs {}",
                self.slot_shown(&slot),
                shown_image(&wanted)
            )
        } else {
            self.set_slot_image(&slot, &wanted).await?;
            format!(
                "{} runs {} (was {})",
                self.slot_shown(&slot),
                shown_image(&wanted),
                shown_image(&images.slot)
            )
        };
        let warmed = self.warm(&slot).await?;
        Ok(format!("{set}; {warmed}"))
    }

    async fn route(&self, version: &str, percent: u32) -> Result<String, PlatformError> {
        self.refuse_code()?;
        if percent != 100 {
            return Err(PlatformError::Unsupported(format!(
                "{} moves all the traffic at once with a slot swap: use `stages: [100]`",
                self.shown
            )));
        }
        let slot = self.code.slot.clone();
        let before = self.images(&slot).await?;
        if version_of(&before.production).as_deref() == Some(version) {
            return Ok(format!(
                "{version} already runs in production of {} ({})",
                self.shown,
                shown_image(&before.production)
            ));
        }
        if version_of(&before.slot).as_deref() != Some(version) {
            return Err(PlatformError::Invalid(format!(
                "{} runs {}, not {version}: stage it with a `release` step first (before this `traffic` step)",
                self.slot_shown(&slot),
                shown_image(&before.slot)
            )));
        }
        self.swap(&slot).await?;
        let after = self.images(&slot).await?;
        if after.production != before.slot {
            return Err(PlatformError::Invalid(format!(
                "the swap of {} finished, but production runs {}, not {}",
                self.slot_shown(&slot),
                shown_image(&after.production),
                shown_image(&before.slot)
            )));
        }
        Ok(format!(
            "{version} swapped into production of {} from slot `{slot}`; the slot now holds {} (checked)",
            self.shown,
            shown_image(&after.slot)
        ))
    }

    async fn restore_code(&self, prior: &Value) -> Result<String, PlatformError> {
        self.refuse_code()?;
        let (Some(slot), Some(production), Some(slot_image)) = (
            prior["slot"].as_str(),
            prior["production_image"].as_str(),
            prior["slot_image"].as_str(),
        ) else {
            return Err(PlatformError::Invalid(format!(
                "the journal's earlier code state of {} lacks the slot or its images: {prior}",
                self.shown
            )));
        };
        let mut done = Vec::new();
        let now = self.images(slot).await?;
        if now.production != production {
            if now.slot != production {
                return Err(PlatformError::Invalid(format!(
                    "production of {} runs {} and slot `{slot}` {}: neither is the earlier production image {}, so a swap cannot put it back; set it by hand (`az webapp config container set`) and check",
                    self.shown,
                    shown_image(&now.production),
                    shown_image(&now.slot),
                    shown_image(production)
                )));
            }
            self.swap(slot).await?;
            done.push(format!("slot `{slot}` swapped back into production"));
        }
        if self.image_of(Some(slot)).await? != slot_image {
            self.set_slot_image(slot, slot_image).await?;
            done.push(format!(
                "slot `{slot}` set back to {}",
                shown_image(slot_image)
            ));
        }
        let after = self.images(slot).await?;
        let wanted = Images {
            production: production.to_owned(),
            slot: slot_image.to_owned(),
        };
        if after != wanted {
            return Err(PlatformError::Invalid(format!(
                "after putting the code back, production of {} runs {} and slot `{slot}` {}, not {} and {}",
                self.shown,
                shown_image(&after.production),
                shown_image(&after.slot),
                shown_image(production),
                shown_image(slot_image)
            )));
        }
        let checked = format!(
            "production runs {} and slot `{slot}` {}, as before (checked: both read back)",
            shown_image(production),
            shown_image(slot_image)
        );
        Ok(if done.is_empty() {
            checked
        } else {
            format!("{}; {checked}", done.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_tag_of_a_container_image() {
        assert_eq!(
            docker_image("DOCKER|mealprep.azurecr.io/web:41"),
            Some(("mealprep.azurecr.io/web", "41"))
        );
        assert_eq!(
            version_of("docker|nginx:1.27-alpine").as_deref(),
            Some("1.27-alpine")
        );
        assert_eq!(docker_image("DOCKER|localhost:5000/web"), None);
        assert_eq!(docker_image("DOCKER|web@sha256:abc"), None);
        assert_eq!(docker_image("NODE|20-lts"), None);
        assert_eq!(docker_image(""), None);
        assert_eq!(shown_image(""), "no image");
        assert_eq!(shown_image("NODE|20-lts"), "`NODE|20-lts`");
    }
}
