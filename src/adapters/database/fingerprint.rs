//! Computing a [`Fingerprint`] per dialect.
//!
//! The schema comes from the catalog, one row per object, hashed here. Row content is
//! hashed inside the server where it has a hash function (PostgreSQL `hashtextextended`,
//! MySQL/MariaDB `MD5`), summed with the row count so no rows travel to cutover; SQLite
//! has none, so its rows are streamed once (as SQL literals, `quote()`) through SHA-256
//! here. The history table `_sqlx_migrations` is compared by content, not as schema: a
//! first deploy creates it, and an empty history is the same release state as none.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use sqlx::{MySqlPool, PgPool, SqlitePool};

use super::{DatabaseError, sql_err};
use crate::fingerprint::{Fingerprint, Scope, TableDigest, accumulate};

const HISTORY: &str = "_sqlx_migrations";

fn digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

fn row_hash(text: &[u8]) -> u64 {
    let d = Sha256::digest(text);
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Collects `(object, definition part)` rows into one digest per object, parts in the
/// order given.
fn schema_of(rows: Vec<(String, String)>) -> BTreeMap<String, String> {
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    for (object, part) in rows {
        let entry = joined.entry(object).or_default();
        entry.push_str(&part);
        entry.push('\n');
    }
    joined
        .into_iter()
        .map(|(object, text)| (object, digest(&text)))
        .collect()
}

fn too_big(bytes: i64, budget: u64) -> Option<String> {
    (u64::try_from(bytes).unwrap_or(0) > budget).then(|| {
        format!(
            "{} MiB, over the {} MiB budget",
            bytes / (1 << 20),
            budget / (1 << 20)
        )
    })
}

fn quote_ident(name: &str, quote: char) -> String {
    let doubled: String = [quote, quote].iter().collect();
    format!("{quote}{}{quote}", name.replace(quote, &doubled))
}

/// SQLite. The caller makes sure the file exists.
pub(crate) async fn sqlite(
    pool: &SqlitePool,
    scope: &Scope,
    budget: u64,
) -> Result<Fingerprint, DatabaseError> {
    let objects: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT type, name, sql FROM sqlite_master
         WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name",
    )
    .fetch_all(pool)
    .await
    .map_err(sql_err("cannot read the schema"))?;
    let mut parts = Vec::new();
    let mut tables = Vec::new();
    for (kind, name, sql) in &objects {
        if kind == "table" {
            {
                tables.push(name.clone());
                if name == HISTORY {
                    continue;
                }
                // Columns, keys and implicit (UNIQUE, PRIMARY KEY) indexes from pragmas:
                // `ALTER TABLE ... DROP COLUMN` rewrites the CREATE text, so the text
                // itself would differ after an exact undo.
                let object = format!("table {name}");
                let columns: Vec<(String, String, i64, Option<String>, i64)> = sqlx::query_as(
                    "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid",
                )
                .bind(name)
                .fetch_all(pool)
                .await
                .map_err(sql_err(format!("cannot read the columns of {name}")))?;
                for (col, ty, notnull, default, pk) in columns {
                    parts.push((
                        object.clone(),
                        format!("column {col} {ty} notnull={notnull} default={default:?} pk={pk}"),
                    ));
                }
                let keys: Vec<(String, String, Option<String>, String, String)> = sqlx::query_as(
                    "SELECT \"table\", \"from\", \"to\", on_update, on_delete FROM pragma_foreign_key_list(?) ORDER BY id, seq",
                )
                .bind(name)
                .fetch_all(pool)
                .await
                .map_err(sql_err(format!("cannot read the foreign keys of {name}")))?;
                for k in keys {
                    parts.push((object.clone(), format!("foreign key {k:?}")));
                }
                let implicit: Vec<(String, i64, String)> = sqlx::query_as(
                    "SELECT l.origin, l.\"unique\", group_concat(i.name, ',')
                     FROM pragma_index_list(?1) l, pragma_index_info(l.name) i
                     WHERE l.origin <> 'c' GROUP BY l.name ORDER BY 3",
                )
                .bind(name)
                .fetch_all(pool)
                .await
                .map_err(sql_err(format!("cannot read the keys of {name}")))?;
                for k in implicit {
                    parts.push((object.clone(), format!("key {k:?}")));
                }
            }
        } else {
            let text = sql.as_deref().unwrap_or_default();
            parts.push((
                format!("{kind} {name}"),
                text.split_whitespace().collect::<Vec<_>>().join(" "),
            ));
        }
    }
    let mut fingerprint = Fingerprint {
        schema: schema_of(parts),
        ..Fingerprint::default()
    };
    for table in tables.into_iter().filter(|t| scope.includes(t)) {
        // dbstat is optional in SQLite builds; without it every table is digested.
        let bytes: Option<i64> =
            sqlx::query_scalar("SELECT sum(pgsize) FROM dbstat WHERE name = ?")
                .bind(&table)
                .fetch_one(pool)
                .await
                .ok()
                .flatten();
        if let Some(why) = bytes.and_then(|b| too_big(b, budget)) {
            fingerprint.skipped.insert(table, why);
            continue;
        }
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                .bind(&table)
                .fetch_all(pool)
                .await
                .map_err(sql_err(format!("cannot read the columns of {table}")))?;
        let row = columns
            .iter()
            .map(|c| format!("quote({})", quote_ident(c, '"')))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        let sql = format!(
            "SELECT CAST({} AS BLOB) FROM {}",
            if row.is_empty() { "''".into() } else { row },
            quote_ident(&table, '"')
        );
        let mut rows = sqlx::query_scalar::<_, Vec<u8>>(&sql).fetch(pool);
        let (mut count, mut sum) = (0i64, 0u128);
        while let Some(text) = rows
            .try_next()
            .await
            .map_err(sql_err(format!("cannot read the rows of {table}")))?
        {
            count += 1;
            accumulate(&mut sum, row_hash(&text));
        }
        fingerprint.tables.insert(
            table,
            TableDigest {
                rows: count,
                digest: sum.to_string(),
            },
        );
    }
    Ok(fingerprint)
}

