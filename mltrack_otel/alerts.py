"""Real-time alerts: rules over cost, tokens and unpriced calls, per window and scope, with their notifications.

    alerts:
      - {when: cost, over: 5.0, per: hour, scope: user, notify: [log, webhook, callback]}
    alert_webhook: {url: https://hooks.slack.com/services/..., format: slack}

Where the numbers come from: the CostSpanProcessor calls :func:`observe` once per *counted* span, right after the
ledger added that call (processor._describe_usage), with the same exact values the ledger added: tokens in + out,
the Decimal cost (None: unpriced), and the scope chain, conversation and ``user.id`` of the call. The ledger keeps
running totals only; a rule's window (minute / hour / day, UTC calendar windows, or none = the running total since
the rule was configured) needs sums of its own, so each rule keeps one small sum per key of its scope here (the
process; each enclosing tracking scope, held weakly; each conversation; each user, the latter two in an LRU of
``max_conversations`` keys), under one lock, so two threads crossing together fire once.

A rule fires when an addition takes its sum from at or below ``over`` to above it: once per crossing, and again
only in a later window (the sum starts from zero in each). When it fires:

- ``log``: a WARNING record on the ``mltrack_otel.alerts`` logger, on the caller's thread (like the limit warnings);
- a span event ``mltrack.alert.fired`` on the span that crossed (added to the copy exporters receive);
- ``callback``: every function given to :func:`on_alert`, and ``webhook``: an HTTP POST (JSON, or Slack's
  ``{"text": ...}``), both on ONE background worker behind a bounded queue (``alert_queue_size``), so user code and
  the network never run on the caller's thread. The POST has a timeout and retries with exponential backoff.
  A full queue drops the alert (``alerts.dropped.queue_full`` in ``mltrack_otel.health()``), and a webhook that
  failed every attempt is counted in ``alerts.webhook.failed``.

Without ``notify``, a rule logs, calls the callbacks, and POSTs when a webhook is configured.
"""

from __future__ import annotations

import atexit
import http.client
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import Event

from . import config, guard, semconv
from .config import AlertRule, Settings, WebhookSettings

_log = logging.getLogger("mltrack_otel.alerts")

_WINDOWS = {"minute": 60, "hour": 3600, "day": 86400, "none": None}
_UNITS = {"cost": "USD", "tokens": "tokens", "unpriced": "calls"}
_USER_ID = "user.id"
_MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model")
_EXIT_WAIT_SECONDS = 1.0  # what interpreter exit waits for alerts still queued
_BACKOFF_CAP_SECONDS = 30.0
_NO_EVENTS: tuple[Event, ...] = ()

_clock: Callable[[], float] = time.time  # seconds since the epoch; tests put in their own (set_clock)


def set_clock(clock: Callable[[], float] | None) -> None:
    """Use `clock` (seconds since the epoch) to place additions in windows; None: the real time (tests)."""
    global _clock
    _clock = clock or time.time


# --- what a notification carries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """One firing of a rule: what a callback receives, and what the webhook body is made from."""

    rule: str  # the rule's name, or a description of it
    when: str  # cost | tokens | unpriced
    over: Decimal
    value: Decimal | int  # the sum that went above `over`: exact (USD as Decimal)
    per: str  # minute | hour | day | none
    scope: str  # process | context | conversation | user
    key: str | None  # which context (its name), conversation or user; None for the process
    time: float  # when it fired (seconds since the epoch)
    window_start: float | None = None
    window_end: float | None = None
    service: str = ""
    model: str | None = None
    span_name: str = ""
    trace_id: str = ""
    span_id: str = ""
    channels: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def unit(self) -> str:
        return _UNITS[self.when]

    def text(self) -> str:
        """One line for people (the log record and Slack)."""
        whose = "the process" if self.key is None else f"{self.scope} {self.key!r}"
        window = "" if self.per == "none" else f" this {self.per}"
        model = f", model {self.model}" if self.model else ""
        return (
            f"mltrack-otel alert {self.rule!r}: {whose} reached {_number(self.value)} {self.unit}{window} "
            f"(over {_number(self.over)} {self.unit}; service {self.service}{model})"
        )

    def as_dict(self) -> dict[str, Any]:
        """The webhook's JSON body (format: json)."""
        return {
            "source": "mltrack-otel",
            "rule": self.rule,
            "when": self.when,
            "over": float(self.over),
            "value": float(self.value),
            "value_exact": str(self.value),
            "unit": self.unit,
            "per": self.per,
            "scope": self.scope,
            "key": self.key,
            "time": _iso(self.time),
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "service": self.service,
            "model": self.model,
            "span": {"name": self.span_name, "trace_id": self.trace_id, "span_id": self.span_id},
            "text": self.text(),
        }


