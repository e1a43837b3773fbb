"""Added CPU per agent run: one whole multi-step agent run of each framework, our instrumentation off and on.

    python -m benchmarks.bench_agents                               # every framework, 40 pairs of 5 runs each
    python -m benchmarks.bench_agents --frameworks openai_agents --pairs 100

Each framework's run lives in benchmarks/agent_runs/<framework>.py: ``setup(base_url)`` gives (run, instrument,
uninstrument); the run makes at least one tool call and one handoff or sub-agent call against the fake provider.
The fake provider runs in its own process, so its CPU is not counted. Each framework's worker (in the venv the
framework installs into: VENV in its module, .venv by default) configures mltrack-otel with an in-memory exporter,
warms up, then alternates slices of runs with our instrumentation on and off (alternating which half goes first)
and reports the median of the paired differences of process CPU per run, with its interquartile range. What the
difference covers: every span of the run (agent, tool, handoff, model calls), pricing, the ledger, the export copy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("openai_agents", "pydantic_ai", "mcp", "langgraph")

WORKER = r"""
import importlib, json, statistics, sys, time
import mltrack_otel
from mltrack_otel import provider

name, url, pairs, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mltrack_otel.configure(exporters=["memory"], cloud_hosts=["127.0.0.1"])
exporter = provider.runtime().memory_exporter
module = importlib.import_module(f"benchmarks.agent_runs.{name}")
run, instrument, uninstrument = module.setup(url)
instrument()
for _ in range(10):  # warm-up: imports, clients, caches
    run()
spans_per_run = len(exporter.get_finished_spans()) / 10
exporter.clear()
switch = {True: instrument, False: uninstrument}
diffs, base = [], []
for i in range(pairs):
    cpu = {}
    for on in (True, False) if i % 2 else (False, True):
        switch[on]()
        t = time.process_time()
        for _ in range(runs):
            run()
        cpu[on] = (time.process_time() - t) / runs * 1e6
        exporter.clear()
    diffs.append(cpu[True] - cpu[False])
    base.append(cpu[False])
q = statistics.quantiles(diffs, n=4)
print(json.dumps({"added_us": statistics.median(diffs), "q1": q[0], "q3": q[2], "raw_us": statistics.median(base),
                  "spans_per_run": spans_per_run}))
"""


def _python(name: str) -> str:
    """The interpreter of the venv the framework installs into (VENV in its module), else this one."""
    text = (ROOT / "benchmarks" / "agent_runs" / f"{name}.py").read_text()
    venv = ".venv-fw" if 'VENV = ".venv-fw"' in text else ".venv"
    candidate = ROOT / venv / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def _fake_provider() -> tuple[subprocess.Popen, str]:
    """The fake provider in its own process on a free port; (process, base URL) once it answers."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mltrack_otel.testing.fake_provider", "--port", str(port)]
    process = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=1)  # loopback only
            break
        except OSError as exc:
            if getattr(exc, "code", None) is not None:  # an HTTP error: it is up
                break
            time.sleep(0.05)
    return process, url


def measure(frameworks: list[str], pairs: int, runs: int) -> dict[str, Any]:
    process, url = _fake_provider()
    out: dict[str, Any] = {}
    try:
        print(f"{'framework':<15} {'raw µs/run':>11} {'added µs/run':>13} {'IQR':>17} {'spans/run':>10}")
        for name in frameworks:
            cmd = [_python(name), "-c", WORKER, name, url, str(pairs), str(runs)]
            env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0", "MLTRACK_CLOUD_HOSTS": "127.0.0.1"}
            done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
            if done.returncode != 0:
                lines = (done.stderr or done.stdout).strip().splitlines()
                out[name] = {"error": lines[-1] if lines else f"exit {done.returncode}"}
                print(f"{name:<15} error: {out[name]['error']}")
                continue
            fig = out[name] = json.loads(done.stdout.strip().splitlines()[-1])
            iqr = f"[{fig['q1']:.0f}, {fig['q3']:.0f}]"
            print(f"{name:<15} {fig['raw_us']:>11.0f} {fig['added_us']:>13.0f} {iqr:>17} {fig['spans_per_run']:>10.1f}")
    finally:
        process.terminate()
        process.wait(timeout=10)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", nargs="*", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5, help="agent runs per half of a pair")
    args = parser.parse_args(argv)
    return measure(args.frameworks, args.pairs, args.runs)


if __name__ == "__main__":
    main()
