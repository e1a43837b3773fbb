"""A real TracerProvider with the CostSpanProcessor over an in-memory exporter and a fresh ledger, for the
framework tests."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mltrack_otel.ledger import Ledger
from mltrack_otel.pricing import Pricer
from mltrack_otel.processor import CostSpanProcessor

# The fake provider on loopback stands for the cloud APIs it imitates: its calls keep their cloud price.
FAKE = ("127.0.0.1",)


class Traced:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.ledger = Ledger()
        self.provider = TracerProvider()
        self.provider.add_span_processor(
            CostSpanProcessor(SimpleSpanProcessor(self.exporter), ledger=self.ledger, pricer=Pricer(cloud_hosts=FAKE))
        )

    def spans(self) -> list:
        return list(self.exporter.get_finished_spans())

    def one(self):
        spans = self.spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def tree(self) -> list[tuple[int, str]]:
        """(depth, name) in start order."""
        spans = sorted(self.spans(), key=lambda s: s.start_time)
        by_id = {s.context.span_id: s for s in spans}

        def depth(span) -> int:
            d = 0
            while span.parent is not None and span.parent.span_id in by_id:
                span, d = by_id[span.parent.span_id], d + 1
            return d

        return [(depth(s), s.name) for s in spans]
