//! Whether an edited migration file still says what the applied one said: both parsed,
//! then compared statement by statement in the parser's canonical form, so comments,
//! whitespace and keyword case do not count and everything else does.

use sqlparser::dialect::{Dialect, GenericDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

/// How two texts compare.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Comparison {
    Same,
    /// The first statement that differs (1-based), as the parser prints each side.
    Differs {
        at: usize,
        old: String,
        new: String,
    },
    /// One side cannot be parsed, so the comparison proves nothing.
    Unparsable(String),
}

fn dialect(kind: &str) -> Box<dyn Dialect> {
    match kind {
        "postgres" => Box::new(PostgreSqlDialect {}),
        "mysql" => Box::new(MySqlDialect {}),
        "sqlite" => Box::new(SQLiteDialect {}),
        _ => Box::new(GenericDialect {}),
    }
}

/// Compares the statements of `old` and `new` for a database of `kind`.
pub(crate) fn compare(kind: &str, old: &str, new: &str) -> Comparison {
    let dialect = dialect(kind);
    let parse = |which: &str, sql: &str| {
        Parser::parse_sql(dialect.as_ref(), sql)
            .map(|s| s.iter().map(ToString::to_string).collect::<Vec<_>>())
            .map_err(|e| format!("the {which} text cannot be parsed ({e})"))
    };
    let (old, new) = match (parse("applied", old), parse("edited", new)) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(e), _) | (_, Err(e)) => return Comparison::Unparsable(e),
    };
    let longest = old.len().max(new.len());
    for i in 0..longest {
        let (a, b) = (old.get(i), new.get(i));
        if a != b {
            let shown = |s: Option<&String>| s.cloned().unwrap_or_else(|| "(nothing)".into());
            return Comparison::Differs {
                at: i + 1,
                old: shown(a),
                new: shown(b),
            };
        }
    }
    Comparison::Same
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_whitespace_and_case_do_not_count() {
        assert_eq!(
            compare(
                "postgres",
                "CREATE TABLE t (id int);\nALTER TABLE t ADD COLUMN x text;",
                "-- t holds things\ncreate   table t (\n  id int -- the key\n);\n\n/* x */ alter table t add column x text;\n"
            ),
            Comparison::Same
        );
    }

    #[test]
    fn a_changed_statement_is_named() {
        let c = compare(
            "sqlite",
            "CREATE TABLE t (id INTEGER);\nCREATE INDEX i ON t (id);",
            "CREATE TABLE t (id INTEGER);\nCREATE UNIQUE INDEX i ON t (id);",
        );
        assert!(
            matches!(&c, Comparison::Differs { at: 2, new, .. } if new.contains("UNIQUE")),
            "{c:?}"
        );
        assert!(matches!(
            compare(
                "mysql",
                "CREATE TABLE t (id INT);",
                "CREATE TABLE t (id INT); DROP TABLE u;"
            ),
            Comparison::Differs { at: 2, .. }
        ));
        assert!(matches!(
            compare(
                "postgres",
                "CREATE TABLE t (id int);",
                "CREATE TABLE t (id int"
            ),
            Comparison::Unparsable(_)
        ));
    }
}
