"""One registry of model providers: every name an SDK, host, framework or price list gives one -> gen_ai.provider.name.

Each :class:`Provider` row holds the name we emit as ``gen_ai.provider.name`` (the OpenTelemetry GenAI convention's
name where it has one, e.g. ``mistral_ai``; else the genai-prices id, e.g. ``together``; else a plain name, e.g.
``ollama``), the genai-prices provider id that prices it, the names LangChain (``ls_provider``), LlamaIndex (the
``llama_index.llms.<package>`` package) and LiteLLM (``custom_llm_provider``) use for it, the class-name fragments
that name it when LangChain reports no ``ls_provider``, the API hosts the convention names more finely than
genai-prices' ``api_pattern`` does, and the port a local server of it listens on by default.

No alias names two providers (tests/test_providers_registry.py checks it), so one lookup serves every framework.
Importing this module imports nothing heavy; :func:`for_host` loads genai-prices' bundled table on first use.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from . import hosts

__all__ = [
    "LOCAL_SERVER_PORTS",
    "PROVIDERS",
    "Provider",
    "convention_name",
    "for_class",
    "for_client",
    "for_host",
    "framework_names",
    "pricing_aliases",
    "pricing_id",
]


class Provider(NamedTuple):
    """One model provider and every name it goes by."""

    name: str  # gen_ai.provider.name
    prices: str | None = None  # genai-prices provider id (None: genai-prices has no prices for it)
    langchain: tuple[str, ...] = ()  # LangChain ls_provider values
    llama_index: tuple[str, ...] = ()  # llama_index.llms.<package> / llama_index.embeddings.<package>
    litellm: tuple[str, ...] = ()  # LiteLLM provider names (custom_llm_provider, the "<provider>/" model prefix)
    other: tuple[str, ...] = ()  # other names: SDK/service names, and the genai-prices id where rows share it
    classes: tuple[str, ...] = ()  # model class-name fragments, when a framework reports no provider name
    hosts: tuple[str, ...] = ()  # fnmatch host patterns, tried before genai-prices' api_pattern
    port: int | None = None  # default port of a server on this machine or a private network

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this provider goes by (its genai-prices id only where it lists it)."""
        return (self.name, *self.langchain, *self.llama_index, *self.litellm, *self.other)


PROVIDERS: tuple[Provider, ...] = (
    # Provider(gen_ai.provider.name, genai-prices id, LangChain names, LlamaIndex packages, LiteLLM names, ...)
    # The OpenTelemetry GenAI semantic conventions' names.
    Provider("openai", "openai", ("openai",), ("openai",), ("openai", "text-completion-openai", "chatgpt"),
             classes=("OpenAI",)),
    Provider("anthropic", "anthropic", ("anthropic",), ("anthropic",), ("anthropic", "anthropic_text"),
             classes=("Anthropic",)),
    Provider("azure.ai.openai", "azure", ("azure", "azure_openai"), ("azure_openai",), ("azure", "azure_text"),
             classes=("AzureChatOpenAI", "AzureOpenAI")),
    Provider("azure.ai.inference", "azure", ("azure_ai",), ("azure_inference",), ("azure_ai",),
             hosts=("*.services.ai.azure.com", "*.models.ai.azure.com", "*.inference.ai.azure.com")),
    Provider("aws.bedrock", "aws",
             ("bedrock", "amazon_bedrock", "bedrock_converse", "anthropic-bedrock", "anthropic-mantle"),
             ("bedrock", "bedrock_converse"), ("bedrock", "bedrock_converse", "bedrock_mantle"),
             other=("aws", "bedrock-runtime"), classes=("Bedrock",), hosts=("bedrock-runtime-fips.*.amazonaws.com",)),
    Provider("gcp.gen_ai", "google", other=("google",)),
    Provider("gcp.gemini", "google", ("google_genai",), ("gemini", "google_genai"), ("gemini",),
             classes=("GoogleGenerativeAI",), hosts=("generativelanguage.googleapis.com",)),
    Provider("gcp.vertex_ai", "google", ("google_vertexai", "google_anthropic_vertex", "vertexai"), ("vertex",),
             ("vertex_ai", "vertex_ai_beta"), classes=("VertexAI",), hosts=("*aiplatform.googleapis.com",)),
    Provider("mistral_ai", "mistral", ("mistralai", "mistral"), ("mistralai",),
             ("mistral", "codestral", "text-completion-codestral"), classes=("Mistral",)),
    Provider("cohere", "cohere", ("cohere",), ("cohere",), ("cohere", "cohere_chat"), classes=("Cohere",)),
    Provider("groq", "groq", ("groq",), ("groq",), ("groq",), classes=("Groq",)),
    Provider("deepseek", "deepseek", ("deepseek",), ("deepseek",), ("deepseek",), classes=("DeepSeek",)),
    Provider("perplexity", "perplexity", ("perplexity",), ("perplexity",), ("perplexity",)),
    Provider("x_ai", "x-ai", ("xai",), litellm=("xai",)),
    Provider("ibm.watsonx.ai", None, ("ibm", "watsonx"), ("ibm", "watsonx"), ("watsonx", "watsonx_text"),
             hosts=("*.ml.cloud.ibm.com",)),
    # No convention name: the genai-prices id (what an OpenAI-compatible client pointed at the host is named).
    Provider("together", "together", litellm=("together_ai",)),
    Provider("fireworks", "fireworks", litellm=("fireworks_ai",)),
    Provider("openrouter", "openrouter", ("openrouter",), ("openrouter",), ("openrouter",)),
    Provider("cerebras", "cerebras", litellm=("cerebras",)),
    Provider("novita", "novita", litellm=("novita",)),
    Provider("moonshotai", "moonshotai", litellm=("moonshot",)),
    Provider("databricks", "databricks", litellm=("databricks",)),
    Provider("cloudflare", "cloudflare", litellm=("cloudflare",)),
    Provider("zai", "zai", litellm=("zai",)),
    # LiteLLM's SageMaker endpoints: priced from AWS's (Bedrock) price list, as LiteLLM names them.
    Provider("sagemaker", "aws", litellm=("sagemaker",)),
    # Servers run on this machine or a private network: no genai-prices id, named by their default port.
    Provider("ollama", None, ("ollama",), ("ollama",), ("ollama", "ollama_chat"), classes=("Ollama",), port=11434),
    Provider("lm_studio", None, llama_index=("lmstudio",), litellm=("lm_studio",), port=1234),
)  # fmt: skip


