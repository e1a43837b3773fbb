"""Ollama: the fake's native Ollama API (testing/wire/ollama.py) parsed by the real ollama SDK, then the
instrumentor over it."""

from __future__ import annotations

import asyncio
import gc
import importlib
import json

import httpx
import ollama
import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes
from opentelemetry.trace import StatusCode

from mltrack_otel import guard, semconv
from mltrack_otel.errors import BudgetExceededError
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.instrumentation.ollama import OllamaInstrumentor
from mltrack_otel.pricing import Pricer
from mltrack_otel.testing.fake_provider import DROP_AFTER, prompt_tokens_for_texts
from tests.instr_fixtures import (
    MESSAGES,
    PROMPT_TOKENS,
    WEATHER_TOOL_DEFINITION,
    abandon_stream,
    attrs,
    instrumented_library,
    model_call_attrs,
    output_message,
    output_text,
    stopped_early_attrs,
    token_budget,
    traced_fixture,
    use_settings,
    validate_content,
)
from tests.instr_fixtures import OPENAI_WEATHER_TOOL as WEATHER_TOOL  # Ollama's tools take OpenAI's shape

MODEL = "llama3.2"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def client(fake):
    fake.clear()
    return ollama.Client(host=fake.url)


@pytest.fixture
def aclient(fake):
    fake.clear()
    return ollama.AsyncClient(host=fake.url)


# --- the wire format: every answer parses in the real SDK ------------------------------------------------------


def test_wire_chat(client, fake):
    response = client.chat(model=MODEL, messages=MESSAGES, options={"temperature": 0.1})
    assert isinstance(response, ollama.ChatResponse)
    assert fake.requests[-1].path == "/api/chat" and fake.requests[-1].json["stream"] is False
    assert response.model == MODEL
    assert response.done is True and response.done_reason == "stop"
    assert response.message.role == "assistant"
    words = response.message.content.split()
    assert words[:5] == ["Echo:", "Tell", "me", "about", "spans"]
    assert response.prompt_eval_count == PROMPT_TOKENS
    assert response.eval_count == len(words) == fake.stream_chunks
    assert response.total_duration == response.load_duration + response.prompt_eval_duration + response.eval_duration


def test_wire_chat_stream_is_ndjson_ending_with_the_counts(client, fake):
    chunks = list(client.chat(model=MODEL, messages=MESSAGES, stream=True))
    assert all(isinstance(c, ollama.ChatResponse) for c in chunks)
    *deltas, last = chunks
    assert [c.done for c in deltas] == [False] * fake.stream_chunks
    assert all(c.eval_count is None for c in deltas)
    assert last.done is True and last.done_reason == "stop" and last.message.content == ""
    assert last.prompt_eval_count == PROMPT_TOKENS and last.eval_count == len(deltas)
    assert "".join(c.message.content for c in deltas).startswith("Echo: Tell me")


async def test_wire_async_chat_and_stream(aclient, fake):
    response = await aclient.chat(model=MODEL, messages=MESSAGES)
    assert response.eval_count == fake.stream_chunks
    chunks = [c async for c in await aclient.chat(model=MODEL, messages=MESSAGES, stream=True)]
    assert "".join(c.message.content for c in chunks) == response.message.content
    assert chunks[-1].eval_count == response.eval_count


def test_wire_tool_call_arguments_are_an_object(client, fake):
    response = client.chat(model=MODEL, messages=user("weather? [[scenario:tool]]"), tools=[WEATHER_TOOL])
    (call,) = response.message.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"city": "example"}  # the schema's example, as an object, not a string
    # one output token per argument fragment: min(stream_chunks, characters) fragments
    assert response.eval_count == min(fake.stream_chunks, len(json.dumps({"city": "example"})))
    asked = user("weather? [[scenario:tool]]")
    chunks = list(client.chat(model=MODEL, messages=asked, tools=[WEATHER_TOOL], stream=True))
    (with_call,) = [c for c in chunks if c.message.tool_calls]  # whole, in one chunk
    assert with_call.done is False and with_call.message.tool_calls[0].function.arguments == {"city": "example"}
    assert chunks[-1].done is True


