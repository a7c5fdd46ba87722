//! No platform: the app is not managed by cutover. Steps that need a platform say what they
//! would have done and succeed, so the same pipeline runs locally and in production.

use async_trait::async_trait;

use super::{Platform, PlatformError, PlatformState};

pub(crate) struct NoPlatform;

#[async_trait]
impl Platform for NoPlatform {
    fn kind(&self) -> &'static str {
        "none"
    }

    fn describe(&self) -> String {
        "none (maintenance, scale and restart are reported, not performed)".into()
    }

    async fn state(&self) -> Result<PlatformState, PlatformError> {
        Ok(PlatformState::default())
    }

    async fn set_maintenance(&self, enabled: bool) -> Result<String, PlatformError> {
        Ok(format!(
            "no platform configured: would turn maintenance {}",
            if enabled { "on" } else { "off" }
        ))
    }

    async fn scale(&self, target: &str, replicas: u32) -> Result<String, PlatformError> {
        Ok(format!(
            "no platform configured: would scale {target} to {replicas}"
        ))
    }

    async fn restart(&self) -> Result<String, PlatformError> {
        Ok("no platform configured: would restart the app".into())
    }
}
