"""Pydantic AI (mltrack_otel.instrumentation.pydantic_ai): real agents, with a tool and a sub-agent called from that
tool, on OpenAIChatModel over the real AsyncOpenAI client against the fake provider (the `tool` scenario calls the
first tool, then answers once the tool's result is in). Three ways of recording: ours and Pydantic AI's own spans
(one agent span per run: theirs, carrying our totals; our SDK span the counted one below their `chat` span); only
Pydantic AI's (its `chat` spans priced and counted once, its agent spans not); only ours (our agent and tool spans).
Also: per-agent totals, budgets stopping a runaway tool loop mid-way, streams, and a sub-agent's nesting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent
from pydantic_ai.capabilities import AbstractCapability, Instrumentation
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import mltrack_otel
from mltrack_otel import agents, config, guard, ledger, semconv
from mltrack_otel.errors import BudgetExceededError
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.instrumentation import pydantic_ai as ours_module
from mltrack_otel.pricing import Pricer, Usage

AGENT = "gen_ai.agent.name"
COUNTED = semconv.MLTRACK_USAGE_COUNTED
CUMULATIVE = semconv.LLM_COST_CUMULATIVE
OURS_SDK = "mltrack_otel.instrumentation.openai"
OURS_PAI = "mltrack_otel.instrumentation.pydantic_ai"
THEIRS = "pydantic-ai"


# -- fixtures and helpers ------------------------------------------------------------------------------------------


@pytest.fixture(params=["ours+theirs", "theirs", "ours"])
def mode(request) -> str:
    return request.param


@pytest.fixture
def traced(pipeline, fake, mode):
    """configure(exporters=["memory"]) (the global provider, which Pydantic AI's instrumentation also uses by
    default); Pydantic AI instrumented always, the OpenAI SDK unless the mode is "theirs"."""
    fake.clear()
    libraries = ["pydantic_ai"] if mode == "theirs" else ["pydantic_ai", "openai"]
    assert instrument(libraries) == libraries
    yield pipeline
    uninstrument(libraries)


def theirs(mode: str, **options: Any) -> list[Any]:
    """Pydantic AI's own instrumentation as a capability, when the mode has it."""
    return [Instrumentation(settings=InstrumentationSettings(**options))] if "theirs" in mode else []


def chat_model(fake, scenario: str = "tool") -> OpenAIChatModel:
    import openai

    client = openai.AsyncOpenAI(
        base_url=fake.openai_base_url, api_key="sk-test", max_retries=0, default_headers={"x-fake-scenario": scenario}
    )
    return OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))


seen: list[Any] = []  # agents.current_run() in each ask_helper call


def boss_and_helper(fake, mode: str, **options: Any) -> tuple[Agent, Agent]:
    """`boss` calls its tool `ask_helper` (the fake's tool scenario), which runs the sub-agent `helper`."""
    seen.clear()
    model = chat_model(fake)
    helper = Agent(model, name="helper", capabilities=theirs(mode, **options))
    boss = Agent(model, name="boss", capabilities=theirs(mode, **options))

    @boss.tool_plain
    async def ask_helper(question: str) -> str:
        seen.append(agents.current_run())
        return (await helper.run(f"helper: {question}")).output

    return boss, helper


@dataclass
class Runaway(AbstractCapability[Any]):
    """Forces a tool call at every step: the agent never answers (a runaway loop)."""

    def get_model_settings(self) -> Any:
        return lambda ctx: {"tool_choice": "required", "max_tokens": 24}


def spans(rt) -> list[Any]:
    return sorted(rt.memory_exporter.get_finished_spans(), key=lambda s: s.start_time)


def tree(rt) -> list[tuple[int, str, str]]:
    """(depth, name, who recorded it: ours / theirs / sdk) in start order."""
    return tree_of(spans(rt))


def tree_of(ordered: list[Any]) -> list[tuple[int, str, str]]:
    by_id = {s.context.span_id: s for s in ordered}

    def depth(span: Any) -> int:
        d = 0
        while span.parent is not None and span.parent.span_id in by_id:
            span, d = by_id[span.parent.span_id], d + 1
        return d

    who = {OURS_SDK: "sdk", OURS_PAI: "ours", THEIRS: "theirs"}
    return [(depth(s), s.name, who.get(s.instrumentation_scope.name, "?")) for s in ordered]


