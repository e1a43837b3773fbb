"""Amazon Bedrock Runtime (boto3 ``bedrock-runtime``) for the fake provider.

Learned from the Bedrock API reference (Converse, ConverseStream, InvokeModel, InvokeModelWithResponseStream,
TokenUsage, ConverseStreamOutput, ResponseStream, PayloadPart) and the model-parameter pages of the user guide,
not from botocore. Point boto3 at it with ``endpoint_url``::

    boto3.client("bedrock-runtime", endpoint_url=fake.url, region_name="us-east-1",
                 aws_access_key_id="x", aws_secret_access_key="x")

Endpoints (the ``{modelId}`` path segment is URL-encoded: ``us.anthropic...-v1%3A0``, ARNs with ``%2F``)
    ``POST /model/{modelId}/converse``: Converse JSON (``messages``, ``system``, ``inferenceConfig``,
    ``toolConfig``) answered with ``output.message``, ``stopReason``, ``usage`` and ``metrics``.
    ``POST /model/{modelId}/converse-stream``: the same request, answered as an AWS event stream
    (``application/vnd.amazon.eventstream``) of ``messageStart``, ``contentBlockStart`` (tool use only),
    ``contentBlockDelta``, ``contentBlockStop``, ``messageStop`` and ``metadata`` (usage) events.
    ``POST /model/{modelId}/invoke``: the model's native JSON body, answered with its native JSON body and
    the ``X-Amzn-Bedrock-Input-Token-Count`` / ``-Output-Token-Count`` / ``-Invocation-Latency`` headers (and
    ``-Cache-Read-Input-Token-Count`` / ``-Cache-Write-Input-Token-Count`` when the prompt cache was used).
    ``POST /model/{modelId}/invoke-with-response-stream``: an event stream of ``chunk`` events whose
    ``bytes`` (base64 in the frame's JSON payload) are the model's native stream chunks; the last one carries
    ``amazon-bedrock-invocationMetrics`` (``inputTokenCount``, ``outputTokenCount``, ``invocationLatency``,
    ``firstByteLatency``, and the cache counts when the prompt cache was used).

Native bodies (chosen by the model id with any ARN, ``us.``/``eu.``/``apac.``/``global.``... prefix removed,
else by the body's keys)
    Anthropic (``anthropic.*``, ``anthropic_version``): the Anthropic Messages body without ``model``/``stream``;
    the answer is an Anthropic message (``model`` is the Anthropic model name, e.g. ``claude-3-5-haiku-20241022``),
    streamed as Anthropic events (``message_start`` ... ``message_stop``), one per chunk. A tool call is
    preceded by the ``"Calling"``, ``" <tool>."`` text block, as on the Anthropic API.
    Llama (``meta.*``, ``prompt``): ``{"generation", "prompt_token_count", "generation_token_count",
    "stop_reason": "stop"|"length"}``; stream chunks carry one delta each, ``prompt_token_count`` on the first
    chunk only and the running ``generation_token_count``.
    Titan text (``amazon.titan-text*``/``amazon.titan-tg*``, ``inputText``): ``{"inputTextTokenCount",
    "results": [{"tokenCount", "outputText", "completionReason": "FINISH"|"LENGTH"}]}``; stream chunks
    ``{"outputText", "index", "totalOutputTextTokenCount", "completionReason", "inputTextTokenCount"}``.
    Mistral (``mistral.*``): ``{"prompt", "max_tokens"}`` (``<s>``/``[INST]`` markers are not counted) answered
    ``{"outputs": [{"text", "stop_reason": "stop"|"length"}]}`` with no usage in the body; stream chunks carry
    one delta each in the same shape.
    Titan embeddings (``amazon.titan-embed*``): ``{"embedding", "inputTextTokenCount"}`` (one segment,
    ``dimensions`` default 16 here); Cohere embeddings (``cohere.embed*``, ``texts``): ``{"id", "embeddings",
    "texts", "response_type"}`` with no usage in the body (each text a segment; the input-count header only).
    Nova (``amazon.nova*``, ``schemaVersion``/``messages``): Converse-shaped request (``inferenceConfig``
    ``maxTokens`` or ``max_new_tokens``); the answer is Converse-shaped with ``usage`` ``inputTokens``,
    ``outputTokens``, ``totalTokens``, ``cacheReadInputTokenCount``, ``cacheWriteInputTokenCount``; stream chunks
    are the Converse stream events, one per chunk (``{"contentBlockDelta": {...}}``).

Usage (the fake's shared formula; see fake_provider)
    Segments: the system prompt (all its text blocks) if any, then every message (its text blocks and the text
    of its tool results); Llama and Titan: the prompt, with Llama's ``<|...|>`` markers removed. As on Bedrock,
    ``inputTokens`` (Converse/Nova) and Anthropic's ``input_tokens`` EXCLUDE the cache: total input =
    ``inputTokens + cacheReadInputTokens + cacheWriteInputTokens``; ``totalTokens`` is that plus output. A
    ``cachePoint`` block (Converse/Nova) or ``cache_control`` (Anthropic) marks the cacheable prefix; without
    the ``cache-read``/``cache-write`` scenario, the first request with a prefix writes, later ones read. The
    cache counts appear only when the cache was used.

Finish reasons
    Converse/Nova ``stopReason`` ``end_turn``/``tool_use``/``max_tokens``; Anthropic ``stop_reason`` likewise;
    Llama ``stop``/``length``; Titan ``FINISH``/``LENGTH``.

Errors
    AWS JSON errors ``{"message": ...}`` with the ``x-amzn-ErrorType`` header (so botocore raises a
    ``ClientError`` with that code) and ``x-amzn-RequestId``: 400 ``ValidationException``, 401 -> 403
    ``UnrecognizedClientException``, 404 ``ResourceNotFoundException``, 429 ``ThrottlingException``, 500
    ``InternalServerException``, 529 -> 503 ``ServiceUnavailableException``. The ``stream-error`` scenario sends a
    ``modelStreamErrorException`` exception message in the event stream after DROP_AFTER deltas.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

from ..fake_provider import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    FakeError,
    GenerationRequest,
    Plan,
    Scenario,
    WireFormat,
    embedding,
    prompt_tokens_for_texts,
    text_of,
)

# status -> (HTTP status sent, AWS error code)
AWS_ERRORS: dict[int, tuple[int, str]] = {
    400: (400, "ValidationException"),
    401: (403, "UnrecognizedClientException"),
    404: (404, "ResourceNotFoundException"),
    429: (429, "ThrottlingException"),
    500: (500, "InternalServerException"),
    529: (503, "ServiceUnavailableException"),
}

_PREFIXES = ("us-gov.", "us.", "eu.", "apac.", "au.", "jp.", "ca.", "global.")
_LLAMA_MARKER = re.compile(r"<\|[^|>]*\|>")
_MISTRAL_MARKER = re.compile(r"</?s>|\[/?INST\]")
_LLAMA_USER = re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>(.*?)(?:<\|eot_id\|>|$)", re.S)
EVENT_STREAM = "application/vnd.amazon.eventstream"
CONVERSE_CACHE = ("cacheReadInputTokens", "cacheWriteInputTokens")


def base_model_id(model_id: str) -> str:
    """The foundation-model id inside an ARN or cross-region inference profile id."""
    model = model_id.rsplit("/", 1)[-1]
    for prefix in _PREFIXES:
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def family(model_id: str, body: Any) -> str:
    """anthropic | llama | titan | titan-embed | nova | converse-like guess from the body."""
    model = base_model_id(model_id)
    for prefix, name in (
        ("anthropic.", "anthropic"),
        ("meta.", "llama"),
        ("amazon.titan-embed", "titan-embed"),
        ("amazon.titan-", "titan"),
        ("amazon.nova", "nova"),
        ("cohere.embed", "cohere-embed"),
        ("mistral.", "mistral"),
    ):
        if model.startswith(prefix):
            return name
    body = body if isinstance(body, dict) else {}
    if "anthropic_version" in body:
        return "anthropic"
    if "prompt" in body:
        return "llama"
    if "inputText" in body:
        return "titan"
    return "nova"


# --------------------------------------------------------------------------------------------------
# AWS event-stream framing (prelude, headers, payload, CRC32s)
# --------------------------------------------------------------------------------------------------


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def event_stream_message(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    """One event-stream message: total length, headers length, prelude CRC, headers, payload, message CRC."""
    raw_headers = b"".join(_header(k, v) for k, v in headers)
    prelude = struct.pack(">II", 16 + len(raw_headers) + len(payload), len(raw_headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_stream_frame(event: str | None, data: Any) -> bytes:
    """An event (``:message-type: event``) or, for a name ending in ``Exception``, an exception message."""
    payload = json.dumps(data).encode()
    name = event or "chunk"
    if name.endswith("Exception"):
        kind = [(":message-type", "exception"), (":exception-type", name)]
    else:
        kind = [(":message-type", "event"), (":event-type", name)]
    return event_stream_message([*kind, (":content-type", "application/json")], payload)


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------


def _block_text(block: Any) -> str:
    """Text of one content block: Anthropic ``text``/``tool_result``, Converse ``text``/``toolResult``."""
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    if isinstance(block.get("text"), str):
        return block["text"]
    if block.get("type") == "tool_result":
        return text_of(block.get("content"))
    result = block.get("toolResult")
    if isinstance(result, dict):
        parts = result.get("content") or []
        return " ".join(_block_text(p) if "text" in p else json.dumps(p.get("json")) for p in parts if p)
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(t for t in (_block_text(b) for b in content) if t)
    return ""


def _cache_marked(obj: Any) -> bool:
    if isinstance(obj, dict):
        return "cache_control" in obj or "cachePoint" in obj or any(_cache_marked(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_cache_marked(v) for v in obj)
    return False


def _is_tool_result(block: Any) -> bool:
    return isinstance(block, dict) and (block.get("type") == "tool_result" or "toolResult" in block)


def chat_request(model: str, body: dict, anthropic: bool) -> GenerationRequest:
    """A Converse, Nova or Anthropic-messages body as the fake's provider-independent request."""
    segments: list[Any] = []
    marker = None
    system = body.get("system")
    if system:
        if _cache_marked(system):
            marker = 0
        segments.append(_content_text(system))
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    user_text = ""
    for msg in messages:
        if _cache_marked(msg.get("content")):
            marker = len(segments)
        segments.append(_content_text(msg.get("content")))
        if msg.get("role") == "user":
            content = msg.get("content")
            texts = [b["text"] for b in content or [] if isinstance(b, dict) and isinstance(b.get("text"), str)]
            user_text = " ".join(texts) if isinstance(content, list) and texts else _content_text(content)
    if anthropic:
        tools = [(t["name"], t.get("input_schema")) for t in body.get("tools") or [] if "input_schema" in t]
        choice = body.get("tool_choice") or {}
        kind = choice.get("type")
        forced = choice.get("name") if kind == "tool" else None
        max_tokens = body.get("max_tokens")
    else:
        tool_config = body.get("toolConfig") or {}
        specs = [t["toolSpec"] for t in tool_config.get("tools") or [] if isinstance(t, dict) and "toolSpec" in t]
        tools = [(s["name"], (s.get("inputSchema") or {}).get("json")) for s in specs]
        choice = tool_config.get("toolChoice") or {}
        kind = "any" if "any" in choice else "tool" if "tool" in choice else None
        forced = (choice.get("tool") or {}).get("name") if kind == "tool" else None
        config = body.get("inferenceConfig") or {}
        max_tokens = config.get("maxTokens", config.get("max_new_tokens"))
    if kind == "any" and tools:
        forced = tools[0][0]
    if kind == "none":
        tools = []
    last = messages[-1].get("content") if messages else None
    return GenerationRequest(
        model=model,
        segments=segments,
        user_text=user_text,
        tools=tools,
        forced_tool=forced,
        after_tool_result=isinstance(last, list) and any(_is_tool_result(b) for b in last),
        max_tokens=max_tokens,
        cache_marker=marker,
        cache_requested=_cache_marked(body),
        cache_key_extra=body.get("tools") or body.get("toolConfig"),
        system_text=_content_text(system) if system else "",
    )


