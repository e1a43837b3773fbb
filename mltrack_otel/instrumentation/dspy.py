"""DSPy 3.x: module, LM and tool spans from one global DSPy callback.

The callback is added to what ``dspy.settings.get("callbacks")`` returns (a wrapper on ``Settings.get``), so it
survives ``dspy.configure(callbacks=...)`` / ``dspy.context(callbacks=...)`` without touching the user's list.
DSPy runs start and end callbacks in the caller's own context around each call, so a span is made current in
``on_*_start`` and detached in ``on_*_end``: the LM's inner call (LiteLLM -> OpenAI SDK, or DSPy's native lm15
engine) nests under the LM span, which nests under the predictor and module spans.

Usage: DSPy's ``finalize`` hands the LM's result (usage, cache hit) back while the LM call is active; we keep it
for that LM span. With a LiteLLM/SDK span below, that span counts and the DSPy LM span is marked not counted; on
DSPy's native engine (no span below) the LM span counts. Cache hits carry no usage.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from .. import budget, config, content, guard, ledger
from . import _base, _spans, when_imported
from ._base import Call, Inputs, get, seq
from .litellm import litellm_usage_attributes, otel_provider, split_model
from .openai import chat_messages, chat_request

_EXECUTION = "dspy.clients.execution"
_LM_PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "n")


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _outputs_dict(outputs: Any) -> Any:
    """A Prediction (or any DSPy output) as plain data."""
    to_dict = getattr(outputs, "toDict", None)
    if callable(to_dict):
        try:
            return to_dict()
        except Exception:
            pass
    return outputs


def _lm_route(lm: Any) -> tuple[str, str | None, str | None, int | None]:
    """(provider, request model, server address, port) of a dspy.LM from its LiteLLM model string."""
    model = get(lm, "model", "")
    model = model if isinstance(model, str) else str(model)
    prefix, name = split_model(model)
    kwargs = get(lm, "kwargs", {}) or {}
    api_base = kwargs.get("api_base") or kwargs.get("base_url") if isinstance(kwargs, dict) else None
    address = port = None
    if isinstance(api_base, str):
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(api_base)
            address, port = parts.hostname, parts.port or {"https": 443, "http": 80}.get(parts.scheme)
        except ValueError:
            pass
    provider = otel_provider(prefix, address) if prefix else otel_provider(None, address)
    if provider == "unknown" and prefix is None and "/" not in model:
        provider = "openai" if model.startswith(("gpt-", "o1", "o3", "o4")) else provider
    return provider, name, address, port


class _Open:
    __slots__ = ("call", "operation", "result", "span", "token")

    def __init__(self, handle: Call | _spans.Operation, token: Any) -> None:
        self.span, self.token = handle.span, token
        self.call = handle if isinstance(handle, Call) else None  # an LM call
        self.operation = handle if isinstance(handle, _spans.Operation) else None  # a module or a tool
        self.result: Any = None


def _callback_class() -> type:
    from dspy.utils.callback import BaseCallback

    class MltrackCallback(BaseCallback):
        """Spans for DSPy modules (invoke_agent), LM calls (chat) and tools (execute_tool)."""

        def __init__(self, patch: Patch) -> None:
            self._patch = patch

        def __repr__(self) -> str:
            return "MltrackCallback()"

        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            guard.guarded("instrumentation.dspy.module", self._patch.module_start, call_id, instance, inputs)

        def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
            guard.guarded("instrumentation.dspy.module", self._patch.module_end, call_id, outputs, exception)

        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self._patch.lm_start(call_id, instance, inputs)

        def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
            guard.guarded("instrumentation.dspy.lm", self._patch.lm_end, call_id, outputs, exception)

        def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            guard.guarded("instrumentation.dspy.tool", self._patch.tool_start, call_id, instance, inputs)

        def on_tool_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
            guard.guarded("instrumentation.dspy.tool", self._patch.module_end, call_id, outputs, exception)

    return MltrackCallback


class Patch:
    """The global callback, the Settings.get and finalize wrappers, and the spans in flight (by call_id)."""

    def __init__(self) -> None:
        self.tracer: trace.Tracer = trace.get_tracer(__name__)
        self.active = False
        self.callback: Any = None
        self.open: dict[str, _Open] = {}
        self.originals: list[tuple[Any, str, Any]] = []
        self.waiting = False  # for the app to import dspy.clients.execution
        self._lock = threading.Lock()

    # -- install / remove ------------------------------------------------------------------------------------

    def apply(self, tracer_provider: Any = None) -> None:
        self.tracer = _base.get_tracer(__name__, tracer_provider)
        self.active = True
        with self._lock:
            if self.originals or self.waiting:
                return
            import dspy

            self.callback = _callback_class()(self)
            self._wrap([(type(dspy.settings), "get", self._settings_get)])
            self.waiting = True
        # DSPy imports its execution module on the first LM call: patched then, not imported now (or now, if it is).
        when_imported(_EXECUTION, self._patch_execution, owner="dspy:execution")

    def _patch_execution(self, execution: Any) -> None:
        with self._lock:
            if self.waiting:  # not removed in the meantime
                self.waiting = False
                self._wrap(
                    [
                        (execution, "finalize", self._finalize),
                        (execution, "execute", self._execute),
                        (execution, "aexecute", self._aexecute),
                    ]
                )

    def _wrap(self, targets: list[tuple[Any, str, Any]]) -> None:
        import wrapt

        for owner, name, wrapper in targets:
            original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            wrapt.wrap_function_wrapper(owner, name, wrapper)
            self.originals.append((owner, name, original))

    def remove(self) -> None:
        self.active = False
        with self._lock:
            waiting, self.waiting = self.waiting, False
            for owner, name, original in self.originals:
                current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
                if getattr(current, "__wrapped__", None) is original:
                    setattr(owner, name, original)
            self.originals.clear()
        if waiting:  # outside our lock: when_imported takes the registry's
            when_imported(_EXECUTION, None, owner="dspy:execution")

    def _settings_get(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        value = wrapped(*args, **kwargs)
        key = args[0] if args else kwargs.get("key")
        if key != "callbacks" or not self.active or self.callback is None:
            return value
        callbacks = value if isinstance(value, list) else list(value or ())
        if self.callback in callbacks:
            return value
        return [*callbacks, self.callback]

    # DSPy swallows (and logs) what a callback raises, so the budget is reserved where the LM sends: execute.
    def _execute(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        reservation = self._reserve(args, kwargs)
        if reservation is None:
            return wrapped(*args, **kwargs)
        held = budget.hold(reservation)  # a LiteLLM / SDK call inside takes the hold over
        try:
            return wrapped(*args, **kwargs)
        finally:
            budget.unhold(held)
            self._settle(reservation)

    async def _aexecute(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        reservation = self._reserve(args, kwargs)
        if reservation is None:
            return await wrapped(*args, **kwargs)
        held = budget.hold(reservation)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            budget.unhold(held)
            self._settle(reservation)

    def _reserve(self, args: tuple, kwargs: dict) -> ledger.Reservation | None:
        """The worst case of the request execute(lm, call) is about to send (raises only BudgetExceededError)."""
        if not self.active:
            return None
        try:
            lm = args[0] if args else kwargs.get("lm")
            prepared = args[1] if len(args) > 1 else kwargs.get("call")
            provider, model, address, port = _lm_route(lm)
            body = dict(get(lm, "kwargs", {}) or {})
            body.update(get(prepared, "kwargs", {}) or {})
            messages, prompt = get(prepared, "messages"), get(prepared, "prompt")
            body["messages"] = [{"role": "user", "content": prompt}] if messages is None and prompt else messages
            choices = get(prepared, "n")
            if type(choices) is int and choices > 1:
                body["n"] = choices
        except Exception as exc:
            guard.record_error("instrumentation.dspy.budget", exc)
            return None
        # Priced where it is served: a model on a local server reserves no cloud price.
        return _base.reserve_budget("instrumentation.dspy.budget", body, model, provider, "chat", address, port)

    def _settle(self, reservation: ledger.Reservation) -> None:
        """Hand the hold to the LM span, which releases it once its cost is counted; without one, release now."""
        try:
            from dspy.utils.callback import ACTIVE_CALL_ID

            entry = self.open.get(ACTIVE_CALL_ID.get() or "")
            call = entry.call if entry is not None else None
            if call is not None and not call.ended and call.reservation is None:
                call.reservation = reservation
                return
        except Exception as exc:
            guard.record_error("instrumentation.dspy.budget", exc)
        reservation.release()

    def _finalize(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if self.open:
            try:
                from dspy.utils.callback import ACTIVE_CALL_ID

                entry = self.open.get(ACTIVE_CALL_ID.get() or "")
                if entry is not None and entry.call is not None:
                    entry.result = args[2] if len(args) > 2 else kwargs.get("result")
            except Exception as exc:
                guard.record_error("instrumentation.dspy.finalize", exc)
        return wrapped(*args, **kwargs)

    # -- spans ------------------------------------------------------------------------------------------------

    def _enabled(self) -> config.Settings | None:
        if not self.active:
            return None
        return _base.tracking_settings()

    def _push(self, call_id: str, handle: Call | _spans.Operation) -> None:
        token = otel_context.attach(trace.set_span_in_context(handle.span))
        self.open[call_id] = _Open(handle, token)

    def _pop(self, call_id: str) -> _Open | None:
        entry = self.open.pop(call_id, None)
        if entry is None:
            return None
        if trace.get_current_span() is entry.span:  # the context we attached: never detach a foreign one
            otel_context.detach(entry.token)
        else:
            guard.count("instrumentation.dspy.context_mismatch")
        return entry

    def module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        settings = self._enabled()
        if settings is None:
            return
        captured = None
        if settings.capture_prompts and inputs:
            message = {"role": "user", "parts": [content.text_part(_json(inputs))]}
            captured = {gen_ai.GEN_AI_INPUT_MESSAGES: [message], _base.OI_INPUT_VALUE: inputs}
        name = type(instance).__name__
        self._push(call_id, _spans.start(self.tracer, "invoke_agent", name, None, captured, settings=settings))

    def module_end(self, call_id: str, outputs: Any, exception: BaseException | None) -> None:
        """The end of a module or a tool."""
        entry = self._pop(call_id)
        operation = entry.operation if entry is not None else None
        if operation is None:
            return
        if exception is not None:
            operation.fail(exception)
            return
        captured = None
        if outputs is not None and operation.capture_out:
            data = _outputs_dict(outputs)
            if operation.operation == "execute_tool":
                captured = {gen_ai.GEN_AI_TOOL_CALL_RESULT: data}
            else:
                message = {"role": "assistant", "parts": [content.text_part(_json(data))], "finish_reason": "stop"}
                captured = {gen_ai.GEN_AI_OUTPUT_MESSAGES: [message], _base.OI_OUTPUT_VALUE: data}
        operation.finish(captured)

    def tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        settings = self._enabled()
        if settings is None:
            return
        arguments = inputs.get("kwargs", inputs) if isinstance(inputs, dict) else inputs
        name = get(instance, "name") or type(instance).__name__
        captured = {gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS: arguments}
        desc = get(instance, "desc")
        self._push(
            call_id,
            _spans.start(self.tracer, "execute_tool", name, None, captured, settings=settings, description=desc),
        )

    def lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        try:
            settings = self._enabled()
            if settings is None:
                return
            call = self._lm_call(instance, inputs, settings)
        except Exception as exc:
            guard.record_error("instrumentation.dspy.lm", exc)
            return
        self._push(call_id, call)

    def _lm_call(self, instance: Any, inputs: dict[str, Any], settings: config.Settings) -> Call:
        provider, model, address, port = _lm_route(instance)
        attributes = _base.base_attributes("chat", provider, address, port)
        if model:
            attributes[gen_ai.GEN_AI_REQUEST_MODEL] = model
        params = dict(get(instance, "kwargs", {}) or {})
        call_kwargs = inputs.get("kwargs") if isinstance(inputs, dict) else None
        if isinstance(call_kwargs, dict):
            params.update(call_kwargs)
        chat_request({k: params[k] for k in _LM_PARAMS if k in params}, attributes)
        messages = inputs.get("messages") if isinstance(inputs, dict) else None
        prompt = inputs.get("prompt") if isinstance(inputs, dict) else None
        if messages is None and isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        call_inputs = Inputs(chat_messages(messages)) if settings.capture_prompts and messages is not None else None
        return Call(self.tracer, "chat", model, attributes, settings, call_inputs, "litellm")

    def lm_end(self, call_id: str, outputs: Any, exception: BaseException | None) -> None:
        entry = self._pop(call_id)
        if entry is None or entry.call is None:
            return
        call = entry.call
        if exception is not None:
            call.fail(exception)
            return
        attributes: dict[str, Any] = {}
        result = entry.result
        if result is not None and not get(result, "cache_hit", False):
            attributes.update(litellm_usage_attributes(get(result, "usage")))
            response_model = get(result, "response_model")
            if isinstance(response_model, str):
                attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = response_model
        output = None
        if call.capture_out:
            output = []
            for item in seq(outputs):
                parts: list[Any] = []
                text = get(item, "text") if isinstance(item, dict) else item
                if isinstance(text, str):
                    parts.append(content.text_part(text))
                for tool in seq(get(item, "tool_calls") if isinstance(item, dict) else None):
                    function = get(tool, "function")
                    arguments = content.parse_arguments(get(function, "arguments"))
                    part = {"type": "tool_call", "id": get(tool, "id"), "name": get(function, "name", "")}
                    parts.append({**part, "arguments": arguments})
                output.append({"role": "assistant", "parts": parts, "finish_reason": "stop"})
        call.finish(attributes, output)


class DSPyInstrumentor(_base.PatchInstrumentor):
    """Instruments dspy (entry point `opentelemetry_instrumentor: dspy`)."""

    module = "dspy"
    dependencies = ("dspy >= 3.0",)
    tracer_name = __name__
    patch_factory = Patch
