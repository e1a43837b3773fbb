"""CostSpanProcessor: the hub that prices model-call spans, keeps exactly-once totals and forwards enriched copies.

The SDK freezes a span's attributes before any processor's on_end runs, so this processor owns the downstream
(exporting) processors and hands each of them a ReadableSpan copy carrying the cost and total attributes.

Exactly once: children end before their parents. A span carrying usage is counted by the ledger unless one of
its descendants already counted (the innermost span with usage wins: LangChain over OpenAI counts the OpenAI span).
When a parent ends first (an abandoned stream that garbage collection ends outer-first, both layers carrying
estimated usage), the parent counts and a span with usage below it that ends later is the wrapper: the processor
remembers the ids of recently counted spans for that.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import server_attributes
from opentelemetry.trace import SpanKind

from . import alerts, attribution, call_context, estimate, guard, semconv
from .budget import note_served_model
from .errors import LLMLimitWarning
from .ledger import LEDGER, Ledger, LimitCrossing, Scope, Totals, current_scope
from .pricing import LOCAL, Cost, Pricer, Usage
from .usage import GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
from .usage import count as _count

_log = logging.getLogger("mltrack_otel.processor")

# Token-usage attribute names from the conventions we read, newest first: (input, output).
_USAGE_KEYS = (
    (gen_ai.GEN_AI_USAGE_INPUT_TOKENS, gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS),
    (gen_ai.GEN_AI_USAGE_PROMPT_TOKENS, gen_ai.GEN_AI_USAGE_COMPLETION_TOKENS),
    ("llm.token_count.prompt", "llm.token_count.completion"),  # OpenInference
)
# Optional parts of usage, (ours, OpenInference's): read only from the convention the totals came from.
_CACHE_READ_KEYS = (gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, "llm.token_count.prompt_details.cache_read")
_CACHE_WRITE_KEYS = (gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, "llm.token_count.prompt_details.cache_write")
# The same part under the standalone GenAI conventions (semantic-conventions-genai v0.1.0), which anthropic's own
# spans and instrumentations on OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental use; the other parts'
# names did not change.
_CACHE_WRITE_LATEST = GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
_REASONING_KEYS = (gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, "llm.token_count.completion_details.reasoning")
# Model and provider, newest convention first.
_RESPONSE_MODEL, _REQUEST_MODEL, _OI_MODEL = gen_ai.GEN_AI_RESPONSE_MODEL, gen_ai.GEN_AI_REQUEST_MODEL, "llm.model_name"
_PROVIDER, _SYSTEM, _OI_PROVIDER = gen_ai.GEN_AI_PROVIDER_NAME, gen_ai.GEN_AI_SYSTEM, "llm.provider"
# OpenInference puts an embedding's model under its own key, and its llm.system ("openai") where it could not tell the
# provider from the host. Their token counts are the llm.token_count.* ones read above (prompt and total only).
_OI_EMBEDDING_MODEL, _OI_SYSTEM = "embedding.model_name", "llm.system"
_SERVER_ADDRESS, _SERVER_PORT = server_attributes.SERVER_ADDRESS, server_attributes.SERVER_PORT
_USER_ID = "user.id"  # attribution (attribution.py): the general conventions' name
_NOT_MODEL_CALLS = frozenset({"invoke_agent", "create_agent", "execute_tool", "invoke_workflow"})


def _sums_its_calls(span: ReadableSpan, attrs: Any) -> bool:
    """An in-process agent, tool or workflow span (INTERNAL) whose usage, if any, sums model calls that are counted
    themselves: not a model call. A remote agent's span (CLIENT invoke_agent: Bedrock Agents, Assistants) is one,
    its model calls made out of sight; should a counted call be below it after all, the nesting rule keeps it once."""
    return span.kind is SpanKind.INTERNAL and attrs.get(gen_ai.GEN_AI_OPERATION_NAME) in _NOT_MODEL_CALLS


_AGENT_NAME = gen_ai.GEN_AI_AGENT_NAME  # on a model call: the innermost agent run it was made in (agents.py)
# What marks a span another instrumentation starts as a model call (its attributes at start).
_CALL_MARKS = (gen_ai.GEN_AI_OPERATION_NAME, gen_ai.GEN_AI_SYSTEM, "llm.request.type")
_OI_KIND, _OI_CALL_KINDS = "openinference.span.kind", ("LLM", "EMBEDDING")


def _attach_call_context(span: Span, extra: Mapping[str, Any]) -> None:
    """The attributes attached around a model call (call_context: attribution, prompt identity) onto its span when
    another instrumentation started it; ours carry them already (base_attributes). The span's own values win."""
    attrs = _attributes_of(span)
    if not any(mark in attrs for mark in _CALL_MARKS) and attrs.get(_OI_KIND) not in _OI_CALL_KINDS:
        return  # not a model call (a scope, an HTTP request...)
    missing = {key: value for key, value in extra.items() if key not in attrs}
    if missing:
        span.set_attributes(missing)


