"""AWS Bedrock through boto3 ``bedrock-runtime``: the fake's wire format parsed by the real botocore, then the
instrumentation's call-shape matrix.

Expected texts and token counts are re-derived from the documented formulas (mltrack_otel/testing/wire/bedrock.py
and fake_provider's docstring), not read from the fake's code.
"""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import botocore.exceptions
import genai_prices
import pytest
import urllib3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.parsers import ResponseParserError
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, server_attributes
from opentelemetry.trace import StatusCode

from mltrack_otel import guard, semconv
from mltrack_otel.errors import BudgetExceededError
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.testing.fake_provider import FakeProvider
from tests.instr_fixtures import STREAM_CHUNKS as N
from tests.instr_fixtures import (
    abandon_stream,
    attrs,
    echo_text,
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
from tests.traced import Traced

DROP_AFTER = 3
CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
NOVA = "amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"
TITAN = "amazon.titan-text-express-v1"
MISTRAL = "mistral.mistral-large-2402-v1:0"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
WEATHER_ARGS = {"city": "example", "days": 1}
CONVERSE_TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": WEATHER_SCHEMA}}}]}


def ptok(*texts: str) -> int:
    """Prompt tokens: 3 + word count per segment."""
    return sum(3 + len(t.split()) for t in texts)


def client(fake: FakeProvider, service: str = "bedrock-runtime") -> Any:
    return boto3.client(
        service,
        endpoint_url=fake.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def brt(fake: FakeProvider) -> Any:
    fake.clear()
    return client(fake)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"text": text}]}]


def invoke_json(response: dict) -> Any:
    return json.loads(response["body"].read())


def stream_chunks(response: dict) -> list[dict]:
    return [json.loads(event["chunk"]["bytes"]) for event in response["body"]]


def anthropic_body(text: str, **extra: Any) -> str:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 512,
        "messages": [{"role": "user", "content": text}],
    }
    return json.dumps(body | extra)


def no_ids(value: Any) -> Any:
    """A chunk without the ids the fake numbers per request."""
    if isinstance(value, dict):
        return {k: no_ids(v) for k, v in value.items() if k != "id"}
    return [no_ids(v) for v in value] if isinstance(value, list) else value


def llama_prompt(text: str) -> str:
    """A Llama 3 chat prompt; the fake counts it as one segment without the <|...|> markers."""
    return (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        f"{text}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


# ------------------------------------------------------------------------------------------------
# The wire format, parsed by the real botocore
# ------------------------------------------------------------------------------------------------


def test_converse_text_usage_and_encoded_model_path(fake, brt):
    question = "what is the capital of France"
    r = brt.converse(modelId=CLAUDE, system=[{"text": "Be terse."}], messages=user(question))
    assert r["output"]["message"] == {"role": "assistant", "content": [{"text": echo_text(question)}]}
    assert r["stopReason"] == "end_turn"
    assert r["usage"] == {
        "inputTokens": ptok("Be terse.", question),
        "outputTokens": N,
        "totalTokens": ptok("Be terse.", question) + N,
    }
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert fake.requests[-1].path == "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert fake.requests[-1].json["system"] == [{"text": "Be terse."}]


def test_converse_arn_model_id(fake, brt):
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-lite-v1:0"
    r = brt.converse(modelId=arn, messages=user("hi"))
    assert r["output"]["message"]["content"][0]["text"] == echo_text("hi")
    assert fake.requests[-1].path.startswith("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference")


def test_converse_max_tokens_truncates(brt):
    r = brt.converse(modelId=NOVA, messages=user("one two three"), inferenceConfig={"maxTokens": 3})
    assert r["stopReason"] == "max_tokens"
    assert r["output"]["message"]["content"][0]["text"] == "Echo: one two"
    assert r["usage"]["outputTokens"] == 3


def test_converse_tool_use(brt):
    r = brt.converse(modelId=CLAUDE, messages=user("weather? [[scenario:tool]]"), toolConfig=CONVERSE_TOOLS)
    assert r["stopReason"] == "tool_use"
    (block,) = r["output"]["message"]["content"]
    assert block["toolUse"]["name"] == "get_weather" and block["toolUse"]["input"] == WEATHER_ARGS
    assert block["toolUse"]["toolUseId"].startswith("tooluse_")
    assert r["usage"]["outputTokens"] == min(N, len(json.dumps(WEATHER_ARGS)))


def test_converse_tool_choice_forces_and_tool_result_answers(brt):
    forced = CONVERSE_TOOLS | {"toolChoice": {"any": {}}}
    r = brt.converse(modelId=NOVA, messages=user("weather?"), toolConfig=forced)
    assert r["stopReason"] == "tool_use"
    call = r["output"]["message"]["content"][0]["toolUse"]
    result = {"toolResult": {"toolUseId": call["toolUseId"], "content": [{"text": "sunny and warm"}]}}
    messages = [*user("weather? [[scenario:tool]]"), r["output"]["message"], {"role": "user", "content": [result]}]
    r2 = brt.converse(modelId=NOVA, messages=messages, toolConfig=CONVERSE_TOOLS)
    assert r2["stopReason"] == "end_turn"  # the conversation ends with a tool result: answer, do not call again
    # segments: the question, the assistant tool call (no text), the tool result's text
    assert r2["usage"]["inputTokens"] == ptok("weather? [[scenario:tool]]", "", "sunny and warm")


def test_converse_prompt_cache_write_then_read(fake, brt):
    system = [{"text": "You answer questions about a long document."}, {"cachePoint": {"type": "default"}}]
    prefix = ptok("You answer questions about a long document.")
    first = brt.converse(modelId=CLAUDE, system=system, messages=user("question one"))
    assert first["usage"]["cacheWriteInputTokens"] == prefix and first["usage"]["cacheReadInputTokens"] == 0
    assert first["usage"]["inputTokens"] == ptok("question one")  # input EXCLUDES the cache, as on Bedrock
    second = brt.converse(modelId=CLAUDE, system=system, messages=user("question two"))
    assert second["usage"]["cacheReadInputTokens"] == prefix and second["usage"]["cacheWriteInputTokens"] == 0
    total = second["usage"]["inputTokens"] + prefix + N
    assert second["usage"]["totalTokens"] == total


@pytest.mark.parametrize("scenario", ["cache-read", "cache-write"])
def test_converse_cache_scenarios(brt, scenario):
    r = brt.converse(
        modelId=NOVA,
        messages=[
            *user("earlier turn"),
            {"role": "assistant", "content": [{"text": "ok"}]},
            *user(f"now [[scenario:{scenario}]]"),
        ],
    )
    prefix = ptok("earlier turn", "ok")  # no cachePoint: every segment but the last
    usage = r["usage"]
    key = "cacheReadInputTokens" if scenario == "cache-read" else "cacheWriteInputTokens"
    assert usage[key] == prefix
    assert usage["inputTokens"] == ptok(f"now [[scenario:{scenario}]]")


def test_converse_stream_events(brt):
    question = "tell me a story"
    r = brt.converse_stream(modelId=CLAUDE, messages=user(question))
    events = list(r["stream"])
    names = [next(iter(e)) for e in events]
    assert names == ["messageStart", *["contentBlockDelta"] * N, "contentBlockStop", "messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == echo_text(question)
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"] == {
        "inputTokens": ptok(question),
        "outputTokens": N,
        "totalTokens": ptok(question) + N,
    }


def test_converse_stream_tool_use(brt):
    r = brt.converse_stream(modelId=NOVA, messages=user("weather [[scenario:tool]]"), toolConfig=CONVERSE_TOOLS)
    events = list(r["stream"])
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "get_weather" and start["contentBlockIndex"] == 0
    pieces = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e]
    assert json.loads("".join(pieces)) == WEATHER_ARGS
    assert len(pieces) == min(N, len(json.dumps(WEATHER_ARGS)))
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"


