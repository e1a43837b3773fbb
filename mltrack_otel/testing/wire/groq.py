"""Groq's OpenAI-compatible chat API for the fake provider (``groq.Groq(base_url=fake.url)``).

Learned from Groq's API reference (console.groq.com/docs/api-reference), not from the SDK.

Endpoint
    ``POST /openai/v1/chat/completions``: the OpenAI chat completion of the fake (same plan, text, tool calls,
    JSON output, scenarios), with Groq's differences:

    - ``usage`` carries Groq's timings besides the counts: ``queue_time``, ``prompt_time``, ``completion_time``,
      ``total_time`` (seconds; 1 ms per token, 1 ms queued); ``prompt_tokens_details.cached_tokens`` only on a
      cache read and ``completion_tokens_details.reasoning_tokens`` only in the ``reasoning`` scenario;
    - the response carries ``x_groq: {id}`` (the request id, also the ``x-request-id`` header);
    - a stream's first chunk carries ``x_groq: {id}``, and the chunk with the ``finish_reason`` carries
      ``x_groq: {id, usage}``: Groq reports a stream's usage there, unasked. ``stream_options.include_usage``
      additionally sends the OpenAI usage-only chunk, as the fake's OpenAI route does;
    - errors are OpenAI-shaped: ``{"error": {"message", "type", "code"}}``.

Any OpenAI-compatible client on the ``/openai/v1`` prefix gets these answers: the extra fields are what Groq
sends, and OpenAI-shaped parsers ignore them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ..fake_provider import ERRORS, FakeError, Plan, WireFormat, last_user_text

_SECONDS_PER_TOKEN = 0.001


def groq_usage(plan: Plan) -> dict[str, Any]:
    """Groq's usage object for a planned answer."""
    prompt, output = plan.prompt_tokens, plan.output_tokens
    usage: dict[str, Any] = {
        "queue_time": _SECONDS_PER_TOKEN,
        "prompt_tokens": prompt,
        "prompt_time": prompt * _SECONDS_PER_TOKEN,
        "completion_tokens": output,
        "completion_time": output * _SECONDS_PER_TOKEN,
        "total_tokens": prompt + output,
        "total_time": (prompt + output) * _SECONDS_PER_TOKEN,
    }
    if plan.cache_action == "read":
        usage["prompt_tokens_details"] = {"cached_tokens": plan.cache_tokens}
    if plan.reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": plan.reasoning_tokens}
    return usage


class GroqWire(WireFormat):
    name = "groq"
    paths = re.compile(r"^/openai/v1/chat/completions/?$")

    def user_text(self, payload: Any, match: re.Match[str]) -> str:
        messages = payload.get("messages") if isinstance(payload, dict) else None
        return last_user_text(messages if isinstance(messages, list) else [])

    def error(self, status: int, message: str) -> Any:
        kind, code, _, _ = ERRORS.get(status, ERRORS[400])
        return {"error": {"message": message, "type": kind, "code": code}}

    def handle(self, handler: Any, payload: Any, match: re.Match[str], scenario: Any, request_id: str) -> None:
        if not isinstance(payload, dict):
            raise FakeError(400, "Expected a POST with a JSON object body (fake provider).")
        # The OpenAI chat route plans and frames the answer; Groq's fields are added to what it sends.
        openai_reply = handler.reply

        def reply(plan: Plan, header: Any, stream: bool, build_json: Any, events: Any, error_event: Any) -> None:
            usage = groq_usage(plan)

            def groq_json() -> Any:
                return {**build_json(), "usage": usage, "x_groq": {"id": request_id}}

            def groq_events() -> Iterator[tuple[str | None, Any, bool]]:
                first = True
                for event, data, is_delta in events():
                    choices = data.get("choices") if isinstance(data, dict) else None
                    if choices and choices[0].get("finish_reason"):
                        data = {**data, "x_groq": {"id": request_id, "usage": usage}}
                    elif choices and first:
                        data = {**data, "x_groq": {"id": request_id}}
                    first = first and not choices
                    yield event, data, is_delta

            openai_reply(plan, header, stream, groq_json, groq_events, error_event)

        handler.reply = reply
        try:
            handler._chat(payload, scenario, None, request_id)
        finally:
            del handler.reply


WIRE = GroqWire()
