"""google-genai (Gemini API and Vertex AI): models.generate_content(_stream), sync and aio, embed_content, chats.

We wrap the methods that send one request each: ``Models._generate_content`` / ``_generate_content_stream``, their
``AsyncModels`` twins, and ``embed_content``. The public ``generate_content`` calls ``_generate_content`` once per
billed request (automatic function calling, continuation) and a chat's ``send_message`` calls the public method: a
request is one span, never two. ``usage_metadata.prompt_token_count`` includes the cached content; the tool-use prompt
is billed as input, thoughts as output. Provider ``gcp.vertex_ai`` for a ``vertexai=True`` client, else
``gcp.gemini``; genai-prices prices both as ``google``.
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
    *((key, f"gen_ai.request.{key}") for key in ("temperature", "top_p", "top_k", "seed")),
    *((key, f"gen_ai.request.{key}") for key in ("presence_penalty", "frequency_penalty")),
    ("max_output_tokens", gen_ai.GEN_AI_REQUEST_MAX_TOKENS),
    ("candidate_count", gen_ai.GEN_AI_REQUEST_CHOICE_COUNT),
)
_MEDIA = ("image", "audio", "video")  # the convention's modalities; any other file is a document
# Gemini finish reasons -> the convention's; the rest are passed on lower-cased (other, language...).
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", "MALFORMED_FUNCTION_CALL": "error"}
FINISH_REASONS |= dict.fromkeys(
    ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT"),
    "content_filter",
)


def finish_reason(raw: Any) -> str | None:
    name = getattr(raw, "value", raw)  # a types.FinishReason (a str enum), or its JSON value
    return None if name is None else FINISH_REASONS.get(name) or str(name).lower()


# --- content: Gemini contents and parts -> GenAI messages and parts ----------------------------------------------


def part(item: Any) -> dict[str, Any]:
    """One Gemini part (types.Part, its dict, or a plain string) as a GenAI part."""
    if isinstance(item, str):
        return text_part(item)
    text = get(item, "text")
    if text is not None:
        return {"type": "reasoning", "content": text} if get(item, "thought") else text_part(text)
    call, result = get(item, "function_call"), get(item, "function_response")
    if call is not None or result is not None:
        if call is not None:
            found = {"type": "tool_call", "name": get(call, "name", ""), "arguments": get(call, "args")}
        else:
            found = {"type": "tool_call_response", "response": get(result, "response")}
        call_id = get(call or result, "id")  # Vertex names its function calls, the Gemini API does not
        return {**found, "id": call_id} if call_id else found
    blob, file = get(item, "inline_data"), get(item, "file_data")
    if blob is not None or file is not None:
        mime = get(blob or file, "mime_type", "")
        kind = mime.partition("/")[0]
        found = {"type": "uri", "modality": kind if kind in _MEDIA else "document", "mime_type": mime}
        if file is not None:
            return {**found, "uri": get(file, "file_uri")}
        data = get(blob, "data", b"")
        return {**found, "type": "blob", "content": base64.b64encode(data).decode() if type(data) is bytes else data}
    if isinstance(item, dict) or hasattr(item, "model_fields"):  # executable_code, code_execution_result...
        return {"type": next((k for k, v in dict(item).items() if v is not None), "unknown")}
    return {"type": type(item).__name__}  # a PIL image, an uploaded File...


def messages(contents: Any) -> list[Any]:
    """The SDK's ContentListUnion as GenAI messages: parts outside a Content (strings too) make one user turn."""
    out: list[Any] = []
    loose: list[Any] = []
    for item in contents if isinstance(contents, (list, tuple)) else (contents,):
        if isinstance(item, str) or (get(item, "parts") is None and get(item, "role") is None):
            loose += [part(item)] if item is not None else []
            continue
        if loose:
            out.append({"role": "user", "parts": loose})
            loose = []
        parts = [part(p) for p in seq(get(item, "parts"))]
        role = "assistant" if get(item, "role") == "model" else get(item, "role", "user")
        if role == "user" and parts and all(p["type"] == "tool_call_response" for p in parts):
            role = "tool"
        out.append({"role": role, "parts": parts})
    return [*out, {"role": "user", "parts": loose}] if loose else out


