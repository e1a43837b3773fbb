"""µs per call of Pricer.price (memoised) against genai-prices' own calc_price.

Run from the repository root: ``python -m benchmarks.bench_pricing``. The hot-path budget is 5 µs per call.
"""

from __future__ import annotations

import logging
import timeit
from collections.abc import Callable

import genai_prices

from mltrack_otel.pricing import PriceOverride, Pricer, Usage

_NUMBER = 20_000
_REPEAT = 5


def _us_per_call(fn: Callable[[], object]) -> float:
    fn()  # warm the caches first: the steady state is what the hot path sees
    return min(timeit.repeat(fn, number=_NUMBER, repeat=_REPEAT)) / _NUMBER * 1e6


def main() -> None:
    logging.getLogger("mltrack_otel.pricing").setLevel(logging.ERROR)  # the unknown model warns once
    pricer = Pricer(overrides={"my-ft-model": PriceOverride(input_per_mtok=1, output_per_mtok=2)})
    usage = Usage(input_tokens=12_000, output_tokens=800, cache_read_tokens=8_000, reasoning_tokens=200)
    genai_usage = genai_prices.Usage(
        input_tokens=12_000, output_tokens=800, cache_read_tokens=8_000, output_reasoning_tokens=200
    )
    cases: list[tuple[str, Callable[[], object]]] = [
        ("Pricer.price  openai/gpt-4o (memoised)", lambda: pricer.price("openai", "gpt-4o", usage)),
        (
            "Pricer.price  anthropic/claude-sonnet-4-5 (tiered)",
            lambda: pricer.price("anthropic", "claude-sonnet-4-5", usage),
        ),
        ("Pricer.price  openai/o3 (dated prices, at_ns=None)", lambda: pricer.price("openai", "o3", usage)),
        (
            "Pricer.price  deepseek-chat (time-of-day prices)",
            lambda: pricer.price(None, "deepseek-chat", usage),
        ),
        ("Pricer.price  override my-ft-model", lambda: pricer.price(None, "my-ft-model", usage)),
        ("Pricer.price  unknown model (cached miss)", lambda: pricer.price("openai", "no-such-model", usage)),
        (
            "Pricer.price  perplexity/sonar (per-request fee)",
            lambda: pricer.price("perplexity", "sonar", usage),
        ),
        (
            "genai_prices.calc_price  gpt-4o",
            lambda: genai_prices.calc_price(genai_usage, "gpt-4o", provider_id="openai"),
        ),
        (
            "genai_prices.calc_price  claude-sonnet-4-5",
            lambda: genai_prices.calc_price(genai_usage, "claude-sonnet-4-5", provider_id="anthropic"),
        ),
    ]
    width = max(len(name) for name, _ in cases)
    print(f"genai-prices {genai_prices.__version__}; best of {_REPEAT} x {_NUMBER} calls")
    for name, fn in cases:
        print(f"{name:<{width}}  {_us_per_call(fn):8.2f} µs/call")
    first = Pricer()
    cold = timeit.timeit(lambda: first.price("anthropic", "claude-3-5-sonnet-20241022", usage), number=1) * 1e6
    print(f"{'Pricer.price  first call of a model (cold lookup)':<{width}}  {cold:8.2f} µs")


if __name__ == "__main__":
    main()
