"""AWS Bedrock Runtime through boto3: converse, converse_stream, invoke_model, invoke_model_with_response_stream.

Every botocore API call passes through ``BaseClient._make_api_call(operation_name, api_params)``: that one method is
wrapped, and routed by operation name, then service (``bedrock-runtime``); any other call passes through after a
dict lookup. InvokeModel bodies are read per model family (Anthropic, Llama, Titan, Nova; others by the
``X-Amzn-Bedrock-*-Token-Count`` headers and stream invocation metrics). Usage is normalised to Converse's names,
whose ``inputTokens`` exclude cache reads and writes (usage shape ``bedrock.converse`` adds them back). The model is
the request's ``modelId`` (inference profiles and ARNs included: genai-prices' AWS table matches them); Converse
reports none, and an Anthropic body's ``model`` is not the Bedrock id, so no response model is recorded.
InvokeModel's streaming body is read once here and handed back as an equal ``StreamingBody``. boto3 has no async
client (aiobotocore is not instrumented).
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from .. import estimate
from ..content import parse_arguments, text_part
from ..usage import count
from . import _base, anthropic
from ._base import Inputs, StreamRecorder, get, seq
from ._core import Endpoint, Method, MethodInstrumentor, Request, argument

PROVIDER = "aws.bedrock"
_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "au.", "jp.", "ca.")
_FAMILIES = (("anthropic.", "anthropic"), ("meta.", "llama"), ("amazon.titan-embed", "embed"))
_FAMILIES += (("amazon.titan-", "titan"), ("amazon.nova", "nova"), ("cohere.embed", "embed"))
_PARAMS = tuple((k, getattr(gen_ai, f"GEN_AI_REQUEST_{k.upper()}")) for k in ("max_tokens", "temperature", "top_p"))
_PARAMS += (("top_k", gen_ai.GEN_AI_REQUEST_TOP_K),)
# Provider stop reasons the convention names otherwise (finish_reason maps the rest).
_STOPS = {
    "FINISH": "stop",
    "LENGTH": "length",
    "CONTENT_FILTERED": "content_filter",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    "malformed_model_output": "error",
    "malformed_tool_use": "error",
}
# Converse's usage names <- Nova bodies, invocation metrics, Anthropic, Llama and Titan bodies.
_USAGE = {
    "inputTokens": ("inputTokens", "inputTokenCount", "input_tokens", "prompt_token_count", "inputTextTokenCount"),
    "outputTokens": ("outputTokens", "outputTokenCount", "output_tokens", "generation_token_count"),
    "cacheReadInputTokens": ("cacheReadInputTokens", "cacheReadInputTokenCount", "cache_read_input_tokens"),
    "cacheWriteInputTokens": ("cacheWriteInputTokens", "cacheWriteInputTokenCount", "cache_creation_input_tokens"),
}
# InvokeModel's response headers: every model's counts, whatever its body says.
_HEADERS = {f"x-amzn-bedrock-{h}-token-count": k for h, k in (("input", "inputTokens"), ("output", "outputTokens"))}
_HEADERS |= {f"x-amzn-bedrock-cache-{h}-input-token-count": f"cache{h.title()}InputTokens" for h in ("read", "write")}
_METRICS = "amazon-bedrock-invocationMetrics"


def family(model_id: str, body: Any) -> str:
    """anthropic | llama | titan | nova | embed | other: the native body a model speaks."""
    model = model_id.rpartition("/")[2]
    model = next((model[len(p) :] for p in _PREFIXES if model.startswith(p)), model)
    found = next((name for prefix, name in _FAMILIES if model.startswith(prefix)), None)
    if found is None:
        keys = body.keys() if isinstance(body, dict) else ()
        found = "anthropic" if "anthropic_version" in keys else "nova" if "schemaVersion" in keys else "other"
    return found


def usage_of(*sources: Any) -> dict[str, int]:
    """Counts in Converse's names from any of Bedrock's usage vocabularies (the first source holding one wins)."""
    out: dict[str, int] = {}
    for source in sources:
        if isinstance(source, dict):  # JSON, or botocore's parsed response
            for key, names in _USAGE.items():
                if key not in out:
                    value = next((v for n in names if (v := count(source.get(n))) is not None), None)
                    if value is not None:
                        out[key] = value
    return out


# --- content: Converse / Nova blocks -> GenAI parts ------------------------------------------------------------


def blocks(content: Any) -> list[Any]:
    """Converse (and Nova) content blocks as GenAI parts; cache points are not content."""
    parts: list[Any] = []
    for block in seq(content):
        if not isinstance(block, dict):
            continue
        if "text" in block:
            parts.append(text_part(block["text"]))
        elif "toolUse" in block:
            use = block["toolUse"]
            call = {"type": "tool_call", "id": use.get("toolUseId"), "name": use.get("name", "")}
            parts.append(call | {"arguments": use.get("input")})
        elif "toolResult" in block:
            result = block["toolResult"]
            texts = [b.get("text") if "text" in b else b.get("json") for b in seq(result.get("content"))]
            response = "".join(texts) if all(isinstance(t, str) for t in texts) else texts
            parts.append({"type": "tool_call_response", "id": result.get("toolUseId"), "response": response})
        elif "reasoningContent" in block:
            text = get(block["reasoningContent"].get("reasoningText"), "text", "")
            parts.append({"type": "reasoning", "content": text})
        elif modality := next((k for k in ("image", "document", "video") if k in block), None):
            media = block[modality]
            source, fmt = media.get("source") or {}, media.get("format")
            uri = get(source.get("s3Location"), "uri")
            data = source.get("bytes")  # bytes from boto3, base64 text in a Nova InvokeModel body
            part = {"type": "uri", "modality": modality, "uri": uri} if uri else {"type": "blob", "modality": modality}
            if not uri:
                part["content"] = base64.b64encode(data).decode() if isinstance(data, bytes) else data or ""
            parts.append(part | ({"mime_type": f"{modality}/{fmt}"} if fmt and modality != "document" else {}))
        elif "cachePoint" not in block:
            parts.append({"type": next(iter(block), "unknown")})
    return parts


def converse_inputs(body: Any) -> Inputs:
    messages = []
    for message in seq(body.get("messages")):
        if not isinstance(message, dict):  # botocore validates the call after us: junk is the SDK's to refuse
            continue
        parts = blocks(message.get("content"))
        role = message.get("role", "user")
        if role == "user" and parts and all(p["type"] == "tool_call_response" for p in parts):
            role = "tool"
        messages.append({"role": role, "parts": parts})
    tools = []
    for tool in seq((body.get("toolConfig") or {}).get("tools")):
        spec = tool.get("toolSpec")
        if spec:
            schema = (spec.get("inputSchema") or {}).get("json")
            tools.append(
                {"type": "function", "name": spec.get("name", ""), "description": spec.get("description", "")}
                | ({"parameters": schema} if schema is not None else {})
            )
    return Inputs(messages, blocks(body.get("system")) or None, tools or None)


def prompt_inputs(body: Any) -> Inputs:
    prompt = body.get("prompt")
    return Inputs([{"role": "user", "parts": [text_part(prompt)]}] if isinstance(prompt, str) else [])


def output(parts: list[Any], stop: Any, default: str = "stop") -> list[Any]:
    reason = _base.finish_reason(_STOPS.get(stop, stop), default)
    return [{"role": "assistant", "parts": parts, "finish_reason": reason}]


# --- requests ---------------------------------------------------------------------------------------------------


def request(body: Any, attributes: dict[str, Any]) -> None:
    _base.copy_params(body, _PARAMS, attributes)
    stops = _base.stop_sequences(body.get("stop_sequences"))
    if stops:
        attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops
    if body.get("stream") is True:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True


def _params(config: Any, *max_keys: str) -> dict[str, Any]:
    """An inference config's parameters under the names request() and budgets read."""
    config = config if isinstance(config, dict) else {}
    max_tokens = next((config[k] for k in max_keys if k in config), None)
    out = {"max_tokens": max_tokens, "temperature": config.get("temperature"), "top_p": config.get("topP")}
    return out | {"top_k": config.get("topK"), "stop_sequences": config.get("stopSequences")}


