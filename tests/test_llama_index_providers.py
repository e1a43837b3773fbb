"""LlamaIndex over the provider SDKs we instrument: exactly-once counting when a LlamaIndex LLM class drives the
provider's own SDK (issue 13).

Each test runs the real llama-index integration package against the loopback fake provider, with both
instrumentations on: LlamaIndex's chat span on top, the SDK's span below it, and the SDK's span the one counted.

Which integrations go through an SDK we instrument (read in each package's source):
- llama-index-llms-bedrock-converse: boto3 ``bedrock-runtime`` ``converse`` / ``converse_stream``.
- llama-index-llms-mistralai: the mistralai SDK's ``Mistral.chat.complete`` / ``chat.stream``.
- llama-index-llms-ollama: the ollama SDK's ``Client.chat`` (stream=False / True).
Not covered here:
- llama-index-llms-google-genai (google-genai's ``Client``) pins ``google-genai<3``: installing it downgrades the
  SDK the other tests run on, so it is not installed.
- llama-index-llms-cohere calls the v1 client (``cohere.Client.chat`` / ``chat_stream``, ``POST /v1/chat``); we
  instrument the v2 client and the fake speaks ``/v2/chat`` only.
- llama-index-llms-groq is ``OpenAILike``: it drives the openai SDK, not the groq SDK. Its tests keep Groq's real
  base URL (which names the provider) and carry the requests to the fake with an httpx transport, with the
  openai instrumentation on; a known gap is a strict xfail (one LlamaIndex span too many).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import genai_prices
import httpx
import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from mltrack_otel import guard, semconv
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.pricing import Pricer
from mltrack_otel.testing.fake_provider import prompt_tokens_for_texts
from tests.instr_fixtures import attrs
from tests.traced import Traced

pytest.importorskip("llama_index.core")

pytestmark = pytest.mark.frameworks

QUESTION = "hello from llama index"
LLAMA_SCOPE = "mltrack_otel.instrumentation.llama_index"


def genai_price(provider_id: str, model: str, tokens_in: int, tokens_out: int) -> float:
    usage = genai_prices.Usage(input_tokens=tokens_in, output_tokens=tokens_out)
    return float(genai_prices.calc_price(usage, model_ref=model, provider_id=provider_id).total_price)


MODES = ["chat", "stream", "achat", "astream"]  # chat / stream_chat / achat / astream_chat


def chat(llm: Any, mode: str) -> str:
    """One chat call through the LlamaIndex LLM class; a stream is read to its end. Returns the answer text."""
    from llama_index.core.llms import ChatMessage

    messages = [ChatMessage(role="user", content=QUESTION)]
    if mode == "chat":
        return llm.chat(messages).message.content
    if mode == "stream":
        return "".join(r.delta or "" for r in llm.stream_chat(messages))

    async def call() -> str:
        if mode == "achat":
            return (await llm.achat(messages)).message.content
        return "".join([r.delta or "" async for r in await llm.astream_chat(messages)])

    return asyncio.run(call())


def run(instrumented: list[str], make_llm: Callable[[], Any], mode: str, traced: Traced) -> str:
    guard.reset()
    instrument(instrumented, tracer_provider=traced.provider)
    try:
        return chat(make_llm(), mode)
    finally:
        uninstrument(instrumented)


def nested_pair(traced: Traced, sdk_scope: str) -> tuple[Any, Any]:
    """The two spans of the one call: LlamaIndex's chat span (the root) and the SDK's directly below it."""
    spans = traced.spans()
    assert len(spans) == 2, [(s.instrumentation_scope.name, s.name) for s in spans]
    (outer,) = [s for s in spans if s.instrumentation_scope.name == LLAMA_SCOPE]
    (inner,) = [s for s in spans if s.instrumentation_scope.name == sdk_scope]
    assert outer.parent is None and inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert attrs(outer)[gen_ai.GEN_AI_OPERATION_NAME] == attrs(inner)[gen_ai.GEN_AI_OPERATION_NAME] == "chat"
    return outer, inner


def assert_counted_once(traced: Traced, outer: Any, inner: Any, tokens: tuple[int, int], cost: float | None) -> None:
    """The SDK span is the one counted, with the fake's token counts and the expected cost; the ledger holds that one
    call and that one cost; LlamaIndex's span is marked not counted."""
    counted = [s for s in traced.spans() if attrs(s).get(semconv.MLTRACK_USAGE_COUNTED) is True]
    assert counted == [inner]
    assert attrs(outer).get(semconv.MLTRACK_USAGE_COUNTED) is not True
    a = attrs(inner)
    assert (a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS], a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS]) == tokens
    totals = traced.ledger.process_totals()
    assert totals.calls == 1
    assert (totals.prompt_tokens, totals.completion_tokens) == tokens
    if cost is None:  # a local server: no price on either span, nothing in the ledger's cost
        assert semconv.LLM_COST_TOTAL not in a and semconv.LLM_COST_TOTAL not in attrs(outer)
        assert totals.cost_usd == 0
        return
    assert cost > 0 and a[semconv.LLM_COST_TOTAL] == pytest.approx(cost, rel=1e-9)
    assert float(totals.cost_usd) == pytest.approx(a[semconv.LLM_COST_TOTAL], rel=1e-9)
    assert attrs(outer)[semconv.LLM_COST_CUMULATIVE] == pytest.approx(cost, rel=1e-9)


