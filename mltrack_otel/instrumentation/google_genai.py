"""google-genai (Gemini API and Vertex AI): models.generate_content and generate_content_stream, sync and aio,
embed_content, and chats.

We wrap the methods that make one HTTP request each: ``Models._generate_content`` / ``_generate_content_stream`` (and
their ``AsyncModels`` twins) and ``embed_content``. The public ``generate_content`` loops over ``_generate_content``
for automatic function calling and continuation (every request billed), and a chat's ``send_message`` calls the
public method: each request is one span, and a chat turn is not counted twice. Usage is ``usage_metadata``:
``prompt_token_count`` includes the cached content and the tool-use prompt is billed as input; thoughts are billed as
output (gen_ai.usage.output_tokens = candidates + thoughts). Provider: ``gcp.vertex_ai`` for a ``vertexai=True``
client, else ``gcp.gemini``; both are priced as genai-prices' ``google``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from .. import estimate
from ..content import text_part
from ..usage import count
from ._base import UNFINISHED, Call, Inputs, StreamRecorder, estimated_usage, get, seq, stop_sequences
from ._core import Endpoint, Method, MethodInstrumentor, Request, argument

_PARAMS = (
    ("temperature", gen_ai.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", gen_ai.GEN_AI_REQUEST_TOP_P),
    ("top_k", gen_ai.GEN_AI_REQUEST_TOP_K),
    ("max_output_tokens", gen_ai.GEN_AI_REQUEST_MAX_TOKENS),
    ("candidate_count", gen_ai.GEN_AI_REQUEST_CHOICE_COUNT),
    ("seed", gen_ai.GEN_AI_REQUEST_SEED),
    ("presence_penalty", gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY),
    ("frequency_penalty", gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY),
)
# Gemini finish reasons -> the convention's; the rest are passed on lower-cased (other, language...).
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", "MALFORMED_FUNCTION_CALL": "error"}
FINISH_REASONS |= dict.fromkeys(
    ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT"),
    "content_filter",
)


def finish_reason(raw: Any) -> str | None:
    if raw is None:
        return None
    name = getattr(raw, "value", raw)
    return FINISH_REASONS.get(name) or str(name).lower()


# --- content: Gemini contents and parts -> GenAI messages and parts ----------------------------------------------


def _field(obj: Any, name: str, camel: str) -> Any:
    """A part's field by the SDK's name, or by the REST (camelCase) name a dict may use."""
    value = get(obj, name)
    return get(obj, camel) if value is None and isinstance(obj, dict) else value


def _with_id(source: Any, found: dict[str, Any]) -> dict[str, Any]:
    call_id = get(source, "id")  # Vertex names its function calls, the Gemini API does not
    return {**found, "id": call_id} if call_id else found


def part(item: Any) -> dict[str, Any]:
    """One Gemini part (types.Part, its dict, or a plain string) as a GenAI part."""
    if isinstance(item, str):
        return text_part(item)
    text = get(item, "text")
    if text is not None:
        return {"type": "reasoning", "content": text} if get(item, "thought") else text_part(text)
    call = _field(item, "function_call", "functionCall")
    if call is not None:
        return _with_id(call, {"type": "tool_call", "name": get(call, "name", ""), "arguments": get(call, "args")})
    result = _field(item, "function_response", "functionResponse")
    if result is not None:
        return _with_id(result, {"type": "tool_call_response", "response": get(result, "response")})
    blob = _field(item, "inline_data", "inlineData")
    if blob is not None:
        mime = _field(blob, "mime_type", "mimeType") or ""
        data = get(blob, "data", b"")
        data = base64.b64encode(data).decode() if isinstance(data, bytes) else data
        return {"type": "blob", "modality": mime.partition("/")[0] or "file", "mime_type": mime, "content": data}
    file = _field(item, "file_data", "fileData")
    if file is not None:
        mime = _field(file, "mime_type", "mimeType") or ""
        uri = {"type": "uri", "modality": mime.partition("/")[0] or "file", "uri": _field(file, "file_uri", "fileUri")}
        return {**uri, "mime_type": mime} if mime else uri
    for name, camel in (("executable_code", "executableCode"), ("code_execution_result", "codeExecutionResult")):
        value = _field(item, name, camel)
        if value is not None:
            return {"type": name, "content": get(value, "code") or get(value, "output")}
    return {"type": "unknown"}


def _is_content(item: Any) -> bool:
    return get(item, "parts") is not None or (get(item, "role") is not None and not isinstance(item, str))


def messages(contents: Any) -> list[Any]:
    """The SDK's ContentListUnion as GenAI messages: a string, a part or a list of them is one user turn."""
    items = contents if isinstance(contents, (list, tuple)) else [contents]
    out: list[Any] = []
    loose: list[Any] = []  # consecutive parts outside a Content: one user message, as the SDK sends them
    for item in items:
        if _is_content(item):
            if loose:
                out.append({"role": "user", "parts": loose})
                loose = []
            parts = [part(p) for p in seq(get(item, "parts"))]
            role = "assistant" if get(item, "role") == "model" else get(item, "role", "user")
            if role == "user" and parts and all(p["type"] == "tool_call_response" for p in parts):
                role = "tool"
            out.append({"role": role, "parts": parts})
        elif item is not None:
            loose.append(part(item))
    if loose:
        out.append({"role": "user", "parts": loose})
    return out


