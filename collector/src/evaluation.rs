//! The analytics' place in the running collector: what they restore from the stored
//! history on start, and the evaluation every `processors.health.interval_seconds`
//! whose health rows and alert transitions are stored (and so sent to the webhooks like
//! any other acknowledged rows).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use swarmscope_processors::analytics::clock::wall_ns as now_ns;
use tokio::time::Instant;

use swarmscope_processors::analytics::alerts::{alert_rows, ALERTS, RESTORE_SQL};
use swarmscope_processors::analytics::coordination::Lookback;
use swarmscope_processors::analytics::evaluator::Evaluation;
use swarmscope_processors::analytics::graph::{PendingRows, GRAPH_EDGES};
use swarmscope_processors::analytics::health::{health_rows, HEALTH};
use swarmscope_processors::analytics::Analytics;
use swarmscope_processors::processor::TableBatch;
use swarmscope_processors::schema::with_nanosecond_times;
use swarmscope_queries::QueryEngine;

use crate::pipeline::{Pipeline, PipelineError};

/// Rebuilds the state the analytics keep from the stored history, before any new
/// data arrives: who holds which work item, and which alerts are firing. A failure is
/// logged, not fatal: the collector then starts afresh, and only what depends on the
/// earlier state (a conflict with an earlier claim, the resolution of an earlier
/// alert) is missed.
pub async fn restore(analytics: &Analytics, engine: &QueryEngine) {
    let restored = restore_claims(analytics, engine).await;
    match restored {
        Ok(windows) => tracing::info!(
            held = analytics.coordination.held(),
            windows,
            "work item claims restored from coordination_events"
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot restore work item claims; conflicts with earlier claims will be missed")
        }
    }
    let alerts = match engine.sql(RESTORE_SQL).await {
        Ok(result) => {
            let mut evaluator = analytics.evaluator();
            result
                .batches
                .iter()
                .try_for_each(|b| {
                    let b = with_nanosecond_times(b).map_err(|e| e.to_string())?;
                    evaluator.book_mut().restore(&b).map_err(|e| e.to_string())
                })
                .map(|()| {
                    evaluator.seed_restored();
                    evaluator.firing().len()
                })
        }
        Err(e) => Err(e.to_string()),
    };
    match alerts {
        Ok(firing) => tracing::info!(firing, "firing alerts restored from alerts"),
        Err(e) => {
            tracing::error!(error = %e, "cannot restore firing alerts; they will not be resolved")
        }
    }
}

/// Reads back, window by window, the history the claim book needs and replays it;
/// answers the windows read. A failure leaves the book with what was replayed.
async fn restore_claims(analytics: &Analytics, engine: &QueryEngine) -> Result<usize, String> {
    let mut history = Lookback::new(
        &analytics.config.coordination,
        analytics.config.future_tolerance_seconds,
    );
    while let Some(sql) = history.next_sql() {
        let answer = engine.sql(&sql).await.map_err(|e| e.to_string())?;
        let batches = answer
            .batches
            .iter()
            .map(with_nanosecond_times)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        history
            .read(&batches, &analytics.coordination)
            .map_err(|e| e.to_string())?;
    }
    Ok(history.windows())
}

/// Evaluates every interval once it is due, until `shutdown` resolves. An evaluation
/// that falls behind skips to the latest due interval rather than catching up on
/// stale ones.
pub async fn evaluate(
    analytics: Arc<Analytics>,
    pipeline: Pipeline,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let (mut next, mut due_at) = {
        let e = analytics.evaluator();
        let next = e.due(now_ns()) + 1;
        (next, e.due_at(next))
    };
    loop {
        let wait = until(due_at);
        tokio::select! {
            _ = &mut shutdown => return store_graph_rows(&analytics, &pipeline).await,
            _ = tokio::time::sleep(wait) => {}
        }
        let latest = {
            let e = analytics.evaluator();
            e.due(now_ns())
        };
        if latest < next {
            continue;
        }
        let end = latest;
        let evaluation = {
            let analytics = Arc::clone(&analytics);
            match tokio::task::spawn_blocking(move || analytics.evaluate(end)).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "analytics evaluation failed");
                    next = end + 1;
                    continue;
                }
            }
        };
        let graph_rows = analytics.graph.as_ref().map(|g| g.take_rows());
        let batches = rows(&evaluation, graph_rows.as_ref());
        // Over the memory budget, the rows wait for room (ingest's clients retry the
        // same way) until the next evaluation is due; a gap in health and alerts under
        // load is what an operator least wants.
        let deadline = Instant::now() + until(analytics.evaluator().due_at(end + 1));
        let stored = match retry_overloaded(
            || pipeline.record(batches.clone()),
            deadline,
            shutdown.as_mut(),
        )
        .await
        {
            Retried::Done(stored) => stored,
            Retried::ShutDown => {
                if let (Some(graph), Some(rows)) = (&analytics.graph, graph_rows) {
                    graph.restore_rows(rows);
                }
                return store_graph_rows(&analytics, &pipeline).await;
            }
        };
        if let (Err(_), Some(graph), Some(rows)) = (&stored, &analytics.graph, graph_rows) {
            graph.restore_rows(rows);
        }
        match stored {
            Ok(()) => analytics.commit(evaluation.book),
            // A transition not stored is not made: the next evaluation finds it again.
            Err(e) if !evaluation.transitions.is_empty() => tracing::error!(
                error = %e,
                "cannot store the analytics evaluation; its alert transitions are retried at the next"
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot store the analytics evaluation");
                analytics.commit(evaluation.book);
            }
        }
        next = end + 1;
        due_at = analytics.evaluator().due_at(next);
    }
}