def test_converse_stream_error_event(brt):
    r = brt.converse_stream(modelId=NOVA, messages=user("x [[scenario:stream-error]]"))
    seen = []
    with pytest.raises(botocore.exceptions.EventStreamError) as info:
        for event in r["stream"]:
            seen.append(event)
    assert info.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert sum("contentBlockDelta" in e for e in seen) == DROP_AFTER


def test_converse_stream_drop(brt):
    r = brt.converse_stream(modelId=NOVA, messages=user("x [[scenario:drop]]"))
    seen = []
    with pytest.raises(urllib3.exceptions.ProtocolError):  # botocore does not wrap the broken event stream
        for event in r["stream"]:
            seen.append(event)
    assert sum("contentBlockDelta" in e for e in seen) == DROP_AFTER


@pytest.mark.parametrize(
    ("scenario", "status", "code"),
    [
        ("error-400", 400, "ValidationException"),
        ("error-401", 403, "UnrecognizedClientException"),
        ("error-429", 429, "ThrottlingException"),
        ("error-500", 500, "InternalServerException"),
        ("error-529", 503, "ServiceUnavailableException"),
    ],
)
def test_errors_are_client_errors(brt, scenario, status, code):
    with pytest.raises(botocore.exceptions.ClientError) as info:
        brt.converse(modelId=NOVA, messages=user(f"x [[scenario:{scenario}]]"))
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert info.value.response["ResponseMetadata"]["RequestId"].startswith("fake-")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        brt.invoke_model(modelId=CLAUDE, body=anthropic_body(f"x [[scenario:{scenario}]]"))
    assert info.value.response["Error"]["Code"] == code


