"""The provider registry (mltrack_otel/providers.py): one row per provider, every name of it resolves to the row.

Expected names are the OpenTelemetry GenAI convention's gen_ai.provider.name values and genai-prices' provider ids;
the framework checks ask the real LangChain classes and LiteLLM's own router which name they use.
"""

from __future__ import annotations

import os
import pathlib
import re

import pytest
from genai_prices.data import providers as genai_providers

import mltrack_otel
from mltrack_otel import pricing, providers, usage
from mltrack_otel.instrumentation import langchain as lc
from mltrack_otel.instrumentation import litellm as ll
from mltrack_otel.instrumentation import llama_index as li
from mltrack_otel.pricing import Pricer

ROWS = providers.PROVIDERS
GENAI_IDS = {p.id for p in genai_providers}
# The GenAI convention's well-known gen_ai.provider.name values (semantic-conventions, gen-ai registry).
CONVENTION = {
    "anthropic", "aws.bedrock", "azure.ai.inference", "azure.ai.openai", "cohere", "deepseek", "gcp.gemini",
    "gcp.gen_ai", "gcp.vertex_ai", "groq", "ibm.watsonx.ai", "mistral_ai", "openai", "perplexity", "x_ai",
}  # fmt: skip


def _framework_names(column: str) -> list[tuple[str, str]]:
    return [(alias, row.name) for row in ROWS for alias in getattr(row, column)]


# --- the table ---------------------------------------------------------------------------------------------------


def test_every_convention_name_has_a_row_and_the_new_providers_are_there():
    names = {row.name for row in ROWS}
    assert names >= CONVENTION
    assert {"ollama", "together", "fireworks", "openrouter"} <= names
    assert len(names) == len(ROWS)  # one row per provider


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_every_name_of_a_row_resolves_to_it_both_ways(row):
    for name in row.names:
        assert providers.convention_name(name) == row.name, name
        assert providers.pricing_id(name) == row.prices, name
    if row.prices is not None:
        # back from the genai-prices id: this row, or the one row that claims an id several rows share
        back = providers.convention_name(row.prices)
        assert back is not None
        assert providers.pricing_id(back) == row.prices


def test_no_name_belongs_to_two_providers():
    owner: dict[str, str] = {}
    for row in ROWS:
        for name in set(row.names):
            assert name == name.strip().lower(), name  # lookups try the name as given, then lower-cased
            assert owner.setdefault(name, row.name) == row.name, (name, owner[name], row.name)


def test_every_genai_prices_id_in_the_table_exists():
    assert {row.prices for row in ROWS if row.prices is not None} <= GENAI_IDS


def test_a_genai_prices_id_names_only_a_provider_it_prices():
    """genai-prices' ids name providers too (the host fallback returns them): never one priced by another id."""
    for genai_id in GENAI_IDS:
        name = providers.convention_name(genai_id)
        if name is not None:
            assert providers.pricing_id(name) == genai_id, (genai_id, name)
    # ids shared by several rows go to the convention's general name, as genai-prices' hosts do
    assert providers.convention_name("google") == "gcp.gen_ai"
    assert providers.convention_name("aws") == "aws.bedrock"
    assert providers.convention_name("azure") == "azure.ai.openai"
    assert providers.convention_name("x-ai") == "x_ai"
    assert providers.convention_name("mistral") == "mistral_ai"


def test_unknown_names_and_case():
    assert providers.convention_name("no-such-provider") is None
    assert providers.pricing_id("no-such-provider") is None
    assert providers.convention_name(None) is None and providers.convention_name("") is None
    assert providers.convention_name("MistralAI") == "mistral_ai"
    assert providers.pricing_id("ollama") is None  # served locally: no cloud price
    assert providers.pricing_id("ibm.watsonx.ai") is None  # genai-prices has no watsonx prices


def test_pricing_aliases_are_the_registry_and_price_through_it():
    assert dict(pricing.BUILTIN_PROVIDER_ALIASES) == providers.pricing_aliases()
    pricer = Pricer()
    for alias, genai_id in pricing.BUILTIN_PROVIDER_ALIASES.items():
        assert pricer.find_provider(alias, fuzzy=False).id == genai_id, alias
    # the same model priced under every name of its provider costs the same
    usage = pricing.Usage(1_000, 100)
    costs = {name: pricer.price(name, "mistral-small-latest", usage) for name in ("mistral_ai", "mistral", "mistralai")}
    assert all(cost is not None for cost in costs.values())
    assert len({cost.total for cost in costs.values()}) == 1


