"""DSPy instrumentation: real dspy.Predict / dspy.ChainOfThought end to end against the fake provider server.

DSPy 3.4's LM picks its native lm15 engine by default (stdlib HTTP, no LiteLLM); ``engine="litellm"`` sends the
call through LiteLLM (and the OpenAI SDK). Both are tested: the innermost span with usage is counted.
"""

from __future__ import annotations

import asyncio
import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: no network at import

import pytest
from opentelemetry.trace import StatusCode

from mltrack_otel import config, semconv
from mltrack_otel.errors import BudgetExceededError
from mltrack_otel.ledger import LEDGER, Limits
from mltrack_otel.pricing import Pricer, Usage

dspy = pytest.importorskip("dspy")
litellm = pytest.importorskip("litellm")
from mltrack_otel.instrumentation.dspy import DSPyInstrumentor  # noqa: E402
from mltrack_otel.instrumentation.litellm import LiteLLMInstrumentor  # noqa: E402
from tests.traced import Traced  # noqa: E402

pytestmark = pytest.mark.frameworks


def _openai_instrumentor():
    try:
        from mltrack_otel.instrumentation.openai import OpenAIInstrumentor
    except ImportError:
        return None
    return OpenAIInstrumentor()


@pytest.fixture
def traced(isolated_env, fake):
    """DSPy + LiteLLM instrumented into a fresh pipeline; the OpenAI instrumentor off unless a test turns it on."""
    config.set_current(None)
    fake.clear()
    openai_instrumentor = _openai_instrumentor()
    if openai_instrumentor is not None and openai_instrumentor.is_instrumented_by_opentelemetry:
        openai_instrumentor.uninstrument()
    t = Traced()
    instrumentors = [DSPyInstrumentor(), LiteLLMInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=t.provider)
        instrumentor.set_tracer_provider(t.provider)
    yield t
    for instrumentor in instrumentors:
        instrumentor.uninstrument()
    config.set_current(None)


def make_lm(fake, engine: str = "litellm", **kwargs):
    return dspy.LM(
        "openai/gpt-4o-mini", api_base=fake.openai_base_url, api_key="test", cache=False, engine=engine, **kwargs
    )


def independent_price(history_entry) -> float:
    usage = history_entry["usage"]
    cost = Pricer().price(
        "openai", history_entry["response_model"], Usage(usage["prompt_tokens"], usage["completion_tokens"])
    )
    assert cost is not None
    return float(cost.total)


def counted_cost(spans) -> float:
    return sum(s.attributes[semconv.LLM_COST_TOTAL] for s in spans if s.attributes.get(semconv.MLTRACK_USAGE_COUNTED))


def root_of(spans):
    (root,) = [s for s in spans if s.parent is None]
    return root


def test_predict_end_to_end_through_litellm(traced, fake):
    lm = make_lm(fake)
    with dspy.context(lm=lm):
        prediction = dspy.Predict("question -> answer")(question="What is 2+2?")
    assert prediction.answer == "Echo: What is 2+2?"
    assert traced.tree() == [(0, "invoke_agent Predict"), (1, "chat gpt-4o-mini"), (2, "chat gpt-4o-mini")]
    spans = traced.spans()
    predict = root_of(spans)
    dspy_lm = next(s for s in spans if s.instrumentation_scope.name.endswith(".dspy") and s is not predict)
    lite = next(s for s in spans if s.instrumentation_scope.name.endswith(".litellm"))
    assert lite.parent.span_id == dspy_lm.context.span_id
    assert lite.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert dspy_lm.attributes[semconv.MLTRACK_USAGE_COUNTED] is False  # keeps its usage, not counted again
    assert dspy_lm.attributes["gen_ai.usage.input_tokens"] == lite.attributes["gen_ai.usage.input_tokens"]
    assert dspy_lm.attributes["gen_ai.provider.name"] == "openai"
    assert predict.attributes["gen_ai.agent.name"] == "Predict"
    assert "What is 2+2?" in predict.attributes["gen_ai.input.messages"]
    assert "Echo: What is 2+2?" in predict.attributes["gen_ai.output.messages"]
    expected = independent_price(lm.history[-1])
    assert counted_cost(spans) == pytest.approx(expected)
    assert predict.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(expected)


