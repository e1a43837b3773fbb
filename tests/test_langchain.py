"""LangChain instrumentation: real langchain-core / langchain-openai / langchain-anthropic / LangGraph against the
fake provider server, a real TracerProvider with the CostSpanProcessor, and the provider instrumentor on and off.

Every test asserts the span count, the tree (parent ids), the counted flags, and that each trace's root
llm.cost.cumulative equals both the sum of its counted calls and the usage the SDK returned, priced independently.
"""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = pytest.mark.frameworks

langchain_core = pytest.importorskip("langchain_core")
langchain_openai = pytest.importorskip("langchain_openai")

from langchain_core.callbacks import BaseCallbackManager, CallbackManager  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.language_models.chat_models import BaseChatModel  # noqa: E402
from langchain_core.messages import HumanMessage, ToolMessage  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.tools import BaseTool, tool  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from mltrack_otel import Pricer, Usage, config, guard  # noqa: E402
from mltrack_otel.instrumentation import langchain as lc  # noqa: E402
from mltrack_otel.instrumentation.langchain import LangChainInstrumentor  # noqa: E402
from tests.traced import Traced  # noqa: E402

LC_SCOPE = "mltrack_otel.instrumentation.langchain"
MODEL = "gpt-4o-mini"
SNAPSHOT = "gpt-4o-mini-2024-07-18"
ORIGINAL_INIT = BaseCallbackManager.__dict__["__init__"]
ORIGINAL_GENERATE = BaseChatModel.__dict__["_generate_with_cache"]


def _sdk_instrumentor(name: str):
    """The provider SDK instrumentor class (colleague's module); None when it does not exist yet."""
    try:
        if name == "openai":
            from mltrack_otel.instrumentation.openai import OpenAIInstrumentor

            return OpenAIInstrumentor
        from mltrack_otel.instrumentation.anthropic import AnthropicInstrumentor

        return AnthropicInstrumentor
    except ImportError:
        return None


# --- fixtures ---------------------------------------------------------------------------------------------------


class Otel(Traced):
    """The span harness (cost pipeline, own ledger) with span-tree helpers for LangChain."""

    @property
    def spans(self):  # a property here, as this file's tests have always read it
        return self.exporter.get_finished_spans()

    def ours(self):
        return [s for s in self.spans if s.instrumentation_scope.name == LC_SCOPE]

    def sdk(self):
        return [s for s in self.spans if s.instrumentation_scope.name != LC_SCOPE]

    def by_id(self):
        return {s.context.span_id: s for s in self.spans}

    def parent_of(self, span):
        return self.by_id().get(span.parent.span_id) if span.parent is not None else None

    def roots(self):
        return [s for s in self.spans if s.parent is None]

    def counted(self, trace_id=None):
        spans = [s for s in self.spans if s.attributes.get("mltrack.usage.counted") is True]
        return [s for s in spans if trace_id is None or s.context.trace_id == trace_id]

    def assert_ledger(self, expected_usages: list[tuple[str, str, Usage]]) -> None:
        """Per trace: root cumulative == sum of counted costs; overall == the SDK's usage priced independently."""
        pricer = Pricer()
        total = 0.0
        for root in self.roots():
            counted = self.counted(root.context.trace_id)
            if not counted:
                assert root.attributes.get("llm.cost.cumulative") is None
                continue
            subtotal = sum(s.attributes["llm.cost.total"] for s in counted)
            assert math.isclose(root.attributes["llm.cost.cumulative"], subtotal, rel_tol=1e-9)
            total += subtotal
        expected = sum(float(pricer.price(p, m, u).total) for p, m, u in expected_usages)
        assert len(self.counted()) == len(expected_usages)
        assert math.isclose(total, expected, rel_tol=1e-9), (total, expected)


