"""Prompt templates with an identity: every model call made from one carries its name and version.

    summarize = mltrack_otel.prompt("summarize", "Summarize in {{words}} words:\\n{{text}}")
    with summarize.use():
        client.chat.completions.create(model=..., messages=[{"role": "user", "content": summarize.format(...)}])

The call's span gets ``gen_ai.prompt.name`` ("summarize"), ``gen_ai.prompt.version`` and ``mltrack.prompt.hash``
(the first 12 hex digits of the SHA-256 of the template's canonical JSON). With no version given, the version is
the hash, so a changed template is a new version by itself; a version given by hand, or the MLflow prompt
registry's version number for a template registered or loaded there, is kept as it is, and the hash still tells
two contents apart.

Placeholders are MLflow's: ``{{name}}`` (spaces inside the braces allowed, name an identifier). Single braces are
plain text, so JSON examples need no escaping, and a template round-trips through the MLflow prompt registry
unchanged. format() substitutes in one pass (a value containing ``{{x}}`` is not expanded again), turns values
into text with str(), ignores variables the template does not name, and refuses a missing one (PromptError).

When a template is "in use" (the rule):

* inside ``with template.use():`` every model call made in the block carries the template's identity, in any
  task or thread that copies the block's context (asyncio tasks, ``asyncio.to_thread``), and no call outside;
* inside such a block (or ``with prompts.scope():``, which attaches nothing by itself), ``other.format(...)``
  switches the identity to ``other`` for the calls that follow, until the next format() or the end of the
  innermost ``with`` block around it (``use()``, ``scope()``, ``mltrack_otel.attributes(...)``...);
* outside every block, format() only formats: an identity attached there would stay on every later call of the
  thread (a pooled server thread: the next requests too), so nothing is attached rather than something wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GEN_AI_PROMPT_NAME

from . import call_context, guard, semconv
from .errors import MltrackError

__all__ = ["PromptError", "PromptTemplate", "load_prompt", "prompt", "scope"]

GEN_AI_PROMPT_VERSION = semconv.GEN_AI_PROMPT_VERSION
MLTRACK_PROMPT_HASH = semconv.MLTRACK_PROMPT_HASH
HASH_LENGTH = 12
HASH_TAG = "mltrack.prompt.hash"  # the MLflow prompt version tag that records our hash

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ROLES = frozenset({"system", "user", "assistant", "developer", "tool"})
_log = logging.getLogger("mltrack_otel")
_in_scope: ContextVar[bool] = ContextVar("mltrack_prompt_scope", default=False)

# name -> {version: hash}, to warn once when one name and version is given two different templates.
_seen: OrderedDict[str, dict[str, str]] = OrderedDict()
_seen_lock = threading.Lock()
_SEEN_MAX = 1024


class PromptError(MltrackError, ValueError):
    """A prompt template, its name or version, or the variables given to format() are invalid."""


def content_hash(template: str | Sequence[Mapping[str, str]]) -> str:
    """First 12 hex digits of the SHA-256 of the template's canonical JSON (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def _check_messages(name: str, template: Sequence[Any]) -> tuple[tuple[str, str], ...]:
    if not template:
        raise PromptError(f"prompt {name!r}: a chat template needs at least one message")
    messages = []
    for i, message in enumerate(template):
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            got = sorted(message) if isinstance(message, Mapping) else type(message).__name__
            raise PromptError(f"prompt {name!r}: message {i} must be a dict with exactly 'role' and 'content' ({got})")
        role, content = message["role"], message["content"]
        if role not in _ROLES:
            raise PromptError(f"prompt {name!r}: message {i} has role {role!r}; expected one of {sorted(_ROLES)}")
        if not isinstance(content, str):
            raise PromptError(f"prompt {name!r}: message {i} content must be a str, not {type(content).__name__}")
        messages.append((role, content))
    return tuple(messages)


def _warn_if_reused(name: str, version: str, digest: str) -> None:
    """One name and version given two different templates: their calls would be compared as one version."""
    with _seen_lock:
        versions = _seen.setdefault(name, {})
        _seen.move_to_end(name)
        if len(_seen) > _SEEN_MAX:
            _seen.popitem(last=False)
        previous = versions.setdefault(version, digest)
    if previous != digest and guard.first_time(f"prompt.reused:{name}:{version}"):
        _log.warning(
            "mltrack-otel: prompt %r version %r was given two different templates (hashes %s and %s); "
            "mltrack.prompt.hash tells their calls apart",
            name,
            version,
            previous,
            digest,
        )


