"""Sustained load through the real pipeline, and thousands of abandoned streams.

* Threads and asyncio tasks call for a few seconds: real openai (sync) and anthropic (async) calls against the fake
  provider, and calls logged by hand, exported over OTLP to a real loopback receiver. The ledger's total equals,
  to the last decimal, a sum computed from what the SDKs returned; every span produced arrives exactly once (none
  dropped: the queue is big enough); memory stays bounded.
* Streams opened and never read nor closed end their spans exactly once, marked incomplete, when the garbage
  collector takes them; nothing of them stays behind.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections import Counter
from decimal import Decimal

import anthropic
import openai
import pytest

import mltrack_otel
from mltrack_otel import config, guard, ledger, provider
from mltrack_otel.instrumentation import uninstrument
from mltrack_otel.instrumentation._base import StreamRecorder
from mltrack_otel.pricing import Pricer, Usage
from tests.otlp_receiver import OtlpReceiver

LOAD_SECONDS = 3.0
PRICER = Pricer()  # prices independently of the pipeline's own
QUESTION = [{"role": "user", "content": "Summarise the quarterly report please"}]
LOGGED_MODELS = [("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku-20241022"), ("acme", "acme-unpriced")]


@pytest.fixture
def clean(isolated_env, monkeypatch):
    ledger.LEDGER.reset()
    guard.reset()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "1")
    yield
    mltrack_otel.shutdown()
    uninstrument(["openai", "anthropic"])
    ledger.LEDGER.reset()
    config.set_current(None)


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _PeakRss:
    """Samples the process's resident memory every 20 ms while it runs."""

    def __init__(self) -> None:
        self.peak = self.start = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


class _Book:
    """What one worker did, by its own count: calls, spans, and the price of each usage it got back."""

    def __init__(self) -> None:
        self.calls = 0
        self.spans = 0
        self.cost = Decimal(0)
        self.unpriced = 0

    def add(self, provider_name: str, model: str, usage: Usage, spans: int) -> None:
        cost = PRICER.price(provider_name, model, usage)
        self.calls += 1
        self.spans += spans
        if cost is None:
            self.unpriced += 1
        else:
            self.cost += cost.total


def _openai_worker(base_url: str, deadline: float, book: _Book) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    while time.monotonic() < deadline:
        answer = client.chat.completions.create(model="gpt-4o", messages=QUESTION)
        usage = Usage(answer.usage.prompt_tokens, answer.usage.completion_tokens)
        book.add("openai", answer.model, usage, spans=1)