def _llama_request(model: str, body: dict) -> GenerationRequest:
    prompt = str(body.get("prompt") or "")
    users = _LLAMA_USER.findall(prompt)
    user = users[-1] if users else prompt
    return GenerationRequest(
        model=model,
        segments=[_LLAMA_MARKER.sub(" ", prompt)],
        user_text=_LLAMA_MARKER.sub(" ", user),
        tools=[],
        max_tokens=body.get("max_gen_len"),
    )


def _mistral_request(model: str, body: dict) -> GenerationRequest:
    text = _MISTRAL_MARKER.sub(" ", str(body.get("prompt") or ""))
    return GenerationRequest(model=model, segments=[text], user_text=text, tools=[], max_tokens=body.get("max_tokens"))


def _titan_request(model: str, body: dict) -> GenerationRequest:
    text = str(body.get("inputText") or "")
    config = body.get("textGenerationConfig") or {}
    return GenerationRequest(
        model=model, segments=[text], user_text=text, tools=[], max_tokens=config.get("maxTokenCount")
    )


# --------------------------------------------------------------------------------------------------
# The wire format
# --------------------------------------------------------------------------------------------------


class Usage:
    """The plan's numbers in Bedrock's vocabulary (input excludes the cache)."""

    def __init__(self, plan: Plan) -> None:
        self.read = plan.cache_tokens if plan.cache_action == "read" else 0
        self.written = plan.cache_tokens if plan.cache_action == "write" else 0
        self.input = plan.prompt_tokens - self.read - self.written
        self.output = plan.output_tokens
        self.cached = plan.cache_action is not None

    def converse(self, nova: bool = False) -> dict[str, int]:
        out = {"inputTokens": self.input, "outputTokens": self.output}
        out["totalTokens"] = self.input + self.output + self.read + self.written
        if self.cached:  # Nova's native body says ...InputTokenCount where Converse says ...InputTokens
            read, write = ("cacheReadInputTokenCount", "cacheWriteInputTokenCount") if nova else CONVERSE_CACHE
            out |= {read: self.read, write: self.written}
        return out

    def invocation_metrics(self) -> dict[str, int]:
        out = {"inputTokenCount": self.input, "outputTokenCount": self.output}
        out |= {"invocationLatency": 1, "firstByteLatency": 1}
        if self.cached:
            out |= {"cacheReadInputTokenCount": self.read, "cacheWriteInputTokenCount": self.written}
        return out

    def headers(self) -> list[tuple[str, str]]:
        out = [
            ("X-Amzn-Bedrock-Input-Token-Count", str(self.input)),
            ("X-Amzn-Bedrock-Output-Token-Count", str(self.output)),
            ("X-Amzn-Bedrock-Invocation-Latency", "1"),
        ]
        if self.cached:
            out += [
                ("X-Amzn-Bedrock-Cache-Read-Input-Token-Count", str(self.read)),
                ("X-Amzn-Bedrock-Cache-Write-Input-Token-Count", str(self.written)),
            ]
        return out


