"""An agent as frameworks instrument one: an `invoke_agent` span around two chat calls
made by the real OpenAI SDK under one real instrumentation, exported over OTLP/HTTP.

    python agent.py INSTRUMENTATION OTLP_HTTP_ENDPOINT

INSTRUMENTATION is `openai-v2` (OpenTelemetry's), `openinference` or `openllmetry`.
The model API is a stand-in on loopback that answers every chat completion with the
same usage (1000 prompt and 200 completion tokens, model gpt-4o-mini-2024-07-18).
The agent span reports the total of its calls, as the GenAI conventions recommend.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from openai import OpenAI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "done"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200},
}


class ModelApi(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps(COMPLETION).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def instrument(name, provider):
    if name == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    elif name == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    elif name == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    else:
        raise SystemExit(f"unknown instrumentation {name}")
    OpenAIInstrumentor().instrument(tracer_provider=provider)


def main():
    name, endpoint = sys.argv[1], sys.argv[2]
    api = HTTPServer(("127.0.0.1", 0), ModelApi)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    provider = TracerProvider(resource=Resource.create({"service.name": f"agents-{name}"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))
    )
    trace.set_tracer_provider(provider)
    instrument(name, provider)
    client = OpenAI(base_url=f"http://127.0.0.1:{api.server_port}/v1", api_key="test")
    tracer = trace.get_tracer("agent")
    with tracer.start_as_current_span(
        "invoke_agent researcher",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.id": f"{name}-agent",
            "gen_ai.agent.name": "researcher",
            "gen_ai.usage.input_tokens": 2000,
            "gen_ai.usage.output_tokens": 400,
        },
    ):
        for question in ["plan", "act"]:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": question}],
            )
    provider.shutdown()


if __name__ == "__main__":
    main()
