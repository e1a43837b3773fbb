"""Token usage, in every shape a provider reports it -> GenAI usage attributes (input includes cache).

One reader, driven by a table of named shapes (:data:`SHAPES`): where a provider puts its input, output, cache and
reasoning counts, and what its input count covers. Instrumentors name their shape explicitly (:func:`read`); the
manual API, which is handed usage of unknown origin, detects it first (:func:`detect`).
Anything implausible (negative, bool, float, string or absurdly large counts) is read as missing; the manual API
refuses it instead (:func:`usage_attributes`), counted and logged once: a wrong number is worse than a missing one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from . import config, guard
from .fields import get

# No model call comes near a trillion tokens; far larger counts would also overflow the int64 that OTLP carries.
MAX_TOKENS = 1 << 40

# The standalone GenAI conventions (semantic-conventions-genai v0.1.0) renamed one usage attribute of v1.41:
# gen_ai.usage.cache_creation.input_tokens is gen_ai.usage.cache_write.input_tokens there. The other usage names
# (input, output, cache_read, reasoning) are the same in both.
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS = "gen_ai.usage.cache_write.input_tokens"

Path = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UsageShape:
    """Where one provider reports its token counts. Each field lists alternative paths; the first present wins."""

    input: tuple[Path, ...]
    output: tuple[Path, ...]
    cache_read: tuple[Path, ...] = ()
    cache_write: tuple[Path, ...] = ()
    reasoning: tuple[Path, ...] = ()
    input_excludes_cache: bool = False  # the input count leaves cache reads and writes out: add them back
    output_excludes_reasoning: bool = False  # reasoning is billed as output but reported apart: add it in
    whole_floats: bool = False  # the SDK parses counts as floats (12.0): a whole non-negative one is the count


SHAPES: Mapping[str, UsageShape] = {
    # OpenAI chat/completions and embeddings; every OpenAI-compatible API (Groq, Mistral, DeepSeek, vLLM...).
    "openai.chat": UsageShape(
        input=(("prompt_tokens",),),
        output=(("completion_tokens",),),
        cache_read=(("prompt_tokens_details", "cached_tokens"),),
        cache_write=(("prompt_tokens_details", "cache_write_tokens"),),
        reasoning=(("completion_tokens_details", "reasoning_tokens"),),
    ),
    "openai.responses": UsageShape(
        input=(("input_tokens",),),
        output=(("output_tokens",),),
        cache_read=(("input_tokens_details", "cached_tokens"),),
        cache_write=(("input_tokens_details", "cache_write_tokens"),),
        reasoning=(("output_tokens_details", "reasoning_tokens"),),
    ),
    # Anthropic Messages (also on Bedrock and Vertex): input_tokens exclude the prompt cache.
    "anthropic": UsageShape(
        input=(("input_tokens",),),
        output=(("output_tokens",),),
        cache_read=(("cache_read_input_tokens",),),
        cache_write=(("cache_creation_input_tokens",),),
        reasoning=(("output_tokens_details", "thinking_tokens"),),
        input_excludes_cache=True,
    ),
    # LiteLLM's Usage: OpenAI names (prompt_tokens include the cache), with the cache as each provider reported it.
    "litellm": UsageShape(
        input=(("prompt_tokens",),),
        output=(("completion_tokens",),),
        cache_read=(("prompt_tokens_details", "cached_tokens"), ("cache_read_input_tokens",)),
        cache_write=(
            ("cache_creation_input_tokens",),
            ("prompt_tokens_details", "cache_creation_tokens"),
            ("prompt_tokens_details", "cache_write_tokens"),
        ),
        reasoning=(("completion_tokens_details", "reasoning_tokens"),),
    ),
    # LangChain's UsageMetadata: input_tokens include the cache.
    "langchain": UsageShape(
        input=(("input_tokens",),),
        output=(("output_tokens",),),
        cache_read=(("input_token_details", "cache_read"),),
        cache_write=(("input_token_details", "cache_creation"),),
        reasoning=(("output_token_details", "reasoning"),),
    ),
    # Gemini (google-genai's usage_metadata, or the REST JSON): thoughts are billed as output, reported apart.
    "gemini": UsageShape(
        input=(("prompt_token_count",), ("promptTokenCount",)),
        output=(("candidates_token_count",), ("candidatesTokenCount",)),
        cache_read=(("cached_content_token_count",), ("cachedContentTokenCount",)),
        reasoning=(("thoughts_token_count",), ("thoughtsTokenCount",)),
        output_excludes_reasoning=True,
    ),
    # Bedrock Converse (and Nova bodies): inputTokens exclude cache reads and writes.
    "bedrock.converse": UsageShape(
        input=(("inputTokens",),),
        output=(("outputTokens",),),
        cache_read=(("cacheReadInputTokens",),),
        cache_write=(("cacheWriteInputTokens",),),
        input_excludes_cache=True,
    ),
    # Cohere v2: the billed units are what is priced (`tokens` adds Cohere's prompt template); the cache read is
    # inside the input.
    "cohere": UsageShape(
        input=(("billed_units", "input_tokens"),),
        output=(("billed_units", "output_tokens"),),
        cache_read=(("cached_tokens",),),
        whole_floats=True,
    ),
    "ollama": UsageShape(input=(("prompt_eval_count",),), output=(("eval_count",),)),
}


def count(value: Any) -> int | None:
    """value if it is a plausible token count, else None (bools, floats, negatives, past MAX_TOKENS)."""
    return value if type(value) is int and 0 <= value <= MAX_TOKENS else None


def attributes(
    input_tokens: int, output_tokens: int, cache_read: int | None, cache_write: int | None, reasoning: int | None
) -> dict[str, int]:
    """The gen_ai.usage.* attributes: input and output always, the parts only when non-zero.

    Cache writes go under the name OTEL_SEMCONV_STABILITY_OPT_IN selects (Settings.genai_latest_conventions).
    """
    out = {gen_ai.GEN_AI_USAGE_INPUT_TOKENS: input_tokens, gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens}
    if cache_read:
        out[gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = cache_read
    if cache_write:  # rare, so the settings are looked up only here
        out[cache_write_key()] = cache_write
    if reasoning:
        out[gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = reasoning
    return out


def cache_write_key() -> str:
    """The cache-write usage attribute name the active Settings emit."""
    if config.current().genai_latest_conventions:
        return GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
    return gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS


def _first(usage: Any, paths: tuple[Path, ...], strict: bool, whole_floats: bool = False) -> int | None:
    for path in paths:
        value = usage
        for name in path:
            value = get(value, name)
        if value is None:
            continue
        if whole_floats and type(value) is float and value.is_integer():
            value = int(value)
        if count(value) is None:
            if strict:
                raise ValueError(f"token count must be an int from 0 to {MAX_TOKENS}, got {value!r:.100}")
            continue
        return value
    return None


def read(usage: Any, shape: str, *, strict: bool = False) -> dict[str, int]:
    """gen_ai.usage.* from a provider's usage object or JSON, read as SHAPES[shape] says; {} without counts.

    strict: raise ValueError on an implausible count instead of reading it as missing.
    """
    if usage is None:
        return {}
    table = SHAPES[shape]
    floats = table.whole_floats
    tokens_in, tokens_out = _first(usage, table.input, strict, floats), _first(usage, table.output, strict, floats)
    if tokens_in is None and tokens_out is None:
        return {}
    cache_read = _first(usage, table.cache_read, strict, floats) if table.cache_read else None
    cache_write = _first(usage, table.cache_write, strict, floats) if table.cache_write else None
    reasoning = _first(usage, table.reasoning, strict, floats) if table.reasoning else None
    tokens_in, tokens_out = tokens_in or 0, tokens_out or 0
    if table.input_excludes_cache:
        tokens_in += (cache_read or 0) + (cache_write or 0)
    if table.output_excludes_reasoning:
        tokens_out += reasoning or 0
    return attributes(tokens_in, tokens_out, cache_read, cache_write, reasoning)


# Keys only one shape has, tried in order; usage without any of them is OpenAI Responses-shaped (input_tokens).
_DETECT: tuple[tuple[str, str], ...] = (
    ("cache_read_input_tokens", "anthropic"),
    ("cache_creation_input_tokens", "anthropic"),
    ("input_token_details", "langchain"),
    ("prompt_token_count", "gemini"),
    ("promptTokenCount", "gemini"),
    ("candidates_token_count", "gemini"),
    ("inputTokens", "bedrock.converse"),
    ("billed_units", "cohere"),
    ("prompt_eval_count", "ollama"),
    ("eval_count", "ollama"),
)


def detect(usage: Any, provider: str | None = None) -> str:
    """The shape of usage handed over without one (the manual API): by the keys only one shape has."""
    if get(usage, "prompt_tokens") is not None or get(usage, "completion_tokens") is not None:
        # OpenAI names; with Anthropic's cache fields beside them, LiteLLM's Usage
        cache = (
            get(usage, "cache_read_input_tokens") is not None or get(usage, "cache_creation_input_tokens") is not None
        )
        return "litellm" if cache else "openai.chat"
    for key, shape in _DETECT:
        if get(usage, key) is not None:
            return shape
    return "anthropic" if provider in ("anthropic", "aws.bedrock", "gcp.vertex_ai") else "openai.responses"


def usage_attributes(usage: Any, provider: str | None = None) -> dict[str, int]:
    """GenAI usage attributes for usage of any shape (the manual API); {} (and a counted skip) when it cannot be
    read safely."""
    try:
        return _checked(usage, provider)
    except Exception as exc:  # a usage object's own attributes may raise anything
        guard.record_error("usage.invalid", exc)
        return {}


def _checked(usage: Any, provider: str | None) -> dict[str, int]:
    if usage is None:
        return {}
    if not isinstance(usage, Mapping) and not hasattr(usage, "__dict__") and not hasattr(usage, "__slots__"):
        raise TypeError(f"unsupported usage object {type(usage).__name__}")
    found = read(usage, detect(usage, provider), strict=True)
    if not found:  # a total alone cannot be split into input and output, so it cannot be priced
        total = get(usage, "total_tokens")
        if total is None:
            raise TypeError(f"no token counts found in usage {type(usage).__name__}")
        if count(total) is None:
            raise ValueError(f"token count must be an int from 0 to {MAX_TOKENS}, got {total!r:.100}")
    return found
