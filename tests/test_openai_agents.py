"""OpenAI Agents SDK (mltrack_otel/instrumentation/openai_agents.py): real multi-agent runs of the SDK driving the real
openai SDK against the fake provider. A Triage agent (an input guardrail, then a handoff) hands over to a Weather
agent that calls a function tool and answers: the span tree, exactly-once counting (our OpenAI instrumentor on, and
off: then the SDK's own record is the model call), subtree totals on the agent spans, per-agent totals, streamed and
sync runs, errors, a budget that stops a runaway tool loop, and uninstrumenting."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import agents as agents_sdk
import openai
import pytest
from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrailTripwireTriggered,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    input_guardrail,
    trace,
)
from agents.tool_context import ToolContext
from agents.tracing import TracingProcessor, get_trace_provider
from agents.tracing.provider import DefaultTraceProvider
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import SpanKind, StatusCode

import mltrack_otel
from mltrack_otel import guard, ledger, semconv
from mltrack_otel.errors import BudgetExceededError
from mltrack_otel.instrumentation import instrument, openai_agents, uninstrument
from tests.instr_fixtures import use_settings
from tests.traced import Traced, attrs

# (major, minor) of the installed SDK: a few span orderings moved between releases (see where it is used).
_SDK_VERSION = tuple(int(part) for part in importlib.metadata.version("openai-agents").split(".")[:2])

MODEL = "gpt-4o-mini"
QUESTION = "What is the weather in Paris?"
TREE = [
    (0, "invoke_workflow Agent workflow"),
    (1, "invoke_agent Triage"),
    (2, "guardrail polite"),
    (2, f"chat {MODEL}"),
    (2, "handoff Weather"),
    (1, "invoke_agent Weather"),
    (2, f"chat {MODEL}"),
    (2, "execute_tool get_weather"),
    (2, f"chat {MODEL}"),
]


@pytest.fixture(scope="module", autouse=True)
def no_sdk_export():
    """The SDK's default processor would export the runs to OpenAI's backend: none here (ours is added by
    instrument())."""
    get_trace_provider().set_processors([])


@pytest.fixture
def traced(fake, settings):
    """Our OpenAI and Agents SDK instrumentation into a harness whose CostSpanProcessor counts into the process
    ledger (mltrack_otel.totals reads it)."""
    with _harness(fake, "openai", "openai_agents") as harness:
        yield harness


class _harness:
    def __init__(self, fake: Any, *libraries: str) -> None:
        self.fake, self.libraries = fake, libraries

    def __enter__(self) -> Traced:
        guard.drain_deferred()
        ledger.LEDGER.pricer = None
        self.harness = Traced(ledger=ledger.LEDGER)
        self.fake.clear()
        guard.reset()
        ledger.LEDGER.reset()
        assert instrument(self.libraries, tracer_provider=self.harness.provider) == list(self.libraries)
        return self.harness

    def __exit__(self, *exc: Any) -> None:
        uninstrument(self.libraries)
        self.harness.shutdown()
        ledger.LEDGER.reset()
        ledger.LEDGER.limits = ledger.Limits()


@function_tool
def get_weather(city: str) -> str:
    """Weather for a city"""
    return f"sunny in {city}"


@function_tool
def broken_weather(city: str) -> str:
    """Weather for a city (out of order)"""
    raise RuntimeError("sensor down")


@input_guardrail(name="polite", run_in_parallel=False)
def polite(context: Any, agent: Any, text: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info="ok", tripwire_triggered="rude" in str(text))


_clients: list[openai.AsyncOpenAI] = []


def client(fake: Any) -> openai.AsyncOpenAI:
    oai = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    _clients.append(oai)
    return oai


def arun(coroutine: Any) -> Any:
    """asyncio.run, closing the clients made for it inside its loop (their connections belong to it)."""

    async def main() -> Any:
        try:
            return await coroutine
        finally:
            while _clients:
                await _clients.pop().close()

    return asyncio.run(main())


def team(fake: Any, api: str = "chat", tool: Any = get_weather) -> Agent:
    """Triage (guardrail, then a handoff: its only tool, which the fake's `tool` scenario calls) -> Weather (forced
    to call its tool once: the SDK resets tool_choice after a tool call, and the fake answers a tool result)."""
    model_class = OpenAIChatCompletionsModel if api == "chat" else OpenAIResponsesModel
    oai = client(fake)
    weather = Agent(
        name="Weather",
        instructions="You report the weather.",
        tools=[tool],
        model=model_class(model=MODEL, openai_client=oai),
        model_settings=ModelSettings(tool_choice=tool.name),
    )
    return Agent(
        name="Triage",
        instructions="Route the question.",
        handoffs=[weather],
        input_guardrails=[polite],
        model=model_class(model=MODEL, openai_client=oai),
        model_settings=ModelSettings(extra_headers={"x-fake-scenario": "tool"}),
    )


def counted(harness: Traced) -> list[Any]:
    return [s for s in harness.spans() if attrs(s).get(semconv.MLTRACK_USAGE_COUNTED) is True]


def named(harness: Traced, name: str) -> list[Any]:
    return [s for s in harness.spans() if s.name == name]


def subtree(harness: Traced, root: Any) -> list[Any]:
    """The spans below root."""
    by_id = {s.context.span_id: s for s in harness.spans()}
    out = []
    for span in harness.spans():
        parent = span.parent
        while parent is not None and parent.span_id in by_id:
            if parent.span_id == root.context.span_id:
                out.append(span)
                break
            parent = by_id[parent.span_id].parent
    return out


def cost(spans: list[Any]) -> Decimal:
    return sum((Decimal(str(attrs(s)[semconv.LLM_COST_TOTAL])) for s in spans), Decimal(0))


def assert_counted_once(harness: Traced, usage: Any, reported: bool = True) -> list[Any]:
    """Every model call counted once: the process totals are the counted spans' sums and (`reported`: the SDK
    recorded the provider's usage) the SDK's own usage of the run."""
    calls = counted(harness)
    totals = mltrack_otel.totals()
    assert totals.calls == len(calls) == usage.requests
    assert totals.prompt_tokens == sum(attrs(s)[semconv.LLM_TOKENS_PROMPT] for s in calls) > 0
    assert totals.completion_tokens == sum(attrs(s)[semconv.LLM_TOKENS_COMPLETION] for s in calls) > 0
    if reported:
        assert (totals.prompt_tokens, totals.completion_tokens) == (usage.input_tokens, usage.output_tokens)
    assert totals.cost_usd == cost(calls) > 0
    return calls


def assert_agent_totals(harness: Traced) -> None:
    """Each agent span carries its subtree's cost; the workflow root the whole run's; totals(agent=) the calls each
    agent made itself."""
    (root,) = named(harness, "invoke_workflow Agent workflow")
    assert attrs(root)[semconv.LLM_COST_CUMULATIVE] == pytest.approx(float(mltrack_otel.totals().cost_usd))
    for name, calls in (("Triage", 1), ("Weather", 2)):
        (span,) = named(harness, f"invoke_agent {name}")
        below = [s for s in subtree(harness, span) if attrs(s).get(semconv.MLTRACK_USAGE_COUNTED) is True]
        assert len(below) == calls
        assert all(attrs(s)[gen_ai.GEN_AI_AGENT_NAME] == name for s in below)
        assert attrs(span)[semconv.LLM_COST_CUMULATIVE] == pytest.approx(float(cost(below)))
        assert mltrack_otel.totals(agent=name).cost_usd == cost(below)
        assert mltrack_otel.totals(agent=name).calls == calls


def assert_run_tree(harness: Traced, fake: Any) -> None:
    assert harness.tree() == TREE
    spans = harness.spans()
    assert len({s.context.trace_id for s in spans}) == 1
    assert all(s.end_time is not None for s in spans)
    (root,) = named(harness, "invoke_workflow Agent workflow")
    assert attrs(root)[gen_ai.GEN_AI_OPERATION_NAME] == "invoke_workflow"
    assert attrs(root)[gen_ai.GEN_AI_WORKFLOW_NAME] == "Agent workflow"
    (triage,) = named(harness, "invoke_agent Triage")
    assert attrs(triage)[gen_ai.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert attrs(triage)[gen_ai.GEN_AI_OUTPUT_TYPE] == "text"
    (handoff,) = named(harness, "handoff Weather")
    assert attrs(handoff)[semconv.GEN_AI_HANDOFF_FROM_AGENT] == "Triage"
    assert attrs(handoff)[semconv.GEN_AI_HANDOFF_TO_AGENT] == "Weather"
    assert gen_ai.GEN_AI_OPERATION_NAME not in attrs(handoff)  # the conventions have no handoff operation
    (check,) = named(harness, "guardrail polite")
    assert attrs(check)[semconv.GEN_AI_GUARDRAIL_NAME] == "polite"
    assert attrs(check)[semconv.GEN_AI_GUARDRAIL_TRIGGERED] is False
    (tool,) = named(harness, "execute_tool get_weather")
    a = attrs(tool)
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == "execute_tool" and a[gen_ai.GEN_AI_TOOL_NAME] == "get_weather"
    assert a[gen_ai.GEN_AI_AGENT_NAME] == "Weather"
    assert a[gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"city": "example"}'
    assert a[gen_ai.GEN_AI_TOOL_CALL_RESULT] == "sunny in example"
    assert a[gen_ai.GEN_AI_TOOL_CALL_ID] == tool_call_id(fake)
    for span in spans:
        assert span.status.status_code is StatusCode.UNSET, span.name
        expected = SpanKind.CLIENT if span.name.startswith("chat ") else SpanKind.INTERNAL
        assert span.kind is expected, span.name


def tool_call_id(fake: Any) -> str:
    """The id of the tool call the model made, as the last request sent it back with the tool's result."""
    body = fake.requests[-1].json
    if "messages" in body:
        return next(m["tool_call_id"] for m in body["messages"] if m.get("role") == "tool" and "sunny" in m["content"])
    outputs = [i for i in body["input"] if i.get("type") == "function_call_output"]
    return next(i["call_id"] for i in outputs if "sunny" in i["output"])


