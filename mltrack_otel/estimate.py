"""Token estimates for what the provider did not report: a request's input, a stopped stream's output, and a
call's worst case for budget reservations.

With tiktoken installed and its encoding already on disk, OpenAI-family models are counted with their real
tokenizer (never downloaded here: no network at run time). Otherwise the documented approximation is one token
per 4 bytes of UTF-8 text, rounded up, plus 4 tokens per message for the chat framing; 4 bytes a token is
OpenAI's own rule of thumb for English, and counting bytes rather than characters keeps CJK text from being
under-estimated. Images and audio are not estimated (their token cost depends on the provider's resizing).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["input_tokens", "max_output_tokens", "text_tokens"]

BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # role and separators per chat message
_MAX_DEPTH = 12
# Request fields that hold the prompt, in the providers' request schemas (OpenAI chat / Responses / completions /
# embeddings, Anthropic messages).
_PROMPT_FIELDS = ("messages", "input", "prompt", "system", "instructions", "tools", "functions")
_TEXT_KEYS = ("text", "content", "input", "arguments", "output", "description", "name", "parameters", "input_schema")
# Request fields that cap the output, newest names first.
_MAX_OUTPUT_FIELDS = ("max_output_tokens", "max_completion_tokens", "max_tokens", "max_tokens_to_sample")


def text_tokens(text: str, model: str | None = None) -> int:
    """Tokens in `text`: the model's tokenizer when available offline, else ceil(UTF-8 bytes / 4)."""
    if not text:
        return 0
    encoder = _encoder(model)
    if encoder is not None:
        try:
            return len(encoder.encode(text, disallowed_special=()))
        except Exception:
            pass
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / BYTES_PER_TOKEN)


def input_tokens(body: Mapping[str, Any], model: str | None = None) -> int:
    """Estimated input tokens of a request body: its prompt text, message framing included."""
    texts: list[str] = []
    messages = 0
    for field in _PROMPT_FIELDS:
        value = body.get(field)
        if value is None:
            continue
        if field in ("messages", "input") and isinstance(value, list):
            messages += len(value)
        texts.extend(_strings(value, 0))
    return text_tokens("\n".join(texts), model) + MESSAGE_OVERHEAD * messages


def max_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The output cap the request names (max_tokens and its newer names), or None."""
    for field in _MAX_OUTPUT_FIELDS:
        value = body.get(field)
        if type(value) is int and value >= 0:
            return value
    return None


def _strings(value: Any, depth: int) -> Iterator[str]:
    """The text a prompt value holds: strings, and the text-bearing fields of message and part dicts."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key in _TEXT_KEYS:
            inner = value.get(key)
            if inner is not None:
                if isinstance(inner, Mapping) and key in ("parameters", "input_schema"):
                    yield _compact(inner)
                else:
                    yield from _strings(inner, depth + 1)
        function = value.get("function")
        if isinstance(function, Mapping):
            yield from _strings(function, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, depth + 1)


def _compact(schema: Mapping[str, Any]) -> str:
    import json

    try:
        return json.dumps(schema, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return ""


# -- the optional real tokenizer ----------------------------------------------------------------------------------

_encoders: dict[str, Any] = {}


def _encoder(model: str | None) -> Any:
    """tiktoken's encoding for an OpenAI-family model, only if tiktoken is installed and the encoding is cached."""
    if not model:
        return None
    try:
        return _encoders[model]
    except KeyError:
        pass
    encoder = None
    try:
        import tiktoken

        name = tiktoken.encoding_name_for_model(model)
        if _cached_offline(name):
            encoder = tiktoken.get_encoding(name)
    except Exception:  # not installed, not an OpenAI model, or no cached encoding
        encoder = None
    if len(_encoders) < 256:
        _encoders[model] = encoder
    return encoder


def _cached_offline(encoding_name: str) -> bool:
    """Whether tiktoken can load the encoding without the network (its file is in tiktoken's cache)."""
    import hashlib
    import os
    import tempfile

    try:
        from tiktoken_ext.openai_public import ENCODING_CONSTRUCTORS
    except ImportError:
        return False
    constructor = ENCODING_CONSTRUCTORS.get(encoding_name)
    if constructor is None:
        return False
    try:
        import tiktoken.load as load

        urls: list[str] = []
        original = load.read_file_cached

        def record(blobpath: str, *args: Any, **kwargs: Any) -> bytes:
            urls.append(blobpath)
            raise LookupError

        load.read_file_cached = record
        try:
            constructor()
        except LookupError:
            pass
        finally:
            load.read_file_cached = original
    except Exception:
        return False
    if not urls:
        return False
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    key = hashlib.sha1(urls[0].encode()).hexdigest()
    return os.path.exists(os.path.join(cache_dir, key))
