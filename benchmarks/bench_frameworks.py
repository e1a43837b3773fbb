"""CPU cost per framework call, without vs with mltrack-otel instrumentation (one section per framework).

    python -m benchmarks.bench_frameworks                 # every section
    python -m benchmarks.bench_frameworks llama_index     # one section

Each section is its own function registered in SECTIONS; the frameworks talk to an in-process
httpx.MockTransport serving a canned body, so the network does not blur the figure. CPU is time.process_time();
the figure is the median over rounds of (CPU of n calls) / n, in microseconds.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

ROUNDS = 7
CALLS = 200


def _cpu_per_call(fn: Callable[[], Any], n: int = CALLS, rounds: int = ROUNDS) -> float:
    """Median CPU microseconds per call of fn."""
    for _ in range(10):  # warm caches, clients, lazy imports
        fn()
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            fn()
        samples.append((time.process_time() - start) / n * 1e6)
    return statistics.median(samples)


def _memory_provider() -> Any:
    """A TracerProvider with the CostSpanProcessor over an in-memory exporter (what the tests use)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import mltrack_otel
    from mltrack_otel.ledger import Ledger

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    pricer = mltrack_otel.Pricer(cloud_hosts=["127.0.0.1"])  # the loopback fake stands for the cloud APIs
    provider.add_span_processor(
        mltrack_otel.CostSpanProcessor(SimpleSpanProcessor(exporter), ledger=Ledger(), pricer=pricer)
    )
    return provider, exporter


def _report(section: str, figures: dict[str, float]) -> None:
    base = figures.get("raw")
    for mode, micros in figures.items():
        extra = f"  (+{micros - base:.0f} us)" if base is not None and mode != "raw" else ""
        print(f"{section:<14} {mode:<28} {micros:8.0f} us/call{extra}")


def _openai_chat_transport() -> Any:
    """An in-process httpx.MockTransport answering every chat completion with one canned body (30 output words)."""
    import json

    import httpx

    text = " ".join(f"word{i}" for i in range(30))
    body = json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 25, "completion_tokens": 30, "total_tokens": 55},
        }
    ).encode()
    return httpx.MockTransport(
        lambda request: httpx.Response(200, content=body, headers={"content-type": "application/json"})
    )


def _measure(
    section: str, call: Callable[[], Any], outer: type, inner: type, inner_label: str, n: int = CALLS
) -> dict[str, float]:
    """CPU per call raw, with the section's instrumentor, then with the inner library's one too; reported."""
    figures = {"raw": _cpu_per_call(call, n=n)}
    provider, exporter = _memory_provider()
    outer().instrument(tracer_provider=provider)
    try:
        figures[section] = _cpu_per_call(lambda: (call(), exporter.clear()), n=n)
        inner().instrument(tracer_provider=provider)
        try:
            figures[f"{section} + {inner_label}"] = _cpu_per_call(lambda: (call(), exporter.clear()), n=n)
        finally:
            inner().uninstrument()
    finally:
        outer().uninstrument()
    _report(section, figures)
    return figures


# --- LlamaIndex --------------------------------------------------------------------------------------------------


def bench_llama_index() -> dict[str, float]:
    """llama_index.llms.openai.OpenAI.chat: raw, with the LlamaIndex instrumentor, and with the OpenAI SDK one too."""
    import httpx
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    from mltrack_otel.instrumentation.llama_index import LlamaIndexInstrumentor
    from mltrack_otel.instrumentation.openai import OpenAIInstrumentor

    llm = OpenAI(
        model="gpt-4o-mini",
        api_key="bench",
        api_base="http://127.0.0.1:9/v1",
        max_retries=0,
        http_client=httpx.Client(transport=_openai_chat_transport()),
    )
    messages = [
        ChatMessage(role="system", content="You are a terse assistant."),
        ChatMessage(role="user", content="Tell me about OpenTelemetry spans in three sentences."),
    ]

    def call() -> None:
        llm.chat(messages)

    return _measure("llama_index", call, LlamaIndexInstrumentor, OpenAIInstrumentor, "openai sdk")


