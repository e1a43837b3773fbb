"""configure(): Settings -> TracerProvider (+ MeterProvider) with the CostSpanProcessor over the exporters.

Never hijacks an application's own SDK provider: when one is already global, our processor chain is added to it.
The provider that `opentelemetry-instrument` auto-configures is the exception (zero_code.py): its export processors
are put behind our pricing, so each span is exported once and priced, and a later configure() keeps that path.
Calling configure() again swaps the chain in place (the old one is flushed and shut down), so it is idempotent.

Export stays off the application's path: every exporter sits behind its own bounded queue and worker, and keeps
books of what it exported, failed and dropped (delivery.py). shutdown(), also run at interpreter exit, keeps to
shutdown_timeout_seconds however the backends behave. A forked child (a pre-fork server's worker) builds an export
chain of its own.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib.util
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from . import config, guard, ledger
from .config import Settings
from .delivery import CountingBatchSpanProcessor, CountingSpanExporter, Delivery
from .metrics import SpanMetricsExporter, observe_delivery
from .pricing import Pricer
from .processor import CostSpanProcessor

_log = logging.getLogger("mltrack_otel")
_lock = threading.Lock()


class _Slot(SpanProcessor):
    """The one processor we add to a TracerProvider; configure() swaps what it delegates to."""

    def __init__(self, target: SpanProcessor) -> None:
        self.target = target  # our chain, or a bare SpanProcessor (does nothing) while tracking is off

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.target.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.target.on_end(span)

    def shutdown(self) -> None:
        self.target.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.target.force_flush(timeout_millis)


@dataclass
class Runtime:
    """What configure() built; `mltrack_otel.provider.runtime()` returns it (tests, CLI)."""

    settings: Settings
    tracer_provider: Any
    processor: CostSpanProcessor | None = None
    memory_exporter: InMemorySpanExporter | None = None
    metric_reader: Any = None
    exporters: tuple[str, ...] = ()
    meter_provider: Any = None  # ours to shut down (None when the application's own is global, or none is needed)
    deliveries: dict[str, Delivery] = field(default_factory=dict)  # the books of each exporter, by name
    meters: Any = None  # the MeterProvider metrics are recorded to: ours or the application's
    closed: bool = False  # shutdown() has run
    # The auto-configured provider's own export processors, behind our pricing: kept by every chain, never replaced.
    adopted: tuple[SpanProcessor, ...] = ()


_runtime: Runtime | None = None
_slots: dict[int, _Slot] = {}


def runtime() -> Runtime | None:
    return _runtime


def resolve_exporters(settings: Settings) -> tuple[str, ...]:
    """The configured exporters, or the defaults: the embedded MLflow store when mlflow is installed, OTLP when an
    endpoint is set."""
    if settings.exporters is not None:
        return tuple(name for name in settings.exporters if name != "none")
    chosen = []
    if importlib.util.find_spec("mlflow") is not None:
        chosen.append("mlflow")
    if settings.otlp_endpoint:
        chosen.append("otlp")
    return tuple(chosen)


def _is_mlflow_endpoint(settings: Settings) -> bool:
    """The OTLP endpoint is an MLflow server's (it takes traces only): the headers name an MLflow experiment."""
    from .exporters.mlflow_attributes import targets_mlflow

    return targets_mlflow(settings.otlp_headers)


def _otlp_exporter(settings: Settings) -> SpanExporter:
    exporter = _otlp_transport(settings)
    for_mlflow = settings.otlp_for_mlflow
    if for_mlflow is None:
        for_mlflow = _is_mlflow_endpoint(settings)
    if for_mlflow:
        from .exporters.mlflow_attributes import MlflowOtlpExporter

        return MlflowOtlpExporter(exporter)
    return exporter


