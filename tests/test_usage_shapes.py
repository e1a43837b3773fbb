"""One usage reader, one table of shapes: each shape read from its provider's own objects and JSON.

Expected values follow each provider's documented meaning: the GenAI input count includes cache reads and writes,
reasoning/thinking tokens are output tokens.
"""

from __future__ import annotations

import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from mltrack_otel import usage

IN, OUT = gen_ai.GEN_AI_USAGE_INPUT_TOKENS, gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
READ, WRITE = gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
REASONING = gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS

# shape -> (usage as the provider's JSON, expected attributes)
CASES = {
    "openai.chat": (
        {
            "prompt_tokens": 1000,
            "completion_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 800, "cache_write_tokens": 50},
            "completion_tokens_details": {"reasoning_tokens": 30},
        },
        {IN: 1000, OUT: 40, READ: 800, WRITE: 50, REASONING: 30},
    ),
    "openai.responses": (
        {
            "input_tokens": 500,
            "output_tokens": 70,
            "input_tokens_details": {"cached_tokens": 200},
            "output_tokens_details": {"reasoning_tokens": 64},
        },
        {IN: 500, OUT: 70, READ: 200, REASONING: 64},
    ),
    "anthropic": (
        {"input_tokens": 100, "output_tokens": 9, "cache_read_input_tokens": 900, "cache_creation_input_tokens": 20},
        {IN: 1020, OUT: 9, READ: 900, WRITE: 20},
    ),
    "litellm": (
        {
            "prompt_tokens": 1020,
            "completion_tokens": 9,
            "cache_read_input_tokens": 900,
            "cache_creation_input_tokens": 20,
        },
        {IN: 1020, OUT: 9, READ: 900, WRITE: 20},
    ),
    "langchain": (
        {
            "input_tokens": 300,
            "output_tokens": 12,
            "input_token_details": {"cache_read": 100, "cache_creation": 7},
            "output_token_details": {"reasoning": 5},
        },
        {IN: 300, OUT: 12, READ: 100, WRITE: 7, REASONING: 5},
    ),
    "gemini": (  # thoughts are billed as output but reported beside candidates
        {
            "promptTokenCount": 4000,
            "candidatesTokenCount": 50,
            "thoughtsTokenCount": 200,
            "cachedContentTokenCount": 3000,
        },
        {IN: 4000, OUT: 250, READ: 3000, REASONING: 200},
    ),
    "bedrock.converse": (  # inputTokens leave the cache out
        {"inputTokens": 10, "outputTokens": 5, "cacheReadInputTokens": 600, "cacheWriteInputTokens": 40},
        {IN: 650, OUT: 5, READ: 600, WRITE: 40},
    ),
    "cohere": (  # the SDK parses counts as floats
        {
            "billed_units": {"input_tokens": 12.0, "output_tokens": 34.0},
            "tokens": {"input_tokens": 200.0, "output_tokens": 34.0},
            "cached_tokens": 8.0,
        },
        {IN: 12, OUT: 34, READ: 8},
    ),
    "ollama": ({"prompt_eval_count": 26, "eval_count": 290, "total_duration": 5_000_000}, {IN: 26, OUT: 290}),
}


def test_every_shape_has_a_case() -> None:
    assert set(CASES) == set(usage.SHAPES)


@pytest.mark.parametrize("shape", list(CASES))
def test_each_shape_reads_its_providers_json(shape: str) -> None:
    raw, expected = CASES[shape]
    assert usage.read(raw, shape) == expected


@pytest.mark.parametrize("shape", list(CASES))
def test_the_manual_api_detects_each_shape(shape: str) -> None:
    raw, expected = CASES[shape]
    assert usage.usage_attributes(raw) == expected


def test_anthropic_usage_under_bedrock_counts_its_cache_whichever_reader() -> None:
    raw = {"input_tokens": 100, "output_tokens": 3, "cache_read_input_tokens": 900}
    assert usage.read(raw, "anthropic")[IN] == 1000
    assert usage.usage_attributes(raw, "aws.bedrock")[IN] == 1000


def test_implausible_counts_are_missing_to_instrumentors_and_refused_by_the_manual_api() -> None:
    raw = {"prompt_tokens": -5, "completion_tokens": 7}
    assert usage.read(raw, "openai.chat") == {IN: 0, OUT: 7}
    assert usage.usage_attributes(raw) == {}
    assert usage.read({"prompt_tokens": True}, "openai.chat") == {}


def test_an_unknown_shape_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        usage.read({"prompt_tokens": 1}, "openai")


def test_sdk_objects_read_like_their_json() -> None:
    openai_types = pytest.importorskip("openai.types")
    anthropic_types = pytest.importorskip("anthropic.types")
    chat = openai_types.CompletionUsage(
        prompt_tokens=1000,
        completion_tokens=40,
        total_tokens=1040,
        prompt_tokens_details={"cached_tokens": 800},
        completion_tokens_details={"reasoning_tokens": 30},
    )
    assert usage.read(chat, "openai.chat") == {IN: 1000, OUT: 40, READ: 800, REASONING: 30}
    messages = anthropic_types.Usage(input_tokens=100, output_tokens=9, cache_read_input_tokens=900)
    assert usage.read(messages, "anthropic") == {IN: 1000, OUT: 9, READ: 900}
