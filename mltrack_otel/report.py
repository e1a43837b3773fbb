"""`mltrack-otel report`: totals read back from MLflow traces, grouped by model, provider, day, conversation, user
(user.id), agent (gen_ai.agent.name: the agent run that made the call) or an attribution tag (`tag.<key>`:
mltrack.tag.<key>).

Only spans the ledger counted (mltrack.usage.counted = true) are summed, so a call that several layers describe is
counted once, exactly as in the live totals. A total never hides what it lacks: cost priced from estimated usage
(mltrack.usage.source = estimated) is shown apart, and calls with no cost (no known price, usage absent, or served
locally) are counted and named, never read as $0.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from . import semconv
from .attribution import TAG_KEY, TAG_PREFIX, tag_text

GROUPINGS = ("model", "provider", "day", "conversation", "user", "agent")  # and tag.<key>
NONE = "-"  # the key of calls that lack what the report groups by (no conversation, user, agent or tag)
DEFAULT_TIMEOUT_SECONDS = 10
_USER_ID = "user.id"


class ReportError(Exception):
    """A report that cannot be made, said in one line (no traceback)."""


@dataclass
class Row:
    key: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)  # every known cost, the estimated part included
    estimated_cost_usd: Decimal = Decimal(0)  # the part of cost_usd priced from estimated usage
    estimated_calls: int = 0
    unpriced_calls: int = 0  # reached the provider, cost unknown: cost_usd misses them
    local_calls: int = 0  # served locally with no price set: no cost to miss

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def known_cost(self) -> Decimal | None:
        """cost_usd, or None when no call of the row has a cost: unknown is never shown as $0."""
        return self.cost_usd if self.calls > self.unpriced_calls + self.local_calls else None


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
    usage_source: str = "provider"  # provider | estimated | absent (spans older than the attribute: provider)
    local: bool = False
    # For `compare` (read by counted_calls; report's totals do not use them):
    latency_s: float | None = None  # llm.latency, else the span's duration
    error_type: str | None = None  # error.type, or "ERROR" for a span with an error status and no error.type
    attributes: Mapping[str, Any] = dataclass_field(default_factory=dict)  # the attributes counted_calls(keep=) named
    counted: bool = True  # False: a model call that failed before any usage came back (counted_calls(failed=True))
    started: datetime | None = None  # when the call began (UTC): the time axis of `report --plot`
    user: str = NONE  # user.id
    agent: str = NONE  # gen_ai.agent.name: the innermost agent run the call was made in
    tags: tuple[tuple[str, str], ...] = ()  # (key, value text) of its mltrack.tag.<key> attributes

    def key(self, by: str) -> str:
        """The call's group under a grouping (GROUPINGS or tag.<key>): NONE when it lacks it."""
        if by.startswith("tag."):
            name = by[4:]
            return next((value for key, value in self.tags if key == name), NONE)
        return getattr(self, by)


def check_grouping(by: str) -> str:
    """`by` when the report can group by it, else ValueError saying what it can."""
    if by in GROUPINGS or (by.startswith("tag.") and TAG_KEY.fullmatch(by[4:])):
        return by
    raise ValueError(f"cannot group by {by!r}: use {', '.join(GROUPINGS)} or tag.<key> (e.g. tag.feature)")


def counted_calls(spans: Iterable[Any], keep: Collection[str] = (), failed: bool = False) -> Iterator[CountedCall]:
    """Counted model calls among MLflow spans (anything with `.attributes` and `.start_time_ns`), keeping the
    attributes named in `keep`. With `failed`, also the model calls that failed before any usage came back (no
    tokens, no cost, counted=False; the innermost span of a failed call, as the ledger counts the innermost
    span), after the counted ones."""
    failures: list[tuple[Any, Any, CountedCall]] = []  # (trace, span id, call) of uncounted failed model calls
    callers: set[tuple[Any, Any]] = set()  # (trace, parent id) of every model-call span: its parent wraps a call
    for span in spans:
        attrs = span.attributes or {}
        if failed and gen_ai.GEN_AI_OPERATION_NAME in attrs:
            trace_id = getattr(span, "trace_id", None)
            callers.add((trace_id, getattr(span, "parent_id", None)))
            if semconv.MLTRACK_USAGE_COUNTED not in attrs and _error_of(span, attrs) is not None:
                failures.append((trace_id, getattr(span, "span_id", None), _call(span, attrs, keep, counted=False)))
        if attrs.get(semconv.MLTRACK_USAGE_COUNTED) is not True:
            continue
        yield _call(span, attrs, keep)
    for trace_id, span_id, call in failures:
        if (trace_id, span_id) not in callers:
            yield call


