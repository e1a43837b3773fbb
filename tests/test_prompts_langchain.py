"""Prompt identity through LangChain: a real PromptTemplate / ChatPromptTemplate carries its name, version and
content hash onto the chat-model run it feeds and the OpenAI SDK call below it (the counted one), with
langchain-openai's ChatOpenAI against the fake provider."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.frameworks

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_openai")

from langchain_core.prompts import ChatPromptTemplate, PromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai  # noqa: E402

import mltrack_otel  # noqa: E402
from mltrack_otel import semconv  # noqa: E402
from tests import test_langchain as tlc  # noqa: E402

# The fixtures this module uses (assigned, not imported, so ruff does not see test arguments as redefinitions).
otel = tlc.otel
sdk_on = tlc.sdk_on
chat = tlc.chat

NAME, VERSION, HASH = gen_ai.GEN_AI_PROMPT_NAME, semconv.GEN_AI_PROMPT_VERSION, semconv.MLTRACK_PROMPT_HASH


def identity(span) -> dict:
    return {k: span.attributes[k] for k in (NAME, VERSION, HASH) if k in span.attributes}


def model_spans(otel) -> list:
    """The chat spans (LangChain's and the SDK's), in start order."""
    return sorted((s for s in otel.spans if s.name.startswith("chat ")), key=lambda s: s.start_time)


def assistant(system: str = "You are {tone}.") -> ChatPromptTemplate:
    prompt = ChatPromptTemplate.from_messages([("system", system), ("human", "{question}")])
    prompt.name = "assistant"
    return prompt


def test_prompt_pipe_model_carries_the_prompt_identity_down_to_the_counted_call(otel, sdk_on, chat):
    (assistant() | chat()).invoke({"tone": "terse", "question": "why?"})
    spans = model_spans(otel)
    assert len(spans) == (2 if sdk_on else 1)
    (digest,) = {identity(s)[HASH] for s in spans}
    assert all(identity(s) == {NAME: "assistant", VERSION: digest, HASH: digest} for s in spans)
    (counted,) = otel.counted()
    assert counted in spans and counted.attributes["llm.cost.total"] > 0
    prompt_run = next(s for s in otel.ours() if s.name == "assistant")
    assert identity(prompt_run) == {}  # only model calls carry it: a prompt run has no cost to attribute


def test_the_hash_follows_the_template_not_the_variables(otel, chat):
    model = chat()
    (assistant() | model).invoke({"tone": "terse", "question": "one"})
    (assistant() | model).invoke({"tone": "chatty", "question": "two"})
    (assistant("You are {tone}. Use bullet points.") | model).invoke({"tone": "terse", "question": "three"})
    one, two, three = (identity(s)[VERSION] for s in model_spans(otel))
    assert one == two != three


def test_metadata_names_the_version_and_a_plain_prompt_without_name_gets_only_the_hash(otel, chat):
    named = PromptTemplate.from_template("Summarize: {text}")
    named.metadata = {"prompt_name": "summarize", "prompt_version": "3"}
    (named | chat()).invoke({"text": "spans"})
    (PromptTemplate.from_template("Translate: {text}") | chat()).invoke({"text": "spans"})
    first, second = model_spans(otel)
    assert identity(first)[NAME] == "summarize" and identity(first)[VERSION] == "3"
    assert NAME not in identity(second) and identity(second)[VERSION] == identity(second)[HASH]
    assert identity(first)[HASH] != identity(second)[HASH]
    relabelled = PromptTemplate.from_template("Summarize: {text}")
    relabelled.metadata = {"prompt_name": "summarize", "prompt_version": "4"}
    relabelled.name = "other-label"
    (relabelled | chat()).invoke({"text": "spans"})
    assert identity(model_spans(otel)[-1])[HASH] == identity(first)[HASH]  # labels are not content


def test_a_prompt_invoked_on_its_own_marks_the_model_call_given_its_messages(otel, sdk_on, chat):
    model = chat()
    value = assistant().invoke({"tone": "terse", "question": "why?"})
    model.invoke(value)
    model.invoke(value)  # the identity was taken by the first call: a second use is not guessed
    first, *rest = model_spans(otel)
    assert identity(first)[NAME] == "assistant"
    if sdk_on:
        assert identity(rest.pop(0))[NAME] == "assistant"
    assert [identity(s) for s in rest] == [{}] * len(rest)


def test_the_identity_goes_to_the_next_model_run_only(otel, chat):
    model = chat()
    chain = assistant() | model | RunnableLambda(lambda m: f"Rephrase: {m.content}") | model
    chain.invoke({"tone": "terse", "question": "why?"})
    model.invoke("an unrelated call")
    first, second, unrelated = model_spans(otel)
    assert identity(first)[NAME] == "assistant"
    assert identity(second) == identity(unrelated) == {}


def test_a_stream_carries_it_to_the_sdk_call_made_on_the_first_chunk(otel, sdk_on, chat):
    chunks = list((assistant() | chat()).stream({"tone": "terse", "question": "why?"}))
    assert chunks
    spans = model_spans(otel)
    assert len(spans) == (2 if sdk_on else 1)
    assert all(identity(s).get(NAME) == "assistant" for s in spans)


async def test_async_chains_each_carry_their_own_prompt(otel, sdk_on, chat):
    model = chat()
    first, second = assistant(), assistant("Be {tone}, always.")
    await asyncio.gather(
        (first | model).ainvoke({"tone": "a", "question": "1"}),
        (second | model).ainvoke({"tone": "b", "question": "2"}),
    )
    by_trace: dict[int, set] = {}
    for span in model_spans(otel):
        by_trace.setdefault(span.context.trace_id, set()).add(identity(span)[VERSION])
    assert len(by_trace) == 2 and all(len(v) == 1 for v in by_trace.values())  # one version per chain, no mixing
    assert len(set().union(*by_trace.values())) == 2


def test_our_template_in_use_marks_a_chain_without_a_prompt_and_a_langchain_prompt_wins_inside(otel, sdk_on, chat):
    model = chat()
    tpl = mltrack_otel.prompt("ours", "Answer: {{q}}", version="7")
    with tpl.use():
        model.invoke(tpl.format(q="why?"))
        (assistant() | model).invoke({"tone": "terse", "question": "why?"})
    ours, *rest = model_spans(otel)
    assert identity(ours) == {NAME: "ours", VERSION: "7", HASH: tpl.hash}
    if sdk_on:
        assert identity(rest.pop(0))[NAME] == "ours"
    assert all(identity(s)[NAME] == "assistant" for s in rest)
