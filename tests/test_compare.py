"""`mltrack-otel compare`: real OpenAI SDK calls (against the fake provider) under two prompt versions and two A/B
experiments, exported by configure() into a real sqlite MLflow store, compared through the CLI; the figures checked
against the spans the calls made; the bootstrap interval checked on samples whose true difference is known."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import statistics
from collections import defaultdict
from typing import Any

import pytest

import mltrack_otel
from mltrack_otel import call_context, cli, provider, semconv
from mltrack_otel import compare as comparing
from mltrack_otel.pricing import Pricer, Usage
from tests.instr_fixtures import mlflow_store
from tests.traced import FAKE

pytest.importorskip("mlflow")

EXPERIMENT = "ab-tests"
PROMPT_NAME, PROMPT_VERSION = "gen_ai.prompt.name", "gen_ai.prompt.version"
V1_CALLS = V2_CALLS = 30
V2_FAILURES = 2
OUTPUT_TOKENS = 30  # the fake provider's answer: 30 words, one token each (fake_provider.py docstring)
SLOW_TOKENS = 10
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")


def message(words: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(WORDS[i % len(WORDS)] for i in range(words))}]


def input_price_per_token() -> float:
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    return float(Pricer(cloud_hosts=FAKE).price("openai", "gpt-4o-mini-2024-07-18", usage).total) / 1_000_000


@pytest.fixture(scope="module")
def store(tmp_path_factory, fake) -> dict[str, Any]:
    """A sqlite MLflow store written by configure(exporters=["mlflow", "memory"]) + instrument(): the memory
    exporter keeps the same spans for the expected figures. Made once: an MLflow database takes seconds.

    - prompt greeting v1: 30 calls of 1..10 words; v2: 30 calls of 11..20 words (10 more prompt tokens on
      average, the same 30 output tokens), and 2 calls that fail with a 500 before any usage comes back;
    - prompt other v1: 5 calls;
    - A/B "model-choice" (sticky per user): gpt-4o-mini or acme-9000 (no known price);
    - A/B "speed": 16 calls split between "fast" and "slow" (the fake's slow scenario sleeps 20 ms per output token
      before it answers: 10 tokens, at least 0.2 s).
    """
    import openai

    folder = tmp_path_factory.mktemp("compare-store")
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    rng = random.Random(14)
    with mlflow_store(folder, EXPERIMENT, ("openai",), exporters=["mlflow", "memory"], cloud_hosts=list(FAKE)) as uri:
        memory = provider.runtime().memory_exporter

        def chat(words: int, model: str = "gpt-4o-mini", **kwargs: Any) -> None:
            client.chat.completions.create(model=model, messages=message(words), **kwargs)

        for version, low, calls in (("v1", 1, V1_CALLS), ("v2", 11, V2_CALLS)):
            with call_context.attached({PROMPT_NAME: "greeting", PROMPT_VERSION: version}):
                for _ in range(calls):
                    chat(rng.randint(low, low + 9))
        with call_context.attached({PROMPT_NAME: "greeting", PROMPT_VERSION: "v2"}):
            for _ in range(V2_FAILURES):
                with pytest.raises(openai.InternalServerError):
                    chat(5, extra_headers={"x-fake-scenario": "error-500"})
        with call_context.attached({PROMPT_NAME: "other", PROMPT_VERSION: "v1"}):
            for _ in range(5):
                chat(4)
        for user in range(24):
            with mltrack_otel.ab(
                "model-choice", {"mini": "gpt-4o-mini", "custom": "acme-9000"}, key=f"user-{user}"
            ) as choice:
                chat(6, model=choice.value)
        for i in range(16):
            with mltrack_otel.ab("speed", ["fast", "slow"], key=f"s{i}") as choice:
                slow = {"extra_headers": {"x-fake-scenario": "slow"}} if choice.name == "slow" else {}
                chat(6, max_tokens=SLOW_TOKENS, **slow)
        # A/B "wrapped": 3 calls that fail, one inside a framework-like span that fails with it: 3 calls.
        tracer = provider.runtime().tracer_provider.get_tracer("a-framework")
        for i in range(3):
            with mltrack_otel.ab("wrapped", ["only"]) as choice:
                with pytest.raises(openai.RateLimitError):
                    if i:
                        chat(5, extra_headers={"x-fake-scenario": "error-429"})
                        continue
                    with tracer.start_as_current_span(
                        "chat wrapper", attributes={"gen_ai.operation.name": "chat", **choice.attributes}
                    ) as wrapper:
                        wrapper.set_attribute("error.type", "RateLimitError")
                        chat(5, extra_headers={"x-fake-scenario": "error-429"})
        spans = list(memory.get_finished_spans())
    return {"uri": uri, "spans": spans, "folder": folder}


def run(store: dict[str, Any], capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["compare", "--tracking-uri", store["uri"], "--experiment", EXPERIMENT, *args])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(store: dict[str, Any], capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = run(store, capsys, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def expected(spans: list[Any], key: str, where: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The figures computed straight from the spans the calls made (not through compare's own helpers)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        a = dict(span.attributes or {})
        counted = a.get(semconv.MLTRACK_USAGE_COUNTED) is True
        failed = semconv.MLTRACK_USAGE_COUNTED not in a and "error.type" in a and "gen_ai.operation.name" in a
        if (counted or failed) and all(a.get(k) == v for k, v in where.items()) and key in a:
            groups[a[key]].append(a)
    figures = {}
    for variant, calls in groups.items():
        counted = [a for a in calls if a.get(semconv.MLTRACK_USAGE_COUNTED)]
        costs = [a[semconv.LLM_COST_TOTAL] for a in calls if semconv.LLM_COST_TOTAL in a]
        latencies = [a[semconv.LLM_LATENCY] for a in calls if "error.type" not in a]
        figures[variant] = {
            "calls": len(calls),
            "errors": sum("error.type" in a for a in calls),
            "prompt_tokens": sum(a[semconv.LLM_TOKENS_PROMPT] for a in counted),
            "completion_tokens": sum(a[semconv.LLM_TOKENS_COMPLETION] for a in counted),
            "unpriced_calls": sum(a.get(semconv.MLTRACK_COST_UNPRICED) is True for a in counted),
            "cost_mean": statistics.fmean(costs) if costs else None,
            "cost_p50": statistics.median(costs) if costs else None,
            "cost_p95": statistics.quantiles(costs, n=20, method="inclusive")[18] if len(costs) > 1 else None,
            "latency_p50": statistics.median(latencies),
            "latency_p95": statistics.quantiles(latencies, n=20, method="inclusive")[18],
        }
    return figures


def close(value: float | None, want: float | None) -> bool:
    return value is None if want is None else value == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_prompt_versions_per_variant_figures_match_the_spans(store, capsys):
    result = as_json(store, capsys, "--by", "prompt.version", "--prompt", "greeting")
    assert (result["by"], result["attribute"], result["baseline"]) == ("prompt.version", PROMPT_VERSION, "v1")
    want = expected(store["spans"], PROMPT_VERSION, {PROMPT_NAME: "greeting"})
    rows = {row["variant"]: row for row in result["variants"]}
    assert list(rows) == ["v1", "v2"]
    assert rows["v1"]["calls"] == V1_CALLS and rows["v2"]["calls"] == V2_CALLS + V2_FAILURES
    for variant, row in rows.items():
        w = want[variant]
        assert (row["calls"], row["errors"], row["unpriced_calls"]) == (w["calls"], w["errors"], w["unpriced_calls"])
        assert (row["prompt_tokens"], row["completion_tokens"]) == (w["prompt_tokens"], w["completion_tokens"])
        assert close(row["cost_per_call_mean"], w["cost_mean"])
        assert close(row["cost_per_call_p50"], w["cost_p50"])
        assert close(row["cost_per_call_p95"], w["cost_p95"])
        assert close(row["latency_p50_s"], w["latency_p50"]) and close(row["latency_p95_s"], w["latency_p95"])
    # The fake's formula: 3 + words prompt tokens, 30 output tokens, for every call that succeeded.
    assert rows["v1"]["completion_tokens"] == OUTPUT_TOKENS * V1_CALLS
    assert rows["v2"]["error_rate"] == pytest.approx(V2_FAILURES / (V2_CALLS + V2_FAILURES))
    assert rows["v2"]["priced_calls"] == V2_CALLS  # the failures have no cost, and are not unpriced either
    assert rows["v1"]["unpriced_calls"] == rows["v2"]["unpriced_calls"] == 0


def test_the_cost_difference_and_its_interval_contain_the_true_difference(store, capsys):
    result = as_json(store, capsys, "--by", "prompt.version", "--prompt", "greeting")
    diffs = {d["metric"]: d for d in result["differences"]}
    assert set(diffs) == {"cost_per_call", "latency_p50", "error_rate"}
    cost = diffs["cost_per_call"]
    assert (cost["variant"], cost["baseline"]) == ("v2", "v1")
    rows = {row["variant"]: row for row in result["variants"]}
    assert close(cost["difference"], rows["v2"]["cost_per_call_mean"] - rows["v1"]["cost_per_call_mean"])
    # v2's messages are drawn with exactly 10 more words on average: 10 more input tokens per call.
    true_difference = 10 * input_price_per_token()
    assert cost["ci_low"] <= true_difference <= cost["ci_high"]
    assert cost["ci_low"] > 0 and cost["significant"] is True
    errors = diffs["error_rate"]
    assert close(errors["difference"], V2_FAILURES / (V2_CALLS + V2_FAILURES))
    assert errors["ci_low"] <= errors["difference"] <= errors["ci_high"]


def test_the_same_seed_gives_the_same_interval_and_another_seed_moves_it(store, capsys):
    def interval(*args: str) -> tuple[float, float]:
        result = as_json(store, capsys, "--by", "prompt.version", "--prompt", "greeting", *args)
        cost = next(d for d in result["differences"] if d["metric"] == "cost_per_call")
        return cost["ci_low"], cost["ci_high"]

    assert interval("--seed", "3") == interval("--seed", "3")
    assert interval("--seed", "3") != interval("--seed", "4")
    assert (
        as_json(store, capsys, "--by", "prompt.version", "--prompt", "greeting", "--resamples", "500")["resamples"]
        == 500
    )


def test_a_sleep_slower_variant_differs_in_latency_and_not_in_cost(store, capsys):
    result = as_json(store, capsys, "--by", "variant", "--ab", "speed", "--baseline", "fast")
    assert [row["variant"] for row in result["variants"]] == ["fast", "slow"]
    diffs = {d["metric"]: d for d in result["differences"]}
    rows = {row["variant"]: row for row in result["variants"]}
    # The fake sleeps 20 ms per output token before answering a "slow" call: a floor, whatever the machine's load.
    assert rows["slow"]["latency_p50_s"] >= 0.02 * SLOW_TOKENS
    latency = diffs["latency_p50"]
    assert latency["difference"] == pytest.approx(rows["slow"]["latency_p50_s"] - rows["fast"]["latency_p50_s"])
    assert latency["ci_low"] > 0 and latency["significant"] is True
    cost = diffs["cost_per_call"]
    assert cost["difference"] == 0 and cost["significant"] is False  # the same tokens: the same price


def test_ab_variants_count_unpriced_calls_and_never_price_them_at_zero(store, capsys):
    result = as_json(store, capsys, "--by", "mltrack.ab.variant", "--where", "mltrack.ab.experiment=model-choice")
    want = expected(store["spans"], semconv.MLTRACK_AB_VARIANT, {semconv.MLTRACK_AB_EXPERIMENT: "model-choice"})
    rows = {row["variant"]: row for row in result["variants"]}
    assert set(rows) == {"custom", "mini"} and sum(r["calls"] for r in rows.values()) == 24
    assert rows["custom"]["unpriced_calls"] == rows["custom"]["calls"] == want["custom"]["calls"]
    assert rows["custom"]["cost_per_call_mean"] is None and rows["custom"]["priced_calls"] == 0
    assert close(rows["mini"]["cost_per_call_mean"], want["mini"]["cost_mean"])
    cost = next(d for d in result["differences"] if d["metric"] == "cost_per_call")
    assert cost["difference"] is None and cost["significant"] is None  # unknown, not a saving of 100%
    code, out, _ = run(store, capsys, "--by", "variant", "--ab", "model-choice")
    assert code == 0
    assert "no priced calls in custom" in out and "unpriced calls have no known cost (never $0)" in out


def test_a_failed_call_inside_a_failed_wrapper_is_one_call(store, capsys):
    (row,) = as_json(store, capsys, "--by", "variant", "--ab", "wrapped")["variants"]
    assert (row["variant"], row["calls"], row["errors"], row["error_rate"]) == ("only", 3, 3, 1.0)
    wrappers = [s for s in store["spans"] if s.name == "chat wrapper"]
    assert len(wrappers) == 1 and wrappers[0].status.is_ok is False  # the wrapper failed too, and is not counted
    assert row["latency_p50_s"] is None and row["cost_per_call_mean"] is None


def test_by_model_reads_the_model_that_answered(store, capsys):
    result = as_json(store, capsys, "--by", "model", "--ab", "model-choice")
    assert {row["variant"] for row in result["variants"]} == {"acme-9000", "gpt-4o-mini-2024-07-18"}
    request = as_json(store, capsys, "--by", "gen_ai.request.model", "--ab", "model-choice")
    assert {row["variant"] for row in request["variants"]} == {"acme-9000", "gpt-4o-mini"}


def test_the_table_shows_each_variant_and_says_noise_from_difference(store, capsys):
    code, out, err = run(store, capsys, "--by", "prompt.version", "--prompt", "greeting")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["prompt.version", "calls", "in/call", "out/call"]
    v1 = next(line for line in lines if line.startswith("v1 (baseline)"))
    v2 = next(line for line in lines if line.startswith("v2 "))
    assert v1.split()[2] == str(V1_CALLS) and v2.split()[1] == str(V2_CALLS + V2_FAILURES)
    assert "6.2%" in v2  # 2 errors in 32 calls
    assert "difference from v1, 95% bootstrap CI (2000 resamples, seed 0)" in out
    cost = next(line for line in lines if "cost/call" in line)
    assert cost.strip().startswith("v2") and cost.rstrip().endswith("differs")
    assert "e-" not in out  # costs in plain decimals, never exponent form


def test_mixed_prompts_are_named_and_calls_without_the_key_are_counted(store, capsys):
    code, out, _ = run(store, capsys, "--by", "prompt.version")
    assert code == 0
    assert "versions of 2 prompts are mixed (greeting, other): pick one with --prompt NAME" in out
    assert "43 model calls without gen_ai.prompt.version left out" in out  # the A/B experiments' calls


def test_csv_has_a_row_per_variant_with_its_difference(store, capsys):
    code, out, _ = run(store, capsys, "--by", "prompt.version", "--prompt", "greeting", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["prompt.version"] for r in rows] == ["v1", "v2"]
    assert rows[0]["cost_per_call_difference"] == ""  # the baseline
    assert float(rows[1]["cost_per_call_ci_low"]) > 0
    assert int(rows[1]["calls"]) == V2_CALLS + V2_FAILURES


def test_the_python_api_gives_per_call_records_for_a_plot(store):
    result = comparing.comparison(store["uri"], EXPERIMENT, by="prompt.version", where={"prompt": "greeting"})
    assert [s.variant for s in result.summaries] == ["v1", "v2"]
    assert len(result.records) == V1_CALLS + V2_CALLS + V2_FAILURES
    failed = [r for r in result.records if not r.counted]
    assert len(failed) == V2_FAILURES and all(r.cost_usd is None and r.error_type for r in failed)
    v1 = [r for r in result.records if r.variant == "v1"]
    assert all(r.cost_usd > 0 and r.latency_s > 0 and r.completion_tokens == OUTPUT_TOKENS for r in v1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "gen_ai.prompt.versoin"], "carries gen_ai.prompt.versoin: no span has that attribute (did you mean "),
        (["--by", "mltrack.tag.team"], "none of the 110 model calls carries mltrack.tag.team: no span has that"),
        (["--by", "prompt.version", "--prompt", "nope"], "no model calls with gen_ai.prompt.name=nope to compare"),
        (["--by", "prompt.version", "--baseline", "v9"], "--baseline 'v9' is not a value of gen_ai.prompt.version"),
    ],
)
def test_what_cannot_be_compared_is_said_in_one_line(store, capsys, args, message):
    code, out, err = run(store, capsys, *args)
    assert code == 1 and out == ""
    assert message in err and err.count("\n") == 1


def test_an_experiment_without_traces_and_a_missing_store_are_errors(store, capsys, tmp_path):
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=store["uri"]).create_experiment("empty")
    code = cli.main(["compare", "--tracking-uri", store["uri"], "--experiment", "empty", "--by", "model"])
    err = capsys.readouterr().err
    assert code == 1 and "no model calls in experiment 'empty'" in err
    missing = f"sqlite:///{tmp_path / 'nothing.db'}"
    assert cli.main(["compare", "--tracking-uri", missing, "--by", "model"]) == 1
    assert "no MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "nothing.db").exists()


@pytest.mark.parametrize("bad", [["--resamples", "5"], ["--where", "novalue"], []])
def test_bad_arguments_are_refused_by_the_parser(capsys, bad):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", *(["--by", "model"] if bad else []), *bad])
    assert exit_.value.code == 2


# --- the bootstrap on samples whose true difference is known ---------------------------------------------------------


def width(interval: tuple[float, float] | None) -> float:
    assert interval is not None
    return interval[1] - interval[0]


def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = random.Random(2026)
    covered, trials = 0, 120
    for trial in range(trials):
        baseline = [rng.expovariate(1 / 2.0) for _ in range(40)]  # mean 2
        variant = [rng.expovariate(1 / 2.5) for _ in range(40)]  # mean 2.5: true difference 0.5
        low, high = comparing.bootstrap_interval(baseline, variant, comparing.mean, 400, random.Random(trial))
        covered += low <= 0.5 <= high
    # The percentile interval covers a bit under 95% at n=40 on skewed data; 120 trials: binomial spread ~2.3%.
    assert 0.85 * trials <= covered <= trials


def test_more_calls_narrow_the_interval_and_more_spread_widens_it():
    rng = random.Random(7)
    few = ([rng.gauss(1.0, 0.2) for _ in range(25)], [rng.gauss(1.1, 0.2) for _ in range(25)])
    many = ([rng.gauss(1.0, 0.2) for _ in range(400)], [rng.gauss(1.1, 0.2) for _ in range(400)])
    noisy = ([rng.gauss(1.0, 0.8) for _ in range(400)], [rng.gauss(1.1, 0.8) for _ in range(400)])
    w_few = width(comparing.bootstrap_interval(*few, comparing.mean, 1000, random.Random(1)))
    w_many = width(comparing.bootstrap_interval(*many, comparing.mean, 1000, random.Random(1)))
    w_noisy = width(comparing.bootstrap_interval(*noisy, comparing.mean, 1000, random.Random(1)))
    # The width goes as spread / sqrt(n): 16x the calls -> about 1/4; 4x the spread -> about 4x.
    assert 2.5 < w_few / w_many < 6
    assert 2.5 < w_noisy / w_many < 6
    many_interval = comparing.bootstrap_interval(*many, comparing.mean, 1000, random.Random(1))
    assert many_interval[0] > 0  # 400 calls each tell 0.1 apart at spread 0.2


def test_identical_distributions_are_noise():
    rng = random.Random(11)
    a = [rng.uniform(0, 1) for _ in range(200)]
    b = [rng.uniform(0, 1) for _ in range(200)]
    low, high = comparing.bootstrap_interval(a, b, comparing.median, 1000, random.Random(2))
    assert low < 0 < high


def test_percentiles_interpolate_like_numpys_default():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert comparing.percentile(values, 50) == 3.0
    assert comparing.percentile(values, 95) == pytest.approx(4 + 0.8 * 6)
    assert comparing.percentile([5.0], 95) == 5.0
    assert comparing.percentile(values, 100) == 10.0 and comparing.percentile(values, 0) == 1.0
    assert math.isclose(
        comparing.percentile(sorted(values), 95), statistics.quantiles(values, n=20, method="inclusive")[18]
    )


def test_usd_keeps_three_significant_digits_without_exponents():
    assert comparing.usd(0.0000102) == "0.0000102"
    assert comparing.usd(0.5) == "0.500"
    assert comparing.usd(12.3) == "12.30"
    assert comparing.usd(-0.00000031, sign=True) == "-0.000000310"
    assert comparing.usd(None) == "-"


def test_a_server_that_refuses_is_one_clear_line(capsys, isolated_env):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert cli.main(["compare", "--tracking-uri", f"http://127.0.0.1:{port}", "--by", "model", "--timeout", "2"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"mltrack-otel compare: cannot read traces from http://127.0.0.1:{port}: connection refused "
        "(is the server running, and is the port right?)"
    )
