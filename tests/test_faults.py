"""Backend faults: a refused, hanging, failing (5xx, 429) or dying OTLP endpoint, and an MLflow server that is down or
hangs, cost the application nothing; every span is accounted for (delivery.py); OTLP retries follow the spec; spans
queued during a short outage arrive once the backend is back; and process exit keeps its deadline.

Receivers are real loopback servers (tests/otlp_receiver.py); the pipeline is configure()'s, with the real OTLP and
MLflow exporters and the real openai SDK against the fake provider.
"""

from __future__ import annotations

import gc
import logging
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from decimal import Decimal

import openai
import pytest

import mltrack_otel
from mltrack_otel import config, delivery, guard, ledger, provider
from mltrack_otel.instrumentation import uninstrument
from mltrack_otel.pricing import Pricer, Usage
from tests.mlflow_server import mlflow_server  # noqa: F401  (module-scoped fixture, started only if asked for)
from tests.otlp_receiver import HANG, RESET, OtlpReceiver, SlowProxy, hanging_endpoint
from tests.servers import free_port

USAGE = {"prompt_tokens": 100, "completion_tokens": 20}
CALLS = 200
QUEUE = 64
BATCH = 16
SHUTDOWN_TIMEOUT = 1.0
SLACK = 3.0  # a loaded 2-core machine
# An app call that waited on a failing backend would take at least the exporter's timeout (1 s here, 10 s for
# MLflow); what stays below is the machine's own noise.
APP_WAIT_BOUND = 0.8


@pytest.fixture
def clean(isolated_env, monkeypatch):
    ledger.LEDGER.reset()
    guard.reset()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "1")
    # A full collection of this process's heap (every library the suite has loaded) can pause any thread for
    # half a second on a shared VM: not the app waiting on a backend, which is what the call timings here judge.
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()
    mltrack_otel.shutdown()
    ledger.LEDGER.reset()
    ledger.LEDGER.limits = ledger.Limits()
    config.set_current(None)


@pytest.fixture
def receiver():
    with OtlpReceiver() as running:
        yield running


def _log_calls(n: int, name: str) -> None:
    """n tracked calls, two spans each (the context and the call)."""
    for i in range(n):
        with mltrack_otel.track_llm_context(f"{name}-{i}") as tracker:
            tracker.log_prompt_response("Weather?", "Sunny.", model="gpt-4o", provider="openai", token_usage=USAGE)


def _price(model: str, tokens_in: int, tokens_out: int) -> Decimal:
    return Pricer().price("openai", model, Usage(tokens_in, tokens_out)).total


def _held(delivery) -> int:
    """Spans a batch processor holds in its queue right now (handed, not yet passed to the exporter or dropped)."""
    return delivery.handed - delivery.submitted - delivery.dropped


# --- every fault: the app does not notice, the queue stays bounded, every span is accounted for ---------------------


def _fault_endpoint(fault, receiver, stack):
    if fault == "refused":
        return f"http://127.0.0.1:{free_port()}"
    if fault == "hang-socket":
        url, sock = hanging_endpoint()
        stack.append(sock.close)
        return url
    receiver.default = fault
    receiver.retry_after = "0"  # 429/503 say "retry now": the exporter retries as fast as the spec lets it
    return receiver.url


FAULTS = [
    ("otlp", "refused"),
    ("otlp", "hang-socket"),
    ("otlp", HANG),
    ("otlp", 503),
    ("otlp", 429),
    ("otlp", RESET),
    ("mlflow", "refused"),
    ("mlflow", "hang-socket"),
]


