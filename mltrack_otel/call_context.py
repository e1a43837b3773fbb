"""Attributes that every model call made beneath a point of the program carries (attribution, prompt identity).

One context variable, read once per model call by the instrumentation (``_base.base_attributes``): a call made
inside ``attached(...)`` gets those attributes on its span, in any thread or task that inherits the context.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_attributes: ContextVar[Mapping[str, Any]] = ContextVar("mltrack_call_attributes", default=_EMPTY)


def current() -> Mapping[str, Any]:
    """The attributes a model call made here carries (read-only)."""
    return _attributes.get()


@contextmanager
def attached(attributes: Mapping[str, Any]) -> Iterator[None]:
    """Add `attributes` to every model call made inside the block (inner blocks add to and override outer ones)."""
    token = _attributes.set(MappingProxyType({**_attributes.get(), **attributes}))
    try:
        yield
    finally:
        _attributes.reset(token)


def attach(attributes: Mapping[str, Any]) -> Token[Mapping[str, Any]]:
    """Add `attributes` to the model calls that follow in this context, until `detach(token)`, or until an
    `attached` block around this point exits (it restores what it found). For hooks that cannot use a `with`
    (a framework's start and end callbacks; a prompt's format() inside its use() block)."""
    return _attributes.set(MappingProxyType({**_attributes.get(), **attributes}))


def detach(token: Token[Mapping[str, Any]]) -> bool:
    """Undo `attach`; False (nothing done) when the token belongs to another context (a callback that ended
    elsewhere) or was used already."""
    try:
        _attributes.reset(token)
    except (ValueError, RuntimeError):
        return False
    return True
