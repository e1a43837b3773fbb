"""The OpenAI instrumentor against the real openai SDK and the loopback fake provider."""

from __future__ import annotations

import gc
import json

import openai
import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from mltrack_otel import guard, semconv
from mltrack_otel.instrumentation import _base, uninstrument
from mltrack_otel.instrumentation import openai as oi
from mltrack_otel.tracking import track_llm_context
from tests.instr_fixtures import OPENAI_WEATHER_TOOL as WEATHER_TOOL
from tests.instr_fixtures import attrs, one_span, spans, use_settings, validate_content

# The fixtures this module uses (assigned, not imported, so ruff does not see test arguments as redefinitions).

MODEL = "gpt-4o-mini"
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Tell me about spans please"},
]


def scenario(name: str) -> dict:
    return {"extra_headers": {"x-fake-scenario": name}}


def output_text(span) -> str:
    (message,) = validate_content("output", attrs(span)[gen_ai.GEN_AI_OUTPUT_MESSAGES])
    return "".join(p["content"] for p in message["parts"] if p["type"] == "text")


# --- chat completions --------------------------------------------------------------------------------------------


def test_chat_create(instrumented, oai, fake):
    response = oai.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0.2, max_tokens=200, seed=7)
    span = one_span(instrumented)
    a = attrs(span)
    assert span.name == f"chat {MODEL}"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == "chat"
    assert a[gen_ai.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[gen_ai.GEN_AI_REQUEST_MODEL] == MODEL
    assert a[gen_ai.GEN_AI_REQUEST_TEMPERATURE] == 0.2
    assert a[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] == 200
    assert a[gen_ai.GEN_AI_REQUEST_SEED] == 7
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == response.id
    assert a[gen_ai.GEN_AI_RESPONSE_MODEL] == response.model != MODEL  # the dated snapshot
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == response.usage.prompt_tokens
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == response.usage.completion_tokens
    assert a[server_attributes.SERVER_ADDRESS] == fake.host
    assert a[server_attributes.SERVER_PORT] == fake.port
    assert a[semconv.LLM_LATENCY] > 0
    assert gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS not in a  # zero cache reads are not recorded
    inputs = validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert inputs == [  # system messages stay in the chat history, as the convention says for chat APIs
        {"role": "system", "parts": [{"type": "text", "content": "You answer briefly."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Tell me about spans please"}]},
    ]
    assert gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS not in a
    assert output_text(span) == response.choices[0].message.content
    assert semconv.MLTRACK_CONTENT_TRUNCATED not in a
    # the API key never shows up anywhere on the span
    assert "sk-test" not in json.dumps(a)


async def test_chat_create_async(instrumented, aoai):
    response = await aoai.chat.completions.create(model=MODEL, messages=MESSAGES)
    span = one_span(instrumented)
    assert attrs(span)[gen_ai.GEN_AI_RESPONSE_ID] == response.id
    assert attrs(span)[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == response.usage.completion_tokens
    assert output_text(span) == response.choices[0].message.content


class Answer(BaseModel):
    city: str
    degrees: int


def test_chat_parse(instrumented, oai):
    response = oai.chat.completions.parse(model=MODEL, messages=MESSAGES, response_format=Answer)
    assert isinstance(response.choices[0].message.parsed, Answer)
    a = attrs(one_span(instrumented))
    assert a[gen_ai.GEN_AI_OUTPUT_TYPE] == "json"
    assert json.loads(output_text(one_span(instrumented))) == response.choices[0].message.parsed.model_dump()


def test_tool_call_then_tool_result_multi_turn(instrumented, oai):
    first = oai.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], **scenario("tool"))
    call = first.choices[0].message.tool_calls[0]
    span = one_span(instrumented)
    a = attrs(span)
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    (out,) = validate_content("output", a[gen_ai.GEN_AI_OUTPUT_MESSAGES])
    assert out["finish_reason"] == "tool_call"
    assert out["parts"] == [
        {"type": "tool_call", "id": call.id, "name": "get_weather", "arguments": json.loads(call.function.arguments)}
    ]
    tools = validate_content("tools", a[gen_ai.GEN_AI_TOOL_DEFINITIONS])
    assert tools == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER_TOOL["function"]["parameters"],
        }
    ]

    instrumented.clear()
    history = [*MESSAGES, first.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "21C sunny"}]
    oai.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER_TOOL])
    inputs = validate_content("input", attrs(one_span(instrumented))[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert [m["role"] for m in inputs] == ["system", "user", "assistant", "tool"]  # the whole history
    assert inputs[2]["parts"][0]["type"] == "tool_call" and inputs[2]["parts"][0]["id"] == call.id
    assert inputs[3]["parts"] == [{"type": "tool_call_response", "id": call.id, "response": "21C sunny"}]


def test_image_input_parts(instrumented, oai):
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])
    (message,) = validate_content("input", attrs(one_span(instrumented))[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert [p["type"] for p in message["parts"]] == ["text", "blob", "uri"]
    assert message["parts"][1] == {
        "type": "blob",
        "modality": "image",
        "content": "iVBORw0KGgo=",
        "mime_type": "image/png",
    }


def test_conversation_id_comes_from_the_tracking_context(instrumented, oai):
    with track_llm_context("support", conversation_id="conv-42"):
        oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    (span,) = [s for s in spans(instrumented) if s.name.startswith("chat")]
    assert attrs(span)[gen_ai.GEN_AI_CONVERSATION_ID] == "conv-42"


# --- streams -----------------------------------------------------------------------------------------------------


def chunks_of(client, **kwargs) -> list:
    return [c.to_dict() for c in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **kwargs)]


def test_stream_usage_is_injected_and_the_caller_sees_what_it_would_have(instrumented, oai, fake):
    seen = chunks_of(oai)
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}  # we asked for usage
    span = one_span(instrumented)
    a = attrs(span)
    uninstrument(["openai"])
    expected = chunks_of(oai)
    assert "stream_options" not in fake.requests[-1].json
    assert [_drop_id(c) for c in seen] == [_drop_id(c) for c in expected]  # no usage chunk, no "usage": null
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == len([c for c in expected if c["choices"][0]["delta"].get("content")])
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] > 0
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    assert a[gen_ai.GEN_AI_REQUEST_STREAM] is True
    assert output_text(span) == "".join(c["choices"][0]["delta"].get("content") or "" for c in expected)


