//! Reading a migrations folder.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha384};
use sqlx::migrate::{Migration, MigrationType};

/// One migration as found on disk.
#[derive(Debug, Clone)]
pub struct MigrationFile {
    pub version: i64,
    /// As sqlx-cli records it: the file name's words, separated by spaces.
    pub description: String,
    pub up_path: PathBuf,
    pub up_sql: String,
    pub down_path: Option<PathBuf>,
    pub down_sql: Option<String>,
    /// First line `-- cutover:no-transaction` (or sqlx's `-- no-transaction`).
    pub no_transaction: bool,
    /// A leading comment line `-- cutover:contract`: the migration removes what the code
    /// before this release still uses (a column, a table), so it must wait for a release
    /// after the one that moved the traffic off that code.
    pub contract: bool,
    pub checksum: Vec<u8>,
}

impl MigrationFile {
    pub fn reversible(&self) -> bool {
        self.down_sql.is_some()
    }

    /// The sqlx migration that applies this one.
    pub fn up(&self) -> Migration {
        let kind = if self.reversible() {
            MigrationType::ReversibleUp
        } else {
            MigrationType::Simple
        };
        Migration::new(
            self.version,
            Cow::Owned(self.description.clone()),
            kind,
            Cow::Owned(self.up_sql.clone()),
            self.no_transaction,
        )
    }

    /// The sqlx migration that reverts this one, if it has a down file.
    pub fn down(&self) -> Option<Migration> {
        let sql = self.down_sql.as_ref()?;
        Some(Migration::new(
            self.version,
            Cow::Owned(self.description.clone()),
            MigrationType::ReversibleDown,
            Cow::Owned(sql.clone()),
            no_transaction(sql),
        ))
    }

    pub fn checksum_hex(&self) -> String {
        hex::encode(&self.checksum)
    }
}

/// All migrations of a project, ordered by version.
#[derive(Debug, Clone, Default)]
pub struct MigrationSet {
    pub dir: PathBuf,
    pub migrations: Vec<MigrationFile>,
}

impl MigrationSet {
    /// The migration with this version. A binary search: the set is ordered by version,
    /// and plans look up every applied migration.
    pub fn get(&self, version: i64) -> Option<&MigrationFile> {
        self.migrations
            .binary_search_by_key(&version, |m| m.version)
            .ok()
            .map(|i| &self.migrations[i])
    }

    pub fn latest(&self) -> Option<i64> {
        self.migrations.last().map(|m| m.version)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error("cannot read migrations folder {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: migration file name must look like `<version>_<name>.up.sql`, `.down.sql` or `.sql` with a numeric version", path.display())]
    BadName { path: PathBuf },
    #[error("{}: `.{suffix}.sql` is not a migration direction cutover reads; a reversible migration is the pair `<version>_<name>.up.sql` and `<version>_<name>.down.sql`, in lowercase", path.display())]
    BadDirection { path: PathBuf, suffix: String },
    #[error("{}: the `.sql` suffix must be lowercase", path.display())]
    BadSuffix { path: PathBuf },
    #[error("{}: a down migration without its up migration", path.display())]
    DownWithoutUp { path: PathBuf },
    #[error("{} and {}: two migrations share version {version}", first.display(), second.display())]
    DuplicateVersion {
        version: i64,
        first: PathBuf,
        second: PathBuf,
    },
}

pub(crate) fn no_transaction(sql: &str) -> bool {
    let first = sql.lines().next().unwrap_or_default().trim();
    first == "-- cutover:no-transaction" || first.starts_with("-- no-transaction")
}

/// Whether the header (the comment lines before the first statement) marks the migration
/// `-- cutover:contract`.
pub(crate) fn contract(sql: &str) -> bool {
    sql.lines()
        .map(str::trim)
        .take_while(|l| l.is_empty() || l.starts_with("--"))
        .any(|l| l == "-- cutover:contract")
}

/// Words that name a direction: a file `x.dn.sql` or `x.UP.sql` is a migration someone
/// meant to be an up or a down, not a one-way migration whose name ends in `.dn`.
const DIRECTIONS: [&str; 8] = [
    "up", "down", "dn", "undo", "rollback", "revert", "reverse", "rev",
];