def _anthropic_model_name(model_id: str) -> str:
    """``us.anthropic.claude-3-5-haiku-20241022-v1:0`` -> ``claude-3-5-haiku-20241022`` (what the body reports)."""
    return re.sub(r"-v\d+(:\d+)?$", "", base_model_id(model_id).removeprefix("anthropic."))


class Bedrock(WireFormat):
    name = "bedrock"
    paths = re.compile(r"/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream|invoke|invoke-with-response-stream)$")
    request_id_header = "x-amzn-RequestId"

    def user_text(self, payload: Any, match: re.Match[str]) -> str:
        if not isinstance(payload, dict):
            return ""
        model = unquote(match.group("model"))
        kind = "nova" if match.group("op").startswith("converse") else family(model, payload)
        if kind in ("anthropic", "nova"):
            return chat_request(model, payload, kind == "anthropic").user_text
        if kind == "llama":
            return _llama_request(model, payload).user_text
        if kind == "mistral":
            return _mistral_request(model, payload).user_text
        return str(payload.get("inputText") or "")

    def error(self, status: int, message: str) -> Any:
        return {"message": message}

    def request_id(self, provider: Any) -> str:
        return f"fake-{provider.next_id():08d}-0000-4000-8000-000000000000"

    def send_error(self, handler: Any, status: int, message: str, headers: list[tuple[str, str]]) -> None:
        # AWS status codes and the x-amzn-ErrorType header botocore reads the error code from (no retry-after).
        sent, code = AWS_ERRORS.get(status, AWS_ERRORS[400])
        headers = [*headers, ("x-amzn-ErrorType", f"{code}:http://internal.amazon.com/")]
        handler.send_json(sent, self.error(status, message), headers)

    def handle(self, handler: Any, payload: Any, match: re.Match[str], scenario: Scenario, request_id: str) -> None:
        if not isinstance(payload, dict):
            raise FakeError(400, "Expected a JSON object body (fake provider).")
        model = unquote(match.group("model"))
        op = match.group("op")
        rid = (self.request_id_header, request_id)
        provider = handler.server.provider
        if op.startswith("converse"):
            plan = provider.plan(chat_request(model, payload, False), scenario)
            build, events = _converse(plan, nova=False)
            handler.reply(
                plan,
                rid,
                op == "converse-stream",
                build,
                events,
                _stream_error,
                frame=event_stream_frame,
                content_type=EVENT_STREAM,
            )
            return
        kind = family(model, payload)
        if kind in ("titan-embed", "cohere-embed"):
            self._embed(handler, payload, kind, scenario, rid)
            return
        if kind == "anthropic":
            req = chat_request(model, payload, True)
            plan = provider.plan(req, scenario, tool_preamble=True)
            build, events = _anthropic(plan, _anthropic_model_name(model), provider.next_id())
        elif kind == "nova":
            plan = provider.plan(chat_request(model, payload, False), scenario)
            build, events = _converse(plan, nova=True)
        elif kind == "llama":
            plan = provider.plan(_llama_request(model, payload), scenario)
            build, events = _llama(plan)
        elif kind == "mistral":
            plan = provider.plan(_mistral_request(model, payload), scenario)
            build, events = _mistral(plan)
        else:
            plan = provider.plan(_titan_request(model, payload), scenario)
            build, events = _titan(plan)
        usage = Usage(plan)
        if op == "invoke":
            if scenario.drop:
                handler.abort()
                return
            if scenario.delay:
                time.sleep(scenario.delay * plan.visible_tokens)
            headers = [rid, *usage.headers()]
            handler.send_json(200, build(), headers)
            return
        handler.reply(
            plan,
            rid,
            True,
            build,
            _chunked(events, usage),
            _stream_error,
            frame=event_stream_frame,
            content_type=EVENT_STREAM,
        )

    def _embed(self, handler: Any, body: dict, kind: str, scenario: Scenario, rid: tuple[str, str]) -> None:
        if scenario.drop:
            handler.abort()
            return
        texts = (
            [str(body.get("inputText") or "")] if kind == "titan-embed" else [str(t) for t in body.get("texts") or []]
        )
        dims = int(body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS)
        vectors = [embedding(json.dumps(text), dims) for text in texts]
        tokens = prompt_tokens_for_texts(texts)
        if kind == "titan-embed":
            out: dict[str, Any] = {"embedding": vectors[0], "inputTextTokenCount": tokens}
        else:  # Cohere's body has no usage: only the headers count the tokens
            out = {"id": "fake-embed", "embeddings": vectors, "texts": texts, "response_type": "embeddings_floats"}
        headers = [rid, ("X-Amzn-Bedrock-Input-Token-Count", str(tokens)), ("X-Amzn-Bedrock-Invocation-Latency", "1")]
        handler.send_json(200, out, headers)


