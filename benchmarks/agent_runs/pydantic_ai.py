"""Pydantic AI: one run of an agent whose tool delegates to a sub-agent (3 model calls, 1 tool call, 1 sub-agent run),
on OpenAIChatModel over the real AsyncOpenAI client. The fake provider's `tool` scenario (sent as a header) makes the
first answer call the tool and the next answer in text. Ours on = mltrack-otel's Pydantic AI and OpenAI
instrumentation (agent spans, the tool span, the model-call spans); Pydantic AI's own instrumentation stays off."""

from __future__ import annotations

from collections.abc import Callable


def setup(base_url: str) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    import openai
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from mltrack_otel.instrumentation import instrument, uninstrument

    base_url = base_url.rstrip("/")
    base_url = base_url if base_url.endswith("/v1") else f"{base_url}/v1"
    headers = {"x-fake-scenario": "tool"}
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, default_headers=headers)
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))
    helper = Agent(model, name="helper")
    boss = Agent(model, name="boss")

    @boss.tool_plain
    async def ask_helper(question: str) -> str:
        return (await helper.run(question)).output

    def run() -> None:
        result = boss.run_sync("plan the trip")
        assert result.output.startswith("Echo:"), result.output

    libraries = ["pydantic_ai", "openai"]
    return run, lambda: instrument(libraries) and None, lambda: uninstrument(libraries) and None
