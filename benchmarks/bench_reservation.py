"""What a hard budget costs per call: reserving the worst case before the request and releasing it after.

    python -m benchmarks.bench_reservation

Prints microseconds per call (median of interleaved rounds) of what the instrumentation runs around every request
(`budget.reserve` before it is sent, `Reservation.release` after its span ends):

* no budget: the fast path every call takes when no hard budget is configured (the reservation is None);
* budget: llm_cost_limit and llm_token_limit set, the call in no scope, in a nested track_llm_context and in a
  conversation with its own limit, for a short chat request and for a long one (input estimate over more text);
* the parts: the input estimate alone and the priced worst case alone, for the short request.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from decimal import Decimal

from mltrack_otel import budget, estimate
from mltrack_otel.ledger import LEDGER, Limits, limit_conversation
from mltrack_otel.pricing import Pricer
from mltrack_otel.tracking import track_llm_context

MODEL, PROVIDER = "gpt-4o-mini", "openai"
SHORT = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant that answers in one sentence."},
        {"role": "user", "content": "What is the capital of France, and what is it known for?"},
    ],
    "max_tokens": 200,
}
LONG = {**SHORT, "messages": SHORT["messages"] * 20}  # ~40 messages, ~2.5 kB of text


def reserve_and_release(body: dict) -> Callable[[], None]:
    def once() -> None:
        reservation = budget.reserve(body, MODEL, PROVIDER, "chat")
        if reservation is not None:
            reservation.release()

    return once


def per_call_us(fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def bench(n: int = 20_000, rounds: int = 7) -> dict[str, float]:
    pricer = Pricer()
    saved_limits, saved_pricer = LEDGER.limits, LEDGER.pricer
    LEDGER.pricer = pricer
    budgeted = Limits(token_budget=10**12, cost_budget=Decimal(10**9))
    short, long = reserve_and_release(SHORT), reserve_and_release(LONG)
    cases: dict[str, tuple[Limits, Callable[[], None], Callable[[], None]]] = {
        "no budget (fast path)": (Limits(), short, lambda: None),
        "budget, short request": (budgeted, short, lambda: None),
        "budget, long request": (budgeted, long, lambda: None),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    results["budget, short, 2 nested scopes + conversation limit"] = []
    results["  part: input estimate"] = []
    results["  part: priced worst case"] = []
    limit_conversation("bench", cost_limit=Decimal(10**9))
    try:
        for _ in range(rounds):  # interleaved, so machine noise hits every case alike
            for name, (limits, fn, _) in cases.items():
                LEDGER.limits = limits
                results[name].append(per_call_us(fn, n))
            LEDGER.limits = budgeted
            with track_llm_context("outer"), track_llm_context("inner", conversation_id="bench"):
                results["budget, short, 2 nested scopes + conversation limit"].append(per_call_us(short, n))
            results["  part: input estimate"].append(per_call_us(lambda: estimate.input_tokens(SHORT, MODEL), n))
            results["  part: priced worst case"].append(
                per_call_us(lambda: budget.worst_case(SHORT, MODEL, PROVIDER, "chat", pricer), n)
            )
    finally:
        LEDGER.limits, LEDGER.pricer = saved_limits, saved_pricer
        limit_conversation("bench")
    assert LEDGER.held() == (0, Decimal(0))
    return {name: statistics.median(values) for name, values in results.items()}


def main() -> None:
    print("µs per call, reserve + release (median of interleaved rounds)")
    for name, us in bench().items():
        print(f"  {name:<55} {us:8.2f}")


if __name__ == "__main__":
    main()
