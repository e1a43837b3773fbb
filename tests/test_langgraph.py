"""LangGraph agents: real langgraph graphs (create_react_agent, a supervisor StateGraph with a sub-agent) driving the
real langchain-openai / openai SDK against the fake provider, recorded by our LangChain instrumentation (LangGraph runs
through LangChain's callbacks) with and without our OpenAI instrumentor, into a real TracerProvider with the
CostSpanProcessor counting into the process ledger.

Asserted: the span tree (invoke_agent per graph, nodes named after the node, chat and execute_tool spans under them,
subgraphs nested, one trace), exactly-once counting (counted spans == requests the fake received == process totals;
each agent span's llm.cost.cumulative == its subtree), per-agent totals, and the agent budget stopping a runaway tool
loop before its next model call, sync, async and streamed.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import textwrap
from decimal import Decimal
from typing import Annotated

import httpx
import pytest

pytestmark = [pytest.mark.frameworks, pytest.mark.filterwarnings("ignore:create_react_agent has been moved")]

pytest.importorskip("langgraph")
langchain_openai = pytest.importorskip("langchain_openai")

from langchain_core.messages import ToolMessage  # noqa: E402
from langchain_core.tools import InjectedToolCallId, tool  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import create_react_agent  # noqa: E402
from langgraph.pregel import Pregel  # noqa: E402
from langgraph.types import Command  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

import mltrack_otel  # noqa: E402
from mltrack_otel import guard, ledger  # noqa: E402
from mltrack_otel.instrumentation import instrument, uninstrument  # noqa: E402
from mltrack_otel.instrumentation import langchain as lc  # noqa: E402
from tests.instr_fixtures import use_settings, validate_content  # noqa: E402
from tests.traced import Traced  # noqa: E402

MODEL = "gpt-4o-mini"
LC_SCOPE = "mltrack_otel.instrumentation.langchain"
ORIGINAL_STREAM = Pregel.__dict__["stream"]
ORIGINAL_ASTREAM = Pregel.__dict__["astream"]


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}, span {trace.get_current_span().get_span_context().span_id}"


# --- fixtures ---------------------------------------------------------------------------------------------------


class Run(Traced):
    """The span harness counting into the process ledger, with tree helpers."""

    def __init__(self, sdk: bool) -> None:
        super().__init__(ledger=ledger.LEDGER)
        self.sdk = sdk  # our OpenAI instrumentor is on: its span under each chat span is the counted one

    def by_id(self):
        return {s.context.span_id: s for s in self.spans()}

    def parent(self, span):
        return self.by_id().get(span.parent.span_id) if span.parent is not None else None

    def named(self, name):
        return [s for s in sorted(self.spans(), key=lambda s: s.start_time) if s.name == name]

    def counted(self):
        return [s for s in self.spans() if s.attributes.get("mltrack.usage.counted") is True]

    def below(self, root):
        """Every span in root's subtree (root included)."""
        by_id = self.by_id()
        out = []
        for span in self.spans():
            node = span
            while node is not None and node is not root:
                node = by_id.get(node.parent.span_id) if node.parent is not None else None
            if node is root:
                out.append(span)
        return out

    def assert_counted_once(self, fake, calls: int) -> None:
        """One counted span per request the fake received; process totals == their sum; each agent span's
        cumulative == the counted spans of its subtree."""
        counted = self.counted()
        assert len(counted) == calls == len(fake.requests)
        for span in counted:
            assert span.instrumentation_scope.name == ("mltrack_otel.instrumentation.openai" if self.sdk else LC_SCOPE)
        total = sum(s.attributes["llm.cost.total"] for s in counted)
        assert math.isclose(float(ledger.LEDGER.process_totals().cost_usd), total, rel_tol=1e-9)
        assert ledger.LEDGER.process_totals().calls == calls
        for agent in [s for s in self.spans() if s.attributes.get("gen_ai.operation.name") == "invoke_agent"]:
            below = [s for s in self.below(agent) if s.attributes.get("mltrack.usage.counted") is True]
            subtotal = sum(s.attributes["llm.cost.total"] for s in below)
            assert math.isclose(agent.attributes["llm.cost.cumulative"], subtotal, rel_tol=1e-9), agent.name
            assert agent.attributes["llm.tokens.cumulative.total"] == sum(
                s.attributes["gen_ai.usage.input_tokens"] + s.attributes["gen_ai.usage.output_tokens"] for s in below
            )


