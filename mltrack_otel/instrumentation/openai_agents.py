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
- generation / response (the model call): nothing when our OpenAI instrumentor records the call (the SDK's OpenAI
  models with ``openai`` instrumented: its span is the model call, counted once, a child of the agent span); else
  a ``chat {model}`` span with the SDK's usage, current during the call, so the run is still priced once (a model
  span another instrumentation makes below it counts instead). A Model that records no generation span of its
  own (a custom one) gets the same span from the ModelResponse (or the stream's final response) it returns;
- task and turn spans, MCP tool listings, voice spans: none (their children attach to the nearest span we made).

A span ends failed (ERROR) when an Exception propagates through its end (error.type: the exception's; one the
surrounding code was already handling when the span started does not count; a cancelled run ends its spans without
an error, as the SDK's own are), or when the SDK recorded a failure it
handled itself, such as a tool error the model was told about (error.type ``_OTHER``, the SDK's message, redacted,
as the status description only when responses are captured: else the error type alone). The SDK catches a
processor's exceptions, but every hook is guarded anyway.

Budgets: every Model's ``get_response`` / ``stream_response`` (each Model subclass's own, wrapped when instrumented
and when a later-defined one first runs under an agent span) reserves the call's worst case in the current agent
run's scope before the model is asked, and holds it so that an instrumentor of ours below (OpenAI, LiteLLM) takes
it over with its exact request: a model call whose worst case does not fit the run's budget raises
``mltrack_otel.BudgetExceededError`` before it is sent, with or without our OpenAI instrumentor; the Runner lets it
propagate unchanged, and every span of the run ends (failed). The agent span gets ``gen_ai.provider.name`` from
the first model call it makes when the provider is known.
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
from opentelemetry.semconv.attributes import error_attributes, server_attributes
from opentelemetry.trace import Status, StatusCode

from .. import agents as agent_runs
from .. import budget, estimate, guard, ledger, providers, semconv
from ..errors import BudgetExceededError
from . import _base, _spans

__all__ = ["OpenAIAgentsInstrumentor"]

_MODULE = "agents"
_MAX_OPEN = 10_000  # SDK spans remembered open; beyond this the oldest is ended (a span the SDK never finished)
_MESSAGE_BYTES = 256  # the SDK's error message, as the status description
_OTHER = "_OTHER"
_ERROR_TYPE = error_attributes.ERROR_TYPE
_SERVER_ADDRESS = server_attributes.SERVER_ADDRESS
_SERVER_PORT = server_attributes.SERVER_PORT

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
        self.open: dict[str, None] = {}  # the trace's SDK spans open, in start order
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
    """The SDK's error message (a SpanError), redacted and bounded, for the status description: only when responses
    are captured (a tool's error text can quote what it was given or found), else the error type alone."""
    if settings is None or not settings.capture_responses:
        return _OTHER
    message = error.get("message") if isinstance(error, Mapping) else None
    if not isinstance(message, str) or not message:
        return _OTHER
    return _spans.encode(message, settings, _MESSAGE_BYTES)[0]


def _in_flight() -> BaseException | None:
    """The exception being handled where the SDK starts or finishes a span: at its end (the SDK ends spans in
    __exit__ and finally blocks), one that is not the one handled at its start propagated through it. Only an
    Exception: a cancelled run (CancelledError, a closed generator, Ctrl-C) stopped, it did not fail."""
    return _spans.failure(sys.exc_info()[1])


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
        self._runs: set[int] = set()  # id() of the agent runs we opened and have not ended
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
        with self._lock:
            root = self._roots.pop(trace_.trace_id, None)
            if root is None:
                return
            # Spans the SDK never finished (abandoned runs), newest first: each one's activation is undone before
            # the one it was made over (context variables restore what was current when they were set).
            abandoned = [node for node in (self._open.pop(i, None) for i in reversed(root.open)) if node is not None]
            root.open.clear()
        try:
            for node in abandoned:
                guard.guarded("openai_agents.abandon", self._abandon, node, True)
            _deactivate(root.activation)
        finally:
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
        if len(self._open) >= _MAX_OPEN:
            self._evict()  # before this span is made current over the one evicted
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
            elif kind in _MODEL:
                self._model_span(node, data, tracer, settings, context)
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
        self._runs.add(id(run))
        guard.guarded("openai_agents.models", self._patch.wrap_models)  # a Model class defined since instrument()

    def ours(self, run: Any) -> bool:
        """Whether `run` is an agent run this processor opened for the SDK (and has not ended)."""
        return id(run) in self._runs

    def _model_span(self, node: _Node, data: Any, tracer: Any, settings: Any, context: Any) -> None:
        """The SDK's generation / response span: the model call of ours that our Model wrapper started for it (made
        current during the call), nothing when our OpenAI instrumentor records it, or (a Model called outside our
        wrappers) a model span made from the SDK's record."""
        state = _CALL.get()
        if state is None:
            self._start_model_call(node, data, tracer, settings, context)
            return
        call = state.call
        if call is None or call.ended or state.adopted:  # recorded by our OpenAI instrumentor (or counted already)
            return
        state.adopted = True
        node.handle = call
        config = getattr(data, "model_config", None)
        host, port, path = _server(config.get("base_url") if isinstance(config, Mapping) else None)
        if host and state.address is None:
            provider = providers.for_host(host, port, path)
            attributes: dict[str, Any] = {_SERVER_ADDRESS: host}
            if port:
                attributes[_SERVER_PORT] = port
            if provider:
                attributes[gen_ai.GEN_AI_PROVIDER_NAME] = provider
            call.span.set_attributes(attributes)

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
        with self._lock:
            self._open[span.span_id] = node
            root = self._roots.get(span.trace_id)
            if root is not None:
                root.open[span.span_id] = None

    def _evict(self) -> None:
        """Too many SDK spans open (spans the SDK never finished): end the oldest. Its activation is undone when it
        is the innermost one here (undoing one with newer ones over it would bring back, under them, what was
        current before it); made in another context, it is gone with that context."""
        with self._lock:
            if len(self._open) < _MAX_OPEN:
                return
            oldest = next(iter(self._open))
            evicted = self._open.pop(oldest)
            root = self._roots.get(evicted.trace_id)
            if root is not None:
                root.open.pop(oldest, None)
        self._abandon(evicted, _innermost(evicted))

    def _span_end(self, span: Any, exc: BaseException | None) -> None:
        with self._lock:
            node = self._open.pop(span.span_id, None)
            if node is None:
                return
            root = self._roots.get(node.trace_id)
            if root is not None:
                root.open.pop(span.span_id, None)
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
        if kind == "agent":
            self._runs.discard(id(node.handle))
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

    def _abandon(self, node: _Node, deactivate: bool = False) -> None:
        """End a span the SDK never finished (its run was dropped), marked incomplete (a no-op once it ended);
        `deactivate`: undo what it made current, when that was done in this context (else nothing is undone)."""
        if node.handle is None:
            return
        if deactivate:
            _run_deactivate(node)
        if node.kind == "agent":
            self._runs.discard(id(node.handle))
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
            self._runs = set()
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


def _innermost(node: _Node) -> bool:
    """Whether what `node` made current is what is current here (nothing newer was made current over it)."""
    if node.activation is None:
        return False
    if trace.get_current_span() is not node.span:
        return False
    return agent_runs.current_run() is node.handle if node.kind == "agent" else _ACTIVE.get() is node.span


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


# --- the models' calls: budget, and the model span when no instrumentor of ours records the call -----------------


class _ModelCall:
    """One model call of an agent (a Model's get_response / stream_response): its budget reservation, and the span
    of ours that is the model call (None: our OpenAI instrumentor records the call)."""

    __slots__ = ("address", "adopted", "call", "final", "instance", "request", "reservation")

    def __init__(self, instance: Any, call: _base.Call | None, reservation: Any, request: dict[str, Any]) -> None:
        self.instance = instance
        self.call = call
        self.reservation = reservation
        self.request = request  # the request as we estimate it (instructions, input, max_tokens)
        self.adopted = False  # the SDK's generation / response span took `call` as its span
        self.address: str | None = None  # server.address we know from the model's client
        self.final: Any = None  # a stream's final response


_CALL: ContextVar[_ModelCall | None] = ContextVar("mltrack_openai_agents_model_call", default=None)

# Model.get_response / stream_response parameters, by position (the Runner passes some by keyword, some not).
_INSTRUCTIONS, _INPUT, _SETTINGS = (0, "system_instructions"), (1, "input"), (2, "model_settings")


def _argument(args: tuple, kwargs: dict, where: tuple[int, str]) -> Any:
    index, name = where
    return args[index] if len(args) > index else kwargs.get(name)


def _recorded_by_openai(instance: Any) -> bool:
    """Whether our OpenAI instrumentor records this model's calls: the SDK's OpenAI models over HTTP, instrumented."""
    if not _openai_recorded():
        return False
    from agents.models import openai_responses

    websocket = getattr(openai_responses, "OpenAIResponsesWSModel", None)
    if websocket is not None and isinstance(instance, websocket):
        return False
    return isinstance(instance, _openai_models())


def _openai_models() -> tuple[type, ...]:
    from agents.models import openai_chatcompletions, openai_responses

    return openai_chatcompletions.OpenAIChatCompletionsModel, openai_responses.OpenAIResponsesModel


def _model_route(instance: Any) -> tuple[str | None, str | None, str | None, int | None]:
    """(model, gen_ai.provider.name or None when unknown, server address, port) of a Model instance."""
    model = getattr(instance, "model", None)
    model = model if isinstance(model, str) and model else None
    client = getattr(instance, "_client", None)
    url = getattr(client, "base_url", None)
    host = getattr(url, "host", None)
    if isinstance(host, str) and host:
        port = getattr(url, "port", None)
        port = port if type(port) is int else None
        return model, providers.for_client(client, host) or "openai", host, port
    if isinstance(instance, _openai_models()):
        return model, "openai", None, None
    provider = providers.for_class(type(instance).__name__)
    if provider is None and model is not None:
        from .litellm import split_model

        prefix, _ = split_model(model)  # LitellmModel("anthropic/claude-...")
        provider = (providers.convention_name(prefix) or prefix) if prefix else None
    return model, provider, None, None


def _begin_model_call(instance: Any, args: tuple, kwargs: dict) -> _ModelCall | None:
    """Reserve the call's worst case (raises BudgetExceededError before the model is asked) and, unless our OpenAI
    instrumentor records the call, start its model span. None: pass the call through untouched (not active,
    tracking off, a subclass's super() call inside ours, or a failure of ours, recorded)."""
    state = _CALL.get()
    if not _PATCH.active or (state is not None and state.instance is instance):
        return None
    settings = _base.tracking_settings()
    if settings is None:
        return None
    try:
        model, provider, host, port = _model_route(instance)
        request: dict[str, Any] = {"instructions": _argument(args, kwargs, _INSTRUCTIONS)}
        request["input"] = _argument(args, kwargs, _INPUT)
        max_tokens = getattr(_argument(args, kwargs, _SETTINGS), "max_tokens", None)
        if type(max_tokens) is int:
            request["max_tokens"] = max_tokens
        recorded = _recorded_by_openai(instance)
    except Exception as exc:
        guard.record_error("openai_agents.model_call", exc)
        return None
    reservation = _base.reserve_budget("openai_agents.budget", request, model, provider, "chat", host, port)
    try:
        run = agent_runs.current_run()
        processor = _PATCH.processor
        if provider is not None and run is not None and processor is not None and processor.ours(run):
            run.span.set_attribute(gen_ai.GEN_AI_PROVIDER_NAME, provider)  # required on invoke_agent: where known
        call = None
        if not recorded:
            attributes = _base.base_attributes("chat", provider or "unknown", host, port)
            if model is not None:
                attributes[gen_ai.GEN_AI_REQUEST_MODEL] = model
            if type(max_tokens) is int:
                attributes[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
            call = _base.Call(_PATCH.tracer, "chat", model, attributes, settings, None, "openai.responses")
            call.reservation = reservation  # released once its span has ended
    except Exception as exc:
        if reservation is not None:
            reservation.release()
        guard.record_error("openai_agents.model_call", exc)
        return None
    state = _ModelCall(instance, call, reservation, request)
    state.address = host
    return state


def _enter(state: _ModelCall) -> tuple[Any, Any, Any]:
    """Make the call current here: our model span (the parent of what is made below), the budget hold (an
    instrumentor's call below takes it over) and the call itself (for the SDK's generation span)."""
    otel = otel_context.attach(trace.set_span_in_context(state.call.span)) if state.call is not None else None
    held = budget.hold(state.reservation) if state.reservation is not None else None
    return _CALL.set(state), held, otel


def _exit(tokens: tuple[Any, Any, Any]) -> None:
    marker, held, otel = tokens
    _CALL.reset(marker)
    if held is not None:
        budget.unhold(held)
    if otel is not None:
        otel_context.detach(otel)


def _settle(state: _ModelCall, response: Any = None, error: BaseException | None = None) -> None:
    """The call is over: end our span if no SDK span of the model ended it (from the response the model returned),
    then give the reservation back (after the span ended: the call is never counted zero times)."""
    call = state.call
    try:
        if call is not None and not call.ended:
            if error is not None:
                call.finish({}, None, None, error)
            else:
                _finish_from_response(call, response, state)
    finally:
        if state.reservation is not None:
            state.reservation.release()


def _finish_from_response(call: _base.Call, response: Any, state: _ModelCall) -> None:
    """End a model span from a ModelResponse (or a stream's final Responses object; None: the stream stopped)."""
    if response is None:
        call.finish({semconv.MLTRACK_STREAM_COMPLETE: False})
        return
    attributes: dict[str, Any] = {}
    model = _base.get(response, "model")
    if isinstance(model, str) and model:
        attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = model
        if call.model is None:
            call.span.update_name(f"chat {model}")
    response_id = _base.get(response, "response_id") or _base.get(response, "id")
    if isinstance(response_id, str):
        attributes[gen_ai.GEN_AI_RESPONSE_ID] = response_id
    usage = _base.get(response, "usage")
    if not _counts(usage):
        usage = None
        output = _base.get(response, "output")
        if output:  # answered, usage not reported: estimated, not free
            body = {key: value for key, value in state.request.items() if key != "max_tokens" and value}
            tokens_in = estimate.input_tokens(body, call.model) if body else 0
            tokens_out = estimate.input_tokens({"prompt": [_plain(item) for item in output]}, call.model)
            attributes.update(_base.estimated_usage(tokens_in, tokens_out))
    call.finish(attributes, None, usage)


def _plain(item: Any) -> Any:
    dump = getattr(item, "model_dump", None)
    return dump(exclude_none=True) if callable(dump) else item


async def _get_response(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    try:
        state = _begin_model_call(instance, args, kwargs)
    except BudgetExceededError:
        raise
    except Exception as exc:  # pragma: no cover - _begin_model_call records its own failures
        guard.record_error("openai_agents.model_call", exc)
        state = None
    if state is None:
        return await wrapped(*args, **kwargs)
    tokens = _enter(state)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as exc:  # a cancellation stopped the call (ended incomplete), it did not fail
        _exit(tokens)
        guard.guarded("openai_agents.model_call", _settle, state, None, _spans.failure(exc))
        raise
    _exit(tokens)
    guard.guarded("openai_agents.model_call", _settle, state, response)
    return response


def _stream_response(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    return _stream(wrapped, instance, args, kwargs)


async def _stream(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """stream_response's events as they come; the call begins at the first read (in the task that reads it) and
    the hold, our span and the call are made current around each read only (nothing stays current between events)."""
    try:
        state = _begin_model_call(instance, args, kwargs)
    except BudgetExceededError:
        raise
    except Exception as exc:  # pragma: no cover - _begin_model_call records its own failures
        guard.record_error("openai_agents.model_call", exc)
        state = None
    events = wrapped(*args, **kwargs)
    iterator = events.__aiter__()
    error: BaseException | None = None
    try:
        while True:
            tokens = _enter(state) if state is not None else None
            try:
                event = await iterator.__anext__()
            except StopAsyncIteration:
                break
            except Exception as exc:
                error = exc
                raise
            finally:
                if tokens is not None:
                    _exit(tokens)
            if state is not None and getattr(event, "type", None) == "response.completed":
                state.final = getattr(event, "response", None)
            yield event
    finally:
        close = getattr(iterator, "aclose", None)
        try:
            if close is not None:
                await close()
        finally:
            if state is not None:
                guard.guarded("openai_agents.model_call", _settle, state, state.final, error)


def _model_classes() -> list[type]:
    """Every subclass of the SDK's Model interface defined so far."""
    from agents.models.interface import Model

    found: list[type] = []
    stack = [Model]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                stack.append(sub)
    return found


# --- install / remove ----------------------------------------------------------------------------------------------

_MODEL_METHODS = (("get_response", _get_response), ("stream_response", _stream_response))


class _Patch:
    """The processor (registered once per SDK trace provider, inert while inactive), and the wrappers (wrapt: taken
    off exactly, or left in place inert when another wrapper was put over ours): ToolContext.from_agent_context (the
    tool call's identity), DefaultTraceProvider.set_processors (keeps the processor when the application replaces
    the SDK's), and every Model class's own get_response / stream_response (budget, model span)."""

    def __init__(self) -> None:
        self.tracer: trace.Tracer = trace.get_tracer(__name__)
        self.active = False
        self.processor: Any = None
        self.provider: Any = None  # the SDK trace provider the processor is registered with
        self.originals: dict[tuple[Any, str], Any] = {}  # (owner, attribute) -> what was there before our wrapper
        self._lock = threading.Lock()

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
        self._wrap(ToolContext, "from_agent_context", _from_agent_context)
        self._wrap(DefaultTraceProvider, "set_processors", _set_processors)
        self.wrap_models()

    def wrap_models(self) -> None:
        """Wrap the get_response / stream_response each Model class defines (a new one: since the last time)."""
        for cls in _model_classes():
            for name, wrapper in _MODEL_METHODS:
                if (cls, name) in self.originals:  # wrapped already (read without the lock: _wrap checks again)
                    continue
                method = cls.__dict__.get(name)
                if method is not None and not getattr(method, "__isabstractmethod__", False):
                    self._wrap(cls, name, wrapper)

    def _wrap(self, owner: Any, name: str, wrapper: Any) -> None:
        import wrapt

        with self._lock:
            if (owner, name) in self.originals or name not in owner.__dict__:
                return
            self.originals[(owner, name)] = owner.__dict__[name]
            wrapt.wrap_function_wrapper(owner, name, wrapper)

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
        with self._lock:
            for (owner, name), original in list(self.originals.items()):
                if getattr(owner.__dict__.get(name), "__wrapped__", None) is original:
                    setattr(owner, name, original)  # the very object that was there before
                    del self.originals[(owner, name)]
            # Kept: a wrapper of ours under another's, which stays in place inert (it passes every call through)
            # and is used again, not wrapped twice, when instrumented again.


def _from_agent_context(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    result = wrapped(*args, **kwargs)
    processor = _PATCH.processor
    if _PATCH.active and processor is not None:
        guard.guarded("openai_agents.tool_context", processor.tool_context, result)
    return result


def _set_processors(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """``set_trace_processors([...])`` (e.g. ``[]`` to stop the export to OpenAI's backend) replaces the exporters,
    not our instrumentation: while instrumented, our processor stays among them."""
    processor = _PATCH.processor
    if _PATCH.active and processor is not None:
        processors = args[0] if args else kwargs.get("processors")
        if isinstance(processors, (list, tuple)) and processor not in processors:
            args, kwargs = ([*processors, processor],), {}
    return wrapped(*args, **kwargs)


_PATCH = _Patch()


class OpenAIAgentsInstrumentor(_base.PatchInstrumentor):
    """OTel-style instrumentor for the OpenAI Agents SDK: ``OpenAIAgentsInstrumentor().instrument(tracer_provider=...)``
    (entry point `opentelemetry_instrumentor: openai_agents`).

    Instruments at once if ``agents`` is imported, else the moment it is imported (importing nothing itself)."""

    module = _MODULE
    dependencies = ("openai-agents >= 0.20",)
    tracer_name = __name__
    _patch = _PATCH
