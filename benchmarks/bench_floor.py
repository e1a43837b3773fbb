"""Where our added CPU goes, in place: the SDK's own span work against everything mltrack-otel does on top.

    python -m benchmarks.bench_floor                        # every SDK operation, 40 slice pairs each
    python -m benchmarks.bench_floor --ops openai_chat --pairs 100

One process per operation runs the instrumented call (content capture on, CostSpanProcessor in front of an
in-memory exporter) with clocks around the SDK's span methods and our processor, switched off and on in
alternating slices as benchmarks.bench_toggle does (added CPU = the median of the paired differences). The shares
are the profile behind the floor: whatever an instrumentation does, it pays the SDK's span start, attribute
setting, end and export; the rest is ours (reading the request and response, content JSON, pricing, the ledger,
the enriched copy). The clocks add about a microsecond per timed call and cold caches make everything dearer in
place than in a loop of its own: read the shares here and the totals in the paired table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks._overhead_worker import PROVIDER_OPS

OPERATIONS = ("openai_chat", "openai_stream", "anthropic_chat", "anthropic_stream", "openai_embeddings", *PROVIDER_OPS)
ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, statistics, sys, time
from benchmarks import _overhead_worker as w
from opentelemetry.sdk import trace as sdk
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from mltrack_otel.processor import CostSpanProcessor

op, pairs, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bodies = json.load(open(sys.argv[4]))
exporter, _ = w.setup_variant("mltrack", op)
call = w.make_call(op, "inproc", None, bodies)
switch = w.switch_for("mltrack", op)
clock = time.perf_counter_ns
spent = {}

def timed(owner, name, label):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        t = clock()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0) + clock() - t
    setattr(owner, name, wrapper)

# Nested: Span.end contains both processors' on_end, and CostSpanProcessor.on_end contains the export.
timed(sdk.Tracer, "start_span", "start_span")
timed(sdk.Span, "set_attributes", "set_attributes")
timed(sdk.Span, "end", "end")
timed(CostSpanProcessor, "on_start", "ours_on_start")
timed(CostSpanProcessor, "on_end", "ours_on_end")
timed(SimpleSpanProcessor, "on_end", "export")

for _ in range(300):  # first calls are dear (price lookups, lazy imports): keep them off the clocks
    call()
exporter.clear()
spent.clear()
pairs_cpu, _ = w.paired_slices(call, switch, exporter, pairs, calls, f"mltrack/{op}")
diffs = [on - off for on, off in pairs_cpu]
on_calls = 300 + pairs * calls  # the clocks tick on every call made switched on: the warm-up's and the on-halves'
shares = {k: v / on_calls / 1e3 for k, v in spent.items()}
print(json.dumps({"added_us": statistics.median(diffs), **shares}))
"""


def measure(op: str, pairs: int, calls: int, bodies: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-c", WORKER, op, str(pairs), str(calls), str(bodies)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1]}
    r = json.loads(done.stdout.strip().splitlines()[-1])
    sdk_start = r["start_span"] - r["ours_on_start"]
    sdk_end = r["end"] - r["ours_on_end"]  # the SDK's end, without the processors
    ours_processor = r["ours_on_end"] - r["export"] + r["ours_on_start"]
    added = r["added_us"]
    return {
        "added_us": added,
        "sdk_span_us": sdk_start + r["set_attributes"] + sdk_end + r["export"],
        "sdk_start_us": sdk_start,
        "sdk_set_attributes_us": r["set_attributes"],
        "sdk_end_us": sdk_end,
        "export_us": r["export"],
        "processor_us": ours_processor,
        "instrumentation_us": added - (sdk_start + r["set_attributes"] + sdk_end + r["export"]) - ours_processor,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="+", default=list(OPERATIONS), choices=OPERATIONS)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--calls", type=int, default=0, help="calls per slice (default: ~30 ms of CPU)")
    args = parser.parse_args(argv)

    from benchmarks.overhead import canned_provider

    results: dict[str, Any] = {}
    with canned_provider() as (_, _, bodies):
        print(
            f"{'operation':18s} {'added':>7s} {'SDK span':>9s} {'of it: start':>12s} {'attrs':>6s} {'end':>5s}"
            f" {'export':>7s} {'processor':>10s} {'instrumentation':>16s}   (µs per call, clocks on)"
        )
        for op in args.ops:
            calls = args.calls or (10 if "stream" in op else 40)
            r = results[op] = measure(op, args.pairs, calls, bodies)
            if "error" in r:
                print(f"{op:18s} ERROR {r['error']}")
                continue
            print(
                f"{op:18s} {r['added_us']:7.0f} {r['sdk_span_us']:9.0f} {r['sdk_start_us']:12.0f}"
                f" {r['sdk_set_attributes_us']:6.0f} {r['sdk_end_us']:5.0f} {r['export_us']:7.0f}"
                f" {r['processor_us']:10.0f} {r['instrumentation_us']:16.0f}"
            )
    return results


if __name__ == "__main__":
    main()
