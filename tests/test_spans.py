"""The lifecycle of non-model GenAI spans (mltrack_otel/instrumentation/_spans.py): exactly-once ending, failures,
the one content policy (byte budget, redaction, capture settings) and the convention's attribute names.

On the `harness` fixture (tests/traced.py, without the cost pipeline); the framework tests (test_langchain,
test_llama_index, test_dspy) cover the same lifecycle through LangChain, LlamaIndex and DSPy.
"""

from __future__ import annotations

import json

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from mltrack_otel import config, track_llm_context
from mltrack_otel.content import REDACTED, TRUNCATION_MARK
from mltrack_otel.instrumentation import _spans
from tests.traced import by_name

ARGS = "gen_ai.tool.call.arguments"
RESULT = "gen_ai.tool.call.result"
TRUNCATED = "mltrack.content.truncated"
BUDGET = 256  # the smallest content_max_bytes Settings accept
MARK_BYTES = len(TRUNCATION_MARK.encode())


@pytest.fixture
def tracer(harness):
    return harness.provider.get_tracer("test")


def tool(tracer, settings=None, arguments=None, **attributes):
    return _spans.start(
        tracer,
        "execute_tool",
        "get_weather",
        attributes,
        {ARGS: arguments},
        settings=settings or config.Settings(),
        description="Weather for a city",
    )


# --- lifecycle -------------------------------------------------------------------------------------------------


def test_tool_span_carries_the_convention_names(tracer, harness):
    tool(tracer, arguments={"city": "Paris"}, **{"gen_ai.tool.call.id": "call_1"}).finish({RESULT: "sunny"})

    span = harness.one()
    assert span.name == "execute_tool get_weather"
    assert span.kind is SpanKind.INTERNAL
    assert dict(span.attributes) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.description": "Weather for a city",
        "gen_ai.tool.call.id": "call_1",
        ARGS: '{"city":"Paris"}',
        RESULT: "sunny",
    }
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(
    ("operation", "name", "span_name", "key"),
    [
        ("invoke_agent", "Planner", "invoke_agent Planner", "gen_ai.agent.name"),
        ("invoke_workflow", "Flow", "invoke_workflow Flow", "gen_ai.workflow.name"),
        ("retrieval", "VectorIndexRetriever", "retrieval VectorIndexRetriever", None),
        (None, "RunnableSequence", "RunnableSequence", None),  # a framework step with no GenAI operation
    ],
)
def test_each_kind_is_named_by_the_convention(tracer, harness, operation, name, span_name, key):
    _spans.start(tracer, operation, name, settings=config.Settings()).finish()

    span = harness.one()
    assert span.name == span_name
    assert span.attributes.get("gen_ai.operation.name") == operation
    if key is not None:
        assert span.attributes[key] == name


def test_finish_is_exactly_once(tracer, harness):
    operation = tool(tracer, arguments={"city": "Paris"})
    operation.finish({RESULT: "first"}, {"gen_ai.tool.call.id": "a"})
    operation.finish({RESULT: "second"}, {"gen_ai.tool.call.id": "b"})
    operation.fail(RuntimeError("late"))

    span = harness.one()  # one span, ended once (a second end() would log a warning and export nothing more)
    assert span.attributes[RESULT] == "first"
    assert span.attributes["gen_ai.tool.call.id"] == "a"
    assert "error.type" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET
    assert operation.ended


class ProviderError(Exception):
    code = "rate_limit_exceeded"
    status_code = 429


@pytest.mark.parametrize(
    ("error", "expected"), [(ValueError("bad city"), "ValueError"), (ProviderError("slow down"), "rate_limit_exceeded")]
)
def test_fail_records_error_type_and_status(tracer, harness, error, expected):
    operation = tool(tracer, arguments={"city": "Paris"})
    operation.fail(error)
    operation.finish({RESULT: "after the failure"})

    span = harness.one()
    assert span.attributes["error.type"] == expected
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert span.events[0].attributes["exception.message"] == str(error)
    assert span.attributes.get("http.response.status_code") == getattr(error, "status_code", None)
    assert RESULT not in span.attributes


def test_fail_keeps_the_attributes_it_is_given(tracer, harness):
    operation = _spans.start(tracer, None, "AgentExecutor", settings=config.Settings())
    operation.fail(RuntimeError("boom"), {"gen_ai.operation.name": "invoke_agent"})

    span = harness.one()
    assert span.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert span.attributes["error.type"] == "RuntimeError"


def test_a_reported_error_without_exception_marks_the_span_failed(tracer, harness):
    tool(tracer).finish({RESULT: "no such city"}, {"error.type": "tool_error"})

    span = harness.one()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "tool_error"
    assert span.events == ()


def test_parent_context_and_conversation_of_the_scope(tracer, harness):
    from opentelemetry import trace

    parent = tracer.start_span("parent")
    with track_llm_context("chat-session", conversation_id="conv-7"):
        child = _spans.start(
            tracer, "retrieval", "docs", settings=config.Settings(), context=trace.set_span_in_context(parent)
        )
    child.finish()
    parent.end()

    span = next(s for s in harness.spans() if s.name == "retrieval docs")
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.attributes["gen_ai.conversation.id"] == "conv-7"


