"""Mistral AI (`mistralai` SDK): the fake's Mistral wire format through the real SDK, then the instrumentor."""

from __future__ import annotations

import json
from typing import Any

import genai_prices
import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes
from opentelemetry.trace import StatusCode

from mltrack_otel import semconv
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.testing.fake_provider import DROP_AFTER, FakeProvider, prompt_tokens_for_texts
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
    spans,
    stopped_early_attrs,
    token_budget,
    tool_call_message,
    traced_fixture,
    use_settings,
    validate_content,
)
from tests.instr_fixtures import OPENAI_WEATHER_TOOL as WEATHER_TOOL

mistral_client = pytest.importorskip("mistralai.client")
from mistralai.client import Mistral, errors  # noqa: E402

MODEL = "mistral-small-latest"
EMBED = "mistral-embed"


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


# --- the instrumentor ---------------------------------------------------------------------------------------------


traced = traced_fixture("mistralai", cost=False)  # what the instrumentation alone records


def test_chat_complete(traced, mis, fake):
    response = mis.chat.complete(
        model=MODEL, messages=MESSAGES, temperature=0.2, top_p=0.9, max_tokens=200, random_seed=7, stop=["\n\n"]
    )
    span = traced.one()
    a = model_call_attrs(span, "chat", "mistral_ai", MODEL)
    assert (a[gen_ai.GEN_AI_REQUEST_TEMPERATURE], a[gen_ai.GEN_AI_REQUEST_TOP_P]) == (0.2, 0.9)
    assert (a[gen_ai.GEN_AI_REQUEST_MAX_TOKENS], a[gen_ai.GEN_AI_REQUEST_SEED]) == (200, 7)
    assert a[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] == ("\n\n",)
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == response.id
    assert a[gen_ai.GEN_AI_RESPONSE_MODEL] == response.model
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks
    assert gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS not in a
    assert (a[server_attributes.SERVER_ADDRESS], a[server_attributes.SERVER_PORT]) == (fake.host, fake.port)
    assert gen_ai.GEN_AI_REQUEST_STREAM not in a
    inputs = validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert inputs == [
        {"role": "system", "parts": [{"type": "text", "content": "You answer briefly."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Tell me about spans please"}]},
    ]
    assert output_message(span)["finish_reason"] == "stop"
    assert output_text(span) == response.choices[0].message.content
    assert "mistral-test-key" not in json.dumps(a)


async def test_chat_complete_async(traced, mis):
    response = await mis.chat.complete_async(model=MODEL, messages=MESSAGES)
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == response.id
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS
    assert output_text(traced.one()) == response.choices[0].message.content


def test_tool_call_then_tool_result(traced, mis):
    first = mis.chat.complete(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="any")
    (call,) = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    out = tool_call_message(traced.one(), call)
    a = attrs(traced.one())
    assert validate_content("tools", a[gen_ai.GEN_AI_TOOL_DEFINITIONS]) == [WEATHER_TOOL_DEFINITION]
    traced.exporter.clear()
    tool_result = {"role": "tool", "tool_call_id": call.id, "name": "get_weather", "content": "21C sunny"}
    history = [*MESSAGES, first.choices[0].message, tool_result]  # the SDK's own message model, as users pass it
    mis.chat.complete(model=MODEL, messages=history, tools=[WEATHER_TOOL])
    inputs = validate_content("input", attrs(traced.one())[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert [m["role"] for m in inputs] == ["system", "user", "assistant", "tool"]
    assert inputs[2]["parts"] == out["parts"]
    assert inputs[3]["parts"] == [{"type": "tool_call_response", "id": call.id, "response": "21C sunny"}]


def test_chat_parse_is_one_complete_call(traced, mis):
    from pydantic import BaseModel

    class Answer(BaseModel):
        city: str
        degrees: int

    parsed = mis.chat.parse(Answer, model=MODEL, messages=MESSAGES)
    assert parsed.choices[0].message.parsed == Answer(city="example", degrees=1)
    span = traced.one()
    assert attrs(span)[gen_ai.GEN_AI_OUTPUT_TYPE] == "json"
    assert json.loads(output_text(span)) == {"city": "example", "degrees": 1}


def test_content_chunks_and_images(traced, mis):
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": "data:image/png;base64,iVBORw0KGgo="},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    mis.chat.complete(model=MODEL, messages=[{"role": "user", "content": content}])
    (message,) = validate_content("input", attrs(traced.one())[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert message["parts"] == [
        {"type": "text", "content": "what is this"},
        {"type": "blob", "modality": "image", "content": "iVBORw0KGgo=", "mime_type": "image/png"},
        {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png"},
    ]


def test_cached_prompt_tokens(traced, mis):
    mis.chat.complete(model=MODEL, messages=MESSAGES, **scenario("cache-read"))
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS  # cached tokens are part of the prompt tokens
    assert a[gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == prompt_tokens_for_texts([MESSAGES[0]["content"]])


def test_capture_off(traced, mis):
    use_settings(llm_log_prompts=False, llm_log_responses=False)
    mis.chat.complete(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL])
    list(mis.chat.stream(model=MODEL, messages=MESSAGES))
    for span in traced.spans():
        a = attrs(span)
        for key in (gen_ai.GEN_AI_INPUT_MESSAGES, gen_ai.GEN_AI_OUTPUT_MESSAGES, gen_ai.GEN_AI_TOOL_DEFINITIONS):
            assert key not in a
        assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] > 0  # usage is not content


def test_tracking_disabled_records_nothing(traced, mis):
    use_settings(llm_tracking_enabled=False)
    assert mis.chat.complete(model=MODEL, messages=MESSAGES).choices[0].message.content
    assert traced.spans() == []


# --- streams ------------------------------------------------------------------------------------------------------


def _dumped(events) -> list[dict]:
    return [{k: v for k, v in e.data.model_dump().items() if k not in ("id", "created")} for e in events]


def test_stream_is_the_sdks_event_stream_and_records_the_last_chunks_usage(traced, mis, fake):
    from mistralai.client.utils.eventstreaming import EventStream

    with mis.chat.stream(model=MODEL, messages=MESSAGES) as stream:
        assert isinstance(stream, EventStream)
        seen = list(stream)
    span = traced.one()
    a = attrs(span)
    uninstrument(["mistralai"])
    with mis.chat.stream(model=MODEL, messages=MESSAGES) as stream:
        expected = list(stream)
    assert _dumped(seen) == _dumped(expected)  # the caller sees what it would have
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a[gen_ai.GEN_AI_REQUEST_STREAM] is True
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS  # the provider's, not an estimate
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks
    assert a.get(semconv.MLTRACK_USAGE_SOURCE) != "estimated"
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == seen[0].data.id
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    assert output_text(span) == "".join(e.data.choices[0].delta.content or "" for e in expected)
    assert output_message(span)["finish_reason"] == "stop"


async def test_stream_async(traced, mis, fake):
    from mistralai.client.utils.eventstreaming import EventStreamAsync

    stream = await mis.chat.stream_async(model=MODEL, messages=MESSAGES)
    assert isinstance(stream, EventStreamAsync)
    async with stream:
        text = "".join([e.data.choices[0].delta.content or "" async for e in stream])
    span = traced.one()
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert attrs(span)[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks
    assert output_text(span) == text


def test_stream_tool_call(traced, mis):
    events = list(mis.chat.stream(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="any"))
    (call,) = [c for e in events for c in (e.data.choices[0].delta.tool_calls or [])]
    out = output_message(traced.one())
    assert out["finish_reason"] == "tool_call"
    assert out["parts"] == [
        {"type": "tool_call", "id": call.id, "name": "get_weather", "arguments": json.loads(call.function.arguments)}
    ]


def test_stream_break_then_close_ends_once(traced, mis):
    stream = mis.chat.stream(model=MODEL, messages=MESSAGES)
    for i, _event in enumerate(stream):
        if i == 3:
            break
    assert traced.spans() == []  # the caller may still resume
    stream.close()
    stopped_early_attrs(traced.one())
    assert output_text(traced.one()).startswith("Echo:")
    stream.close()
    assert len(traced.spans()) == 1


def test_stream_context_exit_before_the_end(traced, mis):
    with mis.chat.stream(model=MODEL, messages=MESSAGES) as stream:
        next(iter(stream))
        next(iter(stream))
    stopped_early_attrs(traced.one())
    assert output_message(traced.one())["finish_reason"] == "incomplete"


def test_stream_closed_at_the_finish_reason_is_complete(traced, mis, fake):
    with mis.chat.stream(model=MODEL, messages=MESSAGES) as stream:
        for event in stream:
            if event.data.choices[0].finish_reason is not None:  # a common way to stop: before [DONE]
                break
    a = attrs(traced.one())
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a.get(semconv.MLTRACK_USAGE_SOURCE) != "estimated"
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == fake.stream_chunks
    assert output_message(traced.one())["finish_reason"] == "stop"


def test_stream_break_then_garbage_collection(traced, mis):
    abandon_stream(lambda: mis.chat.stream(model=MODEL, messages=MESSAGES), reads=2)
    stopped_early_attrs(traced.one())


def test_stream_never_iterated_then_closed(traced, mis):
    mis.chat.stream(model=MODEL, messages=MESSAGES).close()
    a = attrs(traced.one())
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is False and a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] > 0


async def test_async_stream_break_then_close(traced, mis):
    stream = await mis.chat.stream_async(model=MODEL, messages=MESSAGES)
    async for event in stream:
        if event.data.choices[0].delta.content:
            break
    await stream.close()
    stopped_early_attrs(traced.one())


@pytest.mark.parametrize("name", ["drop", "stream-error"])
def test_stream_failing_midway(traced, mis, name):
    received = []
    with pytest.raises(Exception) as caught:
        for event in mis.chat.stream(model=MODEL, messages=MESSAGES, **scenario(name)):
            received.append(event.data.choices[0].delta.content or "")
    span = traced.one()
    a = stopped_early_attrs(traced.one())
    assert span.status.status_code is StatusCode.ERROR
    assert a[error_attributes.ERROR_TYPE]
    assert output_text(span) == "".join(received) != ""
    assert type(caught.value).__name__ in span.events[0].attributes["exception.type"]


# --- errors, budget, embeddings, price, uninstrument --------------------------------------------------------------


def test_http_errors(traced, mis):
    with pytest.raises(errors.SDKError):
        mis.chat.complete(model=MODEL, messages=MESSAGES, **scenario("error-429"))
    with pytest.raises(errors.HTTPValidationError):
        mis.chat.stream(model=MODEL, messages=MESSAGES, **scenario("error-422"))
    rate_limited, invalid = traced.spans()
    for span, status in ((rate_limited, 429), (invalid, 422)):
        a = attrs(span)
        assert span.status.status_code is StatusCode.ERROR
        assert a[http_attributes.HTTP_RESPONSE_STATUS_CODE] == status
        assert a[error_attributes.ERROR_TYPE]
        assert gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS not in a
    assert "mistral-test-key" not in json.dumps([attrs(s) for s in traced.spans()])


def test_budget_exceeded_raises_before_sending(traced, mis, fake):
    from mltrack_otel.errors import BudgetExceededError

    with token_budget(10, spent=20):
        with pytest.raises(BudgetExceededError):
            mis.chat.complete(model=MODEL, messages=MESSAGES)
        with pytest.raises(BudgetExceededError):
            mis.chat.stream(model=MODEL, messages=MESSAGES)
        with pytest.raises(BudgetExceededError):
            mis.embeddings.create(model=EMBED, inputs=["x"])
    assert fake.requests == []  # nothing reached the provider
    assert traced.spans() == []


def test_embeddings(traced, mis):
    response = mis.embeddings.create(model=EMBED, inputs=["alpha beta", "gamma"], output_dimension=8)
    span = traced.one()
    a = attrs(span)
    assert span.name == f"embeddings {EMBED}"
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == "embeddings"
    assert a[gen_ai.GEN_AI_PROVIDER_NAME] == "mistral_ai"
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == response.id
    assert a[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 8
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == prompt_tokens_for_texts(["alpha beta", "gamma"])
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == 0


async def test_embeddings_async(traced, mis):
    await mis.embeddings.create_async(model=EMBED, inputs="one two three")
    a = attrs(traced.one())
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == prompt_tokens_for_texts(["one two three"])


def _price(model: str, input_tokens: int, output_tokens: int, cache_read: int = 0):
    usage = genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cache_read)
    return genai_prices.calc_price(usage, model_ref=model, provider_id="mistral").total_price


def test_priced_with_genai_prices_mistral(settings, fake, mis):
    with instrumented_library("mistralai") as traced_:
        mis.chat.complete(model=MODEL, messages=MESSAGES)
        list(mis.chat.stream(model=MODEL, messages=MESSAGES, **scenario("cache-read")))
        mis.embeddings.create(model=EMBED, inputs=["alpha beta"])
    chat, stream, embed = (attrs(s) for s in traced_.spans())
    n, cached = fake.stream_chunks, prompt_tokens_for_texts([MESSAGES[0]["content"]])
    assert chat[semconv.LLM_COST_TOTAL] == pytest.approx(float(_price(MODEL, PROMPT_TOKENS, n)))
    assert stream[semconv.LLM_COST_TOTAL] == pytest.approx(float(_price(MODEL, PROMPT_TOKENS, n, cached)))
    assert stream[semconv.LLM_COST_TOTAL] < chat[semconv.LLM_COST_TOTAL]  # cache reads are cheaper
    embed_tokens = prompt_tokens_for_texts(["alpha beta"])
    assert embed[semconv.LLM_COST_TOTAL] == pytest.approx(float(_price(EMBED, embed_tokens, 0)))
    assert all(semconv.MLTRACK_COST_UNPRICED not in a for a in (chat, stream, embed))


def test_uninstrument_restores_the_exact_methods(fake, settings, tracer_provider, exporter, mis):
    from mistralai.client.chat import Chat
    from mistralai.client.embeddings import Embeddings

    names = ("complete", "complete_async", "stream", "stream_async")
    before = [Chat.__dict__[n] for n in names] + [Embeddings.__dict__[n] for n in ("create", "create_async")]
    instrument(["mistralai"], tracer_provider=tracer_provider)
    wrapped = [Chat.__dict__[n] for n in names] + [Embeddings.__dict__[n] for n in ("create", "create_async")]
    assert all(w is not b for w, b in zip(wrapped, before, strict=True))
    uninstrument(["mistralai"])
    after = [Chat.__dict__[n] for n in names] + [Embeddings.__dict__[n] for n in ("create", "create_async")]
    assert all(a is b for a, b in zip(after, before, strict=True))
    mis.chat.complete(model=MODEL, messages=MESSAGES)
    assert spans(exporter) == []


def test_the_sdks_own_telemetry_nests_under_ours_and_the_call_counts_once(settings, fake, mis):
    """mistralai records GenAI spans of its own when asked (configure_telemetry / MISTRAL_SDK_TELEMETRY), usage
    included: made current around the request, ours is their parent, and the ledger counts each call once."""
    from mistralai.extra.observability import configure_telemetry

    with instrumented_library("mistralai") as traced_:
        configure_telemetry(mis, provider=traced_.provider, redaction=False)
        mis.chat.complete(model=MODEL, messages=MESSAGES)
        list(mis.chat.stream(model=MODEL, messages=MESSAGES))
    ours = [s for s in traced_.spans() if s.instrumentation_scope.name.startswith("mltrack_otel")]
    theirs = [s for s in traced_.spans() if s not in ours]
    assert len(ours) == len(theirs) == 2
    assert sorted(s.parent.span_id for s in theirs) == sorted(s.context.span_id for s in ours)
    totals = traced_.ledger.process_totals()
    assert totals.calls == 2
    assert (totals.prompt_tokens, totals.completion_tokens) == (2 * PROMPT_TOKENS, 2 * fake.stream_chunks)


def test_instrument_arms_mistralai_before_its_import_and_patches_on_import():
    import os
    import subprocess
    import sys
    import textwrap

    code = """
        import sys
        from mltrack_otel.instrumentation import instrument
        armed = instrument(["mistralai"])
        assert "mistralai.client" not in sys.modules, "instrument() imported the SDK"
        from mistralai.client import Mistral
        from mistralai.client.chat import Chat
        from mistralai.client.embeddings import Embeddings
        assert armed == ["mistralai"], armed
        assert all(hasattr(c.__dict__[n], "__wrapped__") for c, n in ((Chat, "stream"), (Embeddings, "create")))
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_reasoning_chunks_are_reasoning_parts(traced, mis, fake):
    n = fake.stream_chunks
    response = mis.chat.complete(model="magistral-small-latest", messages=MESSAGES, **scenario("reasoning"))
    thinking, text = response.choices[0].message.content
    assert (thinking.type, text.type) == ("thinking", "text")
    assert response.usage.completion_tokens == 3 * n  # reasoning is part of the completion tokens
    with mis.chat.stream(model="magistral-small-latest", messages=MESSAGES, **scenario("reasoning")) as stream:
        events = list(stream)
    assert sum(isinstance(e.data.choices[0].delta.content, list) for e in events) == 2 * n
    for span in traced.spans():
        a = attrs(span)
        assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == 3 * n
        reasoning, answer = output_message(span)["parts"]
        assert reasoning == {"type": "reasoning", "content": thinking.thinking[0].text}
        assert answer == {"type": "text", "content": text.text}


def test_reasoning_stream_cut_short_estimates_the_thinking_too(traced, mis, fake):
    use_settings(llm_log_responses=False)
    with mis.chat.stream(model="magistral-small-latest", messages=MESSAGES, **scenario("reasoning")) as stream:
        for i, _event in enumerate(stream):
            if i == fake.stream_chunks:  # the role chunk, then thinking only
                break
    a = stopped_early_attrs(traced.one())
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] > 0  # from the thinking seen, although no text came


async def test_async_stream_context_exit_before_the_end_and_midway_error(traced, mis):
    stream = await mis.chat.stream_async(model=MODEL, messages=MESSAGES)
    async with stream:
        async for event in stream:
            if event.data.choices[0].delta.content:
                break
    stopped_early_attrs(traced.one())
    traced.exporter.clear()
    with pytest.raises(errors.ResponseValidationError):
        async for _event in await mis.chat.stream_async(model=MODEL, messages=MESSAGES, **scenario("stream-error")):
            pass
    span = traced.one()
    assert span.status.status_code is StatusCode.ERROR and stopped_early_attrs(traced.one())


@pytest.mark.frameworks
def test_langchain_mistral_chat_counts_once(settings, fake):
    """langchain-mistralai calls Mistral's HTTP API itself (httpx, not the mistralai SDK): its calls are LangChain's
    spans only, each counted once, with the usage Mistral streams in its last chunk."""
    langchain_mistralai = pytest.importorskip("langchain_mistralai")
    with instrumented_library("langchain", "mistralai") as traced_:
        llm = langchain_mistralai.ChatMistralAI(model=MODEL, api_key="mistral-test-key", endpoint=fake.url + "/v1")
        llm.client.headers["x-fake-wire"] = "mistral"  # httpx's User-Agent, not the SDK's: name the wire
        llm.invoke("hello there")
        list(llm.stream("hello there"))
    chats = [attrs(s) for s in traced_.spans() if s.name == f"chat {MODEL}"]
    assert len(chats) == 2 and all(a[gen_ai.GEN_AI_PROVIDER_NAME] == "mistral_ai" for a in chats)
    tokens = prompt_tokens_for_texts(["hello there"])
    assert [(a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS], a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS]) for a in chats] == [
        (tokens, fake.stream_chunks)
    ] * 2
    assert traced_.ledger.process_totals().calls == 2
