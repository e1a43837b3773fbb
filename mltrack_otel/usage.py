"""Token usage in any shape a user or SDK hands us -> GenAI usage attributes (input includes cache).

Accepts dicts and objects with OpenAI chat names (prompt_tokens, prompt_tokens_details.cached_tokens,
completion_tokens_details.reasoning_tokens), OpenAI Responses names (input_tokens, input_tokens_details...) and
Anthropic names (input_tokens excluding cache, cache_read_input_tokens, cache_creation_input_tokens).
Anything implausible (negative, bool, float, string or absurdly large counts, objects that raise when read)
yields no attributes, is counted and logged once: a wrong number is worse than a missing one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from . import config, guard

# No model call comes near a trillion tokens; far larger counts would also overflow the int64 that OTLP carries.
MAX_TOKENS = 1 << 40

# The standalone GenAI conventions (semantic-conventions-genai v0.1.0) renamed one usage attribute of v1.41:
# gen_ai.usage.cache_creation.input_tokens is gen_ai.usage.cache_write.input_tokens there. The other usage names
# (input, output, cache_read, reasoning) are the same in both.
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS = "gen_ai.usage.cache_write.input_tokens"


def _get(source: Any, name: str) -> Any:
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


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


def _tokens(value: Any) -> int | None:
    if value is not None and count(value) is None:
        raise ValueError(f"token count must be an int from 0 to {MAX_TOKENS}, got {value!r:.100}")
    return value


def usage_attributes(usage: Any, provider: str | None = None) -> dict[str, int]:
    """GenAI usage attributes for `usage`; {} (and a counted skip) when it cannot be read safely."""
    try:
        return _usage_attributes(usage, provider)
    except Exception as exc:  # a usage object's own attributes may raise anything
        guard.record_error("usage.invalid", exc)
        return {}


def _usage_attributes(usage: Any, provider: str | None) -> dict[str, int]:
    if usage is None:
        return {}
    if not isinstance(usage, Mapping) and not hasattr(usage, "__dict__") and not hasattr(usage, "__slots__"):
        raise TypeError(f"unsupported usage object {type(usage).__name__}")

    prompt = _tokens(_get(usage, "prompt_tokens"))
    completion = _tokens(_get(usage, "completion_tokens"))
    cache_read = cache_write = reasoning = None
    if prompt is not None or completion is not None:  # OpenAI chat completions shape
        cache_read = _tokens(_get(_get(usage, "prompt_tokens_details"), "cached_tokens"))
        reasoning = _tokens(_get(_get(usage, "completion_tokens_details"), "reasoning_tokens"))
        input_tokens, output_tokens = prompt or 0, completion or 0
    else:
        raw_in = _tokens(_get(usage, "input_tokens"))
        raw_out = _tokens(_get(usage, "output_tokens"))
        if raw_in is None and raw_out is None:
            total = _tokens(_get(usage, "total_tokens"))
            if total is None:
                raise TypeError(f"no token counts found in usage {type(usage).__name__}")
            return {}  # a total alone cannot be split into input and output, so it cannot be priced
        input_tokens, output_tokens = raw_in or 0, raw_out or 0
        anthropic_read = _tokens(_get(usage, "cache_read_input_tokens"))
        anthropic_write = _tokens(_get(usage, "cache_creation_input_tokens"))
        if anthropic_read is not None or anthropic_write is not None or provider == "anthropic":
            # Anthropic reports input tokens *excluding* cache; the convention's input count includes it.
            cache_read, cache_write = anthropic_read, anthropic_write
            input_tokens += (cache_read or 0) + (cache_write or 0)
        else:  # OpenAI Responses shape: input already includes cached tokens
            cache_read = _tokens(_get(_get(usage, "input_tokens_details"), "cached_tokens"))
            reasoning = _tokens(_get(_get(usage, "output_tokens_details"), "reasoning_tokens"))

    return attributes(input_tokens, output_tokens, cache_read, cache_write, reasoning)
