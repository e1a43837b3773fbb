"""`mltrack-otel report`: what a total contains and lacks, read back from a real embedded MLflow store; the time
filter; and a clear line, not a traceback or a hang, for a store that is missing or a server that is dead."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from mltrack_otel import cli, semconv
from mltrack_otel import report as reporting
from mltrack_otel.pricing import Pricer, Usage
from tests.instr_fixtures import mlflow_store

pytest.importorskip("mlflow")

EXPERIMENT = "accounting"


def model_call(model: str, prompt: int, completion: int, **facts: object) -> None:
    """One model-call span as an instrumentor makes it, with the usage facts (source, local) it would set."""
    attributes = {
        gen_ai.GEN_AI_OPERATION_NAME: "chat",
        gen_ai.GEN_AI_PROVIDER_NAME: "openai",
        gen_ai.GEN_AI_REQUEST_MODEL: model,
        gen_ai.GEN_AI_USAGE_INPUT_TOKENS: prompt,
        gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: completion,
        **facts,
    }
    with trace.get_tracer("report-test").start_as_current_span(f"chat {model}", attributes=attributes):
        pass


def price(model: str, prompt: int, completion: int) -> Decimal:
    # As stored: the span attribute is a float, read back through its shortest repr.
    return Decimal(str(float(Pricer().price("openai", model, Usage(prompt, completion)).total)))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real sqlite MLflow store holding: two provider-reported calls, one estimated (a stream stopped early),
    one with no known price, one served locally, and one whose usage never arrived. Made once: creating an
    MLflow database takes seconds."""
    with mlflow_store(tmp_path_factory.mktemp("store"), EXPERIMENT) as uri:
        source = semconv.MLTRACK_USAGE_SOURCE
        model_call("gpt-4o", 1000, 100, **{source: "provider"})
        model_call("gpt-4o", 400, 50, **{source: "estimated"})
        model_call("gpt-4o-mini", 3, 1)  # older spans carry no source: the provider reported their usage
        model_call("acme-9000", 10, 10, **{source: "provider"})
        model_call("my-local-llama", 20, 5, **{source: "provider", semconv.MLTRACK_COST_LOCAL: True})
        model_call("gpt-4o-mini", 0, 0, **{source: "absent"})
    return uri


def report(uri: str, *args: str) -> int:
    return cli.main(["report", "--tracking-uri", uri, "--experiment", EXPERIMENT, *args])


def test_totals_keep_the_estimated_part_apart_and_count_what_they_miss(store, capsys):
    assert report(store, "--format", "json") == 0
    rows = {row["model"]: row for row in json.loads(capsys.readouterr().out)}

    gpt4o = rows["gpt-4o"]
    assert gpt4o["calls"] == 2 and gpt4o["estimated_calls"] == 1
    assert Decimal(gpt4o["cost_usd"]) == price("gpt-4o", 1000, 100) + price("gpt-4o", 400, 50)
    assert Decimal(gpt4o["estimated_cost_usd"]) == price("gpt-4o", 400, 50)
    assert gpt4o["unpriced_calls"] == 0

    unknown = rows["acme-9000"]
    assert (unknown["calls"], unknown["unpriced_calls"], unknown["local_calls"]) == (1, 1, 0)
    assert unknown["cost_usd"] is None  # unknown, never $0
    local = rows["my-local-llama"]
    assert (local["calls"], local["unpriced_calls"], local["local_calls"]) == (1, 0, 1)
    assert local["cost_usd"] is None
    # A call whose usage never arrived is counted, and its cost is missing from the total, not $0.
    mini = rows["gpt-4o-mini"]
    assert (mini["calls"], mini["unpriced_calls"], mini["estimated_calls"]) == (2, 1, 0)
    assert Decimal(mini["cost_usd"]) == price("gpt-4o-mini", 3, 1)


def test_the_table_says_what_the_total_contains_and_lacks(store, capsys):
    assert report(store) == 0
    out = capsys.readouterr().out
    estimated = price("gpt-4o", 400, 50)
    assert f"* ${estimated:.6f} of the total is priced from estimated usage: 1 call ended" in out
    assert "* the total is incomplete: it misses the cost of 2 calls" in out
    assert "* 1 call served locally" in out
    total_line = next(line for line in out.splitlines() if line.startswith("total "))
    assert "(+2 unpriced, 1 local)" in total_line
    unknown = next(line for line in out.splitlines() if line.startswith("acme-9000 ")).split()
    assert unknown[5:7] == ["-", "-"]  # no cost and no estimated part: shown as unknown, not 0.000000


