"""Pydantic AI (pydantic-ai-slim 2.x): each agent run an agent run of ``mltrack_otel.agents``, beside Pydantic AI's
own OpenTelemetry spans.

How: a wrapper on ``Agent.iter`` (``run``, ``run_sync``, ``run_stream`` and ``run_stream_events`` all go through it)
adds one capability of ours, :class:`AgentBudget`, to the run's capabilities (unless the agent or the run has one
already). It sits outermost, outside Pydantic AI's own ``Instrumentation`` capability, and:

- makes the run an agent run: a ledger scope (the run's subtree totals and budget), ``gen_ai.agent.name`` on every
  model call made in it (``totals(agent=...)``), nested in the enclosing run's scope (a sub-agent called from a
  tool counts in its parent's subtree). The scope's root span is Pydantic AI's own ``invoke_agent {name}`` span when
  Pydantic AI's instrumentation is on and records into the same pipeline as ours (one agent span per run, carrying
  our ``llm.cost.cumulative`` / ``llm.tokens.cumulative.*``); otherwise our own ``invoke_agent {name}`` span
  (``agents.start``), whose description is the agent's as written, rendered with the run's deps (a ``TemplateStr``
  description) only when prompts are captured (``llm_log_prompts``);
- when Pydantic AI's spans are not ours to see, records each tool call as an ``execute_tool {tool}`` span (Pydantic
  AI's own ``execute_tool`` spans cover them otherwise);
- reserves each model request's worst case (``mltrack_otel.budget``: the input estimated from the request's
  messages, instructions and tools; the output from ``max_tokens``, else the model's maximum) before Pydantic AI's
  model-request span opens, against the run's budget (``AgentBudget(cost_limit=...)``, else ``agents: {NAME:
  {llm_cost_limit, llm_token_limit}}``) and every enclosing one: BudgetExceededError, and the request is never
  sent, when it does not fit. The reservation is held around the request, so that our SDK instrumentor below (when
  on) takes it over with its own exact request, and given back when the request ends (answered, failed or
  cancelled). A streamed request is sent from the task that consumes the stream, where the hold is not seen: when
  our SDK instrumentor records the model's client, it alone reserves a stream (this only checks what is spent).

Model calls are counted once whichever spans exist: our OpenAI (or other SDK) span is the innermost span with usage,
a child of Pydantic AI's ``chat {model}`` span, which is then a wrapper; without ours, Pydantic AI's ``chat`` span
carries ``gen_ai.usage.*``, ``gen_ai.request.model`` and ``gen_ai.provider.name`` and is the one priced. Its agent
run span is an INTERNAL ``invoke_agent`` span, whose usage the processor never reads as a model call's (an
in-process agent, tool or workflow span only sums calls that are counted themselves): neither its
``gen_ai.aggregated_usage.*`` nor, with ``use_aggregated_usage_attribute_names=False``, its ``gen_ai.usage.*`` is
counted again.

Pydantic AI's ``InstrumentationSettings`` govern its spans only: ``include_content`` / ``include_binary_content``
whether their messages keep their text (off: the shape only; ours follow ``llm_log_prompts`` /
``llm_log_responses``), ``version`` (2 to 6) its message format (span names and usage attributes are the same in
all), ``tracer_provider`` where they go (to adopt its agent span as the scope root we compare it with ours: any other
provider, or a tracer we cannot see through, gets our own agent span, and Pydantic AI's becomes its child there),
``meter_provider`` its own metrics (its ``gen_ai.client.token.usage`` beside ours when both go to one MeterProvider).
"""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from .. import agents, budget, call_context, config, guard, ledger
from ..errors import BudgetExceededError
from . import _base, _spans

__all__ = ["PydanticAIInstrumentor"]  # and AgentBudget, built on first access (module __getattr__)


def _pipeline(tracer: Any) -> Any:
    """The span processor an SDK tracer hands its spans to (None: not an SDK tracer, or a proxy still unset)."""
    if isinstance(tracer, trace.ProxyTracer):
        tracer = tracer._tracer
    return getattr(tracer, "span_processor", None)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


class _Run:
    """One run as our capability tracks it: the scope, and our span (None: Pydantic AI's span roots the scope)."""

    __slots__ = ("activation", "adopted", "name", "run", "scope", "settings", "tokens")

    def __init__(self, name: str, scope: ledger.Scope, settings: config.Settings) -> None:
        self.name = name
        self.scope = scope
        self.settings = settings
        self.run: agents.AgentRun | None = None  # our own agent span
        self.adopted = False  # Pydantic AI's span is the scope's root
        self.tokens: Any = None
        self.activation: Any = None  # an adopted run made current (agents.current_run()) inside Pydantic AI's span


