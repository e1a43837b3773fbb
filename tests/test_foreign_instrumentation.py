"""Spans another instrumentation makes (OpenInference's, on the real openai SDK): priced, and counted once
together with ours, whichever instrumentation patches the client first and whichever is removed first."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from mltrack_otel import semconv
from mltrack_otel.instrumentation import instrument, uninstrument
from tests.traced import Traced

openinference = pytest.importorskip("openinference.instrumentation.openai")

MESSAGES = [{"role": "user", "content": "Tell me about spans please"}]
THEIRS, OURS = "openinference.instrumentation.openai", "mltrack_otel.instrumentation.openai"
EMBEDDING_PRICE = Decimal("0.02") / 1_000_000  # text-embedding-3-small, USD per input token (openai.com/api/pricing)


class Pipeline(Traced):
    """A TracerProvider whose spans go through the CostSpanProcessor (with a ledger of its own) to memory."""

    def spans(self, scope: str = "") -> list:
        return [s for s in self.exporter.get_finished_spans() if s.instrumentation_scope.name.startswith(scope)]

    def counted(self) -> list:
        return [s for s in self.exporter.get_finished_spans() if s.attributes.get(semconv.MLTRACK_USAGE_COUNTED)]


@pytest.fixture
def pipeline(fake, settings) -> Iterator[Pipeline]:
    fake.clear()
    built = Pipeline()
    yield built
    built.provider.shutdown()


@pytest.fixture
def theirs() -> Iterator[object]:
    instrumentor = openinference.OpenAIInstrumentor()
    yield instrumentor
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture(autouse=True)
def _ours_removed() -> Iterator[None]:
    yield
    uninstrument(["openai"])


def request_methods() -> dict[str, object]:
    """What each client class and each base class holds as its own `request`."""
    import openai
    from openai._base_client import AsyncAPIClient, SyncAPIClient

    classes = (openai.OpenAI, openai.AsyncOpenAI, SyncAPIClient, AsyncAPIClient)
    return {cls.__name__: cls.__dict__.get("request") for cls in classes}


def bottom(function: object) -> object:
    """The function at the bottom of a chain of wrappers."""
    while hasattr(function, "__wrapped__"):
        function = function.__wrapped__
    return function


def test_an_openinference_embedding_is_priced(pipeline, theirs, oai):
    theirs.instrument(tracer_provider=pipeline.provider)
    response = oai.embeddings.create(model="text-embedding-3-small", input=["hello world", "spans"])
    (span,) = pipeline.spans(THEIRS)
    assert span.attributes["embedding.model_name"] == "text-embedding-3-small"  # their key, not llm.model_name
    assert "llm.model_name" not in span.attributes
    tokens = response.usage.prompt_tokens
    assert span.attributes[semconv.LLM_TOKENS_PROMPT] == tokens > 0
    assert span.attributes[semconv.LLM_TOKENS_COMPLETION] == 0
    assert span.attributes[semconv.LLM_COST_TOTAL] == pytest.approx(float(tokens * EMBEDDING_PRICE), rel=1e-12)
    assert semconv.MLTRACK_COST_UNPRICED not in span.attributes
    totals = pipeline.ledger.process_totals()
    assert (totals.calls, totals.unpriced_calls, totals.prompt_tokens) == (1, 0, tokens)
    assert totals.cost_usd == tokens * EMBEDDING_PRICE


def _install(order: str, pipeline: Pipeline, theirs) -> None:
    for who in order.split("-then-"):
        if who == "theirs":
            theirs.instrument(tracer_provider=pipeline.provider)
        else:
            instrument(["openai"], tracer_provider=pipeline.provider)


async def _calls(oai, aoai) -> int:
    """One call of each kind; returns how many."""
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    await aoai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    for _ in oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
        pass
    async for _ in await aoai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
        pass
    oai.embeddings.create(model="text-embedding-3-small", input="hello")
    return 5


@pytest.mark.parametrize("order", ["theirs-then-ours", "ours-then-theirs"])
async def test_either_order_gives_both_spans_and_counts_each_call_once(pipeline, theirs, oai, aoai, order):
    _install(order, pipeline, theirs)
    calls = await _calls(oai, aoai)
    ours, their_spans = pipeline.spans(OURS), pipeline.spans(THEIRS)
    assert len(ours) == len(their_spans) == calls
    by_id = {s.context.span_id: s for s in their_spans}
    for span in ours:  # the same nesting in both orders: theirs outside, ours inside and counted
        assert span.parent is not None and span.parent.span_id in by_id
        assert span.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
        # (their stream spans carry no usage: the usage chunk we ask for is hidden from everything above us)
        assert by_id[span.parent.span_id].attributes.get(semconv.MLTRACK_USAGE_COUNTED) in (False, None)
    assert pipeline.counted() == ours
    totals = pipeline.ledger.process_totals()
    assert totals.calls == calls
    assert totals.cost_usd == sum(Decimal(str(s.attributes[semconv.LLM_COST_TOTAL])) for s in ours) > 0


@pytest.mark.parametrize("order", ["theirs-then-ours", "ours-then-theirs"])
@pytest.mark.parametrize("first_removed", ["ours", "theirs"])
async def test_removing_either_first_leaves_the_other_working_and_then_the_sdk_as_it_was(
    pipeline, theirs, oai, aoai, order, first_removed
):
    before = request_methods()
    _install(order, pipeline, theirs)
    if first_removed == "ours":
        uninstrument(["openai"])
        remaining = THEIRS
    else:
        theirs.uninstrument()
        remaining = OURS
        if order == "theirs-then-ours":
            # OpenInference's uninstrument sets OpenAI.request back to the function it found there, which hides
            # our wrapper on the base class again (nothing of ours runs then to notice): instrumenting anew
            # reaches it.
            uninstrument(["openai"])
            instrument(["openai"], tracer_provider=pipeline.provider)
    calls = await _calls(oai, aoai)
    assert len(pipeline.spans(remaining)) == calls
    assert len(pipeline.exporter.get_finished_spans()) == calls
    # OpenInference alone records no usage for a stream whose caller did not ask for it (two of the calls).
    assert pipeline.ledger.process_totals().calls == (calls if remaining == OURS else calls - 2)

    if first_removed == "ours":
        theirs.uninstrument()
    else:
        uninstrument(["openai"])
    pipeline.exporter.clear()
    await _calls(oai, aoai)
    assert pipeline.exporter.get_finished_spans() == ()
    after = request_methods()
    for base, client in (("SyncAPIClient", "OpenAI"), ("AsyncAPIClient", "AsyncOpenAI")):
        assert after[base] is before[base]  # the very function objects
        # A client class inherits it again, or holds what OpenInference's uninstrument put back: the same function.
        assert after[client] is None or bottom(after[client]) is before[base]
