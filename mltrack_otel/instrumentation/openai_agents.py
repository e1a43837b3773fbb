"""OpenAI Agents SDK (openai-agents 0.20+, module ``agents``): its traces as GenAI agent, tool and handoff spans.

One TracingProcessor is added with ``agents.add_trace_processor``, beside the SDK's own exporter and the user's
(``set_trace_processors`` is never called: what the user registered stays; when the application calls it, e.g.
``set_trace_processors([])`` to stop the export to OpenAI's backend, ours stays among the new ones while we are
instrumented). Turning the SDK's tracing off (``OPENAI_AGENTS_DISABLE_TRACING``, ``RunConfig(tracing_disabled=True)``)
turns these spans off too: the model calls are then recorded alone. The SDK calls a processor inline, in
the task that starts or finishes each span, and its spans are ``with`` blocks: each one starts and ends in the same
task, innermost first. So a span we open in ``on_span_start`` is made current right there and undone in
``on_span_end`` (tolerating an end in another context: then nothing is undone), and whatever runs inside it, the
OpenAI SDK call our OpenAI instrumentor records above all, is its child.

SDK span -> ours:

- trace -> ``invoke_workflow {name}`` (gen_ai.workflow.name; the trace's group_id as gen_ai.conversation.id), the
  root of a ledger scope: it carries the run's cumulative cost and tokens;
- agent -> an agent run (``mltrack_otel.agents.start``: ``invoke_agent {name}``, its own scope and budget, its
  name on every model call it makes);
- function -> ``execute_tool {name}`` (gen_ai.tool.call.id, and arguments / result under the content policy);
- handoff -> ``handoff {to agent}``, guardrail -> ``guardrail {name}``, custom -> its name (framework steps: no
  gen_ai.operation.name, as the conventions have none for them);
- generation / response (the model call): nothing when our OpenAI instrumentor is on (its span is the model call,
  counted once, a child of the agent span); else a ``chat {model}`` span with the SDK's usage, current during the
  call, so the run is still priced once (a model span another instrumentation makes below it counts instead);
- task and turn spans, MCP tool listings, voice spans: none (their children attach to the nearest span we made).

A span ends failed (ERROR) when an Exception propagates through its end (error.type: the exception's; one the
surrounding code was already handling when the span started does not count; a cancelled run ends its spans without
an error, as the SDK's own are), or when the SDK recorded a failure it
handled itself, such as a tool error the model was told about (error.type ``_OTHER``, the SDK's message, redacted,
as the status description). The SDK catches a processor's exceptions, but every hook is guarded anyway.

Budgets: a model call of an agent run whose worst case does not fit the run's budget raises
``mltrack_otel.BudgetExceededError`` from our OpenAI instrumentor before it is sent; the Runner lets it propagate
unchanged, and every span of the run ends (failed).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import Status, StatusCode

from .. import agents as agent_runs
from .. import estimate, guard, ledger, providers, semconv
from . import _base, _spans

__all__ = ["OpenAIAgentsInstrumentor"]

_MODULE = "agents"
_MAX_OPEN = 10_000  # SDK spans remembered open; beyond this the oldest is ended (a span the SDK never finished)
_MESSAGE_BYTES = 256  # the SDK's error message, as the status description
_OTHER = "_OTHER"
_ERROR_TYPE = error_attributes.ERROR_TYPE

# The SDK's model-call span types: a model span of ours only when our OpenAI instrumentor does not record the call.
_MODEL = ("generation", "response")


class _Node:
    """One SDK span we saw open: the span we made for it (None: none, see `parent`) and how to end it."""

    __slots__ = ("activation", "before", "call", "call_id", "handle", "kind", "parent", "settings", "span", "trace_id")

    def __init__(self, kind: str, trace_id: str, parent: trace.Span | None) -> None:
        self.kind = kind
        self.before = _in_flight()  # an exception the code around the span was handling already (not its failure)
        self.trace_id = trace_id
        self.parent = parent  # for a span we did not make: the span its children attach to
        self.span: trace.Span | None = None
        self.handle: Any = None  # agents.AgentRun | _spans.Operation | _base.Call
        self.activation: Any = None
        self.settings: Any = None
        self.call_id: str | None = None
        self.call: Any = None  # the tool call's arguments seen on its ToolContext (before the SDK records them)


class _Root:
    """One SDK trace: its invoke_workflow span, the scope it roots, and its open spans."""

    __slots__ = ("activation", "before", "open", "operation", "scope", "span")

    def __init__(self, operation: _spans.Operation, scope: ledger.Scope) -> None:
        self.operation = operation
        self.span = operation.span
        self.scope = scope
        self.activation: Any = None
        self.open: set[str] = set()
        self.before = _in_flight()


# --- making a span current in the SDK's task, undone in the same one -------------------------------------------

_ACTIVE: ContextVar[Any] = ContextVar("mltrack_openai_agents_span", default=None)


def _activate(span: trace.Span, scope: ledger.Scope | None = None) -> tuple[Any, Any, Any]:
    scope_token = ledger.CURRENT_SCOPE.set(scope) if scope is not None else None
    return _ACTIVE.set(span), otel_context.attach(trace.set_span_in_context(span)), scope_token


def _deactivate(activation: tuple[Any, Any, Any] | None) -> bool:
    """Undo _activate; False (nothing done) in another context than the one it was made in, or a second time."""
    if activation is None:
        return False
    marker, otel, scope_token = activation
    try:
        _ACTIVE.reset(marker)
    except (ValueError, RuntimeError):
        return False
    otel_context.detach(otel)
    if scope_token is not None:
        with contextlib.suppress(ValueError, RuntimeError):
            ledger.CURRENT_SCOPE.reset(scope_token)
    return True


def _run_deactivate(node: _Node) -> None:
    run, activation = node.handle, node.activation
    node.activation = None
    if activation is None:
        return
    if isinstance(run, agent_runs.AgentRun):
        run.deactivate(activation)
    else:
        _deactivate(activation)


# --- reading the SDK's spans -------------------------------------------------------------------------------------


def _text(value: Any) -> Any:
    """A tool's result as content: JSON values as they are, anything else as its text."""
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


