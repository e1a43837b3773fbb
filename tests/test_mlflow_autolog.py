"""MLflow's autolog (mlflow.openai.autolog(), mlflow.anthropic.autolog()) mixed with mltrack-otel.

Whatever mix is on, a model call is one trace in MLflow and one counted call in our totals, and MLflow shows our
price. The mixes run the real SDKs against the fake provider, in a subprocess each (tests/mlflow_autolog_app.py):
autolog's patches, MLflow's tracer provider and the OpenTelemetry global provider are process-wide. The MLflow
store is read back with MLflow's own client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from mltrack_otel import guard, semconv
from mltrack_otel.errors import LLMLimitWarning
from mltrack_otel.ledger import Ledger
from mltrack_otel.pricing import Pricer, Usage
from mltrack_otel.processor import CostSpanProcessor, read_usage
from tests.instr_fixtures import one_span
from tests.traced import Traced

pytest.importorskip("mlflow")

_ROOT = Path(__file__).resolve().parent.parent
_GLOBAL = {"MLFLOW_USE_DEFAULT_TRACER_PROVIDER": "false"}  # MLflow's spans go to the global provider too

# -- MLflow's span attributes, as autolog writes them (JSON text) -------------------------------------------------


def test_reads_mlflow_token_usage_with_its_cache_parts():
    usage = read_usage(
        {
            "mlflow.chat.tokenUsage": json.dumps(
                {
                    "input_tokens": 1200,  # MLflow's input includes cache reads and writes, as ours does
                    "output_tokens": 40,
                    "total_tokens": 1240,
                    "cache_read_input_tokens": 1000,
                    "cache_creation_input_tokens": 100,
                }
            )
        }
    )
    assert usage == Usage(1200, 40, 1000, 100, 0)


@pytest.mark.parametrize(
    "raw",
    ["not json", json.dumps({"input_tokens": -1, "output_tokens": 2}), json.dumps([1, 2]), '{"input_tokens": 1.5}'],
)
def test_unreadable_mlflow_token_usage_is_no_usage(raw):
    guard.reset()
    assert read_usage({"mlflow.chat.tokenUsage": raw}) is None
    assert guard.health().get("usage.invalid") == 1


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        # OpenAI autolog: the response's model, the SDK named by the message format.
        ({"mlflow.llm.model": '"gpt-4o-2024-08-06"', "mlflow.message.format": '"openai"'}, 0.0003125),
        # Anthropic autolog: model and provider.
        (
            {
                "mlflow.llm.model": '"claude-3-5-sonnet-20241022"',
                "mlflow.llm.provider": '"anthropic"',
                "mlflow.message.format": '"anthropic"',
            },
            0.000465,
        ),
    ],
)
def test_processor_prices_and_counts_an_mlflow_autolog_span(attributes, expected):
    harness = Traced(pricer=Pricer())
    exporter, ledger, tracer_provider = harness.exporter, harness.ledger, harness.provider
    usage = json.dumps({"input_tokens": 5, "output_tokens": 30, "total_tokens": 35})
    with tracer_provider.get_tracer("test").start_as_current_span(
        "Completions", attributes={**attributes, "mlflow.chat.tokenUsage": usage}
    ):
        pass
    span = one_span(exporter)
    assert span.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert span.attributes[semconv.LLM_COST_TOTAL] == pytest.approx(expected, rel=1e-9)
    assert ledger.process_totals().calls == 1


def test_a_traceparent_the_caller_sends_is_not_taken_for_mlflow(instrumented, oai):
    """Our span adopts only a live MLflow span as its parent, never the caller's own distributed tracing."""
    import mlflow  # noqa: F401  (imported: the adoption path runs)

    oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"},
    )
    span = one_span(instrumented)
    assert span.parent is None
    assert span.attributes["gen_ai.usage.input_tokens"] > 0


# -- the mixes, end to end ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-autolog') / 'mlflow.db'}"


