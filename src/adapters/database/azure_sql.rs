//! Azure SQL Database through Azure Resource Manager.
//!
//! There is no SQL Server driver here, so cutover never opens a session: `state` reads
//! whether the database exists, migrations go through the `command` migrator (the plan
//! refuses the others), and SQL and validation steps cannot run. A backup is a `.bacpac`
//! export into a temporary blob of the `azure-blob` backup container (the export needs
//! that container's key or SAS), streamed back through the store's normal upload and then
//! deleted. A restore uploads the backup to a temporary blob, imports it into a new
//! database `<db>_restore_<ts>`, and swaps it in by rename: `<db>` becomes
//! `<db>_replaced_<ts>` and is kept until someone drops it.
//!
//! A snapshot (`backup: { snapshot: true }`) is a database copy on the same server
//! (`PUT .../databases/<db>_cutover_<token>` with `createMode: Copy`), made by Azure and
//! followed to its end; the backup to the store is then an export of the copy. A rollback
//! swaps the copy in by two renames (`<db>` to `<db>_replaced_<token>`, the copy to
//! `<db>`), reading from which of the three names exist where an earlier attempt stopped.
//! Renames need no session ended, so `other_sessions` lists none.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::http::RequestContent;
use azure_storage_blob::models::BlockLookupList;
use futures::TryStreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    BuildError, CheckResult, Commit, Database, DatabaseError, DatabaseState, DumpInfo, Scratch,
    SnapshotNames, Swap,
};
use crate::adapters::azure::arm::{ArmError, LazyArm};
use crate::adapters::azure::{Site, setting};
use crate::adapters::azure_storage::{Container, describe as storage_error};
use crate::adapters::build::Resolve;
use crate::config::deploy_file::AzureSqlConfig;
use crate::migrate::MigrationFile;
use crate::secret::Secret;

pub(crate) const DEFAULT_API_VERSION: &str = "2023-08-01";
/// Longest an export or import may run.
const OPERATION_LIMIT: Duration = Duration::from_secs(6 * 60 * 60);
/// Longest a rename may take.
const RENAME_LIMIT: Duration = Duration::from_secs(10 * 60);
const BLOCK_SIZE: usize = 8 << 20;
/// Longest name Azure SQL accepts for a database.
const MAX_NAME: usize = 128;

/// How the export and import reach the backup container.
#[derive(Clone)]
pub(crate) enum StorageKey {
    /// The account key: `storageKeyType: StorageAccessKey`.
    AccountKey(Secret),
    /// A SAS token: `storageKeyType: SharedAccessKey`.
    Sas(Secret),
}

#[derive(Clone)]
pub(crate) struct AzureSqlDatabase {
    subscription: String,
    resource_group: String,
    server: String,
    database: String,
    admin_login: String,
    admin_password: Secret,
    api_version: String,
    /// Shared with the adapter of a snapshot, so both sign in once.
    arm: Arc<LazyArm>,
    container: Container,
    storage_key: StorageKey,
}

fn unsupported(what: &str) -> DatabaseError {
    DatabaseError::Other(format!(
        "{what} cannot run on an `azure-sql` database: cutover has no SQL Server driver (use a `command` step with sqlcmd, or the `command` migrator for migrations)"
    ))
}

fn arm_error(e: ArmError) -> DatabaseError {
    DatabaseError::Other(e.message)
}

impl AzureSqlDatabase {
    pub(crate) fn new(
        c: &AzureSqlConfig,
        resolver: &dyn Resolve,
        container: Container,
        storage_key: StorageKey,
    ) -> Result<Self, BuildError> {
        let site = Site::read(
            "database `azure-sql`",
            resolver,
            c.subscription.as_ref(),
            &c.resource_group,
        )?;
        let server = resolver.text(&c.server)?.trim().to_owned();
        let database = resolver.text(&c.database)?.trim().to_owned();
        site.check_names(&[("server", Some(&server)), ("database", Some(&database))])?;
        let admin_login = resolver.text(&c.admin_login)?.trim().to_owned();
        let admin_password = resolver.credential(&c.admin_password)?;
        let api_version = setting(resolver, c.api_version.as_ref())?
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
        Ok(Self {
            subscription: site.subscription,
            resource_group: site.resource_group,
            server,
            database,
            admin_login,
            admin_password,
            api_version,
            arm: Arc::new(LazyArm::new(site.auth)),
            container,
            storage_key,
        })
    }

