"""Anthropic SDK: messages.create (sync/async, stream=True), messages.stream(...), messages.parse, beta messages.

Anthropic reports input tokens excluding the prompt cache; the usage we record adds cache reads and writes back
in (gen_ai.usage.input_tokens includes them) and records both counts. In a stream, input counts come from
message_start and output tokens from the final message_delta, whose usage is cumulative.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from .. import estimate, providers
from ..content import media_part, parse_arguments, text_part
from ..usage import count
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
from ._stainless import Endpoint, Sdk, StainlessInstrumentor

_PARAMS = (
    ("max_tokens", gen_ai.GEN_AI_REQUEST_MAX_TOKENS),
    ("temperature", gen_ai.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", gen_ai.GEN_AI_REQUEST_TOP_P),
    ("top_k", gen_ai.GEN_AI_REQUEST_TOP_K),
)
_USAGE_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def provider_name(client: Any, host: str | None) -> str:
    """aws.bedrock / gcp.vertex_ai for those clients, a known host's provider, else anthropic."""
    kind = type(client).__name__
    if "Bedrock" in kind:
        return "aws.bedrock"
    if "Vertex" in kind:
        return "gcp.vertex_ai"
    if "Foundry" in kind:
        return "azure.ai.inference"
    return (providers.for_client(client, host) if host else None) or "anthropic"


# --- the SDK's own spans (anthropic >= 2) ------------------------------------------------------------------------

_TRUE = frozenset({"1", "true", "yes", "on"})
_OWN_SPANS = "_mltrack_own_spans"  # per client: (its resolved open_telemetry option, whether asked, conversation)


def asked_for_own_spans(option: Mapping[str, Any]) -> bool:
    """Whether the user asked for the SDK's own spans: ANTHROPIC_OPEN_TELEMETRY set to a true value (the SDK itself
    reads only "false"), or a client option that only those spans use: a `tracer_provider` of their own, or
    `content_mode: "content"` (set in the option or by ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE)."""
    traces = option.get("traces")
    if not isinstance(traces, Mapping) or not traces.get("enabled"):
        return False
    if os.environ.get("ANTHROPIC_OPEN_TELEMETRY", "").strip().lower() in _TRUE:
        return True
    return option.get("tracer_provider") is not None or traces.get("content_mode") == "content"


def own_spans(client: Any, options: Any, attributes: dict[str, Any]) -> bool:
    """Keep one span per call: switch the SDK's own span off for this call unless the user asked for it.

    Returns True when the SDK's span is kept and records: ours is then made current so it nests under ours and
    the cost pipeline counts the call once. Nothing on the client changes: the request's options lose their
    span name (the SDK starts no span for a request without one), so uninstrument() restores the SDK's spans
    by removing this hook. A conversation id given in the client's option goes on our span too.
    """
    option = client.__dict__.get("_open_telemetry")
    if option is None:  # anthropic < 2: no spans of its own
        return False
    memo = client.__dict__.get(_OWN_SPANS)
    if memo is None or memo[0] is not option:  # the SDK replaces the option object when it changes
        conversation = option.get("conversation_id")
        memo = (option, asked_for_own_spans(option), conversation if isinstance(conversation, str) else None)
        client.__dict__[_OWN_SPANS] = memo
    if memo[2] is not None:
        attributes.setdefault(gen_ai.GEN_AI_CONVERSATION_ID, memo[2])
    if not memo[1]:
        options.span_name = None
        return False
    return _records_spans(client)


def _records_spans(client: Any) -> bool:
    """Whether this client's own span for a call records, into a real provider."""
    tracer = client._tracer
    if tracer is None or isinstance(tracer, trace.NoOpTracer):
        return False
    if isinstance(tracer, trace.ProxyTracer):  # follows the global provider, which may be set by now
        return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
    return True


# --- content: Anthropic blocks -> GenAI parts ----------------------------------------------------------------


def _source_part(source: Any, modality: str) -> dict[str, Any]:
    kind = get(source, "type")
    mime = get(source, "media_type")
    if kind == "base64":
        part = {"type": "blob", "modality": modality, "content": get(source, "data", "")}
        return {**part, "mime_type": mime} if mime else part
    if kind == "url":
        return media_part(get(source, "url", ""), modality, mime)
    if kind == "file":
        return {"type": "file", "modality": modality, "file_id": get(source, "file_id", "")}
    if kind == "text":
        return text_part(get(source, "data", ""))
    return {"type": kind if isinstance(kind, str) else "unknown"}


