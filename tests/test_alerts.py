"""Real-time alerts (mltrack_otel/alerts.py): rules over cost, tokens and unpriced calls, per window and scope, and
their notifications: a log record, `on_alert` callbacks, a span event, and an HTTP webhook delivered by one
background worker.

Real components: the openai SDK against the loopback fake provider, the CostSpanProcessor counting into the process
ledger (fixture `priced`) or the pipeline configure() builds, and real HTTP receivers on 127.0.0.1 (http.server in a
thread): one that answers, one that hangs (reads the request and never answers) and a closed port (refuses). Windows
are driven by a clock injected into alerts.py, never by sleeping. Nothing here asserts on time: a dead or slow
webhook is shown to cost the application nothing by the calls' results, the queue's bound and the drop counters.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

import mltrack_otel
from mltrack_otel import alerts, call_context, config, ledger, provider, semconv
from mltrack_otel.errors import ConfigError
from mltrack_otel.instrumentation import instrument, uninstrument
from tests.instr_fixtures import use_settings

MODEL = "gpt-4o-mini"
UNPRICED_MODEL = "acme-unknown-model"
ROOT = Path(__file__).resolve().parent.parent


# --- a real webhook receiver -----------------------------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread that records every POST. `hang`: it reads the request and never
    answers (until closed). `statuses`: the status of each request in turn (then 200)."""

    def __init__(self, hang: bool = False, statuses: tuple[int, ...] = ()) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses = list(statuses)
        self.hang = hang
        self.release = threading.Event()
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with receiver._cond:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": json.loads(raw or b"null")}
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver._cond.notify_all()
                if receiver.hang:
                    receiver.release.wait(30)
                    return  # closes without an answer
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-token"

    def wait_for(self, n: int, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= n, timeout)

    def bodies(self) -> list[Any]:
        with self._cond:
            return [r["body"] for r in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def closed_port_url() -> str:
    """A URL on a port nothing listens on: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/hook"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:  # on a day boundary: 2027-01-15T08:00:00Z is not
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    fake_clock = Clock()
    alerts.set_clock(fake_clock)
    yield fake_clock
    alerts.set_clock(None)


class Received(list):
    """The alerts an on_alert callback received; .threads: the name of the thread each ran on."""

    threads: list[str]


@pytest.fixture
def received() -> Iterator[Received]:
    got = Received()

    def collect(alert: alerts.Alert) -> None:
        got.append(alert)
        threads.append(threading.current_thread().name)

    threads: list[str] = []
    got.threads = threads
    mltrack_otel.on_alert(collect)
    yield got
    alerts.off_alert(collect)


@pytest.fixture
def alerting(priced) -> Iterator[Any]:
    """openai instrumented into the harness whose processor counts into the process ledger (fixture `priced`);
    alert rules are installed with use_settings(...). Sums and the worker are left clean."""
    alerts.reset()
    yield priced
    alerts.flush(10)
    alerts.reset()


def rules(*rule: dict[str, Any], **more: Any) -> config.Settings:
    """Install Settings with these alert rules for the rest of the test (the settings fixture restores)."""
    return use_settings(alerts=list(rule), **more)


def chat(client: Any, text: str = "hello there", model: str = MODEL, **kw: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def counted(exporter: Any) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.attributes.get(semconv.MLTRACK_USAGE_COUNTED)]


def alert_events(span: Any) -> list[dict[str, Any]]:
    return [dict(e.attributes) for e in span.events if e.name == semconv.MLTRACK_ALERT_FIRED]


def health(name: str) -> int:
    return mltrack_otel.health().get(name, 0)


# --- end to end: a cost rule through the real SDK ------------------------------------------------------------------


def test_a_cost_rule_fires_once_when_the_running_total_crosses(alerting, oai, receiver, received, caplog):
    first = chat(oai)
    per_call = Decimal(str(counted(alerting)[0].attributes[semconv.LLM_COST_TOTAL]))
    ledger.LEDGER.reset()
    alerting.clear()
    over = per_call * Decimal("2.5")  # the third call crosses
    rules(
        {"when": "cost", "over": str(over), "notify": ["log", "webhook", "callback"], "name": "spend"},
        alert_webhook={"url": receiver.url},
    )
    caplog.set_level(logging.WARNING, logger="mltrack_otel.alerts")

    answers = [chat(oai) for _ in range(6)]

    # The application's calls are untouched.
    assert [a.choices[0].message.content for a in answers] == [first.choices[0].message.content] * 6
    assert alerts.flush(10)
    assert receiver.wait_for(1)
    assert len(receiver.requests) == 1 and len(received) == 1 and health("alerts.fired") == 1  # once, not 4 times
    spans = sorted(counted(alerting), key=lambda s: s.end_time)
    assert [len(alert_events(s)) for s in spans] == [0, 0, 1, 0, 0, 0]  # on the span that crossed
    crossing_total = sum(Decimal(str(s.attributes[semconv.LLM_COST_TOTAL])) for s in spans[:3])

    alert = received[0]
    assert alert.rule == "spend" and alert.when == "cost" and alert.scope == "process" and alert.key is None
    assert alert.value == 3 * per_call == pytest.approx(crossing_total)  # the ledger's exact sum at the crossing
    assert ledger.LEDGER.process_totals().cost_usd == 6 * per_call
    assert alert.span_id == f"{spans[2].context.span_id:016x}" and alert.model and alert.model.startswith(MODEL)

    body = receiver.bodies()[0]
    assert body["source"] == "mltrack-otel" and body["rule"] == "spend" and body["when"] == "cost"
    assert body["over"] == float(over) and body["unit"] == "USD" and body["per"] == "none"
    assert Decimal(body["value_exact"]) == 3 * per_call and body["value"] == float(3 * per_call)
    assert body["span"]["trace_id"] == f"{spans[2].context.trace_id:032x}"
    assert receiver.requests[0]["headers"]["Content-Type"] == "application/json"
    assert receiver.requests[0]["path"] == "/hook/secret-token"

    event = alert_events(spans[2])[0]
    assert event[semconv.MLTRACK_ALERT_NAME] == "spend" and event[semconv.MLTRACK_ALERT_WHEN] == "cost"
    assert event[semconv.MLTRACK_ALERT_VALUE] == float(3 * per_call)
    assert event[semconv.MLTRACK_ALERT_OVER] == float(over) and semconv.MLTRACK_ALERT_KEY not in event

    logged = [r for r in caplog.records if r.name == "mltrack_otel.alerts"]
    assert len(logged) == 1 and "'spend'" in logged[0].getMessage() and "USD" in logged[0].getMessage()
    assert "secret-token" not in caplog.text  # the webhook's URL may carry a secret
    assert health("alerts.webhook.sent") == 1


def test_callbacks_run_on_the_alert_worker_and_their_errors_stay_there(alerting, oai, received):
    def broken(alert: alerts.Alert) -> None:
        raise RuntimeError("user code failed")

    mltrack_otel.on_alert(broken)
    try:
        rules({"when": "tokens", "over": 0})
        answer = chat(oai)
        assert answer.choices[0].message.content.startswith("Echo:")
        assert alerts.flush(10)
    finally:
        alerts.off_alert(broken)
    assert len(received) == 1 and received.threads == ["mltrack-otel-alerts"]  # not the caller's thread
    assert health("errors.alerts.callback") == 1
    assert received[0].value == answer.usage.total_tokens


def test_a_failure_inside_the_alert_hook_never_reaches_the_call(alerting, oai, monkeypatch):
    rules({"when": "tokens", "over": 0})

    def broken(*args: Any) -> None:
        raise RuntimeError("bug in alerts")

    monkeypatch.setattr(alerts.Engine, "observe", broken)
    answer = chat(oai)
    assert answer.choices[0].message.content.startswith("Echo:")
    (span,) = counted(alerting)  # still priced and counted, without an alert event
    assert span.attributes[semconv.LLM_COST_TOTAL] > 0 and not alert_events(span)
    assert health("errors.alerts.observe") == 1 and ledger.LEDGER.process_totals().calls == 1


# --- windows and re-arming ------------------------------------------------------------------------------------------


def test_a_windowed_rule_fires_once_per_window_and_rearms_in_the_next(alerting, oai, clock, received):
    tokens = chat(oai).usage.total_tokens  # the same for every call below
    rules({"when": "tokens", "over": tokens * 2, "per": "minute", "notify": ["callback"]})
    clock.now = 1_800_000_000.0  # a minute boundary: 1_800_000_000 = 30_000_000 minutes

    for _ in range(5):  # crosses on the third call, then stays above: once
        chat(oai)
        clock.now += 5
    assert alerts.flush(10) and len(received) == 1
    assert received[0].value == 3 * tokens
    assert received[0].window_start == 1_800_000_000.0 and received[0].window_end == 1_800_000_060.0

    clock.now = 1_800_000_060.0  # the next minute: the sum starts from zero, the rule is armed again
    chat(oai)
    chat(oai)
    assert alerts.flush(10) and len(received) == 1  # 2 * tokens is not over
    chat(oai)
    assert alerts.flush(10) and len(received) == 2
    assert received[1].value == 3 * tokens and received[1].window_start == 1_800_000_060.0

    clock.now += 3600  # an hour later, a single call does not cross
    chat(oai)
    assert alerts.flush(10) and len(received) == 2


def test_hour_and_day_windows_are_calendar_windows(alerting, oai, clock, received):
    rules(
        {"when": "tokens", "over": 0, "per": "hour", "notify": ["callback"], "name": "h"},
        {"when": "tokens", "over": 0, "per": "day", "notify": ["callback"], "name": "d"},
    )
    day = 86_400 * 20_000  # midnight UTC
    clock.now = day + 3599
    chat(oai)
    clock.now = day + 3600  # a new hour, the same day
    chat(oai)
    clock.now = day + 86_400  # a new day
    chat(oai)
    assert alerts.flush(10)
    fired = [(a.rule, a.window_start) for a in received]
    assert fired == [("h", day), ("d", day), ("h", day + 3600), ("h", day + 86_400), ("d", day + 86_400)]


# --- scopes ---------------------------------------------------------------------------------------------------------


def test_user_scope_sums_per_user_id(alerting, oai, received):
    tokens = chat(oai).usage.total_tokens
    rules({"when": "tokens", "over": tokens * 2, "scope": "user", "notify": ["callback"]})

    for user, calls in (("alice", 3), ("bob", 2), ("carol", 1)):
        with call_context.attached({"user.id": user}):
            for _ in range(calls):
                chat(oai)
    chat(oai)  # no user: not in any user's sum
    chat(oai)

    assert alerts.flush(10)
    assert [(a.key, a.value) for a in received] == [("alice", 3 * tokens)]
    (span,) = [s for s in counted(alerting) if alert_events(s)]
    assert span.attributes["user.id"] == "alice"
    assert alert_events(span)[0][semconv.MLTRACK_ALERT_KEY] == "alice"
    assert alert_events(span)[0][semconv.MLTRACK_ALERT_SCOPE] == "user"


def test_conversation_scope_sums_per_conversation(alerting, oai, received):
    tokens = chat(oai).usage.total_tokens
    rules({"when": "tokens", "over": tokens, "scope": "conversation", "notify": ["callback"]})

    with mltrack_otel.track_llm_context("chat", conversation_id="conv-1"):
        chat(oai)
        chat(oai)  # crosses
    with mltrack_otel.track_llm_context("chat", conversation_id="conv-2"):
        chat(oai)
    with mltrack_otel.track_llm_context("chat", conversation_id="conv-1"):
        chat(oai)  # conv-1 stays above: no second alert

    assert alerts.flush(10)
    assert [(a.key, a.value) for a in received] == [("conv-1", 2 * tokens)]


def test_context_scope_sums_in_every_enclosing_scope(alerting, oai, received):
    tokens = chat(oai).usage.total_tokens
    rules({"when": "tokens", "over": int(tokens * 1.5), "scope": "context", "notify": ["callback"]})

    with mltrack_otel.track_llm_context("job"):
        with mltrack_otel.track_llm_context("step-1"):
            chat(oai)
        with mltrack_otel.track_llm_context("step-2"):
            chat(oai)  # job crosses (2 calls); neither step does
            chat(oai)  # step-2 crosses
    with mltrack_otel.track_llm_context("job"):  # another scope of the same name starts from zero
        chat(oai)

    assert alerts.flush(10)
    assert [(a.key, a.value) for a in received] == [("job", 2 * tokens), ("step-2", 2 * tokens)]


def test_process_scope_fires_once_under_concurrency(alerting, oai, received):
    tokens = chat(oai).usage.total_tokens
    ledger.LEDGER.reset()
    rules({"when": "tokens", "over": tokens * 10 - 1, "notify": ["callback"]})
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(4):
                chat(oai)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert alerts.flush(10)
    assert len(received) == 1 and received[0].value == 10 * tokens  # the tenth counted call crossed, alone
    assert ledger.LEDGER.process_totals().total_tokens == 32 * tokens


# --- the other rule kinds -------------------------------------------------------------------------------------------


def test_unpriced_rule_counts_calls_without_a_price(alerting, oai, received):
    rules(
        {"when": "unpriced", "over": 1, "notify": ["callback"], "name": "unpriced"},
        {"when": "cost", "over": 0, "notify": ["callback"], "name": "any-cost"},
    )
    chat(oai, model=UNPRICED_MODEL)
    chat(oai)  # priced: not an unpriced call; its cost fires the cost rule
    chat(oai, model=UNPRICED_MODEL)  # the second unpriced call: over 1
    chat(oai, model=UNPRICED_MODEL)

    assert alerts.flush(10)
    assert [(a.rule, a.value) for a in received if a.rule == "unpriced"] == [("unpriced", 2)]
    assert [a.rule for a in received].count("any-cost") == 1  # unpriced calls add no cost (never $0)
    (span,) = [
        s for s in counted(alerting) if any(e[semconv.MLTRACK_ALERT_NAME] == "unpriced" for e in alert_events(s))
    ]
    assert span.attributes[semconv.MLTRACK_COST_UNPRICED] is True
    assert received[-1].unit == "calls"


def test_tokens_rule_counts_input_and_output(alerting, oai, received):
    rules({"when": "tokens", "over": 6, "notify": ["callback"]})
    answer = chat(oai, max_tokens=3)  # 5 input tokens (the fake's formula: 3 + words) and 3 output tokens
    assert answer.usage.prompt_tokens <= 6 < answer.usage.total_tokens  # only both together are over
    assert alerts.flush(10)
    assert received[0].value == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert received[0].unit == "tokens"


def test_notify_decides_the_channels(alerting, oai, receiver, received, caplog):
    caplog.set_level(logging.WARNING, logger="mltrack_otel.alerts")
    rules(
        {"when": "tokens", "over": 0, "notify": ["log"], "name": "log-only"},
        {"when": "tokens", "over": 0, "notify": ["webhook"], "name": "hook-only"},
        {"when": "tokens", "over": 0, "name": "default"},  # log, callback and (configured) webhook
        alert_webhook={"url": receiver.url},
    )
    chat(oai)
    assert alerts.flush(10) and receiver.wait_for(2)
    logged = [r.getMessage() for r in caplog.records if r.name == "mltrack_otel.alerts"]
    assert len(logged) == 2 and "'log-only'" in logged[0] and "'default'" in logged[1]
    assert sorted(b["rule"] for b in receiver.bodies()) == ["default", "hook-only"]
    assert [a.rule for a in received] == ["default"]


# --- the webhook ------------------------------------------------------------------------------------------------------


def test_slack_format_posts_an_incoming_webhook_text(alerting, oai, receiver):
    rules(
        {
            "when": "tokens",
            "over": 0,
            "scope": "user",
            "name": "chatty",
            "webhook": {"url": receiver.url, "format": "slack", "headers": {"Authorization": "Bearer s3cret"}},
        }
    )
    with call_context.attached({"user.id": "alice"}):
        chat(oai)
    assert alerts.flush(10) and receiver.wait_for(1)
    (request,) = receiver.requests
    assert set(request["body"]) == {"text"}
    assert "'chatty'" in request["body"]["text"] and "user 'alice'" in request["body"]["text"]
    assert request["headers"]["Authorization"] == "Bearer s3cret"


def test_a_failing_webhook_is_retried_with_backoff(alerting, oai):
    flaky = Receiver(statuses=(503, 500))
    try:
        rules({"when": "tokens", "over": 0, "webhook": {"url": flaky.url, "retries": 3, "backoff_seconds": 0.01}})
        chat(oai)
        assert alerts.flush(10) and flaky.wait_for(3)
    finally:
        flaky.close()
    assert len(flaky.requests) == 3 and flaky.bodies()[0] == flaky.bodies()[2]
    assert health("alerts.webhook.retries") == 2 and health("alerts.webhook.sent") == 1
    assert health("alerts.webhook.failed") == 0


def test_a_client_error_is_not_retried(alerting, oai):
    refusing = Receiver(statuses=(400,))
    try:
        rules({"when": "tokens", "over": 0, "webhook": {"url": refusing.url, "retries": 3, "backoff_seconds": 0}})
        chat(oai)
        assert alerts.flush(10)
    finally:
        refusing.close()
    assert len(refusing.requests) == 1
    assert health("alerts.webhook.failed") == 1 and health("alerts.webhook.retries") == 0


def test_a_refused_webhook_costs_the_application_nothing_and_is_counted(alerting, oai, received):
    url = closed_port_url()
    rules(
        {
            "when": "tokens",
            "over": 0,
            "scope": "user",
            "webhook": {"url": url, "retries": 2, "backoff_seconds": 0.01, "timeout_seconds": 2},
        }
    )
    answers = []
    for user in ("u1", "u2", "u3"):
        with call_context.attached({"user.id": user}):
            answers.append(chat(oai, text=f"question from {user}"))
    assert [a.choices[0].message.content.split()[:4] for a in answers] == [
        ["Echo:", "question", "from", user] for user in ("u1", "u2", "u3")
    ]
    assert alerts.flush(10)
    assert health("alerts.fired") == 3 and len(received) == 3  # callbacks still run
    assert health("alerts.webhook.failed") == 3 and health("alerts.webhook.retries") == 6  # 3 attempts each
    assert health("alerts.webhook.sent") == 0 and health("alerts.dropped.queue_full") == 0


def test_a_hanging_webhook_costs_the_application_nothing_and_drops_are_counted(alerting, oai):
    hanging = Receiver(hang=True)
    users = [f"user-{i}" for i in range(12)]
    try:
        rules(
            {
                "when": "tokens",
                "over": 0,
                "scope": "user",
                "notify": ["webhook"],
                "webhook": {"url": hanging.url, "timeout_seconds": 120, "retries": 0},
            },
            alert_queue_size=2,
        )
        answers = []
        for user in users:  # every call crosses its user's rule: 12 alerts
            with call_context.attached({"user.id": user}):
                answers.append(chat(oai, text=f"hi from {user}"))
            assert alerts.pending() <= 2  # the bound: waiting plus being sent
        assert [a.choices[0].message.content.split()[3] for a in answers] == users  # every call answered, in order
        assert hanging.wait_for(1)  # the worker is stuck in the first POST, which is never answered
        assert health("alerts.fired") == 12 and alerts.pending() == 2
        assert health("alerts.dropped.queue_full") == 10  # the rest were dropped, and counted
        assert health("alerts.webhook.sent") == 0
    finally:
        hanging.close()  # the stuck POST's connection is closed unanswered; the next finds the receiver gone
    assert alerts.flush(20)
    assert health("alerts.webhook.failed") == 2 and health("alerts.webhook.sent") == 0 and alerts.pending() == 0


def test_a_webhook_that_never_answers_times_out_and_is_retried(alerting, oai, received):
    hanging = Receiver(hang=True)
    try:
        rules({"when": "tokens", "over": 0, "webhook": {"url": hanging.url, "timeout_seconds": 0.2, "retries": 1}})
        chat(oai)
        assert alerts.flush(20)  # both attempts time out
        assert len(hanging.requests) == 2 and len(received) == 1
        assert health("alerts.webhook.failed") == 1 and health("alerts.webhook.retries") == 1
        assert health("alerts.webhook.sent") == 0
    finally:
        hanging.close()


# --- configuration ------------------------------------------------------------------------------------------------


def write_config(folder: Path, text: str) -> Path:
    path = folder / ".mltrack.yml"
    path.write_text(text)
    return path


def test_rules_from_mltrack_yml_through_configure(pipeline, isolated_env, fake, receiver, received):
    write_config(
        isolated_env,
        f"""
exporters: [memory]
alerts:
  - {{when: tokens, over: 0, per: hour, scope: user, notify: [log, webhook, callback], name: per-user}}
  - when: cost
    over: 1000
alert_webhook:
  url: {receiver.url}
  format: json
  timeout_seconds: 2
  retries: 1
""",
    )
    provider.configure()
    settings = config.current()
    assert [r.label for r in settings.alerts] == ["per-user", "cost over 1000 by process"]
    assert settings.alert_webhook.retries == 1
    import openai

    instrument(["openai"])
    try:
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
        with call_context.attached({"user.id": "dana"}):
            chat(client)
    finally:
        uninstrument(["openai"])
    assert alerts.flush(10) and receiver.wait_for(1)
    assert receiver.bodies()[0]["key"] == "dana" and receiver.bodies()[0]["per"] == "hour"
    rt = provider.runtime()
    (span,) = [s for s in rt.memory_exporter.get_finished_spans() if alert_events(s)]
    assert alert_events(span)[0][semconv.MLTRACK_ALERT_NAME] == "per-user"
    assert [a.key for a in received] == ["dana"]
    alerts.reset()


def test_configure_accepts_rules_in_python(pipeline):
    provider.configure(
        exporters=["memory"],
        alerts=[{"when": "cost", "over": 5.0, "per": "hour", "scope": "process"}],
        alert_webhook={"url": "https://hooks.example.invalid/x", "format": "slack"},
    )
    engine = alerts.engine()
    (rule,) = engine.rules
    assert rule.over == Decimal("5.0") and rule.length == 3600
    assert rule.channels == {"log", "callback", "webhook"}  # webhook: one is configured
    assert "hooks.example.invalid" not in repr(config.current())  # the URL may carry a secret


def test_rules_from_the_environment(isolated_env, monkeypatch):
    monkeypatch.setenv("MLTRACK_ALERTS", '[{"when": "tokens", "over": 100, "per": "day", "scope": "conversation"}]')
    monkeypatch.setenv("MLTRACK_ALERT_WEBHOOK", "{url: 'http://127.0.0.1:9/x', format: slack}")
    settings = config.load_settings()
    assert settings.alerts[0].scope == "conversation" and settings.alerts[0].per == "day"
    assert settings.alert_webhook.format == "slack"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("alerts: [{when: money, over: 1}]", "key 'alerts.0.when': Input should be 'cost', 'tokens' or 'unpriced'"),
        ("alerts: [{when: cost, over: -1}]", "key 'alerts.0.over': Input should be greater than or equal to 0"),
        ("alerts: [{when: cost, over: .nan}]", "key 'alerts.0.over'"),
        ("alerts: [{when: cost}]", "key 'alerts.0.over': Field required"),
        ("alerts: [{when: cost, over: 1, per: week}]", "key 'alerts.0.per': Input should be 'minute', 'hour'"),
        ("alerts: [{when: cost, over: 1, scope: team}]", "key 'alerts.0.scope': Input should be 'process'"),
        ("alerts: [{when: cost, over: 1, notify: [email]}]", "key 'alerts.0.notify.0'"),
        ("alerts: [{when: cost, over: 1, treshold: 2}]", "key 'alerts.0.treshold': unknown key"),
        ("alerts: [{when: cost, over: 1, notify: [webhook]}]", "key 'alerts.0.notify': names webhook"),
        ("alerts: {when: cost, over: 1}", "key 'alerts'"),
        ("alert_webhook: {url: 'ftp://host/x'}", "key 'alert_webhook.url': Value error, expected an http"),
        ("alert_webhook: {url: 'http://h/x', format: teams}", "key 'alert_webhook.format'"),
        ("alert_webhook: {url: 'http://h/x', timeout_seconds: 0}", "key 'alert_webhook.timeout_seconds'"),
        ("alert_webhook: {url: 'http://h/x', retries: 11}", "key 'alert_webhook.retries'"),
        ("alert_webhook: {url: 'http://h/x', retry: 1}", "key 'alert_webhook.retry': unknown key"),
        ("alert_queue_size: 0", "key 'alert_queue_size'"),
    ],
)
def test_invalid_alert_configuration_names_the_key(isolated_env, text, needle):
    path = write_config(isolated_env, text + "\n")
    with pytest.raises(ConfigError) as raised:
        config.load_settings()
    assert str(path) in str(raised.value) and needle in str(raised.value)


def test_per_null_is_a_running_total(isolated_env):
    write_config(isolated_env, "alerts: [{when: tokens, over: 5, per: null}]\n")
    assert config.load_settings().alerts[0].per == "none"


# --- bounds -------------------------------------------------------------------------------------------------------


def test_per_key_sums_are_bounded(alerting, oai):
    rules({"when": "tokens", "over": 10**9, "scope": "user", "notify": ["log"]}, max_conversations=3)
    for i in range(5):
        with call_context.attached({"user.id": f"user-{i}"}):
            chat(oai)
    (rule,) = alerts.engine().rules
    assert list(rule.sums) == ["user-2", "user-3", "user-4"]  # least recently counted ones forgotten
    assert health("alerts.keys_evicted") == 2


def test_no_rules_no_events_and_no_worker(alerting, oai):
    rules()
    chat(oai)
    assert not any(alert_events(s) for s in alerting.get_finished_spans())
    assert health("alerts.fired") == 0


# --- the collector path: a Prometheus alerting rule file --------------------------------------------------------------

ALERT_RULES = ROOT / "deploy" / "prometheus-alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
COLLECTOR_CONFIG = ROOT / "collector-config.yaml"
METRICS_REGISTRY = ROOT / "semconv" / "model" / "metrics.yaml"


def prometheus_name(name: str, unit: str, counter: bool) -> str:
    """How the collector's prometheus exporter (contrib 0.136, suffixes on) names a metric: dots become
    underscores, a unit outside braces is appended (unless a name token already), and a monotonic sum gets
    `_total` (moved to the end)."""
    tokens = name.replace(".", "_").split("_")
    if unit and "{" not in unit and unit not in tokens:
        tokens.append(unit)
    if counter:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    return "_".join(tokens)


def exported_names() -> set[str]:
    """Every series name the compose stack's Prometheus can have from us: the signaltometrics sums (not monotonic
    in contrib 0.136, so gauges: no `_total`) and the counters the apps send over OTLP."""
    collector = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    names = {
        prometheus_name(m["name"], str(m.get("unit", "")), counter=False)
        for m in collector["connectors"]["signaltometrics"]["spans"]
    }
    for group in yaml.safe_load(METRICS_REGISTRY.read_text())["groups"]:
        if group["type"] == "metric" and group["instrument"] == "counter":
            names.add(prometheus_name(group["metric_name"], group["unit"], counter=True))
    return names


def metrics_in(expr: str) -> set[str]:
    """Our metric names a PromQL expression reads (label names in selectors and by/without lists left out)."""
    text = re.sub(r"\{[^}]*\}", "", expr)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    return set(re.findall(r"\b(?:llm|gen_ai|mltrack)_[A-Za-z0-9_:]*", text))


def check_alert_rules(rules_doc: Any, produced: set[str]) -> list[str]:
    """What is wrong with an alerting rule file: structure, and metrics the stack does not produce."""
    problems = []
    groups = rules_doc.get("groups") if isinstance(rules_doc, dict) else None
    if not groups:
        return ["no groups"]
    names = set()
    for group in groups:
        if not group.get("name") or not group.get("rules"):
            problems.append(f"group {group.get('name')!r}: needs a name and rules")
            continue
        for rule in group["rules"]:
            label = rule.get("alert")
            if not label:
                problems.append(f"group {group['name']}: a rule without `alert` (a recording rule?)")
                continue
            if label in names:
                problems.append(f"{label}: duplicate alert name")
            names.add(label)
            used = metrics_in(str(rule.get("expr", "")))
            if not used:
                problems.append(f"{label}: expr reads none of our metrics")
            for metric in sorted(used - produced):
                problems.append(f"{label}: {metric} is not a metric the collector exports")
            if not str(rule.get("for", "")).strip():
                problems.append(f"{label}: no `for`")
            if (rule.get("labels") or {}).get("severity") not in ("info", "warning", "critical"):
                problems.append(f"{label}: labels.severity must be info, warning or critical")
            annotations = rule.get("annotations") or {}
            if not annotations.get("summary") or not annotations.get("description"):
                problems.append(f"{label}: annotations need summary and description")
    return problems


def test_prometheus_alert_rules_read_what_the_collector_exports():
    produced = exported_names()
    assert {"llm_cost_total_USD", "gen_ai_usage_input_tokens", "gen_ai_usage_output_tokens"} <= produced
    assert "mltrack_client_calls_unpriced_total" in produced
    doc = yaml.safe_load(ALERT_RULES.read_text())
    assert check_alert_rules(doc, produced) == []
    used = set().union(*(metrics_in(r["expr"]) for g in doc["groups"] for r in g["rules"]))
    assert {"llm_cost_total_USD", "gen_ai_usage_input_tokens", "gen_ai_usage_output_tokens"} <= used  # the sums


def test_the_checker_catches_broken_rule_files():
    produced = exported_names()
    rule = {
        "alert": "X",
        "expr": "sum(increase(llm_cost_total[1h])) > 5",  # without the unit the exporter appends: no such series
        "labels": {},
        "annotations": {"summary": "s"},
    }
    problems = check_alert_rules({"groups": [{"name": "g", "rules": [rule, {"record": "r", "expr": "1"}]}]}, produced)
    assert any("llm_cost_total is not" in p for p in problems)
    assert any("no `for`" in p for p in problems) and any("severity" in p for p in problems)
    assert any("summary and description" in p for p in problems) and any("without `alert`" in p for p in problems)
    assert check_alert_rules({}, produced) == ["no groups"]
    assert metrics_in('sum by (gen_ai_request_model) (increase(llm_cost_total_USD{gen_ai_provider_name="x"}[1h]))') == {
        "llm_cost_total_USD"
    }


def test_prometheus_loads_the_rule_file_in_compose():
    prometheus = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in compose["services"]["prometheus"]["volumes"]}
    assert mounts.get("/etc/prometheus/alerts.yml") == "./deploy/prometheus-alerts.yml"


needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is not installed (the structural checks above run)"
)


@needs_promtool
def test_promtool_checks_the_rule_file():
    done = subprocess.run(
        ["promtool", "check", "rules", str(ALERT_RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


@needs_promtool
def test_promtool_checks_the_prometheus_config_with_its_rules(tmp_path):
    """The config as compose mounts it: the rule file at the path prometheus.yml names (rewritten into tmp_path)."""
    rules_copy = tmp_path / "alerts.yml"
    rules_copy.write_text(ALERT_RULES.read_text())
    config_copy = tmp_path / "prometheus.yml"
    config_copy.write_text(PROMETHEUS_CONFIG.read_text().replace("/etc/prometheus/alerts.yml", str(rules_copy)))
    done = subprocess.run(
        ["promtool", "check", "config", str(config_copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_the_readme_example_is_a_valid_configuration(isolated_env):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Alerts\n", 1)[1].split("\n## ", 1)[0]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    write_config(isolated_env, example)
    settings = config.load_settings()
    assert [r.when for r in settings.alerts] == ["cost", "tokens", "unpriced"]
    assert settings.alert_webhook.format == "slack" and settings.alert_queue_size == 1000


FORK_SCRIPT = """
import os, sys
import mltrack_otel
from mltrack_otel import alerts

