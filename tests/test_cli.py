"""The `mltrack-otel` command: price, and report read back from a real embedded MLflow store."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

import mltrack_otel
from mltrack_otel import cli

M = Decimal(1_000_000)


def test_price_prints_cost_and_source(capsys):
    # Published: gpt-4o $2.50 / 1M input, $1.25 / 1M cached input, $10.00 / 1M output.
    assert (
        cli.main(["price", "gpt-4o", "--provider", "openai", "--input", "2000", "--output", "500", "--cached", "1000"])
        == 0
    )
    out = capsys.readouterr().out
    expected = (1000 * Decimal("2.50") + 1000 * Decimal("1.25") + 500 * Decimal("10.00")) / M
    assert f"total USD  {expected.normalize():f}" in out
    assert "genai-prices" in out


def test_price_of_an_unknown_model_says_so(capsys):
    assert cli.main(["price", "acme-9000", "--input", "1", "--output", "1"]) == 1
    assert "no known price" in capsys.readouterr().out


def test_negative_counts_are_refused(capsys):
    assert cli.main(["price", "gpt-4o", "--input", "-1", "--output", "1"]) == 2


def test_report_reads_back_what_the_ledger_counted(pipeline, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mltrack_otel.configure(exporters=["mlflow"], mlflow_tracking_uri=uri, mlflow_experiment_name="report-test")
    usage = [
        ("gpt-4o", "openai", 1000, 100, "conv-a"),
        ("gpt-4o", "openai", 10, 1, "conv-b"),
        ("claude-3-haiku-20240307", "anthropic", 400, 40, "conv-a"),
    ]
    for model, provider, prompt, completion, conversation in usage:
        with mltrack_otel.track_llm_context("turn", conversation_id=conversation) as tracker:
            tracker.log_prompt_response(
                "q",
                "a",
                model=model,
                provider=provider,
                token_usage={"prompt_tokens": prompt, "completion_tokens": completion},
            )
    mltrack_otel.shutdown()
    live = mltrack_otel.totals()

    assert cli.main(["report", "--tracking-uri", uri, "--experiment", "report-test", "--format", "json"]) == 0
    rows = {row["model"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["gpt-4o"]["calls"] == 2 and rows["gpt-4o"]["prompt_tokens"] == 1010
    assert rows["claude-3-haiku-20240307"]["completion_tokens"] == 40
    total = sum(Decimal(row["cost_usd"]) for row in rows.values())
    assert total == pytest.approx(live.cost_usd, abs=Decimal("1e-6"))

    assert (
        cli.main(
            ["report", "--tracking-uri", uri, "--experiment", "report-test", "--by", "conversation", "--format", "csv"]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("conversation,calls")
    assert {line.split(",")[0]: int(line.split(",")[1]) for line in lines[1:]} == {"conv-a": 2, "conv-b": 1}
