"""Hard budgets hold under concurrency: a call's worst case is reserved before it is sent, settled when it ends.

Real openai SDK against the fake provider, the real CostSpanProcessor writing into the process ledger. The
overshoot bound of each concurrent test is computed from the requests that went out: for each, how much its real
cost (the fake's documented usage formula, output at its max_tokens) can exceed its reserved worst case (our
input estimate plus max_tokens, priced alike). Only that estimation error may take the spend past a limit.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import openai
import pytest

from mltrack_otel import estimate, guard
from mltrack_otel.errors import BudgetExceededError
from mltrack_otel.ledger import LEDGER, Ledger, Limits
from mltrack_otel.pricing import Pricer, Usage
from mltrack_otel.processor import CostSpanProcessor
from mltrack_otel.testing.fake_provider import MODEL_ALIASES, prompt_tokens_for_texts

MODEL = "gpt-4o-mini"
PROVIDER = "openai"
MAX_TOKENS = 10
CALLS = 100
LIMIT = Decimal("0.0001")  # a handful of calls' worst case
SLOW = {"x-fake-scenario": "slow"}  # 20 ms per output token: every admitted call is still in flight at the barrier


def body_of(i: int, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    question = f"question number {i}: what is the weather like in Paris today, and should I bring an umbrella"
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}


def _real_usage(body: dict[str, Any]) -> Usage:
    """At most what the fake bills: its prompt formula, and every output token max_tokens allows."""
    return Usage(prompt_tokens_for_texts([m["content"] for m in body["messages"]]), body["max_tokens"])


def _reserved_usage(body: dict[str, Any]) -> Usage:
    """The worst case the budget reserves: the input estimate plus max_tokens."""
    return Usage(estimate.input_tokens(body, body["model"]), body["max_tokens"])


def cost_error_bound(bodies: list[dict[str, Any]]) -> Decimal:
    """How far the spend may exceed a cost limit: the sum over the calls sent of real minus reserved cost."""
    pricer = Pricer()
    bound = Decimal(0)
    for body in bodies:
        real = pricer.price(PROVIDER, MODEL_ALIASES.get(body["model"], body["model"]), _real_usage(body))
        reserved = pricer.price(PROVIDER, body["model"], _reserved_usage(body))
        bound += max(real.total - reserved.total, Decimal(0))
    return bound


def token_error_bound(bodies: list[dict[str, Any]]) -> int:
    return sum(
        max(sum(_real_usage(b)[:2]) - sum(_reserved_usage(b)[:2]), 0)  # input + output
        for b in bodies
    )


def sent_bodies(fake) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests if r.path.endswith("/chat/completions")]


Wrap = Callable[[Callable[[], None]], Callable[[], None]]


def run_threads(client: openai.OpenAI, n: int, wrap: Wrap | None = None):
    """n threads released at once by a barrier, one chat call each: (calls that went through, refusals)."""
    barrier = threading.Barrier(n)
    done: list[int] = []
    refused: list[BudgetExceededError] = []

    def work(i: int) -> None:
        barrier.wait()
        try:
            client.chat.completions.create(**body_of(i), extra_headers=SLOW)
            done.append(i)
        except BudgetExceededError as exc:
            refused.append(exc)

    threads = []
    for i in range(n):
        target = (lambda i=i: work(i)) if wrap is None else wrap(lambda i=i: work(i))
        threads.append(threading.Thread(target=target))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done, refused


async def run_tasks(client: openai.AsyncOpenAI, n: int):
    """n asyncio tasks released at once by a barrier, one chat call each: (calls that went through, refusals)."""
    barrier = asyncio.Barrier(n)
    done: list[int] = []
    refused: list[BudgetExceededError] = []

    async def work(i: int) -> None:
        await barrier.wait()
        try:
            await client.chat.completions.create(**body_of(i), extra_headers=SLOW)
            done.append(i)
        except BudgetExceededError as exc:
            refused.append(exc)

    await asyncio.gather(*(work(i) for i in range(n)))
    return done, refused


def assert_nothing_held() -> None:
    assert LEDGER.held() == (0, Decimal(0))


# --- the process budget under concurrency ----------------------------------------------------------------------


def test_hundred_threads_at_once_never_overshoot_the_cost_limit(priced, fake, oai):
    LEDGER.limits = Limits(cost_budget=LIMIT)
    done, refused = run_threads(oai, CALLS)

    bodies = sent_bodies(fake)
    spent = LEDGER.process_totals().cost_usd
    assert spent <= LIMIT + cost_error_bound(bodies), (spent, len(done))
    assert refused and done  # the limit bit, and it was not simply closed
    assert len(done) + len(refused) == CALLS
    assert len(bodies) == len(done)  # a refused call sent nothing
    assert LEDGER.process_totals().calls == len(done)
    assert {e.scope for e in refused} == {"process"} and {e.kind for e in refused} == {"cost"}
    assert_nothing_held()


def test_hundred_asyncio_tasks_at_once_never_overshoot_the_cost_limit(priced, fake, aoai):
    LEDGER.limits = Limits(cost_budget=LIMIT)
    done, refused = asyncio.run(run_tasks(aoai, CALLS))

    bodies = sent_bodies(fake)
    spent = LEDGER.process_totals().cost_usd
    assert spent <= LIMIT + cost_error_bound(bodies), (spent, len(done))
    assert refused and done
    assert len(bodies) == len(done)
    assert_nothing_held()


def test_hundred_threads_at_once_never_overshoot_the_token_limit(priced, fake, oai):
    limit = 300
    LEDGER.limits = Limits(token_budget=limit)
    done, refused = run_threads(oai, CALLS)

    bodies = sent_bodies(fake)
    used = LEDGER.process_totals().total_tokens
    assert used <= limit + token_error_bound(bodies), (used, len(done))
    assert refused and done
    assert {e.kind for e in refused} == {"token"}
    assert_nothing_held()


# --- a tracking scope's own limit, and a conversation's --------------------------------------------------------


def test_a_context_limit_holds_for_its_threads(priced, fake, oai):
    from mltrack_otel import track_llm_context

    with track_llm_context("batch", cost_limit=LIMIT) as tracker:
        # Each thread runs in its own copy of this context (taken here), so its calls count in the scope.
        done, refused = run_threads(oai, CALLS, wrap=lambda fn: functools.partial(contextvars.copy_context().run, fn))
        spent = tracker.totals.cost_usd

    assert spent <= LIMIT + cost_error_bound(sent_bodies(fake)), (spent, len(done))
    assert refused and done
    assert {e.scope for e in refused} == {"context"}
    assert LEDGER.process_totals().cost_usd == spent  # no process limit was involved
    assert_nothing_held()


def test_a_conversation_limit_holds_for_its_tasks(priced, fake, aoai):
    from mltrack_otel import limit_conversation, track_llm_context

    limit_conversation("conv-42", cost_limit=LIMIT)

    async def main():
        with track_llm_context("chat turn", conversation_id="conv-42"):
            return await run_tasks(aoai, CALLS)

    try:
        done, refused = asyncio.run(main())
    finally:
        limit_conversation("conv-42")  # cleared
    spent = LEDGER.conversation_totals("conv-42").cost_usd

    assert spent <= LIMIT + cost_error_bound(sent_bodies(fake)), (spent, len(done))
    assert refused and done
    assert {e.scope for e in refused} == {"conversation"}
    assert_nothing_held()


def test_a_limited_conversations_spend_outlives_the_conversation_lru():
    """The ledger keeps the most recent conversations only; one with a budget of its own keeps its spend."""
    books = Ledger(max_conversations=2)
    books.limit_conversation("vip", cost_limit="1.00")
    books.add(1, None, "vip", 10, 10, Decimal("1.00"))
    with pytest.raises(BudgetExceededError):
        books.reserve(None, "vip", 10, Decimal("0.50"))
    for other in ("a", "b", "c"):  # three more conversations: past the LRU's size
        books.add(2, None, other, 1, 1, Decimal("0.01"))
    assert books.conversation_totals("vip").cost_usd == Decimal("1.00")
    with pytest.raises(BudgetExceededError):
        books.reserve(None, "vip", 10, Decimal("0.50"))
    assert books.conversation_totals("a").calls == 0  # the oldest unlimited conversation went instead


def test_other_conversations_are_not_held_to_one_conversations_limit(priced, fake, oai):
    from mltrack_otel import limit_conversation, track_llm_context

    limit_conversation("tight", token_limit=1)
    try:
        with track_llm_context("a", conversation_id="tight"), pytest.raises(BudgetExceededError) as info:
            oai.chat.completions.create(**body_of(0))
        with track_llm_context("b", conversation_id="roomy"):
            oai.chat.completions.create(**body_of(1))
    finally:
        limit_conversation("tight")
    assert info.value.scope == "conversation"
    assert len(sent_bodies(fake)) == 1


# --- settling: failures, streams, the manual API -------------------------------------------------------------


def _worst_cost(body: dict[str, Any]) -> Decimal:
    return Pricer().price(PROVIDER, body["model"], _reserved_usage(body)).total


def test_a_failed_call_releases_its_reservation(priced, fake, oai):
    LEDGER.limits = Limits(cost_budget=_worst_cost(body_of(0)) * Decimal("1.5"))  # room for one call at a time
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(**body_of(0), extra_headers={"x-fake-scenario": "error-500"})
    assert_nothing_held()
    assert LEDGER.process_totals().cost_usd == 0
    oai.chat.completions.create(**body_of(1))  # goes through: the failure gave its hold back
    assert LEDGER.process_totals().calls == 1


def test_a_stream_holds_its_worst_case_until_it_ends(priced, fake, oai):
    body = body_of(0, max_tokens=100)  # the fake writes 30 tokens: the real cost is well under the worst case
    worst = _worst_cost(body)
    LEDGER.limits = Limits(cost_budget=worst * Decimal("1.9"))  # two worst cases do not fit; one plus a real one do
    stream = oai.chat.completions.create(**body, stream=True)
    with pytest.raises(BudgetExceededError) as info:  # the open stream holds its worst case
        oai.chat.completions.create(**body_of(1, max_tokens=100))
    assert info.value.reserved == pytest.approx(float(worst))
    assert len(sent_bodies(fake)) == 1
    for _ in stream:
        pass
    assert_nothing_held()
    assert 0 < LEDGER.process_totals().cost_usd < worst
    oai.chat.completions.create(**body_of(2, max_tokens=100))  # settled to its real cost: room again
    assert len(sent_bodies(fake)) == 2


@pytest.mark.parametrize("ending", ["break+close", "context exit", "garbage collection"])
def test_an_abandoned_stream_releases_its_reservation(priced, fake, oai, ending):
    LEDGER.limits = Limits(cost_budget=Decimal(1))
    stream = oai.chat.completions.create(**body_of(0, max_tokens=100), stream=True)
    assert LEDGER.held()[0] > 0
    if ending == "break+close":
        next(iter(stream))
        stream.close()
    elif ending == "context exit":
        with stream:
            next(iter(stream))
    else:
        next(iter(stream))
        del stream
        gc.collect()
        assert guard.drain_deferred()
    assert_nothing_held()


@pytest.mark.parametrize("is_async", [False, True])
def test_a_raw_stream_read_as_bytes_settles_when_its_response_closes(priced, fake, oai, aoai, is_async):
    """with_streaming_response, read line by line and never parsed: leaving the with block ends the call."""
    LEDGER.limits = Limits(cost_budget=Decimal(1))
    body = body_of(0, max_tokens=100)
    if is_async:

        async def main() -> list[str]:
            async with aoai.chat.completions.with_streaming_response.create(**body, stream=True) as raw:
                assert LEDGER.held()[0] > 0
                return [line async for line in raw.iter_lines()]

        lines = asyncio.run(main())
    else:
        with oai.chat.completions.with_streaming_response.create(**body, stream=True) as raw:
            assert LEDGER.held()[0] > 0
            lines = list(raw.iter_lines())
    assert any(line.startswith("data: ") for line in lines)  # the caller got the stream's bytes, untouched
    assert_nothing_held()
    totals = LEDGER.process_totals()
    assert (totals.calls, totals.estimated_calls) == (1, 1)  # sent, so counted; nothing of ours read its usage


def test_a_deployment_name_reserves_at_the_price_of_the_model_that_answered(priced, fake, oai):
    """A name with no price of its own (an Azure deployment) is reserved as the model its responses named."""
    from mltrack_otel import budget

    budget._served_as.clear()  # learned per process: start from a process that has not seen this name
    LEDGER.limits = Limits(cost_budget=Decimal(1))
    body = {**body_of(0, max_tokens=100), "model": "prod-gpt4o"}
    held = []
    for _ in range(2):
        stream = oai.chat.completions.create(**body, stream=True)
        held.append(LEDGER.held()[1])
        for _chunk in stream:
            pass
    answered = MODEL_ALIASES["prod-gpt4o"]
    assert held[0] == 0  # its first call: nothing known yet, reserved unpriced
    assert held[1] == Pricer().price(PROVIDER, answered, _reserved_usage({**body, "model": answered})).total
    assert_nothing_held()


def test_async_stream_settles(priced, fake, aoai):
    LEDGER.limits = Limits(cost_budget=Decimal(1))

    async def main():
        stream = await aoai.chat.completions.create(**body_of(0), stream=True)
        held = LEDGER.held()
        async for _ in stream:
            pass
        return held

    held = asyncio.run(main())
    assert held[0] > 0 and held[1] > 0
    assert_nothing_held()


def test_an_anthropic_stream_helper_holds_its_worst_case_until_it_ends(priced, fake, ant):
    LEDGER.limits = Limits(cost_budget=Decimal(1))
    body = {"model": "claude-3-5-haiku-20241022", "max_tokens": 64, "messages": body_of(0)["messages"]}
    with ant.messages.stream(**body) as stream:
        tokens, cost = LEDGER.held()
        assert tokens == estimate.input_tokens(body, body["model"]) + 64
        assert cost == Pricer().price("anthropic", body["model"], Usage(tokens - 64, 64, 0, tokens - 64)).total
        stream.get_final_message()
    assert_nothing_held()


def test_an_unpriced_model_reserves_tokens_but_no_cost(priced, fake, oai):
    LEDGER.limits = Limits(cost_budget=Decimal(1), token_budget=10_000)
    body = {**body_of(0), "model": "my-local-model"}
    stream = oai.chat.completions.create(**body, stream=True)
    assert LEDGER.held() == (estimate.input_tokens(body, "my-local-model") + MAX_TOKENS, Decimal(0))
    stream.close()
    assert_nothing_held()


def test_no_budget_reserves_nothing(priced, fake, oai):
    stream = oai.chat.completions.create(**body_of(0), stream=True)
    assert_nothing_held()
    stream.close()


def test_a_spent_budget_still_refuses_a_call_whose_worst_case_is_free(priced, fake, oai):
    LEDGER.limits = Limits(cost_budget=Decimal("0.000001"))
    LEDGER.add(1, None, None, 100, 100, Decimal("0.000001"))
    with pytest.raises(BudgetExceededError) as info:
        oai.chat.completions.create(**{**body_of(0), "model": "my-local-model"})
    assert "is spent" in str(info.value)
    assert sent_bodies(fake) == []


def test_the_manual_api_reserves_and_an_sdk_call_inside_takes_the_hold_over(priced, fake, oai):
    from mltrack_otel import LLMTracker

    body = body_of(0)
    LEDGER.limits = Limits(cost_budget=_worst_cost(body) * Decimal("1.5"))  # the call held twice would not fit
    tracker = LLMTracker(model=MODEL, provider=PROVIDER)
    held_inside: list[tuple[int, Decimal]] = []

    @tracker.track_llm_call()
    def ask(messages, max_tokens):
        held_inside.append(LEDGER.held())
        return oai.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens)

    ask(messages=body["messages"], max_tokens=MAX_TOKENS)  # the SDK call inside was not refused: held once
    assert held_inside[0][0] > 0  # the decorated call held its worst case before it ran
    assert_nothing_held()
    assert len(sent_bodies(fake)) == 1

    LEDGER.limits = Limits(token_budget=5)
    ran = []

    @tracker.track_llm_call()
    def refused(messages, max_tokens):
        ran.append(True)

    with pytest.raises(BudgetExceededError):
        refused(messages=body["messages"], max_tokens=MAX_TOKENS)
    assert ran == []  # refused before the function ran


# --- the worst case ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "body", "expected"),
    [
        ("gpt-4o", {}, 16_384),
        ("gpt-4o-mini-2024-07-18", {}, 16_384),
        ("openai/gpt-4.1-mini", {}, 32_768),
        ("o1-mini", {}, 65_536),
        ("o1-2024-12-17", {}, 100_000),
        ("claude-3-5-sonnet-20241022", {}, 8_192),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", {}, 8_192),
        ("claude-opus-4-1-20250805", {}, 32_000),
        ("claude-opus-4-20250514", {}, 32_000),
        ("gpt-4o-64k-output-alpha", {}, 65_536),
        ("gpt-4o", {"max_tokens": 50}, 50),
        ("gpt-4o", {"max_completion_tokens": 50, "n": 3}, 150),
        ("gpt-4o", {"n": 2}, 32_768),
    ],
)
def test_maximum_output(model, body, expected):
    from mltrack_otel import budget

    assert budget.max_output(body, model, "openai", 100) == expected


def test_maximum_output_falls_back_to_the_context_window_less_the_input():
    from mltrack_otel import budget

    # gpt-4 (8k) is in genai-prices with its context window but not in the family table.
    assert budget.max_output({}, "gpt-4", "openai", 1000) == 8192 - 1000
    assert budget.max_output({}, "no-such-model", None, 1000) == budget.UNKNOWN_MAX_OUTPUT_TOKENS
    # A later Opus is not capped at its predecessors' 32k: its window (from genai-prices) bounds it instead.
    later_opus = budget.max_output({}, "claude-opus-4-7", "anthropic", 1000)
    assert later_opus > 64_000


def test_worst_case_prices_with_the_dearer_of_plain_and_cache_write_input():
    from mltrack_otel import budget

    pricer = Pricer()
    body = {"model": "claude-3-5-sonnet-20241022", "messages": [{"role": "user", "content": "hi " * 400}]}
    body["max_tokens"] = 100
    tokens, cost = budget.worst_case(body, body["model"], "anthropic", "chat", pricer)
    tokens_in = estimate.input_tokens(body, body["model"])
    assert tokens == tokens_in + 100
    written = pricer.price("anthropic", body["model"], Usage(tokens_in, 100, 0, tokens_in)).total
    assert cost == written > pricer.price("anthropic", body["model"], Usage(tokens_in, 100)).total
    assert budget.worst_case({"input": "hi"}, "text-embedding-3-small", "openai", "embeddings", None) == (1, None)


def test_a_processor_built_by_hand_leaves_the_configured_pricing_to_reservations(pipeline):
    """configure() sets how reservations are priced; another CostSpanProcessor (a second pipeline, a test, a
    library; track_costs=False or other overrides) must not change it for every budget in the process."""
    from mltrack_otel import budget

    configured = LEDGER.pricer
    assert configured is not None
    CostSpanProcessor(track_costs=False)
    CostSpanProcessor(pricer=Pricer())
    assert LEDGER.pricer is configured
    LEDGER.limits = Limits(cost_budget=Decimal(1))
    reservation = budget.reserve(body_of(0), MODEL, PROVIDER, "chat", scope=None)
    try:
        assert reservation is not None
        assert reservation.cost == budget.worst_case(body_of(0), MODEL, PROVIDER, "chat", configured)[1] > 0
    finally:
        LEDGER.release(reservation)


def test_cache_write_answers_go_with_their_pricer():
    from mltrack_otel import budget

    """Reservations remember per pricer whether a model's cache writes cost more; that must not keep the pricers
    of pipelines long gone alive."""
    import weakref

    pricer = Pricer()
    assert budget._writes_cost_more(pricer, "anthropic", "claude-3-5-sonnet-20241022") is True
    assert budget._writes_cost_more(pricer, "openai", "gpt-4o") is False
    gone = weakref.ref(pricer)
    del pricer
    gc.collect()
    assert gone() is None


def test_a_forked_child_does_not_inherit_the_parents_holds():
    """The parent's calls in flight never end in the child: their holds must not shrink its budget forever."""
    import subprocess
    import sys

    script = """
import os
from decimal import Decimal
from mltrack_otel.ledger import LEDGER, Limits

LEDGER.limits = Limits(token_budget=1000)
in_flight = LEDGER.reserve(None, "conv", 900, Decimal("0.5"))
pid = os.fork()
if pid == 0:
    ok = LEDGER.held() == (0, Decimal(0))
    in_flight.release()  # a parent's reservation released in the child takes nothing off
    ok = ok and LEDGER.held() == (0, Decimal(0))
    LEDGER.reserve(None, "conv", 900, None).release()  # the whole budget is the child's
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, "child"
assert LEDGER.held() == (900, Decimal("0.5"))  # the parent's own holds are untouched
in_flight.release()
assert LEDGER.held() == (0, Decimal(0))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("token_limit", "cost_limit"), [(-1, None), (1.5, None), (None, "abc"), (None, -0.01)])
def test_scope_and_conversation_limits_are_validated(token_limit, cost_limit):
    from mltrack_otel import limit_conversation, track_llm_context

    with pytest.raises(ValueError), track_llm_context("x", token_limit=token_limit, cost_limit=cost_limit):
        pass
    with pytest.raises(ValueError):
        limit_conversation("c", token_limit=token_limit, cost_limit=cost_limit)
