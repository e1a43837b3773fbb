"""One instrumentation for the Stainless-generated SDKs (openai, anthropic), at their single choke point.

Every API call of these SDKs goes through ``SyncAPIClient.request`` / ``AsyncAPIClient.request(cast_to, options,
*, stream, stream_cls)``. We wrap those two methods; a provider module only declares which routes are model
calls (:class:`Endpoint`: request attributes, input content, response reading, stream recorder). A stream stays
the SDK's own object, of its exact class (some SDK versions' isinstance checks reject subclasses): we wrap the
iterator it reads from, and hook its HTTP response's close, so the span ends exactly once on exhaustion, close,
context exit, error or garbage collection.
"""

from __future__ import annotations

import importlib
import inspect
import json
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

from opentelemetry import trace

from .. import config, guard
from ..errors import BudgetExceededError
from . import _base, mlflow_autolog
from ._base import Call, StreamRecorder
from ._core import Endpoint, Request, finish_safely, invoke, invoke_async, new_recorder, recorded, recorded_async, start

RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
_RECORDED = "_mltrack_recorded"  # marks a stream whose iterator we already wrap


class Sdk:
    """A Stainless SDK as a provider module declares it."""

    def __init__(
        self,
        module: str,
        routes: dict[str, Endpoint],
        provider_name: Callable[[Any, str | None], str],
        instruments: tuple[str, ...],
        own_spans: Callable[[Any, Any, dict[str, Any]], bool] | None = None,
    ) -> None:
        self.module = module
        self.routes = routes
        self.provider_name = provider_name  # (client, host) -> gen_ai.provider.name
        self.instruments = instruments
        # (client, request options, our start attributes) -> whether the SDK itself records a span for the call.
        # For an SDK that traces itself: it switches that span off for the call unless the user asked for it
        # (one span per call); a span it keeps nests under ours, made current around the call, so the cost
        # pipeline counts the call once, not twice.
        self.own_spans = own_spans


