"""A real Arize Phoenix server (an OTLP receiver with a REST API) for tests and benchmarks.

    http_url, grpc_endpoint, stop = start_phoenix(tmp_path)  # blocks until GET /healthz answers 200
    ...  # OTLP/HTTP: f"{http_url}/v1/traces"; OTLP/gRPC: grpc_endpoint; REST API: f"{http_url}/v1"
    stop()  # idempotent; also registered with atexit

or, in a test module::

    from tests.phoenix_server import phoenix  # noqa: F401  (module-scoped fixture -> Phoenix)

Phoenix lives in its own virtualenv, ``.venv-phoenix`` (built by ``make test``), so that its many dependencies never
mix with ours; the server runs as a subprocess of that venv's python. It listens on 127.0.0.1 only (the gRPC port is
bound to loopback by the tiny launcher below: Phoenix itself binds ``[::]``), keeps its sqlite database in a temp
working dir, and is told to make no network calls of its own (telemetry, web fonts, sandbox download, agent assistant
and MCP server all off). Start-up takes about 10 s (imports and the sqlite migrations); its output goes to
``<tmp_path>/phoenix.log``. Spans are read back with ``GET /v1/projects/{project}/spans`` (see ``Phoenix.spans``);
Phoenix ingests asynchronously, so ``wait_for_spans`` polls until the expected spans are there.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import answers, free_port, stopper

__all__ = ["PHOENIX_PYTHON", "Phoenix", "phoenix", "start_phoenix"]

ROOT = Path(__file__).resolve().parents[1]
PHOENIX_VENV = ROOT / ".venv-phoenix"
PHOENIX_PYTHON = PHOENIX_VENV / "bin" / "python"

_QUIET_ENV = {
    "PHOENIX_HOST": "127.0.0.1",
    "PHOENIX_TELEMETRY_ENABLED": "false",
    "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
    "PHOENIX_AGENTS_DISABLE_BASH": "true",
    "PHOENIX_AGENTS_DISABLE_WEB_ACCESS": "true",
    "PHOENIX_ENABLE_MCP_SERVER": "false",
    "PHOENIX_LOG_MIGRATIONS": "false",
    "DO_NOT_TRACK": "1",
}

# `phoenix serve`, with the gRPC receiver bound to 127.0.0.1 instead of [::] (Phoenix has no setting for that).
_LAUNCHER = """
import sys
import grpc.aio

_server = grpc.aio.server

def _loopback_server(*args, **kwargs):
    server = _server(*args, **kwargs)
    add = server.add_insecure_port
    server.add_insecure_port = lambda address: add(address.replace("[::]:", "127.0.0.1:", 1))
    return server

grpc.aio.server = _loopback_server
from phoenix.server.main import main

sys.argv = ["phoenix", "serve"]
main()
"""


def _grpc_listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _require_venv() -> None:
    if not (PHOENIX_PYTHON.exists() and (PHOENIX_VENV / "bin" / "phoenix").exists()):
        pytest.fail(
            f"Arize Phoenix is not installed in {PHOENIX_VENV} (the OTLP export tests need a real receiver). "
            "Run `make test` (or `make .venv-phoenix/.installed`), which builds it.",
            pytrace=False,
        )


def start_phoenix(tmp_path: Path, *, timeout: float = 120.0) -> tuple[str, str, Callable[[], None]]:
    """Start Phoenix on free loopback ports; return ``(http_url, grpc_endpoint, stop)`` once both answer.

    ``http_url`` is ``http://127.0.0.1:<port>`` (OTLP/HTTP at ``/v1/traces``, REST API at ``/v1``);
    ``grpc_endpoint`` is ``http://127.0.0.1:<grpc port>`` (the ``http`` scheme makes the OTLP gRPC exporter use an
    insecure channel)."""
    _require_venv()
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    env.update(_QUIET_ENV, HOME=str(tmp_path))
    last_error = "no attempt"
    for _attempt in range(3):  # another process may grab a free port before the server binds it
        http_port, grpc_port = free_port(), free_port()
        if http_port == grpc_port:
            continue
        work_dir = tmp_path / f"phoenix-{http_port}"
        work_dir.mkdir()
        url = f"http://127.0.0.1:{http_port}"
        log_path = tmp_path / "phoenix.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed by stop()
        proc = subprocess.Popen(
            [str(PHOENIX_PYTHON), "-c", _LAUNCHER],
            cwd=work_dir,
            env={
                **env,
                "PHOENIX_PORT": str(http_port),
                "PHOENIX_GRPC_PORT": str(grpc_port),
                "PHOENIX_WORKING_DIR": str(work_dir),
                "PHOENIX_SQL_DATABASE_URL": f"sqlite:///{work_dir / 'phoenix.db'}",
            },
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stop = stopper(proc, log_file)
        atexit.register(stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if answers(f"{url}/healthz") and _grpc_listening(grpc_port):
                return url, f"http://127.0.0.1:{grpc_port}", stop
            time.sleep(0.2)
        stop()
        tail = log_path.read_text(errors="replace")[-3000:]
        last_error = f"exit code {proc.returncode}, log tail:\n{tail}"
        if "address already in use" not in tail.lower():
            break
    raise RuntimeError(f"Phoenix did not become healthy: {last_error}")


@dataclass
class Phoenix:
    """A running Phoenix: where to send OTLP and how to read spans back."""

    url: str
    grpc_endpoint: str

    @property
    def otlp_http_endpoint(self) -> str:
        return f"{self.url}/v1/traces"

    def spans(self, trace_id: str, project: str = "default") -> list[dict[str, Any]]:
        """Every span of one trace (hex id), as Phoenix's REST API returns them (name, context, parent_id,
        attributes, ...), following the pagination cursor."""
        spans: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = [("trace_id", trace_id), ("limit", "1000")] + ([("cursor", cursor)] if cursor else [])
            path = f"/v1/projects/{urllib.parse.quote(project, safe='')}/spans?{urllib.parse.urlencode(query)}"
            try:
                with urllib.request.urlopen(self.url + path, timeout=10) as response:
                    body = json.load(response)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:  # the project does not exist until its first span is stored
                    return []
                raise
            spans.extend(body["data"])
            cursor = body.get("next_cursor")
            if not cursor:
                return spans

    def wait_for_spans(
        self, trace_id: str, count: int, project: str = "default", timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """The trace's spans once at least `count` are stored (Phoenix inserts in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(trace_id, project)
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """A real Phoenix server, started once per test module."""
    url, grpc_endpoint, stop = start_phoenix(tmp_path_factory.mktemp("phoenix"))
    try:
        yield Phoenix(url, grpc_endpoint)
    finally:
        stop()
