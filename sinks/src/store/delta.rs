//! Each table of the history is a Delta Lake table at `<data_dir>/<table>/`: the
//! Parquet files stay where the layout puts them, and `_delta_log/` says which of them
//! make up the table. Every change of the file set is one commit: a flush appends
//! (`WRITE`), a merge swaps inputs for its output (`OPTIMIZE`, `dataChange = false`),
//! retention removes expired partitions (`DELETE`), and vacuum deletes the files no
//! version still needs once `storage.vacuum_after` has passed. An outside reader
//! (DuckDB's `delta_scan`, Trino, `deltalake`) reads one version and so never counts a
//! merged file beside its inputs, nor loses a file under its feet.
//!
//! A flush commits with a transaction identifier (`txn`): the writer's id and the
//! write-ahead log segment it sealed. Recovery asks each table for the last segment it
//! committed and replays only what came after, so a crash between a commit and the
//! truncation of the log neither loses nor doubles a row.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deltalake_core::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake_core::kernel::transaction::{
    CommitBuilder, CommitData, CommitProperties, TableReference, TransactionError,
};
use deltalake_core::kernel::{
    Action, Add, DataType as DeltaType, MetadataExt, PrimitiveType, Remove, StructField,
    StructType, Transaction,
};
use deltalake_core::logstore::CommitOrBytes;
use deltalake_core::operations::vacuum::VacuumMode;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use parquet::basic::{LogicalType, TimeUnit};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use swarmscope_processors::schema::Table;

use super::layout::{self, StoredFile};
use super::remote::Remote;
use crate::{Error, Result};

/// A checkpoint every this many commits (`delta.checkpointInterval`).
const CHECKPOINT_INTERVAL: u64 = 50;

/// How long a table keeps what only its older versions need.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Retention {
    /// Commits and checkpoints older than this are deleted once a newer checkpoint
    /// stands in for them (`delta.logRetentionDuration`; `storage.delta_log_retention`).
    pub log: Duration,
    /// A removed file is listed in checkpoints (a tombstone) this long
    /// (`delta.deletedFileRetentionDuration`; `storage.vacuum_after`, after which
    /// vacuum deletes it).
    pub deleted_files: Duration,
}

