"""Mistral AI SDK (`mistralai` >= 2, `from mistralai.client import Mistral`): chat.complete / stream and their
async forms, embeddings.create (sync and async). Provider ``mistral_ai``, priced as genai-prices' ``mistral``.

Declarations only: the SDK's keyword arguments are the request body (the SDK's names are the wire's, but
``inputs``, which is ``input`` on the wire); the core wraps the methods and records. A stream is the SDK's
EventStream of CompletionEvents (``event.data`` is the chunk); its last chunk carries the usage, a tool call arrives
whole in one delta. Usage is OpenAI-chat shaped: ``prompt_tokens`` (cache hits included, reported as
``prompt_tokens_details.cached_tokens``), ``completion_tokens`` (reasoning included).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from ..content import media_part, parse_arguments, text_part
from ._base import Call, Inputs, StreamRecorder, copy_params, finish_reason, get, seq, stop_sequences
from ._core import Endpoint, Method, MethodInstrumentor, Request

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
_REASONS = {"model_length": "length"}  # Mistral's own: the context window ran out
_NOT_WIRE = frozenset({"retries", "server_url", "timeout_ms", "http_headers"})


@lru_cache(maxsize=64)
def _server(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _body(instance: Any, kwargs: dict[str, Any], stream: bool | None) -> tuple[dict[str, Any], str | None, int | None]:
    """The request body (wire names, SDK message models as their field dicts) and the server it goes to."""
    body = {k: v for k, v in kwargs.items() if k not in _NOT_WIRE}
    messages = body.get("messages")
    if isinstance(messages, (list, tuple)) and not all(type(m) is dict for m in messages):
        body["messages"] = [m if isinstance(m, dict) else dict(getattr(m, "__dict__", {})) for m in messages]
    if "inputs" in body:
        body["input"] = body.pop("inputs")
    if stream is not None:
        body["stream"] = stream
    url = kwargs.get("server_url") or instance.sdk_configuration.get_server_details()[0]
    address, port = _server(url) if isinstance(url, str) else (None, None)
    return body, address, port


# --- content: Mistral messages -> GenAI messages --------------------------------------------------------------


def _parts(content: Any) -> list[Any]:
    """Message content (a string or a list of chunks: text, image_url, thinking, document_url...) as GenAI parts."""
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


def _tool_call_part(call: Any) -> dict[str, Any]:
    function = get(call, "function")
    name = get(function, "name")
    return {
        "type": "tool_call",
        "id": get(call, "id") if isinstance(get(call, "id"), str) else None,
        "name": name if isinstance(name, str) else "",
        "arguments": parse_arguments(get(function, "arguments")),
    }


def _messages(messages: Any) -> list[Any]:
    out: list[Any] = []
    for message in seq(messages):
        role = get(message, "role", "user")
        content = get(message, "content")
        if role == "tool":
            texts = [get(c, "text", "") for c in seq(content)]
            response = content if isinstance(content, str) else "".join(t for t in texts if isinstance(t, str))
            part = {"type": "tool_call_response", "id": get(message, "tool_call_id"), "response": response}
            out.append({"role": "tool", "parts": [part]})
            continue
        parts = _parts(content)
        parts.extend(_tool_call_part(c) for c in seq(get(message, "tool_calls")))
        out.append({"role": role if isinstance(role, str) else "user", "parts": parts})
    return out


def _tools(tools: Any) -> list[Any] | None:
    out = []
    for tool in seq(tools):
        spec = get(tool, "function")
        description = get(spec, "description")
        definition = {"type": "function", "name": get(spec, "name", ""), "description": description or ""}
        if isinstance(get(spec, "parameters"), dict):
            definition["parameters"] = get(spec, "parameters")
        out.append(definition)
    return out or None


def chat_inputs(body: dict[str, Any]) -> Inputs:
    return Inputs(_messages(body.get("messages")), None, _tools(body.get("tools")))


# --- requests and responses ----------------------------------------------------------------------------------


def chat_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    copy_params(body, _PARAMS, attributes)
    stops = stop_sequences(body.get("stop"))
    if stops:
        attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops
    n = body.get("n")
    if type(n) is int and n != 1:
        attributes[gen_ai.GEN_AI_REQUEST_CHOICE_COUNT] = n
    kind = get(body.get("response_format"), "type")
    if isinstance(kind, str) and kind in _OUTPUT_TYPES:
        attributes[gen_ai.GEN_AI_OUTPUT_TYPE] = _OUTPUT_TYPES[kind]
    if body.get("stream") is True:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True


def embeddings_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    encoding = body.get("encoding_format")
    if isinstance(encoding, str):
        attributes[gen_ai.GEN_AI_REQUEST_ENCODING_FORMATS] = (encoding,)
    if type(body.get("output_dimension")) is int:
        attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = body["output_dimension"]


def _ids(result: Any, attributes: dict[str, Any]) -> None:
    for field, attribute in (("id", gen_ai.GEN_AI_RESPONSE_ID), ("model", gen_ai.GEN_AI_RESPONSE_MODEL)):
        value = get(result, field)
        if isinstance(value, str):
            attributes[attribute] = value


def _reason(raw: Any, default: str = "stop") -> str:
    return finish_reason(_REASONS.get(raw, raw) if isinstance(raw, str) else None, default)


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
            parts = _parts(get(message, "content"))
            parts.extend(_tool_call_part(c) for c in seq(get(message, "tool_calls")))
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
    """CompletionEvents: per choice the text and reasoning deltas (appended to lists), whole tool calls, the
    finish reason; the last chunk's usage."""

    __slots__ = ("choices", "fields", "usage")

    def __init__(self, call: Call, hide_usage: bool = False) -> None:
        super().__init__(call, hide_usage)
        self.choices: dict[int, list[Any]] = {}  # index -> [text pieces, reasoning pieces, {index: tool call}, reason]
        self.fields: dict[str, Any] = {}
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
                acc = self.choices[choice.index] = [[], [], {}, None]
            if choice.finish_reason is not None:
                acc[3] = choice.finish_reason
            delta = choice.delta
            text = delta.content
            if isinstance(text, str):
                if text:
                    (acc[0] if self.capture else self.seen).append(text)
            elif text:  # chunks: text and thinking
                for part in _parts(text):
                    if part["type"] in ("text", "reasoning"):
                        (acc[0 if part["type"] == "text" else 1] if self.capture else self.seen).append(part["content"])
            for call in seq(delta.tool_calls):  # whole calls, one delta each; index tells parallel calls apart
                acc[2][get(call, "index", len(acc[2]))] = call
                if not self.capture:
                    self.seen.extend(t for t in (call.function.name, call.function.arguments) if isinstance(t, str))
        return True

    def output_pieces(self) -> list[str]:
        if not self.capture:
            return self.seen
        pieces: list[str] = []
        for text, reasoning, calls, _ in self.choices.values():
            pieces += text + reasoning
            for call in calls.values():
                arguments = call.function.arguments
                pieces += [call.function.name, arguments if isinstance(arguments, str) else str(arguments)]
        return pieces

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        attributes: dict[str, Any] = {}
        _ids(self.fields, attributes)
        ordered = sorted(self.choices.items())
        reasons = tuple(acc[3] for _, acc in ordered if acc[3])
        if reasons:
            attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
        output = None
        if self.capture:
            output = []
            for _, (text, reasoning, calls, reason) in ordered:
                parts: list[Any] = [{"type": "reasoning", "content": "".join(reasoning)}] if reasoning else []
                if text:
                    parts.append(text_part("".join(text)))
                parts.extend(_tool_call_part(c) for _, c in sorted(calls.items()))
                default = "stop" if complete else "incomplete"
                output.append({"role": "assistant", "parts": parts, "finish_reason": _reason(reason, default)})
        return attributes, output, self.usage


