"""MCP: one agent run whose tool lives on an MCP server (the SDK's in-process Client(MCPServer), no subprocess).

The planner asks the model (tool scenario), calls the server's ``research`` tool over MCP, and answers; the tool
runs a sub-agent, the researcher, that asks the model itself. Three model calls, one tools/call (client and server
span), two agent runs. Instrumented: openai + mcp, and the agent runs as ``mltrack_otel.agent`` scopes;
uninstrumented: the same calls with neither (the agent scopes are skipped too), so the difference is everything of
ours the run touches. The mcp SDK's own OpenTelemetry spans are there in both halves (it records them to the global
provider the worker configured): with ours on they are replaced by ours, so the figure is what we add over the
SDK's native tracing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

MODEL = "gpt-4o-mini"
TOOL = {
    "type": "function",
    "function": {
        "name": "research",
        "description": "Research a topic",
        "parameters": {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]},
    },
}


def setup(base_url: str) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    import openai
    from mcp import Client
    from mcp.server.mcpserver import MCPServer

    import mltrack_otel
    from mltrack_otel.instrumentation import instrument as instrument_libraries
    from mltrack_otel.instrumentation import uninstrument as uninstrument_libraries

    model = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-bench", max_retries=0)
    state = {"on": False}

    def agent(name: str) -> Any:
        return mltrack_otel.agent(name) if state["on"] else contextlib.nullcontext()

    server = MCPServer("research-server")

    @server.tool()
    async def research(topic: str) -> str:
        """Research a topic with a sub-agent."""
        with agent("researcher"):
            reply = await model.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"Research {topic}"}], max_tokens=32
            )
        return reply.choices[0].message.content or ""

    async def one_run() -> None:
        async with Client(server) as client:
            with agent("planner"):
                messages: list[dict[str, Any]] = [{"role": "user", "content": "[[scenario:tool]] plan the trip"}]
                first = await model.chat.completions.create(model=MODEL, messages=messages, tools=[TOOL], max_tokens=32)
                call = first.choices[0].message.tool_calls[0]
                result = await client.call_tool(call.function.name, json.loads(call.function.arguments))
                messages.append(first.choices[0].message.model_dump(exclude_none=True))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result.content[0].text})
                await model.chat.completions.create(model=MODEL, messages=messages, tools=[TOOL], max_tokens=32)

    loop = asyncio.new_event_loop()  # one loop for every run: the async OpenAI client's connections stay usable

    def run() -> None:
        loop.run_until_complete(one_run())

    def instrument() -> None:
        instrument_libraries(["openai", "mcp"])
        state["on"] = True

    def uninstrument() -> None:
        uninstrument_libraries(["openai", "mcp"])
        state["on"] = False

    return run, instrument, uninstrument