class PromptTemplate:
    """A named prompt template (text, or chat messages) and its version; immutable. Make one with
    :func:`prompt` or :func:`load_prompt`."""

    __slots__ = ("_attributes", "_messages", "_text", "hash", "name", "source", "variables", "version")

    name: str
    version: str
    hash: str
    source: str  # "hash" (no version given), "explicit" or "mlflow"
    variables: tuple[str, ...]  # the placeholders, in order of first appearance

    def __init__(
        self, name: str, template: str | Sequence[Mapping[str, str]], version: str | int | None = None, *, _source=None
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise PromptError(f"a prompt name must be a non-empty str, not {name!r}")
        if isinstance(template, str):
            text, messages = template, None
            canonical: Any = template
            if not text.strip():
                raise PromptError(f"prompt {name!r}: the template is empty")
        elif isinstance(template, Sequence) and not isinstance(template, (bytes, bytearray)):
            text, messages = None, _check_messages(name, template)
            canonical = [{"role": r, "content": c} for r, c in messages]
        else:
            raise PromptError(
                f"prompt {name!r}: the template must be a str or a list of {{'role', 'content'}} dicts, "
                f"not {type(template).__name__}"
            )
        if version is not None and (isinstance(version, bool) or not isinstance(version, (str, int))):
            raise PromptError(f"prompt {name!r}: version must be a str or an int, not {type(version).__name__}")
        if isinstance(version, str) and not version.strip():
            raise PromptError(f"prompt {name!r}: version must not be empty (leave it out to use the content hash)")
        digest = content_hash(canonical)
        found = (
            _PLACEHOLDER.findall(text)
            if text is not None
            else [v for _, c in messages for v in _PLACEHOLDER.findall(c)]
        )
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "_text", text)
        setattr_(self, "_messages", messages)
        setattr_(self, "hash", digest)
        setattr_(self, "version", digest if version is None else str(version))
        setattr_(self, "source", _source or ("hash" if version is None else "explicit"))
        setattr_(self, "variables", tuple(dict.fromkeys(found)))
        attributes = {GEN_AI_PROMPT_NAME: name, GEN_AI_PROMPT_VERSION: self.version, MLTRACK_PROMPT_HASH: digest}
        setattr_(self, "_attributes", MappingProxyType(attributes))
        if version is not None:
            _warn_if_reused(name, self.version, digest)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"PromptTemplate is immutable (tried to set {key!r})")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"PromptTemplate is immutable (tried to delete {key!r})")

    def __repr__(self) -> str:
        return f"PromptTemplate(name={self.name!r}, version={self.version!r}, hash={self.hash!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PromptTemplate):
            return NotImplemented
        return (self.name, self.version, self.hash) == (other.name, other.version, other.hash)

    def __hash__(self) -> int:
        return hash((self.name, self.version, self.hash))

    # -- content ------------------------------------------------------------------------------------------------

    @property
    def is_chat(self) -> bool:
        return self._messages is not None

    @property
    def template(self) -> str | list[dict[str, str]]:
        """The template as given: its text, or a fresh list of {"role", "content"} dicts."""
        if self._messages is None:
            return self._text  # type: ignore[return-value]
        return [{"role": role, "content": content} for role, content in self._messages]

    @property
    def attributes(self) -> Mapping[str, str]:
        """What a call made from this template carries: gen_ai.prompt.name, gen_ai.prompt.version and
        mltrack.prompt.hash."""
        return self._attributes

    def format(self, **variables: Any) -> str | list[dict[str, str]]:
        """The text (a text template) or the messages (a chat template) with every ``{{name}}`` replaced.

        Inside a ``use()`` or ``scope()`` block, the calls that follow carry this template's identity (see the
        module's rule). Raises PromptError when a variable of the template is missing."""
        missing = [v for v in self.variables if v not in variables]
        if missing:
            given = ", ".join(sorted(variables)) or "none"
            raise PromptError(f"prompt {self.name!r} needs {', '.join(missing)} (format() was given: {given})")

        def fill(match: re.Match[str]) -> str:
            return str(variables[match.group(1)])

        if self._messages is None:
            result: str | list[dict[str, str]] = _PLACEHOLDER.sub(fill, self._text)  # type: ignore[arg-type]
        else:
            result = [{"role": role, "content": _PLACEHOLDER.sub(fill, content)} for role, content in self._messages]
        if _in_scope.get():
            call_context.attach(self._attributes)  # undone when the innermost block around us exits
        return result

    def use(self) -> _InUse:
        """``with template.use():`` every model call made inside the block carries this template's identity."""
        return _InUse(self)

    # -- the MLflow prompt registry ----------------------------------------------------------------------------

    def register(
        self,
        commit_message: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        tracking_uri: str | None = None,
    ) -> PromptTemplate:
        """Register this template in the MLflow prompt registry (``mlflow.genai.register_prompt``) and return it
        with MLflow's version number as its version. When the latest registered version has the same content,
        that version is returned and nothing new is registered."""
        mlflow = _mlflow()
        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri) if tracking_uri else None
        latest = _latest(mlflow, client, self.name)
        if latest is not None and _hash_of(latest) == self.hash:
            return _from_mlflow(latest)
        all_tags = {HASH_TAG: self.hash, **(tags or {})}
        template = self.template
        if client is not None:
            registered = client.register_prompt(self.name, template, commit_message=commit_message, tags=all_tags)
        else:
            registered = mlflow.genai.register_prompt(self.name, template, commit_message=commit_message, tags=all_tags)
        return _from_mlflow(registered)


