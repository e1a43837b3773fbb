"""The tests' fixtures: the one fake provider server, settings and a clean environment, the `pipeline` that
configure() builds, SDK clients, and instrumentation into the span harness (tests/traced.py: `instrumented_library`,
`traced_fixture` for the provider test modules); plus content and assertion helpers the provider tests share.

Registered in conftest's pytest_plugins, so every test module can ask for them by name.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import SpanKind, StatusCode

import mltrack_otel
from mltrack_otel import config, guard, ledger, provider, semconv
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.pricing import Pricer
from mltrack_otel.testing.fake_provider import FakeProvider, prompt_tokens_for_texts
from tests.traced import FAKE, Traced, attrs, by_name, one_span, spans  # noqa: F401  (test files import them here)

# An OpenAI chat tool definition, for the tests that send tools.
OPENAI_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# The same tool as gen_ai.tool.definitions records it.
WEATHER_TOOL_DEFINITION = {"type": "function", **OPENAI_WEATHER_TOOL["function"]}

# The chat the OpenAI-shaped provider tests send (Groq, Ollama, Mistral), and its prompt tokens by the fake's formula.
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Tell me about spans please"},
]
PROMPT_TOKENS = prompt_tokens_for_texts([m["content"] for m in MESSAGES])

STREAM_CHUNKS = 30  # FakeProvider()'s default stream_chunks: deltas (output tokens) of an answer
FILLER = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]


def echo_text(user_text: str, n: int = STREAM_CHUNKS) -> str:
    """The fake's documented answer: "Echo:", the first 8 words of the user text (without ``[[scenario:...]]``
    tokens), then lorem-ipsum filler: n words in all."""
    words = [w for w in user_text.split() if not (w.startswith("[[scenario:") and w.endswith("]]"))]
    seq = ["Echo:", *words[:8]]
    seq += [FILLER[i % len(FILLER)] for i in range(n - len(seq))]
    return " ".join(seq[:n])


SCHEMAS = Path(__file__).parent / "schemas"
_SCHEMA_FILES = {
    "input": "gen-ai-input-messages.json",
    "output": "gen-ai-output-messages.json",
    "system": "gen-ai-system-instructions.json",
    "tools": "gen-ai-tool-definitions.json",
}
# Part type -> the schema definition it must satisfy. The schemas accept any part through GenericPart, so each
# known part is also checked against its own definition, or a malformed text part would pass.
_PART_DEFS = {
    "text": "TextPart",
    "tool_call": "ToolCallRequestPart",
    "tool_call_response": "ToolCallResponsePart",
    "server_tool_call": "ServerToolCallPart",
    "server_tool_call_response": "ServerToolCallResponsePart",
    "blob": "BlobPart",
    "file": "FilePart",
    "uri": "UriPart",
    "reasoning": "ReasoningPart",
}


def _schema(kind: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / _SCHEMA_FILES[kind]).read_text())


def validate_content(kind: str, text: str) -> list[Any]:
    """Parse one content attribute and validate it against the convention's schema (kind: input, output,
    system, tools); return the parsed value."""
    value = json.loads(text)
    schema = _schema(kind)
    jsonschema.validate(value, schema)
    parts = value if kind == "system" else [] if kind == "tools" else [p for m in value for p in m["parts"]]
    for part in parts:
        definition = _PART_DEFS.get(part["type"])
        if definition is not None:
            jsonschema.validate(part, {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"})
    return value


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeProvider]:
    """The one loopback fake provider server of the session (mltrack_otel/testing/fake_provider.py). Point the
    real SDKs at its `*_base_url`; it is shared, so call `.clear()` before asserting on `.requests`."""
    with FakeProvider() as server:
        yield server


@pytest.fixture
def settings() -> Iterator[config.Settings]:
    """Default Settings installed for the test (no file or environment), restored afterwards."""
    installed = config.Settings()
    config.set_current(installed)
    yield installed
    config.set_current(None)


def use_settings(**values: Any) -> config.Settings:
    """Install Settings with these values for the rest of the test (the `settings` fixture restores)."""
    installed = config.Settings(**values)
    config.set_current(installed)
    return installed


_ENV_PREFIXES = ("MLTRACK_", "OTEL_", "MLFLOW_TRACKING_URI")


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No stray configuration: empty working directory and home, no MLTRACK_/OTEL_ variables."""
    for key in list(os.environ):
        if key.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    # The fake provider on loopback stands for the cloud APIs it imitates (tests/test_hosts.py checks the local rule).
    monkeypatch.setenv("MLTRACK_CLOUD_HOSTS", ",".join(FAKE))
    return tmp_path


