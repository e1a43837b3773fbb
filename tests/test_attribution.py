"""Attribution: `mltrack_otel.attributes(...)` and `track_llm_context(user=, tags=)` put user.id, session.id and
mltrack.tag.<key> on every model call beneath them (real OpenAI SDK calls against the fake provider); the ledger
keeps exact totals per user and per tag value in bounded LRUs; `report --by user | tag.<key>` reads them back from a
real MLflow store; metric labels appear only when configured."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from decimal import Decimal

import pytest
from opentelemetry import trace

import mltrack_otel
from mltrack_otel import cli, config, ledger, provider, semconv
from mltrack_otel.errors import ConfigError
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.pricing import Pricer, Usage
from tests.instr_fixtures import mlflow_store
from tests.test_metrics import points

USER, SESSION, FEATURE, TIER = "user.id", "session.id", "mltrack.tag.feature", "mltrack.tag.tier"
ATTRIBUTION = (USER, SESSION, FEATURE, TIER)


@pytest.fixture
def traced(pipeline, fake):
    """OpenAI instrumented into the configured pipeline (memory exporter, metrics reader)."""
    fake.clear()
    instrument(["openai"])
    yield pipeline
    uninstrument(["openai"])


def ask(client, text: str = "hello") -> None:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])


def calls(rt) -> list:
    """The counted model-call spans, oldest first."""
    finished = rt.memory_exporter.get_finished_spans()
    return [s for s in finished if (s.attributes or {}).get(semconv.MLTRACK_USAGE_COUNTED) is True]


def attribution(span) -> dict:
    return {k: v for k, v in (span.attributes or {}).items() if k in ATTRIBUTION or k.startswith("mltrack.tag.")}


def exact_cost(span) -> Decimal:
    """The exact price of a counted span's usage, recomputed (the span's float is a rounding of it)."""
    a = span.attributes
    usage = Usage(a[semconv.LLM_TOKENS_PROMPT], a[semconv.LLM_TOKENS_COMPLETION])
    return Pricer().price("openai", a.get("gen_ai.response.model") or a["gen_ai.request.model"], usage).total


# -- the attributes reach every call beneath, and only those ------------------------------------------------------


def test_calls_inside_carry_the_attribution_and_calls_outside_do_not(traced, oai):
    ask(oai, "before")
    with mltrack_otel.attributes(user_id="u1", session_id="s1", feature="search"):
        ask(oai, "inside")
    ask(oai, "after")
    before, inside, after = calls(traced)
    assert attribution(inside) == {USER: "u1", SESSION: "s1", FEATURE: "search"}
    assert attribution(before) == {} and attribution(after) == {}


def test_nested_blocks_merge_and_the_inner_value_wins(traced, oai):
    with mltrack_otel.attributes(user_id="u1", feature="search", tier="pro"):
        with mltrack_otel.attributes(feature="summary", region="eu"):
            ask(oai, "inner")
        ask(oai, "outer")
    inner, outer = calls(traced)
    assert attribution(inner) == {USER: "u1", FEATURE: "summary", TIER: "pro", "mltrack.tag.region": "eu"}
    assert attribution(outer) == {USER: "u1", FEATURE: "search", TIER: "pro"}


def test_track_llm_context_attributes_its_calls_and_its_own_span(traced, oai):
    with mltrack_otel.attributes(session_id="s9", feature="outer"):
        with mltrack_otel.track_llm_context("checkout", user="u7", tags={"feature": "checkout", "tier": 3}) as t:
            ask(oai, "in the context")
            t.log_prompt_response("q", "a", model="gpt-4o", provider="openai", token_usage={"prompt_tokens": 5})
    instrumented, logged = calls(traced)
    expected = {USER: "u7", SESSION: "s9", FEATURE: "checkout", TIER: 3}  # values keep their type
    assert attribution(instrumented) == expected
    assert attribution(logged) == expected  # calls logged by hand are attributed too
    scope = next(s for s in traced.memory_exporter.get_finished_spans() if s.name == "checkout")
    assert attribution(scope) == {USER: "u7", FEATURE: "checkout", TIER: 3}
    assert scope.attributes[semconv.MLTRACK_TAGS] == ("feature=checkout", "tier=3")  # as before


def test_track_decorator_tags_attribute_the_calls_inside(traced, oai):
    @mltrack_otel.track(name="job", tags={"feature": "nightly"})
    def job() -> None:
        ask(oai)

    job()
    ask(oai)
    inside, outside = calls(traced)
    assert attribution(inside) == {FEATURE: "nightly"} and attribution(outside) == {}


def test_attributes_decorates_sync_and_async_functions(traced, oai, aoai):
    @mltrack_otel.attributes(user_id="sync-user")
    def sync_call() -> None:
        ask(oai)

    @mltrack_otel.attributes(user_id="async-user")
    async def async_call() -> None:
        await aoai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    sync_call()
    asyncio.run(async_call())
    ask(oai)
    users = [s.attributes.get(USER) for s in calls(traced)]
    assert users == ["sync-user", "async-user", None]

    with pytest.raises(TypeError, match="generator function"):

        @mltrack_otel.attributes(user_id="u")
        def stream():
            yield ask(oai)


def test_threads_and_tasks_keep_their_own_attribution(traced, oai, aoai):
    barrier = threading.Barrier(4)

    def worker(user: str) -> None:
        with mltrack_otel.attributes(user_id=user):
            barrier.wait(timeout=30)  # all four blocks open at once
            ask(oai, f"from {user}")

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # A thread started inside a block carries it when it runs in a copy of the block's context.
    with mltrack_otel.attributes(user_id="parent"):
        copied = threading.Thread(target=contextvars.copy_context().run, args=(ask, oai, "copied"))
    copied.start()
    copied.join(timeout=60)

    async def task(user: str) -> None:
        with mltrack_otel.attributes(user_id=user):
            await asyncio.sleep(0)  # the tasks interleave
            await aoai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": user}])

    async def main() -> None:
        await asyncio.gather(*(task(f"a{i}") for i in range(4)))

    asyncio.run(main())
    by_prompt = {}
    for span in calls(traced):
        text = json.loads(span.attributes["gen_ai.input.messages"])[0]["parts"][0]["content"]
        by_prompt[text] = span.attributes.get(USER)
    assert {f"from t{i}": f"t{i}" for i in range(4)}.items() <= by_prompt.items()
    assert {f"a{i}": f"a{i}" for i in range(4)}.items() <= by_prompt.items()
    assert by_prompt["copied"] == "parent"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"Feature": "x"}, "tag key 'Feature' is not allowed"),
        ({"feature": None}, "must be a str, int, float or bool, not NoneType"),
        ({"feature": ["a"]}, "must be a str, int, float or bool, not list"),
        ({"feature": float("nan")}, "finite number"),
        ({"feature": "x" * 300}, "at most 256"),
        ({"user_id": ""}, "user_id must be a non-empty string"),
        ({"session_id": 1.5}, "session_id must be a non-empty string"),
    ],
)
def test_bad_attribution_is_refused_with_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mltrack_otel.attributes(**kwargs)


def test_track_llm_context_refuses_bad_tags_before_it_starts(traced):
    with pytest.raises(ValueError, match="tag key 'team name' is not allowed"):
        with mltrack_otel.track_llm_context("bad", tags={"team name": "x"}):
            pass
    assert traced.memory_exporter.get_finished_spans() == ()  # no span was started
    with mltrack_otel.attributes(user_id=42) as block:  # an int id is its decimal text
        assert block.values == {USER: "42"}


# -- totals per user and per tag -----------------------------------------------------------------------------------


def test_user_and_tag_totals_are_the_exact_sums_of_their_counted_calls(traced, oai):
    tracer = trace.get_tracer("framework")
    wrapper = {  # a framework span describing the same call: the call is counted once, on the OpenAI span
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 999,
        "gen_ai.usage.output_tokens": 999,
    }
    with mltrack_otel.attributes(user_id="alice", feature="search"):
        ask(oai, "one")
        with tracer.start_as_current_span("chat gpt-4o [framework]", attributes=wrapper):
            ask(oai, "two words")
        with mltrack_otel.attributes(feature="summary"):
            ask(oai, "three words here")
    with mltrack_otel.track_llm_context("ctx", user="bob", tags={"feature": "search"}):
        ask(oai, "four words here now")
    ask(oai, "nobody's")

    spans = calls(traced)
    assert len(spans) == 5  # the wrapper is not counted
    costs = [exact_cost(s) for s in spans]
    assert len(set(costs)) > 1  # different prompts, different costs: a wrong grouping could not add up by chance

    def expected(*indices: int) -> tuple[int, Decimal]:
        return len(indices), sum((costs[i] for i in indices), Decimal(0))

    def got(t: ledger.Totals) -> tuple[int, Decimal]:
        return t.calls, t.cost_usd

    assert got(mltrack_otel.totals(user="alice")) == expected(0, 1, 2)
    assert got(mltrack_otel.totals(user="bob")) == expected(3)
    assert got(mltrack_otel.totals(tag=("feature", "search"))) == expected(0, 1, 3)
    assert got(mltrack_otel.totals(tag="feature=summary")) == expected(2)
    assert got(mltrack_otel.totals(user="carol")) == (0, Decimal(0))
    alice = mltrack_otel.totals(user="alice")
    assert alice.prompt_tokens == sum(s.attributes[semconv.LLM_TOKENS_PROMPT] for s in spans[:3])
    assert mltrack_otel.totals().cost_usd == sum(costs, Decimal(0))  # the process total is unchanged by attribution
    assert set(ledger.LEDGER.users()) == {"alice", "bob"}
    assert set(ledger.LEDGER.tags("feature")) == {("feature", "search"), ("feature", "summary")}


def test_tag_values_of_any_type_are_keyed_by_their_text(traced, oai):
    with mltrack_otel.attributes(tier=3, beta=True, ratio=0.5):
        ask(oai)
    assert mltrack_otel.totals(tag=("tier", 3)).calls == 1
    assert mltrack_otel.totals(tag="tier=3").calls == 1
    assert mltrack_otel.totals(tag=("beta", True)).calls == 1
    assert mltrack_otel.totals(tag="beta=true").calls == 1
    assert mltrack_otel.totals(tag=("ratio", 0.5)).calls == 1
    with pytest.raises(ValueError, match="at most one"):
        mltrack_otel.totals(user="u", tag="a=b")
    with pytest.raises(ValueError, match="takes"):
        mltrack_otel.totals(tag="no-equals-sign")


def test_the_lru_bounds_forget_the_least_recently_counted(traced, oai):
    provider.configure(exporters=["memory"], max_users=2, max_tag_values=2)
    assert (ledger.LEDGER.max_users, ledger.LEDGER.max_tag_values) == (2, 2)
    for user, feature in (("u1", "f1"), ("u2", "f2"), ("u1", "f1"), ("u3", "f3")):
        with mltrack_otel.attributes(user_id=user, feature=feature):
            ask(oai)
    # u2 / f2 was the least recently counted when u3 / f3 came: forgotten; u1 was refreshed by its second call.
    assert list(ledger.LEDGER.users()) == ["u1", "u3"]
    assert mltrack_otel.totals(user="u1").calls == 2
    assert mltrack_otel.totals(user="u2").calls == 0
    assert list(ledger.LEDGER.tags()) == [("feature", "f1"), ("feature", "f3")]
    assert mltrack_otel.totals().calls == 4  # forgetting a user forgets nothing else


# -- metric labels: only what is configured -------------------------------------------------------------------------


def _labels(rt, oai) -> list[dict]:
    with mltrack_otel.attributes(user_id="u1", session_id="s1", feature="search", tier="pro"):
        ask(oai)
    assert rt.processor.force_flush(5000)
    data = points(rt.metric_reader)
    return [dict(p.attributes) for name in ("mltrack.client.cost", "gen_ai.client.token.usage") for p in data[name]]


def test_no_attribution_label_unless_configured(traced, oai):
    labels = _labels(provider.runtime(), oai)
    assert labels and all(not set(ATTRIBUTION) & set(point) for point in labels)
    assert all(not any(k.startswith("mltrack.tag.") for k in point) for point in labels)


def test_configured_attributes_become_metric_labels_and_no_others(traced, oai):
    provider.configure(exporters=["memory"], metric_labels=["user.id", "mltrack.tag.feature"])
    labels = _labels(provider.runtime(), oai)
    assert labels
    for point in labels:
        assert point[USER] == "u1" and point[FEATURE] == "search"
        assert SESSION not in point and TIER not in point


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["User Id"], "is not an attribute name"),
        (["gen_ai.input.messages"], "cannot be a metric label"),
        (["llm.cost.total"], "cannot be a metric label"),
        (["user.id", "user.id"], "named twice"),
    ],
)
def test_metric_labels_are_validated(labels, message):
    with pytest.raises(ConfigError, match=message) as raised:
        config.load_settings(env={}, metric_labels=labels)
    assert "metric_labels" in str(raised.value)


def test_metric_labels_from_the_file_and_the_environment(isolated_env):
    (isolated_env / ".mltrack.yml").write_text("metric_labels: [user.id, mltrack.tag.feature]\nmax_users: 5\n")
    settings = config.load_settings(env={})
    assert settings.metric_labels == ("user.id", "mltrack.tag.feature") and settings.max_users == 5
    from_env = config.load_settings(env={"MLTRACK_METRIC_LABELS": "session.id, mltrack.tag.tenant"})
    assert from_env.metric_labels == ("session.id", "mltrack.tag.tenant")


# -- report --by user / --by tag.<key> from a real MLflow store ------------------------------------------------------

EXPERIMENT = "attribution"


@pytest.fixture(scope="module")
def store(tmp_path_factory, fake):
    """A real sqlite MLflow store holding attributed OpenAI calls, and the counted spans as they were exported."""
    pytest.importorskip("mlflow")
    import openai

    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    store = tmp_path_factory.mktemp("store")
    with mlflow_store(store, EXPERIMENT, ("openai",), exporters=["mlflow", "memory"], cloud_hosts=["127.0.0.1"]) as uri:
        rt = provider.runtime()
        with mltrack_otel.attributes(user_id="alice", feature="search"):
            ask(client, "a")
            ask(client, "a longer question")
        with mltrack_otel.track_llm_context("summarise", user="bob", tags={"feature": "summary"}):
            ask(client, "an even longer question than that")
        with mltrack_otel.attributes(user_id="bob", feature="search"):
            ask(client, "b")
        ask(client, "nobody's call, with no tag")
        spans = calls(rt)
        live = {u: mltrack_otel.totals(user=u) for u in ("alice", "bob")}
    return uri, spans, live


def report_rows(uri: str, by: str, capsys) -> dict[str, dict]:
    assert cli.main(["report", "--tracking-uri", uri, "--experiment", EXPERIMENT, "--by", by, "--format", "json"]) == 0
    return {row[by]: row for row in json.loads(capsys.readouterr().out)}


def _sums(spans, key) -> dict[str, tuple[int, int, Decimal]]:
    out: dict[str, tuple[int, int, Decimal]] = {}
    for span in spans:
        group = key(span.attributes)
        calls_, tokens, cost = out.get(group, (0, 0, Decimal(0)))
        out[group] = (calls_ + 1, tokens + span.attributes[semconv.LLM_TOKENS_TOTAL], cost + exact_cost(span))
    return out


def test_report_by_user_matches_the_spans_and_the_live_totals(store, capsys):
    uri, spans, live = store
    rows = report_rows(uri, "user", capsys)
    expected = _sums(spans, lambda a: a.get(USER, "-"))
    assert set(rows) == {"alice", "bob", "-"}
    for user, (n, tokens, cost) in expected.items():
        assert (rows[user]["calls"], rows[user]["total_tokens"], Decimal(rows[user]["cost_usd"])) == (n, tokens, cost)
    for user, totals in live.items():  # what the ledger counted live is what the store reads back
        assert (rows[user]["calls"], Decimal(rows[user]["cost_usd"])) == (totals.calls, totals.cost_usd)


def test_report_by_tag_matches_the_spans(store, capsys):
    uri, spans, _ = store
    rows = report_rows(uri, "tag.feature", capsys)
    expected = _sums(spans, lambda a: a.get(FEATURE, "-"))
    assert set(rows) == {"search", "summary", "-"}
    assert rows["search"]["calls"] == 3
    for feature, (n, tokens, cost) in expected.items():
        row = rows[feature]
        assert (row["calls"], row["total_tokens"], Decimal(row["cost_usd"])) == (n, tokens, cost)
    # A tag no call carries: every call in the "-" row.
    assert report_rows(uri, "tag.tenant", capsys)["-"]["calls"] == len(spans)


def test_report_table_by_user_names_the_grouping(store, capsys):
    uri, _, _ = store
    assert cli.main(["report", "--tracking-uri", uri, "--experiment", EXPERIMENT, "--by", "user"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[0] == "user"
    assert any(line.startswith("alice ") for line in out.splitlines())


@pytest.mark.parametrize("by", ["tenant", "tag.", "tag.Bad Key", "users"])
def test_report_refuses_an_unknown_grouping(by, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["report", "--by", by])
    assert exited.value.code == 2
    assert "use model, provider, day, conversation, user, agent or tag.<key>" in capsys.readouterr().err


def test_tags_are_still_counted_once_too_many_keys_were_seen(traced, oai, monkeypatch):
    from mltrack_otel import attribution as module

    # The processor looks up the tag keys it knows; past the bound it scans the span's attributes instead.
    monkeypatch.setattr(module, "_MAX_KNOWN_KEYS", 2)
    monkeypatch.setattr(module, "tag_attributes", ())
    monkeypatch.setattr(module, "_known", frozenset())
    monkeypatch.setattr(module, "scan_for_tags", False)
    with mltrack_otel.attributes(alpha="a", beta="b", gamma="c"):
        ask(oai)
    assert module.scan_for_tags
    (span,) = calls(traced)
    cost = exact_cost(span)
    for tag in ("alpha=a", "beta=b", "gamma=c"):
        assert (mltrack_otel.totals(tag=tag).calls, mltrack_otel.totals(tag=tag).cost_usd) == (1, cost)


def test_model_calls_of_other_instrumentation_are_attributed_too(traced):
    """A span another instrumentation starts for a model call gets the block's attributes (its own values win);
    a span that is not a model call gets none."""
    tracer = trace.get_tracer("other-instrumentation")
    foreign = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 10,
    }
    with mltrack_otel.attributes(user_id="u1", feature="search"):
        with tracer.start_as_current_span("db query"):
            pass
        with tracer.start_as_current_span("chat gpt-4o", attributes=foreign):
            pass
        with tracer.start_as_current_span("chat gpt-4o", attributes={**foreign, "user.id": "own"}):
            pass
    db, call, own = traced.memory_exporter.get_finished_spans()
    assert attribution(db) == {}
    assert attribution(call) == {USER: "u1", FEATURE: "search"}
    assert attribution(own) == {USER: "own", FEATURE: "search"}
    assert mltrack_otel.totals(user="u1").cost_usd == exact_cost(call)
    assert mltrack_otel.totals(tag="feature=search").calls == 2


def test_a_stream_opened_in_the_block_and_read_after_it_is_attributed_once(traced, oai):
    with mltrack_otel.attributes(user_id="streamer"):
        stream = oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "stream"}], stream=True
        )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text
    (span,) = calls(traced)
    assert span.attributes[USER] == "streamer"
    assert mltrack_otel.totals(user="streamer").calls == 1
    assert mltrack_otel.totals(user="streamer").cost_usd == exact_cost(span)


def test_an_mlflow_autolog_span_counted_elsewhere_is_attributed(settings):
    """MLflow keeps its autolog spans on a provider of its own; the processor accounts for them before they end
    (account_elsewhere), with the attribution current at the call."""
    from opentelemetry.sdk.trace import TracerProvider

    from mltrack_otel.processor import CostSpanProcessor

    own = ledger.Ledger()
    processor = CostSpanProcessor(ledger=own, pricer=Pricer())
    usage = json.dumps({"input_tokens": 5, "output_tokens": 30, "total_tokens": 35})
    autolog = {"mlflow.llm.model": '"gpt-4o"', "mlflow.message.format": '"openai"', "mlflow.chat.tokenUsage": usage}
    span = TracerProvider().get_tracer("mlflow").start_span("Completions", attributes=autolog)
    with mltrack_otel.attributes(user_id="u-mlflow", feature="autolog"):
        out = processor.account_elsewhere(span, count=True)
    span.end()
    assert out[USER] == "u-mlflow" and out[FEATURE] == "autolog"
    expected = Pricer().price("openai", "gpt-4o", Usage(5, 30)).total
    assert (own.user_totals("u-mlflow").calls, own.user_totals("u-mlflow").cost_usd) == (1, expected)
    assert own.tag_totals("feature", "autolog").calls == 1