def _message(error: Any, settings: Any) -> str:
    """The SDK's error message (a SpanError), redacted and bounded, for the status description."""
    message = error.get("message") if isinstance(error, Mapping) else None
    if not isinstance(message, str) or not message:
        return _OTHER
    return _spans.encode(message, settings, _MESSAGE_BYTES)[0]


def _in_flight() -> BaseException | None:
    """The exception being handled where the SDK starts or finishes a span: at its end (the SDK ends spans in
    __exit__ and finally blocks), one that is not the one handled at its start propagated through it. Only an
    Exception: a cancelled run (CancelledError, a closed generator, Ctrl-C) stopped, it did not fail."""
    exc = sys.exc_info()[1]
    return exc if isinstance(exc, Exception) else None


def _server(base_url: Any) -> tuple[str | None, int | None, str]:
    if not isinstance(base_url, str) or not base_url:
        return None, None, ""
    try:
        parts = urlsplit(base_url)
        return parts.hostname, parts.port, parts.path
    except ValueError:
        return None, None, ""


def _counts(usage: Any) -> bool:
    """Whether the SDK recorded the call's usage (a chat completions stream records zeros unless it asked for it)."""
    return bool(usage) and bool(_base.get(usage, "input_tokens") or _base.get(usage, "output_tokens"))


def _estimate(data: Any, model: str | None) -> dict[str, Any]:
    """Usage estimated from the SDK's record of the messages sent and the answer (marked so)."""
    messages, answer = list(_base.seq(data.input)), list(_base.seq(data.output))
    tokens_in = estimate.input_tokens({"messages": messages}, model) if messages else 0
    # The answer's text and tool-call arguments, whatever shape the SDK recorded it in (a chat message, or the
    # Responses-shaped record of a stream), without message framing.
    tokens_out = estimate.input_tokens({"prompt": answer}, model) if answer else 0
    return _base.estimated_usage(tokens_in, tokens_out)


def _openai_recorded() -> bool:
    """Whether our OpenAI instrumentor records the SDK's model calls (then the SDK's generation span adds nothing)."""
    module = sys.modules.get("mltrack_otel.instrumentation.openai")
    if module is None:
        return False
    patch = module.OpenAIInstrumentor.__dict__.get("_patch")
    return patch is not None and bool(patch.active)


