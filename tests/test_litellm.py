"""LiteLLM instrumentation: the real litellm package against the fake provider server (loopback only)."""

from __future__ import annotations

import asyncio
import gc
import os
import sys

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: no network at import

import pytest
from opentelemetry.trace import StatusCode

from mltrack_otel import config, guard, semconv
from mltrack_otel.errors import BudgetExceededError
from mltrack_otel.ledger import LEDGER, Limits
from mltrack_otel.pricing import Pricer, Usage

litellm = pytest.importorskip("litellm")
from mltrack_otel.instrumentation import litellm as litellm_instrumentation  # noqa: E402
from mltrack_otel.instrumentation._base import error_type  # noqa: E402
from mltrack_otel.instrumentation.litellm import LiteLLMInstrumentor  # noqa: E402
from tests.instr_fixtures import OPENAI_WEATHER_TOOL  # noqa: E402
from tests.traced import Traced  # noqa: E402

pytestmark = pytest.mark.frameworks

OPENAI_MODEL = "openai/gpt-4o-mini"
ANTHROPIC_MODEL = "anthropic/claude-3-5-haiku-latest"


def _openai_instrumentor():
    try:
        from mltrack_otel.instrumentation.openai import OpenAIInstrumentor
    except ImportError:
        return None
    return OpenAIInstrumentor()


@pytest.fixture
def traced(isolated_env, fake):
    """LiteLLM instrumented into a fresh TracerProvider + CostSpanProcessor; the OpenAI instrumentor off."""
    config.set_current(None)
    fake.clear()
    openai_instrumentor = _openai_instrumentor()
    if openai_instrumentor is not None and openai_instrumentor.is_instrumented_by_opentelemetry:
        openai_instrumentor.uninstrument()
    t = Traced()
    instrumentor = LiteLLMInstrumentor()
    instrumentor.instrument(tracer_provider=t.provider)
    instrumentor.set_tracer_provider(t.provider)
    yield t
    instrumentor.uninstrument()
    config.set_current(None)


def openai_kwargs(fake, text: str = "hello there", **extra):
    return dict(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": text}],
        api_base=fake.openai_base_url,
        api_key="test",
        num_retries=0,
        **extra,
    )


def price(provider: str, model: str, usage: Usage) -> float:
    cost = Pricer().price(provider, model, usage)
    assert cost is not None
    return float(cost.total)


# --- plain calls --------------------------------------------------------------------------------------------


def test_completion_openai_span_usage_cost(traced, fake):
    response = litellm.completion(**openai_kwargs(fake, temperature=0.5, max_tokens=50))
    span = traced.one()
    a = span.attributes
    assert span.name == "chat gpt-4o-mini"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["server.address"] == "127.0.0.1"
    assert a["gen_ai.usage.input_tokens"] == response.usage.prompt_tokens == 5
    assert a["gen_ai.usage.output_tokens"] == response.usage.completion_tokens
    assert a[semconv.MLTRACK_USAGE_COUNTED] is True
    expected = price("openai", "gpt-4o-mini-2024-07-18", Usage(5, response.usage.completion_tokens))
    assert a[semconv.LLM_COST_TOTAL] == pytest.approx(expected)
    assert a[semconv.LLM_COST_CUMULATIVE] == pytest.approx(expected)
    assert '"hello there"' in a["gen_ai.input.messages"]
    assert "Echo:" in a["gen_ai.output.messages"]
    assert "api_key" not in str(dict(a)) and "test" not in a.get("gen_ai.input.messages", "")


def test_completion_anthropic_routed_by_litellm(traced, fake):
    response = litellm.completion(
        model=ANTHROPIC_MODEL,
        messages=[{"role": "user", "content": "hi [[scenario:cache-write]]"}],
        api_base=fake.anthropic_base_url,
        api_key="test",
        num_retries=0,
    )
    assert fake.requests[-1].path == "/v1/messages"
    a = traced.one().attributes
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.request.model"] == "claude-3-5-haiku-latest"
    assert a["gen_ai.response.model"] == "claude-3-5-haiku-20241022"
    written = response.usage.cache_creation_input_tokens
    assert written > 0
    assert a["gen_ai.usage.cache_creation.input_tokens"] == written
    assert a["gen_ai.usage.input_tokens"] == response.usage.prompt_tokens  # includes the cache write
    assert a[semconv.LLM_COST_TOTAL] > 0


def test_cache_read_tokens(traced, fake):
    litellm.completion(**openai_kwargs(fake, "one two [[scenario:cache-read]]"))
    a = traced.one().attributes
    assert a["gen_ai.usage.cache_read.input_tokens"] > 0