def test_wire_generate_and_num_predict(client, fake):
    response = client.generate(model=MODEL, prompt="why is the sky blue", system="be brief")
    assert response.response.startswith("Echo: why is the sky blue")
    assert response.prompt_eval_count == prompt_tokens_for_texts(["be brief", "why is the sky blue"])
    assert response.context and response.done_reason == "stop"
    short = client.generate(model=MODEL, prompt="why is the sky blue", options={"num_predict": 3})
    assert short.response == "Echo: why is" and short.eval_count == 3 and short.done_reason == "length"
    chunks = list(client.generate(model=MODEL, prompt="why is the sky blue", stream=True))
    assert "".join(c.response for c in chunks) == response.response
    assert chunks[-1].eval_count == fake.stream_chunks


def test_wire_json_schema_format(client):
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    response = client.chat(model=MODEL, messages=user("how old?"), format=schema)
    assert json.loads(response.message.content) == {"age": 1}


def test_wire_embed_and_legacy_embeddings(client):
    response = client.embed(model="all-minilm", input=["Why is the sky blue?", "green grass"])
    assert len(response.embeddings) == 2 and len(response.embeddings[0]) == 16
    assert response.prompt_eval_count == prompt_tokens_for_texts(["Why is the sky blue?", "green grass"])
    assert response.model == "all-minilm"
    assert len(client.embed(model="all-minilm", input="one", dimensions=4).embeddings[0]) == 4
    legacy = client.embeddings(model="all-minilm", prompt="Why is the sky blue?")
    assert len(legacy.embedding) == 16 and "prompt_eval_count" not in legacy.model_dump()


def test_wire_reasoning_streams_thinking_first(client, fake):
    response = client.chat(model="qwen3", messages=user("hi [[scenario:reasoning]]"), think=True)
    thought = response.message.thinking.split()
    assert len(thought) == 2 * fake.stream_chunks
    assert response.eval_count == len(thought) + len(response.message.content.split())
    chunks = list(client.chat(model="qwen3", messages=user("hi [[scenario:reasoning]]"), think=True, stream=True))
    assert chunks[0].message.thinking == "Thinking" and chunks[0].message.content == ""


def test_wire_load_without_messages(client):
    response = client.chat(model=MODEL)
    assert response.done_reason == "load" and response.eval_count is None


@pytest.mark.parametrize("status", [400, 401, 429, 500])
def test_wire_http_errors(client, status):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model=MODEL, messages=user(f"x [[scenario:error-{status}]]"))
    assert caught.value.status_code == status
    assert caught.value.error.endswith("(fake provider).")  # the "error" member of the JSON body
    with pytest.raises(ollama.ResponseError) as streamed:
        list(client.chat(model=MODEL, messages=user(f"x [[scenario:error-{status}]]"), stream=True))
    assert streamed.value.status_code == status


def test_wire_mid_stream_error_line(client):
    received = []
    with pytest.raises(ollama.ResponseError) as caught:
        for chunk in client.chat(model=MODEL, messages=user("x [[scenario:stream-error]]"), stream=True):
            received.append(chunk)
    assert len(received) == DROP_AFTER
    assert caught.value.status_code == -1  # the HTTP status was 200; the error came as a line
    assert "error was encountered" in caught.value.error


def test_wire_dropped_stream(client):
    received = []
    with pytest.raises(Exception):  # noqa: B017 - httpx's protocol error, whatever its version calls it
        for chunk in client.chat(model=MODEL, messages=user("x [[scenario:drop]]"), stream=True):
            received.append(chunk)
    assert len(received) == DROP_AFTER


# --- the instrumentor ------------------------------------------------------------------------------------------


traced = traced_fixture("ollama", local=True)  # the fake on 127.0.0.1 is NOT declared a cloud host: a local Ollama


def assert_local(a: dict) -> None:
    """Counted with its tokens, never charged a cloud price, and not unpriced either: local."""
    assert a[semconv.MLTRACK_COST_LOCAL] is True
    assert semconv.MLTRACK_COST_UNPRICED not in a
    assert not {semconv.LLM_COST_TOTAL, semconv.LLM_COST_PROMPT, semconv.LLM_COST_COMPLETION} & set(a)
    assert a[semconv.MLTRACK_USAGE_COUNTED] is True