# --- the processor -----------------------------------------------------------------------------------------------


class Processor:
    """The TracingProcessor body (the SDK's abstract base is mixed in when the SDK loads: see _processor_class)."""

    def __init__(self, patch: _Patch) -> None:
        self._patch = patch
        self._open: dict[str, _Node] = {}
        self._roots: dict[str, _Root] = {}
        self._lock = threading.Lock()

    # -- traces ------------------------------------------------------------------------------------------------

    def on_trace_start(self, trace_: Any) -> None:
        if self._patch.active:
            guard.guarded("openai_agents.trace_start", self._trace_start, trace_)

    def on_trace_end(self, trace_: Any) -> None:
        if self._roots:
            guard.guarded("openai_agents.trace_end", self._trace_end, trace_, _in_flight())

    def _trace_start(self, trace_: Any) -> None:
        settings = _base.tracking_settings()
        if settings is None:
            return
        name = trace_.name if isinstance(trace_.name, str) and trace_.name else "Agent workflow"
        group = getattr(trace_, "group_id", None)
        parent = ledger.CURRENT_SCOPE.get()
        conversation = group if isinstance(group, str) and group else (parent.conversation_id if parent else None)
        scope = ledger.Scope(name, parent, conversation)
        token = ledger.CURRENT_SCOPE.set(scope)  # the processor files the span under the scope it roots
        try:
            operation = _spans.start(self._patch.tracer, "invoke_workflow", name, settings=settings)
        finally:
            ledger.CURRENT_SCOPE.reset(token)
        scope.span_id = operation.span.get_span_context().span_id
        root = _Root(operation, scope)
        root.activation = _activate(operation.span, scope)
        self._roots[trace_.trace_id] = root

    def _trace_end(self, trace_: Any, exc: BaseException | None) -> None:
        root = self._roots.pop(trace_.trace_id, None)
        if root is None:
            return
        _deactivate(root.activation)
        for span_id in list(root.open):  # spans the SDK never finished (abandoned runs)
            node = self._open.pop(span_id, None)
            if node is not None:
                self._abandon(node)
        if exc is not None and exc is not root.before:  # the run raised through the trace's end
            root.operation.fail(exc)
        else:
            root.operation.finish()

    # -- spans -------------------------------------------------------------------------------------------------

    def on_span_start(self, span: Any) -> None:
        if self._patch.active:
            guard.guarded("openai_agents.span_start", self._span_start, span)

    def on_span_end(self, span: Any) -> None:
        if self._open:
            guard.guarded("openai_agents.span_end", self._span_end, span, _in_flight())

    def _attach_point(self, span: Any) -> trace.Span | None:
        """The span ours for this SDK span goes under by the SDK's own tree: its parent's, else its trace's."""
        parent_id = span.parent_id
        if parent_id is not None:
            node = self._open.get(parent_id)
            if node is not None:
                return node.span if node.span is not None else node.parent
        root = self._roots.get(span.trace_id)
        return root.span if root is not None else None

    def _parent_context(self, above: trace.Span | None) -> otel_context.Context | None:
        """The current context when its span is in the same trace as `above` (a span the user or an instrumentation
        opened in between), else `above` (the SDK started this span where our span is not current)."""
        if above is None:
            return None
        current = trace.get_current_span()
        if current.is_recording() and current.get_span_context().trace_id == above.get_span_context().trace_id:
            return None
        return trace.set_span_in_context(above)

    def _span_start(self, span: Any) -> None:
        data = span.span_data
        kind = data.type
        above = self._attach_point(span)
        node = _Node(kind, span.trace_id, above)
        settings = None if kind in ("task", "turn") else _base.tracking_settings()
        if settings is not None:
            tracer = self._patch.tracer
            context = self._parent_context(above)
            if kind == "agent":
                self._start_agent(node, data, tracer, settings, context)
            elif kind == "function":
                node.handle = _spans.start(tracer, "execute_tool", data.name, settings=settings, context=context)
            elif kind == "handoff":
                attributes = {_FROM_AGENT: data.from_agent} if isinstance(data.from_agent, str) else {}
                node.handle = _spans.start(tracer, None, "handoff", attributes, settings=settings, context=context)
            elif kind == "guardrail":
                attributes = {_GUARDRAIL_NAME: str(data.name)}
                node.handle = _spans.start(
                    tracer, None, f"guardrail {data.name}", attributes, settings=settings, context=context
                )
            elif kind == "custom":
                node.handle = _spans.start(tracer, None, str(data.name), settings=settings, context=context)
            elif kind in _MODEL and not _openai_recorded():
                self._start_model_call(node, data, tracer, settings, context)
            if node.handle is not None:
                node.settings = settings
                node.span = node.handle.span
                if node.activation is None:
                    node.activation = _activate(node.span)
        self._remember(span, node)

    def _start_agent(self, node: _Node, data: Any, tracer: Any, settings: Any, context: Any) -> None:
        attributes: dict[str, Any] = {}
        output_type = getattr(data, "output_type", None)
        if isinstance(output_type, str) and output_type:
            attributes[gen_ai.GEN_AI_OUTPUT_TYPE] = "text" if output_type == "str" else "json"
        run = agent_runs.start(tracer, str(data.name), attributes, settings=settings, context=context)
        node.handle = run
        node.activation = run.activate()

    def _start_model_call(self, node: _Node, data: Any, tracer: Any, settings: Any, context: Any) -> None:
        """No instrumentor of ours records this call: a model-call span from the SDK's own record of it."""
        model = getattr(data, "model", None)
        config = getattr(data, "model_config", None)
        host, port, path = _server(config.get("base_url") if isinstance(config, Mapping) else None)
        provider = (providers.for_host(host, port, path) if host else None) or "openai"
        attributes = _base.base_attributes("chat", provider, host, port)
        if isinstance(model, str) and model:
            attributes[gen_ai.GEN_AI_REQUEST_MODEL] = model
        else:
            model = None
        node.handle = _base.Call(tracer, "chat", model, attributes, settings, None, "openai.responses", context)

    def _remember(self, span: Any, node: _Node) -> None:
        evicted = None
        with self._lock:
            self._open[span.span_id] = node
            root = self._roots.get(span.trace_id)
            if root is not None:
                root.open.add(span.span_id)
            if len(self._open) > _MAX_OPEN:
                oldest = next(iter(self._open))
                evicted = self._open.pop(oldest)
        if evicted is not None:
            self._abandon(evicted)

    def _span_end(self, span: Any, exc: BaseException | None) -> None:
        node = self._open.pop(span.span_id, None)
        if node is None:
            return
        root = self._roots.get(node.trace_id)
        if root is not None:
            root.open.discard(span.span_id)
        if node.handle is None:
            return
        _run_deactivate(node)
        if exc is node.before:
            exc = None  # not raised through this span: the code around it was handling it already
        try:
            self._finish(node, span, exc)
        except Exception as failure:  # reading the SDK's record failed: the span still ends, with what it has
            guard.record_error("openai_agents.span_finish", failure)
            self._abandon(node)

    def _finish(self, node: _Node, span: Any, exc: BaseException | None) -> None:
        error = span.error
        data = span.span_data
        kind = node.kind
        if kind in _MODEL:
            self._end_model_call(node, data, error, exc)
            return
        attributes: dict[str, Any] = {}
        outputs: dict[str, Any] | None = None
        if kind == "function":
            self._tool_attributes(node, data, attributes)
            if data.output is not None:
                outputs = {gen_ai.GEN_AI_TOOL_CALL_RESULT: _text(data.output)}
        elif kind == "handoff":
            to_agent = data.to_agent
            if isinstance(to_agent, str) and to_agent:
                attributes[_TO_AGENT] = to_agent
                node.span.update_name(f"handoff {to_agent}")  # type: ignore[union-attr]
        elif kind == "guardrail":
            attributes[_GUARDRAIL_TRIGGERED] = bool(data.triggered)
        operation = node.handle.operation if kind == "agent" else node.handle
        _end(operation, outputs, attributes, error, exc, node.settings)

    def _tool_attributes(self, node: _Node, data: Any, attributes: dict[str, Any]) -> None:
        if node.call_id is not None:
            attributes[gen_ai.GEN_AI_TOOL_CALL_ID] = node.call_id
        arguments = data.input if isinstance(data.input, str) and data.input else node.call
        if arguments is not None and node.settings.capture_prompts:
            text, truncated = _spans.encode(arguments, node.settings)
            attributes[gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS] = text
            if truncated:
                attributes[semconv.MLTRACK_CONTENT_TRUNCATED] = True

    def _end_model_call(self, node: _Node, data: Any, error: Any, exc: BaseException | None) -> None:
        call: _base.Call = node.handle
        attributes: dict[str, Any] = {}
        response = getattr(data, "response", None)
        usage = getattr(data, "usage", None)
        if response is not None:
            model = _base.get(response, "model")
            if isinstance(model, str) and model:
                attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = model
                if call.model is None:
                    call.span.update_name(f"chat {model}")
            response_id = _base.get(response, "id")
            if isinstance(response_id, str):
                attributes[gen_ai.GEN_AI_RESPONSE_ID] = response_id
            if usage is None:
                usage = _base.get(response, "usage")
        if not _counts(usage):
            usage = None
            if error is None and exc is None and getattr(data, "output", None):  # answered, usage not reported
                attributes.update(_estimate(data, call.model))
        if exc is not None:
            call.finish(attributes, None, usage, exc)
            return
        if error is not None:
            attributes[_ERROR_TYPE] = _OTHER
            call.span.set_status(Status(StatusCode.ERROR, _message(error, node.settings)))
        call.finish(attributes, None, usage)

    # -- the tool call's identity, from the ToolContext the SDK makes inside the function span -----------------

    def tool_context(self, tool_context: Any) -> None:
        from agents.tracing import get_current_span

        current = get_current_span()
        node = self._open.get(current.span_id) if current is not None else None
        if node is None or node.kind != "function" or node.handle is None or node.call_id is not None:
            return
        call_id = getattr(tool_context, "tool_call_id", None)
        if isinstance(call_id, str) and call_id:
            node.call_id = call_id
        arguments = getattr(tool_context, "tool_arguments", None)
        if isinstance(arguments, str) and arguments:
            node.call = arguments

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def _abandon(self, node: _Node) -> None:
        """End a span the SDK never finished (its run was dropped), marked incomplete (a no-op once it ended)."""
        if node.handle is None:
            return
        attributes = {semconv.MLTRACK_STREAM_COMPLETE: False}
        if isinstance(node.handle, _base.Call):
            node.handle.finish(attributes)
        else:
            operation = node.handle.operation if node.kind == "agent" else node.handle
            operation.finish(None, attributes)

    def end_all(self) -> None:
        """Uninstrumented: end what is open (it would never end otherwise)."""
        with self._lock:
            nodes, self._open = list(self._open.values()), {}
            roots, self._roots = list(self._roots.values()), {}
        for node in reversed(nodes):
            guard.guarded("openai_agents.end_all", self._abandon, node)
        for root in roots:
            guard.guarded(
                "openai_agents.end_all", root.operation.finish, None, {semconv.MLTRACK_STREAM_COMPLETE: False}
            )

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass


