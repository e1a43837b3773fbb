"""SDKs that trace themselves: one span per model call, and the usage names of both GenAI convention generations.

anthropic 2.x records its own span for every call (`anthropic.messages.create`) whenever a global TracerProvider
exists, as after configure(). Ours is the one span of an instrumented call, unless the user asked for the SDK's
spans too; then the SDK's span nests under ours and the call is still counted once. openai 3.x, LiteLLM,
LangChain, LlamaIndex and DSPy record no spans of their own by default (only opt-in callbacks), so the OpenAI
test only guards against a future release that starts to.
"""

from __future__ import annotations

from decimal import Decimal

import anthropic
import genai_prices
import openai
import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from mltrack_otel import config, semconv
from mltrack_otel.instrumentation import _base, instrument, uninstrument
from mltrack_otel.ledger import LEDGER
from mltrack_otel.ledger import totals as ledger_totals
from mltrack_otel.usage import GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
from tests.instr_fixtures import attrs, use_settings
from tests.traced import Traced

MODEL = "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "Tell me about spans please"}]
SDK_SCOPE = "com.anthropic.sdk.python"
OUR_SCOPE = "mltrack_otel.instrumentation.anthropic"
CACHED_SYSTEM = [{"type": "text", "text": "long reusable context " * 20, "cache_control": {"type": "ephemeral"}}]


def _scopes(spans) -> list[str]:
    return sorted(s.instrumentation_scope.name for s in spans)


def _cost(span) -> Decimal:
    return Decimal(str(attrs(span)[semconv.LLM_COST_TOTAL]))


def _genai_prices_cost(message: anthropic.types.Message) -> Decimal:
    """What genai-prices charges for the usage Anthropic reported (its input_tokens exclude the cache)."""
    usage = message.usage
    cache_read, cache_write = usage.cache_read_input_tokens or 0, usage.cache_creation_input_tokens or 0
    total_in = usage.input_tokens + cache_read + cache_write
    priced = genai_prices.Usage(
        input_tokens=total_in,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=usage.output_tokens,
    )
    return genai_prices.calc_price(priced, message.model, provider_id="anthropic").total_price


@pytest.fixture
def global_pipeline(pipeline, fake, monkeypatch):
    """configure() (a real global TracerProvider) + instrument(): the setup where the SDK's spans appear."""
    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE", raising=False)
    fake.clear()
    instrument(["openai", "anthropic"])
    yield pipeline
    uninstrument(["openai", "anthropic"])


def _client(fake, **options) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="sk-ant-test", max_retries=0, **options)


def _every_kind_of_call(client: anthropic.Anthropic) -> int:
    """A plain call, a stream read to the end, a stream helper and a raw response: the number of model calls."""
    client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    list(client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES, stream=True))
    with client.messages.stream(model=MODEL, max_tokens=50, messages=MESSAGES) as stream:
        stream.get_final_message()
    client.messages.with_raw_response.create(model=MODEL, max_tokens=50, messages=MESSAGES).parse()
    return 4


def test_one_span_per_anthropic_call_under_configure(global_pipeline, fake):
    client = _client(fake)
    before = client.open_telemetry
    calls = _every_kind_of_call(client)
    spans = global_pipeline.memory_exporter.get_finished_spans()
    assert _scopes(spans) == [OUR_SCOPE] * calls
    assert LEDGER.process_totals().calls == calls
    assert client.open_telemetry == before  # the client itself is left as the user made it
    assert client.messages.count_tokens(model=MODEL, messages=MESSAGES)  # not a model call: the SDK's span stays
    assert [s.name for s in global_pipeline.memory_exporter.get_finished_spans()[calls:]] == [
        "anthropic.messages.count_tokens"
    ]


async def test_one_span_per_async_anthropic_call_under_configure(global_pipeline, fake):
    client = anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key="sk-ant-test", max_retries=0)
    await client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    async for _ in await client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES, stream=True):
        pass
    assert _scopes(global_pipeline.memory_exporter.get_finished_spans()) == [OUR_SCOPE] * 2
    assert LEDGER.process_totals().calls == 2


def test_when_our_span_cannot_start_the_sdks_own_stands_in(global_pipeline, fake, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(_base.Call, "__init__", boom)
    _client(fake).messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    assert _scopes(global_pipeline.memory_exporter.get_finished_spans()) == [SDK_SCOPE]
    assert LEDGER.process_totals().calls == 1


def test_uninstrument_gives_the_sdk_its_spans_back(global_pipeline, fake):
    client = _client(fake)
    client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    uninstrument(["anthropic"])
    client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    spans = global_pipeline.memory_exporter.get_finished_spans()
    assert [s.instrumentation_scope.name for s in spans] == [OUR_SCOPE, SDK_SCOPE]
    assert LEDGER.process_totals().calls == 2  # the SDK's span alone is priced and counted too


def test_conversation_id_of_the_client_option_goes_on_our_span(global_pipeline, fake):
    client = _client(fake, open_telemetry={"conversation_id": "conv-7"})
    client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    (span,) = global_pipeline.memory_exporter.get_finished_spans()
    assert attrs(span)[gen_ai.GEN_AI_CONVERSATION_ID] == "conv-7"
    assert ledger_totals("conv-7").calls == 1


@pytest.mark.parametrize("how", ["env", "content_mode"])
def test_who_asks_for_the_sdks_spans_keeps_them_and_the_call_counts_once(global_pipeline, fake, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "true")
        client = _client(fake)
    else:
        client = _client(fake, open_telemetry={"traces": {"content_mode": "content"}})
    message = client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    list(client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES, stream=True))
    spans = global_pipeline.memory_exporter.get_finished_spans()
    assert _scopes(spans) == [SDK_SCOPE, SDK_SCOPE, OUR_SCOPE, OUR_SCOPE]
    ours = {s.context.span_id for s in spans if s.instrumentation_scope.name == OUR_SCOPE}
    assert all(s.parent.span_id in ours for s in spans if s.instrumentation_scope.name == SDK_SCOPE)
    totals = LEDGER.process_totals()
    assert totals.calls == 2
    assert totals.cost_usd == 2 * _genai_prices_cost(message)