def _otlp_transport(settings: Settings) -> SpanExporter:
    compression: Any = None
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if settings.otlp_compression and settings.otlp_compression != "none":
            from grpc import Compression

            compression = Compression.Gzip if settings.otlp_compression == "gzip" else Compression.Deflate
        return OTLPSpanExporter(
            endpoint=settings.otlp_endpoint,
            insecure=_grpc_insecure(settings),
            headers=tuple(settings.otlp_headers.items()) or None,
            timeout=settings.otlp_timeout_seconds,
            compression=compression,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    endpoint = settings.otlp_endpoint
    if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"  # the base endpoint convention of OTEL_EXPORTER_OTLP_ENDPOINT
    if settings.otlp_compression:
        compression = HttpCompression(settings.otlp_compression)
    return HttpExporter(
        endpoint=endpoint,
        headers=dict(settings.otlp_headers) or None,
        timeout=settings.otlp_timeout_seconds,
        compression=compression,
    )


def _grpc_insecure(settings: Settings) -> bool | None:
    """Plaintext gRPC when asked, or for a scheme-less loopback endpoint (the exporter would try TLS there)."""
    if settings.otlp_insecure is not None:
        return settings.otlp_insecure
    endpoint = settings.otlp_endpoint or ""
    if "://" in endpoint:
        return None  # the exporter decides from the scheme
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    return True if host in ("localhost", "127.0.0.1", "::1") else None


def _mlflow_exporter(settings: Settings) -> SpanExporter:
    from .exporters.mlflow import MlflowSpanExporter

    return MlflowSpanExporter(
        tracking_uri=settings.mlflow_tracking_uri or "sqlite:///mlflow.db",
        experiment_name=settings.mlflow_experiment_name,
        experiment_id=settings.mlflow_experiment_id,
    )


_MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # what OTLP receivers commonly accept per request
_SPAN_OVERHEAD_BYTES = 4096  # ids, names, times and the non-content attributes of one span, generously


def _batch(exporter: SpanExporter, delivery: Delivery, settings: Settings) -> BatchSpanProcessor:
    # A span carries at most two content attributes of content_max_bytes each; size batches so that even a batch
    # of the largest spans stays under the payload limit.
    largest_span = 2 * settings.content_max_bytes + _SPAN_OVERHEAD_BYTES
    batch_size = max(1, min(settings.export_batch_size, settings.export_queue_size, _MAX_PAYLOAD_BYTES // largest_span))
    return CountingBatchSpanProcessor(
        exporter,
        delivery,
        max_queue_size=settings.export_queue_size,
        max_export_batch_size=batch_size,
        schedule_delay_millis=settings.export_delay_ms,
        export_timeout_millis=int(settings.shutdown_timeout_seconds * 1000),
    )


def _chain(
    settings: Settings, names: tuple[str, ...], meters: Any, adopted: tuple[SpanProcessor, ...] = ()
) -> tuple[CostSpanProcessor, InMemorySpanExporter | None, dict[str, Delivery]]:
    """The CostSpanProcessor over the adopted processors and one processor per exporter (and one recording
    metrics when `meters` is set)."""
    downstream: list[SpanProcessor] = [*adopted]
    deliveries: dict[str, Delivery] = {}
    memory = None

    def add(name: str, exporter: SpanExporter, batched: bool) -> None:
        delivery = deliveries[name] = Delivery(name)
        if batched:
            downstream.append(_batch(exporter, delivery, settings))
        else:
            downstream.append(SimpleSpanProcessor(CountingSpanExporter(exporter, delivery)))

    for name in names:
        if name == "memory":
            memory = InMemorySpanExporter()
            add(name, memory, batched=False)
        elif name == "console":
            add(name, ConsoleSpanExporter(), batched=False)
        elif name == "otlp":
            add(name, _otlp_exporter(settings), batched=True)
        elif name == "mlflow":
            add(name, _mlflow_exporter(settings), batched=True)
    if meters is not None:  # recorded in the export worker, off the caller's thread
        add("metrics", SpanMetricsExporter(meters, settings.metric_labels), batched=True)
    with_mlflow = importlib.util.find_spec("mlflow") is not None
    if with_mlflow:  # MLflow's autolog span above our call takes our price
        from .instrumentation.mlflow_autolog import MlflowAutologCost

        downstream.append(MlflowAutologCost())
    pricer = Pricer(settings.price_overrides, settings.provider_aliases, settings.cloud_hosts)
    processor = CostSpanProcessor(
        *downstream,
        pricer=pricer,
        track_costs=settings.llm_track_costs,
        track_tokens=settings.llm_track_token_usage,
    )
    # The process's budget reservations price as this chain does (a processor built by hand never replaces it).
    ledger.LEDGER.pricer = pricer if settings.llm_track_costs else None
    if with_mlflow:  # autolog spans on MLflow's own provider are priced and counted by this chain
        from .instrumentation import mlflow_autolog

        mlflow_autolog.attach(processor)
    return processor, memory, deliveries


def _detach_mlflow() -> None:
    """MLflow's spans are no longer priced or counted (tracking off, or shut down)."""
    from .instrumentation import mlflow_autolog

    mlflow_autolog.detach()


def _meter_provider(settings: Settings, names: tuple[str, ...]) -> tuple[Any, Any]:
    """The global SDK MeterProvider, or one with readers for the exporters that carry metrics (OTLP, memory);
    None when nothing would read them, so that metrics cost nothing."""
    global_provider = metrics.get_meter_provider()
    from opentelemetry.sdk.metrics import MeterProvider

    if isinstance(global_provider, MeterProvider):
        return global_provider, None
    readers = []
    memory_reader = None
    if "memory" in names:
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        memory_reader = InMemoryMetricReader()
        readers.append(memory_reader)
    if "otlp" in names and settings.otlp_protocol == "http/protobuf" and not _is_mlflow_endpoint(settings):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        endpoint = settings.otlp_endpoint or ""
        base = endpoint.rstrip("/").removesuffix("/v1/traces")
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None, headers=dict(settings.otlp_headers))
            )
        )
    if not readers:
        return None, None
    resource = Resource.create({SERVICE_NAME: settings.service_name})
    # Not shut down by the SDK at exit: our own exit hook does it, within shutdown_timeout_seconds.
    return MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False), memory_reader


