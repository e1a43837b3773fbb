"""Groq: the fake's Groq chat API (testing/wire/groq.py) parsed by the real groq SDK, then the instrumentor, one
declaration on the Stainless core."""

from __future__ import annotations

import json

import genai_prices
import groq
import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes
from opentelemetry.trace import StatusCode

from mltrack_otel import semconv
from mltrack_otel.errors import BudgetExceededError
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.instrumentation import openai as oi
from mltrack_otel.instrumentation.groq import GroqInstrumentor
from mltrack_otel.testing.fake_provider import prompt_tokens_for_texts
from tests.instr_fixtures import (
    MESSAGES,
    PROMPT_TOKENS,
    abandon_stream,
    attrs,
    model_call_attrs,
    output_message,
    output_text,
    stopped_early_attrs,
    token_budget,
    tool_call_message,
    traced_fixture,
    use_settings,
    validate_content,
)
from tests.instr_fixtures import OPENAI_WEATHER_TOOL as WEATHER_TOOL

MODEL = "llama-3.1-8b-instant"


def scenario(name: str) -> dict:
    return {"extra_headers": {"x-fake-scenario": name}}


@pytest.fixture
def client(fake):
    fake.clear()
    return groq.Groq(api_key="gsk-test", base_url=fake.url, max_retries=0)


@pytest.fixture
def aclient(fake):
    fake.clear()
    return groq.AsyncGroq(api_key="gsk-test", base_url=fake.url, max_retries=0)


# --- the wire format ------------------------------------------------------------------------------------------


def test_wire_response_carries_groq_usage_and_x_groq(client, fake):
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert fake.requests[-1].path == "/openai/v1/chat/completions"
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, fake.stream_chunks)
    assert usage.total_time == pytest.approx(usage.prompt_time + usage.completion_time)
    assert usage.queue_time > 0
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.parse().x_groq.id == raw.headers["x-request-id"]


def test_wire_stream_usage_comes_in_x_groq_of_the_finish_chunk(client, fake):
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert "stream_options" not in fake.requests[-1].json
    assert chunks[0].x_groq.id.startswith("req_") and chunks[0].x_groq.usage is None
    (last,) = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert last is chunks[-1] and last.usage is None
    assert last.x_groq.usage.prompt_tokens == PROMPT_TOKENS
    assert last.x_groq.usage.completion_tokens == fake.stream_chunks


def test_wire_errors_are_openai_shaped(client):
    with pytest.raises(groq.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, **scenario("error-429"))
    assert caught.value.body["error"]["code"] == "rate_limit_exceeded"


# --- the instrumentor ------------------------------------------------------------------------------------------


traced = traced_fixture("groq")  # the fake priced as Groq's cloud


def expected_cost(input_tokens: int, output_tokens: int) -> float:
    usage = genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return float(genai_prices.calc_price(usage, model_ref=MODEL, provider_id="groq").total_price)


def test_chat_create(traced, client, fake):
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0.2, max_tokens=200, seed=7)
    span = traced.one()
    a = model_call_attrs(span, "chat", "groq", MODEL)
    assert (a[gen_ai.GEN_AI_REQUEST_TEMPERATURE], a[gen_ai.GEN_AI_REQUEST_MAX_TOKENS]) == (0.2, 200)
    assert a[gen_ai.GEN_AI_REQUEST_SEED] == 7
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == response.id
    assert a[gen_ai.GEN_AI_RESPONSE_MODEL] == MODEL
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS  # the fake's formula: 3 + words per message
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks  # one token per word
    assert (a[server_attributes.SERVER_ADDRESS], a[server_attributes.SERVER_PORT]) == (fake.host, fake.port)
    assert validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES])[1] == {
        "role": "user",
        "parts": [{"type": "text", "content": "Tell me about spans please"}],
    }
    assert output_text(span) == response.choices[0].message.content
    assert "gsk-test" not in json.dumps(a)
    # priced at Groq's own price for the model, by genai-prices
    assert a[semconv.LLM_COST_TOTAL] == pytest.approx(expected_cost(PROMPT_TOKENS, fake.stream_chunks), rel=1e-12)
    assert a[semconv.MLTRACK_PRICING_SOURCE] == f"genai-prices:groq/{MODEL}"
    assert a[semconv.MLTRACK_USAGE_COUNTED] is True


async def test_chat_create_async(traced, aclient, fake):
    response = await aclient.chat.completions.create(model=MODEL, messages=MESSAGES)
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == response.id
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks
    assert output_text(traced.one()) == response.choices[0].message.content