def counted(rt) -> list[Any]:
    return [s for s in spans(rt) if (s.attributes or {}).get(COUNTED) is True]


def agent_spans(rt, name: str) -> list[Any]:
    return [s for s in spans(rt) if s.name == f"invoke_agent {name}"]


def below(rt, root: Any) -> list[Any]:
    """The counted spans in root's subtree."""
    by_id = {s.context.span_id: s for s in spans(rt)}

    def under(span: Any) -> bool:
        parent = span.parent
        while parent is not None:
            if parent.span_id == root.context.span_id:
                return True
            up = by_id.get(parent.span_id)
            parent = up.parent if up is not None else None
        return False

    return [s for s in counted(rt) if under(s)]


def exact_cost(span: Any) -> Decimal:
    a = span.attributes
    usage = Usage(a[semconv.LLM_TOKENS_PROMPT], a[semconv.LLM_TOKENS_COMPLETION])
    return Pricer().price("openai", a.get("gen_ai.response.model") or a["gen_ai.request.model"], usage).total


def cost_of(calls: list[Any]) -> Decimal:
    return sum((exact_cost(c) for c in calls), Decimal(0))


# -- the span tree and exactly-once counting, in each mode ---------------------------------------------------------

EXPECTED_TREES = {
    # Pydantic AI's spans around ours: its chat span wraps our SDK span; one agent span per run (theirs).
    "ours+theirs": [
        (0, "invoke_agent boss", "theirs"),
        (1, "chat gpt-4o-mini", "theirs"),
        (2, "chat gpt-4o-mini", "sdk"),
        (1, "execute_tool ask_helper", "theirs"),
        (2, "invoke_agent helper", "theirs"),
        (3, "chat gpt-4o-mini", "theirs"),
        (4, "chat gpt-4o-mini", "sdk"),
        (1, "chat gpt-4o-mini", "theirs"),
        (2, "chat gpt-4o-mini", "sdk"),
    ],
    "theirs": [
        (0, "invoke_agent boss", "theirs"),
        (1, "chat gpt-4o-mini", "theirs"),
        (1, "execute_tool ask_helper", "theirs"),
        (2, "invoke_agent helper", "theirs"),
        (3, "chat gpt-4o-mini", "theirs"),
        (1, "chat gpt-4o-mini", "theirs"),
    ],
    "ours": [
        (0, "invoke_agent boss", "ours"),
        (1, "chat gpt-4o-mini", "sdk"),
        (1, "execute_tool ask_helper", "ours"),
        (2, "invoke_agent helper", "ours"),
        (3, "chat gpt-4o-mini", "sdk"),
        (1, "chat gpt-4o-mini", "sdk"),
    ],
}


def test_a_run_with_a_tool_and_a_sub_agent_is_one_tree_counted_once(traced, fake, mode):
    boss, _ = boss_and_helper(fake, mode)
    result = boss.run_sync("plan the trip")
    assert result.output.startswith("Echo: plan the trip")
    assert len(fake.requests) == 3  # boss: tool call, answer; helper: answer
    assert tree(traced) == EXPECTED_TREES[mode]
    # The boss's run is current in its tool (agents.current_run()), whoever's span roots it.
    (run,) = seen
    (boss_span,) = agent_spans(traced, "boss")
    assert run.name == "boss" and run.scope.span_id == run.span.get_span_context().span_id == boss_span.context.span_id

    # One counted span per model call: our SDK span when it is there, else Pydantic AI's chat span.
    calls = counted(traced)
    assert len(calls) == 3
    assert {c.instrumentation_scope.name for c in calls} == {THEIRS if mode == "theirs" else OURS_SDK}
    assert all(c.attributes[semconv.LLM_COST_TOTAL] > 0 for c in calls)
    wrappers = [s for s in spans(traced) if s.name.startswith("chat") and s not in calls]
    assert all(w.attributes[COUNTED] is False for w in wrappers)
    # No agent or tool span is counted (Pydantic AI's agent spans report gen_ai.aggregated_usage.* only).
    assert all(COUNTED not in s.attributes for s in spans(traced) if not s.name.startswith("chat"))

    # Totals: the process, each agent span's subtree, and each agent's own calls.
    total = mltrack_otel.totals()
    assert (total.calls, total.cost_usd) == (3, cost_of(calls))
    (boss_span,) = agent_spans(traced, "boss")
    (helper_span,) = agent_spans(traced, "helper")
    assert boss_span.attributes[CUMULATIVE] == pytest.approx(float(cost_of(calls)))
    assert helper_span.attributes[CUMULATIVE] == pytest.approx(float(cost_of(below(traced, helper_span))))
    assert len(below(traced, helper_span)) == 1 and len(below(traced, boss_span)) == 3
    mine = [c for c in calls if c.attributes[AGENT] == "boss"]
    assert len(mine) == 2 and {c.attributes[AGENT] for c in calls} == {"boss", "helper"}
    assert mltrack_otel.totals(agent="boss").cost_usd == cost_of(mine)
    assert mltrack_otel.totals(agent="helper").calls == 1
    assert mltrack_otel.totals(agent="boss").calls + mltrack_otel.totals(agent="helper").calls == total.calls