def test_chain_of_thought_tree_and_totals(traced, fake):
    lm = make_lm(fake)
    with dspy.context(lm=lm):
        prediction = dspy.ChainOfThought("question -> answer: int")(question="What is 2+2?")
    assert prediction.answer == 1 and prediction.reasoning.startswith("Echo:")
    assert traced.tree() == [
        (0, "invoke_agent ChainOfThought"),
        (1, "invoke_agent Predict"),
        (2, "chat gpt-4o-mini"),  # DSPy LM
        (3, "chat gpt-4o-mini"),  # LiteLLM
    ]
    spans = traced.spans()
    root = root_of(spans)
    counted = [s for s in spans if s.attributes.get(semconv.MLTRACK_USAGE_COUNTED)]
    assert len(counted) == 1 and counted[0].instrumentation_scope.name.endswith(".litellm")
    assert root.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(counted_cost(spans))
    assert root.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(independent_price(lm.history[-1]))


def test_native_engine_counts_the_dspy_lm_span(traced, fake):
    lm = make_lm(fake, engine="auto")
    with dspy.context(lm=lm):
        dspy.ChainOfThought("question -> answer")(question="What is 2+2?")
    assert fake.requests[-1].headers["user-agent"].startswith("lm15")  # no LiteLLM below
    assert traced.tree() == [(0, "invoke_agent ChainOfThought"), (1, "invoke_agent Predict"), (2, "chat gpt-4o-mini")]
    spans = traced.spans()
    lm_span = next(s for s in spans if s.name == "chat gpt-4o-mini")
    assert lm_span.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert root_of(spans).attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(independent_price(lm.history[-1]))


def test_async_predict(traced, fake):
    lm = make_lm(fake)

    async def run():
        with dspy.context(lm=lm):
            return await dspy.Predict("question -> answer").acall(question="async?")

    assert asyncio.run(run()).answer == "Echo: async?"
    assert [d for d, _ in traced.tree()] == [0, 1, 2]
    spans = traced.spans()
    assert root_of(spans).attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(counted_cost(spans))


