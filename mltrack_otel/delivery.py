"""Delivery accounting: per exporter, the spans it was handed, exported, failed to export, and dropped.

The SDK's BatchSpanProcessor drops a span silently when its queue is full, and an exporter's failures only reach
its log. configure() puts every exporter behind the wrappers here. A batched one (otlp, mlflow, metrics) keeps
these books; a synchronous one (memory, console) has no queue, so it only counts exported and failed:

    handed = exported + export_failed + dropped + (still queued or being exported)

*Dropped* spans never reached the exporter: the queue was full, the processor was already shut down, or they were
still queued at the shutdown deadline. *Failed* spans reached it and it gave up on them after its own retries.
Drops are booked when the queue refuses a span; :meth:`Delivery.settle` closes the books at shutdown, after which
they are exact (provided no span ends while it runs). The counts go to ``guard`` as ``spans.exported``,
``spans.export_failed`` and ``spans.dropped``, each also per exporter (``spans.dropped.otlp``), and from there to
health(), the shutdown log line and the ``mltrack.spans.*`` metrics.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from . import guard

_log = logging.getLogger("mltrack_otel")


class Delivery:
    """The books of one exporter."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._handed = guard.Tally()  # bumped on the caller's thread for every span, so without a lock
        self.hand = self._handed.add  # book one span as handed to the exporter's processor
        self._lock = threading.Lock()
        self.submitted = 0  # passed to the exporter's export()
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self.settled = False
        self.abandoned = False  # inherited by a forked child: the parent's, never to be used nor closed here

    @property
    def handed(self) -> int:
        return self._handed.value

    @property
    def in_flight(self) -> int:
        """Spans the exporter has been given and not yet answered for."""
        return self.submitted - self.exported - self.failed

    def drop(self, count: int, reason: str) -> None:
        self._add(count, "dropped")
        if guard.first_time(f"delivery.dropped.{self.name}"):
            _log.warning(
                "mltrack-otel: the %s exporter dropped %d spans (%s); further drops are only counted: "
                "mltrack_otel.health()['spans.dropped.%s']",
                self.name,
                count,
                reason,
                self.name,
            )

    def submit(self, count: int) -> bool:
        """Book spans as passed to export(); False once the books are closed (settle() counted them dropped)."""
        with self._lock:
            if self.settled:
                return False
            self.submitted += count
            return True

    def answer(self, count: int, ok: bool) -> None:
        if self.settled:  # in flight when the books closed, and reported so: a late outcome changes nothing now
            return
        self._add(count, "exported" if ok else "failed")
        if not ok and guard.first_time(f"delivery.failed.{self.name}"):
            _log.warning(
                "mltrack-otel: the %s exporter failed to export %d spans; further failures are only counted: "
                "mltrack_otel.health()['spans.export_failed.%s']",
                self.name,
                count,
                self.name,
            )

    def settle(self) -> int:
        """Close the books at shutdown: what was handed and never passed to the exporter is dropped, and the
        exporter is given nothing more. Returns the spans dropped here."""
        with self._lock:
            if self.settled:
                return 0
            self.settled = True
            unsent = self.handed - self.submitted - self.dropped
        if unsent > 0:
            self.drop(unsent, "still queued at the shutdown deadline")
        elif unsent < 0:  # the SDK reported a drop for a span that a concurrent export made room for after all
            self._add(unsent, "dropped")
        return max(unsent, 0)

    def abandon(self) -> None:
        """In a forked child: these books and their exporter are the parent's. No lock: the parent may have forked
        while one of its threads held it."""
        self.abandoned = True
        self.settled = True

    def _add(self, count: int, outcome: str) -> None:
        with self._lock:
            setattr(self, outcome, getattr(self, outcome) + count)
        key = "spans.export_failed" if outcome == "failed" else f"spans.{outcome}"
        guard.count(key, count)
        guard.count(f"{key}.{self.name}", count)


class CountingSpanExporter(SpanExporter):
    """Passes each batch to the real exporter and books its outcome."""

    def __init__(self, exporter: SpanExporter, delivery: Delivery) -> None:
        self.exporter = exporter
        self.delivery = delivery

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.delivery.submit(len(spans)):
            return SpanExportResult.FAILURE  # after the shutdown deadline: already counted as dropped
        try:
            result = self.exporter.export(spans)
        except Exception as exc:  # an exporter must not raise; count it as the failure it is
            guard.record_error(f"export.{self.delivery.name}", exc)
            result = SpanExportResult.FAILURE
        self.delivery.answer(len(spans), result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self, timeout_millis: float | None = None) -> None:
        if self.delivery.abandoned:
            return  # the parent's exporter, in a forked child: its connections are the parent's
        takes_timeout = "timeout_millis" in inspect.signature(self.exporter.shutdown).parameters
        if timeout_millis is not None and takes_timeout:
            self.exporter.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that books what it is handed, what its queue refuses, and what its exporter does."""

    def __init__(self, exporter: SpanExporter, delivery: Delivery, **options: Any) -> None:
        super().__init__(CountingSpanExporter(exporter, delivery), **options)
        self.delivery = delivery
        self._hand = delivery.hand
        # The base class's on_end is the sampled check below and an enqueue: calling the enqueue directly keeps this
        # per-span path as cheap as the base class's (counting through super().on_end() would add 0.4 µs a span).
        self._enqueue = _enqueue_of(self) or super().on_end
        _report_refusals(self, delivery)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and context.trace_flags.sampled:
            self._hand()
            self._enqueue(span)


class _RefusalReport:
    """Stands in for the SDK's processor metrics, whose drop_items() the SDK calls for every span its queue
    refuses (full, or shut down): books the drop there and then, and passes every call on."""

    def __init__(self, inner: Any, delivery: Delivery) -> None:
        self._inner = inner
        self._delivery = delivery

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        guard.guarded("delivery.dropped", self._delivery.drop, count, error_type.replace("_", " "))
        self._inner.drop_items(count, error_type)

    def finish_items(self, count: int) -> None:
        self._inner.finish_items(count)

    def register_queue_size(self, get_queue_size: Any) -> None:
        self._inner.register_queue_size(get_queue_size)


def _enqueue_of(processor: BatchSpanProcessor) -> Any:
    """The SDK's enqueue (BatchProcessor.emit in opentelemetry-sdk 1.45), or None in another layout."""
    emit = getattr(getattr(processor, "_batch_processor", None), "emit", None)
    return emit if callable(emit) else None


def _report_refusals(processor: BatchSpanProcessor, delivery: Delivery) -> bool:
    """Learn of each refused span when it happens. The SDK has no public hook for it, so this reaches inside (in
    opentelemetry-sdk 1.45 the BatchProcessor behind BatchSpanProcessor reports refusals to its `_metrics`); with
    any other layout the drops are still found, later, when settle() closes the books."""
    batch = getattr(processor, "_batch_processor", None)
    metrics = getattr(batch, "_metrics", None)
    if batch is None or not callable(getattr(metrics, "drop_items", None)):
        return False
    batch._metrics = _RefusalReport(metrics, delivery)
    return True
