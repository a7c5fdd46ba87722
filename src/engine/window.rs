//! Maintenance windows: `02:00-04:00 UTC`. A window may wrap midnight (`22:00-02:00 UTC`).
//!
//! A window holds back only what moves production forward (a deploy, `migrate up`, a
//! rollback to a newer version). The way back (a rollback, `recover`, `migrate down`, a
//! restore) and what only reads (a backup) are never locked out: an on-call engineer must
//! be able to undo a bad release at any hour. A run that goes on outside its window says so
//! in its journal, with the reason given when a forward run was forced.

use chrono::{NaiveTime, Timelike, Utc};

use crate::config::window::Window;
pub(crate) use crate::run::window::OutsideWindow;

/// Which way a command moves production, as far as the window is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Applies something new: held back outside the window unless forced.
    Forward,
    /// Takes production back, or only reads it: runs at any hour.
    Back,
}

impl Direction {
    /// A run to schema version `target` (`None`: the empty schema) from `current`: a
    /// version newer than the current one applies migrations, so it moves forward; an
    /// older one, or the current one, goes back (or nowhere).
    pub(crate) fn toward(target: Option<i64>, current: Option<i64>) -> Self {
        match target {
            Some(v) if current.is_none_or(|c| v > c) => Self::Forward,
            _ => Self::Back,
        }
    }
}

/// Whether a command going `direction` may start at `now` under `window` (the config's
/// text): `Ok(None)` inside it (or with no window), `Ok(Some(..))` outside it for the way
/// back or a forced forward run, and the refusal, saying how to force it, otherwise.
/// `what` names the command in the refusal (`deploy`, "`rollback --to 5` (newer than 3)").
pub(crate) fn admit(
    window: Option<&str>,
    environment: &str,
    what: &str,
    direction: Direction,
    reason: Option<&str>,
    now: NaiveTime,
) -> Result<Option<OutsideWindow>, String> {
    let Some(text) = window else {
        return Ok(None);
    };
    if Window::parse(text)?.contains(now) {
        return Ok(None);
    }
    match (direction, reason) {
        (Direction::Back, _) => Ok(Some(OutsideWindow {
            window: text.to_owned(),
            forced: false,
            reason: reason.map(str::to_owned),
            user: super::lock::username(),
        })),
        (Direction::Forward, Some(reason)) => Ok(Some(OutsideWindow {
            window: text.to_owned(),
            forced: true,
            reason: Some(reason.to_owned()),
            user: super::lock::username(),
        })),
        (Direction::Forward, None) => Err(format!(
            "environment `{environment}` may only be moved forward during its window {text}; it is now {} UTC and {what} moves it forward\nhint: to run it now anyway, add `--outside-window --reason \"…\"` (the reason goes into the journal and the report); going back (`cutover rollback`, `recover`, `migrate down`, `backup restore`) runs at any hour",
            now.format("%H:%M")
        )),
    }
}

/// The time now in UTC, to the minute, as windows are written.
pub(crate) fn now() -> NaiveTime {
    let now = Utc::now().time();
    NaiveTime::from_hms_opt(now.hour(), now.minute(), 0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn only_forward_runs_are_held_outside_the_window() {
        let w = Some("02:00-04:00 UTC");
        let outside = t(12, 0);
        for direction in [Direction::Forward, Direction::Back] {
            assert_eq!(
                admit(w, "prod", "deploy", direction, None, t(3, 0)),
                Ok(None)
            );
            assert_eq!(
                admit(None, "prod", "deploy", direction, None, outside),
                Ok(None)
            );
        }
        let back = admit(w, "prod", "rollback", Direction::Back, None, outside).unwrap();
        assert_eq!(back.map(|o| (o.forced, o.reason)), Some((false, None)));
        let refused = admit(w, "prod", "`deploy`", Direction::Forward, None, outside).unwrap_err();
        assert!(refused.contains("--outside-window --reason"), "{refused}");
        let forced = admit(
            w,
            "prod",
            "deploy",
            Direction::Forward,
            Some("INC-42"),
            outside,
        )
        .unwrap()
        .unwrap();
        assert!(forced.forced && forced.reason.as_deref() == Some("INC-42"));
    }

    #[test]
    fn a_newer_target_moves_forward() {
        assert_eq!(Direction::toward(Some(5), Some(3)), Direction::Forward);
        assert_eq!(Direction::toward(Some(5), None), Direction::Forward);
        assert_eq!(Direction::toward(Some(3), Some(3)), Direction::Back);
        assert_eq!(Direction::toward(Some(2), Some(3)), Direction::Back);
        assert_eq!(Direction::toward(None, Some(3)), Direction::Back);
    }
}
