"""Hard budgets that hold under concurrency: a call's worst case is reserved before its request is sent.

Checking only what is already spent lets every call released at the same moment through. So before a request
goes out, its worst case is held in the ledger (process, enclosing scopes, conversation) and the call is refused
with BudgetExceededError if spent + held by calls in flight + this worst case would exceed a budget. The call
settles when it ends: its span ends (the processor adds the real cost), then the hold is released.

Worst case of one call:
  tokens = estimated input (mltrack_otel.estimate) + maximum output (x `n` choices; 0 for embeddings)
  cost   = those tokens priced by the Pricer the CostSpanProcessor uses (all input at the dearer of the plain and
           the cache-write price), or nothing for an unpriced model (it holds tokens only).
Maximum output, when the request names none (max_tokens, max_completion_tokens, max_output_tokens):
  1. the vendor's documented output limit of the model family (MAX_OUTPUT_TOKENS, longest name prefix wins);
  2. else the model's context window in genai-prices, less the input: the output can never be longer;
  3. else UNKNOWN_MAX_OUTPUT_TOKENS, a deliberately large figure (name max_tokens to reserve less).
The remaining error is the input estimate's (a tokenizer's count versus 4 bytes a token; images and audio are not
estimated): that is how far the spend can exceed a budget, at most, summed over the calls in flight.

One model call is held once: a call made while another holds (the OpenAI SDK under LiteLLM under DSPy, or inside
a track_llm_call function) takes that hold over, in the same step. The conversation is the tracking scope's.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from contextvars import ContextVar, Token
from decimal import Decimal
from typing import Any

from . import estimate
from .ledger import LEDGER, Reservation, current_scope
from .pricing import Usage

__all__ = ["MAX_OUTPUT_TOKENS", "UNKNOWN_MAX_OUTPUT_TOKENS", "hold", "max_output", "reserve", "unhold", "worst_case"]

# Documented maximum output tokens per model family (vendor model pages). Prefixes of the bare model name; a
# longer prefix wins ("o1-mini" over "o1"). Only families whose every member stays within the figure are listed
# (not gpt-3.5-turbo: its 16k variant writes up to its window); the rest fall back to the context window.
MAX_OUTPUT_TOKENS: dict[str, int] = {
    "gpt-4-turbo": 4_096,
    "gpt-4-1106": 4_096,
    "gpt-4-0125": 4_096,
    "gpt-4o": 16_384,
    "gpt-4o-64k-output-alpha": 65_536,
    "chatgpt-4o": 16_384,
    "gpt-4.1": 32_768,
    "gpt-4.5": 16_384,
    "gpt-5": 128_000,
    "o1-mini": 65_536,
    "o1": 100_000,
    "o3": 100_000,
    "o4-mini": 100_000,
    "claude-3-haiku": 4_096,
    "claude-3-opus": 4_096,
    "claude-3-sonnet": 4_096,
    "claude-3-5": 8_192,
    "claude-3-7-sonnet": 128_000,  # 64k, or 128k with the output-128k beta header: the larger
    "claude-sonnet-4": 64_000,
    # Opus 4 and 4.1 only: a bare "claude-opus-4" prefix would also cap the later Opus models, which write more.
    "claude-opus-4-0": 32_000,
    "claude-opus-4-20250514": 32_000,
    "claude-opus-4-1": 32_000,
    "claude-opus-4.1": 32_000,
    "claude-opus-4-5": 64_000,
    "claude-haiku-4": 64_000,
    "gemini-1.5": 8_192,
    "gemini-2.0": 8_192,
    "gemini-2.5": 65_536,
}
UNKNOWN_MAX_OUTPUT_TOKENS = 128_000
_NO_OUTPUT = frozenset({"embeddings"})
_CURRENT: Any = object()
_families: dict[tuple[str | None, str], int | None] = {}  # (provider, model) -> output limit or context window

# The reservation of the call being sent in this thread / task: a call made inside it (the OpenAI SDK under
# LiteLLM under DSPy) takes it over rather than holding the same model call twice.
_holding: ContextVar[Reservation | None] = ContextVar("mltrack_holding", default=None)


def reserve(
    body: Mapping[str, Any],
    model: str | None,
    provider: str | None,
    operation: str,
    scope: Any = _CURRENT,
    address: str | None = None,
    port: int | None = None,
) -> Reservation | None:
    """Reserve a call's worst case before it is sent, in `scope` (default: the current tracking scope); None when
    no hard budget covers it (the fast path). Raises BudgetExceededError when the worst case does not fit."""
    if scope is _CURRENT:
        scope = current_scope()
    conversation_id = scope.conversation_id if scope is not None else None
    ledger = LEDGER
    if not ledger.budgets_apply(scope, conversation_id):
        return None
    tokens, cost = worst_case(body, model, provider, operation, ledger.pricer, address, port)
    return ledger.reserve(scope, conversation_id, tokens, cost, _holding.get())


def hold(reservation: Reservation) -> Token[Reservation | None]:
    """Mark `reservation` as the one calls made from here on (inside the request) take over."""
    return _holding.set(reservation)


def unhold(token: Token[Reservation | None]) -> None:
    _holding.reset(token)


def worst_case(
    body: Mapping[str, Any],
    model: str | None,
    provider: str | None,
    operation: str,
    pricer: Any,
    address: str | None = None,
    port: int | None = None,
) -> tuple[int, Decimal | None]:
    """(tokens, USD or None when unpriced) a call may use at most, input estimate included; priced where it is
    served (`address`, `port`: a local server costs nothing unless an override prices it)."""
    tokens_in = estimate.input_tokens(body, model)
    tokens_out = 0 if operation in _NO_OUTPUT else max_output(body, model, provider, tokens_in)
    cost = None
    if pricer is not None and model:
        # Input written to a prompt cache can cost more than plain input (Anthropic: 1.25x): price it so then.
        written = tokens_in if _writes_cost_more(pricer, provider, model) else 0
        usage = Usage(tokens_in, tokens_out, 0, written)
        priced = pricer.price(provider, model, usage, None, address, port)
        served = _served_as.get((provider, model)) if priced is None else None
        if served is not None:  # a deployment name or alias: priced as the model its responses named
            priced = pricer.price(provider, served, usage, None, address, port)
        cost = priced.total if priced is not None else None
    return tokens_in + tokens_out, cost


# (provider, requested model) -> the model its responses named. Azure deployments and other aliases
# ("prod-gpt4o") have no price of their own, but their calls are priced by the response model: reservations learn
# it from counted calls, so that only a name's first call goes out unreserved. Bounded; plain dict reads.
_served_as: dict[tuple[str | None, str], str] = {}
_MAX_SERVED_AS = 4096


def note_served_model(provider: str | None, requested: Any, served: Any) -> None:
    """A counted call asked for `requested` and was answered by `served` (called by the CostSpanProcessor)."""
    if requested == served or not isinstance(requested, str) or not isinstance(served, str):
        return
    key = (provider, requested)
    if key not in _served_as and len(_served_as) < _MAX_SERVED_AS:
        _served_as[key] = served


# pricer -> {(provider, model): whether a cache write costs more than plain input}; a pricer's answers go with it.
_dear_writes: weakref.WeakKeyDictionary[Any, dict[tuple[str | None, str], bool]] = weakref.WeakKeyDictionary()


def _writes_cost_more(pricer: Any, provider: str | None, model: str) -> bool:
    """Whether the model's cache-write price is above its input price (asked once per pricer and model)."""
    try:
        known = _dear_writes[pricer]
    except KeyError:
        known = _dear_writes.setdefault(pricer, {})
    key = (provider, model)
    try:
        return known[key]
    except KeyError:
        pass
    plain = pricer.price(provider, model, Usage(1_000_000, 0))
    written = pricer.price(provider, model, Usage(1_000_000, 0, 0, 1_000_000))
    dearer = plain is not None and written is not None and written.total > plain.total
    if len(known) < 4096:
        known[key] = dearer
    return dearer