@pytest.fixture(params=["provider-on", "provider-off"])
def run(request, fake, settings):
    """LangChain (and so LangGraph) instrumented, with our OpenAI instrumentor on or off."""
    sdk = request.param == "provider-on"
    libraries = ["langchain", "openai"] if sdk else ["langchain"]
    guard.drain_deferred()
    ledger.LEDGER.pricer = None  # a hand-built processor prices the ledger's reservations only when it has no pricer
    harness = Run(sdk)
    fake.clear()
    guard.reset()
    ledger.LEDGER.reset()
    assert instrument(libraries, tracer_provider=harness.provider) == libraries
    try:
        yield harness
    finally:
        uninstrument(libraries)
        harness.shutdown()
        ledger.LEDGER.reset()
        ledger.LEDGER.limits = ledger.Limits()
        ledger.LEDGER.pricer = None
    assert lc._PATCH.handler is None or not lc._PATCH.handler.runs  # no run left open
    health = guard.health()
    assert not {k: v for k, v in health.items() if k.startswith("errors") or "unbalanced" in k}, health


@pytest.fixture
async def chat(fake):
    """ChatOpenAI against the fake. Async so each test's async httpx client closes on its own loop."""
    clients: list[httpx.AsyncClient] = []

    def make(**kwargs):
        kwargs.setdefault("model", MODEL)
        clients.append(httpx.AsyncClient())
        kwargs.setdefault("http_async_client", clients[-1])
        return ChatOpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0, **kwargs)

    yield make
    for client in clients:
        await client.aclose()


def weather_agent(chat, **kwargs):
    """A one-tool ReAct agent: model (calls get_weather) -> tools -> model (answers)."""
    return create_react_agent(chat(**kwargs), [get_weather], name="weather_agent")


ASK = {"messages": [("user", "weather in Paris? [[scenario:tool]]")]}


def supervisor_graph(chat, asynchronous: bool = False, **kwargs):
    """`boss`: a supervisor node that makes its own model call and then calls the weather agent (an agent calling
    an agent), then the weather agent itself as the next node (a compiled graph used as a node: a subgraph)."""
    weather = weather_agent(chat, **kwargs)
    router = chat(**kwargs)

    def supervisor(state):
        router.invoke([("user", "who should answer?")])
        out = weather.invoke(ASK)
        return {"messages": [out["messages"][-1]]}

    async def asupervisor(state):
        await router.ainvoke([("user", "who should answer?")])
        out = await weather.ainvoke(ASK)
        return {"messages": [out["messages"][-1]]}

    graph = StateGraph(MessagesState)
    graph.add_node("supervisor", asupervisor if asynchronous else supervisor)
    graph.add_node("weather", weather)
    graph.add_edge(START, "supervisor")
    graph.add_edge("supervisor", "weather")
    graph.add_edge("weather", END)
    return graph.compile(name="boss")


def chat_call(depth: int, sdk: bool) -> list[tuple[int, str]]:
    """One model call in tree(): LangChain's chat span, and the SDK's under it when our OpenAI instrumentor is on."""
    return [(depth, f"chat {MODEL}")] + ([(depth + 1, f"chat {MODEL}")] if sdk else [])


