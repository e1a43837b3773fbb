"""Attributes that every model call made beneath a point of the program carries (attribution, prompt identity).

One context variable, read once per model call by the instrumentation (``_base.base_attributes``): a call made
inside ``attached(...)`` gets those attributes on its span, in any thread or task that inherits the context.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
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