# --- Bedrock (boto3 bedrock-runtime) ----------------------------------------------------------------------------

CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"


BEDROCK_ASTREAM_LOSES_CONTEXT = pytest.mark.xfail(
    strict=True,
    reason="double count: without aioboto3, BedrockConverse.astream_chat runs boto3's converse_stream in "
    "loop.run_in_executor (no contextvars copied), so the bedrock span starts with no parent; it and LlamaIndex's "
    "chat span are both roots with usage and both counted (ledger: 2 calls, twice the cost)",
)


@pytest.mark.parametrize("mode", [*MODES[:3], pytest.param("astream", marks=BEDROCK_ASTREAM_LOSES_CONTEXT)])
def test_bedrock_converse_counted_once(fake, settings, mode):
    """BedrockConverse calls boto3's converse / converse_stream: the bedrock span below LlamaIndex's is counted."""
    bedrock_converse = pytest.importorskip("llama_index.llms.bedrock_converse")

    def make_llm() -> Any:
        return bedrock_converse.BedrockConverse(
            model=CLAUDE,
            endpoint_url=fake.url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            max_retries=1,
        )

    fake.clear()
    traced = Traced()
    text = run(["llama_index", "bedrock"], make_llm, mode, traced)
    assert text.startswith("Echo: hello from llama index")
    assert [r.path.rsplit("/", 1)[1] for r in fake.requests] == ["converse-stream" if "stream" in mode else "converse"]
    outer, inner = nested_pair(traced, "mltrack_otel.instrumentation.bedrock")
    assert attrs(outer)[gen_ai.GEN_AI_PROVIDER_NAME] == attrs(inner)[gen_ai.GEN_AI_PROVIDER_NAME] == "aws.bedrock"
    tokens = (prompt_tokens_for_texts([QUESTION]), fake.stream_chunks)
    assert_counted_once(traced, outer, inner, tokens, genai_price("aws", CLAUDE, *tokens))


# --- Mistral (mistralai SDK) ------------------------------------------------------------------------------------

MISTRAL = "mistral-small-latest"


@pytest.mark.parametrize("mode", MODES)
def test_mistralai_counted_once(fake, settings, mode):
    """MistralAI drives mistralai's Mistral client (server_url = its `endpoint`): the SDK span is counted."""
    mistralai_llms = pytest.importorskip("llama_index.llms.mistralai")

    def make_llm() -> Any:
        return mistralai_llms.MistralAI(model=MISTRAL, api_key="mistral-test-key", endpoint=fake.url, max_retries=0)

    fake.clear()
    traced = Traced()
    text = run(["llama_index", "mistralai"], make_llm, mode, traced)
    assert text.startswith("Echo: hello from llama index")
    assert len(fake.requests) == 1 and fake.requests[0].path.endswith("/chat/completions")
    outer, inner = nested_pair(traced, "mltrack_otel.instrumentation.mistralai.client")
    assert attrs(outer)[gen_ai.GEN_AI_PROVIDER_NAME] == attrs(inner)[gen_ai.GEN_AI_PROVIDER_NAME] == "mistral_ai"
    tokens = (prompt_tokens_for_texts([QUESTION]), fake.stream_chunks)
    assert_counted_once(traced, outer, inner, tokens, genai_price("mistral", MISTRAL, *tokens))


# --- Ollama (ollama SDK) ----------------------------------------------------------------------------------------

OLLAMA = "llama3.2"


@pytest.mark.parametrize("mode", MODES)
def test_ollama_counted_once(fake, settings, monkeypatch, mode):
    """Ollama drives the ollama SDK's Client.chat. The fake stands for a local Ollama here (no cloud hosts): the call
    is counted once, by the SDK span, and is local: no price on either span, nothing in the ledger's cost."""
    ollama_llms = pytest.importorskip("llama_index.llms.ollama")
    monkeypatch.delenv("MLTRACK_CLOUD_HOSTS", raising=False)

    def make_llm() -> Any:
        # context_window given: else the class asks the server (/api/show) for it before the first call
        return ollama_llms.Ollama(model=OLLAMA, base_url=fake.url, context_window=8192, request_timeout=30)

    fake.clear()
    traced = Traced(pricer=Pricer())
    text = run(["llama_index", "ollama"], make_llm, mode, traced)
    assert text.startswith("Echo: hello from llama index")
    assert [r.path for r in fake.requests] == ["/api/chat"]
    outer, inner = nested_pair(traced, "mltrack_otel.instrumentation.ollama")
    assert attrs(outer)[gen_ai.GEN_AI_PROVIDER_NAME] == attrs(inner)[gen_ai.GEN_AI_PROVIDER_NAME] == "ollama"
    assert attrs(inner)[semconv.MLTRACK_COST_LOCAL] is True
    tokens = (prompt_tokens_for_texts([QUESTION]), fake.stream_chunks)
    assert_counted_once(traced, outer, inner, tokens, None)