def test_chat(traced, client, fake):
    options = {"temperature": 0.2, "top_k": 5, "seed": 7, "num_predict": 200, "stop": ["END"]}
    response = client.chat(model=MODEL, messages=MESSAGES, options=options)
    span = traced.one()
    a = model_call_attrs(span, "chat", "ollama", MODEL)
    assert a[gen_ai.GEN_AI_REQUEST_TEMPERATURE] == 0.2 and a[gen_ai.GEN_AI_REQUEST_TOP_K] == 5
    assert a[gen_ai.GEN_AI_REQUEST_SEED] == 7 and a[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] == 200
    assert a[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] == ("END",)
    assert a[gen_ai.GEN_AI_RESPONSE_MODEL] == response.model
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS  # prompt_eval_count: 3 + words per message
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks  # eval_count: one token per word
    assert (a[server_attributes.SERVER_ADDRESS], a[server_attributes.SERVER_PORT]) == (fake.host, fake.port)
    assert validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "system", "parts": [{"type": "text", "content": "You answer briefly."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Tell me about spans please"}]},
    ]
    assert output_message(span) == {
        "role": "assistant",
        "parts": [{"type": "text", "content": response.message.content}],
        "finish_reason": "stop",
    }
    assert_local(a)
    assert traced.ledger.process_totals().cost_usd == 0


async def test_chat_async(traced, aclient, fake):
    response = await aclient.chat(model=MODEL, messages=MESSAGES)
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == response.eval_count == fake.stream_chunks
    assert output_text(traced.one()) == response.message.content


def test_generate(traced, client, fake):
    response = client.generate(model=MODEL, prompt="why is the sky blue", system="be brief", format="json")
    span = traced.one()
    a = attrs(span)
    assert span.name == f"text_completion {MODEL}"
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == "text_completion" and a[gen_ai.GEN_AI_OUTPUT_TYPE] == "json"
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == prompt_tokens_for_texts(["be brief", "why is the sky blue"])
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == response.eval_count
    assert validate_content("system", a[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "be brief"}]
    assert validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "why is the sky blue"}]}
    ]
    assert output_text(span) == response.response
    assert_local(a)


def test_num_predict_cap_is_length(traced, client):
    client.generate(model=MODEL, prompt="why is the sky blue", options={"num_predict": 3})
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] == 3
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("length",)
    assert output_message(traced.one())["finish_reason"] == "length"
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == 3


