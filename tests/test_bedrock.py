"""AWS Bedrock through boto3 ``bedrock-runtime``: the fake's wire format parsed by the real botocore, then the
instrumentation's call-shape matrix.

Expected texts and token counts are re-derived from the documented formulas (mltrack_otel/testing/wire/bedrock.py
and fake_provider's docstring), not read from the fake's code.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from mltrack_otel.testing.fake_provider import FakeProvider

N = 30  # FakeProvider() default stream_chunks
FILLER = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]
DROP_AFTER = 3
CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
NOVA = "amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"
TITAN = "amazon.titan-text-express-v1"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
WEATHER_ARGS = {"city": "example", "days": 1}
CONVERSE_TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": WEATHER_SCHEMA}}}]}


def expected_text(user_text: str, n: int = N) -> str:
    words = [w for w in user_text.split() if not (w.startswith("[[scenario:") and w.endswith("]]"))]
    seq = ["Echo:", *words[:8]]
    seq += [FILLER[i % len(FILLER)] for i in range(n - len(seq))]
    return " ".join(seq[:n])


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
    assert r["output"]["message"] == {"role": "assistant", "content": [{"text": expected_text(question)}]}
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
    assert r["output"]["message"]["content"][0]["text"] == expected_text("hi")
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
    assert text == expected_text(question)
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
    with pytest.raises(Exception):  # noqa: B017 - urllib3/botocore's own connection error type
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
    assert body["content"] == [{"type": "text", "text": expected_text(question)}]
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
        "generation": expected_text(question, 5),
        "prompt_token_count": ptok(f"user {question} assistant"),
        "generation_token_count": 5,
        "stop_reason": "length",
    }
    titan = invoke_json(brt.invoke_model(modelId=TITAN, body=json.dumps({"inputText": question})))
    assert titan == {
        "inputTextTokenCount": ptok(question),
        "results": [{"tokenCount": N, "outputText": expected_text(question), "completionReason": "FINISH"}],
    }
    nova_body = {"schemaVersion": "messages-v1", "messages": user(question), "inferenceConfig": {"max_new_tokens": 4}}
    nova = invoke_json(brt.invoke_model(modelId="us.amazon.nova-pro-v1:0", body=json.dumps(nova_body)))
    assert nova["output"]["message"]["content"] == [{"text": expected_text(question, 4)}]
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
    assert "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta") == expected_text(question)
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
    assert "".join(c["generation"] for c in llama) == expected_text(question)
    assert llama[0]["prompt_token_count"] == ptok(f"user {question} assistant")
    assert all(c["prompt_token_count"] is None for c in llama[1:])
    assert llama[-1]["generation_token_count"] == N and llama[-1]["stop_reason"] == "stop"
    titan = stream_chunks(
        brt.invoke_model_with_response_stream(
            modelId=TITAN, body=json.dumps({"inputText": question, "textGenerationConfig": {"maxTokenCount": 7}})
        )
    )
    assert "".join(c["outputText"] for c in titan) == expected_text(question, 7)
    assert titan[0]["inputTextTokenCount"] == ptok(question)
    assert titan[-1]["totalOutputTextTokenCount"] == 7 and titan[-1]["completionReason"] == "LENGTH"
    assert titan[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 7
    nova = stream_chunks(
        brt.invoke_model_with_response_stream(modelId=NOVA, body=json.dumps({"messages": user(question)}))
    )
    assert [next(iter(c)) for c in nova][:2] == ["messageStart", "contentBlockDelta"]
    assert "".join(c["contentBlockDelta"]["delta"]["text"] for c in nova if "contentBlockDelta" in c) == (
        expected_text(question)
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