/// Refuses a name that is almost a migration's: `.SQL`, `.UP.sql`, `.dn.sql`.
fn check_suffix(name: &str, path: &Path) -> Result<(), SourceError> {
    let Some(stem) = name.strip_suffix(".sql") else {
        return Err(SourceError::BadSuffix {
            path: path.to_owned(),
        });
    };
    match stem.rsplit_once('.') {
        Some((_, last))
            if last != "up"
                && last != "down"
                && DIRECTIONS.contains(&last.to_ascii_lowercase().as_str()) =>
        {
            Err(SourceError::BadDirection {
                path: path.to_owned(),
                suffix: last.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// Reads every migration in `dir`. A missing folder is an empty set.
pub(crate) fn read_dir(dir: &Path) -> Result<MigrationSet, SourceError> {
    let read_err = |source| SourceError::Read {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        return Ok(MigrationSet {
            dir: dir.to_owned(),
            migrations: Vec::new(),
        });
    }
    let mut ups: BTreeMap<i64, (String, PathBuf, String)> = BTreeMap::new();
    let mut downs: BTreeMap<i64, (PathBuf, String)> = BTreeMap::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // The directory entry's own type (no stat per file; a project has thousands), and
        // the target's for a link.
        let is_file = entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink() && path.is_file());
        if !is_file || !name.to_ascii_lowercase().ends_with(".sql") {
            continue;
        }
        check_suffix(&name, &path)?;
        let (stem, is_down) = if let Some(s) = name.strip_suffix(".down.sql") {
            (s, true)
        } else if let Some(s) = name.strip_suffix(".up.sql") {
            (s, false)
        } else {
            (name.strip_suffix(".sql").unwrap_or(&name), false)
        };
        let (version, words) = stem
            .split_once('_')
            .and_then(|(v, w)| Some((v.parse::<i64>().ok()?, w)))
            .ok_or_else(|| SourceError::BadName { path: path.clone() })?;
        let sql = std::fs::read_to_string(&path).map_err(|source| SourceError::Read {
            path: path.clone(),
            source,
        })?;
        if is_down {
            downs.insert(version, (path, sql));
        } else if let Some((_, first, _)) = ups.get(&version) {
            return Err(SourceError::DuplicateVersion {
                version,
                first: first.clone(),
                second: path,
            });
        } else {
            ups.insert(version, (words.replace('_', " "), path, sql));
        }
    }
    if let Some((path, _)) = downs
        .iter()
        .find(|(v, _)| !ups.contains_key(v))
        .map(|(_, d)| d)
    {
        return Err(SourceError::DownWithoutUp { path: path.clone() });
    }
    let migrations = ups
        .into_iter()
        .map(|(version, (description, up_path, up_sql))| {
            let (down_path, down_sql) = downs.remove(&version).unzip();
            MigrationFile {
                version,
                description,
                no_transaction: no_transaction(&up_sql),
                contract: contract(&up_sql),
                checksum: Sha384::digest(up_sql.as_bytes()).to_vec(),
                up_path,
                up_sql,
                down_path,
                down_sql,
            }
        })
        .collect();
    Ok(MigrationSet {
        dir: dir.to_owned(),
        migrations,
    })
}

#[cfg(test)]
mod tests {
    use super::{SourceError, read_dir};

    fn read(files: &[&str]) -> Result<Vec<(i64, bool)>, SourceError> {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), "SELECT 1;").unwrap();
        }
        read_dir(dir.path()).map(|set| {
            set.migrations
                .iter()
                .map(|m| (m.version, m.reversible()))
                .collect()
        })
    }

    #[test]
    fn pairs_and_one_way_files_are_read() {
        let got = read(&[
            "1_a.up.sql",
            "1_a.down.sql",
            "2_b.sql",
            "3_v1.2_c.sql",
            "notes.md",
        ]);
        assert_eq!(got.unwrap(), vec![(1, true), (2, false), (3, false)]);
    }

    #[test]
    fn names_that_are_almost_a_migrations_are_refused() {
        for (file, says) in [
            ("1_a.UP.sql", "`.UP.sql` is not a migration direction"),
            ("1_a.dn.sql", "`.dn.sql` is not a migration direction"),
            ("1_a.Down.sql", "`.Down.sql` is not a migration direction"),
            ("1_a.up.SQL", "the `.sql` suffix must be lowercase"),
        ] {
            let error = read(&["1_a.up.sql", file]).unwrap_err().to_string();
            assert!(
                error.contains(file) && error.contains(says),
                "{file}: {error}"
            );
        }
    }
}
