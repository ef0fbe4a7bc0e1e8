//! Wiring and lifecycle: open the store, bind the three listeners, serve until told to
//! stop, then shut down in the order that loses nothing: receivers first (in-flight
//! requests finish), then a final flush of every buffered row, then the API. Running
//! queries are cancelled as shutdown begins, so none can hold it up.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use swarmscope_processors::analytics::Analytics;
use swarmscope_queries::QueryEngine;
use swarmscope_sinks::executor::{Executor, SINK_NICE};
use swarmscope_sinks::prometheus::{Translator, TranslatorCollector};
use swarmscope_sinks::sink::{QueueConfig, SinkMetrics};
use swarmscope_sinks::store::ParquetStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::analytics;
use crate::api::{self, ApiState};
use crate::config::{resolve, Config};
use crate::pipeline::Pipeline;
use crate::receivers::{grpc, http};
use crate::sinks::{self, PipelineDeadLetters};
use crate::telemetry::Telemetry;
use crate::Error;

/// How long shutdown waits for the API's open connections once queries are cancelled.
const API_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
/// How far back a stored resolution is told again to the webhooks after a restart, in
/// case the stop came before its notification (the default `group_interval` and more).
const RESOLVED_RETOLD_NS: i64 = 10 * 60 * 1_000_000_000;

/// Where a running collector listens (ports resolved, so `:0` works in tests).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
}

/// The sinks' threads: half the cores (one at least). Even at the lowest priority,
/// work in the time ingestion leaves idle slows it down (caches, the VM's scheduling);
/// with half the cores the sinks never hold all of them, and ingestion under a
/// saturating load lost less and varied less from run to run (see benches/RESULTS.md).
fn sink_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

async fn bind(key: &'static str, address: &str) -> Result<TcpListener, Error> {
    let addr = resolve(key, address)?;
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        key,
        address: address.to_owned(),
        source,
    })
}