@pytest.mark.parametrize(("exporter", "fault"), FAULTS, ids=[f"{e}-{f}" for e, f in FAULTS])
def test_a_failing_backend_costs_the_app_nothing_and_every_span_is_accounted_for(
    clean, receiver, fake, caplog, exporter, fault
):
    closers: list = []
    endpoint = _fault_endpoint(fault, receiver, closers)
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    question = [{"role": "user", "content": "Tell me about spans please"}]
    baseline = client.chat.completions.create(model="gpt-4o", messages=question)  # before any tracking
    target = {"otlp_endpoint": endpoint} if exporter == "otlp" else {"mlflow_tracking_uri": endpoint}
    mltrack_otel.configure(
        exporters=[exporter, "memory"],
        **target,
        otlp_timeout_seconds=1,
        export_queue_size=QUEUE,
        export_batch_size=BATCH,
        export_delay_ms=10,
        shutdown_timeout_seconds=SHUTDOWN_TIMEOUT,
        cloud_hosts=[fake.host],  # the fake on loopback stands for the cloud API it imitates
    )
    rt = provider.runtime()
    books = rt.deliveries[exporter]
    mltrack_otel.instrument(["openai"])
    slowest, most_held = 0.0, 0
    try:
        with caplog.at_level(logging.WARNING, logger="mltrack_otel"):
            for i in range(CALLS):
                t0 = time.perf_counter()
                _log_calls(1, f"{fault}-{i}")
                if i % 20 == 0:
                    answer = client.chat.completions.create(model="gpt-4o", messages=question)
                    assert answer.choices[0].message.content == baseline.choices[0].message.content
                    assert answer.usage.model_dump() == baseline.usage.model_dump()
                slowest = max(slowest, time.perf_counter() - t0)
                most_held = max(most_held, _held(books))
            t0 = time.perf_counter()
            mltrack_otel.shutdown()
            took = time.perf_counter() - t0
    finally:
        uninstrument(["openai"])
        for close in closers:
            close()

    sdk_calls = CALLS // 20
    produced = 2 * CALLS + sdk_calls
    # The app: no wait on the backend, every span seen by the other exporter, totals exact.
    assert slowest < APP_WAIT_BOUND, f"one call took {slowest:.3f}s: the app waited on the backend"
    assert len(rt.memory_exporter.get_finished_spans()) == produced
    assert mltrack_otel.totals().calls == CALLS + sdk_calls
    sdk_cost = _price(baseline.model, baseline.usage.prompt_tokens, baseline.usage.completion_tokens)
    assert mltrack_otel.totals().cost_usd == CALLS * _price("gpt-4o", 100, 20) + sdk_calls * sdk_cost
    assert took < SHUTDOWN_TIMEOUT + SLACK, f"shutdown() took {took:.1f}s"
    # The queue stayed bounded: it held at most its size, plus a batch on its way to the exporter and the span
    # being handed to it (out of the 400-odd produced).
    assert most_held <= QUEUE + BATCH + 1
    # Every span is accounted for: none was delivered; each failed, was dropped, or was still being sent.
    assert books.handed == produced
    assert books.exported == 0
    assert books.failed + books.dropped + books.in_flight == produced
    assert books.dropped > 0  # the backend is slower than the app: the bounded queue overflowed
    assert books.in_flight <= BATCH
    assert not receiver.accepted_spans()
    counts = guard.health()
    assert counts[f"spans.dropped.{exporter}"] == books.dropped
    assert counts.get(f"spans.export_failed.{exporter}", 0) == books.failed
    assert counts.get("spans.exported.memory") == produced
    assert counts["spans.processed"] == produced
    drop_warnings = [r for r in caplog.records if f"the {exporter} exporter dropped" in r.getMessage()]
    assert len(drop_warnings) == 1  # logged once, then counted
    print(
        f"\n{exporter} {fault}: produced {produced}, delivered 0, failed {books.failed}, dropped {books.dropped}, "
        f"in flight {books.in_flight}; slowest call {slowest * 1e3:.1f} ms, shutdown {took:.2f} s"
    )


# --- a slow backend: the app does not wait, and gets everything there --------------------------------------------


SLOW_CALLS = 60


def _slowest_of_calls(n: int, name: str) -> float:
    slowest = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        _log_calls(1, f"{name}-{i}")
        slowest = max(slowest, time.perf_counter() - t0)
    return slowest


def test_a_slow_otlp_backend_delays_nothing_and_gets_every_span(clean, receiver):
    receiver.delay = 0.5  # per export request
    _configure_otlp(receiver.url, export_batch_size=40, export_delay_ms=2000)  # full batches only
    slowest = _slowest_of_calls(SLOW_CALLS, "slow-otlp")
    mltrack_otel.shutdown()
    assert slowest < 0.25, f"one call took {slowest:.3f}s behind a backend answering in 0.5 s"
    accepted = Counter(s.span_id for s in receiver.accepted_spans())
    assert len(accepted) == sum(accepted.values()) == 2 * SLOW_CALLS
    assert provider.runtime().deliveries["otlp"].exported == 2 * SLOW_CALLS


def test_a_slow_mlflow_server_delays_nothing_and_gets_every_span(clean, mlflow_server):  # noqa: F811
    from mlflow.tracking import MlflowClient

    experiment = f"slow-{uuid.uuid4().hex[:8]}"
    with SlowProxy(mlflow_server, delay=0.1) as proxy:  # every request and body chunk held 0.1 s
        mltrack_otel.configure(
            exporters=["mlflow"],
            mlflow_tracking_uri=proxy.url,
            mlflow_experiment_name=experiment,
            export_batch_size=40,
            export_delay_ms=10,
            shutdown_timeout_seconds=30,
        )
        slowest = _slowest_of_calls(SLOW_CALLS, "slow-mlflow")
        mltrack_otel.shutdown()
    assert slowest < 0.25, f"one call took {slowest:.3f}s behind a slow MLflow server"
    client = MlflowClient(mlflow_server)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    traces = client.search_traces(locations=[experiment_id], max_results=500)
    assert len(traces) == SLOW_CALLS
    assert sum(len(t.data.spans) for t in traces) == 2 * SLOW_CALLS
    assert provider.runtime().deliveries["mlflow"].exported == 2 * SLOW_CALLS