def tool_definitions(tools: Any) -> list[Any] | None:
    out = []
    for tool in seq(tools):
        if callable(tool) and not hasattr(tool, "model_fields"):  # a Python function (automatic function calling)
            doc = (getattr(tool, "__doc__", None) or "").strip()
            out.append({"type": "function", "name": getattr(tool, "__name__", "function"), "description": doc})
            continue
        declarations = seq(get(tool, "function_declarations"))
        for fn in declarations:
            schema = get(fn, "parameters_json_schema") or get(fn, "parameters")
            schema = schema.model_dump(exclude_none=True) if hasattr(schema, "model_dump") else schema
            definition = {"type": "function", "name": get(fn, "name", ""), "description": get(fn, "description", "")}
            out.append({**definition, "parameters": schema} if schema is not None else definition)
        if not declarations and (isinstance(tool, dict) or hasattr(tool, "model_fields")):  # google_search...
            out += [{"type": name, "name": name} for name, value in dict(tool).items() if value is not None]
    return out or None


def inputs(body: Mapping[str, Any]) -> Inputs:
    config = body.get("config")
    system = get(config, "system_instruction")
    system_parts = [p for m in messages(system) for p in m["parts"]] if system is not None else None
    return Inputs(messages(body.get("contents")), system_parts, tool_definitions(get(config, "tools")))


def input_tokens(body: Mapping[str, Any], model: str | None, framing: int = estimate.MESSAGE_OVERHEAD) -> int:
    """Estimated input tokens of a request: the text of its contents and system instruction, `framing` a message."""
    found = messages(body.get("contents"))
    system = get(body.get("config"), "system_instruction")
    found += messages(system) if system is not None else []
    text = "\n".join(p["content"] for m in found for p in m["parts"] if isinstance(p.get("content"), str))
    return estimate.text_tokens(text, model) + framing * len(found)


# --- request / response --------------------------------------------------------------------------------------


def request(body: Mapping[str, Any], attributes: dict[str, Any]) -> None:
    if body.get("stream"):
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
    config = body.get("config")
    for key, attribute in _PARAMS if config is not None else ():
        value = get(config, key)
        if value is not None and type(value) in (int, float):
            attributes[attribute] = value
    stops = stop_sequences(get(config, "stop_sequences"))
    if stops:
        attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops


def _ids(response: Any, attributes: dict[str, Any]) -> None:
    response_id, model = get(response, "response_id"), get(response, "model_version")
    if isinstance(response_id, str):
        attributes[gen_ai.GEN_AI_RESPONSE_ID] = response_id
    if isinstance(model, str):
        attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = model


def usage_of(metadata: Any) -> Any:
    """usage_metadata as the "gemini" usage shape reads it, with the tool-use prompt (billed as input) added in."""
    tool_use = count(get(metadata, "tool_use_prompt_token_count"))
    if not tool_use:
        return metadata
    usage = {k: get(metadata, k) for k in ("candidates_token_count", "cached_content_token_count")}
    usage["thoughts_token_count"] = get(metadata, "thoughts_token_count")
    return {**usage, "prompt_token_count": (count(get(metadata, "prompt_token_count")) or 0) + tool_use}


def _message(parts: list[Any], raw_reason: Any, default: str = "stop") -> dict[str, Any]:
    """An output message; Gemini ends a turn of function calls with STOP, the convention says tool_call."""
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
        output = [
            _message([part(p) for p in seq(get(get(c, "content"), "parts"))], get(c, "finish_reason"))
            for c in candidates
        ]
    metadata = get(result, "usage_metadata")
    return attributes, output, usage_of(metadata) if metadata is not None else None