def react_tree(depth: int, sdk: bool) -> list[tuple[int, str]]:
    return [
        (depth, "invoke_agent weather_agent"),
        (depth + 1, "agent"),
        *chat_call(depth + 2, sdk),
        (depth + 1, "tools"),
        (depth + 2, "execute_tool get_weather"),
        (depth + 1, "agent"),
        *chat_call(depth + 2, sdk),
    ]


def supervisor_tree(sdk: bool) -> list[tuple[int, str]]:
    return [
        (0, "invoke_agent boss"),
        (1, "supervisor"),
        *chat_call(2, sdk),
        *react_tree(2, sdk),
        (1, "weather"),
        *react_tree(2, sdk),
    ]


def assert_agent_span(span, name: str) -> None:
    a = span.attributes
    assert span.name == f"invoke_agent {name}"
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert a["gen_ai.agent.name"] == name
    assert span.status.status_code is StatusCode.UNSET


# --- a ReAct agent ----------------------------------------------------------------------------------------------


def test_react_agent(run, fake, chat):
    out = weather_agent(chat).invoke(ASK)
    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai"]

    assert run.tree() == react_tree(0, run.sdk)
    (root,) = run.named("invoke_agent weather_agent")
    assert_agent_span(root, "weather_agent")
    assert root.parent is None and len({s.context.trace_id for s in run.spans()}) == 1
    nodes = [s for s in run.spans() if run.parent(s) is root]
    assert all(s.attributes.get("gen_ai.operation.name") is None for s in nodes)  # a node is a plain step
    (tool_span,) = run.named("execute_tool get_weather")
    assert run.parent(tool_span).name == "tools"
    assert tool_span.attributes["gen_ai.tool.name"] == "get_weather"
    assert tool_span.attributes["gen_ai.tool.call.id"] == out["messages"][1].tool_calls[0]["id"]
    assert str(tool_span.context.span_id) in out["messages"][2].content  # the tool ran with its span current
    for span in run.named(f"chat {MODEL}"):  # every model call carries the agent that made it
        assert span.attributes["gen_ai.agent.name"] == "weather_agent"
    # What the agent was asked and what it answered (content capture is on by default).
    asked = validate_content("input", root.attributes["gen_ai.input.messages"])
    assert asked == [{"role": "user", "parts": [{"type": "text", "content": ASK["messages"][0][1]}]}]
    (answer,) = validate_content("output", root.attributes["gen_ai.output.messages"])
    assert answer["finish_reason"] == "stop"
    assert answer["parts"] == [{"type": "text", "content": out["messages"][-1].content}]
    run.assert_counted_once(fake, 2)


def test_content_capture_off(run, fake, chat):
    use_settings(llm_log_prompts=False, llm_log_responses=False)
    weather_agent(chat).invoke(ASK)
    (root,) = run.named("invoke_agent weather_agent")
    assert not [k for s in run.spans() for k in s.attributes if k.endswith((".messages", ".arguments", ".result"))]
    assert root.attributes["llm.cost.cumulative"] > 0
    run.assert_counted_once(fake, 2)


# --- a supervisor with sub-agents ---------------------------------------------------------------------------------


def test_supervisor_with_subagents(run, fake, chat):
    out = supervisor_graph(chat).invoke({"messages": [("user", "go [[scenario:tool]]")]})
    assert out["messages"][-1].type == "ai"

    assert run.tree() == supervisor_tree(run.sdk)
    assert len({s.context.trace_id for s in run.spans()}) == 1
    (boss,) = run.named("invoke_agent boss")
    assert_agent_span(boss, "boss")
    first, second = run.named("invoke_agent weather_agent")
    for sub, node in ((first, "supervisor"), (second, "weather")):
        assert_agent_span(sub, "weather_agent")
        assert run.parent(sub).name == node and run.parent(run.parent(sub)) is boss
    run.assert_counted_once(fake, 5)
    # The boss's total is everything; each sub-agent's is its own subtree, a part of the boss's.
    subs = first.attributes["llm.cost.cumulative"] + second.attributes["llm.cost.cumulative"]
    assert subs < boss.attributes["llm.cost.cumulative"]
    router_call = [s for s in run.counted() if s.attributes["gen_ai.agent.name"] == "boss"]
    assert len(router_call) == 1
    assert math.isclose(subs + router_call[0].attributes["llm.cost.total"], boss.attributes["llm.cost.cumulative"])
    # Per agent: the calls each agent made itself (the sub-agent's four are the sub-agent's, not the boss's).
    assert mltrack_otel.totals(agent="boss").calls == 1
    assert mltrack_otel.totals(agent="weather_agent").calls == 4
    assert mltrack_otel.totals(agent="boss").cost_usd + mltrack_otel.totals(agent="weather_agent").cost_usd == (
        mltrack_otel.totals().cost_usd
    )


