"""Zero-code: `opentelemetry-instrument python app.py` with mltrack-otel installed prices every call.

opentelemetry-instrument runs, in order: the distro, one configurator (the SDK's builds the global TracerProvider
with a BatchSpanProcessor per OTEL_TRACES_EXPORTER exporter), the instrumentors (ours among them), then every
`opentelemetry_post_instrument` entry point. Ours is one of those: whichever distro and configurator were chosen,
it puts the CostSpanProcessor in front of the export processors the configurator built, so each span is exported
once and carries its cost. A configure() the application calls later finds that provider and keeps that path.
"""

from __future__ import annotations

from . import guard, provider


def price_auto_configured_provider() -> None:
    """The `opentelemetry_post_instrument` entry point: never fails the application's start-up."""
    guard.guarded("zero_code.configure", provider.configure_auto_instrumented)