def test_acompletion(traced, fake):
    response = asyncio.run(litellm.acompletion(**openai_kwargs(fake)))
    a = traced.one().attributes
    assert a["gen_ai.usage.output_tokens"] == response.usage.completion_tokens
    assert a[semconv.MLTRACK_USAGE_COUNTED] is True


def test_tool_call(traced, fake):
    tools = [OPENAI_WEATHER_TOOL]
    response = litellm.completion(**openai_kwargs(fake, "weather? [[scenario:tool]]", tools=tools))
    assert response.choices[0].message.tool_calls[0].function.name == "get_weather"
    a = traced.one().attributes
    assert a["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert "get_weather" in a["gen_ai.tool.definitions"]
    assert '"tool_call"' in a["gen_ai.output.messages"] and '"city"' in a["gen_ai.output.messages"]


def test_embedding(traced, fake):
    response = litellm.embedding(
        model="openai/text-embedding-3-small",
        input=["hello there"],
        api_base=fake.openai_base_url,
        api_key="test",
    )
    span = traced.one()
    assert span.name == "embeddings text-embedding-3-small"
    assert span.attributes["gen_ai.operation.name"] == "embeddings"
    assert span.attributes["gen_ai.usage.input_tokens"] == response.usage.prompt_tokens
    assert span.attributes["gen_ai.embeddings.dimension.count"] == 16


def test_aembedding(traced, fake):
    asyncio.run(
        litellm.aembedding(
            model="openai/text-embedding-3-small", input="x y", api_base=fake.openai_base_url, api_key="t"
        )
    )
    assert traced.one().attributes["gen_ai.usage.input_tokens"] == 5


# --- streams ------------------------------------------------------------------------------------------------


def test_stream_sync_same_items_and_provider_usage(traced, fake):
    stream = litellm.completion(**openai_kwargs(fake, stream=True))
    assert isinstance(stream, litellm.CustomStreamWrapper)
    chunks = list(stream)
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}  # asked for on the wire
    assert all(c.choices for c in chunks)  # ...but no usage-only chunk reached the caller
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    span = traced.one()
    a = span.attributes
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.usage.input_tokens"] == 5  # the provider's count, not LiteLLM's estimate
    assert a["gen_ai.usage.output_tokens"] == 30
    assert a[semconv.MLTRACK_USAGE_COUNTED] is True
    assert text in a["gen_ai.output.messages"]
    assert "gen_ai.response.time_to_first_chunk" in a


