"""OTLP export through the real pipeline: configure(exporters=["otlp", "memory"]) -> CostSpanProcessor -> one
BatchSpanProcessor per exporter -> opentelemetry-exporter-otlp (http/protobuf and grpc) -> a real receiver.

* Arize Phoenix (tests/phoenix_server.py, its own venv) receives the spans; they are read back through its REST API
  (GET /v1/projects/default/spans?trace_id=...) and compared with what the in-memory exporter and the ledger have.
* Headers and compression from OTEL_EXPORTER_OTLP_* are checked on tiny loopback receivers that record what arrives
  (Phoenix does not expose request headers): a stdlib HTTP server and a grpcio server.
* Fan-out: a dead OTLP endpoint never delays the app's calls nor the other exporters, and shutdown() keeps its deadline.
"""

from __future__ import annotations

import socket
import time
from concurrent import futures

import grpc
import openai
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

import mltrack_otel
from mltrack_otel import config, guard, ledger, provider
from mltrack_otel.instrumentation import uninstrument
from tests.otlp_receiver import OtlpReceiver
from tests.phoenix_server import phoenix  # noqa: F401  (module-scoped fixture)

PROTOCOLS = ["http/protobuf", "grpc"]
USAGE = {"prompt_tokens": 100, "completion_tokens": 20}


@pytest.fixture
def otlp_pipeline(isolated_env, monkeypatch):
    """A clean ledger and guard; shutdown() afterwards also stops the MeterProvider configure() built, so it does
    not retry a stopped receiver at interpreter exit."""
    ledger.LEDGER.reset()
    guard.reset()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "1")  # read by the OTLP metric exporter only
    yield
    mltrack_otel.shutdown()
    ledger.LEDGER.reset()
    ledger.LEDGER.limits = ledger.Limits()
    config.set_current(None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _hex_trace(span) -> str:
    return format(span.context.trace_id, "032x")


def _hex_span(span_id: int | None) -> str | None:
    return None if span_id is None else format(span_id, "016x")


def _log_one_call(name: str) -> None:
    with mltrack_otel.track_llm_context(name) as tracker:
        tracker.log_prompt_response("Weather in Paris?", "Sunny.", model="gpt-4o", provider="openai", token_usage=USAGE)


# --- Phoenix: what we export is what the backend stores ------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_spans_reach_phoenix_with_tokens_model_and_cost(phoenix, otlp_pipeline, fake, protocol):  # noqa: F811
    endpoint = phoenix.url if protocol == "http/protobuf" else phoenix.grpc_endpoint
    mltrack_otel.configure(
        exporters=["otlp", "memory"],
        otlp_endpoint=endpoint,
        otlp_protocol=protocol,
        cloud_hosts=[fake.host],  # the fake on loopback stands for the cloud API it imitates
    )
    memory = provider.runtime().memory_exporter
    mltrack_otel.instrument(["openai"])
    try:
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
        with mltrack_otel.track_llm_context("otlp-agent") as tracker:
            tracker.log_prompt_response(
                "Weather in Paris?", "Sunny.", model="gpt-4o", provider="openai", token_usage=USAGE
            )
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Tell me about spans please"}]
            )
    finally:
        uninstrument(["openai"])
    mltrack_otel.shutdown()  # flushes the BatchSpanProcessor

    ours = {_hex_span(s.context.span_id): s for s in memory.get_finished_spans()}
    assert len(ours) == 3
    (trace_id,) = {_hex_trace(s) for s in ours.values()}
    stored = {s["context"]["span_id"]: s for s in phoenix.wait_for_spans(trace_id, count=3)}

    # The same tree: every span, with its parent.
    assert set(stored) == set(ours)
    for span_id, span in ours.items():
        assert stored[span_id]["name"] == span.name
        assert stored[span_id]["parent_id"] == _hex_span(span.parent.span_id if span.parent else None)
    (root,) = [s for s in ours.values() if s.parent is None]
    assert root.name == "otlp-agent"
    assert all(s.parent.span_id == root.context.span_id for s in ours.values() if s is not root)

    # Model, tokens and our cost, as Phoenix stores them (it also maps gen_ai.* to its own llm.* names).
    calls = [s for s in ours.values() if s is not root]
    for span in calls:
        got, want = stored[_hex_span(span.context.span_id)]["attributes"], span.attributes
        assert got["gen_ai.request.model"] == want["gen_ai.request.model"] == "gpt-4o"
        assert got["gen_ai.provider.name"] == "openai"
        assert got["gen_ai.usage.input_tokens"] == want["gen_ai.usage.input_tokens"] > 0
        assert got["gen_ai.usage.output_tokens"] == want["gen_ai.usage.output_tokens"] > 0
        assert got["llm.token_count.prompt"] == want["gen_ai.usage.input_tokens"]
        assert got["llm.token_count.completion"] == want["gen_ai.usage.output_tokens"]
        assert got["llm.cost.total"] == pytest.approx(want["llm.cost.total"], rel=1e-12)
        assert got["llm.cost.total"] > 0
        assert stored[_hex_span(span.context.span_id)]["span_kind"] == "LLM"

    totals = mltrack_otel.totals()
    assert totals.calls == 2
    stored_cost = sum(stored[_hex_span(s.context.span_id)]["attributes"]["llm.cost.total"] for s in calls)
    assert stored_cost == pytest.approx(float(totals.cost_usd), rel=1e-9)
    root_stored = stored[_hex_span(root.context.span_id)]["attributes"]
    assert root_stored["llm.cost.cumulative"] == pytest.approx(float(totals.cost_usd), rel=1e-9)
    assert root_stored["llm.tokens.cumulative.total"] == totals.total_tokens
    assert guard.health().get("errors.caught", 0) == 0


