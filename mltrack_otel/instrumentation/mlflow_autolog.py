"""Calls that MLflow's autolog traces too (``mlflow.openai.autolog()``, ``mlflow.anthropic.autolog()``).

MLflow's autolog wraps the SDK method (``chat.completions.create``, ``messages.create``) above our request-level
span, in a span it does not make current, and sends that span's W3C ``traceparent`` with the request
(``_inject_tracing_headers`` in mlflow/openai/autolog.py and mlflow/anthropic/autolog.py). Left alone, the call
is two traces in MLflow (MLflow's and ours, tokens counted in both), and when MLflow's spans also reach the global
provider (``MLFLOW_USE_DEFAULT_TRACER_PROVIDER=false``) two counted calls in ours.

So our span takes MLflow's span as its parent, read from that header:

* in MLflow the call is one trace, MLflow's span with ours below it. MLflow sums token usage and cost
  topmost-first, so the tokens count once;
* MLflow's span gets our price as its ``mlflow.llm.cost`` (:class:`MlflowAutologCost`, in the export chain),
  otherwise MLflow prices it from its own catalog, and as the topmost price, that would be the trace's cost;
* when MLflow's spans pass through our processor too, ours is the innermost span with usage: it is counted
  and MLflow's becomes a wrapper (``mltrack.usage.counted=false``).

A ``traceparent`` that names no live MLflow span (the caller's own distributed tracing) is left alone, as is
a call made under a span of ours that MLflow's span does not descend from (our trace stays whole).

Without instrument(), in MLflow's default mode, autolog's spans stay on MLflow's own provider and never reach our
processor. configure() therefore registers an MLflow span processor (``mlflow.tracing.configure``, beside the
user's own), which runs just before each MLflow span ends (:func:`on_mlflow_span_end`): a span with usage whose
call nothing of ours counted is priced and counted once, and carries our tokens, cost and ``mlflow.llm.cost``
(an explicit null when unpriced). A model call that ended well without usage (an OpenAI stream sent without
``stream_options``) is counted with usage estimated from its request and answer.

Autolog's span is never current, so a span that counts the same call below it may sit in another trace (the
Anthropic SDK's own span). The MLflow span is a wrapper, here and in the processor alike, when our span adopted it
and was counted (processor.mark_covered), or else when a call of its model (and provider, when both name one) was
counted in the same thread or task while it was open (processor.counted_within).
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags

from .. import estimate, guard, semconv
from ..processor import CostSpanProcessor, counted_within, mark_covered, mlflow_cost

TRACEPARENT = "traceparent"
_LLM_COST = semconv.MLFLOW_LLM_COST
_HOOK_OWNER = "mlflow_autolog:span_processor"
# MLflow's span attributes (JSON text): usage, span type, the call's request and its (rebuilt) response.
_MLFLOW_USAGE, _MLFLOW_SPAN_TYPE = semconv.MLFLOW_CHAT_TOKENUSAGE, semconv.MLFLOW_SPANTYPE
_MLFLOW_INPUTS, _MLFLOW_OUTPUTS = "mlflow.spanInputs", "mlflow.spanOutputs"
_CHAT_SPAN_TYPES = ('"CHAT_MODEL"', '"LLM"')
_MAX_PENDING = 4096  # our spans that never reach MlflowAutologCost (a chain without it) must not grow memory

# Our span id -> MLflow's live span it descends from, until our span ends and its price is known.
_pending: dict[int, Any] = {}
_lock = threading.Lock()
guard.renew_lock_after_fork(sys.modules[__name__])  # configure()'s fork hook re-attaches under it in the child


def parent_of(headers: Any) -> tuple[Context, Any] | None:
    """(a context whose current span is MLflow's autolog span, that MLflow span) for a request whose headers
    carry the traceparent of a live MLflow span; None otherwise (the common path: one dict lookup)."""
    if not isinstance(headers, dict):
        return None
    traceparent = headers.get(TRACEPARENT)
    if not isinstance(traceparent, str) or "mlflow" not in sys.modules:
        return None
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    mlflow_span = _live_mlflow_span(trace_id, span_id)
    if mlflow_span is None:
        return None
    current = trace.get_current_span().get_span_context()
    if current.is_valid:  # keep our trace whole: adopt MLflow's span only when it sits below the current span
        parent = getattr(mlflow_span._span, "parent", None)
        if parent is None or parent.span_id != current.span_id or parent.trace_id != current.trace_id:
            return None
    # Remote when MLflow keeps its spans on its own provider: then our pipeline never sees that parent end.
    context = SpanContext(trace_id, span_id, is_remote=_mlflow_isolated(), trace_flags=TraceFlags(flags & 0xFF))
    return trace.set_span_in_context(NonRecordingSpan(context)), mlflow_span


def remember(span: Any, mlflow_span: Any) -> None:
    """Our span descends from mlflow_span: give mlflow_span our price when our span ends."""
    with _lock:
        if len(_pending) >= _MAX_PENDING:
            _pending.pop(next(iter(_pending)))
        _pending[span.get_span_context().span_id] = mlflow_span


def _live_mlflow_span(trace_id: int, span_id: int) -> Any:
    from mlflow.tracing.trace_manager import InMemoryTraceManager
    from mlflow.tracing.utils import encode_span_id

    manager = InMemoryTraceManager.get_instance()
    mlflow_trace_id = manager.get_mlflow_trace_id_from_otel_id(trace_id)
    if mlflow_trace_id is None:
        return None
    return manager.get_span_from_id(mlflow_trace_id, encode_span_id(span_id))


def _mlflow_isolated() -> bool:
    from mlflow.environment_variables import MLFLOW_USE_DEFAULT_TRACER_PROVIDER

    return bool(MLFLOW_USE_DEFAULT_TRACER_PROVIDER.get())


class MlflowAutologCost(SpanProcessor):
    """In the export chain behind CostSpanProcessor: when our span ends, the MLflow autolog span above it (still
    open) takes our price of the call (on our span whether it or a span below it was counted), so that MLflow
    shows one price per call, ours. An unpriced call gets an explicit null cost: MLflow then shows none rather
    than a price from another catalog."""

    def on_end(self, span: ReadableSpan) -> None:
        if not _pending:
            return
        with _lock:
            mlflow_span = _pending.pop(span.context.span_id, None)
        if mlflow_span is None:
            return
        attrs = span.attributes or {}
        if semconv.MLTRACK_USAGE_COUNTED not in attrs:  # no usage read: nothing to say about the price
            return
        own = getattr(mlflow_span, "_span", None)  # the OTel span MLflow's LiveSpan wraps
        if own is not None:
            mark_covered(own.context.span_id)  # our span, or one below it, counted the call
        mlflow_span.set_attribute(_LLM_COST, mlflow_cost(attrs))


# --- MLflow's own span processor: autolog spans that never reach ours ------------------------------------------

_processor: CostSpanProcessor | None = None  # the active chain's; None while none is configured


def attach(processor: CostSpanProcessor) -> None:
    """Price and count MLflow's spans with processor's pricer and ledger; registers our MLflow span processor
    once mlflow is imported (never imports it)."""
    global _processor
    _processor = processor
    from . import when_imported

    when_imported("mlflow", _register, owner=_HOOK_OWNER)


def detach() -> None:
    """Undo attach(): our MLflow span processor is taken out, the user's stay as they are."""
    global _processor
    _processor = None
    from . import when_imported

    when_imported("mlflow", None, owner=_HOOK_OWNER)
    if "mlflow.tracing.config" in sys.modules:
        guard.guarded("instrumentation.mlflow_autolog", _set_registered, False)


def _register(_module: Any) -> None:
    if _processor is not None:
        guard.guarded("instrumentation.mlflow_autolog", _set_registered, True)


def _set_registered(on: bool) -> None:
    """Put on_mlflow_span_end last in MLflow's span processors, or take it out; the user's are kept in order
    (configure(span_processors=...) replaces the list)."""
    import mlflow.tracing.config as mlflow_config

    with _lock:
        theirs = [fn for fn in mlflow_config.get_config().span_processors if fn is not on_mlflow_span_end]
        mlflow_config.configure(span_processors=[*theirs, on_mlflow_span_end] if on else theirs)


def on_mlflow_span_end(live_span: Any) -> None:
    """MLflow runs this just before an MLflow span ends. A span with usage whose call was already counted below
    it (our span, the SDK's own) keeps the price given to it, else gets ours of its usage; one whose end our
    processor sees too (MLFLOW_USE_DEFAULT_TRACER_PROVIDER=false) is counted there and gets our price here;
    any other is priced and counted now. Never raises (MLflow would not end the span)."""
    processor = _processor
    if processor is not None:
        guard.guarded("instrumentation.mlflow_autolog", _account, processor, live_span)


def _account(processor: CostSpanProcessor, live_span: Any) -> None:
    span = getattr(live_span, "_span", None)
    if not hasattr(span, "set_attributes") or not span.is_recording():
        return
    attributes = span.attributes or {}
    if _MLFLOW_USAGE not in attributes:
        # A stream the caller did not ask usage for (OpenAI's stream_options): the call still reached the provider.
        estimated = None if counted_within(span, attributes) else _estimated_usage(span, attributes)
        if estimated is None:
            return
        span.set_attributes(estimated)
    covered = counted_within(span, span.attributes or {})
    if covered and _LLM_COST in attributes:  # our span below it counted the call and gave it our price
        return
    seen = processor.sees(span)  # its end reaches our processor too, which counts it (or not) and says so
    out = processor.account_elsewhere(span, count=not covered and not seen)
    if out is None:
        return
    if not seen:
        span.set_attributes({k: v for k, v in out.items() if v is not None})
    span.set_attribute(_LLM_COST, out[_LLM_COST])  # explicit null: MLflow shows no cost, not its own price


def _estimated_usage(span: Any, attributes: Any) -> dict[str, Any] | None:
    """Estimated usage attributes for an autolog model call that ended well without usage (its request from the
    span's inputs, its answer from the outputs MLflow rebuilt); None for any other span."""
    if attributes.get(_MLFLOW_SPAN_TYPE) not in _CHAT_SPAN_TYPES or span.status.status_code is StatusCode.ERROR:
        return None
    body, answer = _json(attributes.get(_MLFLOW_INPUTS)), _json(attributes.get(_MLFLOW_OUTPUTS))
    if not isinstance(body, dict) or not isinstance(answer, dict):
        return None
    model = body.get("model") if isinstance(body.get("model"), str) else None
    return {
        GEN_AI_USAGE_INPUT_TOKENS: estimate.input_tokens(body, model),
        GEN_AI_USAGE_OUTPUT_TOKENS: estimate.text_tokens(_answer_text(answer), model),
        semconv.MLTRACK_USAGE_SOURCE: estimate.SOURCE_ESTIMATED,
    }


def _answer_text(answer: dict[str, Any]) -> str:
    """The text of an OpenAI (chat) completion's choices, or of an Anthropic message's content blocks."""
    parts = []
    for choice in answer.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        parts.append(message.get("content") if isinstance(message, dict) else choice.get("text"))  # chat, completion
    for block in answer.get("content") or ():
        if isinstance(block, dict):
            parts.append(block.get("text"))
    return "".join(part for part in parts if isinstance(part, str))


def _json(raw: Any) -> Any:
    try:
        return json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
