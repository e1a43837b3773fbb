"""mltrack_otel.ab(): the split it picks by, the stickiness per user and conversation, its input checks, and the
experiment and variant it records on real OpenAI SDK calls (against the fake provider)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import subprocess
import sys
import uuid
from collections import Counter

import pytest

import mltrack_otel
from mltrack_otel import call_context, config, semconv
from mltrack_otel.ab import ab
from tests.instr_fixtures import attrs, use_settings

EXPERIMENT, VARIANT = semconv.MLTRACK_AB_EXPERIMENT, semconv.MLTRACK_AB_VARIANT


def within_binomial(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    """count is a plausible Binomial(n, p) draw: within `sigmas` standard deviations of n * p."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize(
    "split",
    [{"a": 0.7, "b": 0.3}, {"a": 1, "b": 2, "c": 1}, None],
    ids=["70-30", "weights-1-2-1", "even"],
)
def test_picks_follow_the_split(split):
    variants = {name: name.upper() for name in (split or {"a": 1, "b": 1})}
    rng = random.Random(20261206)
    n = 20_000
    picks = Counter(ab("split", variants, split, rng=rng).name for _ in range(n))
    weights = split or dict.fromkeys(variants, 1)
    total = sum(weights.values())
    assert set(picks) == set(variants)
    for name, weight in weights.items():
        assert within_binomial(picks[name], n, weight / total), (name, picks)


def test_the_choice_carries_the_value_of_the_variant_it_names():
    choice = ab("greeting", {"short": "Say hi.", "warm": "Greet warmly."}, rng=random.Random(1))
    assert (choice.experiment, choice.value) == ("greeting", {"short": "Say hi.", "warm": "Greet warmly."}[choice.name])
    name, value = choice
    assert (name, value) == (choice.name, choice.value)
    assert ab("models", ["gpt-4o", "gpt-4o-mini"], rng=random.Random(2)).value in ("gpt-4o", "gpt-4o-mini")


def test_a_seeded_generator_repeats_its_picks():
    rng1, rng2 = random.Random(7), random.Random(7)
    first = [ab("s", ["a", "b", "c"], rng=rng1).name for _ in range(50)]
    assert first == [ab("s", ["a", "b", "c"], rng=rng2).name for _ in range(50)]
    assert set(first) == {"a", "b", "c"}


def test_sticky_per_user_gives_a_user_the_same_variant_every_time():
    variants = {"a": 1, "b": 2}
    seen: dict[str, set[str]] = {}
    for round_ in range(5):
        for user in range(200):
            with call_context.attached({"user.id": f"user-{user}"}):
                choice = ab("sticky", variants, {"a": 0.5, "b": 0.5}, sticky="user", rng=random.Random(round_))
            assert choice.sticky
            seen.setdefault(f"user-{user}", set()).add(choice.name)
    assert all(len(names) == 1 for names in seen.values())
    # Users spread over the variants by the split, not all onto one.
    counts = Counter(next(iter(names)) for names in seen.values())
    assert within_binomial(counts["a"], 200, 0.5)


def test_sticky_users_follow_the_split():
    n = 10_000
    counts = Counter(ab("checkout", ["a", "b"], {"a": 0.9, "b": 0.1}, key=f"u{i}").name for i in range(n))
    assert within_binomial(counts["b"], n, 0.1)


