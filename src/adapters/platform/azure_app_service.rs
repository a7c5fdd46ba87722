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

use std::collections::BTreeMap;
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
use crate::config::deploy_file::AppServiceConfig;

pub(crate) const DEFAULT_API_VERSION: &str = "2024-04-01";
pub(crate) const DEFAULT_MAINTENANCE_SETTING: &str = "MAINTENANCE_MODE";
/// Longest one request (and any operation it starts) may take.
const CHANGE_LIMIT: Duration = Duration::from_secs(10 * 60);

pub(crate) struct AppServicePlatform {
    /// `/subscriptions/../sites/{app}[/slots/{slot}]`.
    path: String,
    shown: String,
    setting: String,
    api_version: String,
    arm: LazyArm,
    /// The setting before this process first changed it.
    setting_before: Mutex<Option<Earlier>>,
}

impl AppServicePlatform {
    pub(crate) fn new(c: &AppServiceConfig, resolver: &dyn Resolve) -> Result<Self, BuildError> {
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
        let mut path = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{app}",
            site.subscription, site.resource_group
        );
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
}
