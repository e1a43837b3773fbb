"""CostSpanProcessor: pricing, exactly-once counting across nested spans, totals, limits, forwarding."""

from __future__ import annotations

import warnings
from decimal import Decimal

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mltrack_otel import semconv
from mltrack_otel.errors import BudgetExceededError, LLMLimitWarning
from mltrack_otel.ledger import Ledger, Limits
from mltrack_otel.pricing import PriceOverride, Pricer
from mltrack_otel.processor import CostSpanProcessor
from tests.traced import Traced, by_name

# Published prices, USD per 1M tokens (openai.com/api/pricing): gpt-4o $2.50 in / $10.00 out.
GPT4O_IN, GPT4O_OUT = Decimal("2.50"), Decimal("10.00")
M = Decimal(1_000_000)


def gpt4o_cost(prompt: int, completion: int) -> float:
    return float(prompt * GPT4O_IN / M + completion * GPT4O_OUT / M)


def usage_attrs(prompt: int, completion: int, model: str = "gpt-4o", provider: str = "openai") -> dict:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": prompt,
        "gen_ai.usage.output_tokens": completion,
    }


@pytest.fixture
def setup():
    harness = Traced(pricer=Pricer())
    return harness.provider.get_tracer("test"), harness.ledger, lambda: by_name(harness.exporter), harness.processor


def test_prices_a_model_call_and_totals_the_trace(setup):
    tracer, ledger, spans, _ = setup
    with tracer.start_as_current_span("root"):
        with tracer.start_as_current_span("chat gpt-4o", attributes=usage_attrs(1000, 200)):
            pass
        with tracer.start_as_current_span("chat gpt-4o #2", attributes=usage_attrs(10, 5)):
            pass
    got = spans()
    first, second, root = got["chat gpt-4o"], got["chat gpt-4o #2"], got["root"]
    assert first.attributes[semconv.LLM_COST_TOTAL] == pytest.approx(gpt4o_cost(1000, 200), rel=1e-12)
    assert first.attributes[semconv.LLM_COST_PROMPT] == pytest.approx(gpt4o_cost(1000, 0), rel=1e-12)
    assert first.attributes[semconv.LLM_TOKENS_TOTAL] == 1200
    assert first.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    # Running total on the second call includes the first; the root carries the trace's final total.
    both = gpt4o_cost(1000, 200) + gpt4o_cost(10, 5)
    assert second.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(both, rel=1e-12)
    assert second.attributes[semconv.LLM_TOKENS_CUMULATIVE_TOTAL] == 1215
    assert root.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(both, rel=1e-12)
    assert root.attributes[semconv.LLM_TOKENS_CUMULATIVE_PROMPT] == 1010
    assert ledger.process_totals().calls == 2


def test_wrapper_span_over_a_counted_call_is_not_counted_again(setup):
    tracer, ledger, spans, _ = setup
    with tracer.start_as_current_span("framework llm", attributes=usage_attrs(100, 10)):
        with tracer.start_as_current_span("provider call", attributes=usage_attrs(100, 10)):
            pass
    got = spans()
    inner, outer = got["provider call"], got["framework llm"]
    assert inner.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert outer.attributes[semconv.MLTRACK_USAGE_COUNTED] is False
    # Both keep their usage and price for the reader, but only the inner one feeds totals.
    assert outer.attributes[semconv.LLM_COST_TOTAL] == pytest.approx(gpt4o_cost(100, 10))
    assert ledger.process_totals().calls == 1
    assert outer.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(gpt4o_cost(100, 10))


def test_three_layers_count_once_and_siblings_each_count(setup):
    tracer, ledger, spans, _ = setup
    with tracer.start_as_current_span("dspy"):
        with tracer.start_as_current_span("litellm", attributes=usage_attrs(50, 5)):
            with tracer.start_as_current_span("openai", attributes=usage_attrs(50, 5)):
                pass
        with tracer.start_as_current_span("litellm-2", attributes=usage_attrs(7, 3)):
            pass  # no provider span under it (provider instrumentation off): the framework span counts
    got = spans()
    assert got["openai"].attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert got["litellm"].attributes[semconv.MLTRACK_USAGE_COUNTED] is False
    assert got["litellm-2"].attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    expected = gpt4o_cost(50, 5) + gpt4o_cost(7, 3)
    assert got["dspy"].attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(expected, rel=1e-12)
    assert ledger.process_totals().calls == 2