_AUTOLOG_SPANS = ("Completions", "Messages.create")  # the names MLflow's OpenAI and Anthropic autolog give


def run_mix(fake: Any, store: str, mix: str, calls: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLTRACK_", "OTEL_", "ANTHROPIC_"))},
        "PYTHONPATH": str(_ROOT),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        **(env or {}),
    }
    experiment = f"autolog-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [sys.executable, "-m", "tests.mlflow_autolog_app", mix, ",".join(calls), fake.url, store, experiment],
        env=environment,
        cwd=Path(store.removeprefix("sqlite:///")).parent,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[0].removeprefix("RESULT "))


@pytest.mark.parametrize(
    ("env", "calls"),
    [(None, ["openai", "openai-stream", "anthropic"]), (_GLOBAL, ["openai", "anthropic"])],
    ids=["mlflow-own-provider", "global-provider"],
)
def test_autolog_with_ours_is_one_trace_per_call_at_our_price(fake, store, env, calls):
    """configure() + instrument() + mlflow.<sdk>.autolog(): one MLflow trace per call, holding autolog's span and
    ours; its tokens once and its cost ours (our prices here are far from MLflow's); one counted call each."""
    result = run_mix(fake, store, "ours+autolog", calls, env)
    assert result["calls"] == len(calls)
    counted = [span for span in result["spans"] if span["counted"] is True]
    assert len(counted) == len(calls)
    traces = {trace["id"]: trace for trace in result["traces"]}
    assert len(traces) == len(calls)  # one MLflow trace per call
    for span in counted:
        trace = traces[span["trace"]]
        assert any(name in trace["spans"] for name in _AUTOLOG_SPANS), trace["spans"]
        assert trace["tokens"]["total_tokens"] == span["tokens"]  # once, not twice
        assert trace["cost"]["total_cost"] == pytest.approx(span["cost"], rel=1e-9)  # our price, not MLflow's
    our_total = sum(span["cost"] for span in counted)
    assert float(result["cost"]) == pytest.approx(our_total, rel=1e-9)


def test_autolog_alone_on_the_global_provider_is_priced_and_counted(fake, store):
    """mlflow.<sdk>.autolog() with MLFLOW_USE_DEFAULT_TRACER_PROVIDER=false and a CostSpanProcessor on the global
    provider: autolog's spans are read (mlflow.chat.tokenUsage, mlflow.llm.model), priced and counted once.
    (The Anthropic SDK's own spans, a second span per call on the global provider, are off here.)"""
    calls = ["openai", "anthropic"]
    result = run_mix(fake, store, "autolog+processor", calls, {**_GLOBAL, "ANTHROPIC_OPEN_TELEMETRY": "false"})
    assert result["calls"] == len(calls)
    autolog_spans = [span for span in result["spans"] if span["name"] in _AUTOLOG_SPANS]
    assert sorted(span["name"] for span in autolog_spans) == sorted(_AUTOLOG_SPANS)
    assert all(span["counted"] is True for span in autolog_spans)
    # Our prices ($1 in, $3 out per million tokens, both models), not MLflow's.
    ours = (result["prompt_tokens"] + 3 * result["completion_tokens"]) / 1e6
    assert sum(span["cost"] for span in autolog_spans) == pytest.approx(ours, rel=1e-9)
    assert float(result["cost"]) == pytest.approx(ours, rel=1e-9)
    assert len(result["traces"]) == len(calls)


def _our_price(tokens: dict[str, int]) -> float:
    """Our override price of a call ($1 in, $3 out per million tokens) from MLflow's token usage of its trace."""
    return (tokens["input_tokens"] + 3 * tokens["output_tokens"]) / 1e6


_NO_SDK_SPANS = {"ANTHROPIC_OPEN_TELEMETRY": "false"}  # the Anthropic SDK's own spans: a trace of their own


