"""One lifecycle for the GenAI spans that are not model calls (a model call is a ``_base.Call``): tools, agents,
workflows and chains, retrievals. :func:`start` opens an :class:`Operation` named ``{operation} {name}`` (``name``
alone for a framework step with no GenAI operation) with the convention's name attribute for its operation; it ends
exactly once, with :meth:`~Operation.finish` (outputs) or :meth:`~Operation.fail` (error.type, exception, ERROR).

Inputs and outputs are ``{attribute: value}`` under one content policy (:func:`encode`): recorded only when the
Settings capture prompts (inputs) or responses (outputs), redacted, cut to the content byte budget and then marked
``mltrack.content.truncated``; OpenInference's ``input.value`` / ``output.value`` only when OpenInference is on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, http_attributes
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import config, content, guard, ledger, semconv
from ._base import OI_INPUT_MIME, OI_INPUT_VALUE, OI_OUTPUT_MIME, OI_OUTPUT_VALUE, OI_SPAN_KIND, error_type

DESCRIPTION_BYTES = 1024  # a tool's description is metadata, not content: recorded always, bounded
_NAMES = {
    "execute_tool": gen_ai.GEN_AI_TOOL_NAME,
    "invoke_agent": gen_ai.GEN_AI_AGENT_NAME,
    "invoke_workflow": gen_ai.GEN_AI_WORKFLOW_NAME,
}
_DESCRIPTIONS = {"execute_tool": gen_ai.GEN_AI_TOOL_DESCRIPTION, "invoke_agent": gen_ai.GEN_AI_AGENT_DESCRIPTION}
_OI_KINDS = {"execute_tool": "TOOL", "invoke_agent": "AGENT", "retrieval": "RETRIEVER", "embeddings": "EMBEDDING"}
_OI_MIMES = {OI_INPUT_VALUE: OI_INPUT_MIME, OI_OUTPUT_VALUE: OI_OUTPUT_MIME}
_JSON = "application/json"


def failure(error: BaseException | None) -> Exception | None:
    """The failure an exception leaving an operation is: an Exception fails it; a cancellation (CancelledError, a
    closed generator, Ctrl-C, exit) only stopped it, so the span ends without an error, as the frameworks' own do."""
    return error if isinstance(error, Exception) else None


def encode(value: Any, settings: config.Settings, max_bytes: int | None = None) -> tuple[str, bool]:
    """(text, truncated): one value as an attribute in at most max_bytes UTF-8 bytes (the content budget by default).

    A list is a JSON array of items (messages, documents: content.encode drops the oldest, then cuts the newest); a
    string stays text, cut at a character boundary and marked; anything else is its JSON, cut inside its strings.
    Redacted before it is measured.
    """
    limit = max_bytes or settings.content_max_bytes
    redactor = settings.redactor
    if isinstance(value, list):
        return content.encode(value, limit, redactor)
    if not isinstance(value, str):  # one JSON value: redacted whole (keys too), then bounded without its brackets
        if redactor is not None:
            value = content.redact(value, redactor, schema=False)
        text, truncated = content.encode([value], limit + 2, None)
        return text[1:-1], truncated
    if redactor is not None:
        value = redactor.sub(content.REDACTED, value)
    if len(value) <= limit and value.isascii():
        return value, False
    data = value.encode("utf-8", "replace")  # lone surrogates become "?": the OTLP encoder rejects them
    if len(data) <= limit:
        return data.decode("utf-8"), False
    cut = data[: max(0, limit - len(content.TRUNCATION_MARK))].decode("utf-8", "ignore")
    return cut + content.TRUNCATION_MARK, True


def _capture(values: Mapping[str, Any], settings: config.Settings, attributes: dict[str, Any]) -> None:
    oi = settings.openinference_attributes
    for key, value in values.items():
        mime = _OI_MIMES.get(key)
        if value is None or (mime is not None and not oi):
            continue
        attributes[key], truncated = encode(value, settings)
        if truncated:
            attributes[semconv.MLTRACK_CONTENT_TRUNCATED] = True
        if mime is not None and not isinstance(value, str):
            attributes[mime] = _JSON


