"""OTLP/HTTP export: spans per second to a real receiver, and the app-side CPU per span of the export path.

    python -m benchmarks.bench_otlp_export [--calls 5000] [--no-phoenix] [--json out.json]

1. Exporter throughput. Spans made by the real pipeline (a track_llm_context scope + one logged gpt-4o call with
   messages: 2 spans, enriched with cost and totals by the CostSpanProcessor) are exported with the pipeline's own
   OTLPSpanExporter (``provider._otlp_exporter``) in batches of ``export_batch_size`` (256), as the
   BatchSpanProcessor worker does. Receivers:
     * ``sink``: a minimal OTLP/HTTP receiver (stdlib, its own process) that reads the body and answers 200,
       so the figure is our side's limit: protobuf encoding + HTTP;
     * ``phoenix``: Arize Phoenix from .venv-phoenix (tests/phoenix_server.py). It answers as soon as a request is
       queued, so we also time how long until it has *stored* every span (polled via its GraphQL recordCount).
2. End to end. ``configure(exporters=["otlp"])`` to the sink, ``--calls`` calls, then ``shutdown()``: spans/s from
   the first call until the flush has returned (queue sized so nothing is dropped).
3. App-side CPU per span. ``time.thread_time()`` of the producing thread over ``--calls`` calls with
   ``exporters=["otlp"]`` (to the sink) minus the same with no exporter (``exporters=["none"]``), per span. That is
   what the export path costs the application's thread (the BatchSpanProcessor enqueue; with http/protobuf it
   includes the SpanMetricsExporter's enqueue as well); encoding and sending happen on the worker thread, reported
   separately as process CPU per span.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mltrack_otel
from mltrack_otel import ledger, provider

PROMPT = [{"role": "user", "content": "What is the weather in Paris today? " * 10}]
RESPONSE = "Sunny, 21 C, light wind from the west. " * 10
USAGE = {"prompt_tokens": 1200, "completion_tokens": 300}
SPANS_PER_CALL = 2

_SINK = r"""
import http.server, json, sys, threading
stats = {"requests": 0, "bytes": 0}
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            stats["requests"] += 1
            stats["bytes"] += len(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        data = json.dumps(stats).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_port, flush=True)