/// A future that resolves once `rx` sees `true`.
async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Runs the collector until `shutdown` resolves. `on_bound` is told the listening
/// addresses once all three listeners are up.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_bound: impl FnOnce(Bound),
) -> Result<(), Error> {
    config.validate()?;
    let store = ParquetStore::open(config.storage.clone())?;
    let engine = Arc::new(QueryEngine::new(store.clone(), config.query.clone())?);
    let analytics = Arc::new(Analytics::new(
        &config.processors,
        config.alerts.rules.clone(),
    ));
    engine
        .register_analytics(&analytics)
        .await
        .map_err(|e| Error::Server("analytics", e.to_string()))?;
    let (telemetry, metrics) =
        Telemetry::new(&store, &engine).map_err(|e| Error::Server("metrics", e.to_string()))?;
    let metrics_error = |e: prometheus::Error| Error::Server("metrics", e.to_string());
    for collector in analytics.collectors() {
        telemetry
            .registry()
            .register(collector)
            .map_err(metrics_error)?;
    }
    let translator = Arc::new(Translator::new(&config.sinks.prometheus));
    telemetry
        .registry()
        .register(Box::new(TranslatorCollector(Arc::clone(&translator))))
        .and_then(|()| {
            telemetry
                .registry()
                .register(Box::new(translator.dropped()))
        })
        .map_err(metrics_error)?;
    let sink_metrics = SinkMetrics::register(telemetry.registry()).map_err(metrics_error)?;
    // The sinks' work (encoding, compressing, sending) runs on threads of its own at a
    // lower priority, so that it never takes the CPU from ingestion; their clients are
    // built there too, for their background tasks to run there.
    let sink_executor = Executor::new("sink", sink_threads(), SINK_NICE)
        .map_err(|e| Error::Server("sink runtime", e.to_string()))?;
    let dead_letters = PipelineDeadLetters::default();
    // The state the analytics keep comes back first: the webhooks start from the
    // alerts firing.
    analytics::restore(&analytics, &engine).await;
    let (firing, resolved) = {
        let evaluator = analytics.evaluator();
        // A resolution stored within the last ten minutes may not have been told yet.
        let recent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .saturating_sub(RESOLVED_RETOLD_NS);
        (evaluator.firing(), evaluator.resolved_since(recent))
    };
    let (sinks, remote_write) = {
        let _sink_runtime = sink_executor.enter();
        let mut sinks = analytics::webhooks(&config, &sink_metrics, &firing, &resolved)?;
        sinks.extend(analytics::exporters(
            &config,
            &sink_metrics,
            telemetry.registry(),
        )?);
        sinks.extend(sinks::elasticsearch(
            &config,
            &sink_metrics,
            telemetry.registry(),
            &dead_letters,
        )?);
        (sinks, sinks::remote_write(&config, &sink_metrics)?)
    };
    let builder = analytics
        .processors()
        .into_iter()
        .fold(Pipeline::builder(store.clone(), metrics), |b, p| {
            b.processor(p)
        })
        .processor(translator);
    let runners: Vec<_> = sinks
        .iter()
        .chain(&remote_write)
        .map(|sink| sink.runner(QueueConfig::default()))
        .collect();
    let pipeline = sinks
        .into_iter()
        .fold(builder, |b, sink| b.sink(sink))
        .build()
        .map_err(|e| Error::Server("pipeline", e.to_string()))?;
    dead_letters.set(pipeline.clone());
    let otlp = &config.receivers.otlp;
    let (grpc_listening, http_listening) = otlp.listening()?;
    let api_listening = config.api.listening()?;

    let grpc_listener = bind("receivers.otlp.grpc_address", &otlp.grpc_address).await?;
    let http_listener = bind("receivers.otlp.http_address", &otlp.http_address).await?;
    let api_listener = bind("api.address", &config.api.address).await?;
    let local = |l: &TcpListener, key: &'static str| {
        l.local_addr().map_err(|source| Error::Bind {
            key,
            address: String::new(),
            source,
        })
    };
    let bound = Bound {
        grpc: local(&grpc_listener, "receivers.otlp.grpc_address")?,
        http: local(&http_listener, "receivers.otlp.http_address")?,
        api: local(&api_listener, "api.address")?,
    };

    let (stop_receivers, receivers_rx) = watch::channel(false);
    let (stop_api, api_rx) = watch::channel(false);
    let (stop_flusher, flusher_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));

    let receivers_rx_for_analytics = receivers_rx.clone();
    let grpc_task = tokio::spawn(grpc::serve(
        grpc_listener,
        grpc_listening,
        pipeline.clone(),
        otlp.max_request_bytes,
        otlp.auth_token.clone(),
        stopped(receivers_rx.clone()),
    ));
    let http_app = http::router(
        pipeline.clone(),
        otlp.max_request_bytes,
        otlp.auth_token.clone(),
    );
    let http_task =
        tokio::spawn(http_listening.serve_http(http_listener, http_app, stopped(receivers_rx)));
    let telemetry = Arc::new(telemetry);
    let api_app = api::router(ApiState {
        engine: Arc::clone(&engine),
        pipeline: pipeline.clone(),
        telemetry: Arc::clone(&telemetry),
        ready: Arc::clone(&ready),
        auth_token: config.api.auth_token.clone(),
        analytics: Arc::clone(&analytics),
    });
    let api_task = tokio::spawn(api_listening.serve_http(api_listener, api_app, stopped(api_rx)));
    let flusher = tokio::spawn(store.clone().run_flusher(stopped(flusher_rx)));
    let (stop_sinks, sinks_rx) = watch::channel(false);
    let mut sink_tasks: Vec<_> = runners
        .into_iter()
        .map(|runner| sink_executor.spawn(runner.run(stopped(sinks_rx.clone()))))
        .collect();
    if let (Some(handle), Some(rw)) = (remote_write, &config.sinks.prometheus_remote_write) {
        sink_tasks.push(sink_executor.spawn(sinks::snapshots(
            handle,
            rw.interval(),
            Arc::clone(&telemetry),
            pipeline.clone(),
            bound.api.to_string(),
            stopped(sinks_rx.clone()),
        )));
    }
    let evaluation = tokio::spawn({
        let (analytics, pipeline) = (Arc::clone(&analytics), pipeline.clone());
        let stop = stopped(receivers_rx_for_analytics);
        async move {
            if analytics.config.enabled {
                analytics::evaluate(analytics, pipeline, stop).await;
            }
        }
    });

    ready.store(true, Ordering::Release);
    on_bound(bound);
    tracing::info!(grpc = %bound.grpc, http = %bound.http, api = %bound.api, data_dir = %store.data_dir().display(), "swarmscope is running");

    // Serve until told to stop, or until a server fails on its own.
    let grpc_done = wait_server("OTLP gRPC", grpc_task);
    tokio::pin!(shutdown);
    tokio::pin!(grpc_done);
    tokio::select! {
        _ = &mut shutdown => {}
        result = &mut grpc_done => {
            result?;
            return Err(Error::Server("OTLP gRPC", "stopped unexpectedly".into()));
        }
    }
    tracing::info!("shutting down: draining receivers");
    ready.store(false, Ordering::Release);
    // Queries are cancelled first: a runaway plan neither holds the CPU the final
    // flush needs nor keeps the API from draining.
    engine.close();
    let _ = stop_receivers.send(true);
    let grpc_result = grpc_done.await;
    let http_result = http_task
        .await
        .map_err(|e| Error::Server("OTLP HTTP", e.to_string()))
        .and_then(|r| r.map_err(|e| Error::Server("OTLP HTTP", e.to_string())));

    let _ = evaluation.await;

    tracing::info!("shutting down: flushing buffered rows");
    let _ = stop_flusher.send(true);
    let _ = flusher.await;
    let flushed = store.flush().await;

    // The sinks stop where they are; what they have not sent waits in their queues.
    let _ = stop_sinks.send(true);
    for task in sink_tasks {
        let _ = task.await;
    }

    let _ = stop_api.send(true);
    // Cancelled queries answer at once; a connection that still does not finish (a
    // client that reads its answer slowly) is not waited for past this.
    let api_result = match tokio::time::timeout(API_DRAIN, api_task).await {
        Ok(joined) => joined
            .map_err(|e| Error::Server("API", e.to_string()))
            .and_then(|r| r.map_err(|e| Error::Server("API", e.to_string()))),
        Err(_) => {
            tracing::warn!(
                seconds = API_DRAIN.as_secs(),
                "API connections still open at shutdown were cut"
            );
            Ok(())
        }
    };
    grpc_result?;
    http_result?;
    flushed?;
    api_result?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn wait_server(
    name: &'static str,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) -> Result<(), Error> {
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Server(name, e.to_string())),
        Err(e) => Err(Error::Server(name, e.to_string())),
    }
}
