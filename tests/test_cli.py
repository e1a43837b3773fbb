"""The `mltrack-otel` command: price, and report read back from a real embedded MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

import mltrack_otel
from mltrack_otel import cli, demo
from tests.mlflow_server import mlflow_server  # noqa: F401  (module-scoped fixture, started only if asked for)

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
    mltrack_otel.configure(
        exporters=["mlflow"],
        mlflow_tracking_uri=uri,
        mlflow_experiment_name="report-test",
        shutdown_timeout_seconds=120,  # the first export creates the database: seconds on a busy machine
    )
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


def test_cached_tokens_beyond_input_point_at_the_numbers(capsys):
    assert cli.main(["price", "gpt-4o", "--input", "100", "--output", "1", "--cached", "150"]) == 2
    err = capsys.readouterr().err
    assert "--cached (150) + --cache-write (0) exceed --input (100)" in err and "no known price" not in err


def test_an_unknown_provider_is_an_error_not_ignored(capsys):
    assert cli.main(["price", "gpt-4o", "--provider", "opneai", "--input", "10", "--output", "1"]) == 2
    assert "--provider 'opneai': unknown provider (did you mean 'openai'?)" in capsys.readouterr().err


def test_a_provider_that_does_not_sell_the_model_is_an_error(capsys):
    assert cli.main(["price", "gpt-4o", "--provider", "anthropic", "--input", "10", "--output", "1"]) == 2
    assert "anthropic has no price for 'gpt-4o' (genai-prices prices it as openai" in capsys.readouterr().err


@pytest.mark.parametrize("provider", ["openai", "azure.ai.openai", "AZURE"])
def test_a_provider_that_sells_the_model_prices_it(capsys, provider):
    assert cli.main(["price", "gpt-4o", "--provider", provider, "--input", "10", "--output", "1"]) == 0
    assert "total USD" in capsys.readouterr().out


def without(modules: list[str], code: str, cwd) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter where `modules` cannot be imported, as after `pip install mltrack-otel`."""
    blocked = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLTRACK_", "OTEL_", "MLFLOW_"))}
    env["HOME"] = str(cwd)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", blocked + textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("command", "modules", "line"),
    [
        (
            "report",
            ["mlflow"],
            "mltrack-otel report needs mlflow, not installed here: pip install 'mltrack-otel[mlflow]'",
        ),
        (
            "demo",
            ["openai", "anthropic"],
            "mltrack-otel demo needs openai, anthropic, not installed here: "
            "pip install 'mltrack-otel[openai,anthropic]'",
        ),
    ],
)
def test_a_command_without_its_extra_says_so_in_one_line(tmp_path, command, modules, line):
    result = without(modules, f"from mltrack_otel.cli import main\nsys.exit(main([{command!r}]))", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == line
    assert not (tmp_path / "mlflow.db").exists()


def test_configure_with_nowhere_to_export_warns_with_the_install_hint(tmp_path):
    result = without(["mlflow"], "import mltrack_otel\nmltrack_otel.configure()", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "spans are exported nowhere" in result.stderr
    assert "pip install 'mltrack-otel[mlflow]'" in result.stderr and "OTEL_EXPORTER_OTLP_ENDPOINT" in result.stderr
    chosen = without(["mlflow"], "import mltrack_otel\nmltrack_otel.configure(exporters='none')", tmp_path)
    assert chosen.returncode == 0 and chosen.stderr == ""  # no exporter on purpose: nothing to warn about


def test_the_demo_against_a_server_prints_a_way_to_browse_that_works(mlflow_server, tmp_path):  # noqa: F811
    result = without(
        [],
        f"from mltrack_otel.cli import main\nsys.exit(main(['demo', '--tracking-uri', {mlflow_server!r}]))",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "matches the live ledger total" in result.stdout
    hint = result.stdout.splitlines()[-1]
    assert hint == f"Browse the traces:  open {mlflow_server} in a browser (the MLflow server's own UI)"
    assert demo.browse_hint("sqlite:////data/mlflow.db") == "mlflow ui --backend-store-uri sqlite:////data/mlflow.db"
