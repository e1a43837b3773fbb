"""`mltrack-otel compare`: the variants of a prompt, a model or an A/B experiment side by side, read back from MLflow.

Per variant (the values of the ``--by`` attribute): calls, tokens in and out, cost per call (mean, p50, p95),
latency p50/p95, error rate and unpriced calls; then each variant against the baseline (the first variant, or
``--baseline``) with a bootstrap confidence interval, so a difference can be told from noise.

What is counted is what ``report`` counts (report.counted_calls: one counted span per model call), plus the model
calls that failed before any usage came back, which count as calls and errors only. Cost statistics are over the
calls with a known cost (unpriced and locally served calls are counted apart, never read as $0); latency is over
the calls that succeeded (``llm.latency``, else the span's duration); tokens per call are over the counted calls.

The bootstrap: for each variant and statistic, resample the variant's and the baseline's per-call values with
replacement (``resamples`` times, each sample as large as the original), take the difference of the statistic,
and report the 2.5th and 97.5th percentiles of those differences (the percentile interval). Seeded: the same data
and seed give the same interval; each (variant, statistic) draws from its own stream, so adding a variant does not
move the others' intervals.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import random
import re
import statistics
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from . import semconv
from .report import (
    CountedCall,
    ReportError,
    bounded_http,
    check_store,
    counted_calls,
    parse_since,
    read_spans,
    run_reader,
)

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
CONFIDENCE = 0.95

# --by names that are CountedCall fields, read as report reads them (model: the response model, else the request's).
FIELDS = ("model", "provider", "day", "conversation")
# Short names for span attributes.
ALIASES = {
    "prompt.version": "gen_ai.prompt.version",
    "prompt.name": "gen_ai.prompt.name",
    "prompt": "gen_ai.prompt.name",
    "request.model": "gen_ai.request.model",
    "response.model": "gen_ai.response.model",
    "variant": semconv.MLTRACK_AB_VARIANT,
    "ab.variant": semconv.MLTRACK_AB_VARIANT,
    "ab.experiment": semconv.MLTRACK_AB_EXPERIMENT,
    "user": "user.id",
    "session": "session.id",
}
PROMPT_NAME = "gen_ai.prompt.name"
PROMPT_VERSION = "gen_ai.prompt.version"
# The statistics compared between variants: name -> (label, unit).
METRICS = {
    "cost_per_call": ("cost/call", "USD"),
    "latency_p50": ("latency p50", "s"),
    "error_rate": ("error rate", ""),
}


class CompareError(ReportError):
    """A comparison that cannot be made, said in one line."""


def attribute_of(by: str) -> str:
    """The span attribute (or CountedCall field) that `--by` names: aliases, `tag.X` -> `mltrack.tag.X`."""
    by = by.strip()
    if by in FIELDS:
        return by
    if by.startswith("tag."):
        return "mltrack.tag." + by.removeprefix("tag.")
    return ALIASES.get(by, by)


@dataclass(frozen=True)
class CallRecord:
    """One model call of the comparison (the per-call data a plot draws). cost_usd is None when the cost is unknown
    (unpriced, served locally with no price, or failed before usage came back); latency_s is None when the span
    carries none."""

    variant: str
    cost_usd: float | None
    latency_s: float | None
    prompt_tokens: int
    completion_tokens: int
    error_type: str | None = None
    counted: bool = True  # False: failed before any usage came back (no tokens, no cost)
    unpriced: bool = False
    local: bool = False
    estimated: bool = False


@dataclass
class VariantSummary:
    variant: str
    calls: int  # counted calls + calls that failed before usage came back
    errors: int
    error_rate: float
    prompt_tokens: int  # totals over the counted calls
    completion_tokens: int
    prompt_tokens_per_call: float | None  # means over the counted calls
    completion_tokens_per_call: float | None
    priced_calls: int  # calls with a known cost: the cost statistics are over these
    cost_usd: float  # the known costs summed
    cost_per_call_mean: float | None
    cost_per_call_p50: float | None
    cost_per_call_p95: float | None
    latency_calls: int  # succeeded calls with a latency: the latency statistics are over these
    latency_p50_s: float | None
    latency_p95_s: float | None
    unpriced_calls: int  # reached the provider, cost unknown
    local_calls: int  # served locally with no price set
    estimated_calls: int  # priced from estimated usage


@dataclass
class Difference:
    """`variant` minus `baseline` for one statistic, with its bootstrap interval (None: too few calls)."""

    variant: str
    baseline: str
    metric: str  # a key of METRICS
    difference: float | None
    relative: float | None  # difference / the baseline's value (None when that is 0 or unknown)
    ci_low: float | None
    ci_high: float | None
    missing: str | None = None  # why there is no difference or interval, when there is none

    @property
    def significant(self) -> bool | None:
        """True when the interval excludes 0 (a real difference), False when it holds 0 (noise), None when there
        is no interval."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return self.ci_low > 0 or self.ci_high < 0