# --- Groq (llama-index-llms-groq is OpenAILike: the openai SDK) -------------------------------------------------

GROQ = "llama-3.1-8b-instant"


class ToFake(httpx.HTTPTransport):
    """Carries each request, unchanged but for where it connects, to the fake provider on loopback: the client keeps
    Groq's real base URL (api.groq.com), which is what names the provider of an OpenAI-compatible call."""

    def __init__(self, fake: Any) -> None:
        super().__init__()
        self.fake = fake

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host=self.fake.host, port=self.fake.port)
        return super().handle_request(request)


def groq_run(fake: Any, stream: bool) -> Traced:
    groq_llms = pytest.importorskip("llama_index.llms.groq")

    def make_llm() -> Any:  # the class's default api_base, https://api.groq.com/openai/v1
        http = httpx.Client(transport=ToFake(fake))
        return groq_llms.Groq(model=GROQ, api_key="gsk-test", max_retries=0, http_client=http)

    fake.clear()
    traced = Traced()
    text = run(["llama_index", "openai"], make_llm, "stream" if stream else "chat", traced)
    assert text.startswith("Echo: hello from llama index")
    assert [r.path for r in fake.requests] == ["/openai/v1/chat/completions"]
    return traced


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_groq_through_openai_sdk_counted_once(fake, settings, stream):
    """Groq's LlamaIndex class drives the openai SDK against api.groq.com: the openai span, below LlamaIndex's chat
    span, is the one counted, under Groq's name, and the ledger holds that one call at that span's cost."""
    traced = groq_run(fake, stream)
    spans = traced.spans()
    (inner,) = [s for s in spans if s.instrumentation_scope.name == "mltrack_otel.instrumentation.openai"]
    by_id = {s.context.span_id: s for s in spans}
    assert by_id[inner.parent.span_id].instrumentation_scope.name == LLAMA_SCOPE
    assert {s.instrumentation_scope.name for s in spans} == {LLAMA_SCOPE, inner.instrumentation_scope.name}
    assert all(attrs(s)[gen_ai.GEN_AI_PROVIDER_NAME] == "groq" for s in spans)
    counted = [s for s in spans if attrs(s).get(semconv.MLTRACK_USAGE_COUNTED) is True]
    assert counted == [inner]
    a = attrs(inner)
    totals = traced.ledger.process_totals()
    assert totals.calls == 1 and float(totals.cost_usd) == pytest.approx(a[semconv.LLM_COST_TOTAL], rel=1e-9)
    (root,) = [s for s in spans if s.parent is None]
    assert attrs(root)[semconv.LLM_COST_CUMULATIVE] == pytest.approx(a[semconv.LLM_COST_TOTAL], rel=1e-9)
    if not stream:  # the stream's usage: test_groq_stream_usage_is_groqs
        tokens = (prompt_tokens_for_texts([QUESTION]), fake.stream_chunks)
        assert (a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS], a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS]) == tokens
        assert a[semconv.LLM_COST_TOTAL] == pytest.approx(genai_price("groq", GROQ, *tokens), rel=1e-9)


def test_groq_stream_usage_is_groqs(fake, settings):
    traced = groq_run(fake, stream=True)
    (inner,) = [s for s in traced.spans() if s.instrumentation_scope.name == "mltrack_otel.instrumentation.openai"]
    a = attrs(inner)
    tokens = (prompt_tokens_for_texts([QUESTION]), fake.stream_chunks)
    assert (a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS], a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS]) == tokens
    assert a[semconv.MLTRACK_USAGE_SOURCE] == "provider"


@pytest.mark.xfail(
    strict=True,
    reason="OpenAILike.chat and the OpenAI.chat it calls are both LlamaIndex dispatcher spans: one call makes two "
    "nested LlamaIndex chat spans (counted once, but one span too many)",
)
def test_groq_one_llama_index_span_per_call(fake, settings):
    traced = groq_run(fake, stream=False)
    assert len([s for s in traced.spans() if s.instrumentation_scope.name == LLAMA_SCOPE]) == 1
