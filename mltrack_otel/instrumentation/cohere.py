"""Cohere SDK, v2 client: ``ClientV2`` / ``AsyncClientV2`` (and ``Client().v2``) ``chat``, ``chat_stream``, ``embed``
and ``rerank``.

Usage: a v2 response carries two counts, ``usage.billed_units`` (what Cohere charges for) and ``usage.tokens``
(what the model processed, the prompt template included). gen_ai.usage.* carry the billed counts: they are what
the price list applies to, so the cost we compute matches the invoice; ``usage.cached_tokens`` (inside the input
count) is the cache read. The SDK parses the counts as floats; whole numbers are taken as token counts.
Rerank bills search units, which genai-prices has no price for: a rerank call is counted with no tokens and
flagged unpriced (``mltrack.cost.unpriced``), never given a cost of 0. Cohere names no model in its responses, so
spans carry the request model only. A stream that Cohere ends in band with ``finish_reason: ERROR`` gets
``error.type`` ``ERROR`` and an error status; the SDK raises nothing for it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import Status, StatusCode

from .. import providers
from ..content import media_part, parse_arguments, text_part
from ..usage import read as read_usage
from ._base import (
    UNFINISHED,
    Call,
    Inputs,
    StreamRecorder,
    copy_params,
    estimated_usage,
    finish_reason,
    get,
    seq,
    stop_sequences,
)
from ._core import Endpoint, Method, MethodInstrumentor, Request
from .openai import tool_definitions

_PARAMS = (
    ("max_tokens", gen_ai.GEN_AI_REQUEST_MAX_TOKENS),
    ("temperature", gen_ai.GEN_AI_REQUEST_TEMPERATURE),
    ("p", gen_ai.GEN_AI_REQUEST_TOP_P),
    ("k", gen_ai.GEN_AI_REQUEST_TOP_K),
    ("seed", gen_ai.GEN_AI_REQUEST_SEED),
    ("frequency_penalty", gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY),
)
# Cohere's finish reasons -> the convention's (output messages); gen_ai.response.finish_reasons keeps Cohere's.
_FINISH = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length", "TOOL_CALL": "tool_call"}
_FINISH |= {"ERROR": "error", "TIMEOUT": "error"}
_OMIT = ...  # the SDK's default for a parameter the caller left out (typing.cast(Any, ...))


def _reason(raw: Any, default: str = UNFINISHED) -> str:
    return _FINISH.get(raw, finish_reason(raw, default)) if raw is not None else default


def usage_attributes(usage: Any) -> dict[str, int]:
    """gen_ai.usage.* from a v2 ``usage`` (or embed ``meta``): the billed counts, with the cache read."""
    return read_usage(usage, "cohere")


# --- content: Cohere messages -> GenAI parts ---------------------------------------------------------------------


def parts(content: Any) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return [text_part(content)]
    out: list[Any] = []
    for item in seq(content):
        kind = get(item, "type")
        if kind == "text":
            out.append(text_part(get(item, "text", "")))
        elif kind == "thinking":
            out.append({"type": "reasoning", "content": get(item, "thinking", "")})
        elif kind == "image_url":
            out.append(media_part(get(get(item, "image_url"), "url", ""), "image"))
        elif kind == "document":
            out.append(text_part(get(get(item, "document"), "data", "")))
        else:
            out.append({"type": kind if isinstance(kind, str) else "unknown"})
    return out


def _tool_call(call: Any, arguments: Any = None) -> dict[str, Any]:
    function = get(call, "function")
    raw = get(function, "arguments") if arguments is None else arguments
    found = {"type": "tool_call", "id": get(call, "id"), "name": get(function, "name", "")}
    return {**found, "arguments": parse_arguments(raw)}


def _parts(message: Any) -> list[Any]:
    """An assistant (or user, system) message's parts: content, then its tool plan as reasoning, then tool calls."""
    found = parts(get(message, "content"))
    plan = get(message, "tool_plan")
    if isinstance(plan, str) and plan:
        found.append({"type": "reasoning", "content": plan})
    return found + [_tool_call(call) for call in seq(get(message, "tool_calls"))]


