"""Unpriced is never $0: a call to a model without a known price leaves every total marked incomplete, with the
number of calls it misses, in the cumulative attributes, health(), the metrics and MLflow (real store and server)."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry import trace

import mltrack_otel
from mltrack_otel import config, guard, ledger, provider, semconv
from tests.mlflow_server import mlflow_server  # noqa: F401  (module-scoped fixture)
from tests.test_metrics import points
from tests.traced import by_name

GPT4O_USAGE = {"prompt_tokens": 100, "completion_tokens": 20}
UNKNOWN_USAGE = {"prompt_tokens": 7, "completion_tokens": 3}


def _priced_call(tracker) -> None:
    tracker.log_prompt_response("q", "a", model="gpt-4o", provider="openai", token_usage=GPT4O_USAGE)


def _unpriced_call(tracker) -> None:
    tracker.log_prompt_response("q", "a", model="acme-unknown", provider="acme", token_usage=UNKNOWN_USAGE)


# --- cumulative attributes and health() -------------------------------------------------------------------------


def _all_unpriced_and_mixed_contexts() -> None:
    """Two contexts: "all-unpriced" (two unpriced calls) and "mixed" (one priced, one unpriced)."""
    with mltrack_otel.track_llm_context("all-unpriced") as tracker:
        _unpriced_call(tracker)
        _unpriced_call(tracker)
    with mltrack_otel.track_llm_context("mixed") as tracker:
        _priced_call(tracker)
        _unpriced_call(tracker)


def test_context_root_marks_its_cumulative_cost_incomplete(pipeline):
    _all_unpriced_and_mixed_contexts()
    with mltrack_otel.track_llm_context("all-priced") as tracker:
        _priced_call(tracker)
    spans = by_name(pipeline.memory_exporter)

    all_unpriced = spans["all-unpriced"].attributes
    assert all_unpriced[semconv.LLM_COST_CUMULATIVE] == 0.0
    assert all_unpriced[semconv.LLM_COST_CUMULATIVE_UNPRICED_CALLS] == 2  # so 0.0 is a lower bound, not a price
    mixed = spans["mixed"].attributes
    assert mixed[semconv.LLM_COST_CUMULATIVE] > 0
    assert mixed[semconv.LLM_COST_CUMULATIVE_UNPRICED_CALLS] == 1
    assert semconv.LLM_COST_CUMULATIVE_UNPRICED_CALLS not in spans["all-priced"].attributes

    # The counted unpriced call itself: no cost attributes at all, its running totals marked too.
    calls = [s for s in pipeline.memory_exporter.get_finished_spans() if s.attributes.get("gen_ai.request.model")]
    unpriced = [s.attributes for s in calls if s.attributes["gen_ai.request.model"] == "acme-unknown"]
    assert len(unpriced) == 3
    for attrs in unpriced:
        assert attrs[semconv.MLTRACK_COST_UNPRICED] is True
        assert semconv.LLM_COST_TOTAL not in attrs
        assert attrs[semconv.LLM_COST_CUMULATIVE_UNPRICED_CALLS] >= 1


def test_a_local_root_under_a_remote_parent_gets_the_unpriced_trace_tag(pipeline):
    """A service's root span whose parent is in the caller's process (distributed tracing) is this process's root:
    MLflow gets the tag saying its cost misses calls there too."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from mltrack_otel.exporters.mlflow_attributes import UNPRICED_TAG, for_mlflow

    caller = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1))
    with trace.use_span(NonRecordingSpan(caller)):  # the parent an incoming request's traceparent names
        with mltrack_otel.track_llm_context("served") as tracker:
            _priced_call(tracker)
            _unpriced_call(tracker)
    served = by_name(pipeline.memory_exporter)["served"]
    assert served.parent is not None and served.parent.is_remote
    assert served.attributes[semconv.LLM_COST_CUMULATIVE_UNPRICED_CALLS] == 1
    (copy,) = for_mlflow([served])
    assert copy.attributes[UNPRICED_TAG] == "1"


def test_health_says_the_process_total_is_incomplete_and_by_how_many_calls(pipeline):
    with mltrack_otel.track_llm_context("priced") as tracker:
        _priced_call(tracker)
    health = mltrack_otel.health()
    assert "totals.cost_incomplete" not in health and "totals.unpriced_calls" not in health

    with mltrack_otel.track_llm_context("unpriced") as tracker:
        _unpriced_call(tracker)
        _unpriced_call(tracker)
    health = mltrack_otel.health()
    assert health["totals.cost_incomplete"] == 1
    assert health["totals.unpriced_calls"] == 2 == mltrack_otel.totals().unpriced_calls


# --- metrics ----------------------------------------------------------------------------------------------------


