//! Which tables a piece of SQL touches: the scope of a run's content fingerprint.
//!
//! Every relation a statement names counts (reads too: over-inclusive is only slower),
//! except in statements that cannot change a row (`CREATE INDEX`, `DROP INDEX`: the schema
//! digest covers the index itself, and digesting a big table's rows for an index costs
//! seconds). SQL the parser cannot read gives no answer, and the caller digests every
//! table.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{ObjectType, Statement, visit_relations};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

/// The tables the scripts name, lower-case and unqualified; `None` when one of them cannot
/// be parsed in the database's dialect (`kind`: `postgres`, `mysql`, `sqlite`).
pub(crate) fn touched<'a>(
    kind: &str,
    scripts: impl IntoIterator<Item = &'a str>,
) -> Option<Vec<String>> {
    let dialect: Box<dyn Dialect> = match kind {
        "postgres" => Box::new(PostgreSqlDialect {}),
        "mysql" => Box::new(MySqlDialect {}),
        "sqlite" => Box::new(SQLiteDialect {}),
        _ => return None,
    };
    let mut tables = BTreeSet::new();
    for script in scripts {
        let statements = Parser::parse_sql(dialect.as_ref(), script).ok()?;
        let changing: Vec<Statement> = statements
            .into_iter()
            .filter(|s| !changes_no_rows(s))
            .collect();
        let _ = visit_relations(&changing, |name| {
            if let Some(last) = name.0.last() {
                let text = last.to_string();
                let bare = text.trim_matches(|c| c == '"' || c == '`' || c == '[' || c == ']');
                tables.insert(bare.to_ascii_lowercase());
            }
            ControlFlow::<()>::Continue(())
        });
    }
    Some(tables.into_iter().collect())
}

/// Statements that change no row of the tables they name.
fn changes_no_rows(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::CreateIndex(_)
            | Statement::Drop {
                object_type: ObjectType::Index,
                ..
            }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_tables_statements_write_and_read() {
        let t = touched(
            "postgres",
            [
                "CREATE TABLE tags (id int); INSERT INTO tags SELECT id FROM public.\"Recipes\";",
                "UPDATE users SET x = 1; DELETE FROM audit; ALTER TABLE orders ADD COLUMN y int;",
            ],
        );
        assert_eq!(t.unwrap(), ["audit", "orders", "recipes", "tags", "users"]);
    }

    #[test]
    fn index_statements_change_no_rows() {
        for kind in ["postgres", "mysql", "sqlite"] {
            let t = touched(
                kind,
                [
                    "CREATE INDEX big_payload ON big (payload); UPDATE small SET x = 1;",
                    "CREATE UNIQUE INDEX u ON other (a); DROP INDEX big_payload;",
                ],
            );
            assert_eq!(t.unwrap(), ["small"], "{kind}");
        }
    }

    #[test]
    fn unparsable_sql_gives_no_answer() {
        assert_eq!(touched("sqlite", ["CREATE TABLE (("]), None);
        assert_eq!(touched("azure-sql", ["SELECT 1"]), None);
    }
}
