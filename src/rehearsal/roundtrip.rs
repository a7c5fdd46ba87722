//! `migrate test`: checks, in a scratch database, that every down migration undoes its up.
//!
//! One migration at a time, in order: apply it, revert it and compare the schema with the
//! one before it was applied, then apply it again and compare with the schema it gave the
//! first time. Checking each step is what finds a down that forgets an index: reverting
//! everything to zero would not, because dropping the table drops its indexes too. Then,
//! as a deploy and a full rollback would, everything is reverted in one go (down to the
//! newest migration without a down file, else to an empty schema, the migration history
//! table aside), the schema is compared with the one before those migrations, and
//! everything is applied again and compared with the first full schema.
//!
//! Schemas are compared as [`Database::schema`] text, data aside, with one allowance: the
//! order of a table's columns (and table constraints) is ignored. A down that drops a
//! column and adds it back puts it last; no migration can avoid that short of rebuilding
//! the table, and applications name their columns. To compare, every `CREATE TABLE` of
//! the schema is parsed (sqlparser, the database's dialect) and its columns sorted by
//! name; statements the parser does not read are compared as written.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use sqlparser::ast::Statement;
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::adapters::database::{Commit, Database, DatabaseError};
use crate::migrate::{MigrationFile, MigrationSet};

/// Why the round trip failed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Failure {
    /// The migration at fault, when one is.
    pub version: Option<i64>,
    /// Its up and down file names.
    pub up_file: Option<String>,
    pub down_file: Option<String>,
    pub message: String,
    /// Schema lines: `- ` expected but missing, `+ ` present but not expected.
    pub diff: Vec<String>,
}

/// The outcome of a round trip.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Outcome {
    /// Migrations whose up, down, up was checked.
    pub checked: Vec<i64>,
    /// Migrations applied but not checked (no down file).
    pub irreversible: Vec<i64>,
    /// Whether the whole-set cycle (all down, all up) ran.
    pub full_cycle: bool,
    pub failure: Option<Failure>,
}

impl Outcome {
    pub(crate) fn clean(&self) -> bool {
        self.failure.is_none()
    }
}

/// `schema` (from [`Database::schema`] of a `kind` database) with the columns and
/// constraints of every `CREATE TABLE` sorted, one statement after another.
pub(crate) fn canonical(kind: &str, schema: &str) -> String {
    let dialect: Box<dyn Dialect> = match kind {
        "postgres" => Box::new(PostgreSqlDialect {}),
        "mysql" => Box::new(MySqlDialect {}),
        _ => Box::new(SQLiteDialect {}),
    };
    let Ok(tokens) = Tokenizer::new(dialect.as_ref(), schema).tokenize_with_location() else {
        return schema.to_owned();
    };
    let mut out = Vec::new();
    for statement in crate::migrate::lint::split(tokens) {
        let text: String = statement.iter().map(|t| t.token.to_string()).collect();
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let mut parser = Parser::new(dialect.as_ref()).with_tokens_with_locations(statement);
        let parsed = parser
            .parse_statement()
            .ok()
            .filter(|_| parser.peek_token_ref().token == Token::EOF);
        match parsed {
            Some(Statement::CreateTable(mut table)) => {
                table
                    .columns
                    .sort_by(|a, b| a.name.value.cmp(&b.name.value));
                table.constraints.sort_by_cached_key(ToString::to_string);
                out.push(format!("{:#};", Statement::CreateTable(table)));
            }
            _ => out.push(format!("{text};")),
        }
    }
    out.join("\n")
}

