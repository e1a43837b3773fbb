"""An application that mixes MLflow autolog with mltrack-otel, run in a subprocess by tests/test_mlflow_autolog.py.

MLflow's autolog patches, its tracer provider and the OpenTelemetry global provider are process-wide and cannot
be undone cleanly, so each mix runs in a fresh interpreter. It makes real SDK calls against the fake provider
and prints one JSON line: what our pipeline counted and, read back from the MLflow store, one entry per trace.

    python -m tests.mlflow_autolog_app MIX CALLS FAKE_PROVIDER_URL TRACKING_URI EXPERIMENT

CALLS: comma-separated kinds of call, one call each: openai, openai-stream, openai-stream-usage,
openai-unpriced, anthropic. Autolog is on for both SDKs.

MIX: "ours+autolog" (configure + instrument + autolog), "autolog+configure" (configure + autolog, no instrument),
"autolog+processor" (autolog + a CostSpanProcessor the user adds to the global provider; no configure).
"""

from __future__ import annotations

import json
import sys
from typing import Any

# Our prices, far from MLflow's own (gpt-4o: $2.50 / $10 per million tokens), so that whose price MLflow shows is plain.
PRICES = {
    "gpt-4o-2024-08-06": {"input_per_mtok": 1, "output_per_mtok": 3},  # the model the response names
    "claude-3-5-sonnet-20241022": {"input_per_mtok": 1, "output_per_mtok": 3},
}


def _call(kind: str, url: str) -> None:
    """One call of a kind: "openai", "openai-stream", "openai-stream-usage", "openai-unpriced" or
    "anthropic"."""
    if kind.startswith("openai"):
        import openai

        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)
        messages = [{"role": "user", "content": "hello"}]
        if kind.startswith("openai-stream"):
            # "openai-stream-usage" asks for the usage chunk, as instrument() does for the caller (else MLflow's span
            # of the stream carries no usage).
            options = {"stream_options": {"include_usage": True}} if kind == "openai-stream-usage" else {}
            for _ in client.chat.completions.create(model="gpt-4o", messages=messages, stream=True, **options):
                pass
        else:  # "openai-unpriced": a model no price list knows
            model = "mystery-llm-1" if kind == "openai-unpriced" else "gpt-4o"
            client.chat.completions.create(model=model, messages=messages)
    else:
        import anthropic

        client = anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0)
        client.messages.create(
            model="claude-3-5-sonnet-20241022", max_tokens=64, messages=[{"role": "user", "content": "hello"}]
        )


def _autolog(disable: bool = False) -> None:
    import mlflow

    mlflow.openai.autolog(disable=disable, silent=True)
    mlflow.anthropic.autolog(disable=disable, silent=True)


def _traces(uri: str, experiment: str) -> list[dict[str, Any]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    out = []
    for trace in client.search_traces(locations=[found.experiment_id], max_results=100):
        info = trace.info
        out.append(
            {
                "id": info.trace_id,
                "spans": sorted(span.name for span in trace.data.spans),
                "tokens": info.token_usage,
                "cost": info.cost,
            }
        )
    return out


def main(mix: str, calls: str, url: str, uri: str, experiment: str) -> dict[str, Any]:
    import mlflow

    import mltrack_otel
    from mltrack_otel import ledger, provider

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    spans: list[Any] = []
    if mix in ("ours+autolog", "autolog+configure"):
        _autolog()
        mltrack_otel.configure(
            exporters=["mlflow", "memory"],
            mlflow_tracking_uri=uri,
            mlflow_experiment_name=experiment,
            price_overrides=PRICES,
        )
        if mix == "ours+autolog":
            mltrack_otel.instrument(["openai", "anthropic"])
    elif mix == "autolog+processor":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from mltrack_otel import CostSpanProcessor

        memory = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        pricer = mltrack_otel.Pricer(PRICES)
        tracer_provider.add_span_processor(CostSpanProcessor(SimpleSpanProcessor(memory), pricer=pricer))
        trace.set_tracer_provider(tracer_provider)
        _autolog()
    else:
        raise SystemExit(f"unknown mix {mix!r}")

    for kind in calls.split(","):
        _call(kind, url)

    rt = provider.runtime()
    if rt is not None and rt.memory_exporter is not None:
        spans = list(rt.memory_exporter.get_finished_spans())
    elif mix == "autolog+processor":
        spans = list(memory.get_finished_spans())

    mlflow.flush_trace_async_logging(terminate=True)
    provider.shutdown()
    _autolog(disable=True)
    totals = ledger.totals()
    return {
        "calls": totals.calls,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "cost": str(totals.cost_usd),
        "unpriced_calls": totals.unpriced_calls,
        "estimated_calls": totals.estimated_calls,
        "estimated_cost": str(totals.estimated_cost_usd),
        "spans": [
            {
                "name": span.name,
                "trace": f"tr-{span.context.trace_id:032x}",
                "counted": (span.attributes or {}).get("mltrack.usage.counted"),
                "cost": (span.attributes or {}).get("llm.cost.total"),
                "tokens": (span.attributes or {}).get("llm.tokens.total"),
            }
            for span in spans
        ],
        "traces": _traces(uri, experiment),
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(*sys.argv[1:]), default=str))