def test_invoke_anthropic(fake, brt):
    question = "hello from the invoke api"
    r = brt.invoke_model(modelId=CLAUDE, body=anthropic_body(question, system="Be brief."))
    body = invoke_json(r)
    assert body["type"] == "message" and body["model"] == "claude-3-5-haiku-20241022"
    assert body["content"] == [{"type": "text", "text": echo_text(question)}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["input_tokens"] == ptok("Be brief.", question) and body["usage"]["output_tokens"] == N
    headers = r["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == str(ptok("Be brief.", question))
    assert headers["x-amzn-bedrock-output-token-count"] == str(N)
    assert fake.requests[-1].path.endswith("/invoke")


def test_invoke_anthropic_tool_and_cache(brt):
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    system = [{"type": "text", "text": "Long cached instructions here.", "cache_control": {"type": "ephemeral"}}]
    body = invoke_json(
        brt.invoke_model(
            modelId=CLAUDE,
            body=anthropic_body(
                "weather [[scenario:cache-read]]", tools=tools, system=system, tool_choice={"type": "any"}
            ),
        )
    )
    assert body["stop_reason"] == "tool_use"
    assert body["content"][0] == {"type": "text", "text": "Calling get_weather."}
    assert body["content"][1]["input"] == WEATHER_ARGS
    assert body["usage"]["cache_read_input_tokens"] == ptok("Long cached instructions here.")
    assert body["usage"]["input_tokens"] == ptok("weather [[scenario:cache-read]]")
    assert body["usage"]["output_tokens"] == 2 + min(N, len(json.dumps(WEATHER_ARGS)))


def test_invoke_llama_titan_nova(brt):
    question = "name three colours"
    llama = invoke_json(
        brt.invoke_model(modelId=LLAMA, body=json.dumps({"prompt": llama_prompt(question), "max_gen_len": 5}))
    )
    assert llama == {
        "generation": echo_text(question, 5),
        "prompt_token_count": ptok(f"user {question} assistant"),
        "generation_token_count": 5,
        "stop_reason": "length",
    }
    titan = invoke_json(brt.invoke_model(modelId=TITAN, body=json.dumps({"inputText": question})))
    assert titan == {
        "inputTextTokenCount": ptok(question),
        "results": [{"tokenCount": N, "outputText": echo_text(question), "completionReason": "FINISH"}],
    }
    nova_body = {"schemaVersion": "messages-v1", "messages": user(question), "inferenceConfig": {"max_new_tokens": 4}}
    nova = invoke_json(brt.invoke_model(modelId="us.amazon.nova-pro-v1:0", body=json.dumps(nova_body)))
    assert nova["output"]["message"]["content"] == [{"text": echo_text(question, 4)}]
    assert nova["stopReason"] == "max_tokens"
    assert nova["usage"] == {"inputTokens": ptok(question), "outputTokens": 4, "totalTokens": ptok(question) + 4}


def test_invoke_nova_cache_counts(brt):
    body = {
        "system": [{"text": "cached system words"}, {"cachePoint": {"type": "default"}}],
        "messages": user("q [[scenario:cache-write]]"),
    }
    nova = invoke_json(brt.invoke_model(modelId=NOVA, body=json.dumps(body)))
    assert nova["usage"]["cacheWriteInputTokenCount"] == ptok("cached system words")
    assert nova["usage"]["cacheReadInputTokenCount"] == 0
    assert nova["usage"]["inputTokens"] == ptok("q [[scenario:cache-write]]")


def test_invoke_titan_embedding(brt):
    r = brt.invoke_model(
        modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "embed these words", "dimensions": 8})
    )
    body = invoke_json(r)
    assert len(body["embedding"]) == 8 and all(-1 <= v <= 1 for v in body["embedding"])
    assert body["inputTextTokenCount"] == ptok("embed these words")


def test_invoke_stream_anthropic(brt):
    question = "stream this please"
    r = brt.invoke_model_with_response_stream(modelId=CLAUDE, body=anthropic_body(question))
    chunks = stream_chunks(r)
    types = [c["type"] for c in chunks]
    assert types == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * N,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta") == echo_text(question)
    assert chunks[0]["message"]["usage"]["input_tokens"] == ptok(question)
    assert chunks[-2]["usage"]["output_tokens"] == N
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["inputTokenCount"] == ptok(question) and metrics["outputTokenCount"] == N
    assert all("amazon-bedrock-invocationMetrics" not in c for c in chunks[:-1])


