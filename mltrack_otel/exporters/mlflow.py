"""Export OpenTelemetry spans to MLflow Tracing (any tracking URI).

``MlflowSpanExporter`` is an ordinary OpenTelemetry ``SpanExporter``: put it behind a
``BatchSpanProcessor`` (our ``CostSpanProcessor`` forwards enriched copies to it) and every span
becomes part of an MLflow trace, with MLflow's span types, inputs/outputs, token usage and *our* cost.

How spans reach MLflow (MLflow 3.4+, verified against 3.17)
----------------------------------------------------------
MLflow 3 ingests OpenTelemetry spans natively. Its server has an OTLP/HTTP endpoint, ``POST /v1/traces``
(``mlflow/server/otel_api.py``), that takes an ``ExportTraceServiceRequest`` plus the
``x-mlflow-experiment-id`` header (and an optional ``x-mlflow-run-id``), converts every span with
``Span.from_otel_proto`` and stores the whole batch with one ``store.log_spans(experiment_id, spans)``
call. The SQL tracking store implements the same ``log_spans`` (one transaction per batch; traces are
created on first sight and their totals recomputed as later batches add spans, so children and parents
may arrive in separate batches).

* ``http://`` / ``https://`` URIs: we encode the batch once with OpenTelemetry's own OTLP protobuf encoder
  and POST it to ``<uri>/v1/traces``: one request per batch, the documented wire protocol any OTel client
  uses, no per-span REST calls and no MLflow-private data model on the wire. The run id travels in
  ``x-mlflow-run-id`` (same request). Experiment lookup/creation and run metrics use the MLflow REST API
  2.0. All requests go through MLflow's ``http_request`` with ``get_default_host_creds(uri)``, so basic
  auth, bearer tokens and TLS settings (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``,
  ``MLFLOW_TRACKING_INSECURE_TLS``, ...) behave as for ``MlflowClient``, but with our own bounded retries
  (2 retries, ``timeout_seconds``): ``MlflowClient`` retries a dead server for minutes
  (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``), which would stall the export thread and interpreter exit.
* Any other URI (``sqlite:///path/mlflow.db``, the embedded default, or another SQL database): the same
  protobuf batch is turned into MLflow spans with ``Span.from_otel_proto`` (the function the server uses)
  and written with ``TracingClient.log_spans`` (what MLflow's own exporter uses). Both URI kinds therefore
  go through the identical conversion and storage code; only the transport differs.
  (A ``file:`` store has no ``log_spans``; export then fails with one logged error.)

What MLflow derives by itself, and what we add
---------------------------------------------
On storage MLflow runs its OTel translators (``mlflow/tracing/otel/translation``), including one for the
GenAI semantic conventions: ``gen_ai.input.messages``/``gen_ai.output.messages`` become
``mlflow.spanInputs``/``mlflow.spanOutputs``, ``gen_ai.usage.*`` becomes ``mlflow.chat.tokenUsage``
(total added), ``gen_ai.response.model``/``gen_ai.provider.name`` become ``mlflow.llm.model``/``provider``.
We do not repeat that work. What we add or change so that MLflow shows our numbers (span type, token usage, our
cost on counted spans, no cost rather than $0 on unpriced ones, hidden usage on uncounted wrappers, a trace tag
when a trace's cost misses unpriced calls) is decided in ``mlflow_attributes.py``, shared with the OTLP path
(``MlflowOtlpExporter``). ``mlflow_fallback_pricing=True`` lets MLflow price counted spans we could not price.
(MLflow's first own price lookup in a process loads its catalog, about 7 s; our spans never trigger it.)

Runs. If an MLflow run is active in this process (``mlflow.active_run()``, else the most recent active
run of any thread, as MLflow's own tracing does, since a ``BatchSpanProcessor`` exports from its worker
thread) and it lives at the same tracking URI, traces whose root span is in the batch are linked to it, and
the run gets running-total metrics ``llm.tokens.cumulative.prompt/.completion/.total`` and
``llm.cost.cumulative``, with ``llm.cost.cumulative.unpriced_calls`` once a call had no known price (one
``log_batch`` per exported batch with counted spans; step = counted calls so far). They are summed over
counted spans, which is exactly-once whatever the scopes of root spans are.
Flush the provider before ``mlflow.end_run()`` or the last batch finds no active run.

``mlflow`` is imported on first export, never at ``import mltrack_otel``; ``export`` never raises.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .. import semconv
from ..processor import is_local_root
from .mlflow_attributes import EXPERIMENT_HEADER, for_mlflow

__all__ = ["MlflowSpanExporter"]

_logger = logging.getLogger("mltrack_otel.exporters.mlflow")

_EXPERIMENT_HEADER = EXPERIMENT_HEADER
_RUN_HEADER = "x-mlflow-run-id"
_OTLP_TRACES_PATH = "/v1/traces"

_RUN_METRICS = (
    (semconv.LLM_TOKENS_CUMULATIVE_PROMPT, semconv.LLM_TOKENS_PROMPT),
    (semconv.LLM_TOKENS_CUMULATIVE_COMPLETION, semconv.LLM_TOKENS_COMPLETION),
    (semconv.LLM_TOKENS_CUMULATIVE_TOTAL, semconv.LLM_TOKENS_TOTAL),
    (semconv.LLM_COST_CUMULATIVE, semconv.LLM_COST_TOTAL),
)
_MAX_TRACE_LINKS_PER_REQUEST = 100  # MLflow's limit for link_traces_to_run


class _RunTotals:
    __slots__ = ("calls", "unpriced", "values")

    def __init__(self) -> None:
        self.calls = 0
        self.unpriced = 0  # counted calls without our cost: the run's llm.cost.cumulative misses them
        self.values = [0.0] * len(_RUN_METRICS)


class MlflowSpanExporter(SpanExporter):
    """Write spans to MLflow Tracing at ``tracking_uri`` (sqlite/SQL store or http(s) tracking server).

    Args:
        tracking_uri: MLflow tracking URI; default ``mlflow.get_tracking_uri()`` (which honours
            ``MLFLOW_TRACKING_URI`` and defaults to ``sqlite:///mlflow.db``), resolved on first export.
        experiment_name: experiment to log traces to, created if missing.
        experiment_id: existing experiment id (wins over ``experiment_name``). With neither, the
            ``MLFLOW_EXPERIMENT_ID`` / ``MLFLOW_EXPERIMENT_NAME`` environment variables, else MLflow's
            "Default" experiment.
        mlflow_fallback_pricing: let MLflow price counted spans that we could not price (default: no,
            such spans show no cost in MLflow, consistent with our ledger).
        timeout_seconds: timeout of each HTTP request (http(s) URIs only).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        experiment_id: str | None = None,
        *,
        mlflow_fallback_pricing: bool = False,
        timeout_seconds: float = 10.0,
    ) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise ImportError("MlflowSpanExporter needs mlflow: pip install 'mltrack-otel[mlflow]'")
        self._tracking_uri_arg = tracking_uri
        self._experiment_name = experiment_name
        self._experiment_id_arg = str(experiment_id) if experiment_id is not None else None
        self._fallback_pricing = mlflow_fallback_pricing
        self._timeout = timeout_seconds
        self._lock = threading.Lock()  # guards lazy setup, run totals and the logged-once set
        self._ready = False
        self._shutdown = False
        self._tracking_uri: str | None = None
        self._is_http = False
        self._experiment_id: str | None = None
        self._client: Any = None  # MlflowClient (store URIs only)
        self._tracing_client: Any = None  # mlflow.tracing.client.TracingClient (store URIs only)
        self._max_retries = 2  # per HTTP request, 0.5 s then 1 s apart
        self._run_totals: dict[str, _RunTotals] = {}
        self._logged: set[str] = set()

    # ------------------------------------------------------------------ SpanExporter API

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            self._log_once("shutdown", "export called after shutdown; %d spans dropped", len(spans))
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            self._ensure_ready()
        except Exception as exc:
            self._log_once(
                "setup", "cannot set up MLflow export (%s); %d spans dropped", _short(exc), len(spans), exc=exc
            )
            return SpanExportResult.FAILURE
        try:
            request = self._encode(spans)
        except Exception as exc:
            self._log_once(
                "encode", "cannot encode spans for MLflow (%s); %d spans dropped", _short(exc), len(spans), exc=exc
            )
            return SpanExportResult.FAILURE

        run_id = self._active_run_id()
        roots = sorted({_mlflow_trace_id(s) for s in spans if is_local_root(s)})
        try:
            if self._is_http:
                self._post(request, run_id)
            else:
                self._log_to_store(request)
        except Exception as exc:
            kind = "http" if self._is_http else "store"
            self._log_once(
                kind,
                "MLflow rejected %d spans at %s: %s",
                len(spans),
                self._tracking_uri,
                _short(exc),
                exc=exc,
            )
            return SpanExportResult.FAILURE

        if run_id is not None:
            try:
                if roots and not self._is_http:  # the server links them itself from x-mlflow-run-id
                    for i in range(0, len(roots), _MAX_TRACE_LINKS_PER_REQUEST):
                        self._client.link_traces_to_run(roots[i : i + _MAX_TRACE_LINKS_PER_REQUEST], run_id)
                self._log_run_metrics(spans, run_id)
            except Exception as exc:
                # The traces are stored; only the run bookkeeping failed.
                self._log_once("run", "cannot link traces or log metrics to MLflow run %s: %s", run_id, _short(exc))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is buffered here; every export() call is written before it returns

    # ------------------------------------------------------------------ setup

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            import mlflow

            uri = self._tracking_uri_arg or mlflow.get_tracking_uri()
            self._tracking_uri = uri
            self._is_http = uri.lower().startswith(("http://", "https://"))
            if not self._is_http:
                from mlflow.tracing.client import TracingClient
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=uri)
                self._tracing_client = TracingClient(tracking_uri=uri)
            self._experiment_id = self._resolve_experiment()
            self._ready = True

    def _resolve_experiment(self) -> str:
        experiment_id = self._experiment_id_arg
        name = self._experiment_name
        if experiment_id is None and name is None:
            experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID") or None
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or None
            if experiment_id is None and name is None:
                experiment_id = "0"  # MLflow's "Default" experiment, present in every store
        if self._is_http:
            return self._resolve_experiment_rest(experiment_id, name)
        client = self._client
        if experiment_id is not None:
            experiment = client.get_experiment(experiment_id)  # raises if it does not exist
        else:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                try:
                    return str(client.create_experiment(name))
                except Exception:
                    experiment = client.get_experiment_by_name(name)  # created concurrently?
                    if experiment is None:
                        raise
        if experiment.lifecycle_stage != "active":
            raise RuntimeError(f"experiment {experiment.name!r} ({experiment.experiment_id}) is deleted")
        return str(experiment.experiment_id)

    def _resolve_experiment_rest(self, experiment_id: str | None, name: str | None) -> str:
        # MLflow REST API 2.0 with our bounded retries: MlflowClient would retry a dead server for minutes
        # (MLFLOW_HTTP_REQUEST_MAX_RETRIES), stalling the BatchSpanProcessor worker and interpreter exit.
        if experiment_id is not None:
            response = self._rest("GET", "/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id})
        else:
            response = self._rest("GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
            if response.status_code == 404:
                created = self._rest("POST", "/api/2.0/mlflow/experiments/create", json={"name": name})
                if created.status_code == 200:
                    return str(created.json()["experiment_id"])
                # Created concurrently by someone else? Look it up again.
                response = self._rest(
                    "GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name}
                )
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code} looking up the experiment: {response.text[:300]}")
        experiment = response.json()["experiment"]
        if experiment.get("lifecycle_stage", "active") != "active":
            raise RuntimeError(f"experiment {experiment.get('name')!r} ({experiment['experiment_id']}) is deleted")
        return str(experiment["experiment_id"])

    def _rest(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        return http_request(
            host_creds=get_default_host_creds(self._tracking_uri),
            endpoint=endpoint,
            method=method,
            max_retries=self._max_retries,
            backoff_factor=0.5,
            timeout=self._timeout,
            raise_on_status=False,
            **kwargs,
        )

    # ------------------------------------------------------------------ encoding

    def _encode(self, spans: Sequence[ReadableSpan]) -> Any:
        """One OTLP ExportTraceServiceRequest for the batch, adjusted for MLflow (mlflow_attributes.py)."""
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        return encode_spans(for_mlflow(spans, self._fallback_pricing))

    # ------------------------------------------------------------------ transports

    def _post(self, request: Any, run_id: str | None) -> None:
        headers = {
            "Content-Type": "application/x-protobuf",
            _EXPERIMENT_HEADER: self._experiment_id,
        }
        if run_id is not None:
            headers[_RUN_HEADER] = run_id
        response = self._rest("POST", _OTLP_TRACES_PATH, data=request.SerializeToString(), extra_headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code} from {_OTLP_TRACES_PATH}: {response.text[:300]}")

    def _log_to_store(self, request: Any) -> None:
        from mlflow.entities import Span

        mlflow_spans = [
            Span.from_otel_proto(proto, resource=resource_spans.resource)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for proto in scope_spans.spans
        ]
        self._tracing_client.log_spans(self._experiment_id, mlflow_spans)

    # ------------------------------------------------------------------ runs

    def _active_run_id(self) -> str | None:
        """The MLflow run active in this process, if it lives at our tracking URI."""
        try:
            import mlflow

            run = mlflow.active_run()
            if run is None:
                # BatchSpanProcessor exports from its own thread, where the thread-local active run
                # is None; MLflow's own tracing looks at all threads for this reason.
                from mlflow.tracking import fluent

                latest = getattr(fluent, "_get_latest_active_run", None)
                run = latest() if latest is not None else None
            if run is None:
                return None
            if _normalize_uri(mlflow.get_tracking_uri()) != _normalize_uri(self._tracking_uri):
                self._log_once(
                    "run-uri",
                    "active MLflow run %s is at %s, not at %s: traces are not linked to it",
                    run.info.run_id,
                    mlflow.get_tracking_uri(),
                    self._tracking_uri,
                    level=logging.INFO,
                )
                return None
            return run.info.run_id
        except Exception as exc:
            self._log_once("run-lookup", "cannot look up the active MLflow run: %s", _short(exc))
            return None

    def _log_run_metrics(self, spans: Sequence[ReadableSpan], run_id: str) -> None:
        increments = [0.0] * len(_RUN_METRICS)
        calls = unpriced = 0
        for span in spans:
            attrs = span.attributes or {}
            if attrs.get(semconv.MLTRACK_USAGE_COUNTED) is not True:
                continue
            calls += 1
            unpriced += attrs.get(semconv.MLTRACK_COST_UNPRICED) is True
            for i, (_, source) in enumerate(_RUN_METRICS):
                value = attrs.get(source)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    increments[i] += value
        if not calls:
            return
        with self._lock:
            totals = self._run_totals.setdefault(run_id, _RunTotals())
            totals.calls += calls
            totals.unpriced += unpriced
            for i, inc in enumerate(increments):
                totals.values[i] += inc
            step, values = totals.calls, list(totals.values)
            keys = [key for key, _ in _RUN_METRICS]
            if totals.unpriced:
                keys.append(semconv.LLM_COST_CUMULATIVE_UNPRICED_CALLS)
                values.append(float(totals.unpriced))
        now = int(time.time() * 1000)
        if self._is_http:
            metrics = [
                {"key": key, "value": value, "timestamp": now, "step": step}
                for key, value in zip(keys, values, strict=True)
            ]
            response = self._rest("POST", "/api/2.0/mlflow/runs/log-batch", json={"run_id": run_id, "metrics": metrics})
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code} from log-batch: {response.text[:300]}")
        else:
            from mlflow.entities import Metric

            metrics = [Metric(key, value, now, step) for key, value in zip(keys, values, strict=True)]
            self._client.log_batch(run_id, metrics=metrics, synchronous=True)

    # ------------------------------------------------------------------ logging

    def _log_once(
        self, kind: str, msg: str, *args: Any, exc: BaseException | None = None, level: int = logging.WARNING
    ) -> None:
        with self._lock:
            first = kind not in self._logged
            self._logged.add(kind)
        args = tuple(_masked(arg) for arg in args)
        if first:
            if exc is not None and _logger.isEnabledFor(logging.DEBUG):  # its traceback repeats the URL: mask it too
                msg, args = msg + "\n%s", (*args, _masked("".join(traceback.format_exception(exc))))
            _logger.log(level, msg, *args)
        else:
            _logger.debug(msg, *args)


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@]+@")


def _masked(value: Any) -> Any:
    """Text with the user:password@ of any URL in it masked: tracking URIs may carry credentials, logs must not."""
    return _URL_CREDENTIALS.sub("***@", value) if isinstance(value, str) else value


def _mlflow_trace_id(span: ReadableSpan) -> str:
    # Span.from_otel_proto derives the MLflow trace id ("tr-" + 32 hex digits) from the OTel trace id.
    return f"tr-{span.context.trace_id:032x}"


def _normalize_uri(uri: str | None) -> str:
    return (uri or "").rstrip("/")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    text = text.replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."