# --- retries, as the OTLP spec says, observed on the wire -----------------------------------------------------------


def _configure_otlp(url: str, *also: str, **extra) -> None:
    options = {"export_queue_size": 2048, "export_batch_size": 512, "export_delay_ms": 10}
    options = {**options, "shutdown_timeout_seconds": 10, **extra}
    mltrack_otel.configure(exporters=["otlp", *also], otlp_endpoint=url, **options)


def _span_ids(request) -> list[str]:
    return sorted(s.span_id for s in request.spans)


def test_429_and_503_are_retried_honouring_retry_after_and_a_dying_backend_is_retried(clean, receiver):
    receiver.answers.extend([(429, "2"), (503, "0"), RESET])  # then 200
    _configure_otlp(receiver.url)
    _log_calls(5, "retried")
    mltrack_otel.shutdown()

    requests = receiver.trace_requests()
    assert [r.answer for r in requests] == [429, 503, RESET, 200]
    assert len({tuple(_span_ids(r)) for r in requests}) == 1  # the same batch, four times
    assert len(requests[0].spans) == 10
    # Retry-After: 2 was honoured: more than the exporter's own first backoff (1 s +-20%) would wait.
    assert requests[1].at - requests[0].at >= 1.9
    books = provider.runtime().deliveries["otlp"]
    assert (books.exported, books.failed, books.dropped) == (10, 0, 0)
    # The backend saw the batch that died mid-export and its retry: a duplicate only the retry could cause.
    received = Counter(s.span_id for r in requests if r.answer in (RESET, 200) for s in r.spans)
    assert set(received.values()) == {2}
    assert len(receiver.accepted_spans()) == 10


def test_400_is_not_retried_and_the_failure_is_counted_and_reported(clean, receiver, caplog):
    receiver.answers.append(400)
    _configure_otlp(receiver.url)
    tracker = mltrack_otel.LLMTracker()
    tracker.log_prompt_response("q", "a", model="gpt-4o", provider="openai", token_usage=USAGE)
    tracker.log_prompt_response("q", "a", model="acme-unknown", provider="acme", token_usage=USAGE)
    with caplog.at_level(logging.INFO, logger="mltrack_otel"):
        mltrack_otel.shutdown()

    assert [r.answer for r in receiver.trace_requests()] == [400]
    counts = mltrack_otel.health()
    assert counts["spans.export_failed.otlp"] == counts["spans.export_failed"] == 2
    assert counts.get("spans.exported.otlp", 0) == 0
    assert counts["spans.processed"] == 2
    assert (counts["spans.priced"], counts["spans.unpriced"]) == (1, 1)
    (line,) = [r.getMessage() for r in caplog.records if "shut down;" in r.getMessage()]
    assert "spans processed 2, priced 1, unpriced 1, dropped 0, export failures 2, tracking errors caught 0" in line
    assert any("the otlp exporter failed to export 2 spans" in r.getMessage() for r in caplog.records)


# --- a short outage: what was queued meanwhile arrives when the backend is back -----------------------------------


def test_spans_queued_during_an_outage_are_delivered_once_the_backend_returns(clean, receiver):
    _configure_otlp(receiver.url, "memory", otlp_timeout_seconds=10)  # the exporter retries for up to 10 s
    rt = provider.runtime()
    _log_calls(20, "before")
    assert len(receiver.wait_for_spans(40)) == 40

    receiver.stop()  # the collector goes away: connections refused
    _log_calls(20, "during")
    time.sleep(0.3)
    books = rt.deliveries["otlp"]
    assert books.exported == 40 < books.submitted  # the exporter is retrying a batch of the outage's spans
    receiver.start()  # back on the same port
    _log_calls(20, "after")
    mltrack_otel.shutdown()

    produced = {format(s.context.span_id, "016x") for s in rt.memory_exporter.get_finished_spans()}
    accepted = Counter(s.span_id for s in receiver.accepted_spans())
    assert len(produced) == 120
    assert set(accepted) == produced
    assert max(accepted.values()) == 1  # no duplicate: a refused connection never half-delivers a batch
    assert (books.handed, books.exported, books.failed, books.dropped) == (120, 120, 0, 0)
    print(f"\noutage: produced {len(produced)}, delivered {len(accepted)}, duplicates 0")