def test_invoke_stream_llama_titan_nova(brt):
    question = "count to three"
    llama = stream_chunks(
        brt.invoke_model_with_response_stream(modelId=LLAMA, body=json.dumps({"prompt": llama_prompt(question)}))
    )
    assert "".join(c["generation"] for c in llama) == echo_text(question)
    assert llama[0]["prompt_token_count"] == ptok(f"user {question} assistant")
    assert all(c["prompt_token_count"] is None for c in llama[1:])
    assert llama[-1]["generation_token_count"] == N and llama[-1]["stop_reason"] == "stop"
    titan = stream_chunks(
        brt.invoke_model_with_response_stream(
            modelId=TITAN, body=json.dumps({"inputText": question, "textGenerationConfig": {"maxTokenCount": 7}})
        )
    )
    assert "".join(c["outputText"] for c in titan) == echo_text(question, 7)
    assert titan[0]["inputTextTokenCount"] == ptok(question)
    assert titan[-1]["totalOutputTextTokenCount"] == 7 and titan[-1]["completionReason"] == "LENGTH"
    assert titan[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 7
    nova = stream_chunks(
        brt.invoke_model_with_response_stream(modelId=NOVA, body=json.dumps({"messages": user(question)}))
    )
    assert [next(iter(c)) for c in nova][:2] == ["messageStart", "contentBlockDelta"]
    assert "".join(c["contentBlockDelta"]["delta"]["text"] for c in nova if "contentBlockDelta" in c) == (
        echo_text(question)
    )
    assert nova[-1]["metadata"]["usage"]["outputTokens"] == N
    assert nova[-1]["amazon-bedrock-invocationMetrics"]["inputTokenCount"] == ptok(question)


def test_invoke_stream_error_event(brt):
    r = brt.invoke_model_with_response_stream(modelId=LLAMA, body=json.dumps({"prompt": "x [[scenario:stream-error]]"}))
    seen = []
    with pytest.raises(botocore.exceptions.EventStreamError) as info:
        for event in r["body"]:
            seen.append(event)
    assert info.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert len(seen) == DROP_AFTER


def test_event_stream_chunk_bytes_decoded(brt):
    # The chunk payload on the wire is JSON {"bytes": base64}; botocore hands back the decoded bytes.
    r = brt.invoke_model_with_response_stream(modelId=TITAN, body=json.dumps({"inputText": "a b"}))
    first = next(iter(r["body"]))["chunk"]["bytes"]
    assert isinstance(first, bytes) and json.loads(first)["outputText"] == "Echo:"
    assert r["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"


def test_invoke_cohere_embedding_counts_only_in_headers(brt):
    r = brt.invoke_model(modelId="cohere.embed-english-v3", body=json.dumps({"texts": ["a b", "c"], "input_type": "x"}))
    body = invoke_json(r)
    assert len(body["embeddings"]) == 2 and "usage" not in body
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == str(ptok("a b", "c"))


def test_invoke_mistral_has_no_usage_in_body(brt):
    r = brt.invoke_model(modelId=MISTRAL, body=json.dumps({"prompt": "<s>[INST] tell me [/INST]", "max_tokens": 5}))
    assert invoke_json(r) == {"outputs": [{"text": echo_text("tell me", 5), "stop_reason": "length"}]}
    headers = r["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == str(ptok("tell me"))
    assert headers["x-amzn-bedrock-output-token-count"] == "5"
    chunks = stream_chunks(brt.invoke_model_with_response_stream(modelId=MISTRAL, body=json.dumps({"prompt": "hi"})))
    assert "".join(c["outputs"][0]["text"] for c in chunks) == echo_text("hi")
    assert chunks[-1]["outputs"][0]["stop_reason"] == "stop"
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == N


# ------------------------------------------------------------------------------------------------
# The instrumentation
# ------------------------------------------------------------------------------------------------


bed = traced_fixture("bedrock")  # spans priced by the CostSpanProcessor


def price(model: str, tokens_in: int, tokens_out: int, read: int = 0, write: int = 0) -> float:
    usage = genai_prices.Usage(
        input_tokens=tokens_in, output_tokens=tokens_out, cache_read_tokens=read, cache_write_tokens=write
    )
    return float(genai_prices.calc_price(usage, model_ref=model, provider_id="aws").total_price)


def usage(span) -> tuple[int, int]:
    a = attrs(span)
    return a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS], a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS]


def test_converse_span(bed, fake):
    question = "what is the capital of France"
    r = client(fake).converse(
        modelId=CLAUDE,
        system=[{"text": "Be terse."}],
        messages=user(question),
        inferenceConfig={"maxTokens": 300, "temperature": 0.5, "topP": 0.9, "stopSequences": ["STOP"]},
    )
    span = bed.one()
    a = model_call_attrs(span, "chat", "aws.bedrock", CLAUDE)
    assert gen_ai.GEN_AI_RESPONSE_MODEL not in a  # Converse names no model; the request's modelId is priced
    assert a[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] == 300 and a[gen_ai.GEN_AI_REQUEST_TEMPERATURE] == 0.5
    assert a[gen_ai.GEN_AI_REQUEST_TOP_P] == 0.9 and a[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] == ("STOP",)
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert usage(span) == (r["usage"]["inputTokens"], r["usage"]["outputTokens"]) == (ptok("Be terse.", question), N)
    assert a[server_attributes.SERVER_ADDRESS] == fake.host and a[server_attributes.SERVER_PORT] == fake.port
    assert validate_content("system", a[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS]) == [
        {"type": "text", "content": "Be terse."}
    ]
    assert validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": question}]}
    ]
    assert output_text(span) == echo_text(question) and output_message(span)["finish_reason"] == "stop"
    assert a[semconv.LLM_COST_TOTAL] == pytest.approx(price(CLAUDE, ptok("Be terse.", question), N), rel=1e-9)