Events = Iterator[tuple[str | None, Any, bool]]


def _stream_error() -> tuple[str | None, Any]:
    data = {"message": "Stream interrupted (fake provider).", "originalStatusCode": 500}
    return "modelStreamErrorException", data | {"originalMessage": "Internal error (fake provider)."}


def _chunked(events: Any, usage: Usage) -> Any:
    """InvokeModelWithResponseStream: every native chunk base64-encoded in a ``chunk`` event; the last one also
    carries the invocation metrics."""

    def chunks() -> Events:
        pending = None
        for _, data, delta in events():
            if pending is not None:
                yield "chunk", {"bytes": base64.b64encode(json.dumps(pending[0]).encode()).decode()}, pending[1]
            pending = (data, delta)
        if pending is not None:
            last = dict(pending[0]) | {"amazon-bedrock-invocationMetrics": usage.invocation_metrics()}
            yield "chunk", {"bytes": base64.b64encode(json.dumps(last).encode()).decode()}, pending[1]

    return chunks


def _stop_reason(plan: Plan) -> str:
    return "max_tokens" if plan.truncated else "tool_use" if plan.tool else "end_turn"


def _tool_input(plan: Plan) -> Any:
    try:
        return json.loads(plan.tool.arguments) if plan.tool else {}
    except ValueError:  # truncated by the token limit
        return {}


