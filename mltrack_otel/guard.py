"""Self-observability: counters of what tracking did, and the guard that keeps failures out of user code.

Every hook that runs inside a user's call goes through :func:`guarded` or :func:`record_error`, so a bug in
tracking is logged once per place, counted, and never changes the user's result.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

_log = logging.getLogger("mltrack_otel")
_lock = threading.Lock()
_counters: Counter[str] = Counter()
_logged: set[str] = set()

T = TypeVar("T")


def count(name: str, n: int = 1) -> None:
    """Add n to a health counter (e.g. "spans.processed")."""
    with _lock:
        _counters[name] += n


def record_error(where: str, exc: BaseException | None = None) -> None:
    """Count a failure inside tracking; log it the first time it happens at `where`."""
    with _lock:
        _counters["errors.caught"] += 1
        _counters[f"errors.{where}"] += 1
        first = where not in _logged
        _logged.add(where)
    if first:
        _log.warning(
            "mltrack-otel: tracking failed in %s (further failures here are counted, not logged)",
            where,
            exc_info=exc,
        )


def guarded(where: str, fn: Callable[..., T], *args: Any, default: T | None = None, **kwargs: Any) -> T | None:
    """Call fn; on any exception record it and return `default` instead."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # tracking must never break the user's call
        record_error(where, exc)
        return default


def health() -> dict[str, int]:
    """A snapshot of the counters: spans processed, priced, unpriced, dropped, errors caught, ..."""
    with _lock:
        return dict(_counters)


def reset() -> None:
    """Clear counters and the logged-once memory (tests)."""
    with _lock:
        _counters.clear()
        _logged.clear()