def _tool_result(message: Any) -> dict[str, Any]:
    content = parts(get(message, "content"))
    texts = [p["content"] for p in content if p["type"] == "text"]
    result = {"type": "tool_call_response", "id": get(message, "tool_call_id")}
    return {
        "role": "tool",
        "parts": [{**result, "response": "".join(texts) if len(texts) == len(content) else content}],
    }


def chat_inputs(body: dict[str, Any]) -> Inputs:
    found = [
        _tool_result(m) if get(m, "role") == "tool" else {"role": get(m, "role", "user"), "parts": _parts(m)}
        for m in seq(body.get("messages"))
    ]
    return Inputs(found, None, tool_definitions(body.get("tools")))  # Cohere's tools are OpenAI chat-shaped


def _output(message: Any, reason: Any, default: str) -> list[Any]:
    return [{"role": "assistant", "parts": _parts(message), "finish_reason": _reason(reason, default)}]


def _id(result: Any, attributes: dict[str, Any]) -> dict[str, Any]:
    if isinstance(get(result, "id"), str):
        attributes[gen_ai.GEN_AI_RESPONSE_ID] = get(result, "id")
    return attributes


# --- requests and responses --------------------------------------------------------------------------------------


def chat_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    copy_params(body, _PARAMS, attributes)
    stops = stop_sequences(body.get("stop_sequences"))
    if stops:
        attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops
    if body.get("stream") is True:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
    if get(body.get("response_format"), "type") == "json_object":
        attributes[gen_ai.GEN_AI_OUTPUT_TYPE] = "json"


def chat_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    attributes = _id(result, {})
    reason = get(result, "finish_reason")
    if isinstance(reason, str):
        attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (reason,)
    attributes.update(usage_attributes(get(result, "usage")))
    return attributes, _output(get(result, "message"), reason, "stop") if capture else None, None


def embed_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    kinds = body.get("embedding_types")
    if isinstance(kinds, (list, tuple)) and kinds and all(isinstance(k, str) for k in kinds):
        attributes[gen_ai.GEN_AI_REQUEST_ENCODING_FORMATS] = tuple(kinds)
    if type(body.get("output_dimension")) is int:
        attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = body["output_dimension"]


def embed_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    attributes, embeddings = _id(result, {}), get(result, "embeddings")
    for kind in ("float_", "float", "int8", "uint8"):
        vectors = seq(get(embeddings, kind))
        if vectors and isinstance(vectors[0], list):
            attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(vectors[0])
            break
    attributes.update(usage_attributes(get(result, "meta")))
    return attributes, None, None


def rerank_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    """Counted with no tokens, so unpriced (search units have no price in genai-prices)."""
    return _id(result, estimated_usage(0, 0)), None, None


# --- chat_stream -------------------------------------------------------------------------------------------------