def _drop_id(chunk: dict) -> dict:
    return {k: v for k, v in chunk.items() if k not in ("id", "created")}


def test_stream_usage_the_caller_asked_for_is_left_visible(instrumented, oai):
    seen = chunks_of(oai, stream_options={"include_usage": True})
    assert seen[-1]["choices"] == [] and seen[-1]["usage"]["completion_tokens"] > 0
    assert attrs(one_span(instrumented))[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == seen[-1]["usage"]["completion_tokens"]


def test_stream_injection_off_by_setting(instrumented, oai, fake):
    use_settings(stream_include_usage=False)
    chunks_of(oai)
    assert "stream_options" not in fake.requests[-1].json
    assert attrs(one_span(instrumented))[semconv.MLTRACK_USAGE_SOURCE] == "estimated"  # no usage came: estimated


def test_stream_injection_only_for_listed_hosts(instrumented, oai, fake):
    use_settings(stream_usage_hosts=("api.openai.com",))
    chunks_of(oai)
    assert "stream_options" not in fake.requests[-1].json


async def test_stream_async(instrumented, aoai):
    stream = await aoai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert type(stream) is openai.AsyncStream
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    span = one_span(instrumented)
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert output_text(span) == text
    assert attrs(span)[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] > 0


def test_stream_keeps_the_sdk_type_and_context_manager(instrumented, oai):
    with oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:
        assert type(stream) is openai.Stream  # the SDK's own class, not a subclass or a proxy
        first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    span = one_span(instrumented)  # ended by the context exit, not later
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is False
    assert validate_content("output", attrs(span)[gen_ai.GEN_AI_OUTPUT_MESSAGES])[0]["finish_reason"] == "incomplete"


def test_stream_close_after_break(instrumented, oai):
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    assert not spans(instrumented)  # still open: the caller may resume
    stream.close()
    span = one_span(instrumented)
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is False
    assert output_text(span).startswith("Echo:")
    stream.close()
    assert len(spans(instrumented)) == 1  # exactly once


def test_stream_break_then_garbage_collection(instrumented, oai):
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    next(iter(stream))
    del stream
    gc.collect()
    guard.drain_deferred()  # the span is ended off the collector, by the finalizer worker
    span = one_span(instrumented)
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is False


def test_stream_never_iterated_then_closed(instrumented, oai):
    oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True).close()
    assert attrs(one_span(instrumented))[semconv.MLTRACK_STREAM_COMPLETE] is False


