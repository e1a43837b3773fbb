"""What MLflow must find on our spans to show our numbers, on every path that reaches it.

One module decides, two paths apply it: ``MlflowSpanExporter`` (direct: sqlite store or server) and
``MlflowOtlpExporter`` (our OTLP exporter when it posts to MLflow's ``/v1/traces``, directly or through a collector
that forwards the bytes). Both hand MLflow a copy of each span made by :func:`for_mlflow`; ``mlflow`` is not imported.

How MLflow (3.4+, verified against 3.17) stores an OTLP span, and why each change below is needed:

* It translates ``gen_ai.usage.*`` (and OpenLLMetry/OpenInference usage) into ``mlflow.chat.tokenUsage`` and, when a
  span has usage and a model but no ``mlflow.llm.cost``, prices it itself (LiteLLM, else its bundled table).
* A trace's cost and tokens are tree-aware sums: a span's value counts only when no ancestor has one (topmost wins).
  Any *dict* in ``mlflow.llm.cost``, even ``{}``, counts as "has a cost" and adds zeros: an unpriced call written as
  ``{}`` turned a trace's cost into ``{"total_cost": 0.0}``. A non-dict value fails the whole batch.

So, on the copy MLflow receives:

* ``mlflow.spanType`` from ``gen_ai.operation.name`` (MLflow fills only the span JSON, not the column
  ``search_traces`` filters on); an explicit one is kept.
* Counted spans (``mltrack.usage.counted=true``): ``mlflow.chat.tokenUsage`` from our usage mirror (with a total even
  for embeddings) and ``mlflow.llm.cost`` from our ``llm.cost.*``, used verbatim at span and trace level.
* A counted span we could not price gets no ``mlflow.llm.cost`` (so no cost, not $0) and an empty
  ``mlflow.llm.model``, the one way to stop MLflow inventing a price from another catalog while keeping the tokens
  (the model stays in ``gen_ai.request.model`` / ``gen_ai.response.model``). ``fallback_pricing=True`` lets MLflow
  price such spans instead.
* Uncounted spans (``mltrack.usage.counted=false``, framework wrappers): their usage attributes are renamed to
  ``mltrack.uncounted.<name>``, so MLflow neither prices them nor counts their tokens; the counted span below
  carries the same call.
* A root span whose totals miss unpriced calls carries ``mlflow.traceTag.llm.cost.cumulative.unpriced_calls``: MLflow
  makes it the trace tag ``llm.cost.cumulative.unpriced_calls`` = N, saying the trace's cost is a lower bound.
* Spans without ``mltrack.usage.counted`` (not seen by our processor) get only the span type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .. import guard, semconv
from ..processor import copy_span, is_local_root

__all__ = ["MlflowOtlpExporter", "for_mlflow", "mlflow_attributes"]

# MLflow attribute names (mlflow.tracing.constant), from our registry: choosing what to send needs no mlflow import.
SPAN_TYPE = semconv.MLFLOW_SPANTYPE
CHAT_USAGE = semconv.MLFLOW_CHAT_TOKENUSAGE
LLM_COST = semconv.MLFLOW_LLM_COST
MODEL = semconv.MLFLOW_LLM_MODEL
TRACE_TAG_PREFIX = "mlflow.traceTag."
EXPERIMENT_HEADER = "x-mlflow-experiment-id"

_OPERATION = "gen_ai.operation.name"
_OPERATION_TO_SPAN_TYPE = {
    "chat": "CHAT_MODEL",
    "text_completion": "LLM",
    "generate_content": "LLM",
    "embeddings": "EMBEDDING",
    "execute_tool": "TOOL",
    "invoke_agent": "AGENT",
    "create_agent": "AGENT",
    "retrieval": "RETRIEVER",
}
_TRACK_KEYS = (semconv.EXECUTION_TIME_SECONDS, semconv.MLTRACK_SCOPE_NAME)
# Attribute prefixes MLflow's translators read token usage from (GenAI semconv, OpenLLMetry, OpenInference).
_USAGE_PREFIXES = ("gen_ai.usage.", "llm.token_count.", "llm.usage.")
UNCOUNTED_PREFIX = "mltrack.uncounted."
_CACHE_USAGE = (  # MLflow usage key, GenAI attributes (current name first)
    ("cache_read_input_tokens", ("gen_ai.usage.cache_read.input_tokens",)),
    (
        "cache_creation_input_tokens",
        ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens"),
    ),
)
UNPRICED_TAG = TRACE_TAG_PREFIX + semconv.LLM_COST_CUMULATIVE_UNPRICED_CALLS


def _is_usage_key(key: str) -> bool:
    return key.startswith(_USAGE_PREFIXES) or key == CHAT_USAGE


def token_usage(attrs: Mapping[str, Any]) -> dict[str, int] | None:
    """MLflow's token usage dict from our usage mirror: exact, and with a total even when the
    instrumentation reported input tokens only (embeddings), which MLflow's translator leaves without."""
    prompt = attrs.get(semconv.LLM_TOKENS_PROMPT)
    completion = attrs.get(semconv.LLM_TOKENS_COMPLETION)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    total = attrs.get(semconv.LLM_TOKENS_TOTAL)
    usage = {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": total if isinstance(total, int) else prompt + completion,
    }
    for key, sources in _CACHE_USAGE:
        for source in sources:
            value = attrs.get(source)
            if isinstance(value, int):
                usage[key] = value
                break
    return usage


