"""Ollama: the fake's native Ollama API (testing/wire/ollama.py) parsed by the real ollama SDK, then the
instrumentor over it."""

from __future__ import annotations

import json

import ollama
import pytest

from mltrack_otel.testing.fake_provider import DROP_AFTER, prompt_tokens_for_texts

MODEL = "llama3.2"
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Tell me about spans please"},
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PROMPT_TOKENS = prompt_tokens_for_texts([m["content"] for m in MESSAGES])


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