const PG_USER_SCHEMA: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// PostgreSQL: the catalog in one query, contents with `hashtextextended` in the server.
pub(crate) async fn postgres(
    pool: &PgPool,
    scope: &Scope,
    budget: u64,
) -> Result<Fingerprint, DatabaseError> {
    let filter = PG_USER_SCHEMA;
    let schema_sql = format!(
        "SELECT 'table ' || n.nspname || '.' || c.relname,
                string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                    || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                    || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''),
                  ', ' ORDER BY a.attnum)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
          WHERE c.relkind IN ('r', 'p', 'f') AND {filter} AND c.relname <> '{HISTORY}'
          GROUP BY n.nspname, c.relname
         UNION ALL
         SELECT 'constraint ' || n.nspname || '.' || c.relname || '.' || co.conname,
                pg_get_constraintdef(co.oid)
           FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE {filter} AND c.relname <> '{HISTORY}'
         UNION ALL
         SELECT 'index ' || n.nspname || '.' || i.relname, pg_get_indexdef(i.oid)
           FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
           JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = i.relnamespace
          WHERE {filter} AND c.relname <> '{HISTORY}'
         UNION ALL
         SELECT CASE c.relkind WHEN 'v' THEN 'view ' ELSE 'materialized view ' END
                    || n.nspname || '.' || c.relname, pg_get_viewdef(c.oid)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('v', 'm') AND {filter}
         UNION ALL
         SELECT 'sequence ' || s.schemaname || '.' || s.sequencename,
                concat_ws(' ', s.data_type, s.start_value, s.min_value, s.max_value,
                          s.increment_by, s.cycle)
           FROM pg_sequences s
          WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema')
         UNION ALL
         SELECT 'trigger ' || n.nspname || '.' || c.relname || '.' || t.tgname,
                pg_get_triggerdef(t.oid)
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE NOT t.tgisinternal AND {filter}
         UNION ALL
         SELECT 'function ' || n.nspname || '.' || p.proname || '('
                    || pg_get_function_identity_arguments(p.oid) || ')',
                pg_get_functiondef(p.oid)
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE p.prokind IN ('f', 'p') AND {filter}
            AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = p.oid AND e.deptype = 'e')
         UNION ALL
         SELECT 'type ' || n.nspname || '.' || t.typname,
                string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
           FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
           JOIN pg_namespace n ON n.oid = t.typnamespace
          GROUP BY n.nspname, t.typname
         UNION ALL
         SELECT 'extension ' || extname, extversion FROM pg_extension"
    );
    // The catalog and the rows are read on two connections at once: both are mostly the
    // server's work, and it has more than one core.
    let schema = async {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(&schema_sql)
            .fetch_all(pool)
            .await
            .map_err(sql_err("cannot read the schema from the catalog"))?;
        Ok(schema_of(
            rows.into_iter()
                .map(|(o, d)| (o, d.unwrap_or_default()))
                .collect(),
        ))
    };
    let (schema, (tables, skipped)) = tokio::try_join!(schema, pg_contents(pool, scope, budget))?;
    Ok(Fingerprint {
        schema,
        tables,
        skipped,
    })
}