class _InUse:
    """The block of ``template.use()`` (a class, not a generator: entered around calls, so kept cheap)."""

    __slots__ = ("_template", "_tokens")

    def __init__(self, template: PromptTemplate) -> None:
        self._template = template
        self._tokens: tuple[Any, Any] | None = None

    def __enter__(self) -> PromptTemplate:
        if self._tokens is not None:
            raise RuntimeError("this use() block is already entered; call template.use() again for another")
        self._tokens = (_in_scope.set(True), call_context.attach(self._template._attributes))
        return self._template

    def __exit__(self, *exc_info: object) -> None:
        tokens, self._tokens = self._tokens, None
        if tokens is not None:
            scope, attached = tokens
            call_context.detach(attached)  # also undoes what format() attached inside
            _in_scope.reset(scope)


@contextmanager
def scope() -> Iterator[None]:
    """A block in which format() attaches its template's identity to the calls that follow (until the next
    format() or the block's end), for code that formats several templates: it attaches nothing by itself."""
    token = _in_scope.set(True)
    try:
        with call_context.attached({}):
            yield
    finally:
        _in_scope.reset(token)


def prompt(
    name: str,
    template: str | Sequence[Mapping[str, str]] | None = None,
    version: str | int | None = None,
    *,
    register: bool = False,
    tracking_uri: str | None = None,
) -> PromptTemplate:
    """A prompt template named `name`: `template` is a str or a list of {"role", "content"} dicts with
    ``{{variable}}`` placeholders; None takes the one `.mltrack.yml` defines under ``prompts: {name: ...}`` (and
    its version unless `version` is given). `version` defaults to the template's content hash. With
    ``register=True`` it is registered in the MLflow prompt registry (see PromptTemplate.register) and gets
    MLflow's version."""
    if template is None:
        from . import config

        spec = config.current().prompts.get(name) if isinstance(name, str) else None
        if spec is None:
            raise PromptError(
                f"prompt {name!r} has no template: pass one, or define it under `prompts:` in .mltrack.yml"
            )
        template = [dict(m) for m in spec.template] if isinstance(spec.template, tuple) else spec.template
        version = spec.version if version is None else version
    made = PromptTemplate(name, template, version)
    return made.register(tracking_uri=tracking_uri) if register else made


def load_prompt(uri: str, version: str | int | None = None, *, tracking_uri: str | None = None) -> PromptTemplate:
    """A template from the MLflow prompt registry: ``load_prompt("prompts:/summarize/2")``, or a name and a
    version. Its version is MLflow's version number ("2")."""
    mlflow = _mlflow()
    if tracking_uri:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        loaded = client.load_prompt(uri, version=version)
    else:
        loaded = mlflow.genai.load_prompt(uri, version=version)
    if loaded is None:
        raise PromptError(f"no prompt {uri!r} (version {version}) in the MLflow prompt registry")
    return _from_mlflow(loaded)


def _mlflow() -> Any:
    try:
        import mlflow
        import mlflow.genai
    except ImportError as exc:
        raise PromptError("the MLflow prompt registry needs mlflow: pip install 'mltrack-otel[mlflow]'") from exc
    return mlflow


def _latest(mlflow: Any, client: Any, name: str) -> Any:
    """The latest registered version of `name`, or None when there is none."""
    uri = f"prompts:/{name}@latest"
    try:
        if client is not None:
            return client.load_prompt(uri, allow_missing=True)
        return mlflow.genai.load_prompt(uri, allow_missing=True)
    except Exception:  # MLflow raises for an unknown name in some versions
        return None


def _hash_of(version: Any) -> str:
    return content_hash(version.template)


def _from_mlflow(version: Any) -> PromptTemplate:
    return PromptTemplate(version.name, version.template, str(version.version), _source="mlflow")