# --- headers and compression from OTEL_EXPORTER_OTLP_*, observed on the wire ---------------------------------------


class _GrpcRecorder(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], trace_service_pb2.ExportTraceServiceRequest]] = []

    def Export(self, request, context):
        self.received.append((dict(context.invocation_metadata()), request))
        return trace_service_pb2.ExportTraceServiceResponse()


def _span_names(request: trace_service_pb2.ExportTraceServiceRequest) -> list[str]:
    return [span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


@pytest.fixture
def http_receiver():
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def grpc_receiver():
    recorder = _GrpcRecorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    recorder.endpoint = f"http://127.0.0.1:{port}"
    yield recorder
    server.stop(grace=None)


HEADERS_ENV = "x-tenant=acme%20corp,Authorization=Bearer%20sk-secret-123"


def test_http_env_endpoint_headers_and_gzip(otlp_pipeline, http_receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", http_receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", HEADERS_ENV)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    mltrack_otel.configure(exporters=["otlp", "memory"])
    _log_one_call("headers-http")
    mltrack_otel.shutdown()

    traces = [request for request in http_receiver.requests if request.path == "/v1/traces"]
    assert traces, f"nothing posted to /v1/traces: {[request.path for request in http_receiver.requests]}"
    for request in traces:
        headers = {key.lower(): value for key, value in request.headers.items()}
        assert headers["x-tenant"] == "acme corp"  # URL-decoded, as the OTLP spec says
        assert headers["authorization"] == "Bearer sk-secret-123"
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["content-encoding"] == "gzip"  # and the receiver un-gzipped the body it decoded
    assert sorted(span.name for span in traces[0].spans) == ["chat gpt-4o", "headers-http"]
    # The auth header goes on the wire, never into a span (invariant 6).
    assert b"sk-secret-123" not in traces[0].body


def test_grpc_env_endpoint_and_headers(otlp_pipeline, grpc_receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", HEADERS_ENV)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    mltrack_otel.configure(exporters=["otlp", "memory"])
    _log_one_call("headers-grpc")
    mltrack_otel.shutdown()

    assert grpc_receiver.received, "the gRPC receiver got no Export call"
    metadata, request = grpc_receiver.received[0]
    assert metadata["x-tenant"] == "acme corp"
    assert metadata["authorization"] == "Bearer sk-secret-123"
    assert sorted(_span_names(request)) == ["chat gpt-4o", "headers-grpc"]


# --- fan-out: a dead backend delays neither the app nor the other exporters ----------------------------------------

DEAD_CALLS = 300
SHUTDOWN_TIMEOUT = 2.0
SLACK = 3.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dead_otlp_endpoint_does_not_delay_app_or_memory_exporter(otlp_pipeline, protocol):
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there: connection refused
    mltrack_otel.configure(
        exporters=["otlp", "memory"],
        otlp_endpoint=dead,
        otlp_protocol=protocol,
        shutdown_timeout_seconds=SHUTDOWN_TIMEOUT,
        export_queue_size=64,  # smaller than what we produce: the OTLP queue drops, the others must not
        export_batch_size=16,
        export_delay_ms=10,
    )
    memory = provider.runtime().memory_exporter

    slowest = 0.0
    started = time.perf_counter()
    for i in range(DEAD_CALLS):
        t0 = time.perf_counter()
        _log_one_call(f"dead-{i}")
        slowest = max(slowest, time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    # Generous bounds (a loaded 2-core CI machine), far below one export attempt's timeout.
    assert slowest < 0.5, f"one call took {slowest:.3f}s: the app waited on the dead backend"
    assert elapsed < 10.0
    # The memory exporter has every span before any flush: it never waited for the OTLP worker.
    assert len(memory.get_finished_spans()) == 2 * DEAD_CALLS
    assert mltrack_otel.totals().calls == DEAD_CALLS

    t0 = time.perf_counter()
    mltrack_otel.shutdown()
    took = time.perf_counter() - t0
    assert took < SHUTDOWN_TIMEOUT + SLACK, f"shutdown() took {took:.1f}s with shutdown_timeout_seconds=2"
