"""LlamaIndex (llama-index-core >= 0.10.20): query, retrieve, synthesize, LLM chat/complete (sync, async, stream),
embeddings, tool calls and agent runs, through llama-index's own instrumentation dispatcher.

One span handler and one event handler sit on the root dispatcher. LlamaIndex opens a dispatcher span around
every decorated method (dozens per query, most of them private wrappers such as ``_query`` or
``get_response``); we emit an OTel span only for the meaningful ones (see :data:`_KINDS`) and make the others
transparent, so a query reads ``query -> retrieval -> embeddings`` and ``query -> synthesize -> chat`` instead of
fifteen levels of wrappers. An emitted span is the *current* OTel span while its method runs, so the provider
SDK's own span (OpenAI, Anthropic instrumentors) nests under the framework span and the CostSpanProcessor counts
the call once: the innermost span with usage is counted, the framework span is marked counted=false.

Streams: LlamaIndex closes its dispatcher span when ``stream_chat`` returns the generator, before the HTTP
request is made. The LLM span stays open until the stream ends (end event, error, early close or garbage
collection), and the ``stream_*`` methods of LLM classes are wrapped so that each step of the returned generator
runs with the LLM span current: the SDK request made on the first step then nests under it too.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import sys
import threading
import time
from collections.abc import AsyncGenerator, Generator
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from .. import call_context, config, guard, providers, semconv
from .. import prompts as _prompts
from ..content import media_part, parse_arguments, text_part
from ..usage import usage_attributes
from . import _base, _spans
from ._base import Call, Inputs, finish_reason, get, seq

__all__ = ["LlamaIndexInstrumentor"]

_MODULE = "llama_index.core"

# Not in the GenAI conventions (yet): how many texts one embeddings call embedded.

_LLM_CHAT = ("chat", "achat", "stream_chat", "astream_chat")
_LLM_COMPLETE = ("complete", "acomplete", "stream_complete", "astream_complete")
_STREAM_METHODS = ("stream_chat", "astream_chat", "stream_complete", "astream_complete")
_EMBED_ONE = ("get_query_embedding", "aget_query_embedding", "get_text_embedding", "aget_text_embedding")
_EMBED_MANY = ("get_text_embedding_batch", "aget_text_embedding_batch")
# LLM methods that take a prompt template (`prompt`): its identity goes onto the model calls made inside.
_PREDICT = frozenset(
    {
        "predict",
        "apredict",
        "stream",
        "astream",
        "structured_predict",
        "astructured_predict",
        "stream_structured_predict",
        "astream_structured_predict",
    }
)
_PROMPT_KEYS = (_prompts.GEN_AI_PROMPT_NAME, _prompts.GEN_AI_PROMPT_VERSION, _prompts.MLTRACK_PROMPT_HASH)


def _detach(token: Any, ctx: Any) -> None:
    """Undo our attach when it is still the innermost one in this very context; otherwise leave it alone.

    A dispatcher span may exit in another context than it entered (a Future's done-callback); resetting there
    would raise, and OTel's detach would log "Failed to detach context" for a situation that is not an error.
    """
    if token is None or otel_context.get_current() is not ctx:
        return
    if isinstance(token, contextvars.Token):
        with contextlib.suppress(ValueError, RuntimeError):  # created in another Context holding the same value
            token.var.reset(token)
    else:  # a custom runtime context
        otel_context.detach(token)


# --- prompt identity -------------------------------------------------------------------------------------------


def _template_content(template: Any, llm: Any) -> Any:
    """What a LlamaIndex prompt template sends: its text, or its messages' roles and contents."""
    select = getattr(template, "select", None)  # SelectorPromptTemplate: the template chosen for this LLM
    if callable(select) and hasattr(template, "default_template"):
        template = select(llm)
    text = getattr(template, "template", None)
    if isinstance(text, str):
        return {"template": text}
    messages = getattr(template, "message_templates", None)
    if isinstance(messages, list):
        out = []
        for message in messages:
            role = getattr(message, "role", "")
            out.append({"role": str(getattr(role, "value", role)), "content": str(getattr(message, "content", ""))})
        return {"messages": out}
    return {"template": str(template.get_template(llm=llm))}


def prompt_identity(template: Any, llm: Any = None) -> dict[str, str] | None:
    """gen_ai.prompt.* of a LlamaIndex prompt template: the content hash of its text or messages, the version
    from metadata ``prompt_version`` else that hash, the name from metadata ``prompt_name`` (or ``name``) else its
    prompt type when it is a built-in one (``text_qa``, ``refine``...)."""
    try:
        digest = _prompts.content_hash(_template_content(template, llm))
    except Exception as exc:  # an unusual template: no identity rather than a failed call
        guard.record_error("llama_index.prompt", exc)
        return None
    metadata = getattr(template, "metadata", None)
    metadata = metadata if isinstance(metadata, dict) else {}
    version = metadata.get("prompt_version")
    identity = {
        _prompts.GEN_AI_PROMPT_VERSION: str(version) if isinstance(version, (str, int)) and version != "" else digest,
        _prompts.MLTRACK_PROMPT_HASH: digest,
    }
    name = metadata.get("prompt_name") or metadata.get("name")
    if not (isinstance(name, str) and name):
        kind = metadata.get("prompt_type")
        kind = getattr(kind, "value", kind)
        name = kind if isinstance(kind, str) and kind and kind != "custom" else None
    if name:
        identity[_prompts.GEN_AI_PROMPT_NAME] = name
    return identity


# --- classification --------------------------------------------------------------------------------------------


class _Types:
    """The llama-index base classes we classify by, resolved once llama_index.core is imported."""

    def __init__(self) -> None:
        from llama_index.core.base.base_query_engine import BaseQueryEngine
        from llama_index.core.base.base_retriever import BaseRetriever
        from llama_index.core.base.embeddings.base import BaseEmbedding
        from llama_index.core.base.llms.base import BaseLLM
        from llama_index.core.response_synthesizers.base import BaseSynthesizer
        from llama_index.core.tools.types import BaseTool

        self.llm = BaseLLM
        self.embedding = BaseEmbedding
        self.query_engine = BaseQueryEngine
        self.retriever = BaseRetriever
        self.synthesizer = BaseSynthesizer
        self.tool = BaseTool


def _classify(types: _Types, instance: Any, method: str) -> str | None:
    if isinstance(instance, types.llm):
        if method in _LLM_CHAT:
            return "chat"
        if method in _LLM_COMPLETE:
            return "text_completion"
        return None
    if isinstance(instance, types.embedding):
        return "embeddings" if method in _EMBED_ONE or method in _EMBED_MANY else None
    if isinstance(instance, types.query_engine):
        return "query" if method in ("query", "aquery") else None
    if isinstance(instance, types.retriever):
        return "retrieval" if method in ("retrieve", "aretrieve") else None
    if isinstance(instance, types.synthesizer):
        return "synthesize" if method in ("synthesize", "asynthesize") else None
    if isinstance(instance, types.tool):
        return "execute_tool" if method in ("call", "acall", "__call__") else None
    if method == "run":
        workflows = sys.modules.get("workflows")  # llama-index-workflows, only if the application loaded it
        workflow_cls = getattr(workflows, "Workflow", None)
        if workflow_cls is not None and isinstance(instance, workflow_cls):
            agent = sys.modules.get("llama_index.core.agent.workflow.base_agent")
            agent_cls = getattr(agent, "BaseWorkflowAgent", None)
            return "invoke_agent" if agent_cls is not None and isinstance(instance, agent_cls) else "invoke_workflow"
    return None


def _package(instance: Any) -> str:
    """The integration package of a llama-index class: "openai" for llama_index.llms.openai.base.OpenAI."""
    parts = (type(instance).__module__ or "").split(".")
    return parts[2] if len(parts) > 2 and parts[0] == "llama_index" else ""


def _provider(instance: Any) -> str:
    package = _package(instance)
    host = _host(instance)[0]
    by_host = providers.for_host(host) if host else None
    if package in ("openai", "openai_like"):  # OpenAI's client: the provider of the host it is pointed at
        return by_host or "openai"
    return providers.convention_name(package) or by_host or (package or type(instance).__name__.lower())


def _host(instance: Any) -> tuple[str | None, int | None]:
    base = getattr(instance, "api_base", None) or getattr(instance, "base_url", None)
    if not isinstance(base, str) or not base:
        return None, None
    try:
        parts = urlsplit(base)
        return parts.hostname, parts.port
    except ValueError:
        return None, None


def _model(instance: Any) -> str | None:
    for name in ("model", "model_name", "model_id", "deployment_name"):
        value = getattr(instance, name, None)
        if isinstance(value, str) and value:
            return value
    return None


# --- content: llama-index messages -> GenAI messages ---------------------------------------------------------


def _role(message: Any) -> str:
    role = get(message, "role", "user")
    value = getattr(role, "value", role)
    return value if isinstance(value, str) else str(value)


def _block_part(block: Any) -> dict[str, Any] | None:
    kind = getattr(block, "block_type", None)
    if kind == "text":
        return text_part(getattr(block, "text", ""))
    if kind == "thinking":
        return {"type": "reasoning", "content": getattr(block, "content", None) or ""}
    if kind == "tool_call":
        return {
            "type": "tool_call",
            "id": getattr(block, "tool_call_id", None),
            "name": getattr(block, "tool_name", ""),
            "arguments": parse_arguments(getattr(block, "tool_kwargs", None)),
        }
    if kind in ("image", "audio", "video", "document"):
        modality = "document" if kind == "document" else kind
        url = getattr(block, "url", None)
        mime = getattr(block, f"{kind}_mimetype", None) or getattr(block, "document_mimetype", None)
        if url:
            return media_part(str(url), modality, mime)
        path = getattr(block, "path", None)
        if path:
            return {"type": "uri", "modality": modality, "uri": str(path)}
        return {"type": "blob", "modality": modality, "mime_type": mime} if mime else {"type": kind}
    if kind == "cache":
        return None
    return {"type": kind if isinstance(kind, str) else "unknown"}


def _message(message: Any) -> dict[str, Any]:
    role = _role(message)
    extra = get(message, "additional_kwargs", {})
    blocks = seq(getattr(message, "blocks", None))
    if role in ("tool", "function"):
        text = "".join(getattr(b, "text", "") for b in blocks if getattr(b, "block_type", None) == "text")
        part = {"type": "tool_call_response", "id": get(extra, "tool_call_id"), "response": text}
        return {"role": "tool", "parts": [part]}
    parts = [p for p in (_block_part(b) for b in blocks) if p is not None]
    if not blocks and get(message, "content") is not None:
        parts.append(text_part(get(message, "content")))
    if not any(p.get("type") == "tool_call" for p in parts):
        for call in seq(get(extra, "tool_calls")):  # OpenAI-style tool calls kept in additional_kwargs
            function = get(call, "function")
            parts.append(
                {
                    "type": "tool_call",
                    "id": get(call, "id"),
                    "name": get(function, "name", ""),
                    "arguments": parse_arguments(get(function, "arguments")),
                }
            )
    return {"role": role, "parts": parts}


def _messages(messages: Any) -> list[Any]:
    return [_message(m) for m in seq(messages)]


def _tool_definitions(tools: Any) -> list[Any] | None:
    if not tools:
        return None
    out = []
    for tool in seq(tools):
        spec = get(tool, "function") or tool
        definition = {"type": get(tool, "type", "function"), "name": get(spec, "name", ""), "description": ""}
        description = get(spec, "description")
        if isinstance(description, str):
            definition["description"] = description
        parameters = get(spec, "parameters") or get(spec, "input_schema")
        if parameters is not None:
            definition["parameters"] = parameters
        out.append(definition)
    return out


# llama_index.llms.<package> -> the usage shape of the SDK it calls (usage.SHAPES); others call OpenAI-shaped APIs.
_PACKAGE_USAGE = {
    "anthropic": "anthropic",
    "bedrock": "anthropic",
    "bedrock_converse": "bedrock.converse",
    "gemini": "gemini",
    "google_genai": "gemini",
    "vertex": "gemini",
    "cohere": "cohere",
    "ollama": "ollama",
}


def usage_shape(instance: Any) -> str:
    """The usage shape of the SDK a LlamaIndex LLM class calls, by its integration package, not by the provider it
    names (an OpenAI class pointed at Anthropic's OpenAI-compatible API reports OpenAI usage). OpenAI's classes:
    chat or Responses, told apart by the usage's own keys."""
    return _PACKAGE_USAGE.get(_package(instance), "openai.chat")


def _usage(response: Any) -> Any:
    """Usage from a ChatResponse/CompletionResponse: the raw provider response's, else llama-index's counts."""
    raw = get(response, "raw")
    usage = get(raw, "usage")
    if usage is not None:
        return usage
    extra = get(response, "additional_kwargs", {})
    if isinstance(extra, dict) and ("prompt_tokens" in extra or "input_tokens" in extra):
        return extra
    return None


def _choice_reason(raw: Any) -> Any:
    choices = seq(get(raw, "choices"))
    if choices:
        return get(choices[0], "finish_reason")
    return get(raw, "stop_reason") or get(raw, "finish_reason")


# --- open spans ------------------------------------------------------------------------------------------------


class _Open:
    """One emitted span between its dispatcher enter and its end."""

    __slots__ = (
        "call",
        "ctx",
        "done",
        "first_at",
        "id_",
        "instance_id",
        "kind",
        "lock",
        "operation",
        "prompt",
        "response",
        "span",
        "stream",
        "token",
    )

    def __init__(self, kind: str, handle: Call | _spans.Operation, instance_id: int) -> None:
        self.id_ = ""
        self.first_at: float | None = None
        self.kind = kind
        self.span = handle.span
        self.call = handle if isinstance(handle, Call) else None  # a model call (chat, completion, embeddings)
        self.operation = handle if isinstance(handle, _spans.Operation) else None  # any other span
        self.instance_id = instance_id
        self.ctx = trace.set_span_in_context(self.span)
        self.token: Any = None
        self.response: Any = None
        self.stream = False  # the method returned a generator: the span outlives the dispatcher span
        self.prompt: dict[str, Any] | None = None  # the prompt identity the call carries, for a stream's SDK call
        self.done = False
        self.lock = threading.Lock()

    def claim(self) -> bool:
        """True exactly once: for whoever ends the span."""
        with self.lock:
            if self.done:
                return False
            self.done = True
            return True


class _Tracker:
    """The state shared by the span handler and the event handler (pydantic models keep their own fields)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.types = _Types()
        self.open: dict[str, _Open] = {}
        self.by_span: dict[int, _Open] = {}  # id(OTel span) -> state, to recognise our span as the current one
        self.pending: dict[int, _Open] = {}  # id(returned generator) -> state, claimed by the stream wrapper
        self.streams: dict[str, _Open] = {}  # llama span id -> state of a stream still being consumed
        self.kinds: dict[tuple[type, str], str | None] = {}
        self.prompt_tokens: dict[str, Any] = {}  # llama span id of a predict-like call -> its call_context token
        self.enabled = True

    # -- dispatcher span lifecycle --

    def enter(self, id_: str, bound_args: Any, instance: Any) -> None:
        if instance is None or not self.enabled:
            return
        method = id_.partition("-")[0].rpartition(".")[2]
        key = (type(instance), method)
        try:
            kind = self.kinds[key]
        except KeyError:
            kind = self.kinds[key] = _classify(self.types, instance, method)
            if kind in ("chat", "text_completion"):
                _patch_streams(type(instance))
        if kind is None:
            if method in _PREDICT and bound_args is not None and isinstance(instance, self.types.llm):
                self._enter_prompt(id_, bound_args.arguments.get("prompt"), instance)
            return
        settings = _base.tracking_settings()
        if settings is None:
            return
        if kind == "execute_tool":
            current = self.by_span.get(id(trace.get_current_span()))
            if current is not None and current.kind == "execute_tool" and current.instance_id == id(instance):
                return  # FunctionTool.__call__ -> call: one tool span
        arguments = bound_args.arguments if bound_args is not None else {}
        if kind in ("chat", "text_completion", "embeddings"):
            state = self._start_model(kind, method, instance, arguments, settings)
        else:
            state = self._start_internal(kind, instance, arguments, settings)
        state.id_ = id_
        self.open[id_] = state
        self.by_span[id(state.span)] = state
        state.token = otel_context.attach(state.ctx)

    def _enter_prompt(self, id_: str, template: Any, llm: Any) -> None:
        """llm.predict(prompt, ...) and its kin: the model calls made inside carry the prompt's identity."""
        if template is None or _base.tracking_settings() is None:
            return
        identity = prompt_identity(template, llm)
        if identity:
            self.prompt_tokens[id_] = call_context.attach(identity)

    def _exit_prompt(self, id_: str) -> None:
        token = self.prompt_tokens.pop(id_, None)
        if token is not None and not call_context.detach(token):
            guard.count("llama_index.context.unbalanced")

    def exit(self, id_: str, result: Any) -> None:
        if self.prompt_tokens:
            self._exit_prompt(id_)
        state = self.open.pop(id_, None)
        if state is None:
            return
        _detach(state.token, state.ctx)
        if state.kind in ("chat", "text_completion") and (
            isinstance(result, (Generator, AsyncGenerator)) and state.response is None
        ):
            state.stream = True  # ends on the end event, an error, early close or garbage collection
            self.streams[id_] = state
            self.pending[id(result)] = state
            guard.finalize_deferred(result, self._collected, state)
            return
        if state.kind in ("query", "synthesize"):
            # A streaming response: the answer is produced while the caller reads response_gen, after the query
            # returned. Keep the span open until then, and current during each step, so the LLM call nests.
            gen = getattr(result, "response_gen", None)
            if isinstance(gen, (Generator, AsyncGenerator)):
                try:
                    result.response_gen = _steps(gen, state)
                except Exception as exc:  # a frozen or slotted response type: end the span now
                    guard.record_error("instrumentation.llama_index.stream", exc)
                else:
                    state.stream = True
                    return
        self.finish(state, result)

    def drop(self, id_: str, err: BaseException | None) -> None:
        if self.prompt_tokens:
            self._exit_prompt(id_)
        state = self.open.pop(id_, None)
        if state is None:
            return
        _detach(state.token, state.ctx)
        self.finish(state, None, error=err)

    def _collected(self, state: _Open) -> None:
        if not state.done:
            self.finish(state, None, complete=False)

    # -- starting spans --

    def _start_model(self, kind: str, method: str, instance: Any, arguments: dict, settings: config.Settings) -> _Open:
        """A model call's span: chat, text_completion or embeddings."""
        provider, model = _provider(instance), _model(instance)
        attributes = _base.base_attributes(kind, provider, *_host(instance))
        if model:
            attributes[gen_ai.GEN_AI_REQUEST_MODEL] = model
        inputs = None
        if kind == "embeddings":
            texts = arguments.get("texts")
            attributes[semconv.MLTRACK_EMBEDDINGS_INPUT_COUNT] = len(texts) if isinstance(texts, list) else 1
        else:
            temperature = getattr(instance, "temperature", None)
            if type(temperature) in (int, float):
                attributes[gen_ai.GEN_AI_REQUEST_TEMPERATURE] = float(temperature)
            max_tokens = getattr(instance, "max_tokens", None)
            if type(max_tokens) is int:
                attributes[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
            if "stream" in method:
                attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
        if settings.capture_prompts and kind != "embeddings":
            extra = arguments.get("kwargs") or {}
            tools = _tool_definitions(extra.get("tools")) if isinstance(extra, dict) else None
            if kind == "chat":
                inputs = Inputs(_messages(arguments.get("messages")), None, tools)
            else:
                prompt = arguments.get("prompt")
                inputs = Inputs([{"role": "user", "parts": [text_part(prompt)]}] if prompt is not None else [])
        # LlamaIndex hands over the raw response of whichever SDK its LLM class uses: its usage shape is detected.
        call = Call(self.tracer, kind, model, attributes, settings, inputs, usage_shape(instance))
        state = _Open(kind, call, id(instance))
        if _prompts.GEN_AI_PROMPT_VERSION in attributes:  # a stream's request is sent later: keep it for the steps
            state.prompt = {k: attributes[k] for k in _PROMPT_KEYS if k in attributes}
        return state

    def _start_internal(self, kind: str, instance: Any, arguments: dict, settings: config.Settings) -> _Open:
        name = type(instance).__name__
        attributes: dict[str, Any] = {}
        inputs: dict[str, Any] | None = None
        description = None
        if kind == "retrieval":
            query = arguments.get("str_or_query_bundle")
            inputs = {gen_ai.GEN_AI_RETRIEVAL_QUERY_TEXT: query if isinstance(query, str) else get(query, "query_str")}
            index_id = getattr(getattr(instance, "_index", None), "index_id", None)  # a vector index's retriever
            if isinstance(index_id, str) and index_id:
                attributes[gen_ai.GEN_AI_DATA_SOURCE_ID] = index_id
        elif kind == "execute_tool":
            metadata = getattr(instance, "metadata", None)
            name = getattr(metadata, "name", None) or name
            description = getattr(metadata, "description", None)
            if settings.capture_prompts:
                args = {k: v for k, v in arguments.items() if k != "self"}
                call_args = {**dict(args.get("kwargs") or {}), **{k: v for k, v in args.items() if k != "kwargs"}}
                if call_args.get("args") == ():
                    call_args.pop("args")
                inputs = {gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS: call_args}
        elif kind == "invoke_agent":
            name = getattr(instance, "name", None) or name
        operation: str | None = kind
        if kind in ("query", "synthesize"):  # framework steps with no GenAI operation of their own
            operation, name = None, f"{kind} {name}"
        handle = _spans.start(
            self.tracer, operation, name, attributes, inputs, settings=settings, description=description
        )
        return _Open(kind, handle, id(instance))

    # -- events --

    def event(self, event: Any) -> None:
        state = self.open.get(event.span_id) if event.span_id else None
        if state is None:
            state = self._streaming(event.span_id)
            if state is None:
                return
        name = type(event).__name__
        if name in ("LLMChatEndEvent", "LLMCompletionEndEvent"):
            state.response = event.response
            if state.stream:
                self.finish(state, None)
        elif name in ("LLMChatInProgressEvent", "LLMCompletionInProgressEvent"):
            if state.first_at is None:
                state.first_at = time.perf_counter()
        elif name == "ExceptionEvent" and state.stream:
            exc = getattr(event, "exception", None)
            if isinstance(exc, GeneratorExit):
                self.finish(state, None, complete=False)
            else:
                self.finish(state, None, error=exc)
        elif name == "EmbeddingEndEvent":
            state.response = event
        elif name == "RetrievalEndEvent":
            state.response = getattr(event, "nodes", None)

    def _streaming(self, span_id: str | None) -> _Open | None:
        if not span_id:
            return None
        return self.streams.get(span_id)

    # -- ending spans --

    def finish(self, state: _Open, result: Any, error: BaseException | None = None, complete: bool = True) -> None:
        if not state.claim():
            return
        self.by_span.pop(id(state.span), None)
        if state.stream:
            self.streams.pop(state.id_, None)
        try:
            if state.operation is not None:
                response = state.response if state.response is not None and state.kind == "retrieval" else result
                self._finish_internal(state.operation, state.kind, response, error)
            else:
                self._finish_model(state, result, error, complete)
        except Exception as exc:
            guard.record_error("instrumentation.llama_index.finish", exc)
            if state.span.is_recording():
                state.span.end()

    def _finish_model(self, state: _Open, result: Any, error: BaseException | None, complete: bool) -> None:
        call = state.call
        assert call is not None
        attributes: dict[str, Any] = {}
        output = usage = None
        if state.kind == "embeddings":
            vectors = result if isinstance(result, list) else None
            if vectors and isinstance(vectors[0], list):
                attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(vectors[0])
            elif vectors and isinstance(vectors[0], float):
                attributes[gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(vectors)
        else:
            response = state.response if state.response is not None else result
            if state.stream:
                attributes[semconv.MLTRACK_STREAM_COMPLETE] = complete and error is None
                if state.first_at is not None:
                    attributes[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = state.first_at - call.t0
            if response is not None and error is None:
                raw = get(response, "raw")
                response_model = get(raw, "model")
                if isinstance(response_model, str):
                    attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = response_model
                response_id = get(raw, "id")
                if isinstance(response_id, str):
                    attributes[gen_ai.GEN_AI_RESPONSE_ID] = response_id
                reason = finish_reason(_choice_reason(raw), "stop" if complete else _base.UNFINISHED)
                attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (reason,)
                usage = _usage(response)
                if call.capture_out:
                    message = get(response, "message")
                    if message is not None:
                        output = [{**_message(message), "finish_reason": reason}]
                    else:
                        text = get(response, "text")
                        parts = [text_part(text)] if text is not None else []
                        output = [{"role": "assistant", "parts": parts, "finish_reason": reason}]
            if usage is not None:  # the raw response's usage: the SDK below the LLM class decides its shape
                attributes.update(usage_attributes(usage, "anthropic" if call.usage_shape == "anthropic" else None))
                usage = None
        call.finish(attributes, output, usage, error)

    def _finish_internal(
        self, operation: _spans.Operation, kind: str, result: Any, error: BaseException | None
    ) -> None:
        if error is not None:
            operation.fail(error)
            return
        outputs = None
        if operation.capture_out and kind == "retrieval":
            documents = [
                {"id": get(get(n, "node"), "node_id") or get(n, "node_id"), "score": get(n, "score")}
                for n in seq(result)
            ]
            outputs = {gen_ai.GEN_AI_RETRIEVAL_DOCUMENTS: documents}
        elif operation.capture_out and kind == "execute_tool":
            output = get(result, "content")
            if output is None and result is not None:
                output = str(result)
            outputs = {gen_ai.GEN_AI_TOOL_CALL_RESULT: output if isinstance(output, str) else None}
        operation.finish(outputs)

    def close(self) -> None:
        for state in list(self.open.values()):
            self.finish(state, None, complete=False)
        self.open.clear()


_tracker: _Tracker | None = None
_lock = threading.RLock()


# --- streams: run each step of a returned generator with the LLM span current ---------------------------------

_PATCHED = "_mltrack_original"
_patched: list[tuple[type, str, Any]] = []  # (class, method name, original attribute) to restore exactly


def _end_steps(state: _Open, complete: bool, error: BaseException | None) -> None:
    tracker = _tracker
    if tracker is not None and not state.done:
        tracker.finish(state, None, error=error, complete=complete)


def _sync_steps(gen: Generator[Any, Any, Any], state: _Open) -> Generator[Any, Any, Any]:
    complete, error = False, None
    try:
        while True:
            token = otel_context.attach(state.ctx)
            prompt = call_context.attach(state.prompt) if state.prompt else None
            try:
                item = next(gen)
            except StopIteration:
                complete = True
                return
            except Exception as exc:
                error = exc
                raise
            finally:
                if prompt is not None:
                    call_context.detach(prompt)
                _detach(token, state.ctx)
            yield item
    finally:
        if not state.done:  # closed early, failed, or llama-index did not report the end
            if not complete and error is None:
                gen.close()
            _end_steps(state, complete, error)


async def _async_steps(gen: AsyncGenerator[Any, Any], state: _Open) -> AsyncGenerator[Any, Any]:
    complete, error = False, None
    try:
        while True:
            token = otel_context.attach(state.ctx)
            prompt = call_context.attach(state.prompt) if state.prompt else None
            try:
                item = await gen.__anext__()
            except StopAsyncIteration:
                complete = True
                return
            except Exception as exc:
                error = exc
                raise
            finally:
                if prompt is not None:
                    call_context.detach(prompt)
                _detach(token, state.ctx)
            yield item
    finally:
        if not state.done:
            if not complete and error is None:
                await gen.aclose()
            _end_steps(state, complete, error)


def _steps(gen: Any, state: _Open) -> Any:
    """gen wrapped so that each step runs with state's span current; the span ends with the stream."""
    wrapped = _sync_steps(gen, state) if isinstance(gen, Generator) else _async_steps(gen, state)
    guard.finalize_deferred(wrapped, _end_steps, state, False, None)  # never iterated at all
    return wrapped


def _claim_stream(result: Any) -> Any:
    tracker = _tracker
    state = tracker.pending.pop(id(result), None) if tracker is not None else None
    if state is None or state.done or not isinstance(result, (Generator, AsyncGenerator)):
        return result
    return _steps(result, state)


def _stream_wrapper(original: Any) -> Any:
    """A replacement for an LLM class's stream method that hands back a context-keeping generator."""
    if inspect.iscoroutinefunction(original) or inspect.iscoroutinefunction(getattr(original, "__wrapped__", None)):

        async def astream(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = await original.__get__(self, type(self))(*args, **kwargs)
            return guard.guarded("instrumentation.llama_index.stream", _claim_stream, result, default=result)

        wrapper: Any = astream
    else:

        def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original.__get__(self, type(self))(*args, **kwargs)
            return guard.guarded("instrumentation.llama_index.stream", _claim_stream, result, default=result)

        wrapper = stream
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        value = getattr(original, attr, None)
        if value is not None:
            setattr(wrapper, attr, value)
    wrapper.__dict__.update({k: v for k, v in getattr(original, "__dict__", {}).items() if k.startswith("__")})
    setattr(wrapper, _PATCHED, original)
    return wrapper


def _patch_streams(cls: type) -> None:
    """Wrap the stream methods that cls and its bases define (each class once; restored by uninstrument)."""
    with _lock:
        if _tracker is None:
            return
        for klass in cls.__mro__:
            for name in _STREAM_METHODS:
                original = klass.__dict__.get(name)
                if original is None or getattr(original, _PATCHED, None) is not None or not callable(original):
                    continue
                if getattr(original, "__isabstractmethod__", False):
                    continue
                try:
                    setattr(klass, name, _stream_wrapper(original))
                except (AttributeError, TypeError) as exc:
                    guard.record_error("instrumentation.llama_index.patch", exc)
                    continue
                _patched.append((klass, name, original))


def _patch_known_llms(base: type) -> None:
    seen: set[type] = set()
    stack = [base]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
                _patch_streams(sub)


def _unpatch_streams() -> None:
    with _lock:
        while _patched:
            klass, name, original = _patched.pop()
            if getattr(klass.__dict__.get(name), _PATCHED, None) is original:
                setattr(klass, name, original)


# --- the dispatcher handlers ---------------------------------------------------------------------------------


def _make_handlers(tracker: _Tracker) -> tuple[Any, Any]:
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.span import SimpleSpan
    from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

    class MltrackSpanHandler(BaseSpanHandler[SimpleSpan]):  # type: ignore[misc]
        """Opens an OTel span for each meaningful llama-index span (see mltrack_otel.instrumentation.llama_index)."""

        @classmethod
        def class_name(cls) -> str:
            return "MltrackSpanHandler"

        def span_enter(
            self, id_: str, bound_args: Any, instance: Any = None, parent_id: Any = None, tags: Any = None, **kw: Any
        ) -> None:
            try:
                tracker.enter(id_, bound_args, instance)
            except Exception as exc:
                guard.record_error("instrumentation.llama_index.enter", exc)

        def span_exit(self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kw: Any) -> None:
            try:
                tracker.exit(id_, result)
            except Exception as exc:
                guard.record_error("instrumentation.llama_index.exit", exc)

        def span_drop(self, id_: str, bound_args: Any, instance: Any = None, err: Any = None, **kw: Any) -> None:
            try:
                tracker.drop(id_, err)
            except Exception as exc:
                guard.record_error("instrumentation.llama_index.drop", exc)

        def close(self) -> None:
            guard.guarded("instrumentation.llama_index.close", tracker.close)

        # Abstract in BaseSpanHandler; unused because the three methods above are overridden.
        def new_span(self, *args: Any, **kwargs: Any) -> None:
            return None

        def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
            return None

        def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
            return None

    class MltrackEventHandler(BaseEventHandler):  # type: ignore[misc]
        """Reads responses, usage and stream progress from llama-index events into the open spans."""

        @classmethod
        def class_name(cls) -> str:
            return "MltrackEventHandler"

        def handle(self, event: Any, **kwargs: Any) -> None:
            try:
                tracker.event(event)
            except Exception as exc:
                guard.record_error("instrumentation.llama_index.event", exc)

    return MltrackSpanHandler(), MltrackEventHandler()


class _Installed:
    def __init__(self, tracker: _Tracker, span_handler: Any, event_handler: Any) -> None:
        self.tracker, self.span_handler, self.event_handler = tracker, span_handler, event_handler


_installed: _Installed | None = None


def _install(tracer_provider: Any) -> None:
    global _installed, _tracker
    from llama_index.core.base.llms.base import BaseLLM
    from llama_index.core.instrumentation import get_dispatcher

    with _lock:
        if _installed is not None:
            return
        tracker = _Tracker(_base.get_tracer(__name__, tracer_provider))
        span_handler, event_handler = _make_handlers(tracker)
        _tracker = tracker
        _patch_known_llms(BaseLLM)
        dispatcher = get_dispatcher()
        dispatcher.add_span_handler(span_handler)
        dispatcher.add_event_handler(event_handler)
        _installed = _Installed(tracker, span_handler, event_handler)


def _remove() -> None:
    global _installed, _tracker
    with _lock:
        installed = _installed
        if installed is None:
            return
        _installed = None
        from llama_index.core.instrumentation import get_dispatcher

        dispatcher = get_dispatcher()
        # Remove exactly our two handlers (by identity), whatever else the application attached.
        dispatcher.span_handlers = [h for h in dispatcher.span_handlers if h is not installed.span_handler]
        dispatcher.event_handlers = [h for h in dispatcher.event_handlers if h is not installed.event_handler]
        _unpatch_streams()
        installed.tracker.enabled = False
        installed.tracker.close()
        _tracker = None


class _Patch:
    """The dispatcher handlers as one patch: installed with the latest tracer provider, removed exactly."""

    def __init__(self) -> None:
        self.active = False
        self.tracer_provider: Any = None

    def apply(self, _tracer_provider: Any = None) -> None:
        _install(self.tracer_provider)  # set_tracer_provider's, even when called after instrument()

    def remove(self) -> None:
        self.active = False
        guard.guarded("instrumentation.uninstall", _remove)


class LlamaIndexInstrumentor(_base.PatchInstrumentor):
    """Instruments llama-index-core's dispatcher (entry point `opentelemetry_instrumentor: llama_index`).

    ``instrument()`` registers the handlers at once if llama_index.core is imported, else the moment it is.
    """

    module = _MODULE
    dependencies = ("llama-index-core >= 0.10.20",)
    patch_factory = _Patch

    def set_tracer_provider(self, tracer_provider: Any) -> None:
        """Record into another TracerProvider from now on."""
        self.the_patch().tracer_provider = tracer_provider
        with _lock:
            if _installed is not None:
                _installed.tracker.tracer = _base.get_tracer(__name__, tracer_provider)