async def test_supervisor_astream(run, fake, chat):
    """astream of the supervisor (async nodes, async sub-agent); the caller's context stays its own between
    chunks."""
    graph = supervisor_graph(chat, asynchronous=True)
    updates = []
    async for update in graph.astream({"messages": [("user", "go [[scenario:tool]]")]}, stream_mode="updates"):
        assert trace.get_current_span() is trace.INVALID_SPAN  # nothing of ours current while the caller runs
        assert ledger.current_scope() is None
        updates.append(update)
    assert [next(iter(u)) for u in updates] == ["supervisor", "weather"]

    assert run.tree() == supervisor_tree(run.sdk)
    assert len({s.context.trace_id for s in run.spans()}) == 1
    run.assert_counted_once(fake, 5)


async def test_concurrent_ainvoke(run, fake, chat):
    """Three agent runs at once: three traces, each agent's total its own."""
    agent = weather_agent(chat)
    outs = await asyncio.gather(
        *(agent.ainvoke({"messages": [("user", f"weather {i}? [[scenario:tool]]")]}) for i in range(3))
    )
    assert all(len(o["messages"]) == 4 for o in outs)

    roots = run.named("invoke_agent weather_agent")
    assert len(roots) == 3 and all(r.parent is None for r in roots)
    assert len({r.context.trace_id for r in roots}) == 3
    for root in roots:
        assert len([s for s in run.below(root) if s.name == "execute_tool get_weather"]) == 1
    run.assert_counted_once(fake, 6)


def test_stream_messages(run, fake, chat):
    """stream_mode="messages": model tokens streamed from inside the graph; the same tree, counted once."""
    agent = weather_agent(chat, stream_usage=True)
    tokens = [chunk for chunk, _meta in agent.stream(ASK, stream_mode="messages")]
    assert tokens

    assert run.tree() == react_tree(0, run.sdk)
    run.assert_counted_once(fake, 2)


def test_stream_abandoned(run, fake, chat):
    """The caller stops reading the graph's stream after the first step: every span ends, the agent's marked
    incomplete rather than failed."""
    stream = weather_agent(chat).stream(ASK, stream_mode="updates")
    first = next(stream)
    assert "agent" in first
    stream.close()

    (root,) = run.named("invoke_agent weather_agent")
    assert root.attributes["mltrack.stream.complete"] is False
    assert root.status.status_code is not StatusCode.ERROR
    assert len(run.named(f"chat {MODEL}")) == (2 if run.sdk else 1)
    run.assert_counted_once(fake, 1)


