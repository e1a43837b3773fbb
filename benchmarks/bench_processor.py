"""CostSpanProcessor on_end cost per span, and the end-to-end span cost with and without it.

    python -m benchmarks.bench_processor

Prints microseconds per span (median of rounds). Spans are real SDK spans; the downstream is an in-memory
exporter behind a SimpleSpanProcessor, as in tests.
"""

from __future__ import annotations

import statistics
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mltrack_otel.ledger import Ledger
from mltrack_otel.pricing import Pricer
from mltrack_otel.processor import CostSpanProcessor

ATTRS = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 300,
    "gen_ai.usage.cache_read.input_tokens": 1000,
    "server.address": "api.openai.com",
    "server.port": 443,
    "gen_ai.response.id": "chatcmpl-1",
}


class NullExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def per_span_us(tracer, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes=ATTRS):
            pass
    return (time.perf_counter() - start) / n * 1e6


def on_end_us(processor: CostSpanProcessor, span, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        processor.on_end(span)
    return (time.perf_counter() - start) / n * 1e6


def bench(n: int = 20_000, rounds: int = 7) -> dict[str, float]:
    plain = TracerProvider()
    plain.add_span_processor(SimpleSpanProcessor(NullExporter()))
    priced = TracerProvider()
    processor = CostSpanProcessor(SimpleSpanProcessor(NullExporter()), pricer=Pricer(), ledger=Ledger())
    priced.add_span_processor(processor)
    tracers = {"sdk span": plain.get_tracer("b"), "sdk span + CostSpanProcessor": priced.get_tracer("b")}
    results: dict[str, list[float]] = {name: [] for name in tracers}
    for _ in range(rounds):  # interleave so machine noise hits both alike
        for name, tracer in tracers.items():
            results[name].append(per_span_us(tracer, n))
    # on_end alone, on a finished span (pricing, ledger, copy, forward): the processor's own cost.
    finished = InMemorySpanExporter()
    source = TracerProvider()
    source.add_span_processor(SimpleSpanProcessor(finished))
    with source.get_tracer("b").start_as_current_span("chat gpt-4o-mini", attributes=ATTRS):
        pass
    span = finished.get_finished_spans()[0]
    # No downstream: the figure is the processor's own work, not the exporter's.
    quiet = CostSpanProcessor(ledger=Ledger())
    results["on_end"] = [on_end_us(quiet, span, n) for _ in range(rounds)]
    medians = {name: statistics.median(values) for name, values in results.items()}
    medians["CostSpanProcessor added"] = medians["sdk span + CostSpanProcessor"] - medians["sdk span"]
    return medians


if __name__ == "__main__":
    for name, value in bench().items():
        print(f"{name:32s} {value:8.2f} µs/span")
