"""The collector path: our OTLP exporter posting to a real MLflow server's /v1/traces (what a collector forwards).

configure(exporters=["otlp"]) -> CostSpanProcessor -> BatchSpanProcessor -> MlflowOtlpExporter -> OTLP/HTTP ->
`mlflow server` (tests/mlflow_server.py). A LangChain-like wrapper span carries the usage of the instrumented OpenAI
call inside it, as framework spans do. MLflow's trace totals must equal the ledger's: our price (a price override that
MLflow's catalog cannot know), the wrapper neither priced nor counted, and an unpriced call with no cost, not $0.
"""

from __future__ import annotations

import uuid

import openai
import pytest
from opentelemetry import trace

import mltrack_otel
from mltrack_otel import config, guard, ledger, provider, semconv
from mltrack_otel.config import Settings
from mltrack_otel.exporters.mlflow_attributes import MlflowOtlpExporter
from mltrack_otel.instrumentation import uninstrument
from tests.mlflow_server import mlflow_server  # noqa: F401  (module-scoped fixture)

mlflow = pytest.importorskip("mlflow")

# A negotiated price, not MLflow's catalog price for gpt-4o ($2.50 / $10.00 per 1M): MLflow could not guess it.
NEGOTIATED = {"input_per_mtok": "1.00", "output_per_mtok": "3.00"}
OVERRIDE = {"gpt-4o": NEGOTIATED, "gpt-4o-2024-08-06": NEGOTIATED}  # the request's model and the response's
UNPRICED_MODEL = "acme-private-model"