def configure(config_file: str | None = None, **overrides: Any) -> Any:
    """Read settings (`.mltrack.yml`, env, keyword overrides such as ``exporters=["otlp", "mlflow"]``), build the
    pipeline and return the TracerProvider spans go to. Disabled tracking returns the global provider untouched."""
    return _configure(config.load_settings(config_file, **overrides), adopt=False)


def configure_auto_instrumented() -> Any:
    """Price the spans of the global SDK TracerProvider that `opentelemetry-instrument` configured: its export
    processors (OTEL_TRACES_EXPORTER's, behind BatchSpanProcessors) move behind our CostSpanProcessor, so each
    span is exported once, with its cost. Our own exporters are added only when configured explicitly
    (MLTRACK_EXPORTERS, .mltrack.yml), and never a second OTLP or console one. When no configurator made a
    provider (opentelemetry-distro not installed), this is configure()."""
    settings = config.load_settings()
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        return _configure(settings, adopt=False)
    if settings.exporters is None:  # the provider's own processors are the export path
        settings = settings.model_copy(update={"exporters": ()})
    return _configure(settings, adopt=True)


def _configure(settings: Settings, adopt: bool) -> Any:
    global _runtime
    with _lock:
        config.set_current(settings)
        ledger.LEDGER.limits = ledger.Limits(
            token_warning=settings.llm_token_limit_warning,
            cost_warning=settings.llm_cost_limit_warning,
            token_budget=settings.llm_token_limit,
            cost_budget=settings.llm_cost_limit,
        )
        ledger.LEDGER.max_conversations = settings.max_conversations
        ledger.LEDGER.max_users = settings.max_users
        ledger.LEDGER.max_tag_values = settings.max_tag_values
        ledger.LEDGER.max_agents = settings.max_agents
        if not settings.llm_tracking_enabled:  # a chain installed before stops recording
            current = trace.get_tracer_provider()
            adopted = _adopted(current)  # an adopted export path goes on exporting, unpriced
            stopped = SynchronousMultiSpanProcessor() if adopted else SpanProcessor()
            for kept in adopted:
                stopped.add_span_processor(kept)
            previous, replaced = _runtime, _swap_chain(current, stopped)
            _runtime = Runtime(settings, current, adopted=adopted)
            guard.guarded("provider.mlflow", _detach_mlflow)
        else:
            previous, replaced = _enable(settings, adopt)
    if previous is not None and previous.processor is not None and not previous.closed:
        # Outside the lock: a dead backend may hold it for a while.
        previous.closed = True
        _shut_down(
            [p for p in replaced.downstream if p not in _runtime.adopted]
            if isinstance(replaced, CostSpanProcessor)
            else (),
            previous.meter_provider,
            previous.settings.shutdown_timeout_seconds,
        )
    if _runtime.processor is not None:
        if not _runtime.exporters and settings.exporters is None:  # nothing asked for, and the defaults found nothing
            _log.warning(
                "mltrack-otel: spans are exported nowhere (totals stay in memory): mlflow is not installed and no "
                "OTLP endpoint is set. Run pip install 'mltrack-otel[mlflow]', or set OTEL_EXPORTER_OTLP_ENDPOINT "
                "(or exporters: none to keep it so)"
            )
        _log.info("mltrack-otel: exporting to %s", ", ".join(_runtime.exporters) or "nothing (ledger and metrics only)")
    return _runtime.tracer_provider