def test_converse_tool_call_and_result(bed, fake):
    brt = client(fake)
    first = brt.converse(modelId=NOVA, messages=user("weather? [[scenario:tool]]"), toolConfig=CONVERSE_TOOLS)
    call = first["output"]["message"]["content"][0]["toolUse"]
    span = bed.one()
    a = attrs(span)
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_use",)
    assert output_message(span) == {
        "role": "assistant",
        "parts": [{"type": "tool_call", "id": call["toolUseId"], "name": "get_weather", "arguments": WEATHER_ARGS}],
        "finish_reason": "tool_call",
    }
    assert validate_content("tools", a[gen_ai.GEN_AI_TOOL_DEFINITIONS]) == [
        {"type": "function", "name": "get_weather", "description": "", "parameters": WEATHER_SCHEMA}
    ]
    bed.exporter.clear()
    result = {"toolResult": {"toolUseId": call["toolUseId"], "content": [{"text": "sunny"}, {"json": {"c": 21}}]}}
    history = [*user("weather?"), first["output"]["message"], {"role": "user", "content": [result]}]
    brt.converse(modelId=NOVA, messages=history, toolConfig=CONVERSE_TOOLS)
    inputs = validate_content("input", attrs(bed.one())[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert [m["role"] for m in inputs] == ["user", "assistant", "tool"]
    assert inputs[1]["parts"][0]["type"] == "tool_call"
    assert inputs[2]["parts"] == [
        {"type": "tool_call_response", "id": call["toolUseId"], "response": ["sunny", {"c": 21}]}
    ]


@pytest.mark.parametrize("scenario", ["cache-read", "cache-write"])
def test_converse_cache_tokens_priced(bed, fake, scenario):
    system = [{"text": "A long reusable system prompt here."}, {"cachePoint": {"type": "default"}}]
    r = client(fake).converse(modelId=CLAUDE, system=system, messages=user(f"q [[scenario:{scenario}]]"))
    cached = ptok("A long reusable system prompt here.")
    total_in = ptok(f"q [[scenario:{scenario}]]") + cached  # the convention's input includes the cache
    assert r["usage"]["inputTokens"] == total_in - cached
    a = attrs(bed.one())
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == total_in
    read, write = (cached, 0) if scenario == "cache-read" else (0, cached)
    assert a.get(gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, 0) == read
    assert a.get(gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, 0) == write
    assert a[semconv.LLM_COST_TOTAL] == pytest.approx(price(CLAUDE, total_in, N, read, write), rel=1e-9)


@pytest.mark.parametrize(
    "model",
    [
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "eu.anthropic.claude-3-5-haiku-20241022-v1:0",
        "apac.amazon.nova-pro-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
    ],
)
def test_inference_profiles_priced(bed, fake, model):
    client(fake).converse(modelId=model, messages=user("price me"))
    a = attrs(bed.one())
    assert a[gen_ai.GEN_AI_REQUEST_MODEL] == model
    assert a[semconv.LLM_COST_TOTAL] > 0
    assert a[semconv.LLM_COST_TOTAL] == pytest.approx(price(model, ptok("price me"), N), rel=1e-9)


def test_global_profile_priced_apart_from_regional(bed, fake):
    brt = client(fake)
    for model in ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"):
        brt.converse(modelId=model, messages=user("price me"))
    costs = {s.attributes[gen_ai.GEN_AI_REQUEST_MODEL]: s.attributes[semconv.LLM_COST_TOTAL] for s in bed.spans()}
    assert (
        costs["global.anthropic.claude-sonnet-4-5-20250929-v1:0"]
        < costs["us.anthropic.claude-sonnet-4-5-20250929-v1:0"]
    )


def test_converse_stream_recorded_and_unchanged(bed, fake):
    brt = client(fake)
    question = "tell me a story"
    uninstrument(["bedrock"])
    plain = list(brt.converse_stream(modelId=CLAUDE, messages=user(question))["stream"])
    instrument(["bedrock"], tracer_provider=bed.provider)
    events = list(brt.converse_stream(modelId=CLAUDE, messages=user(question))["stream"])
    assert events == plain  # the caller sees exactly the SDK's events
    span = bed.one()
    a = attrs(span)
    assert a[gen_ai.GEN_AI_REQUEST_STREAM] is True and a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert usage(span) == (ptok(question), N)
    assert output_text(span) == echo_text(question) and output_message(span)["finish_reason"] == "stop"
    assert a[semconv.LLM_COST_TOTAL] == pytest.approx(price(CLAUDE, ptok(question), N), rel=1e-9)
    assert gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK in a


def test_converse_stream_tool_call(bed, fake):
    r = client(fake).converse_stream(modelId=NOVA, messages=user("w [[scenario:tool]]"), toolConfig=CONVERSE_TOOLS)
    start = next(e for e in r["stream"] if "contentBlockStart" in e)["contentBlockStart"]["start"]["toolUse"]
    for _ in r["stream"]:
        pass
    span = bed.one()
    assert output_message(span)["parts"] == [
        {"type": "tool_call", "id": start["toolUseId"], "name": "get_weather", "arguments": WEATHER_ARGS}
    ]
    assert output_message(span)["finish_reason"] == "tool_call"


def test_converse_stream_break_and_close_ends_once_estimated(bed, fake):
    r = client(fake).converse_stream(modelId=CLAUDE, messages=user("stop me early"))
    for i, _ in enumerate(r["stream"]):
        if i == 3:
            break
    r["stream"].close()
    r["stream"].close()
    span = bed.one()
    stopped_early_attrs(span)
    assert output_message(span)["finish_reason"] == "incomplete"


@pytest.mark.parametrize("operation", ["converse_stream", "invoke_model_with_response_stream"])
def test_stream_closed_after_the_last_event_is_complete(bed, fake, operation):
    brt = client(fake)
    if operation == "converse_stream":
        stream = brt.converse_stream(modelId=CLAUDE, messages=user("all of it"))["stream"]
        last = lambda event: "metadata" in event  # noqa: E731
    else:
        stream = brt.invoke_model_with_response_stream(modelId=CLAUDE, body=anthropic_body("all of it"))["body"]
        last = lambda event: b"amazon-bedrock-invocationMetrics" in event["chunk"]["bytes"]  # noqa: E731
    for event in stream:
        if last(event):
            break  # the provider has said everything; the caller stops before the stream's own end
    stream.close()
    a = attrs(bed.one())
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert semconv.MLTRACK_USAGE_SOURCE not in a or a[semconv.MLTRACK_USAGE_SOURCE] == "provider"
    assert usage(bed.one()) == (ptok("all of it"), N)


def test_converse_stream_dropped_unread_ends_on_collection(bed, fake):
    abandon_stream(lambda: client(fake).converse_stream(modelId=CLAUDE, messages=user("never read"))["stream"])
    assert attrs(bed.one())[semconv.MLTRACK_STREAM_COMPLETE] is False


@pytest.mark.parametrize("name", ["stream-error", "drop"])
def test_converse_stream_failing_midway(bed, fake, name):
    r = client(fake).converse_stream(modelId=NOVA, messages=user(f"x [[scenario:{name}]]"))
    received = []
    with pytest.raises(Exception) as caught:  # botocore's EventStreamError or urllib3's error
        for event in r["stream"]:
            if "contentBlockDelta" in event:
                received.append(event["contentBlockDelta"]["delta"]["text"])
    span = bed.one()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[semconv.MLTRACK_STREAM_COMPLETE] is False
    assert output_text(span) == "".join(received) != ""
    assert span.events[0].attributes["exception.type"].endswith(type(caught.value).__name__)
    assert attrs(span)[semconv.MLTRACK_USAGE_SOURCE] == "estimated"


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        ("error-400", "ValidationException"),
        ("error-429", "ThrottlingException"),
        ("error-529", "ServiceUnavailableException"),
    ],
)
def test_client_errors(bed, fake, scenario, code):
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client(fake).converse(modelId=NOVA, messages=user(f"x [[scenario:{scenario}]]"))
    assert caught.value.response["Error"]["Code"] == code  # the caller's exception, unchanged
    span = bed.one()
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].attributes["exception.type"].endswith(code)
    assert gen_ai.GEN_AI_USAGE_INPUT_TOKENS not in attrs(span)