def test_machine_formats_keep_every_digit_of_the_cost(store, capsys):
    # gpt-4o-mini at $0.15 / $0.60 per million: 3 input + 1 output tokens cost $0.00000105.
    exact = price("gpt-4o-mini", 3, 1)
    assert exact == Decimal("0.00000105")
    assert report(store, "--format", "json") == 0
    rows = {row["model"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["gpt-4o-mini"]["cost_usd"] == "0.00000105"
    assert report(store, "--format", "csv") == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split(",")
    mini = next(line.split(",") for line in lines[1:] if line.startswith("gpt-4o-mini,"))
    assert mini[header.index("cost_usd")] == "0.00000105"


@pytest.mark.parametrize("since", ["yesterday", "today", "24h", "2w", "30m", "2000-01-01"])
def test_since_accepts_words_ages_and_dates(store, capsys, since):
    assert report(store, "--since", since, "--format", "json") == 0
    assert sum(row["calls"] for row in json.loads(capsys.readouterr().out)) == 6


def test_since_in_the_future_leaves_everything_out(store, capsys):
    assert report(store, "--since", "2999-01-01", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_since_words_and_ages_are_utc_times():
    now = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    assert reporting.parse_since("yesterday", now) == datetime(2026, 3, 9, tzinfo=UTC)
    assert reporting.parse_since("Today", now) == datetime(2026, 3, 10, tzinfo=UTC)
    assert reporting.parse_since("7d", now) == datetime(2026, 3, 3, 15, 30, tzinfo=UTC)
    assert reporting.parse_since("24h ago", now) == datetime(2026, 3, 9, 15, 30, tzinfo=UTC)
    assert reporting.parse_since("2026-03-01T08:00", now) == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert reporting.parse_since("2026-03-01T08:00+01:00", now) == datetime(2026, 3, 1, 7, tzinfo=UTC)


def test_an_unreadable_since_is_a_clear_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", "--since", "last tuesday"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --since: 'last tuesday' is not a time" in err and "yesterday" in err


def test_a_mistyped_sqlite_path_is_refused_not_created(isolated_env, capsys):
    missing = isolated_env / "mlfow.db"
    assert cli.main(["report", "--tracking-uri", f"sqlite:///{missing}"]) == 1
    assert f"no MLflow store at sqlite:///{missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_without_a_uri_the_default_store_must_exist(isolated_env, capsys):
    assert cli.main(["report"]) == 1  # no MLFLOW_TRACKING_URI: MLflow's default, ./mlflow.db
    assert "mlflow.db does not exist" in capsys.readouterr().err
    assert not (isolated_env / "mlflow.db").exists()


def run_report_against(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")])
    # Bounded far below MLflow's defaults (120 s a request, 7 retries with back-off): a hang fails the test.
    return subprocess.run(
        [sys.executable, "-m", "mltrack_otel.cli", "report", "--tracking-uri", url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=50,
    )


def test_a_server_that_refuses_is_one_clear_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_report_against(f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"mltrack-otel report: cannot read traces from http://127.0.0.1:{port}: connection refused "
        "(is the server running, and is the port right?)"
    )


def test_a_server_that_never_answers_times_out_with_one_clear_line():
    with socket.socket() as silent:  # accepts connections (the kernel completes them) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        result = run_report_against(f"http://127.0.0.1:{port}", "--timeout", "2")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"mltrack-otel report: cannot read traces from http://127.0.0.1:{port}: no answer within 2 s (see --timeout)"
    )


@pytest.mark.parametrize("uri", ["file:///no/such/mlruns", "no-such-mlruns", "sqlite:///no-such.db"])
def test_a_missing_local_store_of_any_kind_is_refused(isolated_env, uri):
    with pytest.raises(reporting.ReportError, match="does not exist"):
        reporting.check_store(uri)


@pytest.mark.parametrize("uri", ["databricks", "databricks://profile", "postgresql://u@db/mlflow", "http://h:5000"])
def test_remote_stores_are_left_to_mlflow(isolated_env, uri):
    reporting.check_store(uri)  # no local file to look for: MLflow reports what it finds
