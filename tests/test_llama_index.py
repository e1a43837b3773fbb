"""LlamaIndex instrumentation: the real llama-index-core, llama-index-llms-openai and llama-index-embeddings-openai
against the fake provider, through a real TracerProvider and the CostSpanProcessor.

Every scenario runs twice: with the OpenAI SDK instrumentor on (the SDK span nests under the LlamaIndex span and is
the one counted) and off (the LlamaIndex span is counted).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("llama_index.llms.openai")
pytest.importorskip("llama_index.embeddings.openai")

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import SpanKind, StatusCode

from mltrack_otel import config, guard, semconv
from mltrack_otel.instrumentation.llama_index import LlamaIndexInstrumentor
from mltrack_otel.pricing import Pricer, Usage
from mltrack_otel.testing.fake_provider import prompt_tokens_for_texts
from tests.traced import Traced

pytestmark = pytest.mark.frameworks

MODEL = "gpt-4o-mini"
DOCS = ("Paris is the capital of France.", "Berlin is the capital of Germany.", "Rome is the capital of Italy.")
_LLAMA_CACHE = Path(__import__("llama_index.core").core.__file__).parent / "_static" / "tiktoken_cache"


@pytest.fixture(autouse=True)
def _offline_tokenizer(monkeypatch):
    """No tokenizer download, ever: a local whitespace tokenizer, and tiktoken pointed at llama-index's bundle."""
    import llama_index.core

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(_LLAMA_CACHE))
    previous = llama_index.core.global_tokenizer
    llama_index.core.set_global_tokenizer(str.split)
    yield
    llama_index.core.global_tokenizer = previous


@pytest.fixture(params=["sdk-on", "sdk-off"])
def sdk(request):
    return request.param == "sdk-on"


@pytest.fixture
def traced(isolated_env, sdk):
    """A real TracerProvider + CostSpanProcessor (fresh Ledger) over an in-memory exporter; LlamaIndex instrumented,
    the OpenAI SDK instrumentor too when `sdk` is on."""
    from mltrack_otel.instrumentation.openai import OpenAIInstrumentor

    config.set_current(config.load_settings())
    guard.reset()
    harness = Traced()
    if sdk:
        OpenAIInstrumentor().instrument(tracer_provider=harness.provider)
    LlamaIndexInstrumentor().instrument(tracer_provider=harness.provider)
    yield harness.exporter
    LlamaIndexInstrumentor().uninstrument()
    if sdk:
        OpenAIInstrumentor().uninstrument()
    harness.shutdown()
    config.set_current(None)


@pytest.fixture
def llm(fake):
    from llama_index.llms.openai import OpenAI

    fake.clear()
    return OpenAI(api_base=fake.openai_base_url, api_key="test", model=MODEL, max_retries=0)


@pytest.fixture
def index(fake, traced):
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.embeddings.openai import OpenAIEmbedding

    embed = OpenAIEmbedding(api_base=fake.openai_base_url, api_key="test", max_retries=0)
    built = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS], embed_model=embed)
    traced.clear()
    fake.clear()
    return built


# --- helpers ---------------------------------------------------------------------------------------------------


def tree(spans) -> list[str]:
    """The span tree as indented names, children in start order (SDK spans are marked with `sdk:`)."""
    by_parent: dict[int | None, list] = {}
    ids = {s.context.span_id for s in spans}
    for s in spans:
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in sorted(by_parent.get(parent, []), key=lambda x: x.start_time):
            sdk_span = s.instrumentation_scope.name != "mltrack_otel.instrumentation.llama_index"
            lines.append("  " * depth + ("sdk:" if sdk_span else "") + s.name)
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return lines


def expected_tree(shape: list[str], sdk: bool) -> list[str]:
    """Insert the SDK span under every LlamaIndex model-call span when the SDK instrumentor is on."""
    out = []
    for line in shape:
        out.append(line)
        name = line.strip()
        if sdk and name.split(" ")[0] in ("chat", "embeddings", "text_completion"):
            out.append(" " * (len(line) - len(name) + 2) + "sdk:" + name)
    return out


def counted(spans) -> list:
    return [s for s in spans if s.attributes.get(semconv.MLTRACK_USAGE_COUNTED) is True]


