"""MlflowSpanExporter against real MLflow: an embedded sqlite store and a real `mlflow server`.

Spans come from a real opentelemetry-sdk TracerProvider; the attributes our CostSpanProcessor would add
(usage mirror, cost, mltrack.usage.counted, running totals) are set by hand, so these
tests pin down the exporter alone. Everything is read back with MLflow's public client API.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mltrack_otel import semconv
from mltrack_otel.exporters.mlflow import MlflowSpanExporter
from tests.mlflow_server import mlflow_server  # noqa: F401  (module-scoped fixture)

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

# Our prices, deliberately not MLflow's: MLflow's own table prices gpt-4o 100 in / 20 out at $0.00045.
CHAT_COST = {"input_cost": 0.00021, "output_cost": 0.00019, "total_cost": 0.0004}
EMBED_COST = {"input_cost": 0.000001, "output_cost": 0.0, "total_cost": 0.000001}
MLFLOW_OWN_GPT4O_PRICE = 0.00045

INPUT_MESSAGES = [{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}]
OUTPUT_MESSAGES = [
    {"role": "assistant", "parts": [{"type": "text", "content": "Sunny, 21 C."}], "finish_reason": "stop"}
]
CHAT_USAGE = {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20}
CHAT_MODEL = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
}


@pytest.fixture(scope="module", autouse=True)
def _quiet_mlflow():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("DO_NOT_TRACK", "true")
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
            mp.delenv(var, raising=False)
        yield


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory) -> str:
    """One embedded store per module: creating the schema costs ~1 s. Tests use their own experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-sqlite') / 'mlflow.db'}"


@pytest.fixture(params=["sqlite", "server"])
def tracking_uri(request) -> str:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_uri")
    return request.getfixturevalue("mlflow_server")


def _experiment_name() -> str:
    return f"mltrack-test-{uuid.uuid4().hex[:8]}"


def _provider(*processors) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "mltrack-test"}))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


@dataclass
class Emitted:
    trace_id: str  # MLflow trace id
    span_ids: dict[str, str]  # span name -> hex span id


def _hex(span) -> str:
    return f"{span.get_span_context().span_id:016x}"


def emit_agent_trace(provider: TracerProvider) -> Emitted:
    """@track root -> framework wrapper (usage, counted=false) -> counted chat call; a tool; an embedding."""
    tracer = provider.get_tracer("tests.mlflow")
    chat_priced = {
        **CHAT_MODEL,
        **CHAT_USAGE,
        semconv.LLM_TOKENS_PROMPT: 100,
        semconv.LLM_TOKENS_COMPLETION: 20,
        semconv.LLM_TOKENS_TOTAL: 120,
        semconv.LLM_COST_PROMPT: CHAT_COST["input_cost"],
        semconv.LLM_COST_COMPLETION: CHAT_COST["output_cost"],
        semconv.LLM_COST_TOTAL: CHAT_COST["total_cost"],
        "gen_ai.input.messages": json.dumps(INPUT_MESSAGES),
        "gen_ai.output.messages": json.dumps(OUTPUT_MESSAGES),
    }
    ids: dict[str, str] = {}
    with tracer.start_as_current_span("answer_question", attributes={semconv.MLTRACK_SCOPE_NAME: "qa"}) as root:
        ids["answer_question"] = _hex(root)
        with tracer.start_as_current_span(
            "ChatOpenAI", attributes={**chat_priced, semconv.MLTRACK_USAGE_COUNTED: False}
        ) as wrapper:
            ids["ChatOpenAI"] = _hex(wrapper)
            with tracer.start_as_current_span(
                "chat gpt-4o",
                attributes={
                    **chat_priced,
                    semconv.MLTRACK_USAGE_COUNTED: True,
                    semconv.LLM_COST_CUMULATIVE: CHAT_COST["total_cost"],
                },
            ) as chat:
                ids["chat gpt-4o"] = _hex(chat)
        with tracer.start_as_current_span(
            "execute_tool get_weather",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.arguments": json.dumps({"city": "Paris"}),
                "gen_ai.tool.call.result": json.dumps({"sky": "sunny", "celsius": 21}),
            },
        ) as tool:
            ids["execute_tool get_weather"] = _hex(tool)
        with tracer.start_as_current_span(
            "embeddings text-embedding-3-small",
            attributes={
                "gen_ai.operation.name": "embeddings",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": 50,
                semconv.LLM_TOKENS_PROMPT: 50,
                semconv.LLM_TOKENS_COMPLETION: 0,
                semconv.LLM_TOKENS_TOTAL: 50,
                semconv.LLM_COST_PROMPT: EMBED_COST["input_cost"],
                semconv.LLM_COST_COMPLETION: EMBED_COST["output_cost"],
                semconv.LLM_COST_TOTAL: EMBED_COST["total_cost"],
                semconv.MLTRACK_USAGE_COUNTED: True,
            },
        ) as embedding:
            ids["embeddings text-embedding-3-small"] = _hex(embedding)
        with tracer.start_as_current_span("postprocess") as plain:
            ids["postprocess"] = _hex(plain)
        root.set_attribute(semconv.EXECUTION_TIME_SECONDS, 0.25)
        root.set_attribute(semconv.LLM_TOKENS_CUMULATIVE_TOTAL, 170)
        root.set_attribute(semconv.LLM_COST_CUMULATIVE, CHAT_COST["total_cost"] + EMBED_COST["total_cost"])
    return Emitted(f"tr-{root.get_span_context().trace_id:032x}", ids)