def test_parent_ending_before_its_child_counts_once(setup):
    """Garbage collection may end an abandoned stream's outer span before the inner one: the outer then
    counts, and the inner (and anything with usage further down, under a span still open) is a wrapper."""
    from opentelemetry import trace

    tracer, ledger, spans, _ = setup
    outer = tracer.start_span("litellm", attributes=usage_attrs(50, 5))
    middle = tracer.start_span("http", context=trace.set_span_in_context(outer))
    inner = tracer.start_span("openai", context=trace.set_span_in_context(middle), attributes=usage_attrs(50, 5))
    sibling = tracer.start_span("openai #2", context=trace.set_span_in_context(outer), attributes=usage_attrs(50, 5))
    outer.end()
    sibling.end()
    inner.end()
    middle.end()
    got = spans()
    assert got["litellm"].attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert got["openai"].attributes[semconv.MLTRACK_USAGE_COUNTED] is False
    assert got["openai #2"].attributes[semconv.MLTRACK_USAGE_COUNTED] is False
    assert ledger.process_totals().calls == 1
    # An unrelated call afterwards still counts.
    with tracer.start_as_current_span("chat gpt-4o", attributes=usage_attrs(10, 5)):
        pass
    assert spans()["chat gpt-4o"].attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert ledger.process_totals().calls == 2


def test_unknown_model_is_marked_unpriced_never_zero(setup):
    tracer, ledger, spans, _ = setup
    with tracer.start_as_current_span("x", attributes=usage_attrs(10, 10, model="no-such-model-xyz", provider="acme")):
        pass
    attrs = spans()["x"].attributes
    assert attrs[semconv.MLTRACK_COST_UNPRICED] is True
    assert semconv.LLM_COST_TOTAL not in attrs
    assert attrs[semconv.LLM_TOKENS_TOTAL] == 20
    totals = ledger.process_totals()
    assert (totals.calls, totals.unpriced_calls, totals.total_tokens, totals.cost_usd) == (1, 1, 20, 0)


@pytest.mark.parametrize(
    "attrs",
    [
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 1000,
            "gen_ai.usage.completion_tokens": 200,
        },
        {
            "llm.provider": "openai",
            "llm.model_name": "gpt-4o",
            "llm.token_count.prompt": 1000,
            "llm.token_count.completion": 200,
        },
    ],
    ids=["older-gen-ai-names", "openinference"],
)
def test_spans_from_other_instrumentations_are_priced(setup, attrs):
    tracer, _, spans, _ = setup
    with tracer.start_as_current_span("other", attributes=attrs):
        pass
    assert spans()["other"].attributes[semconv.LLM_COST_TOTAL] == pytest.approx(gpt4o_cost(1000, 200))


def test_response_model_is_priced_before_request_model(setup):
    tracer, _, spans, _ = setup
    attrs = usage_attrs(1_000_000, 0, model="gpt-4o")
    attrs["gen_ai.response.model"] = "gpt-4o-mini-2024-07-18"  # $0.15 / 1M input
    with tracer.start_as_current_span("x", attributes=attrs):
        pass
    assert spans()["x"].attributes[semconv.LLM_COST_TOTAL] == pytest.approx(0.15)


@pytest.mark.parametrize("bad", [-5, "12", 3.5, True, None])
def test_implausible_token_counts_are_skipped_not_priced(setup, bad):
    tracer, ledger, spans, _ = setup
    attrs = usage_attrs(10, 10)
    if bad is None:
        del attrs["gen_ai.usage.input_tokens"]
        attrs["gen_ai.usage.output_tokens"] = -1
    else:
        attrs["gen_ai.usage.input_tokens"] = bad
    with tracer.start_as_current_span("x", attributes=attrs):
        pass
    assert semconv.LLM_COST_TOTAL not in spans()["x"].attributes
    assert ledger.process_totals().calls == 0


