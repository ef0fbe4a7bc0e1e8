//! [`Executor`]: threads apart from ingestion, at a lower priority, for the work that
//! must never hold it up: queries and sinks.
//!
//! A DataFusion plan is CPU-bound work polled as futures, and so is turning stored
//! batches into an Elasticsearch bulk body or a gzipped OTLP export. On the runtime that
//! also runs the receivers, the API and the write path, such work takes the workers and
//! stalls them all. So it runs on a runtime of its own (the "dedicated executor"
//! DataFusion recommends and InfluxDB 3 uses) whose workers run at a lower scheduling
//! priority: when both want the CPU, ingestion wins; the caller's runtime only waits for
//! answers, so its timers (a query timeout among them) and its other tasks keep running
//! whatever the work does.
//!
//! A spawned future is a [`Task`], which aborts it when dropped: a query's timeout, a
//! client that hangs up (its request future is dropped) and shutdown all cancel it.
//! DataFusion's operators yield to the runtime between batches (cooperative
//! scheduling), where an aborted task stops.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use swarmscope_sinks::executor::Executor;
//!
//! let executor = Executor::new("example", 1, 10)?;
//! let answer = tokio::runtime::Runtime::new()?.block_on(executor.spawn(async { 6 * 7 }))?;
//! assert_eq!(answer, 42);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Runtime;
use tokio::task::{JoinError, JoinHandle};

/// How much less query threads weigh than ingestion when both want the CPU (Linux nice
/// value; 10 gives a thread about a tenth of a default thread's share).
pub const QUERY_NICE: i32 = 10;

/// The sinks' threads weigh least of all (about 1/70 of a default thread): what they
/// do can wait on disk, a client's request cannot.
pub const SINK_NICE: i32 = 19;

/// Blocking threads of the runtime: DataFusion reads local files through them.
const MAX_BLOCKING_THREADS: usize = 4;

/// A low-priority runtime. Dropping it stops its threads without waiting for them.
pub struct Executor {
    runtime: Option<Runtime>,
}

impl Executor {
    /// A runtime with `threads` workers (at least one) named `swarmscope-<name>`, at
    /// nice value `nice`.
    pub fn new(name: &str, threads: usize, nice: i32) -> std::io::Result<Executor> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name(format!("swarmscope-{name}"))
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()?;
        Ok(Executor {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on these threads; the answer comes through the returned task,
    /// which cancels the future when dropped.
    pub fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Task(self.runtime().spawn(future))
    }

    /// Makes this runtime the current one until the guard drops: what is built then
    /// (a gRPC channel's background task, say) runs here.
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.runtime().enter()
    }

    fn runtime(&self) -> &Runtime {
        // `runtime` is `None` only inside `drop`.
        match &self.runtime {
            Some(rt) => rt,
            None => unreachable!("the runtime lives as long as its executor"),
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Without waiting: a runaway plan must not hold up shutdown, and dropping a
        // runtime inside another one's task (where the engine's last `Arc` may go)
        // would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A future running on an [`Executor`]. Dropping it aborts the future.
pub struct Task<T>(JoinHandle<T>);

impl<T> Future for Task<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lowers the calling thread's priority: on Linux the nice value is per thread.
pub fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `setpriority` with `who = 0` changes the calling thread only and
        // touches no memory of ours. Failure leaves the default priority, which is
        // only slower for ingestion under load, so it is ignored.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, nice);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn dropping_the_task_stops_a_busy_future() {
        let executor = Executor::new("test", 1, QUERY_NICE).unwrap();
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
        let executor = Executor::new("test", 1, QUERY_NICE).unwrap();
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
