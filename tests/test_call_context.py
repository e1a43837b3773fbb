"""Attributes attached around a block reach every model call made inside it, and only those."""

from __future__ import annotations

import asyncio

from mltrack_otel import call_context
from mltrack_otel.instrumentation import _base


def test_a_call_inside_the_block_carries_its_attributes_and_one_outside_does_not():
    with call_context.attached({"user.id": "u1", "mltrack.tag.feature": "search"}):
        with call_context.attached({"mltrack.tag.feature": "summary"}):  # inner overrides outer
            inner = _base.base_attributes("chat", "openai", None, None)
        outer = _base.base_attributes("chat", "openai", None, None)
    after = _base.base_attributes("chat", "openai", None, None)
    assert inner["user.id"] == "u1" and inner["mltrack.tag.feature"] == "summary"
    assert outer["mltrack.tag.feature"] == "search"
    assert "user.id" not in after and "mltrack.tag.feature" not in after


def test_attached_attributes_never_replace_the_calls_own():
    with call_context.attached({"gen_ai.provider.name": "spoofed"}):
        assert _base.base_attributes("chat", "openai", None, None)["gen_ai.provider.name"] == "openai"


def test_tasks_inherit_the_attributes_of_their_creator():
    async def call() -> str:
        return _base.base_attributes("chat", "openai", None, None).get("user.id", "")

    async def main() -> list[str]:
        with call_context.attached({"user.id": "u2"}):
            inside = asyncio.create_task(call())
        outside = asyncio.create_task(call())
        return [await inside, await outside]

    assert asyncio.run(main()) == ["u2", ""]
