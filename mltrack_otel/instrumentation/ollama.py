"""Ollama SDK (ollama-python >= 0.4): chat, generate, embed and the older embeddings, sync and async, streams.

Every API call of the SDK goes through ``Client._request`` / ``AsyncClient._request(cls, method, path, *,
json=body, stream=...)``, with the body already in Ollama's wire shape: one choke point, routed by path. A stream
is the SDK's generator of ``ChatResponse`` / ``GenerateResponse`` chunks, recorded as the caller reads it; the last
one (``done: true``) carries ``done_reason`` and the counts (``prompt_eval_count`` in, ``eval_count`` out, thinking
included), so a stream stopped before it is estimated.

The provider is ``ollama`` wherever the server is. A model served from this machine or a private network is never
charged a cloud price (``mltrack.cost.local``, see hosts.py); one served by a remote Ollama (ollama.com's cloud
models) is unpriced unless a price override names it, as genai-prices has no Ollama prices.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from ..content import text_part
from ._base import UNFINISHED, Call, Inputs, StreamRecorder, copy_params, finish_reason, get, seq, stop_sequences
from ._core import Endpoint, Method, MethodInstrumentor, Request, argument
from .openai import tool_definitions

PROVIDER = "ollama"
_OPTIONS = (
    ("temperature", gen_ai.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", gen_ai.GEN_AI_REQUEST_TOP_P),
    ("top_k", gen_ai.GEN_AI_REQUEST_TOP_K),
    ("frequency_penalty", gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY),
    ("seed", gen_ai.GEN_AI_REQUEST_SEED),
)


# --- requests ------------------------------------------------------------------------------------------------


def generation_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    """chat and generate: the sampling options, the output cap (num_predict), JSON output, streaming."""
    options = body.get("options")
    if isinstance(options, dict):
        copy_params(options, _OPTIONS, attributes)
        limit = options.get("num_predict")
        if type(limit) is int and limit >= 0:  # -1: no limit, -2: fill the context
            attributes[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] = limit
        stops = stop_sequences(options.get("stop"))
        if stops:
            attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops
    if body.get("format"):  # "json" or a JSON schema
        attributes[gen_ai.GEN_AI_OUTPUT_TYPE] = "json"
    if body.get("stream") is True:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True


def embed_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    if type(body.get("dimensions")) is int:
        attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = body["dimensions"]


def _images(images: Any) -> list[dict[str, Any]]:
    return [{"type": "blob", "modality": "image", "content": i} for i in seq(images) if isinstance(i, str)]


def _tool_call(call: Any) -> dict[str, Any]:
    function = get(call, "function")
    name, arguments = get(function, "name", ""), get(function, "arguments")
    return {"type": "tool_call", "id": get(call, "id"), "name": name, "arguments": arguments}


def chat_messages(messages: Any) -> list[Any]:
    """Ollama messages (role, content, images, thinking, tool_calls, tool_name) as GenAI messages."""
    out: list[Any] = []
    for message in seq(messages):
        role, content = get(message, "role", "user"), get(message, "content")
        if role == "tool":
            result = {"type": "tool_call_response", "id": None, "response": content}
            name = get(message, "tool_name")
            out.append({"role": "tool", "parts": [result], **({"name": name} if isinstance(name, str) else {})})
            continue
        thinking = get(message, "thinking")
        parts: list[Any] = [{"type": "reasoning", "content": thinking}] if thinking else []
        parts += [text_part(content)] if content else []
        parts += _images(get(message, "images")) + [_tool_call(c) for c in seq(get(message, "tool_calls"))]
        out.append({"role": role, "parts": parts})
    return out


def chat_inputs(body: dict[str, Any]) -> Inputs:
    return Inputs(chat_messages(body.get("messages")), None, tool_definitions(body.get("tools")))


def generate_inputs(body: dict[str, Any]) -> Inputs:
    system = body.get("system")
    prompt = [text_part(body["prompt"])] if isinstance(body.get("prompt"), str) else []
    messages = [{"role": "user", "parts": prompt + _images(body.get("images"))}]
    return Inputs(messages, [text_part(system)] if isinstance(system, str) and system else None)


# --- responses -----------------------------------------------------------------------------------------------


def _output(texts: list[str], thinking: list[str], calls: list[Any], reason: str) -> list[Any]:
    parts: list[Any] = [{"type": "reasoning", "content": "".join(thinking)}] if thinking else []
    parts += [text_part("".join(texts))] if texts else []
    parts += [_tool_call(c) for c in calls]
    return [{"role": "assistant", "parts": parts, "finish_reason": "tool_call" if calls else reason}]


def _attributes(result: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    model, reason = get(result, "model"), get(result, "done_reason")
    if isinstance(model, str):
        attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = model
    if isinstance(reason, str):
        attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (reason,)
    return attributes


def generation_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    """chat (text in ``message``) and generate (text in ``response``): the counts are on the result itself."""
    output = None
    if capture:
        message = get(result, "message")
        text = get(message, "content") if message is not None else get(result, "response")
        thinking = get(message if message is not None else result, "thinking")
        calls = list(seq(get(message, "tool_calls")))
        reason = finish_reason(get(result, "done_reason"), "stop")
        output = _output([text] if text else [], [thinking] if thinking else [], calls, reason)
    return _attributes(result), output, result


def embed_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    attributes = _attributes(result)
    vectors = seq(get(result, "embeddings")) or (get(result, "embedding"),)  # /api/embed, /api/embeddings
    if isinstance(vectors[0], (list, tuple)):
        attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(vectors[0])
    return attributes, None, result if get(result, "prompt_eval_count") is not None else None  # embeddings: none


# --- streams -------------------------------------------------------------------------------------------------


class ChatRecorder(StreamRecorder):
    """Chat chunks: text, thinking and whole tool calls per chunk; the ``done`` chunk has the reason and counts."""

    __slots__ = ("calls", "final", "model", "texts", "thinking")
    chat = True  # GenerateRecorder: the text is the chunk's own ``response``

    def __init__(self, call: Call, hide_usage: bool) -> None:
        super().__init__(call, hide_usage)
        self.texts: list[str] = []
        self.thinking: list[str] = []
        self.calls: list[Any] = []
        self.final: Any = None
        self.model: Any = None
        self.lazy = True  # the SDK sends a stream's request when the caller first reads it

    def feed(self, chunk: Any) -> bool:
        if chunk.done:
            self.final = chunk
        elif self.model is None:
            self.model = chunk.model
        message = chunk.message if self.chat else chunk
        text = message.content if self.chat else chunk.response
        if text:
            (self.texts if self.capture else self.seen).append(text)
        thinking = get(message, "thinking")
        if thinking:
            self.thinking.append(thinking)
        if self.chat and message.tool_calls:
            self.calls += message.tool_calls
        return True

    def output_pieces(self) -> list[str]:
        arguments = [str(get(get(c, "function"), "arguments", "")) for c in self.calls]
        return [*self.texts, *self.seen, *self.thinking, *arguments]

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        attributes = _attributes(self.final if self.final is not None else {"model": self.model})
        output = None
        if self.capture:
            reason = finish_reason(get(self.final, "done_reason"), UNFINISHED if not complete else "stop")
            output = _output(self.texts, self.thinking, self.calls, reason)
        return attributes, output, self.final


class GenerateRecorder(ChatRecorder):
    __slots__ = ()
    chat = False


# --- the declaration -----------------------------------------------------------------------------------------

CHAT = Endpoint("chat", generation_request, generation_response, chat_inputs, ChatRecorder, usage_shape="ollama")
GENERATE = Endpoint(
    "text_completion", generation_request, generation_response, generate_inputs, GenerateRecorder, usage_shape="ollama"
)
EMBED = Endpoint("embeddings", embed_request, embed_response, usage_shape="ollama")
ROUTES = {"/api/chat": CHAT, "/api/generate": GENERATE, "/api/embed": EMBED, "/api/embeddings": EMBED}


def _server(client: Any) -> tuple[str | None, int | None]:
    """(server.address, server.port) of a client, memoised on it per base URL (an httpx.URL)."""
    base_url = client._client.base_url
    cached = client.__dict__.get("_mltrack_server")
    if cached is not None and cached[0] is base_url:
        return cached[1]
    server = (base_url.host or None, base_url.port or {"https": 443, "http": 80}.get(base_url.scheme))
    client.__dict__["_mltrack_server"] = (base_url, server)
    return server


def route(client: Any, args: tuple, kwargs: dict) -> Request | None:
    """``_request(cls, method, path, json=..., stream=...)``: the model calls by path; anything else passes."""
    endpoint = ROUTES.get(argument(args, kwargs, "url", 2))
    if endpoint is None:
        return None
    body = kwargs.get("json")
    body = body if isinstance(body, dict) else {}
    limit = get(body.get("options"), "num_predict")
    if type(limit) is int and limit >= 0:  # the output cap, named as the budget and the estimates know it
        body = {**body, "max_tokens": limit}
    address, port = _server(client)
    return Request(endpoint, body, PROVIDER, address, port, bool(kwargs.get("stream")))


class OllamaInstrumentor(MethodInstrumentor):
    """Instruments the ollama SDK (entry point `opentelemetry_instrumentor: ollama`)."""

    module = "ollama"
    dependencies = ("ollama >= 0.4",)
    methods = (
        Method("ollama._client", "Client._request", route),
        Method("ollama._client", "AsyncClient._request", route),
    )