async def test_async_stream_break_then_close(instrumented, aoai):
    stream = await aoai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    async for _chunk in stream:
        break
    await stream.close()
    assert attrs(one_span(instrumented))[semconv.MLTRACK_STREAM_COMPLETE] is False


def test_stream_tool_call_arguments_are_accumulated(instrumented, oai):
    calls = {}
    for chunk in oai.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], stream=True, **scenario("tool")
    ):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            calls.setdefault(call.index, []).append(call.function.arguments or "")
    (out,) = validate_content("output", attrs(one_span(instrumented))[gen_ai.GEN_AI_OUTPUT_MESSAGES])
    assert out["parts"][0]["name"] == "get_weather"
    assert out["parts"][0]["arguments"] == json.loads("".join(calls[0]))
    assert out["finish_reason"] == "tool_call"


def test_chat_stream_helper(instrumented, oai):
    with oai.chat.completions.stream(model=MODEL, messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    span = one_span(instrumented)
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert output_text(span) == final.choices[0].message.content


def test_chat_stream_helper_early_exit_ends_the_span(instrumented, oai):
    with oai.chat.completions.stream(model=MODEL, messages=MESSAGES) as stream:
        for _event in stream:
            break
    # ChatCompletionStream.close() closes the HTTP response directly, not the raw stream: still one span, now
    assert attrs(one_span(instrumented))[semconv.MLTRACK_STREAM_COMPLETE] is False


@pytest.mark.parametrize("name", ["drop", "stream-error"])
def test_stream_failing_midway_keeps_partial_output(instrumented, oai, name):
    received = []
    with pytest.raises(Exception) as caught:  # openai 3.x wraps a dropped socket in APIError, 1.x does not
        for chunk in oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **scenario(name)):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    span = one_span(instrumented)
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is False
    assert a[error_attributes.ERROR_TYPE]
    assert output_text(span) == "".join(received) != ""
    assert any(e.name == "exception" for e in span.events)
    assert type(caught.value).__name__ in span.events[0].attributes["exception.type"]


# --- other endpoints ---------------------------------------------------------------------------------------------


def test_responses_create(instrumented, oai):
    response = oai.responses.create(model=MODEL, instructions="Be terse.", input="Tell me about spans please")
    span = one_span(instrumented)
    a = attrs(span)
    assert span.name == f"chat {MODEL}"
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == response.id
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == response.usage.input_tokens
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == response.usage.output_tokens
    assert validate_content("system", a[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS]) == [
        {"type": "text", "content": "Be terse."}
    ]
    assert validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES])[0]["role"] == "user"
    assert output_text(span) == response.output_text