def _enable(settings: Settings, adopt: bool = False) -> tuple[Runtime | None, SpanProcessor | None]:
    """Build and install the chain for settings (under _lock); return the runtime and chain it replaces.
    `adopt`: put the global SDK provider's own processors behind ours (the auto-configured provider)."""
    global _runtime
    current = trace.get_tracer_provider()
    adopted = _adopted(current)
    taken: tuple[SpanProcessor, ...] = ()
    if adopt and not adopted and isinstance(current, TracerProvider) and id(current) not in _slots:
        adopted = taken = _processors_of(current)
    names = _uncovered(resolve_exporters(settings), adopted)
    meters, metric_reader = _meter_provider(settings, names)
    if meters is not None:
        observe_delivery(meters)
    owned_meters = meters if meters is not metrics.get_meter_provider() else None
    processor, memory, deliveries = _chain(settings, names, meters, adopted)
    provider, replaced = _install(processor, settings, taken)
    previous = _runtime
    _runtime = Runtime(
        settings, provider, processor, memory, metric_reader, names, owned_meters, deliveries, meters, adopted=adopted
    )
    _watch_process(_runtime)
    return previous, replaced


def _adopted(provider: object) -> tuple[SpanProcessor, ...]:
    """The processors of provider already behind our pricing."""
    rt = _runtime
    return rt.adopted if rt is not None and rt.tracer_provider is provider and id(provider) in _slots else ()


def _processors_of(provider: TracerProvider) -> tuple[SpanProcessor, ...]:
    """The span processors the SDK provider holds (none we could not read: then our chain is only added)."""
    held = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", None)
    return tuple(p for p in held if not isinstance(p, _Slot)) if isinstance(held, tuple) else ()


def _uncovered(names: tuple[str, ...], adopted: tuple[SpanProcessor, ...]) -> tuple[str, ...]:
    """The exporters to add besides the adopted processors: not a second OTLP or console export of each span."""
    kinds = set()
    for processor in adopted:
        exporter = getattr(processor, "span_exporter", None) or getattr(
            getattr(processor, "_batch_processor", None), "_exporter", None
        )
        if type(exporter).__name__ == "OTLPSpanExporter":  # the http and the grpc one
            kinds.add("otlp")
        elif isinstance(exporter, ConsoleSpanExporter):
            kinds.add("console")
    return tuple(name for name in names if name not in kinds)


def _swap_chain(provider: object, target: SpanProcessor) -> SpanProcessor | None:
    """Point our slot on provider at target; return what it pointed at (None: no slot there)."""
    slot = _slots.get(id(provider))
    if slot is None:
        return None
    old, slot.target = slot.target, target
    return old


def _install(
    processor: CostSpanProcessor, settings: Settings, taken: tuple[SpanProcessor, ...] = ()
) -> tuple[TracerProvider, SpanProcessor | None]:
    """Put our chain on the global SDK provider (made if needed), in place of the processors `taken` behind it;
    return the provider and the chain this one replaced."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
        if id(provider) in _slots:
            return provider, _swap_chain(provider, processor)
        _log.info("mltrack-otel: an SDK TracerProvider is already global; adding our processor chain to it")
    else:
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.service_name}))
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:  # someone else won the race to set it
            provider = trace.get_tracer_provider()  # type: ignore[assignment]
        else:
            _log.info("mltrack-otel: installed a new global TracerProvider")
    slot = _Slot(processor)
    _slots[id(provider)] = slot
    if taken:
        multi = provider._active_span_processor
        with multi._lock:  # (add_span_processor takes it too: none added meanwhile is lost)
            multi._span_processors = (*(p for p in multi._span_processors if p not in taken), slot)
        _log.info("mltrack-otel: pricing the spans of the auto-configured TracerProvider before it exports them")
    else:
        provider.add_span_processor(slot)
    return provider, None


_exit_hook_added = False


def _watch_process(rt: Runtime) -> None:
    """Shut down at interpreter exit (within the deadline, before the SDK's own unbounded exit hooks, which run
    after ours because they were registered earlier), and renew the export chain in a forked child."""
    global _exit_hook_added
    if not _exit_hook_added:
        atexit.register(shutdown)
        _exit_hook_added = True
    # Registered after the SDK's fork handlers of this chain's processors, so in a child it runs after them.
    own = weakref.ref(rt)
    os.register_at_fork(after_in_child=lambda: guard.guarded("provider.fork", _renew_in_child, own()))


def _renew_in_child(rt: Runtime | None) -> None:
    """A forked child exports through a chain of its own. The inherited exporters share the parent's pooled
    connections (two processes reading one socket lose or repeat batches), and the inherited processor still
    remembers the parent's open spans. The inherited chain is stopped without touching its exporters."""
    global _runtime
    if rt is None or rt is not _runtime or rt.processor is None or rt.closed or id(rt.tracer_provider) not in _slots:
        return
    for delivery in rt.deliveries.values():
        delivery.abandon()
    processor, memory, deliveries = _chain(rt.settings, rt.exporters, rt.meters, rt.adopted)
    inherited = _swap_chain(rt.tracer_provider, processor)
    _runtime = dataclasses.replace(rt, processor=processor, memory_exporter=memory, deliveries=deliveries)
    _watch_process(_runtime)
    for own in inherited.downstream:  # ends the workers the SDK restarted for them in this child
        if own not in rt.adopted:  # (the adopted ones are the SDK's, renewed by it, and kept in the new chain)
            own.shutdown()


