//! The `compression:` setting of a backup store, as the config and the manifest write it.

use serde::{Deserialize, Deserializer};

/// `compression:` of a backup store: `zstd` (level 1, the default), `zstd:<1-19>` or
/// `none`. Level 1 because the dump competes for the same cores as the compressor: on
/// dumps of typical table data higher levels shrink the file by a few percent and take
/// half as long again (see BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd { level: i32 },
}

impl Default for Compression {
    fn default() -> Self {
        Self::Zstd { level: 1 }
    }
}

impl std::fmt::Display for Compression {
    /// As written in the manifest: `none` or `zstd:<level>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("invalid compression `{text}`: expected `zstd`, `zstd:<level 1-19>` or `none`")
        };
        match text {
            "none" => Ok(Self::None),
            "zstd" => Ok(Self::default()),
            _ => {
                let level: i32 = text
                    .strip_prefix("zstd:")
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                if (1..=19).contains(&level) {
                    Ok(Self::Zstd { level })
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