class Patch(_base.WrapperPatch):
    """The wrapper on Agent.iter that adds our capability to every run."""

    tracer_name = __name__

    def targets(self) -> list[tuple[Any, str, Any]]:
        from pydantic_ai.agent import Agent

        return [(Agent, "iter", self._iter)]

    def _iter(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if self.active:
            kwargs = guard.guarded("instrumentation.pydantic_ai.iter", _with_ours, instance, kwargs, default=kwargs)
        return wrapped(*args, **kwargs)


_PATCH = Patch()


def _with_ours(agent: Any, kwargs: dict) -> dict:
    """The run's keyword arguments with our capability added, unless the run or the agent has one."""
    if _base.tracking_settings() is None:
        return kwargs
    cls = _capability_class()
    extra = kwargs.get("capabilities")
    if extra and any(isinstance(c, cls) for c in extra):
        return kwargs
    from pydantic_ai.capabilities.abstract import leaf_capabilities

    root = getattr(agent, "root_capability", None)
    if root is not None and any(isinstance(c, cls) for c in leaf_capabilities(root)):
        return kwargs
    return {**kwargs, "capabilities": [*(extra or ()), cls()]}


# --- the capability ----------------------------------------------------------------------------------------------


def _capability_tracer(agent: Any) -> Any:
    """The tracer of an ``Instrumentation`` capability the agent was given. Before pydantic-ai-slim 2.49 the run
    context's ``tracer`` came from ``instrument=`` / ``instrument_all`` only and stayed a NoOpTracer under such a
    capability, while the capability still made Pydantic AI's agent span: without this we would open a second one."""
    try:
        from pydantic_ai.capabilities import Instrumentation
        from pydantic_ai.capabilities.abstract import leaf_capabilities

        root = getattr(agent, "root_capability", None)
        for capability in leaf_capabilities(root) if root is not None else ():
            if isinstance(capability, Instrumentation):
                return getattr(getattr(capability, "settings", None), "tracer", None)
    except Exception as exc:
        guard.record_error("instrumentation.pydantic_ai.capability_tracer", exc)
    return None


def _begin(ctx: Any, token_limit: int | None, cost_limit: Decimal | None, explicit: bool) -> _Run | None:
    """Open the run's scope (and our span, unless Pydantic AI's will be its root) and make it current."""
    settings = _base.tracking_settings()
    if settings is None or not _PATCH.active:
        return None
    agent = getattr(ctx, "agent", None)
    name = getattr(agent, "name", None) or "agent"
    if not explicit:
        token_limit, cost_limit = agents.limits_for(name, settings)
    ours = _PATCH.tracer
    theirs = getattr(ctx, "tracer", None)
    pipeline = _pipeline(theirs) if theirs is not None else None
    if pipeline is None:
        theirs = _capability_tracer(agent) or theirs
        pipeline = _pipeline(theirs) if theirs is not None else None
    if pipeline is not None and pipeline is _pipeline(ours):
        # Pydantic AI's run span opens next, inside this scope: it is the root (before_run learns its id).
        state = _Run(name, agents.new_scope(name, token_limit, cost_limit), settings)
        state.adopted = True
        state.tokens = (ledger.CURRENT_SCOPE.set(state.scope), call_context.attach({gen_ai.GEN_AI_AGENT_NAME: name}))
        return state
    attributes: dict[str, Any] = {}
    model = getattr(ctx, "model", None)
    if model is not None:
        model_name, system = getattr(model, "model_name", None), getattr(model, "system", None)
        if isinstance(model_name, str):
            attributes[gen_ai.GEN_AI_REQUEST_MODEL] = model_name
        if isinstance(system, str):
            attributes[gen_ai.GEN_AI_PROVIDER_NAME] = system
    prompt = getattr(ctx, "prompt", None)
    inputs = None
    if settings.capture_prompts and prompt is not None:
        message = {"role": "user", "parts": [{"type": "text", "content": _text(prompt)}]}
        inputs = {gen_ai.GEN_AI_INPUT_MESSAGES: [message]}
    description = guard.guarded("instrumentation.pydantic_ai.description", _description, agent, ctx, settings)
    run = agents.start(
        ours,
        name,
        attributes,
        inputs,
        settings=settings,
        description=description,
        token_limit=token_limit,
        cost_limit=cost_limit,
    )
    state = _Run(name, run.scope, settings)
    state.run = run
    state.tokens = run.activate()
    return state


def _description(agent: Any, ctx: Any, settings: config.Settings) -> str | None:
    """The agent's description: rendered with the run's deps (a TemplateStr description can put them in it) only when
    prompts are captured; else as written (a template's source), which is metadata, not content."""
    render = getattr(agent, "render_description", None)
    if settings.capture_prompts and callable(render):
        return render(getattr(ctx, "deps", None))
    static = getattr(agent, "description", None)
    return static if isinstance(static, str) else None


def _end(state: _Run, result: Any = None, error: BaseException | None = None) -> None:
    if state.adopted:
        if state.activation is not None and state.run is not None:
            state.run.deactivate(state.activation)
        scope_token, attributes_token = state.tokens
        with contextlib.suppress(ValueError, RuntimeError):  # a token of another context: nothing to undo here
            ledger.CURRENT_SCOPE.reset(scope_token)
        call_context.detach(attributes_token)
        return
    run = state.run
    if run is None:
        return
    run.deactivate(state.tokens)
    if error is not None:
        run.fail(error)
        return
    outputs = None
    output = getattr(result, "output", None)
    if run.operation.capture_out and output is not None:
        message = {"role": "assistant", "parts": [{"type": "text", "content": _text(output)}], "finish_reason": "stop"}
        outputs = {gen_ai.GEN_AI_OUTPUT_MESSAGES: [message]}
    run.finish(outputs)


def _adopt(state: _Run) -> None:
    """Inside Pydantic AI's run span (before_run): that span is the scope's root, and the run agents.current_run()
    gives (an AgentRun over Pydantic AI's span: it ends that span never, Pydantic AI does)."""
    span = trace.get_current_span()
    if state.scope.span_id is not None or not span.is_recording():
        return
    state.scope.span_id = span.get_span_context().span_id
    state.run = agents.AgentRun(state.name, _spans.Operation(span, "invoke_agent", state.settings), state.scope)
    state.activation = state.run.activate()


def _open_tool(state: _Run, call: Any, tool_def: Any) -> tuple[_spans.Operation, object]:
    attributes: dict[str, Any] = {}
    call_id = getattr(call, "tool_call_id", None)
    if isinstance(call_id, str) and call_id:
        attributes[gen_ai.GEN_AI_TOOL_CALL_ID] = call_id
    inputs = None
    if state.settings.capture_prompts:
        inputs = {gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS: call.args_as_json_str()}
    operation = _spans.start(
        _PATCH.tracer,
        "execute_tool",
        getattr(call, "tool_name", None) or "tool",
        attributes,
        inputs,
        settings=state.settings,
        description=getattr(tool_def, "description", None),
    )
    return operation, otel_context.attach(trace.set_span_in_context(operation.span))


_NO_RESULT = object()  # a tool call cancelled before it returned


def _close_tool(operation: _spans.Operation, token: object, result: Any, error: BaseException | None) -> None:
    otel_context.detach(token)
    if error is None:
        recorded = operation.capture_out and result is not _NO_RESULT
        outputs = {gen_ai.GEN_AI_TOOL_CALL_RESULT: _text(result)} if recorded else None
        operation.finish(outputs)
    elif type(error).__name__ in ("CallDeferred", "ApprovalRequired"):  # control flow, not a failure
        operation.finish()
    else:
        operation.fail(error)


def _reserve(request_context: Any) -> ledger.Reservation | None:
    """Reserve the model request's worst case (mltrack_otel.budget) against every budget over this run (its own, an
    enclosing one's, the process's) before it is sent: BudgetExceededError when it does not fit. None: no budget
    applies. Any other failure is ours: recorded, and only what is spent or held already is checked."""
    try:
        scope = ledger.current_scope()
        if not ledger.LEDGER.budgets_apply(scope, scope.conversation_id if scope is not None else None):
            return None
        model = request_context.model
        if getattr(request_context, "streaming", False) and _reserved_below(model):
            # A streamed request is sent from the task that consumes the stream, where a hold of ours is not seen:
            # our SDK instrumentor reserves it there (a reservation here too would hold the call twice).
            ledger.check_budget()
            return None
        name, system = getattr(model, "model_name", None), getattr(model, "system", None)
        address, port = _server(model)
        return budget.reserve(
            _request_body(request_context),
            name if isinstance(name, str) else None,
            system if isinstance(system, str) else None,
            "chat",
            scope,
            address,
            port,
        )
    except BudgetExceededError:
        raise
    except Exception as exc:
        guard.record_error("instrumentation.pydantic_ai.budget", exc)
    try:
        ledger.check_budget()
    except BudgetExceededError:
        raise
    except Exception as exc:
        guard.record_error("instrumentation.pydantic_ai.budget", exc)
    return None


# The SDKs whose clients Pydantic AI's models call and our instrumentors record: top-level module -> library name.
_SDK_LIBRARIES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "groq": "groq",
    "mistralai": "mistralai",
    "cohere": "cohere",
    "google": "google_genai",
}


