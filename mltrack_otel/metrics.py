"""The metric instruments, created once per meter: GenAI client token usage and duration, plus our cost counters.

Attributes are limited to low-cardinality ones (provider, model, operation, token type, error type) so that a
fleet's totals add up in any metrics backend.
"""

from __future__ import annotations

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider, get_meter
from opentelemetry.semconv._incubating.metrics.gen_ai_metrics import (
    GEN_AI_CLIENT_OPERATION_DURATION,
    GEN_AI_CLIENT_TOKEN_USAGE,
)

from . import semconv
from .version import __version__

# Bucket boundaries advised by the GenAI semantic conventions.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


class Instruments:
    """The instruments the CostSpanProcessor records to."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        # With a no-op provider, recording is skipped altogether rather than paid for per span.
        self.enabled = not isinstance(meter_provider, NoOpMeterProvider)
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
