"""instrument() / uninstrument(): instrument every supported LLM library that is installed.

A library that is already imported is instrumented at once; one that is not gets a post-import hook and is
instrumented the moment the application imports it. instrument() itself imports nothing but the standard
library (the instrumentors and the libraries load only when the library does), so it costs a few milliseconds.
A new library joins with one line in LIBRARIES.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, NamedTuple

__all__ = ["LIBRARIES", "Library", "instrument", "uninstrument", "when_imported"]

_log = logging.getLogger("mltrack_otel")


class Library(NamedTuple):
    module: str  # the top-level module whose import triggers instrumentation
    instrumentor: str  # "package.module:Class", an OTel-style instrumentor


LIBRARIES: dict[str, Library] = {
    "openai": Library("openai", "mltrack_otel.instrumentation.openai:OpenAIInstrumentor"),
    "anthropic": Library("anthropic", "mltrack_otel.instrumentation.anthropic:AnthropicInstrumentor"),
    "langchain": Library("langchain_core", "mltrack_otel.instrumentation.langchain:LangChainInstrumentor"),
    "llama_index": Library("llama_index.core", "mltrack_otel.instrumentation.llama_index:LlamaIndexInstrumentor"),
    "litellm": Library("litellm", "mltrack_otel.instrumentation.litellm:LiteLLMInstrumentor"),
    "dspy": Library("dspy", "mltrack_otel.instrumentation.dspy:DSPyInstrumentor"),
    "google_genai": Library("google.genai", "mltrack_otel.instrumentation.google_genai:GoogleGenAIInstrumentor"),
    "mistralai": Library("mistralai.client", "mltrack_otel.instrumentation.mistralai:MistralInstrumentor"),
    "cohere": Library("cohere", "mltrack_otel.instrumentation.cohere:CohereInstrumentor"),
    "ollama": Library("ollama", "mltrack_otel.instrumentation.ollama:OllamaInstrumentor"),
    "groq": Library("groq", "mltrack_otel.instrumentation.groq:GroqInstrumentor"),
    "bedrock": Library("botocore", "mltrack_otel.instrumentation.bedrock:BedrockInstrumentor"),
    "mcp": Library("mcp", "mltrack_otel.instrumentation.mcp:MCPInstrumentor"),
    "pydantic_ai": Library("pydantic_ai", "mltrack_otel.instrumentation.pydantic_ai:PydanticAIInstrumentor"),
    "openai_agents": Library("agents", "mltrack_otel.instrumentation.openai_agents:OpenAIAgentsInstrumentor"),
}

_lock = threading.RLock()
_armed: dict[str, Any] = {}  # library name -> tracer_provider it was armed with


def instrument(libraries: Iterable[str] | None = None, *, tracer_provider: Any = None) -> list[str]:
    """Instrument the named libraries (default: every supported one that is installed).

    Returns the libraries instrumented now or armed to be instrumented on import. Idempotent; a second call
    with a tracer_provider switches the instrumented libraries to it.
    """
    names = _select(libraries)
    done = []
    with _lock:
        for name in names:
            library = LIBRARIES[name]
            if library.module not in sys.modules and not _installed(library.module):
                continue
            _armed[name] = tracer_provider
            if library.module in sys.modules:
                if not _activate(name):  # logged: the library stays uninstrumented, so it is not reported
                    del _armed[name]
                    continue
            else:
                when_imported(library.module, _activator(name), owner=f"instrument:{name}")
            done.append(name)
    return done


def uninstrument(libraries: Iterable[str] | None = None) -> list[str]:
    """Undo instrument(): restore the libraries' original methods exactly; returns the libraries undone."""
    names = _select(libraries)
    done = []
    with _lock:
        for name in names:
            was_armed = _armed.pop(name, _MISSING) is not _MISSING
            when_imported(LIBRARIES[name].module, None, owner=f"instrument:{name}")
            instrumentor = _loaded_instrumentor(name)
            if instrumentor is not None and instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
                was_armed = True
            if was_armed:
                done.append(name)
    return done


_MISSING = object()


def _select(libraries: Iterable[str] | None) -> list[str]:
    if libraries is None:
        return list(LIBRARIES)
    if isinstance(libraries, str):
        libraries = [libraries]
    names = list(dict.fromkeys(libraries))
    unknown = [n for n in names if n not in LIBRARIES]
    if unknown:
        raise ValueError(f"cannot instrument {', '.join(unknown)}: supported are {', '.join(LIBRARIES)}")
    return names


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _instrumentor_class(name: str) -> Any:
    module_name, _, class_name = LIBRARIES[name].instrumentor.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def _loaded_instrumentor(name: str) -> Any:
    """The instrumentor instance if its module was ever loaded (never imports it)."""
    module_name = LIBRARIES[name].instrumentor.partition(":")[0]
    if module_name not in sys.modules:
        return None
    try:
        return _instrumentor_class(name)()
    except Exception:  # it never loaded (instrument() logged why): nothing to undo
        return None


def _activate(name: str) -> bool:
    """Instrument a library now; False (and a warning) when its instrumentor fails."""
    try:
        instrumentor = _instrumentor_class(name)()
        tracer_provider = _armed.get(name)
        if instrumentor.is_instrumented_by_opentelemetry:
            if tracer_provider is not None:
                instrumentor.set_tracer_provider(tracer_provider)
            return True
        instrumentor.instrument(tracer_provider=tracer_provider, skip_dep_check=True)
        return True
    except Exception:  # an instrumentation bug must not break the application's import
        _log.warning("mltrack-otel: could not instrument %s", name, exc_info=True)
        return False


def _activator(name: str) -> Callable[[ModuleType], None]:
    def on_import(_module: ModuleType) -> None:
        with _lock:
            if name in _armed:
                _activate(name)

    return on_import


# --- post-import hooks (stdlib only: wrapt's importer alone costs tens of milliseconds to import) ------------


class _NotifyingLoader:
    """Runs the real loader, then the hooks; puts the real loader back on the module so nothing of ours stays."""

    def __init__(self, loader: Any, finder: _PostImportFinder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        self._loader.exec_module(module)
        self._finder.notify(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PostImportFinder:
    """A sys.meta_path finder that calls hooks right after a watched top-level module finishes importing."""

    def __init__(self) -> None:
        self.hooks: dict[str, dict[str, Callable[[ModuleType], None]]] = {}
        self._finding: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.hooks or fullname in self._finding:
            return None
        self._finding.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(spec.loader, self)
        return spec

    def notify(self, module: ModuleType) -> None:
        with _lock:
            hooks = list(self.hooks.pop(module.__name__, {}).values())
        for hook in hooks:
            try:
                hook(module)
            except Exception:
                _log.warning("mltrack-otel: post-import hook for %s failed", module.__name__, exc_info=True)


_finder = _PostImportFinder()


def when_imported(module: str, hook: Callable[[ModuleType], None] | None, *, owner: str) -> None:
    """Call hook(module) once the top-level module is imported (now if it already is); hook=None cancels."""
    with _lock:
        if hook is None:
            pending = _finder.hooks.get(module)
            if pending is not None:
                pending.pop(owner, None)
                if not pending:
                    del _finder.hooks[module]
            return
        loaded = sys.modules.get(module)
        if loaded is None:
            _finder.hooks.setdefault(module, {})[owner] = hook
            if _finder not in sys.meta_path:
                sys.meta_path.insert(0, _finder)
            return
    hook(loaded)
