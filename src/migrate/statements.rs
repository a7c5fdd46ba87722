//! Splitting a PostgreSQL migration into its statements, for migrations that run outside
//! a transaction: several statements in one simple-protocol message form one implicit
//! transaction there, which `CREATE INDEX CONCURRENTLY` refuses.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

/// The statements of `sql`, cut at top-level semicolons (not those in strings, quoted
/// names, comments or dollar-quoted bodies), each with its semicolon, blank ones left
/// out. Text the tokenizer cannot read is one statement: the server says what is wrong.
pub(crate) fn split(sql: &str) -> Vec<&str> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return vec![sql];
    };
    let starts = line_starts(sql);
    let mut out = Vec::new();
    let mut from = 0;
    for t in tokens.iter().filter(|t| t.token == Token::SemiColon) {
        let Some(at) = offset(sql, &starts, t.span.start) else {
            return vec![sql];
        };
        out.push(&sql[from..=at]);
        from = at + 1;
    }
    out.push(&sql[from..]);
    out.into_iter()
        .filter(|s| !is_blank(s))
        .map(str::trim)
        .collect()
}

/// The byte offset of each line's start.
fn line_starts(sql: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// The byte offset of a tokenizer location (1-based line and column, in characters).
fn offset(sql: &str, starts: &[usize], at: Location) -> Option<usize> {
    let line_start = *starts.get(usize::try_from(at.line).ok()?.checked_sub(1)?)?;
    let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
    sql[line_start..]
        .char_indices()
        .nth(column)
        .map(|(i, _)| line_start + i)
}

/// Whether a piece holds nothing to run: whitespace, comments and semicolons.
fn is_blank(piece: &str) -> bool {
    Tokenizer::new(&PostgreSqlDialect {}, piece)
        .tokenize()
        .is_ok_and(|tokens| {
            tokens
                .iter()
                .all(|t| matches!(t, Token::Whitespace(_) | Token::SemiColon))
        })
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn cuts_at_top_level_semicolons_only() {
        let sql = "-- cutover:no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x);\n\
                   INSERT INTO t VALUES ('a;b', $$c;d$$); /* e;f */\n\
                   CREATE FUNCTION g() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n\
                   -- the end;\n";
        assert_eq!(
            split(sql),
            [
                "-- cutover:no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x);",
                "INSERT INTO t VALUES ('a;b', $$c;d$$);",
                "/* e;f */\nCREATE FUNCTION g() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;",
            ]
        );
    }

    #[test]
    fn a_last_statement_without_semicolon_and_non_ascii_text() {
        assert_eq!(
            split("UPDATE t SET s = 'é€';\nVACUUM t"),
            ["UPDATE t SET s = 'é€';", "VACUUM t"]
        );
    }
}