# -- one run: the tree, the counting, the totals --------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_run_is_a_workflow_of_agent_runs_over_their_model_calls_and_tools(traced, fake, api):
    result = arun(Runner.run(team(fake, api), QUESTION))
    assert result.last_agent.name == "Weather" and result.final_output.startswith("Echo:")
    assert_run_tree(traced, fake)
    calls = assert_counted_once(traced, result.context_wrapper.usage)
    assert len(calls) == len(fake.requests) == 3
    # Our OpenAI instrumentor's spans are the model calls, children of the agent that made them.
    (triage,) = named(traced, "invoke_agent Triage")
    assert calls[0].parent.span_id == triage.context.span_id
    assert all(attrs(s)[gen_ai.GEN_AI_PROVIDER_NAME] == "openai" for s in calls)
    assert_agent_totals(traced)


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_without_our_openai_instrumentor_the_sdk_record_is_the_model_call_priced_once(fake, settings, api):
    with _harness(fake, "openai_agents") as harness:
        result = arun(Runner.run(team(fake, api), QUESTION))
        calls = assert_counted_once(harness, result.context_wrapper.usage)
        assert len(calls) == 3
        for span in calls:
            assert span.kind is SpanKind.CLIENT and span.name.startswith(f"chat {MODEL}")
            assert attrs(span)[gen_ai.GEN_AI_OPERATION_NAME] == "chat"
            assert attrs(span)[semconv.MLTRACK_USAGE_SOURCE] == "provider"
        assert [depth for depth, _ in harness.tree()] == [depth for depth, _ in TREE]
        assert_agent_totals(harness)


