"""Running totals of tokens and cost: per process, per trace, per tracking scope (an agent run is one), per
conversation, per user, per attribution tag and per agent.

The CostSpanProcessor decides *which* span counts (exactly once per model call); the ledger only adds what it is
told, under one lock, and reports the warning limits each addition crosses. Money stays Decimal here.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

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
    # The scope's own hard budgets (track_llm_context(token_limit=, cost_limit=)), on top of the configured ones.
    token_limit: int | None = None
    cost_limit: Decimal | None = None
    # Worst cases reserved by this scope's calls in flight (see Ledger.reserve).
    held_tokens: int = 0
    held_cost: Decimal = _ZERO
    limited: bool = field(init=False, default=False)  # this scope or an enclosing one has its own budget
    kind: str = "context"  # what a refusal by its own budget names: "context", or "agent" for an agent run

    def __post_init__(self) -> None:
        self.limited = (
            self.token_limit is not None
            or self.cost_limit is not None
            or (self.parent is not None and self.parent.limited)
        )

    def chain(self) -> list[Scope]:
        scope: Scope | None = self
        out = []
        while scope is not None:
            out.append(scope)
            scope = scope.parent
        return out


CURRENT_SCOPE: ContextVar[Scope | None] = ContextVar("mltrack_scope", default=None)


def current_scope() -> Scope | None:
    """The innermost tracking scope of the running thread / asyncio task."""
    return CURRENT_SCOPE.get()


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
    are open), conversations live in an LRU of `max_conversations`, users and tag values (attribution) in LRUs of
    `max_users` and `max_tag_values`, agents in one of `max_agents`."""

    def __init__(
        self,
        limits: Limits | None = None,
        max_conversations: int = 10_000,
        max_traces: int = 10_000,
        max_users: int = 10_000,
        max_tag_values: int = 10_000,
        max_agents: int = 10_000,
    ):
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._process = Totals()
        self._traces: OrderedDict[int, Totals] = OrderedDict()
        self._conversations: OrderedDict[str, Totals] = OrderedDict()
        self.max_conversations = max_conversations
        self.max_traces = max_traces
        # Attribution (attribution.py): totals per user.id and per (tag key, value text), least recently counted
        # forgotten first.
        self._users: OrderedDict[str, Totals] = OrderedDict()
        self._tags: OrderedDict[tuple[str, str], Totals] = OrderedDict()
        self.max_users = max_users
        self.max_tag_values = max_tag_values
        # Per agent (gen_ai.agent.name of the counted call: the innermost agent run it was made in).
        self._agents: OrderedDict[str, Totals] = OrderedDict()
        self.max_agents = max_agents
        # Hard budgets: worst cases held by calls in flight (process level; scopes hold their own), conversations'
        # holds as (calls, tokens, cost), and the budgets set per conversation (limit_conversation).
        self._held_tokens = 0
        self._held_cost = _ZERO
        self._conversation_held: dict[str, tuple[int, int, Decimal]] = {}
        self._conversation_limits: OrderedDict[str, Limits] = OrderedDict()
        # The Pricer of the CostSpanProcessor that writes into this ledger: reservations price a call's worst case
        # as its real cost will be priced. None (no processor, or costs not tracked): reservations hold tokens only.
        self.pricer: Any = None
        self._epoch = 0  # a forked child starts a new one: the parent's calls in flight never end there
        guard.renew_lock_after_fork(self)
        os.register_at_fork(after_in_child=_forget_holds_of(weakref.ref(self)))

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
                    self._forget_a_conversation()

            scoped = trace
            for i, s in enumerate(scope.chain() if scope is not None else ()):
                before = s.totals
                s.totals = s.totals.plus(prompt, completion, cost, estimated)
                if i == 0:
                    scoped = s.totals
                self._check(before, s.totals, "context", crossings)
        return scoped, crossings

    def attribute(
        self,
        user: str | None,
        tags: Any,
        prompt: int,
        completion: int,
        cost: Decimal | None,
        estimated: bool = False,
        agent: str | None = None,
    ) -> None:
        """Count one model call (already counted by add()) for its user, each of its (key, value) tags and the
        agent that made it."""
        with self._lock:
            if user is not None:
                users = self._users
                users[user] = (users.pop(user, None) or _NO_TOTALS).plus(prompt, completion, cost, estimated)
                if len(users) > self.max_users:
                    users.popitem(last=False)
            if agent is not None:
                agents = self._agents
                agents[agent] = (agents.pop(agent, None) or _NO_TOTALS).plus(prompt, completion, cost, estimated)
                if len(agents) > self.max_agents:
                    agents.popitem(last=False)
            if tags:
                counted = self._tags
                for tag in tags:
                    counted[tag] = (counted.pop(tag, None) or _NO_TOTALS).plus(prompt, completion, cost, estimated)
                while len(counted) > self.max_tag_values:
                    counted.popitem(last=False)

    def _forget_a_conversation(self) -> None:
        """Drop the least recently counted conversation that has no budget of its own: a limited conversation's
        spend must outlive the LRU, or its budget would refill (under the lock)."""
        limited = self._conversation_limits
        for conversation_id in self._conversations:  # oldest first; limited ones are few (at most max_conversations)
            if conversation_id not in limited:
                del self._conversations[conversation_id]
                return
        self._conversations.popitem(last=False)

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
            self._users.clear()
            self._tags.clear()
            self._agents.clear()

    # -- reading ---------------------------------------------------------------------------------------------

    def process_totals(self) -> Totals:
        return self._process

    def trace_totals(self, trace_id: int) -> Totals:
        return self._traces.get(trace_id) or Totals()

    def conversation_totals(self, conversation_id: str) -> Totals:
        return self._conversations.get(conversation_id) or Totals()

    def user_totals(self, user: str) -> Totals:
        return self._users.get(user) or Totals()

    def agent_totals(self, agent: str) -> Totals:
        """Totals of the calls agent runs of this name made themselves (their sub-agents' count for those)."""
        return self._agents.get(agent) or Totals()

    def tag_totals(self, key: str, value: str) -> Totals:
        """Totals of the calls tagged key=value (value as text: attribution.tag_text)."""
        return self._tags.get((key, value)) or Totals()

    def users(self) -> dict[str, Totals]:
        """Totals per user still remembered, least recently counted first."""
        with self._lock:
            return dict(self._users)

    def tags(self, key: str | None = None) -> dict[tuple[str, str], Totals]:
        """Totals per (tag key, value) still remembered (of one key), least recently counted first."""
        with self._lock:
            return {tag: t for tag, t in self._tags.items() if key is None or tag[0] == key}

    def check_budget(self, scope: Scope | None, conversation_id: str | None = None) -> None:
        """Raise BudgetExceededError if a hard budget is spent, or held in full by calls in flight, in the process,
        any enclosing scope or the conversation."""
        if self.budgets_apply(scope, conversation_id):
            with self._lock:
                self._refuse(scope.chain() if scope is not None else (), conversation_id, 0, _ZERO)

    # -- hard budgets: a call's worst case is reserved before it is sent -------------------------------------

    def budgets_apply(self, scope: Scope | None, conversation_id: str | None) -> bool:
        """Whether any hard budget covers a call in this scope and conversation (runs before every call: cheap)."""
        limits = self.limits
        return (
            limits.token_budget is not None
            or limits.cost_budget is not None
            or (scope is not None and scope.limited)
            or (conversation_id is not None and conversation_id in self._conversation_limits)
        )

    def reserve(
        self,
        scope: Scope | None,
        conversation_id: str | None,
        tokens: int,
        cost: Decimal | None,
        replacing: Reservation | None = None,
    ) -> Reservation:
        """Hold a call's worst case (tokens, and cost; None: unpriced) against the process, every enclosing scope and
        the conversation; raise BudgetExceededError instead if what is spent, plus what calls in flight hold, plus
        this worst case would exceed any of their budgets.

        `replacing`: the reservation of an enclosing call this one carries out (LiteLLM around the OpenAI SDK), given
        up in the same step, so one model call is held once and by its most exact request."""
        chain = scope.chain() if scope is not None else []
        cost = cost if cost is not None else _ZERO
        with self._lock:
            if replacing is not None and replacing._ledger is self:
                self._release(replacing)
            self._refuse(chain, conversation_id, tokens, cost)
            self._held_tokens += tokens
            self._held_cost += cost
            for s in chain:
                s.held_tokens += tokens
                s.held_cost += cost
            if conversation_id is not None:
                calls, held_tokens, held_cost = self._conversation_held.get(conversation_id, _NO_HOLD)
                self._conversation_held[conversation_id] = (calls + 1, held_tokens + tokens, held_cost + cost)
        return Reservation(self, chain, conversation_id, tokens, cost)

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back (the call ended: its real cost is in the totals, or it failed). Idempotent."""
        with self._lock:
            self._release(reservation)

    def held(self) -> tuple[int, Decimal]:
        """(tokens, USD) the process's calls in flight hold right now."""
        return self._held_tokens, self._held_cost

    def limit_conversation(
        self, conversation_id: str, token_limit: int | None = None, cost_limit: Decimal | float | str | None = None
    ) -> None:
        """Set (or, with neither limit, clear) hard budgets for one conversation (gen_ai.conversation.id). Kept for
        the `max_conversations` most recently limited conversations."""
        token_limit, cost = budget_limits(token_limit, cost_limit)
        with self._lock:
            self._conversation_limits.pop(conversation_id, None)
            if token_limit is None and cost is None:
                return
            self._conversation_limits[conversation_id] = Limits(token_budget=token_limit, cost_budget=cost)
            if len(self._conversation_limits) > self.max_conversations:
                self._conversation_limits.popitem(last=False)

    def _refuse(self, chain: Any, conversation_id: str | None, tokens: int, cost: Decimal) -> None:
        """Raise BudgetExceededError if a worst case of (tokens, cost) does not fit every budget (under the lock)."""
        limits = self.limits
        token_budget, cost_budget = limits.token_budget, limits.cost_budget
        _refuse("process", self._process, self._held_tokens, self._held_cost, tokens, cost, token_budget, cost_budget)
        for s in chain:
            _refuse("context", s.totals, s.held_tokens, s.held_cost, tokens, cost, token_budget, cost_budget)
            if s.token_limit is not None or s.cost_limit is not None:
                _refuse(s.kind, s.totals, s.held_tokens, s.held_cost, tokens, cost, s.token_limit, s.cost_limit)
        if conversation_id is not None:
            spent = self._conversations.get(conversation_id) or _NO_TOTALS
            _, held_tokens, held_cost = self._conversation_held.get(conversation_id, _NO_HOLD)
            _refuse("conversation", spent, held_tokens, held_cost, tokens, cost, token_budget, cost_budget)
            own = self._conversation_limits.get(conversation_id)
            if own is not None:
                _refuse("conversation", spent, held_tokens, held_cost, tokens, cost, own.token_budget, own.cost_budget)

    def _release(self, reservation: Reservation) -> None:
        if reservation.released:
            return
        reservation.released = True
        if reservation.epoch != self._epoch:  # made before a fork: forgotten already
            return
        tokens, cost = reservation.tokens, reservation.cost
        self._held_tokens -= tokens
        self._held_cost -= cost
        for s in reservation.scopes:
            s.held_tokens -= tokens
            s.held_cost -= cost
        conversation_id = reservation.conversation_id
        if conversation_id is not None:
            calls, held_tokens, held_cost = self._conversation_held.pop(conversation_id, _NO_HOLD)
            if calls > 1:
                self._conversation_held[conversation_id] = (calls - 1, held_tokens - tokens, held_cost - cost)

    def _forget_holds(self) -> None:
        """In a forked child: the holds of the parent's calls in flight (their threads did not come along).
        Scopes shared with such a thread keep its hold; only the forking thread's own scopes are usually alive."""
        self._held_tokens, self._held_cost = 0, _ZERO
        self._conversation_held = {}
        self._epoch += 1