_MAX_LIVE_SPANS = 100_000
_MAX_COUNTED_SPANS = 4096  # counted span ids remembered for children that end after them (bounded memory)
_MAX_ANCESTORS = 64  # how far up the live spans a span with usage looks for a counted ancestor
_USAGE_SOURCE = semconv.MLTRACK_USAGE_SOURCE
_PROVIDER_SOURCE, _ESTIMATED, _ABSENT = estimate.SOURCE_PROVIDER, estimate.SOURCE_ESTIMATED, estimate.SOURCE_ABSENT
# MLflow's own spans (mlflow.openai/anthropic.autolog, @mlflow.trace) carry usage, model and provider as JSON text.
_MLFLOW_USAGE, _MLFLOW_MODEL, _MLFLOW_PROVIDER = (
    semconv.MLFLOW_CHAT_TOKENUSAGE,
    semconv.MLFLOW_LLM_MODEL,
    semconv.MLFLOW_LLM_PROVIDER,
)
_MLFLOW_FORMAT = "mlflow.message.format"  # "openai" / "anthropic": the SDK the autolog span wraps

# MLflow's autolog spans are not current, so a span that counts the same call below one (the SDK's own) need not
# be its child. Two links make such an MLflow span a wrapper: explicit, the MLflow span our request span adopted
# (instrumentation.mlflow_autolog marks it once our span is counted); else timing, a call of the MLflow span's model
# (and provider, when both name one) counted in the same thread / asyncio task while it was open.
_COVERED_MAX, _RECENT_CALLS = 4096, 8
_covered: dict[int, None] = {}  # MLflow span ids (OTel) whose call was counted below them; oldest first
_covered_lock = threading.Lock()
# This context's calls counted lately, newest first: (end ns, request model, response model, provider).
_counted_calls: ContextVar[tuple[tuple[int, Any, Any, Any], ...]] = ContextVar("mltrack_counted_calls", default=())


def mark_covered(span_id: int) -> None:
    """The MLflow span span_id wraps a call counted below it: it is not counted again."""
    with _covered_lock:
        _covered[span_id] = None
        if len(_covered) > _COVERED_MAX:
            _covered.pop(next(iter(_covered)))


def counted_within(span: Any, attrs: Mapping[str, Any]) -> bool:
    """Whether the call of an MLflow span (its attributes attrs) was already counted below it: linked explicitly,
    or a call of its model counted in this context since it started."""
    if span.context.span_id in _covered:
        return True
    start, model = span.start_time, _mlflow_text(attrs.get(_MLFLOW_MODEL))
    if start is None or model is None:
        return False
    provider = _mlflow_text(attrs.get(_MLFLOW_PROVIDER))
    for end, request_model, response_model, call_provider in _counted_calls.get():
        if end < start:
            return False  # newest first: the rest ended before this span started
        if model in (request_model, response_model) and (provider is None or call_provider in (None, provider)):
            return True
    return False


