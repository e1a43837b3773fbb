"""Pictures drawn from real counted calls: the real OpenAI and Anthropic SDKs against the fake provider, through the
pipeline into a real sqlite MLflow store, read back as `report` reads them. Each figure is checked through
matplotlib's own objects (labels, legend, bar heights against the cost) and as the PNG it writes (size, not blank);
`report --plot` writes the file; without matplotlib, one line names the extra; the demo draws, or says why not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

import mltrack_otel
from mltrack_otel import cli, plot, semconv
from mltrack_otel import report as reporting
from tests.instr_fixtures import mlflow_store
from tests.test_cli import without
from tests.traced import FAKE

pytest.importorskip("mlflow")
pytest.importorskip("matplotlib")
np = pytest.importorskip("numpy")
from matplotlib.image import imread  # noqa: E402

EXPERIMENT = "pictures"
VERSIONS = {"v1": "Answer briefly: {{q}}", "v2": "Answer with one step and the metric that shows it worked: {{q}}"}
QUESTIONS = ["Why did our bill double?", "Is prompt caching worth it for us?", "Which model should we use?"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, fake):
    """A real MLflow store holding real SDK calls: each question under two prompt versions (gpt-4o-mini), a gpt-4o
    call, an Anthropic call, and a call to a model with no known price."""
    import anthropic
    import openai

    with mlflow_store(
        tmp_path_factory.mktemp("store"), EXPERIMENT, ("openai", "anthropic"), cloud_hosts=list(FAKE)
    ) as uri:
        oai = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
        ant = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="sk-ant-test", max_retries=0)
        for (version, text), feature in zip(VERSIONS.items(), ("search", "chat"), strict=True):
            template = mltrack_otel.prompt("support", text, version=version)
            with template.use(), mltrack_otel.attributes(user_id=f"user-{version}", feature=feature):
                for question in QUESTIONS:
                    content = template.format(q=question)
                    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": content}])
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Summarise the week."}])
        ant.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=50, messages=[{"role": "user", "content": "A haiku."}]
        )
        oai.chat.completions.create(model="acme-9000", messages=[{"role": "user", "content": "Unpriced."}])
        live = mltrack_otel.totals()
    spans = list(reporting.read_spans(uri, EXPERIMENT, None))
    return {"uri": uri, "spans": spans, "calls": list(reporting.counted_calls(spans)), "live": live}


def pixels(path: Path, width: int, height: int) -> np.ndarray:
    """The PNG as an array, after checking it is an image of the expected size with something drawn on it."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[:2] == (height, width)
    rgb = image[..., :3]
    assert rgb.std() > 0.05  # not a blank (or single-colour) canvas
    assert (rgb.min(axis=2) < 0.9).mean() > 0.02  # ink on at least 2% of the pixels
    return image


def test_cost_over_time_stacks_the_models_and_the_bars_add_up_to_the_total(store, tmp_path):
    calls = store["calls"]
    assert len(calls) == store["live"].calls == 9
    priced = [c for c in calls if c.cost_usd is not None]
    total = sum(c.cost_usd for c in priced)
    assert total == pytest.approx(store["live"].cost_usd, abs=Decimal("1e-9"))  # what MLflow holds is the ledger's

    out = tmp_path / "cost.png"
    fig = plot.cost_over_time(calls, by="model", path=out)
    bars, cumulative = fig.axes
    # The legend names every priced model, costliest first; the unpriced one is said, not drawn as $0.
    legend = [text.get_text() for text in bars.get_legend().get_texts()]
    by_model: dict[str, Decimal] = {}
    for call in priced:
        by_model[call.model] = by_model.get(call.model, Decimal(0)) + call.cost_usd
    assert legend == sorted(by_model, key=lambda m: -by_model[m])
    assert "acme-9000" not in legend and len(legend) == 3
    assert sum(patch.get_height() for patch in bars.patches) == pytest.approx(float(total), rel=1e-9)
    assert bars.get_ylabel().startswith("USD per ")
    assert max(patch.get_y() + patch.get_height() for patch in bars.patches) < bars.get_ylim()[1]  # nothing cut
    assert cumulative.get_ylabel() == "cumulative USD"
    # The cumulative panel's stack (one layer per model, each drawn on the ones below) ends at the total.
    assert len(cumulative.collections) == 3
    top = max(collection.get_paths()[0].vertices[:, 1].max() for collection in cumulative.collections)
    assert top == pytest.approx(float(total), rel=1e-9)
    assert f"${float(total):,.6f}"[:7] in fig._suptitle.get_text()
    assert "1 call with no known cost not drawn" in bars.get_title()
    pixels(out, 1000, 650)


def test_cost_over_time_by_another_key(store):
    fig = plot.cost_over_time(store["calls"], by="provider")
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert sorted(legend) == ["anthropic", "openai"]
    assert "by provider" in fig._suptitle.get_text()


