"""Cohere: the fake's v2 wire format parsed by the real cohere SDK, then the instrumentor's call-shape matrix."""

from __future__ import annotations

import base64
import json
import struct

import cohere
import httpx
import pytest

from mltrack_otel.testing.fake_provider import DROP_AFTER, embedding, prompt_tokens_for_texts
from mltrack_otel.testing.wire.cohere import TEMPLATE_TOKENS, relevance, search_units

MODEL = "command-r-08-2024"
EMBED_MODEL = "embed-v4.0"
RERANK_MODEL = "rerank-v3.5"
PROMPT = "Tell me about spans please"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ARGUMENTS = json.dumps({"city": "example"})  # the fake's example object for the tool's schema


def scenario(name: str) -> dict:
    return {"request_options": {"additional_headers": {"x-fake-scenario": name}}}


def prompt_tokens(messages: list[dict]) -> int:
    return prompt_tokens_for_texts([m["content"] for m in messages])


def echo(prompt: str, n: int) -> str:
    """The fake's documented answer: "Echo:" + the first words of the prompt, lorem-ipsum filler up to n words."""
    filler = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]
    words = ["Echo:", *prompt.split()[:8]]
    words += [filler[i % len(filler)] for i in range(max(0, n - len(words)))]
    return " ".join(words[:n])


@pytest.fixture
def co(fake):
    fake.clear()
    return cohere.ClientV2(api_key="co-test", base_url=fake.url, max_retries=0)


@pytest.fixture
def aco(fake):
    fake.clear()
    return cohere.AsyncClientV2(api_key="co-test", base_url=fake.url, max_retries=0)


# --- the wire format: the real SDK parses every answer ------------------------------------------------------------