@pytest.mark.parametrize(
    "env", [_NO_SDK_SPANS, {**_GLOBAL, **_NO_SDK_SPANS}], ids=["mlflow-own-provider", "global-provider"]
)
def test_autolog_with_configure_alone_is_one_counted_call_at_our_price(fake, store, env):
    """configure() + mlflow.<sdk>.autolog(), no instrument() (the seed's instructions): every call is counted once
    at our price, and MLflow's one trace per call shows that price, not its own."""
    calls = ["openai", "openai-stream-usage", "anthropic"]
    result = run_mix(fake, store, "autolog+configure", calls, env)
    assert result["calls"] == len(calls)
    ours = (result["prompt_tokens"] + 3 * result["completion_tokens"]) / 1e6
    assert float(result["cost"]) == pytest.approx(ours, rel=1e-9)
    assert len(result["traces"]) == len(calls)
    for trace in result["traces"]:
        assert any(name in trace["spans"] for name in _AUTOLOG_SPANS), trace["spans"]
        assert trace["cost"]["total_cost"] == pytest.approx(_our_price(trace["tokens"]), rel=1e-9)
    assert sum(trace["tokens"]["total_tokens"] for trace in result["traces"]) == (
        result["prompt_tokens"] + result["completion_tokens"]
    )


@pytest.mark.parametrize("env", [None, _GLOBAL], ids=["mlflow-own-provider", "global-provider"])
def test_autolog_with_configure_and_the_sdks_own_spans_counts_each_call_once(fake, store, env):
    """The Anthropic SDK's own span (on by default once configure() sets a global provider) counts the call; autolog's
    span of the same call, in another trace, is then a wrapper: counted once, and every MLflow trace shows our
    price. (The SDK's span is a trace of its own in MLflow: instrument() or ANTHROPIC_OPEN_TELEMETRY=false.)"""
    result = run_mix(fake, store, "autolog+configure", ["anthropic", "anthropic"], env)
    assert result["calls"] == 2
    ours = (result["prompt_tokens"] + 3 * result["completion_tokens"]) / 1e6
    assert float(result["cost"]) == pytest.approx(ours, rel=1e-9)
    autolog_traces = [trace for trace in result["traces"] if "Messages.create" in trace["spans"]]
    assert len(autolog_traces) == 2
    for trace in result["traces"]:
        assert trace["cost"]["total_cost"] == pytest.approx(_our_price(trace["tokens"]), rel=1e-9)


def test_autolog_with_configure_alone_shows_no_cost_for_an_unpriced_model(fake, store):
    """An unpriced call is counted as unpriced, and MLflow shows no cost for it rather than a price of its own."""
    result = run_mix(fake, store, "autolog+configure", ["openai-unpriced", "openai"], _NO_SDK_SPANS)
    assert result["calls"] == 2
    assert result["unpriced_calls"] == 1
    by_cost = sorted(result["traces"], key=lambda trace: trace["cost"] is not None)
    assert by_cost[0]["cost"] is None
    assert by_cost[0]["tokens"]["total_tokens"] > 0
    assert by_cost[1]["cost"]["total_cost"] == pytest.approx(_our_price(by_cost[1]["tokens"]), rel=1e-9)


@pytest.mark.parametrize("env", [None, _GLOBAL], ids=["mlflow-own-provider", "global-provider"])
def test_autolog_with_configure_alone_estimates_a_stream_sent_without_usage(fake, store, env):
    """A stream the caller asked no usage for (no stream_options) reached the provider all the same: counted, with
    usage estimated from the request and the answer MLflow rebuilt, and MLflow shows our price of that estimate."""
    result = run_mix(fake, store, "autolog+configure", ["openai-stream", "openai"], env)
    assert result["calls"] == 2
    assert result["estimated_calls"] == 1
    assert 0 < float(result["estimated_cost"]) < float(result["cost"])
    estimated, reported = float(result["estimated_cost"]), float(result["cost"]) - float(result["estimated_cost"])
    costs = sorted(trace["cost"]["total_cost"] for trace in result["traces"])
    assert costs == pytest.approx(sorted([estimated, reported]), rel=1e-9)