def _reserved_below(model: Any) -> bool:
    """Whether the model sends its requests with an SDK client that one of our instrumentors records (and so
    reserves each request's worst case itself, in the task that sends it)."""
    client = getattr(model, "client", None)
    if client is None:
        return False
    library = _SDK_LIBRARIES.get(type(client).__module__.partition(".")[0])
    if library is None:
        return False
    from . import _loaded_instrumentor

    instrumentor = _loaded_instrumentor(library)
    return instrumentor is not None and instrumentor.is_instrumented_by_opentelemetry is True


def _settle(held: Any, reservation: ledger.Reservation) -> None:
    """The request ended (answered, failed or cancelled; Pydantic AI's chat span, or our SDK span, has ended and
    counted it): stop holding its reservation and give it back."""
    try:
        if held is not None:
            budget.unhold(held)
    finally:
        reservation.release()


def _server(model: Any) -> tuple[str | None, int | None]:
    """The host and port the model's requests go to (a local server is priced as such), from its base URL."""
    base_url = getattr(model, "base_url", None)
    if not isinstance(base_url, str) or not base_url:
        return None, None
    parts = urlsplit(base_url)
    try:
        return parts.hostname, parts.port
    except ValueError:
        return parts.hostname, None


def _request_body(request_context: Any) -> dict[str, Any]:
    """The request in the shape mltrack_otel.estimate reads: each message's text (tool calls' arguments, tool
    results, retry prompts included; images and other files are not estimated), the instructions, the tool
    definitions, and the output cap (model_settings' max_tokens; none: the model's maximum is reserved)."""
    messages = []
    for message in getattr(request_context, "messages", None) or ():
        texts: list[str] = []
        for part in getattr(message, "parts", None) or ():
            _part_texts(part, texts)
        messages.append({"content": "\n".join(texts)})
    body: dict[str, Any] = {"messages": messages}
    parameters = getattr(request_context, "model_request_parameters", None)
    instructions = [
        part.content
        for part in getattr(parameters, "instruction_parts", None) or ()
        if isinstance(getattr(part, "content", None), str)
    ]
    if not instructions and messages:  # older releases: the last request carries the rendered instructions
        last = getattr(request_context.messages[-1], "instructions", None)
        instructions = [last] if isinstance(last, str) else []
    if instructions:
        body["instructions"] = "\n".join(instructions)
    tools = [
        {"name": tool.name, "description": tool.description, "parameters": tool.parameters_json_schema}
        for kind in ("function_tools", "output_tools")
        for tool in getattr(parameters, kind, None) or ()
    ]
    if tools:
        body["tools"] = tools
    settings = getattr(request_context, "model_settings", None)
    max_tokens = settings.get("max_tokens") if isinstance(settings, dict) else None
    if type(max_tokens) is int:
        body["max_tokens"] = max_tokens
    return body


