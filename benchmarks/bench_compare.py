"""Seconds per `compare` (its bootstrap dominates) by calls per variant, and µs per `ab()` pick.

Run from the repository root: ``python -m benchmarks.bench_compare``. No MLflow: the calls are built in memory, so
this is the statistics alone (reading the spans back from MLflow is report's cost, the same for both commands).
"""

from __future__ import annotations

import random
import time
import timeit
from decimal import Decimal

from mltrack_otel import call_context, config
from mltrack_otel.ab import ab
from mltrack_otel.compare import compare_calls
from mltrack_otel.report import CountedCall


def calls(n: int, variant: str, rng: random.Random, scale: float) -> list[CountedCall]:
    return [
        CountedCall(
            model="gpt-4o-mini",
            provider="openai",
            day="2026-12-06",
            conversation="-",
            prompt_tokens=(p := rng.randint(50, 500)),
            completion_tokens=(c := rng.randint(10, 200)),
            cost_usd=Decimal(str(round((p * 0.15 + c * 0.6) * scale / 1e6, 12))),
            latency_s=rng.lognormvariate(-1.5, 0.5),
            error_type="RateLimitError" if rng.random() < 0.02 else None,
            attributes={"gen_ai.prompt.version": variant},
        )
        for _ in range(n)
    ]


def main() -> None:
    print("compare: 2 variants, 3 statistics bootstrapped (cost mean, latency p50, error rate)")
    print(f"{'calls/variant':>13} {'resamples':>9} {'seconds':>8}")
    for n, resamples in ((100, 2000), (1_000, 2000), (10_000, 2000), (10_000, 500)):
        rng = random.Random(n)
        data = calls(n, "v1", rng, 1.0) + calls(n, "v2", rng, 1.1)
        start = time.perf_counter()
        compare_calls(data, "prompt.version", resamples=resamples)
        print(f"{n:>13} {resamples:>9} {time.perf_counter() - start:>8.2f}")

    config.set_current(config.Settings())
    rng = random.Random(1)
    cases = {
        "ab() random pick": lambda: ab("exp", {"a": 1, "b": 2}, {"a": 0.5, "b": 0.5}, rng=rng),
        "ab() sticky by key": lambda: ab("exp", {"a": 1, "b": 2}, key="user-42"),
        "ab() + with block (attach/detach)": lambda: ab("exp", ["a", "b"], rng=rng).__enter__().__exit__(),
    }
    print(f"\n{'ab()':<40} {'µs/call':>8}")
    for label, fn in cases.items():
        fn()
        per = min(timeit.repeat(fn, number=20_000, repeat=5)) / 20_000 * 1e6
        print(f"{label:<40} {per:>8.2f}")
    with call_context.attached({"user.id": "u-1"}):
        fn = lambda: ab("exp", ["a", "b"], sticky="user")  # noqa: E731
        per = min(timeit.repeat(fn, number=20_000, repeat=5)) / 20_000 * 1e6
        print(f"{'ab() sticky=user (from call_context)':<40} {per:>8.2f}")
    config.set_current(None)


if __name__ == "__main__":
    main()
