//! Wiring and lifecycle: open the store, bind the three listeners, serve until told to
//! stop, then shut down in the order that loses nothing: receivers first (in-flight
//! requests finish), then a final flush of every buffered row, then the API. Running
//! queries are cancelled as shutdown begins, so none can hold it up.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use swarmscope_processors::analytics::Analytics;
use swarmscope_processors::prometheus::{Translator, TranslatorCollector};
use swarmscope_queries::QueryEngine;
use swarmscope_sinks::executor::{Executor, Task, SINK_NICE};
use swarmscope_sinks::sink::{RunnerTuning, SinkMetrics, SinkRunner};
use swarmscope_sinks::store::ParquetStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, ApiState};
use crate::assembly::{self, DeadLetterChannel, Restored, Sinks};
use crate::config::{resolve, Config};
use crate::evaluation;
use crate::net::Listening;
use crate::pipeline::Pipeline;
use crate::receivers::{grpc, http};
use crate::telemetry::{PipelineMetrics, Telemetry};
use crate::{Error, ServerFailure};

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
///
/// The stages, in order, as the OpenTelemetry Collector's service builds itself: the
/// core (store, query engine, analytics, the metrics registry), the sinks, the
/// pipeline, the listeners, then the running tasks; [`Running::shutdown`] owns the stop
/// order.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_bound: impl FnOnce(Bound),
) -> Result<(), Error> {
    config.validate()?;
    let core = Core::open(&config).await?;
    let mut outputs = Outputs::assemble(&config, &core).await?;
    let pipeline = core.pipeline(&mut outputs)?;
    let listeners = Listeners::bind(&config).await?;
    let running = Running::start(&config, core, outputs, pipeline, listeners);
    on_bound(running.bound);
    tracing::info!(grpc = %running.bound.grpc, http = %running.bound.http, api = %running.bound.api, data_dir = %running.store.data_dir().display(), "swarmscope is running");
    running.serve(shutdown).await
}

/// What everything else stands on: the store, the query engine over it, the analytics,
/// and the registry `/metrics` serves, with every collector registered.
struct Core {
    store: ParquetStore,
    engine: Arc<QueryEngine>,
    analytics: Arc<Analytics>,
    telemetry: Telemetry,
    pipeline_metrics: PipelineMetrics,
    sink_metrics: SinkMetrics,
    translator: Arc<Translator>,
}

impl Core {
    async fn open(config: &Config) -> Result<Core, Error> {
        let store = ParquetStore::open(config.storage.clone()).await?;
        let engine = Arc::new(QueryEngine::new(store.clone(), config.query.clone())?);
        let analytics = Arc::new(Analytics::new(
            &config.processors,
            config.alerts.rules.clone(),
        ));
        engine.register_analytics(&analytics).await?;
        let (telemetry, pipeline_metrics) = Telemetry::new(&store, &engine)?;
        let registry = telemetry.registry();
        for collector in analytics.collectors() {
            registry.register(collector)?;
        }
        let translator = Arc::new(Translator::new(&config.sinks.prometheus));
        registry
            .register(Box::new(TranslatorCollector(Arc::clone(&translator))))
            .and_then(|()| registry.register(Box::new(translator.dropped())))?;
        let sink_metrics = SinkMetrics::register(registry)?;
        Ok(Core {
            store,
            engine,
            analytics,
            telemetry,
            pipeline_metrics,
            sink_metrics,
            translator,
        })
    }

    /// The pipeline: the analytics' processors and the Prometheus translator, then the
    /// delivering sinks.
    fn pipeline(&self, outputs: &mut Outputs) -> Result<Pipeline, Error> {
        let builder = self.analytics.processors().into_iter().fold(
            Pipeline::builder(self.store.clone(), self.pipeline_metrics.clone()),
            |b, p| b.processor(p),
        );
        let pipeline = std::mem::take(&mut outputs.sinks.delivering)
            .into_iter()
            .fold(builder.processor(self.translator.clone()), |b, sink| {
                b.sink(sink)
            })
            .build()
            .map_err(|source| Error::Start {
                what: "pipeline",
                source,
            })?;
        Ok(pipeline)
    }
}