def test_responses_stream(instrumented, oai):
    events = list(oai.responses.create(model=MODEL, input="Tell me about spans please", stream=True))
    final = events[-1].response
    span = one_span(instrumented)
    assert attrs(span)[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == final.usage.output_tokens
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert output_text(span) == final.output_text


def test_responses_stream_helper(instrumented, oai):
    with oai.responses.stream(model=MODEL, input="Tell me about spans please") as stream:
        final = stream.get_final_response()
    assert output_text(one_span(instrumented)) == final.output_text


async def test_responses_async_with_function_tool(instrumented, aoai):
    tool = {"type": "function", **WEATHER_TOOL["function"]}
    response = await aoai.responses.create(model=MODEL, input="weather in Paris?", tools=[tool], **scenario("tool"))
    a = attrs(one_span(instrumented))
    (out,) = validate_content("output", a[gen_ai.GEN_AI_OUTPUT_MESSAGES])
    call = next(item for item in response.output if item.type == "function_call")
    assert out["parts"] == [
        {"type": "tool_call", "id": call.call_id, "name": call.name, "arguments": json.loads(call.arguments)}
    ]
    assert out["finish_reason"] == "tool_call"
    assert validate_content("tools", a[gen_ai.GEN_AI_TOOL_DEFINITIONS])[0]["name"] == "get_weather"


def test_embeddings(instrumented, oai):
    result = oai.embeddings.create(model="text-embedding-3-small", input=["one", "two words"])
    span = one_span(instrumented)
    a = attrs(span)
    assert span.name == "embeddings text-embedding-3-small"
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == "embeddings"
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == result.usage.prompt_tokens
    assert a[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == len(result.data[0].embedding)
    assert gen_ai.GEN_AI_INPUT_MESSAGES not in a


def test_legacy_completions_and_stream(instrumented, oai):
    result = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello", max_tokens=50)
    span = one_span(instrumented)
    assert span.name == "text_completion gpt-3.5-turbo-instruct"
    assert attrs(span)[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == result.usage.completion_tokens
    assert output_text(span) == result.choices[0].text
    instrumented.clear()
    text = "".join(
        c.choices[0].text
        for c in oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello", stream=True)
        if c.choices
    )
    span = one_span(instrumented)
    assert output_text(span) == text
    assert attrs(span)[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] > 0  # injected usage, hidden from the caller


# --- response shapes ---------------------------------------------------------------------------------------------


def test_with_raw_response(instrumented, oai):
    raw = oai.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    span = one_span(instrumented)  # finished from the body, before the caller parses
    parsed = raw.parse()
    assert attrs(span)[gen_ai.GEN_AI_RESPONSE_ID] == parsed.id
    assert attrs(span)[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == parsed.usage.prompt_tokens
    assert output_text(span) == parsed.choices[0].message.content


def test_with_streaming_response(instrumented, oai):
    with oai.chat.completions.with_streaming_response.create(model=MODEL, messages=MESSAGES) as response:
        assert not spans(instrumented)  # the body has not been read yet
        parsed = response.parse()
    span = one_span(instrumented)
    assert attrs(span)[gen_ai.GEN_AI_RESPONSE_ID] == parsed.id
    assert output_text(span) == parsed.choices[0].message.content


def test_with_raw_response_stream(instrumented, oai, fake):
    raw = oai.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, stream=True)
    assert "stream_options" not in fake.requests[-1].json  # raw bytes reach the caller: nothing to hide from them
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    span = one_span(instrumented)
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert output_text(span) == text


async def test_with_streaming_response_stream_async(instrumented, aoai):
    async with aoai.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True
    ) as response:
        stream = await response.parse()
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert output_text(one_span(instrumented)) == text


# --- providers ---------------------------------------------------------------------------------------------------


def test_azure_client(instrumented, fake):
    client = openai.AzureOpenAI(azure_endpoint=fake.url, api_key="k", api_version="2024-10-21", max_retries=0)
    response = client.chat.completions.create(model="my-deployment", messages=MESSAGES)
    a = attrs(one_span(instrumented))
    assert a[gen_ai.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
    assert a[gen_ai.GEN_AI_REQUEST_MODEL] == "my-deployment"
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == response.id
    assert a[server_attributes.SERVER_ADDRESS] == fake.host


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.openai.com", "openai"),
        ("my-resource.openai.azure.com", "azure.ai.openai"),
        ("api.groq.com", "groq"),
        ("api.deepseek.com", "deepseek"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.x.ai", "x_ai"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
        ("us-central1-aiplatform.googleapis.com", "gcp.vertex_ai"),
        ("bedrock-runtime.us-east-1.amazonaws.com", "aws.bedrock"),
        ("localhost", "openai"),  # vLLM, Ollama, proxies: the OpenAI API
        ("llm.internal.example", "openai"),
    ],
)
def test_provider_names(host, expected):
    assert oi.provider_name(openai.OpenAI(api_key="x"), host) == expected


# --- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "invalid_api_key"),
        (429, openai.RateLimitError, "rate_limit_exceeded"),
        (500, openai.InternalServerError, "server_error"),
        (529, openai.InternalServerError, "overloaded"),
    ],
)
def test_http_errors(instrumented, oai, status, error_class, error_type):
    with pytest.raises(error_class) as caught:
        oai.chat.completions.create(model=MODEL, messages=MESSAGES, **scenario(f"error-{status}"))
    assert type(caught.value) is error_class
    span = one_span(instrumented)
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[error_attributes.ERROR_TYPE] == error_type
    assert a[http_attributes.HTTP_RESPONSE_STATUS_CODE] == status
    (event,) = span.events
    assert event.name == "exception"
    assert "(fake provider)" in event.attributes["exception.message"]  # the provider's own message
    assert gen_ai.GEN_AI_INPUT_MESSAGES in a  # what was asked is still recorded