# --- content policy ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("é" * 300, "é" * ((BUDGET - MARK_BYTES) // 2)),  # 2-byte characters: cut on a character boundary
        ("a" + "é" * 300, "a" + "é" * ((BUDGET - MARK_BYTES - 1) // 2)),  # a boundary one byte short of the budget
        ("😀" * 100, "😀" * ((BUDGET - MARK_BYTES) // 4)),  # 4-byte characters
        ("x" * 1000, "x" * (BUDGET - MARK_BYTES)),
    ],
)
def test_text_is_cut_in_bytes_not_characters(tracer, harness, text, kept):
    settings = config.Settings(content_max_bytes=BUDGET)
    tool(tracer, settings, arguments=text).finish({RESULT: text})

    span = harness.one()
    for key in (ARGS, RESULT):
        assert span.attributes[key] == kept + TRUNCATION_MARK
        assert len(span.attributes[key].encode()) <= BUDGET
    assert span.attributes[TRUNCATED] is True


def test_multibyte_text_within_the_budget_in_bytes_is_kept_whole(tracer, harness):
    settings = config.Settings(content_max_bytes=BUDGET)
    text = "é" * (BUDGET // 2)  # exactly the budget in bytes, half of it in characters
    tool(tracer, settings, arguments=text).finish({RESULT: text + "a"})  # one byte over

    span = harness.one()
    assert span.attributes[ARGS] == text
    assert span.attributes[RESULT].endswith(TRUNCATION_MARK)
    assert span.attributes[TRUNCATED] is True


def test_json_values_and_lists_stay_valid_json_within_the_budget(tracer, harness):
    settings = config.Settings(content_max_bytes=BUDGET)
    documents = [{"id": str(i), "content": "ü" * 100, "score": i / 10} for i in range(5)]
    operation = _spans.start(
        tracer, "retrieval", "docs", None, {"gen_ai.retrieval.query.text": "où"}, settings=settings
    )
    operation.finish({"gen_ai.retrieval.documents": documents})

    spans = by_name(harness.exporter)
    kept = json.loads(spans["retrieval docs"].attributes["gen_ai.retrieval.documents"])
    assert kept == documents[-len(kept) :] and 0 < len(kept) < len(documents)  # the oldest are dropped whole
    assert len(spans["retrieval docs"].attributes["gen_ai.retrieval.documents"].encode()) <= BUDGET
    assert spans["retrieval docs"].attributes["gen_ai.retrieval.query.text"] == "où"


def test_tool_arguments_as_json_are_cut_inside_their_strings(tracer, harness):
    settings = config.Settings(content_max_bytes=BUDGET)
    tool(tracer, settings, arguments={"city": "Zürich " * 100, "units": "metric"}).finish()

    span = harness.one()
    arguments = json.loads(span.attributes[ARGS])
    assert len(span.attributes[ARGS].encode()) <= BUDGET
    assert arguments["units"] == "metric"
    assert arguments["city"].startswith("Zürich Zürich") and arguments["city"].endswith(TRUNCATION_MARK)
    assert span.attributes[TRUNCATED] is True


def test_capture_off_records_no_content(tracer, harness):
    settings = config.Settings(llm_log_prompts=False, llm_log_responses=False, openinference_attributes=True)
    operation = tool(tracer, settings, arguments={"city": "secret-city"})
    assert operation.capture_out is False
    operation.finish({RESULT: "secret-result", "output.value": "secret-output"})
    agent = _spans.start(tracer, "invoke_agent", "Planner", None, {"input.value": "secret-input"}, settings=settings)
    agent.finish({"gen_ai.output.messages": [{"role": "assistant", "parts": []}]})

    for span in harness.spans():
        text = repr(dict(span.attributes))
        assert "secret" not in text
        assert TRUNCATED not in span.attributes
        assert not {ARGS, RESULT, "input.value", "output.value", "gen_ai.output.messages"} & set(span.attributes)
    names = by_name(harness.exporter)
    assert names["execute_tool get_weather"].attributes["gen_ai.tool.name"] == "get_weather"  # metadata stays
    assert names["invoke_agent Planner"].attributes["openinference.span.kind"] == "AGENT"


def test_prompts_only(tracer, harness):
    settings = config.Settings(llm_log_responses=False)
    tool(tracer, settings, arguments={"city": "Paris"}).finish({RESULT: "sunny"})

    span = harness.one()
    assert json.loads(span.attributes[ARGS]) == {"city": "Paris"}
    assert RESULT not in span.attributes


def test_redaction_applies_to_text_and_json_keys_and_values(tracer, harness):
    settings = config.Settings(redact_patterns=(r"sk-[A-Za-z0-9]{8,}",))
    secret = "sk-ABCDEFGH1234"
    tool(tracer, settings, arguments={"name": secret, secret: 1}).finish({RESULT: f"key {secret} used"})

    span = harness.one()
    assert secret not in repr(dict(span.attributes))
    assert json.loads(span.attributes[ARGS]) == {"name": REDACTED, REDACTED: 1}
    assert span.attributes[RESULT] == f"key {REDACTED} used"


def test_failure_message_is_redacted(tracer, harness):
    settings = config.Settings(redact_patterns=(r"sk-[A-Za-z0-9]{8,}",))
    tool(tracer, settings).fail(RuntimeError("bad key sk-ABCDEFGH1234"))

    span = harness.one()
    assert "sk-ABCDEFGH1234" not in repr(span.events[0].attributes) + span.status.description


def test_openinference_values_only_when_on(tracer, harness):
    inputs = {"input.value": {"question": "why?"}}
    for oi in (False, True):
        settings = config.Settings(openinference_attributes=oi)
        operation = _spans.start(tracer, None, f"chain-{oi}", None, inputs, settings=settings)
        operation.finish({"output.value": "because"})

    spans = {s.name: s.attributes for s in harness.spans()}
    assert not {"input.value", "output.value", "openinference.span.kind"} & set(spans["chain-False"])
    on = spans["chain-True"]
    assert json.loads(on["input.value"]) == {"question": "why?"}
    assert on["input.mime_type"] == "application/json"  # JSON for an object, plain text for a string
    assert on["output.value"] == "because" and "output.mime_type" not in on
    assert on["openinference.span.kind"] == "CHAIN"