/// PostgreSQL: the row count and content digest of every table in `scope` under `budget`,
/// and the reason for each one skipped.
async fn pg_contents(
    pool: &PgPool,
    scope: &Scope,
    budget: u64,
) -> Result<(BTreeMap<String, TableDigest>, BTreeMap<String, String>), DatabaseError> {
    let filter = PG_USER_SCHEMA;
    let (mut digests, mut skipped) = (BTreeMap::new(), BTreeMap::new());
    let tables: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT n.nspname, c.relname, pg_table_size(c.oid)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p') AND {filter} ORDER BY 1, 2"
    ))
    .fetch_all(pool)
    .await
    .map_err(sql_err("cannot list the tables"))?;
    let mut digest_these = Vec::new();
    for (schema, table, bytes) in tables {
        let name = if schema == "public" {
            table.clone()
        } else {
            format!("{schema}.{table}")
        };
        if !scope.includes(&name) {
            continue;
        }
        if let Some(why) = too_big(bytes, budget) {
            skipped.insert(name, why);
            continue;
        }
        // `ONLY`: a partitioned parent's rows are its partitions', digested each.
        // `sum(bigint)` accumulates in 128 bits: twice as fast as summing `numeric`s.
        let sql = format!(
            "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text
               FROM ONLY {}.{} t",
            quote_ident(&schema, '"'),
            quote_ident(&table, '"')
        );
        digest_these.push((name, sql));
    }
    // Many tables per query, two queries at once: a query per table spends more on its
    // round trip and plan than on a small table's rows, and the server has more than one
    // core.
    let per_query = digest_these.len().div_ceil(2).clamp(1, PG_TABLES_PER_QUERY);
    let owned: Vec<Vec<(String, String)>> =
        digest_these.chunks(per_query).map(<[_]>::to_vec).collect();
    let groups: Vec<Vec<(String, TableDigest)>> = futures::stream::iter(owned)
        .map(|group| pg_digest_group(pool, group))
        .buffered(2)
        .try_collect()
        .await?;
    digests.extend(groups.into_iter().flatten());
    Ok((digests, skipped))
}

/// The digests of `group` (a table's name and its digest query) in one query.
async fn pg_digest_group(
    pool: &PgPool,
    group: Vec<(String, String)>,
) -> Result<Vec<(String, TableDigest)>, DatabaseError> {
    let union = group
        .iter()
        .enumerate()
        .map(|(i, (_, sql))| sql.replacen("SELECT ", &format!("SELECT {i}, "), 1))
        .collect::<Vec<_>>()
        .join("\n UNION ALL ");
    let sums: Vec<(i32, i64, String)> =
        if let Ok(rows) = sqlx::query_as(&union).fetch_all(pool).await {
            rows
        } else {
            // One table failed: digest them one by one to name it.
            let mut rows = Vec::with_capacity(group.len());
            for (i, (name, sql)) in group.iter().enumerate() {
                let (count, sum): (i64, String) = sqlx::query_as(sql)
                    .fetch_one(pool)
                    .await
                    .map_err(sql_err(format!("cannot digest the rows of {name}")))?;
                rows.push((i32::try_from(i).unwrap_or(i32::MAX), count, sum));
            }
            rows
        };
    Ok(sums
        .into_iter()
        .filter_map(|(i, rows, digest)| {
            let (name, _) = group.get(usize::try_from(i).ok()?)?;
            Some((name.clone(), TableDigest { rows, digest }))
        })
        .collect())
}

/// How many tables one PostgreSQL query digests at most: a bounded union keeps the plan
/// small.
const PG_TABLES_PER_QUERY: usize = 100;