def test_instrument_all_gives_the_same_single_agent_span_per_run(pipeline, fake):
    """Agent.instrument_all() (Pydantic AI's global switch, on the global provider that configure() set up) with
    ours on: Pydantic AI's agent spans are the agent runs."""
    fake.clear()
    instrument(["pydantic_ai", "openai"])
    Agent.instrument_all(True)
    try:
        boss, _ = boss_and_helper(fake, "ours")  # no capability of theirs given: instrument_all adds it
        boss.run_sync("plan the trip")
    finally:
        Agent.instrument_all(False)
        uninstrument(["pydantic_ai", "openai"])
    assert tree(pipeline) == EXPECTED_TREES["ours+theirs"]
    assert mltrack_otel.totals().calls == len(counted(pipeline)) == 3
    (root,) = agent_spans(pipeline, "boss")
    assert root.attributes[CUMULATIVE] == pytest.approx(float(cost_of(counted(pipeline))))


@pytest.mark.parametrize("sdk", [True, False])
def test_pydantic_ai_agent_spans_with_plain_usage_names_are_not_counted_again(pipeline, fake, sdk):
    """use_aggregated_usage_attribute_names=False puts the run's own summed usage under gen_ai.usage.* on Pydantic
    AI's agent span: its chat spans (or our SDK spans below them) are counted, the agent span is not."""
    traced = pipeline
    fake.clear()
    libraries = ["pydantic_ai", "openai"] if sdk else ["pydantic_ai"]
    instrument(libraries)
    try:
        boss, _ = boss_and_helper(fake, "theirs", use_aggregated_usage_attribute_names=False)
        boss.run_sync("plan the trip")
    finally:
        uninstrument(libraries)
    (boss_span,) = agent_spans(traced, "boss")
    assert boss_span.attributes["gen_ai.usage.input_tokens"] > 0  # the boss's two calls, summed
    # An agent span is not a model call: not counted, not priced, not flagged unpriced.
    assert COUNTED not in boss_span.attributes and "llm.tokens.total" not in boss_span.attributes
    assert "mltrack.cost.unpriced" not in boss_span.attributes
    assert mltrack_otel.totals().calls == len(counted(traced)) == 3
    assert boss_span.attributes[CUMULATIVE] == pytest.approx(float(cost_of(counted(traced))))


def test_async_runs_and_streams_count_once(traced, fake, mode):
    boss, helper = boss_and_helper(fake, mode)

    async def both() -> tuple[str, str]:
        plain = await boss.run("plan the trip")
        async with helper.run_stream("stream this answer") as stream:
            streamed = await stream.get_output()
        return plain.output, streamed

    plain, streamed = asyncio.run(both())
    assert plain.startswith("Echo: plan the trip") and streamed.startswith("Echo: stream this answer")
    assert [name for _, name, _ in tree(traced)].count("invoke_agent helper") == 2
    calls = counted(traced)
    assert len(calls) == 4 == len(fake.requests)
    assert mltrack_otel.totals().cost_usd == cost_of(calls)
    streamed_run = agent_spans(traced, "helper")[-1]
    assert streamed_run.parent is None
    (streamed_call,) = below(traced, streamed_run)
    assert streamed_run.attributes[CUMULATIVE] == pytest.approx(float(exact_cost(streamed_call)))


# -- budgets -------------------------------------------------------------------------------------------------------


def runaway(fake, mode: str) -> tuple[Agent, list[int]]:
    agent = Agent(chat_model(fake, "ok"), name="looper", capabilities=[*theirs(mode), Runaway()])
    steps: list[int] = []

    @agent.tool_plain
    def step(n: int) -> str:
        steps.append(n)
        return "not done yet, call step again"

    return agent, steps