class ChatStreamRecorder(StreamRecorder):
    """chat_stream's typed events: text, tool plan and tool-call argument deltas kept as lists, joined at the end."""

    __slots__ = ("calls", "error", "id", "plan", "reason", "text", "usage")

    def __init__(self, call: Call, hide_usage: bool = False) -> None:
        super().__init__(call, hide_usage)
        self.id: Any = None
        self.text: list[str] = []
        self.plan: list[str] = []
        self.calls: list[list[Any]] = []  # [tool call start, argument deltas]
        self.reason: Any = None
        self.usage: Any = None
        self.error: Any = None

    def feed(self, event: Any) -> bool:
        kind = event.type
        if kind == "content-delta":  # the common event, read directly (a malformed one is salvaged by the core)
            content = event.delta.message.content
            if content.text:
                self.text.append(content.text)
            elif getattr(content, "thinking", None):  # a reasoning model's thoughts: reasoning, like the tool plan
                self.plan.append(content.thinking)
            return True
        delta = get(event, "delta")
        message = get(delta, "message")
        if kind == "tool-call-delta":
            piece = get(get(get(message, "tool_calls"), "function"), "arguments")
            if piece and self.calls:
                self.calls[-1][1].append(piece)
        elif kind == "tool-plan-delta":
            plan = get(message, "tool_plan")
            if plan:
                self.plan.append(plan)
        elif kind == "tool-call-start":
            self.calls.append([get(message, "tool_calls"), []])
        elif kind == "message-start":
            self.id = get(event, "id")
        elif kind == "message-end":
            self.reason, self.usage, self.error = get(delta, "finish_reason"), get(delta, "usage"), get(delta, "error")
        return True

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        attributes = _id({"id": self.id}, {})
        if isinstance(self.reason, str):
            attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (self.reason,)
        if self.usage is not None:
            attributes.update(usage_attributes(self.usage))
        if self.reason == "ERROR":
            attributes[error_attributes.ERROR_TYPE] = "ERROR"
            self.call.span.set_status(Status(StatusCode.ERROR, self.error if isinstance(self.error, str) else None))
        if not self.capture:
            return attributes, None, None
        found: list[Any] = [text_part("".join(self.text))] if self.text else []
        if self.plan:
            found.append({"type": "reasoning", "content": "".join(self.plan)})
        found += [_tool_call(start, "".join(pieces)) for start, pieces in self.calls]
        reason = _reason(self.reason, "stop" if complete else UNFINISHED)
        return attributes, [{"role": "assistant", "parts": found, "finish_reason": reason}], None

    def complete_at_close(self) -> bool:
        return self.reason is not None  # message-end, the last event, arrived before the caller closed

    def output_pieces(self) -> list[str]:
        return [*self.text, *self.plan, *(piece for _, pieces in self.calls for piece in pieces)]


# --- the declaration ---------------------------------------------------------------------------------------------

CHAT = Endpoint("chat", chat_request, chat_response, chat_inputs, ChatStreamRecorder)
EMBED = Endpoint("embeddings", embed_request, embed_response)
RERANK = Endpoint("rerank", lambda body, attributes: None, rerank_response)


def _server(client: Any) -> tuple[str | None, int | None, str]:
    """(server.address, server.port, provider name) of a v2 client, memoised on its wrapper per base URL."""
    wrapper = get(client, "_client_wrapper") or get(get(client, "_raw_client"), "_client_wrapper")  # Client().v2
    base_url = wrapper.get_base_url()
    cached = wrapper.__dict__.get("_mltrack_server")
    if cached is not None and cached[0] == base_url:
        return cached[1]
    url = urlsplit(base_url)
    host, port = url.hostname, url.port or {"https": 443, "http": 80}.get(url.scheme)
    kind = type(client).__name__
    provider = "aws.bedrock" if "Bedrock" in kind else (providers.for_host(host, port) if host else None) or "cohere"
    server = (host, port, provider)
    wrapper.__dict__["_mltrack_server"] = (base_url, server)
    return server


def _route(endpoint: Endpoint, stream: bool = False) -> Any:
    def route(instance: Any, args: tuple, kwargs: dict) -> Request:
        body = {k: v for k, v in kwargs.items() if v is not _OMIT and v is not None and k != "request_options"}
        if stream:
            body["stream"] = True
        address, port, provider = _server(instance)
        return Request(endpoint, body, provider, address, port, stream=stream)

    return route


def _methods(module: str, cls: str) -> tuple[Method, ...]:
    return (
        Method(module, f"{cls}.chat", _route(CHAT)),
        Method(module, f"{cls}.chat_stream", _route(CHAT, stream=True)),
        Method(module, f"{cls}.embed", _route(EMBED)),
        Method(module, f"{cls}.rerank", _route(RERANK)),
    )


class CohereInstrumentor(MethodInstrumentor):
    """Instruments the cohere SDK's v2 client (entry point `opentelemetry_instrumentor: cohere`)."""

    module = "cohere"
    dependencies = ("cohere >= 5.9",)
    methods = (*_methods("cohere.v2.client", "V2Client"), *_methods("cohere.v2.client", "AsyncV2Client"))
