"""One benchmark variant in its own process, driven by benchmarks.overhead over stdin/stdout.

    python -m benchmarks._overhead_worker --op openai_chat --variant mltrack --transport inproc --bodies FILE

Sets the variant up once (a TracerProvider with SimpleSpanProcessor(InMemorySpanExporter) for every variant; ours
has CostSpanProcessor in front of it), warms up, prints one ``ready`` JSON line, then answers commands, one per line:

    run N       N calls; replies {"cpu": s, "wall": s, "spans": n} (CPU = time.process_time(), whole process)
    profile N   N calls under cProfile; replies {"text": top functions}
    quit

Every reply is one JSON line on the original stdout; everything the libraries print goes to stderr. After each
slice the span count must be exactly N x the spans-per-call seen in the warm-up, or the worker fails.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import io
import json
import os
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

# The floor under any instrumentation of these SDKs: one bare SDK span per call, as many attributes as ours, no
# content normalisation, no pricing (streams: the span ends when the request returns, so no per-chunk work).
FLOOR = "sdk-span"
FLOOR_ON = True
PROVIDER: Any = None  # the variant's TracerProvider, set by setup_variant

OPS = (
    "openai_chat",
    "openai_stream",
    "anthropic_chat",
    "anthropic_stream",
    "openai_embeddings",
    "langchain_chat",
    # The SDKs of issue 13: a plain call and a stream each.
    "gemini_chat",
    "gemini_stream",
    "bedrock_chat",
    "bedrock_stream",
    "mistral_chat",
    "mistral_stream",
    "cohere_chat",
    "cohere_stream",
    "ollama_chat",
    "ollama_stream",
    "groq_chat",
    "groq_stream",
)
# The operations the default runs measure (benchmarks.overhead, bench_toggle): every one.
PROVIDER_OPS = OPS[6:]

SYSTEM = "You are a concise assistant."
QUESTION = "Explain in one paragraph why the sky is blue, for a curious ten-year-old."
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
EMBEDDING_MODEL = "text-embedding-3-small"
GEMINI_MODEL = "gemini-2.5-flash"
BEDROCK_MODEL = "amazon.nova-lite-v1:0"
MISTRAL_MODEL = "mistral-small-latest"
COHERE_MODEL = "command-r-08-2024"
OLLAMA_MODEL = "llama3.2"
GROQ_MODEL = "llama-3.1-8b-instant"
API_KEY = "sk-bench-not-a-key"

# Attribute keys that mean "this span carries message content", per instrumentation family.
CONTENT_KEYS = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt",
    "gen_ai.completion",
    "llm.input_messages",
    "llm.output_messages",
    "input.value",
    "output.value",
)
USAGE_KEYS = ("usage", "token_count", "llm.tokens")


def family(op: str) -> str:
    return op.split("_", 1)[0]


# mltrack_otel.instrumentation.LIBRARIES names, where they differ from the operation's family.
LIBRARY = {"gemini": "google_genai", "mistral": "mistralai"}


def our_libraries(op: str) -> list[str]:
    """What mltrack_otel.instrument() is given for the operation."""
    return ["openai", "langchain"] if op == "langchain_chat" else [LIBRARY.get(family(op), family(op))]


# --- clients --------------------------------------------------------------------------------------------


def _canned(bodies: dict[str, Any], op: str) -> tuple[bytes, dict[str, str]]:
    canned = bodies[op]
    return base64.b64decode(canned["body"]), canned.get("headers") or {"content-type": canned["content_type"]}


def _mock_transport(bodies: dict[str, Any], op: str, library: str = "httpx2") -> Any:
    """An in-process transport of `library` (httpx2 for openai 3.x, anthropic 2.x and mistralai; httpx for the
    others) answering every request with the operation's canned response."""
    import importlib

    httpx = importlib.import_module(library)
    content, headers = _canned(bodies, op)

    def handler(request: Any) -> Any:
        request.read()
        return httpx.Response(200, headers=headers, content=content)

    return httpx.MockTransport(handler)


