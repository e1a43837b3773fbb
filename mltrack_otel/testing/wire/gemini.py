"""The Gemini API and Vertex AI ``generateContent`` family, as the fake provider speaks it (google-genai SDK).

Endpoints (``POST``; the model is the last path segment before ``:method``)
    Gemini API: ``/{v1beta,v1,v1alpha}/models/{model}:{method}`` (also ``tunedModels/``).
    Vertex AI: ``/{v1beta1,v1}/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}``
    and, for express mode (an API key, no project), ``/{v1beta1,v1}/publishers/{publisher}/models/{model}:{method}``.
    Methods: ``generateContent``; ``streamGenerateContent?alt=sse`` (SSE, every event a whole
    ``GenerateContentResponse``); ``countTokens`` (``{"totalTokens"}``); ``embedContent``, ``batchEmbedContents``
    and Vertex's ``predict`` (text-embedding models).

Request reading
    Segments are the ``systemInstruction`` text (when present) and every ``contents[]`` entry: the texts of its
    ``text`` parts, plus the JSON of each ``functionResponse.response`` (a tool result); function calls, inline data
    and tool declarations count nothing. So ``promptTokenCount = sum(3 + words)`` over segments, as for the other
    providers. Tools are ``tools[].functionDeclarations[]`` (``parameters`` or ``parametersJsonSchema``; OpenAPI type
    names such as ``"OBJECT"`` are read as JSON-schema ones); ``toolConfig.functionCallingConfig.mode`` ``ANY``
    forces the first (or first allowed) function, ``NONE`` disables tools. ``generationConfig.maxOutputTokens`` caps
    the output (finish reason ``MAX_TOKENS``); ``responseMimeType: application/json`` with ``responseJsonSchema`` or
    ``responseSchema`` asks for JSON. The scenario token and the echoed words come from the last ``user`` content
    with text (function responses are user contents too; embeddings: any input text).

Answers
    A candidate's content is ``{"role": "model", "parts": [...]}``: the echo text as one ``text`` part, or a tool call
    as one ``functionCall`` part (``{"name", "args"}``; Vertex adds an ``id``), finish reason ``STOP`` (``MAX_TOKENS``
    when truncated). ``usageMetadata``: ``promptTokenCount`` (cached tokens included), ``candidatesTokenCount`` = the
    visible output tokens, ``thoughtsTokenCount`` = the reasoning tokens of the ``reasoning`` scenario (2 x visible),
    ``cachedContentTokenCount`` = the cacheable prefix under ``cache-read`` (the API reports no cache writes, so
    ``cache-write`` changes nothing), ``toolUsePromptTokenCount`` = 10 when the request has a built-in tool
    (``googleSearch``, ``codeExecution``...), ``totalTokenCount`` = prompt + candidates + thoughts + tool use; with
    ``thinkingConfig.includeThoughts`` and the ``reasoning`` scenario a thought-summary part (``"thought": true``)
    comes first. ``modelVersion`` resolves :data:`MODEL_VERSIONS` aliases; ``responseId`` is ``fake-<n>`` (Vertex
    also sends ``createTime``).

Streams
    One event per delta (a word of text; a function call arrives whole, in one event). Every event of the Gemini API
    carries ``usageMetadata`` with the prompt count only; Vertex's intermediate events carry ``{"trafficType"}`` only.
    The last delta's event also carries ``finishReason`` and the complete ``usageMetadata``. ``stream-error`` sends
    ``data: {"error": {...}}`` in band (as the API does), ``drop`` cuts the connection; both after 3 deltas.

Embeddings
    Vectors are deterministic (``fake_provider.embedding``; ``outputDimensionality`` or 16 dimensions). Gemini API
    ``embedContent``/``batchEmbedContents`` report no usage (as documented); Vertex ``predict`` gives each prediction
    ``statistics.token_count`` and ``metadata.billableCharacterCount``; Vertex ``embedContent`` gives
    ``usageMetadata.promptTokenCount`` (3 + words per input, as above).

Errors
    Google's ``{"error": {"code", "message", "status"}}`` with the canonical status (429 -> ``RESOURCE_EXHAUSTED``...).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ..fake_provider import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    FakeError,
    GenerationRequest,
    Plan,
    Scenario,
    WireFormat,
    embedding,
    prompt_tokens_for_texts,
)

__all__ = ["MODEL_VERSIONS", "STATUSES", "WIRE", "GeminiWire"]

#: HTTP status -> google.rpc.Code name, as the error body's "status" carries it.
STATUSES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    529: "UNAVAILABLE",
}

#: Request model -> the modelVersion the response reports (others are echoed).
MODEL_VERSIONS: dict[str, str] = {
    "gemini-flash-latest": "gemini-2.5-flash",
    "gemini-pro-latest": "gemini-2.5-pro",
    "gemini-2.0-flash": "gemini-2.0-flash-001",
    "gemini-2.0-flash-lite": "gemini-2.0-flash-lite-001",
}

TOOL_USE_PROMPT_TOKENS = 10  # reported for a request with a built-in tool (googleSearch, codeExecution...)
THOUGHT_SUMMARY = "Thinking about the request."

_PATHS = re.compile(
    r"^/(?P<version>v1beta1|v1beta|v1alpha|v1)/"
    r"(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/)?"
    r"(?:publishers/(?P<publisher>[^/]+)/)?"
    r"(?:models|tunedModels)/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """obj[name] by its lowerCamelCase name or its proto (snake_case) name: Google's JSON parsing accepts both."""
    if not isinstance(obj, dict):
        return default
    value = obj.get(name)
    if value is None:
        value = obj.get(_snake(name))
    return default if value is None else value