def streamed(agent: Agent, question: str = QUESTION) -> Any:
    async def run() -> Any:
        result = Runner.run_streamed(agent, question)
        events = [event async for event in result.stream_events()]
        assert events
        return result

    return arun(run())


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_streamed_run_has_the_same_tree_and_totals(traced, fake, api):
    result = streamed(team(fake, api))
    assert result.is_complete and result.last_agent.name == "Weather"
    assert_run_tree(traced, fake)
    # A chat completions stream reports usage only when asked: the SDK did not ask (its usage is 0), we did.
    calls = assert_counted_once(traced, result.context_wrapper.usage, reported=api == "responses")
    assert all(attrs(s)[semconv.MLTRACK_STREAM_COMPLETE] is True for s in calls)  # the SDK streamed each call
    assert all(attrs(s)[semconv.MLTRACK_USAGE_SOURCE] == "provider" for s in calls)
    assert_agent_totals(traced)


def test_without_our_openai_instrumentor_a_stream_without_usage_is_estimated_not_free(fake, settings):
    with _harness(fake, "openai_agents") as harness:
        result = streamed(team(fake, "chat"))
        assert result.context_wrapper.usage.input_tokens == 0  # the SDK never learnt the usage
        calls = assert_counted_once(harness, result.context_wrapper.usage, reported=False)
        assert len(calls) == 3
        assert all(attrs(s)[semconv.MLTRACK_USAGE_SOURCE] == "estimated" for s in calls)
        assert mltrack_otel.totals().estimated_calls == 3


