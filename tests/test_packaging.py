"""The package claims only what its dependencies support."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet


def test_requires_python_is_no_wider_than_any_core_dependency_allows():
    import tomllib  # here, not at the top: its import group depends on ruff's target version

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    ours = SpecifierSet(project["requires-python"])
    minors = [f"3.{minor}" for minor in range(8, 20)]
    for line in project["dependencies"]:
        name = Requirement(line).name
        theirs = SpecifierSet(importlib.metadata.metadata(name)["Requires-Python"] or "")
        refused = [v for v in minors if ours.contains(v) and not theirs.contains(v)]
        assert not refused, f"{name} (installed: requires-python {theirs}) cannot install on Python {refused}"
