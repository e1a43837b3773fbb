"""Secrets and privacy: what leaves the process through the exporters, byte for byte.

Every instrumented operation of this environment (OpenAI chat, streams, async, responses, embeddings, legacy
completions; Anthropic messages and streams; the manual API) runs against the fake provider with recognisable fake
credentials everywhere a caller puts them: API keys, auth tokens, default and extra headers, query parameters,
extra body fields, a base URL with user:password, and `parameters=` of the manual API. Spans go through the real
pipeline to a real OTLP/HTTP receiver (a stdlib server on 127.0.0.1 that keeps every request) and to the embedded
MLflow sqlite store; after shutdown() every received byte, the sqlite file and the artifact directory are scanned
for each secret, raw and url-encoded, base64 (at every alignment) and hex encoded.

Then: with content capture off, no prompt or response text is exported at all; with redaction patterns, no match
is left in any content attribute, span event or status (and so in no exported byte).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anthropic
import openai
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

import mltrack_otel
from mltrack_otel import config, content, guard, ledger, provider
from mltrack_otel.exporters.mlflow import MlflowSpanExporter
from mltrack_otel.instrumentation import uninstrument
from tests.otlp_receiver import OtlpReceiver

pytest.importorskip("mlflow")

SECRETS = {
    "openai api key": "sk-SECRETSCAN-0123456789abcdef",
    "anthropic api key": "sk-ant-SECRETSCAN-fedcba9876543210",
    "anthropic auth token": "SECRETSCAN-bearer-token-5f2c91",
    "default header": "SECRETSCAN-default-header-77aa01",
    "extra header": "SECRETSCAN-extra-header-19bc02",
    "query parameter": "SECRETSCAN-query-key-3d4e03",
    "body field": "SECRETSCAN-body-key-8f9a04",
    "url password": "PASSWORD-SECRETSCAN-6b1d05",
    "manual parameters": "sk-SECRETSCAN-params-0a0b06",
}
OTLP_TOKEN = "SECRETSCAN-otlp-token-c0ffee"  # ours for the collector: on the wire as a header, in no body
URL_USER = "scanuser"
MODEL = "gpt-4o-mini"
CLAUDE = "claude-haiku-4-5"
RESPONSE_TEXT = "lorem ipsum dolor"  # the fake's filler: only ever in responses


# --- the receiver and the scan -------------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    with OtlpReceiver() as server:
        yield server


def _received(receiver: OtlpReceiver) -> list[tuple[str, dict[str, str], bytes]]:
    """Every request the receiver got: (path, headers, decompressed body)."""
    return [(request.path, request.headers, request.body) for request in receiver.requests]


def encodings(secret: str) -> dict[str, bytes]:
    """The secret as it could appear in exported bytes: raw, url-encoded, hex, and base64 inside any larger blob."""
    raw = secret.encode()
    forms = {"raw": raw, "url-encoded": quote(secret, safe="").encode(), "hex": raw.hex().encode()}
    for shift in range(3):  # base64 depends on the secret's offset mod 3: keep the groups made of its bytes only
        encoded = base64.b64encode(b"\0" * shift + raw)[4 if shift else 0 : 4 * ((shift + len(raw)) // 3)]
        forms[f"base64+{shift}"] = encoded
        forms[f"base64url+{shift}"] = encoded.replace(b"+", b"-").replace(b"/", b"_")
    return forms


class Exported:
    """Everything that left the process: OTLP request bodies and headers, and every file under the store folder."""

    def __init__(self, received: list[tuple[str, dict[str, str], bytes]], store: Path, memory: list[Any]) -> None:
        self.received = received
        self.memory = memory  # the same spans as the in-memory exporter got them
        self.blobs: dict[str, bytes] = {f"otlp {path} #{i}": body for i, (path, _, body) in enumerate(received)}
        for i, (path, headers, _) in enumerate(received):
            text = "\n".join(f"{k}: {v}" for k, v in headers.items() if v != f"Bearer {OTLP_TOKEN}")
            self.blobs[f"otlp {path} #{i} headers"] = text.encode()
        for file in sorted(store.rglob("*")):
            if file.is_file():
                self.blobs[f"file {file.relative_to(store)}"] = file.read_bytes()

    @property
    def size(self) -> int:
        return sum(len(blob) for blob in self.blobs.values())

    def where(self, needle: bytes) -> list[str]:
        return [name for name, blob in self.blobs.items() if needle in blob]

    def leaks(self, secrets: dict[str, str]) -> list[str]:
        return [
            f"{label} ({form}) in {place}"
            for label, secret in secrets.items()
            for form, needle in encodings(secret).items()
            for place in self.where(needle)
        ]

    def spans(self) -> list[Any]:
        spans = []
        for path, _, body in self.received:
            if path == "/v1/traces":
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                spans += [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        return spans

    def metric_names(self) -> set[str]:
        names = set()
        for path, _, body in self.received:
            if path == "/v1/metrics":
                request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                names |= {m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        return names


@pytest.fixture
def export_everywhere(isolated_env, receiver, monkeypatch):
    """configure(**settings) exporting to the receiver (OTLP/HTTP) and an embedded MLflow store under the test's
    folder, plus memory; returns a function that shuts down and collects what was exported."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "5")
    ledger.LEDGER.reset()
    guard.reset()
    store = isolated_env / "store"
    store.mkdir()
    monkeypatch.chdir(store)  # MLflow puts its artifact folder (mlruns/) in the working directory

    def configure(**settings: Any) -> Any:
        mltrack_otel.configure(
            exporters=["otlp", "mlflow", "memory"],
            otlp_endpoint=receiver.url,
            otlp_headers={"authorization": f"Bearer {OTLP_TOKEN}"},
            mlflow_tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
            mlflow_experiment_name="secret-scan",
            export_delay_ms=50,
            shutdown_timeout_seconds=120,  # a bound for a loaded machine, not a timing claim
            **settings,
        )
        mltrack_otel.instrument(["openai", "anthropic"])

    def collect() -> Exported:
        memory = list(provider.runtime().memory_exporter.get_finished_spans())
        mltrack_otel.shutdown()
        exported = Exported(_received(receiver), store, memory)
        print(f"\nsecret scan: {exported.size} bytes in {len(exported.blobs)} blobs")
        return exported

    configure.collect = collect
    yield configure
    uninstrument(["openai", "anthropic"])
    mltrack_otel.shutdown()
    ledger.LEDGER.reset()
    config.set_current(None)


