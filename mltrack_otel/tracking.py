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
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import SpanKind

from . import config, content, guard, semconv
from .ledger import Scope, Totals, _current_scope, current_scope
from .usage import usage_attributes
from .version import __version__

_log = logging.getLogger("mltrack_otel.tracking")
F = TypeVar("F", bound=Callable[..., Any])


def _tracer() -> trace.Tracer:
    return trace.get_tracer("mltrack_otel.tracking", __version__)


def _tag_list(tags: Mapping[str, Any] | None) -> list[str]:
    return [f"{key}={value}" for key, value in (tags or {}).items()]


@contextmanager
def _scoped_span(name: str, tags: Mapping[str, Any] | None, conversation_id: str | None) -> Iterator[Scope]:
    """A span that is the root of a new tracking scope; the scope is current before the span starts, so the
    processor sees the span as the scope's root."""
    parent = current_scope()
    scope = Scope(name, parent, conversation_id or (parent.conversation_id if parent else None))
    token = _current_scope.set(scope)
    try:
        attributes: dict[str, Any] = {semconv.MLTRACK_SCOPE_NAME: name}
        if tags:
            attributes[semconv.MLTRACK_TAGS] = _tag_list(tags)
        if scope.conversation_id:
            attributes[gen_ai.GEN_AI_CONVERSATION_ID] = scope.conversation_id
        with _tracer().start_as_current_span(name, attributes=attributes) as span:
            scope.span_id = span.get_span_context().span_id
            yield scope
    finally:
        try:
            _current_scope.reset(token)
        except ValueError:  # exited in another context (e.g. a generator closed elsewhere)
            _current_scope.set(parent)


@contextmanager
def track_llm_context(
    name: str,
    model: str | None = None,
    provider: str | None = None,
    tags: Mapping[str, Any] | None = None,
    conversation_id: str | None = None,
) -> Iterator[LLMTracker]:
    """A named scope: every model call inside it (instrumented or logged) is a child span, and the scope keeps its
    own running totals (``tracker.totals``). Contexts nest; totals roll up to every enclosing context."""
    with _scoped_span(name, tags, conversation_id) as scope:
        yield LLMTracker(model=model, provider=provider, _scope=scope)


class LLMTracker:
    """Logs model calls by hand (``log_prompt_response``) or wraps a function (``track_llm_call``)."""

    def __init__(self, model: str | None = None, provider: str | None = None, *, _scope: Scope | None = None):
        self.model = model
        self.provider = provider
        self._scope = _scope if _scope is not None else Scope("LLMTracker", parent=current_scope())

    @property
    def totals(self) -> Totals:
        """Tokens and USD counted so far by this tracker's scope."""
        return self._scope.totals

    @property
    def conversation_id(self) -> str | None:
        return self._scope.conversation_id

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
        end_time: int | None = None,
    ) -> None:
        settings = config.current()
        if not settings.llm_tracking_enabled:
            return
        provider = provider or self.provider
        model = model or self.model or settings.default_model(provider)
        attributes: dict[str, Any] = {gen_ai.GEN_AI_OPERATION_NAME: "chat"}
        if provider:
            attributes[gen_ai.GEN_AI_PROVIDER_NAME] = provider
        if model:
            attributes[gen_ai.GEN_AI_REQUEST_MODEL] = model
        if self._scope.conversation_id:
            attributes[gen_ai.GEN_AI_CONVERSATION_ID] = self._scope.conversation_id
        attributes.update(_parameter_attributes(parameters))
        if metadata:
            attributes.update({f"mltrack.metadata.{key}": _attribute_value(value) for key, value in metadata.items()})
        if settings.llm_track_token_usage and token_usage is not None:
            attributes.update(usage_attributes(token_usage, provider))
        if duration_seconds is not None:
            attributes[semconv.LLM_LATENCY] = float(duration_seconds)
        attributes.update(content_attributes(settings, prompt, response))

        token = _current_scope.set(self._scope) if current_scope() is not self._scope else None
        try:
            end = end_time or time.time_ns()
            start = end - int(duration_seconds * 1e9) if duration_seconds else end
            span = _tracer().start_span(
                f"chat {model}" if model else "chat",
                kind=SpanKind.CLIENT,
                attributes=attributes,
                start_time=start,
            )
            span.end(end_time=end)
        finally:
            if token is not None:
                _current_scope.reset(token)

    def track_llm_call(
        self,
        model: str | None = None,
        provider: str | None = None,
        extract_prompt: Callable[[tuple, dict], Any] | None = None,
        extract_response: Callable[[Any], Any] | None = None,
        extract_token_usage: Callable[[Any], Any] | None = None,
    ) -> Callable[[F], F]:
        """Decorate a sync or async function that calls a model; its arguments and result are turned into a
        model-call span by the extractors. The function's own result and exceptions pass through untouched."""

        def decorate(fn: F) -> F:
            def record(args: tuple, kwargs: dict, result: Any, started: float) -> None:
                elapsed = time.perf_counter() - started
                prompt = extract_prompt(args, kwargs) if extract_prompt else _default_prompt(args, kwargs)
                response = extract_response(result) if extract_response else result
                usage = extract_token_usage(result) if extract_token_usage else getattr(result, "usage", None)
                self._log_call(prompt, response, model, provider, usage, None, None, elapsed)

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    started = time.perf_counter()
                    result = await fn(*args, **kwargs)
                    guard.guarded("tracking.track_llm_call", record, args, kwargs, result, started)
                    return result

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                result = fn(*args, **kwargs)
                guard.guarded("tracking.track_llm_call", record, args, kwargs, result, started)
                return result

            return wrapper  # type: ignore[return-value]

        return decorate


def track(name: str | Callable[..., Any] | None = None, tags: Mapping[str, Any] | None = None) -> Any:
    """Trace a sync, async, generator or async-generator function as a scope span with
    ``execution_time_seconds`` and any exception. Usable as ``@track`` or ``@track(name=..., tags=...)``."""
    if callable(name):
        return track()(name)

    def decorate(fn: F) -> F:
        span_name = name or fn.__qualname__

        def finish(span_scope: Scope, started: float) -> None:
            span = trace.get_current_span()
            span.set_attribute(semconv.EXECUTION_TIME_SECONDS, time.perf_counter() - started)

        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _scoped_span(span_name, tags, None) as scope:
                    started = time.perf_counter()
                    try:
                        async for item in fn(*args, **kwargs):
                            yield item
                    finally:
                        finish(scope, started)

            return agen_wrapper  # type: ignore[return-value]

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _scoped_span(span_name, tags, None) as scope:
                    started = time.perf_counter()
                    try:
                        yield from fn(*args, **kwargs)
                    finally:
                        finish(scope, started)

            return gen_wrapper  # type: ignore[return-value]

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _scoped_span(span_name, tags, None) as scope:
                    started = time.perf_counter()
                    try:
                        return await fn(*args, **kwargs)
                    finally:
                        finish(scope, started)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _scoped_span(span_name, tags, None) as scope:
                started = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    finish(scope, started)

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
}


def _parameter_attributes(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (parameters or {}).items():
        name = _PARAMETERS.get(key, f"gen_ai.request.{key}")
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