mltrack_otel.configure(
    exporters=["none"],
    alerts=[{"when": "tokens", "over": 0, "scope": "context", "notify": ["webhook"]}],
    alert_webhook={"url": sys.argv[1], "retries": 0, "timeout_seconds": 5},
)

def call(name):
    with mltrack_otel.track_llm_context(name) as tracker:
        tracker.log_prompt_response("q", "a", model="gpt-4o", provider="openai",
                                    token_usage={"prompt_tokens": 5, "completion_tokens": 2})

call("parent")  # the worker runs in the parent before the fork
pid = os.fork()
if pid == 0:
    call("child")
    os._exit(0 if alerts.flush(10) and mltrack_otel.health().get("alerts.webhook.sent") == 1 else 1)
_, status = os.waitpid(pid, 0)
call("parent-after")
assert alerts.flush(10)
print("child", os.waitstatus_to_exitcode(status), "parent sent", mltrack_otel.health().get("alerts.webhook.sent"))
"""


def test_a_forked_child_delivers_its_own_alerts(isolated_env, receiver):
    script = isolated_env / "app.py"
    script.write_text(FORK_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), receiver.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert "child 0 parent sent 2" in done.stdout
    assert receiver.wait_for(3)
    assert sorted(b["key"] for b in receiver.bodies()) == ["child", "parent", "parent-after"]
