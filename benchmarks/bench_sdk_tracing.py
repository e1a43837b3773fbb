"""anthropic 2.x traces itself: CPU per call of its span, ours, and both, behind CostSpanProcessor.

    python -m benchmarks.bench_sdk_tracing                 # chat and stream, 40 slice pairs each
    python -m benchmarks.bench_sdk_tracing --pairs 80 --calls 40

Decides between enriching the SDK's own span and switching it off for the calls we instrument. One process, a
real global TracerProvider (as configure() sets one, which is what turns the SDK's spans on) with
CostSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter())), the SDK on an in-process httpx2.MockTransport
serving the canned bodies of benchmarks.bench_providers. Variants, each measured against `raw` in alternating
slices (the figure is the median of the paired differences, and its interquartile range):

  raw    not instrumented, client open_telemetry=False                  0 spans
  sdk    not instrumented, the SDK's own span (priced by the processor)  1 span: what enriching it starts from,
         before any of our content policy, budget check or stream rules
  ours   instrumented, default client: the SDK's span switched off       1 span (what we ship)
  both   instrumented, client asking for the SDK's spans (its own tracer_provider): ours + the SDK's nested
         under it, as every instrumented call was before                 2 spans
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from benchmarks.bench_providers import PROMPT, _anthropic_bodies

VARIANTS = ("sdk", "ours", "both")


def _setup() -> tuple[Any, Any]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from mltrack_otel import config
    from mltrack_otel.ledger import Ledger
    from mltrack_otel.processor import CostSpanProcessor

    config.set_current(config.Settings())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(CostSpanProcessor(SimpleSpanProcessor(exporter), ledger=Ledger()))
    trace.set_tracer_provider(provider)
    return provider, exporter


def _calls(stream: bool, provider: Any) -> dict[str, Any]:
    """One call per (variant or raw), each through a client set up as the variant needs."""
    import anthropic
    import httpx2

    body = _anthropic_bodies()[1 if stream else 0]
    kind = "text/event-stream" if stream else "application/json"

    def client(**options: Any) -> Any:
        transport = httpx2.MockTransport(lambda _: httpx2.Response(200, content=body, headers={"content-type": kind}))
        http = anthropic.DefaultHttpxClient(transport=transport)
        return anthropic.Anthropic(api_key="x", max_retries=0, http_client=http, **options)

    system, messages = PROMPT[0]["content"], PROMPT[1:]

    def call_of(c: Any) -> Any:
        if stream:
            return lambda: list(
                c.messages.create(
                    model="claude-haiku-4-5", max_tokens=256, system=system, messages=messages, stream=True
                )
            )
        return lambda: c.messages.create(model="claude-haiku-4-5", max_tokens=256, system=system, messages=messages)

    return {
        "raw": call_of(client(open_telemetry=False)),
        "sdk": call_of(client()),
        "ours": call_of(client()),
        "both": call_of(client(open_telemetry={"tracer_provider": provider})),
    }


def _slice(call: Any, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - start) / n * 1e6


def measure(stream: bool, pairs: int, n: int) -> dict[str, dict[str, float]]:
    from mltrack_otel.instrumentation import instrument, uninstrument

    provider, exporter = _setup()
    calls = _calls(stream, provider)
    instrumented = {"raw": False, "sdk": False, "ours": True, "both": True}

    def run(variant: str, count: int) -> float:
        (instrument if instrumented[variant] else uninstrument)(["anthropic"])
        return _slice(calls[variant], count)

    out: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        for _ in range(3):  # warm up caches and lazy imports
            run(variant, n)
        exporter.clear()
        run(variant, n)
        spans = len(exporter.get_finished_spans()) / n
        exporter.clear()
        diffs, raws = [], []
        for i in range(pairs):  # alternate which half comes first
            if i % 2:
                on, off = run(variant, n), run("raw", n)
            else:
                off, on = run("raw", n), run(variant, n)
            diffs.append(on - off)
            raws.append(off)
            exporter.clear()
        q = statistics.quantiles(diffs, n=4)
        out[variant] = {"added_us": statistics.median(diffs), "q1": q[0], "q3": q[2], "spans": spans}
        out[variant]["raw_us"] = statistics.median(raws)
    uninstrument(["anthropic"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--calls", type=int, default=40, help="calls per slice (streams: a quarter)")
    parser.add_argument("--worker", choices=("chat", "stream"))
    args = parser.parse_args()
    if args.worker:  # one operation per process: the global provider can be set once
        import json

        stream = args.worker == "stream"
        print(json.dumps(measure(stream, args.pairs, max(args.calls // 4, 5) if stream else args.calls)))
        return
    import json
    import subprocess
    import sys

    print(f"{'operation':10} {'variant':6} {'spans':>5} {'added µs/call':>14} {'IQR':>16} {'raw µs':>8}")
    for op in ("chat", "stream"):
        cmd = [sys.executable, "-m", "benchmarks.bench_sdk_tracing", "--worker", op]
        cmd += ["--pairs", str(args.pairs), "--calls", str(args.calls)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        for variant, row in json.loads(done.stdout.strip().splitlines()[-1]).items():
            iqr = f"[{row['q1']:.0f}..{row['q3']:.0f}]"
            print(f"{op:10} {variant:6} {row['spans']:5.0f} {row['added_us']:14.0f} {iqr:>16} {row['raw_us']:8.0f}")


if __name__ == "__main__":
    main()