server.serve_forever()
"""


def start_sink() -> tuple[str, subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return f"http://127.0.0.1:{port}", proc


def sink_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/stats", timeout=10) as response:
        return json.load(response)


def one_call(i: int) -> None:
    with mltrack_otel.track_llm_context("bench-step") as tracker:
        tracker.log_prompt_response(PROMPT, RESPONSE, model="gpt-4o", provider="openai", token_usage=USAGE)


def make_spans(calls: int) -> list:
    mltrack_otel.configure(exporters=["memory"])
    for i in range(calls):
        one_call(i)
    spans = list(provider.runtime().memory_exporter.get_finished_spans())
    mltrack_otel.shutdown()
    return spans


def exporter_throughput(endpoint: str, spans: list, batch: int) -> dict:
    settings = mltrack_otel.load_settings(otlp_endpoint=endpoint, otlp_protocol="http/protobuf")
    exporter = provider._otlp_exporter(settings)
    exporter.export(spans[:batch])  # connection set-up, warm-up
    ok = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    for start in range(0, len(spans), batch):
        chunk = spans[start : start + batch]
        if exporter.export(chunk).name == "SUCCESS":
            ok += len(chunk)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    exporter.shutdown()
    return {
        "spans": len(spans),
        "exported": ok,
        "seconds": round(wall, 3),
        "spans_per_s": round(ok / wall),
        "client_cpu_us_per_span": round(cpu / len(spans) * 1e6, 2),
    }


def phoenix_count(url: str) -> int:
    query = json.dumps({"query": "{ projects { edges { node { name recordCount } } } }"}).encode()
    request = urllib.request.Request(f"{url}/graphql", query, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        edges = json.load(response)["data"]["projects"]["edges"]
    return sum(edge["node"]["recordCount"] for edge in edges)


_meter_providers: list = []


def _keep_meter_providers() -> None:
    """shutdown() leaves the MeterProvider configure() built running (and exporting at interpreter exit, to a
    receiver that is gone by then): keep them, to shut them down after each measurement."""
    real = provider._meter_provider

    def capture(settings, names):
        meter_provider, reader = real(settings, names)
        if meter_provider is not None:
            _meter_providers.append(meter_provider)
        return meter_provider, reader

    provider._meter_provider = capture


def _close_meter_providers() -> None:
    while _meter_providers:
        _meter_providers.pop().shutdown(timeout_millis=2000)


def produce(calls: int, **overrides) -> dict:
    ledger.LEDGER.reset()
    mltrack_otel.configure(**overrides)
    for i in range(200):  # warm-up: imports, pricing memo, exporter connection
        one_call(i)
    mltrack_otel.shutdown()
    _close_meter_providers()
    ledger.LEDGER.reset()
    mltrack_otel.configure(**overrides)
    proc0, wall0, thread0 = time.process_time(), time.perf_counter(), time.thread_time()
    for i in range(calls):
        one_call(i)
    thread_cpu = time.thread_time() - thread0
    produced = time.perf_counter() - wall0
    mltrack_otel.shutdown()
    wall = time.perf_counter() - wall0
    _close_meter_providers()
    spans = calls * SPANS_PER_CALL
    return {
        "spans": spans,
        "produce_seconds": round(produced, 3),
        "until_flushed_seconds": round(wall, 3),
        "spans_per_s_end_to_end": round(spans / wall),
        "thread_cpu_us_per_span": round(thread_cpu / spans * 1e6, 2),
        "process_cpu_us_per_span": round((time.process_time() - proc0) / spans * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000, help=f"calls per measurement ({SPANS_PER_CALL} spans each)")
    parser.add_argument("--batch", type=int, default=256, help="spans per export request (export_batch_size)")
    parser.add_argument("--no-phoenix", action="store_true", help="skip the Phoenix measurement")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for key in [k for k in os.environ if k.startswith(("OTEL_", "MLTRACK_"))]:
        del os.environ[key]
    os.chdir(tempfile.mkdtemp(prefix="bench-otlp-"))  # no stray .mltrack.yml
    _keep_meter_providers()

    results: dict = {"calls": args.calls, "spans_per_call": SPANS_PER_CALL, "batch": args.batch, "cpus": os.cpu_count()}
    spans = make_spans(args.calls)
    sink_url, sink = start_sink()
    try:
        results["exporter_to_sink"] = exporter_throughput(sink_url, spans, args.batch)
        stats = sink_stats(sink_url)
        results["exporter_to_sink"]["bytes_per_span"] = round(stats["bytes"] / (len(spans) + args.batch))

        queue = args.calls * SPANS_PER_CALL + 1000  # nothing dropped: this measures throughput, not shedding
        otlp = {"otlp_endpoint": sink_url, "otlp_protocol": "http/protobuf", "export_queue_size": queue}
        results["no_exporter"] = produce(args.calls, exporters=["none"])
        results["otlp_to_sink"] = produce(args.calls, exporters=["otlp"], **otlp)
        added = results["otlp_to_sink"]["thread_cpu_us_per_span"] - results["no_exporter"]["thread_cpu_us_per_span"]
        results["app_thread_cpu_us_per_span_added_by_otlp"] = round(added, 2)
    finally:
        sink.terminate()
        sink.wait()

    if not args.no_phoenix:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.phoenix_server import start_phoenix

        url, _grpc, stop = start_phoenix(Path(tempfile.mkdtemp(prefix="bench-phoenix-")))
        try:
            before = phoenix_count(url)
            t0 = time.perf_counter()
            results["exporter_to_phoenix"] = exporter_throughput(url, spans, args.batch)
            expected = before + len(spans)  # the warm-up batch re-sends span ids Phoenix already has (upserted)
            count = before
            deadline = time.monotonic() + 180
            while count < expected and time.monotonic() < deadline:
                time.sleep(0.2)
                count = phoenix_count(url)
            stored = time.perf_counter() - t0
            results["phoenix_stored"] = {
                "spans": count - before,
                "expected": expected - before,
                "seconds_until_stored": round(stored, 2),
                "spans_per_s_stored": round((count - before) / stored),
            }
        finally:
            stop()

    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