def test_run_sync_and_a_workflow_of_two_runs_under_the_users_trace(traced, fake):
    with trace("Forecast", group_id="thread-7"):
        first = Runner.run_sync(team(fake), QUESTION)
        second = Runner.run_sync(team(fake), "And in Rome?")
    assert first.final_output and second.final_output
    (root,) = named(traced, "invoke_workflow Forecast")
    a = attrs(root)
    assert a[gen_ai.GEN_AI_WORKFLOW_NAME] == "Forecast" and a[gen_ai.GEN_AI_CONVERSATION_ID] == "thread-7"
    agents = [s for s in traced.spans() if s.name.startswith("invoke_agent ")]
    assert len(agents) == 4 and all(s.parent.span_id == root.context.span_id for s in agents)
    assert len(counted(traced)) == 6
    # The trace's group is the conversation: every model call carries it and the ledger sums it.
    assert all(attrs(s)[gen_ai.GEN_AI_CONVERSATION_ID] == "thread-7" for s in counted(traced))
    assert mltrack_otel.totals("thread-7") == mltrack_otel.totals()
    assert a[semconv.LLM_COST_CUMULATIVE] == pytest.approx(float(mltrack_otel.totals().cost_usd))


def test_an_agent_called_as_a_tool_is_a_sub_agent_its_caller_pays_for(traced, fake):
    oai = client(fake)
    weather = Agent(
        name="Weather",
        instructions="You report the weather.",
        model=OpenAIChatCompletionsModel(model=MODEL, openai_client=oai),
    )
    planner = Agent(
        name="Planner",
        instructions="Plan the trip.",
        tools=[weather.as_tool(tool_name="ask_weather", tool_description="Ask the weather agent")],
        model=OpenAIChatCompletionsModel(model=MODEL, openai_client=oai),
        model_settings=ModelSettings(extra_headers={"x-fake-scenario": "tool"}),
    )
    arun(Runner.run(planner, QUESTION))
    assert traced.tree() == [
        (0, "invoke_workflow Agent workflow"),
        (1, "invoke_agent Planner"),
        (2, f"chat {MODEL}"),
        (2, "execute_tool ask_weather"),
        (3, "invoke_agent Weather"),
        (4, f"chat {MODEL}"),
        (2, f"chat {MODEL}"),
    ]
    (planner_span,) = named(traced, "invoke_agent Planner")
    (weather_span,) = named(traced, "invoke_agent Weather")
    weather_call = [s for s in counted(traced) if attrs(s)[gen_ai.GEN_AI_AGENT_NAME] == "Weather"]
    assert len(weather_call) == 1 and len(counted(traced)) == 3
    assert attrs(planner_span)[semconv.LLM_COST_CUMULATIVE] == pytest.approx(float(cost(counted(traced))))
    assert attrs(weather_span)[semconv.LLM_COST_CUMULATIVE] == pytest.approx(float(cost(weather_call)))
    assert mltrack_otel.totals(agent="Planner").calls == 2 and mltrack_otel.totals(agent="Weather").calls == 1


# -- failures and budgets ---------------------------------------------------------------------------------------------


def test_a_failing_tool_and_a_tripped_guardrail_end_their_spans_failed(traced, fake):
    result = arun(Runner.run(team(fake, tool=broken_weather), QUESTION))
    assert result.final_output  # the SDK told the model the tool failed, and the run went on
    (tool,) = named(traced, "execute_tool broken_weather")
    assert tool.status.status_code is StatusCode.ERROR and attrs(tool)["error.type"] == "_OTHER"
    assert "Error running tool" in tool.status.description

    traced.exporter.clear()
    with pytest.raises(InputGuardrailTripwireTriggered):
        arun(Runner.run(team(fake), "a rude question"))
    (check,) = named(traced, "guardrail polite")
    assert attrs(check)[semconv.GEN_AI_GUARDRAIL_TRIGGERED] is True
    (triage,) = named(traced, "invoke_agent Triage")
    assert triage.status.status_code is StatusCode.ERROR
    assert attrs(triage)["error.type"] == "agents.InputGuardrailTripwireTriggered"
    (root,) = named(traced, "invoke_workflow Agent workflow")
    assert root.status.status_code is StatusCode.ERROR
    assert all(s.end_time is not None for s in traced.spans())
    assert not openai_agents._PATCH.processor._open and not openai_agents._PATCH.processor._roots


