"""A loopback fake of the OpenAI and Anthropic HTTP APIs (stdlib only).

:class:`FakeProvider` runs a real HTTP/1.1 server on ``127.0.0.1`` that speaks the OpenAI and
Anthropic wire formats closely enough that the unmodified ``openai`` and ``anthropic`` SDKs (sync
and async, JSON and SSE streaming, helpers such as ``chat.completions.parse``,
``responses.stream`` and ``messages.stream``) work against it. It is a test double for the
instrumentation tests and the engine of the offline demo and benchmarks, so everything it returns
is a deterministic function of the request.

Usage::

    with FakeProvider() as fake:
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="x")
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="x")
        fake.requests[-1].json  # what the SDK sent

Endpoints
    OpenAI: ``POST /v1/chat/completions``, ``/v1/responses``, ``/v1/embeddings``,
    ``/v1/completions`` (legacy). Azure paths ``/openai/deployments/{deployment}/{chat/completions,
    completions,embeddings}?api-version=...`` plus ``/openai/responses`` and ``/openai/v1/...``.
    Anthropic: ``POST /v1/messages`` and ``/v1/messages/count_tokens``.
    Other providers: one module each in ``testing/wire/`` (see there). Mistral's paths are OpenAI's, so its wire
    answers only the mistralai SDK's User-Agent, or a request naming it in ``x-fake-wire: mistral``.

Scenarios (see :data:`SCENARIOS`)
    Chosen per request by the ``x-fake-scenario`` header or, for callers that cannot set headers,
    a ``[[scenario:NAME]]`` token in the last user message text (any input string for embeddings,
    the prompt for legacy completions). The header wins. An unknown name gets a 400 error.

Deterministic content
    The answer is ``"Echo:"`` followed by the first 8 words of the last user message (scenario
    tokens removed), padded with lorem-ipsum filler to exactly ``n`` words, where
    ``n = stream_chunks * scenario.chunks_factor``. Each word is one stream delta (the first is
    ``"Echo:"``, every later one is ``" " + word``) and one output token. The text is truncated to
    the request's ``max_tokens``/``max_completion_tokens``/``max_output_tokens`` if that is smaller
    (finish reason ``"length"`` / stop reason ``"max_tokens"`` / response status ``"incomplete"``).
    JSON output (``response_format``/``text.format`` of type ``json_schema`` or ``json_object``) and
    tool-call arguments are an example object built from the schema (required properties filled
    with simple values by type: ``"example"``, ``1``, ``1.5``, ``true``, one-element arrays, first
    enum value); that JSON string is split into ``min(n, len(json))`` nearly equal fragments, each
    one delta and one output token. An Anthropic tool call is preceded by a text block with the two
    deltas ``"Calling"`` and ``" <tool name>."`` (so output tokens = 2 + argument fragments).

Usage formula
    The prompt is cut into *segments*: every chat/Anthropic message, the Anthropic ``system``
    prompt, the Responses ``instructions``, every Responses input item, every legacy-completion
    prompt and every embedding input. A segment's text is its string content or the ``text`` of
    its content parts (tool results: their string ``content``/``output``; tool calls, images and tool
    definitions count nothing). ``prompt tokens = sum(3 + len(text.split()))`` over segments (a token
    id list counts ``3 + len(list)``). Output tokens are the number of deltas described above; in the
    ``reasoning`` scenario the usage also reports ``reasoning_tokens = 2 * output`` (OpenAI
    ``completion_tokens``/Anthropic ``output_tokens`` then include them). Totals are sums.
    OpenAI counts cached tokens *inside* ``prompt_tokens`` (``prompt_tokens_details.cached_tokens``);
    Anthropic reports ``input_tokens`` *excluding* ``cache_creation_input_tokens`` and
    ``cache_read_input_tokens``.

Prompt caching
    The cacheable prefix is the segments up to and including the last one carrying a
    ``cache_control`` marker (a top-level ``cache_control`` marks the last segment); without a
    marker it is every segment but the last (all of them if there is only one). Anthropic: when the
    request carries ``cache_control`` anywhere, the first request with a given prefix reports
    ``cache_creation_input_tokens`` and later ones ``cache_read_input_tokens``; the
    ``cache-write``/``cache-read`` scenarios force either, for both providers (OpenAI reports
    ``cached_tokens``, or ``cache_write_tokens`` for a write).

DSPy adapters
    When the system prompt is a DSPy ChatAdapter/JSONAdapter one (``Your output fields are:`` followed by
    ``[[ ## field ## ]]`` sections), a plain answer is the ``[[ ## field ## ]]`` section of every output field
    followed by ``[[ ## completed ## ]]``, so a real ``dspy.Predict``/``dspy.ChainOfThought`` parses it. A field's
    value follows DSPy's type note: ``True``, ``1``, ``1.5``, the last option of a Literal/enum (the first under
    the ``tool`` scenario until the prompt carries an ``observation_``: a ReAct tool call), an example object for
    a JSON schema, else ``"Echo: "`` plus the first 8 words of the input field values. Each whitespace-separated
    word (with the whitespace before it) is one delta and one output token; no filler, ``stream_chunks`` does not
    apply. A JSONAdapter ``json_object`` request gets an object with those fields (``json_schema``: from the schema).

Models
    The response ``model`` is the request model, except that the aliases in :data:`MODEL_ALIASES`
    resolve to a dated snapshot (``gpt-4o-mini`` -> ``gpt-4o-mini-2024-07-18``,
    ``claude-3-5-haiku-latest`` -> ``claude-3-5-haiku-20241022``), as the real APIs do; Azure
    deployment paths answer with the body's model or else the deployment name.

SSE framing
    Streams use ``Transfer-Encoding: chunked`` on a keep-alive connection by default
    (``sse_framing="chunked"``), or ``Connection: close`` framing (``sse_framing="close"``). Error
    responses carry ``retry-after-ms: 1`` (both SDKs ignore ``retry-after: 0``, which is also sent,
    and would fall back to a 0.5 s+ backoff), so SDK retries are instant.
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import hashlib
import itertools
import json
import math
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "MODEL_ALIASES",
    "SCENARIOS",
    "FakeProvider",
    "RecordedRequest",
    "Scenario",
    "example_from_schema",
    "prompt_tokens_for_texts",
]

# --------------------------------------------------------------------------------------------------
# Tables: scenarios, errors, model aliases
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """How the fake answers. Add an entry to :data:`SCENARIOS` to define a new one."""

    description: str
    status: int | None = None  # answer with this provider-shaped HTTP error instead
    tool: bool = False  # call the (first / forced) tool when the request has tools
    drop: bool = False  # stream DROP_AFTER deltas then cut the TCP connection (non-stream: no reply)
    stream_error: bool = False  # stream DROP_AFTER deltas then an in-band SSE error event
    cache: str | None = None  # "write" | "read": force the prompt-cache outcome
    delay: float = 0.0  # seconds before each delta (non-stream: delay * deltas before replying)
    chunks_factor: int = 1  # deltas = stream_chunks * chunks_factor
    reasoning: bool = False  # report reasoning tokens = 2 * visible output tokens


SCENARIOS: dict[str, Scenario] = {
    "ok": Scenario("Echo text answer (default)."),
    "tool": Scenario("Call the first tool (or the tool_choice one) when the request has tools.", tool=True),
    "error-400": Scenario("400 invalid request error.", status=400),
    "error-401": Scenario("401 authentication error.", status=401),
    "error-429": Scenario("429 rate limit error.", status=429),
    "error-500": Scenario("500 internal server error.", status=500),
    "error-529": Scenario("529 overloaded error.", status=529),
    "drop": Scenario("Stream a few deltas then close the connection abruptly; non-stream: no reply.", drop=True),
    "stream-error": Scenario("Stream a few deltas then an in-band SSE error event.", stream_error=True),
    "cache-write": Scenario("Report the cacheable prefix as written to the prompt cache.", cache="write"),
    "cache-read": Scenario("Report the cacheable prefix as read from the prompt cache.", cache="read"),
    "slow": Scenario("20 ms before every delta.", delay=0.02),
    "long": Scenario("Ten times as many deltas.", chunks_factor=10),
    "reasoning": Scenario("Also report reasoning tokens (2 x visible output).", reasoning=True),
}

DEFAULT_SCENARIO = "ok"
SCENARIO_HEADER = "x-fake-scenario"
SCENARIO_TOKEN = re.compile(r"\[\[scenario:([A-Za-z0-9_.-]+)\]\]")
DROP_AFTER = 3  # content deltas sent before "drop" / "stream-error" strike
ECHO_WORDS = 8
FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
DEFAULT_EMBEDDING_DIMENSIONS = 16

# status -> (openai type, openai code, anthropic type, message)
ERRORS: dict[int, tuple[str, str | None, str, str]] = {
    400: ("invalid_request_error", None, "invalid_request_error", "Invalid request (fake provider)."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "authentication_error",
        "Invalid API key (fake provider).",
    ),
    404: ("invalid_request_error", "unknown_url", "not_found_error", "Not found (fake provider)."),
    429: ("requests", "rate_limit_exceeded", "rate_limit_error", "Rate limit reached (fake provider)."),
    500: ("server_error", None, "api_error", "Internal server error (fake provider)."),
    529: ("server_error", "overloaded", "overloaded_error", "Overloaded (fake provider)."),
}

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
REASONS |= {500: "Internal Server Error", 529: "Overloaded"}

#: Request model -> dated snapshot reported in the response (anything else is echoed unchanged).
MODEL_ALIASES: dict[str, str] = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "prod-gpt4o": "gpt-4o-2024-08-06",  # an Azure-style deployment name: the response names the model behind it
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
    "claude-3-5-sonnet-latest": "claude-3-5-sonnet-20241022",
    "claude-3-7-sonnet-latest": "claude-3-7-sonnet-20250219",
    "claude-sonnet-4-0": "claude-sonnet-4-20250514",
    "claude-opus-4-0": "claude-opus-4-20250514",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
}


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case names
    json: Any  # parsed JSON body, or None
    query: dict[str, str] = field(default_factory=dict)
    scenario: str | None = None  # resolved scenario name (None when not an API route)


class _FakeError(Exception):
    def __init__(self, status: int, message: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


# --------------------------------------------------------------------------------------------------
# Request analysis (pure functions)
# --------------------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """The text of a message content: a string, or the texts of its parts (tool results included)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif part.get("type") == "tool_result":
                    texts.append(_text_of(part.get("content")))
        return " ".join(t for t in texts if t)
    return ""