def test_stream_usage_is_read_from_x_groq(traced, client, fake):
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert "stream_options" not in fake.requests[-1].json  # Groq reports usage unasked: nothing injected
    span = traced.one()
    a = attrs(span)
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a[semconv.MLTRACK_USAGE_SOURCE] == "provider"  # the provider's count, not an estimate
    assert (a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS], a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS]) == (
        PROMPT_TOKENS,
        fake.stream_chunks,
    )
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0 and a[gen_ai.GEN_AI_REQUEST_STREAM] is True
    assert output_text(span) == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert a[semconv.LLM_COST_TOTAL] == pytest.approx(expected_cost(PROMPT_TOKENS, fake.stream_chunks), rel=1e-12)


def test_stream_with_include_usage_counts_once(traced, client, fake):
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, extra_body={"stream_options": {"include_usage": True}}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == fake.stream_chunks  # still visible
    assert attrs(traced.one())[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks


async def test_stream_async(traced, aclient, fake):
    stream = await aclient.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert type(stream) is groq.AsyncStream
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    a = attrs(traced.one())
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert output_text(traced.one()) == text
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks


def test_stream_break_then_close_ends_once_with_an_estimate(traced, client):
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert type(stream) is groq.Stream
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    assert traced.spans() == []  # still open: the caller may resume
    stream.close()
    span = traced.one()
    stopped_early_attrs(span)  # stopped before the x_groq usage
    assert output_message(span)["finish_reason"] == "incomplete"
    stream.close()
    assert len(traced.spans()) == 1  # exactly once


def test_stream_break_then_garbage_collection(traced, client):
    abandon_stream(lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert attrs(traced.one())[semconv.MLTRACK_STREAM_COMPLETE] is False


async def test_async_stream_break_then_close(traced, aclient):
    stream = await aclient.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    async for _chunk in stream:
        break
    await stream.close()
    assert attrs(traced.one())[semconv.MLTRACK_STREAM_COMPLETE] is False


@pytest.mark.parametrize("name", ["drop", "stream-error"])
def test_stream_failing_midway(traced, client, name):
    received = []
    with pytest.raises(Exception) as caught:  # a dropped socket: httpx's error; an error event: groq's
        for chunk in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **scenario(name)):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    span = traced.one()
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is False and a[error_attributes.ERROR_TYPE]
    assert output_text(span) == "".join(received) != ""
    assert type(caught.value).__name__ in span.events[0].attributes["exception.type"]


def test_tool_call(traced, client):
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], **scenario("tool"))
    call = response.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    tool_call_message(traced.one(), call)
    a = attrs(traced.one())
    assert validate_content("tools", a[gen_ai.GEN_AI_TOOL_DEFINITIONS])[0]["name"] == "get_weather"


def test_stream_tool_call(traced, client):
    fragments = []
    for chunk in client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], stream=True, **scenario("tool")
    ):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            fragments.append(call.function.arguments or "")
    out = output_message(traced.one())
    assert out["parts"][0]["name"] == "get_weather"
    assert out["parts"][0]["arguments"] == json.loads("".join(fragments))
    assert out["finish_reason"] == "tool_call"


def test_cache_and_reasoning_tokens_as_groq_reports_them(traced, client, fake):
    client.chat.completions.create(model=MODEL, messages=MESSAGES, **scenario("cache-read"))
    a = attrs(traced.one())
    cached = prompt_tokens_for_texts([MESSAGES[0]["content"]])  # the cacheable prefix: all but the last message
    assert a[gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == cached
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS  # cached tokens are inside prompt_tokens
    traced.exporter.clear()
    client.chat.completions.create(model="openai/gpt-oss-20b", messages=MESSAGES, **scenario("reasoning"))
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 2 * fake.stream_chunks
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == 3 * fake.stream_chunks  # reasoning is part of the output


def test_embeddings(traced, client):
    client.embeddings.create(model="nomic-embed-text-v1_5", input=["a b c", "d"])
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == "embeddings" and a[gen_ai.GEN_AI_PROVIDER_NAME] == "groq"
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == prompt_tokens_for_texts(["a b c", "d"])


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, groq.BadRequestError, "invalid_request_error"),
        (401, groq.AuthenticationError, "invalid_api_key"),
        (429, groq.RateLimitError, "rate_limit_exceeded"),
        (500, groq.InternalServerError, "server_error"),
    ],
)
def test_http_errors(traced, client, status, error_class, error_type):
    with pytest.raises(error_class):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, **scenario(f"error-{status}"))
    span = traced.one()
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[error_attributes.ERROR_TYPE] == error_type
    assert a[http_attributes.HTTP_RESPONSE_STATUS_CODE] == status
    assert "(fake provider)" in span.events[0].attributes["exception.message"]
    assert semconv.LLM_COST_TOTAL not in a  # nothing was generated, nothing charged


