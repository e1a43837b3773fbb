"""Provider and price for OpenAI-compatible hosts: named from the URL, priced with that provider's prices, and a
model served from this machine or a private network never charged a cloud price.

The real openai SDK is pointed at the real base URLs (api.together.xyz, localhost:11434, 10.0.0.7:8000...); an
httpx transport carries its real HTTP requests to the fake provider on 127.0.0.1, so the SDK, our instrumentation
and the span's server.address see the host a user would configure.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import genai_prices
import httpx2
import openai
import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import server_attributes

from mltrack_otel import config, guard, hosts, semconv
from mltrack_otel.errors import ConfigError
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.pricing import PriceOverride, Pricer, Usage, override_key
from mltrack_otel.providers import for_host as provider_for_host
from mltrack_otel.testing.fake_provider import FakeProvider
from tests.traced import Traced

TOGETHER_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"
CEREBRAS_MODEL = "llama3.1-8b"
# Ollama model names genai-prices matches to a cloud provider's model: DeepSeek's and Cohere's.
OLLAMA_MODELS = ("deepseek-r1:8b", "command-r")
USAGE = Usage(1000, 100)
SHADOW = PriceOverride(input_per_mtok=Decimal("0.05"), output_per_mtok=Decimal("0.10"))  # a GPU-hour shadow price


@pytest.fixture
def own_config(isolated_env, monkeypatch):
    """isolated_env without the suite's cloud host for the fake provider: the configuration file's own value."""
    monkeypatch.delenv("MLTRACK_CLOUD_HOSTS", raising=False)
    return isolated_env


class ToFake(httpx2.HTTPTransport):
    """Sends each request, unchanged but for where it connects, to the fake provider (plain HTTP on loopback)."""

    def __init__(self, fake: FakeProvider) -> None:
        super().__init__()
        self.fake = fake

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(scheme="http", host=self.fake.host, port=self.fake.port)
        return super().handle_request(request)


class Pipeline(Traced):
    """The openai instrumentor into the span harness, its CostSpanProcessor using `pricer`; SDK clients for any
    base URL, served by the fake provider."""

    def __init__(self, fake: FakeProvider, pricer: Pricer) -> None:
        super().__init__(pricer=pricer)
        self.fake = fake
        instrument(["openai"], tracer_provider=self.provider)

    def client(self, base_url: str) -> openai.OpenAI:
        http = httpx2.Client(transport=ToFake(self.fake))
        return openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, http_client=http)

    def chat(self, base_url: str, model: str) -> tuple[Any, Any]:
        """One chat call; (the SDK's response, the span with our attributes)."""
        self.exporter.clear()
        response = self.client(base_url).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello in five words."}]
        )
        (span,) = self.exporter.get_finished_spans()
        return response, span

    def close(self) -> None:
        uninstrument(["openai"])
        self.shutdown()


@pytest.fixture
def hosts_pipeline(fake: FakeProvider, settings: config.Settings) -> Iterator[Any]:
    made: list[Pipeline] = []

    def make(pricer: Pricer | None = None) -> Pipeline:
        made.append(Pipeline(fake, pricer or Pricer()))
        return made[-1]

    yield make
    for pipeline in made:
        pipeline.close()


def genai_cost(response: Any, model: str, api_url: str) -> Decimal:
    """What genai-prices itself charges for the SDK's usage at this provider URL."""
    usage = genai_prices.Usage(
        input_tokens=response.usage.prompt_tokens, output_tokens=response.usage.completion_tokens
    )
    return genai_prices.calc_price(usage, model_ref=model, provider_api_url=api_url).total_price


# --- provider and price from the host -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "model", "provider_name"),
    [
        ("https://api.together.xyz/v1", TOGETHER_MODEL, "together"),
        ("https://api.cerebras.ai/v1", CEREBRAS_MODEL, "cerebras"),
    ],
)
def test_open_model_hosts_are_named_and_priced_by_their_provider(hosts_pipeline, base_url, model, provider_name):
    response, span = hosts_pipeline().chat(base_url, model)
    attrs = span.attributes
    assert attrs[gen_ai.GEN_AI_PROVIDER_NAME] == provider_name
    assert attrs[server_attributes.SERVER_ADDRESS] == base_url.split("/")[2]
    expected = genai_cost(response, model, base_url)
    assert attrs[semconv.LLM_COST_TOTAL] == pytest.approx(float(expected), rel=1e-12)
    assert attrs[semconv.MLTRACK_PRICING_SOURCE].startswith(f"genai-prices:{provider_name}/")
    assert semconv.MLTRACK_COST_UNPRICED not in attrs


