"""Added CPU per call, each variant switched off and on inside its own process: ours, the floor and the peers.

    python -m benchmarks.bench_toggle                       # every operation and variant, 60 slice pairs each
    python -m benchmarks.bench_toggle --ops openai_chat --variants mltrack otel-genai --pairs 100

Comparing separate processes on a shared VM (benchmarks.overhead's per-process table) mixes in the differences
between the processes and the machine's drift, which are often larger than the figure itself. Here each variant's
process runs the call with its instrumentation on, then off, in short alternating slices, and reports the median
and interquartile range of the paired differences: noise hits both halves of a pair alike. How each variant is
switched (benchmarks._overhead_worker.switch_for): ours and OTel GenAI are uninstrumented and instrumented again;
OpenInference and OpenLLMetry are silenced with OTel's suppress_instrumentation(), their pass-through wrapper
staying in the off half (in their favour); the floor by its flag. benchmarks.overhead runs this as its paired table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._overhead_worker import FLOOR, OPS, family

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, statistics, sys, time
from benchmarks import _overhead_worker as w

op, variant, pairs, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
bodies = json.load(open(sys.argv[5]))
exporter, _ = w.setup_variant(variant, op)
call = w.make_call(op, "inproc", None, bodies)
switch = w.switch_for(variant, op)
pairs_cpu, per_call = w.paired_slices(call, switch, exporter, pairs, calls, f"{variant}/{op}")
diffs = [on - off for on, off in pairs_cpu]
on_cpu, off_cpu = [on for on, _ in pairs_cpu], [off for _, off in pairs_cpu]
q = statistics.quantiles(diffs, n=4)
print(json.dumps({"added_us": statistics.median(diffs), "q1": q[0], "q3": q[2], "spans_per_call": per_call,
                  "raw_us": statistics.median(off_cpu), "on_us": statistics.median(on_cpu)}))
"""


def run(op: str, variant: str, pairs: int, calls: int, bodies: Path) -> dict[str, Any]:
    from benchmarks.overhead import peer_env

    cmd = [sys.executable, "-c", WORKER, op, variant, str(pairs), str(calls), str(bodies)]
    env = {**os.environ, **peer_env(variant, op), "PYTHONHASHSEED": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(
    ops: list[str], variants: list[str] | None, pairs: int, calls: int, bodies: Path, show: bool = True
) -> dict[str, dict[str, Any]]:
    """{op: {variant: paired figures}}, with each op's ratio to its best peer; prints a table as it goes."""
    from benchmarks.overhead import OURS, PEERS_BY_FAMILY, variants_for

    results: dict[str, dict[str, Any]] = {}
    if show:
        print(f"{'operation':18s} {'variant':18s} {'added µs/call':>13s} {'IQR':>12s} {'ratio':>6s} {'raw µs':>7s}")
    for op in ops:
        peers = set(PEERS_BY_FAMILY[family(op)])
        chosen = [v for v in variants_for(op) if v != "raw" and (variants is None or v in variants)]
        n = calls or (10 if "stream" in op or "langchain" in op else 40)
        rows = results.setdefault(op, {})
        for variant in chosen:
            rows[variant] = run(op, variant, pairs, n, bodies)
        covered = [rows[v]["added_us"] for v in chosen if v in peers and "error" not in rows[v]]
        best = min(covered) if covered else None
        for variant in chosen:
            r = rows[variant]
            if "error" in r:
                if show:
                    print(f"{op:18s} {variant:18s} ERROR {r['error'][:80]}")
                continue
            if (variant in OURS or variant == FLOOR) and best:
                # The floor's ratio shows where the ratio goal is out of reach: a bare span costs more than 0.4x.
                r["ratio_to_best_peer"] = r["added_us"] / best
            if show:
                ratio = f"{r['ratio_to_best_peer']:.2f}" if "ratio_to_best_peer" in r else ""
                ratio = f"({ratio})" if ratio and variant == FLOOR else ratio
                iqr = f"{r['q1']:.0f}..{r['q3']:.0f}"
                print(f"{op:18s} {variant:18s} {r['added_us']:13.0f} {iqr:>12s} {ratio:>6s} {r['raw_us']:7.0f}")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    parser.add_argument("--variants", nargs="+", help="default: ours, the floor and every peer")
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--calls", type=int, default=0, help="calls per slice (default: ~30 ms of CPU)")
    args = parser.parse_args(argv)

    from benchmarks.overhead import canned_provider

    started = time.perf_counter()
    with canned_provider() as (_, _, bodies):
        results = measure(args.ops, args.variants, args.pairs, args.calls, bodies)
    print(
        f"({time.perf_counter() - started:.0f} s; the floor, {FLOOR}, is not a peer: its (ratio) is what a bare span"
        " costs against the best peer, so where it exceeds 0.4 the ratio goal is out of reach)"
    )
    return results


if __name__ == "__main__":
    main()