# --- drops are seen when they happen, logged once, and exported as a metric ---------------------------------------


def test_a_full_queue_is_counted_as_it_drops_and_the_count_reaches_the_backend_as_a_metric(clean, receiver):
    receiver.default = HANG  # traces hang; metrics are answered
    _configure_otlp(receiver.url, export_queue_size=32, export_batch_size=8, shutdown_timeout_seconds=2)
    books = provider.runtime().deliveries["otlp"]
    _log_calls(4, "first")
    deadline = time.monotonic() + 10
    while books.in_flight < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert books.in_flight == 8  # the worker is stuck exporting the first batch
    _log_calls(96, "overflow")

    # Live, before any shutdown: the queue filled up (32), the rest was counted as dropped when refused.
    assert books.dropped == 192 - 32
    assert guard.health()["spans.dropped.otlp"] == books.dropped

    mltrack_otel.shutdown()
    # At the deadline the 32 queued spans count as dropped too; the hanging batch is still in flight.
    assert books.dropped == 192
    metric = receiver.counters()["mltrack.spans.dropped{mltrack.exporter=otlp}"]
    assert metric == books.dropped == guard.health()["spans.dropped.otlp"]


def test_without_the_sdk_hooks_drops_are_still_found_when_the_books_close(clean, receiver, monkeypatch):
    # Another SDK layout: neither the enqueue nor the refusal report can be reached.
    monkeypatch.setattr(delivery, "_enqueue_of", lambda processor: None)
    monkeypatch.setattr(delivery, "_report_refusals", lambda processor, books: False)
    receiver.default = HANG
    _configure_otlp(receiver.url, export_queue_size=32, export_batch_size=8, shutdown_timeout_seconds=1)
    books = provider.runtime().deliveries["otlp"]
    _log_calls(100, "blind")
    assert books.handed == 200
    assert books.dropped == 0  # not seen as they happen
    mltrack_otel.shutdown()
    assert books.dropped == 200 - books.in_flight > 0  # but every one is found when the books close


# --- process exit ---------------------------------------------------------------------------------------------------

EXIT_SCRIPT = """
import logging, sys, time
import mltrack_otel
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
url, protocol, delay_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
mltrack_otel.configure(exporters=["otlp"], otlp_endpoint=url, otlp_protocol=protocol,
                       shutdown_timeout_seconds=2.0, export_delay_ms=delay_ms, export_batch_size=50)
tracker = mltrack_otel.LLMTracker()
for _ in range(500):
    tracker.log_prompt_response("q", "a", model="gpt-4o", provider="openai",
                                token_usage={"prompt_tokens": 10, "completion_tokens": 2})
time.sleep(0.2)
print("spans made", flush=True)
"""  # and exits without calling shutdown(): the exit hook does


def _exit_after_spans(url: str, protocol: str, delay_ms: int) -> tuple[float, str]:
    """Run EXIT_SCRIPT; return how long the process took to exit once its spans were made, and its stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(EXIT_SCRIPT), url, protocol, str(delay_ms)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "spans made", proc.stderr.read()
        made = time.monotonic()
        proc.wait(timeout=60)
        exited_after = time.monotonic() - made
    finally:
        proc.kill()
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr
    return exited_after, stderr


def _shutdown_line(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if "shut down;" in line]
    return line


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_process_exit_keeps_the_deadline_with_a_hanging_backend(isolated_env, protocol):
    url, sock = hanging_endpoint()
    try:
        exited_after, stderr = _exit_after_spans(url, protocol, delay_ms=10)  # the worker is stuck in an export
    finally:
        sock.close()
    assert exited_after < 2.0 + SLACK, f"exit took {exited_after:.1f}s with shutdown_timeout_seconds=2"
    line = _shutdown_line(stderr)
    assert "spans processed 500," in line
    # The backend never answered: each span is counted as dropped or failed, but for the one batch in flight.
    dropped, failed = (int(n) for n in re.search(r"dropped (\d+), export failures (\d+)", line).groups())
    assert 500 - 50 <= dropped + failed <= 500


def test_process_exit_flushes_what_is_still_queued(isolated_env, receiver):
    _, stderr = _exit_after_spans(receiver.url, "http/protobuf", delay_ms=60_000)  # nothing leaves before exit
    assert len({s.span_id for s in receiver.accepted_spans()}) == 500
    assert "spans processed 500, priced 500, unpriced 0, dropped 0, export failures 0," in _shutdown_line(stderr)
