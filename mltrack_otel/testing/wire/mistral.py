"""Mistral AI's API (La Plateforme, ``https://api.mistral.ai``) in the fake provider.

Endpoints (learned from Mistral's API reference: chat completions, embeddings, prompt caching, error glossary)
    ``POST /v1/chat/completions`` (JSON, or SSE when ``"stream": true``) and ``POST /v1/embeddings``.

    Mistral's paths are OpenAI's; the real APIs differ by host, which the fake (one address for every provider)
    cannot tell apart, so this wire answers only requests from Mistral's SDK (``User-Agent: mistral-client-...``,
    see ``WireFormat.user_agent``) or ones carrying ``x-fake-wire: mistral``; anything else keeps OpenAI's format.

Chat
    Request as OpenAI's chat (``messages`` with string or chunk-list content, ``tools``, ``tool_choice`` of
    ``auto``/``none``/``any``/``required`` or a named function, ``response_format``, ``max_tokens``), plus
    ``prompt_cache_key``. The answer follows the shared plan (echo text, tool call, JSON) with finish reasons
    ``stop``/``length``/``tool_calls``. Differences from OpenAI that the fake reproduces:

    * a stream carries ``usage`` in its last chunk (the one with ``finish_reason``) without any ``stream_options``,
      then ``data: [DONE]``;
    * a streamed tool call arrives whole in one delta (id, name and the full ``arguments`` string), not as
      argument fragments (output tokens still count the plan's argument fragments);
    * ``usage`` is ``prompt_tokens``/``completion_tokens``/``total_tokens`` plus, on a prompt-cache hit only,
      ``prompt_tokens_details.cached_tokens`` (included in ``prompt_tokens``); Mistral reports no cache writes and
      folds reasoning into ``completion_tokens``;
    * the ``reasoning`` scenario answers as Magistral does: the content is a list of chunks, a ``thinking`` chunk
      (``2 x visible`` filler words, each streamed as its own ``[{"type": "thinking", ...}]`` delta before the text)
      then a ``text`` chunk; ``completion_tokens`` counts both;
    * prompt caching: requests with the same ``prompt_cache_key`` and cacheable prefix (every message but the
      last) hit the cache from the second one on; the ``cache-read`` scenario forces a hit.

Embeddings
    ``{"model", "input": str | [str], "output_dimension"?}`` -> ``{"id", "object": "list", "data": [{"object":
    "embedding", "embedding", "index"}], "model", "usage": {"prompt_tokens", "completion_tokens": 0,
    "total_tokens"}}``; tokens by the shared formula.

Errors
    ``{"object": "error", "message", "type", "param", "code"}`` with the HTTP status (types
    ``invalid_request_error``, ``authentication_error``, ``rate_limit_error``, ``server_error``). The extra
    ``error-422`` scenario (Mistral's request-validation status) answers ``{"detail": [...]}``, which the SDK raises
    as ``HTTPValidationError``. A ``stream-error`` stream sends the error object as the data of an SSE event after
    three deltas (no ``[DONE]``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

from mltrack_otel.testing import fake_provider as fp

# status -> (Mistral error type, code)
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "unauthorized"),
    404: ("invalid_request_error", "not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    529: ("server_error", "service_unavailable"),
}


def _content_text(content: Any) -> str:
    """Text of a Mistral message content: a string or a list of chunks (text, or thinking with nested chunks)."""
    if isinstance(content, list):
        texts = []
        for chunk in content:
            if isinstance(chunk, dict) and chunk.get("type") == "thinking":
                texts.append(_content_text(chunk.get("thinking")))
            else:
                texts.append(fp.text_of([chunk]))
        return " ".join(t for t in texts if t)
    return fp.text_of(content)


def _thoughts(n: int) -> list[str]:
    """A reasoning model's thinking: n words, one delta each."""
    return [("" if i == 0 else " ") + fp.FILLER[i % len(fp.FILLER)] for i in range(n)]


