"""instrument() / uninstrument(): post-import hooks, exact restoration, the OTel instrumentor interface."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

from mltrack_otel.instrumentation import LIBRARIES, _base, instrument, uninstrument
from mltrack_otel.instrumentation.anthropic import AnthropicInstrumentor
from mltrack_otel.instrumentation.openai import OpenAIInstrumentor
from tests.traced import Traced


def run_python(code: str) -> dict:
    """Run code in a fresh interpreter (nothing imported yet); it prints one JSON line, returned parsed."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def request_methods(module: str) -> tuple:
    base = __import__(f"{module}._base_client", fromlist=["SyncAPIClient"])
    return base.SyncAPIClient.__dict__["request"], base.AsyncAPIClient.__dict__["request"]


@pytest.fixture(autouse=True)
def clean():
    uninstrument()
    yield
    uninstrument()


def test_instrument_imports_nothing_and_hooks_the_import():
    result = run_python(
        """
        import json, sys
        import mltrack_otel.instrumentation as instrumentation
        before = set(sys.modules)
        armed = instrumentation.instrument()
        # Only namespace packages (no code) may have been imported: finding "llama_index.core" imports "llama_index".
        loaded = sorted(m for m in set(sys.modules) - before if getattr(sys.modules[m], "__file__", None) is not None)
        import openai
        from openai._base_client import AsyncAPIClient, SyncAPIClient
        print(json.dumps({
            "armed": armed,
            "loaded": loaded,
            "wrapped": [hasattr(c.__dict__["request"], "__wrapped__") for c in (SyncAPIClient, AsyncAPIClient)],
            "loader": type(openai.__spec__.loader).__name__,
            "anthropic_loaded": "anthropic" in sys.modules,
        }))
        """
    )
    assert result["armed"][:2] == ["openai", "anthropic"]  # and whichever other supported framework is installed
    assert result["loaded"] == []  # no SDK, no instrumentor, no wrapt, not even OpenTelemetry
    assert result["wrapped"] == [True, True]  # instrumented the moment it was imported
    assert result["loader"] != "_NotifyingLoader"  # nothing of ours stays on the module
    assert not result["anthropic_loaded"]


@pytest.mark.frameworks
@pytest.mark.parametrize(
    ("library", "module", "owner", "method"),
    [
        ("langchain", "langchain_core.retrievers", "BaseRetriever", "invoke"),
        ("dspy", "dspy.clients.execution", None, "execute"),
    ],
)
def test_framework_modules_are_patched_when_the_app_imports_them(library, module, owner, method):
    """instrument() does not import framework modules the app has not loaded; it patches them on import, and
    uninstrument() restores them (or, before the import, leaves them untouched)."""
    result = run_python(
        f"""
        import importlib, json, os, sys
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        import {LIBRARIES[library].module}
        from mltrack_otel.instrumentation import instrument, uninstrument

        def target():
            found = importlib.import_module("{module}")
            return getattr(found, "{owner}").__dict__["{method}"] if {owner!r} else getattr(found, "{method}")

        loaded_before = "{module}" in sys.modules
        instrument(["{library}"])
        loaded_after_instrument = "{module}" in sys.modules
        wrapped = target()
        uninstrument(["{library}"])
        restored = target()
        print(json.dumps({{
            "loaded_before": loaded_before,
            "loaded_after_instrument": loaded_after_instrument,
            "wrapped": getattr(wrapped, "__wrapped__", None) is restored,
        }}))
        """
    )
    assert result == {"loaded_before": False, "loaded_after_instrument": False, "wrapped": True}


def test_uninstrument_before_import_disarms():
    result = run_python(
        """
        import json
        from mltrack_otel.instrumentation import instrument, uninstrument
        instrument(["anthropic"])
        undone = uninstrument(["anthropic"])
        import anthropic
        from anthropic._base_client import SyncAPIClient
        print(json.dumps({"undone": undone, "wrapped": hasattr(SyncAPIClient.__dict__["request"], "__wrapped__")}))
        """
    )
    assert result == {"undone": ["anthropic"], "wrapped": False}


@pytest.mark.parametrize("module", ["openai", "anthropic"])
def test_uninstrument_restores_the_original_methods_exactly(module):
    originals = request_methods(module)
    assert instrument([module]) == [module]
    wrapped = request_methods(module)
    assert all(w is not o and w.__wrapped__ is o for w, o in zip(wrapped, originals, strict=True))
    assert instrument([module]) == [module]  # idempotent: not wrapped twice
    assert request_methods(module) == wrapped
    assert uninstrument([module]) == [module]
    assert all(r is o for r, o in zip(request_methods(module), originals, strict=True))
    assert uninstrument([module]) == []


