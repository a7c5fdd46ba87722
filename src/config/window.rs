//! The `window:` setting of an environment: `02:00-04:00 UTC`, possibly wrapping midnight
//! (`22:00-02:00 UTC`). What a window admits is the engine's rule (`engine::window`).

use chrono::NaiveTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: NaiveTime,
    end: NaiveTime,
}

impl Window {
    pub fn parse(text: &str) -> Result<Self, String> {
        let err = || {
            format!("invalid window `{text}`: expected `HH:MM-HH:MM UTC`, e.g. `02:00-04:00 UTC`")
        };
        let body = text.trim();
        let body = body.strip_suffix("UTC").map_or(body, str::trim_end);
        let (start, end) = body.split_once('-').ok_or_else(err)?;
        let time = |s: &str| NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| err());
        let window = Self {
            start: time(start)?,
            end: time(end)?,
        };
        if window.start == window.end {
            return Err(format!(
                "invalid window `{text}`: start and end are the same"
            ));
        }
        Ok(window)
    }

    pub fn contains(&self, at: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= at && at < self.end
        } else {
            at >= self.start || at < self.end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn windows_contain_their_times() {
        let w = Window::parse("02:00-04:00 UTC").unwrap();
        assert!(w.contains(t(2, 0)) && w.contains(t(3, 59)));
        assert!(!w.contains(t(4, 0)) && !w.contains(t(1, 59)));
        let wrap = Window::parse("22:00-02:00").unwrap();
        assert!(wrap.contains(t(23, 0)) && wrap.contains(t(1, 0)) && !wrap.contains(t(12, 0)));
        assert!(Window::parse("2am to 4am").is_err());
    }
}