# -- MLflow's span processor and the processor's view of autolog spans, in process ---------------------------------


def test_configure_adds_one_mlflow_span_processor_beside_the_users_and_shutdown_takes_it_out(pipeline):
    import mlflow

    from mltrack_otel import provider
    from mltrack_otel.instrumentation.mlflow_autolog import on_mlflow_span_end

    def users(span):
        return None

    mlflow.tracing.configure(span_processors=[users])  # replaces the list: ours is gone until configure() runs
    provider.configure(exporters=["memory"])
    provider.configure(exporters=["memory"])
    assert mlflow.tracing.config.get_config().span_processors == [users, on_mlflow_span_end]
    provider.shutdown()
    assert mlflow.tracing.config.get_config().span_processors == [users]
    mlflow.tracing.configure(span_processors=[])


def test_an_mlflow_span_around_a_call_counted_in_another_trace_is_a_wrapper():
    """Autolog's span is not current, so a span that counts the same call below it (the SDK's own) is in another
    trace: the call counted in the same context during the MLflow span's lifetime makes that span a wrapper."""
    harness = Traced(pricer=Pricer())
    exporter, ledger, tracer_provider = harness.exporter, harness.ledger, harness.provider
    tracer = tracer_provider.get_tracer("test")
    usage = json.dumps({"input_tokens": 5, "output_tokens": 30, "total_tokens": 35})
    mlflow_span = tracer.start_span(
        "Messages.create",
        attributes={
            "mlflow.chat.tokenUsage": usage,
            "mlflow.llm.model": '"claude-3-5-sonnet-20241022"',
            "mlflow.llm.provider": '"anthropic"',
        },
    )
    with tracer.start_as_current_span(
        "anthropic.messages.create",
        attributes={
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-3-5-sonnet-20241022",
            "gen_ai.usage.input_tokens": 5,
            "gen_ai.usage.output_tokens": 30,
        },
    ):
        pass
    mlflow_span.end()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["anthropic.messages.create"].attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert spans["Messages.create"].attributes[semconv.MLTRACK_USAGE_COUNTED] is False
    assert ledger.process_totals().calls == 1
    # The next call's MLflow span started after that count: it is counted.
    with tracer.start_as_current_span("Messages.create", attributes=dict(mlflow_span.attributes)):
        pass
    assert ledger.process_totals().calls == 2


def _claude_mlflow_attributes(provider: str | None = "anthropic") -> dict[str, Any]:
    attributes = {"mlflow.llm.model": '"claude-3-5-sonnet-20241022"'}
    if provider is not None:
        attributes["mlflow.llm.provider"] = json.dumps(provider)
    return attributes


@pytest.mark.parametrize(
    ("model", "provider"),
    [("gpt-4o", "openai"), ("claude-3-5-sonnet-20241022", "openai")],
    ids=["another-model", "another-provider"],
)
def test_an_unrelated_call_counted_while_an_mlflow_span_is_open_does_not_make_it_a_wrapper(model, provider):
    """Only a counted call of the MLflow span's own model (and provider) is taken for its call: an unrelated call
    that completes while an Anthropic autolog span (a stream, say) is open leaves that span to count its own."""
    harness = Traced(pricer=Pricer())
    exporter, ledger, tracer_provider = harness.exporter, harness.ledger, harness.provider
    tracer = tracer_provider.get_tracer("test")
    mlflow_span = tracer.start_span("Messages.create", attributes=_claude_mlflow_attributes())
    call = {
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5,
    }
    with tracer.start_as_current_span("chat", attributes=call):
        pass
    mlflow_span.set_attribute("mlflow.chat.tokenUsage", json.dumps({"input_tokens": 1000, "output_tokens": 500}))
    mlflow_span.end()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["chat"].attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert spans["Messages.create"].attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    totals = ledger.process_totals()
    assert (totals.calls, totals.total_tokens) == (2, 1515)