def test_stream_with_caller_stream_options(traced, fake):
    chunks = list(litellm.completion(**openai_kwargs(fake, stream=True, stream_options={"include_usage": True})))
    assert chunks[-1].usage is not None  # the caller asked for it: they get it
    assert traced.one().attributes["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens


def test_stream_async(traced, fake):
    async def run():
        stream = await litellm.acompletion(**openai_kwargs(fake, stream=True))
        return [c async for c in stream]

    chunks = asyncio.run(run())
    assert chunks
    a = traced.one().attributes
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a["gen_ai.usage.output_tokens"] == 30


def test_stream_anthropic(traced, fake):
    stream = litellm.completion(
        model=ANTHROPIC_MODEL,
        messages=[{"role": "user", "content": "hi"}],
        api_base=fake.anthropic_base_url,
        api_key="test",
        stream=True,
    )
    list(stream)
    a = traced.one().attributes
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.usage.output_tokens"] == 30
    assert "stream_options" not in fake.requests[-1].json


def test_stream_closed_early_ends_once_partial(traced, fake):
    stream = litellm.completion(**openai_kwargs(fake, stream=True))
    next(stream)
    stream.close()
    stream.close()
    span = traced.one()
    assert span.attributes[semconv.MLTRACK_STREAM_COMPLETE] is False


@pytest.mark.parametrize("capture", [True, False])
def test_stream_closed_early_is_counted_with_estimated_usage(traced, fake, monkeypatch, capture):
    monkeypatch.setenv("MLTRACK_LLM_LOG_RESPONSES", str(capture).lower())
    stream = litellm.completion(**openai_kwargs(fake, stream=True))
    seen = [next(stream) for _ in range(5)]
    stream.close()
    a = traced.one().attributes
    assert ("gen_ai.output.messages" in a) is capture
    assert a[semconv.MLTRACK_USAGE_SOURCE] == "estimated"
    assert a["gen_ai.usage.input_tokens"] > 0
    assert 0 < a["gen_ai.usage.output_tokens"] <= 2 * len(seen)  # the fake sends one token per delta
    assert a[semconv.LLM_COST_TOTAL] > 0
    totals = traced.ledger.process_totals()
    assert totals.calls == totals.estimated_calls == 1
    assert totals.cost_usd == totals.estimated_cost_usd > 0


def test_stream_read_to_the_end_keeps_the_provider_usage(traced, fake):
    list(litellm.completion(**openai_kwargs(fake, stream=True)))
    assert traced.one().attributes[semconv.MLTRACK_USAGE_SOURCE] == "provider"
    assert traced.ledger.process_totals().estimated_calls == 0


def test_stream_abandoned_ends_on_gc(traced, fake):
    stream = litellm.completion(**openai_kwargs(fake, stream=True))
    next(stream)
    del stream
    gc.collect()
    guard.drain_deferred()  # the span is ended off the collector, by the finalizer worker
    assert traced.one().attributes[semconv.MLTRACK_STREAM_COMPLETE] is False


def test_stream_context_manager(traced, fake):
    with litellm.completion(**openai_kwargs(fake, stream=True)) as stream:
        for _ in stream:
            pass
    assert traced.one().attributes[semconv.MLTRACK_STREAM_COMPLETE] is True


# --- errors and budget ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scenario", "error"), [("error-429", "RateLimitError"), ("error-500", "InternalServerError")])
def test_provider_error_mapped(traced, fake, scenario, error):
    with pytest.raises(getattr(litellm, error)) as raised:
        litellm.completion(**openai_kwargs(fake, f"x [[scenario:{scenario}]]"))
    span = traced.one()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"]
    assert span.attributes["error.type"] == error_type(raised.value)  # the provider's code, else the class
    assert span.attributes["http.response.status_code"] == int(scenario[-3:])
    assert "gen_ai.usage.input_tokens" not in span.attributes


def test_budget_raises_before_any_request(traced, fake, monkeypatch):
    monkeypatch.setattr(LEDGER, "limits", Limits(token_budget=1))
    LEDGER.reset()
    LEDGER.add(1, None, None, 5, 5, None)
    try:
        with pytest.raises(BudgetExceededError):
            litellm.completion(**openai_kwargs(fake))
        assert fake.requests == []
        assert traced.spans() == []
    finally:
        LEDGER.reset()


def test_tracking_disabled_passes_through(traced, fake, monkeypatch):
    monkeypatch.setenv("MLTRACK_LLM_TRACKING_ENABLED", "false")
    config.set_current(None)
    litellm.completion(**openai_kwargs(fake))
    assert traced.spans() == []


def test_suppressed_instrumentation_passes_through(traced, fake):
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        assert litellm.completion(**openai_kwargs(fake)).choices[0].message.content
    assert traced.spans() == []


# --- Router -------------------------------------------------------------------------------------------------


def test_router_two_deployments(traced, fake):
    router = litellm.Router(
        model_list=[
            {
                "model_name": "fast",
                "litellm_params": {"model": OPENAI_MODEL, "api_base": fake.openai_base_url, "api_key": "t"},
            },
            {
                "model_name": "fast",
                "litellm_params": {
                    "model": ANTHROPIC_MODEL,
                    "api_base": fake.anthropic_base_url,
                    "api_key": "t",
                },
            },
        ],
        num_retries=0,
    )
    for _ in range(4):
        router.completion(model="fast", messages=[{"role": "user", "content": "hi"}])
    asyncio.run(router.acompletion(model="fast", messages=[{"role": "user", "content": "hi"}]))
    spans = traced.spans()
    assert len(spans) == 5
    assert {s.attributes["gen_ai.provider.name"] for s in spans} <= {"openai", "anthropic"}
    assert all(s.attributes[semconv.MLTRACK_USAGE_COUNTED] is True for s in spans)
    paths = [r.path for r in fake.requests]
    for span, path in zip(spans, paths, strict=True):
        assert (span.attributes["gen_ai.provider.name"] == "anthropic") == (path == "/v1/messages")


# --- the OpenAI SDK layer below -----------------------------------------------------------------------------


@pytest.fixture
def sdk_below(traced):
    """The OpenAI SDK instrumented too, into the same pipeline: LiteLLM's span with the SDK's below it."""
    from mltrack_otel.instrumentation.openai import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=traced.provider)
    instrumentor.set_tracer_provider(traced.provider)
    yield
    instrumentor.uninstrument()


