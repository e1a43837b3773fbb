"""The manual API: `track`, `track_llm_context`, `LLMTracker` and the seed's extractors.

Scopes live in a ContextVar, so concurrent threads and asyncio tasks keep separate contexts. Spans are ordinary
OpenTelemetry spans: the CostSpanProcessor prices and totals them exactly as it does instrumented calls.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import SpanKind

from . import attribution, budget, call_context, config, content, estimate, guard, semconv
from .errors import BudgetExceededError
from .ledger import CURRENT_SCOPE, LEDGER, Reservation, Scope, Totals, budget_limits, current_scope
from .usage import usage_attributes
from .version import __version__

_log = logging.getLogger("mltrack_otel.tracking")
F = TypeVar("F", bound=Callable[..., Any])


def _tracer() -> trace.Tracer:
    return trace.get_tracer("mltrack_otel.tracking", __version__)


def _tag_list(tags: Mapping[str, Any] | None) -> list[str]:
    return [f"{key}={value}" for key, value in (tags or {}).items()]


class _Within(Scope):
    """A standalone tracker's scope for one call made inside a tracking context: counts in both."""

    def __init__(self, own: Scope, context: Scope) -> None:
        super().__init__(own.name, context, context.conversation_id or own.conversation_id)
        self.own = own
        self.limited = self.limited or own.limited

    def chain(self) -> list[Scope]:
        return [self.own, *self.parent.chain()] if self.parent is not None else [self.own]


class _Active:
    """A span and the tracking scope it belongs to, made current only while code of the tracked call runs.

    Generators run in steps between which the caller runs code of its own; attaching for each step (and detaching
    in the same context) keeps the caller's context clean and never leaves a context to detach elsewhere.
    """

    __slots__ = ("attributes", "scope", "span")

    def __init__(self, span: trace.Span, scope: Scope, attributes: Mapping[str, Any] | None = None) -> None:
        self.span = span
        self.scope = scope
        self.attributes = attributes  # attribution every model call inside carries (call_context)

    @contextmanager
    def current(self) -> Iterator[None]:
        scope_token = CURRENT_SCOPE.set(self.scope)
        context_token = otel_context.attach(trace.set_span_in_context(self.span))
        attached = call_context.attached(self.attributes) if self.attributes else None
        if attached is not None:
            attached.__enter__()
        try:
            yield
        finally:
            if attached is not None:
                attached.__exit__(None, None, None)
            otel_context.detach(context_token)
            CURRENT_SCOPE.reset(scope_token)

    def fail(self, exc: BaseException) -> None:
        content.record_failure(self.span, exc, config.current().redactor)
        self.span.set_attribute(ERROR_TYPE, type(exc).__qualname__)


def _start(name: str, scope: Scope, kind: SpanKind = SpanKind.INTERNAL, attributes: dict | None = None) -> _Active:
    """Start a span under the caller's current span, with `scope` current so the processor files it there."""
    token = CURRENT_SCOPE.set(scope)
    try:
        span = _tracer().start_span(name, kind=kind, attributes=attributes)
    finally:
        CURRENT_SCOPE.reset(token)
    return _Active(span, scope)


def _start_scope(
    name: str,
    tags: Mapping[str, Any] | None,
    conversation_id: str | None,
    token_limit: int | None = None,
    cost_limit: Decimal | None = None,
    attributed: Mapping[str, Any] | None = None,
) -> _Active:
    """A span that is the root of a new tracking scope nested in the current one. `attributed`: the attribution
    (attribution.call_attributes) the scope span and every model call inside it carry."""
    parent = current_scope()
    scope = Scope(
        name,
        parent,
        conversation_id or (parent.conversation_id if parent else None),
        token_limit=token_limit,
        cost_limit=cost_limit,
    )
    attributes: dict[str, Any] = {**attributed} if attributed else {}
    attributes[semconv.MLTRACK_SCOPE_NAME] = name
    if tags:
        attributes[semconv.MLTRACK_TAGS] = _tag_list(tags)
    if scope.conversation_id:
        attributes[gen_ai.GEN_AI_CONVERSATION_ID] = scope.conversation_id
    active = _start(name, scope, attributes=attributes)
    active.attributes = attributed
    scope.span_id = active.span.get_span_context().span_id
    return active