class Operation:
    """One non-model GenAI span between :func:`start` and its one end."""

    __slots__ = ("capture_out", "ended", "operation", "settings", "span")

    def __init__(self, span: trace.Span, operation: str | None, settings: config.Settings) -> None:
        self.span = span
        self.operation = operation
        self.settings = settings
        self.capture_out = settings.capture_responses  # whether outputs are recorded (skip building them if not)
        self.ended = False

    def finish(self, outputs: Mapping[str, Any] | None = None, attributes: dict[str, Any] | None = None) -> None:
        """End the span once, with its outputs (content policy) and response attributes (a dict that is updated).
        ``error.type`` among the attributes, without an exception (a tool that reported an error), marks it ERROR."""
        self._end(outputs, attributes, None)

    def fail(self, error: BaseException, attributes: dict[str, Any] | None = None) -> None:
        """End the span once, failed: error.type, the exception event and ERROR status (redacted as configured)."""
        self._end(None, attributes, error)

    def _end(self, outputs: Any, attributes: dict[str, Any] | None, error: BaseException | None) -> None:
        if self.ended:
            return
        self.ended = True
        span = self.span
        try:
            attributes = {} if attributes is None else attributes
            if outputs and self.capture_out:
                _capture(outputs, self.settings, attributes)
            if error is not None:
                attributes[error_attributes.ERROR_TYPE] = error_type(error)
                if isinstance(status := getattr(error, "status_code", None), int):  # an HTTP error from below
                    attributes[http_attributes.HTTP_RESPONSE_STATUS_CODE] = status
            if attributes:
                span.set_attributes(attributes)
            if error is not None:
                content.record_failure(span, error, self.settings.redactor)
            elif error_attributes.ERROR_TYPE in attributes:
                span.set_status(Status(StatusCode.ERROR, str(attributes[error_attributes.ERROR_TYPE])))
        except Exception as exc:  # the span still ends, with what it has
            guard.record_error("instrumentation.spans.finish", exc)
        finally:
            span.end()


def start(
    tracer: trace.Tracer,
    operation: str | None,
    name: str,
    attributes: dict[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    *,
    settings: config.Settings,
    description: Any = None,
    context: otel_context.Context | None = None,
) -> Operation:
    """Open an INTERNAL span for one operation (gen_ai.operation.name; None for a framework step without one).
    A tool is a "function" (gen_ai.tool.type) unless the attributes say otherwise.

    ``context``: the parent (the current context when None). ``description``: the tool's or agent's, bounded to
    DESCRIPTION_BYTES. The conversation id of the current tracking scope is added unless the caller gave one.
    """
    attributes = {} if attributes is None else attributes
    name = content.utf8(name if isinstance(name, str) else str(name))
    if operation:
        attributes[gen_ai.GEN_AI_OPERATION_NAME] = operation
        key = _NAMES.get(operation)
        if key is not None:
            attributes.setdefault(key, name)
        if operation == "execute_tool":
            attributes.setdefault(gen_ai.GEN_AI_TOOL_TYPE, "function")
        key = _DESCRIPTIONS.get(operation)
        if key is not None and isinstance(description, str) and description:
            attributes[key] = encode(description, settings, DESCRIPTION_BYTES)[0]
    if gen_ai.GEN_AI_CONVERSATION_ID not in attributes:
        scope = ledger.current_scope()
        if scope is not None and scope.conversation_id:
            attributes[gen_ai.GEN_AI_CONVERSATION_ID] = scope.conversation_id
    if inputs and settings.capture_prompts:
        _capture(inputs, settings, attributes)
    if settings.openinference_attributes:
        attributes[OI_SPAN_KIND] = _OI_KINDS.get(operation or "", "CHAIN")
    span_name = f"{operation} {name}" if operation else name
    span = tracer.start_span(span_name, context=context, kind=SpanKind.INTERNAL, attributes=attributes)
    return Operation(span, operation, settings)
