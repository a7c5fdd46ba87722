//! The `azure-sql` database through the real binary: Resource Manager is the local fake
//! (tests/support/azure_fake.rs), whose export writes a real `.bacpac` blob into Azurite
//! and whose import reads one back. A backup step exports into the backup container and
//! stores the file as a normal backup; a rollback by restore imports it into a new database
//! and swaps it in by rename; a failing export leaves no backup; steps that need a SQL
//! Server driver are refused by the plan.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use sha2::Digest;
use support::azure_fake::{
    AzureFake, BACPAC_HEADER, CLIENT_ID, CLIENT_SECRET, SQL_ADMIN, SQL_PASSWORD, SUBSCRIPTION,
    TENANT, sql_path,
};
use support::azurite::{self, KEY, blobs, download};
use support::{Project, Run, replace_once};

const API: &str = "2023-08-01";

/// A project whose `local` environment is the Azure SQL database `recipes`, with its
/// backups in a fresh Azurite container, and no migrations of cutover's own.
fn project(fake: &AzureFake, pipeline: &str) -> (Project, String) {
    fake.add_database("recipes", "rows: v1");
    let container = azurite::container();
    let p = Project::new();
    let config = replace_once(
        &p.default_config(),
        "    database: { kind: sqlite, url: \"sqlite://state/app.db\" }\n    backups: { kind: local, path: state/backups }\n",
        &format!(
            "    database: {{ kind: azure-sql, resource_group: rg, server: sql-prod, database: recipes, admin_login: {SQL_ADMIN}, admin_password: \"${{secret:env:SQL_PASSWORD}}\" }}\n    backups: {}\n    azure: {{ subscription: {SUBSCRIPTION}, tenant: {TENANT}, client_id: {CLIENT_ID}, credential: client-secret }}\n",
            azurite::server().backups(&container, ", compression: none")
        ),
    );
    p.write_config(&config);
    for entry in std::fs::read_dir(p.file("migrations")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    p.write_pipeline(pipeline);
    p.set_platform(false, 1);
    (p, container)
}

fn cmd(p: &Project, fake: &AzureFake) -> Command {
    let mut c = p.cmd();
    for v in [
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_SUBSCRIPTION_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
    ] {
        c.env_remove(v);
    }
    c.env("CUTOVER_AZURE_REDIRECT", fake.redirect());
    c.env("AZURE_CLIENT_SECRET", CLIENT_SECRET);
    c.env("SQL_PASSWORD", SQL_PASSWORD);
    c
}

fn run(fake: &AzureFake, p: &Project, args: &[&str]) -> Run {
    Run(cmd(p, fake).args(args).output().expect("cutover runs"))
}

fn result(stdout: &str) -> Value {
    serde_json::from_str::<Value>(stdout.lines().last().unwrap()).unwrap()["result"].clone()
}

fn backups(fake: &AzureFake, p: &Project) -> Vec<Value> {
    let list = run(fake, p, &["backup", "list", "--output", "json"]);
    list.success();
    result(&list.stdout())["backups"]
        .as_array()
        .unwrap()
        .clone()
}

/// `(method, path, body)` of every Microsoft.Sql change sent to Resource Manager.
fn changes(fake: &AzureFake) -> Vec<(String, String, Value)> {
    fake.requests()
        .iter()
        .filter(|r| r.method != "GET" && r.path.contains("/Microsoft.Sql/"))
        .map(|r| {
            (
                r.method.clone(),
                r.path.clone(),
                serde_json::from_str(&r.body).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// The storage and login fields every export and import carries, `blob` aside.
fn check_storage_fields(body: &Value, container: &str) -> String {
    assert_eq!(body["storageKeyType"], "StorageAccessKey", "{body}");
    assert_eq!(body["storageKey"], KEY);
    assert_eq!(body["administratorLogin"], SQL_ADMIN);
    assert_eq!(body["administratorLoginPassword"], SQL_PASSWORD);
    assert_eq!(body["authenticationType"], "Sql");
    let uri = body["storageUri"].as_str().unwrap();
    let prefix = format!("{}/{container}/", azurite::server().url());
    uri.strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{uri} is not in {prefix}"))
        .to_owned()
}

fn no_secrets(out: &Run) {
    let all = out.all();
    assert!(!all.contains(SQL_PASSWORD), "{all}");
    assert!(!all.contains(KEY), "{all}");
    assert!(!all.contains(CLIENT_SECRET), "{all}");
}

const BACKUP_PIPELINE: &str = "name: deploy\nsteps:\n  - uses: backup\n";

#[test]
fn a_backup_exports_to_blob_storage_and_a_rollback_imports_and_swaps_by_rename() {
    let fake = AzureFake::start();
    let (p, container) = project(&fake, BACKUP_PIPELINE);
    let out = run(&fake, &p, &["deploy"]);
    out.success();
    no_secrets(&out);

    // Exactly one export, with the documented body, followed through its Location.
    let sent = changes(&fake);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (method, path, body) = &sent[0];
    assert_eq!(method, "POST");
    assert_eq!(
        path,
        &format!("{}/export?api-version={API}", sql_path("recipes"))
    );
    let blob = check_storage_fields(body, &container);
    assert!(
        fake.requests().iter().any(|r| r.method == "GET"
            && r.path.contains("/importExportOperationResults/")
            && r.status == 202),
        "the export's Location was not polled while it ran"
    );

    // The backup holds exactly what Azure exported; the temporary blob is gone.
    let list = backups(&fake, &p);
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["database_kind"], "azure-sql");
    let stored = download(&container, &format!("{id}.dump"));
    let expected = format!("{BACPAC_HEADER}rows: v1").into_bytes();
    assert_eq!(stored, expected);
    assert_eq!(
        list[0]["sha256"],
        hex::encode(sha2::Sha256::digest(&expected))
    );
    assert!(
        !blobs(&container).contains(&blob),
        "{:?}",
        blobs(&container)
    );
    assert_eq!(
        blobs(&container),
        vec![format!("{id}.dump"), format!("{id}.manifest.json")]
    );

    // The database changes; a rollback to the backup brings the old contents back.
    fake.set_database_content("recipes", "rows: v2");
    fake.clear_requests();
    let out = run(&fake, &p, &["rollback", "--backup", &id, "-y"]);
    out.success();
    no_secrets(&out);
    let dbs = fake.databases();
    assert_eq!(dbs["recipes"], "rows: v1", "{dbs:?}");
    let replaced: Vec<&String> = dbs
        .keys()
        .filter(|n| n.starts_with("recipes_replaced_"))
        .collect();
    assert_eq!(replaced.len(), 1, "{dbs:?}");
    assert_eq!(dbs[replaced[0]], "rows: v2");
    assert_eq!(dbs.len(), 2, "{dbs:?}");
    assert!(
        out.all().contains(&format!(
            "az sql db delete --resource-group rg --server sql-prod --name {}",
            replaced[0]
        )),
        "{}",
        out.all()
    );

    // A safety backup (export) first, then import into `<db>_restore_<ts>` and two renames.
    let sent = changes(&fake);
    let kinds: Vec<String> = sent
        .iter()
        .map(|(m, path, _)| format!("{m} {}", path.split('?').next().unwrap()))
        .collect();
    let stamp = replaced[0].strip_prefix("recipes_replaced_").unwrap();
    let server = sql_path("").trim_end_matches("/databases/").to_owned();
    assert_eq!(
        kinds,
        vec![
            format!("POST {}/export", sql_path("recipes")),
            format!("POST {server}/import"),
            format!("POST {}/move", sql_path("recipes")),
            format!(
                "POST {}/move",
                sql_path(&format!("recipes_restore_{stamp}"))
            ),
        ]
    );
    for (_, path, _) in &sent {
        assert!(path.ends_with(&format!("?api-version={API}")), "{path}");
    }
    let import = &sent[1].2;
    let import_blob = check_storage_fields(import, &container);
    assert_eq!(import["databaseName"], format!("recipes_restore_{stamp}"));
    assert_eq!(import["edition"], "GeneralPurpose");
    assert_eq!(import["serviceObjectiveName"], "GP_S_Gen5_2");
    assert_eq!(import["maxSizeBytes"], "34359738368");
    assert_eq!(
        sent[2].2,
        json!({"id": sql_path(&format!("recipes_replaced_{stamp}"))})
    );
    assert_eq!(sent[3].2, json!({"id": sql_path("recipes")}));
    // The uploaded copy for the import is gone; two backups remain (the safety one too).
    assert!(!blobs(&container).contains(&import_blob));
    assert!(!blobs(&container).iter().any(|b| b.starts_with(".cutover-")));
    assert_eq!(backups(&fake, &p).len(), 2);
}

#[test]
fn a_failing_export_leaves_no_backup() {
    let fake = AzureFake::start();
    let (p, container) = project(&fake, BACKUP_PIPELINE);
    fake.fail_exports();
    let out = run(&fake, &p, &["deploy"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    assert!(
        out.all().contains("Could not export schema and data"),
        "{}",
        out.all()
    );
    no_secrets(&out);
    assert_eq!(backups(&fake, &p), Vec::<Value>::new());
    // The partial export was deleted too.
    assert_eq!(blobs(&container), Vec::<String>::new());
    assert_eq!(fake.databases()["recipes"], "rows: v1");
}

#[test]
fn a_failing_import_leaves_the_database_as_it_was() {
    let fake = AzureFake::start();
    let (p, container) = project(&fake, BACKUP_PIPELINE);
    run(&fake, &p, &["deploy"]).success();
    let id = backups(&fake, &p)[0]["id"].as_str().unwrap().to_owned();
    fake.set_database_content("recipes", "rows: v2");
    fake.fail_imports();
    fake.clear_requests();
    let out = run(&fake, &p, &["rollback", "--backup", &id, "-y"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    assert!(
        out.all().contains("Could not import package"),
        "{}",
        out.all()
    );
    no_secrets(&out);
    // No rename was sent; the database is as it was, and no temporary blob is left.
    assert!(
        !changes(&fake)
            .iter()
            .any(|(_, path, _)| path.contains("/move")),
        "{:?}",
        changes(&fake)
    );
    assert_eq!(
        fake.databases(),
        std::collections::BTreeMap::from([("recipes".to_owned(), "rows: v2".to_owned())])
    );
    assert!(!blobs(&container).iter().any(|b| b.starts_with(".cutover-")));
}

#[test]
fn the_command_migrator_gets_a_connection_string_and_a_failure_restores_the_backup() {
    let fake = AzureFake::start();
    let pipeline = "name: deploy\nsteps:\n  - uses: backup\n  - uses: migrate\n    with:\n      tool: command\n      status: \"cat version.txt 2>/dev/null || true\"\n      up: \"printf %s \\\"$DATABASE_URL\\\" > url.txt; echo 2 > version.txt; echo \\\"connecting with $DATABASE_URL\\\"\"\n      down: \"echo {version} > down.txt; rm -f version.txt\"\n      base_version: \"0\"\n      rollback: restore\n  - id: boom\n    uses: command\n    with: { run: \"exit 3\" }\n";
    let (p, _) = project(&fake, pipeline);
    let out = run(&fake, &p, &["deploy"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    no_secrets(&out);
    assert_eq!(
        p.read("url.txt"),
        format!(
            "Server=tcp:sql-prod.database.windows.net,1433;Initial Catalog=recipes;User ID={SQL_ADMIN};Password={SQL_PASSWORD};Encrypt=True;"
        )
    );
    // `rollback: restore` imported the backup taken before `up` and swapped it in.
    let dbs = fake.databases();
    assert_eq!(dbs.len(), 2, "{dbs:?}");
    assert_eq!(dbs["recipes"], "rows: v1");
    assert!(
        dbs.keys().any(|n| n.starts_with("recipes_replaced_")),
        "{dbs:?}"
    );
}

#[test]
fn the_plan_refuses_steps_that_need_a_sql_server_driver() {
    let fake = AzureFake::start();
    let cases = [
        ("  - uses: migrate\n", "needs `tool: command`"),
        (
            "  - uses: sql\n    with: { sql: \"DELETE FROM t\" }\n",
            "`sql` steps cannot run on an `azure-sql` database",
        ),
    ];
    for (step, expected) in cases {
        let (p, _) = project(&fake, &format!("name: deploy\nsteps:\n{step}"));
        let out = run(&fake, &p, &["plan"]);
        out.expect_code(2);
        assert!(out.stderr().contains(expected), "{}", out.all());
        assert!(
            out.stderr().contains("pipelines/deploy.yaml:3"),
            "{}",
            out.all()
        );
    }
    assert!(changes(&fake).is_empty());
}

#[test]
fn azure_sql_needs_blob_backups_with_a_storage_key() {
    let fake = AzureFake::start();
    let (p, container) = project(&fake, BACKUP_PIPELINE);
    let config = p.read("deploy.yaml");
    let local = replace_once(
        &config,
        &azurite::server().backups(&container, ", compression: none"),
        "{ kind: local, path: state/backups }",
    );
    p.write_config(&local);
    let out = run(&fake, &p, &["plan"]);
    out.expect_code(2);
    assert!(
        out.stderr().contains("needs `backups: { kind: azure-blob"),
        "{}",
        out.all()
    );
    assert!(fake.requests().is_empty());
}

/// A deploy whose backup is a snapshot (a database copy), whose migrator writes `rows: v2`
/// into the fake's database, and whose last step is `last`.
fn snapshot_pipeline(fake: &AzureFake, last: &str) -> String {
    snapshot_pipeline_of(fake, "recipes", last)
}

/// [`snapshot_pipeline`] on database `db`.
fn snapshot_pipeline_of(fake: &AzureFake, db: &str, last: &str) -> String {
    format!(
        "name: deploy\nsteps:\n  - uses: backup\n    with: {{ snapshot: true }}\n  - uses: migrate\n    with:\n      tool: command\n      status: \"cat version.txt 2>/dev/null || true\"\n      up: \"curl -sf -X PUT --data-binary 'rows: v2' {}/fake/sql/{db} && echo 2 > version.txt\"\n      down: \"echo {{version}} > down.txt; rm -f version.txt\"\n      base_version: \"0\"\n      rollback: restore\n{last}",
        fake.url
    )
}

const BOOM: &str = "  - id: boom\n    uses: command\n    with: { run: \"exit 3\" }\n";

/// The names of the fake's databases that start with `prefix`.
fn named(fake: &AzureFake, prefix: &str) -> Vec<String> {
    fake.databases()
        .into_keys()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// `METHOD /path` (no query) of every Microsoft.Sql change.
fn change_lines(fake: &AzureFake) -> Vec<String> {
    changes(fake)
        .iter()
        .map(|(m, path, _)| format!("{m} {}", path.split('?').next().unwrap()))
        .collect()
}

/// The copy request's target and body, checked against the copy docs.
fn check_copy(fake: &AzureFake) -> String {
    let sent = changes(fake);
    let (_, path, body) = sent
        .iter()
        .find(|(m, _, _)| m == "PUT")
        .unwrap_or_else(|| panic!("no copy was sent: {sent:?}"));
    let name = path
        .split('?')
        .next()
        .unwrap()
        .strip_prefix(&sql_path(""))
        .unwrap()
        .to_owned();
    assert!(name.starts_with("recipes_cutover_"), "{name}");
    assert!(path.ends_with(&format!("?api-version={API}")), "{path}");
    assert_eq!(
        body,
        &json!({
            "location": "westeurope",
            "sku": {"name": "GP_S_Gen5_2", "tier": "GeneralPurpose"},
            "properties": {"createMode": "Copy", "sourceDatabaseId": sql_path("recipes")},
        })
    );
    // The copy was followed to its end through its operation.
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/databaseAzureAsyncOperation/")),
        "the copy's operation was not polled"
    );
    name
}

#[test]
fn a_snapshot_is_a_database_copy_swapped_in_by_renames_on_rollback() {
    let fake = AzureFake::start();
    let (p, _) = project(&fake, &snapshot_pipeline(&fake, BOOM));
    let out = run(&fake, &p, &["deploy"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    no_secrets(&out);
    let copy = check_copy(&fake);
    let token = copy.strip_prefix("recipes_cutover_").unwrap();
    // The database as it was before the migration is back under its name; the migrated
    // one is kept beside it, and the copy is not left over.
    let dbs = fake.databases();
    assert_eq!(dbs["recipes"], "rows: v1", "{dbs:?}");
    let replaced = format!("recipes_replaced_{token}");
    assert_eq!(dbs[&replaced], "rows: v2", "{dbs:?}");
    assert_eq!(dbs.len(), 2, "{dbs:?}");
    assert!(named(&fake, "recipes_cutover_").is_empty(), "{dbs:?}");
    // Swapped by two renames, with no import.
    let lines = change_lines(&fake);
    let sent = changes(&fake);
    let moves: Vec<&(String, String, Value)> = sent
        .iter()
        .filter(|(_, path, _)| path.contains("/move?"))
        .collect();
    assert_eq!(moves.len(), 2, "{lines:?}");
    assert!(
        moves[0]
            .1
            .starts_with(&format!("{}/move?", sql_path("recipes")))
    );
    assert_eq!(moves[0].2, json!({"id": sql_path(&replaced)}));
    assert!(
        moves[1]
            .1
            .starts_with(&format!("{}/move?", sql_path(&copy)))
    );
    assert_eq!(moves[1].2, json!({"id": sql_path("recipes")}));
    assert!(!lines.iter().any(|l| l.ends_with("/import")), "{lines:?}");
    assert!(
        out.all().contains(&format!(
            "az sql db delete --resource-group rg --server sql-prod --name {replaced}"
        )),
        "{}",
        out.all()
    );
}

#[test]
fn a_run_killed_in_the_swap_is_finished_by_recover() {
    let fake = AzureFake::start();
    let (p, _) = project(&fake, &snapshot_pipeline(&fake, BOOM));
    let out = Run(cmd(&p, &fake)
        .arg("deploy")
        .env("CUTOVER_TEST_CRASH_IN_SWAP", "1")
        .output()
        .unwrap());
    assert!(![0, 1].contains(&out.code()), "{}", out.all());
    // Killed between the two renames: the live name is free.
    let dbs = fake.databases();
    assert!(!dbs.contains_key("recipes"), "{dbs:?}");
    assert_eq!(named(&fake, "recipes_cutover_").len(), 1, "{dbs:?}");
    assert_eq!(named(&fake, "recipes_replaced_").len(), 1, "{dbs:?}");
    let recover = run(&fake, &p, &["recover"]);
    recover.expect_code(1);
    no_secrets(&recover);
    let dbs = fake.databases();
    assert_eq!(dbs["recipes"], "rows: v1", "{dbs:?}\n{}", recover.all());
    let replaced = named(&fake, "recipes_replaced_");
    assert_eq!(replaced.len(), 1, "{dbs:?}");
    assert_eq!(dbs[&replaced[0]], "rows: v2");
    assert_eq!(dbs.len(), 2, "{dbs:?}");
    let again = run(&fake, &p, &["recover"]);
    again.success();
    assert!(
        again.all().contains("nothing to recover"),
        "{}",
        again.all()
    );
}

#[test]
fn a_successful_run_exports_the_copy_to_the_store_and_deletes_it() {
    let fake = AzureFake::start();
    let (p, container) = project(&fake, &snapshot_pipeline(&fake, ""));
    let out = run(&fake, &p, &["deploy"]);
    out.success();
    no_secrets(&out);
    let copy = check_copy(&fake);
    // The migrated database is the only one left.
    assert_eq!(
        fake.databases(),
        std::collections::BTreeMap::from([("recipes".to_owned(), "rows: v2".to_owned())])
    );
    // Copy, then the export of the copy (not of the live database), then its deletion.
    assert_eq!(
        change_lines(&fake),
        vec![
            format!("PUT {}", sql_path(&copy)),
            format!("POST {}/export", sql_path(&copy)),
            format!("DELETE {}", sql_path(&copy)),
        ]
    );
    // The backup holds the database as it was before the migration.
    let list = backups(&fake, &p);
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap();
    assert_eq!(
        download(&container, &format!("{id}.dump")),
        format!("{BACPAC_HEADER}rows: v1").into_bytes()
    );
    assert!(!blobs(&container).iter().any(|b| b.starts_with(".cutover-")));
}

#[test]
fn a_failing_copy_stops_the_run_before_migrating_and_leaves_nothing() {
    let fake = AzureFake::start();
    let (p, _) = project(&fake, &snapshot_pipeline(&fake, ""));
    fake.fail_copies();
    let out = run(&fake, &p, &["deploy"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    assert!(
        out.all().contains("The database copy failed"),
        "{}",
        out.all()
    );
    no_secrets(&out);
    // The half-made copy was deleted; the migrator never ran.
    assert_eq!(
        fake.databases(),
        std::collections::BTreeMap::from([("recipes".to_owned(), "rows: v1".to_owned())])
    );
    let copy = check_copy(&fake);
    assert_eq!(
        change_lines(&fake),
        vec![
            format!("PUT {}", sql_path(&copy)),
            format!("DELETE {}", sql_path(&copy)),
        ]
    );
    assert!(!p.file("version.txt").exists());
    assert_eq!(backups(&fake, &p), Vec::<Value>::new());
}

#[test]
fn snapshot_names_of_a_long_database_name_fit_azure_sqls_128_characters() {
    let fake = AzureFake::start();
    let long = format!("recipes_{}", "x".repeat(112));
    assert_eq!(long.len(), 120);
    let (p, _) = project(&fake, &snapshot_pipeline_of(&fake, &long, BOOM));
    fake.add_database(&long, "rows: v1");
    let config = replace_once(
        &p.read("deploy.yaml"),
        "database: recipes,",
        &format!("database: {long},"),
    );
    p.write_config(&config);
    let out = run(&fake, &p, &["deploy"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    // The copy and the replaced database were named within the limit (the fake refuses
    // longer names), the database shortened before the suffix.
    let dbs = fake.databases();
    assert_eq!(dbs[&long], "rows: v1", "{dbs:?}\n{}", out.all());
    let replaced: Vec<&String> = dbs.keys().filter(|n| n.contains("_replaced_")).collect();
    assert_eq!(replaced.len(), 1, "{dbs:?}");
    assert_eq!(replaced[0].len(), 128, "{}", replaced[0]);
    assert!(replaced[0].starts_with(&long[..100]), "{}", replaced[0]);
    assert_eq!(dbs[replaced[0]], "rows: v2");
    assert!(!dbs.keys().any(|n| n.contains("_cutover_")), "{dbs:?}");
}

#[test]
fn a_pooled_database_is_copied_into_its_elastic_pool() {
    let fake = AzureFake::start();
    let (p, _) = project(&fake, &snapshot_pipeline(&fake, BOOM));
    fake.pool_database("recipes", "pool-a");
    let pool = fake.database("recipes")["properties"]["elasticPoolId"].clone();
    let out = run(&fake, &p, &["deploy"]);
    assert_eq!(out.code(), 1, "{}", out.all());
    let sent = changes(&fake);
    let (_, _, body) = sent.iter().find(|(m, _, _)| m == "PUT").unwrap();
    assert_eq!(
        body,
        &json!({
            "location": "westeurope",
            "properties": {
                "createMode": "Copy",
                "sourceDatabaseId": sql_path("recipes"),
                "elasticPoolId": pool,
            },
        })
    );
    // The copy, swapped in by the rollback, is the database now: in the same pool, with
    // the content from before the release.
    let swapped = fake.database("recipes");
    assert_eq!(swapped["properties"]["elasticPoolId"], pool);
    assert_eq!(swapped["content"], "rows: v1");
}
