"""MCP (the ``mcp`` Python SDK 2.x): client and server spans per the MCP semantic conventions, trace context carried
client to server in the request's ``params._meta``.

What mcp 2.x (2.0 to 2.3, alike here) already does with OpenTelemetry, and what this adds:

* Client: ``JSONRPCDispatcher.send_raw_request`` opens a CLIENT span ``MCP send {method} {name}`` (mcp.method.name,
  jsonrpc.request.id, error.type from a JSON-RPC error) and injects the current context (the global propagator:
  ``traceparent``, ``tracestate``, ``baggage``) into the request's ``_meta``. It knows the raw request only: no tool
  or prompt name attribute, no resource uri, no protocol version, no transport, and it ends before the result is
  read, so a tool's ``isError`` never reaches it. We wrap ``ClientSession.send_request`` (every typed request:
  initialize, tools/call, resources/read, prompts/get, the lists, ping, completion) and open the CLIENT span there,
  named as the convention says (``{mcp.method.name} {target}``, target the tool or prompt name; a resource uri only
  as an attribute, never in the name). The SDK's span for that same request is not made: its ``otel_span`` (a
  module global of the dispatcher, patched) hands back ours, so the SDK's own code puts the request id and any
  JSON-RPC error on it and injects *its* context into ``_meta``. One CLIENT span per request; requests we do not
  trace (the server's own requests to the client, tracking off) keep the SDK's span.
* Server: ``Server.middleware`` holds the SDK's ``OpenTelemetryMiddleware`` by default (so every server, lowlevel
  or ``MCPServer``, has it): a SERVER span per inbound message, its parent extracted from ``_meta``, with
  mcp.method.name, mcp.protocol.version, jsonrpc.request.id, gen_ai.tool.name / gen_ai.prompt.name, and error.type
  (a JSON-RPC code, ``tool_error`` for ``isError``). We wrap its ``__call__``: the same span with the same error
  semantics (a superset, made by us in its place), adding mcp.resource.uri, mcp.session.id, network.transport and
  the tool's arguments and result under our content policy. The span is current while the handler runs, so a
  model call the tool makes is its child, in the caller's trace. A server that removed the middleware gets no
  server span from us either.

Content: ``gen_ai.tool.call.arguments`` (prompts captured) and ``gen_ai.tool.call.result`` (responses captured)
for tools/call, one policy with every other tool span (``_spans.encode``: redacted, bounded, marked truncated).

If the current span is already an ``execute_tool`` span for the same tool (a framework traced the tool, e.g. an
agent SDK calling an MCP tool), the convention says not to add a second span: the client adds the MCP attributes
to that span and propagates its context instead.

Counting: an MCP span is never a model call. A model call the server's tool makes is counted once, by the process
that makes it (the server's pipeline); the client process cannot see it. It shares the caller's trace id, so a
backend that joins both processes' spans sees it under the calling agent's tools/call span. The calling agent's
name goes along in ``_meta`` (``mltrack/gen_ai.agent.name``, when the request is made inside an agent run) and the
server's model calls carry it as gen_ai.agent.name (unless an agent run of the server's own is current), so
``report --by agent`` over a store both processes export to sums the agent's spend on both sides, each call once.
In-process totals stay per process: ``totals(agent=...)`` in the client holds the client's own calls only.

With the SDK's in-memory ``Client(server)`` (its in-process dispatcher) no ``_meta`` is sent and there is no
JSON-RPC id: the context flows in-process, so the server span is still the client span's child.

Transport attributes: a ClientSession made right after ``stdio_client`` spawned its server process has
network.transport ``pipe``; one made over ``streamable_http_client`` has ``tcp``, server.address/port from the URL
and, once the server assigned it, the ``Mcp-Session-Id`` as mcp.session.id. Both are hooked where the transport is
built (the spawn, the transport class), so however the application imported them. A server whose ``stdio_server``
claimed the process's stdin/stdout says ``pipe``; one serving HTTP says ``tcp`` with client.address/port and the
connection's session id. Other transports (in memory) leave them out rather than guess.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.attributes import jsonrpc_attributes, mcp_attributes, rpc_attributes
from opentelemetry.semconv.attributes import client_attributes, error_attributes, network_attributes, server_attributes
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import call_context, config, content, guard
from . import _base, _spans

MCP_METHOD_NAME = mcp_attributes.MCP_METHOD_NAME
MCP_PROTOCOL_VERSION = mcp_attributes.MCP_PROTOCOL_VERSION
MCP_RESOURCE_URI = mcp_attributes.MCP_RESOURCE_URI
MCP_SESSION_ID = mcp_attributes.MCP_SESSION_ID
JSONRPC_REQUEST_ID = jsonrpc_attributes.JSONRPC_REQUEST_ID
RPC_STATUS_CODE = rpc_attributes.RPC_RESPONSE_STATUS_CODE
NETWORK_TRANSPORT = network_attributes.NETWORK_TRANSPORT
ERROR_TYPE = error_attributes.ERROR_TYPE
TOOL_ERROR = "tool_error"
INVALID_PARAMS = "-32602"  # JSON-RPC's code for a request whose params do not validate

# The calling agent's name in a request's _meta (a prefixed key, as MCP asks of custom _meta keys): the server's
# model calls carry it as gen_ai.agent.name, so per-agent totals over both processes' spans include them.
AGENT_META_KEY = "mltrack/gen_ai.agent.name"
_NAMED = ("tools/call", "prompts/get")  # the methods whose span name carries a target (tool / prompt name)
_URI = ("resources/read", "resources/subscribe", "resources/unsubscribe", "notifications/resources/updated")

# The transport a client just opened in this context ((kind, weak reference): the server process stdio_client
# spawned, or streamable_http_client's transport object), taken by the next ClientSession.
_SPAWNED: contextvars.ContextVar[Any] = contextvars.ContextVar("mltrack_mcp_spawned", default=None)
# "pipe" once stdio_server claimed this process's stdio in this context: its handlers inherit it.
_SERVER_TRANSPORT: contextvars.ContextVar[str | None] = contextvars.ContextVar("mltrack_mcp_transport", default=None)
# The client request being sent in this task: the dispatcher's span request hands back its span.
_PENDING: contextvars.ContextVar[_ClientCall | None] = contextvars.ContextVar("mltrack_mcp_pending", default=None)
_SESSION_TRANSPORT: weakref.WeakKeyDictionary[Any, _Link] = weakref.WeakKeyDictionary()


class _Link:
    """What a client session knows of its transport: network.transport, the server's address and port, and for
    streamable HTTP the transport object (its session id arrives with the first response)."""

    __slots__ = ("address", "http", "port", "transport")

    def __init__(self, transport: str, address: str | None = None, port: int | None = None, http: Any = None):
        self.transport = transport
        self.address = address
        self.port = port
        self.http = http

    def attributes(self, attributes: dict[str, Any]) -> None:
        attributes[NETWORK_TRANSPORT] = self.transport
        if self.address:
            attributes[server_attributes.SERVER_ADDRESS] = self.address
            if self.port is not None:
                attributes[server_attributes.SERVER_PORT] = self.port
        http = self.http() if self.http is not None else None
        session_id = getattr(http, "session_id", None)
        if isinstance(session_id, str) and session_id:
            attributes[MCP_SESSION_ID] = session_id


def _text(value: Any) -> str | None:
    return content.utf8(value) if isinstance(value, str) and value else None


def _target(method: str, params: Mapping[str, Any] | None) -> str | None:
    return _text(params.get("name")) if method in _NAMED and isinstance(params, Mapping) else None


def request_attributes(method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The convention's attributes of one request, from its method and raw params (wire names)."""
    attributes: dict[str, Any] = {MCP_METHOD_NAME: method}
    target = _target(method, params)
    if method == "tools/call":
        attributes[gen_ai.GEN_AI_OPERATION_NAME] = "execute_tool"
        if target is not None:
            attributes[gen_ai.GEN_AI_TOOL_NAME] = target
    elif method == "prompts/get" and target is not None:
        attributes[gen_ai.GEN_AI_PROMPT_NAME] = target
    elif method in _URI and isinstance(params, Mapping) and (uri := _text(params.get("uri"))) is not None:
        attributes[MCP_RESOURCE_URI] = uri
    return attributes