@dataclass
class Comparison:
    by: str  # the attribute compared, as the user named it
    attribute: str  # the span attribute (or CountedCall field) it reads
    baseline: str | None
    records: list[CallRecord]
    summaries: list[VariantSummary]
    differences: list[Difference]
    left_out: int = 0  # calls (after the filters) that carry no value of the attribute
    resamples: int = DEFAULT_RESAMPLES
    seed: int | None = DEFAULT_SEED
    confidence: float = CONFIDENCE
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "attribute": self.attribute,
            "baseline": self.baseline,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
            "left_out_calls": self.left_out,
            "variants": [asdict(s) for s in self.summaries],
            "differences": [{**asdict(d), "significant": d.significant} for d in self.differences],
            "notes": self.notes,
        }


# --- statistics ----------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default method);
    `values` must be sorted and not empty."""
    if not values:
        raise ValueError("percentile of no values")
    position = (len(values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def mean(values: Sequence[float]) -> float:
    """The mean, exact for equal values (the sum of n copies of c over n can miss c by an ulp, and an interval of
    [+4e-22, +4e-22] would call two equal prices different): deviations from the first value are averaged."""
    shift = values[0]
    return shift + math.fsum([x - shift for x in values]) / len(values)


def _plain_mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


_STATISTIC: dict[str, Callable[[Sequence[float]], float]] = {
    "cost_per_call": mean,
    "latency_p50": median,
    "error_rate": mean,
}


def bootstrap_interval(
    baseline: Sequence[float],
    variant: Sequence[float],
    statistic: Callable[[Sequence[float]], float],
    resamples: int,
    rng: random.Random,
    confidence: float = CONFIDENCE,
) -> tuple[float, float] | None:
    """The percentile bootstrap interval of statistic(variant) - statistic(baseline): each resample draws both
    samples anew with replacement, at their own sizes. None when either side has fewer than 2 values."""
    if len(baseline) < 2 or len(variant) < 2 or resamples < 1:
        return None
    # Both samples less the baseline's first value: the difference of means or medians is the same, equal values
    # become exact zeros (no ulp of difference between equal prices), and the mean needs no shift of its own.
    shift = baseline[0]
    baseline, variant = [x - shift for x in baseline], [x - shift for x in variant]
    if statistic is mean:
        statistic = _plain_mean
    choices, n_base, n_var = rng.choices, len(baseline), len(variant)
    differences = sorted(
        statistic(choices(variant, k=n_var)) - statistic(choices(baseline, k=n_base)) for _ in range(resamples)
    )
    tail = (1 - confidence) / 2 * 100
    return percentile(differences, tail), percentile(differences, 100 - tail)


# --- from calls to a comparison --------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or None
    return str(value)


def _natural(key: str) -> tuple[Any, ...]:
    """v2 before v10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key))


def variant_of(call: CountedCall, attribute: str) -> str | None:
    if attribute in FIELDS:
        value = getattr(call, attribute)
        return None if value in ("?", "-") else value
    return _text(call.attributes.get(attribute))


def record(call: CountedCall, variant: str) -> CallRecord:
    unknown = call.cost_usd is None or call.usage_source == "absent"
    return CallRecord(
        variant=variant,
        cost_usd=None if unknown else float(call.cost_usd),  # type: ignore[arg-type]
        latency_s=call.latency_s,
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        error_type=call.error_type,
        counted=call.counted,
        unpriced=call.counted and unknown and not call.local,
        local=call.counted and unknown and call.local,
        estimated=call.usage_source == "estimated",
    )


