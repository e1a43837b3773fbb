"""Mistral AI SDK (``mistralai`` >= 2: ``from mistralai.client import Mistral``): chat.complete and chat.stream, sync
and async, and embeddings.create. Provider ``mistral_ai`` (priced as genai-prices' ``mistral``).

Declarations on the method core. The SDK's keyword arguments are the wire body (``inputs`` is ``input`` on the wire).
A stream is the SDK's EventStream of CompletionEvents (``event.data`` is the chunk): the last chunk carries the usage,
a tool call arrives whole in one delta. Usage is OpenAI-chat shaped: ``prompt_tokens`` include the cache hits that
``prompt_tokens_details.cached_tokens`` reports; ``completion_tokens`` include reasoning.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from .. import guard
from ..content import media_part, parse_arguments, text_part
from ._base import UNFINISHED, Call, Inputs, StreamRecorder, copy_params, finish_reason, get, seq, stop_sequences
from ._core import Endpoint, Method, MethodInstrumentor, Request
from .openai import tool_definitions

PROVIDER = "mistral_ai"
_PARAMS = (
    ("temperature", gen_ai.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", gen_ai.GEN_AI_REQUEST_TOP_P),
    ("top_k", gen_ai.GEN_AI_REQUEST_TOP_K),
    ("frequency_penalty", gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY),
    ("random_seed", gen_ai.GEN_AI_REQUEST_SEED),
    ("max_tokens", gen_ai.GEN_AI_REQUEST_MAX_TOKENS),
)
_OUTPUT_TYPES = {"json_schema": "json", "json_object": "json", "text": "text"}
_NOT_WIRE = frozenset({"retries", "server_url", "timeout_ms", "http_headers"})
_TRACING_HOOK = "_mltrack_tracing_hook"  # memo on the client's hooks: its TracingHook, or None


@lru_cache(maxsize=64)
def _server(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _records_own_spans(instance: Any) -> bool:
    """Whether the SDK's own tracing (opt-in: MISTRAL_SDK_TELEMETRY or configure_telemetry) may record a span for
    this call, usage included: ours is then current around the request, so theirs nests under it, counted once."""
    hooks = instance.sdk_configuration.__dict__.get("_hooks")
    hook = hooks.__dict__.get(_TRACING_HOOK, False) if hooks is not None else None
    if hook is False:
        hook = next((h for h in hooks.before_request_hooks if type(h).__name__ == "TracingHook"), None)
        hooks.__dict__[_TRACING_HOOK] = hook
    if hook is None:
        return False
    state = hook.__dict__
    if (
        state.get("tracer_provider")
        or state.get("_auto_telemetry_provider")
        or state.get("_telemetry_use_global_provider")
    ):
        return True
    # Switched off (the hook resolved MISTRAL_SDK_TELEMETRY on an earlier request), or not resolved yet: the env says
    return not state.get("_telemetry_auto_disabled") and bool(os.environ.get("MISTRAL_SDK_TELEMETRY"))


def _route(endpoint: Endpoint, stream: bool | None) -> Any:
    def route(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Request:
        body = {k: v for k, v in kwargs.items() if k not in _NOT_WIRE}
        messages = body.get("messages")
        if isinstance(messages, (list, tuple)) and not all(type(m) is dict for m in messages):  # SDK models: fields
            body["messages"] = [m if isinstance(m, dict) else dict(getattr(m, "__dict__", {})) for m in messages]
        if "inputs" in body:
            body["input"] = body.pop("inputs")
        if stream is not None:
            body["stream"] = stream
        url = kwargs.get("server_url") or instance.sdk_configuration.get_server_details()[0]
        address, port = _server(url) if isinstance(url, str) else (None, None)
        nest = guard.guarded("instrumentation.begin", _records_own_spans, instance, default=False)
        return Request(endpoint, body, PROVIDER, address, port, stream=bool(stream), nest=bool(nest))

    return route


# --- content: Mistral messages and chunks -> GenAI messages and parts ------------------------------------------


def _parts(content: Any) -> list[Any]:
    """A string, or a list of chunks (text, thinking, image_url, document_url...), as GenAI parts."""
    if isinstance(content, str):
        return [text_part(content)] if content else []
    parts: list[Any] = []
    for chunk in seq(content):
        kind = get(chunk, "type")
        if kind == "text":
            parts.append(text_part(get(chunk, "text", "")))
        elif kind == "thinking":
            texts = [get(c, "text") for c in seq(get(chunk, "thinking"))]
            parts.append({"type": "reasoning", "content": "".join(t for t in texts if isinstance(t, str))})
        elif kind == "image_url":
            image = get(chunk, "image_url")
            parts.append(media_part(image if isinstance(image, str) else get(image, "url", ""), "image"))
        elif kind == "document_url":
            parts.append(media_part(get(chunk, "document_url", ""), "document"))
        else:
            parts.append({"type": kind if isinstance(kind, str) else "unknown"})
    return parts


def _tool_call(call: Any) -> dict[str, Any]:
    function, call_id = get(call, "function"), get(call, "id")
    name = get(function, "name")
    arguments = parse_arguments(get(function, "arguments"))
    return {"type": "tool_call", "id": call_id, "name": name if isinstance(name, str) else "", "arguments": arguments}


def _messages(messages: Any) -> list[Any]:
    out: list[Any] = []
    for message in seq(messages):
        role, content = get(message, "role", "user"), get(message, "content")
        if role == "tool":
            text = content if isinstance(content, str) else "".join(get(c, "text") or "" for c in seq(content))
            part = {"type": "tool_call_response", "id": get(message, "tool_call_id"), "response": text}
            out.append({"role": "tool", "parts": [part]})
        else:
            parts = _parts(content) + [_tool_call(c) for c in seq(get(message, "tool_calls"))]
            out.append({"role": role if isinstance(role, str) else "user", "parts": parts})
    return out


def chat_inputs(body: dict[str, Any]) -> Inputs:
    return Inputs(_messages(body.get("messages")), None, tool_definitions(body.get("tools")))


# --- requests and responses ----------------------------------------------------------------------------------


def chat_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    copy_params(body, _PARAMS, attributes)
    stops = stop_sequences(body.get("stop"))
    if stops:
        attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops
    if type(body.get("n")) is int and body["n"] != 1:
        attributes[gen_ai.GEN_AI_REQUEST_CHOICE_COUNT] = body["n"]
    kind = get(body.get("response_format"), "type")
    if isinstance(kind, str) and kind in _OUTPUT_TYPES:
        attributes[gen_ai.GEN_AI_OUTPUT_TYPE] = _OUTPUT_TYPES[kind]
    if body.get("stream") is True:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True


def embeddings_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    if isinstance(body.get("encoding_format"), str):
        attributes[gen_ai.GEN_AI_REQUEST_ENCODING_FORMATS] = (body["encoding_format"],)
    if type(body.get("output_dimension")) is int:
        attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = body["output_dimension"]


def _ids(result: Any, attributes: dict[str, Any]) -> None:
    for field, attribute in (("id", gen_ai.GEN_AI_RESPONSE_ID), ("model", gen_ai.GEN_AI_RESPONSE_MODEL)):
        value = get(result, field)
        if isinstance(value, str):
            attributes[attribute] = value


def _reason(raw: Any, default: str = "stop") -> str:
    """The convention's finish reason; Mistral's own ``model_length`` (the context window ran out) is ``length``."""
    return finish_reason("length" if raw == "model_length" else raw if isinstance(raw, str) else None, default)


def chat_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    attributes: dict[str, Any] = {}
    _ids(result, attributes)
    choices = seq(get(result, "choices"))
    reasons = tuple(r for r in (get(c, "finish_reason") for c in choices) if isinstance(r, str))
    if reasons:
        attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    output = None
    if capture:
        output = []
        for choice in choices:
            message = get(choice, "message")
            parts = _parts(get(message, "content")) + [_tool_call(c) for c in seq(get(message, "tool_calls"))]
            output.append({"role": "assistant", "parts": parts, "finish_reason": _reason(get(choice, "finish_reason"))})
    return attributes, output, get(result, "usage")


def embeddings_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    attributes: dict[str, Any] = {}
    _ids(result, attributes)
    data = seq(get(result, "data"))
    vector = get(data[0], "embedding") if data else None
    if isinstance(vector, list):
        attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(vector)
    return attributes, None, get(result, "usage")


# --- streams -------------------------------------------------------------------------------------------------


class ChatRecorder(StreamRecorder):
    """CompletionEvents: per choice the text and reasoning deltas (appended to lists), the whole tool calls by
    index, the finish reason; the last chunk's usage."""

    __slots__ = ("choices", "fields", "usage")

    def __init__(self, call: Call, hide_usage: bool = False) -> None:
        super().__init__(call, hide_usage)
        self.choices: dict[int, tuple[list[str], list[str], dict[int, Any], list[Any]]] = {}  # text, reasoning,
        self.fields: dict[str, Any] = {}  # tool calls, [finish reason]
        self.usage: Any = None

    def feed(self, event: Any) -> bool:
        chunk = event.data
        if chunk.usage is not None:
            self.usage = chunk.usage
        if not self.fields:
            self.fields = {"id": chunk.id, "model": chunk.model}
        for choice in chunk.choices:
            acc = self.choices.get(choice.index)
            if acc is None:
                acc = self.choices[choice.index] = ([], [], {}, [None])
            if choice.finish_reason is not None:
                acc[3][0] = choice.finish_reason
            delta = choice.delta
            content = delta.content
            if isinstance(content, str):
                if content:
                    (acc[0] if self.capture else self.seen).append(content)
            elif content:  # chunks: text and thinking
                for part in _parts(content):
                    if part["type"] in ("text", "reasoning"):
                        into = (acc[0] if part["type"] == "text" else acc[1]) if self.capture else self.seen
                        into.append(part["content"])
            calls = delta.tool_calls  # (UNSET is falsy)
            for call in seq(calls) if calls else ():  # whole, one delta each; the index tells parallel calls apart
                acc[2][get(call, "index", len(acc[2]))] = call
                if not self.capture:
                    self.seen.extend(_call_texts(call))
        return True

    def complete_at_close(self) -> bool:
        """Closed after every choice's finish reason, which comes with the usage (callers often stop there)."""
        return bool(self.choices) and all(acc[3][0] for acc in self.choices.values())

    def output_pieces(self) -> list[str]:
        if not self.capture:
            return self.seen
        pieces: list[str] = []
        for text, reasoning, calls, _ in self.choices.values():
            pieces += text + reasoning
            for call in calls.values():
                pieces += _call_texts(call)
        return pieces

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        attributes: dict[str, Any] = {}
        _ids(self.fields, attributes)
        ordered = sorted(self.choices.items())
        reasons = tuple(acc[3][0] for _, acc in ordered if acc[3][0])
        if reasons:
            attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
        output = None
        if self.capture:
            output = []
            for _, (text, reasoning, calls, (reason,)) in ordered:
                parts: list[Any] = [{"type": "reasoning", "content": "".join(reasoning)}] if reasoning else []
                parts += [text_part("".join(text))] if text else []
                parts += [_tool_call(c) for _, c in sorted(calls.items())]
                finish = _reason(reason, "stop" if complete else UNFINISHED)
                output.append({"role": "assistant", "parts": parts, "finish_reason": finish})
        return attributes, output, self.usage