def prompt_tokens_for_texts(texts: list[str]) -> int:
    """The documented prompt-token formula: 3 + whitespace-separated words per segment."""
    return sum(3 + len(t.split()) for t in texts)


def _segment_tokens(segment: Any) -> int:
    if isinstance(segment, list):  # token ids
        return 3 + len(segment)
    return 3 + len(str(segment).split())


def _has_cache_control(obj: Any) -> bool:
    if isinstance(obj, dict):
        return "cache_control" in obj or any(_has_cache_control(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_cache_control(v) for v in obj)
    return False


def _resolve_ref(ref: str, root: dict) -> dict:
    node: Any = root
    for key in ref.lstrip("#/").split("/"):
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


_STRING_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uri": "https://example.com",
}


def example_from_schema(schema: Any, root: dict | None = None, _depth: int = 0) -> Any:
    """A simple value matching a JSON schema: required properties filled by type."""
    if not isinstance(schema, dict) or _depth > 12:
        return None
    root = schema if root is None else root
    if "$ref" in schema:
        return example_from_schema(_resolve_ref(schema["$ref"], root), root, _depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or [] if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return example_from_schema(options[0], root, _depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        names = schema.get("required")
        names = list(props) if names is None else names
        return {n: example_from_schema(props.get(n, {}), root, _depth + 1) for n in names}
    if kind == "array":
        return [example_from_schema(schema.get("items", {}), root, _depth + 1)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _STRING_FORMATS.get(schema.get("format", ""), "example")


def _fragments(text: str, n: int) -> list[str]:
    """Split text into min(n, len(text)) contiguous, nearly equal, non-empty fragments."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    cuts = [round(i * len(text) / n) for i in range(n + 1)]
    return [text[cuts[i] : cuts[i + 1]] for i in range(n)]


def _echo_pieces(user_text: str, n: int) -> list[str]:
    words = SCENARIO_TOKEN.sub(" ", user_text).split()[:ECHO_WORDS]
    seq = ["Echo:", *words]
    seq += [FILLER[i % len(FILLER)] for i in range(max(0, n - len(seq)))]
    seq = seq[:n]
    return [w if i == 0 else " " + w for i, w in enumerate(seq)]


# DSPy adapters ---------------------------------------------------------------------------------------

DSPY_COMPLETED = "[[ ## completed ## ]]"
_DSPY_OUTPUTS = re.compile(r"Your output fields are:\n(.*?)(?:\nAll interactions will be structured|\Z)", re.S)
_DSPY_FIELD = re.compile(r"^\d+\. `([^`]+)` \((.+?)\):", re.M)
_DSPY_MARKER = re.compile(r"\[\[ ## [^#]*? ## \]\]")


def dspy_output_fields(system_text: str) -> list[tuple[str, str]]:
    """(name, note) of the output fields a DSPy ChatAdapter/JSONAdapter system prompt asks for ([] if none).

    The note is the type hint DSPy writes next to the field in its structure section (``# note: the value you
    produce must ...``), or the annotation name when there is none (``str``, ``int``...).
    """
    if "[[ ## " not in system_text:
        return []
    found = _DSPY_OUTPUTS.search(system_text)
    if found is None:
        return []
    fields = []
    for name, annotation in _DSPY_FIELD.findall(found.group(1)):
        note = re.search(r"\{" + re.escape(name) + r"\}\s+# note: the value you produce (.*)", system_text)
        fields.append((name, note.group(1).strip() if note else annotation.strip()))
    return fields


def _dspy_input_text(user_text: str) -> str:
    """The input field values of a DSPy user message (markers and the closing instruction removed)."""
    text = user_text.split("Respond with the corresponding output fields")[0]
    text = text.split("Respond with a JSON object")[0]
    return _DSPY_MARKER.sub(" ", text)


def dspy_field_value(note: str, user_text: str, tool: bool = False) -> str:
    """A value DSPy parses for a field, as JSON text: chosen by the field's type note (default: an echo string).

    Literal/enum fields take the first option under the ``tool`` scenario until the conversation carries an
    observation (a ReAct tool call), else the last option (ReAct's ``finish``).
    """
    if note.startswith("must be True or False") or note == "bool":
        return "true"
    if note.startswith("must be a single int") or note == "int":
        return "1"
    if note.startswith("must be a single float") or note == "float":
        return "1.5"
    options = re.search(r"one of: (.*)$", note)
    if options:
        choices = [c.strip() for c in options.group(1).split(";") if c.strip()]
        first = tool and "observation_" not in user_text
        return json.dumps(choices[0] if first else choices[-1]) if choices else '""'
    schema = re.search(r"must adhere to the JSON schema: (.*)$", note)
    if schema:
        try:
            return json.dumps(example_from_schema(json.loads(schema.group(1))))
        except ValueError:
            return "{}"
    words = SCENARIO_TOKEN.sub(" ", _dspy_input_text(user_text)).split()[:ECHO_WORDS]
    return json.dumps(" ".join(["Echo:", *words]))


def _dspy_tool_arguments(system_text: str, tool: str) -> Any:
    """Example arguments for a tool a DSPy ReAct prompt describes (``(1) name, ... It takes arguments {...}.``)."""
    found = re.search(
        r"\) " + re.escape(tool) + r", whose description is .*? It takes arguments (\{.*?\})\.\n", system_text
    )
    if found is None:
        return None
    try:
        properties = ast.literal_eval(found.group(1))
    except (ValueError, SyntaxError):
        return None
    if not isinstance(properties, dict):
        return None
    return example_from_schema({"type": "object", "properties": properties})


def _dspy_pieces(fields: list[tuple[str, str]], user_text: str, tool: bool, system_text: str = "") -> list[str]:
    """A ChatAdapter answer: one ``[[ ## field ## ]]`` section per output field, then the completed marker.

    A JSON-object field after a chosen ReAct tool name gets example arguments from that tool's described schema.
    Each whitespace-separated word (with the whitespace before it) is one delta and one output token.
    """
    sections = []
    chosen: str | None = None
    for name, note in fields:
        value = json.loads(dspy_field_value(note, user_text, tool))
        if "one of:" in note and isinstance(value, str):
            chosen = value
        elif chosen is not None and value == {} and note.startswith("must adhere to the JSON schema"):
            value = _dspy_tool_arguments(system_text, chosen) or value
        text = value if isinstance(value, str) else json.dumps(value)
        sections.append(f"[[ ## {name} ## ]]\n{text}")
    answer = "\n\n".join([*sections, DSPY_COMPLETED])
    return re.findall(r"\s*\S+", answer)


@dataclass
class _ToolCall:
    id: str
    name: str
    arguments: str
    pieces: list[str]


@dataclass
class _Request:
    """The provider-independent view of a generation request."""

    model: str
    segments: list[Any]  # texts (or token-id lists) in prompt order
    user_text: str  # last user message text (scenario tokens still in)
    tools: list[tuple[str, Any]]  # (name, parameters schema)
    forced_tool: str | None = None  # tool_choice demands this tool
    after_tool_result: bool = False  # the conversation ends with a tool result
    json_schema: Any = None  # dict schema, or {} for json_object
    max_tokens: int | None = None
    cache_marker: int | None = None  # index of the last segment with cache_control
    cache_requested: bool = False
    cache_ttl: str = "5m"
    cache_key_extra: Any = None
    system_text: str = ""  # system prompt text (DSPy adapters describe their output fields there)


@dataclass
class _Plan:
    scenario: Scenario
    model: str
    prompt_tokens: int
    cache_action: str | None  # "read" | "write" | None
    cache_tokens: int
    cache_ttl: str
    pieces: list[str]  # text or JSON deltas
    tool: _ToolCall | None
    truncated: bool
    reasoning_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def visible_tokens(self) -> int:
        return len(self.pieces) + (len(self.tool.pieces) if self.tool else 0)

    @property
    def output_tokens(self) -> int:
        return self.visible_tokens + self.reasoning_tokens


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    provider: FakeProvider

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) or self.provider._stopping:
            return
        super().handle_error(request, client_address)  # traceback to stderr


class FakeProvider:
    """An OpenAI + Anthropic compatible HTTP server on loopback; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        stream_chunks: int = 30,
        *,
        sse_framing: str = "chunked",
    ) -> None:
        if sse_framing not in ("chunked", "close"):
            raise ValueError("sse_framing must be 'chunked' or 'close'")
        if stream_chunks < 1:
            raise ValueError("stream_chunks must be >= 1")
        self.host = host
        self.port = port
        self.stream_chunks = stream_chunks
        self.sse_framing = sse_framing
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._cache: set[str] = set()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), _Handler)
        server.provider = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wake handler threads parked on idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def clear(self) -> None:
        """Forget recorded requests and the prompt-cache state."""
        with self._lock:
            self.requests.clear()
            self._cache.clear()

    # -- the plug-in interface (the handler and testing/wire/ modules use it) -----------------------

    def record(self, rec: RecordedRequest) -> None:
        """Append a received request to :attr:`requests`."""
        with self._lock:
            self.requests.append(rec)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def next_id(self) -> int:
        """A fresh number for response, message and tool-call ids."""
        with self._lock:
            return next(self._ids)

    def _cache_lookup(self, key: str) -> bool:
        """True if key was already cached; caches it either way."""
        with self._lock:
            hit = key in self._cache
            self._cache.add(key)
            return hit

    def plan(self, req: _Request, scenario: Scenario, *, tool_preamble: bool = False) -> _Plan:
        """The shared answer to a request: echo text or tool call or JSON, usage, cache and reasoning counts.
        `tool_preamble`: a tool call comes after the text "Calling <name>." (Anthropic, Cohere)."""
        n = self.stream_chunks * scenario.chunks_factor
        pieces: list[str]
        tool = None
        tools = dict(req.tools)
        wants_tool = (scenario.tool and not req.after_tool_result) or req.forced_tool is not None
        if wants_tool and tools:
            name = req.forced_tool if req.forced_tool in tools else next(iter(tools))
            args = json.dumps(example_from_schema(tools[name] or {"type": "object", "properties": {}}))
            tool = _ToolCall(id=f"{self.next_id():06d}", name=name, arguments=args, pieces=_fragments(args, n))
            pieces = ["Calling", f" {name}."] if tool_preamble else []
        elif req.json_schema is not None:
            fields = dspy_output_fields(req.system_text) if not req.json_schema else None
            if req.json_schema:
                value = example_from_schema(req.json_schema)
            elif fields:  # DSPy JSONAdapter in json_object mode: the fields its system prompt asks for
                value = {
                    name: json.loads(dspy_field_value(kind, req.user_text, scenario.tool)) for name, kind in fields
                }
            else:
                value = {"answer": "".join(_echo_pieces(req.user_text, n))}
            pieces = _fragments(json.dumps(value), n)
        elif dspy_output_fields(req.system_text):
            pieces = _dspy_pieces(dspy_output_fields(req.system_text), req.user_text, scenario.tool, req.system_text)
        else:
            pieces = _echo_pieces(req.user_text, n)

        truncated = False
        if req.max_tokens is not None and req.max_tokens >= 0:
            budget = req.max_tokens
            if len(pieces) > budget:
                pieces, truncated = pieces[:budget], True
            budget -= len(pieces)
            if tool is not None and len(tool.pieces) > budget:
                tool.pieces, truncated = tool.pieces[:budget], True
                tool.arguments = "".join(tool.pieces)

        prompt_tokens = sum(_segment_tokens(s) for s in req.segments)
        if req.cache_marker is not None:
            end = req.cache_marker + 1
        else:
            end = len(req.segments) - 1 if len(req.segments) > 1 else len(req.segments)
        cache_tokens = sum(_segment_tokens(s) for s in req.segments[:end])
        cache_action = scenario.cache
        if cache_action is None and req.cache_requested:
            key = hashlib.sha256(
                json.dumps([req.model, req.cache_key_extra, req.segments[:end]], sort_keys=True).encode()
            ).hexdigest()
            cache_action = "read" if self._cache_lookup(key) else "write"
        plan = _Plan(
            scenario=scenario,
            model=MODEL_ALIASES.get(req.model, req.model),
            prompt_tokens=prompt_tokens,
            cache_action=cache_action,
            cache_tokens=cache_tokens if cache_action else 0,
            cache_ttl=req.cache_ttl,
            pieces=pieces,
            tool=tool,
            truncated=truncated,
            reasoning_tokens=0,
        )
        if scenario.reasoning:
            plan.reasoning_tokens = 2 * plan.visible_tokens
        return plan


# --------------------------------------------------------------------------------------------------
# HTTP handling
# --------------------------------------------------------------------------------------------------

_AZURE_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)/(.+)$")


def sse_frame(event: str | None, data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return ((f"event: {event}\n" if event else "") + f"data: {text}\n\n").encode()


def ndjson_frame(event: str | None, data: Any) -> bytes:
    return (json.dumps(data) + "\n").encode()


class WireFormat:
    """A provider API the fake speaks besides OpenAI's and Anthropic's: one module in ``testing/wire/`` each.

    A subclass declares the paths it answers (``paths``, matched from the start of the request path), how to find
    the text that may carry a ``[[scenario:NAME]]`` token, how the provider shapes an error, and ``handle`` for
    a request whose scenario is not an HTTP error. Planning (echo text, tools, usage numbers, caching) is shared:
    ``handler.server.provider.plan(GenerationRequest(...), scenario)``; answering too: ``handler.reply(...)``.
    """

    name: str = ""
    paths: re.Pattern[str]
    request_id_header: str = "x-request-id"
    # For a provider whose paths are another's (Mistral's are OpenAI's; the real APIs differ by host, which one
    # fake address cannot): answer only requests whose User-Agent matches, or that name this wire in x-fake-wire.
    user_agent: re.Pattern[str] | None = None

    def user_text(self, payload: Any, match: re.Match[str]) -> str:
        return ""

    def error(self, status: int, message: str) -> Any:
        """The provider's JSON error body for an HTTP status."""
        return {"error": {"code": status, "message": message}}

    def handle(
        self, handler: _Handler, payload: Any, match: re.Match[str], scenario: Scenario, request_id: str
    ) -> None:
        raise NotImplementedError

    def request_id(self, provider: FakeProvider) -> str:
        """A new request id, as the provider writes them."""
        return f"req_fake{provider.next_id():06d}"

    def scenario_name(self, rec: RecordedRequest, match: re.Match[str], payload: Any) -> str:
        """The request's scenario: the x-fake-scenario header, else a ``[[scenario:NAME]]`` token in `user_text`."""
        token = SCENARIO_TOKEN.search(self.user_text(payload, match) or "") if payload is not None else None
        return rec.headers.get(SCENARIO_HEADER) or (token.group(1) if token else None) or DEFAULT_SCENARIO

    def send_error(self, handler: _Handler, status: int, message: str, headers: list[tuple[str, str]]) -> None:
        """Answer an HTTP error: the provider's body (:meth:`error`), with retry-after on 429 and 5xx."""
        if status == 429 or status >= 500:
            headers = [*headers, ("retry-after", "0"), ("retry-after-ms", "1")]
        handler.send_json(status, self.error(status, message), headers)

    def serve(self, handler: _Handler, rec: RecordedRequest, match: re.Match[str], payload: Any) -> None:
        request_id = self.request_id(handler.server.provider)
        rec.scenario = self.scenario_name(rec, match, payload)
        handler.server.provider.record(rec)
        scenario = SCENARIOS.get(rec.scenario)
        try:
            if scenario is None:
                raise _FakeError(400, f"Unknown fake scenario {rec.scenario!r}; known: {sorted(SCENARIOS)}")
            if scenario.status is not None:
                raise _FakeError(scenario.status)
            self.handle(handler, payload, match, scenario, request_id)
        except _FakeError as exc:
            message = exc.message or ERRORS.get(exc.status, ERRORS[400])[3]
            self.send_error(handler, exc.status, message, [(self.request_id_header, request_id)])


# Provider modules under mltrack_otel/testing/wire/, imported on first use.
WIRE_MODULES: tuple[str, ...] = ("gemini", "mistral", "cohere", "ollama", "groq", "bedrock")
WIRE_HEADER = "x-fake-wire"  # names the wire format for a client whose User-Agent a `user_agent` wire does not know
_wire_formats: list[WireFormat] | None = None


def _wire_format(path: str, headers: dict[str, str]) -> tuple[WireFormat, re.Match[str]] | None:
    global _wire_formats
    if _wire_formats is None:
        import importlib

        _wire_formats = [importlib.import_module(f"{__package__}.wire.{name}").WIRE for name in WIRE_MODULES]
    for wire in _wire_formats:
        named = headers.get(WIRE_HEADER) == wire.name
        if wire.user_agent is not None and not named and not wire.user_agent.search(headers.get("user-agent", "")):
            continue
        found = wire.paths.match(path)
        if found is not None:
            return wire, found
    return None


def _route(path: str) -> tuple[str | None, str | None]:
    """(route key, azure deployment) for a request path."""
    path = path.rstrip("/")
    m = _AZURE_DEPLOYMENT.match(path)
    if m:
        return m.group(2), m.group(1)
    for prefix in ("/openai/v1/", "/openai/", "/v1/"):
        if path.startswith(prefix):
            return path[len(prefix) :], None
    return None, None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeProvider/1.0"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logging
        pass

    def setup(self) -> None:
        super().setup()
        self.server.provider._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.provider._track(self.connection, False)

    # -- plumbing ----------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = self.headers.get("content-length")
        if length is not None:
            return self.rfile.read(int(length))
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def _head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", f"Date: {self.date_time_string()}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send_json(self, status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> None:
        body = json.dumps(obj).encode()
        hdrs = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *(headers or [])]
        self.wfile.write(self._head(status, hdrs) + body)

    def _send_error(self, exc: _FakeError, anthropic: bool, request_id: str) -> None:
        openai_type, code, anthropic_type, default_message = ERRORS.get(exc.status, ERRORS[400])
        message = exc.message or default_message
        if anthropic:
            body: dict[str, Any] = {"type": "error", "error": {"type": anthropic_type, "message": message}}
            body["request_id"] = request_id
            headers = [("request-id", request_id)]
        else:
            body = {"error": {"message": message, "type": openai_type, "param": exc.param, "code": code}}
            headers = [("x-request-id", request_id)]
        if exc.status == 429 or exc.status >= 500:
            headers += [("retry-after", "0"), ("retry-after-ms", "1")]
        if exc.status == 529:
            headers.append(("x-should-retry", "true"))
        self.send_json(exc.status, body, headers)

    def abort(self) -> None:
        """Cut the connection: FIN (chunked framing sees a truncated body) or RST for close framing."""
        self.close_connection = True
        try:
            if self.server.provider.sse_framing == "close":
                time.sleep(0.05)  # let the client read what was sent before the reset
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- dispatch ----------------------------------------------------------------------------------

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_GET

    def _dispatch(self) -> None:
        provider = self.server.provider
        parts = urlsplit(self.path)
        body = self._read_body()
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        rec = RecordedRequest(self.command, parts.path, headers, payload, dict(parse_qsl(parts.query)))
        wire = _wire_format(parts.path, headers)
        if wire is not None:
            wire[0].serve(self, rec, wire[1], payload)
            return
        route, deployment = _route(parts.path)
        anthropic = route is not None and route.startswith("messages") and not parts.path.startswith("/openai")
        request_id = f"req_fake{provider.next_id():06d}"
        handler = _ROUTES.get(route or "")
        if handler is not None and isinstance(payload, dict):
            name = headers.get(SCENARIO_HEADER) or _scenario_from_payload(route or "", payload)
            rec.scenario = name or DEFAULT_SCENARIO
        provider.record(rec)
        try:
            if handler is None:
                raise _FakeError(404, f"Unknown path {parts.path} (fake provider).")
            if self.command != "POST" or not isinstance(payload, dict):
                raise _FakeError(400, "Expected a POST with a JSON object body (fake provider).")
            scenario = SCENARIOS.get(rec.scenario or DEFAULT_SCENARIO)
            if scenario is None:
                raise _FakeError(400, f"Unknown fake scenario {rec.scenario!r}; known: {sorted(SCENARIOS)}")
            if scenario.status is not None:
                raise _FakeError(scenario.status)
            handler(self, payload, scenario, deployment, request_id)
        except _FakeError as exc:
            self._send_error(exc, anthropic, request_id)

    # -- responses ---------------------------------------------------------------------------------

    def reply(
        self,
        plan: _Plan,
        request_id_header: tuple[str, str],
        stream: bool,
        build_json: Callable[[], Any],
        events: Callable[[], Iterator[tuple[str | None, Any, bool]]],
        error_event: Callable[[], tuple[str | None, Any]],
        *,
        frame: Callable[[str | None, Any], bytes] | None = None,
        content_type: str = "text/event-stream; charset=utf-8",
    ) -> None:
        """Answer a planned generation: JSON, or a stream of `events` framed as SSE (or by `frame`: NDJSON,
        AWS event-stream...), honouring the scenario's drop, in-band error and delay."""
        scenario = plan.scenario
        if not stream:
            if scenario.drop:
                self.abort()
                return
            if scenario.delay:
                time.sleep(scenario.delay * plan.visible_tokens)
            self.send_json(200, build_json(), [request_id_header])
            return

        chunked = self.server.provider.sse_framing == "chunked"
        if not chunked:
            self.close_connection = True
        hdrs = [("Content-Type", content_type), ("Cache-Control", "no-cache")]
        hdrs += [("Transfer-Encoding", "chunked")] if chunked else []
        # Frames are buffered and sent together unless the scenario sleeps between deltas: one
        # sendall per response keeps GIL ping-pong with an in-process client (benchmarks) low.
        out = [self._head(200, [*hdrs, request_id_header])]

        encode = frame or sse_frame

        def write(event: str | None, data: Any) -> None:
            framed = encode(event, data)
            out.append(b"%x\r\n%b\r\n" % (len(framed), framed) if chunked else framed)

        def flush() -> None:
            self.wfile.write(b"".join(out))
            out.clear()

        deltas = 0
        for event, data, is_delta in events():
            if is_delta:
                if deltas == DROP_AFTER and scenario.drop:
                    flush()
                    self.abort()
                    return
                if deltas == DROP_AFTER and scenario.stream_error:
                    write(*error_event())
                    break
                if scenario.delay:
                    flush()
                    time.sleep(scenario.delay)
                deltas += 1
            write(event, data)
        if chunked:
            out.append(b"0\r\n\r\n")
        flush()

    # OpenAI ---------------------------------------------------------------------------------------

    def _openai_usage(self, plan: _Plan) -> dict[str, Any]:
        cached = plan.cache_tokens if plan.cache_action == "read" else 0
        written = plan.cache_tokens if plan.cache_action == "write" else 0
        return {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": plan.output_tokens,
            "total_tokens": plan.prompt_tokens + plan.output_tokens,
            "prompt_tokens_details": {
                "cached_tokens": cached,
                "cache_write_tokens": written,
                "audio_tokens": 0,
            },
            "completion_tokens_details": {
                "reasoning_tokens": plan.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _openai_stream_error() -> tuple[str | None, Any]:
        return None, {"error": {"message": "Stream interrupted (fake provider).", "type": "server_error"}}

    def _chat(self, body: dict, scenario: Scenario, deployment: str | None, request_id: str) -> None:
        provider = self.server.provider
        req = _openai_chat_request(body, deployment)
        plan = provider.plan(req, scenario)
        cid = f"chatcmpl-fake{provider.next_id():06d}"
        created = int(time.time())
        finish = "length" if plan.truncated else "tool_calls" if plan.tool else "stop"
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": plan.model}
        base |= {"service_tier": "default", "system_fingerprint": "fp_fake0001"}
        tool_id = f"call_fake{plan.tool.id}" if plan.tool else ""

        def build_json() -> Any:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "annotations": [],
            }
            if plan.tool:
                fn = {"name": plan.tool.name, "arguments": plan.tool.arguments}
                message["tool_calls"] = [{"id": tool_id, "type": "function", "function": fn}]
            else:
                message["content"] = plan.text
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            return {
                **base,
                "object": "chat.completion",
                "choices": [choice],
                "usage": self._openai_usage(plan),
            }

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish_reason: str | None = None) -> dict:
            out = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                out["usage"] = None
            return out

        def events() -> Iterator[tuple[str | None, Any, bool]]:
            if plan.tool:
                fn = {"name": plan.tool.name, "arguments": ""}
                first = {"index": 0, "id": tool_id, "type": "function", "function": fn}
                yield (
                    None,
                    chunk({"role": "assistant", "content": None, "tool_calls": [first], "refusal": None}),
                    False,
                )
                for piece in plan.tool.pieces:
                    yield None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), True
            else:
                yield None, chunk({"role": "assistant", "content": "", "refusal": None}), False
                for piece in plan.pieces:
                    yield None, chunk({"content": piece}), True
            yield None, chunk({}, finish), False
            if include_usage:
                yield None, {**base, "choices": [], "usage": self._openai_usage(plan)}, False
            yield None, "[DONE]", False

        stream = bool(body.get("stream"))
        self.reply(plan, ("x-request-id", request_id), stream, build_json, events, self._openai_stream_error)

    def _completions(self, body: dict, scenario: Scenario, deployment: str | None, request_id: str) -> None:
        provider = self.server.provider
        prompt = body.get("prompt", "")
        segments = _input_segments(prompt)
        texts = [s for s in segments if isinstance(s, str)]
        req = _Request(
            model=body.get("model") or deployment or "",
            segments=segments,
            user_text=texts[-1] if texts else "",
            tools=[],
            max_tokens=body.get("max_tokens"),
        )
        plan = provider.plan(req, scenario)
        finish = "length" if plan.truncated else "stop"
        base = {"id": f"cmpl-fake{provider.next_id():06d}", "object": "text_completion"}
        base |= {"created": int(time.time()), "model": plan.model, "system_fingerprint": "fp_fake0001"}

        def build_json() -> Any:
            choice = {"text": plan.text, "index": 0, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice], "usage": self._openai_usage(plan)}

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(text: str, finish_reason: str | None = None) -> dict:
            out = {
                **base,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                out["usage"] = None
            return out

        def events() -> Iterator[tuple[str | None, Any, bool]]:
            for piece in plan.pieces:
                yield None, chunk(piece), True
            yield None, chunk("", finish), False
            if include_usage:
                yield None, {**base, "choices": [], "usage": self._openai_usage(plan)}, False
            yield None, "[DONE]", False

        stream = bool(body.get("stream"))
        self.reply(plan, ("x-request-id", request_id), stream, build_json, events, self._openai_stream_error)

    def _embeddings(self, body: dict, scenario: Scenario, deployment: str | None, request_id: str) -> None:
        inputs = body.get("input", "")
        segments = _input_segments(inputs)
        if scenario.drop:
            self.abort()
            return
        dims = body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, seg in enumerate(segments):
            vector = _embedding(json.dumps(seg), int(dims))
            packed = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": packed if as_base64 else vector})
        tokens = sum(_segment_tokens(s) for s in segments)
        model = body.get("model") or deployment or ""
        out = {
            "object": "list",
            "data": data,
            "model": MODEL_ALIASES.get(model, model),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        if scenario.delay:
            time.sleep(scenario.delay)
        self.send_json(200, out, [("x-request-id", request_id)])

    def _responses(self, body: dict, scenario: Scenario, deployment: str | None, request_id: str) -> None:
        provider = self.server.provider
        req = _responses_request(body, deployment)
        plan = provider.plan(req, scenario)
        rid = f"resp_fake{provider.next_id():06d}"
        item_id = f"msg_fake{provider.next_id():06d}"
        created = int(time.time())
        status = "incomplete" if plan.truncated else "completed"
        fmt = (body.get("text") or {}).get("format") or {"type": "text"}

        def response(state: str, output: list, usage: Any) -> dict:
            return {
                "id": rid,
                "object": "response",
                "created_at": created,
                "status": state,
                "background": False,
                "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if state == "incomplete" else None,
                "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"),
                "max_tool_calls": None,
                "model": plan.model,
                "output": output,
                "parallel_tool_calls": body.get("parallel_tool_calls", True),
                "previous_response_id": body.get("previous_response_id"),
                "reasoning": {"effort": None, "summary": None},
                "service_tier": "default",
                "store": body.get("store", True),
                "temperature": body.get("temperature", 1.0),
                "text": {"format": fmt, "verbosity": "medium"},
                "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools") or [],
                "top_logprobs": 0,
                "top_p": body.get("top_p", 1.0),
                "truncation": "disabled",
                "usage": usage,
                "user": None,
                "metadata": body.get("metadata") or {},
            }

        cached = plan.cache_tokens if plan.cache_action == "read" else 0
        usage = {
            "input_tokens": plan.prompt_tokens,
            "input_tokens_details": {
                "cached_tokens": cached,
                "cache_write_tokens": plan.cache_tokens if plan.cache_action == "write" else 0,
            },
            "output_tokens": plan.output_tokens,
            "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
            "total_tokens": plan.prompt_tokens + plan.output_tokens,
        }

        def part(text: str) -> dict:
            return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

        def item(state: str, text: str | None, arguments: str | None = None) -> dict:
            if plan.tool:
                return {
                    "id": f"fc_fake{plan.tool.id}",
                    "type": "function_call",
                    "status": state,
                    "arguments": arguments if arguments is not None else plan.tool.arguments,
                    "call_id": f"call_fake{plan.tool.id}",
                    "name": plan.tool.name,
                }
            content = [] if text is None else [part(text)]
            return {
                "id": item_id,
                "type": "message",
                "status": state,
                "content": content,
                "role": "assistant",
            }

        def build_json() -> Any:
            return response(status, [item(status, plan.text)], usage)

        def events() -> Iterator[tuple[str | None, Any, bool]]:
            seq = itertools.count()

            def ev(kind: str, **fields: Any) -> tuple[str, dict]:
                return kind, {"type": kind, "sequence_number": next(seq), **fields}

            yield (*ev("response.created", response=response("in_progress", [], None)), False)
            yield (*ev("response.in_progress", response=response("in_progress", [], None)), False)
            yield (
                *ev("response.output_item.added", output_index=0, item=item("in_progress", None, "")),
                False,
            )
            loc = {"output_index": 0}
            if plan.tool:
                fc_id = f"fc_fake{plan.tool.id}"
                for piece in plan.tool.pieces:
                    yield (
                        *ev("response.function_call_arguments.delta", item_id=fc_id, **loc, delta=piece),
                        True,
                    )
                args = plan.tool.arguments
                yield (
                    *ev("response.function_call_arguments.done", item_id=fc_id, **loc, arguments=args),
                    False,
                )
            else:
                loc |= {"item_id": item_id, "content_index": 0}
                yield (*ev("response.content_part.added", **loc, part=part("")), False)
                for piece in plan.pieces:
                    yield (*ev("response.output_text.delta", **loc, delta=piece, logprobs=[]), True)
                yield (*ev("response.output_text.done", **loc, text=plan.text, logprobs=[]), False)
                yield (*ev("response.content_part.done", **loc, part=part(plan.text)), False)
            done_item = item(status, plan.text)
            yield (*ev("response.output_item.done", output_index=0, item=done_item), False)
            final = "response.incomplete" if plan.truncated else "response.completed"
            yield (*ev(final, response=response(status, [done_item], usage)), False)

        def error_event() -> tuple[str | None, Any]:
            data = {"type": "error", "code": "server_error", "message": "Stream interrupted (fake provider)."}
            return "error", {**data, "param": None, "sequence_number": 9999}

        stream = bool(body.get("stream"))
        self.reply(plan, ("x-request-id", request_id), stream, build_json, events, error_event)

    # Anthropic ------------------------------------------------------------------------------------

    def _messages(self, body: dict, scenario: Scenario, deployment: str | None, request_id: str) -> None:
        provider = self.server.provider
        req = _anthropic_request(body)
        plan = provider.plan(req, scenario, tool_preamble=True)
        mid = f"msg_fake{provider.next_id():06d}"
        stop_reason = "max_tokens" if plan.truncated else "tool_use" if plan.tool else "end_turn"
        written = plan.cache_tokens if plan.cache_action == "write" else 0
        read = plan.cache_tokens if plan.cache_action == "read" else 0
        input_tokens = plan.prompt_tokens - written - read
        tool_id = f"toolu_fake{plan.tool.id}" if plan.tool else ""

        def usage(output_tokens: int) -> dict:
            out: dict[str, Any] = {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": written if plan.cache_ttl != "1h" else 0,
                    "ephemeral_1h_input_tokens": written if plan.cache_ttl == "1h" else 0,
                },
                "output_tokens": output_tokens,
                "service_tier": "standard",
            }
            if plan.reasoning_tokens:
                out["output_tokens_details"] = {"thinking_tokens": plan.reasoning_tokens}
            return out

        def message(content: list, reason: str | None, output_tokens: int) -> dict:
            return {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": plan.model,
                "content": content,
                "stop_reason": reason,
                "stop_sequence": None,
                "usage": usage(output_tokens),
            }

        def tool_input() -> Any:
            try:
                return json.loads(plan.tool.arguments) if plan.tool else {}
            except ValueError:  # truncated by max_tokens
                return {}

        def build_json() -> Any:
            content: list[dict] = []
            if plan.pieces or not plan.tool:
                content.append({"type": "text", "text": plan.text})
            if plan.tool:
                content.append({"type": "tool_use", "id": tool_id, "name": plan.tool.name, "input": tool_input()})
            return message(content, stop_reason, plan.output_tokens)

        def events() -> Iterator[tuple[str | None, Any, bool]]:
            yield "message_start", {"type": "message_start", "message": message([], None, 1)}, False
            yield "ping", {"type": "ping"}, False
            index = 0
            if plan.pieces or not plan.tool:
                block = {"type": "text", "text": ""}
                yield (
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                    False,
                )
                for piece in plan.pieces:
                    delta = {"type": "text_delta", "text": piece}
                    yield (
                        "content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": delta},
                        True,
                    )
                yield "content_block_stop", {"type": "content_block_stop", "index": 0}, False
                index = 1
            if plan.tool:
                block = {"type": "tool_use", "id": tool_id, "name": plan.tool.name, "input": {}}
                start = {"type": "content_block_start", "index": index, "content_block": block}
                yield "content_block_start", start, False
                for i, piece in enumerate(["", *plan.tool.pieces]):
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    data = {"type": "content_block_delta", "index": index, "delta": delta}
                    yield "content_block_delta", data, i > 0
                yield "content_block_stop", {"type": "content_block_stop", "index": index}, False
            delta = {"stop_reason": stop_reason, "stop_sequence": None}
            usage_delta = {"output_tokens": plan.output_tokens}
            yield "message_delta", {"type": "message_delta", "delta": delta, "usage": usage_delta}, False
            yield "message_stop", {"type": "message_stop"}, False

        def error_event() -> tuple[str | None, Any]:
            err = {"type": "overloaded_error", "message": "Overloaded (fake provider)."}
            return "error", {"type": "error", "error": err}

        stream = bool(body.get("stream"))
        self.reply(plan, ("request-id", request_id), stream, build_json, events, error_event)

    def _count_tokens(self, body: dict, scenario: Scenario, deployment: str | None, request_id: str) -> None:
        req = _anthropic_request(body)
        tokens = sum(_segment_tokens(s) for s in req.segments)
        self.send_json(200, {"input_tokens": tokens}, [("request-id", request_id)])