def summarize(variant: str, records: Sequence[CallRecord]) -> VariantSummary:
    counted = [r for r in records if r.counted]
    costs = sorted(r.cost_usd for r in records if r.cost_usd is not None)
    latencies = sorted(r.latency_s for r in records if r.latency_s is not None and r.error_type is None)
    errors = sum(r.error_type is not None for r in records)
    return VariantSummary(
        variant=variant,
        calls=len(records),
        errors=errors,
        error_rate=errors / len(records) if records else 0.0,
        prompt_tokens=sum(r.prompt_tokens for r in counted),
        completion_tokens=sum(r.completion_tokens for r in counted),
        prompt_tokens_per_call=mean([r.prompt_tokens for r in counted]) if counted else None,
        completion_tokens_per_call=mean([r.completion_tokens for r in counted]) if counted else None,
        priced_calls=len(costs),
        cost_usd=math.fsum(costs),
        cost_per_call_mean=mean(costs) if costs else None,
        cost_per_call_p50=percentile(costs, 50) if costs else None,
        cost_per_call_p95=percentile(costs, 95) if costs else None,
        latency_calls=len(latencies),
        latency_p50_s=percentile(latencies, 50) if latencies else None,
        latency_p95_s=percentile(latencies, 95) if latencies else None,
        unpriced_calls=sum(r.unpriced for r in records),
        local_calls=sum(r.local for r in records),
        estimated_calls=sum(r.estimated for r in records if r.counted),
    )


def _samples(records: Sequence[CallRecord], metric: str) -> list[float]:
    if metric == "cost_per_call":
        return [r.cost_usd for r in records if r.cost_usd is not None]
    if metric == "latency_p50":
        return [r.latency_s for r in records if r.latency_s is not None and r.error_type is None]
    return [float(r.error_type is not None) for r in records]  # error_rate


def differ(
    variant: str,
    baseline: str,
    grouped: Mapping[str, Sequence[CallRecord]],
    resamples: int,
    seed: int | None,
    confidence: float = CONFIDENCE,
) -> list[Difference]:
    out = []
    for metric, statistic in _STATISTIC.items():
        base, var = _samples(grouped[baseline], metric), _samples(grouped[variant], metric)
        if not base or not var:
            without = ", ".join(name for name, sample in ((baseline, base), (variant, var)) if not sample)
            what = {"cost_per_call": "no priced calls", "latency_p50": "no succeeded calls with a latency"}[metric]
            out.append(Difference(variant, baseline, metric, None, None, None, None, f"{what} in {without}"))
            continue
        base_value, var_value = statistic(base), statistic(var)
        # Its own stream per (variant, statistic): another variant or statistic does not move this interval.
        rng = random.Random(f"{seed}\x00{baseline}\x00{variant}\x00{metric}") if seed is not None else random.Random()
        interval = bootstrap_interval(base, var, statistic, resamples, rng, confidence)
        out.append(
            Difference(
                variant,
                baseline,
                metric,
                var_value - base_value,
                (var_value - base_value) / base_value if base_value else None,
                interval[0] if interval else None,
                interval[1] if interval else None,
                None if interval else "too few calls for an interval (2 or more on each side)",
            )
        )
    return out