/// The sinks, on threads of their own at a lower priority so that their work
/// (encoding, compressing, sending) never takes the CPU from ingestion; their clients
/// are built there too, for their background tasks to run there.
struct Outputs {
    executor: Executor,
    sinks: Sinks,
    /// What delivers each sink's queue, remote write's among them.
    runners: Vec<SinkRunner>,
    /// What the sinks refused for good, to be stored through the pipeline.
    dead_letters: tokio::sync::mpsc::Receiver<(
        arrow::array::RecordBatch,
        tokio::sync::oneshot::Sender<Result<(), String>>,
    )>,
}

impl Outputs {
    /// Restores the analytics' state first, so the webhooks start from the alerts
    /// firing and those resolved shortly before.
    async fn assemble(config: &Config, core: &Core) -> Result<Outputs, Error> {
        let executor =
            Executor::new("sink", sink_threads(), SINK_NICE).map_err(|source| Error::Start {
                what: "sink runtime",
                source,
            })?;
        evaluation::restore(&core.analytics, &core.engine).await;
        let (firing, resolved) = {
            let evaluator = core.analytics.evaluator();
            let recent = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .saturating_sub(RESOLVED_RETOLD_NS);
            (evaluator.firing(), evaluator.resolved_since(recent))
        };
        let (dead_letter_channel, dead_letters) = DeadLetterChannel::new();
        let sinks = {
            let _sink_runtime = executor.enter();
            assembly::assemble(
                config,
                &core.sink_metrics,
                core.telemetry.registry(),
                &dead_letter_channel,
                Restored {
                    firing: &firing,
                    resolved: &resolved,
                },
            )?
        };
        let runners = sinks
            .delivering
            .iter()
            .chain(&sinks.remote_write)
            .map(|sink| sink.runner(RunnerTuning::default()))
            .collect();
        Ok(Outputs {
            executor,
            sinks,
            runners,
            dead_letters,
        })
    }
}

/// The three listeners, bound, with their TLS and timeouts.
struct Listeners {
    grpc: (TcpListener, Listening),
    http: (TcpListener, Listening),
    api: (TcpListener, Listening),
    bound: Bound,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Listeners, Error> {
        let otlp = &config.receivers.otlp;
        let (grpc_listening, http_listening) = otlp.listening()?;
        let api_listening = config.api.listening()?;
        let grpc = bind("receivers.otlp.grpc_address", &otlp.grpc_address).await?;
        let http = bind("receivers.otlp.http_address", &otlp.http_address).await?;
        let api = bind("api.address", &config.api.address).await?;
        let local = |l: &TcpListener, key: &'static str| {
            l.local_addr().map_err(|source| Error::Bind {
                key,
                address: String::new(),
                source,
            })
        };
        let bound = Bound {
            grpc: local(&grpc, "receivers.otlp.grpc_address")?,
            http: local(&http, "receivers.otlp.http_address")?,
            api: local(&api, "api.address")?,
        };
        Ok(Listeners {
            grpc: (grpc, grpc_listening),
            http: (http, http_listening),
            api: (api, api_listening),
            bound,
        })
    }
}

/// The running collector: its tasks, and the switches that stop them.
struct Running {
    bound: Bound,
    store: ParquetStore,
    engine: Arc<QueryEngine>,
    ready: Arc<AtomicBool>,
    stop_receivers: watch::Sender<bool>,
    stop_api: watch::Sender<bool>,
    stop_flusher: watch::Sender<bool>,
    stop_sinks: watch::Sender<bool>,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    api: tokio::task::JoinHandle<std::io::Result<()>>,
    flusher: tokio::task::JoinHandle<()>,
    evaluation: tokio::task::JoinHandle<()>,
    sink_tasks: Vec<Task<()>>,
    /// Last: the sinks' runtime outlives their tasks.
    _executor: Executor,
}