@contextmanager
def track_llm_context(
    name: str,
    model: str | None = None,
    provider: str | None = None,
    tags: Mapping[str, Any] | None = None,
    conversation_id: str | None = None,
    *,
    user: str | None = None,
    token_limit: int | None = None,
    cost_limit: Decimal | float | str | None = None,
) -> Iterator[LLMTracker]:
    """A named scope: every model call inside it (instrumented or logged) is a child span, and the scope keeps its
    own running totals (``tracker.totals``). Contexts nest; totals roll up to every enclosing context.

    ``user`` and ``tags`` attribute every model call inside: ``user.id`` and ``mltrack.tag.<key>`` on its span, and
    running totals per user and tag value (``mltrack_otel.totals(user=...)``), as ``mltrack_otel.attributes`` does.
    Tag keys are lower-case identifiers and values str, int, float or bool (ValueError otherwise).

    ``token_limit`` / ``cost_limit`` (USD): hard budgets of this scope alone, on top of the configured ones. A call
    in it whose worst case would not fit raises BudgetExceededError before it is sent."""
    attributed = attribution.call_attributes(user, None, tags)
    active = _start_scope(name, tags, conversation_id, *budget_limits(token_limit, cost_limit), attributed)
    try:
        with active.current():
            yield LLMTracker(model=model, provider=provider, _scope=active.scope)
    except BaseException as exc:
        active.fail(exc)
        raise
    finally:
        active.span.end()