def route(client: Any, args: tuple, kwargs: dict) -> Request | None:
    operation = argument(args, kwargs, "operation_name", 0)
    kind = _OPERATIONS.get(operation) if isinstance(operation, str) else None
    if kind is None or client.meta.service_model.service_name != "bedrock-runtime":
        return None
    params = argument(args, kwargs, "api_params", 1) or {}
    model = params.get("modelId")
    stream = operation.endswith("Stream")
    if kind == "converse":
        body = {**params, **_params(params.get("inferenceConfig"), "maxTokens"), "model": model}
        endpoint = CONVERSE
    else:
        raw = params.get("body")
        try:
            native = json.loads(raw) if isinstance(raw, (bytes, bytearray, str)) else {}
        except ValueError:
            native = {}
        native = native if isinstance(native, dict) else {}
        name = family(model or "", native)
        if name == "nova":
            extra = _params(native.get("inferenceConfig"), "maxTokens", "max_new_tokens")
        elif name == "llama":
            extra = {"prompt": native.get("prompt"), "max_tokens": native.get("max_gen_len")}
            extra |= {"temperature": native.get("temperature"), "top_p": native.get("top_p")}
        elif name == "titan":
            extra = {"prompt": native.get("inputText")} | _params(native.get("textGenerationConfig"), "maxTokenCount")
        elif name == "embed":
            extra = {"input": native.get("inputText", native.get("texts"))}
        else:
            extra = {}
        body = {**native, **extra, "model": model}
        endpoint = INVOKE[name]
    if stream:
        body["stream"] = True
    address, port = _server(client)
    return Request(endpoint, body, PROVIDER, address, port, stream)


