"""Pictures of the counted calls: cost over time stacked by model (or any report key), and the compare view's
per-variant cost and latency distributions.

matplotlib is an optional extra (`pip install 'mltrack-otel[plot]'`), imported only when a picture is drawn. The
figures are built with `matplotlib.figure.Figure` and saved through the Agg canvas: no pyplot, no display, no global
figure state. Both functions return the Figure (drawn, not yet closed) so a caller can look inside it; `path`, when
given, is where the PNG is written.

A call with no known cost is never drawn as $0: it is left out of the cost bars and said in the title.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL_HINT = "pip install 'mltrack-otel[plot]'"
MAX_SERIES = 8  # keys beyond the costliest ones are drawn together as "other"
MAX_BUCKETS = 60

# Bucket widths, smallest first: the first one that puts the calls' time range in at most MAX_BUCKETS bars. The
# tenth of a second is for a session that lasts seconds (the demo); a day's report gets minutes, a month's days.
_BUCKETS = (
    ("100 ms", timedelta(milliseconds=100)),
    ("second", timedelta(seconds=1)),
    ("minute", timedelta(minutes=1)),
    ("hour", timedelta(hours=1)),
    ("day", timedelta(days=1)),
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RELATIVE_AXIS_BELOW = timedelta(minutes=2)  # shorter ranges read as seconds since the first call, not clock times


class PlotError(Exception):
    """A picture that cannot be drawn, said in one line."""


def require_matplotlib() -> Any:
    """matplotlib, or a one-line PlotError naming the extra that brings it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401  (the part we use; fails here if the install is broken)
    except ImportError:
        raise PlotError(f"drawing a plot needs matplotlib, not installed here: {INSTALL_HINT}") from None
    return matplotlib


@dataclass(frozen=True)
class Bucketing:
    unit: str
    width: timedelta
    starts: list[datetime]

    def index(self, moment: datetime) -> int:
        return int((moment - self.starts[0]) / self.width)