def assert_exactly_once(spans, sdk: bool) -> None:
    """Every span with usage is marked; the counted ones are the innermost; the root total is their sum."""
    with_usage = [s for s in spans if gen_ai.GEN_AI_USAGE_INPUT_TOKENS in s.attributes]
    for s in with_usage:
        assert semconv.MLTRACK_USAGE_COUNTED in s.attributes, s.name
        is_sdk = s.instrumentation_scope.name != "mltrack_otel.instrumentation.llama_index"
        if sdk:
            assert s.attributes[semconv.MLTRACK_USAGE_COUNTED] is is_sdk, s.name
        else:
            assert not is_sdk and s.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1
    total = sum(s.attributes.get(semconv.LLM_COST_TOTAL, 0.0) for s in counted(spans))
    if counted(spans):
        assert roots[0].attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(total, rel=1e-9)


def price(model: str, tokens_in: int, tokens_out: int) -> float:
    cost = Pricer().price("openai", model, Usage(tokens_in, tokens_out))
    assert cost is not None
    return float(cost.total)


def chat_requests(fake) -> list:
    return [r for r in fake.requests if r.path.endswith("/chat/completions")]


def independent_chat_cost(fake, answers: list[str]) -> float:
    """The price of the chat calls the fake answered, from what was sent and what came back (usage formula)."""
    total = 0.0
    requests = chat_requests(fake)
    assert len(requests) == len(answers)
    for request, answer in zip(requests, answers, strict=True):
        prompt = prompt_tokens_for_texts([m["content"] for m in request.json["messages"]])
        total += price(f"{MODEL}-2024-07-18", prompt, len(answer.split()))
    return total


def llm_span(spans):
    (span,) = [s for s in spans if s.instrumentation_scope.name.endswith("llama_index") and s.name.startswith("chat")]
    return span


# --- query engine ----------------------------------------------------------------------------------------------


QUERY_TREE = [
    "query RetrieverQueryEngine",
    "  retrieval VectorIndexRetriever",
    "    embeddings text-embedding-ada-002",
    "  synthesize CompactAndRefine",
    "    chat gpt-4o-mini",
]