@pytest.mark.parametrize(
    ("host", "port", "path", "name"),
    [
        ("api.openai.com", None, "/v1", "openai"),
        ("api.together.xyz", None, "/v1", "together"),
        ("api.fireworks.ai", None, "/inference/v1", "fireworks"),
        ("api.cerebras.ai", None, "/v1", "cerebras"),
        ("api.groq.com", None, "/openai/v1", "groq"),
        ("api.deepseek.com", None, "", "deepseek"),
        ("api.mistral.ai", None, "/v1", "mistral_ai"),
        ("api.x.ai", None, "/v1", "x_ai"),
        ("api.perplexity.ai", None, "", "perplexity"),
        ("api.cohere.ai", None, "/compatibility/v1", "cohere"),
        ("openrouter.ai", None, "/api/v1", "openrouter"),
        ("api.moonshot.cn", None, "/v1", "moonshotai"),
        ("api.cloudflare.com", None, "/client/v4/accounts/abc/ai/v1", "cloudflare"),
        ("myres.openai.azure.com", None, "/openai", "azure.ai.openai"),
        ("generativelanguage.googleapis.com", None, "/v1beta/openai", "gcp.gemini"),
        ("us-central1-aiplatform.googleapis.com", None, "/v1", "gcp.vertex_ai"),
        ("bedrock-runtime.us-east-1.amazonaws.com", None, "", "aws.bedrock"),
        ("us-south.ml.cloud.ibm.com", None, "", "ibm.watsonx.ai"),
        ("localhost", 11434, "/v1", "ollama"),
        ("127.0.0.1", 1234, "/v1", "lm_studio"),
        ("10.0.0.7", 8000, "/v1", None),  # vLLM: the SDK's own name stays
        ("api.anthropic.com.example.org", None, "", None),  # a pattern names the whole host, not a prefix of it
        ("llm.example.com", None, "/v1", None),
    ],
)
def test_provider_name_per_host(host, port, path, name):
    assert provider_for_host(host, port, path) == name


def test_every_provider_genai_prices_knows_by_url_is_named_from_its_host():
    """Not a hand-written list: each provider genai-prices matches by API URL is found from its host."""
    from genai_prices.data import providers

    examples = {  # hosts for the patterns that are not a literal URL
        "aws": "bedrock-runtime.eu-west-1.amazonaws.com",
        "azure": "x.openai.azure.com",
        "cohere": "api.cohere.com",
        "databricks": "x.cloud.databricks.com/serving-endpoints",
        "elevenlabs": "api.elevenlabs.io",
        "google": "generativelanguage.googleapis.com",
        "minimax": "api.minimax.io",
        "modal": "x.modal.run",
        "moonshotai": "api.moonshot.ai",
        "openrouter": "openrouter.ai",
        "cloudflare": "api.cloudflare.com/client/v4/accounts/x/ai",
    }
    pricer = Pricer()
    seen, patterns = set(), set()
    for prov in providers:
        if prov.api_pattern in patterns:  # openai-decisions shares api.openai.com with openai, which wins
            continue
        patterns.add(prov.api_pattern)
        literal = prov.api_pattern.removeprefix("https://").removesuffix("(?:/|$)").replace("\\", "")
        target = examples.get(prov.id) or literal
        assert not set(target) & set("()[]?*+$|"), f"add an example host for {prov.id}: {prov.api_pattern}"
        host, _, path = target.partition("/")
        name = provider_for_host(host, None, "/" + path)
        assert name is not None, (prov.id, target)
        assert pricer.find_provider(name, fuzzy=False).id == prov.id, (prov.id, name)  # pricing finds it back
        seen.add(prov.id)
    assert {"together", "fireworks", "cerebras", "groq", "deepseek", "openrouter"} <= seen