def _call(span: Any, attrs: Mapping[str, Any], keep: Collection[str], counted: bool = True) -> CountedCall:
    cost = attrs.get(semconv.LLM_COST_TOTAL)
    started = datetime.fromtimestamp((span.start_time_ns or 0) / 1e9, tz=UTC)
    return CountedCall(
        model=str(attrs.get(gen_ai.GEN_AI_RESPONSE_MODEL) or attrs.get(gen_ai.GEN_AI_REQUEST_MODEL) or "?"),
        provider=str(attrs.get(gen_ai.GEN_AI_PROVIDER_NAME) or "?"),
        day=started.date().isoformat(),
        conversation=str(attrs.get(gen_ai.GEN_AI_CONVERSATION_ID) or NONE),
        prompt_tokens=int(attrs.get(semconv.LLM_TOKENS_PROMPT) or 0),
        completion_tokens=int(attrs.get(semconv.LLM_TOKENS_COMPLETION) or 0),
        cost_usd=Decimal(str(cost)) if cost is not None else None,
        usage_source=str(attrs.get(semconv.MLTRACK_USAGE_SOURCE) or "provider"),
        local=attrs.get(semconv.MLTRACK_COST_LOCAL) is True,
        latency_s=_latency(span, attrs),
        error_type=_error_of(span, attrs),
        attributes={key: attrs[key] for key in keep if key in attrs},
        counted=counted,
        started=started,
        user=str(attrs.get(_USER_ID) or NONE),
        agent=str(attrs.get(gen_ai.GEN_AI_AGENT_NAME) or NONE),
        tags=tuple(
            (name[len(TAG_PREFIX) :], tag_text(value))
            for name, value in attrs.items()
            if name.startswith(TAG_PREFIX) and value is not None
        ),
    )


def _latency(span: Any, attrs: Mapping[str, Any]) -> float | None:
    latency = attrs.get(semconv.LLM_LATENCY)
    if isinstance(latency, int | float) and not isinstance(latency, bool) and latency >= 0:
        return float(latency)
    start, end = getattr(span, "start_time_ns", None), getattr(span, "end_time_ns", None)
    return (end - start) / 1e9 if isinstance(start, int) and isinstance(end, int) and end >= start else None


def _error_of(span: Any, attrs: Mapping[str, Any]) -> str | None:
    error = attrs.get("error.type")
    if error:
        return str(error)
    code = getattr(getattr(span, "status", None), "status_code", None)
    return "ERROR" if str(getattr(code, "value", code)).upper().endswith("ERROR") else None


def aggregate(calls: Iterable[CountedCall], by: str) -> list[Row]:
    check_grouping(by)
    rows: dict[str, Row] = {}
    for call in calls:
        key = call.key(by)
        row = rows.setdefault(key, Row(key))
        row.calls += 1
        row.prompt_tokens += call.prompt_tokens
        row.completion_tokens += call.completion_tokens
        estimated = call.usage_source == "estimated"
        row.estimated_calls += estimated
        if call.cost_usd is not None:
            row.cost_usd += call.cost_usd
            if estimated:
                row.estimated_cost_usd += call.cost_usd
        # A call whose usage never arrived cost something no one knows, whatever figure it carries.
        if call.cost_usd is None or call.usage_source == "absent":
            if call.local:
                row.local_calls += 1
            else:
                row.unpriced_calls += 1
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
            raise ReportError(f"no experiment named {experiment!r} at {client.tracking_uri}")
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


def _usd(value: Decimal) -> str:
    """Exact decimal text, never rounded and never in exponent form (machine formats keep every digit)."""
    return f"{value:f}"


