"""google-genai (Gemini API and Vertex AI): the fake's wire format through the real SDK, then the instrumentation.

Expected numbers come from the fake's documented formula (mltrack_otel/testing/wire/gemini.py): prompt tokens are
3 + words per segment, one output token per delta, thoughts = 2 x visible output in the `reasoning` scenario.
"""

from __future__ import annotations

import asyncio

import pytest
from google import genai
from google.genai import errors, types
from google.oauth2 import credentials as oauth2

from mltrack_otel.testing.fake_provider import FILLER, FakeProvider
from mltrack_otel.testing.wire.gemini import MODEL_VERSIONS, THOUGHT_SUMMARY

CHUNKS = 30  # the fake's default stream_chunks: deltas per answer
WEATHER = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="Weather for a city",
            parameters_json_schema={
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        )
    ]
)
NO_RETRY = types.HttpRetryOptions(attempts=1)  # aiohttp's implicit retry would sleep 1-10 s on a cut connection


def gemini_client(fake: FakeProvider) -> genai.Client:
    return genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=fake.url, retry_options=NO_RETRY))


def vertex_client(fake: FakeProvider) -> genai.Client:
    """Vertex AI with a project and location, offline: a ready-made OAuth token, so google-auth never refreshes."""
    return genai.Client(
        vertexai=True,
        project="test-project",
        location="us-central1",
        credentials=oauth2.Credentials(token="test-token"),
        http_options=types.HttpOptions(base_url=fake.url, retry_options=NO_RETRY),
    )


@pytest.fixture
def gem(fake: FakeProvider) -> genai.Client:
    fake.clear()
    return gemini_client(fake)


@pytest.fixture
def vertex(fake: FakeProvider) -> genai.Client:
    fake.clear()
    return vertex_client(fake)


def echo(text: str, n: int = CHUNKS) -> str:
    """The fake's answer: "Echo:" and the first 8 words, padded with filler to n words."""
    words = ["Echo:", *text.split()[:8]]
    words += [FILLER[i % len(FILLER)] for i in range(n - len(words))]
    return " ".join(words[:n])


def prompt_tokens(*segments: str) -> int:
    return sum(3 + len(s.split()) for s in segments)


# --- the wire format, read by the real SDK -------------------------------------------------------------------------


def test_wire_generate_content(gem, fake):
    result = gem.models.generate_content(model="gemini-2.0-flash", contents="why is the sky blue")
    assert result.text == echo("why is the sky blue")
    usage = result.usage_metadata
    assert usage.prompt_token_count == prompt_tokens("why is the sky blue")
    assert usage.candidates_token_count == CHUNKS
    assert usage.total_token_count == usage.prompt_token_count + CHUNKS
    assert usage.thoughts_token_count is None and usage.cached_content_token_count is None
    assert result.model_version == MODEL_VERSIONS["gemini-2.0-flash"]
    assert result.response_id.startswith("fake-")
    assert result.candidates[0].finish_reason == types.FinishReason.STOP
    sent = fake.requests[-1]
    assert sent.path.endswith("/models/gemini-2.0-flash:generateContent")
    assert sent.json["contents"] == [{"role": "user", "parts": [{"text": "why is the sky blue"}]}]


def test_wire_stream_usage_on_the_last_event(gem, fake):
    chunks = list(gem.models.generate_content_stream(model="gemini-2.5-flash", contents="tell me more"))
    assert "".join(c.text for c in chunks) == echo("tell me more")
    assert len(chunks) == CHUNKS
    assert fake.requests[-1].query == {"alt": "sse"}
    # Every Gemini API event has the prompt count; only the last has the output count and the finish reason.
    assert all(c.usage_metadata.prompt_token_count == prompt_tokens("tell me more") for c in chunks)
    assert [c.usage_metadata.candidates_token_count for c in chunks[:-1]] == [None] * (CHUNKS - 1)
    assert chunks[-1].usage_metadata.candidates_token_count == CHUNKS
    assert [c.candidates[0].finish_reason for c in chunks[-2:]] == [None, types.FinishReason.STOP]


def test_wire_vertex_paths_auth_and_stream_usage(vertex, fake):
    result = vertex.models.generate_content(model="gemini-2.5-flash", contents="hello vertex")
    sent = fake.requests[-1]
    prefix = "/v1beta1/projects/test-project/locations/us-central1/publishers/google/models/"
    assert sent.path == prefix + "gemini-2.5-flash:generateContent"
    assert sent.headers["authorization"] == "Bearer test-token"
    assert result.text == echo("hello vertex") and result.create_time is not None
    chunks = list(vertex.models.generate_content_stream(model="gemini-2.5-flash", contents="hello vertex"))
    # Vertex's intermediate events carry only the traffic type.
    assert {c.usage_metadata.prompt_token_count for c in chunks[:-1]} == {None}
    assert chunks[-1].usage_metadata.prompt_token_count == prompt_tokens("hello vertex")


def test_wire_vertex_express_mode_path(fake):
    fake.clear()
    client = genai.Client(vertexai=True, api_key="test-key", http_options=types.HttpOptions(base_url=fake.url))
    assert client.models.generate_content(model="gemini-2.5-flash", contents="hi").text == echo("hi")
    assert fake.requests[-1].path == "/v1beta1/publishers/google/models/gemini-2.5-flash:generateContent"


