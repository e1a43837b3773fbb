"""`mltrack-otel report`: totals read back from MLflow traces, grouped by model, provider, day or conversation.

Only spans the ledger counted (mltrack.usage.counted = true) are summed, so a call that several layers describe is
counted once, exactly as in the live totals.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from . import semconv

GROUPINGS = ("model", "provider", "day", "conversation")


@dataclass
class Row:
    key: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced_calls: int = 0
    estimated_cost_usd: Decimal = Decimal(0)  # the part of cost_usd priced from estimated usage
    estimated_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class CountedCall:
    """One counted model call as read back from a stored span."""

    model: str
    provider: str
    day: str
    conversation: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal | None
    estimated: bool = False  # usage estimated (mltrack.usage.source), not reported by the provider


def counted_calls(spans: Iterable[Any]) -> Iterator[CountedCall]:
    """Counted model calls among MLflow spans (anything with `.attributes` and `.start_time_ns`)."""
    for span in spans:
        attrs = span.attributes or {}
        if attrs.get(semconv.MLTRACK_USAGE_COUNTED) is not True:
            continue
        cost = attrs.get(semconv.LLM_COST_TOTAL)
        started = datetime.fromtimestamp((span.start_time_ns or 0) / 1e9, tz=timezone.utc)
        yield CountedCall(
            model=str(attrs.get(gen_ai.GEN_AI_RESPONSE_MODEL) or attrs.get(gen_ai.GEN_AI_REQUEST_MODEL) or "?"),
            provider=str(attrs.get(gen_ai.GEN_AI_PROVIDER_NAME) or "?"),
            day=started.date().isoformat(),
            conversation=str(attrs.get(gen_ai.GEN_AI_CONVERSATION_ID) or "-"),
            prompt_tokens=int(attrs.get(semconv.LLM_TOKENS_PROMPT) or 0),
            completion_tokens=int(attrs.get(semconv.LLM_TOKENS_COMPLETION) or 0),
            cost_usd=Decimal(str(cost)) if cost is not None else None,
            estimated=attrs.get(semconv.MLTRACK_USAGE_SOURCE) == "estimated",
        )


def aggregate(calls: Iterable[CountedCall], by: str) -> list[Row]:
    rows: dict[str, Row] = {}
    for call in calls:
        key = getattr(call, by)
        row = rows.setdefault(key, Row(key))
        row.calls += 1
        row.prompt_tokens += call.prompt_tokens
        row.completion_tokens += call.completion_tokens
        if call.cost_usd is None:
            row.unpriced_calls += 1
        else:
            row.cost_usd += call.cost_usd
        if call.estimated:
            row.estimated_calls += 1
            row.estimated_cost_usd += call.cost_usd or 0
    return sorted(rows.values(), key=lambda r: (-r.cost_usd, r.key))


def read_spans(tracking_uri: str | None, experiment: str | None, since: datetime | None) -> Iterator[Any]:
    """Every span of the experiment's traces (all experiments when none is named), newest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if experiment is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    else:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise SystemExit(f"no experiment named {experiment!r} at {client.tracking_uri}")
        experiment_ids = [found.experiment_id]
    filter_string = f"trace.timestamp_ms > {int(since.timestamp() * 1000)}" if since else None
    token = None
    while True:
        page = client.search_traces(
            locations=experiment_ids, filter_string=filter_string, max_results=500, page_token=token
        )
        for trace in page:
            yield from trace.data.spans
        token = page.token
        if not token:
            return


def render(rows: list[Row], by: str, fmt: str) -> str:
    records = [
        {
            by: r.key,
            "calls": r.calls,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "total_tokens": r.total_tokens,
            "cost_usd": f"{r.cost_usd:.6f}",
            "unpriced_calls": r.unpriced_calls,
            "estimated_cost_usd": f"{r.estimated_cost_usd:.6f}",
            "estimated_calls": r.estimated_calls,
        }
        for r in rows
    ]
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[by, *list(records[0])[1:]] if records else [by])
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().rstrip("\n")
    return cost_table(rows, by)


def cost_table(rows: list[Row], by: str) -> str:
    """A fixed-width table with a cumulative USD column and a total line."""
    header = f"{by:<32} {'calls':>5} {'prompt':>9} {'completion':>10} {'tokens':>9} {'USD':>12} {'cumulative':>12}"
    lines = [header, "-" * len(header)]
    running = Decimal(0)
    total = Row("total")
    for r in rows:
        running += r.cost_usd
        for field in ("calls", "prompt_tokens", "completion_tokens", "unpriced_calls"):
            setattr(total, field, getattr(total, field) + getattr(r, field))
        unpriced = " (+unpriced)" if r.unpriced_calls else ""
        estimated = f" (incl. {r.estimated_cost_usd:.6f} estimated)" if r.estimated_calls else ""
        lines.append(
            f"{r.key[:32]:<32} {r.calls:>5} {r.prompt_tokens:>9} {r.completion_tokens:>10} {r.total_tokens:>9} "
            f"{r.cost_usd:>12.6f} {running:>12.6f}{unpriced}{estimated}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<32} {total.calls:>5} {total.prompt_tokens:>9} {total.completion_tokens:>10} "
        f"{total.total_tokens:>9} {running:>12.6f} {running:>12.6f}"
    )
    return "\n".join(lines)


def run_report(
    tracking_uri: str | None, experiment: str | None, since: str | None, by: str = "model", fmt: str = "table"
) -> int:
    since_dt = None
    if since:
        since_dt = datetime.fromisoformat(since)
        if since_dt.tzinfo is None:
            since_dt = since_dt.replace(tzinfo=timezone.utc)
    rows = aggregate(counted_calls(read_spans(tracking_uri, experiment, since_dt)), by)
    print(render(rows, by, fmt))
    return 0
