//! The `swarmscope` command: parses arguments and hands over to the library crates.
//!
//! Exit codes: 0 success, 2 bad usage or invalid config, 1 runtime failure, 130 when
//! a query is interrupted by Ctrl-C.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use swarmscope_collector::{service, Config};
use swarmscope_queries::{encode, QueryConfig, QueryEngine, QueryResult};
use swarmscope_sinks::store::ParquetStore;

/// jemalloc, with one arena, small thread caches, and a background thread that returns
/// pages left unused for 10 s (jemalloc's own default) to the system: glibc's malloc
/// gives each of the runtime's blocking threads an arena of its own and keeps what they
/// free, so the peak RSS under load was several times the working set. Under steady
/// load every request and flush reuses what the one before freed; returning it after
/// 300 ms, as before, made the kernel fault and zero those pages in again (twice the
/// page faults, for a few MiB less peak RSS). The measurements behind each option are in
/// `benches/RESULTS.md` (2026-11-24, 2026-12-03 session 7).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol at start-up (`MALLOC_CONF` syntax);
/// the environment variable `_RJEM_MALLOC_CONF` still overrides them.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] =
    b"background_thread:true,narenas:1,tcache_max:1024,dirty_decay_ms:10000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(
    name = "swarmscope",
    version,
    about = "Telemetry pipeline and analytics collector for fleets of AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector: OTLP on 4317 (gRPC) and 4318 (HTTP), API on 8080.
    Serve {
        /// TOML configuration file; every key is optional.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the Parquet history lives (overrides storage.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run SQL over the history, directly on a data directory or through a server.
    Query {
        /// Read this data directory directly (default ./swarmscope-data).
        #[arg(long, conflicts_with = "server")]
        data_dir: Option<PathBuf>,
        /// Ask a running server, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        server: Option<String>,
        /// Bearer token for --server.
        #[arg(long, env = "SWARMSCOPE_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Output format; `table` when writing to a terminal, `csv` otherwise.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Cancel the query after this many milliseconds (with --data-dir; a server
        /// applies its own query.timeout_ms).
        #[arg(long, default_value_t = QueryConfig::default().timeout_ms)]
        timeout_ms: u64,
        /// The statement.
        sql: String,
    },
    /// Simulate an agent swarm and send it as OTLP to a collector.
    Demo {
        /// The collector's OTLP gRPC endpoint.
        #[arg(long, default_value = "http://127.0.0.1:4317")]
        endpoint: String,
        /// Agents in the swarm (spread over three teams).
        #[arg(long, default_value_t = 12)]
        agents: usize,
        /// How long to run, in seconds; the anomaly is injected from half to four
        /// fifths of it.
        #[arg(long, default_value_t = 150)]
        duration: u64,
        /// The same seed gives the same swarm.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and print the effective configuration.
    Check { file: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

/// A failure and the exit code it deserves.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl ToString) -> Failure {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }
    fn runtime(message: impl ToString) -> Failure {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }
}

fn main() -> ExitCode {
    // Every HTTPS client (sinks, `query --url`) uses rustls with ring.
    swarmscope_sinks::tls::install_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, data_dir } => serve(config, data_dir),
        Command::Query {
            data_dir,
            server,
            token,
            format,
            timeout_ms,
            sql,
        } => query(data_dir, server, token, format, timeout_ms, &sql),
        Command::Demo {
            endpoint,
            agents,
            duration,
            seed,
        } => demo(endpoint, agents, duration, seed),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Config::load(&file)
            .map(|c| print!("{}", c.to_toml_redacted()))
            .map_err(Failure::usage),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("swarmscope: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Threads for blocking work: flushes, compaction, and the file reads of queries.
/// Tokio's default (512) let the pool grow to 48 threads under the e2e load, each
/// holding its own allocator cache; more than this many on a few cores only queue.
const MAX_BLOCKING_THREADS: usize = 8;

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .map_err(Failure::runtime)
}

fn serve(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<(), Failure> {
    let mut config = match config {
        Some(path) => Config::load(&path).map_err(Failure::usage)?,
        None => Config::default(),
    };
    if let Some(dir) = data_dir {
        config.storage.data_dir = dir;
    }
    config.validate().map_err(Failure::usage)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // delta-rs and its kernel report every commit, snapshot and scan at
                // info: lines a flush.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "info,deltalake_core=warn,buoyant_kernel=warn",
                    )
                }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        service::run(config, shutdown, |bound| {
            println!("swarmscope: OTLP gRPC listening on {}", bound.grpc);
            println!("swarmscope: OTLP HTTP listening on {}", bound.http);
            println!("swarmscope: API listening on {}", bound.api);
        })
        .await
        .map_err(|e| match e.is_config() {
            true => Failure::usage(e),
            false => Failure::runtime(e),
        })
    })
}

