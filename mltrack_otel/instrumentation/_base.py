"""Shared pieces of every instrumentor: one model call's span, stream recording, content capture, names.

A :class:`Call` is one model call: it starts the span (request attributes and input content already known) and
finishes it exactly once with the response attributes and output content, or with an error. A
:class:`StreamRecorder` is fed each streamed item and finishes its call when the stream ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes
from opentelemetry.trace import SpanKind

from .. import budget, call_context, config, content, estimate, guard, ledger, semconv
from ..errors import BudgetExceededError
from ..fields import get as get  # re-exported: every provider module reads SDK objects with it
from ..usage import GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
from ..usage import attributes as usage_attributes_of
from ..usage import read as read_usage
from ..version import __version__
from . import when_imported

# OpenInference names (optional attributes, so Phoenix and other OpenInference tools show messages natively).
OI_SPAN_KIND = "openinference.span.kind"
OI_INPUT_VALUE = "input.value"
OI_INPUT_MIME = "input.mime_type"
OI_OUTPUT_VALUE = "output.value"
OI_OUTPUT_MIME = "output.mime_type"
OI_MODEL_NAME = "llm.model_name"
OI_PROVIDER = "llm.provider"
OI_INPUT_MESSAGES = "llm.input_messages"
OI_OUTPUT_MESSAGES = "llm.output_messages"
OI_TOKEN_PROMPT = "llm.token_count.prompt"
OI_TOKEN_COMPLETION = "llm.token_count.completion"
OI_TOKEN_TOTAL = "llm.token_count.total"
OI_TOKEN_CACHE_READ = "llm.token_count.prompt_details.cache_read"
OI_TOKEN_CACHE_WRITE = "llm.token_count.prompt_details.cache_write"
OI_TOKEN_REASONING = "llm.token_count.completion_details.reasoning"
_OI_MAX_MESSAGES = 64
_JSON = "application/json"

# Provider finish reasons -> the convention's FinishReason values (output messages); others pass through.
FINISH_REASONS = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "max_output_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_calls": "tool_call",
    "function_call": "tool_call",
    "tool_use": "tool_call",
    "content_filter": "content_filter",
    "refusal": "content_filter",
}
UNFINISHED = "incomplete"  # output of a stream that stopped before the provider finished it

_match_cache: dict[tuple[str, tuple[str, ...]], bool] = {}


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether host matches one of the fnmatch patterns (memoised: called on every streamed request)."""
    key = (host, patterns)
    try:
        return _match_cache[key]
    except KeyError:
        pass
    hit = any(fnmatch.fnmatchcase(host, p) for p in patterns)
    if len(_match_cache) < 1024:
        _match_cache[key] = hit
    return hit


def seq(value: Any) -> list[Any] | tuple[Any, ...]:
    """value if it is a list or tuple, else (): never iterate (and so consume) a caller's other iterables."""
    return value if isinstance(value, (list, tuple)) else ()


def error_type(exc: BaseException) -> str:
    """error.type: the provider's error code or status when it sent one, else the exception class."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    body = getattr(exc, "body", None)
    if isinstance(body, str) and body[:1] == "{" and len(body) <= 65536:  # mistralai keeps the JSON body as text
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):
            body = None
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        kind = inner.get("code") or inner.get("type") if isinstance(inner, Mapping) else None
        if isinstance(kind, str) and kind and kind != "error":
            return kind
    response = getattr(exc, "response", None)  # botocore's ClientError / EventStreamError: the AWS error code
    error = response.get("Error") if isinstance(response, Mapping) else None
    aws_code = error.get("Code") if isinstance(error, Mapping) else None
    if isinstance(aws_code, str) and aws_code:
        return aws_code
    status = getattr(exc, "status", None)  # google-genai's APIError: RESOURCE_EXHAUSTED, NOT_FOUND...
    if isinstance(status, str) and status:
        return status
    cls = type(exc)
    module = cls.__module__.split(".", 1)[0]
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an SDK error carries (status_code; google-genai's int `code`), if it is one."""
    status = getattr(exc, "status_code", None)
    if status is None and isinstance(getattr(exc, "status", None), str):
        status = getattr(exc, "code", None)
    if status is None:  # botocore
        response = getattr(exc, "response", None)
        metadata = response.get("ResponseMetadata") if isinstance(response, Mapping) else None
        status = metadata.get("HTTPStatusCode") if isinstance(metadata, Mapping) else None
    return status if type(status) is int and 100 <= status <= 599 else None


