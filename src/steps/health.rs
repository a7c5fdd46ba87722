//! `health`: poll the app over HTTP(S) until it answers as expected, backing off between
//! polls, or give up at the timeout.

use std::time::{Duration, Instant};

use crate::config::pipeline::HealthWith;
use crate::engine::context::{Context, HealthTarget};
use crate::engine::error::StepError;

fn target(ctx: &Context, with: &HealthWith) -> Result<HealthTarget, String> {
    let base = ctx.health.clone();
    let url = match (&with.url, &base) {
        (Some(url), _) => url.value.clone(),
        (None, Some(h)) => h.url.clone(),
        (None, None) => {
            return Err(
                "no URL: set `with: { url: ... }` or the environment's `health.url`".into(),
            );
        }
    };
    reqwest::Url::parse(&url)
        .map_err(|e| format!("invalid health URL `{}`: {e}", ctx.redactor.redact(&url)))?;
    Ok(HealthTarget {
        url,
        expect: with
            .expect
            .or(base.as_ref().map(|h| h.expect))
            .unwrap_or(200),
        body: with
            .body
            .clone()
            .or(base.as_ref().and_then(|h| h.body.clone())),
        timeout: with
            .timeout
            .map(super::super::config::duration::Duration::get)
            .or(base.as_ref().map(|h| h.timeout))
            .unwrap_or(Duration::from_secs(300)),
    })
}

pub fn plan(ctx: &Context, with: &HealthWith) -> Result<(String, Option<String>), String> {
    let t = target(ctx, with)?;
    Ok((
        format!(
            "poll {} until it answers {} (up to {})",
            ctx.redactor.redact(&t.url),
            t.expect,
            humantime::format_duration(t.timeout)
        ),
        None,
    ))
}

/// One probe: `Ok(())` when healthy, else what was wrong.
pub async fn probe(ctx: &Context, target: &HealthTarget, timeout: Duration) -> Result<(), String> {
    let response = ctx
        .http
        .get(&target.url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| describe_error(&e))?;
    let status = response.status().as_u16();
    if status != target.expect {
        return Err(format!("answered {status}, expected {}", target.expect));
    }
    if let Some(expected) = &target.body {
        let body = response.text().await.map_err(|e| describe_error(&e))?;
        if !body.contains(expected.as_str()) {
            return Err(format!("body does not contain `{expected}`"));
        }
    }
    Ok(())
}

fn describe_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        // Without the URL: it may carry credentials.
        e.without_url_ref().clone()
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(url.as_str(), "<url>");
        }
        text
    }
}

pub async fn run(ctx: &Context, id: &str, with: &HealthWith) -> Result<String, StepError> {
    let target = target(ctx, with).map_err(StepError::Failed)?;
    let start = Instant::now();
    let first = with.interval.map_or(
        Duration::from_secs(1),
        super::super::config::duration::Duration::get,
    );
    let mut wait = first;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = target.timeout.saturating_sub(start.elapsed());
        let last = match probe(
            ctx,
            &target,
            left.min(Duration::from_secs(10))
                .max(Duration::from_millis(100)),
        )
        .await
        {
            Ok(()) => {
                return Ok(format!(
                    "healthy after {attempts} request(s) in {:.1}s",
                    start.elapsed().as_secs_f64()
                ));
            }
            Err(e) => e,
        };
        let left = target.timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(StepError::Failed(format!(
                "never healthy within {} ({attempts} request(s)); last: {last}",
                humantime::format_duration(target.timeout)
            )));
        }
        if attempts == 1 || attempts % 5 == 0 {
            ctx.note(id, format!("not healthy yet: {last}"));
        }
        tokio::select! {
            () = tokio::time::sleep(wait.min(left)) => {}
            () = ctx.cancel.cancelled() => return Err(StepError::Cancelled),
        }
        wait = (wait.mul_f64(1.5)).min(first * 5);
    }
}
