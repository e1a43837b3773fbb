"""Ollama's native HTTP API for the fake provider (``ollama.Client(host=fake.url)``).

Learned from Ollama's API reference (docs/api.md and docs.ollama.com/api), not from the SDK.

Endpoints
    ``POST /api/chat``: ``{model, messages, tools?, format?, options?, stream?, think?}`` ->
    ``{model, created_at, message: {role, content, thinking?, tool_calls?}, done, done_reason, total_duration,
    load_duration, prompt_eval_count, prompt_eval_duration, eval_count, eval_duration}``.
    ``POST /api/generate``: ``{model, prompt, system?, suffix?, format?, options?, stream?}`` -> the same counts
    with ``response`` (and ``thinking``) instead of ``message``, plus ``context`` (token ids).
    ``POST /api/embed``: ``{model, input: str | [str], dimensions?}`` ->
    ``{model, embeddings: [[float]], total_duration, load_duration, prompt_eval_count}``.
    ``POST /api/embeddings`` (superseded by /api/embed): ``{model, prompt}`` -> ``{embedding: [float]}``, no counts.

Streaming
    ``stream`` defaults to true, as in the API: NDJSON (``application/x-ndjson``), one object per line. Each text
    delta is one ``{..., "done": false}`` object (``message.content`` / ``response``); a tool call comes whole,
    arguments as an object, in one object of its own; the last object has ``done: true``, ``done_reason`` and the
    counts, with empty content. A mid-stream failure (``stream-error`` scenario) is one ``{"error": "..."}`` line
    after DROP_AFTER deltas, status 200 already sent.

Usage
    ``prompt_eval_count`` is the shared prompt-token formula (every chat message and the generate ``system`` and
    ``prompt`` are segments; every embed input is one); ``eval_count`` the output tokens (text deltas + tool
    argument fragments, + thinking tokens in the ``reasoning`` scenario, which streams them as ``thinking`` first).
    Ollama reports no cache counts. ``options.num_predict`` caps the output (``done_reason: "length"``).
    Durations (ns) are 1 ms per token plus 1 ms of load.

Other
    Errors are ``{"error": "<message>"}`` with the HTTP status. A chat with no messages or a generate with no
    prompt loads the model: ``{done: true, done_reason: "load"}`` (``"unload"`` when ``keep_alive`` is 0),
    no counts. The response model is the request model (no aliases: Ollama names are local tags).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

from ..fake_provider import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    FakeError,
    GenerationRequest,
    Plan,
    WireFormat,
    embedding,
    last_user_text,
    ndjson_frame,
    openai_tools,
    prompt_tokens_for_texts,
    text_of,
)

_MS = 1_000_000  # ns


def _created_at() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def _max_tokens(body: dict) -> int | None:
    limit = (body.get("options") or {}).get("num_predict")
    return limit if type(limit) is int else None


def _schema(body: dict) -> Any:
    fmt = body.get("format")
    if fmt == "json":
        return {}
    return fmt if isinstance(fmt, dict) else None


def _chat_request(body: dict) -> GenerationRequest:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    return GenerationRequest(
        model=body.get("model") or "",
        segments=[text_of(m.get("content")) for m in messages],
        user_text=last_user_text(messages),
        tools=openai_tools(body),
        after_tool_result=bool(messages) and messages[-1].get("role") == "tool",
        json_schema=_schema(body),
        max_tokens=_max_tokens(body),
        system_text="\n".join(text_of(m.get("content")) for m in messages if m.get("role") == "system"),
    )


def _generate_request(body: dict) -> GenerationRequest:
    prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
    system = body.get("system") if isinstance(body.get("system"), str) else ""
    return GenerationRequest(
        model=body.get("model") or "",
        segments=[*([system] if system else []), prompt],
        user_text=prompt,
        tools=[],
        json_schema=_schema(body),
        max_tokens=_max_tokens(body),
        system_text=system,
    )


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v if isinstance(v, str) else json.dumps(v) for v in value] if isinstance(value, list) else []


class OllamaWire(WireFormat):
    name = "ollama"
    paths = re.compile(r"^/api/(chat|generate|embed|embeddings)/?$")

    def user_text(self, payload: Any, match: re.Match[str]) -> str:
        if not isinstance(payload, dict):
            return ""
        kind = match.group(1)
        if kind == "chat":
            return _chat_request(payload).user_text
        if kind == "embed":
            return " ".join(_inputs(payload.get("input")))
        prompt = payload.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    def error(self, status: int, message: str) -> Any:
        return {"error": message}

    def handle(self, handler: Any, payload: Any, match: re.Match[str], scenario: Any, request_id: str) -> None:
        if not isinstance(payload, dict):
            raise FakeError(400, "invalid JSON body (fake provider)")
        if not isinstance(payload.get("model"), str) or not payload["model"]:
            raise FakeError(400, "model is required (fake provider)")
        kind = match.group(1)
        if kind in ("embed", "embeddings"):
            self._embed(handler, payload, kind, scenario)
        else:
            self._generate(handler, payload, kind, scenario, request_id)

    # -- chat and generate ----------------------------------------------------------------------------------------

    def _generate(self, handler: Any, body: dict, kind: str, scenario: Any, request_id: str) -> None:
        model = body["model"]
        chat = kind == "chat"
        if (not body.get("messages")) if chat else not body.get("prompt"):  # loads (or unloads) the model
            reason = "unload" if body.get("keep_alive") in (0, "0") else "load"
            out: dict[str, Any] = {"model": model, "created_at": _created_at()}
            out |= {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
            handler.send_json(200, {**out, "done": True, "done_reason": reason}, [])
            return
        req = _chat_request(body) if chat else _generate_request(body)
        plan: Plan = handler.server.provider.plan(req, scenario)
        thinking = ["Thinking"] + [" hmm"] * (plan.reasoning_tokens - 1) if plan.reasoning_tokens else []
        arguments = self._arguments(plan)

        def line(text: str = "", thought: str = "", tool: bool = False) -> dict[str, Any]:
            out: dict[str, Any] = {"model": plan.model, "created_at": _created_at()}
            if chat:
                message: dict[str, Any] = {"role": "assistant", "content": text}
                if thought:
                    message["thinking"] = thought
                if tool and plan.tool:
                    message["tool_calls"] = [{"function": {"name": plan.tool.name, "arguments": arguments}}]
                out["message"] = message
            else:
                out["response"] = text
                if thought:
                    out["thinking"] = thought
            return out

        def final(out: dict[str, Any]) -> dict[str, Any]:
            out["done"] = True
            out["done_reason"] = "length" if plan.truncated else "stop"
            if not chat:
                out["context"] = list(range(1, plan.prompt_tokens + plan.output_tokens + 1))
            prompt, output = plan.prompt_tokens, plan.output_tokens
            out |= {"total_duration": (1 + prompt + output) * _MS, "load_duration": _MS}
            out |= {"prompt_eval_count": prompt, "prompt_eval_duration": prompt * _MS}
            out |= {"eval_count": output, "eval_duration": output * _MS}
            return out

        def build_json() -> Any:
            return final(line(plan.text, "".join(thinking), tool=True))

        def events() -> Iterator[tuple[str | None, Any, bool]]:
            for piece in thinking:
                yield None, {**line(thought=piece), "done": False}, True
            for piece in plan.pieces:
                yield None, {**line(piece), "done": False}, True
            if plan.tool:
                yield None, {**line(tool=True), "done": False}, True
            yield None, final(line()), False

        def error_event() -> tuple[str | None, Any]:
            return None, {"error": "an error was encountered while running the model (fake provider)"}

        stream = body.get("stream", True) is not False
        handler.reply(
            plan,
            ("x-request-id", request_id),
            stream,
            build_json,
            events,
            error_event,
            frame=ndjson_frame,
            content_type="application/x-ndjson",
        )

    @staticmethod
    def _arguments(plan: Plan) -> Any:
        if plan.tool is None:
            return {}
        try:
            return json.loads(plan.tool.arguments)
        except ValueError:  # cut by num_predict
            return {}

    # -- embeddings -----------------------------------------------------------------------------------------------

    def _embed(self, handler: Any, body: dict, kind: str, scenario: Any) -> None:
        if scenario.drop:
            handler.abort()
            return
        if scenario.delay:
            time.sleep(scenario.delay)
        dims = body.get("dimensions") if type(body.get("dimensions")) is int else DEFAULT_EMBEDDING_DIMENSIONS
        if kind == "embeddings":  # the superseded endpoint: one vector, no counts
            prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
            handler.send_json(200, {"embedding": embedding(json.dumps(prompt), dims)}, [])
            return
        inputs = _inputs(body.get("input"))
        tokens = prompt_tokens_for_texts(inputs)
        out = {
            "model": body["model"],
            "embeddings": [embedding(json.dumps(text), dims) for text in inputs],
            "total_duration": (1 + tokens) * _MS,
            "load_duration": _MS,
            "prompt_eval_count": tokens,
        }
        handler.send_json(200, out, [])


WIRE = OllamaWire()
