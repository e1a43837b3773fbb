"""Metrics from enriched spans: GenAI client token usage and duration, plus our cost counters.

Recording a measurement costs the OpenTelemetry SDK ~15 µs, so metrics are not recorded on the caller's thread: the
SpanMetricsExporter sits behind its own BatchSpanProcessor under the CostSpanProcessor and records from the enriched
spans in the export worker. Attributes are limited to low-cardinality ones (provider, model, operation, token type,
error type) so a fleet's totals add up in any metrics backend; attribution attributes (user.id, mltrack.tag.<key>)
become labels only when the `metric_labels` setting names them.

observe_delivery() adds mltrack.spans.exported / .export_failed / .dropped per exporter: observable counters read
from the health counters (delivery.py) when the metrics are collected, so they cost the span path nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics.gen_ai_metrics import (
    GEN_AI_CLIENT_OPERATION_DURATION,
    GEN_AI_CLIENT_TOKEN_USAGE,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import StatusCode

from . import guard, semconv
from .version import __version__

# Bucket boundaries advised by the GenAI semantic conventions.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_OI_PROVIDER, _OI_MODEL = "llm.provider", "llm.model_name"  # OpenInference


class SpanMetricsExporter(SpanExporter):
    """Records gen_ai.client.token.usage, gen_ai.client.operation.duration, mltrack.client.cost and
    mltrack.client.calls.unpriced from spans the CostSpanProcessor enriched. Only counted spans add usage and cost,
    so metrics never double count a call that several layers describe."""

    def __init__(self, meter_provider: MeterProvider | None = None, labels: Sequence[str] = ()) -> None:
        self.labels = tuple(labels)  # span attributes added as labels when a span carries them (metric_labels)
        meter = get_meter("mltrack_otel", __version__, meter_provider=meter_provider)
        self.token_usage = meter.create_histogram(
            GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used per model call",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of GenAI client operations",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.cost = meter.create_counter(
            semconv.METRIC_MLTRACK_CLIENT_COST, unit="{USD}", description="USD spent on model calls"
        )
        self.unpriced = meter.create_counter(
            semconv.METRIC_MLTRACK_CLIENT_CALLS_UNPRICED,
            unit="{call}",
            description="Model calls that could not be priced",
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            try:
                self._record(span)
            except Exception as exc:
                guard.record_error("metrics.record", exc)
        return SpanExportResult.SUCCESS

    def _record(self, span: ReadableSpan) -> None:
        attrs = span.attributes or {}
        operation = attrs.get(gen_ai.GEN_AI_OPERATION_NAME)
        counted = attrs.get(semconv.MLTRACK_USAGE_COUNTED)
        if counted is False or (operation is None and counted is not True):
            return  # not a model call, or a wrapper of one that a deeper span already describes
        # A counted span from other instrumentation (OpenInference, older OpenLLMetry) may lack the operation and
        # name provider and model the way the processor read them: its cost must not go missing from the sums.
        labels = {
            gen_ai.GEN_AI_OPERATION_NAME: operation if operation is not None else "_OTHER",
            gen_ai.GEN_AI_PROVIDER_NAME: attrs.get(gen_ai.GEN_AI_PROVIDER_NAME)
            or attrs.get(gen_ai.GEN_AI_SYSTEM)
            or attrs.get(_OI_PROVIDER)
            or "_OTHER",
            gen_ai.GEN_AI_REQUEST_MODEL: attrs.get(gen_ai.GEN_AI_REQUEST_MODEL) or attrs.get(_OI_MODEL) or "",
        }
        response_model = attrs.get(gen_ai.GEN_AI_RESPONSE_MODEL)
        if response_model is not None:
            labels[gen_ai.GEN_AI_RESPONSE_MODEL] = response_model
        if span.status.status_code is StatusCode.ERROR:
            labels[ERROR_TYPE] = attrs.get(ERROR_TYPE, "_OTHER")
        for name in self.labels:  # configured attribution labels only: cardinality stays the user's choice
            value = attrs.get(name)
            if value is not None:
                labels[name] = value
        if span.end_time is not None and span.start_time is not None:
            self.duration.record((span.end_time - span.start_time) / 1e9, labels)
        if counted is not True:
            return
        prompt, completion = attrs.get(semconv.LLM_TOKENS_PROMPT), attrs.get(semconv.LLM_TOKENS_COMPLETION)
        if prompt is not None:
            self.token_usage.record(prompt, {**labels, gen_ai.GEN_AI_TOKEN_TYPE: "input"})
        if completion is not None:
            self.token_usage.record(completion, {**labels, gen_ai.GEN_AI_TOKEN_TYPE: "output"})
        cost = attrs.get(semconv.LLM_COST_TOTAL)
        if cost is not None:
            self.cost.add(cost, labels)
        elif attrs.get(semconv.MLTRACK_COST_UNPRICED):
            self.unpriced.add(1, labels)


# metric -> the health counter it reports, per exporter ("spans.dropped.otlp" -> {mltrack.exporter: otlp})
_DELIVERY_METRICS = (
    (semconv.METRIC_MLTRACK_SPANS_EXPORTED, "spans.exported.", "Spans exporters delivered"),
    (semconv.METRIC_MLTRACK_SPANS_EXPORT_FAILED, "spans.export_failed.", "Spans exporters gave up on"),
    (semconv.METRIC_MLTRACK_SPANS_DROPPED, "spans.dropped.", "Spans dropped before they reached an exporter"),
)
_observed: weakref.WeakSet[MeterProvider] = weakref.WeakSet()


def observe_delivery(meter_provider: MeterProvider) -> None:
    """Register the delivery counters on `meter_provider` (once per provider: configure() may run again)."""
    if meter_provider in _observed:
        return
    _observed.add(meter_provider)
    meter = get_meter("mltrack_otel", __version__, meter_provider=meter_provider)
    for name, prefix, description in _DELIVERY_METRICS:
        meter.create_observable_counter(name, callbacks=[_per_exporter(prefix)], unit="{span}", description=description)


def _per_exporter(prefix: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(value, {semconv.MLTRACK_EXPORTER: key[len(prefix) :]})
            for key, value in guard.health().items()
            if key.startswith(prefix)
        ]

    return observe