def _renew_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_lock_in_child)


# The health counters the shutdown log line reports, in its order.
_REPORTED = (
    "spans.processed",
    "spans.priced",
    "spans.unpriced",
    "spans.dropped",
    "spans.export_failed",
    "errors.caught",
)
_METRICS_SHARE = 0.2  # of the shutdown deadline, kept for the metrics' last export


def shutdown() -> None:
    """Flush and shut down every exporter, in parallel, within shutdown_timeout_seconds in total, and log what
    happened to the spans. Runs at interpreter exit too; a second call does nothing.

    The SDK's BatchSpanProcessor does not bound its final flush (each queued batch may retry for the exporter's
    timeout), so a dead backend could otherwise hold the process at exit for minutes.
    """
    with _lock:
        rt = _runtime
        if rt is None or rt.processor is None or rt.closed:
            return
        rt.closed = True
    guard.guarded("provider.mlflow", _detach_mlflow)
    # Spans of streams abandoned just before exit are ended by the finalizer worker: let it finish them first.
    guard.drain_deferred(min(1.0, rt.settings.shutdown_timeout_seconds / 4))
    _shut_down(rt.processor.downstream, rt.meter_provider, rt.settings.shutdown_timeout_seconds)
    counts = guard.health()
    _log.info(
        "mltrack-otel: shut down; spans processed %d, priced %d, unpriced %d, dropped %d, export failures %d, "
        "tracking errors caught %d",
        *(counts.get(key, 0) for key in _REPORTED),
    )


def _shut_down(processors: Sequence[SpanProcessor], meter_provider: Any, seconds: float) -> None:
    """Shut the export processors down in parallel and close their books, then the MeterProvider (so that its
    last collection has the metrics of the last spans and the final drop counts), all within `seconds`. A hanging
    trace backend may take the processors' share only: the metrics may well go elsewhere."""
    deadline = time.monotonic() + seconds
    spans_deadline = deadline - (seconds * _METRICS_SHARE if meter_provider is not None else 0.0)
    for step in _run_until([processor.shutdown for processor in processors], spans_deadline):
        exporter = getattr(getattr(step, "__self__", None), "span_exporter", None)
        if exporter is not None:  # stop its retries; what it still holds is dropped
            threading.Thread(target=guard.guarded, args=("provider.shutdown", exporter.shutdown), daemon=True).start()
    for processor in processors:
        if isinstance(processor, CountingBatchSpanProcessor):
            processor.delivery.settle()
    if meter_provider is not None:
        _run_until([meter_provider.shutdown], deadline)


def _run_until(steps: list[Callable[[], Any]], deadline: float) -> list[Callable[[], Any]]:
    """Run each step in its own daemon thread; return the steps still running at the deadline."""
    threads = [threading.Thread(target=guard.guarded, args=("provider.shutdown", step), daemon=True) for step in steps]
    try:
        for thread in threads:
            thread.start()
    except RuntimeError:  # Python 3.12.0-3.12.2 start no thread in an exit hook: the SDK's own flush runs instead
        _log.warning("mltrack-otel: cannot start shutdown threads at interpreter exit; left to the SDK's own flush")
        return list(steps)
    late = []
    for step, thread in zip(steps, threads, strict=True):
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            late.append(step)
            _log.warning("mltrack-otel: %r did not finish within shutdown_timeout_seconds", step)
    return late