def test_a_run_budget_stops_a_runaway_tool_loop_before_its_next_model_call(traced, fake, mode):
    agent, steps = runaway(fake, mode)
    limit = Decimal("0.00006")
    with pytest.raises(BudgetExceededError) as info:
        agent.run_sync("loop forever", capabilities=[ours_module.AgentBudget(cost_limit=limit)])
    assert info.value.scope == "agent"
    assert len(steps) >= 2  # stopped in the middle of the loop, not at its first call
    assert len(fake.requests) == len(steps)  # the refused call never reached the provider
    spent = mltrack_otel.totals(agent="looper")
    assert spent.calls == len(steps)
    # Each request's worst case is reserved before it is sent (by our capability, or by our SDK span below it), in
    # every mode: the budget is never overrun, and nothing stays held once the run has ended.
    assert spent.cost_usd <= limit
    assert ledger.LEDGER.held() == (0, 0)
    (root,) = agent_spans(traced, "looper")
    assert root.attributes[CUMULATIVE] == pytest.approx(float(spent.cost_usd))
    assert root.status.status_code.name == "ERROR"
    # The budget is per run: the next run starts afresh (and is stopped the same way).
    with pytest.raises(BudgetExceededError):
        agent.run_sync("loop again", capabilities=[ours_module.AgentBudget(cost_limit=limit)])
    assert mltrack_otel.totals(agent="looper").calls == 2 * spent.calls


def test_the_configured_agent_budget_applies_to_each_run_of_that_name(traced, fake, mode):
    config.set_current(config.Settings(agents={"looper": {"llm_cost_limit": "0.00006"}}))
    agent, steps = runaway(fake, mode)

    async def go() -> None:
        async with agent.run_stream("loop forever") as stream:
            await stream.get_output()

    with pytest.raises(BudgetExceededError):
        asyncio.run(go())
    assert len(steps) >= 2 and mltrack_otel.totals(agent="looper").calls == len(steps)


def test_a_sub_agent_over_its_budget_stops_the_parent_run_cleanly(traced, fake, mode):
    """The refusal inside the helper's run surfaces from the boss's run_sync as BudgetExceededError."""
    boss, _ = boss_and_helper(fake, mode)
    config.set_current(config.Settings(agents={"helper": {"llm_token_limit": 0}}))
    with pytest.raises(BudgetExceededError) as info:
        boss.run_sync("plan the trip")
    assert info.value.kind == "token"
    assert mltrack_otel.totals(agent="helper").calls == 0 and mltrack_otel.totals(agent="boss").calls == 1
    (helper_span,) = agent_spans(traced, "helper")
    (boss_span,) = agent_spans(traced, "boss")
    assert helper_span.attributes[CUMULATIVE] == 0.0
    assert boss_span.attributes[CUMULATIVE] == pytest.approx(float(cost_of(counted(traced))))


# -- ours only: our agent and tool spans ---------------------------------------------------------------------------


def test_our_spans_record_the_run_and_its_tools_without_content_when_logging_is_off(pipeline, fake):
    fake.clear()
    config.set_current(config.Settings(llm_log_prompts=False, llm_log_responses=False))
    instrument(["pydantic_ai", "openai"])
    try:
        boss, _ = boss_and_helper(fake, "ours")
        boss.run_sync("plan the trip")
    finally:
        uninstrument(["pydantic_ai", "openai"])
    (root,) = agent_spans(pipeline, "boss")
    a = root.attributes
    assert (a["gen_ai.operation.name"], a[AGENT], a["gen_ai.request.model"]) == ("invoke_agent", "boss", "gpt-4o-mini")
    assert a["gen_ai.provider.name"] == "openai"
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    (tool,) = [s for s in spans(pipeline) if s.name == "execute_tool ask_helper"]
    t = tool.attributes
    assert (t["gen_ai.tool.name"], t["gen_ai.tool.type"]) == ("ask_helper", "function")
    assert t["gen_ai.tool.call.id"].startswith("call_fake")
    assert "gen_ai.tool.call.arguments" not in t and "gen_ai.tool.call.result" not in t
    assert tool.parent.span_id == root.context.span_id


