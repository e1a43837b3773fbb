"""A streamed call that reached the provider is counted once, however the stream ends.

The real openai and anthropic SDKs stream from the fake provider; the CostSpanProcessor prices the spans into the
process ledger. A stream the caller stops reading (break, close(), context exit, garbage collection) or that fails
mid-way never carries the provider's usage: its usage is estimated, priced and kept apart in the totals.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import server_attributes

from mltrack_otel import estimate, guard, ledger, semconv
from mltrack_otel.errors import BudgetExceededError
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.instrumentation._base import StreamRecorder
from tests.instr_fixtures import OPENAI_WEATHER_TOOL, attrs, one_span, use_settings
from tests.traced import Traced

OPENAI_MODEL = "gpt-4o"
ANTHROPIC_MODEL = "claude-haiku-4-5"
SYSTEM = "You answer briefly."
QUESTION = "Tell me about spans please, in a few sentences"
OPENAI_MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
ANTHROPIC_MESSAGES = [{"role": "user", "content": QUESTION}]
ESTIMATED, PROVIDER = "estimated", "provider"


def open_stream(kind: str, client: Any, **kwargs: Any) -> Any:
    if kind == "openai":
        return client.chat.completions.create(model=OPENAI_MODEL, messages=OPENAI_MESSAGES, stream=True, **kwargs)
    return client.messages.create(
        model=ANTHROPIC_MODEL, system=SYSTEM, max_tokens=300, messages=ANTHROPIC_MESSAGES, stream=True, **kwargs
    )


def delta_text(kind: str, item: Any) -> str:
    """The output text one streamed item carries."""
    if kind == "openai":
        return (item.choices[0].delta.content or "") if item.choices else ""
    return getattr(item.delta, "text", "") if item.type == "content_block_delta" else ""


def scenario(name: str) -> dict[str, Any]:
    return {"extra_headers": {"x-fake-scenario": name}}


# -- ways a caller stops reading, sync ---------------------------------------------------------------------------


def _read(kind: str, stream: Any, n: int, into: list[str]) -> None:
    for i, item in enumerate(stream):
        into.append(delta_text(kind, item))
        if i + 1 >= n:
            break


def stop_by_break(kind: str, client: Any, into: list[str]) -> None:
    _read(kind, open_stream(kind, client), 5, into)  # the stream is dropped when this function returns
    gc.collect()  # the SDK's stream and its HTTP response hold each other: it goes with the next collection
    guard.drain_deferred()


def stop_by_close(kind: str, client: Any, into: list[str]) -> None:
    stream = open_stream(kind, client)
    _read(kind, stream, 5, into)
    stream.close()


def stop_by_context_exit(kind: str, client: Any, into: list[str]) -> None:
    with open_stream(kind, client) as stream:
        _read(kind, stream, 5, into)


def stop_by_garbage_collection(kind: str, client: Any, into: list[str]) -> None:
    stream = open_stream(kind, client)
    _read(kind, stream, 5, into)
    del stream
    gc.collect()
    guard.drain_deferred()  # the span is ended off the collector, by the finalizer worker


def stop_by_stream_error(kind: str, client: Any, into: list[str]) -> None:
    with pytest.raises(Exception) as failure:  # whatever the SDK raises for an in-band error event
        _read(kind, open_stream(kind, client, **scenario("stream-error")), 10_000, into)
    assert not isinstance(failure.value, AssertionError)


def stop_by_dropped_connection(kind: str, client: Any, into: list[str]) -> None:
    with pytest.raises(Exception) as failure:  # whatever the SDK raises for a cut connection
        _read(kind, open_stream(kind, client, **scenario("drop")), 10_000, into)
    assert not isinstance(failure.value, AssertionError)


SYNC_STOPS = [
    stop_by_break,
    stop_by_close,
    stop_by_context_exit,
    stop_by_garbage_collection,
    stop_by_stream_error,
    stop_by_dropped_connection,
]


def client_of(kind: str, request: pytest.FixtureRequest, is_async: bool = False) -> Any:
    names = {"openai": ("oai", "aoai"), "anthropic": ("ant", "aant")}
    return request.getfixturevalue(names[kind][is_async])


def assert_counted_as_estimated(exporter: InMemorySpanExporter) -> dict[str, Any]:
    """One span, counted once, priced from estimated usage, the estimated part kept apart in the totals."""
    span = one_span(exporter)
    a = attrs(span)
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is False
    assert a[semconv.MLTRACK_USAGE_SOURCE] == ESTIMATED
    assert a[semconv.MLTRACK_USAGE_COUNTED] is True
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] > 0
    assert a[semconv.LLM_COST_TOTAL] > 0
    assert semconv.MLTRACK_COST_UNPRICED not in a
    totals = ledger.totals()
    assert totals.calls == 1 and totals.estimated_calls == 1 and totals.unpriced_calls == 0
    assert totals.estimated_cost_usd > 0
    assert totals.cost_usd == totals.estimated_cost_usd  # the only call was estimated
    assert float(totals.cost_usd) == pytest.approx(a[semconv.LLM_COST_TOTAL], rel=1e-12)
    assert a[semconv.LLM_COST_CUMULATIVE_ESTIMATED] == pytest.approx(float(totals.estimated_cost_usd), rel=1e-12)
    return a


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("stop", SYNC_STOPS, ids=lambda f: f.__name__.removeprefix("stop_by_"))
def test_a_stopped_stream_is_counted_priced_and_marked_estimated(priced, request, kind, stop):
    received: list[str] = []
    stop(kind, client_of(kind, request), received)
    a = assert_counted_as_estimated(priced)
    assert "".join(received)  # output was seen, and so estimated
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] > 0


def test_a_stream_closed_before_reading_is_counted_with_its_input(priced, oai):
    open_stream("openai", oai).close()
    a = assert_counted_as_estimated(priced)
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == 0


@pytest.mark.parametrize("content_capture", [True, False])
def test_a_stopped_responses_stream_is_counted_with_estimated_usage(priced, oai, content_capture):
    use_settings(llm_log_prompts=content_capture, llm_log_responses=content_capture)
    deltas = []
    with oai.responses.create(model=OPENAI_MODEL, instructions=SYSTEM, input=QUESTION, stream=True) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
                if len(deltas) == 6:
                    break
    a = assert_counted_as_estimated(priced)
    assert len(deltas) / 2 <= a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] <= len(deltas) * 2


@pytest.mark.parametrize("content_capture", [True, False])
def test_a_stopped_legacy_completion_stream_is_counted_with_estimated_usage(priced, oai, content_capture):
    use_settings(llm_log_prompts=content_capture, llm_log_responses=content_capture)
    texts = []
    with oai.completions.create(model="gpt-3.5-turbo-instruct", prompt=QUESTION, stream=True) as stream:
        for chunk in stream:
            texts.append(chunk.choices[0].text)
            if len(texts) == 6:
                break
    a = assert_counted_as_estimated(priced)
    assert len(texts) / 2 <= a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] <= len(texts) * 2


# -- async -------------------------------------------------------------------------------------------------------


async def _aread(kind: str, stream: Any, n: int, into: list[str]) -> None:
    i = 0
    async for item in stream:
        into.append(delta_text(kind, item))
        i += 1
        if i >= n:
            break


async def astop_by_close(kind: str, client: Any, into: list[str]) -> None:
    stream = await open_stream(kind, client)
    await _aread(kind, stream, 5, into)
    await stream.close()


async def astop_by_context_exit(kind: str, client: Any, into: list[str]) -> None:
    async with await open_stream(kind, client) as stream:
        await _aread(kind, stream, 5, into)


async def astop_by_garbage_collection(kind: str, client: Any, into: list[str]) -> None:
    stream = await open_stream(kind, client)
    await _aread(kind, stream, 5, into)
    del stream
    # asyncio finalizes a dropped async generator by scheduling its aclose() on the loop: the `async for`'s own
    # generator first, then, once that has let go of the stream, ours.
    for _ in range(5):
        gc.collect()
        await asyncio.sleep(0)
    guard.drain_deferred()


async def astop_by_stream_error(kind: str, client: Any, into: list[str]) -> None:
    with pytest.raises(Exception) as failure:
        await _aread(kind, await open_stream(kind, client, **scenario("stream-error")), 10_000, into)
    assert not isinstance(failure.value, AssertionError)


ASYNC_STOPS = [astop_by_close, astop_by_context_exit, astop_by_garbage_collection, astop_by_stream_error]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("stop", ASYNC_STOPS, ids=lambda f: f.__name__.removeprefix("astop_by_"))
async def test_a_stopped_async_stream_is_counted_priced_and_marked_estimated(priced, request, kind, stop):
    received: list[str] = []
    await stop(kind, client_of(kind, request, is_async=True), received)
    a = assert_counted_as_estimated(priced)
    assert a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] > 0


# -- provider usage stays the provider's -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_complete_stream_is_counted_with_the_provider_usage(priced, request, kind):
    for _item in open_stream(kind, client_of(kind, request)):
        pass
    a = attrs(one_span(priced))
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a[semconv.MLTRACK_USAGE_SOURCE] == PROVIDER
    assert semconv.LLM_COST_CUMULATIVE_ESTIMATED not in a
    totals = ledger.totals()
    assert totals.calls == 1 and totals.estimated_calls == 0
    assert totals.estimated_cost_usd == 0 < totals.cost_usd


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_totals_keep_estimated_cost_apart_from_reported_cost(priced, request, kind):
    client = client_of(kind, request)
    for _item in open_stream(kind, client):
        pass
    stop_by_close(kind, client, [])
    reported, estimated = (attrs(s) for s in priced.get_finished_spans())
    assert (reported[semconv.MLTRACK_USAGE_SOURCE], estimated[semconv.MLTRACK_USAGE_SOURCE]) == (PROVIDER, ESTIMATED)
    totals = ledger.totals()
    assert totals.calls == 2 and totals.estimated_calls == 1
    assert float(totals.estimated_cost_usd) == pytest.approx(estimated[semconv.LLM_COST_TOTAL], rel=1e-12)
    assert float(totals.reported_cost_usd) == pytest.approx(reported[semconv.LLM_COST_TOTAL], rel=1e-12)
    assert totals.cost_usd == totals.reported_cost_usd + totals.estimated_cost_usd


def test_a_complete_stream_without_usage_is_estimated(priced, oai, fake):
    use_settings(stream_include_usage=False)  # the host never sends usage: we do not ask for it
    for _chunk in open_stream("openai", oai):
        pass
    assert "stream_options" not in fake.requests[-1].json
    a = attrs(one_span(priced))
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert a[semconv.MLTRACK_USAGE_SOURCE] == ESTIMATED
    assert ledger.totals().estimated_calls == 1


# -- the estimate is sane ----------------------------------------------------------------------------------------


def _reported_usage(kind: str, client: Any) -> tuple[int, int]:
    """(input, output) tokens the fake provider reports for the same request, read to the end."""
    if kind == "openai":
        chunks = list(open_stream(kind, client, stream_options={"include_usage": True}))
        return chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens
    events = list(open_stream(kind, client))
    start = next(e for e in events if e.type == "message_start")
    end = next(e for e in events if e.type == "message_delta")
    return start.message.usage.input_tokens, end.usage.output_tokens


@pytest.mark.parametrize("content_capture", [True, False])
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_estimates_are_within_a_factor_of_two_of_the_provider_count(priced, request, kind, content_capture):
    use_settings(llm_log_prompts=content_capture, llm_log_responses=content_capture)
    client = client_of(kind, request)
    real_in, real_out = _reported_usage(kind, client)
    priced.clear()
    received: list[str] = []
    with open_stream(kind, client) as stream:  # read everything but the end: no final usage
        _read(kind, stream, real_out, received)
    a = attrs(one_span(priced))
    assert a[semconv.MLTRACK_USAGE_SOURCE] == ESTIMATED
    est_in, est_out = a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS], a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS]
    if kind == "anthropic":  # message_start already reported the input
        assert est_in == real_in
    assert real_in / 2 <= est_in <= real_in * 2
    seen_tokens = sum(1 for t in received if t)  # the fake sends one token per delta
    assert seen_tokens / 2 <= est_out <= seen_tokens * 2


# -- the hard budget sees abandoned streams ----------------------------------------------------------------------


def test_abandoned_streams_are_seen_by_the_hard_budget(priced, oai, fake):
    ledger.LEDGER.limits = ledger.Limits(cost_budget=Decimal("0.000001"))
    refused = 0
    for _ in range(10):
        try:
            stream = open_stream("openai", oai)
        except BudgetExceededError:
            refused += 1
            continue
        next(iter(stream))
        stream.close()  # abandoned after the first chunk: the provider never reports usage
    sent = len(fake.requests)
    assert sent <= 1 and refused == 10 - sent
    totals = ledger.totals()
    assert totals.calls == sent  # every request that went out is counted
    assert totals.cost_usd == totals.estimated_cost_usd >= ledger.LEDGER.limits.cost_budget * sent


# -- the processor's rules for the source ------------------------------------------------------------------------


@pytest.fixture
def processor_pipeline() -> Iterator[tuple[Any, ledger.Ledger, InMemorySpanExporter]]:
    harness = Traced()
    yield harness.provider.get_tracer("test"), harness.ledger, harness.exporter
    harness.shutdown()


def _usage(tokens_in: int, tokens_out: int, **extra: Any) -> dict[str, Any]:
    return {
        gen_ai.GEN_AI_OPERATION_NAME: "chat",
        gen_ai.GEN_AI_PROVIDER_NAME: "openai",
        gen_ai.GEN_AI_REQUEST_MODEL: "gpt-4o",
        gen_ai.GEN_AI_USAGE_INPUT_TOKENS: tokens_in,
        gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: tokens_out,
        **extra,
    }


def test_usage_from_other_instrumentation_is_marked_provider(processor_pipeline):
    tracer, own, exporter = processor_pipeline
    with tracer.start_as_current_span("chat gpt-4o", attributes=_usage(100, 10)):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.attributes[semconv.MLTRACK_USAGE_SOURCE] == PROVIDER
    assert own.process_totals().estimated_calls == 0


def test_a_wrapper_of_a_counted_call_gets_no_source(processor_pipeline):
    tracer, own, exporter = processor_pipeline
    with tracer.start_as_current_span("framework", attributes=_usage(100, 10)):
        with tracer.start_as_current_span("chat gpt-4o", attributes=_usage(100, 10)):
            pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["chat gpt-4o"].attributes[semconv.MLTRACK_USAGE_SOURCE] == PROVIDER
    assert semconv.MLTRACK_USAGE_SOURCE not in spans["framework"].attributes  # not counted: no source
    assert own.process_totals().calls == 1


def test_absent_usage_is_counted_unpriced_never_at_zero_cost(processor_pipeline):
    tracer, own, exporter = processor_pipeline
    absent = _usage(0, 0, **{semconv.MLTRACK_USAGE_SOURCE: "absent"})
    with tracer.start_as_current_span("chat gpt-4o", attributes=absent):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.attributes[semconv.MLTRACK_USAGE_SOURCE] == "absent"
    assert span.attributes[semconv.MLTRACK_COST_UNPRICED] is True
    assert semconv.LLM_COST_TOTAL not in span.attributes
    totals = own.process_totals()
    assert (totals.calls, totals.unpriced_calls, totals.estimated_calls, totals.cost_usd) == (1, 1, 0, 0)


def test_absent_usage_of_a_call_served_locally_is_local_not_unpriced(processor_pipeline):
    """A stream on a local server (Ollama) whose usage never arrived costs nothing per call all the same."""
    tracer, own, exporter = processor_pipeline
    local = {server_attributes.SERVER_ADDRESS: "localhost", server_attributes.SERVER_PORT: 11434}
    absent = _usage(0, 0, **{semconv.MLTRACK_USAGE_SOURCE: "absent", **local})
    with tracer.start_as_current_span("chat gpt-4o", attributes={**absent, gen_ai.GEN_AI_REQUEST_MODEL: "llama3.1"}):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.attributes[semconv.MLTRACK_USAGE_SOURCE] == "absent"
    assert span.attributes[semconv.MLTRACK_COST_LOCAL] is True
    assert semconv.MLTRACK_COST_UNPRICED not in span.attributes
    totals = own.process_totals()
    assert (totals.calls, totals.unpriced_calls, totals.cost_usd) == (1, 0, 0)


def test_totals_plus_keeps_the_estimated_part():
    totals = ledger.Totals().plus(10, 5, Decimal("0.5")).plus(20, 0, Decimal("0.25"), True).plus(1, 1, None, True)
    assert totals == ledger.Totals(31, 6, Decimal("0.75"), 3, 1, Decimal("0.25"), 2)
    assert totals.reported_cost_usd == Decimal("0.5")


# -- estimate.py: the optional tokenizer never downloads ---------------------------------------------------------


def test_without_a_tokenizer_text_is_one_token_per_four_bytes():
    assert estimate.text_tokens("abcdefghi", "claude-haiku-4-5") == 3
    assert estimate.text_tokens("", "gpt-4o") == 0


# An OpenAI model whose encoding (p50k_base) no test loads into tiktoken: one already loaded is used as it is.
OLD_MODEL, OLD_ENCODING = "text-davinci-003", "p50k_base"


@pytest.fixture
def tiktoken_cache(tmp_path, monkeypatch) -> Iterator[Any]:
    """tiktoken installed (else skip), its cache directory an empty temporary one, nothing memoised."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken import registry

    if OLD_ENCODING in registry.ENCODINGS:
        pytest.skip(f"{OLD_ENCODING} is already loaded in this process")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    estimate._encoders.clear()
    yield tiktoken
    estimate._encoders.clear()