def _spans_by_name(trace) -> dict:
    return {span.name: span for span in trace.data.spans}


# --------------------------------------------------------------------------- what MLflow shows


def test_trace_tree_types_io_tokens_and_our_cost(tracking_uri):
    name = _experiment_name()
    exporter = MlflowSpanExporter(tracking_uri, experiment_name=name)
    provider = _provider(SimpleSpanProcessor(exporter))
    emitted = emit_agent_trace(provider)
    provider.shutdown()

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, "experiment is created by name"
    trace = client.get_trace(emitted.trace_id)
    assert trace.info.experiment_id == experiment.experiment_id
    assert trace.info.state.value == "OK"

    spans = _spans_by_name(trace)
    assert set(spans) == set(emitted.span_ids)
    for span_name, span in spans.items():
        assert span.span_id == emitted.span_ids[span_name]
    parent_of = {span_name: span.parent_id for span_name, span in spans.items()}
    root_id = emitted.span_ids["answer_question"]
    assert parent_of == {
        "answer_question": None,
        "ChatOpenAI": root_id,
        "chat gpt-4o": emitted.span_ids["ChatOpenAI"],
        "execute_tool get_weather": root_id,
        "embeddings text-embedding-3-small": root_id,
        "postprocess": root_id,
    }

    assert {span_name: span.span_type for span_name, span in spans.items()} == {
        "answer_question": "CHAIN",
        "ChatOpenAI": "CHAT_MODEL",
        "chat gpt-4o": "CHAT_MODEL",
        "execute_tool get_weather": "TOOL",
        "embeddings text-embedding-3-small": "EMBEDDING",
        "postprocess": "UNKNOWN",
    }

    chat = spans["chat gpt-4o"]
    assert chat.inputs == INPUT_MESSAGES
    assert chat.outputs == OUTPUT_MESSAGES
    assert spans["ChatOpenAI"].inputs == INPUT_MESSAGES
    assert spans["execute_tool get_weather"].inputs == {"city": "Paris"}
    assert spans["execute_tool get_weather"].outputs == {"sky": "sunny", "celsius": 21}
    assert chat.get_attribute("mlflow.llm.model") == "gpt-4o-2024-08-06"

    # Tokens: shown on the counted call; the uncounted wrapper does not count them a second time.
    assert chat.get_attribute("mlflow.chat.tokenUsage") == {
        "input_tokens": 100,
        "output_tokens": 20,
        "total_tokens": 120,
    }
    assert spans["ChatOpenAI"].get_attribute("mlflow.chat.tokenUsage") is None
    # Embeddings report input tokens only; our usage mirror still gives MLflow a total.
    assert spans["embeddings text-embedding-3-small"].get_attribute("mlflow.chat.tokenUsage") == {
        "input_tokens": 50,
        "output_tokens": 0,
        "total_tokens": 50,
    }
    assert trace.info.token_usage == {"input_tokens": 150, "output_tokens": 20, "total_tokens": 170}

    # Cost: ours, verbatim, on counted spans only; the trace total is their sum.
    assert chat.llm_cost == CHAT_COST
    assert spans["embeddings text-embedding-3-small"].llm_cost == EMBED_COST
    assert spans["ChatOpenAI"].llm_cost is None  # MLflow did not price the wrapper itself
    expected_total = CHAT_COST["total_cost"] + EMBED_COST["total_cost"]
    assert trace.info.cost["total_cost"] == pytest.approx(expected_total)
    assert trace.info.cost["input_cost"] == pytest.approx(CHAT_COST["input_cost"] + EMBED_COST["input_cost"])
    assert trace.info.cost["total_cost"] != pytest.approx(MLFLOW_OWN_GPT4O_PRICE + EMBED_COST["total_cost"])


