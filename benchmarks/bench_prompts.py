"""Per-call cost of prompt tagging: the same instrumented OpenAI chat call with and without a template in use.

    python -m benchmarks.bench_prompts                 # 60 slice pairs of 40 calls each (~1 min)
    python -m benchmarks.bench_prompts --pairs 20 --calls 20

One process, ours set up as benchmarks.overhead's `mltrack` variant (CostSpanProcessor in front of an in-memory
exporter, content capture on), the OpenAI SDK on an in-process transport answering the fake provider's exact bytes.
Each pair runs a slice of plain calls and a slice of tagged calls, alternating which comes first, and the table
gives the median and interquartile range of the paired differences in CPU µs per call:

* `use() around the slice`: the calls run inside one ``with template.use():`` block: what every call pays for
  carrying gen_ai.prompt.name / gen_ai.prompt.version / mltrack.prompt.hash (the attribute merge in
  base_attributes, three more span attributes to store, copy and export);
* `use() + format() per call`: each call is ``with tpl.use(): create(messages=tpl.format(...))`` against a plain
  call sending the same messages formatted beforehand: the above plus entering the block and formatting.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks import _overhead_worker as w

OP = "openai_chat"
TEMPLATE = [
    {"role": "system", "content": "You are a {{tone}} assistant."},
    {"role": "user", "content": "{{question}}"},
]


def canned_chat() -> dict[str, Any]:
    """The fake provider's exact response bytes for the chat call (as benchmarks.overhead.canned_bodies, for the
    one operation, so the core venv without LangChain runs this)."""
    import base64

    import httpx2

    from mltrack_otel.testing.fake_provider import FakeProvider

    with FakeProvider() as fake, httpx2.Client() as http:
        w.make_call(OP, "loopback", fake.url, None)()
        request = fake.requests[-1]
        response = http.post(fake.url + request.path, json=request.json)
        response.raise_for_status()
        body = base64.b64encode(response.content).decode()
    return {OP: {"content_type": response.headers["content-type"], "body": body}}


def paired(
    plain: Callable[[], Any], tagged: Callable[[], Any], pairs: int, calls: int, reset: Callable[[], Any]
) -> list[float]:
    """[tagged - plain CPU µs per call] for each pair of slices, after a warm-up."""
    for _ in range(200):
        plain()
        tagged()
    diffs = []
    for i in range(pairs):
        cpu = {}
        for name, fn in (("plain", plain), ("tagged", tagged)) if i % 2 else (("tagged", tagged), ("plain", plain)):
            t = time.process_time()
            fn()
            cpu[name] = (time.process_time() - t) / calls * 1e6
            reset()  # drop the exported spans outside the timed part
        diffs.append(cpu["tagged"] - cpu["plain"])
    return diffs


def components(tpl: Any, variables: dict[str, Any]) -> list[tuple[str, float]]:
    """µs per operation of each piece of the tagging path, timed alone (no I/O, so little noise)."""
    import timeit

    from mltrack_otel.instrumentation import _base

    def best(fn: Callable[[], Any], n: int = 20000) -> float:
        return min(timeit.repeat(fn, number=n, repeat=7)) / n * 1e6

    def attributes() -> Any:
        return _base.base_attributes("chat", "openai", "bench.invalid", 80)

    def enter_exit() -> None:
        with tpl.use():
            pass

    plain = best(attributes)
    with tpl.use():
        tagged = best(attributes)
    return [
        ("base_attributes, no template in use", plain),
        ("base_attributes, template in use (+3 attributes)", tagged),
        ("added per call by a template in use", tagged - plain),
        ("with tpl.use(): (enter + exit)", best(enter_exit)),
        ("tpl.format(...) (2 chat messages, 2 variables)", best(lambda: tpl.format(**variables))),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args(argv)

    import openai

    import mltrack_otel

    canned = canned_chat()
    exporter, facts = w.setup_variant("mltrack", OP)
    client = openai.OpenAI(
        api_key=w.API_KEY,
        base_url="http://bench.invalid/v1",
        max_retries=0,
        http_client=w._mock_http_client(canned, OP),
    )
    tpl = mltrack_otel.prompt("bench", TEMPLATE)
    variables = {"tone": "concise", "question": w.QUESTION}
    messages = tpl.format(**variables)
    n = args.calls

    def call() -> Any:
        return client.chat.completions.create(model=w.OPENAI_MODEL, messages=messages, max_tokens=200)

    def plain_slice() -> None:
        for _ in range(n):
            call()

    def used_slice() -> None:
        with tpl.use():
            for _ in range(n):
                call()

    def format_each() -> None:
        for _ in range(n):
            with tpl.use():
                client.chat.completions.create(model=w.OPENAI_MODEL, messages=tpl.format(**variables), max_tokens=200)

    # The tagged calls really carry the identity, and the plain ones do not.
    exporter.clear()
    call()
    with tpl.use():
        call()
    plain_span, tagged_span = exporter.get_finished_spans()
    assert "gen_ai.prompt.version" not in plain_span.attributes
    assert tagged_span.attributes["gen_ai.prompt.version"] == tpl.version

    t0 = time.process_time()
    for _ in range(200):
        call()
    base = (time.process_time() - t0) / 200 * 1e6
    rows = [
        ("use() around the slice", paired(plain_slice, used_slice, args.pairs, n, exporter.clear)),
        ("use() + format() per call", paired(plain_slice, format_each, args.pairs, n, exporter.clear)),
    ]
    exporter.clear()

    parts = components(tpl, variables)
    print(f"{facts['sdk']}, mltrack-otel {facts.get('version')}: an instrumented call costs ~{base:.0f} µs CPU here")
    print(f"{'prompt tagging':28s} {'added µs/call':>13s} {'IQR':>16s} {'pairs':>6s}")
    for label, diffs in rows:
        q1, _, q3 = statistics.quantiles(diffs, n=4)
        print(f"{label:28s} {statistics.median(diffs):13.1f} {f'[{q1:.1f}, {q3:.1f}]':>16s} {len(diffs):6d}")
    print("\nthe parts, alone (best of 7 timeit runs):")
    for label, us in parts:
        print(f"  {label:52s} {us:7.2f} µs")


if __name__ == "__main__":
    main()
