"""OpenAI SDK (1.x to 3.x, and any OpenAI-compatible base_url): chat completions (create/parse/stream),
responses (create/parse/stream), embeddings and legacy completions, sync and async.

Only declarations live here: which routes are model calls, what to read from their requests, responses and
stream chunks. The wrapping itself is shared with Anthropic in _stainless.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from .. import providers
from ..content import media_part, parse_arguments, text_part
from ._base import (
    UNFINISHED,
    Call,
    Inputs,
    StreamRecorder,
    copy_params,
    finish_reason,
    get,
    seq,
    stop_sequences,
)
from ._stainless import Endpoint, Sdk, StainlessInstrumentor

_CHAT_PARAMS = (
    ("temperature", gen_ai.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", gen_ai.GEN_AI_REQUEST_TOP_P),
    ("frequency_penalty", gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY),
    ("seed", gen_ai.GEN_AI_REQUEST_SEED),
    ("service_tier", gen_ai.GEN_AI_OPENAI_REQUEST_SERVICE_TIER),
)
_OUTPUT_TYPES = {"json_schema": "json", "json_object": "json", "text": "text"}


def provider_name(client: Any, host: str | None) -> str:
    """azure.ai.openai for Azure clients, the provider of an OpenAI-compatible host, else openai."""
    if "Azure" in type(client).__name__:
        return "azure.ai.openai"
    return (providers.for_client(client, host) if host else None) or "openai"


# --- content: OpenAI message shapes -> GenAI messages -------------------------------------------------------


def _parts(content: Any) -> list[Any]:
    """Message content (a string or a list of content parts, chat or Responses style) as GenAI parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [text_part(content)]
    parts: list[Any] = []
    for part in content if isinstance(content, (list, tuple)) else (content,):  # never iterate other iterables
        if isinstance(part, str):
            parts.append(text_part(part))
            continue
        kind = get(part, "type")
        if kind in ("text", "input_text", "output_text"):
            parts.append(text_part(get(part, "text", "")))
        elif kind == "refusal":
            parts.append(text_part(get(part, "refusal", "")))
        elif kind == "image_url":
            parts.append(media_part(get(get(part, "image_url"), "url", ""), "image"))
        elif kind == "input_image":
            url, file_id = get(part, "image_url"), get(part, "file_id")
            parts.append(media_part(url, "image") if url else {"type": "file", "modality": "image", "file_id": file_id})
        elif kind == "input_audio":
            audio = get(part, "input_audio")
            fmt = get(audio, "format")
            blob = {"type": "blob", "modality": "audio", "content": get(audio, "data", "")}
            parts.append({**blob, "mime_type": f"audio/{fmt}"} if fmt else blob)
        elif kind in ("file", "input_file"):
            parts.append(_file_part(get(part, "file") or part))
        else:
            parts.append({"type": kind if isinstance(kind, str) else "unknown"})
    return parts


def _file_part(file: Any) -> dict[str, Any]:
    file_id, data, url = get(file, "file_id"), get(file, "file_data"), get(file, "file_url")
    if file_id:
        return {"type": "file", "modality": "document", "file_id": file_id}
    if url:
        return media_part(url, "document")
    return media_part(data or "", "document")


def _tool_response(content: Any) -> Any:
    """A tool result as sent: a string, or the joined text of text parts, or the structure itself."""
    if (
        isinstance(content, (list, tuple))
        and content
        and all(get(p, "type") in ("text", "input_text") for p in content)
    ):
        return "".join(get(p, "text", "") for p in content)
    return content


def chat_messages(messages: Any) -> list[Any]:
    out: list[Any] = []
    for message in seq(messages):
        role = get(message, "role", "user")
        content = get(message, "content")
        if role in ("tool", "function"):
            part = {
                "type": "tool_call_response",
                "id": get(message, "tool_call_id"),
                "response": _tool_response(content),
            }
            out.append({"role": "tool", "parts": [part]})
            continue
        parts = _parts(content)
        if role == "assistant":
            refusal = get(message, "refusal")
            if isinstance(refusal, str) and refusal:
                parts.append(text_part(refusal))
            parts.extend(_tool_call_part(c) for c in seq(get(message, "tool_calls")))
            legacy = get(message, "function_call")
            if legacy is not None:
                parts.append(_tool_call_part({"function": legacy}))
        entry = {"role": role, "parts": parts}
        name = get(message, "name")
        if isinstance(name, str):
            entry["name"] = name
        out.append(entry)
    return out


