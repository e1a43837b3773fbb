"""Bad input, fuzzed: usage objects, model names, message content and `.mltrack.yml` files.

Properties, whatever the input:
* nothing raises into the caller, and an instrumented call returns (or raises) what the bare SDK call does;
* every content attribute is valid JSON, and no attribute is longer than content_max_bytes;
* every span stays exportable: the OTLP encoder takes every attribute (it drops, with a log line, what it cannot);
* a bad configuration file is a ConfigError at configure() time that names the file and the key.

Example counts are explicit (max_examples) so the file stays far under a minute on a loaded machine; run with
`--hypothesis-show-statistics` to see how many ran. Large inputs (10 MB prompts, 100 000 levels of nesting) are
explicit examples, not generated.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import anthropic
import hypothesis
import openai
import pytest
import yaml
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from pydantic import BaseModel, ConfigDict

import mltrack_otel
from mltrack_otel import config, content, guard, ledger, provider, semconv, usage
from mltrack_otel.errors import ConfigError
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.pricing import Pricer, Usage
from mltrack_otel.processor import read_usage
from tests import instr_fixtures as fx

FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
INT64_MAX = 2**63 - 1
CONTENT_KEYS = {
    gen_ai.GEN_AI_INPUT_MESSAGES,
    gen_ai.GEN_AI_OUTPUT_MESSAGES,
    gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS,
    gen_ai.GEN_AI_TOOL_DEFINITIONS,
}
USAGE_KEYS = {
    gen_ai.GEN_AI_USAGE_INPUT_TOKENS,
    gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS,
    gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
}
TEN_MB = 10 * 1024 * 1024


# --- checks every span must pass ------------------------------------------------------------------------------------


def assert_exportable(spans: list[Any]) -> None:
    """The OTLP encoder takes every span whole: it skips (and logs) attributes it cannot encode, so count them."""
    request = encode_spans(spans)
    encoded = {
        proto.span_id: len(proto.attributes)
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for proto in ss.spans
    }
    for span in spans:
        span_id = span.context.span_id.to_bytes(8, "big")
        assert encoded[span_id] == len(span.attributes or {}), f"{span.name}: an attribute could not be encoded"
    request.SerializeToString()


def assert_content_ok(spans: list[Any], budget: int) -> None:
    """Content attributes parse as JSON, and no string attribute is longer than the byte budget."""
    for span in spans:
        for key, value in (span.attributes or {}).items():
            if key in CONTENT_KEYS:
                json.loads(value)
            for text in value if isinstance(value, tuple) else (value,):
                if isinstance(text, str):
                    assert len(text.encode("utf-8")) <= budget, f"{span.name}: {key} is over {budget} bytes"


def fresh_pipeline() -> Any:
    """Clear what the previous example left in the configured pipeline (the `pipeline` fixture's runtime)."""
    rt = provider.runtime()
    rt.memory_exporter.clear()
    ledger.LEDGER.reset()
    guard.reset()
    return rt


# --- usage objects --------------------------------------------------------------------------------------------------

counts = st.one_of(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([None, True, False, 1.5, float("nan"), float("inf"), "12", b"12", [3], {"n": 1}]),
)
USAGE_NAMES = [
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
]
DETAIL_NAMES = {
    "prompt_tokens_details": "cached_tokens",
    "completion_tokens_details": "reasoning_tokens",
    "input_tokens_details": "cached_tokens",
    "output_tokens_details": "reasoning_tokens",
}


class PydanticUsage(BaseModel):
    model_config = ConfigDict(extra="allow")


class RaisingUsage:
    """An SDK object whose attributes raise when read (a lazy field that fails, a broken proxy)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"cannot read {name}")


def _as_shape(fields: dict[str, Any], shape: str) -> Any:
    if shape == "dict":
        return fields
    if shape == "namespace":
        return SimpleNamespace(**fields)
    return PydanticUsage(**fields)


usage_fields = st.dictionaries(st.sampled_from(USAGE_NAMES), counts, max_size=5).flatmap(
    lambda top: st.dictionaries(
        st.sampled_from(sorted(DETAIL_NAMES)),
        st.one_of(
            st.none(),
            counts,
            st.builds(lambda n, k: {k: n}, counts, st.sampled_from(["cached_tokens", "reasoning_tokens"])),
        ),
        max_size=2,
    ).map(lambda details: {**top, **details})
)
usage_objects = st.one_of(
    st.builds(_as_shape, usage_fields, st.sampled_from(["dict", "namespace", "pydantic"])),
    st.sampled_from([None, 0, 12, "12 tokens", b"\x00", [1, 2], (), RaisingUsage(), object(), float("nan")]),
)


def _plausible(value: Any) -> bool:
    return type(value) is int and 0 <= value <= usage.MAX_TOKENS


@hypothesis.settings(max_examples=300, deadline=None)
@given(raw=usage_objects, provider_name=st.sampled_from([None, "openai", "anthropic", "", "ünknown"]))
def test_usage_in_any_shape_gives_plausible_counts_or_nothing(raw, provider_name):
    attributes = usage.usage_attributes(raw, provider_name)
    assert set(attributes) <= USAGE_KEYS
    # Input includes cache reads and writes (Anthropic adds them): at most three plausible counts.
    assert all(type(v) is int and 0 <= v <= 3 * usage.MAX_TOKENS < INT64_MAX for v in attributes.values())
    chat = isinstance(raw, dict) and (raw.get("prompt_tokens") is not None or raw.get("completion_tokens") is not None)
    if chat:  # the chat shape maps across as it came, or not at all: never half a usage
        prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
        if not all(v is None or _plausible(v) for v in (prompt, completion)):
            assert attributes == {}
        elif attributes:
            assert attributes[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == (prompt or 0)
            assert attributes[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == (completion or 0)
    elif not isinstance(raw, (dict, SimpleNamespace, PydanticUsage)):
        assert attributes == {}


@hypothesis.settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES)
@given(raw=usage_objects)
def test_usage_through_the_manual_api_and_the_processor(pipeline, raw):
    rt = fresh_pipeline()
    tracker = mltrack_otel.LLMTracker(model="gpt-4o", provider="openai")
    assert tracker.log_prompt_response("hi", "there", token_usage=raw) is None
    (span,) = rt.memory_exporter.get_finished_spans()
    assert_exportable([span])
    attrs = dict(span.attributes)
    if gen_ai.GEN_AI_USAGE_INPUT_TOKENS in attrs:
        assert (
            attrs[semconv.LLM_TOKENS_TOTAL] == attrs[semconv.LLM_TOKENS_PROMPT] + attrs[semconv.LLM_TOKENS_COMPLETION]
        )
        assert mltrack_otel.totals().calls == 1
    else:
        assert semconv.LLM_TOKENS_TOTAL not in attrs and mltrack_otel.totals().calls == 0


other_attribute_values = st.one_of(
    st.floats(),
    st.booleans(),
    st.text(max_size=10),
    st.lists(st.integers(min_value=0, max_value=10), max_size=3).map(tuple),
)
attribute_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=INT64_MAX),
    st.integers(min_value=0, max_value=100_000),
    other_attribute_values,
)
span_usage_keys = st.sampled_from(
    [
        *sorted(USAGE_KEYS),
        gen_ai.GEN_AI_USAGE_PROMPT_TOKENS,
        gen_ai.GEN_AI_USAGE_COMPLETION_TOKENS,
        "llm.token_count.prompt",
        "llm.token_count.completion",
        "llm.token_count.prompt_details.cache_read",
    ]
)


@hypothesis.settings(max_examples=300, deadline=None)
@given(attrs=st.dictionaries(span_usage_keys, attribute_values, max_size=6))
def test_read_usage_on_any_span_attributes(attrs):
    found = read_usage(attrs)
    if found is not None:
        assert all(type(n) is int and n >= 0 for n in found)


@hypothesis.settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES)
@given(
    attrs=st.dictionaries(
        span_usage_keys,
        st.one_of(st.integers(min_value=-(2**40), max_value=2**40), other_attribute_values),
        max_size=6,
    ),
    model=st.sampled_from(["gpt-4o", "claude-haiku-4-5", "no-such-model", ""]),
)
def test_span_usage_attributes_through_the_processor_stay_exportable(pipeline, attrs, model):
    rt = fresh_pipeline()
    tracer = rt.tracer_provider.get_tracer("fuzz")
    tracer.start_span("chat", attributes={**attrs, gen_ai.GEN_AI_REQUEST_MODEL: model}).end()
    spans = list(rt.memory_exporter.get_finished_spans())
    assert_exportable(spans)
    assert guard.health().get("errors.caught", 0) == 0
    for name in (semconv.LLM_COST_TOTAL, semconv.LLM_COST_CUMULATIVE):
        value = spans[0].attributes.get(name)
        assert value is None or (math.isfinite(value) and value >= 0)


def test_huge_span_usage_is_not_counted(pipeline):
    rt = fresh_pipeline()
    usage_attrs = {gen_ai.GEN_AI_USAGE_INPUT_TOKENS: 2**62, gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: 2**62}
    rt.tracer_provider.get_tracer("fuzz").start_span("chat", attributes=usage_attrs).end()
    assert_exportable(list(rt.memory_exporter.get_finished_spans()))


# --- model names ----------------------------------------------------------------------------------------------------

model_names = st.one_of(
    st.text(max_size=40), st.sampled_from(["gpt-4o", "openai/gpt-4o", "/", " ", "claude-haiku-4-5"])
)
LONG_NAMES = ["x" * 10_240, "é" * 10_240, "👋" * 10_240, "gpt-4o" + " " * 10_240, "openai/" + "a" * 10_240]


@hypothesis.settings(max_examples=200, deadline=None)
@given(
    name=model_names, provider_name=st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["openai", "anthropic"]))
)
@example(name="", provider_name=None)
@example(name=LONG_NAMES[1], provider_name="openai")
@example(name="\ud800 lone surrogate", provider_name="openai")
def test_any_model_name_is_priced_or_unpriced_never_an_error(name, provider_name):
    pricer = Pricer()
    cost = pricer.price(provider_name, name, Usage(1000, 200))
    if cost is not None:
        assert all(isinstance(v, Decimal) and v.is_finite() and v >= 0 for v in (cost.input, cost.output, cost.total))
        assert cost.total >= cost.input + cost.output - Decimal("1e-18")
        assert isinstance(pricer.describe(provider_name, name), str)  # a priced model can say where its price is from


@hypothesis.settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES)
@given(name=model_names)
@example(name=LONG_NAMES[0])
@example(name=LONG_NAMES[2])
@example(name=LONG_NAMES[4])
def test_any_model_name_through_a_logged_call(pipeline, name):
    rt = fresh_pipeline()
    with mltrack_otel.track_llm_context("fuzz", model=name, provider="openai") as tracker:
        tracker.log_prompt_response("hi", "there", token_usage={"prompt_tokens": 10, "completion_tokens": 5})
    spans = list(rt.memory_exporter.get_finished_spans())
    assert len(spans) == 2
    assert_exportable(spans)
    call = next(s for s in spans if s.attributes.get(gen_ai.GEN_AI_OPERATION_NAME) == "chat")
    assert call.attributes.get(gen_ai.GEN_AI_REQUEST_MODEL) == (name or None)
    priced = semconv.LLM_COST_TOTAL in call.attributes
    assert priced != bool(call.attributes.get(semconv.MLTRACK_COST_UNPRICED))  # one or the other, never a 0 cost


def test_a_model_name_with_a_lone_surrogate_still_exports(pipeline):
    rt = fresh_pipeline()
    mltrack_otel.LLMTracker().log_prompt_response("hi", "there", model="gpt\ud800", provider="openai")
    assert_exportable(list(rt.memory_exporter.get_finished_spans()))


# --- message content: content.encode --------------------------------------------------------------------------------


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints a failing example
        printer.text("Unprintable()")


class Note(BaseModel):
    text: str
    data: bytes = b""


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**4000, max_value=10**4400),  # past the int-to-str digit limit
    st.floats(),
    st.text(),
    st.text(st.characters(codec=None, exclude_categories=())),  # lone surrogates too
    st.binary(max_size=64),
    st.builds(Note, text=st.text(max_size=20), data=st.binary(max_size=8)),
    st.sampled_from([object(), Unprintable(), {1, 2}, Decimal("1.5"), 1j]),
)
payloads = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(
            st.one_of(st.text(max_size=8), st.integers(), st.none(), st.sampled_from(["id", "name", "type"])),
            inner,
            max_size=4,
        )
    ),
    max_leaves=25,
)
SECRET_PATTERN = re.compile(r"sk-[A-Za-z0-9]{8,}")
secretish = st.text(alphabet="abcXYZ019 -", max_size=20).map(lambda t: f"key sk-{t}ABCDEFGH12 end")
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "content": st.one_of(st.text(), secretish)}),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_call"),
            "id": st.text("abc_1", max_size=8),
            "name": st.text("fgh", max_size=8),
            "arguments": payloads,
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_call_response"),
            "id": st.text("abc_1", max_size=8),
            "response": st.one_of(payloads, secretish),
        }
    ),
    st.builds(
        content.media_part,
        st.binary(max_size=200).map(lambda b: "data:image/png;base64," + base64.b64encode(b).decode()),
        st.just("image"),
    ),
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool", "system"]), "parts": st.lists(parts, max_size=4)},
        optional={"finish_reason": st.sampled_from(["stop", "length"])},
    ),
    max_size=8,
)


def same_data(before: Any, after: Any) -> bool:
    """Structural equality that also holds for nan and for objects that do not define ==."""
    if isinstance(before, dict):
        return (
            isinstance(after, dict)
            and list(before) == list(after)
            and all(same_data(before[k], after[k]) for k in before)
        )
    if isinstance(before, (list, tuple)):
        return type(after) is type(before) and len(after) == len(before) and all(map(same_data, before, after))
    if isinstance(before, float) and math.isnan(before):
        return isinstance(after, float) and math.isnan(after)
    if isinstance(before, (str, bytes, int, float, type(None), Decimal, complex, set)):
        return before == after
    return type(after) is type(before)


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


@hypothesis.settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=messages, budget=st.integers(min_value=256, max_value=8192), redacting=st.booleans())
def test_encode_any_content_to_valid_json_within_budget(items, budget, redacting):
    snapshot = copy.deepcopy(items)
    text, truncated = content.encode(items, budget, SECRET_PATTERN if redacting else None)
    assert len(text.encode("utf-8")) <= budget
    parsed = json.loads(text)
    assert isinstance(parsed, list) and (truncated or len(parsed) == len(items))
    assert same_data(snapshot, items), "the caller's messages were modified"
    if redacting:
        assert not [s for s in strings_in(parsed) if SECRET_PATTERN.search(s)]


def nested(depth: int, leaf: Any, kind: str = "list") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def cyclic() -> dict:
    node: dict = {"name": "loop", "items": []}
    node["items"].append(node)
    node["self"] = node
    return node


def image_url(size: int) -> str:
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(size)).decode()


HARD_CONTENT = {  # built per test: some are large
    "deep list": lambda: nested(100_000, "leaf"),
    "deep dict": lambda: nested(100_000, "leaf", "dict"),
    "deep but encodable": lambda: nested(40, "x" * 5000, "dict"),
    "cyclic": cyclic,
    "10 MB text": lambda: "word " * (TEN_MB // 5),
    "10 MB multibyte": lambda: "中" * (TEN_MB // 3),
    "10 MB image": lambda: content.media_part(image_url(TEN_MB), "image"),
    "binary": lambda: bytes(range(256)) * 100,
    "huge int": lambda: 10**5000,
    "non-finite": lambda: [float("nan"), float("inf"), -float("inf")],
    "bad keys": lambda: {Unprintable(): 1, "\ud800": 2, (1, 2): 3},
    "objects": lambda: [object(), Unprintable(), Note(text="n", data=b"\xff")],
    "huge key": lambda: {"键" * 100_000: 1},
}


@pytest.mark.parametrize("name", list(HARD_CONTENT))
@pytest.mark.parametrize("redacting", [False, True], ids=["plain", "redacting"])
def test_encode_hard_content(name, redacting):
    value = HARD_CONTENT[name]()
    item = {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": value}]}
    text, truncated = content.encode([item], 4096, SECRET_PATTERN if redacting else None)
    assert len(text.encode("utf-8")) <= 4096
    assert json.loads(text)[0]["role"] == "tool"
    if name == "deep but encodable":
        assert truncated and value == HARD_CONTENT[name](), "the caller's nested strings were cut in place"


@pytest.mark.parametrize("where", ["role", "name", "id", "finish_reason"])
@pytest.mark.parametrize("char", ["x", "é", "👋", "\x01", '"'])
def test_oversized_structural_values_still_fit(where, char):
    part = {"type": "tool_call", "id": "c1", "name": "f", "arguments": {}}
    message = {"role": "assistant", "parts": [part], "finish_reason": "stop"}
    (message if where in ("role", "finish_reason") else part)[where] = char * 50_000
    text, truncated = content.encode([message], 512)
    assert truncated and len(text.encode("utf-8")) <= 512
    if where in ("name", "id"):  # a cut role or finish reason is still a string, but no longer one of the enum's
        fx.validate_content("output", text)
    else:
        assert json.loads(text)[0][where].startswith(char)


def test_deep_tool_arguments_stay_a_string():
    deep = "[" * 100_000 + "]" * 100_000
    assert content.parse_arguments(deep) == deep


# --- message content: real SDK calls against the fake provider ------------------------------------------------------

texts = st.one_of(st.text(max_size=200), st.text(st.characters(codec=None, exclude_categories=()), max_size=20))
json_payloads = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
tool_arguments = st.one_of(st.text(max_size=100), json_payloads.map(json.dumps), st.just("[" * 5000 + "]" * 5000))
data_urls = st.builds(
    lambda mime, raw: f"data:{mime};base64,{base64.b64encode(raw).decode()}",
    st.sampled_from(["image/png", "image/jpeg", "", "x/y;charset=1"]),
    st.binary(max_size=300),
) | st.sampled_from(["https://example.com/cat.png", "data:,no-base64", "not a url at all"])


def _openai_user_content(text: str, images: list[str]) -> Any:
    if not images:
        return text
    return [{"type": "text", "text": text}, *({"type": "image_url", "image_url": {"url": u}} for u in images)]


openai_messages = st.builds(
    lambda system, text, images, args, result, history: [
        *([{"role": "system", "content": system}] if system is not None else []),
        *(
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": args}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": result},
            ]
            if history
            else []
        ),
        {"role": "user", "content": _openai_user_content(text, images)},
    ],
    st.one_of(st.none(), texts),
    texts,
    st.lists(data_urls, max_size=2),
    tool_arguments,
    st.one_of(texts, st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), max_size=2), json_payloads),
    st.booleans(),
)


def normalised(result: Any) -> Any:
    """What the caller got, without the ids and timestamps the fake varies per request (streams: every item)."""
    if isinstance(result, (openai.Stream, anthropic.Stream)):
        return [fx.without_ids(item) for item in result]
    return fx.without_ids(result)


def outcome(call: Any) -> tuple:
    try:
        return ("returned", normalised(call()))
    except Exception as exc:
        return ("raised", type(exc), getattr(exc, "status_code", None))


def bare_and_instrumented(call: Any, provider_: Any) -> tuple[tuple, tuple]:
    """The call's outcome without instrumentation, then with it."""
    uninstrument(["openai", "anthropic"])
    try:
        bare = outcome(call)
    finally:
        instrument(["openai", "anthropic"], tracer_provider=provider_)
    return bare, outcome(call)


def check_instrumented_call(call: Any, tracer_provider: Any, exporter: Any, budget: int, span: bool = True) -> bool:
    """Same outcome as the bare SDK; the span (if the SDK got as far as sending) passes the content checks.
    Returns whether the call returned (rather than raised)."""
    exporter.clear()
    guard.reset()
    bare, instrumented = bare_and_instrumented(call, tracer_provider)
    assert instrumented == bare
    spans = list(exporter.get_finished_spans())
    assert spans or not span, "the instrumented call left no span"
    assert_content_ok(spans, budget)
    assert_exportable(spans)
    return bare[0] == "returned"


def assert_input_captured(exporter: Any) -> None:
    (span,) = exporter.get_finished_spans()
    assert gen_ai.GEN_AI_INPUT_MESSAGES in span.attributes, "the prompt was not captured"


@hypothesis.settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES)
@given(
    messages_=openai_messages,
    operation=st.sampled_from(["chat", "chat stream", "responses", "embeddings"]),
    budget=st.sampled_from([256, 1024, 65536]),
)
def test_openai_calls_with_any_content(fake, instrumented, tracer_provider, oai, messages_, operation, budget):
    fx.use_settings(content_max_bytes=budget)
    user_text = (
        messages_[-1]["content"] if isinstance(messages_[-1]["content"], str) else messages_[-1]["content"][0]["text"]
    )

    def call() -> Any:
        if operation == "chat":
            return oai.chat.completions.create(model="gpt-4o-mini", messages=messages_, tools=[fx.OPENAI_WEATHER_TOOL])
        if operation == "chat stream":
            return oai.chat.completions.create(model="gpt-4o-mini", messages=messages_, stream=True)
        if operation == "responses":
            history = [
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "lookup",
                    "arguments": m["tool_calls"][0]["function"]["arguments"],
                }
                for m in messages_
                if m.get("tool_calls")
            ]
            return oai.responses.create(
                model="gpt-4o-mini", input=[*history, {"role": "user", "content": user_text}], instructions=user_text
            )
        return oai.embeddings.create(model="text-embedding-3-small", input=user_text or " ")

    if check_instrumented_call(call, tracer_provider, instrumented, budget) and operation != "embeddings":
        assert_input_captured(instrumented)


