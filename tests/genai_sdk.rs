//! GenAI usage as the real OpenAI SDK reports it: an agent (`tests/genai/agent.py`)
//! makes two chat calls under each of the three instrumentations agents use
//! (OpenTelemetry's openai-v2, OpenInference, OpenLLMetry) inside an `invoke_agent`
//! span that also reports their total, and exports over OTLP/HTTP with the Python SDK.
//! `genai_usage` attributes each call to the agent, counts the spend once and prices it.
//!
//! The Python packages are pinned in `tests/genai/requirements.txt`; `bash .ci/run`
//! installs them into a venv and names its interpreter in `SWARMSCOPE_PYTHON`.

mod common;

use std::process::Command;

use common::{temp_data_dir, Server};
use serde_json::json;

#[test]
fn calls_under_three_real_instrumentations_are_attributed_to_their_agent_and_priced_once() {
    let python = common::python("the GenAI instrumentation tests");
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/genai/agent.py");
    for instrumentation in ["openai-v2", "openinference", "openllmetry"] {
        let out = Command::new(&python)
            .args([script, instrumentation, &server.http])
            .output()
            .expect("run the agent");
        assert!(
            out.status.success(),
            "{instrumentation}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The SDK's exporter returns once the collector acknowledged: the rows are there.
    let rows = server.rows(
        "SELECT service_name, agent_id, agent_name, count(*), sum(input_tokens), \
         sum(output_tokens), round(sum(cost_usd), 9), max(model) \
         FROM genai_usage GROUP BY 1, 2, 3 ORDER BY 1",
    );
    // Two calls of 1000 + 200 tokens of gpt-4o-mini (0.15 and 0.60 USD per million);
    // the agent span's total of them (2000 + 400) is not counted again.
    let expected: Vec<Vec<serde_json::Value>> = ["openai-v2", "openinference", "openllmetry"]
        .iter()
        .map(|i| {
            vec![
                json!(format!("agents-{i}")),
                json!(format!("{i}-agent")),
                json!("researcher"),
                json!(2),
                json!(2000),
                json!(400),
                json!(0.00054),
                json!("gpt-4o-mini-2024-07-18"),
            ]
        })
        .collect();
    assert_eq!(rows, expected);
    assert!(server.stop().success());
}