def test_hosts_and_local_ports():
    for row in ROWS:
        for pattern in row.hosts:
            host = pattern.replace("*.", "eu-west-1.").replace("*", "us-central1-")
            assert providers.for_host(host, None, "/v1") == row.name, host
        if row.port is not None:
            assert providers.LOCAL_SERVER_PORTS[row.port] == row.name
            assert providers.for_host("localhost", row.port, "/v1") == row.name
            assert providers.for_host("10.1.2.3", row.port, "") == row.name
    assert providers.for_host("api.mistral.ai", None, "/v1") == "mistral_ai"  # from genai-prices' api_pattern
    assert providers.for_host("bedrock-runtime.us-east-1.amazonaws.com") == "aws.bedrock"
    assert providers.for_host("localhost", 8000, "/v1") is None  # too common a port to name


def test_class_names():
    assert providers.for_class("AzureChatOpenAI") == "azure.ai.openai"  # before OpenAI
    assert providers.for_class("ChatOpenAI") == "openai"
    assert providers.for_class("ChatGoogleGenerativeAI") == "gcp.gemini"
    assert providers.for_class("ChatVertexAI") == "gcp.vertex_ai"
    assert providers.for_class("chat-ollama") == "ollama"
    assert providers.for_class("FakeListChatModel") is None


def test_mistral_ai_is_named_in_few_places():
    """The issue's measure: "mistral_ai" once sat on 9 lines in five tables."""
    root = pathlib.Path(mltrack_otel.__file__).parent
    lines = [
        (path.name, line)
        for path in root.rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if "mistral_ai" in line
    ]
    assert len(lines) <= 4, lines


# --- every framework's names go to the same provider --------------------------------------------------------------


@pytest.mark.parametrize(("alias", "name"), _framework_names("langchain"))
def test_langchain_ls_provider(alias, name):
    assert lc.provider_name(None, {"ls_provider": alias}, {}) == name


@pytest.mark.parametrize(("alias", "name"), _framework_names("litellm"))
def test_litellm_provider(alias, name):
    if name == "openai":
        assert ll.otel_provider(alias, "api.groq.com") == "groq"  # an OpenAI-compatible host names its provider
    assert ll.otel_provider(alias, None) == name
    assert ll.split_model(f"{alias}/some-model") == (alias, "some-model")


@pytest.mark.parametrize(("alias", "name"), _framework_names("llama_index"))
def test_llama_index_package(alias, name):
    cls = type("SomeLLM", (), {"__module__": f"llama_index.llms.{alias}.base"})
    assert li._provider(cls()) == name


def test_model_names_that_are_not_litellm_prefixes_stay_whole():
    """Hugging Face style ids start with an organisation that other frameworks use as a provider name."""
    for model in ("mistralai/Mistral-7B-Instruct-v0.3", "google/gemma-2-9b-it", "ibm/granite-3-8b"):
        assert ll.split_model(model) == (None, model)


# --- the frameworks' own names ------------------------------------------------------------------------------------

_LANGCHAIN_MODELS = [
    ("langchain_openai", "ChatOpenAI", {"api_key": "x"}, "openai"),
    ("langchain_openai", "AzureChatOpenAI", {"api_key": "x", "azure_endpoint": "https://x.openai.azure.com",
                                             "api_version": "2024-10-21"}, "azure.ai.openai"),
    ("langchain_anthropic", "ChatAnthropic", {"model": "claude-3-5-haiku-latest", "api_key": "x"}, "anthropic"),
    ("langchain_google_genai", "ChatGoogleGenerativeAI", {"model": "gemini-2.0-flash", "google_api_key": "x"},
     "gcp.gemini"),
    ("langchain_aws", "ChatBedrockConverse", {"model": "anthropic.claude-3-haiku-20240307-v1:0",
                                              "region_name": "us-east-1"}, "aws.bedrock"),
    ("langchain_aws", "ChatBedrock", {"model_id": "anthropic.claude-3-haiku-20240307-v1:0",
                                      "region_name": "us-east-1"}, "aws.bedrock"),
    ("langchain_aws", "ChatAnthropicBedrock", {"model": "anthropic.claude-3-haiku-20240307-v1:0",
                                               "region_name": "us-east-1"}, "aws.bedrock"),
    ("langchain_cohere", "ChatCohere", {"cohere_api_key": "x", "model": "command-r"}, "cohere"),
    ("langchain_ollama", "ChatOllama", {"model": "llama3.2"}, "ollama"),
    ("langchain_groq", "ChatGroq", {"api_key": "x", "model": "llama-3.1-8b-instant"}, "groq"),
    ("langchain_mistralai", "ChatMistralAI", {"api_key": "x"}, "mistral_ai"),
]  # fmt: skip