class ChunkRecorder(StreamRecorder):
    """GenerateContentResponse chunks: deltas kept as lists (joined once at the end). The usage is final once a
    candidate has finished: earlier chunks carry the prompt count only (Gemini API) or nothing (Vertex)."""

    __slots__ = ("calls", "first", "reasons", "texts", "thoughts", "usage")

    def __init__(self, call: Call, hide_usage: bool) -> None:
        super().__init__(call, hide_usage)
        self.first = self.usage = None  # the first chunk (ids), the latest usage_metadata
        self.reasons: dict[int, Any] = {}  # candidate index -> finish reason
        self.texts, self.thoughts, self.calls = [], [], []  # text deltas, thought deltas, function-call parts

    def feed(self, chunk: Any) -> bool:
        if self.first is None:
            self.first = chunk
        if chunk.usage_metadata is not None:
            self.usage = chunk.usage_metadata
        for candidate in chunk.candidates or ():
            content = candidate.content
            for item in (content.parts if content is not None else None) or ():
                if item.text is not None:
                    (self.thoughts if item.thought else self.texts).append(item.text)
                elif item.function_call is not None:
                    self.calls.append(item)
            if candidate.finish_reason is not None:
                self.reasons[candidate.index or 0] = candidate.finish_reason
        return True

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        attributes: dict[str, Any] = {}
        _ids(self.first, attributes)
        if self.reasons:
            reasons = tuple(finish_reason(r) or "" for _, r in sorted(self.reasons.items()))
            attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
        output = None
        if self.capture:
            parts = [{"type": "reasoning", "content": "".join(self.thoughts)}] if self.thoughts else []
            parts += [text_part("".join(self.texts))] if self.texts else []
            parts += [part(c) for c in self.calls]
            output = [_message(parts, self.reasons.get(0), "stop" if complete else UNFINISHED)]
        return attributes, output, usage_of(self.usage) if self.reasons and self.usage is not None else None

    def output_pieces(self) -> list[str]:
        return [*self.thoughts, *self.texts, *(str(get(get(c, "function_call"), "args", "")) for c in self.calls)]

    def estimate(self) -> dict[str, Any]:
        """Input: the prompt count the Gemini API sends on every chunk, if one came (else estimated); output
        estimated from the deltas seen."""
        body, model = self.request or ({}, None)
        prompt = count(get(self.usage, "prompt_token_count"))
        prompt = input_tokens(body, model) if prompt is None else prompt
        cached = count(get(self.usage, "cached_content_token_count"))
        return estimated_usage(prompt, estimate.text_tokens("".join(self.output_pieces()), model), cached)


# --- embeddings ----------------------------------------------------------------------------------------------


def embed_request(body: Mapping[str, Any], attributes: dict[str, Any]) -> None:
    dimensions = get(body.get("config"), "output_dimensionality")
    if type(dimensions) is int:
        attributes["gen_ai.embeddings.dimension.count"] = dimensions


def embed_response(result: Any, body: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any] | None, Any]:
    """Vertex reports each input's token count; the Gemini API may send usage_metadata, else the input is
    estimated (and marked so)."""
    tokens = get(get(result, "usage_metadata"), "prompt_token_count")
    if tokens is None:
        counts = [get(get(e, "statistics"), "token_count") for e in seq(get(result, "embeddings"))]
        if counts and all(isinstance(c, (int, float)) and c >= 0 for c in counts):  # floats in the SDK's type
            tokens = int(sum(counts))
    if tokens is not None:
        return {}, None, {"prompt_token_count": tokens, "candidates_token_count": 0}
    contents = body.get("contents")
    each = contents if isinstance(contents, (list, tuple)) else [contents]
    estimated = sum(input_tokens({"contents": item}, body.get("model"), 0) for item in each)
    return estimated_usage(estimated, 0), None, None


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


def _route(kind: str) -> Any:
    """The route of a call: its body is the SDK's own arguments (model, contents, config)."""

    def route(instance: Any, args: tuple, kwargs: dict) -> Request:
        config = argument(args, kwargs, "config", 2)
        body = {
            "model": model_name(argument(args, kwargs, "model", 0)),
            "contents": argument(args, kwargs, "contents", 1),
        }
        body["config"] = config
        cap = get(config, "max_output_tokens")
        if cap is not None:
            body["max_output_tokens"] = cap  # the output cap, by the name budgets read
        system = get(config, "system_instruction")
        if system is not None:
            body["system_instruction"] = system  # a top-level field on the wire, and part of the input estimate
        if kind == "stream":
            body["stream"] = True
        endpoint = GENERATE
        if kind == "embed":  # the input estimate, should the response carry no usage, needs the request
            endpoint = Endpoint("embeddings", embed_request, lambda r, c: embed_response(r, body), usage_shape="gemini")
        return Request(endpoint, body, *_server(instance), stream=kind == "stream")

    return route


GENERATE = Endpoint("generate_content", request, response, inputs, ChunkRecorder, usage_shape="gemini")
_CALLS = (("_generate_content", "generate"), ("_generate_content_stream", "stream"), ("embed_content", "embed"))


class GoogleGenAIInstrumentor(MethodInstrumentor):
    """Instruments the google-genai SDK (entry point `opentelemetry_instrumentor: google_genai`)."""

    module = "google.genai"
    dependencies = ("google-genai >= 1.0",)
    methods = tuple(
        Method("google.genai.models", f"{cls}.{name}", _route(kind))
        for cls in ("Models", "AsyncModels")
        for name, kind in _CALLS
    )
