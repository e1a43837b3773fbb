"""Token estimates for what the provider did not report: a request's input, a stopped stream's output, and a
call's worst case for budget reservations.

With tiktoken installed and its encoding already on disk, OpenAI-family models are counted with their real
tokenizer (never downloaded here: no network at run time). Otherwise the documented approximation is one token
per 4 bytes of UTF-8 text, rounded up, plus 4 tokens per message for the chat framing; 4 bytes a token is
OpenAI's own rule of thumb for English, and counting bytes rather than characters keeps CJK text from being
under-estimated. Images and audio are not estimated (their token cost depends on the provider's resizing).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

from . import guard

__all__ = [
    "MAX_OUTPUT_FIELDS",
    "SOURCE_ABSENT",
    "SOURCE_ESTIMATED",
    "SOURCE_PROVIDER",
    "input_tokens",
    "max_output_tokens",
    "text_tokens",
]

# The values of mltrack.usage.source (semconv/model/mltrack/registry.yaml).
SOURCE_PROVIDER = "provider"
SOURCE_ESTIMATED = "estimated"
SOURCE_ABSENT = "absent"

BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # role and separators per chat message
_MAX_DEPTH = 12
# Request fields that hold the prompt, in the providers' request schemas (OpenAI chat / Responses / completions /
# embeddings, Anthropic messages, Bedrock Converse, Gemini contents, Cohere embed texts and rerank query/documents).
_PROMPT_FIELDS = (
    "messages",
    "input",
    "prompt",
    "system",
    "instructions",
    "tools",
    "functions",
    "contents",
    "system_instruction",
    "texts",
    "query",
    "documents",
)
_TEXT_KEYS = frozenset(
    (
        "text",
        "content",
        "input",
        "arguments",
        "output",
        "description",
        "name",
        "parameters",
        "input_schema",
        "function",
        "tool_calls",
        "parts",
    )
)
_JSON_KEYS = ("parameters", "input_schema", "input")  # tool schemas and tool-call inputs: sent as JSON text
# Request fields that cap the output, newest names first.
MAX_OUTPUT_FIELDS = ("max_output_tokens", "max_completion_tokens", "max_tokens", "max_tokens_to_sample")


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
        _collect(value, 0, texts)
    return text_tokens("\n".join(texts), model) + MESSAGE_OVERHEAD * messages


def max_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The output cap the request names (max_tokens and its newer names), or None."""
    for field in MAX_OUTPUT_FIELDS:
        value = body.get(field)
        if type(value) is int and value >= 0:
            return value
    return None


def _collect(value: Any, depth: int, out: list[str]) -> None:
    """Append the text a prompt value holds to `out`: strings, and the text-bearing fields of message and part dicts
    or SDK objects. One list, plain types checked first: this runs over every message of a budgeted call."""
    if depth > _MAX_DEPTH:
        return
    if type(value) is str:
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, depth + 1, out)
    elif isinstance(value, str):  # a str subclass
        out.append(value)
    else:
        # A dict, or an SDK's message object (pydantic keeps the fields in __dict__): over its own keys (a message
        # has two or three), not over every key we know.
        fields = value if type(value) is dict or isinstance(value, Mapping) else getattr(value, "__dict__", None)
        if not isinstance(fields, Mapping):
            return
        for key, inner in fields.items():
            if key not in _TEXT_KEYS or inner is None:
                continue
            if key == "function" and not isinstance(inner, Mapping):  # a tool call's {name, arguments} only
                continue
            if type(inner) is str:
                out.append(inner)
            elif key in _JSON_KEYS and isinstance(inner, Mapping):
                out.append(_compact(inner))
            else:
                _collect(inner, depth + 1, out)


def _compact(schema: Mapping[str, Any]) -> str:
    try:
        return json.dumps(schema, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return ""


# -- the optional real tokenizer ----------------------------------------------------------------------------------

# tiktoken's OpenAI encodings: the file each loads and its SHA-256, as tiktoken_ext.openai_public names them. tiktoken
# caches a download under sha1(url) and downloads again when that file is missing or does not match the hash, so an
# encoding is used only when its cached file is there and intact: never a download at run time.
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"
_R50K = (_BLOB + "r50k_base.tiktoken", "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930")
_P50K = (_BLOB + "p50k_base.tiktoken", "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069")
_CL100K = (_BLOB + "cl100k_base.tiktoken", "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7")
_O200K = (_BLOB + "o200k_base.tiktoken", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d")
ENCODING_FILES: dict[str, tuple[str, str]] = {
    "r50k_base": _R50K,
    "p50k_base": _P50K,
    "p50k_edit": _P50K,
    "cl100k_base": _CL100K,
    "o200k_base": _O200K,
    "o200k_harmony": _O200K,
}
_MAX_MODELS = 256

_encoders: dict[str, Any] = {}  # model -> tiktoken Encoding, or None: read without the lock
_lock = threading.Lock()  # one thread loads an encoding (tens of ms) while the others wait for it
guard.renew_lock_after_fork(sys.modules[__name__])  # a child forked while another thread loaded must not wait


def _encoder(model: str | None) -> Any:
    """tiktoken's encoding for an OpenAI-family model, only if tiktoken is installed and the encoding is on disk."""
    if not model:
        return None
    try:
        return _encoders[model]
    except KeyError:
        pass
    with _lock:
        if model in _encoders:
            return _encoders[model]
        try:
            encoder = _offline_encoding(model)
        except Exception:  # not installed, not an OpenAI model, or an unreadable cache
            encoder = None
        if len(_encoders) < _MAX_MODELS:
            _encoders[model] = encoder
        return encoder


def _offline_encoding(model: str) -> Any:
    try:
        import tiktoken
        from tiktoken import registry
    except ImportError:
        return None
    name = tiktoken.encoding_name_for_model(model)  # KeyError for models tiktoken does not know
    loaded = registry.ENCODINGS.get(name)  # the application already loaded it
    if loaded is not None:
        return loaded
    source = ENCODING_FILES.get(name)
    if source is None or not cached_intact(*source):
        return None
    return tiktoken.get_encoding(name)


def cache_path(url: str) -> str | None:
    """Where tiktoken caches `url` (its own rule: TIKTOKEN_CACHE_DIR, DATA_GYM_CACHE_DIR, else the temp dir), or
    None when caching is disabled (an empty directory setting makes tiktoken download every time)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return None
    return os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())


def cached_intact(url: str, sha256: str) -> bool:
    """Whether tiktoken would load `url` from its cache: the file exists and has the expected hash."""
    path = cache_path(url)
    if path is None:
        return False
    try:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return False
    return digest == sha256
