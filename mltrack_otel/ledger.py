"""Running totals of tokens and cost: per process, per trace, per tracking scope, per conversation.

The CostSpanProcessor decides *which* span counts (exactly once per model call); the ledger only adds what it is
told, under one lock, and reports the warning limits each addition crosses. Money stays Decimal here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from . import guard
from .errors import BudgetExceededError

_ZERO = Decimal(0)


class Totals(NamedTuple):
    """A snapshot of running totals. `cost_usd` is exact (Decimal); unpriced calls add tokens but no cost.

    `cost_usd` is the whole spend, what the provider bills: priced from reported usage and from estimated usage
    (calls whose usage never arrived, such as streams stopped early). `estimated_cost_usd` is the estimated part
    of it and `estimated_calls` how many calls it covers, so a reader can tell reported from estimated money;
    budgets and limits act on the whole, because the provider bills estimated calls too.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = _ZERO
    calls: int = 0
    unpriced_calls: int = 0
    estimated_cost_usd: Decimal = _ZERO
    estimated_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def reported_cost_usd(self) -> Decimal:
        """The part of `cost_usd` priced from usage the provider reported."""
        return self.cost_usd - self.estimated_cost_usd

    def plus(self, prompt: int, completion: int, cost: Decimal | None, estimated: bool = False) -> Totals:
        # tuple.__new__ directly: the generated NamedTuple constructor costs twice as much, on every counted call.
        return _new_tuple(
            Totals,
            (
                self.prompt_tokens + prompt,
                self.completion_tokens + completion,
                self.cost_usd + cost if cost is not None else self.cost_usd,
                self.calls + 1,
                self.unpriced_calls + (cost is None),
                self.estimated_cost_usd + cost if estimated and cost is not None else self.estimated_cost_usd,
                self.estimated_calls + estimated,
            ),
        )


_new_tuple = tuple.__new__
_NO_TOTALS = Totals()


@dataclass(eq=False)
class Scope:
    """A `track_llm_context` / `@track` scope. Scopes nest; a call counts in its scope and every ancestor."""

    name: str
    parent: Scope | None = None
    conversation_id: str | None = None
    span_id: int | None = None
    totals: Totals = field(default_factory=Totals)

    def chain(self) -> list[Scope]:
        scope: Scope | None = self
        out = []
        while scope is not None:
            out.append(scope)
            scope = scope.parent
        return out


_current_scope: ContextVar[Scope | None] = ContextVar("mltrack_scope", default=None)


def current_scope() -> Scope | None:
    """The innermost tracking scope of the running thread / asyncio task."""
    return _current_scope.get()


class LimitCrossing(NamedTuple):
    kind: str  # "tokens" | "cost"
    scope: str  # "process" | "context"
    threshold: float
    value: float


@dataclass(frozen=True)
class Limits:
    token_warning: int | None = None
    cost_warning: Decimal | None = None
    token_budget: int | None = None
    cost_budget: Decimal | None = None


class Ledger:
    """Thread-safe running totals. Memory is bounded: traces are dropped when their root ends (or when too many
    are open), conversations live in an LRU of `max_conversations`."""

    def __init__(self, limits: Limits | None = None, max_conversations: int = 10_000, max_traces: int = 10_000):
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._process = Totals()
        self._traces: OrderedDict[int, Totals] = OrderedDict()
        self._conversations: OrderedDict[str, Totals] = OrderedDict()
        self.max_conversations = max_conversations
        self.max_traces = max_traces
        guard.renew_lock_after_fork(self)

    # -- writing ---------------------------------------------------------------------------------------------

    def add(
        self,
        trace_id: int,
        scope: Scope | None,
        conversation_id: str | None,
        prompt: int,
        completion: int,
        cost: Decimal | None,
        estimated: bool = False,
    ) -> tuple[Totals, list[LimitCrossing]]:
        """Count one model call (`estimated`: its usage was estimated, not reported). Returns the running totals
        of the call's scope (innermost tracking scope, else its trace) after the addition, and the warning limits
        this addition crossed."""
        crossings: list[LimitCrossing] = []
        with self._lock:
            before = self._process
            self._process = after = before.plus(prompt, completion, cost, estimated)
            self._check(before, after, "process", crossings)

            trace = self._traces.pop(trace_id, None) or _NO_TOTALS
            self._traces[trace_id] = trace = trace.plus(prompt, completion, cost, estimated)
            if len(self._traces) > self.max_traces:
                self._traces.popitem(last=False)

            if conversation_id is not None:
                conv = self._conversations.pop(conversation_id, None) or _NO_TOTALS
                self._conversations[conversation_id] = conv.plus(prompt, completion, cost, estimated)
                if len(self._conversations) > self.max_conversations:
                    self._conversations.popitem(last=False)

            scoped = trace
            for i, s in enumerate(scope.chain() if scope is not None else ()):
                before = s.totals
                s.totals = s.totals.plus(prompt, completion, cost, estimated)
                if i == 0:
                    scoped = s.totals
                self._check(before, s.totals, "context", crossings)
        return scoped, crossings

    def _check(self, before: Totals, after: Totals, where: str, out: list[LimitCrossing]) -> None:
        limits = self.limits
        if limits.token_warning is not None and before.total_tokens < limits.token_warning <= after.total_tokens:
            out.append(LimitCrossing("tokens", where, limits.token_warning, after.total_tokens))
        if limits.cost_warning is not None and before.cost_usd < limits.cost_warning <= after.cost_usd:
            out.append(LimitCrossing("cost", where, float(limits.cost_warning), float(after.cost_usd)))

    def end_trace(self, trace_id: int) -> Totals:
        """The trace's final totals; forgets the trace (its local root span ended)."""
        with self._lock:
            return self._traces.pop(trace_id, None) or _NO_TOTALS

    def reset(self) -> None:
        with self._lock:
            self._process = Totals()
            self._traces.clear()
            self._conversations.clear()

    # -- reading ---------------------------------------------------------------------------------------------

    def process_totals(self) -> Totals:
        return self._process

    def trace_totals(self, trace_id: int) -> Totals:
        return self._traces.get(trace_id) or Totals()

    def conversation_totals(self, conversation_id: str) -> Totals:
        return self._conversations.get(conversation_id) or Totals()

    def check_budget(self, scope: Scope | None) -> None:
        """Raise BudgetExceededError if a hard budget is spent in the process or in any enclosing scope."""
        limits = self.limits
        if limits.token_budget is None and limits.cost_budget is None:
            return
        for where, totals in [("process", self._process)] + [
            ("context", s.totals) for s in (scope.chain() if scope else ())
        ]:
            if limits.token_budget is not None and totals.total_tokens >= limits.token_budget:
                raise BudgetExceededError("token", where, limits.token_budget, totals.total_tokens)
            if limits.cost_budget is not None and totals.cost_usd >= limits.cost_budget:
                raise BudgetExceededError("cost", where, float(limits.cost_budget), float(totals.cost_usd))


LEDGER = Ledger()
"""The process-wide ledger that configure() sets up and CostSpanProcessor uses by default."""


def check_budget() -> None:
    """Called by instrumentors before sending a request: raises BudgetExceededError if a hard budget is spent."""
    LEDGER.check_budget(_current_scope.get())


def totals(conversation_id: str | None = None) -> Totals:
    """Running totals of the process (or of one conversation)."""
    if conversation_id is not None:
        return LEDGER.conversation_totals(conversation_id)
    return LEDGER.process_totals()
