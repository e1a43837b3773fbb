"""Our added CPU per call, measured by switching our instrumentation on and off inside one process.

    python -m benchmarks.bench_toggle                       # every operation, 60 slice pairs each
    python -m benchmarks.bench_toggle --ops openai_chat --pairs 100

benchmarks.overhead compares variants that each run in their own process; on a shared VM the differences between
processes (and the machine's drift) are often larger than the figure itself. Here one process runs the call with
mltrack-otel on, then off (the wrappers stay installed and pass straight through), in short alternating slices,
and reports the median and interquartile range of the paired differences: noise hits both halves of a pair alike.
The bare-SDK-span floor (see benchmarks.overhead's sdk-span variant) is toggled the same way in its own process.
Only what can be switched off in place is measured: the peers cannot, so they stay in benchmarks.overhead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._overhead_worker import OPS

OPERATIONS = tuple(op for op in OPS if op != "langchain_chat")  # LangChain needs the frameworks venv

WORKER = r"""
import json, statistics, sys, time
from benchmarks import _overhead_worker as w

op, variant, pairs, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
bodies = json.load(open(sys.argv[5]))
exporter, _ = w.setup_variant(variant, op)
call = w.make_call(op, "inproc", None, bodies)
if variant == "sdk-span":
    switch = lambda on: setattr(w, "FLOOR_ON", on)
else:
    from mltrack_otel.instrumentation import _stainless
    patches = [c._patch for c in _stainless.StainlessInstrumentor.__subclasses__() if c.__dict__.get("_patch")]
    switch = lambda on: [setattr(p, "active", on) for p in patches]
for _ in range(300):
    call()
exporter.clear()
diffs, on_cpu, off_cpu = [], [], []
for i in range(pairs):
    cpu = {}
    for on in ((True, False) if i % 2 else (False, True)):
        switch(on)
        t = time.process_time()
        for _ in range(calls):
            call()
        cpu[on] = (time.process_time() - t) / calls * 1e6
        spans = len(exporter.get_finished_spans())
        exporter.clear()
        if (spans > 0) != on:
            raise SystemExit(f"{variant}/{op}: {spans} spans with instrumentation {'on' if on else 'off'}")
    diffs.append(cpu[True] - cpu[False])
    on_cpu.append(cpu[True])
    off_cpu.append(cpu[False])
q = statistics.quantiles(diffs, n=4)
print(json.dumps({"added_us": statistics.median(diffs), "q1": q[0], "q3": q[2],
                  "raw_us": statistics.median(off_cpu), "on_us": statistics.median(on_cpu)}))
"""


def run(op: str, variant: str, pairs: int, calls: int, bodies: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-c", WORKER, op, variant, str(pairs), str(calls), str(bodies)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="+", default=list(OPERATIONS), choices=OPERATIONS)
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--calls", type=int, default=0, help="calls per slice (default: ~30 ms of CPU)")
    args = parser.parse_args(argv)

    from benchmarks.overhead import canned_bodies
    from mltrack_otel.testing.fake_provider import FakeProvider

    results: dict[str, Any] = {}
    started = time.perf_counter()
    with FakeProvider(stream_chunks=30) as fake, tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.json"
        bodies.write_text(json.dumps(canned_bodies(fake)))
        print(f"{'operation':20s} {'variant':20s} {'added µs/call':>14s} {'IQR':>16s} {'raw µs/call':>12s}")
        for op in args.ops:
            calls = args.calls or (10 if "stream" in op else 40)
            for variant in ("mltrack", "mltrack-nocontent", "sdk-span"):
                r = results.setdefault(op, {})[variant] = run(op, variant, args.pairs, calls, bodies)
                if "error" in r:
                    print(f"{op:20s} {variant:20s} ERROR {r['error']}")
                    continue
                iqr = f"{r['q1']:.0f}..{r['q3']:.0f}"
                print(f"{op:20s} {variant:20s} {r['added_us']:14.1f} {iqr:>16s} {r['raw_us']:12.0f}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return results


if __name__ == "__main__":
    main()