def _converse(plan: Plan, nova: bool) -> tuple[Any, Any]:
    """Converse (and Nova invoke) answers: a JSON builder and the stream events (Converse event names; for Nova
    the chunk JSON is ``{eventName: payload}``)."""
    usage = Usage(plan)
    tool_id = f"tooluse_fake{plan.tool.id}" if plan.tool else ""
    text_block = bool(plan.pieces) or not plan.tool

    def build() -> Any:
        content: list[dict] = [{"text": plan.text}] if text_block else []
        if plan.tool:
            content.append({"toolUse": {"toolUseId": tool_id, "name": plan.tool.name, "input": _tool_input(plan)}})
        out = {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": _stop_reason(plan)}
        return out | {"usage": usage.converse(nova), "metrics": {"latencyMs": 1}}

    def events() -> Events:
        def ev(name: str, data: dict, delta: bool = False) -> tuple[str | None, Any, bool]:
            return (None, {name: data}, delta) if nova else (name, data, delta)

        yield ev("messageStart", {"role": "assistant"})
        index = 0
        if text_block:
            for piece in plan.pieces:
                yield ev("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0}, True)
            yield ev("contentBlockStop", {"contentBlockIndex": 0})
            index = 1
        if plan.tool:
            start = {"toolUse": {"toolUseId": tool_id, "name": plan.tool.name}}
            yield ev("contentBlockStart", {"start": start, "contentBlockIndex": index})
            for piece in plan.tool.pieces:
                yield ev(
                    "contentBlockDelta", {"delta": {"toolUse": {"input": piece}}, "contentBlockIndex": index}, True
                )
            yield ev("contentBlockStop", {"contentBlockIndex": index})
        yield ev("messageStop", {"stopReason": _stop_reason(plan)})
        meta = {"usage": usage.converse(nova), "metrics": {"latencyMs": 1}}
        yield ev("metadata", meta | ({"trace": {}} if nova else {}))

    return build, events


def _anthropic(plan: Plan, model: str, ids: int) -> tuple[Any, Any]:
    usage = Usage(plan)
    mid = f"msg_bdrk_fake{ids:06d}"
    tool_id = f"toolu_bdrk_fake{plan.tool.id}" if plan.tool else ""
    reason = _stop_reason(plan)

    def usage_of(output: int) -> dict:
        out = {"input_tokens": usage.input, "output_tokens": output}
        return out | {"cache_creation_input_tokens": usage.written, "cache_read_input_tokens": usage.read}

    def message(content: list, stop: str | None, output: int) -> dict:
        out = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content}
        return out | {"stop_reason": stop, "stop_sequence": None, "usage": usage_of(output)}

    def build() -> Any:
        content: list[dict] = []
        if plan.pieces or not plan.tool:
            content.append({"type": "text", "text": plan.text})
        if plan.tool:
            content.append({"type": "tool_use", "id": tool_id, "name": plan.tool.name, "input": _tool_input(plan)})
        return message(content, reason, plan.output_tokens)

    def events() -> Events:
        yield None, {"type": "message_start", "message": message([], None, 1)}, False
        index = 0
        if plan.pieces or not plan.tool:
            start = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            yield None, start, False
            for piece in plan.pieces:
                delta = {"type": "text_delta", "text": piece}
                yield None, {"type": "content_block_delta", "index": 0, "delta": delta}, True
            yield None, {"type": "content_block_stop", "index": 0}, False
            index = 1
        if plan.tool:
            block = {"type": "tool_use", "id": tool_id, "name": plan.tool.name, "input": {}}
            yield None, {"type": "content_block_start", "index": index, "content_block": block}, False
            for piece in plan.tool.pieces:
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield None, {"type": "content_block_delta", "index": index, "delta": delta}, True
            yield None, {"type": "content_block_stop", "index": index}, False
        delta = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None}}
        yield None, delta | {"usage": {"output_tokens": plan.output_tokens}}, False
        yield None, {"type": "message_stop"}, False

    return build, events


