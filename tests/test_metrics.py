"""Metrics recorded from enriched spans: token usage and duration histograms, cost and unpriced counters."""

from __future__ import annotations

from decimal import Decimal

import pytest
from opentelemetry import trace

import mltrack_otel
from mltrack_otel import metrics as our_metrics
from mltrack_otel import provider


def points(reader) -> dict[str, list]:
    out: dict[str, list] = {}
    for resource_metrics in reader.get_metrics_data().resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def test_metrics_count_each_model_call_once_with_the_conventions_buckets(pipeline):
    tracer = trace.get_tracer("framework")
    tracker = mltrack_otel.LLMTracker()
    # A framework span describing the same call as the provider span inside it: only the inner one counts.
    wrapper = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
    }
    with tracer.start_as_current_span("chat gpt-4o [framework]", attributes=wrapper):
        tracker.log_prompt_response(
            "q", "a", model="gpt-4o", provider="openai", token_usage={"prompt_tokens": 1000, "completion_tokens": 100}
        )
    tracker.log_prompt_response(
        "q", "a", model="acme-unknown", provider="acme", token_usage={"prompt_tokens": 7, "completion_tokens": 3}
    )
    rt = provider.runtime()
    assert rt.processor.force_flush(5000)
    data = points(rt.metric_reader)

    usage = {
        p.attributes["gen_ai.token.type"]: p
        for p in data["gen_ai.client.token.usage"]
        if p.attributes["gen_ai.request.model"] == "gpt-4o"
    }
    assert usage["input"].sum == 1000 and usage["input"].count == 1  # not 2000: the wrapper is not counted
    assert usage["output"].sum == 100
    assert tuple(usage["input"].explicit_bounds) == our_metrics.TOKEN_BUCKETS

    (cost,) = data["mltrack.client.cost"]
    assert cost.value == pytest.approx(float(mltrack_otel.totals().cost_usd))
    assert Decimal(str(cost.value)) == pytest.approx(Decimal("0.0035"))  # 1000 x $2.50 + 100 x $10.00, per 1M

    (unpriced,) = data["mltrack.client.calls.unpriced"]
    assert unpriced.value == 1 and unpriced.attributes["gen_ai.provider.name"] == "acme"

    durations = data["gen_ai.client.operation.duration"]
    assert sum(p.count for p in durations) == 2  # the two model calls, not the wrapper
    assert tuple(durations[0].explicit_bounds) == our_metrics.DURATION_BUCKETS