    fn server_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Sql/servers/{}",
            self.subscription, self.resource_group, self.server
        )
    }

    fn database_path(&self, name: &str) -> String {
        format!("{}/databases/{name}", self.server_path())
    }

    /// The database's resource, or `None` when it does not exist.
    async fn read(&self, name: &str) -> Result<Option<Value>, DatabaseError> {
        let arm = self.arm.get().await.map_err(arm_error)?;
        match arm
            .get(
                &format!("reading database `{name}`"),
                &self.database_path(name),
                &self.api_version,
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(arm_error(e)),
        }
    }

    /// The storage fields of an export or import request.
    fn storage_body(&self, blob: &str) -> Value {
        let mut uri = self.container.account.url.clone();
        uri.set_query(None);
        let base = uri.as_str().trim_end_matches('/').to_owned();
        let (kind, key) = match &self.storage_key {
            StorageKey::AccountKey(k) => ("StorageAccessKey", k.expose().trim().to_owned()),
            StorageKey::Sas(s) => (
                "SharedAccessKey",
                format!("?{}", s.expose().trim().trim_start_matches('?')),
            ),
        };
        json!({
            "storageKeyType": kind,
            "storageKey": key,
            "storageUri": format!("{base}/{}/{blob}", self.container.name),
            "administratorLogin": self.admin_login,
            "administratorLoginPassword": self.admin_password.expose(),
            "authenticationType": "Sql",
        })
    }

    async fn delete_blob(&self, blob: &str) {
        if let Err(e) = self.container.client.blob_client(blob).delete(None).await {
            tracing::warn!(
                "{}",
                self.container
                    .error(&format!("cannot delete the temporary blob `{blob}`"), &e)
            );
        }
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), DatabaseError> {
        let arm = self.arm.get().await.map_err(arm_error)?;
        arm.send(
            &format!("renaming database `{from}` to `{to}`"),
            Method::POST,
            &format!("{}/move", self.database_path(from)),
            &self.api_version,
            Some(&json!({ "id": self.database_path(to) })),
            Instant::now() + RENAME_LIMIT,
        )
        .await
        .map_err(arm_error)?;
        Ok(())
    }

    async fn upload(
        &self,
        blob: &str,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), DatabaseError> {
        let io = |what: String| {
            move |source: std::io::Error| DatabaseError::Io {
                what: what.clone(),
                source,
            }
        };
        let blocks = self.container.client.blob_client(blob).block_blob_client();
        let mut ids = Vec::new();
        loop {
            let mut block = Vec::with_capacity(BLOCK_SIZE);
            (&mut *source)
                .take(BLOCK_SIZE as u64)
                .read_to_end(&mut block)
                .await
                .map_err(io("reading the backup".into()))?;
            if block.is_empty() {
                break;
            }
            let id = format!("cutover-{:010}", ids.len()).into_bytes();
            let len = block.len() as u64;
            blocks
                .stage_block(&id, len, bytes::Bytes::from(block).into(), None)
                .await
                .map_err(|e| {
                    DatabaseError::Other(
                        self.container
                            .error(&format!("cannot upload the backup to `{blob}`"), &e),
                    )
                })?;
            ids.push(id);
        }
        let list = RequestContent::try_from(BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        })
        .map_err(|e| DatabaseError::Other(format!("cannot encode the block list: {e}")))?;
        blocks.commit_block_list(list, None).await.map_err(|e| {
            DatabaseError::Other(
                self.container
                    .error(&format!("cannot commit the blob `{blob}`"), &e),
            )
        })?;
        Ok(())
    }

    async fn import_and_swap(
        &self,
        blob: &str,
        stamp: &str,
    ) -> Result<Option<String>, DatabaseError> {
        let current = self.read(&self.database).await?;
        let restored = format!("{}_restore_{stamp}", self.database);
        let replaced = format!("{}_replaced_{stamp}", self.database);
        let mut body = self.storage_body(blob);
        body["databaseName"] = json!(restored);
        // The new database gets the current one's size and tier.
        let sku = current.as_ref().map(|c| &c["sku"]);
        body["edition"] = json!(
            sku.and_then(|s| s["tier"].as_str())
                .unwrap_or("GeneralPurpose")
        );
        body["serviceObjectiveName"] = json!(
            sku.and_then(|s| s["name"].as_str())
                .unwrap_or("GP_S_Gen5_1")
        );
        body["maxSizeBytes"] = json!(
            current
                .as_ref()
                .and_then(|c| c["properties"]["maxSizeBytes"].as_u64())
                .unwrap_or(34_359_738_368)
                .to_string()
        );
        let arm = self.arm.get().await.map_err(arm_error)?;
        arm.send(
            &format!("importing the backup into a new database `{restored}`"),
            Method::POST,
            &format!("{}/import", self.server_path()),
            &self.api_version,
            Some(&body),
            Instant::now() + OPERATION_LIMIT,
        )
        .await
        .map_err(arm_error)?;
        if current.is_none() {
            self.rename(&restored, &self.database).await?;
            return Ok(None);
        }
        self.rename(&self.database, &replaced).await?;
        if let Err(e) = self.rename(&restored, &self.database).await {
            // Put the old one back so the app finds a database under its name.
            let back = self.rename(&replaced, &self.database).await;
            return Err(DatabaseError::Other(format!(
                "{e}; {}",
                match back {
                    Ok(()) => format!(
                        "`{replaced}` was renamed back to `{}`; the imported copy is `{restored}`",
                        self.database
                    ),
                    Err(b) => format!(
                        "renaming `{replaced}` back failed too ({b}): the database is now `{replaced}` and the imported copy `{restored}`"
                    ),
                }
            )));
        }
        Ok(Some(format!(
            "the replaced database is kept as `{replaced}` on server `{}`; drop it when no longer needed: az sql db delete --resource-group {} --server {} --name {replaced}",
            self.server, self.resource_group, self.server
        )))
    }
}