def _part_texts(part: Any, texts: list[str]) -> None:
    args = getattr(part, "args_as_json_str", None)
    if callable(args):  # a tool call the model made, sent back
        texts.extend((str(getattr(part, "tool_name", "")), args()))
        return
    content = getattr(part, "content", None)
    if isinstance(content, str):
        texts.append(content)
        return
    render = getattr(part, "model_response_str", None) or getattr(part, "model_response", None)
    if callable(render):  # a tool's result, a retry prompt: as the model is sent it
        text = render()
        if isinstance(text, str):
            texts.append(text)
    elif isinstance(content, (list, tuple)):  # a user prompt's parts: its text (files are not estimated)
        texts.extend(item for item in content if isinstance(item, str))


_CLASS: Any = None


def _capability_class() -> Any:
    """AgentBudget, built on first use (it subclasses Pydantic AI's AbstractCapability: no import before it is)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _build_class()
    return _CLASS


def _build_class() -> Any:
    from dataclasses import dataclass, field
    from typing import ClassVar

    from pydantic_ai.capabilities import AbstractCapability, CapabilityOrdering, Instrumentation

    @dataclass
    class AgentBudget(AbstractCapability[Any]):
        """mltrack-otel's view of a Pydantic AI run: an agent run (scope, totals, budget) and its tool calls.

        Added to every run by ``instrument()``; add one yourself to give runs their own budget::

            agent.run_sync("...", capabilities=[AgentBudget(cost_limit=0.05)])   # this run: 0.05 USD at most

        Without limits, a run's budget is the configured ``agents: {NAME: {...}}`` entry (or ``"*"``).
        """

        _safe_at_runtime: ClassVar[bool] = True  # workflow-side only: no toolsets, no model wrapping

        cost_limit: Decimal | float | str | None = None
        token_limit: int | None = None
        _state: Any = field(default=None, init=False, repr=False, compare=False)

        def __post_init__(self) -> None:
            if self.id is None:
                self.id = "mltrack_otel"
            if self.cost_limit is not None or self.token_limit is not None:
                self.token_limit, self.cost_limit = ledger.budget_limits(self.token_limit, self.cost_limit)

        def get_ordering(self) -> CapabilityOrdering:
            return CapabilityOrdering(position="outermost", wraps=[Instrumentation])

        async def for_run(self, ctx: Any) -> Any:
            return AgentBudget(cost_limit=self.cost_limit, token_limit=self.token_limit, id=self.id)

        async def wrap_run(self, ctx: Any, *, handler: Any) -> Any:
            explicit = self.cost_limit is not None or self.token_limit is not None
            try:
                state = _begin(ctx, self.token_limit, self.cost_limit, explicit)  # type: ignore[arg-type]
            except Exception as exc:
                guard.record_error("instrumentation.pydantic_ai.run", exc)
                state = None
            self._state = state
            if state is None:
                return await handler()
            try:
                result = await handler()
            except BaseException as exc:  # a cancellation (a break out of iter()) ends the span without an error
                guard.guarded("instrumentation.pydantic_ai.run", _end, state, None, _spans.failure(exc))
                raise
            guard.guarded("instrumentation.pydantic_ai.run", _end, state, result)
            return result

        async def before_run(self, ctx: Any) -> None:
            state = self._state
            if state is not None and state.adopted:
                guard.guarded("instrumentation.pydantic_ai.adopt", _adopt, state)

        async def wrap_model_request(self, ctx: Any, *, request_context: Any, handler: Any) -> Any:
            if self._state is None:
                return await handler(request_context)
            reservation = _reserve(request_context)  # BudgetExceededError: its worst case does not fit
            if reservation is None:
                return await handler(request_context)
            # Held while the request runs: an SDK call of ours below (the OpenAI client) takes the hold over.
            held = guard.guarded("instrumentation.pydantic_ai.budget", budget.hold, reservation)
            try:
                return await handler(request_context)
            finally:
                guard.guarded("instrumentation.pydantic_ai.budget", _settle, held, reservation)

        async def wrap_tool_execute(self, ctx: Any, *, call: Any, tool_def: Any, args: Any, handler: Any) -> Any:
            state = self._state
            opened = None
            if state is not None and not state.adopted:
                opened = guard.guarded("instrumentation.pydantic_ai.tool", _open_tool, state, call, tool_def)
            if opened is None:
                return await handler(args)
            operation, token = opened
            try:
                result = await handler(args)
            except BaseException as exc:
                failure = _spans.failure(exc)  # cancelled: ends with no result, no error
                guard.guarded("instrumentation.pydantic_ai.tool", _close_tool, operation, token, _NO_RESULT, failure)
                raise
            guard.guarded("instrumentation.pydantic_ai.tool", _close_tool, operation, token, result, None)
            return result

    AgentBudget.__module__ = __name__
    return AgentBudget


def __getattr__(name: str) -> Any:
    if name == "AgentBudget":
        return _capability_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class PydanticAIInstrumentor(_base.PatchInstrumentor):
    """Instruments pydantic_ai (entry point `opentelemetry_instrumentor: pydantic_ai`)."""

    module = "pydantic_ai"
    dependencies = ("pydantic-ai-slim >= 2.17",)
    tracer_name = __name__

    @staticmethod
    def patch_factory() -> Patch:
        return _PATCH