anthropic_messages = st.builds(
    lambda text, images, arguments, result, history: [
        *(
            [
                {"role": "user", "content": "look it up"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": arguments}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": result}]},
            ]
            if history
            else []
        ),
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text or "?"},
                *(
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": d}}
                    for d in images
                ),
            ],
        },
    ],
    texts,
    st.lists(st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()), max_size=2),
    st.dictionaries(st.text(max_size=8), json_payloads, max_size=4),
    st.one_of(texts, st.lists(st.builds(lambda t: {"type": "text", "text": t or "?"}, texts), max_size=2)),
    st.booleans(),
)


@hypothesis.settings(max_examples=30, deadline=None, suppress_health_check=FIXTURES)
@given(
    messages_=anthropic_messages,
    system=st.one_of(st.none(), texts),
    stream=st.booleans(),
    budget=st.sampled_from([256, 1024, 65536]),
)
def test_anthropic_calls_with_any_content(fake, instrumented, tracer_provider, ant, messages_, system, stream, budget):
    fx.use_settings(content_max_bytes=budget)
    extra = {"system": system} if system else {}

    def call() -> Any:
        return ant.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=messages_, stream=stream, **extra)

    if check_instrumented_call(call, tracer_provider, instrumented, budget):
        assert_input_captured(instrumented)


