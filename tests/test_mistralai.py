"""Mistral AI (`mistralai` SDK): the fake's Mistral wire format through the real SDK, then the instrumentor."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mltrack_otel.testing.fake_provider import DROP_AFTER, FakeProvider, prompt_tokens_for_texts

mistral_client = pytest.importorskip("mistralai.client")
from mistralai.client import Mistral, errors  # noqa: E402

MODEL = "mistral-small-latest"
EMBED = "mistral-embed"
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Tell me about spans please"},
]
PROMPT_TOKENS = prompt_tokens_for_texts([m["content"] for m in MESSAGES])  # the fake's documented formula
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def ask(text: str) -> list[dict[str, Any]]:
    return [MESSAGES[0], {"role": "user", "content": text}]


def scenario(name: str) -> dict[str, Any]:
    return {"http_headers": {"x-fake-scenario": name}}


@pytest.fixture
def mis(fake: FakeProvider) -> Mistral:
    fake.clear()
    return Mistral(api_key="mistral-test-key", server_url=fake.url)


# --- the fake speaks Mistral's wire format to the real SDK ----------------------------------------------------------


def test_fake_chat_complete(mis, fake):
    response = mis.chat.complete(model=MODEL, messages=MESSAGES, max_tokens=200)
    n = fake.stream_chunks
    assert response.model == MODEL
    assert response.choices[0].finish_reason == "stop"
    text = response.choices[0].message.content
    assert text.startswith("Echo: Tell me about spans please") and len(text.split()) == n
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (PROMPT_TOKENS, n)
    assert response.usage.total_tokens == PROMPT_TOKENS + n
    assert fake.requests[-1].json["stream"] is False and fake.requests[-1].scenario == "ok"


def test_fake_stream_carries_usage_in_its_last_chunk_without_stream_options(mis, fake):
    with mis.chat.stream(model=MODEL, messages=MESSAGES) as stream:
        events = list(stream)
    assert "stream_options" not in fake.requests[-1].json
    chunks = [e.data for e in events]
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert len(deltas) == fake.stream_chunks and deltas[0] == "Echo:"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (PROMPT_TOKENS, fake.stream_chunks)
    assert all(c.usage is None for c in chunks[:-1])


def test_fake_tool_call_arrives_whole(mis, fake):
    response = mis.chat.complete(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="any")
    (call,) = response.choices[0].message.tool_calls
    assert response.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "example"})
    events = list(mis.chat.stream(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="any"))
    calls = [c for e in events for c in (e.data.choices[0].delta.tool_calls or [])]
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", '{"city": "example"}')]
    assert events[-1].data.choices[0].finish_reason == "tool_calls"


async def test_fake_async_shapes(mis, fake):
    response = await mis.chat.complete_async(model=MODEL, messages=MESSAGES)
    assert response.usage.prompt_tokens == PROMPT_TOKENS
    stream = await mis.chat.stream_async(model=MODEL, messages=MESSAGES)
    async with stream:
        events = [e async for e in stream]
    assert events[-1].data.usage.completion_tokens == fake.stream_chunks
    embedded = await mis.embeddings.create_async(model=EMBED, inputs="one two")
    assert embedded.usage.prompt_tokens == prompt_tokens_for_texts(["one two"])


def test_fake_embeddings(mis, fake):
    response = mis.embeddings.create(model=EMBED, inputs=["alpha beta", "gamma"], output_dimension=8)
    assert fake.requests[-1].json["input"] == ["alpha beta", "gamma"]  # the SDK's `inputs` is `input` on the wire
    assert [len(d.embedding) for d in response.data] == [8, 8]
    tokens = prompt_tokens_for_texts(["alpha beta", "gamma"])
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    assert response.model == EMBED and response.id


def test_fake_prompt_cache_hits_from_the_second_request_with_a_key(mis):
    first = mis.chat.complete(model=MODEL, messages=MESSAGES, prompt_cache_key="session-1")
    second = mis.chat.complete(model=MODEL, messages=MESSAGES, prompt_cache_key="session-1")
    assert "prompt_tokens_details" not in (first.usage.additional_properties or {})  # Mistral reports hits only
    cached = prompt_tokens_for_texts([MESSAGES[0]["content"]])  # every message but the last
    assert second.usage.additional_properties["prompt_tokens_details"] == {"cached_tokens": cached}
    assert second.usage.prompt_tokens == PROMPT_TOKENS  # cached tokens are part of the prompt tokens


def test_fake_errors_are_mistral_shaped(mis):
    with pytest.raises(errors.SDKError) as caught:
        mis.chat.complete(model=MODEL, messages=ask("hi [[scenario:error-429]]"))
    assert caught.value.status_code == 429
    assert json.loads(caught.value.body) == {
        "object": "error",
        "message": "Rate limit reached (fake provider).",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    with pytest.raises(errors.HTTPValidationError) as invalid:
        mis.chat.complete(model=MODEL, messages=MESSAGES, **scenario("error-422"))
    assert invalid.value.status_code == 422 and invalid.value.data.detail[0].loc == ["body", "model"]


def test_fake_stream_error_and_drop_raise_mid_stream(mis):
    seen = []
    with pytest.raises(errors.ResponseValidationError):
        for event in mis.chat.stream(model=MODEL, messages=ask("hi [[scenario:stream-error]]")):
            seen.append(event)
    assert len(seen) == 1 + DROP_AFTER  # the role chunk, then the deltas before the in-band error
    with pytest.raises(Exception, match="peer closed"):
        list(mis.chat.stream(model=MODEL, messages=ask("hi [[scenario:drop]]")))


def test_fake_openai_clients_keep_openai_format(fake):
    import openai

    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(getattr(c, "usage", None) is None for c in chunks)  # no usage without stream_options
    assert "id" not in client.embeddings.create(model="text-embedding-3-small", input="x").model_dump()


def test_fake_wire_header_selects_mistral_for_other_clients(fake):
    import httpx

    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    plain = httpx.post(fake.url + "/v1/chat/completions", json=body)
    named = httpx.post(fake.url + "/v1/chat/completions", json=body, headers={"x-fake-wire": "mistral"})
    usage = [json.loads(line[6:]).get("usage") for line in named.text.splitlines() if line.startswith("data: {")]
    assert usage[-1]["completion_tokens"] == fake.stream_chunks and "usage" not in plain.text
