//! The analytics' place in the running collector: what they restore from the stored
//! history on start, and the evaluation every `processors.health.interval_seconds`
//! whose health rows and alert transitions are stored (and so sent to the webhooks like
//! any other acknowledged rows).

use std::sync::Arc;
use swarmscope_processors::analytics::clock::wall_ns as now_ns;

use swarmscope_processors::analytics::alerts::{alert_rows, ALERTS, RESTORE_SQL};
use swarmscope_processors::analytics::coordination::restore_sql;
use swarmscope_processors::analytics::evaluator::Evaluation;
use swarmscope_processors::analytics::graph::{PendingRows, GRAPH_EDGES};
use swarmscope_processors::analytics::health::{health_rows, HEALTH};
use swarmscope_processors::analytics::Analytics;
use swarmscope_processors::processor::TableBatch;
use swarmscope_processors::schema::with_nanosecond_times;
use swarmscope_queries::QueryEngine;

use crate::pipeline::Pipeline;

/// Rebuilds the state the analytics keep from the stored history, before any new
/// data arrives: who holds which work item, and which alerts are firing. A failure is
/// logged, not fatal: the collector then starts afresh, and only what depends on the
/// earlier state (a conflict with an earlier claim, the resolution of an earlier
/// alert) is missed.
pub async fn restore(analytics: &Analytics, engine: &QueryEngine) {
    let claims = restore_sql(
        &analytics.config.coordination,
        analytics.config.future_tolerance_seconds,
    );
    let restored = match engine.sql(&claims).await {
        Ok(result) => result.batches.iter().try_for_each(|b| {
            let b = with_nanosecond_times(b).map_err(|e| e.to_string())?;
            analytics
                .coordination
                .restore(&b)
                .map_err(|e| e.to_string())
        }),
        Err(e) => Err(e.to_string()),
    };
    match restored {
        Ok(()) => tracing::info!(
            held = analytics.coordination.held(),
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
        let wait = std::time::Duration::from_nanos(u64::try_from(due_at - now_ns()).unwrap_or(0));
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
        let stored = pipeline
            .record(rows(&evaluation, graph_rows.as_ref()))
            .await;
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