fn demo(endpoint: String, agents: usize, duration: u64, seed: u64) -> Result<(), Failure> {
    if agents == 0 || duration == 0 {
        return Err(Failure::usage("--agents and --duration must be > 0"));
    }
    let options = swarmscope_collector::demo::DemoOptions {
        endpoint,
        agents,
        duration: std::time::Duration::from_secs(duration),
        seed,
        tick: std::time::Duration::from_millis(200),
    };
    eprintln!(
        "swarmscope demo: {} agents for {} s to {} (seed {}); the tools service goes wrong from {} s to {} s",
        options.agents,
        duration,
        options.endpoint,
        options.seed,
        duration / 2,
        duration * 4 / 5
    );
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    let done = runtime()?.block_on(swarmscope_collector::demo::run(&options, |p| {
        if terminal {
            eprint!("\r{p}\x1b[K");
        } else if last_line.elapsed() >= std::time::Duration::from_secs(5) {
            eprintln!("{p}");
            last_line = std::time::Instant::now();
        }
    }));
    if terminal {
        eprintln!();
    }
    let done = done.map_err(Failure::runtime)?;
    println!(
        "swarmscope demo: done: {} spans, {} items completed, {} failed, {} conflicting claims",
        done.spans, done.completed, done.failed, done.conflicts
    );
    Ok(())
}

/// SIGINT or SIGTERM. The handlers are installed here, before the service starts and
/// announces its addresses: a signal that arrives between the announcement and the
/// first poll of the returned future would otherwise meet the default disposition and
/// end the process without its final flush. Must be called within the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn query(
    data_dir: Option<PathBuf>,
    server: Option<String>,
    token: Option<String>,
    format: Option<Format>,
    timeout_ms: u64,
    sql: &str,
) -> Result<(), Failure> {
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Csv
    });
    let rt = runtime()?;
    let work = async {
        match server {
            Some(url) => query_server(&url, token.as_deref(), format, sql).await,
            None => {
                let dir = data_dir.unwrap_or_else(|| PathBuf::from("./swarmscope-data"));
                let store = ParquetStore::open_read_only(&dir)
                    .await
                    .map_err(Failure::usage)?;
                let config = QueryConfig {
                    timeout_ms,
                    ..QueryConfig::default()
                };
                config.validate().map_err(Failure::usage)?;
                let engine = QueryEngine::new(store, config).map_err(Failure::runtime)?;
                // The views a server has (velocity, genai_usage), with default settings.
                let analytics = swarmscope_processors::analytics::Analytics::new(
                    &Default::default(),
                    Vec::new(),
                );
                engine
                    .register_analytics(&analytics)
                    .await
                    .map_err(Failure::runtime)?;
                let result = engine.sql(sql).await.map_err(Failure::runtime)?;
                render(&result, format)
            }
        }
    };
    // Ctrl-C drops the query, which cancels it, and exits as a shell expects.
    let output = rt.block_on(async {
        tokio::select! {
            output = work => output,
            _ = tokio::signal::ctrl_c() => Err(Failure {
                code: 130,
                message: "interrupted".into(),
            }),
        }
    })?;
    print!("{output}");
    Ok(())
}

fn render(result: &QueryResult, format: Format) -> Result<String, Failure> {
    match format {
        Format::Table => encode::table(result).map(|t| t + "\n"),
        Format::Json => encode::json(result).map(|v| v.to_string() + "\n"),
        Format::Csv => encode::csv(result).map(|b| String::from_utf8_lossy(&b).into_owned()),
    }
    .map_err(Failure::runtime)
}

async fn query_server(
    url: &str,
    token: Option<&str>,
    format: Format,
    sql: &str,
) -> Result<String, Failure> {
    let accept = match format {
        Format::Table => "application/vnd.apache.arrow.stream",
        Format::Json => "application/json",
        Format::Csv => "text/csv",
    };
    let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .post(&endpoint)
        .header("accept", accept)
        .json(&serde_json::json!({ "sql": sql }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::runtime(format!("cannot reach {endpoint}: {e}")))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| Failure::runtime(format!("reading the answer of {endpoint}: {e}")))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(Failure::runtime(format!("{status}: {message}")));
    }
    match format {
        Format::Table => {
            let reader = arrow_ipc_reader(&body)?;
            render(&reader, Format::Table)
        }
        Format::Json => Ok(String::from_utf8_lossy(&body).into_owned() + "\n"),
        Format::Csv => Ok(String::from_utf8_lossy(&body).into_owned()),
    }
}

fn arrow_ipc_reader(body: &[u8]) -> Result<QueryResult, Failure> {
    let reader = arrow::ipc::reader::StreamReader::try_new(body, None).map_err(Failure::runtime)?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::runtime)?;
    Ok(QueryResult { schema, batches })
}
