"""Message content for span attributes: GenAI JSON within a byte budget, redacted, never raising.

Provider modules normalise SDK messages into the GenAI v1.41 shape (lists of ``{"role", "parts"}`` messages or of
parts); :func:`encode` turns such a list into the JSON string of one attribute. When the JSON is larger than the
budget, whole items are dropped oldest first (the newest is kept); when the newest alone is still too large, its
longest strings are cut. The result is always valid JSON. Anything JSON cannot encode falls back to a short repr.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from opentelemetry.trace import Status, StatusCode

from . import guard

TRUNCATION_MARK = "...[truncated]"
REDACTED = "[REDACTED]"

_MAX_REPR = 2048
_MAX_DEPTH = 32
_MAX_CUTS = 12
_MAX_LABEL_BYTES = 64  # role and finish reason of a last-resort stub
_MAX_INT_BITS = 2000  # ~600 digits: under the smallest int-to-str limit Python can be set to (640 digits)
# Keys whose values are structural in messages and parts (schema enums, ids): not redacted there, so the JSON keeps
# its schema.
_STRUCTURAL_KEYS = frozenset({"type", "role", "modality", "mime_type", "finish_reason", "id", "name"})


def json_default(obj: Any) -> Any:
    """json.dumps `default`: bytes become base64, models become dicts, anything else a capped repr."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json", exclude_none=True)
        except Exception:  # a broken model must not break tracking
            pass
    return capped_repr(obj)


def _as_text(obj: Any) -> str:
    """str(obj), or its type name when str() itself fails (broken __str__, ints past the digit limit)."""
    try:
        return str(obj)
    except Exception:
        return f"<{type(obj).__name__}>"


def capped_repr(obj: Any) -> str:
    """repr(obj) cut to the repr cap (the type name when repr itself fails)."""
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + TRUNCATION_MARK


def _slow_dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=json_default)


def _make_fast_dumps() -> Any:
    """json.dumps builds a new C encoder on every call; build ours once (half the cost on small messages)."""
    try:
        from json.encoder import c_make_encoder, encode_basestring

        if c_make_encoder is None:
            return _slow_dumps
        # No circular-reference markers: a cycle raises RecursionError, and encode() retries on a sanitised copy.
        encoder = c_make_encoder(None, json_default, encode_basestring, None, ":", ",", False, False, False)
        sample = [{"a": "\u00e9\n", "b": [1, 2.5, None, True]}, b"x"]
        if "".join(encoder(sample, 0)) != _slow_dumps(sample):
            return _slow_dumps
    except Exception:  # another Python's encoder signature: use the standard path
        return _slow_dumps
    return lambda obj: "".join(encoder(obj, 0))


dumps = _make_fast_dumps()
"""Compact JSON (no ASCII escapes), objects it cannot encode as their fallback; the one encoder content uses."""


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))  # raises on lone surrogates, which no exporter could send either


def _sanitize(obj: Any, depth: int = 0, seen: set[int] | None = None) -> Any:
    """A JSON-safe copy of obj: bounded depth, no cycles, non-finite floats and odd objects as strings."""
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):  # json cannot print ints past sys.get_int_max_str_digits()
        return obj if obj.bit_length() <= _MAX_INT_BITS else f"<int of {obj.bit_length()} bits>"
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else str(obj)
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace").decode("utf-8")
    if depth >= _MAX_DEPTH:
        return "[max depth]"
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return "[cycle]"
    if isinstance(obj, dict):
        seen.add(id(obj))
        out = {_sanitize(_as_text(k)): _sanitize(v, depth + 1, seen) for k, v in obj.items()}
        seen.discard(id(obj))
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        seen.add(id(obj))
        out_list = [_sanitize(v, depth + 1, seen) for v in obj]
        seen.discard(id(obj))
        return out_list
    try:
        converted = json_default(obj)
    except Exception:
        converted = f"<{type(obj).__name__}>"
    if isinstance(converted, str) or converted is obj:
        return _sanitize(str(converted), depth + 1, seen)
    return _sanitize(converted, depth + 1, seen)


def redact(obj: Any, pattern: re.Pattern[str], schema: bool = True) -> Any:
    """A copy of obj with every match of pattern in its strings replaced by [REDACTED].

    Done on values, not on the JSON text, so a match can never eat a quote or a brace. In messages and parts
    (`schema`) the structural values (type, role, ids, names) are left alone so the result still follows the
    schema; payloads below them (tool arguments and results, schemas, objects) are redacted whole, keys included.
    """
    if isinstance(obj, str):
        return pattern.sub(REDACTED, obj)
    if isinstance(obj, dict):
        if schema:
            return {k: v if k in _STRUCTURAL_KEYS else redact(v, pattern, k == "parts") for k, v in obj.items()}
        return {redact(k, pattern, False): redact(v, pattern, False) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, pattern, schema) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    return redact(json_default(obj), pattern, False)  # models, bytes, arbitrary objects: what they serialise to


def encode(items: list[Any], max_bytes: int, redactor: re.Pattern[str] | None = None) -> tuple[str, bool]:
    """JSON for a list of messages (or parts) in at most max_bytes UTF-8 bytes; (json, truncated).

    Never raises; budgets below 256 bytes may not fit a message cut to its minimum.
    """
    try:
        return _encode(items, max_bytes, redactor)
    except Exception:  # unserialisable, too deep, cyclic, lone surrogates: retry on a sanitised copy
        pass
    try:
        return _encode(_sanitize(items), max_bytes, redactor)
    except Exception as exc:  # a container that cannot even be walked: record nothing rather than fail the call
        guard.record_error("content.encode", exc)
        return "[]", True