def span_name(method: str, params: Mapping[str, Any] | None) -> str:
    target = _target(method, params)
    return f"{method} {target}" if target else method


def _wire(result: Any) -> Any:
    """A result as wire data (a pydantic model dumped by alias), or as it is."""
    dump = getattr(result, "model_dump", None)
    if callable(dump):
        return dump(by_alias=True, mode="json", exclude_none=True)
    return result


def tool_outcome(result: Any, capture: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(attributes, outputs) of a tools/call result: error.type ``tool_error`` when ``isError``; the result (its
    structured content, else its content blocks) as gen_ai.tool.call.result when capturing and it succeeded."""
    is_error = getattr(result, "is_error", None)
    if is_error is None and isinstance(result, Mapping):
        is_error = result.get("isError")
    if is_error is True:
        return {ERROR_TYPE: TOOL_ERROR}, None
    if not capture:
        return {}, None
    data = _wire(result)
    if not isinstance(data, Mapping):
        return {}, None
    value = data.get("structuredContent")
    if value is None:
        value = data.get("content")
    return {}, {gen_ai.GEN_AI_TOOL_CALL_RESULT: value} if value is not None else None


def _end_failed(operation: _spans.Operation, error: BaseException) -> None:
    """End a span with the convention's error: a JSON-RPC error's code (status: its message, redacted), a params
    validation error as INVALID_PARAMS (pydantic's text carries the client's input: not recorded), else the class;
    a cancellation ends it without an error, as every other span of ours."""
    if _spans.failure(error) is None:  # cancelled: stopped, not failed
        operation.finish()
        return
    code = getattr(error, "error", None)
    code = getattr(code, "code", None)
    if isinstance(code, int) and not isinstance(code, bool) and not operation.ended:
        operation.ended = True
        span = operation.span
        try:
            message = getattr(error, "message", None)
            redactor = operation.settings.redactor
            if isinstance(message, str) and redactor is not None:
                message = redactor.sub(content.REDACTED, message)
            span.set_attributes({ERROR_TYPE: str(code), RPC_STATUS_CODE: str(code)})
            span.set_status(Status(StatusCode.ERROR, message if isinstance(message, str) else None))
        finally:
            span.end()
        return
    if type(error).__name__ == "ValidationError" and type(error).__module__.startswith("pydantic"):
        operation.finish(None, {ERROR_TYPE: INVALID_PARAMS, RPC_STATUS_CODE: INVALID_PARAMS})
        return
    operation.fail(error)


class _ClientCall:
    """One traced client request: our CLIENT span (or the framework's execute_tool span it merged into)."""

    __slots__ = ("claimed", "merged", "method", "operation", "token")

    def __init__(self, operation: _spans.Operation, method: str, merged: bool) -> None:
        self.operation = operation
        self.method = method
        self.merged = merged  # the span is a framework's execute_tool span: only attributes are ours
        self.claimed = False  # the dispatcher asked for its span (the SDK's would have been made here)
        self.token: Any = None

    def finish(self, result: Any) -> None:
        operation = self.operation
        if self.method == "tools/call":
            attributes, outputs = tool_outcome(result, operation.capture_out)
        else:
            attributes, outputs = {}, None
        if self.merged:  # the owner ends it; an isError is the owner's to judge too
            if outputs and operation.capture_out and gen_ai.GEN_AI_TOOL_CALL_RESULT not in _attributes(operation.span):
                done: dict[str, Any] = {}
                _spans._capture(outputs, operation.settings, done)
                operation.span.set_attributes(done)
            return
        operation.finish(outputs, attributes)

    def fail(self, error: BaseException) -> None:
        if self.merged:
            return
        _end_failed(self.operation, error)


def _attributes(span: Any) -> Mapping[str, Any]:
    found = getattr(span, "attributes", None)
    return found if isinstance(found, Mapping) else {}


class _Claimed:
    """What the dispatcher's ``with otel_span(...)`` gets for a request we trace: our span, the request id on it."""

    __slots__ = ("attributes", "span")

    def __init__(self, span: trace.Span, attributes: Any) -> None:
        self.span = span
        self.attributes = attributes

    def __enter__(self) -> trace.Span:
        if isinstance(self.attributes, Mapping):
            request_id = self.attributes.get(JSONRPC_REQUEST_ID)
            if isinstance(request_id, str):
                guard.guarded("instrumentation.mcp.request_id", self.span.set_attribute, JSONRPC_REQUEST_ID, request_id)
        return self.span

    def __exit__(self, *exc_info: Any) -> None:
        return None


class Patch(_base.WrapperPatch):
    """The wrappers on the client session, the dispatcher's span helper, the server middleware and the stdio
    transports (what another mcp 2.x lacks is left alone)."""

    tracer_name = __name__

    def targets(self) -> list[tuple[Any, str, Any]]:
        from mcp.client import stdio as client_stdio
        from mcp.client.session import ClientSession
        from mcp.client.streamable_http import StreamableHTTPTransport
        from mcp.server import stdio as server_stdio
        from mcp.server._otel import OpenTelemetryMiddleware
        from mcp.shared import jsonrpc_dispatcher

        return [
            (ClientSession, "__init__", self._session_init),
            (ClientSession, "send_request", self._send_request),
            (ClientSession, "send_discover", self._send_discover),
            (jsonrpc_dispatcher, "otel_span", self._dispatcher_span),
            (jsonrpc_dispatcher, "inject_trace_context", self._inject),
            (OpenTelemetryMiddleware, "__call__", self._serve),
            # The stdio transports, by the module globals they call when entered (whatever name the application
            # imported them under): the client's process spawn, the server's claim of its stdin.
            (client_stdio, "_create_platform_compatible_process", self._spawned),
            (server_stdio, "_claim_fd", self._claimed),
            (StreamableHTTPTransport, "__init__", self._http_transport),
        ]

    # -- transports ------------------------------------------------------------------------------------------

    async def _spawned(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        """stdio_client started its server: the next ClientSession made in this context talks over a pipe."""
        process = await wrapped(*args, **kwargs)
        guard.guarded("instrumentation.mcp.transport", _mark_spawn, process)
        return process

    def _http_transport(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        """streamable_http_client made its transport: the next ClientSession made in this context talks over it."""
        result = wrapped(*args, **kwargs)
        guard.guarded("instrumentation.mcp.transport", _mark_http, instance)
        return result

    def _claimed(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        """stdio_server took this process's stdin or stdout: the server run in this context serves a pipe."""
        result = wrapped(*args, **kwargs)
        guard.guarded("instrumentation.mcp.transport", _SERVER_TRANSPORT.set, "pipe")
        return result

    def _session_init(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        result = wrapped(*args, **kwargs)
        guard.guarded("instrumentation.mcp.session", _bind_transport, instance)
        return result

    # -- client ----------------------------------------------------------------------------------------------

    async def _send_request(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        call = self._client_start(instance, args, kwargs) if self.active else None
        return await self._traced(call, wrapped, args, kwargs)

    async def _send_discover(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        """server/discover (the 2026 handshake) goes to the dispatcher without send_request."""
        call = self._discover_start(instance, args, kwargs) if self.active else None
        return await self._traced(call, wrapped, args, kwargs)

    async def _traced(self, call: _ClientCall | None, wrapped: Any, args: tuple, kwargs: dict) -> Any:
        if call is None:
            return await wrapped(*args, **kwargs)
        pending = _PENDING.set(call)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            guard.guarded("instrumentation.mcp.client.fail", call.fail, exc)
            raise
        finally:
            guard.guarded("instrumentation.mcp.client.detach", _reset, pending, call.token)
        guard.guarded("instrumentation.mcp.client.finish", call.finish, result)
        return result

    def _client_start(self, session: Any, args: tuple, kwargs: dict) -> _ClientCall | None:
        try:
            settings = _base.tracking_settings()
            if settings is None:
                return None
            request = args[0] if args else kwargs.get("request")
            method = getattr(request, "method", None)
            if not isinstance(method, str) or not method:
                return None
            params = getattr(request, "params", None)
            raw = params.model_dump(by_alias=True, mode="json", exclude_none=True) if params is not None else None
            return self._client_span(session, method, raw, settings)
        except Exception as exc:
            guard.record_error("instrumentation.mcp.client.start", exc)
            return None

    def _discover_start(self, session: Any, args: tuple, kwargs: dict) -> _ClientCall | None:
        try:
            settings = _base.tracking_settings()
            if settings is None:
                return None
            version = args[0] if args else kwargs.get("version")
            return self._client_span(session, "server/discover", None, settings, version)
        except Exception as exc:
            guard.record_error("instrumentation.mcp.client.start", exc)
            return None

    def _client_span(
        self,
        session: Any,
        method: str,
        params: dict[str, Any] | None,
        settings: config.Settings,
        version: Any = None,
    ) -> _ClientCall:
        attributes = request_attributes(method, params)
        version = version or getattr(session, "protocol_version", None)
        if isinstance(version, str):
            attributes[MCP_PROTOCOL_VERSION] = version
        link = _SESSION_TRANSPORT.get(session)
        if link is not None:
            link.attributes(attributes)
        inputs = None
        if method == "tools/call" and params is not None and settings.capture_prompts:
            inputs = {gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS: params.get("arguments") or {}}
        current = trace.get_current_span()
        outer = _attributes(current)
        if (
            method == "tools/call"
            and current.is_recording()
            and outer.get(gen_ai.GEN_AI_OPERATION_NAME) == "execute_tool"
            and outer.get(gen_ai.GEN_AI_TOOL_NAME) == attributes.get(gen_ai.GEN_AI_TOOL_NAME)
            and MCP_METHOD_NAME not in outer
        ):
            # A framework's span for this very tool execution: MCP attributes on it, no second span.
            if inputs and gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS not in outer:
                _spans._capture(inputs, settings, attributes)
            current.set_attributes(attributes)
            return _ClientCall(_spans.Operation(current, "execute_tool", settings), method, merged=True)
        if inputs:
            _spans._capture(inputs, settings, attributes)
        if settings.openinference_attributes:
            attributes[_base.OI_SPAN_KIND] = "TOOL" if method == "tools/call" else "CHAIN"
        span = self.tracer.start_span(span_name(method, params), kind=SpanKind.CLIENT, attributes=attributes)
        operation = _spans.Operation(span, attributes.get(gen_ai.GEN_AI_OPERATION_NAME), settings)
        call = _ClientCall(operation, method, merged=False)
        call.token = otel_context.attach(trace.set_span_in_context(span))
        return call

    def _dispatcher_span(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        """The dispatcher's span for an outgoing request: ours when we trace it (made current already, so the
        SDK injects our context), else the SDK's own."""
        call = _PENDING.get()
        if call is not None and not call.claimed and self.active:
            try:
                attributes = kwargs.get("attributes")
                method = attributes.get(MCP_METHOD_NAME) if isinstance(attributes, Mapping) else None
                if method == call.method:
                    call.claimed = True
                    return _Claimed(call.operation.span, attributes)
            except Exception as exc:
                guard.record_error("instrumentation.mcp.client.claim", exc)
        return wrapped(*args, **kwargs)

    def _inject(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        """The SDK injects the trace context into a request's _meta; for a request of ours made inside an agent
        run, the agent's name goes with it."""
        result = wrapped(*args, **kwargs)
        call = _PENDING.get()
        if call is not None and call.claimed and self.active:
            guard.guarded("instrumentation.mcp.inject", _inject_agent, args[0] if args else kwargs.get("meta"))
        return result

    # -- server ----------------------------------------------------------------------------------------------

    async def _serve(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        started = self._server_start(*args, **kwargs) if self.active else None
        if started is None:
            return await wrapped(*args, **kwargs)
        operation, token, method = started
        ctx, call_next = _middleware_args(*args, **kwargs)
        agent = guard.guarded("instrumentation.mcp.server.agent", _caller_agent, ctx.meta)
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            guard.guarded("instrumentation.mcp.server.fail", _end_failed, operation, exc)
            raise
        finally:
            if agent is not None:
                call_context.detach(agent)
            guard.guarded("instrumentation.mcp.server.detach", otel_context.detach, token)
        guard.guarded("instrumentation.mcp.server.finish", _server_finish, operation, method, result)
        return result

    def _server_start(self, *args: Any, **kwargs: Any) -> tuple[_spans.Operation, Any, str] | None:
        try:
            settings = _base.tracking_settings()
            if settings is None:
                return None
            ctx, _ = _middleware_args(*args, **kwargs)
            method = ctx.method
            if not isinstance(method, str):
                return None
            params = ctx.params if isinstance(ctx.params, Mapping) else None
            attributes = request_attributes(method, params)
            if isinstance(ctx.protocol_version, str):
                attributes[MCP_PROTOCOL_VERSION] = ctx.protocol_version
            if ctx.request_id is not None:
                attributes[JSONRPC_REQUEST_ID] = str(ctx.request_id)
            connection = getattr(ctx.session, "_connection", None)
            session_id = getattr(connection, "session_id", None)
            if isinstance(session_id, str) and session_id:
                attributes[MCP_SESSION_ID] = session_id
            transport = _SERVER_TRANSPORT.get()
            if transport is not None:
                attributes[NETWORK_TRANSPORT] = transport
            peer = getattr(ctx.request, "client", None)  # an HTTP transport's request (starlette): the client's socket
            host = getattr(peer, "host", None)
            if isinstance(host, str) and host:
                attributes[NETWORK_TRANSPORT] = "tcp"
                attributes[client_attributes.CLIENT_ADDRESS] = host
                if isinstance(port := getattr(peer, "port", None), int):
                    attributes[client_attributes.CLIENT_PORT] = port
            if method == "tools/call" and params is not None and settings.capture_prompts:
                arguments = {gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS: params.get("arguments") or {}}
                _spans._capture(arguments, settings, attributes)
            if settings.openinference_attributes:
                attributes[_base.OI_SPAN_KIND] = "TOOL" if method == "tools/call" else "CHAIN"
            from mcp.shared._otel import extract_trace_context

            parent = extract_trace_context(ctx.meta)  # None: no (valid) traceparent, the ambient context parents
            span = self.tracer.start_span(
                span_name(method, params), context=parent, kind=SpanKind.SERVER, attributes=attributes
            )
            operation = _spans.Operation(span, attributes.get(gen_ai.GEN_AI_OPERATION_NAME), settings)
            token = otel_context.attach(trace.set_span_in_context(span, parent))
            return operation, token, method
        except Exception as exc:
            guard.record_error("instrumentation.mcp.server.start", exc)
            return None


def _inject_agent(meta: Any) -> None:
    agent = call_context.current().get(gen_ai.GEN_AI_AGENT_NAME)
    if isinstance(meta, dict) and isinstance(agent, str) and agent:
        meta[AGENT_META_KEY] = agent


def _caller_agent(meta: Any) -> Any:
    """The calling agent's name from a request's _meta attached to the model calls the handler makes (a token),
    unless an agent run of this process is current (its own name wins)."""
    agent = meta.get(AGENT_META_KEY) if isinstance(meta, Mapping) else None
    if not isinstance(agent, str) or not agent or gen_ai.GEN_AI_AGENT_NAME in call_context.current():
        return None
    return call_context.attach({gen_ai.GEN_AI_AGENT_NAME: content.utf8(agent)[:256]})


def _middleware_args(ctx: Any, call_next: Any) -> tuple[Any, Any]:
    return ctx, call_next


def _server_finish(operation: _spans.Operation, method: str, result: Any) -> None:
    if method == "tools/call":
        attributes, outputs = tool_outcome(result, operation.capture_out)
    else:
        attributes, outputs = {}, None
    operation.finish(outputs, attributes)


def _reset(pending: Any, token: Any) -> None:
    with contextlib.suppress(ValueError):  # a token from another context: leave it
        _PENDING.reset(pending)
    if token is not None:
        otel_context.detach(token)


def _mark_spawn(process: Any) -> None:
    _SPAWNED.set(("pipe", weakref.ref(process)))


def _mark_http(transport: Any) -> None:
    _SPAWNED.set(("http", weakref.ref(transport)))


def _bind_transport(session: Any) -> None:
    """A session made right after stdio_client spawned its server (still running: a pipe) or streamable_http_client
    made its transport (tcp, the URL's host and port, the transport's session id). The mark is taken once, so a
    later session in the same context (in memory) is not mistaken for it."""
    spawned = _SPAWNED.get()
    if spawned is None:
        return
    _SPAWNED.set(None)
    kind, ref = spawned
    opened = ref()
    if opened is None:
        return
    if kind == "pipe":
        if getattr(opened, "returncode", None) is None:
            _SESSION_TRANSPORT[session] = _Link("pipe")
        return
    url = urlsplit(getattr(opened, "url", "") or "")
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        port = None
    _SESSION_TRANSPORT[session] = _Link("tcp", url.hostname, port, ref)


class MCPInstrumentor(_base.PatchInstrumentor):
    """Instruments the mcp SDK, client and server (entry point `opentelemetry_instrumentor: mcp`)."""

    module = "mcp"
    dependencies = ("mcp >= 2.0",)
    tracer_name = __name__
    patch_factory = Patch