@pytest.mark.parametrize("operation", ["converse", "invoke_model"])
def test_connection_dropped_before_the_answer(bed, fake, operation):
    brt = client(fake)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        if operation == "converse":
            brt.converse(modelId=NOVA, messages=user("x [[scenario:drop]]"))
        else:
            brt.invoke_model(modelId=TITAN, body=json.dumps({"inputText": "x [[scenario:drop]]"}))
    span = bed.one()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[error_attributes.ERROR_TYPE] == "botocore.ConnectionClosedError"
    assert gen_ai.GEN_AI_USAGE_INPUT_TOKENS not in attrs(span)  # nothing came back: no usage to count


def test_error_type_is_the_aws_code(bed, fake):
    brt = client(fake)
    with pytest.raises(botocore.exceptions.ClientError):
        brt.converse(modelId=NOVA, messages=user("x [[scenario:error-429]]"))
    assert attrs(bed.one())[error_attributes.ERROR_TYPE] == "ThrottlingException"
    bed.exporter.clear()
    with pytest.raises(botocore.exceptions.EventStreamError):  # an exception message inside the event stream
        for _ in brt.converse_stream(modelId=NOVA, messages=user("x [[scenario:stream-error]]"))["stream"]:
            pass
    assert attrs(bed.one())[error_attributes.ERROR_TYPE] == "modelStreamErrorException"


def test_invoke_anthropic_body_readable_and_recorded(bed, fake):
    question = "hello from the invoke api"
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    r = client(fake).invoke_model(
        modelId=CLAUDE, body=anthropic_body(question, system="Be brief.", tools=tools, temperature=0.2)
    )
    body = invoke_json(r)  # the caller still reads the whole body
    assert body["content"] == [{"type": "text", "text": echo_text(question)}]
    span = bed.one()
    a = attrs(span)
    assert a[gen_ai.GEN_AI_REQUEST_MODEL] == CLAUDE and gen_ai.GEN_AI_RESPONSE_MODEL not in a
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == body["id"] and a[gen_ai.GEN_AI_REQUEST_TEMPERATURE] == 0.2
    assert a[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] == 512 and a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert usage(span) == (ptok("Be brief.", question), N)
    assert validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES])[0]["parts"][0]["content"] == question
    assert validate_content("tools", a[gen_ai.GEN_AI_TOOL_DEFINITIONS])[0]["name"] == "get_weather"
    assert output_text(span) == echo_text(question)
    assert a[semconv.LLM_COST_TOTAL] == pytest.approx(price(CLAUDE, ptok("Be brief.", question), N), rel=1e-9)


def test_invoke_anthropic_cache_and_tool(bed, fake):
    system = [{"type": "text", "text": "Long cached instructions here.", "cache_control": {"type": "ephemeral"}}]
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    text = "weather [[scenario:cache-write]]"
    body = anthropic_body(text, tools=tools, system=system, tool_choice={"type": "any"})
    invoke_json(client(fake).invoke_model(modelId=CLAUDE, body=body))
    span = bed.one()
    a = attrs(span)
    cached = ptok("Long cached instructions here.")
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == ptok(text) + cached
    assert a[gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == cached
    assert (
        output_message(span)["parts"][-1]["arguments"] == WEATHER_ARGS
        and output_message(span)["finish_reason"] == "tool_call"
    )


@pytest.mark.parametrize(
    ("model", "body", "operation", "expected_in", "expected_out", "stop"),
    [
        (
            LLAMA,
            {"prompt": llama_prompt("hi there"), "max_gen_len": 4},
            "text_completion",
            ptok("user hi there assistant"),
            4,
            "length",
        ),
        (
            TITAN,
            {"inputText": "hi there", "textGenerationConfig": {"maxTokenCount": 50, "temperature": 0.1}},
            "text_completion",
            ptok("hi there"),
            N,
            "FINISH",
        ),
        (
            "us.amazon.nova-pro-v1:0",
            {"messages": user("hi there"), "inferenceConfig": {"max_new_tokens": 9}},
            "chat",
            ptok("hi there"),
            9,
            "max_tokens",
        ),
    ],
)
def test_invoke_native_bodies(bed, fake, model, body, operation, expected_in, expected_out, stop):
    client(fake).invoke_model(modelId=model, body=json.dumps(body))["body"].read()
    span = bed.one()
    a = attrs(span)
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == operation and a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == (stop,)
    assert usage(span) == (expected_in, expected_out)
    assert a[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] == (expected_out if stop != "FINISH" else 50)
    assert output_text(span) == echo_text("hi there", expected_out)
    assert validate_content("input", a[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert a[semconv.LLM_COST_TOTAL] == pytest.approx(price(model, expected_in, expected_out), rel=1e-9)


def test_invoke_embeddings(bed, fake):
    brt = client(fake)
    brt.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "embed these words"}))
    brt.invoke_model(modelId="cohere.embed-english-v3", body=json.dumps({"texts": ["a b", "c"], "input_type": "x"}))
    titan, cohere = sorted(bed.spans(), key=lambda s: s.start_time)
    assert attrs(titan)[gen_ai.GEN_AI_OPERATION_NAME] == "embeddings"
    assert usage(titan) == (ptok("embed these words"), 0)
    assert usage(cohere) == (ptok("a b", "c"), 0)  # from the X-Amzn-Bedrock-Input-Token-Count header
    assert gen_ai.GEN_AI_OUTPUT_MESSAGES not in attrs(cohere)