def _end(
    operation: _spans.Operation,
    outputs: Mapping[str, Any] | None,
    attributes: dict[str, Any],
    error: Any,
    exc: BaseException | None,
    settings: Any,
) -> None:
    """End one span: failed with the exception that propagated through it, else as the SDK recorded it."""
    if exc is not None:
        operation.fail(exc, attributes)
    elif error is None:
        operation.finish(outputs, attributes)
    else:  # the SDK recorded a failure it handled (a tool error the model was told about): no exception to name
        span = operation.span
        span.set_attribute(_ERROR_TYPE, _OTHER)
        span.set_status(Status(StatusCode.ERROR, _message(error, settings)))
        operation.finish(outputs, attributes)


_processor_type: Any = None


def _processor_class() -> Any:
    """Processor with the SDK's TracingProcessor as a base (made once, when the SDK is imported)."""
    global _processor_type
    if _processor_type is None:
        from agents.tracing import TracingProcessor

        namespace = {"__slots__": (), "__module__": __name__}
        _processor_type = type("MltrackTracingProcessor", (Processor, TracingProcessor), namespace)
    return _processor_type


# --- attribute names the conventions lack (semconv/model/openai_agents: the official openai-agents ones) ----------

_FROM_AGENT = semconv.GEN_AI_HANDOFF_FROM_AGENT
_TO_AGENT = semconv.GEN_AI_HANDOFF_TO_AGENT
_GUARDRAIL_NAME = semconv.GEN_AI_GUARDRAIL_NAME
_GUARDRAIL_TRIGGERED = semconv.GEN_AI_GUARDRAIL_TRIGGERED