impl AzureSqlDatabase {
    /// Refuses to treat the live database as a snapshot.
    fn not_live(&self, name: &str) -> Result<(), DatabaseError> {
        if name.eq_ignore_ascii_case(&self.database) {
            return Err(DatabaseError::Other(format!(
                "refusing to drop or overwrite `{name}` on server `{}`: it is the database itself, not a snapshot",
                self.server
            )));
        }
        Ok(())
    }

    /// Deletes database `name`, followed to the end; a database that is not there is fine.
    async fn delete(&self, name: &str) -> Result<(), DatabaseError> {
        self.not_live(name)?;
        let arm = self.arm.get().await.map_err(arm_error)?;
        match arm
            .send(
                &format!("deleting database `{name}`"),
                Method::DELETE,
                &self.database_path(name),
                &self.api_version,
                None,
                Instant::now() + RENAME_LIMIT,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status == Some(404) => Ok(()),
            Err(e) => Err(arm_error(e)),
        }
    }

    /// Copies the live database to `name` on the same server: `createMode: Copy` from its
    /// resource id, in its region and with its sku (or into its elastic pool), followed
    /// until Azure has made it.
    async fn copy_to(&self, name: &str) -> Result<(), DatabaseError> {
        let live = self.read(&self.database).await?.ok_or_else(|| {
            DatabaseError::Other(format!(
                "cannot snapshot {}: it does not exist",
                self.describe()
            ))
        })?;
        let source_id = live["id"]
            .as_str()
            .map_or_else(|| self.database_path(&self.database), str::to_owned);
        let mut body = json!({
            "location": live["location"],
            "properties": {
                "createMode": "Copy",
                "sourceDatabaseId": source_id,
            },
        });
        // A database in an elastic pool is copied into the same pool: Azure takes the pool
        // id, and refuses the pool's `ElasticPool` sku without it.
        match live["properties"]["elasticPoolId"].as_str() {
            Some(pool) if !pool.is_empty() => {
                body["properties"]["elasticPoolId"] = json!(pool);
            }
            _ if live["sku"].is_object() => body["sku"] = live["sku"].clone(),
            _ => {}
        }
        let arm = self.arm.get().await.map_err(arm_error)?;
        arm.send(
            &format!("copying database `{}` to `{name}`", self.database),
            Method::PUT,
            &self.database_path(name),
            &self.api_version,
            Some(&body),
            Instant::now() + OPERATION_LIMIT,
        )
        .await
        .map_err(arm_error)?;
        Ok(())
    }