class TestWire:
    def test_chat(self, co, fake):
        response = co.chat(model=MODEL, messages=MESSAGES)
        assert response.finish_reason == "COMPLETE"
        assert response.message.content[0].text == echo(PROMPT, fake.stream_chunks)
        billed, tokens = response.usage.billed_units, response.usage.tokens
        assert billed.input_tokens == prompt_tokens(MESSAGES)
        assert billed.output_tokens == tokens.output_tokens == fake.stream_chunks
        assert tokens.input_tokens == billed.input_tokens + TEMPLATE_TOKENS
        assert fake.requests[-1].path == "/v2/chat"
        assert fake.requests[-1].headers["authorization"] == "Bearer co-test"

    def test_chat_tool_call(self, co):
        response = co.chat(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], **scenario("tool"))
        assert response.finish_reason == "TOOL_CALL"
        (call,) = response.message.tool_calls
        assert (call.type, call.function.name, call.function.arguments) == ("function", "get_weather", ARGUMENTS)
        assert response.message.tool_plan == "Calling get_weather."
        assert response.usage.billed_units.output_tokens == 2 + len(ARGUMENTS)  # plan deltas + argument fragments

    def test_tool_choice_required_and_tool_result(self, co):
        first = co.chat(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="REQUIRED")
        call = first.message.tool_calls[0]
        history = [
            *MESSAGES,
            {"role": "assistant", "tool_plan": first.message.tool_plan, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "21C sunny"},
        ]
        second = co.chat(model=MODEL, messages=history, tools=[WEATHER_TOOL], **scenario("tool"))
        assert second.finish_reason == "COMPLETE"  # after a tool result the fake answers in text
        assert second.message.content[0].text.startswith("Echo:")

    def test_max_tokens(self, co):
        response = co.chat(model=MODEL, messages=MESSAGES, max_tokens=3)
        assert response.finish_reason == "MAX_TOKENS"
        assert response.message.content[0].text == echo(PROMPT, 3)
        assert response.usage.billed_units.output_tokens == 3

    def test_cache_read(self, co):
        response = co.chat(model=MODEL, messages=MESSAGES, **scenario("cache-read"))
        assert response.usage.cached_tokens == prompt_tokens(MESSAGES[:1])  # every segment but the last

    def test_stream(self, co, fake):
        events = list(co.chat_stream(model=MODEL, messages=MESSAGES))
        types = [e.type for e in events]
        n = fake.stream_chunks
        assert types == ["message-start", "content-start", *["content-delta"] * n, "content-end", "message-end"]
        text = "".join(e.delta.message.content.text for e in events if e.type == "content-delta")
        assert text == echo(PROMPT, n)
        end = events[-1].delta
        assert end.finish_reason == "COMPLETE"
        assert end.usage.billed_units.input_tokens == prompt_tokens(MESSAGES)
        assert end.usage.billed_units.output_tokens == n
        assert events[0].id
        raw = fake.requests[-1]
        assert raw.json["stream"] is True

    def test_stream_frames_name_their_event(self, fake):
        body = {"model": MODEL, "messages": MESSAGES[1:], "stream": True, "max_tokens": 1}
        with httpx.stream("POST", fake.url + "/v2/chat", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in response.iter_lines() if line]
        names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
        datas = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
        assert names == [d["type"] for d in datas]
        assert names[-1] == "message-end"

    def test_stream_tool_call(self, co):
        events = list(co.chat_stream(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], **scenario("tool")))
        types = [e.type for e in events]
        assert types[:3] == ["message-start", "tool-plan-delta", "tool-plan-delta"]
        assert types[-2:] == ["tool-call-end", "message-end"]
        start = next(e for e in events if e.type == "tool-call-start").delta.message.tool_calls
        assert start.function.name == "get_weather"
        args = "".join(e.delta.message.tool_calls.function.arguments for e in events if e.type == "tool-call-delta")
        assert args == ARGUMENTS
        assert events[-1].delta.finish_reason == "TOOL_CALL"

    def test_stream_error_ends_in_band(self, co):
        events = list(co.chat_stream(model=MODEL, messages=MESSAGES, **scenario("stream-error")))
        assert [e.type for e in events].count("content-delta") == DROP_AFTER
        assert events[-1].type == "message-end"
        assert events[-1].delta.finish_reason == "ERROR"
        assert events[-1].delta.error
        assert events[-1].delta.usage is None

    def test_stream_drop(self, co):
        seen = []
        with pytest.raises(httpx.RemoteProtocolError):
            for event in co.chat_stream(model=MODEL, messages=MESSAGES, **scenario("drop")):
                seen.append(event.type)
        assert seen.count("content-delta") == DROP_AFTER

    @pytest.mark.parametrize(
        ("name", "status", "error"),
        [
            ("error-400", 400, cohere.BadRequestError),
            ("error-401", 401, cohere.UnauthorizedError),
            ("error-429", 429, cohere.TooManyRequestsError),
            ("error-500", 500, cohere.InternalServerError),
            ("error-529", 529, cohere.core.ApiError),
        ],
    )
    def test_errors(self, co, name, status, error):
        with pytest.raises(error) as info:
            co.chat(model=MODEL, messages=MESSAGES, **scenario(name))
        assert info.value.status_code == status
        assert set(info.value.body) == {"message"}
        with pytest.raises(error):  # a stream's request is sent, and fails, on the first iteration
            next(iter(co.chat_stream(model=MODEL, messages=MESSAGES, **scenario(name))))

    def test_embed(self, co, fake):
        texts = ["hello world", "spans and traces please"]
        kinds = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
        response = co.embed(
            model=EMBED_MODEL, texts=texts, input_type="search_document", embedding_types=kinds, output_dimension=16
        )
        assert response.meta.billed_units.input_tokens == prompt_tokens_for_texts(texts)
        assert response.texts == texts
        floats = response.embeddings.float_
        assert floats == [embedding(json.dumps(t), 16) for t in texts]
        assert struct.unpack("<16f", base64.b64decode(response.embeddings.base64[0])) == pytest.approx(floats[0])
        assert response.embeddings.int8[0] == [round(v * 127) for v in floats[0]]
        assert len(response.embeddings.binary[0]) == len(response.embeddings.ubinary[0]) == 2  # 16 bits packed

    def test_embed_scenario_token_in_a_text(self, co):
        with pytest.raises(cohere.TooManyRequestsError):
            co.embed(model=EMBED_MODEL, texts=["fine", "[[scenario:error-429]]"], input_type="search_query")

    def test_rerank(self, co):
        documents = ["a red car", "the red fox", "blue sky"]
        response = co.rerank(model=RERANK_MODEL, query="red fox", documents=documents, top_n=2)
        assert [(r.index, r.relevance_score) for r in response.results] == [(1, 1.0), (0, 0.5)]
        assert relevance("red fox", documents[2]) == 0.0
        assert response.meta.billed_units.search_units == 1
        assert search_units(101) == 2 and search_units(0) == 1

    async def test_async(self, aco, fake):
        response = await aco.chat(model=MODEL, messages=MESSAGES)
        assert response.message.content[0].text == echo(PROMPT, fake.stream_chunks)
        types = [e.type async for e in aco.chat_stream(model=MODEL, messages=MESSAGES)]
        assert types[0] == "message-start" and types[-1] == "message-end"
        ranked = await aco.rerank(model=RERANK_MODEL, query="q", documents=["q", "r"])
        assert ranked.meta.billed_units.search_units == 1
        vectors = await aco.embed(model=EMBED_MODEL, texts=["x"], input_type="classification")
        assert len(vectors.embeddings.float_[0]) == 16