def test_search_traces_public_api_and_span_type_filter(tracking_uri, monkeypatch):
    name = _experiment_name()
    provider = _provider(SimpleSpanProcessor(MlflowSpanExporter(tracking_uri, experiment_name=name)))
    emitted = emit_agent_trace(provider)
    provider.shutdown()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    experiment_id = MlflowClient(tracking_uri).get_experiment_by_name(name).experiment_id
    traces = mlflow.search_traces(locations=[experiment_id], return_type="list")
    assert [t.info.trace_id for t in traces] == [emitted.trace_id]
    assert {s.name for s in traces[0].data.spans} == set(emitted.span_ids)
    # The span type is in the searchable column too (MLflow's own translation only fills the span JSON).
    for span_type in ("TOOL", "CHAIN", "EMBEDDING", "CHAT_MODEL"):
        found = MlflowClient(tracking_uri).search_traces(
            locations=[experiment_id], filter_string=f"span.type = '{span_type}'"
        )
        assert [t.info.trace_id for t in found] == [emitted.trace_id], span_type


def test_batch_export_links_active_run_and_logs_run_totals(tracking_uri, monkeypatch):
    """Behind a BatchSpanProcessor (export on its worker thread) traces still find the active run."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    name = _experiment_name()
    exporter = MlflowSpanExporter(tracking_uri, experiment_name=name)
    requests_made = []
    if tracking_uri.startswith("http"):
        real_rest = exporter._rest

        def counting_rest(method, endpoint, **kwargs):
            requests_made.append(endpoint)
            return real_rest(method, endpoint, **kwargs)

        exporter._rest = counting_rest
    provider = _provider(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    experiment_id = mlflow.create_experiment(f"{name}-runs")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        emitted = [emit_agent_trace(provider) for _ in range(3)]
        assert provider.force_flush(30_000)
    provider.shutdown()

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    linked = mlflow.search_traces(
        locations=[experiment.experiment_id, experiment_id], run_id=run.info.run_id, return_type="list"
    )
    assert sorted(t.info.trace_id for t in linked) == sorted(e.trace_id for e in emitted)

    metrics = client.get_run(run.info.run_id).data.metrics
    per_trace = CHAT_COST["total_cost"] + EMBED_COST["total_cost"]
    assert metrics["llm.cost.cumulative"] == pytest.approx(3 * per_trace)
    assert metrics["llm.tokens.cumulative.prompt"] == 3 * 150
    assert metrics["llm.tokens.cumulative.completion"] == 3 * 20
    assert metrics["llm.tokens.cumulative.total"] == 3 * 170
    history = client.get_metric_history(run.info.run_id, "llm.cost.cumulative")
    assert [m.step for m in history] == [6]  # one batch, six counted calls

    if requests_made:  # http: experiment lookup + create, then ONE OTLP request and one log-batch
        assert requests_made.count("/v1/traces") == 1
        assert requests_made.count("/api/2.0/mlflow/runs/log-batch") == 1


# --------------------------------------------------------------------------- cost policy details


def _emit_unpriced_call(exporter: MlflowSpanExporter, **extra) -> str:
    """A counted gpt-4o call our pricer could not price (MLflow's own table could)."""
    provider = _provider(SimpleSpanProcessor(exporter))
    attributes = {
        **CHAT_MODEL,
        **CHAT_USAGE,
        semconv.LLM_TOKENS_PROMPT: 100,
        semconv.LLM_TOKENS_COMPLETION: 20,
        semconv.LLM_TOKENS_TOTAL: 120,
        semconv.MLTRACK_USAGE_COUNTED: True,
        semconv.MLTRACK_COST_UNPRICED: True,
        **extra,
    }
    with provider.get_tracer("t").start_as_current_span("chat gpt-4o", attributes=attributes) as span:
        pass
    provider.shutdown()
    return f"tr-{span.get_span_context().trace_id:032x}"


def test_unpriced_counted_call_gets_no_invented_price(sqlite_uri):
    trace_id = _emit_unpriced_call(MlflowSpanExporter(sqlite_uri, experiment_name=_experiment_name()))
    trace = MlflowClient(sqlite_uri).get_trace(trace_id)
    span = trace.data.spans[0]
    assert span.get_attribute("mlflow.chat.tokenUsage")["total_tokens"] == 120  # tokens still shown
    assert span.llm_cost is None  # no price from MLflow's catalog, and no $0 either
    assert trace.info.cost is None  # not {"total_cost": 0.0}: the trace has no known cost
    assert span.get_attribute("gen_ai.response.model") == "gpt-4o-2024-08-06"  # the model is still shown


def test_mlflow_prices_only_what_we_leave_to_it(sqlite_uri):
    """MLflow's own pricing: opted in for unpriced calls, and untouched for spans our processor never saw.

    (MLflow's first price lookup loads its catalog: ~7 s once per process; our spans never trigger it.)
    """
    client = MlflowClient(sqlite_uri)
    exporter = MlflowSpanExporter(sqlite_uri, experiment_name=_experiment_name(), mlflow_fallback_pricing=True)
    fallback = client.get_trace(_emit_unpriced_call(exporter))
    assert fallback.info.cost["total_cost"] == pytest.approx(MLFLOW_OWN_GPT4O_PRICE)

    provider = _provider(SimpleSpanProcessor(MlflowSpanExporter(sqlite_uri, experiment_name=_experiment_name())))
    with provider.get_tracer("t").start_as_current_span(
        "foreign chat", attributes={**CHAT_MODEL, **CHAT_USAGE, "mlflow.spanType": "LLM"}
    ) as span:
        pass
    provider.shutdown()
    stored = client.get_trace(f"tr-{span.get_span_context().trace_id:032x}").data.spans[0]
    assert stored.span_type == "LLM"  # an explicit mlflow.spanType wins over our mapping
    assert stored.llm_cost["total_cost"] == pytest.approx(MLFLOW_OWN_GPT4O_PRICE)  # MLflow's default


def test_experiment_by_id_and_default_experiment(sqlite_uri):
    experiment_id = MlflowClient(sqlite_uri).create_experiment(_experiment_name())
    for exporter, expected in (
        (MlflowSpanExporter(sqlite_uri, experiment_id=experiment_id), experiment_id),
        (MlflowSpanExporter(sqlite_uri), "0"),
    ):
        provider = _provider(SimpleSpanProcessor(exporter))
        emitted = emit_agent_trace(provider)
        provider.shutdown()
        assert MlflowClient(sqlite_uri).get_trace(emitted.trace_id).info.experiment_id == expected


# --------------------------------------------------------------------------- failures never raise


def _finished_spans() -> list:
    memory = InMemorySpanExporter()
    provider = _provider(SimpleSpanProcessor(memory))
    emit_agent_trace(provider)
    return list(memory.get_finished_spans())


def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mltrack_otel.exporters.mlflow" and r.levelno >= logging.WARNING]


def test_missing_experiment_id_fails_quietly_and_logs_once(sqlite_uri, caplog):
    spans = _finished_spans()
    exporter = MlflowSpanExporter(sqlite_uri, experiment_id="987654321")
    with caplog.at_level(logging.WARNING, logger="mltrack_otel.exporters.mlflow"):
        assert exporter.export(spans) is SpanExportResult.FAILURE
        assert exporter.export(spans) is SpanExportResult.FAILURE
    assert len(_warnings(caplog)) == 1


def test_unreachable_server_fails_quietly_and_logs_once(caplog):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    spans = _finished_spans()
    exporter = MlflowSpanExporter(url, experiment_name="never")
    exporter._max_retries = 0
    with caplog.at_level(logging.WARNING, logger="mltrack_otel.exporters.mlflow"):
        assert exporter.export(spans) is SpanExportResult.FAILURE
        assert exporter.export(spans) is SpanExportResult.FAILURE
    assert len(_warnings(caplog)) == 1


def test_export_after_shutdown_fails(sqlite_uri):
    exporter = MlflowSpanExporter(sqlite_uri, experiment_name=_experiment_name())
    exporter.shutdown()
    assert exporter.export(_finished_spans()) is SpanExportResult.FAILURE
    assert exporter.force_flush() is True


def test_mlflow_is_not_imported_by_the_package_or_the_constructor():
    code = (
        "import sys, mltrack_otel\n"
        "from mltrack_otel.exporters.mlflow import MlflowSpanExporter\n"
        "MlflowSpanExporter('sqlite:///unused.db', experiment_name='x')\n"
        "assert 'mlflow' not in sys.modules, 'mlflow imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