@pytest.fixture
def otel(isolated_env, caplog):
    config.set_current(config.load_settings(env={}))
    guard.reset()
    caplog.set_level(logging.DEBUG)
    state = Otel()
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=state.provider)
    yield state
    instrumentor.uninstrument()
    config.set_current(None)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "Failed to detach context" in m], messages
    assert not [m for m in messages if "tracking failed in langchain" in m], messages
    assert lc._PATCH.handler is None or not lc._PATCH.handler.runs  # no run left open


@pytest.fixture(params=["provider-on", "provider-off"])
def sdk_on(request, otel):
    """Whether the OpenAI/Anthropic SDK instrumentors are on (their spans nest under LangChain's)."""
    on = request.param == "provider-on"
    active = []
    if on:
        for name in ("openai", "anthropic"):
            cls = _sdk_instrumentor(name)
            if cls is None:
                pytest.skip(f"mltrack_otel.instrumentation.{name} not available yet")
            cls().instrument(tracer_provider=otel.provider)
            active.append(cls)
    yield on
    for cls in active:
        cls().uninstrument()


@pytest.fixture
async def chat(fake):
    """ChatOpenAI against the fake server. Async so the per-test async httpx client is closed on its own loop
    (langchain-openai otherwise caches one async client per process, and tests run each on a new event loop)."""
    clients: list[httpx.AsyncClient] = []

    def make(**kwargs):
        kwargs.setdefault("model", MODEL)
        clients.append(httpx.AsyncClient())
        kwargs.setdefault("http_async_client", clients[-1])
        return ChatOpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0, **kwargs)

    yield make
    for client in clients:
        await client.aclose()


def _usage(message) -> Usage:
    meta = message.usage_metadata
    details = meta.get("input_token_details") or {}
    return Usage(
        meta["input_tokens"],
        meta["output_tokens"],
        details.get("cache_read") or 0,
        details.get("cache_creation") or 0,
    )


def _assert_model_call(otel: Otel, sdk_on: bool, chat_span, n_sdk: int = 1) -> None:
    """The chat span and, when the provider instrumentor is on, the SDK span(s) under it, with the counted flags."""
    assert chat_span.kind is SpanKind.CLIENT
    assert chat_span.attributes["gen_ai.operation.name"] == "chat"
    assert chat_span.attributes["gen_ai.provider.name"] == "openai"
    children = [s for s in otel.sdk() if otel.parent_of(s) is chat_span]
    if sdk_on:
        assert len(children) == n_sdk
        assert all(s.attributes["mltrack.usage.counted"] is True for s in children)
        if "gen_ai.usage.input_tokens" in chat_span.attributes:
            assert chat_span.attributes["mltrack.usage.counted"] is False
    else:
        assert children == []
        assert chat_span.attributes["mltrack.usage.counted"] is True


# --- chat models ------------------------------------------------------------------------------------------------


