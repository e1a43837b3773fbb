"""Totals stay exact under threads and asyncio tasks (the figure the pipeline issue asks for)."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

from opentelemetry.sdk.trace import TracerProvider

import mltrack_otel
from mltrack_otel.ledger import Ledger
from mltrack_otel.pricing import Pricer, Usage
from mltrack_otel.processor import CostSpanProcessor

MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-sonnet-20241022")]


def attrs(i: int) -> dict:
    provider, model = MODELS[i % len(MODELS)]
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": 100 + i % 17,
        "gen_ai.usage.output_tokens": 10 + i % 5,
    }


def expected(indices) -> tuple[int, Decimal]:
    pricer = Pricer()
    tokens, cost = 0, Decimal(0)
    for i in indices:
        a = attrs(i)
        usage = Usage(a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"])
        tokens += usage.input_tokens + usage.output_tokens
        cost += pricer.price(a["gen_ai.provider.name"], a["gen_ai.request.model"], usage).total
    return tokens, cost


def test_eight_threads_by_5000_spans_total_exactly():
    ledger = Ledger()
    tp = TracerProvider()
    tp.add_span_processor(CostSpanProcessor(ledger=ledger))
    tracer = tp.get_tracer("load")

    def work(thread: int) -> None:
        for n in range(5000):
            with tracer.start_as_current_span("call", attributes=attrs(thread * 5000 + n)):
                pass

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tokens, cost = expected(range(8 * 5000))
    totals = ledger.process_totals()
    assert totals.calls == 40_000
    assert totals.total_tokens == tokens
    assert totals.cost_usd == cost  # exact Decimal, so exact to the cent and beyond


def test_thousand_concurrent_tasks_each_keep_their_context_total(pipeline):
    async def task(i: int):
        with mltrack_otel.track_llm_context(f"task-{i}") as tracker:
            for k in range(2):
                await asyncio.sleep(0)
                a = attrs(i * 2 + k)
                tracker.log_prompt_response(
                    "q",
                    "a",
                    model=a["gen_ai.request.model"],
                    provider=a["gen_ai.provider.name"],
                    token_usage={
                        "prompt_tokens": a["gen_ai.usage.input_tokens"],
                        "completion_tokens": a["gen_ai.usage.output_tokens"],
                    },
                )
            return tracker.totals

    async def main():
        return await asyncio.gather(*(task(i) for i in range(1000)))

    per_task = asyncio.run(main())
    for i, totals in enumerate(per_task):
        assert (totals.total_tokens, totals.cost_usd) == expected([i * 2, i * 2 + 1])
    tokens, cost = expected(range(2000))
    assert mltrack_otel.totals().cost_usd == cost
    assert mltrack_otel.totals().total_tokens == tokens