def _mock_http_client(bodies: dict[str, Any], op: str, library: str = "httpx2") -> Any:
    import importlib

    return importlib.import_module(library).Client(transport=_mock_transport(bodies, op, library))


class _CannedRaw:
    """The raw body botocore reads from its HTTP layer (urllib3's response): stream(), read(), close()."""

    def __init__(self, content: bytes) -> None:
        self._content, self._at = content, 0

    def stream(self, amt: int = 1024, decode_content: bool | None = None) -> Any:
        while self._at < len(self._content):
            yield self.read(amt)

    def read(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
        end = len(self._content) if amt is None else self._at + amt
        out, self._at = self._content[self._at : end], min(end, len(self._content))
        return out

    def close(self) -> None:
        pass


def _canned_botocore(client: Any, bodies: dict[str, Any], op: str) -> None:
    """Answer the client's requests in process: botocore's `before-send` event, the hook its HTTP layer offers for
    exactly this, returns the canned response in place of sending; serialising, signing, the event stream decoder
    and parsing run as they do against AWS (botocore.stub.Stubber would skip them)."""
    from botocore.awsrequest import AWSResponse

    content, headers = _canned(bodies, op)

    def before_send(request: Any, **_kwargs: Any) -> Any:
        return AWSResponse(request.url, 200, headers, _CannedRaw(content))

    client.meta.events.register("before-send.bedrock-runtime", before_send)


def _drain(stream: Any) -> int:
    n = 0
    for _item in stream:
        n += 1
    return n


def _provider_call(op: str, url: str, bodies: dict[str, Any] | None) -> Callable[[], Any]:
    """The issue-13 SDKs: google-genai, boto3 (bedrock-runtime), mistralai, cohere (ClientV2), ollama and groq."""
    fam = family(op)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    if fam == "gemini":
        from google import genai
        from google.genai import types

        client_args = {"transport": _mock_transport(bodies, op, "httpx2")} if bodies is not None else None
        client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=url, client_args=client_args))
        config = types.GenerateContentConfig(system_instruction=SYSTEM, max_output_tokens=200)
        if op == "gemini_chat":
            return lambda: client.models.generate_content(model=GEMINI_MODEL, contents=QUESTION, config=config)
        return lambda: _drain(
            client.models.generate_content_stream(model=GEMINI_MODEL, contents=QUESTION, config=config)
        )
    if fam == "bedrock":
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "bedrock-runtime",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(retries={"total_max_attempts": 1}),
        )
        if bodies is not None:
            _canned_botocore(client, bodies, op)
        converse = {
            "modelId": BEDROCK_MODEL,
            "system": [{"text": SYSTEM}],
            "messages": [{"role": "user", "content": [{"text": QUESTION}]}],
            "inferenceConfig": {"maxTokens": 200},
        }
        if op == "bedrock_chat":
            return lambda: client.converse(**converse)
        return lambda: _drain(client.converse_stream(**converse)["stream"])
    if fam == "mistral":
        from mistralai.client import Mistral

        http = _mock_http_client(bodies, op, "httpx2") if bodies is not None else None
        client = Mistral(api_key=API_KEY, server_url=url, client=http)
        if op == "mistral_chat":
            return lambda: client.chat.complete(model=MISTRAL_MODEL, messages=messages, max_tokens=200)

        def mistral_stream() -> int:
            with client.chat.stream(model=MISTRAL_MODEL, messages=messages, max_tokens=200) as stream:
                return _drain(stream)

        return mistral_stream
    if fam == "cohere":
        import cohere

        http = _mock_http_client(bodies, op, "httpx") if bodies is not None else None
        client = cohere.ClientV2(api_key=API_KEY, base_url=url, httpx_client=http)
        if op == "cohere_chat":
            return lambda: client.chat(model=COHERE_MODEL, messages=messages, max_tokens=200)
        return lambda: _drain(client.chat_stream(model=COHERE_MODEL, messages=messages, max_tokens=200))
    if fam == "ollama":
        import ollama

        extra = {"transport": _mock_transport(bodies, op, "httpx")} if bodies is not None else {}
        client = ollama.Client(host=url, **extra)
        options = {"num_predict": 200}
        if op == "ollama_chat":
            return lambda: client.chat(model=OLLAMA_MODEL, messages=messages, options=options, stream=False)
        return lambda: _drain(client.chat(model=OLLAMA_MODEL, messages=messages, options=options, stream=True))
    if fam == "groq":
        import groq

        http = _mock_http_client(bodies, op, "httpx") if bodies is not None else None
        client = groq.Groq(api_key=API_KEY, base_url=url, max_retries=0, http_client=http)
        if op == "groq_chat":
            return lambda: client.chat.completions.create(model=GROQ_MODEL, messages=messages, max_tokens=200)
        return lambda: _drain(
            client.chat.completions.create(model=GROQ_MODEL, messages=messages, max_tokens=200, stream=True)
        )
    raise ValueError(f"unknown op {op}")