def test_with_content_logged_our_spans_carry_prompt_output_and_tool_io(pipeline, fake):
    fake.clear()
    instrument(["pydantic_ai", "openai"])
    try:
        boss, _ = boss_and_helper(fake, "ours")
        result = boss.run_sync("plan the trip")
    finally:
        uninstrument(["pydantic_ai", "openai"])
    (root,) = agent_spans(pipeline, "boss")
    assert "plan the trip" in root.attributes["gen_ai.input.messages"]
    assert result.output in root.attributes["gen_ai.output.messages"]
    (tool,) = [s for s in spans(pipeline) if s.name == "execute_tool ask_helper"]
    assert '"question"' in tool.attributes["gen_ai.tool.call.arguments"]
    assert tool.attributes["gen_ai.tool.call.result"].startswith("Echo: helper:")


def test_a_failing_tool_fails_our_tool_and_agent_spans_and_propagates_unchanged(pipeline, fake):
    fake.clear()
    instrument(["pydantic_ai", "openai"])
    try:
        agent = Agent(chat_model(fake), name="fragile")

        @agent.tool_plain
        def broken(city: str) -> str:
            raise KeyError("no such city")

        with pytest.raises(KeyError, match="no such city"):
            agent.run_sync("weather please")
    finally:
        uninstrument(["pydantic_ai", "openai"])
    (tool,) = [s for s in spans(pipeline) if s.name == "execute_tool broken"]
    (root,) = agent_spans(pipeline, "fragile")
    assert tool.attributes["error.type"] == root.attributes["error.type"] == "KeyError"
    assert root.status.status_code.name == "ERROR"


# -- Pydantic AI's spans going elsewhere; switching off -------------------------------------------------------------


def test_pydantic_ai_spans_to_another_provider_get_our_agent_span_here(pipeline, fake):
    """Pydantic AI's instrumentation records into a TracerProvider our processor is not on: its spans cannot root our
    scopes, so the run gets our own agent and tool spans (and theirs stay where they were sent)."""
    elsewhere = InMemorySpanExporter()
    other = TracerProvider()
    other.add_span_processor(SimpleSpanProcessor(elsewhere))
    fake.clear()
    instrument(["pydantic_ai", "openai"])
    try:
        boss, _ = boss_and_helper(fake, "theirs", tracer_provider=other)
        boss.run_sync("plan the trip")
    finally:
        uninstrument(["pydantic_ai", "openai"])
    # One trace over both backends: ours around theirs (our capability is outside Pydantic AI's).
    both = sorted([*spans(pipeline), *elsewhere.get_finished_spans()], key=lambda s: s.start_time)
    assert [(d, name, who) for d, name, who in tree_of(both)] == [
        (0, "invoke_agent boss", "ours"),
        (1, "invoke_agent boss", "theirs"),
        (2, "chat gpt-4o-mini", "theirs"),
        (3, "chat gpt-4o-mini", "sdk"),
        (2, "execute_tool ask_helper", "ours"),
        (3, "execute_tool ask_helper", "theirs"),
        (4, "invoke_agent helper", "ours"),
        (5, "invoke_agent helper", "theirs"),
        (6, "chat gpt-4o-mini", "theirs"),
        (7, "chat gpt-4o-mini", "sdk"),
        (2, "chat gpt-4o-mini", "theirs"),
        (3, "chat gpt-4o-mini", "sdk"),
    ]
    assert not any(COUNTED in s.attributes for s in elsewhere.get_finished_spans())  # not our pipeline
    (root,) = agent_spans(pipeline, "boss")
    assert root.attributes[CUMULATIVE] == pytest.approx(float(cost_of(counted(pipeline))))
    assert mltrack_otel.totals().calls == 3


def test_uninstrument_restores_agent_iter_and_runs_are_left_alone(pipeline, fake):
    original = Agent.__dict__["iter"]
    instrument(["pydantic_ai"])
    assert Agent.__dict__["iter"].__wrapped__ is original
    uninstrument(["pydantic_ai"])
    assert Agent.__dict__["iter"] is original
    fake.clear()
    agent = Agent(chat_model(fake, "ok"), name="plain")
    agent.run_sync("hello")
    assert spans(pipeline) == []


def test_tracking_switched_off_adds_nothing(pipeline, fake):
    config.set_current(config.Settings(llm_tracking_enabled=False))
    instrument(["pydantic_ai"])
    try:
        agent = Agent(chat_model(fake, "ok"), name="quiet")
        assert agent.run_sync("hello").output.startswith("Echo: hello")
    finally:
        uninstrument(["pydantic_ai"])
    assert spans(pipeline) == []


