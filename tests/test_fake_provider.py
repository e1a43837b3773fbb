"""The fake provider driven by the real openai and anthropic SDKs (sync and async).

Expected texts and token counts are re-derived here from the documented formulas (not imported from
the fake), so a drift in either the fake or its documentation fails a test.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import threading
import time
from enum import Enum

import anthropic
import httpx2
import openai
import pydantic
import pytest

from mltrack_otel.testing.fake_provider import SCENARIOS, FakeProvider, example_from_schema

N = 30  # FakeProvider() default stream_chunks
FILLER = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]
DROP_AFTER = 3


# ------------------------------------------------------------------------------------------------
# Independent re-derivations of the documented formulas
# ------------------------------------------------------------------------------------------------


def expected_text(user_text: str, n: int = N) -> str:
    words = [w for w in user_text.split() if not (w.startswith("[[scenario:") and w.endswith("]]"))]
    seq = ["Echo:", *words[:8]]
    seq += [FILLER[i % len(FILLER)] for i in range(n - len(seq))]
    return " ".join(seq[:n])


def ptok(*texts: str) -> int:
    """Prompt tokens: 3 + word count per segment."""
    return sum(3 + len(t.split()) for t in texts)


def n_fragments(s: str, n: int = N) -> int:
    return min(n, len(s))


WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
        "note": {"type": "string"},
    },
    "required": ["city", "unit", "days"],
}
WEATHER_ARGS = {"city": "example", "unit": "celsius", "days": 1}
OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather.", "input_schema": WEATHER_SCHEMA}]


# ------------------------------------------------------------------------------------------------
# Clients
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def oai(fake):
    # strict validation: every response is checked against the SDK's pydantic models
    with openai.OpenAI(
        base_url=fake.openai_base_url,
        api_key="sk-test",
        max_retries=0,
        _strict_response_validation=True,
    ) as client:
        yield client


@pytest.fixture
def oai_loose(fake):
    # for payloads the SDK types reject although the real API sends them (see test comments)
    with openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
def ant(fake):
    with anthropic.Anthropic(
        base_url=fake.anthropic_base_url,
        api_key="sk-ant-test",
        max_retries=0,
        _strict_response_validation=True,
    ) as client:
        yield client


def aoai(fake) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=fake.openai_base_url, api_key="sk-test", max_retries=0, _strict_response_validation=True
    )


def aant(fake) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=fake.anthropic_base_url,
        api_key="sk-ant-test",
        max_retries=0,
        _strict_response_validation=True,
    )


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ------------------------------------------------------------------------------------------------
# OpenAI chat completions
# ------------------------------------------------------------------------------------------------


def test_chat_json(fake, oai):
    fake.clear()
    system, question = "You are terse.", "what is the capital of France today please answer"
    r = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "system", "content": system}, *user(question)]
    )
    assert r.model == "gpt-4o-mini-2024-07-18"  # dated snapshot, != request model
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == expected_text(question)
    assert choice.message.content.startswith("Echo: what is the capital of France today please lorem")
    assert r.usage.prompt_tokens == ptok(system, question) == 18
    assert r.usage.completion_tokens == N
    assert r.usage.total_tokens == 18 + N
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.completion_tokens_details.reasoning_tokens == 0

    [rec] = fake.requests
    assert (rec.method, rec.path, rec.scenario) == ("POST", "/v1/chat/completions", "ok")
    assert rec.headers["authorization"] == "Bearer sk-test"
    assert rec.json["model"] == "gpt-4o-mini" and rec.json["messages"][1]["content"] == question


def test_chat_content_parts_and_unknown_model_echoed(oai):
    parts = [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}]
    r = oai.chat.completions.create(model="my-local-model", messages=[{"role": "user", "content": parts}])
    assert r.model == "my-local-model"
    assert r.choices[0].message.content == expected_text("one two three")
    assert r.usage.prompt_tokens == ptok("one two three")


def test_chat_stream_without_usage(oai):
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=user("stream me"), stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(len(c.choices) == 1 for c in chunks)  # no usage-only chunk without include_usage
    assert len({c.id for c in chunks}) == 1 and chunks[0].model == "gpt-4o-2024-08-06"
    first, last = chunks[0].choices[0], chunks[-1].choices[0]
    assert first.delta.role == "assistant" and first.delta.content == ""
    assert last.finish_reason == "stop" and last.delta.content is None
    deltas = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert len(deltas) == N and all(len(d.split()) == 1 for d in deltas)
    assert "".join(deltas) == expected_text("stream me")
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_chat_stream_include_usage(oai):
    q = "count my words please"
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=user(q), stream=True, stream_options={"include_usage": True}
        )
    )
    *body, final = chunks
    assert final.choices == [] and final.usage is not None
    assert all(c.usage is None for c in body)
    assert body[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in body)
    assert text == expected_text(q)
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (ptok(q), N)
    assert final.usage.total_tokens == ptok(q) + N


def test_chat_stream_helper(oai):
    with oai.chat.completions.stream(model="gpt-4o-mini", messages=user("helper stream")) as stream:
        types = [e.type for e in stream]
        final = stream.get_final_completion()
    # N word deltas plus the role chunk's content "" (as the real API sends it)
    assert types.count("content.delta") == N + 1 and types[-1] == "content.done"
    assert final.choices[0].message.content == expected_text("helper stream")


async def test_chat_async_json_and_stream(fake):
    async with aoai(fake) as client:
        r = await client.chat.completions.create(model="gpt-4o-mini", messages=user("async hello"))
        assert r.choices[0].message.content == expected_text("async hello")
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=user("async hello"),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected_text("async hello")
    assert chunks[-1].usage.completion_tokens == N


def test_chat_max_tokens_truncates_with_length(oai):
    r = oai.chat.completions.create(model="gpt-4o", messages=user("a b c d e f"), max_completion_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "Echo: a b c d"
    assert r.usage.completion_tokens == 5


def test_chat_tool_call(oai):
    r = oai.chat.completions.create(
        model="gpt-4o", messages=user("[[scenario:tool]] weather in Paris?"), tools=OPENAI_TOOLS
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS
    assert r.usage.completion_tokens == n_fragments(call.function.arguments)


def test_chat_tool_call_stream(fake, oai):
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=user("weather?"),
        tools=OPENAI_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-scenario": "tool"},
    )
    chunks = list(stream)
    tool_deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    head, *rest = tool_deltas
    assert head.index == 0 and head.id.startswith("call_") and head.type == "function"
    assert head.function.name == "get_weather" and head.function.arguments == ""
    assert len(rest) > 3  # arguments really arrive spread over many chunks
    assert all(tc.id is None and tc.function.name is None and tc.index == 0 for tc in rest)
    arguments = "".join(tc.function.arguments for tc in rest)
    assert json.loads(arguments) == WEATHER_ARGS
    assert len(rest) == n_fragments(arguments) == chunks[-1].usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert fake.requests[-1].scenario == "tool"


def test_chat_tool_stream_helper_reassembles(oai):
    with oai.chat.completions.stream(
        model="gpt-4o", messages=user("[[scenario:tool]] go"), tools=OPENAI_TOOLS
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == WEATHER_ARGS


def test_tool_scenario_stops_after_tool_result_and_tool_choice_forces(oai):
    messages = [
        *user("[[scenario:tool]] weather?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny and warm"},
    ]
    r = oai.chat.completions.create(model="gpt-4o", messages=messages, tools=OPENAI_TOOLS)
    assert r.choices[0].finish_reason == "stop"  # no endless tool loop for agent frameworks
    assert r.choices[0].message.content == expected_text("weather?")
    assert r.usage.prompt_tokens == ptok("[[scenario:tool]] weather?", "", "sunny and warm")

    forced = oai.chat.completions.create(
        model="gpt-4o",
        messages=user("no scenario here"),
        tools=OPENAI_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"
    # tools without a tool scenario -> plain text
    plain = oai.chat.completions.create(model="gpt-4o", messages=user("hi"), tools=OPENAI_TOOLS)
    assert plain.choices[0].message.tool_calls is None


class Color(str, Enum):  # noqa: UP042 - the (str, Enum) form users write
    red = "red"
    blue = "blue"


class Address(pydantic.BaseModel):
    street: str
    number: int


class Person(pydantic.BaseModel):
    name: str
    age: int
    height: float
    active: bool
    color: Color
    tags: list[str]
    address: Address
    nickname: str | None


def test_chat_parse_json_schema(fake, oai):
    r = oai.chat.completions.parse(model="gpt-4o-mini", messages=user("extract"), response_format=Person)
    parsed = r.choices[0].message.parsed
    assert parsed == Person(
        name="example",
        age=1,
        height=1.5,
        active=True,
        color=Color.red,
        tags=["example"],
        address=Address(street="example", number=1),
        nickname="example",
    )
    content = r.choices[0].message.content
    assert r.usage.completion_tokens == n_fragments(content)
    assert fake.requests[-1].json["response_format"]["type"] == "json_schema"


def test_chat_json_object_mode(oai):
    r = oai.chat.completions.create(
        model="gpt-4o-mini", messages=user("json please"), response_format={"type": "json_object"}
    )
    assert json.loads(r.choices[0].message.content) == {"answer": expected_text("json please")}


# ------------------------------------------------------------------------------------------------
# OpenAI Responses API
# ------------------------------------------------------------------------------------------------


def test_responses_json(oai):
    r = oai.responses.create(model="gpt-4o-mini", instructions="Be brief.", input="tell me a joke")
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert r.model == "gpt-4o-mini-2024-07-18"
    assert r.output_text == expected_text("tell me a joke")
    [msg] = r.output
    assert msg.type == "message" and msg.content[0].type == "output_text"
    u = r.usage
    assert u.input_tokens == ptok("Be brief.", "tell me a joke")
    assert u.output_tokens == N and u.total_tokens == u.input_tokens + N
    assert u.input_tokens_details.cached_tokens == 0
    assert u.output_tokens_details.reasoning_tokens == 0


def test_responses_stream_event_order(oai):
    events = list(oai.responses.create(model="gpt-4o", input="stream the response", stream=True))
    types = [e.type for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * N,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == expected_text("stream the response")
    assert events[-4].type == "response.output_text.done" and events[-4].text == text
    done = events[-1].response
    assert done.status == "completed" and done.output[0].content[0].text == text
    assert done.usage.input_tokens == ptok("stream the response") and done.usage.output_tokens == N
    assert done.usage.input_tokens_details.cached_tokens == 0
    assert done.usage.output_tokens_details.reasoning_tokens == 0
    assert events[0].response.usage is None and events[0].response.status == "in_progress"


async def test_responses_stream_helper_async(fake):
    async with (
        aoai(fake) as client,
        client.responses.stream(model="gpt-4o-mini", input="async responses") as stream,
    ):
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert len(deltas) == N
    assert final.output_text == "".join(deltas) == expected_text("async responses")


def test_responses_tool_call_stream(oai):
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": False}]
    input_items = [{"role": "user", "content": [{"type": "input_text", "text": "[[scenario:tool]] weather"}]}]
    r = oai.responses.create(model="gpt-4o", input=input_items, tools=tools)
    [call] = r.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == WEATHER_ARGS

    with oai.responses.stream(model="gpt-4o", input=input_items, tools=tools) as stream:
        events = list(stream)
        final = stream.get_final_response()
    arg_deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert json.loads("".join(arg_deltas)) == WEATHER_ARGS
    assert final.usage.output_tokens == len(arg_deltas)
    assert final.output[0].call_id.startswith("call_") and final.output[0].name == "get_weather"


def test_responses_max_output_tokens_incomplete(oai):
    r = oai.responses.create(model="gpt-4o", input="x y z", max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "Echo: x y" and r.usage.output_tokens == 3


# ------------------------------------------------------------------------------------------------
# OpenAI embeddings and legacy completions
# ------------------------------------------------------------------------------------------------


def test_embeddings_float_and_base64(fake, oai, oai_loose):
    fake.clear()
    inputs = ["the first text", "second"]
    as_float = oai.embeddings.create(model="text-embedding-3-small", input=inputs, encoding_format="float")
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == ptok(*inputs)
    assert [d.index for d in as_float.data] == [0, 1]
    assert all(len(d.embedding) == 16 for d in as_float.data)
    assert as_float.data[0].embedding != as_float.data[1].embedding
    assert all(-1.0 <= v <= 1.0 for v in as_float.data[0].embedding)

    # The SDK default asks for base64 and decodes it; strict validation would reject the base64
    # string (the SDK model says List[float]), exactly as with the real API, hence the loose client.
    decoded = oai_loose.embeddings.create(model="text-embedding-3-small", input=inputs)
    assert fake.requests[-1].json["encoding_format"] == "base64"
    assert [d.embedding for d in decoded.data] == [d.embedding for d in as_float.data]

    raw = oai_loose.embeddings.create(model="text-embedding-3-small", input="the first text", encoding_format="base64")
    packed = base64.b64decode(raw.data[0].embedding)
    assert list(struct.unpack("<16f", packed)) == as_float.data[0].embedding

    small = oai.embeddings.create(model="text-embedding-3-large", input="x", dimensions=4, encoding_format="float")
    assert len(small.data[0].embedding) == 4


async def test_embeddings_async(fake):
    async with aoai(fake) as client:
        r = await client.embeddings.create(model="text-embedding-3-small", input="hello", encoding_format="float")
    assert len(r.data[0].embedding) == 16 and r.usage.prompt_tokens == ptok("hello")


def test_legacy_completions_json_and_stream(oai, oai_loose):
    r = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="complete this sentence")
    assert r.object == "text_completion"
    assert r.choices[0].text == expected_text("complete this sentence")
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (ptok("complete this sentence"), N)

    # Streamed legacy chunks carry finish_reason null like the real API; the SDK's Completion model
    # (reused for chunks) types it as a non-null Literal, so strict validation cannot be used.
    chunks = list(
        oai_loose.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="complete this sentence",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected_text("complete this sentence")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == N


# ------------------------------------------------------------------------------------------------
# Azure OpenAI
# ------------------------------------------------------------------------------------------------


def test_azure_client(fake):
    fake.clear()
    with openai.AzureOpenAI(
        azure_endpoint=fake.url,
        api_version="2024-10-21",
        azure_deployment="my-deployment",
        api_key="azure-key",
        max_retries=0,
        _strict_response_validation=True,
    ) as client:
        r = client.chat.completions.create(model="gpt-4o", messages=user("hi azure"))
        stream = client.chat.completions.create(
            model="gpt-4o", messages=user("hi azure"), stream=True, stream_options={"include_usage": True}
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        e = client.embeddings.create(model="text-embedding-3-small", input="hi", encoding_format="float")
    assert r.choices[0].message.content == streamed == expected_text("hi azure")
    assert r.model == "gpt-4o-2024-08-06"
    assert len(e.data[0].embedding) == 16
    paths = [(rec.path, rec.query.get("api-version")) for rec in fake.requests]
    assert paths == [
        ("/openai/deployments/my-deployment/chat/completions", "2024-10-21"),
        ("/openai/deployments/my-deployment/chat/completions", "2024-10-21"),
        ("/openai/deployments/my-deployment/embeddings", "2024-10-21"),
    ]
    assert fake.requests[0].headers["api-key"] == "azure-key"


def _post(fake, path: str, body: dict, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_azure_model_defaults_to_deployment(fake):
    status, _, raw = _post(
        fake,
        "/openai/deployments/prod-gpt/chat/completions?api-version=2024-10-21",
        {"messages": user("no model")},
    )
    assert status == 200 and json.loads(raw)["model"] == "prod-gpt"


# ------------------------------------------------------------------------------------------------
# Anthropic
# ------------------------------------------------------------------------------------------------


def test_anthropic_create(fake, ant):
    fake.clear()
    system, q = "Answer like a pirate.", "where is the treasure"
    m = ant.messages.create(model="claude-3-5-haiku-latest", max_tokens=200, system=system, messages=user(q))
    assert m.model == "claude-3-5-haiku-20241022"
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.stop_reason == "end_turn"
    [block] = m.content
    assert block.type == "text" and block.text == expected_text(q)
    assert m.usage.input_tokens == ptok(system, q)
    assert m.usage.output_tokens == N
    assert m.usage.cache_creation_input_tokens == m.usage.cache_read_input_tokens == 0
    [rec] = fake.requests
    # anthropic 2.x sends the key as a bearer token (older SDKs: x-api-key)
    key = rec.headers.get("x-api-key") or rec.headers["authorization"].removeprefix("Bearer ")
    assert rec.path == "/v1/messages" and key == "sk-ant-test"
    assert "anthropic-version" in rec.headers


def test_anthropic_raw_sse_framing(fake):
    status, headers, raw = _post(
        fake,
        "/v1/messages",
        {"model": "claude-sonnet-4-0", "max_tokens": 100, "stream": True, "messages": user("raw frames")},
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    frames = [f for f in raw.decode().split("\n\n") if f]
    names = []
    for frame in frames:
        event_line, data_line = frame.split("\n")
        name = event_line.removeprefix("event: ")
        assert json.loads(data_line.removeprefix("data: "))["type"] == name  # event name == data.type
        names.append(name)
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * N,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = json.loads(frames[0].split("data: ")[1])["message"]
    assert start["usage"]["output_tokens"] == 1 and start["usage"]["input_tokens"] == ptok("raw frames")
    assert start["model"] == "claude-sonnet-4-20250514"
    delta = json.loads(frames[-2].split("data: ")[1])
    assert delta["usage"] == {"output_tokens": N} and delta["delta"]["stop_reason"] == "end_turn"


def test_anthropic_create_stream_events(ant):
    events = list(
        ant.messages.create(model="claude-3-5-haiku-latest", max_tokens=100, messages=user("go on"), stream=True)
    )
    types = [e.type for e in events]  # the SDK drops ping events
    assert types[:2] == ["message_start", "content_block_start"] and types[-3:] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == expected_text("go on")
    assert events[0].message.usage.output_tokens == 1
    assert events[-2].usage.output_tokens == N and events[-2].delta.stop_reason == "end_turn"


def test_anthropic_stream_helper(ant):
    with ant.messages.stream(model="claude-3-5-haiku-latest", max_tokens=100, messages=user("help me")) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert len(pieces) == N and "".join(pieces) == expected_text("help me")
    assert final.usage.input_tokens == ptok("help me") and final.usage.output_tokens == N
    assert final.stop_reason == "end_turn" and final.content[0].text == "".join(pieces)


async def test_anthropic_async_create_and_stream(fake):
    async with aant(fake) as client:
        m = await client.messages.create(model="claude-3-7-sonnet-latest", max_tokens=100, messages=user("a"))
        async with client.messages.stream(model="claude-3-7-sonnet-latest", max_tokens=100, messages=user("a")) as s:
            text = "".join([t async for t in s.text_stream])
            final = await s.get_final_message()
    assert m.content[0].text == text == expected_text("a")
    assert m.model == final.model == "claude-3-7-sonnet-20250219"
    assert final.usage.output_tokens == m.usage.output_tokens == N


def test_anthropic_tool_use(ant):
    m = ant.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=500,
        tools=ANTHROPIC_TOOLS,
        messages=user("[[scenario:tool]] weather in Oslo"),
    )
    assert m.stop_reason == "tool_use"
    text, tool = m.content
    assert text.type == "text" and text.text == "Calling get_weather."
    assert tool.type == "tool_use" and tool.name == "get_weather" and tool.id.startswith("toolu_")
    assert tool.input == WEATHER_ARGS
    assert m.usage.output_tokens == 2 + n_fragments(json.dumps(WEATHER_ARGS))


def test_anthropic_tool_use_stream(ant):
    with ant.messages.stream(
        model="claude-3-5-haiku-latest",
        max_tokens=500,
        tools=ANTHROPIC_TOOLS,
        messages=user("weather in Oslo"),
        extra_headers={"x-fake-scenario": "tool"},
    ) as s:
        events = list(s)
        final = s.get_final_message()
    raw = [e for e in events if e.type == "content_block_delta"]
    partials = [e.delta.partial_json for e in raw if e.delta.type == "input_json_delta"]
    assert partials[0] == "" and len(partials) > 3
    assert {e.index for e in raw if e.delta.type == "input_json_delta"} == {1}
    assert json.loads("".join(partials)) == WEATHER_ARGS
    assert final.content[1].input == WEATHER_ARGS and final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 2 + len(partials) - 1


def test_anthropic_prompt_caching(ant):
    system_text = f"Long cached instructions {time.time_ns()} " + "policy " * 20
    system = [{"type": "text", "text": system_text, "cache_control": {"type": "ephemeral"}}]
    kwargs = {"model": "claude-3-5-haiku-latest", "max_tokens": 100, "system": system}
    first = ant.messages.create(**kwargs, messages=user("question one"))
    assert first.usage.cache_creation_input_tokens == ptok(system_text)
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.input_tokens == ptok("question one")  # excludes the cache tokens
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == ptok(system_text)

    with ant.messages.stream(**kwargs, messages=user("question two has more words")) as s:
        second = s.get_final_message()
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == ptok(system_text)
    assert second.usage.input_tokens == ptok("question two has more words")

    plain = ant.messages.create(model="claude-3-5-haiku-latest", max_tokens=100, messages=user("no caching"))
    assert plain.usage.cache_read_input_tokens == plain.usage.cache_creation_input_tokens == 0


def test_anthropic_cache_scenarios_and_1h_ttl(ant):
    msgs = [
        *user("earlier turn"),
        {"role": "assistant", "content": "ok"},
        *user("[[scenario:cache-read]] now"),
    ]
    m = ant.messages.create(model="claude-3-5-haiku-latest", max_tokens=100, system="sys prompt", messages=msgs)
    prefix = ptok("sys prompt", "earlier turn", "ok")
    assert m.usage.cache_read_input_tokens == prefix and m.usage.cache_creation_input_tokens == 0
    assert m.usage.input_tokens == ptok("[[scenario:cache-read]] now")

    marked = [
        {
            "type": "text",
            "text": f"ttl test {time.time_ns()}",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    m = ant.messages.create(
        model="claude-3-5-haiku-latest", max_tokens=100, messages=[{"role": "user", "content": marked}]
    )
    assert m.usage.cache_creation.ephemeral_1h_input_tokens == m.usage.cache_creation_input_tokens > 0
    assert m.usage.input_tokens == 0  # the whole prompt is the cached prefix


def test_openai_cache_scenarios(oai):
    msgs = [{"role": "system", "content": "big shared system prompt"}, *user("question")]
    read = oai.chat.completions.create(model="gpt-4o", messages=msgs, extra_headers={"x-fake-scenario": "cache-read"})
    assert read.usage.prompt_tokens == ptok("big shared system prompt", "question")  # cached counted inside
    assert read.usage.prompt_tokens_details.cached_tokens == ptok("big shared system prompt")
    write = oai.responses.create(
        model="gpt-4o",
        instructions="big shared system prompt",
        input="question",
        extra_headers={"x-fake-scenario": "cache-write"},
    )
    assert write.usage.input_tokens_details.cache_write_tokens == ptok("big shared system prompt")
    assert write.usage.input_tokens_details.cached_tokens == 0


def test_anthropic_count_tokens(ant):
    r = ant.messages.count_tokens(model="claude-3-5-haiku-latest", system="sys", messages=user("count these words"))
    assert r.input_tokens == ptok("sys", "count these words")


# ------------------------------------------------------------------------------------------------
# Errors, retries, drops
# ------------------------------------------------------------------------------------------------

ERROR_CASES = [
    ("error-400", 400, openai.BadRequestError, anthropic.BadRequestError, "invalid_request_error"),
    ("error-401", 401, openai.AuthenticationError, anthropic.AuthenticationError, "authentication_error"),
    ("error-429", 429, openai.RateLimitError, anthropic.RateLimitError, "rate_limit_error"),
    ("error-500", 500, openai.InternalServerError, anthropic.InternalServerError, "api_error"),
    ("error-529", 529, openai.InternalServerError, anthropic.OverloadedError, "overloaded_error"),
]


@pytest.mark.parametrize(("scenario", "status", "openai_exc", "anthropic_exc", "anthropic_type"), ERROR_CASES)
def test_errors_sync(oai, ant, scenario, status, openai_exc, anthropic_exc, anthropic_type):
    with pytest.raises(openai_exc) as oerr:
        oai.chat.completions.create(model="gpt-4o", messages=user("hi"), extra_headers={"x-fake-scenario": scenario})
    assert oerr.value.status_code == status
    assert oerr.value.type and oerr.value.message.startswith(f"Error code: {status}")
    retry = oerr.value.response.headers.get("retry-after-ms")
    assert retry == ("1" if status == 429 or status >= 500 else None)

    with pytest.raises(anthropic_exc) as aerr:  # the token works where headers cannot be set
        ant.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=10, messages=user(f"[[scenario:{scenario}]] hi")
        )
    assert aerr.value.status_code == status
    assert aerr.value.body["type"] == "error" and aerr.value.body["error"]["type"] == anthropic_type
    assert aerr.value.response.headers.get("request-id", "").startswith("req_")


@pytest.mark.parametrize(("scenario", "status", "openai_exc", "anthropic_exc", "anthropic_type"), ERROR_CASES)
async def test_errors_async_streaming(fake, scenario, status, openai_exc, anthropic_exc, anthropic_type):
    async with aoai(fake) as client:
        with pytest.raises(openai_exc):
            await client.chat.completions.create(model="gpt-4o", messages=user(f"[[scenario:{scenario}]]"), stream=True)
    async with aant(fake) as client:
        with pytest.raises(anthropic_exc) as aerr:
            async with client.messages.stream(
                model="claude-3-5-haiku-latest", max_tokens=10, messages=user(f"[[scenario:{scenario}]] x")
            ) as s:
                await s.get_final_message()
    assert aerr.value.status_code == status


def test_openai_error_body_shape(fake):
    status, headers, raw = _post(
        fake,
        "/v1/chat/completions",
        {"model": "m", "messages": user("x")},
        {"x-fake-scenario": "error-429"},
    )
    assert status == 429 and headers["retry-after"] == "0" and headers["retry-after-ms"] == "1"
    assert json.loads(raw) == {
        "error": {
            "message": "Rate limit reached (fake provider).",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


def test_sdk_retries_are_instant(fake):
    fake.clear()
    with openai.OpenAI(base_url=fake.openai_base_url, api_key="x", max_retries=2) as client:
        start = time.perf_counter()
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=user("[[scenario:error-429]]"))
        elapsed = time.perf_counter() - start
    assert len(fake.requests) == 3  # 1 + 2 retries
    assert elapsed < 1.0  # retry-after-ms: 1; the SDK's own backoff for two retries is over 1.1 s


def test_unknown_scenario_and_path(oai, fake):
    with pytest.raises(openai.BadRequestError, match="Unknown fake scenario"):
        oai.chat.completions.create(model="m", messages=user("[[scenario:nope]]"))
    status, _, raw = _post(fake, "/v2/whatever", {})
    assert status == 404 and json.loads(raw)["error"]["code"] == "unknown_url"


def test_drop_openai_sync(oai):
    chunks = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(model="gpt-4o", messages=user("[[scenario:drop]] x"), stream=True):
            chunks.append(chunk)
    assert [c.choices[0].delta.content for c in chunks] == ["", "Echo:", " x", " lorem"]  # role + 3 deltas
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=user("[[scenario:drop]] x"))


async def test_drop_openai_async(fake):
    async with aoai(fake) as client:
        events = []
        with pytest.raises(openai.APIConnectionError):
            async for e in await client.responses.create(model="gpt-4o", input="[[scenario:drop]] x", stream=True):
                events.append(e.type)
    assert events.count("response.output_text.delta") == DROP_AFTER


def test_drop_anthropic_sync(ant):
    # anthropic's Stream does not wrap transport errors: httpx2's RemoteProtocolError surfaces
    deltas = []
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        for e in ant.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=100, messages=user("[[scenario:drop]] x"), stream=True
        ):
            if e.type == "content_block_delta":
                deltas.append(e.delta.text)
    assert "".join(deltas) == " ".join(expected_text("x").split(" ")[:DROP_AFTER])
    with pytest.raises(anthropic.APIConnectionError):
        ant.messages.create(model="claude-3-5-haiku-latest", max_tokens=100, messages=user("[[scenario:drop]] x"))


async def test_drop_anthropic_async_stream_helper(fake):
    async with aant(fake) as client:
        pieces = []
        with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
            async with client.messages.stream(
                model="claude-3-5-haiku-latest", max_tokens=100, messages=user("[[scenario:drop]] x")
            ) as s:
                async for t in s.text_stream:
                    pieces.append(t)
    assert len(pieces) == DROP_AFTER


def test_stream_error_scenario(oai, ant):
    got = []
    with pytest.raises(openai.APIError, match="Stream interrupted"):
        for c in oai.chat.completions.create(model="m", messages=user("[[scenario:stream-error]]"), stream=True):
            got.append(c)
    assert len(got) == 1 + DROP_AFTER
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        ant.messages.stream(model="m", max_tokens=50, messages=user("[[scenario:stream-error]]")) as s,
    ):
        s.get_final_message()
    assert err.value.body["error"]["type"] == "overloaded_error"


# ------------------------------------------------------------------------------------------------
# Other scenarios
# ------------------------------------------------------------------------------------------------


def test_slow_long_reasoning(oai, ant):
    start = time.perf_counter()
    chunks = list(
        oai.chat.completions.create(model="m", messages=user("[[scenario:slow]] x"), stream=True, max_tokens=6)
    )
    assert time.perf_counter() - start >= 6 * 0.02 * 0.9
    assert len(chunks) == 6 + 2

    long = oai.chat.completions.create(model="m", messages=user("[[scenario:long]] y"))
    assert long.usage.completion_tokens == 10 * N and len(long.choices[0].message.content.split()) == 10 * N
    with ant.messages.stream(model="m", max_tokens=1000, messages=user("[[scenario:long]] y")) as s:
        assert len(list(s.text_stream)) == 10 * N

    r = oai.chat.completions.create(model="o4-mini", messages=user("[[scenario:reasoning]] think"))
    assert r.model == "o4-mini-2025-04-16"
    assert r.usage.completion_tokens_details.reasoning_tokens == 2 * N
    assert r.usage.completion_tokens == 3 * N and len(r.choices[0].message.content.split()) == N
    m = ant.messages.create(model="m", max_tokens=1000, messages=user("[[scenario:reasoning]] think"))
    assert m.usage.output_tokens == 3 * N and m.usage.output_tokens_details.thinking_tokens == 2 * N


def test_anthropic_max_tokens(ant):
    m = ant.messages.create(model="claude-3-5-haiku-latest", max_tokens=4, messages=user("a b c d e"))
    assert m.stop_reason == "max_tokens" and m.content[0].text == "Echo: a b c"
    assert m.usage.output_tokens == 4


def test_scenario_table_covers_the_brief():
    required = {"ok", "tool", "drop", "cache-write", "cache-read", "slow", "long"}
    required |= {f"error-{s}" for s in (400, 401, 429, 500, 529)}
    assert required <= SCENARIOS.keys()


def test_example_from_schema():
    schema = {
        "$defs": {"Inner": {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}}}},
        "type": "object",
        "properties": {
            "inner": {"$ref": "#/$defs/Inner"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 5}]},
            "kind": {"const": "fixed"},
            "flags": {"type": "array", "items": {"type": "boolean"}},
            "skipped": {"type": "string"},
        },
        "required": ["inner", "maybe", "kind", "flags"],
    }
    assert example_from_schema(schema) == {
        "inner": {"when": "2024-01-01T00:00:00Z"},
        "maybe": 5,
        "kind": "fixed",
        "flags": [True],
    }


# ------------------------------------------------------------------------------------------------
# Server mechanics
# ------------------------------------------------------------------------------------------------


def test_keep_alive_content_length_and_ids(fake):
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    ids = []
    try:
        for _ in range(3):  # three requests over one connection
            conn.request("POST", "/v1/chat/completions", json.dumps({"model": "m", "messages": user("k")}))
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and int(resp.getheader("content-length")) == len(body)
            assert resp.getheader("connection") is None
            ids.append(json.loads(body)["id"])
    finally:
        conn.close()
    assert len(set(ids)) == 3


def test_concurrent_requests(fake):
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with openai.OpenAI(base_url=fake.openai_base_url, api_key="x", max_retries=0) as client:
                for _ in range(5):
                    stream = client.chat.completions.create(model="m", messages=user(f"worker {i}"), stream=True)
                    results.append("".join(c.choices[0].delta.content or "" for c in stream))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == sorted(expected_text(f"worker {i}") for i in range(16) for _ in range(5))


@pytest.fixture(scope="module")
def close_framed():
    with FakeProvider(stream_chunks=5, sse_framing="close") as fake:
        yield fake


def test_connection_close_framing(close_framed):
    with openai.OpenAI(base_url=close_framed.openai_base_url, api_key="x", max_retries=0) as client:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="m", messages=user("c"), stream=True)
        )
        assert text == expected_text("c", 5)
        got = []
        with pytest.raises(openai.APIConnectionError):
            for c in client.chat.completions.create(model="m", messages=user("[[scenario:drop]] c"), stream=True):
                got.append(c)
        assert len(got) == 1 + DROP_AFTER
    with (
        anthropic.Anthropic(base_url=close_framed.url, api_key="x", max_retries=0) as client,
        client.messages.stream(model="m", max_tokens=100, messages=user("c")) as s,
    ):
        assert "".join(s.text_stream) == expected_text("c", 5)
    status, headers, _ = _post(
        close_framed, "/v1/messages", {"model": "m", "max_tokens": 9, "stream": True, "messages": user("c")}
    )
    assert status == 200 and headers["connection"] == "close" and "transfer-encoding" not in headers


def test_start_stop_lifecycle():
    fake = FakeProvider(stream_chunks=3)
    with fake:
        assert fake.url == f"http://127.0.0.1:{fake.port}" and fake.port > 0
        assert fake.openai_base_url == fake.url + "/v1" and fake.anthropic_base_url == fake.url
        idle = socket.create_connection(("127.0.0.1", fake.port))  # an idle keep-alive client
        with openai.OpenAI(base_url=fake.openai_base_url, api_key="x", max_retries=0) as client:
            r = client.chat.completions.create(model="m", messages=user("z"))
        assert r.choices[0].message.content == "Echo: z lorem"
        assert len(fake.requests) == 1
        fake.clear()
        assert fake.requests == []
    assert idle.recv(1) == b""  # stop() closed the idle connection
    idle.close()
    fake.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", fake.port), timeout=1).close()


def test_header_beats_token_and_is_recorded(fake, oai):
    fake.clear()
    r = oai.chat.completions.create(
        model="m", messages=user("[[scenario:error-500]] fine"), extra_headers={"x-fake-scenario": "ok"}
    )
    assert r.choices[0].message.content == expected_text("fine")
    assert r.usage.prompt_tokens == ptok("[[scenario:error-500]] fine")  # the token is counted as a word
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="m", messages=user("[[scenario:error-500]] fine"))
    assert [rec.scenario for rec in fake.requests] == ["ok", "error-500"]