# --- every operation, secrets everywhere ---------------------------------------------------------------------------


def clients(fake: Any) -> dict[str, Any]:
    """SDK clients carrying the secrets the ways callers pass them."""
    headers = {"x-api-key": SECRETS["default header"]}
    credentialed = f"http://{URL_USER}:{SECRETS['url password']}@127.0.0.1:{fake.port}"
    return {
        "openai": openai.OpenAI(
            api_key=SECRETS["openai api key"], base_url=fake.openai_base_url, default_headers=headers, max_retries=0
        ),
        "openai async": openai.AsyncOpenAI(
            api_key=SECRETS["openai api key"], base_url=fake.openai_base_url, default_headers=headers, max_retries=0
        ),
        "openai url credentials": openai.OpenAI(
            api_key=SECRETS["openai api key"], base_url=credentialed + "/v1", max_retries=0
        ),
        "anthropic": anthropic.Anthropic(
            api_key=SECRETS["anthropic api key"],
            base_url=fake.anthropic_base_url,
            default_headers={"x-custom-key": SECRETS["default header"]},
            max_retries=0,
        ),
        "anthropic async": anthropic.AsyncAnthropic(
            api_key=SECRETS["anthropic api key"], base_url=fake.anthropic_base_url, max_retries=0
        ),
        "anthropic token": anthropic.Anthropic(
            auth_token=SECRETS["anthropic auth token"], base_url=fake.anthropic_base_url, max_retries=0
        ),
        "anthropic url credentials": anthropic.Anthropic(
            api_key=SECRETS["anthropic api key"], base_url=credentialed, max_retries=0
        ),
    }