def test_query_tree_usage_and_cost(index, llm, traced, fake, sdk):
    response = index.as_query_engine(llm=llm, similarity_top_k=2).query("What is the capital of France?")
    spans = traced.get_finished_spans()
    assert tree(spans) == expected_tree(QUERY_TREE, sdk)
    assert len(spans) == (7 if sdk else 5)
    assert_exactly_once(spans, sdk)

    chat = llm_span(spans)
    attrs = chat.attributes
    assert chat.kind is SpanKind.CLIENT
    assert attrs[gen_ai.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[gen_ai.GEN_AI_PROVIDER_NAME] == "openai"
    assert attrs[gen_ai.GEN_AI_REQUEST_MODEL] == MODEL
    assert attrs[gen_ai.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-2024-07-18"
    assert attrs[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    messages = json.loads(attrs[gen_ai.GEN_AI_INPUT_MESSAGES])
    assert "What is the capital of France?" in json.dumps(messages)
    output = json.loads(attrs[gen_ai.GEN_AI_OUTPUT_MESSAGES])
    assert output == [
        {"role": "assistant", "parts": [{"type": "text", "content": str(response)}], "finish_reason": "stop"}
    ]
    chat_cost = independent_chat_cost(fake, [str(response)])
    assert attrs[semconv.LLM_COST_TOTAL] == pytest.approx(chat_cost)
    root = next(s for s in spans if s.parent is None)
    if not sdk:  # embeddings carry no usage in LlamaIndex: only the chat is priced
        assert root.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(chat_cost)

    retrieval = next(s for s in spans if s.name.startswith("retrieval"))
    assert retrieval.attributes[gen_ai.GEN_AI_OPERATION_NAME] == "retrieval"
    assert retrieval.attributes[gen_ai.GEN_AI_RETRIEVAL_QUERY_TEXT] == "What is the capital of France?"
    assert retrieval.attributes[gen_ai.GEN_AI_DATA_SOURCE_ID] == index.index_id
    documents = json.loads(retrieval.attributes[gen_ai.GEN_AI_RETRIEVAL_DOCUMENTS])
    assert len(documents) == 2 and all("id" in d and "score" in d for d in documents)
    embedding = next(
        s for s in spans if s.name.startswith("embeddings") and "llama_index" in s.instrumentation_scope.name
    )
    assert embedding.attributes[gen_ai.GEN_AI_OPERATION_NAME] == "embeddings"
    assert embedding.attributes["mltrack.embeddings.input_count"] == 1
    assert embedding.attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 16


def test_streaming_query_nests_the_llm_call_under_the_query(index, llm, traced, fake, sdk):
    streaming = index.as_query_engine(llm=llm, streaming=True, similarity_top_k=2).query("Capital of Italy?")
    assert not [s for s in traced.get_finished_spans() if s.name.startswith("query")]  # open until consumed
    answer = "".join(streaming.response_gen)
    spans = traced.get_finished_spans()
    assert tree(spans) == expected_tree(QUERY_TREE, sdk)
    assert_exactly_once(spans, sdk)
    chat = llm_span(spans)
    assert chat.attributes[semconv.MLTRACK_STREAM_COMPLETE] is True
    assert chat.attributes[gen_ai.GEN_AI_REQUEST_STREAM] is True
    assert gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK in chat.attributes
    if sdk:  # the SDK asked for usage on the stream: its span is the counted one
        (counted_span,) = [s for s in counted(spans) if s.name.startswith("chat")]
        assert counted_span.parent.span_id == chat.context.span_id
        assert counted_span.attributes[semconv.LLM_COST_TOTAL] == pytest.approx(independent_chat_cost(fake, [answer]))
    query = next(s for s in spans if s.name.startswith("query"))
    assert query.end_time >= chat.end_time


def test_async_query(fake, traced, sdk):
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.llms.openai import OpenAI

    async def main() -> str:  # clients bound to this event loop
        embed = OpenAIEmbedding(api_base=fake.openai_base_url, api_key="test")
        llm = OpenAI(api_base=fake.openai_base_url, api_key="test", model=MODEL, max_retries=0)
        built = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS], embed_model=embed)
        traced.clear()
        fake.clear()
        return str(await built.as_query_engine(llm=llm, similarity_top_k=2).aquery("Capital of Germany?"))

    answer = asyncio.run(main())
    spans = traced.get_finished_spans()
    assert tree(spans) == expected_tree(QUERY_TREE, sdk)
    assert_exactly_once(spans, sdk)
    assert llm_span(spans).attributes[semconv.LLM_COST_TOTAL] == pytest.approx(independent_chat_cost(fake, [answer]))


# --- LLM calls -------------------------------------------------------------------------------------------------


def test_chat_and_complete(llm, traced, fake, sdk):
    from llama_index.core.llms import ChatMessage

    reply = llm.chat([ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi there")])
    spans = traced.get_finished_spans()
    assert tree(spans) == expected_tree(["chat gpt-4o-mini"], sdk)
    assert_exactly_once(spans, sdk)
    chat = llm_span(spans)
    assert json.loads(chat.attributes[gen_ai.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Hi there"}]},
    ]
    assert chat.attributes[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == prompt_tokens_for_texts(["Be brief.", "Hi there"])
    assert chat.attributes[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == len(reply.message.content.split())

    traced.clear()
    completion = llm.complete("Say something")
    spans = traced.get_finished_spans()
    assert tree(spans) == expected_tree(["text_completion gpt-4o-mini"], sdk) or tree(spans) == [
        "text_completion gpt-4o-mini",
        "  sdk:chat gpt-4o-mini",  # a chat model completes through the chat endpoint
    ]
    assert_exactly_once(spans, sdk)
    span = next(s for s in spans if s.name.startswith("text_completion"))
    assert span.attributes[gen_ai.GEN_AI_OPERATION_NAME] == "text_completion"
    assert json.loads(span.attributes[gen_ai.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"] == completion.text


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_chat(fake, traced, sdk, include_usage):
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    llm = OpenAI(api_base=fake.openai_base_url, api_key="test", model=MODEL, max_retries=0, additional_kwargs=extra)
    fake.clear()
    chunks = list(llm.stream_chat([ChatMessage(role="user", content="Stream me a story")]))
    spans = traced.get_finished_spans()
    assert tree(spans) == expected_tree(["chat gpt-4o-mini"], sdk)
    assert_exactly_once(spans, sdk)
    chat = llm_span(spans)
    assert chat.attributes[semconv.MLTRACK_STREAM_COMPLETE] is True
    output = json.loads(chat.attributes[gen_ai.GEN_AI_OUTPUT_MESSAGES])
    assert output[0]["parts"][0]["content"] == chunks[-1].message.content
    expected = independent_chat_cost(fake, [chunks[-1].message.content])
    (counted_span,) = counted(spans) if (sdk or include_usage) else (None,)
    if counted_span is None:  # nobody asked the provider for usage: nothing to price, nothing invented
        assert gen_ai.GEN_AI_USAGE_INPUT_TOKENS not in chat.attributes
    else:
        assert counted_span.attributes[semconv.LLM_COST_TOTAL] == pytest.approx(expected)
        assert chat.attributes[semconv.LLM_COST_CUMULATIVE] == pytest.approx(expected)


def test_stream_closed_early_ends_the_span_once(llm, traced, sdk):
    from llama_index.core.llms import ChatMessage

    stream = llm.stream_chat([ChatMessage(role="user", content="[[scenario:long]] tell me more")])
    next(stream)
    stream.close()
    gc.collect()  # the SDK's own stream is only released by garbage collection
    guard.drain_deferred()  # the span is ended off the collector, by the finalizer worker
    spans = traced.get_finished_spans()
    chat = llm_span(spans)
    assert chat.attributes[semconv.MLTRACK_STREAM_COMPLETE] is False
    assert chat.status.status_code is not StatusCode.ERROR
    assert len(spans) == (2 if sdk else 1)


def test_abandoned_stream_ends_on_garbage_collection(llm, traced):
    from llama_index.core.llms import ChatMessage

    stream = llm.stream_chat([ChatMessage(role="user", content="never read")])
    del stream
    gc.collect()
    guard.drain_deferred()  # the span is ended off the collector, by the finalizer worker
    (chat,) = [s for s in traced.get_finished_spans() if "llama_index" in s.instrumentation_scope.name]
    assert chat.attributes[semconv.MLTRACK_STREAM_COMPLETE] is False


def test_async_chat_and_stream(fake, traced, sdk):
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    async def main() -> None:
        llm = OpenAI(api_base=fake.openai_base_url, api_key="test", model=MODEL, max_retries=0)
        await llm.achat([ChatMessage(role="user", content="async hello")])
        stream = await llm.astream_chat([ChatMessage(role="user", content="async stream")])
        async for _ in stream:
            pass

    asyncio.run(main())
    spans = traced.get_finished_spans()
    assert [line for line in tree(spans) if not line.startswith(" ")] == ["chat gpt-4o-mini", "chat gpt-4o-mini"]
    assert len(spans) == (4 if sdk else 2)
    for root in (s for s in spans if s.parent is None):
        children = [s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id]
        assert len(children) == (1 if sdk else 0)
    assert len(counted(spans)) == (2 if sdk else 1)  # the llama stream has no usage unless the SDK asks


def test_tool_call(llm, traced, sdk):
    from llama_index.core.tools import FunctionTool

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"Sunny in {city}"

    tool = FunctionTool.from_defaults(fn=get_weather)
    response = llm.chat_with_tools([tool], user_msg="Weather in Paris? [[scenario:tool]]")
    (call,) = llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    result = tool.call(**call.tool_kwargs)
    assert result.content == "Sunny in example"

    spans = traced.get_finished_spans()
    assert tree(spans) == [*expected_tree(["chat gpt-4o-mini"], sdk), "execute_tool get_weather"]
    assert_exactly_once([s for s in spans if s.name.startswith("chat")], sdk)
    chat = llm_span(spans)
    definitions = json.loads(chat.attributes[gen_ai.GEN_AI_TOOL_DEFINITIONS])
    assert definitions[0]["name"] == "get_weather" and definitions[0]["type"] == "function"
    (message,) = json.loads(chat.attributes[gen_ai.GEN_AI_OUTPUT_MESSAGES])
    assert message["finish_reason"] == "tool_call"
    assert [p for p in message["parts"] if p["type"] == "tool_call"] == [
        {"type": "tool_call", "id": call.tool_id, "name": "get_weather", "arguments": {"city": "example"}}
    ]
    tool_span = next(s for s in spans if s.name.startswith("execute_tool"))
    assert tool_span.attributes[gen_ai.GEN_AI_TOOL_NAME] == "get_weather"
    assert tool_span.attributes[gen_ai.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert json.loads(tool_span.attributes[gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"city": "example"}
    assert tool_span.attributes[gen_ai.GEN_AI_TOOL_CALL_RESULT] == "Sunny in example"


def test_provider_error(llm, traced, sdk):
    from llama_index.core.llms import ChatMessage
    from openai import InternalServerError

    with pytest.raises(InternalServerError):
        llm.chat([ChatMessage(role="user", content="fail [[scenario:error-500]]")])
    spans = traced.get_finished_spans()
    assert tree(spans) == expected_tree(["chat gpt-4o-mini"], sdk)
    chat = llm_span(spans)
    assert chat.status.status_code is StatusCode.ERROR
    assert chat.attributes["error.type"] == "server_error"  # the provider's error code
    assert chat.attributes["http.response.status_code"] == 500
    assert not counted(spans)
    assert [e.name for e in chat.events] == ["exception"]


# --- context hygiene, configuration, lifecycle -----------------------------------------------------------------


def test_no_context_errors_and_no_leaked_current_span(index, llm, traced, caplog):
    from opentelemetry import trace

    caplog.set_level(logging.DEBUG)
    before = trace.get_current_span()
    index.as_query_engine(llm=llm).query("one")
    "".join(index.as_query_engine(llm=llm, streaming=True).query("two").response_gen)
    assert trace.get_current_span() is before
    assert "Failed to detach context" not in caplog.text
    assert not {k: v for k, v in guard.health().items() if k.startswith("errors")}


def test_content_capture_off(llm, traced, monkeypatch):
    from llama_index.core.llms import ChatMessage

    config.set_current(config.load_settings(llm_log_prompts=False, llm_log_responses=False))
    llm.chat([ChatMessage(role="user", content="secret")])
    chat = llm_span(traced.get_finished_spans())
    assert gen_ai.GEN_AI_INPUT_MESSAGES not in chat.attributes
    assert gen_ai.GEN_AI_OUTPUT_MESSAGES not in chat.attributes
    assert gen_ai.GEN_AI_USAGE_INPUT_TOKENS in chat.attributes


def test_uninstrument_removes_exactly_our_handlers(traced, llm):
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    dispatcher = get_dispatcher()
    others = list(dispatcher.span_handlers), list(dispatcher.event_handlers)
    patched = OpenAI.__dict__["stream_chat"]
    LlamaIndexInstrumentor().uninstrument()
    assert len(dispatcher.span_handlers) == len(others[0]) - 1
    assert len(dispatcher.event_handlers) == len(others[1]) - 1
    assert OpenAI.__dict__["stream_chat"] is patched._mltrack_original
    traced.clear()
    llm.chat([ChatMessage(role="user", content="untracked")])
    assert not [s for s in traced.get_finished_spans() if "llama_index" in s.instrumentation_scope.name]
    LlamaIndexInstrumentor().instrument()  # the fixture uninstruments again


def test_instrument_before_import_imports_nothing(tmp_path):
    """instrument() arms a post-import hook; the handlers arrive with `import llama_index.core`, not before."""
    code = """
import sys
from mltrack_otel.instrumentation import LIBRARIES, instrument
from mltrack_otel.instrumentation.llama_index import LlamaIndexInstrumentor
if "llama_index" in LIBRARIES:
    instrument()
else:
    LlamaIndexInstrumentor().instrument()
assert "llama_index.core" not in sys.modules, "imported too early"
from llama_index.core.instrumentation import get_dispatcher
names = [type(h).__name__ for h in get_dispatcher().span_handlers + get_dispatcher().event_handlers]
assert "MltrackSpanHandler" in names and "MltrackEventHandler" in names, names
print("ok")
"""
    env = {**os.environ, "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_tool_content_is_cut_in_bytes(traced):
    """Tool arguments and results follow the one content policy: the budget is in UTF-8 bytes (LlamaIndex's spans
    used to compare characters with it, so 200 two-byte characters passed a 256-byte budget whole)."""
    from llama_index.core.tools import FunctionTool

    from mltrack_otel.content import TRUNCATION_MARK

    config.set_current(config.load_settings(content_max_bytes=256))

    def describe(city: str) -> str:
        """Describe a city."""
        return "é" * 200

    assert FunctionTool.from_defaults(fn=describe).call(city="Zürich" * 60).content == "é" * 200

    (span,) = traced.get_finished_spans()
    assert span.name == "execute_tool describe"
    result = span.attributes[gen_ai.GEN_AI_TOOL_CALL_RESULT]
    assert result == "é" * ((256 - len(TRUNCATION_MARK)) // 2) + TRUNCATION_MARK
    arguments = span.attributes[gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS]
    assert len(arguments.encode()) <= 256 and json.loads(arguments)["city"].endswith(TRUNCATION_MARK)
    assert span.attributes[semconv.MLTRACK_CONTENT_TRUNCATED] is True
