"""The semantic-convention registry (semconv/) and the module generated from it (mltrack_otel/semconv.py).

Every attribute must have type, brief, stability and examples; booleans too (no exemption).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics

from mltrack_otel import semconv

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "semconv" / "model"
GENERATED = ROOT / "mltrack_otel" / "semconv.py"
STABILITY = {"stable", "development", "alpha", "beta", "release_candidate"}
INSTRUMENTS = {"counter", "updowncounter", "gauge", "histogram"}
EXAMPLE_TYPES = {
    "string": str,
    "int": int,
    "double": (int, float),
    "boolean": bool,
    "string[]": list,
    "int[]": list,
    "double[]": list,
    "boolean[]": list,
}


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_semconv", ROOT / "scripts" / "gen_semconv.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _groups() -> list[dict]:
    groups = []
    for path in sorted(MODEL.rglob("*.yaml")):
        groups.extend(yaml.safe_load(path.read_text(encoding="utf-8"))["groups"])
    return groups


GROUPS = _groups()
ATTRIBUTES = [a for g in GROUPS for a in g.get("attributes") or [] if "id" in a]
REFS = [a["ref"] for g in GROUPS for a in g.get("attributes") or [] if "ref" in a]
METRICS = [g for g in GROUPS if g["type"] == "metric"]
EVENTS = [g for g in GROUPS if g["type"] == "event"]


def _expected_constants() -> dict[str, str]:
    """Constant name -> value, by the naming rule, computed here independently of the generator."""
    out = {a["id"].replace(".", "_").upper(): a["id"] for a in ATTRIBUTES}
    out.update({e["name"].replace(".", "_").upper(): e["name"] for e in EVENTS})
    out.update({"METRIC_" + m["metric_name"].replace(".", "_").upper(): m["metric_name"] for m in METRICS})
    return out


def _official(module) -> set[str]:
    return {v for k, v in vars(module).items() if k.isupper() and isinstance(v, str)}


def test_registry_is_not_empty():
    assert len(ATTRIBUTES) >= 20 and METRICS and EVENTS


def test_every_yaml_name_has_its_constant():
    for constant, value in _expected_constants().items():
        assert getattr(semconv, constant, None) == value, constant


def test_no_constant_without_a_yaml_name():
    constants = {name for name in vars(semconv) if name.isupper()}
    assert constants == set(_expected_constants())


def test_existing_constant_names_are_kept():
    # Other modules import these names.
    assert semconv.MLTRACK_LIMIT_EXCEEDED == "mltrack.limit.exceeded"
    assert semconv.METRIC_MLTRACK_CLIENT_COST == "mltrack.client.cost"
    assert semconv.METRIC_MLTRACK_CLIENT_CALLS_UNPRICED == "mltrack.client.calls.unpriced"
    assert semconv.EXECUTION_TIME_SECONDS == "execution_time_seconds"


def test_generated_module_is_up_to_date():
    assert GENERATED.read_bytes() == gen.render(gen.load_groups(MODEL)).encode("utf-8")


def test_check_mode_fails_on_a_stale_file(tmp_path):
    out = tmp_path / "semconv.py"
    out.write_bytes(GENERATED.read_bytes())
    assert gen.main(["--check", "--output", str(out)]) == 0
    stale = GENERATED.read_text(encoding="utf-8").replace('"mltrack.tags"', '"mltrack.tag"')
    out.write_text(stale, encoding="utf-8")
    assert gen.main(["--check", "--output", str(out)]) == 1
    out.unlink()
    assert gen.main(["--check", "--output", str(out)]) == 1
    assert gen.main(["--output", str(out)]) == 0
    assert out.read_bytes() == GENERATED.read_bytes()


def test_docstrings_are_the_briefs():
    text = GENERATED.read_text(encoding="utf-8")
    for _, constant, value, brief in gen.definitions(GROUPS):
        assert f'{constant}: Final = "{value}"\n{gen.docstring(brief)}\n' in text


def test_long_brief_wraps_within_line_length():
    doc = gen.docstring("word " * 60)
    assert doc.startswith('"""') and doc.endswith('\n"""')
    assert max(len(line) for line in doc.splitlines()) <= gen.LINE_LENGTH


def test_colliding_constants_are_refused():
    attributes = [{"id": "a.b_c", "brief": "x"}, {"id": "a_b.c", "brief": "y"}]
    groups = [{"id": "registry.a", "type": "attribute_group", "attributes": attributes}]
    with pytest.raises(ValueError, match="A_B_C"):
        gen.render(groups)


@pytest.mark.parametrize("attribute", ATTRIBUTES, ids=lambda a: a["id"])
def test_attribute_is_fully_described(attribute):
    for key in ("type", "brief", "stability", "examples"):
        assert attribute.get(key) not in (None, "", []), f"{attribute['id']} has no {key}"
    assert attribute["stability"] in STABILITY
    examples = attribute["examples"] if isinstance(attribute["examples"], list) else [attribute["examples"]]
    kind = attribute["type"]
    if isinstance(kind, dict):  # enum
        members = kind["members"]
        assert members and all({"id", "value", "stability"} <= set(m) for m in members)
        assert set(examples) <= {m["value"] for m in members}
    else:
        if kind.startswith("template[") and kind.endswith("]"):  # a namespace (mltrack.tag.<key>): its values' type
            kind = kind[len("template[") : -1]
        assert kind in EXAMPLE_TYPES, kind
        for example in examples:
            assert isinstance(example, EXAMPLE_TYPES[kind]), (attribute["id"], example)
            assert kind == "boolean" or not isinstance(example, bool), (attribute["id"], example)


def test_metrics_and_events_are_fully_described():
    for metric in METRICS:
        assert metric["instrument"] in INSTRUMENTS
        assert metric["unit"] and metric["brief"] and metric["stability"] in STABILITY
    for event in EVENTS:
        assert event["name"] and event["brief"] and event["stability"] in STABILITY
    for group in GROUPS:
        assert group["id"] and group["brief"], group


def test_no_id_collides():
    for names in (
        [g["id"] for g in GROUPS],
        [a["id"] for a in ATTRIBUTES],
        [m["metric_name"] for m in METRICS],
        [e["name"] for e in EVENTS],
    ):
        assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    constants = [c for _, c, _, _ in gen.definitions(GROUPS)]
    assert len(constants) == len(set(constants))


def test_no_official_gen_ai_name_is_redefined():
    ours = {a["id"] for a in ATTRIBUTES} | {e["name"] for e in EVENTS} | {m["metric_name"] for m in METRICS}
    official = _official(gen_ai_attributes) | _official(gen_ai_metrics)
    assert "gen_ai.provider.name" in official  # the package really lists them
    assert not ours & official


def test_every_ref_resolves():
    local = {a["id"] for a in ATTRIBUTES}
    official = _official(gen_ai_attributes)
    assert REFS
    for ref in REFS:
        assert ref in local or ref in official, ref


def test_registry_groups_only_define():
    # The OTel weaver policy: a `registry.*` attribute group holds definitions, never `ref`s.
    for group in GROUPS:
        if group["id"].startswith("registry."):
            assert all("id" in a for a in group["attributes"]), group["id"]


def test_manifest_declares_the_otel_dependency():
    manifest = yaml.safe_load((ROOT / "semconv" / "manifest.yaml").read_text(encoding="utf-8"))
    assert manifest["schema_url"].rsplit("/", 1)[1] and manifest["description"]
    assert [d["schema_url"] for d in manifest["dependencies"]] == ["https://opentelemetry.io/schemas/1.41.0"]
    assert "v1.41.0" in manifest["dependencies"][0]["registry_path"]
