//! `rehearse:` — whether the database part of a release is rehearsed on a copy of the
//! data before the window opens, per environment (`off`, `on`, or `{ max_age: 24h }`) and
//! per step (`rehearse: off`).

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::duration::Duration;

/// How old the newest backup may be to be the copy's source; an older one is not used and
/// the live database is copied instead.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// `on`/`off` (or `true`/`false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch(pub bool);

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SwitchVisitor)
    }
}

struct SwitchVisitor;

impl Visitor<'_> for SwitchVisitor {
    type Value = Switch;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`on` or `off`")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Switch, E> {
        Ok(Switch(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Switch, E> {
        match v {
            "on" | "true" | "yes" => Ok(Switch(true)),
            "off" | "false" | "no" => Ok(Switch(false)),
            other => Err(E::custom(format!(
                "`{other}` is not a switch: write `on` or `off`"
            ))),
        }
    }
}

/// An environment's `rehearse:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RehearseConfig {
    pub enabled: bool,
    /// The newest backup is the copy's source when it is at most this old and at the
    /// database's current version; otherwise the live database is copied.
    pub max_age: Duration,
}

impl Default for RehearseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    enabled: Option<Switch>,
    #[serde(default)]
    max_age: Option<Duration>,
}

impl<'de> Deserialize<'de> for RehearseConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ConfigVisitor)
    }
}

struct ConfigVisitor;

impl<'de> Visitor<'de> for ConfigVisitor {
    type Value = RehearseConfig;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`on`, `off`, or `{ max_age: 24h }`")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RehearseConfig, E> {
        Ok(RehearseConfig {
            enabled: v,
            ..RehearseConfig::default()
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RehearseConfig, E> {
        let Switch(enabled) = SwitchVisitor.visit_str(v)?;
        Ok(RehearseConfig {
            enabled,
            ..RehearseConfig::default()
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RehearseConfig, A::Error> {
        let s = Settings::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(RehearseConfig {
            enabled: s.enabled.is_none_or(|Switch(on)| on),
            max_age: s.max_age.unwrap_or(DEFAULT_MAX_AGE),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<RehearseConfig, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_switches_and_settings() {
        assert!(!parse("off").unwrap().enabled);
        assert!(parse("on").unwrap().enabled);
        assert!(!parse("false").unwrap().enabled);
        let s = parse("{ max_age: 2h }").unwrap();
        assert!(s.enabled);
        assert_eq!(s.max_age, Duration::from_secs(7200));
        assert!(parse("maybe").unwrap_err().contains("`on` or `off`"));
        assert!(parse("{ max_ages: 2h }").is_err());
    }
}