def compare_calls(
    calls: Iterable[CountedCall],
    by: str,
    where: Mapping[str, str] | None = None,
    baseline: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | None = DEFAULT_SEED,
    confidence: float = CONFIDENCE,
    known_attributes: Collection[str] = (),
) -> Comparison:
    """The comparison of `calls` (from report.counted_calls(..., keep=needed_attributes(by, where), failed=True))
    grouped by `by`, keeping only calls whose attributes equal `where`'s values. Raises CompareError when no
    call carries the attribute (naming the closest of `known_attributes`, the attribute names the spans had) or
    `baseline` is not one of the variants."""
    attribute = attribute_of(by)
    where = {attribute_of(k): v for k, v in (where or {}).items()}
    grouped: dict[str, list[CallRecord]] = {}
    left_out = matched = 0
    prompts: set[str] = set()
    for call in calls:
        if any(variant_of(call, key) != value for key, value in where.items()):
            continue
        matched += 1
        variant = variant_of(call, attribute)
        if variant is None:
            left_out += 1
            continue
        if attribute == PROMPT_VERSION:
            prompts.add(_text(call.attributes.get(PROMPT_NAME)) or "")
        grouped.setdefault(variant, []).append(record(call, variant))
    if not grouped:
        filters = " and ".join(f"{k}={v}" for k, v in where.items())
        if not matched:
            raise CompareError(f"no model calls{' with ' + filters if filters else ''} to compare")
        hint = ""
        if attribute not in FIELDS and attribute not in known_attributes:
            close = difflib.get_close_matches(attribute, sorted({*known_attributes, *ALIASES}), n=1, cutoff=0.8)
            hint = f": no span has that attribute{f' (did you mean {close[0]!r}?)' if close else ''}"
        raise CompareError(
            f"none of the {matched} model calls{' with ' + filters if filters else ''} carries {attribute}{hint}"
        )
    names = sorted(grouped, key=_natural)
    if baseline is None:
        baseline = names[0]
    elif baseline not in grouped:
        raise CompareError(f"--baseline {baseline!r} is not a value of {attribute}: {', '.join(names)}")
    ordered = [baseline, *(n for n in names if n != baseline)]
    records = [r for name in ordered for r in grouped[name]]
    summaries = [summarize(name, grouped[name]) for name in ordered]
    differences = [d for name in ordered[1:] for d in differ(name, baseline, grouped, resamples, seed, confidence)]
    notes = []
    if len(ordered) == 1:
        notes.append(f"only one value of {attribute} ({baseline}): nothing to compare it with")
    if left_out:
        notes.append(f"{left_out} model call{'s' if left_out != 1 else ''} without {attribute} left out")
    if len(prompts) > 1 and PROMPT_NAME not in where:
        named = ", ".join(sorted(p or "(no name)" for p in prompts))
        notes.append(f"the versions of {len(prompts)} prompts are mixed ({named}): pick one with --prompt NAME")
    return Comparison(
        by, attribute, baseline, records, summaries, differences, left_out, resamples, seed, confidence, notes
    )


def needed_attributes(by: str, where: Mapping[str, str] | None = None) -> set[str]:
    """The span attributes compare_calls reads for `by` and `where` (pass as counted_calls(keep=...))."""
    keys = {attribute_of(by), PROMPT_NAME, *(attribute_of(k) for k in where or {})}
    return {k for k in keys if k not in FIELDS}


def _noting_keys(spans: Iterable[Any], seen: set[str]) -> Iterator[Any]:
    for span in spans:
        seen.update(span.attributes or ())
        yield span


def comparison(
    tracking_uri: str | None = None,
    experiment: str | None = None,
    since: str | datetime | None = None,
    by: str = "prompt.version",
    where: Mapping[str, str] | None = None,
    baseline: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | None = DEFAULT_SEED,
    timeout_seconds: int | None = None,
) -> Comparison:
    """Read the traces of an MLflow store or server as `report` does and compare the calls' variants. Raises
    CompareError (a ReportError) for what the user can fix, MLflow's and requests' errors for a store that fails."""
    import mlflow

    since_dt = parse_since(since) if isinstance(since, str) else since
    uri = tracking_uri or mlflow.get_tracking_uri()
    check_store(uri)
    seen: set[str] = set()
    with bounded_http(timeout_seconds):
        spans = _noting_keys(read_spans(uri, experiment, since_dt), seen)
        calls = list(counted_calls(spans, keep=needed_attributes(by, where), failed=True))
    if not calls:
        where_ = f"experiment {experiment!r}" if experiment else "any experiment"
        raise CompareError(f"no model calls in {where_} at {uri}{' since ' + str(since_dt) if since_dt else ''}")
    return compare_calls(calls, by, where, baseline, resamples, seed, known_attributes=seen)


# --- output -------------------------------------------------------------------------------------------------------


def render(result: Comparison, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2)
    if fmt == "csv":
        return _csv(result)
    return table(result)


def _csv(result: Comparison) -> str:
    by_variant: dict[str, dict[str, Any]] = {}
    for d in result.differences:
        row = by_variant.setdefault(d.variant, {})
        row[f"{d.metric}_difference"] = d.difference
        row[f"{d.metric}_ci_low"] = d.ci_low
        row[f"{d.metric}_ci_high"] = d.ci_high
    diff_columns = [f"{m}_{part}" for m in METRICS for part in ("difference", "ci_low", "ci_high")]
    out = io.StringIO()
    columns = [result.by, *(k for k in VariantSummary.__dataclass_fields__ if k != "variant"), *diff_columns]
    writer = csv.writer(out)
    writer.writerow(columns)
    for summary in result.summaries:
        values = asdict(summary)
        values[result.by] = values.pop("variant")
        values.update(by_variant.get(summary.variant, {}))
        writer.writerow(["" if values.get(c) is None else values.get(c) for c in columns])
    return out.getvalue().rstrip("\n").replace("\r\n", "\n")