def _logging_worker(index: int, deadline: float, book: _Book) -> None:
    tracker = mltrack_otel.LLMTracker()
    n = 0
    while time.monotonic() < deadline:
        provider_name, model = LOGGED_MODELS[n % len(LOGGED_MODELS)]
        usage = Usage(100 + n % 37, 10 + (index + n) % 11)
        with mltrack_otel.track_llm_context(f"logged-{index}-{n}"):
            tracker.log_prompt_response(
                "q",
                "a",
                model=model,
                provider=provider_name,
                token_usage={"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens},
            )
        book.add(provider_name, model, usage, spans=2)
        n += 1


async def _anthropic_task(client: anthropic.AsyncAnthropic, deadline: float, book: _Book) -> None:
    while time.monotonic() < deadline:
        message = await client.messages.create(model="claude-3-5-haiku-latest", max_tokens=64, messages=QUESTION)
        usage = Usage(message.usage.input_tokens, message.usage.output_tokens)
        book.add("anthropic", message.model, usage, spans=1)  # ours alone: the SDK's own span is switched off


def _anthropic_loop(base_url: str, deadline: float, books: list[_Book]) -> None:
    async def main() -> None:
        client = anthropic.AsyncAnthropic(base_url=base_url, api_key="sk-test", max_retries=0)
        await asyncio.gather(*(_anthropic_task(client, deadline, book) for book in books))

    asyncio.run(main())


def test_sustained_load_totals_exact_no_span_lost_memory_bounded(clean, fake):
    with OtlpReceiver() as receiver:
        mltrack_otel.configure(
            exporters=["otlp"],
            otlp_endpoint=receiver.url,
            export_queue_size=50_000,
            export_delay_ms=50,
            cloud_hosts=[fake.host],  # the fake on loopback stands for the cloud APIs it imitates
        )
        mltrack_otel.instrument(["openai", "anthropic"])
        rt = provider.runtime()
        deadline = time.monotonic() + LOAD_SECONDS
        books = [_Book() for _ in range(3 + 3 + 16)]  # 3 threads calling openai, 3 logging, 16 anthropic tasks
        openai_url, anthropic_url = fake.openai_base_url, fake.anthropic_base_url
        workers = [threading.Thread(target=_openai_worker, args=(openai_url, deadline, b)) for b in books[:3]]
        workers += [threading.Thread(target=_logging_worker, args=(i, deadline, b)) for i, b in enumerate(books[3:6])]
        workers.append(threading.Thread(target=_anthropic_loop, args=(anthropic_url, deadline, books[6:])))
        with _PeakRss() as rss:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            mltrack_otel.shutdown()
        accepted = Counter(s.span_id for s in receiver.accepted_spans())
        counted_cost = sum(
            Decimal(repr(s.attributes["llm.cost.total"]))
            for s in receiver.accepted_spans()
            if s.attributes.get("mltrack.usage.counted") and "llm.cost.total" in s.attributes
        )

    calls = sum(b.calls for b in books)
    produced = sum(b.spans for b in books)
    expected_cost = sum((b.cost for b in books), Decimal(0))
    assert min(b.calls for b in books) > 0  # every thread and task got work done
    # Totals: exact Decimal, against the sum of what the SDKs returned, priced independently of the pipeline.
    totals = mltrack_otel.totals()
    assert totals.calls == calls
    assert totals.cost_usd == expected_cost
    assert round(counted_cost, 2) == round(expected_cost, 2)  # what the backend received, to the cent
    # No span lost: produced == delivered + dropped, each delivered once, none dropped with this queue.
    books_otlp = rt.deliveries["otlp"]
    assert sum(accepted.values()) == len(accepted) == produced
    assert books_otlp.handed == produced == books_otlp.exported + books_otlp.dropped
    assert books_otlp.dropped == books_otlp.failed == 0
    health = guard.health()
    assert health["spans.processed"] == produced
    assert health["spans.priced"] + health["spans.unpriced"] == calls
    assert health["spans.unpriced"] == sum(b.unpriced for b in books)
    assert not rt.processor._live  # every started span ended
    grew = rss.peak - rss.start
    assert grew < 150, f"peak RSS grew {grew:.0f} MB over {produced} spans"
    print(f"\nload: {calls} calls, {produced} spans in {LOAD_SECONDS:.0f} s; peak RSS +{grew:.1f} MB")


# --- abandoned streams --------------------------------------------------------------------------------------------

SYNC_STREAMS = 1000
ASYNC_STREAMS = 500
BATCH = 50  # streams per client: an abandoned stream keeps its pooled connection for as long as its client lives


def _open_and_abandon_sync(base_url: str) -> None:
    for _ in range(SYNC_STREAMS // BATCH):
        client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
        for _ in range(BATCH):
            client.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True)  # never read nor closed
        del client
        gc.collect()


async def _open_and_abandon_async(base_url: str) -> None:
    for _ in range(ASYNC_STREAMS // BATCH):
        client = anthropic.AsyncAnthropic(base_url=base_url, api_key="sk-test", max_retries=0)
        for _ in range(BATCH):
            await client.messages.create(model="claude-3-5-haiku-latest", max_tokens=64, messages=QUESTION, stream=True)
        del client
        gc.collect()


def _recorders_alive() -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, StreamRecorder))


@pytest.fixture
def instrumented():
    mltrack_otel.instrument(["openai", "anthropic"])
    yield
    uninstrument(["openai", "anthropic"])


def test_thousands_of_abandoned_streams_end_once_each_and_leave_nothing_behind(pipeline, instrumented, fake):
    gc.collect()
    gc.freeze()  # what exists now is not the test's: the many collections below then only walk what it makes
    try:
        before = _rss_mb()
        _open_and_abandon_sync(fake.openai_base_url)
        asyncio.run(_open_and_abandon_async(fake.anthropic_base_url))
        gc.collect()
        assert guard.drain_deferred(30)  # their spans are ended off the collector, by the finalizer worker
        gc.collect()
        grew = _rss_mb() - before
    finally:
        gc.unfreeze()

    ended = pipeline.memory_exporter.get_finished_spans()
    assert Counter(s.context.span_id for s in ended).most_common(1)[0][1] == 1  # each span ended once
    spans = [s for s in ended if s.instrumentation_scope.name.startswith("mltrack_otel.")]  # not anthropic's own
    assert len(spans) == SYNC_STREAMS + ASYNC_STREAMS
    assert Counter(s.attributes["gen_ai.provider.name"] for s in spans) == {
        "openai": SYNC_STREAMS,
        "anthropic": ASYNC_STREAMS,
    }
    assert {s.attributes["mltrack.stream.complete"] for s in spans} == {False}
    assert not pipeline.processor._live  # the processor forgot every one of them
    assert _recorders_alive() == 0
    assert not guard.health().get("errors.caught")
    assert grew < 60, f"RSS grew {grew:.0f} MB over {len(spans)} abandoned streams"
    fake.clear()  # the shared fake keeps every request it answered
    print(f"\nabandoned streams: {len(spans)}, live table after: {len(pipeline.processor._live)}, RSS +{grew:.1f} MB")