/// MySQL and MariaDB: the catalog from `information_schema`, contents hashed with `MD5`
/// in the server (pt-table-checksum's way, summed instead of XORed so duplicates count).
pub(crate) async fn mysql(
    pool: &MySqlPool,
    scope: &Scope,
    budget: u64,
) -> Result<Fingerprint, DatabaseError> {
    let queries = [
        "SELECT CONCAT('table ', table_name),
                CONCAT_WS(' ', column_name, column_type, is_nullable,
                          IFNULL(column_default, 'NULL'), extra)
           FROM information_schema.columns
          WHERE table_schema = DATABASE() AND table_name <> '_sqlx_migrations'
          ORDER BY table_name, ordinal_position",
        "SELECT CONCAT('index ', table_name, '.', index_name),
                CONCAT_WS(' ', non_unique, seq_in_index, column_name, IFNULL(sub_part, ''))
           FROM information_schema.statistics
          WHERE table_schema = DATABASE() AND table_name <> '_sqlx_migrations'
          ORDER BY table_name, index_name, seq_in_index",
        "SELECT CONCAT('constraint ', table_name, '.', constraint_name),
                CONCAT_WS(' ', column_name, IFNULL(referenced_table_name, ''),
                          IFNULL(referenced_column_name, ''))
           FROM information_schema.key_column_usage
          WHERE table_schema = DATABASE() AND table_name <> '_sqlx_migrations'
          ORDER BY table_name, constraint_name, ordinal_position",
        "SELECT CONCAT('view ', table_name), view_definition
           FROM information_schema.views WHERE table_schema = DATABASE()",
        "SELECT CONCAT('trigger ', trigger_name),
                CONCAT_WS(' ', event_object_table, action_timing, event_manipulation,
                          action_statement)
           FROM information_schema.triggers WHERE trigger_schema = DATABASE()",
    ];
    let mut parts = Vec::new();
    for q in queries {
        let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(q)
            .fetch_all(pool)
            .await
            .map_err(sql_err("cannot read the schema from information_schema"))?;
        parts.extend(rows.into_iter().map(|(o, d)| {
            (
                String::from_utf8_lossy(&o).into_owned(),
                String::from_utf8_lossy(&d.unwrap_or_default()).into_owned(),
            )
        }));
    }
    let mut fingerprint = Fingerprint {
        schema: schema_of(parts),
        ..Fingerprint::default()
    };
    let tables: Vec<(Vec<u8>, i64)> = sqlx::query_as(
        "SELECT table_name, CAST(IFNULL(data_length, 0) + IFNULL(index_length, 0) AS SIGNED)
           FROM information_schema.tables
          WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .map_err(sql_err("cannot list the tables"))?;
    for (table, bytes) in tables {
        let table = String::from_utf8_lossy(&table).into_owned();
        if !scope.includes(&table) {
            continue;
        }
        if let Some(why) = too_big(bytes, budget) {
            fingerprint.skipped.insert(table, why);
            continue;
        }
        let columns: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT column_name FROM information_schema.columns
              WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
        )
        .bind(&table)
        .fetch_all(pool)
        .await
        .map_err(sql_err(format!("cannot read the columns of {table}")))?;
        let columns: Vec<String> = columns
            .iter()
            .map(|c| quote_ident(&String::from_utf8_lossy(c), '`'))
            .collect();
        // CONCAT_WS skips NULLs: the ISNULL flags tell NULL from an empty string.
        let values = columns
            .iter()
            .map(|c| format!("CAST({c} AS BINARY)"))
            .collect::<Vec<_>>()
            .join(", ");
        let nulls = columns
            .iter()
            .map(|c| format!("ISNULL({c})"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT COUNT(*), CAST(IFNULL(SUM(CAST(CONV(SUBSTRING(MD5(CONCAT_WS('#', {values}, CONCAT({nulls}))), 1, 16), 16, 10) AS UNSIGNED)), 0) AS CHAR)
               FROM {}",
            quote_ident(&table, '`')
        );
        let (rows, sum): (i64, String) = sqlx::query_as(&sql)
            .fetch_one(pool)
            .await
            .map_err(sql_err(format!("cannot digest the rows of {table}")))?;
        fingerprint
            .tables
            .insert(table, TableDigest { rows, digest: sum });
    }
    Ok(fingerprint)
}
