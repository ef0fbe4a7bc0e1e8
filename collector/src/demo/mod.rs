//! `swarmscope demo`: a simulated agent swarm ([`swarm`]) sent as OTLP over gRPC to a
//! collector, one export per tick, with an injected anomaly on the `tools` service
//! from half to four fifths of the run.

mod swarm;

use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

pub use swarm::{Phase, Swarm, ANOMALOUS_SERVICE, TEAMS};

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The OTLP gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    pub agents: usize,
    pub duration: Duration,
    pub seed: u64,
    /// Time between two exports.
    pub tick: Duration,
}

/// Where a run stands, for the progress line.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub elapsed: Duration,
    pub spans: u64,
    pub completed: u64,
    pub failed: u64,
    pub conflicts: u64,
    pub phase: Phase,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>4}s  {} spans sent  {} items done, {} failed  {} conflicting claims  {}",
            self.elapsed.as_secs(),
            self.spans,
            self.completed,
            self.failed,
            self.conflicts,
            match self.phase {
                Phase::Normal => "",
                Phase::Anomaly => "[anomaly: tools failing and slow]",
            }
        )
    }
}

/// The phase at `elapsed` of a run of `duration`.
pub fn phase(elapsed: Duration, duration: Duration) -> Phase {
    let share = elapsed.as_secs_f64() / duration.as_secs_f64().max(1e-9);
    if (0.5..0.8).contains(&share) {
        Phase::Anomaly
    } else {
        Phase::Normal
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs the swarm for `options.duration`, calling `progress` after every export.
pub async fn run(
    options: &DemoOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<Progress, String> {
    let mut client = TraceServiceClient::connect(options.endpoint.clone())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", options.endpoint))?;
    let mut swarm = Swarm::new(options.agents, options.seed);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(options.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed();
        if elapsed >= options.duration {
            break;
        }
        let phase = phase(elapsed, options.duration);
        let request = swarm.tick(now_ns(), phase);
        client.export(request).await.map_err(|status| {
            format!(
                "export to {} failed: {}",
                options.endpoint,
                status.message()
            )
        })?;
        progress(&Progress {
            elapsed,
            spans: swarm.spans,
            completed: swarm.completed,
            failed: swarm.failed,
            conflicts: swarm.conflicts,
            phase,
        });
    }
    Ok(Progress {
        elapsed: started.elapsed(),
        spans: swarm.spans,
        completed: swarm.completed,
        failed: swarm.failed,
        conflicts: swarm.conflicts,
        phase: Phase::Normal,
    })
}