def per_call(scenario: str | None = None) -> dict[str, Any]:
    """Per-request secrets: an extra header, a query parameter and a body field (sent to the provider as is)."""
    headers = {"x-goog-api-key": SECRETS["extra header"]}
    if scenario:
        headers["x-fake-scenario"] = scenario
    return {
        "extra_headers": headers,
        "extra_query": {"api-key": SECRETS["query parameter"]},
        "extra_body": {"api_key": SECRETS["body field"]},
    }


def openai_conversation(text: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": f"You are terse. {text} system"},
        {"role": "user", "content": f"Look up {text} please"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": json.dumps({"q": text})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": f"found {text} result"},
        {"role": "user", "content": f"{text} summarise it"},
    ]


def openai_tools(text: str) -> list[dict[str, Any]]:
    schema = {"type": "object", "properties": {"q": {"type": "string", "enum": [text]}}, "required": ["q"]}
    return [{"type": "function", "function": {"name": "lookup", "description": f"Find {text}", "parameters": schema}}]


def anthropic_conversation(text: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"Look up {text} please"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": text}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"found {text} result"},
                {"type": "text", "text": f"{text} summarise it"},
            ],
        },
    ]


def anthropic_tools(text: str) -> list[dict[str, Any]]:
    schema = {"type": "object", "properties": {"q": {"type": "string", "enum": [text]}}, "required": ["q"]}
    return [{"name": "lookup", "description": f"Find {text}", "input_schema": schema}]


def run_every_operation(fake: Any, text: str) -> None:
    """Every instrumented operation available here, `text` in every piece of content (prompt, system, tool call
    arguments and results, tool definitions; the fake echoes the prompt into the response), secrets everywhere."""
    c = clients(fake)
    oai, ant = c["openai"], c["anthropic"]
    chat = {"model": MODEL, "messages": openai_conversation(text)}
    oai.chat.completions.create(**chat, tools=openai_tools(text), **per_call("tool"))
    oai.chat.completions.create(**chat, **per_call())
    list(oai.chat.completions.create(**chat, stream=True, **per_call()))
    with oai.chat.completions.stream(**chat, **per_call()) as stream:
        stream.get_final_completion()
    oai.responses.create(model=MODEL, instructions=f"Be terse {text}", input=f"{text} question", **per_call())
    list(oai.responses.create(model=MODEL, input=f"{text} question", stream=True, **per_call()))
    oai.embeddings.create(model="text-embedding-3-small", input=f"embed {text}", **per_call())
    oai.completions.create(model="gpt-3.5-turbo-instruct", prompt=f"complete {text}", **per_call())
    with pytest.raises(openai.AuthenticationError):
        oai.chat.completions.create(**chat, **per_call("error-401"))
    c["openai url credentials"].chat.completions.create(**chat)

    messages = {"model": CLAUDE, "max_tokens": 60, "messages": anthropic_conversation(text)}
    ant.messages.create(**messages, system=f"Be terse {text}", tools=anthropic_tools(text), **per_call("tool"))
    list(ant.messages.create(**messages, stream=True, **per_call()))
    with ant.messages.stream(**messages, **per_call()) as stream:
        stream.get_final_message()
    with pytest.raises(anthropic.APIStatusError):
        ant.messages.create(**messages, **per_call("error-529"))
    c["anthropic token"].messages.create(**messages)
    c["anthropic url credentials"].messages.create(**messages)

    async def run_async() -> None:
        await c["openai async"].chat.completions.create(**chat, **per_call())
        async for _ in await c["openai async"].chat.completions.create(**chat, stream=True, **per_call()):
            pass
        await c["anthropic async"].messages.create(**messages, **per_call())

    asyncio.run(run_async())
    run_manual_api(oai, text)