def test_openai_instrumentor_on_counts_the_innermost_span(traced, sdk_below, fake):
    with traced.provider.get_tracer("test").start_as_current_span("root"):
        litellm.completion(**openai_kwargs(fake))
        list(litellm.completion(**openai_kwargs(fake, stream=True)))
    spans = {s.context.span_id: s for s in traced.spans()}
    assert len(spans) == 5  # root, 2 x (litellm -> openai)
    root = next(s for s in spans.values() if s.name == "root")
    outer = [s for s in spans.values() if s.parent and s.parent.span_id == root.context.span_id]
    assert len(outer) == 2
    counted = 0.0
    for span in outer:
        inner = [s for s in spans.values() if s.parent and s.parent.span_id == span.context.span_id]
        assert len(inner) == 1, "the OpenAI SDK span must be a child of the LiteLLM span"
        assert inner[0].instrumentation_scope.name != span.instrumentation_scope.name
        assert inner[0].attributes[semconv.MLTRACK_USAGE_COUNTED] is True
        assert span.attributes[semconv.MLTRACK_USAGE_COUNTED] is False  # kept its usage, not counted again
        assert span.attributes["gen_ai.usage.input_tokens"] == inner[0].attributes["gen_ai.usage.input_tokens"]
        counted += inner[0].attributes[semconv.LLM_COST_TOTAL]
    assert root.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(counted)


def test_abandoned_stream_ended_outer_first_counts_once(traced, sdk_below, fake):
    """An abandoned stream carries estimated usage on both layers; garbage collection may end LiteLLM's span
    before the OpenAI SDK's below it. The outer then counts, and the inner, ending later, is its wrapper."""
    stream = litellm.completion(**openai_kwargs(fake, "tell me a long story", stream=True))
    for i, _chunk in enumerate(stream):
        if i == 1:
            break
    # The order the collector may pick, made deterministic: LiteLLM's span ends first, then the SDK's stream
    # below it is closed (as its collection would, later; closing does not depend on what else holds it).
    stream._self_recorder.end(False)
    stream.completion_stream.close()
    del stream, _chunk
    gc.collect()
    guard.drain_deferred()
    spans = traced.spans()
    assert len(spans) == 2
    outer = next(s for s in spans if s.parent is None)
    inner = next(s for s in spans if s.parent is not None)
    assert inner.parent.span_id == outer.context.span_id
    assert inner.end_time >= outer.end_time  # the order under test
    for span in spans:
        assert span.attributes[semconv.MLTRACK_USAGE_SOURCE] == "estimated"
    assert outer.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert inner.attributes[semconv.MLTRACK_USAGE_COUNTED] is False
    totals = traced.ledger.process_totals()
    assert totals.calls == totals.estimated_calls == 1
    assert float(totals.cost_usd) == pytest.approx(outer.attributes[semconv.LLM_COST_TOTAL])


def test_provider_mapping():
    assert litellm_instrumentation.otel_provider("vertex_ai", None) == "gcp.vertex_ai"
    assert litellm_instrumentation.otel_provider("bedrock", None) == "aws.bedrock"
    assert litellm_instrumentation.otel_provider("openai", "api.groq.com") == "groq"
    assert litellm_instrumentation.otel_provider("openrouter", None) == "openrouter"
    assert litellm_instrumentation.split_model("anthropic/claude-3") == ("anthropic", "claude-3")
    assert litellm_instrumentation.split_model("my-model") == (None, "my-model")


# --- hard budgets: reserved before the request, held once however many layers carry the call -------------------