/// A file's path relative to `base` when inside it.
fn shown(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The lines only in `expected` (`- `) and only in `actual` (`+ `), each side in order.
pub(crate) fn diff(expected: &str, actual: &str) -> Vec<String> {
    fn counts(text: &str) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for l in text.lines() {
            *m.entry(l).or_insert(0) += 1;
        }
        m
    }
    let mut out = Vec::new();
    let mut left = counts(actual);
    for l in expected.lines() {
        match left.get_mut(l) {
            Some(n) if *n > 0 => *n -= 1,
            _ => out.push(format!("- {l}")),
        }
    }
    let mut left = counts(expected);
    for l in actual.lines() {
        match left.get_mut(l) {
            Some(n) if *n > 0 => *n -= 1,
            _ => out.push(format!("+ {l}")),
        }
    }
    if out.is_empty() && expected != actual {
        // Same lines, another order.
        out.push("(the same statements in another order)".into());
    }
    out
}

struct Runner<'a> {
    db: &'a dyn Database,
    base: &'a Path,
    progress: &'a (dyn Fn(&str) + Sync),
}

impl Runner<'_> {
    async fn schema(&self) -> Result<String, DatabaseError> {
        Ok(canonical(self.db.kind(), &self.db.schema().await?))
    }

    fn failure(&self, m: Option<&MigrationFile>, message: String, diff: Vec<String>) -> Failure {
        Failure {
            version: m.map(|m| m.version),
            up_file: m.map(|m| shown(&m.up_path, self.base)),
            down_file: m.and_then(|m| m.down_path.as_deref().map(|p| shown(p, self.base))),
            message,
            diff,
        }
    }

    async fn up(&self, m: &MigrationFile, when: &str) -> Result<(), Failure> {
        // A scratch database: nothing needs to survive a crash.
        self.db
            .apply(m, Commit::Deferred)
            .await
            .map(|_| ())
            .map_err(|e| {
                self.failure(
                    Some(m),
                    format!("{} failed {when}: {e}", shown(&m.up_path, self.base)),
                    Vec::new(),
                )
            })
    }

    async fn down(&self, m: &MigrationFile, when: &str) -> Result<(), Failure> {
        self.db.revert(m).await.map_err(|e| {
            let file = m.down_path.as_deref().unwrap_or(&m.up_path);
            self.failure(
                Some(m),
                format!("{} failed {when}: {e}", shown(file, self.base)),
                Vec::new(),
            )
        })
    }
}

