//! The analytics' place in the running collector: what they restore from the stored
//! history on start, the evaluation every `processors.health.interval_seconds` whose
//! health rows and alert transitions are stored (and so sent to the webhooks like any
//! other acknowledged rows), and the sinks: the webhooks and the OTLP exporters.

use std::sync::Arc;

use swarmscope_processors::analytics::alerts::{alert_rows, Alert, RESTORE_SQL};
use swarmscope_processors::analytics::coordination::restore_sql;
use swarmscope_processors::analytics::health::{health_rows, HEALTH};
use swarmscope_processors::analytics::Analytics;
use swarmscope_processors::processor::TableBatch;
use swarmscope_queries::QueryEngine;
use swarmscope_sinks::otlp::OtlpSink;
use swarmscope_sinks::queue::DiskQueue;
use swarmscope_sinks::sink::{SinkHandle, SinkMetrics};
use swarmscope_sinks::webhook::WebhookSink;

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::Error;

/// The webhook sinks of `[[alerts.webhooks]]`, each with its disk queue under
/// `DATA_DIR/_sinks/<name>`, seeded with the alerts `firing` at start and those
/// `resolved` shortly before. Built on the sinks' runtime, where their notifier tasks
/// run.
pub fn webhooks(
    config: &Config,
    metrics: &SinkMetrics,
    firing: &[Alert],
    resolved: &[Alert],
) -> Result<Vec<SinkHandle>, Error> {
    let external_url = config
        .alerts
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.api.address));
    config
        .alerts
        .webhooks
        .iter()
        .enumerate()
        .map(|(i, hook)| {
            let name = hook.name(i);
            let dir = config.storage.data_dir.join("_sinks").join(&name);
            let queue = DiskQueue::open(
                &dir,
                swarmscope_sinks::sink::QueueConfig::default().queue_max_bytes,
            )
            .map_err(|e| Error::Server("webhook queue", format!("{}: {e}", dir.display())))?;
            let sink = WebhookSink::new(name, hook.clone(), external_url.clone(), metrics.clone())
                .map_err(|e| Error::Server("webhook", e))?;
            sink.seed(firing, resolved);
            Ok(SinkHandle::new(
                Arc::new(sink),
                Arc::new(queue),
                metrics.clone(),
            ))
        })
        .collect()
}

/// The OTLP exporters of `[sinks.jaeger]` and `[sinks.otlp]`, each with its disk queue
/// under `DATA_DIR/_sinks/<name>`; the counters of what their endpoints refused are
/// registered with `registry`.
pub fn exporters(
    config: &Config,
    metrics: &SinkMetrics,
    registry: &prometheus::Registry,
) -> Result<Vec<SinkHandle>, Error> {
    let mut handles = Vec::new();
    for (name, exporter) in config.sinks.otlp_exporters() {
        let dir = config.storage.data_dir.join("_sinks").join(name);
        let queue = DiskQueue::open(&dir, exporter.queue_max_bytes)
            .map_err(|e| Error::Server("sink queue", format!("{}: {e}", dir.display())))?;
        let sink = OtlpSink::new(name, exporter.clone()).map_err(Error::Config)?;
        registry
            .register(Box::new(sink.rejected.clone()))
            .map_err(|e| Error::Server("metrics", e.to_string()))?;
        handles.push(SinkHandle::new(
            Arc::new(sink),
            Arc::new(queue),
            metrics.clone(),
        ));
    }
    Ok(handles)
}

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
        Ok(result) => result
            .batches
            .iter()
            .try_for_each(|b| analytics.coordination.restore(b))
            .map_err(|e| e.to_string()),
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
                .try_for_each(|b| evaluator.book_mut().restore(b))
                .map(|()| {
                    evaluator.seed_restored();
                    evaluator.firing().len()
                })
                .map_err(|e| e.to_string())
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

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
            _ = &mut shutdown => return,
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
                Ok(rows) => batches.push(TableBatch::new(
                    swarmscope_processors::analytics::alerts::ALERTS,
                    rows,
                )),
                Err(e) => tracing::error!(error = %e, "cannot build alert rows"),
            }
        }
        match pipeline.record(batches).await {
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