def tool_definitions(tools: Any) -> list[Any] | None:
    out = []
    for tool in seq(tools):
        if callable(tool) and not isinstance(tool, Mapping) and not hasattr(tool, "model_fields"):
            doc = (getattr(tool, "__doc__", None) or "").strip()
            out.append({"type": "function", "name": getattr(tool, "__name__", "function"), "description": doc})
            continue
        declarations = seq(_field(tool, "function_declarations", "functionDeclarations"))
        for fn in declarations:
            schema = _field(fn, "parameters_json_schema", "parametersJsonSchema") or get(fn, "parameters")
            schema = schema.model_dump(exclude_none=True) if hasattr(schema, "model_dump") else schema
            definition = {"type": "function", "name": get(fn, "name", ""), "description": get(fn, "description", "")}
            out.append({**definition, "parameters": schema} if schema is not None else definition)
        if not declarations:  # a built-in tool: google_search, code_execution, url_context...
            state = tool if isinstance(tool, dict) else getattr(tool, "__dict__", {})
            out += [{"type": name, "name": name} for name, value in state.items() if value is not None]
    return out or None


def inputs(body: Mapping[str, Any]) -> Inputs:
    config = body.get("config")
    system = get(config, "system_instruction")
    system_parts = [p for m in messages(system) for p in m["parts"]] if system is not None else None
    return Inputs(messages(body.get("contents")), system_parts, tool_definitions(get(config, "tools")))


# --- request / response --------------------------------------------------------------------------------------


def request(body: Mapping[str, Any], attributes: dict[str, Any]) -> None:
    if body.get("stream"):
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
    config = body.get("config")
    if config is None:
        return
    for key, attribute in _PARAMS:
        value = get(config, key)
        if value is not None and type(value) in (int, float):
            attributes[attribute] = value
    stops = stop_sequences(get(config, "stop_sequences"))
    if stops:
        attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops


def _ids(response: Any, attributes: dict[str, Any]) -> None:
    response_id = get(response, "response_id")
    if isinstance(response_id, str):
        attributes[gen_ai.GEN_AI_RESPONSE_ID] = response_id
    model = get(response, "model_version")
    if isinstance(model, str):
        attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = model


def usage_of(metadata: Any) -> Any:
    """usage_metadata as the "gemini" usage shape reads it; the tool-use prompt (billed as input) added in."""
    tool_use = count(get(metadata, "tool_use_prompt_token_count"))
    if not tool_use:
        return metadata
    usage = {
        k: get(metadata, k) for k in ("candidates_token_count", "cached_content_token_count", "thoughts_token_count")
    }
    return {**usage, "prompt_token_count": (count(get(metadata, "prompt_token_count")) or 0) + tool_use}


