"""LiteLLM: completion / acompletion / embedding / aembedding, streamed or not, and so the Router too (it calls
those four by name on the litellm module at call time).

One CLIENT span per call, started as the current span so the provider SDK call LiteLLM makes (OpenAI SDK, or
its own httpx handler) nests under it; the innermost span with usage is the one the ledger counts. Provider and
model come from LiteLLM's own routing (``litellm.get_llm_provider``), mapped to ``gen_ai.provider.name``. A
stream comes back as the caller's own CustomStreamWrapper behind a transparent proxy whose span ends exactly
once: exhaustion, close, context exit, error or garbage collection.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .. import config, guard, providers
from ..usage import read as read_usage
from . import _base
from ._base import Call
from ._core import Endpoint, RecordedStream, Request, begin, invoke, invoke_async
from .openai import (
    ChatRecorder,
    StreamedChoice,
    add_delta_texts,
    chat_inputs,
    chat_request,
    chat_response,
    embeddings_request,
    embeddings_response,
)

_PROVIDERS = providers.framework_names("litellm")  # the LiteLLM provider names the registry knows
# Where a provider's API lives when the call names no api_base (server.address / port).
_DEFAULT_HOSTS: dict[str, str] = {
    "openai": "api.openai.com",
    "anthropic": "api.anthropic.com",
    "groq": "api.groq.com",
    "mistral": "api.mistral.ai",
    "deepseek": "api.deepseek.com",
    "xai": "api.x.ai",
    "perplexity": "api.perplexity.ai",
    "gemini": "generativelanguage.googleapis.com",
}
# LiteLLM providers that speak the OpenAI chat wire format (stream_options.include_usage is understood).
_OPENAI_WIRE = frozenset({"openai", "azure", "text-completion-openai", "hosted_vllm", "openai_like", "custom_openai"})
# Requests are read like OpenAI's (LiteLLM takes OpenAI's parameters); responses are LiteLLM's OpenAI-shaped objects.
_CHAT = Endpoint("chat", chat_request, chat_response, chat_inputs, usage_shape="litellm")
_EMBEDDINGS = Endpoint("embeddings", embeddings_request, embeddings_response, usage_shape="litellm")
_WHERE = "instrumentation.litellm"
_FUNCTIONS = (("completion", "chat", False), ("acompletion", "chat", True))
_FUNCTIONS += (("embedding", "embeddings", False), ("aembedding", "embeddings", True))


def otel_provider(litellm_provider: str | None, host: str | None) -> str:
    """gen_ai.provider.name for a LiteLLM provider (an OpenAI-compatible known host names its own provider)."""
    if not litellm_provider:
        return (providers.for_host(host) if host else None) or "unknown"
    name = providers.convention_name(litellm_provider) or litellm_provider
    if name == "openai" and host:
        return providers.for_host(host) or name
    return name


def split_model(model: str) -> tuple[str | None, str]:
    """("anthropic", "claude-...") for "anthropic/claude-..." when the prefix is a provider we know, else (None, model).

    Pure string work (no litellm import), for frameworks such as DSPy that carry LiteLLM model strings.
    """
    prefix, sep, rest = model.partition("/")
    if sep and (prefix in _PROVIDERS or prefix in _OPENAI_WIRE or prefix in _DEFAULT_HOSTS):
        return prefix, rest
    return None, model


class _Route:
    __slots__ = ("address", "litellm_provider", "model", "port", "provider")

    def __init__(self, model: str, litellm_provider: str | None, api_base: str | None) -> None:
        self.model = model
        self.litellm_provider = litellm_provider
        host, port = None, None
        if api_base:
            try:
                parts = urlsplit(api_base)
                host = parts.hostname
                port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
            except ValueError:
                host = None
        elif litellm_provider in _DEFAULT_HOSTS:
            host, port = _DEFAULT_HOSTS[litellm_provider], 443
        self.address, self.port = host, port
        self.provider = otel_provider(litellm_provider, host)


_routes: dict[tuple[Any, ...], _Route] = {}


def resolve(model: str, custom_llm_provider: Any, api_base: Any) -> _Route:
    """The call's route as LiteLLM resolves it (memoised; LiteLLM's resolver is not free)."""
    key = (model, custom_llm_provider, api_base)
    route = _routes.get(key)
    if route is not None:
        return route
    litellm_provider, resolved_model, resolved_base = None, model, api_base
    try:
        import litellm

        resolved_model, litellm_provider, _, dynamic_base = litellm.get_llm_provider(
            model=model, custom_llm_provider=custom_llm_provider, api_base=api_base
        )
        resolved_base = api_base or dynamic_base
    except Exception:  # LiteLLM cannot route it: it will raise for the caller too; describe what we know
        litellm_provider, resolved_model = split_model(model)
        litellm_provider = custom_llm_provider if isinstance(custom_llm_provider, str) else litellm_provider
    route = _Route(resolved_model, litellm_provider, resolved_base if isinstance(resolved_base, str) else None)
    if len(_routes) < 4096:
        _routes[key] = route
    return route


def litellm_usage_attributes(usage: Any) -> dict[str, int]:
    """GenAI usage attributes of a LiteLLM Usage (OpenAI shape; prompt_tokens include cache reads and writes)."""
    return read_usage(usage, "litellm")


# --- streams ------------------------------------------------------------------------------------------------


def _add_texts(delta: Any, into: list[str]) -> None:
    """Append a LiteLLM delta's output text. LiteLLM keeps a delta's fields in its pydantic extras, where get() finds
    them only after a miss (~250 ns each): a delta with text alone, the common one, is read there directly."""
    extra = getattr(delta, "__pydantic_extra__", None)
    if type(extra) is dict:
        text = extra.get("content")
        if (
            type(text) is str
            and text
            and extra.get("tool_calls") is None
            and not extra.get("refusal")
            and extra.get("reasoning_content") is None
            and delta.__dict__.get("reasoning_content") is None
        ):
            into.append(text)
            return
    add_delta_texts(delta, into)


class StreamRecorder(ChatRecorder):
    """LiteLLM stream chunks (OpenAI chunk shape); usage from the chunk or from LiteLLM's hidden params."""

    __slots__ = ("source",)

    def __init__(self, call: Call, source: Any) -> None:
        super().__init__(call, False)
        self.source = source  # LiteLLM's CustomStreamWrapper: it keeps the chunks, usage-only ones it hid included

    def feed(self, chunk: Any) -> bool:
        if self.first_at is None:
            import time

            self.first_at = time.perf_counter()
        if not self.fields:
            self.fields = {"id": getattr(chunk, "id", None), "model": getattr(chunk, "model", None)}
        usage = getattr(chunk, "usage", None)  # LiteLLM deletes the attribute when there is none
        if usage is None:
            hidden = getattr(chunk, "_hidden_params", None)
            usage = hidden.get("usage") if isinstance(hidden, dict) else None
        if usage is not None and type(usage).__name__ != "UnreportedUsage":  # LiteLLM's estimate is not usage
            self.usage = usage
        for choice in getattr(chunk, "choices", None) or ():
            acc = self.choices.get(choice.index)
            if acc is None:
                acc = self.choices[choice.index] = StreamedChoice()
            if choice.finish_reason is not None:
                acc.finish = choice.finish_reason
            if self.capture:
                self.add_deltas(choice, acc)
            else:
                _add_texts(getattr(choice, "delta", None), self.seen)  # the text only, for an estimate
        return True

    def complete_at_close(self) -> bool:
        return bool(self.choices) and all(acc.finish for acc in self.choices.values())

    def outcome(self, complete: bool) -> tuple[dict[str, Any], list[Any] | None, Any]:
        if complete and self.usage is None:
            guard.guarded("instrumentation.litellm.stream", self._reported_usage)
        attributes, output, usage = super().outcome(complete)
        attributes.update(litellm_usage_attributes(usage))
        return attributes, output, None

    def _reported_usage(self) -> None:
        """At exhaustion: the provider's own usage among the chunks LiteLLM kept. Only a chunk's `usage` counts:
        the hidden usage LiteLLM fills in later may be an estimate."""
        for chunk in reversed(getattr(self.source, "chunks", None) or ()):
            usage = getattr(chunk, "usage", None)
            if usage is not None:
                self.usage = usage
                return