def runaway(fake: Any) -> Agent:
    """Triage forced to call its tool on every turn (tool_choice never reset): a loop only a budget or max_turns
    stops. max_tokens keeps each call's worst case small, so several calls fit the budget before one does not."""
    return Agent(
        name="Triage",
        instructions="Check the weather again and again.",
        tools=[get_weather],
        reset_tool_choice=False,
        model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client(fake)),
        model_settings=ModelSettings(tool_choice="get_weather", max_tokens=20),
    )


@pytest.mark.parametrize("streamed", [False, True])
def test_a_budget_stops_a_runaway_tool_loop_before_its_next_model_call(traced, fake, streamed):
    limit = Decimal("0.00006")
    use_settings(agents={"Triage": {"llm_cost_limit": limit}})

    async def run() -> None:
        if streamed:
            result = Runner.run_streamed(runaway(fake), QUESTION, max_turns=50)
            async for _ in result.stream_events():
                pass
        else:
            await Runner.run(runaway(fake), QUESTION, max_turns=50)

    with pytest.raises(BudgetExceededError) as raised:
        arun(run())
    assert raised.value.scope == "agent" and raised.value.kind == "cost"
    sent = len(fake.requests)
    assert 2 <= sent < 50  # the loop ran, then stopped before the call that would not fit
    calls = counted(traced)
    assert len(calls) == sent and len(named(traced, "execute_tool get_weather")) == sent
    (triage,) = named(traced, "invoke_agent Triage")
    assert triage.status.status_code is StatusCode.ERROR
    assert attrs(triage)["error.type"] == "mltrack_otel.BudgetExceededError"
    assert Decimal(str(attrs(triage)[semconv.LLM_COST_CUMULATIVE])) == cost(calls) <= limit
    assert mltrack_otel.totals(agent="Triage").cost_usd == cost(calls)
    assert all(s.end_time is not None for s in traced.spans())
    assert not openai_agents._PATCH.processor._open and not openai_agents._PATCH.processor._roots


# -- content, registration, uninstrumenting ---------------------------------------------------------------------------


def test_tool_content_follows_the_capture_settings(traced, fake):
    use_settings(llm_log_prompts=False, llm_log_responses=False)
    arun(Runner.run(team(fake), QUESTION))
    (tool,) = named(traced, "execute_tool get_weather")
    a = attrs(tool)
    assert gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS not in a and gen_ai.GEN_AI_TOOL_CALL_RESULT not in a
    assert a[gen_ai.GEN_AI_TOOL_CALL_ID] == tool_call_id(fake)  # identity, not content


class Recorder(TracingProcessor):
    def __init__(self) -> None:
        self.spans: list[str] = []

    def on_trace_start(self, trace: Any) -> None:
        pass

    def on_trace_end(self, trace: Any) -> None:
        pass

    def on_span_start(self, span: Any) -> None:
        pass

    def on_span_end(self, span: Any) -> None:
        self.spans.append(span.span_data.type)

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass


def test_the_users_processors_stay_and_uninstrument_restores_the_sdk(fake, settings):
    provider = get_trace_provider()
    users = Recorder()
    provider.set_processors([users])
    original = ToolContext.__dict__["from_agent_context"]
    original_set = DefaultTraceProvider.__dict__["set_processors"]
    try:
        with _harness(fake, "openai", "openai_agents") as harness:
            instrument(["openai_agents"], tracer_provider=harness.provider)  # again: registered once
            processors = provider._multi_processor._processors
            assert processors[0] is users and len(processors) == 2
            arun(Runner.run(team(fake), QUESTION))
            assert harness.tree() == TREE
        assert "agent" in users.spans and "function" in users.spans  # the user's processor saw the run too
        assert ToolContext.__dict__["from_agent_context"] is original
        assert DefaultTraceProvider.__dict__["set_processors"] is original_set
        harness.exporter.clear()
        arun(Runner.run(team(fake), QUESTION))
        assert harness.spans() == []  # nothing of ours after uninstrument
        with _harness(fake, "openai", "openai_agents") as again:
            arun(Runner.run(team(fake), QUESTION))
            assert again.tree() == TREE
        assert len(provider._multi_processor._processors) == 2
    finally:
        provider.set_processors([])