def response_items(items: Any) -> list[Any]:
    """Responses API input (a string or items) or output items as GenAI messages, one per item."""
    if items is None:
        return []
    if isinstance(items, str):
        return [{"role": "user", "parts": [text_part(items)]}]
    out: list[Any] = []
    for item in seq(items):
        kind = get(item, "type")
        if kind in (None, "message"):
            out.append({"role": get(item, "role", "user"), "parts": _parts(get(item, "content"))})
        elif kind in ("function_call", "custom_tool_call"):
            raw = get(item, "arguments") if kind == "function_call" else get(item, "input")
            call = {
                "type": "tool_call",
                "id": get(item, "call_id"),
                "name": get(item, "name", ""),
                "arguments": parse_arguments(raw),
            }
            out.append({"role": "assistant", "parts": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            result = {
                "type": "tool_call_response",
                "id": get(item, "call_id"),
                "response": _tool_response(get(item, "output")),
            }
            out.append({"role": "tool", "parts": [result]})
        elif kind == "reasoning":
            texts = [get(s, "text", "") for s in (*seq(get(item, "summary")), *seq(get(item, "content")))]
            if texts:
                out.append({"role": "assistant", "parts": [{"type": "reasoning", "content": "\n".join(texts)}]})
        elif kind != "item_reference":  # built-in tools the provider ran (web search, file search, ...)
            call = {"type": "server_tool_call", "id": get(item, "id"), "name": kind, "server_tool_call": {"type": kind}}
            out.append({"role": "assistant", "parts": [call]})
    return out


def tool_definitions(tools: Any) -> list[Any] | None:
    """Chat (`{"type", "function": {...}}`) and Responses (flat) tool definitions in the convention's shape."""
    if not tools:
        return None
    out = []
    for tool in seq(tools):
        kind = get(tool, "type", "function")
        spec = get(tool, "function") or get(tool, "custom") or tool
        definition = {"type": kind, "name": get(spec, "name", kind), "description": get(spec, "description", "")}
        parameters = get(spec, "parameters")
        if parameters is not None:
            definition["parameters"] = parameters
        out.append(definition)
    return out


# --- requests ------------------------------------------------------------------------------------------------


def _common_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    copy_params(body, _CHAT_PARAMS, attributes)
    stops = stop_sequences(body.get("stop"))
    if stops:
        attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops
    n = body.get("n")
    if type(n) is int and n != 1:
        attributes[gen_ai.GEN_AI_REQUEST_CHOICE_COUNT] = n
    if body.get("stream") is True:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True


def chat_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    _common_request(body, attributes)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if type(max_tokens) is int:
        attributes[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in _OUTPUT_TYPES:
        attributes[gen_ai.GEN_AI_OUTPUT_TYPE] = _OUTPUT_TYPES[response_format["type"]]


def completion_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    _common_request(body, attributes)
    if type(body.get("max_tokens")) is int:
        attributes[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] = body["max_tokens"]


def responses_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    copy_params(body, _CHAT_PARAMS, attributes)
    if type(body.get("max_output_tokens")) is int:
        attributes[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] = body["max_output_tokens"]
    text_format = get(get(body, "text"), "format")
    if isinstance(text_format, dict) and text_format.get("type") in _OUTPUT_TYPES:
        attributes[gen_ai.GEN_AI_OUTPUT_TYPE] = _OUTPUT_TYPES[text_format["type"]]
    if body.get("stream") is True:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
    conversation = body.get("conversation")  # the Responses API's own conversation, unless tracking set one
    conversation = get(conversation, "id") if isinstance(conversation, dict) else conversation
    if isinstance(conversation, str) and gen_ai.GEN_AI_CONVERSATION_ID not in attributes:
        attributes[gen_ai.GEN_AI_CONVERSATION_ID] = conversation


def embeddings_request(body: dict[str, Any], attributes: dict[str, Any]) -> None:
    encoding = body.get("encoding_format")
    if isinstance(encoding, str):
        attributes[gen_ai.GEN_AI_REQUEST_ENCODING_FORMATS] = (encoding,)
    if type(body.get("dimensions")) is int:
        attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = body["dimensions"]


def chat_inputs(body: dict[str, Any]) -> Inputs:
    return Inputs(chat_messages(body.get("messages")), None, tool_definitions(body.get("tools")))


def completion_inputs(body: dict[str, Any]) -> Inputs:
    prompt = body.get("prompt")
    prompts = prompt if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else [prompt]
    return Inputs([{"role": "user", "parts": [text_part(p)]} for p in prompts if p is not None])


def responses_inputs(body: dict[str, Any]) -> Inputs:
    instructions = body.get("instructions")
    system = [text_part(instructions)] if isinstance(instructions, str) and instructions else None
    return Inputs(response_items(body.get("input")), system, tool_definitions(body.get("tools")))


# --- responses -----------------------------------------------------------------------------------------------


def _response_ids(result: Any, attributes: dict[str, Any]) -> None:
    response_id = get(result, "id")
    if isinstance(response_id, str):
        attributes[gen_ai.GEN_AI_RESPONSE_ID] = response_id
    model = get(result, "model")
    if isinstance(model, str):
        attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = model
    tier = get(result, "service_tier")
    if isinstance(tier, str):
        attributes[gen_ai.GEN_AI_OPENAI_RESPONSE_SERVICE_TIER] = tier
    fingerprint = get(result, "system_fingerprint")
    if isinstance(fingerprint, str):
        attributes[gen_ai.GEN_AI_OPENAI_RESPONSE_SYSTEM_FINGERPRINT] = fingerprint


def _tool_call_part(call: Any) -> dict[str, Any]:
    function = get(call, "function") or get(call, "custom")
    arguments = get(function, "arguments")
    if arguments is None:
        arguments = get(function, "input")
    return {
        "type": "tool_call",
        "id": get(call, "id"),
        "name": get(function, "name", ""),
        "arguments": parse_arguments(arguments),
    }


def chat_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    attributes: dict[str, Any] = {}
    _response_ids(result, attributes)
    choices = seq(get(result, "choices"))
    reasons = [get(c, "finish_reason") for c in choices]
    if any(isinstance(r, str) for r in reasons):
        attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = tuple(r for r in reasons if isinstance(r, str))
    output = None
    if capture:
        output = []
        for choice, reason in zip(choices, reasons, strict=True):
            message = get(choice, "message")
            parts: list[Any] = []
            text = get(message, "content")
            if text:
                parts.append(text_part(text))
            refusal = get(message, "refusal")
            if refusal:
                parts.append(text_part(refusal))
            parts.extend(_tool_call_part(c) for c in seq(get(message, "tool_calls")))
            output.append(
                {"role": get(message, "role", "assistant"), "parts": parts, "finish_reason": finish_reason(reason)}
            )
    return attributes, output, get(result, "usage")


def completion_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    attributes: dict[str, Any] = {}
    _response_ids(result, attributes)
    choices = seq(get(result, "choices"))
    reasons = tuple(r for r in (get(c, "finish_reason") for c in choices) if isinstance(r, str))
    if reasons:
        attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    output = None
    if capture:
        output = [
            {
                "role": "assistant",
                "parts": [text_part(get(c, "text", ""))],
                "finish_reason": finish_reason(get(c, "finish_reason")),
            }
            for c in choices
        ]
    return attributes, output, get(result, "usage")


def embeddings_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    attributes: dict[str, Any] = {}
    model = get(result, "model")
    if isinstance(model, str):
        attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = model
    data = seq(get(result, "data"))
    if data:
        vector = get(data[0], "embedding")
        if isinstance(vector, list):
            attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(vector)
    return attributes, None, get(result, "usage")


_STATUS_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


def responses_response(result: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
    attributes: dict[str, Any] = {}
    _response_ids(result, attributes)
    items = seq(get(result, "output"))
    parts = [p for message in response_items(items) for p in message["parts"]] if capture else []
    status = get(result, "status")
    if status == "incomplete":
        reason = _STATUS_REASONS.get(get(get(result, "incomplete_details"), "reason"), "length")
    elif status == "failed":
        reason = "error"
    elif any(get(i, "type") == "function_call" for i in items):
        reason = "tool_call"
    else:
        reason = "stop" if status in ("completed", None) else str(status)
    attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (reason,)
    output = [{"role": "assistant", "parts": parts, "finish_reason": reason}] if capture else None
    return attributes, output, get(result, "usage")


# --- streams -------------------------------------------------------------------------------------------------


class StreamedChoice:
    """What one choice of a chat stream has said so far: text, refusal, tool-call fragments, finish reason."""

    __slots__ = ("finish", "refusal", "role", "text", "tools")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.tools: dict[int, list[Any]] = {}  # index -> [id, name, argument fragments]
        self.finish: str | None = None
        self.role = "assistant"


def _unset(model: Any, field: str) -> None:
    """Mark a model field as not sent (pydantic v2, else v1), so to_dict()/exclude_unset see what they would have."""
    fields_set = getattr(model, "__pydantic_fields_set__", None)
    if fields_set is None:
        fields_set = getattr(model, "__fields_set__", None)
    if fields_set is not None:
        fields_set.discard(field)


def _add_tool_deltas(acc: StreamedChoice, tool_calls: Any) -> None:
    for tool in tool_calls:
        slot = acc.tools.get(tool.index)
        if slot is None:
            slot = acc.tools[tool.index] = [None, "", []]
        if tool.id:
            slot[0] = tool.id
        function = tool.function
        if function is not None:
            if function.name:
                slot[1] += function.name
            if function.arguments:
                slot[2].append(function.arguments)


def add_delta_texts(delta: Any, into: list[str]) -> None:
    """Append the output text one chat delta carries (content, refusal, reasoning, tool-call names and arguments)."""
    for text in (get(delta, "content"), get(delta, "refusal"), get(delta, "reasoning_content")):
        if isinstance(text, str):
            into.append(text)
    for tool in seq(get(delta, "tool_calls")):
        function = get(tool, "function")
        into.extend(t for t in (get(function, "name"), get(function, "arguments")) if isinstance(t, str))


class ChatRecorder(StreamRecorder):
    """Chat completion chunks: text, refusal and tool-call deltas per choice, appended to lists."""

    __slots__ = ("choices", "fields", "usage")

    def __init__(self, call: Call, hide_usage: bool) -> None:
        super().__init__(call, hide_usage)
        self.choices: dict[int, StreamedChoice] = {}
        self.fields: dict[str, Any] = {}
        self.usage: Any = None

    def feed(self, chunk: Any) -> bool:
        choices = chunk.choices
        usage = chunk.usage
        if usage is not None:
            self.usage = usage
            if self.hide_usage and not choices:
                return False  # the usage-only chunk we asked for: the caller would not have seen it
        elif self.hide_usage:  # without our stream_options the chunk would not carry "usage": null either
            try:
                chunk.__pydantic_fields_set__.discard("usage")
            except AttributeError:  # pydantic v1
                _unset(chunk, "usage")
        if not self.fields:
            self.fields = {"id": chunk.id, "model": chunk.model}
            self.fields["service_tier"] = getattr(chunk, "service_tier", None)
            self.fields["system_fingerprint"] = getattr(chunk, "system_fingerprint", None)
        for choice in choices:
            acc = self.choices.get(choice.index)
            if acc is None:
                acc = self.choices[choice.index] = StreamedChoice()
            reason = choice.finish_reason
            if reason is not None:
                acc.finish = reason
                if self.usage is None:  # Groq reports a stream's usage unasked, in the finish chunk's x_groq
                    self.usage = get(get(chunk, "x_groq"), "usage")
            if self.capture:
                self.add_deltas(choice, acc)
            else:  # only the text, for an estimate should the usage never arrive: the delta itself is ~10x bigger
                delta = choice.delta
                text = delta.content
                if text and delta.tool_calls is None and not delta.refusal and not delta.__pydantic_extra__:
                    self.seen.append(text)  # the common chunk: text alone
                else:
                    add_delta_texts(delta, self.seen)
        return True

    def output_pieces(self) -> list[str]:
        if not self.capture:
            return self.seen
        pieces: list[str] = []
        for acc in self.choices.values():
            pieces += acc.text
            pieces += acc.refusal
            for _, name, fragments in acc.tools.values():
                pieces.append(name)
                pieces += fragments
        return pieces

    @staticmethod
    def add_deltas(choice: Any, acc: StreamedChoice) -> None:
        """Append one choice's deltas (text, tool-call fragments, refusal) to its accumulator."""
        delta = choice.delta
        text = delta.content
        if text:
            acc.text.append(text)
        if delta.tool_calls:
            _add_tool_deltas(acc, delta.tool_calls)
        if delta.role:
            acc.role = delta.role
        refusal = get(delta, "refusal")
        if refusal:
            acc.refusal.append(refusal)

    def salvage(self, chunk: Any) -> bool:
        if not self.hide_usage:
            return True
        if not chunk.choices and chunk.usage is not None:
            return False
        _unset(chunk, "usage")
        return True

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        attributes: dict[str, Any] = {}
        _response_ids(self.fields, attributes)
        ordered = sorted(self.choices.items())
        reasons = tuple(acc.finish for _, acc in ordered if acc.finish)
        if reasons:
            attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
        output = None
        if self.capture:
            output = []
            for _, acc in ordered:
                parts: list[Any] = []
                if acc.text:
                    parts.append(text_part("".join(acc.text)))
                if acc.refusal:
                    parts.append(text_part("".join(acc.refusal)))
                for _, (call_id, name, fragments) in sorted(acc.tools.items()):
                    arguments = parse_arguments("".join(fragments))
                    parts.append({"type": "tool_call", "id": call_id, "name": name, "arguments": arguments})
                reason = finish_reason(acc.finish, UNFINISHED if not complete else "stop")
                output.append({"role": acc.role, "parts": parts, "finish_reason": reason})
        return attributes, output, self.usage


# Responses events whose deltas are output the provider bills, besides the text (kept for an estimate only).
_OTHER_DELTAS = frozenset(
    {
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.refusal.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)


class ResponsesRecorder(StreamRecorder):
    """Responses API events: the final `response.*` event carries the whole response; deltas cover a cut."""

    __slots__ = ("final", "started_response", "text")

    _TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

    def __init__(self, call: Call, hide_usage: bool) -> None:
        super().__init__(call, hide_usage)
        self.text: list[str] = []
        self.final: Any = None
        self.started_response: Any = None

    def feed(self, event: Any) -> bool:
        kind = event.type
        if kind == "response.output_text.delta":
            self.text.append(event.delta)  # the output when captured, else only for an estimate
        elif kind in _OTHER_DELTAS:
            self.seen.append(event.delta)
        elif kind in self._TERMINAL:
            self.final = event.response
        elif kind == "response.created":
            self.started_response = event.response
        return True

    def output_pieces(self) -> list[str]:
        return self.text + self.seen

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        if self.final is not None:
            return responses_response(self.final, self.capture)
        attributes: dict[str, Any] = {}
        _response_ids(self.started_response, attributes)
        output = None
        if self.capture:
            parts = [text_part("".join(self.text))] if self.text else []
            output = [{"role": "assistant", "parts": parts, "finish_reason": UNFINISHED}]
        return attributes, output, None


class CompletionRecorder(ChatRecorder):
    """Legacy completion chunks: the text is on the choice itself."""

    __slots__ = ()

    def feed(self, chunk: Any) -> bool:
        choices = chunk.choices
        if chunk.usage is not None:
            self.usage = chunk.usage
            if self.hide_usage and not choices:
                return False
        elif self.hide_usage:
            _unset(chunk, "usage")
        if not self.fields:
            self.fields = {"id": chunk.id, "model": chunk.model}
        for choice in choices:
            acc = self.choices.get(choice.index)
            if acc is None:
                acc = self.choices[choice.index] = StreamedChoice()
            if choice.finish_reason is not None:
                acc.finish = choice.finish_reason
            if choice.text:
                (acc.text if self.capture else self.seen).append(choice.text)
        return True


# --- the declaration -----------------------------------------------------------------------------------------

_CHAT = Endpoint("chat", chat_request, chat_response, chat_inputs, ChatRecorder, usage_option=True)
_RESPONSES = Endpoint(
    "chat", responses_request, responses_response, responses_inputs, ResponsesRecorder, usage_shape="openai.responses"
)
_EMBEDDINGS = Endpoint("embeddings", embeddings_request, embeddings_response)
_COMPLETIONS = Endpoint(
    "text_completion", completion_request, completion_response, completion_inputs, CompletionRecorder, usage_option=True
)

SDK = Sdk(
    module="openai",
    routes={
        "/chat/completions": _CHAT,
        "/responses": _RESPONSES,
        "/embeddings": _EMBEDDINGS,
        "/completions": _COMPLETIONS,
    },
    provider_name=provider_name,
    instruments=("openai >= 1.40",),
)


class OpenAIInstrumentor(StainlessInstrumentor):
    """Instruments the openai SDK (entry point `opentelemetry_instrumentor: openai`)."""

    sdk = SDK