@pytest.mark.parametrize("broken", ["start", "tool"])
def test_a_failure_of_ours_leaves_the_run_untouched(pipeline, fake, monkeypatch, broken):
    """Never break the user's program: our agent span (or tool span) failing to open costs only our span."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    if broken == "start":
        monkeypatch.setattr(ours_module.agents, "start", fail)
    else:
        monkeypatch.setattr(ours_module, "_open_tool", fail)
    fake.clear()
    instrument(["pydantic_ai", "openai"])
    try:
        boss, _ = boss_and_helper(fake, "ours")
        assert boss.run_sync("plan the trip").output.startswith("Echo: plan the trip")
    finally:
        uninstrument(["pydantic_ai", "openai"])
    assert guard.health()[f"errors.instrumentation.pydantic_ai.{'run' if broken == 'start' else 'tool'}"] >= 1
    assert mltrack_otel.totals().calls == len(counted(pipeline)) == 3  # the model calls are still counted once
    names = [name for _, name, _ in tree(pipeline)]
    assert ("invoke_agent boss" in names) is (broken == "tool")
    assert "execute_tool ask_helper" not in names


def test_instrument_before_the_import_patches_pydantic_ai_when_the_app_imports_it():
    """instrument() does not import pydantic_ai (nor our module); the app's import of it arms the wrapper."""
    import json
    import os
    import subprocess
    import sys
    import textwrap

    code = """
        import json, sys
        from mltrack_otel.instrumentation import instrument, uninstrument
        armed = instrument(["pydantic_ai"])
        before = [m for m in ("pydantic_ai", "mltrack_otel.instrumentation.pydantic_ai") if m in sys.modules]
        from pydantic_ai import Agent
        patched = Agent.__dict__["iter"]
        uninstrument(["pydantic_ai"])
        print(json.dumps({"armed": armed, "before": before, "wrapped": patched.__wrapped__ is Agent.__dict__["iter"],
                          "restored": type(Agent.__dict__["iter"]).__name__ == "function"}))
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"armed": ["pydantic_ai"], "before": [], "wrapped": True, "restored": True}


def test_an_agent_level_budget_is_the_runs_one_capability(traced, fake, mode):
    """AgentBudget given to the Agent itself: instrument() adds no second one (one agent run, its limits apply)."""
    agent = Agent(
        chat_model(fake, "ok"),
        name="looper",
        capabilities=[*theirs(mode), Runaway(), ours_module.AgentBudget(token_limit=400)],
    )

    @agent.tool_plain
    def step(n: int) -> str:
        return "again"

    with pytest.raises(BudgetExceededError) as info:
        agent.run_sync("loop forever")
    assert info.value.kind == "token"
    assert len(agent_spans(traced, "looper")) == 1
    spent = mltrack_otel.totals(agent="looper")
    assert spent.calls >= 2
    assert spent.total_tokens <= 400  # each request's worst case reserved: never overrun, whoever records the calls
    assert ledger.LEDGER.held() == (0, 0)


def test_two_runs_at_once_under_one_enclosing_budget_cannot_both_overshoot(traced, fake, mode):
    """Two agent runs started together inside one budgeted agent block: the budget fits one request's worst case,
    not the real spend of two. Whichever request comes second (still in flight or done) is refused before it is
    sent, so only one reaches the provider: with only Pydantic AI's spans too (our capability reserves)."""
    limit = 150
    prompt = " ".join(["word"] * 60)  # 63 prompt tokens at the fake; the answer echoes it, cut at max_tokens

    async def both() -> list[Any]:
        runs = [Agent(chat_model(fake, "ok"), name=f"worker{i}", capabilities=theirs(mode)) for i in (1, 2)]
        return await asyncio.gather(
            *(run.run(prompt, model_settings={"max_tokens": 30}) for run in runs), return_exceptions=True
        )

    with mltrack_otel.agent("team", token_limit=limit):
        results = asyncio.run(both())
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert len(refused) == len(answered) == 1, results
    assert answered[0].output.startswith("Echo: word")
    assert len(fake.requests) == 1  # the refused request was never sent
    spent = mltrack_otel.totals()
    assert spent.calls == 1 and spent.total_tokens <= limit
    assert 2 * spent.total_tokens > limit  # two requests sent at once would have overshot it
    assert ledger.LEDGER.held() == (0, 0)