def run_manual_api(oai: Any, text: str) -> None:
    """track_llm_context, log_prompt_response with secrets in parameters=, track_llm_call around an SDK call."""
    parameters = {
        "temperature": 0.2,
        "api_key": SECRETS["manual parameters"],
        "headers": {"Authorization": f"Bearer {SECRETS['manual parameters']}"},
        "base_url": f"http://{URL_USER}:{SECRETS['manual parameters']}@127.0.0.1/v1",
    }
    with mltrack_otel.track_llm_context("secret-scan", model="gpt-4o", provider="openai", tags={"env": "ci"}) as t:
        t.log_prompt_response(
            prompt=[{"role": "system", "content": f"{text} system"}, {"role": "user", "content": f"{text} asks"}],
            response=f"{text} answers",
            parameters=parameters,
            token_usage={"prompt_tokens": 12, "completion_tokens": 3},
        )

        @mltrack_otel.LLMTracker().track_llm_call(model=MODEL, provider="openai")
        def ask(messages: list[dict[str, Any]], api_key: str) -> Any:
            return oai.chat.completions.create(model=MODEL, messages=messages)

        ask(messages=[{"role": "user", "content": f"{text} wrapped"}], api_key=SECRETS["manual parameters"])


def assert_sent(fake: Any) -> None:
    """The secrets really were in play: the provider received each one the SDKs send."""
    seen = json.dumps([[r.headers, r.query, r.json] for r in fake.requests])
    for label in ("openai api key", "anthropic api key", "anthropic auth token", "default header", "extra header"):
        assert SECRETS[label] in seen, label
    assert SECRETS["query parameter"] in seen and SECRETS["body field"] in seen
    basic = base64.b64encode(f"{URL_USER}:{SECRETS['url password']}".encode()).decode()
    assert f"Basic {basic}" in seen  # httpx turns user:password in the base URL into basic auth


# --- 1. no secret in any exported byte -------------------------------------------------------------------------------

CANARY = "CANARYMARK"


def test_no_secret_is_exported_anywhere(fake, export_everywhere, receiver):
    fake.clear()
    export_everywhere(otlp_compression="gzip")
    run_every_operation(fake, CANARY)
    exported = export_everywhere.collect()
    assert_sent(fake)

    # The scan sees what was exported: spans over OTLP (gzip, decoded), metrics, and content in the MLflow store.
    names = [s.name for s in exported.spans()]
    for expected in ("chat gpt-4o-mini", "chat claude-haiku-4-5", "embeddings text-embedding-3-small", "secret-scan"):
        assert expected in names, names
    assert len(names) == len(exported.memory)
    assert "gen_ai.client.token.usage" in exported.metric_names()
    places = exported.where(CANARY.encode())
    assert "file mlflow.db" in places and any(p.startswith("otlp /v1/traces") for p in places)
    assert any(headers.get("authorization") == f"Bearer {OTLP_TOKEN}" for _, headers, _ in _received(receiver))

    assert exported.leaks(SECRETS | {"otlp token": OTLP_TOKEN}) == []
    assert guard.health().get("errors.caught", 0) == 0


# --- 2. content capture off: no prompt or response text anywhere ----------------------------------------------------

PROMPT_MARK = "PROMPTMARKQ7"


def test_content_capture_off_exports_no_prompt_or_response_text(fake, export_everywhere):
    fake.clear()
    export_everywhere(llm_log_prompts=False, llm_log_responses=False)
    run_every_operation(fake, PROMPT_MARK)
    exported = export_everywhere.collect()

    # Prompts, system instructions, tool arguments, results and definitions all carry the mark; responses echo it
    # ("Echo: <prompt words>"), and their filler words appear in responses only.
    assert exported.spans() and exported.where(b"chat gpt-4o-mini")
    assert "file mlflow.db" in exported.where(b"gen_ai.usage.input_tokens")
    for text in (PROMPT_MARK, "Echo:", RESPONSE_TEXT):
        assert exported.where(text.encode()) == [], text
    for span in exported.memory:
        assert not set(span.attributes) & {
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "gen_ai.system_instructions",
        }


