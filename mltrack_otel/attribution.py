"""Attribution: who and what a model call is for, on every call made beneath a point of the program.

    with mltrack_otel.attributes(user_id="u1", session_id="s1", feature="search"):
        client.chat.completions.create(...)   # user.id=u1, session.id=s1, mltrack.tag.feature=search

`user.id` and `session.id` are the general semantic conventions' names; any other key is a tag, `mltrack.tag.<key>`.
The attributes travel through call_context (the one hook model calls read), so threads and asyncio tasks that
inherit the context carry them; inner blocks add to and override outer ones. The CostSpanProcessor keeps running
totals per user and per tag value from the counted span of each call (Ledger.attribute), `mltrack_otel.totals(user=)`
reads them, and `mltrack-otel report --by user | tag.<key>` reads the stored spans back.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opentelemetry.semconv._incubating.attributes.session_attributes import SESSION_ID
from opentelemetry.semconv._incubating.attributes.user_attributes import USER_ID

from . import call_context, semconv

F = TypeVar("F", bound=Callable[..., Any])

TAG_PREFIX = semconv.MLTRACK_TAG + "."
# A tag key: lower-case identifier parts joined by dots (feature, tenant, team.cost_center).
TAG_KEY = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*")
MAX_VALUE_CHARS = 256  # a tag value or id is a label, not content: it is also a key of the ledger's totals
_MAX_KNOWN_KEYS = 256

# The span attribute names of every tag key attached so far, which the processor reads on each counted call: a
# few dictionary lookups instead of a scan of all attributes (~2.5 us). Past _MAX_KNOWN_KEYS keys it scans.
tag_attributes: tuple[str, ...] = ()
scan_for_tags = False
_known_lock = threading.Lock()
# Tag keys validated before -> their span attribute name: a block is made per request, the regex once per key.
_checked: dict[str, str] = {}


def _identity(name: str, value: Any) -> str:
    """A user or session id: a non-empty string (an int is taken as its decimal text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, not {value!r}")
    if len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"{name} is {len(value)} characters long; at most {MAX_VALUE_CHARS} are allowed")
    return value


def check_tag(key: Any, value: Any) -> tuple[str, str | int | float | bool]:
    """A tag key and value as they go on a span, or ValueError naming what is wrong."""
    if key in _checked:  # a str: only str keys go in
        pass
    elif not isinstance(key, str) or not TAG_KEY.fullmatch(key):
        raise ValueError(
            f"tag key {key!r} is not allowed: use lower-case letters, digits, '_' and '.' "
            "(an identifier such as 'feature' or 'team.cost_center')"
        )
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"tag {key!r}: the value must be a str, int, float or bool, not {type(value).__name__}")
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"tag {key!r}: the value is {len(value)} characters long; at most {MAX_VALUE_CHARS}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"tag {key!r}: the value must be a finite number, not {value!r}")
    if key not in _checked:
        if len(_checked) >= _MAX_KNOWN_KEYS:
            _checked.clear()
        _checked[key] = TAG_PREFIX + key
    return key, value


def call_attributes(
    user_id: Any = None, session_id: Any = None, tags: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The attributes that a call made beneath these carries: user.id, session.id, mltrack.tag.<key> (validated)."""
    out: dict[str, Any] = {}
    if user_id is not None:
        out[USER_ID] = _identity("user_id", user_id)
    if session_id is not None:
        out[SESSION_ID] = _identity("session_id", session_id)
    if tags:
        if not isinstance(tags, Mapping):
            raise ValueError(f"tags must be a mapping of keys to values, not {type(tags).__name__}")
        new = None
        for key, value in tags.items():
            key, value = check_tag(key, value)
            name = _checked.get(key) or TAG_PREFIX + key
            out[name] = value
            if name not in _known:
                new = [*(new or ()), name]
        if new:
            _know(new)
    return out


_known: frozenset[str] = frozenset()  # tag_attributes as a set


def _know(names: list[str]) -> None:
    """Remember tag attribute names for the processor (a new tuple: it reads the old one without a lock)."""
    global tag_attributes, scan_for_tags, _known
    if scan_for_tags:
        return
    with _known_lock:
        known = (*tag_attributes, *(name for name in dict.fromkeys(names) if name not in tag_attributes))
        _known = frozenset(known)
        if len(known) > _MAX_KNOWN_KEYS:
            scan_for_tags = True
        tag_attributes = known


def tags_of(attrs: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, value as text) of every attribution tag a span carries (the processor's read, on counted calls)."""
    if scan_for_tags:
        names: Any = [name for name in attrs if name.startswith(TAG_PREFIX)]
    else:
        names = tag_attributes
    out = []
    get = attrs.get
    for name in names:
        value = get(name)
        if value is not None:
            out.append((name[len(TAG_PREFIX) :], tag_text(value)))
    return out


def tag_text(value: Any) -> str:
    """A tag value as the totals and the report key it: its text (True -> "true", as in the span JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class attributes:  # used like a function: `with mltrack_otel.attributes(user_id=...)`
    """Attribute every model call made inside the block (or the decorated function) to a user, a session and tags:

        with mltrack_otel.attributes(user_id="u1", feature="search", tenant="acme"):
            ...

    Spans of those calls carry ``user.id``, ``session.id`` and ``mltrack.tag.<key>``; nested blocks merge (the inner
    value wins). Tag keys are lower-case identifiers, values str, int, float or bool; anything else raises
    ValueError here, never in a model call."""

    __slots__ = ("_attributes", "_entered")

    def __init__(self, user_id: Any = None, session_id: Any = None, **tags: Any) -> None:
        self._attributes = call_attributes(user_id, session_id, tags)
        self._entered: list[Any] = []

    @property
    def values(self) -> Mapping[str, Any]:
        """The span attributes this block adds."""
        return dict(self._attributes)

    def __enter__(self) -> attributes:
        block = call_context.attached(self._attributes)
        block.__enter__()
        self._entered.append(block)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._entered.pop().__exit__(*exc)

    def __call__(self, fn: F) -> F:
        """As a decorator: every call of the (sync or async) function runs inside the block."""
        attached = self._attributes
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"attributes() cannot decorate the generator function {fn.__qualname__}: "
                "use `with mltrack_otel.attributes(...)` around the loop that consumes it"
            )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with call_context.attached(attached):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with call_context.attached(attached):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
