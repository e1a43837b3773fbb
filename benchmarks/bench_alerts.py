"""Alert latency: from the counted call that crosses a rule to the webhook request arriving at its receiver.

    python -m benchmarks.bench_alerts [--crossings 50] [--format json|slack]

Real openai SDK calls against the loopback fake provider, through the pipeline configure() builds (no exporter),
with one rule `{when: tokens, over: 0, scope: user, notify: [webhook]}`: each call made as a new user crosses it
once. The receiver is an http.server on 127.0.0.1 that notes the time it has read each request. Latency = that
time minus the alert's own crossing time (`Alert.time`, taken in the processor when the rule fired; both
`time.time()` in this process). One crossing at a time: each waits for its delivery before the next, so this is
the path's latency (processor -> queue -> worker -> HTTP POST -> receiver), not queueing behind other alerts.

Also printed: what the alert hook adds to a counted span in the processor (alerts.observe), with no rule, with
three rules that do not fire, and with a per-user rule over 10,000 users (its LRU), in microseconds per span.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import mltrack_otel
from mltrack_otel import alerts, call_context, config, ledger, provider
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.testing.fake_provider import FakeProvider


class _Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}  # alert key (user) -> time the request was read
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrived = time.time()
                body = json.loads(raw)
                key = body.get("key") or body["text"].split("user '")[1].split("'")[0]
                self.send_response(204)
                self.end_headers()
                with receiver.cond:
                    receiver.arrivals[key] = arrived
                    receiver.cond.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, key: str, timeout: float = 10.0) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.arrivals, timeout):
                raise TimeoutError(f"no webhook for {key} within {timeout} s")
            return self.arrivals[key]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def latency(crossings: int, fmt: str) -> list[float]:
    """Milliseconds from each crossing to its webhook's arrival."""
    import openai

    receiver = _Receiver()
    crossed: dict[str, float] = {}
    mltrack_otel.on_alert(lambda alert: None)  # callbacks registered (none notified): the usual worker path
    with FakeProvider() as fake:
        provider.configure(
            exporters=["none"],
            cloud_hosts=["127.0.0.1"],
            alerts=[{"when": "tokens", "over": 0, "scope": "user", "notify": ["webhook", "callback"]}],
            alert_webhook={"url": receiver.url, "format": fmt, "timeout_seconds": 5, "retries": 0},
        )
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-bench", max_retries=0)
        instrument(["openai"])

        def note(alert: alerts.Alert) -> None:
            crossed[alert.key or ""] = alert.time

        mltrack_otel.on_alert(note)
        try:
            for warm in range(5):  # connections, imports, the worker thread
                _call(client, f"warm-{warm}")
                receiver.wait(f"warm-{warm}")
            out = []
            for i in range(crossings):
                user = f"user-{i}"
                _call(client, user)
                arrived = receiver.wait(user)
                alerts.flush(5)  # the callback has noted the crossing time too
                out.append((arrived - crossed[user]) * 1000)
            return out
        finally:
            alerts.off_alert(note)
            uninstrument(["openai"])
            provider.shutdown()
            receiver.close()


def _call(client: Any, user: str) -> None:
    with call_context.attached({"user.id": user}):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


class _Span:
    """What observe() reads of a span (a counted span's name, context and end time)."""

    class _Ctx:
        trace_id, span_id = 1, 2

    name, end_time, context = "chat gpt-4o-mini", 0, _Ctx()


def hook_cost(n: int = 50_000, rounds: int = 5) -> dict[str, float]:
    """µs per counted span that alerts.observe adds, per configuration (median of rounds)."""
    span, cost = _Span(), Decimal("0.0000123")
    cases = {
        "no rules": config.Settings(),
        "3 rules, none fires": config.Settings(
            alerts=[
                {"when": "cost", "over": 10**9, "per": "hour", "notify": ["log"]},
                {"when": "tokens", "over": 10**12, "per": "day", "notify": ["log"]},
                {"when": "unpriced", "over": 10**9, "notify": ["log"]},
            ]
        ),
        "per-user rule, 10k users": config.Settings(
            alerts=[{"when": "cost", "over": 10**9, "per": "hour", "scope": "user", "notify": ["log"]}]
        ),
    }
    users = [{"user.id": f"user-{i}"} for i in range(10_000)]
    out = {}
    for name, settings in cases.items():
        config.set_current(settings)
        alerts.reset()
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            for i in range(n):
                alerts.observe(span, users[i % 10_000], None, None, 120, cost, False)
            samples.append((time.perf_counter() - start) / n * 1e6)
        out[name] = statistics.median(samples)
    config.set_current(None)
    alerts.reset()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crossings", type=int, default=50)
    parser.add_argument("--format", choices=("json", "slack"), default="json")
    args = parser.parse_args()

    ms = sorted(latency(args.crossings, args.format))
    q = statistics.quantiles(ms, n=10)
    print(f"alert latency, crossing -> webhook received ({args.crossings} crossings, {args.format} body, loopback):")
    print(f"  median {statistics.median(ms):.2f} ms   p90 {q[8]:.2f} ms   min {ms[0]:.2f} ms   max {ms[-1]:.2f} ms")
    print("alert hook per counted span (alerts.observe), µs:")
    for name, us in hook_cost().items():
        print(f"  {name:<28} {us:6.2f}")
    ledger.LEDGER.reset()


if __name__ == "__main__":
    main()