# --- local and private servers --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", OLLAMA_MODELS)
def test_a_local_ollama_model_is_flagged_local_not_charged_a_cloud_price(hosts_pipeline, model):
    # genai-prices alone would charge DeepSeek's or Cohere's cloud price for this name:
    assert Pricer().price("openai", model, USAGE) is not None
    pipeline = hosts_pipeline()
    guard.reset()
    _, span = pipeline.chat("http://localhost:11434/v1", model)
    attrs = span.attributes
    assert attrs[gen_ai.GEN_AI_PROVIDER_NAME] == "ollama"
    assert attrs[semconv.MLTRACK_COST_LOCAL] is True
    assert semconv.MLTRACK_COST_UNPRICED not in attrs
    assert not {semconv.LLM_COST_TOTAL, semconv.LLM_COST_PROMPT, semconv.LLM_COST_COMPLETION} & set(attrs)
    # Counted, with its tokens; it adds nothing to spend and leaves the total complete.
    assert attrs[semconv.MLTRACK_USAGE_COUNTED] is True
    assert attrs[semconv.LLM_COST_CUMULATIVE] == 0.0
    assert attrs[semconv.LLM_TOKENS_CUMULATIVE_TOTAL] == attrs[semconv.LLM_TOKENS_TOTAL] > 0
    health = guard.health()  # neither priced nor unpriced: local
    assert (health.get("spans.local"), health.get("spans.priced"), health.get("spans.unpriced")) == (1, None, None)


def test_a_vllm_server_on_a_private_address_is_flagged_local(hosts_pipeline):
    pipeline = hosts_pipeline()
    _, span = pipeline.chat("http://10.0.0.7:8000/v1", "deepseek-chat")
    attrs = span.attributes
    assert attrs[server_attributes.SERVER_ADDRESS] == "10.0.0.7"
    assert attrs[gen_ai.GEN_AI_PROVIDER_NAME] == "openai"  # what the SDK speaks; nothing names vLLM
    assert attrs[semconv.MLTRACK_COST_LOCAL] is True
    assert semconv.LLM_COST_TOTAL not in attrs
    assert semconv.MLTRACK_COST_UNPRICED not in attrs


def test_the_same_model_from_the_cloud_is_still_charged(hosts_pipeline):
    response, span = hosts_pipeline().chat("https://api.deepseek.com/v1", "deepseek-chat")
    assert span.attributes[gen_ai.GEN_AI_PROVIDER_NAME] == "deepseek"
    expected = genai_cost(response, "deepseek-chat", "https://api.deepseek.com/v1")
    assert span.attributes[semconv.LLM_COST_TOTAL] == pytest.approx(float(expected), rel=1e-12)
    assert semconv.MLTRACK_COST_LOCAL not in span.attributes


@pytest.mark.parametrize(
    "address",
    [
        "localhost",
        "LOCALHOST.",
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "[::1]",
        "::ffff:127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.20",
        "169.254.1.1",
        "fe80::1%eth0",
        "fd12:3456::1",
        "100.101.102.103",
        "0.0.0.0",
        "gpu-box.local",
        "ollama.localhost",
        "host.docker.internal",
    ],
)
def test_local_and_private_addresses(address):
    assert hosts.is_local(address)


@pytest.mark.parametrize(
    "address",
    ["api.openai.com", "8.8.8.8", "172.32.0.1", "192.169.0.1", "2606:4700::1", "localhost.example.com", "local"],
)
def test_public_addresses_are_not_local(address):
    assert not hosts.is_local(address)


# --- overrides keyed by host or provider, and hosts that forward to the cloud -------------------------------------


@pytest.mark.parametrize("key", ["host:localhost:11434", "host:localhost", "provider:ollama"])
def test_an_override_keyed_by_host_or_provider_prices_a_local_model(hosts_pipeline, key):
    pipeline = hosts_pipeline(Pricer({key: SHADOW}))
    response, span = pipeline.chat("http://localhost:11434/v1", "llama3.1:8b")
    attrs = span.attributes
    usage = response.usage
    expected = (usage.prompt_tokens * SHADOW.input_per_mtok + usage.completion_tokens * SHADOW.output_per_mtok) / 10**6
    assert attrs[semconv.LLM_COST_TOTAL] == pytest.approx(float(expected), rel=1e-12)
    assert attrs[semconv.MLTRACK_PRICING_SOURCE] == f"override:{key}"
    assert semconv.MLTRACK_COST_LOCAL not in attrs
    assert pipeline.ledger.process_totals().cost_usd == expected


def test_a_host_override_for_another_port_does_not_apply(hosts_pipeline):
    pipeline = hosts_pipeline(Pricer({"host:localhost:8000": SHADOW}))
    _, span = pipeline.chat("http://localhost:11434/v1", "llama3.1:8b")
    assert span.attributes[semconv.MLTRACK_COST_LOCAL] is True


