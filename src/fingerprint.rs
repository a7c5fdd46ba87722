//! A database's fingerprint: what the run compares to say "as before" and mean it.
//!
//! Taken before a run's first side effect and again after a rollback. The schema part is
//! one digest per object (a table's columns, an index, a constraint, a view...), read from
//! the catalog; the content part is, per table, the row count and an order-independent,
//! duplicate-sensitive digest of the rows (the sum of a 64-bit hash of each row), computed
//! inside the database where it can be. Tables above the size budget are named as not
//! checked rather than claimed. This module is data only: the adapters compute it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which tables get a content digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every table (the run may change any: a `command` step, an external migrator, SQL
    /// that could not be parsed).
    All,
    /// These tables (lower-case, unqualified names), as parsed from the SQL the run runs.
    Tables(Vec<String>),
}

impl Scope {
    /// Whether the table `name` (as the catalog spells it) is in scope.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Tables(t) => {
                let name = name.to_ascii_lowercase();
                let bare = name.rsplit('.').next().unwrap_or(&name);
                t.iter().any(|x| x == &name || x == bare)
            }
        }
    }
}

/// A table's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDigest {
    pub rows: i64,
    /// The sum of the rows' 64-bit hashes, as decimal text (it can exceed 64 bits).
    pub digest: String,
}

/// What was seen of a database at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// A digest per schema object, keyed `table users`, `index users_email_key`, ...
    pub schema: BTreeMap<String, String>,
    /// Content digests of the tables in scope, by table.
    pub tables: BTreeMap<String, TableDigest>,
    /// Tables in scope whose content was not digested, and why (over the size budget).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<String, String>,
}

/// One way a database differs from its earlier fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// A schema object exists now that did not before.
    Added { object: String },
    /// A schema object that existed before is gone.
    Removed { object: String },
    /// A schema object's definition changed.
    Changed { object: String },
    /// A table's rows differ.
    Rows {
        table: String,
        before: i64,
        after: i64,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Added { object } => write!(f, "{object}: exists now, did not before"),
            Self::Removed { object } => write!(f, "{object}: existed before, is gone"),
            Self::Changed { object } => write!(f, "{object}: definition changed"),
            Self::Rows {
                table,
                before,
                after,
            } if before == after => write!(
                f,
                "table {table}: content changed ({before} rows before and after, not the same rows)"
            ),
            Self::Rows {
                table,
                before,
                after,
            } => write!(f, "table {table}: {before} rows before, {after} now"),
        }
    }
}

/// The result of comparing a database with its fingerprint from before the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// How many schema objects were compared.
    pub objects: usize,
    /// The tables whose content was compared.
    pub tables: Vec<String>,
    /// Tables in scope that were too big to digest: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchecked: Vec<String>,
    pub differences: Vec<Difference>,
}

impl Comparison {
    pub fn same(&self) -> bool {
        self.differences.is_empty()
    }

    /// What the comparison covered, for "identical to before the run" and its opposite:
    /// `schema (12 objects) and 3 tables (tags, users, _sqlx_migrations)`.
    pub fn covered(&self) -> String {
        let mut text = format!("schema ({} objects)", self.objects);
        if !self.tables.is_empty() {
            let shown: Vec<&str> = self.tables.iter().take(8).map(String::as_str).collect();
            let more = self.tables.len().saturating_sub(shown.len());
            text.push_str(&format!(
                " and the rows of {} table(s) ({}{})",
                self.tables.len(),
                shown.join(", "),
                if more > 0 {
                    format!(", {more} more")
                } else {
                    String::new()
                }
            ));
        }
        if !self.unchecked.is_empty() {
            text.push_str(&format!(
                "; not checked (over the size budget): {}",
                self.unchecked.join(", ")
            ));
        }
        text
    }
}

