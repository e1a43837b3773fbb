"""Self-observability: counters of what tracking did, and the guard that keeps failures out of user code.

Every hook that runs inside a user's call goes through :func:`guarded` or :func:`record_error`, so a bug in
tracking is logged once per place, counted, and never changes the user's result.

The counters describe this process: a forked child (a pre-fork server's worker) starts its own from zero.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

_log = logging.getLogger("mltrack_otel")
_lock = threading.Lock()
_counters: Counter[str] = Counter()
_logged: set[str] = set()

T = TypeVar("T")


class Tally:
    """A counter cheap enough for a per-span path: no lock, because next() on an itertools.count is atomic in
    CPython (one C call under the GIL), where `n += 1` is not."""

    __slots__ = ("_count",)

    def __init__(self) -> None:
        self._count = itertools.count()

    def add(self) -> None:
        next(self._count)

    @property
    def value(self) -> int:
        return int(repr(self._count)[6:-1])  # "count(N)": the only way to read it without advancing it

    def reset(self) -> None:
        self._count = itertools.count()


_tallies: dict[str, Tally] = {}


def tally(name: str) -> Tally:
    """The Tally that health() reports under `name` (e.g. "spans.processed")."""
    with _lock:
        return _tallies.setdefault(name, Tally())


def count(name: str, n: int = 1) -> None:
    """Add n to a health counter (e.g. "spans.dropped")."""
    with _lock:
        _counters[name] += n


def first_time(key: str) -> bool:
    """True the first time `key` is seen in this process: for warnings logged once, then only counted."""
    with _lock:
        first = key not in _logged
        _logged.add(key)
    return first


def record_error(where: str, exc: BaseException | None = None) -> None:
    """Count a failure inside tracking; log it the first time it happens at `where`."""
    with _lock:
        _counters["errors.caught"] += 1
        _counters[f"errors.{where}"] += 1
    if first_time(where):
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
    """A snapshot of the counters: spans processed, priced, unpriced, exported, dropped, export_failed, errors
    caught, ... (`spans.<outcome>.<exporter>` per exporter).

    When the process's cost total (`mltrack_otel.totals().cost_usd`) misses calls that have no known price, it is
    a lower bound and says so: `totals.cost_incomplete` is 1 and `totals.unpriced_calls` is how many calls it misses.
    """
    with _lock:
        snapshot = dict(_counters)
        tallies = list(_tallies.items())
    for name, counter in tallies:
        if value := counter.value:
            snapshot[name] = value
    ledger = sys.modules.get("mltrack_otel.ledger")  # not loaded: nothing was counted (and it imports us)
    unpriced = ledger.LEDGER.process_totals().unpriced_calls if ledger is not None else 0
    if unpriced:
        snapshot["totals.cost_incomplete"] = 1
        snapshot["totals.unpriced_calls"] = unpriced
    return snapshot


def reset() -> None:
    """Clear counters and the logged-once memory (tests)."""
    with _lock:
        _counters.clear()
        _logged.clear()
        for counter in _tallies.values():
            counter.reset()


# --- work from finalizers ---------------------------------------------------------------------------------------
# An abandoned stream's span is ended when the stream is garbage collected. A collection can start inside almost any
# allocation, including one in the middle of the interpreter's own bookkeeping (a ContextVar.set, say), so the
# finalizer only queues the work (SimpleQueue.put is safe there, by design) and a worker thread does it.

_deferred: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.SimpleQueue()
_worker: threading.Thread | None = None


def defer(fn: Callable[..., Any], *args: Any) -> None:
    """Run fn(*args) soon on the finalizer worker (for __del__ methods and weakref.finalize callbacks)."""
    _deferred.put((fn, args))


def renew_lock_after_fork(owner: Any) -> None:
    """Give owner a fresh `_lock` in a forked child: a pre-fork worker may fork while another thread holds the
    lock, and the child would wait on it forever. Weakly held, so a replaced owner is not kept alive."""
    own = weakref.ref(owner)

    def renew() -> None:
        alive = own()
        if alive is not None:
            alive._lock = threading.Lock()

    os.register_at_fork(after_in_child=renew)


def finalize_deferred(obj: Any, fn: Callable[..., Any], *args: Any) -> None:
    """When obj is collected, run fn(*args) on the finalizer worker, never inside the garbage collector."""
    start_deferred_worker()
    weakref.finalize(obj, defer, fn, *args)


def start_deferred_worker() -> None:
    """Start the worker that runs deferred finalizer work; cheap when it runs already. Call from ordinary code."""
    global _worker
    if _worker is not None and _worker.is_alive():
        return
    with _lock:
        if _worker is None or not _worker.is_alive():
            worker = threading.Thread(target=_run_deferred, name="mltrack-otel-finalizers", daemon=True)
            try:
                worker.start()
            except RuntimeError:  # at interpreter exit (Python 3.12.0-3.12.2): drain_deferred() works inline
                return
            _worker = worker


def drain_deferred(timeout: float = 5.0) -> bool:
    """Wait until the finalizer work queued so far has run (shutdown, tests); False on timeout."""
    start_deferred_worker()
    if _worker is None or not _worker.is_alive():  # no thread can start (interpreter exit): do the work here
        while not _deferred.empty():
            fn, args = _deferred.get_nowait()
            guarded("finalizer", fn, *args)
        return True
    done = threading.Event()
    _deferred.put((done.set, ()))
    return done.wait(timeout)


def _run_deferred() -> None:
    while True:
        fn, args = _deferred.get()
        guarded("finalizer", fn, *args)


def _start_afresh_in_child() -> None:
    # The parent may have forked while another of its threads held the lock: the child would wait on it forever.
    # Nor does the child have the parent's finalizer worker; the next ordinary call starts its own.
    global _lock, _worker
    _lock = threading.Lock()
    _worker = None
    reset()


os.register_at_fork(after_in_child=_start_afresh_in_child)
