//! Secrets: values that must never reach any output.
//!
//! A [`Secret`] prints as `***` through `Debug` and `Display`; the only way to read it is
//! [`Secret::expose`], which keeps every use greppable. Every secret value that configuration
//! loading resolves is also registered with the [`Redactor`], which every output sink runs
//! its text through as a second line of defence (a secret that ends up inside an error
//! message from a driver, for example).

use std::fmt;
use std::sync::{Arc, RwLock};

/// A value that is never printed.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plain value, for handing to the adapter that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every registered secret value with `***`.
///
/// Cheap to clone; all clones share one set of values.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    /// Registers a value. Very short values are skipped: masking `1` or `on` everywhere would
    /// make output unreadable without protecting anything.
    pub fn register(&self, value: &str) {
        if value.len() < 4 {
            return;
        }
        let mut values = self.values.write().expect("redactor lock poisoned");
        if !values.iter().any(|v| v == value) {
            values.push(value.to_owned());
            // Longest first, so a secret that contains another is masked whole.
            values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let values = self.values.read().expect("redactor lock poisoned");
        let mut out = text.to_owned();
        for value in values.iter() {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), "***");
            }
        }
        out
    }

    pub fn values(&self) -> Vec<String> {
        self.values.read().expect("redactor lock poisoned").clone()
    }
}

/// Shows a connection URL with only its password masked:
/// `postgres://app:***@db.example:5432/app`.
pub fn mask_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let masked = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_owned(),
    };
    format!("{}://{}@{}", &url[..scheme_end], masked, &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("hunter22");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter22");
    }

    #[test]
    fn redactor_masks_longest_first() {
        let r = Redactor::default();
        r.register("abcd");
        r.register("abcdefgh");
        assert_eq!(r.redact("x abcdefgh y abcd"), "x *** y ***");
    }

    #[test]
    fn url_password_is_masked() {
        assert_eq!(
            mask_url_password("postgres://app:s3cr%40t@db:5432/app?sslmode=require"),
            "postgres://app:***@db:5432/app?sslmode=require"
        );
        assert_eq!(
            mask_url_password("sqlite://.cutover/app.db"),
            "sqlite://.cutover/app.db"
        );
        assert_eq!(mask_url_password("mysql://root@h/db"), "mysql://root@h/db");
    }
}
