"""content.encode: GenAI JSON within a byte budget, redaction that cannot break JSON, bad content never raising.

The schemas in tests/schemas/ are condensed from the GenAI semantic conventions JSON schemas (v1.41.0):
https://github.com/open-telemetry/semantic-conventions/tree/v1.41.0/docs/gen-ai (gen-ai-input-messages.json,
gen-ai-output-messages.json, gen-ai-system-instructions.json, gen-ai-tool-definitions.json), now maintained at
https://github.com/open-telemetry/semantic-conventions-genai/tree/main/docs/gen-ai.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltrack_otel import content
from tests.instr_fixtures import validate_content


def msg(role: str, text: str) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def test_small_list_is_encoded_whole():
    messages = [msg("system", "be brief"), msg("user", "héllo 👋")]
    text, truncated = content.encode(messages, 1024)
    assert not truncated
    assert json.loads(text) == messages
    assert "héllo 👋" in text  # UTF-8, not \\u escapes: readable in every backend
    validate_content("input", text)


def test_oldest_messages_are_dropped_first():
    messages = [msg("user", f"message number {i} " + "x" * 100) for i in range(50)]
    text, truncated = content.encode(messages, 1000)
    assert truncated
    assert len(text.encode()) <= 1000
    kept = json.loads(text)
    assert 1 <= len(kept) < 50
    assert kept == messages[-len(kept) :]  # a suffix: the newest messages, whole
    validate_content("input", text)


def test_a_single_message_too_large_has_its_text_cut():
    huge = msg("assistant", "word " * 10_000)
    huge["finish_reason"] = "stop"
    text, truncated = content.encode([msg("user", "hi"), huge], 2048)
    assert truncated
    assert len(text.encode()) <= 2048
    (kept,) = json.loads(text)
    assert kept["role"] == "assistant" and kept["finish_reason"] == "stop"
    assert kept["parts"][0]["content"].endswith(content.TRUNCATION_MARK)
    assert kept["parts"][0]["content"].startswith("word word")
    validate_content("output", text)


@pytest.mark.parametrize("char", ["é", "中", "👋", '"', "\\", "\n", "\x01"])
def test_budget_is_in_utf8_bytes_of_the_escaped_json(char):
    text, truncated = content.encode([msg("user", char * 5000)], 700)
    assert truncated
    assert len(text.encode("utf-8")) <= 700
    assert json.loads(text)[0]["parts"][0]["content"].startswith(char)


def test_many_small_strings_are_cut_until_the_item_fits():
    arguments = {f"key{i}": f"value {i} " * 20 for i in range(200)}
    call = {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": arguments}]}
    text, truncated = content.encode([call], 600)
    assert truncated and len(text.encode()) <= 600
    validate_content("input", text)


def test_redaction_is_applied_to_values_and_keeps_the_schema():
    pattern = re.compile(r"sk-[A-Za-z0-9]+|\d{3}-\d{2}-\d{4}")
    messages = [
        msg("user", "my key is sk-abc123 and ssn 123-45-6789"),
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "sk-id1", "name": "f", "arguments": {"k": "sk-x9"}}],
        },
    ]
    text, _ = content.encode(messages, 4096, pattern)
    assert "sk-abc123" not in text and "123-45-6789" not in text and "sk-x9" not in text
    assert text.count(content.REDACTED) == 3
    assert json.loads(text)[1]["parts"][0]["id"] == "sk-id1"  # structural values are left alone
    assert messages[0]["parts"][0]["content"].startswith("my key is sk-")  # the caller's data is not modified
    validate_content("input", text)


@pytest.mark.parametrize("pattern", [r'"', r"[\[\]{}:,]", r".*", r"\\", r"content"])
def test_redaction_patterns_that_match_json_syntax_cannot_break_it(pattern):
    text, _ = content.encode([msg("user", 'a "quoted" {x: [1, 2]} \\ content')], 4096, re.compile(pattern))
    validate_content("input", text)


class Unprintable:
    def __repr__(self):
        raise RuntimeError("no repr")


class Model:
    def model_dump(self, **_):
        return {"from": "model_dump"}


def deep(n: int) -> list:
    value: list = []
    for _ in range(n):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        b"\x00\xff raw bytes",
        Unprintable(),
        Model(),
        float("nan"),
        float("inf"),
        {1: "int key", None: "none key"},
        deep(5000),
        "lone surrogate \ud800 here",
        object(),
    ],
    ids=["bytes", "unprintable", "model", "nan", "inf", "keys", "deep", "surrogate", "object"],
)
def test_bad_content_never_raises_and_stays_valid_json(value):
    text, _ = content.encode([{"role": "tool", "parts": [{"type": "tool_call_response", "response": value}]}], 4096)
    parsed = json.loads(text)
    text.encode("utf-8")  # exportable: no lone surrogates
    assert parsed[0]["parts"][0]["type"] == "tool_call_response"


def test_cycles_never_raise():
    cyclic: dict = {"a": 1}
    cyclic["self"] = cyclic
    text, _ = content.encode([{"role": "user", "parts": [{"type": "x", "payload": cyclic}]}], 4096)
    assert json.loads(text)[0]["parts"][0]["payload"]["self"] == "[cycle]"


def test_bytes_become_base64():
    text, _ = content.encode([{"type": "blob", "modality": "image", "content": b"\x89PNG"}], 1024)
    assert json.loads(text)[0]["content"] == "iVBORw=="


def test_media_parts():
    blob = content.media_part("data:image/png;base64,iVBORw==", "image")
    assert blob == {"type": "blob", "modality": "image", "content": "iVBORw==", "mime_type": "image/png"}
    uri = content.media_part("https://example.com/cat.png", "image")
    assert uri == {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png"}
    text, _ = content.encode([{"role": "user", "parts": [blob, uri]}], 1024)
    validate_content("input", text)


def test_parse_arguments():
    assert content.parse_arguments('{"city": "Paris"}') == {"city": "Paris"}
    assert content.parse_arguments('{"city": "Par') == '{"city": "Par'  # a cut stream keeps the string
    assert content.parse_arguments({"already": "parsed"}) == {"already": "parsed"}


def test_the_schema_checks_can_fail():
    """The part-level checks catch what GenericPart alone would let through."""
    with pytest.raises(jsonschema.ValidationError):
        validate_content("input", json.dumps([{"role": "user", "parts": [{"type": "text", "text": "wrong key"}]}]))
    with pytest.raises(jsonschema.ValidationError):
        validate_content("output", json.dumps([msg("assistant", "no finish reason")]))
    with pytest.raises(jsonschema.ValidationError):
        validate_content("tools", json.dumps([{"type": "function", "name": "f"}]))  # description is required


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "assistant"]),
                "parts": st.lists(
                    st.fixed_dictionaries({"type": st.just("text"), "content": st.text()})
                    | st.fixed_dictionaries({"type": st.just("tool_call_response"), "response": json_values}),
                    max_size=4,
                ),
            }
        ),
        max_size=12,
    ),
    budget=st.integers(min_value=256, max_value=4096),
)
def test_any_messages_fit_any_budget_as_valid_json(items, budget):
    text, truncated = content.encode(items, budget)
    assert len(text.encode("utf-8")) <= budget
    parsed = json.loads(text)
    assert isinstance(parsed, list)
    if not truncated:
        assert len(parsed) == len(items)
    for message in parsed:
        assert set(message) >= {"role", "parts"}


def test_redaction_reaches_values_inside_objects():
    import re

    from pydantic import BaseModel

    from mltrack_otel import content as content_module

    class Secret(BaseModel):
        token: str

    message = {"role": "user", "parts": [{"type": "text", "content": "key sk-ABC123"}, {"x": Secret(token="sk-XYZ9")}]}
    text, _ = content_module.encode([message], 10_000, re.compile(r"sk-[A-Za-z0-9]+"))
    assert "sk-" not in text and text.count("[REDACTED]") == 2
