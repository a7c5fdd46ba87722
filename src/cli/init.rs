//! `cutover init`: a project to start from in the current folder. It never overwrites: a
//! file that exists is kept and named as kept.

use std::path::{Path, PathBuf};

use super::Global;
use super::exit::Exit;
use crate::engine::EngineError;

const DEPLOY: &str = include_str!("init/deploy.yaml");
const PIPELINE: &str = include_str!("init/pipeline.yaml");
const CHECK: &str = include_str!("init/check.sql");
/// The state folder: journal, lock, local backups and the local database.
const IGNORE: &str = "/.cutover/";

/// What `init` did with one path.
enum Done {
    Created(PathBuf),
    Kept(PathBuf),
    Appended(PathBuf),
}

pub(crate) fn init(global: &Global, project: Option<&str>) -> Result<Exit, EngineError> {
    let config = &global.config;
    let root = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let project = match project {
        Some(name) => name.to_owned(),
        None => folder_name(&root),
    };
    let project = slug(&project);
    let at = |rel: &str| -> PathBuf {
        if root == Path::new(".") {
            rel.into()
        } else {
            root.join(rel)
        }
    };
    let mut done = Vec::new();
    done.push(write_new(config, &DEPLOY.replace("{project}", &project))?);
    done.push(write_new(&at("pipelines/deploy.yaml"), PIPELINE)?);
    done.push(write_new(
        &at("validations/no_failed_migrations.sql"),
        CHECK,
    )?);
    let migrations = at("migrations");
    if migrations.is_dir() {
        done.push(Done::Kept(migrations));
    } else {
        create_dir(&migrations)?;
        done.push(Done::Created(migrations));
    }
    done.push(ignore_state(&at(".gitignore"))?);

    for d in &done {
        match d {
            Done::Created(p) => println!("created  {}", p.display()),
            Done::Kept(p) => println!("kept     {} (it exists; not overwritten)", p.display()),
            Done::Appended(p) => println!("updated  {} (added {IGNORE})", p.display()),
        }
    }
    let c = if global.config == Path::new("deploy.yaml") {
        String::new()
    } else {
        format!(" -c {}", global.config.display())
    };
    println!(
        "\nNext:\n  \
         cutover{c} migrate new create_users   write the first migration, then fill in its .up.sql and .down.sql\n  \
         cutover{c} plan                       what a deploy would do, touching nothing\n  \
         cutover{c} deploy                     run it: backup, migrate, validate, roll back on failure"
    );
    Ok(Exit::Ok)
}

/// The project's name from its folder, for the journal and the plans.
fn folder_name(root: &Path) -> String {
    std::path::absolute(root)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".to_owned())
}

/// A name that stays a plain YAML scalar.
fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-');
    if s.is_empty() { "app".into() } else { s.into() }
}

fn create_dir(dir: &Path) -> Result<(), EngineError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| EngineError::Plan(format!("cannot create {}: {e}", dir.display())))
}

/// Writes `text` to a new file; a file already there is left as it is.
fn write_new(path: &Path, text: &str) -> Result<Done, EngineError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path);
    match file {
        Ok(mut f) => {
            std::io::Write::write_all(&mut f, text.as_bytes())
                .map_err(|e| EngineError::Plan(format!("cannot write {}: {e}", path.display())))?;
            Ok(Done::Created(path.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Done::Kept(path.to_owned())),
        Err(e) => Err(EngineError::Plan(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Keeps the state folder out of version control: a new `.gitignore`, or one line added to
/// the one there.
fn ignore_state(path: &Path) -> Result<Done, EngineError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return write_new(path, &format!("{IGNORE}\n"));
        }
        Err(e) => {
            return Err(EngineError::Plan(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let ignored = existing.lines().any(|l| {
        matches!(
            l.trim(),
            ".cutover" | ".cutover/" | "/.cutover" | "/.cutover/"
        )
    });
    if ignored {
        return Ok(Done::Kept(path.to_owned()));
    }
    let separator = if existing.is_empty() || existing.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| EngineError::Plan(format!("cannot open {}: {e}", path.display())))?;
    std::io::Write::write_all(&mut f, format!("{separator}{IGNORE}\n").as_bytes())
        .map_err(|e| EngineError::Plan(format!("cannot write {}: {e}", path.display())))?;
    Ok(Done::Appended(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every commented example of another kind in the scaffold is a block that loads, so
    /// uncommenting one never starts with an error.
    #[test]
    fn the_scaffolds_commented_kinds_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("migrations")).unwrap();
        let examples: Vec<&str> = DEPLOY
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("#   "))
            .collect();
        assert!(examples.len() >= 10, "{examples:?}");
        for example in examples {
            let key = example.split(':').next().unwrap();
            let block = if key == "database" {
                format!("    {example}\n")
            } else {
                format!("    database: {{ kind: sqlite, url: \"sqlite://a.db\" }}\n    {example}\n")
            };
            let text = DEPLOY.replace("{project}", "p").replace(
                "environments:\n",
                &format!("environments:\n  other:\n{block}"),
            );
            let path = dir.path().join("deploy.yaml");
            std::fs::write(&path, &text).unwrap();
            if let Err(e) = crate::config::load(&path) {
                panic!("`{example}` does not load: {e}");
            }
        }
    }

    #[test]
    fn names_become_plain_scalars() {
        assert_eq!(slug("my app: v2"), "my-app--v2");
        assert_eq!(slug("::"), "app");
        assert_eq!(slug("shop_api"), "shop_api");
    }
}
