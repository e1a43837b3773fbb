"""Zero-code: `opentelemetry-instrument python app.py` with the package installed prices every call and exports
each span once, to a real OTLP receiver, also when the application calls configure() itself.

opentelemetry-instrument finds our entry points in the installed package's metadata, so these tests run against
the installed package (`make test` installs it editable); with metadata from before the entry point they skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from mltrack_otel import semconv
from tests.otlp_receiver import OtlpReceiver

INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
OUR_SCOPE = "mltrack_otel.instrumentation.openai"

APP = """
import json, os, sys
import openai

client = openai.OpenAI(base_url=os.environ["FAKE_OPENAI_URL"], api_key="sk-test", max_retries=0)
if sys.argv[1:] == ["configure"]:
    import mltrack_otel
    mltrack_otel.configure(exporters=["otlp"])  # what the application's own setup asks for
elif sys.argv[1:] == ["disable"]:
    import mltrack_otel
    mltrack_otel.configure(llm_tracking_enabled=False)
messages = [{"role": "user", "content": "Tell me about spans please"}]
client.chat.completions.create(model="gpt-4o-mini", messages=messages)
for _ in client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True):
    pass
client.embeddings.create(model="text-embedding-3-small", input="hello")

import mltrack_otel
totals = mltrack_otel.totals()
print(json.dumps({"calls": totals.calls, "unpriced": totals.unpriced_calls, "cost": str(totals.cost_usd)}))
"""


def _installed_hook() -> bool:
    return any(ep.value.startswith("mltrack_otel.") for ep in entry_points(group="opentelemetry_post_instrument"))


pytestmark = [
    pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrumentation is not installed"),
    pytest.mark.skipif(not _installed_hook(), reason="the installed metadata predates the entry point: reinstall"),
]


def run_instrumented(tmp_path: Path, fake, receiver: OtlpReceiver, *app_args: str, **env_extra: str) -> dict:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLTRACK_", "OTEL_", "MLFLOW_"))}
    env.update(
        HOME=str(tmp_path),
        FAKE_OPENAI_URL=fake.openai_base_url,
        OTEL_SERVICE_NAME="zero-code-app",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        MLTRACK_CLOUD_HOSTS=fake.host,  # the fake on loopback stands for the cloud API it imitates
        **env_extra,
    )
    done = subprocess.run(
        [str(INSTRUMENT), sys.executable, str(app), *app_args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("app_args", "env"),
    [
        ((), {}),
        (("configure",), {}),
        # No configurator ran (opentelemetry-distro absent, or another one named): ours configures as configure()
        ((), {"OTEL_PYTHON_CONFIGURATOR": "not-installed", "MLTRACK_EXPORTERS": "otlp"}),
    ],
    ids=["zero-code", "zero-code-and-configure", "zero-code-without-configurator"],
)
def test_every_call_is_priced_and_every_span_exported_once(tmp_path, fake, app_args, env):
    fake.clear()
    with OtlpReceiver() as receiver:
        totals = run_instrumented(tmp_path, fake, receiver, *app_args, **env)
        received = receiver.accepted_spans()  # the app exits only after its exporters flushed
    copies = Counter(span.span_id for span in received)
    assert received and max(copies.values()) == 1, copies  # each span exported once
    ours = [
        span
        for span in received
        if span.attributes.get(semconv.LLM_TOKENS_TOTAL) is not None
        and span.attributes.get(semconv.MLTRACK_USAGE_COUNTED)
    ]
    assert sorted(span.name for span in ours) == [
        "chat gpt-4o-mini",
        "chat gpt-4o-mini",
        "embeddings text-embedding-3-small",
    ]
    for span in ours:
        assert span.attributes[semconv.LLM_COST_TOTAL] > 0
        assert span.attributes[semconv.LLM_COST_CUMULATIVE] > 0
        assert span.resource["service.name"] == "zero-code-app"
    assert totals["calls"] == 3 and totals["unpriced"] == 0
    assert float(totals["cost"]) == pytest.approx(sum(span.attributes[semconv.LLM_COST_TOTAL] for span in ours))


def test_tracking_turned_off_inside_the_app_leaves_its_export_path_alone(tmp_path, fake):
    fake.clear()
    with OtlpReceiver() as receiver:
        totals = run_instrumented(tmp_path, fake, receiver, "disable")
        received = receiver.accepted_spans()
    copies = Counter(span.span_id for span in received)
    assert received and max(copies.values()) == 1, copies  # still exported, once
    assert not any(semconv.LLM_COST_TOTAL in span.attributes for span in received)
    assert totals["calls"] == 0