    fn swapped_note(&self, name: &str, replaced: &str) -> String {
        format!(
            "snapshot `{name}` swapped in for `{}`; the database it replaced is kept as `{replaced}` on server `{}`: `cutover backup prune` deletes it, or az sql db delete --resource-group {} --server {} --name {replaced}",
            self.database, self.server, self.resource_group, self.server
        )
    }

    /// Renames the live database to `replaced` and `name` into its place; when the second
    /// rename fails, the first is undone so the app finds its database again.
    async fn rename_both(&self, name: &str, replaced: &str) -> Result<(), DatabaseError> {
        self.rename(&self.database, replaced).await?;
        super::swap_crash_point();
        if let Err(e) = self.rename(name, &self.database).await {
            let back = self.rename(replaced, &self.database).await;
            return Err(DatabaseError::Other(format!(
                "{e}; {}",
                match back {
                    Ok(()) => format!(
                        "`{replaced}` was renamed back to `{}`; the snapshot is still `{name}`",
                        self.database
                    ),
                    Err(b) => format!(
                        "renaming `{replaced}` back failed too ({b}): the database is now `{replaced}` and the snapshot `{name}`"
                    ),
                }
            )));
        }
        Ok(())
    }
}

/// `base` with `suffix`, `base` shortened so the whole fits Azure SQL's name length.
fn with_suffix(base: &str, suffix: &str) -> String {
    let mut end = base.len().min(MAX_NAME.saturating_sub(suffix.len()));
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &base[..end])
}

fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%d%H%M%S").to_string()
}

#[async_trait]
impl Database for AzureSqlDatabase {
    // The bacpac is uploaded whole before the import starts.
    fn restore_is_all_or_nothing(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "azure-sql"
    }

    fn describe(&self) -> String {
        format!(
            "Azure SQL database `{}` on server `{}` (resource group `{}`)",
            self.database, self.server, self.resource_group
        )
    }

    fn connection_url(&self) -> Secret {
        Secret::new(format!(
            "Server=tcp:{}.database.windows.net,1433;Initial Catalog={};User ID={};Password={};Encrypt=True;",
            self.server,
            self.database,
            self.admin_login,
            self.admin_password.expose()
        ))
    }

    async fn state(&self) -> Result<DatabaseState, DatabaseError> {
        Ok(DatabaseState {
            exists: self.read(&self.database).await?.is_some(),
            ..DatabaseState::default()
        })
    }

    async fn apply(
        &self,
        _migration: &MigrationFile,
        _commit: Commit,
    ) -> Result<Duration, DatabaseError> {
        Err(unsupported("cutover's own migrations"))
    }

    async fn revert(&self, _migration: &MigrationFile) -> Result<(), DatabaseError> {
        Err(unsupported("cutover's own migrations"))
    }

    async fn execute(&self, _sql: &str) -> Result<u64, DatabaseError> {
        Err(unsupported("SQL"))
    }

    async fn issues(&self, _sql: &str) -> Result<CheckResult, DatabaseError> {
        Err(unsupported("a validation query"))
    }