def _thinking(text: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": [{"type": "text", "text": text}]}


class MistralWire(fp.WireFormat):
    name = "mistral"
    paths = re.compile(r"^/v1/(chat/completions|embeddings)/?$")
    user_agent = re.compile(r"^mistral-client-")
    request_id_header = "mistral-correlation-id"

    def user_text(self, payload: Any, match: re.Match[str]) -> str:
        if not isinstance(payload, dict):
            return ""
        if match.group(1) == "embeddings":
            inputs = payload.get("input")
            return " ".join(inputs) if isinstance(inputs, list) else str(inputs or "")
        return self._request(payload).user_text

    def error(self, status: int, message: str) -> Any:
        kind, code = _ERRORS.get(status, _ERRORS[400])
        return {"object": "error", "message": message, "type": kind, "param": None, "code": code}

    def serve(self, handler: Any, rec: fp.RecordedRequest, match: re.Match[str], payload: Any) -> None:
        if self.scenario_name(rec, match, payload) == "error-422":
            rec.scenario = "error-422"
            handler.server.provider.record(rec)
            detail = [{"type": "missing", "loc": ["body", "model"], "msg": "Field required", "input": payload}]
            handler.send_json(422, {"detail": detail}, [(self.request_id_header, "req_fake422")])
            return
        super().serve(handler, rec, match, payload)

    # -- requests ---------------------------------------------------------------------------------------------

    @staticmethod
    def _request(body: dict) -> fp.GenerationRequest:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        forced, tools = fp.openai_tool_choice(body, fp.openai_tools(body), required=("any", "required"))
        key = body.get("prompt_cache_key")
        return fp.GenerationRequest(
            model=body.get("model") or "",
            segments=[_content_text(m.get("content")) for m in messages],
            user_text=fp.last_user_text(messages, _content_text),
            tools=tools,
            forced_tool=forced,
            after_tool_result=bool(messages) and messages[-1].get("role") == "tool",
            json_schema=fp.openai_json_schema(body),
            max_tokens=body.get("max_tokens"),
            cache_requested=bool(key),
            cache_key_extra=key,
            system_text="\n".join(_content_text(m.get("content")) for m in messages if m.get("role") == "system"),
        )

    # -- answers ----------------------------------------------------------------------------------------------

    def handle(self, handler: Any, payload: Any, match: re.Match[str], scenario: fp.Scenario, request_id: str) -> None:
        if not isinstance(payload, dict) or handler.command != "POST":
            raise fp.FakeError(400, "Expected a POST with a JSON object body (fake provider).")
        if match.group(1) == "embeddings":
            self._embeddings(handler, payload, scenario, request_id)
        else:
            self._chat(handler, payload, scenario, request_id)

    @staticmethod
    def _usage(plan: fp.Plan) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": plan.prompt_tokens,
            "total_tokens": plan.prompt_tokens + plan.output_tokens,
            "completion_tokens": plan.output_tokens,
        }
        if plan.cache_action == "read" and plan.cache_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": plan.cache_tokens}
        return usage

    def _chat(self, handler: Any, body: dict, scenario: fp.Scenario, request_id: str) -> None:
        provider = handler.server.provider
        plan = provider.plan(self._request(body), scenario)
        if plan.cache_action == "write":  # Mistral reports no cache writes: a miss is just a miss
            plan.cache_action, plan.cache_tokens = None, 0
        base = {"id": f"{provider.next_id():032x}", "object": "chat.completion.chunk", "created": int(time.time())}
        base["model"] = plan.model
        finish = "length" if plan.truncated else "tool_calls" if plan.tool else "stop"
        tool_calls = []
        if plan.tool:
            fn = {"name": plan.tool.name, "arguments": plan.tool.arguments}
            tool_calls = [{"id": f"fake{plan.tool.id[-5:]}", "type": "function", "function": fn, "index": 0}]

        thoughts = _thoughts(plan.reasoning_tokens)

        def build_json() -> Any:
            content: Any = plan.text
            if thoughts:
                content = [_thinking("".join(thoughts)), {"type": "text", "text": plan.text}]
            message: dict[str, Any] = {"role": "assistant", "content": content, "prefix": False}
            if tool_calls:
                message["tool_calls"] = tool_calls
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return {**base, "object": "chat.completion", "usage": self._usage(plan), "choices": [choice]}

        def chunk(delta: dict, finish_reason: str | None = None, usage: dict | None = None) -> dict:
            out = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            if usage is not None:
                out["usage"] = usage
            return out

        def events() -> Iterator[tuple[str | None, Any, bool]]:
            yield None, chunk({"role": "assistant", "content": ""}), False
            for thought in thoughts:
                yield None, chunk({"content": [_thinking(thought)]}), False
            for piece in plan.pieces:
                yield None, chunk({"content": piece}), True
            if tool_calls:
                yield None, chunk({"tool_calls": tool_calls}), True
            yield None, chunk({"content": ""}, finish, self._usage(plan)), False
            yield None, "[DONE]", False

        def error_event() -> tuple[str | None, Any]:
            return None, self.error(500, "Stream interrupted (fake provider).")

        stream = bool(body.get("stream"))
        handler.reply(plan, (self.request_id_header, request_id), stream, build_json, events, error_event)

    def _embeddings(self, handler: Any, body: dict, scenario: fp.Scenario, request_id: str) -> None:
        if scenario.drop:
            handler.abort()
            return
        raw = body.get("input", "")
        inputs = raw if isinstance(raw, list) else [raw]
        dims = int(body.get("output_dimension") or fp.DEFAULT_EMBEDDING_DIMENSIONS)
        data = [
            {"object": "embedding", "embedding": fp.embedding(str(text), dims), "index": i}
            for i, text in enumerate(inputs)
        ]
        tokens = fp.prompt_tokens_for_texts([str(t) for t in inputs])
        model = body.get("model") or ""
        usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
        out = {"id": f"{handler.server.provider.next_id():032x}", "object": "list", "data": data, "model": model}
        if scenario.delay:
            time.sleep(scenario.delay)
        handler.send_json(200, {**out, "usage": usage}, [(self.request_id_header, request_id)])


WIRE = MistralWire()