def _server(client: Any) -> tuple[str | None, int | None]:
    url = client.meta.endpoint_url
    cached = client.__dict__.get("_mltrack_server")
    if cached is None or cached[0] != url:
        parts = urlsplit(url)
        cached = (url, (parts.hostname, parts.port or {"https": 443, "http": 80}.get(parts.scheme)))
        client.__dict__["_mltrack_server"] = cached
    return cached[1]


# --- responses ---------------------------------------------------------------------------------------------------


def converse_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    stop = result.get("stopReason")
    attributes = {gen_ai.GEN_AI_RESPONSE_FINISH_REASONS: (stop,)} if isinstance(stop, str) else {}
    parts = blocks(get(get(result.get("output"), "message"), "content")) if capture else None
    return attributes, output(parts, stop) if capture else None, result.get("usage")


class _Failed(io.RawIOBase):
    """A body whose read raises what reading the real one raised (so the caller sees the same error)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def read(self, *args: Any) -> bytes:
        raise self.error


def _read_body(result: dict) -> bytes:
    """The InvokeModel response body, read once; the caller gets an equal StreamingBody over the same bytes."""
    from botocore.response import StreamingBody

    try:
        data = result["body"].read()
    except Exception as exc:
        result["body"] = StreamingBody(_Failed(exc), None)
        raise
    result["body"] = StreamingBody(io.BytesIO(data), len(data))
    return data


def _parse(name: str, data: Any) -> tuple[list[Any], Any, dict[str, Any], str | None]:
    """(output parts, stop reason, usage in Converse names, response id) of a native response body."""
    if name == "anthropic":
        usage = usage_of(data.get("usage"))
        return anthropic.blocks(data.get("content")), data.get("stop_reason"), usage, data.get("id")
    if name == "nova":
        message = get(data.get("output"), "message")
        return blocks(get(message, "content")), data.get("stopReason"), usage_of(data.get("usage")), None
    if name == "llama":
        return [text_part(data.get("generation", ""))], data.get("stop_reason"), usage_of(data), None
    if name == "titan":
        results = seq(data.get("results"))
        text = "".join(r.get("outputText", "") for r in results)
        usage = usage_of(data)
        tokens = [count(r.get("tokenCount")) for r in results]
        if tokens and None not in tokens:
            usage["outputTokens"] = sum(tokens)
        return [text_part(text)], results[0].get("completionReason") if results else None, usage, None
    first = next(iter(seq(data.get("outputs"))), None)  # Mistral's text completions
    if isinstance(first, dict):
        return [text_part(first.get("text", ""))], first.get("stop_reason"), usage_of(data), None
    return [], None, usage_of(data), None


def invoke_response(name: str) -> Any:
    def response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        try:
            data = json.loads(_read_body(result))
        except ValueError:  # not JSON (an image, audio): the headers still count its tokens
            data = None
        parts, stop, usage, response_id = _parse(name, data if isinstance(data, dict) else {})
        if not usage:
            headers = get(result.get("ResponseMetadata"), "HTTPHeaders") or {}
            usage = usage_of({k: int(v) for h, k in _HEADERS.items() if str(v := headers.get(h, "")).isdigit()})
        attributes: dict[str, Any] = {gen_ai.GEN_AI_RESPONSE_ID: response_id} if response_id else {}
        if isinstance(stop, str):
            attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (stop,)
        if name == "embed":
            usage.setdefault("outputTokens", 0)
        return attributes, output(parts, stop) if capture and name != "embed" else None, usage or None

    return response


# --- streams -----------------------------------------------------------------------------------------------------


class ConverseRecorder(StreamRecorder):
    """ConverseStream events (and Nova's native chunks, the same events): deltas kept per content block."""

    __slots__ = ("done_usage", "parts", "response_id", "stop", "usage")

    def __init__(self, call: Any, hide_usage: bool) -> None:
        super().__init__(call, hide_usage)
        self.parts: dict[int, list[Any]] = {}  # block index -> [kind, pieces, tool id, tool name]
        self.stop: Any = None
        self.usage: dict[str, int] = {}
        self.done_usage = False  # the provider's final counts arrived
        self.response_id: str | None = None

    def piece(self, index: Any, kind: str, text: Any) -> None:
        entry = self.parts.get(index)
        if entry is None:
            entry = self.parts[index] = [kind, [], None, None]
        if isinstance(text, str) and text:
            entry[1].append(text)

    def feed(self, event: Any) -> bool:
        self.converse_event(event)
        return True

    def converse_event(self, event: Any) -> None:
        if "contentBlockDelta" in event:
            inner = event["contentBlockDelta"]
            delta, index = inner.get("delta") or {}, inner.get("contentBlockIndex", 0)
            if "text" in delta:
                self.piece(index, "text", delta["text"])
            elif "toolUse" in delta:
                self.piece(index, "tool_call", delta["toolUse"].get("input"))
            elif "reasoningContent" in delta:
                self.piece(index, "reasoning", delta["reasoningContent"].get("text"))
        elif "contentBlockStart" in event:
            inner = event["contentBlockStart"]
            use = get(inner.get("start"), "toolUse")
            if use is not None:
                self.piece(inner.get("contentBlockIndex", 0), "tool_call", None)
                self.parts[inner.get("contentBlockIndex", 0)][2:] = [use.get("toolUseId"), use.get("name")]
        elif "messageStop" in event:
            self.stop = event["messageStop"].get("stopReason")
        elif "metadata" in event:
            self.usage = usage_of(event["metadata"].get("usage"))
            self.done_usage = bool(self.usage)

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        attributes: dict[str, Any] = {gen_ai.GEN_AI_RESPONSE_ID: self.response_id} if self.response_id else {}
        if isinstance(self.stop, str):
            attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (self.stop,)
        out = None
        if self.capture:
            parts = []
            for _, (kind, pieces, tool_id, name) in sorted(self.parts.items()):
                text = "".join(pieces)
                if kind == "tool_call":
                    parts.append({"type": kind, "id": tool_id, "name": name or "", "arguments": parse_arguments(text)})
                else:
                    parts.append({"type": kind, "content": text})
            out = output(parts, self.stop, "stop" if complete else _base.UNFINISHED)
        return attributes, out, self.usage if self.done_usage else None

    def output_pieces(self) -> list[str]:
        return [piece for entry in self.parts.values() for piece in entry[1]]

    def complete_at_close(self) -> bool:
        """Closed after the stop reason and the final counts: nothing more was coming."""
        return self.done_usage and self.stop is not None

    def estimate(self) -> dict[str, Any]:
        """The input the stream already reported (Anthropic, Llama, Titan report it first), output estimated."""
        reported = self.usage.get("inputTokens")
        if reported is None:
            return super().estimate()
        read, write = self.usage.get("cacheReadInputTokens", 0), self.usage.get("cacheWriteInputTokens", 0)
        seen = estimate.text_tokens("".join(self.output_pieces()), self.call.model)
        tokens_out = max(self.usage.get("outputTokens", 0), seen)
        return _base.estimated_usage(reported + read + write, tokens_out, read, write)


class InvokeRecorder(ConverseRecorder):
    """InvokeModelWithResponseStream chunks: each a model's native stream event, as JSON bytes. They are kept as
    they come and parsed together when the stream ends (one json.loads of them all costs a tenth of one per chunk)."""

    __slots__ = ("family", "raw")

    def __init__(self, call: Any, hide_usage: bool, family: str) -> None:
        super().__init__(call, hide_usage)
        self.family = family
        self.raw: list[bytes] = []

    def feed(self, event: Any) -> bool:
        chunk = event.get("chunk")
        if chunk is not None and type(chunk.get("bytes")) is bytes:
            self.raw.append(chunk["bytes"])
        return True

    def digest(self) -> None:
        raw, self.raw = self.raw, []
        try:
            chunks = json.loads(b"[" + b",".join(raw) + b"]")
        except ValueError:  # one chunk is not JSON: the others still count
            chunks = [c for c in map(_loads, raw) if c is not None]
        for chunk in chunks:
            if isinstance(chunk, dict):
                self.chunk(chunk)

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        self.digest()
        return super().outcome(complete)

    def output_pieces(self) -> list[str]:
        self.digest()
        return super().output_pieces()

    def complete_at_close(self) -> bool:
        self.digest()
        return super().complete_at_close()

    def chunk(self, data: dict) -> None:
        name = self.family
        if name == "anthropic":
            kind = data.get("type")
            if kind == "content_block_delta":
                delta = data.get("delta") or {}
                text = delta.get("text") or delta.get("partial_json") or delta.get("thinking")
                self.piece(data.get("index", 0), "reasoning" if "thinking" in delta else "text", text)
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                if block.get("type") == "tool_use":
                    self.parts[data.get("index", 0)] = ["tool_call", [], block.get("id"), block.get("name")]
            elif kind == "message_start":
                self.response_id = get(data.get("message"), "id")
                self.usage = usage_of(get(data.get("message"), "usage"))
                self.usage.pop("outputTokens", None)  # a stub until message_delta
            elif kind == "message_delta":
                self.stop = get(data.get("delta"), "stop_reason") or self.stop
                self.usage |= usage_of(data.get("usage"))
                self.done_usage = "inputTokens" in self.usage and "outputTokens" in self.usage
        elif name == "nova":
            self.converse_event(data)
        else:
            first = next(iter(seq(data.get("outputs"))), None)  # Mistral's chunks
            source = first if isinstance(first, dict) else data
            self.piece(0, "text", source.get("generation", source.get("outputText", source.get("text"))))
            self.stop = source.get("stop_reason") or data.get("completionReason") or self.stop
            self.usage = usage_of(data, self.usage)
            if count(data.get("totalOutputTextTokenCount")) is not None:  # Titan's running count
                self.usage["outputTokens"] = data["totalOutputTextTokenCount"]
        metrics = data.get(_METRICS)
        if metrics:  # the last chunk: Bedrock's own counts for what the body did not report
            self.usage = usage_of(metrics) | self.usage if self.usage else usage_of(metrics)
            self.done_usage = bool(self.usage)


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def invoke_recorder(name: str) -> Any:
    return lambda call, hide_usage: InvokeRecorder(call, hide_usage, name)


def stream_result(result: Any, wrap: Any) -> Any:
    key = "stream" if "stream" in result else "body"
    result[key] = wrap(result[key])
    return result


# --- the declaration ----------------------------------------------------------------------------------------------

_SHAPE = "bedrock.converse"
CONVERSE = Endpoint("chat", request, converse_response, converse_inputs, ConverseRecorder, usage_shape=_SHAPE)
_INVOKE = (("anthropic", "chat", anthropic.inputs), ("nova", "chat", converse_inputs), ("other", "chat", None))
_INVOKE += (("llama", "text_completion", prompt_inputs), ("titan", "text_completion", prompt_inputs))
INVOKE = {
    name: Endpoint(operation, request, invoke_response(name), inputs, invoke_recorder(name), usage_shape=_SHAPE)
    for name, operation, inputs in _INVOKE
}
INVOKE["embed"] = Endpoint("embeddings", request, invoke_response("embed"), usage_shape=_SHAPE)
_OPERATIONS = {"Converse": "converse", "ConverseStream": "converse", "InvokeModel": "invoke"}
_OPERATIONS["InvokeModelWithResponseStream"] = "invoke"


class BedrockInstrumentor(MethodInstrumentor):
    """Instruments boto3's bedrock-runtime client (entry point `opentelemetry_instrumentor: bedrock`)."""

    module = "botocore"
    tracer_name = "mltrack_otel.instrumentation.bedrock"
    dependencies = ("botocore >= 1.34",)
    methods = (Method("botocore.client", "BaseClient._make_api_call", route, stream_result),)