def test_sticky_assignment_is_the_same_in_another_process():
    # Python's hash() is salted per process: a sticky pick must not use it.
    here = [ab("exp", ["a", "b", "c"], key=f"user-{i}").name for i in range(30)]
    code = (
        "from mltrack_otel.ab import ab\n"
        "print(','.join(ab('exp', ['a', 'b', 'c'], key=f'user-{i}').name for i in range(30)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert there.stdout.strip().split(",") == here
    assert len(set(here)) == 3


def test_experiments_assign_independently():
    # The same users are not split the same way by every experiment.
    first = [ab("one", ["a", "b"], key=f"u{i}").name for i in range(200)]
    second = [ab("two", ["a", "b"], key=f"u{i}").name for i in range(200)]
    assert first != second


def test_sticky_per_conversation_reads_the_conversation_of_the_context(settings):
    def pick() -> str:
        return ab("conv", ["a", "b", "c", "d"], sticky="conversation", rng=random.Random()).name

    with mltrack_otel.track_llm_context("chat", conversation_id="conv-42"):
        inside = {pick() for _ in range(20)}
    assert inside == {ab("conv", ["a", "b", "c", "d"], key="conv-42").name}
    with call_context.attached({"session.id": "sess-7"}):
        assert {pick() for _ in range(20)} == {ab("conv", ["a", "b", "c", "d"], key="sess-7").name}


def test_sticky_without_an_id_picks_at_random_and_warns_once(caplog):
    rng, name = random.Random(3), f"anonymous-{uuid.uuid4()}"  # warned once per experiment and process
    with caplog.at_level(logging.WARNING, logger="mltrack_otel.ab"):
        picks = [ab(name, ["a", "b"], sticky="user", rng=rng) for _ in range(40)]
    assert {p.name for p in picks} == {"a", "b"}
    assert not any(p.sticky for p in picks)
    warnings = [r for r in caplog.records if name in r.getMessage()]
    assert len(warnings) == 1 and "no user id" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variants": {}}, "no variants"),
        ({"variants": []}, "no variants"),
        ({"variants": "ab"}, "must be a mapping"),
        ({"variants": {"": 1}}, "non-empty strings"),
        ({"variants": ["a", "a"]}, "repeat"),
        ({"variants": {"a": 1, "b": 2}, "split": {"a": 1}}, "no weight for 'b'"),
        ({"variants": {"a": 1}, "split": {"a": 1, "c": 1}}, "'c' not among the variants"),
        ({"variants": {"a": 1, "b": 2}, "split": {"a": 1, "b": 0}}, "weight of 'b' must be a positive number"),
        ({"variants": {"a": 1, "b": 2}, "split": {"a": -1, "b": 1}}, "weight of 'a' must be a positive number"),
        ({"variants": {"a": 1, "b": 2}, "split": {"a": float("nan"), "b": 1}}, "positive number"),
        ({"variants": {"a": 1, "b": 2}, "split": {"a": "half", "b": 1}}, "positive number"),
        ({"variants": {"a": 1, "b": 2}, "split": {"a": True, "b": 1}}, "positive number"),
        ({"variants": {"a": 1}, "split": [0.5]}, "split must be a mapping"),
        ({"variants": {"a": 1}, "sticky": "tenant"}, "sticky must be None, 'user' or 'conversation'"),
        ({"name": "", "variants": {"a": 1}}, "non-empty string"),
        ({"variants": {"a": 1}, "key": 42}, "key must be a string"),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_error(kwargs, message):
    kwargs = {"name": "exp", **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        ab(**kwargs)


def test_the_package_exports_ab_even_after_the_module_was_imported_by_name():
    assert callable(mltrack_otel.ab)
    assert callable(sys.modules["mltrack_otel.ab"])  # the module itself calls ab()
    assert mltrack_otel.ab("e", ["only"]).name == "only"
    code = "import mltrack_otel.ab\nimport mltrack_otel\nprint(mltrack_otel.ab('e', ['only']).name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "only"


# --- on real model calls -------------------------------------------------------------------------------------------


def chat(client, model: str = "gpt-4o-mini", text: str = "hello there") -> None:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def test_calls_inside_the_block_carry_experiment_and_variant(instrumented, oai):
    rng = random.Random(1)  # picks both variants in six
    chosen = []
    for _ in range(6):
        with ab("model-choice", {"big": "gpt-4o", "small": "gpt-4o-mini"}, rng=rng) as choice:
            chat(oai, model=choice.value)
            chosen.append(choice.name)
    chat(oai)  # outside any experiment
    spans = sorted(instrumented.get_finished_spans(), key=lambda s: s.start_time)
    assert len(spans) == 7
    for span, name in zip(spans, chosen, strict=False):
        a = attrs(span)
        assert a[EXPERIMENT] == "model-choice" and a[VARIANT] == name
        assert a["gen_ai.request.model"] == {"big": "gpt-4o", "small": "gpt-4o-mini"}[name]
    assert set(chosen) == {"big", "small"}
    assert EXPERIMENT not in attrs(spans[-1]) and VARIANT not in attrs(spans[-1])


def test_a_choice_made_outside_records_only_inside_its_block(instrumented, oai):
    choice = ab("greeting", {"short": "Say hi.", "warm": "Greet warmly."}, rng=random.Random(9))
    chat(oai, text=choice.value)  # picked, but not used as a block: the call carries nothing
    with choice:
        chat(oai, text=choice.value)
        with choice:  # re-entered: still the same attributes, and leaving the inner block keeps them
            pass
        chat(oai, text=choice.value)
    first, second, third = sorted(instrumented.get_finished_spans(), key=lambda s: s.start_time)
    assert VARIANT not in attrs(first)
    assert attrs(second)[VARIANT] == attrs(third)[VARIANT] == choice.name


def test_the_innermost_experiment_wins_and_user_attributes_stay(instrumented, oai):
    with call_context.attached({"user.id": "u-1"}):
        with ab("outer", ["x"]):
            with ab("inner", ["y"]):
                chat(oai)
            chat(oai)
    inner, outer = sorted(instrumented.get_finished_spans(), key=lambda s: s.start_time)
    assert (attrs(inner)[EXPERIMENT], attrs(inner)[VARIANT], attrs(inner)["user.id"]) == ("inner", "y", "u-1")
    assert (attrs(outer)[EXPERIMENT], attrs(outer)[VARIANT], attrs(outer)["user.id"]) == ("outer", "x", "u-1")


def test_async_calls_in_tasks_started_inside_the_block_carry_the_choice(instrumented, aoai):
    async def main() -> str:
        with ab("async-exp", ["a", "b"], rng=random.Random(4)) as choice:
            task = asyncio.create_task(
                aoai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            )
        await task
        return choice.name

    name = asyncio.run(main())
    span = instrumented.get_finished_spans()[-1]
    assert (attrs(span)[EXPERIMENT], attrs(span)[VARIANT]) == ("async-exp", name)


# --- from .mltrack.yml ------------------------------------------------------------------------------------------------


def test_a_configured_split_wins_over_the_codes(settings):
    use_settings(ab_tests={"checkout": {"split": {"a": 0.9, "b": 0.1}}})
    rng, n = random.Random(8), 10_000
    counts = Counter(ab("checkout", ["a", "b"], {"a": 0.5, "b": 0.5}, rng=rng).name for _ in range(n))
    assert within_binomial(counts["b"], n, 0.1)


def test_configured_variants_serve_when_the_code_passes_none(settings):
    use_settings(ab_tests={"tone": {"variants": {"short": "Say hi.", "warm": "Greet warmly."}, "sticky": "user"}})
    with call_context.attached({"user.id": "u-9"}):
        picks = {(c.name, c.value, c.sticky) for c in (ab("tone") for _ in range(10))}
    assert len(picks) == 1
    name, value, sticky = picks.pop()
    assert sticky and value == {"short": "Say hi.", "warm": "Greet warmly."}[name]
    with pytest.raises(ValueError, match=r"no variants: pass variants=\.\.\., or set ab_tests\.other\.variants"):
        ab("other")


def test_force_sends_every_call_to_one_variant(settings):
    use_settings(ab_tests={"tone": {"force": "warm"}})
    assert {ab("tone", ["short", "warm"], rng=random.Random(i)).name for i in range(30)} == {"warm"}


def test_a_configured_split_that_does_not_fit_the_code_is_ignored_not_raised(settings, caplog):
    use_settings(ab_tests={"mismatch": {"split": {"x": 1, "y": 1}, "force": "x"}})
    with caplog.at_level(logging.WARNING, logger="mltrack_otel.ab"):
        picks = {ab("mismatch", {"a": 1, "b": 2}, {"a": 1, "b": 1}, rng=random.Random(i)).name for i in range(40)}
    assert picks == {"a", "b"}
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "ab_tests.mismatch.split names ['x', 'y']" in said and "ab_tests.mismatch.force 'x'" in said


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{variants: [a, b], split: {a: 1, c: 1}}", "split names ['a', 'c'] must be the variants' names ['a', 'b']"),
        ("{split: {a: 0, b: 1}}", "ab_tests.greeting.split.a': Input should be greater than 0"),
        ("{variants: [a], force: z}", "force 'z' is not one of the variants ['a']"),
        ("{variants: [a], sticky: tenant}", "ab_tests.greeting.sticky'"),
        ("{variants: [a], spilt: {a: 1}}", "ab_tests.greeting.spilt': unknown key"),
        ("{variants: []}", "variants must be non-empty names"),
    ],
)
def test_a_bad_ab_tests_entry_is_a_config_error_naming_the_key(isolated_env, entry, message):
    (isolated_env / config.CONFIG_FILENAME).write_text(f"ab_tests:\n  greeting: {entry}\n")
    with pytest.raises(mltrack_otel.ConfigError) as error:
        config.load_settings()
    assert message in str(error.value) and config.CONFIG_FILENAME in str(error.value)


def test_ab_tests_come_from_the_environment_too(isolated_env, monkeypatch):
    monkeypatch.setenv("MLTRACK_AB_TESTS", '{"greeting": {"split": {"a": 3, "b": 1}, "sticky": "user"}}')
    loaded = config.load_settings().ab_tests["greeting"]
    assert (loaded.split, loaded.sticky) == ({"a": 3.0, "b": 1.0}, "user")


def test_the_readme_example_is_a_valid_configuration(isolated_env):
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## A/B comparison\n", 1)[1].split("\n## ", 1)[0]
    (isolated_env / config.CONFIG_FILENAME).write_text(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    greeting = config.load_settings().ab_tests["greeting"]
    assert (greeting.split, greeting.sticky, greeting.variants) == ({"short": 0.9, "warm": 0.1}, "user", None)
