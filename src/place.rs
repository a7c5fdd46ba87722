//! Messages about a place in a source file (a line of `deploy.yaml`, of a migration). The
//! place travels beside the text, from where it is known (a config value's span, a lint
//! finding) to the outputs that link to it (CI annotations): it is never written into the
//! text and read back out.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A line (and column, when known) in a file, named as people read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    /// From 1.
    pub line: u64,
    pub column: Option<u64>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if let Some(column) = self.column {
            write!(f, ":{column}")?;
        }
        Ok(())
    }
}

/// A message for people, with the place it is about when it is about one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    place: Option<Place>,
    text: String,
    /// The place is written in front of the text (`file:line: text`); otherwise the text
    /// names it in its own words, or there is none.
    leads: bool,
}

impl Message {
    /// `file:line[:column]: text`.
    pub fn at(place: Place, text: impl Into<String>) -> Self {
        Self {
            place: Some(place),
            text: text.into(),
            leads: true,
        }
    }

    /// A text that names `place` itself, shown as it is.
    pub fn about(place: Place, text: impl Into<String>) -> Self {
        Self {
            place: Some(place),
            text: text.into(),
            leads: false,
        }
    }

    /// A text about no place in particular.
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            place: None,
            text: text.into(),
            leads: false,
        }
    }

    pub fn place(&self) -> Option<&Place> {
        self.place.as_ref()
    }

    /// The text without a leading place: what a link to the place says beside it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// With its texts passed through `redact` (the redactor's, which masks secrets).
    #[must_use]
    pub fn redacted(&self, redact: impl Fn(&str) -> String) -> Self {
        Self {
            place: self.place.as_ref().map(|p| Place {
                file: redact(&p.file),
                ..p.clone()
            }),
            text: redact(&self.text),
            leads: self.leads,
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.place {
            Some(place) if self.leads => write!(f, "{place}: {}", self.text),
            _ => f.write_str(&self.text),
        }
    }
}

/// As the line people read: a saved plan's warnings stay plain strings.
impl Serialize for Message {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A saved plan's warnings come back as text; their places are not kept in the file.
impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::plain)
    }
}

#[cfg(test)]
mod tests {
    use super::{Message, Place};

    fn place(column: Option<u64>) -> Place {
        Place {
            file: "deploy.yaml".into(),
            line: 17,
            column,
        }
    }

    #[test]
    fn a_leading_place_is_written_in_front_and_kept_apart() {
        let m = Message::at(place(Some(5)), "environment variable `X` is not set");
        assert_eq!(
            m.to_string(),
            "deploy.yaml:17:5: environment variable `X` is not set"
        );
        assert_eq!(m.text(), "environment variable `X` is not set");
        assert_eq!(m.place(), Some(&place(Some(5))));
        assert_eq!(
            Message::at(place(None), "x").to_string(),
            "deploy.yaml:17: x"
        );
    }

    #[test]
    fn a_text_that_names_its_place_is_shown_as_written() {
        let m = Message::about(place(None), "step `a` (deploy.yaml:17): bad");
        assert_eq!(m.to_string(), "step `a` (deploy.yaml:17): bad");
        assert_eq!(m.text(), m.to_string());
        assert!(m.place().is_some());
        assert!(Message::plain("x").place().is_none());
    }

    #[test]
    fn it_is_stored_as_the_line_people_read() {
        let m = Message::at(place(None), "slow");
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#""deploy.yaml:17: slow""#);
        let back: Message = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_string(), m.to_string());
    }
}