def cost_json(attrs: Mapping[str, Any]) -> str | None:
    """MLflow's cost JSON from our per-call cost attributes; None when the span was not priced."""
    parts = (
        attrs.get(semconv.LLM_COST_PROMPT),
        attrs.get(semconv.LLM_COST_COMPLETION),
        attrs.get(semconv.LLM_COST_TOTAL),
    )
    if not all(isinstance(part, float) for part in parts):
        return None
    return json.dumps(dict(zip(("input_cost", "output_cost", "total_cost"), parts, strict=True)))


def span_type(attrs: Mapping[str, Any]) -> str:
    operation = attrs.get(_OPERATION)
    if operation is not None:
        return _OPERATION_TO_SPAN_TYPE.get(str(operation), "UNKNOWN")
    if any(key in attrs for key in _TRACK_KEYS):
        return "CHAIN"
    return "UNKNOWN"


def mlflow_attributes(attrs: Mapping[str, Any], is_root: bool, fallback_pricing: bool = False) -> dict[str, Any]:
    """The attributes MLflow should receive for a span with `attrs` (a new dict; `attrs` is not changed)."""
    counted = attrs.get(semconv.MLTRACK_USAGE_COUNTED)
    if counted is False:
        out = {(UNCOUNTED_PREFIX + key if _is_usage_key(key) else key): value for key, value in attrs.items()}
    else:
        out = dict(attrs)
    if SPAN_TYPE not in out:
        out[SPAN_TYPE] = span_type(attrs)
    if counted is True:
        if CHAT_USAGE not in out and (usage := token_usage(attrs)):
            out[CHAT_USAGE] = json.dumps(usage)
        if LLM_COST not in out:
            cost = cost_json(attrs)
            if cost is not None:
                out[LLM_COST] = cost
            elif not fallback_pricing:
                out[MODEL] = ""  # MLflow prices only spans with a model; ours stays in gen_ai.*.model
    unpriced = attrs.get(semconv.LLM_COST_CUMULATIVE_UNPRICED_CALLS)
    if is_root and isinstance(unpriced, int) and unpriced > 0:
        out[UNPRICED_TAG] = str(unpriced)
    return out


def for_mlflow(spans: Sequence[ReadableSpan], fallback_pricing: bool = False) -> list[ReadableSpan]:
    """Copies of `spans` carrying what MLflow needs (module docstring)."""
    return [_copy(span, fallback_pricing) for span in spans]


def _copy(span: ReadableSpan, fallback_pricing: bool) -> ReadableSpan:
    return copy_span(span, mlflow_attributes(span.attributes or {}, is_local_root(span), fallback_pricing))


class MlflowOtlpExporter(SpanExporter):
    """An OTLP exporter whose spans MLflow prices as we do: wraps any SpanExporter (OTLP http or grpc) whose
    spans end in MLflow's ``/v1/traces``, directly or through a collector, and hands it :func:`for_mlflow` copies.

    configure() puts it in front of the OTLP exporter when ``otlp_for_mlflow`` is on (by default, when the OTLP
    headers name an MLflow experiment: ``x-mlflow-experiment-id``)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            copies = for_mlflow(spans)
        except Exception as exc:  # MLflow then prices these spans itself: better than losing them
            guard.record_error("exporters.mlflow_attributes", exc)
            copies = list(spans)
        return self.inner.export(copies)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def targets_mlflow(headers: Mapping[str, str]) -> bool:
    """True when OTLP headers name an MLflow experiment: only MLflow's /v1/traces reads that header."""
    return any(key.lower() == EXPERIMENT_HEADER for key in headers)