@pytest.fixture
def pipeline(isolated_env: Path) -> Iterator[Any]:
    """configure(exporters=["memory"]) on a clean ledger; yields the Runtime (runtime.memory_exporter has spans)."""
    ledger.LEDGER.reset()
    guard.reset()
    provider.configure(exporters=["memory"])
    rt = provider.runtime()
    yield rt
    rt.memory_exporter.clear()
    ledger.LEDGER.reset()
    ledger.LEDGER.limits = ledger.Limits()
    ledger.LEDGER.pricer = None
    config.set_current(None)


@pytest.fixture
def harness() -> Iterator[Traced]:
    """The span harness without the cost pipeline: what the instrumentation alone records."""
    traced = Traced(cost=False)
    yield traced
    traced.shutdown()


@pytest.fixture
def exporter(harness: Traced) -> InMemorySpanExporter:
    return harness.exporter


@pytest.fixture
def tracer_provider(harness: Traced) -> TracerProvider:
    return harness.provider


@pytest.fixture
def instrumented(fake: FakeProvider, settings: config.Settings, harness: Traced) -> Iterator[InMemorySpanExporter]:
    """OpenAI and Anthropic instrumented into the harness' TracerProvider; yields its exporter."""
    fake.clear()
    guard.reset()
    ledger.LEDGER.reset()
    instrument(["openai", "anthropic"], tracer_provider=harness.provider)
    yield harness.exporter
    uninstrument(["openai", "anthropic"])


@contextmanager
def instrumented_library(*libraries: str, cost: bool = True, pricer: Pricer | None = None) -> Iterator[Traced]:
    """`libraries` instrumented into a fresh Traced harness (`cost`, `pricer`: see Traced), the guard and the
    process ledger reset first; uninstrumented after. The harness stays open: its spans can be read after the
    block, and a stream the test dropped may still end into it."""
    guard.reset()
    ledger.LEDGER.reset()
    traced = Traced(cost=cost, pricer=pricer)
    assert instrument(libraries, tracer_provider=traced.provider) == list(libraries)
    try:
        yield traced
    finally:
        uninstrument(libraries)


def traced_fixture(*libraries: str, cost: bool = True, local: bool = False) -> Callable[..., Iterator[Traced]]:
    """A provider test module's fixture (`traced = traced_fixture("groq")`): the fake cleared, default settings,
    `libraries` instrumented into a Traced harness whose CostSpanProcessor prices the fake as the cloud. `local`:
    the fake on 127.0.0.1 is NOT declared a cloud host (a local server, e.g. Ollama): priced by a plain Pricer()."""

    @pytest.fixture
    def fixture(fake: FakeProvider, settings: config.Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Traced]:
        if local:
            monkeypatch.delenv("MLTRACK_CLOUD_HOSTS", raising=False)
        fake.clear()
        with instrumented_library(*libraries, cost=cost, pricer=Pricer() if local else None) as traced:
            yield traced

    return fixture


@contextmanager
def token_budget(limit: int, spent: int = 0) -> Iterator[ledger.Ledger]:
    """The process ledger under a hard `limit` of tokens, `spent` of them already counted; limits and totals
    reset after."""
    ledger.LEDGER.limits = ledger.Limits(token_budget=limit)
    try:
        if spent:
            ledger.LEDGER.add(1, None, None, spent, 0, None)
        yield ledger.LEDGER
    finally:
        ledger.LEDGER.limits = ledger.Limits()
        ledger.LEDGER.reset()


@pytest.fixture
def priced(fake: FakeProvider, settings: config.Settings) -> Iterator[InMemorySpanExporter]:
    """OpenAI and Anthropic instrumented into the harness, its CostSpanProcessor counting into the process ledger
    (ledger.LEDGER, reset before and after); yields the exporter."""
    guard.drain_deferred()  # streams other tests dropped end now, not in this test's ledger
    ledger.LEDGER.pricer = None  # a hand-built processor prices the ledger's reservations only when it has no pricer
    harness = Traced(ledger=ledger.LEDGER)
    fake.clear()
    guard.reset()
    ledger.LEDGER.reset()
    instrument(["openai", "anthropic"], tracer_provider=harness.provider)
    try:
        yield harness.exporter
    finally:
        uninstrument(["openai", "anthropic"])
        harness.shutdown()
        ledger.LEDGER.reset()
        ledger.LEDGER.limits = ledger.Limits()
        ledger.LEDGER.pricer = None


@pytest.fixture
def oai(fake: FakeProvider) -> Any:
    import openai

    return openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)