class LLMTracker:
    """Logs model calls by hand (``log_prompt_response``) or wraps a function (``track_llm_call``)."""

    def __init__(self, model: str | None = None, provider: str | None = None, *, _scope: Scope | None = None):
        self.model = model
        self.provider = provider
        self._scope = _scope if _scope is not None else Scope("LLMTracker")
        self._standalone = _scope is None

    @property
    def totals(self) -> Totals:
        """Tokens and USD counted so far by this tracker's scope."""
        return self._scope.totals

    @property
    def conversation_id(self) -> str | None:
        return self._scope.conversation_id

    def _call_scope(self) -> Scope:
        """The scope a call is filed in: a context's tracker files in its context; a standalone tracker keeps its
        own totals and also counts in whatever context is current at the call (in this thread or task)."""
        if not self._standalone:
            return self._scope
        context = current_scope()
        return self._scope if context is None else _Within(self._scope, context)

    def log_prompt_response(
        self,
        prompt: Any,
        response: Any,
        model: str | None = None,
        provider: str | None = None,
        token_usage: Any = None,
        parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        duration_seconds: float | None = None,
    ) -> None:
        """Record one model call as a span. Never raises: bad input is logged once and counted."""
        guard.guarded(
            "tracking.log_prompt_response",
            self._log_call,
            prompt,
            response,
            model,
            provider,
            token_usage,
            parameters,
            metadata,
            duration_seconds,
        )

    def _log_call(
        self,
        prompt: Any,
        response: Any,
        model: str | None,
        provider: str | None,
        token_usage: Any,
        parameters: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        duration_seconds: float | None,
    ) -> None:
        settings = config.current()
        if not settings.llm_tracking_enabled:
            return
        name, attributes = self._call_span(settings, model, provider)
        attributes.update(self._call_details(settings, attributes, prompt, response, token_usage, parameters, metadata))
        if duration_seconds is not None:
            attributes[semconv.LLM_LATENCY] = float(duration_seconds)
        end = time.time_ns()
        start = end - int(duration_seconds * 1e9) if duration_seconds else end
        token = CURRENT_SCOPE.set(self._call_scope())
        try:
            _tracer().start_span(name, kind=SpanKind.CLIENT, attributes=attributes, start_time=start).end(end_time=end)
        finally:
            CURRENT_SCOPE.reset(token)

    def _call_span(self, settings: config.Settings, model: str | None, provider: str | None) -> tuple[str, dict]:
        """Name and identifying attributes of a model-call span."""
        provider = provider or self.provider
        model = model or self.model or settings.default_model(provider)
        if isinstance(model, str):
            model = content.utf8(model)
        extra = call_context.current()  # attribution and prompt identity around the call, as instrumented calls carry
        attributes: dict[str, Any] = {**extra} if extra else {}
        attributes[gen_ai.GEN_AI_OPERATION_NAME] = "chat"
        if provider:
            attributes[gen_ai.GEN_AI_PROVIDER_NAME] = provider
        if model:
            attributes[gen_ai.GEN_AI_REQUEST_MODEL] = model
        conversation_id = self._call_scope().conversation_id
        if conversation_id:
            attributes[gen_ai.GEN_AI_CONVERSATION_ID] = conversation_id
        return (f"chat {model}" if model else "chat"), attributes

    @staticmethod
    def _call_details(
        settings: config.Settings,
        identity: Mapping[str, Any],
        prompt: Any,
        response: Any,
        token_usage: Any,
        parameters: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Parameters, metadata, usage and content of a model call, per settings."""
        details = _parameter_attributes(parameters)
        if metadata:
            details.update({f"mltrack.metadata.{key}": _attribute_value(value) for key, value in metadata.items()})
        if settings.llm_track_token_usage and token_usage is not None:
            details.update(usage_attributes(token_usage, identity.get(gen_ai.GEN_AI_PROVIDER_NAME)))
        details.update(content_attributes(settings, prompt, response))
        return details

    def track_llm_call(
        self,
        model: str | None = None,
        provider: str | None = None,
        extract_prompt: Callable[[tuple, dict], Any] | None = None,
        extract_response: Callable[[Any], Any] | None = None,
        extract_token_usage: Callable[[Any], Any] | None = None,
    ) -> Callable[[F], F]:
        """Decorate a sync or async function that calls a model; its arguments and result are turned into a
        model-call span by the extractors. The function's own result and exceptions pass through untouched.

        The span is current while the function runs, so an instrumented SDK call inside it is its child and the
        call is counted once (on the innermost span that carries usage)."""

        def begin() -> _Active | None:
            settings = config.current()
            if not settings.llm_tracking_enabled:
                return None
            name, attributes = self._call_span(settings, model, provider)
            return _start(name, self._call_scope(), SpanKind.CLIENT, attributes)

        def end(active: _Active, args: tuple, kwargs: dict, result: Any, started: float) -> None:
            settings = config.current()
            prompt = extract_prompt(args, kwargs) if extract_prompt else _default_prompt(args, kwargs)
            response = extract_response(result) if extract_response else result
            usage = extract_token_usage(result) if extract_token_usage else getattr(result, "usage", None)
            details = self._call_details(settings, active.span.attributes, prompt, response, usage, None, None)
            details[semconv.LLM_LATENCY] = time.perf_counter() - started
            active.span.set_attributes(details)

        def reserve(args: tuple, kwargs: dict) -> Reservation | None:
            """The call's worst case, reserved before the function runs (raises only BudgetExceededError)."""
            try:
                settings = config.current()
                if not settings.llm_tracking_enabled:
                    return None
                scope = self._call_scope()
                if not LEDGER.budgets_apply(scope, scope.conversation_id):
                    return None
                prompt = extract_prompt(args, kwargs) if extract_prompt else _default_prompt(args, kwargs)
                body: dict[str, Any] = {k: kwargs[k] for k in _OUTPUT_CAPS if k in kwargs}
                body["messages"] = _as_messages(prompt) if prompt is not None else []
                name = provider or self.provider
                return budget.reserve(body, model or self.model or settings.default_model(name), name, "chat", scope)
            except BudgetExceededError:
                raise
            except Exception as exc:
                guard.record_error("tracking.budget", exc)
                return None

        def fail(active: _Active | None, exc: BaseException, reservation: Reservation | None) -> None:
            if active is not None:
                guard.guarded("tracking.track_llm_call", active.fail, exc)
                active.span.end()
            if reservation is not None:
                reservation.release()

        def finish(
            active: _Active | None,
            args: tuple,
            kwargs: dict,
            result: Any,
            started: float,
            reservation: Reservation | None,
        ) -> None:
            if active is not None:
                guard.guarded("tracking.track_llm_call", end, active, args, kwargs, result, started)
                active.span.end()  # the processor counts the call in here: the hold goes after it
            if reservation is not None:
                reservation.release()

        def decorate(fn: F) -> F:
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    reservation = reserve(args, kwargs)
                    active = guard.guarded("tracking.track_llm_call", begin)
                    started = time.perf_counter()
                    held = budget.hold(reservation) if reservation is not None else None
                    try:
                        if active is None:
                            result = await fn(*args, **kwargs)
                        else:
                            with active.current():
                                result = await fn(*args, **kwargs)
                    except BaseException as exc:
                        fail(active, exc, reservation)
                        raise
                    finally:
                        if held is not None:
                            budget.unhold(held)
                    finish(active, args, kwargs, result, started, reservation)
                    return result

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                reservation = reserve(args, kwargs)
                active = guard.guarded("tracking.track_llm_call", begin)
                started = time.perf_counter()
                held = budget.hold(reservation) if reservation is not None else None
                try:
                    if active is None:
                        result = fn(*args, **kwargs)
                    else:
                        with active.current():
                            result = fn(*args, **kwargs)
                except BaseException as exc:
                    fail(active, exc, reservation)
                    raise
                finally:
                    if held is not None:
                        budget.unhold(held)
                finish(active, args, kwargs, result, started, reservation)
                return result

            return wrapper  # type: ignore[return-value]

        return decorate


def track(name: str | Callable[..., Any] | None = None, tags: Mapping[str, Any] | None = None) -> Any:
    """Trace a sync, async, generator or async-generator function as a scope span with
    ``execution_time_seconds`` and any exception. Usable as ``@track`` or ``@track(name=..., tags=...)``; the tags
    attribute every model call inside (``mltrack.tag.<key>``), as in ``track_llm_context``.

    A generator's span is current only while the generator itself runs, not while its caller holds an item."""
    if callable(name):
        return track()(name)

    attributed = attribution.call_attributes(tags=tags)  # validated once, at decoration

    def decorate(fn: F) -> F:
        span_name = name or fn.__qualname__

        def finish(active: _Active, started: float, error: BaseException | None = None) -> None:
            active.span.set_attribute(semconv.EXECUTION_TIME_SECONDS, time.perf_counter() - started)
            if error is not None and not isinstance(error, (GeneratorExit, StopAsyncIteration)):
                active.fail(error)
            active.span.end()

        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
                active, started = _start_scope(span_name, tags, None, attributed=attributed), time.perf_counter()
                inner = fn(*args, **kwargs)
                error: BaseException | None = None
                try:
                    with active.current():
                        item = await inner.__anext__()
                    while True:
                        try:
                            sent = yield item
                        except GeneratorExit:
                            with active.current():
                                await inner.aclose()
                            raise
                        except BaseException as exc:  # thrown in by the caller: pass it to the generator
                            with active.current():
                                item = await inner.athrow(exc)
                        else:
                            with active.current():
                                item = await inner.asend(sent)
                except StopAsyncIteration:
                    return
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finish(active, started, error)

            return agen_wrapper  # type: ignore[return-value]

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                active, started = _start_scope(span_name, tags, None, attributed=attributed), time.perf_counter()
                inner = fn(*args, **kwargs)
                error: BaseException | None = None
                try:
                    with active.current():
                        item = next(inner)
                    while True:
                        try:
                            sent = yield item
                        except GeneratorExit:
                            with active.current():
                                inner.close()
                            raise
                        except BaseException as exc:  # thrown in by the caller: pass it to the generator
                            with active.current():
                                item = inner.throw(exc)
                        else:
                            with active.current():
                                item = inner.send(sent)
                except StopIteration as stop:
                    return stop.value
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finish(active, started, error)

            return gen_wrapper  # type: ignore[return-value]

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                active, started = _start_scope(span_name, tags, None, attributed=attributed), time.perf_counter()
                error: BaseException | None = None
                try:
                    with active.current():
                        return await fn(*args, **kwargs)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finish(active, started, error)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            active, started = _start_scope(span_name, tags, None, attributed=attributed), time.perf_counter()
            error: BaseException | None = None
            try:
                with active.current():
                    return fn(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                finish(active, started, error)

        return wrapper  # type: ignore[return-value]

    return decorate


# -- helpers -------------------------------------------------------------------------------------------------

_PARAMETERS = {
    "temperature": gen_ai.GEN_AI_REQUEST_TEMPERATURE,
    "max_tokens": gen_ai.GEN_AI_REQUEST_MAX_TOKENS,
    "top_p": gen_ai.GEN_AI_REQUEST_TOP_P,
    "top_k": gen_ai.GEN_AI_REQUEST_TOP_K,
    "frequency_penalty": gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY,
    "presence_penalty": gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY,
    "seed": gen_ai.GEN_AI_REQUEST_SEED,
    "stop": gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES,
    "n": gen_ai.GEN_AI_REQUEST_CHOICE_COUNT,
    "max_completion_tokens": gen_ai.GEN_AI_REQUEST_MAX_TOKENS,
}


def _parameter_attributes(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Known request parameters only: callers pass their whole kwargs, which may hold api keys and headers."""
    out: dict[str, Any] = {}
    for key, value in (parameters or {}).items():
        name = _PARAMETERS.get(key)
        if name is None:
            continue
        value = _attribute_value(value)
        if name == gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES and isinstance(value, str):
            value = [value]
        out[name] = value
    return out


def _attribute_value(value: Any) -> Any:
    """A value OpenTelemetry accepts as an attribute (primitives or homogeneous lists), else its str()."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return str(value)[:1024]


# Keyword arguments of a decorated call that bound its output (see estimate.max_output_tokens), and its choices.
_OUTPUT_CAPS = (*estimate.MAX_OUTPUT_FIELDS, "n")


def _default_prompt(args: tuple, kwargs: dict) -> Any:
    for key in ("messages", "prompt", "input", "query"):
        if key in kwargs:
            return kwargs[key]
    return args[0] if args else None


# -- the seed's extractors (signatures: prompt(args, kwargs), response(result), tokens(result)) ----------------


def openai_prompt_extractor(args: tuple, kwargs: dict) -> Any:
    return kwargs.get("messages", kwargs.get("prompt", args[0] if args else None))


def openai_response_extractor(response: Any) -> Any:
    try:
        return response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return getattr(response, "output_text", response)


def openai_token_extractor(response: Any) -> dict[str, int] | None:
    usage = getattr(response, "usage", None)
    if usage is None:
        return None
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if prompt is None:  # Responses API names
        prompt, completion = getattr(usage, "input_tokens", 0), getattr(usage, "output_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": (prompt or 0) + (completion or 0),
    }


def anthropic_prompt_extractor(args: tuple, kwargs: dict) -> Any:
    messages = list(kwargs.get("messages", args[0] if args else []))
    system = kwargs.get("system")
    if isinstance(system, str):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def anthropic_response_extractor(response: Any) -> Any:
    blocks = getattr(response, "content", None) or []
    return "".join(getattr(block, "text", "") for block in blocks)


def anthropic_token_extractor(response: Any) -> Any:
    # The usage object itself: usage_attributes() normalises Anthropic's cache fields into the input count.
    return getattr(response, "usage", None)


# -- content (prompt as a string or a list of {"role", "content"} messages) -----------------------------------


def _as_messages(prompt: Any) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, (list, tuple)):
        return [m if isinstance(m, Mapping) else {"role": "user", "content": m} for m in prompt]
    return [{"role": "user", "content": prompt}]


def content_attributes(settings: config.Settings, prompt: Any, response: Any) -> dict[str, Any]:
    """gen_ai.input/output.messages for a logged call, per capture settings and within the byte budget."""
    out: dict[str, Any] = {}
    truncated = False
    if settings.capture_prompts and prompt is not None:
        messages = [_message(m.get("role", "user"), m.get("content")) for m in _as_messages(prompt)]
        out[gen_ai.GEN_AI_INPUT_MESSAGES], cut = content.encode(messages, settings.content_max_bytes, settings.redactor)
        truncated |= cut
    if settings.capture_responses and response is not None:
        messages = [_message("assistant", response)]
        out[gen_ai.GEN_AI_OUTPUT_MESSAGES], cut = content.encode(
            messages, settings.content_max_bytes, settings.redactor
        )
        truncated |= cut
    if truncated:
        out[semconv.MLTRACK_CONTENT_TRUNCATED] = True
    return out


def _message(role: Any, text: Any) -> dict[str, Any]:
    return {"role": str(role), "parts": [content.text_part(text)]}
