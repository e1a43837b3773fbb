"""Added CPU per call of attribution: the same instrumented OpenAI chat call with and without attributes(...) around it.

    python -m benchmarks.bench_attribution                 # 2000 pairs of 4 calls per half, per row (~3 min)
    python -m benchmarks.bench_attribution --pairs 5000 --calls 2

The call is benchmarks.overhead's `openai_chat` (our instrumentation, CostSpanProcessor, in-memory export), answered
in-process with the bytes the fake provider sends, so the figure is ours and not the network's. Each pair makes a
few calls bare and as many with ``mltrack_otel.attributes(user_id=, session_id=, feature=, tenant=)`` made and
entered around each (what a request handler does), alternating which half goes first, each timed in thread CPU; the
median of the paired differences is printed with its standard error and IQR. What the difference covers:
validating and attaching the block, four more span attributes, the processor's per-user and per-tag totals
(Ledger.attribute) and the larger enriched copy.
A second row does the same with ``track_llm_context(name, user=, tags=)`` against a bare ``track_llm_context(name)``.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from benchmarks._overhead_worker import make_call, setup_variant

OP = "openai_chat"


def canned_openai_chat() -> dict[str, Any]:
    """The fake provider's exact response to the benchmark's chat request, for the in-process transport."""
    import httpx2

    from mltrack_otel.testing.fake_provider import FakeProvider

    with FakeProvider() as fake, httpx2.Client() as http:
        make_call(OP, "loopback", fake.url, None)()
        request = fake.requests[-1]
        response = http.post(fake.url + request.path, json=request.json)
        response.raise_for_status()
        return {
            OP: {
                "content_type": response.headers["content-type"],
                "body": base64.b64encode(response.content).decode(),
                "path": request.path,
            }
        }


def paired(
    call: Callable[[], Any],
    bare: Callable[[], Any],
    attributed: Callable[[], Any],
    pairs: int,
    calls: int,
    exporter: Any,
) -> tuple[list[float], list[float]]:
    """(on - off thread CPU µs per call for each pair, off µs per call): `calls` calls bare and as many attributed
    per pair, alternating which half goes first. Short halves over thousands of pairs: drift hits both alike."""
    for block in (bare, attributed):  # warm-up of both halves
        for _ in range(200):
            with block():
                call()
    exporter.clear()
    clock = time.thread_time_ns
    diffs, base = [], []
    for i in range(pairs):
        cpu = {}
        for on in (True, False) if i % 2 else (False, True):
            block = attributed if on else bare
            t = clock()
            for _ in range(calls):
                with block():
                    call()
            cpu[on] = (clock() - t) / 1e3 / calls
        diffs.append(cpu[True] - cpu[False])
        base.append(cpu[False])
        if i % 200 == 199:
            exporter.clear()
    return diffs, base


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000, help="pairs of halves (one bare, one attributed)")
    parser.add_argument("--calls", type=int, default=4, help="calls per half")
    args = parser.parse_args(argv)

    import mltrack_otel
    from mltrack_otel import ledger

    bodies = canned_openai_chat()
    exporter, _ = setup_variant("mltrack", OP)
    call = make_call(OP, "inproc", None, bodies)

    def attributed() -> Any:
        return mltrack_otel.attributes(user_id="user-1234", session_id="session-42", feature="search", tenant="acme")

    rows = [
        ("attributes(user, session, 2 tags)", nullcontext, attributed),
        (
            "track_llm_context(user=, tags=)",
            lambda: mltrack_otel.track_llm_context("request"),
            lambda: mltrack_otel.track_llm_context("request", user="user-1234", tags={"feature": "search"}),
        ),
    ]
    print(f"{'added by':36s} {'µs/call':>8s} {'± SE':>6s} {'IQR of pairs':>16s} {'base µs/call':>12s}")
    for label, bare, on in rows:
        diffs, base = paired(call, bare, on, args.pairs, args.calls, exporter)
        q1, median, q3 = statistics.quantiles(diffs, n=4)
        # Standard error of the median, from the IQR (normal approximation: sd = IQR / 1.349).
        se = 1.2533 * (q3 - q1) / 1.349 / len(diffs) ** 0.5
        iqr = f"[{q1:.1f}, {q3:.1f}]"
        print(f"{label:36s} {median:8.1f} {se:6.1f} {iqr:>16s} {statistics.median(base):12.1f}")
    print(f"({args.pairs} pairs of {args.calls} calls per half, thread CPU time)")
    assert ledger.LEDGER.user_totals("user-1234").calls > 0  # the attributed calls were counted per user


if __name__ == "__main__":
    main()