async def test_http_error_async(instrumented, aoai):
    with pytest.raises(openai.RateLimitError):
        await aoai.chat.completions.create(model=MODEL, messages=MESSAGES, **scenario("error-429"))
    assert attrs(one_span(instrumented))[error_attributes.ERROR_TYPE] == "rate_limit_exceeded"


def test_connection_error(instrumented, settings):
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert attrs(one_span(instrumented))[error_attributes.ERROR_TYPE] == "openai.APIConnectionError"


# --- budget, content settings --------------------------------------------------------------------------------------


def test_budget_exceeded_raises_before_sending(instrumented, oai, fake):
    from mltrack_otel import ledger
    from mltrack_otel.errors import BudgetExceededError

    ledger.LEDGER.limits = ledger.Limits(token_budget=10)
    ledger.LEDGER.add(1, None, None, 20, 0, None)
    try:
        with pytest.raises(BudgetExceededError):
            oai.chat.completions.create(model=MODEL, messages=MESSAGES)
        with pytest.raises(BudgetExceededError):
            oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    finally:
        ledger.LEDGER.limits = ledger.Limits()
        ledger.LEDGER.reset()
    assert fake.requests == []  # nothing reached the provider
    assert spans(instrumented) == []


def test_capture_off(instrumented, oai):
    use_settings(llm_log_prompts=False, llm_log_responses=False)
    oai.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL])
    a = attrs(one_span(instrumented))
    for key in (gen_ai.GEN_AI_INPUT_MESSAGES, gen_ai.GEN_AI_OUTPUT_MESSAGES, gen_ai.GEN_AI_TOOL_DEFINITIONS):
        assert key not in a
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] > 0  # usage is not content


def test_capture_prompts_only(instrumented, oai):
    use_settings(llm_log_responses=False)
    oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    a = attrs(one_span(instrumented))
    assert gen_ai.GEN_AI_INPUT_MESSAGES in a and gen_ai.GEN_AI_OUTPUT_MESSAGES not in a


def test_tracking_disabled_records_nothing(instrumented, oai):
    use_settings(llm_tracking_enabled=False)
    response = oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert response.choices[0].message.content
    assert spans(instrumented) == []