_NO_HOLD = (0, 0, _ZERO)


def budget_limits(token_limit: Any, cost_limit: Any) -> tuple[int | None, Decimal | None]:
    """A scope's or conversation's own limits, validated: a token count, and USD as an exact Decimal."""
    if token_limit is not None and (type(token_limit) is not int or token_limit < 0):
        raise ValueError(f"token_limit must be a non-negative int, not {token_limit!r}")
    if cost_limit is None:
        return token_limit, None
    try:
        cost = Decimal(str(cost_limit))
    except ArithmeticError:  # decimal.InvalidOperation
        cost = None
    if cost is None or not cost.is_finite() or cost < 0:
        raise ValueError(f"cost_limit must be a non-negative amount in USD, not {cost_limit!r}")
    return token_limit, cost


def _forget_holds_of(own: weakref.ref[Ledger]) -> Any:
    def forget() -> None:
        ledger = own()
        if ledger is not None:
            ledger._forget_holds()

    return forget


def _refuse(
    where: str,
    spent: Totals,
    held_tokens: int,
    held_cost: Decimal,
    tokens: int,
    cost: Decimal,
    token_limit: int | None,
    cost_limit: Decimal | None,
) -> None:
    # Nothing left (spent or held in full) refuses even a call whose worst case is 0, e.g. an unpriced model.
    if token_limit is not None:
        used = spent.total_tokens + held_tokens
        if used >= token_limit or used + tokens > token_limit:
            raise BudgetExceededError("token", where, token_limit, spent.total_tokens, held_tokens, tokens)
    if cost_limit is not None:
        used_cost = spent.cost_usd + held_cost
        if used_cost >= cost_limit or used_cost + cost > cost_limit:
            raise BudgetExceededError(
                "cost", where, float(cost_limit), float(spent.cost_usd), float(held_cost), float(cost)
            )