/// The time from now to `at` (wall clock, nanoseconds), zero if it has passed.
fn until(at: i64) -> Duration {
    Duration::from_nanos(u64::try_from(at.saturating_sub(now_ns())).unwrap_or(0))
}

/// How [`retry_overloaded`] ended.
#[derive(Debug, PartialEq)]
enum Retried<T> {
    Done(Result<T, PipelineError>),
    ShutDown,
}

/// Calls `attempt` until it is not refused as overloaded, waiting between calls (50 ms,
/// doubling up to 1 s) as an exporter backs off; the last refusal is the answer once
/// the next wait would pass `deadline`. Stops waiting when `shutdown` resolves.
async fn retry_overloaded<T, F, Fut>(
    mut attempt: F,
    deadline: Instant,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Retried<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PipelineError>>,
{
    let mut wait = Duration::from_millis(50);
    loop {
        match attempt().await {
            Err(PipelineError::Overloaded(m)) if Instant::now() + wait < deadline => {
                tracing::debug!(error = %m, ?wait, "analytics rows wait for room in the store");
                tokio::select! {
                    _ = shutdown.as_mut() => return Retried::ShutDown,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            answer => return Retried::Done(answer),
        }
    }
}

/// The rows an evaluation adds: health scores, alert transitions, and the requests the
/// call graph counted since the last.
fn rows(evaluation: &Evaluation, graph: Option<&PendingRows>) -> Vec<TableBatch> {
    let mut batches = Vec::new();
    match health_rows(evaluation.at, &evaluation.health) {
        Ok(rows) => batches.push(TableBatch::new(HEALTH, rows)),
        Err(e) => tracing::error!(error = %e, "cannot build health rows"),
    }
    if !evaluation.transitions.is_empty() {
        for alert in &evaluation.transitions {
            tracing::info!(
                alert = alert.name(),
                status = %alert.status,
                fingerprint = %alert.fingerprint,
                labels = ?alert.labels,
                "alert {}", alert.status
            );
        }
        match alert_rows(evaluation.at, &evaluation.transitions) {
            Ok(rows) => batches.push(TableBatch::new(ALERTS, rows)),
            Err(e) => tracing::error!(error = %e, "cannot build alert rows"),
        }
    }
    if let Some(graph) = graph.filter(|r| !r.is_empty()) {
        match graph.batch() {
            Ok(rows) => batches.push(TableBatch::new(GRAPH_EDGES, rows)),
            Err(e) => tracing::error!(error = %e, "cannot build graph_edges rows"),
        }
    }
    batches
}

/// At shutdown, the requests the call graph counted since the last evaluation.
async fn store_graph_rows(analytics: &Analytics, pipeline: &Pipeline) {
    let Some(rows) = analytics.graph.as_ref().map(|g| g.take_rows()) else {
        return;
    };
    if rows.is_empty() {
        return;
    }
    let stored = match rows.batch() {
        Ok(batch) => pipeline
            .record(vec![TableBatch::new(GRAPH_EDGES, batch)])
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = stored {
        tracing::error!(error = %e, "cannot store the call graph's last rows");
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn overloaded() -> PipelineError {
        PipelineError::Overloaded("over the memory budget".into())
    }

    /// `attempt` answering overloaded `refusals` times, then `Ok(calls)`.
    async fn retried(
        refusals: u32,
        within: Duration,
        shutdown_after: Option<Duration>,
    ) -> (Retried<u32>, u32, Duration) {
        let calls = Cell::new(0);
        let started = Instant::now();
        let shutdown = async move {
            match shutdown_after {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(shutdown);
        let answer = retry_overloaded(
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n <= refusals {
                        Err(overloaded())
                    } else {
                        Ok(n)
                    }
                }
            },
            started + within,
            shutdown.as_mut(),
        )
        .await;
        (answer, calls.get(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn rows_refused_for_want_of_memory_are_stored_once_there_is_room() {
        let (answer, calls, waited) = retried(5, Duration::from_secs(10), None).await;
        assert_eq!(answer, Retried::Done(Ok(6)));
        assert_eq!(calls, 6);
        // 50 + 100 + 200 + 400 + 800 ms of backoff.
        assert_eq!(waited, Duration::from_millis(1_550));
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_ends_before_the_next_evaluation_is_due() {
        let (answer, calls, waited) = retried(u32::MAX, Duration::from_secs(10), None).await;
        assert!(matches!(
            answer,
            Retried::Done(Err(PipelineError::Overloaded(_)))
        ));
        // Waits of 50 ms to 1 s, none ending past the deadline.
        assert!(waited <= Duration::from_secs(10), "{waited:?}");
        assert!(waited >= Duration::from_secs(9), "{waited:?}");
        assert_eq!(calls, 14);
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_and_shutdown_end_the_waiting_at_once() {
        let calls = Cell::new(0);
        let shutdown = std::future::pending::<()>();
        tokio::pin!(shutdown);
        let answer: Retried<()> = retry_overloaded(
            || {
                calls.set(calls.get() + 1);
                async { Err(PipelineError::Unavailable("disk full".into())) }
            },
            Instant::now() + Duration::from_secs(10),
            shutdown.as_mut(),
        )
        .await;
        assert!(matches!(
            answer,
            Retried::Done(Err(PipelineError::Unavailable(_)))
        ));
        assert_eq!(calls.get(), 1);

        let (answer, _, waited) = retried(
            u32::MAX,
            Duration::from_secs(10),
            Some(Duration::from_millis(120)),
        )
        .await;
        assert_eq!(answer, Retried::ShutDown);
        assert_eq!(waited, Duration::from_millis(120));
    }
}