class Inputs:
    """What a request sends that content capture may record (normalised GenAI messages and parts)."""

    __slots__ = ("messages", "system", "tools")

    def __init__(
        self, messages: list[Any] | None = None, system: list[Any] | None = None, tools: list[Any] | None = None
    ) -> None:
        self.messages, self.system, self.tools = messages, system, tools


class Call:
    """One model call: its span, when it started, and how to finish it exactly once."""

    __slots__ = (
        "capture_out",
        "ended",
        "max_bytes",
        "model",
        "nest",
        "oi",
        "redactor",
        "reservation",
        "span",
        "t0",
        "usage_shape",
    )

    def __init__(
        self,
        tracer: trace.Tracer,
        operation: str,
        model: str | None,
        attributes: dict[str, Any],
        settings: config.Settings,
        inputs: Inputs | None,
        usage_shape: str,
        context: otel_context.Context | None = None,  # the parent; the current context when None
    ) -> None:
        self.max_bytes = settings.content_max_bytes
        self.redactor = settings.redactor
        self.capture_out = settings.capture_responses
        self.oi = settings.openinference_attributes
        self.usage_shape = usage_shape
        self.model = model
        self.ended = False
        self.nest = False  # make the span current during the request (set by instrumentors that need it)
        self.reservation: ledger.Reservation | None = None  # the budget's hold, released once the span has ended
        if inputs is not None and settings.capture_prompts:
            self._add_inputs(inputs, attributes)
        if self.oi:
            self._add_openinference_start(operation, model, attributes)
        name = f"{operation} {model}" if model else operation
        self.span = tracer.start_span(name, context=context, kind=SpanKind.CLIENT, attributes=attributes)
        self.t0 = time.perf_counter()

    def _encode(self, items: list[Any], key: str, attributes: dict[str, Any]) -> None:
        text, truncated = content.encode(items, self.max_bytes, self.redactor)
        attributes[key] = text
        if truncated:
            attributes[semconv.MLTRACK_CONTENT_TRUNCATED] = True

    def _add_inputs(self, inputs: Inputs, attributes: dict[str, Any]) -> None:
        if inputs.messages is not None:
            self._encode(inputs.messages, gen_ai.GEN_AI_INPUT_MESSAGES, attributes)
        if inputs.system:
            self._encode(inputs.system, gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS, attributes)
        if inputs.tools:
            self._encode(inputs.tools, gen_ai.GEN_AI_TOOL_DEFINITIONS, attributes)

    def _add_openinference_start(self, operation: str, model: str | None, attributes: dict[str, Any]) -> None:
        attributes[OI_SPAN_KIND] = "EMBEDDING" if operation == "embeddings" else "LLM"
        if model:
            attributes[OI_MODEL_NAME] = model
        attributes[OI_PROVIDER] = attributes.get(gen_ai.GEN_AI_PROVIDER_NAME, "")
        messages = attributes.get(gen_ai.GEN_AI_INPUT_MESSAGES)
        if messages is not None:
            attributes[OI_INPUT_VALUE] = messages
            attributes[OI_INPUT_MIME] = _JSON
            _flatten_messages(OI_INPUT_MESSAGES, messages, attributes)

    def finish(
        self,
        attributes: dict[str, Any],
        output: list[Any] | None = None,
        usage: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """End the span once: response attributes, usage, output content, then the error if there was one."""
        if self.ended:
            return
        self.ended = True
        span = self.span
        try:
            attributes[semconv.LLM_LATENCY] = time.perf_counter() - self.t0
            if usage is not None:
                attributes.update(read_usage(usage, self.usage_shape))
            if output is not None and self.capture_out:
                self._encode(output, gen_ai.GEN_AI_OUTPUT_MESSAGES, attributes)
            if self.oi:
                _add_openinference_end(attributes)
            if error is not None:
                _describe_error(error, attributes)
            span.set_attributes(attributes)
            if error is not None:
                content.record_failure(span, error, self.redactor)
        except Exception as exc:  # the span still ends, with what it has
            guard.record_error("instrumentation.finish", exc)
        finally:
            span.end()  # the processor adds the real cost to the ledger in here, so the hold goes only after it
            if self.reservation is not None:
                guard.guarded("instrumentation.budget", self.reservation.release)

    def fail(self, error: BaseException) -> None:
        """The request itself failed (nothing came back)."""
        self.finish({}, error=error)


def _describe_error(error: BaseException, attributes: dict[str, Any]) -> None:
    attributes[error_attributes.ERROR_TYPE] = error_type(error)
    status = http_status(error)
    if status is not None:
        attributes[http_attributes.HTTP_RESPONSE_STATUS_CODE] = status


def _flatten_messages(prefix: str, messages_json: str, attributes: dict[str, Any]) -> None:
    """OpenInference's flattened llm.*_messages.N.message.* attributes from our (already bounded) JSON."""
    try:
        messages = json.loads(messages_json)
    except ValueError:
        return
    for i, message in enumerate(messages[-_OI_MAX_MESSAGES:]):
        if not isinstance(message, dict):
            continue
        base = f"{prefix}.{i}.message"
        attributes[f"{base}.role"] = str(message.get("role", ""))
        texts, calls = [], 0
        for part in message.get("parts") or ():
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("text", "reasoning") and isinstance(part.get("content"), str):
                texts.append(part["content"])
            elif kind == "tool_call_response":
                texts.append(
                    part["response"] if isinstance(part.get("response"), str) else content.dumps(part.get("response"))
                )
            elif kind == "tool_call":
                call = f"{base}.tool_calls.{calls}.tool_call"
                attributes[f"{call}.function.name"] = str(part.get("name", ""))
                args = part.get("arguments")
                attributes[f"{call}.function.arguments"] = args if isinstance(args, str) else content.dumps(args)
                if part.get("id"):
                    attributes[f"{call}.id"] = str(part["id"])
                calls += 1
        if texts:
            attributes[f"{base}.content"] = "".join(texts)


def _add_openinference_end(attributes: dict[str, Any]) -> None:
    output = attributes.get(gen_ai.GEN_AI_OUTPUT_MESSAGES)
    if output is not None:
        attributes[OI_OUTPUT_VALUE] = output
        attributes[OI_OUTPUT_MIME] = _JSON
        _flatten_messages(OI_OUTPUT_MESSAGES, output, attributes)
    prompt = attributes.get(gen_ai.GEN_AI_USAGE_INPUT_TOKENS)
    completion = attributes.get(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS)
    if prompt is not None:
        attributes[OI_TOKEN_PROMPT] = prompt
    if completion is not None:
        attributes[OI_TOKEN_COMPLETION] = completion
    if prompt is not None or completion is not None:
        attributes[OI_TOKEN_TOTAL] = (prompt or 0) + (completion or 0)
    for ours, theirs in (
        (gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, OI_TOKEN_CACHE_READ),
        (gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, OI_TOKEN_CACHE_WRITE),
        (GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, OI_TOKEN_CACHE_WRITE),  # its name under the latest conventions
        (gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, OI_TOKEN_REASONING),
    ):
        if ours in attributes:
            attributes[theirs] = attributes[ours]


_ABSENT: dict[str, Any] = {
    gen_ai.GEN_AI_USAGE_INPUT_TOKENS: 0,
    gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: 0,
    semconv.MLTRACK_USAGE_SOURCE: estimate.SOURCE_ABSENT,
}


def estimated_usage(
    tokens_in: int, tokens_out: int, cache_read: int | None = None, cache_write: int | None = None
) -> dict[str, Any]:
    """gen_ai.usage.* for usage we estimated, marked so: `estimated`, or `absent` when there was nothing to count
    (the call is then counted with no tokens and no price)."""
    if not tokens_in and not tokens_out:
        return dict(_ABSENT)
    out: dict[str, Any] = usage_attributes_of(tokens_in, tokens_out, cache_read, cache_write, None)
    out[semconv.MLTRACK_USAGE_SOURCE] = estimate.SOURCE_ESTIMATED
    return out


def _has_usage(attributes: dict[str, Any]) -> bool:
    """Whether a recorder already wrote the provider's usage as attributes (LiteLLM reads its own shape)."""
    return gen_ai.GEN_AI_USAGE_INPUT_TOKENS in attributes or gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS in attributes


class StreamRecorder:
    """Fed every item of one streamed response; finishes its call exactly once however the stream ends.

    Subclasses implement :meth:`feed` (cheap: append delta strings to lists, never concatenate) and :meth:`outcome`.
    When the stream ends without the provider's usage (stopped early, failed, or a host that never sends it), the
    call is still counted: :meth:`estimate` writes usage from the request (``request``) and the output deltas seen
    (:meth:`output_pieces`), marked ``mltrack.usage.source=estimated``.
    """

    __slots__ = (
        "call",
        "capture",
        "done",
        "first_at",
        "hide_usage",
        "lazy",
        "release",
        "request",
        "seen",
        "started",
        "suspended",
    )

    def __init__(self, call: Call, hide_usage: bool = False) -> None:
        self.call = call
        self.capture = call.capture_out
        self.hide_usage = hide_usage  # we asked for usage the caller did not: keep the usage-only chunk from them
        self.done = False
        self.lazy = False  # the request goes out on the first read (a generator method): unread, it was never sent
        self.started = False  # the caller began iterating
        self.suspended = False  # the caller holds an item (we are parked at a yield)
        self.first_at: float | None = None
        self.release: Any = None  # undoes our hook on the HTTP response once the span has ended
        # (request body, model): read only if usage never arrives, so the input is estimated only then.
        self.request: tuple[Mapping[str, Any], str | None] | None = None
        # With content capture off: the output text seen, kept for an estimate should the usage never arrive.
        # Strings only, never the SDK's delta objects (~10x the size of their text, held until the stream ends).
        self.seen: list[str] = []
        guard.start_deferred_worker()  # ends the span if the stream is abandoned (see __del__)

    def feed(self, item: Any) -> bool:
        """Record one item; return False to keep it from the caller."""
        raise NotImplementedError

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        """(response attributes, output messages, usage) accumulated so far; usage None if the provider's never
        arrived (complete or not)."""
        raise NotImplementedError

    def salvage(self, item: Any) -> bool:
        """feed() raised on item: whether to pass it on, still hiding whatever we added to the stream."""
        return True

    def output_pieces(self) -> list[str]:
        """The output text seen (text, tool-call arguments, reasoning): by default the strings kept in `seen`."""
        return self.seen

    def estimate(self) -> dict[str, Any]:
        """Usage attributes estimated from the request and the output seen (see mltrack_otel.estimate)."""
        body, model = self.request or ({}, None)
        tokens_in = estimate.input_tokens(body, model) if body else 0
        tokens_out = estimate.text_tokens("".join(self.output_pieces()), model)
        return estimated_usage(tokens_in, tokens_out)

    def end(self, complete: bool, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        release, self.release = self.release, None
        if release is not None:
            guard.guarded("instrumentation.stream", release)
        try:
            attributes, output, usage = self.outcome(complete)
        except Exception as exc:
            guard.record_error("instrumentation.stream", exc)
            attributes, output, usage = {}, None, None
        if usage is None and not self.call.ended and not _has_usage(attributes) and self.sent():  # counted: estimated
            attributes.update(guard.guarded("instrumentation.estimate", self.estimate, default=_ABSENT) or _ABSENT)
        attributes[semconv.MLTRACK_STREAM_COMPLETE] = complete
        if self.first_at is not None:
            attributes[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = self.first_at - self.call.t0
        self.call.finish(attributes, output, usage, error)

    def sent(self) -> bool:
        """Whether the provider may bill the call: a lazy stream that returned nothing was never sent, or refused."""
        return not self.lazy or self.first_at is not None

    def complete_at_close(self) -> bool:
        """Whether a stream closed now is complete (the provider finished every choice before the caller closed)."""
        return False

    def on_close(self) -> None:
        """The stream is being closed: by the caller before the end (early stop), or by the SDK at the end."""
        if not self.done and (self.suspended or not self.started):
            self.end(complete=self.complete_at_close())

    def __del__(self) -> None:
        """The stream was dropped unfinished (break, then garbage collection): end the span as incomplete.

        The recorder lives exactly as long as the HTTP response and the stream that read it, so this is the
        finalizer of the abandoned stream, without a weakref.finalize registration on every call.
        """
        if not self.done:
            with contextlib.suppress(Exception):  # at interpreter exit modules may already be gone
                guard.defer(self.end, False)  # not here: a collection can start inside the interpreter's own work


# Set by opentelemetry.instrumentation.utils.suppress_instrumentation() (and by exporters around their own
# requests): every OTel instrumentation stays silent inside it, and so do we.
_SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY
_get_value = otel_context.get_value


def tracking_settings() -> config.Settings | None:
    """The Settings to record a call with, or None when tracking is off or instrumentation is suppressed."""
    if _get_value(_SUPPRESS_KEY):
        return None
    settings = config.current()
    return settings if settings.llm_tracking_enabled else None


def reserve_budget(
    where: str,
    body: Mapping[str, Any],
    model: str | None,
    provider: str | None,
    operation: str,
    address: str | None = None,
    port: int | None = None,
) -> ledger.Reservation | None:
    """Reserve the call's worst case against the hard budgets before it is sent (None: no budget applies). Raises
    only BudgetExceededError; any other failure is recorded under `where` and the call goes out unreserved."""
    try:
        return budget.reserve(body, model, provider, operation, address=address, port=port)
    except BudgetExceededError:
        raise
    except Exception as exc:
        guard.record_error(where, exc)
        return None


def finish_reason(raw: Any, default: str = UNFINISHED) -> str:
    """The convention's finish reason for a provider's (None: the stream stopped early)."""
    if raw is None:
        return default
    return FINISH_REASONS.get(raw, raw) if isinstance(raw, str) else str(raw)


def copy_params(body: Mapping[str, Any], table: tuple[tuple[str, str], ...], attributes: dict[str, Any]) -> None:
    """Copy request parameters that are plain numbers or strings into attributes."""
    for key, attribute in table:
        value = body.get(key)
        if value is not None and type(value) in (int, float, str):
            attributes[attribute] = value


def stop_sequences(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def base_attributes(operation: str, provider: str, address: str | None, port: int | None) -> dict[str, Any]:
    extra = call_context.current()  # attribution and prompt identity set around the call (call_context.attached)
    attributes: dict[str, Any] = {**extra} if extra else {}
    attributes[gen_ai.GEN_AI_OPERATION_NAME] = operation
    attributes[gen_ai.GEN_AI_PROVIDER_NAME] = provider
    if address:
        attributes[server_attributes.SERVER_ADDRESS] = address
        if port:
            attributes[server_attributes.SERVER_PORT] = port
    scope = ledger.current_scope()
    if scope is not None and scope.conversation_id:
        attributes[gen_ai.GEN_AI_CONVERSATION_ID] = scope.conversation_id
    return attributes


# --- instrumentor classes ------------------------------------------------------------------------------------

try:  # OTel's base class when opentelemetry-instrumentation is installed, so `opentelemetry-instrument` works
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor as _OTelInstrumentor
except ImportError:  # pragma: no cover - exercised in the no-dependency test via a subprocess
    _OTelInstrumentor = None  # type: ignore[assignment,misc]


class _DuckInstrumentor:
    """The public surface of OTel's BaseInstrumentor, for when opentelemetry-instrumentation is not installed."""

    _instance = None
    _is_instrumented_by_opentelemetry = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls._instance is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return self._is_instrumented_by_opentelemetry

    def instrument(self, **kwargs: Any) -> Any:
        if self._is_instrumented_by_opentelemetry:
            return None
        kwargs.pop("skip_dep_check", None)
        kwargs.pop("raise_exception_on_conflict", None)
        result = self._instrument(**kwargs)  # type: ignore[attr-defined]
        self._is_instrumented_by_opentelemetry = True
        return result

    def uninstrument(self, **kwargs: Any) -> Any:
        if not self._is_instrumented_by_opentelemetry:
            return None
        result = self._uninstrument(**kwargs)  # type: ignore[attr-defined]
        self._is_instrumented_by_opentelemetry = False
        return result


InstrumentorBase: type = _OTelInstrumentor if _OTelInstrumentor is not None else _DuckInstrumentor


def get_tracer(name: str, tracer_provider: Any = None) -> trace.Tracer:
    return trace.get_tracer(name, __version__, tracer_provider=tracer_provider)


class WrapperPatch:
    """A patch made of wrapt wrappers on a library's classes or modules (``targets()``: (owner, attribute, wrapper)),
    and how to take them off again exactly. An attribute an SDK version lacks is left alone. ``remove()`` puts the
    original back only while our wrapper is the one there; one under another's wrapper stays, inert while
    ``active`` is off, and is reused by the next ``apply()`` instead of being wrapped twice."""

    tracer_name: ClassVar[str]

    def __init__(self) -> None:
        self.tracer: trace.Tracer = trace.get_tracer(self.tracer_name)
        self.active = False
        self.originals: list[tuple[Any, str, Any]] = []  # (owner, attribute, what was there)
        self._lock = threading.Lock()

    def targets(self) -> Iterable[tuple[Any, str, Callable[..., Any]]]:
        raise NotImplementedError

    def apply(self, tracer_provider: Any = None) -> None:
        self.tracer = get_tracer(self.tracer_name, tracer_provider)
        self.active = True
        with self._lock:
            if self.originals:
                return
            import wrapt

            for owner, name, wrapper in self.targets():
                original = vars(owner).get(name)
                if original is None:
                    continue
                wrapt.wrap_function_wrapper(owner, name, wrapper)
                self.originals.append((owner, name, original))

    def remove(self) -> None:
        self.active = False
        with self._lock:
            for owner, name, original in reversed(self.originals):
                if getattr(vars(owner).get(name), "__wrapped__", None) is original:
                    setattr(owner, name, original)  # the very object that was there before
            self.originals = [o for o in self.originals if vars(o[0]).get(o[1]) is not o[2]]


class PatchInstrumentor(InstrumentorBase):  # type: ignore[misc,valid-type]
    """An instrumentor that applies one patch to one library: at once if it is imported, else the moment it is.

    A subclass declares only what differs: ``module`` (the import that triggers it), ``dependencies``,
    ``tracer_name`` and ``patch_factory``, which makes the patch (once per class). A patch has ``active``,
    ``tracer``, ``apply(tracer_provider)`` and ``remove()``.
    """

    module: ClassVar[str]
    dependencies: ClassVar[tuple[str, ...]]
    tracer_name: ClassVar[str]
    patch_factory: ClassVar[Callable[[], Any]]
    _patch: ClassVar[Any] = None

    def instrumentation_dependencies(self) -> tuple[str, ...]:
        return self.dependencies

    @classmethod
    def the_patch(cls) -> Any:
        if cls.__dict__.get("_patch") is None:
            cls._patch = cls.patch_factory()
        return cls._patch

    def _instrument(self, **kwargs: Any) -> None:
        patch = self.the_patch()
        tracer_provider = kwargs.get("tracer_provider")
        self.set_tracer_provider(tracer_provider)
        patch.active = True

        def apply(_module: Any) -> None:
            if patch.active:
                guard.guarded("instrumentation.install", patch.apply, tracer_provider)

        if self.module in sys.modules:
            apply(sys.modules[self.module])
        else:
            when_imported(self.module, apply, owner=type(self).__name__)

    def _uninstrument(self, **kwargs: Any) -> None:
        when_imported(self.module, None, owner=type(self).__name__)  # forget a pending hook
        self.the_patch().remove()

    def set_tracer_provider(self, tracer_provider: Any) -> None:
        """Record into another TracerProvider from now on."""
        self.the_patch().tracer = get_tracer(self.tracer_name, tracer_provider)


def record_failure(span: Any, error: BaseException) -> None:
    """Exception event and ERROR status, redacted as configured."""
    content.record_failure(span, error, config.current().redactor)
