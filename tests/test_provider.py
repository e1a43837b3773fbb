"""configure(): provider ownership, idempotence, defaults and the disabled switch.

The global TracerProvider can be set once per process, so the ownership cases run in fresh interpreters.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import mltrack_otel
from mltrack_otel import provider
from mltrack_otel.config import Settings


def run(code: str, cwd, env_extra: dict | None = None) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLTRACK_", "OTEL_"))}
    env.update({"HOME": str(cwd), **(env_extra or {})})
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_configure_twice_keeps_one_processor_chain(pipeline):
    first = mltrack_otel.configure(exporters=["memory"])
    second = mltrack_otel.configure(exporters=["memory"])
    assert first is second
    slots = [p for p in second._active_span_processor._span_processors if isinstance(p, provider._Slot)]
    assert len(slots) == 1
    rt = provider.runtime()
    mltrack_otel.LLMTracker().log_prompt_response(
        "q", "a", model="gpt-4o", token_usage={"prompt_tokens": 1, "completion_tokens": 1}
    )
    assert len(rt.memory_exporter.get_finished_spans()) == 1  # exported once, by the newest chain only


def test_an_existing_sdk_provider_gets_our_chain_added_not_replaced(tmp_path):
    out = run(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import mltrack_otel
        from mltrack_otel import provider
        theirs = InMemorySpanExporter()
        app_provider = TracerProvider()
        app_provider.add_span_processor(SimpleSpanProcessor(theirs))
        trace.set_tracer_provider(app_provider)
        returned = mltrack_otel.configure(exporters=["memory"])
        with trace.get_tracer("app").start_as_current_span("s", attributes={
                "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
                "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 1}):
            pass
        ours = provider.runtime().memory_exporter.get_finished_spans()
        print(returned is app_provider, len(theirs.get_finished_spans()), "llm.cost.total" in ours[0].attributes)
        """,
        tmp_path,
    )
    assert out == "True 1 True"


def test_default_exporters_follow_what_is_installed_and_configured():
    assert provider.resolve_exporters(Settings()) == ("mlflow",)  # mlflow is installed in the test environment
    assert provider.resolve_exporters(Settings(otlp_endpoint="http://127.0.0.1:4318")) == ("mlflow", "otlp")
    assert provider.resolve_exporters(Settings(exporters=("none",))) == ()


def test_disabled_tracking_installs_nothing_and_records_nothing(tmp_path):
    out = run(
        """
        from opentelemetry import trace
        import mltrack_otel
        returned = mltrack_otel.configure(exporters=["memory"])
        with mltrack_otel.track_llm_context("x") as tracker:
            tracker.log_prompt_response("q", "a", model="gpt-4o",
                                        token_usage={"prompt_tokens": 5, "completion_tokens": 5})
        print(type(returned).__name__, mltrack_otel.totals().calls)
        """,
        tmp_path,
        {"OTEL_SDK_DISABLED": "true"},
    )
    assert out == "ProxyTracerProvider 0"


def test_import_is_light(tmp_path):
    out = run(
        """
        import sys, mltrack_otel
        heavy = [m for m in ("openai", "anthropic", "mlflow", "genai_prices", "langchain_core", "litellm", "pydantic",
                             "yaml", "opentelemetry.sdk") if m in sys.modules]
        print(heavy)
        # Names and submodules load on first use, as if they had been imported eagerly.
        print(mltrack_otel.provider.runtime(), mltrack_otel.semconv.LLM_COST_TOTAL, mltrack_otel.configure.__name__)
        print(hasattr(mltrack_otel, "no_such_name"))
        """,
        tmp_path,
    )
    assert out.splitlines() == ["[]", "None llm.cost.total configure", "False"]


def test_turning_tracking_off_stops_the_chain_configured_before(pipeline):
    tp = mltrack_otel.configure(exporters=["memory"])
    before = provider.runtime()
    tracer = tp.get_tracer("app")
    tracer.start_span("while on").end()
    mltrack_otel.configure(llm_tracking_enabled=False)
    tracer.start_span("while off").end()
    assert [span.name for span in before.memory_exporter.get_finished_spans()] == ["while on"]
    assert before.closed  # shut down, so its exporters and meters are flushed and released
    mltrack_otel.configure(exporters=["memory"])  # and on again
    tracer.start_span("on again").end()
    assert [span.name for span in provider.runtime().memory_exporter.get_finished_spans()] == ["on again"]
