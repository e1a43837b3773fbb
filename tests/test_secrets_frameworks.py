"""Secrets through the frameworks: LangChain and LiteLLM calls carrying fake credentials (API keys, default and
extra headers, user:password in the base URL), exported to a real OTLP/HTTP receiver and the embedded MLflow store;
no exported byte may hold a secret in any encoding (the scan of tests/test_secrets.py)."""

from __future__ import annotations

import base64
import json
import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: no network at import

import pytest

litellm = pytest.importorskip("litellm")
langchain_openai = pytest.importorskip("langchain_openai")
langchain_anthropic = pytest.importorskip("langchain_anthropic")

import mltrack_otel  # noqa: E402
from mltrack_otel.instrumentation import uninstrument  # noqa: E402
from tests.test_secrets import SECRETS, URL_USER, export_everywhere, receiver  # noqa: E402, F401  (fixtures)

pytestmark = pytest.mark.frameworks

MARK = "CANARYMARK"


def run_frameworks(fake) -> None:
    headers = {"x-api-key": SECRETS["default header"]}
    credentialed = f"http://{URL_USER}:{SECRETS['url password']}@127.0.0.1:{fake.port}"
    messages = [("system", f"Be terse {MARK}"), ("human", f"{MARK} tell me about spans")]

    chat = langchain_openai.ChatOpenAI(
        model="gpt-4o-mini",
        api_key=SECRETS["openai api key"],
        base_url=fake.openai_base_url,
        default_headers=headers,
        max_retries=0,
    )
    chat.invoke(messages)
    list(chat.stream(messages))
    langchain_openai.ChatOpenAI(
        model="gpt-4o-mini", api_key=SECRETS["openai api key"], base_url=credentialed + "/v1", max_retries=0
    ).invoke(messages)
    langchain_anthropic.ChatAnthropic(
        model="claude-3-5-haiku-latest",
        api_key=SECRETS["anthropic api key"],
        base_url=fake.anthropic_base_url,
        default_headers={"x-custom-key": SECRETS["default header"]},
        max_retries=0,
    ).invoke(messages)

    call = {
        "messages": [{"role": "user", "content": f"{MARK} hello there"}],
        "extra_headers": {"x-goog-api-key": SECRETS["extra header"]},
        "num_retries": 0,
    }
    openai_route = {"model": "openai/gpt-4o-mini", "api_key": SECRETS["openai api key"]}
    litellm.completion(**openai_route, api_base=fake.openai_base_url, **call)
    list(litellm.completion(**openai_route, api_base=fake.openai_base_url, stream=True, **call))
    litellm.completion(**openai_route, api_base=credentialed + "/v1", **call)
    litellm.completion(
        model="anthropic/claude-3-5-haiku-latest",
        api_key=SECRETS["anthropic api key"],
        api_base=fake.anthropic_base_url,
        max_tokens=50,
        **call,
    )
    litellm.embedding(
        model="openai/text-embedding-3-small",
        input=[f"{MARK} embed"],
        api_key=SECRETS["openai api key"],
        api_base=fake.openai_base_url,
    )


def test_no_secret_is_exported_from_framework_calls(fake, export_everywhere):  # noqa: F811
    fake.clear()
    export_everywhere()
    mltrack_otel.instrument(["langchain", "litellm"])
    try:
        run_frameworks(fake)
    finally:
        uninstrument(["langchain", "litellm"])
    exported = export_everywhere.collect()

    seen = json.dumps([[r.headers, r.json] for r in fake.requests])
    for label in ("openai api key", "anthropic api key", "default header", "extra header"):
        assert SECRETS[label] in seen, label  # the secrets were in play
    assert base64.b64encode(f"{URL_USER}:{SECRETS['url password']}".encode()).decode() in seen
    names = [span.name for span in exported.spans()]
    assert len(names) == len(exported.memory) >= 10, names
    places = exported.where(MARK.encode())
    assert "file mlflow.db" in places and any(p.startswith("otlp /v1/traces") for p in places)

    assert exported.leaks(SECRETS) == []