def test_converse_media_content(bed, fake):
    blocks = [
        {"text": "what is in these?"},
        {"image": {"format": "png", "source": {"bytes": b"\x89PNG fake"}}},
        {"document": {"format": "pdf", "name": "report", "source": {"s3Location": {"uri": "s3://bucket/report.pdf"}}}},
        {"cachePoint": {"type": "default"}},
    ]
    client(fake).converse(modelId=NOVA, messages=[{"role": "user", "content": blocks}])
    (message,) = validate_content("input", attrs(bed.one())[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert message["parts"] == [
        {"type": "text", "content": "what is in these?"},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "iVBORyBmYWtl"},
        {"type": "uri", "modality": "document", "uri": "s3://bucket/report.pdf"},
    ]


def test_invoke_mistral_usage_from_headers_and_metrics(bed, fake):
    brt = client(fake)
    body = json.dumps({"prompt": "<s>[INST] tell me [/INST]", "max_tokens": 5})
    assert invoke_json(brt.invoke_model(modelId=MISTRAL, body=body))["outputs"][0]["stop_reason"] == "length"
    for _ in brt.invoke_model_with_response_stream(modelId=MISTRAL, body=body)["body"]:
        pass
    plain, streamed = sorted(bed.spans(), key=lambda s: s.start_time)
    for span in (plain, streamed):
        a = attrs(span)
        assert usage(span) == (ptok("tell me"), 5)  # the headers / the last chunk's invocation metrics
        assert (
            a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("length",)
            and output_message(span)["finish_reason"] == "length"
        )
        assert output_text(span) == echo_text("tell me", 5)
        assert a[semconv.LLM_COST_TOTAL] == pytest.approx(price(MISTRAL, ptok("tell me"), 5), rel=1e-9)


def test_invoke_file_body_is_not_consumed(bed, fake):
    payload = json.dumps({"inputText": "from a file"}).encode()
    client(fake).invoke_model(modelId=TITAN, body=io.BytesIO(payload))
    assert fake.requests[-1].json == {"inputText": "from a file"}  # botocore still sent the whole file
    assert usage(bed.one()) == (ptok("from a file"), N)


@pytest.mark.parametrize(
    ("model", "body", "expected_in"),
    [
        (CLAUDE, anthropic_body("stream this"), ptok("stream this")),
        (LLAMA, json.dumps({"prompt": llama_prompt("stream this")}), ptok("user stream this assistant")),
        (TITAN, json.dumps({"inputText": "stream this"}), ptok("stream this")),
        (NOVA, json.dumps({"messages": user("stream this")}), ptok("stream this")),
    ],
)
def test_invoke_stream_families(bed, fake, model, body, expected_in):
    brt = client(fake)
    uninstrument(["bedrock"])
    plain = [e["chunk"]["bytes"] for e in brt.invoke_model_with_response_stream(modelId=model, body=body)["body"]]
    instrument(["bedrock"], tracer_provider=bed.provider)
    seen = [e["chunk"]["bytes"] for e in brt.invoke_model_with_response_stream(modelId=model, body=body)["body"]]
    assert [no_ids(json.loads(c)) for c in seen] == [no_ids(json.loads(c)) for c in plain]  # the same chunks
    span = bed.one()
    a = attrs(span)
    assert usage(span) == (expected_in, N) and a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert semconv.MLTRACK_USAGE_SOURCE not in a or a[semconv.MLTRACK_USAGE_SOURCE] == "provider"
    assert output_text(span) == echo_text("stream this")
    assert a[semconv.LLM_COST_TOTAL] == pytest.approx(price(model, expected_in, N), rel=1e-9)


def test_invoke_stream_break_keeps_reported_input(bed, fake):
    r = client(fake).invoke_model_with_response_stream(modelId=CLAUDE, body=anthropic_body("a b c d"))
    for i, _ in enumerate(r["body"]):
        if i == 4:
            break
    r["body"].close()
    a = attrs(bed.one())
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is False and a[semconv.MLTRACK_USAGE_SOURCE] == "estimated"
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == ptok("a b c d")  # message_start reported it before the break


def test_invoke_stream_error(bed, fake):
    r = client(fake).invoke_model_with_response_stream(
        modelId=LLAMA, body=json.dumps({"prompt": "x [[scenario:stream-error]]"})
    )
    with pytest.raises(botocore.exceptions.EventStreamError):
        for _ in r["body"]:
            pass
    span = bed.one()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == ptok("x [[scenario:stream-error]]")  # first chunk's count


def test_capture_off(bed, fake):
    use_settings(llm_log_prompts=False, llm_log_responses=False)
    client(fake).converse(modelId=NOVA, system=[{"text": "s"}], messages=user("hi"), toolConfig=CONVERSE_TOOLS)
    a = attrs(bed.one())
    keys = {gen_ai.GEN_AI_INPUT_MESSAGES, gen_ai.GEN_AI_OUTPUT_MESSAGES, gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS}
    assert not (keys | {gen_ai.GEN_AI_TOOL_DEFINITIONS}) & set(a)
    assert usage(bed.one()) == (ptok("s", "hi"), N)


@pytest.mark.parametrize(
    "params",
    [
        {"messages": "not a list"},
        {"messages": [1, {"role": "user", "content": "not blocks"}]},
        {"messages": [], "inferenceConfig": ["not", "a", "dict"]},
    ],
)
def test_invalid_params_are_botocore_s_to_refuse(bed, fake, params):
    with pytest.raises(botocore.exceptions.ParamValidationError):  # raised inside the call, after our route
        client(fake).converse(modelId=NOVA, **params)
    assert fake.requests == []
    assert not [k for k in guard.health() if k.startswith("errors.")]  # nothing of ours failed on the junk
    assert bed.one().status.status_code is StatusCode.ERROR


def test_budget_refused_before_sending(bed, fake):
    brt = client(fake)
    with token_budget(10, spent=20):
        with pytest.raises(BudgetExceededError):
            brt.converse(modelId=NOVA, messages=user("hi"))
        with pytest.raises(BudgetExceededError):
            brt.invoke_model_with_response_stream(modelId=TITAN, body=json.dumps({"inputText": "hi"}))
    assert fake.requests == [] and bed.spans() == []


def test_other_services_untouched(bed, fake):
    # An STS (query protocol) and an S3 (rest-xml) client pointed at the fake: their calls go straight through.
    for service, call in (("sts", lambda c: c.get_caller_identity()), ("s3", lambda c: c.list_buckets())):
        with pytest.raises((botocore.exceptions.ClientError, ResponseParserError)):  # unknown to the fake
            call(client(fake, service))
    assert [r.path for r in fake.requests] == ["/", "/"]
    assert bed.spans() == []
    bedrock_control = client(fake, "bedrock")  # the control-plane service: not a model call either
    with pytest.raises(botocore.exceptions.ClientError):
        bedrock_control.list_foundation_models()
    assert bed.spans() == []


def test_uninstrument_restores_the_original_method(fake, settings):
    original = BaseClient.__dict__["_make_api_call"]
    traced = Traced()
    instrument(["bedrock"], tracer_provider=traced.provider)
    assert BaseClient.__dict__["_make_api_call"] is not original
    uninstrument(["bedrock"])
    assert BaseClient.__dict__["_make_api_call"] is original
    client(fake).converse(modelId=NOVA, messages=user("hi"))
    assert traced.spans() == []


# ------------------------------------------------------------------------------------------------
# Nested under a framework: counted once
# ------------------------------------------------------------------------------------------------


@pytest.mark.frameworks
@pytest.mark.parametrize(
    ("chat_class", "stream"),
    [("ChatBedrockConverse", False), ("ChatBedrockConverse", True), ("ChatBedrock", False), ("ChatBedrock", True)],
)
def test_langchain_bedrock_counted_once(fake, settings, chat_class, stream):
    """LangChain's chat span over the instrumented boto3 call: the boto3 span is the one counted (converse /
    converse_stream for ChatBedrockConverse, invoke_model / its stream for ChatBedrock)."""
    langchain_aws = pytest.importorskip("langchain_aws")
    fake.clear()
    question = "hello from langchain"
    with instrumented_library("bedrock", "langchain") as traced:
        if chat_class == "ChatBedrockConverse":
            llm = langchain_aws.ChatBedrockConverse(model=CLAUDE, client=client(fake), region_name="us-east-1")
        else:
            llm = langchain_aws.ChatBedrock(model_id=CLAUDE, client=client(fake), region_name="us-east-1")
        if stream:
            chunks = list(llm.stream(question))
            text = "".join(
                c.content if isinstance(c.content, str) else "".join(p.get("text", "") for p in c.content)
                for c in chunks
            )
        else:
            text = llm.invoke(question).content
    assert text == echo_text(question)
    operations = {r.path.rsplit("/", 1)[1] for r in fake.requests}
    expected_op = ("converse" if chat_class == "ChatBedrockConverse" else "invoke") + ("-stream" if stream else "")
    assert operations == {expected_op.replace("invoke-stream", "invoke-with-response-stream")}
    counted = [s for s in traced.spans() if s.attributes.get(semconv.MLTRACK_USAGE_COUNTED) is True]
    assert [s.instrumentation_scope.name for s in counted] == ["mltrack_otel.instrumentation.bedrock"]
    (sdk_span,) = counted
    assert usage(sdk_span) == (ptok(question), N)
    parent = next(s for s in traced.spans() if s.context.span_id == sdk_span.parent.span_id)
    assert parent.instrumentation_scope.name == "mltrack_otel.instrumentation.langchain"
    (root,) = [s for s in traced.spans() if s.parent is None]
    assert root.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(price(CLAUDE, ptok(question), N), rel=1e-9)


@pytest.mark.frameworks
def test_litellm_bedrock_counted_once(fake, settings, monkeypatch):
    """LiteLLM calls Bedrock over its own HTTP client (botocore only signs): its span is the one call, counted once,
    with boto3 instrumented too."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = pytest.importorskip("litellm")
    fake.clear()
    with instrumented_library("bedrock", "litellm") as traced:
        response = litellm.completion(
            model=f"bedrock/converse/{CLAUDE}",
            messages=[{"role": "user", "content": "hello there"}],
            api_base=fake.url,
            aws_access_key_id="x",
            aws_secret_access_key="x",
            aws_region_name="us-east-1",
            num_retries=0,
        )
    assert response.choices[0].message.content == echo_text("hello there")
    assert [r.path.rsplit("/", 1)[1] for r in fake.requests] == ["converse"]
    (span,) = traced.spans()
    assert span.instrumentation_scope.name == "mltrack_otel.instrumentation.litellm"
    assert span.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert span.attributes[semconv.LLM_COST_TOTAL] == pytest.approx(price(CLAUDE, ptok("hello there"), N), rel=1e-9)
