"""The seed-compatible manual API: track_llm_context, LLMTracker, track, extractors."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import pytest

import mltrack_otel
from mltrack_otel import semconv
from mltrack_otel.ledger import current_scope
from tests.traced import by_name

M = Decimal(1_000_000)
# Published prices per 1M tokens: gpt-4o $2.50 / $10.00; claude-3-haiku $0.25 / $1.25.
GPT4O = (Decimal("2.50"), Decimal("10.00"))
HAIKU = (Decimal("0.25"), Decimal("1.25"))


def cost(price, prompt, completion) -> Decimal:
    return prompt * price[0] / M + completion * price[1] / M


def test_the_issue_example(pipeline):
    with mltrack_otel.track_llm_context("chat-analysis", model="gpt-4o", provider="openai") as tracker:
        tracker.log_prompt_response(
            prompt=[{"role": "user", "content": "Explain quantum computing"}],
            response="Quantum computing uses qubits...",
            model="gpt-4o",
            provider="openai",
            token_usage={"prompt_tokens": 12, "completion_tokens": 80, "total_tokens": 92},
        )
        assert tracker.totals.total_tokens == 92
        assert tracker.totals.cost_usd == cost(GPT4O, 12, 80)
    spans = by_name(pipeline.memory_exporter)
    call, scope = spans["chat gpt-4o"], spans["chat-analysis"]
    assert call.parent.span_id == scope.context.span_id
    assert call.attributes["gen_ai.usage.input_tokens"] == 12
    assert call.attributes[semconv.LLM_COST_TOTAL] == pytest.approx(float(cost(GPT4O, 12, 80)))
    assert scope.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(float(cost(GPT4O, 12, 80)))
    assert scope.attributes[semconv.LLM_TOKENS_CUMULATIVE_TOTAL] == 92
    assert mltrack_otel.totals().cost_usd == cost(GPT4O, 12, 80)


def test_nested_contexts_roll_up_and_keep_their_own_totals(pipeline):
    with mltrack_otel.track_llm_context("outer") as outer:
        outer.log_prompt_response(
            "q1",
            "a1",
            model="gpt-4o",
            provider="openai",
            token_usage={"prompt_tokens": 100, "completion_tokens": 10},
        )
        with mltrack_otel.track_llm_context("inner") as inner:
            inner.log_prompt_response(
                "q2",
                "a2",
                model="claude-3-haiku-20240307",
                provider="anthropic",
                token_usage={"input_tokens": 200, "output_tokens": 20},
            )
        assert inner.totals.cost_usd == cost(HAIKU, 200, 20)
        assert outer.totals.cost_usd == cost(GPT4O, 100, 10) + cost(HAIKU, 200, 20)
        assert outer.totals.calls == 2
    spans = by_name(pipeline.memory_exporter)
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id
    assert spans["inner"].attributes[semconv.LLM_TOKENS_CUMULATIVE_TOTAL] == 220
    assert spans["outer"].attributes[semconv.LLM_TOKENS_CUMULATIVE_TOTAL] == 330


def test_default_model_comes_from_llm_providers(pipeline, monkeypatch):
    mltrack_otel.configure(exporters=["memory"], llm_providers={"openai": {"default_model": "gpt-4o"}})
    rt = mltrack_otel.provider.runtime()
    tracker = mltrack_otel.LLMTracker(provider="openai")
    tracker.log_prompt_response("hi", "hello", token_usage={"prompt_tokens": 1, "completion_tokens": 1})
    (span,) = rt.memory_exporter.get_finished_spans()
    assert span.name == "chat gpt-4o" and span.attributes["gen_ai.request.model"] == "gpt-4o"


def test_sdk_usage_objects_are_accepted_and_anthropic_cache_is_normalised(pipeline):
    from anthropic.types import Usage as AnthropicUsage
    from openai.types import CompletionUsage

    tracker = mltrack_otel.LLMTracker()
    tracker.log_prompt_response(
        "a",
        "b",
        model="gpt-4o",
        provider="openai",
        token_usage=CompletionUsage(
            prompt_tokens=50,
            completion_tokens=5,
            total_tokens=55,
            prompt_tokens_details={"cached_tokens": 20},
        ),
    )
    tracker.log_prompt_response(
        "c",
        "d",
        model="claude-3-haiku-20240307",
        provider="anthropic",
        token_usage=AnthropicUsage(
            input_tokens=10, output_tokens=3, cache_read_input_tokens=40, cache_creation_input_tokens=50
        ),
    )
    openai_span, anthropic_span = pipeline.memory_exporter.get_finished_spans()
    assert openai_span.attributes["gen_ai.usage.input_tokens"] == 50
    assert openai_span.attributes["gen_ai.usage.cache_read.input_tokens"] == 20
    assert anthropic_span.attributes["gen_ai.usage.input_tokens"] == 100  # 10 + 40 read + 50 written
    assert anthropic_span.attributes["gen_ai.usage.cache_creation.input_tokens"] == 50
    assert tracker.totals.prompt_tokens == 150


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -1, "completion_tokens": 5},
        {"prompt_tokens": "12", "completion_tokens": 5},
        {"prompt_tokens": 1.5, "completion_tokens": 5},
        {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None},
        object(),
        "12 tokens",
    ],
)
def test_bad_usage_is_a_counted_skip_never_an_exception(pipeline, usage):
    tracker = mltrack_otel.LLMTracker()
    tracker.log_prompt_response("q", "a", model="gpt-4o", provider="openai", token_usage=usage)
    (span,) = pipeline.memory_exporter.get_finished_spans()
    assert "gen_ai.usage.input_tokens" not in span.attributes and semconv.LLM_COST_TOTAL not in span.attributes
    assert tracker.totals.calls == 0
    assert mltrack_otel.health()["errors.usage.invalid"] == 1


def test_unserialisable_prompt_and_huge_prompt_never_raise(pipeline):
    tracker = mltrack_otel.LLMTracker()
    tracker.log_prompt_response([{"role": "user", "content": object()}], b"\xff\x00", model="gpt-4o")
    tracker.log_prompt_response("x" * 5_000_000, "ok", model="gpt-4o")
    spans = pipeline.memory_exporter.get_finished_spans()
    assert len(spans) == 2
    limit = pipeline.settings.content_max_bytes
    for span in spans:
        for key in ("gen_ai.input.messages", "gen_ai.output.messages"):
            if key in span.attributes:
                assert len(span.attributes[key].encode()) <= limit
    assert spans[1].attributes[semconv.MLTRACK_CONTENT_TRUNCATED] is True


def test_content_capture_off_records_no_text(pipeline):
    mltrack_otel.configure(exporters=["memory"], llm_log_prompts=False, llm_log_responses=False)
    rt = mltrack_otel.provider.runtime()
    mltrack_otel.LLMTracker().log_prompt_response(
        "secret question",
        "secret answer",
        model="gpt-4o",
        token_usage={"prompt_tokens": 1, "completion_tokens": 1},
    )
    (span,) = rt.memory_exporter.get_finished_spans()
    assert "secret" not in repr(dict(span.attributes))


def test_track_llm_call_with_custom_extractors_sync_and_async(pipeline):
    tracker = mltrack_otel.LLMTracker()

    def prompt_of(args, kwargs):
        return kwargs.get("query", args[0] if args else "")

    def tokens_of(response):
        return {"prompt_tokens": response["input_tokens"], "completion_tokens": response["output_tokens"]}

    @tracker.track_llm_call(
        model="gpt-4o",
        provider="openai",
        extract_prompt=prompt_of,
        extract_response=lambda r: r["text"],
        extract_token_usage=tokens_of,
    )
    def call(query):
        return {"text": f"answer to {query}", "input_tokens": 7, "output_tokens": 3}

    @tracker.track_llm_call(
        model="gpt-4o",
        provider="openai",
        extract_prompt=prompt_of,
        extract_response=lambda r: r["text"],
        extract_token_usage=tokens_of,
    )
    async def acall(query):
        return {"text": f"answer to {query}", "input_tokens": 70, "output_tokens": 30}

    assert call("why?") == {"text": "answer to why?", "input_tokens": 7, "output_tokens": 3}
    assert asyncio.run(acall(query="how?"))["text"] == "answer to how?"
    spans = pipeline.memory_exporter.get_finished_spans()
    assert [s.attributes["gen_ai.usage.input_tokens"] for s in spans] == [7, 70]
    assert all(s.attributes[semconv.LLM_LATENCY] >= 0 for s in spans)
    assert tracker.totals.cost_usd == cost(GPT4O, 77, 33)


def test_a_failing_extractor_does_not_change_the_result(pipeline):
    tracker = mltrack_otel.LLMTracker()

    @tracker.track_llm_call(model="gpt-4o", extract_token_usage=lambda r: 1 / 0)
    def call():
        return "result"

    assert call() == "result"
    assert mltrack_otel.health()["errors.tracking.track_llm_call"] == 1


def test_track_decorates_every_function_kind_and_records_time_and_errors(pipeline):
    @mltrack_otel.track
    def plain(x):
        return x + 1

    @mltrack_otel.track(name="agen", tags={"kind": "async-gen"})
    async def agen():
        yield 1
        yield 2

    @mltrack_otel.track(name="gen")
    def gen():
        yield from range(3)

    @mltrack_otel.track(name="boom")
    async def boom():
        raise KeyError("nope")

    async def drive():
        return [i async for i in agen()]

    assert plain(1) == 2
    assert list(gen()) == [0, 1, 2]
    assert asyncio.run(drive()) == [1, 2]
    with pytest.raises(KeyError):
        asyncio.run(boom())
    spans = by_name(pipeline.memory_exporter)
    assert set(spans) >= {
        "test_track_decorates_every_function_kind_and_records_time_and_errors.<locals>.plain",
        "gen",
        "agen",
        "boom",
    }
    for span in spans.values():
        assert span.attributes[semconv.EXECUTION_TIME_SECONDS] >= 0
    assert spans["agen"].attributes[semconv.MLTRACK_TAGS] == ("kind=async-gen",)
    assert spans["boom"].status.status_code.name == "ERROR"
    assert spans["boom"].events[0].name == "exception"


def test_concurrent_tasks_and_threads_keep_separate_contexts(pipeline):
    """The seed ran concurrent contexts into each other; each must count only its own calls."""
    results = {}

    async def worker(i):
        with mltrack_otel.track_llm_context(f"task-{i}") as tracker:
            for _ in range(3):
                await asyncio.sleep(0)
                tracker.log_prompt_response(
                    "q",
                    "a",
                    model="gpt-4o",
                    provider="openai",
                    token_usage={"prompt_tokens": i, "completion_tokens": 0},
                )
            assert current_scope().name == f"task-{i}"
            results[i] = tracker.totals.prompt_tokens

    async def main():
        await asyncio.gather(*(worker(i) for i in range(1, 21)))

    asyncio.run(main())

    def thread_worker(i):
        with mltrack_otel.track_llm_context(f"thread-{i}") as tracker:
            for _ in range(3):
                tracker.log_prompt_response(
                    "q",
                    "a",
                    model="gpt-4o",
                    provider="openai",
                    token_usage={"prompt_tokens": i, "completion_tokens": 0},
                )
            results[100 + i] = tracker.totals.prompt_tokens

    threads = [threading.Thread(target=thread_worker, args=(i,)) for i in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {**{i: 3 * i for i in range(1, 21)}, **{100 + i: 3 * i for i in range(1, 9)}}


def test_seed_extractors_read_real_sdk_objects():
    from anthropic.types import Message
    from openai.types.chat import ChatCompletion

    completion = ChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    )
    message = Message.model_validate(
        {
            "id": "m1",
            "type": "message",
            "role": "assistant",
            "model": "claude-3-haiku-20240307",
            "content": [{"type": "text", "text": "hello"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 2},
        }
    )
    messages = [{"role": "user", "content": "q"}]
    assert mltrack_otel.openai_prompt_extractor((), {"messages": messages}) is messages
    assert mltrack_otel.openai_response_extractor(completion) == "hi"
    assert mltrack_otel.openai_token_extractor(completion) == {
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "total_tokens": 4,
    }
    assert mltrack_otel.anthropic_prompt_extractor((), {"messages": messages, "system": "be brief"})[0] == {
        "role": "system",
        "content": "be brief",
    }
    assert mltrack_otel.anthropic_response_extractor(message) == "hello"
    assert mltrack_otel.anthropic_token_extractor(message).input_tokens == 5


def test_parameters_record_known_request_settings_never_keys_or_headers(pipeline):
    mltrack_otel.LLMTracker().log_prompt_response(
        "q",
        "a",
        model="gpt-4o",
        parameters={
            "temperature": 0.2,
            "max_tokens": 50,
            "api_key": "sk-SECRETKEY123",
            "extra_headers": {"Authorization": "Bearer sk-SECRETKEY123"},
        },
    )
    (span,) = pipeline.memory_exporter.get_finished_spans()
    assert span.attributes["gen_ai.request.temperature"] == 0.2
    assert span.attributes["gen_ai.request.max_tokens"] == 50
    assert "SECRETKEY" not in repr(dict(span.attributes))


def test_track_llm_call_over_an_instrumented_sdk_call_counts_it_once(pipeline, fake):
    import openai

    tracker = mltrack_otel.LLMTracker()
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)

    @tracker.track_llm_call(
        model="gpt-4o-mini",
        provider="openai",
        extract_response=mltrack_otel.openai_response_extractor,
        extract_token_usage=mltrack_otel.openai_token_extractor,
    )
    def ask(question):
        return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])

    mltrack_otel.instrument(["openai"])
    try:
        with mltrack_otel.track_llm_context("ctx") as context:
            response = ask("How many calls is this?")
    finally:
        mltrack_otel.uninstrument(["openai"])
    spans = {s.context.span_id: s for s in pipeline.memory_exporter.get_finished_spans()}
    wrapper = next(
        s for s in spans.values() if s.instrumentation_scope.name == "mltrack_otel.tracking" and s.kind.name == "CLIENT"
    )
    sdk = next(s for s in spans.values() if s.parent is not None and s.parent.span_id == wrapper.context.span_id)
    assert sdk.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert wrapper.attributes[semconv.MLTRACK_USAGE_COUNTED] is False
    assert context.totals.calls == 1 and mltrack_otel.totals().calls == 1
    assert context.totals.prompt_tokens == response.usage.prompt_tokens


def test_track_generator_is_current_only_while_it_runs(pipeline):
    from opentelemetry import trace

    @mltrack_otel.track(name="gen")
    def gen():
        assert current_scope().name == "gen"  # inside, the generator's scope is current
        yield trace.get_current_span().get_span_context().span_id
        yield 2

    outer = trace.get_current_span()
    g = gen()
    inner_span_id = next(g)
    assert trace.get_current_span() is outer and current_scope() is None  # the caller is left alone between steps
    with trace.get_tracer("t").start_as_current_span("unrelated"):
        pass
    assert list(g) == [2]
    spans = by_name(pipeline.memory_exporter)
    assert spans["gen"].context.span_id == inner_span_id
    assert spans["unrelated"].parent is None or spans["unrelated"].parent.span_id != inner_span_id