def test_own_tracer_provider_counts_as_asking(fake, settings):
    """A client given its own tracer_provider keeps its spans; with ours in the same pipeline, counted once."""
    harness = Traced()
    exporter, provider = harness.exporter, harness.provider
    instrument(["anthropic"], tracer_provider=provider)
    try:
        client = _client(fake, open_telemetry={"tracer_provider": provider})
        client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    finally:
        uninstrument(["anthropic"])
    sdk, ours = sorted(exporter.get_finished_spans(), key=lambda s: s.instrumentation_scope.name)
    assert (sdk.instrumentation_scope.name, ours.instrumentation_scope.name) == (SDK_SCOPE, OUR_SCOPE)
    assert sdk.parent.span_id == ours.context.span_id
    assert harness.ledger.process_totals().calls == 1


def test_one_span_per_openai_call_under_configure(global_pipeline, fake):
    """openai 3.x has no tracing of its own today; this fails the day a release adds some and doubles the trace."""
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    spans = global_pipeline.memory_exporter.get_finished_spans()
    assert _scopes(spans) == ["mltrack_otel.instrumentation.openai"] * 2
    assert LEDGER.process_totals().calls == 2


@pytest.mark.frameworks  # runs in the frameworks environment, which has langchain-anthropic
def test_one_model_span_under_langchain_anthropic(global_pipeline, fake):
    """LangChain's ChatAnthropic drives the anthropic client: still no SDK span, the call counted once."""
    import langchain_anthropic

    instrument(["langchain"])
    try:
        model = langchain_anthropic.ChatAnthropic(
            model=MODEL, base_url=fake.anthropic_base_url, api_key="sk-ant-test", max_retries=0
        )
        model.invoke([("user", "hello claude")])
    finally:
        uninstrument(["langchain"])
    scopes = _scopes(global_pipeline.memory_exporter.get_finished_spans())
    assert scopes == [OUR_SCOPE, "mltrack_otel.instrumentation.langchain"]
    assert LEDGER.process_totals().calls == 1


# --- usage names of the standalone GenAI conventions ---------------------------------------------------------


def test_the_sdks_own_span_prices_cache_writes_at_the_cache_write_price(fake, settings):
    """anthropic's own span names cache writes gen_ai.usage.cache_write.input_tokens: priced as such, not as input."""
    harness = Traced()
    exporter, provider = harness.exporter, harness.provider
    client = _client(fake, open_telemetry={"tracer_provider": provider})  # the SDK alone, not instrumented
    headers = {"x-fake-scenario": "cache-write"}
    message = client.messages.create(
        model=MODEL, max_tokens=50, system=CACHED_SYSTEM, messages=MESSAGES, extra_headers=headers
    )
    (span,) = exporter.get_finished_spans()
    assert attrs(span)[GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == message.usage.cache_creation_input_tokens > 0
    assert _cost(span) == _genai_prices_cost(message)


def test_a_plain_span_with_the_new_usage_names_is_priced(settings):
    harness = Traced()
    exporter, provider = harness.exporter, harness.provider
    usage = {
        gen_ai.GEN_AI_USAGE_INPUT_TOKENS: 3000,
        GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: 2000,
        gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 500,
        gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
    }
    start = {gen_ai.GEN_AI_PROVIDER_NAME: "anthropic", gen_ai.GEN_AI_REQUEST_MODEL: "claude-sonnet-4-5"}
    provider.get_tracer("elsewhere").start_span("chat", attributes={**start, **usage}).end()
    (span,) = exporter.get_finished_spans()
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=3000, cache_write_tokens=2000, cache_read_tokens=500, output_tokens=100),
        "claude-sonnet-4-5",
        provider_id="anthropic",
    ).total_price
    assert _cost(span) == expected


def test_the_opt_in_is_read_as_the_otel_instrumentations_read_it():
    def opt_in(value: str) -> bool:
        return config.load_settings(env={"OTEL_SEMCONV_STABILITY_OPT_IN": value}).genai_latest_conventions

    assert opt_in("http, gen_ai_latest_experimental")
    assert not opt_in("http,database/dup")
    assert not config.load_settings(env={}).genai_latest_conventions


@pytest.mark.parametrize("latest", [False, True])
def test_our_cache_write_name_follows_the_opt_in_and_is_priced(fake, settings, latest):
    use_settings(genai_latest_conventions=latest, openinference_attributes=True)
    harness = Traced()
    exporter, provider = harness.exporter, harness.provider
    instrument(["anthropic"], tracer_provider=provider)
    try:
        client = _client(fake, open_telemetry=False)
        message = client.messages.create(
            model=MODEL,
            max_tokens=50,
            system=CACHED_SYSTEM,
            messages=MESSAGES,
            extra_headers={"x-fake-scenario": "cache-write"},
        )
    finally:
        uninstrument(["anthropic"])
    (span,) = exporter.get_finished_spans()
    a = attrs(span)
    written = message.usage.cache_creation_input_tokens
    new, old = GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
    assert (a.get(new), a.get(old)) == ((written, None) if latest else (None, written))
    assert a["llm.token_count.prompt_details.cache_write"] == written  # the OpenInference copy either way
    assert _cost(span) == _genai_prices_cost(message)