def _call_texts(call: Any) -> list[str]:
    """A tool call's name and arguments as text (for an output estimate)."""
    function = get(call, "function")
    name, arguments = get(function, "name"), get(function, "arguments")
    return [t if isinstance(t, str) else str(t) for t in (name, arguments) if t]


# --- the declaration -----------------------------------------------------------------------------------------

_CHAT = Endpoint("chat", chat_request, chat_response, chat_inputs, ChatRecorder, usage_shape="openai.chat")
_EMBEDDINGS = Endpoint("embeddings", embeddings_request, embeddings_response, usage_shape="openai.chat")
_CHAT_MODULE, _EMBEDDINGS_MODULE = "mistralai.client.chat", "mistralai.client.embeddings"


class MistralInstrumentor(MethodInstrumentor):
    """Instruments the mistralai SDK (entry point `opentelemetry_instrumentor: mistralai`)."""

    module = "mistralai.client"
    dependencies = ("mistralai >= 2.0",)
    methods = (
        Method(_CHAT_MODULE, "Chat.complete", _route(_CHAT, False)),
        Method(_CHAT_MODULE, "Chat.complete_async", _route(_CHAT, False)),
        Method(_CHAT_MODULE, "Chat.stream", _route(_CHAT, True)),
        Method(_CHAT_MODULE, "Chat.stream_async", _route(_CHAT, True)),
        Method(_EMBEDDINGS_MODULE, "Embeddings.create", _route(_EMBEDDINGS, None)),
        Method(_EMBEDDINGS_MODULE, "Embeddings.create_async", _route(_EMBEDDINGS, None)),
    )