def test_replacing_the_sdk_processors_keeps_ours(fake, settings):
    """set_trace_processors([...]) after instrument() (the way to stop the SDK's export to OpenAI) replaces the
    exporters, not our instrumentation."""
    users = Recorder()
    with _harness(fake, "openai", "openai_agents") as harness:
        agents_sdk.set_trace_processors([users])
        arun(Runner.run(team(fake), QUESTION))
        assert harness.tree() == TREE and "agent" in users.spans
        agents_sdk.set_trace_processors([])
        assert len(get_trace_provider()._multi_processor._processors) == 1  # ours
    agents_sdk.set_trace_processors([])
    assert get_trace_provider()._multi_processor._processors == ()  # uninstrumented: the user's list as given


def test_a_manual_agent_scope_around_the_runner_budgets_the_whole_run(pipeline, fake):
    """mltrack_otel.agent() (on the configured global provider, as an application has it) around a Runner run: the
    SDK's agents nest in it, and its budget stops their loop."""
    limit = Decimal("0.00006")
    fake.clear()
    instrument(["openai", "openai_agents"])

    async def run() -> None:
        with mltrack_otel.agent("Support", cost_limit=limit):
            await Runner.run(runaway(fake), QUESTION, max_turns=50)

    try:
        with pytest.raises(BudgetExceededError) as raised:
            arun(run())
    finally:
        uninstrument(["openai", "openai_agents"])
    assert raised.value.scope == "agent"
    assert 2 <= len(fake.requests) < 50
    spans = list(pipeline.memory_exporter.get_finished_spans())
    by_name = {s.name: s for s in spans}
    support, workflow = by_name["invoke_agent Support"], by_name["invoke_workflow Agent workflow"]
    assert workflow.parent.span_id == support.context.span_id
    assert by_name["invoke_agent Triage"].parent.span_id == workflow.context.span_id
    calls = [s for s in spans if attrs(s).get(semconv.MLTRACK_USAGE_COUNTED) is True]
    assert len(calls) == len(fake.requests)
    assert Decimal(str(attrs(support)[semconv.LLM_COST_CUMULATIVE])) == cost(calls) <= limit
    assert mltrack_otel.totals(agent="Triage").calls == len(calls)  # Triage made the calls, Support's budget paid
    assert support.status.status_code is StatusCode.ERROR


def test_a_run_inside_an_except_block_is_not_failed_by_the_exception_being_handled(traced, fake):
    async def run() -> Any:
        try:
            raise KeyError("handled by the caller")
        except KeyError:
            return await Runner.run(team(fake), QUESTION)

    assert arun(run()).final_output
    assert harness_statuses(traced) == {StatusCode.UNSET}


def harness_statuses(harness: Traced) -> set[StatusCode]:
    return {s.status.status_code for s in harness.spans()}


def test_a_cancelled_stream_ends_every_span_without_an_error(traced, fake):
    async def run() -> Any:
        result = Runner.run_streamed(team(fake), QUESTION)
        async for event in result.stream_events():
            if event.type == "run_item_stream_event":  # the first item: Triage's handoff call
                result.cancel()
        return result

    result = arun(run())
    assert not result.final_output and len(fake.requests) == 1
    assert all(s.end_time is not None for s in traced.spans())
    assert not openai_agents._PATCH.processor._open and not openai_agents._PATCH.processor._roots
    # Cancelled: stopped, not failed (as the SDK's own spans and Pydantic AI's record it).
    assert [name for _, name in traced.tree()][:2] == ["invoke_workflow Agent workflow", "invoke_agent Triage"]
    assert harness_statuses(traced) == {StatusCode.UNSET}
    assert len(counted(traced)) == 1  # the call made before the cancel is counted