def _number(value: Decimal | int) -> str:
    return f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


# --- callbacks -----------------------------------------------------------------------------------------------------

_callbacks: list[Callable[[Alert], Any]] = []
_callbacks_lock = threading.Lock()


def on_alert(fn: Callable[[Alert], Any]) -> Callable[[Alert], Any]:
    """Call fn(alert) for every alert of a rule that notifies `callback` (the default). It runs on the alert
    worker thread, never on the thread whose call crossed; what it raises is counted and logged once. Returns fn,
    so it works as a decorator."""
    if not callable(fn):
        raise TypeError(f"on_alert() needs a callable, not {fn!r}")
    with _callbacks_lock:
        if fn not in _callbacks:
            _callbacks.append(fn)
    return fn


def off_alert(fn: Callable[[Alert], Any]) -> None:
    """Stop calling fn (no error if it was not registered)."""
    with _callbacks_lock:
        if fn in _callbacks:
            _callbacks.remove(fn)


# --- rules and their sums ------------------------------------------------------------------------------------------


class _Sum:
    __slots__ = ("value", "window")

    def __init__(self, window: int) -> None:
        self.window = window  # the window the value is of (-1: none yet)
        self.value: Decimal | int = 0


class _Rule:
    """A configured rule, its channels, and its sums per key of its scope."""

    def __init__(self, rule: AlertRule, settings: Settings, max_keys: int) -> None:
        self.rule = rule
        self.name = rule.label
        self.when = rule.when
        self.over = rule.over
        # Token and call sums are ints: compare them with an int (the same answer as with the Decimal, faster).
        self.limit: Decimal | int = rule.over if rule.when == "cost" else int(rule.over.to_integral_value(ROUND_FLOOR))
        self.per = rule.per
        self.scope = rule.scope
        self.length = _WINDOWS[rule.per]
        self.webhook: WebhookSettings | None = rule.webhook or settings.alert_webhook
        if rule.notify is None:
            channels = {"log", "callback"} | ({"webhook"} if self.webhook is not None else set())
        else:
            channels = set(rule.notify)
        self.channels = frozenset(channels)
        self.max_keys = max_keys
        self.total = _Sum(-1)  # scope process
        self.sums: OrderedDict[str, _Sum] = OrderedDict()  # conversations or users: an LRU of max_keys
        self.scopes: weakref.WeakKeyDictionary[Any, _Sum] = weakref.WeakKeyDictionary()  # live tracking scopes

    def entries(self, scope: Any, conversation: str | None, user: Any) -> list[tuple[Any, _Sum]]:
        """(key, sum) of each sum a call adds to (under the engine's lock)."""
        kind = self.scope
        if kind == "process":
            return [(None, self.total)]
        if kind == "context":
            if scope is None:
                return []
            out = []
            for s in scope.chain():
                entry = self.scopes.get(s)
                if entry is None:
                    entry = self.scopes[s] = _Sum(-1)
                out.append((s, entry))
            return out
        key = conversation if kind == "conversation" else user
        if key is None or isinstance(key, (list, tuple)):
            return []
        key = str(key)
        sums = self.sums
        entry = sums.get(key)
        if entry is None:
            entry = sums[key] = _Sum(-1)
            if len(sums) > self.max_keys:
                sums.popitem(last=False)
                guard.count("alerts.keys_evicted")
        else:
            sums.move_to_end(key)
        return [(key, entry)]