    async fn dump(
        &self,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<DumpInfo, DatabaseError> {
        let blob = format!(
            ".cutover-export-{}-{}.bacpac",
            self.database,
            uuid::Uuid::new_v4()
        );
        let arm = self.arm.get().await.map_err(arm_error)?;
        let exported = arm
            .send(
                &format!("exporting database `{}`", self.database),
                Method::POST,
                &format!("{}/export", self.database_path(&self.database)),
                &self.api_version,
                Some(&self.storage_body(&blob)),
                Instant::now() + OPERATION_LIMIT,
            )
            .await;
        if let Err(e) = exported {
            // A failed export may have left part of a file behind.
            self.delete_blob(&blob).await;
            return Err(arm_error(e));
        }
        let copied = async {
            let response = self
                .container
                .client
                .blob_client(&blob)
                .download(None)
                .await
                .map_err(|e| {
                    DatabaseError::Other(
                        self.container
                            .error(&format!("cannot read the export `{blob}`"), &e),
                    )
                })?;
            let mut body = response.body.map_err(|e| {
                std::io::Error::other(format!("reading the export: {}", storage_error(&e)))
            });
            while let Some(chunk) = body.try_next().await.map_err(|source| DatabaseError::Io {
                what: "reading the export".into(),
                source,
            })? {
                sink.write_all(&chunk)
                    .await
                    .map_err(|source| DatabaseError::Io {
                        what: "storing the export".into(),
                        source,
                    })?;
            }
            Ok::<(), DatabaseError>(())
        }
        .await;
        self.delete_blob(&blob).await;
        copied?;
        Ok(DumpInfo {
            format: "bacpac".into(),
            server_version: "Azure SQL Database".into(),
            tool: format!("Microsoft.Sql export (api-version {})", self.api_version),
        })
    }

    async fn restore(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), DatabaseError> {
        self.restore_with_note(source).await.map(|_| ())
    }

    async fn restore_with_note(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<Option<String>, DatabaseError> {
        let stamp = stamp();
        let blob = format!(".cutover-import-{}-{stamp}.bacpac", self.database);
        let result = match self.upload(&blob, source).await {
            Ok(()) => self.import_and_swap(&blob, &stamp).await,
            Err(e) => Err(e),
        };
        self.delete_blob(&blob).await;
        result
    }

    async fn resolve_dirty(&self, _version: i64, _applied: bool) -> Result<bool, DatabaseError> {
        Err(unsupported("cutover's own migration history"))
    }

    async fn ping(&self) -> Result<(), DatabaseError> {
        match self.read(&self.database).await? {
            Some(_) => Ok(()),
            None => Err(DatabaseError::Other(format!(
                "{} does not exist",
                self.describe()
            ))),
        }
    }

    async fn schema(&self) -> Result<String, DatabaseError> {
        Err(unsupported("reading the schema"))
    }

    async fn scratch(&self) -> Result<Scratch, DatabaseError> {
        Err(unsupported("a scratch database"))
    }

    fn snapshot_support(&self) -> Result<(), String> {
        Ok(())
    }

    fn snapshot_names(&self, token: &str) -> SnapshotNames {
        SnapshotNames {
            snapshot: with_suffix(&self.database, &format!("_cutover_{token}")),
            replaced: with_suffix(&self.database, &format!("_replaced_{token}")),
        }
    }

    async fn snapshot(&self, name: &str) -> Result<(), DatabaseError> {
        self.not_live(name)?;
        // A copy left by an earlier attempt of this step is not trusted to be whole.
        if self.read(name).await?.is_some() {
            self.delete(name).await?;
        }
        if let Err(e) = self.copy_to(name).await {
            // A copy that failed part-way may have left a database behind.
            return Err(match self.delete(name).await {
                Ok(()) => e,
                Err(d) => DatabaseError::Other(format!(
                    "{e}; deleting the partial copy `{name}` failed too ({d}): delete it with az sql db delete --resource-group {} --server {} --name {name}",
                    self.resource_group, self.server
                )),
            });
        }
        Ok(())
    }

    fn snapshot_database(&self, name: &str) -> Result<Box<dyn Database>, DatabaseError> {
        self.not_live(name)?;
        Ok(Box::new(Self {
            database: name.to_owned(),
            ..self.clone()
        }))
    }

    async fn swap_in(&self, name: &str, replaced: &str) -> Result<Swap, DatabaseError> {
        let live = self.read(&self.database).await?.is_some();
        let snapshot = self.read(name).await?.is_some();
        let kept = self.read(replaced).await?.is_some();
        match (live, snapshot, kept) {
            // Already swapped in, by an earlier attempt that died before it said so.
            (true, false, true) => {}
            (true, false, false) => return Ok(Swap::Gone),
            (true, true, false) => self.rename_both(name, replaced).await?,
            // Killed between the two renames: the live name is free, finish.
            (false, true, true) => self.rename(name, &self.database).await?,
            (live, snapshot, kept) => {
                let state = |there: bool| if there { "exists" } else { "is missing" };
                return Err(DatabaseError::Other(format!(
                    "cannot tell where the swap of `{name}` for `{}` stands: `{}` {}, `{name}` {}, `{replaced}` {}",
                    self.database,
                    self.database,
                    state(live),
                    state(snapshot),
                    state(kept),
                )));
            }
        }
        Ok(Swap::Done {
            note: self.swapped_note(name, replaced),
        })
    }

    async fn drop_snapshot(&self, name: &str) -> Result<bool, DatabaseError> {
        self.not_live(name)?;
        if self.read(name).await?.is_none() {
            return Ok(false);
        }
        self.delete(name).await?;
        Ok(true)
    }
}