def _vertex(match: re.Match[str]) -> bool:
    return match.group("publisher") is not None or match.group("project") is not None


def _parts(content: Any) -> list[dict]:
    if isinstance(content, dict):
        return [p for p in _get(content, "parts", []) if isinstance(p, dict)]
    if isinstance(content, str):  # Vertex predict instances / lenient callers
        return [{"text": content}]
    return []


def _content_text(content: Any) -> str:
    texts = []
    for part in _parts(content):
        if isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
        elif isinstance(_get(part, "functionResponse"), dict):
            texts.append(json.dumps(_get(part, "functionResponse").get("response")))
    return " ".join(t for t in texts if t)


def _json_schema(schema: Any) -> Any:
    """An OpenAPI-style Gemini schema ("type": "OBJECT") as JSON schema (lower-case type names)."""
    if isinstance(schema, dict):
        out = {k: _json_schema(v) for k, v in schema.items()}
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = kind.lower()
        elif isinstance(kind, list):
            out["type"] = [k.lower() if isinstance(k, str) else k for k in kind]
        return out
    if isinstance(schema, list):
        return [_json_schema(v) for v in schema]
    return schema


def _last_user_text(contents: list[dict]) -> str:
    """The text of the last user content that has text (function responses travel as user contents too)."""
    for content in reversed(contents):
        texts = [p["text"] for p in _parts(content) if isinstance(p.get("text"), str)]
        if content.get("role", "user") == "user" and texts:
            return " ".join(texts)
    return ""


def generation_request(body: dict, model: str) -> GenerationRequest:
    """The provider-independent view of a generateContent request body."""
    contents = [c for c in _get(body, "contents", []) if isinstance(c, dict)]
    system = _get(body, "systemInstruction")
    system_text = _content_text(system) if system else ""
    segments: list[Any] = [system_text] if system else []
    segments += [_content_text(c) for c in contents]
    tools = []
    for tool in _get(body, "tools", []):
        for fn in _get(tool, "functionDeclarations", []):
            if isinstance(fn, dict) and fn.get("name"):
                schema = _get(fn, "parametersJsonSchema") or _get(fn, "parameters")
                tools.append((fn["name"], _json_schema(schema) if schema else None))
    calling = _get(_get(body, "toolConfig"), "functionCallingConfig", {})
    mode = str(_get(calling, "mode", "AUTO")).upper()
    forced = None
    if mode == "ANY" and tools:
        allowed = [n for n in _get(calling, "allowedFunctionNames", []) if n in dict(tools)]
        forced = allowed[0] if allowed else tools[0][0]
    elif mode == "NONE":
        tools = []
    config = _get(body, "generationConfig", {})
    schema = None
    if _get(config, "responseMimeType") == "application/json":
        raw = _get(config, "responseJsonSchema") or _get(config, "responseSchema")
        schema = _json_schema(raw) if raw else {}
    last = contents[-1] if contents else {}
    return GenerationRequest(
        model=model,
        segments=segments,
        user_text=_last_user_text(contents),
        tools=tools,
        forced_tool=forced,
        after_tool_result=any(_get(p, "functionResponse") is not None for p in _parts(last)),
        json_schema=schema,
        max_tokens=_get(config, "maxOutputTokens"),
        system_text=system_text,
    )