def test_invoke(otel, sdk_on, chat):
    result = chat(temperature=0.5, max_tokens=200).invoke("hello there")

    assert len(otel.spans) == (2 if sdk_on else 1)
    (span,) = otel.ours()
    assert span.name == f"chat {MODEL}"
    assert span.parent is None
    attrs = span.attributes
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.response.model"] == SNAPSHOT
    assert attrs["gen_ai.response.id"].startswith("chatcmpl-")
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.request.max_tokens"] == 200
    assert attrs["gen_ai.usage.input_tokens"] == result.usage_metadata["input_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == result.usage_metadata["output_tokens"]
    assert '"hello there"' in attrs["gen_ai.input.messages"]
    assert '"role":"assistant"' in attrs["gen_ai.output.messages"]
    _assert_model_call(otel, sdk_on, span)
    otel.assert_ledger([("openai", SNAPSHOT, _usage(result))])


def test_stream(otel, sdk_on, chat):
    chunks = list(chat(stream_usage=True).stream("hello stream"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk

    assert "".join(c.content for c in chunks).startswith("Echo: hello stream")
    (span,) = otel.ours()
    assert span.parent is None
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["mltrack.stream.complete"] is True
    assert span.attributes["gen_ai.response.time_to_first_chunk"] >= 0
    assert len(otel.spans) == (2 if sdk_on else 1)
    _assert_model_call(otel, sdk_on, span)
    otel.assert_ledger([("openai", SNAPSHOT, _usage(merged))])


async def test_ainvoke(otel, sdk_on, chat):
    result = await chat().ainvoke("hello async")

    (span,) = otel.ours()
    assert len(otel.spans) == (2 if sdk_on else 1)
    _assert_model_call(otel, sdk_on, span)
    otel.assert_ledger([("openai", SNAPSHOT, _usage(result))])
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing of ours left current in the caller


async def test_astream(otel, sdk_on, chat):
    chunks = [c async for c in chat(stream_usage=True).astream("hello astream")]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk

    (span,) = otel.ours()
    assert span.attributes["mltrack.stream.complete"] is True
    _assert_model_call(otel, sdk_on, span)
    otel.assert_ledger([("openai", SNAPSHOT, _usage(merged))])
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_abatch_chain_concurrent(otel, sdk_on, chat):
    """Concurrent runs of one chain: every SDK span under its own chat span, every chat span under its own chain."""
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | chat()
    questions = [f"question number {i}" for i in range(6)]
    results = await chain.abatch([{"q": q} for q in questions])

    sequences = [s for s in otel.ours() if s.name == "RunnableSequence"]
    chats = [s for s in otel.ours() if s.name.startswith("chat ")]
    assert len(sequences) == len(chats) == 6
    assert len(otel.spans) == 6 * (4 if sdk_on else 3)  # sequence, prompt, chat (+ SDK)
    for span in chats:
        parent = otel.parent_of(span)
        assert parent.name == "RunnableSequence"
        assert parent.context.trace_id == span.context.trace_id
        _assert_model_call(otel, sdk_on, span)
    assert len({s.context.trace_id for s in sequences}) == 6
    otel.assert_ledger([("openai", SNAPSHOT, _usage(r)) for r in results])


def test_batch_and_threads(otel, sdk_on, chat):
    """Runnable.batch (LangChain's thread pool) and user threads under one OTel parent span."""
    model = chat()
    tracer = otel.provider.get_tracer("test")
    with tracer.start_as_current_span("app") as app:
        results = model.batch(["one", "two", "three"])
        with ThreadPoolExecutor(4) as pool:
            results += list(pool.map(model.invoke, ["four", "five", "six"]))  # threads do not inherit the context

    chats = [s for s in otel.ours() if s.name.startswith("chat ")]
    assert len(chats) == 6
    in_app = [s for s in chats if s.parent is not None and s.parent.span_id == app.get_span_context().span_id]
    assert len(in_app) == 3  # batch copies the caller's context into its threads; bare threads start new traces
    for span in chats:
        _assert_model_call(otel, sdk_on, span)
    otel.assert_ledger([("openai", SNAPSHOT, _usage(r)) for r in results])


def test_stream_abandoned(otel, sdk_on, chat):
    stream = chat().stream("hello [[scenario:long]]")
    first = next(stream)
    assert first is not None
    assert trace.get_current_span() is trace.INVALID_SPAN  # not current while the caller holds a chunk
    stream.close()

    (span,) = otel.ours()
    assert span.attributes["mltrack.stream.complete"] is False
    assert span.status.status_code is not StatusCode.ERROR
    if sdk_on:
        (sdk,) = otel.sdk()
        assert otel.parent_of(sdk) is span


async def test_streamed_text_completion_held_to_budget(otel, sdk_on, fake):
    """A text-completion LLM's stream/astream (BaseLLM: its run manager reaches the provider's _stream) is refused
    before it is sent when its worst case does not fit the agent's budget, and held while it streams when it does."""
    from langchain_openai import OpenAI

    import mltrack_otel
    from mltrack_otel import ledger

    client = httpx.AsyncClient()
    llm = OpenAI(
        model="gpt-3.5-turbo-instruct",
        base_url=fake.openai_base_url,
        api_key="t",
        max_retries=0,
        max_tokens=20,
        http_async_client=client,
    )
    fake.clear()
    with mltrack_otel.agent("writer", token_limit=10), pytest.raises(mltrack_otel.BudgetExceededError):
        list(llm.stream("hi there"))
    with mltrack_otel.agent("writer", token_limit=10), pytest.raises(mltrack_otel.BudgetExceededError):
        [c async for c in llm.astream("hi there")]
    assert fake.requests == []
    with mltrack_otel.agent("writer", token_limit=1000):
        held = []
        async for _chunk in llm.astream("hi there"):
            held.append(ledger.LEDGER.held()[0])
    assert held[0] > 0 and ledger.LEDGER.held() == (0, 0) and len(fake.requests) == 1
    refused = [s for s in otel.ours() if s.attributes.get("error.type") == "mltrack_otel.BudgetExceededError"]
    assert len(refused) == 2 and all(s.name == "text_completion gpt-3.5-turbo-instruct" for s in refused)
    await client.aclose()


def test_provider_error(otel, sdk_on, chat):
    import openai

    with pytest.raises(openai.BadRequestError):
        chat().invoke("bad [[scenario:error-400]]")

    (span,) = otel.ours()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "invalid_request_error"
    assert span.attributes["http.response.status_code"] == 400
    assert "gen_ai.usage.input_tokens" not in span.attributes
    if sdk_on:
        (sdk,) = otel.sdk()
        assert otel.parent_of(sdk) is span
        assert sdk.status.status_code is StatusCode.ERROR
    assert otel.counted() == []


def test_anthropic(otel, sdk_on, fake):
    langchain_anthropic = pytest.importorskip("langchain_anthropic")
    model = langchain_anthropic.ChatAnthropic(
        model="claude-3-5-haiku-latest", base_url=fake.anthropic_base_url, api_key="test", max_retries=0
    )
    result = model.invoke([("system", "be brief"), ("user", "hello claude")])

    (span,) = otel.ours()
    assert span.attributes["gen_ai.provider.name"] == "anthropic"
    assert span.attributes["gen_ai.response.model"] == "claude-3-5-haiku-20241022"
    assert span.attributes["gen_ai.response.id"].startswith("msg_")
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert '"role":"system"' in span.attributes["gen_ai.input.messages"]
    children = [s for s in otel.sdk() if otel.parent_of(s) is span]
    assert len(children) == (1 if sdk_on else 0)
    otel.assert_ledger([("anthropic", "claude-3-5-haiku-20241022", _usage(result))])


# --- tools, agents, retrievers --------------------------------------------------------------------------------


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}, span {trace.get_current_span().get_span_context().span_id}"


def test_tool_calling_loop(otel, sdk_on, chat):
    """A bind_tools loop by hand: model -> tool -> model; the tool's code runs with execute_tool current."""
    model = chat().bind_tools([get_weather])
    messages = [HumanMessage("weather in Paris? [[scenario:tool]]")]
    first = model.invoke(messages)
    (call,) = first.tool_calls
    tool_message = get_weather.invoke(call)
    assert isinstance(tool_message, ToolMessage)
    second = model.invoke([*messages, first, tool_message])

    tool_span = next(s for s in otel.ours() if s.name == "execute_tool get_weather")
    assert tool_span.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool_span.attributes["gen_ai.tool.name"] == "get_weather"
    assert tool_span.attributes["gen_ai.tool.call.id"] == call["id"]
    assert '"city"' in tool_span.attributes["gen_ai.tool.call.arguments"]
    assert tool_span.attributes["gen_ai.tool.call.result"].startswith("sunny in")
    assert str(tool_span.context.span_id) in tool_message.content  # the tool body saw its span as current
    chats = [s for s in otel.ours() if s.name.startswith("chat ")]
    assert len(chats) == 2
    assert chats[0].attributes["gen_ai.response.finish_reasons"] == ("tool_call",)
    assert '"get_weather"' in chats[0].attributes["gen_ai.tool.definitions"]
    assert '"tool_call_response"' in chats[1].attributes["gen_ai.input.messages"]
    for span in chats:
        _assert_model_call(otel, sdk_on, span)
    assert len(otel.spans) == 3 + (2 if sdk_on else 0)
    otel.assert_ledger([("openai", SNAPSHOT, _usage(first)), ("openai", SNAPSHOT, _usage(second))])


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_langgraph_react_agent(otel, sdk_on, chat):
    prebuilt = pytest.importorskip("langgraph.prebuilt")
    agent = prebuilt.create_react_agent(chat(), [get_weather])
    out = agent.invoke({"messages": [("user", "weather in Paris? [[scenario:tool]]")]})
    answers = [m for m in out["messages"] if m.type == "ai"]
    assert len(answers) == 2

    (root,) = otel.roots()
    assert root.name == "invoke_agent LangGraph"
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "LangGraph"
    assert len([s for s in otel.spans if s.attributes.get("gen_ai.operation.name") == "invoke_agent"]) == 1
    chats = [s for s in otel.ours() if s.name.startswith("chat ")]
    tools = [s for s in otel.ours() if s.name == "execute_tool get_weather"]
    assert len(chats) == 2 and len(tools) == 1
    nodes = {s.name for s in otel.ours() if otel.parent_of(s) is root}
    assert {"agent", "tools"} <= nodes
    for span in [*chats, *tools]:  # every span is in the agent's tree
        node = span
        while node.parent is not None:
            node = otel.parent_of(node)
        assert node is root
    for span in chats:
        _assert_model_call(otel, sdk_on, span)
    assert len(otel.sdk()) == (2 if sdk_on else 0)
    otel.assert_ledger([("openai", SNAPSHOT, _usage(m)) for m in answers])


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
async def test_langgraph_react_agent_async(otel, sdk_on, chat):
    prebuilt = pytest.importorskip("langgraph.prebuilt")
    agent = prebuilt.create_react_agent(chat(), [get_weather])
    outs = await asyncio.gather(
        *(agent.ainvoke({"messages": [("user", f"weather {i}? [[scenario:tool]]")]}) for i in range(3))
    )

    roots = otel.roots()
    assert len(roots) == 3 and all(r.name == "invoke_agent LangGraph" for r in roots)
    for span in [s for s in otel.ours() if s.name.startswith("chat ")]:
        _assert_model_call(otel, sdk_on, span)
    otel.assert_ledger([("openai", SNAPSHOT, _usage(m)) for out in outs for m in out["messages"] if m.type == "ai"])


class TinyRetriever(BaseRetriever):
    docs: list[str]

    def _get_relevant_documents(self, query: str, *, run_manager=None) -> list[Document]:
        words = set(query.lower().split())
        return [Document(d, id=str(i)) for i, d in enumerate(self.docs) if words & set(d.lower().split())]


def test_retriever_chain(otel, sdk_on, chat):
    retriever = TinyRetriever(docs=["paris is sunny", "rome is rainy", "paris has museums"])
    prompt = ChatPromptTemplate.from_messages([("user", "{context} -- {question}")])

    def fmt(question: str) -> dict:
        docs = retriever.invoke(question)
        return {"context": " ".join(d.page_content for d in docs), "question": question}

    chain = fmt | prompt | chat()
    result = chain.invoke("what about paris")

    (retrieval,) = [s for s in otel.ours() if s.name == "retrieval TinyRetriever"]
    assert retrieval.attributes["gen_ai.operation.name"] == "retrieval"
    assert retrieval.attributes["gen_ai.retrieval.query.text"] == "what about paris"
    assert '"paris is sunny"' in retrieval.attributes["gen_ai.retrieval.documents"]
    assert otel.parent_of(retrieval).name == "fmt"
    (root,) = otel.roots()
    assert root.name == "RunnableSequence"
    (span,) = [s for s in otel.ours() if s.name.startswith("chat ")]
    assert otel.parent_of(span) is root
    _assert_model_call(otel, sdk_on, span)
    otel.assert_ledger([("openai", SNAPSHOT, _usage(result))])


# --- configuration, lifecycle ------------------------------------------------------------------------------


def test_content_capture_off(otel, chat):
    config.set_current(config.load_settings(env={}, llm_log_prompts=False, llm_log_responses=False))
    chat().invoke("secret prompt")
    get_weather.invoke({"city": "secret"})

    for span in otel.ours():
        text = repr(dict(span.attributes))
        assert "secret" not in text
    (span,) = [s for s in otel.ours() if s.name.startswith("chat ")]
    assert "gen_ai.usage.input_tokens" in span.attributes


def test_tracking_disabled(otel, chat):
    config.set_current(config.load_settings(env={}, llm_tracking_enabled=False))
    chat().invoke("hello")
    assert otel.ours() == []


def test_suppressed_instrumentation(otel, chat):
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        assert chat().invoke("hello").content
    assert otel.ours() == []


def test_parent_ends_before_child(otel):
    """A child whose end never comes (abandoned stream, lost callback) is ended when its parent ends."""
    import uuid

    handler = lc._PATCH.handler
    root, child = uuid.uuid4(), uuid.uuid4()
    handler.on_chain_start({}, {}, run_id=root, name="outer")
    handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=child, parent_run_id=root, invocation_params={})
    handler.on_chain_end({}, run_id=root)

    spans = {s.name: s for s in otel.ours()}
    assert spans["chat"].attributes["mltrack.stream.complete"] is False
    assert otel.parent_of(spans["chat"]) is spans["outer"]
    assert not handler.runs


def test_global_registration_and_uninstrument(otel, chat):
    handler = lc.current_handler()
    manager = CallbackManager.configure()
    assert handler in manager.handlers and handler in manager.inheritable_handlers
    assert handler in manager.copy().handlers
    assert manager.handlers.count(handler) == 1
    assert isinstance(handler, langchain_core.callbacks.BaseCallbackHandler)

    LangChainInstrumentor().uninstrument()
    assert BaseCallbackManager.__dict__["__init__"] is ORIGINAL_INIT
    assert BaseChatModel.__dict__["_generate_with_cache"] is ORIGINAL_GENERATE
    assert BaseTool.__dict__["run"].__qualname__ == "BaseTool.run"
    assert handler not in CallbackManager.configure().handlers
    chat().invoke("after uninstrument")
    get_weather.invoke({"city": "x"})
    assert otel.ours() == []

    LangChainInstrumentor().instrument(tracer_provider=otel.provider)  # and back on
    chat().invoke("again")
    assert len(otel.ours()) == 1


def test_handler_failure_never_breaks_the_call(otel, chat, monkeypatch, caplog):
    def boom(*args, **kwargs):
        raise RuntimeError("bug in tracking")

    monkeypatch.setattr(lc, "message_json", boom)
    result = chat().invoke("still works")

    assert result.content.startswith("Echo: still works")
    assert guard.health().get("errors.langchain.on_chat_model_start") == 1
    assert "tracking failed in langchain.on_chat_model_start" in caplog.text
    caplog.clear()  # the fixture fails on logged tracking errors; this one was expected


def test_instrument_imports_nothing():
    code = (
        "import sys\n"
        "from mltrack_otel.instrumentation.langchain import LangChainInstrumentor\n"
        "LangChainInstrumentor().instrument()\n"
        "assert 'langchain_core' not in sys.modules, 'imported langchain_core'\n"
        "import langchain_core.callbacks\n"
        "from langchain_core.callbacks import CallbackManager\n"
        "from mltrack_otel.instrumentation.langchain import current_handler\n"
        "assert current_handler() in CallbackManager.configure().handlers\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_threads_do_not_cross(otel, chat):
    """Many threads invoking chains at once: every chat span's parent is its own thread's chain."""
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | chat()
    barrier = threading.Barrier(8)

    def run(i: int):
        barrier.wait()
        return chain.invoke({"q": f"thread {i}"})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, range(8)))

    chats = [s for s in otel.ours() if s.name.startswith("chat ")]
    assert len(chats) == 8
    for span in chats:
        parent = otel.parent_of(span)
        assert parent.name == "RunnableSequence"
        assert parent.context.trace_id == span.context.trace_id
    assert len({s.context.trace_id for s in chats}) == 8