def test_override_prices_a_custom_model():
    pricer = Pricer({"my-ft": PriceOverride(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("12"))})
    harness = Traced(pricer=pricer)
    exporter = harness.exporter
    with harness.provider.get_tracer("t").start_as_current_span(
        "x", attributes=usage_attrs(2_000_000, 1_000_000, model="my-ft")
    ):
        pass
    attrs = exporter.get_finished_spans()[0].attributes
    assert attrs[semconv.LLM_COST_TOTAL] == pytest.approx(6 + 12)
    assert attrs[semconv.MLTRACK_PRICING_SOURCE].startswith("override")


def test_warning_limit_emits_one_warning_and_an_event_on_the_crossing_span(setup):
    tracer, ledger, spans, _ = setup
    ledger.limits = Limits(token_warning=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3):
            with tracer.start_as_current_span(f"call{i}", attributes=usage_attrs(40, 0)):
                pass
    limit_warnings = [w for w in caught if issubclass(w.category, LLMLimitWarning)]
    assert len(limit_warnings) == 1  # crossed once (at 120 tokens), not repeated at 120 -> 120
    got = spans()
    assert [e.name for e in got["call2"].events] == [semconv.MLTRACK_LIMIT_EXCEEDED]
    assert got["call2"].events[0].attributes[semconv.MLTRACK_LIMIT_VALUE] == 120
    assert not got["call0"].events and not got["call1"].events


def test_hard_budget_raises_once_spent(setup):
    tracer, ledger, _, _ = setup
    ledger.limits = Limits(cost_budget=Decimal("0.001"))
    ledger.check_budget(None)  # nothing spent yet
    with tracer.start_as_current_span("x", attributes=usage_attrs(1000, 0)):  # $0.0025
        pass
    with pytest.raises(BudgetExceededError) as info:
        ledger.check_budget(None)
    assert info.value.kind == "cost" and info.value.scope == "process"


class _Exploding(SpanExporter):
    def export(self, spans):
        raise RuntimeError("backend down")


def test_a_failing_downstream_processor_does_not_stop_the_others():
    good = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(
        CostSpanProcessor(SimpleSpanProcessor(_Exploding()), SimpleSpanProcessor(good), ledger=Ledger())
    )
    with tp.get_tracer("t").start_as_current_span("x", attributes=usage_attrs(1, 1)):
        pass
    assert [s.name for s in good.get_finished_spans()] == ["x"]


def test_shutdown_and_flush_reach_every_downstream_processor():
    calls = []

    class Recorder(SimpleSpanProcessor):
        def __init__(self, name):
            super().__init__(InMemorySpanExporter())
            self.name = name

        def force_flush(self, timeout_millis=30000):
            calls.append(("flush", self.name))
            return True

        def shutdown(self):
            calls.append(("shutdown", self.name))

    processor = CostSpanProcessor(Recorder("a"), Recorder("b"), ledger=Ledger())
    assert processor.force_flush(100) is True
    processor.shutdown()
    assert calls == [("flush", "a"), ("flush", "b"), ("shutdown", "a"), ("shutdown", "b")]


def test_spans_without_usage_are_forwarded_unchanged(setup):
    tracer, _, spans, _ = setup
    with tracer.start_as_current_span("root", attributes={"k": "v"}):
        pass
    attrs = dict(spans()["root"].attributes)
    assert attrs == {"k": "v"}  # no totals on a root whose trace counted nothing


def test_conversation_id_is_inherited_by_the_counted_span_below_a_framework_span(setup):
    tracer, ledger, spans, _ = setup
    with tracer.start_as_current_span("framework", attributes={"gen_ai.conversation.id": "thread-7"}):
        with tracer.start_as_current_span("provider call", attributes=usage_attrs(1000, 0)):
            pass
    assert spans()["provider call"].attributes["gen_ai.conversation.id"] == "thread-7"
    assert ledger.conversation_totals("thread-7").cost_usd == Decimal("0.0025")  # 1000 x $2.50 / 1M
