//! The log writer: the single owner of the write-ahead log and of admission into the
//! tables' buffers, on a thread of its own.
//!
//! [`ParquetStore::append`] encodes a batch and the rows derived from it as one record
//! and hands it over; the thread appends every record that arrived meanwhile, syncs
//! once for the group (`storage.wal_fsync`), moves the batches into the buffers, and
//! answers each sender. A flush asks it to seal the segment and hand over the buffers
//! ([`Command::Rotate`]), so no append lands between the two.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use bytes::Bytes;
use swarmscope_processors::schema::Table;
use tokio::sync::oneshot;

use super::{lock, lock_state, wal, Inner, ParquetStore, WalFsync};
use crate::{frame, Error, Result};

/// Every table's buffer, handed from the log writer to a flush.
pub(super) struct Taken {
    pub sealed_segment: u64,
    pub tables: Vec<(Table, Vec<RecordBatch>)>,
}

pub(super) enum Command {
    Append {
        batches: Vec<(Table, RecordBatch)>,
        record: frame::Record,
        done: oneshot::Sender<Result<()>>,
    },
    Rotate {
        done: oneshot::Sender<Result<Taken>>,
    },
}

/// The way to the log writer thread, and the thread to join on close.
pub(super) struct LogHandle {
    sender: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl LogHandle {
    pub(super) fn new() -> (LogHandle, mpsc::Receiver<Command>) {
        let (sender, receiver) = mpsc::channel();
        let handle = LogHandle {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(None),
        };
        (handle, receiver)
    }

    pub(super) fn send(&self, command: Command) -> Result<()> {
        lock(&self.sender)
            .as_ref()
            .ok_or(Error::Closed)?
            .send(command)
            .map_err(|_| Error::Closed)
    }
}

/// Starts the log writer thread of `inner`'s log.
pub(super) fn start(
    inner: &Arc<Inner>,
    log: wal::Wal,
    commands: mpsc::Receiver<Command>,
) -> Result<()> {
    let weak = Arc::downgrade(inner);
    let thread = std::thread::Builder::new()
        .name("swarmscope-wal".into())
        .spawn(move || log_writer(weak, log, commands))
        .map_err(|e| Error::Task {
            task: "log writer",
            message: format!("cannot start: {e}"),
        })?;
    if let Some(handle) = &inner.log {
        *lock(&handle.thread) = Some(thread);
    }
    Ok(())
}

impl ParquetStore {
    /// Accepts a batch of `table`; see [`ParquetStore::append_all`].
    pub async fn append(&self, table: Table, batch: RecordBatch) -> Result<()> {
        self.append_all(vec![(table, batch)]).await
    }

    /// Accepts batches (a batch and the rows derived from it) as one record: all or
    /// none. When this returns `Ok`, the rows are in the write-ahead log (synced as
    /// `storage.wal_fsync` says) and visible to queries. `Err(Backpressure)` means
    /// nothing was taken; the client should retry.
    pub async fn append_all(&self, batches: Vec<(Table, RecordBatch)>) -> Result<()> {
        self.append_record(batches).await.map(drop)
    }

    /// [`ParquetStore::append_all`], answering with the record the log appended (none
    /// when every batch was empty), for the sinks' queues to append as it is.
    pub async fn append_record(
        &self,
        batches: Vec<(Table, RecordBatch)>,
    ) -> Result<Option<frame::Record>> {
        self.append_with(batches, |batches| {
            frame::Record::encode(&batches.iter().map(|(t, b)| (*t, b)).collect::<Vec<_>>())
        })
        .await
    }

    /// [`ParquetStore::append_all`] of the spans converted from the trace export
    /// `request` (protobuf, by [`spans_from_protobuf`]), first, and the rows derived
    /// from them: the log keeps the request as it was received, about half the bytes
    /// of its spans in Arrow, with the partition hour `first_hour` from which the spans
    /// were kept (retention's cut-off at receipt).
    ///
    /// [`spans_from_protobuf`]: swarmscope_processors::convert::spans_from_protobuf
    pub async fn append_request(
        &self,
        request: Bytes,
        first_hour: i64,
        batches: Vec<(Table, RecordBatch)>,
    ) -> Result<()> {
        if batches
            .first()
            .is_none_or(|(t, b)| *t != Table::SPANS || b.num_rows() == 0)
        {
            return Err(Error::Wal(
                "a logged request must come with the spans converted from it".into(),
            ));
        }
        self.append_with(batches, |batches| {
            let derived: Vec<_> = batches[1..].iter().map(|(t, b)| (*t, b)).collect();
            frame::Record::with_request(request, first_hour, &derived)
        })
        .await
        .map(drop)
    }

    /// Appends the non-empty `batches` as the one record `record` makes of them.
    async fn append_with(
        &self,
        batches: Vec<(Table, RecordBatch)>,
        record: impl FnOnce(&[(Table, RecordBatch)]) -> Result<frame::Record>,
    ) -> Result<Option<frame::Record>> {
        let Some(log) = &self.inner.log else {
            return Err(Error::ReadOnly);
        };
        let batches: Vec<_> = batches
            .into_iter()
            .filter(|(_, b)| b.num_rows() > 0)
            .collect();
        if batches.is_empty() {
            return Ok(None);
        }
        let size: usize = batches.iter().map(|(_, b)| b.get_array_memory_size()).sum();
        self.inner.memory.try_charge(size).inspect_err(|_| {
            self.inner.full.notify_one();
        })?;
        // Counted before the log writer moves the rows into the buffers, so that a
        // flush right after never frees more than was counted.
        self.inner.buffered_bytes.fetch_add(size, Ordering::AcqRel);
        let tables: Vec<Table> = batches.iter().map(|(t, _)| *t).collect();
        let result = async {
            let record = record(&batches)?;
            let (done, answer) = oneshot::channel();
            log.send(Command::Append {
                batches,
                record: record.clone(),
                done,
            })?;
            answer.await.map_err(|_| Error::Closed)??;
            Ok(record)
        }
        .await;
        match result {
            Ok(record) => {
                if self.worth_flushing(&tables) {
                    self.inner.full.notify_one();
                }
                Ok(Some(record))
            }
            Err(e) => {
                self.inner.buffered_bytes.fetch_sub(size, Ordering::AcqRel);
                self.inner.memory.release(size);
                Err(e)
            }
        }
    }

