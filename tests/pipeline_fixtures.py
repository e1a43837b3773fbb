"""Fixtures for the cost pipeline: a real TracerProvider with the CostSpanProcessor over an in-memory exporter."""

from __future__ import annotations

import pytest

from mltrack_otel import config, guard, ledger, provider
from tests.traced import FAKE

_ENV_PREFIXES = ("MLTRACK_", "OTEL_", "MLFLOW_TRACKING_URI")


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No stray configuration: empty working directory and home, no MLTRACK_/OTEL_ variables."""
    import os

    for key in list(os.environ):
        if key.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    # The fake provider on loopback stands for the cloud APIs it imitates (tests/test_hosts.py checks the local rule).
    monkeypatch.setenv("MLTRACK_CLOUD_HOSTS", ",".join(FAKE))
    return tmp_path


@pytest.fixture
def pipeline(isolated_env):
    """configure(exporters=["memory"]) on a clean ledger; yields the Runtime (runtime.memory_exporter has spans)."""
    ledger.LEDGER.reset()
    guard.reset()
    provider.configure(exporters=["memory"])
    rt = provider.runtime()
    yield rt
    rt.memory_exporter.clear()
    ledger.LEDGER.reset()
    ledger.LEDGER.limits = ledger.Limits()
    ledger.LEDGER.pricer = None
    config.set_current(None)


def finished(rt) -> dict[str, object]:
    """Finished spans by name (last one wins for repeated names)."""
    return {span.name: span for span in rt.memory_exporter.get_finished_spans()}