def test_no_known_cost_is_said_not_drawn_as_zero(store, tmp_path):
    unpriced = [c for c in store["calls"] if c.cost_usd is None]
    assert [c.model for c in unpriced] == ["acme-9000"]
    fig = plot.cost_over_time(unpriced, path=tmp_path / "none.png")
    bars = fig.axes[0]
    assert len(bars.patches) == 0 and bars.get_legend() is None
    assert [t.get_text() for t in bars.texts] == ["no priced calls"]
    assert "1 call with no known cost not drawn" in bars.get_title()
    pixels(tmp_path / "none.png", 1000, 650)


def test_report_by_a_tag_stacks_by_the_tag(store, tmp_path, capsys):
    """Grouped as report groups (CountedCall.key): the attribution tag, and "-" for the calls without it."""
    out = tmp_path / "by-feature.png"
    args = ["report", "--tracking-uri", store["uri"], "--experiment", EXPERIMENT, "--by", "tag.feature"]
    assert cli.main([*args, "--format", "json", "--plot", str(out)]) == 0
    rows = {row["tag.feature"]: row for row in json.loads(capsys.readouterr().out)}
    fig = plot.cost_over_time(store["calls"], by="tag.feature")
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert sorted(legend) == sorted(rows) == ["-", "chat", "search"]
    drawn = {bars.get_label(): sum(p.get_height() for p in bars.patches) for bars in fig.axes[0].containers}
    for key, row in rows.items():  # each feature's bars add up to the report's total for it
        assert drawn[key] == pytest.approx(float(Decimal(row["cost_usd"])), rel=1e-9)
    pixels(out, 1000, 650)


def variant_records(spans) -> list[dict]:
    records = []
    for span in spans:
        attrs = span.attributes or {}
        if attrs.get(semconv.MLTRACK_USAGE_COUNTED) is True and "gen_ai.prompt.version" in attrs:
            cost = attrs.get(semconv.LLM_COST_TOTAL)
            records.append(
                {
                    "variant": attrs["gen_ai.prompt.version"],
                    "cost_usd": None if cost is None else Decimal(str(cost)),
                    "latency_s": (span.end_time_ns - span.start_time_ns) / 1e9,
                }
            )
    return sorted(records, key=lambda r: r["variant"])


def test_compare_draws_each_variants_cost_and_latency_with_its_mean(store, tmp_path):
    records = variant_records(store["spans"])
    assert sorted(r["variant"] for r in records) == ["v1"] * 3 + ["v2"] * 3
    out = tmp_path / "compare.png"
    fig = plot.compare_distributions(records, path=out, by="prompt version")
    cost_ax, latency_ax = fig.axes
    assert (cost_ax.get_title(), latency_ax.get_title()) == ("cost per call", "latency per call")
    assert [t.get_text() for t in cost_ax.get_xticklabels()] == ["v1\nn=3", "v2\nn=3"]
    assert cost_ax.get_xlabel() == "prompt version" and cost_ax.get_ylabel() == "USD per call"
    # The means drawn (matplotlib's own mean markers) are the variants' mean costs; v2's longer prompt costs more.
    means = [line.get_ydata()[0] for line in cost_ax.lines if line.get_marker() == "D"]
    expected = [float(sum(r["cost_usd"] for r in records if r["variant"] == v)) / 3 for v in ("v1", "v2")]
    assert means == pytest.approx(expected, rel=1e-9)
    assert means[1] > means[0]
    latency_means = [line.get_ydata()[0] for line in latency_ax.lines if line.get_marker() == "D"]
    scale = 1000 if latency_ax.get_ylabel() == "milliseconds" else 1
    assert latency_means[0] == pytest.approx(
        scale * sum(r["latency_s"] for r in records if r["variant"] == "v1") / 3, rel=1e-9
    )
    pixels(out, 1100, 550)


def test_compare_counts_unpriced_and_failed_calls_apart():
    records = [
        {"variant": "a", "cost_usd": Decimal("0.001"), "latency_ms": 800},
        {"variant": "a", "cost_usd": None, "latency_ms": 900},
        {"variant": "b", "cost_usd": Decimal("0.002"), "latency_ms": 1200},
        {"variant": "b", "cost_usd": None, "latency_s": 0.05, "counted": False, "error_type": "RateLimitError"},
    ]
    fig = plot.compare_distributions(records)
    cost_ax, latency_ax = fig.axes
    assert [t.get_text() for t in cost_ax.get_xticklabels()] == ["a\nn=1 (+1 unpriced)", "b\nn=1 (+1 failed)"]
    assert [t.get_text() for t in latency_ax.get_xticklabels()] == ["a\nn=2", "b\nn=1 (+1 failed)"]
    # A failed call's 50 ms is not the model's latency: b's only latency drawn is its 1.2 s call.
    assert [line.get_ydata()[0] for line in latency_ax.lines if line.get_marker() == "D"] == pytest.approx([0.85, 1.2])
    assert "4 calls" in fig._suptitle.get_text()
    assert latency_ax.get_ylabel() == "seconds"  # a real model call's latency reads in seconds
    with pytest.raises(plot.PlotError, match="no calls"):
        plot.compare_distributions([])