    /// Stops the log writer once it has synced what it holds, and waits for it. The
    /// store refuses appends from then on; queries still read it. Rows not flushed stay
    /// in the log, replayed when the store opens again.
    pub fn close(&self) -> Result<()> {
        let Some(log) = &self.inner.log else {
            return Ok(());
        };
        lock(&log.sender).take();
        let thread = lock(&log.thread).take();
        match thread {
            Some(thread) => thread.join().map_err(|_| Error::Task {
                task: "log writer",
                message: "panicked".into(),
            }),
            None => Ok(()),
        }
    }
}

/// The log writer thread: runs until the store is dropped or closed.
fn log_writer(inner: Weak<Inner>, mut log: wal::Wal, commands: mpsc::Receiver<Command>) {
    let (mode, interval) = match inner.upgrade() {
        Some(i) => (
            i.config.wal_fsync,
            Duration::from_millis(i.config.wal_fsync_interval_ms),
        ),
        None => return,
    };
    let mut last_sync = Instant::now();
    let mut appends: Vec<Pending> = Vec::new();
    loop {
        // Wait for work; in interval mode wake up to sync on time.
        let first = match mode {
            WalFsync::Interval => match commands.recv_timeout(interval) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            _ => match commands.recv() {
                Ok(c) => Some(c),
                Err(_) => break,
            },
        };
        let Some(inner) = inner.upgrade() else { break };
        // Everything that arrived meanwhile joins this group.
        for command in first.into_iter().chain(commands.try_iter()) {
            match command {
                Command::Append {
                    batches,
                    record,
                    done,
                } => match log.write(record) {
                    Ok(()) => appends.push((batches, done)),
                    Err(e) => {
                        // Only a segment torn by a failure that cannot be cut back
                        // or replaced refuses a record: the group's earlier records
                        // would sit behind the same tear, so they fail too.
                        let message = e.to_string();
                        let _ = done.send(Err(Error::Wal(message.clone())));
                        for (_, done) in appends.drain(..) {
                            let _ = done.send(Err(Error::Wal(message.clone())));
                        }
                    }
                },
                Command::Rotate { done } => {
                    commit_group(&inner, &mut log, mode, &mut appends, &mut last_sync);
                    let result = log.rotate(mode != WalFsync::Never).map(|sealed| Taken {
                        sealed_segment: sealed,
                        tables: Table::ALL
                            .iter()
                            .map(|t| {
                                let mut state = lock_state(&inner, *t);
                                state.buffered_rows = 0;
                                let taken = std::mem::take(&mut state.buffered);
                                if !taken.is_empty() {
                                    let bytes: usize =
                                        taken.iter().map(|b| b.get_array_memory_size()).sum();
                                    inner.flushing_bytes.fetch_add(bytes, Ordering::AcqRel);
                                    state.flushing.push((sealed, taken.clone()));
                                }
                                (*t, taken)
                            })
                            .collect(),
                    });
                    let _ = done.send(result);
                }
            }
        }
        commit_group(&inner, &mut log, mode, &mut appends, &mut last_sync);
        if mode == WalFsync::Interval && last_sync.elapsed() >= interval {
            let started = Instant::now();
            if let Err(e) = log.sync(true) {
                tracing::error!(error = %e, "write-ahead log sync failed");
            }
            inner
                .metrics
                .wal_fsync
                .observe(started.elapsed().as_secs_f64());
            last_sync = Instant::now();
        }
    }
    let _ = log.sync(mode != WalFsync::Never);
}

/// An appended record waiting for its group's sync.
type Pending = (Vec<(Table, RecordBatch)>, oneshot::Sender<Result<()>>);

/// Makes a group of appended records durable (per the mode), moves their batches into
/// the buffers, and answers their senders.
fn commit_group(
    inner: &Inner,
    log: &mut wal::Wal,
    mode: WalFsync,
    appends: &mut Vec<Pending>,
    last_sync: &mut Instant,
) {
    if appends.is_empty() {
        return;
    }
    let started = Instant::now();
    let synced = log.sync(mode == WalFsync::Always);
    if mode == WalFsync::Always {
        *last_sync = Instant::now();
        inner
            .metrics
            .wal_fsync
            .observe(started.elapsed().as_secs_f64());
    }
    inner.metrics.group_commit.observe(appends.len() as f64);
    for (batches, done) in appends.drain(..) {
        match &synced {
            Ok(()) => {
                for (table, batch) in batches {
                    let mut state = lock_state(inner, table);
                    state.buffered_rows += batch.num_rows();
                    state.buffered.push(batch);
                }
                let _ = done.send(Ok(()));
            }
            Err(e) => {
                let _ = done.send(Err(Error::Wal(e.to_string())));
            }
        }
    }
}
