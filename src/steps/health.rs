//! `health`: poll the app over HTTP(S) until it answers as expected, or give up at the
//! timeout. Polls start 25 ms apart and back off, with jitter, to the step's `interval`, so
//! an app that comes up is seen within a fraction of that interval.

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
        .http()?
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

/// The steady wait between polls unless the step sets `interval`: ten requests a second at most
/// to one endpoint while a release waits on it.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// The first wait: an app that is already up, or comes up quickly, is seen at once.
const FIRST_WAIT: Duration = Duration::from_millis(25);

/// The waits between polls: from [`FIRST_WAIT`], growing by half up to `interval`, each
/// off by up to ±10% so runners polling one endpoint do not fall into step.
struct Backoff {
    next: Duration,
    interval: Duration,
    jitter: std::collections::hash_map::RandomState,
    n: u64,
}

impl Backoff {
    fn new(interval: Duration) -> Self {
        Self {
            next: FIRST_WAIT.min(interval),
            interval,
            jitter: std::collections::hash_map::RandomState::new(),
            n: 0,
        }
    }

    fn wait(&mut self) -> Duration {
        use std::hash::BuildHasher;
        self.n += 1;
        // A fraction in [-0.1, 0.1) from a randomly keyed hash of the poll count.
        let unit = (self.jitter.hash_one(self.n) >> 11) as f64 / (1u64 << 53) as f64;
        let wait = self.next.mul_f64(0.9 + 0.2 * unit);
        self.next = self.next.mul_f64(1.5).min(self.interval);
        wait
    }
}

pub async fn run(ctx: &Context, id: &str, with: &HealthWith) -> Result<String, StepError> {
    let target = target(ctx, with).map_err(StepError::Failed)?;
    let start = Instant::now();
    let interval = with.interval.map_or(
        DEFAULT_INTERVAL,
        super::super::config::duration::Duration::get,
    );
    let mut backoff = Backoff::new(interval);
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
                    "healthy after {attempts} request(s) in {:.3}s",
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
        if attempts == 1 || attempts % 20 == 0 {
            ctx.note(id, format!("not healthy yet: {last}"));
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.wait().min(left)) => {}
            () = ctx.cancel.cancelled() => return Err(StepError::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_from_the_first_to_the_interval_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(150));
        let waits: Vec<Duration> = (0..12).map(|_| b.wait()).collect();
        assert!(
            waits[0] >= Duration::from_micros(22_500) && waits[0] <= Duration::from_micros(27_500)
        );
        for w in &waits[8..] {
            assert!(
                *w >= Duration::from_millis(135) && *w <= Duration::from_millis(165),
                "{w:?}"
            );
        }
        assert!(waits.windows(2).any(|p| p[0] != p[1]));
    }

    #[test]
    fn a_short_interval_is_the_first_wait_too() {
        let mut b = Backoff::new(Duration::from_millis(10));
        assert!(b.wait() <= Duration::from_millis(11));
    }
}
