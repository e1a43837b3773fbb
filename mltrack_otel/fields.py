"""Reading a field from SDK objects and their JSON alike, fast: instrumentors call it on every response."""

from __future__ import annotations

from typing import Any


def get(obj: Any, name: str, default: Any = None) -> Any:
    """obj[name] for dicts, obj.name for SDK models; default when missing or None."""
    if obj is None:
        return default
    # dict, not the Mapping ABC: an ABC isinstance check costs ~10x more, and this runs ~20 times per call.
    if isinstance(obj, dict):
        value = obj.get(name)
    else:
        # SDK models (pydantic v1 and v2) keep their fields in __dict__. Reading there first makes a missing
        # field a dict miss: getattr() would raise and catch an AttributeError inside pydantic (~3 µs each).
        state = getattr(obj, "__dict__", None)
        value = state.get(name) if state is not None else None
        if value is None and (state is None or name not in state):
            value = _other_attribute(obj, name)
    return default if value is None else value


_class_has: dict[tuple[type, str], bool] = {}


def _other_attribute(obj: Any, name: str) -> Any:
    """An attribute that is not in obj.__dict__: a pydantic extra field, a property or slot, or None."""
    extra = getattr(obj, "__pydantic_extra__", None)
    if isinstance(extra, dict):
        if name in extra:
            return extra[name]
        # Not a property either means missing. Looked up in the class dicts, memoised: hasattr() on a pydantic
        # class raises inside its metaclass's __getattr__ too.
        key = (type(obj), name)
        known = _class_has.get(key)
        if known is None:
            known = any(name in klass.__dict__ for klass in type(obj).__mro__)
            if len(_class_has) < 4096:
                _class_has[key] = known
        if not known:
            return None
    return getattr(obj, name, None)