def usd(value: float | None, sign: bool = False) -> str:
    """Three significant digits, never in exponent form: 0.0000102, 0.500, 12.30."""
    if value is None:
        return "-"
    if value == 0:
        return "+0" if sign else "0"
    decimals = max(2, 2 - math.floor(math.log10(abs(value))))
    return f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"


def seconds(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}s" if sign else f"{value:.3f}s"


def _tokens(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _grid(rows: list[list[str]], left: int = 1) -> list[str]:
    """Rows of cells as aligned text: the first `left` columns left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    aligned = []
    for row in rows:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in pairs]
        aligned.append("  ".join(cells).rstrip())
    return aligned


def table(result: Comparison) -> str:
    header = [
        result.by,
        "calls",
        "in/call",
        "out/call",
        "USD/call",
        "p50",
        "p95",
        "latency p50",
        "p95",
        "errors",
        "unpriced",
    ]
    rows = [header]
    for s in result.summaries:
        rows.append(
            [
                s.variant + (" (baseline)" if s.variant == result.baseline and len(result.summaries) > 1 else ""),
                str(s.calls),
                _tokens(s.prompt_tokens_per_call),
                _tokens(s.completion_tokens_per_call),
                usd(s.cost_per_call_mean),
                usd(s.cost_per_call_p50),
                usd(s.cost_per_call_p95),
                seconds(s.latency_p50_s),
                seconds(s.latency_p95_s),
                f"{s.error_rate:.1%}",
                str(s.unpriced_calls) + (f" +{s.local_calls} local" if s.local_calls else ""),
            ]
        )
    grid = _grid(rows)
    lines = [grid[0], "-" * len(grid[0]), *grid[1:]]
    if result.differences:
        lines.append("")
        lines.append(
            f"difference from {result.baseline}, {result.confidence:.0%} bootstrap CI "
            f"({result.resamples} resamples, seed {result.seed})"
        )
        diff_rows = []
        for d in result.differences:
            label, _ = METRICS[d.metric]
            fmt = usd if d.metric == "cost_per_call" else seconds if d.metric == "latency_p50" else _points
            relative = f"({d.relative:+.1%})" if d.relative is not None else ""
            verdict = {True: "differs", False: "within noise", None: d.missing or ""}[d.significant]
            interval = f"[{fmt(d.ci_low, True)}, {fmt(d.ci_high, True)}]" if d.ci_low is not None else ""
            diff_rows.append([f"  {d.variant}", label, fmt(d.difference, True), relative, interval, verdict])
        lines.extend(_grid(diff_rows, left=2))
    lines.extend(f"* {note}" for note in result.notes)
    if any(s.unpriced_calls for s in result.summaries):
        lines.append("* USD/call is over the priced calls only: unpriced calls have no known cost (never $0)")
    return "\n".join(lines)


def _points(value: float | None, sign: bool = False) -> str:
    """An error-rate difference in percentage points."""
    if value is None:
        return "-"
    return f"{value * 100:+.1f} pts" if sign else f"{value * 100:.1f} pts"


# --- the command ------------------------------------------------------------------------------------------------------


def run_compare(
    tracking_uri: str | None,
    experiment: str | None,
    since: str | datetime | None,
    by: str,
    where: Mapping[str, str] | None = None,
    baseline: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | None = DEFAULT_SEED,
    fmt: str = "table",
    timeout_seconds: int | None = None,
    plot: str | None = None,
) -> int:
    def read(uri: str) -> Comparison:
        return comparison(uri, experiment, since, by, where, baseline, resamples, seed, timeout_seconds)

    def draw(result: Comparison, path: Any) -> None:
        from .plot import compare_distributions

        compare_distributions(result.records, path=path, by=result.by)

    def show(result: Comparison) -> str:
        return render(result, fmt)

    return run_reader("compare", tracking_uri, timeout_seconds, read, show, plot, draw, picture="compare")
