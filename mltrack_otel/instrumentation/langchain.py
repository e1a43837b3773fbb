"""LangChain (langchain-core 0.3+, and so every provider package and LangGraph): one span per run.

One callback handler is added to every callback manager LangChain creates (we wrap
``BaseCallbackManager.__init__``, as OpenInference and OpenLLMetry do), so every Runnable is seen without user
changes. Each run's span is keyed by its ``run_id`` and parented on the span of its ``parent_run_id``, never on
whatever context happens to be current, so async, threaded and LangGraph runs keep their parents.

Making a run's span *current* (so the OpenAI/Anthropic SDK span nests under the chat-model span, and code
inside a tool nests under ``execute_tool``) is done in frames we own, never across callbacks: LangChain runs
async end-callbacks in separate tasks (``@shielded``), so a context attached in ``on_*_start`` and detached in
``on_*_end`` would leak or fail to detach. Instead we wrap the few methods that do the work:

* ``BaseChatModel._generate_with_cache`` / ``_agenerate_with_cache`` and ``BaseLLM._generate_helper`` /
  ``_agenerate_helper`` receive the run manager: attach the run's span around the call, detach in ``finally``.
* ``stream``/``astream`` of chat models and LLMs, ``BaseTool.run``/``arun`` and ``BaseRetriever.invoke``/
  ``ainvoke`` create their run inside: the wrapper opens a *slot* (a context variable); the run's start
  callback, which LangChain calls inline in the same context (our handler is ``run_inline``), attaches the span
  and leaves the token in the slot; the wrapper detaches it when the call (or the stream step) returns. Streams
  attach per step, so nothing stays current while the caller holds a chunk.

Spans: ``chat {model}`` / ``text_completion {model}`` (CLIENT, GenAI attributes, usage from ``usage_metadata``),
``execute_tool {name}``, ``retrieval {name}``, ``invoke_agent {name}`` for agents (AgentExecutor, LangGraph graphs)
and the run name for other chains (INTERNAL, no ``gen_ai.operation.name``: the conventions have no chain operation,
and a made-up one would pollute the GenAI duration metric). A run that never ends (abandoned stream) is ended,
marked incomplete, when its parent ends or when the open-run table is full.

LangGraph: ``Pregel.stream``/``astream`` (every graph run goes through them) open a slot; the graph's start callback
makes the graph an agent run (``mltrack_otel.agents.start``: ``invoke_agent {graph name}``, a ledger scope with the
agent's budget), which the wrapper makes current around each step, so the node tasks the graph schedules (they copy
the context) count their model calls in it. A subgraph, or an agent invoked inside a node, is a nested agent run.
Nodes are spans named after the node; the chains LangGraph runs inside a node (the node's function, its edges, the
prompt | model sequences) get no span of their own: what they run hangs under the node.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes

from .. import agents, budget, call_context, config, guard, providers, semconv
from .. import prompts as _prompts
from ..content import media_part, parse_arguments, text_part
from ..errors import BudgetExceededError
from ..usage import read as read_usage
from ..usage import usage_attributes
from . import _base, _spans, when_imported
from ._base import Call, Inputs

__all__ = ["LangChainInstrumentor"]

_MODULE = "langchain_core"
_RETRIEVERS = "langchain_core.retrievers"  # patched when the app imports it: an app without retrievers never loads it
_RETRIEVERS_HOOK = "langchain:retrievers"
_LANGGRAPH = "langgraph.pregel"  # Pregel: every LangGraph graph runs through its stream/astream
_LANGGRAPH_HOOK = "langchain:langgraph"
_LANGGRAPH_CALLBACKS = "langgraph.callbacks"
# RunnableSeq, how LangGraph runs a node: its module in langgraph 0.6+, and before.
_LANGGRAPH_RUNNABLES = ("langgraph._internal._runnable", "langgraph.utils.runnable")
_MAX_RUNS = 10_000  # open runs remembered; beyond this the oldest is ended as incomplete
_INCOMPLETE = semconv.MLTRACK_STREAM_COMPLETE  # false on spans ended because their run never reported an end

_PARAMS = (
    ("temperature", gen_ai.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", gen_ai.GEN_AI_REQUEST_TOP_P),
    ("top_k", gen_ai.GEN_AI_REQUEST_TOP_K),
    ("max_tokens", gen_ai.GEN_AI_REQUEST_MAX_TOKENS),
    ("max_completion_tokens", gen_ai.GEN_AI_REQUEST_MAX_TOKENS),
    ("max_output_tokens", gen_ai.GEN_AI_REQUEST_MAX_TOKENS),
    ("frequency_penalty", gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY),
    ("seed", gen_ai.GEN_AI_REQUEST_SEED),
)
_CONVERSATION_KEYS = ("thread_id", "conversation_id", "session_id")
_NOT_CONTENT = frozenset({"metadata", "tags", "name"})  # a prompt's labels: they do not change what it sends
_RECENT_PROMPTS = 256  # outputs of root prompt runs remembered until a model run takes them
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}


# --- the open runs --------------------------------------------------------------------------------------------


class _Hidden:
    """The handle of a run that has no span of its own (LangGraph's plumbing inside a node): nothing to end."""

    __slots__ = ()

    def finish(self, outputs: Any = None, attributes: Any = None) -> None:
        pass

    def fail(self, error: BaseException, attributes: Any = None) -> None:
        pass


_HIDDEN = _Hidden()


class _Run:
    """One LangChain run and its span."""

    __slots__ = (
        "agent_below",
        "children",
        "context",
        "first_token_at",
        "graph",
        "handle",
        "in_node",
        "kind",
        "llm_below",
        "max_output",
        "name",
        "next_prompt",
        "parent",
        "prompt",
        "provider",
        "tool_below",
        "tools_bound",
    )

    def __init__(self, kind: str, handle: Any, parent: Any, name: str) -> None:
        self.kind = kind  # llm | chain | agent | tool | retriever | hidden
        # A Call for model runs, an AgentRun for LangGraph graphs, _HIDDEN for runs without a span, else an
        # Operation: each ends its span exactly once.
        self.handle = handle
        self.parent = parent  # parent run_id (None for a root run)
        self.name = name
        self.children: list[Any] = []
        self.context: otel_context.Context | None = None  # the span as current context, made on first use
        self.first_token_at: float | None = None
        self.max_output: int | None = None  # a model run's max_tokens, for its budget reservation
        self.provider: str | None = None
        self.graph = False  # a LangGraph graph (its children carry langgraph_node metadata)
        self.in_node = False  # a LangGraph node, or a run without a span inside one: its chains get none either
        self.prompt: Mapping[str, str] | None = None  # a prompt run's identity; the one a model run carries
        self.next_prompt: Mapping[str, str] | None = None  # for the next model run under this one (prompt | llm)
        self.llm_below = self.tool_below = self.tools_bound = self.agent_below = False

    def as_context(self) -> otel_context.Context:
        if self.context is None:
            self.context = trace.set_span_in_context(self.handle.span)
        return self.context


class _Slot:
    """Opened by a wrapper around a method that starts a run; the run's start callback fills it."""

    __slots__ = ("agent", "agent_token", "context", "kinds", "prompt_token", "taken", "token")

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.kinds = kinds
        self.taken = False
        self.token: Any = None
        self.prompt_token: Any = None  # the model run's prompt identity, attached for the SDK call below it
        self.context: otel_context.Context | None = None
        self.agent: Any = None  # a LangGraph graph's agents.AgentRun, made current by activate()
        self.agent_token: Any = None

    def release(self) -> None:
        """Detach what the start callback attached, only if it is still the current context (same frame)."""
        agent_token, self.agent_token = self.agent_token, None
        if agent_token is not None and not guard.guarded(
            "langchain.agent.deactivate", self.agent.deactivate, agent_token
        ):
            guard.count("langchain.context.unbalanced")
        prompt_token, self.prompt_token = self.prompt_token, None
        if prompt_token is not None and not call_context.detach(prompt_token):
            guard.count("langchain.context.unbalanced")
        token, self.token = self.token, None
        if token is None:
            return
        if otel_context.get_current() is self.context:
            otel_context.detach(token)
        else:  # the callback ran in another Context, or someone left an attach unbalanced: leave theirs alone
            guard.count("langchain.context.unbalanced")


_SLOT: ContextVar[_Slot | None] = ContextVar("mltrack_langchain_slot", default=None)


# --- messages: LangChain -> GenAI JSON ---------------------------------------------------------------------------


def _parts(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [text_part(value)] if value else []
    parts: list[Any] = []
    for block in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(block, str):
            parts.append(text_part(block))
            continue
        kind = _base.get(block, "type")
        if kind == "text":
            parts.append(text_part(_base.get(block, "text", "")))
        elif kind in ("thinking", "reasoning"):
            text = _base.get(block, "thinking") or _base.get(block, "reasoning") or _base.get(block, "text", "")
            parts.append({"type": "reasoning", "content": text if isinstance(text, str) else str(text)})
        elif kind == "image_url":
            url = _base.get(block, "image_url")
            parts.append(media_part(_base.get(url, "url", url if isinstance(url, str) else ""), "image"))
        elif kind in ("image", "audio", "file", "video"):
            modality = "document" if kind == "file" else kind
            mime = _base.get(block, "mime_type")
            if _base.get(block, "url"):
                parts.append(media_part(block["url"], modality, mime))
            elif _base.get(block, "base64") or _base.get(block, "data"):
                data = _base.get(block, "base64") or _base.get(block, "data")
                part = {"type": "blob", "modality": modality, "content": data}
                parts.append({**part, "mime_type": mime} if mime else part)
            else:
                parts.append({"type": "file", "modality": modality, "file_id": _base.get(block, "id")})
        elif kind in ("tool_use", "tool_call", "function_call", "server_tool_use"):
            continue  # the message's tool_calls carry these
        elif kind == "tool_result":
            parts.append(
                {"type": "tool_call_response", "id": _base.get(block, "tool_use_id"), "response": block.get("content")}
            )
        else:
            parts.append({"type": kind if isinstance(kind, str) else "unknown"})
    return parts


def _tool_call(call: Any) -> dict[str, Any]:
    return {
        "type": "tool_call",
        "id": _base.get(call, "id"),
        "name": _base.get(call, "name", ""),
        "arguments": parse_arguments(_base.get(call, "args")),
    }


def message_json(message: Any) -> dict[str, Any]:
    """One LangChain message (BaseMessage, or a (role, text) tuple / dict) as a GenAI message."""
    if isinstance(message, tuple) and len(message) == 2:
        role, body = message
        return {"role": _ROLES.get(role, role), "parts": _parts(body)}
    kind = _base.get(message, "type") or _base.get(message, "role") or "user"
    role = _ROLES.get(kind, kind)
    if kind == "chat":
        role = _base.get(message, "role", "user")
    body = _base.get(message, "content")
    if role == "tool":
        response = body if isinstance(body, str) else [p.get("content", p) if isinstance(p, dict) else p for p in body]
        part = {"type": "tool_call_response", "id": _base.get(message, "tool_call_id"), "response": response}
        return {"role": "tool", "parts": [part]}
    parts = _parts(body)
    if role == "assistant":
        parts.extend(_tool_call(c) for c in _base.seq(_base.get(message, "tool_calls")))
    entry: dict[str, Any] = {"role": role, "parts": parts}
    name = _base.get(message, "name")
    if isinstance(name, str) and name:
        entry["name"] = name
    return entry


def _tool_definitions(tools: Any) -> list[Any] | None:
    out = []
    for tool in _base.seq(tools):
        spec = _base.get(tool, "function") or tool
        definition = {
            "type": _base.get(tool, "type", "function"),
            "name": _base.get(spec, "name", ""),
            "description": _base.get(spec, "description", ""),
        }
        parameters = _base.get(spec, "parameters") or _base.get(spec, "input_schema")
        if parameters is not None:
            definition["parameters"] = parameters
        out.append(definition)
    return out or None


def provider_name(serialized: Any, metadata: Mapping[str, Any] | None, params: Mapping[str, Any]) -> str:
    """gen_ai.provider.name from ls_provider metadata, else from the model class name."""
    raw = (metadata or {}).get("ls_provider") or params.get("model_provider")
    if isinstance(raw, str) and raw:
        return providers.convention_name(raw) or raw
    ids = _base.get(serialized, "id")
    cls = ids[-1] if isinstance(ids, list) and ids else str(params.get("_type", ""))
    return providers.for_class(cls) or "langchain"


def _request_attributes(params: Mapping[str, Any], metadata: Mapping[str, Any], attributes: dict[str, Any]) -> None:
    for key, attribute in _PARAMS:
        value = params.get(key)
        if value is None and key in ("temperature", "max_tokens"):
            value = metadata.get(f"ls_{key}")
        if value is not None and type(value) in (int, float) and attribute not in attributes:
            attributes[attribute] = value
    stops = _base.stop_sequences(params.get("stop") or params.get("stop_sequences") or metadata.get("ls_stop"))
    if stops:
        attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops
    n = params.get("n")
    if type(n) is int and n != 1:
        attributes[gen_ai.GEN_AI_REQUEST_CHOICE_COUNT] = n
    if params.get("stream") is True or params.get("streaming") is True:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True


def usage_from_metadata(usage: Any) -> dict[str, int]:
    """GenAI usage attributes from LangChain's UsageMetadata (input_tokens already include cache)."""
    if not isinstance(usage, Mapping):
        return {}
    try:
        return read_usage(usage, "langchain", strict=True)
    except ValueError as exc:
        guard.record_error("usage.invalid", exc)
        return {}


def prompt_identity(
    serialized: Any, metadata: Mapping[str, Any] | None, run_name: Any, cls: Any
) -> Mapping[str, str] | None:
    """gen_ai.prompt.* of a LangChain prompt run (PromptTemplate, ChatPromptTemplate...): the content hash of its
    serialized form (templates, roles, format), the version from metadata ``prompt_version`` else that hash, the
    name from metadata ``prompt_name`` else the run name (``prompt.name`` or ``run_name``) when it is not just
    the class name."""
    kwargs = _base.get(serialized, "kwargs")
    if not isinstance(kwargs, Mapping):
        return None
    content = {k: v for k, v in kwargs.items() if k not in _NOT_CONTENT}
    try:
        digest = _prompts.content_hash(content)
    except (TypeError, ValueError):  # a field dumpd could not make JSON: no identity rather than a wrong one
        return None
    metadata = metadata or {}
    version = metadata.get("prompt_version")
    identity = {
        _prompts.GEN_AI_PROMPT_VERSION: str(version) if isinstance(version, (str, int)) and version != "" else digest,
        _prompts.MLTRACK_PROMPT_HASH: digest,
    }
    name = metadata.get("prompt_name")
    if not (isinstance(name, str) and name):
        name = run_name if isinstance(run_name, str) and run_name and run_name != cls else None
    if name:
        identity[_prompts.GEN_AI_PROMPT_NAME] = name
    return identity


# --- the handler --------------------------------------------------------------------------------------------------


class Tracer:
    """The callback logic. :func:`_handler_class` mixes it with LangChain's BaseCallbackHandler."""

    run_inline = True  # async runs call us in the caller's task (no executor thread, same context)
    raise_error = False
    ignore_llm = ignore_chain = ignore_agent = ignore_retriever = ignore_chat_model = False
    ignore_retry = ignore_custom_event = True

    def __init__(self) -> None:
        self.tracer: trace.Tracer = trace.get_tracer(__name__)
        self.active = False
        self.runs: OrderedDict[Any, _Run] = OrderedDict()
        self.lock = threading.Lock()
        # id(first message or text of a root prompt run's output) -> (that object, identity): `llm.invoke(
        # prompt.invoke(...))` has no parent run to carry the identity, the PromptValue's messages carry it.
        self.prompt_outputs: OrderedDict[int, tuple[Any, Mapping[str, str]]] = OrderedDict()

    # -- run table -----------------------------------------------------------------------------------------------

    def span_context(self, run_id: Any) -> otel_context.Context | None:
        run = self.runs.get(run_id)
        return run.as_context() if run is not None else None

    def _operation(
        self, kind: str, operation: str | None, name: str, run_id: Any, kwargs: dict[str, Any], **start: Any
    ) -> _Run:
        """Start a non-model run's span under its parent run's: _spans.start with `start` (inputs, attributes...)."""
        start["attributes"] = self._conversation(kwargs.get("metadata") or {}, start.get("attributes") or {})
        parent_run_id = kwargs.get("parent_run_id")
        handle = _spans.start(self.tracer, operation, name, context=self.span_context(parent_run_id), **start)
        return self._add(kind, handle, run_id, parent_run_id, name)

    def _add(
        self,
        kind: str,
        handle: Any,
        run_id: Any,
        parent_run_id: Any,
        name: str,
        prompt: Mapping[str, str] | None = None,
        context: otel_context.Context | None = None,
    ) -> _Run:
        """Remember a started run (the oldest open one is ended past _MAX_RUNS), and fill the open slot.
        `context`: what the run makes current (a hidden run: its node's span), when not its own span."""
        parent = self.runs.get(parent_run_id) if parent_run_id is not None else None
        run = _Run(kind, handle, parent_run_id if parent is not None else None, name)
        run.prompt = prompt
        run.context = context
        evicted = None
        with self.lock:
            self.runs[run_id] = run
            if parent is not None:
                parent.children.append(run_id)
            if len(self.runs) > _MAX_RUNS:
                evicted = self.runs.popitem(last=False)[1]
        if evicted is not None:
            self._abandon(evicted)
        self._fill(run, kind, prompt)
        return run

    @staticmethod
    def _fill(run: _Run, kind: str, prompt: Mapping[str, str] | None = None) -> None:
        """Make the run current in the open slot of the wrapper that started it, if the slot waits for its kind."""
        slot = _SLOT.get()
        if slot is not None and not slot.taken and kind in slot.kinds:
            slot.taken = True
            slot.context = run.as_context()
            slot.token = otel_context.attach(slot.context)
            if prompt:
                slot.prompt_token = call_context.attach(prompt)

    def _pop(self, run_id: Any) -> _Run | None:
        with self.lock:
            run = self.runs.pop(run_id, None)
            if run is None:
                return None
            parent = self.runs.get(run.parent)
            orphans = [self.runs.pop(c) for c in run.children if c in self.runs]
        if parent is not None:
            parent.llm_below |= run.llm_below or run.kind == "llm"
            parent.tool_below |= run.tool_below or run.kind == "tool"
            parent.tools_bound |= run.tools_bound
            parent.agent_below |= run.agent_below or run.kind == "agent"
        for orphan in orphans:
            self._abandon(orphan)
        return run

    def _abandon(self, run: _Run) -> None:
        """End a run that never reported its end (abandoned stream, lost callback), and its open children."""
        with self.lock:
            orphans = [self.runs.pop(c) for c in run.children if c in self.runs]
        for orphan in orphans:
            self._abandon(orphan)
        run.handle.finish(attributes={_INCOMPLETE: False})
        guard.count("langchain.runs.abandoned")

    def end_all(self) -> None:
        with self.lock:
            runs = list(self.runs.values())
            self.runs.clear()
        for run in runs:
            with contextlib.suppress(Exception):
                run.handle.finish(attributes={_INCOMPLETE: False})

    def _enabled(self) -> config.Settings | None:
        if not self.active:
            return None
        return _base.tracking_settings()

    # -- chat models and LLMs --------------------------------------------------------------------------------------

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
        try:
            settings = self._enabled()
            if settings is not None:
                batch = messages[0] if messages else []
                inputs = [message_json(m) for m in _base.seq(batch)] if settings.capture_prompts else None
                first = batch[0] if isinstance(batch, list) and batch else None
                self._start_model("chat", serialized, inputs, run_id, settings, kwargs, first)
        except Exception as exc:
            guard.record_error("langchain.on_chat_model_start", exc)

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: Any, **kwargs: Any) -> None:
        try:
            settings = self._enabled()
            if settings is not None:
                inputs = None
                if settings.capture_prompts:
                    inputs = [{"role": "user", "parts": [text_part(p)]} for p in _base.seq(prompts)]
                first = prompts[0] if isinstance(prompts, list) and prompts else None
                self._start_model("text_completion", serialized, inputs, run_id, settings, kwargs, first)
        except Exception as exc:
            guard.record_error("langchain.on_llm_start", exc)

    def _start_model(
        self,
        operation: str,
        serialized: Any,
        inputs: list[Any] | None,
        run_id: Any,
        settings: config.Settings,
        kwargs: dict[str, Any],
        first_input: Any = None,
    ) -> None:
        metadata = kwargs.get("metadata") or {}
        params = kwargs.get("invocation_params") or {}
        provider = provider_name(serialized, metadata, params)
        model = (
            params.get("model") or params.get("model_name") or params.get("model_id") or metadata.get("ls_model_name")
        )
        model = model if isinstance(model, str) and model else None
        attributes = self._conversation(metadata, _base.base_attributes(operation, provider, None, None))
        if model:
            attributes[gen_ai.GEN_AI_REQUEST_MODEL] = model
        _request_attributes(params, metadata, attributes)
        tools = params.get("tools") or params.get("functions")
        call_inputs = Inputs(inputs, None, _tool_definitions(tools)) if inputs is not None else None
        parent_run_id = kwargs.get("parent_run_id")
        prompt = self._take_prompt(parent_run_id, first_input)
        if prompt:
            attributes.update(prompt)
        context = self.span_context(parent_run_id)  # None: the current context (a root run)
        # _response_attributes reads the usage (usage_metadata in the "langchain" shape, else the provider's).
        call = Call(self.tracer, operation, model, attributes, settings, call_inputs, "langchain", context)
        run = self._add("llm", call, run_id, parent_run_id, operation, prompt)
        run.provider = provider
        run.tools_bound = bool(tools)
        run.max_output = attributes.get(gen_ai.GEN_AI_REQUEST_MAX_TOKENS)

    def reserve(self, run: _Run, request: Any) -> Any:
        """Reserve a model run's worst case against the hard budgets (the agent run's, a tracking scope's, the
        process's) before its request goes out, so a budget stops LangChain and LangGraph model calls whether or not
        the provider SDK is instrumented too (if it is, its call takes the hold over). The hold ends with the model
        run's span. None: no budget applies (or not a model run); raises only BudgetExceededError."""
        call = run.handle
        if run.kind != "llm" or not isinstance(call, Call) or call.reservation is not None:
            return None
        body: dict[str, Any] = {"prompt" if run.name == "text_completion" else "messages": request}
        if run.max_output is not None:
            body["max_tokens"] = run.max_output
        reservation = _base.reserve_budget("langchain.budget", body, call.model, run.provider, run.name)
        call.reservation = reservation
        return reservation

    def on_llm_new_token(self, token: Any, *, run_id: Any, **kwargs: Any) -> None:
        try:
            run = self.runs.get(run_id)
            if run is not None and run.first_token_at is None:
                run.first_token_at = time.perf_counter()
        except Exception as exc:
            guard.record_error("langchain.on_llm_new_token", exc)

    def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        try:
            run = self._pop(run_id)
            if run is not None:
                self._finish_model(run, response, None)
        except Exception as exc:
            guard.record_error("langchain.on_llm_end", exc)

    def on_llm_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        try:
            run = self._pop(run_id)
            if run is not None:
                self._finish_model(run, kwargs.get("response"), error)
        except Exception as exc:
            guard.record_error("langchain.on_llm_error", exc)

    def _finish_model(self, run: _Run, response: Any, error: BaseException | None) -> None:
        call = run.handle
        try:
            attributes, output = self._response_attributes(run, response, call.capture_out)
        except Exception as exc:  # the span still ends, with what it has
            guard.record_error("langchain.finish_model", exc)
            attributes, output = {}, None
        if run.first_token_at is not None:
            attributes[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = run.first_token_at - call.t0
            attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
        if isinstance(error, GeneratorExit):  # the caller stopped reading the stream: incomplete, not failed
            attributes[_INCOMPLETE] = False
            error = None
        elif run.first_token_at is not None:
            attributes[_INCOMPLETE] = error is None
        call.finish(attributes, output, None, error)

    def _response_attributes(self, run: _Run, response: Any, capture: bool) -> tuple[dict[str, Any], list[Any] | None]:
        """(response attributes with usage, output messages when captured)."""
        attributes: dict[str, Any] = {}
        generations = _base.get(response, "generations")
        batch = generations[0] if generations and isinstance(generations[0], list) else []
        llm_output = _base.get(response, "llm_output") or {}
        reasons: list[str] = []
        output: list[Any] = []
        usage: dict[str, int] = {}
        response_model = response_id = None
        for generation in batch:
            info = _base.get(generation, "generation_info") or {}
            message = _base.get(generation, "message")
            meta = _base.get(message, "response_metadata") or {}
            raw_reason = info.get("finish_reason") or meta.get("finish_reason") or meta.get("stop_reason")
            reason = _base.finish_reason(raw_reason, default="stop")
            if raw_reason is not None:
                reasons.append(reason)
            response_model = response_model or meta.get("model_name") or meta.get("model")
            response_id = response_id or meta.get("id")
            if not response_id:
                message_id = _base.get(message, "id")
                if isinstance(message_id, str) and not message_id.startswith(("run-", "lc_")):
                    response_id = message_id
            if not usage and message is not None:
                usage = usage_from_metadata(_base.get(message, "usage_metadata"))
            if not capture:
                continue
            if message is not None:
                output.append({**message_json(message), "role": "assistant", "finish_reason": reason})
            else:
                text = _base.get(generation, "text", "")
                output.append({"role": "assistant", "parts": [text_part(text)], "finish_reason": reason})
        if not usage:
            raw = llm_output.get("token_usage") or llm_output.get("usage")
            if raw:
                usage = usage_attributes(raw, run.provider)
        attributes.update(usage)
        response_model = response_model or llm_output.get("model_name") or llm_output.get("model")
        response_id = response_id or llm_output.get("id")
        if isinstance(response_model, str) and response_model:
            attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = response_model
        if isinstance(response_id, str) and response_id:
            attributes[gen_ai.GEN_AI_RESPONSE_ID] = response_id
        if reasons:
            attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = tuple(reasons)
        return attributes, output or None

    # -- chains and agents -----------------------------------------------------------------------------------------

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: Any, **kwargs: Any) -> None:
        try:
            settings = self._enabled()
            if settings is None:
                return
            slot = _SLOT.get()
            if slot is not None and not slot.taken and "graph" in slot.kinds:  # a LangGraph graph (Pregel.stream)
                self._start_graph(slot, inputs, run_id, kwargs, settings)
                return
            ids = _base.get(serialized, "id")
            cls = ids[-1] if isinstance(ids, list) and ids else None
            name = kwargs.get("name") or _base.get(serialized, "name") or cls or "chain"
            parent_run_id = kwargs.get("parent_run_id")
            parent = self.runs.get(parent_run_id) if parent_run_id is not None else None
            if parent is not None and parent.in_node:
                # Inside a LangGraph node: the node's function, its edges, the runnables they call. No span: what
                # they run (models, tools, retrievers, subgraphs) goes under the node's.
                run = self._add("hidden", _HIDDEN, run_id, parent_run_id, name, context=parent.as_context())
                run.in_node = True
            else:
                agent = isinstance(cls, str) and cls.endswith("AgentExecutor")
                kind, operation = ("agent", "invoke_agent") if agent else ("chain", None)
                inputs = {_base.OI_INPUT_VALUE: inputs} if settings.openinference_attributes else None
                run = self._operation(kind, operation, name, run_id, kwargs, inputs=inputs, settings=settings)
                tags = kwargs.get("tags") or ()
                if parent is not None and any(str(t).startswith("graph:step:") for t in tags):
                    parent.graph = True  # a LangGraph node: its parent run is the graph
                    run.in_node = True
                    self._fill(run, "node")  # current while the node runs (RunnableSeq's wrapper)
            if kwargs.get("run_type") == "prompt":
                run.prompt = prompt_identity(serialized, kwargs.get("metadata"), name, cls)
        except Exception as exc:
            guard.record_error("langchain.on_chain_start", exc)

    def _start_graph(self, slot: _Slot, inputs: Any, run_id: Any, kwargs: dict[str, Any], settings: Any) -> None:
        """A LangGraph graph started (its Pregel.stream opened the slot): an agent run, `invoke_agent {graph
        name}` (create_react_agent names the graph after the agent), the root of a ledger scope nested in the
        current one. The slot's wrapper makes it current around each step of the graph, so every node task the
        graph schedules (threads, asyncio tasks: they copy the context) runs inside the agent: model calls count
        in its scope, under its budget, with its name; a subgraph nests its own run."""
        name = kwargs.get("name") or "LangGraph"
        parent_run_id = kwargs.get("parent_run_id")
        attributes = self._conversation(kwargs.get("metadata") or {}, {})
        recorded: dict[str, Any] = {}
        if settings.capture_prompts:  # what the agent was given: its input state's messages
            messages = _state_messages(inputs)
            if messages:
                recorded[gen_ai.GEN_AI_INPUT_MESSAGES] = [message_json(m) for m in messages]
            if settings.openinference_attributes:
                recorded[_base.OI_INPUT_VALUE] = inputs
        context = self.span_context(parent_run_id)  # None: the current context (a root graph)
        agent = agents.start(self.tracer, name, attributes, recorded, settings=settings, context=context)
        slot.taken = True
        run = self._add("agent", agent, run_id, parent_run_id, name)
        run.graph = True
        slot.agent = agent
        slot.agent_token = agent.activate()

    def on_chain_end(self, outputs: Any, *, run_id: Any, **kwargs: Any) -> None:  # and tools', retrievers'
        self._end(run_id, outputs, None)

    def on_chain_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        self._end(run_id, None, error)

    on_tool_end = on_retriever_end = on_chain_end
    on_tool_error = on_retriever_error = on_chain_error

    def _end(self, run_id: Any, output: Any, error: BaseException | None) -> None:
        """The end of a chain, agent, tool or retriever run (a model run's is _finish_model)."""
        run = None
        try:
            run = self._pop(run_id)
            if run is None:
                return
            if run.prompt and error is None:
                self._pass_prompt(run, output)
            if run.kind == "hidden":
                return
            operation, attributes = run.handle, {}
            if not isinstance(operation, (_spans.Operation, Call)):  # a graph's AgentRun
                if isinstance(error, GeneratorExit):  # the caller stopped reading the graph's stream
                    attributes[_INCOMPLETE] = False
                    error = None
                outputs = _agent_outputs(output, operation.operation) if error is None else None
                if error is not None and not _is_control_flow(error):
                    operation.fail(error, attributes)
                else:
                    operation.finish(outputs, attributes)
                return
            if run.kind == "chain" and self._is_agent(run):
                run.kind = "agent"
                operation.span.update_name(f"invoke_agent {run.name}")
                attributes = {gen_ai.GEN_AI_OPERATION_NAME: "invoke_agent", gen_ai.GEN_AI_AGENT_NAME: run.name}
                if operation.settings.openinference_attributes:
                    attributes[_base.OI_SPAN_KIND] = "AGENT"
                self._bubble_agent(run)
            if error is not None and not _is_control_flow(error):
                operation.fail(error, attributes)
                return
            if run.kind == "tool":
                if _base.get(output, "status") == "error":  # a ToolMessage reporting the tool's failure
                    attributes[error_attributes.ERROR_TYPE] = "tool_error"
                result = _base.get(output, "content", output) if hasattr(output, "tool_call_id") else output
                call_id = getattr(output, "tool_call_id", None)
                if isinstance(call_id, str) and call_id:  # langchain-core < 1.0 gives it at the end only, here
                    attributes[gen_ai.GEN_AI_TOOL_CALL_ID] = call_id
                outputs = {gen_ai.GEN_AI_TOOL_CALL_RESULT: result}
            elif run.kind == "retriever":
                documents = _documents(output) if output is not None and operation.capture_out else None
                outputs = {gen_ai.GEN_AI_RETRIEVAL_DOCUMENTS: documents}
            else:  # a chain's outputs have no GenAI attribute: OpenInference's only
                outputs = {_base.OI_OUTPUT_VALUE: output} if operation.settings.openinference_attributes else None
            operation.finish(outputs, attributes)
        except Exception as exc:
            guard.record_error("langchain.on_run_end", exc)
            if run is not None:
                run.handle.finish(attributes={})  # a no-op if it has ended

    @staticmethod
    def _is_agent(run: _Run) -> bool:
        """The innermost chain that ran a tool-calling model and a tool, or a LangGraph graph with a tool model."""
        if run.agent_below or not run.llm_below:
            return False
        return run.tool_below or (run.graph and run.tools_bound)

    def _bubble_agent(self, run: _Run) -> None:
        parent = self.runs.get(run.parent)
        if parent is not None:
            parent.agent_below = True

    # -- tools -------------------------------------------------------------------------------------------------

    def on_tool_start(self, serialized: Any, input_str: Any, *, run_id: Any, **kwargs: Any) -> None:
        try:
            settings = self._enabled()
            if settings is None:
                return
            name = kwargs.get("name") or _base.get(serialized, "name") or "tool"
            attributes: dict[str, Any] = {}
            call_id = kwargs.get("tool_call_id")
            if isinstance(call_id, str) and call_id:
                attributes[gen_ai.GEN_AI_TOOL_CALL_ID] = call_id
            arguments = kwargs.get("inputs")
            inputs = {gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS: input_str if arguments is None else arguments}
            description = _base.get(serialized, "description")
            start = {"attributes": attributes, "inputs": inputs, "settings": settings, "description": description}
            self._operation("tool", "execute_tool", name, run_id, kwargs, **start)
        except Exception as exc:
            guard.record_error("langchain.on_tool_start", exc)

    # -- retrievers --------------------------------------------------------------------------------------------

    def on_retriever_start(self, serialized: Any, query: Any, *, run_id: Any, **kwargs: Any) -> None:
        try:
            settings = self._enabled()
            if settings is None:
                return
            metadata = kwargs.get("metadata") or {}
            name = (
                kwargs.get("name") or _base.get(serialized, "name") or metadata.get("ls_retriever_name") or "retriever"
            )
            inputs = {gen_ai.GEN_AI_RETRIEVAL_QUERY_TEXT: query if isinstance(query, str) else None}
            self._operation("retriever", "retrieval", name, run_id, kwargs, inputs=inputs, settings=settings)
        except Exception as exc:
            guard.record_error("langchain.on_retriever_start", exc)

    # -- prompt identity: from a prompt run onto the model run it feeds ---------------------------------------------

    def _pass_prompt(self, run: _Run, output: Any) -> None:
        """A prompt run ended: its identity waits for the next model run under the same parent (``prompt | llm``),
        or, for a root prompt run, for the model run that receives its output's messages."""
        parent = self.runs.get(run.parent) if run.parent is not None else None
        if parent is not None:
            parent.next_prompt = run.prompt
            return
        messages = _base.get(output, "messages")
        key = messages[0] if isinstance(messages, list) and messages else _base.get(output, "text")
        if key is None:
            return
        with self.lock:
            self.prompt_outputs[id(key)] = (key, run.prompt)  # type: ignore[assignment]
            if len(self.prompt_outputs) > _RECENT_PROMPTS:
                self.prompt_outputs.popitem(last=False)

    def _take_prompt(self, parent_run_id: Any, first_input: Any) -> Mapping[str, str] | None:
        """The prompt identity a model run carries (taken: the next model run does not get it again)."""
        parent = self.runs.get(parent_run_id) if parent_run_id is not None else None
        if parent is not None and parent.next_prompt is not None:
            prompt, parent.next_prompt = parent.next_prompt, None
            return prompt
        if first_input is None or not self.prompt_outputs:
            return None
        with self.lock:
            entry = self.prompt_outputs.get(id(first_input))
            if entry is None or entry[0] is not first_input:
                return None
            del self.prompt_outputs[id(first_input)]
        return entry[1]

    def prompt_of(self, run_id: Any) -> Mapping[str, str] | None:
        run = self.runs.get(run_id)
        return run.prompt if run is not None and run.kind == "llm" else None

    # -- helpers -----------------------------------------------------------------------------------------------

    @staticmethod
    def _conversation(metadata: Mapping[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
        """attributes, with the run's conversation id (thread_id...) from its metadata; start() and base_attributes
        take the tracking scope's otherwise."""
        for key in _CONVERSATION_KEYS:
            value = metadata.get(key)
            if isinstance(value, str) and value:
                attributes[gen_ai.GEN_AI_CONVERSATION_ID] = value
                break
        return attributes


def _documents(documents: Any) -> list[dict[str, Any]]:
    """Retrieved LangChain Documents as the convention's gen_ai.retrieval.documents items."""
    out = []
    for doc in _base.seq(documents):
        item: dict[str, Any] = {"content": _base.get(doc, "page_content", "")}
        doc_id = _base.get(doc, "id")
        if doc_id is not None:
            item["id"] = str(doc_id)
        score = (_base.get(doc, "metadata") or {}).get("score")
        if isinstance(score, (int, float)):
            item["score"] = score
        out.append(item)
    return out


def _state_messages(state: Any) -> list[Any] | None:
    """The messages of a LangGraph state (``{"messages": [...]}``, MessagesState and the agents' states)."""
    messages = state.get("messages") if isinstance(state, Mapping) else None
    if isinstance(messages, str):  # add_messages takes a bare string as a human message
        return [("human", messages)]
    return list(messages) if isinstance(messages, (list, tuple)) and messages else None


def _agent_outputs(state: Any, operation: _spans.Operation) -> dict[str, Any] | None:
    """What a graph's agent run answered, when responses are captured: its final state's last message if the
    model wrote it (gen_ai.output.messages); the whole state for OpenInference."""
    if not operation.capture_out:
        return None
    outputs: dict[str, Any] = {}
    messages = _state_messages(state)
    last = messages[-1] if messages else None
    if last is not None and _base.get(last, "type") == "ai":
        meta = _base.get(last, "response_metadata") or {}
        reason = _base.finish_reason(meta.get("finish_reason") or meta.get("stop_reason"), default="stop")
        outputs[gen_ai.GEN_AI_OUTPUT_MESSAGES] = [{**message_json(last), "role": "assistant", "finish_reason": reason}]
    if operation.settings.openinference_attributes:
        outputs[_base.OI_OUTPUT_VALUE] = state
    return outputs


def _is_control_flow(error: BaseException) -> bool:
    """LangGraph's interrupts and Command jumps travel as exceptions through chains; they are not failures."""
    return type(error).__name__ in ("GraphInterrupt", "NodeInterrupt", "ParentCommand", "GraphBubbleUp")


_handler_classes: dict[type, type] = {}


def _handler_class() -> type:
    """Tracer mixed with langchain-core's BaseCallbackHandler (imported only once langchain-core is)."""
    from langchain_core.callbacks import BaseCallbackHandler

    cls = _handler_classes.get(BaseCallbackHandler)
    if cls is None:
        cls = type("MltrackCallbackHandler", (Tracer, BaseCallbackHandler), {"__module__": __name__})
        _handler_classes[BaseCallbackHandler] = cls
    return cls


# --- wrappers -------------------------------------------------------------------------------------------------


def _run_manager(args: tuple, kwargs: dict) -> Any:
    return kwargs.get("run_manager", args[2] if len(args) > 2 else None)


def _first_manager(args: tuple, kwargs: dict) -> Any:
    managers = kwargs.get("run_managers", args[2] if len(args) > 2 else None)
    return managers[0] if managers else None  # one request for all prompts: the first run carries the usage


def _call_in(
    ctx: otel_context.Context | None,
    wrapped: Any,
    args: tuple,
    kwargs: dict,
    prompt: Mapping[str, str] | None = None,
    reservation: Any = None,
) -> Any:
    """wrapped(*args, **kwargs) with ctx attached (as it is when ctx is None), the model run's prompt identity on
    the SDK calls made inside, and its budget reservation held (the SDK call below takes it over)."""
    if reservation is not None:
        held = budget.hold(reservation)
        try:
            return _call_in(ctx, wrapped, args, kwargs, prompt)
        finally:
            budget.unhold(held)
    if prompt:
        with call_context.attached(prompt):
            return _call_in(ctx, wrapped, args, kwargs)
    if ctx is None:
        return wrapped(*args, **kwargs)
    token = otel_context.attach(ctx)
    try:
        return wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)


async def _acall_in(
    ctx: otel_context.Context | None,
    wrapped: Any,
    args: tuple,
    kwargs: dict,
    prompt: Mapping[str, str] | None = None,
    reservation: Any = None,
) -> Any:
    if reservation is not None:
        held = budget.hold(reservation)
        try:
            return await _acall_in(ctx, wrapped, args, kwargs, prompt)
        finally:
            budget.unhold(held)
    if prompt:
        with call_context.attached(prompt):
            return await _acall_in(ctx, wrapped, args, kwargs)
    if ctx is None:
        return await wrapped(*args, **kwargs)
    token = otel_context.attach(ctx)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)


class _Patch:
    """The wrappers, the handler they feed, and how to take them off exactly."""

    def __init__(self) -> None:
        self.handler: Tracer | None = None
        self.tracer: trace.Tracer = trace.get_tracer(__name__)
        self.active = False
        self.originals: list[tuple[type, str, Any]] = []
        self.hooked = False  # the retriever hook is registered (and may have run)

    # -- install / remove --------------------------------------------------------------------------------------

    def apply(self, tracer_provider: Any = None) -> None:
        self.tracer = _base.get_tracer(__name__, tracer_provider)
        if self.handler is None:
            self.handler = _handler_class()()
        self.handler.tracer = self.tracer
        self.handler.active = True
        if self.originals or self.hooked:
            return
        self._patch(
            ("langchain_core.callbacks.base", "BaseCallbackManager", "__init__", self._manager_init),
            ("langchain_core.language_models.chat_models", "BaseChatModel", "_generate_with_cache", self._generate),
            ("langchain_core.language_models.chat_models", "BaseChatModel", "_agenerate_with_cache", self._agenerate),
            ("langchain_core.language_models.chat_models", "BaseChatModel", "stream", self._stream),
            ("langchain_core.language_models.chat_models", "BaseChatModel", "astream", self._astream),
            ("langchain_core.language_models.llms", "BaseLLM", "_generate_helper", self._generate_many),
            ("langchain_core.language_models.llms", "BaseLLM", "_agenerate_helper", self._agenerate_many),
            ("langchain_core.language_models.llms", "BaseLLM", "stream", self._stream),
            ("langchain_core.language_models.llms", "BaseLLM", "astream", self._astream),
            ("langchain_core.tools.base", "BaseTool", "run", self._call_tool),
            ("langchain_core.tools.base", "BaseTool", "arun", self._acall_tool),
        )
        # Retrievers and LangGraph are patched when the app imports them (at once if it has): instrument() need
        # not load them.
        when_imported(_RETRIEVERS, self._patch_retrievers, owner=_RETRIEVERS_HOOK)
        when_imported(_LANGGRAPH, self._patch_langgraph, owner=_LANGGRAPH_HOOK)
        self.hooked = True

    def _patch_retrievers(self, module: Any) -> None:
        self._patch(
            (module, "BaseRetriever", "invoke", self._call_retriever),
            (module, "BaseRetriever", "ainvoke", self._acall_retriever),
        )

    def _patch_langgraph(self, module: Any) -> None:
        runnables = next((m for m in map(sys.modules.get, _LANGGRAPH_RUNNABLES) if hasattr(m, "RunnableSeq")), None)
        runnable = runnables or _LANGGRAPH_RUNNABLES[0]  # not loaded: recorded as a missing hook by _patch
        self._patch(
            # invoke/ainvoke, stream_events and subgraphs all run through stream/astream.
            (module, "Pregel", "stream", self._graph_stream),
            (module, "Pregel", "astream", self._graph_astream),
            # A node (its function, writers and edges): the node's span current inside, so an SDK call made in the
            # node's function nests under the node.
            (runnable, "RunnableSeq", "invoke", self._call_node),
            (runnable, "RunnableSeq", "ainvoke", self._acall_node),
            (runnable, "RunnableSeq", "stream", self._stream_node),
            (runnable, "RunnableSeq", "astream", self._astream_node),
        )

    def _patch(self, *targets: tuple[Any, str, str, Any]) -> None:
        """Wrap each (module or module name, class, method, wrapper); a target missing from this version of
        langchain-core is recorded and skipped."""
        import importlib

        import wrapt

        for module, class_name, method, wrapper in targets:
            try:
                found = importlib.import_module(module) if isinstance(module, str) else module
                cls = getattr(found, class_name)
                original = cls.__dict__[method]
            except (ImportError, AttributeError, KeyError) as exc:  # another langchain-core layout: skip that hook
                guard.record_error(f"langchain.install.{class_name}.{method}", exc)
                continue
            wrapt.wrap_function_wrapper(cls, method, wrapper)
            self.originals.append((cls, method, original))

    def remove(self) -> None:
        self.active = False
        if self.hooked:
            when_imported(_RETRIEVERS, None, owner=_RETRIEVERS_HOOK)
            when_imported(_LANGGRAPH, None, owner=_LANGGRAPH_HOOK)
            self.hooked = False
        if self.handler is not None:
            self.handler.active = False
            self.handler.end_all()
        for cls, method, original in reversed(self.originals):
            current = cls.__dict__.get(method)
            if getattr(current, "__wrapped__", None) is original:
                setattr(cls, method, original)
        self.originals.clear()

    def _live(self) -> Tracer | None:
        handler = self.handler
        return handler if handler is not None and handler.active else None

    # -- global registration ---------------------------------------------------------------------------------

    def _manager_init(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> None:
        wrapped(*args, **kwargs)
        handler = self._live()
        # Not LangGraph's graph-lifecycle managers (langgraph.callbacks): they call on_interrupt/on_resume, which
        # only its GraphCallbackHandlers have, and any handler there makes every graph track its lifecycle events.
        if handler is not None and type(instance).__module__ != _LANGGRAPH_CALLBACKS:
            try:
                if handler not in instance.inheritable_handlers:
                    instance.add_handler(handler, True)
            except Exception as exc:
                guard.record_error("langchain.register", exc)

    # -- model calls with a run manager: the run's span is current around the SDK call -------------------------

    def _run_context(
        self, run_manager: Any, request: Any = None
    ) -> tuple[otel_context.Context | None, Mapping[str, str] | None, Any]:
        """The model run's span as a context, the prompt identity it carries, and the budget reservation of its
        request (messages or prompts; raises only BudgetExceededError, before anything is sent)."""
        handler = self._live()
        if handler is None or run_manager is None:
            return None, None, None
        try:
            run_id = run_manager.run_id
            ctx, prompt, run = handler.span_context(run_id), handler.prompt_of(run_id), handler.runs.get(run_id)
        except Exception:
            return None, None, None
        if run is None:
            return ctx, prompt, None
        try:
            return ctx, prompt, handler.reserve(run, request)
        except BudgetExceededError:
            raise
        except Exception as exc:  # the call goes out unreserved
            guard.record_error("langchain.budget", exc)
            return ctx, prompt, None

    def _generate(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        ctx, prompt, held = self._run_context(_run_manager(args, kwargs), args[0] if args else None)
        return _call_in(ctx, wrapped, args, kwargs, prompt, held)

    async def _agenerate(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        ctx, prompt, held = self._run_context(_run_manager(args, kwargs), args[0] if args else None)
        return await _acall_in(ctx, wrapped, args, kwargs, prompt, held)

    def _generate_many(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        ctx, prompt, held = self._run_context(_first_manager(args, kwargs), args[0] if args else None)
        return _call_in(ctx, wrapped, args, kwargs, prompt, held)

    async def _agenerate_many(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        ctx, prompt, held = self._run_context(_first_manager(args, kwargs), args[0] if args else None)
        return await _acall_in(ctx, wrapped, args, kwargs, prompt, held)

    # -- methods that start their run inside: a slot the start callback fills ---------------------------------

    def _call_slotted(self, kinds: tuple[str, ...], wrapped: Any, args: tuple, kwargs: dict) -> Any:
        if self._live() is None:
            return wrapped(*args, **kwargs)
        slot = _Slot(kinds)
        reset = _SLOT.set(slot)
        try:
            return wrapped(*args, **kwargs)
        finally:
            slot.release()
            _SLOT.reset(reset)

    async def _acall_slotted(self, kinds: tuple[str, ...], wrapped: Any, args: tuple, kwargs: dict) -> Any:
        if self._live() is None:
            return await wrapped(*args, **kwargs)
        slot = _Slot(kinds)
        reset = _SLOT.set(slot)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            slot.release()
            _SLOT.reset(reset)

    def _call_tool(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        return self._call_slotted(("tool",), wrapped, args, kwargs)

    def _acall_tool(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        return self._acall_slotted(("tool",), wrapped, args, kwargs)

    def _call_node(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        return self._call_slotted(("node",), wrapped, args, kwargs)

    def _acall_node(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        return self._acall_slotted(("node",), wrapped, args, kwargs)

    def _stream_node(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if self._live() is None:
            return wrapped(*args, **kwargs)
        return self._stream_steps(wrapped(*args, **kwargs), ("node",))

    def _astream_node(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if self._live() is None:
            return wrapped(*args, **kwargs)
        return self._astream_steps(wrapped(*args, **kwargs), ("node",))

    def _call_retriever(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        return self._call_slotted(("retriever",), wrapped, args, kwargs)

    def _acall_retriever(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        return self._acall_slotted(("retriever",), wrapped, args, kwargs)

    def _stream(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if self._live() is None:
            return wrapped(*args, **kwargs)
        return self._stream_steps(wrapped(*args, **kwargs))

    def _stream_steps(self, inner: Any, kinds: tuple[str, ...] = ("llm",)) -> Any:
        """Drive the model's (or a LangGraph node's) stream generator with its run's span current during each step
        (and only then)."""
        ctx: otel_context.Context | None = None
        first = True
        try:
            while True:
                if first:  # the first step starts the run: let its start callback attach it
                    first = False
                    slot = _Slot(kinds)
                    reset = _SLOT.set(slot)
                    try:
                        item = next(inner)
                    finally:
                        slot.release()
                        _SLOT.reset(reset)
                        ctx = slot.context
                elif ctx is None:
                    item = next(inner)
                else:
                    token = otel_context.attach(ctx)
                    try:
                        item = next(inner)
                    finally:
                        otel_context.detach(token)
                yield item
        except StopIteration:
            return
        finally:
            inner.close()  # the caller stopped early: LangChain ends the run (GeneratorExit -> incomplete)

    def _astream(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if self._live() is None:
            return wrapped(*args, **kwargs)
        return self._astream_steps(wrapped(*args, **kwargs))

    async def _astream_steps(self, inner: Any, kinds: tuple[str, ...] = ("llm",)) -> Any:
        ctx: otel_context.Context | None = None
        first = True
        try:
            while True:
                if first:
                    first = False
                    slot = _Slot(kinds)
                    reset = _SLOT.set(slot)
                    try:
                        item = await inner.__anext__()
                    finally:
                        slot.release()
                        _SLOT.reset(reset)
                        ctx = slot.context
                elif ctx is None:
                    item = await inner.__anext__()
                else:
                    token = otel_context.attach(ctx)
                    try:
                        item = await inner.__anext__()
                    finally:
                        otel_context.detach(token)
                yield item
        except StopAsyncIteration:
            return
        finally:
            await inner.aclose()

    # -- LangGraph graphs: the graph's agent run current during each step of its stream ------------------------

    def _graph_stream(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if self._live() is None:
            return wrapped(*args, **kwargs)
        return _graph_steps(wrapped(*args, **kwargs))

    def _graph_astream(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if self._live() is None:
            return wrapped(*args, **kwargs)
        return _agraph_steps(wrapped(*args, **kwargs))


def _graph_steps(inner: Any) -> Any:
    """Drive Pregel.stream: the first step starts the graph's run (its start callback fills the slot with the
    agent run and activates it); every step runs with the agent run current, and only the step: the caller's
    code between chunks runs in its own context."""
    slot = _Slot(("graph",))
    try:
        while True:
            reset = _SLOT.set(slot)
            if slot.agent is not None:
                slot.agent_token = guard.guarded("langchain.agent.activate", slot.agent.activate)
            try:
                item = next(inner)
            finally:
                slot.release()
                _SLOT.reset(reset)
            yield item
    except StopIteration:
        return
    finally:
        inner.close()  # the caller stopped early: LangGraph ends the graph's run (GeneratorExit -> incomplete)


async def _agraph_steps(inner: Any) -> Any:
    slot = _Slot(("graph",))
    try:
        while True:
            reset = _SLOT.set(slot)
            if slot.agent is not None:
                slot.agent_token = guard.guarded("langchain.agent.activate", slot.agent.activate)
            try:
                item = await inner.__anext__()
            finally:
                slot.release()
                _SLOT.reset(reset)
            yield item
    except StopAsyncIteration:
        return
    finally:
        await inner.aclose()


_PATCH = _Patch()


# --- the instrumentor ---------------------------------------------------------------------------------------------


class LangChainInstrumentor(_base.PatchInstrumentor):
    """OTel-style instrumentor for langchain-core: ``LangChainInstrumentor().instrument(tracer_provider=...)``.

    Instruments at once if langchain-core is imported, else the moment it is imported (importing nothing itself).
    """

    module = _MODULE
    dependencies = ("langchain-core >= 0.3",)
    tracer_name = __name__
    _patch = _PATCH  # the module's one patch (current_handler() reads it)

    def set_tracer_provider(self, tracer_provider: Any) -> None:
        """Record into another TracerProvider from now on."""
        super().set_tracer_provider(tracer_provider)
        if _PATCH.handler is not None:
            _PATCH.handler.tracer = _PATCH.tracer


def current_handler() -> Any:
    """The callback handler every LangChain callback manager gets (None before instrumentation)."""
    return _PATCH.handler