def max_output(body: Mapping[str, Any], model: str | None, provider: str | None, tokens_in: int) -> int:
    """The most output tokens the request can produce: its own cap, else the model's (see the module notes)."""
    per_choice = estimate.max_output_tokens(body)
    if per_choice is None:
        per_choice = _model_max_output(model, provider, tokens_in)
    choices = body.get("n")
    return per_choice * choices if type(choices) is int and choices > 1 else per_choice


def _model_max_output(model: str | None, provider: str | None, tokens_in: int) -> int:
    if not model:
        return UNKNOWN_MAX_OUTPUT_TOKENS
    key = (provider, model)
    try:
        known = _families[key]
    except KeyError:
        known = _family_limit(model)
        if known is None:
            window = _context_window(model, provider)
            known = -window if window is not None else None  # negative: a window, which the input shares
        if len(_families) < 4096:
            _families[key] = known
    if known is None:
        return UNKNOWN_MAX_OUTPUT_TOKENS
    return known if known > 0 else max(-known - tokens_in, 0)


def _family_limit(model: str) -> int | None:
    """The family table's limit for a model name, also under a provider prefix ("openai/gpt-4o",
    "anthropic.claude-3-5-sonnet-...", "us.anthropic.claude-...")."""
    name = model.strip().lower()
    candidates = [name] + [name[i + 1 :] for i, c in enumerate(name) if c in "/."]
    best, found = -1, None
    for candidate in candidates:
        for prefix, limit in MAX_OUTPUT_TOKENS.items():
            if len(prefix) > best and candidate.startswith(prefix) and _boundary(candidate, len(prefix)):
                best, found = len(prefix), limit
    return found


def _boundary(name: str, end: int) -> bool:
    """The prefix ends at a name boundary ("o1" matches "o1-2024-12-17", not "o1x")."""
    return end == len(name) or not name[end].isalnum()


def _context_window(model: str, provider: str | None) -> int | None:
    try:
        from genai_prices.data_snapshot import get_snapshot

        snapshot = get_snapshot()
        for provider_id in dict.fromkeys((provider, None)):
            try:
                _, info = snapshot.find_provider_model(model, None, provider_id, None)
            except Exception:
                continue
            window = info.context_window
            return window if type(window) is int and window > 0 else None
    except Exception:
        return None
    return None