# --- install / remove ----------------------------------------------------------------------------------------------


class _Patch:
    """The processor (registered once per SDK trace provider, inert while inactive), the ToolContext hook, and the
    hook that keeps the processor when the application replaces the SDK's processors."""

    def __init__(self) -> None:
        self.tracer: trace.Tracer = trace.get_tracer(__name__)
        self.active = False
        self.processor: Any = None
        self.provider: Any = None  # the SDK trace provider the processor is registered with
        self.original: Any = None  # ToolContext.from_agent_context as it was
        self.set_processors: Any = None  # DefaultTraceProvider.set_processors as it was

    def apply(self, tracer_provider: Any = None) -> None:
        self.tracer = _base.get_tracer(__name__, tracer_provider)
        module = sys.modules.get(_MODULE)
        if module is None or not hasattr(module, "add_trace_processor"):  # another package named `agents`
            return
        from agents import tracing
        from agents.tool_context import ToolContext
        from agents.tracing.provider import DefaultTraceProvider

        if self.processor is None:
            self.processor = _processor_class()(self)
        provider = tracing.get_trace_provider()
        if not self._registered(provider):
            provider.register_processor(self.processor)
            self.provider = provider
        if self.original is None:
            self.original = ToolContext.__dict__["from_agent_context"]
            ToolContext.from_agent_context = classmethod(_from_agent_context)  # type: ignore[method-assign,assignment]
        if self.set_processors is None:
            self.set_processors = DefaultTraceProvider.__dict__["set_processors"]
            DefaultTraceProvider.set_processors = _set_processors  # type: ignore[method-assign]

    def _registered(self, provider: Any) -> bool:
        """Whether our processor is among the provider's (set_trace_processors may have dropped it since)."""
        processors = getattr(getattr(provider, "_multi_processor", None), "_processors", None)
        if isinstance(processors, tuple):
            return self.processor in processors
        return provider is self.provider

    def remove(self) -> None:
        self.active = False
        if self.processor is not None:
            self.processor.end_all()
        if self.original is not None:
            from agents.tool_context import ToolContext

            current = ToolContext.__dict__.get("from_agent_context")
            if getattr(current, "__func__", None) is _from_agent_context:
                ToolContext.from_agent_context = self.original  # type: ignore[method-assign]
            self.original = None
        if self.set_processors is not None:
            from agents.tracing.provider import DefaultTraceProvider

            if DefaultTraceProvider.__dict__.get("set_processors") is _set_processors:
                DefaultTraceProvider.set_processors = self.set_processors  # type: ignore[method-assign]
            self.set_processors = None