async def test_http_error_async(traced, aclient):
    with pytest.raises(groq.RateLimitError):
        await aclient.chat.completions.create(model=MODEL, messages=MESSAGES, **scenario("error-429"))
    assert attrs(traced.one())[error_attributes.ERROR_TYPE] == "rate_limit_exceeded"


def test_budget_exceeded_raises_before_sending(traced, client, fake):
    with token_budget(10, spent=20):
        with pytest.raises(BudgetExceededError):
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        with pytest.raises(BudgetExceededError):
            client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert fake.requests == []  # nothing reached the provider
    assert traced.spans() == []


def test_capture_off_keeps_usage(traced, client):
    use_settings(llm_log_prompts=False, llm_log_responses=False)
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    a = attrs(traced.one())
    assert gen_ai.GEN_AI_INPUT_MESSAGES not in a and gen_ai.GEN_AI_OUTPUT_MESSAGES not in a
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS


def test_uninstrument_restores_the_exact_functions(traced, client, fake):
    from groq import _base_client

    uninstrument(["groq"])
    before = (_base_client.SyncAPIClient.__dict__["request"], _base_client.AsyncAPIClient.__dict__["request"])
    instrument(["groq"], tracer_provider=traced.provider)
    assert _base_client.SyncAPIClient.__dict__["request"] is not before[0]
    uninstrument(["groq"])
    assert (_base_client.SyncAPIClient.__dict__["request"], _base_client.AsyncAPIClient.__dict__["request"]) == before
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert traced.spans() == [] and len(fake.requests) == 1  # the call still works, untraced


def test_the_instrumentor_is_one_declaration_on_the_stainless_core():
    assert GroqInstrumentor.sdk.module == "groq"
    assert list(GroqInstrumentor().instrumentation_dependencies()) == ["groq >= 0.9"]
    chat = GroqInstrumentor.sdk.routes["/openai/v1/chat/completions"]
    assert (chat.request, chat.response, chat.inputs) == (oi.chat_request, oi.chat_response, oi.chat_inputs)
    assert issubclass(chat.recorder, oi.ChatRecorder)


# --- nested under a framework: counted once ---------------------------------------------------------------------


@pytest.mark.frameworks
async def test_langchain_groq_call_is_counted_once(traced, fake):
    """ChatGroq drives the groq SDK: LangChain's chat span on top, ours below it, one counted call priced once."""
    langchain_groq = pytest.importorskip("langchain_groq")
    from mltrack_otel.instrumentation.langchain import LangChainInstrumentor

    framework = LangChainInstrumentor()
    framework.instrument(tracer_provider=traced.provider)
    try:
        model = langchain_groq.ChatGroq(model=MODEL, api_key="gsk-test", base_url=fake.url, max_retries=0)
        messages = [("system", MESSAGES[0]["content"]), ("human", MESSAGES[1]["content"])]
        answers = [model.invoke(messages), await model.ainvoke(messages)]
        chunks = list(model.stream(messages))
    finally:
        framework.uninstrument()
    assert "".join(c.content for c in chunks)
    spans = traced.spans()
    ours = [s for s in spans if s.instrumentation_scope.name == "mltrack_otel.instrumentation.groq"]
    counted = [s for s in spans if attrs(s).get(semconv.MLTRACK_USAGE_COUNTED) is True]
    assert len(ours) == 3 and counted == ours
    by_id = {s.context.span_id: s for s in spans}
    assert all(by_id[s.parent.span_id].instrumentation_scope.name.endswith("langchain") for s in ours)
    for answer in answers:
        assert answer.usage_metadata["input_tokens"] == PROMPT_TOKENS
    one = expected_cost(PROMPT_TOKENS, fake.stream_chunks)
    assert all(attrs(s)[semconv.LLM_COST_TOTAL] == pytest.approx(one, rel=1e-12) for s in ours)
    assert float(traced.ledger.process_totals().cost_usd) == pytest.approx(3 * one, rel=1e-9)


def test_raw_and_streaming_responses(traced, client, fake):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert attrs(traced.one())[gen_ai.GEN_AI_RESPONSE_ID] == raw.parse().id
    traced.exporter.clear()
    with client.chat.completions.with_streaming_response.create(model=MODEL, messages=MESSAGES, stream=True) as r:
        text = "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks and a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert output_text(traced.one()) == text
