"""The Anthropic instrumentor against the real anthropic SDK and the loopback fake provider."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import anthropic
import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes
from opentelemetry.trace import SpanKind, StatusCode

from mltrack_otel import guard, semconv
from mltrack_otel.instrumentation import anthropic as ai
from mltrack_otel.instrumentation import uninstrument
from tests.instr_fixtures import attrs, one_span, spans, use_settings, validate_content

MODEL = "claude-haiku-4-5"
SYSTEM = "You answer briefly."
MESSAGES = [{"role": "user", "content": "Tell me about spans please"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def scenario(name: str) -> dict:
    return {"extra_headers": {"x-fake-scenario": name}}


def output(span) -> dict:
    (message,) = validate_content("output", attrs(span)[gen_ai.GEN_AI_OUTPUT_MESSAGES])
    return message


def output_text(span) -> str:
    return "".join(p["content"] for p in output(span)["parts"] if p["type"] == "text")


def test_messages_create(instrumented, ant, fake):
    message = ant.messages.create(
        model=MODEL,
        max_tokens=300,
        system=SYSTEM,
        messages=MESSAGES,
        stop_sequences=["STOP"],
        extra_body={"temperature": 0.5},  # anthropic 2.x dropped the parameter; older SDKs and extra_body send it
    )
    span = one_span(instrumented)
    a = attrs(span)
    assert span.name == f"chat {MODEL}"
    assert span.kind is SpanKind.CLIENT
    assert a[gen_ai.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == "chat"
    assert a[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] == 300
    assert a[gen_ai.GEN_AI_REQUEST_TEMPERATURE] == 0.5
    assert a[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] == ("STOP",)
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == message.id
    assert a[gen_ai.GEN_AI_RESPONSE_MODEL] == message.model
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == message.usage.input_tokens
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == message.usage.output_tokens
    assert a[server_attributes.SERVER_ADDRESS] == fake.host
    assert a[server_attributes.SERVER_PORT] == fake.port
    assert validate_content("system", a[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": SYSTEM}]
    assert validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Tell me about spans please"}]}
    ]
    assert output_text(span) == message.content[0].text
    assert output(span)["finish_reason"] == "stop"


async def test_messages_create_async(instrumented, aant):
    message = await aant.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES)
    span = one_span(instrumented)
    assert attrs(span)[gen_ai.GEN_AI_RESPONSE_ID] == message.id
    assert output_text(span) == message.content[0].text


@pytest.mark.parametrize("cache", ["cache-write", "cache-read"])
def test_prompt_caching_usage_is_normalised(instrumented, ant, cache):
    system = [{"type": "text", "text": "long reusable context " * 20, "cache_control": {"type": "ephemeral"}}]
    message = ant.messages.create(model=MODEL, max_tokens=300, system=system, messages=MESSAGES, **scenario(cache))
    usage = message.usage
    a = attrs(one_span(instrumented))
    total = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == total > usage.input_tokens
    if cache == "cache-read":
        assert a[gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == usage.cache_read_input_tokens > 0
        assert gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS not in a
    else:
        assert a[gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == usage.cache_creation_input_tokens > 0
        assert gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS not in a


def test_tool_use_then_tool_result(instrumented, ant):
    first = ant.messages.create(
        model=MODEL, max_tokens=300, messages=MESSAGES, tools=[WEATHER_TOOL], **scenario("tool")
    )
    tool_use = next(b for b in first.content if b.type == "tool_use")
    span = one_span(instrumented)
    a = attrs(span)
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_use",)
    message = output(span)
    assert message["finish_reason"] == "tool_call"
    assert message["parts"][-1] == {
        "type": "tool_call",
        "id": tool_use.id,
        "name": "get_weather",
        "arguments": tool_use.input,
    }
    assert validate_content("tools", a[gen_ai.GEN_AI_TOOL_DEFINITIONS]) == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER_TOOL["input_schema"],
        }
    ]

    instrumented.clear()
    result = {"type": "tool_result", "tool_use_id": tool_use.id, "content": "21C sunny"}
    history = [*MESSAGES, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
    ant.messages.create(model=MODEL, max_tokens=300, messages=history, tools=[WEATHER_TOOL])
    inputs = validate_content("input", attrs(one_span(instrumented))[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert [m["role"] for m in inputs] == ["user", "assistant", "tool"]  # the full history, SDK blocks included
    assert inputs[1]["parts"][-1]["type"] == "tool_call"
    assert inputs[2]["parts"] == [{"type": "tool_call_response", "id": tool_use.id, "response": "21C sunny"}]


def test_image_blocks(instrumented, ant):
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "what is this"},
    ]
    ant.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": content}])
    (message,) = validate_content("input", attrs(one_span(instrumented))[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert message["parts"][0] == {
        "type": "blob",
        "modality": "image",
        "content": "iVBORw0KGgo=",
        "mime_type": "image/png",
    }
    assert message["parts"][1] == {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png"}


# --- streams -----------------------------------------------------------------------------------------------------


def events_of(client, **kwargs) -> list:
    stream = client.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES, stream=True, **kwargs)
    return [e.to_dict() for e in stream]


def test_stream_events_unchanged_and_usage_from_message_start_and_delta(instrumented, ant):
    seen = events_of(ant)
    span = one_span(instrumented)
    a = attrs(span)
    uninstrument(["anthropic"])
    expected = events_of(ant)
    strip = lambda e: {k: v for k, v in e.items() if k != "message"}  # noqa: E731 - message ids differ per request
    assert [strip(e) for e in seen] == [strip(e) for e in expected]
    start = next(e for e in seen if e["type"] == "message_start")["message"]["usage"]
    final = next(e for e in seen if e["type"] == "message_delta")["usage"]
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == start["input_tokens"]
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == final["output_tokens"]  # cumulative: not added to start's 1
    assert start["output_tokens"] == 1 and final["output_tokens"] > 1
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    text = "".join(e["delta"]["text"] for e in seen if e["type"] == "content_block_delta")
    assert output_text(span) == text


async def test_stream_async(instrumented, aant):
    stream = await aant.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES, stream=True)
    assert isinstance(stream, anthropic.AsyncStream)  # anthropic 0.x's isinstance rejects even subclasses
    text = "".join([e.delta.text async for e in stream if e.type == "content_block_delta"])
    span = one_span(instrumented)
    assert output_text(span) == text
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is True


def test_stream_helper(instrumented, ant):
    with ant.messages.stream(model=MODEL, max_tokens=300, system=SYSTEM, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    span = one_span(instrumented)
    a = attrs(span)
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == final.id
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == final.usage.output_tokens
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == final.usage.input_tokens
    assert output_text(span) == final.content[0].text
    assert validate_content("system", a[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS])[0]["content"] == SYSTEM


def test_stream_helper_early_exit(instrumented, ant):
    with ant.messages.stream(model=MODEL, max_tokens=300, messages=MESSAGES) as stream:
        for text in stream.text_stream:
            assert text
            break
    span = one_span(instrumented)  # the helper's close() ends it on exit
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is False
    assert output(span)["finish_reason"] == "incomplete"


async def test_async_stream_helper(instrumented, aant):
    async with aant.messages.stream(model=MODEL, max_tokens=300, messages=MESSAGES) as stream:
        final = await stream.get_final_message()
    assert output_text(one_span(instrumented)) == final.content[0].text


def test_stream_tool_use(instrumented, ant):
    with ant.messages.stream(
        model=MODEL, max_tokens=300, messages=MESSAGES, tools=[WEATHER_TOOL], **scenario("tool")
    ) as s:
        final = s.get_final_message()
    tool_use = next(b for b in final.content if b.type == "tool_use")
    message = output(one_span(instrumented))
    assert message["parts"][0] == {"type": "text", "content": final.content[0].text}
    assert message["parts"][1] == {
        "type": "tool_call",
        "id": tool_use.id,
        "name": "get_weather",
        "arguments": tool_use.input,
    }
    assert message["finish_reason"] == "tool_call"


def test_stream_break_then_garbage_collection(instrumented, ant):
    stream = ant.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES, stream=True)
    next(iter(stream))
    del stream
    gc.collect()
    guard.drain_deferred()  # the span is ended off the collector, by the finalizer worker
    assert attrs(one_span(instrumented))[semconv.MLTRACK_STREAM_COMPLETE] is False


@pytest.mark.parametrize("name", ["drop", "stream-error"])
def test_stream_failing_midway(instrumented, ant, name):
    received = []
    with pytest.raises(Exception) as caught:  # whatever the SDK raises (a dropped socket is not wrapped)
        for event in ant.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES, stream=True, **scenario(name)):
            if event.type == "content_block_delta":
                received.append(event.delta.text)
    span = one_span(instrumented)
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is False
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] > 0  # from message_start, before the failure
    assert output_text(span) == "".join(received) != ""
    assert span.events[0].attributes["exception.type"].endswith(type(caught.value).__name__)


# --- errors, providers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.APIStatusError, "overloaded_error"),  # OverloadedError where the SDK has it
    ],
)
def test_http_errors(instrumented, ant, status, error_class, error_type):
    with pytest.raises(anthropic.APIStatusError) as caught:
        ant.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, **scenario(f"error-{status}"))
    assert isinstance(caught.value, error_class)
    span = one_span(instrumented)
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a[error_attributes.ERROR_TYPE] == error_type
    assert a[http_attributes.HTTP_RESPONSE_STATUS_CODE] == status
    assert "(fake provider)" in span.events[0].attributes["exception.message"]


def test_beta_messages_route(instrumented, ant):
    message = ant.beta.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    assert attrs(one_span(instrumented))[gen_ai.GEN_AI_RESPONSE_ID] == message.id


def test_count_tokens_is_not_a_model_call(instrumented, ant):
    ant.messages.count_tokens(model=MODEL, messages=MESSAGES)
    assert spans(instrumented) == []


def test_with_raw_response(instrumented, ant):
    raw = ant.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    message = raw.parse()
    assert attrs(one_span(instrumented))[gen_ai.GEN_AI_RESPONSE_ID] == message.id


def test_capture_off(instrumented, ant):
    use_settings(llm_log_prompts=False, llm_log_responses=False)
    ant.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=MESSAGES, stream=True).close()
    a = attrs(one_span(instrumented))
    assert not {gen_ai.GEN_AI_INPUT_MESSAGES, gen_ai.GEN_AI_OUTPUT_MESSAGES, gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS} & set(a)


@pytest.mark.parametrize(
    ("client_class", "expected"),
    [("Anthropic", "anthropic"), ("AnthropicBedrock", "aws.bedrock"), ("AnthropicVertex", "gcp.vertex_ai")],
)
def test_provider_names(client_class, expected):
    fake_client = type(client_class, (), {})()
    assert ai.provider_name(fake_client, "example.com") == expected


def test_one_span_per_call_when_the_sdk_traces_itself(fake):
    """anthropic 2.x records its own span when a global TracerProvider is set (here before anthropic is even
    imported): an instrumented call still makes one span, ours. More cases in test_sdk_tracing.py."""
    code = f"""
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
from mltrack_otel.instrumentation import instrument
instrument(["anthropic"])
import anthropic
client = anthropic.Anthropic(base_url="{fake.anthropic_base_url}", api_key="x", max_retries=0)
client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{{"role": "user", "content": "hi"}}])
print(json.dumps([s.instrumentation_scope.name for s in exporter.get_finished_spans()]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["mltrack_otel.instrumentation.anthropic"]
