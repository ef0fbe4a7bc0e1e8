//! [`QueryExecutor`]: the threads queries run on, apart from ingestion.
//!
//! A DataFusion plan is CPU-bound work polled as futures. On the runtime that also runs
//! the receivers, the API and the write path, a heavy plan (a cartesian product by
//! mistake) takes every worker and stalls them all. So queries run on a runtime of their
//! own (the "dedicated executor" DataFusion recommends and InfluxDB 3 uses), with
//! `query.threads` workers at a lower scheduling priority: the caller's runtime only
//! waits for the answer, so its timers (the query timeout among them) and its other
//! tasks keep running whatever the plan does.
//!
//! A spawned query is a [`QueryTask`], which aborts the query when dropped: a timeout,
//! a client that hangs up (its request future is dropped) and shutdown all cancel it.
//! DataFusion's operators yield to the runtime between batches (cooperative
//! scheduling), where an aborted task stops.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use swarmscope_queries::QueryExecutor;
//!
//! let executor = QueryExecutor::new(1)?;
//! let answer = tokio::runtime::Runtime::new()?.block_on(executor.spawn(async { 6 * 7 }))?;
//! assert_eq!(answer, 42);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Runtime;
use tokio::task::{JoinError, JoinHandle};

/// How much less the query threads weigh than ingestion when both want the CPU
/// (Linux nice value; 10 gives a thread about a tenth of a default thread's share).
#[cfg(target_os = "linux")]
const QUERY_NICE: i32 = 10;

/// Blocking threads of the query runtime: DataFusion reads local files through them.
const MAX_BLOCKING_THREADS: usize = 4;

/// A runtime for queries only. Dropping it stops its threads without waiting for them.
pub struct QueryExecutor {
    runtime: Option<Runtime>,
}

impl QueryExecutor {
    /// A runtime with `threads` workers (at least one).
    pub fn new(threads: usize) -> std::io::Result<QueryExecutor> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name("swarmscope-query")
            .on_thread_start(lower_priority)
            .enable_time()
            .build()?;
        Ok(QueryExecutor {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on the query threads; the answer comes through the returned task,
    /// which cancels the future when dropped.
    pub fn spawn<F>(&self, future: F) -> QueryTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // `runtime` is `None` only inside `drop`.
        let handle = match &self.runtime {
            Some(rt) => rt.spawn(future),
            None => unreachable!("the query runtime lives as long as its executor"),
        };
        QueryTask(handle)
    }
}

impl Drop for QueryExecutor {
    fn drop(&mut self) {
        // Without waiting: a runaway plan must not hold up shutdown, and dropping a
        // runtime inside another one's task (where the engine's last `Arc` may go)
        // would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A query running on a [`QueryExecutor`]. Dropping it aborts the query.
pub struct QueryTask<T>(JoinHandle<T>);

impl<T> Future for QueryTask<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for QueryTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lowers the calling thread's priority: on Linux the nice value is per thread.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `setpriority` with `who = 0` changes the calling thread only and
        // touches no memory of ours. Failure leaves the default priority, which is
        // only slower for ingestion under load, so it is ignored.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, QUERY_NICE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn dropping_the_task_stops_a_busy_future() {
        let executor = QueryExecutor::new(1).unwrap();
        let steps = Arc::new(AtomicU64::new(0));
        let task = executor.spawn({
            let steps = Arc::clone(&steps);
            async move {
                // CPU-bound work that yields between steps, as DataFusion's operators do.
                loop {
                    steps.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        while steps.load(Ordering::Relaxed) < 1000 {
            tokio::task::yield_now().await;
        }
        drop(task);
        // Once the abort is seen, the counter stands still.
        let mut last = steps.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = steps.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(steps.load(Ordering::Relaxed), last);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_callers_runtime_runs_on_while_a_query_spins() {
        let executor = QueryExecutor::new(1).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // Never yields: on the caller's one-thread runtime this would stall everything.
        let task = executor.spawn({
            let stop = Arc::clone(&stop);
            async move {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
                7
            }
        });
        // The caller's timers still fire.
        tokio::time::sleep(Duration::from_millis(10)).await;
        stop.store(true, Ordering::Relaxed);
        assert_eq!(task.await.unwrap(), 7);
    }
}