@pytest.fixture
def otlp_to_mlflow(isolated_env, mlflow_server, monkeypatch):  # noqa: F811
    """configure(**settings) exporting OTLP to the MLflow server and memory; yields (configure, client, experiment)."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    ledger.LEDGER.reset()
    guard.reset()
    client = mlflow.MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(f"otlp-{uuid.uuid4().hex[:8]}")

    def configure(**settings):
        mltrack_otel.configure(
            exporters=["otlp", "memory"],
            otlp_endpoint=mlflow_server,
            price_overrides=OVERRIDE,
            shutdown_timeout_seconds=60,
            **settings,
        )
        return provider.runtime()

    yield configure, client, experiment_id
    mltrack_otel.shutdown()
    ledger.LEDGER.reset()
    config.set_current(None)


def _agent_run(base_url: str) -> dict[str, int]:
    """Two traces: a scope over a LangChain-like wrapper over an instrumented OpenAI call, and an unpriced call.
    Returns the OTel trace id of each root by name."""
    tracer = trace.get_tracer("langchain-like")
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    roots = {}
    with mltrack_otel.track_llm_context("agent") as _:
        roots["agent"] = trace.get_current_span().get_span_context().trace_id
        with tracer.start_as_current_span(
            "ChatOpenAI",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
            },
        ) as wrapper:
            response = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Tell me about collectors"}]
            )
            # As LangChain does: the wrapper reports the usage of the call it made, when it ends.
            wrapper.set_attribute("gen_ai.usage.input_tokens", response.usage.prompt_tokens)
            wrapper.set_attribute("gen_ai.usage.output_tokens", response.usage.completion_tokens)
    with mltrack_otel.track_llm_context("private") as _:
        roots["private"] = trace.get_current_span().get_span_context().trace_id
        client.chat.completions.create(model=UNPRICED_MODEL, messages=[{"role": "user", "content": "hello there"}])
    return roots


def _flush(rt) -> None:
    assert rt.processor.force_flush(60_000)


def _instrumented_agent_run(rt, base_url: str) -> dict[str, int]:
    """_agent_run with the OpenAI SDK instrumented, flushed to MLflow: the trace id of each root by name."""
    mltrack_otel.instrument(["openai"])
    try:
        roots = _agent_run(base_url)
    finally:
        uninstrument(["openai"])
    _flush(rt)
    return roots


def test_mlflow_trace_totals_equal_the_ledgers_through_otlp(otlp_to_mlflow, fake):
    configure, client, experiment_id = otlp_to_mlflow
    # Only the header MLflow's endpoint reads: that alone turns the MLflow attributes on.
    rt = configure(otlp_headers={"x-mlflow-experiment-id": experiment_id})
    roots = _instrumented_agent_run(rt, fake.openai_base_url)
    ours = rt.memory_exporter.get_finished_spans()
    totals = mltrack_otel.totals()
    assert totals.calls == 2 and totals.unpriced_calls == 1
    (counted,) = [
        s for s in ours if s.attributes.get(semconv.MLTRACK_USAGE_COUNTED) and semconv.LLM_COST_TOTAL in s.attributes
    ]

    agent = client.get_trace(f"tr-{roots['agent']:032x}")
    assert agent.info.experiment_id == experiment_id
    assert agent.info.cost["total_cost"] == pytest.approx(float(totals.cost_usd), rel=1e-9)
    assert agent.info.cost["input_cost"] == pytest.approx(counted.attributes[semconv.LLM_COST_PROMPT], rel=1e-9)
    assert agent.info.token_usage["input_tokens"] == counted.attributes[semconv.LLM_TOKENS_PROMPT]
    assert agent.info.token_usage["output_tokens"] == counted.attributes[semconv.LLM_TOKENS_COMPLETION]
    spans = {s.name: s for s in agent.data.spans}
    assert set(spans) == {"agent", "ChatOpenAI", counted.name}
    wrapper = spans["ChatOpenAI"]
    assert wrapper.llm_cost is None and wrapper.get_attribute("mlflow.chat.tokenUsage") is None  # not counted twice
    assert (
        wrapper.get_attribute("mltrack.uncounted.gen_ai.usage.input_tokens") == agent.info.token_usage["input_tokens"]
    )
    assert spans[counted.name].llm_cost["total_cost"] == pytest.approx(counted.attributes[semconv.LLM_COST_TOTAL])
    assert "llm.cost.cumulative.unpriced_calls" not in agent.info.tags

    private = client.get_trace(f"tr-{roots['private']:032x}")
    assert private.info.cost is None  # no price known: no cost, not $0, and none from MLflow's catalog
    assert private.info.token_usage["total_tokens"] > 0
    assert private.info.tags["llm.cost.cumulative.unpriced_calls"] == "1"

    # Summed over the experiment, MLflow and the ledger agree.
    traces = client.search_traces(locations=[experiment_id])
    assert sum((t.info.cost or {}).get("total_cost", 0.0) for t in traces) == pytest.approx(float(totals.cost_usd))
    assert sum(t.info.token_usage["total_tokens"] for t in traces) == totals.total_tokens


def test_without_the_mlflow_attributes_mlflow_prices_our_spans_itself(otlp_to_mlflow, fake):
    """The problem the setting solves, kept visible: a plain OTLP stream leaves MLflow to its own prices."""
    configure, client, experiment_id = otlp_to_mlflow
    rt = configure(otlp_headers={"x-mlflow-experiment-id": experiment_id}, otlp_for_mlflow=False)
    roots = _instrumented_agent_run(rt, fake.openai_base_url)
    agent = client.get_trace(f"tr-{roots['agent']:032x}")
    mlflow_total = agent.info.cost["total_cost"]
    assert mlflow_total != pytest.approx(float(mltrack_otel.totals().cost_usd), rel=1e-3)  # MLflow's catalog price
    assert {s.name: s for s in agent.data.spans}["ChatOpenAI"].llm_cost is not None  # and it priced the wrapper


@pytest.mark.parametrize(
    ("settings", "wrapped"),
    [
        ({"otlp_headers": {"x-mlflow-experiment-id": "3"}}, True),  # MLflow's endpoint: on by default
        ({"otlp_headers": {"X-MLflow-Experiment-Id": "3"}}, True),
        ({"otlp_headers": {"authorization": "Bearer x"}}, False),  # a collector or another backend: off
        ({"otlp_for_mlflow": True}, True),  # a collector that forwards to MLflow
        ({"otlp_for_mlflow": False, "otlp_headers": {"x-mlflow-experiment-id": "3"}}, False),
        ({"otlp_for_mlflow": True, "otlp_protocol": "grpc"}, True),
    ],
)
def test_the_setting_wraps_the_otlp_exporter(settings, wrapped):
    exporter = provider._otlp_exporter(Settings(otlp_endpoint="http://127.0.0.1:4318", **settings))
    assert isinstance(exporter, MlflowOtlpExporter) is wrapped
    exporter.shutdown()


def test_the_setting_reads_from_the_environment(isolated_env, monkeypatch):
    monkeypatch.setenv("MLTRACK_OTLP_FOR_MLFLOW", "true")
    assert config.load_settings().otlp_for_mlflow is True
    monkeypatch.delenv("MLTRACK_OTLP_FOR_MLFLOW")
    assert config.load_settings().otlp_for_mlflow is None


def test_no_metrics_are_sent_to_an_mlflow_endpoint(isolated_env):
    """MLflow's server takes traces only: OTLP metrics posted there fail with 404 at every export interval."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider

    if isinstance(metrics.get_meter_provider(), MeterProvider):
        pytest.skip("an SDK MeterProvider is already global in this process")
    to_mlflow = Settings(otlp_endpoint="http://127.0.0.1:5000", otlp_headers={"x-mlflow-experiment-id": "0"})
    assert provider._meter_provider(to_mlflow, ("otlp",)) == (None, None)
    to_collector = Settings(otlp_endpoint="http://127.0.0.1:4318", otlp_for_mlflow=True)
    meters, _ = provider._meter_provider(to_collector, ("otlp",))
    assert meters is not None
    meters.shutdown(timeout_millis=1000)