impl Running {
    /// Starts the receivers, the API, the flusher, the sinks and the evaluation loop.
    fn start(
        config: &Config,
        core: Core,
        outputs: Outputs,
        pipeline: Pipeline,
        listeners: Listeners,
    ) -> Running {
        let (stop_receivers, receivers_rx) = watch::channel(false);
        let (stop_api, api_rx) = watch::channel(false);
        let (stop_flusher, flusher_rx) = watch::channel(false);
        let (stop_sinks, sinks_rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
        let otlp = &config.receivers.otlp;
        let (grpc_listener, grpc_listening) = listeners.grpc;
        let grpc = tokio::spawn(grpc::serve(
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
        let (http_listener, http_listening) = listeners.http;
        let http = tokio::spawn(http_listening.serve_http(
            http_listener,
            http_app,
            stopped(receivers_rx.clone()),
        ));
        let telemetry = Arc::new(core.telemetry);
        let api_app = api::router(ApiState {
            engine: Arc::clone(&core.engine),
            pipeline: pipeline.clone(),
            telemetry: Arc::clone(&telemetry),
            ready: Arc::clone(&ready),
            auth_token: config.api.auth_token.clone(),
            analytics: Arc::clone(&core.analytics),
        });
        let (api_listener, api_listening) = listeners.api;
        let api = tokio::spawn(api_listening.serve_http(api_listener, api_app, stopped(api_rx)));
        let flusher = tokio::spawn(core.store.clone().run_flusher(stopped(flusher_rx)));
        let executor = outputs.executor;
        let sinks = outputs.sinks;
        let mut sink_tasks: Vec<_> = outputs
            .runners
            .into_iter()
            .map(|runner| executor.spawn(runner.run(stopped(sinks_rx.clone()))))
            .collect();
        // What the sinks refuse for good flows on into the pipeline, as the sinks do.
        sink_tasks.push(executor.spawn(assembly::store_dead_letters(
            outputs.dead_letters,
            pipeline.clone(),
            stopped(sinks_rx.clone()),
        )));
        if let (Some(handle), Some(rw)) =
            (sinks.remote_write, &config.sinks.prometheus_remote_write)
        {
            sink_tasks.push(executor.spawn(assembly::snapshots(
                handle,
                rw.interval(),
                Arc::clone(&telemetry),
                listeners.bound.api.to_string(),
                stopped(sinks_rx),
            )));
        }
        let evaluation = tokio::spawn({
            let (analytics, pipeline) = (Arc::clone(&core.analytics), pipeline);
            let stop = stopped(receivers_rx);
            async move {
                if analytics.config.enabled {
                    evaluation::evaluate(analytics, pipeline, stop).await;
                }
            }
        });
        ready.store(true, Ordering::Release);
        Running {
            bound: listeners.bound,
            store: core.store,
            engine: core.engine,
            ready,
            stop_receivers,
            stop_api,
            stop_flusher,
            stop_sinks,
            grpc,
            http,
            api,
            flusher,
            evaluation,
            sink_tasks,
            _executor: executor,
        }
    }

    /// Serves until `shutdown` resolves (or the gRPC server fails on its own), then
    /// shuts down.
    async fn serve(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => {}
            result = &mut self.grpc => {
                joined("OTLP gRPC", result)?;
                return Err(Error::Server {
                    server: "OTLP gRPC",
                    failure: ServerFailure::Stopped,
                });
            }
        }
        self.shutdown().await
    }

    /// Stops in the order that loses nothing: queries cancelled, receivers drained
    /// (in-flight requests finish), the evaluation loop, a final flush of every
    /// buffered row, the sinks (what they have not sent waits in their queues), and
    /// the API last.
    async fn shutdown(self) -> Result<(), Error> {
        tracing::info!("shutting down: draining receivers");
        self.ready.store(false, Ordering::Release);
        // Queries are cancelled first: a runaway plan neither holds the CPU the final
        // flush needs nor keeps the API from draining.
        self.engine.close();
        let _ = self.stop_receivers.send(true);
        let grpc_result = joined("OTLP gRPC", self.grpc.await);
        let http_result = joined("OTLP HTTP", self.http.await);
        let _ = self.evaluation.await;

        tracing::info!("shutting down: flushing buffered rows");
        let _ = self.stop_flusher.send(true);
        let _ = self.flusher.await;
        let flushed = self.store.flush().await;

        let _ = self.stop_sinks.send(true);
        for task in self.sink_tasks {
            let _ = task.await;
        }

        let _ = self.stop_api.send(true);
        // Cancelled queries answer at once; a connection that still does not finish (a
        // client that reads its answer slowly) is not waited for past this.
        let api_result = match tokio::time::timeout(API_DRAIN, self.api).await {
            Ok(result) => joined("API", result),
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
}

/// A server task's outcome as the collector's error.
fn joined<E: std::fmt::Display>(
    name: &'static str,
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> Result<(), Error> {
    let failure = match result {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => ServerFailure::Failed(e.to_string()),
        Err(e) => ServerFailure::Task(e),
    };
    Err(Error::Server {
        server: name,
        failure,
    })
}
