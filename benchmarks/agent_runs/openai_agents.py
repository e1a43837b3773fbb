"""One OpenAI Agents SDK run for benchmarks.bench_agents: Triage (an input guardrail, then a handoff) -> Weather (a
function tool call, then the answer): three model calls through the openai SDK (chat completions) against the fake
provider, scripted by the request alone (the fake's `tool` scenario header on Triage; Weather forced to its tool
once, as the SDK resets tool_choice after a tool call). Ours on = our OpenAI instrumentor and our Agents SDK processor.
The SDK's own exporter (to OpenAI's tracing backend) is off in both halves: only its tracing machinery runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

LIBRARIES = ["openai", "openai_agents"]


def setup(base_url: str) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    import openai
    from agents import (
        Agent,
        GuardrailFunctionOutput,
        ModelSettings,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        input_guardrail,
    )
    from agents.tracing import get_trace_provider

    from mltrack_otel.instrumentation import instrument as instrument_libraries
    from mltrack_otel.instrumentation import uninstrument as uninstrument_libraries

    get_trace_provider().set_processors([])  # no export to OpenAI's backend (and no network) in either half

    @function_tool
    def get_weather(city: str) -> str:
        """Weather for a city"""
        return f"sunny in {city}"

    @input_guardrail(name="polite", run_in_parallel=False)
    def polite(context: Any, agent: Any, text: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info="ok", tripwire_triggered=False)

    loop = asyncio.new_event_loop()  # one loop for every run: the client's connections belong to it
    client = openai.AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="sk-bench", max_retries=0)
    model = OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client)
    weather = Agent(
        name="Weather",
        instructions="You report the weather.",
        tools=[get_weather],
        model=model,
        model_settings=ModelSettings(tool_choice="get_weather"),
    )
    triage = Agent(
        name="Triage",
        instructions="Route the question.",
        handoffs=[weather],
        input_guardrails=[polite],
        model=model,
        model_settings=ModelSettings(extra_headers={"x-fake-scenario": "tool"}),
    )

    def run() -> None:
        result = loop.run_until_complete(Runner.run(triage, "What is the weather in Paris?"))
        assert result.last_agent is weather

    def instrument() -> None:
        instrument_libraries(LIBRARIES)

    def uninstrument() -> None:
        uninstrument_libraries(LIBRARIES)

    return run, instrument, uninstrument
