"""Agent runs: one ``invoke_agent {name}`` span that is the root of its own ledger scope.

The framework integrations (OpenAI Agents SDK, LangGraph) and the manual :func:`agent` open a run with :func:`start`
and make it current while the agent works; one whose framework opens its own agent span (Pydantic AI) starts that
span inside a :func:`new_scope` and wraps it in an :class:`AgentRun`. A model call made while a run is current, by our
instrumentors or any other instrumentation:

- is a child of the agent span, and counts in the run's scope: when the agent span ends it carries the run's
  subtree totals (``llm.cost.cumulative``, ``llm.tokens.cumulative.*``: sub-agents' calls included);
- carries ``gen_ai.agent.name`` of the innermost run, so ``totals(agent=...)`` and ``report --by agent`` give the
  calls each agent made itself;
- is refused with BudgetExceededError before it is sent when its worst case does not fit the run's budget (the
  given limits, else ``agents: {NAME: {llm_cost_limit, llm_token_limit}}`` or its ``"*"`` entry): a runaway loop
  stops at its next model call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from decimal import Decimal
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from . import call_context, config, guard
from .instrumentation import _spans
from .ledger import CURRENT_SCOPE, Scope, budget_limits
from .version import __version__

_AGENT_NAME = gen_ai.GEN_AI_AGENT_NAME
_current_run: ContextVar[AgentRun | None] = ContextVar("mltrack_agent_run", default=None)


def current_run() -> AgentRun | None:
    """The innermost agent run current in this thread or task."""
    return _current_run.get()


class _Activation:
    __slots__ = ("attributes", "otel", "run", "scope")

    def __init__(self, run: Token, scope: Token, otel: object, attributes: Token) -> None:
        self.run, self.scope, self.otel, self.attributes = run, scope, otel, attributes


class AgentRun:
    """One agent run: its span (``operation`` ends it once) and its ledger scope."""

    __slots__ = ("name", "operation", "scope", "span")

    def __init__(self, name: str, operation: _spans.Operation, scope: Scope) -> None:
        self.name = name
        self.operation = operation
        self.span = operation.span
        self.scope = scope

    def activate(self) -> _Activation:
        """Make the run current here: its span (the parent of what starts next), its scope (what calls count in)
        and its name on every model call. Undo with :meth:`deactivate`, in the same thread or task."""
        return _Activation(
            _current_run.set(self),
            CURRENT_SCOPE.set(self.scope),
            otel_context.attach(trace.set_span_in_context(self.span)),
            call_context.attach({_AGENT_NAME: self.name}),
        )

    def deactivate(self, activation: _Activation) -> bool:
        """Undo :meth:`activate`; False (nothing done) when called in another context than the one it was made in
        (a framework that ends a run elsewhere) or a second time."""
        try:
            _current_run.reset(activation.run)
        except (ValueError, RuntimeError):
            return False
        # Made in this same context (the run variable's reset succeeded): these cannot fail.
        call_context.detach(activation.attributes)
        CURRENT_SCOPE.reset(activation.scope)
        otel_context.detach(activation.otel)
        return True

    def finish(self, outputs: Mapping[str, Any] | None = None, attributes: dict[str, Any] | None = None) -> None:
        """End the span once (see _spans.Operation.finish); the processor adds the run's subtree totals."""
        self.operation.finish(outputs, attributes)

    def fail(self, error: BaseException, attributes: dict[str, Any] | None = None) -> None:
        self.operation.fail(error, attributes)

    @property
    def ended(self) -> bool:
        return self.operation.ended


def limits_for(name: str, settings: config.Settings) -> tuple[int | None, Decimal | None]:
    """The configured budgets of one run of agent `name` (its own `agents:` entry, else `"*"`)."""
    entry = settings.agents.get(name) or settings.agents.get("*")
    if entry is None:
        return None, None
    return entry.llm_token_limit, entry.llm_cost_limit


def new_scope(name: str, token_limit: int | None = None, cost_limit: Decimal | None = None) -> Scope:
    """The ledger scope of one run of agent `name`, nested in the current scope, with these (validated) budgets. Its
    root span is the run's agent span: start() opens one; an integration whose framework opens its own agent span
    starts that span with this scope current and sets ``scope.span_id``."""
    parent = CURRENT_SCOPE.get()
    return Scope(
        name,
        parent,
        parent.conversation_id if parent is not None else None,
        token_limit=token_limit,
        cost_limit=cost_limit,
        kind="agent",
    )


def start(
    tracer: trace.Tracer,
    name: str,
    attributes: dict[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    *,
    settings: config.Settings,
    description: Any = None,
    context: otel_context.Context | None = None,
    token_limit: int | None = None,
    cost_limit: Decimal | float | str | None = None,
) -> AgentRun:
    """Open an ``invoke_agent {name}`` span (INTERNAL; ``context``: its parent, the current one when None) as the
    root of a new scope nested in the current one. The run is not current yet: ``activate`` or ``current()``.

    ``token_limit`` / ``cost_limit``: this run's budgets (ValueError when invalid); when neither is given, the
    configured ones for `name`."""
    if token_limit is None and cost_limit is None:
        limit_tokens, limit_cost = limits_for(name, settings)
    else:
        limit_tokens, limit_cost = budget_limits(token_limit, cost_limit)
    scope = new_scope(name, limit_tokens, limit_cost)
    token = CURRENT_SCOPE.set(scope)  # the processor files the span under the scope it roots
    try:
        operation = _spans.start(
            tracer,
            "invoke_agent",
            name,
            attributes,
            inputs,
            settings=settings,
            description=description,
            context=context,
        )
    finally:
        CURRENT_SCOPE.reset(token)
    scope.span_id = operation.span.get_span_context().span_id
    return AgentRun(name, operation, scope)


def _tracer() -> trace.Tracer:
    return trace.get_tracer("mltrack_otel.agents", __version__)


@contextmanager
def agent(
    name: str,
    *,
    token_limit: int | None = None,
    cost_limit: Decimal | float | str | None = None,
    description: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[AgentRun | None]:
    """An agent run around a block, for agents written by hand or frameworks we do not instrument::

        with mltrack_otel.agent("researcher", cost_limit=0.05) as run:
            ...  # model calls here are the researcher's; the 0.05 USD budget is this run's

    An exception leaving the block marks the span failed and propagates unchanged; a cancellation (CancelledError,
    a closed generator, Ctrl-C) ends it without an error: the run stopped, it did not fail. ValueError for a bad
    name or budget; a failure of ours leaves the block untraced (counted in ``health()``), never failed."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"agent(): name must be a non-empty string, not {name!r}")
    limits = budget_limits(token_limit, cost_limit)  # the caller's mistake: raised here
    run = guard.guarded(
        "agents.start",
        start,
        _tracer(),
        name,
        dict(attributes) if attributes else None,
        settings=config.current(),
        description=description,
        token_limit=limits[0],
        cost_limit=limits[1],
    )
    if run is None:
        yield None
        return
    activation = run.activate()
    try:
        yield run
    except BaseException as exc:
        if _spans.failure(exc) is not None:
            guard.guarded("agents.fail", run.fail, exc)
        raise
    finally:
        run.deactivate(activation)
        guard.guarded("agents.finish", run.finish)