def test_a_streamed_request_is_held_once_whoever_records_it(traced, fake, mode):
    """No max_tokens: a request holds the model's whole output (16,384 for gpt-4o-mini) plus its input. A budget of
    20,000 tokens fits that once, not twice: a stream (sent from the task that consumes it, where our hold is not
    seen) is reserved by our SDK span when it records the call, else by our capability, never by both."""
    agent = Agent(chat_model(fake, "ok"), name="streamer", capabilities=theirs(mode))

    async def go() -> str:
        budget = ours_module.AgentBudget(token_limit=20_000)
        async with agent.run_stream("stream this answer", capabilities=[budget]) as stream:
            return await stream.get_output()

    assert asyncio.run(go()).startswith("Echo: stream this answer")
    assert mltrack_otel.totals(agent="streamer").calls == len(fake.requests) == 1
    assert ledger.LEDGER.held() == (0, 0)


def test_a_failed_request_gives_its_reservation_back(traced, fake, mode):
    """The provider's error reaches the caller unchanged, and the request's hold ends with it: the same budget
    then lets the next run's request out."""
    budget = {"llm_token_limit": 20_000}  # one request's worst case (no max_tokens) fits, not two
    config.set_current(config.Settings(agents={"flaky": budget}))
    failing = Agent(chat_model(fake, "error-500"), name="flaky", capabilities=theirs(mode))
    with pytest.raises(Exception) as info:
        failing.run_sync("hello")
    assert not isinstance(info.value, BudgetExceededError)
    assert ledger.LEDGER.held() == (0, 0)
    config.set_current(config.Settings(llm_token_limit=20_000))  # a process budget now: a refusal would show here
    working = Agent(chat_model(fake, "ok"), name="flaky", capabilities=theirs(mode))
    assert working.run_sync("hello").output.startswith("Echo: hello")
    assert len(fake.requests) == 2 and ledger.LEDGER.held() == (0, 0)


def test_breaking_out_of_iter_ends_the_run_span_once_without_an_error(pipeline, fake):
    """Leaving `async with agent.iter(...)` early is how Pydantic AI stops a run: not a failure (as its own spans)."""
    fake.clear()
    instrument(["pydantic_ai", "openai"])
    try:
        boss, _ = boss_and_helper(fake, "ours")

        async def first_nodes() -> int:
            seen = 0
            async with boss.iter("plan the trip") as run:
                async for _node in run:
                    seen += 1
                    if seen == 3:  # the prompt, the first model request (a tool call), then stop
                        break
            return seen

        assert asyncio.run(first_nodes()) == 3
    finally:
        uninstrument(["pydantic_ai", "openai"])
    (root,) = agent_spans(pipeline, "boss")
    assert root.status.status_code.name == "UNSET" and "error.type" not in root.attributes
    assert mltrack_otel.totals(agent="boss").calls == len(fake.requests) == 1
    assert root.attributes[CUMULATIVE] == pytest.approx(float(cost_of(counted(pipeline))))


def chats(rt) -> tuple[list[Any], list[Any]]:
    """(Pydantic AI's chat spans, our SDK's)."""
    chat = [s for s in spans(rt) if s.name.startswith("chat")]
    return [s for s in chat if s.instrumentation_scope.name == THEIRS], [
        s for s in chat if s.instrumentation_scope.name == OURS_SDK
    ]


def test_pydantic_ai_include_content_governs_its_spans_and_our_settings_ours(pipeline, fake):
    """include_content=False on Pydantic AI: its spans keep the messages' shape without their text; our SDK spans
    follow llm_log_prompts / llm_log_responses (on by default), and the other way round."""
    fake.clear()
    instrument(["pydantic_ai", "openai"])
    try:
        boss, _ = boss_and_helper(fake, "theirs", include_content=False)
        boss.run_sync("plan the trip")
        theirs_chat, sdk_chat = chats(pipeline)
        assert len(theirs_chat) == len(sdk_chat) == 3
        assert all("plan the trip" not in s.attributes["gen_ai.input.messages"] for s in theirs_chat)
        assert all("plan the trip" in s.attributes["gen_ai.input.messages"] for s in sdk_chat[:1])
        pipeline.memory_exporter.clear()
        config.set_current(config.Settings(llm_log_prompts=False, llm_log_responses=False))
        boss, _ = boss_and_helper(fake, "theirs")  # Pydantic AI's default: include_content=True
        boss.run_sync("plan the trip")
    finally:
        uninstrument(["pydantic_ai", "openai"])
    theirs_chat, sdk_chat = chats(pipeline)
    assert "plan the trip" in theirs_chat[0].attributes["gen_ai.input.messages"]
    assert all("gen_ai.input.messages" not in s.attributes for s in sdk_chat)


