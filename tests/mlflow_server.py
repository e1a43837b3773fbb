"""A real ``mlflow server`` for tests: sqlite backend in a temp dir, 127.0.0.1, a free port.

    url, stop = start_mlflow_server(tmp_path)   # blocks until GET /health answers 200
    ...
    stop()                                      # idempotent; also registered with atexit

or, in a test module or conftest::

    from tests.mlflow_server import mlflow_server  # noqa: F401  (module-scoped fixture -> url)

The server runs in its own process group (``mlflow server`` spawns a uvicorn worker), which ``stop()``
terminates as a whole: SIGTERM, then SIGKILL after a grace period. The server's background job runner is
disabled (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``): it would add several huey worker processes and a
/dev/shm directory that the tests do not need. Telemetry is disabled. Start-up takes about 5 s (imports
and the sqlite schema migrations); its output goes to ``<tmp_path>/mlflow-server.log``.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servers import answers, free_port, stopper

__all__ = ["mlflow_server", "start_mlflow_server"]

_QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


def start_mlflow_server(tmp_path: Path, *, timeout: float = 90.0) -> tuple[str, Callable[[], None]]:
    """Start ``mlflow server`` on a free loopback port; return ``(url, stop)`` once /health answers."""
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **_QUIET_ENV}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    last_error = "no attempt"
    for _attempt in range(3):  # another process may grab the free port before the server binds it
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = tmp_path / "mlflow-server.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed by stop()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{tmp_path / 'mlflow.db'}",
                "--artifacts-destination",
                str(tmp_path / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stop = stopper(proc, log_file)
        atexit.register(stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if answers(f"{url}/health"):
                return url, stop
            time.sleep(0.1)
        stop()
        tail = log_path.read_text(errors="replace")[-3000:]
        last_error = f"exit code {proc.returncode}, log tail:\n{tail}"
        if "address already in use" not in tail.lower():
            break
    raise RuntimeError(f"mlflow server did not become healthy: {last_error}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real MLflow tracking server, started once per test module."""
    url, stop = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield url
    finally:
        stop()