_ROUTES: dict[str, Callable[[_Handler, dict, Scenario, str | None, str], None]] = {
    "chat/completions": _Handler._chat,
    "completions": _Handler._completions,
    "embeddings": _Handler._embeddings,
    "responses": _Handler._responses,
    "messages": _Handler._messages,
    "messages/count_tokens": _Handler._count_tokens,
}


# --------------------------------------------------------------------------------------------------
# Provider request parsing
# --------------------------------------------------------------------------------------------------


def _input_segments(value: Any) -> list[Any]:
    """Segments of a legacy-completions prompt / embeddings input: str, [str], [int], [[int]]."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [value]
        return [v if isinstance(v, (str, list)) else str(v) for v in value]
    return [str(value)]


def _scenario_from_payload(route: str, body: dict) -> str | None:
    if route in ("chat/completions", "messages", "messages/count_tokens"):
        texts = [last_user_text(body.get("messages") or [])]
    elif route == "responses":
        texts = [_responses_request(body, None).user_text]
    elif route in ("completions", "embeddings"):
        key = "prompt" if route == "completions" else "input"
        texts = [s for s in _input_segments(body.get(key, "")) if isinstance(s, str)]
        texts = texts[-1:] if route == "completions" else texts
    else:
        texts = []
    for text in texts:
        m = SCENARIO_TOKEN.search(text)
        if m:
            return m.group(1)
    return None


def last_user_text(messages: list, text: Callable[[Any], str] = _text_of) -> str:
    """The `text` of the last ``role: user`` message's content ("" when there is none)."""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return text(msg.get("content"))
    return ""


