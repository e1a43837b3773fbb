"""Failures injected into our own hooks never change what the caller gets: results, exceptions, stream items.

Each case breaks one piece of tracking (request reading, content capture, response reading, stream recording,
configuration, the span processor, the exporter) and runs the same calls as without instrumentation.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter

from mltrack_otel import budget, config, content, guard
from mltrack_otel.instrumentation import _base, instrument, uninstrument
from mltrack_otel.instrumentation import anthropic as ai
from mltrack_otel.instrumentation import openai as oi
from tests.instr_fixtures import without_ids

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about spans please"}]
A_MESSAGES = [{"role": "user", "content": "Tell me about spans please"}]


class Boom(RuntimeError):
    pass


def boom(*_args: Any, **_kwargs: Any) -> Any:
    raise Boom("tracking bug")


class RaisingProcessor(SpanProcessor):
    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span, parent_context=None):
        if self.where == "on_start":
            raise Boom("processor on_start")

    def on_end(self, span):
        if self.where == "on_end":
            raise Boom("processor on_end")


class RaisingExporter(SpanExporter):
    def export(self, spans):
        raise Boom("exporter")


def calls(oai: Any, ant: Any) -> dict[str, Any]:
    """Every call shape, reduced to what the caller sees (ids and timestamps dropped: the fake varies them)."""
    seen: dict[str, Any] = {}
    seen["chat"] = without_ids(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    seen["chat_stream"] = [
        c.to_dict() | {"id": None, "created": None}
        for c in oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    ]
    with oai.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        seen["chat_helper"] = without_ids(stream.get_final_completion())
    seen["responses"] = without_ids(oai.responses.create(model="gpt-4o-mini", input="hello there")).get("output")
    seen["embeddings"] = without_ids(oai.embeddings.create(model="text-embedding-3-small", input="hello"))
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    seen["raw"] = without_ids(raw.parse())
    try:
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-fake-scenario": "error-429"}
        )
    except openai.RateLimitError as exc:
        seen["error"] = (type(exc), exc.status_code, exc.message)
    seen["messages"] = without_ids(ant.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=A_MESSAGES))
    seen["messages_stream"] = [
        e.type for e in ant.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=A_MESSAGES, stream=True)
    ]
    with ant.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=A_MESSAGES) as stream:
        seen["messages_helper"] = without_ids(stream.get_final_message())
    try:
        ant.messages.create(
            model="claude-haiku-4-5",
            max_tokens=100,
            messages=A_MESSAGES,
            extra_headers={"x-fake-scenario": "error-529"},
        )
    except anthropic.APIStatusError as exc:
        seen["a_error"] = (type(exc), exc.status_code, exc.body["error"])  # the message carries a request id
    return seen


@pytest.fixture
def reference(fake, settings, oai, ant) -> dict[str, Any]:
    uninstrument()
    return calls(oai, ant)


def _endpoint_attr(endpoint: Any, name: str):
    return lambda monkeypatch: monkeypatch.setattr(endpoint, name, boom)


INJECTIONS = {
    "request attributes": lambda mp: (
        _endpoint_attr(oi._CHAT, "request")(mp),
        _endpoint_attr(ai._MESSAGES, "request")(mp),
    ),
    "input content": lambda mp: (_endpoint_attr(oi._CHAT, "inputs")(mp), _endpoint_attr(ai._MESSAGES, "inputs")(mp)),
    "response reading": lambda mp: (
        _endpoint_attr(oi._CHAT, "response")(mp),
        _endpoint_attr(oi._EMBEDDINGS, "response")(mp),
        _endpoint_attr(ai._MESSAGES, "response")(mp),
    ),
    "stream feed": lambda mp: (
        mp.setattr(oi.ChatRecorder, "feed", boom),
        mp.setattr(oi.ResponsesRecorder, "feed", boom),
        mp.setattr(ai.MessageRecorder, "feed", boom),
    ),
    "stream outcome": lambda mp: (
        mp.setattr(oi.ChatRecorder, "outcome", boom),
        mp.setattr(ai.MessageRecorder, "outcome", boom),
    ),
    "content encoding": lambda mp: mp.setattr(content, "encode", boom),
    "usage reading": lambda mp: mp.setattr(_base, "read_usage", boom),
    "provider name": lambda mp: mp.setattr(oi.SDK, "provider_name", boom),
    "configuration": lambda mp: mp.setattr(config, "current", boom),
    "budget reservation": lambda mp: mp.setattr(budget, "reserve", boom),
    "span start": lambda mp: mp.setattr(_base.Call, "__init__", boom),
}


@pytest.mark.parametrize("where", list(INJECTIONS))
def test_our_hooks_failing_changes_nothing(reference, oai, ant, tracer_provider_factory, monkeypatch, where):
    instrument(["openai", "anthropic"], tracer_provider=tracer_provider_factory())
    INJECTIONS[where](monkeypatch)
    guard.reset()
    try:
        assert calls(oai, ant) == reference
    finally:
        uninstrument()
    assert guard.health().get("errors.caught", 0) > 0  # the injected failure did fire, and was counted


@pytest.mark.parametrize("pipeline", ["processor on_start", "processor on_end", "exporter"])
def test_the_span_pipeline_failing_changes_nothing(reference, oai, ant, pipeline):
    provider = TracerProvider()
    if pipeline == "exporter":
        provider.add_span_processor(SimpleSpanProcessor(RaisingExporter()))
    else:
        provider.add_span_processor(RaisingProcessor(pipeline.split()[1]))
    instrument(["openai", "anthropic"], tracer_provider=provider)
    try:
        assert calls(oai, ant) == reference
    finally:
        uninstrument()


def test_usage_chunk_stays_hidden_when_recording_fails(fake, settings, oai, monkeypatch, tracer_provider_factory):
    """Even with feed() broken, the usage chunk we asked for does not reach the caller."""
    uninstrument()
    expected = [
        c.to_dict() | {"id": None} for c in oai.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    ]
    instrument(["openai"], tracer_provider=tracer_provider_factory())
    monkeypatch.setattr(oi.ChatRecorder, "feed", boom)
    try:
        seen = [
            c.to_dict() | {"id": None} for c in oai.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        ]
    finally:
        uninstrument()
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}
    assert [{k: v for k, v in c.items() if k != "created"} for c in seen] == [
        {k: v for k, v in c.items() if k != "created"} for c in expected
    ]


@pytest.fixture
def tracer_provider_factory():
    providers = []

    def make() -> TracerProvider:
        provider = TracerProvider()
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider.shutdown()