/// Runs the round trip on `db`, which must be an empty scratch database. `Err` is a
/// problem reading the schema; a migration that fails or a down that does not undo its up
/// is a [`Failure`] in the outcome.
pub(crate) async fn run(
    db: &dyn Database,
    migrations: &MigrationSet,
    base: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Outcome, DatabaseError> {
    let r = Runner { db, base, progress };
    let mut outcome = Outcome::default();
    let mut before = r.schema().await?;
    // Where a full revert stops (after the newest migration without a down file), and the
    // schema there.
    let mut floor = 0;
    let mut floor_schema = before.clone();
    for (i, m) in migrations.migrations.iter().enumerate() {
        let name = shown(&m.up_path, base);
        if let Err(f) = r.up(m, "in the scratch database").await {
            outcome.failure = Some(f);
            return Ok(outcome);
        }
        let after_up = r.schema().await?;
        if !m.reversible() {
            (r.progress)(&format!("{name}: applied (no down file, not checked)"));
            outcome.irreversible.push(m.version);
            floor = i + 1;
            floor_schema.clone_from(&after_up);
            before = after_up;
            continue;
        }
        if let Err(f) = r.down(m, "right after its up").await {
            outcome.failure = Some(f);
            return Ok(outcome);
        }
        let after_down = r.schema().await?;
        if after_down != before {
            let down = m
                .down_path
                .as_deref()
                .map(|p| shown(p, base))
                .unwrap_or_default();
            outcome.failure = Some(r.failure(
                Some(m),
                format!(
                    "{down} does not undo {name}: the schema after the down differs from the schema before the up"
                ),
                diff(&before, &after_down),
            ));
            return Ok(outcome);
        }
        if let Err(f) = r.up(m, "again after its down").await {
            outcome.failure = Some(f);
            return Ok(outcome);
        }
        let again = r.schema().await?;
        if again != after_up {
            outcome.failure = Some(r.failure(
                Some(m),
                format!(
                    "{name} gives another schema when applied again after its down (the down leaves something the up changes)"
                ),
                diff(&after_up, &again),
            ));
            return Ok(outcome);
        }
        (r.progress)(&format!("{name}: up, down, up: ok"));
        outcome.checked.push(m.version);
        before = after_up;
    }
    let full = before;
    let top = &migrations.migrations[floor..];
    if top.is_empty() {
        return Ok(outcome);
    }
    // The whole set, as a full rollback and a new deploy would run it.
    for m in top.iter().rev() {
        if let Err(f) = r.down(m, "while reverting every migration").await {
            outcome.failure = Some(f);
            return Ok(outcome);
        }
    }
    let reverted = r.schema().await?;
    if reverted != floor_schema {
        let what = if floor == 0 {
            "an empty schema".to_owned()
        } else {
            format!("the schema of {}", migrations.migrations[floor - 1].version)
        };
        outcome.failure = Some(r.failure(
            None,
            format!("reverting every migration does not give {what}"),
            diff(&floor_schema, &reverted),
        ));
        return Ok(outcome);
    }
    for m in top {
        if let Err(f) = r.up(m, "while applying every migration again").await {
            outcome.failure = Some(f);
            return Ok(outcome);
        }
    }
    let again = r.schema().await?;
    if again != full {
        outcome.failure = Some(r.failure(
            None,
            "applying every migration again gives another schema than the first time".into(),
            diff(&full, &again),
        ));
        return Ok(outcome);
    }
    (r.progress)(&format!(
        "all {} down to {}, then up again: ok",
        top.len(),
        if floor == 0 {
            "an empty schema".to_owned()
        } else {
            migrations.migrations[floor - 1].version.to_string()
        }
    ));
    outcome.full_cycle = true;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ignores_column_order_but_not_columns_or_indexes() {
        // What SQLite stores after `DROP COLUMN cuisine` then `ADD COLUMN cuisine TEXT`.
        let before = "CREATE TABLE recipes (\n    id INTEGER PRIMARY KEY,\n    cuisine TEXT,\n    title TEXT NOT NULL\n);";
        let after = "CREATE TABLE recipes (\n    id INTEGER PRIMARY KEY,\n    title TEXT NOT NULL\n, cuisine TEXT);";
        assert_ne!(before, after);
        assert_eq!(canonical("sqlite", before), canonical("sqlite", after));
        let other = "CREATE TABLE recipes (id INTEGER PRIMARY KEY, title TEXT);";
        assert_ne!(canonical("sqlite", before), canonical("sqlite", other));
        let indexed = format!("{before}\nCREATE INDEX i ON recipes (title);");
        assert_eq!(
            diff(&canonical("sqlite", before), &canonical("sqlite", &indexed)),
            vec!["+ CREATE INDEX i ON recipes (title);"]
        );
        // pg_dump's column-per-line form, and statements the parser does not read.
        let pg = "CREATE TABLE public.t (\n    b text,\n    a integer\n);\nCREATE SEQUENCE public.s\n    START WITH 1\n    INCREMENT BY 1;";
        let pg2 = "CREATE TABLE public.t (\n    a integer,\n    b text\n);\nCREATE SEQUENCE public.s\n    START WITH 1\n    INCREMENT BY 1;";
        assert_eq!(canonical("postgres", pg), canonical("postgres", pg2));
        assert!(canonical("postgres", pg).contains("INCREMENT BY 1;"));
    }

    #[test]
    fn diff_names_missing_and_extra_lines() {
        let d = diff("a\nb\nc", "a\nc\nd");
        assert_eq!(d, vec!["- b", "+ d"]);
        assert!(diff("a\nb", "a\nb").is_empty());
        assert_eq!(diff("a\na", "a"), vec!["- a"]);
        assert_eq!(
            diff("a\nb", "b\na"),
            vec!["(the same statements in another order)"]
        );
    }
}
