"""Groq: the fake's Groq chat API (testing/wire/groq.py) parsed by the real groq SDK, then the instrumentor, one
declaration on the Stainless core."""

from __future__ import annotations

import groq
import pytest

from mltrack_otel.testing.fake_provider import prompt_tokens_for_texts

MODEL = "llama-3.1-8b-instant"
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Tell me about spans please"},
]
PROMPT_TOKENS = prompt_tokens_for_texts([m["content"] for m in MESSAGES])


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