# --- 3. redaction: every content attribute, span event and status --------------------------------------------------

REDACT_MARK = "REDACTME-a1b2c3"
REDACT_PATTERNS = [r"REDACTME-[0-9a-f]{6}", r"\(fake provider\)"]  # the second matches the fake's error messages
CONTENT_KEYS = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
)


def span_texts(span: Any) -> list[tuple[str, str]]:
    """(where, text) of every string a span carries: attributes, event attributes, status description."""
    texts = [(key, value) for key, value in span.attributes.items()]
    texts += [("event", value) for event in span.events for value in (event.attributes or {}).values()]
    texts.append(("status", span.status.description or ""))
    return [(where, text) for where, value in texts for text in (value if isinstance(value, tuple) else (value,))]


def where_redacted(spans: list[Any], pattern: re.Pattern[str]) -> set[str]:
    """Where [REDACTED] shows (attribute names, tool part types, "event", "status"); fails on any string the
    patterns still match."""
    found = set()
    for span in spans:
        for where, text in span_texts(span):
            if not isinstance(text, str):
                continue
            assert not pattern.search(text), f"{span.name}: {where} still holds {pattern.search(text)[0]!r}"
            if content.REDACTED in text:
                found.add(where)
                if where in CONTENT_KEYS:
                    found |= {p["type"] for p in _parts(json.loads(text)) if content.REDACTED in json.dumps(p)}
    return found


def _parts(items: list[Any]) -> list[Any]:
    return [part for item in items for part in item.get("parts", [item])]


def test_redaction_reaches_every_content_attribute_event_and_status(fake, export_everywhere):
    fake.clear()
    export_everywhere(redact_patterns=REDACT_PATTERNS)
    run_every_operation(fake, REDACT_MARK)
    exported = export_everywhere.collect()

    found = where_redacted(exported.memory, re.compile("|".join(REDACT_PATTERNS)))
    expected = {*CONTENT_KEYS, "text", "tool_call", "tool_call_response", "event", "status"}
    assert expected <= found, expected - found
    for text in ("REDACTME", "(fake provider)"):
        assert exported.where(text.encode()) == [], text
    assert exported.where(content.REDACTED.encode())


def test_redaction_reaches_errors_of_the_manual_api(pipeline):
    config.set_current(config.Settings(redact_patterns=REDACT_PATTERNS))
    error = ValueError(f"gateway said: bad key {REDACT_MARK}")
    with pytest.raises(ValueError), mltrack_otel.track_llm_context("ctx"):
        raise error

    @mltrack_otel.LLMTracker().track_llm_call(model=MODEL, provider="openai")
    def ask(prompt: str) -> Any:
        raise error

    with pytest.raises(ValueError):
        ask("hi")
    spans = list(pipeline.memory_exporter.get_finished_spans())
    assert len(spans) == 2
    assert where_redacted(spans, re.compile(REDACT_PATTERNS[0])) >= {"event", "status"}


# --- logs: credentials in a tracking URI -----------------------------------------------------------------------------


def test_mlflow_exporter_logs_never_show_url_credentials(caplog):
    with socket.socket() as sock:  # a port nobody listens on: the exporter fails and says why
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exporter = MlflowSpanExporter(tracking_uri=f"http://{URL_USER}:{SECRETS['url password']}@127.0.0.1:{port}")
    exporter._max_retries = 0
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    with caplog.at_level(logging.DEBUG, logger="mltrack_otel"):
        tracer_provider.get_tracer("scan").start_span("one").end()
    tracer_provider.shutdown()
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mltrack_otel"))
    assert "cannot set up MLflow export" in ours and f"127.0.0.1:{port}" in ours
    assert SECRETS["url password"] not in ours