@pytest.mark.frameworks
@pytest.mark.parametrize(("module", "cls", "kwargs", "name"), _LANGCHAIN_MODELS, ids=[m[1] for m in _LANGCHAIN_MODELS])
def test_langchain_chat_models_are_named_by_the_convention(monkeypatch, module, cls, kwargs, name):
    """The ls_provider each real chat model reports, and its class name when it reports none."""
    model_class = getattr(pytest.importorskip(module), cls, None)
    if model_class is None:
        pytest.skip(f"{module} has no {cls}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")  # botocore builds a client at construction; nothing is sent
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    model = model_class(**kwargs)
    serialized = {"id": ["langchain", "chat_models", cls]}
    assert lc.provider_name(serialized, model._get_ls_params(), {}) == name
    if cls != "ChatAnthropicBedrock":  # its class name says Anthropic: only its ls_provider tells Bedrock
        assert lc.provider_name(serialized, {}, {}) == name


_LITELLM_MODELS = [
    ("gpt-4o-mini", "openai"),
    ("anthropic/claude-3-5-haiku-latest", "anthropic"),
    ("azure/my-deployment", "azure.ai.openai"),
    ("azure_ai/mistral-large", "azure.ai.inference"),
    ("bedrock/anthropic.claude-3-haiku-20240307-v1:0", "aws.bedrock"),
    ("gemini/gemini-2.0-flash", "gcp.gemini"),
    ("vertex_ai/gemini-2.0-flash", "gcp.vertex_ai"),
    ("mistral/mistral-small-latest", "mistral_ai"),
    ("codestral/codestral-latest", "mistral_ai"),
    ("cohere_chat/command-r", "cohere"),
    ("groq/llama-3.1-8b-instant", "groq"),
    ("ollama/llama3.2", "ollama"),
    ("ollama_chat/llama3.2", "ollama"),
    ("deepseek/deepseek-chat", "deepseek"),
    ("xai/grok-2", "x_ai"),
    ("perplexity/sonar", "perplexity"),
    ("watsonx/ibm/granite-13b-chat-v2", "ibm.watsonx.ai"),
    ("together_ai/meta-llama/Llama-3-70b-chat-hf", "together"),
    ("fireworks_ai/accounts/fireworks/models/llama-v3-70b-instruct", "fireworks"),
    ("openrouter/openai/gpt-4o", "openrouter"),
]


@pytest.mark.frameworks
@pytest.mark.parametrize(("model", "name"), _LITELLM_MODELS)
def test_litellm_routes_are_named_by_the_convention(model, name):
    """LiteLLM's own router picks the provider; the registry names it."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported: no network
    litellm = pytest.importorskip("litellm")
    provider = litellm.get_llm_provider(model=model)[1]
    assert provider in providers.framework_names("litellm")
    assert ll.resolve(model, None, None).provider == name


@pytest.mark.frameworks
def test_litellm_names_are_litellm_providers():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = pytest.importorskip("litellm")
    known = {str(getattr(p, "value", p)) for p in litellm.provider_list}
    # bedrock_converse is the custom_llm_provider LiteLLM's Bedrock Converse route reports (not in provider_list)
    assert providers.framework_names("litellm") - known <= {"bedrock_converse"}


@pytest.mark.frameworks
def test_llama_index_usage_shape_is_the_clients_not_the_providers():
    """An OpenAI client pointed at Anthropic's OpenAI-compatible API is named anthropic but reports OpenAI usage."""
    pytest.importorskip("llama_index.llms.openai")
    from llama_index.llms.openai import OpenAI

    llm = OpenAI(model="claude-3-5-haiku-latest", api_key="x", api_base="https://api.anthropic.com/v1/")
    assert li._provider(llm) == "anthropic"
    assert li.usage_shape(llm) == "openai.chat"
    anthropic_like = type("Anthropic", (), {"__module__": "llama_index.llms.anthropic.base"})()
    assert li.usage_shape(anthropic_like) == "anthropic"
    vertex_like = type("Vertex", (), {"__module__": "llama_index.llms.vertex.base"})()
    assert li._provider(vertex_like) == "gcp.vertex_ai"
    assert li.usage_shape(vertex_like) == "gemini"
    assert set(li._PACKAGE_USAGE.values()) | {li.usage_shape(llm)} <= set(usage.SHAPES)


def test_no_framework_module_keeps_its_own_provider_table():
    """The tables the registry replaced stay gone: no module maps a provider name to the convention's by itself."""
    root = pathlib.Path(mltrack_otel.__file__).parent
    table_entry = re.compile(r"""^\s*\(?["'][\w.-]+["'],?\s*[:,]\s*["'](aws\.bedrock|gcp\.\w+|azure\.ai\.\w+)["']""")
    offenders = [
        f"{path.name}: {line.strip()}"
        for path in root.rglob("*.py")
        if path.name != "providers.py"
        for line in path.read_text(encoding="utf-8").splitlines()
        if table_entry.match(line)
    ]
    assert offenders == []
