"""The span harness of the tests: a real TracerProvider over an in-memory exporter, by default behind the
CostSpanProcessor with a ledger of its own, and the helpers that read finished spans (from any in-memory exporter,
e.g. the `pipeline` fixture's runtime.memory_exporter)."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mltrack_otel.ledger import Ledger
from mltrack_otel.pricing import Pricer
from mltrack_otel.processor import CostSpanProcessor

# The fake provider on loopback stands for the cloud APIs it imitates: its calls keep their cloud price.
FAKE = ("127.0.0.1",)


class Traced:
    """`cost=False`: spans go straight to memory. Else through a CostSpanProcessor into `ledger` (a fresh one unless
    given; pass ledger.LEDGER for the process ledger), priced by `pricer` (default: the fake provider priced as
    the cloud)."""

    def __init__(self, *, cost: bool = True, ledger: Ledger | None = None, pricer: Pricer | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.ledger = Ledger() if ledger is None else ledger
        self.provider = TracerProvider()
        self.processor: Any = SimpleSpanProcessor(self.exporter)
        if cost:
            self.processor = CostSpanProcessor(
                self.processor, ledger=self.ledger, pricer=Pricer(cloud_hosts=FAKE) if pricer is None else pricer
            )
        self.provider.add_span_processor(self.processor)

    def spans(self) -> list[ReadableSpan]:
        return spans(self.exporter)

    def one(self) -> ReadableSpan:
        return one_span(self.exporter)

    def tree(self) -> list[tuple[int, str]]:
        """(depth, name) in start order."""
        ordered = sorted(spans(self.exporter), key=lambda s: s.start_time)
        by_id = {s.context.span_id: s for s in ordered}

        def depth(span: ReadableSpan) -> int:
            d = 0
            while span.parent is not None and span.parent.span_id in by_id:
                span, d = by_id[span.parent.span_id], d + 1
            return d

        return [(depth(s), s.name) for s in ordered]

    def shutdown(self) -> None:
        self.provider.shutdown()


def spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(exporter.get_finished_spans())


def one_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    """The single finished span (fails if there are more or none)."""
    finished = spans(exporter)
    assert len(finished) == 1, [s.name for s in finished]
    return finished[0]


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    """Finished spans by name (the last one wins for repeated names)."""
    return {span.name: span for span in exporter.get_finished_spans()}


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})