def test_streamed_predict(traced, fake):
    lm = make_lm(fake)
    program = dspy.streamify(
        dspy.Predict("question -> answer"),
        stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")],
    )

    async def run():
        final = None
        with dspy.context(lm=lm):
            async for item in program(question="stream please"):
                if isinstance(item, dspy.Prediction):
                    final = item
        return final

    final = asyncio.run(run())
    assert final is not None and final.answer.startswith("Echo:")
    assert fake.requests[-1].json.get("stream") is True
    spans = traced.spans()
    lite = [s for s in spans if s.instrumentation_scope.name.endswith(".litellm")]
    assert len(lite) == 1 and lite[0].attributes[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert lite[0].attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert root_of(spans).attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(counted_cost(spans))


def test_react_tool_call(traced, fake):
    calls = []

    def lookup(city: str) -> str:
        """Weather of a city."""
        calls.append(city)
        return "sunny"

    lm = make_lm(fake)
    with dspy.context(lm=lm):
        dspy.ReAct("question -> answer", tools=[lookup], max_iters=3)(question="weather? [[scenario:tool]]")
    assert calls == ["example"]
    spans = traced.spans()
    (tool,) = [s for s in spans if s.name == "execute_tool lookup"]
    assert tool.attributes["gen_ai.tool.name"] == "lookup"
    assert "example" in tool.attributes["gen_ai.tool.call.arguments"]
    assert "sunny" in tool.attributes["gen_ai.tool.call.result"]
    root = root_of(spans)
    assert root.name == "invoke_agent ReAct"
    lite = [s for s in spans if s.instrumentation_scope.name.endswith(".litellm")]
    assert len(lite) >= 3  # tool step, finish step, extract step
    assert all(s.attributes[semconv.MLTRACK_USAGE_COUNTED] for s in lite)
    assert root.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(counted_cost(spans))


def test_provider_error(traced, fake):
    lm = make_lm(fake, num_retries=0)
    with dspy.context(lm=lm), pytest.raises(Exception):  # noqa: B017 - DSPy wraps provider errors its own way
        dspy.Predict("question -> answer")(question="fail [[scenario:error-429]]")
    spans = traced.spans()
    assert spans and all(s.status.status_code is StatusCode.ERROR for s in spans)
    lm_spans = [s for s in spans if s.name == "chat gpt-4o-mini"]
    assert lm_spans and all(s.attributes.get("error.type") for s in lm_spans)
    assert all("gen_ai.usage.input_tokens" not in s.attributes for s in spans)


def test_budget_raises_before_any_request(traced, fake, monkeypatch):
    monkeypatch.setattr(LEDGER, "limits", Limits(token_budget=1))
    LEDGER.reset()
    LEDGER.add(1, None, None, 5, 5, None)
    try:
        with dspy.context(lm=make_lm(fake)), pytest.raises(BudgetExceededError):
            dspy.Predict("question -> answer")(question="q")
        assert fake.requests == []
    finally:
        LEDGER.reset()


def test_user_callbacks_kept_and_ours_survives_configure(traced, fake):
    from dspy.utils.callback import BaseCallback

    seen = []

    class Mine(BaseCallback):
        def on_module_start(self, call_id, instance, inputs):
            seen.append(type(instance).__name__)

    with dspy.context(lm=make_lm(fake), callbacks=[Mine()]):
        dspy.Predict("question -> answer")(question="q")
    assert seen == ["Predict"]
    assert len(traced.spans()) == 3


def test_uninstrument_removes_the_callback(traced, fake):
    DSPyInstrumentor().uninstrument()
    assert not any(type(c).__name__ == "MltrackCallback" for c in dspy.settings.get("callbacks", []))
    with dspy.context(lm=make_lm(fake)):
        dspy.Predict("question -> answer")(question="q")
    assert [s.instrumentation_scope.name.rsplit(".", 1)[-1] for s in traced.spans()] == ["litellm"]


def test_dspy_over_litellm_over_openai_counts_the_innermost(traced, fake):
    openai_instrumentor = _openai_instrumentor()
    if openai_instrumentor is None:
        pytest.skip("mltrack_otel.instrumentation.openai is not there yet")
    openai_instrumentor.instrument(tracer_provider=traced.provider)
    openai_instrumentor.set_tracer_provider(traced.provider)
    lm = make_lm(fake)
    try:
        with dspy.context(lm=lm):
            dspy.ChainOfThought("question -> answer")(question="What is 2+2?")
    finally:
        openai_instrumentor.uninstrument()
    tree = traced.tree()
    assert [d for d, _ in tree] == [0, 1, 2, 3, 4]
    spans = sorted(traced.spans(), key=lambda s: s.start_time)
    dspy_lm, lite, sdk = spans[2], spans[3], spans[4]
    assert sdk.instrumentation_scope.name.endswith(".openai")
    assert sdk.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert lite.attributes[semconv.MLTRACK_USAGE_COUNTED] is False
    assert dspy_lm.attributes[semconv.MLTRACK_USAGE_COUNTED] is False
    for span in (dspy_lm, lite):
        assert span.attributes["gen_ai.usage.input_tokens"] == sdk.attributes["gen_ai.usage.input_tokens"]
    root = spans[0]
    assert root.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(counted_cost(spans))
    assert root.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(independent_price(lm.history[-1]))


@pytest.mark.parametrize("engine", ["litellm", "auto"])
def test_budget_reserves_where_the_lm_sends_and_releases_after_the_call(traced, fake, monkeypatch, engine):
    from decimal import Decimal

    from mltrack_otel import budget

    monkeypatch.setattr(LEDGER, "limits", Limits(token_budget=1_000_000))
    LEDGER.reset()
    seen = []  # (tokens this reservation holds, tokens the process holds right after it)
    original = budget.reserve

    def spy(*args, **kwargs):
        reservation = original(*args, **kwargs)
        seen.append((reservation.tokens, LEDGER.held()[0]))
        return reservation

    monkeypatch.setattr(budget, "reserve", spy)
    try:
        with dspy.context(lm=make_lm(fake, engine=engine, max_tokens=50)):
            dspy.Predict("question -> answer")(question="what is the weather like")
        assert seen and seen[0][0] > 50  # the input estimate plus max_tokens
        assert all(own == held for own, held in seen)  # an inner layer's hold replaced the outer one's
        assert LEDGER.held() == (0, Decimal(0))
        assert len(fake.requests) == 1
    finally:
        LEDGER.reset()