def _message(parts: list[Any], raw_reason: Any, default: str = "stop") -> dict[str, Any]:
    """An output message; Gemini finishes a turn of function calls with STOP, the convention says tool_call."""
    reason = finish_reason(raw_reason) or default
    if reason == "stop" and any(p["type"] == "tool_call" for p in parts):
        reason = "tool_call"
    return {"role": "assistant", "parts": parts, "finish_reason": reason}


def response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    attributes: dict[str, Any] = {}
    _ids(result, attributes)
    candidates = seq(get(result, "candidates"))
    reasons = tuple(finish_reason(get(c, "finish_reason")) or "" for c in candidates)
    if any(reasons):
        attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    output = None
    if capture:
        output = []
        for candidate in candidates:
            parts = [part(p) for p in seq(get(get(candidate, "content"), "parts"))]
            output.append(_message(parts, get(candidate, "finish_reason")))
    metadata = get(result, "usage_metadata")
    return attributes, output, usage_of(metadata) if metadata is not None else None


class ChunkRecorder(StreamRecorder):
    """GenerateContentResponse chunks: text is kept as deltas (joined once at the end); the usage is final once a
    candidate has finished (earlier chunks carry the prompt count only, or nothing)."""

    __slots__ = ("calls", "first", "reasons", "texts", "thoughts", "usage")

    def __init__(self, call: Call, hide_usage: bool) -> None:
        super().__init__(call, hide_usage)
        self.first: Any = None
        self.usage: Any = None
        self.reasons: dict[int, Any] = {}
        self.texts: list[str] = []
        self.thoughts: list[str] = []
        self.calls: list[Any] = []

    def feed(self, chunk: Any) -> bool:
        if self.first is None:
            self.first = chunk
        metadata = chunk.usage_metadata
        if metadata is not None:
            self.usage = metadata
        for candidate in chunk.candidates or ():
            content = candidate.content
            for item in (content.parts if content is not None else None) or ():
                text = item.text
                if text is not None:
                    (self.thoughts if item.thought else self.texts).append(text)
                elif item.function_call is not None:
                    self.calls.append(item)
            if candidate.finish_reason is not None:
                self.reasons[candidate.index or 0] = candidate.finish_reason
        return True

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        attributes: dict[str, Any] = {}
        _ids(self.first, attributes)
        if self.reasons:
            attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = tuple(
                finish_reason(r) or "" for _, r in sorted(self.reasons.items())
            )
        output = None
        if self.capture:
            parts = [{"type": "reasoning", "content": "".join(self.thoughts)}] if self.thoughts else []
            parts += [text_part("".join(self.texts))] if self.texts else []
            parts += [part(c) for c in self.calls]
            output = [_message(parts, self.reasons.get(0), "stop" if complete else UNFINISHED)]
        finished = self.reasons and self.usage is not None
        return attributes, output, usage_of(self.usage) if finished else None

    def output_pieces(self) -> list[str]:
        return [*self.thoughts, *self.texts, *(str(get(get(c, "function_call"), "args", "")) for c in self.calls)]

    def estimate(self) -> dict[str, Any]:
        """The prompt count the Gemini API sends on every chunk when one arrived (else estimated); output estimated
        from the deltas seen."""
        body, model = self.request or ({}, None)
        prompt = count(get(self.usage, "prompt_token_count"))
        if prompt is None:
            prompt = input_tokens(body, model)
        cached = count(get(self.usage, "cached_content_token_count"))
        return estimated_usage(prompt, estimate.text_tokens("".join(self.output_pieces()), model), cached)


# --- embeddings ----------------------------------------------------------------------------------------------


def embed_request(body: Mapping[str, Any], attributes: dict[str, Any]) -> None:
    dimensions = get(body.get("config"), "output_dimensionality")
    if type(dimensions) is int:
        attributes["gen_ai.embeddings.dimension.count"] = dimensions


def input_tokens(body: Mapping[str, Any], model: str | None) -> int:
    """Estimated input tokens of a request: the text of its contents and system instruction, 4 per message."""
    found = messages(body.get("contents"))
    system = get(body.get("config"), "system_instruction")
    found += messages(system) if system is not None else []
    return estimate.text_tokens(_text(found), model) + estimate.MESSAGE_OVERHEAD * len(found)