def unsendable(kind: str) -> Any:
    return {"deep": nested(100_000, "x"), "cyclic": cyclic(), "object": object(), "bytes": b"\x00\xff"}[kind]


@pytest.mark.parametrize("kind", ["deep", "cyclic", "object", "bytes"])
def test_content_the_sdk_cannot_send_raises_the_sdks_own_error(fake, instrumented, tracer_provider, oai, ant, kind):
    """Whatever the SDK does with unserialisable content (raise, usually), it does the same when instrumented."""
    weird = unsendable(kind)
    openai_messages_ = [{"role": "tool", "tool_call_id": "c1", "content": weird}, {"role": "user", "content": "hi"}]
    openai_call = lambda: oai.chat.completions.create(model="gpt-4o-mini", messages=openai_messages_)  # noqa: E731
    check_instrumented_call(openai_call, tracer_provider, instrumented, 65536, span=False)
    anthropic_messages_ = [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": weird}]}
    ]
    anthropic_call = lambda: ant.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=anthropic_messages_)  # noqa: E731
    check_instrumented_call(anthropic_call, tracer_provider, instrumented, 65536, span=False)


@pytest.mark.parametrize("provider_name", ["openai", "anthropic"])
@pytest.mark.parametrize("prompt", ["text", "image"])
def test_ten_megabyte_prompts(fake, instrumented, oai, ant, provider_name, prompt):
    budget = config.current().content_max_bytes
    big_text = "lorem ipsum " * (TEN_MB // 12)
    if provider_name == "openai":
        user = big_text if prompt == "text" else _openai_user_content("look", [image_url(TEN_MB)])
        result = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": user}])
        assert result.choices[0].message.content.startswith("Echo:")
    else:
        source = {"type": "base64", "media_type": "image/png", "data": image_url(TEN_MB).split(",", 1)[1]}
        user = big_text if prompt == "text" else [{"type": "text", "text": "look"}, {"type": "image", "source": source}]
        result = ant.messages.create(
            model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": user}]
        )
        assert result.content[0].text.startswith("Echo:")
    (span,) = fx.spans(instrumented)
    assert span.attributes[semconv.MLTRACK_CONTENT_TRUNCATED] is True
    assert_content_ok([span], budget)
    assert_exportable([span])
    assert span.attributes[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] > 0


def test_openinference_attributes_stay_within_the_budget(fake, instrumented, oai):
    fx.use_settings(content_max_bytes=1024, openinference_attributes=True)
    messages_ = [
        {"role": "tool", "tool_call_id": "c1", "content": [{"a": "中" * 250}]},
        {"role": "user", "content": "hi"},
    ]
    oai.chat.completions.create(model="gpt-4o-mini", messages=messages_)
    assert_content_ok(fx.spans(instrumented), 1024)


# --- model names through a real SDK call ------------------------------------------------------------------------------


@hypothesis.settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(name=st.text(max_size=40))
@example(name="")
@example(name=LONG_NAMES[1])
def test_any_model_name_through_a_real_openai_call(fake, instrumented, tracer_provider, oai, name):
    def call() -> Any:
        return oai.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])

    check_instrumented_call(call, tracer_provider, instrumented, 1 << 20)
    (span,) = fx.spans(instrumented)
    assert span.attributes.get(gen_ai.GEN_AI_REQUEST_MODEL) == (name or None)