class Patch:
    """The wrappers of one SDK's two request methods, and how to take them off again exactly."""

    def __init__(self, sdk: Sdk) -> None:
        self.sdk = sdk
        self.tracer: trace.Tracer = trace.get_tracer(__name__)
        self.active = False
        self.originals: dict[type, Any] = {}
        self.raw_types: tuple[type, ...] = ()
        self.sentinels: tuple[type, ...] = ()  # NotGiven / Omit: parameters the caller left out
        # Client classes whose own `request` we reached into: (class, the wrapper whose __wrapped__ we set, or
        # None for a bare copy we took away, the original function, our wrapper)
        self.shadows: list[tuple[type, Any, Any, Any]] = []

    # -- install / remove ------------------------------------------------------------------------------------

    def apply(self, tracer_provider: Any = None) -> None:
        self.tracer = _base.get_tracer(f"mltrack_otel.instrumentation.{self.sdk.module}", tracer_provider)
        self.active = True
        if self.originals:  # already wrapped (or still under someone else's wrapper)
            for cls, original in self.originals.items():
                self._reach_client_classes(cls, original)  # a wrapper someone put on a client class since
            return
        import wrapt

        base = importlib.import_module(f"{self.sdk.module}._base_client")
        self.raw_types = _raw_response_types(self.sdk.module)
        types = importlib.import_module(f"{self.sdk.module}._types")
        self.sentinels = tuple(t for t in (getattr(types, "NotGiven", None), getattr(types, "Omit", None)) if t)
        for name, wrapper in (("SyncAPIClient", self._sync_request), ("AsyncAPIClient", self._async_request)):
            cls = getattr(base, name)
            original = cls.__dict__["request"]
            wrapt.wrap_function_wrapper(cls, "request", wrapper)
            self.originals[cls] = original
            self._reach_client_classes(cls, original)

    def _reach_client_classes(self, base: type, original: Any) -> None:
        """Make the calls of every client class reach our wrapper on `base`.

        Other instrumentations wrap ``OpenAI.request`` rather than the base class's (OpenInference does). Done
        before us, their wrapper holds the base's original function and calls it directly, so calls of that class
        would never reach ours. We go in beneath theirs (its ``__wrapped__`` becomes our wrapper): any order then
        nests the same way, their span outside and ours inside, counted once. A bare copy of the original that
        their uninstrument left on a class is taken away (the class inherits the same function, wrapped).
        """
        ours = base.__dict__["request"]
        for cls in _subclasses(base):
            own = cls.__dict__.get("request")
            if own is None or own is ours:
                continue
            if own is original:
                delattr(cls, "request")
                self.shadows.append((cls, None, original, ours))
            elif self._is_ours(own):  # a copy of our old wrapper, put back by their uninstrument: ours is on base
                delattr(cls, "request")
            elif _link_above(own, self._is_ours) is None:  # (a chain that already goes through ours is left)
                link = _link_above(own, lambda function: function is original)
                if link is not None:
                    link.__wrapped__ = ours
                    self.shadows.append((cls, link, original, ours))

    def remove(self) -> None:
        self.active = False  # if someone stacked a wrapper on ours, ours stays under it and passes through
        for cls, link, original, ours in reversed(self.shadows):
            if link is None:
                if "request" not in cls.__dict__:
                    cls.request = original  # the copy we took away
            elif link.__wrapped__ is ours:
                link.__wrapped__ = original
        self.shadows.clear()
        for cls, original in list(self.originals.items()):
            if getattr(cls.__dict__.get("request"), "__wrapped__", None) is original:
                cls.request = original  # the very function object that was there before
                del self.originals[cls]
            # Wrapped after us, another instrumentation holds ours under its own (or put a copy of ours back
            # when it was removed): take ours out of the path, so the calls go straight to the original.
            for sub in _subclasses(cls):
                own = sub.__dict__.get("request")
                if own is None:
                    continue
                if self._is_ours(own) and own.__wrapped__ is original:
                    delattr(sub, "request")
                    continue
                link = _link_above(own, self._is_ours)
                if link is not None:
                    link.__wrapped__ = original

    def _is_ours(self, function: Any) -> bool:
        wrapper = getattr(function, "_self_wrapper", None)  # a wrapt wrapper (bound or not) of our function
        return wrapper is not None and (wrapper == self._sync_request or wrapper == self._async_request)

    # -- the wrappers ----------------------------------------------------------------------------------------

    def _sync_request(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        begun = self._begin(instance, args, kwargs)
        if begun is None:
            return wrapped(*args, **kwargs)
        call, request, recorder = begun
        result = invoke(call, wrapped, args, kwargs)
        try:
            self._on_result(call, request, recorder, result, False)
        except Exception as exc:
            finish_safely(call, exc)
        return result

    async def _async_request(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        begun = self._begin(instance, args, kwargs)
        if begun is None:
            return await wrapped(*args, **kwargs)
        call, request, recorder = begun
        result = await invoke_async(call, wrapped, args, kwargs)
        try:
            self._on_result(call, request, recorder, result, True)
        except Exception as exc:
            finish_safely(call, exc)
        return result

    def _begin(self, instance: Any, args: tuple, kwargs: dict) -> tuple[Call, Request, StreamRecorder | None] | None:
        """Start the call's span, or None to pass the request through untouched.

        Raises only BudgetExceededError (before anything is sent); every other failure is recorded and the
        request goes out uninstrumented.
        """
        if not self.active:
            return None
        try:
            options = args[1] if len(args) > 1 else kwargs["options"]
            url = options.url
            endpoint = self.sdk.routes.get(url) or self.sdk.routes.get(url.partition("?")[0])
            if endpoint is None or options.method.lower() != "post":
                return None
            settings = _base.tracking_settings()
            if settings is None:
                return None
        except Exception as exc:
            guard.record_error("instrumentation.begin", exc)
            return None
        try:
            return self._start(instance, options, kwargs, endpoint, settings)
        except BudgetExceededError:
            raise
        except Exception as exc:
            guard.record_error("instrumentation.start", exc)
            return None

    def _start(
        self, instance: Any, options: Any, kwargs: dict, endpoint: Endpoint, settings: config.Settings
    ) -> tuple[Call, Request, StreamRecorder | None]:
        body = options.json_data if isinstance(options.json_data, dict) else {}
        extra = getattr(options, "extra_json", None)
        if extra and isinstance(extra, dict):  # extra_body parameters are sent too: describe them as well
            body = {**body, **extra}
        sentinels = self.sentinels
        for value in body.values():  # helpers such as messages.stream send bodies with NotGiven/Omit left in
            if type(value) in sentinels:
                body = {k: v for k, v in body.items() if type(v) not in sentinels}
                break
        address, port, provider = self._server(instance)
        stream = bool(kwargs.get("stream"))
        request = Request(endpoint, body, provider, address, port, stream)
        own_spans = self.sdk.own_spans
        nest = False
        span_name = getattr(options, "span_name", None)

        def prepare(attributes: dict[str, Any]) -> None:
            nonlocal nest
            if own_spans is not None:
                nest = guard.guarded(
                    "instrumentation.own_spans", own_spans, instance, options, attributes, default=False
                )

        headers = options.headers
        adopted = None
        if isinstance(headers, dict) and mlflow_autolog.TRACEPARENT in headers:  # MLflow autolog traces it?
            adopted = guard.guarded("instrumentation.mlflow_autolog", mlflow_autolog.parent_of, headers)
        try:
            call = start(self.tracer, request, settings, prepare=prepare, parent=adopted[0] if adopted else None)
        except Exception:
            if own_spans is not None:  # no span of ours after all: the SDK's own may stand in for it
                options.span_name = span_name
            raise
        if adopted is not None:
            mlflow_autolog.remember(call.span, adopted[1])
        call.nest = bool(nest)
        if not stream:
            return call, request, None
        hide_usage = endpoint.usage_option and _wants_usage(options, body, address, settings)
        recorder = new_recorder(call, request, hide_usage)
        if recorder is not None and hide_usage:
            stream_options = body.get("stream_options") or {}
            options.json_data = {**body, "stream_options": {**stream_options, "include_usage": True}}
        return call, request, recorder

    def _server(self, client: Any) -> tuple[str | None, int | None, str]:
        """(server.address, server.port, provider name) of a client, memoised on it per base URL."""
        base_url = client.base_url
        cached = client.__dict__.get("_mltrack_server")
        if cached is not None and cached[0] is base_url:
            return cached[1]
        host = base_url.host or None
        port = base_url.port or {"https": 443, "http": 80}.get(base_url.scheme)
        server = (host, port, self.sdk.provider_name(client, host))
        client.__dict__["_mltrack_server"] = (base_url, server)
        return server

    # -- results ---------------------------------------------------------------------------------------------

    def _on_result(
        self, call: Call, request: Request, recorder: StreamRecorder | None, result: Any, is_async: bool
    ) -> None:
        endpoint = request.endpoint
        if recorder is not None:
            if isinstance(result, self.raw_types):  # the caller gets the stream from parse(), later
                _record_when_parsed(result, recorder, is_async)
            else:
                _record_stream(result, recorder, is_async)
            return
        if request.stream:  # a stream of an endpoint without a recorder: the span covers the request only
            call.finish({})
            return
        if isinstance(result, self.raw_types):  # with_raw_response / with_streaming_response
            response = result.http_response
            if hasattr(response, "_content"):
                _finish_from_body(call, endpoint, response.content)
            else:
                _attach_body_reader(response, call, endpoint, is_async)
            return
        attributes, output, usage = endpoint.response(result, call.capture_out)
        call.finish(attributes, output, usage)


def _subclasses(cls: type) -> list[type]:
    """Every class below cls, once each."""
    found: dict[type, None] = {}
    pending = list(cls.__subclasses__())
    while pending:
        sub = pending.pop()
        if sub not in found:
            found[sub] = None
            pending.extend(sub.__subclasses__())
    return list(found)


def _link_above(function: Any, is_target: Callable[[Any], bool]) -> Any:
    """The wrapt wrapper in function's chain of ``__wrapped__`` whose wrapped function is_target; None if none."""
    link = function
    for _ in range(32):  # chains of wrappers are short; a cycle must not hang the program
        if not hasattr(link, "_self_wrapper"):  # only a wrapt wrapper can be given another __wrapped__
            return None
        inner = link.__wrapped__
        if is_target(inner):
            return link
        link = inner
    return None


def _raw_response_types(module: str) -> tuple[type, ...]:
    found = []
    for submodule, name in (("_response", "BaseAPIResponse"), ("_legacy_response", "LegacyAPIResponse")):
        try:
            found.append(getattr(importlib.import_module(f"{module}.{submodule}"), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _wants_usage(options: Any, body: dict[str, Any], host: str | None, settings: config.Settings) -> bool:
    """Whether to ask an OpenAI-compatible host for the stream usage the caller did not ask for."""
    if not settings.stream_include_usage or not host or not body:
        return False
    headers = options.headers if isinstance(options.headers, dict) else {}
    if headers.get(RAW_RESPONSE_HEADER):  # the caller reads raw bytes: nothing we could hide from them
        return False
    stream_options = body.get("stream_options")
    if stream_options is not None and (not isinstance(stream_options, dict) or "include_usage" in stream_options):
        return False
    return _base.host_matches(host, settings.stream_usage_hosts)


def _finish_from_body(call: Call, endpoint: Endpoint, body: bytes) -> None:
    try:
        data = json.loads(body)
    except ValueError:
        call.finish({})
        return
    attributes, output, usage = endpoint.response(data, call.capture_out)
    call.finish(attributes, output, usage)


def _hook_method(
    obj: Any,
    name: str,
    *,
    before: Callable[[], None] | None = None,
    after: Callable[[Any], Any] | None = None,
    is_async: bool | None = None,
) -> Callable[[], None]:
    """Shadow obj.name with a hook: `before()`, the original method, then `after(result)`; return an unhook.

    The hook holds the bound original, so obj -> hook -> obj is a cycle until unhook() is called: callers
    unhook as soon as the hook has done its job, so the common path leaves nothing for the garbage collector.
    (Holding obj weakly instead breaks when obj's own finalizer, mid-collection, calls the method.)
    """
    original = getattr(obj, name)
    if is_async is None:  # only when the caller cannot know: the inspection is dear on a per-stream path
        is_async = inspect.iscoroutinefunction(original)

    if is_async:

        async def hook(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                guard.guarded("instrumentation.hook", before)
            result = await original(*args, **kwargs)
            return after(result) if after is not None else result

    else:

        def hook(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            if before is not None:
                guard.guarded("instrumentation.hook", before)
            result = original(*args, **kwargs)
            return after(result) if after is not None else result

    setattr(obj, name, hook)
    target = weakref.ref(obj)

    def unhook() -> None:
        alive = target()
        if alive is not None and alive.__dict__.get(name) is hook:
            del alive.__dict__[name]

    return unhook


def _attach_body_reader(response: Any, call: Call, endpoint: Endpoint, is_async: bool) -> None:
    """with_streaming_response on a plain call: finish when the caller reads the body (or drops it unread)."""

    def finish(data: bytes) -> bytes:
        unhook()
        guard.guarded("instrumentation.response", _finish_from_body, call, endpoint, data)
        return data

    unhook = _hook_method(response, "aread" if is_async else "read", after=finish, is_async=is_async)
    guard.finalize_deferred(response, call.finish, {})  # never read: the span ends, off the collector


def _record_stream(stream: Any, recorder: StreamRecorder, is_async: bool) -> None:
    """Record what the caller iterates from this SDK stream, and end the span when its response closes."""
    state = stream.__dict__
    if state.get(_RECORDED):
        return
    items = state.get("_iterator")
    if items is None:  # anthropic 2.x makes it lazily (a cached_property): make it now, then replace it
        items = stream._iterator
    state["_iterator"] = recorded_async(items, recorder) if is_async else recorded(items, recorder)
    state[_RECORDED] = True
    recorder.release = _hook_method(
        stream.response, "aclose" if is_async else "close", before=recorder.on_close, is_async=is_async
    )
    # No finalizer to register: the recorder's own __del__ ends an abandoned stream's span (see StreamRecorder).


def _record_when_parsed(raw: Any, recorder: StreamRecorder, is_async: bool) -> None:
    """with_raw_response / with_streaming_response on a stream: record the stream that parse() returns.

    A caller who reads the raw bytes instead and closes the response (leaving the with block) ends the call then,
    as a stream stopped before its usage arrived; one who drops it unread, when the recorder is collected.
    """
    unhooks: list[Callable[[], None]] = []

    def attach(result: Any) -> Any:
        for unhook in unhooks:
            unhook()
        if hasattr(result, "response") and hasattr(result, "__stream__"):
            guard.guarded("instrumentation.stream", _record_stream, result, recorder, is_async)
        return result

    def closed() -> None:  # closed without parse(): nothing of ours read the stream
        for unhook in unhooks:
            unhook()
        recorder.on_close()

    unhooks.append(_hook_method(raw, "parse", after=attach))
    response = getattr(raw, "http_response", None)
    if response is not None:
        unhooks.append(_hook_method(response, "aclose" if is_async else "close", before=closed, is_async=is_async))


# --- the instrumentor class both SDK modules subclass ----------------------------------------------------------


class StainlessInstrumentor(_base.PatchInstrumentor):
    """OTel-style instrumentor (BaseInstrumentor when available) for one Stainless SDK, declared by ``sdk``.

    ``instrument()`` wraps the SDK at once if it is imported, else the moment it is imported.
    """

    sdk: ClassVar[Sdk]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "sdk" in cls.__dict__:
            cls.module = cls.sdk.module
            cls.dependencies = cls.sdk.instruments
            cls.tracer_name = f"mltrack_otel.instrumentation.{cls.sdk.module}"

    @classmethod
    def patch_factory(cls) -> Patch:  # type: ignore[override]
        return Patch(cls.sdk)