async def test_astream_abandoned(otel, sdk_on, chat):
    stream = chat().astream("hello [[scenario:long]]")
    async for _chunk in stream:
        break
    await stream.aclose()

    (span,) = otel.ours()
    assert span.attributes["mltrack.stream.complete"] is False
    assert span.status.status_code is not StatusCode.ERROR
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
async def test_langgraph_astream_messages(otel, sdk_on, chat):
    """LangGraph streaming model tokens (stream_mode="messages") from tasks it schedules itself."""
    prebuilt = pytest.importorskip("langgraph.prebuilt")
    agent = prebuilt.create_react_agent(chat(stream_usage=True), [get_weather])
    tokens = [
        chunk
        async for chunk, _meta in agent.astream(
            {"messages": [("user", "weather in Rome? [[scenario:tool]]")]}, stream_mode="messages"
        )
    ]
    assert tokens

    (root,) = otel.roots()
    assert root.name == "invoke_agent LangGraph"
    chats = [s for s in otel.ours() if s.name.startswith("chat ")]
    assert len(chats) == 2
    for span in chats:
        assert span.context.trace_id == root.context.trace_id
        _assert_model_call(otel, sdk_on, span)
    assert len(otel.counted()) == 2
    (counted_root_total,) = {root.attributes["llm.cost.cumulative"]}
    assert math.isclose(counted_root_total, sum(s.attributes["llm.cost.total"] for s in otel.counted()))


