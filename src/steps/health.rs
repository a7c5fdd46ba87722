//! `health`: poll the app over HTTP(S) until it has answered as expected for a while, or give
//! up at the timeout. One good answer is not enough: an app that answers once after traffic
//! comes back and then crashes must roll the release back, so the step passes only after
//! `successes` good answers in a row spanning at least `healthy_for`; a bad answer starts the
//! streak over. Polls start 25 ms apart and back off, with jitter, to the step's `interval`,
//! so an app that comes up is seen within a fraction of that interval.

use std::time::{Duration, Instant};

use crate::config::pipeline::HealthWith;
use crate::run::context::{Context, HealthTarget};
use crate::run::error::StepError;

fn target(ctx: &Context, with: &HealthWith) -> Result<HealthTarget, String> {
    let base = match &with.url {
        // A step with its own URL does not need the environment's to resolve.
        Some(_) => ctx.health().ok().flatten().cloned(),
        None => ctx.health()?.cloned(),
    };
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
        healthy_for: with
            .healthy_for
            .map(super::super::config::duration::Duration::get)
            .or(base.as_ref().map(|h| h.healthy_for))
            .unwrap_or(DEFAULT_HEALTHY_FOR),
        successes: with
            .successes
            .or(base.as_ref().map(|h| h.successes))
            .unwrap_or(DEFAULT_SUCCESSES),
    })
    .and_then(|t| {
        if t.successes == 0 {
            return Err("`successes` must be at least 1".into());
        }
        if t.healthy_for >= t.timeout {
            return Err(format!(
                "`healthy_for` ({}) must be shorter than `timeout` ({}): the step could never pass",
                humantime::format_duration(t.healthy_for),
                humantime::format_duration(t.timeout)
            ));
        }
        Ok(t)
    })
}

/// How long the app must stay healthy unless configured: long enough for an app that
/// crashes on its first real requests, or a probe that fails a few seconds after start-up,
/// to show it, short enough not to stretch the release.
pub(crate) const DEFAULT_HEALTHY_FOR: Duration = Duration::from_secs(10);

/// Good answers in a row needed unless configured: one lucky answer is not health.
pub(crate) const DEFAULT_SUCCESSES: u32 = 3;

/// What the step requires, as the plan shows it: "healthy for 10s, at least 3 good answers
/// in a row".
fn requirement(t: &HealthTarget) -> String {
    let answers = plural(t.successes, "good answer");
    if t.healthy_for.is_zero() {
        format!("at least {answers} in a row")
    } else {
        format!(
            "healthy for {}, at least {answers} in a row",
            humantime::format_duration(t.healthy_for)
        )
    }
}

fn plural(n: u32, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

pub(crate) fn plan(ctx: &Context, with: &HealthWith) -> Result<(String, Option<String>), String> {
    let t = target(ctx, with)?;
    Ok((
        format!(
            "poll {} until it answers {}: {} (up to {})",
            ctx.redactor.redact(&t.url),
            t.expect,
            requirement(&t),
            humantime::format_duration(t.timeout)
        ),
        None,
    ))
}

/// Good answers in a row, fed one answer at a time with the instant it came.
struct Streak {
    healthy_for: Duration,
    successes: u32,
    /// When the current streak's first and last good answers came, and how many it has.
    current: Option<(Instant, Instant, u32)>,
    /// The longest streak that ended (or is running), by answers and span.
    best: Option<(u32, Duration)>,
}

/// What one answer did to the streak.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The requirement is met: this many good answers in a row over this span.
    Healthy(u32, Duration),
    /// Good, but not yet for long enough.
    Building,
    /// A bad answer ended a streak of this many good answers over this span.
    Broken(u32, Duration),
    /// Bad, with no streak to end.
    Unhealthy,
}

impl Streak {
    fn new(healthy_for: Duration, successes: u32) -> Self {
        Self {
            healthy_for,
            successes,
            current: None,
            best: None,
        }
    }

    fn answer(&mut self, good: bool, at: Instant) -> Verdict {
        if !good {
            return match self.current.take() {
                Some((first, last, n)) => Verdict::Broken(n, last.saturating_duration_since(first)),
                None => Verdict::Unhealthy,
            };
        }
        let (first, last, n) = self.current.get_or_insert((at, at, 0));
        *last = at;
        *n += 1;
        let (n, span) = (*n, at.saturating_duration_since(*first));
        if self.best.is_none_or(|(b, _)| n > b) {
            self.best = Some((n, span));
        }
        if n >= self.successes && span >= self.healthy_for {
            Verdict::Healthy(n, span)
        } else {
            Verdict::Building
        }
    }
}