def make_call(op: str, transport: str, base_url: str | None, bodies: dict[str, Any] | None) -> Callable[[], Any]:
    """A zero-argument function doing one complete operation (a stream is read to the end)."""
    url = "http://bench.invalid" if transport == "inproc" else base_url
    if op in PROVIDER_OPS:
        return _provider_call(op, url, bodies if transport == "inproc" else None)
    http_client = _mock_http_client(bodies, op) if transport == "inproc" else None
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    if family(op) == "openai":
        import openai

        client = openai.OpenAI(api_key=API_KEY, base_url=url + "/v1", max_retries=0, http_client=http_client)
        if op == "openai_chat":
            return lambda: client.chat.completions.create(model=OPENAI_MODEL, messages=messages, max_tokens=200)
        if op == "openai_stream":

            def stream() -> int:
                n = 0
                for _chunk in client.chat.completions.create(
                    model=OPENAI_MODEL,
                    messages=messages,
                    max_tokens=200,
                    stream=True,
                    stream_options={"include_usage": True},
                ):
                    n += 1
                return n

            return stream
        if op == "openai_embeddings":
            return lambda: client.embeddings.create(model=EMBEDDING_MODEL, input=QUESTION)
    if family(op) == "anthropic":
        import anthropic

        client = anthropic.Anthropic(api_key=API_KEY, base_url=url, max_retries=0, http_client=http_client)
        user = [{"role": "user", "content": QUESTION}]
        if op == "anthropic_chat":
            return lambda: client.messages.create(model=ANTHROPIC_MODEL, system=SYSTEM, messages=user, max_tokens=200)
        if op == "anthropic_stream":

            def stream() -> int:
                n = 0
                for _event in client.messages.create(
                    model=ANTHROPIC_MODEL, system=SYSTEM, messages=user, max_tokens=200, stream=True
                ):
                    n += 1
                return n

            return stream
    if op == "langchain_chat":
        from langchain_openai import ChatOpenAI

        chat = ChatOpenAI(
            model=OPENAI_MODEL,
            api_key=API_KEY,
            base_url=url + "/v1",
            max_retries=0,
            max_tokens=200,
            http_client=http_client,
        )
        lc_messages = [("system", SYSTEM), ("human", QUESTION)]
        return lambda: chat.invoke(lc_messages)
    raise ValueError(f"unknown op {op}")


# --- variants ----------------------------------------------------------------------------------------------