def test_wire_function_call(gem, vertex):
    config = types.GenerateContentConfig(tools=[WEATHER])
    for client in (gem, vertex):
        result = client.models.generate_content(
            model="gemini-2.5-flash", contents="weather [[scenario:tool]]", config=config
        )
        (call,) = result.function_calls
        assert (call.name, call.args) == ("get_weather", {"city": "example"})
        assert result.candidates[0].finish_reason == types.FinishReason.STOP
        assert result.usage_metadata.candidates_token_count == len('{"city": "example"}')  # one fragment per char
    assert call.id is not None  # Vertex names its calls


def test_wire_function_call_from_a_python_callable_and_forced(gem):
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    config = types.GenerateContentConfig(
        tools=[get_weather],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY")),
    )
    result = gem.models.generate_content(model="gemini-2.5-flash", contents="weather please", config=config)
    assert [(c.name, c.args) for c in result.function_calls] == [("get_weather", {"city": "example"})]


def test_wire_reasoning_cache_and_truncation(gem):
    config = types.GenerateContentConfig(
        system_instruction="be brief", thinking_config=types.ThinkingConfig(include_thoughts=True)
    )
    result = gem.models.generate_content(model="gemini-2.5-flash", contents="hi [[scenario:reasoning]]", config=config)
    usage = result.usage_metadata
    assert usage.thoughts_token_count == 2 * usage.candidates_token_count == 2 * CHUNKS
    assert usage.total_token_count == prompt_tokens("be brief", "hi [[scenario:reasoning]]") + 3 * CHUNKS
    assert (result.candidates[0].content.parts[0].thought, result.candidates[0].content.parts[0].text) == (
        True,
        THOUGHT_SUMMARY,
    )
    result = gem.models.generate_content(
        model="gemini-2.5-flash",
        contents="hi [[scenario:cache-read]]",
        config=types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=3),
    )
    usage = result.usage_metadata
    assert usage.cached_content_token_count == prompt_tokens("be brief")  # the prefix: all but the last segment
    assert usage.prompt_token_count == prompt_tokens("be brief", "hi [[scenario:cache-read]]")
    assert (usage.candidates_token_count, result.text) == (3, echo("hi", 3))
    assert result.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


@pytest.mark.parametrize(
    ("name", "error_class", "status"),
    [
        ("error-400", errors.ClientError, "INVALID_ARGUMENT"),
        ("error-429", errors.ClientError, "RESOURCE_EXHAUSTED"),
        ("error-500", errors.ServerError, "INTERNAL"),
    ],
)
def test_wire_errors(gem, name, error_class, status):
    with pytest.raises(error_class) as caught:
        gem.models.generate_content(model="gemini-2.5-flash", contents=f"x [[scenario:{name}]]")
    assert (caught.value.code, caught.value.status) == (int(name[-3:]), status)


def test_wire_stream_error_and_drop(gem):
    seen = []
    with pytest.raises(errors.ServerError) as caught:
        for chunk in gem.models.generate_content_stream(
            model="gemini-2.5-flash", contents="x [[scenario:stream-error]]"
        ):
            seen.append(chunk.text)
    assert (len(seen), caught.value.status) == (3, "INTERNAL")
    seen = []
    with pytest.raises(Exception):  # noqa: B017 - the transport's own error for a cut connection
        for chunk in gem.models.generate_content_stream(model="gemini-2.5-flash", contents="x [[scenario:drop]]"):
            seen.append(chunk.text)
    assert len(seen) == 3


def test_wire_embeddings(gem, vertex, fake):
    result = gem.models.embed_content(model="gemini-embedding-001", contents=["a b c", "d e"])
    assert [len(e.values) for e in result.embeddings] == [16, 16]
    assert fake.requests[-1].path.endswith(":batchEmbedContents")
    result = vertex.models.embed_content(
        model="text-embedding-005", contents=["a b c", "d e"], config=types.EmbedContentConfig(output_dimensionality=8)
    )
    assert fake.requests[-1].path.endswith("/text-embedding-005:predict")
    assert [(len(e.values), e.statistics.token_count) for e in result.embeddings] == [(8, 6), (8, 5)]
    assert result.metadata.billable_character_count == 5
    result = vertex.models.embed_content(model="gemini-embedding-001", contents="a b c")
    assert fake.requests[-1].path.endswith("/gemini-embedding-001:embedContent")
    assert result.embeddings[0].statistics.token_count == 6


def test_wire_count_tokens(gem):
    assert gem.models.count_tokens(model="gemini-2.5-flash", contents="one two three").total_tokens == 6


def test_wire_async_and_chat(fake):
    fake.clear()
    client = gemini_client(fake)

    async def run() -> tuple[str, list[str]]:
        result = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="async hello")
        chunks = [
            c.text
            async for c in await client.aio.models.generate_content_stream(
                model="gemini-2.5-flash", contents="async hello"
            )
        ]
        return result.text, chunks

    text, chunks = asyncio.run(run())
    assert text == "".join(chunks) == echo("async hello")
    chat = client.chats.create(model="gemini-2.5-flash")
    assert chat.send_message("first turn").text == echo("first turn")
    assert chat.send_message("second turn").text == echo("second turn")
    history = fake.requests[-1].json["contents"]
    assert [c["role"] for c in history] == ["user", "model", "user"]