def _embed_texts(payload: dict, method: str) -> list[str]:
    if method == "batchEmbedContents":
        return [_content_text(r.get("content")) for r in _get(payload, "requests", []) if isinstance(r, dict)]
    if method == "predict":
        instances = [i for i in payload.get("instances") or [] if isinstance(i, dict)]
        return [
            i["content"] if isinstance(i.get("content"), str) else _content_text(i.get("content")) for i in instances
        ]
    return [_content_text(payload.get("content"))]


class GeminiWire(WireFormat):
    name = "gemini"
    paths = _PATHS
    request_id_header = "x-goog-request-id"  # (the real API sends none the SDK reads; ours is for tests)

    def user_text(self, payload: Any, match: re.Match[str]) -> str:
        if not isinstance(payload, dict):
            return ""
        method = match.group("method")
        if method in ("embedContent", "batchEmbedContents", "predict"):
            return " ".join(_embed_texts(payload, method))
        return _last_user_text([c for c in _get(payload, "contents", []) if isinstance(c, dict)])

    def error(self, status: int, message: str) -> Any:
        return {"error": {"code": status, "message": message, "status": STATUSES.get(status, "UNKNOWN")}}

    def handle(self, handler: Any, payload: Any, match: re.Match[str], scenario: Scenario, request_id: str) -> None:
        if handler.command != "POST" or not isinstance(payload, dict):
            raise FakeError(400, "Expected a POST with a JSON object body (fake provider).")
        method = match.group("method")
        model = match.group("model")
        if method in ("generateContent", "streamGenerateContent"):
            self._generate(handler, payload, model, _vertex(match), method == "streamGenerateContent", scenario)
        elif method == "countTokens":
            body = _get(payload, "generateContentRequest") or payload
            req = generation_request(body, model)
            tokens = prompt_tokens_for_texts([str(s) for s in req.segments])
            handler.send_json(200, {"totalTokens": tokens, "promptTokensDetails": _modality(tokens)})
        elif method in ("embedContent", "batchEmbedContents", "predict"):
            self._embed(handler, payload, model, method, _vertex(match), scenario)
        else:
            raise FakeError(404, f"Unknown method {method} (fake provider).")

    # generateContent / streamGenerateContent -------------------------------------------------------------------

    def _generate(self, handler: Any, body: dict, model: str, vertex: bool, stream: bool, scenario: Scenario) -> None:
        provider = handler.server.provider
        plan: Plan = provider.plan(generation_request(body, model), scenario)
        response_id = f"fake-{provider.next_id():06d}"
        version = MODEL_VERSIONS.get(model, model)
        finish = "MAX_TOKENS" if plan.truncated else "STOP"
        thinking = _get(_get(_get(body, "generationConfig"), "thinkingConfig"), "includeThoughts")
        thought = [{"text": THOUGHT_SUMMARY, "thought": True}] if thinking and plan.reasoning_tokens else []
        read = plan.cache_tokens if plan.cache_action == "read" else 0
        builtin = any(
            isinstance(t, dict) and set(t) - {"functionDeclarations", "function_declarations"}
            for t in _get(body, "tools", [])
        )
        tool_use = TOOL_USE_PROMPT_TOKENS if builtin else 0
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())

        def usage() -> dict:
            out: dict[str, Any] = {
                "promptTokenCount": plan.prompt_tokens,
                "candidatesTokenCount": plan.visible_tokens,
                "totalTokenCount": plan.prompt_tokens + plan.output_tokens + tool_use,
                "promptTokensDetails": _modality(plan.prompt_tokens),
            }
            if tool_use:
                out["toolUsePromptTokenCount"] = tool_use
            if plan.reasoning_tokens:
                out["thoughtsTokenCount"] = plan.reasoning_tokens
            if read:
                out["cachedContentTokenCount"] = read
                out["cacheTokensDetails"] = _modality(read)
            if vertex:
                out["trafficType"] = "ON_DEMAND"
            return out

        def partial_usage() -> dict:
            if vertex:
                return {"trafficType": "ON_DEMAND"}
            return {
                "promptTokenCount": plan.prompt_tokens,
                "totalTokenCount": plan.prompt_tokens,
                "promptTokensDetails": _modality(plan.prompt_tokens),
            }

        def call_part() -> dict:
            assert plan.tool is not None
            try:
                args = json.loads(plan.tool.arguments)
            except ValueError:  # truncated by maxOutputTokens
                args = {}
            call: dict[str, Any] = {"name": plan.tool.name, "args": args}
            if vertex:
                call["id"] = f"call_fake{plan.tool.id}"
            return {"functionCall": call}

        def response(parts: list[dict], reason: str | None, usage_metadata: dict) -> dict:
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if reason is not None:
                candidate["finishReason"] = reason
            out: dict[str, Any] = {"candidates": [candidate], "usageMetadata": usage_metadata}
            out["modelVersion"] = version
            if vertex:
                out["createTime"] = created
            out["responseId"] = response_id
            return out

        def build_json() -> Any:
            parts = list(thought)
            if plan.tool:
                parts.append(call_part())
            else:
                parts.append({"text": plan.text})
            return response(parts, finish, usage())

        def events() -> Any:
            if thought:
                yield None, response(thought, None, partial_usage()), False
            deltas = [call_part()] if plan.tool else [{"text": piece} for piece in plan.pieces]
            if not deltas:  # nothing to say (maxOutputTokens 0): one empty final event
                yield None, response([{"text": ""}], finish, usage()), False
            for i, part in enumerate(deltas):
                last = i == len(deltas) - 1
                yield None, response([part], finish if last else None, usage() if last else partial_usage()), True

        def error_event() -> tuple[str | None, Any]:
            return None, self.error(500, "Stream interrupted (fake provider).")

        handler.reply(plan, (self.request_id_header, response_id), stream, build_json, events, error_event)

    # embeddings ------------------------------------------------------------------------------------------------

    def _embed(self, handler: Any, payload: dict, model: str, method: str, vertex: bool, scenario: Scenario) -> None:
        if scenario.drop:
            handler.abort()
            return
        texts = _embed_texts(payload, method)
        if method == "predict":
            dims = _get(_get(payload, "parameters"), "outputDimensionality")
        elif method == "batchEmbedContents":
            first = next(iter(_get(payload, "requests", [])), {})
            dims = _get(first, "outputDimensionality") or _get(
                _get(first, "embedContentConfig"), "outputDimensionality"
            )
        else:
            dims = _get(payload, "outputDimensionality") or _get(
                _get(payload, "embedContentConfig"), "outputDimensionality"
            )
        dims = int(dims or DEFAULT_EMBEDDING_DIMENSIONS)
        vectors = [embedding(json.dumps(t), dims) for t in texts]
        counts = [prompt_tokens_for_texts([t]) for t in texts]
        if method == "predict":
            predictions = [
                {"embeddings": {"values": v, "statistics": {"truncated": False, "token_count": n}}}
                for v, n in zip(vectors, counts, strict=True)
            ]
            out: dict[str, Any] = {"predictions": predictions}
            out["metadata"] = {"billableCharacterCount": sum(len(t.replace(" ", "")) for t in texts)}
        elif method == "batchEmbedContents":
            out = {"embeddings": [{"values": v} for v in vectors]}
            if vertex:
                out["usageMetadata"] = {"promptTokenCount": sum(counts), "totalTokenCount": sum(counts)}
        else:
            out = {"embedding": {"values": vectors[0] if vectors else []}}
            if vertex:
                out["usageMetadata"] = {"promptTokenCount": sum(counts), "totalTokenCount": sum(counts)}
                out["truncated"] = False
        if scenario.delay:
            time.sleep(scenario.delay)
        handler.send_json(200, out)


def _modality(tokens: int) -> list[dict]:
    return [{"modality": "TEXT", "tokenCount": tokens}]


WIRE = GeminiWire()