# --- .mltrack.yml through configure() ---------------------------------------------------------------------------------


@pytest.fixture
def configure_file(isolated_env):
    """configure(config_file=...) with exporters kept in memory; every example writes the same file."""
    path = isolated_env / "fuzz.mltrack.yml"
    yield path
    mltrack_otel.shutdown()
    ledger.LEDGER.reset()
    ledger.LEDGER.limits = ledger.Limits()
    config.set_current(None)


def configure_and_use(path: Any) -> None:
    """configure() from the file; then a logged call and shutdown() must work: no error may surface later."""
    mltrack_otel.configure(config_file=str(path), exporters=["memory"])
    with mltrack_otel.track_llm_context("fuzz") as tracker:
        tracker.log_prompt_response(
            "hi", "there", model="gpt-4o", provider="openai", token_usage={"prompt_tokens": 3, "completion_tokens": 1}
        )
    mltrack_otel.shutdown()


def assert_clear_error(error: ConfigError, path: Any, keys: list[str]) -> None:
    message = str(error)
    assert str(path) in message
    assert len(message) < 4000, "a rejected value must not bury the message"
    if keys:  # as given, or as the message quotes it (repr)
        assert any(key in message or repr(key)[1:-1] in message for key in keys), message


yaml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**80)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["(?i)x", "a(?i)", "(unclosed", "otlp", "mlflow", "http://127.0.0.1:1", "gzip"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = sorted(config.Settings.model_fields)


@hypothesis.settings(max_examples=80, deadline=None, suppress_health_check=FIXTURES)
@given(
    data=st.dictionaries(
        st.sampled_from(FIELDS) | st.text(min_size=1, max_size=12), yaml_values, min_size=1, max_size=3
    )
)
def test_any_config_mapping_is_used_or_a_clear_error(configure_file, data):
    text = yaml.safe_dump(data, allow_unicode=True)
    configure_file.write_text(text)
    try:
        configure_and_use(configure_file)
    except ConfigError as error:  # keys as YAML reads them back (it folds some characters, e.g. U+0085)
        assert_clear_error(error, configure_file, [str(k) for k in yaml.safe_load(text)])


@hypothesis.settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES)
@given(raw=st.one_of(st.binary(max_size=500), st.text(max_size=500).map(str.encode)))
def test_any_config_bytes_are_used_or_a_clear_error(configure_file, raw):
    configure_file.write_bytes(raw)
    try:
        configure_and_use(configure_file)
    except ConfigError as error:
        assert_clear_error(error, configure_file, [])


LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)
HOSTILE_FILES: dict[str, tuple[bytes, list[str]]] = {
    "billion laughs": (LAUGHS.encode(), []),
    "merge key": (b"base: &b {llm_log_prompts: false}\n<<: *b\n", []),
    "deep flow nesting": (b"service_name: " + b"[" * 100_000 + b"]" * 100_000, []),
    "deep block nesting": ("".join(f"{' ' * i}k{i}:\n" for i in range(2000)).encode(), []),
    "over a megabyte": (b"service_name: '" + b"x" * (1 << 20) + b"'\n", []),
    "a list": (b"- exporters\n- otlp\n", []),
    "a scalar": (b"42\n", []),
    "a string": (b"just some words\n", []),
    "invalid utf-8": (bytes(range(128, 256)) * 8, []),
    "nul byte": (b"service_name: a\x00b\n", []),
    "python tag": (b"service_name: !!python/object/apply:os.system ['echo pwned']\n", []),
    "unknown key": (b"llm_log_promts: false\n", ["llm_log_promts"]),
    "wrong type": (b"llm_log_prompts: [1, 2]\n", ["llm_log_prompts"]),
    "nested unknown key": (b"llm_providers: {openai: {defualt_model: x}}\n", ["llm_providers"]),
    "infinite timeout": (b"shutdown_timeout_seconds: .inf\n", ["shutdown_timeout_seconds"]),
    "huge timeout": (b"otlp_timeout_seconds: 1.0e+300\n", ["otlp_timeout_seconds"]),
    "huge queue": (b"export_queue_size: 100000000000000000000000000\n", ["export_queue_size"]),
    "huge delay": (b"export_delay_ms: 100000000000000000000\n", ["export_delay_ms"]),
    "flag mid-pattern": (b"redact_patterns: ['x(?i)y']\n", ["redact_patterns"]),
    "absurd price": (b"price_overrides: {m: {input_per_mtok: '1e400', output_per_mtok: 1}}\n", ["price_overrides"]),
    "huge binary value": (b"service_name: !!binary " + base64.b64encode(b"\xff" * 600_000) + b"\n", ["service_name"]),
    "non-string keys": (b"1: true\n? [a, b]\n: c\n", []),
}


@pytest.mark.parametrize("name", list(HOSTILE_FILES))
def test_hostile_config_files_are_clear_errors(configure_file, name):
    raw, keys = HOSTILE_FILES[name]
    configure_file.write_bytes(raw)
    with pytest.raises(ConfigError) as info:
        configure_and_use(configure_file)
    assert_clear_error(info.value, configure_file, keys)


def test_a_leading_inline_flag_in_a_redaction_pattern_works(configure_file):
    configure_file.write_text("redact_patterns: ['(?i)secret-[0-9]+', 'token']\n")
    mltrack_otel.configure(config_file=str(configure_file), exporters=["memory"])
    text, _ = content.encode(
        [{"role": "user", "parts": [content.text_part("SECRET-42 and token")]}], 1024, config.current().redactor
    )
    assert json.loads(text)[0]["parts"][0]["content"] == "[REDACTED] and [REDACTED]"