@pytest.mark.parametrize(
    ("span", "unit"),
    [
        (timedelta(seconds=1.3), "100 ms"),
        (timedelta(seconds=50), "second"),
        (timedelta(minutes=40), "minute"),
        (timedelta(hours=30), "hour"),
        (timedelta(days=45), "day"),
    ],
)
def test_buckets_follow_the_time_range(span, unit):
    first = datetime(2026, 3, 1, 9, 59, 59, 950000, tzinfo=UTC)
    chosen = plot.choose_buckets(first, first + span)
    assert chosen.unit == unit
    assert chosen.starts[0] <= first < chosen.starts[0] + chosen.width
    assert chosen.index(first + span) == len(chosen.starts) - 1
    assert len(chosen.starts) <= plot.MAX_BUCKETS or unit == "day"


def test_report_plot_writes_the_picture_and_keeps_stdout_for_the_data(store, tmp_path, capsys):
    out = tmp_path / "cost.png"
    args = ["report", "--tracking-uri", store["uri"], "--experiment", EXPERIMENT, "--format", "json"]
    assert cli.main([*args, "--plot", str(out)]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)  # the picture's note goes to stderr: stdout stays machine-readable
    assert {row["model"] for row in rows} >= {"gpt-4o-mini-2024-07-18", "acme-9000"}
    assert captured.err.strip() == f"cost plot written to {out}"
    pixels(out, 1000, 650)

    assert cli.main([*args, "--plot", str(tmp_path / "missing" / "cost.png")]) == 1
    assert "the folder" in capsys.readouterr().err


def test_compare_plot_draws_the_variants_of_the_table(store, tmp_path, capsys):
    out = tmp_path / "compare.png"
    args = ["compare", "--tracking-uri", store["uri"], "--experiment", EXPERIMENT, "--by", "prompt.version"]
    assert cli.main([*args, "--format", "json", "--plot", str(out)]) == 0
    captured = capsys.readouterr()
    variants = [v["variant"] for v in json.loads(captured.out)["variants"]]
    assert variants == ["v1", "v2"]
    assert captured.err.strip() == f"compare plot written to {out}"
    pixels(out, 1100, 550)


@pytest.mark.parametrize("command", [["report"], ["compare", "--by", "prompt.version"]])
def test_without_matplotlib_one_line_names_the_extra(store, tmp_path, command):
    line = "drawing a plot needs matplotlib, not installed here: pip install 'mltrack-otel[plot]'"
    out = tmp_path / "picture.png"
    args = [*command, "--tracking-uri", store["uri"], "--experiment", EXPERIMENT, "--plot", str(out)]
    result = without(["matplotlib"], f"from mltrack_otel.cli import main\nsys.exit(main({args!r}))", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"mltrack-otel {command[0]}: {line}"
    assert result.stdout == "" and not out.exists()  # said before reading anything

    api = without(
        ["matplotlib"],
        "from mltrack_otel import plot\ntry:\n    plot.cost_over_time([])\nexcept plot.PlotError as e:\n    print(e)",
        tmp_path,
    )
    assert api.stdout.strip() == line, api.stderr


def test_the_demo_compares_two_prompt_versions_and_draws(tmp_path):
    result = without([], "from mltrack_otel.cli import main\nsys.exit(main(['demo']))", tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "matches the live ledger total" in out
    table = out[out.index("Prompt 'support-answer', version v1 against v2") :].split("\n\n")[1].splitlines()
    rows = {line.split()[0]: line.split() for line in table if line.startswith(("v1 ", "v2 "))}
    assert set(rows) == {"v1", "v2"} and all("12" in row[1:3] for row in rows.values())  # 12 calls per version
    assert f"cost over time, stacked by model:  {tmp_path / 'mltrack-cost.png'}" in out
    pixels(tmp_path / "mltrack-cost.png", 1000, 650)
    pixels(tmp_path / "mltrack-compare.png", 1100, 550)
    assert out.splitlines()[-1].startswith("Browse the traces:")


def test_the_demo_without_matplotlib_says_so_and_still_checks_the_totals(tmp_path):
    result = without(["matplotlib"], "from mltrack_otel.cli import main\nsys.exit(main(['demo']))", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "matches the live ledger total" in result.stdout
    assert "no plots: drawing a plot needs matplotlib, not installed here: pip install 'mltrack-otel[plot]'" in (
        result.stdout.splitlines()
    )
    assert not (tmp_path / "mltrack-cost.png").exists()