@tool
def transfer_to_weather(tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
    """Hand the conversation to the weather agent."""
    message = ToolMessage("transferred", tool_call_id=tool_call_id, name="transfer_to_weather")
    return Command(goto="weather_agent", graph=Command.PARENT, update={"messages": [message]})


def test_handoff(run, fake, chat):
    """A handoff: the triage agent's tool sends the conversation to the weather agent in the parent graph
    (Command.PARENT travels as an exception through the tool, the tools node and the triage agent: control flow,
    not a failure)."""
    graph = StateGraph(MessagesState)
    graph.add_node(
        "triage", create_react_agent(chat(), [transfer_to_weather], name="triage"), destinations=("weather_agent",)
    )
    graph.add_node("weather_agent", weather_agent(chat))
    graph.add_edge(START, "triage")
    out = graph.compile(name="desk").invoke({"messages": [("user", "weather please [[scenario:tool]]")]})
    assert out["messages"][-1].type == "ai"

    assert run.tree() == [
        (0, "invoke_agent desk"),
        (1, "triage"),
        (2, "invoke_agent triage"),
        (3, "agent"),
        *chat_call(4, run.sdk),
        (3, "tools"),
        (4, "execute_tool transfer_to_weather"),
        (1, "weather_agent"),
        (2, "invoke_agent weather_agent"),
        (3, "agent"),
        *chat_call(4, run.sdk),
    ]
    assert all(s.status.status_code is StatusCode.UNSET for s in run.spans())
    run.assert_counted_once(fake, 2)
    assert mltrack_otel.totals(agent="triage").calls == mltrack_otel.totals(agent="weather_agent").calls == 1


# --- nodes, interrupts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", ["provider-on"], indirect=True)
async def test_sdk_call_in_a_node_nests_under_it(run, fake, oai, aoai):
    """A node's function calling the OpenAI SDK itself: its span is the node's child, counted in the agent, sync
    (node in LangGraph's thread pool) and async (asyncio task)."""

    def plan(state):
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "plan it"}])
        return {}

    async def aplan(state):
        await aoai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "plan it"}])
        return {}

    for node in (plan, aplan):
        graph = StateGraph(MessagesState)
        graph.add_node("plan", node)
        graph.add_edge(START, "plan")
        graph.add_edge("plan", END)
        planner = graph.compile(name="planner")
        if node is plan:
            await asyncio.to_thread(planner.invoke, {"messages": [("user", "go")]})
        else:
            await planner.ainvoke({"messages": [("user", "go")]})

    assert run.tree() == [(0, "invoke_agent planner"), (1, "plan"), (2, f"chat {MODEL}")] * 2
    for span in run.named(f"chat {MODEL}"):
        assert span.attributes["gen_ai.agent.name"] == "planner"
    run.assert_counted_once(fake, 2)


def test_interrupt_and_resume(run, fake, chat, caplog):
    """A human-in-the-loop interrupt ends the agent run cleanly (not failed); the resumed run is a new agent run
    of the same conversation (the thread id)."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command, interrupt

    model = chat()

    def draft(state):
        return {"messages": [model.invoke(state["messages"])]}

    def approve(state):
        return {"messages": [("user", f"approved: {interrupt('approve?')}")]}

    graph = StateGraph(MessagesState)
    graph.add_node("draft", draft)
    graph.add_node("approve", approve)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "approve")
    graph.add_edge("approve", END)
    app = graph.compile(name="drafter", checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "thread-7"}}
    assert "__interrupt__" in app.invoke({"messages": [("user", "write it")]}, config)
    assert app.invoke(Command(resume="yes"), config)["messages"][-1].content == "approved: yes"

    first, second = run.named("invoke_agent drafter")
    for span in (first, second):
        assert span.status.status_code is StatusCode.UNSET
        assert span.attributes["gen_ai.conversation.id"] == "thread-7"
    assert first.context.trace_id != second.context.trace_id
    assert [run.parent(s).name for s in run.named("approve")] == ["invoke_agent drafter"] * 2
    assert not [r for r in caplog.records if "MltrackCallbackHandler" in r.getMessage()]  # no on_interrupt errors
    run.assert_counted_once(fake, 1)


def test_tracking_failure_never_breaks_the_graph(run, fake, chat, monkeypatch):
    """A failure of ours when a graph starts (here: the agent run cannot open) leaves the graph's result alone."""

    def boom(*args, **kwargs):
        raise RuntimeError("bug in tracking")

    monkeypatch.setattr(lc.agents, "start", boom)
    out = weather_agent(chat).invoke(ASK)
    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai"]
    assert guard.health()["errors.langchain.on_chain_start"] == 1
    assert run.named("invoke_agent weather_agent") == []
    assert len(run.named("execute_tool get_weather")) == 1  # the rest is still recorded
    run.assert_counted_once(fake, 2)
    guard.reset()  # the fixture fails on tracking errors; this one was expected