# --- the patch ----------------------------------------------------------------------------------------------


def _argument(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _stream_request(args: tuple, kwargs: dict) -> tuple[dict[str, Any], str | None]:
    """(body, model) as the input estimate reads them, should the stream's usage never arrive."""
    model = _argument(args, kwargs, 0, "model")
    model = model.rpartition("/")[2] if isinstance(model, str) else None  # "openai/gpt-4o": gpt-4o's tokenizer
    return (kwargs if len(args) < 2 else {**kwargs, "messages": args[1]}), model


class Patch(_base.WrapperPatch):
    """Wrappers on the litellm module's four entry points."""

    tracer_name = __name__

    def targets(self) -> list[tuple[Any, str, Any]]:
        module = sys.modules["litellm"]
        return [
            (module, name, self._async_wrapper(operation) if is_async else self._sync_wrapper(operation))
            for name, operation, is_async in _FUNCTIONS
        ]

    # -- wrappers --------------------------------------------------------------------------------------------

    def _sync_wrapper(self, operation: str) -> Any:
        def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
            call = self._begin(operation, args, kwargs)
            if call is None:
                return wrapped(*args, **kwargs)
            return self._on_result(call, operation, invoke(call, wrapped, args, kwargs), args, kwargs)

        return wrapper

    def _async_wrapper(self, operation: str) -> Any:
        async def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
            call = self._begin(operation, args, kwargs)
            if call is None:
                return await wrapped(*args, **kwargs)
            return self._on_result(call, operation, await invoke_async(call, wrapped, args, kwargs), args, kwargs)

        return wrapper

    def _begin(self, operation: str, args: tuple, kwargs: dict) -> Call | None:
        """Start the call's span (None: pass through untouched). Raises only BudgetExceededError."""
        if not self.active:
            return None
        begun = begin(self.tracer, lambda settings: self._request(operation, args, kwargs, settings), _WHERE)
        return begun[0] if begun is not None else None

    def _request(self, operation: str, args: tuple, kwargs: dict, settings: config.Settings) -> Request:
        model = _argument(args, kwargs, 0, "model")
        model = model if isinstance(model, str) else ""
        api_base = kwargs.get("api_base") or kwargs.get("base_url")
        route = resolve(model, kwargs.get("custom_llm_provider"), api_base)
        body = dict(kwargs)  # what the request describes: read, never sent
        body["model"] = route.model
        if operation == "chat":
            body["messages"] = _argument(args, kwargs, 1, "messages")
            if kwargs.get("stream") is True:
                self._ask_stream_usage(kwargs, route, settings)
        else:
            body["input"] = _argument(args, kwargs, 1, "input")
        endpoint = _CHAT if operation == "chat" else _EMBEDDINGS
        # nest: the provider SDK LiteLLM calls below records its span under ours, counted once
        stream = kwargs.get("stream") is True
        return Request(endpoint, body, route.provider, route.address, route.port, stream, nest=True)

    @staticmethod
    def _ask_stream_usage(kwargs: dict, route: _Route, settings: config.Settings) -> None:
        """Ask an OpenAI-wire host for stream usage the caller did not ask for, through the request body only:
        LiteLLM keeps usage-only chunks it was not asked for from the caller, so the caller's stream is the same
        (its last chunk's hidden usage becomes the provider's count instead of LiteLLM's estimate)."""
        if kwargs.get("stream_options") is not None or route.litellm_provider not in _OPENAI_WIRE:
            return
        if not settings.stream_include_usage or not route.address:
            return
        if not _base.host_matches(route.address, settings.stream_usage_hosts):
            return
        extra_body = kwargs.get("extra_body")
        if extra_body is None:
            kwargs["extra_body"] = {"stream_options": {"include_usage": True}}
        elif isinstance(extra_body, Mapping) and "stream_options" not in extra_body:
            kwargs["extra_body"] = {**extra_body, "stream_options": {"include_usage": True}}

    def _on_result(self, call: Call, operation: str, result: Any, args: tuple, kwargs: dict) -> Any:
        try:
            if operation == "chat" and hasattr(result, "completion_stream") and hasattr(result, "chunks"):
                recorder = StreamRecorder(call, result)
                recorder.request = _stream_request(args, kwargs)
                return RecordedStream(result, recorder)
            endpoint = _CHAT if operation == "chat" else _EMBEDDINGS
            attributes, output, usage = endpoint.response(result, call.capture_out)
            call.finish(attributes, output, usage)
        except Exception as exc:
            guard.record_error("instrumentation.litellm.response", exc)
            call.finish({})
        return result


# --- the instrumentor ---------------------------------------------------------------------------------------


class LiteLLMInstrumentor(_base.PatchInstrumentor):
    """Instruments litellm (entry point `opentelemetry_instrumentor: litellm`); the Router is covered too."""

    module = "litellm"
    dependencies = ("litellm >= 1.60",)
    tracer_name = __name__
    patch_factory = Patch