def _from_agent_context(cls: Any, *args: Any, **kwargs: Any) -> Any:
    result = _PATCH.original.__func__(cls, *args, **kwargs)
    processor = _PATCH.processor
    if _PATCH.active and processor is not None:
        guard.guarded("openai_agents.tool_context", processor.tool_context, result)
    return result


def _set_processors(provider: Any, processors: Any) -> Any:
    """``set_trace_processors([...])`` (e.g. ``[]`` to stop the export to OpenAI's backend) replaces the exporters,
    not our instrumentation: while instrumented, our processor stays among them."""
    processor = _PATCH.processor
    if _PATCH.active and processor is not None and isinstance(processors, (list, tuple)):
        processors = processors if processor in processors else [*processors, processor]
    return _PATCH.set_processors(provider, processors)


_PATCH = _Patch()


class OpenAIAgentsInstrumentor(_base.PatchInstrumentor):
    """OTel-style instrumentor for the OpenAI Agents SDK: ``OpenAIAgentsInstrumentor().instrument(tracer_provider=...)``
    (entry point `opentelemetry_instrumentor: openai_agents`).

    Instruments at once if ``agents`` is imported, else the moment it is imported (importing nothing itself)."""

    module = _MODULE
    dependencies = ("openai-agents >= 0.20",)
    tracer_name = __name__
    _patch = _PATCH