def _per_piece(plan: Plan, chunk: Callable[[int, str, bool], dict[str, Any]]) -> Events:
    """A text-completion stream: one chunk(index, piece, is_last) per piece of the answer (one empty chunk when
    there is none)."""
    pieces = plan.pieces or [""]
    for i, piece in enumerate(pieces):
        yield None, chunk(i, piece, i == len(pieces) - 1), bool(plan.pieces)


def _mistral(plan: Plan) -> tuple[Any, Any]:
    """Mistral's text-completion body: no usage in it (the headers and invocation metrics count)."""
    reason = "length" if plan.truncated else "stop"

    def build() -> Any:
        return {"outputs": [{"text": plan.text, "stop_reason": reason}]}

    def chunk(i: int, piece: str, last: bool) -> dict[str, Any]:
        return {"outputs": [{"text": piece, "stop_reason": reason if last else None}]}

    def events() -> Events:
        return _per_piece(plan, chunk)

    return build, events


def _llama(plan: Plan) -> tuple[Any, Any]:
    reason = "length" if plan.truncated else "stop"

    def build() -> Any:
        out = {"generation": plan.text, "prompt_token_count": plan.prompt_tokens}
        return out | {"generation_token_count": plan.output_tokens, "stop_reason": reason}

    def chunk(i: int, piece: str, last: bool) -> dict[str, Any]:
        return {
            "generation": piece,
            "prompt_token_count": plan.prompt_tokens if i == 0 else None,
            "generation_token_count": i + 1 if plan.pieces else 0,
            "stop_reason": reason if last else None,
        }

    def events() -> Events:
        return _per_piece(plan, chunk)

    return build, events


def _titan(plan: Plan) -> tuple[Any, Any]:
    reason = "LENGTH" if plan.truncated else "FINISH"

    def build() -> Any:
        result = {"tokenCount": plan.output_tokens, "outputText": plan.text, "completionReason": reason}
        return {"inputTextTokenCount": plan.prompt_tokens, "results": [result]}

    def chunk(i: int, piece: str, last: bool) -> dict[str, Any]:
        return {
            "outputText": piece,
            "index": 0,
            "totalOutputTextTokenCount": i + 1 if plan.pieces else 0,
            "completionReason": reason if last else None,
            "inputTextTokenCount": plan.prompt_tokens if i == 0 else None,
        }

    def events() -> Events:
        return _per_piece(plan, chunk)

    return build, events


WIRE = Bedrock()