def _text(found: list[Any]) -> str:
    return "\n".join(p["content"] for m in found for p in m["parts"] if isinstance(p.get("content"), str))


def embed_response(result: Any, capture: bool, body: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any] | None, Any]:
    """Vertex reports each input's token count; the Gemini API may send usage_metadata, else the input is
    estimated (marked so)."""
    metadata = get(result, "usage_metadata")
    if metadata is not None and get(metadata, "prompt_token_count") is not None:
        return {}, None, {"prompt_token_count": get(metadata, "prompt_token_count"), "candidates_token_count": 0}
    counts = [get(get(e, "statistics"), "token_count") for e in seq(get(result, "embeddings"))]
    if counts and all(isinstance(c, (int, float)) and c >= 0 for c in counts):  # floats in the SDK's type
        return {}, None, {"prompt_token_count": int(sum(counts)), "candidates_token_count": 0}
    inputs = body.get("contents") if isinstance(body.get("contents"), (list, tuple)) else [body.get("contents")]
    tokens = sum(estimate.text_tokens(_text(messages(item)), body.get("model")) for item in inputs)
    return estimated_usage(tokens, 0), None, None


# --- the declaration -----------------------------------------------------------------------------------------


def _server(models: Any) -> tuple[str, str | None, int | None]:
    """(provider name, server.address, server.port) of the client behind a Models object, memoised on it."""
    client = models._api_client
    base_url = getattr(client._http_options, "base_url", None) or ""
    cached = client.__dict__.get("_mltrack_server")
    if cached is not None and cached[0] is base_url:
        return cached[1]
    url = urlsplit(base_url)
    port = url.port or {"https": 443, "http": 80}.get(url.scheme)
    server = ("gcp.vertex_ai" if client.vertexai else "gcp.gemini", url.hostname, port)
    client.__dict__["_mltrack_server"] = (base_url, server)
    return server


def model_name(model: Any) -> Any:
    """The model id of a resource name (models/x, publishers/google/models/x, projects/.../models/x)."""
    return model.rpartition("models/")[2] if isinstance(model, str) and "models/" in model else model


def _body(args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments as its body: model, contents and config as the SDK takes them."""
    config = argument(args, kwargs, "config", 2)
    body = {"model": model_name(argument(args, kwargs, "model", 0)), "contents": argument(args, kwargs, "contents", 1)}
    body["config"] = config
    cap = get(config, "max_output_tokens")
    if cap is not None:
        body["max_output_tokens"] = cap  # the output cap, by the name budgets read
    return body


def _generate(stream: bool) -> Any:
    def route(instance: Any, args: tuple, kwargs: dict) -> Request:
        provider, address, port = _server(instance)
        body = _body(args, kwargs)
        if stream:
            body["stream"] = True
        return Request(GENERATE, body, provider, address, port, stream)

    return route


def _embed(instance: Any, args: tuple, kwargs: dict) -> Request:
    provider, address, port = _server(instance)
    body = _body(args, kwargs)
    endpoint = Endpoint("embeddings", embed_request, lambda r, c: embed_response(r, c, body), usage_shape="gemini")
    return Request(endpoint, body, provider, address, port)


GENERATE = Endpoint("generate_content", request, response, inputs, ChunkRecorder, usage_shape="gemini")

_METHODS = []
for _cls in ("Models", "AsyncModels"):
    _METHODS += [
        Method("google.genai.models", f"{_cls}._generate_content", _generate(False)),
        Method("google.genai.models", f"{_cls}._generate_content_stream", _generate(True)),
        Method("google.genai.models", f"{_cls}.embed_content", _embed),
    ]


class GoogleGenAIInstrumentor(MethodInstrumentor):
    """Instruments the google-genai SDK (entry point `opentelemetry_instrumentor: google_genai`)."""

    module = "google.genai"
    dependencies = ("google-genai >= 1.0",)
    methods = tuple(_METHODS)