def test_suppressed_instrumentation_records_nothing(instrumented, oai):
    """OTel's suppress_instrumentation() (exporters use it around their own requests) silences us like any
    instrumentation; outside it, recording resumes."""
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        response = oai.chat.completions.create(model=MODEL, messages=MESSAGES)
        chunks = list(oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert response.choices[0].message.content and chunks
    assert spans(instrumented) == []
    oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert len(spans(instrumented)) == 1


async def test_suppressed_instrumentation_async(instrumented, aoai):
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        await aoai.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert spans(instrumented) == []


def test_content_truncated_to_budget(instrumented, oai):
    use_settings(content_max_bytes=400)
    history = [{"role": "user" if i % 2 else "assistant", "content": f"turn {i} " + "blah " * 30} for i in range(20)]
    oai.chat.completions.create(model=MODEL, messages=history)
    a = attrs(one_span(instrumented))
    assert a[semconv.MLTRACK_CONTENT_TRUNCATED] is True
    assert len(a[gen_ai.GEN_AI_INPUT_MESSAGES].encode()) <= 400
    kept = validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert kept[-1]["parts"][0]["content"].startswith("turn 19")  # the newest message survives


def test_redaction(instrumented, oai):
    use_settings(redact_patterns=(r"secret-\w+",))
    oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "my secret-token-123 is here"}])
    a = attrs(one_span(instrumented))
    assert "secret-token" not in a[gen_ai.GEN_AI_INPUT_MESSAGES] + a[gen_ai.GEN_AI_OUTPUT_MESSAGES]
    assert "[REDACTED]" in a[gen_ai.GEN_AI_INPUT_MESSAGES]
    assert "[REDACTED]" in a[gen_ai.GEN_AI_OUTPUT_MESSAGES]  # the echo repeats it; redacted there too
    validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES])


def test_openinference_attributes(instrumented, oai):
    use_settings(openinference_attributes=True)
    response = oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    a = attrs(one_span(instrumented))
    assert a[_base.OI_SPAN_KIND] == "LLM"
    assert a[_base.OI_INPUT_VALUE] == a[gen_ai.GEN_AI_INPUT_MESSAGES]
    assert a["llm.input_messages.1.message.role"] == "user"
    assert a["llm.input_messages.1.message.content"] == "Tell me about spans please"
    assert a["llm.output_messages.0.message.content"] == response.choices[0].message.content
    assert a[_base.OI_TOKEN_PROMPT] == response.usage.prompt_tokens
    assert a[_base.OI_TOKEN_TOTAL] == response.usage.total_tokens


def test_not_a_model_call_is_not_traced(instrumented, oai):
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("gpt-4o-mini")  # GET: not one of our routes
    assert spans(instrumented) == []


def test_reasoning_and_cache_tokens(instrumented, oai):
    response = oai.chat.completions.create(model="o4-mini", messages=MESSAGES, **scenario("reasoning"))
    a = attrs(one_span(instrumented))
    assert (
        a[gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == response.usage.completion_tokens_details.reasoning_tokens > 0
    )
    instrumented.clear()
    response = oai.chat.completions.create(model=MODEL, messages=MESSAGES, **scenario("cache-read"))
    a = attrs(one_span(instrumented))
    cached = response.usage.prompt_tokens_details.cached_tokens
    assert cached > 0
    assert a[gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == cached
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == response.usage.prompt_tokens  # OpenAI's count includes the cache


def test_error_text_is_redacted_like_content(instrumented, oai):
    """Gateways may echo keys back in error text: redaction patterns apply to the exception event and status."""
    use_settings(redact_patterns=(r"\(fake provider\)",))
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=MESSAGES, **scenario("error-400"))
    span = one_span(instrumented)
    (event,) = span.events
    assert "(fake provider)" not in event.attributes["exception.message"]
    assert "[REDACTED]" in event.attributes["exception.message"]
    assert "(fake provider)" not in event.attributes["exception.stacktrace"]
    assert "(fake provider)" not in span.status.description
