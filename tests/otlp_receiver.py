"""A stoppable OTLP/HTTP receiver for the fault, load and fork tests (stdlib HTTP/1.1 on 127.0.0.1).

    with OtlpReceiver() as receiver:              # .url is the base endpoint (…/v1/traces, …/v1/metrics)
        receiver.answers.extend([(429, "2"), 503])  # what the next trace requests get; then `receiver.default`
        receiver.stop(); receiver.start()         # the backend goes away and comes back on the same port
        receiver.accepted_spans()                 # spans of the trace requests answered 2xx

Answers are a status code, (status, Retry-After), HANG (hold the request until stop()) or RESET (read it, then
cut the connection without answering: a backend dying mid-export). Connections stay open between requests, as a
collector's do, so a pooled connection that a forked child inherits is exercised too. Metrics requests are always
answered 200.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.servers import free_port

HANG = "hang"
RESET = "reset"


@dataclass(frozen=True)
class ReceivedSpan:
    span_id: str
    trace_id: str
    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


Answer = int | str | tuple[int, str]


@dataclass
class Request:
    path: str
    answer: int | str  # the status code sent, or HANG / RESET
    at: float  # time.monotonic() when it arrived
    connection: int  # the client's port: which connection it came over
    spans: list[ReceivedSpan] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # sum of each counter's points
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  # decompressed


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


def _attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def decode_spans(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    return [
        ReceivedSpan(span.span_id.hex(), span.trace_id.hex(), span.name, _attributes(span.attributes), resource)
        for rs in request.resource_spans
        for resource in [_attributes(rs.resource.attributes)]
        for ss in rs.scope_spans
        for span in ss.spans
    ]


def decode_counters(body: bytes) -> dict[str, float]:
    """Counter name (with its attributes) -> value, e.g. {"mltrack.spans.dropped{mltrack.exporter=otlp}": 12}."""
    out: dict[str, float] = {}
    request = ExportMetricsServiceRequest.FromString(body)
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.WhichOneof("data") != "sum":
                    continue
                for point in metric.sum.data_points:
                    labels = ",".join(f"{k}={v}" for k, v in sorted(_attributes(point.attributes).items()))
                    value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
                    out[f"{metric.name}{{{labels}}}"] = value
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        traces = self.path.endswith("/v1/traces")
        answer = receiver.next_answer() if traces else 200
        answer, retry_after = answer if isinstance(answer, tuple) else (answer, receiver.retry_after)
        request = Request(self.path, answer, time.monotonic(), self.client_address[1])
        request.headers, request.body = dict(self.headers.items()), body
        if traces:
            request.spans = decode_spans(body)
        elif self.path.endswith("/v1/metrics"):
            request.metrics = decode_counters(body)
        receiver.record(request)
        if traces and receiver.delay:
            time.sleep(receiver.delay)
        if answer == HANG:
            receiver.released.wait()
            self.close_connection = True
            return
        if answer == RESET:  # an abortive close: the client sees a reset, never an answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.send_response(answer)
        if retry_after is not None and answer in (429, 503):
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that go away mid-request are part of the tests

    def process_request(self, request: Any, client_address: Any) -> None:
        self.receiver.track(request, True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.receiver.track(request, False)
        super().shutdown_request(request)


class OtlpReceiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.answers: deque[Answer] = deque()  # the next trace requests' answers, then `default`
        self.default: Answer = 200
        self.retry_after: str | None = None  # Retry-After sent with 429 / 503
        self.delay = 0.0  # seconds before each trace request is answered: a slow backend
        self.requests: list[Request] = []
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self.released.clear()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.receiver = self
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        """The backend goes away: no more connections, open ones cut, held requests let go unanswered."""
        server, self._server = self._server, None
        if server is None:
            return
        self.released.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- used by the handler ------------------------------------------------------------------------------------

    def next_answer(self) -> Answer:
        with self._lock:
            return self.answers.popleft() if self.answers else self.default

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    # -- what arrived -------------------------------------------------------------------------------------------

    def trace_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/v1/traces")]

    def accepted_spans(self) -> list[ReceivedSpan]:
        """Spans of the trace requests answered 2xx (a retried batch that got through twice appears twice)."""
        return [s for r in self.trace_requests() if isinstance(r.answer, int) and r.answer < 300 for s in r.spans]

    def counters(self) -> dict[str, float]:
        """The latest value of every counter metric received."""
        out: dict[str, float] = {}
        with self._lock:
            for request in self.requests:
                out.update(request.metrics)
        return out

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while len(spans := self.accepted_spans()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return spans


def hanging_endpoint() -> tuple[str, socket.socket]:
    """A port that accepts connections (the kernel's backlog) and never answers: (url, socket to close)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", sock


class SlowProxy:
    """A TCP proxy on 127.0.0.1 that holds each chunk a client sends for `delay` seconds: a slow backend in front of
    a real one (e.g. an MLflow server). `url` is the proxy's."""

    def __init__(self, upstream: str, delay: float) -> None:
        host_port = upstream.split("://", 1)[-1].rstrip("/")
        self._upstream = (host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1]))
        self._delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> SlowProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, self._delay), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, 0.0), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                time.sleep(delay)
                target.sendall(chunk)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)