@pytest.fixture
def budgeted(isolated_env, fake):
    """LiteLLM and the OpenAI SDK under it instrumented, the processor writing into the process ledger."""
    from mltrack_otel.instrumentation.openai import OpenAIInstrumentor

    config.set_current(None)
    fake.clear()
    LEDGER.reset()
    LEDGER.pricer = None  # a hand-built processor prices the ledger's reservations only when it has no pricer
    provider = Traced(ledger=LEDGER).provider
    instrumentors = [LiteLLMInstrumentor(), OpenAIInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
        instrumentor.set_tracer_provider(provider)
    yield
    for instrumentor in instrumentors:
        instrumentor.uninstrument()
    LEDGER.limits = Limits()
    LEDGER.reset()
    LEDGER.pricer = None
    config.set_current(None)


def _worst_cost(text: str, max_tokens: int) -> float:
    from mltrack_otel import estimate

    body = {"messages": [{"role": "user", "content": text}]}
    return price("openai", "gpt-4o-mini", Usage(estimate.input_tokens(body, "gpt-4o-mini"), max_tokens))


def test_budget_holds_a_litellm_call_once_though_the_sdk_under_it_is_instrumented(budgeted, fake):
    from decimal import Decimal

    from mltrack_otel import budget

    text = "what is the weather like in Paris today"
    # Room for one worst case, not two: the SDK call inside LiteLLM takes LiteLLM's hold over.
    LEDGER.limits = Limits(cost_budget=Decimal(str(_worst_cost(text, 10) * 1.5)))
    held_by_sdk = []
    original = budget.reserve

    def spy(*args, **kwargs):
        reservation = original(*args, **kwargs)
        held_by_sdk.append(LEDGER.held())
        return reservation

    budget.reserve = spy
    try:
        litellm.completion(**openai_kwargs(fake, text, max_tokens=10))
    finally:
        budget.reserve = original
    assert len(held_by_sdk) == 2  # LiteLLM's reservation, then the SDK's in its place
    assert held_by_sdk[1][1] <= held_by_sdk[0][1] * Decimal("1.01")
    assert LEDGER.held() == (0, Decimal(0))
    assert LEDGER.process_totals().calls == 1
    assert len(fake.requests) == 1


def test_a_local_model_under_litellm_reserves_no_cloud_price(budgeted, fake):
    """A model on a local server costs nothing per call: a cost limit below its cloud price still lets it out."""
    from decimal import Decimal

    model = "deepseek-chat"  # genai-prices has a cloud price for this name
    assert price("deepseek", model, Usage(1000, 1000)) > 0
    LEDGER.limits = Limits(cost_budget=Decimal("0.000001"))
    local_base = fake.openai_base_url.replace(fake.host, "localhost")  # not the suite's cloud host
    litellm.completion(**{**openai_kwargs(fake, max_tokens=10), "model": f"openai/{model}", "api_base": local_base})
    assert len(fake.requests) == 1
    assert LEDGER.process_totals().calls == 1
    assert LEDGER.held() == (0, Decimal(0))


def test_concurrent_litellm_calls_stay_within_the_cost_limit(budgeted, fake):
    import threading
    from decimal import Decimal

    from mltrack_otel import estimate
    from mltrack_otel.testing.fake_provider import prompt_tokens_for_texts

    limit = Decimal(str(_worst_cost("question number 10 about the weather", 10) * 3.5))
    LEDGER.limits = Limits(cost_budget=limit)
    barrier = threading.Barrier(20)
    refused = []

    def work(i: int) -> None:
        barrier.wait()
        text = f"question number {i + 10} about the weather [[scenario:slow]]"
        try:
            litellm.completion(**openai_kwargs(fake, text, max_tokens=10))
        except BudgetExceededError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Estimation error: none when each input estimate is at least the fake's count (the output is capped alike).
    for request in fake.requests:
        texts = [m["content"] for m in request.json["messages"]]
        assert estimate.input_tokens(request.json, "gpt-4o-mini") >= prompt_tokens_for_texts(texts)
    assert LEDGER.process_totals().cost_usd <= limit
    assert refused and len(fake.requests) == 20 - len(refused)
    assert LEDGER.held() == (0, Decimal(0))


@pytest.mark.parametrize("shape", ["text", "tool_call"])
def test_stream_without_content_capture_keeps_text_not_deltas(traced, fake, monkeypatch, shape):
    """A LiteLLM delta object is many times the size of its text: only the text is kept for an estimate, and the
    estimate is the one content capture gives."""
    if shape == "text":
        kwargs, n = {"extra_headers": {"x-fake-scenario": "long"}}, 250  # 300 deltas
    else:
        kwargs, n = {"extra_headers": {"x-fake-scenario": "tool"}, "tools": [OPENAI_WEATHER_TOOL]}, 20
    estimated = {}
    for capture in (True, False):
        monkeypatch.setenv("MLTRACK_LLM_LOG_RESPONSES", str(capture).lower())
        config.set_current(None)  # read the environment again
        traced.exporter.clear()
        stream = litellm.completion(**openai_kwargs(fake, stream=True, **kwargs))
        for _ in range(n):
            next(stream)
        if not capture:
            kept = stream._self_recorder.seen
            assert kept and all(type(piece) is str for piece in kept)  # no LiteLLM objects held
            assert (sys.getsizeof(kept) + sum(map(sys.getsizeof, kept))) / n < 200  # bytes per chunk
        stream.close()
        a = traced.one().attributes
        assert a[semconv.MLTRACK_USAGE_SOURCE] == "estimated"
        estimated[capture] = a["gen_ai.usage.output_tokens"]
    assert estimated[False] == estimated[True] > 0