# The peers of the issue-13 SDKs: {family: {variant: (module, instrumentor class)}}. otel-genai is the official
# OpenTelemetry one where it exists (google-genai; botocore's bedrock-runtime extension), openllmetry is Traceloop's
# opentelemetry-instrumentation-<sdk> (google-generativeai instruments google-genai since 0.40).
PROVIDER_PEERS: dict[str, dict[str, tuple[str, str]]] = {
    "gemini": {
        "otel-genai": ("opentelemetry.instrumentation.google_genai", "GoogleGenAiSdkInstrumentor"),
        "openinference": ("openinference.instrumentation.google_genai", "GoogleGenAIInstrumentor"),
        "openllmetry": ("opentelemetry.instrumentation.google_generativeai", "GoogleGenerativeAiInstrumentor"),
    },
    "bedrock": {
        "otel-genai": ("opentelemetry.instrumentation.botocore", "BotocoreInstrumentor"),
        "openinference": ("openinference.instrumentation.bedrock", "BedrockInstrumentor"),
        "openllmetry": ("opentelemetry.instrumentation.bedrock", "BedrockInstrumentor"),
    },
    "mistral": {
        "openinference": ("openinference.instrumentation.mistralai", "MistralAIInstrumentor"),
        "openllmetry": ("opentelemetry.instrumentation.mistralai", "MistralAiInstrumentor"),
    },
    "cohere": {"openllmetry": ("opentelemetry.instrumentation.cohere", "CohereInstrumentor")},
    "ollama": {"openllmetry": ("opentelemetry.instrumentation.ollama", "OllamaInstrumentor")},
    "groq": {
        "openinference": ("openinference.instrumentation.groq", "GroqInstrumentor"),
        "openllmetry": ("opentelemetry.instrumentation.groq", "GroqInstrumentor"),
    },
}


def _peer_instrumentors(variant: str, op: str) -> list[Any]:
    fam = family(op)
    if fam in PROVIDER_PEERS:
        import importlib

        if variant not in PROVIDER_PEERS[fam]:
            raise ValueError(f"variant {variant} does not cover {op}")
        module, name = PROVIDER_PEERS[fam][variant]
        return [getattr(importlib.import_module(module), name)()]
    if variant == "otel-genai":
        if fam == "openai":
            from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

            return [OpenAIInstrumentor()]
        if fam == "anthropic":
            from opentelemetry.instrumentation.genai.anthropic import AnthropicInstrumentor

            return [AnthropicInstrumentor()]
    if variant == "otel-openai-v2" and fam == "openai":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        return [OpenAIInstrumentor()]
    if variant == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor

        if fam == "openai":
            return [OpenAIInstrumentor()]
        if fam == "anthropic":
            from openinference.instrumentation.anthropic import AnthropicInstrumentor

            return [AnthropicInstrumentor()]
        from openinference.instrumentation.langchain import LangChainInstrumentor

        return [LangChainInstrumentor(), OpenAIInstrumentor()]
    if variant == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        if fam == "openai":
            return [OpenAIInstrumentor()]
        if fam == "anthropic":
            from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

            return [AnthropicInstrumentor()]
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        return [LangchainInstrumentor(), OpenAIInstrumentor()]
    raise ValueError(f"variant {variant} does not cover {op}")