def openai_tools(body: dict) -> list[tuple[str, Any]]:
    """(name, JSON schema) of each function in an OpenAI-shaped ``tools`` list."""
    tools = []
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("name"):
            tools.append((fn["name"], fn.get("parameters")))
    return tools


def openai_tool_choice(
    body: dict, tools: list[tuple[str, Any]], required: tuple[str, ...] = ("required",)
) -> tuple[str | None, list[tuple[str, Any]]]:
    """(forced tool name, tools offered) under an OpenAI-shaped ``tool_choice``: one of `required` forces the
    first tool, ``{"function": {"name"}}`` that one, ``"none"`` offers none."""
    choice = body.get("tool_choice")
    forced = None
    if choice in required and tools:
        forced = tools[0][0]
    elif isinstance(choice, dict):
        forced = (choice.get("function") or {}).get("name")
    return forced, [] if choice == "none" else tools


def openai_json_schema(body: dict) -> Any:
    """The schema an OpenAI-shaped ``response_format`` asks the answer to follow: its ``json_schema.schema``
    (an empty object schema when missing), ``{}`` for ``json_object``, None for plain text."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema") or {"type": "object", "properties": {}}
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {}
    return None


def _openai_chat_request(body: dict, deployment: str | None) -> _Request:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    forced, tools = openai_tool_choice(body, openai_tools(body))
    max_tokens = body.get("max_completion_tokens")
    return _Request(
        model=body.get("model") or deployment or "",
        segments=[_text_of(m.get("content")) for m in messages],
        user_text=last_user_text(messages),
        tools=tools,
        forced_tool=forced,
        after_tool_result=bool(messages) and messages[-1].get("role") in ("tool", "function"),
        json_schema=openai_json_schema(body),
        max_tokens=max_tokens if max_tokens is not None else body.get("max_tokens"),
        system_text="\n".join(_text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer")),
    )


def _responses_request(body: dict, deployment: str | None) -> _Request:
    segments: list[Any] = []
    if isinstance(body.get("instructions"), str):
        segments.append(body["instructions"])
    raw = body.get("input", "")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else [i for i in raw if isinstance(i, dict)]
    user_text = ""
    for it in items:
        text = _text_of(it.get("content")) if "content" in it else it.get("output", "")
        segments.append(text if isinstance(text, str) else "")
        if it.get("role") == "user":
            user_text = text if isinstance(text, str) else ""
    tools = [(t["name"], t.get("parameters")) for t in body.get("tools") or [] if t.get("type") == "function"]
    choice = body.get("tool_choice")
    forced = None
    if choice == "required" and tools:
        forced = tools[0][0]
    elif isinstance(choice, dict) and choice.get("type") == "function":
        forced = choice.get("name")
    if choice == "none":
        tools = []
    schema = None
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        schema = fmt.get("schema") or {"type": "object", "properties": {}}
    elif fmt.get("type") == "json_object":
        schema = {}
    return _Request(
        model=body.get("model") or deployment or "",
        segments=segments,
        user_text=user_text,
        tools=tools,
        forced_tool=forced,
        after_tool_result=bool(items) and items[-1].get("type") == "function_call_output",
        json_schema=schema,
        max_tokens=body.get("max_output_tokens"),
        system_text=body["instructions"] if isinstance(body.get("instructions"), str) else "",
    )


def _anthropic_request(body: dict) -> _Request:
    segments: list[Any] = []
    marker = None
    ttl = "5m"
    system = body.get("system")
    if system:
        if _has_cache_control(system):
            marker = 0
        segments.append(_text_of(system))
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    for msg in messages:
        if _has_cache_control(msg.get("content")):
            marker = len(segments)
        segments.append(_text_of(msg.get("content")))
    if body.get("cache_control") and segments:
        marker = len(segments) - 1
    for found in re.finditer(r'"ttl": "(\w+)"', json.dumps([body.get("system"), messages, body.get("tools")])):
        ttl = found.group(1)
    tools = [(t["name"], t.get("input_schema")) for t in body.get("tools") or [] if "input_schema" in t]
    choice = body.get("tool_choice") or {}
    forced = None
    if choice.get("type") == "any" and tools:
        forced = tools[0][0]
    elif choice.get("type") == "tool":
        forced = choice.get("name")
    if choice.get("type") == "none":
        tools = []
    last = messages[-1] if messages else {}
    last_content = last.get("content")
    after_tool = isinstance(last_content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last_content
    )
    user_text = ""
    for msg in reversed(messages):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):
                texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
                user_text = " ".join(texts) if any(texts) else _text_of(content)
            else:
                user_text = _text_of(content)
            break
    return _Request(
        model=body.get("model") or "",
        segments=segments,
        user_text=user_text,
        tools=tools,
        forced_tool=forced,
        after_tool_result=after_tool,
        max_tokens=body.get("max_tokens"),
        cache_marker=marker,
        cache_requested=_has_cache_control(body),
        cache_ttl=ttl,
        cache_key_extra=body.get("tools"),
        system_text=_text_of(system) if system else "",
    )


def _embedding(seed: str, dims: int) -> list[float]:
    """A deterministic float32-exact vector in [-1, 1] derived from the input."""
    raw = b"".join(hashlib.sha256(f"{seed}\x00{k}".encode()).digest() for k in range(math.ceil(dims / 32)))
    values = [(b - 127.5) / 127.5 for b in raw[:dims]]
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *values)))


# What wire-format modules build on (testing/wire/).
GenerationRequest = _Request
Plan = _Plan
FakeError = _FakeError
echo_pieces = _echo_pieces
embedding = _embedding
text_of = _text_of


# --------------------------------------------------------------------------------------------------
# Command line: run the fake in the foreground for an offline demo
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the fake OpenAI/Anthropic provider on loopback.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stream-chunks", type=int, default=30)
    args = parser.parse_args(argv)
    with FakeProvider(port=args.port, stream_chunks=args.stream_chunks) as fake:
        sys.stderr.write(f"fake provider: OPENAI_BASE_URL={fake.openai_base_url} ANTHROPIC_BASE_URL={fake.url}\n")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