@pytest.mark.frameworks  # tiktoken comes with the frameworks environment (LiteLLM)
def test_a_missing_tiktoken_encoding_is_not_downloaded(tiktoken_cache, tmp_path):
    assert estimate.text_tokens("abcdefgh", OLD_MODEL) == 2  # the approximation, not tiktoken
    assert list(tmp_path.iterdir()) == []  # tiktoken would have written its download here


@pytest.mark.frameworks  # tiktoken comes with the frameworks environment (LiteLLM)
def test_a_corrupt_tiktoken_cache_file_is_left_alone(tiktoken_cache, tmp_path):
    url, _sha256 = estimate.ENCODING_FILES[OLD_ENCODING]
    path = estimate.cache_path(url)
    assert path is not None and path.startswith(str(tmp_path))
    with open(path, "wb") as f:
        f.write(b"not an encoding")
    assert estimate.text_tokens("abcdefgh", OLD_MODEL) == 2
    # tiktoken deletes a file that fails its hash and downloads again: it was never asked to load this one
    with open(path, "rb") as f:
        assert f.read() == b"not an encoding"


@pytest.mark.frameworks  # tiktoken comes with the frameworks environment (LiteLLM)
def test_a_cached_tiktoken_encoding_is_used(monkeypatch):
    """LiteLLM ships tiktoken's o200k_base and cl100k_base files in tiktoken's cache layout: a real cache."""
    tiktoken = pytest.importorskip("tiktoken")
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("litellm (and its bundled tiktoken cache) is not installed")
    bundled = os.path.join(spec.submodule_search_locations[0], "litellm_core_utils", "tokenizers")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", bundled)
    url, sha256 = estimate.ENCODING_FILES["o200k_base"]
    assert estimate.cached_intact(url, sha256)
    estimate._encoders.clear()
    try:
        text = "Estimates use the model's own tokenizer when its encoding is on disk."
        assert estimate.text_tokens(text, "gpt-4o") == len(tiktoken.get_encoding("o200k_base").encode(text))
        assert estimate.text_tokens("hello world", "gpt-4o") == 2  # the approximation would say 3
    finally:
        estimate._encoders.clear()