def test_metrics_count_unpriced_calls_from_other_instrumentation_and_never_a_zero_cost(pipeline):
    """OpenInference spans name no gen_ai.operation.name: their calls must still reach the cost and unpriced sums."""
    tracer = trace.get_tracer("openinference.instrumentation.test")
    for model, tokens in (("gpt-4o", (1000, 100)), ("acme-unknown", (7, 3)), ("acme-unknown", (7, 3))):
        with tracer.start_as_current_span(
            "ChatCompletion",
            attributes={
                "openinference.span.kind": "LLM",
                "llm.provider": "openai" if model == "gpt-4o" else "acme",
                "llm.model_name": model,
                "llm.token_count.prompt": tokens[0],
                "llm.token_count.completion": tokens[1],
            },
        ):
            pass
    assert pipeline.processor.force_flush(5000)
    data = points(pipeline.metric_reader)

    (unpriced,) = data["mltrack.client.calls.unpriced"]
    assert unpriced.value == 2 == mltrack_otel.totals().unpriced_calls
    assert unpriced.attributes["gen_ai.provider.name"] == "acme"
    assert unpriced.attributes["gen_ai.request.model"] == "acme-unknown"
    costs = data["mltrack.client.cost"]
    assert [p.attributes["gen_ai.request.model"] for p in costs] == ["gpt-4o"]  # no 0.0 series for the unknown model
    assert costs[0].value == pytest.approx(float(mltrack_otel.totals().cost_usd))


# --- MLflow: no cost rather than $0, and a marker on a partly priced trace ---------------------------------------

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def mlflow_pipeline(isolated_env, monkeypatch, request):
    """configure() exporting to a real MLflow store (sqlite) or server, plus memory; yields (tracking uri, name)."""
    for var in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    ledger.LEDGER.reset()
    guard.reset()
    if request.param == "sqlite":
        uri = f"sqlite:///{isolated_env / 'mlflow.db'}"
    else:
        uri = request.getfixturevalue("mlflow_server")
    name = f"unpriced-{uuid.uuid4().hex[:8]}"
    mltrack_otel.configure(exporters=["mlflow", "memory"], mlflow_tracking_uri=uri, mlflow_experiment_name=name)
    yield uri, name
    mltrack_otel.shutdown()
    ledger.LEDGER.reset()
    config.set_current(None)


def _mlflow_trace_id(rt, root_name: str) -> str:
    (root,) = [s for s in rt.memory_exporter.get_finished_spans() if s.name == root_name]
    return f"tr-{root.context.trace_id:032x}"


@pytest.mark.parametrize("mlflow_pipeline", ["sqlite", "server"], indirect=True)
def test_mlflow_shows_no_cost_for_unpriced_calls_and_marks_partial_totals(mlflow_pipeline):
    uri, _ = mlflow_pipeline
    _all_unpriced_and_mixed_contexts()
    rt = provider.runtime()
    ids = {name: _mlflow_trace_id(rt, name) for name in ("all-unpriced", "mixed")}
    priced = [s for s in rt.memory_exporter.get_finished_spans() if s.attributes.get(semconv.LLM_COST_TOTAL)]
    assert len(priced) == 1
    assert rt.processor.force_flush(60_000)  # the first export imports mlflow and creates the store

    client = mlflow.MlflowClient(uri)
    all_unpriced = client.get_trace(ids["all-unpriced"])
    assert all_unpriced.info.cost is None  # not {"total_cost": 0.0}
    assert all_unpriced.info.token_usage["total_tokens"] == 2 * 10  # the tokens are still there
    assert all_unpriced.info.tags["llm.cost.cumulative.unpriced_calls"] == "2"
    for span in all_unpriced.data.spans:
        assert span.llm_cost is None
    calls = [s for s in all_unpriced.data.spans if s.get_attribute("mlflow.chat.tokenUsage")]
    assert len(calls) == 2 and all(s.get_attribute("gen_ai.request.model") == "acme-unknown" for s in calls)

    mixed = client.get_trace(ids["mixed"])
    assert mixed.info.cost["total_cost"] == pytest.approx(priced[0].attributes[semconv.LLM_COST_TOTAL])
    assert mixed.info.tags["llm.cost.cumulative.unpriced_calls"] == "1"  # that total is a lower bound
    costs = {s.get_attribute("gen_ai.request.model"): s.llm_cost for s in mixed.data.spans if s.parent_id}
    assert costs["acme-unknown"] is None
    assert costs["gpt-4o"]["total_cost"] == pytest.approx(priced[0].attributes[semconv.LLM_COST_TOTAL])


def test_mlflow_run_metrics_say_how_many_calls_the_run_cost_misses(mlflow_pipeline_sqlite):
    uri = mlflow_pipeline_sqlite
    with mlflow.start_run() as run:
        with mltrack_otel.track_llm_context("mixed") as tracker:
            _priced_call(tracker)
            _unpriced_call(tracker)
        assert provider.runtime().processor.force_flush(30_000)
    metrics = mlflow.MlflowClient(uri).get_run(run.info.run_id).data.metrics
    assert metrics["llm.cost.cumulative"] == pytest.approx(float(mltrack_otel.totals().cost_usd))
    assert metrics["llm.cost.cumulative.unpriced_calls"] == 1


@pytest.fixture
def mlflow_pipeline_sqlite(isolated_env, monkeypatch):
    for var in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    ledger.LEDGER.reset()
    uri = f"sqlite:///{isolated_env / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mltrack_otel.configure(exporters=["mlflow"], mlflow_tracking_uri=uri)
    yield uri
    mltrack_otel.shutdown()
    ledger.LEDGER.reset()
    config.set_current(None)