@pytest.fixture
def aoai(fake: FakeProvider) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)


@pytest.fixture
def ant(fake: FakeProvider) -> Any:
    import anthropic

    return anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="sk-ant-test", max_retries=0)


@pytest.fixture
def aant(fake: FakeProvider) -> Any:
    import anthropic

    return anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key="sk-ant-test", max_retries=0)


def abandon_stream(open_stream: Callable[[], Any], reads: int = 1) -> None:
    """Open a stream, read `reads` items and drop it unclosed; then collect garbage and wait for the deferred work
    (an abandoned stream's span may be ended off the collector, by the guard's finalizer worker)."""
    stream = open_stream()
    for _ in range(reads):
        next(iter(stream))
    del stream
    gc.collect()
    guard.drain_deferred()


def model_call_attrs(span: Any, operation: str, provider: str, model: str) -> dict[str, Any]:
    """Assert `span` is a successful model call's ("<operation> <model>", CLIENT, status unset, with those
    gen_ai.operation.name, gen_ai.provider.name and gen_ai.request.model); return its attributes."""
    a = attrs(span)
    assert span.name == f"{operation} {model}" and span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == operation
    assert a[gen_ai.GEN_AI_PROVIDER_NAME] == provider
    assert a[gen_ai.GEN_AI_REQUEST_MODEL] == model
    return a


def stopped_early_attrs(span: Any) -> dict[str, Any]:
    """Assert `span` is a stream's that stopped before its usage came (incomplete, usage estimated from what was
    seen: input and output both counted); return its attributes."""
    a = attrs(span)
    assert a[semconv.MLTRACK_STREAM_COMPLETE] is False
    assert a[semconv.MLTRACK_USAGE_SOURCE] == "estimated"
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] > 0 and a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
    return a


def output_messages(span: Any) -> list[Any]:
    """The span's gen_ai.output.messages, validated against the convention's schema."""
    return validate_content("output", attrs(span)[gen_ai.GEN_AI_OUTPUT_MESSAGES])


def output_message(span: Any) -> dict[str, Any]:
    """The span's one output message."""
    (message,) = output_messages(span)
    return message


def output_text(span: Any) -> str:
    """The text parts of the span's one output message, joined."""
    return "".join(p["content"] for p in output_message(span)["parts"] if p["type"] == "text")


def tool_call_message(span: Any, call: Any) -> dict[str, Any]:
    """Assert the span recorded an OpenAI-shaped tool `call` (the SDK's: id, function.name, function.arguments) as
    the answer (finish reason tool_calls, one tool_call part); return the output message."""
    assert attrs(span)[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    out = output_message(span)
    assert out["finish_reason"] == "tool_call"
    arguments = json.loads(call.function.arguments)
    assert out["parts"] == [{"type": "tool_call", "id": call.id, "name": call.function.name, "arguments": arguments}]
    return out


def without_ids(model: Any) -> Any:
    """A response as a dict without the fields the fake varies per request (ids, timestamps)."""
    data = model.model_dump() if hasattr(model, "model_dump") else dict(model)
    return _drop(data)


def _drop(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop(v) for k, v in value.items() if k not in ("id", "created", "created_at")}
    if isinstance(value, list):
        return [_drop(v) for v in value]
    return value


@contextmanager
def mlflow_store(folder: Path, experiment: str, libraries: tuple[str, ...] = (), **settings: Any) -> Iterator[str]:
    """configure() exporting to a real sqlite MLflow store in `folder`, from a clean slate: no MLTRACK_, OTEL_ or
    MLFLOW_ variables, the folder as working directory and home, the ledger and error counters reset, `libraries`
    instrumented. Yields the store's URI; a block that ends normally flushes every span into the store
    (shutdown: the first export creates the database, seconds on a busy machine). Then everything is undone.
    `settings`: more configure() keywords (exporters: ["mlflow"] unless given)."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("MLTRACK_", "OTEL_", "MLFLOW_")):
                patch.delenv(key)
        patch.chdir(folder)
        patch.setenv("HOME", str(folder))
        ledger.LEDGER.reset()
        guard.reset()
        try:
            mltrack_otel.configure(
                **{"exporters": ["mlflow"], **settings},
                mlflow_tracking_uri=uri,
                mlflow_experiment_name=experiment,
                shutdown_timeout_seconds=120,
            )
            if libraries:
                instrument(list(libraries))
            yield uri
            mltrack_otel.shutdown()
        finally:
            if libraries:
                uninstrument(list(libraries))
            ledger.LEDGER.reset()
            config.set_current(None)