# --- the agent's budget stops a runaway tool loop --------------------------------------------------------------

LIMIT = Decimal("0.0002")  # a few calls of the looper's (max_tokens=50: each call's worst case is about 6e-05 USD)
# LangGraph's default recursion limit is 10007 steps: a runaway loop makes thousands of model calls. The tests allow
# 40 (about 20 calls), so that without the budget the loop ends by itself and the test fails rather than runs on.
LOOP_STEPS = {"recursion_limit": 40}


def looper(chat):
    """A ReAct agent whose model is forced to call the tool every time: it loops until something stops it."""
    model = chat(max_tokens=50).bind_tools([get_weather], tool_choice="get_weather")
    return create_react_agent(model, [get_weather], name="looper")


def assert_stopped(run, fake, error) -> None:
    """The loop was stopped by the looper's budget before its next model call was sent, mid-loop, and every span
    ended: the refused call's, its node's and the agent's failed with BudgetExceededError."""
    assert error.scope == "agent" and error.kind == "cost"
    calls = len(fake.requests)
    assert 2 <= calls < 12  # some tool rounds ran, and the loop stopped well before the steps it was allowed
    (root,) = run.named("invoke_agent looper")
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["error.type"] == "mltrack_otel.BudgetExceededError"
    spent = Decimal(str(root.attributes["llm.cost.cumulative"]))
    assert spent <= LIMIT < spent + Decimal(str(error.requested))
    assert len(run.named("execute_tool get_weather")) == calls  # every call sent got its tool round
    chats = [s for s in run.named(f"chat {MODEL}") if s.instrumentation_scope.name == LC_SCOPE]
    assert len(chats) == calls + 1  # the refused one too: started, never sent
    refused = chats[-1]
    assert refused.attributes["error.type"] == "mltrack_otel.BudgetExceededError"
    assert [s for s in run.spans() if run.parent(s) is refused] == []
    node = run.parent(refused)
    assert node.name == "agent" and node.status.status_code is StatusCode.ERROR
    run.assert_counted_once(fake, calls)
    assert mltrack_otel.totals(agent="looper").calls == calls
    assert ledger.LEDGER.held() == (0, 0)  # every reservation given back


def test_budget_stops_tool_loop(run, fake, chat):
    use_settings(agents={"looper": {"llm_cost_limit": LIMIT}})
    with pytest.raises(mltrack_otel.BudgetExceededError) as caught:
        looper(chat).invoke({"messages": [("user", "weather in Paris?")]}, LOOP_STEPS)
    assert type(caught.value) is mltrack_otel.BudgetExceededError  # LangGraph raises it as it is, not wrapped
    assert_stopped(run, fake, caught.value)


async def test_budget_stops_tool_loop_astream(run, fake, chat):
    use_settings(agents={"*": {"llm_cost_limit": LIMIT}})
    updates = []
    with pytest.raises(mltrack_otel.BudgetExceededError) as caught:
        async for update in looper(chat).astream({"messages": [("user", "weather in Paris?")]}, LOOP_STEPS):
            updates.append(update)
    assert len(updates) >= 3  # the caller saw the loop's steps before the stop
    assert_stopped(run, fake, caught.value)