def test_an_mlflow_span_our_span_adopted_is_a_wrapper_though_the_call_ended_in_another_thread():
    """The explicit link: our request span took the MLflow span as its parent (mlflow_autolog.remember); once
    ours is counted, MLflow's is a wrapper even where timing cannot tell (a stream read to its end in a worker
    thread, whose context the MLflow span's end does not see)."""
    import threading

    from mlflow.entities import LiveSpan

    from mltrack_otel.instrumentation import mlflow_autolog

    ledger = Ledger()
    processor = CostSpanProcessor(mlflow_autolog.MlflowAutologCost(), ledger=ledger, pricer=Pricer())
    ours = TracerProvider()
    ours.add_span_processor(processor)
    # MLflow's span, on MLflow's own provider: our processor never sees it end.
    otel_span = TracerProvider().get_tracer("mlflow").start_span("Messages.create")
    mlflow_span = LiveSpan(otel_span, trace_id="tr-" + uuid.uuid4().hex, span_type="CHAT_MODEL")
    otel_span.set_attributes(_claude_mlflow_attributes(provider=None))
    call = ours.get_tracer("test").start_span(
        "chat claude",
        attributes={
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-3-5-sonnet-latest",
            "gen_ai.response.model": "claude-3-5-sonnet-20241022",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 500,
        },
    )
    mlflow_autolog.remember(call, mlflow_span)
    worker = threading.Thread(target=call.end)
    worker.start()
    worker.join()
    otel_span.set_attribute("mlflow.chat.tokenUsage", json.dumps({"input_tokens": 1000, "output_tokens": 500}))
    mlflow_autolog._account(processor, mlflow_span)
    assert ledger.process_totals().calls == 1
    assert json.loads(otel_span.attributes["mlflow.llm.cost"])["total_cost"] > 0  # our price, set by our span


def test_a_span_that_ends_elsewhere_is_priced_counted_once_and_crosses_limits_on_itself():
    """account_elsewhere, as MLflow's span processor calls it on a span of MLflow's own provider."""
    from mltrack_otel.ledger import Limits

    ledger = Ledger(Limits(cost_warning=0.0000001))
    processor = CostSpanProcessor(ledger=ledger, pricer=Pricer())
    elsewhere = TracerProvider().get_tracer("mlflow")  # a provider our processor is not on
    attributes = {
        "mlflow.chat.tokenUsage": json.dumps({"input_tokens": 5, "output_tokens": 30}),
        "mlflow.llm.model": '"mystery-llm-1"',
    }
    unpriced = elsewhere.start_span("Completions", attributes=attributes)
    assert not processor.sees(unpriced)
    out = processor.account_elsewhere(unpriced, count=True)
    assert out["mlflow.llm.cost"] is None and out[semconv.MLTRACK_COST_UNPRICED] is True
    priced = elsewhere.start_span("Completions", attributes={**attributes, "mlflow.llm.model": '"gpt-4o-2024-08-06"'})
    with pytest.warns(LLMLimitWarning):
        out = processor.account_elsewhere(priced, count=True)
    assert out["mlflow.llm.cost"]["total_cost"] == out[semconv.LLM_COST_TOTAL] > 0
    assert out[semconv.MLTRACK_USAGE_COUNTED] is True
    assert [event.name for event in priced.events] == [semconv.MLTRACK_LIMIT_EXCEEDED]
    assert processor.account_elsewhere(priced, count=False)[semconv.MLTRACK_USAGE_COUNTED] is False
    totals = ledger.process_totals()
    assert (totals.calls, totals.unpriced_calls, totals.total_tokens) == (2, 1, 70)