def setup_variant(variant: str, op: str) -> tuple[Any, dict[str, Any]]:
    """Instrument for the variant; returns (exporter, facts about the setup)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    global PROVIDER
    exporter = InMemorySpanExporter()
    tp = PROVIDER = TracerProvider()
    facts: dict[str, Any] = {}
    # The SDK (and LangChain) first, so an instrumentor that patches on import and one that patches now see the same.
    if family(op) == "openai":
        import openai

        facts["sdk"] = f"openai {openai.__version__}"
    elif family(op) == "anthropic":
        import anthropic

        facts["sdk"] = f"anthropic {anthropic.__version__}"
    elif family(op) in SDK_PACKAGES:
        import importlib
        from importlib import metadata

        package, module = SDK_PACKAGES[family(op)]
        importlib.import_module(module)
        facts["sdk"] = f"{package} {metadata.version(package)}"
    else:
        import langchain_core
        import openai

        facts["sdk"] = f"langchain-core {langchain_core.__version__}, openai {openai.__version__}"
    if variant == "raw":
        tp.add_span_processor(SimpleSpanProcessor(exporter))
        return exporter, facts
    if variant == FLOOR:
        tp.add_span_processor(SimpleSpanProcessor(exporter))
        targets = _bare_span_wrapper(family(op), tp.get_tracer("bench.floor"))
        facts["instrumented"] = [f"a bare SDK span around {', '.join(targets)}"]
        return exporter, facts
    if variant in ("mltrack", "mltrack-nocontent"):
        import mltrack_otel
        from mltrack_otel import config

        content = variant == "mltrack"
        config.set_current(config.Settings(llm_log_prompts=content, llm_log_responses=content))
        # The fake provider on loopback stands for the cloud APIs: measure the cloud pricing path, not the local one.
        pricer = mltrack_otel.Pricer(cloud_hosts=["127.0.0.1"])
        tp.add_span_processor(mltrack_otel.CostSpanProcessor(SimpleSpanProcessor(exporter), pricer=pricer))
        libraries = our_libraries(op)
        facts["instrumented"] = mltrack_otel.instrument(libraries, tracer_provider=tp)
        facts["version"] = mltrack_otel.__version__
        return exporter, facts
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

    conflicts = []
    for instrumentor in _peer_instrumentors(variant, op):
        conflict = get_dependency_conflicts(instrumentor.instrumentation_dependencies())
        if conflict is not None:
            conflicts.append(f"{type(instrumentor).__module__}: {conflict}")
        # skip_dep_check: a conflict is reported (facts["dependency_conflicts"]), and the span check decides.
        instrumentor.instrument(tracer_provider=tp, skip_dep_check=True)
    facts["dependency_conflicts"] = conflicts
    return exporter, facts


# Sizes like ours on a chat call: 7 attributes at start (one of them the input messages JSON), 9 at the end.
_FLOOR_START = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "server.address": "bench.invalid",
    "server.port": 80,
    "gen_ai.request.model": OPENAI_MODEL,
    "gen_ai.request.max_tokens": 200,
    "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]),
}
_FLOOR_END = {
    "gen_ai.response.id": "chatcmpl-1",
    "gen_ai.response.model": OPENAI_MODEL,
    "gen_ai.openai.response.service_tier": "default",
    "gen_ai.openai.response.system_fingerprint": "fp_1",
    "gen_ai.response.finish_reasons": ("stop",),
    "llm.latency": 0.001,
    "gen_ai.usage.input_tokens": 24,
    "gen_ai.usage.output_tokens": 30,
    "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": SYSTEM}]}]),
}


# The SDK packages and the module to import first, per issue-13 family.
SDK_PACKAGES = {
    "gemini": ("google-genai", "google.genai"),
    "bedrock": ("boto3", "boto3"),
    "mistral": ("mistralai", "mistralai.client"),
    "cohere": ("cohere", "cohere"),
    "ollama": ("ollama", "ollama"),
    "groq": ("groq", "groq"),
}
# Where the floor's bare span goes: the SDK's request choke point, or the methods our instrumentor wraps.
FLOOR_TARGETS = {
    "openai": (("openai._base_client", "SyncAPIClient.request"),),
    "anthropic": (("anthropic._base_client", "SyncAPIClient.request"),),
    "groq": (("groq._base_client", "SyncAPIClient.request"),),
    "gemini": (
        ("google.genai.models", "Models.generate_content"),
        ("google.genai.models", "Models.generate_content_stream"),
    ),
    "bedrock": (("botocore.client", "BaseClient._make_api_call"),),
    "mistral": (("mistralai.client.chat", "Chat.complete"), ("mistralai.client.chat", "Chat.stream")),
    "cohere": (("cohere.v2.client", "V2Client.chat"), ("cohere.v2.client", "V2Client.chat_stream")),
    "ollama": (("ollama._client", "Client._request"),),
}


def _bare_span_wrapper(sdk: str, tracer: Any) -> list[str]:
    """The floor variant: wrap the SDK's request choke point (or the methods our instrumentor wraps) with nothing
    but an SDK span; returns what it wrapped."""
    import importlib

    import wrapt
    from opentelemetry.trace import SpanKind

    def request(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not FLOOR_ON:  # benchmarks.bench_toggle switches it off and on
            return wrapped(*args, **kwargs)
        span = tracer.start_span("chat", kind=SpanKind.CLIENT, attributes=dict(_FLOOR_START))
        try:
            return wrapped(*args, **kwargs)
        finally:
            span.set_attributes(dict(_FLOOR_END))
            span.end()

    for module, name in FLOOR_TARGETS[sdk]:
        wrapt.wrap_function_wrapper(importlib.import_module(module), name, request)
    return [f"{module}.{name}" for module, name in FLOOR_TARGETS[sdk]]


def switch_for(variant: str, op: str) -> Callable[[bool], None]:
    """Turn the variant's instrumentation off and on again in place (benchmarks.bench_toggle).

    Ours and OTel GenAI: uninstrument() restores the SDK's own methods, instrument() wraps them again. OpenInference
    and OpenLLMetry: OTel's suppress_instrumentation() context, because OpenLLMetry's OpenAI instrumentor stacks a
    second wrapper when instrumented again; their off-slices keep a pass-through wrapper (a microsecond or two),
    which counts in their favour. The floor: its flag.
    """
    if variant == FLOOR:

        def floor(on: bool) -> None:
            global FLOOR_ON
            FLOOR_ON = on

        return floor
    if variant in ("mltrack", "mltrack-nocontent"):
        import mltrack_otel

        libraries = our_libraries(op)
        return lambda on: (
            mltrack_otel.instrument(libraries, tracer_provider=PROVIDER) if on else mltrack_otel.uninstrument(libraries)
        )
    instrumentors = _peer_instrumentors(variant, op)
    if variant in ("otel-genai", "otel-openai-v2"):

        def reinstrument(on: bool) -> None:
            for instrumentor in instrumentors:
                if on:
                    instrumentor.instrument(tracer_provider=PROVIDER, skip_dep_check=True)
                else:
                    instrumentor.uninstrument()

        return reinstrument
    from opentelemetry import context
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    suppressed: list[Any] = []

    def suppress(on: bool) -> None:
        if on and suppressed:
            context.detach(suppressed.pop())
            suppressed.pop().__exit__(None, None, None)
        elif not on and not suppressed:
            manager = suppress_instrumentation()
            manager.__enter__()
            suppressed.append(manager)
            # OpenLLMetry's Bedrock wrappers (on each client's methods) check only their own key.
            suppressed.append(context.attach(context.set_value(_SUPPRESS_LLM_KEY, True)))

    return suppress


# opentelemetry.semconv_ai.SUPPRESS_LANGUAGE_MODEL_INSTRUMENTATION_KEY (not imported: a peer's package).
_SUPPRESS_LLM_KEY = "suppress_language_model_instrumentation"


def paired_slices(
    call: Callable[[], Any], switch: Callable[[bool], None], exporter: Any, pairs: int, calls: int, label: str
) -> tuple[list[tuple[float, float]], int]:
    """([(on, off) CPU µs per call] for each pair of slices, spans per call): the variant switched on and off
    between slices of `calls` calls, alternating which half comes first, after a warm-up of 300 calls. Every
    "on" slice must export the warm-up's spans per call, every "off" slice none."""
    for _ in range(300):
        call()
    per_call = len(exporter.get_finished_spans()) // 300
    exporter.clear()
    out = []
    for i in range(pairs):
        cpu = {}
        for on in (True, False) if i % 2 else (False, True):
            switch(on)
            t = time.process_time()
            for _ in range(calls):
                call()
            cpu[on] = (time.process_time() - t) / calls * 1e6
            spans = len(exporter.get_finished_spans())
            exporter.clear()
            if spans != (per_call * calls if on else 0):
                state = "on" if on else "off"
                raise SystemExit(f"{label}: {spans} spans for {calls} calls with instrumentation {state}")
        switch(True)
        out.append((cpu[True], cpu[False]))
    return out, per_call