def test_budget_is_per_run(run, fake, chat):
    """The budget is each run's: four runs of the agent spend more than it in all, and none is stopped."""
    per_run = LIMIT / 2
    use_settings(agents={"weather_agent": {"llm_cost_limit": per_run}})
    agent = weather_agent(chat, max_tokens=50)
    runs = [agent.invoke(ASK) for _ in range(4)]
    assert all(len(r["messages"]) == 4 for r in runs)
    assert mltrack_otel.totals().cost_usd > per_run
    for root in run.named("invoke_agent weather_agent"):
        assert Decimal(str(root.attributes["llm.cost.cumulative"])) <= per_run
    run.assert_counted_once(fake, 8)


async def test_budget_stops_a_plain_langchain_call(run, fake, chat):
    """Outside any graph too: a LangChain model call whose worst case does not fit the agent's budget is refused
    before it is sent, by our OpenAI instrumentor or, when it is off, by the LangChain instrumentation itself."""
    model = chat(max_tokens=50)
    with mltrack_otel.agent("solo", cost_limit="0.00001"), pytest.raises(mltrack_otel.BudgetExceededError):
        model.invoke("hello")
    with mltrack_otel.agent("solo", cost_limit="0.00001"), pytest.raises(mltrack_otel.BudgetExceededError):
        await model.ainvoke("hello")
    assert fake.requests == []
    chats = [s for s in run.named(f"chat {MODEL}") if s.instrumentation_scope.name == LC_SCOPE]
    assert len(chats) == 2 and all(s.attributes["error.type"] == "mltrack_otel.BudgetExceededError" for s in chats)
    assert ledger.LEDGER.held() == (0, 0)


async def test_astream_abandoned(run, fake, chat):
    stream = weather_agent(chat).astream(ASK, stream_mode="updates")
    first = await stream.__anext__()
    assert "agent" in first
    await stream.aclose()

    (root,) = run.named("invoke_agent weather_agent")
    assert root.attributes["mltrack.stream.complete"] is False
    assert root.status.status_code is not StatusCode.ERROR
    assert trace.get_current_span() is trace.INVALID_SPAN and ledger.current_scope() is None
    run.assert_counted_once(fake, 1)


# --- instrumentation on and off ----------------------------------------------------------------------------------


def test_uninstrument_restores_pregel(fake, settings, chat):
    harness = Traced()
    instrument(["langchain"], tracer_provider=harness.provider)
    import langgraph.pregel  # noqa: F401  (patched: already imported; Pregel's home in every release)

    assert Pregel.__dict__["stream"] is not ORIGINAL_STREAM
    uninstrument(["langchain"])
    assert Pregel.__dict__["stream"] is ORIGINAL_STREAM and Pregel.__dict__["astream"] is ORIGINAL_ASTREAM
    weather_agent(chat).invoke(ASK)
    assert harness.spans() == []
    harness.shutdown()


def test_langgraph_patched_when_the_app_imports_it():
    """instrument() with langchain-core loaded does not import LangGraph; importing it later patches Pregel and the
    node runner, and uninstrument() restores them exactly."""
    code = """
        import json, sys
        import langchain_core
        from mltrack_otel.instrumentation import instrument, uninstrument
        instrument(["langchain"])
        loaded = "langgraph.pregel" in sys.modules
        from langgraph.pregel import Pregel  # exported there in every release (defined in pregel.main from 0.6)
        try:
            from langgraph._internal._runnable import RunnableSeq  # 0.6+
        except ImportError:  # 0.5 and before
            from langgraph.utils.runnable import RunnableSeq
        targets = [Pregel.stream, Pregel.astream, RunnableSeq.invoke, RunnableSeq.ainvoke]
        originals = [getattr(t, "__wrapped__", None) for t in targets]
        uninstrument(["langchain"])
        restored = [Pregel.__dict__["stream"], Pregel.__dict__["astream"], RunnableSeq.__dict__["invoke"],
                    RunnableSeq.__dict__["ainvoke"]]
        print(json.dumps({"loaded": loaded, "restored": [o is r for o, r in zip(originals, restored)]}))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"loaded": False, "restored": [True] * 4}
