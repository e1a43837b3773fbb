"""Prompt identity through LlamaIndex: a real PromptTemplate / ChatPromptTemplate given to LLM.predict, stream or
apredict carries its name, version and content hash onto the chat span and the OpenAI SDK call below it (the
counted one); llama-index's OpenAI LLM against the fake provider."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.frameworks

pytest.importorskip("llama_index.core")
pytest.importorskip("llama_index.llms.openai")

from llama_index.core.base.llms.types import ChatMessage  # noqa: E402
from llama_index.core.prompts import ChatPromptTemplate, PromptTemplate  # noqa: E402
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai  # noqa: E402

from mltrack_otel import semconv  # noqa: E402
from mltrack_otel.instrumentation import llama_index as li  # noqa: E402
from tests import test_llama_index as tli  # noqa: E402

# The fixtures this module uses (assigned, not imported, so ruff does not see test arguments as redefinitions).
_offline_tokenizer = tli._offline_tokenizer
sdk = tli.sdk
traced = tli.traced
llm = tli.llm
index = tli.index

NAME, VERSION, HASH = gen_ai.GEN_AI_PROMPT_NAME, semconv.GEN_AI_PROMPT_VERSION, semconv.MLTRACK_PROMPT_HASH


def identity(span) -> dict:
    return {k: span.attributes[k] for k in (NAME, VERSION, HASH) if k in span.attributes}


def model_spans(exporter, ours_only: bool = False) -> list:
    """The chat spans (LlamaIndex's, and the SDK's unless ours_only), in start order."""
    spans = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    if ours_only:
        spans = [s for s in spans if s.instrumentation_scope.name == li.__name__]
    return sorted(spans, key=lambda s: s.start_time)


def topic_prompt(text: str = "Write one sentence about {topic}.") -> PromptTemplate:
    return PromptTemplate(text, metadata={"prompt_name": "topic"})


def test_predict_carries_the_prompt_identity_down_to_the_counted_call(traced, sdk, llm):
    llm.predict(topic_prompt(), topic="cats")
    spans = model_spans(traced)
    assert len(spans) == (2 if sdk else 1)
    digest = identity(spans[0])[HASH]
    assert all(identity(s) == {NAME: "topic", VERSION: digest, HASH: digest} for s in spans)
    (counted,) = tli.counted(traced.get_finished_spans())
    assert counted in spans and counted.attributes["llm.cost.total"] > 0


def test_the_hash_follows_the_template_not_the_variables_and_metadata_names_the_version(traced, llm):
    llm.predict(topic_prompt(), topic="cats")
    llm.predict(topic_prompt(), topic="dogs")
    llm.predict(topic_prompt("Write two sentences about {topic}."), topic="cats")
    pinned = PromptTemplate("Write one sentence about {topic}.", metadata={"prompt_name": "t", "prompt_version": 4})
    llm.predict(pinned, topic="cats")
    one, two, three, four = (identity(s) for s in model_spans(traced, ours_only=True))
    assert one[VERSION] == two[VERSION] != three[VERSION]
    assert four[VERSION] == "4" and four[HASH] == one[HASH]  # same text: same hash, whatever the version


def test_a_chat_prompt_template_is_hashed_by_roles_and_contents(traced, llm):
    def chat_prompt(system: str) -> ChatPromptTemplate:
        return ChatPromptTemplate(
            [ChatMessage(role="system", content=system), ChatMessage(role="user", content="{question}")],
            metadata={"prompt_name": "qa"},
        )

    llm.predict(chat_prompt("Answer briefly."), question="why?")
    llm.predict(chat_prompt("Answer at length."), question="why?")
    first, second = (identity(s) for s in model_spans(traced, ours_only=True))
    assert first[NAME] == second[NAME] == "qa" and first[HASH] != second[HASH]
    assert li.prompt_identity(chat_prompt("Answer briefly."))[HASH] == first[HASH]


def test_a_stream_carries_it_to_the_sdk_call_made_while_reading(traced, sdk, llm):
    tokens = list(llm.stream(topic_prompt(), topic="cats"))
    assert tokens
    spans = model_spans(traced)
    assert len(spans) == (2 if sdk else 1)
    assert all(identity(s).get(NAME) == "topic" for s in spans)


def test_calls_after_predict_and_concurrent_apredicts_do_not_mix(traced, sdk, llm):
    async def main():
        await asyncio.gather(
            llm.apredict(topic_prompt(), topic="cats"),
            llm.apredict(topic_prompt("Name three {topic}."), topic="birds"),
        )

    asyncio.run(main())
    llm.complete("an unrelated call")
    by_trace: dict[int, set] = {}
    for span in traced.get_finished_spans():
        if span.name.startswith(("chat ", "text_completion ")):
            by_trace.setdefault(span.context.trace_id, set()).add(identity(span).get(VERSION))
    # Three traces: one version each for the two predicts (never mixed), none at all for the unrelated call.
    assert sorted(len(v) for v in by_trace.values()) == [1, 1, 1]
    versions = [next(iter(v)) for v in by_trace.values()]
    assert versions.count(None) == 1 and len(set(versions)) == 3


def test_a_built_in_prompt_is_named_by_its_prompt_type():
    from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT

    found = li.prompt_identity(DEFAULT_TEXT_QA_PROMPT)
    assert found[NAME] == "text_qa" and found[VERSION] == found[HASH]


def test_a_query_engine_attributes_its_answer_to_the_built_in_qa_prompt(index, sdk, traced, llm):
    index.as_query_engine(llm=llm, similarity_top_k=2).query("What is the capital of France?")
    spans = model_spans(traced)
    assert len(spans) == (2 if sdk else 1)
    assert all(identity(s)[NAME] == "text_qa" for s in spans)
    embeddings = [s for s in traced.get_finished_spans() if s.name.startswith("embeddings")]
    assert embeddings and all(identity(s) == {} for s in embeddings)  # the retrieval is not the prompt's