# --- the loop ------------------------------------------------------------------------------------------------


def describe_spans(spans: Any) -> dict[str, Any]:
    keys = sorted({key for span in spans for key in (span.attributes or {})})
    return {
        "names": [span.name for span in spans],
        "usage": any(any(mark in key for mark in USAGE_KEYS) for key in keys),
        "content": any(key.startswith(CONTENT_KEYS) for key in keys),
        "cost": "llm.cost.total" in keys,
        "keys": keys,
    }


def profile_text(stats: pstats.Stats, n: int) -> str:
    """The functions of mltrack_otel and of the OTel SDK, in µs per operation (cProfile inflates all of them)."""
    rows = []
    for (file, line, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = file.split("site-packages/")[-1]
        if "/mltrack_otel/" in where:  # any checkout (a worktree too), not only /work/main
            where = "mltrack_otel/" + where.split("/mltrack_otel/", 1)[1]
        rows.append((where, line, name, ncalls / n, tottime / n * 1e6, cumtime / n * 1e6))
    total = sum(r[4] for r in rows)
    out = io.StringIO()
    out.write(f"profiled µs per operation (all code, cProfile-inflated): {total:.0f}\n")
    for title, prefix, key, limit in (
        ("mltrack_otel by cumulative", "mltrack_otel/", 5, 15),
        ("mltrack_otel by own time", "mltrack_otel/", 4, 15),
        ("opentelemetry (SDK, API) by own time", "opentelemetry/", 4, 8),
    ):
        chosen = sorted((r for r in rows if r[0].startswith(prefix)), key=lambda r: -r[key])[:limit]
        out.write(f"  {title}: calls/op  own µs/op  cum µs/op\n")
        for where, line, name, calls, own, cum in chosen:
            out.write(f"    {calls:6.1f} {own:8.1f} {cum:8.1f}  {where}:{line}({name})\n")
    return out.getvalue()


def timed(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return time.process_time() - c0, time.perf_counter() - w0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--op", required=True, choices=OPS)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--transport", required=True, choices=("inproc", "loopback"))
    parser.add_argument("--base-url")
    parser.add_argument("--bodies", help="JSON file of canned responses (inproc)")
    parser.add_argument("--warmup-seconds", type=float, default=0.5)
    args = parser.parse_args(argv)

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library prints go to stderr, never into the protocol
    sys.stdout = sys.stderr

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")

    try:
        bodies = None
        if args.bodies:
            with open(args.bodies) as f:
                bodies = json.load(f)
        exporter, facts = setup_variant(args.variant, args.op)
        call = make_call(args.op, args.transport, args.base_url, bodies)
        call()
        first = exporter.get_finished_spans()
        exporter.clear()
        per_call = len(first)
        # Warm up: caches, lazy imports, branch predictors; also the first per-call CPU estimate.
        n, cpu, deadline = 0, 0.0, time.perf_counter() + args.warmup_seconds
        while n < 20 or time.perf_counter() < deadline:
            cpu += timed(call, 5)[0]
            n += 5
        seen = len(exporter.get_finished_spans())
        exporter.clear()
        if seen != per_call * n:
            raise RuntimeError(f"{seen} spans for {n} warm-up calls; the first call made {per_call}")
        reply(
            {
                "ready": True,
                "spans_per_call": per_call,
                "cpu_per_call": cpu / n,
                "spans": describe_spans(first),
                **facts,
            }
        )
    except Exception as exc:
        import traceback

        traceback.print_exc()
        reply({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return

    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "run":
            n = int(arg)
            cpu, wall = timed(call, n)
            spans = len(exporter.get_finished_spans())
            exporter.clear()
            reply({"cpu": cpu, "wall": wall, "spans": spans, "ok": spans == per_call * n})
        elif command == "profile":
            n = int(arg)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(n):
                call()
            profiler.disable()
            exporter.clear()
            reply({"text": profile_text(pstats.Stats(profiler), n)})
        elif command == "quit":
            break


if __name__ == "__main__":
    main()