def test_an_empty_tiktoken_cache_setting_means_no_cache(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert estimate.cache_path("https://example.invalid/x") is None


# -- the report reads the estimated part back ---------------------------------------------------------------------


def test_the_report_keeps_estimated_cost_apart(pipeline, fake, tmp_path, capsys):
    import json

    import openai

    import mltrack_otel
    from mltrack_otel import cli, provider

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mltrack_otel.configure(
        exporters=["mlflow"],
        mlflow_tracking_uri=uri,
        mlflow_experiment_name="estimates",
        shutdown_timeout_seconds=120,  # a first MLflow store is created on shutdown's flush: slow on a busy machine
    )
    instrument(["openai"], tracer_provider=provider.runtime().tracer_provider)
    try:
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
        for _chunk in open_stream("openai", client):
            pass
        stop_by_close("openai", client, [])
    finally:
        uninstrument(["openai"])
    mltrack_otel.shutdown()
    live = mltrack_otel.totals()
    assert (live.calls, live.estimated_calls) == (2, 1)

    assert cli.main(["report", "--tracking-uri", uri, "--experiment", "estimates", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["calls"], row["estimated_calls"]) == (2, 1)
    assert Decimal(row["estimated_cost_usd"]) == pytest.approx(live.estimated_cost_usd, abs=Decimal("1e-6"))
    assert Decimal(row["cost_usd"]) == pytest.approx(live.cost_usd, abs=Decimal("1e-6"))
    assert cli.main(["report", "--tracking-uri", uri, "--experiment", "estimates"]) == 0
    assert "of the total is priced from estimated usage" in capsys.readouterr().out


# -- with content capture off, a stream keeps only the text its estimate needs -----------------------------------

ANTHROPIC_WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _live_recorder() -> StreamRecorder:
    """The one stream recorder whose stream has not ended (streams dropped by earlier tests are ended first)."""
    gc.collect()
    guard.drain_deferred()
    (recorder,) = [o for o in gc.get_objects() if isinstance(o, StreamRecorder) and not o.done]
    return recorder


@pytest.mark.parametrize("shape", ["text", "tool_call"])
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_without_content_capture_a_stream_keeps_text_not_sdk_deltas(priced, request, kind, shape):
    """An SDK delta object is ~10x the size of its text: kept per chunk until the stream ends, a long stream held
    megabytes only in case it was stopped early. Only the text is kept, and the estimate is the same."""
    client = client_of(kind, request)
    if shape == "text":
        kwargs, n = scenario("long"), 250  # 300 deltas
    else:
        tool = OPENAI_WEATHER_TOOL if kind == "openai" else ANTHROPIC_WEATHER_TOOL
        kwargs, n = {**scenario("tool"), "tools": [tool]}, 20  # the arguments come in 30 fragments
    model = OPENAI_MODEL if kind == "openai" else ANTHROPIC_MODEL
    estimated = {}
    for capture in (True, False):
        use_settings(llm_log_prompts=capture, llm_log_responses=capture)
        priced.clear()
        received: list[str] = []
        stream = open_stream(kind, client, **kwargs)
        _read(kind, stream, n, received)
        if not capture:
            kept = _live_recorder().seen
            assert kept and all(type(piece) is str for piece in kept)  # no SDK objects held
            assert (sys.getsizeof(kept) + sum(map(sys.getsizeof, kept))) / n < 200  # bytes per chunk
        stream.close()
        a = attrs(one_span(priced))
        assert a[semconv.MLTRACK_USAGE_SOURCE] == ESTIMATED
        estimated[capture] = a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS]
        if shape == "text":  # the estimate reads the text the caller received
            assert estimated[capture] == estimate.text_tokens("".join(received), model)
    assert estimated[False] == estimated[True] > 0