class Reservation:
    """A call's worst-case tokens and cost, held from before its request is sent until it ends (Ledger.reserve).

    The call's span ends first (the processor adds the real cost to the totals inside span.end()), then the
    reservation is released, so for a moment the call is counted twice: never zero times."""

    __slots__ = ("_ledger", "conversation_id", "cost", "epoch", "released", "scopes", "tokens")

    def __init__(
        self, ledger: Ledger, scopes: list[Scope], conversation_id: str | None, tokens: int, cost: Decimal
    ) -> None:
        self._ledger = ledger
        self.scopes = scopes
        self.conversation_id = conversation_id
        self.tokens = tokens
        self.cost = cost
        self.epoch = ledger._epoch
        self.released = False

    def release(self) -> None:
        """Idempotent; safe from any thread."""
        if not self.released:
            self._ledger.release(self)


LEDGER = Ledger()
"""The process-wide ledger that configure() sets up and CostSpanProcessor uses by default."""


def check_budget() -> None:
    """Raises BudgetExceededError if a hard budget of the current scope (its process, enclosing scopes or
    conversation) is spent or held in full by calls in flight. Instrumented calls reserve their worst case
    instead (mltrack_otel.budget)."""
    scope = CURRENT_SCOPE.get()
    LEDGER.check_budget(scope, scope.conversation_id if scope is not None else None)