def test_a_provider_override_prices_a_cloud_provider_too(hosts_pipeline):
    pipeline = hosts_pipeline(Pricer({"provider:together_ai": SHADOW}))  # LiteLLM's name for it: an alias
    _, span = pipeline.chat("https://api.together.xyz/v1", TOGETHER_MODEL)
    assert span.attributes[semconv.MLTRACK_PRICING_SOURCE] == "override:provider:together_ai"


def test_a_model_override_wins_over_a_host_override():
    pricer = Pricer({"host:localhost": SHADOW, "llama3.1:8b": PriceOverride(input_per_mtok=1, output_per_mtok=1)})
    cost = pricer.price("ollama", "llama3.1:8b", USAGE, address="localhost", port=11434)
    assert cost is not None and cost.source == "override:llama3.1:8b"


def test_a_cloud_host_on_a_local_address_keeps_its_cloud_price(hosts_pipeline):
    """An LLM gateway or proxy on localhost forwards to the cloud: `cloud_hosts` says so."""
    pipeline = hosts_pipeline(Pricer(cloud_hosts=["localhost:4000"]))
    response, span = pipeline.chat("http://localhost:4000/v1", "gpt-4o-mini")
    expected = genai_cost(response, "gpt-4o-mini", "https://api.openai.com/v1")
    assert span.attributes[semconv.LLM_COST_TOTAL] == pytest.approx(float(expected), rel=1e-12)
    _, other = pipeline.chat("http://localhost:4001/v1", "gpt-4o-mini")  # another port is not the gateway
    assert other.attributes[semconv.MLTRACK_COST_LOCAL] is True


def test_host_overrides_and_cloud_hosts_from_the_configuration(fake, own_config):
    (own_config / ".mltrack.yml").write_text(
        "price_overrides:\n"
        "  host:localhost:11434: {input_per_mtok: 0.05, output_per_mtok: 0.10}\n"
        "cloud_hosts: ['localhost:4000']\n"
    )
    settings = config.load_settings()
    assert settings.cloud_hosts == ("localhost:4000",)
    pricer = Pricer(settings.price_overrides, settings.provider_aliases, settings.cloud_hosts)
    local = pricer.price("ollama", "llama3.1:8b", USAGE, address="localhost", port=11434)
    assert local is not None and local.source == "override:host:localhost:11434"
    gateway = pricer.price("openai", "gpt-4o-mini", USAGE, address="localhost", port=4000)
    assert gateway is not None and gateway.source.startswith("genai-prices:openai/")


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("price_overrides:\n  'host:': {input_per_mtok: 1, output_per_mtok: 1}\n", "host:<host>"),
        ("price_overrides:\n  'host:gpu box': {input_per_mtok: 1, output_per_mtok: 1}\n", "host:<host>"),
        ("price_overrides:\n  'host:localhost:0': {input_per_mtok: 1, output_per_mtok: 1}\n", "port must be"),
        ("price_overrides:\n  'provider:': {input_per_mtok: 1, output_per_mtok: 1}\n", "provider:<gen_ai.provider"),
        (
            "price_overrides:\n  'provider:ollama': {input_per_mtok: 1, output_per_mtok: 1, provider: openai}\n",
            "only restricts a model key",
        ),
        ("cloud_hosts: ['localhost:http']\n", "port must be"),
    ],
)
def test_a_bad_host_or_provider_key_is_a_clear_configuration_error(own_config, yaml, message):
    (own_config / ".mltrack.yml").write_text(yaml)
    with pytest.raises(ConfigError, match="invalid configuration") as info:
        config.load_settings()
    assert message in str(info.value)
    assert ".mltrack.yml" in str(info.value)


def test_override_keys_parse():
    assert override_key("llama3.1:8b") == ("model", "llama3.1:8b")  # a model name may hold a colon
    assert override_key("host:[::1]:8000") == ("host", ("::1", 8000))
    assert override_key("HOST:GPU-Box.local") == ("host", ("gpu-box.local", None))
    assert override_key("provider:Ollama") == ("provider", "ollama")


@pytest.mark.parametrize(
    ("base_url", "name"),
    [
        ("https://api.deepseek.com/anthropic", "deepseek"),
        ("https://api.moonshot.ai/anthropic", "moonshotai"),
        ("http://localhost:11434", "ollama"),
        ("http://192.168.1.20:8080", "anthropic"),  # what the SDK speaks, when nothing names the server
    ],
)
def test_anthropic_compatible_hosts_are_named_too(base_url, name):
    import anthropic

    from mltrack_otel.instrumentation.anthropic import provider_name

    client = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test")
    assert provider_name(client, client.base_url.host) == name
