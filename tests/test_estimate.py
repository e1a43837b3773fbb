"""The documented approximation of estimate.py, over the request shapes of both providers: every text the model
reads is counted once (ceil(UTF-8 bytes / 4) of the texts joined by newlines, plus 4 tokens a message)."""

from __future__ import annotations

import json
import math

import pytest

from mltrack_otel import estimate

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def approximation(texts: list[str], messages: int) -> int:
    return math.ceil(len("\n".join(texts).encode()) / 4) + 4 * messages


def compact(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"))


WEATHER = compact(WEATHER_SCHEMA)
CASES = {
    "openai chat, string content": (
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Héllo, 世界"}]},
        (["Be brief.", "Héllo, 世界"], 2),
    ),
    "openai chat, content parts and a tool call": (
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER_SCHEMA},
                }
            ],
        },
        (
            ["Weather in Paris?", "get_weather", '{"city":"Paris"}', "18C", "get_weather", "Weather now", WEATHER],
            3,
        ),
    ),
    "anthropic, system, tool_use input and tool schema": (
        {
            "system": [{"type": "text", "text": "You are terse."}],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}],
                },
            ],
            "tools": [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA}],
        },
        (
            [
                "Weather?",
                "get_weather",
                compact({"city": "Paris"}),
                "You are terse.",
                "get_weather",
                "Weather now",
                WEATHER,
            ],
            2,
        ),
    ),
    "responses, instructions and a string input": (
        {"instructions": "Answer in French.", "input": "What is OpenTelemetry?"},
        (["What is OpenTelemetry?", "Answer in French."], 0),
    ),
    "embeddings, a list of inputs": ({"input": ["first text", "second"]}, (["first text", "second"], 2)),
}


@pytest.mark.parametrize("body, expected", CASES.values(), ids=CASES.keys())
def test_every_text_the_model_reads_is_counted_once(body, expected):
    texts, messages = expected
    assert estimate.input_tokens(body, "some-unknown-model") == approximation(texts, messages)


def test_the_output_cap_is_read_under_each_name_and_a_bad_one_is_ignored():
    assert estimate.max_output_tokens({"max_tokens": 64}) == 64
    assert estimate.max_output_tokens({"max_completion_tokens": 32, "max_tokens": 64}) == 32
    assert estimate.max_output_tokens({"max_output_tokens": 16}) == 16
    assert estimate.max_output_tokens({"max_tokens": True}) is None
    assert estimate.max_output_tokens({"max_tokens": -1}) is None
    assert estimate.max_output_tokens({}) is None


def test_gemini_contents_and_system_instruction_are_input_even_as_sdk_objects():
    types = pytest.importorskip("google.genai.types")
    words = "twelve words of prompt text for the estimate to count here"
    system = "be brief"
    as_dicts = {"contents": [{"role": "user", "parts": [{"text": words}]}], "system_instruction": system}
    as_objects = {
        "contents": [types.Content(role="user", parts=[types.Part(text=words)])],
        "system_instruction": types.Content(parts=[types.Part(text=system)]),
    }
    expected = estimate.text_tokens(words + "\n" + system)
    assert estimate.input_tokens(as_dicts) == expected
    assert estimate.input_tokens(as_objects) == expected


def test_cohere_embed_texts_and_rerank_query_and_documents_are_input():
    assert estimate.input_tokens({"texts": ["a" * 40, "b" * 40]}) == estimate.text_tokens("a" * 40 + "\n" + "b" * 40)
    rerank = {"query": "q" * 8, "documents": ["d" * 16]}
    assert estimate.input_tokens(rerank) == estimate.text_tokens("q" * 8 + "\n" + "d" * 16)