def test_a_failure_of_ours_while_reserving_still_sends_the_request(pipeline, fake, monkeypatch):
    """Never break the user's program: when we cannot work out a request's worst case, it goes out (only what is
    spent already is checked), the failure counted in health()."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(ours_module, "_request_body", fail)
    fake.clear()
    instrument(["pydantic_ai"])
    try:
        agent = Agent(chat_model(fake, "ok"), name="robust", capabilities=theirs("theirs"))
        budget = ours_module.AgentBudget(token_limit=20_000)
        assert agent.run_sync("hello", capabilities=[budget]).output.startswith("Echo: hello")
    finally:
        uninstrument(["pydantic_ai"])
    assert guard.health()["errors.instrumentation.pydantic_ai.budget"] >= 1
    assert len(fake.requests) == mltrack_otel.totals(agent="robust").calls == 1
    assert ledger.LEDGER.held() == (0, 0)


class Personal(Agent):
    """An agent whose description is rendered from the run's deps, as a TemplateStr description is."""

    def render_description(self, deps: Any = None) -> str | None:
        return f"Assistant of {deps}"


@pytest.mark.parametrize("capture", [True, False])
def test_the_agent_description_is_rendered_with_the_deps_only_when_prompts_are_captured(pipeline, fake, capture):
    """The run's deps may be personal: rendered into our agent span's description only under llm_log_prompts; the
    description as written (a template's source) otherwise."""
    fake.clear()
    config.set_current(config.Settings(llm_log_prompts=capture))
    instrument(["pydantic_ai", "openai"])
    try:
        agent = Personal(chat_model(fake, "ok"), name="personal", description="Assistant of the user", deps_type=str)
        agent.run_sync("hello", deps="alice@example.com")
    finally:
        uninstrument(["pydantic_ai", "openai"])
    (root,) = agent_spans(pipeline, "personal")
    expected = "Assistant of alice@example.com" if capture else "Assistant of the user"
    assert root.attributes["gen_ai.agent.description"] == expected
    assert all("alice@example.com" not in str(s.attributes) for s in spans(pipeline)) is not capture


def test_a_stream_is_held_once_with_our_openai_instrumentor_switched_on_directly(pipeline, fake):
    """OpenAIInstrumentor().instrument() (the OTel way, not instrument()): still known to reserve the stream itself."""
    from mltrack_otel.instrumentation.openai import OpenAIInstrumentor

    fake.clear()
    instrument(["pydantic_ai"])
    OpenAIInstrumentor().instrument()
    try:
        agent = Agent(chat_model(fake, "ok"), name="streamer")

        async def go() -> str:
            budget = ours_module.AgentBudget(token_limit=20_000)  # one request's worst case fits, not two
            async with agent.run_stream("stream this answer", capabilities=[budget]) as stream:
                return await stream.get_output()

        assert asyncio.run(go()).startswith("Echo: stream this answer")
    finally:
        OpenAIInstrumentor().uninstrument()
        uninstrument(["pydantic_ai"])
    (call,) = counted(pipeline)
    assert call.instrumentation_scope.name == OURS_SDK
    assert ledger.LEDGER.held() == (0, 0)


def test_a_stream_left_early_gives_its_reservation_back(traced, fake, mode):
    """Leaving run_stream after the first piece of text stops the request mid-stream: its hold ends with it."""
    agent = Agent(chat_model(fake, "long"), name="impatient", capabilities=theirs(mode))

    async def first_piece() -> str:
        budget = ours_module.AgentBudget(token_limit=20_000)  # a budget applies: the request is reserved
        async with agent.run_stream("tell me a long story " * 5, capabilities=[budget]) as stream:
            async for text in stream.stream_text(delta=True):
                return text
        return ""

    assert asyncio.run(first_piece())
    assert len(fake.requests) == 1
    assert ledger.LEDGER.held() == (0, 0)