def choose_buckets(first: datetime, last: datetime) -> Bucketing:
    """Buckets aligned on whole units since the epoch (UTC midnights for days), the smallest unit giving at most
    MAX_BUCKETS of them."""
    for unit, width in _BUCKETS:
        start = _EPOCH + ((first - _EPOCH) // width) * width
        count = int((last - start) / width) + 1
        if count <= MAX_BUCKETS or unit == "day":
            return Bucketing(unit, width, [start + i * width for i in range(count)])
    raise AssertionError("unreachable")


def _get(record: Any, *names: str) -> Any:
    """The first of `names` that the record has, as an attribute or a mapping key (None when it has none)."""
    for name in names:
        if isinstance(record, Mapping):
            if name in record:
                return record[name]
        elif hasattr(record, name):
            return getattr(record, name)
    return None


def _key_of(call: Any, by: str) -> str:
    """The call's group under `by`, as report groups it: CountedCall.key(by) where it has one (user, tag.<key>),
    else the field or mapping key of that name."""
    key = getattr(call, "key", None)
    value = key(by) if callable(key) else _get(call, by)
    return str(value) if value not in (None, "") else "-"


def _usd_text(value: Decimal | float) -> str:
    """Enough decimals to read a demo's fractions of a cent and a month's hundreds of dollars alike."""
    value = float(value)
    if value == 0:
        return "$0"
    digits = max(2, min(8, 2 - math.floor(math.log10(abs(value))) + 1))
    return f"${value:,.{digits}f}"


def _usd_axis() -> Any:
    """Dollar tick labels with as many decimals as the ticks need (`$0.05`, `$0.0005`), the same on every tick."""
    from matplotlib.ticker import Formatter

    class UsdFormatter(Formatter):
        def __call__(self, value: float, pos: int | None = None) -> str:
            return f"${value:,.{self.digits()}f}" if value else "$0"

        def digits(self) -> int:
            locs = [loc for loc in self.axis.get_majorticklocs() if loc] if self.axis is not None else []
            for digits in range(2, 9):
                if all(abs(round(loc, digits) - loc) < abs(loc) * 1e-6 for loc in locs):
                    return digits
            return 8

    return UsdFormatter()


def _save(fig: Figure, path: str | Path | None) -> None:
    if path is None:
        return
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise PlotError(f"cannot write {target}: the folder {target.parent} does not exist")
    try:
        fig.savefig(target, dpi=fig.dpi)
    except (OSError, ValueError) as exc:  # ValueError: an extension matplotlib cannot write (e.g. .txt)
        raise PlotError(f"cannot write {target}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Cost over time
# --------------------------------------------------------------------------------------------------


def cost_over_time(
    calls: Iterable[Any], by: str = "model", path: str | Path | None = None, title: str | None = None
) -> Figure:
    """Cost per time bucket, stacked by `by` (a CountedCall field: model, provider, conversation, ...), above the
    cumulative cost by the same key. Buckets (100 ms/second/minute/hour/day) are chosen from the calls' time range.

    `calls`: report.CountedCall-like records with `started` (datetime), `cost_usd` (Decimal or None) and `by`.
    """
    require_matplotlib()
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure

    calls = [c for c in calls if _get(c, "started") is not None]
    priced = sorted((c for c in calls if c.cost_usd is not None), key=lambda c: c.started)
    unpriced = len(calls) - len(priced)
    total = sum((c.cost_usd for c in priced), Decimal(0))

    by_key: dict[str, Decimal] = {}
    for call in priced:
        key = _key_of(call, by)
        by_key[key] = by_key.get(key, Decimal(0)) + call.cost_usd
    ranked = sorted(by_key, key=lambda k: (-by_key[k], k))
    shown = ranked if len(ranked) <= MAX_SERIES else [*ranked[: MAX_SERIES - 1], "other"]

    def series_of(call: Any) -> str:
        key = _key_of(call, by)
        return key if key in shown else "other"

    fig = Figure(figsize=(10, 6.5), dpi=100, layout="constrained")
    bars_ax, cumulative_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    colors = {key: f"C{i}" for i, key in enumerate(shown)}
    if "other" in colors:
        colors["other"] = "0.6"

    unit = "-"
    if priced:
        bucketing = choose_buckets(priced[0].started, priced[-1].started)
        unit = bucketing.unit
        end = bucketing.starts[-1] + bucketing.width
        relative = end - bucketing.starts[0] <= RELATIVE_AXIS_BELOW
        origin = bucketing.starts[0]

        def x(moment: datetime) -> float:  # seconds since the first bucket, or matplotlib's date number
            return (moment - origin).total_seconds() if relative else float(date2num(moment))

        heights = {key: [0.0] * len(bucketing.starts) for key in shown}
        for call in priced:
            heights[series_of(call)][bucketing.index(call.started)] += float(call.cost_usd)
        left = [x(start) for start in bucketing.starts]
        width = (x(bucketing.starts[0] + bucketing.width) - left[0]) * 0.9
        bottom = [0.0] * len(bucketing.starts)
        for key in shown:
            bars_ax.bar(
                left, heights[key], width=width, bottom=bottom, align="edge", color=colors[key], label=key,
                edgecolor="white", linewidth=0.5,
            )  # fmt: skip
            bottom = [b + h for b, h in zip(bottom, heights[key], strict=True)]
        bars_ax.set_ylim(0, max(bottom) * 1.08 or 1)  # headroom: the tallest stack is never cut by the frame

        # Cumulative cost per key at each call's own time: a stacked step area, read at a glance as "who spent it".
        running = dict.fromkeys(shown, 0.0)
        stacks: dict[str, list[float]] = {key: [] for key in shown}
        for call in priced:
            running[series_of(call)] += float(call.cost_usd)
            for key in shown:
                stacks[key].append(running[key])
        xs = [left[0], *(x(call.started) for call in priced), x(end)]
        ys = [[0.0, *stacks[key], stacks[key][-1]] for key in shown]
        cumulative_ax.stackplot(xs, *ys, step="post", colors=[colors[k] for k in shown], alpha=0.85, labels=shown)
        cumulative_ax.set_xlim(left[0], x(end))
        cumulative_ax.set_ylim(0, float(total) * 1.08 or 1)
        if relative:
            cumulative_ax.set_xlabel(f"seconds since {origin:%Y-%m-%d %H:%M:%S} UTC")
        else:
            locator = AutoDateLocator()
            cumulative_ax.xaxis.set_major_locator(locator)
            cumulative_ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
            cumulative_ax.set_xlabel("time (UTC)")
        bars_ax.legend(title=by, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize="small")
    else:
        bars_ax.text(0.5, 0.5, "no priced calls", transform=bars_ax.transAxes, ha="center", va="center")

    bars_ax.set_ylabel(f"USD per {unit}")
    bars_ax.yaxis.set_major_formatter(_usd_axis())
    bars_ax.grid(axis="y", alpha=0.3)
    bars_ax.set_axisbelow(True)
    cumulative_ax.set_ylabel("cumulative USD")
    cumulative_ax.yaxis.set_major_formatter(_usd_axis())
    cumulative_ax.grid(axis="y", alpha=0.3)
    cumulative_ax.set_axisbelow(True)

    headline = title or "LLM cost over time"
    counted = f"{len(priced)} priced call{'s' if len(priced) != 1 else ''}"
    missing = f"; {unpriced} call{'s' if unpriced != 1 else ''} with no known cost not drawn" if unpriced else ""
    fig.suptitle(f"{headline}: {_usd_text(total)} total, by {by}", fontsize="x-large", fontweight="bold")
    bars_ax.set_title(f"{counted}{missing}", fontsize="medium", color="0.3")
    _save(fig, path)
    return fig


# --------------------------------------------------------------------------------------------------
# Compare: per-variant distributions
# --------------------------------------------------------------------------------------------------


def compare_distributions(
    records: Iterable[Any], path: str | Path | None = None, by: str = "variant", title: str | None = None
) -> Figure:
    """Two panels, cost per call and latency per call, one box per variant with its mean marked (a white diamond)
    and every call drawn as a point when there are few.

    `records`: per-call records (compare.CallRecord, or any object or mapping) with `variant`, `cost_usd` (None when
    unknown) and `latency_s` (seconds; `latency_ms` is read too); a record with `counted` False or an `error_type`
    is a failed call, counted under its variant but drawn in neither panel. Variants keep the records' order.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    costs: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    unpriced: dict[str, int] = {}
    failed: dict[str, int] = {}
    for record in records:
        variant = str(_get(record, "variant") or "-")
        costs.setdefault(variant, [])
        latencies.setdefault(variant, [])
        unpriced.setdefault(variant, 0)
        failed.setdefault(variant, 0)
        if _get(record, "counted") is False or _get(record, "error_type") is not None:
            failed[variant] += 1  # no usage came back (or the call failed): its cost and latency are not the model's
            continue
        cost = _get(record, "cost_usd", "cost")
        if cost is None:
            unpriced[variant] += 1
        else:
            costs[variant].append(float(cost))
        latency = _get(record, "latency_s", "latency_seconds")
        if latency is None and _get(record, "latency_ms") is not None:
            latency = float(_get(record, "latency_ms")) / 1000
        if latency is not None:
            latencies[variant].append(float(latency))
    variants = list(costs)  # in the records' order: compare's puts the baseline first
    if not variants:
        raise PlotError("nothing to compare: no calls")

    fig = Figure(figsize=(11, 5.5), dpi=100, layout="constrained")
    cost_ax, latency_ax = fig.subplots(1, 2)
    _boxes(cost_ax, [costs[v] for v in variants], variants, _usd_text)
    cost_ax.set_title("cost per call")
    cost_ax.set_ylabel("USD per call")
    cost_ax.yaxis.set_major_formatter(_usd_axis())
    slowest = max((max(values) for values in latencies.values() if values), default=0.0)
    scale, unit = (1000, "ms") if slowest < 1 else (1, "s")  # a loopback call in ms, a real model call in seconds
    _boxes(
        latency_ax,
        [[value * scale for value in latencies[v]] for v in variants],
        variants,
        lambda value: f"{value:,.0f} ms" if unit == "ms" else f"{value:,.2f} s",
    )
    latency_ax.set_title("latency per call")
    latency_ax.set_ylabel("milliseconds" if unit == "ms" else "seconds")
    for ax in (cost_ax, latency_ax):
        ax.set_xlabel(by)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_ylim(bottom=0)
    cost_ax.set_xticks(
        range(1, len(variants) + 1),
        [f"{v}\nn={len(costs[v])}{_apart(unpriced=unpriced[v], failed=failed[v])}" for v in variants],
    )
    latency_ax.set_xticks(
        range(1, len(variants) + 1),
        [f"{v}\nn={len(latencies[v])}{_apart(failed=failed[v])}" for v in variants],
    )
    total_calls = sum(len(costs[v]) + unpriced[v] + failed[v] for v in variants)
    fig.suptitle(
        f"{title or 'Compare by ' + by}: {len(variants)} variants, {total_calls} calls\n"
        "box: middle half of the calls, line: median, diamond: mean, dots: the calls",
        fontsize="large",
    )
    _save(fig, path)
    return fig


def _apart(**counts: int) -> str:
    """What a panel leaves out, e.g. " (+1 unpriced, +2 failed)"."""
    said = [f"+{n} {what}" for what, n in counts.items() if n]
    return f" ({', '.join(said)})" if said else ""


def _boxes(ax: Any, data: Sequence[list[float]], labels: Sequence[str], fmt: Any) -> None:
    positions = [i + 1 for i, values in enumerate(data) if values]
    drawn = [values for values in data if values]
    if drawn:
        boxes = ax.boxplot(
            drawn,
            positions=positions,
            widths=0.5,
            showmeans=True,
            patch_artist=True,
            meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black", "markersize": 7},
            medianprops={"color": "black"},
            flierprops={"marker": "."},
        )
        for i, box in enumerate(boxes["boxes"]):
            box.set_facecolor(f"C{positions[i] - 1}")
            box.set_alpha(0.55)
    for position, values in zip(positions, drawn, strict=True):
        if len(values) <= 200:  # few calls: every one is shown, spread a little so they do not hide each other
            spread = [position + 0.18 * ((i * 0.618) % 1 - 0.5) for i in range(len(values))]
            ax.scatter(spread, values, s=10, color="0.2", alpha=0.5, zorder=3)
        mean = sum(values) / len(values)
        ax.text(position + 0.28, mean, f"mean {fmt(mean)}", va="center", fontsize="small")
    for i, values in enumerate(data):
        if not values:
            ax.text(i + 1, 0, "no values", ha="center", va="bottom", fontsize="small", color="0.4")
    ax.set_xlim(0.4, len(labels) + 0.9)  # room for the last variant's mean label
