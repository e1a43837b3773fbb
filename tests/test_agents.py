"""Agent runs (mltrack_otel.agents): each run is an `invoke_agent` span rooting its own ledger scope. Real OpenAI SDK
calls against the fake provider, inside hand-written agent loops: the span tree, subtree totals on each agent span,
per-agent totals (`totals(agent=...)`), per-run budgets from code and from `agents:` in the configuration, and
`report --by agent` read back from a real MLflow store."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

import mltrack_otel
from mltrack_otel import agents, cli, config, ledger, provider, semconv
from mltrack_otel.errors import BudgetExceededError, ConfigError
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.pricing import Pricer, Usage
from tests.instr_fixtures import mlflow_store

AGENT = "gen_ai.agent.name"


@pytest.fixture
def traced(pipeline, fake):
    fake.clear()
    instrument(["openai"])
    yield pipeline
    uninstrument(["openai"])


def ask(client, text: str = "hello", **options) -> None:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}], **options)


def spans(rt) -> list:
    return list(rt.memory_exporter.get_finished_spans())


def counted(rt) -> list:
    return [s for s in spans(rt) if (s.attributes or {}).get(semconv.MLTRACK_USAGE_COUNTED) is True]


def agent_span(rt, name: str) -> list:
    return [s for s in spans(rt) if s.name == f"invoke_agent {name}"]


def exact_cost(span) -> Decimal:
    a = span.attributes
    usage = Usage(a[semconv.LLM_TOKENS_PROMPT], a[semconv.LLM_TOKENS_COMPLETION])
    return Pricer().price("openai", a.get("gen_ai.response.model") or a["gen_ai.request.model"], usage).total


def below(rt, root) -> list:
    """The counted spans in the subtree of `root`."""
    by_id = {s.context.span_id: s for s in spans(rt)}

    def under(span) -> bool:
        parent = span.parent.span_id if span.parent is not None else None
        while parent is not None:
            if parent == root.context.span_id:
                return True
            up = by_id.get(parent)
            parent = up.parent.span_id if up is not None and up.parent is not None else None
        return False

    return [s for s in counted(rt) if under(s)]


# -- the span tree and the totals ----------------------------------------------------------------------------------


def test_an_agent_run_is_an_invoke_agent_span_over_its_model_calls(traced, oai):
    with mltrack_otel.agent("planner", description="plans the trip") as run:
        ask(oai, "plan")
        ask(oai, "plan more")
    assert run.ended
    (root,) = agent_span(traced, "planner")
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes[AGENT] == "planner"
    assert root.attributes["gen_ai.agent.description"] == "plans the trip"
    calls = counted(traced)
    assert len(calls) == 2
    assert all(c.parent.span_id == root.context.span_id and c.context.trace_id == root.context.trace_id for c in calls)
    assert all(c.attributes[AGENT] == "planner" for c in calls)
    cost = sum((exact_cost(c) for c in calls), Decimal(0))
    assert root.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(float(cost))
    assert root.attributes[semconv.LLM_TOKENS_CUMULATIVE_TOTAL] == sum(c.attributes["llm.tokens.total"] for c in calls)


def test_a_sub_agent_nests_its_spend_counts_in_the_parent_subtree_and_per_agent_totals_split_it(traced, oai):
    with mltrack_otel.agent("supervisor"):
        ask(oai, "route this")
        with mltrack_otel.agent("researcher"):
            ask(oai, "look it up")
            ask(oai, "look it up again, longer this time")
        ask(oai, "answer")
    (sup,) = agent_span(traced, "supervisor")
    (res,) = agent_span(traced, "researcher")
    assert res.parent.span_id == sup.context.span_id
    by_agent = {"supervisor": [], "researcher": []}
    for call in counted(traced):
        by_agent[call.attributes[AGENT]].append(call)
    assert [len(v) for v in by_agent.values()] == [2, 2]
    cost = {name: sum((exact_cost(c) for c in calls), Decimal(0)) for name, calls in by_agent.items()}
    # The agent's own calls (exact, Decimal) ...
    for name in by_agent:
        t = mltrack_otel.totals(agent=name)
        assert (t.calls, t.cost_usd) == (2, cost[name])
    # ... and its span's subtree: the supervisor's includes the researcher's.
    assert sup.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(float(cost["supervisor"] + cost["researcher"]))
    assert res.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(float(cost["researcher"]))
    assert mltrack_otel.totals().cost_usd == cost["supervisor"] + cost["researcher"]
    assert len(below(traced, sup)) == 4 and len(below(traced, res)) == 2


def test_runs_in_concurrent_tasks_keep_their_own_calls(traced, aoai):
    async def one(name: str, n: int) -> None:
        with mltrack_otel.agent(name):
            for i in range(n):
                await aoai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"{i}"}])

    async def both() -> None:
        await asyncio.gather(one("a", 3), one("b", 2))

    asyncio.run(both())
    assert (mltrack_otel.totals(agent="a").calls, mltrack_otel.totals(agent="b").calls) == (3, 2)
    for name, n in (("a", 3), ("b", 2)):
        (root,) = agent_span(traced, name)
        assert len(below(traced, root)) == n
        assert all(c.attributes[AGENT] == name for c in below(traced, root))


def test_an_error_leaving_the_run_fails_its_span_and_propagates_unchanged(traced, oai):
    with pytest.raises(KeyError, match="missing"), mltrack_otel.agent("fragile"):
        ask(oai)
        raise KeyError("missing")
    (root,) = agent_span(traced, "fragile")
    assert root.attributes["error.type"] == "KeyError"
    assert root.status.status_code.name == "ERROR"
    assert root.attributes[semconv.LLM_TOKENS_CUMULATIVE_TOTAL] > 0  # what it spent before failing


def test_a_cancelled_run_ends_without_an_error(traced, oai):
    with pytest.raises(KeyboardInterrupt), mltrack_otel.agent("interrupted"):
        ask(oai)
        raise KeyboardInterrupt
    (root,) = agent_span(traced, "interrupted")
    assert "error.type" not in root.attributes and root.status.status_code.name != "ERROR"
    assert agents.current_run() is None


def test_calls_after_the_run_are_not_the_agents(traced, oai):
    with mltrack_otel.agent("brief"):
        ask(oai)
    ask(oai, "after")
    assert agents.current_run() is None
    inside, after = counted(traced)
    assert inside.attributes[AGENT] == "brief" and AGENT not in after.attributes
    assert mltrack_otel.totals(agent="brief").calls == 1


def test_deactivating_in_another_context_does_nothing(traced):
    import contextvars

    from opentelemetry import trace

    run = agents.start(trace.get_tracer("t"), "elsewhere", settings=config.current())
    activation = run.activate()
    assert contextvars.copy_context().run(run.deactivate, activation) is False  # another context: refused
    assert agents.current_run() is run
    assert run.deactivate(activation) is True
    assert run.deactivate(activation) is False  # a second time: nothing
    run.finish()
    assert agents.current_run() is None


# -- budgets per run -----------------------------------------------------------------------------------------------


def _loop(client, limit_calls: int = 50) -> int:
    """A runaway agent loop: asks until refused; returns how many calls went out."""
    sent = 0
    for _ in range(limit_calls):
        ask(client, "think again " * 20, max_tokens=64)  # a bounded worst case, as a budgeted agent sets
        sent += 1
    return sent


def test_a_run_budget_stops_a_runaway_loop_before_its_next_call(traced, oai, fake):
    fake.clear()
    sent = 0
    with pytest.raises(BudgetExceededError) as info, mltrack_otel.agent("looper", cost_limit="0.004"):
        for _ in range(50):
            ask(oai, "think again " * 20, max_tokens=64)
            sent += 1
    assert 0 < sent < 50
    assert len(fake.requests) == sent  # the refused call never reached the provider
    spent = mltrack_otel.totals(agent="looper")
    assert spent.calls == sent and spent.cost_usd <= Decimal("0.004")
    assert info.value.scope == "agent"
    (root,) = agent_span(traced, "looper")
    assert root.attributes["error.type"].endswith("BudgetExceededError")
    # The next run of the same agent has a fresh budget: the budget is per run.
    with mltrack_otel.agent("looper", cost_limit="0.004"):
        ask(oai, max_tokens=64)


def test_configured_budgets_apply_per_run_by_name_and_the_star_entry(isolated_env, fake, oai):
    fake.clear()
    ledger.LEDGER.reset()
    mltrack_otel.configure(
        exporters=["memory"],
        agents={"researcher": {"llm_token_limit": 400}, "*": {"llm_cost_limit": 1}},
    )
    instrument(["openai"])
    try:
        with pytest.raises(BudgetExceededError) as info, mltrack_otel.agent("researcher"):
            _loop(oai)
        assert info.value.kind == "token"
        assert mltrack_otel.totals(agent="researcher").total_tokens <= 400
        with mltrack_otel.agent("writer"):  # the "*" entry: 1 USD, far away
            _loop(oai, 3)
        assert mltrack_otel.totals(agent="writer").calls == 3
        # Code wins over configuration.
        with mltrack_otel.agent("researcher", token_limit=100_000):
            _loop(oai, 3)
    finally:
        uninstrument(["openai"])
        provider.shutdown()
        ledger.LEDGER.reset()
        config.set_current(None)


def test_agent_settings_are_validated():
    with pytest.raises(ConfigError, match="agents"):
        config.load_settings(env={}, agents={"x": {"llm_cost_limit": -1}})
    with pytest.raises(ConfigError, match="agents"):
        config.load_settings(env={}, agents={"x": {"cost_limit": 1}})
    settings = config.load_settings(env={"MLTRACK_AGENTS": '{"planner": {"llm_cost_limit": 0.5}}'})
    assert settings.agents["planner"].llm_cost_limit == Decimal("0.5")
    with pytest.raises(ValueError, match="name"):
        with mltrack_otel.agent(""):
            pass
    with pytest.raises(ValueError, match="cost_limit"):
        with mltrack_otel.agent("x", cost_limit=-1):
            pass


def test_totals_refuses_two_keys():
    with pytest.raises(ValueError, match="at most one"):
        mltrack_otel.totals(user="u", agent="a")


# -- report --by agent from a real MLflow store --------------------------------------------------------------------

EXPERIMENT = "agents"


@pytest.fixture(scope="module")
def store(tmp_path_factory, fake):
    pytest.importorskip("mlflow")
    import openai

    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    store = tmp_path_factory.mktemp("store")
    with mlflow_store(store, EXPERIMENT, ("openai",), exporters=["mlflow", "memory"], cloud_hosts=["127.0.0.1"]) as uri:
        rt = provider.runtime()
        with mltrack_otel.agent("supervisor"):
            ask(client, "route")
            with mltrack_otel.agent("researcher"):
                ask(client, "search for it")
                ask(client, "search for it again")
        ask(client, "no agent")
        live = {a: mltrack_otel.totals(agent=a) for a in ("supervisor", "researcher")}
        exported = counted(rt)
    return uri, exported, live


def test_report_by_agent_matches_the_live_per_agent_totals(store, capsys):
    uri, exported, live = store
    assert (
        cli.main(["report", "--tracking-uri", uri, "--experiment", EXPERIMENT, "--by", "agent", "--format", "json"])
        == 0
    )
    rows = {row["agent"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"supervisor", "researcher", "-"}
    assert rows["-"]["calls"] == 1
    for name, totals in live.items():
        assert (rows[name]["calls"], Decimal(rows[name]["cost_usd"])) == (totals.calls, totals.cost_usd)
    assert sum(r["calls"] for r in rows.values()) == len(exported) == 4


def test_an_agent_or_tool_span_that_sums_usage_is_not_a_model_call(pipeline):
    """Another instrumentation's agent span reporting its calls' summed usage (Pydantic AI with plain usage names,
    OpenAI Agents exporters) is neither counted nor priced nor flagged unpriced: its calls are counted themselves."""
    from opentelemetry import trace

    tracer = trace.get_tracer("other")
    usage = {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20}
    with tracer.start_as_current_span(
        "invoke_agent other", attributes={"gen_ai.operation.name": "invoke_agent", **usage}
    ):
        with tracer.start_as_current_span(
            "execute_tool t", attributes={"gen_ai.operation.name": "execute_tool", **usage}
        ):
            pass
    model = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
    with tracer.start_as_current_span("invoke_agent alone", attributes={"gen_ai.operation.name": "invoke_agent"}):
        with tracer.start_as_current_span("chat gpt-4o", attributes={**model, **usage}):
            pass
    by_name = {s.name: s.attributes for s in spans(pipeline)}
    for name in ("invoke_agent other", "execute_tool t"):
        assert semconv.LLM_TOKENS_TOTAL not in by_name[name] and semconv.MLTRACK_COST_UNPRICED not in by_name[name]
    assert by_name["chat gpt-4o"][semconv.MLTRACK_USAGE_COUNTED] is True
    assert mltrack_otel.totals().calls == 1 and mltrack_otel.totals().total_tokens == 120


def test_a_remote_agents_client_span_with_usage_is_counted(pipeline):
    """A remote agent (CLIENT invoke_agent: Bedrock Agents, Assistants) reports usage of model calls made out of
    sight: its span is the only record of them, so it counts, once, and a counted call below it keeps it once."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    tracer = trace.get_tracer("other")
    remote = {"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai"}
    remote["gen_ai.request.model"] = "gpt-4o"
    usage = {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20}
    with tracer.start_as_current_span("invoke_agent remote", kind=SpanKind.CLIENT, attributes={**remote, **usage}):
        pass
    with tracer.start_as_current_span("invoke_agent remote2", kind=SpanKind.CLIENT, attributes={**remote, **usage}):
        model = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
        with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes={**model, **usage}):
            pass
    by_name = {s.name: s.attributes for s in spans(pipeline)}
    assert by_name["invoke_agent remote"][semconv.MLTRACK_USAGE_COUNTED] is True
    assert by_name["chat gpt-4o"][semconv.MLTRACK_USAGE_COUNTED] is True
    assert by_name["invoke_agent remote2"][semconv.MLTRACK_USAGE_COUNTED] is False
    assert mltrack_otel.totals().calls == 2 and mltrack_otel.totals().total_tokens == 240