impl Fingerprint {
    /// Compares `now` with this earlier fingerprint. Only tables digested both times are
    /// compared by content; a table digested before but skipped now is unchecked.
    pub fn compare(&self, now: &Self) -> Comparison {
        let mut differences = Vec::new();
        for (object, digest) in &self.schema {
            match now.schema.get(object) {
                None => differences.push(Difference::Removed {
                    object: object.clone(),
                }),
                Some(d) if d != digest => differences.push(Difference::Changed {
                    object: object.clone(),
                }),
                Some(_) => {}
            }
        }
        for object in now.schema.keys() {
            if !self.schema.contains_key(object) {
                differences.push(Difference::Added {
                    object: object.clone(),
                });
            }
        }
        let mut tables = Vec::new();
        let mut unchecked: Vec<String> = self.skipped.keys().cloned().collect();
        for (table, before) in &self.tables {
            match now.tables.get(table) {
                Some(after) => {
                    tables.push(table.clone());
                    if after != before {
                        differences.push(Difference::Rows {
                            table: table.clone(),
                            before: before.rows,
                            after: after.rows,
                        });
                    }
                }
                // Gone with its table: the schema difference says so.
                None if !now.skipped.contains_key(table) => {}
                None => unchecked.push(table.clone()),
            }
        }
        // A table in scope that did not exist before (the history table of a first
        // deploy) must be empty now.
        for (table, after) in &now.tables {
            if !self.tables.contains_key(table) && !self.skipped.contains_key(table) {
                tables.push(table.clone());
                if after.rows > 0 {
                    differences.push(Difference::Rows {
                        table: table.clone(),
                        before: 0,
                        after: after.rows,
                    });
                }
            }
        }
        unchecked.sort();
        unchecked.dedup();
        Comparison {
            objects: self.schema.len().max(now.schema.len()),
            tables,
            unchecked,
            differences,
        }
    }
}

/// Adds one row's hash into a running content digest: order-independent, and two equal
/// rows count twice (a plain XOR would cancel them out).
pub(crate) fn accumulate(sum: &mut u128, row_hash: u64) {
    *sum = sum.wrapping_add(u128::from(row_hash));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(schema: &[(&str, &str)], tables: &[(&str, i64, &str)]) -> Fingerprint {
        Fingerprint {
            schema: schema
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            tables: tables
                .iter()
                .map(|(t, rows, d)| {
                    (
                        (*t).to_owned(),
                        TableDigest {
                            rows: *rows,
                            digest: (*d).to_owned(),
                        },
                    )
                })
                .collect(),
            skipped: BTreeMap::new(),
        }
    }

    #[test]
    fn equal_fingerprints_compare_same_and_say_what_was_covered() {
        let a = fp(&[("table users", "1")], &[("users", 2, "99")]);
        let c = a.compare(&a.clone());
        assert!(c.same());
        assert_eq!(
            c.covered(),
            "schema (1 objects) and the rows of 1 table(s) (users)"
        );
    }

    #[test]
    fn names_added_removed_changed_objects_and_row_changes() {
        let before = fp(
            &[("table users", "1"), ("index users_email", "2")],
            &[("users", 2, "99"), ("tags", 5, "7")],
        );
        let after = fp(
            &[("table users", "3"), ("table tags", "4")],
            &[("users", 2, "98"), ("tags", 4, "6")],
        );
        let c = before.compare(&after);
        let text: Vec<String> = c.differences.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "index users_email: existed before, is gone",
                "table users: definition changed",
                "table tags: exists now, did not before",
                "table tags: 5 rows before, 4 now",
                "table users: content changed (2 rows before and after, not the same rows)",
            ]
        );
    }

    #[test]
    fn a_table_that_did_not_exist_before_must_be_empty_now() {
        let before = fp(&[], &[]);
        assert!(
            before
                .compare(&fp(&[], &[("_sqlx_migrations", 0, "0")]))
                .same()
        );
        let c = before.compare(&fp(&[], &[("_sqlx_migrations", 2, "7")]));
        assert_eq!(
            c.differences[0].to_string(),
            "table _sqlx_migrations: 0 rows before, 2 now"
        );
    }

    #[test]
    fn duplicate_rows_change_the_sum() {
        let mut one = 0u128;
        accumulate(&mut one, 42);
        let mut two = one;
        accumulate(&mut two, 42);
        assert_ne!(one, two);
    }

    #[test]
    fn scope_matches_bare_and_qualified_names() {
        let s = Scope::Tables(vec!["users".into()]);
        assert!(s.includes("public.users"));
        assert!(s.includes("Users"));
        assert!(!s.includes("tags"));
        assert!(Scope::All.includes("anything"));
    }
}