class Engine:
    """The rules of one Settings (rebuilt when configure() installs others)."""

    def __init__(self, settings: Settings | None) -> None:
        self.settings = settings
        max_keys = settings.max_conversations if settings is not None else 10_000
        self.rules = tuple(_Rule(rule, settings, max_keys) for rule in settings.alerts) if settings else ()
        self.service = settings.service_name if settings is not None else ""
        self.queue_size = settings.alert_queue_size if settings is not None else 1000
        self._lock = threading.Lock()  # a forked child gets a fresh one (_renew_in_child)

    def observe(
        self,
        span: Any,
        attrs: Mapping[str, Any],
        scope: Any,
        conversation: str | None,
        tokens: int,
        cost: Decimal | None,
        unpriced: bool,
    ) -> Sequence[Event]:
        now = _clock()
        fired: list[tuple[_Rule, Any, Decimal | int, int]] = []
        user = attrs.get(_USER_ID)
        with self._lock:
            for rule in self.rules:
                when = rule.when
                amount = cost if when == "cost" else tokens if when == "tokens" else int(unpriced)
                if not amount:  # nothing to add (and an unpriced call adds no cost)
                    continue
                window = int(now // rule.length) if rule.length else 0
                limit = rule.limit
                for key, entry in rule.entries(scope, conversation, user):
                    before = entry.value if entry.window == window else 0  # a new window: the rule re-arms
                    entry.window, entry.value = window, before + amount
                    if before <= limit < entry.value:
                        fired.append((rule, key, entry.value, window))
        if not fired:
            return _NO_EVENTS
        return [self._fire(rule, key, value, window, now, span, attrs) for rule, key, value, window in fired]

    def _fire(self, rule: _Rule, key: Any, value: Any, window: int, now: float, span: Any, attrs: Any) -> Event:
        guard.count("alerts.fired")
        label = None if key is None else key.name if rule.scope == "context" else str(key)
        start = window * rule.length if rule.length else None
        ctx = span.context
        model = next((m for m in (attrs.get(k) for k in _MODEL_KEYS) if isinstance(m, str)), None)
        alert = Alert(
            rule=rule.name,
            when=rule.when,
            over=rule.over,
            value=value,
            per=rule.per,
            scope=rule.scope,
            key=label,
            time=now,
            window_start=start,
            window_end=start + rule.length if start is not None else None,
            service=self.service,
            model=model,
            span_name=span.name,
            trace_id=f"{ctx.trace_id:032x}",
            span_id=f"{ctx.span_id:016x}",
            channels=rule.channels,
        )
        if "log" in rule.channels:
            _log.warning("%s", alert.text())
        if "callback" in rule.channels or ("webhook" in rule.channels and rule.webhook is not None):
            _DISPATCHER.submit(alert, rule.webhook if "webhook" in rule.channels else None, self.queue_size)
        attributes: dict[str, Any] = {
            semconv.MLTRACK_ALERT_NAME: rule.name,
            semconv.MLTRACK_ALERT_WHEN: rule.when,
            semconv.MLTRACK_ALERT_SCOPE: rule.scope,
            semconv.MLTRACK_ALERT_PER: rule.per,
            semconv.MLTRACK_ALERT_OVER: float(rule.over),
            semconv.MLTRACK_ALERT_VALUE: float(value),
        }
        if label is not None:
            attributes[semconv.MLTRACK_ALERT_KEY] = label
        return Event(semconv.MLTRACK_ALERT_FIRED, attributes, timestamp=span.end_time)


_engine = Engine(None)


def engine() -> Engine:
    """The rules in force: those of the active Settings (rebuilt when they change)."""
    global _engine
    current = config._current
    if _engine.settings is not current:
        _engine = Engine(current)
    return _engine


def observe(
    span: Any,
    attrs: Mapping[str, Any],
    scope: Any,
    conversation: str | None,
    tokens: int,
    cost: Decimal | None,
    unpriced: bool,
) -> Sequence[Event]:
    """One counted call, as the ledger just added it: the span events of the rules it made fire (the processor
    adds them to the span). Never raises."""
    try:
        current = _engine if _engine.settings is config._current else engine()
        if not current.rules:
            return _NO_EVENTS
        return current.observe(span, attrs, scope, conversation, tokens, cost, unpriced)
    except Exception as exc:
        guard.record_error("alerts.observe", exc)
        return _NO_EVENTS


def reset() -> None:
    """Forget every rule's sums (they start again from zero); tests."""
    global _engine
    _engine = Engine(_engine.settings)


# --- the worker: callbacks and webhooks, off the caller's thread ---------------------------------------------------


class _Dispatcher:
    """ONE daemon thread behind a queue bounded by the configured alert_queue_size (alerts waiting plus the one
    being handled). Started on the first alert: nothing runs at start-up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[Alert, WebhookSettings | None]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._exit_hook = False

    def submit(self, alert: Alert, webhook: WebhookSettings | None, size: int) -> None:
        with self._lock:
            q = self._queue
            if (self._thread is None or not self._thread.is_alive()) and not self._start():
                guard.count("alerts.dropped.no_worker")  # no thread can start (interpreter exit)
                return
            full = q.unfinished_tasks >= size
            if not full:
                q.put_nowait((alert, webhook))
        if full:
            guard.count("alerts.dropped.queue_full")
            if guard.first_time("alerts.queue_full"):
                _log.warning(
                    "mltrack-otel: the alert queue is full (%d alerts: a slow webhook or callback?); alerts are "
                    "dropped and counted in health()['alerts.dropped.queue_full']",
                    size,
                )

    def _start(self) -> bool:
        """Start the worker (under the lock)."""
        thread = threading.Thread(target=self._run, args=(self._queue,), name="mltrack-otel-alerts", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            return False
        self._thread = thread
        if not self._exit_hook:
            atexit.register(flush, _EXIT_WAIT_SECONDS)
            self._exit_hook = True
        return True

    def _run(self, q: queue.Queue[tuple[Alert, WebhookSettings | None]]) -> None:
        while True:
            alert, webhook = q.get()
            try:
                if "callback" in alert.channels:
                    with _callbacks_lock:
                        callbacks = list(_callbacks)
                    for fn in callbacks:
                        guard.guarded("alerts.callback", fn, alert)
                if webhook is not None:
                    guard.guarded("alerts.webhook", _deliver, alert, webhook)
            finally:
                q.task_done()

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def flush(self, timeout: float) -> bool:
        q = self._queue
        with q.all_tasks_done:
            return q.all_tasks_done.wait_for(lambda: q.unfinished_tasks == 0, timeout)

    def renew_in_child(self) -> None:
        """A forked child has no worker, and the parent's queue may be locked: start afresh."""
        self._lock = threading.Lock()
        self._queue = queue.Queue()
        self._thread = None


_DISPATCHER = _Dispatcher()


def _renew_in_child() -> None:
    """The parent may have forked while one of its threads held a lock: the child would wait on it forever."""
    _engine._lock = threading.Lock()
    _DISPATCHER.renew_in_child()


os.register_at_fork(after_in_child=_renew_in_child)


def pending() -> int:
    """Alerts queued for (or being handled by) the worker."""
    return _DISPATCHER.pending()


def flush(timeout: float = 5.0) -> bool:
    """Wait until the worker has handled every queued alert (shutdown, tests); False on timeout."""
    return _DISPATCHER.flush(timeout)


def body(alert: Alert, fmt: str) -> bytes:
    """The webhook request body: our JSON payload, or Slack's incoming-webhook shape."""
    payload = {"text": alert.text()} if fmt == "slack" else alert.as_dict()
    return json.dumps(payload).encode()


_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


def _deliver(alert: Alert, webhook: WebhookSettings) -> None:
    """POST the alert, retrying with exponential backoff on connection errors, timeouts, 429 and 5xx."""
    data = body(alert, webhook.format)
    headers = {"Content-Type": "application/json", "User-Agent": "mltrack-otel-alerts", **webhook.headers}
    problem = ""
    # No spans for our own POST from an HTTP-client instrumentation the application may run.
    token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        for attempt in range(webhook.retries + 1):
            if attempt:
                guard.count("alerts.webhook.retries")
                time.sleep(min(webhook.backoff_seconds * 2 ** (attempt - 1), _BACKOFF_CAP_SECONDS))
            request = urllib.request.Request(webhook.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=webhook.timeout_seconds) as response:
                    response.read(64 * 1024)
                guard.count("alerts.webhook.sent")
                return
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
                exc.close()
                if exc.code not in _RETRY_STATUSES:
                    break
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, bad response
                problem = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
    finally:
        otel_context.detach(token)
    guard.count("alerts.webhook.failed")
    if guard.first_time("alerts.webhook.failed"):
        _log.warning(
            "mltrack-otel: an alert webhook to %s failed after %d attempt(s) (%s); further failures are counted in "
            "health()['alerts.webhook.failed']",
            urlsplit(webhook.url).hostname,  # never the path or query: Slack's carry the secret
            webhook.retries + 1,
            problem,
        )
