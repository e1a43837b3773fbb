"""The one method-wrapping core every SDK instrumentor is declared on.

A provider module declares *what* its calls are: which SDK methods make model calls (:class:`Method`, whose route
turns one call's arguments into a :class:`Request`, or None to let it pass), and for each kind of call an
:class:`Endpoint` (request reader, response reader, stream-chunk reader). This module does the rest, the same way
for every provider: begin (tracking off or suppressed: pass through), budget (the worst case reserved before
anything is sent), start (attributes, content, the span), the call itself (the reservation held, errors recorded),
and the result: a response read, or a stream recorded item by item and ended exactly once on exhaustion, close,
context exit, error or garbage collection, its usage estimated if the provider's never arrived.

The Stainless SDKs (openai, anthropic, groq) are one user of it (``_stainless``): their single choke point is
``request``, routed by URL.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace

from .. import budget, config, content, guard
from ..errors import BudgetExceededError
from . import _base
from ._base import Call, Inputs, StreamRecorder


class Endpoint:
    """What one kind of model call is, declared by a provider module."""

    __slots__ = ("inputs", "operation", "recorder", "request", "response", "usage_option", "usage_shape")

    def __init__(
        self,
        operation: str,
        request: Callable[[Mapping[str, Any], dict[str, Any]], None],
        response: Callable[[Any, bool], tuple[dict[str, Any], list[Any] | None, Any]],
        inputs: Callable[[Mapping[str, Any]], Inputs] | None = None,
        recorder: Callable[[Call, bool], StreamRecorder] | None = None,
        usage_option: bool = False,
        usage_shape: str = "openai.chat",
    ) -> None:
        self.operation = operation  # gen_ai.operation.name
        self.request = request  # (body, attributes): add gen_ai.request.* attributes
        self.response = response  # (result, capture): (attributes, output messages, usage)
        self.inputs = inputs  # body -> normalised input content (only called when capture is on)
        self.recorder = recorder  # (call, hide_usage) -> a recorder for a streamed response
        self.usage_option = usage_option  # accepts stream_options.include_usage (OpenAI-compatible streams)
        self.usage_shape = usage_shape  # how to read the usage the response reader returns (usage.SHAPES)


class Request(NamedTuple):
    """One intercepted call, as a route describes it."""

    endpoint: Endpoint
    body: Mapping[str, Any]  # the request in the provider's wire vocabulary, with "model" when known
    provider: str  # gen_ai.provider.name
    address: str | None = None
    port: int | None = None
    stream: bool = False  # the call returns a stream
    nest: bool = False  # the SDK records a span of its own for the call: ours is made current so it nests under it


class Method(NamedTuple):
    """One SDK method that makes model calls."""

    module: str  # the module that defines the class, e.g. "google.genai.models"
    name: str  # "Class.method", as wrapt names it
    route: Callable[[Any, tuple, dict], Request | None]  # (instance, args, kwargs) -> the call, or None: pass
    # For a stream inside the result (boto3's {"stream": EventStream}): (result, wrap) -> the result to return,
    # where wrap(stream) gives the recording stream. None: the result itself is the stream.
    stream_result: Callable[[Any, Callable[[Any], Any]], Any] | None = None


# --- begin -> budget -> start -> call -> result, for every instrumentor -------------------------------------------


def start(
    tracer: trace.Tracer,
    request: Request,
    settings: config.Settings,
    *,
    prepare: Callable[[dict[str, Any]], None] | None = None,
    parent: Any = None,
) -> Call:
    """Reserve the call's budget and start its span. Raises BudgetExceededError before anything is sent; any other
    exception means the call goes out untracked (the reservation is given back). `prepare(attributes)` runs just
    before the span starts; `parent`: a context to start it in (MLflow autolog's span) instead of the current one."""
    endpoint, body = request.endpoint, request.body
    attributes = _base.base_attributes(endpoint.operation, request.provider, request.address, request.port)
    model = body.get("model")
    model = content.utf8(model) if isinstance(model, str) and model else None
    if model is None:
        model = settings.default_model(request.provider)
    if model:
        attributes[_base.gen_ai.GEN_AI_REQUEST_MODEL] = model
    reservation = _base.reserve_budget(
        "instrumentation.budget",
        body,
        model,
        request.provider,
        endpoint.operation,
        request.address,
        request.port,
    )
    try:
        endpoint.request(body, attributes)
        inputs = endpoint.inputs(body) if endpoint.inputs is not None and settings.capture_prompts else None
        if prepare is not None:
            prepare(attributes)
        token = otel_context.attach(parent) if parent is not None else None
        try:
            call = Call(tracer, endpoint.operation, model, attributes, settings, inputs, endpoint.usage_shape)
        finally:
            if token is not None:
                otel_context.detach(token)
    except BaseException:
        if reservation is not None:
            reservation.release()
        raise
    call.reservation = reservation
    return call


def begin(
    tracer: trace.Tracer, describe: Callable[[config.Settings], Request | None], where: str = "instrumentation"
) -> tuple[Call, Request] | None:
    """Start a call's span, or None to let the call pass untouched: tracking off or suppressed, not a model call
    (`describe` returns None), or a failure of ours (recorded under `where`). Raises only BudgetExceededError,
    before anything is sent."""
    try:
        settings = _base.tracking_settings()
        request = describe(settings) if settings is not None else None
        if request is None:
            return None
    except Exception as exc:
        guard.record_error(f"{where}.begin", exc)
        return None
    try:
        call = start(tracer, request, settings)
    except BudgetExceededError:
        raise
    except Exception as exc:
        guard.record_error(f"{where}.start", exc)
        return None
    call.nest = request.nest
    return call, request


def new_recorder(call: Call, request: Request, hide_usage: bool = False) -> StreamRecorder | None:
    """The stream recorder of a streamed call (None: its endpoint records no streams; the span covers the request)."""
    if request.endpoint.recorder is None:
        return None
    try:
        recorder = request.endpoint.recorder(call, hide_usage)
        recorder.request = (request.body, call.model)  # for an input estimate, if usage never arrives
    except Exception:
        call.finish({})
        raise
    return recorder


def invoke(call: Call, wrapped: Any, args: tuple, kwargs: dict) -> Any:
    """Make the call with its budget held (and its span current if it must nest a span the SDK records)."""
    token = otel_context.attach(trace.set_span_in_context(call.span)) if call.nest else None
    held = budget.hold(call.reservation) if call.reservation is not None else None
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        guard.guarded("instrumentation.error", call.fail, exc)
        raise
    finally:
        if held is not None:
            budget.unhold(held)
        if token is not None:
            otel_context.detach(token)


async def invoke_async(call: Call, wrapped: Any, args: tuple, kwargs: dict) -> Any:
    token = otel_context.attach(trace.set_span_in_context(call.span)) if call.nest else None
    held = budget.hold(call.reservation) if call.reservation is not None else None
    try:
        return await wrapped(*args, **kwargs)
    except BaseException as exc:
        guard.guarded("instrumentation.error", call.fail, exc)
        raise
    finally:
        if held is not None:
            budget.unhold(held)
        if token is not None:
            otel_context.detach(token)


def finish_response(call: Call, endpoint: Endpoint, result: Any) -> None:
    """End a plain call's span from its response."""
    attributes, output, usage = endpoint.response(result, call.capture_out)
    call.finish(attributes, output, usage)


def finish_safely(call: Call, exc: Exception) -> None:
    """Reading the response failed: count it, and the span still ends."""
    guard.record_error("instrumentation.response", exc)
    guard.guarded("instrumentation.response", call.finish, {})


# --- streams ------------------------------------------------------------------------------------------------------


def recorded(items: Any, recorder: StreamRecorder) -> Any:
    """Yield what `items` yields, feeding each item to the recorder; end it however the iteration ends."""
    recorder.started = True
    try:
        for item in items:
            if recorder.first_at is None:
                recorder.first_at = time.perf_counter()
            try:
                keep = recorder.feed(item)
            except Exception as exc:  # recording must never cost the caller an item (nor add one)
                guard.record_error("instrumentation.stream", exc)
                keep = guard.guarded("instrumentation.stream", recorder.salvage, item, default=True)
            if keep:
                recorder.suspended = True
                yield item
                recorder.suspended = False
    except GeneratorExit:
        guard.guarded("instrumentation.stream", recorder.end, False)
        raise
    except BaseException as exc:
        guard.guarded("instrumentation.stream", recorder.end, False, exc)
        raise
    guard.guarded("instrumentation.stream", recorder.end, True)


async def recorded_async(items: Any, recorder: StreamRecorder) -> Any:
    recorder.started = True
    try:
        async for item in items:
            if recorder.first_at is None:
                recorder.first_at = time.perf_counter()
            try:
                keep = recorder.feed(item)
            except Exception as exc:
                guard.record_error("instrumentation.stream", exc)
                keep = guard.guarded("instrumentation.stream", recorder.salvage, item, default=True)
            if keep:
                recorder.suspended = True
                yield item
                recorder.suspended = False
    except GeneratorExit:
        guard.guarded("instrumentation.stream", recorder.end, False)
        raise
    except BaseException as exc:
        guard.guarded("instrumentation.stream", recorder.end, False, exc)
        raise
    guard.guarded("instrumentation.stream", recorder.end, True)


class RecordedStream(wrapt.ObjectProxy):  # type: ignore[misc]
    """The SDK's own stream object (generator, iterator or stream class), recorded as the caller reads it.

    Everything else passes through to the SDK's object, and isinstance checks still see its class. Closing it or
    leaving its ``with`` block before the end ends the span (incomplete); dropping it unread ends it on collection
    (the recorder's finalizer).
    """

    def __init__(self, stream: Any, recorder: StreamRecorder) -> None:
        super().__init__(stream)
        self._self_recorder = recorder
        self._self_items: Any = None

    def __iter__(self) -> Any:
        if self._self_items is None:
            self._self_items = recorded(iter(self.__wrapped__), self._self_recorder)
        return self._self_items

    def __next__(self) -> Any:
        return next(self.__iter__())

    def __aiter__(self) -> Any:
        if self._self_items is None:
            self._self_items = recorded_async(self.__wrapped__.__aiter__(), self._self_recorder)
        return self._self_items

    async def __anext__(self) -> Any:
        return await self.__aiter__().__anext__()

    def __enter__(self) -> Any:
        self.__wrapped__.__enter__()
        return self

    # The SDK's stream is closed first: spans inside it (an SDK below a framework) end before ours, their parent.
    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            guard.guarded("instrumentation.stream", self._self_recorder.on_close)

    async def __aenter__(self) -> Any:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            guard.guarded("instrumentation.stream", self._self_recorder.on_close)

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            guard.guarded("instrumentation.stream", self._self_recorder.on_close)

    async def aclose(self) -> Any:
        try:
            return await self.__wrapped__.aclose()
        finally:
            guard.guarded("instrumentation.stream", self._self_recorder.on_close)


# --- wrapping SDK methods -----------------------------------------------------------------------------------------


class MethodPatch:
    """The wrappers of one SDK's declared methods, and how to take them off again exactly."""

    def __init__(self, methods: tuple[Method, ...], tracer_name: str) -> None:
        self.methods = methods
        self.tracer_name = tracer_name
        self.tracer: trace.Tracer = trace.get_tracer(tracer_name)
        self.active = False
        self.originals: list[tuple[type, str, Any]] = []  # (class, attribute, the function that was there)

    def apply(self, tracer_provider: Any = None) -> None:
        self.tracer = _base.get_tracer(self.tracer_name, tracer_provider)
        self.active = True
        if self.originals:
            return
        for method in self.methods:
            try:
                owner = importlib.import_module(method.module)
            except ImportError:  # an older SDK without this module: nothing to wrap there
                continue
            class_name, _, attribute = method.name.rpartition(".")
            cls = getattr(owner, class_name, None) if class_name else None
            if cls is None or attribute not in cls.__dict__:
                continue
            original = cls.__dict__[attribute]
            lazy = inspect.isgeneratorfunction(original) or inspect.isasyncgenfunction(original)
            if inspect.iscoroutinefunction(original):
                wrapper = self._async_wrapper(method)
            else:
                wrapper = self._wrapper(method, lazy)
            wrapt.wrap_function_wrapper(cls, attribute, wrapper)
            self.originals.append((cls, attribute, original))

    def remove(self) -> None:
        self.active = False
        for cls, attribute, original in reversed(self.originals):
            if getattr(cls.__dict__.get(attribute), "__wrapped__", None) is original:
                setattr(cls, attribute, original)  # the very function object that was there before
        # Kept: only what is still wrapped (by ours under another's wrapper). An original with a __wrapped__ of its
        # own (functools.wraps, botocore's context decorator) is not a wrapper of ours.
        self.originals = [o for o in self.originals if o[0].__dict__.get(o[1]) is not o[2]]

    def _begin(self, method: Method, instance: Any, args: tuple, kwargs: dict) -> tuple[Call, Request] | None:
        if not self.active:
            return None
        return begin(self.tracer, lambda settings: method.route(instance, args, kwargs))

    def _result(self, method: Method, call: Call, request: Request, result: Any, lazy: bool = False) -> Any:
        """The result to hand back: the response read and the span ended, or the stream wrapped to record it."""
        if not request.stream:
            try:
                finish_response(call, request.endpoint, result)
            except Exception as exc:
                finish_safely(call, exc)
            return result
        try:
            recorder = new_recorder(call, request)
            if recorder is None:
                call.finish({})
                return result
            recorder.lazy = recorder.lazy or lazy

            def wrap(stream: Any) -> Any:
                return RecordedStream(stream, recorder)

            return wrap(result) if method.stream_result is None else method.stream_result(result, wrap)
        except Exception as exc:
            finish_safely(call, exc)
            return result

    def _wrapper(self, method: Method, lazy: bool) -> Callable[..., Any]:
        """A sync method's wrapper; `lazy`: it is a generator function, whose request goes out on the first read."""

        def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
            begun = self._begin(method, instance, args, kwargs)
            if begun is None:
                return wrapped(*args, **kwargs)
            call, request = begun
            return self._result(method, call, request, invoke(call, wrapped, args, kwargs), lazy)

        return wrapper

    def _async_wrapper(self, method: Method) -> Callable[..., Any]:
        async def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
            begun = self._begin(method, instance, args, kwargs)
            if begun is None:
                return await wrapped(*args, **kwargs)
            call, request = begun
            return self._result(method, call, request, await invoke_async(call, wrapped, args, kwargs))

        return wrapper


class MethodInstrumentor(_base.PatchInstrumentor):
    """OTel-style instrumentor of an SDK declared as ``methods``; ``module`` is the import that triggers it."""

    methods: ClassVar[tuple[Method, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "tracer_name" not in cls.__dict__ and "module" in cls.__dict__:
            cls.tracer_name = f"mltrack_otel.instrumentation.{cls.module}"

    @classmethod
    def patch_factory(cls) -> MethodPatch:  # type: ignore[override]
        return MethodPatch(cls.methods, cls.tracer_name)


def argument(args: tuple, kwargs: dict, name: str, position: int, default: Any = None) -> Any:
    """A call's argument by keyword, else by position (SDK methods take most by keyword only)."""
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else default
