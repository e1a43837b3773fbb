"""Prompt templates (mltrack_otel/prompts.py): their identity on real OpenAI SDK calls against the fake provider,
versions from the content hash or given, the MLflow prompt registry (a real sqlite store), and bad input."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading

import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

import mltrack_otel
from mltrack_otel import PromptError, call_context, prompts, semconv
from tests.instr_fixtures import attrs, spans

MODEL = "gpt-4o-mini"
NAME, VERSION, HASH = gen_ai.GEN_AI_PROMPT_NAME, semconv.GEN_AI_PROMPT_VERSION, semconv.MLTRACK_PROMPT_HASH
IDENTITY = (NAME, VERSION, HASH)

SUMMARIZE = 'Summarize in {{ words }} words. Answer as JSON {"summary": ...}:\n{{text}}'
CHAT = [
    {"role": "system", "content": "You are a {{tone}} assistant."},
    {"role": "user", "content": "{{question}}"},
]


def identity(span) -> dict:
    a = attrs(span)
    return {k: a[k] for k in IDENTITY if k in a}


def ask(client, content: str):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])


# --- formatting ------------------------------------------------------------------------------------------------


def test_text_template_fills_double_brace_placeholders_and_leaves_single_braces():
    tpl = mltrack_otel.prompt("summarize", SUMMARIZE)
    assert tpl.variables == ("words", "text")
    assert tpl.format(words=20, text="a long text") == (
        'Summarize in 20 words. Answer as JSON {"summary": ...}:\na long text'
    )


def test_chat_template_gives_messages_and_substitutes_in_one_pass():
    tpl = mltrack_otel.prompt("assistant", CHAT)
    messages = tpl.format(tone="terse", question="what is {{tone}}?", unused="ignored")
    assert messages == [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "what is {{tone}}?"},  # a value is never expanded again
    ]
    messages[0]["content"] = "changed"  # a fresh list each time: the template is not touched
    assert tpl.format(tone="x", question="y")[0]["content"] == "You are a x assistant."
    assert tpl.template == CHAT and tpl.is_chat


def test_a_missing_variable_is_refused_with_the_names():
    tpl = mltrack_otel.prompt("assistant", CHAT)
    with pytest.raises(PromptError, match=r"prompt 'assistant' needs question \(format\(\) was given: tone\)"):
        tpl.format(tone="terse")
    with pytest.raises(ValueError, match="needs tone, question"):  # PromptError is a ValueError too
        tpl.format()


@pytest.mark.parametrize(
    ("name", "template", "version", "message"),
    [
        ("", "x", None, "name must be a non-empty str"),
        (None, "x", None, "name must be a non-empty str"),
        ("p", "   ", None, "the template is empty"),
        ("p", b"bytes", None, "must be a str or a list"),
        ("p", 42, None, "must be a str or a list"),
        ("p", [], None, "needs at least one message"),
        ("p", [{"role": "user"}], None, "exactly 'role' and 'content'"),
        ("p", [{"role": "user", "content": "x", "name": "n"}], None, "exactly 'role' and 'content'"),
        ("p", ["user: hi"], None, "must be a dict"),
        ("p", [{"role": "robot", "content": "x"}], None, "has role 'robot'"),
        ("p", [{"role": "user", "content": ["part"]}], None, "content must be a str"),
        ("p", "x", True, "version must be a str or an int"),
        ("p", "x", 1.5, "version must be a str or an int"),
        ("p", "x", " ", "version must not be empty"),
    ],
)
def test_bad_input_is_refused(name, template, version, message):
    with pytest.raises(PromptError, match=message):
        mltrack_otel.prompt(name, template, version)


def test_a_template_is_immutable_and_compares_by_identity():
    tpl = mltrack_otel.prompt("p", "Hi {{x}}")
    with pytest.raises(AttributeError, match="immutable"):
        tpl.version = "2"
    assert tpl == mltrack_otel.prompt("p", "Hi {{x}}") and len({tpl, mltrack_otel.prompt("p", "Hi {{x}}")}) == 1
    assert tpl != mltrack_otel.prompt("p", "Hi {{x}}", version="1")


# --- versions ------------------------------------------------------------------------------------------------------


def test_the_version_is_the_content_hash_which_follows_the_template_not_the_variables():
    one = mltrack_otel.prompt("summarize", SUMMARIZE)
    same = mltrack_otel.prompt("summarize", SUMMARIZE)
    changed = mltrack_otel.prompt("summarize", SUMMARIZE.replace("words", "sentences"))
    assert one.version == one.hash == same.hash and len(one.hash) == 12 and int(one.hash, 16) >= 0
    assert changed.version != one.version
    assert one.source == "hash"
    # The hash is of the template's canonical JSON: a chat template with the same text is another version.
    assert mltrack_otel.prompt("s", [{"role": "user", "content": SUMMARIZE}]).hash != one.hash
    assert prompts.content_hash(SUMMARIZE) == one.hash


def test_the_hash_does_not_depend_on_the_name_or_on_dict_key_order():
    reordered = [{"content": m["content"], "role": m["role"]} for m in CHAT]
    assert mltrack_otel.prompt("a", CHAT).hash == mltrack_otel.prompt("b", reordered).hash


def test_an_explicit_version_is_kept_and_the_hash_still_set():
    tpl = mltrack_otel.prompt("summarize", SUMMARIZE, version=3)
    assert tpl.version == "3" and tpl.source == "explicit"
    assert dict(tpl.attributes) == {NAME: "summarize", VERSION: "3", HASH: prompts.content_hash(SUMMARIZE)}


def test_one_version_given_two_templates_is_warned_once(caplog):
    caplog.set_level(logging.WARNING, logger="mltrack_otel")
    mltrack_otel.prompt("reused-version", "A {{x}}", version="v1")
    mltrack_otel.prompt("reused-version", "B {{x}}", version="v1")
    mltrack_otel.prompt("reused-version", "C {{x}}", version="v1")
    warned = [r for r in caplog.records if "reused-version" in r.getMessage()]
    assert len(warned) == 1 and "two different templates" in warned[0].getMessage()


# --- calls made while a template is in use ---------------------------------------------------------------------


def test_calls_inside_use_carry_the_identity_and_calls_outside_do_not(instrumented, oai, fake):
    tpl = mltrack_otel.prompt("summarize", SUMMARIZE)
    ask(oai, "before")
    with tpl.use() as used:
        assert used is tpl
        ask(oai, tpl.format(words=5, text="spans and traces"))
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "second call, same block"}])
    ask(oai, "after")
    before, first, second, after = spans(instrumented)
    expected = {NAME: "summarize", VERSION: tpl.hash, HASH: tpl.hash}
    assert identity(first) == identity(second) == expected
    assert identity(before) == identity(after) == {}
    assert fake.requests[1].json["messages"][0]["content"].startswith("Summarize in 5 words.")


def test_chat_messages_from_format_are_sent_as_they_are(instrumented, oai, fake):
    tpl = mltrack_otel.prompt("assistant", CHAT, version="2024-06")
    with tpl.use():
        oai.chat.completions.create(model=MODEL, messages=tpl.format(tone="terse", question="Why OTel?"))
    (span,) = spans(instrumented)
    assert identity(span) == {NAME: "assistant", VERSION: "2024-06", HASH: tpl.hash}
    assert fake.requests[-1].json["messages"] == tpl.format(tone="terse", question="Why OTel?")


def test_format_outside_every_block_attaches_nothing(instrumented, oai):
    tpl = mltrack_otel.prompt("assistant", CHAT)
    oai.chat.completions.create(model=MODEL, messages=tpl.format(tone="a", question="b"))
    ask(oai, "unrelated, later")
    assert [identity(s) for s in spans(instrumented)] == [{}, {}]
    assert call_context.current() == {}


def test_format_inside_a_block_switches_the_identity_until_the_next_format_or_the_block_end(instrumented, oai):
    first = mltrack_otel.prompt("first", "One {{x}}")
    second = mltrack_otel.prompt("second", "Two {{x}}", version=7)
    with prompts.scope():
        ask(oai, "scope, before any format")
        ask(oai, first.format(x=1))
        ask(oai, second.format(x=2))
        ask(oai, "still second: no format since")
    ask(oai, "after the scope")
    with first.use():
        ask(oai, second.format(x=3))  # format() inside another template's block: the formatted one is in use
        with mltrack_otel.prompts.scope():
            ask(oai, first.format(x=4))
        ask(oai, "back to what the inner block found")
    names = [identity(s).get(NAME) for s in spans(instrumented)]
    versions = [identity(s).get(VERSION) for s in spans(instrumented)]
    assert names == [None, "first", "second", "second", None, "second", "first", "second"]
    assert versions[2] == "7" and versions[1] == first.hash


def test_an_outer_attribute_survives_and_the_prompt_ends_with_the_block(instrumented, oai):
    tpl = mltrack_otel.prompt("p", "Q {{x}}")
    with call_context.attached({"user.id": "u1"}):
        with tpl.use():
            ask(oai, tpl.format(x=1))
        ask(oai, "after the prompt, inside the user block")
    inside, after = spans(instrumented)
    assert attrs(inside)["user.id"] == attrs(after)["user.id"] == "u1"
    assert identity(inside)[NAME] == "p" and identity(after) == {}


def test_async_tasks_carry_the_identity_of_the_block_they_were_created_in(instrumented, aoai):
    one = mltrack_otel.prompt("one", "One {{x}}")
    two = mltrack_otel.prompt("two", "Two {{x}}")

    async def call(tpl, x):
        with tpl.use():
            await asyncio.sleep(0)  # interleave the two tasks
            return await aoai.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": tpl.format(x=x)}]
            )

    async def outside():
        return await aoai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "none"}])

    async def main():
        with one.use():
            inherited = asyncio.create_task(outside())  # created inside the block: inherits `one`
        await asyncio.gather(call(one, 1), call(two, 2), call(one, 3), outside(), inherited)

    asyncio.run(main())
    seen = sorted(identity(s).get(NAME, "-") + ":" + identity(s).get(VERSION, "-") for s in spans(instrumented))
    assert seen == sorted(["one:" + one.hash] * 3 + ["two:" + two.hash, "-:-"])


@pytest.mark.skipif(getattr(sys.flags, "thread_inherit_context", 0), reason="threads inherit the context here")
def test_a_thread_started_inside_the_block_does_not_inherit_it(instrumented, oai):
    tpl = mltrack_otel.prompt("p", "Q {{x}}")
    with tpl.use():
        worker = threading.Thread(target=ask, args=(oai, "from a plain thread"))
        worker.start()
        worker.join()
    (span,) = spans(instrumented)
    assert identity(span) == {}  # a new thread starts with an empty context (use contextvars.copy_context().run)


def test_the_counted_call_carries_the_prompt_version_beside_its_cost(priced, oai):
    tpl = mltrack_otel.prompt("summarize", SUMMARIZE, version="v2")
    with tpl.use():
        ask(oai, tpl.format(words=3, text="cost per version"))
    (span,) = spans(priced)
    a = attrs(span)
    assert a[semconv.MLTRACK_USAGE_COUNTED] is True and a[semconv.LLM_COST_TOTAL] > 0
    assert a[VERSION] == "v2" and a[NAME] == "summarize"


# --- the MLflow prompt registry (a real sqlite store) ------------------------------------------------------------


@pytest.fixture
def registry(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_registry_round_trip_keeps_mlflows_version_number(registry, instrumented, oai):
    from mlflow import MlflowClient

    first = mltrack_otel.prompt("summarize", SUMMARIZE).register(commit_message="first")
    assert (first.version, first.source) == ("1", "mlflow")
    assert first.register() == first  # same content as the latest version: nothing new is registered
    second = mltrack_otel.prompt("summarize", SUMMARIZE.replace("words", "lines"), register=True)
    assert second.version == "2" and second.hash != first.hash

    loaded = mltrack_otel.load_prompt("prompts:/summarize/2")
    assert loaded == second and loaded.template == SUMMARIZE.replace("words", "lines")
    assert mltrack_otel.load_prompt("summarize", version=1).hash == first.hash
    stored = MlflowClient(registry).get_prompt_version("summarize", 2)
    assert stored.tags[prompts.HASH_TAG] == second.hash and stored.template == loaded.template

    with loaded.use():
        ask(oai, loaded.format(lines=2, text="t"))
    (span,) = spans(instrumented)
    assert identity(span) == {NAME: "summarize", VERSION: "2", HASH: second.hash}


def test_registry_chat_template_and_an_explicit_tracking_uri(tmp_path):
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    registered = mltrack_otel.prompt("assistant", CHAT).register(tracking_uri=uri, tags={"team": "search"})
    loaded = mltrack_otel.load_prompt("prompts:/assistant/1", tracking_uri=uri)
    assert loaded.template == CHAT and loaded.is_chat and loaded.version == registered.version == "1"
    assert loaded.format(tone="calm", question="q")[0]["content"] == "You are a calm assistant."


def test_loading_a_missing_prompt_raises(registry):
    with pytest.raises(Exception, match="nowhere"):
        mltrack_otel.load_prompt("prompts:/nowhere/1")


def test_the_registry_without_mlflow_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(PromptError, match=r"needs mlflow: pip install 'mltrack-otel\[mlflow\]'"):
        mltrack_otel.prompt("p", "x").register()
    with pytest.raises(PromptError, match="needs mlflow"):
        mltrack_otel.load_prompt("prompts:/p/1")


# --- templates from .mltrack.yml ---------------------------------------------------------------------------------


def test_a_template_defined_in_the_config_file_is_used_by_name(isolated_env, settings, instrumented, oai):
    from mltrack_otel import config

    (isolated_env / ".mltrack.yml").write_text(
        "prompts:\n"
        "  summarize:\n"
        "    template: 'Summarize {{text}}'\n"
        "    version: 3\n"
        "  assistant:\n"
        "    template:\n"
        "      - {role: system, content: 'Be {{tone}}.'}\n"
        "      - {role: user, content: '{{question}}'}\n"
    )
    config.set_current(config.load_settings(env={}))
    summarize = mltrack_otel.prompt("summarize")
    assert (summarize.version, summarize.template) == ("3", "Summarize {{text}}")
    assert mltrack_otel.prompt("summarize", version="4").version == "4"  # the caller's version wins
    assistant = mltrack_otel.prompt("assistant")
    assert assistant.template == [
        {"role": "system", "content": "Be {{tone}}."},
        {"role": "user", "content": "{{question}}"},
    ]
    with assistant.use():
        oai.chat.completions.create(model=MODEL, messages=assistant.format(tone="brief", question="q"))
    (span,) = spans(instrumented)
    assert identity(span) == {NAME: "assistant", VERSION: assistant.hash, HASH: assistant.hash}
    with pytest.raises(PromptError, match=r"prompt 'other' has no template: .*under `prompts:` in \.mltrack\.yml"):
        mltrack_otel.prompt("other")


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("prompts:\n  p: {template: [{role: robot, content: x}]}\n", r"'prompts': .*'p': message 0 has role"),
        ("prompts:\n  p: {template: x, versoin: 2}\n", r"key 'prompts\.p\.versoin': unknown key"),
        ("prompts:\n  p: {version: 2}\n", r"key 'prompts\.p\.template': Field required"),
        ("prompts:\n  p: {template: '  '}\n", r"prompt 'p': the template is empty"),
    ],
)
def test_a_bad_prompt_in_the_config_file_names_the_key(isolated_env, yaml, message):
    from mltrack_otel import ConfigError, config

    (isolated_env / ".mltrack.yml").write_text(yaml)
    with pytest.raises(ConfigError, match=message):
        config.load_settings(env={})


def test_one_use_block_is_entered_once():
    tpl = mltrack_otel.prompt("p", "Q {{x}}")
    block = tpl.use()
    with block:
        with pytest.raises(RuntimeError, match="already entered"):
            block.__enter__()
        assert call_context.current()[NAME] == "p"
    assert call_context.current() == {}
    with block:  # usable again once exited
        assert call_context.current()[VERSION] == tpl.version