/// One probe: `Ok(())` when healthy, else what was wrong.
pub(crate) async fn probe(
    ctx: &Context,
    target: &HealthTarget,
    timeout: Duration,
) -> Result<(), String> {
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
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

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

pub(crate) async fn run(ctx: &Context, id: &str, with: &HealthWith) -> Result<String, StepError> {
    let target = target(ctx, with).map_err(StepError::Failed)?;
    let start = Instant::now();
    let interval = with.interval.map_or(
        DEFAULT_INTERVAL,
        super::super::config::duration::Duration::get,
    );
    let mut backoff = Backoff::new(interval);
    let mut streak = Streak::new(target.healthy_for, target.successes);
    let mut attempts = 0u32;
    let mut last: Option<String> = None;
    loop {
        attempts += 1;
        let left = target.timeout.saturating_sub(start.elapsed());
        let answer = probe(
            ctx,
            &target,
            left.min(Duration::from_secs(10))
                .max(Duration::from_millis(100)),
        )
        .await;
        match streak.answer(answer.is_ok(), Instant::now()) {
            Verdict::Healthy(n, span) => {
                return Ok(format!(
                    "healthy: {} in a row over {:.1}s ({attempts} request(s) in {:.1}s)",
                    plural(n, "good answer"),
                    span.as_secs_f64(),
                    start.elapsed().as_secs_f64()
                ));
            }
            Verdict::Building => {}
            Verdict::Broken(n, span) => {
                let why = answer.as_ref().err().cloned().unwrap_or_default();
                ctx.note(
                    id,
                    format!(
                        "healthy, then not after {} in a row over {:.1}s: {why}; starting over",
                        plural(n, "good answer"),
                        span.as_secs_f64()
                    ),
                );
            }
            Verdict::Unhealthy => {
                if attempts == 1 || attempts % 20 == 0 {
                    let why = answer.as_ref().err().cloned().unwrap_or_default();
                    ctx.note(id, format!("not healthy yet: {why}"));
                }
            }
        }
        if let Err(e) = answer {
            last = Some(e);
        }
        let left = target.timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(StepError::Failed(timed_out(
                &target,
                attempts,
                &streak,
                last.as_deref(),
            )));
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.wait().min(left)) => {}
            () = ctx.cancel.cancelled() => return Err(StepError::Cancelled),
        }
    }
}

/// Why the step gave up: never healthy, or healthy but never for long enough.
fn timed_out(target: &HealthTarget, attempts: u32, streak: &Streak, last: Option<&str>) -> String {
    let within = humantime::format_duration(target.timeout);
    let last = last.unwrap_or("no bad answer");
    match streak.best {
        None => format!("never healthy within {within} ({attempts} request(s)); last: {last}"),
        Some((n, span)) => format!(
            "not healthy for long enough within {within}: needed {}; at best {} in a row over \
             {:.1}s ({attempts} request(s)); last bad answer: {last}",
            requirement(target),
            plural(n, "good answer"),
            span.as_secs_f64()
        ),
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn passes_only_after_enough_good_answers_spanning_healthy_for() {
        let t0 = Instant::now();
        let mut s = Streak::new(ms(1000), 3);
        assert_eq!(s.answer(true, t0), Verdict::Building);
        assert_eq!(s.answer(true, t0 + ms(400)), Verdict::Building);
        // Three answers, but not yet a second apart.
        assert_eq!(s.answer(true, t0 + ms(800)), Verdict::Building);
        assert_eq!(s.answer(true, t0 + ms(1200)), Verdict::Healthy(4, ms(1200)));
    }

    #[test]
    fn a_long_span_still_needs_enough_answers() {
        let t0 = Instant::now();
        let mut s = Streak::new(ms(100), 3);
        assert_eq!(s.answer(true, t0), Verdict::Building);
        assert_eq!(s.answer(true, t0 + ms(5000)), Verdict::Building);
        assert_eq!(s.answer(true, t0 + ms(6000)), Verdict::Healthy(3, ms(6000)));
    }

    #[test]
    fn a_bad_answer_starts_the_streak_over() {
        let t0 = Instant::now();
        let mut s = Streak::new(ms(500), 2);
        assert_eq!(s.answer(false, t0), Verdict::Unhealthy);
        assert_eq!(s.answer(true, t0 + ms(100)), Verdict::Building);
        assert_eq!(s.answer(true, t0 + ms(400)), Verdict::Building);
        assert_eq!(s.answer(false, t0 + ms(500)), Verdict::Broken(2, ms(300)));
        assert_eq!(s.answer(false, t0 + ms(600)), Verdict::Unhealthy);
        // The new streak counts from its own first answer, not from the first ever.
        assert_eq!(s.answer(true, t0 + ms(700)), Verdict::Building);
        assert_eq!(s.answer(true, t0 + ms(1100)), Verdict::Building);
        assert_eq!(s.answer(true, t0 + ms(1200)), Verdict::Healthy(3, ms(500)));
        assert_eq!(s.best, Some((3, ms(500))));
    }

    #[test]
    fn one_good_answer_then_failure_is_never_healthy() {
        let t0 = Instant::now();
        let mut s = Streak::new(DEFAULT_HEALTHY_FOR, DEFAULT_SUCCESSES);
        assert_eq!(s.answer(true, t0), Verdict::Building);
        assert_eq!(s.answer(false, t0 + ms(100)), Verdict::Broken(1, ms(0)));
        for i in 2..200 {
            assert_eq!(s.answer(false, t0 + ms(i * 100)), Verdict::Unhealthy);
        }
        assert_eq!(s.best, Some((1, ms(0))));
    }

    #[test]
    fn zero_healthy_for_and_one_success_is_the_first_good_answer() {
        let mut s = Streak::new(Duration::ZERO, 1);
        assert_eq!(
            s.answer(true, Instant::now()),
            Verdict::Healthy(1, Duration::ZERO)
        );
    }

    #[test]
    fn a_short_interval_is_the_first_wait_too() {
        let mut b = Backoff::new(Duration::from_millis(10));
        assert!(b.wait() <= Duration::from_millis(11));
    }
}
