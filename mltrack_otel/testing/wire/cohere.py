"""Cohere's v2 HTTP API for the fake provider: chat (JSON and SSE), embed and rerank.

Point the SDK at the fake with ``cohere.ClientV2(api_key="x", base_url=fake.url)`` (or ``AsyncClientV2``).

Endpoints
    ``POST /v2/chat``: a ``V2ChatResponse`` body ``{id, finish_reason, message: {role, content | tool_plan +
    tool_calls}, usage}``; with ``"stream": true`` a ``text/event-stream`` whose every event is an ``event: <type>``
    line plus a ``data:`` line carrying the JSON object with the same ``type``: ``message-start`` (the id), then
    either ``content-start``, one ``content-delta`` per piece of text, ``content-end``, or, for a tool call,
    ``tool-plan-delta`` per piece of the plan, ``tool-call-start`` (id and name, empty arguments), one
    ``tool-call-delta`` per argument fragment, ``tool-call-end``; and last ``message-end`` with
    ``delta.finish_reason`` and ``delta.usage``.
    ``POST /v2/embed``: ``{id, embeddings: {<type>: [...]}, texts, meta: {api_version, billed_units}, response_type:
    "embeddings_by_type"}`` for each requested ``embedding_types`` entry (default ``["float"]``): ``float``,
    ``int8``, ``uint8``, ``binary``, ``ubinary`` or ``base64`` (float32 little-endian, base64).
    ``POST /v2/rerank``: ``{id, results: [{index, relevance_score}], meta: {api_version, billed_units:
    {search_units}}}``.

Content and usage
    The shared plan of :mod:`mltrack_otel.testing.fake_provider`: the echo answer, one output token per delta. A
    tool call (``tool`` scenario, or ``tool_choice: "REQUIRED"``) answers with ``tool_plan`` ``"Calling <name>."``
    (two deltas) and the example arguments of the first tool, finish reason ``TOOL_CALL``; ``max_tokens`` cuts the
    answer (``MAX_TOKENS``); otherwise ``COMPLETE``. Segments are the messages (string content or the ``text`` of
    its parts) and then every request ``documents`` entry (a string, or the values of its ``data`` joined).
    ``usage.billed_units.input_tokens`` is the shared prompt formula and ``output_tokens`` the deltas;
    ``usage.tokens`` counts what the model processed: the same output, and the input plus
    :data:`TEMPLATE_TOKENS` for the prompt template Cohere wraps around it (so the two differ, as they do on the real
    API, and a reader must choose the billed one). ``cache-read`` reports ``usage.cached_tokens`` (the cacheable
    prefix, inside the input counts); Cohere reports no cache writes and no separate reasoning count (the
    ``reasoning`` scenario's extra tokens are inside ``output_tokens``).
    Embed bills ``input_tokens`` by the prompt formula over ``texts`` (and ``inputs`` text parts) and ``images`` per
    image. Rerank scores a document by the share of distinct query words it contains, orders by score (ties by
    index), keeps ``top_n``, and bills ``ceil(len(documents) / 100)`` search units (at least one).

Errors and scenarios
    HTTP errors are Cohere's JSON ``{"message": ...}`` with the status (the SDK raises its ``ApiError`` subclass for
    it: ``BadRequestError``, ``UnauthorizedError``, ``TooManyRequestsError``, ``InternalServerError``... and a plain
    ``ApiError`` for 529). ``stream-error`` ends the stream after a few deltas with a ``message-end`` whose
    ``finish_reason`` is ``ERROR`` and whose ``delta.error`` says why (no usage), as the API reports a failed
    generation in band; ``drop`` cuts the connection. The scenario token is read from the last user message, the
    embed texts, or the rerank query.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from collections.abc import Iterator
from typing import Any

from mltrack_otel.testing.fake_provider import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    SCENARIO_TOKEN,
    FakeError,
    GenerationRequest,
    Scenario,
    WireFormat,
    embedding,
    last_user_text,
    openai_tools,
    prompt_tokens_for_texts,
    text_of,
)

__all__ = ["TEMPLATE_TOKENS", "WIRE", "CohereWire"]

#: Input tokens the model processes beyond the billed ones (Cohere's prompt template): ``usage.tokens`` minus
#: ``usage.billed_units``.
TEMPLATE_TOKENS = 10
SEARCH_UNIT_DOCUMENTS = 100


def _message_text(message: dict) -> str:
    return text_of(message.get("content"))


def _document_text(document: Any) -> str:
    if isinstance(document, str):
        return document
    if isinstance(document, dict):
        data = document.get("data", document)
        if isinstance(data, dict):
            return " ".join(str(v) for v in data.values())
        return str(data)
    return ""


def chat_request(body: dict) -> GenerationRequest:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    tools = openai_tools(body)
    choice = str(body.get("tool_choice") or "").upper()
    forced = tools[0][0] if choice == "REQUIRED" and tools else None
    if choice == "NONE":
        tools = []
    schema = None
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        schema = fmt.get("json_schema") or fmt.get("schema") or {}
    documents = [_document_text(d) for d in body.get("documents") or []]
    return GenerationRequest(
        model=body.get("model") or "",
        segments=[_message_text(m) for m in messages] + documents,
        user_text=last_user_text(messages),
        tools=tools,
        forced_tool=forced,
        after_tool_result=bool(messages) and messages[-1].get("role") == "tool",
        json_schema=schema,
        max_tokens=body.get("max_tokens"),
        system_text="\n".join(_message_text(m) for m in messages if m.get("role") == "system"),
    )


def _embed_texts(body: dict) -> list[str]:
    texts = [t for t in body.get("texts") or [] if isinstance(t, str)]
    for item in body.get("inputs") or []:
        for part in (item or {}).get("content") or []:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return texts


def _embed_images(body: dict) -> int:
    count = len(body.get("images") or [])
    for item in body.get("inputs") or []:
        count += sum(1 for p in (item or {}).get("content") or [] if isinstance(p, dict) and p.get("type") != "text")
    return count


def _encode(vector: list[float], kind: str) -> Any:
    if kind == "int8":
        return [round(v * 127) for v in vector]
    if kind == "uint8":
        return [round((v + 1) * 127.5) for v in vector]
    if kind in ("binary", "ubinary"):
        bits = [1 if v > 0 else 0 for v in vector]
        packed = [int("".join(map(str, bits[i : i + 8])).ljust(8, "0"), 2) for i in range(0, len(bits), 8)]
        return [b - 128 for b in packed] if kind == "binary" else packed
    if kind == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def relevance(query: str, document: str) -> float:
    """The fake's rerank score: the share of the query's distinct words that the document contains."""
    words = {w.lower() for w in query.split()}
    return round(len(words & {w.lower() for w in document.split()}) / len(words), 6) if words else 0.0


def search_units(documents: int) -> int:
    """Search units billed for one rerank of `documents` documents."""
    return max(1, math.ceil(documents / SEARCH_UNIT_DOCUMENTS))


class CohereWire(WireFormat):
    name = "cohere"
    paths = re.compile(r"/v2/(chat|embed|rerank)/?$")
    request_id_header = "x-debug-trace-id"

    def user_text(self, payload: Any, match: re.Match[str]) -> str:
        if not isinstance(payload, dict):
            return ""
        route = match.group(1)
        if route == "chat":
            return chat_request(payload).user_text
        if route == "rerank":
            return str(payload.get("query") or "")
        return next((t for t in _embed_texts(payload) if SCENARIO_TOKEN.search(t)), "")

    def error(self, status: int, message: str) -> Any:
        return {"message": message}

    def handle(self, handler: Any, payload: Any, match: re.Match[str], scenario: Scenario, request_id: str) -> None:
        if not isinstance(payload, dict) or handler.command != "POST":
            raise FakeError(400, "Expected a POST with a JSON object body (fake provider).")
        route = match.group(1)
        if route == "chat":
            self._chat(handler, payload, scenario, request_id)
            return
        if scenario.drop:
            handler.abort()
            return
        if route == "embed":
            self._embed(handler, payload, request_id)
        else:
            self._rerank(handler, payload, request_id)

    # chat -------------------------------------------------------------------------------------------------------

    def _chat(self, handler: Any, body: dict, scenario: Scenario, request_id: str) -> None:
        provider = handler.server.provider
        plan = provider.plan(chat_request(body), scenario, tool_preamble=True)
        mid = f"fake-{provider.next_id():06d}"
        finish = "MAX_TOKENS" if plan.truncated else "TOOL_CALL" if plan.tool else "COMPLETE"
        tool_id = f"{plan.tool.name}_fake{plan.tool.id}" if plan.tool else ""

        def usage() -> dict:
            out: dict[str, Any] = {
                "billed_units": {"input_tokens": plan.prompt_tokens, "output_tokens": plan.output_tokens},
                "tokens": {"input_tokens": plan.prompt_tokens + TEMPLATE_TOKENS, "output_tokens": plan.output_tokens},
            }
            if plan.cache_action == "read":
                out["cached_tokens"] = plan.cache_tokens
            return out

        def build_json() -> Any:
            message: dict[str, Any] = {"role": "assistant"}
            if plan.tool:
                message["tool_plan"] = plan.text
                function = {"name": plan.tool.name, "arguments": plan.tool.arguments}
                message["tool_calls"] = [{"id": tool_id, "type": "function", "function": function}]
            else:
                message["content"] = [{"type": "text", "text": plan.text}]
            return {"id": mid, "finish_reason": finish, "message": message, "usage": usage()}

        def event(kind: str, is_delta: bool = False, **data: Any) -> tuple[str, Any, bool]:
            return kind, {"type": kind, **data}, is_delta

        def events() -> Iterator[tuple[str | None, Any, bool]]:
            start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
            yield "message-start", {"id": mid, "type": "message-start", "delta": {"message": start}}, False
            if plan.tool:
                for piece in plan.pieces:
                    yield event("tool-plan-delta", True, delta={"message": {"tool_plan": piece}})
                call = {"id": tool_id, "type": "function", "function": {"name": plan.tool.name, "arguments": ""}}
                yield event("tool-call-start", index=0, delta={"message": {"tool_calls": call}})
                for piece in plan.tool.pieces:
                    fragment = {"tool_calls": {"function": {"arguments": piece}}}
                    yield event("tool-call-delta", True, index=0, delta={"message": fragment})
                yield event("tool-call-end", index=0)
            else:
                yield event("content-start", index=0, delta={"message": {"content": {"type": "text", "text": ""}}})
                for piece in plan.pieces:
                    yield event("content-delta", True, index=0, delta={"message": {"content": {"text": piece}}})
                yield event("content-end", index=0)
            yield event("message-end", delta={"finish_reason": finish, "usage": usage()})

        def error_event() -> tuple[str | None, Any]:
            delta = {"finish_reason": "ERROR", "error": "Stream interrupted (fake provider)."}
            return "message-end", {"type": "message-end", "delta": delta}

        stream = bool(body.get("stream"))
        handler.reply(plan, (self.request_id_header, request_id), stream, build_json, events, error_event)

    # embed and rerank -------------------------------------------------------------------------------------------

    def _embed(self, handler: Any, body: dict, request_id: str) -> None:
        texts = _embed_texts(body)
        images = _embed_images(body)
        dims = int(body.get("output_dimension") or DEFAULT_EMBEDDING_DIMENSIONS)
        kinds = body.get("embedding_types") or ["float"]
        vectors = [embedding(json.dumps(t), dims) for t in texts] + [
            embedding(f"image:{i}", dims) for i in range(images)
        ]
        billed: dict[str, int] = {"input_tokens": prompt_tokens_for_texts(texts)}
        if images:
            billed["images"] = images
        out = {
            "id": f"fake-{handler.server.provider.next_id():06d}",
            "embeddings": {kind: [_encode(v, kind) for v in vectors] for kind in kinds},
            "texts": texts,
            "meta": {"api_version": {"version": "2"}, "billed_units": billed},
            "response_type": "embeddings_by_type",
        }
        handler.send_json(200, out, [(self.request_id_header, request_id)])

    def _rerank(self, handler: Any, body: dict, request_id: str) -> None:
        query = str(body.get("query") or "")
        documents = [_document_text(d) for d in body.get("documents") or []]
        scored = sorted(((relevance(query, d), i) for i, d in enumerate(documents)), key=lambda s: (-s[0], s[1]))
        top_n = body.get("top_n")
        if isinstance(top_n, int) and top_n >= 0:
            scored = scored[:top_n]
        out = {
            "id": f"fake-{handler.server.provider.next_id():06d}",
            "results": [{"index": i, "relevance_score": score} for score, i in scored],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": search_units(len(documents))}},
        }
        handler.send_json(200, out, [(self.request_id_header, request_id)])


WIRE = CohereWire()