def test_instrument_before_the_sdk_is_imported_hooks_it_on_import_and_starts_nothing():
    """instrument() imports nothing of the SDK; importing it registers our processor and the ToolContext hook, and
    neither starts a thread (the SDK's exporter only starts with its first trace)."""
    code = """
        import json, sys, threading
        from mltrack_otel.instrumentation import instrument
        armed = "openai_agents" in instrument()
        imported_early = "agents" in sys.modules
        threads = threading.active_count()
        import agents
        from agents.tool_context import ToolContext
        from agents.tracing import get_trace_provider
        processors = get_trace_provider()._multi_processor._processors
        print(json.dumps({
            "armed": armed,
            "imported_early": imported_early,
            "ours": [type(p).__name__ for p in processors if type(p).__module__.startswith("mltrack_otel")],
            "processors": len(processors),
            "hooked": ToolContext.__dict__["from_agent_context"].__func__.__module__,
            "threads": threading.active_count() - threads,
        }))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "armed": True,
        "imported_early": False,
        "ours": ["MltrackTracingProcessor"],
        "processors": 2,  # the SDK's default exporter stays (the user decides about it), ours beside it
        "hooked": "mltrack_otel.instrumentation.openai_agents",
        "threads": 0,
    }


def test_our_content_policy_not_the_sdks_sensitive_data_flag_decides_what_we_record(traced, fake):
    """With the SDK's trace_include_sensitive_data off it records no tool input or output; we still know the call's
    arguments (from its ToolContext) and record them as our settings say; the result the SDK kept no trace of."""
    from agents import RunConfig

    arun(Runner.run(team(fake), QUESTION, run_config=RunConfig(trace_include_sensitive_data=False)))
    (tool,) = named(traced, "execute_tool get_weather")
    a = attrs(tool)
    assert a[gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"city": "example"}'
    assert a[gen_ai.GEN_AI_TOOL_CALL_ID] == tool_call_id(fake)
    assert gen_ai.GEN_AI_TOOL_CALL_RESULT not in a


def test_a_failure_inside_our_processor_never_reaches_the_run(traced, fake, monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in the instrumentation")

    monkeypatch.setattr(openai_agents.agent_runs, "start", broken)
    result = arun(Runner.run(team(fake), QUESTION))
    assert result.last_agent.name == "Weather" and result.final_output.startswith("Echo:")
    assert guard.health()["errors.openai_agents.span_start"] == 2  # Triage and Weather, recorded
    assert not named(traced, "invoke_agent Triage")
    assert len(counted(traced)) == 3  # the model calls are still counted, under the workflow
    assert not openai_agents._PATCH.processor._open and not openai_agents._PATCH.processor._roots


def test_with_tracking_off_a_run_records_nothing(traced, fake):
    use_settings(llm_tracking_enabled=False)
    result = arun(Runner.run(team(fake), QUESTION))
    assert result.final_output and traced.spans() == []
    assert not openai_agents._PATCH.processor._open and not openai_agents._PATCH.processor._roots


def test_an_mcp_tool_of_an_agent_runs_in_its_trace_on_a_real_stdio_server(pipeline, fake, tmp_path):
    """The SDK's MCP tool call (a real stdio server: tests/mcp_server_app.py) is our execute_tool span, which the MCP
    instrumentation enriches instead of adding a second one; the server's tools/call span is its child across the
    process boundary, and the server's own model call carries the calling agent's name."""
    pytest.importorskip("mcp")
    from agents.mcp import MCPServerStdio

    app = Path(__file__).with_name("mcp_server_app.py")
    spans_file = tmp_path / "server-spans.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(app.parent.parent), os.environ.get("PYTHONPATH", "")]),
        "MCP_FAKE_URL": fake.openai_base_url,
        "MCP_SPANS_FILE": str(spans_file),
    }
    libraries = ["openai", "mcp", "openai_agents"]
    fake.clear()
    instrument(libraries)

    async def run() -> Any:
        params = {"command": sys.executable, "args": [str(app)], "env": env, "cwd": str(app.parent.parent)}
        async with MCPServerStdio(params=params) as server:
            planner = Agent(
                name="Planner",
                instructions="Research, then answer.",
                mcp_servers=[server],
                model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client(fake)),
                model_settings=ModelSettings(extra_headers={"x-fake-scenario": "tool"}),
            )
            return await Runner.run(planner, "what are spans")

    try:
        assert arun(run()).final_output.startswith("Echo:")
    finally:
        uninstrument(libraries)
    ours = sorted(pipeline.memory_exporter.get_finished_spans(), key=lambda s: s.start_time)
    by_name = {s.name: s for s in ours}
    planner, tool = by_name["invoke_agent Planner"], by_name["execute_tool research"]
    below = [s.name for s in ours if s.parent is not None and s.parent.span_id == planner.context.span_id]
    if _SDK_VERSION >= (0, 23):
        assert below == ["tools/list", f"chat {MODEL}", "execute_tool research", "tools/list", f"chat {MODEL}"]
    else:  # before 0.23 the SDK lists an agent's MCP tools before it opens the agent span: under the workflow
        assert below == [f"chat {MODEL}", "execute_tool research", "tools/list", f"chat {MODEL}"]
        workflow = by_name["invoke_workflow Agent workflow"]
        first_list = next(s for s in ours if s.name == "tools/list")
        assert first_list.parent.span_id == workflow.context.span_id
    assert attrs(tool)["mcp.method.name"] == "tools/call" and "tools/call research" not in by_name
    theirs = {s["name"]: s for s in (json.loads(line) for line in spans_file.read_text().splitlines())}
    call, answer = theirs["tools/call research"], theirs[f"chat {MODEL}"]
    assert call["parent_span_id"] == format(tool.context.span_id, "016x")
    assert call["trace_id"] == answer["trace_id"] == format(tool.context.trace_id, "032x")
    assert answer["parent_span_id"] == call["span_id"]
    assert answer["attributes"][gen_ai.GEN_AI_AGENT_NAME] == "Planner"
    assert answer["attributes"][semconv.MLTRACK_USAGE_COUNTED] is True


def test_with_another_openai_instrumentation_instead_of_ours_each_call_is_still_counted_once(fake, settings):
    """OpenInference's OpenAI instrumentation on, ours off: its span is a child of the model span we make from the
    SDK's record, counted there; ours is not counted again."""
    openinference = pytest.importorskip("openinference.instrumentation.openai")
    with _harness(fake, "openai_agents") as harness:
        theirs = openinference.OpenAIInstrumentor()
        theirs.instrument(tracer_provider=harness.provider)
        try:
            result = arun(Runner.run(team(fake), QUESTION))
        finally:
            theirs.uninstrument()
        calls = assert_counted_once(harness, result.context_wrapper.usage)
        assert len(calls) == 3
        by_id = {s.context.span_id: s for s in harness.spans()}
        for call in calls:
            assert call.instrumentation_scope.name.startswith("openinference")
            wrapper = by_id[call.parent.span_id]
            assert wrapper.name == f"chat {MODEL}" and attrs(wrapper)[semconv.MLTRACK_USAGE_COUNTED] is False
        assert_agent_totals(harness)