def test_instrument_limits_to_the_named_libraries():
    originals = request_methods("anthropic")
    assert instrument(["openai"]) == ["openai"]
    assert request_methods("anthropic") == originals
    with pytest.raises(ValueError, match="not-a-library"):
        instrument(["not-a-library"])
    for library in LIBRARIES.values():  # the registry is data: a module to watch, an instrumentor class path
        assert library.module and ":" in library.instrumentor


def test_a_second_instrument_switches_the_tracer_provider(fake, settings):
    import openai

    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="x", max_retries=0)
    first, second = Traced(cost=False), Traced(cost=False)
    instrument(["openai"], tracer_provider=first.provider)
    client.embeddings.create(model="text-embedding-3-small", input="a")
    instrument(["openai"], tracer_provider=second.provider)
    client.embeddings.create(model="text-embedding-3-small", input="b")
    assert len(first.spans()) == 1 and len(second.spans()) == 1


def test_instrumentor_classes_follow_the_otel_interface(fake, settings):
    import openai

    instrumentor = OpenAIInstrumentor()
    assert instrumentor is OpenAIInstrumentor()  # one per class, as BaseInstrumentor
    assert instrumentor is not AnthropicInstrumentor()
    assert list(instrumentor.instrumentation_dependencies()) == ["openai >= 1.40"]
    harness = Traced(cost=False)
    originals = request_methods("openai")
    instrumentor.instrument(tracer_provider=harness.provider, skip_dep_check=True)
    assert instrumentor.is_instrumented_by_opentelemetry
    openai.OpenAI(base_url=fake.openai_base_url, api_key="x").embeddings.create(model="e", input="a")
    assert len(harness.spans()) == 1
    instrumentor.uninstrument()
    assert not instrumentor.is_instrumented_by_opentelemetry
    assert request_methods("openai") == originals


def our_entry_points() -> dict:
    found = {ep.name: ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.value.startswith("mltrack")}
    if not found:
        pytest.skip("mltrack-otel is not installed (run from a source tree): no entry points to load")
    return found


def test_entry_points_name_our_instrumentors():
    found = our_entry_points()
    assert found["openai"].load() is OpenAIInstrumentor
    assert found["anthropic"].load() is AnthropicInstrumentor


def test_opentelemetry_instrument_loads_us(fake):
    """What `opentelemetry-instrument python app.py` does at start-up: the distro loads every entry point and
    calls instrument(skip_dep_check=True) with no arguments, so spans go to the global TracerProvider."""
    our_entry_points()
    result = run_python(
        f"""
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        try:  # the real loader when opentelemetry-instrumentation is installed
            from opentelemetry.instrumentation.auto_instrumentation._load import _load_instrumentors
            from opentelemetry.instrumentation.distro import DefaultDistro
            _load_instrumentors(DefaultDistro())
            loader = "opentelemetry-instrumentation"
        except ImportError:  # its equivalent (auto_instrumentation/_load.py + distro.load_instrumentor)
            from importlib.metadata import entry_points
            for ep in entry_points(group="opentelemetry_instrumentor"):
                if ep.value.startswith("mltrack_otel"):
                    ep.load()().instrument(skip_dep_check=True)
            loader = "equivalent loop"
        import openai
        client = openai.OpenAI(base_url="{fake.openai_base_url}", api_key="x", max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}])
        from mltrack_otel.instrumentation.openai import OpenAIInstrumentor
        # (other instrumentations installed alongside, OpenInference's in the dev extra, add their own spans)
        names = [s.name for s in exporter.get_finished_spans() if s.instrumentation_scope.name.startswith("mltrack")]
        bases = [c.__module__ for c in OpenAIInstrumentor.__mro__]
        print(json.dumps({{"names": names, "loader": loader, "bases": bases}}))
        """
    )
    assert result["names"] == ["chat gpt-4o-mini"], result
    if result["loader"] == "opentelemetry-instrumentation":
        assert "opentelemetry.instrumentation.instrumentor" in result["bases"]  # a real BaseInstrumentor


def test_base_instrumentor_is_used_when_available():
    try:
        from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
    except ImportError:
        assert _base.InstrumentorBase is _base._DuckInstrumentor
        pytest.skip("opentelemetry-instrumentation is not installed: duck-typed base in use")
    assert issubclass(OpenAIInstrumentor, BaseInstrumentor)


def test_a_library_whose_instrumentor_fails_is_not_reported_instrumented(monkeypatch, caplog):
    import openai  # noqa: F401  (imported: instrumented at once, so the failure is known now)

    from mltrack_otel import instrumentation

    broken = instrumentation.Library("openai", "mltrack_otel.instrumentation.openai:NoSuchInstrumentor")
    monkeypatch.setitem(instrumentation.LIBRARIES, "openai", broken)
    with caplog.at_level("WARNING", logger="mltrack_otel"):
        assert instrumentation.instrument(["openai"]) == []
    assert "could not instrument openai" in caplog.text
    assert instrumentation.uninstrument(["openai"]) == []  # nothing was armed