def test_chat_span_is_a_call_span(otel, chat):
    """A chat span is made by _base.Call, like every SDK's: the OpenInference mirror, llm.latency, usage and
    content come from the same code (before, LangChain's chat spans had no OpenInference attributes)."""
    config.set_current(config.load_settings(env={}, openinference_attributes=True))
    result = chat().invoke("hello call")

    (span,) = otel.ours()
    attrs = span.attributes
    usage = result.usage_metadata
    assert attrs["openinference.span.kind"] == "LLM"
    assert attrs["llm.model_name"] == MODEL
    assert attrs["llm.provider"] == "openai"
    assert attrs["input.value"] == attrs["gen_ai.input.messages"]
    assert attrs["input.mime_type"] == "application/json"
    assert attrs["llm.input_messages.0.message.role"] == "user"
    assert attrs["llm.input_messages.0.message.content"] == "hello call"
    assert attrs["output.value"] == attrs["gen_ai.output.messages"]
    assert attrs["llm.output_messages.0.message.role"] == "assistant"
    assert attrs["llm.output_messages.0.message.content"] == result.content
    assert attrs["llm.token_count.prompt"] == attrs["gen_ai.usage.input_tokens"] == usage["input_tokens"]
    assert attrs["llm.token_count.completion"] == attrs["gen_ai.usage.output_tokens"] == usage["output_tokens"]
    assert attrs["llm.token_count.total"] == usage["input_tokens"] + usage["output_tokens"]
    assert attrs["llm.latency"] > 0
    otel.assert_ledger([("openai", SNAPSHOT, _usage(result))])