def _encode(items: list[Any], max_bytes: int, redactor: re.Pattern[str] | None) -> tuple[str, bool]:
    if redactor is not None:
        items = redact(items, redactor)
    text = dumps(items)
    if len(text) <= max_bytes and _utf8_size(text) <= max_bytes:  # encoding also rejects lone surrogates
        return text, False
    return _shrink(items, max_bytes), True


def _shrink(items: list[Any], max_bytes: int) -> str:
    """Keep the newest items that fit whole; if none does, cut the newest one down to size."""
    budget = max_bytes - 2  # the enclosing brackets
    kept: list[str] = []
    used = 0
    for item in reversed(items):
        piece = dumps(item)
        cost = _utf8_size(piece) + (1 if kept else 0)  # the separating comma
        if used + cost > budget:
            break
        kept.append(piece)
        used += cost
    if not kept and items:
        kept.append(_cut_to_fit(items[-1], budget))
    return "[" + ",".join(reversed(kept)) + "]"


def _cut_to_fit(item: Any, budget: int) -> str:
    """The JSON of item with its longest strings shortened until it fits budget bytes."""
    item = _copy_containers(item)
    for _ in range(_MAX_CUTS):
        text = dumps(item)
        size = _utf8_size(text)
        if size <= budget:
            return text
        holder, key, value = _longest_string(item)
        if holder is None or len(value) <= len(TRUNCATION_MARK):
            break
        added = len(TRUNCATION_MARK)
        if value.endswith(TRUNCATION_MARK):  # cut before: cut its text further (else only the mark would go)
            value, added = value[:-added], 0
        # Bytes per character of this string once JSON-escaped, to turn the excess into characters to cut.
        ratio = max(1.0, _utf8_size(dumps(value)) / max(1, len(value)))
        cut = int((size - budget + added) / ratio) + 1
        keep = max(0, len(value) - cut)
        holder[key] = value[:keep] + TRUNCATION_MARK
    return _stub(item, budget)


def _stub(item: Any, budget: int) -> str:
    """Last resort: a schema-valid item holding the start of the original's JSON text, cut to fit in bytes."""
    part = {"type": "text", "content": TRUNCATION_MARK}
    stub: dict[str, Any] = part
    if isinstance(item, dict) and isinstance(item.get("role"), str):
        stub = {"role": _fit(item["role"], _MAX_LABEL_BYTES), "parts": [part]}
        if isinstance(item.get("finish_reason"), str):
            stub["finish_reason"] = _fit(item["finish_reason"], _MAX_LABEL_BYTES)
    room = budget - _utf8_size(dumps(stub))
    part["content"] = _fit(dumps(item), room) + TRUNCATION_MARK
    return dumps(stub)


def _fit(text: str, max_bytes: int) -> str:
    """The longest prefix of text whose JSON string (quotes excluded) takes at most max_bytes UTF-8 bytes."""
    text = text[: max(0, max_bytes)]  # each character takes at least one byte
    low, high = 0, len(text)
    while low < high:  # escapes and multi-byte characters vary in size: binary search the cut
        middle = (low + high + 1) // 2
        if _utf8_size(dumps(text[:middle])) - 2 <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _copy_containers(obj: Any, depth: int = 0) -> Any:
    """Copies of the dicts and lists down to _MAX_DEPTH: the only ones _longest_string may hand out to cut."""
    if depth > _MAX_DEPTH:
        return obj
    if isinstance(obj, dict):
        return {k: _copy_containers(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_copy_containers(v, depth + 1) for v in obj]
    return obj


def _longest_string(obj: Any) -> tuple[Any, Any, str]:
    """(container, key, value) of the longest string value inside obj (skipping structural keys), looking no
    deeper than _copy_containers copies: the caller's own containers are never cut."""
    best: tuple[Any, Any, str] = (None, None, "")
    stack = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        entries = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in entries:
            if isinstance(value, str):
                if len(value) > len(best[2]) and not (isinstance(node, dict) and key in _STRUCTURAL_KEYS):
                    best = (node, key, value)
            elif isinstance(value, (dict, list)) and depth < _MAX_DEPTH:
                stack.append((value, depth + 1))
    return best


def text_part(text: Any) -> dict[str, Any]:
    """A GenAI text part; non-string content is stringified."""
    return {"type": "text", "content": text if isinstance(text, str) else _as_text(text)}


_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[^,]*)?;base64,", re.ASCII)


def media_part(url: Any, modality: str, mime_type: str | None = None) -> dict[str, Any]:
    """A blob part for a base64 data URL, else a uri part."""
    url = url if isinstance(url, str) else _as_text(url)
    match = _DATA_URL.match(url)
    if match:
        part = {"type": "blob", "modality": modality, "content": url[match.end() :]}
        mime = match.group("mime") or mime_type
    else:
        part = {"type": "uri", "modality": modality, "uri": url}
        mime = mime_type
    if mime:
        part["mime_type"] = mime
    return part


def parse_arguments(raw: Any) -> Any:
    """Tool-call arguments as an object when they are a JSON string (kept as the string when they are not)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            return raw
    return raw


def record_failure(span: Any, error: BaseException, redactor: re.Pattern[str] | None) -> None:
    """Exception event and ERROR status on span; redaction patterns apply to the message and stack trace too,
    since gateways may echo keys or headers back in error text."""
    message = _as_text(error)
    attributes = None
    if redactor is not None:
        import traceback

        message = redactor.sub(REDACTED, message)
        stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        attributes = {"exception.message": message, "exception.stacktrace": redactor.sub(REDACTED, stack)}
    span.record_exception(error, attributes=attributes)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {message}"[:1024]))


def utf8(text: str) -> str:
    """text, with anything UTF-8 cannot carry (lone surrogates) replaced: span names and model names reach the
    OTLP encoder, which fails the whole batch on one such string."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")