def _remember_call(span: ReadableSpan, attrs: Any) -> None:
    """Note a counted call for counted_within (only while MLflow is imported)."""
    get = attrs.get
    request_model = get(_REQUEST_MODEL) or _mlflow_text(get(_MLFLOW_MODEL))
    provider = get(_PROVIDER) or get(_SYSTEM) or _mlflow_text(get(_MLFLOW_PROVIDER))
    call = (span.end_time or time.time_ns(), request_model, get(_RESPONSE_MODEL), provider)
    _counted_calls.set((call, *_counted_calls.get()[: _RECENT_CALLS - 1]))


def mlflow_cost(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``mlflow.llm.cost`` value for a span we read usage on: our price, or None (MLflow then shows no cost
    rather than a price from its own catalog)."""
    total = attrs.get(semconv.LLM_COST_TOTAL)
    if not isinstance(total, float):
        return None
    return {
        "input_cost": attrs.get(semconv.LLM_COST_PROMPT),
        "output_cost": attrs.get(semconv.LLM_COST_COMPLETION),
        "total_cost": total,
    }


def is_local_root(span: ReadableSpan) -> bool:
    """The root of this process's part of a trace: no parent, or a parent in another process."""
    parent = span.parent
    return parent is None or parent.is_remote


def copy_span(span: ReadableSpan, attributes: Mapping[str, Any], extra_events: Sequence[Event] = ()) -> ReadableSpan:
    """A ReadableSpan like `span` with these attributes (and events added): the SDK freezes an ended span."""
    events = getattr(span, "_events", None)  # the public property copies them into a new tuple
    if events is None:
        events = span.events
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=(*events, *extra_events) if extra_events else events,
        links=span._links if hasattr(span, "_links") else span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class _Live:
    """What the processor remembers about a span between its start and its end."""

    __slots__ = ("conversation", "counted_below", "parent_id", "scope")

    def __init__(self, parent_id: int | None, scope: Scope | None, conversation: Any) -> None:
        self.parent_id = parent_id
        self.scope = scope
        self.conversation = conversation  # own gen_ai.conversation.id at start, else the nearest ancestor's
        self.counted_below = False


def read_usage(attrs: Any) -> Usage | None:
    """Normalised usage from a span's attributes; None when the span carries no (valid) token usage."""
    get = attrs.get
    for in_key, out_key in _USAGE_KEYS:
        raw_in, raw_out = get(in_key), get(out_key)
        if raw_in is None and raw_out is None:
            continue
        tokens_in = _count(raw_in if raw_in is not None else 0)
        tokens_out = _count(raw_out if raw_out is not None else 0)
        if tokens_in is None or tokens_out is None:
            guard.count("usage.invalid")
            return None
        # Runs on every span with usage: one lookup per optional part, not a loop over every convention.
        theirs = in_key == "llm.token_count.prompt"
        cache_write = get(_CACHE_WRITE_KEYS[theirs])
        if cache_write is None and not theirs:
            cache_write = get(_CACHE_WRITE_LATEST)
        return Usage(
            tokens_in,
            tokens_out,
            _count(get(_CACHE_READ_KEYS[theirs])) or 0,
            _count(cache_write) or 0,
            _count(get(_REASONING_KEYS[theirs])) or 0,
        )
    raw = get(_MLFLOW_USAGE)
    return _mlflow_usage(raw) if raw is not None else None


def _mlflow_usage(raw: Any) -> Usage | None:
    """Usage from MLflow's JSON ``{"input_tokens", "output_tokens", "cache_read_input_tokens",
    "cache_creation_input_tokens"}``; its input already includes cache tokens (MLflow adds Anthropic's)."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        data = None
    if not isinstance(data, Mapping):
        guard.count("usage.invalid")
        return None
    if "input_tokens" not in data and "output_tokens" not in data:
        return None
    tokens_in, tokens_out = _count(data.get("input_tokens", 0)), _count(data.get("output_tokens", 0))
    cache_read = _count(data.get("cache_read_input_tokens", 0))
    cache_write = _count(data.get("cache_creation_input_tokens", 0))
    if tokens_in is None or tokens_out is None or cache_read is None or cache_write is None:
        guard.count("usage.invalid")
        return None
    return Usage(tokens_in, tokens_out, cache_read, cache_write, 0)


def _mlflow_text(raw: Any) -> str | None:
    """A string attribute MLflow wrote JSON-encoded ('"gpt-4o"'), or plainly."""
    if isinstance(raw, str) and raw.startswith('"'):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    return raw if isinstance(raw, str) and raw else None


def _attributes_of(span: ReadableSpan) -> Mapping[str, Any]:
    """The span's attributes as a plain dict when the SDK keeps one (reads through its MappingProxy of
    BoundedAttributes cost a Python-level __getitem__ and a lock each), else the public mapping."""
    raw = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(raw) is dict:
        return raw
    return span.attributes or {}


class CostSpanProcessor(SpanProcessor):
    """Prices spans that carry token usage, keeps running totals, and forwards enriched copies downstream.

    Usage: ``provider.add_span_processor(CostSpanProcessor(BatchSpanProcessor(OTLPSpanExporter())))``.
    Its pricer becomes the ledger's (which budget reservations price with) only when the ledger has none yet.
    """

    def __init__(
        self,
        *downstream: SpanProcessor,
        pricer: Pricer | None = None,
        ledger: Ledger | None = None,
        track_costs: bool = True,
        track_tokens: bool = True,
    ) -> None:
        self._downstream = tuple(downstream)
        self._pricer = pricer or Pricer()
        self._ledger = ledger if ledger is not None else LEDGER
        self._track_costs = track_costs
        self._track_tokens = track_tokens
        # Budget reservations price as the ledger's processor does. configure() sets the process ledger's pricer
        # itself; a processor built by hand gives it one only when it has none, so that another pipeline (a test,
        # a library, track_costs=False) does not change how every reservation is priced.
        if track_costs and self._ledger.pricer is None:
            self._ledger.pricer = self._pricer
        self._live: dict[int, _Live] = {}
        # Spans that counted (or ended below a counted span), oldest first: a span ending after one of them is
        # not counted again.
        self._counted: dict[int, None] = {}
        self._lock = threading.Lock()
        # Lock-free health counters: these run for every span.
        self._processed = guard.tally("spans.processed").add
        self._priced = guard.tally("spans.priced").add
        self._unpriced = guard.tally("spans.unpriced").add
        self._local = guard.tally("spans.local").add  # served locally: no cost, and none missing
        guard.renew_lock_after_fork(self)

    @property
    def downstream(self) -> tuple[SpanProcessor, ...]:
        return self._downstream

    # -- SpanProcessor -----------------------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            parent = span.parent
            live = self._live
            parent_id = parent.span_id if parent is not None else None
            conversation = _attributes_of(span).get(gen_ai.GEN_AI_CONVERSATION_ID)
            if conversation is None and parent_id is not None:
                parent_live = live.get(parent_id)
                conversation = parent_live.conversation if parent_live is not None else None
            extra = call_context.current()
            if extra:
                _attach_call_context(span, extra)
            # No lock: single dict operations are atomic, and the parent's entry only goes away when it ends.
            live[span.context.span_id] = _Live(parent_id, current_scope(), conversation)
            if len(live) > _MAX_LIVE_SPANS:  # spans started and never ended must not grow memory forever
                with self._lock:
                    live.pop(next(iter(live)), None)
        except Exception as exc:
            guard.record_error("processor.on_start", exc)
        for processor in self._downstream:
            try:
                processor.on_start(span, parent_context=parent_context)
            except Exception as exc:
                guard.record_error("processor.downstream.on_start", exc)

    def on_end(self, span: ReadableSpan) -> None:
        self._processed()
        try:
            enriched = self._enrich(span)
        except Exception as exc:
            guard.record_error("processor.on_end", exc)
            enriched = span
        for processor in self._downstream:
            try:
                processor.on_end(enriched)
            except Exception as exc:
                guard.record_error("processor.downstream.on_end", exc)

    def shutdown(self) -> None:
        for processor in self._downstream:
            try:
                processor.shutdown()
            except Exception as exc:
                guard.record_error("processor.downstream.shutdown", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        ok = True
        for processor in self._downstream:
            try:
                ok = processor.force_flush(timeout_millis) and ok
            except Exception as exc:
                guard.record_error("processor.downstream.force_flush", exc)
                ok = False
        return ok

    # -- enrichment --------------------------------------------------------------------------------------------

    def _enrich(self, span: ReadableSpan) -> ReadableSpan:
        ctx = span.context
        attrs = _attributes_of(span)
        usage = read_usage(attrs) if self._track_tokens and not _sums_its_calls(span, attrs) else None
        cost = self._price(span, attrs, usage) if usage is not None and self._track_costs else None
        # An MLflow autolog span whose call a span of another trace counted (the SDK's own span: autolog's is not
        # its parent) is a wrapper too.
        covered = usage is not None and _MLFLOW_USAGE in attrs and counted_within(span, attrs)
        with self._lock:  # deciding and telling the parent is one step, even when parent and child end on two threads
            live = self._live.pop(ctx.span_id, None)
            parent_id = live.parent_id if live is not None else None
            # A counted span above that ended first: this one's call is that one's (outer-first ends are rare).
            above = parent_id is not None and self._counted_above(parent_id, usage is not None)
            counted = usage is not None and not covered and not above and (live is None or not live.counted_below)
            if counted or above:
                self._remember_counted(ctx.span_id)
            # Tell the parent that usage below it is accounted for, so it is not counted again.
            if parent_id is not None and (counted or covered or above or live.counted_below):
                parent_live = self._live.get(parent_id)
                if parent_live is not None:
                    parent_live.counted_below = True
        local_root = is_local_root(span)
        scope = live.scope if live is not None else None
        scope_root = scope is not None and scope.span_id == ctx.span_id
        merged: dict[str, Any] | None = None  # the copy's attributes, made only when there is something to add
        events: list[Event] = []
        totals: Totals | None = None  # the running totals this span reports; the last one found wins
        if usage is not None:
            merged = dict(attrs)
            totals = self._describe_usage(span, attrs, usage, cost, live, counted, merged, events)

        # Scope roots get their final totals; so does a trace's local root.
        if scope_root:
            totals = scope.totals
        if local_root:
            trace_totals = self._ledger.end_trace(ctx.trace_id)
            if trace_totals.calls and not scope_root:
                totals = trace_totals
        if totals is not None:
            if merged is None:
                merged = dict(attrs)
            merged[semconv.LLM_TOKENS_CUMULATIVE_PROMPT] = totals.prompt_tokens
            merged[semconv.LLM_TOKENS_CUMULATIVE_COMPLETION] = totals.completion_tokens
            merged[semconv.LLM_TOKENS_CUMULATIVE_TOTAL] = totals.total_tokens
            merged[semconv.LLM_COST_CUMULATIVE] = float(totals.cost_usd)
            if totals.unpriced_calls and self._track_costs:  # the cost is a lower bound: it misses these calls
                merged[semconv.LLM_COST_CUMULATIVE_UNPRICED_CALLS] = totals.unpriced_calls
            if totals.estimated_cost_usd:
                merged[semconv.LLM_COST_CUMULATIVE_ESTIMATED] = float(totals.estimated_cost_usd)

        if merged is None:
            return span
        return copy_span(span, merged, events)

    def _counted_above(self, parent_id: int, walk: bool) -> bool:
        """Whether the parent, or with `walk` any ancestor up the spans still open, was counted (under the lock)."""
        counted, live = self._counted, self._live
        if parent_id in counted:
            return True
        if not walk:
            return False
        for _ in range(_MAX_ANCESTORS):
            entry = live.get(parent_id)
            if entry is None or entry.parent_id is None:
                return False
            parent_id = entry.parent_id
            if parent_id in counted:
                return True
        return False

    def _remember_counted(self, span_id: int) -> None:
        counted = self._counted
        counted[span_id] = None
        if len(counted) > _MAX_COUNTED_SPANS:
            counted.pop(next(iter(counted)), None)

    # -- spans that end on another provider (MLflow's own) --------------------------------------------------------

    def sees(self, span: Any) -> bool:
        """Whether span started on a provider this processor is on (then its on_end counts it, or not)."""
        return span.context.span_id in self._live

    def account_elsewhere(self, span: Any, count: bool) -> dict[str, Any] | None:
        """Tokens and our price for a span that carries usage and ends where this processor is not (MLflow keeps
        its autolog spans on a provider of its own): the attributes to set on it before it ends, ``mlflow.llm.cost``
        included; None when it carries no usage. With `count`, the call is added to the totals once, in the
        scope and conversation current now, and the limit events it crosses go on the span."""
        attrs = _attributes_of(span)
        usage = read_usage(attrs) if self._track_tokens else None
        if usage is None:
            return None
        cost = self._price(span, attrs, usage) if self._track_costs else None
        out: dict[str, Any] = {}
        extra = call_context.current()  # attribution around the call: onto MLflow's span and into its totals
        missing = {key: value for key, value in extra.items() if key not in attrs} if extra else None
        if missing:
            attrs = {**attrs, **missing}
            out.update(missing)
        events: list[Event] = []
        live = _Live(None, current_scope(), None)
        self._describe_usage(span, attrs, usage, cost, live, count, out, events)
        if count and span.parent is None:  # a trace of its own, which never ends here: not kept per trace
            self._ledger.end_trace(span.context.trace_id)
        for event in events:
            span.add_event(event.name, event.attributes, event.timestamp)
        out[semconv.MLFLOW_LLM_COST] = mlflow_cost(out)  # ours, or an explicit null (no price)
        return out

    def _price(self, span: ReadableSpan, attrs: Any, usage: Usage) -> Cost | None:
        get = attrs.get
        model = get(_RESPONSE_MODEL) or get(_REQUEST_MODEL) or get(_OI_MODEL) or get(_OI_EMBEDDING_MODEL)
        if not isinstance(model, str):
            return self._price_mlflow(span, get, usage)
        provider = get(_PROVIDER) or get(_SYSTEM) or get(_OI_PROVIDER) or get(_OI_SYSTEM)
        provider = provider if isinstance(provider, str) else None
        # Where it was served: host overrides apply, and a local server gets no cloud price (pricing.LOCAL).
        return self._pricer.price(provider, model, usage, span.start_time, get(_SERVER_ADDRESS), get(_SERVER_PORT))

    def _price_mlflow(self, span: ReadableSpan, get: Any, usage: Usage) -> Cost | None:
        """An MLflow span: model and provider in its own attributes, the provider else named by the SDK it wraps."""
        model = _mlflow_text(get(_MLFLOW_MODEL))
        if model is None:
            return None
        provider = _mlflow_text(get(_MLFLOW_PROVIDER)) or _mlflow_text(get(_MLFLOW_FORMAT))
        return self._pricer.price(provider, model, usage, span.start_time)

    def _describe_usage(
        self,
        span: ReadableSpan,
        attrs: Any,
        usage: Usage,
        cost: Cost | None,
        live: _Live | None,
        counted: bool,
        out: dict[str, Any],
        events: list[Event],
    ) -> Totals | None:
        """Tokens and cost attributes into `out`; for the counted span, the ledger's addition and its running
        totals."""
        tokens_in, tokens_out = usage.input_tokens, usage.output_tokens
        source = attrs.get(_USAGE_SOURCE)
        if source == _ABSENT and cost is not LOCAL:  # no tokens to price: counted, its cost unknown (never $0)
            cost = None  # (a call served locally costs nothing per call either way: it is never unpriced)
        out[semconv.LLM_TOKENS_PROMPT] = tokens_in
        out[semconv.LLM_TOKENS_COMPLETION] = tokens_out
        out[semconv.LLM_TOKENS_TOTAL] = tokens_in + tokens_out
        out[semconv.MLTRACK_USAGE_COUNTED] = counted
        if cost is LOCAL:  # no cloud price and no override: known to cost nothing per call, not unpriced
            out[semconv.MLTRACK_COST_LOCAL] = True
        elif cost is not None:
            out[semconv.LLM_COST_PROMPT] = float(cost.input)
            out[semconv.LLM_COST_COMPLETION] = float(cost.output)
            out[semconv.LLM_COST_TOTAL] = float(cost.total)
            out[semconv.MLTRACK_PRICING_SOURCE] = cost.source
        elif self._track_costs:
            out[semconv.MLTRACK_COST_UNPRICED] = True

        if not counted:
            return None
        if cost is not None and cost is not LOCAL:  # an alias's reservations price as the model that answered
            requested = attrs.get(_REQUEST_MODEL)
            if requested is not None and requested != attrs.get(_RESPONSE_MODEL):
                note_served_model(attrs.get(_PROVIDER), requested, attrs.get(_RESPONSE_MODEL))
        if "mlflow" in sys.modules:  # the MLflow span around this call, if any, wraps it
            _remember_call(span, attrs)
        if source is None:  # ours mark only what they estimated; any other counted usage is the provider's
            out[_USAGE_SOURCE] = _PROVIDER_SOURCE
        (self._unpriced if cost is None else self._local if cost is LOCAL else self._priced)()
        conversation = attrs.get(gen_ai.GEN_AI_CONVERSATION_ID)
        scope = live.scope if live is not None else None
        if conversation is None:  # inherited from a framework span above, or the tracking scope
            conversation = live.conversation if live is not None else None
            if conversation is None and scope is not None:
                conversation = scope.conversation_id
            if isinstance(conversation, str):
                out[gen_ai.GEN_AI_CONVERSATION_ID] = conversation
        running, crossings = self._ledger.add(
            span.context.trace_id,
            scope,
            conversation if isinstance(conversation, str) else None,
            tokens_in,
            tokens_out,
            cost.total if cost is not None else None,
            source == _ESTIMATED,
        )
        for crossing in crossings:
            events.append(self._limit_event(crossing, span))
        # Attribution: the call counts for its user and tags, read from the counted span (so exactly once).
        user = attrs.get(_USER_ID)
        tags = attribution.tags_of(attrs) if attribution.tag_attributes or attribution.scan_for_tags else None
        agent = attrs.get(_AGENT_NAME)
        if user is not None or tags or agent is not None:
            self._ledger.attribute(
                str(user) if user is not None else None,
                tags,
                tokens_in,
                tokens_out,
                cost.total if cost is not None else None,
                source == _ESTIMATED,
                str(agent) if agent is not None else None,
            )
        # Alert rules over the same addition (alerts.py): the events of those it made fire go on this span.
        events.extend(
            alerts.observe(
                span,
                attrs,
                scope,
                conversation if isinstance(conversation, str) else None,
                tokens_in + tokens_out,
                cost.total if cost is not None else None,
                cost is None and self._track_costs,
            )
        )
        return running

    @staticmethod
    def _limit_event(crossing: LimitCrossing, span: ReadableSpan) -> Event:
        unit = "USD" if crossing.kind == "cost" else "tokens"
        message = (
            f"mltrack-otel: {crossing.scope} {crossing.kind} warning limit {crossing.threshold:g} {unit} "
            f"crossed ({crossing.value:g} {unit}) by span {span.name!r}"
        )
        _log.warning(message)
        warnings.warn(message, LLMLimitWarning, stacklevel=2)
        return Event(
            semconv.MLTRACK_LIMIT_EXCEEDED,
            {
                semconv.MLTRACK_LIMIT_KIND: crossing.kind,
                semconv.MLTRACK_LIMIT_SCOPE: crossing.scope,
                semconv.MLTRACK_LIMIT_THRESHOLD: float(crossing.threshold),
                semconv.MLTRACK_LIMIT_VALUE: float(crossing.value),
            },
            timestamp=span.end_time,
        )