# --- LangChain ---------------------------------------------------------------------------------------------------


def bench_langchain() -> dict[str, float]:
    """langchain_openai.ChatOpenAI.invoke: raw, with the LangChain instrumentor, and with the OpenAI SDK one too."""
    import httpx
    from langchain_openai import ChatOpenAI

    from mltrack_otel.instrumentation.langchain import LangChainInstrumentor
    from mltrack_otel.instrumentation.openai import OpenAIInstrumentor

    model = ChatOpenAI(
        model="gpt-4o-mini",
        api_key="bench",
        base_url="http://127.0.0.1:9/v1",
        max_retries=0,
        http_client=httpx.Client(transport=_openai_chat_transport()),
    )
    messages = [
        ("system", "You are a terse assistant."),
        ("user", "Tell me about OpenTelemetry spans in three sentences."),
    ]

    def call() -> None:
        model.invoke(messages)

    return _measure("langchain", call, LangChainInstrumentor, OpenAIInstrumentor, "openai sdk")


# --- LiteLLM -----------------------------------------------------------------------------------------------------


def bench_litellm() -> dict[str, float]:
    """litellm.completion (openai/gpt-4o-mini): raw, with the LiteLLM instrumentor, and with the OpenAI SDK one too.

    In process: LiteLLM takes the caller's OpenAI client (client=...), whose httpx client has a MockTransport.
    """
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import httpx
    import litellm
    import openai

    from mltrack_otel.instrumentation.litellm import LiteLLMInstrumentor
    from mltrack_otel.instrumentation.openai import OpenAIInstrumentor

    client = openai.OpenAI(
        api_key="bench",
        base_url="http://127.0.0.1:9/v1",
        max_retries=0,
        http_client=httpx.Client(transport=_openai_chat_transport()),
    )
    messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Tell me about OpenTelemetry spans in three sentences."},
    ]

    def call() -> None:
        litellm.completion(model="openai/gpt-4o-mini", messages=messages, client=client, num_retries=0)

    return _measure("litellm", call, LiteLLMInstrumentor, OpenAIInstrumentor, "openai sdk")


# --- DSPy --------------------------------------------------------------------------------------------------------


def bench_dspy() -> dict[str, float]:
    """dspy.Predict("question -> answer") on dspy.LM(engine="litellm"): raw, with the DSPy instrumentor, and with
    the LiteLLM one too.

    Loopback, not in process: DSPy builds its own LiteLLM call and takes no client object, so the LM talks to the
    fake provider server on 127.0.0.1 (its HTTP round trip is in the figure, equally in every mode).
    """
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy

    from mltrack_otel.instrumentation.dspy import DSPyInstrumentor
    from mltrack_otel.instrumentation.litellm import LiteLLMInstrumentor
    from mltrack_otel.testing.fake_provider import FakeProvider

    with FakeProvider() as fake:
        lm = dspy.LM(
            "openai/gpt-4o-mini", api_base=fake.openai_base_url, api_key="bench", cache=False, engine="litellm"
        )
        predict = dspy.Predict("question -> answer")

        def call() -> None:
            with dspy.context(lm=lm):
                predict(question="Tell me about OpenTelemetry spans.")
            fake.requests.clear()
            lm.history.clear()

        return _measure("dspy", call, DSPyInstrumentor, LiteLLMInstrumentor, "litellm", n=50)


# --- registry (each framework appends its own line) ----------------------------------------------------------------

SECTIONS: dict[str, Callable[[], dict[str, float]]] = {
    "llama_index": bench_llama_index,
    "langchain": bench_langchain,
    "litellm": bench_litellm,
    "dspy": bench_dspy,
}


def main(argv: list[str] | None = None) -> None:
    names = (argv if argv is not None else sys.argv[1:]) or list(SECTIONS)
    for name in names:
        SECTIONS[name]()


if __name__ == "__main__":
    main()