impl Retention {
    /// The table properties `table` carries in this store.
    ///
    /// `delta.dataSkippingStatsColumns` names the one column whose statistics the
    /// store writes (the time column, see [`stats`]). Without it, a reader's (and
    /// delta-rs's own, after every commit) schema of file statistics holds the table's
    /// first 32 columns, and the statistics of every file in the table are parsed into
    /// it again for each new snapshot: work that grows with the file count and finds
    /// nothing but nulls. Another writer (Spark, delta-rs) collects the same column.
    fn properties(&self, table: Table) -> [(&'static str, String); 4] {
        let interval = |d: Duration| format!("interval {} seconds", d.as_secs());
        [
            ("delta.checkpointInterval", CHECKPOINT_INTERVAL.to_string()),
            (
                "delta.dataSkippingStatsColumns",
                table.time_column().to_owned(),
            ),
            ("delta.logRetentionDuration", interval(self.log)),
            (
                "delta.deletedFileRetentionDuration",
                interval(self.deleted_files),
            ),
        ]
    }
}

/// The partition columns, as users of the Hive layout know them.
const PARTITION_COLUMNS: [&str; 2] = ["date", "hour"];

impl From<DeltaTableError> for Error {
    fn from(e: DeltaTableError) -> Error {
        Error::Delta(e.to_string())
    }
}

/// One table's Delta log, and the table's files as of its newest version.
///
/// A flush's append is committed by writing its log entry alone (see
/// [`DeltaLog::append`]): the files it adds join [`DeltaLog::files`], and delta-rs's
/// snapshot (`delta`) is brought up to date only when something needs it, a checkpoint
/// every [`CHECKPOINT_INTERVAL`] commits or a commit of another kind. delta-rs advances
/// its snapshot after every commit it makes by replaying every file of the table into
/// it, work that grows with the table and was done several times a second under load.
pub(super) struct DeltaLog {
    table: Table,
    dir: PathBuf,
    delta: DeltaTable,
    /// `None` for a reader, which never commits.
    retention: Option<Retention>,
    /// The newest version: this process's last commit (a writer), or what the last
    /// [`DeltaLog::refresh`] read (a reader). `delta`'s snapshot may be older.
    version: u64,
    /// The table's files at `version`, oldest partition first.
    files: Vec<StoredFile>,
}

impl DeltaLog {
    /// Opens the Delta table of `table` under `data_dir`, or under `remote` when the
    /// tables live on object storage (`data_dir` then holds the staged files). A
    /// writer (`retention` given) creates a missing one, adding the Parquet files
    /// already there (a data directory from before the store kept Delta logs is
    /// converted in place, nothing rewritten), and brings an existing one's schema and
    /// properties up to this version's. For a reader, a missing table is `None`.
    pub async fn open(
        data_dir: &Path,
        remote: Option<&Remote>,
        table: Table,
        retention: Option<Retention>,
    ) -> Result<Option<DeltaLog>> {
        let create = retention.is_some();
        let dir = data_dir.join(table.name());
        let (mut delta, has_log) = match remote {
            Some(remote) => {
                let url = remote.table_url(table)?;
                let delta = DeltaTableBuilder::from_url(url.clone())?
                    .with_storage_backend(remote.store(), url)
                    .build()?;
                let has_log = remote
                    .has_objects(&remote.object(table, "_delta_log"))
                    .await?;
                if !has_log && !create {
                    return Ok(None);
                }
                (delta, has_log)
            }
            None => {
                let has_log = dir.join("_delta_log").is_dir();
                if !has_log && !create {
                    return Ok(None);
                }
                std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
                let url =
                    url::Url::from_directory_path(dir.canonicalize().map_err(Error::io(&dir))?)
                        .map_err(|()| {
                            Error::Delta(format!("{}: not an absolute path", dir.display()))
                        })?;
                (DeltaTableBuilder::from_url(url)?.build()?, has_log)
            }
        };
        if has_log {
            match delta.load().await {
                Ok(()) => {
                    let mut log = DeltaLog::new(table, dir, delta, retention)?;
                    if create {
                        log.evolve_schema().await?;
                        log.align_properties().await?;
                    }
                    return Ok(Some(log));
                }
                // `_delta_log/` without a first commit (a crash while the table was
                // created), or no log at all on object storage. It is created now.
                Err(DeltaTableError::NotATable(_)) if create => {}
                Err(DeltaTableError::NotATable(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        // Plain Parquet files to convert are on local disk only.
        let existing = match remote {
            Some(_) => Vec::new(),
            None => layout::scan_table(data_dir, table, true)?,
        };
        let adds = existing
            .iter()
            .map(|f| add_action(&dir, table, f, true))
            .collect::<Result<Vec<_>>>()?;
        if !adds.is_empty() {
            tracing::info!(
                table = table.name(),
                files = adds.len(),
                "converting the table's Parquet files to a Delta table in place"
            );
        }
        // Only a writer creates a table.
        let Some(properties) = retention.map(|r| r.properties(table)) else {
            return Ok(None);
        };
        let delta = delta
            .create()
            .with_table_name(table.name())
            .with_columns(delta_columns(table)?)
            .with_partition_columns(PARTITION_COLUMNS)
            .with_configuration(properties.map(|(k, v)| (k, Some(v))))
            .with_actions(adds.into_iter().map(Action::Add))
            .with_save_mode(SaveMode::Ignore)
            .await?;
        Ok(Some(DeltaLog::new(table, dir, delta, retention)?))
    }

    fn new(
        table: Table,
        dir: PathBuf,
        delta: DeltaTable,
        retention: Option<Retention>,
    ) -> Result<DeltaLog> {
        let mut log = DeltaLog {
            table,
            dir,
            delta,
            retention,
            version: 0,
            files: Vec::new(),
        };
        log.adopt_snapshot()?;
        Ok(log)
    }

    /// Takes the version and the files of delta-rs's snapshot, which has just been
    /// brought to the newest version.
    fn adopt_snapshot(&mut self) -> Result<()> {
        self.version = self.delta.snapshot()?.version();
        self.files = self.snapshot_files()?;
        Ok(())
    }

    /// Brings delta-rs's snapshot up to [`DeltaLog::version`], for what reads it.
    async fn catch_up(&mut self) -> Result<()> {
        if self.delta.version() < Some(self.version) {
            self.delta.update_incremental(Some(self.version)).await?;
        }
        Ok(())
    }

    /// Commits this store's table properties (checkpoint interval, retentions) when
    /// the log's differ: a table created by an earlier version, or under other
    /// settings.
    async fn align_properties(&mut self) -> Result<()> {
        let Some(retention) = self.retention else {
            return Ok(());
        };
        let snapshot = self.delta.snapshot()?;
        let current = snapshot.metadata().configuration();
        let changed: Vec<(&str, String)> = retention
            .properties(self.table)
            .into_iter()
            .filter(|(k, v)| current.get(*k) != Some(v))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        tracing::info!(
            table = self.table.name(),
            properties = ?changed,
            "setting the table's properties to this store's"
        );
        let mut metadata = snapshot.metadata().clone();
        for (k, v) in &changed {
            metadata = metadata
                .add_config_key((*k).to_owned(), v.clone())
                .map_err(|e| Error::Delta(format!("{}: {k}: {e}", self.table.name())))?;
        }
        let operation = DeltaOperation::SetTableProperties {
            properties: changed
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        };
        self.commit(vec![Action::Metadata(metadata)], operation, Vec::new())
            .await
    }

    /// Commits the table's schema of this version when the log's is older: columns a
    /// newer version added are added to the table (older files read them as null).
    async fn evolve_schema(&mut self) -> Result<()> {
        let wanted = StructType::try_new(delta_columns(self.table)?)
            .map_err(|e| Error::Delta(format!("{}: schema: {e}", self.table.name())))?;
        let snapshot = self.delta.snapshot()?;
        let current = snapshot.schema();
        if current.as_ref() == &wanted {
            return Ok(());
        }
        let added: Vec<StructField> = wanted
            .fields()
            .filter(|f| current.field(f.name()).is_none())
            .cloned()
            .collect();
        tracing::info!(
            table = self.table.name(),
            added = added.len(),
            "updating the table's schema to this version's"
        );
        let metadata = snapshot
            .metadata()
            .clone()
            .with_schema(&wanted)
            .map_err(|e| Error::Delta(format!("{}: schema: {e}", self.table.name())))?;
        let operation = DeltaOperation::AddColumn { fields: added };
        self.commit(vec![Action::Metadata(metadata)], operation, Vec::new())
            .await
    }

    /// The table's files, oldest partition first.
    pub fn files(&self) -> &[StoredFile] {
        &self.files
    }

    /// The files of delta-rs's snapshot, oldest partition first.
    fn snapshot_files(&self) -> Result<Vec<StoredFile>> {
        let snapshot = self.delta.snapshot()?;
        let mut files = snapshot
            .snapshot()
            .try_log_data()?
            .iter()
            .map(|view| {
                let relative = view.path().into_owned();
                let hour = layout::hour_of_relative_path(&relative).ok_or_else(|| {
                    Error::Delta(format!(
                        "{}: file {relative} is not in a date=/hour= partition",
                        self.table.name()
                    ))
                })?;
                Ok(StoredFile {
                    path: self.dir.join(relative),
                    hour,
                    size: view.size().max(0) as u64,
                    modified_ms: view.modification_time(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        files.sort_by(|a, b| (a.hour, &a.path).cmp(&(b.hour, &b.path)));
        Ok(files)
    }

    /// `file`'s path from the table's root (`date=.../hour=.../<file>`).
    pub fn relative(&self, file: &StoredFile) -> String {
        relative_path(&self.dir, file)
    }

    /// The last flush sequence `app_id` committed to this table.
    pub async fn committed_sequence(&mut self, app_id: &str) -> Result<Option<u64>> {
        self.catch_up().await?;
        let snapshot = self.delta.snapshot()?;
        let version = snapshot
            .transaction_version(self.delta.log_store().as_ref(), app_id)
            .await?;
        Ok(version.map(|v| v.max(0) as u64))
    }

    /// Commits a flush's new files, marked as flush `sequence` of `app_id`.
    ///
    /// The commit is the log entry delta-rs would write (the same `commitInfo`, `add`
    /// and `txn` actions), written as version [`DeltaLog::version`] + 1 if no version
    /// of that number exists yet, as delta-rs writes it: an append conflicts with
    /// nothing this process could have missed. If another writer took that version, the
    /// table is read again and delta-rs commits, checking for conflicts.
    pub async fn append(
        &mut self,
        files: &[StoredFile],
        app_id: &str,
        sequence: u64,
    ) -> Result<()> {
        let adds = files
            .iter()
            .map(|f| add_action(&self.dir, self.table, f, true))
            .collect::<Result<Vec<_>>>()?;
        let operation = || DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(PARTITION_COLUMNS.map(String::from).to_vec()),
            predicate: None,
        };
        let txn = Transaction::new(app_id, sequence as i64);
        let actions = || adds.iter().cloned().map(Action::Add).collect::<Vec<_>>();
        // Stores that commit by renaming a temporary file (not this one's local disk
        // or S3, which write a version only if it does not exist) go through delta-rs.
        let log_store = self.delta.log_store();
        if log_store.name() != "DefaultLogStore" {
            return self.commit(actions(), operation(), vec![txn]).await;
        }
        let entry = CommitData::new(actions(), operation(), HashMap::new(), vec![txn.clone()])
            .get_bytes()
            .map_err(DeltaTableError::from)?;
        let version = self.version + 1;
        let written = log_store
            .write_commit_entry(
                version,
                CommitOrBytes::LogBytes(entry),
                uuid::Uuid::new_v4(),
            )
            .await;
        match written {
            Ok(()) => {}
            Err(TransactionError::VersionAlreadyExists(_)) => {
                tracing::warn!(
                    table = self.table.name(),
                    version,
                    "another writer committed to the table; reading it again"
                );
                self.refresh().await?;
                return self.commit(actions(), operation(), vec![txn]).await;
            }
            Err(e) => return Err(DeltaTableError::from(e).into()),
        }
        self.version = version;
        self.files
            .extend(adds.iter().zip(files).map(|(add, file)| StoredFile {
                path: file.path.clone(),
                hour: file.hour,
                size: add.size.max(0) as u64,
                modified_ms: add.modification_time,
            }));
        self.files
            .sort_by(|a, b| (a.hour, &a.path).cmp(&(b.hour, &b.path)));
        if (version + 1).is_multiple_of(CHECKPOINT_INTERVAL) {
            self.checkpoint().await;
        }
        Ok(())
    }

    /// Writes a checkpoint of the newest version, as delta-rs does after its commits
    /// (then cleans up the log). A failure is logged: the commit stands, and readers
    /// replay a few more commits until the next checkpoint.
    async fn checkpoint(&mut self) {
        let written = match self.catch_up().await {
            Ok(()) => deltalake_core::checkpoints::create_checkpoint(&self.delta, None)
                .await
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => self.clean_up_log(self.version).await,
            Err(e) => {
                tracing::warn!(table = self.table.name(), version = self.version, error = %e, "the checkpoint failed")
            }
        }
    }

    /// Commits a merge: `inputs` leave the table and `output` takes their rows. If an
    /// input has left the table meanwhile (retention), nothing is committed and `false`
    /// comes back: the merge is void.
    pub async fn replace(
        &mut self,
        inputs: &[StoredFile],
        output: &StoredFile,
        target_size: u64,
    ) -> Result<bool> {
        let current = self.files();
        if !inputs.iter().all(|f| current.contains(f)) {
            return Ok(false);
        }
        let now = layout::now_ms();
        let mut actions = inputs
            .iter()
            .map(|f| Action::Remove(remove_action(&self.dir, f, now, false)))
            .collect::<Vec<_>>();
        actions.push(Action::Add(add_action(
            &self.dir, self.table, output, false,
        )?));
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: target_size as i64,
        };
        self.commit(actions, operation, Vec::new()).await?;
        Ok(true)
    }

    /// Commits the removal of `files`, the partitions before hour `cutoff`.
    pub async fn expire(&mut self, files: &[StoredFile], cutoff: i64) -> Result<()> {
        let predicate = format!("{} < '{}'", self.table.time_column(), hour_rfc3339(cutoff));
        self.remove(files, predicate).await
    }

    /// Commits the removal of `files`, which cannot be read (they go to quarantine).
    pub async fn remove_unreadable(&mut self, files: &[StoredFile]) -> Result<()> {
        self.remove(files, "unreadable files, moved to _quarantine".to_owned())
            .await
    }

    async fn remove(&mut self, files: &[StoredFile], predicate: String) -> Result<()> {
        let now = layout::now_ms();
        let actions = files
            .iter()
            .map(|f| Action::Remove(remove_action(&self.dir, f, now, true)))
            .collect();
        let operation = DeltaOperation::Delete {
            predicate: Some(predicate),
        };
        self.commit(actions, operation, Vec::new()).await
    }

    /// Commits through delta-rs, from its snapshot brought up to date, which the
    /// commit then advances.
    async fn commit(
        &mut self,
        actions: Vec<Action>,
        operation: DeltaOperation,
        txns: Vec<Transaction>,
    ) -> Result<()> {
        self.catch_up().await?;
        let snapshot = self.delta.snapshot()?;
        // A checkpoint every `delta.checkpointInterval` commits. The log's expired
        // entries are cleaned up after a checkpoint only, not by every commit as
        // delta-rs would: each cleanup lists the whole log.
        let properties = CommitProperties::default()
            .with_application_transactions(txns)
            .with_cleanup_expired_logs(Some(false));
        let finalized = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(
                Some(snapshot as &dyn TableReference),
                self.delta.log_store(),
                operation,
            )
            .await?;
        self.delta.state = Some(finalized.snapshot());
        self.adopt_snapshot()?;
        if finalized.metrics.new_checkpoint_created {
            self.clean_up_log(finalized.version()).await;
        }
        Ok(())
    }

    /// Deletes the log's commits and checkpoints older than the log retention that
    /// the newest checkpoint old enough stands in for (Delta's expired-log cleanup).
    /// A reader of the table's newest versions needs none of them. A failure is
    /// logged: the commit stands, and the next checkpoint tries again.
    async fn clean_up_log(&self, version: u64) {
        let Some(retention) = self.retention else {
            return;
        };
        let log_retention = i64::try_from(retention.log.as_millis()).unwrap_or(i64::MAX);
        let cutoff = layout::now_ms().saturating_sub(log_retention);
        let cleaned = deltalake_core::protocol::checkpoints::cleanup_expired_logs_for(
            version,
            self.delta.log_store().as_ref(),
            cutoff,
            None,
        )
        .await;
        match cleaned {
            Ok(n) => tracing::debug!(table = self.table.name(), deleted = n, "log cleaned up"),
            Err(e) => {
                tracing::warn!(table = self.table.name(), error = %e, "the log's cleanup failed")
            }
        }
    }

    /// Deletes the files no version of the last `retain` still references, those left
    /// by a crash between an upload and its commit among them. Returns how many.
    pub async fn vacuum(&mut self, retain: Duration) -> Result<usize> {
        let retain = chrono::Duration::from_std(retain)
            .map_err(|e| Error::Delta(format!("storage.vacuum_after: {e}")))?;
        self.catch_up().await?;
        let (delta, metrics) = self
            .delta
            .clone()
            .vacuum()
            .with_retention_period(retain)
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .await?;
        self.delta = delta;
        self.adopt_snapshot()?;
        Ok(metrics.files_deleted.len())
    }

    /// Advances to the table's newest version (a reader of a table another process
    /// writes, or a writer after a failed commit), reading only the commits since.
    pub async fn refresh(&mut self) -> Result<()> {
        self.delta.update_incremental(None).await?;
        self.adopt_snapshot()
    }
}

/// The Delta schema of `table`: its columns, timestamps as Delta's `timestamp`, and
/// the partition columns `date` and `hour`.
pub(super) fn delta_columns(table: Table) -> Result<Vec<StructField>> {
    let schema = table.stored_schema();
    let stored = StructType::try_from_arrow(schema.as_ref())
        .map_err(|e| Error::Delta(format!("{}: schema: {e}", table.name())))?;
    let mut columns: Vec<StructField> = stored.fields().cloned().collect();
    columns.push(StructField::new(
        "date",
        DeltaType::Primitive(PrimitiveType::Date),
        true,
    ));
    columns.push(StructField::new(
        "hour",
        DeltaType::Primitive(PrimitiveType::Integer),
        true,
    ));
    Ok(columns)
}

/// `file`'s path from the table's root, with `/` separators.
pub(super) fn relative_path(table_dir: &Path, file: &StoredFile) -> String {
    let relative = file.path.strip_prefix(table_dir).unwrap_or(&file.path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn partition_values(hour: i64) -> HashMap<String, Option<String>> {
    let (date, hour) = layout::partition_values(hour);
    HashMap::from([
        ("date".to_owned(), Some(date)),
        ("hour".to_owned(), Some(hour.to_string())),
    ])
}

/// The `add` action of a written file, its statistics read from its footer.
fn add_action(table_dir: &Path, table: Table, file: &StoredFile, data_change: bool) -> Result<Add> {
    let handle = File::open(&file.path).map_err(Error::io(&file.path))?;
    let on_disk = handle.metadata().map_err(Error::io(&file.path))?;
    let size = on_disk.len();
    let modification_time = layout::modified_ms(&on_disk);
    let metadata = ParquetMetaDataReader::new().parse_and_finish(&handle)?;
    Ok(Add {
        path: relative_path(table_dir, file),
        partition_values: partition_values(file.hour),
        size: size as i64,
        modification_time,
        data_change,
        stats: Some(stats(table, &metadata).to_string()),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    })
}

/// The `add` action of `path`, a file of hour `hour` under `table_dir`, for tests
/// that commit as another writer would.
#[cfg(test)]
pub(super) fn tests_support_add(table_dir: &Path, path: &Path, hour: i64) -> Add {
    let file = StoredFile {
        path: path.to_owned(),
        hour,
        size: 0,
        modified_ms: 0,
    };
    add_action(table_dir, Table::SPANS, &file, true).expect("an add")
}

fn remove_action(table_dir: &Path, file: &StoredFile, now: i64, data_change: bool) -> Remove {
    Remove {
        path: relative_path(table_dir, file),
        data_change,
        deletion_timestamp: Some(now),
        extended_file_metadata: Some(true),
        partition_values: Some(partition_values(file.hour)),
        size: Some(file.size as i64),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
    }
}

/// The file statistics readers prune with: the row count, and the range and null count
/// of the table's time column, in Delta's microseconds (a file of nanoseconds, from
/// before, has its minimum rounded down and its maximum up, so the range holds them all).
fn stats(table: Table, metadata: &ParquetMetaData) -> serde_json::Value {
    let rows = metadata.file_metadata().num_rows();
    let column = table.time_column();
    let index = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == column);
    // Files of this version hold microseconds; a converted directory's, nanoseconds.
    let descriptor = index.map(|i| metadata.file_metadata().schema_descr().column(i));
    let units_per_micro = match descriptor.as_ref().and_then(|c| c.logical_type_ref()) {
        Some(LogicalType::Timestamp(t)) if t.unit == TimeUnit::NANOS => 1000,
        Some(LogicalType::Timestamp(t)) if t.unit == TimeUnit::MILLIS => -1000,
        _ => 1,
    };
    let mut min = None::<i64>;
    let mut max = None::<i64>;
    let mut nulls = 0u64;
    let mut complete = index.is_some();
    for rg in metadata.row_groups() {
        let Some(Statistics::Int64(s)) = index.and_then(|i| rg.column(i).statistics()) else {
            complete = false;
            break;
        };
        let (Some(lo), Some(hi), Some(n)) = (s.min_opt(), s.max_opt(), s.null_count_opt()) else {
            // A row group of nulls only has no range; its nulls still count.
            if s.null_count_opt()
                .is_some_and(|n| n as i64 == rg.num_rows())
            {
                nulls += rg.num_rows() as u64;
                continue;
            }
            complete = false;
            break;
        };
        min = Some(min.map_or(*lo, |m| m.min(*lo)));
        max = Some(max.map_or(*hi, |m| m.max(*hi)));
        nulls += n;
    }
    let mut stats = serde_json::json!({ "numRecords": rows });
    if complete {
        stats["nullCount"] = serde_json::json!({ column: nulls });
        if let (Some(lo), Some(hi)) = (min, max) {
            let (lo, hi) = match units_per_micro {
                n if n > 1 => (
                    lo.div_euclid(n),
                    hi.div_euclid(n) + i64::from(hi.rem_euclid(n) != 0),
                ),
                n if n < 0 => (lo.saturating_mul(-n), hi.saturating_mul(-n)),
                _ => (lo, hi),
            };
            stats["minValues"] = serde_json::json!({ column: micros_rfc3339(lo) });
            stats["maxValues"] = serde_json::json!({ column: micros_rfc3339(hi) });
        }
    }
    stats
}

fn micros_rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn hour_rfc3339(hour: i64) -> String {
    micros_rfc3339(hour.saturating_mul(3_600_000_000))
}