def _tool_result(content: Any) -> Any:
    if isinstance(content, (list, tuple)) and all(get(b, "type") == "text" for b in content):
        return "".join(get(b, "text", "") for b in content)
    return content


def blocks(content: Any) -> list[Any]:
    """Message content (a string or content blocks, dicts or SDK models) as GenAI parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [text_part(content)]
    parts: list[Any] = []
    for block in seq(content):
        kind = get(block, "type")
        if kind == "text":
            parts.append(text_part(get(block, "text", "")))
        elif kind == "tool_use":
            call = {"type": "tool_call", "id": get(block, "id"), "name": get(block, "name", "")}
            parts.append({**call, "arguments": get(block, "input")})
        elif kind == "tool_result":
            response = _tool_result(get(block, "content"))
            parts.append({"type": "tool_call_response", "id": get(block, "tool_use_id"), "response": response})
        elif kind == "thinking":
            parts.append({"type": "reasoning", "content": get(block, "thinking", "")})
        elif kind in ("image", "document"):
            parts.append(_source_part(get(block, "source"), "image" if kind == "image" else "document"))
        elif kind in ("server_tool_use", "mcp_tool_use"):
            details = {"type": get(block, "name", kind), "input": get(block, "input")}
            call = {"type": "server_tool_call", "id": get(block, "id"), "name": get(block, "name", kind)}
            parts.append({**call, "server_tool_call": details})
        elif isinstance(kind, str) and kind.endswith("_tool_result"):
            result = {"type": "server_tool_call_response", "id": get(block, "tool_use_id")}
            parts.append({**result, "server_tool_call_response": {"type": kind}})
        else:
            parts.append({"type": kind if isinstance(kind, str) else "unknown"})
    return parts


def messages(body: dict[str, Any]) -> list[Any]:
    out = []
    for message in seq(body.get("messages")):
        parts = blocks(get(message, "content"))
        role = get(message, "role", "user")
        if role == "user" and parts and all(p["type"] == "tool_call_response" for p in parts):
            role = "tool"  # a turn of tool results only, as the convention's role for them
        out.append({"role": role, "parts": parts})
    return out


def tool_definitions(tools: Any) -> list[Any] | None:
    if not tools:
        return None
    out = []
    for tool in seq(tools):
        kind = get(tool, "type")
        definition = {
            "type": "function" if kind in (None, "custom") else kind,
            "name": get(tool, "name", kind or ""),
            "description": get(tool, "description", ""),
        }
        schema = get(tool, "input_schema")
        if schema is not None:
            definition["parameters"] = schema
        out.append(definition)
    return out


def inputs(body: dict[str, Any]) -> Inputs:
    return Inputs(messages(body), blocks(body.get("system")) or None, tool_definitions(body.get("tools")))


# --- request / response --------------------------------------------------------------------------------------


def request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    copy_params(body, _PARAMS, attributes)
    stops = stop_sequences(body.get("stop_sequences"))
    if stops:
        attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops
    if body.get("stream") is True:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True


def _ids(message: Any, attributes: dict[str, Any]) -> None:
    message_id = get(message, "id")
    if isinstance(message_id, str):
        attributes[gen_ai.GEN_AI_RESPONSE_ID] = message_id
    model = get(message, "model")
    if isinstance(model, str):
        attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = model


def response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    attributes: dict[str, Any] = {}
    _ids(result, attributes)
    stop = get(result, "stop_reason")
    if isinstance(stop, str):
        attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (stop,)
    output = None
    if capture:
        parts = blocks(get(result, "content"))
        output = [{"role": get(result, "role", "assistant"), "parts": parts, "finish_reason": finish_reason(stop)}]
    return attributes, output, get(result, "usage")


# --- stream --------------------------------------------------------------------------------------------------


class MessageRecorder(StreamRecorder):
    """Raw message stream events; content blocks are accumulated as lists of deltas, joined once at the end."""

    __slots__ = ("blocks", "finished", "message", "stop", "usage")

    def __init__(self, call: Call, hide_usage: bool) -> None:
        super().__init__(call, hide_usage)
        self.message: Any = None
        self.usage: dict[str, Any] = {}
        self.finished = False  # message_delta's final usage arrived (message_start's output count is a stub)
        self.stop: str | None = None
        self.blocks: dict[int, list[Any]] = {}  # index -> [block, text deltas]

    def feed(self, event: Any) -> bool:
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta  # the output it adds: text, tool input JSON or thinking
            if delta.type == "text_delta":  # the common delta, read directly: get() costs ~100 ns more
                piece = delta.text
            else:
                piece = get(delta, "text") or get(delta, "partial_json") or get(delta, "thinking")
            if piece:
                if self.capture:
                    entry = self.blocks.get(event.index)
                    if entry is not None:
                        entry[1].append(piece)
                else:  # only the text, for an estimate should the final usage never arrive
                    self.seen.append(piece)
        elif kind == "content_block_start":
            if self.capture:
                self.blocks[event.index] = [event.content_block, []]
        elif kind == "message_delta":
            self.stop = event.delta.stop_reason or self.stop
            if event.usage is not None:
                self.finished = True
            self._add_usage(event.usage)
        elif kind == "message_start":
            self.message = event.message
            self._add_usage(event.message.usage)
        return True

    def _add_usage(self, usage: Any) -> None:
        """Later counts replace earlier ones: message_delta's usage is cumulative."""
        if usage is None:
            return
        for name in (*_USAGE_FIELDS, "output_tokens"):
            value = get(usage, name)
            if value is not None:
                self.usage[name] = value
        details = get(usage, "output_tokens_details")
        if details is not None:
            self.usage["output_tokens_details"] = details

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        attributes: dict[str, Any] = {}
        _ids(self.message, attributes)
        if self.stop:
            attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (self.stop,)
        output = None
        if self.capture:
            parts = [self._part(block, pieces) for _, (block, pieces) in sorted(self.blocks.items())]
            reason = finish_reason(self.stop, UNFINISHED if not complete else "stop")
            output = [{"role": "assistant", "parts": parts, "finish_reason": reason}]
        return attributes, output, (self.usage or None) if self.finished else None

    def output_pieces(self) -> list[str]:
        if not self.capture:
            return self.seen
        return [piece for _, pieces in self.blocks.values() for piece in pieces]

    def estimate(self) -> dict[str, Any]:
        """Input as message_start reported it when it arrived (else estimated); output estimated from the deltas."""
        usage = self.usage
        reported = count(usage.get("input_tokens"))
        if reported is None:
            return super().estimate()
        read = count(usage.get("cache_read_input_tokens")) or 0
        write = count(usage.get("cache_creation_input_tokens")) or 0
        tokens_in = reported + read + write
        model = self.request[1] if self.request is not None else None
        seen = estimate.text_tokens("".join(self.output_pieces()), model)
        tokens_out = max(count(usage.get("output_tokens")) or 0, seen)
        return estimated_usage(tokens_in, tokens_out, read, write)

    @staticmethod
    def _part(block: Any, pieces: list[str]) -> dict[str, Any]:
        kind = block.type
        if kind == "text":
            return text_part(block.text + "".join(pieces))
        if kind == "thinking":
            return {"type": "reasoning", "content": block.thinking + "".join(pieces)}
        if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
            arguments = parse_arguments("".join(pieces)) if pieces else block.input
            if kind == "tool_use":
                return {"type": "tool_call", "id": block.id, "name": block.name, "arguments": arguments}
            details = {"type": block.name, "input": arguments}
            return {"type": "server_tool_call", "id": block.id, "name": block.name, "server_tool_call": details}
        return blocks([block])[0]


# --- the declaration -----------------------------------------------------------------------------------------

_MESSAGES = Endpoint("chat", request, response, inputs, MessageRecorder, usage_shape="anthropic")

SDK = Sdk(
    module="anthropic",
    routes={"/v1/messages": _MESSAGES},
    provider_name=provider_name,
    instruments=("anthropic >= 0.40",),
    own_spans=own_spans,
)


class AnthropicInstrumentor(StainlessInstrumentor):
    """Instruments the anthropic SDK (entry point `opentelemetry_instrumentor: anthropic`)."""

    sdk = SDK