def _index() -> tuple[dict[str, Provider], dict[str, Provider]]:
    by_name: dict[str, Provider] = {}
    by_prices: dict[str, Provider] = {}
    for row in PROVIDERS:
        for name in row.names:
            by_name.setdefault(name, row)  # a clash is a table error, reported by the tests
        if row.prices is not None:
            by_prices.setdefault(row.prices, row)
    # A genai-prices id names its provider too, unless it is claimed by name (google: gcp.gen_ai, not gcp.gemini).
    for prices, row in by_prices.items():
        by_name.setdefault(prices, row)
    return by_name, by_prices


_BY_NAME, _BY_PRICES = _index()

# Servers on this machine or a private network, by the default port they listen on: a name for what is served
# there. Other local servers (vLLM's 8000 is too common a port) keep the SDK's name.
LOCAL_SERVER_PORTS: Mapping[int, str] = MappingProxyType({r.port: r.name for r in PROVIDERS if r.port is not None})
# Class-name fragments, longest first (AzureChatOpenAI before OpenAI).
_CLASSES: tuple[tuple[str, str], ...] = tuple(
    sorted(((c.lower(), r.name) for r in PROVIDERS for c in r.classes), key=lambda item: -len(item[0]))
)
_HOSTS: tuple[tuple[str, str], ...] = tuple((pattern, r.name) for r in PROVIDERS for pattern in r.hosts)


def _row(name: Any) -> Provider | None:
    if not isinstance(name, str) or not name:
        return None
    row = _BY_NAME.get(name)
    if row is None:
        row = _BY_NAME.get(name.strip().lower())
    return row


def convention_name(name: Any) -> str | None:
    """gen_ai.provider.name for any name of a provider (convention, genai-prices, LangChain, LlamaIndex, LiteLLM,
    SDK); None for a name the registry does not know."""
    row = _row(name)
    return None if row is None else row.name


def pricing_id(name: Any) -> str | None:
    """The genai-prices provider id for any name of a provider; None when unknown or genai-prices has no prices."""
    row = _row(name)
    return None if row is None else row.prices


def serves_its_own_models(name: Any) -> bool:
    """A server that runs open-weight models itself (Ollama, LM Studio): no other vendor's API price applies to a
    model it serves, however the model is named (deepseek-r1:8b there is not DeepSeek's API)."""
    row = _row(name)
    return row is not None and row.port is not None and row.prices is None


def pricing_aliases() -> dict[str, str]:
    """Every name of every priced provider -> its genai-prices id (pricing's built-in provider aliases)."""
    return {name: row.prices for row in PROVIDERS if row.prices is not None for name in (*row.names, row.prices)}


def framework_names(framework: str) -> frozenset[str]:
    """The provider names one framework uses: "langchain", "llama_index" or "litellm"."""
    return frozenset(name for row in PROVIDERS for name in getattr(row, framework))


def for_class(class_name: Any) -> str | None:
    """gen_ai.provider.name from a model class name (or type string) that contains a provider's name, else None."""
    text = str(class_name).lower()
    return next((name for fragment, name in _CLASSES if fragment in text), None)


_host_cache: dict[tuple[str, int | None, str], str | None] = {}


def for_host(host: str, port: int | None = None, path: str = "") -> str | None:
    """The gen_ai.provider.name of an API host (None when unknown): the convention's name for a provider
    genai-prices knows by its URL, else genai-prices' id; a local server by its default port. Memoised (per call)."""
    key = (host, port, path)
    try:
        return _host_cache[key]
    except KeyError:
        pass
    name = _name_host(host.strip().lower().rstrip("."), port, path)
    if len(_host_cache) < 1024:
        _host_cache[key] = name
    return name


def for_client(client: Any, host: str) -> str | None:
    """for_host with the port and path of a Stainless SDK client's base_url (an httpx.URL)."""
    url = getattr(client, "base_url", None)
    port = getattr(url, "port", None)
    path = getattr(url, "path", None)
    return for_host(host, port if type(port) is int else None, path if isinstance(path, str) else "")


def _name_host(host: str, port: int | None, path: str) -> str | None:
    if hosts.is_local(host):  # never matched against cloud URLs, and genai-prices is not imported for it
        return LOCAL_SERVER_PORTS.get(port) if port is not None else None
    name = next((p for pattern, p in _HOSTS if fnmatch.fnmatchcase(host, pattern)), None)
    if name is not None:
        return name
    from genai_prices.data import providers  # the bundled table; ~0.2 s once, which pricing pays anyway

    origin = f"https://{host}"
    url = origin + (path if path.startswith("/") else "/" + path)
    for provider in providers:
        found = re.match(provider.api_pattern, url)
        # The pattern must name the whole host (api.openai.com, not api.openai.com.example.org) unless it
        # ends on a dot to take any domain (api.moonshot. for .ai and .cn).
        if found is not None and (found.end() >= len(origin) or url[found.end() - 1] == "."):
            return convention_name(provider.id) or provider.id
    return None