def test_a_record_we_cannot_read_still_ends_its_span(traced, fake, monkeypatch):
    def unreadable(value: Any) -> Any:
        raise ValueError("a tool result we cannot read")

    monkeypatch.setattr(openai_agents, "_text", unreadable)
    assert arun(Runner.run(team(fake), QUESTION)).final_output
    (tool,) = named(traced, "execute_tool get_weather")
    assert attrs(tool)[semconv.MLTRACK_STREAM_COMPLETE] is False  # ended, marked incomplete
    assert guard.health()["errors.openai_agents.span_finish"] == 1
    assert harness_statuses(traced) == {StatusCode.UNSET} and len(traced.spans()) == len(TREE)
    assert not openai_agents._PATCH.processor._open and not openai_agents._PATCH.processor._roots


def test_concurrent_runs_keep_their_own_trees(traced, fake):
    async def both() -> list[Any]:
        return list(await asyncio.gather(Runner.run(team(fake), QUESTION), Runner.run(team(fake), "And in Rome?")))

    results = arun(both())
    assert all(r.last_agent.name == "Weather" for r in results)
    roots = named(traced, "invoke_workflow Agent workflow")
    assert len(roots) == 2 and len({r.context.trace_id for r in roots}) == 2
    for root in roots:
        in_trace = [s for s in traced.spans() if s.context.trace_id == root.context.trace_id]
        assert sorted(s.name for s in in_trace) == sorted(name for _, name in TREE)
        assert all(s.parent is not None for s in in_trace if s is not root)
        calls = [s for s in in_trace if attrs(s).get(semconv.MLTRACK_USAGE_COUNTED) is True]
        assert attrs(root)[semconv.LLM_COST_CUMULATIVE] == pytest.approx(float(cost(calls)))
    assert mltrack_otel.totals().calls == 6 and mltrack_otel.totals(agent="Weather").calls == 4