def render(rows: list[Row], by: str, fmt: str) -> str:
    records = [
        {
            by: r.key,
            "calls": r.calls,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "total_tokens": r.total_tokens,
            "cost_usd": None if r.known_cost is None else _usd(r.cost_usd),
            "estimated_cost_usd": _usd(r.estimated_cost_usd),
            "estimated_calls": r.estimated_calls,
            "unpriced_calls": r.unpriced_calls,
            "local_calls": r.local_calls,
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


_SUMMED = ("calls", "prompt_tokens", "completion_tokens", "estimated_calls", "unpriced_calls", "local_calls")


def cost_table(rows: list[Row], by: str) -> str:
    """A fixed-width table with a cumulative USD column, a total line and a footnote for each thing the total
    does not plainly say: an estimated part, calls it misses, calls served locally."""
    header = (
        f"{by:<32} {'calls':>5} {'prompt':>9} {'completion':>10} {'tokens':>9} {'USD':>12} {'estimated':>12} "
        f"{'cumulative':>12}"
    )
    lines = [header, "-" * len(header)]
    priced = False  # until a row has a known cost, the cumulative cost is unknown, not 0
    total = Row("total")
    for r in rows:
        priced = priced or r.known_cost is not None
        total.cost_usd += r.cost_usd
        total.estimated_cost_usd += r.estimated_cost_usd
        for field in _SUMMED:
            setattr(total, field, getattr(total, field) + getattr(r, field))
        lines.append(
            f"{r.key[:32]:<32} {r.calls:>5} {r.prompt_tokens:>9} {r.completion_tokens:>10} {r.total_tokens:>9} "
            f"{_cell(r.known_cost)} {_cell(r.estimated_cost_usd if r.estimated_calls else None)} "
            f"{_cell(total.cost_usd if priced else None)}{_marks(r)}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<32} {total.calls:>5} {total.prompt_tokens:>9} {total.completion_tokens:>10} "
        f"{total.total_tokens:>9} {_cell(total.known_cost)} "
        f"{_cell(total.estimated_cost_usd if total.estimated_calls else None)} {_cell(total.known_cost)}{_marks(total)}"
    )
    lines.extend(_footnotes(total))
    return "\n".join(lines)


def _cell(usd: Decimal | None) -> str:
    return f"{usd:>12.6f}" if usd is not None else f"{'-':>12}"


def _marks(row: Row) -> str:
    marks = []
    if row.unpriced_calls:
        marks.append(f"+{row.unpriced_calls} unpriced")
    if row.local_calls:
        marks.append(f"{row.local_calls} local")
    return f" ({', '.join(marks)})" if marks else ""


def _calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


def _footnotes(total: Row) -> list[str]:
    notes = []
    if total.estimated_calls:
        notes.append(
            f"* ${total.estimated_cost_usd:.6f} of the total is priced from estimated usage: "
            f"{_calls(total.estimated_calls)} ended before the provider reported it"
        )
    if total.unpriced_calls:
        notes.append(
            f"* the total is incomplete: it misses the cost of {_calls(total.unpriced_calls)} with no known price "
            "or no usage (add a price_overrides entry to price them)"
        )
    if total.local_calls:
        notes.append(f"* {_calls(total.local_calls)} served locally, with no cloud price and no price_overrides entry")
    return notes


_AGE = re.compile(r"(\d+)\s*([mhdw])(?:\s+ago)?", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`today`, `yesterday` (UTC midnights, like the report's days), an age such as `30m`, `24h`, `7d`, `2w`,
    or an ISO date or datetime (UTC unless it names a zone)."""
    now = now or datetime.now(UTC)
    word = text.strip().lower()
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - timedelta(days=1)
    age = _AGE.fullmatch(word)
    if age:
        return now - timedelta(**{_UNITS[age[2]]: int(age[1])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use today, yesterday, an age such as 30m, 24h, 7d or 2w, "
            "or an ISO date or datetime such as 2026-01-31 or 2026-01-31T09:00"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def check_store(uri: str) -> None:
    """Refuse a local store that does not exist: MLflow would create an empty one and the report would read 0."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    scheme = parsed.scheme.lower() if len(parsed.scheme) > 1 else ""  # "C:" is a drive, not a scheme
    if scheme.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(uri).database
        if database and database != ":memory:" and not Path(database).is_file():
            raise ReportError(f"no MLflow store at {uri}: {Path(database).resolve()} does not exist")
    elif scheme == "file" or (not scheme and not uri.lower().startswith("databricks")):  # a folder store
        folder = Path(unquote(parsed.path) if scheme else uri)
        if not folder.exists():
            raise ReportError(f"no MLflow store at {uri}: {folder.resolve()} does not exist")


@contextlib.contextmanager
def bounded_http(timeout_seconds: int | None) -> Iterator[None]:
    """MLflow's client waits 120 s per request and retries 7 times with growing back-off: minutes on a dead
    server. A report is one look: bound it, unless the user set MLflow's variables (an explicit --timeout wins)."""
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_seconds or DEFAULT_TIMEOUT_SECONDS),
    }
    saved = {name: os.environ.get(name) for name in wanted}
    for name, value in wanted.items():
        if saved[name] is None or (timeout_seconds and name == "MLFLOW_HTTP_REQUEST_TIMEOUT"):
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reason(exc: BaseException, timeout: str) -> str:
    """What went wrong, in a few words: MLflow's messages nest urllib3's, which repeat the whole request."""
    text = str(exc).strip()
    if "ReadTimeoutError" in text or "timed out" in text:
        return f"no answer within {timeout} s (see --timeout)"
    if "NewConnectionError" in text or "Connection refused" in text:
        return "connection refused (is the server running, and is the port right?)"
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:300] + "..."


def run_report(
    tracking_uri: str | None,
    experiment: str | None,
    since: str | datetime | None,
    by: str = "model",
    fmt: str = "table",
    timeout_seconds: int | None = None,
    plot: str | Path | None = None,
) -> int:
    since_dt = parse_since(since) if isinstance(since, str) else since

    def read(uri: str) -> list[CountedCall]:
        check_store(uri)
        with bounded_http(timeout_seconds):
            return list(counted_calls(read_spans(uri, experiment, since_dt)))

    def draw(calls: list[CountedCall], path: str | Path) -> None:
        from .plot import cost_over_time

        cost_over_time(calls, by=by, path=path)

    return run_reader(
        "report", tracking_uri, timeout_seconds, read, lambda calls: render(aggregate(calls, by), by, fmt), plot, draw
    )


def run_reader(
    command: str,
    tracking_uri: str | None,
    timeout_seconds: int | None,
    read: Callable[[str], Any],
    show: Callable[[Any], str],
    plot: str | Path | None = None,
    draw: Callable[[Any, str | Path], None] | None = None,
    picture: str = "cost",
) -> int:
    """What every command that reads MLflow shares: a missing plot extra said before reading, the store read
    (`read(uri)`), failures as one line, the output printed (`show`), then the picture (`draw`). Exit status."""
    import mlflow
    import requests
    from mlflow.exceptions import MlflowException

    from .plot import PlotError, require_matplotlib

    prefix = f"mltrack-otel {command}"
    if plot is not None:
        try:
            require_matplotlib()
        except PlotError as exc:
            print(f"{prefix}: {exc}", file=sys.stderr)
            return 1
    uri = tracking_uri or mlflow.get_tracking_uri()
    try:
        result = read(uri)
        output = show(result)
    except ReportError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 1
    except (MlflowException, requests.RequestException, OSError) as exc:
        timeout = timeout_seconds or os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or DEFAULT_TIMEOUT_SECONDS
        print(f"{prefix}: cannot read traces from {uri}: {_reason(exc, str(timeout))}", file=sys.stderr)
        return 1
    print(output)
    if plot is not None and draw is not None:
        try:
            draw(result, plot)
        except PlotError as exc:
            print(f"{prefix}: {exc}", file=sys.stderr)
            return 1
        print(f"{picture} plot written to {plot}", file=sys.stderr)
    return 0