def test_chat_stream(traced, client, fake):
    chunks = list(client.chat(model=MODEL, messages=MESSAGES, stream=True))
    assert len(chunks) == fake.stream_chunks + 1  # every chunk reaches the caller, none added
    span = traced.one()
    a = attrs(span)
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a[semconv.MLTRACK_USAGE_SOURCE] == "provider"  # the done chunk's counts
    assert (a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS], a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS]) == (
        PROMPT_TOKENS,
        fake.stream_chunks,
    )
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",) and a[gen_ai.GEN_AI_RESPONSE_MODEL] == MODEL
    assert a[gen_ai.GEN_AI_REQUEST_STREAM] is True and a[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    assert output_text(span) == "".join(c.message.content for c in chunks)
    assert_local(a)


async def test_chat_stream_async(traced, aclient, fake):
    stream = await aclient.chat(model=MODEL, messages=MESSAGES, stream=True)
    text = "".join([c.message.content async for c in stream])
    a = attrs(traced.one())
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks
    assert output_text(traced.one()) == text


def test_generate_stream(traced, client, fake):
    text = "".join(c.response for c in client.generate(model=MODEL, prompt="why is the sky blue", stream=True))
    a = attrs(traced.one())
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks
    assert output_text(traced.one()) == text


def test_stream_break_then_close_ends_once_with_an_estimate(traced, client):
    stream = client.chat(model=MODEL, messages=MESSAGES, stream=True)
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    assert traced.spans() == []  # still open: the caller may resume
    stream.close()
    span = traced.one()
    stopped_early_attrs(span)  # stopped before the done chunk's counts
    assert output_message(span)["finish_reason"] == "incomplete"
    assert output_text(span).startswith("Echo:")
    stream.close()
    assert len(traced.spans()) == 1  # exactly once
    assert attrs(traced.one())[semconv.MLTRACK_COST_LOCAL] is True  # an estimate is not a cloud price either


def test_stream_break_then_garbage_collection(traced, client):
    abandon_stream(lambda: client.chat(model=MODEL, messages=MESSAGES, stream=True))
    assert attrs(traced.one())[semconv.MLTRACK_STREAM_COMPLETE] is False


def test_stream_break_in_a_for_loop_over_the_call(traced, client):
    for _chunk in client.chat(model=MODEL, messages=MESSAGES, stream=True):
        break  # the stream is dropped at once: collected by reference counting
    gc.collect()
    guard.drain_deferred()
    assert attrs(traced.one())[semconv.MLTRACK_STREAM_COMPLETE] is False


def test_stream_never_iterated_then_closed_sent_nothing(traced, client, fake):
    client.chat(model=MODEL, messages=MESSAGES, stream=True).close()
    a = attrs(traced.one())
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is False
    assert fake.requests == []  # the SDK sends a stream's request on the first read: it never went out
    assert {k for k in a if k.startswith("gen_ai.usage.")} == set()  # so nothing is estimated or counted
    assert semconv.MLTRACK_USAGE_COUNTED not in a


def test_unreachable_server_is_a_failed_call(traced):
    client = ollama.Client(host="http://127.0.0.1:9")
    with pytest.raises(ConnectionError):
        client.chat(model=MODEL, messages=MESSAGES)
    with pytest.raises(httpx.ConnectError):  # a stream's request goes out on the first read, unmapped by the SDK
        list(client.chat(model=MODEL, messages=MESSAGES, stream=True))
    spans = traced.spans()
    assert [attrs(s)[error_attributes.ERROR_TYPE] for s in spans] == ["ConnectionError", "httpx.ConnectError"]
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert {k for k in attrs(span) if k.startswith("gen_ai.usage.")} == set()  # nothing went out: no estimate


async def test_async_stream_break_then_aclose(traced, aclient):
    stream = await aclient.chat(model=MODEL, messages=MESSAGES, stream=True)
    async for _chunk in stream:
        break
    await stream.aclose()
    assert attrs(traced.one())[semconv.MLTRACK_STREAM_COMPLETE] is False


async def test_async_stream_break_then_garbage_collection(traced, aclient):
    stream = await aclient.chat(model=MODEL, messages=MESSAGES, stream=True)
    async for _chunk in stream:
        break
    del stream, _chunk
    gc.collect()
    for _ in range(5):  # the event loop closes an abandoned async generator in a task it schedules
        await asyncio.sleep(0)
    guard.drain_deferred()
    a = attrs(traced.one())
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is False and a[semconv.MLTRACK_USAGE_SOURCE] == "estimated"


def test_mid_stream_error_line(traced, client):
    received = []
    with pytest.raises(ollama.ResponseError) as caught:
        for chunk in client.chat(model=MODEL, messages=user("x [[scenario:stream-error]]"), stream=True):
            received.append(chunk.message.content)
    span = traced.one()
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is False and a[error_attributes.ERROR_TYPE]
    assert output_text(span) == "".join(received) != ""
    assert span.events[0].attributes["exception.message"] == str(caught.value)
    assert a[semconv.MLTRACK_USAGE_SOURCE] == "estimated"


def test_dropped_stream(traced, client):
    with pytest.raises(httpx.HTTPError):
        list(client.chat(model=MODEL, messages=user("x [[scenario:drop]]"), stream=True))
    span = traced.one()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is False


def test_tool_call_then_tool_result(traced, client):
    first = client.chat(model=MODEL, messages=user("weather? [[scenario:tool]]"), tools=[WEATHER_TOOL])
    (call,) = first.message.tool_calls
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)  # what Ollama says, even for a tool call
    out = output_message(traced.one())
    assert out["finish_reason"] == "tool_call"
    assert out["parts"] == [{"type": "tool_call", "id": None, "name": "get_weather", "arguments": {"city": "example"}}]
    assert validate_content("tools", a[gen_ai.GEN_AI_TOOL_DEFINITIONS]) == [WEATHER_TOOL_DEFINITION]
    traced.exporter.clear()
    history = [
        *user("weather?"),
        first.message,
        {"role": "tool", "content": "21C sunny", "tool_name": call.function.name},
    ]
    client.chat(model=MODEL, messages=history, tools=[WEATHER_TOOL])
    inputs = validate_content("input", attrs(traced.one())[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert [m["role"] for m in inputs] == ["user", "assistant", "tool"]
    assert inputs[1]["parts"] == [
        {"type": "tool_call", "id": None, "name": "get_weather", "arguments": {"city": "example"}}
    ]
    assert inputs[2] == {
        "role": "tool",
        "name": "get_weather",
        "parts": [{"type": "tool_call_response", "id": None, "response": "21C sunny"}],
    }


def test_stream_tool_call(traced, client):
    chunks = list(
        client.chat(model=MODEL, messages=user("weather? [[scenario:tool]]"), tools=[WEATHER_TOOL], stream=True)
    )
    (with_call,) = [c for c in chunks if c.message.tool_calls]
    out = output_message(traced.one())
    assert out["finish_reason"] == "tool_call"
    assert out["parts"][0]["arguments"] == dict(with_call.message.tool_calls[0].function.arguments)


def test_thinking_is_reasoning_output(traced, client, fake):
    response = client.chat(model="qwen3", messages=user("hi [[scenario:reasoning]]"), think=True)
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == response.eval_count == 3 * fake.stream_chunks  # thinking included
    parts = output_message(traced.one())["parts"]
    assert parts[0] == {"type": "reasoning", "content": response.message.thinking}
    assert parts[1] == {"type": "text", "content": response.message.content}


def test_embed(traced, client):
    client.embed(model="all-minilm", input=["Why is the sky blue?", "green grass"], dimensions=8)
    span = traced.one()
    a = attrs(span)
    assert span.name == "embeddings all-minilm" and a[gen_ai.GEN_AI_OPERATION_NAME] == "embeddings"
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == prompt_tokens_for_texts(["Why is the sky blue?", "green grass"])
    assert a[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 8
    assert_local(a)


def test_legacy_embeddings_report_no_counts(traced, client):
    client.embeddings(model="all-minilm", prompt="Why is the sky blue?")
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == "embeddings" and a[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 16
    assert gen_ai.GEN_AI_USAGE_INPUT_TOKENS not in a  # the endpoint reports none: nothing is made up


@pytest.mark.parametrize("status", [400, 401, 429, 500])
def test_http_errors(traced, client, status):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model=MODEL, messages=user(f"x [[scenario:error-{status}]]"))
    assert caught.value.status_code == status
    span = traced.one()
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[error_attributes.ERROR_TYPE]
    assert a[http_attributes.HTTP_RESPONSE_STATUS_CODE] == status
    assert "(fake provider)" in span.events[0].attributes["exception.message"]
    assert gen_ai.GEN_AI_INPUT_MESSAGES in a and gen_ai.GEN_AI_USAGE_INPUT_TOKENS not in a
    # A stream's request goes out when the caller first reads it: refused then, it is a failed call all the same,
    # not a stream cut short whose usage could be estimated.
    traced.exporter.clear()
    with pytest.raises(ollama.ResponseError):
        list(client.chat(model=MODEL, messages=user(f"x [[scenario:error-{status}]]"), stream=True))
    streamed = attrs(traced.one())
    assert streamed[http_attributes.HTTP_RESPONSE_STATUS_CODE] == status
    assert streamed[error_attributes.ERROR_TYPE] == a[error_attributes.ERROR_TYPE]
    assert {k for k in streamed if k.startswith("gen_ai.usage.")} == set()


@pytest.mark.xfail(
    strict=True,
    reason="_base.error_type: a ResponseError carries no code or body, only status_code: error.type is the class "
    "name, not the HTTP status the convention prefers; and an error line mid-stream (status_code -1) is recorded "
    "as http.response.status_code -1 by _describe_error",
)
def test_error_type_is_the_http_status_and_an_error_line_has_none(traced, client):
    with pytest.raises(ollama.ResponseError):
        client.chat(model=MODEL, messages=user("x [[scenario:error-429]]"))
    with pytest.raises(ollama.ResponseError):
        list(client.chat(model=MODEL, messages=user("x [[scenario:stream-error]]"), stream=True))
    refused, cut = (attrs(s) for s in traced.spans())
    assert refused[error_attributes.ERROR_TYPE] == "429"
    assert http_attributes.HTTP_RESPONSE_STATUS_CODE not in cut


async def test_http_error_async(traced, aclient):
    with pytest.raises(ollama.ResponseError):
        await aclient.chat(model=MODEL, messages=user("x [[scenario:error-429]]"))
    assert attrs(traced.one())[http_attributes.HTTP_RESPONSE_STATUS_CODE] == 429


def test_other_api_calls_are_not_traced(traced, client):
    with pytest.raises(ollama.ResponseError):  # the fake serves no /api/tags: still not a model call
        client.list()
    assert traced.spans() == []


def test_budget_exceeded_raises_before_sending(traced, client, fake):
    with token_budget(10, spent=20):
        with pytest.raises(BudgetExceededError):
            client.chat(model=MODEL, messages=MESSAGES)
        with pytest.raises(BudgetExceededError):
            client.chat(model=MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(BudgetExceededError):
            client.embed(model="all-minilm", input="a")
    assert fake.requests == []  # nothing reached the server
    assert traced.spans() == []


def test_capture_off_keeps_usage(traced, client):
    use_settings(llm_log_prompts=False, llm_log_responses=False)
    client.chat(model=MODEL, messages=MESSAGES)
    list(client.chat(model=MODEL, messages=MESSAGES, stream=True))
    for span in traced.spans():
        a = attrs(span)
        assert gen_ai.GEN_AI_INPUT_MESSAGES not in a and gen_ai.GEN_AI_OUTPUT_MESSAGES not in a
        assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS


def test_uninstrument_restores_the_exact_functions(traced, client, fake):
    _client = importlib.import_module("ollama._client")  # the package's own `_client` is its default Client

    uninstrument(["ollama"])
    before = (_client.Client.__dict__["_request"], _client.AsyncClient.__dict__["_request"])
    instrument(["ollama"], tracer_provider=traced.provider)
    assert _client.Client.__dict__["_request"] is not before[0]
    uninstrument(["ollama"])
    assert (_client.Client.__dict__["_request"], _client.AsyncClient.__dict__["_request"]) == before
    client.chat(model=MODEL, messages=MESSAGES)
    assert traced.spans() == [] and len(fake.requests) == 1  # the call still works, untraced


# --- where the model runs: local is never charged, a remote Ollama is unpriced ------------------------------------


class ToFake(httpx.HTTPTransport):
    """Carries each request, unchanged but for where it connects, to the fake provider on loopback."""

    def __init__(self, fake) -> None:
        super().__init__()
        self.fake = fake

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host=self.fake.host, port=self.fake.port)
        return super().handle_request(request)


def test_a_remote_ollama_is_unpriced_not_local(traced, fake):
    """ollama.com's cloud models: not local, and genai-prices has no Ollama prices: unpriced until an override."""
    remote = ollama.Client(host="https://ollama.com", transport=ToFake(fake), headers={"Authorization": "Bearer sk-x"})
    remote.chat(model="gpt-oss:120b", messages=MESSAGES)
    a = attrs(traced.one())
    assert (a[server_attributes.SERVER_ADDRESS], a[server_attributes.SERVER_PORT]) == ("ollama.com", 443)
    assert a[gen_ai.GEN_AI_PROVIDER_NAME] == "ollama"
    assert a[semconv.MLTRACK_COST_UNPRICED] is True
    assert semconv.MLTRACK_COST_LOCAL not in a and semconv.LLM_COST_TOTAL not in a
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS  # still counted, in tokens
    assert "sk-x" not in json.dumps(a)


def test_a_remote_ollama_model_named_like_a_cloud_model_is_not_charged_that_cloud_price(traced, fake):
    remote = ollama.Client(host="https://ollama.com", transport=ToFake(fake))
    remote.chat(model="deepseek-r1:8b", messages=MESSAGES)  # an 8B distill on Ollama, not DeepSeek's API
    a = attrs(traced.one())
    assert semconv.LLM_COST_TOTAL not in a and a[semconv.MLTRACK_COST_UNPRICED] is True


def test_the_fake_declared_a_cloud_host_is_still_unpriced(fake, settings):
    """Declared a cloud host (as the rest of the suite does), 127.0.0.1 is not local: but no Ollama price exists."""
    with instrumented_library("ollama", pricer=Pricer(cloud_hosts=[fake.host])) as pipeline:
        ollama.Client(host=fake.url).chat(model=MODEL, messages=MESSAGES)
    a = attrs(pipeline.one())
    assert a[semconv.MLTRACK_COST_UNPRICED] is True and semconv.MLTRACK_COST_LOCAL not in a


def test_the_instrumentor_wraps_the_one_choke_point():
    assert [m.name for m in OllamaInstrumentor.methods] == ["Client._request", "AsyncClient._request"]
    assert list(OllamaInstrumentor().instrumentation_dependencies()) == ["ollama >= 0.4"]


# --- nested under a framework: counted once ---------------------------------------------------------------------


@pytest.mark.frameworks
async def test_langchain_ollama_call_is_counted_once(fake, settings):
    """ChatOllama drives the ollama SDK: LangChain's chat span on top, ours below it, one counted call."""
    langchain_ollama = pytest.importorskip("langchain_ollama")
    fake.clear()
    with instrumented_library("ollama", "langchain", pricer=Pricer()) as pipeline:
        model = langchain_ollama.ChatOllama(model=MODEL, base_url=fake.url)
        messages = [("system", MESSAGES[0]["content"]), ("human", MESSAGES[1]["content"])]
        answers = [model.invoke(messages), await model.ainvoke(messages)]
        answers.append(next(iter(model.stream(messages))))  # a stream stopped after its first chunk
    spans = pipeline.spans()
    ours = [s for s in spans if s.instrumentation_scope.name == "mltrack_otel.instrumentation.ollama"]
    counted = [s for s in spans if attrs(s).get(semconv.MLTRACK_USAGE_COUNTED) is True]
    assert len(ours) == 3 and counted == ours  # each call once, by the span nearest the wire
    by_id = {s.context.span_id: s for s in spans}
    for span in ours:
        parent = by_id[span.parent.span_id]
        assert (
            parent.instrumentation_scope.name.endswith("langchain")
            and attrs(parent)[gen_ai.GEN_AI_OPERATION_NAME] == "chat"
        )
        assert attrs(span)[semconv.MLTRACK_COST_LOCAL] is True
    for answer, span in zip(answers[:2], ours[:2], strict=True):
        assert attrs(span)[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == answer.usage_metadata["input_tokens"] == PROMPT_TOKENS
    totals = pipeline.ledger.process_totals()
    assert totals.calls == 3 and totals.cost_usd == 0
    assert totals.prompt_tokens == sum(attrs(s)[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] for s in ours)


def test_image_input_is_a_blob_part(traced, client):
    png = "iVBORw0KGgo="  # base64, as the API takes images
    client.chat(model="llava", messages=[{"role": "user", "content": "what is this?", "images": [png]}])
    (message,) = validate_content("input", attrs(traced.one())[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert message["parts"] == [
        {"type": "text", "content": "what is this?"},
        {"type": "blob", "modality": "image", "content": png},
    ]


def test_num_predict_is_the_budget_worst_case(traced, client, fake):
    """The hard budget holds input + the output cap: Ollama names it options.num_predict."""
    with token_budget(1000):
        client.chat(model=MODEL, messages=MESSAGES, options={"num_predict": 50})  # ~20 in + 50 out: fits
        with pytest.raises(BudgetExceededError):  # no cap: an unknown model may write far past 1000 tokens
            client.chat(model=MODEL, messages=MESSAGES)
    assert len(fake.requests) == 1 and len(traced.spans()) == 1