def limit_conversation(
    conversation_id: str, *, token_limit: int | None = None, cost_limit: Decimal | float | str | None = None
) -> None:
    """Hard budgets for one conversation (gen_ai.conversation.id), on top of llm_token_limit / llm_cost_limit: a
    call in it raises BudgetExceededError before it is sent if its worst case would not fit."""
    LEDGER.limit_conversation(conversation_id, token_limit, cost_limit)


def totals(
    conversation_id: str | None = None,
    *,
    user: str | None = None,
    tag: tuple[str, Any] | str | None = None,
    agent: str | None = None,
) -> Totals:
    """Running totals of the process, or of one conversation, one user (``user="u1"``), one tag value
    (``tag=("feature", "search")`` or ``tag="feature=search"``) or one agent (``agent="researcher"``: the model
    calls its runs made themselves; a sub-agent's calls count for the sub-agent, and an agent run's span carries
    its whole subtree). Users, tag values and agents are kept for the `max_users` / `max_tag_values` /
    `max_agents` most recently counted."""
    if (conversation_id is not None) + (user is not None) + (tag is not None) + (agent is not None) > 1:
        raise ValueError("totals(): name at most one of conversation_id, user, tag and agent")
    if conversation_id is not None:
        return LEDGER.conversation_totals(conversation_id)
    if user is not None:
        return LEDGER.user_totals(str(user))
    if agent is not None:
        return LEDGER.agent_totals(str(agent))
    if tag is not None:
        from .attribution import tag_text

        if isinstance(tag, str) and "=" in tag:
            key, value = tag.split("=", 1)
        elif isinstance(tag, tuple) and len(tag) == 2:
            key, value = tag[0], tag_text(tag[1])
        else:
            raise ValueError(f"totals(tag=...) takes (key, value) or 'key=value', not {tag!r}")
        return LEDGER.tag_totals(key, value)
    return LEDGER.process_totals()