# --- the declaration -----------------------------------------------------------------------------------------

_CHAT = Endpoint("chat", chat_request, chat_response, chat_inputs, ChatRecorder, usage_shape="openai.chat")
_EMBEDDINGS = Endpoint("embeddings", embeddings_request, embeddings_response, usage_shape="openai.chat")


def _route(endpoint: Endpoint, stream: bool | None) -> Any:
    def route(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Request:
        body, address, port = _body(instance, kwargs, stream)
        return Request(endpoint, body, PROVIDER, address, port, stream=bool(stream))

    return route


_CHAT_MODULE, _EMBED_MODULE = "mistralai.client.chat", "mistralai.client.embeddings"


class MistralInstrumentor(MethodInstrumentor):
    """Instruments the mistralai SDK (entry point `opentelemetry_instrumentor: mistralai`)."""

    module = "mistralai.client"
    dependencies = ("mistralai >= 2.0",)
    methods = (
        Method(module=_CHAT_MODULE, name="Chat.complete", route=_route(_CHAT, False)),
        Method(module=_CHAT_MODULE, name="Chat.complete_async", route=_route(_CHAT, False)),
        Method(module=_CHAT_MODULE, name="Chat.stream", route=_route(_CHAT, True)),
        Method(module=_CHAT_MODULE, name="Chat.stream_async", route=_route(_CHAT, True)),
        Method(module=_EMBED_MODULE, name="Embeddings.create", route=_route(_EMBEDDINGS, None)),
        Method(module=_EMBED_MODULE, name="Embeddings.create_async", route=_route(_EMBEDDINGS, None)),
    )
