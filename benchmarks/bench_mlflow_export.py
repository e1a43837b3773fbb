"""MlflowSpanExporter throughput: spans per second into an embedded sqlite store and a real `mlflow server`.

    python -m benchmarks.bench_mlflow_export [--traces 200] [--no-server]

Spans are real SDK spans shaped like ours (a @track root, an uncounted framework wrapper, a counted chat
call with messages and cost, a tool call), made once and then exported the way a BatchSpanProcessor does
(batches of 512) and the way a SimpleSpanProcessor does (one span per export). Each measurement writes to
a fresh experiment. Starts the server with tests/mlflow_server.py (about 5 s, not counted).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mltrack_otel import semconv
from mltrack_otel.exporters.mlflow import MlflowSpanExporter

MESSAGES_IN = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "What is the weather? " * 20}]}])
MESSAGES_OUT = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Sunny. " * 40}]}])
CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 300,
    "gen_ai.input.messages": MESSAGES_IN,
    "gen_ai.output.messages": MESSAGES_OUT,
    semconv.LLM_TOKENS_PROMPT: 1200,
    semconv.LLM_TOKENS_COMPLETION: 300,
    semconv.LLM_TOKENS_TOTAL: 1500,
    semconv.LLM_COST_TOTAL: 0.00036,
}
COST = json.dumps({"input_cost": 0.00018, "output_cost": 0.00018, "total_cost": 0.00036})


def make_spans(traces: int) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for _ in range(traces):
        with tracer.start_as_current_span("agent_step", attributes={semconv.MLTRACK_SCOPE_NAME: "step"}):
            with tracer.start_as_current_span("ChatOpenAI", attributes={**CHAT, semconv.MLTRACK_USAGE_COUNTED: False}):
                with tracer.start_as_current_span(
                    "chat gpt-4o-mini",
                    attributes={**CHAT, semconv.MLTRACK_USAGE_COUNTED: True, semconv.MLFLOW_LLM_COST: COST},
                ):
                    pass
            with tracer.start_as_current_span(
                "execute_tool search",
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.call.arguments": '{"q": "x"}'},
            ):
                pass
    return list(memory.get_finished_spans())


def measure(uri: str, spans: list, batch: int) -> float:
    exporter = MlflowSpanExporter(uri, experiment_name=f"bench-{uuid.uuid4().hex[:8]}")
    exporter.export(make_spans(1))  # warm-up: imports, experiment creation, connection
    started = time.perf_counter()
    for i in range(0, len(spans), batch):
        result = exporter.export(spans[i : i + batch])
        if result.name != "SUCCESS":
            raise RuntimeError(f"export failed at {uri}")
    elapsed = time.perf_counter() - started
    exporter.shutdown()
    return len(spans) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=200, help="traces per measurement (4 spans each)")
    parser.add_argument("--no-server", action="store_true", help="skip the mlflow server measurement")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    spans = make_spans(args.traces)
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("sqlite (embedded)", f"sqlite:///{Path(tmp) / 'mlflow.db'}", None)]
        if not args.no_server:
            from tests.mlflow_server import start_mlflow_server

            started = time.perf_counter()
            url, stop = start_mlflow_server(Path(tmp) / "server")
            print(f"mlflow server ready in {time.perf_counter() - started:.1f} s")
            targets.append(("mlflow server (http)", url, stop))
        try:
            for label, uri, _ in targets:
                for batch in (512, 1):
                    sample = spans if batch > 1 else spans[: min(len(spans), 200)]
                    rate = measure(uri, sample, batch)
                    print(f"{label:22s} batch={batch:<4d} {len(sample):5d} spans  {rate:8.0f} spans/s")
        finally:
            for _, _, stop in targets:
                if stop is not None:
                    stop()


if __name__ == "__main__":
    main()
